// Prehashed lookups for boost::unordered_flat_map, shared by the baselines.
//
// A semaphore hashes a key once: to pick its shard, and again (for free) to
// probe the shard's map. These adaptors let the map take the hash computed
// for the shard instead of running the hasher a second time.
#ifndef KEYSEM_BENCHMARKS_BASELINES_PREHASHED_HPP
#define KEYSEM_BENCHMARKS_BASELINES_PREHASHED_HPP

#include <boost/unordered/hash_traits.hpp>

#include <cstddef>

namespace baselines::detail {

template <class K>
struct prehashed {
  const K& key;
  std::size_t hash;
};

template <class T>
const T& unwrap(const T& value) noexcept {
  return value;
}
template <class K>
const K& unwrap(const prehashed<K>& value) noexcept {
  return value.key;
}

// Hashes stored keys with Hash (on insert and rehash) and takes the hash of a
// prehashed lookup as given. Avalanching exactly when Hash is, so that the
// flat map skips its own mixing step for keysem::hash (XXH3).
template <class Hash, bool = boost::unordered::hash_is_avalanching<Hash>::value>
struct prehashed_hash {
  using is_transparent = void;
  template <class K>
  std::size_t operator()(const K& key) const noexcept(noexcept(Hash()(key))) {
    return hash(key);
  }
  template <class K>
  std::size_t operator()(const prehashed<K>& lookup) const noexcept {
    return lookup.hash;
  }
  [[no_unique_address]] Hash hash;
};

template <class Hash>
struct prehashed_hash<Hash, true> : prehashed_hash<Hash, false> {
  using is_avalanching = void;
};

template <class KeyEqual>
struct prehashed_equal {
  using is_transparent = void;
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    return equal(unwrap(a), unwrap(b));
  }
  [[no_unique_address]] KeyEqual equal;
};

}  // namespace baselines::detail

#endif
