// keysem/redis/fleet_permit.hpp — permits held on one key across the fleet.
#ifndef KEYSEM_REDIS_FLEET_PERMIT_HPP
#define KEYSEM_REDIS_FLEET_PERMIT_HPP

#include <keysem/async_keyed_semaphore.hpp>
#include <keysem/redis/detail/lease_record.hpp>

#include <boost/asio/async_result.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace keysem::redis {

namespace detail {
class fleet_core;
struct permit_factory;
}  // namespace detail

/// Permits on one key granted by a fleet_semaphore: a lease in Redis plus
/// the permits of the local stage.
///
/// Move-only RAII. Destroying a non-empty permit, assigning over it, or
/// calling release() gives it back asynchronously and best effort: the
/// release script is queued on the semaphore's connection (ahead of any
/// acquire the freed local permit lets through); if it cannot reach Redis,
/// or the semaphore is gone, the lease expires on its own within
/// fleet_options::lease.
///
/// While held, the lease is refreshed every lease/3 by the semaphore's
/// refresher. It becomes *lost* when Redis reports it gone, or when its
/// deadline t_sent + lease - safety_margin passes without a confirmed
/// refresh (t_sent: when the last confirmed request was sent, steady clock).
/// From then on valid() is false and async_wait_lost() completes; a lost
/// permit must not be acted upon (see docs/fleet.md, G2).
///
/// Thread safety: valid(), fencing_token(), key(), count() and
/// async_wait_lost() may be called from any thread; one permit object is
/// otherwise not thread-safe. A permit may outlive its fleet_semaphore.
class fleet_permit {
 public:
  fleet_permit() noexcept = default;
  fleet_permit(fleet_permit&&) noexcept = default;
  fleet_permit& operator=(fleet_permit&& other) noexcept {
    if (this != &other) {
      release();
      record_ = std::move(other.record_);
      core_ = std::move(other.core_);
      stage_ = std::move(other.stage_);
      local_ = std::move(other.local_);
    }
    return *this;
  }
  fleet_permit(const fleet_permit&) = delete;
  fleet_permit& operator=(const fleet_permit&) = delete;
  ~fleet_permit() { release(); }

  /// Gives the permits back now (asynchronously, best effort). Idempotent.
  void release() noexcept;

  /// True while the permit holds a lease (valid or lost).
  explicit operator bool() const noexcept { return record_ != nullptr; }

  /// True while the lease is held and believed valid: non-empty, not
  /// reported lost, and before its steady-clock deadline.
  bool valid() const noexcept { return record_ && record_->believed_valid(); }

  /// The fencing token: per key, strictly increasing with each grant across
  /// the fleet (an INCR in Redis). 0 when empty.
  std::uint64_t fencing_token() const noexcept { return record_ ? record_->fence : 0; }

  /// Throws std::logic_error if the permit is empty.
  const std::string& key() const;
  /// Permits held: the n of the acquire; 0 when empty.
  std::size_t count() const noexcept { return record_ ? record_->n : 0; }

  /// Waits until the lease is lost.
  ///
  /// Completion signature: void(boost::system::error_code). Success when the
  /// lease is lost (at once if it already is); operation_aborted when the
  /// permit is released or destroyed first, when the operation is
  /// cancelled, or when the permit is empty. The handler runs on its
  /// associated executor (default: the fleet_semaphore's executor), never
  /// inside this call. Cancellation: terminal, partial and total (parks no
  /// more). Several waits may be parked on one permit.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) CompletionToken>
  auto async_wait_lost(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [record = record_](auto handler) {
          detail::start_wait_lost(record, detail::loss_handler(std::move(handler)));
        },
        token);
  }

 private:
  friend struct detail::permit_factory;
  using local_permit = keysem::keyed_semaphore::permit;

  std::shared_ptr<detail::lease_record> record_;
  std::weak_ptr<detail::fleet_core> core_;
  // The local stage outlives its permits: a local permit is released while
  // the semaphore that granted it still exists.
  std::shared_ptr<keysem::keyed_semaphore> stage_;
  local_permit local_;
};

namespace detail {
struct permit_factory {
  static fleet_permit make(std::shared_ptr<lease_record> record, std::weak_ptr<fleet_core> core,
                           std::shared_ptr<keysem::keyed_semaphore> stage,
                           keysem::keyed_semaphore::permit local) {
    fleet_permit p;
    p.record_ = std::move(record);
    p.core_ = std::move(core);
    p.stage_ = std::move(stage);
    p.local_ = std::move(local);
    return p;
  }
};
}  // namespace detail

}  // namespace keysem::redis

#endif
