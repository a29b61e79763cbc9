// A lock for the few instructions that look a key up in its shard's table.
#ifndef KEYSEM_DETAIL_SPIN_LOCK_HPP
#define KEYSEM_DETAIL_SPIN_LOCK_HPP

#include <atomic>

namespace keysem::detail {

// Guards a shard's key table: a hash probe plus one compare-and-swap, never a
// handler, an allocation or a post. Waiters spin briefly and then yield the
// CPU instead of parking in the kernel, because the holder is always about to
// let go; yielding keeps a preempted holder from being starved on a busy core.
//
// Builds without NDEBUG remember the holding thread, so that a Hash, KeyEqual
// or key copy that calls back into the same semaphore (which would spin
// forever on the lock its own thread holds) stops with a message instead.
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
    holder_.store(nullptr, std::memory_order_relaxed);
#endif
    locked_.store(false, std::memory_order_release);
  }

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

  // Prints what happened and aborts; in src/out_of_line.cpp.
  [[noreturn]] static void report_reentrance() noexcept;

  // A per-thread address identifies the thread without <thread>.
  static const void* this_thread_tag() noexcept {
    static thread_local const char tag = 0;
    return &tag;
  }

#ifndef NDEBUG
  void check_not_held_by_this_thread() const noexcept {
    if (holder_.load(std::memory_order_relaxed) == this_thread_tag()) {
      report_reentrance();
    }
  }
  void remember_holder() noexcept { holder_.store(this_thread_tag(), std::memory_order_relaxed); }
#else
  static void check_not_held_by_this_thread() noexcept {}
  static void remember_holder() noexcept {}
#endif

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
  // without it agree on the layout of every class that holds a lock.
  std::atomic<const void*> holder_{nullptr};
};

}  // namespace keysem::detail

#endif
