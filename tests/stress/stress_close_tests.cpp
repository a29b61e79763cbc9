// Stress: close() at a random moment while four threads acquire, try and release.
#include "stress_support.hpp"

#include <future>

namespace keysem::stress {
namespace {

struct close_stats {
  std::atomic<std::size_t> started{0};
  std::atomic<std::size_t> completed{0};
  std::atomic<std::size_t> granted{0};
  std::atomic<std::size_t> closed{0};
  std::atomic<std::size_t> tried{0};
  std::atomic<std::size_t> checked_after_close{0};
  std::atomic<std::size_t> blocked_closed{0};
};

struct close_context {
  keyed_semaphore& sem;
  const std::vector<std::string>& keys;
  holder_board& holders;
  violations& log;
  close_stats& stats;
  std::size_t close_at;      // the grant of this round after which close() is called
  bool close_from_worker;    // by the worker that made that grant, or by a plain thread
  completion_counter& reached;
  std::atomic<std::size_t> round_grants{0};
};

// Checks what an acquire completed with; returns true if it was granted.
bool expect_close_outcome(close_context& ctx, const error_code& ec, const permit& p,
                          const std::string& key, std::size_t n, bool closed_before) {
  if (!ec) {
    KEYSEM_EXPECT(ctx.log, !closed_before, "acquire(" << key << ") started after close() was granted");
    expect_permit(ctx.log, p, key, n);
    return true;
  }
  KEYSEM_EXPECT(ctx.log, ec == keysem::error::closed, "acquire(" << key << ") failed with " << ec.message());
  KEYSEM_EXPECT(ctx.log, !p, "acquire(" << key << ") failed but carried a permit");
  KEYSEM_EXPECT(ctx.log, ctx.sem.is_closed(), "acquire(" << key << ") reported closed while open");
  return false;
}

asio::awaitable<void> close_worker(close_context& ctx, std::uint64_t seed, std::size_t max_iterations) {
  std::mt19937_64 rng(seed);
  const auto ex = co_await asio::this_coro::executor;
  std::size_t k = 0;
  for (std::size_t i = 0; i < max_iterations; ++i) {
    k = rng() % ctx.keys.size();
    const std::string& key = ctx.keys[k];
    const std::size_t n = rng() % 4 == 0 ? 2 : 1;
    const bool closed_before = ctx.sem.is_closed();
    tracked_permit held;
    if (rng() % 4 == 0) {
      ctx.stats.tried.fetch_add(1, std::memory_order_relaxed);
      auto p = ctx.sem.try_acquire(key, n);
      if (!p) {
        if (closed_before) {
          break;
        }
        co_await asio::post(ex, asio::deferred);
        continue;
      }
      KEYSEM_EXPECT(ctx.log, !closed_before, "try_acquire(" << key << ") succeeded after close()");
      expect_permit(ctx.log, *p, key, n);
      held = tracked_permit(std::move(*p), ctx.holders, k);
    } else {
      ctx.stats.started.fetch_add(1, std::memory_order_relaxed);
      auto [ec, p] = co_await ctx.sem.acquire(key, n, asio::as_tuple(asio::use_awaitable));
      ctx.stats.completed.fetch_add(1, std::memory_order_relaxed);
      if (!expect_close_outcome(ctx, ec, p, key, n, closed_before)) {
        ctx.stats.closed.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      held = tracked_permit(std::move(p), ctx.holders, k);
      ctx.stats.granted.fetch_add(1, std::memory_order_relaxed);
      if (ctx.round_grants.fetch_add(1, std::memory_order_relaxed) + 1 == ctx.close_at) {
        if (ctx.close_from_worker) {
          ctx.sem.close();  // from a pool thread, in the middle of everything
        }
        ctx.reached.add();
      }
    }
    if (rng() % 2 == 0) {
      co_await asio::post(ex, asio::deferred);  // hold across a suspension, maybe across close()
    }
  }
  if (!ctx.sem.is_closed()) {
    co_return;  // ran out of iterations first: nothing to check after close
  }
  // Once closed is observed, everything is refused.
  const std::string& key = ctx.keys[k];
  auto tried = ctx.sem.try_acquire(key);
  KEYSEM_EXPECT(ctx.log, !tried, "try_acquire(" << key << ") succeeded after close()");
  ctx.stats.started.fetch_add(1, std::memory_order_relaxed);
  auto [ec, p] = co_await ctx.sem.acquire(key, asio::as_tuple(asio::use_awaitable));
  ctx.stats.completed.fetch_add(1, std::memory_order_relaxed);
  KEYSEM_EXPECT(ctx.log, ec == keysem::error::closed && !p,
                "acquire(" << key << ") after close() completed with " << ec.message());
  ctx.stats.checked_after_close.fetch_add(1, std::memory_order_relaxed);
}

TEST_CASE("stress: close at a random moment completes every pending acquire and refuses later ones") {
  constexpr int limit = 2;
  const std::size_t rounds = scaled(40);
  const std::size_t workers = 16;
  const std::size_t blocked_waiters = 8;
  const std::size_t max_iterations = scaled(50000);
  const std::string blocked_key = "blocked";
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("close at a random moment");
  std::mt19937_64 rng(seed_for(5));

  violations log;
  close_stats stats;
  const auto keys = make_keys("close-", 4);
  std::vector<std::string> all_keys = keys;
  all_keys.push_back(blocked_key);
  all_keys.push_back("after-close");
  const auto deadline = busy_deadline();

  std::size_t rounds_run = 0;
  for (std::size_t round = 0; round < rounds && steady::now() < deadline; ++round) {
    INFO("round " << round);
    holder_board holders(keys.size(), limit, log);
    completion_counter done;
    completion_counter reached;
    const std::size_t close_at = 1 + rng() % scaled(3000);
    const bool close_from_worker = round % 2 == 0;
    std::atomic<std::size_t> blocked_done{0};

    asio::thread_pool pool(4);
    keyed_semaphore sem(pool, limit);
    close_context ctx{sem, keys, holders, log, stats, close_at, close_from_worker, reached, {}};

    // Waiters that are certainly pending when close() comes: their key is
    // fully held by this thread until after close().
    auto blocker = sem.try_acquire(blocked_key, limit);
    REQUIRE(blocker.has_value());
    const auto blocked_strand = asio::make_strand(pool);
    for (std::size_t b = 0; b < blocked_waiters; ++b) {
      sem.acquire(blocked_key, 1 + b % 2,
                  asio::bind_executor(blocked_strand, [&](error_code ec, permit p) {
                    KEYSEM_EXPECT(log, ec == keysem::error::closed && !p,
                                  "a waiter on the held key completed with " << ec.message());
                    stats.blocked_closed.fetch_add(1, std::memory_order_relaxed);
                    blocked_done.fetch_add(1, std::memory_order_relaxed);
                    done.add();
                  }));
    }
    CHECK(sem.waiting(blocked_key) == blocked_waiters);

    for (std::size_t w = 0; w < workers; ++w) {
      asio::co_spawn(asio::make_strand(pool), close_worker(ctx, seed_for(5, round * 100 + w), max_iterations),
                     [&log, &done](std::exception_ptr e) {
                       if (e) {
                         log.add("worker: " + describe(e));
                       }
                       done.add();
                     });
    }

    // The closer: a plain thread that closes once the chosen grant happened
    // (or the budget ran out); when a worker already closed, this second
    // close() must change nothing.
    std::thread closer([&] {
      reached.wait_for(1, std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::max(deadline - steady::now(), steady::duration::zero())));
      sem.close();
    });
    closer.join();
    CHECK(sem.is_closed());
    blocker.reset();  // after close(): must not grant the waiters on the held key

    // Refused from this thread too, with every kind of token.
    CHECK_FALSE(sem.try_acquire("after-close").has_value());
    // A callback with no associated executor: it completes on the
    // semaphore's. (Not use_future: its exception_ptr crossing threads is a
    // ThreadSanitizer false positive in uninstrumented libstdc++.)
    std::promise<std::pair<error_code, bool>> after_close;
    sem.acquire("after-close", [&after_close](error_code ec, permit p) {
      after_close.set_value({ec, static_cast<bool>(p)});
    });
    const auto [after_close_ec, after_close_granted] = after_close.get_future().get();
    CHECK(after_close_ec == keysem::error::closed);
    CHECK_FALSE(after_close_granted);

    const std::size_t expected = workers + blocked_waiters;
    const bool finished = done.wait_for(expected, completion_bound());
    CHECK_MESSAGE(finished, "only " << done.value() << " of " << expected << " finished");
    pool.join();

    CHECK(done.value() == expected);
    CHECK(blocked_done.load() == blocked_waiters);
    CHECK(holders.max() <= limit);
    check_quiescent(sem, all_keys);
    ++rounds_run;
  }

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(rounds_run > 0);
  CHECK(stats.started.load() == stats.completed.load());
  if (verbose()) {
    MESSAGE(rounds_run << " rounds: acquires " << stats.started.load() << ", granted "
                       << stats.granted.load() << ", closed " << stats.closed.load() << ", tries "
                       << stats.tried.load() << ", checked after close "
                       << stats.checked_after_close.load() << ", blocked waiters closed "
                       << stats.blocked_closed.load());
  }
}

}  // namespace
}  // namespace keysem::stress
