// What an acquire does when it starts: its checks (written once for every
// form), the immediate grant, or the op queued on the strand.
#ifndef KEYSEM_DETAIL_INITIATE_ACQUIRE_HPP
#define KEYSEM_DETAIL_INITIATE_ACQUIRE_HPP

#include <keysem/detail/acquire_op.hpp>
#include <keysem/detail/handler_work.hpp>
#include <keysem/detail/key_word.hpp>
#include <keysem/detail/waiter_op.hpp>
#include <keysem/error.hpp>
#include <keysem/permit.hpp>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

namespace keysem::detail {

// When a timed acquire stops waiting, resolved when the operation is
// launched (a deferred acquire_for starts its clock then).
struct deadline_spec {
  using clock = std::chrono::steady_clock;
  enum class kind { none, after, at } how = kind::none;
  clock::duration timeout{};
  clock::time_point at{};

  clock::time_point resolve() const noexcept {
    switch (how) {
      case kind::after:
        return clock::now() + timeout;
      case kind::at:
        return at;
      default:
        return waiter_op::no_deadline;
    }
  }

  // Timeouts beyond a century mean "no deadline": converting larger ones to
  // steady_clock's nanoseconds, or adding them to now(), would overflow.
  template <class Rep, class Period>
  static deadline_spec after_(std::chrono::duration<Rep, Period> timeout) {
    constexpr std::chrono::hours forever(24 * 365 * 100);
    if (timeout > forever) {
      return {};
    }
    const auto bounded = timeout < std::chrono::duration<Rep, Period>::zero()
                             ? clock::duration::zero()
                             : std::chrono::ceil<clock::duration>(timeout);
    return {kind::after, bounded, {}};
  }

  // Another clock's deadline becomes the time left on it, now.
  template <class Clock, class Duration>
  static deadline_spec at_(std::chrono::time_point<Clock, Duration> deadline) {
    if constexpr (std::is_same_v<Clock, clock>) {
      return {kind::at, {}, std::chrono::time_point_cast<clock::duration>(deadline)};
    } else {
      return after_(deadline - Clock::now());
    }
  }
};

// The outcome decided before any key's word is looked at, in the contract's
// order: a count no key could grant; then a stopped semaphore, whose error
// yields to a count above the key's own limit; then, for operations that
// must post, a dead context. Counted on the core when it is an outcome.
template <class Impl, class K>
boost::system::error_code early_error_slow(Impl& impl, const K& key, std::size_t n,
                                           bool needs_context);

// Inline: the common case (a valid count, an open semaphore, a live
// context) is three loads and three compares on every acquire.
template <class Impl, class K>
inline boost::system::error_code early_error(Impl& impl, const K& key, std::size_t n,
                                             bool needs_context) {
  if (n - 1 < impl.max_request() && !impl.is_stopped() && !(needs_context && impl.is_detached()))
      [[likely]] {
    return {};
  }
  return early_error_slow(impl, key, n, needs_context);
}

template <class Impl, class K>
boost::system::error_code early_error_slow(Impl& impl, const K& key, std::size_t n,
                                           bool needs_context) {
  boost::system::error_code ec;
  if (n == 0 || n > impl.max_request()) {
    ec = boost::asio::error::invalid_argument;
  } else if (impl.is_stopped()) {  // inline; stop_error() is a call into src/
    const auto stopped = impl.stop_error();
    ec = n > impl.usage(key).limit ? boost::asio::error::invalid_argument : stopped;
  } else if (needs_context && impl.is_detached()) {
    ec = n > impl.usage(key).limit ? boost::system::error_code(boost::asio::error::invalid_argument)
                                : boost::system::error_code(boost::asio::error::operation_aborted);
  }
  if (ec) {
    impl.count_early(ec);
  }
  return ec;
}

// Gives back a waiter's registration that no op took: a staged one leaves
// its key's stage (its reserved permits) and the total's queue count.
template <class Key>
void give_back_registration(key_state<Key>& state, key_state_base* gate, std::uint32_t count) noexcept {
  if (gate != nullptr) {
    state.leave_stage(count);
    gate->cancel_waiter_reservation();
  } else {
    state.cancel_waiter_reservation();
  }
}

// An acquire already registered as a waiter by the token-less path's first
// try (the word counts it; staged: its key reserved its permits and the
// total counts it), until the initiation of the asynchronous operation it
// continues as takes it. One not taken (the await threw before its
// initiation ran) is given back.
template <class Key>
class registration {
 public:
  registration(key_state<Key>& state, key_state_base* gate, std::uint32_t count,
               const deadline_spec& deadline) noexcept
      : state_(&state), gate_(gate), count_(count), deadline_(deadline) {}
  // It lives in the coroutine's frame, where the initiation finds it.
  registration(const registration&) = delete;
  registration& operator=(const registration&) = delete;
  ~registration() {
    if (state_ != nullptr) {
      give_back_registration(*state_, gate_, count_);
    }
  }

  // The initiation takes it over: from here the op (or wait()'s own
  // clean-up) owns the registration.
  key_state<Key>& take() noexcept { return *std::exchange(state_, nullptr); }
  key_state_base* gate() const noexcept { return gate_; }
  std::uint32_t count() const noexcept { return count_; }
  const deadline_spec& deadline() const noexcept { return deadline_; }

 private:
  key_state<Key>* state_ = nullptr;
  key_state_base* gate_ = nullptr;
  std::uint32_t count_ = 0;
  deadline_spec deadline_;
};

// try_acquire for the public classes: the permit, or std::nullopt when the
// key is busy or the semaphore closed; a count no request could get calls
// throw_invalid (which throws).
template <class Permit, class Impl, class K>
std::optional<Permit> try_acquire_now(Impl& impl, const K& key, std::size_t n,
                                      void (*throw_invalid)()) {
  if (const auto ec = early_error(impl, key, n, false)) {
    if (ec == boost::asio::error::invalid_argument) {
      throw_invalid();
    }
    return std::nullopt;  // closed
  }
  const auto count = static_cast<std::uint32_t>(n);
  const auto [result, shard] = impl.admit(key, count, admission_policy::kind::try_acquire);
  switch (result.verdict) {
    case key_word::verdict::granted:
      return permit_access::adopt(*result.state, count);
    case key_word::verdict::invalid:
      throw_invalid();
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

// Starts one acquire for the public class: its one call per initiation.
template <class Impl, class Executor, class Key>
class acquire_starter {
 public:
  using permit = basic_permit<Key>;

  acquire_starter(Impl& impl, const Executor& executor) noexcept
      : impl_(&impl), executor_(&executor) {}

  template <class Handler>
  void start(Handler& handler, Key key, std::size_t n, const deadline_spec& deadline) {
    if (const auto ec = early_error(*impl_, key, n, true)) {
      return complete_early(handler, ec);
    }
    const auto count = static_cast<std::uint32_t>(n);
    const auto [result, shard] =
        impl_->admit(std::move(key), count, admission_policy::kind::acquire);
    switch (result.verdict) {
      case key_word::verdict::granted:
        return post_result(handler, {}, permit_access::adopt(*result.state, count));
      case key_word::verdict::queued:
        // The clock is read only by an acquire that waits.
        return wait(handler, *result.state, count, nullptr, deadline.resolve());
      case key_word::verdict::staged:  // its key's permits are reserved; the total is not free
        return wait(handler, *result.state, count, impl_->total_state(), deadline.resolve());
      case key_word::verdict::queue_full:
        return post_result(handler, error::queue_full, permit());
      default:
        return post_result(handler, boost::asio::error::invalid_argument, permit());
    }
  }

  // Continues an acquire the token-less first try registered as a waiter:
  // no second admission (and no second hash of the key).
  template <class Handler>
  void resume(Handler& handler, registration<Key>& registered) {
    key_state_base* const gate = registered.gate();
    const std::uint32_t count = registered.count();
    const auto deadline = registered.deadline().resolve();
    key_state<Key>& state = registered.take();
    wait(handler, state, count, gate, deadline);
  }

 private:
  // Once the semaphore's execution context is gone, a handler with an
  // executor of its own still completes there; one that would complete on
  // the dead context's executor cannot be completed at all, which the
  // initiating call reports by throwing (the handler is destroyed unrun).
  template <class Handler>
  void complete_early(Handler& handler, const boost::system::error_code& ec) {
    if (impl_->is_detached()) {
      const auto ex = boost::asio::get_associated_executor(handler, *executor_);
      if constexpr (std::is_same_v<std::decay_t<decltype(ex)>, Executor>) {
        if (ex == *executor_) {
          throw boost::system::system_error(
              ec, "keysem: acquire: the semaphore's execution context is gone");
        }
      }
    }
    post_result(handler, ec, permit());
  }

  // The word counts this acquire as a waiter: queue an op on the strand. A
  // staged acquire (gate: the total's state) has its key's permits reserved
  // and is registered as a waiter at the total: its op queues there.
  template <class Handler>
  void wait(Handler& handler, key_state<Key>& state, std::uint32_t count, key_state_base* gate,
            deadline_spec::clock::time_point deadline) {
    using op_type = acquire_op<Key, Handler, Executor>;
    key_state_base& registered = gate != nullptr ? *gate : state;
    op_type* op = nullptr;
    try {
      op = &op_type::create(handler, state, count, *executor_);
    } catch (...) {
      give_back_registration(state, gate, count);
      throw;
    }
    op->set_deadline(deadline);
    if (gate != nullptr) {
      op->stage_at(*gate);
    }
    // Before the enqueue job: a signal emitted after initiation then always
    // reaches the strand after the op is queued.
    try {
      op->install_cancellation();
    } catch (...) {
      op->destroy();  // a staged op gives its key's reservation back
      registered.cancel_waiter_reservation();
      throw;
    }
    // An enqueue job that cannot be posted destroys the op and gives back its
    // place in the word as it is dropped.
    registered.shard().post_node(op->enqueue_job(), true);
  }

  // Completes without waiting; still through the handler's executor, never inline.
  template <class Handler>
  void post_result(Handler& handler, const boost::system::error_code& ec, permit p) {
    auto ex = boost::asio::get_associated_executor(handler, *executor_);
    auto alloc = operation_allocator(handler);
    post_to(ex, alloc, [h = std::move(handler), ec, p = std::move(p)]() mutable {
      std::move(h)(ec, std::move(p));
    });
  }

  Impl* impl_;
  const Executor* executor_;
};

}  // namespace keysem::detail

#endif
