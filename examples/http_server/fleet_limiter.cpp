// http_server/fleet_limiter.cpp — fleet_limiter over keysem::redis, or, in a
// build without hiredis, a limiter that refuses to be constructed.
#include "fleet_limiter.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <stdexcept>
#include <utility>

#if KEYSEM_EXAMPLE_HAS_REDIS
#include <keysem/redis.hpp>

struct fleet_limiter::permit::lease {
  keysem::redis::fleet_permit held;
};

struct fleet_limiter::impl {
  impl(const boost::asio::any_io_executor& ex, keysem::redis::endpoint server, std::size_t limit,
       keysem::redis::fleet_options options)
      : semaphore(ex, std::move(server), limit, std::move(options)) {}
  keysem::redis::fleet_semaphore<> semaphore;
};

bool fleet_limiter::available() noexcept { return true; }

fleet_limiter::fleet_limiter(const boost::asio::any_io_executor& ex, const fleet_config& config,
                             std::size_t default_limit) {
  keysem::redis::fleet_options options;
  options.prefix = config.prefix;
  options.lease = config.lease;
  impl_ = std::make_unique<impl>(ex, keysem::redis::endpoint{config.host, config.port, {}, 0},
                                 default_limit, std::move(options));
}

boost::asio::awaitable<void> fleet_limiter::store_tiers(std::map<std::string, std::size_t> tiers) {
  for (const auto& [tenant, limit] : tiers) {
    co_await impl_->semaphore.set_limit(tenant, limit, boost::asio::use_awaitable);
  }
}

boost::asio::awaitable<std::tuple<boost::system::error_code, fleet_limiter::permit>>
fleet_limiter::acquire_until(std::string tenant, std::chrono::steady_clock::time_point deadline) {
  auto [ec, held] = co_await impl_->semaphore.acquire_until(
      std::move(tenant), 1, deadline, boost::asio::as_tuple(boost::asio::use_awaitable));
  permit granted;
  if (!ec) {
    granted.lease_ = std::make_unique<permit::lease>(permit::lease{std::move(held)});
  }
  co_return std::tuple(ec, std::move(granted));
}

void fleet_limiter::close() { impl_->semaphore.close(); }

#else  // built without keysem::redis

struct fleet_limiter::permit::lease {};
struct fleet_limiter::impl {};

bool fleet_limiter::available() noexcept { return false; }

fleet_limiter::fleet_limiter(const boost::asio::any_io_executor&, const fleet_config&,
                             std::size_t) {
  throw std::runtime_error(
      "--redis: this build has no keysem::redis (install libhiredis-dev and reconfigure)");
}

boost::asio::awaitable<void> fleet_limiter::store_tiers(std::map<std::string, std::size_t>) {
  co_return;
}

boost::asio::awaitable<std::tuple<boost::system::error_code, fleet_limiter::permit>>
fleet_limiter::acquire_until(std::string, std::chrono::steady_clock::time_point) {
  co_return std::tuple(make_error_code(boost::system::errc::operation_not_supported), permit());
}

void fleet_limiter::close() {}

#endif

fleet_limiter::~fleet_limiter() = default;

fleet_limiter::permit::permit() noexcept = default;
fleet_limiter::permit::permit(permit&&) noexcept = default;
fleet_limiter::permit& fleet_limiter::permit::operator=(permit&&) noexcept = default;
fleet_limiter::permit::~permit() = default;
void fleet_limiter::permit::release() noexcept { lease_.reset(); }
