// tcp_server: a line-protocol TCP server that limits concurrent requests per
// connection and per tenant, and a load client that checks it from outside.
//
// Two limits, two semaphores:
// - per connection (keyed by connection id): the session stops reading the
//   next request while its connection has `per_connection` requests in
//   flight. TCP flow control then pushes back on the client for free.
// - per tenant (keyed by the tenant named in each request): a request
//   either waits its turn ("wait") or is shed at once with try_acquire
//   ("try" → BUSY), as the client asks.
// A third, with one permit per key, serialises replies per connection: a
// keyed semaphore with one permit is an async mutex per key.
//
// main() runs the server on its own thread and io_context, points the load
// client at it over loopback (port 0: the kernel picks a free one), prints
// per-tenant results and exits non-zero if the client ever saw a limit
// exceeded or a request went unanswered.
//
// Usage: keysem_example_tcp_server [connections] [requests-per-connection]
#include "load_client.hpp"

#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

namespace asio = boost::asio;
using asio::ip::tcp;

struct server_limits {
  std::size_t per_connection = 2;
  std::size_t per_tenant = 3;
};

class line_server {
 public:
  line_server(asio::io_context& ctx, server_limits limits)
      : acceptor_(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        per_connection_(ctx, limits.per_connection),
        per_tenant_(ctx, limits.per_tenant),
        reply_lock_(ctx, 1) {}

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  void start() { asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached); }

  // Stops accepting; sessions end when their clients hang up.
  void stop() {
    asio::post(acceptor_.get_executor(), [this] { acceptor_.close(); });
  }

 private:
  struct connection {
    tcp::socket socket;
    std::uint64_t id;
    std::size_t in_flight = 0;
  };

  struct request {
    std::uint64_t id = 0;
    std::string tenant;
    bool shed_if_busy = false;
    int work_ms = 0;
  };

  asio::awaitable<void> accept_loop() {
    for (std::uint64_t next_id = 0;; ++next_id) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        co_return;  // stop() closed the acceptor
      }
      socket.set_option(tcp::no_delay(true));
      auto conn = std::make_shared<connection>(connection{std::move(socket), next_id});
      asio::co_spawn(acceptor_.get_executor(), session(std::move(conn)), asio::detached);
    }
  }

  asio::awaitable<void> session(std::shared_ptr<connection> conn) {
    std::string buffer;
    for (;;) {
      // Backpressure: no next read while this connection is at its limit.
      auto [acquire_ec, slot] =
          co_await per_connection_.acquire(conn->id, asio::as_tuple(asio::use_awaitable));
      if (acquire_ec) {
        co_return;
      }
      auto [ec, n] = co_await asio::async_read_until(conn->socket, asio::dynamic_buffer(buffer),
                                                     '\n', asio::as_tuple(asio::use_awaitable));
      if (ec) {
        co_return;  // the client hung up; requests in flight still reply
      }
      std::optional<request> req = parse(buffer.substr(0, n - 1));
      buffer.erase(0, n);
      if (!req) {
        co_return;  // not our protocol: drop the connection
      }
      asio::co_spawn(acceptor_.get_executor(), handle(conn, std::move(*req), std::move(slot)),
                     asio::detached);
    }
  }

  // Runs one request. `slot` is the connection's permit: it is released with
  // this frame, letting the session read the next request.
  asio::awaitable<void> handle(std::shared_ptr<connection> conn, request req,
                               keysem::async_keyed_semaphore<std::uint64_t>::permit slot) {
    std::optional<keysem::keyed_semaphore::permit> permit;
    if (req.shed_if_busy) {
      permit = per_tenant_.try_acquire(req.tenant);  // never waits
      if (!permit) {
        co_await reply(*conn, std::to_string(req.id) + " BUSY\n");
        co_return;
      }
    } else {
      auto [ec, p] = co_await per_tenant_.acquire(req.tenant, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        co_await reply(*conn, std::to_string(req.id) + " ERR " + ec.message() + "\n");
        co_return;
      }
      permit = std::move(p);
    }

    // Our own count of holders, independent of keysem's: this is what the
    // client checks against the limits.
    const std::size_t tenant_in_flight = ++tenant_in_flight_[req.tenant];
    const std::size_t connection_in_flight = ++conn->in_flight;

    asio::steady_timer work(acceptor_.get_executor(), std::chrono::milliseconds(req.work_ms));
    co_await work.async_wait(asio::as_tuple(asio::use_awaitable));

    // Count down before the permits go, so no newcomer is counted with us.
    --conn->in_flight;
    if (--tenant_in_flight_[req.tenant] == 0) {
      tenant_in_flight_.erase(req.tenant);  // memory follows live tenants
    }
    permit->release();
    slot.release();

    std::ostringstream line;
    line << req.id << " OK " << tenant_in_flight << ' ' << connection_in_flight << '\n';
    co_await reply(*conn, line.str());
  }

  // Replies of one connection are written one at a time, in FIFO order.
  asio::awaitable<void> reply(connection& conn, std::string line) {
    auto lock = co_await reply_lock_.acquire(conn.id, asio::use_awaitable);
    co_await asio::async_write(conn.socket, asio::buffer(line),
                               asio::as_tuple(asio::use_awaitable));  // a gone client is fine
  }

  static std::optional<request> parse(const std::string& line) {
    std::istringstream in(line);
    request req;
    std::string mode;
    if (!(in >> req.id >> req.tenant >> mode >> req.work_ms) || (mode != "wait" && mode != "try") ||
        req.work_ms < 0 || req.work_ms > 1000) {
      return std::nullopt;
    }
    req.shed_if_busy = mode == "try";
    return req;
  }

  tcp::acceptor acceptor_;
  keysem::async_keyed_semaphore<std::uint64_t> per_connection_;
  keysem::keyed_semaphore per_tenant_;
  keysem::async_keyed_semaphore<std::uint64_t> reply_lock_;
  std::map<std::string, std::size_t> tenant_in_flight_;  // one thread: no lock needed
};

namespace {

double percentile(std::vector<double> values, double p) {
  if (values.empty()) {
    return 0;
  }
  std::sort(values.begin(), values.end());
  const auto rank =
      static_cast<std::size_t>(std::lround(p * static_cast<double>(values.size() - 1)));
  return values[rank];
}

// Prints the report; true if every limit held and every request was answered.
bool print_report(const load_report& report, const server_limits& limits) {
  std::size_t total = 0;
  bool ok = report.unanswered == 0;
  std::printf("%-8s %8s %8s %8s %6s %14s %8s %8s\n", "tenant", "sent", "ok", "busy", "errors",
              "peak/limit", "p50 ms", "p99 ms");
  for (const auto& [name, t] : report.tenants) {
    total += t.sent;
    const bool within = t.peak_in_flight <= limits.per_tenant;
    ok = ok && within && t.errors == 0 && t.ok + t.busy == t.sent && t.ok > 0;
    std::printf("%-8s %8zu %8zu %8zu %6zu %9zu/%-4zu %8.2f %8.2f%s\n", name.c_str(), t.sent, t.ok,
                t.busy, t.errors, t.peak_in_flight, limits.per_tenant,
                percentile(t.latency_ms, 0.50), percentile(t.latency_ms, 0.99),
                within ? "" : "  LIMIT EXCEEDED");
  }
  const bool connection_within = report.peak_connection_in_flight <= limits.per_connection;
  ok = ok && connection_within;
  std::printf("per connection: peak %zu in flight (limit %zu)%s\n",
              report.peak_connection_in_flight, limits.per_connection,
              connection_within ? "" : "  LIMIT EXCEEDED");
  std::printf("%zu requests in %.2f s: %.0f requests/s, %zu unanswered\n", total, report.seconds,
              report.seconds > 0 ? static_cast<double>(total) / report.seconds : 0.0,
              report.unanswered);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const server_limits limits;
  load_options options;
  if (argc > 1) {
    options.connections = std::strtoul(argv[1], nullptr, 10);
  }
  if (argc > 2) {
    options.requests_per_connection = std::strtoul(argv[2], nullptr, 10);
  }

  // The server has its own thread and context, as it would in its own process.
  asio::io_context server_ctx;
  line_server server(server_ctx, limits);
  server.start();
  options.server = server.local_endpoint();
  std::thread server_thread([&server_ctx] { server_ctx.run(); });
  std::printf("server on %s:%u; limits: %zu per connection, %zu per tenant\n",
              options.server.address().to_string().c_str(), options.server.port(),
              limits.per_connection, limits.per_tenant);

  asio::io_context client_ctx;
  load_report report;
  std::exception_ptr failure;
  asio::co_spawn(client_ctx, run_load(options), [&](std::exception_ptr e, load_report r) {
    failure = std::move(e);
    report = std::move(r);
  });
  client_ctx.run();

  server.stop();
  server_thread.join();  // returns once every session has ended

  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "load client failed: %s\n", e.what());
    }
    return 1;
  }
  return print_report(report, limits) ? 0 : 1;
}
