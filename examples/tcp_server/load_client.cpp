// tcp_server/load_client.cpp — pipelined load over several connections.
//
// Each connection runs a sender and a receiver side by side. The sender may
// have at most `pipeline_depth` requests without a reply: it holds one
// permit of a keyed semaphore (keyed by connection) per outstanding request,
// and the receiver releases it when the reply arrives. That is keysem on the
// client side: a bound on work in flight per connection.
#include "load_client.hpp"

#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <unordered_map>

namespace asio = boost::asio;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

// A skewed mix: acme sends half the traffic and will queue; initech is light.
constexpr std::array<const char*, 6> tenant_mix = {"acme",   "acme",   "acme",
                                                   "globex", "globex", "initech"};

struct outstanding {
  std::string tenant;
  clock_type::time_point sent_at;
  keysem::async_keyed_semaphore<std::size_t>::permit slot;  // frees a pipeline slot when erased
};

class client_connection {
 public:
  client_connection(const load_options& options, std::size_t index,
                    keysem::async_keyed_semaphore<std::size_t>& pipeline, load_report& report,
                    tcp::socket socket)
      : options_(options),
        index_(index),
        pipeline_(pipeline),
        report_(report),
        socket_(std::move(socket)) {}

  asio::awaitable<void> run() {
    using namespace asio::experimental::awaitable_operators;
    co_await (send_all() && receive_all());
  }

 private:
  asio::awaitable<void> send_all() {
    for (std::size_t i = 0; i < options_.requests_per_connection; ++i) {
      // Waits while `pipeline_depth` requests of this connection await replies.
      auto slot = co_await pipeline_.acquire(index_, asio::use_awaitable);

      const std::uint64_t id = i;
      const std::string tenant = tenant_mix[(index_ * 7 + i) % tenant_mix.size()];
      const bool shed_if_busy = options_.try_every != 0 && i % options_.try_every == 0;
      std::ostringstream line;
      line << id << ' ' << tenant << ' ' << (shed_if_busy ? "try" : "wait") << ' '
           << options_.work_ms << '\n';

      ++report_.tenants[tenant].sent;
      pending_.emplace(id, outstanding{tenant, clock_type::now(), std::move(slot)});
      co_await asio::async_write(socket_, asio::buffer(line.str()), asio::use_awaitable);
    }
  }

  asio::awaitable<void> receive_all() {
    std::string buffer;
    for (std::size_t received = 0; received < options_.requests_per_connection; ++received) {
      auto [ec, n] = co_await asio::async_read_until(socket_, asio::dynamic_buffer(buffer), '\n',
                                                     asio::as_tuple(asio::use_awaitable));
      if (ec) {
        break;  // counted as unanswered below
      }
      record(buffer.substr(0, n - 1));
      buffer.erase(0, n);
    }
    report_.unanswered += pending_.size();
    pending_.clear();
  }

  void record(const std::string& reply) {
    std::istringstream in(reply);
    std::uint64_t id = 0;
    std::string status;
    in >> id >> status;
    auto it = pending_.find(id);
    if (it == pending_.end()) {
      return;
    }
    tenant_report& t = report_.tenants[it->second.tenant];
    if (status == "OK") {
      std::size_t tenant_in_flight = 0;
      std::size_t connection_in_flight = 0;
      in >> tenant_in_flight >> connection_in_flight;
      ++t.ok;
      t.peak_in_flight = std::max(t.peak_in_flight, tenant_in_flight);
      report_.peak_connection_in_flight =
          std::max(report_.peak_connection_in_flight, connection_in_flight);
      t.latency_ms.push_back(
          std::chrono::duration<double, std::milli>(clock_type::now() - it->second.sent_at)
              .count());
    } else if (status == "BUSY") {
      ++t.busy;
    } else {
      ++t.errors;
    }
    pending_.erase(it);  // releases the pipeline slot: the sender may go on
  }

  const load_options& options_;
  std::size_t index_;
  keysem::async_keyed_semaphore<std::size_t>& pipeline_;
  load_report& report_;
  tcp::socket socket_;
  std::unordered_map<std::uint64_t, outstanding> pending_;
};

asio::awaitable<void> run_connection(const load_options& options, std::size_t index,
                                     keysem::async_keyed_semaphore<std::size_t>& pipeline,
                                     load_report& report) {
  tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(options.server, asio::use_awaitable);
  socket.set_option(tcp::no_delay(true));
  client_connection connection(options, index, pipeline, report, std::move(socket));
  co_await connection.run();
}

}  // namespace

asio::awaitable<load_report> run_load(load_options options) {
  auto ex = co_await asio::this_coro::executor;
  keysem::async_keyed_semaphore<std::size_t> pipeline(ex, options.pipeline_depth);
  load_report report;

  const auto start = clock_type::now();
  // One coroutine per connection, awaited together: a ranged parallel group.
  using op_type =
      decltype(asio::co_spawn(ex, run_connection(options, 0, pipeline, report), asio::deferred));
  std::vector<op_type> connections;
  for (std::size_t i = 0; i < options.connections; ++i) {
    connections.push_back(
        asio::co_spawn(ex, run_connection(options, i, pipeline, report), asio::deferred));
  }
  auto [order, errors] = co_await asio::experimental::make_parallel_group(std::move(connections))
                             .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  (void)order;
  for (const std::exception_ptr& e : errors) {
    if (e) {
      std::rethrow_exception(e);  // e.g. connection refused: nothing to report
    }
  }
  report.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  co_return report;
}
