// Rare paths the model and the other faults do not reach (found with
// scripts/coverage): throwing keys and handlers, a drain that must be posted
// from inside a strand job, a release racing a context's shutdown, several
// semaphores on one context, executors other than io_context's.
#include "fault_support.hpp"

#include <stdexcept>

namespace keysem::faults {

// ---------------------------------------------------------------------------
// A key whose copy throws: creating its state fails cleanly.
// ---------------------------------------------------------------------------

struct fragile_key {
  static inline int copies_until_throw = 0;  // 0: never
  int value = 0;
  explicit fragile_key(int v) : value(v) {}
  fragile_key(const fragile_key& other) : value(other.value) {
    if (copies_until_throw > 0 && --copies_until_throw == 0) throw std::runtime_error("key copy");
  }
  fragile_key& operator=(const fragile_key&) = default;
  bool operator==(const fragile_key&) const = default;
};

struct fragile_hash {
  std::size_t operator()(const fragile_key& k) const noexcept { return std::hash<int>()(k.value); }
};

TEST_CASE("edge: a key whose copy throws while its state is created leaves nothing behind") {
  asio::io_context ctx;
  async_keyed_semaphore<fragile_key, fragile_hash> sem(ctx, 1);
  fragile_key::copies_until_throw = 1;
  CHECK_THROWS_AS(sem.try_acquire(fragile_key(7)), std::runtime_error);
  CHECK(sem.key_count() == 0);
  CHECK(sem.in_use(fragile_key(7)) == 0);
  fragile_key::copies_until_throw = 0;
  auto p = sem.try_acquire(fragile_key(7));
  CHECK(p);
  CHECK(sem.key_count() == 1);
}

// ---------------------------------------------------------------------------
// A handler whose move constructor throws: acquire() throws, nothing changes.
// ---------------------------------------------------------------------------

struct move_bomb {
  static inline int moves_until_throw = 0;  // 0: never
  std::shared_ptr<bool> invoked = std::make_shared<bool>(false);
  move_bomb() = default;
  move_bomb(const move_bomb&) = default;
  move_bomb(move_bomb&& other) : invoked(other.invoked) {
    if (moves_until_throw > 0 && --moves_until_throw == 0) throw std::runtime_error("handler move");
  }
  void operator()(error_code, permit) { *invoked = true; }
};

TEST_CASE("edge: a handler whose move throws while its op is built: acquire throws, no count changes") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  // Find the move that happens inside the op's construction: try each in turn.
  bool threw_somewhere = false;
  for (int nth = 1; nth <= 6; ++nth) {
    CAPTURE(nth);
    const snapshot before = counts(sem, "k");
    move_bomb handler;
    move_bomb::moves_until_throw = nth;
    bool threw = false;
    try {
      sem.acquire("k", std::move(handler));
    } catch (const std::runtime_error&) {
      threw = true;
    }
    move_bomb::moves_until_throw = 0;
    if (threw) {
      threw_somewhere = true;
      CHECK(counts(sem, "k") == before);
    } else {
      CHECK(sem.waiting("k") == before.waiting + 1);  // it waits, registered once
    }
    drain(ctx);
  }
  CHECK(threw_somewhere);
  sem.close();
  drain(ctx);
  CHECK(sem.waiting("k") == 0);
}

// ---------------------------------------------------------------------------
// A release inside a strand job posts its drain instead of running it there.
// ---------------------------------------------------------------------------

TEST_CASE("edge: a completion that cannot be posted during a cancel job releases its permit and the drain is posted") {
  // limit 3, 2 held. Queue: big (3, cancellable), fragile (1, its completion
  // post fails), tail (3). Cancelling big runs a grant pass inside the
  // cancel job: fragile is granted, its completion cannot be posted, its
  // permit comes back while big and tail still count as waiters, so a drain
  // is scheduled from inside the strand job, and must be posted.
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 3, semaphore_options{1});
  auto held = sem.try_acquire("k", 2);
  asio::cancellation_signal signal;
  auto big = std::make_shared<outcome>();
  sem.acquire("k", 3, asio::bind_cancellation_slot(signal.slot(), record(big)));
  fault_plan plan;
  sem.acquire("k", 1,
              asio::bind_executor(ctx.get_executor(), asio::bind_allocator(failing_allocator<void>(plan),
                                                                           [](error_code, permit) {})));
  auto tail = start(sem, "k", 3);
  drain(ctx);
  CHECK(sem.waiting("k") == 3);
  plan.fail_at = plan.attempts + 1;  // the next allocation: fragile's completion
  signal.emit(asio::cancellation_type::terminal);
  int thrown = 0;
  for (int i = 0; i < 5; ++i) {
    try {
      drain(ctx);
    } catch (const std::bad_alloc&) {
      ++thrown;
    }
  }
  CHECK(thrown == 1);
  CHECK(*big->ec == asio::error::operation_aborted);
  CHECK_FALSE(tail->done());
  CHECK(sem.in_use("k") == 2);
  CHECK(sem.waiting("k") == 1);
  held->release();
  drain(ctx);
  REQUIRE(tail->succeeded());
  tail->granted.release();
  CHECK(sem.key_count() == 0);
  CHECK(plan.balanced());
}

// ---------------------------------------------------------------------------
// A permit released while the context shuts down, with a waiter's enqueue
// job still queued: the drain is dropped, not scheduled on a dead strand.
// ---------------------------------------------------------------------------

TEST_CASE("edge: a permit destroyed during context shutdown while a waiter is still being enqueued") {
  permit survivor;
  {
    asio::io_context ctx;
    keyed_semaphore sem(ctx, 1);
    // A strand made after the semaphore's shard strands: asio's strand
    // service destroys it first at shutdown.
    auto late_strand = asio::make_strand(ctx);
    // Granted at once, its completion (carrying the permit) queued on the strand.
    sem.acquire("k", asio::bind_executor(late_strand, [](error_code, permit) {}));
    // Must wait: its enqueue job is queued on the shard strand.
    sem.acquire("k", [](error_code, permit) {});
    CHECK(sem.waiting("k") == 1);
    survivor = std::move(*sem.try_acquire("other"));
  }  // shutdown: the late strand's job dies first, releasing while the waiter is registered
  survivor.release();
}

// ---------------------------------------------------------------------------
// Several semaphores on one context, destroyed in any order.
// ---------------------------------------------------------------------------

TEST_CASE("edge: several semaphores on one context come and go in any order") {
  asio::io_context ctx;
  auto a = std::make_unique<keyed_semaphore>(ctx, 1);
  auto b = std::make_unique<keyed_semaphore>(ctx, 1);
  auto c = std::make_unique<keyed_semaphore>(ctx, 1);
  auto pa = a->try_acquire("k");
  auto pc = c->try_acquire("k");
  b.reset();  // the middle one
  auto wa = start(*a, "k");
  c.reset();  // the newest, with a permit outstanding
  drain(ctx);
  pa->release();
  drain(ctx);
  CHECK(wa->succeeded());
  pc->release();  // after its semaphore
  a.reset();  // posts its shards' abort jobs
  wa->granted.release();
  drain(ctx);
  CHECK(ctx.poll() == 0);
}

// ---------------------------------------------------------------------------
// Executors other than io_context's: a thread_pool, and a strand as the
// semaphore's own executor (its shard strands are then strands of a strand).
// ---------------------------------------------------------------------------

TEST_CASE("edge: a semaphore over a thread_pool, and one over a strand executor") {
  SUBCASE("thread_pool") {
    asio::thread_pool pool(2);
    keyed_semaphore sem(pool, 1);
    std::promise<void> done;
    auto held = sem.try_acquire("k");
    sem.acquire("k", [&](error_code ec, permit p) {
      CHECK_FALSE(ec);
      p.release();
      done.set_value();
    });
    held->release();
    done.get_future().wait();
    pool.join();
    CHECK(sem.key_count() == 0);
  }
  SUBCASE("strand") {
    asio::io_context ctx;
    keyed_semaphore sem(asio::any_io_executor(asio::make_strand(ctx)), 1);
    auto held = sem.try_acquire("k");
    auto waiter = start(sem, "k");
    drain(ctx);
    held->release();
    drain(ctx);
    REQUIRE(waiter->succeeded());
    waiter->granted.release();
    CHECK(sem.key_count() == 0);
  }
}

// ---------------------------------------------------------------------------
// Small things.
// ---------------------------------------------------------------------------

TEST_CASE("edge: an empty permit has no key, and the error category names unknown values") {
  permit empty;
  CHECK_FALSE(empty);
  CHECK(empty.count() == 0);
  CHECK_THROWS_AS((void)empty.key(), std::logic_error);
  CHECK(keysem_category().message(static_cast<int>(error::closed)) == "the semaphore is closed");
  CHECK(keysem_category().message(42) == "unknown keysem error");
  CHECK(std::string(keysem_category().name()) == "keysem");
}

}  // namespace keysem::faults
