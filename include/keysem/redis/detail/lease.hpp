// keysem/redis/detail/lease.hpp — the client's belief about one lease, as a
// pure state machine on the steady clock (no I/O; the refresher applies its
// verdicts).
//
//   held --begin_refresh--> refreshing --extended--> held (deadline moved)
//     |                         |  \--server says lost--> lost
//     |                         \--transport error--> held (deadline kept)
//     \--now >= deadline (either state)--> lost
//   any --release--> released
//
// The deadline is t_sent + T - m where t_sent is when the last request the
// server confirmed (the acquire, or a refresh) was sent: the server computed
// its expiry no earlier than t_sent, so the lease is still alive on the server
// until at least t_sent + T by its clock; m absorbs clock rate difference and
// scheduling delays.
#ifndef KEYSEM_REDIS_DETAIL_LEASE_HPP
#define KEYSEM_REDIS_DETAIL_LEASE_HPP

#include <chrono>

namespace keysem::redis::detail {

class lease_fsm {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;
  enum class state { held, refreshing, lost, released };
  enum class reply { extended, lost, failed };

  lease_fsm(time_point acquire_sent, std::chrono::milliseconds lease,
            std::chrono::milliseconds margin) noexcept
      : validity_(lease - margin), deadline_(acquire_sent + validity_) {}

  state current() const noexcept { return state_; }
  time_point deadline() const noexcept { return deadline_; }
  bool believed_held(time_point now) const noexcept {
    return (state_ == state::held || state_ == state::refreshing) && now < deadline_;
  }

  /// Whether a refresh should be sent now (one at a time per lease).
  bool begin_refresh(time_point now) noexcept {
    if (expire_if_due(now) || state_ != state::held) {
      return false;
    }
    state_ = state::refreshing;
    refresh_sent_ = now;
    return true;
  }

  /// Applies a refresh's outcome; true if the lease became lost.
  bool on_refresh(reply r, time_point now) noexcept {
    if (state_ != state::refreshing) {
      return false;  // released (or already lost) meanwhile
    }
    if (r == reply::lost) {
      state_ = state::lost;
      return true;
    }
    state_ = state::held;
    if (r == reply::extended) {
      deadline_ = refresh_sent_ + validity_;
    }
    return expire_if_due(now);
  }

  /// True if the lease became lost because its deadline passed unconfirmed.
  bool expire_if_due(time_point now) noexcept {
    if ((state_ == state::held || state_ == state::refreshing) && now >= deadline_) {
      state_ = state::lost;
      return true;
    }
    return false;
  }

  /// The holder gave it back; nothing is refreshed or lost afterwards.
  void release() noexcept { state_ = state::released; }

 private:
  std::chrono::milliseconds validity_;
  time_point deadline_;
  time_point refresh_sent_{};
  state state_ = state::held;
};

}  // namespace keysem::redis::detail

#endif
