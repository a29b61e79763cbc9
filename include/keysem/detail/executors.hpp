// The executors a semaphore builds on: its shards' strands, and the
// executor of an execution context it is constructed from.
#ifndef KEYSEM_DETAIL_EXECUTORS_HPP
#define KEYSEM_DETAIL_EXECUTORS_HPP

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/strand.hpp>

#include <cstddef>
#include <type_traits>

namespace keysem::detail {

// A shard's strand. Over the usual io_context or thread_pool executor, the
// strand is built on the concrete executor rather than on the type-erased
// one: it then fits any_io_executor's small buffer, and every strand pass
// saves the allocations and indirect calls of two layers of type erasure.
// Compiled in src/out_of_line.cpp: wrapping three strand types in
// any_io_executor here cost every including translation unit about two
// seconds of compile time (see "Compile time" in docs/benchmarks.md).
boost::asio::any_io_executor make_shard_strand(const boost::asio::any_io_executor& ex);

// Any other executor (the non-template overload wins for any_io_executor).
template <class Executor>
boost::asio::any_io_executor make_shard_strand(const Executor& ex) {
  return boost::asio::make_strand(ex);
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

}  // namespace keysem::detail

#endif
