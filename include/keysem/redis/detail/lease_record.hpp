// keysem/redis/detail/lease_record.hpp — one granted lease, shared by the
// fleet_permit that owns it and the refresher that keeps it alive.
#ifndef KEYSEM_REDIS_DETAIL_LEASE_RECORD_HPP
#define KEYSEM_REDIS_DETAIL_LEASE_RECORD_HPP

#include <keysem/redis/detail/lease.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace keysem::redis::detail {

using loss_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;

struct lease_record {
  lease_record(std::string key_, std::string id_, std::uint32_t n_, std::uint64_t fence_,
               lease_fsm fsm_, boost::asio::any_io_executor ex)
      : key(std::move(key_)), id(std::move(id_)), n(n_), fence(fence_), fsm(fsm_),
        default_executor(std::move(ex)) {
    publish_deadline();
  }

  const std::string key;
  const std::string id;
  const std::uint32_t n;
  const std::uint64_t fence;
  lease_fsm fsm;  // the core's strand only

  // What other threads read: whether the lease is known lost, and until when
  // it may be believed held (the fsm's deadline, mirrored).
  std::atomic<bool> lost{false};
  std::atomic<std::int64_t> deadline_ns{0};

  void publish_deadline() noexcept {
    deadline_ns.store(fsm.deadline().time_since_epoch().count(), std::memory_order_release);
  }
  bool believed_valid() const noexcept {
    return !lost.load(std::memory_order_acquire) &&
           lease_fsm::clock::now().time_since_epoch().count() <
               deadline_ns.load(std::memory_order_acquire);
  }

  // Parked async_wait_lost operations (std::list: any_completion_handler
  // must be constructed, never move-assigned).
  std::mutex mutex;
  bool finished = false;  // lost or released: nothing parks any more
  std::uint64_t next_waiter = 0;
  std::list<std::pair<std::uint64_t, loss_handler>> waiters;
  boost::asio::any_io_executor default_executor;
};

/// Parks `h` until the lease is lost (completes with success) or released
/// (operation_aborted); completes at once (posted) if either already happened.
void start_wait_lost(const std::shared_ptr<lease_record>& record, loss_handler h);
/// Completes every parked waiter with `ec`; later waits complete at once.
void finish_waiters(lease_record& record, boost::system::error_code ec);

}  // namespace keysem::redis::detail

#endif
