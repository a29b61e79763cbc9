// W8: timed acquires (acquire_for), keysem against the mutex baseline, whose
// timed path gives an acquire that has to wait a steady_timer of its own
// (benchmarks/baselines/mutex_keyed_semaphore.hpp). docs/benchmarks.md,
// "Admission control and deadlines", says what each measures.
//
// W8a: a timed acquire granted at once (permits free, nobody waiting): does
//      the deadline cost anything when it is never needed? The same
//      coroutine loop as W2, with `acquire_for(key, 1h, token)` and, in the
//      same run, plain `acquire(key, token)` for the ratio.
// W8b: 100,000 acquires queued on one held key (limit 1), each with a 1 h
//      deadline, then granted in turn; the same without deadlines for the
//      ratio. Time, allocations and heap bytes per waiter.
//
// Every io_context here has its reactor started before the semaphore is
// built (see with_reactor), as a server's has: keysem's constructor creates
// the context's timer service, which starts the reactor, and from then on
// every pass of run() through the handler queue polls it (an epoll_wait),
// about 140 ns per post round trip on the machine of docs/benchmarks.md. The
// baseline starts it only with its first timer. Without this, keysem would
// pay a cost the baseline does not, in W8a, and the untimed W8b baseline too.
#include "common/contract_check.hpp"
#include "common/harness.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace bench {
namespace {

using namespace std::chrono_literals;

// Starts ctx's reactor, as any socket or timer of a server does; kept for
// the lifetime of the benchmark's context.
struct with_reactor {
  explicit with_reactor(asio::io_context& ctx) : timer(ctx) {}
  asio::steady_timer timer;
};

// The two contenders that have a timed acquire.
template <class F>
void for_each_timed_impl(F&& f) {
  f.template operator()<keysem_sem>();
  f.template operator()<mutex_sem>();
}

// ---------------------------------------------------------------------------
// The timed contract both contenders must keep before anything is timed: a
// timed acquire granted at once gets its permit; a waiting one is granted
// before its deadline, or completes with timed_out, leaves the queue (the
// next waiter is granted) and leaves no armed timer behind (run() returns).
// ---------------------------------------------------------------------------
template <class Sem>
void check_deadline_contract() {
  const char* const impl = impl_name<Sem>();
  auto expect = [impl](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "deadline contract check failed for %s: %s\n", impl, what);
      std::exit(2);
    }
  };
  using permit = typename Sem::permit;
  asio::io_context ctx;
  {
    Sem sem(ctx, 1);
    const std::string key = "deadline-contract";
    boost::system::error_code ec_now, ec_late, ec_short, ec_after;
    permit now, late, after;
    sem.acquire_for(key, 1h, [&](boost::system::error_code ec, permit p) {
      ec_now = ec;
      now = std::move(p);
    });
    ctx.poll();
    ctx.restart();
    expect(!ec_now && now, "a timed acquire on a free key is granted at once");
    // Queued: `late` (1 h) is granted by a release; `short` times out; `after`
    // (untimed, behind `short`) is granted once `short` has left and `late`
    // is released.
    sem.acquire_for(key, 1h, [&](boost::system::error_code ec, permit p) {
      ec_late = ec;
      late = std::move(p);
    });
    bool short_done = false;
    sem.acquire_for(key, 5ms, [&](boost::system::error_code ec, permit p) {
      ec_short = ec;
      short_done = true;
      expect(!p, "a timed-out acquire carries no permit");
    });
    sem.acquire(key, [&](boost::system::error_code ec, permit p) {
      ec_after = ec;
      after = std::move(p);
    });
    ctx.poll();
    ctx.restart();
    expect(!late && !short_done, "waiters wait while the key is held");
    now = permit();  // grants `late`
    ctx.poll();
    ctx.restart();
    expect(!ec_late && late, "a release grants a timed waiter before its deadline");
    // `short` times out while `late` holds the key.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!short_done && std::chrono::steady_clock::now() < give_up) {
      ctx.run_one_for(10ms);
    }
    ctx.restart();
    expect(short_done && ec_short == asio::error::timed_out, "an expired waiter completes with timed_out");
    expect(!after, "the untimed waiter behind it still waits for the holder");
    late = permit();  // grants `after`
    ctx.poll();
    ctx.restart();
    expect(!ec_after && after, "a timed-out waiter leaves the queue");
    after = permit();
    expect(sem.key_count() == 0, "an idle key is reclaimed");
  }
  // Nothing may keep run() going: no timer may stay armed for the 1 h deadline.
  const auto start = std::chrono::steady_clock::now();
  ctx.run();
  expect(std::chrono::steady_clock::now() - start < 5s, "no armed timer outlives the timed acquires");
}

// ---------------------------------------------------------------------------
// W8a: a timed acquire granted at once, against plain acquire, in a coroutine
// (as W2): with no token (keysem's awaitable, which takes free permits
// without suspending; the baseline's default, deferred) and with
// asio::deferred passed explicitly (both complete through a post).
// ---------------------------------------------------------------------------
struct no_token {};

template <bool timed, class Token, class Sem>
auto acquire_once(Sem& sem, const std::string& key) {
  if constexpr (timed) {
    if constexpr (std::is_same_v<Token, no_token>) {
      return sem.acquire_for(key, 1h);
    } else {
      return sem.acquire_for(key, 1h, Token());
    }
  } else {
    if constexpr (std::is_same_v<Token, no_token>) {
      return sem.acquire(key);
    } else {
      return sem.acquire(key, Token());
    }
  }
}

template <class Sem, class Token, bool timed>
void w8_granted_at_once(benchmark::State& state) {
  asio::io_context ctx;
  with_reactor reactor(ctx);
  Sem sem(ctx, 4);
  const std::string key = key_for(8);
  auto keep = sem.try_acquire(key);  // the key stays alive, as in W2
  std::uint64_t allocated = 0;
  run_on(ctx, [&]() -> asio::awaitable<void> {
    { auto warm = co_await acquire_once<timed, Token>(sem, key); }  // fills asio's per-thread caches
    const std::uint64_t before = allocations();
    for (auto _ : state) {
      auto p = co_await acquire_once<timed, Token>(sem, key);
      benchmark::DoNotOptimize(p);
    }
    allocated = allocations() - before;
  });
  report_allocations(state, allocated);
  report_ops(state, 1);
}

// ---------------------------------------------------------------------------
// W8b: 100,000 callback acquires queued on one held key (limit 1), each with
// a 1 h deadline (timed) or none, then granted in turn: each handler drops
// its permit, which grants the next. Reported per waiter: the time (whole
// iteration, and the enqueue and grant phases apart, thread CPU time), heap
// allocations on this thread, and heap bytes in use once all are queued
// (glibc mallinfo2: arena bytes in use + mmapped blocks; the keys fit
// std::string's small buffer). No deadline passes: a timed-out waiter, or a
// run() that does not return at once after the last grant (a timer left
// armed for the 1 h deadline), fails the benchmark.
// ---------------------------------------------------------------------------
std::int64_t heap_in_use() {
  const struct mallinfo2 info = ::mallinfo2();
  return static_cast<std::int64_t>(info.uordblks + info.hblkhd);
}

double thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

template <class Sem, bool timed>
void w8_waiters(benchmark::State& state) {
  const std::size_t waiters = settings().smoke ? 2'000 : 100'000;
  asio::io_context ctx;
  with_reactor reactor(ctx);
  Sem sem(ctx, 1);
  const std::string key = key_for(8);
  std::size_t granted = 0;
  std::size_t failed = 0;
  double waiter_bytes = 0;
  double enqueue_ns = 0;
  double grant_ns = 0;
  double wall_after_last_grant_ns = 0;
  std::uint64_t allocated = 0;
  auto handler = [&granted, &failed](boost::system::error_code ec, typename Sem::permit) {
    ++(ec ? failed : granted);
  };
  for (auto _ : state) {
    auto first = sem.try_acquire(key);
    const std::int64_t bytes_before = heap_in_use();
    const std::uint64_t allocs_before = allocations();
    const double t0 = thread_cpu_ns();
    for (std::size_t i = 0; i < waiters; ++i) {
      if constexpr (timed) {
        sem.acquire_for(key, 1h, handler);
      } else {
        sem.acquire(key, handler);
      }
    }
    ctx.poll();  // lets any strand-side job queue its waiter
    const double t1 = thread_cpu_ns();
    state.PauseTiming();
    waiter_bytes += static_cast<double>(heap_in_use() - bytes_before);
    state.ResumeTiming();
    const double t2 = thread_cpu_ns();
    first.reset();  // each handler drops its permit, which grants the next
    ctx.poll();
    const double t3 = thread_cpu_ns();
    allocated += allocations() - allocs_before;
    enqueue_ns += t1 - t0;
    grant_ns += t3 - t2;
    // Everything is granted: run() must return at once, with no timer armed.
    state.PauseTiming();
    const auto wall0 = std::chrono::steady_clock::now();
    ctx.run_for(2s);
    wall_after_last_grant_ns += std::chrono::duration<double, std::nano>(
        std::chrono::steady_clock::now() - wall0).count();
    ctx.restart();
    state.ResumeTiming();
  }
  if (granted != state.iterations() * waiters || failed != 0) {
    state.SkipWithError("not every waiter was granted");
  }
  if (wall_after_last_grant_ns / static_cast<double>(state.iterations()) > 1e9) {
    state.SkipWithError("run() kept going after the last grant: a timer left armed");
  }
  const double total = static_cast<double>(state.iterations()) * static_cast<double>(waiters);
  state.counters["bytes_per_waiter"] = waiter_bytes / total;
  state.counters["allocs_per_waiter"] = static_cast<double>(allocated) / total;
  state.counters["enqueue_ns_per_waiter"] = enqueue_ns / total;
  state.counters["grant_ns_per_waiter"] = grant_ns / total;
  report_ops(state, static_cast<double>(waiters));
}

}  // namespace

void register_benchmarks() {
  check_contracts();
  for_each_timed_impl([]<class Sem>() { check_deadline_contract<Sem>(); });
  for_each_timed_impl([]<class Sem>() {
    const std::string impl = impl_name<Sem>();
    add("W8a.acquire_no_token/" + impl, w8_granted_at_once<Sem, no_token, false>);
    add("W8a.acquire_for_no_token/" + impl, w8_granted_at_once<Sem, no_token, true>);
    add("W8a.acquire_deferred/" + impl, w8_granted_at_once<Sem, asio::deferred_t, false>);
    add("W8a.acquire_for_deferred/" + impl, w8_granted_at_once<Sem, asio::deferred_t, true>);
  });
  for_each_timed_impl([]<class Sem>() {
    const std::string impl = impl_name<Sem>();
    add("W8b.waiters/" + impl, w8_waiters<Sem, false>)->Iterations(1);
    add("W8b.timed_waiters/" + impl, w8_waiters<Sem, true>)->Iterations(1);
  });
}

}  // namespace bench
