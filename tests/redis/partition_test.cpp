// Partitions through an in-test TCP proxy: a server that never answers, and
// a link that starts dropping bytes while a permit is held.
#include "fleet_support.hpp"

using namespace keysem::redis;
using namespace keysem::redis::test;
using asio::ip::tcp;

namespace {

// Forwards loopback connections to `target`; while `blackhole` is set, bytes
// in both directions are read and dropped (a silent partition), and so are
// those of the connection numbered `blackhole_connection` (in accept order,
// from 0) alone.
class proxy {
 public:
  proxy(asio::io_context& ctx, std::uint16_t target)
      : ctx_(ctx), acceptor_(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), 0)), target_(target) {
    accept();
  }
  ~proxy() { stop(); }

  endpoint where() const { return endpoint{"127.0.0.1", acceptor_.local_endpoint().port(), {}, 0}; }
  bool blackhole = false;
  int blackhole_connection = -1;
  int accepted() const { return accepted_; }

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
      const int index = accepted_++;
      to->async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), target_), [this, from, to, index](error_code ec2) {
        if (ec2) return;
        pump(from, to, index);
        pump(to, from, index);
      });
      accept();
    });
  }

  void pump(std::shared_ptr<tcp::socket> in, std::shared_ptr<tcp::socket> out, int index) {
    auto buffer = std::make_shared<std::array<char, 4096>>();
    in->async_read_some(asio::buffer(*buffer), [this, in, out, buffer, index](error_code ec, std::size_t n) {
      if (ec) {
        error_code ignored;
        out->close(ignored);
        return;
      }
      if (blackhole || index == blackhole_connection) return pump(in, out, index);
      asio::async_write(*out, asio::buffer(buffer->data(), n), [this, in, out, buffer, index](error_code ec2, std::size_t) {
        if (!ec2) pump(in, out, index);
      });
    });
  }

  asio::io_context& ctx_;
  tcp::acceptor acceptor_;
  std::uint16_t target_;
  int accepted_ = 0;
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

TEST_CASE("partition: a subscriber link that goes silent is replaced, and waiters are woken by release messages again") {
  redis_server server;
  asio::io_context ctx;
  {
    proxy link(ctx, server.port());
    // Lease 3 s: the liveness check runs every second, and a waiter woken
    // within 1 s of a release was woken by a message, not by the expiry
    // hint (at least 2 s away while the holder refreshes).
    auto options = short_lease();
    options.lease = 3s;
    options.safety_margin = 300ms;
    fleet waiter(ctx.get_executor(), link.where(), 1, options);
    fleet holder(ctx.get_executor(), server.where(), 1, options);
    run(ctx, [&]() -> asio::awaitable<void> {
      auto held = co_await holder.acquire("k");
      std::optional<steady::time_point> granted_at;
      fleet_permit second;
      waiter.acquire("k", 1, [&](boost::system::error_code ec, fleet_permit p) {
        REQUIRE_FALSE(ec);
        second = std::move(p);
        granted_at = steady::now();
      });
      REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 1; }));
      // Connection 0 carries the waiter's commands, 1 its subscriptions.
      REQUIRE(link.accepted() == 2);
      link.blackhole_connection = 1;
      const auto cut = steady::now();
      // The dead link is noticed and replaced: the proxy closes the old
      // server side once the client drops it, and the new one subscribes
      // (a release before its subscription takes effect is caught by the
      // retry its confirmation triggers).
      REQUIRE(co_await eventually([&] {
        return link.accepted() == 3 && subscribers(server.where(), "t", "k") == 1;
      }));
      MESSAGE("silent subscriber replaced "
              << std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - cut).count()
              << " ms after the cut (liveness check every 1000 ms, request timeout 300 ms)");
      CHECK_FALSE(granted_at.has_value());
      const auto released = steady::now();
      held.release();
      REQUIRE(co_await eventually([&] { return granted_at.has_value(); }));
      const auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(*granted_at - released);
      MESSAGE("release -> waiter " << latency.count() << " ms through the new subscriber");
      CHECK(latency < 1s);
      CHECK(second.valid());
    }, 15s);
    link.stop();
  }
  drain(ctx);
}
