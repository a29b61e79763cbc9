// keysem::async_semaphore: every public member, deterministically (poll,
// run_one); and the cases of tokio's tests/sync_semaphore.rs and
// tests/sync_semaphore_owned.rs that apply to it, named after them.
#include "test_support.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <future>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

namespace keysem::test {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using semaphore = keysem::async_semaphore<>;
using upermit = semaphore::permit;
using asio::cancellation_type;

// What a callback-style acquire of an async_semaphore reported.
struct result {
  std::optional<error_code> ec;
  upermit granted;
  int calls = 0;

  bool done() const { return ec.has_value(); }
  bool succeeded() const { return ec.has_value() && !*ec; }
};

auto record_into(std::shared_ptr<result> into) {
  return [into = std::move(into)](error_code ec, upermit p) {
    ++into->calls;
    into->ec = ec;
    into->granted = std::move(p);
  };
}

std::shared_ptr<result> start(semaphore& sem, std::size_t n = 1) {
  auto r = std::make_shared<result>();
  sem.acquire(n, record_into(r));
  return r;
}

std::shared_ptr<result> start_cancellable(semaphore& sem, asio::cancellation_signal& signal,
                                          std::size_t n = 1) {
  auto r = std::make_shared<result>();
  sem.acquire(n, asio::bind_cancellation_slot(signal.slot(), record_into(r)));
  return r;
}

std::shared_ptr<result> start_for(semaphore& sem, std::size_t n, steady::duration timeout) {
  auto r = std::make_shared<result>();
  sem.acquire_for(n, timeout, record_into(r));
  return r;
}

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

// The usage counters, compared as one value.
struct usage {
  std::size_t in_use;
  std::size_t available;
  std::size_t waiting;
  bool operator==(const usage&) const = default;
};

usage usage_of(const semaphore& sem) { return {sem.in_use(), sem.available(), sem.waiting()}; }

// The outcome counters, compared as one value (keys, waiting and in_use are
// checked apart).
struct outcomes {
  std::uint64_t granted_immediately = 0;
  std::uint64_t granted_after_wait = 0;
  std::uint64_t try_failed = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t rejected_closed = 0;
  std::uint64_t invalid_argument = 0;
  bool operator==(const outcomes&) const = default;
};

outcomes outcomes_of(const semaphore& sem) {
  const semaphore_stats s = sem.stats();
  CHECK(s.rejected_queue_full == 0);  // the queue of an async_semaphore is unbounded
  CHECK(s.keys == 0);
  return {s.granted_immediately, s.granted_after_wait, s.try_failed, s.cancelled,
          s.timed_out,           s.rejected_closed,    s.invalid_argument};
}

}  // namespace

// ---------------------------------------------------------------------------
// Construction and the counters
// ---------------------------------------------------------------------------

TEST_CASE("async_semaphore: 0 permits or more than max_permits throws invalid_argument") {
  asio::io_context ctx;
  CHECK_THROWS_AS(semaphore(ctx, 0), std::invalid_argument);
  CHECK_THROWS_AS(semaphore(ctx.get_executor(), 0), std::invalid_argument);
  CHECK_THROWS_AS(semaphore(ctx, semaphore::max_permits + 1), std::invalid_argument);
  semaphore largest(ctx, semaphore::max_permits);
  CHECK(largest.permits() == semaphore::max_permits);
  CHECK(ctx.poll() == 0);
}

TEST_CASE("async_semaphore: built from an io_context, an executor or a typed executor") {
  asio::io_context ctx;
  semaphore from_context(ctx, 3);
  semaphore from_executor(ctx.get_executor(), 2);
  keysem::async_semaphore<asio::io_context::executor_type> typed(ctx, 1);
  CHECK(from_context.permits() == 3);
  CHECK(from_executor.permits() == 2);
  CHECK(from_context.get_executor() == asio::any_io_executor(ctx.get_executor()));
  CHECK(typed.get_executor() == ctx.get_executor());
  bool granted = false;
  typed.acquire([&](error_code ec, keysem::async_semaphore<asio::io_context::executor_type>::permit p) {
    granted = !ec && p.count() == 1;
  });
  drain(ctx);
  CHECK(granted);
  CHECK(typed.in_use() == 0);
}

TEST_CASE("async_semaphore: a new semaphore is open, idle and has every permit available") {
  asio::io_context ctx;
  semaphore sem(ctx, 4);
  CHECK_FALSE(sem.is_closed());
  CHECK(usage_of(sem) == usage{0, 4, 0});
  CHECK(outcomes_of(sem) == outcomes{});
  const auto s = sem.stats();
  CHECK(s.in_use == 0);
  CHECK(s.waiting == 0);
}

TEST_CASE("async_semaphore: in_use, available and waiting follow grants, waiters and releases") {
  asio::io_context ctx;
  semaphore sem(ctx, 3);
  auto two = sem.try_acquire(2);
  CHECK(usage_of(sem) == usage{2, 1, 0});
  auto big = start(sem, 2);
  CHECK(usage_of(sem) == usage{2, 1, 1});  // counted as waiting from the call on
  drain(ctx);
  CHECK(usage_of(sem) == usage{2, 1, 1});
  CHECK(sem.stats().waiting == 1);
  CHECK(sem.stats().in_use == 2);
  two->release();
  CHECK(usage_of(sem) == usage{0, 3, 1});  // handed over on the strand, not yet
  drain(ctx);
  REQUIRE(big->succeeded());
  CHECK(usage_of(sem) == usage{2, 1, 0});
  big->granted.release();
  CHECK(usage_of(sem) == usage{0, 3, 0});
}

// ---------------------------------------------------------------------------
// try_acquire
// ---------------------------------------------------------------------------

TEST_CASE("async_semaphore try_acquire: succeeds while permits are free, then fails") {
  asio::io_context ctx;
  semaphore sem(ctx, 2);
  auto a = sem.try_acquire();
  auto b = sem.try_acquire();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->count() == 1);
  CHECK_FALSE(sem.try_acquire());
  CHECK(sem.in_use() == 2);
  a->release();
  CHECK(sem.try_acquire());  // visible at once, no io_context turn
  CHECK(ctx.poll() == 0);
}

TEST_CASE("async_semaphore try_acquire: weighted permits count towards permits()") {
  asio::io_context ctx;
  semaphore sem(ctx, 5);
  auto three = sem.try_acquire(3);
  REQUIRE(three);
  CHECK(three->count() == 3);
  CHECK_FALSE(sem.try_acquire(3));
  auto two = sem.try_acquire(2);
  REQUIRE(two);
  CHECK(sem.available() == 0);
  three->release();
  CHECK(sem.available() == 3);
  CHECK(sem.try_acquire(3));
}

TEST_CASE("async_semaphore try_acquire: fails while anyone waits, even with permits free") {
  asio::io_context ctx;
  semaphore sem(ctx, 3);
  auto two = sem.try_acquire(2);
  auto big = start(sem, 3);
  drain(ctx);
  CHECK(sem.available() == 1);
  CHECK_FALSE(sem.try_acquire(1));
  two->release();
  CHECK_FALSE(sem.try_acquire(1));  // the waiter is not yet served: still no barging
  drain(ctx);
  CHECK(big->succeeded());
}

TEST_CASE("async_semaphore try_acquire: n of 0 or above permits() throws invalid_argument, counts nothing else") {
  asio::io_context ctx;
  semaphore sem(ctx, 2);
  CHECK_THROWS_AS(sem.try_acquire(0), std::invalid_argument);
  CHECK_THROWS_AS(sem.try_acquire(3), std::invalid_argument);
  CHECK_THROWS_AS(sem.try_acquire(semaphore::max_permits + 1), std::invalid_argument);
  CHECK(usage_of(sem) == usage{0, 2, 0});
  CHECK(outcomes_of(sem) == outcomes{.invalid_argument = 3});
}

TEST_CASE("async_semaphore try_acquire: after close returns nullopt, and held permits stay valid") {
  asio::io_context ctx;
  semaphore sem(ctx, 2);
  auto held = sem.try_acquire();
  sem.close();
  CHECK_FALSE(sem.try_acquire());
  CHECK(sem.in_use() == 1);
  CHECK_THROWS_AS(sem.try_acquire(3), std::invalid_argument);  // the count is checked first
  held->release();
  CHECK(sem.in_use() == 0);
  CHECK_FALSE(sem.try_acquire());
}

TEST_CASE("async_semaphore permit: move-only RAII; release is idempotent; assignment releases") {
  asio::io_context ctx;
  semaphore sem(ctx, 3);
  upermit empty;
  CHECK_FALSE(empty);
  CHECK(empty.count() == 0);
  empty.release();
  static_assert(!std::is_copy_constructible_v<upermit>);
  static_assert(std::is_nothrow_move_constructible_v<upermit>);

  auto two = sem.try_acquire(2);
  upermit moved = std::move(*two);
  CHECK_FALSE(*two);
  CHECK(moved.count() == 2);
  CHECK(sem.in_use() == 2);
  auto one = sem.try_acquire();
  moved = std::move(*one);  // gives back the two it held
  CHECK(sem.in_use() == 1);
  CHECK(moved.count() == 1);
  moved.release();
  moved.release();
  CHECK(sem.in_use() == 0);
  {
    auto scoped = sem.try_acquire(3);
    CHECK(sem.available() == 0);
  }
  CHECK(sem.available() == 3);
}

// ---------------------------------------------------------------------------
// acquire: completion, order, tokens, executors
// ---------------------------------------------------------------------------

TEST_CASE("async_semaphore acquire: the handler is never invoked inside the initiating call") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto r = start(sem);
  CHECK_FALSE(r->done());
  CHECK(sem.in_use() == 1);  // taken at once, completed through a post
  drain(ctx);
  REQUIRE(r->succeeded());
  CHECK(r->granted.count() == 1);
  CHECK(r->calls == 1);
}

TEST_CASE("async_semaphore acquire: n of 0 or above permits() completes with invalid_argument, never inline") {
  asio::io_context ctx;
  semaphore sem(ctx, 2);
  auto zero = start(sem, 0);
  auto above = start(sem, 3);
  auto huge = start(sem, semaphore::max_permits + 1);
  CHECK_FALSE(zero->done());
  drain(ctx);
  CHECK(*zero->ec == asio::error::invalid_argument);
  CHECK(*above->ec == asio::error::invalid_argument);
  CHECK(*huge->ec == asio::error::invalid_argument);
  CHECK_FALSE(above->granted);
  CHECK(usage_of(sem) == usage{0, 2, 0});
  CHECK(outcomes_of(sem) == outcomes{.invalid_argument = 3});
}

TEST_CASE("async_semaphore acquire: waiters are granted strictly in arrival order") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  std::vector<int> order;
  std::vector<upermit> kept(5);
  for (int i = 0; i < 5; ++i) {
    sem.acquire([&, i](error_code ec, upermit p) {
      REQUIRE_FALSE(ec);
      order.push_back(i);
      kept[i] = std::move(p);
    });
  }
  drain(ctx);
  CHECK(sem.waiting() == 5);
  held->release();
  for (int i = 0; i < 5; ++i) {
    drain(ctx);
    REQUIRE(order.size() == static_cast<std::size_t>(i + 1));
    CHECK(order.back() == i);
    CHECK(sem.in_use() == 1);
    kept[i].release();
  }
  drain(ctx);
  CHECK(usage_of(sem) == usage{0, 1, 0});
}

TEST_CASE("async_semaphore acquire: no barging: an acquire after a release queues behind the waiters") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  auto first = start(sem);
  drain(ctx);
  held->release();           // the strand has not yet handed the permit over
  auto late = start(sem);    // arrives in that window
  CHECK_FALSE(sem.try_acquire());
  drain(ctx);
  CHECK(first->succeeded());
  CHECK_FALSE(late->done());
  first->granted.release();
  drain(ctx);
  CHECK(late->succeeded());
}

TEST_CASE("async_semaphore acquire: a weighted request at the head blocks smaller ones behind it") {
  asio::io_context ctx;
  semaphore sem(ctx, 4);
  auto three = sem.try_acquire(3);
  auto big = start(sem, 4);
  auto small = start(sem, 1);
  drain(ctx);
  CHECK(sem.available() == 1);
  CHECK_FALSE(big->done());
  CHECK_FALSE(small->done());  // one permit is free, but the head needs four
  three->release();
  drain(ctx);
  REQUIRE(big->succeeded());
  CHECK(big->granted.count() == 4);
  CHECK_FALSE(small->done());
  big->granted.release();
  drain(ctx);
  CHECK(small->succeeded());
}

TEST_CASE("async_semaphore acquire: one release can wake several weighted waiters in order") {
  asio::io_context ctx;
  semaphore sem(ctx, 6);
  auto all = sem.try_acquire(6);
  auto a = start(sem, 2);
  auto b = start(sem, 3);
  auto c = start(sem, 2);  // does not fit after a and b: waits
  drain(ctx);
  all->release();
  drain(ctx);
  CHECK(a->succeeded());
  CHECK(b->succeeded());
  CHECK_FALSE(c->done());
  CHECK(usage_of(sem) == usage{5, 1, 1});
  a->granted.release();
  drain(ctx);
  CHECK(c->succeeded());
}

TEST_CASE("async_semaphore acquire: a pending acquire is outstanding work on the context") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  auto r = start(sem);
  drain(ctx);
  CHECK(ctx.run_for(1ms) == 0);
  CHECK_FALSE(ctx.stopped());
  held->release();
  ctx.run();
  CHECK(r->succeeded());
}

TEST_CASE("async_semaphore tokens: the token-less co_await takes free permits without suspending") {
  // A handler posted just before the acquire runs first if, and only if,
  // the coroutine suspends: the no-token form must not, use_awaitable must.
  for (const bool with_token : {false, true}) {
    CAPTURE(with_token);
    asio::io_context ctx;
    semaphore sem(ctx, 2);
    bool posted_ran = false;
    std::optional<bool> suspended;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          asio::post(ctx, [&] { posted_ran = true; });
          // Not `with_token ? co_await a : co_await b`: GCC 12 leaks the
          // result of a co_await inside a conditional expression.
          upermit p;
          if (with_token) {
            p = co_await sem.acquire(asio::use_awaitable);
          } else {
            p = co_await sem.acquire();
          }
          suspended = posted_ran;
          CHECK(p.count() == 1);
        },
        asio::detached);
    ctx.run();
    REQUIRE(suspended.has_value());
    CHECK(*suspended == with_token);
    CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1});
  }
}

TEST_CASE("async_semaphore tokens: the token-less co_await waits in FIFO order when busy") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) {
    asio::co_spawn(
        ctx,
        [&, i]() -> asio::awaitable<void> {
          upermit p = co_await sem.acquire();
          order.push_back(i);
        },
        asio::detached);
  }
  drain(ctx);
  CHECK(order.empty());
  CHECK(sem.waiting() == 3);
  held->release();
  drain(ctx);
  CHECK(order == std::vector<int>{0, 1, 2});
  CHECK(usage_of(sem) == usage{0, 1, 0});
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .granted_after_wait = 3});
}

TEST_CASE("async_semaphore tokens: no token, use_awaitable, as_tuple, deferred; errors thrown as system_error") {
  asio::io_context ctx;
  semaphore sem(ctx, 3);
  std::optional<error_code> last_error;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        upermit plain = co_await sem.acquire();
        upermit weighted = co_await sem.acquire(2, asio::use_awaitable);
        CHECK(plain.count() == 1);
        CHECK(weighted.count() == 2);
        CHECK(sem.available() == 0);
        auto [ec, p] = co_await sem.acquire(4, asio::as_tuple(asio::use_awaitable));
        CHECK(ec == asio::error::invalid_argument);
        CHECK_FALSE(p);
        weighted.release();
        auto [ec2, p2] = co_await sem.acquire(2, asio::as_tuple(asio::deferred));
        CHECK_FALSE(ec2);
        CHECK(p2.count() == 2);
        // Every permit is held here: this one waits until close() ends it.
        try {
          co_await sem.acquire(asio::deferred);
          last_error = error_code();
        } catch (const boost::system::system_error& e) {
          last_error = e.code();
        }
      },
      asio::detached);
  drain(ctx);
  CHECK(sem.waiting() == 1);
  CHECK_FALSE(last_error);
  sem.close();
  drain(ctx);
  CHECK(last_error == error_code(keysem::error::closed));
  CHECK(usage_of(sem) == usage{0, 3, 0});

  bool invalid = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await sem.acquire(9);
        } catch (const boost::system::system_error& e) {
          invalid = e.code() == asio::error::invalid_argument;
        }
      },
      asio::detached);
  drain(ctx);
  CHECK(invalid);
}

TEST_CASE("async_semaphore tokens: a deferred acquire takes no permit until it is launched") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto op = sem.acquire(asio::deferred);
  CHECK(sem.in_use() == 0);
  auto r = std::make_shared<result>();
  std::move(op)(record_into(r));
  CHECK(sem.in_use() == 1);
  drain(ctx);
  CHECK(r->succeeded());
}

TEST_CASE("async_semaphore tokens: use_future from a plain thread") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  std::future<upermit> granted = sem.acquire(asio::use_future);
  std::future<upermit> refused = sem.acquire(2, asio::use_future);
  std::thread runner([&] { ctx.run(); });
  upermit p = granted.get();
  CHECK(p.count() == 1);
  CHECK_THROWS_AS(refused.get(), boost::system::system_error);
  runner.join();
}

TEST_CASE("async_semaphore executors: the handler runs on its bound strand, immediate or after waiting") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto strand = asio::make_strand(ctx);
  bool immediate_on_strand = false;
  bool waited_on_strand = false;
  upermit first;
  sem.acquire(asio::bind_executor(strand, [&](error_code ec, upermit p) {
    immediate_on_strand = !ec && strand.running_in_this_thread();
    first = std::move(p);
  }));
  sem.acquire(asio::bind_executor(strand, [&](error_code ec, upermit) {
    waited_on_strand = !ec && strand.running_in_this_thread();
  }));
  drain(ctx);
  CHECK(immediate_on_strand);
  CHECK_FALSE(waited_on_strand);
  first.release();
  drain(ctx);
  CHECK(waited_on_strand);
}

TEST_CASE("async_semaphore executors: the upcall happens on the handler's own context") {
  asio::io_context sem_ctx;
  asio::io_context handler_ctx;
  semaphore sem(sem_ctx, 1);
  auto held = sem.try_acquire();
  auto r = std::make_shared<result>();
  sem.acquire(asio::bind_executor(handler_ctx, record_into(r)));
  drain(sem_ctx);
  held->release();
  drain(sem_ctx);  // the grant, on the semaphore's strand
  CHECK_FALSE(r->done());
  CHECK(sem.in_use() == 1);
  drain(handler_ctx);
  CHECK(r->succeeded());
}

TEST_CASE("async_semaphore allocators: a waiting op is allocated with the handler's allocator and freed before the upcall") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  allocation_counts counts;
  bool balanced_at_upcall = false;
  sem.acquire(asio::bind_allocator(counting_allocator<void>(counts), [&](error_code ec, upermit) {
    CHECK_FALSE(ec);
    balanced_at_upcall = counts.allocations == counts.deallocations;
  }));
  drain(ctx);
  CHECK(counts.allocations > 0);
  held->release();
  drain(ctx);
  CHECK(balanced_at_upcall);
  CHECK(counts.allocations == counts.deallocations);
}

TEST_CASE("async_semaphore handlers: a handler may start the next acquire") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  int rounds = 0;
  std::function<void(error_code, upermit)> again = [&](error_code ec, upermit p) {
    REQUIRE_FALSE(ec);
    if (++rounds < 100) {
      sem.acquire(again);  // queued behind p, granted once p goes
    }
    p.release();
  };
  sem.acquire(again);
  ctx.run();
  CHECK(rounds == 100);
  CHECK(usage_of(sem) == usage{0, 1, 0});
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .granted_after_wait = 99});
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

TEST_CASE("async_semaphore cancellation: terminal, partial and total abort a waiter without side effects") {
  for (const auto type : {cancellation_type::terminal, cancellation_type::partial,
                          cancellation_type::total}) {
    CAPTURE(static_cast<unsigned>(type));
    asio::io_context ctx;
    semaphore sem(ctx, 1);
    auto held = sem.try_acquire();
    asio::cancellation_signal signal;
    auto r = start_cancellable(sem, signal);
    drain(ctx);
    CHECK(signal.slot().has_handler());
    signal.emit(type);
    drain(ctx);
    REQUIRE(r->done());
    CHECK(*r->ec == asio::error::operation_aborted);
    CHECK_FALSE(r->granted);
    CHECK(r->calls == 1);
    CHECK_FALSE(signal.slot().has_handler());
    CHECK(usage_of(sem) == usage{1, 0, 0});
    held->release();
    drain(ctx);
    CHECK(usage_of(sem) == usage{0, 1, 0});
    CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .cancelled = 1});
  }
}

TEST_CASE("async_semaphore cancellation: emitted before the enqueue job ran, it still aborts cleanly") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  asio::cancellation_signal signal;
  auto r = start_cancellable(sem, signal);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(*r->ec == asio::error::operation_aborted);
  CHECK(sem.waiting() == 0);
}

TEST_CASE("async_semaphore cancellation: once granted it is ignored and the handler gets the permit") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  asio::cancellation_signal signal;
  auto r = start_cancellable(sem, signal);
  drain(ctx);
  held->release();
  CHECK(ctx.run_one() == 1);  // the grant pass: the completion is posted
  CHECK_FALSE(r->done());
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  REQUIRE(r->succeeded());
  CHECK(r->granted.count() == 1);
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .granted_after_wait = 1});
}

TEST_CASE("async_semaphore cancellation: an immediately granted acquire ignores the signal") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  asio::cancellation_signal signal;
  auto r = start_cancellable(sem, signal);
  signal.emit(cancellation_type::total);
  drain(ctx);
  CHECK(r->succeeded());
}

TEST_CASE("async_semaphore cancellation: a cancelled middle waiter is skipped; order holds around it") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  asio::cancellation_signal signal;
  auto first = start(sem);
  auto middle = start_cancellable(sem, signal);
  auto last = start(sem);
  drain(ctx);
  CHECK(sem.waiting() == 3);
  signal.emit(cancellation_type::partial);
  drain(ctx);
  CHECK(*middle->ec == asio::error::operation_aborted);
  CHECK(sem.waiting() == 2);
  held->release();
  drain(ctx);
  CHECK(first->succeeded());
  CHECK_FALSE(last->done());
  first->granted.release();
  drain(ctx);
  CHECK(last->succeeded());
  CHECK(outcomes_of(sem) ==
        outcomes{.granted_immediately = 1, .granted_after_wait = 2, .cancelled = 1});
}

TEST_CASE("async_semaphore cancellation: a cancel decided before the grant wins; the permit goes to the next") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  asio::cancellation_signal signal;
  auto first = start_cancellable(sem, signal);
  auto second = start(sem);
  drain(ctx);
  signal.emit(cancellation_type::terminal);
  held->release();
  drain(ctx);
  CHECK(*first->ec == asio::error::operation_aborted);
  CHECK(second->succeeded());
  CHECK(usage_of(sem) == usage{1, 0, 0});
}

TEST_CASE("async_semaphore cancellation: a cancelled weighted head lets the smaller ones behind it through") {
  asio::io_context ctx;
  semaphore sem(ctx, 4);
  auto three = sem.try_acquire(3);
  asio::cancellation_signal signal;
  auto big = start_cancellable(sem, signal, 4);
  auto small = start(sem, 1);
  drain(ctx);
  CHECK_FALSE(small->done());
  signal.emit(cancellation_type::total);
  drain(ctx);
  CHECK(*big->ec == asio::error::operation_aborted);
  CHECK(small->succeeded());
  CHECK(usage_of(sem) == usage{4, 0, 0});
}

TEST_CASE("async_semaphore cancellation: a co_spawned coroutine cancelled through its slot abandons its acquire") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  asio::cancellation_signal signal;
  std::exception_ptr failure;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { co_await sem.acquire(); },
      asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) { failure = e; }));
  drain(ctx);
  CHECK(sem.waiting() == 1);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  REQUIRE(failure);
  CHECK_THROWS_AS(std::rethrow_exception(failure), boost::system::system_error);
  CHECK(sem.waiting() == 0);
  CHECK(outcomes_of(sem).cancelled == 1);
}

TEST_CASE("async_semaphore cancellation: acquire || timer returns the timer's branch and leaves no waiter") {
  using namespace asio::experimental::awaitable_operators;
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  std::optional<std::size_t> winner;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(ctx, 1ms);
        auto r = co_await (sem.acquire(asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
        winner = r.index();
      },
      asio::detached);
  ctx.run();  // ends: nothing is left waiting
  CHECK(winner == 1u);
  CHECK(usage_of(sem) == usage{1, 0, 0});
}

// ---------------------------------------------------------------------------
// acquire_for / acquire_until
// ---------------------------------------------------------------------------

TEST_CASE("async_semaphore deadline: free permits are granted whatever the timeout") {
  asio::io_context ctx;
  semaphore sem(ctx, 3);
  auto zero = start_for(sem, 1, 0ms);
  auto negative = start_for(sem, 1, -1s);
  auto past = std::make_shared<result>();
  sem.acquire_until(steady::now() - 1h, record_into(past));
  drain(ctx);
  CHECK(zero->succeeded());
  CHECK(negative->succeeded());
  CHECK(past->succeeded());
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 3});
  ctx.run();  // no timer was armed
  CHECK(ctx.stopped());
}

TEST_CASE("async_semaphore deadline: a waiter whose deadline passes completes with timed_out, no timer left") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  auto r = start_for(sem, 1, 1ms);
  run_until(ctx, [&] { return r->done(); });
  REQUIRE(r->done());
  CHECK(*r->ec == asio::error::timed_out);
  CHECK_FALSE(r->granted);
  CHECK(usage_of(sem) == usage{1, 0, 0});
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .timed_out = 1});
  ctx.run();  // returns: nothing is armed
  CHECK(ctx.stopped());
}

TEST_CASE("async_semaphore deadline: a grant before the deadline wins and leaves no armed timer") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  auto r = start_for(sem, 1, 1h);
  auto until = std::make_shared<result>();
  sem.acquire_until(1, steady::now() + 1h, record_into(until));
  drain(ctx);
  held->release();
  drain(ctx);
  REQUIRE(r->succeeded());
  r->granted.release();
  drain(ctx);
  REQUIRE(until->succeeded());
  until->granted.release();
  ctx.run_for(5s);  // an armed hour-long wait would keep it running
  CHECK(ctx.stopped());
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .granted_after_wait = 2});
}

TEST_CASE("async_semaphore deadline: a timed-out weighted head no longer holds back the waiters behind it") {
  asio::io_context ctx;
  semaphore sem(ctx, 3);
  auto held = sem.try_acquire(2);
  auto head = start_for(sem, 3, 1ms);
  auto small = start(sem, 1);
  drain(ctx);
  CHECK_FALSE(small->done());
  run_until(ctx, [&] { return head->done() && small->done(); });
  CHECK(*head->ec == asio::error::timed_out);
  CHECK(small->succeeded());
}

TEST_CASE("async_semaphore deadline: cancellation before the deadline wins; the timer goes with the op") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  asio::cancellation_signal signal;
  auto r = std::make_shared<result>();
  sem.acquire_for(1h, asio::bind_cancellation_slot(signal.slot(), record_into(r)));
  drain(ctx);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(*r->ec == asio::error::operation_aborted);
  held.reset();
  ctx.run_for(5s);
  CHECK(ctx.stopped());
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .cancelled = 1});
}

TEST_CASE("async_semaphore deadline: every overload and token style") {
  asio::io_context ctx;
  semaphore sem(ctx, 2);
  auto held = sem.try_acquire(2);
  int coroutine_result = 0;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await sem.acquire_for(1ms);
          coroutine_result = 1;
        } catch (const boost::system::system_error& e) {
          coroutine_result = e.code() == asio::error::timed_out ? 2 : 3;
        }
        try {
          co_await sem.acquire_until(2, steady::now() + 1ms);
          coroutine_result = 4;
        } catch (const boost::system::system_error& e) {
          coroutine_result += e.code() == asio::error::timed_out ? 10 : 20;
        }
      },
      asio::detached);
  std::optional<error_code> tuple_ec;
  sem.acquire_until(steady::now() + 1ms, asio::as_tuple([&](std::tuple<error_code, upermit> r) {
                      tuple_ec = std::get<0>(r);
                    }));
  auto deferred = sem.acquire_for(2, 2ms, asio::deferred);
  std::optional<error_code> deferred_ec;
  std::move(deferred)([&](error_code ec, upermit) { deferred_ec = ec; });
  auto future = sem.acquire_for(1, 1ms, asio::use_future);
  auto system_clock = std::make_shared<result>();
  sem.acquire_until(1, std::chrono::system_clock::now() + 1ms, record_into(system_clock));
  run_until(ctx, [&] {
    return coroutine_result >= 10 && tuple_ec && deferred_ec && system_clock->done() &&
           future.wait_for(0s) == std::future_status::ready;
  });
  CHECK(coroutine_result == 12);
  CHECK(*tuple_ec == asio::error::timed_out);
  CHECK(*deferred_ec == asio::error::timed_out);
  CHECK(*system_clock->ec == asio::error::timed_out);
  CHECK_THROWS_AS(future.get(), boost::system::system_error);
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .timed_out = 6});
  CHECK(usage_of(sem) == usage{2, 0, 0});
}

TEST_CASE("async_semaphore deadline: an invalid count is refused before any deadline") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto r = start_for(sem, 2, 1h);
  drain(ctx);
  CHECK(*r->ec == asio::error::invalid_argument);
  ctx.run();
  CHECK(ctx.stopped());
}

// ---------------------------------------------------------------------------
// close, destruction, shutdown
// ---------------------------------------------------------------------------

TEST_CASE("async_semaphore close: waiters get closed, later acquires too, held permits stay valid") {
  asio::io_context ctx;
  semaphore sem(ctx, 2);
  auto held = sem.try_acquire(2);
  auto waiting = start(sem);
  auto timed = start_for(sem, 2, 1h);
  drain(ctx);
  sem.close();
  CHECK(sem.is_closed());
  CHECK_FALSE(waiting->done());  // never inline
  drain(ctx);
  CHECK(*waiting->ec == keysem::error::closed);
  CHECK(*timed->ec == keysem::error::closed);
  CHECK_FALSE(waiting->granted);
  CHECK(sem.waiting() == 0);

  auto late = start(sem);
  drain(ctx);
  CHECK(*late->ec == keysem::error::closed);
  CHECK_FALSE(sem.try_acquire());
  bool thrown_closed = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await sem.acquire();
        } catch (const boost::system::system_error& e) {
          thrown_closed = e.code() == keysem::error::closed;
        }
      },
      asio::detached);
  drain(ctx);
  CHECK(thrown_closed);

  CHECK(sem.in_use() == 2);
  held->release();  // frees the permits; grants nothing
  drain(ctx);
  CHECK(usage_of(sem) == usage{0, 2, 0});
  sem.close();  // idempotent
  CHECK(sem.is_closed());
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .rejected_closed = 5});
  ctx.run_for(5s);  // the timed waiter's timer went with it
  CHECK(ctx.stopped());
}

TEST_CASE("async_semaphore close: an acquire racing close on the strand completes with closed") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  auto r = start(sem);  // its enqueue job has not run yet
  sem.close();
  drain(ctx);
  CHECK(*r->ec == keysem::error::closed);
  CHECK(sem.waiting() == 0);
}

TEST_CASE("async_semaphore destruction: waiters complete with operation_aborted; permits outlive it") {
  asio::io_context ctx;
  auto sem = std::make_unique<semaphore>(ctx, 2);
  auto held = sem->try_acquire();
  auto granted = start(*sem);
  auto waiting = start(*sem);
  auto timed = start_for(*sem, 1, 1h);
  auto in_flight = start(*sem);  // its enqueue job has not run yet
  drain(ctx);
  auto unqueued = start(*sem);
  REQUIRE(granted->succeeded());
  sem.reset();
  CHECK_FALSE(waiting->done());
  drain(ctx);
  for (const auto& r : {waiting, timed, in_flight, unqueued}) {
    REQUIRE(r->done());
    CHECK(*r->ec == asio::error::operation_aborted);
    CHECK_FALSE(r->granted);
  }
  held->release();  // after the semaphore: safe, grants nothing
  granted->granted.release();
  CHECK(ctx.poll() == 0);
  ctx.run_for(5s);
  CHECK(ctx.stopped());
}

TEST_CASE("async_semaphore destruction: from inside one of its own handlers") {
  asio::io_context ctx;
  auto sem = std::make_unique<semaphore>(ctx, 1);
  bool destroyed = false;
  sem->acquire([&](error_code ec, upermit p) {  // granted at once
    CHECK_FALSE(ec);
    sem.reset();
    destroyed = true;
    p.release();  // after its semaphore
  });
  auto waiting = start(*sem);
  drain(ctx);
  CHECK(destroyed);
  drain(ctx);
  REQUIRE(waiting->done());
  CHECK(*waiting->ec == asio::error::operation_aborted);
}

TEST_CASE("async_semaphore destruction: permits outlive the semaphore and its io_context") {
  std::vector<upermit> kept;
  {
    auto ctx = std::make_unique<asio::io_context>();
    auto sem = std::make_unique<semaphore>(*ctx, 3);
    kept.push_back(std::move(*sem->try_acquire(2)));
    auto r = start(*sem);
    drain(*ctx);
    REQUIRE(r->succeeded());
    kept.push_back(std::move(r->granted));
    sem.reset();
    ctx.reset();
  }
  CHECK(kept[0].count() == 2);
  CHECK(kept[1].count() == 1);
  kept[1].release();  // ASan: the state is still alive
  kept.clear();       // the last release frees the semaphore's memory
}

TEST_CASE("async_semaphore shutdown: waiters are destroyed, not invoked, when the context goes first") {
  auto tracker = std::make_shared<int>(0);
  std::weak_ptr<int> watch = tracker;
  auto ctx = std::make_unique<asio::io_context>();
  semaphore sem(*ctx, 1);
  auto held = sem.try_acquire();
  bool invoked = false;
  sem.acquire([&invoked, tracker](error_code, upermit) { invoked = true; });
  sem.acquire_for(1h, [&invoked, tracker](error_code, upermit) { invoked = true; });
  asio::co_spawn(*ctx, [&sem, tracker]() -> asio::awaitable<void> { co_await sem.acquire(); },
                 asio::detached);
  tracker.reset();
  drain(*ctx);
  CHECK(sem.waiting() == 3);
  ctx.reset();
  CHECK_FALSE(invoked);
  CHECK(watch.expired());  // every handler (and the coroutine frame) destroyed: no leak
  CHECK(sem.waiting() == 0);
  CHECK(sem.in_use() == 1);
  held->release();
  CHECK(sem.try_acquire());  // the synchronous surface still works
  // An acquire whose handler would run on the dead context cannot complete:
  // the initiating call says so.
  CHECK_THROWS_AS(sem.acquire([](error_code, upermit) {}), boost::system::system_error);
  sem.close();
  CHECK_FALSE(sem.try_acquire());
}

TEST_CASE("async_semaphore shutdown: after its context is gone, an acquire bound to a live context completes there with operation_aborted") {
  auto ctx = std::make_unique<asio::io_context>();
  asio::io_context other;
  semaphore sem(*ctx, 2);
  auto held = sem.try_acquire();
  ctx.reset();
  auto r = std::make_shared<result>();
  sem.acquire(asio::bind_executor(other, record_into(r)));
  CHECK_FALSE(r->done());
  drain(other);
  REQUIRE(r->done());
  CHECK(*r->ec == asio::error::operation_aborted);
  CHECK_FALSE(r->granted);
  CHECK(r->calls == 1);
  CHECK(usage_of(sem) == usage{1, 1, 0});
  CHECK(outcomes_of(sem) == outcomes{.granted_immediately = 1, .cancelled = 1});
}

TEST_CASE("async_semaphore shutdown: semaphore then context destroyed without running: handlers destroyed") {
  auto tracker = std::make_shared<int>(0);
  std::weak_ptr<int> watch = tracker;
  upermit survivor;
  bool invoked = false;
  {
    asio::io_context ctx;
    semaphore sem(ctx, 1);
    survivor = std::move(*sem.try_acquire());
    sem.acquire([&invoked, tracker](error_code, upermit) { invoked = true; });
    tracker.reset();
  }
  CHECK_FALSE(invoked);
  CHECK(watch.expired());
  survivor.release();
}

TEST_CASE("async_semaphore shutdown: a granted permit whose handler is destroyed unrun goes to the next waiter") {
  asio::io_context sem_ctx;
  semaphore sem(sem_ctx, 1);
  auto held = sem.try_acquire();
  std::shared_ptr<result> next;
  {
    asio::io_context handler_ctx;
    bool invoked = false;
    sem.acquire(asio::bind_executor(handler_ctx, [&](error_code, upermit) { invoked = true; }));
    next = start(sem);
    drain(sem_ctx);
    held->release();
    drain(sem_ctx);
    CHECK(sem.in_use() == 1);
    CHECK_FALSE(invoked);
  }
  drain(sem_ctx);
  REQUIRE(next->succeeded());
  CHECK(sem.in_use() == 1);
}

// ---------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------

TEST_CASE("async_semaphore stats: exact after every kind of outcome") {
  asio::io_context ctx;
  auto sem = std::make_unique<semaphore>(ctx, 2);
  outcomes expected;
  auto check = [&] { CHECK(outcomes_of(*sem) == expected); };

  auto held = sem->try_acquire();
  ++expected.granted_immediately;
  check();
  CHECK_FALSE(sem->try_acquire(2));
  ++expected.try_failed;
  check();
  CHECK_THROWS_AS(sem->try_acquire(0), std::invalid_argument);
  ++expected.invalid_argument;
  check();
  auto invalid = start(*sem, 3);
  drain(ctx);
  ++expected.invalid_argument;
  check();
  auto immediate = start(*sem);
  drain(ctx);
  ++expected.granted_immediately;
  check();
  auto later = start(*sem);
  drain(ctx);
  check();  // a waiter is not an outcome yet
  CHECK(sem->stats().waiting == 1);
  immediate->granted.release();
  drain(ctx);
  REQUIRE(later->succeeded());
  ++expected.granted_after_wait;
  check();
  asio::cancellation_signal signal;
  auto cancelled = start_cancellable(*sem, signal);
  drain(ctx);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  ++expected.cancelled;
  check();
  auto timed = start_for(*sem, 1, 1ms);
  run_until(ctx, [&] { return timed->done(); });
  ++expected.timed_out;
  check();
  auto closed_waiter = start(*sem);
  drain(ctx);
  sem->close();
  drain(ctx);
  ++expected.rejected_closed;
  check();
  CHECK_FALSE(sem->try_acquire());
  ++expected.rejected_closed;
  check();
  auto after_close = start(*sem);
  drain(ctx);
  ++expected.rejected_closed;
  check();
  CHECK_THROWS_AS(sem->try_acquire(5), std::invalid_argument);
  ++expected.invalid_argument;
  check();
  const auto s = sem->stats();
  CHECK(s.in_use == 2);
  CHECK(s.waiting == 0);
  CHECK(s.in_use == sem->in_use());
}

TEST_CASE("async_semaphore stats: the awaitable form counts once, whether it waits or not") {
  asio::io_context ctx;
  auto sem = std::make_unique<semaphore>(ctx, 1);
  auto held = sem->try_acquire();
  int finished = 0;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        upermit waited = co_await sem->acquire();
        waited.release();
        upermit at_once = co_await sem->acquire();
        ++finished;
      },
      asio::detached);
  drain(ctx);
  held.reset();
  drain(ctx);
  CHECK(finished == 1);
  CHECK(outcomes_of(*sem) == outcomes{.granted_immediately = 2, .granted_after_wait = 1});
}

TEST_CASE("async_semaphore stats: concurrent try_acquire on several threads counts exactly") {
  asio::io_context ctx;
  semaphore sem(ctx, 2);
  constexpr int threads = 4;
  constexpr int rounds = 2000;
  std::atomic<std::uint64_t> succeeded{0};
  std::atomic<std::uint64_t> failed{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < rounds; ++i) {
        if (auto p = sem.try_acquire()) {
          succeeded.fetch_add(1, std::memory_order_relaxed);
        } else {
          failed.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& w : workers) {
    w.join();
  }
  const auto s = sem.stats();
  CHECK(s.granted_immediately == succeeded.load());
  CHECK(s.try_failed == failed.load());
  CHECK(s.granted_immediately + s.try_failed == threads * rounds);
  CHECK(usage_of(sem) == usage{0, 2, 0});
}

TEST_CASE("async_semaphore stats: exact when threads alternate between many semaphores and come and go") {
  // The immediate outcomes are counted per thread, through a small
  // thread-local cache: more semaphores than it holds, used in turn, and
  // threads that end (whose ids may be reused) must not lose a count.
  asio::io_context ctx;
  std::vector<std::unique_ptr<semaphore>> sems;
  for (int i = 0; i < 7; ++i) {
    sems.push_back(std::make_unique<semaphore>(ctx, 1));
  }
  constexpr int generations = 8;
  constexpr int threads = 3;
  constexpr int rounds = 300;
  for (int g = 0; g < generations; ++g) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i = 0; i < rounds; ++i) {
          for (auto& sem : sems) {
            auto p = sem->try_acquire();  // granted, or busy while another thread holds it
            (void)p;
          }
        }
      });
    }
    for (auto& w : workers) {
      w.join();
    }
  }
  for (auto& sem : sems) {
    const auto s = sem->stats();
    CHECK(s.granted_immediately + s.try_failed == std::uint64_t{generations} * threads * rounds);
    CHECK(s.in_use == 0);
  }
}

// ---------------------------------------------------------------------------
// Ported from tokio: tests/sync_semaphore.rs and tests/sync_semaphore_owned.rs
// (add_permits, forget, merge and split have no counterpart: permits are
// fixed, and a permit is one grant)
// ---------------------------------------------------------------------------

TEST_CASE("tokio sync_semaphore no_permits: a semaphore without permits is refused at construction") {
  // tokio allows Semaphore::new(0) and try_acquire fails; keysem refuses a
  // semaphore nobody could ever enter, with a clear error.
  asio::io_context ctx;
  CHECK_THROWS_AS(semaphore(ctx, 0), std::invalid_argument);
}

TEST_CASE("tokio sync_semaphore try_acquire") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  {
    auto p1 = sem.try_acquire();
    CHECK(p1);
    auto p2 = sem.try_acquire();
    CHECK_FALSE(p2);
  }
  auto p3 = sem.try_acquire();
  CHECK(p3);
}

TEST_CASE("tokio sync_semaphore acquire") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto p1 = sem.try_acquire();
  REQUIRE(p1);
  bool acquired = false;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> {
        upermit p = co_await sem.acquire();
        acquired = true;
      },
      asio::detached);
  drain(ctx);
  CHECK_FALSE(acquired);
  p1.reset();
  drain(ctx);
  CHECK(acquired);
}

TEST_CASE("tokio sync_semaphore add_permits: a release hands the permit to a waiter") {
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto taken = sem.try_acquire();  // tokio starts from 0 permits and adds one
  bool acquired = false;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> {
        upermit p = co_await sem.acquire();
        acquired = true;
      },
      asio::detached);
  drain(ctx);
  CHECK_FALSE(acquired);
  taken->release();
  drain(ctx);
  CHECK(acquired);
}

TEST_CASE("tokio sync_semaphore_owned try_acquire_many") {
  asio::io_context ctx;
  semaphore sem(ctx, 42);
  {
    auto p1 = sem.try_acquire(42);
    CHECK(p1);
    CHECK_FALSE(sem.try_acquire(1));
  }
  auto p3 = sem.try_acquire(32);
  CHECK(p3);
  auto p4 = sem.try_acquire(10);
  CHECK(p4);
  CHECK_FALSE(sem.try_acquire(1));
}

TEST_CASE("tokio sync_semaphore_owned acquire_many") {
  asio::io_context ctx;
  semaphore sem(ctx, 42);
  bool acquired = false;
  std::optional<upermit> first;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> {
        first = co_await sem.acquire(40);
        upermit p = co_await sem.acquire(10);  // waits: 2 free
        acquired = p.count() == 10;
      },
      asio::detached);
  drain(ctx);
  CHECK(first);
  CHECK_FALSE(acquired);
  first.reset();
  drain(ctx);
  CHECK(acquired);
}

TEST_CASE("tokio sync_semaphore add_max_amount_permits / no_panic_at_maxpermits") {
  asio::io_context ctx;
  semaphore sem(ctx, semaphore::max_permits);
  auto all = sem.try_acquire(semaphore::max_permits);
  REQUIRE(all);
  CHECK(sem.available() == 0);
  CHECK_FALSE(sem.try_acquire());
  all->release();
  CHECK(sem.available() == semaphore::max_permits);
}

TEST_CASE("tokio sync_semaphore add_more_than_max_amount_permits / panic_when_exceeds_maxpermits") {
  asio::io_context ctx;
  CHECK_THROWS_AS(semaphore(ctx, semaphore::max_permits + 1), std::invalid_argument);
  semaphore sem(ctx, 1);
  CHECK_THROWS_AS(sem.try_acquire(semaphore::max_permits + 1), std::invalid_argument);
}

TEST_CASE("tokio sync_semaphore stress_test (and sync_semaphore_owned stress_test)") {
  // 1000 tasks each acquire then drop a permit on a semaphore of 5, on a
  // thread pool; afterwards all 5 can be taken at once.
  asio::thread_pool pool(4);
  semaphore sem(pool, 5);
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::atomic<int> done{0};
  std::atomic<int> failed{0};
  constexpr int tasks = 1000;
  for (int i = 0; i < tasks; ++i) {
    asio::co_spawn(
        pool,
        [&]() -> asio::awaitable<void> {
          upermit p = co_await sem.acquire();
          const int now = inside.fetch_add(1) + 1;
          int seen = most.load();
          while (now > seen && !most.compare_exchange_weak(seen, now)) {
          }
          inside.fetch_sub(1);
        },
        [&](std::exception_ptr e) {
          (e ? failed : done).fetch_add(1);
        });
  }
  pool.join();
  CHECK(done.load() == tasks);
  CHECK(failed.load() == 0);
  CHECK(most.load() <= 5);
  CHECK(sem.try_acquire(5));
  CHECK(outcomes_of(sem).granted_immediately + outcomes_of(sem).granted_after_wait == tasks + 1);
}

TEST_CASE("tokio sync_semaphore close: acquire fails once closed, waiters are woken with the error") {
  // tokio's semaphore close(): pending and later acquires return AcquireError.
  asio::io_context ctx;
  semaphore sem(ctx, 1);
  auto held = sem.try_acquire();
  std::optional<error_code> woken;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> {
        auto [ec, p] = co_await sem.acquire(asio::as_tuple(asio::use_awaitable));
        woken = ec;
      },
      asio::detached);
  drain(ctx);
  sem.close();
  drain(ctx);
  CHECK(woken == error_code(keysem::error::closed));
  held->release();
  CHECK_FALSE(sem.try_acquire());
}

}  // namespace keysem::test
