// keysem/async_semaphore.hpp — a counting semaphore for asio: at most N at a time.
#ifndef KEYSEM_ASYNC_SEMAPHORE_HPP
#define KEYSEM_ASYNC_SEMAPHORE_HPP

#include <keysem/detail/acquire_awaitable.hpp>
#include <keysem/detail/acquire_op.hpp>
#include <keysem/detail/initiate_acquire.hpp>
#include <keysem/detail/key_word.hpp>
#include <keysem/detail/unkeyed_impl.hpp>
#include <keysem/error.hpp>
#include <keysem/permit.hpp>
#include <keysem/semaphore_stats.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace keysem {

/// At most `permits()` permits held at a time: the counting semaphore asio
/// lacks, with the same contract as `async_keyed_semaphore` for one key.
///
/// One atomic word holds the count of held permits and of waiting acquires;
/// taking and releasing free permits is a compare-and-swap on it, with no
/// lock and no lookup. Waiting acquires wait in one FIFO queue, served by a
/// strand on the semaphore's executor, which also serialises grants,
/// cancellations, deadlines and close.
///
/// Everything `async_keyed_semaphore` documents for one key holds here:
/// strict FIFO with no barging and weighted head-of-line; handlers never
/// invoked inline, always through their associated executor and allocator,
/// with outstanding work tracked while they wait; per-operation
/// cancellation (terminal, partial, total) decided exactly once against the
/// grant; close(); destruction; the execution context's shutdown; permits
/// outliving the semaphore and its context.
///
/// Thread safety: every member function may be called concurrently from any
/// thread, except the destructor. Permits may be released on any thread.
///
/// @tparam Executor the I/O executor; it runs the strand and any completion
///                  handler that has no associated executor
template <class Executor = boost::asio::any_io_executor>
class async_semaphore {
 public:
  using executor_type = Executor;
  /// The RAII permit: move-only; `count()`, `release()`, `explicit operator
  /// bool`. Destroying a non-empty permit gives its permits back (to the
  /// oldest waiters first). It may be released on any thread and may outlive
  /// the semaphore and its execution context.
  using permit = basic_permit<detail::no_key>;
  /// The completion signature of acquire().
  using acquire_signature = void(boost::system::error_code, permit);

  /// Largest supported permits().
  static constexpr std::size_t max_permits = detail::key_word::max_permits;

  /// Constructs a semaphore with `permits` permits. Throws
  /// std::invalid_argument if `permits` is 0 or greater than max_permits.
  async_semaphore(const executor_type& ex, std::size_t permits)
      : executor_(ex), impl_(new detail::unkeyed_impl(ex, checked_permits(permits))) {}

  /// Constructs a semaphore that uses `context.get_executor()`.
  // clang-format off
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> &&
             std::is_constructible_v<executor_type, typename ExecutionContext::executor_type>
  async_semaphore(ExecutionContext& context, std::size_t permits)
      : async_semaphore(detail::executor_of<executor_type>(context), permits) {}
  // clang-format on

  async_semaphore(const async_semaphore&) = delete;
  async_semaphore& operator=(const async_semaphore&) = delete;

  /// Completes every queued acquire with boost::asio::error::operation_aborted
  /// (on the handlers' executors). Outstanding permits stay valid; releasing
  /// them later is safe and frees the last of the semaphore's memory.
  ~async_semaphore() {
    impl_->shut_down();
    impl_->release_owner();
  }

  executor_type get_executor() const noexcept { return executor_; }

  /// The number of permits the semaphore was built with.
  std::size_t permits() const noexcept { return impl_->limit(); }

  /// `co_await sem.acquire([n])`: returns a `boost::asio::awaitable<permit>`.
  /// Free permits (and nobody waiting) are taken without suspending;
  /// otherwise it awaits the operation of acquire(n, token) directly (it
  /// resumes on the coroutine's executor, and the coroutine's cancellation
  /// slot applies). Errors are thrown as
  /// boost::system::system_error with the error codes of acquire(n, token).
  boost::asio::awaitable<permit> acquire(std::size_t n = 1) {
    return acquire_awaitable(n, {});
  }

  /// Acquires one permit: see acquire(n, token).
  // clang-format off
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<CompletionToken>>)
  auto acquire(CompletionToken&& token) {
    // clang-format on
    return acquire(1, std::forward<CompletionToken>(token));
  }

  /// Acquires `n` permits, asynchronously.
  ///
  /// Completion signature: `void(boost::system::error_code ec, permit p)`;
  /// on success `p` holds `n` permits, on error it is empty.
  ///
  /// Order: strictly FIFO; a request at the head that does not fit blocks
  /// the ones behind it; try_acquire() fails while anyone waits.
  ///
  /// Handler: never invoked from inside acquire(); always through
  /// `get_associated_executor(handler, get_executor())`, with the handler's
  /// associated allocator for the waiting operation. A waiting acquire
  /// counts as outstanding work on the handler's executor and on
  /// get_executor() (whose strand grants it).
  ///
  /// Errors:
  /// - boost::asio::error::invalid_argument: `n` is 0 or greater than permits().
  /// - keysem::error::closed: close() was called before the permits were granted.
  /// - boost::asio::error::operation_aborted: cancelled, or the semaphore was
  ///   destroyed while the operation waited, or its execution context is gone.
  ///
  /// Exceptions: std::bad_alloc if the operation cannot be allocated (no
  /// count changes); boost::system::system_error once the execution context
  /// is gone and the handler has no executor of its own (as for
  /// async_keyed_semaphore::acquire).
  ///
  /// Per-operation cancellation: terminal, partial and total. A cancelled
  /// waiting acquire completes with operation_aborted and changes no count;
  /// once granted, cancellation is ignored. Emit the signal from the
  /// handler's executor, as for any asio operation.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire(std::size_t n, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        initiate_acquire{this}, token, detail::no_key{}, std::size_t{n});
  }

  /// acquire(n, token) waiting at most `timeout`: completes with
  /// boost::asio::error::timed_out and an empty permit if the permits are not
  /// granted before the deadline (decided exactly once against a grant, on
  /// the strand). Free permits are granted whatever the timeout. The clock
  /// (steady_clock) starts when the operation is launched. A granted or
  /// failed timed acquire leaves no armed timer behind. Without a token,
  /// returns `boost::asio::awaitable<permit>`.
  // clang-format off
  template <class Rep, class Period,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire_for(std::size_t n, std::chrono::duration<Rep, Period> timeout,
                   CompletionToken&& token) {
    // clang-format on
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        initiate_acquire{this}, token, detail::no_key{}, std::size_t{n},
        detail::deadline_spec::after_(timeout));
  }

  /// acquire_for() of one permit.
  // clang-format off
  template <class Rep, class Period,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<CompletionToken>>)
  auto acquire_for(std::chrono::duration<Rep, Period> timeout, CompletionToken&& token) {
    // clang-format on
    return acquire_for(1, timeout, std::forward<CompletionToken>(token));
  }

  template <class Rep, class Period>
  boost::asio::awaitable<permit> acquire_for(std::size_t n,
                                             std::chrono::duration<Rep, Period> timeout) {
    return acquire_awaitable(n, detail::deadline_spec::after_(timeout));
  }

  template <class Rep, class Period>
  boost::asio::awaitable<permit> acquire_for(std::chrono::duration<Rep, Period> timeout) {
    return acquire_awaitable(1, detail::deadline_spec::after_(timeout));
  }

  /// acquire_for() with an absolute deadline. Clocks other than
  /// steady_clock are converted to the time left on them when called.
  // clang-format off
  template <class Clock, class Duration,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire_until(std::size_t n, std::chrono::time_point<Clock, Duration> deadline,
                     CompletionToken&& token) {
    // clang-format on
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        initiate_acquire{this}, token, detail::no_key{}, std::size_t{n},
        detail::deadline_spec::at_(deadline));
  }

  /// acquire_until() of one permit.
  // clang-format off
  template <class Clock, class Duration,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<CompletionToken>>)
  auto acquire_until(std::chrono::time_point<Clock, Duration> deadline, CompletionToken&& token) {
    // clang-format on
    return acquire_until(1, deadline, std::forward<CompletionToken>(token));
  }

  template <class Clock, class Duration>
  boost::asio::awaitable<permit> acquire_until(std::size_t n,
                                               std::chrono::time_point<Clock, Duration> deadline) {
    return acquire_awaitable(n, detail::deadline_spec::at_(deadline));
  }

  template <class Clock, class Duration>
  boost::asio::awaitable<permit> acquire_until(std::chrono::time_point<Clock, Duration> deadline) {
    return acquire_awaitable(1, detail::deadline_spec::at_(deadline));
  }

  /// Takes `n` permits now if they are free and nobody waits; never waits.
  /// Returns std::nullopt when they are busy or the semaphore is closed.
  /// Throws std::invalid_argument if `n` is 0 or greater than permits().
  std::optional<permit> try_acquire(std::size_t n = 1) {
    return detail::try_acquire_now<permit>(*impl_, detail::no_key{}, n, &throw_invalid_count);
  }

  /// Completes every waiting acquire with keysem::error::closed; later
  /// acquires complete with it, try_acquire() returns std::nullopt.
  /// Held permits stay valid. Idempotent.
  void close() { impl_->close(); }

  bool is_closed() const noexcept { return impl_->is_closed(); }

  /// Permits held right now.
  std::size_t in_use() const noexcept { return impl_->usage().in_use; }

  /// permits() - in_use() (what a try_acquire could take if nobody waits).
  std::size_t available() const noexcept {
    const key_usage usage = impl_->usage();
    return usage.in_use < usage.limit ? usage.limit - usage.in_use : 0;
  }

  /// Acquires waiting right now (queued, or cancelled and not yet out of the queue).
  std::size_t waiting() const noexcept { return impl_->usage().waiting; }

  /// The outcome counters of keysem::semaphore_stats (`keys` is always 0).
  semaphore_stats stats() const { return impl_->stats(); }

 private:
  struct initiate_acquire {
    async_semaphore* self;

    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->get_executor(); }

    template <class Handler>
    void operator()(Handler&& handler, detail::no_key key, std::size_t n,
                    detail::deadline_spec deadline = {}) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      detail::acquire_starter<detail::unkeyed_impl, Executor, detail::no_key>(*self->impl_,
                                                                             self->executor_)
          .start(owned, key, n, deadline);
    }

    // The token-less acquire, registered as a waiter by its first try.
    template <class Handler>
    void operator()(Handler&& handler, detail::registration<detail::no_key>* registered) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      detail::acquire_starter<detail::unkeyed_impl, Executor, detail::no_key>(*self->impl_,
                                                                             self->executor_)
          .resume(owned, *registered);
    }
  };

  boost::asio::awaitable<permit> acquire_awaitable(std::size_t n, detail::deadline_spec deadline) {
    return detail::acquire_awaitable(*impl_, initiate_acquire{this}, detail::no_key{}, n, deadline,
                                     "keysem::async_semaphore::acquire");
  }

  [[noreturn]] static void throw_invalid_count() {
    throw std::invalid_argument(
        "keysem::async_semaphore::try_acquire: n must be between 1 and permits()");
  }

  static std::uint32_t checked_permits(std::size_t permits) {
    if (permits == 0 || permits > max_permits) {
      throw std::invalid_argument(
          "keysem::async_semaphore: permits must be between 1 and max_permits");
    }
    return static_cast<std::uint32_t>(permits);
  }

  executor_type executor_;
  detail::unkeyed_impl* impl_;  // deleted by its shard's last reference, see core.hpp
};

}  // namespace keysem

#endif
