// The typed core: the shard array and the choice of a key's shard.
#ifndef KEYSEM_DETAIL_SEMAPHORE_IMPL_HPP
#define KEYSEM_DETAIL_SEMAPHORE_IMPL_HPP

#include <keysem/detail/core.hpp>
#include <keysem/detail/keyed_shard.hpp>
#include <keysem/detail/sharding.hpp>
#include <keysem/detail/unkeyed_impl.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/strand.hpp>
#include <boost/unordered/hash_traits.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace keysem::detail {

template <class Key, class Hash, class KeyEqual>
class semaphore_impl final : public core_base {
 public:
  using shard_type = keyed_shard<Key, Hash, KeyEqual>;

  // total_limit == 0: no total limit.
  template <class Executor>
  semaphore_impl(const Executor& ex, std::uint32_t limit, std::size_t shards,
                 std::uint64_t max_waiting, std::uint32_t total_limit, const Hash& hash,
                 const KeyEqual& equal)
      : core_base(limit),
        max_waiting_(max_waiting),
        hash_(hash),
        count_(std::bit_ceil(shards == 0 ? default_shard_count() : shards)),
        shards_(std::allocator<shard_type>().allocate(count_)) {
    std::size_t built = 0;
    try {
      if (total_limit != 0) {
        total_ = new unkeyed_impl(ex, total_limit);
        set_total_state(total_->state());
      }
      for (; built < count_; ++built) {
        new (&shards_[built]) shard_type(*this, make_shard_strand(ex), hash, equal);
      }
      // After the strands: the service must shut down before the strand
      // service does, and asio shuts services down newest first.
      attach(boost::asio::query(ex, boost::asio::execution::context));
    } catch (...) {
      destroy_shards(built);
      release_total();
      throw;
    }
  }

  // The largest n a request may ask for: the total limit, if any.
  std::uint32_t max_request() const noexcept {
    return total_ != nullptr ? total_->limit() : key_word::max_permits;
  }

  // The total limit (0 without one), the permits it has granted and the
  // requests waiting for it.
  std::uint32_t total_limit() const noexcept { return total_ != nullptr ? total_->limit() : 0; }
  key_usage total_usage() const noexcept { return total_ != nullptr ? total_->usage() : key_usage{}; }

  // close() and the semaphore's destruction reach the total too. The total
  // goes first on destruction: shut_down() may delete this core, and with
  // it the total's last owner.
  void close() {
    core_base::close();
    if (total_ != nullptr) {
      total_->close();
    }
  }
  void shut_down() noexcept {
    if (total_ != nullptr) {
      total_->shut_down();
    }
    core_base::shut_down();
  }

  std::size_t hash(const auto& key) const { return hash_(key); }

  shard_type& shard_for(std::size_t hash) noexcept { return shards_[shard_index(hash)]; }

  // A request on key, decided by its word under its shard's lock; the
  // semaphore's policy goes down with it.
  template <class K>
  auto admit(K&& key, std::uint32_t n, admission_policy::kind request) {
    const std::size_t h = hash(key);
    shard_type& shard = shard_for(h);
    return std::pair(shard.admit(std::forward<K>(key), h, n, {limit(), max_waiting_, request}),
                     &shard);
  }

  template <class K>
  key_usage usage(const K& key) const {
    const std::size_t h = hash(key);
    return shards_[shard_index(h)].usage(key, h, limit());
  }

  // limit == 0 removes the key's override.
  void set_limit(const Key& key, std::uint32_t key_limit) {
    const std::size_t h = hash(key);
    shard_for(h).set_limit(key, h, key_limit, limit());
  }

  semaphore_stats stats() const {
    semaphore_stats result;
    add_early_counts(result);
    for (std::size_t i = 0; i < count_; ++i) {
      shards_[i].add_to(result);
    }
    if (total_ != nullptr) {
      total_->add_waited_outcomes(result);
    }
    return result;
  }

  template <class F>
  void for_each_key(F& f) const {
    for (std::size_t i = 0; i < count_; ++i) {
      static_cast<const shard_type&>(shards_[i]).for_each_key(f);
    }
  }

 private:
  // Every key is gone, so no permit of the total is held and nothing waits
  // for it.
  ~semaphore_impl() override {
    destroy_shards(count_);
    release_total();
  }

  void release_total() noexcept {
    if (total_ != nullptr) {
      std::exchange(total_, nullptr)->release_owner();
    }
  }

  std::size_t shard_index(std::size_t hash) const noexcept {
    return shard_index_of<Hash>(hash, count_);
  }

  void destroy_shards(std::size_t built) noexcept {
    for (std::size_t i = built; i > 0; --i) {
      shards_[i - 1].~shard_type();
    }
    std::allocator<shard_type>().deallocate(shards_, count_);
  }

  std::size_t shard_count() const noexcept override { return count_; }
  shard_base& shard_at(std::size_t index) noexcept override { return shards_[index]; }
  const shard_base& shard_at(std::size_t index) const noexcept override { return shards_[index]; }

  std::uint64_t max_waiting_;
  unkeyed_impl* total_ = nullptr;  // the total limit's semaphore, owned (see release_total)
  [[no_unique_address]] Hash hash_;
  std::size_t count_;
  shard_type* shards_;
};

}  // namespace keysem::detail

#endif
