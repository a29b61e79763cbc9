// The deadline heap of a shard and its timer.
#include <keysem/detail/deadline_queue.hpp>
#include <keysem/detail/key_state.hpp>
#include <keysem/detail/shard.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <utility>

namespace keysem::detail {

using steady_timer =
    boost::asio::basic_waitable_timer<std::chrono::steady_clock,
                                      boost::asio::wait_traits<std::chrono::steady_clock>,
                                      boost::asio::any_io_executor>;

// Built on the shard's strand, so that its handler runs there.
struct deadline_queue::timer {
  explicit timer(const boost::asio::any_io_executor& strand) : clock(strand) {}
  steady_timer clock;
};

// The timer's handler: holds a shard reference while pending. Destroyed
// without running (the context went away), it only gives the reference back.
class deadline_wait {
 public:
  deadline_wait(shard_base& shard, std::uint64_t generation) noexcept
      : shard_(&shard), generation_(generation) {}
  deadline_wait(deadline_wait&& other) noexcept
      : shard_(std::exchange(other.shard_, nullptr)), generation_(other.generation_) {}
  deadline_wait& operator=(deadline_wait&&) = delete;
  ~deadline_wait() {
    if (shard_ != nullptr) {
      shard_->release_timer_ref();
    }
  }
  void operator()(const boost::system::error_code& /*cancelled or expired*/) {
    shard_base* shard = std::exchange(shard_, nullptr);
    struct release_on_exit {
      shard_base* shard;
      ~release_on_exit() { shard->release_timer_ref(); }
    } release{shard};
    shard->deadlines().fire(*shard, generation_);
  }

 private:
  shard_base* shard_;
  std::uint64_t generation_;
};

deadline_queue::deadline_queue() noexcept = default;
deadline_queue::~deadline_queue() = default;

void deadline_queue::add(shard_base& shard, waiter_op& op) {
  heap_.push_back(&op);  // may throw: nothing changed yet
  place(heap_.size() - 1, &op);
  sift_up(heap_.size() - 1);
  arm(shard);
}

void deadline_queue::remove(waiter_op& op) noexcept {
  const std::size_t index = op.heap_index;
  if (index == waiter_op::not_in_heap) {
    return;
  }
  op.heap_index = waiter_op::not_in_heap;
  waiter_op* last = heap_.back();
  heap_.pop_back();
  if (heap_.empty()) {
    disarm();
    return;
  }
  if (last == &op) {
    return;
  }
  place(index, last);
  sift_up(index);
  sift_down(last->heap_index);
}

void deadline_queue::fire(shard_base& shard, std::uint64_t generation) {
  if (generation != generation_) {
    return;  // a wait superseded by an earlier deadline, or cancelled
  }
  armed_for_ = waiter_op::no_deadline;
  const auto now = waiter_op::clock::now();
  std::exception_ptr failure;
  while (!heap_.empty() && heap_.front()->deadline() <= now) {
    waiter_op& op = *heap_.front();
    remove(op);
    try {
      op.key().time_out(op);
    } catch (...) {
      if (!failure) {
        failure = std::current_exception();
      }
    }
  }
  arm(shard);
  if (failure) {
    std::rethrow_exception(failure);
  }
}

// Keeps one wait pending for the earliest deadline, none when no op waits.
void deadline_queue::arm(shard_base& shard) {
  if (heap_.empty()) {
    disarm();
    return;
  }
  const auto earliest = heap_.front()->deadline();
  if (earliest >= armed_for_) {
    return;  // the pending wait fires first; it re-arms then
  }
  if (!timer_) {
    timer_ = std::make_unique<timer>(shard.strand_executor());
  }
  timer_->clock.expires_at(earliest);  // cancels a later pending wait
  ++generation_;
  shard.take_timer_ref();
  timer_->clock.async_wait(deadline_wait(shard, generation_));
  armed_for_ = earliest;
}

// No timed op waits: the pending wait must not keep the context's run() going.
void deadline_queue::disarm() noexcept {
  if (armed_for_ == waiter_op::no_deadline || !timer_) {
    return;
  }
  ++generation_;
  armed_for_ = waiter_op::no_deadline;
  boost::system::error_code ignored;
  timer_->clock.cancel(ignored);
}

void deadline_queue::drop_timer() noexcept {
  ++generation_;
  armed_for_ = waiter_op::no_deadline;
  timer_.reset();
}

bool deadline_queue::earlier(std::size_t a, std::size_t b) const noexcept {
  return heap_[a]->deadline() < heap_[b]->deadline();
}

void deadline_queue::place(std::size_t index, waiter_op* op) noexcept {
  heap_[index] = op;
  op->heap_index = index;
}

void deadline_queue::sift_up(std::size_t index) noexcept {
  while (index > 0) {
    const std::size_t parent = (index - 1) / 2;
    if (!earlier(index, parent)) {
      return;
    }
    waiter_op* child = heap_[index];
    place(index, heap_[parent]);
    place(parent, child);
    index = parent;
  }
}

void deadline_queue::sift_down(std::size_t index) noexcept {
  for (;;) {
    std::size_t smallest = index;
    for (const std::size_t child : {2 * index + 1, 2 * index + 2}) {
      if (child < heap_.size() && earlier(child, smallest)) {
        smallest = child;
      }
    }
    if (smallest == index) {
      return;
    }
    waiter_op* parent = heap_[index];
    place(index, heap_[smallest]);
    place(smallest, parent);
    index = smallest;
  }
}

void prepare_deadline_service(boost::asio::execution_context& context) {
  boost::asio::use_service<boost::asio::detail::deadline_timer_service<
      boost::asio::detail::chrono_time_traits<std::chrono::steady_clock,
                                              boost::asio::wait_traits<std::chrono::steady_clock>>>>(
      context);
}

}  // namespace keysem::detail
