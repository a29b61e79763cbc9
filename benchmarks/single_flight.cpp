// W9: keysem::single_flight against a mutex + boost::unordered_flat_map of
// shared call state (benchmarks/baselines/mutex_single_flight.hpp), in the
// same run, on one io_context driven by poll().
//
// round/callers:1    a full execute-and-share round with one caller: run(),
//                    the execution spawned, fn (an awaitable that returns at
//                    once) run, the outcome handed over, the handler invoked.
// round/callers:N    one execution shared by N callers: the first starts it,
//                    N - 1 join; the time per caller approaches the cost of
//                    a join plus a completion.
// Both report ns per caller ("per_caller") beside the time per round.
#include "baselines/mutex_single_flight.hpp"

#include <keysem/single_flight.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <exception>
#include <string>
#include <thread>

namespace {

namespace asio = boost::asio;

using keysem_group = keysem::single_flight<std::string, std::uint64_t>;
using mutex_group = baselines::mutex_single_flight<std::string, std::uint64_t>;

asio::awaitable<std::uint64_t> answer() { co_return 42; }

template <class Group>
void run_round(benchmark::State& state) {
  const auto callers = static_cast<std::size_t>(state.range(0));
  asio::io_context ctx;
  Group group(ctx.get_executor());
  const std::string key = "a-key-long-enough-to-leave-the-small-string-buffer";
  std::uint64_t sum = 0;
  std::size_t completed = 0;
  for (auto _ : state) {
    for (std::size_t i = 0; i < callers; ++i) {
      group.run(key, [] { return answer(); }, [&](std::exception_ptr, std::uint64_t v) {
        sum += v;
        ++completed;
      });
    }
    ctx.poll();
    ctx.restart();
  }
  if (completed != callers * static_cast<std::size_t>(state.iterations())) {
    state.SkipWithError("not every caller completed");
  }
  benchmark::DoNotOptimize(sum);
  state.counters["per_caller"] = benchmark::Counter(
      static_cast<double>(state.iterations() * callers),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void round_keysem(benchmark::State& state) { run_round<keysem_group>(state); }
void round_mutex(benchmark::State& state) { run_round<mutex_group>(state); }

BENCHMARK(round_keysem)->Arg(1)->Arg(16)->Arg(256)->Name("single_flight/keysem/round/callers");
BENCHMARK(round_mutex)->Arg(1)->Arg(16)->Arg(256)->Name("single_flight/mutex/round/callers");

}  // namespace

int main(int argc, char** argv) {
  // glibc's mutex skips its atomics until a second thread has existed: a
  // server has threads, so the baseline is measured with them on.
  std::thread([] {}).join();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
