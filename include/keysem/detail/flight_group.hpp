// The machinery of single_flight: sharded tables of flights, one flight per
// execution, and the coroutine that runs fn and hands its outcome out.
#ifndef KEYSEM_DETAIL_FLIGHT_GROUP_HPP
#define KEYSEM_DETAIL_FLIGHT_GROUP_HPP

#include <keysem/detail/flight_caller.hpp>
#include <keysem/detail/flight_state.hpp>
#include <keysem/detail/flight_table.hpp>
#include <keysem/detail/handler_work.hpp>
#include <keysem/detail/job.hpp>
#include <keysem/detail/sharding.hpp>
#include <keysem/single_flight_options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <bit>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace keysem::detail {

template <class Key, class T, class Hash, class KeyEqual, class Executor>
class flight_group
    : public std::enable_shared_from_this<flight_group<Key, T, Hash, KeyEqual, Executor>> {
 public:
  class flight;
  using flight_ref = intrusive_flight_ref<flight>;
  using caller = flight_caller<T>;
  using shard = flight_shard<flight, KeyEqual, Hash>;

  // One execution: its key, its state and callers (guarded by its shard's
  // lock), the strand its coroutine runs on and the signal that cancels it.
  // Alive while its coroutine or a caller holds a reference.
  class flight : public flight_links<flight> {
   public:
    flight(std::shared_ptr<flight_group> group, shard& home, Key key, std::size_t hash,
           boost::asio::any_io_executor strand)
        : group_(std::move(group)),
          shard_(&home),
          key_(std::move(key)),
          hash_(hash),
          strand_(std::move(strand)) {}
    flight(const flight&) = delete;
    flight& operator=(const flight&) = delete;

    const Key& key() const noexcept { return key_; }
    std::size_t hash() const noexcept { return hash_; }

    void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
      if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        delete this;
      }
    }

    // A caller's cancellation handler: the caller leaves, if still waiting.
    void leave(caller& c) { group_->leave(*this, c); }

   private:
    friend class flight_group;

    std::shared_ptr<flight_group> group_;  // the shards outlive every flight
    shard* shard_;
    Key key_;
    std::size_t hash_;
    boost::asio::any_io_executor strand_;
    boost::asio::cancellation_signal signal_;
    flight_state state_;
    caller_list<T> callers_;
    std::atomic<std::size_t> refs_{0};
  };

  flight_group(const Executor& ex, const single_flight_options& options, const Hash& hash,
               const KeyEqual& equal)
      : executor_(ex),
        hash_(hash),
        cancel_abandoned_(options.cancel_abandoned),
        shards_(std::bit_ceil(options.shards == 0 ? default_shard_count() : options.shards),
                equal) {}

  // run(): joins the flight listed for key, or starts one. Handler is the
  // caller's own (an lvalue that moves into the caller op).
  template <class Fn, class Handler>
  void start(Key key, Fn&& fn, Handler& handler) {
    using op_type = caller_op<T, flight_ref, Handler, Executor>;
    op_type& op = op_type::create(handler, executor_);
    flight_ref fresh;
    try {
      op.install_cancellation();
      const std::size_t h = hash_(key);
      shard& home = shards_.for_hash(h);
      if (join_listed(home, key, h, op)) {
        return;
      }
      fresh = start_flight(home, std::move(key), h, op);
    } catch (...) {
      op_type::free(&op);  // thrown before the op was linked: no flight saw it
      throw;
    }
    // Linked: from here on the op may complete at any moment on another thread.
    if (fresh) {
      spawn(std::move(fresh), std::forward<Fn>(fn));  // reports its own failures
    }
  }

  void forget(const Key& key) {
    const std::size_t h = hash_(key);
    shard& home = shards_.for_hash(h);
    std::lock_guard guard(home.lock);
    if (flight* f = home.find(key, h); f != nullptr && f->state_.forget()) {
      home.unlist(*f);
    }
  }

  template <class K>
  std::size_t callers(const K& key) const {
    const std::size_t h = hash_(key);
    const shard& home = shards_.for_hash(h);
    std::lock_guard guard(home.lock);
    const flight* f = home.find(key, h);
    return f == nullptr ? 0 : f->state_.callers();
  }

  std::size_t in_flight() const {
    std::size_t listed = 0;
    shards_.for_each([&](const shard& s) {
      std::lock_guard guard(s.lock);
      listed += s.listed();
    });
    return listed;
  }

  single_flight_stats stats() const {
    single_flight_stats total;
    shards_.for_each([&](const shard& s) {
      std::lock_guard guard(s.lock);
      s.counters.add_to(total);
    });
    return total;
  }

  // The single_flight is destroyed: every caller completes with
  // operation_aborted and every execution still running is cancelled.
  void stop() {
    std::vector<std::pair<flight_ref, caller*>> stopped;
    shards_.for_each([&](shard& s) {
      std::lock_guard guard(s.lock);
      s.for_each_running([&](flight& f) {
        const flight_state::stop_verdict verdict = f.state_.stop();
        if (verdict.unlist) {
          s.unlist(f);
        }
        if (verdict.cancel_execution) {
          stopped.emplace_back(flight_ref(&f), f.callers_.take_all());
        }
      });
    });
    for (auto& [f, chain] : stopped) {
      post_cancel(*f);
      abort_all(chain);
    }
  }

 private:
  // Owns the flight's reference from inside its coroutine: finish() hands
  // the outcome out; destroyed unfinished (the context shut down before fn
  // completed), it destroys the callers without invoking them. Only the copy
  // moved into the coroutine frame is armed: if the frame cannot be
  // allocated, spawn() reports the failure to the callers instead.
  class runner {
   public:
    explicit runner(flight_ref f) noexcept : flight_(std::move(f)) {}
    runner(runner&& other) noexcept : flight_(std::move(other.flight_)), armed_(true) {}
    runner& operator=(runner&&) = delete;
    ~runner() {
      if (flight_ && armed_) {
        flight_->group_->destroyed(*flight_);
      }
    }
    void finish(std::exception_ptr error, T value) {
      armed_ = false;
      flight_->group_->finish(*flight_, std::move(error), std::move(value));
    }

   private:
    flight_ref flight_;
    bool armed_ = false;
  };

  // Carries a cancellation to the flight's strand, where its coroutine runs
  // (asio's cancellation slots are not thread-safe).
  struct cancel_policy {
    using state = flight_ref;
    static void run(flight_ref& f) { f->group_->emit_cancel(*f); }
    static void drop(flight_ref&) noexcept {}  // the context is gone, and fn with it
  };
  using cancel_job = job<cancel_policy>;

  // Runs fn on the flight's strand; fn lives in this frame until the
  // awaitable it returned has completed.
  template <class Fn>
  static boost::asio::awaitable<void> run_flight(runner owner, Fn fn) {
    std::exception_ptr error;
    T value{};
    try {
      value = co_await fn();
    } catch (...) {
      error = std::current_exception();
    }
    owner.finish(std::move(error), std::move(value));
  }

  // co_spawn's completion handler. It holds the flight until co_spawn is done
  // with the flight's cancellation signal: after fn's frame (and the runner's
  // reference) is gone, co_spawn still clears the slot it installed there.
  struct spawned {
    flight_ref keep;
    void operator()(std::exception_ptr) const noexcept {}  // run_flight catches everything
  };

  template <class Op>
  bool join_listed(shard& home, const Key& key, std::size_t h, Op& op) {
    std::lock_guard guard(home.lock);
    flight* f = home.find(key, h);
    if (f == nullptr || !f->state_.join()) {
      return false;
    }
    link(*f, op);
    ++home.counters.joined;
    return true;
  }

  // Builds a flight outside the lock, then looks again: another thread may
  // have listed one meanwhile, which op then joins (returns null).
  template <class Op>
  flight_ref start_flight(shard& home, Key key, std::size_t h, Op& op) {
    flight_ref fresh(new flight(this->shared_from_this(), home, std::move(key), h,
                                make_shard_strand(executor_)));
    std::lock_guard guard(home.lock);
    if (flight* listed = home.find(fresh->key(), h); listed != nullptr && listed->state_.join()) {
      link(*listed, op);
      ++home.counters.joined;
      return {};
    }
    home.list(*fresh);
    fresh->state_.join();
    link(*fresh, op);
    ++home.counters.started;
    return fresh;
  }

  template <class Op>
  static void link(flight& f, Op& op) noexcept {
    f.callers_.push_back(op);
    op.attach(flight_ref(&f));
  }

  // Creates fn's coroutine here, and starts it from a job posted to the
  // flight's strand: co_spawn alone would run fn inside run() when run() is
  // called from the strand's own context.
  template <class Fn>
  void spawn(flight_ref f, Fn&& fn) {
    try {
      auto body = run_flight(runner(f), std::decay_t<Fn>(std::forward<Fn>(fn)));
      post_to(f->strand_, std::allocator<void>(),
              [body = std::move(body), keep = f]() mutable {
                boost::asio::co_spawn(keep->strand_, std::move(body),
                                      boost::asio::bind_cancellation_slot(keep->signal_.slot(),
                                                                          spawned{keep}));
              });
    } catch (...) {
      // Out of memory, or fn's copy threw: the execution failed to start.
      // (If the frame was built, dropping it has already ended the flight.)
      finish(*f, std::current_exception(), T{});
    }
  }

  // fn completed: the outcome goes to every caller still linked.
  void finish(flight& f, std::exception_ptr error, T value) {
    flight_state::finish_verdict verdict;
    caller* chain = nullptr;
    {
      shard& home = *f.shard_;
      std::lock_guard guard(home.lock);
      if (f.state_.current() == flight_state::phase::done) {
        return;  // a spawn failure reported twice
      }
      verdict = f.state_.finish();
      settle_locked(home, f, verdict);
      chain = f.callers_.take_all();
      if (verdict.deliver && error) {
        ++home.counters.exceptions;
      }
    }
    deliver(chain, error, std::move(value));
  }

  // The coroutine was destroyed unfinished: its context is shutting down,
  // so the callers are destroyed without being invoked, as asio does with
  // every handler still pending then.
  void destroyed(flight& f) noexcept {
    caller* chain = nullptr;
    {
      shard& home = *f.shard_;
      std::lock_guard guard(home.lock);
      if (f.state_.current() == flight_state::phase::done) {
        return;
      }
      settle_locked(home, f, f.state_.finish());
      chain = f.callers_.take_all();
    }
    while (chain != nullptr) {
      caller* next = caller_list<T>::next(*chain);
      chain->destroy();
      chain = next;
    }
  }

  static void settle_locked(shard& home, flight& f,
                            const flight_state::finish_verdict& verdict) noexcept {
    if (verdict.unlist) {
      home.unlist(f);
    }
    home.unlink_running(f);
    if (verdict.abandoned) {
      ++home.counters.abandoned;
    }
  }

  // A caller's cancellation: it leaves unless the outcome got there first.
  void leave(flight& f, caller& c) {
    flight_state::leave_verdict verdict;
    {
      shard& home = *f.shard_;
      std::lock_guard guard(home.lock);
      if (!c.linked()) {
        return;  // the result (or the destructor) already took it
      }
      f.callers_.erase(c);
      verdict = f.state_.leave(cancel_abandoned_);
      ++home.counters.cancelled;
      if (verdict.abandoned) {
        ++home.counters.abandoned;
      }
      if (verdict.unlist) {
        home.unlist(f);
      }
    }
    if (verdict.cancel_execution) {
      post_cancel(f);
    }
    c.complete(aborted(), T{});
  }

  void emit_cancel(flight& f) {
    bool cancelling = false;
    {
      std::lock_guard guard(f.shard_->lock);
      cancelling = f.state_.current() == flight_state::phase::cancelling;
    }
    // On the strand, as fn's coroutine: it cannot finish meanwhile.
    if (cancelling) {
      f.signal_.emit(boost::asio::cancellation_type::terminal);
    }
  }

  static void post_cancel(flight& f) noexcept {
    try {
      post_to(f.strand_, std::allocator<void>(), cancel_job(flight_ref(&f)));
    } catch (...) {
      // Out of memory: fn runs to its end and its result is discarded.
    }
  }

  // Copies of the outcome for all but the last caller, which gets it moved.
  // A caller whose copy of T throws gets that exception instead.
  static void deliver(caller* chain, const std::exception_ptr& error, T value) noexcept {
    while (chain != nullptr) {
      caller* next = caller_list<T>::next(*chain);
      std::exception_ptr outcome = error;
      T share{};
      try {
        share = next == nullptr ? std::move(value) : value;
      } catch (...) {
        outcome = std::current_exception();
      }
      complete_quietly(*chain, std::move(outcome), std::move(share));
      chain = next;
    }
  }

  static void abort_all(caller* chain) noexcept {
    while (chain != nullptr) {
      caller* next = caller_list<T>::next(*chain);
      complete_quietly(*chain, aborted(), T{});
      chain = next;
    }
  }

  // A post that throws (out of memory) destroys the caller with its job:
  // nothing is left to do for it.
  static void complete_quietly(caller& c, std::exception_ptr outcome, T value) noexcept {
    try {
      c.complete(std::move(outcome), std::move(value));
    } catch (...) {
    }
  }

  static std::exception_ptr aborted() {
    return std::make_exception_ptr(
        boost::system::system_error(boost::asio::error::operation_aborted, "keysem::single_flight"));
  }

  Executor executor_;
  [[no_unique_address]] Hash hash_;
  bool cancel_abandoned_;
  shard_array<shard, Hash> shards_;
};

}  // namespace keysem::detail

#endif
