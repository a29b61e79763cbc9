// A caller waiting for a flight's result: the type-erased part the flight
// holds, the list of them, and the typed operation that owns the handler.
#ifndef KEYSEM_DETAIL_FLIGHT_CALLER_HPP
#define KEYSEM_DETAIL_FLIGHT_CALLER_HPP

#include <keysem/detail/handler_work.hpp>
#include <keysem/detail/job.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

namespace keysem::detail {

// What a flight needs of a caller. Linked into its flight's caller list
// under the shard's lock; whoever unlinks it (the result, the caller's own
// cancellation, the single_flight's destruction) completes or destroys it,
// so that decision is made once, under that lock.
template <class T>
class flight_caller {
 public:
  // Posts the completion to the handler's executor; ownership moves with it.
  void complete(std::exception_ptr error, T value) {
    complete_(this, std::move(error), std::move(value));
  }

  // Destroys the handler without invoking it (its context shut down).
  void destroy() noexcept { destroy_(this); }

  bool linked() const noexcept { return linked_; }

 protected:
  using complete_fn = void (*)(flight_caller*, std::exception_ptr, T);
  using destroy_fn = void (*)(flight_caller*) noexcept;

  flight_caller(complete_fn complete, destroy_fn destroy) noexcept
      : complete_(complete), destroy_(destroy) {}
  ~flight_caller() = default;

 private:
  template <class>
  friend class caller_list;

  flight_caller* next_ = nullptr;
  flight_caller* prev_ = nullptr;
  bool linked_ = false;
  complete_fn complete_;
  destroy_fn destroy_;
};

// Intrusive doubly linked list of a flight's callers (shard lock held).
template <class T>
class caller_list {
 public:
  using caller = flight_caller<T>;

  bool empty() const noexcept { return head_ == nullptr; }

  void push_back(caller& c) noexcept {
    c.prev_ = tail_;
    c.next_ = nullptr;
    c.linked_ = true;
    (tail_ != nullptr ? tail_->next_ : head_) = &c;
    tail_ = &c;
  }

  void erase(caller& c) noexcept {
    (c.prev_ != nullptr ? c.prev_->next_ : head_) = c.next_;
    (c.next_ != nullptr ? c.next_->prev_ : tail_) = c.prev_;
    c.next_ = c.prev_ = nullptr;
    c.linked_ = false;
  }

  // Unlinks every caller; each is then the property of whoever took it.
  // The returned chain is walked with next().
  caller* take_all() noexcept {
    caller* first = head_;
    for (caller* c = head_; c != nullptr; c = c->next_) {
      c->linked_ = false;
    }
    head_ = tail_ = nullptr;
    return first;
  }

  // The caller after c in a chain from take_all(); read it before c is
  // completed or destroyed.
  static caller* next(const caller& c) noexcept { return c.next_; }

 private:
  caller* head_ = nullptr;
  caller* tail_ = nullptr;
};

// The typed caller. FlightRef points at its flight (whose leave(caller&) the
// cancellation handler calls) and keeps it alive while the op exists.
template <class T, class FlightRef, class Handler, class IoExecutor>
class caller_op final : public flight_caller<T> {
 public:
  using allocator_type = operation_allocator_t<Handler>;

  // Allocates the op with the handler's associated allocator; the handler
  // moves in. Strong guarantee: on an exception the handler is untouched.
  static caller_op& create(Handler& handler, const IoExecutor& io_executor) {
    op_allocator alloc(operation_allocator(handler));
    caller_op* op = std::allocator_traits<op_allocator>::allocate(alloc, 1);
    try {
      return *new (op) caller_op(handler, io_executor);
    } catch (...) {
      std::allocator_traits<op_allocator>::deallocate(alloc, op, 1);
      throw;
    }
  }

  // Set under the shard lock when the op is linked into its flight.
  void attach(FlightRef flight) noexcept { flight_ = std::move(flight); }

  // Connects the op to the handler's cancellation slot, if it has one. Done
  // before the op is linked (once linked, its result may complete it on
  // another thread at any moment); a signal comes from the handler's
  // executor, never while the initiating function runs.
  void install_cancellation() {
    if (slot_.is_connected()) {
      slot_.template emplace<cancellation_handler>(*this);
    }
  }

  allocator_type get_allocator() const noexcept { return operation_allocator(handler_); }

  static void free(caller_op* op) noexcept {
    op_allocator alloc(op->get_allocator());
    op->~caller_op();
    std::allocator_traits<op_allocator>::deallocate(alloc, op, 1);
  }

 private:
  using base = flight_caller<T>;
  using op_allocator =
      typename std::allocator_traits<allocator_type>::template rebind_alloc<caller_op>;
  using handler_executor = boost::asio::associated_executor_t<Handler, IoExecutor>;
  using tracked_executor = std::decay_t<decltype(boost::asio::prefer(
      std::declval<handler_executor>(), boost::asio::execution::outstanding_work.tracked))>;

  // Runs where the signal is emitted (the handler's executor): the flight
  // decides, under its shard's lock, whether the caller is still waiting.
  class cancellation_handler {
   public:
    explicit cancellation_handler(caller_op& op) noexcept : op_(&op) {}
    void operator()(boost::asio::cancellation_type type) {
      constexpr auto honoured = boost::asio::cancellation_type::terminal |
                                boost::asio::cancellation_type::partial |
                                boost::asio::cancellation_type::total;
      if ((type & honoured) != boost::asio::cancellation_type::none && op_->flight_) {
        op_->flight_->leave(*op_);  // may complete the op: touch nothing after
      }
    }

   private:
    caller_op* op_;
  };

  // Owns the op between its completion and the upcall on the handler's
  // executor. Dropped (that executor's context is gone), it destroys it.
  struct completion_policy {
    using state = caller_op*;
    static void run(caller_op* op) { op->invoke(); }
    static void drop(caller_op* op) noexcept { free(op); }
  };
  using completion = job<completion_policy>;

  caller_op(Handler& handler, const IoExecutor& io_executor)
      : base(&do_complete, &do_destroy),
        work_(boost::asio::prefer(boost::asio::get_associated_executor(handler, io_executor),
                                  boost::asio::execution::outstanding_work.tracked)),
        slot_(boost::asio::get_associated_cancellation_slot(handler)),
        handler_(std::move(handler)) {}

  ~caller_op() {
    // The slot must not keep pointing at a dead op: clear it before the
    // handler (which owns the signal's storage) goes.
    if (slot_.is_connected()) {
      slot_.clear();
    }
  }

  static void do_complete(base* b, std::exception_ptr error, T value) {
    auto& self = static_cast<caller_op&>(*b);
    self.error_ = std::move(error);
    self.value_ = std::move(value);
    post_to(self.work_, self.get_allocator(), completion(&self));
  }

  static void do_destroy(base* b) noexcept { free(static_cast<caller_op*>(b)); }

  // On the handler's executor. The op (and its reference to the flight) is
  // freed before the upcall, so the handler may start another run().
  void invoke() {
    std::exception_ptr error = std::move(error_);
    T value = std::move(value_);
    Handler handler(std::move(handler_));
    free(this);
    std::move(handler)(std::move(error), std::move(value));
  }

  tracked_executor work_;
  boost::asio::cancellation_slot slot_;
  Handler handler_;
  FlightRef flight_;
  std::exception_ptr error_;
  T value_{};
};

}  // namespace keysem::detail

#endif
