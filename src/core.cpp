// Close, destruction and the lifetime of a semaphore's shards.
#include <keysem/detail/core.hpp>
#include <keysem/detail/semaphore_service.hpp>
#include <keysem/detail/shard.hpp>
#include <keysem/error.hpp>

#include <boost/asio/error.hpp>

namespace keysem::detail {

boost::system::error_code core_base::stop_error() const noexcept {
  switch (stop_.load(std::memory_order_acquire)) {
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
  if (stop_.compare_exchange_strong(expected, closed, std::memory_order_acq_rel)) {
    abort_all(error::closed);
  }
}

void core_base::abort_all(const boost::system::error_code& ec) {
  for (std::size_t i = 0; i < shard_count(); ++i) {
    shard_at(i).post_abort(ec);
  }
}

void core_base::shut_down() noexcept {
  stop_.store(destroyed, std::memory_order_release);
  abort_all(boost::asio::error::operation_aborted);
  // From here on the core lives while any shard has live keys or pending
  // abort jobs: one reference per shard, besides the semaphore's own.
  const std::size_t count = shard_count();
  references_.fetch_add(count, std::memory_order_acq_rel);
  for (std::size_t i = 0; i < count; ++i) {
    if (shard_at(i).orphan()) {
      shard_released();
    }
  }
  shard_released();
}

void core_base::shard_released() noexcept {
  if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    if (service_ != nullptr) {
      service_->remove(*this);
    }
    delete this;
  }
}

void core_base::attach(boost::asio::execution_context& context) {
  service_ = &boost::asio::use_service<semaphore_service>(context);
  service_->add(*this);
}

void core_base::detach() noexcept {
  for (std::size_t i = 0; i < shard_count(); ++i) {
    shard_at(i).detach();
  }
}

std::size_t core_base::key_count() const noexcept {
  std::size_t keys = 0;
  for (std::size_t i = 0; i < shard_count(); ++i) {
    keys += shard_at(i).key_count();
  }
  return keys;
}

}  // namespace keysem::detail
