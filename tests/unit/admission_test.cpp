// Admission control: per-key limits, bounded queues, usage counters, key
// enumeration.
#include "test_support.hpp"

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace keysem::test {

TEST_CASE("limits: a string key's state stays one cache line with its limit") {
  CHECK(sizeof(detail::key_state<std::string>) == 64);
}

TEST_CASE("limits: an override applies to an idle key at its first use") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  sem.set_limit("gold", 5);
  CHECK(sem.limit("gold") == 5);
  CHECK(sem.limit("free") == 2);
  CHECK(sem.key_count() == 0);  // an override alone is not a live key
  std::vector<permit> held;
  for (int i = 0; i < 5; ++i) {
    auto p = sem.try_acquire("gold");
    REQUIRE(p);
    held.push_back(std::move(*p));
  }
  CHECK_FALSE(sem.try_acquire("gold"));
  CHECK(sem.available("gold") == 0);
  CHECK(sem.try_acquire("free", 2));
  CHECK_THROWS_AS(sem.try_acquire("free", 3), std::invalid_argument);
  CHECK(sem.try_acquire("gold", 5).has_value() == false);  // busy, not invalid
}

TEST_CASE("limits: set_limit rejects 0 and values above max_permits_per_key") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  CHECK_THROWS_AS(sem.set_limit("k", 0), std::invalid_argument);
  CHECK_THROWS_AS(sem.set_limit("k", keyed_semaphore::max_permits_per_key + 1),
                  std::invalid_argument);
  CHECK(sem.limit("k") == 2);
}

TEST_CASE("limits: raising a live key's limit grants weighted waiters in FIFO order, head first") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  auto held = sem.try_acquire("k", 2);
  auto big = start(sem, "k", 2);
  auto small = start(sem, "k", 1);
  drain(ctx);
  CHECK(sem.waiting("k") == 2);
  sem.set_limit("k", 3);  // 2 held + 2 wanted > 3: the head still blocks the small one
  drain(ctx);
  CHECK_FALSE(big->done());
  CHECK_FALSE(small->done());
  sem.set_limit("k", 5);  // now both fit, in order
  drain(ctx);
  CHECK(big->succeeded());
  CHECK(small->succeeded());
  CHECK(sem.in_use("k") == 5);
  CHECK(sem.stats().granted_after_wait == 2);
}

TEST_CASE("limits: lowering a limit revokes nothing and grants nothing until usage fits") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 4);
  auto a = sem.try_acquire("k", 3);
  auto waiter = start(sem, "k", 1);  // fits under 4: granted at once
  drain(ctx);
  CHECK(waiter->succeeded());
  sem.set_limit("k", 2);
  CHECK(sem.in_use("k") == 4);  // nothing revoked
  CHECK(sem.available("k") == 0);
  auto next = start(sem, "k", 1);
  drain(ctx);
  CHECK_FALSE(next->done());
  a->release();  // 1 held: 1 + 1 <= 2
  drain(ctx);
  CHECK(next->succeeded());
  CHECK(sem.in_use("k") == 2);
}

TEST_CASE("limits: a waiter whose n exceeds a lowered limit completes with invalid_argument, wherever it waits") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 4);
  auto held = sem.try_acquire("k", 4);
  auto first = start(sem, "k", 1);
  auto big = start(sem, "k", 3);
  auto last = start(sem, "k", 1);
  drain(ctx);
  sem.set_limit("k", 2);
  drain(ctx);
  CHECK_FALSE(first->done());
  REQUIRE(big->done());
  CHECK(*big->ec == asio::error::invalid_argument);
  CHECK_FALSE(big->granted);
  CHECK(sem.waiting("k") == 2);
  held.reset();
  drain(ctx);
  CHECK(first->succeeded());
  CHECK(last->succeeded());
  CHECK(sem.stats().invalid_argument == 1);
}

TEST_CASE("limits: reset_limit while held takes effect at once and keeps the holders") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  sem.set_limit("k", 3);
  auto a = sem.try_acquire("k", 3);
  REQUIRE(a);
  auto waiter = start(sem, "k", 1);
  sem.reset_limit("k");
  CHECK(sem.limit("k") == 1);
  CHECK(sem.in_use("k") == 3);
  a.reset();
  drain(ctx);
  CHECK(waiter->succeeded());
  sem.reset_limit("never-set");  // no override: no effect
  CHECK(sem.limit("never-set") == 1);
}

TEST_CASE("limits: acquire above a key's own limit completes with invalid_argument") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 8);
  sem.set_limit("small", 2);
  auto too_big = start(sem, "small", 3);
  auto fine = start(sem, "other", 3);
  drain(ctx);
  CHECK(*too_big->ec == asio::error::invalid_argument);
  CHECK(fine->succeeded());
  CHECK(sem.key_count() == 1);
}

TEST_CASE("bounded queue: a bound of 0 means acquires never wait") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, semaphore_options{.max_waiters_per_key = 0});
  auto first = start(sem, "k");
  auto second = start(sem, "k");
  CHECK_FALSE(second->done());  // never inline
  drain(ctx);
  CHECK(first->succeeded());
  CHECK(*second->ec == keysem::error::queue_full);
  CHECK_FALSE(second->granted);
  CHECK(sem.waiting("k") == 0);
  CHECK(sem.in_use("k") == 1);
  CHECK(sem.stats().rejected_queue_full == 1);
}

TEST_CASE("bounded queue: a bound of N admits N waiters, and room returns as they leave") {
  for (std::size_t bound : {1, 3}) {
    asio::io_context ctx;
    keyed_semaphore sem(ctx, 1, semaphore_options{.max_waiters_per_key = bound});
    auto held = sem.try_acquire("k");
    std::vector<std::shared_ptr<outcome>> waiters;
    for (std::size_t i = 0; i < bound; ++i) {
      waiters.push_back(start(sem, "k"));
    }
    auto refused = start(sem, "k");
    drain(ctx);
    CHECK(sem.waiting("k") == bound);
    CHECK(*refused->ec == keysem::error::queue_full);
    held.reset();  // the first waiter is granted: one place frees up
    drain(ctx);
    CHECK(waiters.front()->succeeded());
    auto admitted = start(sem, "k");
    drain(ctx);
    CHECK_FALSE(admitted->done());
    CHECK(sem.waiting("k") == bound);
  }
}

TEST_CASE("bounded queue: a cancelled waiter counts until it has left, then frees its place") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, semaphore_options{.max_waiters_per_key = 1});
  auto held = sem.try_acquire("k");
  asio::cancellation_signal signal;
  auto waiter = std::make_shared<outcome>();
  sem.acquire("k", 1, asio::bind_cancellation_slot(signal.slot(), record(waiter)));
  drain(ctx);
  signal.emit(asio::cancellation_type::terminal);
  auto refused = start(sem, "k");  // the cancelled op has not left the queue yet
  drain(ctx);
  CHECK(*waiter->ec == asio::error::operation_aborted);
  CHECK(*refused->ec == keysem::error::queue_full);
  auto admitted = start(sem, "k");
  drain(ctx);
  CHECK_FALSE(admitted->done());
  sem.close();
  drain(ctx);
  CHECK(*admitted->ec == keysem::error::closed);
  const auto stats = sem.stats();
  CHECK(stats.cancelled == 1);
  CHECK(stats.rejected_queue_full == 1);
  CHECK(stats.rejected_closed == 1);
}

TEST_CASE("stats: every kind of outcome lands in exactly one counter") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, semaphore_options{.max_waiters_per_key = 2});
  auto held = sem.try_acquire("a");                         // granted_immediately
  CHECK_FALSE(sem.try_acquire("a"));                        // try_failed
  CHECK_THROWS_AS(sem.try_acquire("a", 0), std::invalid_argument);  // invalid_argument
  auto immediate = start(sem, "b");                         // granted_immediately
  auto invalid = start(sem, "a", 2);                        // invalid_argument
  auto granted_later = start(sem, "a");                     // granted_after_wait
  asio::cancellation_signal signal;
  auto cancelled = std::make_shared<outcome>();
  sem.acquire("a", 1, asio::bind_cancellation_slot(signal.slot(), record(cancelled)));
  auto full = start(sem, "a");                              // rejected_queue_full
  drain(ctx);
  signal.emit(asio::cancellation_type::terminal);           // cancelled
  drain(ctx);
  held.reset();
  drain(ctx);
  CHECK(granted_later->succeeded());
  auto closed_waiter = start(sem, "a");  // waits behind granted_later's permit
  drain(ctx);
  sem.close();                                              // rejected_closed
  CHECK_FALSE(sem.try_acquire("c"));                        // rejected_closed
  auto after_close = start(sem, "c");                       // rejected_closed
  drain(ctx);
  const auto s = sem.stats();
  CHECK(s.granted_immediately == 2);
  CHECK(s.try_failed == 1);
  CHECK(s.invalid_argument == 2);
  CHECK(s.granted_after_wait == 1);
  CHECK(s.cancelled == 1);
  CHECK(s.rejected_queue_full == 1);
  CHECK(s.rejected_closed == 3);
  CHECK(s.timed_out == 0);
  CHECK(s.keys == sem.key_count());
  CHECK(s.in_use == 2);  // immediate's "b" and granted_later's "a"
  CHECK(s.waiting == 0);
}

TEST_CASE("stats: the awaitable acquire counts once, whether it waits or not") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  int finished = 0;
  auto body = [&]() -> asio::awaitable<void> {
    auto p = co_await sem.acquire("k");
    auto q = co_await sem.acquire("other");
    ++finished;
  };
  asio::co_spawn(ctx, body(), asio::detached);
  drain(ctx);
  held.reset();
  drain(ctx);
  CHECK(finished == 1);
  const auto s = sem.stats();
  CHECK(s.granted_immediately == 2);  // the try_acquire and "other"
  CHECK(s.granted_after_wait == 1);
  CHECK(s.try_failed == 0);
}

TEST_CASE("for_each_key: visits exactly the live keys with their usage") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, semaphore_options{4});
  sem.set_limit("c", 7);  // an override alone: not visited
  auto a = sem.try_acquire("a", 2);
  auto b = sem.try_acquire("b");
  auto waiter = start(sem, "a");
  drain(ctx);
  std::map<std::string, key_usage> seen;
  sem.for_each_key([&](const std::string& key, key_usage usage) {
    // f runs without the shard's lock: calling back in is allowed.
    CHECK(sem.in_use(key) == usage.in_use);
    seen[key] = usage;
  });
  CHECK(seen.size() == sem.key_count());
  REQUIRE(seen.size() == 2);
  CHECK(seen["a"].in_use == 2);
  CHECK(seen["a"].waiting == 1);
  CHECK(seen["a"].limit == 2);
  CHECK(seen["b"].in_use == 1);
  CHECK(seen["b"].waiting == 0);
  CHECK(sem.stats().keys == 2);
}

}  // namespace keysem::test
