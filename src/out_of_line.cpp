// Non-template helpers of keysem's headers, compiled here once instead of in
// every translation unit that includes <keysem/keysem.hpp>: wrapping asio's
// concrete executors in any_io_executor instantiates its function tables for
// each of them, and <thread> is a large header (see "Compile time" in
// docs/benchmarks.md).
#include <keysem/detail/sharding.hpp>
#include <keysem/detail/spin_lock.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace keysem::detail {

boost::asio::any_io_executor make_shard_strand(const boost::asio::any_io_executor& ex) {
  if (const auto* io = ex.target<boost::asio::io_context::executor_type>()) {
    return serial_executor<boost::asio::io_context::executor_type>(*io);
  }
  if (const auto* pool = ex.target<boost::asio::thread_pool::executor_type>()) {
    return serial_executor<boost::asio::thread_pool::executor_type>(*pool);
  }
  return serial_executor<boost::asio::any_io_executor>(ex);
}

serial_port serial_port_of(const boost::asio::any_io_executor& strand) noexcept {
  using io_serial = serial_executor<boost::asio::io_context::executor_type>;
  using pool_serial = serial_executor<boost::asio::thread_pool::executor_type>;
  if (const auto* io = strand.target<io_serial>()) {
    return serial_port::of(*io);
  }
  if (const auto* pool = strand.target<pool_serial>()) {
    return serial_port::of(*pool);
  }
  return {};
}

boost::asio::any_io_executor io_context_executor(boost::asio::io_context& context) {
  return context.get_executor();
}

std::size_t default_shard_count() noexcept {
  const std::size_t threads = std::max<std::size_t>(1, std::thread::hardware_concurrency());
  return std::bit_ceil(threads * 4);
}

void spin_lock::yield() noexcept { std::this_thread::yield(); }

void spin_lock::report_reentrance() noexcept {
  std::fputs(
      "keysem: re-entered a semaphore while its shard lock is held by this thread "
      "(a Hash, KeyEqual or key copy called back into the same semaphore)\n",
      stderr);
  std::abort();
}

}  // namespace keysem::detail
