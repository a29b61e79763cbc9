// Where single_flight keeps its flights: per shard, a table of the flights
// later callers may join, the list of every running flight, the counters,
// and the lock that guards them.
#ifndef KEYSEM_DETAIL_FLIGHT_TABLE_HPP
#define KEYSEM_DETAIL_FLIGHT_TABLE_HPP

#include <keysem/detail/sharding.hpp>
#include <keysem/detail/spin_lock.hpp>
#include <keysem/single_flight_options.hpp>

#include <boost/unordered/hash_traits.hpp>
#include <boost/unordered/unordered_flat_set.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

namespace keysem::detail {

// A counted reference to a flight (Flight::add_ref / release).
template <class Flight>
class intrusive_flight_ref {
 public:
  intrusive_flight_ref() noexcept = default;
  explicit intrusive_flight_ref(Flight* f) noexcept : flight_(f) {
    if (flight_ != nullptr) {
      flight_->add_ref();
    }
  }
  intrusive_flight_ref(const intrusive_flight_ref& other) noexcept
      : intrusive_flight_ref(other.flight_) {}
  intrusive_flight_ref(intrusive_flight_ref&& other) noexcept
      : flight_(std::exchange(other.flight_, nullptr)) {}
  intrusive_flight_ref& operator=(intrusive_flight_ref other) noexcept {
    std::swap(flight_, other.flight_);
    return *this;
  }
  ~intrusive_flight_ref() {
    if (flight_ != nullptr) {
      flight_->release();
    }
  }

  Flight* operator->() const noexcept { return flight_; }
  Flight& operator*() const noexcept { return *flight_; }
  explicit operator bool() const noexcept { return flight_ != nullptr; }

 private:
  Flight* flight_ = nullptr;
};

// A flight's place in its shard's list of running flights (shard lock held).
template <class Flight>
class flight_links {
 private:
  template <class, class, class>
  friend class flight_shard;
  Flight* running_prev_ = nullptr;
  Flight* running_next_ = nullptr;
  bool running_linked_ = false;
};

// Counted under the shard's lock, summed by stats().
struct flight_counters {
  std::uint64_t started = 0;
  std::uint64_t joined = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t abandoned = 0;
  std::uint64_t exceptions = 0;

  void add_to(single_flight_stats& stats) const noexcept {
    stats.started += started;
    stats.joined += joined;
    stats.cancelled += cancelled;
    stats.abandoned += abandoned;
    stats.exceptions += exceptions;
  }
};

// A key to look up together with its hash, computed before the lock is taken.
template <class K>
struct flight_lookup {
  const K& key;
  std::size_t hash;
};

template <class Flight, class KeyEqual, class Hash>
class flight_shard {
 public:
  explicit flight_shard(const KeyEqual& equal) : table_(0, table_hash{}, table_equal{equal}) {}
  flight_shard(const flight_shard&) = delete;
  flight_shard& operator=(const flight_shard&) = delete;

  // Guards everything here and the state and callers of the shard's
  // flights: a lookup, a few pointer moves, never a handler or a post.
  mutable spin_lock lock;
  flight_counters counters;

  template <class K>
  Flight* find(const K& key, std::size_t hash) const {
    const auto found = table_.find(flight_lookup<K>{key, hash});
    return found == table_.end() ? nullptr : *found;
  }

  // A new flight: joinable by key, and running.
  void list(Flight& f) {
    table_.insert(&f);
    f.running_next_ = running_;
    if (running_ != nullptr) {
      running_->running_prev_ = &f;
    }
    running_ = &f;
    f.running_linked_ = true;
  }

  void unlist(Flight& f) noexcept {
    table_.erase(&f);
    shrink_if_sparse();
  }

  std::size_t listed() const noexcept { return table_.size(); }

  // The flight's coroutine finished (or was destroyed).
  void unlink_running(Flight& f) noexcept {
    if (!f.running_linked_) {
      return;
    }
    (f.running_prev_ != nullptr ? f.running_prev_->running_next_ : running_) = f.running_next_;
    if (f.running_next_ != nullptr) {
      f.running_next_->running_prev_ = f.running_prev_;
    }
    f.running_prev_ = f.running_next_ = nullptr;
    f.running_linked_ = false;
  }

  template <class F>
  void for_each_running(F&& visit) {
    for (Flight* f = running_; f != nullptr; f = f->running_next_) {
      visit(*f);
    }
  }

 private:
  // The table holds the hash each flight computed before the lock: the
  // user's hasher never runs under the lock. Avalanching exactly when it is.
  struct plain_hash {
    using is_transparent = void;
    std::size_t operator()(const Flight* f) const noexcept { return f->hash(); }
    template <class K>
    std::size_t operator()(const flight_lookup<K>& lookup) const noexcept {
      return lookup.hash;
    }
  };
  struct avalanching_hash : plain_hash {
    using is_avalanching = void;
  };
  using table_hash = std::conditional_t<boost::unordered::hash_is_avalanching<Hash>::value,
                                        avalanching_hash, plain_hash>;

  struct table_equal {
    using is_transparent = void;
    bool operator()(const Flight* a, const Flight* b) const noexcept { return a == b; }
    template <class K>
    bool operator()(const flight_lookup<K>& lookup, const Flight* f) const {
      return equal(lookup.key, f->key());
    }
    template <class K>
    bool operator()(const Flight* f, const flight_lookup<K>& lookup) const {
      return equal(lookup.key, f->key());
    }
    [[no_unique_address]] KeyEqual equal;
  };

  // Memory follows in-flight keys: a table grown by a burst gives its slots
  // back once mostly empty (as the semaphore's key tables do).
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

  boost::unordered_flat_set<Flight*, table_hash, table_equal> table_;
  Flight* running_ = nullptr;
};

// A fixed array of shards, picked by hash.
template <class Shard, class Hash>
class shard_array {
 public:
  template <class KeyEqual>
  shard_array(std::size_t count, const KeyEqual& equal)
      : count_(count), shards_(std::allocator<Shard>().allocate(count)) {
    std::size_t built = 0;
    try {
      for (; built < count_; ++built) {
        new (&shards_[built]) Shard(equal);
      }
    } catch (...) {
      destroy(built);
      throw;
    }
  }
  shard_array(const shard_array&) = delete;
  shard_array& operator=(const shard_array&) = delete;
  ~shard_array() { destroy(count_); }

  Shard& for_hash(std::size_t hash) noexcept { return shards_[shard_index_of<Hash>(hash, count_)]; }
  const Shard& for_hash(std::size_t hash) const noexcept {
    return shards_[shard_index_of<Hash>(hash, count_)];
  }

  template <class F>
  void for_each(F&& visit) {
    for (std::size_t i = 0; i < count_; ++i) {
      visit(shards_[i]);
    }
  }
  template <class F>
  void for_each(F&& visit) const {
    for (std::size_t i = 0; i < count_; ++i) {
      visit(static_cast<const Shard&>(shards_[i]));
    }
  }

 private:
  void destroy(std::size_t built) noexcept {
    for (std::size_t i = built; i > 0; --i) {
      shards_[i - 1].~Shard();
    }
    std::allocator<Shard>().deallocate(shards_, count_);
  }

  std::size_t count_;
  Shard* shards_;
};

}  // namespace keysem::detail

#endif
