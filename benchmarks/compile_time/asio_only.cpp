// Compile-time baseline: what a callback user of asio includes and does
// anyway. See scripts/compile_time and keysem_callback.cpp.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

int main() {
  boost::asio::io_context io;
  boost::asio::post(io, [] {});
  io.run();
}
