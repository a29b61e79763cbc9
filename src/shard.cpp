// Shard bookkeeping: reclamation, the waiting-keys list, close/destroy jobs.
#include <keysem/detail/shard.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <exception>
#include <mutex>

namespace keysem::detail {

// Completes (or, destroyed without running, destroys) every queued op of the
// shard; holds a reference so an orphaned shard outlives it.
struct shard_base::abort_job {
  shard_base* shard;
  boost::system::error_code ec;

  abort_job(shard_base& s, const boost::system::error_code& e) noexcept : shard(&s), ec(e) {}
  abort_job(abort_job&& other) noexcept
      : shard(std::exchange(other.shard, nullptr)), ec(other.ec) {}
  abort_job& operator=(abort_job&&) = delete;
  ~abort_job() {
    if (shard != nullptr) {
      shard->abort_waiting_keys(ec, false);
      shard->drop_ref();
    }
  }
  void operator()() {
    shard_base* s = std::exchange(shard, nullptr);
    struct drop_on_exit {
      shard_base* s;
      ~drop_on_exit() { s->drop_ref(); }
    } drop{s};
    s->abort_waiting_keys(ec, true);
  }
};

void shard_base::post_abort(const boost::system::error_code& ec) {
  if (is_detached()) {
    return;  // nothing can be queued any more
  }
  {
    std::lock_guard guard(lock_);
    ++refs_;
  }
  boost::asio::post(strand_, abort_job(*this, ec));
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

void shard_base::reclaim_locked(key_state_base& state) noexcept {
  erase_locked(state);
  --refs_;
  keys_.store(keys_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

void shard_base::finish_reclaim(key_state_base* state, bool last) noexcept {
  destroy_state(state);
  if (last) {
    core_->shard_released();  // may delete this shard
  }
}

void shard_base::drop_ref() noexcept {
  std::unique_lock guard(lock_);
  --refs_;
  const bool last = orphaned_ && refs_ == 0;
  guard.unlock();
  if (last) {
    core_->shard_released();
  }
}

void shard_base::detach() noexcept {
  abort_waiting_keys(boost::asio::error::operation_aborted, false);
  strand_ = boost::asio::any_io_executor();
}

bool shard_base::orphan() noexcept {
  std::lock_guard guard(lock_);
  orphaned_ = true;
  return refs_ == 0;
}

}  // namespace keysem::detail
