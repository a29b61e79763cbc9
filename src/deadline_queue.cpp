// The deadline heap of a shard and its timer.
#include <keysem/detail/deadline_queue.hpp>
#include <keysem/detail/job.hpp>
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

// The timer's handler: holds a shard reference while pending. Dropped (the
// context went away), it only gives the reference back.
struct deadline_wait_policy {
  struct state {
    shard_base* shard;
    std::uint64_t generation;
  };
  static void run(state& s, const boost::system::error_code& /*cancelled or expired*/) {
    struct release_on_exit {
      shard_base* shard;
      ~release_on_exit() { shard->release_timer_ref(); }
    } release{s.shard};
    s.shard->deadlines().fire(*s.shard, s.generation);
  }
  static void drop(state& s) noexcept { s.shard->release_timer_ref(); }
};
using deadline_wait = job<deadline_wait_policy>;

deadline_queue::deadline_queue() noexcept = default;
deadline_queue::~deadline_queue() = default;

void deadline_queue::add(shard_base& shard, waiter_op& op) {
  heap_.push_back({op.deadline(), &op});  // may throw: nothing changed yet
  place(heap_.size() - 1, heap_.back());
  sift_up(heap_.size() - 1);
  arm(shard);
}

void deadline_queue::remove(waiter_op& op) noexcept {
  const std::size_t index = op.heap_index;
  if (index == waiter_op::not_in_heap) {
    return;
  }
  op.heap_index = waiter_op::not_in_heap;
  const entry last = heap_.back();
  heap_.pop_back();
  if (heap_.empty()) {
    disarm();
    return;
  }
  if (last.op == &op) {
    return;
  }
  place(index, last);
  sift_up(index);
  sift_down(last.op->heap_index);
}

void deadline_queue::fire(shard_base& shard, std::uint64_t generation) {
  if (generation != generation_) {
    return;  // a wait superseded by an earlier deadline, or cancelled
  }
  armed_for_ = waiter_op::no_deadline;
  const auto now = waiter_op::clock::now();
  std::exception_ptr failure;
  while (!heap_.empty() && heap_.front().deadline <= now) {
    waiter_op& op = *heap_.front().op;
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
  const auto earliest = heap_.front().deadline;
  if (earliest >= armed_for_) {
    return;  // the pending wait fires first; it re-arms then
  }
  if (!timer_) {
    timer_ = std::make_unique<timer>(shard.strand_executor());
  }
  // Not armed until the new wait is in: expires_at cancels the pending one,
  // and async_wait may throw.
  armed_for_ = waiter_op::no_deadline;
  timer_->clock.expires_at(earliest);
  ++generation_;
  shard.take_timer_ref();
  timer_->clock.async_wait(deadline_wait({&shard, generation_}));
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
  return heap_[a].deadline < heap_[b].deadline;
}

void deadline_queue::place(std::size_t index, entry e) noexcept {
  heap_[index] = e;
  e.op->heap_index = index;
}

void deadline_queue::sift_up(std::size_t index) noexcept {
  while (index > 0) {
    const std::size_t parent = (index - 1) / 2;
    if (!earlier(index, parent)) {
      return;
    }
    const entry child = heap_[index];
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
    const entry parent = heap_[index];
    place(index, heap_[smallest]);
    place(smallest, parent);
    index = smallest;
  }
}

}  // namespace keysem::detail
