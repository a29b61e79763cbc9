// pipeline: Go's pipeline pattern — stages joined by channels — where every
// stage limits its own per-tenant concurrency with keysem.
//
//   source ──► fetch (3 per tenant) ──► parse (1 per tenant) ──► store (2 per tenant) ──► sink
//
// A stage reads items from its input channel and starts one task per item.
// The task waits for the item's tenant's permit *of this stage*, works, then
// passes the item on. A stage closes its output once its input is closed and
// all its tasks have finished, so the end of the input flows down the
// pipeline like closing a channel in Go.
//
// Why per stage: each stage guards a different resource (a remote API, a
// CPU-heavy parser that must not be monopolised, a database), so each has its
// own limit. A tenant with many items never holds more than its share of
// any stage, and other tenants' items pass it.
//
// Exits non-zero if a stage ever ran more tasks of one tenant than its
// limit, or if an item was lost or duplicated.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <set>
#include <string>

namespace asio = boost::asio;

struct item {
  std::size_t id = 0;
  std::string tenant;
  std::string trail;  // which stages saw it
};

// Capacity 0: a send completes only when the next stage has taken the item,
// so closing a channel after the last send never drops anything (Boost
// 1.81's close() discards buffered items).
using item_channel = asio::experimental::channel<void(boost::system::error_code, item)>;

struct stage_spec {
  const char* name;
  std::size_t per_tenant;
  int work_ms;
};

struct stage_stats {
  std::map<std::string, std::size_t> running, peak;
};

// Counts a stage's live tasks; wait() completes when none are left. A timer
// that never expires serves as the event: cancelling it wakes the waiter.
class task_group {
 public:
  explicit task_group(const asio::any_io_executor& ex)
      : ex_(ex), idle_(ex, asio::steady_timer::time_point::max()) {}

  void spawn(asio::awaitable<void> task) {
    ++live_;
    asio::co_spawn(ex_, std::move(task), [this](const std::exception_ptr& e) {
      if (e && !error_) {
        error_ = e;
      }
      if (--live_ == 0) {
        idle_.cancel();
      }
    });
  }

  asio::awaitable<void> wait() {
    if (live_ != 0) {
      co_await idle_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (error_) {
      std::rethrow_exception(error_);
    }
  }

 private:
  asio::any_io_executor ex_;
  asio::steady_timer idle_;
  std::size_t live_ = 0;
  std::exception_ptr error_;
};

asio::awaitable<void> process(const stage_spec& spec, keysem::keyed_semaphore& limiter, item it,
                              item_channel& out, stage_stats& stats) {
  {
    auto permit = co_await limiter.acquire(it.tenant, asio::use_awaitable);
    std::size_t& running = stats.running[it.tenant];
    stats.peak[it.tenant] = std::max(stats.peak[it.tenant], ++running);
    asio::steady_timer work(co_await asio::this_coro::executor,
                            std::chrono::milliseconds(spec.work_ms));
    co_await work.async_wait(asio::use_awaitable);
    it.trail += std::string(it.trail.empty() ? "" : ">") + spec.name;
    --running;
  }  // released before handing on: this stage's limit covers its own work only
  co_await out.async_send({}, std::move(it), asio::use_awaitable);
}

asio::awaitable<void> stage(stage_spec spec, item_channel& in, item_channel& out,
                            stage_stats& stats) {
  auto ex = co_await asio::this_coro::executor;
  keysem::keyed_semaphore limiter(ex, spec.per_tenant);  // this stage's own limit
  task_group tasks(ex);
  for (;;) {
    auto [ec, it] = co_await in.async_receive(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      break;  // input closed and drained
    }
    tasks.spawn(process(spec, limiter, std::move(it), out, stats));
  }
  co_await tasks.wait();  // the tasks use `limiter` and `spec`: they must end first
  out.close();
}

asio::awaitable<void> source(item_channel& out, std::size_t items) {
  for (std::size_t i = 0; i < items; ++i) {
    const std::string tenant = i % 2 == 0 ? "big" : "t" + std::to_string(i % 3);  // "big" has half
    // Named, not built inside the co_await expression: GCC 12 miscompiles an
    // aggregate temporary with std::string members there (free(): invalid pointer).
    item it{i, tenant, ""};
    co_await out.async_send({}, std::move(it), asio::use_awaitable);
  }
  out.close();
}

asio::awaitable<void> sink(item_channel& in, std::set<std::size_t>& seen, std::size_t& duplicates,
                           std::size_t& incomplete) {
  for (;;) {
    auto [ec, it] = co_await in.async_receive(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      co_return;
    }
    duplicates += seen.insert(it.id).second ? 0 : 1;
    incomplete += it.trail == "fetch>parse>store" ? 0 : 1;
  }
}

int main() {
  constexpr std::size_t items = 120;
  const std::array<stage_spec, 3> specs = {{{"fetch", 3, 3}, {"parse", 1, 1}, {"store", 2, 2}}};

  asio::io_context ctx;
  item_channel to_fetch(ctx), to_parse(ctx), to_store(ctx), to_sink(ctx);
  std::array<stage_stats, 3> stats;
  std::set<std::size_t> seen;
  std::size_t duplicates = 0, incomplete = 0;

  using namespace asio::experimental::awaitable_operators;
  asio::co_spawn(ctx,
                 source(to_fetch, items) &&                            //
                     stage(specs[0], to_fetch, to_parse, stats[0]) &&  //
                     stage(specs[1], to_parse, to_store, stats[1]) &&  //
                     stage(specs[2], to_store, to_sink, stats[2]) &&   //
                     sink(to_sink, seen, duplicates, incomplete),
                 [](const std::exception_ptr& e) {
                   if (e) {
                     std::rethrow_exception(e);
                   }
                 });
  const auto start = std::chrono::steady_clock::now();
  ctx.run();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);

  bool ok = seen.size() == items && duplicates == 0 && incomplete == 0;
  std::printf("%zu items through 3 stages in %lld ms, %zu duplicates, %zu incomplete\n",
              seen.size(), static_cast<long long>(ms.count()), duplicates, incomplete);
  for (std::size_t s = 0; s < 3; ++s) {
    std::printf("  %-5s limit %zu per tenant, most running at once:", specs[s].name,
                specs[s].per_tenant);
    for (const auto& [tenant, peak] : stats[s].peak) {
      std::printf(" %s %zu", tenant.c_str(), peak);
      ok = ok && peak <= specs[s].per_tenant;
    }
    std::printf("\n");
  }
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
