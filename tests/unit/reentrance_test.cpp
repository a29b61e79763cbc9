// A KeyEqual (or Hash, or key copy) that calls back into its own semaphore is a precondition violation;
// builds without NDEBUG stop it with a message instead of spinning forever.
#include "test_support.hpp"

#ifndef NDEBUG

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>

namespace keysem::test {
namespace {

struct reentrant_equal;
using reentrant_semaphore =
    async_keyed_semaphore<std::string, keysem::hash<std::string>, reentrant_equal>;

reentrant_semaphore* reentered = nullptr;

// Compares keys with the shard's lock held; re-enters the semaphore when armed.
struct reentrant_equal {
  bool operator()(const std::string& a, const std::string& b) const {
    if (reentered != nullptr) {
      static_cast<void>(reentered->in_use(std::string("other")));
    }
    return a == b;
  }
};

// Runs f in a child process; returns what it wrote to stderr and whether it
// was stopped by SIGABRT.
template <class F>
std::pair<std::string, bool> run_in_child(F f) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    f();
    _exit(0);
  }
  close(fds[1]);
  std::string output;
  char buffer[256];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) {
    output.append(buffer, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {output, WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT};
}

}  // namespace

TEST_CASE("reentrance: a key comparison that calls back into its semaphore is reported") {
  const auto [output, aborted] = run_in_child([] {
    asio::io_context ctx;
    reentrant_semaphore sem(ctx, 2, semaphore_options{1});
    auto first = sem.try_acquire(std::string("key"));
    reentered = &sem;
    // The key is live: looking it up compares it with the lock held.
    auto second = sem.try_acquire(std::string("key"));
  });
  CHECK(aborted);
  CHECK(output.find("keysem: re-entered a semaphore") != std::string::npos);
}

}  // namespace keysem::test

#endif
