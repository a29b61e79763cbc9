// Hardening regressions: lost waiters, close() exactness, acquires after the
// context is gone, use_future, hashers that throw, and the shard count bound.
#include "test_support.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>

namespace keysem::test {
namespace {

// A minimal asio executor wrapping an io_context executor. Its first
// execute() runs `hook->fn` synchronously before forwarding, so a test can
// act in the middle of the operation that is posting a completion.
struct hook_state {
  std::function<void()> fn;
};

class hooked_executor {
 public:
  hooked_executor(asio::io_context::executor_type inner, hook_state& hook) noexcept
      : inner_(inner), hook_(&hook) {}

  asio::execution_context& query(asio::execution::context_t) const noexcept {
    return inner_.context();
  }
  static constexpr asio::execution::blocking_t query(asio::execution::blocking_t) noexcept {
    return asio::execution::blocking.never;
  }
  hooked_executor require(asio::execution::blocking_t::never_t) const noexcept { return *this; }

  template <class F>
  void execute(F&& f) const {
    if (auto fn = std::exchange(hook_->fn, nullptr)) {
      fn();
    }
    asio::execution::execute(asio::require(inner_, asio::execution::blocking.never),
                             std::forward<F>(f));
  }

  friend bool operator==(const hooked_executor& a, const hooked_executor& b) noexcept {
    return a.inner_ == b.inner_ && a.hook_ == b.hook_;
  }
  friend bool operator!=(const hooked_executor& a, const hooked_executor& b) noexcept {
    return !(a == b);
  }

 private:
  asio::io_context::executor_type inner_;
  hook_state* hook_;
};

static_assert(asio::execution::is_executor<hooked_executor>::value);

// A hasher that throws while `hash_throws` is set.
bool hash_throws = false;

struct throwing_hash {
  std::size_t operator()(int key) const {
    if (hash_throws) {
      throw std::runtime_error("throwing_hash");
    }
    return std::hash<int>()(key);
  }
};

struct hash_throws_scope {
  hash_throws_scope() { hash_throws = true; }
  ~hash_throws_scope() { hash_throws = false; }
};

}  // namespace

TEST_CASE("hardening: a waiting acquire bound to another context keeps the semaphore's context running") {
  asio::io_context sem_ctx;
  asio::io_context other;
  keyed_semaphore sem(sem_ctx, 1);
  auto held = sem.try_acquire("k");
  auto result = std::make_shared<outcome>();
  sem.acquire("k", asio::bind_executor(other, record(result)));
  sem_ctx.poll();
  CHECK_FALSE(sem_ctx.stopped());  // the waiter is outstanding work on the semaphore's context
  sem_ctx.restart();
  CHECK(sem.waiting("k") == 1);
  held->release();
  drain(sem_ctx);
  drain(other);
  CHECK(result->succeeded());
  CHECK(sem.in_use("k") == 1);
}

TEST_CASE("hardening: no queued acquire is granted after close returns even when close runs inside a grant pass") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  auto held = sem.try_acquire("k", 2);
  hook_state hook;
  // The grant of w1 posts its completion through hooked_executor, which
  // first closes the semaphore on another thread and waits for close() to return.
  hook.fn = [&sem] { std::thread([&sem] { sem.close(); }).join(); };
  auto w1 = std::make_shared<outcome>();
  sem.acquire("k", asio::bind_executor(hooked_executor(ctx.get_executor(), hook), record(w1)));
  auto w2 = start(sem, "k");
  drain(ctx);
  REQUIRE(sem.waiting("k") == 2);
  held->release();  // one grant pass could serve both
  drain(ctx);
  CHECK(sem.is_closed());
  CHECK(w1->done());
  REQUIRE(w2->done());
  CHECK(*w2->ec == keysem::error::closed);
  CHECK_FALSE(w2->granted);
  CHECK(sem.waiting("k") == 0);
}

TEST_CASE("hardening: an acquire with no associated executor after the context is destroyed throws operation_aborted") {
  auto ctx = std::make_unique<asio::io_context>();
  keyed_semaphore sem(*ctx, 1);
  ctx.reset();
  bool invoked = false;
  try {
    sem.acquire("k", [&invoked](error_code, permit) { invoked = true; });
    FAIL("acquire did not throw");
  } catch (const boost::system::system_error& e) {
    CHECK(e.code() == asio::error::operation_aborted);
  }
  CHECK_FALSE(invoked);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("hardening: an acquire bound to a live context after the semaphore's context is destroyed completes there with operation_aborted") {
  auto ctx = std::make_unique<asio::io_context>();
  asio::io_context other;
  keyed_semaphore sem(*ctx, 1);
  auto held = sem.try_acquire("k");
  ctx.reset();
  auto busy = std::make_shared<outcome>();
  auto idle = std::make_shared<outcome>();
  sem.acquire("k", asio::bind_executor(other, record(busy)));
  sem.acquire("free", asio::bind_executor(other, record(idle)));
  drain(other);
  REQUIRE(busy->done());
  REQUIRE(idle->done());
  CHECK(*busy->ec == asio::error::operation_aborted);
  CHECK(*idle->ec == asio::error::operation_aborted);
  CHECK_FALSE(busy->granted);
  CHECK_FALSE(idle->granted);
  CHECK(busy->calls == 1);
  CHECK(sem.in_use("k") == 1);
  CHECK(sem.waiting("k") == 0);
  CHECK(sem.key_count() == 1);
}

TEST_CASE("hardening: close and try_acquire and the counters and destruction work after the context is destroyed") {
  auto ctx = std::make_unique<asio::io_context>();
  auto sem = std::make_unique<keyed_semaphore>(*ctx, 1);
  auto held = sem->try_acquire("k");
  ctx.reset();
  CHECK_FALSE(sem->try_acquire("k"));
  auto fresh = sem->try_acquire("x");
  CHECK(sem->in_use("x") == (fresh ? 1u : 0u));
  CHECK(sem->key_count() == (fresh ? 2u : 1u));
  CHECK(sem->waiting("x") == 0);
  fresh.reset();
  CHECK(sem->in_use("x") == 0);
  CHECK(sem->key_count() == 1);
  sem->close();
  CHECK(sem->is_closed());
  CHECK_FALSE(sem->try_acquire("y"));
  CHECK(sem->in_use("k") == 1);
  sem.reset();
  held->release();  // after both the context and the semaphore are gone
}

TEST_CASE("hardening: use_future with free permits completes without running the semaphore's context") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  std::future<permit> granted = sem.acquire("k", asio::use_future);
  // use_future completes through asio's system executor (its own thread), not ctx.
  REQUIRE(granted.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CHECK(granted.get().count() == 1);
  CHECK(ctx.poll() == 0);
}

TEST_CASE("hardening: use_future on a contended key is not ready until the semaphore's context runs") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  std::future<permit> waiting = sem.acquire("k", asio::use_future);
  drain(ctx);
  CHECK(waiting.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);
  held->release();
  CHECK(waiting.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);
  drain(ctx);
  REQUIRE(waiting.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CHECK(waiting.get().count() == 1);
}

TEST_CASE("hardening: releasing a permit never calls the hasher so a throwing hasher cannot terminate") {
  asio::io_context ctx;
  async_keyed_semaphore<int, throwing_hash> sem(ctx, 1);
  auto p = sem.try_acquire(7);
  REQUIRE(p);
  {
    const hash_throws_scope throwing;
    CHECK_NOTHROW(p->release());
    p.reset();
  }
  CHECK(sem.key_count() == 0);
  CHECK(sem.in_use(7) == 0);
}

TEST_CASE("hardening: a shard count that would overflow bit_ceil throws invalid_argument") {
  asio::io_context ctx;
  CHECK_THROWS_AS(keyed_semaphore(ctx, 1, semaphore_options{.shards = (std::size_t{1} << 63) + 1}),
                  std::invalid_argument);
}

TEST_CASE("hardening: a shard count above max_shards throws and max_shards itself is accepted") {
  asio::io_context ctx;
  CHECK_THROWS_AS(keyed_semaphore(ctx, 1, semaphore_options{.shards = 65537}), std::invalid_argument);
  CHECK_NOTHROW(keyed_semaphore(ctx, 1, semaphore_options{.shards = 65536}));
}

}  // namespace keysem::test
