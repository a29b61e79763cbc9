// What every benchmark program shares: the three implementations under test,
// the allocation counter, keys, statistics and the program's main().
//
// Include this header from exactly one .cpp per program (each benchmarks/*.cpp
// is its own program): it defines the global operator new and main().
#ifndef KEYSEM_BENCHMARKS_COMMON_HARNESS_HPP
#define KEYSEM_BENCHMARKS_COMMON_HARNESS_HPP

#include "baselines/channel_semaphore.hpp"
#include "baselines/mutex_keyed_semaphore.hpp"

#include <keysem/keysem.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <malloc.h>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace bench {

namespace asio = boost::asio;

// ---------------------------------------------------------------------------
// The implementations under test. Every workload runs all three in one run.
// ---------------------------------------------------------------------------
using keysem_sem = keysem::keyed_semaphore;
using mutex_sem = baselines::mutex_keyed_semaphore<std::string>;
using channel_sem = baselines::channel_semaphore<std::string>;

template <class Sem>
constexpr const char* impl_name() {
  if constexpr (std::is_same_v<Sem, keysem_sem>) {
    return "keysem";
  } else if constexpr (std::is_same_v<Sem, mutex_sem>) {
    return "mutex";
  } else {
    return "channel";
  }
}

// Calls f.template operator()<Sem>() for each implementation.
template <class F>
void for_each_impl(F&& f) {
  f.template operator()<keysem_sem>();
  f.template operator()<mutex_sem>();
  f.template operator()<channel_sem>();
}

// ---------------------------------------------------------------------------
// Allocation counting: the global operator new of the program counts, per
// thread (no atomics on the measured path), every allocation it serves; so
// does aligned_alloc, which asio's recycling allocator calls when its
// per-thread cache misses (boost::asio::detail::aligned_new), e.g. for a
// timer's wait operation.
// ---------------------------------------------------------------------------
inline thread_local std::uint64_t thread_allocations = 0;

inline std::uint64_t allocations() noexcept { return thread_allocations; }

// ---------------------------------------------------------------------------
// Run configuration
// ---------------------------------------------------------------------------
struct config {
  // The ctest smoke run passes a tiny --benchmark_min_time; fixed-size
  // workloads then shrink too, so that the smoke test stays fast.
  bool smoke = false;
};

inline config& settings() {
  static config c;
  return c;
}

// Keys as servers see them: short tenant ids, within std::string's
// small-buffer (15 chars), so that a key costs no heap storage of its own.
inline std::string key_for(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "tenant-%07zu", i);
  return buf;
}

// ---------------------------------------------------------------------------
// Reporting. Every benchmark reports
//   ns_per_op      seconds per operation (shown with an SI prefix, e.g. 41.2n)
//   allocs_per_op  heap allocations per operation on the measuring thread,
//                  where that is meaningful
// and min/max besides the usual repetition statistics.
//
// Clocks: a single-threaded workload runs entirely on the benchmark's thread,
// so it is timed by that thread's CPU time: what the operations cost, and
// robust against other processes on a shared machine. A multi-threaded one
// is timed by the wall clock, the only clock a throughput ratio can use.
// ---------------------------------------------------------------------------
enum class timing { thread_cpu, wall };

inline benchmark::internal::Benchmark* configure(benchmark::internal::Benchmark* b, timing t) {
  if (t == timing::wall) {
    b->UseRealTime();
  }
  return b
      ->ComputeStatistics("min",
                          [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
      ->ComputeStatistics("max",
                          [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
}

// KEYSEM_BENCH_ITERATIONS=n runs every benchmark for exactly n iterations
// (no calibration runs), so that a profiler's counts divide by a known n:
//   KEYSEM_BENCH_ITERATIONS=100000 valgrind --tool=callgrind <program> --benchmark_filter=...
template <class Fn>
benchmark::internal::Benchmark* add(const std::string& name, Fn&& fn, timing t = timing::thread_cpu) {
  auto* b = configure(benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn)), t);
  if (const char* n = std::getenv("KEYSEM_BENCH_ITERATIONS"); n != nullptr && std::atoll(n) > 0) {
    b->Iterations(std::atoll(n));
  }
  return b;
}

inline void report_ops(benchmark::State& state, double ops_per_iteration) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * ops_per_iteration));
  state.counters["ns_per_op"] = benchmark::Counter(
      ops_per_iteration, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// CPU time of the whole process (every thread), for multi-threaded
// workloads: unlike their wall time it does not grow when other processes
// take the CPUs away, so it compares the contenders' efficiency even on a
// busy machine.
inline double process_cpu_seconds() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

inline void report_cpu(benchmark::State& state, double cpu_seconds, double ops_per_iteration) {
  const double ops = static_cast<double>(state.iterations()) * ops_per_iteration;
  state.counters["cpu_ns_per_op"] = ops > 0 ? cpu_seconds * 1e9 / ops : 0.0;
}

inline void report_allocations(benchmark::State& state, std::uint64_t allocations,
                               double ops_per_iteration = 1) {
  const double ops = static_cast<double>(state.iterations()) * ops_per_iteration;
  state.counters["allocs_per_op"] = ops > 0 ? static_cast<double>(allocations) / ops : 0.0;
}

// ---------------------------------------------------------------------------
// Coroutines
// ---------------------------------------------------------------------------
// A co_spawn completion that lets exceptions escape (detached would swallow them).
inline void rethrow(std::exception_ptr e) {
  if (e) {
    std::rethrow_exception(e);
  }
}

// Runs one coroutine to completion on ctx, on this thread.
template <class MakeAwaitable>
void run_on(asio::io_context& ctx, MakeAwaitable&& make) {
  asio::co_spawn(ctx, std::forward<MakeAwaitable>(make)(), rethrow);
  ctx.run();
  ctx.restart();
}

// ---------------------------------------------------------------------------
// The program
// ---------------------------------------------------------------------------
void register_benchmarks();  // defined by each program

// glibc skips the atomics of a mutex while a process has never started a
// second thread; a server always has. This thread is started before any
// benchmark and lives until the end, parked.
class background_thread {
 public:
  background_thread()
      : thread_([this] {
          while (!stop_.load(std::memory_order_acquire)) {
            stop_.wait(false, std::memory_order_acquire);
          }
        }) {}
  ~background_thread() {
    stop_.store(true, std::memory_order_release);
    stop_.notify_all();
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

inline bool is_smoke_run(int argc, char** argv) {
  if (const char* env = std::getenv("KEYSEM_BENCH_SMOKE"); env != nullptr && *env != '\0') {
    return std::strcmp(env, "0") != 0;
  }
  constexpr std::string_view flag = "--benchmark_min_time=";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with(flag)) {
      return std::strtod(std::string(arg.substr(flag.size())).c_str(), nullptr) < 0.05;
    }
  }
  return false;
}

}  // namespace bench

// The counting operator new. The deletes stay libstdc++'s, which call free()
// for every form, aligned ones included (and defining them here would make
// g++ warn about free() on memory from operator new).
void* operator new(std::size_t size) {
  ++bench::thread_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}

void* operator new[](std::size_t size) { return ::operator new(size); }

void* operator new(std::size_t size, std::align_val_t align) {
  ++bench::thread_allocations;
  if (void* p = ::memalign(static_cast<std::size_t>(align), std::max<std::size_t>(size, 1))) {
    return p;
  }
  throw std::bad_alloc();
}

// Interposes glibc's aligned_alloc for the whole program (asio's aligned_new
// calls std::aligned_alloc); glibc's memalign serves it, and glibc's free
// frees it.
extern "C" void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  ++bench::thread_allocations;
  return ::memalign(alignment, size);
}

void* operator new[](std::size_t size, std::align_val_t align) { return ::operator new(size, align); }


int main(int argc, char** argv) {
  bench::settings().smoke = bench::is_smoke_run(argc, argv);
  bench::background_thread server_like;
  benchmark::AddCustomContext("keysem_smoke_scale", bench::settings().smoke ? "yes" : "no");
  bench::register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

#endif
