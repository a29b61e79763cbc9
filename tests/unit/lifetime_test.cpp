// close(), destruction, and permits or handlers that outlive their owners.
#include "test_support.hpp"

#include <memory>

namespace keysem::test {

TEST_CASE("close: queued acquires complete with closed; later ones too; try_acquire fails") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto waiting = start(sem, "k");
  auto other = start(sem, "k", 1);
  drain(ctx);
  CHECK_FALSE(sem.is_closed());
  sem.close();
  CHECK(sem.is_closed());
  CHECK_FALSE(waiting->done());  // never inline
  drain(ctx);
  CHECK(*waiting->ec == keysem::error::closed);
  CHECK(*other->ec == keysem::error::closed);
  CHECK_FALSE(waiting->granted);

  auto late = start(sem, "k");
  auto late_free_key = start(sem, "free");
  drain(ctx);
  CHECK(*late->ec == keysem::error::closed);
  CHECK(*late_free_key->ec == keysem::error::closed);
  CHECK_FALSE(sem.try_acquire("free"));
  CHECK(sem.key_count() == 1);

  // Held permits stay valid and release normally.
  CHECK(sem.in_use("k") == 1);
  held->release();
  CHECK(sem.key_count() == 0);
  sem.close();  // idempotent
  CHECK(sem.is_closed());
}

TEST_CASE("close: an acquire racing close on the strand completes with closed, not a hang") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = start(sem, "k");  // its enqueue job may run before or after the close job
  sem.close();
  drain(ctx);
  CHECK(*result->ec == keysem::error::closed);
  CHECK(sem.waiting("k") == 0);
}

TEST_CASE("close: a release after close grants nothing to the queue") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = start(sem, "k");
  drain(ctx);
  sem.close();
  held->release();
  drain(ctx);
  CHECK(*result->ec == keysem::error::closed);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("destruction: queued acquires complete with operation_aborted; permits may outlive the semaphore") {
  asio::io_context ctx;
  auto sem = std::make_unique<keyed_semaphore>(ctx, 1);
  auto held = sem->try_acquire("k");
  auto waiting = start(*sem, "k");
  auto granted = start(*sem, "other");
  drain(ctx);
  REQUIRE(granted->succeeded());
  sem.reset();
  CHECK_FALSE(waiting->done());
  drain(ctx);
  CHECK(*waiting->ec == asio::error::operation_aborted);
  CHECK_FALSE(waiting->granted);
  // Releasing after the semaphore is gone is safe (ASan checks) and does nothing else.
  held->release();
  granted->granted.release();
  CHECK(ctx.poll() == 0);
}

TEST_CASE("destruction: an acquire in flight when the semaphore dies completes with operation_aborted") {
  asio::io_context ctx;
  auto sem = std::make_unique<keyed_semaphore>(ctx, 1);
  auto held = sem->try_acquire("k");
  auto result = start(*sem, "k");  // the enqueue job has not run yet
  sem.reset();
  drain(ctx);
  CHECK(*result->ec == asio::error::operation_aborted);
  held.reset();
}

TEST_CASE("destruction: a semaphore may be destroyed from inside one of its own handlers") {
  asio::io_context ctx;
  auto sem = std::make_unique<keyed_semaphore>(ctx, 1);
  auto held = sem->try_acquire("k");
  auto waiting = start(*sem, "k");
  bool destroyed = false;
  sem->acquire("free", [&](error_code ec, permit p) {
    CHECK_FALSE(ec);
    sem.reset();
    destroyed = true;
    p.release();
  });
  drain(ctx);
  CHECK(destroyed);
  drain(ctx);
  CHECK(*waiting->ec == asio::error::operation_aborted);
}

TEST_CASE("destruction: with the context never run again, handlers are destroyed, not invoked") {
  auto tracker = std::make_shared<int>(0);
  std::weak_ptr<int> watch = tracker;
  permit survivor;
  bool invoked = false;
  {
    asio::io_context ctx;
    keyed_semaphore sem(ctx, 1);
    survivor = std::move(*sem.try_acquire("k"));
    sem.acquire("k", [&invoked, tracker](error_code, permit) { invoked = true; });
    sem.acquire("free", [&invoked, tracker](error_code, permit) { invoked = true; });
    tracker.reset();
    CHECK_FALSE(watch.expired());
  }  // semaphore, then context: nothing runs
  CHECK_FALSE(invoked);
  CHECK(watch.expired());
  survivor.release();  // after its semaphore and its context are gone
}

TEST_CASE("destruction: a granted permit whose handler is destroyed unrun goes to the next waiter") {
  asio::io_context semaphore_ctx;
  keyed_semaphore sem(semaphore_ctx, 1);
  auto held = sem.try_acquire("k");
  std::shared_ptr<outcome> next;
  {
    asio::io_context handler_ctx;
    bool invoked = false;
    sem.acquire("k", asio::bind_executor(handler_ctx, [&](error_code, permit) { invoked = true; }));
    next = start(sem, "k");
    drain(semaphore_ctx);
    held->release();  // granted to the waiter bound to handler_ctx ...
    drain(semaphore_ctx);
    CHECK(sem.in_use("k") == 1);
    CHECK(sem.waiting("k") == 1);
    CHECK_FALSE(invoked);
  }  // ... whose context dies before running it: the permit moves on
  drain(semaphore_ctx);
  REQUIRE(next->succeeded());
  CHECK(sem.in_use("k") == 1);
  next->granted.release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("destruction: a context destroyed before its semaphore destroys queued handlers") {
  auto tracker = std::make_shared<int>(0);
  std::weak_ptr<int> watch = tracker;
  auto ctx = std::make_unique<asio::io_context>();
  keyed_semaphore sem(*ctx, 1);
  auto held = sem.try_acquire("k");
  bool invoked = false;
  sem.acquire("k", [&invoked, tracker](error_code, permit) { invoked = true; });
  tracker.reset();
  drain(*ctx);
  CHECK(sem.waiting("k") == 1);
  ctx.reset();
  CHECK_FALSE(invoked);
  CHECK(watch.expired());
  CHECK(sem.waiting("k") == 0);
  CHECK(sem.in_use("k") == 1);
  held->release();
  CHECK(sem.key_count() == 0);
  CHECK(sem.try_acquire("k"));  // the synchronous surface still works
}

TEST_CASE("destruction: a stopped context keeps pending acquires until it is restarted") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = start(sem, "k");
  drain(ctx);
  ctx.stop();
  held->release();
  CHECK(ctx.poll() == 0);  // stopped: nothing runs
  CHECK_FALSE(result->done());
  ctx.restart();
  ctx.poll();
  CHECK(result->succeeded());
}

}  // namespace keysem::test
