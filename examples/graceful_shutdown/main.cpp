// graceful_shutdown: stop a keysem-limited server on SIGINT/SIGTERM without
// dropping work that already started.
//
// The server reads one line per connection, "<tenant> <work_ms>", waits for
// one of the tenant's 2 permits, works, and answers "done". On a signal:
//
//   1. stop accepting: close the acceptor;
//   2. close() the semaphore: every queued acquire completes at once with
//      keysem::error::closed, and those clients are told "closed";
//   3. wait (bounded) for the permits in use to drain: running requests
//      finish and answer "done";
//   4. return from main with 0 once the io_context runs out of work.
//
// Usage: keysem_example_graceful_shutdown [--self-test]
// Without arguments it serves on an ephemeral loopback port until Ctrl-C
// (try it with netcat: echo "acme 3000" | nc 127.0.0.1 <port>). With --self-test (the
// ctest test) it starts 6 clients of one tenant, and once 2 run and 4 wait
// it raises SIGTERM at itself; it exits 0 only if the 2 finished, the 4 were
// told "closed" and a new connection was refused.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

class server {
 public:
  explicit server(asio::io_context& ctx)
      : ctx_(ctx),
        acceptor_(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        limiter_(ctx, 2),
        signals_(ctx, SIGINT, SIGTERM) {}

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  const keysem::keyed_semaphore& limiter() const { return limiter_; }

  void start() {
    asio::co_spawn(ctx_, accept_loop(), asio::detached);
    signals_.async_wait([this](boost::system::error_code ec, int signal) {
      if (!ec) {
        asio::co_spawn(ctx_, shut_down(signal), asio::detached);
      }
    });
  }

  bool drained() const { return drained_; }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        co_return;  // the acceptor was closed: shutting down
      }
      asio::co_spawn(ctx_, session(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    std::string line;
    auto [read_ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(line), '\n',
                                                        asio::as_tuple(asio::use_awaitable));
    if (read_ec) {
      co_return;
    }
    std::istringstream in(line.substr(0, n - 1));
    std::string tenant;
    int work_ms = 0;
    in >> tenant >> work_ms;

    std::string answer = "done\n";
    auto [ec, permit] = co_await limiter_.acquire(tenant, asio::as_tuple(asio::use_awaitable));
    if (ec == keysem::error::closed) {
      answer = "closed\n";  // shutting down: this request never started
    } else if (ec) {
      answer = "error " + ec.message() + "\n";
    } else {
      asio::steady_timer work(ctx_, std::chrono::milliseconds(work_ms));
      co_await work.async_wait(asio::use_awaitable);  // a running request is never interrupted
      permit.release();
    }
    co_await asio::async_write(socket, asio::buffer(answer), asio::as_tuple(asio::use_awaitable));
  }

  asio::awaitable<void> shut_down(int signal) {
    std::printf("signal %d: shutting down\n", signal);
    acceptor_.close();  // 1. no new connections
    limiter_.close();   // 2. queued acquires complete with keysem::error::closed

    // 3. Permits in use drain as running requests finish. key_count() is 0
    //    once no key has holders or waiters. Bounded: a stuck request must
    //    not keep the process alive forever.
    asio::steady_timer poll(ctx_);
    for (int i = 0; i < 1000 && limiter_.key_count() != 0; ++i) {
      poll.expires_after(5ms);
      co_await poll.async_wait(asio::use_awaitable);
    }
    drained_ = limiter_.key_count() == 0;
    std::printf("%s\n", drained_ ? "drained: every permit is back" : "gave up waiting for permits");
    if (!drained_) {
      ctx_.stop();
    }
    // 4. Nothing else is pending: sessions finish writing, run() returns.
  }

  asio::io_context& ctx_;
  tcp::acceptor acceptor_;
  keysem::keyed_semaphore limiter_;
  asio::signal_set signals_;
  bool drained_ = false;
};

// --self-test: six clients of "acme", then SIGTERM while two run and four wait.
asio::awaitable<std::string> client(tcp::endpoint ep) {
  tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(ep, asio::use_awaitable);
  co_await asio::async_write(socket, asio::buffer(std::string("acme 500\n")), asio::use_awaitable);
  std::string answer;
  co_await asio::async_read_until(socket, asio::dynamic_buffer(answer), '\n', asio::use_awaitable);
  answer.pop_back();
  co_return answer;
}

asio::awaitable<void> self_test(const server& srv, std::map<std::string, int>& answers,
                                bool& refused) {
  auto ex = co_await asio::this_coro::executor;
  const tcp::endpoint ep = srv.local_endpoint();
  for (int i = 0; i < 6; ++i) {
    asio::co_spawn(ex, client(ep),
                   [&answers](const std::exception_ptr& e, const std::string& answer) {
                     ++answers[e ? "failed" : answer];
                   });
  }
  asio::steady_timer poll(ex);
  // Bounded: on a badly stalled machine the check below fails instead of hanging.
  for (int i = 0;
       i < 2000 && (srv.limiter().in_use("acme") != 2 || srv.limiter().waiting("acme") != 4); ++i) {
    poll.expires_after(1ms);
    co_await poll.async_wait(asio::use_awaitable);
  }
  std::printf("%zu requests running, %zu waiting: raising SIGTERM\n", srv.limiter().in_use("acme"),
              srv.limiter().waiting("acme"));
  std::raise(SIGTERM);  // delivered to the signal_set, as from `kill`

  // Once the acceptor is closed, new connections are refused.
  while (!srv.limiter().is_closed()) {
    poll.expires_after(1ms);
    co_await poll.async_wait(asio::use_awaitable);
  }
  tcp::socket late(ex);
  auto [ec] = co_await late.async_connect(ep, asio::as_tuple(asio::use_awaitable));
  refused = ec == asio::error::connection_refused;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const bool test = argc > 1 && std::strcmp(argv[1], "--self-test") == 0;
  asio::io_context ctx;
  server srv(ctx);
  srv.start();
  std::printf("listening on 127.0.0.1:%u; SIGINT or SIGTERM shuts down gracefully\n",
              srv.local_endpoint().port());

  std::map<std::string, int> answers;
  bool refused = false;
  if (test) {
    asio::co_spawn(ctx, self_test(srv, answers, refused), asio::detached);
  }
  ctx.run();

  if (!test) {
    return srv.drained() ? 0 : 1;
  }
  std::printf("answers: %d done, %d closed, %d other; late connection %s\n", answers["done"],
              answers["closed"], static_cast<int>(6 - answers["done"] - answers["closed"]),
              refused ? "refused" : "NOT refused");
  const bool ok = srv.drained() && answers["done"] == 2 && answers["closed"] == 4 && refused;
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
