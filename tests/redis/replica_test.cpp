// fleet_options::replicas: a grant waits for replicas to acknowledge it
// (Redis WAIT) and is given back when too few do.
#include "fleet_support.hpp"

using namespace keysem::redis;
using namespace keysem::redis::test;

namespace {

// Whether a replica has finished its initial sync and streams writes.
bool replica_online(const endpoint& where) {
  auto [ec, r] = command(where, {"INFO", "replication"});
  REQUIRE(!ec);
  return r.str.find("state=online") != std::string::npos;
}

// replica_timeout: how long WAIT may block. The test with a replica gives
// it ample time (a loaded machine may deschedule the replica's process);
// the one without waits out a short one.
fleet_options waiting_for(int replicas, std::chrono::milliseconds replica_timeout) {
  auto o = short_lease();
  o.lease = 6s;
  o.safety_margin = 600ms;
  o.request_timeout = 2s;
  o.replicas = replicas;
  o.replica_timeout = replica_timeout;
  return o;
}

}  // namespace

TEST_CASE("replicas: a grant acknowledged by the replica is reported, and the replica holds the lease") {
  redis_server primary;
  // The full sync is loaded from the socket: no dump.rdb in the test's directory.
  redis_server replica({"--replicaof", "127.0.0.1", std::to_string(primary.port()),
                        "--repl-diskless-load", "swapdb"});
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), primary.where(), 2, waiting_for(1, 1500ms));
    run(ctx, [&]() -> asio::awaitable<void> {
      REQUIRE(co_await eventually([&] { return replica_online(primary.where()); }, 10s));
      auto permit = co_await sem.acquire("k");
      CHECK(permit.valid());
      // WAIT returned once the replica had the write: it holds the lease too.
      CHECK(holders(replica.where(), "t", "k") == 1);
      CHECK(sem.stats().not_replicated == 0);
    }, 15s);
  }
  drain(ctx);
}

TEST_CASE("replicas: too few replicas fail the acquire with not_replicated, within the bound, and give the grant back") {
  redis_server primary;  // no replica
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), primary.where(), 1, waiting_for(1, 100ms));
    run(ctx, [&]() -> asio::awaitable<void> {
      const auto start = steady::now();
      auto [ec, p] = co_await sem.acquire("k", 1, tuple_token());
      const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start);
      CHECK(ec == error::not_replicated);
      CHECK_FALSE(p);
      MESSAGE("not_replicated after " << took.count() << " ms (replica_timeout 100 ms)");
      CHECK(took < 2s);
      CHECK(sem.stats().not_replicated == 1);
      CHECK(co_await eventually([&] { return holders(primary.where(), "t", "k") == 0; }));
      // The local stage let go too: the next attempt is not held back.
      auto [ec2, p2] = co_await sem.try_acquire("k", 1, tuple_token());
      CHECK(ec2 == error::not_replicated);
    });
  }
  drain(ctx);
}

TEST_CASE("replicas: bad replica options are refused") {
  asio::io_context ctx;
  const endpoint nowhere{"127.0.0.1", 1, {}, 0};
  auto negative = short_lease();
  negative.replicas = -1;
  CHECK_THROWS_AS(fleet(ctx.get_executor(), nowhere, 1, negative), std::invalid_argument);
  auto too_long = short_lease();
  too_long.replicas = 1;
  too_long.replica_timeout = too_long.request_timeout;
  CHECK_THROWS_AS(fleet(ctx.get_executor(), nowhere, 1, too_long), std::invalid_argument);
  auto defaulted = short_lease();
  defaulted.replicas = 1;  // replica_timeout 0: request_timeout / 2
  CHECK_NOTHROW(fleet(ctx.get_executor(), nowhere, 1, defaulted));
}
