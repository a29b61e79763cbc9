// Per-operation cancellation: every type, every race the contract decides.
#include "test_support.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <chrono>

namespace keysem::test {

using asio::cancellation_type;

std::shared_ptr<outcome> start_cancellable(keyed_semaphore& sem, std::string key,
                                           asio::cancellation_signal& signal, std::size_t n = 1) {
  auto result = std::make_shared<outcome>();
  sem.acquire(std::move(key), n, asio::bind_cancellation_slot(signal.slot(), record(result)));
  return result;
}

TEST_CASE("cancellation: terminal, partial and total each abort a waiting acquire without side effects") {
  for (const auto type : {cancellation_type::terminal, cancellation_type::partial,
                          cancellation_type::total, cancellation_type::all}) {
    CAPTURE(static_cast<unsigned>(type));
    asio::io_context ctx;
    keyed_semaphore sem(ctx, 1);
    auto held = sem.try_acquire("k");
    asio::cancellation_signal signal;
    auto result = start_cancellable(sem, "k", signal);
    drain(ctx);
    CHECK(signal.slot().has_handler());
    CHECK(sem.waiting("k") == 1);

    signal.emit(type);
    drain(ctx);
    REQUIRE(result->done());
    CHECK(*result->ec == asio::error::operation_aborted);
    CHECK_FALSE(result->granted);
    CHECK(result->calls == 1);
    CHECK_FALSE(signal.slot().has_handler());
    CHECK(sem.waiting("k") == 0);
    CHECK(sem.in_use("k") == 1);

    held->release();
    drain(ctx);
    CHECK(sem.key_count() == 0);  // a cancelled waiter leaves no trace
  }
}

TEST_CASE("cancellation: a signal of type none is ignored") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  auto result = start_cancellable(sem, "k", signal);
  drain(ctx);
  signal.emit(cancellation_type::none);
  drain(ctx);
  CHECK_FALSE(result->done());
  held->release();
  drain(ctx);
  CHECK(result->succeeded());
}

TEST_CASE("cancellation: the slot is cleared on completion; emitting afterwards does nothing") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  auto result = start_cancellable(sem, "k", signal);
  drain(ctx);
  held->release();
  drain(ctx);
  REQUIRE(result->succeeded());
  CHECK_FALSE(signal.slot().has_handler());
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(result->calls == 1);
  CHECK(sem.in_use("k") == 1);
}

TEST_CASE("cancellation: an immediately granted acquire ignores a signal emitted before its handler runs") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  asio::cancellation_signal signal;
  auto result = start_cancellable(sem, "k", signal);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(result->succeeded());
  CHECK_FALSE(signal.slot().has_handler());
}

TEST_CASE("cancellation: once granted, a cancellation is ignored and the handler gets the permit") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  auto result = start_cancellable(sem, "k", signal);
  drain(ctx);
  held->release();   // schedules a drain on the strand
  CHECK(ctx.run_one() == 1);  // the drain grants: the completion is posted
  CHECK_FALSE(result->done());
  signal.emit(cancellation_type::total);  // too late: ignored
  drain(ctx);
  REQUIRE(result->succeeded());
  CHECK(result->granted.count() == 1);
  CHECK(sem.in_use("k") == 1);
}

TEST_CASE("cancellation: a cancel decided before the grant wins; the permits go to the next waiter") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  auto first = start_cancellable(sem, "k", signal);
  auto second = start(sem, "k");
  drain(ctx);
  signal.emit(cancellation_type::terminal);  // decided at once; leaves the queue on the strand
  held->release();
  drain(ctx);
  CHECK(*first->ec == asio::error::operation_aborted);
  CHECK_FALSE(first->granted);
  CHECK(second->succeeded());
  CHECK(sem.in_use("k") == 1);
  CHECK(sem.waiting("k") == 0);
}

TEST_CASE("cancellation: a cancelled head-of-line weighted waiter lets the smaller ones behind it through") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 4);
  auto three = sem.try_acquire("k", 3);
  asio::cancellation_signal signal;
  auto big = start_cancellable(sem, "k", signal, 4);
  auto small = start(sem, "k", 1);
  drain(ctx);
  CHECK_FALSE(small->done());
  signal.emit(cancellation_type::partial);
  drain(ctx);
  CHECK(*big->ec == asio::error::operation_aborted);
  CHECK(small->succeeded());
  CHECK(sem.in_use("k") == 4);
}

TEST_CASE("cancellation: the same signal serves the next operation") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  for (int round = 0; round < 3; ++round) {
    auto result = start_cancellable(sem, "k", signal);
    drain(ctx);
    signal.emit(cancellation_type::terminal);
    drain(ctx);
    CHECK(*result->ec == asio::error::operation_aborted);
  }
  CHECK(sem.waiting("k") == 0);
  CHECK(sem.in_use("k") == 1);
}

TEST_CASE("cancellation: emitting before the enqueue job has run still aborts cleanly") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  auto result = start_cancellable(sem, "k", signal);
  signal.emit(cancellation_type::terminal);  // no poll in between
  drain(ctx);
  CHECK(*result->ec == asio::error::operation_aborted);
  held->release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("cancellation: acquire || timer returns the timer's branch and leaves no waiter") {
  using namespace asio::experimental::awaitable_operators;
  for (const bool explicit_token : {false, true}) {
    CAPTURE(explicit_token);
    asio::io_context ctx;
    keyed_semaphore sem(ctx, 1);
    auto held = sem.try_acquire("k");
    bool timer_won = false;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer timer(ctx, std::chrono::milliseconds(1));
          auto acquire = explicit_token ? sem.acquire("k", asio::use_awaitable) : sem.acquire("k");
          auto winner = co_await (std::move(acquire) || timer.async_wait(asio::use_awaitable));
          timer_won = winner.index() == 1;
        },
        asio::detached);
    ctx.run();
    CHECK(timer_won);
    CHECK(sem.waiting("k") == 0);
    CHECK(sem.in_use("k") == 1);
    held->release();
    CHECK(sem.key_count() == 0);
  }
}

TEST_CASE("cancellation: a coroutine already cancelled is refused even when permits are free") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  asio::cancellation_signal signal;
  bool aborted = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(ctx, std::chrono::hours(1));
        try {
          co_await timer.async_wait(asio::use_awaitable);
        } catch (const boost::system::system_error&) {
        }
        try {
          co_await sem.acquire("k");
        } catch (const boost::system::system_error& e) {
          aborted = e.code() == asio::error::operation_aborted;
        }
      },
      asio::bind_cancellation_slot(signal.slot(), asio::detached));
  drain(ctx);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(aborted);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("cancellation: acquire || timer returns the permit when it is free") {
  using namespace asio::experimental::awaitable_operators;
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  bool got_permit = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(ctx, std::chrono::hours(1));
        auto winner = co_await (sem.acquire("k", asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
        got_permit = winner.index() == 0 && std::get<0>(winner).count() == 1;
      },
      asio::detached);
  ctx.run();
  CHECK(got_permit);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("cancellation: parallel_group wait_for_one cancels the losing acquire") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::steady_timer timer(ctx, std::chrono::milliseconds(1));
  bool called = false;
  asio::experimental::make_parallel_group(sem.acquire("k", asio::deferred), timer.async_wait(asio::deferred))
      .async_wait(asio::experimental::wait_for_one(),
                  [&](std::array<std::size_t, 2> order, error_code acquire_ec, permit p, error_code timer_ec) {
                    called = true;
                    CHECK(order[0] == 1);
                    CHECK(acquire_ec == asio::error::operation_aborted);
                    CHECK_FALSE(p);
                    CHECK_FALSE(timer_ec);
                  });
  ctx.run();
  CHECK(called);
  CHECK(sem.waiting("k") == 0);
  held->release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("cancellation: a co_spawned coroutine cancelled through its slot abandons its acquire") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  std::exception_ptr failure;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { co_await sem.acquire("k"); },
      asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) { failure = e; }));
  drain(ctx);
  CHECK(sem.waiting("k") == 1);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  REQUIRE(failure);
  try {
    std::rethrow_exception(failure);
  } catch (const boost::system::system_error& e) {
    CHECK(e.code() == asio::error::operation_aborted);
  }
  CHECK(sem.waiting("k") == 0);
}

}  // namespace keysem::test
