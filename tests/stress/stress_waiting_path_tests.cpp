// Stress: the waiting path through a shard's serialiser, with every side of a
// hand-off on its own thread. Waiters register and queue from one thread,
// permits are released on another, cancellations and close() race them, and
// the serialiser runs on a third.
#include "stress_support.hpp"

#include <keysem/detail/job.hpp>
#include <keysem/detail/serial_executor.hpp>

#include <future>
#include <optional>

namespace keysem::stress {
namespace {

// Permits handed from the waiters' thread to the releasing thread.
using release_mailbox = blocking_queue<tracked_permit>;

struct path_stats {
  std::atomic<std::size_t> started{0};
  std::atomic<std::size_t> completed{0};
  std::atomic<std::size_t> granted{0};
  std::atomic<std::size_t> aborted{0};
  std::atomic<std::size_t> closed{0};
};

struct round_context {
  keyed_semaphore& sem;
  const std::vector<std::string>& keys;
  holder_board& holders;
  release_mailbox& mailbox;
  violations& log;
  path_stats& stats;
};

// Checks one completion; true when it granted a permit.
bool expect_outcome(round_context& ctx, const error_code& ec, const permit& p, const std::string& key,
                    bool cancellable) {
  ctx.stats.completed.fetch_add(1, std::memory_order_relaxed);
  if (!ec) {
    expect_permit(ctx.log, p, key, 1);
    ctx.stats.granted.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  KEYSEM_EXPECT(ctx.log, !p, "acquire(" << key << ") failed with " << ec.message() << " but carried a permit");
  if (ec == keysem::error::closed) {
    KEYSEM_EXPECT(ctx.log, ctx.sem.is_closed(), "acquire(" << key << ") reported closed while open");
    ctx.stats.closed.fetch_add(1, std::memory_order_relaxed);
  } else {
    KEYSEM_EXPECT(ctx.log, cancellable && ec == asio::error::operation_aborted,
                  "acquire(" << key << ") failed with " << ec.message());
    ctx.stats.aborted.fetch_add(1, std::memory_order_relaxed);
  }
  return false;
}

// One waiter: a few acquires on random keys, each either the token-less
// co_await or a cancellable as_tuple acquire whose signal a sibling emits
// after a random number of event-loop turns. Granted permits go to the
// releasing thread.
asio::awaitable<void> waiter(round_context& ctx, std::uint64_t seed, std::size_t acquires) {
  std::mt19937_64 rng(seed);
  const auto ex = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < acquires; ++i) {
    const std::size_t k = rng() % ctx.keys.size();
    const std::string& key = ctx.keys[k];
    ctx.stats.started.fetch_add(1, std::memory_order_relaxed);
    error_code ec;
    permit p;
    const bool cancellable = rng() % 2 == 0;
    if (cancellable) {
      auto signal = std::make_shared<asio::cancellation_signal>();
      const unsigned turns = static_cast<unsigned>(rng() % 4);
      // The emitter runs on this thread too (a signal is not thread-safe);
      // it holds the signal until it has emitted, which may be after the
      // acquire completed.
      asio::co_spawn(
          ex,
          [signal, turns, ex]() -> asio::awaitable<void> {
            for (unsigned t = 0; t < turns; ++t) {
              co_await asio::post(ex, asio::deferred);
            }
            signal->emit(asio::cancellation_type::terminal);
          },
          asio::detached);
      std::tie(ec, p) = co_await ctx.sem.acquire(
          key, asio::bind_cancellation_slot(signal->slot(), asio::as_tuple(asio::use_awaitable)));
    } else {
      try {
        p = co_await ctx.sem.acquire(key);
      } catch (const boost::system::system_error& e) {
        ec = e.code();
      }
    }
    if (!expect_outcome(ctx, ec, p, key, cancellable)) {
      if (ec == keysem::error::closed) {
        co_return;
      }
      continue;
    }
    ctx.mailbox.push(tracked_permit(std::move(p), ctx.holders, k));
    if (rng() % 2 == 0) {
      co_await asio::post(ex, asio::deferred);
    }
  }
}

// A thread running an io_context until told to stop.
class context_thread {
 public:
  context_thread() : work_(asio::make_work_guard(ctx_)), thread_([this] { ctx_.run(); }) {}
  context_thread(const context_thread&) = delete;
  context_thread& operator=(const context_thread&) = delete;
  ~context_thread() {
    work_.reset();
    thread_.join();
  }
  asio::io_context& context() { return ctx_; }

 private:
  asio::io_context ctx_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("waiting path stress: enqueues on one thread, releases on another, cancellations and close racing") {
  const std::size_t rounds = scaled(40);
  constexpr std::size_t waiters = 16;
  constexpr std::size_t acquires = 8;
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("waiting path: enqueues, releases, cancellations and close on three threads");

  const std::vector<std::string> keys = make_keys("path", 3);
  violations log;
  path_stats stats;
  std::mt19937_64 rng(seed_for(11));
  context_thread serialiser;  // the semaphore's executor: its shards' serialisers run here
  context_thread waiting;     // the waiters, their completions and their cancellations
  const auto deadline = busy_deadline();
  const auto bound = completion_bound();
  std::size_t ran = 0;
  for (std::size_t round = 0; round < rounds && steady::now() < deadline; ++round) {
    keyed_semaphore sem(serialiser.context().get_executor(), 1);
    holder_board holders(keys.size(), 1, log);
    release_mailbox mailbox;
    round_context ctx{sem, keys, holders, mailbox, log, stats};
    // The releasing thread closes the semaphore after a random number of
    // releases, possibly never in this round.
    const std::size_t close_after = rng() % (waiters * acquires);
    std::thread releaser([&] {
      std::size_t released = 0;
      while (auto p = mailbox.pop()) {
        busy_delay(static_cast<unsigned>(released % 32));
        p->reset();
        if (++released == close_after) {
          sem.close();
        }
      }
    });
    completion_counter finished;
    for (std::size_t w = 0; w < waiters; ++w) {
      asio::co_spawn(waiting.context(), waiter(ctx, seed_for(12 + round, w), acquires),
                     [&](std::exception_ptr e) {
                       if (e) {
                         log.add(describe(e));
                       }
                       finished.add();
                     });
    }
    const bool done = finished.wait_for(waiters, bound);
    CHECK_MESSAGE(done, "round " << round << ": " << finished.value() << " of " << waiters
                                 << " waiters finished");
    mailbox.close();
    releaser.join();
    if (!done) {
      sem.close();  // a lost waiter: let the rest end; the watchdog covers worse
      break;
    }
    // Nothing left behind: every acquire ended once and every permit came back.
    std::promise<void> drained;  // the serialiser's last jobs (drains, reclaims) ran
    asio::post(serialiser.context(), [&] { drained.set_value(); });
    drained.get_future().wait();
    check_quiescent(sem, keys);
    ++ran;
  }
  CHECK_MESSAGE(log.count() == 0, log.summary());
  CHECK(ran > 0);
  CHECK(stats.completed.load() == stats.started.load());
  CHECK(stats.granted.load() + stats.aborted.load() + stats.closed.load() == stats.completed.load());
  CHECK(stats.granted.load() > 0);
  if (verbose()) {
    MESSAGE(ran << " rounds: " << stats.granted.load() << " granted, " << stats.aborted.load()
                << " aborted, " << stats.closed.load() << " closed");
  }
}

namespace {

// A function that counts whether it ran or was destroyed unrun.
struct outcome_tally {
  std::atomic<std::size_t> runs{0};
  std::atomic<std::size_t> drops{0};
};

struct outcome_policy {
  using state = outcome_tally*;
  static void run(outcome_tally* t) { t->runs.fetch_add(1, std::memory_order_relaxed); }
  static void drop(outcome_tally* t) noexcept { t->drops.fetch_add(1, std::memory_order_relaxed); }
};

}  // namespace

TEST_CASE("waiting path stress: functions given to a serialiser while its pool shuts down each run or drop once") {
  using pool_serial = detail::serial_executor<asio::thread_pool::executor_type>;
  const std::size_t rounds = scaled(200);
  constexpr std::size_t posters = 3;
  constexpr std::size_t per_poster = 300;
  INFO("KEYSEM_STRESS_SEED=" << base_seed());
  watchdog dog("serialiser pushes racing its pool's shutdown");
  std::mt19937_64 rng(seed_for(13));
  const auto deadline = busy_deadline();
  std::size_t ran = 0;
  std::size_t runs = 0;
  std::size_t drops = 0;
  for (std::size_t round = 0; round < rounds && steady::now() < deadline; ++round) {
    outcome_tally tally;
    {
      asio::thread_pool pool(2);
      const pool_serial serial(pool.get_executor());
      spin_barrier start(posters + 1);
      std::vector<std::thread> threads;
      for (std::size_t t = 0; t < posters; ++t) {
        threads.emplace_back([&, t] {
          start.arrive_and_wait();
          for (std::size_t i = 0; i < per_poster; ++i) {
            auto f = detail::job<outcome_policy>(&tally);
            if ((i + t) % 2 == 0) {
              asio::execution::execute(asio::require(serial, asio::execution::blocking.never), std::move(f));
            } else {
              asio::execution::execute(asio::prefer(serial, asio::execution::blocking.possibly), std::move(f));
            }
          }
        });
      }
      // Stops the pool once a random share of the functions ran: queued
      // runners are then destroyed with the pool, unrun.
      const std::size_t stop_after = rng() % (posters * per_poster);
      start.arrive_and_wait();
      unsigned spins = 0;
      while (tally.runs.load(std::memory_order_relaxed) < stop_after) {
        relax(spins);
      }
      pool.stop();
      for (auto& thread : threads) {
        thread.join();
      }
      pool.join();
    }
    const std::size_t total = tally.runs.load() + tally.drops.load();
    CHECK_MESSAGE(total == posters * per_poster, "round " << round << ": " << tally.runs.load() << " ran, "
                                                        << tally.drops.load() << " dropped");
    if (total != posters * per_poster) {
      break;
    }
    runs += tally.runs.load();
    drops += tally.drops.load();
    ++ran;
  }
  CHECK(ran > 0);
  if (verbose()) {
    MESSAGE(ran << " rounds: " << runs << " functions ran, " << drops << " dropped");
  }
}

}  // namespace keysem::stress
