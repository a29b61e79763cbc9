// Regression (found by the model checker): when posting a granted waiter's completion throws (the handler's
// allocator fails), the drain job unwinds with its drain bit still set.
// The key's queue is then wedged for good — a release never schedules
// another drain while the bit is set — and the key's state, the shard and
// the semaphore's core leak (LeakSanitizer reports them at exit).
//
// Where: key_state_base::grant_waiters() calls op->complete({}) after
// claiming the op and adding its permits; acquire_op::do_complete posts the
// completion to the handler's executor with the handler's allocator. If
// that post throws, the completion is destroyed (the permit goes back) and
// the exception leaves run_drain() without clearing drain_bit.
//
// The handler's allocator is only used for that post when the handler's
// associated executor honours the allocator property: a concrete
// io_context::executor_type (bind_executor(ctx.get_executor(), ...)) or a
// strand of one; the semaphore's own any_io_executor ignores it.
//
// The same unwinding hits every strand job that completes ops: a cancel job
// (finish_cancelled never gives back the cancelled op's waiter: waiting()
// stays 1 and try_acquire fails on the key for good) and a close/destroy
// job (abort_waiters stops at the failing op: the ops behind it are never
// completed and their waiters never removed). The three test cases below
// show each.
//
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <doctest/doctest.h>

#include <memory>
#include <new>
#include <optional>

namespace {

namespace asio = boost::asio;
using permit = keysem::keyed_semaphore::permit;

template <class T>
struct failing_allocator {
  using value_type = T;
  int* calls;
  explicit failing_allocator(int& c) noexcept : calls(&c) {}
  template <class U>
  failing_allocator(const failing_allocator<U>& o) noexcept : calls(o.calls) {}
  T* allocate(std::size_t n) {
    if (++*calls == 2) throw std::bad_alloc();  // 1: the op; 2: its completion
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>().deallocate(p, n); }
  template <class U>
  bool operator==(const failing_allocator<U>& o) const noexcept { return calls == o.calls; }
};

TEST_CASE("regression: allocation failure while posting a granted waiter's completion wedges the key's queue") {
  asio::io_context ctx;
  keysem::keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  int calls = 0;
  bool first_invoked = false;
  sem.acquire("k", asio::bind_executor(ctx.get_executor(),
                                       asio::bind_allocator(failing_allocator<void>(calls),
                                                            [&](boost::system::error_code, permit) {
                                                              first_invoked = true;
                                                            })));
  std::optional<boost::system::error_code> second;
  sem.acquire("k", [&](boost::system::error_code ec, permit p) {
    second = ec;
    p.release();
  });
  ctx.poll();
  ctx.restart();
  CHECK(sem.waiting("k") == 2);

  held->release();  // drain: grants the first waiter, posting its completion fails
  CHECK_THROWS_AS(ctx.poll(), std::bad_alloc);
  ctx.restart();
  CHECK_FALSE(first_invoked);

  // Whatever happened to the first waiter, the second must be served.
  for (int i = 0; i < 10 && !second; ++i) {
    ctx.poll();
    ctx.restart();
  }
  CHECK(second.has_value());   // fails: nothing will ever drain the queue again
  CHECK(sem.waiting("k") == 0);
  CHECK(sem.key_count() == 0);
}

TEST_CASE("regression: allocation failure while posting a cancelled waiter's completion leaves a phantom waiter") {
  asio::io_context ctx;
  keysem::keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  int calls = 0;
  asio::cancellation_signal signal;
  sem.acquire("k", asio::bind_executor(ctx.get_executor(),
                                       asio::bind_allocator(failing_allocator<void>(calls),
                                                            asio::bind_cancellation_slot(
                                                                signal.slot(), [](boost::system::error_code, permit) {}))));
  ctx.poll();
  ctx.restart();
  signal.emit(asio::cancellation_type::terminal);
  CHECK_THROWS_AS(ctx.poll(), std::bad_alloc);  // the cancel job's completion post fails
  ctx.restart();
  held->release();
  ctx.poll();
  ctx.restart();
  CHECK(sem.waiting("k") == 0);      // fails: 1, for good
  CHECK(sem.try_acquire("k"));       // fails: "somebody waits"
  CHECK(sem.key_count() == 0);
}

TEST_CASE("regression: allocation failure while close() completes a waiter leaves the rest of the queue hanging") {
  asio::io_context ctx;
  keysem::keyed_semaphore sem(ctx, 1);
  auto held = sem.try_acquire("k");
  int calls = 0;
  sem.acquire("k", asio::bind_executor(ctx.get_executor(),
                                       asio::bind_allocator(failing_allocator<void>(calls),
                                                            [](boost::system::error_code, permit) {})));
  std::optional<boost::system::error_code> behind;
  sem.acquire("k", [&](boost::system::error_code ec, permit) { behind = ec; });
  ctx.poll();
  ctx.restart();
  sem.close();
  CHECK_THROWS_AS(ctx.poll(), std::bad_alloc);  // the close job's first completion post fails
  ctx.restart();
  for (int i = 0; i < 10 && !behind; ++i) {
    ctx.poll();
    ctx.restart();
  }
  CHECK(behind.has_value());  // fails: never completed
  CHECK(sem.waiting("k") == 0);
  held->release();
  CHECK(sem.key_count() == 0);
}

}  // namespace
