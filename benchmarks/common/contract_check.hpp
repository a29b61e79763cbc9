// A quick check, run before any benchmark, that every contender keeps the
// contract the workloads rely on: the limit, FIFO hand-off, no barging,
// cancellation of a waiting acquire, and idle keys reclaimed. A baseline that
// cut a corner would be measured doing less work; this refuses to run then.
#ifndef KEYSEM_BENCHMARKS_COMMON_CONTRACT_CHECK_HPP
#define KEYSEM_BENCHMARKS_COMMON_CONTRACT_CHECK_HPP

#include "common/harness.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace bench {

template <class Sem>
void check_contract() {
  const char* const impl = impl_name<Sem>();
  auto expect = [impl](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "contract check failed for %s: %s\n", impl, what);
      std::exit(2);
    }
  };
  using permit = typename Sem::permit;
  asio::io_context ctx;
  {
    Sem sem(ctx, 2);
    const std::string key = "contract";
    std::vector<int> order;
    std::vector<permit> held;
    std::vector<boost::system::error_code> errors(5);
    asio::cancellation_signal cancel_third;
    for (int i = 0; i < 5; ++i) {
      auto handler = [&, i](boost::system::error_code ec, permit p) {
        errors[i] = ec;
        if (!ec) {
          order.push_back(i);
          held.push_back(std::move(p));
        }
      };
      if (i == 3) {
        sem.acquire(key, asio::bind_cancellation_slot(cancel_third.slot(), handler));
      } else {
        sem.acquire(key, handler);
      }
    }
    expect(order.empty(), "a handler ran inside acquire()");
    ctx.poll();
    ctx.restart();
    expect(order == std::vector<int>{0, 1}, "the first two acquires are granted at once, in order");
    expect(!sem.try_acquire(key), "try_acquire must fail while the key is at its limit");
    held.erase(held.begin());  // releases 0: grants 2
    ctx.poll();
    ctx.restart();
    expect(order == std::vector<int>{0, 1, 2}, "a release grants the oldest waiter");
    cancel_third.emit(asio::cancellation_type::terminal);
    ctx.poll();
    ctx.restart();
    expect(errors[3] == asio::error::operation_aborted, "a cancelled waiter completes with operation_aborted");
    held.erase(held.begin());  // releases 1: grants 4 (3 left the queue)
    ctx.poll();
    ctx.restart();
    expect(order == std::vector<int>{0, 1, 2, 4}, "a cancelled waiter leaves the queue");
    held.clear();
    expect(sem.key_count() == 0, "an idle key is reclaimed");
    auto a = sem.try_acquire(key);
    auto b = sem.try_acquire(key);
    expect(a && b && !sem.try_acquire(key), "try_acquire takes exactly the limit");
  }
  ctx.run();
}

inline void check_contracts() {
  for_each_impl([]<class Sem>() { check_contract<Sem>(); });
}

}  // namespace bench

#endif
