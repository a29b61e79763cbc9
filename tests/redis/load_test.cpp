// Load: several forked processes, each running many coroutines, on a few hot
// keys and many cold ones, for a bounded time, with every kind of request
// mixed (acquire, weighted acquire, acquire_for that may time out,
// try_acquire that may find the key busy). Checked afterwards: no key ever
// had more permits held than its limit (overlap of the CLOCK_MONOTONIC
// intervals every holder logs), every operation completed, and no lease is
// left in Redis.
#include "fleet_support.hpp"
#include "process_support.hpp"

using namespace keysem::redis;
using namespace keysem::redis::test;

namespace {

constexpr int processes = 4, coroutines = 12;
constexpr auto load_time = 2s;
constexpr std::size_t default_limit = 2, hot0_limit = 3;
const std::string prefix = "load";

// Each child also logs one line under this key: begin = operations
// completed, end = of which granted, count = 1.
const std::string summary_key = "=summary";

std::string key_for(int process, int coroutine, int round) {
  if (round % 5 < 3) return "hot" + std::to_string((coroutine + round) % 3);
  return "cold-" + std::to_string(process) + "-" + std::to_string(coroutine) + "-" +
         std::to_string(round);
}

struct tally {
  long long completed = 0, granted = 0;
  bool unexpected = false;  // an error no request of this test should see
};

// One request of the mix; holds a granted permit for 1 ms and logs it.
asio::awaitable<void> one_request(fleet& sem, int out_fd, const std::string& key, int round,
                                  tally& counts) {
  const bool hot = key.rfind("hot", 0) == 0;
  boost::system::error_code ec;
  fleet_permit permit;
  std::size_t n = 1;
  switch (round % 4) {
    case 0: std::tie(ec, permit) = co_await sem.acquire(key, 1, tuple_token()); break;
    case 1:
      std::tie(ec, permit) = co_await sem.acquire_for(key, 1, 30ms, tuple_token());
      if (ec == asio::error::timed_out) ec = {};
      break;
    case 2: std::tie(ec, permit) = co_await sem.try_acquire(key, 1, tuple_token()); break;
    default:
      n = hot ? 2 : 1;
      std::tie(ec, permit) = co_await sem.acquire(key, n, tuple_token());
      break;
  }
  ++counts.completed;
  if (ec) counts.unexpected = true;
  if (!permit) co_return;
  ++counts.granted;
  interval held{monotonic_ns(), 0, static_cast<int>(n)};
  co_await pause(1ms);
  held.end = monotonic_ns();
  if (!permit.valid()) {  // a lost lease under this load would be a bug
    counts.unexpected = true;
    co_return;
  }
  log_interval(out_fd, key, held);
  permit.release();
}

[[noreturn]] void run_child(const endpoint& where, int index, int out_fd) {
  tally counts;
  int finished = 0;
  {
    asio::io_context ctx;
    fleet sem(ctx.get_executor(), where, default_limit, short_lease(prefix));
    const auto until = steady::now() + load_time;
    for (int c = 0; c < coroutines; ++c) {
      asio::co_spawn(ctx, [&, c]() -> asio::awaitable<void> {
        for (int round = 0; steady::now() < until; ++round)
          co_await one_request(sem, out_fd, key_for(index, c, round), round, counts);
        if (++finished == coroutines) ctx.stop();
      }, asio::detached);
    }
    ctx.run_for(20s);
  }
  log_interval(out_fd, summary_key, {counts.completed, counts.granted, 1});
  ::_exit(finished == coroutines && !counts.unexpected && counts.granted > 0 ? 0 : 1);
}

std::size_t limit_of(const std::string& key) { return key == "hot0" ? hot0_limit : default_limit; }

}  // namespace

TEST_CASE("load: processes x coroutines on hot and cold keys: limits hold, every operation completes, no lease is left") {
  redis_server server;
  {
    // hot0's limit is stored in Redis before the children start: every
    // process enforces it without being told.
    asio::io_context ctx;
    fleet admin(ctx.get_executor(), server.where(), default_limit, short_lease(prefix));
    run(ctx, [&]() -> asio::awaitable<void> {
      co_await admin.set_limit("hot0", hot0_limit, asio::use_awaitable);
    });
  }
  const auto children = run_children(
      processes, [&](int index, int out_fd) { run_child(server.where(), index, out_fd); },
      std::chrono::seconds(40));
  CHECK(children.succeeded == processes);

  interval_log by_key = parse_intervals(children.output);
  long long completed = 0, granted = 0;
  for (const auto& s : by_key[summary_key]) {
    completed += s.begin;
    granted += s.end;
  }
  by_key.erase(summary_key);
  CHECK(granted == static_cast<long long>(total_intervals(by_key)));
  MESSAGE(processes << " processes x " << coroutines << " coroutines, " << completed
                    << " operations completed, " << granted << " granted, " << by_key.size()
                    << " keys");
  for (const auto& [key, intervals] : by_key) {
    const int highest = highest_overlap(intervals);
    if (key.rfind("hot", 0) == 0) {
      MESSAGE(key << ": " << intervals.size() << " permits, highest overlap " << highest
                  << " (limit " << limit_of(key) << ")");
    }
    CHECK(highest <= static_cast<int>(limit_of(key)));
  }
  asio::io_context ctx;
  run(ctx, [&]() -> asio::awaitable<void> {
    CHECK(co_await eventually([&] {
      auto [ec, r] = command(server.where(), {"KEYS", prefix + ":*:h"});
      return !ec && r.elements.empty();
    }));
  });
}
