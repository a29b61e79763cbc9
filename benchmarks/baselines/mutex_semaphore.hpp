// baselines::mutex_semaphore — the unkeyed asio semaphore a competent asio
// engineer writes in an afternoon, to measure keysem::async_semaphore
// against. Not part of the library.
//
// { std::mutex, permits held, intrusive FIFO of waiting operations }. A
// waiting operation's memory comes from the handler's associated allocator
// (asio's thread-local recycling allocator when it has none, as asio's own
// operations do), it tracks work on the handler's executor, and its
// completion is posted there (never run inside acquire()). Strict FIFO with
// no barging, weighted requests, per-operation cancellation
// (terminal/partial/total) of a waiting acquire, move-only RAII permits.
// Differences from keysem: permits must not outlive the semaphore, there is
// no close() and no deadline, and a cancellation signal must be emitted from
// the handler's executor (as for asio's own operations).
#ifndef KEYSEM_BENCHMARKS_BASELINES_MUTEX_SEMAPHORE_HPP
#define KEYSEM_BENCHMARKS_BASELINES_MUTEX_SEMAPHORE_HPP

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace baselines {

template <class Executor = boost::asio::any_io_executor>
class mutex_semaphore {
 public:
  using executor_type = Executor;

  class permit {
   public:
    permit() noexcept = default;
    permit(permit&& other) noexcept
        : sem_(std::exchange(other.sem_, nullptr)), count_(std::exchange(other.count_, 0)) {}
    permit& operator=(permit&& other) noexcept {
      if (this != &other) {
        release();
        sem_ = std::exchange(other.sem_, nullptr);
        count_ = std::exchange(other.count_, 0);
      }
      return *this;
    }
    ~permit() { release(); }
    void release() noexcept {
      if (auto* sem = std::exchange(sem_, nullptr)) {
        sem->release(std::exchange(count_, 0));
      }
    }
    explicit operator bool() const noexcept { return sem_ != nullptr; }
    std::size_t count() const noexcept { return count_; }

   private:
    friend class mutex_semaphore;
    permit(mutex_semaphore& sem, std::uint32_t count) noexcept : sem_(&sem), count_(count) {}

    mutex_semaphore* sem_ = nullptr;
    std::uint32_t count_ = 0;
  };

  using acquire_signature = void(boost::system::error_code, permit);

  mutex_semaphore(const executor_type& ex, std::size_t permits) : executor_(ex), limit_(checked(permits)) {}

  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  mutex_semaphore(ExecutionContext& context, std::size_t permits)
      : mutex_semaphore(executor_type(context.get_executor()), permits) {}

  mutex_semaphore(const mutex_semaphore&) = delete;
  mutex_semaphore& operator=(const mutex_semaphore&) = delete;

  // Completes every waiting acquire with operation_aborted.
  ~mutex_semaphore() {
    waiter_list aborted;
    {
      std::lock_guard guard(mutex_);
      while (waiter* w = head_) {
        unlink(*w);
        aborted.push_back(*w);
      }
    }
    while (waiter* w = aborted.pop_front()) {
      w->complete(boost::asio::error::operation_aborted, permit());
    }
  }

  executor_type get_executor() const noexcept { return executor_; }
  std::size_t permits() const noexcept { return limit_; }

  std::optional<permit> try_acquire(std::size_t n = 1) {
    if (n == 0 || n > limit_) {
      throw std::invalid_argument("mutex_semaphore::try_acquire: bad n");
    }
    const auto count = static_cast<std::uint32_t>(n);
    std::lock_guard guard(mutex_);
    if (head_ != nullptr || held_ + count > limit_) {
      return std::nullopt;
    }
    held_ += count;
    return permit(*this, count);
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

  std::size_t in_use() const {
    std::lock_guard guard(mutex_);
    return held_;
  }

 private:
  struct waiter {
    using complete_fn = void (*)(waiter*, const boost::system::error_code&, permit&&);
    waiter(mutex_semaphore& s, std::uint32_t c, complete_fn f) : sem(&s), count(c), complete_(f) {}
    void complete(const boost::system::error_code& ec, permit&& p) { complete_(this, ec, std::move(p)); }

    waiter* next = nullptr;
    waiter* prev = nullptr;
    bool queued = false;
    mutex_semaphore* sem;
    std::uint32_t count;
    complete_fn complete_;
  };

  // Waiters taken off the queue, completed after the mutex is released.
  struct waiter_list {
    waiter* head = nullptr;
    waiter* tail = nullptr;
    void push_back(waiter& w) noexcept {
      w.next = nullptr;
      (tail ? tail->next : head) = &w;
      tail = &w;
    }
    waiter* pop_front() noexcept {
      waiter* w = head;
      if (w != nullptr && (head = w->next) == nullptr) {
        tail = nullptr;
      }
      return w;
    }
  };

  template <class Handler>
  class op final : public waiter {
   public:
    using handler_allocator = boost::asio::associated_allocator_t<Handler>;
    using proto_allocator =
        std::conditional_t<std::is_same_v<handler_allocator, std::allocator<void>>,
                           boost::asio::recycling_allocator<void>, handler_allocator>;
    using op_allocator = typename std::allocator_traits<proto_allocator>::template rebind_alloc<op>;

    static op& create(Handler& handler, mutex_semaphore& sem, std::uint32_t count) {
      op_allocator alloc(allocator_of(handler));
      op* o = std::allocator_traits<op_allocator>::allocate(alloc, 1);
      try {
        return *new (o) op(handler, sem, count);
      } catch (...) {
        std::allocator_traits<op_allocator>::deallocate(alloc, o, 1);
        throw;
      }
    }

    void install_cancellation() {
      if (slot_.is_connected()) {
        slot_.template emplace<cancel_handler>(this);
      }
    }

   private:
    struct cancel_handler {
      op* self;
      void operator()(boost::asio::cancellation_type type) const {
        constexpr auto honoured = boost::asio::cancellation_type::terminal |
                                  boost::asio::cancellation_type::partial |
                                  boost::asio::cancellation_type::total;
        if ((type & honoured) != boost::asio::cancellation_type::none) {
          self->sem->cancel(*self);
        }
      }
    };

    // Owns the op between completion and upcall, on the handler's executor.
    class completion {
     public:
      using allocator_type = boost::asio::associated_allocator_t<Handler>;
      allocator_type get_allocator() const noexcept {
        return boost::asio::get_associated_allocator(op_->handler_);
      }
      explicit completion(op& o) noexcept : op_(&o) {}
      completion(completion&& other) noexcept : op_(std::exchange(other.op_, nullptr)) {}
      ~completion() {
        if (op_ != nullptr) {
          free(op_);
        }
      }
      void operator()() { std::exchange(op_, nullptr)->invoke(); }

     private:
      op* op_;
    };

    using tracked_executor = std::decay_t<decltype(boost::asio::prefer(
        std::declval<boost::asio::associated_executor_t<Handler, Executor>>(),
        boost::asio::execution::outstanding_work.tracked))>;

    op(Handler& handler, mutex_semaphore& sem, std::uint32_t count)
        : waiter(sem, count, &do_complete),
          work_(boost::asio::prefer(boost::asio::get_associated_executor(handler, sem.executor_),
                                    boost::asio::execution::outstanding_work.tracked)),
          slot_(boost::asio::get_associated_cancellation_slot(handler)),
          handler_(std::move(handler)) {}

    ~op() {
      if (slot_.is_connected()) {
        slot_.clear();
      }
    }

    static proto_allocator allocator_of(const Handler& handler) {
      if constexpr (std::is_same_v<handler_allocator, std::allocator<void>>) {
        return proto_allocator();
      } else {
        return boost::asio::get_associated_allocator(handler);
      }
    }

    static void do_complete(waiter* base, const boost::system::error_code& ec, permit&& p) {
      auto* self = static_cast<op*>(base);
      self->ec_ = ec;
      self->permit_ = std::move(p);
      boost::asio::post(self->work_, completion(*self));
    }

    // The op is freed before the upcall.
    void invoke() {
      const boost::system::error_code ec = ec_;
      permit p = std::move(permit_);
      Handler handler(std::move(handler_));
      free(this);
      std::move(handler)(ec, std::move(p));
    }

    static void free(op* o) noexcept {
      op_allocator alloc(allocator_of(o->handler_));
      o->~op();
      std::allocator_traits<op_allocator>::deallocate(alloc, o, 1);
    }

    tracked_executor work_;
    boost::asio::cancellation_slot slot_;
    Handler handler_;
    boost::system::error_code ec_;
    permit permit_;
  };

  struct initiate {
    mutex_semaphore* self;
    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->executor_; }

    template <class Handler>
    void operator()(Handler&& handler, std::size_t n) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      self->start(owned, n);
    }
  };

  template <class Handler>
  void start(Handler& handler, std::size_t n) {
    if (n == 0 || n > limit_) {
      return post_result(handler, boost::asio::error::invalid_argument, permit());
    }
    const auto count = static_cast<std::uint32_t>(n);
    {
      std::lock_guard guard(mutex_);
      if (head_ != nullptr || held_ + count > limit_) {
        auto& o = op<Handler>::create(handler, *this, count);
        o.queued = true;
        o.prev = tail_;
        (tail_ ? tail_->next : head_) = &o;
        tail_ = &o;
        o.install_cancellation();
        return;
      }
      held_ += count;
    }
    post_result(handler, {}, permit(*this, count));
  }

  // A completion that carries its result, with the handler's allocator.
  template <class Handler>
  struct immediate_completion {
    using allocator_type = boost::asio::associated_allocator_t<Handler>;
    allocator_type get_allocator() const noexcept { return boost::asio::get_associated_allocator(handler); }
    void operator()() { std::move(handler)(ec, std::move(result)); }

    Handler handler;
    boost::system::error_code ec;
    permit result;
  };

  template <class Handler>
  void post_result(Handler& handler, const boost::system::error_code& ec, permit p) {
    auto ex = boost::asio::get_associated_executor(handler, executor_);
    boost::asio::post(ex, immediate_completion<Handler>{std::move(handler), ec, std::move(p)});
  }

  // Mutex held: takes waiters off the head of the queue while they fit.
  void grant_locked(waiter_list& granted) noexcept {
    while (waiter* w = head_) {
      if (held_ + w->count > limit_) {
        break;
      }
      unlink(*w);
      held_ += w->count;
      granted.push_back(*w);
    }
  }

  void unlink(waiter& w) noexcept {
    (w.prev ? w.prev->next : head_) = w.next;
    (w.next ? w.next->prev : tail_) = w.prev;
    w.next = w.prev = nullptr;
    w.queued = false;
  }

  void complete_granted(waiter_list& granted) {
    while (waiter* w = granted.pop_front()) {
      w->complete({}, permit(*this, w->count));
    }
  }

  void release(std::uint32_t n) noexcept {
    waiter_list granted;
    {
      std::lock_guard guard(mutex_);
      held_ -= n;
      grant_locked(granted);
    }
    complete_granted(granted);
  }

  // On the emitting thread: a queued waiter leaves without a trace; one
  // already granted keeps its permits.
  void cancel(waiter& w) {
    waiter_list granted;
    {
      std::lock_guard guard(mutex_);
      if (!w.queued) {
        return;
      }
      unlink(w);
      grant_locked(granted);  // w may have blocked the head
    }
    w.complete(boost::asio::error::operation_aborted, permit());
    complete_granted(granted);
  }

  static std::uint32_t checked(std::size_t n) {
    if (n == 0 || n > 0x7FFF'FFFF) {
      throw std::invalid_argument("mutex_semaphore: bad permits");
    }
    return static_cast<std::uint32_t>(n);
  }

  executor_type executor_;
  std::uint32_t limit_;
  mutable std::mutex mutex_;
  std::uint32_t held_ = 0;  // guarded by mutex_
  waiter* head_ = nullptr;  // guarded by mutex_
  waiter* tail_ = nullptr;
};

}  // namespace baselines

#endif
