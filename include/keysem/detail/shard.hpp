// A shard: a lock-guarded key table and a strand for the waiting path.
#ifndef KEYSEM_DETAIL_SHARD_HPP
#define KEYSEM_DETAIL_SHARD_HPP

#include <keysem/detail/core.hpp>
#include <keysem/detail/deadline_queue.hpp>
#include <keysem/detail/embedded_job.hpp>
#include <keysem/detail/job.hpp>
#include <keysem/detail/handler_work.hpp>
#include <keysem/detail/key_state.hpp>
#include <keysem/detail/key_word.hpp>
#include <keysem/detail/serial_executor.hpp>
#include <keysem/detail/sharding.hpp>
#include <keysem/semaphore_stats.hpp>
#include <keysem/detail/spin_lock.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace keysem::detail {

// What the semaphore passes down with a request: the default limit of keys
// without an override, the queue bound, and whether the request may wait.
struct admission_policy {
  enum class kind {
    acquire,      // may wait
    try_acquire,  // never waits; a busy key counts as try_failed
  };
  std::uint32_t default_limit;
  std::uint64_t max_waiting;
  kind request;
  bool may_wait() const noexcept { return request == kind::acquire; }
};

// The non-template half of a shard, compiled in src/shard.cpp.
//
// lock_ guards the key table (in the typed shard): it is held for a lookup
// and one compare-and-swap, or for erasing a state whose word just became
// zero. The strand serialises waiter queues, grants, cancellations and
// close/destroy.
//
// The shard's lifetime is counted in refs_, without the lock: one reference
// for the living semaphore, one per live key (given back only after the
// key's state is freed, so a reclaim never outlives the shard it touches),
// one per queued abort job and one per release that is posting a drain.
class alignas(64) shard_base {
 public:
  shard_base(core_base& core, boost::asio::any_io_executor strand) noexcept
      : core_(&core), strand_(std::move(strand)), port_(serial_port_of(strand_)) {}
  shard_base(const shard_base&) = delete;
  shard_base& operator=(const shard_base&) = delete;

  core_base& core() const noexcept { return *core_; }
  std::size_t key_count() const noexcept { return keys_.load(std::memory_order_relaxed); }

  // Moves the word of `state` from the value `next` computes, under the lock,
  // reclaiming the state if the result is zero. Returns {before, after}; the
  // caller must not touch `state` when `after` is zero.
  template <class Next>
  std::pair<std::uint64_t, std::uint64_t> transition_locked(key_state_base& state,
                                                            Next next) noexcept;

  // Posts a job that completes every queued op with ec.
  void post_abort(const boost::system::error_code& ec);

  // The semaphore is gone: drops its reference; the last reference calls
  // core().shard_released().
  void orphan() noexcept { drop_ref(); }

  // Posts (or, when dispatch_allowed and the caller already runs the strand's
  // context, runs) f on the strand, unless the context has shut down; then
  // returns false and f is dropped unrun. Safe against a concurrent detach():
  // the strand is read only while detach() waits for this call.
  template <class Function>
  bool post_job(Function&& f, bool dispatch_allowed);

  // post_job(job<Policy>(state), true) that, when the calling thread runs
  // the shard's context and its serialiser is idle, runs the job at once
  // from a node on this stack: no allocation.
  template <class Policy>
  bool dispatch_job(typename Policy::state state);

  // post_job for a job embedded in the object it acts on (embedded_job.hpp):
  // on keysem's serialiser it is queued as it is, without an allocation or
  // the type-erased executor's layers. Refused, it is dropped here.
  bool post_node(serial_node& node, bool dispatch_allowed);

  // post_job's bracket, for a caller that must decide something only once
  // it knows detach() will wait for it: holds a reference and a poster
  // registration, or nothing once the shard is detached.
  class poster {
   public:
    explicit poster(shard_base& shard) noexcept : shard_(&shard), open_(shard.begin_post()) {}
    poster(const poster&) = delete;
    poster& operator=(const poster&) = delete;
    ~poster() { shard_->end_post(); }
    // False once the shard is detached: nothing may be posted, and detach()
    // waits until this bracket closes before it destroys the queued ops.
    explicit operator bool() const noexcept { return open_; }
    // Posts f to the strand; only when the bracket is open.
    template <class Function>
    void post(Function&& f) {
      post_to(shard_->strand_, std::allocator<void>(), std::forward<Function>(f));
    }

   private:
    shard_base* shard_;
    bool open_;
  };

  // The execution context is shutting down: waits out post_job calls in
  // progress, destroys queued ops without invoking them and drops the strand.
  void detach() noexcept;
  // The core is being deleted (nothing references the shard any more) while
  // its context may be shutting down: lets go of the timer and the strand
  // first, as both use the context's services.
  void drop_strand() noexcept {
    deadlines_.drop_timer();
    drop_executor();
  }

  // Strand only: the shard's timed waiters.
  deadline_queue& deadlines() noexcept { return deadlines_; }
  const boost::asio::any_io_executor& strand_executor() const noexcept { return strand_; }

  // A pending wait of the deadline timer holds a reference.
  void take_timer_ref() noexcept { refs_.fetch_add(one_ref, std::memory_order_relaxed); }
  void release_timer_ref() noexcept { drop_ref(); }

  // Strand (or shutdown) only: counts a queued acquire's completion.
  void count_completion(const boost::system::error_code& ec) noexcept;

  bool is_detached() const noexcept {
    return (refs_.load(std::memory_order_acquire) & detached_bit) != 0;
  }

 protected:
  ~shard_base() = default;

  // Called by the typed shard, lock held, after it inserted a new state.
  void count_new_key_locked() noexcept {
    refs_.fetch_add(one_ref, std::memory_order_relaxed);
    keys_.store(keys_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // Lock held: counts the outcome of an admission decided under the lock.
  void count_admission_locked(key_word::verdict verdict, admission_policy::kind request) noexcept {
    switch (verdict) {
      case key_word::verdict::granted:
        ++locked_counts_.granted_immediately;
        break;
      case key_word::verdict::busy:
        if (request == admission_policy::kind::try_acquire) {
          ++locked_counts_.try_failed;
        }
        break;
      case key_word::verdict::queue_full:
        ++locked_counts_.rejected_queue_full;
        break;
      case key_word::verdict::invalid:
        ++locked_counts_.invalid_argument;
        break;
      case key_word::verdict::queued:
      case key_word::verdict::staged:
        break;  // counted when it completes
    }
  }

  // Lock held: adds the counters to stats.
  void add_counters_locked(semaphore_stats& stats) const noexcept;

  mutable spin_lock lock_;

 private:
  struct abort_policy;

  // Removes the state from the table (lock held) / frees it (lock released).
  virtual void erase_locked(key_state_base& state) noexcept = 0;
  virtual void destroy_state(key_state_base* state) noexcept = 0;
  // Appends the states that have queued ops (lock held, on the strand).
  virtual void collect_waiting_locked(std::vector<key_state_base*>& out) const = 0;


  // begin_post() takes a reference and registers a poster, and returns false
  // once detached; end_post() gives both back, whatever begin_post() said.
  bool begin_post() noexcept;
  void end_post() noexcept;

  void erase_reclaimed_locked(key_state_base& state) noexcept;
  // Inside an open bracket: queues f on the serialiser through the port,
  // or through the strand's executor when there is none. port_ and strand_
  // are read only inside a bracket (detach() resets them).
  template <class Function>
  void queue_job(poster& bracket, Function&& f, bool dispatch_allowed);
  // Lets go of the strand and of the port into it.
  void drop_executor() noexcept {
    port_ = serial_port();
    strand_ = boost::asio::any_io_executor();
  }
  void finish_reclaim(key_state_base* state) noexcept;
  void drop_ref() noexcept;
  void abort_waiting_keys(const boost::system::error_code& ec, bool invoke);

  // refs_ layout: bits 0..31 references, bits 32..62 post_job calls between
  // their detach check and the end of their post, bit 63 detached.
  static constexpr std::uint64_t one_ref = 1;
  static constexpr std::uint64_t refs_mask = 0xFFFF'FFFFull;
  static constexpr std::uint64_t one_poster = 1ull << 32;
  static constexpr std::uint64_t posters_mask = 0x7FFF'FFFFull << 32;
  static constexpr std::uint64_t detached_bit = 1ull << 63;

  std::atomic<std::uint64_t> refs_{one_ref};  // the semaphore's own

  // Outcomes decided under the lock: plain counters, no extra atomic on the
  // immediate path.
  struct {
    std::uint64_t granted_immediately = 0;
    std::uint64_t try_failed = 0;
    std::uint64_t rejected_queue_full = 0;
    std::uint64_t invalid_argument = 0;
  } locked_counts_;
  // Completions of queued acquires: written only by the strand (one writer
  // at a time), read by stats() from any thread.
  struct {
    std::atomic<std::uint64_t> granted_after_wait{0};
    std::atomic<std::uint64_t> cancelled{0};
    std::atomic<std::uint64_t> timed_out{0};
    std::atomic<std::uint64_t> rejected_closed{0};
    std::atomic<std::uint64_t> invalid_argument{0};
  } strand_counts_;
  std::atomic<std::size_t> keys_{0};
  core_base* core_;
  boost::asio::any_io_executor strand_;
  // Into strand_, when it holds keysem's serialiser over a known executor.
  serial_port port_;
  deadline_queue deadlines_;  // strand only
};

template <class Function>
bool shard_base::post_job(Function&& f, bool dispatch_allowed) {
  poster bracket(*this);
  if (!bracket) {
    return false;
  }
  queue_job(bracket, std::forward<Function>(f), dispatch_allowed);
  return true;
}

// The jobs carry no allocator of their own: asio's per-thread recycling
// allocator serves them, as it serves asio's operations.
template <class Function>
void shard_base::queue_job(poster& bracket, Function&& f, bool dispatch_allowed) {
  if (port_) {
    using node_type = serial_function<std::decay_t<Function>, boost::asio::recycling_allocator<void>>;
    port_.submit(*node_type::create(std::forward<Function>(f), {}), dispatch_allowed);
  } else if (dispatch_allowed) {
    dispatch_to(strand_, std::allocator<void>(), std::forward<Function>(f));
  } else {
    bracket.post(std::forward<Function>(f));
  }
}

template <class Policy>
bool shard_base::dispatch_job(typename Policy::state state) {
  poster bracket(*this);
  if (!bracket) {
    Policy::drop(state);
    return false;
  }
  if (port_) {
    embedded_job<Policy> here(state);
    if (port_.run_if_idle(here)) {
      return true;
    }
  }
  queue_job(bracket, job<Policy>(state), true);
  return true;
}

inline bool shard_base::post_node(serial_node& node, bool dispatch_allowed) {
  poster bracket(*this);
  if (!bracket) {
    node.invoke(&node, false);
    return false;
  }
  if (port_) {
    port_.submit(node, dispatch_allowed);  // as it is: no wrapper, no allocation
  } else {
    queue_job(bracket, job<node_policy>(&node), dispatch_allowed);
  }
  return true;
}

}  // namespace keysem::detail

#endif
