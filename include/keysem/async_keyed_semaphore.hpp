// keysem/async_keyed_semaphore.hpp — at most N at a time, per key, awaited the asio way.
#ifndef KEYSEM_ASYNC_KEYED_SEMAPHORE_HPP
#define KEYSEM_ASYNC_KEYED_SEMAPHORE_HPP

#include <keysem/detail/acquire_awaitable.hpp>
#include <keysem/detail/acquire_op.hpp>
#include <keysem/detail/initiate_acquire.hpp>
#include <keysem/detail/handler_work.hpp>
#include <keysem/detail/key_word.hpp>
#include <keysem/detail/lookup_key.hpp>
#include <keysem/detail/semaphore_impl.hpp>
#include <keysem/error.hpp>
#include <keysem/hash.hpp>
#include <keysem/permit.hpp>
#include <keysem/semaphore_options.hpp>
#include <keysem/semaphore_stats.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace keysem {

/// At most `limit(key)` permits held at a time on each key: `permits_per_key()`,
/// or the key's own limit set with set_limit().
///
/// Every key has its own count and its own FIFO queue of waiting acquire
/// operations. State for a key is created when it is first used and
/// reclaimed as soon as it has no holders and no waiters, so memory follows
/// the live keys, not every key ever seen.
///
/// Keys are spread over shards by hash. A shard's key table is guarded by a
/// lock held only for a lookup and one atomic compare-and-swap; waiting
/// acquires, grants, cancellations and close are serialised by the shard's
/// strand. Taking and releasing free permits never waits for the strand.
///
/// Thread safety: every member function may be called concurrently from
/// any thread, except the destructor. Permits may be released on any thread,
/// also while the semaphore or its execution context is being destroyed on
/// another. Hash, KeyEqual and the key's copy and move must not call back
/// into the same semaphore: they run while its shard's lock is held (builds
/// without NDEBUG stop such a call with a message). If they throw, the
/// exception leaves the member that called them; keys are never hashed or
/// compared on release.
///
/// Lifetime: permits may outlive the semaphore and its execution context.
/// When the execution context shuts down, queued acquires are destroyed
/// without being invoked (as asio does with every pending handler). A
/// semaphore that outlives its context completes later acquires that have
/// an executor of their own with operation_aborted there (see acquire());
/// close(), try_acquire(), the counters and the destructor keep working.
///
/// @tparam Key      the key type (copyable, owning: views such as
///                  std::string_view or std::span are rejected at compile time)
/// @tparam Hash     hasher of keys; keysem::hash<Key> uses XXH3 for strings and integers
/// @tparam KeyEqual key comparison
/// @tparam Executor the I/O executor; it runs the shards' strands and any
///                  completion handler that has no associated executor
template <class Key, class Hash = keysem::hash<Key>, class KeyEqual = std::equal_to<Key>,
          class Executor = boost::asio::any_io_executor>
class async_keyed_semaphore {
  static_assert(!detail::is_non_owning_key<Key>::value,
                "keysem: the key type is a non-owning view (std::basic_string_view or "
                "std::span); the semaphore stores its keys and a stored view would dangle. "
                "Use an owning key type such as std::string, and look keys up by "
                "std::string_view.");

 public:
  using key_type = Key;
  using hasher = Hash;
  using key_equal = KeyEqual;
  using executor_type = Executor;
  /// The RAII permit; see permit.hpp.
  using permit = basic_permit<Key>;
  /// The completion signature of acquire().
  using acquire_signature = void(boost::system::error_code, permit);

  /// Largest supported permits_per_key().
  static constexpr std::size_t max_permits_per_key = detail::key_word::max_permits;

  /// Constructs a semaphore allowing `permits_per_key` permits on each key.
  /// Throws std::invalid_argument if permits_per_key is 0 or greater than
  /// max_permits_per_key.
  async_keyed_semaphore(const executor_type& ex, std::size_t permits_per_key,
                        semaphore_options options = {}, const hasher& hash = hasher(),
                        const key_equal& equal = key_equal())
      : executor_(ex),
        impl_(new impl_type(ex, checked_limit(permits_per_key), checked_shards(options.shards),
                            options.max_waiters_per_key, checked_total(options.total_limit), hash,
                            make_table_equal(equal))) {}

  /// Constructs a semaphore that uses `context.get_executor()`.
  // clang-format off
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> &&
             std::is_constructible_v<executor_type, typename ExecutionContext::executor_type>
  async_keyed_semaphore(ExecutionContext& context, std::size_t permits_per_key,
                        semaphore_options options = {}, const hasher& hash = hasher(),
                        const key_equal& equal = key_equal())
      : async_keyed_semaphore(detail::executor_of<executor_type>(context), permits_per_key, options,
                              hash, equal) {}
  // clang-format on

  async_keyed_semaphore(const async_keyed_semaphore&) = delete;
  async_keyed_semaphore& operator=(const async_keyed_semaphore&) = delete;

  /// Completes every queued acquire with boost::asio::error::operation_aborted
  /// (on the handlers' executors, as usual). Outstanding permits stay valid;
  /// releasing them later is safe and frees the last of the semaphore's memory.
  ~async_keyed_semaphore() { impl_->shut_down(); }

  executor_type get_executor() const noexcept { return executor_; }

  std::size_t permits_per_key() const noexcept { return impl_->limit(); }

  /// `co_await sem.acquire(key[, n])`: acquires inside a coroutine.
  ///
  /// The default form (no completion token) returns a
  /// `boost::asio::awaitable<permit>`. When `n` permits are free and nobody
  /// waits on the key, they are taken without suspending the coroutine (a
  /// coroutine that does not suspend invokes no handler, so nothing is
  /// posted); otherwise it awaits the asynchronous operation below directly,
  /// as asio awaits any asynchronous operation (it resumes on the
  /// coroutine's executor, and the coroutine's cancellation slot applies),
  /// and that operation queues it without looking the key up again.
  /// Semantics are those of the asynchronous operation: FIFO, no barging,
  /// the same cancellation. Errors an acquire can know at once (a
  /// bad count, closed, a full queue) are thrown without suspending; all
  /// errors are thrown as
  /// `boost::system::system_error` with the operation's error codes, and a
  /// coroutine whose cancellation state is already cancelled throws
  /// `operation_aborted` (as asio does for any `co_await`ed operation).
  ///
  /// Nothing happens until the awaitable is awaited. It can be combined with
  /// awaitable operators: `co_await (sem.acquire(key) || timer.async_wait(use_awaitable))`.
  boost::asio::awaitable<permit> acquire(key_type key, std::size_t n = 1) {
    // A coroutine of its own rather than a call into the shared one: on the
    // hottest token-less path the key then moves once, into this frame.
    const auto cancellation = co_await boost::asio::this_coro::cancellation_state;
    const bool throw_if_cancelled = co_await boost::asio::this_coro::throw_if_cancelled();
    const auto first = detail::acquire_first_try(*impl_, cancellation, throw_if_cancelled, key, n,
                                                 acquire_what);
    const auto count = static_cast<std::uint32_t>(n);
    if (first.granted) {
      co_return detail::permit_access::adopt(*first.state, count);
    }
    detail::registration<Key> waiting(*first.state, first.gate, count, deadline_spec{});
    co_return co_await detail::await_registered(initiate_acquire{this}, waiting);
  }

  /// Acquires one permit on `key`: see the weighted overload.
  // clang-format off
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<CompletionToken>>)
  auto acquire(key_type key, CompletionToken&& token) {
    // clang-format on
    return acquire(std::move(key), 1, std::forward<CompletionToken>(token));
  }

  /// Acquires `n` permits on `key`, asynchronously.
  ///
  /// Completion signature: `void(boost::system::error_code ec, permit p)`.
  /// On success `ec` is clear and `p` holds `n` permits on `key`; on error
  /// `p` is empty. (Without a token, see the awaitable overload above;
  /// pass `boost::asio::deferred` for a deferred operation.)
  ///
  /// Order: strictly FIFO per key. A request is granted once every request
  /// queued before it on the same key has been granted or has left, and its
  /// `n` permits are free: a large request at the head blocks smaller ones
  /// behind it (head-of-line). While anyone waits on a key, try_acquire on
  /// that key fails, so waiters are never overtaken.
  ///
  /// Handler: never invoked from inside acquire(), even when permits are
  /// free; always through `get_associated_executor(handler, get_executor())`.
  /// Until it completes, a waiting operation counts as outstanding work on
  /// that executor and on get_executor() (the shard's strand, which grants
  /// it, runs there): the semaphore's execution context must be running for
  /// a waiting acquire to complete, whatever executor the handler runs on.
  /// The waiting operation is allocated with the handler's associated
  /// allocator (asio's recycling allocator when it has none) and freed
  /// before the handler runs. A completion is posted to the handler's
  /// executor with that allocator preferred through the
  /// execution::allocator property, so only an executor that supports the
  /// property uses it (io_context::executor_type and strands over it do;
  /// any_io_executor does not). Nothing else comes from the handler's
  /// allocator: a key's state, the key tables and the jobs on a shard's
  /// strand use the global heap or asio's own recycled memory (see
  /// docs/reference.md, "Memory"). If the
  /// handler is destroyed without being invoked (its execution context was
  /// destroyed), a permit it was to receive is released.
  ///
  /// Errors:
  /// - boost::asio::error::invalid_argument: `n` is 0 or greater than
  ///   limit(key); the operation never waits. Also a waiting acquire whose
  ///   `n` a lowered limit (set_limit) makes impossible.
  /// - keysem::error::closed: close() was called before the permits were granted.
  /// - keysem::error::queue_full: the operation would have to wait and
  ///   `semaphore_options::max_waiters_per_key` acquires already wait on the
  ///   key (at most 2^29 - 1, what a key can count); nothing changed.
  /// - boost::asio::error::operation_aborted: the operation was cancelled, or
  ///   the semaphore was destroyed while it waited, or the semaphore's
  ///   execution context is gone (see below).
  ///
  /// Exceptions: if the operation cannot be allocated or its cancellation
  /// handler installed, acquire() throws (std::bad_alloc) and changes no
  /// count. Once the semaphore's execution context has been destroyed, a
  /// handler with an associated executor of its own completes there with
  /// operation_aborted; one that would complete on the semaphore's executor
  /// cannot complete at all: acquire() throws boost::system::system_error
  /// with the error it would have completed with (operation_aborted, or
  /// closed or invalid_argument when those apply) and destroys the handler
  /// without invoking it.
  ///
  /// Per-operation cancellation: `terminal`, `partial` and `total` are all
  /// supported. A waiting acquire that is cancelled completes with
  /// operation_aborted, leaves the queue and changes no count: it has no
  /// side effects. Once the permits are granted the cancellation is ignored
  /// and the handler receives them; the slot is cleared before the handler
  /// runs. If the job that takes a cancelled operation out of the queue
  /// cannot be allocated, the signal's emit() throws std::bad_alloc and the
  /// operation waits on as if no signal had been emitted. keysem's side of the race is thread-safe (one compare-and-swap
  /// decides it), but asio's cancellation slots are not: emit the signal
  /// from the executor the handler runs on, as for any asio operation. In a
  /// `parallel_group` or an awaitable operator on a multi-threaded context,
  /// bind the acquire and its siblings to one strand.
  ///
  /// The key is copied (or moved) into the operation: the caller's object may
  /// be destroyed as soon as acquire() returns.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire(key_type key, std::size_t n, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        initiate_acquire{this}, token, std::move(key),
        std::size_t{n});  // by value: deferred keeps it
  }

  /// Acquires `n` permits on `key`, waiting at most `timeout`: acquire() with
  /// a deadline. If the permits are not granted before the deadline, the
  /// operation completes with boost::asio::error::timed_out and an empty
  /// permit, leaving no trace (as a cancellation does). A grant and the
  /// deadline racing are decided once, on the shard's strand: the handler
  /// gets the permits or timed_out, never both, never neither. The deadline
  /// bounds waiting only: permits that are free at once are granted whatever
  /// the timeout (0 or negative included). The clock (std::chrono::
  /// steady_clock) starts when the operation is launched: for a deferred
  /// operation, when it is started, not when it is created.
  ///
  /// Cost: an acquire granted at once pays nothing for its deadline; a
  /// waiting one takes an entry in its shard's deadline heap, and each shard
  /// keeps at most one timer armed (for its earliest deadline), cancelled as
  /// soon as no timed acquire waits, so a granted or failed timed acquire
  /// leaves no armed timer holding the executor's work.
  ///
  /// Everything else (signature, executor, allocator, cancellation, other
  /// errors, counters: `timed_out` in stats()) is as for acquire().
  /// Without a token, returns `boost::asio::awaitable<permit>` like acquire(key, n).
  // clang-format off
  template <class Rep, class Period,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire_for(key_type key, std::size_t n, std::chrono::duration<Rep, Period> timeout,
                   CompletionToken&& token) {
    // clang-format on
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        initiate_acquire{this}, token, std::move(key), std::size_t{n}, after(timeout));
  }

  /// acquire_for() with one permit.
  // clang-format off
  template <class Rep, class Period,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<CompletionToken>>)
  auto acquire_for(key_type key, std::chrono::duration<Rep, Period> timeout,
                   CompletionToken&& token) {
    // clang-format on
    return acquire_for(std::move(key), 1, timeout, std::forward<CompletionToken>(token));
  }

  /// `co_await sem.acquire_for(key[, n], timeout)`.
  template <class Rep, class Period>
  boost::asio::awaitable<permit> acquire_for(key_type key, std::size_t n,
                                             std::chrono::duration<Rep, Period> timeout) {
    return acquire_awaitable(std::move(key), n, after(timeout));
  }

  template <class Rep, class Period>
  boost::asio::awaitable<permit> acquire_for(key_type key,
                                             std::chrono::duration<Rep, Period> timeout) {
    return acquire_awaitable(std::move(key), 1, after(timeout));
  }

  /// acquire_for() with an absolute deadline. A deadline of another clock
  /// than std::chrono::steady_clock is turned into the time left on it when
  /// acquire_until() is called (the steady_clock countdown then starts when
  /// the operation is launched); a steady_clock deadline is used as is.
  /// Deadlines more than a century away mean no deadline.
  // clang-format off
  template <class Clock, class Duration,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
  auto acquire_until(key_type key, std::size_t n,
                     std::chrono::time_point<Clock, Duration> deadline, CompletionToken&& token) {
    // clang-format on
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        initiate_acquire{this}, token, std::move(key), std::size_t{n}, at(deadline));
  }

  // clang-format off
  template <class Clock, class Duration,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(acquire_signature) CompletionToken>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<CompletionToken>>)
  auto acquire_until(key_type key, std::chrono::time_point<Clock, Duration> deadline,
                     CompletionToken&& token) {
    // clang-format on
    return acquire_until(std::move(key), 1, deadline, std::forward<CompletionToken>(token));
  }

  template <class Clock, class Duration>
  boost::asio::awaitable<permit> acquire_until(key_type key, std::size_t n,
                                               std::chrono::time_point<Clock, Duration> deadline) {
    return acquire_awaitable(std::move(key), n, at(deadline));
  }

  template <class Clock, class Duration>
  boost::asio::awaitable<permit> acquire_until(key_type key,
                                               std::chrono::time_point<Clock, Duration> deadline) {
    return acquire_awaitable(std::move(key), 1, at(deadline));
  }

  /// Takes `n` permits on `key` now if they are free and nobody is waiting
  /// on the key; otherwise returns std::nullopt. Never waits, never posts.
  /// Returns std::nullopt after close().
  /// Throws std::invalid_argument if `n` is 0 or greater than limit(key).
  /// Heterogeneous: with a transparent hasher (keysem::hash<std::string> is
  /// one) a std::string key can be tried by std::string_view or const char*.
  // clang-format off
  template <class K>
    requires detail::lookup_key_for<K, Key, Hash, KeyEqual>
  std::optional<permit> try_acquire(const K& key, std::size_t n = 1) {
    // clang-format on
    return detail::try_acquire_now<permit>(*impl_, key, n, &throw_invalid_count);
  }

  std::optional<permit> try_acquire(const key_type& key, std::size_t n = 1) {
    return try_acquire<key_type>(key, n);
  }

  /// Completes every queued acquire with keysem::error::closed (through
  /// their executors, never inline); later acquires complete with
  /// keysem::error::closed and later try_acquire calls return std::nullopt.
  /// Permits already held stay valid and release normally. Idempotent.
  void close() { impl_->close(); }

  bool is_closed() const noexcept { return impl_->is_closed(); }

  /// Permits currently held on `key`, exact at the moment of the call.
  // clang-format off
  template <class K>
    requires detail::lookup_key_for<K, Key, Hash, KeyEqual>
  std::size_t in_use(const K& key) const {
    // clang-format on
    return impl_->usage(key).in_use;
  }

  /// limit(key) - in_use(key), or 0 when a lowered limit left more permits
  /// held than it allows: what a try_acquire could take when nobody waits
  /// on the key.
  // clang-format off
  template <class K>
    requires detail::lookup_key_for<K, Key, Hash, KeyEqual>
  std::size_t available(const K& key) const {
    // clang-format on
    const key_usage usage = impl_->usage(key);
    return usage.in_use < usage.limit ? usage.limit - usage.in_use : 0;
  }

  /// The limit in force for `key`: permits_per_key(), or the key's override
  /// set with set_limit(). Exact at the moment of the call.
  // clang-format off
  template <class K>
    requires detail::lookup_key_for<K, Key, Hash, KeyEqual>
  std::size_t limit(const K& key) const {
    // clang-format on
    return impl_->usage(key).limit;
  }

  /// Overrides the limit of `key` with `n` until reset_limit(key), whether or
  /// not the key is live (an override costs a table entry of the key's
  /// shard; keys without one cost nothing when idle). On a live key it takes
  /// effect at once: raising it grants waiters that now fit, in FIFO order,
  /// through the shard's strand as a release does; lowering it revokes
  /// nothing (holders keep their permits, and nothing more is granted until
  /// `in_use(key) + n' <= limit(key)` for the next request's n'), and a
  /// waiting acquire whose n exceeds the new limit completes with
  /// boost::asio::error::invalid_argument. Throws std::invalid_argument if
  /// `n` is 0 or greater than max_permits_per_key; whatever Hash, KeyEqual
  /// or the key's copy throw. Thread-safe.
  void set_limit(const key_type& key, std::size_t n) {
    if (n == 0 || n > max_permits_per_key) {
      throw std::invalid_argument(
          "keysem::async_keyed_semaphore::set_limit: n must be between 1 and max_permits_per_key");
    }
    impl_->set_limit(key, static_cast<std::uint32_t>(n));
  }

  /// Removes the override of `key`: its limit is permits_per_key() again,
  /// at once on a live key, with the effects described for set_limit(). No
  /// effect on a key without an override. Thread-safe.
  void reset_limit(const key_type& key) {
    impl_->set_limit(key, 0);
  }

  /// Acquire operations on `key` that have not been granted yet: queued,
  /// or cancelled and not yet taken out of the queue by the shard's strand.
  // clang-format off
  template <class K>
    requires detail::lookup_key_for<K, Key, Hash, KeyEqual>
  std::size_t waiting(const K& key) const {
    // clang-format on
    return impl_->usage(key).waiting;
  }

  /// Keys that currently have state: holders, waiters, or a pending drain.
  /// A key with only a limit override is not live.
  std::size_t key_count() const noexcept { return impl_->key_count(); }

  /// `semaphore_options::total_limit`: `keysem::unbounded` when none was set.
  std::size_t total_limit() const noexcept {
    const std::uint32_t total = impl_->total_limit();
    return total != 0 ? total : unbounded;
  }

  /// Permits granted to callers, summed over keys (with or without a total
  /// limit). Like in_use(key), a snapshot: exact once nothing is in flight.
  std::size_t total_in_use() const {
    return impl_->total_limit() != 0 ? impl_->total_usage().in_use : impl_->stats().in_use;
  }

  /// Requests whose key admitted them and that wait for the total limit
  /// (0 without one). They also count in waiting(key).
  std::size_t total_waiting() const noexcept { return impl_->total_usage().waiting; }

  /// The usage counters (see semaphore_stats). Reads each shard under its
  /// lock, so it costs O(live keys); the hot paths pay nothing for it: the
  /// counters are per shard, written under the shard's lock or by its
  /// strand. Thread-safe.
  semaphore_stats stats() const { return impl_->stats(); }

  /// Calls `f(const key_type& key, keysem::key_usage usage)` for every live
  /// key (holders, waiters or a pending drain), shard by shard. Each shard's
  /// keys are copied under its lock and `f` runs after the lock is released,
  /// so `f` may call back into the semaphore; a key that becomes live or
  /// idle meanwhile may or may not be visited. Exceptions from `f` (or from
  /// copying a key) propagate. Thread-safe.
  template <class F>
  void for_each_key(F&& f) const {
    impl_->for_each_key(f);
  }

 private:
  using table_equal = detail::table_equal_t<Key, KeyEqual>;
  using impl_type = detail::semaphore_impl<Key, Hash, table_equal>;

  using request = detail::admission_policy::kind;
  using deadline_spec = detail::deadline_spec;

  template <class Rep, class Period>
  static deadline_spec after(std::chrono::duration<Rep, Period> timeout) {
    return deadline_spec::after_(timeout);
  }
  template <class Clock, class Duration>
  static deadline_spec at(std::chrono::time_point<Clock, Duration> deadline) {
    return deadline_spec::at_(deadline);
  }

  struct initiate_acquire {
    async_keyed_semaphore* self;

    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->get_executor(); }

    template <class Handler>
    void operator()(Handler&& handler, key_type key, std::size_t n,
                    deadline_spec deadline = {}) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      detail::acquire_starter<impl_type, Executor, Key>(*self->impl_, self->executor_)
          .start(owned, std::move(key), n, deadline);
    }

    // The token-less acquire, registered as a waiter by its first try.
    template <class Handler>
    void operator()(Handler&& handler, detail::registration<Key>* registered) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      detail::acquire_starter<impl_type, Executor, Key>(*self->impl_, self->executor_)
          .resume(owned, *registered);
    }
  };

  // The token-less forms (detail/acquire_awaitable.hpp).
  static constexpr const char* acquire_what = "keysem::async_keyed_semaphore::acquire";

  // The key by reference: it moves once more, into the coroutine's frame.
  boost::asio::awaitable<permit> acquire_awaitable(key_type&& key, std::size_t n,
                                                    const deadline_spec& deadline) {
    return detail::acquire_awaitable(*impl_, initiate_acquire{this}, std::move(key), n, deadline,
                                     acquire_what);
  }

  [[noreturn]] static void throw_invalid_count() {
    throw std::invalid_argument(
        "keysem::async_keyed_semaphore::try_acquire: n must be between 1 and limit(key)");
  }

  static table_equal make_table_equal(const key_equal& equal) {
    if constexpr (std::is_same_v<table_equal, key_equal>) {
      return equal;
    } else {
      return table_equal();  // std::equal_to<> for std::equal_to<Key>: stateless
    }
  }

  static std::size_t checked_shards(std::size_t shards) {
    if (shards > max_shards) {
      throw std::invalid_argument(
          "keysem::async_keyed_semaphore: semaphore_options::shards must not exceed "
          "keysem::max_shards");
    }
    return shards;
  }

  // 0 inside: no total limit.
  static std::uint32_t checked_total(std::size_t total) {
    if (total == unbounded) {
      return 0;
    }
    if (total == 0 || total > max_permits_per_key) {
      throw std::invalid_argument(
          "keysem::async_keyed_semaphore: semaphore_options::total_limit must be between 1 and "
          "max_permits_per_key, or keysem::unbounded");
    }
    return static_cast<std::uint32_t>(total);
  }

  static std::uint32_t checked_limit(std::size_t permits) {
    if (permits == 0 || permits > max_permits_per_key) {
      throw std::invalid_argument(
          "keysem::async_keyed_semaphore: permits_per_key must be between 1 and "
          "max_permits_per_key");
    }
    return static_cast<std::uint32_t>(permits);
  }

  executor_type executor_;
  impl_type* impl_;  // deleted by its last shard reference, see core.hpp
};

/// The common case: string keys (lookups by std::string_view work too).
using keyed_semaphore = async_keyed_semaphore<std::string>;

}  // namespace keysem

#endif
