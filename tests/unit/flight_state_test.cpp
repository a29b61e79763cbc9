// A flight's state machine on its own (flight_state.hpp); no io_context.
#include <keysem/detail/flight_state.hpp>

#include <doctest/doctest.h>

using keysem::detail::flight_state;
using phase = flight_state::phase;

namespace {

flight_state with_callers(int n) {
  flight_state state;
  for (int i = 0; i < n; ++i) {
    REQUIRE(state.join());
  }
  return state;
}

}  // namespace

TEST_CASE("flight_state: a new flight is running, listed and joinable") {
  flight_state state;
  CHECK(state.current() == phase::running);
  CHECK(state.listed());
  CHECK(state.callers() == 0);
  CHECK(state.join());
  CHECK(state.join());
  CHECK(state.callers() == 2);
}

TEST_CASE("flight_state: the result goes to the callers and unlists the flight") {
  flight_state state = with_callers(3);
  const auto verdict = state.finish();
  CHECK(verdict.deliver);
  CHECK(verdict.unlist);
  CHECK_FALSE(verdict.abandoned);
  CHECK(state.current() == phase::done);
  CHECK_FALSE(state.join());  // a done flight is never joined
}

TEST_CASE("flight_state: a caller leaving while others wait changes nothing else") {
  for (const bool cancel_abandoned : {true, false}) {
    flight_state state = with_callers(2);
    const auto verdict = state.leave(cancel_abandoned);
    CHECK_FALSE(verdict.cancel_execution);
    CHECK_FALSE(verdict.unlist);
    CHECK_FALSE(verdict.abandoned);
    CHECK(state.callers() == 1);
    CHECK(state.current() == phase::running);
    CHECK(state.listed());
  }
}

TEST_CASE("flight_state: the last caller leaving cancels the execution with cancel_abandoned") {
  flight_state state = with_callers(1);
  const auto verdict = state.leave(true);
  CHECK(verdict.cancel_execution);
  CHECK(verdict.unlist);
  CHECK(verdict.abandoned);
  CHECK(state.current() == phase::cancelling);
  CHECK_FALSE(state.join());  // a new run() starts a new execution

  // The cancelled execution's outcome arrives later: discarded, counted once.
  const auto finish = state.finish();
  CHECK_FALSE(finish.deliver);
  CHECK_FALSE(finish.unlist);
  CHECK_FALSE(finish.abandoned);
  CHECK(state.current() == phase::done);
}

TEST_CASE("flight_state: without cancel_abandoned an abandoned execution runs on and can be joined") {
  flight_state state = with_callers(1);
  const auto verdict = state.leave(false);
  CHECK_FALSE(verdict.cancel_execution);
  CHECK_FALSE(verdict.unlist);
  CHECK_FALSE(verdict.abandoned);
  CHECK(state.current() == phase::running);
  CHECK(state.listed());

  SUBCASE("joined again: its result is delivered, not counted as abandoned") {
    CHECK(state.join());
    const auto finish = state.finish();
    CHECK(finish.deliver);
    CHECK(finish.unlist);
    CHECK_FALSE(finish.abandoned);
  }
  SUBCASE("not joined: its result is discarded and the execution counted abandoned") {
    const auto finish = state.finish();
    CHECK_FALSE(finish.deliver);
    CHECK(finish.unlist);
    CHECK(finish.abandoned);
  }
}

TEST_CASE("flight_state: forget unlists once; the callers still get the result") {
  flight_state state = with_callers(2);
  CHECK(state.forget());
  CHECK_FALSE(state.forget());
  CHECK_FALSE(state.join());
  const auto finish = state.finish();
  CHECK(finish.deliver);
  CHECK_FALSE(finish.unlist);
}

TEST_CASE("flight_state: a forgotten flight left by every caller is cancelled, not unlisted twice") {
  flight_state state = with_callers(1);
  CHECK(state.forget());
  const auto verdict = state.leave(true);
  CHECK(verdict.cancel_execution);
  CHECK_FALSE(verdict.unlist);
  CHECK(verdict.abandoned);
}

TEST_CASE("flight_state: stop aborts the callers and cancels a running execution once") {
  flight_state state = with_callers(2);
  const auto verdict = state.stop();
  CHECK(verdict.cancel_execution);
  CHECK(verdict.abort_callers);
  CHECK(verdict.unlist);
  CHECK(state.callers() == 0);
  CHECK(state.current() == phase::cancelling);
  const auto again = state.stop();
  CHECK_FALSE(again.cancel_execution);
  CHECK_FALSE(again.abort_callers);
  CHECK_FALSE(state.finish().deliver);
}

TEST_CASE("flight_state: stop leaves a cancelling or done flight alone") {
  flight_state cancelling = with_callers(1);
  cancelling.leave(true);
  CHECK_FALSE(cancelling.stop().cancel_execution);

  flight_state done = with_callers(1);
  done.finish();
  const auto verdict = done.stop();
  CHECK_FALSE(verdict.cancel_execution);
  CHECK_FALSE(verdict.unlist);
  CHECK(done.current() == phase::done);
}
