// acquire: completion tokens, executors, ordering, arguments.
#include "test_support.hpp"

#include <boost/asio/experimental/parallel_group.hpp>

#include <future>
#include <thread>
#include <tuple>
#include <vector>

namespace keysem::test {

TEST_CASE("acquire: the handler is never invoked inside the initiating call, even with permits free") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto result = start(sem, "k");
  CHECK_FALSE(result->done());
  CHECK(sem.in_use("k") == 1);  // taken at once, delivered by post
  drain(ctx);
  CHECK(result->succeeded());
  CHECK(result->calls == 1);
  CHECK(result->granted.count() == 1);
  CHECK(result->granted.key() == "k");
}

TEST_CASE("acquire: a full key makes the call return at once and the handler wait") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = start(sem, "k");
  drain(ctx);
  CHECK_FALSE(result->done());
  CHECK(sem.waiting("k") == 1);
  held->release();
  CHECK_FALSE(result->done());  // handed over, but the handler still goes through its executor
  drain(ctx);
  CHECK(result->succeeded());
  CHECK(sem.in_use("k") == 1);
  CHECK(sem.waiting("k") == 0);
}

TEST_CASE("acquire: n of zero or above the limit completes with invalid_argument, never inline, never waits") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  auto zero = start(sem, "k", 0);
  auto too_many = start(sem, "k", 3);
  CHECK_FALSE(zero->done());
  drain(ctx);
  CHECK(*zero->ec == asio::error::invalid_argument);
  CHECK(*too_many->ec == asio::error::invalid_argument);
  CHECK_FALSE(zero->granted);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("acquire: waiters are granted strictly in arrival order") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  std::vector<int> order;
  std::vector<permit> granted;
  for (int i = 0; i < 5; ++i) {
    sem.acquire("k", [&, i](error_code ec, permit p) {
      REQUIRE_FALSE(ec);
      order.push_back(i);
      granted.push_back(std::move(p));
    });
  }
  drain(ctx);
  CHECK(order.empty());
  held->release();
  for (int i = 0; i < 5; ++i) {
    drain(ctx);
    REQUIRE(order.size() == static_cast<std::size_t>(i + 1));
    CHECK(order.back() == i);
    CHECK(sem.in_use("k") == 1);
    granted.back().release();
  }
  drain(ctx);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("acquire: a large weighted request at the head blocks smaller ones behind it") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 4);
  auto three = sem.try_acquire("k", 3);
  auto big = start(sem, "k", 4);
  auto small = start(sem, "k", 1);
  drain(ctx);
  CHECK_FALSE(big->done());
  CHECK_FALSE(small->done());  // one permit is free, but the head needs four
  three->release();
  drain(ctx);
  CHECK(big->succeeded());
  CHECK_FALSE(small->done());
  big->granted.release();
  drain(ctx);
  CHECK(small->succeeded());
}

TEST_CASE("acquire: one release can wake several weighted waiters in order") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 4);
  auto all = sem.try_acquire("k", 4);
  auto a = start(sem, "k", 2);
  auto b = start(sem, "k", 1);
  auto c = start(sem, "k", 1);
  auto d = start(sem, "k", 1);
  drain(ctx);
  all->release();
  drain(ctx);
  CHECK(a->succeeded());
  CHECK(b->succeeded());
  CHECK(c->succeeded());
  CHECK_FALSE(d->done());
  CHECK(sem.in_use("k") == 4);
  CHECK(sem.waiting("k") == 1);
}

TEST_CASE("acquire: the key argument may die right after the call") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("a-rather-long-key-that-lives-on-the-heap");
  std::shared_ptr<outcome> result;
  {
    std::string key = "a-rather-long-key-that-lives-on-the-heap";
    result = start(sem, key);
  }
  held->release();
  drain(ctx);
  REQUIRE(result->succeeded());
  CHECK(result->granted.key() == "a-rather-long-key-that-lives-on-the-heap");
}

TEST_CASE("tokens: co_await with no token, use_awaitable, as_tuple and deferred") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  bool finished = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        permit plain = co_await sem.acquire("k");
        CHECK(plain.count() == 1);
        permit weighted = co_await sem.acquire("w", 2);
        CHECK(weighted.count() == 2);
        permit explicit_token = co_await sem.acquire("k", asio::use_awaitable);
        CHECK(sem.in_use("k") == 2);
        auto [ec, p] = co_await sem.acquire("k", 3, asio::as_tuple(asio::use_awaitable));
        CHECK(ec == asio::error::invalid_argument);  // more than permits_per_key
        CHECK_FALSE(p);
        explicit_token.release();
        auto [ec2, p2] = co_await sem.acquire("k", asio::as_tuple(asio::deferred));
        CHECK_FALSE(ec2);
        CHECK(p2);
        finished = true;
      },
      asio::detached);
  ctx.run();
  CHECK(finished);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("tokens: the default co_await takes free permits at once and waits in FIFO order otherwise") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) {
    asio::co_spawn(
        ctx,
        [&, i]() -> asio::awaitable<void> {
          permit p = co_await sem.acquire("k");
          order.push_back(i);
        },
        asio::detached);
  }
  drain(ctx);
  CHECK(order.empty());
  CHECK(sem.waiting("k") == 3);
  CHECK_FALSE(sem.try_acquire("k"));
  held->release();
  drain(ctx);
  CHECK(order == std::vector<int>{0, 1, 2});
  CHECK(sem.key_count() == 0);
}

namespace {

// Counts its calls: how often a semaphore looked its key up.
struct counting_hash {
  int* calls;
  std::size_t operator()(int key) const noexcept {
    ++*calls;
    return static_cast<std::size_t>(key);
  }
};

}  // namespace

TEST_CASE("tokens: a co_await with no token that has to wait looks its key up once") {
  asio::io_context ctx;
  int hashes = 0;
  async_keyed_semaphore<int, counting_hash> sem(ctx, 1, semaphore_options{}, counting_hash{&hashes});
  auto held = sem.try_acquire(7);
  REQUIRE(held);
  hashes = 0;
  bool granted = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        auto p = co_await sem.acquire(7);
        granted = p.count() == 1;
      },
      asio::detached);
  drain(ctx);
  CHECK(sem.waiting(7) == 1);
  CHECK(hashes == 2);  // the acquire's one lookup, and waiting()'s
  held->release();
  drain(ctx);
  CHECK(granted);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("tokens: a co_await with no token on a full queue throws queue_full and registers nothing") {
  asio::io_context ctx;
  semaphore_options options;
  options.max_waiters_per_key = 1;
  keyed_semaphore sem(ctx, 1, options);
  auto held = sem.try_acquire("k");
  auto first = start(sem, "k");
  drain(ctx);
  REQUIRE(sem.waiting("k") == 1);
  bool full = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await sem.acquire("k");
        } catch (const boost::system::system_error& e) {
          full = e.code() == keysem::error::queue_full;
        }
      },
      asio::detached);
  drain(ctx);
  CHECK(full);
  CHECK(sem.waiting("k") == 1);
  held->release();
  drain(ctx);
  CHECK(first->succeeded());
}

TEST_CASE("tokens: co_await of a closed semaphore throws closed") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  sem.close();
  bool closed = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await sem.acquire("k");
        } catch (const boost::system::system_error& e) {
          closed = e.code() == keysem::error::closed;
        }
      },
      asio::detached);
  ctx.run();
  CHECK(closed);
}

TEST_CASE("tokens: co_await throws system_error with the operation's error") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  bool caught = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await sem.acquire("k", 5);
        } catch (const boost::system::system_error& e) {
          caught = e.code() == asio::error::invalid_argument;
        }
      },
      asio::detached);
  ctx.run();
  CHECK(caught);
}

TEST_CASE("tokens: a deferred acquire takes no permit until it is launched") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto op = sem.acquire("k", asio::deferred);
  CHECK(sem.in_use("k") == 0);
  CHECK(sem.key_count() == 0);
  auto result = std::make_shared<outcome>();
  std::move(op)(record(result));
  CHECK(sem.in_use("k") == 1);
  drain(ctx);
  CHECK(result->succeeded());
}

TEST_CASE("tokens: use_future from a plain thread") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  std::future<permit> granted = sem.acquire("k", asio::use_future);
  std::future<permit> refused = sem.acquire("k", 9, asio::use_future);
  std::thread runner([&] { ctx.run(); });
  permit p = granted.get();
  CHECK(p.count() == 1);
  CHECK_THROWS_AS(refused.get(), boost::system::system_error);
  runner.join();
}

TEST_CASE("tokens: experimental::parallel_group waits for both acquires") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  bool called = false;
  asio::experimental::make_parallel_group(sem.acquire("a", asio::deferred), sem.acquire("b", asio::deferred))
      .async_wait(asio::experimental::wait_for_all(),
                  [&](std::array<std::size_t, 2>, error_code ec_a, permit a, error_code ec_b, permit b) {
                    called = true;
                    CHECK_FALSE(ec_a);
                    CHECK_FALSE(ec_b);
                    CHECK(a.key() == "a");
                    CHECK(b.key() == "b");
                  });
  ctx.run();
  CHECK(called);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("executors: the handler runs on its bound strand") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto strand = asio::make_strand(ctx);
  auto held = sem.try_acquire("k");
  bool on_strand_now = false;
  bool on_strand_later = false;
  sem.acquire("k", asio::bind_executor(strand, [&](error_code, permit) {
                on_strand_now = strand.running_in_this_thread();
              }));
  sem.acquire("other", asio::bind_executor(strand, [&](error_code, permit) {
                on_strand_later = strand.running_in_this_thread();
              }));
  held->release();
  ctx.run();
  CHECK(on_strand_now);
  CHECK(on_strand_later);
}

TEST_CASE("executors: the handler runs on a second io_context it is bound to") {
  asio::io_context semaphore_ctx;
  asio::io_context handler_ctx;
  keyed_semaphore sem(semaphore_ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = std::make_shared<outcome>();
  sem.acquire("k", asio::bind_executor(handler_ctx, record(result)));
  auto immediate = std::make_shared<outcome>();
  sem.acquire("free", asio::bind_executor(handler_ctx, record(immediate)));
  semaphore_ctx.poll();
  semaphore_ctx.restart();
  CHECK_FALSE(immediate->done());
  handler_ctx.poll();
  handler_ctx.restart();
  CHECK(immediate->succeeded());

  held->release();
  semaphore_ctx.poll();  // the grant happens on the semaphore's strand
  CHECK_FALSE(result->done());
  handler_ctx.poll();  // the upcall happens on the handler's context
  CHECK(result->succeeded());
}

TEST_CASE("executors: a pending acquire is outstanding work on the handler's executor") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = start(sem, "k");
  // Without tracked work run_one() would return 0 at once once the queue is
  // empty; with it, the context is not out of work while the acquire waits.
  drain(ctx);
  CHECK_FALSE(ctx.stopped());
  CHECK(ctx.run_for(std::chrono::milliseconds(1)) == 0);
  CHECK_FALSE(ctx.stopped());
  held->release();
  ctx.run();
  CHECK(result->succeeded());
}

TEST_CASE("allocators: operation memory comes from the handler's allocator and is freed before the upcall") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  allocation_counts counts;
  bool balanced_at_upcall = false;
  sem.acquire("k", asio::bind_allocator(counting_allocator<void>(counts), [&](error_code ec, permit) {
                CHECK_FALSE(ec);
                balanced_at_upcall = counts.allocations == counts.deallocations;
              }));
  drain(ctx);
  CHECK(counts.allocations > 0);
  held->release();
  drain(ctx);
  CHECK(balanced_at_upcall);
  CHECK(counts.allocations == counts.deallocations);
}

TEST_CASE("handlers: an exception thrown by a handler leaves run() and the semaphore consistent") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  sem.acquire("k", [](error_code, permit) { throw std::runtime_error("handler failed"); });
  CHECK_THROWS_AS(ctx.run(), std::runtime_error);
  ctx.restart();
  CHECK(sem.in_use("k") == 0);  // the permit was released while the exception unwound
  auto next = start(sem, "k");
  ctx.run();
  CHECK(next->succeeded());
}

TEST_CASE("handlers: a handler may start the next acquire on the same key") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  int rounds = 0;
  std::function<void(error_code, permit)> again = [&](error_code ec, permit p) {
    REQUIRE_FALSE(ec);
    if (++rounds < 1000) {
      p.release();
      sem.acquire("k", again);
    }
  };
  sem.acquire("k", again);
  ctx.run();
  CHECK(rounds == 1000);
  CHECK(sem.key_count() == 0);
}

}  // namespace keysem::test
