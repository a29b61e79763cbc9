// A shard: a lock-guarded key table and a strand for the waiting path.
#ifndef KEYSEM_DETAIL_SHARD_HPP
#define KEYSEM_DETAIL_SHARD_HPP

#include <keysem/detail/core.hpp>
#include <keysem/detail/key_state.hpp>
#include <keysem/detail/spin_lock.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace keysem::detail {

// The non-template half of a shard, compiled in src/shard.cpp.
//
// lock_ guards the key table (in the typed shard), refs_ and orphaned_: it is
// held for a lookup and one compare-and-swap, or for reclaiming a state whose
// word just became zero. The strand serialises waiter queues, grants,
// cancellations and close/destroy.
class alignas(64) shard_base {
 public:
  shard_base(core_base& core, boost::asio::any_io_executor strand) noexcept
      : core_(&core), strand_(std::move(strand)) {}
  shard_base(const shard_base&) = delete;
  shard_base& operator=(const shard_base&) = delete;

  core_base& core() const noexcept { return *core_; }
  std::uint32_t limit() const noexcept { return core_->limit(); }
  const boost::asio::any_io_executor& strand() const noexcept { return strand_; }
  std::size_t key_count() const noexcept { return keys_.load(std::memory_order_relaxed); }

  // Moves the word of `state` from the value `next` computes, under the lock,
  // reclaiming the state if the result is zero. Returns {before, after}; the
  // caller must not touch `state` when `after` is zero.
  template <class Next>
  std::pair<std::uint64_t, std::uint64_t> transition_locked(key_state_base& state,
                                                            Next next) noexcept;

  // Posts a job that completes every queued op with ec.
  void post_abort(const boost::system::error_code& ec);

  // The semaphore is gone: returns true if the shard is already empty,
  // otherwise the last reclamation calls core().shard_released().
  bool orphan() noexcept;

  // The execution context is shutting down: destroys queued ops without
  // invoking them and drops the strand. Nothing runs concurrently then.
  void detach() noexcept;
  bool is_detached() const noexcept { return !strand_; }

 protected:
  ~shard_base() = default;

  // Called by the typed shard, lock held, after it inserted a new state.
  void count_new_key_locked() noexcept {
    ++refs_;
    keys_.store(keys_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  spin_lock lock_;

 private:
  struct abort_job;

  // Removes the state from the table (lock held) / frees it (lock released).
  virtual void erase_locked(key_state_base& state) noexcept = 0;
  virtual void destroy_state(key_state_base* state) noexcept = 0;
  // Appends the states that have queued ops (lock held, on the strand).
  virtual void collect_waiting_locked(std::vector<key_state_base*>& out) const = 0;

  void reclaim_locked(key_state_base& state) noexcept;
  void finish_reclaim(key_state_base* state, bool last) noexcept;
  void drop_ref() noexcept;
  void abort_waiting_keys(const boost::system::error_code& ec, bool invoke);

  // Guarded by lock_: live keys plus pending abort jobs.
  std::size_t refs_ = 0;
  bool orphaned_ = false;
  std::atomic<std::size_t> keys_{0};
  core_base* core_;
  boost::asio::any_io_executor strand_;
};

}  // namespace keysem::detail

#endif
