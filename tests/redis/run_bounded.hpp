// Runs one coroutine on an io_context until it is done or a bound passes.
// A fleet_semaphore's connections keep its context busy forever, so the
// scenario stops the context itself once its coroutine returns. Free of
// doctest: the fleet benchmark uses it too.
#ifndef KEYSEM_TESTS_REDIS_RUN_BOUNDED_HPP
#define KEYSEM_TESTS_REDIS_RUN_BOUNDED_HPP

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <functional>

namespace keysem::redis::test {

// True if `body` finished within `bound`; its exception, if any, is
// rethrown either way.
inline bool run_bounded(boost::asio::io_context& ctx,
                        std::function<boost::asio::awaitable<void>()> body,
                        std::chrono::steady_clock::duration bound) {
  bool done = false;
  std::exception_ptr failure;
  boost::asio::co_spawn(ctx, body(), [&](std::exception_ptr e) {
    done = true;
    failure = e;
    ctx.stop();
  });
  ctx.restart();
  ctx.run_for(bound);
  ctx.restart();
  if (failure) std::rethrow_exception(failure);
  return done;
}

}  // namespace keysem::redis::test

#endif
