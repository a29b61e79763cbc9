// Helpers for the tests that fork client processes: a bounded run of the
// children, and the overlap checker over the permit intervals they log on
// CLOCK_MONOTONIC (one clock for every process of a host).
#ifndef KEYSEM_TESTS_REDIS_PROCESS_SUPPORT_HPP
#define KEYSEM_TESTS_REDIS_PROCESS_SUPPORT_HPP

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace keysem::redis::test {

inline std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// One permit held: `count` permits of `key` from `begin` to `end`.
struct interval {
  std::int64_t begin = 0, end = 0;
  int count = 1;
};

// Writes "key begin end count" as one line: a single write(2) below
// PIPE_BUF, so lines of concurrent children never interleave.
inline void log_interval(int fd, const std::string& key, const interval& held) {
  char line[192];
  const int len = std::snprintf(line, sizeof line, "%s %lld %lld %d\n", key.c_str(),
                                static_cast<long long>(held.begin),
                                static_cast<long long>(held.end), held.count);
  (void)!::write(fd, line, static_cast<std::size_t>(len));
}

using interval_log = std::map<std::string, std::vector<interval>>;

inline interval_log parse_intervals(const std::string& text) {
  interval_log by_key;
  std::istringstream lines(text);
  std::string key;
  long long begin = 0, end = 0;
  int count = 0;
  while (lines >> key >> begin >> end >> count) by_key[key].push_back({begin, end, count});
  return by_key;
}

inline std::size_t total_intervals(const interval_log& log) {
  std::size_t n = 0;
  for (const auto& [key, intervals] : log) n += intervals.size();
  return n;
}

// Highest number of permits of one key held at the same instant.
inline int highest_overlap(const std::vector<interval>& intervals) {
  std::vector<std::pair<std::int64_t, int>> events;
  for (const auto& held : intervals) {
    events.emplace_back(held.begin, +held.count);
    events.emplace_back(held.end, -held.count);
  }
  std::sort(events.begin(), events.end());  // an end sorts before a begin at the same instant
  int open = 0, highest = 0;
  for (auto [t, d] : events) highest = std::max(highest, open += d);
  return highest;
}

// What the children left: how many exited with status 0, and everything
// they wrote to the pipe.
struct children_result {
  int succeeded = 0;
  std::string output;
};

// Forks `count` children; child i runs body(i, write_fd) and must _exit.
// Reaps them all; a guard kills any still running after `bound`, so the
// caller is bounded even if a child hangs.
inline children_result run_children(int count, std::function<void(int, int)> body,
                                    std::chrono::seconds bound) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::vector<pid_t> children;
  for (int i = 0; i < count; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      body(i, fds[1]);
      ::_exit(2);  // body must not return
    }
    children.push_back(pid);
  }
  ::close(fds[1]);
  // The parent drains the pipe while the children run: a full pipe would
  // block their writes.
  children_result result;
  std::thread reader([&] {
    char buffer[4096];
    for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;)
      result.output.append(buffer, static_cast<std::size_t>(n));
  });
  std::mutex lock;
  std::condition_variable all_reaped;
  bool reaped = false;
  std::thread guard([&] {
    std::unique_lock held(lock);
    if (!all_reaped.wait_for(held, bound, [&] { return reaped; })) {
      for (pid_t pid : children) ::kill(pid, SIGKILL);
    }
  });
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++result.succeeded;
  }
  {
    std::lock_guard held(lock);
    reaped = true;
  }
  all_reaped.notify_all();
  guard.join();
  reader.join();
  ::close(fds[0]);
  return result;
}

}  // namespace keysem::redis::test

#endif
