// keysem/redis/fleet_options.hpp — tuning of a fleet_semaphore.
#ifndef KEYSEM_REDIS_FLEET_OPTIONS_HPP
#define KEYSEM_REDIS_FLEET_OPTIONS_HPP

#include <chrono>
#include <string>

namespace keysem::redis {

struct fleet_options {
  /// Namespace of every Redis key and channel used. Clients sharing limits
  /// must use the same prefix and the same permits_per_key.
  std::string prefix = "keysem";
  /// T: a lease's length. A crashed or partitioned holder's permits come
  /// back within T of its last confirmed refresh. Refreshed every T/3.
  std::chrono::milliseconds lease = std::chrono::seconds(10);
  /// m: a permit is believed valid only until t_sent + T - m, where t_sent
  /// is when the last confirmed acquire/refresh was sent (steady clock).
  /// Zero or negative selects the default, T/10. Must be less than T.
  std::chrono::milliseconds safety_margin{0};
  /// How long a request may wait for Redis' reply before the connection is
  /// dropped and the request fails with error::timed_out. Zero or negative
  /// selects the default, min(T/3, 2 s).
  std::chrono::milliseconds request_timeout{0};
  /// Reconnection backoff: after a failed connection attempt, requests fail
  /// at once with error::connection_failed for this long, doubled after each
  /// further failure up to reconnect_max.
  std::chrono::milliseconds reconnect_min{50};
  std::chrono::milliseconds reconnect_max{2000};
  /// A waiting acquire retries at the latest after this long (jittered by
  /// up to +50%), even if no release message or expiry hint woke it.
  std::chrono::milliseconds fallback_poll = std::chrono::seconds(2);
  /// How long the default limit stored in Redis survives without acquires.
  std::chrono::milliseconds default_limit_ttl = std::chrono::hours(1);
  /// Replicas that must acknowledge a grant before it is reported. After
  /// the acquire script grants, the command connection sends
  /// `WAIT replicas replica_timeout`; with fewer acknowledgements the grant
  /// is given back and the acquire fails with error::not_replicated. 0 (the
  /// default) sends no WAIT. WAIT blocks the connection, so other requests
  /// of this semaphore queue behind it for up to replica_timeout. It narrows
  /// the window in which a failover loses a grant; it does not make Redis
  /// consistent (docs/fleet.md). Refreshes and releases do not wait.
  int replicas = 0;
  /// How long WAIT may block. Zero or negative selects request_timeout / 2;
  /// it must be less than request_timeout.
  std::chrono::milliseconds replica_timeout{0};
};

}  // namespace keysem::redis

#endif
