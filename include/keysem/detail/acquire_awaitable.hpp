// The token-less acquire: free permits without suspending, else the
// asynchronous operation awaited directly. Shared by the keyed and
// the unkeyed semaphore.
#ifndef KEYSEM_DETAIL_ACQUIRE_AWAITABLE_HPP
#define KEYSEM_DETAIL_ACQUIRE_AWAITABLE_HPP

#include <keysem/detail/initiate_acquire.hpp>
#include <keysem/detail/key_word.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/error.hpp>
#include <keysem/permit.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace keysem::detail {

[[noreturn]] inline void throw_acquire_error(const boost::system::error_code& ec, const char* what) {
  throw boost::system::system_error(ec, what);
}

// What the token-less acquire's synchronous part did: took the permits
// (granted), or registered the acquire as a waiter of `state` (and, staged,
// of the total's `gate`) for the asynchronous operation to queue. Two
// pointers and a flag: the immediate path returns it in registers.
template <class Key>
struct first_try {
  key_state<Key>* state;
  key_state_base* gate;
  bool granted;
};

// The token-less acquire's synchronous part: the coroutine's cancellation
// state and the early errors, then one admission that either takes free
// permits (without suspending) or registers the acquire as a waiter, so
// that the operation it continues as does not look the key up again.
// Throws the operation's errors (a registration it made is given back).
template <class Impl, class Key>
first_try<Key> acquire_first_try(Impl& impl, boost::asio::cancellation_state cancellation,
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
  const auto [result, shard] = impl.admit(key, count, admission_policy::kind::acquire);
  switch (result.verdict) {
    case key_word::verdict::granted:
      return {result.state, nullptr, true};
    case key_word::verdict::queued:
    case key_word::verdict::staged:  // its key's permits are reserved; the total is not free
      break;
    case key_word::verdict::queue_full:
      throw_acquire_error(error::queue_full, what);
    default:
      throw_acquire_error(boost::asio::error::invalid_argument, what);
  }
  key_state_base* const gate =
      result.verdict == key_word::verdict::staged ? impl.total_state() : nullptr;
  if (impl.is_detached()) {
    // The context that would run the wait is gone.
    give_back_registration(*result.state, gate, count);
    impl.count_early(boost::asio::error::operation_aborted);
    throw_acquire_error(boost::asio::error::operation_aborted, what);
  }
  return {result.state, gate, false};
}

// The wait that follows a registered first try: the asynchronous operation
// as a deferred operation, which an awaitable coroutine awaits directly
// (asio's `is_async_operation` path): its handler is the coroutine's own
// thread of execution, so the coroutine's cancellation slot and executor
// apply, and no second coroutine frame is made, as use_awaitable would.
// initiation(handler, registration*) is the public class's initiation object.
template <class Key, class Initiation>
auto await_registered(Initiation initiation, registration<Key>& waiting) {
  using signature = void(boost::system::error_code, basic_permit<Key>);
  return boost::asio::async_initiate<const boost::asio::deferred_t&, signature>(
      std::move(initiation), boost::asio::deferred, &waiting);
}

// `what` names the operation in the exceptions it throws.
template <class Impl, class Key, class Initiation>
boost::asio::awaitable<basic_permit<Key>> acquire_awaitable(Impl& impl, Initiation initiation, Key key,
                                                            std::size_t n, deadline_spec deadline,
                                                            const char* what) {
  const auto cancellation = co_await boost::asio::this_coro::cancellation_state;
  const bool throw_if_cancelled = co_await boost::asio::this_coro::throw_if_cancelled();
  const auto first = acquire_first_try(impl, cancellation, throw_if_cancelled, key, n, what);
  const auto count = static_cast<std::uint32_t>(n);
  if (first.granted) {
    co_return permit_access::adopt(*first.state, count);
  }
  registration<Key> waiting(*first.state, first.gate, count, deadline);
  co_return co_await await_registered(std::move(initiation), waiting);
}

}  // namespace keysem::detail

#endif
