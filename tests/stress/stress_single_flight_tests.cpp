// Stress: single_flight on a thread pool — many threads joining the same
// keys, and the last caller leaving racing the result.
#include "stress_support.hpp"

#include <keysem/single_flight.hpp>

#include <array>

namespace keysem::stress {
namespace {

using flights = single_flight<std::string, std::uint64_t>;

bool out_of_time(std::size_t iteration, steady::time_point deadline) {
  return iteration % 16 == 15 && steady::now() > deadline;
}

error_code code_of(const std::exception_ptr& e) {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const boost::system::system_error& failure) {
    return failure.code();
  } catch (...) {
    return asio::error::fault;
  }
  return {};
}

// Per key: executions running now (never more than one) and executions started.
struct key_watch {
  std::atomic<int> running{0};
  std::atomic<std::uint64_t> started{0};
};

// fn: checks it runs alone on its key, yields to the pool 0 to 2 times (so
// that callers pile up, or not), returns the execution's number.
auto watched_fn(key_watch& watch, violations& log, std::string key) {
  return [&watch, &log, key = std::move(key)]() -> asio::awaitable<std::uint64_t> {
    const int before = watch.running.fetch_add(1, std::memory_order_acq_rel);
    KEYSEM_EXPECT(log, before == 0, key << " has " << before + 1 << " executions at once");
    const std::uint64_t number = watch.started.fetch_add(1, std::memory_order_relaxed) + 1;
    for (std::uint64_t i = 0; i < number % 3; ++i) {
      co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    }
    watch.running.fetch_sub(1, std::memory_order_acq_rel);
    co_return number;
  };
}

TEST_CASE("stress single_flight: many threads joining the same keys run one execution per key at a time") {
  watchdog guard("single_flight joins");
  constexpr std::size_t key_count = 4;
  constexpr unsigned threads = 4;
  const std::size_t per_thread = scaled(2000);
  const auto keys = make_keys("sf", key_count);
  std::array<key_watch, key_count> watches;
  violations log;
  completion_counter completed;
  asio::thread_pool pool(2);
  std::size_t issued = 0;
  {
    flights sf(pool);
    std::vector<std::thread> callers;
    std::atomic<std::size_t> calls{0};
    const auto deadline = busy_deadline();
    for (unsigned t = 0; t < threads; ++t) {
      callers.emplace_back([&, t] {
        for (std::size_t i = 0; i < per_thread && !out_of_time(i, deadline); ++i) {
          const std::size_t k = (i + t) % key_count;
          calls.fetch_add(1, std::memory_order_relaxed);
          sf.run(keys[k], watched_fn(watches[k], log, keys[k]),
                 [&, k](std::exception_ptr e, std::uint64_t number) {
                   KEYSEM_EXPECT(log, !e, keys[k] << ": " << describe(e));
                   KEYSEM_EXPECT(log, number >= 1 && number <= watches[k].started.load(),
                                 keys[k] << " got execution " << number);
                   completed.add();
                 });
        }
      });
    }
    for (auto& thread : callers) thread.join();
    issued = calls.load();
    REQUIRE(completed.wait_for(issued, completion_bound()));
    CHECK(sf.in_flight() == 0);
    const auto stats = sf.stats();
    CHECK(stats.started + stats.joined == issued);
    std::uint64_t executions = 0;
    for (const auto& watch : watches) executions += watch.started.load();
    CHECK(stats.started == executions);
    if (verbose()) {
      MESSAGE("calls " << issued << ", executions " << stats.started << ", joined " << stats.joined);
    }
  }
  pool.join();
  CHECK_MESSAGE(log.count() == 0, log.summary());
}

// One round: a caller bound to its own strand, and its cancellation emitted
// there after a random number of hops while the execution's result is on its
// way; in half the rounds a second, patient caller arrives around the same
// time and must get the value, whether it joined the first execution or,
// once that was abandoned, started a new one.
struct leave_round {
  explicit leave_round(asio::thread_pool& pool) : strand(asio::make_strand(pool)) {}
  asio::strand<asio::thread_pool::executor_type> strand;
  asio::cancellation_signal signal;
};

// Re-posts itself `hops` times on the strand, then emits.
void emit_after(std::shared_ptr<leave_round> round, unsigned hops) {
  asio::post(round->strand, [round, hops] {
    if (hops == 0) {
      round->signal.emit(asio::cancellation_type::terminal);
    } else {
      emit_after(round, hops - 1);
    }
  });
}

void race_last_caller(bool cancel_abandoned) {
  CAPTURE(cancel_abandoned);
  watchdog guard("single_flight leave vs result");
  const std::size_t rounds = scaled(3000);
  violations log;
  completion_counter completed;
  std::atomic<std::size_t> got_value{0};
  std::atomic<std::size_t> got_aborted{0};
  std::atomic<std::size_t> patient_values{0};
  std::mt19937_64 random(seed_for(cancel_abandoned ? 11 : 12));
  asio::thread_pool pool(2);
  {
    flights sf(pool, single_flight_options{0, cancel_abandoned});
    const auto deadline = busy_deadline();
    std::size_t issued = 0;
    auto fn = []() -> asio::awaitable<std::uint64_t> {
      co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
      co_return 42;
    };
    for (std::size_t i = 0; i < rounds && !out_of_time(i, deadline); ++i) {
      auto round = std::make_shared<leave_round>(pool);
      const std::string key = "k" + std::to_string(i);
      const auto hops = static_cast<unsigned>(random() % 6);
      const bool patient = random() % 2 == 0;
      auto cancellable = [&, round](std::exception_ptr e, std::uint64_t value) {
        if (!e) {
          KEYSEM_EXPECT(log, value == 42, "value " << value);
          got_value.fetch_add(1, std::memory_order_relaxed);
        } else {
          KEYSEM_EXPECT(log, code_of(e) == asio::error::operation_aborted, describe(e));
          KEYSEM_EXPECT(log, value == 0, "a failed caller got " << value);
          got_aborted.fetch_add(1, std::memory_order_relaxed);
        }
        completed.add();
      };
      // Started and cancelled on the caller's strand, as asio requires.
      asio::post(round->strand, [&sf, round, key, fn, cancellable, hops] {
        sf.run(key, fn,
               asio::bind_cancellation_slot(round->signal.slot(),
                                            asio::bind_executor(round->strand, cancellable)));
        emit_after(round, hops);
      });
      ++issued;
      if (patient) {
        asio::post(pool, [&, key, fn] {
          sf.run(key, fn, [&](std::exception_ptr e, std::uint64_t value) {
            KEYSEM_EXPECT(log, !e && value == 42, "a patient caller got " << value);
            patient_values.fetch_add(1, std::memory_order_relaxed);
            completed.add();
          });
        });
        ++issued;
      }
    }
    REQUIRE(completed.wait_for(issued, completion_bound()));
    CHECK(completed.value() == issued);  // exactly one completion each
    CHECK(got_value.load() + got_aborted.load() + patient_values.load() == issued);
    // The executions still being cancelled end on the pool; then no key is left.
    pool.join();
    CHECK(sf.in_flight() == 0);
    const auto stats = sf.stats();
    CHECK(stats.cancelled == got_aborted.load());
    CHECK(stats.started + stats.joined == issued);
    if (verbose()) {
      MESSAGE("value " << got_value.load() << ", aborted " << got_aborted.load() << ", patient "
                       << patient_values.load() << ", started " << stats.started
                       << ", abandoned " << stats.abandoned);
    }
  }
  CHECK_MESSAGE(log.count() == 0, log.summary());
}

TEST_CASE("stress single_flight: the last caller leaving races the result (cancel_abandoned)") {
  race_last_caller(true);
}

TEST_CASE("stress single_flight: the last caller leaving races the result (let it finish)") {
  race_last_caller(false);
}

}  // namespace
}  // namespace keysem::stress
