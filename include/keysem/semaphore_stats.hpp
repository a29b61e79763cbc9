// keysem/semaphore_stats.hpp — usage counters of a keyed semaphore.
#ifndef KEYSEM_SEMAPHORE_STATS_HPP
#define KEYSEM_SEMAPHORE_STATS_HPP

#include <cstddef>
#include <cstdint>

namespace keysem {

/// What `async_keyed_semaphore::stats()` reports. The counters are
/// monotonic, and every operation lands in exactly one of them when its
/// outcome is decided: an acquire when it is granted, refused or completed
/// with an error (its handler then runs through its executor; a handler
/// destroyed unrun because its context died stays counted, and an acquire
/// destroyed while still waiting at context shutdown is not counted), the
/// token-less awaitable form when it returns or throws, a try_acquire when it
/// returns or throws. `keys`, `waiting` and `in_use` are the state at the
/// moment each shard was read.
struct semaphore_stats {
  /// try_acquire successes, and acquires granted without waiting.
  std::uint64_t granted_immediately = 0;
  /// Acquires granted after waiting in their key's queue.
  std::uint64_t granted_after_wait = 0;
  /// try_acquire calls that found the permits busy (or someone waiting).
  std::uint64_t try_failed = 0;
  /// Acquires that completed with operation_aborted: cancelled, or aborted
  /// by the semaphore's destruction or its context's end.
  std::uint64_t cancelled = 0;
  /// Timed acquires whose deadline passed before they were granted.
  std::uint64_t timed_out = 0;
  /// Acquires refused with keysem::error::queue_full.
  std::uint64_t rejected_queue_full = 0;
  /// Acquires that completed with keysem::error::closed, and try_acquire
  /// calls after close().
  std::uint64_t rejected_closed = 0;
  /// Acquires that completed with invalid_argument (n of 0 or above the
  /// key's limit, also a limit lowered below a waiting request), and
  /// try_acquire calls that threw std::invalid_argument.
  std::uint64_t invalid_argument = 0;
  /// Live keys: key_count().
  std::size_t keys = 0;
  /// Acquires waiting, summed over keys.
  std::size_t waiting = 0;
  /// Permits held, summed over keys.
  std::size_t in_use = 0;
};

/// What `async_keyed_semaphore::for_each_key()` reports for one live key.
struct key_usage {
  std::size_t in_use = 0;   ///< permits held
  std::size_t waiting = 0;  ///< acquires not yet granted (see waiting())
  std::size_t limit = 0;    ///< the limit in force: permits_per_key() or its override
};

}  // namespace keysem

#endif
