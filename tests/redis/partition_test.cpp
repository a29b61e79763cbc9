// Partitions through an in-test TCP proxy: a server that never answers, and
// a link that starts dropping bytes while a permit is held.
#include "fleet_support.hpp"

using namespace keysem::redis;
using namespace keysem::redis::test;
using asio::ip::tcp;

namespace {

// Forwards loopback connections to `target`; while `blackhole` is set, bytes
// in both directions are read and dropped (a silent partition).
class proxy {
 public:
  proxy(asio::io_context& ctx, std::uint16_t target)
      : ctx_(ctx), acceptor_(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), 0)), target_(target) {
    accept();
  }
  ~proxy() { stop(); }

  endpoint where() const { return endpoint{"127.0.0.1", acceptor_.local_endpoint().port(), {}, 0}; }
  bool blackhole = false;

  void stop() {
    error_code ignored;
    acceptor_.close(ignored);
    for (auto& s : sockets_) s->close(ignored);
  }

 private:
  void accept() {
    acceptor_.async_accept([this](error_code ec, tcp::socket client) {
      if (ec) return;
      auto from = std::make_shared<tcp::socket>(std::move(client));
      auto to = std::make_shared<tcp::socket>(ctx_);
      sockets_.push_back(from);
      sockets_.push_back(to);
      to->async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), target_), [this, from, to](error_code ec2) {
        if (ec2) return;
        pump(from, to);
        pump(to, from);
      });
      accept();
    });
  }

  void pump(std::shared_ptr<tcp::socket> in, std::shared_ptr<tcp::socket> out) {
    auto buffer = std::make_shared<std::array<char, 4096>>();
    in->async_read_some(asio::buffer(*buffer), [this, in, out, buffer](error_code ec, std::size_t n) {
      if (ec) {
        error_code ignored;
        out->close(ignored);
        return;
      }
      if (blackhole) return pump(in, out);
      asio::async_write(*out, asio::buffer(buffer->data(), n), [this, in, out, buffer](error_code ec2, std::size_t) {
        if (!ec2) pump(in, out);
      });
    });
  }

  asio::io_context& ctx_;
  tcp::acceptor acceptor_;
  std::uint16_t target_;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
};

}  // namespace

TEST_CASE("partition: a server that accepts but never answers fails acquires with timed_out within the bound") {
  redis_server server;
  asio::io_context ctx;
  {
    proxy link(ctx, server.port());
    link.blackhole = true;
    fleet sem(ctx.get_executor(), link.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      const auto start = steady::now();
      auto [ec, p] = co_await sem.acquire("k", 1, tuple_token());
      CHECK(ec == error::timed_out);
      CHECK_FALSE(p);
      const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start);
      MESSAGE("blackholed: timed_out after " << took.count() << " ms (request_timeout 300 ms)");
      CHECK(took < 2s);
    });
    link.stop();
  }
  drain(ctx);
}

TEST_CASE("partition: a holder cut off from Redis stops believing before anyone else is granted its permit") {
  redis_server server;
  asio::io_context ctx;
  {
    proxy link(ctx, server.port());
    fleet cut_off(ctx.get_executor(), link.where(), 1, short_lease());
    fleet direct(ctx.get_executor(), server.where(), 1, short_lease());
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await cut_off.acquire("k");
      std::optional<steady::time_point> lost_at;
      held.async_wait_lost([&](boost::system::error_code ec) {
        if (!ec) lost_at = steady::now();
      });
      link.blackhole = true;
      const auto cut = steady::now();
      auto other = co_await direct.acquire("k");
      const auto granted_at = steady::now();
      REQUIRE(lost_at.has_value());
      CHECK(*lost_at <= granted_at);  // no double belief
      CHECK_FALSE(held.valid());
      CHECK(other.valid());
      MESSAGE("partitioned holder lost its permit "
              << std::chrono::duration_cast<std::chrono::milliseconds>(*lost_at - cut).count()
              << " ms after the cut; the other client was granted it "
              << std::chrono::duration_cast<std::chrono::milliseconds>(granted_at - *lost_at).count()
              << " ms later");
      CHECK(granted_at - cut < 500ms + 1s);
    }, 10s);
    link.stop();
  }
  drain(ctx);
}
