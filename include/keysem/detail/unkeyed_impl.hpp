// The core of an unkeyed semaphore: one shard, one state.
#ifndef KEYSEM_DETAIL_UNKEYED_IMPL_HPP
#define KEYSEM_DETAIL_UNKEYED_IMPL_HPP

#include <keysem/detail/core.hpp>
#include <keysem/detail/sharding.hpp>
#include <keysem/detail/unkeyed_shard.hpp>

#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>

#include <cstdint>
#include <utility>

namespace keysem::detail {

// The same interface as semaphore_impl, for the one key no_key, so that the
// initiation (initiate_acquire.hpp) and every job serve both.
class unkeyed_impl final : public core_base {
 public:
  template <class Executor>
  unkeyed_impl(const Executor& ex, std::uint32_t limit)
      : core_base(limit), shard_(*this, make_shard_strand(ex), limit) {
    // After the strand: the service must shut down before the strand service.
    attach(boost::asio::query(ex, boost::asio::execution::context));
  }

  std::pair<unkeyed_shard::admission, shard_base*> admit(no_key, std::uint32_t n,
                                                         admission_policy::kind request) noexcept {
    return {shard_.admit(n, {limit(), unbounded_waiting, request}), &shard_};
  }

  key_usage usage(no_key = {}) const noexcept { return shard_.usage(); }

  // The largest n a request may ask for (larger ones are invalid at once).
  std::uint32_t max_request() const noexcept { return key_word::max_permits; }

  key_state_base& state() noexcept { return shard_.state(); }
  void add_waited_outcomes(semaphore_stats& stats) const noexcept {
    shard_.add_waited_outcomes(stats);
  }

  semaphore_stats stats() const {
    semaphore_stats result;
    add_early_counts(result);
    shard_.add_to(result);
    return result;
  }

  // The semaphore object is going away: after shut_down(), gives up the
  // state's owner bit. May delete this core.
  void release_owner() noexcept { shard_.drop_owner(); }

 private:
  static constexpr std::uint64_t unbounded_waiting = ~std::uint64_t{0};

  ~unkeyed_impl() override = default;

  std::size_t shard_count() const noexcept override { return 1; }
  shard_base& shard_at(std::size_t) noexcept override { return shard_; }
  const shard_base& shard_at(std::size_t) const noexcept override { return shard_; }

  unkeyed_shard shard_;
};

}  // namespace keysem::detail

#endif
