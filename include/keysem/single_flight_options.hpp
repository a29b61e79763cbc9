// keysem/single_flight_options.hpp — construction options and counters of single_flight.
#ifndef KEYSEM_SINGLE_FLIGHT_OPTIONS_HPP
#define KEYSEM_SINGLE_FLIGHT_OPTIONS_HPP

#include <cstddef>
#include <cstdint>

namespace keysem {

/// Options of `single_flight`. New options are only ever added after the
/// existing ones, so aggregate initialisation keeps its meaning.
struct single_flight_options {
  /// Number of shards of the key table: 0 picks the library default (a few
  /// per hardware thread); any other value up to `keysem::max_shards` is
  /// rounded up to a power of two, and a larger one makes the constructor
  /// throw std::invalid_argument.
  std::size_t shards = 0;

  /// When every caller of an execution has left (cancelled), cancel the
  /// execution (terminal cancellation of the coroutine running `fn`) and
  /// discard its result. False: let it run; a later run() on its key joins
  /// it, and if nobody does its result is discarded when it arrives.
  bool cancel_abandoned = true;
};

/// What `single_flight::stats()` reports: monotonic counters, summed over
/// the shards when read.
struct single_flight_stats {
  /// Executions started (fn invoked, or about to be, on the flight's strand).
  std::uint64_t started = 0;
  /// run() calls that joined an execution in flight.
  std::uint64_t joined = 0;
  /// Callers that left through per-operation cancellation.
  std::uint64_t cancelled = 0;
  /// Executions every caller left: counted when the last caller leaves with
  /// cancel_abandoned, or, without it, when the result of an execution left
  /// by every caller (and not joined again) is discarded.
  std::uint64_t abandoned = 0;
  /// Executions whose fn threw (or failed to start), delivered to at least
  /// one caller.
  std::uint64_t exceptions = 0;
};

}  // namespace keysem

#endif
