// A redis-server child process on 127.0.0.1 and a free port, for the tests
// and the fleet benchmark: no persistence, killed (SIGKILL) at the end;
// restartable on the same port. Failures are thrown (std::runtime_error),
// so that programs without doctest can use it too.
#ifndef KEYSEM_TESTS_REDIS_REDIS_SERVER_HPP
#define KEYSEM_TESTS_REDIS_REDIS_SERVER_HPP

#include <keysem/redis/detail/connection.hpp>
#include <keysem/redis/endpoint.hpp>

#include <boost/asio.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace keysem::redis::test {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;

// A port nobody listens on right now: bind an ephemeral one, then free it
// (redis 7.0 has no --port 0).
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("free_port: cannot bind");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

inline bool accepts_connections(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Reads fd until a line containing `marker` arrives; false on end of file
// or when `bound` passes first (poll() waits for the data itself).
inline bool wait_for_line(int fd, const std::string& marker, std::chrono::milliseconds bound) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  std::string seen;
  char buffer[1024];
  while (seen.find(marker) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd watched{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&watched, 1, static_cast<int>(left.count())) <= 0) {
      return false;
    }
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) {
      return false;
    }
    seen.append(buffer, static_cast<std::size_t>(n));
  }
  return true;
}

class redis_server {
 public:
  redis_server() : port_(free_port()) { start(); }
  /// With more command-line options, e.g. {"--replicaof", "127.0.0.1", "6379"}.
  explicit redis_server(std::vector<std::string> extra) : port_(free_port()), extra_(std::move(extra)) {
    start();
  }
  ~redis_server() { kill(); }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::uint16_t port() const { return port_; }
  endpoint where() const { return endpoint{"127.0.0.1", port_, {}, 0}; }

  void start() {
    const std::string port = std::to_string(port_);
    // The log goes to stdout, a pipe of our own: the server says when it
    // listens ("Ready to accept connections"), and the test waits for that
    // line. Once the pipe is closed its later log lines are dropped (Redis
    // ignores SIGPIPE), and no pipe of the test runner is ever held open.
    std::vector<std::string> args{"redis-server", "--port", port, "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--logfile", ""};
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int log[2];
    if (::pipe2(log, O_CLOEXEC) != 0) {
      throw std::runtime_error("cannot create a pipe for redis-server");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, log[1], 1);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    const int spawned = ::posix_spawnp(&pid_, "redis-server", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(log[1]);
    if (spawned != 0) {
      ::close(log[0]);
      throw std::runtime_error("cannot start redis-server");
    }
    const bool ready = wait_for_line(log[0], "Ready to accept connections", 10s);
    ::close(log[0]);
    if (!ready || !accepts_connections(port_)) {
      throw std::runtime_error("redis-server on port " + port + " did not report that it listens");
    }
  }

  /// kill -9 and reap.
  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

 private:
  std::uint16_t port_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
};

// Runs one command on a fresh connection and returns its reply (bounded).
inline std::pair<error_code, detail::reply> command(const endpoint& where,
                                                    const std::vector<std::string>& args) {
  asio::io_context ctx;
  detail::connection::config cfg;
  cfg.server = where;
  auto conn = std::make_shared<detail::connection>(asio::make_strand(ctx.get_executor()), cfg);
  std::optional<std::pair<error_code, detail::reply>> out;
  asio::post(ctx, [&] {
    conn->execute(args, [&](error_code ec, detail::reply r) {
      out.emplace(ec, std::move(r));
      conn->close();
    });
  });
  ctx.run_for(5s);
  if (!out) throw std::runtime_error("redis-server did not answer " + args.at(0) + " within 5 s");
  return *out;
}

}  // namespace keysem::redis::test

#endif
