// A shard's serialiser: an executor that runs the functions given to it one
// at a time, in the order they were given, on an inner executor.
#ifndef KEYSEM_DETAIL_SERIAL_EXECUTOR_HPP
#define KEYSEM_DETAIL_SERIAL_EXECUTOR_HPP

#include <boost/asio/execution/allocator.hpp>
#include <boost/asio/execution/blocking.hpp>
#include <boost/asio/execution/execute.hpp>
#include <boost/asio/execution/executor.hpp>
#include <boost/asio/execution/relationship.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/require.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

namespace keysem::detail {

// A queued function, type-erased. invoke(node, true) runs the function;
// invoke(node, false) destroys it unrun (a keysem job then runs its drop).
// A node the serialiser allocated (serial_function) is freed first; a node
// embedded in its owner (embedded_job.hpp) stays the owner's.
struct serial_node {
  using invoke_fn = void (*)(serial_node*, bool run);
  explicit serial_node(invoke_fn fn) noexcept : invoke(fn) {}
  serial_node* next = nullptr;
  invoke_fn invoke;
};

// The state every copy of one serial_executor shares, and every runner it
// posts: a lock-free queue and whether a runner owns it. Compiled in
// src/serial_executor.cpp.
//
// incoming_ is a stack (newest first) of pushed nodes in its upper bits, and
// in bit 0 the runner bit: set while a runner is posted or running. The push
// that finds the word at zero sets the bit, makes its node the first batch
// and must start a runner. A runner pass runs its batch (ready_, oldest
// first), then takes everything pushed meanwhile (one exchange: no ABA),
// reversed into push order, as the next batch, and posts a new runner for it
// behind the handlers already queued: asio's strand batches the same way.
// The runner clears the bit only by a compare-and-swap from "nothing pushed,
// running": a push that lands first makes it fail, so no node is ever left
// without a runner.
class serial_queue {
 public:
  serial_queue() noexcept = default;
  serial_queue(const serial_queue&) = delete;
  serial_queue& operator=(const serial_queue&) = delete;
  ~serial_queue();

  // Any thread. True when the queue was idle: the caller must start a runner.
  bool push(serial_node* node) noexcept;

  // Any thread. Pushes the node only if the queue is idle, as the first
  // batch of a runner the caller must then be (or start); false otherwise,
  // and the node is untouched.
  bool push_if_idle(serial_node* node) noexcept {
    std::uintptr_t idle = 0;
    if (!incoming_.compare_exchange_strong(idle, running_bit, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
      return false;
    }
    node->next = nullptr;
    ready_ = node;
    return true;
  }

  // Runner only. Runs the current batch in order, at most `budget` of its
  // nodes, then takes the next batch. Returns true when there is one (the
  // runner must post itself again), false once the queue went idle. A
  // function that throws leaves the queue running: the runner then calls
  // settle().
  bool run(std::size_t budget);

  // Runner only: takes the next batch if the current one is done. True when
  // nodes remain, false once idle.
  bool settle() noexcept;

  // Runner only, when the runner is destroyed unrun (its context shut down,
  // or posting it failed): destroys every queued function unrun, then goes
  // idle.
  void drop_all() noexcept;

  // True when this thread is inside a function this queue runs.
  bool running_in_this_thread() const noexcept;

 private:
  static constexpr std::uintptr_t running_bit = 1;

  // Moves what was pushed into ready_, or goes idle. False once idle.
  bool refill_or_idle() noexcept;

  std::atomic<std::uintptr_t> incoming_{0};
  serial_node* ready_ = nullptr;  // runner only, oldest first
};

// The node holding a function, with the memory of the allocator it came from.
template <class Function, class Allocator>
class serial_function final : public serial_node {
 public:
  using allocator_type =
      typename std::allocator_traits<Allocator>::template rebind_alloc<serial_function>;

  template <class F>
  static serial_node* create(F&& f, const Allocator& alloc) {
    allocator_type a(alloc);
    serial_function* node = std::allocator_traits<allocator_type>::allocate(a, 1);
    try {
      std::allocator_traits<allocator_type>::construct(a, node, std::forward<F>(f), alloc);
    } catch (...) {
      std::allocator_traits<allocator_type>::deallocate(a, node, 1);
      throw;
    }
    return node;
  }

  template <class F>
  serial_function(F&& f, const Allocator& alloc)
      : serial_node(&invoke_node), function_(std::forward<F>(f)), alloc_(alloc) {}

 private:
  // As asio's operations do: the memory goes back before the call, so the
  // function may queue another of its kind into the same cache slot.
  static void invoke_node(serial_node* base, bool run) {
    auto* self = static_cast<serial_function*>(base);
    allocator_type a(self->alloc_);
    Function function(std::move(self->function_));
    std::allocator_traits<allocator_type>::destroy(a, self);
    std::allocator_traits<allocator_type>::deallocate(a, self, 1);
    if (run) {
      std::move(function)();
    }
  }

  Function function_;
  Allocator alloc_;
};

// The most functions one runner pass runs before it posts itself again, so
// that a long batch cannot keep its thread from the other handlers either.
inline constexpr std::size_t serial_batch = 64;

// Posted to the inner executor while the queue has work. Destroyed unrun, it
// destroys every queued function unrun.
template <class Inner>
class serial_runner {
 public:
  serial_runner(std::shared_ptr<serial_queue> queue, const Inner& inner) noexcept
      : queue_(std::move(queue)), inner_(inner) {}
  serial_runner(serial_runner&&) noexcept = default;
  serial_runner& operator=(serial_runner&&) = delete;
  ~serial_runner() {
    if (queue_) {
      queue_->drop_all();
    }
  }

  void operator()() {
    std::shared_ptr<serial_queue> queue = std::move(queue_);
    bool more = true;
    try {
      more = queue->run(serial_batch);
    } catch (...) {
      // As asio's strand: the rest runs later, the exception goes on.
      if (queue->settle()) {
        post(std::move(queue), inner_);
      }
      throw;
    }
    if (more) {
      post(std::move(queue), inner_);
    }
  }

  // Posts a runner for the queue's next batch.
  static void post(std::shared_ptr<serial_queue> queue, const Inner& inner) {
    namespace ex = boost::asio::execution;
    ex::execute(boost::asio::prefer(boost::asio::require(inner, ex::blocking.never),
                                    ex::allocator(boost::asio::recycling_allocator<void>())),
                serial_runner(std::move(queue), inner));
  }

 private:
  std::shared_ptr<serial_queue> queue_;
  Inner inner_;
};

// The executor. Copies share one queue and compare equal. Functions run on
// the inner executor, one at a time, in the order execute() was called
// (calls from different threads are ordered as their pushes were); each
// function's effects happen before the next one starts.
//
// execute() with blocking.never (the inner executor's) never runs the
// function inside the call. With blocking.possibly, a call that finds the
// queue idle starts its runner with the inner executor's own blocking.possibly
// rule: the runner, and with it the function, runs inside the call only when
// the calling thread already runs the inner executor (io_context::run on
// this thread, a thread of this thread_pool), as asio's strand does; on any
// other thread it is posted. A call from inside a function this serialiser
// runs never runs inline: it queues behind the running function.
template <class Inner>
class serial_executor {
 public:
  using inner_executor_type = Inner;

  // Exactly an Inner: a serial_executor itself must not look convertible to
  // an Inner that is any_io_executor, or its copy would ask whether it is an
  // executor while deciding that very question.
  template <class I>
    requires std::is_same_v<std::decay_t<I>, Inner>
  explicit serial_executor(I&& inner)
      : inner_(std::forward<I>(inner)), queue_(std::make_shared<serial_queue>()) {}

  const Inner& get_inner_executor() const noexcept { return inner_; }

  bool running_in_this_thread() const noexcept { return queue_->running_in_this_thread(); }

  friend bool operator==(const serial_executor& a, const serial_executor& b) noexcept {
    return a.queue_ == b.queue_ && a.inner_ == b.inner_;
  }
  friend bool operator!=(const serial_executor& a, const serial_executor& b) noexcept {
    return !(a == b);
  }

  // Queries forward to the inner executor; blocking.always becomes
  // blocking.possibly (the function may wait behind others).
  template <class Property>
  decltype(auto) query(const Property& p) const
      noexcept(boost::asio::is_nothrow_query<const Inner&, Property>::value)
    requires boost::asio::can_query<const Inner&, Property>::value
  {
    if constexpr (std::is_same_v<Property, boost::asio::execution::blocking_t>) {
      boost::asio::execution::blocking_t result = boost::asio::query(inner_, p);
      return result == boost::asio::execution::blocking.always
                 ? boost::asio::execution::blocking_t(boost::asio::execution::blocking.possibly)
                 : result;
    } else {
      return boost::asio::query(inner_, p);
    }
  }

  // Requirements and preferences apply to the inner executor, on the same
  // queue.
  template <class Property>
  auto require(const Property& p) const
    requires boost::asio::can_require<const Inner&, Property>::value
  {
    using result = std::decay_t<typename boost::asio::require_result<const Inner&, Property>::type>;
    return serial_executor<result>(boost::asio::require(inner_, p), queue_);
  }

  template <class Property>
  auto prefer(const Property& p) const
    requires boost::asio::can_prefer<const Inner&, Property>::value
  {
    using result = std::decay_t<typename boost::asio::prefer_result<const Inner&, Property>::type>;
    return serial_executor<result>(boost::asio::prefer(inner_, p), queue_);
  }

  // Queues a node its caller owns and keeps alive until the node is invoked
  // (no allocation): keysem's own hot jobs. possibly: may run the node inside
  // the call, by execute()'s blocking.possibly rule; otherwise it is posted.
  // The caller keeps this executor alive until the call returns, even when
  // a function run inside it drops the caller's last use for it (the shard
  // calls it inside a poster bracket, which holds detach() back): no
  // reference is taken for the run.
  void submit(serial_node& node, bool possibly) const
    requires requires(const Inner& e) { e.running_in_this_thread(); }
  {
    if (!queue_->push(&node)) {
      return;  // the runner that owns the queue will run it
    }
    if (possibly && inner_.running_in_this_thread()) {
      run_batch();
    } else {
      serial_runner<Inner>::post(queue_, inner_);
    }
  }

  // Runs the node inside the call, as the first job of a pass, when the
  // calling thread runs the inner executor and the serialiser is idle; then
  // the node may live on the caller's stack. False otherwise: nothing
  // happened. The caller keeps this executor alive, as for submit().
  bool run_if_idle(serial_node& node) const
    requires requires(const Inner& e) { e.running_in_this_thread(); }
  {
    if (!inner_.running_in_this_thread() || !queue_->push_if_idle(&node)) {
      return false;
    }
    run_batch();
    return true;
  }

  template <class Function>
  void execute(Function&& f) const {
    using function_type = std::decay_t<Function>;
    const auto alloc = node_allocator();
    serial_node* node =
        serial_function<function_type, std::decay_t<decltype(alloc)>>::create(std::forward<Function>(f),
                                                                           alloc);
    if (!queue_->push(node)) {
      return;  // the runner that owns the queue will run it
    }
    if constexpr (requires(const Inner& e) { e.running_in_this_thread(); }) {
      // The inner executor's rule, without building a runner for it.
      if (boost::asio::query(inner_, boost::asio::execution::blocking) !=
              boost::asio::execution::blocking.never &&
          inner_.running_in_this_thread()) {
        // A function may destroy the executor this call was made on (a
        // shard whose last reference it drops): the run uses a copy.
        const serial_executor self(*this);
        self.run_batch();
        return;
      }
    }
    // The inner executor's blocking property decides: never posts the runner,
    // possibly lets the inner executor run it here when this thread runs it.
    boost::asio::execution::execute(inner_, serial_runner<Inner>(queue_, inner_));
  }

 private:
  template <class>
  friend class serial_executor;

  serial_executor(const Inner& inner, std::shared_ptr<serial_queue> queue) noexcept
      : inner_(inner), queue_(std::move(queue)) {}

  // Runs the batch this call started on the calling thread; what is left
  // goes to a posted runner. This executor must outlive the call: it takes
  // no reference of its own, which would cost two atomic operations on the
  // queue's count for each job run inline.
  void run_batch() const {
    bool more = true;
    try {
      more = queue_->run(serial_batch);
    } catch (...) {
      if (queue_->settle()) {
        serial_runner<Inner>::post(queue_, inner_);
      }
      throw;
    }
    if (more) {
      serial_runner<Inner>::post(queue_, inner_);
    }
  }

  // The inner executor's allocator, or asio's per-thread recycling allocator
  // when it has none of its own (as asio's operations do).
  auto node_allocator() const {
    namespace ex = boost::asio::execution;
    if constexpr (boost::asio::can_query<const Inner&, ex::allocator_t<void>>::value) {
      auto alloc = boost::asio::query(inner_, ex::allocator);
      if constexpr (std::is_same_v<decltype(alloc), std::allocator<void>>) {
        return boost::asio::recycling_allocator<void>();
      } else {
        return alloc;
      }
    } else {
      return boost::asio::recycling_allocator<void>();
    }
  }

  Inner inner_;
  std::shared_ptr<serial_queue> queue_;
};

// submit() on a serial_executor whose type is known only where the port was
// made (the executor itself is held as an any_io_executor).
class serial_port {
 public:
  serial_port() noexcept = default;

  template <class Inner>
  static serial_port of(const serial_executor<Inner>& executor) noexcept {
    using serial = serial_executor<Inner>;
    return serial_port(
        &executor,
        [](const void* ex, serial_node& node, bool possibly) {
          static_cast<const serial*>(ex)->submit(node, possibly);
        },
        [](const void* ex, serial_node& node) { return static_cast<const serial*>(ex)->run_if_idle(node); });
  }

  explicit operator bool() const noexcept { return executor_ != nullptr; }

  // Only while the executor the port was made from is alive and unmoved, and
  // the caller keeps it so until the call returns (serial_executor::submit).
  void submit(serial_node& node, bool possibly) const { submit_(executor_, node, possibly); }
  bool run_if_idle(serial_node& node) const { return run_if_idle_(executor_, node); }

 private:
  using submit_fn = void (*)(const void*, serial_node&, bool);
  using run_if_idle_fn = bool (*)(const void*, serial_node&);
  serial_port(const void* executor, submit_fn submit, run_if_idle_fn run_if_idle) noexcept
      : executor_(executor), submit_(submit), run_if_idle_(run_if_idle) {}

  const void* executor_ = nullptr;
  submit_fn submit_ = nullptr;
  run_if_idle_fn run_if_idle_ = nullptr;
};

}  // namespace keysem::detail

#endif
