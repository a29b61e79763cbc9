// Built by a stand-alone project against an installed keysem::redis: the
// headers, the component and the link line (hiredis included) work for a
// user. No Redis runs here: the semaphore is pointed at a loopback port
// nobody listens on, and the acquire must fail closed with
// connection_failed, which goes through the whole client (RESP encoding by
// hiredis, the connection, the error path).
#include <keysem/redis.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>

namespace {

// A loopback port that was free a moment ago and is closed now.
std::uint16_t closed_port(boost::asio::io_context& ctx) {
  boost::asio::ip::tcp::acceptor acceptor(
      ctx, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

}  // namespace

int main() {
  boost::asio::io_context ctx;
  keysem::redis::endpoint server;
  server.port = closed_port(ctx);
  keysem::redis::fleet_semaphore<> sem(ctx.get_executor(), server, 2);

  boost::system::error_code result;
  bool completed = false;
  sem.acquire("tenant", 1, [&](boost::system::error_code ec, keysem::redis::fleet_permit) {
    result = ec;
    completed = true;
    sem.close();
  });
  ctx.run();
  return completed && result == keysem::redis::error::connection_failed ? 0 : 1;
}
