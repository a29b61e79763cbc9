// Stress: cancellation racing grants — timers with awaitable operators and
// parallel_group, a release racing an emitted signal, and the grant made by
// an acquire's own enqueue.
#include "stress_support.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <array>
#include <future>
#include <limits>
#include <variant>

namespace keysem::stress {
namespace {

bool out_of_time(std::size_t iteration, steady::time_point deadline) {
  return iteration % 16 == 15 && steady::now() > deadline;
}

// ---------------------------------------------------------------------------
// 3. Acquires raced against short timers
// ---------------------------------------------------------------------------

struct race_stats {
  std::atomic<std::size_t> started{0};
  std::atomic<std::size_t> completed{0};
  std::atomic<std::size_t> granted{0};
  std::atomic<std::size_t> aborted{0};
  std::atomic<std::size_t> acquire_won{0};
  std::atomic<std::size_t> timer_won{0};
  std::atomic<std::size_t> granted_after_timer{0};
  std::atomic<std::size_t> hog_grants{0};
};

struct race_context {
  keyed_semaphore& sem;
  const std::vector<std::string>& keys;
  holder_board& holders;
  violations& log;
  race_stats& stats;
};

// Checks one acquire's completion: (success, permit of n) or (aborted, empty).
void expect_outcome(race_context& ctx, const error_code& ec, const permit& p, const std::string& key,
                    std::size_t n) {
  if (!ec) {
    expect_permit(ctx.log, p, key, n);
    ctx.stats.granted.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  KEYSEM_EXPECT(ctx.log, ec == asio::error::operation_aborted,
                "acquire(" << key << ", " << n << ") failed with " << ec.message());
  KEYSEM_EXPECT(ctx.log, !p, "an acquire that failed with " << ec.message() << " carried a permit");
  ctx.stats.aborted.fetch_add(1, std::memory_order_relaxed);
}

// The acquire branch of `acquire || timer`: counts its start and its one
// completion, and holds a granted permit on the board from the grant on,
// also when the timer won and the operator throws the permit away.
asio::awaitable<tracked_permit> counted_acquire(race_context& ctx, std::size_t k, std::size_t n) {
  ctx.stats.started.fetch_add(1, std::memory_order_relaxed);
  auto [ec, p] = co_await ctx.sem.acquire(ctx.keys[k], n, asio::as_tuple(asio::use_awaitable));
  ctx.stats.completed.fetch_add(1, std::memory_order_relaxed);
  expect_outcome(ctx, ec, p, ctx.keys[k], n);
  if (ec) {
    throw boost::system::system_error(ec);
  }
  co_return tracked_permit(std::move(p), ctx.holders, k);
}

// A handler that counts its invocations, then calls the one it wraps; every
// association (executor, cancellation slot, allocator) is the wrapped one's.
template <class Handler>
struct counting_handler {
  Handler inner;
  std::atomic<std::size_t>* calls;

  void operator()(error_code ec, permit p) {
    calls->fetch_add(1, std::memory_order_relaxed);
    std::move(inner)(ec, std::move(p));
  }
};

// sem.acquire(key, n, token), counting each invocation of its handler.
template <class CompletionToken>
auto async_counted_acquire(keyed_semaphore& sem, std::string key, std::size_t n,
                           std::atomic<std::size_t>& calls, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(error_code, permit)>(
      [&sem, &calls](auto handler, std::string key, std::size_t n) {
        sem.acquire(std::move(key), n, counting_handler<decltype(handler)>{std::move(handler), &calls});
      },
      token, std::move(key), n);
}

asio::awaitable<void> hold_briefly(std::mt19937_64& rng) {
  const auto ex = co_await asio::this_coro::executor;
  if (rng() % 4 == 0) {
    asio::steady_timer timer(ex, std::chrono::microseconds(rng() % 101));
    co_await timer.async_wait(asio::use_awaitable);
  } else {
    for (auto posts = rng() % 3; posts > 0; --posts) {
      co_await asio::post(ex, asio::deferred);
    }
  }
}

asio::awaitable<void> operator_racer(race_context& ctx, std::uint64_t seed, std::size_t iterations,
                                     steady::time_point deadline) {
  using namespace asio::experimental::awaitable_operators;
  std::mt19937_64 rng(seed);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (std::size_t i = 0; i < iterations && !out_of_time(i, deadline); ++i) {
    const std::size_t k = rng() % ctx.keys.size();
    const std::size_t n = rng() % 4 == 0 ? 2 : 1;
    timer.expires_after(std::chrono::microseconds(rng() % 201));
    auto result = co_await (counted_acquire(ctx, k, n) || timer.async_wait(asio::use_awaitable));
    if (result.index() == 0) {
      ctx.stats.acquire_won.fetch_add(1, std::memory_order_relaxed);
      tracked_permit held = std::move(std::get<0>(result));
      co_await hold_briefly(rng);
    } else {
      ctx.stats.timer_won.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

asio::awaitable<void> group_racer(race_context& ctx, std::uint64_t seed, std::size_t iterations,
                                  steady::time_point deadline) {
  std::mt19937_64 rng(seed);
  const auto strand = co_await asio::this_coro::executor;
  asio::steady_timer timer(strand);
  auto& stats = ctx.stats;
  for (std::size_t i = 0; i < iterations && !out_of_time(i, deadline); ++i) {
    const std::size_t k = rng() % ctx.keys.size();
    const std::size_t n = rng() % 4 == 0 ? 2 : 1;
    timer.expires_after(std::chrono::microseconds(rng() % 201));
    stats.started.fetch_add(1, std::memory_order_relaxed);
    // Bound to the coroutine's strand: the group then completes the acquire
    // there and forwards its cancellation there, so that emitting into the
    // acquire's slot never races the acquire's completion clearing it
    // (asio's cancellation slots are not thread-safe). Unbound, the acquire
    // would complete on the semaphore's executor: another thread.
    auto counted = asio::bind_executor(
        strand, async_counted_acquire(ctx.sem, ctx.keys[k], n, stats.completed, asio::deferred));
    auto [order, ec, p, timer_ec] =
        co_await asio::experimental::make_parallel_group(std::move(counted), timer.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    expect_outcome(ctx, ec, p, ctx.keys[k], n);
    // Only the group cancels the acquire, and only after the timer finished first.
    KEYSEM_EXPECT(ctx.log, !ec || order[0] == 1, "the acquire was aborted before the timer fired");
    if (!ec) {
      if (order[0] == 1) {
        stats.granted_after_timer.fetch_add(1, std::memory_order_relaxed);  // the grant beat the cancel
      } else {
        stats.acquire_won.fetch_add(1, std::memory_order_relaxed);
      }
      tracked_permit held(std::move(p), ctx.holders, k);
      co_await hold_briefly(rng);
    } else {
      stats.timer_won.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// Waits without a timeout and holds a while: keeps the keys contended.
asio::awaitable<void> hog(race_context& ctx, std::uint64_t seed, std::size_t iterations,
                          steady::time_point deadline) {
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < iterations && !out_of_time(i, deadline); ++i) {
    const std::size_t k = rng() % ctx.keys.size();
    const std::size_t n = rng() % 3 == 0 ? 2 : 1;
    permit p = co_await ctx.sem.acquire(ctx.keys[k], n);
    expect_permit(ctx.log, p, ctx.keys[k], n);
    tracked_permit held(std::move(p), ctx.holders, k);
    ctx.stats.hog_grants.fetch_add(1, std::memory_order_relaxed);
    co_await hold_briefly(rng);
  }
}

enum class racer_kind { awaitable_operators, parallel_group };

void run_timer_races(racer_kind kind, std::uint64_t salt) {
  constexpr int limit = 2;
  const std::size_t racers = 12;
  const std::size_t hogs = 4;
  const std::size_t iterations = scaled(2000);
  INFO("KEYSEM_STRESS_SEED=" << base_seed());

  violations log;
  const auto keys = make_keys("race-", 3);
  holder_board holders(keys.size(), limit, log);
  race_stats stats;
  completion_counter done;

  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, limit);
  race_context ctx{sem, keys, holders, log, stats};
  const auto deadline = busy_deadline();
  const auto on_done = [&log, &done](std::exception_ptr e) {
    if (e) {
      log.add("coroutine: " + describe(e));
    }
    done.add();
  };
  // Both branches of a race run on the coroutine's executor: a strand.
  for (std::size_t r = 0; r < racers; ++r) {
    auto racer = kind == racer_kind::awaitable_operators
                     ? operator_racer(ctx, seed_for(salt, r), iterations, deadline)
                     : group_racer(ctx, seed_for(salt, r), iterations, deadline);
    asio::co_spawn(asio::make_strand(pool), std::move(racer), on_done);
  }
  for (std::size_t h = 0; h < hogs; ++h) {
    asio::co_spawn(asio::make_strand(pool), hog(ctx, seed_for(salt, 100 + h), iterations, deadline),
                   on_done);
  }
  const std::size_t expected = racers + hogs;
  const bool finished = done.wait_for(expected, completion_bound());
  CHECK_MESSAGE(finished, "only " << done.value() << " of " << expected << " coroutines finished");
  if (!finished) {
    sem.close();
  }
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(done.value() == expected);
  CHECK(stats.started.load() > 0);
  CHECK(stats.started.load() == stats.completed.load());
  CHECK(stats.granted.load() + stats.aborted.load() == stats.completed.load());
  CHECK(holders.max() <= limit);
  check_quiescent(sem, keys);
  if (verbose()) {
    MESSAGE("acquires " << stats.started.load() << ": granted " << stats.granted.load() << ", aborted "
                        << stats.aborted.load() << "; acquire won " << stats.acquire_won.load()
                        << ", timer won " << stats.timer_won.load() << ", granted after the timer "
                        << stats.granted_after_timer.load() << "; hog grants "
                        << stats.hog_grants.load());
  }
}

TEST_CASE("stress: acquires raced against short timers with awaitable operators leave no waiter behind") {
  watchdog dog("acquires raced against short timers with awaitable operators");
  run_timer_races(racer_kind::awaitable_operators, 3);
}

TEST_CASE("stress: acquires raced against short timers in a parallel_group complete exactly once") {
  watchdog dog("acquires raced against short timers in a parallel_group");
  run_timer_races(racer_kind::parallel_group, 31);
}

// ---------------------------------------------------------------------------
// 4. A release racing an emitted cancellation
// ---------------------------------------------------------------------------

TEST_CASE("stress: a release racing a cancellation gives the waiter exactly one outcome") {
  const std::size_t rounds = scaled(5000);
  const std::string key = "contended";
  constexpr std::array<asio::cancellation_type, 3> types{
      asio::cancellation_type::terminal, asio::cancellation_type::partial, asio::cancellation_type::total};
  constexpr std::uint32_t stop = std::numeric_limits<std::uint32_t>::max();
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("a release racing a cancellation");

  violations log;
  std::atomic<std::size_t> calls{0};
  std::atomic<std::size_t> granted{0};
  std::atomic<std::size_t> aborted{0};
  completion_counter handled;
  completion_counter released;
  completion_counter emitted;
  spin_barrier start(2);
  std::atomic<std::uint32_t> go{0};
  std::atomic<unsigned> release_delay{0};
  std::atomic<unsigned> emit_delay{0};
  std::mt19937_64 rng(seed_for(4));

  asio::thread_pool pool(4);
  keyed_semaphore sem(pool, 1);
  const auto strand = asio::make_strand(pool);  // the waiter's handler and the emits run here
  asio::cancellation_signal signal;             // reused: each round's op connects to it anew
  permit held;                                  // set by this thread, released by the releaser

  std::thread releaser([&] {
    std::uint32_t seen = 0;
    for (;;) {
      go.wait(seen, std::memory_order_acquire);
      seen = go.load(std::memory_order_acquire);
      if (seen == stop) {
        return;
      }
      start.arrive_and_wait();
      busy_delay(release_delay.load(std::memory_order_relaxed));
      held.release();  // a plain thread, outside the pool
      released.add();
    }
  });

  const auto bound = completion_bound();
  std::size_t ran = 0;
  bool stuck = false;
  for (std::size_t round = 0; round < rounds && !stuck; ++round) {
    // Waits for the previous round's cancelled op to leave the word, if it has not yet.
    std::promise<std::pair<error_code, permit>> taken;
    sem.acquire(key, [&taken](error_code ec, permit p) { taken.set_value({ec, std::move(p)}); });
    auto [taken_ec, taken_permit] = taken.get_future().get();
    if (taken_ec) {
      log.add("taking the permit to race for: " + taken_ec.message());
      break;
    }
    held = std::move(taken_permit);
    KEYSEM_EXPECT(log, held.count() == 1, "the holder's permit counts " << held.count());

    sem.acquire(key, asio::bind_cancellation_slot(
                         signal.slot(),
                         asio::bind_executor(strand, [&, round](error_code ec, permit p) {
                           calls.fetch_add(1, std::memory_order_relaxed);
                           KEYSEM_EXPECT(log, strand.running_in_this_thread(),
                                         "round " << round << ": the handler ran off its strand");
                           if (!ec) {
                             KEYSEM_EXPECT(log, p && p.count() == 1 && p.key() == key,
                                           "round " << round << ": granted with a permit of "
                                                    << p.count());
                             granted.fetch_add(1, std::memory_order_relaxed);
                           } else {
                             KEYSEM_EXPECT(log, ec == asio::error::operation_aborted,
                                           "round " << round << ": " << ec.message());
                             KEYSEM_EXPECT(log, !p, "round " << round << ": aborted with a permit");
                             aborted.fetch_add(1, std::memory_order_relaxed);
                           }
                           p.release();
                           handled.add();
                         })));
    KEYSEM_EXPECT(log, sem.in_use(key) == 1, "round " << round << ": in_use " << sem.in_use(key));
    KEYSEM_EXPECT(log, sem.waiting(key) >= 1, "round " << round << ": the acquire is not waiting");

    // Shift the two sides against each other by up to a few hundred nanoseconds.
    release_delay.store(static_cast<unsigned>(rng() % 64), std::memory_order_relaxed);
    emit_delay.store(static_cast<unsigned>(rng() % 64), std::memory_order_relaxed);
    const auto type = types[round % types.size()];
    asio::post(strand, [&, type] {
      start.arrive_and_wait();
      busy_delay(emit_delay.load(std::memory_order_relaxed));
      signal.emit(type);
      emitted.add();
    });
    go.store(static_cast<std::uint32_t>(round + 1), std::memory_order_release);
    go.notify_one();

    const bool finished = handled.wait_for(round + 1, bound) && released.wait_for(round + 1, bound) &&
                          emitted.wait_for(round + 1, bound);
    CHECK_MESSAGE(finished, "round " << round << ": handled " << handled.value() << ", released "
                                     << released.value() << ", emitted " << emitted.value()
                                     << ", waiting " << sem.waiting(key) << ", in use "
                                     << sem.in_use(key));
    if (!finished) {
      stuck = true;
      break;
    }
    ++ran;
    KEYSEM_EXPECT(log, sem.in_use(key) == 0, "round " << round << ": in_use " << sem.in_use(key)
                                                      << " after everything was released");
  }

  go.store(stop, std::memory_order_release);
  go.notify_one();
  if (stuck) {
    sem.close();  // completes a waiter that was never granted nor aborted; a worse hang is the watchdog's
  }
  releaser.join();
  pool.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(ran > 0);
  CHECK(calls.load() == handled.value());
  CHECK(handled.value() == ran);
  CHECK(granted.load() + aborted.load() == ran);
  check_quiescent(sem, {key});
  if (verbose()) {
    MESSAGE(ran << " rounds: granted " << granted.load() << ", aborted " << aborted.load());
  }
}

// ---------------------------------------------------------------------------
// The grant made by an acquire's own enqueue job
// ---------------------------------------------------------------------------

// Minimal reproduction of a lifetime race, deterministic up to the last step.
// With a limit of 1 and a permit held:
//   1. acquire W with a cancellation slot: W is registered as a waiter;
//   2. cancel W at once: its cancel job is posted after its enqueue job;
//   3. release the permit: a waiter is registered, so a drain job follows;
//   4. acquire A, whose handler runs on another thread and releases at once:
//      W is still counted as a waiter, so A registers as one too.
// Running the strand then enqueues W, removes it (cancel job), drains an
// empty queue (clearing the drain bit), and finally A's enqueue job grants A
// straight away. From then on nothing but A's permit keeps the key's state
// alive, and A's handler releases it on the other thread while the strand is
// still inside key_state_base::grant_waiters() (queue_.empty(),
// shard_->unlink_waiting(*this)).
TEST_CASE("stress: a waiter granted as it is queued survives its permit being released at once on another thread") {
  const std::size_t rounds = scaled(2000);
  const std::string key = "enqueued";
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("a waiter granted as it is queued");

  violations log;
  std::atomic<std::size_t> cancelled_ok{0};
  std::atomic<std::size_t> granted_ok{0};
  completion_counter released;

  asio::io_context other;
  auto other_work = asio::make_work_guard(other);
  std::thread other_thread([&other] { other.run(); });
  std::size_t ran = 0;
  {
    asio::io_context strand_context;  // runs the shards' strands, on this thread
    keyed_semaphore sem(strand_context, 1);
    for (std::size_t round = 0; round < rounds; ++round) {
      auto p = sem.try_acquire(key);
      KEYSEM_EXPECT(log, p.has_value(), "round " << round << ": the key is not free");
      if (!p) {
        break;
      }
      asio::cancellation_signal signal;
      sem.acquire(key, asio::bind_cancellation_slot(
                           signal.slot(), asio::bind_executor(strand_context, [&](error_code ec, permit w) {
                             KEYSEM_EXPECT(log, ec == asio::error::operation_aborted && !w,
                                           "the cancelled waiter got " << ec.message());
                             cancelled_ok.fetch_add(1, std::memory_order_relaxed);
                           })));
      signal.emit(asio::cancellation_type::terminal);
      p->release();
      sem.acquire(key, asio::bind_executor(other, [&](error_code ec, permit a) {
                    KEYSEM_EXPECT(log, !ec && a, "the second waiter got " << ec.message());
                    granted_ok.fetch_add(1, std::memory_order_relaxed);
                    a.release();  // on the other thread, at once
                    released.add();
                  }));
      strand_context.poll();  // enqueue W, cancel W, drain, enqueue and grant A
      strand_context.restart();
      const bool finished = released.wait_for(round + 1, completion_bound());
      KEYSEM_EXPECT(log, finished, "round " << round << ": the second waiter never completed");
      if (!finished) {
        break;
      }
      strand_context.poll();  // W's handler
      strand_context.restart();
      ++ran;
    }
    CHECK(sem.key_count() == 0);
  }
  other_work.reset();
  other_thread.join();

  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(ran == rounds);
  CHECK(cancelled_ok.load() == ran);
  CHECK(granted_ok.load() == ran);
}

}  // namespace
}  // namespace keysem::stress

template <template <class, class> class Associator, class Handler, class DefaultCandidate>
struct boost::asio::associator<Associator, keysem::stress::counting_handler<Handler>, DefaultCandidate>
    : Associator<Handler, DefaultCandidate> {
  static typename Associator<Handler, DefaultCandidate>::type get(
      const keysem::stress::counting_handler<Handler>& h) noexcept {
    return Associator<Handler, DefaultCandidate>::get(h.inner);
  }
  static auto get(const keysem::stress::counting_handler<Handler>& h,
                  const DefaultCandidate& c) noexcept -> decltype(Associator<Handler, DefaultCandidate>::get(h.inner, c)) {
    return Associator<Handler, DefaultCandidate>::get(h.inner, c);
  }
};
