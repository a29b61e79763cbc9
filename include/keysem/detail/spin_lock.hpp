// A lock for the few instructions that look a key up in its shard's table.
#ifndef KEYSEM_DETAIL_SPIN_LOCK_HPP
#define KEYSEM_DETAIL_SPIN_LOCK_HPP

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace keysem::detail {

// Guards a shard's key table: a hash probe plus one compare-and-swap, never a
// handler, an allocation or a post. Waiters spin briefly and then yield the
// CPU instead of parking in the kernel, because the holder is always about to
// let go; yielding keeps a preempted holder from being starved on a busy core.
//
// Builds without NDEBUG remember the holder, so that a Hash, KeyEqual or key
// copy that calls back into the same semaphore (which would spin forever on
// the lock its own thread holds) stops with a message instead.
class spin_lock {
 public:
  void lock() noexcept {
    check_not_held_by_this_thread();
    for (;;) {
      if (!locked_.exchange(true, std::memory_order_acquire)) {
        remember_holder();
        return;
      }
      wait_until_free();
    }
  }

  bool try_lock() noexcept {
    const bool taken = !locked_.load(std::memory_order_relaxed) &&
                       !locked_.exchange(true, std::memory_order_acquire);
    if (taken) {
      remember_holder();
    }
    return taken;
  }

  void unlock() noexcept {
#ifndef NDEBUG
    holder_.store(std::thread::id(), std::memory_order_relaxed);
#endif
    locked_.store(false, std::memory_order_release);
  }

 private:
#ifndef NDEBUG
  void check_not_held_by_this_thread() const noexcept {
    if (holder_.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
      std::fputs(
          "keysem: re-entered a semaphore while its shard lock is held by this thread "
          "(a Hash, KeyEqual or key copy called back into the same semaphore)\n",
          stderr);
      std::abort();
    }
  }
  void remember_holder() noexcept {
    holder_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
#else
  static void check_not_held_by_this_thread() noexcept {}
  static void remember_holder() noexcept {}
#endif

  void wait_until_free() const noexcept {
    for (int spins = 0; locked_.load(std::memory_order_relaxed); ++spins) {
      if (spins < spins_before_yield) {
        pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  static constexpr int spins_before_yield = 64;
  std::atomic<bool> locked_{false};
  // Present whatever NDEBUG says, so that translation units built with and
  // without it agree on the layout of every class holding a lock.
  std::atomic<std::thread::id> holder_{};
};

}  // namespace keysem::detail

#endif
