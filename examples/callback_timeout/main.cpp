// callback_timeout: a deadline on an acquire without coroutines — a
// completion handler, a steady_timer and a strand.
//
// The timer's handler cancels the acquire by emitting a cancellation signal.
// keysem's side of a cancellation is thread-safe, but asio's cancellation
// slots are not: the signal must be emitted on the executor the acquire's
// handler runs on, because that is where the slot is cleared when the
// acquire completes. Binding both handlers to one strand does exactly that,
// also on an io_context run by several threads (as here).
// acquire_for is called on the strand too, so that the acquire's handler
// cannot touch the timer before async_wait has been called on it.
//
// Two acquires run side by side: one on a key held for the whole program
// (the timer wins: operation_aborted, and the acquire leaves no waiter) and
// one on a key released well before its deadline (the acquire wins, the
// timer is cancelled). The program exits non-zero if either outcome differs.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <utility>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// The README's snippet, verbatim.
// Calls done(ec, permit) on `strand`; ec is operation_aborted if no permit came in `timeout`.
// Call it on `strand`, so that its handlers cannot run before it returns.
template <class Done>  // void(boost::system::error_code, keysem::keyed_semaphore::permit)
void acquire_for(keysem::keyed_semaphore& sem, std::string key, std::chrono::milliseconds timeout,
                 asio::strand<asio::io_context::executor_type> strand, Done done) {
  auto timer = std::make_shared<asio::steady_timer>(strand, timeout);
  auto signal = std::make_shared<asio::cancellation_signal>();
  auto on_permit = [timer, signal, done = std::move(done)](auto ec, auto permit) mutable {
    timer->cancel();  // the acquire finished first: stop the clock
    done(ec, std::move(permit));
  };
  sem.acquire(std::move(key),
              asio::bind_cancellation_slot(signal->slot(),
                                           asio::bind_executor(strand, std::move(on_permit))));
  // Emitted on the strand the acquire's handler runs on: asio's slots are not thread-safe.
  timer->async_wait(asio::bind_executor(strand, [signal](boost::system::error_code ec) {
    if (!ec) signal->emit(asio::cancellation_type::terminal);  // deadline: leave the queue
  }));
}
// End of the README's snippet.

int main() {
  asio::io_context ctx;
  keysem::keyed_semaphore sem(ctx, 1);
  auto strand = asio::make_strand(ctx);

  // "orders-db" stays held until the end: its acquire must time out.
  auto orders_held = sem.try_acquire("orders-db");
  // "users-db" is held now and released right after its acquire is queued:
  // that acquire must win against its (long) deadline.
  auto users_held = sem.try_acquire("users-db");

  boost::system::error_code orders_ec, users_ec;
  std::size_t orders_count = 99, users_count = 0;
  asio::dispatch(strand, [&] {
    acquire_for(sem, "orders-db", 20ms, strand, [&](auto ec, keysem::keyed_semaphore::permit p) {
      orders_ec = ec;
      orders_count = p.count();
    });
    acquire_for(sem, "users-db", 30s, strand, [&](auto ec, keysem::keyed_semaphore::permit p) {
      users_ec = ec;
      users_count = p.count();  // p is released at the end of the handler
    });
    users_held->release();  // the acquire on "users-db" is queued by now: it gets the permit
  });

  std::thread second([&] { ctx.run(); });  // two threads: the strand is what keeps it correct
  ctx.run();
  second.join();

  std::printf("orders-db: %s after 20 ms, %zu permit(s)\n", orders_ec.message().c_str(),
              orders_count);
  std::printf("users-db: %s, %zu permit(s)\n", users_ec.message().c_str(), users_count);
  const bool ok = orders_ec == asio::error::operation_aborted && orders_count == 0 && !users_ec &&
                  users_count == 1 && sem.waiting("orders-db") == 0 &&
                  sem.in_use("orders-db") == 1 && sem.in_use("users-db") == 0;
  orders_held->release();
  if (!ok || sem.key_count() != 0) {
    std::printf("unexpected outcome\n");
    return 1;
  }
  std::printf("both outcomes as expected; no key state left\n");
  return 0;
}
