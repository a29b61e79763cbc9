// keysem/single_flight.hpp — one execution in flight per key, its result shared by every caller.
#ifndef KEYSEM_SINGLE_FLIGHT_HPP
#define KEYSEM_SINGLE_FLIGHT_HPP

#include <keysem/detail/flight_group.hpp>
#include <keysem/detail/lookup_key.hpp>
#include <keysem/detail/sharding.hpp>
#include <keysem/hash.hpp>
#include <keysem/semaphore_options.hpp>
#include <keysem/single_flight_options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace keysem {

/// At most one execution in flight per key: while `fn` runs for a key,
/// further run() calls on that key join it instead of invoking their own
/// `fn`, and every caller receives the same result (or the same exception).
/// The asio counterpart of Go's `singleflight.Group`, with typed results,
/// per-caller cancellation and cancellation of executions nobody waits for.
///
/// Keys are spread over shards by hash; a shard's table of flights is
/// guarded by a lock held for a lookup and a few pointer moves, never while
/// a handler runs or `fn` is called. State for a key exists only while an
/// execution or its callers exist: a finished key retains no memory.
///
/// Thread safety: every member function may be called concurrently from
/// any thread, except the destructor. Hash, KeyEqual and the key's copy must
/// not call back into the same single_flight (they run under its shard's
/// lock; builds without NDEBUG stop such a call with a message).
///
/// Lifetime: the single_flight may be destroyed while executions run (see
/// the destructor). When the execution context of an execution shuts down
/// (io_context destroyed) before `fn` completes, its coroutine is destroyed
/// by asio and its callers' handlers are destroyed without being invoked,
/// as asio does with every handler pending then.
///
/// @tparam Key      the key type (copyable, owning: std::string_view and
///                  std::span are rejected at compile time)
/// @tparam T        the result type: default-constructible (a caller that
///                  fails receives `T{}`) and copyable (each caller gets a
///                  copy; `std::shared_ptr<const X>` shares one object)
/// @tparam Hash     hasher of keys; keysem::hash<Key> uses XXH3 for strings and integers
/// @tparam KeyEqual key comparison
/// @tparam Executor executions run on strands of it; handlers without an
///                  associated executor complete on it
template <class Key, class T, class Hash = keysem::hash<Key>, class KeyEqual = std::equal_to<Key>,
          class Executor = boost::asio::any_io_executor>
class single_flight {
  static_assert(!detail::is_non_owning_key<Key>::value,
                "keysem: the key type is a non-owning view (std::basic_string_view or "
                "std::span); single_flight stores its keys and a stored view would dangle. "
                "Use an owning key type such as std::string, and look keys up by "
                "std::string_view.");
  static_assert(std::is_default_constructible_v<T>,
                "keysem::single_flight: T must be default-constructible (a caller that fails "
                "receives T{} beside its exception)");
  static_assert(std::is_copy_constructible_v<T>,
                "keysem::single_flight: T must be copyable (every caller gets a copy; use "
                "std::shared_ptr<const X> to share one object)");

 public:
  using key_type = Key;
  using value_type = T;
  using hasher = Hash;
  using key_equal = KeyEqual;
  using executor_type = Executor;
  /// The completion signature of run().
  using run_signature = void(std::exception_ptr, T);

  /// Constructs a single_flight whose executions run on strands of `ex`.
  /// Throws std::invalid_argument if `options.shards` exceeds keysem::max_shards.
  single_flight(const executor_type& ex, single_flight_options options = {},
                const hasher& hash = hasher(), const key_equal& equal = key_equal())
      : executor_(ex),
        impl_(std::make_shared<impl_type>(ex, checked(options), hash, make_table_equal(equal))) {}

  /// Constructs a single_flight that uses `context.get_executor()`.
  // clang-format off
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> &&
             std::is_constructible_v<executor_type, typename ExecutionContext::executor_type>
  single_flight(ExecutionContext& context, single_flight_options options = {},
                const hasher& hash = hasher(), const key_equal& equal = key_equal())
      : single_flight(detail::executor_of<executor_type>(context), options, hash, equal) {}
  // clang-format on

  single_flight(const single_flight&) = delete;
  single_flight& operator=(const single_flight&) = delete;

  /// Completes every caller still waiting with `operation_aborted` (on the
  /// callers' executors, as usual) and cancels every execution still
  /// running (terminal cancellation, posted to its strand); their results
  /// are discarded. Executions finish in the background: the state they
  /// need lives until the last of them ends. Do not destroy a single_flight
  /// whose execution context was destroyed while an execution was
  /// suspended outside it (on an operation of another context): that
  /// execution's cancellation is posted to the dead context.
  ~single_flight() { impl_->stop(); }

  executor_type get_executor() const noexcept { return executor_; }

  /// Runs `fn` for `key`, or joins the execution already in flight for it.
  ///
  /// `fn` is a callable taking no arguments and returning
  /// `boost::asio::awaitable<T>`. If no execution is in flight for `key`
  /// (none, or only ones that were forgotten or abandoned), `fn` is moved
  /// into a new execution: a coroutine spawned on a new strand of
  /// get_executor(), which calls `fn()` and awaits the awaitable it returns.
  /// `fn` stays alive until that awaitable has completed, so a capturing
  /// lambda coroutine is safe. Otherwise the call joins the execution in
  /// flight and `fn` is destroyed uncalled. `fn` is never called inside
  /// run(); an `fn` that throws when called is treated as `fn` throwing.
  ///
  /// Completion signature: `void(std::exception_ptr e, T value)`. Every
  /// caller of one execution receives the same outcome: a copy of the
  /// value `fn` produced (the last caller to be handed it gets it moved)
  /// with a null `e`, or the exception `fn` threw as `e` with `T{}`. A
  /// caller that leaves (below) receives a `boost::system::system_error`
  /// with code `boost::asio::error::operation_aborted` and `T{}`. If
  /// copying T throws for a caller, that caller receives the copy's
  /// exception. The key is free for a new execution as soon as `fn`'s
  /// outcome is known.
  ///
  /// Handler: never invoked from inside run(); always through
  /// `get_associated_executor(handler, get_executor())`, posted there with
  /// the handler's associated allocator preferred. Until it completes, a
  /// caller counts as outstanding work on that executor; a running
  /// execution counts as work on get_executor() (asio's co_spawn). The
  /// waiting caller is allocated with the handler's associated allocator
  /// (asio's recycling allocator when it has none) and freed before the
  /// handler runs.
  ///
  /// Per-operation cancellation: `terminal`, `partial` and `total` are all
  /// supported and mean the same: the caller leaves. It completes with
  /// operation_aborted; the other callers of the execution keep waiting. A
  /// caller that has already been handed the outcome ignores the signal.
  /// When every caller of an execution has left, the execution is
  /// cancelled (terminal cancellation of the coroutine running `fn`) and its
  /// outcome discarded, and the next run() on the key starts a new
  /// execution; with `single_flight_options::cancel_abandoned = false` it
  /// keeps running and the next run() joins it. Emit the signal from the
  /// handler's executor, as for any asio operation.
  ///
  /// Errors: run() throws only if the caller cannot be allocated
  /// (std::bad_alloc) or Hash, KeyEqual or the key's copy throw; nothing
  /// changes then. An execution that cannot be started completes its
  /// callers with the exception.
  ///
  /// Counters: `started` or `joined` when called; `cancelled` when a caller
  /// leaves; `abandoned`, `exceptions` as described in single_flight_stats.
  template <class Fn, BOOST_ASIO_COMPLETION_TOKEN_FOR(run_signature) CompletionToken>
  auto run(key_type key, Fn&& fn, CompletionToken&& token) {
    static_assert(std::is_invocable_r_v<boost::asio::awaitable<T>, std::decay_t<Fn>&>,
                  "keysem::single_flight::run: fn must be callable with no arguments and "
                  "return boost::asio::awaitable<T>");
    return boost::asio::async_initiate<CompletionToken, run_signature>(
        initiate_run{this}, token, std::move(key), std::decay_t<Fn>(std::forward<Fn>(fn)));
  }

  /// `co_await flights.run(key, fn)`: run() awaited with
  /// `boost::asio::use_awaitable`. Returns the shared value; throws the
  /// exception `fn` threw, or `boost::system::system_error`
  /// (operation_aborted) when the awaiting coroutine is cancelled. With GCC
  /// 12, build the awaitable before the co_await when `fn` or the key is a
  /// temporary with a destructor: that compiler destroys such temporaries of a
  /// co_await expression twice.
  template <class Fn>
  boost::asio::awaitable<T> run(key_type key, Fn&& fn) {
    return run(std::move(key), std::forward<Fn>(fn), boost::asio::use_awaitable);
  }

  /// Later run() calls on `key` start a new execution even while the
  /// current one runs; the current one's callers still get its outcome
  /// (and may still abandon it). No effect when nothing is in flight.
  void forget(const key_type& key) { impl_->forget(key); }

  /// Callers waiting on the execution in flight for `key` (0 if none; an
  /// execution left by every caller with cancel_abandoned = false counts 0).
  /// Exact at the moment of the call.
  // clang-format off
  template <class K>
    requires detail::lookup_key_for<K, Key, Hash, KeyEqual>
  std::size_t callers(const K& key) const {
    // clang-format on
    return impl_->callers(key);
  }

  /// Keys with an execution in flight that a run() would join.
  std::size_t in_flight() const { return impl_->in_flight(); }

  /// The counters (see single_flight_stats); reads each shard under its lock.
  single_flight_stats stats() const { return impl_->stats(); }

 private:
  using table_equal = detail::table_equal_t<Key, KeyEqual>;
  using impl_type = detail::flight_group<Key, T, Hash, table_equal, Executor>;

  struct initiate_run {
    single_flight* self;

    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->get_executor(); }

    template <class Handler, class Fn>
    void operator()(Handler&& handler, key_type key, Fn&& fn) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      self->impl_->start(std::move(key), std::forward<Fn>(fn), owned);
    }
  };

  static single_flight_options checked(single_flight_options options) {
    if (options.shards > max_shards) {
      throw std::invalid_argument(
          "keysem::single_flight: single_flight_options::shards must not exceed "
          "keysem::max_shards");
    }
    return options;
  }

  static table_equal make_table_equal(const key_equal& equal) {
    if constexpr (std::is_same_v<table_equal, key_equal>) {
      return equal;
    } else {
      return table_equal();
    }
  }

  executor_type executor_;
  std::shared_ptr<impl_type> impl_;  // flights keep it alive after destruction
};

}  // namespace keysem

#endif
