// callbacks: keysem without coroutines — completion handlers, a strand, and
// std::future from a plain thread.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <cstdio>
#include <future>
#include <thread>

namespace asio = boost::asio;
using keysem::keyed_semaphore;

int main() {
  asio::io_context ctx;
  keyed_semaphore pool_limit(ctx, 1);  // one connection per database at a time

  // 1. A plain callback. It runs on ctx, never inside acquire().
  auto held = pool_limit.try_acquire("orders-db");
  pool_limit.acquire("orders-db", [](boost::system::error_code ec, keyed_semaphore::permit p) {
    std::printf("callback: %s, holding %zu permit(s) on %s\n", ec.message().c_str(), p.count(),
                p.key().c_str());
  });  // queued: the permit is held
  held->release();  // hands the permit to the queued callback

  // 2. A handler bound to a strand runs on that strand.
  auto strand = asio::make_strand(ctx);
  pool_limit.acquire("users-db", asio::bind_executor(strand, [&](boost::system::error_code ec,
                                                                 keyed_semaphore::permit) {
                       std::printf("strand handler: %s, on strand: %s\n", ec.message().c_str(),
                                   strand.running_in_this_thread() ? "yes" : "no");
                     }));

  // 3. A future, for code outside the event loop.
  std::future<keyed_semaphore::permit> future = pool_limit.acquire("audit-db", asio::use_future);
  std::thread loop([&] { ctx.run(); });
  keyed_semaphore::permit p = future.get();
  std::printf("future: holding %zu permit(s) on %s\n", p.count(), p.key().c_str());
  p.release();
  loop.join();

  return pool_limit.key_count() == 0 ? 0 : 1;
}
