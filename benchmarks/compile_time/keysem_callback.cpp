// Compile-time probe: asio_only.cpp plus keysem and one callback acquire.
// scripts/compile_time reports how much longer this takes to compile.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <keysem/keysem.hpp>

int main() {
  boost::asio::io_context io;
  boost::asio::post(io, [] {});
  keysem::keyed_semaphore sem(io, 1);
  sem.acquire("key", [](boost::system::error_code, keysem::keyed_semaphore::permit) {});
  io.run();
}
