// baselines::channel_counting_semaphore — the unkeyed semaphore asio users
// hand-roll today from asio::experimental::concurrent_channel<void(error_code)>
// with capacity N. Not part of the library.
//
// acquire = async_send (completes when the channel has buffer space, i.e.
// fewer than N permits are held), release = try_receive, try_acquire =
// try_send. The channel queues blocked senders FIFO and supports
// per-operation cancellation. Only n = 1 (a message is one permit); permits
// must not outlive the semaphore. A cancelled acquire completes with
// operation_aborted (the channel says channel_cancelled; it is translated).
#ifndef KEYSEM_BENCHMARKS_BASELINES_CHANNEL_COUNTING_SEMAPHORE_HPP
#define KEYSEM_BENCHMARKS_BASELINES_CHANNEL_COUNTING_SEMAPHORE_HPP

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associator.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace baselines {

namespace detail {

// Turns the channel's void(error_code) into acquire's void(error_code, permit),
// keeping the user's executor, allocator and cancellation slot (associator below).
template <class Handler, class Semaphore>
struct counting_send_handler {
  Handler handler;
  Semaphore* sem;

  void operator()(boost::system::error_code ec) {
    if (ec) {
      std::move(handler)(boost::asio::error::operation_aborted, typename Semaphore::permit());
    } else {
      std::move(handler)(ec, typename Semaphore::permit(*sem));
    }
  }
};

}  // namespace detail

template <class Executor = boost::asio::any_io_executor>
class channel_counting_semaphore {
 public:
  using executor_type = Executor;
  using channel_type =
      boost::asio::experimental::concurrent_channel<Executor, void(boost::system::error_code)>;

  class permit {
   public:
    permit() noexcept = default;
    permit(permit&& other) noexcept : sem_(std::exchange(other.sem_, nullptr)) {}
    permit& operator=(permit&& other) noexcept {
      if (this != &other) {
        release();
        sem_ = std::exchange(other.sem_, nullptr);
      }
      return *this;
    }
    ~permit() { release(); }
    void release() noexcept {
      if (auto* sem = std::exchange(sem_, nullptr)) {
        sem->chan_.try_receive([](boost::system::error_code) {});
      }
    }
    explicit operator bool() const noexcept { return sem_ != nullptr; }
    std::size_t count() const noexcept { return sem_ != nullptr ? 1 : 0; }

   private:
    template <class, class>
    friend struct detail::counting_send_handler;
    friend class channel_counting_semaphore;
    explicit permit(channel_counting_semaphore& sem) noexcept : sem_(&sem) {}

    channel_counting_semaphore* sem_ = nullptr;
  };

  using acquire_signature = void(boost::system::error_code, permit);

  channel_counting_semaphore(const executor_type& ex, std::size_t permits)
      : executor_(ex), chan_(ex, checked(permits)) {}

  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  channel_counting_semaphore(ExecutionContext& context, std::size_t permits)
      : channel_counting_semaphore(executor_type(context.get_executor()), permits) {}

  channel_counting_semaphore(const channel_counting_semaphore&) = delete;
  channel_counting_semaphore& operator=(const channel_counting_semaphore&) = delete;

  executor_type get_executor() const noexcept { return executor_; }

  std::optional<permit> try_acquire(std::size_t n = 1) {
    if (n != 1) {
      throw std::invalid_argument("channel_counting_semaphore: only n == 1 is supported");
    }
    if (chan_.try_send(boost::system::error_code())) {
      return permit(*this);
    }
    return std::nullopt;
  }

  template <class Token = boost::asio::deferred_t>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<Token>>)
  auto acquire(Token&& token = Token()) {
    return acquire(1, std::forward<Token>(token));
  }

  template <class Token = boost::asio::deferred_t>
  auto acquire(std::size_t n, Token&& token = Token()) {
    return boost::asio::async_initiate<Token, acquire_signature>(initiate{this}, token, std::size_t{n});
  }

 private:
  template <class, class>
  friend struct detail::counting_send_handler;

  struct initiate {
    channel_counting_semaphore* self;
    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->executor_; }

    template <class Handler>
    void operator()(Handler&& handler, std::size_t n) const {
      using send_handler = detail::counting_send_handler<std::decay_t<Handler>, channel_counting_semaphore>;
      if (n != 1) {
        auto ex = boost::asio::get_associated_executor(handler, self->executor_);
        boost::asio::post(ex, [h = std::forward<Handler>(handler)]() mutable {
          std::move(h)(boost::asio::error::invalid_argument, permit());
        });
        return;
      }
      self->chan_.async_send(boost::system::error_code(), send_handler{std::forward<Handler>(handler), self});
    }
  };

  static std::size_t checked(std::size_t permits) {
    if (permits == 0) {
      throw std::invalid_argument("channel_counting_semaphore: permits must be positive");
    }
    return permits;
  }

  executor_type executor_;
  channel_type chan_;
};

}  // namespace baselines

// The send handler is the user's handler as far as asio is concerned.
template <template <class, class> class Associator, class Handler, class Semaphore, class DefaultCandidate>
struct boost::asio::associator<Associator, baselines::detail::counting_send_handler<Handler, Semaphore>,
                               DefaultCandidate> {
  using type = typename Associator<Handler, DefaultCandidate>::type;
  static type get(const baselines::detail::counting_send_handler<Handler, Semaphore>& h) noexcept {
    return Associator<Handler, DefaultCandidate>::get(h.handler);
  }
  static auto get(const baselines::detail::counting_send_handler<Handler, Semaphore>& h,
                  const DefaultCandidate& c) noexcept {
    return Associator<Handler, DefaultCandidate>::get(h.handler, c);
  }
};

#endif
