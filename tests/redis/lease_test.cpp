// The lease state machine and the decoding of script replies, without I/O.
#include <keysem/redis/detail/lease.hpp>
#include <keysem/redis/detail/scripts.hpp>

#include <doctest/doctest.h>

using namespace keysem::redis::detail;
using namespace std::chrono_literals;
using state = lease_fsm::state;

namespace {
const lease_fsm::time_point t0{};
}

TEST_CASE("lease: believed held until t_sent + T - m, then lost") {
  lease_fsm lease(t0, 1000ms, 100ms);
  CHECK(lease.deadline() == t0 + 900ms);
  CHECK(lease.believed_held(t0 + 899ms));
  CHECK_FALSE(lease.expire_if_due(t0 + 899ms));
  CHECK(lease.expire_if_due(t0 + 900ms));
  CHECK(lease.current() == state::lost);
  CHECK_FALSE(lease.believed_held(t0 + 100ms));
  CHECK_FALSE(lease.expire_if_due(t0 + 2000ms));  // reported once
}

TEST_CASE("lease: a confirmed refresh moves the deadline from its send time, not its reply time") {
  lease_fsm lease(t0, 1000ms, 100ms);
  REQUIRE(lease.begin_refresh(t0 + 300ms));
  CHECK(lease.current() == state::refreshing);
  CHECK_FALSE(lease.begin_refresh(t0 + 310ms));  // one in flight at a time
  CHECK_FALSE(lease.on_refresh(lease_fsm::reply::extended, t0 + 800ms));
  CHECK(lease.current() == state::held);
  CHECK(lease.deadline() == t0 + 1200ms);
}

TEST_CASE("lease: a refresh the server reports lost makes the lease lost at once") {
  lease_fsm lease(t0, 1000ms, 100ms);
  REQUIRE(lease.begin_refresh(t0 + 300ms));
  CHECK(lease.on_refresh(lease_fsm::reply::lost, t0 + 301ms));
  CHECK(lease.current() == state::lost);
  CHECK_FALSE(lease.begin_refresh(t0 + 600ms));
}

TEST_CASE("lease: a failed refresh keeps the old deadline, which still expires") {
  lease_fsm lease(t0, 1000ms, 100ms);
  REQUIRE(lease.begin_refresh(t0 + 300ms));
  CHECK_FALSE(lease.on_refresh(lease_fsm::reply::failed, t0 + 500ms));
  CHECK(lease.current() == state::held);
  CHECK(lease.deadline() == t0 + 900ms);
  REQUIRE(lease.begin_refresh(t0 + 600ms));
  CHECK(lease.on_refresh(lease_fsm::reply::failed, t0 + 950ms));
  CHECK(lease.current() == state::lost);
}

TEST_CASE("lease: a confirmation arriving after the deadline does not revive the lease") {
  lease_fsm lease(t0, 1000ms, 100ms);
  REQUIRE(lease.begin_refresh(t0 + 100ms));
  CHECK(lease.expire_if_due(t0 + 950ms));
  CHECK_FALSE(lease.on_refresh(lease_fsm::reply::extended, t0 + 960ms));
  CHECK(lease.current() == state::lost);
}

TEST_CASE("lease: a released lease is neither refreshed nor lost") {
  lease_fsm lease(t0, 1000ms, 100ms);
  REQUIRE(lease.begin_refresh(t0 + 300ms));
  lease.release();
  CHECK_FALSE(lease.on_refresh(lease_fsm::reply::lost, t0 + 301ms));
  CHECK_FALSE(lease.expire_if_due(t0 + 5000ms));
  CHECK(lease.current() == state::released);
}

namespace {
reply integer(std::int64_t v) {
  reply r;
  r.type = reply::kind::integer;
  r.integer = v;
  return r;
}
reply array(std::vector<reply> elements) {
  reply r;
  r.type = reply::kind::array;
  r.elements = std::move(elements);
  return r;
}
}  // namespace

TEST_CASE("scripts: acquire replies decode into granted, busy, mismatch and too_many") {
  auto granted = parse_acquire(array({integer(1), integer(42), integer(4)}));
  CHECK(granted.outcome == acquire_result::kind::granted);
  CHECK(granted.fence == 42);
  CHECK(granted.limit == 4);
  auto busy = parse_acquire(array({integer(0), integer(250), integer(4)}));
  CHECK(busy.outcome == acquire_result::kind::busy);
  CHECK(busy.wait_ms == 250);
  CHECK(parse_acquire(array({integer(0), integer(-3), integer(4)})).wait_ms == 0);
  auto mismatch = parse_acquire(array({integer(-1), integer(2)}));
  CHECK(mismatch.outcome == acquire_result::kind::limit_mismatch);
  CHECK(mismatch.limit == 2);
  CHECK(parse_acquire(array({integer(-2), integer(4)})).outcome == acquire_result::kind::too_many);
  CHECK(parse_acquire(array({integer(-3), integer(0)})).outcome == acquire_result::kind::withdrawn);
}

TEST_CASE("scripts: malformed replies are reported, never taken for a grant") {
  CHECK(parse_acquire(integer(1)).outcome == acquire_result::kind::malformed);
  CHECK(parse_acquire(array({integer(1)})).outcome == acquire_result::kind::malformed);
  CHECK(parse_acquire(array({integer(1), integer(0), integer(4)})).outcome ==
        acquire_result::kind::malformed);  // fence tokens start at 1
  CHECK(parse_acquire(array({integer(7), integer(1), integer(4)})).outcome ==
        acquire_result::kind::malformed);
  CHECK(parse_refresh(integer(1)) == refresh_result::extended);
  CHECK(parse_refresh(integer(0)) == refresh_result::lost);
  CHECK(parse_refresh(array({})) == refresh_result::malformed);
}

TEST_CASE("scripts: key names share one hash tag per key, and channels map back to keys") {
  const auto names = names_for("app", "tenant:7");
  CHECK(names.holders == "app:{tenant:7}:h");
  CHECK(names.counter == "app:{tenant:7}:c");
  CHECK(names.channel == "app:{tenant:7}:rel");
  CHECK(key_of_channel("app", names.channel) == "tenant:7");
  CHECK(key_of_channel("other", names.channel).empty());
  CHECK(key_of_channel("app", "app:{x}:h").empty());
}
