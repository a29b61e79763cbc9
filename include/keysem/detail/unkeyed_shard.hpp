// The shard of an unkeyed semaphore: one state, no table.
#ifndef KEYSEM_DETAIL_UNKEYED_SHARD_HPP
#define KEYSEM_DETAIL_UNKEYED_SHARD_HPP

#include <keysem/detail/key_state.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/semaphore_stats.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace keysem::detail {

// The key type of the one state of an unkeyed semaphore.
struct no_key {
  friend bool operator==(no_key, no_key) noexcept { return true; }
};

// A shard with exactly one state, built with the shard and kept alive by the
// owner bit of its word while the semaphore lives. The word therefore never
// reaches zero under a request, so requests need neither the lock nor a
// lookup: they go straight to the word (key_word::admit / try_admit). Once
// the semaphore drops the owner bit, the state counts as a live key until
// its last permit comes back, holding the shard (and the core) as a keyed
// state does.
class unkeyed_shard final : public shard_base {
 public:
  struct admission {
    key_state<no_key>* state;
    key_word::verdict verdict;
  };

  unkeyed_shard(core_base& core, boost::asio::any_io_executor strand, std::uint32_t limit)
      : shard_base(core, std::move(strand)), state_(*this, key_word::owner_bit, limit, no_key{}, 0) {
    count_new_key_locked();  // nothing else can see the shard yet
  }

  admission admit(std::uint32_t n, const admission_policy& policy) noexcept {
    const key_word::verdict verdict = policy.may_wait()
                                          ? state_.take_or_register_waiter(n, policy.max_waiting)
                                          : state_.try_take(n);
    count(verdict, policy.request);
    return {&state_, verdict};
  }

  key_usage usage() const noexcept {
    const std::uint64_t word = state_.word();
    return {key_word::held(word), key_word::waiters(word), state_.limit()};
  }

  // The semaphore is gone: its owner bit goes. The last release (or this
  // call, when nothing is held or waiting) reclaims the state, which gives
  // the shard's reference back. Touches nothing afterwards.
  void drop_owner() noexcept { state_.drop_owner(); }

  key_state_base& state() noexcept { return state_; }

  // The outcomes of the acquires that waited here (the total limit of a
  // keyed semaphore counts only those: the rest are its keys').
  void add_waited_outcomes(semaphore_stats& stats) const noexcept {
    const std::size_t keys = stats.keys;
    std::lock_guard guard(lock_);
    add_counters_locked(stats);
    stats.keys = keys;
  }

  void add_to(semaphore_stats& stats) const noexcept {
    {
      std::lock_guard guard(lock_);
      add_counters_locked(stats);
    }
    stats.keys = 0;
    stats.granted_immediately += counts_.granted.load(std::memory_order_relaxed);
    stats.try_failed += counts_.try_failed.load(std::memory_order_relaxed);
    stats.rejected_queue_full += counts_.queue_full.load(std::memory_order_relaxed);
    stats.invalid_argument += counts_.invalid.load(std::memory_order_relaxed);
    const key_usage now = usage();
    stats.in_use += now.in_use;
    stats.waiting += now.waiting;
  }

 private:
  // The immediate outcomes: decided without a lock, so counted atomically.
  void count(key_word::verdict verdict, admission_policy::kind request) noexcept {
    std::atomic<std::uint64_t>* counter = nullptr;
    switch (verdict) {
      case key_word::verdict::granted:
        counter = &counts_.granted;
        break;
      case key_word::verdict::busy:
        if (request == admission_policy::kind::try_acquire) {
          counter = &counts_.try_failed;
        }
        break;
      case key_word::verdict::queue_full:
        counter = &counts_.queue_full;
        break;
      case key_word::verdict::invalid:
        counter = &counts_.invalid;
        break;
      case key_word::verdict::queued:
      case key_word::verdict::staged:
        break;  // counted when it completes
    }
    if (counter != nullptr) {
      counter->fetch_add(1, std::memory_order_relaxed);
    }
  }

  void collect_waiting_locked(std::vector<key_state_base*>& out) const override {
    if (state_.has_queued_ops()) {
      out.push_back(const_cast<key_state<no_key>*>(&state_));
    }
  }
  // The state is part of the shard: reclaiming it frees nothing.
  void erase_locked(key_state_base&) noexcept override {}
  void destroy_state(key_state_base*) noexcept override {}

  key_state<no_key> state_;
  struct {
    std::atomic<std::uint64_t> granted{0};
    std::atomic<std::uint64_t> try_failed{0};
    std::atomic<std::uint64_t> queue_full{0};
    std::atomic<std::uint64_t> invalid{0};
  } counts_;
};

}  // namespace keysem::detail

#endif
