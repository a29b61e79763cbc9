// Forked processes sharing limits: every holder logs its permit interval on
// CLOCK_MONOTONIC (shared by all processes of a host) and at no instant do
// more than `limit` intervals of a key overlap.
#include "fleet_support.hpp"
#include "process_support.hpp"

using namespace keysem::redis;
using namespace keysem::redis::test;

namespace {

constexpr std::size_t limit = 2;
constexpr int processes = 3, workers = 3, rounds = 10;

// Child: workers x rounds acquires over two hot keys and unique cold keys;
// one interval logged per permit held. Exit status 0 if all completed.
[[noreturn]] void run_child(const endpoint& where, int index, int out_fd) {
  int completed = 0;
  {
    asio::io_context ctx;
    fleet sem(ctx.get_executor(), where, limit, short_lease("p"));
    for (int w = 0; w < workers; ++w) {
      asio::co_spawn(ctx, [&, w]() -> asio::awaitable<void> {
        for (int r = 0; r < rounds; ++r) {
          const std::string key = r % 3 == 0
              ? "cold-" + std::to_string(index) + "-" + std::to_string(w) + "-" + std::to_string(r)
              : "hot" + std::to_string((w + r) % 2);
          auto [ec, p] = co_await sem.acquire(key, 1, tuple_token());
          if (ec || !p.valid()) co_return;
          interval held{monotonic_ns(), 0, 1};
          co_await pause(1ms);
          held.end = monotonic_ns();
          if (!p.valid()) co_return;  // would have acted on a lost permit
          log_interval(out_fd, key, held);
          p.release();
        }
        if (++completed == workers) ctx.stop();
      }, asio::detached);
    }
    ctx.run_for(20s);
  }
  ::_exit(completed == workers ? 0 : 1);
}

}  // namespace

TEST_CASE("processes: forked processes sharing limits never overlap beyond the limit; no lease is left") {
  redis_server server;
  const auto children = run_children(
      processes, [&](int index, int out_fd) { run_child(server.where(), index, out_fd); },
      std::chrono::seconds(30));
  CHECK(children.succeeded == processes);

  const interval_log by_key = parse_intervals(children.output);
  CHECK(total_intervals(by_key) == processes * workers * rounds);
  for (const auto& [k, intervals] : by_key) {
    const int highest = highest_overlap(intervals);
    if (k.rfind("hot", 0) == 0) {
      MESSAGE(k << ": " << intervals.size() << " permits across " << processes
                << " processes, highest overlap " << highest << " (limit " << limit << ")");
    }
    CHECK(highest <= static_cast<int>(limit));
  }
  // Every lease was released: no lease set is left in Redis.
  asio::io_context ctx;
  run(ctx, [&]() -> asio::awaitable<void> {
    CHECK(co_await eventually([&] {
      auto [ec, r] = command(server.where(), {"KEYS", "p:*:h"});
      return !ec && r.elements.empty();
    }));
  });
}
