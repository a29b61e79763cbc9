// keysem/semaphore_options.hpp — construction options of async_keyed_semaphore.
#ifndef KEYSEM_SEMAPHORE_OPTIONS_HPP
#define KEYSEM_SEMAPHORE_OPTIONS_HPP

#include <cstddef>
#include <limits>

namespace keysem {

/// "No bound": the default of `semaphore_options::max_waiters_per_key`.
inline constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

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

  /// How many acquires may wait on one key at a time. An acquire that would
  /// have to wait while that many are already waiting on its key (queued,
  /// or cancelled and not yet taken out of the queue) completes with
  /// `keysem::error::queue_full` and changes nothing. The decision is the
  /// same atomic step that registers a waiter, so `waiting(key)` never
  /// exceeds the bound. 0: acquires never wait (granted at once, or
  /// queue_full). Whatever the bound, a key counts at most 2^29 - 1 waiters.
  std::size_t max_waiters_per_key = unbounded;

  /// At most this many permits held across all keys at any instant, on top
  /// of each key's own limit (`keysem::unbounded`: no total limit). 0, or a
  /// value above `max_permits_per_key` other than `unbounded`, makes the
  /// constructor throw std::invalid_argument. A request whose key admits it
  /// but whose permits the total cannot give yet waits for the total, in one
  /// FIFO across keys, holding its key's permits reserved meanwhile (so a
  /// key never has more than its own limit waiting there); it still counts
  /// in `waiting(key)` and against `max_waiters_per_key`, and not in
  /// `in_use(key)` until granted. See docs/design.md, "The total limit".
  std::size_t total_limit = unbounded;
};

}  // namespace keysem

#endif
