// Must not compile: a std::span key would outlive the elements it views (the
// semaphore keeps keys while permits are held or acquires wait).
// ctest's compile_fail.span_key expects keysem's static_assert. A hasher and
// an equality are supplied so that the only reason to fail is ownership.
#include <keysem/keysem.hpp>

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <span>
#include <string_view>

struct span_hash {
  std::size_t operator()(std::span<const char> s) const noexcept {
    return std::hash<std::string_view>()(std::string_view(s.data(), s.size()));
  }
};

struct span_equal {
  bool operator()(std::span<const char> a, std::span<const char> b) const noexcept {
    return std::ranges::equal(a, b);
  }
};

int main() {
  using semaphore = keysem::async_keyed_semaphore<std::span<const char>, span_hash, span_equal>;
  static constexpr char key[] = {'k'};
  boost::asio::io_context ctx;
  semaphore sem(ctx, 1);
  sem.acquire(std::span<const char>(key), [](boost::system::error_code, semaphore::permit) {});
  ctx.run();
}
