#include <keysem/detail/core.hpp>
#include <keysem/detail/semaphore_service.hpp>

#include <mutex>

namespace keysem::detail {

boost::asio::execution_context::id semaphore_service::id;

semaphore_service::semaphore_service(boost::asio::execution_context& context)
    : boost::asio::execution_context::service(context) {}

void semaphore_service::add(core_base& core) noexcept {
  std::lock_guard guard(lock_);
  core.next_ = cores_;
  core.prev_ = nullptr;
  if (cores_ != nullptr) {
    cores_->prev_ = &core;
  }
  cores_ = &core;
}

void semaphore_service::remove(core_base& core) noexcept {
  std::lock_guard guard(lock_);
  (core.prev_ ? core.prev_->next_ : cores_) = core.next_;
  if (core.next_ != nullptr) {
    core.next_->prev_ = core.prev_;
  }
  core.next_ = core.prev_ = nullptr;
}

void semaphore_service::shutdown() {
  // Detaching destroys handlers, and a destroyed handler may release the last
  // permit of any core, deleting it: take cores off the list one at a time,
  // pinned, and detach them with the lock released.
  for (;;) {
    core_base* core = nullptr;
    {
      std::lock_guard guard(lock_);
      core = cores_;
      if (core == nullptr) {
        return;
      }
      cores_ = core->next_;
      if (cores_ != nullptr) {
        cores_->prev_ = nullptr;
      }
      core->next_ = core->prev_ = nullptr;
      core->service_ = nullptr;
      core->references_.fetch_add(1, std::memory_order_relaxed);
    }
    core->detach();
    core->shard_released();
  }
}

}  // namespace keysem::detail
