// Jobs embedded in the object they act on (embedded_job.hpp), the port that
// queues them on a shard's serialiser without type erasure, and the
// semaphore's waiting path on executors with and without that port.
#include <keysem/detail/embedded_job.hpp>
#include <keysem/detail/serial_executor.hpp>
#include <keysem/detail/sharding.hpp>
#include <keysem/keysem.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using keysem::detail::embedded_job;
using keysem::detail::serial_executor;
using keysem::detail::serial_port;
using io_serial = serial_executor<asio::io_context::executor_type>;

// An object that carries its own job; the job's body deletes the object.
struct self_deleting {
  struct policy {
    using state = self_deleting*;
    static void run(self_deleting* self) {
      ++*self->runs;
      delete self;  // the node goes with it: the runner must not touch it again
    }
    static void drop(self_deleting* self) noexcept {
      ++*self->drops;
      delete self;
    }
  };

  self_deleting(int& run_count, int& drop_count) : runs(&run_count), drops(&drop_count), job(this) {}

  int* runs;
  int* drops;
  embedded_job<policy> job;
};

// An object whose job may be queued again once it has run.
struct reusable {
  struct policy {
    using state = reusable*;
    static void run(reusable* self) { self->order->push_back(self->id); }
    static void drop(reusable* self) noexcept { self->order->push_back(-self->id); }
  };

  reusable(int identity, std::vector<int>& log) : id(identity), order(&log), job(this) {}

  int id;
  std::vector<int>* order;
  embedded_job<policy> job;
};

}  // namespace

TEST_CASE("embedded_job: runs once through a port, and its body may free the node") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  const serial_port port = serial_port::of(serial);
  REQUIRE(port);
  int runs = 0;
  int drops = 0;
  for (int i = 0; i < 3; ++i) {
    port.submit((new self_deleting(runs, drops))->job, false);
  }
  CHECK(runs == 0);  // not possibly: never inside the call
  ctx.run();
  CHECK(runs == 3);
  CHECK(drops == 0);
}

TEST_CASE("embedded_job: queued when the context is destroyed, it is dropped exactly once") {
  int runs = 0;
  int drops = 0;
  std::optional<io_serial> kept;  // the serialiser outlives its context
  {
    asio::io_context ctx;
    kept.emplace(ctx.get_executor());
    const serial_port port = serial_port::of(*kept);
    port.submit((new self_deleting(runs, drops))->job, false);
    port.submit((new self_deleting(runs, drops))->job, true);  // not on the context's thread: queued
  }
  CHECK(runs == 0);
  CHECK(drops == 2);
}

TEST_CASE("embedded_job: a node that ran may be queued again; order is kept with other functions") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  const serial_port port = serial_port::of(serial);
  std::vector<int> order;
  reusable first(1, order);
  reusable second(2, order);
  port.submit(first.job, false);
  asio::post(serial, [&] { order.push_back(10); });
  port.submit(second.job, false);
  ctx.run();
  CHECK(order == std::vector<int>{1, 10, 2});
  ctx.restart();
  port.submit(first.job, false);  // ran, so free to go again
  ctx.run();
  CHECK(order == std::vector<int>{1, 10, 2, 1});
}

TEST_CASE("serial_port: possibly runs inline only on the context's thread, when the serialiser is idle") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  const serial_port port = serial_port::of(serial);
  std::vector<int> order;
  reusable inline_one(1, order);
  reusable busy_one(2, order);
  asio::post(ctx, [&] {
    port.submit(inline_one.job, true);
    order.push_back(100);  // after inline_one: it ran inside the call
  });
  ctx.run();
  CHECK(order == std::vector<int>{1, 100});

  order.clear();
  ctx.restart();
  asio::post(serial, [&] {
    port.submit(busy_one.job, true);  // from inside the serialiser: queued behind
    order.push_back(200);
  });
  asio::post(ctx, [&] {
    port.submit(inline_one.job, true);  // the serialiser has a runner pending: queued
    order.push_back(300);
  });
  ctx.run();
  CHECK(order == std::vector<int>{200, 300, 2, 1});

  // From a thread that does not run the context: queued for run().
  order.clear();
  ctx.restart();
  std::thread([&] { port.submit(inline_one.job, true); }).join();
  CHECK(order.empty());
  ctx.run();
  CHECK(order == std::vector<int>{1});
}

TEST_CASE("serial_port: run_if_idle runs a stack node at once only on the context's thread and when idle") {
  asio::io_context ctx;
  const io_serial serial(ctx.get_executor());
  const serial_port port = serial_port::of(serial);
  std::vector<int> order;
  bool idle_ran = false;
  bool busy_ran = true;
  asio::post(ctx, [&] {
    reusable here(1, order);  // on this stack: it must have run when the call returns
    idle_ran = port.run_if_idle(here.job);
    order.push_back(100);
  });
  ctx.run();
  CHECK(idle_ran);
  CHECK(order == std::vector<int>{1, 100});

  order.clear();
  ctx.restart();
  asio::post(serial, [&] {
    reusable here(2, order);
    busy_ran = port.run_if_idle(here.job);  // inside the serialiser: busy
    order.push_back(200);
  });
  ctx.run();
  CHECK_FALSE(busy_ran);
  CHECK(order == std::vector<int>{200});

  // Not on the context's thread: refused, even though idle.
  reusable off_thread(3, order);
  bool off_ran = true;
  std::thread([&] { off_ran = port.run_if_idle(off_thread.job); }).join();
  CHECK_FALSE(off_ran);
  ctx.restart();
  CHECK(ctx.poll() == 0);
  CHECK(order == std::vector<int>{200});
}

TEST_CASE("serial_port_of: a port into keysem's serialiser over io_context and thread_pool, none otherwise") {
  asio::io_context ctx;
  asio::thread_pool pool(1);
  const asio::any_io_executor io_strand = keysem::detail::make_shard_strand(asio::any_io_executor(ctx.get_executor()));
  const asio::any_io_executor pool_strand = keysem::detail::make_shard_strand(asio::any_io_executor(pool.get_executor()));
  const asio::any_io_executor generic = keysem::detail::make_shard_strand(asio::any_io_executor(asio::make_strand(ctx)));
  CHECK(static_cast<bool>(keysem::detail::serial_port_of(io_strand)));
  CHECK(static_cast<bool>(keysem::detail::serial_port_of(pool_strand)));
  CHECK_FALSE(static_cast<bool>(keysem::detail::serial_port_of(generic)));
  CHECK_FALSE(static_cast<bool>(keysem::detail::serial_port_of(asio::any_io_executor(ctx.get_executor()))));
  pool.join();
}

namespace {

// Waits, cancels, grants in order and destroys with work pending, on a
// semaphore over `ex`: the waiting path with or without a port.
template <class Run>
void exercise_waiting_path(const asio::any_io_executor& ex, Run run) {
  auto sem = std::make_unique<keysem::keyed_semaphore>(ex, 1);
  auto held = sem->try_acquire("k");
  REQUIRE(held);
  std::vector<int> order;
  asio::cancellation_signal cancel;
  boost::system::error_code cancelled_with;
  sem->acquire("k", [&](boost::system::error_code ec, keysem::keyed_semaphore::permit p) {
    CHECK_FALSE(ec);
    order.push_back(1);
    p.release();
  });
  sem->acquire("k", asio::bind_cancellation_slot(
                        cancel.slot(), [&](boost::system::error_code ec, keysem::keyed_semaphore::permit p) {
                          cancelled_with = ec;
                          CHECK_FALSE(p);
                        }));
  sem->acquire("k", [&](boost::system::error_code ec, keysem::keyed_semaphore::permit p) {
    CHECK_FALSE(ec);
    order.push_back(3);
    p.release();
  });
  run();
  CHECK(sem->waiting("k") == 3);
  cancel.emit(asio::cancellation_type::terminal);
  run();
  CHECK(cancelled_with == asio::error::operation_aborted);
  CHECK(sem->waiting("k") == 2);
  held->release();
  run();
  CHECK(order == std::vector<int>{1, 3});
  CHECK(sem->in_use("k") == 0);

  // Destroyed with a waiter queued: it completes with operation_aborted.
  auto blocker = sem->try_acquire("k");
  REQUIRE(blocker);
  boost::system::error_code aborted_with;
  sem->acquire("k", [&](boost::system::error_code ec, keysem::keyed_semaphore::permit) { aborted_with = ec; });
  run();
  sem.reset();
  run();
  CHECK(aborted_with == asio::error::operation_aborted);
}

}  // namespace

TEST_CASE("waiting path: a semaphore over io_context queues its jobs through the port") {
  asio::io_context ctx;
  exercise_waiting_path(ctx.get_executor(), [&] {
    ctx.restart();
    ctx.poll();
  });
}

TEST_CASE("waiting path: a semaphore over a strand (no port) queues its jobs through the executor") {
  asio::io_context ctx;
  exercise_waiting_path(asio::make_strand(ctx), [&] {
    ctx.restart();
    ctx.poll();
  });
}

TEST_CASE("waiting path: a queued enqueue job is dropped exactly once when the context goes first") {
  std::unique_ptr<keysem::keyed_semaphore> sem;
  int calls = 0;
  {
    asio::io_context ctx;
    sem = std::make_unique<keysem::keyed_semaphore>(ctx, 1);
    auto held = sem->try_acquire("k");
    REQUIRE(held);
    // Not on the context's thread: the enqueue job waits in the queue.
    sem->acquire("k", [&](boost::system::error_code, keysem::keyed_semaphore::permit) { ++calls; });
    CHECK(sem->waiting("k") == 1);
    held->release();
  }
  // The op was destroyed with its handler, never invoked; nothing is left.
  CHECK(calls == 0);
  CHECK(sem->waiting("k") == 0);
  CHECK(sem->in_use("k") == 0);
  sem.reset();
}
