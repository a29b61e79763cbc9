// Not a benchmark program of the build (benchmarks/tools/ is not globbed): a
// diagnostic for docs/benchmarks.md, "Admission control and deadlines". W2
// (no token and deferred), W3 and a bare post round trip, each with and
// without the io_context's reactor started (a steady_timer constructed on
// the context first), compiled against two library trees to tell the
// library's own cost from the reactor's:
//   for t in /tmp/keysem-0.1 /tmp/keysem-head; do
//     g++ -std=c++20 -O2 -DNDEBUG -I$t/include -Ibenchmarks benchmarks/tools/reactor_ab.cpp \
//       $t/build/bench/libkeysem.a -lbenchmark -lxxhash -pthread -o build/reactor-$(basename $t)
//   done
#include "common/harness.hpp"
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <optional>
namespace bench {
namespace {
template <class Sem, bool reactor>
void w2(benchmark::State& state) {
  asio::io_context ctx;
  std::optional<asio::steady_timer> t;
  if (reactor) t.emplace(ctx);
  Sem sem(ctx, 4);
  const std::string key = key_for(2);
  auto keep = sem.try_acquire(key);
  run_on(ctx, [&]() -> asio::awaitable<void> {
    { auto warm = co_await sem.acquire(key, asio::deferred); }
    for (auto _ : state) {
      auto p = co_await sem.acquire(key, asio::deferred);
      benchmark::DoNotOptimize(p);
    }
  });
  report_ops(state, 1);
}
template <class Sem, bool reactor>
void w2nt(benchmark::State& state) {
  asio::io_context ctx;
  std::optional<asio::steady_timer> t;
  if (reactor) t.emplace(ctx);
  Sem sem(ctx, 4);
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
template <bool reactor>
void post_rt(benchmark::State& state) {
  asio::io_context ctx;
  std::optional<asio::steady_timer> t;
  if (reactor) t.emplace(ctx);
  run_on(ctx, [&]() -> asio::awaitable<void> {
    co_await asio::post(asio::deferred);
    for (auto _ : state) co_await asio::post(asio::deferred);
  });
  report_ops(state, 1);
}
template <class Sem, bool reactor>
void w3(benchmark::State& state) {
  constexpr int tasks = 8; const int rounds = 2000;
  asio::io_context ctx;
  std::optional<asio::steady_timer> t;
  if (reactor) t.emplace(ctx);
  Sem sem(ctx, 1);
  const std::string key = key_for(3);
  for (auto _ : state) {
    for (int i = 0; i < tasks; ++i)
      asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
        for (int i = 0; i < rounds; ++i) { auto p = co_await sem.acquire(key); co_await asio::post(asio::deferred); }
      }, rethrow);
    ctx.run(); ctx.restart();
  }
  report_ops(state, tasks * rounds);
}
}
void register_benchmarks() {
  add("W2notoken/keysem/no_reactor", w2nt<keysem_sem, false>);
  add("W2notoken/keysem/reactor", w2nt<keysem_sem, true>);
  add("post/no_reactor", post_rt<false>);
  add("post/reactor", post_rt<true>);
  add("W2deferred/keysem/no_reactor", w2<keysem_sem, false>);
  add("W2deferred/keysem/reactor", w2<keysem_sem, true>);
  add("W2deferred/mutex/no_reactor", w2<mutex_sem, false>);
  add("W2deferred/mutex/reactor", w2<mutex_sem, true>);
  add("W3/keysem/no_reactor", w3<keysem_sem, false>);
  add("W3/keysem/reactor", w3<keysem_sem, true>);
  add("W3/mutex/no_reactor", w3<mutex_sem, false>);
  add("W3/mutex/reactor", w3<mutex_sem, true>);
}
}
