// The lock-free paths of a key's word, and the strand side of its queue.
#include <keysem/detail/job.hpp>
#include <keysem/detail/key_state.hpp>
#include <keysem/detail/shard.hpp>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <exception>
#include <mutex>
#include <utility>

namespace keysem::detail {

using namespace key_word;

namespace {

// The shard whose strand job this thread is running, if any. A release
// inside a strand job (a completion that could not be posted gives its
// permit back) must post its drain rather than dispatch it: dispatch would
// run the drain inline, inside the job that is walking the queue.
thread_local const shard_base* running_shard = nullptr;

class strand_job_scope {
 public:
  explicit strand_job_scope(const shard_base& shard) noexcept
      : previous_(std::exchange(running_shard, &shard)) {}
  strand_job_scope(const strand_job_scope&) = delete;
  strand_job_scope& operator=(const strand_job_scope&) = delete;
  ~strand_job_scope() { running_shard = previous_; }

 private:
  const shard_base* previous_;
};

// Posting a completion can fail (the handler's allocator throws). The op is
// then destroyed, giving back any permit, and the strand job finishes its
// bookkeeping before the first such exception leaves it.
void complete_or_record(waiter_op& op, const boost::system::error_code& ec,
                        std::exception_ptr& failure) noexcept {
  shard_base& shard = op.key().shard();
  try {
    op.complete(ec);
    shard.count_completion(ec);
  } catch (...) {
    if (!failure) {
      failure = std::current_exception();
    }
  }
}

void rethrow_if(const std::exception_ptr& failure) {
  if (failure) {
    std::rethrow_exception(failure);
  }
}

}  // namespace

// Drains the queue after releases. Dropped, it gives up the drain bit, which
// is its reference to the state.
struct drain_policy {
  using state = key_state_base*;
  static void run(key_state_base* key) { key->run_drain(); }
  static void drop(key_state_base* key) noexcept { key->drop_drain(); }
};
using drain_job = job<drain_policy>;

// Carries an op from its key's queue to the total's, where it was already
// registered as a waiter. Dropped (the context is gone), it destroys the op,
// whose key gets its reservation back, and gives back the registration.
struct transfer_policy {
  using state = waiter_op*;
  static void run(waiter_op* op) {
    if (op->resume_transfer()) {
      op->key().enqueue(*op);
    } else {
      op->key().finish_cancelled(*op, true);  // cancelled on the way
    }
  }
  static void drop(waiter_op* op) noexcept { op->key().finish_cancelled(*op, false); }
};
using transfer_job = job<transfer_policy>;

template <class Next>
std::pair<std::uint64_t, std::uint64_t> shard_base::transition_locked(key_state_base& state,
                                                                      Next next) noexcept {
  std::unique_lock guard(lock_);
  std::uint64_t before = state.word_.load(std::memory_order_relaxed);
  std::uint64_t after = next(before);
  while (!state.word_.compare_exchange_weak(before, after, std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
    after = next(before);
  }
  if (after != 0) {
    return {before, after};
  }
  erase_reclaimed_locked(state);
  guard.unlock();
  finish_reclaim(&state);
  return {before, 0};
}

// Lock-free while the word stays non-zero. Reaching zero means reclaiming the
// state, which must not race with a lookup that is about to take permits, so
// that last step is redone under the shard's lock.
template <class Next>
std::pair<std::uint64_t, std::uint64_t> key_state_base::transition(Next next) noexcept {
  std::uint64_t before = word_.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t after = next(before);
    if (after == 0) {
      return shard_->transition_locked(*this, next);
    }
    if (word_.compare_exchange_weak(before, after, std::memory_order_acq_rel,
                                    std::memory_order_relaxed)) {
      return {before, after};
    }
  }
}

key_state_base* key_state_base::total() const noexcept { return shard_->core().total_state(); }

// The key's rule decides first; a grant on a capped key then needs the
// total too, asked once (one more atomic step) and given back if the key's
// word moves to another verdict before the compare-and-swap lands.
verdict key_state_base::take(std::uint32_t n, std::uint64_t max_waiting, bool may_wait) noexcept {
  const policy key_policy{limit(), max_waiting};
  key_state_base* const gate = capped() ? total() : nullptr;
  verdict at_total = verdict::invalid;  // not asked yet
  std::uint64_t word = word_.load(std::memory_order_relaxed);
  for (;;) {
    verdict v = may_wait ? admit(word, n, key_policy) : try_admit(word, n, key_policy);
    std::uint64_t next = apply(word, n, v);
    if (v == verdict::granted && gate != nullptr) {
      if (at_total == verdict::invalid) {
        at_total = gate->take_total(n, max_waiting, may_wait);
      }
      if (at_total == verdict::busy || at_total == verdict::queue_full) {
        return at_total;
      }
      if (at_total == verdict::staged) {
        v = verdict::staged;
        next = key_word::staged(word, n);
      }
    } else if (at_total != verdict::invalid) {
      gate->give_back_total(at_total, n);
      at_total = verdict::invalid;
    }
    if (v != verdict::granted && v != verdict::queued && v != verdict::staged) {
      return v;
    }
    if (word_.compare_exchange_weak(word, next, std::memory_order_acq_rel,
                                    std::memory_order_relaxed)) {
      if (v == verdict::staged) {
        staged_.fetch_add(n, std::memory_order_relaxed);
      }
      return v;
    }
  }
}

verdict key_state_base::take_total(std::uint32_t n, std::uint64_t max_waiting,
                                   bool may_wait) noexcept {
  if (!may_wait || max_waiting == 0) {
    // Waiting at the total would make one more waiter of its key.
    if (try_take(n) == verdict::granted) {  // the total is never capped: inline
      return verdict::granted;
    }
    return may_wait ? verdict::queue_full : verdict::busy;
  }
  switch (take(n, ~std::uint64_t{0}, true)) {
    case verdict::granted:
      return verdict::granted;
    case verdict::queued:
      return verdict::staged;
    default:
      return verdict::queue_full;  // the total's word counts no more waiters
  }
}

void key_state_base::give_back_total(verdict taken, std::uint32_t n) noexcept {
  if (taken == verdict::granted) {
    release_slow(n, false);  // the caller may hold a shard's lock: never run the drain here
  } else if (taken == verdict::staged) {
    cancel_waiter_reservation();
  }
}

bool key_state_base::set_limit(std::uint32_t limit) noexcept {
  limit_.store(limit | (capped() ? capped_flag : 0), std::memory_order_relaxed);
  // The lock is held: the word cannot reach zero under us.
  const auto [before, after] = transition([](std::uint64_t word) { return limit_changed(word); });
  return !drain_scheduled(before) && drain_scheduled(after);
}

// The release that brings the word to zero (reclaiming the state) or must
// schedule a drain; that drain runs inline only if may_dispatch.
void key_state_base::release_slow(std::uint32_t n, bool may_dispatch) noexcept {
  const auto [before, after] =
      transition([n](std::uint64_t word) { return released(word, n); });
  if (!drain_scheduled(before) && drain_scheduled(after)) {
    schedule_drain_from(may_dispatch && running_shard == nullptr);
  }
}

// A capped permit's release gives the total back first: the key's word
// keeps the state (and so the semaphore's core, which owns the total) alive
// until its own release.
void key_state_base::release_total(std::uint32_t n) noexcept { total()->release(n); }

void key_state_base::leave_stage_granted(std::uint32_t n) noexcept {
  staged_.fetch_sub(n, std::memory_order_relaxed);
  subtract(one_waiter);  // its permits keep the word above zero
}

void key_state_base::leave_stage(std::uint32_t n) noexcept {
  staged_.fetch_sub(n, std::memory_order_relaxed);
  const auto [before, after] =
      transition([n](std::uint64_t word) { return left_stage(word, n); });
  if (!drain_scheduled(before) && drain_scheduled(after)) {
    schedule_drain();  // noexcept: as a permit's release, terminates if it cannot
  }
}

// The caller's op is registered as a waiter, so the word is not zero. The
// rescan bit (the one a limit change sets) changes the word even when a drain
// is already running, so that a drain past its scan goes round once more
// instead of missing the op.
void key_state_base::request_drain() noexcept {
  const auto [before, after] = transition([](std::uint64_t word) { return limit_changed(word); });
  if (drain_scheduled(before) || !drain_scheduled(after)) {
    return;
  }
  try {
    schedule_drain();
  } catch (...) {
    // Out of memory again: the unposted drain job gave its bit back; the op
    // waits for the key's next release.
  }
}

void key_state_base::unlink(waiter_op& op) noexcept {
  queue_.erase(op);
  shard_->deadlines().remove(op);
}

void key_state_base::time_out(waiter_op& op) {
  if (!op.try_claim()) {
    return;  // cancelled: its cancel job takes it out
  }
  const strand_job_scope scope(*shard_);
  std::exception_ptr failure;
  // The op's registration is this pass's reference until the pin takes over.
  word_.fetch_add(strand_pin_bit, std::memory_order_relaxed);
  queue_.erase(op);
  leave(1);
  complete_or_record(op, boost::asio::error::timed_out, failure);
  grant_waiters(failure);  // it may have been holding the head back
  subtract(strand_pin_bit);
  rethrow_if(failure);
}

std::uint64_t key_state_base::leave(std::uint64_t ops) noexcept {
  return word_.fetch_sub(ops * one_waiter, std::memory_order_acq_rel) - ops * one_waiter;
}

// The drain job went without running: its bit, and a limit change that only
// a grant pass would have consumed, go with it.
void key_state_base::drop_drain() noexcept {
  transition([](std::uint64_t word) { return word & ~(drain_bit | limit_changed_bit); });
}

void key_state_base::subtract(std::uint64_t amount) noexcept {
  transition([amount](std::uint64_t word) { return word - amount; });
}

// dispatch: when the releasing thread already runs the strand's context and
// the strand is idle, the drain runs right here and saves a queue round trip.
// A drain job that cannot be posted (the context is gone, and with it every
// waiter) gives its drain bit back as it is destroyed.
void key_state_base::schedule_drain() { schedule_drain_from(running_shard == nullptr); }

void key_state_base::schedule_drain_from(bool may_dispatch) {
  if (may_dispatch) {
    shard_->dispatch_job<drain_policy>(this);
  } else {
    shard_->post_job(drain_job(this), false);
  }
}

void key_state_base::enqueue(waiter_op& op) {
  const strand_job_scope scope(*shard_);
  std::exception_ptr failure;
  if (const auto ec = shard_->core().stop_error()) {
    if (op.try_claim()) {
      complete_or_record(op, ec, failure);
      cancel_waiter_reservation();
    }
    rethrow_if(failure);
    return;  // a cancelled op is finished by its cancel job
  }
  queue_.push_back(op);
  if (op.deadline() != waiter_op::no_deadline) {
    try {
      shard_->deadlines().add(*shard_, op);
    } catch (...) {
      // Out of memory for the heap: the op waits without its deadline rather
      // than not at all.
    }
  }
  // Most enqueues find the key busy (that is why the op waits): then there
  // is no pass to make, and no pin to take and give back.
  if (!may_grant(word_.load(std::memory_order_acquire), limit())) {
    return;
  }
  // Granting op hands over its reference to the state, and its handler may
  // release the permit on another thread at once: pin the state until the
  // strand is done with it.
  word_.fetch_add(strand_pin_bit, std::memory_order_relaxed);
  grant_waiters(failure);
  subtract(strand_pin_bit);
  rethrow_if(failure);
}

// Grants queued ops in FIFO order while they fit; a head that does not fit
// blocks the ops behind it, so a large weighted request is never starved by
// small ones. Cancelled ops are skipped: their cancel jobs unlink them.
// Returns the last word seen, for run_drain's final check. The caller must
// hold a reference of its own (drain bit, strand pin, a cancelled op's
// registration): each grant gives the op's reference away with the permit.
std::uint64_t key_state_base::grant_waiters(std::exception_ptr& failure) {
  std::uint64_t word = word_.load(std::memory_order_acquire);
  const bool limit_changed = (word & limit_changed_bit) != 0;
  if (limit_changed) {
    // Consumed before anything else: the bit must never outlive the drain
    // that came with it, or the word could not reach zero.
    word = word_.fetch_and(~limit_changed_bit, std::memory_order_acq_rel) & ~limit_changed_bit;
  }
  if (shard_->core().is_stopped()) {
    return word;  // close/destroy completes the queue; grant nothing more
  }
  const std::uint64_t key_limit = limit();
  if (limit_changed) {
    fail_unfit_waiters(key_limit, failure);
    word = word_.load(std::memory_order_acquire);
  }
  key_state_base* const gate = capped() ? total() : nullptr;
  for (waiter_op* op = queue_.front(); op != nullptr;) {
    waiter_op* const next = waiter_queue::next(*op);
    if (!op->is_cancelled()) {
      const head_action action = serve_head(word, op->count(), key_limit);
      if (action == head_action::wait) {
        break;
      }
      verdict at_total = verdict::invalid;  // not taken
      if (gate != nullptr && action == head_action::grant) {
        at_total = gate->take_total(op->count(), ~std::uint64_t{0}, true);
        if (at_total == verdict::staged) {
          if (stage_at_total(*op, *gate, failure)) {
            word = word_.load(std::memory_order_acquire);
          }
          op = next;
          continue;
        }
        if (at_total == verdict::queue_full) {
          break;  // the total counts no more waiters: wait for a release
        }
      }
      if (!op->try_claim()) {
        if (gate != nullptr) {
          gate->give_back_total(at_total, op->count());  // cancelled meanwhile
        }
      } else {
        unlink(*op);
        // close() may have run on another thread since the pass began: once
        // it has returned, nothing queued is granted.
        if (const auto ec = shard_->core().stop_error()) {
          if (gate != nullptr) {
            gate->give_back_total(at_total, op->count());
          }
          complete_or_record(*op, ec, failure);
          return leave(1);
        }
        if (action == head_action::fail) {  // the limit was lowered below its n
          word = leave(1);
          complete_or_record(*op, boost::asio::error::invalid_argument, failure);
        } else {
          // Only this strand adds permits while waiters exist, and releases
          // only subtract, so the permits seen free above are still free.
          const std::uint64_t delta = granted_from_queue(0, op->count());
          word = word_.fetch_add(delta, std::memory_order_acq_rel) + delta;
          complete_or_record(*op, {}, failure);
        }
      }
    }
    op = next;
  }
  return word;
}

// The head fits its key but not the total, where it is registered: its key
// reserves its permits (it stays a waiter here) and the op moves to the
// total's queue. False if it was cancelled first (the registration goes back).
bool key_state_base::stage_at_total(waiter_op& op, key_state_base& gate,
                                    std::exception_ptr& failure) {
  if (!op.try_transfer()) {
    gate.cancel_waiter_reservation();
    return false;
  }
  unlink(op);
  staged_.fetch_add(op.count(), std::memory_order_relaxed);
  word_.fetch_add(staged_from_queue(0, op.count()), std::memory_order_acq_rel);
  op.stage_at(gate);
  try {
    gate.shard().post_job(transfer_job(&op), false);
  } catch (...) {
    // The job was dropped: the op is gone, its reservation given back.
    if (!failure) {
      failure = std::current_exception();
    }
  }
  return true;
}

// A lowered limit: requests above it could never be granted, wherever they
// wait in the queue.
void key_state_base::fail_unfit_waiters(std::uint64_t key_limit, std::exception_ptr& failure) {
  for (waiter_op* op = queue_.front(); op != nullptr;) {
    waiter_op* const next = waiter_queue::next(*op);
    if (op->count() > key_limit && op->try_claim()) {
      unlink(*op);
      leave(1);
      complete_or_record(*op, boost::asio::error::invalid_argument, failure);
    }
    op = next;
  }
}

void key_state_base::run_drain() {
  const strand_job_scope scope(*shard_);
  std::exception_ptr failure;
  for (;;) {
    std::uint64_t word = grant_waiters(failure);
    // The drain bit is this job's reference. Clearing it fails if a release
    // slipped in after the scan; then scan again, or that release's permits
    // would wait for a drain nobody scheduled.
    const std::uint64_t cleared = word & ~drain_bit;
    if (cleared != 0) {
      if (word_.compare_exchange_strong(word, cleared, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
        break;
      }
      continue;
    }
    // Only the drain bit is left: the state dies with it, unless the word
    // moved since the scan, in which case the locked step changes nothing.
    const auto [before, after] = shard_->transition_locked(
        *this, [word](std::uint64_t current) { return current == word ? 0 : current; });
    if (after == 0) {
      break;
    }
  }
  rethrow_if(failure);  // the state may be gone: touch nothing of it
}

void key_state_base::finish_cancelled(waiter_op& op, bool invoke) {
  std::exception_ptr failure;
  if (waiter_queue::is_linked(op)) {
    unlink(op);
  }
  if (invoke) {
    const strand_job_scope scope(*shard_);
    grant_waiters(failure);  // the cancelled op may have been blocking the head
    complete_or_record(op, boost::asio::error::operation_aborted, failure);
  } else {
    op.destroy();
  }
  cancel_waiter_reservation();
  rethrow_if(failure);
}

void key_state_base::abort_waiters(const boost::system::error_code& ec, bool invoke) {
  const strand_job_scope scope(*shard_);
  std::exception_ptr failure;
  std::uint64_t aborted = 0;
  for (waiter_op* op = queue_.front(); op != nullptr;) {
    waiter_op* const next = waiter_queue::next(*op);
    if (op->try_claim()) {
      unlink(*op);
      if (invoke) {
        complete_or_record(*op, ec, failure);
      } else {
        op->destroy();
      }
      ++aborted;
    }
    op = next;
  }
  if (aborted != 0) {
    subtract(aborted * one_waiter);
  }
  rethrow_if(failure);
}

}  // namespace keysem::detail
