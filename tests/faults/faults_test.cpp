// Fault injection: throwing handlers, allocation failure through the
// handler's allocator, stopped contexts, destruction from inside a handler,
// permits that travel across threads and contexts or outlive them.
#include "fault_support.hpp"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace keysem::faults {

// ---------------------------------------------------------------------------
// A handler that throws
// ---------------------------------------------------------------------------

struct handler_failure : std::runtime_error {
  handler_failure() : std::runtime_error("handler failure") {}
};

TEST_CASE("fault: a throwing handler of an immediate grant: run() propagates, its permit is released") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  sem.acquire("k", [](error_code, permit) { throw handler_failure(); });
  CHECK(sem.in_use("k") == 1);
  CHECK_THROWS_AS(ctx.run(), handler_failure);
  CHECK(sem.in_use("k") == 0);  // the permit argument died during unwinding
  CHECK(sem.key_count() == 0);
  ctx.restart();
  auto next = start(sem, "k");
  drain(ctx);
  CHECK(next->succeeded());
}

TEST_CASE("fault: a throwing handler of a waiter: the queue behind it still moves") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  sem.acquire("k", [](error_code, permit) { throw handler_failure(); });
  auto second = start(sem, "k");
  auto third = start(sem, "k");
  drain(ctx);
  CHECK(sem.waiting("k") == 3);
  held->release();
  CHECK_THROWS_AS(ctx.run(), handler_failure);  // the permit went back during unwinding
  ctx.restart();
  drain(ctx);
  REQUIRE(second->succeeded());
  CHECK_FALSE(third->done());
  CHECK(sem.in_use("k") == 1);
  CHECK(sem.waiting("k") == 1);
  second->granted.release();
  drain(ctx);
  REQUIRE(third->succeeded());
  third->granted.release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("fault: a throwing handler on a strand, with other handlers queued behind it on the strand") {
  asio::io_context ctx;
  auto strand = asio::make_strand(ctx);
  keyed_semaphore sem(ctx, 2);
  int ran = 0;
  sem.acquire("k", asio::bind_executor(strand, [&](error_code, permit) {
                ++ran;
                throw handler_failure();
              }));
  sem.acquire("k", asio::bind_executor(strand, [&](error_code ec, permit p) {
                ++ran;
                CHECK_FALSE(ec);
                CHECK(p.count() == 1);
              }));
  int thrown = 0;
  for (int i = 0; i < 10; ++i) {
    try {
      ctx.restart();
      ctx.run();
      break;
    } catch (const handler_failure&) {
      ++thrown;
    }
  }
  CHECK(thrown == 1);
  CHECK(ran == 2);
  CHECK(sem.in_use("k") == 0);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("fault: a handler that releases other permits and then throws leaves consistent counts") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  auto a = sem.try_acquire("k");
  auto b = sem.try_acquire("k");
  auto waiter = start(sem, "k", 2);
  drain(ctx);
  sem.acquire("other", [&](error_code, permit mine) {
    a->release();
    b->release();  // the waiter's drain runs right here (strand idle), its handler is posted
    (void)mine;
    throw handler_failure();
  });
  CHECK_THROWS_AS(ctx.run(), handler_failure);
  ctx.restart();
  drain(ctx);
  REQUIRE(waiter->succeeded());
  CHECK(sem.in_use("k") == 2);
  CHECK(sem.in_use("other") == 0);
  waiter->granted.release();
  CHECK(sem.key_count() == 0);
}

// ---------------------------------------------------------------------------
// Allocation failure through the handler's associated allocator
// ---------------------------------------------------------------------------

namespace {

// Every way an acquire can start. `setup` makes the key busy (or not) and
// returns what it holds; `initiate` starts the acquire with the given token.
enum class path { immediate, waiting, waiting_cancellable, waiting_from_handler, closed, invalid };

const char* name(path p) {
  switch (p) {
    case path::immediate: return "immediate grant";
    case path::waiting: return "waiting";
    case path::waiting_cancellable: return "waiting with a cancellation slot";
    case path::waiting_from_handler: return "waiting, started inside a handler";
    case path::closed: return "closed semaphore";
    case path::invalid: return "invalid count";
  }
  return "?";
}

struct alloc_trial {
  bool initiation_threw = false;   // acquire() itself threw bad_alloc
  int run_threw = 0;               // bad_alloc escaping run()/poll()
  bool invoked = false;
  bool handler_destroyed = false;  // destroyed without being invoked
};

// Starts one acquire whose handler allocator fails at allocation `fail_at`,
// then lets everything finish, and checks what the contract promises.
// `concrete`: the handler is also bound to ctx.get_executor(), an executor
// that honours the allocator property, so asio allocates the posted
// completion with the handler's allocator too (the semaphore's
// any_io_executor ignores that property).
alloc_trial run_alloc_trial(path p, int fail_at, bool concrete = false) {
  const std::string path_name = name(p);
  CAPTURE(path_name);
  CAPTURE(fail_at);
  CAPTURE(concrete);
  alloc_trial trial;
  fault_plan plan{fail_at};
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2, semaphore_options{1});  // one shard: a wedged strand would block "other" too
  std::optional<permit> held;
  if (p != path::immediate && p != path::closed && p != path::invalid) {
    held = sem.try_acquire("k", 2);
  }
  if (p == path::closed) sem.close();
  asio::cancellation_signal signal;
  auto tracker = std::make_shared<int>(0);
  std::weak_ptr<int> watch = tracker;
  const snapshot before = counts(sem, "k");
  const std::size_t n = p == path::invalid ? 0 : 1;

  auto initiate = [&] {
    auto handler = [&trial, tracker](error_code, permit) { trial.invoked = true; };
    auto with_executor = [&](auto&& h) {
      if (concrete) {
        sem.acquire("k", n, asio::bind_executor(ctx.get_executor(), std::move(h)));
      } else {
        sem.acquire("k", n, std::move(h));
      }
    };
    if (p == path::waiting_cancellable) {
      with_executor(asio::bind_allocator(failing_allocator<void>(plan),
                                         asio::bind_cancellation_slot(signal.slot(), std::move(handler))));
    } else {
      with_executor(asio::bind_allocator(failing_allocator<void>(plan), std::move(handler)));
    }
  };

  auto guarded = [&](auto&& f) {
    try {
      f();
    } catch (const std::bad_alloc&) {
      trial.initiation_threw = true;
    }
  };
  if (p == path::waiting_from_handler) {
    sem.acquire("trigger", [&](error_code, permit) { guarded(initiate); });
    tracker.reset();
    try {
      drain(ctx);
    } catch (const std::bad_alloc&) {
      ++trial.run_threw;
    }
    ctx.restart();
  } else {
    guarded(initiate);
    tracker.reset();
  }

  if (trial.initiation_threw) {
    // The contract: the initiating call throws, nothing changed, nothing leaked.
    CHECK(counts(sem, "k") == before);
    CHECK(watch.expired());
    CHECK_FALSE(trial.invoked);
    CHECK(plan.balanced());
  }

  // Let it all finish: release what was held, run until idle.
  auto settle = [&] {
    for (int i = 0; i < 20; ++i) {
      try {
        drain(ctx);
        return;
      } catch (const std::bad_alloc&) {
        ++trial.run_threw;
      }
    }
  };
  settle();
  if (p == path::waiting_cancellable && !trial.initiation_threw) {
    signal.emit(asio::cancellation_type::terminal);
    settle();
  }
  held.reset();
  settle();

  // Whatever failed, the semaphore must still work, on this key and on
  // another key of the same shard (closed: still answer, with closed).
  auto again = start(sem, "k", 2);
  auto other = start(sem, "other");
  settle();
  if (p == path::closed) {
    CHECK(again->done());
    CHECK(other->done());
  } else {
    CHECK_MESSAGE(again->succeeded(), "the key is wedged after the allocation failure");
    CHECK_MESSAGE(other->succeeded(), "the shard is wedged after the allocation failure");
  }
  again->granted.release();
  other->granted.release();
  settle();
  CHECK(sem.waiting("k") == 0);
  CHECK(sem.key_count() == 0);
  CHECK(watch.expired());
  CHECK(plan.balanced());
  trial.handler_destroyed = watch.expired() && !trial.invoked;
  return trial;
}

}  // namespace

TEST_CASE("fault: allocation failure in the initiating call: acquire throws bad_alloc, no count changes, no leak") {
  // A waiting acquire allocates its op with the handler's allocator inside
  // the initiating call. Failing that allocation must throw from acquire()
  // and leave no trace (run_alloc_trial checks the counts, the handler and
  // the allocator's balance, then that the key and its shard still work).
  for (bool concrete : {false, true}) {
    for (path p : {path::waiting, path::waiting_cancellable, path::waiting_from_handler}) {
      const alloc_trial trial = run_alloc_trial(p, 1, concrete);
      const std::string path_name = name(p);
      CAPTURE(path_name);
      CAPTURE(concrete);
      CHECK(trial.initiation_threw);
      CHECK_FALSE(trial.invoked);
      CHECK(trial.run_threw == 0);
    }
  }
  // Completions that need no wait (a grant, closed, a bad count) are posted
  // with the handler's allocator, inside the initiating call, through an
  // any_io_executor that holds an io_context executor as through that
  // executor itself: the allocation fails there, acquire() throws, and the
  // permits an immediate grant had taken go back with the lost completion.
  for (bool concrete : {false, true}) {
    for (path p : {path::immediate, path::closed, path::invalid}) {
      const alloc_trial trial = run_alloc_trial(p, 1, concrete);
      const std::string path_name = name(p);
      CAPTURE(path_name);
      CAPTURE(concrete);
      CHECK(trial.initiation_threw);
      CHECK_FALSE(trial.invoked);
    }
  }
}

TEST_CASE("fault: allocation failure at every allocation of an acquire never wedges or leaks") {
  // Every later allocation: wherever it happens (inside acquire(), inside a
  // strand job during run()), the semaphore must stay consistent and usable
  // and give back every allocation. An acquire that did not throw is either
  // invoked once or destroyed.
  for (bool concrete : {false, true}) {
    for (path p : {path::immediate, path::waiting, path::waiting_cancellable, path::waiting_from_handler,
                   path::closed, path::invalid}) {
      for (int fail_at = 2; fail_at <= 8; ++fail_at) {
        const alloc_trial trial = run_alloc_trial(p, fail_at, concrete);
        const std::string path_name = name(p);
        CAPTURE(path_name);
        CAPTURE(fail_at);
        CAPTURE(concrete);
        CHECK((trial.invoked || trial.initiation_threw || trial.handler_destroyed));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// A stopped context
// ---------------------------------------------------------------------------

TEST_CASE("fault: io_context stopped and restarted mid-flight") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto first = start(sem, "k");
  auto second = start(sem, "k");
  auto free_key = start(sem, "free");
  CHECK(sem.in_use("free") == 1);  // taken at once, delivered later
  ctx.stop();
  held->release();
  CHECK(ctx.poll() == 0);  // stopped: nothing runs, nothing is lost
  CHECK_FALSE(first->done());
  CHECK_FALSE(free_key->done());
  CHECK(sem.waiting("k") == 2);
  CHECK_FALSE(sem.try_acquire("k"));  // no barging while the grant is stuck behind the stop
  ctx.restart();
  drain(ctx);
  REQUIRE(first->succeeded());
  CHECK(free_key->succeeded());
  CHECK_FALSE(second->done());

  // Stopped from inside a handler, with a grant in flight.
  sem.acquire("x", [&](error_code, permit p) {
    ctx.stop();
    first->granted.release();  // grants `second` right here; its handler is posted
    p.release();
  });
  ctx.run();
  CHECK(ctx.stopped());
  CHECK(sem.in_use("k") == 1);
  CHECK_FALSE(second->done());
  ctx.restart();
  drain(ctx);
  REQUIRE(second->succeeded());
  second->granted.release();
  free_key->granted.release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("fault: a context run by two threads is stopped and restarted under load") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  std::atomic<int> granted{0};
  std::atomic<int> in_flight{0};
  constexpr int total = 2000;
  for (int i = 0; i < total; ++i) {
    sem.acquire("k" + std::to_string(i % 7), [&](error_code ec, permit p) {
      if (!ec) {
        const int now = in_flight.fetch_add(1) + 1;
        CHECK(now >= 1);
        in_flight.fetch_sub(1);
        ++granted;
      }
      p.release();
    });
  }
  for (int round = 0; round < 20 && granted.load() < total; ++round) {
    std::thread a([&] { ctx.run_for(std::chrono::milliseconds(2)); });
    std::thread b([&] { ctx.run_for(std::chrono::milliseconds(2)); });
    ctx.stop();
    a.join();
    b.join();
    ctx.restart();
  }
  ctx.run();
  CHECK(granted.load() == total);
  CHECK(sem.key_count() == 0);
}

// ---------------------------------------------------------------------------
// Destroying the semaphore from inside its own handlers
// ---------------------------------------------------------------------------

TEST_CASE("fault: semaphore destroyed inside a waiter's handler, and the rest of the queue is aborted") {
  asio::io_context ctx;
  auto sem = std::make_unique<keyed_semaphore>(ctx, 1);
  auto held = sem->try_acquire("k");
  permit kept;
  bool destroyed = false;
  sem->acquire("k", [&](error_code ec, permit p) {
    REQUIRE_FALSE(ec);
    sem.reset();  // from inside its own handler, with waiters queued and this permit in hand
    destroyed = true;
    kept = std::move(p);
  });
  auto behind = start(*sem, "k");
  auto other_key = start(*sem, "other");
  drain(ctx);
  held->release();
  drain(ctx);
  CHECK(destroyed);
  CHECK(*behind->ec == asio::error::operation_aborted);
  CHECK(other_key->succeeded());
  kept.release();  // after the semaphore is gone
  other_key->granted.release();
  CHECK(ctx.poll() == 0);
}

TEST_CASE("fault: semaphore destroyed inside a handler running on a user strand") {
  asio::io_context ctx;
  auto strand = asio::make_strand(ctx);
  auto sem = std::make_unique<keyed_semaphore>(ctx, 1);
  auto held = sem->try_acquire("k");
  std::vector<std::shared_ptr<outcome>> behind;
  sem->acquire("x", asio::bind_executor(strand, [&](error_code, permit p) {
                 sem.reset();
                 p.release();
               }));
  for (int i = 0; i < 3; ++i) behind.push_back(start(*sem, "k"));
  drain(ctx);
  for (auto& b : behind) CHECK(*b->ec == asio::error::operation_aborted);
  held->release();
  CHECK(ctx.poll() == 0);
}

TEST_CASE("fault: semaphore destroyed inside a handler, then its context destroyed with handlers pending") {
  permit survivor;
  {
    asio::io_context ctx;
    auto sem = std::make_unique<keyed_semaphore>(ctx, 1);
    survivor = std::move(*sem->try_acquire("k"));
    auto waiter = start(*sem, "k");
    sem->acquire("x", [&](error_code, permit) { sem.reset(); });
    auto free_key = start(*sem, "y");
    CHECK(ctx.poll_one() == 1);  // the enqueue job
    CHECK(ctx.poll_one() == 1);  // "x": destroys the semaphore and posts the abort job
    // "y"'s completion and the abort job are still queued: destroyed unrun.
  }
  survivor.release();  // its semaphore and context are both gone
}

// ---------------------------------------------------------------------------
// Permits that travel
// ---------------------------------------------------------------------------

TEST_CASE("fault: permits moved to other threads and other io_contexts and released there") {
  asio::io_context sem_ctx;
  asio::io_context other_ctx;
  keyed_semaphore sem(sem_ctx, 2);
  auto guard = asio::make_work_guard(other_ctx);
  std::thread other_thread([&] { other_ctx.run(); });
  std::atomic<int> completed{0};
  constexpr int total = 400;
  for (int i = 0; i < total; ++i) {
    sem.acquire("k" + std::to_string(i % 3), [&](error_code ec, permit p) {
      REQUIRE_FALSE(ec);
      // Hand the permit to another context, run by another thread.
      asio::post(other_ctx, [&, p = std::move(p)]() mutable {
        p.release();
        ++completed;
      });
    });
  }
  std::thread sem_thread([&] { sem_ctx.run(); });
  sem_thread.join();  // returns once every acquire has completed
  guard.reset();
  other_thread.join();
  CHECK(completed.load() == total);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("fault: a permit handed to a plain thread and released there wakes a waiter on the context") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  auto waiter = start(sem, "k");
  drain(ctx);
  std::thread releaser([p = std::move(*held)]() mutable { p.release(); });
  releaser.join();
  drain(ctx);
  REQUIRE(waiter->succeeded());
  waiter->granted.release();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("fault: a permit released after its io_context is gone, with the semaphore alive or not") {
  permit after_both;
  permit after_context;
  std::optional<keyed_semaphore> survivor_sem;
  {
    asio::io_context ctx;
    keyed_semaphore sem(ctx, 2);
    after_both = std::move(*sem.try_acquire("k"));
    auto granted = start(sem, "j");  // granted, handler never run: destroyed with the context
    (void)granted;
  }
  after_both.release();
  {
    auto ctx = std::make_unique<asio::io_context>();
    survivor_sem.emplace(*ctx, 1);
    after_context = std::move(*survivor_sem->try_acquire("k"));
    auto waiter = start(*survivor_sem, "k");  // destroyed with the context
    drain(*ctx);
    ctx.reset();
    CHECK(waiter.use_count() == 1);  // the handler is gone
    CHECK_FALSE(waiter->done());
  }
  CHECK(survivor_sem->waiting("k") == 0);
  after_context.release();  // the semaphore lives on, its context does not
  CHECK(survivor_sem->key_count() == 0);
  auto again = survivor_sem->try_acquire("k");
  CHECK(again);
  again.reset();
  survivor_sem.reset();
}

}  // namespace keysem::faults
