// Faults, each bounded in time: Redis unreachable, killed and restarted,
// the subscriber connection dropped, a holder process killed or paused.
#include "fleet_support.hpp"

#include <poll.h>

using namespace keysem::redis;
using namespace keysem::redis::test;

namespace {

long long ms_since(steady::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count();
}

// Reads one byte from fd within `bound`; 0 if none came.
char read_byte(int fd, std::chrono::milliseconds bound) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(bound.count())) != 1) return 0;
  char c = 0;
  return ::read(fd, &c, 1) == 1 ? c : 0;
}

// A child process holding one permit of `key` (limit 1): reports 'A' once
// granted, then 'L' (lost, and valid() already false) or 'V' (lost but
// still valid: a bug) when its lease is lost. Runs until killed.
pid_t spawn_holder(const endpoint& where, const std::string& key, int report_fd) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  {
    asio::io_context ctx;
    fleet sem(ctx.get_executor(), where, 1, short_lease());
    fleet_permit held;
    sem.acquire(key, 1, [&](boost::system::error_code ec, fleet_permit p) {
      if (ec) ::_exit(3);
      held = std::move(p);
      (void)!::write(report_fd, "A", 1);
      held.async_wait_lost([&](boost::system::error_code lost_ec) {
        if (lost_ec) return;
        (void)!::write(report_fd, held.valid() ? "V" : "L", 1);
      });
    });
    ctx.run_for(60s);
  }
  ::_exit(0);
}

void reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

}  // namespace

TEST_CASE("faults: Redis unreachable fails acquires with connection_failed, within the bound, and backs off") {
  asio::io_context ctx;
  {
    const endpoint nowhere{"127.0.0.1", free_port(), {}, 0};
    fleet sem(ctx.get_executor(), nowhere, 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      const auto start = steady::now();
      auto [ec, p] = co_await sem.acquire("k", 1, tuple_token());
      CHECK(ec == error::connection_failed);
      CHECK_FALSE(p);
      MESSAGE("unreachable: failed after " << ms_since(start) << " ms");
      CHECK(steady::now() - start < 2s);
      auto [ec2, p2] = co_await sem.try_acquire("k", 1, tuple_token());
      CHECK((ec2 == error::connection_failed || ec2 == error::timed_out));
      CHECK(sem.stats().redis_errors >= 2);
      CHECK(sem.stats().granted == 0);
    });
  }
  drain(ctx);
}

TEST_CASE("faults: redis-server killed with -9 and restarted: clear errors meanwhile, permits lost, recovery after") {
  redis_server server;
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), server.where(), 2, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await sem.acquire("k");
      server.kill();
      const auto killed = steady::now();
      auto [ec, p] = co_await sem.acquire("k", 1, tuple_token());
      CHECK((ec == error::connection_failed || ec == error::timed_out));
      CHECK_FALSE(p);
      MESSAGE("acquire while Redis is down: " << ec.message() << " after " << ms_since(killed) << " ms");
      CHECK(steady::now() - killed < 2s);
      auto [lost_ec] = co_await held.async_wait_lost(asio::as_tuple(asio::use_awaitable));
      CHECK(!lost_ec);
      CHECK_FALSE(held.valid());
      MESSAGE("held permit reported lost " << ms_since(killed) << " ms after the kill (T - m = 450 ms)");
      CHECK(steady::now() - killed < 2s);
      server.start();
      const auto restarted = steady::now();
      fleet_permit again;
      for (int attempt = 0; attempt < 100 && !again; ++attempt) {
        auto [ec3, p3] = co_await sem.acquire("k", 1, tuple_token());
        if (!ec3) again = std::move(p3);
        else co_await pause(20ms);
      }
      REQUIRE(again);
      MESSAGE("granted again " << ms_since(restarted) << " ms after the restart");
      CHECK(again.valid());
      CHECK(sem.stats().lost == 1);
      CHECK(sem.stats().reconnects >= 2);
    }, 20s);
  }
  drain(ctx);
}

TEST_CASE("faults: waiters proceed when their subscriber connection is killed while they wait") {
  redis_server server;
  asio::io_context ctx;
  {
    auto opts = short_lease();
    opts.lease = 10s;  // neither the expiry hint nor the 30 s fallback fits the bound
    opts.safety_margin = 1s;
    opts.request_timeout = 1s;
    fleet a(ctx.get_executor(), server.where(), 1, opts);
    fleet b(ctx.get_executor(), server.where(), 1, opts);
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await a.acquire("k");
      std::optional<steady::time_point> granted_at;
      fleet_permit second;
      asio::co_spawn(co_await asio::this_coro::executor, [&]() -> asio::awaitable<void> {
        second = co_await b.acquire("k");
        granted_at = steady::now();
      }, asio::detached);
      REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 1; }));
      redis_int(server.where(), {"CLIENT", "KILL", "TYPE", "pubsub"});
      held.release();  // published while nobody is subscribed
      const auto released = steady::now();
      REQUIRE(co_await eventually([&] { return granted_at.has_value(); }, 5s));
      MESSAGE("subscriber killed: waiter granted " << ms_since(released) << " ms after the release");
      CHECK(*granted_at - released < 3s);
      CHECK(second.valid());
    }, 20s);
  }
  drain(ctx);
}

TEST_CASE("faults: kill -9 of a holder process: its permit comes back within T + epsilon") {
  redis_server server;
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t child = spawn_holder(server.where(), "k", fds[1]);
  REQUIRE(read_byte(fds[0], 5000ms) == 'A');
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto [ec, busy] = co_await sem.try_acquire("k", 1, tuple_token());
      CHECK(!ec);
      CHECK_FALSE(busy);
      ::kill(child, SIGKILL);
      const auto killed = steady::now();
      auto p = co_await sem.acquire("k");
      const auto waited = ms_since(killed);
      MESSAGE("holder killed: permit back after " << waited << " ms (T = 500 ms)");
      CHECK(p.valid());
      CHECK(steady::now() - killed < 500ms + 1s);
    }, 10s);
  }
  drain(ctx);
  reap(child);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("faults: SIGSTOP of a holder longer than T: others proceed, and on SIGCONT it learns its permit is lost") {
  redis_server server;
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t child = spawn_holder(server.where(), "k", fds[1]);
  REQUIRE(read_byte(fds[0], 5000ms) == 'A');
  asio::io_context ctx;
  {
    fleet sem(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      ::kill(child, SIGSTOP);
      const auto stopped = steady::now();
      auto p = co_await sem.acquire("k");
      MESSAGE("holder stopped: permit taken over after " << ms_since(stopped) << " ms");
      CHECK(steady::now() - stopped < 500ms + 1s);
      ::kill(child, SIGCONT);
      const char verdict = read_byte(fds[0], 3000ms);
      CHECK(verdict == 'L');  // lost, and valid() was already false
      CHECK(p.valid());
      CHECK(holders(server.where(), "t", "k") == 1);  // the resumed holder revived nothing
    }, 15s);
  }
  drain(ctx);
  reap(child);
  ::close(fds[0]);
  ::close(fds[1]);
}
