// fleet_semaphore against a real redis-server: grants, waiting without
// polling, limits stored in Redis, deadlines, cancellation, lease loss.
#include "fleet_support.hpp"

using namespace keysem::redis;
using namespace keysem::redis::test;

TEST_CASE("fleet: acquire grants up to the limit with increasing fencing tokens; release frees") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), server.where(), 2, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto a = co_await sem.acquire("k");
      auto b = co_await sem.acquire("k");
      CHECK(a.valid());
      CHECK(b.valid());
      CHECK(b.fencing_token() > a.fencing_token());
      CHECK(a.key() == "k");
      CHECK(a.count() == 1);
      auto [ec, busy] = co_await sem.try_acquire("k", 1, tuple_token());
      CHECK(!ec);
      CHECK_FALSE(busy);
      a.release();
      CHECK_FALSE(a);
      CHECK(co_await eventually([&] { return holders(server.where(), "t", "k") == 1; }));
      auto [ec2, c] = co_await sem.try_acquire("k", 1, tuple_token());
      CHECK(!ec2);
      REQUIRE(c);
      CHECK(c.fencing_token() > b.fencing_token());
      const auto s = sem.stats();
      CHECK(s.granted == 3);
      CHECK(s.busy == 1);
      CHECK(s.held == 2);
      CHECK(s.round_trips > 0);
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: bad arguments fail with invalid_argument, never hang") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), server.where(), 2, short_lease());
    CHECK_THROWS_AS(fleet(ctx.get_executor(), server.where(), 0, short_lease()), std::invalid_argument);
    auto bad = short_lease();
    bad.safety_margin = bad.lease;
    CHECK_THROWS_AS(fleet(ctx.get_executor(), server.where(), 2, bad), std::invalid_argument);
    run(ctx, [&]() -> asio::awaitable<void> {
      auto [ec0, p0] = co_await sem.acquire("k", 0, tuple_token());
      CHECK(ec0 == asio::error::invalid_argument);
      auto [ec3, p3] = co_await sem.acquire("k", 3, tuple_token());
      CHECK(ec3 == asio::error::invalid_argument);
      auto [ect, pt] = co_await sem.try_acquire("k", 3, tuple_token());
      CHECK(ect == asio::error::invalid_argument);
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: a waiter in another semaphore is woken by the release message, not by polling") {
  redis_server server;
  asio::io_context ctx;
  {
    auto opts = short_lease();
    opts.lease = 10s;  // the expiry hint is 10 s away, the fallback 30 s
    opts.safety_margin = 1s;
    opts.request_timeout = 1s;
    fleet holder(ctx.get_executor(), server.where(), 1, opts);
    fleet waiter(ctx.get_executor(), server.where(), 1, opts);
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await holder.acquire("k");
      std::optional<steady::time_point> granted_at;
      fleet_permit second;
      asio::co_spawn(co_await asio::this_coro::executor,
                     [&]() -> asio::awaitable<void> {
                       second = co_await waiter.acquire("k");
                       granted_at = steady::now();
                     },
                     asio::detached);
      REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 1; }));
      const auto released_at = steady::now();
      held.release();
      REQUIRE(co_await eventually([&] { return granted_at.has_value(); }, 3s));
      const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(*granted_at - released_at);
      MESSAGE("release -> waiter in another semaphore: " << latency.count() << " us");
      CHECK(latency < 3s);
      CHECK(second.valid());
      // Woken by the release message, or by the retry that follows the
      // subscription's confirmation when that arrives after the release.
      CHECK(waiter.stats().waited == 1);
    });
  }
  drain(ctx);
}

namespace {

// How many SUBSCRIBE commands the server has run (INFO commandstats).
std::int64_t subscribe_calls(const endpoint& where) {
  auto [ec, r] = command(where, {"INFO", "commandstats"});
  REQUIRE(!ec);
  const auto at = r.str.find("cmdstat_subscribe:calls=");
  if (at == std::string::npos) return 0;
  return std::stoll(r.str.substr(at + std::string("cmdstat_subscribe:calls=").size()));
}

}  // namespace

TEST_CASE("fleet: a waiter that loses the race after a release retries without subscribing again") {
  redis_server server;
  asio::io_context ctx;
  {
    auto opts = short_lease();
    opts.lease = 10s;  // no expiry hint or fallback within the test
    opts.safety_margin = 1s;
    opts.request_timeout = 1s;
    fleet holder(ctx.get_executor(), server.where(), 1, opts);
    fleet first(ctx.get_executor(), server.where(), 1, opts);
    fleet second(ctx.get_executor(), server.where(), 1, opts);
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await holder.acquire("k");
      std::vector<fleet_permit> granted;
      for (fleet* sem : {&first, &second}) {
        asio::co_spawn(co_await asio::this_coro::executor,
                       [&, sem]() -> asio::awaitable<void> {
                         granted.push_back(co_await sem->acquire("k"));
                       },
                       asio::detached);
      }
      REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 2; }));
      // One release wakes both; one wins, the other finds the key busy
      // again and keeps waiting, still subscribed.
      held.release();
      REQUIRE(co_await eventually([&] { return granted.size() == 1; }, 3s));
      REQUIRE(co_await eventually([&] { return first.stats().waited + second.stats().waited == 1; }));
      granted.front().release();
      REQUIRE(co_await eventually([&] { return granted.size() == 2; }, 3s));
      CHECK(granted.back().valid());
      CHECK(subscribe_calls(server.where()) == 2);  // one per waiting semaphore, ever
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: several semaphores sharing limits never overlap beyond the limit") {
  redis_server server;
  asio::io_context ctx;
  {
    constexpr std::size_t limit = 2;
    std::vector<std::unique_ptr<fleet>> sems;
    for (int i = 0; i < 3; ++i) {
      sems.push_back(std::make_unique<fleet>(ctx.get_executor(), server.where(), limit, short_lease()));
    }
    std::map<std::string, int> inside;
    std::map<std::string, int> highest;
    int finished = 0;
    constexpr int workers_per_sem = 4, rounds = 8;
    run(ctx, [&]() -> asio::awaitable<void> {
      auto ex = co_await asio::this_coro::executor;
      for (auto& sem : sems) {
        for (int w = 0; w < workers_per_sem; ++w) {
          asio::co_spawn(ex, [&, w, s = sem.get()]() -> asio::awaitable<void> {
            for (int r = 0; r < rounds; ++r) {
              const std::string key = (w + r) % 2 ? "hot" : "warm";
              auto p = co_await s->acquire(key);
              const int now_inside = ++inside[key];
              highest[key] = std::max(highest[key], now_inside);
              co_await pause(2ms);
              CHECK(p.valid());
              --inside[key];
            }
            ++finished;
          }, asio::detached);
        }
      }
      REQUIRE(co_await eventually([&] { return finished == 3 * workers_per_sem; }, 20s));
      CHECK(co_await eventually([&] {
        return holders(server.where(), "t", "hot") == 0 && holders(server.where(), "t", "warm") == 0;
      }));
    }, 30s);
    MESSAGE("highest concurrency: hot " << highest["hot"] << ", warm " << highest["warm"] << " (limit 2)");
    CHECK(highest["hot"] <= static_cast<int>(limit));
    CHECK(highest["warm"] <= static_cast<int>(limit));
    CHECK(highest["hot"] == static_cast<int>(limit));
  }
  drain(ctx);
}

TEST_CASE("fleet: acquire_for gives up with timed_out and leaves no lease behind") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet a(ctx.get_executor(), server.where(), 1, short_lease());
    fleet b(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await a.acquire("k");
      const auto start = steady::now();
      auto [ec, p] = co_await b.acquire_for("k", 1, 200ms, tuple_token());
      CHECK(ec == asio::error::timed_out);
      CHECK_FALSE(p);
      CHECK(steady::now() - start < 2s);
      CHECK(holders(server.where(), "t", "k") == 1);
      auto [ec2, p2] = co_await b.acquire_until("k", 1, steady::now() + 50ms, tuple_token());
      CHECK(ec2 == asio::error::timed_out);
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: a cancelled waiting acquire completes with operation_aborted and holds nothing") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet a(ctx.get_executor(), server.where(), 1, short_lease());
    fleet b(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await a.acquire("k");
      asio::cancellation_signal cancel;
      std::optional<boost::system::error_code> result;
      b.acquire("k", 1, asio::bind_cancellation_slot(cancel.slot(), [&](boost::system::error_code ec, fleet_permit p) {
        result = ec;
        CHECK_FALSE(p);
      }));
      REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 1; }));
      cancel.emit(asio::cancellation_type::partial);
      REQUIRE(co_await eventually([&] { return result.has_value(); }, 2s));
      CHECK(*result == asio::error::operation_aborted);
      held.release();
      CHECK(co_await eventually([&] { return holders(server.where(), "t", "k") == 0; }));
      auto [ec, p] = co_await b.try_acquire("k", 1, tuple_token());
      CHECK(!ec);
      CHECK(p);
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: an acquire cancelled while its script is in flight gives its id back") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet a(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      // Cancelled right after initiation: the script may or may not have
      // been sent or run; either way nothing stays held.
      for (int i = 0; i < 5; ++i) {
        asio::cancellation_signal cancel;
        std::optional<boost::system::error_code> result;
        fleet_permit kept;
        a.acquire("k", 1, asio::bind_cancellation_slot(cancel.slot(), [&](boost::system::error_code ec, fleet_permit p) {
          result = ec;
          kept = std::move(p);
        }));
        co_await pause(std::chrono::milliseconds(i));
        constexpr asio::cancellation_type types[] = {asio::cancellation_type::terminal,
                                                     asio::cancellation_type::partial,
                                                     asio::cancellation_type::total};
        cancel.emit(types[i % 3]);
        REQUIRE(co_await eventually([&] { return result.has_value(); }, 2s));
        kept.release();
      }
      CHECK(co_await eventually([&] { return holders(server.where(), "t", "k") == 0; }));
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: clients configured with different limits get limit_mismatch") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet two(ctx.get_executor(), server.where(), 2, short_lease());
    fleet three(ctx.get_executor(), server.where(), 3, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto p = co_await two.acquire("k");
      auto [ec, q] = co_await three.acquire("k", 1, tuple_token());
      CHECK(ec == error::limit_mismatch);
      CHECK_FALSE(q);
      CHECK(ec.message().find("limit") != std::string::npos);
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: set_limit is stored in Redis and a raised limit wakes waiters of other clients") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet a(ctx.get_executor(), server.where(), 1, short_lease());
    fleet b(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await a.acquire("k");
      fleet_permit second;
      bool granted = false;
      asio::co_spawn(co_await asio::this_coro::executor, [&]() -> asio::awaitable<void> {
        second = co_await b.acquire("k");
        granted = true;
      }, asio::detached);
      REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 1; }));
      co_await a.set_limit("k", 2, asio::use_awaitable);
      REQUIRE(co_await eventually([&] { return granted; }, 3s));
      CHECK(holders(server.where(), "t", "k") == 2);
      co_await a.reset_limit("k", asio::use_awaitable);
      auto [ec, third] = co_await a.try_acquire("k", 1, tuple_token());
      CHECK(!ec);
      CHECK_FALSE(third);
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: a lease removed on the server is reported lost through valid() and async_wait_lost") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto p = co_await sem.acquire("k");
      REQUIRE(p.valid());
      redis_int(server.where(), {"DEL", detail::names_for("t", "k").holders});
      const auto start = steady::now();
      auto [ec] = co_await p.async_wait_lost(asio::as_tuple(asio::use_awaitable));
      CHECK(!ec);
      MESSAGE("loss noticed after " << std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start).count() << " ms (refresh every T/3 = 166 ms)");
      CHECK_FALSE(p.valid());
      CHECK(static_cast<bool>(p));
      CHECK(sem.stats().lost == 1);
      auto [ec2] = co_await p.async_wait_lost(asio::as_tuple(asio::use_awaitable));
      CHECK(!ec2);  // already lost: completes at once
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: async_wait_lost completes with operation_aborted when the permit is released or cancelled") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), server.where(), 2, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto p = co_await sem.acquire("k");
      std::optional<boost::system::error_code> released, cancelled;
      p.async_wait_lost([&](boost::system::error_code ec) { released = ec; });
      auto q = co_await sem.acquire("k");
      asio::cancellation_signal cancel;
      q.async_wait_lost(asio::bind_cancellation_slot(cancel.slot(), [&](boost::system::error_code ec) { cancelled = ec; }));
      cancel.emit(asio::cancellation_type::terminal);
      p.release();
      REQUIRE(co_await eventually([&] { return released && cancelled; }, 2s));
      CHECK(*released == asio::error::operation_aborted);
      CHECK(*cancelled == asio::error::operation_aborted);
      CHECK(q.valid());
      CHECK(sem.stats().lost == 0);
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: close fails waiting acquires with closed; held permits still release") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet a(ctx.get_executor(), server.where(), 1, short_lease());
    fleet b(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await a.acquire("k");
      std::optional<boost::system::error_code> local, remote;
      a.acquire("k", 1, [&](boost::system::error_code ec, fleet_permit) { local = ec; });
      b.acquire("k", 1, [&](boost::system::error_code ec, fleet_permit) { remote = ec; });
      REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 1; }));
      a.close();
      b.close();
      REQUIRE(co_await eventually([&] { return local && remote; }, 2s));
      CHECK(*local == error::closed);
      CHECK(*remote == error::closed);
      auto [ec, p] = co_await a.acquire("k", 1, tuple_token());
      CHECK(ec == error::closed);
      held.release();
      CHECK(co_await eventually([&] { return holders(server.where(), "t", "k") == 0; }));
    });
  }
  drain(ctx);
}

TEST_CASE("fleet: destroying the semaphore with acquires pending completes them, never hangs") {
  redis_server server;
  asio::io_context ctx;
  std::optional<boost::system::error_code> result;
  fleet_permit survivor;
  {
    fleet a(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      survivor = co_await a.acquire("k");
      a.acquire("k", 1, [&](boost::system::error_code ec, fleet_permit) { result = ec; });
      co_await pause(20ms);
    });
  }
  drain(ctx);
  REQUIRE(result.has_value());
  CHECK((*result == error::closed || *result == asio::error::operation_aborted));
  CHECK_FALSE(survivor.valid());  // nobody refreshes it any more
  survivor.release();             // safe after the semaphore is gone
}
