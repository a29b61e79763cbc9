// weighted: permits as a budget, and a connection pool bounded by keysem.
//
// 1. Costs. Each tenant has a budget of 10 units in flight; a task takes as
//    many permits as it costs: acquire(tenant, cost). Requests are served in
//    arrival order per tenant, and a large one at the head of the queue is
//    not overtaken by small ones behind it (head-of-line), so it is never
//    starved — the printed grant order shows it.
//
// 2. A connection pool per database. The semaphore, keyed by database,
//    bounds how many connections are checked out; idle connections are
//    kept and reused. Because a connection is only opened by someone holding
//    a permit and no idle one exists, a database never has more connections
//    open than permits.
//
// Exits non-zero if a budget or a pool bound was ever exceeded, or if the
// grant order was not the arrival order.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// 1. Costs
// ---------------------------------------------------------------------------

constexpr std::size_t budget = 10;

struct budget_stats {
  std::map<std::string, std::size_t> spent, peak;
  std::map<std::string, std::vector<int>> grant_order;
};

asio::awaitable<void> costly_task(keysem::keyed_semaphore& budgets, std::string tenant, int index,
                                  std::size_t cost, budget_stats& stats) {
  auto permit = co_await budgets.acquire(tenant, cost, asio::use_awaitable);
  stats.grant_order[tenant].push_back(index);
  std::size_t& spent = stats.spent[tenant];
  spent += permit.count();
  stats.peak[tenant] = std::max(stats.peak[tenant], spent);

  asio::steady_timer work(co_await asio::this_coro::executor, std::chrono::milliseconds(2 * cost));
  co_await work.async_wait(asio::use_awaitable);
  spent -= permit.count();
}  // all `cost` permits go back at once

bool run_costs() {
  asio::io_context ctx;
  keysem::keyed_semaphore budgets(ctx, budget);
  budget_stats stats;
  // Index 2 costs 8: it must wait for 1 + 3 to finish, and the small tasks
  // 3, 4, 5 queued behind it wait too, although they would fit earlier.
  const std::array<std::size_t, 10> costs = {1, 3, 8, 1, 1, 2, 10, 4, 5, 1};
  for (const char* tenant : {"acme", "globex"}) {
    for (int i = 0; i < 10; ++i) {
      asio::co_spawn(ctx, costly_task(budgets, tenant, i, costs[i], stats), asio::detached);
    }
  }
  // A request larger than the whole budget can never be granted: it
  // completes at once with invalid_argument instead of waiting forever.
  boost::system::error_code too_big;
  budgets.acquire(
      "acme", budget + 1,
      [&](boost::system::error_code ec, keysem::keyed_semaphore::permit) { too_big = ec; });
  ctx.run();

  bool ok = too_big == asio::error::invalid_argument;
  std::printf("acquire(\"acme\", %zu) with a budget of %zu: %s\n", budget + 1, budget,
              too_big.message().c_str());
  for (const auto& [tenant, order] : stats.grant_order) {
    std::printf("%-6s budget %zu, most in flight %zu, grant order:", tenant.c_str(), budget,
                stats.peak[tenant]);
    for (int i : order) {
      std::printf(" %d(cost %zu)", i, costs[i]);
    }
    std::printf("\n");
    ok = ok && stats.peak[tenant] <= budget && std::is_sorted(order.begin(), order.end()) &&
         order.size() == 10;
  }
  return ok && budgets.key_count() == 0;
}

// ---------------------------------------------------------------------------
// 2. A connection pool per database
// ---------------------------------------------------------------------------

struct db_connection {  // stands in for a real client connection
  std::string database;
  int serial;
  asio::awaitable<void> query(std::chrono::milliseconds how_long) {
    asio::steady_timer t(co_await asio::this_coro::executor, how_long);
    co_await t.async_wait(asio::use_awaitable);
  }
};

class connection_pool {
 public:
  connection_pool(const asio::any_io_executor& ex, std::size_t max_per_database)
      : checkouts_(ex, max_per_database) {}

  // A checked-out connection; going out of scope returns it to the pool.
  class pooled {
   public:
    pooled(connection_pool& pool, std::unique_ptr<db_connection> conn,
           keysem::keyed_semaphore::permit permit)
        : pool_(&pool), conn_(std::move(conn)), permit_(std::move(permit)) {}
    pooled(pooled&&) noexcept = default;
    pooled& operator=(pooled&&) = delete;
    ~pooled() {
      if (conn_) {  // back to the idle list *before* the permit is released, so
        pool_->idle_[conn_->database].push_back(std::move(conn_));  // the next holder finds it
        --pool_->stats_[permit_.key()].checked_out;
      }
    }
    db_connection* operator->() const { return conn_.get(); }

   private:
    connection_pool* pool_;
    std::unique_ptr<db_connection> conn_;
    keysem::keyed_semaphore::permit permit_;  // declared last: released last
  };

  asio::awaitable<pooled> get(std::string database) {
    auto permit = co_await checkouts_.acquire(database, asio::use_awaitable);
    auto& idle = idle_[database];
    auto& stats = stats_[database];
    std::unique_ptr<db_connection> conn;
    if (!idle.empty()) {
      conn = std::move(idle.back());
      idle.pop_back();
    } else {
      conn = std::make_unique<db_connection>(db_connection{database, ++stats.opened});  // "connect"
    }
    stats.peak_checked_out = std::max(stats.peak_checked_out, ++stats.checked_out);
    co_return pooled(*this, std::move(conn), std::move(permit));
  }

  struct database_stats {
    int opened = 0;
    std::size_t checked_out = 0;
    std::size_t peak_checked_out = 0;
  };
  const std::map<std::string, database_stats>& stats() const { return stats_; }
  std::size_t max_per_database() const { return checkouts_.permits_per_key(); }

 private:
  keysem::keyed_semaphore checkouts_;
  std::map<std::string, std::vector<std::unique_ptr<db_connection>>> idle_;
  std::map<std::string, database_stats> stats_;
};

asio::awaitable<void> handle_query(connection_pool& pool, std::string database, int ms) {
  auto conn = co_await pool.get(database);
  co_await conn->query(std::chrono::milliseconds(ms));
}

bool run_pool() {
  asio::io_context ctx;
  connection_pool pool(ctx.get_executor(), 3);
  for (int i = 0; i < 40; ++i) {  // 40 queries, most of them on orders-db
    const char* database = i % 4 == 3 ? "users-db" : "orders-db";
    asio::co_spawn(ctx, handle_query(pool, database, 1 + i % 3), asio::detached);
  }
  ctx.run();

  bool ok = true;
  for (const auto& [database, s] : pool.stats()) {
    std::printf("%-9s pool of %zu: %d connections opened, at most %zu checked out\n",
                database.c_str(), pool.max_per_database(), s.opened, s.peak_checked_out);
    ok = ok && static_cast<std::size_t>(s.opened) <= pool.max_per_database() &&
         s.peak_checked_out <= pool.max_per_database() && s.checked_out == 0;
  }
  return ok;
}

int main() {
  const bool costs_ok = run_costs();
  const bool pool_ok = run_pool();
  std::printf("%s\n", costs_ok && pool_ok ? "ok" : "FAILED");
  return costs_ok && pool_ok ? 0 : 1;
}
