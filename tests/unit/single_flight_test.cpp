// single_flight: Go's singleflight_test.go cases, then cancellation, token
// styles, executors, destruction and memory; all driven with poll().
#include "test_support.hpp"

#include <keysem/single_flight.hpp>

#include <boost/asio/deferred.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <stdexcept>
#include <string_view>
#include <vector>

// GCC 12 at -O1 (the sanitizer builds) flags asio's awaitable frames with a
// false -Wmismatched-new-delete (GCC PR 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace keysem::test {
namespace {

using flights = single_flight<std::string, int>;
using asio::awaitable;
using asio::cancellation_type;

// What one caller received.
struct answer {
  int calls = 0;
  std::exception_ptr error;
  int value = -1;

  bool done() const { return calls > 0; }
  bool ok() const { return calls == 1 && !error; }
  bool aborted() const { return calls == 1 && code_of(error) == asio::error::operation_aborted; }

  static error_code code_of(const std::exception_ptr& e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const boost::system::system_error& failure) {
      return failure.code();
    } catch (...) {
    }
    return {};
  }
};

auto record(std::shared_ptr<answer> into) {
  return [into = std::move(into)](std::exception_ptr e, int v) {
    ++into->calls;
    into->error = std::move(e);
    into->value = v;
  };
}

// A door an execution waits at: a timer that never expires by itself. open()
// lets the waiting executions through; a wait that ends while the door is
// shut was cancelled.
struct door {
  explicit door(asio::io_context& ctx) : timer(ctx, asio::steady_timer::time_point::max()) {}
  asio::steady_timer timer;
  bool opened = false;
  int entered = 0;    // executions that reached the door (fn calls)
  int cancelled = 0;  // executions cancelled while waiting at it

  awaitable<void> pass() {
    ++entered;
    auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (!opened) {
      ++cancelled;
      throw boost::system::system_error(ec);
    }
  }
  void open() {
    opened = true;
    timer.cancel();
  }
};

// fn: waits at the door, then produces value.
auto gated(door& d, int value) {
  return [&d, value]() -> awaitable<int> {
    co_await d.pass();
    co_return value;
  };
}

std::shared_ptr<answer> start(flights& sf, std::string key, door& d, int value) {
  auto result = std::make_shared<answer>();
  sf.run(std::move(key), gated(d, value), record(result));
  return result;
}

std::shared_ptr<answer> start_cancellable(flights& sf, std::string key, door& d, int value,
                                          asio::cancellation_signal& signal) {
  auto result = std::make_shared<answer>();
  sf.run(std::move(key), gated(d, value), asio::bind_cancellation_slot(signal.slot(), record(result)));
  return result;
}

std::string message_of(const std::exception_ptr& e) {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const std::exception& failure) {
    return failure.what();
  }
  return {};
}

}  // namespace

// --- Go's singleflight_test.go -------------------------------------------

TEST_CASE("single_flight: Do: one call returns fn's value and leaves nothing behind") {
  asio::io_context ctx;
  flights sf(ctx);
  int calls = 0;
  auto result = std::make_shared<answer>();
  sf.run("key", [&]() -> awaitable<int> { ++calls; co_return 7; }, record(result));
  CHECK_FALSE(result->done());  // never inline
  CHECK(sf.in_flight() == 1);
  CHECK(sf.callers("key") == 1);
  drain(ctx);
  REQUIRE(result->ok());
  CHECK(result->value == 7);
  CHECK(calls == 1);
  CHECK(sf.in_flight() == 0);
  CHECK(sf.callers("key") == 0);
  CHECK(sf.stats().started == 1);
  CHECK(sf.stats().joined == 0);
}

TEST_CASE("single_flight: fn is never called inside run(), even on its executor's own thread") {
  asio::io_context ctx;
  flights sf(ctx);
  int calls = 0;
  bool called_inside = true;
  auto result = std::make_shared<answer>();
  asio::post(ctx, [&] {
    sf.run("key", [&]() -> awaitable<int> { ++calls; co_return 1; }, record(result));
    called_inside = calls != 0;
  });
  drain(ctx);
  CHECK_FALSE(called_inside);
  CHECK(calls == 1);
  CHECK(result->ok());
}

TEST_CASE("single_flight: DoErr: fn's exception reaches the caller with T{}; the key is free at once") {
  asio::io_context ctx;
  flights sf(ctx);
  auto result = std::make_shared<answer>();
  sf.run("key", []() -> awaitable<int> { throw std::runtime_error("some error"); co_return 1; },
         record(result));
  drain(ctx);
  REQUIRE(result->done());
  CHECK(message_of(result->error) == "some error");
  CHECK(result->value == 0);
  CHECK(sf.in_flight() == 0);
  CHECK(sf.stats().exceptions == 1);

  auto again = std::make_shared<answer>();
  sf.run("key", []() -> awaitable<int> { co_return 2; }, record(again));
  drain(ctx);
  CHECK(again->ok());
  CHECK(again->value == 2);
  CHECK(sf.stats().started == 2);
}

TEST_CASE("single_flight: DoDupSuppress: callers during an execution join it and share its value") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  std::vector<std::shared_ptr<answer>> results;
  for (int i = 0; i < 10; ++i) {
    results.push_back(start(sf, "key", d, 100 + i));
    drain(ctx);
  }
  CHECK(d.entered == 1);
  CHECK(sf.callers("key") == 10);
  CHECK(sf.callers(std::string_view("key")) == 10);  // heterogeneous lookup
  CHECK(sf.in_flight() == 1);
  for (const auto& r : results) CHECK_FALSE(r->done());

  d.open();
  drain(ctx);
  for (const auto& r : results) {
    REQUIRE(r->ok());
    CHECK(r->value == 100);  // the first caller's fn
  }
  const auto stats = sf.stats();
  CHECK(stats.started == 1);
  CHECK(stats.joined == 9);
  CHECK(sf.in_flight() == 0);
}

TEST_CASE("single_flight: Forget: the next call starts a new execution; old callers get the old result") {
  asio::io_context ctx;
  flights sf(ctx);
  door first(ctx), second(ctx);
  auto a = start(sf, "key", first, 1);
  drain(ctx);
  sf.forget("key");
  CHECK(sf.in_flight() == 0);
  CHECK(sf.callers("key") == 0);
  auto b = start(sf, "key", second, 2);
  auto c = start(sf, "key", second, 3);  // joins the new one
  drain(ctx);
  CHECK(first.entered == 1);
  CHECK(second.entered == 1);
  CHECK(sf.callers("key") == 2);

  second.open();
  drain(ctx);
  CHECK(b->value == 2);
  CHECK(c->value == 2);
  CHECK_FALSE(a->done());
  first.open();
  drain(ctx);
  REQUIRE(a->ok());
  CHECK(a->value == 1);
  sf.forget("nothing");  // no effect on an idle key
  CHECK(sf.stats().started == 2);
}

TEST_CASE("single_flight: DoChan-style: callers on other executors join and complete on their own") {
  asio::io_context ctx, other;
  flights sf(ctx);
  door d(ctx);
  auto strand = asio::make_strand(other);
  std::vector<std::shared_ptr<answer>> results;
  std::vector<bool> on_strand;
  for (int i = 0; i < 4; ++i) {
    auto result = std::make_shared<answer>();
    results.push_back(result);
    sf.run("key", gated(d, 5), asio::bind_executor(strand, [&, result](std::exception_ptr e, int v) {
             on_strand.push_back(strand.running_in_this_thread());
             record(result)(std::move(e), v);
           }));
  }
  drain(ctx);
  d.open();
  drain(ctx);
  for (const auto& r : results) CHECK_FALSE(r->done());  // not until their executor runs
  drain(other);
  for (const auto& r : results) CHECK(r->value == 5);
  CHECK(on_strand == std::vector<bool>(4, true));
}

TEST_CASE("single_flight: panic: an fn that throws before returning its awaitable fails every caller") {
  asio::io_context ctx;
  flights sf(ctx);
  auto throwing = []() -> awaitable<int> { throw std::logic_error("panic"); };
  auto a = std::make_shared<answer>();
  auto b = std::make_shared<answer>();
  sf.run("key", throwing, record(a));  // does not throw
  sf.run("key", throwing, record(b));
  drain(ctx);
  CHECK(message_of(a->error) == "panic");
  CHECK(message_of(b->error) == "panic");
  CHECK(sf.in_flight() == 0);
  CHECK(sf.stats().exceptions == 1);
}

TEST_CASE("single_flight: an exception from fn after suspending reaches every joined caller") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  auto fn = [&]() -> awaitable<int> {
    co_await d.pass();
    throw std::runtime_error("late");
  };
  std::vector<std::shared_ptr<answer>> results(3);
  for (auto& r : results) {
    r = std::make_shared<answer>();
    sf.run("key", fn, record(r));
  }
  drain(ctx);
  d.open();
  drain(ctx);
  for (const auto& r : results) CHECK(message_of(r->error) == "late");
  CHECK(sf.in_flight() == 0);
}

// --- Semantics ---------------------------------------------------------------

TEST_CASE("single_flight: fn is kept alive until its awaitable completes") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  auto owned = std::make_shared<std::string>("captured");
  std::weak_ptr<std::string> watch = owned;
  auto result = std::make_shared<answer>();
  sf.run("key",
         [owned = std::move(owned), &d]() -> awaitable<int> {
           co_await d.pass();
           co_return static_cast<int>(owned->size());  // the capture, after suspending
         },
         record(result));
  drain(ctx);
  CHECK_FALSE(watch.expired());
  d.open();
  drain(ctx);
  CHECK(result->value == 8);
  CHECK(watch.expired());  // released with the execution
}

TEST_CASE("single_flight: a joining caller's fn is destroyed uncalled") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  auto first = start(sf, "key", d, 1);
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> watch = token;
  bool called = false;
  auto second = std::make_shared<answer>();
  sf.run("key", [token = std::move(token), &called]() -> awaitable<int> { called = true; co_return 2; },
         record(second));
  CHECK(watch.expired());
  drain(ctx);
  d.open();
  drain(ctx);
  CHECK_FALSE(called);
  CHECK(second->value == 1);
}

TEST_CASE("single_flight: keys are independent") {
  asio::io_context ctx;
  flights sf(ctx);
  door a(ctx), b(ctx);
  auto ra = start(sf, "a", a, 1);
  auto rb = start(sf, "b", b, 2);
  drain(ctx);
  CHECK(sf.in_flight() == 2);
  b.open();
  drain(ctx);
  CHECK(rb->value == 2);
  CHECK_FALSE(ra->done());
  CHECK(sf.in_flight() == 1);
  a.open();
  drain(ctx);
  CHECK(ra->value == 1);
}

TEST_CASE("single_flight: T = shared_ptr<const X> hands every caller the same object") {
  asio::io_context ctx;
  single_flight<std::string, std::shared_ptr<const std::string>> sf(ctx);
  door d(ctx);
  std::vector<std::shared_ptr<const std::string>> got(3);
  for (auto& slot : got) {
    sf.run("key",
           [&]() -> awaitable<std::shared_ptr<const std::string>> {
             co_await d.pass();
             co_return std::make_shared<const std::string>("shared");
           },
           [&slot](std::exception_ptr, std::shared_ptr<const std::string> v) { slot = std::move(v); });
  }
  drain(ctx);
  d.open();
  drain(ctx);
  REQUIRE(got[0]);
  CHECK(got[0] == got[1]);
  CHECK(got[1] == got[2]);
}

// A value whose copies throw: every caller but the last gets a copy.
struct copy_throws {
  int value = 0;
  copy_throws() = default;
  explicit copy_throws(int v) : value(v) {}
  copy_throws(const copy_throws&) { throw std::runtime_error("copy failed"); }
  copy_throws(copy_throws&&) noexcept = default;
  copy_throws& operator=(const copy_throws&) { throw std::runtime_error("copy failed"); }
  copy_throws& operator=(copy_throws&&) noexcept = default;
};

TEST_CASE("single_flight: a caller whose copy of T throws gets that exception; the last gets T moved") {
  asio::io_context ctx;
  single_flight<std::string, copy_throws> sf(ctx);
  std::vector<std::pair<std::exception_ptr, int>> got;
  auto fn = []() -> awaitable<copy_throws> { co_return copy_throws(5); };
  for (int i = 0; i < 2; ++i) {
    sf.run("key", fn, [&](std::exception_ptr e, copy_throws v) { got.emplace_back(e, v.value); });
  }
  drain(ctx);
  REQUIRE(got.size() == 2);
  CHECK(message_of(got[0].first) == "copy failed");
  CHECK(got[0].second == 0);
  CHECK_FALSE(got[1].first);
  CHECK(got[1].second == 5);
}

// --- Cancellation --------------------------------------------------------------

TEST_CASE("single_flight: cancelling one of many callers: it leaves, the others get the value") {
  for (const auto type : {cancellation_type::terminal, cancellation_type::partial,
                          cancellation_type::total}) {
    CAPTURE(static_cast<unsigned>(type));
    asio::io_context ctx;
    flights sf(ctx);
    door d(ctx);
    asio::cancellation_signal signal;
    auto a = start(sf, "key", d, 1);
    auto b = start_cancellable(sf, "key", d, 1, signal);
    auto c = start(sf, "key", d, 1);
    drain(ctx);
    signal.emit(type);
    drain(ctx);
    CHECK(b->aborted());
    CHECK(b->value == 0);
    CHECK_FALSE(signal.slot().has_handler());
    CHECK(sf.callers("key") == 2);
    CHECK_FALSE(a->done());
    CHECK(d.cancelled == 0);

    d.open();
    drain(ctx);
    CHECK(a->ok());
    CHECK(c->ok());
    CHECK(b->calls == 1);
    CHECK(sf.stats().cancelled == 1);
    CHECK(sf.stats().abandoned == 0);
  }
}

TEST_CASE("single_flight: a signal of type none is ignored; a caller handed the result ignores signals") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  asio::cancellation_signal signal;
  auto a = start_cancellable(sf, "key", d, 4, signal);
  drain(ctx);
  signal.emit(cancellation_type::none);
  drain(ctx);
  CHECK(sf.callers("key") == 1);
  d.open();
  ctx.run_one();  // the execution ends; the completion is posted, not run
  ctx.restart();
  CHECK_FALSE(a->done());
  signal.emit(cancellation_type::terminal);  // too late: the outcome is on its way
  drain(ctx);
  CHECK(a->ok());
  CHECK(a->value == 4);
  CHECK(sf.stats().cancelled == 0);
}

TEST_CASE("single_flight: cancelling every caller cancels the execution and frees the key") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  asio::cancellation_signal s1, s2;
  auto a = start_cancellable(sf, "key", d, 1, s1);
  auto b = start_cancellable(sf, "key", d, 1, s2);
  drain(ctx);
  s1.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(d.cancelled == 0);
  s2.emit(cancellation_type::terminal);
  CHECK(sf.in_flight() == 0);  // a new run() does not join the cancelled execution
  drain(ctx);
  CHECK(a->aborted());
  CHECK(b->aborted());
  CHECK(d.cancelled == 1);  // fn saw terminal cancellation
  const auto stats = sf.stats();
  CHECK(stats.cancelled == 2);
  CHECK(stats.abandoned == 1);
  CHECK(stats.exceptions == 0);  // the cancelled execution's exception is discarded

  door fresh(ctx);
  auto c = start(sf, "key", fresh, 2);
  drain(ctx);
  CHECK(fresh.entered == 1);
  fresh.open();
  drain(ctx);
  CHECK(c->value == 2);
}

TEST_CASE("single_flight: a new caller right after the last one left starts a new execution") {
  asio::io_context ctx;
  flights sf(ctx);
  door old_door(ctx), new_door(ctx);
  asio::cancellation_signal signal;
  auto a = start_cancellable(sf, "key", old_door, 1, signal);
  drain(ctx);
  signal.emit(cancellation_type::terminal);
  auto b = start(sf, "key", new_door, 2);  // before the cancellation reached fn
  drain(ctx);
  CHECK(old_door.cancelled == 1);
  CHECK(new_door.entered == 1);
  CHECK(sf.callers("key") == 1);
  new_door.open();
  drain(ctx);
  CHECK(b->value == 2);
  CHECK(a->aborted());
}

TEST_CASE("single_flight: with cancel_abandoned = false an abandoned execution finishes and can be joined") {
  asio::io_context ctx;
  flights sf(ctx, single_flight_options{0, false});
  door d(ctx);
  asio::cancellation_signal signal;
  auto a = start_cancellable(sf, "key", d, 9, signal);
  drain(ctx);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(a->aborted());
  CHECK(d.cancelled == 0);     // still running
  CHECK(sf.in_flight() == 1);  // and still joinable
  CHECK(sf.callers("key") == 0);

  SUBCASE("joined: the new caller gets its value") {
    auto b = start(sf, "key", d, 10);
    drain(ctx);
    CHECK(d.entered == 1);
    d.open();
    drain(ctx);
    CHECK(b->value == 9);
    CHECK(sf.stats().abandoned == 0);
  }
  SUBCASE("not joined: its value is discarded and the execution counted abandoned") {
    d.open();
    drain(ctx);
    CHECK(sf.in_flight() == 0);
    CHECK(sf.stats().abandoned == 1);
  }
}

TEST_CASE("single_flight: a cancelled awaiting coroutine throws operation_aborted") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  asio::cancellation_signal signal;
  std::optional<error_code> seen;
  asio::co_spawn(ctx,
                 [&]() -> awaitable<void> {
                   try {
                     auto pending = sf.run(std::string("key"), gated(d, 1));
                     co_await std::move(pending);
                   } catch (const boost::system::system_error& e) {
                     seen = e.code();
                   }
                 },
                 asio::bind_cancellation_slot(signal.slot(), asio::detached));
  drain(ctx);
  CHECK(sf.callers("key") == 1);
  signal.emit(cancellation_type::terminal);
  drain(ctx);
  CHECK(seen == asio::error::operation_aborted);
  CHECK(d.cancelled == 1);
}

// --- Token styles and executors ------------------------------------------------

TEST_CASE("single_flight: every token style gets the shared value") {
  asio::io_context ctx;
  flights sf(ctx);
  door d(ctx);
  int awaited = 0, tokenless = 0, called_back = 0;
  asio::co_spawn(ctx, [&]() -> awaitable<void> {
    // Built outside the co_await: GCC 12 destroys non-trivial temporaries of
    // a co_await expression twice.
    auto pending = sf.run(std::string("key"), gated(d, 3), asio::use_awaitable);
    awaited = co_await std::move(pending);
  }, asio::detached);
  asio::co_spawn(ctx, [&]() -> awaitable<void> {
    auto pending = sf.run(std::string("key"), gated(d, 3));
    tokenless = co_await std::move(pending);
  }, asio::detached);
  sf.run("key", gated(d, 3), [&](std::exception_ptr, int v) { called_back = v; });
  std::future<int> future = sf.run("key", gated(d, 3), asio::use_future);
  auto deferred = sf.run("key", gated(d, 3), asio::deferred);
  drain(ctx);
  CHECK(sf.callers("key") == 4);  // the deferred operation has not started
  int from_deferred = 0;
  std::move(deferred)([&](std::exception_ptr, int v) { from_deferred = v; });
  CHECK(sf.callers("key") == 5);
  d.open();
  drain(ctx);
  CHECK(awaited == 3);
  CHECK(tokenless == 3);
  CHECK(called_back == 3);
  CHECK(from_deferred == 3);
  // use_future completes on asio's system executor (its own thread): wait, bounded.
  REQUIRE(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  CHECK(future.get() == 3);
  CHECK(d.entered == 1);
}

TEST_CASE("single_flight: use_future rethrows fn's exception") {
  asio::io_context ctx;
  flights sf(ctx);
  auto future = sf.run("key", []() -> awaitable<int> { throw std::runtime_error("boom"); },
                       asio::use_future);
  drain(ctx);
  CHECK_THROWS_WITH_AS(future.get(), "boom", std::runtime_error);
}

TEST_CASE("single_flight: a caller's memory comes from its handler's allocator and is freed first") {
  asio::io_context ctx;
  flights sf(ctx);
  allocation_counts counts;
  bool freed_before_upcall = false;
  sf.run("key", []() -> awaitable<int> { co_return 1; },
         asio::bind_allocator(counting_allocator<void>(counts), [&](std::exception_ptr, int) {
           freed_before_upcall = counts.allocations == counts.deallocations;
         }));
  CHECK(counts.allocations >= 1);
  drain(ctx);
  CHECK(freed_before_upcall);
  CHECK(counts.allocations == counts.deallocations);
}

TEST_CASE("single_flight: a waiting caller keeps its executor's context from running out of work") {
  asio::io_context ctx, other;
  flights sf(ctx);
  door d(ctx);
  bool done = false;
  sf.run("key", gated(d, 1), asio::bind_executor(other, [&](std::exception_ptr, int) { done = true; }));
  drain(ctx);
  CHECK(other.poll() == 0);
  CHECK_FALSE(other.stopped());  // outstanding work: run() would wait
  d.open();
  drain(ctx);
  other.run();  // returns once the completion ran
  CHECK(done);
}

TEST_CASE("single_flight: construction errors") {
  asio::io_context ctx;
  CHECK_THROWS_AS(flights(ctx, single_flight_options{max_shards + 1}), std::invalid_argument);
  flights custom(ctx.get_executor(), single_flight_options{3});
  CHECK(custom.in_flight() == 0);
}

// --- Destruction, shutdown, memory -----------------------------------------------

TEST_CASE("single_flight: destruction aborts waiting callers and cancels running executions") {
  asio::io_context ctx;
  door d(ctx);
  std::shared_ptr<answer> a, b, forgotten;
  {
    flights sf(ctx);
    a = start(sf, "a", d, 1);
    b = start(sf, "a", d, 1);
    forgotten = start(sf, "b", d, 2);
    drain(ctx);
    sf.forget("b");
  }
  CHECK_FALSE(a->done());  // through their executors, never inline
  drain(ctx);
  CHECK(a->aborted());
  CHECK(b->aborted());
  CHECK(forgotten->aborted());
  CHECK(d.cancelled == 2);
  CHECK(d.entered == 2);
}

TEST_CASE("single_flight: destruction before the execution started") {
  asio::io_context ctx;
  bool called = false;
  auto result = std::make_shared<answer>();
  {
    flights sf(ctx);
    sf.run("k", [&]() -> awaitable<int> { called = true; co_return 1; }, record(result));
  }
  drain(ctx);
  CHECK(result->aborted());
  // The execution may start after the cancellation was emitted: its result
  // is discarded either way.
  CHECK(result->calls == 1);
  (void)called;
}

TEST_CASE("single_flight: context destroyed with executions and callers in flight, then the object") {
  auto result = std::make_shared<answer>();
  std::weak_ptr<answer> watch = result;
  auto ctx = std::make_unique<asio::io_context>();
  auto d = std::make_unique<door>(*ctx);
  flights sf(*ctx);
  sf.run("key", gated(*d, 1), record(std::move(result)));
  sf.run("key", gated(*d, 1), [](std::exception_ptr, int) {});
  drain(*ctx);
  CHECK(sf.callers("key") == 2);
  d.reset();  // the timer goes first: its wait completes aborted, queued
  ctx.reset();  // destroys fn's coroutine and, with it, the callers unrun
  CHECK(watch.expired());
  CHECK(sf.in_flight() == 0);
  CHECK(sf.callers("key") == 0);
}

TEST_CASE("single_flight: context destroyed before an execution started") {
  auto result = std::make_shared<answer>();
  std::weak_ptr<answer> watch = result;
  auto ctx = std::make_unique<asio::io_context>();
  {
    flights sf(*ctx);
    sf.run("key", []() -> awaitable<int> { co_return 1; }, record(std::move(result)));
    ctx.reset();
    CHECK(sf.in_flight() == 0);
  }
  CHECK(watch.expired());
}

TEST_CASE("single_flight: memory follows in-flight keys: none left once everything finished") {
  asio::io_context ctx;
  flights sf(ctx, single_flight_options{2});
  door d(ctx);
  auto probe = std::make_shared<int>(0);
  std::vector<std::shared_ptr<answer>> results;
  for (int i = 0; i < 500; ++i) {
    auto result = std::make_shared<answer>();
    results.push_back(result);
    sf.run("key" + std::to_string(i % 250),
           [&d, probe]() -> awaitable<int> {
             co_await d.pass();
             co_return 1;
           },
           record(result));
  }
  drain(ctx);
  CHECK(sf.in_flight() == 250);
  CHECK(probe.use_count() == 251);  // one fn per execution
  d.open();
  drain(ctx);
  CHECK(sf.in_flight() == 0);
  CHECK(probe.use_count() == 1);  // every execution's state is gone
  for (const auto& r : results) CHECK(r->ok());
  const auto stats = sf.stats();
  CHECK(stats.started == 250);
  CHECK(stats.joined == 250);
}

}  // namespace keysem::test
