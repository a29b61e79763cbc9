// keysem::async_semaphore under concurrency: weighted acquires from
// coroutines and callbacks on a thread pool, racing try_acquire on plain
// threads, cancellations, deadlines, close and destruction. Held permits never
// exceed permits(); every operation ends exactly once; nothing is left after.
#include "stress_support.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

namespace keysem::stress {
namespace {

using namespace std::chrono_literals;
using semaphore = keysem::async_semaphore<>;
using upermit = semaphore::permit;

// Every outcome an operation of the mixed workload can end with.
struct tally {
  std::atomic<std::size_t> started{0};
  std::atomic<std::size_t> granted{0};
  std::atomic<std::size_t> try_failed{0};
  std::atomic<std::size_t> timed_out{0};
  std::atomic<std::size_t> lost_race{0};  // acquire || timer: the timer won
  std::atomic<std::size_t> other{0};

  std::size_t ended() const {
    return granted.load() + try_failed.load() + timed_out.load() + lost_race.load() + other.load();
  }
};

// Holds a granted permit for a moment, reporting it to the board (key 0):
// more holders than permits() is a violation.
void hold(upermit p, std::size_t n, holder_board& board, violations& log, unsigned delay) {
  KEYSEM_EXPECT(log, p.count() == n, "a permit holds " << p.count() << ", asked " << n);
  board.enter(0, static_cast<int>(p.count()));
  busy_delay(delay);
  board.leave(0, static_cast<int>(p.count()));
  p.release();
}

// hold() across one turn of the event loop, so that other threads run while
// the permit is held.
asio::awaitable<void> hold_a_turn(upermit p, std::size_t n, holder_board& board, violations& log,
                                  unsigned delay) {
  KEYSEM_EXPECT(log, p.count() == n, "a permit holds " << p.count() << ", asked " << n);
  board.enter(0, static_cast<int>(p.count()));
  busy_delay(delay);
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  busy_delay(delay);
  board.leave(0, static_cast<int>(p.count()));
}

// One coroutine: a random mix of the token-less acquire, acquire_for,
// acquire racing a timer (cancellation), and try_acquire; weights 1..3.
asio::awaitable<void> mixed_client(semaphore& sem, holder_board& board, violations& log, tally& t,
                                   std::uint64_t seed, std::size_t rounds, steady::time_point stop) {
  using namespace asio::experimental::awaitable_operators;
  std::mt19937_64 rng(seed);
  auto ex = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < rounds && steady::now() < stop; ++i) {
    const std::size_t n = 1 + rng() % 3;
    const auto delay = static_cast<unsigned>(rng() % 200);
    t.started.fetch_add(1, std::memory_order_relaxed);
    switch (rng() % 4) {
      case 0: {
        co_await hold_a_turn(co_await sem.acquire(n), n, board, log, delay);
        t.granted.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      case 1: {
        auto [ec, p] = co_await sem.acquire_for(n, std::chrono::microseconds(rng() % 300),
                                                asio::as_tuple(asio::use_awaitable));
        if (!ec) {
          co_await hold_a_turn(std::move(p), n, board, log, delay);
          t.granted.fetch_add(1, std::memory_order_relaxed);
        } else if (ec == asio::error::timed_out) {
          KEYSEM_EXPECT(log, !p, "a timed-out acquire holds a permit");
          t.timed_out.fetch_add(1, std::memory_order_relaxed);
        } else {
          t.other.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      case 2: {
        asio::steady_timer timer(ex, std::chrono::microseconds(rng() % 200));
        auto winner = co_await (sem.acquire(n, asio::use_awaitable) ||
                                timer.async_wait(asio::use_awaitable));
        if (winner.index() == 0) {
          co_await hold_a_turn(std::move(std::get<0>(winner)), n, board, log, delay);
          t.granted.fetch_add(1, std::memory_order_relaxed);
        } else {
          t.lost_race.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      default: {
        if (auto p = sem.try_acquire(n)) {
          hold(std::move(*p), n, board, log, delay);
          t.granted.fetch_add(1, std::memory_order_relaxed);
        } else {
          t.try_failed.fetch_add(1, std::memory_order_relaxed);
        }
        co_await asio::post(ex, asio::use_awaitable);
        break;
      }
    }
  }
}

}  // namespace

TEST_CASE("async_semaphore stress: weighted acquires, cancellations and deadlines never exceed permits()") {
  violations log;
  watchdog guard("async_semaphore stress");
  constexpr int permits = 5;
  asio::thread_pool pool(4);
  semaphore sem(pool, permits);
  holder_board board(1, permits, log);
  tally t;
  completion_counter done;
  const auto stop = busy_deadline(0.25);
  const std::size_t clients = 64;
  const std::size_t rounds = scaled(60);
  std::atomic<std::size_t> exceptions{0};
  for (std::size_t c = 0; c < clients; ++c) {
    // Each client on its own strand: acquire || timer completes its two
    // branches on the coroutine's executor, and asio's parallel_group needs
    // them serialised (the cancellation of the loser is emitted from there).
    asio::co_spawn(asio::make_strand(pool),
                   mixed_client(sem, board, log, t, seed_for(901, c), rounds, stop),
                   [&](std::exception_ptr e) {
                     if (e) {
                       exceptions.fetch_add(1);
                       log.add("a client failed: " + describe(e));
                     }
                     done.add();
                   });
  }
  // Plain threads race the strand with try_acquire and releases.
  std::vector<std::thread> tries;
  for (std::uint64_t w = 0; w < 2; ++w) {
    tries.emplace_back([&, w] {
      std::mt19937_64 rng(seed_for(902, w));
      for (std::size_t i = 0; i < scaled(3000) && steady::now() < stop; ++i) {
        const std::size_t n = 1 + rng() % 2;
        t.started.fetch_add(1, std::memory_order_relaxed);
        if (auto p = sem.try_acquire(n)) {
          hold(std::move(*p), n, board, log, static_cast<unsigned>(rng() % 50));
          t.granted.fetch_add(1, std::memory_order_relaxed);
        } else {
          t.try_failed.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& thread : tries) {
    thread.join();
  }
  REQUIRE(done.wait_for(clients, completion_bound()));
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(exceptions.load() == 0);
  CHECK(board.max() <= permits);
  CHECK(t.other.load() == 0);
  CHECK(t.ended() == t.started.load());
  CHECK(t.granted.load() > 0);
  const auto s = sem.stats();
  CHECK(s.granted_after_wait > 0);
  // Each operation is one outcome. An acquire that lost to its timer is
  // either cancelled or was granted just before the cancellation reached it
  // (its permit was dropped by the || operator).
  CHECK(s.granted_immediately + s.granted_after_wait + s.try_failed + s.cancelled + s.timed_out ==
        t.started.load());
  CHECK(s.try_failed == t.try_failed.load());
  CHECK(s.timed_out == t.timed_out.load());
  CHECK(s.cancelled <= t.lost_race.load());
  CHECK(s.granted_immediately + s.granted_after_wait == t.granted.load() + t.lost_race.load() - s.cancelled);
  CHECK(s.rejected_closed == 0);
  CHECK(s.invalid_argument == 0);
  CHECK(sem.in_use() == 0);
  CHECK(sem.waiting() == 0);
  CHECK(sem.try_acquire(permits));
  if (verbose()) {
    std::printf("async_semaphore stress: %zu ops, %zu granted, %zu timed out, %zu lost to a timer (%llu cancelled), max held %d\n",
                t.started.load(), t.granted.load(), t.timed_out.load(), t.lost_race.load(),
                static_cast<unsigned long long>(s.cancelled), board.max());
  }
}

TEST_CASE("async_semaphore stress: callbacks from many threads complete exactly once, in any race with releases") {
  violations log;
  watchdog guard("async_semaphore callback stress");
  constexpr int permits = 3;
  asio::thread_pool pool(4);
  semaphore sem(pool, permits);
  holder_board board(1, permits, log);
  const std::size_t per_thread = scaled(1500);
  constexpr std::size_t threads = 3;
  std::vector<std::atomic<int>> calls(per_thread * threads);
  completion_counter done;
  std::atomic<std::size_t> granted{0};
  std::atomic<std::size_t> timed_out{0};
  std::vector<std::thread> starters;
  for (std::size_t w = 0; w < threads; ++w) {
    starters.emplace_back([&, w] {
      std::mt19937_64 rng(seed_for(903, w));
      for (std::size_t i = 0; i < per_thread; ++i) {
        const std::size_t slot = w * per_thread + i;
        const std::size_t n = 1 + rng() % permits;
        const auto delay = static_cast<unsigned>(rng() % 100);
        auto handler = asio::bind_executor(pool, [&, slot, n, delay](error_code ec, upermit p) {
          calls[slot].fetch_add(1, std::memory_order_relaxed);
          if (!ec) {
            hold(std::move(p), n, board, log, delay);
            granted.fetch_add(1, std::memory_order_relaxed);
          } else {
            KEYSEM_EXPECT(log, ec == asio::error::timed_out, "unexpected " << ec.message());
            KEYSEM_EXPECT(log, !p, "a failed acquire holds a permit");
            timed_out.fetch_add(1, std::memory_order_relaxed);
          }
          done.add();
        });
        if (rng() % 2 == 0) {
          sem.acquire(n, std::move(handler));
        } else {
          sem.acquire_for(n, std::chrono::microseconds(rng() % 400), std::move(handler));
        }
      }
    });
  }
  for (auto& thread : starters) {
    thread.join();
  }
  const std::size_t total = per_thread * threads;
  REQUIRE(done.wait_for(total, completion_bound()));
  pool.join();
  CHECK_MESSAGE(log.count() == 0, log.summary());
  std::size_t not_once = 0;
  for (auto& c : calls) {
    not_once += c.load() == 1 ? 0 : 1;
  }
  CHECK(not_once == 0);
  CHECK(board.max() <= permits);
  CHECK(granted.load() + timed_out.load() == total);
  const auto s = sem.stats();
  CHECK(s.granted_immediately + s.granted_after_wait == granted.load());
  CHECK(s.timed_out == timed_out.load());
  CHECK(sem.in_use() == 0);
  CHECK(sem.waiting() == 0);
}

TEST_CASE("async_semaphore stress: close and destruction racing waiters and releases leave nothing behind") {
  violations log;
  watchdog guard("async_semaphore close stress");
  for (std::size_t round = 0; round < scaled(30); ++round) {
    asio::thread_pool pool(2);
    auto sem = std::make_unique<semaphore>(pool, 2);
    auto held = sem->try_acquire(2);
    completion_counter done;
    std::atomic<std::size_t> granted{0};
    std::atomic<std::size_t> refused{0};
    constexpr std::size_t waiters = 20;
    for (std::size_t i = 0; i < waiters; ++i) {
      auto handler = asio::bind_executor(pool, [&](error_code ec, upermit p) {
        if (!ec) {
          KEYSEM_EXPECT(log, static_cast<bool>(p), "granted without a permit");
          granted.fetch_add(1);
        } else {
          KEYSEM_EXPECT(log, !p, "a permit with " << ec.message());
          KEYSEM_EXPECT(log,
                        ec == keysem::error::closed || ec == asio::error::timed_out ||
                            ec == asio::error::operation_aborted,
                        "unexpected " << ec.message());
          refused.fetch_add(1);
        }
        done.add();
      });
      if (i % 3 == 0) {
        sem->acquire_for(1 + i % 2, std::chrono::microseconds(40 * (i % 5)), std::move(handler));
      } else {
        sem->acquire(1 + i % 2, std::move(handler));
      }
    }
    // The release races the close or the destruction on another thread.
    std::thread releaser([&] { held.reset(); });
    if (round % 2 == 0) {
      sem->close();
    } else {
      sem.reset();
    }
    releaser.join();
    REQUIRE(done.wait_for(waiters, completion_bound()));
    pool.join();
    CHECK(granted.load() + refused.load() == waiters);
    if (sem) {
      CHECK(sem->in_use() == 0);
      CHECK(sem->waiting() == 0);
    }
  }
  CHECK_MESSAGE(log.count() == 0, log.summary());
}

}  // namespace keysem::stress
