// worker_pool: Go's worker pool with two limits — W workers in all, and at
// most N jobs per tenant.
//
// Each job first waits for its tenant's permit in a small "gate" coroutine;
// only then is it handed to a worker over a channel, permit included, and
// the worker releases the permit when the job is done. Why not let the
// workers acquire? A worker waiting for a busy tenant would sit idle while
// other tenants' jobs queue behind it. Gates are cheap (one coroutine
// frame each); workers only ever see jobs that may run now.
//
// Errors (errgroup): gates and workers are awaited together as one ranged
// parallel_group with wait_for_one_error(). The first job that fails ends
// its worker with an exception, and the group cancels everything else:
// gates queued for a permit leave the queue, gates waiting for a worker
// give their permit back, workers abort their current job.
//
// The batch runs twice: clean, then with job 37 failing. Exits non-zero if
// a tenant ever had more than N jobs running or a run ends wrongly.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;

constexpr std::size_t worker_count = 4;
constexpr std::size_t per_tenant_limit = 2;

// A job id and its tenant's permit, handed from a gate to a worker.
// Capacity 0: a job changes hands only when a worker takes it, so every
// completed send has been received (Boost 1.81's close() would drop
// buffered messages).
using admitted_channel = asio::experimental::channel<void(boost::system::error_code, std::size_t,
                                                          keysem::keyed_semaphore::permit)>;

struct job {
  std::string tenant;
  int work_ms;
};

struct batch {
  std::vector<job> jobs;
  std::size_t failing_job = 0;
  std::vector<std::optional<long>> results;
  std::size_t gates_left = 0;
  std::map<std::string, std::size_t> running, peak;
};

asio::awaitable<void> gate(keysem::keyed_semaphore& limiter, admitted_channel& admitted, batch& b,
                           std::size_t id) {
  auto [ec, permit] =
      co_await limiter.acquire(b.jobs[id].tenant, asio::as_tuple(asio::use_awaitable));
  if (!ec) {
    // Holds the tenant's permit while it waits for a free worker.
    co_await admitted.async_send({}, id, std::move(permit), asio::as_tuple(asio::use_awaitable));
  }
  if (--b.gates_left == 0) {
    admitted.close();  // every job handed over: idle workers stop
  }
}

asio::awaitable<void> worker(admitted_channel& admitted, batch& b) {
  for (;;) {
    auto [ec, id, permit] = co_await admitted.async_receive(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      co_return;  // closed: no jobs left
    }
    const job& j = b.jobs[id];
    std::size_t& running = b.running[j.tenant];
    b.peak[j.tenant] = std::max(b.peak[j.tenant], ++running);
    struct leave {  // also when cancellation makes the timer throw
      std::size_t& n;
      ~leave() { --n; }
    } guard{running};

    asio::steady_timer io(co_await asio::this_coro::executor, std::chrono::milliseconds(j.work_ms));
    co_await io.async_wait(asio::use_awaitable);
    if (id == b.failing_job) {
      throw std::runtime_error("job " + std::to_string(id) + " of " + j.tenant + " failed");
    }
    b.results[id] = static_cast<long>(id * id);
  }  // each iteration releases its permit: the tenant's next gate opens
}

// Returns the first error, if any.
asio::awaitable<std::optional<std::string>> run_batch(batch& b) {
  auto ex = co_await asio::this_coro::executor;
  keysem::keyed_semaphore limiter(ex, per_tenant_limit);
  admitted_channel admitted(ex);
  b.results.assign(b.jobs.size(), std::nullopt);
  b.gates_left = b.jobs.size();

  // Gates and workers are both awaitable<void>: one group holds them all.
  using op_type = decltype(asio::co_spawn(ex, worker(admitted, b), asio::deferred));
  std::vector<op_type> ops;
  for (std::size_t id = 0; id < b.jobs.size(); ++id) {
    ops.push_back(asio::co_spawn(ex, gate(limiter, admitted, b, id), asio::deferred));
  }
  for (std::size_t w = 0; w < worker_count; ++w) {
    ops.push_back(asio::co_spawn(ex, worker(admitted, b), asio::deferred));
  }
  auto [order, errors] =
      co_await asio::experimental::make_parallel_group(std::move(ops))
          .async_wait(asio::experimental::wait_for_one_error(), asio::use_awaitable);

  if (limiter.key_count() != 0) {
    throw std::logic_error("keys still live after the batch");
  }
  for (std::size_t i : order) {  // completion order: the first real failure is the first error
    if (!errors[i]) {
      continue;
    }
    try {
      std::rethrow_exception(errors[i]);
    } catch (const boost::system::system_error& e) {
      if (e.code() != asio::error::operation_aborted) {
        co_return e.what();
      }
    } catch (const std::exception& e) {
      co_return e.what();
    }
  }
  co_return std::nullopt;
}

asio::awaitable<bool> run_both() {
  batch b;
  for (std::size_t i = 0; i < 100; ++i) {  // 5 tenants, t0 with the most jobs
    const std::size_t tenant = i % 3 == 0 ? 0 : i % 5;
    b.jobs.push_back({"t" + std::to_string(tenant), 2 + static_cast<int>(i % 4)});
  }
  bool ok = true;
  for (std::size_t failing : {b.jobs.size(), std::size_t{37}}) {
    b.failing_job = failing;
    b.peak.clear();
    const std::optional<std::string> error = co_await run_batch(b);
    const auto done = static_cast<std::size_t>(
        std::count_if(b.results.begin(), b.results.end(), [](auto& r) { return r.has_value(); }));
    std::printf("%s: %zu of %zu jobs done, first error: %s\n",
                failing == b.jobs.size() ? "clean run   " : "job 37 fails", done, b.jobs.size(),
                error ? error->c_str() : "none");
    std::printf("  %zu workers; most jobs running at once per tenant (limit %zu):", worker_count,
                per_tenant_limit);
    for (const auto& [tenant, peak] : b.peak) {
      std::printf(" %s %zu", tenant.c_str(), peak);
      ok = ok && peak <= per_tenant_limit;
    }
    std::printf("\n");
    if (failing == b.jobs.size()) {
      ok = ok && done == b.jobs.size() && !error;
    } else {
      ok = ok && error && error->starts_with("job 37 ") && done < b.jobs.size() && !b.results[37];
    }
  }
  co_return ok;
}

int main() {
  asio::io_context ctx;
  bool ok = false;
  asio::co_spawn(ctx, run_both(), [&ok](const std::exception_ptr& e, bool result) {
    if (e) {
      std::rethrow_exception(e);
    }
    ok = result;
  });
  ctx.run();
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
