// A parked acquire operation, and the per-key FIFO that holds them.
#ifndef KEYSEM_DETAIL_WAITER_OP_HPP
#define KEYSEM_DETAIL_WAITER_OP_HPP

#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace keysem::detail {

class key_state_base;

// The type-erased part of an acquire that has to wait. The typed part
// (acquire_op.hpp) owns the handler; this part is all the strand-side code in
// src/ needs. Whether the op is granted (or aborted) or cancelled is decided
// by one compare-and-swap on status_, whichever thread gets there first.
class waiter_op {
 public:
  enum class status : int {
    waiting,
    cancelled,
    claimed,
    transferring,          // on its way from its key's queue to the total's (total limit)
    transfer_cancelled,    // ... and cancelled on the way: the transfer job finishes it
  };

  // Posts the completion to the handler's executor; ownership moves with it.
  // A default error_code means granted: the op turns into a permit.
  void complete(const boost::system::error_code& ec) { complete_(this, ec); }

  // Destroys the handler without invoking it (shutdown paths).
  void destroy() noexcept { destroy_(this); }

  // waiting -> claimed: the caller may grant or abort the op.
  bool try_claim() noexcept { return transition_from_waiting(status::claimed); }

  // waiting -> cancelled: the caller must send the op to its cancel job.
  bool try_cancel() noexcept { return transition_from_waiting(status::cancelled); }

  // What a cancellation signal does to the op: waiting -> cancelled (send it
  // to its cancel job), transferring -> transfer_cancelled (the transfer job
  // finishes it), anything else: too late, the op is granted or leaving.
  enum class cancel_outcome { post_cancel_job, left_to_transfer, too_late };
  cancel_outcome request_cancel() noexcept {
    status current = status_.load(std::memory_order_acquire);
    for (;;) {
      const status to = current == status::waiting        ? status::cancelled
                        : current == status::transferring ? status::transfer_cancelled
                                                          : current;
      if (to == current) {
        return cancel_outcome::too_late;
      }
      if (status_.compare_exchange_weak(current, to, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        return to == status::cancelled ? cancel_outcome::post_cancel_job
                                       : cancel_outcome::left_to_transfer;
      }
    }
  }

  // waiting -> transferring: the key's strand moves the op to the total.
  bool try_transfer() noexcept { return transition_from_waiting(status::transferring); }

  // transferring -> waiting, on the total's strand; false if it was
  // cancelled on the way.
  bool resume_transfer() noexcept {
    status expected = status::transferring;
    return status_.compare_exchange_strong(expected, status::waiting, std::memory_order_acq_rel,
                                           std::memory_order_acquire);
  }

  // cancelled -> waiting, by the thread whose try_cancel() succeeded, when the
  // cancel job could not be posted: the op waits on as if never cancelled.
  void undo_cancel() noexcept { status_.store(status::waiting, std::memory_order_release); }

  bool is_cancelled() const noexcept {
    return status_.load(std::memory_order_acquire) == status::cancelled;
  }

  // The state whose queue (and strand) the op is in: its key's, or, once
  // its key has reserved its permits, the total's.
  key_state_base& key() const noexcept { return *key_; }

  // The key whose permits the op gets: its own key, before and after it
  // waited at the total.
  key_state_base& permit_key() const noexcept { return origin_ != nullptr ? *origin_ : *key_; }

  // Its key reserved its permits (and counts it as a waiter): the op now
  // waits in total's queue. Before the op is visible to the total's strand.
  void stage_at(key_state_base& total) noexcept {
    origin_ = key_;
    key_ = &total;
  }

  // The total granted the op: its key stops counting it as a waiter.
  void settle_granted() noexcept;
  // The op leaves without permits: its key's reservation goes.
  void abandon_stage() noexcept;
  std::uint32_t count() const noexcept { return count_; }

  using clock = std::chrono::steady_clock;
  static constexpr clock::time_point no_deadline = clock::time_point::max();

  // When the op stops waiting with timed_out; no_deadline if it never does.
  clock::time_point deadline() const noexcept { return deadline_; }
  void set_deadline(clock::time_point deadline) noexcept { deadline_ = deadline; }

  // Strand only: the op's place in its shard's deadline heap.
  static constexpr std::size_t not_in_heap = ~std::size_t{0};
  std::size_t heap_index = not_in_heap;

  // Strand (or shutdown) only: where the op's strand jobs are. When a context
  // is destroyed, its queued jobs are destroyed unrun, and keysem does not
  // rely on their order (a shard's serialiser happens to drop its own in
  // order; asio's strand, kept for Networking TS executors, does not); this
  // lets the enqueue job and the cancel job of one op agree on who finishes it.
  enum class strand_stage : unsigned char {
    awaiting_enqueue,    // the enqueue job has neither run nor been dropped
    cancel_job_dropped,  // ... and the cancel job was dropped first, leaving the op to it
    enqueued,            // the enqueue job ran (or was dropped)
  };
  strand_stage stage = strand_stage::awaiting_enqueue;

 protected:
  using complete_fn = void (*)(waiter_op*, const boost::system::error_code&);
  using destroy_fn = void (*)(waiter_op*) noexcept;

  waiter_op(key_state_base& key, std::uint32_t count, complete_fn complete,
            destroy_fn destroy) noexcept
      : key_(&key), count_(count), complete_(complete), destroy_(destroy) {}
  // A staged op destroyed unrun gives its key's reservation back.
  ~waiter_op() { abandon_stage(); }

 private:
  friend class waiter_queue;

  bool transition_from_waiting(status to) noexcept {
    status expected = status::waiting;
    return status_.compare_exchange_strong(expected, to, std::memory_order_acq_rel,
                                           std::memory_order_acquire);
  }

  waiter_op* next_ = nullptr;
  waiter_op* prev_ = nullptr;
  bool linked_ = false;
  key_state_base* key_;
  key_state_base* origin_ = nullptr;  // the key, while its reservation waits for the total
  std::uint32_t count_;
  clock::time_point deadline_ = no_deadline;
  std::atomic<status> status_{status::waiting};
  complete_fn complete_;
  destroy_fn destroy_;
};

// The op whose cancel job this thread is posting. If the post fails, the job
// is destroyed inside the post; it must then leave the op alone, since the
// cancellation is undone rather than finished.
inline thread_local const waiter_op* cancel_post_in_progress = nullptr;

// Intrusive doubly linked FIFO; touched only on the owning shard's strand.
// Only the head is stored (the head's prev_ points at the tail), so that a
// key's state keeps to one cache line with room for its limit.
class waiter_queue {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  waiter_op* front() const noexcept { return head_; }
  static waiter_op* next(const waiter_op& op) noexcept { return op.next_; }
  static bool is_linked(const waiter_op& op) noexcept { return op.linked_; }

  void push_back(waiter_op& op) noexcept {
    op.next_ = nullptr;
    op.linked_ = true;
    if (head_ == nullptr) {
      op.prev_ = &op;
      head_ = &op;
      return;
    }
    waiter_op* tail = head_->prev_;
    tail->next_ = &op;
    op.prev_ = tail;
    head_->prev_ = &op;
  }

  void erase(waiter_op& op) noexcept {
    if (&op == head_) {
      head_ = op.next_;
      if (head_ != nullptr) {
        head_->prev_ = op.prev_;  // the tail
      }
    } else {
      op.prev_->next_ = op.next_;
      (op.next_ != nullptr ? op.next_ : head_)->prev_ = op.prev_;
    }
    op.next_ = op.prev_ = nullptr;
    op.linked_ = false;
  }

 private:
  waiter_op* head_ = nullptr;
};

}  // namespace keysem::detail

#endif
