// keysem/redis/detail/scripts.hpp — the Lua scripts that keep a key's leases
// in Redis, the key names they use, and the decoding of their replies.
//
// Per user key K and prefix P:
//   P:{K}:h   ZSET of lease members "<id>#<i>" (i = 1..n) scored by expiry in
//             ms of Redis' own TIME; ZCARD is the number of permits held
//   P:{K}:f   HASH id -> fencing token of the lease
//   P:{K}:c   INCR counter the fencing tokens come from (never expires)
//   P:{K}:l   the key's limit set with set_limit (absent: the default)
//   P:default the default limit (permits_per_key) of the clients using P
//   P:{K}:rel the channel a release (or a raised limit) is published on
#ifndef KEYSEM_REDIS_DETAIL_SCRIPTS_HPP
#define KEYSEM_REDIS_DETAIL_SCRIPTS_HPP

#include <keysem/redis/detail/resp.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace keysem::redis::detail {

struct key_names {
  std::string holders, fences, counter, limit, default_limit, channel;
  std::string withdrawn;  // ids released before their acquire ran, until they expire
};
key_names names_for(const std::string& prefix, const std::string& key);

/// The key a release channel name belongs to, or empty if it is not one of
/// prefix's channels.
std::string key_of_channel(const std::string& prefix, const std::string& channel);

/// The scripts, in the order the connection loads them.
enum class script { acquire = 0, refresh = 1, release = 2, set_limit = 3 };
inline constexpr int script_count = 4;
const std::string& script_source(script s);

// --- arguments (KEYS then ARGV, as EVALSHA wants them after numkeys) ---
std::vector<std::string> acquire_args(const key_names& k, const std::string& id, std::uint32_t n,
                                      std::int64_t lease_ms, std::uint32_t default_limit,
                                      std::int64_t default_ttl_ms);
std::vector<std::string> refresh_args(const key_names& k, const std::string& id, std::uint32_t n,
                                      std::int64_t lease_ms);
/// withdraw_ms > 0: the id's acquire has an unknown outcome and may still
/// run after this release (a NOSCRIPT resend goes to the back of the
/// pipeline); it is refused if it comes within withdraw_ms.
std::vector<std::string> release_args(const key_names& k, const std::string& id, std::uint32_t n,
                                      std::int64_t withdraw_ms = 0);
/// limit 0 removes the key's own limit (back to the default).
std::vector<std::string> set_limit_args(const key_names& k, std::uint32_t limit);
int key_count(script s);

// --- replies ---
struct acquire_result {
  enum class kind { granted, busy, limit_mismatch, too_many, withdrawn, malformed };
  kind outcome = kind::malformed;
  std::uint64_t fence = 0;     // granted
  std::int64_t wait_ms = 0;    // busy: ms until the earliest lease expires
  std::int64_t limit = 0;      // granted, busy, too_many: the key's limit; mismatch: stored default
};
acquire_result parse_acquire(const reply& r);

enum class refresh_result { extended, lost, malformed };
refresh_result parse_refresh(const reply& r);

}  // namespace keysem::redis::detail

#endif
