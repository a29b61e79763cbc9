// An acquire that has to wait: the typed op, its cancellation handler and the
// strand jobs that carry it.
#ifndef KEYSEM_DETAIL_ACQUIRE_OP_HPP
#define KEYSEM_DETAIL_ACQUIRE_OP_HPP

#include <keysem/detail/embedded_job.hpp>
#include <keysem/detail/handler_work.hpp>
#include <keysem/detail/job.hpp>
#include <keysem/detail/key_state.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/detail/waiter_op.hpp>
#include <keysem/permit.hpp>

#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace keysem::detail {

// Carries a freshly registered op onto the strand. Dropped (its execution
// context went away, or the shard is detached), it destroys the op and gives
// back the op's place in the key's word.
struct enqueue_policy {
  using state = waiter_op*;

  static void run(waiter_op* op) {
    op->stage = waiter_op::strand_stage::enqueued;
    op->key().enqueue(*op);
  }

  static void drop(waiter_op* op) noexcept {
    const bool cancel_dropped = op->stage == waiter_op::strand_stage::cancel_job_dropped;
    op->stage = waiter_op::strand_stage::enqueued;
    if (op->try_claim()) {
      key_state_base& key = op->key();
      op->destroy();
      key.cancel_waiter_reservation();
    } else if (cancel_dropped) {
      op->key().finish_cancelled(*op, false);
    }
    // Otherwise the op is cancelled and its cancel job, still queued, finishes it.
  }
};

// Carries a cancelled op onto the strand, where it leaves the queue. It runs
// after the op's enqueue job: a live strand runs jobs in order. When a
// context dies, asio destroys queued jobs in no guaranteed order: a cancel
// job dropped before its op's enqueue job leaves the op to that one.
struct cancel_policy {
  using state = waiter_op*;

  static void run(waiter_op* op) { op->key().finish_cancelled(*op, true); }

  static void drop(waiter_op* op) noexcept {
    if (op == cancel_post_in_progress) {
      return;  // the post failed: the cancellation is undone, not finished
    }
    if (op->stage == waiter_op::strand_stage::awaiting_enqueue) {
      op->stage = waiter_op::strand_stage::cancel_job_dropped;
    } else {
      op->key().finish_cancelled(*op, false);
    }
  }
};
using cancel_job = job<cancel_policy>;

template <class Key, class Handler, class IoExecutor>
class acquire_op final : public waiter_op {
 public:
  using permit_type = basic_permit<Key>;
  using allocator_type = operation_allocator_t<Handler>;

  // Allocates the op with the handler's associated allocator; the handler
  // moves in. Strong guarantee: on an exception the handler is untouched.
  static acquire_op& create(Handler& handler, key_state<Key>& key, std::uint32_t count,
                            const IoExecutor& io_executor) {
    op_allocator alloc(operation_allocator(handler));
    acquire_op* op = std::allocator_traits<op_allocator>::allocate(alloc, 1);
    try {
      return *new (op) acquire_op(handler, key, count, io_executor);
    } catch (...) {
      std::allocator_traits<op_allocator>::deallocate(alloc, op, 1);
      throw;
    }
  }

  // Connects the op to the handler's cancellation slot, if it has one.
  void install_cancellation() {
    if (slot_.is_connected()) {
      slot_.template emplace<cancellation_handler>(*this);
    }
  }

  allocator_type get_allocator() const noexcept { return operation_allocator(handler_); }

  // The job that carries the op onto its key's strand, queued once
  // (shard_base::post_node).
  serial_node& enqueue_job() noexcept { return enqueue_job_; }

 private:
  using op_allocator =
      typename std::allocator_traits<allocator_type>::template rebind_alloc<acquire_op>;
  using handler_executor = boost::asio::associated_executor_t<Handler, IoExecutor>;
  using tracked_executor = std::decay_t<decltype(boost::asio::prefer(
      std::declval<handler_executor>(), boost::asio::execution::outstanding_work.tracked))>;
  using tracked_io_executor = std::decay_t<decltype(boost::asio::prefer(
      std::declval<IoExecutor>(), boost::asio::execution::outstanding_work.tracked))>;

  // Runs on whatever thread emits the signal: decides the cancel-vs-grant race
  // with one compare-and-swap, then lets the strand take the op out. Once the
  // cancel job is posted the op may be gone (and this handler with it).
  class cancellation_handler {
   public:
    explicit cancellation_handler(acquire_op& op) noexcept : op_(&op) {}
    void operator()(boost::asio::cancellation_type type) {
      constexpr auto honoured = boost::asio::cancellation_type::terminal |
                                boost::asio::cancellation_type::partial |
                                boost::asio::cancellation_type::total;
      if ((type & honoured) == boost::asio::cancellation_type::none) {
        return;
      }
      // The compare-and-swap comes first: until it succeeds the op may be
      // completing elsewhere and its key gone. Once it succeeds the op is
      // still registered, which keeps its key and shard alive.
      switch (op_->request_cancel()) {
        case waiter_op::cancel_outcome::too_late:
          return;
        case waiter_op::cancel_outcome::left_to_transfer:
          return;  // on its way to the total: the transfer job completes it
        case waiter_op::cancel_outcome::post_cancel_job:
          break;
      }
      acquire_op* const op = op_;
      key_state_base& key = op->key();
      shard_base::poster bracket(key.shard());
      if (!bracket) {
        // The context is shutting down: detach() destroys the op, and waits
        // for this bracket, so the op must be claimable again when it looks.
        op->undo_cancel();
        return;
      }
      try {
        const posting_scope scope(*op);
        bracket.post(cancel_job(op));
      } catch (...) {
        // Out of memory: the op waits on, as if no signal had been emitted.
        // A grant pass may have skipped it while it looked cancelled. (Its
        // completion cannot run during this call: it is posted to the
        // executor that emits the signal, so the state is still alive.)
        op->undo_cancel();
        key.request_drain();
        throw;
      }
    }

   private:
    class posting_scope {
     public:
      explicit posting_scope(const waiter_op& op) noexcept
          : previous_(std::exchange(cancel_post_in_progress, &op)) {}
      posting_scope(const posting_scope&) = delete;
      posting_scope& operator=(const posting_scope&) = delete;
      ~posting_scope() { cancel_post_in_progress = previous_; }

     private:
      const waiter_op* previous_;
    };

    acquire_op* op_;
  };

  // Owns the op between the grant (or abort) and the upcall on the handler's
  // executor. Dropped, it destroys the op, which releases a granted permit.
  struct completion_policy {
    using state = acquire_op*;
    static void run(acquire_op* op) { op->invoke(); }
    static void drop(acquire_op* op) noexcept { free(op); }
  };
  using completion = job<completion_policy>;

  acquire_op(Handler& handler, key_state<Key>& key, std::uint32_t count,
             const IoExecutor& io_executor)
      : waiter_op(key, count, &do_complete, &do_destroy),
        work_(boost::asio::prefer(boost::asio::get_associated_executor(handler, io_executor),
                                  boost::asio::execution::outstanding_work.tracked)),
        io_work_(track_io_executor(handler, io_executor)),
        slot_(boost::asio::get_associated_cancellation_slot(handler)),
        handler_(std::move(handler)),
        enqueue_job_(this) {}

  // The grant comes from the shard's strand, which runs on the I/O executor:
  // its context must not run out of work while the op waits, even when the
  // handler runs elsewhere. Nothing extra when both are the same executor.
  static std::optional<tracked_io_executor> track_io_executor(const Handler& handler,
                                                              const IoExecutor& io_executor) {
    if constexpr (std::is_same_v<handler_executor, IoExecutor>) {
      if (boost::asio::get_associated_executor(handler, io_executor) == io_executor) {
        return std::nullopt;
      }
    }
    return boost::asio::prefer(io_executor, boost::asio::execution::outstanding_work.tracked);
  }

  ~acquire_op() {
    // The slot must not keep pointing at a dead op: clear it before the
    // handler (which owns the signal's storage) goes.
    if (slot_.is_connected()) {
      slot_.clear();
    }
  }

  static void do_complete(waiter_op* base, const boost::system::error_code& ec) {
    auto& self = static_cast<acquire_op&>(*base);
    self.error_ = ec;
    if (!ec) {
      auto& holder = static_cast<key_state<Key>&>(self.permit_key());
      self.settle_granted();
      self.permit_ = permit_access::adopt(holder, self.count());
    } else {
      self.abandon_stage();
    }
    // The semaphore's context has done its part (this runs on its strand):
    // its work goes now, as asio's own operations let go of their I/O
    // executor's work when they complete, so that the completion may outlive
    // that context.
    self.io_work_.reset();
    post_to(self.work_, self.get_allocator(), completion(&self));
  }

  static void do_destroy(waiter_op* base) noexcept { free(static_cast<acquire_op*>(base)); }

  // On the handler's executor. The op's memory is freed before the upcall, so
  // the handler may start another acquire that reuses it.
  void invoke() {
    const boost::system::error_code ec = error_;
    permit_type permit = std::move(permit_);
    Handler handler(std::move(handler_));
    free(this);
    std::move(handler)(ec, std::move(permit));
  }

  static void free(acquire_op* op) noexcept {
    op_allocator alloc(op->get_allocator());
    op->~acquire_op();
    std::allocator_traits<op_allocator>::deallocate(alloc, op, 1);
  }

  tracked_executor work_;
  std::optional<tracked_io_executor> io_work_;
  boost::asio::cancellation_slot slot_;
  Handler handler_;
  boost::system::error_code error_;
  permit_type permit_;
  embedded_job<enqueue_policy> enqueue_job_;
};

}  // namespace keysem::detail

#endif
