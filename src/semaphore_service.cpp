#include <keysem/detail/core.hpp>
#include <keysem/detail/semaphore_service.hpp>

#include <mutex>
#include <thread>

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
  core.listed_ = true;
}

void semaphore_service::remove(core_base& core) noexcept {
  std::lock_guard guard(lock_);
  unlist_locked(core);
}

void semaphore_service::unlist_locked(core_base& core) noexcept {
  if (!core.listed_) {
    return;
  }
  (core.prev_ ? core.prev_->next_ : cores_) = core.next_;
  if (core.next_ != nullptr) {
    core.next_->prev_ = core.prev_;
  }
  core.next_ = core.prev_ = nullptr;
  core.listed_ = false;
}

// Detaching destroys handlers, and a destroyed handler may release the last
// permit of any core, deleting it: cores are taken off the list one at a
// time, pinned, and detached with the lock released. A core whose count has
// already reached zero is being deleted on another thread; it stays listed
// until that thread removes it, so this service outlives its last use.
void semaphore_service::shutdown() {
  for (;;) {
    core_base* pinned = nullptr;
    {
      std::lock_guard guard(lock_);
      if (cores_ == nullptr) {
        return;
      }
      for (core_base* core = cores_; core != nullptr; core = core->next_) {
        if (core->try_pin()) {
          pinned = core;
          unlist_locked(*core);
          core->service_.store(nullptr, std::memory_order_release);
          break;
        }
      }
    }
    if (pinned == nullptr) {
      std::this_thread::yield();  // only dying cores are left: wait for their removal
      continue;
    }
    pinned->detach();
    pinned->shard_released();
  }
}

}  // namespace keysem::detail
