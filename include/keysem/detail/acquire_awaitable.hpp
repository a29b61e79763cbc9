// The token-less acquire: free permits without suspending, else the
// asynchronous operation awaited with use_awaitable. Shared by the keyed and
// the unkeyed semaphore.
#ifndef KEYSEM_DETAIL_ACQUIRE_AWAITABLE_HPP
#define KEYSEM_DETAIL_ACQUIRE_AWAITABLE_HPP

#include <keysem/detail/initiate_acquire.hpp>
#include <keysem/detail/key_word.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/permit.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace keysem::detail {

[[noreturn]] inline void throw_acquire_error(const boost::system::error_code& ec, const char* what) {
  throw boost::system::system_error(ec, what);
}

// initiation(handler, key, n, deadline) is the public class's initiation
// object; `what` names the operation in the exceptions it throws.
template <class Impl, class Key, class Initiation>
boost::asio::awaitable<basic_permit<Key>> acquire_awaitable(Impl& impl, Initiation initiation, Key key,
                                                            std::size_t n, deadline_spec deadline,
                                                            const char* what) {
  using signature = void(boost::system::error_code, basic_permit<Key>);
  auto cancellation = co_await boost::asio::this_coro::cancellation_state;
  if (co_await boost::asio::this_coro::throw_if_cancelled() &&
      cancellation.cancelled() != boost::asio::cancellation_type::none) {
    impl.count_early(boost::asio::error::operation_aborted);
    throw_acquire_error(boost::asio::error::operation_aborted, what);
  }
  if (const auto ec = early_error(impl, key, n, false)) {
    throw_acquire_error(ec, what);
  }
  const auto count = static_cast<std::uint32_t>(n);
  const auto [first, shard] = impl.admit(key, count, admission_policy::kind::first_try);
  if (first.verdict == key_word::verdict::granted) {
    co_return permit_access::adopt(*first.state, count);
  }
  if (first.verdict == key_word::verdict::invalid) {
    throw_acquire_error(boost::asio::error::invalid_argument, what);
  }
  co_return co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, signature>(
      std::move(initiation), boost::asio::use_awaitable, std::move(key), n, deadline);
}

}  // namespace keysem::detail

#endif
