// Close, destruction and the lifetime of a semaphore's shards.
#include <keysem/detail/core.hpp>
#include <keysem/detail/semaphore_service.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/error.hpp>

#include <boost/asio/error.hpp>

namespace keysem::detail {

// seq_cst, with close()'s exchange: a grant pass that reads the stop state
// after close() returned sees it.
boost::system::error_code core_base::error_of(int stop) noexcept {
  switch (stop) {
    case closed:
      return error::closed;
    case destroyed:
      return boost::asio::error::operation_aborted;
    default:
      return {};
  }
}

void core_base::close() {
  int expected = open;
  if (stop_.compare_exchange_strong(expected, closed, std::memory_order_seq_cst)) {
    abort_all(error::closed);
  }
}

void core_base::abort_all(const boost::system::error_code& ec) {
  for (std::size_t i = 0; i < shard_count(); ++i) {
    shard_at(i).post_abort(ec);
  }
}

void core_base::shut_down() noexcept {
  stop_.store(destroyed, std::memory_order_seq_cst);
  abort_all(boost::asio::error::operation_aborted);
  // From here on the core lives while any shard has live keys or pending
  // abort jobs: one reference per shard, besides the semaphore's own.
  const std::size_t count = shard_count();
  references_.fetch_add(count, std::memory_order_acq_rel);
  for (std::size_t i = 0; i < count; ++i) {
    shard_at(i).orphan();
  }
  shard_released();
}

void core_base::shard_released() noexcept {
  if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    // Still listed by a live service unless its shutdown pinned, detached and
    // unlisted this core first (it clears service_ before dropping the pin);
    // a shutdown in progress waits for this removal.
    // The strands go first, while the listing still holds the shutdown
    // back: destroying a strand uses the context's strand service.
    if (semaphore_service* service = service_.load(std::memory_order_acquire)) {
      for (std::size_t i = 0; i < shard_count(); ++i) {
        shard_at(i).drop_strand();
      }
      service->remove(*this);
    }
    delete this;
  }
}

bool core_base::try_pin() noexcept {
  std::size_t count = references_.load(std::memory_order_relaxed);
  while (count != 0) {
    if (references_.compare_exchange_weak(count, count + 1, std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;  // being deleted: never revive a count that reached zero
}

void core_base::attach(boost::asio::execution_context& context) {
  auto& service = boost::asio::use_service<semaphore_service>(context);
  service_.store(&service, std::memory_order_release);
  service.add(*this);
}

void core_base::detach() noexcept {
  detached_.store(true, std::memory_order_release);
  for (std::size_t i = 0; i < shard_count(); ++i) {
    shard_at(i).detach();
  }
}

void core_base::count_early(const boost::system::error_code& ec) noexcept {
  auto& counter = ec == boost::asio::error::invalid_argument ? early_invalid_
                  : ec == error::closed                      ? early_closed_
                                                             : early_aborted_;
  counter.fetch_add(1, std::memory_order_relaxed);
}

void core_base::add_early_counts(semaphore_stats& stats) const noexcept {
  stats.invalid_argument += early_invalid_.load(std::memory_order_relaxed);
  stats.rejected_closed += early_closed_.load(std::memory_order_relaxed);
  stats.cancelled += early_aborted_.load(std::memory_order_relaxed);
}

std::size_t core_base::key_count() const noexcept {
  std::size_t keys = 0;
  for (std::size_t i = 0; i < shard_count(); ++i) {
    keys += shard_at(i).key_count();
  }
  return keys;
}

}  // namespace keysem::detail
