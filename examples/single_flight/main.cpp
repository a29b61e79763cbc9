// single_flight: the cache-stampede guard, the asio way.
//
// Part 1. 1,000 concurrent requests for the weather of 10 cities arrive on a
// thread pool (callback style). Every request that finds its city's query in flight joins it:
// the "database" sees exactly 10 queries, and every request gets a shared,
// immutable answer (std::shared_ptr<const std::string>: no copies).
//
// Part 2 (coroutines). Cancellation is per caller. A request whose deadline passes leaves
// on its own (operation_aborted) while the others keep waiting; when every
// request for a city has left, nobody wants the answer any more and the
// query itself is cancelled.
//
// Exits non-zero if the database saw the wrong number of queries or a
// request ended wrongly.
#include <keysem/single_flight.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <variant>

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

using weather = std::shared_ptr<const std::string>;
using weather_flights = keysem::single_flight<std::string, weather>;

constexpr int request_count = 1000;
constexpr int city_count = 10;

long ms_since(clock_type::time_point start) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count());
}

// --- Part 1: the stampede ------------------------------------------------------

// The slow database. So that the printed count is the same on every run, it
// answers once every request of the stampede has arrived (a real database
// is simply slower than the burst), then takes 20 ms more.
struct database {
  explicit database(asio::strand<asio::thread_pool::executor_type> strand)
      : gate_strand(strand), all_arrived(strand, clock_type::time_point::max()) {}

  asio::strand<asio::thread_pool::executor_type> gate_strand;  // the timer's only executor
  asio::steady_timer all_arrived;
  std::atomic<int> arrived{0};
  std::atomic<int> queries{0};

  void request_arrived() {
    if (arrived.fetch_add(1) + 1 == request_count) {
      asio::post(gate_strand, [this] { all_arrived.cancel(); });
    }
  }

  asio::awaitable<void> wait_for_every_request() {
    if (arrived.load() < request_count) {
      co_await all_arrived.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  asio::awaitable<weather> query(std::string city) {
    queries.fetch_add(1);
    co_await asio::co_spawn(gate_strand, wait_for_every_request(), asio::use_awaitable);
    asio::steady_timer latency(co_await asio::this_coro::executor, 20ms);
    co_await latency.async_wait(asio::use_awaitable);
    co_return std::make_shared<const std::string>("sunny in " + city);
  }
};

bool stampede() {
  asio::thread_pool pool(4);
  database db(asio::make_strand(pool));
  weather_flights flights(pool);
  std::atomic<int> answered{0}, wrong{0};
  const auto start = clock_type::now();

  for (int i = 0; i < request_count; ++i) {
    asio::post(pool, [&, i] {
      const std::string city = "city-" + std::to_string(i % city_count);
      // fn captures what it needs by value: it is kept alive until the query ends.
      flights.run(city, [&db, city] { return db.query(city); },
                  [&, city](std::exception_ptr error, weather answer) {
                    if (error || *answer != "sunny in " + city) {
                      wrong.fetch_add(1);
                    }
                    answered.fetch_add(1);
                  });
      db.request_arrived();
    });
  }
  pool.join();

  const auto stats = flights.stats();
  std::printf("part 1: %d requests for %d cities answered in %ld ms\n", answered.load(), city_count,
              ms_since(start));
  std::printf("        database queries: %d (executions started %llu, callers joined %llu)\n",
              db.queries.load(), static_cast<unsigned long long>(stats.started),
              static_cast<unsigned long long>(stats.joined));
  return db.queries.load() == city_count && answered.load() == request_count && wrong.load() == 0;
}

// --- Part 2: cancellation and abandonment ------------------------------------

struct slow_database {
  int queries = 0;
  int cancelled = 0;

  // 200 ms, unless cancelled.
  asio::awaitable<weather> query(std::string city) {
    ++queries;
    asio::steady_timer latency(co_await asio::this_coro::executor, 200ms);
    auto [ec] = co_await latency.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      ++cancelled;
      std::printf("        the query for %s was cancelled: nobody waits for it\n", city.c_str());
      throw boost::system::system_error(ec);
    }
    co_return std::make_shared<const std::string>("rainy in " + city);
  }
};

// A request with a deadline: the run() and a timer race (awaitable
// operators); the timer winning cancels this caller only.
asio::awaitable<void> request(weather_flights& flights, slow_database& db, std::string who,
                              std::string city, std::chrono::milliseconds deadline,
                              std::string& outcome) {
  const auto start = clock_type::now();
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  // Built before the co_await: GCC 12 mishandles non-trivial temporaries
  // (the lambda's string) inside a co_await expression.
  auto query = [&db, city] { return db.query(city); };
  auto answer = flights.run(city, query);
  auto result = co_await (std::move(answer) || timer.async_wait(asio::use_awaitable));
  if (result.index() == 0) {
    outcome = *std::get<0>(result);
  } else {
    outcome = "gave up";
  }
  std::printf("        %-8s %-12s after %3ld ms: %s\n", who.c_str(), city.c_str(), ms_since(start),
              outcome.c_str());
}

bool cancellation() {
  asio::io_context ctx;
  weather_flights flights(ctx);
  slow_database db;
  std::string impatient, patient, first, second;

  std::printf("part 2: one caller gives up, the other still gets the answer\n");
  asio::co_spawn(ctx, request(flights, db, "alice", "oslo", 50ms, impatient), asio::detached);
  asio::co_spawn(ctx, request(flights, db, "bob", "oslo", 1000ms, patient), asio::detached);
  ctx.run();
  ctx.restart();

  std::printf("        every caller gives up: the query is abandoned\n");
  asio::co_spawn(ctx, request(flights, db, "carol", "lima", 50ms, first), asio::detached);
  asio::co_spawn(ctx, request(flights, db, "dave", "lima", 80ms, second), asio::detached);
  ctx.run();

  const auto stats = flights.stats();
  std::printf("        queries %d, cancelled queries %d; callers cancelled %llu, executions "
              "abandoned %llu\n",
              db.queries, db.cancelled, static_cast<unsigned long long>(stats.cancelled),
              static_cast<unsigned long long>(stats.abandoned));
  return impatient == "gave up" && patient == "rainy in oslo" && first == "gave up" &&
         second == "gave up" && db.queries == 2 && db.cancelled == 1 && stats.cancelled == 3 &&
         stats.abandoned == 1;
}

int main() {
  const bool stampede_ok = stampede();
  const bool cancellation_ok = cancellation();
  if (!stampede_ok || !cancellation_ok) {
    std::printf("unexpected outcome\n");
    return 1;
  }
  return 0;
}
