// Stress: the per-key limit under contention, key churn, and permits that
// travel between threads.
#include "stress_support.hpp"

#include <optional>
#include <string_view>

namespace keysem::stress {
namespace {

struct limit_stats {
  std::atomic<std::size_t> grants{0};
  std::atomic<std::size_t> weighted_grants{0};
  std::atomic<std::size_t> tries{0};
  std::atomic<std::size_t> failed_tries{0};
};

bool out_of_time(std::size_t iteration, steady::time_point deadline) {
  return iteration % 32 == 31 && steady::now() > deadline;
}

// While holding: the semaphore's exact count includes ours and stays within the limit.
void expect_in_use(violations& log, keyed_semaphore& sem, const std::string& key,
                   const tracked_permit& held) {
  const std::size_t in_use = sem.in_use(key);
  KEYSEM_EXPECT(log, in_use >= held.get().count() && in_use <= sem.permits_per_key(),
                "in_use(" << key << ") = " << in_use << " while holding " << held.get().count());
}

// ---------------------------------------------------------------------------
// 1. Few hot keys
// ---------------------------------------------------------------------------

asio::awaitable<void> hot_key_worker(keyed_semaphore& sem, const std::vector<std::string>& keys,
                                     holder_board& holders, violations& log, limit_stats& stats,
                                     std::uint64_t seed, std::size_t iterations,
                                     steady::time_point deadline) {
  std::mt19937_64 rng(seed);
  const auto ex = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < iterations && !out_of_time(i, deadline); ++i) {
    const std::size_t k = rng() % keys.size();
    const std::string& key = keys[k];
    tracked_permit held;
    switch (rng() % 8) {
      case 0:
      case 1:
      case 2: {  // the default token: deferred, awaited directly
        permit p = co_await sem.acquire(key);
        expect_permit(log, p, key, 1);
        held = tracked_permit(std::move(p), holders, k);
        break;
      }
      case 3: {
        auto [ec, p] = co_await sem.acquire(key, asio::as_tuple(asio::use_awaitable));
        KEYSEM_EXPECT(log, !ec, "acquire(" << key << ") failed: " << ec.message());
        expect_permit(log, p, key, 1);
        held = tracked_permit(std::move(p), holders, k);
        break;
      }
      case 4:
      case 5: {  // weighted: the whole limit at once
        permit p = co_await sem.acquire(key, 2, asio::use_awaitable);
        expect_permit(log, p, key, 2);
        held = tracked_permit(std::move(p), holders, k);
        stats.weighted_grants.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      default: {
        const std::size_t n = rng() % 4 == 0 ? 2 : 1;
        stats.tries.fetch_add(1, std::memory_order_relaxed);
        auto p = sem.try_acquire(key, n);
        if (!p) {
          stats.failed_tries.fetch_add(1, std::memory_order_relaxed);
          co_await asio::post(ex, asio::deferred);
          continue;
        }
        expect_permit(log, *p, key, n);
        held = tracked_permit(std::move(*p), holders, k);
        break;
      }
    }
    stats.grants.fetch_add(1, std::memory_order_relaxed);
    if (rng() % 4 == 0) {
      expect_in_use(log, sem, key, held);
    }
    if (rng() % 2 == 0) {
      co_await asio::post(ex, asio::deferred);  // hold across a suspension
    }
    if (rng() % 2 == 0) {
      held.reset();  // explicit release; otherwise the destructor releases
    }
  }
}

TEST_CASE("stress: the limit holds on few hot keys under a four-thread pool") {
  constexpr int limit = 2;
  const std::size_t workers = 16;
  const std::size_t iterations = scaled(12000);
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("the limit holds on few hot keys");

  violations log;
  holder_board holders(4, limit, log);
  limit_stats stats;
  completion_counter done;
  const auto keys = make_keys("hot-", 4);

  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, limit);
  const auto deadline = busy_deadline();
  for (std::size_t w = 0; w < workers; ++w) {
    asio::co_spawn(asio::make_strand(pool),
                   hot_key_worker(sem, keys, holders, log, stats, seed_for(1, w), iterations, deadline),
                   [&log, &done](std::exception_ptr e) {
                     if (e) {
                       log.add("worker: " + describe(e));
                     }
                     done.add();
                   });
  }
  const bool finished = done.wait_for(workers, completion_bound());
  CHECK_MESSAGE(finished, "only " << done.value() << " of " << workers << " workers finished");
  if (!finished) {
    sem.close();  // completes the stuck acquires so that the pool can be joined
  }
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(done.value() == workers);
  CHECK(stats.grants.load() > 0);
  CHECK(holders.max() <= limit);
  check_quiescent(sem, keys);
  if (verbose()) {
    MESSAGE("grants " << stats.grants.load() << " (weighted " << stats.weighted_grants.load()
                      << "), tries " << stats.tries.load() << " (failed "
                      << stats.failed_tries.load() << "), max holders " << holders.max());
  }
}

// ---------------------------------------------------------------------------
// 2. Many keys, created and reclaimed constantly
// ---------------------------------------------------------------------------

void expect_bounded_keys(violations& log, keyed_semaphore& sem, std::size_t distinct) {
  const std::size_t live = sem.key_count();
  KEYSEM_EXPECT(log, live <= distinct, live << " live keys out of " << distinct << " distinct ones");
}

asio::awaitable<void> churn_worker(keyed_semaphore& sem, const std::vector<std::string>& keys,
                                   holder_board& holders, violations& log, limit_stats& stats,
                                   std::uint64_t seed, std::size_t iterations,
                                   steady::time_point deadline) {
  std::mt19937_64 rng(seed);
  const auto ex = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < iterations && !out_of_time(i, deadline); ++i) {
    const std::size_t k = rng() % keys.size();
    switch (rng() % 4) {
      case 0:
      case 1: {
        tracked_permit held(co_await sem.acquire(keys[k]), holders, k);
        expect_permit(log, held.get(), keys[k], 1);
        stats.grants.fetch_add(1, std::memory_order_relaxed);
        if (rng() % 2 == 0) {
          co_await asio::post(ex, asio::deferred);
        }
        break;
      }
      case 2: {  // heterogeneous lookup: creates the key from a string_view
        stats.tries.fetch_add(1, std::memory_order_relaxed);
        auto p = sem.try_acquire(std::string_view(keys[k]));
        if (!p) {
          stats.failed_tries.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        tracked_permit held(std::move(*p), holders, k);
        expect_permit(log, held.get(), keys[k], 1);
        stats.grants.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      default: {  // two keys at once, always in ascending order: no deadlock
        std::size_t k2 = rng() % keys.size();
        if (k2 == k) {
          k2 = (k + 1) % keys.size();
        }
        const std::size_t lo = std::min(k, k2);
        const std::size_t hi = std::max(k, k2);
        tracked_permit first(co_await sem.acquire(keys[lo], asio::use_awaitable), holders, lo);
        tracked_permit second(co_await sem.acquire(keys[hi]), holders, hi);
        expect_permit(log, first.get(), keys[lo], 1);
        expect_permit(log, second.get(), keys[hi], 1);
        stats.grants.fetch_add(2, std::memory_order_relaxed);
        co_await asio::post(ex, asio::deferred);
        if (rng() % 2 == 0) {
          first.reset();  // release in either order
        }
        break;
      }
    }
    if (i % 64 == 0) {
      expect_bounded_keys(log, sem, keys.size());
    }
  }
}

// A plain thread that only ever tries: with a limit of 1, a second try on a
// key it holds must fail, whatever the other threads do to that key.
void churn_thread(keyed_semaphore& sem, const std::vector<std::string>& keys, holder_board& holders,
                  violations& log, limit_stats& stats, std::uint64_t seed, std::size_t iterations,
                  steady::time_point deadline) {
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < iterations && !out_of_time(i, deadline); ++i) {
    const std::size_t k = rng() % keys.size();
    stats.tries.fetch_add(1, std::memory_order_relaxed);
    auto p = i % 2 == 0 ? sem.try_acquire(keys[k]) : sem.try_acquire(keys[k].c_str());
    if (!p) {
      stats.failed_tries.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    tracked_permit held(std::move(*p), holders, k);
    expect_permit(log, held.get(), keys[k], 1);
    stats.grants.fetch_add(1, std::memory_order_relaxed);
    auto again = sem.try_acquire(std::string_view(keys[k]));
    KEYSEM_EXPECT(log, !again, "a second permit on " << keys[k] << " with a limit of 1");
    if (i % 16 == 0) {
      KEYSEM_EXPECT(log, sem.in_use(keys[k]) == 1, "in_use(" << keys[k] << ") = " << sem.in_use(keys[k]));
      expect_bounded_keys(log, sem, keys.size());
    }
  }
}

TEST_CASE("stress: key states are created and reclaimed constantly on 5000 keys from many threads") {
  constexpr int limit = 1;
  const std::size_t distinct = 5000;
  const std::size_t workers = 16;
  const std::size_t threads = 2;
  const std::size_t iterations = scaled(16000);
  const std::size_t thread_iterations = scaled(160000);
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("key states are created and reclaimed constantly");

  violations log;
  holder_board holders(distinct, limit, log);
  limit_stats stats;
  completion_counter done;
  const auto keys = make_keys("churn-", distinct);

  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, limit);
  const auto deadline = busy_deadline();
  for (std::size_t w = 0; w < workers; ++w) {
    asio::co_spawn(asio::make_strand(pool),
                   churn_worker(sem, keys, holders, log, stats, seed_for(2, w), iterations, deadline),
                   [&log, &done](std::exception_ptr e) {
                     if (e) {
                       log.add("worker: " + describe(e));
                     }
                     done.add();
                   });
  }
  std::vector<std::thread> triers;
  for (std::size_t t = 0; t < threads; ++t) {
    triers.emplace_back([&, t] {
      churn_thread(sem, keys, holders, log, stats, seed_for(2, 1000 + t), thread_iterations, deadline);
      done.add();
    });
  }
  const bool finished = done.wait_for(workers + threads, completion_bound());
  CHECK_MESSAGE(finished, "only " << done.value() << " of " << workers + threads << " finished");
  if (!finished) {
    sem.close();
  }
  for (auto& t : triers) {
    t.join();
  }
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(done.value() == workers + threads);
  CHECK(stats.grants.load() > 0);
  CHECK(holders.max() <= limit);
  check_quiescent(sem, keys);
  if (verbose()) {
    MESSAGE("grants " << stats.grants.load() << ", tries " << stats.tries.load() << " (failed "
                      << stats.failed_tries.load() << ")");
  }
}

// ---------------------------------------------------------------------------
// 6. Permits released on other threads, and moved between threads
// ---------------------------------------------------------------------------

struct handoff {
  tracked_permit permit;
  unsigned hops = 0;  // how many more times to pass it to whichever thread pops next
};

// Permits in transit between threads.
using handoff_queue = blocking_queue<handoff>;

struct travel_stats {
  std::atomic<std::size_t> handed{0};
  std::atomic<std::size_t> hops{0};
  std::atomic<std::size_t> released_here{0};
  std::atomic<std::size_t> released_by_destructor{0};
  std::atomic<std::size_t> released_on_io_thread{0};
  std::atomic<std::size_t> released_by_assignment{0};
};

struct travel_context {
  keyed_semaphore& sem;
  const std::vector<std::string>& keys;
  holder_board& holders;
  violations& log;
  handoff_queue& queue;
  travel_stats& stats;
  asio::io_context& io;  // a context run by its own thread
};

asio::awaitable<void> travel_producer(travel_context& ctx, std::uint64_t seed, std::size_t iterations,
                                      steady::time_point deadline) {
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < iterations && !out_of_time(i, deadline); ++i) {
    const std::size_t k = rng() % ctx.keys.size();
    const std::size_t n = rng() % 3 == 0 ? 2 : 1;
    permit p = co_await ctx.sem.acquire(ctx.keys[k], n);
    expect_permit(ctx.log, p, ctx.keys[k], n);
    ctx.queue.push(handoff{tracked_permit(std::move(p), ctx.holders, k), static_cast<unsigned>(rng() % 3)});
    ctx.stats.handed.fetch_add(1, std::memory_order_relaxed);
  }
}

// Acquires with a callback whose executor is the io thread's context: the
// permit is granted on a pool strand and delivered to the io thread.
class callback_producer {
 public:
  callback_producer(travel_context& ctx, std::uint64_t seed, std::size_t iterations,
                    steady::time_point deadline, completion_counter& done)
      : ctx_(ctx), rng_(seed), iterations_(iterations), deadline_(deadline), done_(done) {}

  void start() {
    if (i_ >= iterations_ || out_of_time(i_, deadline_)) {
      done_.add();
      return;
    }
    ++i_;
    const std::size_t k = rng_() % ctx_.keys.size();
    ctx_.sem.acquire(ctx_.keys[k], asio::bind_executor(ctx_.io, [this, k](error_code ec, permit p) {
                       KEYSEM_EXPECT(ctx_.log, ctx_.io.get_executor().running_in_this_thread(),
                                     "the handler ran off its bound executor");
                       if (ec) {
                         ctx_.log.add("callback acquire failed: " + ec.message());
                         done_.add();
                         return;
                       }
                       expect_permit(ctx_.log, p, ctx_.keys[k], 1);
                       ctx_.queue.push(handoff{tracked_permit(std::move(p), ctx_.holders, k),
                                               static_cast<unsigned>(rng_() % 2)});
                       ctx_.stats.handed.fetch_add(1, std::memory_order_relaxed);
                       start();
                     }));
  }

 private:
  travel_context& ctx_;
  std::mt19937_64 rng_;
  std::size_t iterations_;
  steady::time_point deadline_;
  completion_counter& done_;
  std::size_t i_ = 0;
};

// Pops permits and gives them back in every way there is; never blocks while
// still keeping one aside, so producers always make progress.
void travel_consumer(travel_context& ctx, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  tracked_permit stash;  // released when the next one is assigned over it
  for (;;) {
    std::optional<handoff> item = ctx.queue.try_pop();
    if (!item) {
      if (stash) {
        stash.reset();
        ctx.stats.released_here.fetch_add(1, std::memory_order_relaxed);
      }
      item = ctx.queue.pop();
      if (!item) {
        return;
      }
    }
    if (item->hops > 0) {
      --item->hops;
      ctx.stats.hops.fetch_add(1, std::memory_order_relaxed);
      ctx.queue.push(std::move(*item));
      continue;
    }
    switch (rng() % 4) {
      case 0:
        item->permit.reset();
        ctx.stats.released_here.fetch_add(1, std::memory_order_relaxed);
        break;
      case 1:
        item.reset();  // the permit's destructor releases
        ctx.stats.released_by_destructor.fetch_add(1, std::memory_order_relaxed);
        break;
      case 2:
        asio::post(ctx.io, [&stats = ctx.stats, p = std::move(item->permit)]() mutable {
          p.reset();
          stats.released_on_io_thread.fetch_add(1, std::memory_order_relaxed);
        });
        break;
      default:
        if (stash) {
          ctx.stats.released_by_assignment.fetch_add(1, std::memory_order_relaxed);
        }
        stash = std::move(item->permit);
        break;
    }
  }
}

TEST_CASE("stress: permits released and moved across threads keep the limit") {
  constexpr int limit = 3;
  const std::size_t producers = 8;
  const std::size_t callback_producers = 2;
  const std::size_t consumers = 3;
  const std::size_t iterations = scaled(9000);
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("permits released and moved across threads");

  violations log;
  const auto keys = make_keys("travel-", 4);
  holder_board holders(keys.size(), limit, log);
  travel_stats stats;
  completion_counter done;
  handoff_queue queue;
  asio::io_context io;
  auto io_work = asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });

  {
    asio::thread_pool pool(4);
    keyed_semaphore sem(pool, limit);
    travel_context ctx{sem, keys, holders, log, queue, stats, io};
    const auto deadline = busy_deadline();

    std::vector<std::thread> consumer_threads;
    for (std::size_t c = 0; c < consumers; ++c) {
      consumer_threads.emplace_back([&ctx, c] { travel_consumer(ctx, seed_for(6, 100 + c)); });
    }
    for (std::size_t w = 0; w < producers; ++w) {
      asio::co_spawn(asio::make_strand(pool), travel_producer(ctx, seed_for(6, w), iterations, deadline),
                     [&log, &done](std::exception_ptr e) {
                       if (e) {
                         log.add("producer: " + describe(e));
                       }
                       done.add();
                     });
    }
    std::vector<std::unique_ptr<callback_producer>> chains;
    for (std::size_t c = 0; c < callback_producers; ++c) {
      chains.push_back(std::make_unique<callback_producer>(ctx, seed_for(6, 200 + c), iterations,
                                                           deadline, done));
      asio::post(io, [chain = chains.back().get()] { chain->start(); });
    }

    const std::size_t expected = producers + callback_producers;
    const bool finished = done.wait_for(expected, completion_bound());
    CHECK_MESSAGE(finished, "only " << done.value() << " of " << expected << " producers finished");
    if (!finished) {
      sem.close();
      done.wait_for(expected, completion_bound());
    }
    queue.close();
    for (auto& t : consumer_threads) {
      t.join();
    }
    // Flush the releases posted to the io thread before looking at the counts.
    completion_counter flushed;
    asio::post(io, [&flushed] { flushed.add(); });
    CHECK(flushed.wait_for(1, completion_bound()));
    pool.join();

    CHECK_MESSAGE(log.count() == 0, log.summary());
    CHECK(done.value() == expected);
    CHECK(stats.handed.load() > 0);
    CHECK(holders.max() <= limit);
    std::size_t believed_held = 0;
    for (std::size_t k = 0; k < keys.size(); ++k) {
      believed_held += static_cast<std::size_t>(holders.current(k));
    }
    CHECK(believed_held == 0);
    check_quiescent(sem, keys);
    if (verbose()) {
      MESSAGE("handed " << stats.handed.load() << ", hops " << stats.hops.load() << ", released here "
                        << stats.released_here.load() << ", by destructor "
                        << stats.released_by_destructor.load() << ", on the io thread "
                        << stats.released_on_io_thread.load() << ", by assignment "
                        << stats.released_by_assignment.load());
    }
  }
  io_work.reset();
  io_thread.join();
}

}  // namespace
}  // namespace keysem::stress
