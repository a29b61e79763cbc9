// keysem/permit.hpp — the RAII permit handed out by async_keyed_semaphore.
#ifndef KEYSEM_PERMIT_HPP
#define KEYSEM_PERMIT_HPP

#include <keysem/detail/key_state.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace keysem {

namespace detail {
struct permit_access;
struct no_key;  // async_semaphore's permits hold no key
}

/// Permits held on one key of an `async_keyed_semaphore<Key, ...>`, which
/// names this type `permit`.
///
/// Move-only. Destroying a non-empty permit, assigning over it, or calling
/// `release()` gives its permits back: to the oldest waiters on the key if
/// there are any, otherwise to the key.
///
/// A permit may be released on any thread, and may outlive the semaphore
/// (and its execution context) that granted it: releasing it then is safe
/// and only frees the key's state.
///
/// Thread safety: distinct permits may be used concurrently; one permit
/// object is not thread-safe (like any other object).
template <class Key>
class basic_permit {
 public:
  using key_type = Key;

  /// An empty permit.
  basic_permit() noexcept = default;

  basic_permit(basic_permit&& other) noexcept
      : state_(std::exchange(other.state_, nullptr)), count_(std::exchange(other.count_, 0)) {}

  /// Releases what this permit held, then takes over `other`'s permits.
  basic_permit& operator=(basic_permit&& other) noexcept {
    if (this != &other) {
      release();
      state_ = std::exchange(other.state_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }

  basic_permit(const basic_permit&) = delete;
  basic_permit& operator=(const basic_permit&) = delete;

  ~basic_permit() { release(); }

  /// Gives the permits back now. Idempotent: the permit is empty afterwards.
  /// When acquires wait on the key, this schedules the job that hands them
  /// the permits; if that job cannot be allocated, std::terminate is called
  /// (a release cannot fail, and the waiters could not be woken otherwise).
  void release() noexcept {
    if (auto* state = std::exchange(state_, nullptr)) {
      state->release_permit(std::exchange(count_, 0));
    }
  }

  /// True while the permit holds permits.
  explicit operator bool() const noexcept { return state_ != nullptr; }

  /// The key the permits are held on.
  /// Throws std::logic_error if the permit is empty.
  const key_type& key() const
    requires(!std::is_same_v<Key, detail::no_key>)
  {
    if (state_ == nullptr) {
      throw std::logic_error("keysem::permit::key: the permit is empty");
    }
    return state_->key();
  }

  /// Number of permits held: the `n` of the acquire, 0 when empty.
  std::size_t count() const noexcept { return count_; }

 private:
  friend struct detail::permit_access;

  basic_permit(detail::key_state<Key>& state, std::uint32_t count) noexcept
      : state_(&state), count_(count) {}

  detail::key_state<Key>* state_ = nullptr;
  std::uint32_t count_ = 0;
};

namespace detail {

// The only way to make a non-empty permit: from permits already taken in the word.
struct permit_access {
  template <class Key>
  static basic_permit<Key> adopt(key_state<Key>& state, std::uint32_t count) noexcept {
    return basic_permit<Key>(state, count);
  }
};

}  // namespace detail
}  // namespace keysem

#endif
