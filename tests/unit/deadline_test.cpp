// acquire_for / acquire_until: deadlines on waiting acquires.
#include "test_support.hpp"

#include <chrono>
#include <future>
#include <tuple>

namespace keysem::test {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Runs handlers until pred holds; timers fire on their own, so this waits for
// events (never sleeps), bounded by a generous cap.
template <class Pred>
void run_until(asio::io_context& ctx, Pred pred) {
  const auto give_up = steady::now() + 10s;
  while (!pred() && steady::now() < give_up) {
    ctx.restart();
    ctx.run_one_for(100ms);
  }
  ctx.restart();
}

std::shared_ptr<outcome> start_for(keyed_semaphore& sem, std::string key, std::size_t n,
                                   steady::duration timeout) {
  auto result = std::make_shared<outcome>();
  sem.acquire_for(std::move(key), n, timeout, record(result));
  return result;
}

}  // namespace

TEST_CASE("deadline: free permits are granted whatever the timeout") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto result = start_for(sem, "k", 1, 0ms);
  auto past = std::make_shared<outcome>();
  sem.acquire_until("other", steady::now() - 1h, record(past));
  drain(ctx);
  CHECK(result->succeeded());
  CHECK(past->succeeded());
  CHECK(sem.stats().granted_immediately == 2);
}

TEST_CASE("deadline: a waiter whose deadline passes completes with timed_out and leaves no trace") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = start_for(sem, "k", 1, 1ms);
  run_until(ctx, [&] { return result->done(); });
  REQUIRE(result->done());
  CHECK(*result->ec == asio::error::timed_out);
  CHECK_FALSE(result->granted);
  CHECK(sem.waiting("k") == 0);
  held.reset();
  CHECK(sem.key_count() == 0);
  CHECK(sem.stats().timed_out == 1);
  ctx.run();  // nothing armed is left: returns at once
  CHECK(ctx.stopped());
}

TEST_CASE("deadline: a deadline already past when the acquire waits fires on the next poll") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = std::make_shared<outcome>();
  sem.acquire_until("k", steady::now() - 1s, record(result));
  run_until(ctx, [&] { return result->done(); });
  CHECK(*result->ec == asio::error::timed_out);
}

TEST_CASE("deadline: a grant before the deadline wins and disarms the timer") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = start_for(sem, "k", 1, 1h);
  drain(ctx);
  CHECK_FALSE(result->done());
  held.reset();
  drain(ctx);
  CHECK(result->succeeded());
  result->granted.release();
  // An hour-long wait still armed would keep run() going.
  ctx.run_for(5s);
  CHECK(ctx.stopped());
  CHECK(sem.stats().granted_after_wait == 1);
  CHECK(sem.stats().timed_out == 0);
}

TEST_CASE("deadline: a timed-out head no longer holds back the waiters behind it") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 3);
  auto held = sem.try_acquire("k", 2);
  auto big = start_for(sem, "k", 1, 1h);
  // Waits for all three permits. Its deadline must not pass before the two
  // checks below that it still holds the small one back: under TSan on a
  // busy machine 1 ms did.
  auto head = start_for(sem, "k", 3, 200ms);
  // big was granted at once (1 free); now a small one waits behind the head.
  auto small = std::make_shared<outcome>();
  sem.acquire("k", 1, record(small));
  drain(ctx);
  CHECK(big->succeeded());
  CHECK_FALSE(small->done());
  big->granted.release();  // 1 free: the head (3) still blocks the small one
  drain(ctx);
  CHECK_FALSE(small->done());
  run_until(ctx, [&] { return head->done() && small->done(); });
  CHECK(*head->ec == asio::error::timed_out);
  CHECK(small->succeeded());
}

TEST_CASE("deadline: cancellation before the deadline completes with operation_aborted") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  auto result = std::make_shared<outcome>();
  sem.acquire_for("k", 1h, asio::bind_cancellation_slot(signal.slot(), record(result)));
  drain(ctx);
  signal.emit(asio::cancellation_type::terminal);
  drain(ctx);
  CHECK(*result->ec == asio::error::operation_aborted);
  held.reset();
  ctx.run_for(5s);
  CHECK(ctx.stopped());  // the timer went with the op
  CHECK(sem.stats().cancelled == 1);
}

TEST_CASE("deadline: many timed waiters on one key are granted in order or time out, nothing left") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, semaphore_options{1});
  auto held = sem.try_acquire("k");
  std::vector<std::shared_ptr<outcome>> timed;
  for (int i = 0; i < 50; ++i) {
    timed.push_back(start_for(sem, "k", 1, i % 2 == 0 ? 1ms : 1h));
  }
  run_until(ctx, [&] { return timed[48]->done(); });  // every 1 ms one has expired
  held.reset();
  for (auto& r : timed) {
    run_until(ctx, [&] { return r->done(); });
    r->granted.release();
  }
  int timed_out = 0;
  int granted = 0;
  for (std::size_t i = 0; i < timed.size(); ++i) {
    REQUIRE(timed[i]->done());
    if (timed[i]->succeeded()) {
      ++granted;
      CHECK(i % 2 == 1);
    } else {
      ++timed_out;
      CHECK(*timed[i]->ec == asio::error::timed_out);
    }
  }
  CHECK(timed_out == 25);
  CHECK(granted == 25);
  CHECK(sem.key_count() == 0);
  ctx.run_for(5s);
  CHECK(ctx.stopped());
}

TEST_CASE("deadline: every token style") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  int coroutine_result = 0;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await sem.acquire_for("k", 1ms);
          coroutine_result = 1;
        } catch (const boost::system::system_error& e) {
          coroutine_result = e.code() == asio::error::timed_out ? 2 : 3;
        }
      },
      asio::detached);
  std::optional<error_code> tuple_ec;
  sem.acquire_until("k", 1, steady::now() + 1ms,
                    asio::as_tuple([&](std::tuple<error_code, permit> r) {
                      tuple_ec = std::get<0>(r);
                    }));
  auto deferred = sem.acquire_for("k", 2ms, asio::deferred);
  std::optional<error_code> deferred_ec;
  std::move(deferred)([&](error_code ec, permit) { deferred_ec = ec; });
  auto future = sem.acquire_for("k", 1, 1ms, asio::use_future);
  run_until(ctx, [&] {
    return coroutine_result != 0 && tuple_ec && deferred_ec &&
           future.wait_for(0s) == std::future_status::ready;
  });
  CHECK(coroutine_result == 2);
  CHECK(*tuple_ec == asio::error::timed_out);
  CHECK(*deferred_ec == asio::error::timed_out);
  CHECK_THROWS_AS(future.get(), boost::system::system_error);
  CHECK(sem.stats().timed_out == 4);
}

TEST_CASE("deadline: a system_clock deadline counts the time left on that clock") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = std::make_shared<outcome>();
  sem.acquire_until("k", std::chrono::system_clock::now() + 1ms, record(result));
  run_until(ctx, [&] { return result->done(); });
  CHECK(*result->ec == asio::error::timed_out);
}

TEST_CASE("deadline: destroying the semaphore or the context with timed waiters leaves nothing behind") {
  {
    asio::io_context ctx;
    auto sem = std::make_unique<keyed_semaphore>(ctx, 1);
    auto held = sem->try_acquire("k");
    auto result = start_for(*sem, "k", 1, 1h);
    drain(ctx);
    sem.reset();
    drain(ctx);
    CHECK(*result->ec == asio::error::operation_aborted);
    held.reset();
    ctx.run_for(5s);
    CHECK(ctx.stopped());
  }
  {
    auto ctx = std::make_unique<asio::io_context>();
    keyed_semaphore sem(*ctx, 1);
    auto held = sem.try_acquire("k");
    auto result = start_for(sem, "k", 1, 1h);
    drain(*ctx);
    ctx.reset();  // the waiter is destroyed without being invoked
    CHECK_FALSE(result->done());
    held.reset();
    CHECK(sem.key_count() == 0);
  }
}

}  // namespace keysem::test
