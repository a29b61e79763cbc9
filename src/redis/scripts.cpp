// The lease scripts. Every time comes from Redis' TIME inside the script,
// never from a client clock; an expired lease is purged before anything
// else, so it is never counted, extended or revived.
#include <keysem/redis/detail/scripts.hpp>

#include <array>

namespace keysem::redis::detail {
namespace {

// Shared prologue: now (ms, server clock) and the purge of expired leases
// together with their fencing-token entries.
constexpr const char* prologue = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function purge(h, f)
  local old = redis.call('ZRANGEBYSCORE', h, '-inf', now)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', h, '-inf', now)
    for _, m in ipairs(old) do
      redis.call('HDEL', f, string.match(m, '^(.*)#%d+$'))
    end
  end
end
)lua";

// KEYS: holders fences counter limit default withdrawn; ARGV: id n lease default_limit default_ttl
// -> {1, fence, limit} | {0, ms_to_earliest_expiry, limit} | {-1, stored_default} | {-2, limit}
//    | {-3, 0} (the id was withdrawn by a release that overtook it)
constexpr const char* acquire_body = R"lua(
local id, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
if redis.call('ZSCORE', KEYS[6], id) then
  return {-3, 0}
end
local mine = tonumber(ARGV[4])
local stored = redis.call('GET', KEYS[5])
if stored and tonumber(stored) ~= mine then
  return {-1, tonumber(stored)}
end
redis.call('SET', KEYS[5], mine, 'PX', ARGV[5])
local limit = tonumber(redis.call('GET', KEYS[4]) or mine)
purge(KEYS[1], KEYS[2])
local fence = redis.call('HGET', KEYS[2], id)
if fence and redis.call('ZSCORE', KEYS[1], id .. '#1') then
  return {1, tonumber(fence), limit}
end
if n > limit then
  return {-2, limit}
end
if redis.call('ZCARD', KEYS[1]) + n > limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = lease
  if #first == 2 then wait = tonumber(first[2]) - now end
  return {0, wait, limit}
end
for i = 1, n do
  redis.call('ZADD', KEYS[1], now + lease, id .. '#' .. i)
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  fence = redis.call('INCR', KEYS[3])
else
  -- An idle key's counter has expired: restart it at the server time in
  -- microseconds, above every token it gave (see docs/fleet.md).
  local start = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[3], start)
  fence = tonumber(start)
end
redis.call('HSET', KEYS[2], id, fence)
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
redis.call('PEXPIRE', KEYS[3], lease)
return {1, fence, limit}
)lua";

// KEYS: holders fences; ARGV: id n lease -> 1 extended | 0 lost
constexpr const char* refresh_body = R"lua(
local id, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
purge(KEYS[1], KEYS[2])
if not redis.call('ZSCORE', KEYS[1], id .. '#1') then
  return 0
end
for i = 1, n do
  redis.call('ZADD', KEYS[1], 'XX', now + lease, id .. '#' .. i)
end
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
return 1
)lua";

// KEYS: holders fences withdrawn; ARGV: id n channel withdraw_ms -> permits removed
constexpr const char* release_body = R"lua(
local id, n, withdraw = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
if withdraw > 0 then
  -- The id's acquire may still be on its way (resent after NOSCRIPT):
  -- refuse it if it comes later.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[3], now + withdraw, id)
  redis.call('PEXPIRE', KEYS[3], withdraw)
end
local removed = 0
for i = 1, n do
  removed = removed + redis.call('ZREM', KEYS[1], id .. '#' .. i)
end
redis.call('HDEL', KEYS[2], id)
redis.call('PUBLISH', ARGV[3], 'r')
return removed
)lua";

// KEYS: limit; ARGV: limit (0 = reset) channel -> 1
constexpr const char* set_limit_body = R"lua(
if tonumber(ARGV[1]) == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', ARGV[2], 'l')
return 1
)lua";

const std::array<std::string, script_count>& sources() {
  static const std::array<std::string, script_count> all = {
      std::string(prologue) + acquire_body, std::string(prologue) + refresh_body,
      std::string(release_body), std::string(set_limit_body)};
  return all;
}

bool is_int(const reply& r) { return r.type == reply::kind::integer; }

}  // namespace

key_names names_for(const std::string& prefix, const std::string& key) {
  const std::string base = prefix + ":{" + key + "}:";
  return {base + "h", base + "f", base + "c", base + "l", prefix + ":default", base + "rel", base + "w"};
}

std::string key_of_channel(const std::string& prefix, const std::string& channel) {
  const std::string head = prefix + ":{";
  const std::string tail = "}:rel";
  if (channel.size() < head.size() + tail.size() || channel.compare(0, head.size(), head) != 0 ||
      channel.compare(channel.size() - tail.size(), tail.size(), tail) != 0) {
    return {};
  }
  return channel.substr(head.size(), channel.size() - head.size() - tail.size());
}

const std::string& script_source(script s) { return sources()[static_cast<int>(s)]; }

int key_count(script s) {
  switch (s) {
    case script::acquire: return 6;
    case script::refresh: return 2;
    case script::release: return 3;
    case script::set_limit: return 1;
  }
  return 0;
}

std::vector<std::string> acquire_args(const key_names& k, const std::string& id, std::uint32_t n,
                                      std::int64_t lease_ms, std::uint32_t default_limit,
                                      std::int64_t default_ttl_ms) {
  return {k.holders, k.fences,        k.counter, k.limit, k.default_limit, k.withdrawn, id,
          std::to_string(n), std::to_string(lease_ms), std::to_string(default_limit),
          std::to_string(default_ttl_ms)};
}

std::vector<std::string> refresh_args(const key_names& k, const std::string& id, std::uint32_t n,
                                      std::int64_t lease_ms) {
  return {k.holders, k.fences, id, std::to_string(n), std::to_string(lease_ms)};
}

std::vector<std::string> release_args(const key_names& k, const std::string& id, std::uint32_t n,
                                      std::int64_t withdraw_ms) {
  return {k.holders, k.fences, k.withdrawn, id, std::to_string(n), k.channel,
          std::to_string(withdraw_ms)};
}

std::vector<std::string> set_limit_args(const key_names& k, std::uint32_t limit) {
  return {k.limit, std::to_string(limit), k.channel};
}

acquire_result parse_acquire(const reply& r) {
  acquire_result out;
  if (r.type != reply::kind::array || r.elements.size() < 2 || !is_int(r.elements[0]) ||
      !is_int(r.elements[1])) {
    return out;
  }
  const auto code = r.elements[0].integer;
  const auto value = r.elements[1].integer;
  const bool has_limit = r.elements.size() >= 3 && is_int(r.elements[2]);
  if (code == -1) {
    out.outcome = acquire_result::kind::limit_mismatch;
    out.limit = value;
  } else if (code == -3) {
    out.outcome = acquire_result::kind::withdrawn;
  } else if (code == -2) {
    out.outcome = acquire_result::kind::too_many;
    out.limit = value;
  } else if (code == 1 && has_limit && value > 0) {
    out.outcome = acquire_result::kind::granted;
    out.fence = static_cast<std::uint64_t>(value);
    out.limit = r.elements[2].integer;
  } else if (code == 0 && has_limit) {
    out.outcome = acquire_result::kind::busy;
    out.wait_ms = value < 0 ? 0 : value;
    out.limit = r.elements[2].integer;
  }
  return out;
}

refresh_result parse_refresh(const reply& r) {
  if (!is_int(r)) {
    return refresh_result::malformed;
  }
  return r.integer == 1 ? refresh_result::extended : refresh_result::lost;
}

}  // namespace keysem::redis::detail
