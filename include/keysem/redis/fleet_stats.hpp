// keysem/redis/fleet_stats.hpp — counters of one fleet_semaphore.
#ifndef KEYSEM_REDIS_FLEET_STATS_HPP
#define KEYSEM_REDIS_FLEET_STATS_HPP

#include <cstdint>

namespace keysem::redis {

/// Local counters since construction (this process, this semaphore only).
struct fleet_stats {
  std::uint64_t granted = 0;       ///< acquires and try_acquires that got permits
  std::uint64_t waited = 0;        ///< grants that had to wait for Redis at least once
  std::uint64_t busy = 0;          ///< try_acquires answered "busy"
  std::uint64_t failed = 0;        ///< acquires completed with an error (any, incl. cancelled)
  std::uint64_t lost = 0;          ///< permits whose lease became lost
  std::uint64_t redis_errors = 0;  ///< requests failed by the transport or the server
  std::uint64_t round_trips = 0;   ///< requests answered by Redis (scripts, refreshes, releases)
  std::uint64_t reconnects = 0;    ///< successful (re)connections of the command connection
  std::uint64_t wakeups = 0;       ///< release messages received by the subscriber
  std::uint64_t held = 0;          ///< permits (leases) currently held
  std::uint64_t not_replicated = 0;  ///< grants given back: too few replicas acknowledged them
};

}  // namespace keysem::redis

#endif
