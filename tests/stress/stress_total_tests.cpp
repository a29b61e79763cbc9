// Stress: the total limit with both limits tight — per key 3, total 5, 20
// keys, four threads — under weighted acquires, cancellations and deadlines.
// Both limits are checked inside the critical section, every handler must
// run exactly once, and nothing may be left behind.
#include "stress_support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <optional>

namespace keysem::stress {
namespace {

constexpr int per_key = 3;
constexpr int total = 5;
constexpr std::size_t key_count = 20;

struct total_race {
  keyed_semaphore& sem;
  std::vector<std::string> keys;
  holder_board& keys_board;   // per key: at most per_key
  holder_board& total_board;  // one slot: at most total
  violations& log;
  std::atomic<std::uint64_t> granted{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> started{0};

  // Both held: counted in on both boards, checked, until the holding goes.
  class holding {
   public:
    holding(total_race& race, permit p, std::size_t k, std::size_t n)
        : race_(&race), n_(static_cast<int>(n)), in_key_(std::move(p), race.keys_board, k) {
      race.total_board.enter(0, n_);
      KEYSEM_EXPECT(race.log, race.sem.total_in_use() <= static_cast<std::size_t>(total),
                    "total_in_use() = " << race.sem.total_in_use());
    }
    holding(const holding&) = delete;
    holding& operator=(const holding&) = delete;
    ~holding() { race_->total_board.leave(0, n_); }  // before in_key_ releases the permit

   private:
    total_race* race_;
    int n_;
    tracked_permit in_key_;
  };

  void use(std::optional<holding>& into, permit p, std::size_t k, std::size_t n) {
    expect_permit(log, p, keys[k], n);
    granted.fetch_add(1, std::memory_order_relaxed);
    into.emplace(*this, std::move(p), k, n);
  }

  void fail(const error_code& ec) {
    failed.fetch_add(1, std::memory_order_relaxed);
    if (ec != asio::error::operation_aborted && ec != asio::error::timed_out) {
      log.add("unexpected " + ec.message());
    }
  }
};

asio::awaitable<void> total_worker(total_race& race, std::uint64_t seed, std::size_t iterations) {
  std::mt19937_64 rng(seed);
  const auto ex = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < iterations; ++i) {
    // A few hot keys take most requests.
    const std::size_t k = rng() % 4 == 0 ? rng() % race.keys.size() : rng() % 3;
    const std::size_t n = 1 + rng() % 2;
    race.started.fetch_add(1, std::memory_order_relaxed);
    std::optional<total_race::holding> held;
    switch (rng() % 4) {
      case 0: {  // cancelled by a signal emitted from this coroutine's executor
        asio::cancellation_signal signal;
        std::optional<std::pair<error_code, permit>> result;
        race.sem.acquire(race.keys[k], n,
                         asio::bind_cancellation_slot(
                             signal.slot(), asio::bind_executor(ex, [&result](error_code ec, permit p) {
                               result.emplace(ec, std::move(p));
                             })));
        co_await asio::post(ex, asio::deferred);
        if (!result) {
          signal.emit(rng() % 2 ? asio::cancellation_type::terminal : asio::cancellation_type::partial);
        }
        while (!result) {
          co_await asio::post(ex, asio::deferred);
        }
        if (result->first) {
          race.fail(result->first);
        } else {
          race.use(held, std::move(result->second), k, n);
        }
        break;
      }
      case 1: {  // a deadline that may pass while it waits at either stage
        auto [ec, p] = co_await race.sem.acquire_for(race.keys[k], n, std::chrono::microseconds(rng() % 200),
                                                     asio::as_tuple(asio::use_awaitable));
        if (ec) {
          race.fail(ec);
        } else {
          race.use(held, std::move(p), k, n);
        }
        break;
      }
      case 2: {
        if (auto p = race.sem.try_acquire(race.keys[k], n)) {
          race.use(held, std::move(*p), k, n);
        } else {
          race.failed.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      default: {
        auto p = co_await race.sem.acquire(race.keys[k], n);
        race.use(held, std::move(p), k, n);
        break;
      }
    }
    co_await asio::post(ex, asio::deferred);  // holding across a suspension
    held.reset();
  }
}

}  // namespace

TEST_CASE("total stress: per key 3 and 5 in all, 20 keys, four threads, cancellations and deadlines") {
  const std::size_t workers = 12;
  const std::size_t iterations = scaled(600);
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("total limit stress");
  violations log;
  holder_board keys_board(key_count, per_key, log);
  holder_board total_board(1, total, log);
  completion_counter done;
  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, per_key, semaphore_options{.total_limit = total});
  total_race race{sem, make_keys("total-", key_count), keys_board, total_board, log};
  for (std::size_t w = 0; w < workers; ++w) {
    asio::co_spawn(asio::make_strand(pool), total_worker(race, seed_for(301, w), iterations),
                   [&log, &done](std::exception_ptr e) {
                     if (e) {
                       log.add("worker: " + describe(e));
                     }
                     done.add();
                   });
  }
  const bool finished = done.wait_for(workers, completion_bound());
  CHECK_MESSAGE(finished, "only " << done.value() << " of " << workers << " finished; total waiting "
                                  << sem.total_waiting() << ", in use " << sem.total_in_use());
  if (!finished) {
    sem.close();
  }
  pool.join();
  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(race.granted + race.failed == race.started);
  CHECK(race.granted > 0);
  CHECK(total_board.max() <= total);
  CHECK(keys_board.max() <= per_key);
  CHECK(sem.total_in_use() == 0);
  CHECK(sem.total_waiting() == 0);
  check_quiescent(sem, race.keys);
  const auto s = sem.stats();
  CHECK(s.granted_immediately + s.granted_after_wait == race.granted.load());
  if (verbose()) {
    MESSAGE("started " << race.started.load() << " granted " << race.granted.load()
                       << " max total holders " << total_board.max());
  }
}

}  // namespace keysem::stress
