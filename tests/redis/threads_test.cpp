// fleet_semaphore across threads (run under TSan in CI): coroutines on
// strands of a two-thread pool mixing every request kind, permits released
// on plain threads, stats() read from another thread, permits and
// async_wait_lost operations outliving the semaphore.
#include "fleet_support.hpp"

#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>

using namespace keysem::redis;
using namespace keysem::redis::test;

namespace {

constexpr int workers = 8, rounds = 25;

// One worker: rounds of acquire / acquire_for / try_acquire over three keys;
// each permit is raced against a 1 ms timer by async_wait_lost (which the
// timer's win cancels), then released, every fourth one on a plain thread.
// Ends by taking a permit of its own key and handing it to `parked`.
asio::awaitable<void> worker(fleet& sem, int w, std::atomic<int>& errors, std::atomic<int>& granted,
                             std::vector<fleet_permit>& parked, std::mutex& parked_lock) {
  using namespace boost::asio::experimental::awaitable_operators;
  for (int r = 0; r < rounds; ++r) {
    const std::string key = "mt" + std::to_string((w + r) % 3);
    boost::system::error_code ec;
    fleet_permit p;
    switch (r % 3) {
      case 0: std::tie(ec, p) = co_await sem.acquire(key, 1, tuple_token()); break;
      case 1:
        std::tie(ec, p) = co_await sem.acquire_for(key, 1, 20ms, tuple_token());
        if (ec == asio::error::timed_out) ec = {};
        break;
      default: std::tie(ec, p) = co_await sem.try_acquire(key, 1, tuple_token()); break;
    }
    if (ec) ++errors;
    if (!p) continue;
    ++granted;
    asio::steady_timer timer(co_await asio::this_coro::executor, 1ms);
    co_await (p.async_wait_lost(tuple_token()) || timer.async_wait(tuple_token()));
    if (!p.valid()) ++errors;  // nothing here may lose a lease
    if (r % 4 == 0) {
      std::thread([q = std::move(p)]() mutable { q.release(); }).join();
    } else {
      p.release();
    }
  }
  auto [ec, own] = co_await sem.try_acquire("park" + std::to_string(w), 1, tuple_token());
  if (ec || !own) ++errors;
  std::lock_guard held(parked_lock);
  parked.push_back(std::move(own));
}

}  // namespace

TEST_CASE("threads: coroutines on a thread pool share two semaphores; permits released on plain threads and after the semaphores are gone") {
  redis_server server;
  asio::thread_pool pool(2);
  std::atomic<int> errors{0}, granted{0}, finished{0};
  std::vector<fleet_permit> parked;
  std::mutex parked_lock;
  std::promise<void> all_finished;
  std::atomic<int> pending_completed{0};
  {
    fleet a(pool.get_executor(), server.where(), 2, short_lease());
    fleet b(pool.get_executor(), server.where(), 2, short_lease());
    for (int w = 0; w < workers; ++w) {
      asio::co_spawn(asio::make_strand(pool),
                     worker(w % 2 ? a : b, w, errors, granted, parked, parked_lock),
                     [&](std::exception_ptr e) {
                       if (e) ++errors;
                       if (++finished == workers) all_finished.set_value();
                     });
    }
    // stats() from this thread while the workers run (bounded: 30 s).
    auto done = all_finished.get_future();
    const auto until = steady::now() + 30s;
    std::uint64_t seen = 0;
    while (done.wait_for(1ms) != std::future_status::ready && steady::now() < until) {
      seen = std::max<std::uint64_t>(seen, a.stats().granted + b.stats().granted);
    }
    REQUIRE(finished.load() == workers);
    CHECK(seen <= static_cast<std::uint64_t>(granted.load() + workers));
    // Acquires still pending when the semaphore goes complete anyway.
    for (int i = 0; i < 4; ++i) {
      a.acquire("mt0", 1, [&](boost::system::error_code, fleet_permit) { ++pending_completed; });
    }
  }
  // The permits outlive their semaphores; releasing them is harmless.
  {
    std::lock_guard held(parked_lock);
    CHECK(parked.size() == static_cast<std::size_t>(workers));
    for (auto& p : parked) std::thread([&p] { p.release(); }).join();
  }
  pool.join();
  CHECK(pending_completed.load() == 4);
  MESSAGE("granted " << granted.load() << " permits across 2 threads");
  CHECK(errors.load() == 0);
  CHECK(granted.load() > 0);
}

TEST_CASE("threads: async_wait_lost operations on several strands, some cancelled, while the semaphore goes away") {
  redis_server server;
  asio::thread_pool pool(2);
  fleet_permit held;
  std::atomic<int> completed{0};
  {
    fleet sem(pool.get_executor(), server.where(), 1, short_lease());
    std::promise<fleet_permit> got;
    sem.acquire("w", 1, [&](boost::system::error_code ec, fleet_permit p) {
      CHECK_FALSE(ec);
      got.set_value(std::move(p));
    });
    auto future = got.get_future();
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    held = future.get();
    for (int i = 0; i < 8; ++i) {
      auto strand = asio::make_strand(pool);
      auto signal = std::make_shared<asio::cancellation_signal>();
      held.async_wait_lost(asio::bind_cancellation_slot(
          signal->slot(), asio::bind_executor(strand, [&, signal](boost::system::error_code) { ++completed; })));
      if (i % 2) asio::post(strand, [signal] { signal->emit(asio::cancellation_type::terminal); });
    }
    std::thread([&] { (void)held.valid(); }).join();
  }  // the semaphore is gone: the permit is lost, its waits complete
  std::thread([&] { held.release(); }).join();
  pool.join();
  CHECK(completed.load() == 8);
}
