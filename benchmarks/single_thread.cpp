// Single-threaded workloads W1, W1b, W2, W3 and W6 (docs/benchmarks.md says
// what each measures). Every workload runs keysem and both baselines in this
// program, in the same run.
#include "common/contract_check.hpp"
#include "common/harness.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <malloc.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bench {
namespace {

// ---------------------------------------------------------------------------
// W1: try_acquire + release on a key that stays alive (another permit holds
// it), by std::string and by std::string_view.
// W1b: the same on a key whose state is created and reclaimed every time.
// ---------------------------------------------------------------------------
template <class Sem, bool by_view, bool keep_alive>
void w1_try_release(benchmark::State& state) {
  asio::io_context ctx;
  Sem sem(ctx, 4);
  const std::string key = key_for(1);
  const std::string_view view = key;
  std::optional<typename Sem::permit> keep;
  if constexpr (keep_alive) {
    keep = sem.try_acquire(key);
  }
  const std::uint64_t before = allocations();
  for (auto _ : state) {
    auto p = by_view ? sem.try_acquire(view) : sem.try_acquire(key);
    if (!p) [[unlikely]] {
      state.SkipWithError("try_acquire failed");
      break;
    }
    benchmark::DoNotOptimize(p);
  }
  report_allocations(state, allocations() - before);
  report_ops(state, 1);
  if (sem.key_count() != (keep_alive ? 1u : 0u)) {
    state.SkipWithError("unexpected key count after the run");
  }
}

// ---------------------------------------------------------------------------
// W2: co_await acquire + release in one coroutine while permits are free
// (the immediate path):
// - with no token, as users write it. keysem then returns its own awaitable,
//   which takes free permits without suspending; the baselines default to
//   asio::deferred, which completes through a post like any asio operation;
// - with asio::deferred and with asio::use_awaitable passed explicitly: the
//   same token for all three, through asio::async_initiate;
// and the bare post round trip with each token, the floor of any path that
// completes through the event loop.
// ---------------------------------------------------------------------------
struct no_token {};

template <class Token, class Sem>
auto acquire_with(Sem& sem, const std::string& key) {
  if constexpr (std::is_same_v<Token, no_token>) {
    return sem.acquire(key);
  } else {
    return sem.acquire(key, Token());
  }
}

template <class Sem, class Token>
void w2_acquire(benchmark::State& state) {
  asio::io_context ctx;
  Sem sem(ctx, 4);
  const std::string key = key_for(2);
  auto keep = sem.try_acquire(key);
  std::uint64_t allocated = 0;
  run_on(ctx, [&]() -> asio::awaitable<void> {
    { auto warm = co_await acquire_with<Token>(sem, key); }  // fills asio's per-thread caches
    const std::uint64_t before = allocations();
    for (auto _ : state) {
      auto p = co_await acquire_with<Token>(sem, key);
      benchmark::DoNotOptimize(p);
    }
    allocated = allocations() - before;
  });
  report_allocations(state, allocated);
  report_ops(state, 1);
}

template <class Token>
void w2_post(benchmark::State& state) {
  asio::io_context ctx;
  std::uint64_t allocated = 0;
  run_on(ctx, [&]() -> asio::awaitable<void> {
    co_await asio::post(Token());
    const std::uint64_t before = allocations();
    for (auto _ : state) {
      co_await asio::post(Token());
    }
    allocated = allocations() - before;
  });
  report_allocations(state, allocated);
  report_ops(state, 1);
}

// ---------------------------------------------------------------------------
// W1/W2 with semaphore_options::total_limit set, beside the same workloads
// without it (keysem only: the baselines have no total). The total is never
// reached: this is the price of the second level on the immediate path.
// ---------------------------------------------------------------------------
keysem::semaphore_options total_options(bool capped) {
  keysem::semaphore_options options;
  if (capped) {
    options.total_limit = 1'000'000;
  }
  return options;
}

template <bool capped>
void w1_total(benchmark::State& state) {
  asio::io_context ctx;
  keysem::keyed_semaphore sem(ctx, 4, total_options(capped));
  const std::string key = key_for(1);
  auto keep = sem.try_acquire(key);
  for (auto _ : state) {
    auto p = sem.try_acquire(key);
    if (!p) [[unlikely]] {
      state.SkipWithError("try_acquire failed");
      break;
    }
    benchmark::DoNotOptimize(p);
  }
  report_ops(state, 1);
}

template <bool capped>
void w2_total(benchmark::State& state) {
  asio::io_context ctx;
  keysem::keyed_semaphore sem(ctx, 4, total_options(capped));
  const std::string key = key_for(2);
  auto keep = sem.try_acquire(key);
  run_on(ctx, [&]() -> asio::awaitable<void> {
    { auto warm = co_await sem.acquire(key); }
    for (auto _ : state) {
      auto p = co_await sem.acquire(key);
      benchmark::DoNotOptimize(p);
    }
  });
  report_ops(state, 1);
}

// ---------------------------------------------------------------------------
// W3: contended hand-off on one thread. 8 coroutines share one key with a
// limit of 1; each acquires, yields once (co_await post), releases.
// ---------------------------------------------------------------------------
template <class Sem>
void w3_handoff(benchmark::State& state) {
  constexpr int tasks = 8;
  const int rounds = settings().smoke ? 50 : 2000;
  asio::io_context ctx;
  Sem sem(ctx, 1);
  const std::string key = key_for(3);
  std::uint64_t granted = 0;
  for (auto _ : state) {
    for (int t = 0; t < tasks; ++t) {
      asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
        for (int i = 0; i < rounds; ++i) {
          auto p = co_await sem.acquire(key);
          ++granted;
          co_await asio::post(asio::deferred);
        }
      }, rethrow);
    }
    ctx.run();
    ctx.restart();
  }
  if (granted != static_cast<std::uint64_t>(state.iterations()) * tasks * rounds) {
    state.SkipWithError("lost hand-offs");
  }
  report_ops(state, tasks * rounds);
}


// ---------------------------------------------------------------------------
// W6: one million distinct keys.
// - cycle_idle_keys: try_acquire + release cycling over them; every key's
//   state is created and reclaimed each time (memory follows live keys).
// - cycle_live_keys: the same while every key is held once (limit 2), so
//   that each lookup probes a table of a million live keys.
// - hold_all: acquire one permit on every key, keep them all, release them
//   all; bytes per held key and bytes still in use after the last release.
// - waiters: 100,000 callback acquires queued on one held key; bytes per
//   waiter, then every waiter granted in turn.
// Memory is read from glibc's mallinfo2(): arena bytes in use plus mmapped
// blocks. The keys fit std::string's small buffer, so a key owns no heap
// storage of its own: every byte counted is the semaphore's.
// ---------------------------------------------------------------------------
std::size_t many_keys_count() { return settings().smoke ? 20'000 : 1'000'000; }

const std::vector<std::string>& many_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    k.reserve(many_keys_count());
    for (std::size_t i = 0; i < many_keys_count(); ++i) {
      k.push_back(key_for(i));
    }
    return k;
  }();
  return keys;
}

std::int64_t heap_in_use() {
  const struct mallinfo2 info = ::mallinfo2();
  return static_cast<std::int64_t>(info.uordblks + info.hblkhd);
}

template <class Sem, bool live>
void w6_cycle(benchmark::State& state) {
  const auto& keys = many_keys();
  asio::io_context ctx;
  Sem sem(ctx, 2);
  std::vector<typename Sem::permit> held;
  if constexpr (live) {
    held.reserve(keys.size());
    for (const auto& key : keys) {
      held.push_back(std::move(*sem.try_acquire(key)));
    }
  }
  std::size_t i = 0;
  for (auto _ : state) {
    auto p = sem.try_acquire(keys[i]);
    if (!p) [[unlikely]] {
      state.SkipWithError("try_acquire failed");
      break;
    }
    benchmark::DoNotOptimize(p);
    if (++i == keys.size()) {
      i = 0;
    }
  }
  report_ops(state, 1);
}

template <class Sem>
void w6_hold_all(benchmark::State& state) {
  const auto& keys = many_keys();
  asio::io_context ctx;
  std::vector<typename Sem::permit> held;
  held.reserve(keys.size());
  double held_bytes = 0;
  double retained_bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto sem = std::make_unique<Sem>(ctx, 1);
    const std::int64_t before = heap_in_use();
    state.ResumeTiming();
    for (const auto& key : keys) {
      held.push_back(std::move(*sem->try_acquire(key)));
    }
    state.PauseTiming();
    held_bytes += static_cast<double>(heap_in_use() - before);
    state.ResumeTiming();
    held.clear();
    state.PauseTiming();
    retained_bytes += static_cast<double>(heap_in_use() - before);
    if (sem->key_count() != 0) {
      state.SkipWithError("keys left after the last release");
    }
    sem.reset();
    state.ResumeTiming();
  }
  const double per_key = static_cast<double>(state.iterations()) * static_cast<double>(keys.size());
  state.counters["bytes_per_held_key"] = held_bytes / per_key;
  state.counters["bytes_retained_per_key"] = retained_bytes / per_key;
  state.counters["sizeof_permit"] = sizeof(typename Sem::permit);
  report_ops(state, static_cast<double>(keys.size()));
}

template <class Sem>
void w6_waiters(benchmark::State& state) {
  const std::size_t waiters = settings().smoke ? 2'000 : 100'000;
  asio::io_context ctx;
  Sem sem(ctx, 1);
  const std::string key = key_for(6);
  std::size_t granted = 0;
  double waiter_bytes = 0;
  for (auto _ : state) {
    auto first = sem.try_acquire(key);
    const std::int64_t before = heap_in_use();
    for (std::size_t i = 0; i < waiters; ++i) {
      sem.acquire(key, [&granted](boost::system::error_code ec, typename Sem::permit) {
        granted += ec ? 0 : 1;
      });
    }
    ctx.poll();  // lets any strand-side job queue its waiter
    state.PauseTiming();
    waiter_bytes += static_cast<double>(heap_in_use() - before);
    state.ResumeTiming();
    first.reset();  // each handler drops its permit, which grants the next
    ctx.run();
    ctx.restart();
  }
  if (granted != state.iterations() * waiters) {
    state.SkipWithError("not every waiter was granted");
  }
  const double total = static_cast<double>(state.iterations()) * static_cast<double>(waiters);
  state.counters["bytes_per_waiter"] = waiter_bytes / total;
  report_ops(state, static_cast<double>(waiters));
}

}  // namespace

void register_benchmarks() {
  check_contracts();
  for_each_impl([]<class Sem>() {
    const std::string impl = impl_name<Sem>();
    add("W1.try_release/" + impl, w1_try_release<Sem, false, true>);
    add("W1.try_release_by_view/" + impl, w1_try_release<Sem, true, true>);
  });
  for_each_impl([]<class Sem>() {
    const std::string impl = impl_name<Sem>();
    add("W1b.fresh_key/" + impl, w1_try_release<Sem, false, false>);
    add("W1b.fresh_key_by_view/" + impl, w1_try_release<Sem, true, false>);
  });
  add("W2.post_round_trip/deferred", w2_post<asio::deferred_t>);
  add("W2.post_round_trip/use_awaitable", w2_post<asio::use_awaitable_t<>>);
  for_each_impl([]<class Sem>() {
    const std::string impl = impl_name<Sem>();
    add("W2.acquire_no_token/" + impl, w2_acquire<Sem, no_token>);
    add("W2.acquire_deferred/" + impl, w2_acquire<Sem, asio::deferred_t>);
    add("W2.acquire_use_awaitable/" + impl, w2_acquire<Sem, asio::use_awaitable_t<>>);
  });
  add("W1.total_limit_unset/keysem", w1_total<false>);
  add("W1.total_limit_set/keysem", w1_total<true>);
  add("W2.total_limit_unset/keysem", w2_total<false>);
  add("W2.total_limit_set/keysem", w2_total<true>);
  for_each_impl([]<class Sem>() { add("W3.handoff/" + std::string(impl_name<Sem>()), w3_handoff<Sem>); });
  for_each_impl([]<class Sem>() {
    const std::string impl = impl_name<Sem>();
    // Fixed iteration counts: every key is visited equally often, and the
    // million-key setup runs once instead of once per calibration run.
    const auto cycles = static_cast<benchmark::IterationCount>(many_keys_count());
    add("W6.cycle_idle_keys/" + impl, w6_cycle<Sem, false>)->Iterations(cycles);
    add("W6.cycle_live_keys/" + impl, w6_cycle<Sem, true>)->Iterations(cycles);
    add("W6.hold_all/" + impl, w6_hold_all<Sem>)->Iterations(1);
    add("W6.waiters/" + impl, w6_waiters<Sem>)->Iterations(1);
  });
}

}  // namespace bench
