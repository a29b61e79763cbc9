// try_acquire, permits and counters: the synchronous surface.
#include "test_support.hpp"

#include <stdexcept>
#include <string_view>

namespace keysem::test {

TEST_CASE("constructor: a limit of zero or above the maximum is rejected") {
  asio::io_context ctx;
  CHECK_THROWS_AS(keyed_semaphore(ctx, 0), std::invalid_argument);
  CHECK_THROWS_AS(keyed_semaphore(ctx, keyed_semaphore::max_permits_per_key + 1),
                  std::invalid_argument);
  keyed_semaphore sem(ctx, keyed_semaphore::max_permits_per_key);
  CHECK(sem.permits_per_key() == keyed_semaphore::max_permits_per_key);
}

TEST_CASE("constructor: from an executor or a context, with any shard count") {
  asio::io_context ctx;
  keyed_semaphore from_executor(ctx.get_executor(), 3, semaphore_options{1});
  keyed_semaphore from_context(ctx, 3, semaphore_options{5});
  CHECK(from_executor.permits_per_key() == 3);
  CHECK(from_executor.get_executor() == asio::any_io_executor(ctx.get_executor()));
  auto a = from_executor.try_acquire("k");
  auto b = from_context.try_acquire("k");
  CHECK((a && b));
}

TEST_CASE("try_acquire: never more than the limit on one key; keys are independent") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  auto first = sem.try_acquire("a");
  auto second = sem.try_acquire("a");
  REQUIRE(first);
  REQUIRE(second);
  CHECK_FALSE(sem.try_acquire("a"));
  CHECK(sem.in_use("a") == 2);
  CHECK(sem.available("a") == 0);

  auto other = sem.try_acquire("b");
  CHECK(other);
  CHECK(sem.in_use("b") == 1);
  CHECK(sem.key_count() == 2);
}

TEST_CASE("try_acquire: weighted permits count towards the limit") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 5);
  auto three = sem.try_acquire("k", 3);
  REQUIRE(three);
  CHECK(three->count() == 3);
  CHECK_FALSE(sem.try_acquire("k", 3));
  auto two = sem.try_acquire("k", 2);
  REQUIRE(two);
  CHECK(sem.in_use("k") == 5);
  three->release();
  CHECK(sem.in_use("k") == 2);
  CHECK(sem.try_acquire("k", 3));
}

TEST_CASE("try_acquire: n of zero or above the limit throws invalid_argument and changes nothing") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  CHECK_THROWS_AS(sem.try_acquire("k", 0), std::invalid_argument);
  CHECK_THROWS_AS(sem.try_acquire("k", 3), std::invalid_argument);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("try_acquire: a release is visible at once, with no io_context turn") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  REQUIRE(held);
  CHECK_FALSE(sem.try_acquire("k"));
  held->release();
  CHECK(sem.in_use("k") == 0);
  CHECK(sem.try_acquire("k"));
  CHECK(ctx.poll() == 0);
}

TEST_CASE("try_acquire: fails while a waiter is queued, even with permits free (no barging)") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 3);
  auto two = sem.try_acquire("k", 2);
  REQUIRE(two);
  auto big = start(sem, "k", 3);  // waits: only one permit is free
  drain(ctx);
  CHECK_FALSE(big->done());
  CHECK(sem.waiting("k") == 1);
  CHECK(sem.available("k") == 1);
  CHECK_FALSE(sem.try_acquire("k", 1));
  two->release();
  drain(ctx);
  CHECK(big->succeeded());
}

TEST_CASE("try_acquire: a failed try leaves no state behind") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  CHECK_THROWS_AS(sem.try_acquire("k", 2), std::invalid_argument);
  CHECK(sem.key_count() == 0);
  auto held = sem.try_acquire("k");
  CHECK_FALSE(sem.try_acquire("k"));
  held.reset();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("counters: unknown keys read as idle and are not created") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 4);
  CHECK(sem.in_use("nobody") == 0);
  CHECK(sem.available("nobody") == 4);
  CHECK(sem.waiting("nobody") == 0);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("permit: move-only RAII; release is idempotent; assignment releases what it held") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  permit empty;
  CHECK_FALSE(empty);
  CHECK(empty.count() == 0);
  CHECK_THROWS_AS((void)empty.key(), std::logic_error);
  empty.release();  // no-op

  auto a = sem.try_acquire("a");
  REQUIRE(a);
  CHECK(a->key() == "a");
  permit moved = std::move(*a);
  CHECK_FALSE(*a);
  CHECK(moved);
  CHECK(sem.in_use("a") == 1);

  auto b = sem.try_acquire("b");
  moved = std::move(*b);  // releases "a", takes over "b"
  CHECK(sem.in_use("a") == 0);
  CHECK(sem.in_use("b") == 1);
  CHECK(moved.key() == "b");

  moved.release();
  moved.release();
  CHECK(sem.in_use("b") == 0);
  CHECK(sem.key_count() == 0);
  {
    auto scoped = sem.try_acquire("c");
    CHECK(sem.in_use("c") == 1);
  }
  CHECK(sem.in_use("c") == 0);
}

TEST_CASE("keys: state is created on first use and reclaimed when idle") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 1);
  {
    auto a = sem.try_acquire("a");
    auto b = sem.try_acquire("b");
    CHECK(sem.key_count() == 2);
  }
  CHECK(sem.key_count() == 0);
  for (int i = 0; i < 1000; ++i) {
    auto p = sem.try_acquire("key-" + std::to_string(i));
    CHECK(p);
  }
  CHECK(sem.key_count() == 0);
}

TEST_CASE("keys: a std::string semaphore is looked up by string_view and C string") {
  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  const std::string_view view = "tenant";
  auto by_view = sem.try_acquire(view);
  auto by_literal = sem.try_acquire("tenant");
  REQUIRE(by_view);
  REQUIRE(by_literal);
  CHECK(by_view->key() == "tenant");
  CHECK(sem.in_use(std::string("tenant")) == 2);
  CHECK(sem.in_use(view) == 2);
  CHECK(sem.waiting(view) == 0);
  CHECK_FALSE(sem.try_acquire(std::string("tenant")));
}

TEST_CASE("keys: integer keys") {
  asio::io_context ctx;
  async_keyed_semaphore<int> sem(ctx, 1);
  auto one = sem.try_acquire(1);
  CHECK(one);
  CHECK_FALSE(sem.try_acquire(1));
  CHECK(sem.try_acquire(2));
  CHECK(one->key() == 1);
  CHECK(sem.in_use(1) == 1);
}

struct endpoint {
  std::string host;
  int port = 0;
  bool operator==(const endpoint&) const = default;
};

struct endpoint_hash {
  std::size_t operator()(const endpoint& e) const noexcept {
    return std::hash<std::string>()(e.host) * 31 + static_cast<std::size_t>(e.port);
  }
};

TEST_CASE("keys: a user struct with its own hash") {
  asio::io_context ctx;
  async_keyed_semaphore<endpoint, endpoint_hash> sem(ctx, 1);
  auto a = sem.try_acquire(endpoint{"db", 5432});
  REQUIRE(a);
  CHECK_FALSE(sem.try_acquire(endpoint{"db", 5432}));
  CHECK(sem.try_acquire(endpoint{"db", 5433}));
  CHECK(a->key().port == 5432);
}

// Every key lands in shard 0 and collides in the table: correctness must not
// depend on the hash being good.
struct constant_hash {
  std::size_t operator()(int) const noexcept { return 42; }
};

TEST_CASE("keys: keys that share a shard and a hash still have separate limits") {
  asio::io_context ctx;
  async_keyed_semaphore<int, constant_hash> sem(ctx, 1, semaphore_options{4});
  std::vector<async_keyed_semaphore<int, constant_hash>::permit> held;
  for (int key = 0; key < 100; ++key) {
    auto p = sem.try_acquire(key);
    REQUIRE(p);
    held.push_back(std::move(*p));
    CHECK_FALSE(sem.try_acquire(key));
  }
  CHECK(sem.key_count() == 100);
  held.clear();
  CHECK(sem.key_count() == 0);
}

TEST_CASE("hash: XXH3 for strings and integers, transparent and avalanching") {
  keysem::hash<std::string> h;
  CHECK(h("abc") == h(std::string_view("abc")));
  CHECK(h(std::string("abc")) == h("abc"));
  CHECK(h("abc") != h("abd"));
  CHECK(boost::unordered::hash_is_avalanching<keysem::hash<std::string>>::value);
  CHECK(keysem::hash<int>()(7) == keysem::hash<long>()(7L));
  CHECK_FALSE(boost::unordered::hash_is_avalanching<keysem::hash<double>>::value);
}

TEST_CASE("error: keysem::error::closed compares with boost and std error codes") {
  const error_code ec = keysem::error::closed;
  CHECK(ec == keysem::error::closed);
  CHECK(std::string(ec.category().name()) == "keysem");
  CHECK(ec.message() == "the semaphore is closed");
  CHECK(ec != boost::asio::error::operation_aborted);
  const std::error_code std_ec = keysem::error::closed;
  CHECK(std_ec == keysem::error::closed);
}

}  // namespace keysem::test
