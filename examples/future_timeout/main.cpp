// future_timeout: a deadline on an acquire from a plain thread, with
// std::future — no coroutine, no callback of one's own.
//
// The thread waits on the future with wait_for. On timeout it cancels the
// acquire with a cancellation signal, which must be emitted on the executor
// the acquire's handler runs on: keysem's side of a cancellation is
// thread-safe, but asio's cancellation slots are not, and the slot is
// cleared on that executor when the acquire completes. So the future's
// completion is bound to a strand (bind_executor) and the emit is posted to
// the same strand. Posting it to the semaphore's executor instead, or
// calling emit() on the waiting thread, races with that completion.
//
// After the emit the future yields the permit (it was granted before the
// signal arrived: once granted, a cancellation is ignored) or throws
// operation_aborted (the acquire left the queue).
//
// An acquire that has to wait needs the semaphore's executor running (the
// key's queue is served by a strand there), whatever executor its handler
// is bound to: here one thread runs the io_context for the whole program.
// Only an acquire that finds its permits free completes without it.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Waits at most `timeout` for a permit on `key`, from a thread that does not
// run the io_context; std::nullopt if none came in time.
std::optional<keysem::keyed_semaphore::permit> acquire_for(
    keysem::keyed_semaphore& sem, std::string key, std::chrono::milliseconds timeout,
    asio::strand<asio::io_context::executor_type> strand) {
  auto signal = std::make_shared<asio::cancellation_signal>();
  std::future<keysem::keyed_semaphore::permit> permit = sem.acquire(
      std::move(key),
      asio::bind_cancellation_slot(signal->slot(), asio::bind_executor(strand, asio::use_future)));
  if (permit.wait_for(timeout) == std::future_status::timeout) {
    // On the strand the completion runs on; the lambda keeps `signal` alive.
    asio::post(strand, [signal] { signal->emit(asio::cancellation_type::terminal); });
  }
  try {
    return permit.get();  // granted in time, or just as the deadline passed
  } catch (const boost::system::system_error& e) {
    if (e.code() != asio::error::operation_aborted) {
      throw;
    }
    return std::nullopt;  // timed out: the acquire has left the queue
  }
}

int main() {
  asio::io_context ctx;
  keysem::keyed_semaphore sem(ctx, 1);
  bool ok = true;

  // 0. Free permits: a plain use_future acquire completes although no thread
  //    runs ctx yet (its handler has an executor of its own).
  {
    keysem::keyed_semaphore::permit p = sem.acquire("reports", asio::use_future).get();
    std::printf("free permit, ctx not running: %zu permit(s)\n", p.count());
    ok = ok && p.count() == 1;
  }

  auto strand = asio::make_strand(ctx);
  auto work = asio::make_work_guard(ctx);
  std::thread loop([&] { ctx.run(); });

  // 1. The key stays held for the whole call: the deadline passes and the
  //    acquire leaves the queue without a trace.
  auto held = sem.try_acquire("reports");
  auto late = acquire_for(sem, "reports", 20ms, strand);
  std::printf("held elsewhere, 20 ms deadline: %s\n", late ? "got a permit" : "timed out");
  ok = ok && !late && sem.waiting("reports") == 0 && sem.in_use("reports") == 1;

  // 2. The event loop releases the key 20 ms from now: the permit comes well
  //    within the deadline.
  asio::steady_timer release_soon(ctx, 20ms);
  release_soon.async_wait([&](boost::system::error_code) { held->release(); });
  auto in_time = acquire_for(sem, "reports", 30s, strand);
  std::printf("released after 20 ms, 30 s deadline: %s\n", in_time ? "got a permit" : "timed out");
  ok = ok && in_time && in_time->count() == 1;
  in_time.reset();  // released here, on this thread

  work.reset();
  loop.join();
  ok = ok && sem.key_count() == 0;
  std::printf(ok ? "all outcomes as expected\n" : "unexpected outcome\n");
  return ok ? 0 : 1;
}
