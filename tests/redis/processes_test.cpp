// Forked processes sharing limits: every holder logs its permit interval on
// CLOCK_MONOTONIC (shared by all processes of a host) and at no instant do
// more than `limit` intervals of a key overlap.
#include "fleet_support.hpp"

#include <time.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

using namespace keysem::redis;
using namespace keysem::redis::test;

namespace {

constexpr std::size_t limit = 2;
constexpr int processes = 3, workers = 3, rounds = 10;

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Child: workers x rounds acquires over two hot keys and unique cold keys;
// one line "key begin end" per permit held. Exit status 0 if all completed.
[[noreturn]] void run_child(const endpoint& where, int out_fd, int index) {
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
          const auto begin = monotonic_ns();
          co_await pause(1ms);
          const auto end = monotonic_ns();
          if (!p.valid()) co_return;  // would have acted on a lost permit
          char line[128];
          const int len = std::snprintf(line, sizeof line, "%s %lld %lld\n", key.c_str(),
                                        static_cast<long long>(begin), static_cast<long long>(end));
          (void)!::write(out_fd, line, static_cast<std::size_t>(len));
          p.release();
        }
        if (++completed == workers) ctx.stop();
      }, asio::detached);
    }
    ctx.run_for(20s);
  }
  ::_exit(completed == workers ? 0 : 1);
}

// Highest number of intervals of one key open at the same instant.
int highest_overlap(std::vector<std::pair<std::int64_t, std::int64_t>> intervals) {
  std::vector<std::pair<std::int64_t, int>> events;
  for (auto [b, e] : intervals) {
    events.emplace_back(b, +1);
    events.emplace_back(e, -1);
  }
  std::sort(events.begin(), events.end());  // an end sorts before a begin at the same instant
  int open = 0, highest = 0;
  for (auto [t, d] : events) highest = std::max(highest, open += d);
  return highest;
}

}  // namespace

TEST_CASE("processes: forked processes sharing limits never overlap beyond the limit; no lease is left") {
  redis_server server;
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::vector<pid_t> children;
  for (int i = 0; i < processes; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      run_child(server.where(), fds[1], i);
    }
    children.push_back(pid);
  }
  ::close(fds[1]);
  int succeeded = 0;
  {
    // The children are reaped as they exit; a guard kills any still running
    // after 30 s, so the test is bounded even if one hangs.
    std::mutex lock;
    std::condition_variable all_reaped;
    bool reaped = false;
    std::thread guard([&] {
      std::unique_lock held(lock);
      if (!all_reaped.wait_for(held, std::chrono::seconds(30), [&] { return reaped; })) {
        for (pid_t pid : children) ::kill(pid, SIGKILL);
      }
    });
    for (pid_t pid : children) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++succeeded;
    }
    {
      std::lock_guard held(lock);
      reaped = true;
    }
    all_reaped.notify_all();
    guard.join();
  }
  std::string log;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) log.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  CHECK(succeeded == processes);

  std::map<std::string, std::vector<std::pair<std::int64_t, std::int64_t>>> by_key;
  std::istringstream lines(log);
  std::string key;
  long long begin = 0, end = 0;
  int records = 0;
  while (lines >> key >> begin >> end) {
    by_key[key].emplace_back(begin, end);
    ++records;
  }
  CHECK(records == processes * workers * rounds);
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
