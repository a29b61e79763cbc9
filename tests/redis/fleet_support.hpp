// Helpers for the fleet_semaphore integration tests: bounded runs of a
// coroutine, short leases, and polling Redis for a condition (bounded).
#ifndef KEYSEM_TESTS_REDIS_FLEET_SUPPORT_HPP
#define KEYSEM_TESTS_REDIS_FLEET_SUPPORT_HPP

#include "redis_server.hpp"
#include "run_bounded.hpp"

// GCC 12 flags asio's awaitable frames, which have class-specific operator
// new/delete, with a false -Wmismatched-new-delete at the end of every
// coroutine (GCC PR 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <keysem/redis.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <doctest/doctest.h>

#include <exception>
#include <functional>

namespace keysem::redis::test {

using fleet = fleet_semaphore<>;
using steady = std::chrono::steady_clock;

// Short leases; a fallback poll long enough that a test passing within
// its bound cannot have been woken by polling.
inline fleet_options short_lease(std::string prefix = "t") {
  fleet_options o;
  o.prefix = std::move(prefix);
  o.lease = 500ms;
  o.safety_margin = 50ms;
  o.request_timeout = 300ms;
  o.reconnect_min = 20ms;
  o.reconnect_max = 200ms;
  o.fallback_poll = 30s;
  return o;
}

// Runs `body` on ctx until it finishes (then stops ctx) or `bound` passes.
inline void run(asio::io_context& ctx, std::function<asio::awaitable<void>()> body,
                steady::duration bound = 10s) {
  REQUIRE_MESSAGE(run_bounded(ctx, std::move(body), bound),
                  "the scenario did not finish within its bound");
}

// After the semaphores are gone: lets their shutdown run to the end.
inline void drain(asio::io_context& ctx) {
  ctx.restart();
  ctx.run_for(2s);
}

inline asio::awaitable<void> pause(steady::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

// Polls `pred` every 5 ms until true or `bound` passes.
inline asio::awaitable<bool> eventually(std::function<bool()> pred, steady::duration bound = 5s) {
  const auto until = steady::now() + bound;
  while (!pred()) {
    if (steady::now() > until) co_return false;
    co_await pause(5ms);
  }
  co_return true;
}

inline std::int64_t redis_int(const endpoint& where, std::vector<std::string> args) {
  auto [ec, r] = command(where, args);
  REQUIRE(!ec);
  if (r.type == detail::reply::kind::array && r.elements.size() == 2) return r.elements[1].integer;
  return r.integer;
}

// Clients subscribed to a key's release channel.
inline std::int64_t subscribers(const endpoint& where, const std::string& prefix,
                                const std::string& key) {
  return redis_int(where, {"PUBSUB", "NUMSUB", detail::names_for(prefix, key).channel});
}

inline std::int64_t holders(const endpoint& where, const std::string& prefix,
                            const std::string& key) {
  return redis_int(where, {"ZCARD", detail::names_for(prefix, key).holders});
}

inline auto tuple_token() { return asio::as_tuple(asio::use_awaitable); }

}  // namespace keysem::redis::test

#endif
