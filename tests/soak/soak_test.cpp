// Soak: many acquire/release pairs over many distinct keys, with waiters,
// cancellations and failed tries mixed in; memory must come back.
//
// Environment (defaults are the shortened CI form; scripts/soak runs the
// full one: 10,000,000 pairs over 1,000,000 keys):
//   KEYSEM_SOAK_PAIRS   granted acquire/release pairs       (default 300000)
//   KEYSEM_SOAK_KEYS    distinct keys, each visited in turn (default 30000)
//   KEYSEM_SOAK_WINDOW  permits held at once                (default 4096)
//
// Checks: every handler ran exactly once; at the end key_count() is 0 and
// resident memory (after malloc_trim) is within 5% (+2 MiB) of what it was
// after the warm-up (the first 10% of the pairs, window full). Under
// sanitizers the RSS figures are reported, not checked (ASan's quarantine
// and shadow memory dominate them); LeakSanitizer checks leaks at exit.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <doctest/doctest.h>

#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KEYSEM_SOAK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KEYSEM_SOAK_SANITIZED 1
#endif
#endif

namespace keysem::soak {
namespace {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using permit = keyed_semaphore::permit;

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::strtoull(value, nullptr, 10) : fallback;
}

// Resident set size now, after giving free heap pages back to the system.
double rss_mib() {
  malloc_trim(0);
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// Peak resident set size (VmHWM).
double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
    }
  }
  return 0;
}

struct counters {
  std::uint64_t pairs = 0;          // permits granted (acquire or try) and released
  std::uint64_t acquires = 0;       // acquire() calls
  std::uint64_t waited = 0;         // acquires that had to queue
  std::uint64_t cancelled = 0;      // acquires that completed with operation_aborted
  std::uint64_t tries_failed = 0;   // try_acquire that returned nullopt
  std::uint64_t handler_calls = 0;
  std::uint64_t max_keys = 0;       // largest key_count() seen
};

// One pending cancellable acquire.
struct cancellable {
  std::unique_ptr<asio::cancellation_signal> signal;
  std::shared_ptr<bool> done;
};

std::string key_name(std::uint64_t index) { return "tenant-" + std::to_string(index); }

}  // namespace

TEST_CASE("soak: acquire/release pairs over many keys with cancellations, and memory comes back") {
  const std::uint64_t target = env_number("KEYSEM_SOAK_PAIRS", 300000);
  const std::uint64_t key_space = env_number("KEYSEM_SOAK_KEYS", 30000);
  const std::size_t window = static_cast<std::size_t>(env_number("KEYSEM_SOAK_WINDOW", 4096));
  REQUIRE(key_space >= 64);

  asio::io_context ctx;
  keyed_semaphore sem(ctx, 2);
  counters c;
  std::deque<permit> held;      // released oldest first once the window is full
  std::deque<permit> hot_held;  // hot keys' permits cycle fast, so their queues stay short
  std::deque<cancellable> pending;
  const auto start = std::chrono::steady_clock::now();

  auto hold = [&](permit p, bool hot) {
    auto& ring = hot ? hot_held : held;
    const std::size_t size = hot ? 8 : window;
    ring.push_back(std::move(p));
    while (ring.size() > size) {
      ring.front().release();
      ring.pop_front();
      ++c.pairs;
    }
  };
  auto drain = [&] {
    ctx.poll();
    ctx.restart();
  };

  double warm_rss = 0;
  double warm_peak = 0;
  bool warmed = false;
  // Keys are visited in a strided order so that all of them are used, each
  // about pairs/keys times, and consecutive operations rarely share a key;
  // one operation in 8 goes to a small hot set (7 keys), where waiting and
  // cancellation happen: there every acquire is cancellable, and the
  // oldest still waiting are cancelled, so the queues stay bounded.
  const std::uint64_t stride = 2654435761u % key_space | 1;
  std::uint64_t cursor = 0;
  for (std::uint64_t i = 0; c.pairs < target; ++i) {
    if (!warmed && c.pairs >= target / 10) {
      drain();
      warm_rss = rss_mib();
      warm_peak = peak_rss_mib();
      warmed = true;
    }
    const bool hot = i % 8 == 0;
    cursor = (cursor + stride) % key_space;
    const std::string key = hot ? key_name(i % 7) : key_name(cursor);
    const int choice = hot ? (i % 3 == 0 ? 0 : 1) : static_cast<int>(i % 5);
    switch (choice) {
      case 0: {  // try_acquire
        if (auto p = sem.try_acquire(key)) {
          hold(std::move(*p), hot);
        } else {
          ++c.tries_failed;
        }
        break;
      }
      case 1: {  // a cancellable acquire, cancelled later if still waiting
        auto signal = std::make_unique<asio::cancellation_signal>();
        auto done = std::make_shared<bool>(false);
        ++c.acquires;
        if (sem.waiting(key) != 0 || sem.available(key) == 0) ++c.waited;
        sem.acquire(key, asio::bind_cancellation_slot(signal->slot(), [&, done, hot](error_code ec, permit p) {
                      *done = true;
                      ++c.handler_calls;
                      if (ec == asio::error::operation_aborted) {
                        ++c.cancelled;
                      } else if (!ec) {
                        hold(std::move(p), hot);
                      }
                    }));
        pending.push_back({std::move(signal), std::move(done)});
        break;
      }
      default: {  // a plain acquire
        ++c.acquires;
        if (sem.waiting(key) != 0 || sem.available(key) == 0) ++c.waited;
        sem.acquire(key, [&, hot](error_code ec, permit p) {
          ++c.handler_calls;
          REQUIRE_FALSE(ec);
          hold(std::move(p), hot);
        });
        break;
      }
    }
    // Cancel the older cancellable acquires that are still waiting.
    while (pending.size() > 64) {
      if (!*pending.front().done) pending.front().signal->emit(asio::cancellation_type::terminal);
      if (!*pending.front().done) {
        drain();  // the cancel job runs, the handler reports operation_aborted
      }
      REQUIRE(*pending.front().done);
      pending.pop_front();
    }
    if (i % 64 == 0) {
      drain();
      if (i % 4096 == 0) c.max_keys = std::max<std::uint64_t>(c.max_keys, sem.key_count());
    }
  }

  // Finish: cancel what still waits, release everything, let it all run.
  for (auto& p : pending) {
    if (!*p.done) p.signal->emit(asio::cancellation_type::terminal);
  }
  drain();
  auto release_all = [&] {
    for (auto* ring : {&held, &hot_held}) {
      while (!ring->empty()) {
        ring->front().release();
        ring->pop_front();
        ++c.pairs;
        if (ring->size() % 256 == 0) drain();
      }
    }
  };
  release_all();
  for (int round = 0; round < 100 && (sem.key_count() != 0 || !held.empty() || !hot_held.empty()); ++round) {
    drain();
    release_all();
  }
  drain();
  for (auto& p : pending) CHECK(*p.done);
  pending.clear();

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double end_rss = rss_mib();
  const double peak = peak_rss_mib();
  CHECK(sem.key_count() == 0);
  CHECK(c.handler_calls == c.acquires);
  CHECK(sem.in_use(key_name(0)) == 0);
  CHECK(sem.waiting(key_name(0)) == 0);
  MESSAGE("soak: " << c.pairs << " pairs over " << key_space << " keys in " << seconds << " s ("
                   << (seconds > 0 ? static_cast<double>(c.pairs) / seconds : 0) << " pairs/s); "
                   << c.acquires << " acquires, " << c.waited << " waited, " << c.cancelled << " cancelled, "
                   << c.tries_failed << " failed tries; max live keys " << c.max_keys
                   << "; RSS after warm-up " << warm_rss << " MiB (peak " << warm_peak << " MiB), at the end "
                   << end_rss << " MiB, peak " << peak << " MiB");
#if !defined(KEYSEM_SOAK_SANITIZED)
  CHECK_MESSAGE(end_rss <= warm_rss * 1.05 + 2.0,
                "resident memory did not come back: " << end_rss << " MiB vs " << warm_rss << " MiB after warm-up");
#endif
}

}  // namespace keysem::soak
