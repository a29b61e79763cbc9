// Shard bookkeeping: reclamation, the waiting-keys list, close/destroy jobs.
#include <keysem/detail/job.hpp>
#include <keysem/detail/shard.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <exception>
#include <mutex>
#include <thread>

namespace keysem::detail {

// Completes every queued op of the shard; holds a reference so an orphaned
// shard outlives it. Dropped (the context shut down, or it could not be
// posted), it only gives its reference back: detach() owns the queues then,
// and two passes over one queue must never overlap.
struct shard_base::abort_policy {
  struct state {
    shard_base* shard;
    boost::system::error_code ec;
  };
  static void run(state& s) {
    struct drop_on_exit {
      shard_base* shard;
      ~drop_on_exit() { shard->drop_ref(); }
    } drop{s.shard};
    s.shard->abort_waiting_keys(s.ec, true);
  }
  static void drop(state& s) noexcept { s.shard->drop_ref(); }
};

void shard_base::post_abort(const boost::system::error_code& ec) {
  // The job's reference is taken first: if the job cannot be posted (the
  // context is gone: nothing can be queued any more), its destructor gives
  // it back.
  refs_.fetch_add(one_ref, std::memory_order_relaxed);
  post_job(job<abort_policy>({this, ec}), false);
}

// The registration holds detach() back even when refused, so that a caller
// that learns the shard is detached can still settle what it started (an
// undone cancellation) before detach() looks at the queues.
bool shard_base::begin_post() noexcept {
  const std::uint64_t before = refs_.fetch_add(one_poster + one_ref, std::memory_order_acq_rel);
  return (before & detached_bit) == 0;
}

void shard_base::end_post() noexcept {
  const std::uint64_t before = refs_.fetch_sub(one_poster + one_ref, std::memory_order_acq_rel);
  if ((before & refs_mask) == one_ref) {
    core_->shard_released();  // may delete this shard
  }
}

// Close and destroy are rare, so instead of keeping a list of keys with
// waiters (two more pointers in every key's state) they scan the table.
void shard_base::abort_waiting_keys(const boost::system::error_code& ec, bool invoke) {
  std::vector<key_state_base*> waiting;
  {
    std::lock_guard guard(lock_);
    collect_waiting_locked(waiting);
  }
  // Each has queued ops, hence waiters in its word: none can be reclaimed
  // before its own turn here. A key whose completion cannot be posted does
  // not stop the others.
  std::exception_ptr failure;
  for (key_state_base* state : waiting) {
    try {
      state->abort_waiters(ec, invoke);
    } catch (...) {
      if (!failure) {
        failure = std::current_exception();
      }
    }
  }
  if (failure) {
    std::rethrow_exception(failure);
  }
}

namespace {

// The strand is the only writer: a load and a store, no read-modify-write.
void bump(std::atomic<std::uint64_t>& counter) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

std::uint64_t read(const std::atomic<std::uint64_t>& counter) noexcept {
  return counter.load(std::memory_order_relaxed);
}

}  // namespace

void shard_base::count_completion(const boost::system::error_code& ec) noexcept {
  if (!ec) {
    bump(strand_counts_.granted_after_wait);
  } else if (ec == boost::asio::error::operation_aborted) {
    bump(strand_counts_.cancelled);
  } else if (ec == boost::asio::error::timed_out) {
    bump(strand_counts_.timed_out);
  } else if (ec == boost::asio::error::invalid_argument) {
    bump(strand_counts_.invalid_argument);
  } else {
    bump(strand_counts_.rejected_closed);
  }
}

void shard_base::add_counters_locked(semaphore_stats& stats) const noexcept {
  stats.granted_immediately += locked_counts_.granted_immediately;
  stats.try_failed += locked_counts_.try_failed;
  stats.rejected_queue_full += locked_counts_.rejected_queue_full;
  stats.invalid_argument += locked_counts_.invalid_argument + read(strand_counts_.invalid_argument);
  stats.granted_after_wait += read(strand_counts_.granted_after_wait);
  stats.cancelled += read(strand_counts_.cancelled);
  stats.timed_out += read(strand_counts_.timed_out);
  stats.rejected_closed += read(strand_counts_.rejected_closed);
  stats.keys += key_count();
}

void shard_base::erase_reclaimed_locked(key_state_base& state) noexcept {
  erase_locked(state);
  keys_.store(keys_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

// The key's reference goes back only after its state (and its key, whose
// destructor is the user's code) is gone: until then the shard, and the
// core that owns it, must stay alive.
void shard_base::finish_reclaim(key_state_base* state) noexcept {
  destroy_state(state);
  drop_ref();
}

void shard_base::drop_ref() noexcept {
  const std::uint64_t before = refs_.fetch_sub(one_ref, std::memory_order_acq_rel);
  if ((before & refs_mask) == one_ref) {
    core_->shard_released();  // may delete this shard
  }
}

void shard_base::detach() noexcept {
  // From here on post_job() refuses; the posts already past their check
  // finish first, as they read the strand and use its context.
  refs_.fetch_or(detached_bit, std::memory_order_acq_rel);
  while ((refs_.load(std::memory_order_acquire) & posters_mask) != 0) {
    std::this_thread::yield();
  }
  abort_waiting_keys(boost::asio::error::operation_aborted, false);
  deadlines_.drop_timer();
  drop_executor();
}

}  // namespace keysem::detail
