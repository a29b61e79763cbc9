// keysem/semaphore_options.hpp — construction options of async_keyed_semaphore.
#ifndef KEYSEM_SEMAPHORE_OPTIONS_HPP
#define KEYSEM_SEMAPHORE_OPTIONS_HPP

#include <cstddef>

namespace keysem {

/// The largest `semaphore_options::shards` a semaphore accepts.
inline constexpr std::size_t max_shards = std::size_t{1} << 16;

/// Options of `async_keyed_semaphore`. New options are only ever added after
/// the existing ones, so aggregate initialisation such as
/// `semaphore_options{8}` keeps its meaning.
struct semaphore_options {
  /// Number of shards: 0 picks the library default (a few per hardware
  /// thread); any other value up to `max_shards` is rounded up to a power of
  /// two, and a larger one makes the constructor throw std::invalid_argument.
  /// Each shard has its own strand and its own key table; keys never share a
  /// limit, whatever shard they land in.
  std::size_t shards = 0;
};

}  // namespace keysem

#endif
