// Fleet workloads F1-F3: keysem::redis::fleet_semaphore against a
// redis-server this program starts on 127.0.0.1 (on a free port it picks),
// each with its baseline measured in the same run:
// - F1 acquire+release pairs per second on one connection: 64 coroutines on
//   their own keys (requests pipelined) against one coroutine issuing the
//   same pairs one at a time;
// - F2 release -> waiter granted in another (forked) process, on
//   CLOCK_MONOTONIC: woken by pub/sub against a client retrying
//   try_acquire every 10 ms (the polling of redis-semaphore), samples
//   interleaved;
// - F3 Redis commands per granted permit, 64 coroutines on 2 hot keys
//   (limit 2): with the local stage (1 semaphore x 64 coroutines, 4 x 16)
//   against no stage at all (64 semaphores x 1 coroutine: every waiter is
//   its own Redis client).
//
// Each benchmark runs one timed batch per repetition (--benchmark_repetitions
// gives medians); KEYSEM_BENCH_FLEET_SCALE=x multiplies every batch's size
// (default 1: about 12 s per repetition).
#include "common/harness.hpp"
#include "tests/redis/redis_server.hpp"
#include "tests/redis/run_bounded.hpp"

// GCC 12 flags asio's awaitable frames, which have class-specific operator
// new/delete, with a false -Wmismatched-new-delete at the end of every
// coroutine (GCC PR 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <keysem/redis.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>

namespace bench {
namespace {

namespace redis = keysem::redis;
using fleet = redis::fleet_semaphore<>;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// The server and the batches' size
// ---------------------------------------------------------------------------
std::unique_ptr<redis::test::redis_server>& server() {
  static std::unique_ptr<redis::test::redis_server> s;
  return s;
}

double scale() {
  if (settings().smoke) return 0.05;
  const char* s = std::getenv("KEYSEM_BENCH_FLEET_SCALE");
  const double x = s != nullptr ? std::strtod(s, nullptr) : 1.0;
  return x > 0 ? x : 1.0;
}

int scaled(int n) { return std::max(4, static_cast<int>(n * scale())); }

// Every batch gets its own prefix: no key, lease or limit of an earlier
// batch is seen by a later one.
redis::fleet_options fresh_options(const char* workload) {
  static int batch = 0;
  redis::fleet_options o;
  o.prefix = std::string("bench-") + workload + "-" + std::to_string(++batch);
  return o;
}

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

double seconds_since(steady::time_point start) {
  return std::chrono::duration<double>(steady::now() - start).count();
}

asio::awaitable<void> pause(steady::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

// The semaphores' connections keep ctx busy forever: a batch stops ctx when
// its coroutines are done.
void run_batch(asio::io_context& ctx, std::function<asio::awaitable<void>()> body) {
  if (!redis::test::run_bounded(ctx, std::move(body), 300s)) {
    throw std::runtime_error("the batch did not finish within 300 s");
  }
}

// After the semaphores are gone: lets their shutdown close the sockets.
void drain(asio::io_context& ctx) {
  ctx.restart();
  ctx.run_for(1s);
}

// Runs `tasks` coroutines made by make(i) and returns when all are done.
asio::awaitable<void> all_of(int tasks, std::function<asio::awaitable<void>(int)> make) {
  auto ex = co_await asio::this_coro::executor;
  int left = tasks;
  std::exception_ptr failure;
  asio::steady_timer all_done(ex, steady::time_point::max());
  for (int i = 0; i < tasks; ++i) {
    asio::co_spawn(ex, make(i), [&](std::exception_ptr e) {
      if (e) failure = e;
      if (--left == 0) all_done.cancel();
    });
  }
  co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
  if (failure) std::rethrow_exception(failure);
}

// Yields until `sem` has had `count` replies from Redis: a release is
// fire-and-forget, and a batch ends when the last one is answered.
asio::awaitable<void> replies_reach(const fleet& sem, std::uint64_t count) {
  while (sem.stats().round_trips < count) co_await asio::post(asio::deferred);
}

// Redis' own counters (INFO commandstats): calls and time spent per
// command, the scripts' inner commands included. Asked on a plain socket:
// keysem's connection would first load its scripts, and count in them.
struct command_stat {
  std::uint64_t calls = 0;
  std::uint64_t usec = 0;  // time Redis spent running them
};

// The reply to an inline command, a bulk string: "$<length>\r\n<bytes>\r\n".
std::string ask_redis(const std::string& inline_command) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(server()->port());
  timeval bound{5, 0};
  const std::string request = inline_command + "\r\n";
  const bool sent = fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound) == 0 &&
                    ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                    ::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size());
  std::string reply;
  char buffer[4096];
  std::size_t header = std::string::npos, length = 0;
  while (sent && (header == std::string::npos || reply.size() < header + 2 + length + 2)) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) break;
    reply.append(buffer, static_cast<std::size_t>(n));
    if (header == std::string::npos && (header = reply.find("\r\n")) != std::string::npos) {
      length = std::strtoull(reply.c_str() + 1, nullptr, 10);
    }
  }
  if (fd >= 0) ::close(fd);
  if (!sent || header == std::string::npos) throw std::runtime_error("no answer to " + inline_command);
  return reply;
}

std::map<std::string, command_stat> command_stats() {
  const std::string reply = ask_redis("INFO commandstats");
  // Lines "cmdstat_<command>:calls=<n>,usec=<n>,...".
  std::map<std::string, command_stat> stats;
  std::size_t at = 0;
  while ((at = reply.find("cmdstat_", at)) != std::string::npos) {
    const std::size_t colon = reply.find(':', at), calls = reply.find("calls=", at),
                      usec = reply.find("usec=", at);
    if (colon == std::string::npos || calls == std::string::npos || usec == std::string::npos) break;
    stats[reply.substr(at + 8, colon - at - 8)] = {std::strtoull(reply.c_str() + calls + 6, nullptr, 10),
                                                   std::strtoull(reply.c_str() + usec + 5, nullptr, 10)};
    at = colon;
  }
  return stats;
}

// ---------------------------------------------------------------------------
// F1: acquire+release pairs per second over one fleet_semaphore (one command
// connection). Pipelined: 64 coroutines, each on its own key, so up to 64
// acquires are in flight and written together. One at a time: one
// coroutine, each acquire awaited before the next is sent (its release,
// fire-and-forget, is written together with the next acquire). Each
// variant is timed until the reply to its last release is in.
// ---------------------------------------------------------------------------
struct pair_rate {
  double per_second = 0;
  double redis_us_per_pair = 0;   // time Redis spent running the scripts
  double client_us_per_pair = 0;  // CPU time of this process
};

double script_usec(const std::map<std::string, command_stat>& stats) {
  double usec = 0;
  for (const char* name : {"evalsha", "eval"}) {
    if (auto it = stats.find(name); it != stats.end()) usec += static_cast<double>(it->second.usec);
  }
  return usec;
}

pair_rate pairs_per_second(asio::io_context& ctx, int tasks, int pairs) {
  pair_rate rate;
  {
    fleet sem(ctx.get_executor(), server()->where(), 1, fresh_options("f1"));
    run_batch(ctx, [&]() -> asio::awaitable<void> {
      { auto warm = co_await sem.acquire("warm-up"); }  // connects, loads the scripts
      co_await replies_reach(sem, sem.stats().round_trips + 1);
      const std::uint64_t expected = sem.stats().round_trips + 2 * static_cast<std::uint64_t>(pairs);
      const double usec_before = script_usec(command_stats());
      const double cpu_before = process_cpu_seconds();
      const auto start = steady::now();
      co_await all_of(tasks, [&](int t) -> asio::awaitable<void> {
        const std::string key = key_for(static_cast<std::size_t>(t));
        for (int i = t; i < pairs; i += tasks) {
          auto p = co_await sem.acquire(key);
        }
      });
      co_await replies_reach(sem, expected);
      rate.per_second = pairs / seconds_since(start);
      rate.client_us_per_pair = (process_cpu_seconds() - cpu_before) * 1e6 / pairs;
      rate.redis_us_per_pair = (script_usec(command_stats()) - usec_before) / pairs;
    });
  }
  drain(ctx);
  return rate;
}

void f1_round_trips(benchmark::State& state) {
  const int pipelined_pairs = scaled(20'000), serial_pairs = scaled(4'000);
  for (auto _ : state) {
    asio::io_context ctx;
    const auto start = steady::now();
    const pair_rate pipelined = pairs_per_second(ctx, 64, pipelined_pairs);
    const pair_rate serial = pairs_per_second(ctx, 1, serial_pairs);
    state.SetIterationTime(seconds_since(start));
    state.counters["pipelined_per_s"] = pipelined.per_second;
    state.counters["one_at_a_time_per_s"] = serial.per_second;
    state.counters["ratio"] = pipelined.per_second / serial.per_second;
    state.counters["redis_us_per_pair"] = pipelined.redis_us_per_pair;
    state.counters["client_us_per_pair"] = pipelined.client_us_per_pair;
    state.counters["serial_redis_us_per_pair"] = serial.redis_us_per_pair;
    state.counters["serial_client_us_per_pair"] = serial.client_us_per_pair;
  }
}

// ---------------------------------------------------------------------------
// F2: release -> waiter in another process. The parent holds a key (limit
// 1) through its own fleet_semaphore and tells a forked child to acquire
// it; after a random 2-12 ms (the child is waiting by then, and a poller
// is at a random point of its period) the parent reads CLOCK_MONOTONIC and
// releases; the child reads CLOCK_MONOTONIC when its acquire completes and
// reports it. Samples alternate between the child's two waiters:
// - pub/sub: fleet_semaphore::acquire, woken by the release message;
// - polling: try_acquire every 10 ms until granted (redis-semaphore's
//   retry loop with its default 10 ms interval).
// A sample whose waiter never found the key busy (it was released before
// the waiter's first try reached Redis) measures no wake-up: it is dropped
// and counted.
// ---------------------------------------------------------------------------
struct grant_report {
  std::int64_t granted_ns = 0;
  std::int64_t waited = 0;  // 0: the first try was granted, nothing was woken
};

constexpr char wait_pubsub = 's', wait_polling = 'p', quit = 'q';
const std::string pubsub_key = "woken-by-pubsub", polling_key = "woken-by-polling";

asio::awaitable<redis::fleet_permit> poll_acquire(fleet& sem, const std::string& key) {
  for (;;) {
    auto p = co_await sem.try_acquire(key, 1, asio::use_awaitable);
    if (p) co_return p;
    co_await pause(10ms);
  }
}

asio::awaitable<grant_report> wait_for_grant(char how, fleet& subscribed, fleet& polling) {
  grant_report r;
  if (how == wait_pubsub) {
    const auto waited = subscribed.stats().waited;
    auto p = co_await subscribed.acquire(pubsub_key);
    r.granted_ns = monotonic_ns();
    r.waited = static_cast<std::int64_t>(subscribed.stats().waited - waited);
  } else {
    const auto busy = polling.stats().busy;
    auto p = co_await poll_acquire(polling, polling_key);
    r.granted_ns = monotonic_ns();
    r.waited = static_cast<std::int64_t>(polling.stats().busy - busy);
  }
  co_return r;
}

[[noreturn]] void run_waiters(const redis::fleet_options& options, int commands_fd, int reports_fd) {
  int status = 1;
  try {
    asio::io_context ctx;
    {
      fleet subscribed(ctx.get_executor(), server()->where(), 1, options);
      fleet polling(ctx.get_executor(), server()->where(), 1, options);
      asio::posix::stream_descriptor commands(ctx, commands_fd), reports(ctx, reports_fd);
      run_batch(ctx, [&]() -> asio::awaitable<void> {
        for (;;) {
          char how = quit;
          co_await asio::async_read(commands, asio::buffer(&how, 1), asio::use_awaitable);
          if (how == quit) break;
          const grant_report r = co_await wait_for_grant(how, subscribed, polling);
          co_await asio::async_write(reports, asio::buffer(&r, sizeof r), asio::use_awaitable);
        }
      });
    }
    drain(ctx);
    status = 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "F2 waiter process: %s\n", e.what());
  }
  ::_exit(status);
}

struct wakeup_samples {
  std::vector<double> pubsub_us, polling_us;
  int dropped = 0;
};

void hold_and_release(asio::io_context& ctx, const redis::fleet_options& options, int commands_fd,
                      int reports_fd, int samples, wakeup_samples& out) {
  // The descriptors first: whatever throws, closing them lets the child exit.
  asio::posix::stream_descriptor commands(ctx, commands_fd), reports(ctx, reports_fd);
  fleet holder(ctx.get_executor(), server()->where(), 1, options);
  std::mt19937 random(42);
  std::uniform_int_distribution<int> delay_us(2'000, 12'000);
  run_batch(ctx, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 2 * samples; ++i) {
      const char how = i % 2 == 0 ? wait_pubsub : wait_polling;
      auto p = co_await holder.acquire(how == wait_pubsub ? pubsub_key : polling_key);
      co_await asio::async_write(commands, asio::buffer(&how, 1), asio::use_awaitable);
      co_await pause(std::chrono::microseconds(delay_us(random)));
      const std::int64_t released_ns = monotonic_ns();
      p.release();
      grant_report r;
      co_await asio::async_read(reports, asio::buffer(&r, sizeof r), asio::use_awaitable);
      if (r.waited == 0) {
        ++out.dropped;
      } else {
        (how == wait_pubsub ? out.pubsub_us : out.polling_us)
            .push_back(static_cast<double>(r.granted_ns - released_ns) / 1e3);
      }
    }
    co_await asio::async_write(commands, asio::buffer(&quit, 1), asio::use_awaitable);
  });
}

wakeup_samples measure_wakeups(int samples) {
  const auto options = fresh_options("f2");
  int commands[2], reports[2];
  if (::pipe2(commands, O_CLOEXEC) != 0 || ::pipe2(reports, O_CLOEXEC) != 0) {
    throw std::runtime_error("F2: cannot create pipes");
  }
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("F2: cannot fork");
  if (child == 0) {
    ::close(commands[1]);
    ::close(reports[0]);
    run_waiters(options, commands[0], reports[1]);
  }
  ::close(commands[0]);
  ::close(reports[1]);
  wakeup_samples out;
  std::exception_ptr failure;
  try {
    asio::io_context ctx;
    hold_and_release(ctx, options, commands[1], reports[0], samples, out);
    drain(ctx);
  } catch (...) {
    failure = std::current_exception();
  }
  int status = 0;
  ::waitpid(child, &status, 0);  // the pipes are closed: the child ends
  if (failure) std::rethrow_exception(failure);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("F2: the waiter process failed");
  }
  return out;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto at = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(at, v.size() - 1)];
}

void f2_release_to_waiter(benchmark::State& state) {
  const int samples = scaled(200);
  for (auto _ : state) {
    const auto start = steady::now();
    const wakeup_samples s = measure_wakeups(samples);
    state.SetIterationTime(seconds_since(start));
    state.counters["pubsub_p50_us"] = percentile(s.pubsub_us, 0.5);
    state.counters["pubsub_p99_us"] = percentile(s.pubsub_us, 0.99);
    state.counters["polling_p50_us"] = percentile(s.polling_us, 0.5);
    state.counters["polling_p99_us"] = percentile(s.polling_us, 0.99);
    state.counters["p50_ratio"] = percentile(s.polling_us, 0.5) / percentile(s.pubsub_us, 0.5);
    state.counters["samples"] = static_cast<double>(s.pubsub_us.size() + s.polling_us.size());
    state.counters["dropped"] = s.dropped;
  }
}

// ---------------------------------------------------------------------------
// F3: Redis commands per granted permit. 64 coroutines loop on 2 hot keys
// (limit 2): acquire, hold 1 ms, release, until the batch's time is up
// (an acquire already waiting then still completes and counts). The
// coroutines are spread over `semaphores` fleet_semaphores, each with its
// own connections, like as many processes:
// - 1 x 64: one process; its local stage lets 2 per key reach Redis;
// - 4 x 16: four processes competing, each with its stage;
// - 64 x 1: no stage in front of Redis: every waiter is a Redis client,
//   woken by every release message of its key.
// Redis counts the commands (INFO commandstats, before and after, on a
// connection of its own): those the clients sent (EVALSHA, SUBSCRIBE, ...),
// and all, including those the scripts ran.
// ---------------------------------------------------------------------------
struct command_counts {
  double sent = 0, evalsha = 0, subscriptions = 0, publish = 0, all = 0;
};

command_counts counts_between(const std::map<std::string, command_stat>& before,
                              const std::map<std::string, command_stat>& after) {
  // What a client sends; every other command ran inside a script.
  static const std::vector<std::string> sent_by_clients{
      "evalsha", "eval", "script|load", "subscribe", "unsubscribe", "ping", "auth", "select", "hello"};
  command_counts c;
  for (const auto& [name, stat] : after) {
    if (name == "info") continue;  // ours
    const auto it = before.find(name);
    const double delta = static_cast<double>(stat.calls - (it == before.end() ? 0 : it->second.calls));
    c.all += delta;
    if (std::find(sent_by_clients.begin(), sent_by_clients.end(), name) != sent_by_clients.end()) c.sent += delta;
    if (name == "evalsha" || name == "eval") c.evalsha += delta;
    if (name == "subscribe" || name == "unsubscribe") c.subscriptions += delta;
    if (name == "publish") c.publish += delta;
  }
  return c;
}

struct contention_result {
  std::uint64_t granted = 0;
  double seconds = 0;
  command_counts commands;
};

contention_result contend(int semaphores, steady::duration length) {
  constexpr int coroutines = 64;
  const auto options = fresh_options("f3");
  contention_result out;
  asio::io_context ctx;
  {
    std::vector<std::unique_ptr<fleet>> sems;
    for (int s = 0; s < semaphores; ++s) {
      sems.push_back(std::make_unique<fleet>(ctx.get_executor(), server()->where(), 2, options));
    }
    run_batch(ctx, [&]() -> asio::awaitable<void> {
      // Connected, scripts loaded and the last warm-up release answered
      // before the count starts.
      for (auto& sem : sems) {
        { auto warm = co_await sem->acquire("warm-up"); }
        co_await replies_reach(*sem, sem->stats().round_trips + 1);
      }
      const auto before = command_stats();
      const auto start = steady::now(), until = start + length;
      co_await all_of(coroutines, [&](int c) -> asio::awaitable<void> {
        fleet& sem = *sems[static_cast<std::size_t>(c % semaphores)];
        const std::string key = c % 2 == 0 ? "hot-0" : "hot-1";
        while (steady::now() < until) {
          auto p = co_await sem.acquire(key);
          ++out.granted;
          co_await pause(1ms);
        }
      });
      out.seconds = seconds_since(start);
      co_await pause(50ms);  // the last releases and unsubscriptions reach Redis
      out.commands = counts_between(before, command_stats());
    });
  }
  drain(ctx);
  return out;
}

void f3_commands_per_permit(benchmark::State& state, int semaphores) {
  const auto length = std::chrono::milliseconds(scaled(1'000));
  for (auto _ : state) {
    const contention_result r = contend(semaphores, length);
    state.SetIterationTime(r.seconds);
    const double granted = static_cast<double>(std::max<std::uint64_t>(r.granted, 1));
    state.counters["permits_per_s"] = static_cast<double>(r.granted) / r.seconds;
    state.counters["sent_per_permit"] = r.commands.sent / granted;
    state.counters["evalsha_per_permit"] = r.commands.evalsha / granted;
    state.counters["sub_unsub_per_permit"] = r.commands.subscriptions / granted;
    state.counters["publish_per_permit"] = r.commands.publish / granted;
    state.counters["all_per_permit"] = r.commands.all / granted;
  }
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------
// A failed batch (Redis gone, the waiter process dead) is reported, not fatal.
void add_fleet(const std::string& name, std::function<void(benchmark::State&)> fn) {
  add(name, [fn = std::move(fn)](benchmark::State& state) {
    try {
      fn(state);
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
    }
  })->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

}  // namespace

void register_benchmarks() {
  try {
    server() = std::make_unique<redis::test::redis_server>();
  } catch (const std::exception& e) {
    const std::string why = std::string("no redis-server: ") + e.what();
    add_fleet("F.redis/unavailable", [why](benchmark::State& state) {
      for (auto _ : state) state.SkipWithError(why.c_str());
    });
    return;
  }
  add_fleet("F1.round_trips/one_connection", f1_round_trips);
  add_fleet("F2.release_to_waiter/other_process", f2_release_to_waiter);
  add_fleet("F3.commands_per_permit/stage_1x64", [](benchmark::State& s) { f3_commands_per_permit(s, 1); });
  add_fleet("F3.commands_per_permit/stage_4x16", [](benchmark::State& s) { f3_commands_per_permit(s, 4); });
  add_fleet("F3.commands_per_permit/no_stage_64x1", [](benchmark::State& s) { f3_commands_per_permit(s, 64); });
}

}  // namespace bench
