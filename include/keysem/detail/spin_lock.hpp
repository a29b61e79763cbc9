// A lock for the few instructions that look a key up in its shard's table.
#ifndef KEYSEM_DETAIL_SPIN_LOCK_HPP
#define KEYSEM_DETAIL_SPIN_LOCK_HPP

#include <atomic>

namespace keysem::detail {

// Guards a shard's key table: a hash probe plus one compare-and-swap, never a
// handler, an allocation or a post. Waiters spin briefly and then yield the
// CPU instead of parking in the kernel, because the holder is always about to
// let go; yielding keeps a preempted holder from being starved on a busy core.
class spin_lock {
 public:
  void lock() noexcept {
    for (;;) {
      if (!locked_.exchange(true, std::memory_order_acquire)) {
        return;
      }
      wait_until_free();
    }
  }

  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }

  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  void wait_until_free() const noexcept {
    for (int spins = 0; locked_.load(std::memory_order_relaxed); ++spins) {
      if (spins < spins_before_yield) {
        pause();
      } else {
        yield();
      }
    }
  }

  // std::this_thread::yield(), compiled in src/out_of_line.cpp: <thread>
  // costs every translation unit that includes keysem about 0.1 s.
  static void yield() noexcept;

  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  static constexpr int spins_before_yield = 64;
  std::atomic<bool> locked_{false};
};

}  // namespace keysem::detail

#endif
