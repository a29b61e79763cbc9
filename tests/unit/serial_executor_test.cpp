// The shard's serialiser on its own (serial_executor.hpp): order, mutual
// exclusion, the inline rule, shutdown and work tracking.
#include <keysem/detail/job.hpp>
#include <keysem/detail/serial_executor.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using keysem::detail::serial_batch;
using keysem::detail::serial_executor;
using io_serial = serial_executor<asio::io_context::executor_type>;

// Counts how many jobs ran and how many were destroyed unrun.
struct tally {
  int runs = 0;
  int drops = 0;
};

struct tally_policy {
  using state = tally*;
  static void run(tally* t) { ++t->runs; }
  static void drop(tally* t) noexcept { ++t->drops; }
};

using tally_job = keysem::detail::job<tally_policy>;

template <class Executor, class Function>
void post_never(const Executor& ex, Function&& f) {
  asio::execution::execute(asio::require(ex, asio::execution::blocking.never),
                           std::forward<Function>(f));
}

template <class Executor, class Function>
void dispatch_possibly(const Executor& ex, Function&& f) {
  asio::execution::execute(asio::prefer(ex, asio::execution::blocking.possibly),
                           std::forward<Function>(f));
}

}  // namespace

TEST_CASE("serial_executor: is an asio executor that any_io_executor can hold") {
  static_assert(asio::execution::is_executor<io_serial>::value);
  static_assert(asio::execution::is_executor<serial_executor<asio::any_io_executor>>::value);
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  const asio::any_io_executor erased(serial);
  CHECK(&asio::query(erased, asio::execution::context) == &static_cast<asio::execution_context&>(ctx));
  CHECK(erased.target<io_serial>() != nullptr);
}

TEST_CASE("serial_executor: copies and derived executors share one queue; others do not") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  const io_serial copy = serial;  // NOLINT(performance-unnecessary-copy-initialization)
  const io_serial other(ctx.get_executor());
  CHECK(serial == copy);
  CHECK(serial != other);
  const auto never = asio::require(serial, asio::execution::blocking.never);
  CHECK(asio::query(never, asio::execution::blocking) == asio::execution::blocking.never);
  bool inside_derived = false;
  bool inside_other = true;
  post_never(serial, [&] {
    inside_derived = never.running_in_this_thread();
    inside_other = other.running_in_this_thread();
  });
  ctx.run();
  CHECK(inside_derived);
  CHECK_FALSE(inside_other);
  CHECK_FALSE(serial.running_in_this_thread());
}

TEST_CASE("serial_executor: functions run in the order they were given") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  std::vector<int> order;
  const int count = 3 * static_cast<int>(serial_batch) + 5;  // spans several runner passes
  for (int i = 0; i < count; ++i) {
    if (i % 2 == 0) {
      post_never(serial, [&order, i] { order.push_back(i); });
    } else {
      dispatch_possibly(serial, [&order, i] { order.push_back(i); });
    }
  }
  CHECK(order.empty());  // not run inline: this thread does not run ctx
  ctx.run();
  REQUIRE(order.size() == static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    CHECK(order[static_cast<std::size_t>(i)] == i);
  }
}

TEST_CASE("serial_executor: blocking.possibly runs inline on a thread running the context when idle") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  bool ran_inline = false;
  bool inside = false;
  bool ran = false;  // outlives the handler, should the function run later
  asio::post(ctx, [&] {
    dispatch_possibly(serial, [&] {
      ran = true;
      inside = serial.running_in_this_thread();
    });
    ran_inline = ran;
  });
  ctx.run();
  CHECK(ran_inline);
  CHECK(inside);
}

TEST_CASE("serial_executor: a function run inline may destroy the executor it was given to") {
  // The function queues one more and destroys the only executor object, on
  // the heap: the run that started inside execute() must not read that
  // object again when it posts its runner for what is left.
  asio::io_context ctx;
  auto serial = std::make_unique<io_serial>(ctx.get_executor());
  bool first_ran = false;
  bool second_ran = false;
  asio::post(ctx, [&] {
    // On the object itself (an io_context executor is blocking.possibly), not
    // on a copy that prefer() would make.
    asio::execution::execute(*serial, [&] {
      first_ran = true;
      post_never(*serial, [&] { second_ran = true; });
      serial.reset();
    });
  });
  ctx.run();
  CHECK(first_ran);
  CHECK(second_ran);
  CHECK(serial == nullptr);
}

TEST_CASE("serial_executor: blocking.never never runs inline, even on the context's thread") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  bool ran_inline = true;
  bool ran = false;
  asio::post(ctx, [&] {
    post_never(serial, [flag = &ran] { *flag = true; });
    ran_inline = ran;
  });
  ctx.run();
  CHECK_FALSE(ran_inline);
  CHECK(ran);
}

TEST_CASE("serial_executor: a dispatch from inside a running function queues behind it, no recursion") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  std::vector<int> order;
  asio::post(ctx, [&] {
    dispatch_possibly(serial, [&] {
      order.push_back(1);
      dispatch_possibly(serial, [out = &order] { out->push_back(3); });
      order.push_back(2);  // the nested function has not run yet
    });
  });
  ctx.run();
  CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("serial_executor: a dispatch to a busy serialiser queues, even on the context's thread") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  std::vector<int> order;
  bool second_ran_inline = true;
  bool second_ran = false;  // outlives the handler: the function runs after it
  asio::post(ctx, [&] {
    post_never(serial, [out = &order] { out->push_back(1); });  // its runner waits in ctx's queue
    dispatch_possibly(serial, [ran = &second_ran, out = &order] {
      *ran = true;
      out->push_back(2);
    });
    second_ran_inline = second_ran;
  });
  ctx.run();
  CHECK_FALSE(second_ran_inline);
  CHECK(order == std::vector<int>{1, 2});
}

TEST_CASE("serial_executor: what arrives during a pass runs in the next one, behind queued handlers") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  std::vector<int> order;
  post_never(serial, [&] { order.push_back(1); });  // starts the runner
  post_never(serial, [&] { order.push_back(3); });  // waits for the next pass
  asio::post(ctx, [&] { order.push_back(2); });
  ctx.run();
  CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("serial_executor: a long batch yields its thread to other handlers") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  std::size_t ran = 0;
  std::optional<std::size_t> ran_when_other_ran;
  const std::size_t count = 2 * serial_batch + 1;
  post_never(serial, [&] {
    for (std::size_t i = 0; i < count; ++i) {  // one batch for the next pass
      post_never(serial, [i, ctx = &ctx, ran = &ran, seen = &ran_when_other_ran] {
        if (i == 0) {
          asio::post(*ctx, [ran, seen] { *seen = *ran; });
        }
        ++*ran;
      });
    }
  });
  ctx.run();  // returns only once every queued function ran
  CHECK(ran == count);
  REQUIRE(ran_when_other_ran.has_value());
  CHECK(*ran_when_other_ran == serial_batch);
}

TEST_CASE("serial_executor: run() stays alive while functions queue more functions") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  int remaining = 3 * static_cast<int>(serial_batch);
  std::function<void()> step = [&] {
    if (--remaining > 0) {
      post_never(serial, step);
    }
  };
  post_never(serial, step);
  CHECK(ctx.run() > 0);
  CHECK(remaining == 0);
}

TEST_CASE("serial_executor: an exception leaves run(); the rest runs on the next run()") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  std::vector<int> order;
  post_never(serial, [&] { order.push_back(1); });
  post_never(serial, [&] {
    order.push_back(2);
    throw std::runtime_error("job failed");
  });
  post_never(serial, [&] { order.push_back(3); });
  CHECK_THROWS_AS(ctx.run(), std::runtime_error);
  CHECK(order == std::vector<int>{1, 2});
  ctx.restart();
  ctx.run();
  CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("serial_executor: destroying the context drops every queued function exactly once") {
  tally counts;
  std::optional<io_serial> kept;  // the serialiser outlives its context
  {
    asio::io_context ctx;
    kept.emplace(ctx.get_executor());
    for (int i = 0; i < 5; ++i) {
      post_never(*kept, tally_job(&counts));
    }
    dispatch_possibly(*kept, tally_job(&counts));
  }
  CHECK(counts.runs == 0);
  CHECK(counts.drops == 6);
  kept.reset();
  CHECK(counts.drops == 6);
}

TEST_CASE("serial_executor: a context destroyed after a partial run drops only what did not run") {
  tally counts;
  {
    asio::io_context ctx;
    const io_serial serial(ctx.get_executor());
    for (int i = 0; i < 5; ++i) {
      post_never(serial, tally_job(&counts));
    }
    // One runner pass: the first function alone, then a runner posted for
    // the other four.
    CHECK(ctx.run_one() == 1);
  }
  CHECK(counts.runs == 1);
  CHECK(counts.drops == 4);
}

TEST_CASE("serial_executor: through any_io_executor, asio::post and asio::dispatch keep the rules") {
  asio::io_context ctx;
  const asio::any_io_executor serial = io_serial(ctx.get_executor());
  std::vector<int> order;
  asio::post(serial, [&] { order.push_back(1); });
  asio::post(ctx, [&] {
    asio::dispatch(serial, [out = &order] { out->push_back(2); });
  });
  bool ran = false;  // outlives the handler, should the function run later
  asio::post(ctx, [&] {
    asio::dispatch(serial, [&] { ran = true; });
    order.push_back(ran ? 3 : -3);  // idle by now: ran inline
  });
  ctx.run();
  CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("serial_executor: never two functions at once, and each poster's order kept, across threads") {
  asio::thread_pool pool(4);
  const serial_executor<asio::thread_pool::executor_type> serial(pool.get_executor());
  constexpr int posters = 4;  // two pool handlers, two plain threads
  constexpr int per_poster = 2000;
  std::atomic<bool> inside{false};
  std::atomic<bool> overlapped{false};
  std::atomic<int> finished{0};
  int total = 0;  // plain on purpose: TSan reports it if two functions overlap
  std::vector<int> last_seen(posters, -1);
  bool order_kept = true;
  auto post_all = [&](int poster) {
    for (int i = 0; i < per_poster; ++i) {
      auto body = [&, poster, i] {
        if (inside.exchange(true)) {
          overlapped = true;
        }
        ++total;
        if (last_seen[static_cast<std::size_t>(poster)] != i - 1) {
          order_kept = false;
        }
        last_seen[static_cast<std::size_t>(poster)] = i;
        inside = false;
        ++finished;
      };
      if (i % 2 == 0) {
        post_never(serial, body);
      } else {
        dispatch_possibly(serial, body);
      }
    }
  };
  asio::post(pool, [&] { post_all(0); });
  asio::post(pool, [&] { post_all(1); });
  std::thread a([&] { post_all(2); });
  std::thread b([&] { post_all(3); });
  a.join();
  b.join();
  pool.wait();  // the pool's work count covers every queued runner
  CHECK(finished.load() == posters * per_poster);
  CHECK_FALSE(overlapped.load());
  CHECK(total == posters * per_poster);
  CHECK(order_kept);
}

TEST_CASE("serial_executor: over a type-erased executor, the inner executor decides when to run inline") {
  asio::io_context ctx;
  const serial_executor<asio::any_io_executor> serial{asio::any_io_executor(ctx.get_executor())};
  std::vector<int> order;
  dispatch_possibly(serial, [&] { order.push_back(1); });  // not ctx's thread: posted
  CHECK(order.empty());
  bool ran = false;  // outlives the handler, should the function run later
  asio::post(ctx, [&] {
    dispatch_possibly(serial, [&] {
      ran = true;
      dispatch_possibly(serial, [out = &order] { out->push_back(4); });  // nested: queued
      order.push_back(2);
    });
    order.push_back(ran ? 3 : -3);  // idle by now, on ctx's thread: ran inline
  });
  ctx.run();
  CHECK(order == std::vector<int>{1, 2, 3, 4});
}
