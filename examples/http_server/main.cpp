// http_server: a Boost.Beast HTTP server with a concurrency limit per tenant.
//
// Each request names its tenant in the X-Tenant header. GET /work?ms=N
// "works" for N milliseconds while holding one of the tenant's permits. The
// admission policy is the semaphore's configuration, and one acquire per
// request applies it:
//
//   limit       free tenants: --limit; paying tenants: their tier (set_limit)
//   queue bound max_waiters_per_key: while that many wait, an acquire that
//               would wait completes with queue_full → 429, Retry-After
//   deadline    acquire_for: no permit within --timeout-ms → timed_out → 503,
//               Retry-After
//   otherwise   → 200 once a permit is granted (at once if one is free)
//
// Fleet mode (serve --redis HOST:PORT): several replicas share each
// tenant's limit through Redis. A request then also needs the tenant's
// fleet-wide permit (fleet_limiter.hpp) before the same deadline; the
// replica's own semaphore still bounds its queue (429) and its total, and
// /metrics shows that semaphore: this replica's share of the fleet. If
// Redis cannot be reached, nothing is granted: 503.
//
// Every 200 carries X-Limit (the tenant's limit), X-Concurrency (the
// tenant's permits in use in this replica just after this one was granted) and
// X-Permit-Held (when, on the server's steady clock, the request held its
// permit), so a client can check every tenant's limit from outside: see
// load_client.cpp. GET /metrics exposes semaphore_stats and the busiest
// tenants in the Prometheus text format.
//
// The server runs on several threads; each connection is a coroutine on its
// own strand. The command line is in options.hpp; `serve` runs until SIGINT
// or SIGTERM, then shuts down gracefully and exits 0. The other two modes
// print a per-tenant table and exit 1 if a tenant exceeded its limit.
#include "fleet_limiter.hpp"
#include "load_client.hpp"
#include "options.hpp"

#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

class http_server {
 public:
  using request = http::request<http::string_body>;
  using response = http::response<http::string_body>;

  http_server(asio::io_context& ctx, const server_options& options)
      : ctx_(ctx),
        options_(options),
        acceptor_(asio::make_strand(ctx),
                  tcp::endpoint(asio::ip::make_address("127.0.0.1"), options.port)),
        limiter_(ctx, options.limit,
                 keysem::semaphore_options{.shards = 0,
                                           .max_waiters_per_key = options.max_waiting,
                                           .total_limit = options.total}) {
    for (const auto& [tenant, limit] : options.tiers) {
      limiter_.set_limit(tenant, limit);  // paying tenants; everyone else gets options.limit
    }
    if (options.fleet.enabled()) {
      fleet_ = std::make_unique<fleet_limiter>(ctx.get_executor(), options.fleet, options.limit);
    }
  }

  // Fleet mode: stores the tiers in Redis, where every replica finds them.
  // Call before serving; throws if Redis does not take them.
  asio::awaitable<void> store_fleet_tiers() {
    if (fleet_) {
      co_await fleet_->store_tiers(options_.tiers);
    }
  }

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  void start() { asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached); }

  // Graceful shutdown, callable from any thread: stop accepting, complete
  // every queued acquire with keysem::error::closed (those requests get a
  // 503), let requests that hold a permit finish, then stop the context.
  void shutdown() {
    if (stopping_.exchange(true)) {
      return;
    }
    asio::post(acceptor_.get_executor(), [this] { acceptor_.close(); });
    limiter_.close();
    if (fleet_) {
      fleet_->close();
    }
    asio::co_spawn(ctx_, drain(), asio::detached);
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      // Each connection gets its own strand.
      auto [ec, socket] = co_await acceptor_.async_accept(
          asio::any_io_executor(asio::make_strand(ctx_)), asio::as_tuple(asio::use_awaitable));
      if (ec) {
        co_return;  // closed by shutdown()
      }
      auto ex = socket.get_executor();
      asio::co_spawn(ex, session(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  asio::awaitable<void> session(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    for (;;) {
      stream.expires_after(30s);  // idle keep-alive connections go away
      request req;
      auto [ec, n] =
          co_await http::async_read(stream, buffer, req, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        break;
      }
      ++in_progress_;
      stream.expires_never();  // handle() may legitimately wait
      response res = co_await handle(req);
      res.version(req.version());
      res.keep_alive(req.keep_alive() && !stopping_);
      res.prepare_payload();
      stream.expires_after(10s);
      auto [write_ec, written] =
          co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      --in_progress_;
      if (write_ec || !res.keep_alive()) {
        break;
      }
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  asio::awaitable<response> handle(const request& req) {
    const std::string_view target = req.target();
    if (req.method() == http::verb::get && target == "/metrics") {
      co_return text(http::status::ok, metrics(), "text/plain; version=0.0.4; charset=utf-8");
    }
    if (target != "/work" && !target.starts_with("/work?")) {
      co_return text(http::status::not_found, "no such resource\n");
    }
    const auto tenant = req.find("X-Tenant");
    if (tenant == req.end() || !valid_tenant(tenant->value())) {
      co_return text(http::status::bad_request, "X-Tenant: 1 to 64 of [A-Za-z0-9._-] required\n");
    }
    co_return co_await work(std::string(tenant->value()), work_ms(target));
  }

  // What a request holds while it works: its replica's permit and, in
  // fleet mode, the tenant's fleet-wide one (released first: declared last).
  struct admission {
    boost::system::error_code ec;
    keysem::keyed_semaphore::permit local;
    fleet_limiter::permit fleet;
  };

  // Both acquires share one deadline: --timeout-ms is the whole wait.
  asio::awaitable<admission> admit(const std::string& tenant) {
    const auto deadline = std::chrono::steady_clock::now() + options_.acquire_timeout;
    admission a;
    std::tie(a.ec, a.local) =
        co_await limiter_.acquire_until(tenant, deadline, asio::as_tuple(asio::use_awaitable));
    if (!a.ec && fleet_) {
      std::tie(a.ec, a.fleet) = co_await fleet_->acquire_until(tenant, deadline);
    }
    co_return a;
  }

  // The admission policy: one admission, and a status for each way it can end.
  asio::awaitable<response> work(std::string tenant, int ms) {
    // Granted at once if a permit is free; otherwise queued, unless
    // max_waiting already queue (queue_full), until the deadline (timed_out).
    admission granted = co_await admit(tenant);
    const boost::system::error_code ec = granted.ec;
    if (ec == keysem::error::queue_full) {
      // max_waiting requests already queue for this tenant: queueing more
      // would only add latency. Shed now, tell the client when to retry.
      co_return retry_later(http::status::too_many_requests, "too many requests for " + tenant);
    }
    if (ec == asio::error::timed_out) {
      co_return retry_later(http::status::service_unavailable, "timed out waiting for " + tenant);
    }
    if (ec) {  // closed: shutting down; in fleet mode also Redis unreachable
      co_return retry_later(http::status::service_unavailable,
                            stopping_ ? "shutting down" : "no permit: " + ec.message());
    }

    const std::size_t concurrency = limiter_.in_use(tenant);  // ours included
    const auto held_from = steady_ns();
    asio::steady_timer work(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
    co_await work.async_wait(asio::as_tuple(asio::use_awaitable));
    const auto held_until = steady_ns();  // before the permit goes, so no successor overlaps
    granted.fleet.release();
    granted.local.release();

    response res =
        text(http::status::ok, "worked " + std::to_string(ms) + " ms for " + tenant + "\n");
    res.set("X-Limit", std::to_string(limiter_.limit(tenant)));
    res.set("X-Concurrency", std::to_string(concurrency));
    res.set("X-Permit-Held", std::to_string(held_from) + "-" + std::to_string(held_until));
    co_return res;
  }

  // The Prometheus text exposition format, version 0.0.4.
  std::string metrics() const {
    struct row {
      std::string tenant;
      keysem::key_usage usage;
      std::size_t load() const { return usage.in_use + usage.waiting; }
    };
    std::vector<row> rows;
    limiter_.for_each_key(
        [&rows](const std::string& tenant, keysem::key_usage usage) {
          rows.push_back({tenant, usage});
        });
    const auto busiest = rows.begin() + static_cast<std::ptrdiff_t>(
                                            std::min(rows.size(), options_.metrics_top));
    std::partial_sort(rows.begin(), busiest, rows.end(), [](const row& a, const row& b) {
      return a.load() != b.load() ? a.load() > b.load() : a.tenant < b.tenant;
    });
    rows.erase(busiest, rows.end());
    const keysem::semaphore_stats stats = limiter_.stats();

    // Tenant names are validated to [A-Za-z0-9._-]: no label escaping needed.
    std::ostringstream out;
    const auto per_tenant = [&](const char* name, const char* help, auto field) {
      out << "# HELP " << name << ' ' << help << " (the " << options_.metrics_top
          << " busiest tenants by in use + waiting).\n# TYPE " << name << " gauge\n";
      for (const row& r : rows) {
        out << name << "{tenant=\"" << r.tenant << "\"} " << field(r.usage) << '\n';
      }
    };
    per_tenant("keysem_permits_in_use", "Permits held per tenant",
               [](const keysem::key_usage& u) { return u.in_use; });
    per_tenant("keysem_waiting", "Acquires queued per tenant",
               [](const keysem::key_usage& u) { return u.waiting; });
    per_tenant("keysem_limit", "The limit in force per tenant",
               [](const keysem::key_usage& u) { return u.limit; });

    out << "# HELP keysem_acquires_total Admission decisions by outcome "
           "(429: rejected_queue_full, 503: timed_out and rejected_closed).\n"
        << "# TYPE keysem_acquires_total counter\n";
    const std::pair<const char*, std::uint64_t> outcomes[] = {
        {"granted_immediately", stats.granted_immediately},
        {"granted_after_wait", stats.granted_after_wait},
        {"rejected_queue_full", stats.rejected_queue_full},
        {"timed_out", stats.timed_out},
        {"rejected_closed", stats.rejected_closed},
        {"cancelled", stats.cancelled},
        {"try_failed", stats.try_failed},
        {"invalid_argument", stats.invalid_argument},
    };
    for (const auto& [outcome, count] : outcomes) {
      out << "keysem_acquires_total{outcome=\"" << outcome << "\"} " << count << '\n';
    }
    out << "# HELP keysem_live_keys Tenants with holders or waiters.\n"
        << "# TYPE keysem_live_keys gauge\n"
        << "keysem_live_keys " << stats.keys << '\n'
        << "# HELP keysem_held_permits Permits held, all tenants.\n"
        << "# TYPE keysem_held_permits gauge\n"
        << "keysem_held_permits " << stats.in_use << '\n'
        << "# HELP keysem_waiting_acquires Acquires queued, all tenants.\n"
        << "# TYPE keysem_waiting_acquires gauge\n"
        << "keysem_waiting_acquires " << stats.waiting << '\n'
        << "# HELP keysem_total_in_use Requests in progress, all tenants (bounded by --total).\n"
        << "# TYPE keysem_total_in_use gauge\n"
        << "keysem_total_in_use " << limiter_.total_in_use() << '\n'
        << "# HELP keysem_total_waiting Requests their tenant admitted that wait for --total.\n"
        << "# TYPE keysem_total_waiting gauge\n"
        << "keysem_total_waiting " << limiter_.total_waiting() << '\n'
        << "# HELP keysem_permits_per_key The limit of tenants without a tier.\n"
        << "# TYPE keysem_permits_per_key gauge\n"
        << "keysem_permits_per_key " << limiter_.permits_per_key() << '\n'
        << "# HELP keysem_max_waiters_per_key Queued acquires per tenant before 429.\n"
        << "# TYPE keysem_max_waiters_per_key gauge\n"
        << "keysem_max_waiters_per_key " << options_.max_waiting << '\n';
    return out.str();
  }

  // Waits for requests in progress to finish (bounded), then stops.
  asio::awaitable<void> drain() {
    asio::steady_timer poll(co_await asio::this_coro::executor);
    for (int i = 0; i < 500 && (in_progress_ != 0 || limiter_.key_count() != 0); ++i) {
      poll.expires_after(10ms);
      co_await poll.async_wait(asio::use_awaitable);
    }
    const keysem::semaphore_stats s = limiter_.stats();
    std::printf(
        "shutdown: %zu requests still in progress; totals: granted %llu, rejected_queue_full %llu, "
        "timed_out %llu, rejected_closed %llu, cancelled %llu\n",
        in_progress_.load(),
        static_cast<unsigned long long>(s.granted_immediately + s.granted_after_wait),
        static_cast<unsigned long long>(s.rejected_queue_full),
        static_cast<unsigned long long>(s.timed_out),
        static_cast<unsigned long long>(s.rejected_closed),
        static_cast<unsigned long long>(s.cancelled));
    ctx_.stop();  // idle keep-alive connections are simply dropped
  }

  static long long steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  static int work_ms(std::string_view target) {
    int ms = 10;
    if (const auto at = target.find("ms="); at != std::string_view::npos) {
      std::from_chars(target.data() + at + 3, target.data() + target.size(), ms);
    }
    return std::clamp(ms, 0, 5000);
  }

  static response text(http::status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8") {
    response res(status, 11);
    res.set(http::field::server, "keysem-example");
    res.set(http::field::content_type, content_type);
    res.body() = std::move(body);
    return res;
  }

  static response retry_later(http::status status, std::string body) {
    response res = text(status, std::move(body) + "\n");
    res.set(http::field::retry_after, "1");
    return res;
  }

  asio::io_context& ctx_;
  server_options options_;
  tcp::acceptor acceptor_;
  keysem::keyed_semaphore limiter_;
  std::unique_ptr<fleet_limiter> fleet_;  // fleet mode only
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> in_progress_{0};  // requests read and not yet answered
};

namespace {

std::vector<std::thread> run_threads(asio::io_context& ctx, std::size_t n) {
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < n; ++i) {
    threads.emplace_back([&ctx] { ctx.run(); });
  }
  return threads;
}

void print_policy(const server_options& options) {
  std::printf("limit %zu per tenant, %zu may wait, %lld ms timeout", options.limit,
              options.max_waiting, static_cast<long long>(options.acquire_timeout.count()));
  for (const auto& [tenant, limit] : options.tiers) {
    std::printf("; %s: %zu", tenant.c_str(), limit);
  }
  if (options.fleet.enabled()) {
    std::printf("; shared by the fleet on redis %s:%u, lease %lld ms", options.fleet.host.c_str(),
                options.fleet.port, static_cast<long long>(options.fleet.lease.count()));
  }
  std::printf("\n");
}

int serve(const command_line& cmd) {
  asio::io_context ctx;
  http_server server(ctx, cmd.server);
  server.start();
  asio::signal_set signals(ctx, SIGINT, SIGTERM);
  signals.async_wait([&server](boost::system::error_code ec, int) {
    if (!ec) {
      server.shutdown();
    }
  });

  std::vector<std::thread> threads = run_threads(ctx, cmd.server.threads);
  try {
    asio::co_spawn(ctx, server.store_fleet_tiers(), asio::use_future).get();
  } catch (...) {
    ctx.stop();
    for (std::thread& t : threads) {
      t.join();
    }
    throw;
  }

  const unsigned short port = server.local_endpoint().port();
  std::printf("listening on http://127.0.0.1:%u: ", port);
  print_policy(cmd.server);
  if (!cmd.port_file.empty()) {
    // Written whole, then renamed: a script polling for it never reads half a number.
    const std::string partial = cmd.port_file + ".partial";
    std::ofstream(partial) << port << '\n';
    std::rename(partial.c_str(), cmd.port_file.c_str());
  }
  for (std::thread& t : threads) {
    t.join();
  }
  return 0;
}

int load(const command_line& cmd) {
  http_load_options options;
  std::printf("load: %.1f s against", static_cast<double>(cmd.duration.count()) / 1000);
  for (const unsigned short port : cmd.ports) {
    options.servers.emplace_back(asio::ip::make_address("127.0.0.1"), port);
    std::printf(" http://127.0.0.1:%u", port);
  }
  std::printf("\n");
  options.duration = cmd.duration;
  for (const tenant_profile& t : options.tenants) {
    std::printf("  %-8s %2zu users, each request asks for %d-%d ms of work\n", t.name.c_str(),
                t.users, t.min_work_ms, t.max_work_ms);
  }
  asio::io_context ctx;
  http_load_report report;
  asio::co_spawn(ctx, run_http_load(options),
                 [&report](const std::exception_ptr& e, http_load_report r) {
                   if (e) {
                     std::rethrow_exception(e);
                   }
                   report = std::move(r);
                 });
  ctx.run();
  return print_load_table(report) ? 0 : 1;
}

// Server and load in one process: what the ctest test runs (args.txt).
int both(const command_line& cmd) {
  asio::io_context server_ctx;
  http_server server(server_ctx, cmd.server);
  server.start();
  std::printf("server: ");
  print_policy(cmd.server);
  std::vector<std::thread> threads = run_threads(server_ctx, cmd.server.threads);

  command_line client = cmd;
  client.ports = {server.local_endpoint().port()};
  int status = 1;
  std::exception_ptr failure;
  try {
    asio::co_spawn(server_ctx, server.store_fleet_tiers(), asio::use_future).get();
    status = load(client);
  } catch (...) {
    failure = std::current_exception();
  }
  server.shutdown();
  for (std::thread& t : threads) {
    t.join();
  }
  if (failure) {
    std::rethrow_exception(failure);
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line, also into a pipe
  command_line cmd;
  try {
    cmd = parse_command_line(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), usage());
    return 2;
  }
  try {
    return cmd.mode == "serve" ? serve(cmd) : cmd.mode == "load" ? load(cmd) : both(cmd);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
