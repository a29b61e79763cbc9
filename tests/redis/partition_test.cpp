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
// from 0) alone. The server's bytes to the connection numbered
// `hold_connection` are kept back until deliver_held() (a slow reply).
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
  int hold_connection = -1;
  int accepted() const { return accepted_; }
  std::size_t held_bytes() const { return held_.size(); }

  // Stops holding and writes what was held, in order, before anything newer.
  void deliver_held() {
    hold_connection = -1;
    if (held_to_) asio::write(*held_to_, asio::buffer(held_));
    held_.clear();
  }

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
        pump(from, to, index, false);
        pump(to, from, index, true);
      });
      accept();
    });
  }

  void pump(std::shared_ptr<tcp::socket> in, std::shared_ptr<tcp::socket> out, int index,
            bool to_client) {
    auto buffer = std::make_shared<std::array<char, 4096>>();
    in->async_read_some(asio::buffer(*buffer), [this, in, out, buffer, index, to_client](
                                                   error_code ec, std::size_t n) {
      if (ec) {
        error_code ignored;
        out->close(ignored);
        return;
      }
      if (blackhole || index == blackhole_connection) return pump(in, out, index, to_client);
      if (to_client && index == hold_connection) {
        held_.append(buffer->data(), n);
        held_to_ = out;
        return pump(in, out, index, to_client);
      }
      asio::async_write(*out, asio::buffer(buffer->data(), n),
                        [this, in, out, buffer, index, to_client](error_code ec2, std::size_t) {
                          if (!ec2) pump(in, out, index, to_client);
                        });
    });
  }

  asio::io_context& ctx_;
  tcp::acceptor acceptor_;
  std::uint16_t target_;
  int accepted_ = 0;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
  std::string held_;
  std::shared_ptr<tcp::socket> held_to_;
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

TEST_CASE("partition: a release while a waiter's first script is in flight wakes it when the key is already watched") {
  redis_server server;
  asio::io_context ctx;
  {
    proxy link(ctx, server.port());
    // Lease 10 s: the expiry hint is 10 s away, so a waiter granted within
    // 3 s of the release was woken by it.
    auto options = short_lease();
    options.lease = 10s;
    options.safety_margin = 1s;
    options.request_timeout = 5s;
    fleet holder(ctx.get_executor(), server.where(), 2, options);
    fleet waiters(ctx.get_executor(), link.where(), 2, options);
    run(
        ctx,
        [&]() -> asio::awaitable<void> {
          auto held = co_await holder.acquire("k", 2);
          fleet_permit first, second;
          waiters.acquire("k", 1, [&](boost::system::error_code ec, fleet_permit p) {
            REQUIRE_FALSE(ec);
            first = std::move(p);
          });
          REQUIRE(co_await eventually([&] { return subscribers(server.where(), "t", "k") == 1; }));
          // The first waiter is parked once its three scripts are answered: the
          // first busy answer, the retry on the subscriber's connect and the one
          // on its confirmation (after the handshake's SCRIPT LOADs).
          REQUIRE(co_await eventually(
              [&] { return waiters.stats().round_trips == detail::script_count + 3; }));
          // Connection 0 carries the waiters' commands, 1 their subscriptions.
          REQUIRE(link.accepted() == 2);
          link.hold_connection = 0;
          waiters.acquire("k", 1, [&](boost::system::error_code ec, fleet_permit p) {
            REQUIRE_FALSE(ec);
            second = std::move(p);
          });
          // The second waiter's busy answer waits in the proxy while the
          // release is published and the first waiter's retry is answered.
          REQUIRE(co_await eventually([&] { return link.held_bytes() > 0; }));
          const auto busy_answer = link.held_bytes();
          held.release();
          REQUIRE(co_await eventually([&] { return link.held_bytes() > busy_answer; }));
          const auto released = steady::now();
          link.deliver_held();
          REQUIRE(co_await eventually([&] { return first && second; }, 3s));
          MESSAGE("second waiter granted "
                  << std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - released)
                         .count()
                  << " ms after its busy answer arrived");
          CHECK(first.valid());
          CHECK(second.valid());
        },
        15s);
    link.stop();
  }
  drain(ctx);
}
