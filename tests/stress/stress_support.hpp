// Helpers shared by the multi-threaded stress tests.
//
// Rules the tests follow:
// - Worker threads never call doctest assertions: they record violations in a
//   `violations` log, which the test's own thread checks at the end.
// - Every loop is bounded by a count (scaled by KEYSEM_STRESS_SCALE) and by a
//   time budget; the budget only cuts work short, it is never asserted on.
// - Waiting for completion uses counters with a condition variable and a
//   generous bound; a watchdog aborts the process (doctest reports the crash
//   with the test's name) if even that does not end the test.
//
// Environment:
//   KEYSEM_STRESS_SCALE   multiplies iteration counts and time budgets (default 1)
//   KEYSEM_STRESS_SEED    base seed of the random choices (default: random,
//                         printed with any failure)
//   KEYSEM_STRESS_BUDGET  seconds of busy work per test case before the
//                         sanitizer factor (default 1.5)
//   KEYSEM_STRESS_VERBOSE print per-test statistics when set
#ifndef KEYSEM_TESTS_STRESS_STRESS_SUPPORT_HPP
#define KEYSEM_TESTS_STRESS_STRESS_SUPPORT_HPP

#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <doctest/doctest.h>

// GCC 12 at -O1 (the sanitizer builds) flags asio's awaitable frames, which
// have class-specific operator new/delete, with a false
// -Wmismatched-new-delete at the end of every coroutine (GCC PR 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define KEYSEM_STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KEYSEM_STRESS_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define KEYSEM_STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEYSEM_STRESS_ASAN 1
#endif
#endif

namespace keysem::stress {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using permit = keyed_semaphore::permit;
using steady = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------

inline double env_double(const char* name, double fallback) {
  if (const char* text = std::getenv(name); text != nullptr && *text != '\0') {
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    if (end != text && std::isfinite(value) && value > 0) {
      return value;
    }
  }
  return fallback;
}

inline double scale() {
  static const double value = env_double("KEYSEM_STRESS_SCALE", 1.0);
  return value;
}

// How much slower the instrumented builds run; only stretches budgets and bounds.
inline double sanitizer_factor() {
#if defined(KEYSEM_STRESS_TSAN)
  return 6.0;
#elif defined(KEYSEM_STRESS_ASAN)
  return 2.0;
#else
  return 1.0;
#endif
}

inline bool verbose() { return std::getenv("KEYSEM_STRESS_VERBOSE") != nullptr; }

// An iteration count scaled by KEYSEM_STRESS_SCALE, at least 1.
inline std::size_t scaled(std::size_t base) {
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::llround(base * scale())));
}

// The base seed; each test mixes in its own salt.
inline std::uint64_t base_seed() {
  static const std::uint64_t value = [] {
    if (const char* text = std::getenv("KEYSEM_STRESS_SEED"); text != nullptr && *text != '\0') {
      return static_cast<std::uint64_t>(std::strtoull(text, nullptr, 0));
    }
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }();
  return value;
}

inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A seed for one worker of one test.
inline std::uint64_t seed_for(std::uint64_t salt, std::uint64_t worker = 0) {
  return mix(base_seed() ^ mix(salt * 0x100000001B3ull + worker));
}

// When the busy phase of a test stops starting new work.
inline steady::time_point busy_deadline(double base_seconds = 1.5) {
  const double seconds = env_double("KEYSEM_STRESS_BUDGET", base_seconds) * scale() * sanitizer_factor();
  return steady::now() + std::chrono::duration_cast<steady::duration>(
                             std::chrono::duration<double>(seconds));
}

// How long to wait for the work of a test to complete before failing it.
inline std::chrono::milliseconds completion_bound() {
  const double seconds = 20.0 * std::max(1.0, scale()) * std::min(3.0, sanitizer_factor());
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

// ---------------------------------------------------------------------------
// Recording from worker threads
// ---------------------------------------------------------------------------

// Broken invariants seen on any thread; checked on the test's thread.
class violations {
 public:
  void add(std::string what) {
    count_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard guard(mutex_);
    if (first_.size() < 8) {
      first_.push_back(std::move(what));
    }
  }

  std::size_t count() const { return count_.load(std::memory_order_relaxed); }

  std::string summary() const {
    std::lock_guard guard(mutex_);
    std::ostringstream out;
    out << count() << " violation(s)";
    for (const auto& what : first_) {
      out << "\n  - " << what;
    }
    return out.str();
  }

 private:
  std::atomic<std::size_t> count_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> first_;
};

#define KEYSEM_EXPECT(log, cond, ...)                                               \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::ostringstream keysem_expect_out_;                                        \
      keysem_expect_out_ << __FILE__ << ":" << __LINE__ << ": expected " #cond ": " \
                         << __VA_ARGS__;                                            \
      (log).add(keysem_expect_out_.str());                                          \
    }                                                                               \
  } while (false)

inline std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return std::string("exception: ") + ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

// Counts completions; the test's thread waits for a target with a bound.
class completion_counter {
 public:
  void add(std::size_t n = 1) {
    std::lock_guard guard(mutex_);
    done_ += n;
    changed_.notify_all();
  }

  std::size_t value() const {
    std::lock_guard guard(mutex_);
    return done_;
  }

  template <class Rep, class Period>
  bool wait_for(std::size_t target, std::chrono::duration<Rep, Period> bound) {
    std::unique_lock guard(mutex_);
    return changed_.wait_for(guard, bound, [&] { return done_ >= target; });
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::size_t done_ = 0;
};

// Aborts the process if the test is still running after `bound`: a hang
// becomes a reported crash of the named test instead of a stuck CI job.
class watchdog {
 public:
  explicit watchdog(std::string what,
                    std::chrono::milliseconds bound = completion_bound() + std::chrono::seconds(30))
      : what_(std::move(what)), thread_([this, bound] { watch(bound); }) {}

  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  ~watchdog() {
    {
      std::lock_guard guard(mutex_);
      disarmed_ = true;
      changed_.notify_all();
    }
    thread_.join();
  }

 private:
  void watch(std::chrono::milliseconds bound) {
    std::unique_lock guard(mutex_);
    if (!changed_.wait_for(guard, bound, [&] { return disarmed_; })) {
      std::fprintf(stderr, "keysem stress watchdog: \"%s\" still running after %lld ms (seed %llu)\n",
                   what_.c_str(), static_cast<long long>(bound.count()),
                   static_cast<unsigned long long>(base_seed()));
      std::fflush(stderr);
      std::abort();
    }
  }

  std::string what_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool disarmed_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------
// Holding permits under observation
// ---------------------------------------------------------------------------

// Per-key count of permits the test believes are held: incremented after a
// grant, decremented before the release, so it never exceeds what the
// semaphore really counts. Going over the limit means two holders were let
// in where the semaphore promised at most `limit`.
class holder_board {
 public:
  holder_board(std::size_t keys, int limit, violations& log)
      : counts_(new std::atomic<int>[keys]{}), keys_(keys), limit_(limit), log_(&log) {}

  void enter(std::size_t key, int n) {
    const int now = counts_[key].fetch_add(n, std::memory_order_acq_rel) + n;
    int seen = max_.load(std::memory_order_relaxed);
    while (now > seen && !max_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
    KEYSEM_EXPECT(*log_, now <= limit_, "key #" << key << " has " << now << " holders, limit " << limit_);
  }

  void leave(std::size_t key, int n) {
    const int before = counts_[key].fetch_sub(n, std::memory_order_acq_rel);
    KEYSEM_EXPECT(*log_, before >= n, "key #" << key << " released " << n << " of " << before);
  }

  int max() const { return max_.load(std::memory_order_relaxed); }
  int current(std::size_t key) const { return counts_[key].load(std::memory_order_acquire); }
  std::size_t keys() const { return keys_; }
  int limit() const { return limit_; }

 private:
  std::unique_ptr<std::atomic<int>[]> counts_;
  std::size_t keys_;
  int limit_;
  violations* log_;
  std::atomic<int> max_{0};
};

// A permit whose holding is reported to a holder_board: entered when
// constructed from a granted permit, left just before each release (reset,
// destruction, or being assigned over).
class tracked_permit {
 public:
  tracked_permit() = default;
  tracked_permit(permit p, holder_board& board, std::size_t key)
      : permit_(std::move(p)), board_(&board), key_(key) {
    if (permit_) {
      board_->enter(key_, static_cast<int>(permit_.count()));
    }
  }
  tracked_permit(tracked_permit&& other) noexcept
      : permit_(std::move(other.permit_)), board_(other.board_), key_(other.key_) {}
  // Assigning over a held permit gives its permits back through
  // permit::operator=, which is part of what the tests exercise.
  tracked_permit& operator=(tracked_permit&& other) noexcept {
    if (this != &other) {
      if (permit_) {
        board_->leave(key_, static_cast<int>(permit_.count()));
      }
      permit_ = std::move(other.permit_);
      board_ = other.board_;
      key_ = other.key_;
    }
    return *this;
  }
  ~tracked_permit() { reset(); }

  void reset() {
    if (permit_) {
      board_->leave(key_, static_cast<int>(permit_.count()));
      permit_.release();
    }
  }

  explicit operator bool() const { return static_cast<bool>(permit_); }
  const permit& get() const { return permit_; }
  std::size_t key_index() const { return key_; }

 private:
  permit permit_;
  holder_board* board_ = nullptr;
  std::size_t key_ = 0;
};

// Checks what a granted permit reports about itself.
inline void expect_permit(violations& log, const permit& p, const std::string& key, std::size_t n) {
  KEYSEM_EXPECT(log, static_cast<bool>(p), "a granted permit on " << key << " is empty");
  if (p) {
    KEYSEM_EXPECT(log, p.count() == n, "permit on " << key << " holds " << p.count() << ", asked " << n);
    KEYSEM_EXPECT(log, p.key() == key, "permit asked on " << key << " is on " << p.key());
  }
}

// Every key's holders and waiters, checked once the work has drained.
inline void check_quiescent(keyed_semaphore& sem, const std::vector<std::string>& keys) {
  CHECK(sem.key_count() == 0);
  std::size_t held = 0;
  std::size_t waiting = 0;
  for (const auto& key : keys) {
    held += sem.in_use(key);
    waiting += sem.waiting(key);
  }
  CHECK(held == 0);
  CHECK(waiting == 0);
}

inline std::vector<std::string> make_keys(const std::string& prefix, std::size_t count) {
  std::vector<std::string> keys;
  keys.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::string key = prefix + std::to_string(i);
    if (i % 3 == 0) {
      key += "/a-suffix-long-enough-to-leave-the-small-string-buffer";
    }
    keys.push_back(std::move(key));
  }
  return keys;
}

// Spins briefly, then yields, so a waiter does not starve the thread it waits
// for on a machine with fewer cores than threads.
inline void relax(unsigned& spins) {
  if (++spins < 64) {
    return;
  }
  std::this_thread::yield();
}

// Items handed from one thread to another, in order; pop() blocks until an
// item arrives or the queue is closed and empty.
template <class T>
class blocking_queue {
 public:
  void push(T item) {
    std::lock_guard guard(mutex_);
    items_.push_back(std::move(item));
    changed_.notify_one();
  }

  std::optional<T> try_pop() {
    std::lock_guard guard(mutex_);
    return take();
  }

  std::optional<T> pop() {
    std::unique_lock guard(mutex_);
    changed_.wait(guard, [&] { return !items_.empty() || closed_; });
    return take();
  }

  void close() {
    std::lock_guard guard(mutex_);
    closed_ = true;
    changed_.notify_all();
  }

 private:
  std::optional<T> take() {
    if (items_.empty()) {
      return std::nullopt;
    }
    T item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<T> items_;
  bool closed_ = false;
};

// Two threads meet here, then leave together: the start of a race.
class spin_barrier {
 public:
  explicit spin_barrier(unsigned parties) : parties_(parties) {}

  void arrive_and_wait() {
    const unsigned phase = phase_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == parties_) {
      arrived_.store(0, std::memory_order_relaxed);
      phase_.store(phase + 1, std::memory_order_release);
      return;
    }
    unsigned spins = 0;
    while (phase_.load(std::memory_order_acquire) == phase) {
      relax(spins);
    }
  }

 private:
  const unsigned parties_;
  std::atomic<unsigned> arrived_{0};
  std::atomic<unsigned> phase_{0};
};

// A short busy delay that shifts one side of a race by a few nanoseconds.
inline void busy_delay(unsigned rounds) {
  for (unsigned i = 0; i < rounds; ++i) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
}

}  // namespace keysem::stress

#endif
