// The execution-context service that detaches semaphores from a dying context.
#ifndef KEYSEM_DETAIL_SEMAPHORE_SERVICE_HPP
#define KEYSEM_DETAIL_SEMAPHORE_SERVICE_HPP

#include <keysem/detail/spin_lock.hpp>

#include <boost/asio/execution_context.hpp>

namespace keysem::detail {

class core_base;

// When its execution context shuts down, every semaphore core still alive in
// it (the semaphore object itself, or the remains kept by outstanding
// permits) destroys its queued operations without invoking them, as asio
// requires, and lets go of its strands, so that a permit released after the
// context is gone touches nothing of the context.
class semaphore_service final : public boost::asio::execution_context::service {
 public:
  static boost::asio::execution_context::id id;

  explicit semaphore_service(boost::asio::execution_context& context);

  void add(core_base& core) noexcept;
  void remove(core_base& core) noexcept;

 private:
  void shutdown() override;
  void unlist_locked(core_base& core) noexcept;

  spin_lock lock_;  // guards cores_: taken when semaphores are created or die
  core_base* cores_ = nullptr;
};

}  // namespace keysem::detail

#endif
