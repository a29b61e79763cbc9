// http_server/fleet_limiter.hpp — the per-tenant limit shared by every
// replica of the server (serve --redis HOST:PORT).
//
// Several replicas started with the same --redis, --limit and tiers enforce
// each tenant's limit across all of them: keysem::redis::fleet_semaphore
// keeps one lease per permit in Redis, and the tiers are stored there with
// set_limit, so every replica applies the same ones. This class keeps
// keysem::redis out of main.cpp, and lets the example build without it
// (available() is then false and the constructor throws).
#ifndef KEYSEM_EXAMPLE_HTTP_FLEET_LIMITER_HPP
#define KEYSEM_EXAMPLE_HTTP_FLEET_LIMITER_HPP

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

struct fleet_config {
  std::string host;                        // empty: no fleet mode
  std::uint16_t port = 6379;
  std::chrono::milliseconds lease{10000};  // T: a dead replica's permits come back within T
  std::string prefix = "keysem-http";      // replicas sharing limits share the prefix
  bool enabled() const { return !host.empty(); }
};

class fleet_limiter {
 public:
  // A fleet-wide permit of one tenant; empty when nothing was granted.
  // Move-only; gives the lease back when released or destroyed.
  class permit {
   public:
    permit() noexcept;
    permit(permit&&) noexcept;
    permit& operator=(permit&&) noexcept;
    ~permit();
    void release() noexcept;

   private:
    friend class fleet_limiter;
    struct lease;
    std::unique_ptr<lease> lease_;
  };

  // False when the example was built without keysem::redis (no hiredis).
  static bool available() noexcept;

  // Connects lazily. Throws std::runtime_error if !available().
  fleet_limiter(const boost::asio::any_io_executor& ex, const fleet_config& config,
                std::size_t default_limit);
  ~fleet_limiter();

  // Stores each tenant's tier in Redis (set_limit) for every replica.
  // Throws boost::system::system_error if Redis does not take them.
  boost::asio::awaitable<void> store_tiers(std::map<std::string, std::size_t> tiers);

  // One fleet-wide permit of `tenant`, or an error: boost::asio::error::
  // timed_out at `deadline`, or a keysem::redis::error (Redis unreachable,
  // closed).
  boost::asio::awaitable<std::tuple<boost::system::error_code, permit>> acquire_until(
      std::string tenant, std::chrono::steady_clock::time_point deadline);

  // Waiting acquires complete with an error; held permits stay held.
  void close();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

#endif
