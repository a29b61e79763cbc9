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
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>

namespace keysem::detail {

[[noreturn]] inline void throw_acquire_error(const boost::system::error_code& ec, const char* what) {
  throw boost::system::system_error(ec, what);
}

// The token-less acquire's synchronous part: the coroutine's cancellation
// state, the early errors, then free permits taken without suspending.
// Throws the operation's errors; std::nullopt when the acquire must wait.
template <class Impl, class Key>
std::optional<basic_permit<Key>> acquire_first_try(Impl& impl, boost::asio::cancellation_state cancellation,
                                                   bool throw_if_cancelled, const Key& key, std::size_t n,
                                                   const char* what) {
  if (throw_if_cancelled && cancellation.cancelled() != boost::asio::cancellation_type::none) {
    impl.count_early(boost::asio::error::operation_aborted);
    throw_acquire_error(boost::asio::error::operation_aborted, what);
  }
  if (const auto ec = early_error(impl, key, n, false)) {
    throw_acquire_error(ec, what);
  }
  const auto count = static_cast<std::uint32_t>(n);
  const auto [first, shard] = impl.admit(key, count, admission_policy::kind::first_try);
  if (first.verdict == key_word::verdict::granted) {
    return permit_access::adopt(*first.state, count);
  }
  if (first.verdict == key_word::verdict::invalid) {
    throw_acquire_error(boost::asio::error::invalid_argument, what);
  }
  return std::nullopt;
}

// initiation(handler, key, n, deadline) is the public class's initiation
// object; `what` names the operation in the exceptions it throws.
template <class Impl, class Key, class Initiation>
boost::asio::awaitable<basic_permit<Key>> acquire_awaitable(Impl& impl, Initiation initiation, Key key,
                                                            std::size_t n, deadline_spec deadline,
                                                            const char* what) {
  using signature = void(boost::system::error_code, basic_permit<Key>);
  const auto cancellation = co_await boost::asio::this_coro::cancellation_state;
  const bool throw_if_cancelled = co_await boost::asio::this_coro::throw_if_cancelled();
  auto taken = acquire_first_try(impl, cancellation, throw_if_cancelled, key, n, what);
  if (taken) {
    co_return std::move(*taken);
  }
  co_return co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, signature>(
      std::move(initiation), boost::asio::use_awaitable, std::move(key), n, deadline);
}

}  // namespace keysem::detail

#endif
