// Regression tests named after the bugs the peers had (/work/shared/peers.md,
// "Bugs the peers had"): each reproduces the scenario that broke them.
#include "fault_support.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

namespace keysem::faults {

// ---------------------------------------------------------------------------
// Peer bug 1 — AsyncKeyedLock #5 and #68 (pooling), buck2 (DashMap
// get-then-insert): an entry erased while still referenced lets two holders in.
// ---------------------------------------------------------------------------

TEST_CASE("peer bug 1: an entry erased while referenced lets two holders in (single thread, every reclaim path)") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, semaphore_options{1});
  // The key's state dies and is re-created over and over, by every path
  // that can make it idle: a release, a cancelled waiter, a drain.
  for (int round = 0; round < 200; ++round) {
    auto a = sem.try_acquire("k");
    REQUIRE(a);
    CHECK_FALSE(sem.try_acquire("k"));  // one holder only
    asio::cancellation_signal signal;
    auto waiter = std::make_shared<outcome>();
    sem.acquire("k", asio::bind_cancellation_slot(signal.slot(), record(waiter)));
    if (round % 3 == 0) {
      signal.emit(asio::cancellation_type::terminal);
      drain(ctx);
      CHECK(*waiter->ec == asio::error::operation_aborted);
      CHECK(sem.in_use("k") == 1);
      a->release();  // the last reference: the state goes
    } else {
      a->release();  // the waiter takes over
      drain(ctx);
      REQUIRE(waiter->succeeded());
      CHECK_FALSE(sem.try_acquire("k"));  // still one holder
      waiter->granted.release();
    }
    CHECK(sem.key_count() == 0);
  }
}

TEST_CASE("peer bug 1: an entry erased while referenced lets two holders in (threads racing reclaim and re-create)") {
  // Every thread takes and releases the same key; each release of the last
  // permit reclaims the state while others look it up. A holder count above
  // the limit would mean two states for one key.
  constexpr int threads = 4;
  constexpr int rounds = 20000;
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  std::atomic<int> holders{0};
  std::atomic<int> worst{0};
  std::atomic<long> taken{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < rounds; ++i) {
        if (auto p = sem.try_acquire("hot")) {
          const int now = holders.fetch_add(1) + 1;
          int seen = worst.load();
          while (now > seen && !worst.compare_exchange_weak(seen, now)) {
          }
          ++taken;
          holders.fetch_sub(1);
          p->release();
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  CHECK(worst.load() == 1);
  CHECK(taken.load() > 0);
  CHECK(sem.key_count() == 0);
}

// ---------------------------------------------------------------------------
// Peer bug 2 — keyed-semaphores #140: after a timeout or cancellation the
// entry is never removed.
// ---------------------------------------------------------------------------

TEST_CASE("peer bug 2: entry leaked after a timeout or cancellation") {
  using namespace asio::experimental::awaitable_operators;
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  SUBCASE("a failed try_acquire on a new key leaves nothing") {
    auto full = sem.try_acquire("k");
    CHECK_FALSE(full);
    CHECK(sem.key_count() == 1);
  }
  SUBCASE("a timeout (acquire || timer) leaves nothing") {
    int timeouts = 0;
    for (int i = 0; i < 50; ++i) {
      asio::co_spawn(
          ctx,
          [&]() -> asio::awaitable<void> {
            asio::steady_timer timer(ctx, std::chrono::microseconds(100));
            auto winner = co_await (sem.acquire("k", asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
            if (winner.index() == 1) ++timeouts;
          },
          asio::detached);
    }
    ctx.run();
    ctx.restart();
    CHECK(timeouts == 50);
  }
  SUBCASE("each cancellation type leaves nothing, on a fresh key and on a held one") {
    for (auto type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                      asio::cancellation_type::total}) {
      for (const char* key : {"k", "fresh"}) {
        std::optional<permit> blocker;
        if (std::string(key) == "fresh") blocker = sem.try_acquire(key);
        asio::cancellation_signal signal;
        auto result = std::make_shared<outcome>();
        sem.acquire(key, asio::bind_cancellation_slot(signal.slot(), record(result)));
        signal.emit(type);
        drain(ctx);
        CHECK(*result->ec == asio::error::operation_aborted);
        blocker.reset();
      }
    }
  }
  CHECK(sem.waiting("k") == 0);
  CHECK(sem.key_count() == 1);  // only the held key
  held->release();
  CHECK(sem.key_count() == 0);
}

// ---------------------------------------------------------------------------
// Peer bug 3 — Go x/sync semaphore (issues 37852, 63615, 67723): cancellation
// racing a grant lost or duplicated permits. keysem decides it once: a
// cancellation emitted before the grant wins, after it is ignored.
// ---------------------------------------------------------------------------

TEST_CASE("peer bug 3: cancellation racing a grant, deterministic sides of the race") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  SUBCASE("cancel decided before the drain runs: aborted, the permit goes back") {
    auto held = sem.try_acquire("k");
    asio::cancellation_signal signal;
    auto result = std::make_shared<outcome>();
    sem.acquire("k", asio::bind_cancellation_slot(signal.slot(), record(result)));
    drain(ctx);
    held->release();                                // drain scheduled, not run
    signal.emit(asio::cancellation_type::total);    // wins: the op is still waiting
    drain(ctx);
    CHECK(*result->ec == asio::error::operation_aborted);
    CHECK(sem.in_use("k") == 0);
    CHECK(sem.key_count() == 0);
  }
  SUBCASE("cancel after the grant is decided: ignored, the handler gets the permit") {
    auto held = sem.try_acquire("k");
    asio::cancellation_signal signal;
    auto result = std::make_shared<outcome>();
    sem.acquire("k", asio::bind_cancellation_slot(signal.slot(), record(result)));
    drain(ctx);
    held->release();
    CHECK(ctx.poll_one() == 1);                     // the drain grants; completion posted
    signal.emit(asio::cancellation_type::terminal); // too late
    drain(ctx);
    REQUIRE(result->succeeded());
    CHECK(result->calls == 1);
    CHECK(sem.in_use("k") == 1);
    result->granted.release();
    CHECK(sem.key_count() == 0);
  }
}

TEST_CASE("peer bug 3: cancellation racing a grant across threads never loses or duplicates a permit") {
  // Two threads run the context. The waiter's handler is bound to a strand,
  // and the signal is emitted on that strand (as the contract asks: from the
  // handler's executor), while a third thread releases the permit, so the
  // grant (the shard's strand, on one thread) and the cancel (the handler's
  // strand, on the other) race on the op's status for real. Each waiter
  // ends exactly once, aborted with no permit or granted with one; at the
  // end nothing is held or waiting.
  constexpr int rounds = 2000;
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto work = asio::make_work_guard(ctx);
  std::thread runner1([&] { ctx.run(); });
  std::thread runner2([&] { ctx.run(); });
  int aborted = 0;
  int granted = 0;
  for (int i = 0; i < rounds; ++i) {
    auto held = sem.try_acquire("k");
    REQUIRE(held);
    auto strand = asio::make_strand(ctx);
    asio::cancellation_signal signal;
    std::promise<std::pair<error_code, std::size_t>> done;
    auto future = done.get_future();
    std::atomic<int> calls{0};
    std::promise<void> queued;
    // Started on the strand too: the signal's slot is only touched there.
    asio::post(strand, [&] {
      sem.acquire("k", asio::bind_executor(strand, asio::bind_cancellation_slot(
                                                       signal.slot(), [&](error_code ec, permit p) {
                                                         ++calls;
                                                         done.set_value({ec, p.count()});
                                                       })));
      queued.set_value();
    });
    queued.get_future().wait();
    std::thread releaser([&] { held->release(); });
    if (i % 2 == 0) std::this_thread::yield();
    asio::post(strand, [&] { signal.emit(asio::cancellation_type::terminal); });
    releaser.join();
    const auto [ec, count] = future.get();
    CHECK(calls.load() == 1);
    if (ec) {
      CHECK(ec == asio::error::operation_aborted);
      CHECK(count == 0);
      ++aborted;
    } else {
      CHECK(count == 1);
      ++granted;
    }
    // Let the emit (if still queued) run before the signal goes out of scope.
    std::promise<void> flushed;
    asio::post(strand, [&] { flushed.set_value(); });
    flushed.get_future().wait();
    // The permit (if any) died with the handler's argument.
    for (int spin = 0; spin < 100000 && (sem.in_use("k") != 0 || sem.waiting("k") != 0); ++spin) {
      std::this_thread::yield();
    }
    REQUIRE(sem.in_use("k") == 0);
    REQUIRE(sem.waiting("k") == 0);
  }
  work.reset();
  runner1.join();
  runner2.join();
  CHECK(aborted + granted == rounds);
  MESSAGE("cancel won " << aborted << " times, the grant " << granted << " times");
  CHECK(sem.key_count() == 0);
}

// ---------------------------------------------------------------------------
// Peer bug 6 / Go #56910 (head-of-line blocking): a cancelled head-of-line
// weighted waiter must let the smaller ones behind it through at once.
// ---------------------------------------------------------------------------

TEST_CASE("peer bug 4: head-of-line weighted waiter cancelled lets smaller ones through") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 4);
  auto three = sem.try_acquire("k", 3);
  asio::cancellation_signal signal;
  auto big = std::make_shared<outcome>();
  sem.acquire("k", 4, asio::bind_cancellation_slot(signal.slot(), record(big)));
  auto small1 = start(sem, "k", 1);
  auto small2 = start(sem, "k", 1);
  drain(ctx);
  CHECK_FALSE(small1->done());  // head-of-line: blocked behind the 4
  CHECK_FALSE(sem.try_acquire("k"));
  signal.emit(asio::cancellation_type::partial);
  drain(ctx);
  CHECK(*big->ec == asio::error::operation_aborted);
  REQUIRE(small1->succeeded());  // the free permit goes to the first small one at once
  CHECK_FALSE(small2->done());   // and the second waits for one more
  CHECK(sem.in_use("k") == 4);
  three->release();
  drain(ctx);
  CHECK(small2->succeeded());
  small1->granted.release();
  small2->granted.release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("peer bug 4: a cancelled weighted waiter in the middle of the queue does not reorder the rest") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 3);
  auto all = sem.try_acquire("k", 3);
  auto first = start(sem, "k", 2);
  asio::cancellation_signal signal;
  auto middle = std::make_shared<outcome>();
  sem.acquire("k", 3, asio::bind_cancellation_slot(signal.slot(), record(middle)));
  auto last = start(sem, "k", 1);
  drain(ctx);
  signal.emit(asio::cancellation_type::total);
  all->release();
  drain(ctx);
  REQUIRE(first->succeeded());
  CHECK(*middle->ec == asio::error::operation_aborted);
  CHECK(last->succeeded());  // 2 + 1 fit once the 3 has left
  CHECK(sem.in_use("k") == 3);
}

// ---------------------------------------------------------------------------
// The other hazards peers.md lists.
// ---------------------------------------------------------------------------

TEST_CASE("peer hazard (Go keyed-semaphore): a double release cannot free someone else's slot") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto mine = sem.try_acquire("k");
  mine->release();
  auto theirs = sem.try_acquire("k");
  REQUIRE(theirs);
  mine->release();  // idempotent: mine is empty
  CHECK(sem.in_use("k") == 1);
  CHECK_FALSE(sem.try_acquire("k"));
}

TEST_CASE("peer hazard (Go keyed-semaphore, x/sync Weighted): a limit of 0 and n > limit are rejected, never block") {
  asio::io_context ctx;
  CHECK_THROWS_AS(keyed_semaphore(ctx, 0), std::invalid_argument);
  keyed_semaphore sem(ctx, 2);
  auto too_many = start(sem, "k", 3);
  drain(ctx);
  CHECK(*too_many->ec == asio::error::invalid_argument);
  CHECK_THROWS_AS(sem.try_acquire("k", 3), std::invalid_argument);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("peer hazard (keyed-semaphores #62, Guava #2653): keys sharing a shard never share a limit or deadlock") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1, semaphore_options{1});  // every key on one shard
  std::vector<permit> held;
  for (int i = 0; i < 64; ++i) {
    auto p = sem.try_acquire("key" + std::to_string(i));
    REQUIRE(p);
    held.push_back(std::move(*p));
  }
  // Nested: holding every key, a waiter on one and an acquire on another.
  auto waiter = start(sem, "key0");
  auto fresh = start(sem, "fresh");
  drain(ctx);
  CHECK_FALSE(waiter->done());
  CHECK(fresh->succeeded());
  held.front().release();
  drain(ctx);
  CHECK(waiter->succeeded());
}

TEST_CASE("peer hazard (keyed-semaphores): the initiating call never blocks the thread") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  const auto start_time = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    sem.acquire("k", [](error_code, permit) {});
  }
  const auto elapsed = std::chrono::steady_clock::now() - start_time;
  CHECK(elapsed < std::chrono::seconds(2));  // 1000 waits registered, none waited
  CHECK(sem.waiting("k") == 1000);
  sem.close();
  drain(ctx);
  CHECK(sem.waiting("k") == 0);
}

}  // namespace keysem::faults
