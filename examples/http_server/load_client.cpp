// http_server/load_client.cpp — virtual users over keep-alive connections.
#include "load_client.hpp"

#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <random>
#include <string_view>
#include <tuple>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

std::vector<tenant_profile> default_tenant_profiles() {
  return {
      {"acme", 12, 20, 80},    // paying: queues a little, times out now and then
      {"globex", 12, 20, 80},  // the same load on the free limit: queues, sheds, times out
      {"initech", 2, 5, 15},   // within the free limit: served at once
  };
}

namespace {

std::size_t header_number(const http::response<http::string_body>& res, std::string_view name) {
  const auto it = res.find(name);
  if (it == res.end()) {
    return 0;
  }
  std::size_t value = 0;
  const std::string_view text = it->value();
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

// "from-until" → {from, until}; {0, 0} if the header is missing or malformed.
std::pair<long long, long long> held_interval(const http::response<http::string_body>& res) {
  const auto it = res.find("X-Permit-Held");
  if (it == res.end()) {
    return {0, 0};
  }
  const std::string_view text = it->value();
  const char* const end = text.data() + text.size();
  long long from = 0, until = 0;
  auto [p, ec] = std::from_chars(text.data(), end, from);
  if (ec != std::errc() || p == end || *p != '-' ||
      std::from_chars(p + 1, end, until).ec != std::errc() || until < from) {
    return {0, 0};
  }
  return {from, until};
}

// The most intervals [from, until) that hold at one instant. A release and
// an acquire at the same instant do not overlap: ends sort before starts.
std::size_t peak_overlap(const std::vector<std::pair<long long, long long>>& held) {
  std::vector<std::pair<long long, int>> events;
  events.reserve(2 * held.size());
  for (const auto& [from, until] : held) {
    events.emplace_back(from, +1);
    events.emplace_back(until, -1);
  }
  std::sort(events.begin(), events.end());  // at equal times, -1 before +1
  std::size_t now = 0, peak = 0;
  for (const auto& [time, delta] : events) {
    now = delta > 0 ? now + 1 : now - 1;
    peak = std::max(peak, now);
  }
  return peak;
}

void record(http_tenant_stats& stats, const http::response<http::string_body>& res,
            clock_type::duration latency) {
  const bool has_retry_after = res.find(http::field::retry_after) != res.end();
  switch (res.result()) {
    case http::status::ok: {
      const auto held = held_interval(res);
      if (held.second == 0) {
        ++stats.other;  // a 200 that does not say when it held its permit
        break;
      }
      ++stats.served;
      stats.held.push_back(held);
      stats.peak_concurrency =
          std::max(stats.peak_concurrency, header_number(res, "X-Concurrency"));
      stats.limit = header_number(res, "X-Limit");
      stats.latency_ms.push_back(std::chrono::duration<double, std::milli>(latency).count());
      break;
    }
    case http::status::too_many_requests:
      ++(has_retry_after ? stats.shed : stats.other);
      break;
    case http::status::service_unavailable:
      ++(has_retry_after ? stats.timed_out : stats.other);
      break;
    default:
      ++stats.other;
  }
}

long long steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             clock_type::now().time_since_epoch())
      .count();
}

// A failed connect, read or write. With other servers left to try, the user
// moves on to the next one (true); otherwise the failure is final (false).
bool fail_over(const http_load_options& options, http_load_report& report, std::size_t& server,
               std::size_t& failures_in_a_row) {
  if (++failures_in_a_row >= options.servers.size()) {
    ++report.transport_errors;
    return false;
  }
  ++report.failovers;
  if (report.first_failure_ns == 0) {
    report.first_failure_ns = steady_ns();
  }
  server = (server + 1) % options.servers.size();
  return true;
}

// One user: one connection, requests back to back until the deadline.
asio::awaitable<void> virtual_user(const http_load_options& options, const tenant_profile& tenant,
                                   unsigned seed, std::size_t server,
                                   clock_type::time_point deadline, http_load_report& report) {
  http_tenant_stats& stats = report.tenants[tenant.name];
  std::minstd_rand random(seed);  // seeded: every run offers the same work
  std::uniform_int_distribution<int> work_ms(tenant.min_work_ms, tenant.max_work_ms);

  beast::tcp_stream stream(co_await asio::this_coro::executor);
  beast::flat_buffer buffer;
  bool connected = false;
  std::size_t failures_in_a_row = 0;
  for (std::size_t i = 0; i < options.max_requests_per_user && clock_type::now() < deadline; ++i) {
    stream.expires_after(std::chrono::seconds(5));  // a stuck server fails the run, not hangs it
    if (!connected) {
      auto [ec] = co_await stream.async_connect(options.servers[server],
                                                asio::as_tuple(asio::use_awaitable));
      if (ec) {
        stream.close();
        if (fail_over(options, report, server, failures_in_a_row)) continue;
        co_return;
      }
      connected = true;
    }
    http::request<http::empty_body> req(http::verb::get,
                                        "/work?ms=" + std::to_string(work_ms(random)), 11);
    req.set(http::field::host, "127.0.0.1");
    req.set("X-Tenant", tenant.name);
    req.keep_alive(true);

    const auto start = clock_type::now();
    http::response<http::string_body> res;
    auto [ec, written] =
        co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    if (!ec) {
      std::tie(ec, std::ignore) =
          co_await http::async_read(stream, buffer, res, asio::as_tuple(asio::use_awaitable));
    }
    if (ec) {
      stream.close();
      connected = false;
      buffer.clear();
      if (fail_over(options, report, server, failures_in_a_row)) continue;
      co_return;
    }
    failures_in_a_row = 0;
    ++stats.requests;
    record(stats, res, clock_type::now() - start);
    if (res.result() == http::status::ok) {
      ++report.served_by_server[server];
    }

    if (!res.keep_alive()) {  // the server is shutting down or said goodbye
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream.close();
      connected = false;
    }
    if (res.result() != http::status::ok) {
      // A polite client would wait Retry-After seconds; a load generator
      // backs off briefly so the pressure stays on for the demo.
      asio::steady_timer backoff(co_await asio::this_coro::executor, options.backoff);
      co_await backoff.async_wait(asio::use_awaitable);
    }
  }
  if (connected) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }
}

// The first instant at or after `since` at which `limit` intervals held at
// once, in ms after `since`; -1 if that never happened.
double full_limit_again_ms(const std::vector<std::pair<long long, long long>>& held,
                           std::size_t limit, long long since) {
  std::vector<std::pair<long long, int>> events;
  events.reserve(2 * held.size());
  for (const auto& [from, until] : held) {
    events.emplace_back(from, +1);
    events.emplace_back(until, -1);
  }
  std::sort(events.begin(), events.end());
  std::size_t now = 0;
  for (const auto& [time, delta] : events) {
    now = delta > 0 ? now + 1 : now - 1;
    if (time >= since && limit != 0 && now >= limit) {
      return static_cast<double>(time - since) / 1e6;
    }
  }
  return -1;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) {
    return 0;
  }
  std::sort(values.begin(), values.end());
  return values[static_cast<std::size_t>(std::lround(p * static_cast<double>(values.size() - 1)))];
}

}  // namespace

asio::awaitable<http_load_report> run_http_load(http_load_options options) {
  auto ex = co_await asio::this_coro::executor;
  http_load_report report;
  const auto start = clock_type::now();
  const auto deadline = start + options.duration;
  report.served_by_server.assign(options.servers.size(), 0);

  using op_type = decltype(asio::co_spawn(
      ex, virtual_user(options, options.tenants.front(), 0, 0, deadline, report), asio::deferred));
  std::vector<op_type> users;
  unsigned seed = 1;
  for (const tenant_profile& tenant : options.tenants) {
    report.tenants[tenant.name].users = tenant.users;
    for (std::size_t i = 0; i < tenant.users; ++i) {
      // Users round robin over the servers, so each serves every busy tenant.
      const std::size_t server = (seed - 1) % options.servers.size();
      users.push_back(asio::co_spawn(
          ex, virtual_user(options, tenant, seed++, server, deadline, report), asio::deferred));
    }
  }
  auto [order, errors] = co_await asio::experimental::make_parallel_group(std::move(users))
                             .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  (void)order;
  for (const std::exception_ptr& e : errors) {
    report.transport_errors += e ? 1 : 0;
  }
  report.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  for (auto& [name, stats] : report.tenants) {
    stats.peak_concurrency = std::max(stats.peak_concurrency, peak_overlap(stats.held));
    if (report.first_failure_ns != 0) {
      stats.full_limit_again_ms =
          full_limit_again_ms(stats.held, stats.limit, report.first_failure_ns);
    }
  }
  co_return report;
}

bool print_load_table(const http_load_report& report) {
  bool ok = report.transport_errors == 0;
  std::size_t total = 0;
  std::printf("\n%-8s %5s %8s %7s %9s %10s %9s %8s %8s\n", "tenant", "users", "requests", "served",
              "shed 429", "t/out 503", "max/limit", "p50 ms", "p99 ms");
  for (const auto& [name, t] : report.tenants) {
    // limit == 0: nothing was served, so the server never told us its limit.
    const bool within = t.limit != 0 && t.peak_concurrency <= t.limit;
    ok = ok && within && t.other == 0;
    total += t.requests;
    std::printf("%-8s %5zu %8zu %7zu %9zu %10zu %5zu/%-3zu %8.1f %8.1f%s\n", name.c_str(), t.users,
                t.requests, t.served, t.shed, t.timed_out, t.peak_concurrency, t.limit,
                percentile(t.latency_ms, 0.50), percentile(t.latency_ms, 0.99),
                t.other != 0 ? "  UNEXPECTED ANSWERS"
                : within     ? ""
                             : "  LIMIT EXCEEDED");
  }
  std::printf("%zu requests in %.1f s (%.0f/s), %zu transport errors\n", total, report.seconds,
              report.seconds > 0 ? static_cast<double>(total) / report.seconds : 0.0,
              report.transport_errors);
  if (report.served_by_server.size() > 1) {
    std::printf("served per server:");
    for (const std::size_t served : report.served_by_server) {
      std::printf(" %zu", served);
    }
    std::printf("; max/limit is across all of them\n");
  }
  if (report.failovers != 0) {
    std::printf("%zu requests were cut off by a server that failed; their users moved on\n",
                report.failovers);
    for (const auto& [name, t] : report.tenants) {
      if (t.full_limit_again_ms < 0) {
        std::printf("  %-8s never held its full limit (%zu) at once after the failure\n",
                    name.c_str(), t.limit);
      } else {
        std::printf("  %-8s held its full limit (%zu) at once again %.0f ms after the failure\n",
                    name.c_str(), t.limit, t.full_limit_again_ms);
      }
    }
  }
  std::printf("%s\n", ok ? "every tenant stayed within its limit"
                         : "FAILED: a limit was exceeded or requests failed");
  return ok;
}
