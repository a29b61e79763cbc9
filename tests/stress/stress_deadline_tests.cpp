// Deadlines under concurrency: timers firing while releases, cancellations
// and close happen on other threads. Each timed acquire ends exactly once,
// granted (holding its permit) or timed out (holding nothing), never both.
#include "stress_support.hpp"

namespace keysem::stress {
namespace {

using namespace std::chrono_literals;

struct deadline_tally {
  std::atomic<std::size_t> granted{0};
  std::atomic<std::size_t> timed_out{0};
  std::atomic<std::size_t> other{0};
  std::atomic<std::size_t> blocked_timed_out{0};
};

// One worker: timed acquires of 0-200 us against short holds on a few hot
// keys, through callbacks bound to the pool.
// Every eighth acquire goes to `blocked`, whose permits the test holds for
// the whole run: those time out whatever the scheduling, so the timed-out
// path is exercised however fast the hot keys turn over.
void run_deadline_worker(keyed_semaphore& sem, const std::vector<std::string>& keys,
                         const std::string& blocked, holder_board& holders, violations& log,
                         deadline_tally& tally, completion_counter& done, std::uint64_t seed,
                         std::size_t iterations, asio::thread_pool& pool) {
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < iterations; ++i) {
    if (i % 8 == 0) {
      sem.acquire_for(blocked, 1, std::chrono::microseconds(rng() % 200),
                      asio::bind_executor(pool, [&](error_code ec, permit p) {
                        KEYSEM_EXPECT(log, ec == asio::error::timed_out && !p,
                                      "an acquire of the held key ended with " << ec.message());
                        tally.blocked_timed_out.fetch_add(1, std::memory_order_relaxed);
                        done.add();
                      }));
      continue;
    }
    const std::size_t k = rng() % keys.size();
    const auto timeout = std::chrono::microseconds(rng() % 200);
    const auto hold = static_cast<unsigned>(rng() % 64);
    sem.acquire_for(
        keys[k], 1, timeout,
        asio::bind_executor(pool, [&, k, hold](error_code ec, permit p) {
          if (!ec) {
            expect_permit(log, p, keys[k], 1);
            tracked_permit held(std::move(p), holders, k);
            busy_delay(hold);
            tally.granted.fetch_add(1, std::memory_order_relaxed);
          } else if (ec == asio::error::timed_out) {
            KEYSEM_EXPECT(log, !p, "a timed-out acquire holds a permit");
            tally.timed_out.fetch_add(1, std::memory_order_relaxed);
          } else {
            tally.other.fetch_add(1, std::memory_order_relaxed);
          }
          done.add();
        }));
  }
}

}  // namespace

TEST_CASE("deadline stress: timers firing while releases happen end each acquire exactly once") {
  violations log;
  watchdog guard("deadline stress");
  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, 2, semaphore_options{4});
  const auto keys = make_keys("hot", 3);
  const std::string blocked = "blocked";
  auto blocked_hold = sem.try_acquire(blocked, 2);
  REQUIRE(blocked_hold);
  holder_board holders(keys.size(), 2, log);
  deadline_tally tally;
  completion_counter done;
  const std::size_t per_worker = scaled(1500);
  std::vector<std::thread> workers;
  for (std::uint64_t w = 0; w < 3; ++w) {
    workers.emplace_back([&, w] {
      run_deadline_worker(sem, keys, blocked, holders, log, tally, done, seed_for(501, w),
                          per_worker, pool);
    });
  }
  for (auto& t : workers) {
    t.join();
  }
  const std::size_t started = per_worker * 3;
  REQUIRE(done.wait_for(started, completion_bound()));
  blocked_hold.reset();
  pool.join();
  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(tally.other.load() == 0);
  CHECK(tally.granted.load() + tally.timed_out.load() + tally.blocked_timed_out.load() == started);
  CHECK(tally.blocked_timed_out.load() == 3 * ((per_worker + 7) / 8));
  CHECK(tally.granted.load() > 0);
  const auto stats = sem.stats();
  CHECK(stats.timed_out == tally.timed_out.load() + tally.blocked_timed_out.load());
  // The hold of `blocked` is one try_acquire success.
  CHECK(stats.granted_immediately + stats.granted_after_wait == tally.granted.load() + 1);
  check_quiescent(sem, keys);
  CHECK(sem.in_use(blocked) == 0);
}

TEST_CASE("deadline stress: close and destruction racing armed deadlines leave nothing behind") {
  violations log;
  watchdog guard("deadline close stress");
  for (std::size_t round = 0; round < scaled(40); ++round) {
    asio::thread_pool pool(2);
    auto sem = std::make_unique<keyed_semaphore>(pool, 1, semaphore_options{2});
    auto held = sem->try_acquire("k");
    completion_counter done;
    std::atomic<std::size_t> closed{0};
    std::atomic<std::size_t> timed_out{0};
    std::atomic<std::size_t> aborted{0};
    constexpr std::size_t waiters = 20;
    for (std::size_t i = 0; i < waiters; ++i) {
      sem->acquire_for("k", std::chrono::microseconds(50 * (i % 5)),
                       asio::bind_executor(pool, [&](error_code ec, permit p) {
                         KEYSEM_EXPECT(log, !p, "a permit after close: " << ec.message());
                         if (ec == keysem::error::closed) {
                           closed.fetch_add(1);
                         } else if (ec == asio::error::timed_out) {
                           timed_out.fetch_add(1);
                         } else if (ec == asio::error::operation_aborted) {
                           aborted.fetch_add(1);
                         }
                         done.add();
                       }));
    }
    if (round % 2 == 0) {
      sem->close();
    } else {
      sem.reset();
    }
    REQUIRE(done.wait_for(waiters, completion_bound()));
    CHECK(closed.load() + timed_out.load() + aborted.load() == waiters);
    held.reset();
    pool.join();
    if (sem) {
      CHECK(sem->key_count() == 0);
    }
  }
  CHECK_MESSAGE(log.count() == 0, log.summary());
}

}  // namespace keysem::stress
