// Unkeyed workloads U1, U2 and U3: the shapes of W1, W2 and W3
// (single_thread.cpp) without keys. Each runs, in the same run,
// - keysem::async_semaphore;
// - keysem's keyed semaphore on one key (what a user of keysem would
//   otherwise write: the W1/W2/W3 numbers of this run);
// - baselines::mutex_semaphore (std::mutex + an intrusive FIFO of waiters,
//   completions posted);
// - baselines::channel_counting_semaphore (asio's concurrent_channel used as
//   a semaphore).
#include "baselines/channel_counting_semaphore.hpp"
#include "baselines/mutex_semaphore.hpp"
#include "common/harness.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <optional>
#include <string>
#include <type_traits>

namespace bench {
namespace {

// The keyed semaphore seen through the unkeyed interface: every call names
// the same key, looked up by `const std::string&` as in W1/W2/W3.
class keyed_one_key {
 public:
  using permit = keysem_sem::permit;

  keyed_one_key(asio::io_context& ctx, std::size_t permits) : sem_(ctx, permits), key_(key_for(1)) {}

  std::optional<permit> try_acquire(std::size_t n = 1) { return sem_.try_acquire(key_, n); }
  auto acquire() { return sem_.acquire(key_); }
  template <class Token>
  auto acquire(Token&& token) {
    return sem_.acquire(key_, std::forward<Token>(token));
  }

 private:
  keysem_sem sem_;
  std::string key_;
};

using unkeyed_sem = keysem::async_semaphore<>;
using mutex_unkeyed = baselines::mutex_semaphore<>;
using channel_unkeyed = baselines::channel_counting_semaphore<>;

template <class Sem>
constexpr const char* unkeyed_impl_name() {
  if constexpr (std::is_same_v<Sem, unkeyed_sem>) {
    return "async_semaphore";
  } else if constexpr (std::is_same_v<Sem, keyed_one_key>) {
    return "keyed_one_key";
  } else if constexpr (std::is_same_v<Sem, mutex_unkeyed>) {
    return "mutex";
  } else {
    return "channel";
  }
}

template <class F>
void for_each_unkeyed(F&& f) {
  f.template operator()<unkeyed_sem>();
  f.template operator()<keyed_one_key>();
  f.template operator()<mutex_unkeyed>();
  f.template operator()<channel_unkeyed>();
}

// ---------------------------------------------------------------------------
// U1: try_acquire + release while another permit is held (W1's shape).
// ---------------------------------------------------------------------------
template <class Sem>
void u1_try_release(benchmark::State& state) {
  asio::io_context ctx;
  Sem sem(ctx, 4);
  auto keep = sem.try_acquire();
  const std::uint64_t before = allocations();
  for (auto _ : state) {
    auto p = sem.try_acquire();
    if (!p) [[unlikely]] {
      state.SkipWithError("try_acquire failed");
      break;
    }
    benchmark::DoNotOptimize(p);
  }
  report_allocations(state, allocations() - before);
  report_ops(state, 1);
}

// ---------------------------------------------------------------------------
// U2: co_await acquire + release in one coroutine while permits are free
// (W2's shape): with no token, as users write it (keysem's own awaitable,
// which does not suspend; the baselines default to asio::deferred), and with
// asio::deferred passed explicitly to all.
// ---------------------------------------------------------------------------
struct no_token {};

template <class Token, class Sem>
auto acquire_with(Sem& sem) {
  if constexpr (std::is_same_v<Token, no_token>) {
    return sem.acquire();
  } else {
    return sem.acquire(Token());
  }
}

template <class Sem, class Token>
void u2_acquire(benchmark::State& state) {
  asio::io_context ctx;
  Sem sem(ctx, 4);
  auto keep = sem.try_acquire();
  std::uint64_t allocated = 0;
  run_on(ctx, [&]() -> asio::awaitable<void> {
    { auto warm = co_await acquire_with<Token>(sem); }
    const std::uint64_t before = allocations();
    for (auto _ : state) {
      auto p = co_await acquire_with<Token>(sem);
      benchmark::DoNotOptimize(p);
    }
    allocated = allocations() - before;
  });
  report_allocations(state, allocated);
  report_ops(state, 1);
}

// ---------------------------------------------------------------------------
// U3: contended hand-off on one thread (W3's shape): 8 coroutines share 1
// permit; each acquires, yields once (co_await post), releases.
// ---------------------------------------------------------------------------
template <class Sem>
void u3_handoff(benchmark::State& state) {
  constexpr int tasks = 8;
  const int rounds = settings().smoke ? 50 : 2000;
  asio::io_context ctx;
  Sem sem(ctx, 1);
  std::uint64_t granted = 0;
  for (auto _ : state) {
    for (int t = 0; t < tasks; ++t) {
      asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
        for (int i = 0; i < rounds; ++i) {
          auto p = co_await sem.acquire();
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

}  // namespace

void register_benchmarks() {
  for_each_unkeyed([]<class Sem>() {
    add(std::string("U1.try_release/") + unkeyed_impl_name<Sem>(), u1_try_release<Sem>);
  });
  for_each_unkeyed([]<class Sem>() {
    const std::string impl = unkeyed_impl_name<Sem>();
    add("U2.acquire_no_token/" + impl, u2_acquire<Sem, no_token>);
    add("U2.acquire_deferred/" + impl, u2_acquire<Sem, asio::deferred_t>);
  });
  for_each_unkeyed([]<class Sem>() {
    add(std::string("U3.handoff/") + unkeyed_impl_name<Sem>(), u3_handoff<Sem>);
  });
}

}  // namespace bench
