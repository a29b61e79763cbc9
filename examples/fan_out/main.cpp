// fan_out: Go's fan-out/fan-in with errgroup semantics, per-tenant limits.
//
// A batch of jobs from many tenants runs as one coroutine per job (fan-out);
// keysem lets at most 3 jobs of a tenant run at a time, whatever the other
// tenants do. The jobs are awaited together as a ranged
// experimental::parallel_group, which is also the fan-in: it hands back
// every job's result and the order in which they finished.
//
// Errors: wait_for_one_error() makes the group behave like Go's errgroup.
// When one job fails, the group cancels all the others: a job still queued
// for its tenant's permit leaves the queue (its acquire completes with
// operation_aborted and takes nothing), a running job's I/O is aborted.
// The batch reports the results it has and the first error.
//
// The batch runs twice: once clean, once with job 37 failing. The program
// exits non-zero if a tenant ever ran more than 3 jobs at once, or if a run
// does not end as it should.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;

constexpr std::size_t per_tenant_limit = 3;

struct job {
  std::size_t id;
  std::string tenant;
  int work_ms;
};

struct running_count {  // how many jobs of each tenant run right now, and the most ever
  std::map<std::string, std::size_t> now, peak;
};

// One job: wait for the tenant's permit, then "work" (a timer stands in
// for I/O). Returns its result; throws to fail.
asio::awaitable<long> run_job(keysem::keyed_semaphore& limiter, job j, std::size_t failing_job,
                              running_count& running) {
  auto permit = co_await limiter.acquire(j.tenant, asio::use_awaitable);

  std::size_t& now = running.now[j.tenant];
  running.peak[j.tenant] = std::max(running.peak[j.tenant], ++now);
  struct leave {  // also when cancellation makes the timer throw
    std::size_t& n;
    ~leave() { --n; }
  } guard{now};

  asio::steady_timer io(co_await asio::this_coro::executor, std::chrono::milliseconds(j.work_ms));
  co_await io.async_wait(asio::use_awaitable);
  if (j.id == failing_job) {
    throw std::runtime_error("job " + std::to_string(j.id) + " of " + j.tenant +
                             ": the upstream service said no");
  }
  co_return static_cast<long>(j.id * j.id);
}  // the permit is released here, and the tenant's next job starts

struct batch_result {
  std::size_t completed = 0;
  std::size_t cancelled = 0;
  std::optional<std::string> first_error;
  long checksum = 0;
};

asio::awaitable<batch_result> run_batch(const std::vector<job>& jobs, std::size_t failing_job,
                                        running_count& running) {
  auto ex = co_await asio::this_coro::executor;
  keysem::keyed_semaphore limiter(ex, per_tenant_limit);

  using op_type =
      decltype(asio::co_spawn(ex, run_job(limiter, jobs[0], 0, running), asio::deferred));
  std::vector<op_type> ops;
  ops.reserve(jobs.size());
  for (const job& j : jobs) {
    ops.push_back(asio::co_spawn(ex, run_job(limiter, j, failing_job, running), asio::deferred));
  }
  auto [order, errors, results] =
      co_await asio::experimental::make_parallel_group(std::move(ops))
          .async_wait(asio::experimental::wait_for_one_error(), asio::use_awaitable);

  batch_result out;
  for (std::size_t i : order) {  // in completion order: the first failure is the first error
    if (!errors[i]) {
      ++out.completed;
      out.checksum += results[i];
      continue;
    }
    try {
      std::rethrow_exception(errors[i]);
    } catch (const boost::system::system_error& e) {
      if (e.code() != asio::error::operation_aborted) {
        throw;
      }
      ++out.cancelled;  // cancelled by the group because another job failed
    } catch (const std::exception& e) {
      if (!out.first_error) {
        out.first_error = e.what();
      }
    }
  }
  // Every job has finished one way or another: no tenant holds or waits.
  if (limiter.key_count() != 0) {
    throw std::logic_error("keys still live after the batch");
  }
  co_return out;
}

asio::awaitable<bool> run_both() {
  // 120 jobs, 6 tenants; tenant "t0" has the most jobs.
  std::vector<job> jobs;
  for (std::size_t i = 0; i < 120; ++i) {
    const std::size_t tenant = i % 4 == 0 ? 0 : i % 6;
    jobs.push_back({i, "t" + std::to_string(tenant), 2 + static_cast<int>(i % 5)});
  }
  const std::size_t no_failure = jobs.size();
  bool ok = true;
  for (std::size_t failing : {no_failure, std::size_t{37}}) {
    running_count running;
    batch_result r = co_await run_batch(jobs, failing, running);
    std::printf("%s: %zu completed, %zu cancelled, first error: %s\n",
                failing == no_failure ? "clean run     " : "job 37 fails  ", r.completed,
                r.cancelled, r.first_error ? r.first_error->c_str() : "none");
    std::printf("  most jobs running at once per tenant (limit %zu):", per_tenant_limit);
    for (const auto& [tenant, peak] : running.peak) {
      std::printf(" %s %zu", tenant.c_str(), peak);
      ok = ok && peak <= per_tenant_limit;
    }
    std::printf("\n");
    if (failing == no_failure) {
      ok = ok && r.completed == jobs.size() && !r.first_error;
    } else {
      ok = ok && r.first_error && r.first_error->starts_with("job 37 ") && r.cancelled > 0 &&
           r.completed + r.cancelled + 1 == jobs.size();
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
