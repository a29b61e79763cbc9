// global_cap: "2 per tenant and 4 in all" in front of a small database pool.
//
// A thread pool serves requests from six tenants. One of them is hot: it
// sends 40 requests at once; five quiet tenants send 4 each. Every request
// holds a permit on its tenant *and* one of the 4 database connections
// (semaphore_options::total_limit), queries the "database" (a timer), and
// lets go.
//
// The program checks, inside the critical section, that no tenant ever has
// more than 2 requests in the database and the pool never more than 4, and
// reports how long each tenant's requests waited. Because a request waits
// for the total holding its tenant's permit, the hot tenant never has more
// than its own 2 requests queued for the pool: the quiet tenants' requests
// are served in between, not after all 40 hot ones.
//
// Exits non-zero if a limit was exceeded or a request failed.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr std::size_t per_tenant = 2;
constexpr std::size_t pool_size = 4;

struct observed {
  std::mutex lock;
  std::map<std::string, std::size_t> inside;  // requests in the database, per tenant
  std::size_t pool_in_use = 0;
  std::size_t peak_pool = 0;
  std::size_t peak_tenant = 0;
  std::map<std::string, std::vector<double>> waited_ms;
  std::atomic<int> failures{0};
};

asio::awaitable<void> request(keysem::keyed_semaphore& limiter, std::string tenant, observed& seen) {
  const auto asked = clock_type::now();
  auto permit = co_await limiter.acquire(tenant);
  const double waited =
      std::chrono::duration<double, std::milli>(clock_type::now() - asked).count();
  {
    std::lock_guard guard(seen.lock);
    seen.waited_ms[tenant].push_back(waited);
    const std::size_t mine = ++seen.inside[tenant];
    seen.peak_tenant = std::max(seen.peak_tenant, mine);
    seen.peak_pool = std::max(seen.peak_pool, ++seen.pool_in_use);
  }
  asio::steady_timer query(co_await asio::this_coro::executor, 2ms);  // the database
  co_await query.async_wait(asio::use_awaitable);
  {
    std::lock_guard guard(seen.lock);
    --seen.inside[tenant];
    --seen.pool_in_use;
  }
}

int main() {
  asio::thread_pool pool(4);
  keysem::keyed_semaphore limiter(pool, per_tenant,
                                  keysem::semaphore_options{.total_limit = pool_size});
  observed seen;
  auto spawn = [&](const std::string& tenant) {
    asio::co_spawn(pool, request(limiter, tenant, seen), [&](std::exception_ptr e) {
      if (e) {
        ++seen.failures;
      }
    });
  };
  for (int i = 0; i < 40; ++i) {
    spawn("hot");
  }
  for (int round = 0; round < 4; ++round) {
    for (int t = 0; t < 5; ++t) {
      spawn("quiet-" + std::to_string(t));
    }
  }
  pool.join();

  std::printf("peak in the database: %zu of %zu; peak per tenant: %zu of %zu\n", seen.peak_pool,
              pool_size, seen.peak_tenant, per_tenant);
  for (const auto& [tenant, waits] : seen.waited_ms) {
    const double worst = *std::max_element(waits.begin(), waits.end());
    std::printf("  %-8s %2zu requests, longest wait %6.1f ms\n", tenant.c_str(), waits.size(), worst);
  }
  const auto stats = limiter.stats();
  std::printf("granted at once %llu, after waiting %llu; total in use now %zu\n",
              static_cast<unsigned long long>(stats.granted_immediately),
              static_cast<unsigned long long>(stats.granted_after_wait), limiter.total_in_use());
  const bool ok = seen.failures == 0 && seen.peak_pool <= pool_size &&
                  seen.peak_tenant <= per_tenant && limiter.total_in_use() == 0 &&
                  stats.granted_immediately + stats.granted_after_wait == 60;
  std::puts(ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
