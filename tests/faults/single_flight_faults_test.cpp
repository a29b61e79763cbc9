// single_flight under allocation failure: the waiting caller and its
// completion are allocated with the handler's allocator, so failing any one
// of those allocations must leave every caller invoked once, thrown at
// initiation or destroyed unrun, the key free for a new execution, and every
// allocation given back.
#include "fault_support.hpp"

#include <keysem/single_flight.hpp>

#include <boost/asio/bind_allocator.hpp>

#include <exception>
#include <memory>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC PR 109224, asio's frames
#endif

namespace keysem::faults {
namespace {

using flights = single_flight<std::string, int>;

// One caller: how often its handler ran, whether run() threw, and a witness
// that lives exactly as long as its handler.
struct caller {
  int calls = 0;
  bool threw = false;
  std::weak_ptr<int> handler_alive;

  bool accounted_for() const {
    return calls == 1 || threw || (calls == 0 && handler_alive.expired());
  }
};

// concrete: the handler is bound to the io_context's own executor, so its
// completion is posted with its allocator too (through any_io_executor,
// asio allocates that post itself).
void join(asio::io_context& ctx, flights& group, caller& who, fault_plan& plan, bool concrete) {
  auto witness = std::make_shared<int>(0);
  who.handler_alive = witness;
  auto handler = [&who, witness](std::exception_ptr e, int value) {
    ++who.calls;
    if (!e) CHECK(value == 7);
  };
  auto fn = []() -> asio::awaitable<int> { co_return 7; };
  const failing_allocator<void> alloc(plan);
  try {
    if (concrete) {
      group.run("k", fn,
                asio::bind_allocator(alloc, asio::bind_executor(ctx.get_executor(), std::move(handler))));
    } else {
      group.run("k", fn, asio::bind_allocator(alloc, std::move(handler)));
    }
  } catch (const std::bad_alloc&) {
    who.threw = true;
  }
}

// Runs ctx to completion; a completion that cannot be allocated throws out
// of run() and is dropped (its handler destroyed), so keep running.
void run_through_failures(asio::io_context& ctx) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    try {
      ctx.restart();
      ctx.run();
      return;
    } catch (const std::bad_alloc&) {
    }
  }
  FAIL("the context kept throwing");
}

}  // namespace

TEST_CASE("fault: single_flight: allocation failure at every allocation of a leader and a joiner never wedges or leaks") {
  int failures_injected = 0;
  for (bool concrete : {false, true}) {
    for (int fail_at = 1; fail_at <= 8; ++fail_at) {
      CAPTURE(concrete);
      CAPTURE(fail_at);
      fault_plan plan;
      plan.fail_at = fail_at;
      {
        asio::io_context ctx;
        flights group(ctx);
        caller leader, joiner;
        join(ctx, group, leader, plan, concrete);
        join(ctx, group, joiner, plan, concrete);
        run_through_failures(ctx);
        CHECK(leader.accounted_for());
        CHECK(joiner.accounted_for());
        CHECK(leader.calls <= 1);
        CHECK(joiner.calls <= 1);
        CHECK(group.in_flight() == 0);
        // The key is free: a new execution runs and completes.
        int again = 0;
        group.run("k", []() -> asio::awaitable<int> { co_return 7; },
                  [&](std::exception_ptr e, int value) { again = (!e && value == 7) ? 1 : -1; });
        run_through_failures(ctx);
        CHECK(again == 1);
        if (plan.attempts >= fail_at) ++failures_injected;
      }
      CHECK(plan.balanced());
    }
  }
  // The trials reach the allocations they fail: 2 callers and their 2
  // completions, with a concrete executor and through the any_io_executor
  // that holds the io_context's executor alike.
  CHECK(failures_injected == 4 + 4);
}

}  // namespace keysem::faults
