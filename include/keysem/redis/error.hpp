// keysem/redis/error.hpp — the error codes keysem::redis reports.
#ifndef KEYSEM_REDIS_ERROR_HPP
#define KEYSEM_REDIS_ERROR_HPP

#include <boost/system/error_code.hpp>

#include <system_error>
#include <type_traits>

namespace keysem::redis {

/// Errors of fleet_semaphore operations, besides asio's own
/// `boost::asio::error::operation_aborted` (cancelled, or the semaphore was
/// destroyed), `boost::asio::error::invalid_argument` (a bad permit count)
/// and `boost::asio::error::timed_out` (acquire_for/acquire_until deadline).
/// Every one of them means "not granted": the fleet semaphore fails closed.
enum class error {
  /// No connection to Redis could be made (refused, unreachable, closed by
  /// the server, or reconnection is backing off after such a failure).
  connection_failed = 1,
  /// Redis did not answer within fleet_options::request_timeout; the
  /// connection is dropped and re-established for later requests.
  timed_out,
  /// Redis sent something that is not valid RESP, or a reply of an
  /// unexpected shape.
  protocol,
  /// Redis answered with an error reply (AUTH, SELECT, script failure...).
  server_error,
  /// This client's permits_per_key differs from the default limit stored in
  /// Redis by the clients already using the same prefix.
  limit_mismatch,
  /// The fleet_semaphore was closed with close().
  closed,
  /// Fewer than fleet_options::replicas replicas acknowledged the grant
  /// within replica_timeout; it was given back.
  not_replicated,
};

/// The category of keysem::redis::error; its name is "keysem.redis".
const boost::system::error_category& redis_category() noexcept;

inline boost::system::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), redis_category()};
}

}  // namespace keysem::redis

template <>
struct boost::system::is_error_code_enum<keysem::redis::error> : std::true_type {};

template <>
struct std::is_error_code_enum<keysem::redis::error> : std::true_type {};

#endif
