#include <keysem/detail/serial_executor.hpp>

#include <utility>

namespace keysem::detail {

namespace {

// The queues whose runners this thread is inside, innermost first: a runner
// started inline from a function of another queue nests inside it.
struct running_frame {
  const serial_queue* queue;
  const running_frame* outer;
};

thread_local const running_frame* running_frames = nullptr;

class running_scope {
 public:
  explicit running_scope(const serial_queue& queue) noexcept : frame_{&queue, running_frames} {
    running_frames = &frame_;
  }
  running_scope(const running_scope&) = delete;
  running_scope& operator=(const running_scope&) = delete;
  ~running_scope() { running_frames = frame_.outer; }

 private:
  running_frame frame_;
};

// The stack holds the newest node first; the runner wants the oldest first.
serial_node* reverse(serial_node* newest_first) noexcept {
  serial_node* oldest_first = nullptr;
  while (newest_first != nullptr) {
    serial_node* next = newest_first->next;
    newest_first->next = oldest_first;
    oldest_first = newest_first;
    newest_first = next;
  }
  return oldest_first;
}

}  // namespace

// A runner always drains the queue, or drops it, before it lets go; a queue
// is destroyed only once no runner holds it. Nothing is left here, but a
// node that were would still be dropped rather than leaked.
serial_queue::~serial_queue() {
  std::uintptr_t word = incoming_.load(std::memory_order_acquire);
  serial_node* node = reverse(reinterpret_cast<serial_node*>(word & ~running_bit));
  while (node != nullptr) {
    serial_node* next = node->next;
    node->invoke(node, false);
    node = next;
  }
}

bool serial_queue::push(serial_node* node) noexcept {
  std::uintptr_t word = incoming_.load(std::memory_order_relaxed);
  for (;;) {
    if (word == 0) {
      // Idle: the caller becomes the runner's starter and its node the first
      // batch, on its own. What others push from now on waits for the next.
      if (incoming_.compare_exchange_weak(word, running_bit, std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
        node->next = nullptr;
        ready_ = node;
        return true;
      }
    } else {
      node->next = reinterpret_cast<serial_node*>(word & ~running_bit);
      if (incoming_.compare_exchange_weak(word, reinterpret_cast<std::uintptr_t>(node) | running_bit,
                                          std::memory_order_release, std::memory_order_relaxed)) {
        return false;
      }
    }
  }
}

bool serial_queue::refill_or_idle() noexcept {
  std::uintptr_t word = running_bit;
  // Idle only from "nothing pushed, running": a push that lands first makes
  // this fail, and the nodes it brought are taken below.
  if (incoming_.compare_exchange_strong(word, 0, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
    return false;
  }
  word = incoming_.exchange(running_bit, std::memory_order_acq_rel);
  ready_ = reverse(reinterpret_cast<serial_node*>(word & ~running_bit));
  return true;
}

bool serial_queue::run(std::size_t budget) {
  const running_scope scope(*this);
  for (std::size_t ran = 0; ready_ != nullptr && ran < budget; ++ran) {
    serial_node* node = std::exchange(ready_, ready_->next);
    node->invoke(node, true);
  }
  return settle();
}

bool serial_queue::settle() noexcept {
  return ready_ != nullptr || refill_or_idle();
}

void serial_queue::drop_all() noexcept {
  // A function's destructor may push to this queue again; those are dropped
  // too, before the queue goes idle.
  while (ready_ != nullptr || refill_or_idle()) {
    serial_node* node = std::exchange(ready_, ready_->next);
    node->invoke(node, false);
  }
}

bool serial_queue::running_in_this_thread() const noexcept {
  for (const running_frame* frame = running_frames; frame != nullptr; frame = frame->outer) {
    if (frame->queue == this) {
      return true;
    }
  }
  return false;
}

}  // namespace keysem::detail
