// Spreading keys over shards: the shard count, a key's shard, a shard's strand.
#ifndef KEYSEM_DETAIL_SHARDING_HPP
#define KEYSEM_DETAIL_SHARDING_HPP

#include <keysem/detail/serial_executor.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/unordered/hash_traits.hpp>

#include <cstddef>
#include <type_traits>

namespace keysem::detail {

// A shard's strand: keysem's serialiser (serial_executor.hpp) over the
// semaphore's executor. Over the usual io_context or thread_pool executor, it
// is built on the concrete executor rather than on the type-erased one: it
// then fits any_io_executor's small buffer, and every pass saves the
// allocations and indirect calls of two layers of type erasure. Compiled in
// src/out_of_line.cpp: wrapping three executor types in any_io_executor here
// cost every including translation unit about two seconds of compile time
// (see "Compile time" in docs/benchmarks.md).
boost::asio::any_io_executor make_shard_strand(const boost::asio::any_io_executor& ex);

// A port into the serialiser make_shard_strand() made, held in `strand`,
// over an io_context or thread_pool executor; an empty port otherwise.
// Valid while `strand` holds that serialiser.
serial_port serial_port_of(const boost::asio::any_io_executor& strand) noexcept;

// Any other executor (the non-template overload wins for any_io_executor).
// A Networking TS style executor keeps asio's strand.
template <class Executor>
boost::asio::any_io_executor make_shard_strand(const Executor& ex) {
  if constexpr (boost::asio::execution::is_executor<Executor>::value) {
    return serial_executor<Executor>(ex);
  } else {
    return boost::asio::make_strand(ex);
  }
}

// The executor a semaphore built on an execution context uses. An io_context
// with the default any_io_executor, the common case, is converted in
// src/out_of_line.cpp: the conversion instantiates any_io_executor's
// function tables for the io_context executor and its variants.
// (execution_context.hpp declares boost::asio::io_context.)
boost::asio::any_io_executor io_context_executor(boost::asio::io_context& context);

template <class Executor, class ExecutionContext>
Executor executor_of(ExecutionContext& context) {
  if constexpr (std::is_same_v<Executor, boost::asio::any_io_executor> &&
                std::is_same_v<ExecutionContext, boost::asio::io_context>) {
    return io_context_executor(context);
  } else {
    return Executor(context.get_executor());
  }
}

// Default shard count: a few per hardware thread, so that keys on different
// threads rarely meet on one shard's lock (src/out_of_line.cpp).
std::size_t default_shard_count() noexcept;

// The table inside a shard positions by the high bits of the hash and
// filters by the low byte: pick the shard (of count, a power of two) from the
// bits in between, and mix first when the hash does not spread its input
// over every bit.
template <class Hash>
std::size_t shard_index_of(std::size_t hash, std::size_t count) noexcept {
  if constexpr (!boost::unordered::hash_is_avalanching<Hash>::value) {
    hash *= 0x9E3779B97F4A7C15ull;
    hash ^= hash >> 32;
  }
  return (hash >> 24) & (count - 1);
}

}  // namespace keysem::detail

#endif
