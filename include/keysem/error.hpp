// keysem/error.hpp — the error codes keysem reports.
#ifndef KEYSEM_ERROR_HPP
#define KEYSEM_ERROR_HPP

#include <boost/system/error_code.hpp>

#include <system_error>
#include <type_traits>

namespace keysem {

/// Errors an acquire operation completes with, besides asio's own
/// `boost::asio::error::operation_aborted` (cancelled, or the semaphore was
/// destroyed) and `boost::asio::error::invalid_argument` (a bad permit count).
enum class error {
  /// The semaphore was closed with `close()` before the permits were granted.
  closed = 1,
  /// The key's queue of waiting acquires is full: the operation would have
  /// had to wait, and as many acquires as a key can hold are already waiting
  /// on it. Nothing was changed.
  queue_full = 2,
};

/// The category of `keysem::error`; its name is "keysem".
const boost::system::error_category& keysem_category() noexcept;

/// Makes `ec == keysem::error::closed` and `error_code ec = keysem::error::closed` work.
inline boost::system::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), keysem_category()};
}

}  // namespace keysem

template <>
struct boost::system::is_error_code_enum<keysem::error> : std::true_type {};

template <>
struct std::is_error_code_enum<keysem::error> : std::true_type {};

#endif
