// Helpers shared by the deterministic unit tests.
#ifndef KEYSEM_TESTS_UNIT_TEST_SUPPORT_HPP
#define KEYSEM_TESTS_UNIT_TEST_SUPPORT_HPP

#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <doctest/doctest.h>

#include "counting_allocator.hpp"

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace keysem::test {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using permit = keyed_semaphore::permit;

// What a callback-style acquire reported, if it completed.
struct outcome {
  std::optional<error_code> ec;
  permit granted;
  int calls = 0;

  bool done() const { return ec.has_value(); }
  bool succeeded() const { return ec.has_value() && !*ec; }
};

// A handler that records into an outcome owned by the test.
inline auto record(std::shared_ptr<outcome> into) {
  return [into = std::move(into)](error_code ec, permit p) {
    ++into->calls;
    into->ec = ec;
    into->granted = std::move(p);
  };
}

inline std::shared_ptr<outcome> start(keyed_semaphore& sem, std::string key, std::size_t n = 1) {
  auto result = std::make_shared<outcome>();
  sem.acquire(std::move(key), n, record(result));
  return result;
}

// Runs every ready handler (restarting a stopped context first); the
// context may be run again afterwards.
inline std::size_t drain(asio::io_context& ctx) {
  if (ctx.stopped()) ctx.restart();
  const std::size_t ran = ctx.poll();
  ctx.restart();
  return ran;
}

}  // namespace keysem::test

#endif
