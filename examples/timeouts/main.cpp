// timeouts: acquire with a deadline, two ways, and proof that the loser of
// the race leaves nothing behind.
//
// keysem has no timeout parameter on purpose: a deadline is just another
// asynchronous operation racing the acquire, and asio already knows how to
// race operations. Whichever side loses is cancelled; a cancelled acquire
// leaves its key's queue and changes no count, so sem.waiting(key) drops
// back to 0 and a later release goes to the next real waiter.
//
// 1. awaitable operators:  acquire || timer
// 2. experimental::make_parallel_group(...).async_wait(wait_for_one(), ...)
//
// Each is run twice: once against a key held for longer than the deadline
// (the timer wins) and once against a key released before it (the acquire
// wins). The program exits non-zero if any outcome differs from that.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using keysem::keyed_semaphore;

// Waits at most `deadline` for a permit on `key`; std::nullopt on timeout.
//
// In Boost 1.81 both operands of `||` must be awaitables, hence the explicit
// use_awaitable tokens (a deferred operation is not accepted there yet;
// sem.acquire(key) without a token is an awaitable too). Both branches run
// on this coroutine's executor: on a multi-threaded pool, spawn the calling
// coroutine on a strand.
asio::awaitable<std::optional<keyed_semaphore::permit>> acquire_with_operator(
    keyed_semaphore& sem, std::string key, std::chrono::milliseconds deadline) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  // The variant holds the winner's result; the loser was cancelled and has
  // completed (operator|| waits for both) before this line resumes.
  auto winner =
      co_await (sem.acquire(key, asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
  if (winner.index() == 0) {
    co_return std::move(std::get<0>(winner));
  }
  co_return std::nullopt;
}

// The same with a parallel group, which hands back every operation's result
// and the order they finished in, without exceptions.
asio::awaitable<std::optional<keyed_semaphore::permit>> acquire_with_group(
    keyed_semaphore& sem, std::string key, std::chrono::milliseconds deadline) {
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  auto [order, acquire_ec, permit, timer_ec] =
      co_await asio::experimental::make_parallel_group(sem.acquire(key, asio::deferred),
                                                       timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  (void)timer_ec;
  // If the timer finished first but the permit was granted in the same
  // instant, the acquire ignores the cancellation and `permit` holds it
  // anyway. Returning nullopt then drops it here and it is released: a
  // permit is never lost, whoever wins.
  if (order[0] == 0 && !acquire_ec) {
    co_return std::move(permit);
  }
  co_return std::nullopt;
}

using acquire_fn = asio::awaitable<std::optional<keyed_semaphore::permit>> (*)(
    keyed_semaphore&, std::string, std::chrono::milliseconds);

// Keeps `permit` for `hold`, then lets it go.
asio::awaitable<void> release_after(keyed_semaphore::permit permit,
                                    std::chrono::milliseconds hold) {
  asio::steady_timer timer(co_await asio::this_coro::executor, hold);
  co_await timer.async_wait(asio::use_awaitable);
  permit.release();  // what the destructor would do anyway; said out loud
}

// Makes `key` busy for `hold`, then asks for it with a 100 ms deadline (far
// from both holds, so that a slow machine does not change the outcome).
asio::awaitable<bool> scenario(keyed_semaphore& sem, const char* how, acquire_fn acquire,
                               std::string key, std::chrono::milliseconds hold,
                               bool expect_permit) {
  asio::co_spawn(co_await asio::this_coro::executor,
                 release_after(std::move(*sem.try_acquire(key)), hold), asio::detached);

  const auto start = std::chrono::steady_clock::now();
  std::optional<keyed_semaphore::permit> got = co_await acquire(sem, key, 100ms);
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);

  // The point of the example: a timed-out acquire is not still queued.
  const std::size_t waiting = sem.waiting(key);
  std::printf("%-8s  key busy for %3lld ms: %-9s after %3lld ms, waiting(\"%s\") == %zu\n", how,
              static_cast<long long>(hold.count()), got ? "acquired" : "timed out",
              static_cast<long long>(waited.count()), key.c_str(), waiting);
  const bool as_expected = got.has_value() == expect_permit && waiting == 0;
  co_return as_expected;
}

asio::awaitable<bool> run_all(keyed_semaphore& sem) {
  bool ok = true;
  ok &= co_await scenario(sem, "operator", acquire_with_operator, "reports", 400ms, false);
  ok &= co_await scenario(sem, "operator", acquire_with_operator, "invoices", 1ms, true);
  ok &= co_await scenario(sem, "group", acquire_with_group, "exports", 400ms, false);
  ok &= co_await scenario(sem, "group", acquire_with_group, "audits", 1ms, true);
  co_return ok;
}

int main() {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);  // one at a time per key: easy to make it busy

  bool ok = false;
  asio::co_spawn(ctx, run_all(sem), [&ok](const std::exception_ptr& e, bool result) {
    if (e) {
      std::rethrow_exception(e);
    }
    ok = result;
  });
  ctx.run();

  std::printf("live keys after the run: %zu\n", sem.key_count());
  return ok && sem.key_count() == 0 ? 0 : 1;
}
