// The typed half of a shard: the table from keys to their states.
#ifndef KEYSEM_DETAIL_KEYED_SHARD_HPP
#define KEYSEM_DETAIL_KEYED_SHARD_HPP

#include <keysem/detail/key_state.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/semaphore_stats.hpp>

#include <boost/unordered/unordered_flat_map.hpp>
#include <boost/unordered/unordered_flat_set.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace keysem::detail {

// A key to look up together with its hash, computed before the lock is taken.
template <class K>
struct prehashed_key {
  const K& key;
  std::size_t hash;
};

// The state type a shard stores: it keeps its key's hash when the hasher may
// throw, so that reclaiming a key never hashes it.
template <class Key, class Hash>
using stored_state_t =
    std::conditional_t<std::is_nothrow_invocable_v<const Hash&, const Key&>, key_state<Key>,
                       hashed_key_state<Key>>;

// Hashes a stored state by its key (only when the table grows or erases) and
// a lookup by the hash computed outside the lock; avalanching exactly when
// the user's hasher is.
template <class Key, class Hash, bool = boost::unordered::hash_is_avalanching<Hash>::value>
struct state_hash {
  using is_transparent = void;
  using state = stored_state_t<Key, Hash>;
  std::size_t operator()(const state* s) const noexcept(noexcept(hash(s->key()))) {
    if constexpr (std::is_same_v<state, key_state<Key>>) {
      return hash(s->key());
    } else {
      return s->hash();
    }
  }
  template <class K>
  std::size_t operator()(const prehashed_key<K>& lookup) const noexcept {
    return lookup.hash;
  }

  [[no_unique_address]] Hash hash;
};

template <class Key, class Hash>
struct state_hash<Key, Hash, true> : state_hash<Key, Hash, false> {
  using is_avalanching = void;
};

// Compares a looked-up key with a stored state's key using the user's KeyEqual.
template <class Key, class KeyEqual, class State>
struct state_equal {
  using is_transparent = void;
  using state = State;

  bool operator()(const state* a, const state* b) const noexcept { return a == b; }
  template <class K>
  bool operator()(const prehashed_key<K>& lookup, const state* s) const {
    return equal(lookup.key, s->key());
  }
  template <class K>
  bool operator()(const state* s, const prehashed_key<K>& lookup) const {
    return equal(lookup.key, s->key());
  }

  [[no_unique_address]] KeyEqual equal;
};

template <class Key, class Hash, class KeyEqual>
class keyed_shard final : public shard_base {
 public:
  using state_type = stored_state_t<Key, Hash>;

  keyed_shard(core_base& core, boost::asio::any_io_executor strand, const Hash& hash,
              const KeyEqual& equal)
      : shard_base(core, std::move(strand)),
        table_(0, table_hash{hash}, table_equal{equal}),
        overrides_(0, override_hash{hash}, override_equal{equal}) {}

  ~keyed_shard() {
    // Only reached once every state has been reclaimed; kept as a backstop.
    for (state_type* state : table_) {
      destroy_state(state);
    }
    if (void* spare = spare_.exchange(nullptr, std::memory_order_acquire)) {
      ::operator delete(spare, state_alignment);
    }
  }

  struct admission {
    key_state<Key>* state;  // null unless granted or queued
    key_word::verdict verdict;
  };

  // An acquire (may_wait) or a try_acquire of n permits on key: the key's
  // word decides (key_word::admit / try_admit). A key that is not live is
  // created only when the request is granted: a new key has nobody waiting.
  template <class K>
  admission admit(K&& key, std::size_t hash, std::uint32_t n, const admission_policy& policy) {
    std::lock_guard guard(lock_);
    const prehashed_key<std::remove_cvref_t<K>> lookup{key, hash};
    admission result{nullptr, key_word::verdict::invalid};
    if (const auto found = table_.find(lookup); found != table_.end()) {
      result.state = *found;
      result.verdict = policy.may_wait() ? (*found)->take_or_register_waiter(n, policy.max_waiting)
                                       : (*found)->try_take(n);
    } else {
      const std::uint32_t limit = limit_locked(lookup, policy.default_limit);
      const key_word::policy key_policy{limit, policy.max_waiting};
      result.verdict = policy.may_wait() ? key_word::admit(0, n, key_policy)
                                       : key_word::try_admit(0, n, key_policy);
      if (result.verdict == key_word::verdict::granted) {
        result.verdict = create_granted_locked(std::forward<K>(key), hash, n, limit, policy,
                                               result.state);
      }
    }
    count_admission_locked(result.verdict, policy.request);
    return result;
  }

  // What key uses and the limit in force for it (its live state's, its
  // override, or the default), read in one step under the lock.
  template <class K>
  key_usage usage(const K& key, std::size_t hash, std::uint32_t default_limit) const {
    std::lock_guard guard(lock_);
    const prehashed_key<K> lookup{key, hash};
    if (const auto found = table_.find(lookup); found != table_.end()) {
      return usage_of(**found);
    }
    return {0, 0, limit_locked(lookup, default_limit)};
  }

  // Overrides key's limit (limit != 0) or removes its override (limit == 0,
  // back to default_limit); a live key takes the new limit at once.
  void set_limit(const Key& key, std::size_t hash, std::uint32_t limit,
                 std::uint32_t default_limit) {
    key_state_base* to_drain = nullptr;
    {
      std::lock_guard guard(lock_);
      const prehashed_key<Key> lookup{key, hash};
      if (limit != 0) {
        overrides_.insert_or_assign(key, limit);
      } else if (const auto found = overrides_.find(lookup); found != overrides_.end()) {
        overrides_.erase(found);
      }
      if (const auto found = table_.find(lookup); found != table_.end()) {
        if ((*found)->set_limit(limit != 0 ? limit : default_limit)) {
          to_drain = *found;
        }
      }
    }
    // Outside the lock: the drain may run right here (dispatch) and take it.
    if (to_drain != nullptr) {
      to_drain->schedule_drain();
    }
  }

  // Calls f(key, usage) for every live key of the shard, after the lock is
  // released (f may call back into the semaphore).
  template <class F>
  void for_each_key(F& f) const {
    std::vector<std::pair<Key, key_usage>> live;
    {
      std::lock_guard guard(lock_);
      live.reserve(table_.size());
      for (const state_type* state : table_) {
        live.emplace_back(state->key(), usage_of(*state));
      }
    }
    for (const auto& [key, usage] : live) {
      f(static_cast<const Key&>(key), usage);
    }
  }

  // Adds this shard's counters and live-key sums to stats.
  void add_to(semaphore_stats& stats) const {
    std::lock_guard guard(lock_);
    add_counters_locked(stats);
    for (const state_type* state : table_) {
      const key_usage usage = usage_of(*state);
      stats.in_use += usage.in_use;
      stats.waiting += usage.waiting;
    }
  }

 private:
  using table_hash = state_hash<Key, Hash>;
  using table_equal = state_equal<Key, KeyEqual, state_type>;

  // Lock held. A key's first request, which its (empty) word grants: with a
  // total limit, the total decides too (granted, staged, busy, queue_full);
  // the state is created when the request takes or reserves permits.
  template <class K>
  key_word::verdict create_granted_locked(K&& key, std::size_t hash, std::uint32_t n,
                                          std::uint32_t limit, const admission_policy& policy,
                                          key_state<Key>*& created) {
    key_state_base* const gate = core().total_state();
    const key_word::verdict at_total =
        gate != nullptr ? gate->take_total(n, policy.max_waiting, policy.may_wait())
                        : key_word::verdict::granted;
    if (at_total != key_word::verdict::granted && at_total != key_word::verdict::staged) {
      return at_total;
    }
    const std::uint64_t word =
        at_total == key_word::verdict::staged ? key_word::staged(0, n) : key_word::apply(0, n, at_total);
    try {
      created = create_locked(std::forward<K>(key), hash, word, limit, gate != nullptr);
    } catch (...) {
      if (gate != nullptr) {
        gate->give_back_total(at_total, n);
      }
      throw;
    }
    if (at_total == key_word::verdict::staged) {
      created->reserve_staged(n);
    }
    return at_total;
  }

  // Lock held. Creates the state of a key with its first word.
  template <class K>
  state_type* create_locked(K&& key, std::size_t hash, std::uint64_t word, std::uint32_t limit,
                            bool capped) {
    void* memory = allocate_state();
    state_type* state = nullptr;
    try {
      state = new (memory) state_type(*this, word, limit, std::forward<K>(key), hash, capped);
      table_.insert(state);
    } catch (...) {
      if (state != nullptr) {
        state->~state_type();
      }
      free_state(memory);
      throw;
    }
    count_new_key_locked();
    return state;
  }

  template <class K>
  std::uint32_t limit_locked(const prehashed_key<K>& lookup, std::uint32_t default_limit) const {
    if (overrides_.empty()) {
      return default_limit;  // keys without overrides cost no lookup
    }
    const auto found = overrides_.find(lookup);
    return found == overrides_.end() ? default_limit : found->second;
  }

  static key_usage usage_of(const key_state_base& state) noexcept {
    const std::uint64_t word = state.word();
    const std::uint64_t held = key_word::held(word);
    const std::uint64_t staged = state.staged();  // reserved, not yet granted to a caller
    return {held > staged ? held - staged : 0, key_word::waiters(word), state.limit()};
  }

  // The user's overrides of permits_per_key(), looked up by precomputed hash.
  struct override_hash {
    using is_transparent = void;
    std::size_t operator()(const Key& key) const { return hash(key); }
    template <class K>
    std::size_t operator()(const prehashed_key<K>& lookup) const noexcept {
      return lookup.hash;
    }
    [[no_unique_address]] Hash hash;
  };
  struct override_equal {
    using is_transparent = void;
    bool operator()(const Key& a, const Key& b) const { return equal(a, b); }
    template <class K>
    bool operator()(const prehashed_key<K>& lookup, const Key& key) const {
      return equal(lookup.key, key);
    }
    template <class K>
    bool operator()(const Key& key, const prehashed_key<K>& lookup) const {
      return equal(lookup.key, key);
    }
    [[no_unique_address]] KeyEqual equal;
  };

  void collect_waiting_locked(std::vector<key_state_base*>& out) const override {
    for (state_type* state : table_) {
      if (state->has_queued_ops()) {
        out.push_back(state);
      }
    }
  }

  void erase_locked(key_state_base& state) noexcept override {
    table_.erase(static_cast<state_type*>(&state));
    shrink_if_sparse();
  }

  // Memory follows live keys: a table grown by a burst of keys gives its
  // slots back once it is mostly empty. Shrinking only at 1/16 occupancy (and
  // growing at 7/8) keeps the rehash cost amortised O(1) per key.
  void shrink_if_sparse() noexcept {
    const std::size_t capacity = table_.bucket_count();
    if (capacity > min_shrink_capacity && table_.size() * 16 < capacity) {
      try {
        table_.rehash(0);
      } catch (...) {
        // Out of memory while shrinking: keeping the larger table is fine.
      }
    }
  }

  static constexpr std::size_t min_shrink_capacity = 64;

  void destroy_state(key_state_base* state) noexcept override {
    auto* typed = static_cast<state_type*>(state);
    typed->~state_type();
    free_state(typed);
  }

  // A key used in bursts is created and reclaimed over and over; keeping the
  // memory of one reclaimed state per shard spares the (slow, cache-line
  // aligned) allocator on that path while retaining at most one line per shard.
  void* allocate_state() {
    if (void* spare = spare_.exchange(nullptr, std::memory_order_acquire)) {
      return spare;
    }
    return ::operator new(sizeof(state_type), state_alignment);
  }

  void free_state(void* memory) noexcept {
    void* expected = nullptr;
    if (!spare_.compare_exchange_strong(expected, memory, std::memory_order_release,
                                        std::memory_order_relaxed)) {
      ::operator delete(memory, state_alignment);
    }
  }

  static constexpr std::align_val_t state_alignment{alignof(state_type)};

  boost::unordered_flat_set<state_type*, table_hash, table_equal> table_;
  boost::unordered_flat_map<Key, std::uint32_t, override_hash, override_equal> overrides_;
  std::atomic<void*> spare_{nullptr};
};

}  // namespace keysem::detail

#endif
