// Stress: admission control under contention — per-key limits changed while
// acquires and releases race on the same keys, the waiter bound of
// max_waiters_per_key under many threads, and stats()/for_each_key() read
// while keys churn.
#include "stress_support.hpp"

#include <array>
#include <optional>
#include <stdexcept>

namespace keysem::stress {
namespace {

// What the test itself saw happen to the operations it started; compared
// with stats() at the end, when every executor has run everything posted.
struct tally {
  std::atomic<std::uint64_t> started{0};
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> granted{0};
  std::atomic<std::uint64_t> try_failed{0};
  std::atomic<std::uint64_t> invalid{0};
  std::atomic<std::uint64_t> queue_full{0};
  std::atomic<std::uint64_t> unexpected{0};
};

std::uint64_t stats_sum(const semaphore_stats& s) {
  return s.granted_immediately + s.granted_after_wait + s.try_failed + s.cancelled + s.timed_out +
         s.rejected_queue_full + s.rejected_closed + s.invalid_argument;
}

std::string describe_stats(const semaphore_stats& s) {
  std::ostringstream out;
  out << "granted_immediately " << s.granted_immediately << " granted_after_wait "
      << s.granted_after_wait << " try_failed " << s.try_failed << " cancelled " << s.cancelled
      << " timed_out " << s.timed_out << " rejected_queue_full " << s.rejected_queue_full
      << " rejected_closed " << s.rejected_closed << " invalid_argument " << s.invalid_argument
      << " keys " << s.keys << " waiting " << s.waiting << " in_use " << s.in_use;
  return out.str();
}

// Every completed operation in exactly one counter, and the counters agree
// with what the test saw.
void check_stats_against(const semaphore_stats& s, const tally& t) {
  INFO(describe_stats(s));
  CHECK(stats_sum(s) == t.started.load());
  CHECK(s.granted_immediately + s.granted_after_wait == t.granted.load());
  CHECK(s.try_failed == t.try_failed.load());
  CHECK(s.invalid_argument == t.invalid.load());
  CHECK(s.rejected_queue_full == t.queue_full.load());
  CHECK(s.cancelled == 0);
  CHECK(s.timed_out == 0);
  CHECK(s.rejected_closed == 0);
  CHECK(s.keys == 0);
  CHECK(s.waiting == 0);
  CHECK(s.in_use == 0);
}

// A handler that must run exactly once: the flag is shared by the copies asio
// may make of it.
struct once_flag {
  std::shared_ptr<std::atomic<int>> runs = std::make_shared<std::atomic<int>>(0);
  bool first() const { return runs->fetch_add(1, std::memory_order_acq_rel) == 0; }
};

// ---------------------------------------------------------------------------
// 1. set_limit racing acquires and releases on a few hot keys
// ---------------------------------------------------------------------------

constexpr std::size_t hot_keys = 3;       // keys whose limit is changed all the time
constexpr std::size_t control_key = 3;    // index of the key that never gets an override
constexpr int default_limit = 2;          // permits_per_key(), the control key's limit
constexpr int max_limit_ever_set = 4;     // set_limit draws 1..4

struct limit_race {
  keyed_semaphore& sem;
  std::vector<std::string> keys;  // hot keys, then the control key
  holder_board& hot_board;        // limit: the largest limit ever set
  holder_board& control_board;    // limit: permits_per_key()
  violations& log;
  tally& ops;

  // Right after a grant: count the holder in, check what the semaphore says.
  tracked_permit enter(permit p, std::size_t k, std::size_t n) {
    expect_permit(log, p, keys[k], n);
    ops.granted.fetch_add(1, std::memory_order_relaxed);
    if (k == control_key) {
      tracked_permit held(std::move(p), control_board, 0);
      KEYSEM_EXPECT(log, sem.in_use(keys[k]) <= static_cast<std::size_t>(default_limit),
                    "in_use(control) = " << sem.in_use(keys[k]));
      return held;
    }
    tracked_permit held(std::move(p), hot_board, k);
    const std::size_t in_use = sem.in_use(keys[k]);
    KEYSEM_EXPECT(log, in_use >= n && in_use <= static_cast<std::size_t>(max_limit_ever_set),
                  "in_use(" << keys[k] << ") = " << in_use << " while holding " << n);
    return held;
  }

  void failed(const error_code& ec, const std::string& where) {
    if (ec == asio::error::invalid_argument) {
      ops.invalid.fetch_add(1, std::memory_order_relaxed);
    } else {
      ops.unexpected.fetch_add(1, std::memory_order_relaxed);
      log.add(where + ": unexpected " + ec.message());
    }
  }
};

asio::awaitable<void> limit_race_worker(limit_race& race, std::uint64_t seed, std::size_t iterations) {
  std::mt19937_64 rng(seed);
  const auto ex = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < iterations; ++i) {
    const std::size_t k = rng() % race.keys.size();
    const std::size_t n = 1 + rng() % 2;
    const std::string& key = race.keys[k];
    std::optional<permit> got;
    race.ops.started.fetch_add(1, std::memory_order_relaxed);
    switch (rng() % 4) {
      case 0:
      case 1: {  // the token-less awaitable: errors are thrown
        error_code ec;
        try {
          got = co_await race.sem.acquire(key, n);
        } catch (const boost::system::system_error& e) {
          ec = e.code();
        }
        if (ec) {
          race.failed(ec, "co_await acquire(" + key + ", " + std::to_string(n) + ")");
        }
        break;
      }
      case 2: {
        auto [ec, p] = co_await race.sem.acquire(key, n, asio::as_tuple(asio::use_awaitable));
        if (ec) {
          race.failed(ec, "acquire(" + key + ", " + std::to_string(n) + ", as_tuple)");
        } else {
          got = std::move(p);
        }
        break;
      }
      default: {
        try {
          got = race.sem.try_acquire(key, n);
          if (!got) {
            race.ops.try_failed.fetch_add(1, std::memory_order_relaxed);
          }
        } catch (const std::invalid_argument&) {
          race.ops.invalid.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
    }
    race.ops.completed.fetch_add(1, std::memory_order_relaxed);
    if (!got) {
      co_await asio::post(ex, asio::deferred);
      continue;
    }
    tracked_permit held = race.enter(std::move(*got), k, n);
    if (rng() % 2 == 0) {
      co_await asio::post(ex, asio::deferred);  // hold across a suspension
    }
  }
}

// One callback acquire at a time, each started from the previous one's handler.
class callback_chain {
 public:
  callback_chain(limit_race& race, asio::thread_pool& pool, completion_counter& done,
                 std::uint64_t seed, std::size_t iterations)
      : race_(race), pool_(pool), done_(done), rng_(seed), remaining_(iterations) {}

  void step() {
    if (remaining_ == 0) {
      done_.add();
      return;
    }
    --remaining_;
    const std::size_t k = rng_() % race_.keys.size();
    const std::size_t n = 1 + rng_() % 2;
    const bool on_strand = rng_() % 2 == 0;
    race_.ops.started.fetch_add(1, std::memory_order_relaxed);
    auto handler = [this, k, n, once = once_flag()](error_code ec, permit p) mutable {
      if (!once.first()) {
        race_.log.add("a callback acquire's handler ran twice");
        return;
      }
      race_.ops.completed.fetch_add(1, std::memory_order_relaxed);
      if (ec) {
        race_.failed(ec, "callback acquire(" + race_.keys[k] + ", " + std::to_string(n) + ")");
        step();
        return;
      }
      tracked_permit held = race_.enter(std::move(p), k, n);
      if (rng_() % 2 == 0) {
        held.reset();
        step();
      } else {  // released later, on whichever thread runs the post
        asio::post(pool_, [this, held = std::move(held)]() mutable {
          held.reset();
          step();
        });
      }
    };
    if (on_strand) {
      race_.sem.acquire(race_.keys[k], n, asio::bind_executor(asio::make_strand(pool_), std::move(handler)));
    } else {
      race_.sem.acquire(race_.keys[k], n, std::move(handler));
    }
  }

 private:
  limit_race& race_;
  asio::thread_pool& pool_;
  completion_counter& done_;
  std::mt19937_64 rng_;
  std::size_t remaining_;
};

// Changes a hot key's limit (1..4) or removes its override.
void change_limit(limit_race& race, std::mt19937_64& rng) {
  const std::size_t k = rng() % hot_keys;
  if (rng() % 4 == 0) {
    race.sem.reset_limit(race.keys[k]);
  } else {
    race.sem.set_limit(race.keys[k], 1 + rng() % max_limit_ever_set);
  }
  const std::size_t now = race.sem.limit(race.keys[k]);
  KEYSEM_EXPECT(race.log, now >= 1 && now <= static_cast<std::size_t>(max_limit_ever_set),
                "limit(" << race.keys[k] << ") = " << now);
}

// The same from a handler on the pool: set_limit then runs on a thread of the
// semaphore's own context, where the grant pass it asks for may be
// dispatched rather than posted.
void change_limit_on_pool(limit_race& race, asio::thread_pool& pool, completion_counter& done,
                          std::shared_ptr<std::mt19937_64> rng, std::size_t remaining) {
  if (remaining == 0) {
    done.add();
    return;
  }
  change_limit(race, *rng);
  asio::post(pool, [&race, &pool, &done, rng, remaining] {
    change_limit_on_pool(race, pool, done, rng, remaining - 1);
  });
}

TEST_CASE("admission stress: set_limit racing acquires and releases on hot keys never lets more in than a limit allowed") {
  const std::size_t coroutines = 8;
  const std::size_t chains = 4;
  const std::size_t setter_threads = 2;
  const std::size_t pool_setters = 1;
  const std::size_t iterations = scaled(1500);
  const std::size_t changes = scaled(4000);
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("set_limit racing acquires and releases");

  violations log;
  holder_board hot_board(hot_keys, max_limit_ever_set, log);
  holder_board control_board(1, default_limit, log);
  tally ops;
  completion_counter done;

  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, default_limit);
  limit_race race{sem, make_keys("limit-hot-", hot_keys + 1), hot_board, control_board, log, ops};
  race.keys[control_key] = "limit-control";

  for (std::size_t w = 0; w < coroutines; ++w) {
    asio::co_spawn(asio::make_strand(pool), limit_race_worker(race, seed_for(101, w), iterations),
                   [&log, &done](std::exception_ptr e) {
                     if (e) {
                       log.add("worker: " + describe(e));
                     }
                     done.add();
                   });
  }
  std::vector<std::unique_ptr<callback_chain>> callback_chains;
  for (std::size_t c = 0; c < chains; ++c) {
    callback_chains.push_back(
        std::make_unique<callback_chain>(race, pool, done, seed_for(102, c), iterations));
  }
  for (auto& chain : callback_chains) {
    asio::post(pool, [&chain] { chain->step(); });
  }
  for (std::size_t s = 0; s < pool_setters; ++s) {
    auto rng = std::make_shared<std::mt19937_64>(seed_for(103, s));
    asio::post(pool, [&race, &pool, &done, rng, changes] {
      change_limit_on_pool(race, pool, done, rng, changes);
    });
  }
  std::vector<std::thread> setters;
  for (std::size_t t = 0; t < setter_threads; ++t) {
    setters.emplace_back([&, t] {
      std::mt19937_64 rng(seed_for(104, t));
      for (std::size_t i = 0; i < changes; ++i) {
        change_limit(race, rng);
      }
    });
  }
  for (auto& t : setters) {
    t.join();
  }
  const std::size_t expected = coroutines + chains + pool_setters;
  const bool finished = done.wait_for(expected, completion_bound());
  CHECK_MESSAGE(finished, "only " << done.value() << " of " << expected << " finished; waiting "
                                  << sem.waiting(race.keys[0]) << "/" << sem.waiting(race.keys[1])
                                  << "/" << sem.waiting(race.keys[2]) << "/"
                                  << sem.waiting(race.keys[3]));
  if (!finished) {
    sem.close();
  }
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(ops.unexpected.load() == 0);
  CHECK(ops.completed.load() == ops.started.load());
  CHECK(ops.started.load() == (coroutines + chains) * iterations);
  CHECK(ops.granted.load() > 0);
  CHECK(hot_board.max() <= max_limit_ever_set);
  CHECK(control_board.max() <= default_limit);
  CHECK(sem.key_count() == 0);
  check_stats_against(sem.stats(), ops);
  if (verbose()) {
    MESSAGE("started " << ops.started.load() << " granted " << ops.granted.load() << " try_failed "
                       << ops.try_failed.load() << " invalid " << ops.invalid.load()
                       << " max hot holders " << hot_board.max() << " max control holders "
                       << control_board.max());
  }
}

// ---------------------------------------------------------------------------
// 2. The waiter bound under many threads
// ---------------------------------------------------------------------------

TEST_CASE("admission stress: four threads hammering one key never put more than max_waiters_per_key in its queue") {
  constexpr std::size_t bound = 3;
  const std::size_t threads = 4;
  const std::size_t rounds = scaled(60);
  const std::size_t per_thread = scaled(40);  // acquires per thread per round
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("four threads hammering one key");

  violations log;
  tally ops;
  completion_counter completions;
  const std::string key = "bounded-queue";

  asio::thread_pool pool(2);
  keyed_semaphore sem(pool, 1, semaphore_options{.max_waiters_per_key = bound});

  // Samples waiting(key) until told to stop (bounded by a count as well).
  std::atomic<bool> sampling{true};
  std::atomic<std::size_t> samples{0};
  std::atomic<std::size_t> max_seen{0};
  std::thread sampler([&] {
    for (std::size_t i = 0; i < scaled(2'000'000) && sampling.load(std::memory_order_acquire); ++i) {
      const std::size_t w = sem.waiting(key);
      samples.fetch_add(1, std::memory_order_relaxed);
      if (w > max_seen.load(std::memory_order_relaxed)) {
        max_seen.store(w, std::memory_order_relaxed);
      }
      KEYSEM_EXPECT(log, w <= bound, "waiting(" << key << ") = " << w);
      if (i % 64 == 63) {
        std::this_thread::yield();
      }
    }
  });

  std::size_t expected_completions = 0;
  std::size_t round_granted_mismatch = 0;
  for (std::size_t r = 0; r < rounds; ++r) {
    // The holder keeps the only permit while the threads hammer the key.
    ops.started.fetch_add(1, std::memory_order_relaxed);
    auto holder = sem.try_acquire(key);
    REQUIRE_MESSAGE(holder.has_value(), "round " << r << ": the key is not free at the start");
    ops.granted.fetch_add(1, std::memory_order_relaxed);

    std::atomic<std::uint64_t> round_granted{0};
    std::atomic<std::uint64_t> round_full{0};
    spin_barrier start(static_cast<unsigned>(threads));
    std::vector<std::thread> hammers;
    for (std::size_t t = 0; t < threads; ++t) {
      hammers.emplace_back([&, t] {
        start.arrive_and_wait();
        for (std::size_t i = 0; i < per_thread; ++i) {
          ops.started.fetch_add(1, std::memory_order_relaxed);
          auto handler = [&, once = once_flag()](error_code ec, permit p) {
            if (!once.first()) {
              log.add("a handler ran twice");
              return;
            }
            ops.completed.fetch_add(1, std::memory_order_relaxed);
            if (!ec) {
              expect_permit(log, p, key, 1);
              ops.granted.fetch_add(1, std::memory_order_relaxed);
              round_granted.fetch_add(1, std::memory_order_relaxed);
              KEYSEM_EXPECT(log, sem.in_use(key) == 1, "in_use = " << sem.in_use(key));
            } else if (ec == error::queue_full) {
              KEYSEM_EXPECT(log, !p, "a queue_full completion carries a permit");
              ops.queue_full.fetch_add(1, std::memory_order_relaxed);
              round_full.fetch_add(1, std::memory_order_relaxed);
            } else {
              ops.unexpected.fetch_add(1, std::memory_order_relaxed);
              log.add("unexpected " + ec.message());
            }
            p.release();
            completions.add();
          };
          if ((i + t) % 2 == 0) {
            sem.acquire(key, asio::bind_executor(asio::make_strand(pool), std::move(handler)));
          } else {
            sem.acquire(key, std::move(handler));
          }
        }
      });
    }
    for (auto& h : hammers) {
      h.join();
    }
    // Everything the threads started is decided while the holder holds: at
    // most `bound` of them wait, the rest are refused.
    const std::size_t issued = threads * per_thread;
    KEYSEM_EXPECT(log, sem.waiting(key) == std::min(bound, issued),
                  "round " << r << ": waiting = " << sem.waiting(key) << " after " << issued << " acquires");
    const bool refused = completions.wait_for(expected_completions + issued - std::min(bound, issued),
                                              completion_bound());
    CHECK_MESSAGE(refused, "round " << r << ": only " << completions.value() - expected_completions
                                    << " refusals completed");
    holder->release();  // the waiters are granted one after another
    expected_completions += issued;
    const bool all = completions.wait_for(expected_completions, completion_bound());
    REQUIRE_MESSAGE(all, "round " << r << ": " << completions.value() << " of " << expected_completions
                                  << " completed; waiting " << sem.waiting(key));
    if (round_granted.load() != std::min(bound, issued) ||
        round_full.load() != issued - std::min(bound, issued)) {
      ++round_granted_mismatch;
    }
  }
  sampling.store(false, std::memory_order_release);
  sampler.join();
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(round_granted_mismatch == 0);
  CHECK(ops.unexpected.load() == 0);
  CHECK(ops.queue_full.load() > 0);
  CHECK(max_seen.load() <= bound);
  CHECK(ops.completed.load() + rounds == ops.started.load());
  CHECK(sem.key_count() == 0);
  check_stats_against(sem.stats(), ops);
  if (verbose()) {
    MESSAGE("started " << ops.started.load() << " granted " << ops.granted.load() << " queue_full "
                       << ops.queue_full.load() << " samples " << samples.load() << " max waiting "
                       << max_seen.load());
  }
}

// ---------------------------------------------------------------------------
// 3. stats() and for_each_key() read while 1,000 keys churn
// ---------------------------------------------------------------------------

asio::awaitable<void> churn_worker(keyed_semaphore& sem, const std::vector<std::string>& keys,
                                   holder_board& holders, [[maybe_unused]] violations& log, tally& ops,
                                   std::uint64_t seed, std::size_t iterations) {
  std::mt19937_64 rng(seed);
  const auto ex = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < iterations; ++i) {
    const std::size_t k = rng() % keys.size();
    const std::size_t n = 1 + rng() % 2;
    ops.started.fetch_add(1, std::memory_order_relaxed);
    std::optional<permit> got;
    if (rng() % 3 == 0) {
      got = sem.try_acquire(keys[k], n);
      if (!got) {
        ops.try_failed.fetch_add(1, std::memory_order_relaxed);
      }
    } else {
      got = co_await sem.acquire(keys[k], n);
    }
    ops.completed.fetch_add(1, std::memory_order_relaxed);
    if (!got) {
      continue;
    }
    ops.granted.fetch_add(1, std::memory_order_relaxed);
    tracked_permit held(std::move(*got), holders, k);
    if (rng() % 2 == 0) {
      co_await asio::post(ex, asio::deferred);
    }
  }
}

TEST_CASE("admission stress: stats and for_each_key read concurrently with churn over 1000 keys stay within the limits") {
  constexpr int limit = 2;
  const std::size_t distinct = 1000;
  const std::size_t workers = 8;
  const std::size_t iterations = scaled(3000);
  const std::size_t max_reads = scaled(50000);
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("stats and for_each_key read concurrently with churn");

  violations log;
  holder_board holders(distinct, limit, log);
  tally ops;
  completion_counter done;
  const auto keys = make_keys("observed-", distinct);

  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, limit);
  std::atomic<bool> churning{true};
  std::size_t reads = 0;
  std::size_t keys_visited = 0;
  std::size_t max_live_seen = 0;
  std::thread reader([&] {
    semaphore_stats previous;
    for (; reads < max_reads && churning.load(std::memory_order_acquire); ++reads) {
      std::size_t visited = 0;
      std::size_t in_use_sum = 0;
      sem.for_each_key([&](const std::string& key, key_usage usage) {
        ++visited;
        in_use_sum += usage.in_use;
        KEYSEM_EXPECT(log, usage.in_use <= usage.limit,
                      key << ": in_use " << usage.in_use << " above its limit " << usage.limit);
        KEYSEM_EXPECT(log, usage.limit == static_cast<std::size_t>(limit),
                      key << ": limit " << usage.limit);
        KEYSEM_EXPECT(log, key.rfind("observed-", 0) == 0, "visited an unknown key " << key);
        if (visited % 16 == 0) {  // f may call back into the semaphore
          const std::size_t now = sem.in_use(key);
          KEYSEM_EXPECT(log, now <= static_cast<std::size_t>(limit), key << ": in_use(key) = " << now);
        }
      });
      keys_visited += visited;
      max_live_seen = std::max(max_live_seen, visited);
      KEYSEM_EXPECT(log, visited <= distinct, "for_each_key visited " << visited << " keys");
      KEYSEM_EXPECT(log, in_use_sum <= distinct * limit, "for_each_key in_use sum " << in_use_sum);

      const semaphore_stats now = sem.stats();
      KEYSEM_EXPECT(log, now.in_use <= distinct * limit, "stats().in_use = " << now.in_use);
      KEYSEM_EXPECT(log, now.keys <= distinct, "stats().keys = " << now.keys);
      KEYSEM_EXPECT(log, now.waiting <= workers, "stats().waiting = " << now.waiting);
      // Monotonic counters, read by one thread.
      KEYSEM_EXPECT(log,
                    now.granted_immediately >= previous.granted_immediately &&
                        now.granted_after_wait >= previous.granted_after_wait &&
                        now.try_failed >= previous.try_failed && now.cancelled >= previous.cancelled &&
                        now.invalid_argument >= previous.invalid_argument &&
                        now.rejected_queue_full >= previous.rejected_queue_full,
                    "a counter went down: " << describe_stats(previous) << " then " << describe_stats(now));
      KEYSEM_EXPECT(log, stats_sum(now) <= ops.started.load(std::memory_order_acquire),
                    "stats count " << stats_sum(now) << " operations, more than started");
      previous = now;
    }
  });

  for (std::size_t w = 0; w < workers; ++w) {
    asio::co_spawn(asio::make_strand(pool),
                   churn_worker(sem, keys, holders, log, ops, seed_for(301, w), iterations),
                   [&log, &done](std::exception_ptr e) {
                     if (e) {
                       log.add("worker: " + describe(e));
                     }
                     done.add();
                   });
  }
  const bool finished = done.wait_for(workers, completion_bound());
  CHECK_MESSAGE(finished, "only " << done.value() << " of " << workers << " workers finished");
  churning.store(false, std::memory_order_release);
  reader.join();
  if (!finished) {
    sem.close();
  }
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(reads > 0);
  CHECK(ops.completed.load() == ops.started.load());
  CHECK(ops.started.load() == workers * iterations);
  CHECK(holders.max() <= limit);
  check_quiescent(sem, keys);
  check_stats_against(sem.stats(), ops);
  std::size_t after = 0;
  sem.for_each_key([&after](const std::string&, key_usage) { ++after; });
  CHECK(after == 0);
  if (verbose()) {
    MESSAGE("reads " << reads << " keys visited " << keys_visited << " max live " << max_live_seen
                     << " granted " << ops.granted.load() << " try_failed " << ops.try_failed.load());
  }
}

}  // namespace
}  // namespace keysem::stress
