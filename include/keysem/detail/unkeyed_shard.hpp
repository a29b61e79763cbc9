// The shard of an unkeyed semaphore: one state, no table.
#ifndef KEYSEM_DETAIL_UNKEYED_SHARD_HPP
#define KEYSEM_DETAIL_UNKEYED_SHARD_HPP

#include <keysem/detail/key_state.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/detail/spin_lock.hpp>
#include <keysem/semaphore_stats.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace keysem::detail {

// The key type of the one state of an unkeyed semaphore.
struct no_key {
  friend bool operator==(no_key, no_key) noexcept { return true; }
};

// The immediate outcomes of an unkeyed semaphore (granted, try_failed,
// queue_full, invalid), decided without a lock: one block of counters per
// thread that counts. A block has a single writer, its thread, so an
// increment is a plain load and store of a relaxed atomic instead of a locked
// read-modify-write on a line every thread shares; stats() sums the blocks.
// A thread finds its block through a small thread-local cache keyed by the
// counters' id, which is never reused; on a miss it looks its block up (or
// adds one) under the shard's lock. A block is found again by its thread's
// id, so a thread that alternates between semaphores never adds a second
// block, and a thread that reuses a dead thread's id takes over its block,
// still as its only writer: an id is reused only once its thread has ended,
// and the end of a thread synchronises with the start of the one that gets
// its id, so the new writer starts from the old one's last count.
class immediate_counts {
 public:
  enum index : std::size_t { granted, try_failed, queue_full, invalid, size };

  immediate_counts() noexcept : id_(next_id_.fetch_add(1, std::memory_order_relaxed)) {}
  immediate_counts(const immediate_counts&) = delete;
  immediate_counts& operator=(const immediate_counts&) = delete;
  ~immediate_counts() {
    while (block* b = blocks_) {
      blocks_ = b->next;
      delete b;
    }
  }

  // Any thread; `lock` (the shard's) is taken only on a cache miss.
  void add(index i, spin_lock& lock) noexcept {
    block* b = mine(lock);
    std::atomic<std::uint64_t>& value = b->values[i];
    if (b != &shared_) [[likely]] {
      value.store(value.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    } else {
      value.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // `lock` held.
  std::uint64_t sum_locked(index i) const noexcept {
    std::uint64_t total = shared_.values[i].load(std::memory_order_relaxed);
    for (const block* b = blocks_; b != nullptr; b = b->next) {
      total += b->values[i].load(std::memory_order_relaxed);
    }
    return total;
  }

 private:
  struct alignas(64) block {
    std::atomic<std::uint64_t> values[size]{};
    std::thread::id owner;
    block* next = nullptr;
  };
  struct cache_entry {
    std::uint64_t id;
    block* counts;
  };
  static constexpr std::size_t cache_size = 4;  // a power of two

  block* mine(spin_lock& lock) noexcept {
    cache_entry& entry = cache_[id_ & (cache_size - 1)];
    if (entry.id == id_) [[likely]] {
      return entry.counts;
    }
    block* found = find_or_add(lock);
    if (found != &shared_) {
      entry = {id_, found};
    }
    return found;
  }

  // Out of memory, the thread counts into the shared block with fetch_add.
  block* find_or_add(spin_lock& lock) noexcept {
    const std::thread::id self = std::this_thread::get_id();
    std::lock_guard guard(lock);
    for (block* b = blocks_; b != nullptr; b = b->next) {
      if (b->owner == self) {
        return b;
      }
    }
    block* fresh = new (std::nothrow) block;
    if (fresh == nullptr) {
      return &shared_;
    }
    fresh->owner = self;
    fresh->next = blocks_;
    blocks_ = fresh;
    return fresh;
  }

  static inline std::atomic<std::uint64_t> next_id_{1};  // 0 marks an empty cache entry
  constinit static inline thread_local cache_entry cache_[cache_size]{};

  const std::uint64_t id_;
  block* blocks_ = nullptr;  // guarded by the shard's lock
  block shared_;
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
      stats.granted_immediately += counts_.sum_locked(immediate_counts::granted);
      stats.try_failed += counts_.sum_locked(immediate_counts::try_failed);
      stats.rejected_queue_full += counts_.sum_locked(immediate_counts::queue_full);
      stats.invalid_argument += counts_.sum_locked(immediate_counts::invalid);
    }
    stats.keys = 0;
    const key_usage now = usage();
    stats.in_use += now.in_use;
    stats.waiting += now.waiting;
  }

 private:
  // The immediate outcomes: decided without a lock, so counted per thread.
  void count(key_word::verdict verdict, admission_policy::kind request) noexcept {
    switch (verdict) {
      case key_word::verdict::granted:
        return counts_.add(immediate_counts::granted, lock_);
      case key_word::verdict::busy:
        if (request == admission_policy::kind::try_acquire) {
          counts_.add(immediate_counts::try_failed, lock_);
        }
        return;
      case key_word::verdict::queue_full:
        return counts_.add(immediate_counts::queue_full, lock_);
      case key_word::verdict::invalid:
        return counts_.add(immediate_counts::invalid, lock_);
      case key_word::verdict::queued:
      case key_word::verdict::staged:
        return;  // counted when it completes
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
  immediate_counts counts_;
};

}  // namespace keysem::detail

#endif
