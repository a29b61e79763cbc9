// http_server: a Boost.Beast HTTP server with a concurrency limit per tenant.
//
// Each request names its tenant in the X-Tenant header. GET /work?ms=N
// "works" for N milliseconds while holding one of the tenant's permits:
//
//   a permit is free, nobody queued      → 200 at once (try_acquire)
//   the tenant's queue is full           → 429 Too Many Requests, Retry-After
//   queued, and no permit within timeout → 503 Service Unavailable, Retry-After
//   queued, and a permit came in time    → 200
//
// Every 200 carries X-Concurrency (the server's own count of the tenant's
// requests holding a permit, this one included) and X-Limit, so a client can
// check the limit from outside. GET /metrics exposes the semaphore in the
// Prometheus text format.
//
// The server runs on several threads; each connection is a coroutine on its
// own strand (asio's rule for awaitable operators and parallel groups, whose
// branches must not run concurrently).
//
// Usage:
//   keysem_example_http_server [--seconds S]           server + load client, one process
//   keysem_example_http_server serve [--port P] [--port-file F] [--limit N]
//                                    [--max-waiting N] [--timeout-ms N] [--threads N]
//   keysem_example_http_server load --port P [--seconds S]
// `serve` runs until SIGINT or SIGTERM, then shuts down gracefully and exits 0.
// The other two print a per-tenant table and exit 1 if a limit was exceeded.
#include "load_client.hpp"

#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

struct server_options {
  unsigned short port = 0;                         // 0: the kernel picks a free port
  std::size_t limit = 4;                           // permits per tenant
  std::size_t max_waiting = 8;                     // queued requests per tenant before 429
  std::chrono::milliseconds acquire_timeout{100};  // queued longer than this: 503
  std::size_t threads = 2;
  std::size_t metrics_top = 10;  // /metrics lists this many of the busiest tenants
};

class http_server {
 public:
  using request = http::request<http::string_body>;
  using response = http::response<http::string_body>;

  http_server(asio::io_context& ctx, const server_options& options)
      : ctx_(ctx),
        options_(options),
        acceptor_(asio::make_strand(ctx),
                  tcp::endpoint(asio::ip::make_address("127.0.0.1"), options.port)),
        limiter_(ctx, options.limit) {}

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
    asio::co_spawn(ctx_, drain(), asio::detached);
  }

 private:
  struct tenant_entry {
    std::size_t requests = 0;  // in the server: queued or holding
    std::size_t holding = 0;   // holding a permit
  };

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

  asio::awaitable<response> work(std::string tenant, int ms) {
    enter(tenant);
    response res = co_await admit_and_work(tenant, ms);
    leave(tenant);
    co_return res;
  }

  asio::awaitable<response> admit_and_work(const std::string& tenant, int ms) {
    std::optional<keysem::keyed_semaphore::permit> permit = limiter_.try_acquire(tenant);
    if (!permit && limiter_.waiting(tenant) >= options_.max_waiting) {
      // Queueing more would only add latency: shed now, tell the client when to retry.
      ++shed_;
      co_return retry_later(http::status::too_many_requests, "too many requests for " + tenant);
    }
    if (!permit) {
      // Race the acquire against a deadline; the loser is cancelled. A
      // cancelled acquire leaves the queue and changes no count.
      asio::steady_timer deadline(co_await asio::this_coro::executor, options_.acquire_timeout);
      auto [order, acquire_ec, p, timer_ec] =
          co_await asio::experimental::make_parallel_group(limiter_.acquire(tenant, asio::deferred),
                                                           deadline.async_wait(asio::deferred))
              .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
      (void)order, (void)timer_ec;
      // No error means we hold the permit, even if the timer fired in the same
      // instant (a granted acquire ignores cancellation): use it.
      if (acquire_ec == asio::error::operation_aborted) {
        ++timed_out_;
        co_return retry_later(http::status::service_unavailable, "timed out waiting for " + tenant);
      }
      if (acquire_ec) {  // keysem::error::closed: shutting down
        ++cancelled_;
        co_return retry_later(http::status::service_unavailable, "shutting down");
      }
      permit = std::move(p);
    }
    ++granted_;

    const std::size_t concurrency = hold(tenant, +1);
    asio::steady_timer work(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
    co_await work.async_wait(asio::as_tuple(asio::use_awaitable));
    hold(tenant, -1);  // before the permit goes, so no newcomer is counted with us
    permit->release();

    response res =
        text(http::status::ok, "worked " + std::to_string(ms) + " ms for " + tenant + "\n");
    res.set("X-Concurrency", std::to_string(concurrency));
    res.set("X-Limit", std::to_string(limiter_.permits_per_key()));
    co_return res;
  }

  // The Prometheus text exposition format, version 0.0.4.
  std::string metrics() const {
    struct row {
      std::string tenant;
      std::size_t in_use = 0;
      std::size_t waiting = 0;
    };
    std::vector<row> rows;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [tenant, entry] : tenants_) {
        rows.push_back({tenant, 0, 0});
      }
    }
    for (row& r : rows) {  // keysem's counters are exact; ask outside our lock
      r.in_use = limiter_.in_use(r.tenant);
      r.waiting = limiter_.waiting(r.tenant);
    }
    std::sort(rows.begin(), rows.end(), [](const row& a, const row& b) {
      return a.in_use + a.waiting != b.in_use + b.waiting
                 ? a.in_use + a.waiting > b.in_use + b.waiting
                 : a.tenant < b.tenant;
    });
    rows.resize(std::min(rows.size(), options_.metrics_top));

    // Tenant names are validated to [A-Za-z0-9._-]: no label escaping needed.
    std::ostringstream out;
    out << "# HELP keysem_permits_in_use Permits held per tenant (busiest tenants only).\n"
        << "# TYPE keysem_permits_in_use gauge\n";
    for (const row& r : rows) {
      out << "keysem_permits_in_use{tenant=\"" << r.tenant << "\"} " << r.in_use << '\n';
    }
    out << "# HELP keysem_waiting Acquires queued per tenant (busiest tenants only).\n"
        << "# TYPE keysem_waiting gauge\n";
    for (const row& r : rows) {
      out << "keysem_waiting{tenant=\"" << r.tenant << "\"} " << r.waiting << '\n';
    }
    out << "# HELP keysem_acquires_total Admission decisions by outcome.\n"
        << "# TYPE keysem_acquires_total counter\n"
        << "keysem_acquires_total{outcome=\"granted\"} " << granted_ << '\n'
        << "keysem_acquires_total{outcome=\"shed\"} " << shed_ << '\n'
        << "keysem_acquires_total{outcome=\"timed_out\"} " << timed_out_ << '\n'
        << "keysem_acquires_total{outcome=\"cancelled\"} " << cancelled_ << '\n'
        << "# HELP keysem_live_keys Tenants with holders or waiters.\n"
        << "# TYPE keysem_live_keys gauge\n"
        << "keysem_live_keys " << limiter_.key_count() << '\n'
        << "# HELP keysem_permits_per_key The per-tenant limit.\n"
        << "# TYPE keysem_permits_per_key gauge\n"
        << "keysem_permits_per_key " << limiter_.permits_per_key() << '\n';
    return out.str();
  }

  // Waits for requests in progress to finish (bounded), then stops.
  asio::awaitable<void> drain() {
    asio::steady_timer poll(co_await asio::this_coro::executor);
    for (int i = 0; i < 500 && (in_progress_ != 0 || limiter_.key_count() != 0); ++i) {
      poll.expires_after(10ms);
      co_await poll.async_wait(asio::use_awaitable);
    }
    std::printf(
        "shutdown: %zu requests still in progress; totals: granted %llu, shed %llu, "
        "timed out %llu, cancelled %llu\n",
        in_progress_.load(), static_cast<unsigned long long>(granted_),
        static_cast<unsigned long long>(shed_), static_cast<unsigned long long>(timed_out_),
        static_cast<unsigned long long>(cancelled_));
    ctx_.stop();  // idle keep-alive connections are simply dropped
  }

  // Bookkeeping of tenants the server currently knows, for /metrics and
  // X-Concurrency. Entries go when their last request does.
  void enter(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    ++tenants_[tenant].requests;
  }

  void leave(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    auto it = tenants_.find(tenant);
    if (--it->second.requests == 0) {
      tenants_.erase(it);
    }
  }

  std::size_t hold(const std::string& tenant, int delta) {
    std::lock_guard lock(mutex_);
    auto& holding = tenants_[tenant].holding;
    holding = delta > 0 ? holding + 1 : holding - 1;
    return holding;
  }

  static bool valid_tenant(std::string_view tenant) {
    return !tenant.empty() && tenant.size() <= 64 &&
           std::all_of(tenant.begin(), tenant.end(), [](char c) {
             return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
           });
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
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> in_progress_{0};
  std::atomic<std::uint64_t> granted_{0}, shed_{0}, timed_out_{0}, cancelled_{0};
  mutable std::mutex mutex_;
  std::unordered_map<std::string, tenant_entry> tenants_;
};

namespace {

// --name value pairs after the mode; unknown names are an error.
struct command_line {
  std::string mode = "both";
  server_options server;
  std::string port_file;
  std::chrono::milliseconds duration{2000};
};

bool parse(int argc, char** argv, command_line& cmd) {
  int i = 1;
  if (argc > 1 && std::strncmp(argv[1], "--", 2) != 0) {
    cmd.mode = argv[i++];
  }
  for (; i + 1 < argc; i += 2) {
    const std::string_view name = argv[i];
    const std::string value = argv[i + 1];
    const auto number = [&] { return std::stoul(value); };
    if (name == "--port") {
      cmd.server.port = static_cast<unsigned short>(number());
    } else if (name == "--port-file") {
      cmd.port_file = value;
    } else if (name == "--limit") {
      cmd.server.limit = number();
    } else if (name == "--max-waiting") {
      cmd.server.max_waiting = number();
    } else if (name == "--timeout-ms") {
      cmd.server.acquire_timeout = std::chrono::milliseconds(number());
    } else if (name == "--threads") {
      cmd.server.threads = std::max<std::size_t>(1, number());
    } else if (name == "--seconds") {
      cmd.duration = std::chrono::milliseconds(static_cast<long>(std::stod(value) * 1000));
    } else {
      return false;
    }
  }
  return i == argc && (cmd.mode == "both" || cmd.mode == "serve" ||
                       (cmd.mode == "load" && cmd.server.port != 0));
}

std::vector<std::thread> run_threads(asio::io_context& ctx, std::size_t n) {
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < n; ++i) {
    threads.emplace_back([&ctx] { ctx.run(); });
  }
  return threads;
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

  const unsigned short port = server.local_endpoint().port();
  std::printf(
      "listening on http://127.0.0.1:%u (limit %zu per tenant, %zu may wait, %lld ms timeout)\n",
      port, cmd.server.limit, cmd.server.max_waiting,
      static_cast<long long>(cmd.server.acquire_timeout.count()));
  if (!cmd.port_file.empty()) {
    // Written whole, then renamed: a script polling for it never reads half a number.
    const std::string partial = cmd.port_file + ".partial";
    std::ofstream(partial) << port << '\n';
    std::rename(partial.c_str(), cmd.port_file.c_str());
  }
  for (std::thread& t : run_threads(ctx, cmd.server.threads)) {
    t.join();
  }
  return 0;
}

int load(const command_line& cmd) {
  http_load_options options;
  options.server = tcp::endpoint(asio::ip::make_address("127.0.0.1"), cmd.server.port);
  options.duration = cmd.duration;
  std::printf("load: %.1f s against http://127.0.0.1:%u\n",
              static_cast<double>(cmd.duration.count()) / 1000, cmd.server.port);
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

// Server and load in one process: what the ctest test runs.
int both(const command_line& cmd) {
  asio::io_context server_ctx;
  http_server server(server_ctx, cmd.server);
  server.start();
  std::vector<std::thread> threads = run_threads(server_ctx, cmd.server.threads);

  command_line client = cmd;
  client.server.port = server.local_endpoint().port();
  int status = 1;
  std::exception_ptr failure;
  try {
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
    if (!parse(argc, argv, cmd)) {
      std::fprintf(stderr, "usage: see the comment at the top of examples/http_server/main.cpp\n");
      return 2;
    }
    return cmd.mode == "serve" ? serve(cmd) : cmd.mode == "load" ? load(cmd) : both(cmd);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
