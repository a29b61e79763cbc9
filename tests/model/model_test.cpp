// Model-based checking: random operation sequences run against the real
// semaphore and the reference model (model.hpp), every observable compared
// after every step.
//
// Environment:
//   KEYSEM_MODEL_SEQUENCES  sequences per random test case (default 2500; 5 cases)
//   KEYSEM_MODEL_SEED       first seed (default 1); case c uses seeds seed + c*1e9 + i
//   KEYSEM_MODEL_REPLAY     a file in the text form printed on failure: run it alone
#include "checker.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEYSEM_MODEL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define KEYSEM_MODEL_ASAN 1
#endif
#if defined(KEYSEM_MODEL_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

namespace keysem::model {
namespace {

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::strtoull(value, nullptr, 10) : fallback;
}

// If a sequence crashes the process (a sanitizer report, an abort), say
// which one: the seed reproduces it.
const sequence* current_sequence = nullptr;
std::uint64_t current_seed = 0;

void print_current() {
  if (current_sequence == nullptr) return;
  std::fprintf(stderr, "\n*** keysem model: crashed while checking seed %llu; sequence:\n%s***\n",
               static_cast<unsigned long long>(current_seed), print(*current_sequence).c_str());
}

void on_fatal_signal(int sig) {
  print_current();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

struct crash_reporter {
  crash_reporter() {
#if defined(KEYSEM_MODEL_ASAN)
    __sanitizer_set_death_callback(&print_current);
#endif
    std::signal(SIGSEGV, &on_fatal_signal);
    std::signal(SIGABRT, &on_fatal_signal);
  }
};
const crash_reporter install_crash_reporter;

struct guard {
  guard(const sequence& seq, std::uint64_t seed) {
    current_sequence = &seq;
    current_seed = seed;
  }
  ~guard() { current_sequence = nullptr; }
};

void run_random(std::uint64_t case_index, const generator_options& options) {
  const std::uint64_t count = env_number("KEYSEM_MODEL_SEQUENCES", 2500);
  const std::uint64_t base = env_number("KEYSEM_MODEL_SEED", 1) + case_index * 1'000'000'000ull;
  run_stats stats;
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t seed = base + i;
    const sequence seq = generate(seed, options);
    guard g(seq, seed);
    if (const auto f = check_sequence(seq, &stats)) {
      FAIL_CHECK(report(seed, seq, *f));
      return;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("model: " << stats.sequences << " sequences, " << stats.steps_applied << " steps applied ("
                    << stats.steps_skipped << " skipped), " << stats.handlers_run << " handlers run, "
                    << stats.timed_out << " timed out (" << stats.reports_awaited << " timer reports awaited, " << stats.late_reports
                    << " of them not yet in), " << stats.capped << " with a total limit (" << stats.staged_at_once
                    << " acquires staged at once, " << stats.transferred << " moved by a transfer job, " << stats.timed_out_at_total << " timed out at the total), seeds "
                    << base << ".." << base + count - 1 << ", " << seconds << " s");
}

sequence script(const std::string& text) { return parse(text); }

void expect_passes(const std::string& text) {
  const sequence seq = script(text);
  guard g(seq, 0);
  const auto f = check_sequence(seq);
  if (f) FAIL_CHECK(report(0, seq, *f));
}

// Runs a script like expect_passes and returns what both sides showed after
// its last step, so that an example also states its outcome.
observation outcome_of(const std::string& text) {
  const sequence seq = script(text);
  guard g(seq, 0);
  runner r(seq);
  const auto f = r.run();
  if (f) FAIL_CHECK(report(0, seq, *f));
  return r.last_observation();
}

op_view completed(ec_kind ec, int count) { return {fate::completed, ec, count, true}; }

}  // namespace

// ---------------------------------------------------------------------------
// The random sequences: 4 cases x KEYSEM_MODEL_SEQUENCES.
// ---------------------------------------------------------------------------

TEST_CASE("model: random sequences, one shard, no endings (grants, cancellation, tokens)") {
  generator_options o;
  o.total_percent = 35;
  o.multi_shard = false;
  o.endings = false;
  run_random(0, o);
}

TEST_CASE("model: random sequences, several shards, no endings") {
  generator_options o;
  o.total_percent = 35;
  o.endings = false;
  o.max_keys = 4;
  run_random(1, o);
}

TEST_CASE("model: random sequences with close, destruction and context death") {
  generator_options o;
  o.total_percent = 35;
  run_random(2, o);
}

TEST_CASE("model: random long sequences, one key, heavy weights") {
  generator_options o;
  o.total_percent = 35;
  o.min_steps = 40;
  o.max_steps = 120;
  o.max_keys = 1;
  o.max_limit = 4;
  run_random(3, o);
}

TEST_CASE("model: random short sequences that end with the context's death, jobs still queued") {
  generator_options o;
  o.total_percent = 35;
  o.min_steps = 3;
  o.max_steps = 16;
  o.poll_divisor = 4;
  o.end_with_context_death = true;
  run_random(4, o);
}

TEST_CASE("model: replay KEYSEM_MODEL_REPLAY") {
  const char* path = std::getenv("KEYSEM_MODEL_REPLAY");
  if (path == nullptr || *path == 0) {
    return;
  }
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::stringstream text;
  text << in.rdbuf();
  const sequence seq = parse(text.str());
  guard g(seq, 0);
  const auto f = check_sequence(seq);
  if (f) {
    FAIL_CHECK("step " << f->step << ": " << f->what << "\n" << print(seq));
  } else {
    MESSAGE("replay passed:\n" << print(seq));
  }
}

// ---------------------------------------------------------------------------
// The model's assumptions, checked directly.
// ---------------------------------------------------------------------------

TEST_CASE("model: key k lives on shard k % shards (the model's schedule depends on it)") {
  // The calibrated hash tables (system.hpp) hold for every pair of keys.
  for (int shards : {2, 4}) {
    const std::size_t* values = calibrated_hashes(shards);
    for (int a = 0; a < max_model_keys; ++a) {
      for (int b = a + 1; b < max_model_keys; ++b) {
        const bool same = a % shards == b % shards;
        CHECK(calibration::same_shard(shards, values[a], values[b]) == same);
        if (!same) CHECK(calibration::closes_first(shards, values[a], values[b]) == (a % shards < b % shards));
      }
    }
  }
  // With two shards, keys 0 and 2 share a strand and keys 0 and 1 do not.
  // Two drains posted from outside the context: on one strand they run in
  // one invoker's batches (the second waits behind the first handler), on
  // two strands each has its own invoker.
  auto drains = [](int other) {
    boost::asio::io_context ctx;
    semaphore sem(ctx, 1, semaphore_options{2}, model_hash{calibrated_hashes(2)});
    auto a = sem.try_acquire(0);
    auto b = sem.try_acquire(other);
    int done = 0;
    sem.acquire(0, [&](error_code, permit) { ++done; });
    sem.acquire(other, [&](error_code, permit) { ++done; });
    ctx.poll();
    ctx.restart();
    a->release();  // drain job for key 0
    b->release();  // drain job for `other`
    ctx.poll_one();  // the first invoker: grants key 0
    ctx.poll_one();  // same strand: key 0's handler; two strands: the second invoker
    return sem.waiting(other);
  };
  CHECK_MESSAGE(drains(2) == 1, "keys 0 and 2 should share a shard with 2 shards");
  CHECK_MESSAGE(drains(1) == 0, "keys 0 and 1 should be on different shards with 2 shards");
}

TEST_CASE("model: the contract's examples, in the model and the real semaphore alike") {
  // Free permits are taken at once; the handler runs on poll.
  expect_passes(R"(keys=1 limit=2 shards=1
acquire k=0 n=2 tok=callback cancel=0 then=keep
try k=0 n=1
poll_one
)");
  // A waiter counts at once; try_acquire fails while anyone waits, even with permits free.
  expect_passes(R"(keys=1 limit=2 shards=1
try k=0 n=2
acquire k=0 n=1 tok=callback cancel=0 then=keep
release target=0
try k=0 n=1
poll
)");
  // FIFO with head-of-line blocking: the weighted head blocks the small one behind it.
  expect_passes(R"(keys=1 limit=3 shards=1
try k=0 n=2
acquire k=0 n=3 tok=callback cancel=1 then=keep
acquire k=0 n=1 tok=callback cancel=0 then=keep
poll
cancel target=0 type=partial
poll_one
poll
)");
  // Cancellation after the grant is decided is ignored.
  expect_passes(R"(keys=1 limit=1 shards=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=1 then=keep
poll
release target=0
poll_one
cancel target=0 type=total
poll
)");
  // close(): queued and later acquires complete with closed; try_acquire fails.
  expect_passes(R"(keys=2 limit=1 shards=2
try k=0 n=1
acquire k=0 n=1 tok=strand cancel=0 then=keep
close
acquire k=1 n=1 tok=ctx2 cancel=0 then=keep
try k=1 n=1
poll
poll2
)");
  // Admission control. Raising a limit grants waiters through a drain job on
  // the shard's strand, in FIFO order.
  expect_passes(R"(keys=1 limit=1 shards=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=0 n=1 tok=strand cancel=0 then=keep
poll
set_limit k=0 n=3
poll_one
poll
)");
  // Lowering revokes nothing; a waiter above the new limit fails with
  // invalid_argument at the next grant pass, the others keep waiting.
  expect_passes(R"(keys=1 limit=3 shards=1
try k=0 n=3
acquire k=0 n=3 tok=callback cancel=0 then=keep
acquire k=0 n=1 tok=callback cancel=0 then=keep
poll
set_limit k=0 n=2
try k=0 n=1
poll
release target=0
poll
reset_limit k=0
acquire k=0 n=3 tok=callback cancel=0 then=keep
poll
)");
  // A bounded queue: queue_full, posted, never inline, whatever the token.
  expect_passes(R"(keys=1 limit=1 shards=1 max_waiters=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=1 then=keep
acquire k=0 n=1 tok=ctx2 cancel=0 then=keep
acquire k=0 n=1 tok=awaitable cancel=0 then=keep
poll
poll2
cancel target=0 type=terminal
acquire k=0 n=1 tok=tuple cancel=0 then=keep
poll
)");
  expect_passes(R"(keys=2 limit=2 shards=2 max_waiters=0
acquire k=1 n=2 tok=callback cancel=0 then=keep
acquire k=1 n=1 tok=callback cancel=0 then=keep
set_limit k=1 n=1
poll
)");
  // Destruction with granted-but-not-run handlers, then the context.
  expect_passes(R"(keys=1 limit=2 shards=1
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=0 n=2 tok=coro cancel=1 then=keep
destroy_sem
destroy_ctx
)");
}

// Deadlines: `deadline=past` is acquire_until(now - 1h), `deadline=later`
// acquire_until(now + 24h). Each example states its outcome; the checker has
// compared every step with the model on the way.
TEST_CASE("model: deadlines, the contract's examples") {
  SUBCASE("a deadline bounds waiting only; a timed waiter granted before its deadline") {
    const observation end = outcome_of(R"(keys=1 limit=1 shards=1
acquire k=0 n=1 tok=callback cancel=0 then=keep deadline=past
poll
acquire k=0 n=1 tok=callback cancel=0 then=keep deadline=later
poll
release target=0
poll
)");
    REQUIRE(end.ops.size() == 2);
    CHECK(end.ops[0] == completed(ec_kind::ok, 1));  // free permits: granted whatever the deadline
    CHECK(end.ops[1] == completed(ec_kind::ok, 1));
    CHECK(end.stats.granted_immediately == 1);
    CHECK(end.stats.granted_after_wait == 1);
    CHECK(end.stats.timed_out == 0);
  }
  SUBCASE("a waiter whose deadline passes times out, and the head it held back is served") {
    const observation end = outcome_of(R"(keys=1 limit=2 shards=1
try k=0 n=1
acquire k=0 n=2 tok=callback cancel=0 then=keep deadline=past
acquire k=0 n=1 tok=ctx2 cancel=0 then=keep
poll
poll2
)");
    REQUIRE(end.ops.size() == 2);
    CHECK(end.ops[0] == completed(ec_kind::timed_out, 0));
    CHECK(end.ops[1] == completed(ec_kind::ok, 1));
    CHECK(end.stats.timed_out == 1);
    CHECK(end.stats.granted_after_wait == 1);
    CHECK(end.waiting == std::vector<std::size_t>{0});
    CHECK(end.in_use == std::vector<std::size_t>{2});
  }
  SUBCASE("a release queued before the timer's job wins the race in the same poll") {
    // poll_one runs the enqueue job (the timer is armed, the reactor task
    // queued); the release's drain job is queued behind the reactor task,
    // so the reactor's collected wait runs after the drain.
    const observation end = outcome_of(R"(keys=1 limit=1 shards=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep deadline=past
poll_one
release target=0
poll
)");
    REQUIRE(end.ops.size() == 1);
    CHECK(end.ops[0] == completed(ec_kind::ok, 1));
    CHECK(end.stats.timed_out == 0);
    CHECK(end.stats.granted_after_wait == 1);
  }
  SUBCASE("the timer's job reaching the strand before a release wins the race in the same poll") {
    // The second poll_one's reactor run collects the expired wait behind
    // op 1's handler; op 2's handler, which releases key 0's permit, is
    // queued behind the wait.
    const observation end = outcome_of(R"(keys=3 limit=1 shards=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep deadline=past
poll_one
acquire k=1 n=1 tok=callback cancel=0 then=keep
poll_one
acquire k=2 n=1 tok=callback cancel=0 then=release_oldest
poll
)");
    REQUIRE(end.ops.size() == 3);
    CHECK(end.ops[0] == completed(ec_kind::timed_out, 0));
    CHECK(end.ops[1] == completed(ec_kind::ok, 1));
    CHECK(end.ops[2] == completed(ec_kind::ok, 1));
    CHECK(end.stats.timed_out == 1);
    CHECK(end.in_use == std::vector<std::size_t>{0, 1, 1});  // the released permit stays free
  }
  SUBCASE("a release from a handler queued before the collected wait wins, inline") {
    // The release's drain job is dispatched from inside the context to an
    // idle strand: it grants op 0 before the wait's handler reaches it.
    const observation end = outcome_of(R"(keys=2 limit=1 shards=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep deadline=past
poll_one
acquire k=1 n=1 tok=callback cancel=0 then=release_oldest
poll
)");
    REQUIRE(end.ops.size() == 2);
    CHECK(end.ops[0] == completed(ec_kind::ok, 1));
    CHECK(end.ops[1] == completed(ec_kind::ok, 1));
    CHECK(end.stats.timed_out == 0);
  }
  SUBCASE("a timed waiter can be cancelled, before and after its timer fired") {
    const observation end = outcome_of(R"(keys=1 limit=1 shards=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=1 then=keep deadline=later
acquire k=0 n=1 tok=tuple cancel=1 then=keep deadline=past
poll_one
cancel target=0 type=terminal
cancel target=1 type=partial
poll
)");
    REQUIRE(end.ops.size() == 2);
    CHECK(end.ops[0] == completed(ec_kind::aborted, 0));
    CHECK(end.ops[1] == completed(ec_kind::aborted, 0));
    CHECK(end.stats.cancelled == 2);
    CHECK(end.stats.timed_out == 0);
    CHECK(end.key_count == 1);
  }
  SUBCASE("close() completes timed waiters with closed; their timers are disarmed") {
    const observation end = outcome_of(R"(keys=2 limit=1 shards=2
try k=0 n=1
try k=1 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep deadline=later
acquire k=1 n=1 tok=strand cancel=0 then=keep deadline=later
poll
acquire k=1 n=1 tok=callback cancel=0 then=keep deadline=past
close
poll
)");
    REQUIRE(end.ops.size() == 3);
    for (const op_view& v : end.ops) CHECK(v == completed(ec_kind::closed, 0));
    CHECK(end.stats.rejected_closed == 3);
    CHECK(end.stats.timed_out == 0);
  }
  SUBCASE("destroying the semaphore and the context with timed waiters and armed timers") {
    expect_passes(R"(keys=2 limit=1 shards=2
try k=0 n=1
try k=1 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep deadline=later
acquire k=1 n=1 tok=callback cancel=0 then=keep deadline=past
poll_one
destroy_sem
destroy_ctx
)");
  }
}

// semaphore_options::total_limit (header field total=T): the guarantees of
// reference.md "The total limit", each as a script that the checker compares
// with the model step by step, and whose outcome the example states.
TEST_CASE("model: the total limit, the contract's examples") {
  SUBCASE("held back only by the total: staged at once, its key's permits reserved") {
    // Key 1 admits op 0, the total (held by key 0) does not: op 0 waits at
    // the total with key 1's permit reserved; in_use(1) does not count it,
    // waiting(1) does; the total's release grants it.
    const observation staged = outcome_of(R"(keys=2 limit=2 shards=2 total=2
try k=0 n=2
acquire k=1 n=1 tok=callback cancel=0 then=keep
try k=1 n=1
poll
)");
    REQUIRE(staged.ops.size() == 1);
    CHECK(staged.ops[0].f == fate::pending);
    CHECK(staged.in_use == std::vector<std::size_t>{2, 0});
    CHECK(staged.available == std::vector<std::size_t>{0, 2});
    CHECK(staged.waiting == std::vector<std::size_t>{0, 1});
    CHECK(staged.total_in_use == 2);
    CHECK(staged.total_waiting == 1);
    CHECK(staged.stats.try_failed == 1);  // key 1 has a waiter: no overtaking
    CHECK(staged.stats.waiting == 1);
    CHECK(staged.stats.in_use == 2);
    const observation end = outcome_of(R"(keys=2 limit=2 shards=2 total=2
try k=0 n=2
acquire k=1 n=1 tok=callback cancel=0 then=keep
poll
release target=0
poll
)");
    CHECK(end.ops[0] == completed(ec_kind::ok, 1));
    CHECK(end.in_use == std::vector<std::size_t>{0, 1});
    CHECK(end.waiting == std::vector<std::size_t>{0, 0});
    CHECK(end.total_in_use == 1);
    CHECK(end.total_waiting == 0);
    CHECK(end.stats.granted_after_wait == 1);
  }
  SUBCASE("oldest first across keys; a key's head moved to the total by the transfer job") {
    // Op 0 waits in key 0's queue, op 1 (key 1) at the total. The release
    // frees both levels: the total's drain grants op 1 (registered there
    // first); key 0's drain then finds its head fitting the key but not the
    // total and moves it to the total's queue.
    const observation moved = outcome_of(R"(keys=2 limit=1 shards=2 total=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=1 n=1 tok=callback cancel=0 then=keep
poll
release target=0
poll
)");
    REQUIRE(moved.ops.size() == 2);
    CHECK(moved.ops[0].f == fate::pending);
    CHECK(moved.ops[1] == completed(ec_kind::ok, 1));
    CHECK(moved.in_use == std::vector<std::size_t>{0, 1});
    CHECK(moved.waiting == std::vector<std::size_t>{1, 0});
    CHECK(moved.total_waiting == 1);
    const observation end = outcome_of(R"(keys=2 limit=1 shards=2 total=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=1 n=1 tok=callback cancel=0 then=keep
poll
release target=0
poll
release target=0
poll
)");
    CHECK(end.ops[0] == completed(ec_kind::ok, 1));
    CHECK(end.in_use == std::vector<std::size_t>{1, 0});
    CHECK(end.total_in_use == 1);
    CHECK(end.total_waiting == 0);
  }
  SUBCASE("head-of-line at the total: a weighted request blocks smaller ones of other keys") {
    // Op 0 (key 1, n = 2) waits at the total with one permit of it free;
    // op 1 (key 2, n = 1) would fit, but it may not overtake.
    const observation blocked = outcome_of(R"(keys=3 limit=2 shards=1 total=2
try k=0 n=1
acquire k=1 n=2 tok=callback cancel=0 then=keep
acquire k=2 n=1 tok=callback cancel=0 then=keep
poll
)");
    CHECK(blocked.ops[0].f == fate::pending);
    CHECK(blocked.ops[1].f == fate::pending);
    CHECK(blocked.total_in_use == 1);
    CHECK(blocked.total_waiting == 2);
    const observation end = outcome_of(R"(keys=3 limit=2 shards=1 total=2
try k=0 n=1
acquire k=1 n=2 tok=callback cancel=0 then=keep
acquire k=2 n=1 tok=callback cancel=0 then=keep
poll
release target=0
poll
)");
    CHECK(end.ops[0] == completed(ec_kind::ok, 2));
    CHECK(end.ops[1].f == fate::pending);
    CHECK(end.in_use == std::vector<std::size_t>{0, 2, 0});
    CHECK(end.waiting == std::vector<std::size_t>{0, 0, 1});
  }
  SUBCASE("set_limit above the total is allowed; the total still bounds the key") {
    const observation end = outcome_of(R"(keys=2 limit=1 shards=1 total=2
set_limit k=0 n=3
acquire k=0 n=3 tok=callback cancel=0 then=keep
acquire k=0 n=2 tok=callback cancel=0 then=keep
try k=1 n=1
poll
)");
    CHECK(end.limit == std::vector<std::size_t>{3, 1});
    CHECK(end.ops[0] == completed(ec_kind::invalid, 0));  // above the total
    CHECK(end.ops[1] == completed(ec_kind::ok, 2));
    CHECK(end.stats.try_failed == 1);  // the total is full
    CHECK(end.total_in_use == 2);
  }
  SUBCASE("a hot key fills the total's queue only up to its own limit") {
    // Key 0 (limit 2) has four waiters; only two can wait at the total, the
    // others wait in its own queue; key 1's request waits at the total
    // right behind them, not behind all four.
    const observation end = outcome_of(R"(keys=2 limit=2 shards=1 total=1
try k=1 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=1 n=1 tok=callback cancel=0 then=keep
poll
)");
    CHECK(end.waiting == std::vector<std::size_t>{4, 1});
    CHECK(end.in_use == std::vector<std::size_t>{0, 1});
    CHECK(end.available == std::vector<std::size_t>{2, 1});
    // Key 0's two staged requests (one staged at once, one moved by its
    // enqueue job's grant pass), then key 1's.
    CHECK(end.total_waiting == 3);
  }
  SUBCASE("cancellation at the total lets its key's queue move on") {
    const observation end = outcome_of(R"(keys=2 limit=1 shards=1 total=1
try k=0 n=1
acquire k=1 n=1 tok=callback cancel=1 then=keep
acquire k=1 n=1 tok=callback cancel=0 then=keep
poll
cancel target=0 type=partial
poll
)");
    REQUIRE(end.ops.size() == 2);
    CHECK(end.ops[0] == completed(ec_kind::aborted, 0));
    CHECK(end.ops[1].f == fate::pending);  // moved to the total, which key 0 still holds
    CHECK(end.waiting == std::vector<std::size_t>{0, 1});
    CHECK(end.in_use == std::vector<std::size_t>{1, 0});
    CHECK(end.total_waiting == 1);
    CHECK(end.stats.cancelled == 1);
  }
  SUBCASE("cancellation on the way to the total: the transfer job finishes it") {
    // The second poll_one runs key 0's drain, which moves op 0 to the total
    // (its transfer job queued behind op 1's handler); the signal then
    // finds it transferring.
    const observation end = outcome_of(R"(keys=2 limit=1 shards=2 total=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=1 then=keep
acquire k=1 n=1 tok=callback cancel=1 then=keep
poll
release target=0
poll_one
poll_one
cancel target=0 type=terminal
poll
)");
    REQUIRE(end.ops.size() == 2);
    CHECK(end.ops[0] == completed(ec_kind::aborted, 0));
    CHECK(end.ops[1] == completed(ec_kind::ok, 1));
    CHECK(end.waiting == std::vector<std::size_t>{0, 0});
    CHECK(end.in_use == std::vector<std::size_t>{0, 1});
    CHECK(end.total_waiting == 0);
    CHECK(end.key_count == 1);  // key 0's reservation went with it
  }
  SUBCASE("try_acquire never overtakes a request waiting at the total") {
    const observation end = outcome_of(R"(keys=2 limit=2 shards=1 total=2
try k=0 n=2
acquire k=1 n=2 tok=callback cancel=0 then=keep
release target=0
try k=0 n=1
poll
)");
    CHECK(end.stats.try_failed == 1);
    CHECK(end.ops[0] == completed(ec_kind::ok, 2));
    CHECK(end.total_in_use == 2);
  }
  SUBCASE("the queue bound counts the total's stage; 0 rejects what the total holds back") {
    const observation one = outcome_of(R"(keys=1 limit=2 shards=1 max_waiters=1 total=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep
acquire k=0 n=1 tok=callback cancel=0 then=keep
poll
)");
    CHECK(one.ops[0].f == fate::pending);
    CHECK(one.ops[1] == completed(ec_kind::queue_full, 0));
    CHECK(one.waiting == std::vector<std::size_t>{1});
    const observation none = outcome_of(R"(keys=1 limit=2 shards=1 max_waiters=0 total=1
try k=0 n=1
acquire k=0 n=1 tok=callback cancel=0 then=keep
poll
)");
    CHECK(none.ops[0] == completed(ec_kind::queue_full, 0));
    CHECK(none.waiting == std::vector<std::size_t>{0});
    CHECK(none.total_waiting == 0);
    CHECK(none.stats.rejected_queue_full == 1);
  }
  SUBCASE("a request above the total is an invalid argument") {
    const observation end = outcome_of(R"(keys=1 limit=3 shards=1 total=2
acquire k=0 n=3 tok=callback cancel=0 then=keep
try k=0 n=3
poll
)");
    CHECK(end.ops[0] == completed(ec_kind::invalid, 0));
    CHECK(end.stats.invalid_argument == 2);
    CHECK(end.key_count == 0);
  }
  SUBCASE("a deadline keeps running at the total") {
    const observation end = outcome_of(R"(keys=2 limit=1 shards=1 total=1
try k=0 n=1
acquire k=1 n=1 tok=callback cancel=0 then=keep deadline=past
poll
)");
    CHECK(end.ops[0] == completed(ec_kind::timed_out, 0));
    CHECK(end.waiting == std::vector<std::size_t>{0, 0});
    CHECK(end.total_waiting == 0);
    CHECK(end.key_count == 1);
    CHECK(end.stats.timed_out == 1);
  }
  SUBCASE("close() completes requests at either stage with closed") {
    const observation end = outcome_of(R"(keys=2 limit=1 shards=2 total=1
try k=0 n=1
acquire k=1 n=1 tok=callback cancel=0 then=keep
acquire k=0 n=1 tok=strand cancel=0 then=keep
poll
close
poll
)");
    CHECK(end.ops[0] == completed(ec_kind::closed, 0));
    CHECK(end.ops[1] == completed(ec_kind::closed, 0));
    CHECK(end.waiting == std::vector<std::size_t>{0, 0});
    CHECK(end.total_waiting == 0);
    CHECK(end.total_in_use == 1);
    CHECK(end.stats.rejected_closed == 2);
  }
  SUBCASE("destruction and the context's death with staged requests") {
    const observation destroyed = outcome_of(R"(keys=2 limit=1 shards=1 total=1
try k=0 n=1
acquire k=1 n=1 tok=callback cancel=0 then=keep
poll_one
acquire k=0 n=1 tok=ctx2 cancel=0 then=keep
destroy_sem
poll
poll2
)");
    CHECK(destroyed.ops[0] == completed(ec_kind::aborted, 0));
    CHECK(destroyed.ops[1] == completed(ec_kind::aborted, 0));
    const observation dead = outcome_of(R"(keys=2 limit=1 shards=1 total=1
try k=0 n=1
acquire k=1 n=1 tok=callback cancel=0 then=keep
acquire k=1 n=1 tok=callback cancel=1 then=keep
poll
destroy_ctx
)");
    CHECK(dead.ops[0].f == fate::destroyed);
    CHECK(dead.ops[1].f == fate::destroyed);
    CHECK(dead.waiting == std::vector<std::size_t>{0, 0});
    CHECK(dead.total_waiting == 0);
  }
}

}  // namespace keysem::model
