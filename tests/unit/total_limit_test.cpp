// The total limit: at most total_limit permits across keys, on top of each
// key's own limit (semaphore_options::total_limit; docs/design.md, "The
// total limit").
#include "test_support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace keysem::test {
namespace {

semaphore_options with_total(std::size_t total, std::size_t max_waiters = unbounded) {
  semaphore_options options;
  options.total_limit = total;
  options.max_waiters_per_key = max_waiters;
  return options;
}

std::shared_ptr<outcome> start_cancellable(keyed_semaphore& sem, std::string key,
                                           asio::cancellation_signal& signal, std::size_t n = 1) {
  auto result = std::make_shared<outcome>();
  sem.acquire(std::move(key), n, asio::bind_cancellation_slot(signal.slot(), record(result)));
  return result;
}

}  // namespace

TEST_CASE("total: options are checked; without a total limit nothing changes") {
  asio::io_context ctx;
  CHECK_THROWS_AS(keyed_semaphore(ctx, 2, with_total(0)), std::invalid_argument);
  CHECK_THROWS_AS(keyed_semaphore(ctx, 2, with_total(keyed_semaphore::max_permits_per_key + 1)),
                  std::invalid_argument);
  keyed_semaphore plain(ctx, 2);
  CHECK(plain.total_limit() == unbounded);
  auto p = plain.try_acquire("a");
  auto q = plain.try_acquire("b", 2);
  CHECK(plain.total_in_use() == 3);
  CHECK(plain.total_waiting() == 0);
  keyed_semaphore capped(ctx, 2, with_total(3));
  CHECK(capped.total_limit() == 3);
}

TEST_CASE("total: both limits hold for try_acquire, counting weights") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, with_total(3));
  auto a = sem.try_acquire("a", 2);
  REQUIRE(a);
  CHECK_FALSE(sem.try_acquire("a"));  // the key's limit
  auto b = sem.try_acquire("b");
  REQUIRE(b);
  CHECK(sem.total_in_use() == 3);
  CHECK_FALSE(sem.try_acquire("b"));  // the total, though b has room
  CHECK_FALSE(sem.try_acquire("c"));
  CHECK(sem.key_count() == 2);  // a refused request creates no key
  a->release();
  CHECK(sem.try_acquire("c", 2));
  CHECK(sem.total_in_use() == 1);  // the temporary above was released
}

TEST_CASE("total: a request above the total limit is invalid, as above the key's limit") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 5, with_total(3));
  CHECK_THROWS_AS(sem.try_acquire("a", 4), std::invalid_argument);
  auto r = start(sem, "a", 4);
  drain(ctx);
  REQUIRE(r->done());
  CHECK(*r->ec == asio::error::invalid_argument);
  CHECK(sem.stats().invalid_argument == 2);
  sem.set_limit("big", 10);  // allowed: the total still bounds the key
  CHECK(sem.limit("big") == 10);
}

TEST_CASE("total: held back by the total, requests are granted oldest first across keys") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, with_total(3));
  auto a1 = sem.try_acquire("a");
  auto a2 = sem.try_acquire("a");
  auto b1 = sem.try_acquire("b");
  auto c = start(sem, "c");  // c's key admits it: it waits for the total
  auto b = start(sem, "b");
  auto a = start(sem, "a");  // a's key is full: it waits for its key
  drain(ctx);
  CHECK(sem.total_waiting() == 2);
  CHECK(sem.waiting("c") == 1);
  CHECK(sem.waiting("b") == 1);
  CHECK(sem.waiting("a") == 1);
  CHECK(sem.in_use("b") == 1);  // b's reservation is not a grant
  a1->release();                // a's key frees one (a moves to the total) and the total one: c
  drain(ctx);
  CHECK(c->succeeded());
  CHECK_FALSE(b->done());
  CHECK(sem.total_waiting() == 2);
  b1->release();
  drain(ctx);
  CHECK(b->succeeded());
  CHECK_FALSE(a->done());
  a2->release();
  drain(ctx);
  CHECK(a->succeeded());
  CHECK(sem.total_in_use() == 3);
  CHECK(sem.in_use("a") == 1);
  const auto stats = sem.stats();
  CHECK(stats.granted_immediately == 3);
  CHECK(stats.granted_after_wait == 3);
}

TEST_CASE("total: a hot key waits at the total with at most its own limit") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, with_total(2));
  auto x1 = sem.try_acquire("x");
  auto x2 = sem.try_acquire("x");
  std::vector<std::shared_ptr<outcome>> hot;
  for (int i = 0; i < 5; ++i) {
    hot.push_back(start(sem, "hot"));
  }
  drain(ctx);
  CHECK(sem.total_waiting() == 2);  // two reserved by the key, three in its queue
  CHECK(sem.waiting("hot") == 5);
  auto other = start(sem, "other");
  drain(ctx);
  CHECK(sem.total_waiting() == 3);
  x1->release();
  drain(ctx);
  CHECK(hot[0]->succeeded());
  x2->release();
  drain(ctx);
  CHECK(hot[1]->succeeded());
  hot[0]->granted.release();  // hot's third request reaches the total behind other's
  drain(ctx);
  CHECK(other->succeeded());
  CHECK_FALSE(hot[2]->done());
}

TEST_CASE("total: try_acquire does not overtake a request waiting at the total") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, with_total(2));
  auto x = sem.try_acquire("x", 2);
  auto big = start(sem, "big", 2);
  drain(ctx);
  x->release();  // frees 2: big is granted
  drain(ctx);
  REQUIRE(big->succeeded());
  auto y = sem.try_acquire("y");
  CHECK_FALSE(y);
  big->granted.release();
  auto z = sem.try_acquire("z");
  auto heavy = start(sem, "heavy", 2);  // waits for the total: one is free, it needs two
  drain(ctx);
  CHECK(sem.total_in_use() == 1);
  CHECK(sem.total_waiting() == 1);
  CHECK_FALSE(sem.try_acquire("w"));  // would overtake heavy
  z->release();
  drain(ctx);
  CHECK(heavy->succeeded());
}

TEST_CASE("total: a cancelled request leaves both stages with nothing held") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, with_total(1));
  auto x = sem.try_acquire("x");
  asio::cancellation_signal at_total;
  asio::cancellation_signal at_key;
  auto first = start_cancellable(sem, "a", at_total);  // waits for the total
  auto second = start_cancellable(sem, "a", at_key);   // waits for its key
  drain(ctx);
  CHECK(sem.waiting("a") == 2);
  CHECK(sem.in_use("a") == 0);
  at_total.emit(asio::cancellation_type::terminal);
  drain(ctx);
  CHECK(*first->ec == asio::error::operation_aborted);
  CHECK_FALSE(first->granted);
  CHECK(sem.total_waiting() == 1);  // second took first's place at the total
  at_key.emit(asio::cancellation_type::partial);
  drain(ctx);
  CHECK(*second->ec == asio::error::operation_aborted);
  CHECK(sem.waiting("a") == 0);
  CHECK(sem.total_waiting() == 0);
  CHECK(sem.key_count() == 1);  // only x
  CHECK(sem.stats().cancelled == 2);
  x->release();
  CHECK(sem.key_count() == 0);
  CHECK(sem.total_in_use() == 0);
}

TEST_CASE("total: a request cancelled on its way from its key's queue to the total") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, {1, unbounded, 1});
  auto a = sem.try_acquire("a");
  auto b = sem.try_acquire("b", 1);
  CHECK_FALSE(b);  // the total is a's
  asio::cancellation_signal signal;
  auto moving = start_cancellable(sem, "a", signal);
  drain(ctx);
  CHECK(sem.waiting("a") == 1);
  a->release();  // a's key frees: its drain moves the waiter towards the total, which is free
  // Run the drain alone: the waiter is granted by the total at once, or moved.
  ctx.poll_one();
  signal.emit(asio::cancellation_type::terminal);
  drain(ctx);
  REQUIRE(moving->done());
  if (*moving->ec) {
    CHECK(*moving->ec == asio::error::operation_aborted);
  }
  moving->granted.release();
  CHECK(sem.total_in_use() == 0);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("total: the transfer itself is cancellable (the total busy when the key frees)") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, with_total(1));
  auto a = sem.try_acquire("a");
  asio::cancellation_signal signal;
  auto waiter = start_cancellable(sem, "a", signal);
  drain(ctx);
  // a's key frees but the total stays taken by a second key: the waiter
  // moves to the total's queue.
  a->release();
  auto other = sem.try_acquire("other");
  REQUIRE(other);
  ctx.poll_one();  // a's drain: the waiter is reserved and sent to the total
  CHECK(sem.waiting("a") == 1);
  signal.emit(asio::cancellation_type::terminal);  // on its way, or queued there
  drain(ctx);
  REQUIRE(waiter->done());
  CHECK(*waiter->ec == asio::error::operation_aborted);
  CHECK(sem.waiting("a") == 0);
  CHECK(sem.total_waiting() == 0);
  CHECK(sem.key_count() == 1);
  other->release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("total: max_waiters_per_key counts requests at both stages") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, with_total(1, 1));
  auto x = sem.try_acquire("x");
  auto first = start(sem, "a");  // waits for the total
  auto second = start(sem, "a");
  drain(ctx);
  CHECK_FALSE(first->done());
  REQUIRE(second->done());
  CHECK(*second->ec == error::queue_full);
  keyed_semaphore never(ctx, 2, with_total(1, 0));
  auto y = never.try_acquire("y");
  auto refused = start(never, "b");
  drain(ctx);
  REQUIRE(refused->done());
  CHECK(*refused->ec == error::queue_full);
  CHECK(never.key_count() == 1);
  CHECK(never.stats().rejected_queue_full == 1);
}

TEST_CASE("total: a deadline at the total gives the key's reservation back") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, with_total(1));
  auto x = sem.try_acquire("x");
  std::optional<error_code> result;
  sem.acquire_for("a", std::chrono::milliseconds(0), [&](error_code ec, permit p) {
    result = ec;
    CHECK_FALSE(p);
  });
  ctx.run();
  REQUIRE(result);
  CHECK(*result == asio::error::timed_out);
  CHECK(sem.waiting("a") == 0);
  CHECK(sem.total_waiting() == 0);
  CHECK(sem.key_count() == 1);
  CHECK(sem.stats().timed_out == 1);
}

TEST_CASE("total: close completes requests at both stages with closed") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, with_total(1));
  auto x = sem.try_acquire("x");
  auto at_total = start(sem, "a");
  auto at_key = start(sem, "a");
  drain(ctx);
  sem.close();
  drain(ctx);
  CHECK(*at_total->ec == error::closed);
  CHECK(*at_key->ec == error::closed);
  CHECK(sem.total_waiting() == 0);
  CHECK(sem.key_count() == 1);
  auto late = start(sem, "b");
  drain(ctx);
  CHECK(*late->ec == error::closed);
  x->release();
  CHECK(sem.total_in_use() == 0);
}

TEST_CASE("total: destroying the semaphore aborts waiting requests; permits outlive it") {
  asio::io_context ctx;
  std::optional<permit> kept;
  std::shared_ptr<outcome> at_total;
  {
    keyed_semaphore sem(ctx, 1, with_total(1));
    kept = sem.try_acquire("x");
    at_total = start(sem, "a");
    drain(ctx);
  }
  drain(ctx);
  REQUIRE(at_total->done());
  CHECK(*at_total->ec == asio::error::operation_aborted);
  kept->release();  // gives the total back after the semaphore is gone
}

TEST_CASE("total: the context's shutdown destroys requests waiting at the total unrun") {
  std::shared_ptr<outcome> at_total;
  std::optional<permit> kept;
  auto ctx = std::make_unique<asio::io_context>();
  keyed_semaphore sem(*ctx, 1, with_total(1));
  kept = sem.try_acquire("x");
  at_total = start(sem, "a");
  at_total.reset();  // the handler owns the only other reference
  ctx->poll();
  ctx.reset();
  CHECK(sem.total_waiting() == 0);
  CHECK(sem.waiting("a") == 0);
  kept->release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("total: every token style waits at the total") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, with_total(1));
  auto x = sem.try_acquire("x");
  bool awaited = false;
  asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    auto p = co_await sem.acquire("a");
    awaited = static_cast<bool>(p);
  }, asio::detached);
  drain(ctx);
  CHECK(sem.total_waiting() == 1);
  x->release();
  drain(ctx);
  CHECK(awaited);
}

}  // namespace keysem::test
