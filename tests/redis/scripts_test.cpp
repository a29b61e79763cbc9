// The Lua scripts against a real redis-server: server time, purge before
// everything, idempotent ids, fencing tokens, limits stored in Redis.
#include "redis_server.hpp"

#include <keysem/redis/detail/scripts.hpp>

#include <doctest/doctest.h>

using namespace keysem::redis;
using namespace keysem::redis::detail;
using keysem::redis::test::command;
using keysem::redis::test::redis_server;

namespace {

reply run(const redis_server& server, script s, const std::vector<std::string>& args) {
  std::vector<std::string> cmd{"EVAL", script_source(s), std::to_string(key_count(s))};
  cmd.insert(cmd.end(), args.begin(), args.end());
  auto [ec, r] = command(server.where(), cmd);
  REQUIRE_MESSAGE(!ec, r.str);
  return r;
}

acquire_result acquire(const redis_server& server, const key_names& k, const std::string& id,
                       std::uint32_t n, std::uint32_t limit = 2) {
  return parse_acquire(run(server, script::acquire, acquire_args(k, id, n, 60000, limit, 3600000)));
}

std::int64_t integer(const redis_server& server, std::vector<std::string> args) {
  auto [ec, r] = command(server.where(), args);
  REQUIRE(!ec);
  REQUIRE(r.type == reply::kind::integer);
  return r.integer;
}

}  // namespace

TEST_CASE("scripts: the locally computed SHA1 is the one SCRIPT LOAD returns") {
  redis_server server;
  for (int i = 0; i < script_count; ++i) {
    auto [ec, r] = command(server.where(), {"SCRIPT", "LOAD", script_source(static_cast<script>(i))});
    REQUIRE(!ec);
    CHECK(r.str == script_sha(static_cast<script>(i)));
  }
}

TEST_CASE("scripts: acquire grants up to the limit with increasing fences, then reports the wait") {
  redis_server server;
  const auto k = names_for("t", "a");
  const auto first = acquire(server, k, "c:1", 1);
  const auto second = acquire(server, k, "c:2", 1);
  REQUIRE(first.outcome == acquire_result::kind::granted);
  REQUIRE(second.outcome == acquire_result::kind::granted);
  CHECK(second.fence > first.fence);
  CHECK(first.limit == 2);
  const auto third = acquire(server, k, "c:3", 1);
  REQUIRE(third.outcome == acquire_result::kind::busy);
  CHECK(third.wait_ms > 0);
  CHECK(third.wait_ms <= 60000);
  CHECK(integer(server, {"ZCARD", k.holders}) == 2);
}

TEST_CASE("scripts: the fence counter expires with the key's leases, and a restarted counter gives larger tokens") {
  redis_server server;
  const auto k = names_for("t", "a");
  const auto first = acquire(server, k, "c:1", 1);
  REQUIRE(first.outcome == acquire_result::kind::granted);
  const auto ttl = integer(server, {"PTTL", k.counter});
  CHECK(ttl > 0);  // idle keys leave no counter behind
  CHECK(ttl <= 60000);
  // Started from the server's time in microseconds, not from 1.
  CHECK(first.fence > 1600000000000000ULL);
  const auto second = acquire(server, k, "c:2", 1);
  REQUIRE(second.outcome == acquire_result::kind::granted);
  CHECK(second.fence == first.fence + 1);
  // The counter expires (as after a lease without grants): the next token
  // is still larger than every token given before.
  run(server, script::release, release_args(k, "c:1", 1));
  run(server, script::release, release_args(k, "c:2", 1));
  integer(server, {"DEL", k.counter});
  const auto after = acquire(server, k, "c:3", 1);
  REQUIRE(after.outcome == acquire_result::kind::granted);
  CHECK(after.fence > second.fence);
}

TEST_CASE("scripts: acquire is idempotent by id: a retry returns the same fence and takes nothing more") {
  redis_server server;
  const auto k = names_for("t", "a");
  const auto first = acquire(server, k, "c:1", 2);
  REQUIRE(first.outcome == acquire_result::kind::granted);
  const auto retry = acquire(server, k, "c:1", 2);
  REQUIRE(retry.outcome == acquire_result::kind::granted);
  CHECK(retry.fence == first.fence);
  CHECK(integer(server, {"ZCARD", k.holders}) == 2);
}

TEST_CASE("scripts: n above the key's limit is refused, not queued") {
  redis_server server;
  CHECK(acquire(server, names_for("t", "a"), "c:1", 3).outcome == acquire_result::kind::too_many);
}

TEST_CASE("scripts: an expired lease is purged before counting and refresh reports it lost") {
  redis_server server;
  const auto k = names_for("t", "a");
  REQUIRE(acquire(server, k, "c:1", 2).outcome == acquire_result::kind::granted);
  // Expire it on the server's terms: a score in the past.
  integer(server, {"ZADD", k.holders, "XX", "CH", "1", "c:1#1", "1", "c:1#2"});
  CHECK(parse_refresh(run(server, script::refresh, refresh_args(k, "c:1", 2, 60000))) ==
        refresh_result::lost);
  CHECK(integer(server, {"EXISTS", k.holders}) == 0);  // never revived
  CHECK(integer(server, {"HEXISTS", k.fences, "c:1"}) == 0);
  CHECK(acquire(server, k, "c:2", 2).outcome == acquire_result::kind::granted);
}

TEST_CASE("scripts: refresh extends a live lease and leaves the count unchanged") {
  redis_server server;
  const auto k = names_for("t", "a");
  REQUIRE(acquire(server, k, "c:1", 1).outcome == acquire_result::kind::granted);
  REQUIRE(acquire(server, k, "c:2", 1).outcome == acquire_result::kind::granted);
  integer(server, {"ZADD", k.holders, "XX", "99999999999999", "c:2#1"});
  CHECK(parse_refresh(run(server, script::refresh, refresh_args(k, "c:2", 1, 60000))) ==
        refresh_result::extended);
  auto [ec, score] = command(server.where(), {"ZSCORE", k.holders, "c:2#1"});
  REQUIRE(!ec);
  CHECK(std::stoll(score.str) < 99999999999999LL);  // rewritten from server TIME + T
  CHECK(integer(server, {"ZCARD", k.holders}) == 2);
}

TEST_CASE("scripts: release removes the lease and publishes on the key's channel") {
  redis_server server;
  const auto k = names_for("t", "a");
  REQUIRE(acquire(server, k, "c:1", 2).outcome == acquire_result::kind::granted);
  const auto removed = run(server, script::release, release_args(k, "c:1", 2));
  CHECK(removed.integer == 2);
  CHECK(integer(server, {"ZCARD", k.holders}) == 0);
  // Released twice: harmless.
  CHECK(run(server, script::release, release_args(k, "c:1", 2)).integer == 0);
}

TEST_CASE("scripts: a release that withdraws its id refuses that id's acquire if it runs later, for the withdrawal's time") {
  redis_server server;
  const auto k = names_for("t", "a");
  // The acquire of c:1 was cancelled in flight and resent after NOSCRIPT,
  // so its release runs first.
  CHECK(run(server, script::release, release_args(k, "c:1", 1, 60000)).integer == 0);
  const auto late = acquire(server, k, "c:1", 1);
  CHECK(late.outcome == acquire_result::kind::withdrawn);
  CHECK(integer(server, {"ZCARD", k.holders}) == 0);  // nothing leaked until the lease ends
  CHECK(integer(server, {"PTTL", k.withdrawn}) > 0);  // the withdrawal expires
  // Other ids are untouched, and an ordinary release withdraws nothing.
  REQUIRE(acquire(server, k, "c:2", 1).outcome == acquire_result::kind::granted);
  run(server, script::release, release_args(k, "c:2", 1));
  CHECK(acquire(server, k, "c:2", 1).outcome == acquire_result::kind::granted);
  // An expired withdrawal is purged: the id could be granted again.
  integer(server, {"ZADD", k.withdrawn, "XX", "1", "c:1"});
  CHECK(acquire(server, k, "c:1", 1).outcome == acquire_result::kind::granted);
}

TEST_CASE("scripts: a client with a different default limit gets limit_mismatch") {
  redis_server server;
  const auto k = names_for("t", "a");
  REQUIRE(acquire(server, k, "c:1", 1, 2).outcome == acquire_result::kind::granted);
  const auto other = acquire(server, names_for("t", "b"), "d:1", 1, 3);
  CHECK(other.outcome == acquire_result::kind::limit_mismatch);
  CHECK(other.limit == 2);
}

TEST_CASE("scripts: a limit stored with set_limit overrides the default for every client") {
  redis_server server;
  const auto k = names_for("t", "a");
  run(server, script::set_limit, set_limit_args(k, 1));
  REQUIRE(acquire(server, k, "c:1", 1).outcome == acquire_result::kind::granted);
  const auto busy = acquire(server, k, "c:2", 1);
  CHECK(busy.outcome == acquire_result::kind::busy);
  CHECK(busy.limit == 1);
  run(server, script::set_limit, set_limit_args(k, 0));
  CHECK(acquire(server, k, "c:2", 1).outcome == acquire_result::kind::granted);
}
