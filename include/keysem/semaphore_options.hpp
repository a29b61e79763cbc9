// keysem/semaphore_options.hpp — construction options of async_keyed_semaphore.
#ifndef KEYSEM_SEMAPHORE_OPTIONS_HPP
#define KEYSEM_SEMAPHORE_OPTIONS_HPP

#include <cstddef>

namespace keysem {

/// Options of `async_keyed_semaphore`. New options are only ever added after
/// the existing ones, so aggregate initialisation such as
/// `semaphore_options{8}` keeps its meaning.
struct semaphore_options {
  /// Number of shards: 0 picks the library default (a few per hardware
  /// thread); any other value is rounded up to a power of two. Each shard has
  /// its own strand and its own key table; keys never share a limit, whatever
  /// shard they land in.
  std::size_t shards = 0;
};

}  // namespace keysem

#endif
