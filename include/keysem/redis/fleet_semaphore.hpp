// keysem/redis/fleet_semaphore.hpp — per-key limits shared by every process
// using the same Redis server and prefix ("4 per tenant across the fleet").
#ifndef KEYSEM_REDIS_FLEET_SEMAPHORE_HPP
#define KEYSEM_REDIS_FLEET_SEMAPHORE_HPP

#include <keysem/redis/detail/fleet_core.hpp>
#include <keysem/redis/endpoint.hpp>
#include <keysem/redis/error.hpp>
#include <keysem/redis/fleet_options.hpp>
#include <keysem/redis/fleet_permit.hpp>
#include <keysem/redis/fleet_stats.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

namespace keysem::redis {

/// A keyed semaphore whose limits hold across processes: at most limit(key)
/// permits of a key are held at once by all fleet_semaphores sharing one
/// Redis server (a single primary) and one fleet_options::prefix. See
/// docs/fleet.md for exactly what is guaranteed (G1-G3) and what is not.
///
/// Each process first passes a local keysem semaphore per key, so only a
/// key's head waiters talk to Redis. A grant is a lease in Redis of length
/// fleet_options::lease, refreshed by the semaphore while the fleet_permit
/// lives. Without Redis nothing is granted (fail closed): operations
/// complete with a keysem::redis::error within the request timeout.
///
/// Thread safety: every member function may be called from any thread.
/// Destroying the semaphore cancels nothing on the server but completes its
/// pending acquires with operation_aborted or error::closed, and marks the
/// permits it granted lost (nobody refreshes them any more).
template <class Executor = boost::asio::any_io_executor>
class fleet_semaphore {
 public:
  using executor_type = Executor;
  using acquire_signature = void(boost::system::error_code, fleet_permit);

  /// Connects lazily: no I/O happens before the first operation.
  /// Throws std::invalid_argument if permits_per_key is 0 or above
  /// keysem::max_permits_per_key, or the options cannot work (lease <= 0,
  /// safety_margin >= lease, empty prefix).
  fleet_semaphore(const Executor& ex, endpoint server, std::size_t permits_per_key,
                  fleet_options options = {})
      : executor_(ex),
        core_(detail::fleet_core::create(boost::asio::any_io_executor(ex), std::move(server),
                                         checked(permits_per_key), std::move(options))) {}

  fleet_semaphore(const fleet_semaphore&) = delete;
  fleet_semaphore& operator=(const fleet_semaphore&) = delete;

  ~fleet_semaphore() {
    if (core_) core_->shutdown();
  }

  executor_type get_executor() const noexcept { return executor_; }
  std::size_t permits_per_key() const noexcept { return core_->permits_per_key(); }

  /// Acquires `n` permits on `key` across the fleet, waiting as long as it takes.
  ///
  /// Completion signature: void(boost::system::error_code, fleet_permit).
  /// The handler runs on its associated executor (default: this semaphore's
  /// executor), never inside this call. Errors: error::closed,
  /// error::connection_failed, error::timed_out (Redis did not answer),
  /// error::protocol, error::server_error, error::limit_mismatch,
  /// error::not_replicated (fleet_options::replicas not reached),
  /// boost::asio::error::invalid_argument (n is 0 or above the key's
  /// limit), boost::asio::error::operation_aborted (cancelled). On error the
  /// permit is empty and nothing is held.
  ///
  /// Waiting: behind the local stage in FIFO order, then on Redis, woken by
  /// release messages, by a timer at the earliest lease expiry, or by a
  /// jittered fallback (fleet_options::fallback_poll). Not FIFO across
  /// processes.
  ///
  /// Cancellation (terminal, partial, total): the operation completes with
  /// operation_aborted. If the acquire script was already sent, its id is
  /// released anyway (its outcome was unknown).
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire(std::string key, std::size_t n, CompletionToken&& token) {
    return start(std::forward<CompletionToken>(token), std::move(key), n, std::nullopt, false);
  }
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire(std::string key, CompletionToken&& token) {
    return acquire(std::move(key), 1, std::forward<CompletionToken>(token));
  }
  /// Token-less: `co_await sem.acquire(key, n)` returns the permit or throws
  /// boost::system::system_error.
  boost::asio::awaitable<fleet_permit> acquire(std::string key, std::size_t n = 1) {
    return acquire(std::move(key), n, boost::asio::use_awaitable);
  }

  /// acquire() that gives up with boost::asio::error::timed_out once
  /// `timeout` has passed (steady clock, from the call).
  template <class Rep, class Period,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire_for(std::string key, std::size_t n, std::chrono::duration<Rep, Period> timeout,
                   CompletionToken&& token) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    return start(std::forward<CompletionToken>(token), std::move(key), n, deadline, false);
  }

  /// acquire() that gives up with boost::asio::error::timed_out at `deadline`.
  template <class Clock, class Duration,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire_until(std::string key, std::size_t n, std::chrono::time_point<Clock, Duration> deadline,
                     CompletionToken&& token) {
    return acquire_for(std::move(key), n, deadline - Clock::now(),
                       std::forward<CompletionToken>(token));
  }

  /// One round trip, never waits: the permit, or an empty permit with no
  /// error if the key is busy (locally or in the fleet). Errors and
  /// executor as for acquire().
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto try_acquire(std::string key, std::size_t n, CompletionToken&& token) {
    return start(std::forward<CompletionToken>(token), std::move(key), n, std::nullopt, true);
  }

  /// Stores `n` as the limit of `key` in Redis, for every replica (0: back
  /// to permits_per_key, like reset_limit). Lowering revokes nothing: holders
  /// keep their permits. Completion signature: void(error_code); errors as
  /// for acquire().
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) CompletionToken>
  auto set_limit(std::string key, std::size_t n, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [core = core_](auto handler, std::string k, std::size_t limit) {
          core->set_limit(std::move(k), limit, detail::done_handler(std::move(handler)));
        },
        token, std::move(key), n);
  }
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) CompletionToken>
  auto reset_limit(std::string key, CompletionToken&& token) {
    return set_limit(std::move(key), 0, std::forward<CompletionToken>(token));
  }

  /// Completes waiting acquires with error::closed; later ones fail the
  /// same way. Held permits stay held and are still refreshed and released.
  void close() { core_->close(); }

  /// Local counters; each is exact, the set is not one snapshot.
  fleet_stats stats() const noexcept { return core_->stats(); }

 private:
  template <class CompletionToken>
  auto start(CompletionToken&& token, std::string key, std::size_t n,
             std::optional<std::chrono::steady_clock::time_point> deadline, bool try_only) {
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        [core = core_](auto handler, std::string k, std::size_t count,
                       std::optional<std::chrono::steady_clock::time_point> until, bool only_try) {
          core->acquire(std::move(k), count, until, only_try,
                        detail::acquire_handler(std::move(handler)));
        },
        token, std::move(key), n, deadline, try_only);
  }

  static std::size_t checked(std::size_t permits) {
    if (permits == 0 || permits > keysem::keyed_semaphore::max_permits_per_key) {
      throw std::invalid_argument(
          "keysem::redis::fleet_semaphore: permits_per_key must be between 1 and "
          "keysem::max_permits_per_key");
    }
    return permits;
  }

  Executor executor_;
  std::shared_ptr<detail::fleet_core> core_;
};

}  // namespace keysem::redis

#endif
