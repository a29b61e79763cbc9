// The state of one live key: its atomic word and its queue of waiters.
#ifndef KEYSEM_DETAIL_KEY_STATE_HPP
#define KEYSEM_DETAIL_KEY_STATE_HPP

#include <keysem/detail/key_word.hpp>
#include <keysem/detail/waiter_op.hpp>

#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <utility>

namespace keysem::detail {

class shard_base;

// Who may do what (docs/design.md has the full argument):
// - take/try_take run with the shard's lock held, so the state cannot be
//   reclaimed under them; they are the only way the word leaves zero.
// - release and cancel_waiter_reservation run on any thread without the lock;
//   a change that would bring the word to zero is redone under the lock,
//   followed by reclamation in the same critical section.
// - The queue and everything below "strand only" run on the shard's strand.
//
// Aligned to a cache line: two keys used by two threads must not share one
// (and with a std::string key the whole state is exactly one line).
class alignas(64) key_state_base {
 public:
  // capped: the semaphore has a total limit, which every grant on this key
  // also takes (and every release gives back).
  key_state_base(shard_base& shard, std::uint64_t word, std::uint32_t limit, bool capped = false) noexcept
      : word_(word), shard_(&shard), limit_(limit | (capped ? capped_flag : 0)) {}
  key_state_base(const key_state_base&) = delete;
  key_state_base& operator=(const key_state_base&) = delete;

  std::uint64_t word() const noexcept { return word_.load(std::memory_order_acquire); }
  shard_base& shard() const noexcept { return *shard_; }

  // The key's limit: the semaphore's permits_per_key() or its override.
  std::uint32_t limit() const noexcept {
    return limit_.load(std::memory_order_relaxed) & ~capped_flag;
  }

  // Whether grants on this key also take the semaphore's total limit.
  bool capped() const noexcept {
    return (limit_.load(std::memory_order_relaxed) & capped_flag) != 0;
  }

  // Permits reserved by requests of this key that wait for the total: held
  // in the word, not yet granted to a caller.
  std::uint32_t staged() const noexcept { return staged_.load(std::memory_order_relaxed); }
  // Shard lock held: a state created by a staged request reserves its permits.
  void reserve_staged(std::uint32_t n) noexcept { staged_.fetch_add(n, std::memory_order_relaxed); }

  // Shard lock held. Changes the limit. Returns true when a drain must be
  // scheduled (call schedule_drain() once the lock is released): waiters
  // that now fit, or that can no longer ever fit, are dealt with by a grant
  // pass on the strand. The drain bit it set keeps the state alive until then.
  bool set_limit(std::uint32_t limit) noexcept;

  // Posts the drain job whose bit the caller set (see set_limit).
  void schedule_drain();

  // Shard lock held. Takes n permits if nobody waits and they fit (granted),
  // else busy; invalid when n is above the limit. (key_word::try_admit)
  // A capped key takes them from the total too, or reports busy.
  // Inline for an uncapped key: one compare-and-swap, the whole fast path.
  key_word::verdict try_take(std::uint32_t n) noexcept { return take_inline<false>(n, 0); }

  // Shard lock held. Takes n permits like try_take (granted), or else
  // registers one waiter in the word, closing the door to barging (queued):
  // the caller must then enqueue an op or call cancel_waiter_reservation().
  // queue_full and invalid change nothing. (key_word::admit) A capped key
  // whose permits are free but the total's are not reserves them and
  // registers one waiter both here and at the total (staged): the caller
  // must enqueue an op at the total, or call leave_stage() and the total's
  // cancel_waiter_reservation().
  key_word::verdict take_or_register_waiter(std::uint32_t n, std::uint64_t max_waiting) noexcept {
    return take_inline<true>(n, max_waiting);
  }

  // Lock-free (the total's state is never reclaimed while its semaphore
  // lives). The total's answer for a request its key grants: granted (taken),
  // staged (a waiter registered at the total), busy (may not wait) or
  // queue_full (the key's queue bound is 0).
  key_word::verdict take_total(std::uint32_t n, std::uint64_t max_waiting, bool may_wait) noexcept;
  // Gives back what take_total() took; never runs a drain inline.
  void give_back_total(key_word::verdict taken, std::uint32_t n) noexcept;

  // Any thread. Gives back n held permits; hands them to waiters if any.
  // Inline while the word stays non-zero and needs no drain: one
  // compare-and-swap; otherwise release_slow().
  void release(std::uint32_t n) noexcept {
    std::uint64_t word = word_.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t after = key_word::released(word, n);
      if (after == 0 || (key_word::drain_scheduled(after) && !key_word::drain_scheduled(word))) {
        return release_slow(n);
      }
      if (word_.compare_exchange_weak(word, after, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
        return;
      }
    }
  }

  // Any thread: a permit's release, which also gives the total back.
  void release_permit(std::uint32_t n) noexcept {
    if (capped()) {
      release_total(n);
    }
    release(n);
  }

  // Any thread. A staged request granted by the total stops counting as a
  // waiter (leave_stage_granted), or leaves without permits, giving its
  // reservation back (leave_stage).
  void leave_stage_granted(std::uint32_t n) noexcept;
  void leave_stage(std::uint32_t n) noexcept;

  // Any thread. Undoes one take_or_register_waiter() that never got queued,
  // or accounts for a queued op that has left the queue.
  void cancel_waiter_reservation() noexcept { subtract(key_word::one_waiter); }

  // Any thread. The owner of a state that holds key_word::owner_bit lets go
  // of it; the state may be reclaimed (and the shard freed) by this call.
  void drop_owner() noexcept { subtract(key_word::owner_bit); }

  // Any thread, best effort: makes sure a grant pass runs after this call.
  // For an op whose cancellation was undone: a pass may have skipped it.
  void request_drain() noexcept;

  // Strand only. Queues op (already registered in the word) and grants what fits.
  void enqueue(waiter_op& op);

  // Strand only: op's deadline passed. Completes it with timed_out unless it
  // was granted or cancelled first, then grants what it was holding back.
  void time_out(waiter_op& op);

  // Strand only, or shutdown. Removes a cancelled op and completes it with
  // operation_aborted (invoke) or destroys it (!invoke).
  void finish_cancelled(waiter_op& op, bool invoke);

  // Strand only, or shutdown. Completes every waiting op with ec (invoke) or
  // destroys it (!invoke); cancelled ops are left to their cancel jobs.
  void abort_waiters(const boost::system::error_code& ec, bool invoke);

  // Strand only (or shutdown): whether ops are queued, for close/destroy.
  bool has_queued_ops() const noexcept { return !queue_.empty(); }

  // Strand only: the drain job scheduled by release(). drop_drain() is its
  // destructor's path when the job is destroyed without running.
  void run_drain();
  void drop_drain() noexcept;

 private:
  friend class shard_base;

  // try_take / take_or_register_waiter: for an uncapped key, one
  // compare-and-swap inline (the whole immediate path); a capped key also
  // asks the total, out of line.
  template <bool may_wait>
  key_word::verdict take_inline(std::uint32_t n, std::uint64_t max_waiting) noexcept {
    const std::uint32_t raw_limit = limit_.load(std::memory_order_relaxed);
    if ((raw_limit & capped_flag) != 0) {
      return take(n, max_waiting, may_wait);
    }
    const key_word::policy key_policy{raw_limit, max_waiting};
    std::uint64_t word = word_.load(std::memory_order_relaxed);
    for (;;) {
      const key_word::verdict v = may_wait ? key_word::admit(word, n, key_policy)
                                           : key_word::try_admit(word, n, key_policy);
      const bool changes = v == key_word::verdict::granted || v == key_word::verdict::queued;
      if (!changes || word_.compare_exchange_weak(word, key_word::apply(word, n, v),
                                                  std::memory_order_acq_rel,
                                                  std::memory_order_relaxed)) {
        return v;
      }
    }
  }

  std::uint64_t grant_waiters(std::exception_ptr& failure);
  void fail_unfit_waiters(std::uint64_t key_limit, std::exception_ptr& failure);
  std::uint64_t leave(std::uint64_t ops) noexcept;
  void unlink(waiter_op& op) noexcept;
  void subtract(std::uint64_t amount) noexcept;
  template <class Next>
  std::pair<std::uint64_t, std::uint64_t> transition(Next next) noexcept;
  key_word::verdict take(std::uint32_t n, std::uint64_t max_waiting, bool may_wait) noexcept;
  key_state_base* total() const noexcept;
  void release_slow(std::uint32_t n, bool may_dispatch = true) noexcept;
  void release_total(std::uint32_t n) noexcept;
  bool stage_at_total(waiter_op& op, key_state_base& total, std::exception_ptr& failure);
  void schedule_drain_from(bool may_dispatch);

  static constexpr std::uint32_t capped_flag = 1u << 31;  // limits fit in 31 bits

  std::atomic<std::uint64_t> word_;
  shard_base* shard_;
  waiter_queue queue_;  // strand only
  // Written under the shard's lock, read by the lock-free paths and the
  // strand: a grant uses the limit in force when it is decided.
  std::atomic<std::uint32_t> limit_;  // and capped_flag
  std::atomic<std::uint32_t> staged_{0};

};

// The state plus the key it belongs to; a permit points straight at it, so a
// release needs no lookup.
template <class Key>
class key_state : public key_state_base {
 public:
  template <class K>
  key_state(shard_base& shard, std::uint64_t word, std::uint32_t limit, K&& key,
            std::size_t /*hash*/, bool capped = false)
      : key_state_base(shard, word, limit, capped), key_(std::forward<K>(key)) {}

  const Key& key() const noexcept { return key_; }

 private:
  Key key_;
};

// A key state that remembers its key's hash, for hashers that may throw:
// erasing the state when it is reclaimed (inside a noexcept release) then
// never calls the hasher. Nothrow hashers spare the extra word.
template <class Key>
class hashed_key_state final : public key_state<Key> {
 public:
  template <class K>
  hashed_key_state(shard_base& shard, std::uint64_t word, std::uint32_t limit, K&& key,
                   std::size_t hash, bool capped = false)
      : key_state<Key>(shard, word, limit, std::forward<K>(key), hash, capped), hash_(hash) {}

  std::size_t hash() const noexcept { return hash_; }

 private:
  std::size_t hash_;
};

inline void waiter_op::settle_granted() noexcept {
  if (origin_ != nullptr) {
    std::exchange(origin_, nullptr)->leave_stage_granted(count_);
  }
}

inline void waiter_op::abandon_stage() noexcept {
  if (origin_ != nullptr) {
    std::exchange(origin_, nullptr)->leave_stage(count_);
  }
}

}  // namespace keysem::detail

#endif
