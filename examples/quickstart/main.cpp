// quickstart: at most 2 requests at a time per user, awaited in coroutines.
//
// Twelve requests from three users arrive at once; each request holds its
// user's permit while it "works" (a short timer). The program prints the
// highest concurrency seen per user and exits non-zero if it ever exceeded
// the limit.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>

namespace asio = boost::asio;

struct user_stats {
  int running = 0;
  int peak = 0;
};

asio::awaitable<void> handle_request(keysem::keyed_semaphore& limiter, std::string user,
                                     std::map<std::string, user_stats>& stats) {
  auto permit = co_await limiter.acquire(user);  // waits while `user` has 2 requests running

  auto& s = stats[user];
  s.peak = std::max(s.peak, ++s.running);
  asio::steady_timer work(co_await asio::this_coro::executor, std::chrono::milliseconds(5));
  co_await work.async_wait(asio::use_awaitable);
  --s.running;
}  // the permit is released here, and the user's next request starts

int main() {
  asio::io_context ctx;
  keysem::keyed_semaphore limiter(ctx, 2);  // 2 permits per user
  std::map<std::string, user_stats> stats;

  for (int i = 0; i < 12; ++i) {
    const std::string user = i % 3 == 0 ? "alice" : i % 3 == 1 ? "bob" : "carol";
    asio::co_spawn(ctx, handle_request(limiter, user, stats), asio::detached);
  }
  ctx.run();

  bool within_limit = true;
  for (const auto& [user, s] : stats) {
    std::printf("%-6s peak concurrency %d (limit %zu)\n", user.c_str(), s.peak,
                limiter.permits_per_key());
    within_limit = within_limit && s.peak <= static_cast<int>(limiter.permits_per_key());
  }
  std::printf("live keys after the run: %zu\n", limiter.key_count());
  return within_limit && limiter.key_count() == 0 ? 0 : 1;
}
