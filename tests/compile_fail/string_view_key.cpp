// Must not compile: a std::string_view key would outlive the characters it
// views (the semaphore keeps keys while permits are held or acquires wait).
// ctest's compile_fail.string_view_key expects keysem's static_assert.
#include <keysem/keysem.hpp>

#include <boost/asio/io_context.hpp>

#include <string_view>

int main() {
  using semaphore = keysem::async_keyed_semaphore<std::string_view>;
  boost::asio::io_context ctx;
  semaphore sem(ctx, 1);
  sem.acquire(std::string_view("k"), [](boost::system::error_code, semaphore::permit) {});
  ctx.run();
}
