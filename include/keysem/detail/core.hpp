// The part of a semaphore that outlives it while permits are still held.
#ifndef KEYSEM_DETAIL_CORE_HPP
#define KEYSEM_DETAIL_CORE_HPP

#include <boost/asio/execution_context.hpp>
#include <keysem/semaphore_stats.hpp>

#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace keysem::detail {

class shard_base;
class semaphore_service;
class key_state_base;

// Owns the shards. The semaphore object holds the first reference; after the
// semaphore is destroyed each shard that still has live keys (permits not
// yet released, jobs not yet run) holds one, and the last one deletes the
// core. In normal operation nothing here is written, so it costs the hot
// paths nothing. The execution context's semaphore_service knows every live
// core, to detach it when the context shuts down.
class core_base {
 public:
  explicit core_base(std::uint32_t limit) noexcept : limit_(limit) {}
  core_base(const core_base&) = delete;
  core_base& operator=(const core_base&) = delete;

  std::uint32_t limit() const noexcept { return limit_; }

  // The state of the semaphore's total limit (an unkeyed semaphore's, owned
  // by this core), or null without one. Set before any key exists.
  key_state_base* total_state() const noexcept { return total_state_; }

  bool is_stopped() const noexcept { return stop_.load(std::memory_order_acquire) != open; }
  bool is_closed() const noexcept { return stop_.load(std::memory_order_acquire) == closed; }

  // The execution context has shut down: nothing can be posted to it.
  bool is_detached() const noexcept { return detached_.load(std::memory_order_acquire); }

  // What an acquire completes with once the semaphore is closed or
  // destroyed; a default error_code while it is open.
  // Inline: every enqueue and every grant asks, and the answer is nearly
  // always "open".
  boost::system::error_code stop_error() const noexcept {
    const int stop = stop_.load(std::memory_order_seq_cst);
    return stop == open ? boost::system::error_code() : error_of(stop);
  }

  // Completes every queued acquire with keysem::error::closed.
  void close();

  // The semaphore object is going away: aborts queued acquires with
  // operation_aborted and hands the core's lifetime over to the shards.
  void shut_down() noexcept;

  // Drops one reference (an orphaned shard became empty, a pin ended).
  void shard_released() noexcept;

  // Takes one more reference unless the count already reached zero (the
  // core is being deleted); for the context's service at shutdown.
  bool try_pin() noexcept;

  // Called by the context's service at shutdown: destroys queued operations
  // without invoking them and lets go of the strands.
  void detach() noexcept;

  std::size_t key_count() const noexcept;

  // Outcomes decided before any shard is involved (a count of 0 or above
  // the largest limit, a stopped semaphore, a dead context): rare paths,
  // counted on the core.
  void count_early(const boost::system::error_code& ec) noexcept;
  void add_early_counts(semaphore_stats& stats) const noexcept;

 protected:
  virtual ~core_base() = default;
  virtual std::size_t shard_count() const noexcept = 0;
  virtual shard_base& shard_at(std::size_t index) noexcept = 0;
  virtual const shard_base& shard_at(std::size_t index) const noexcept = 0;

  void set_total_state(key_state_base& state) noexcept { total_state_ = &state; }

  // Registers with the context's service; called once the shards exist.
  void attach(boost::asio::execution_context& context);

 private:
  friend class semaphore_service;

  enum : int { open, closed, destroyed };
  // What an acquire completes with in a stop state other than open.
  static boost::system::error_code error_of(int stop) noexcept;

  void abort_all(const boost::system::error_code& ec);

  std::uint32_t limit_;
  key_state_base* total_state_ = nullptr;
  std::atomic<int> stop_{open};
  std::atomic<bool> detached_{false};
  std::atomic<std::uint64_t> early_invalid_{0};
  std::atomic<std::uint64_t> early_closed_{0};
  std::atomic<std::uint64_t> early_aborted_{0};
  std::atomic<std::size_t> references_{1};  // the semaphore's own
  std::atomic<semaphore_service*> service_{nullptr};
  core_base* next_ = nullptr;  // the service's list, guarded by its lock
  core_base* prev_ = nullptr;
  bool listed_ = false;  // guarded by the service's lock
};

}  // namespace keysem::detail

#endif
