// Operation sequences for the model-based checker: the steps, a text form
// that can be printed and replayed, and a seeded random generator.
//
// Nothing here knows keysem or asio: the same sequences drive the reference
// model (model.hpp) and the real semaphore (system.hpp).
#ifndef KEYSEM_TESTS_MODEL_SEQUENCE_HPP
#define KEYSEM_TESTS_MODEL_SEQUENCE_HPP

#include <algorithm>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace keysem::model {

// How an acquire is initiated and where its handler runs.
enum class token : std::uint8_t {
  callback,  // a plain callback: the semaphore's executor (context 0)
  tuple,     // as_tuple(callback)
  strand,    // bind_executor(a user strand on context 0, callback)
  ctx2,      // bind_executor(context 1, callback)
  alloc,     // bind_allocator(counting allocator, callback)
  coro,      // co_spawn'ed coroutine: co_await acquire(key, n, as_tuple(use_awaitable))
  future,    // use_future: the promise is set on asio's system executor
  detached,  // asio::detached: the permit is dropped as soon as it arrives
  awaitable, // co_spawn'ed coroutine: co_await acquire(key, n), the token-less awaitable
  deferred,  // asio::deferred, launched later with a callback (launch steps only)
};

// What a handler does once it has recorded its result. Every action first
// stores the permit it received (if any) at the end of the permit table,
// except `drop`, which lets it go at the end of the handler.
enum class act : std::uint8_t {
  keep,
  drop,
  release_oldest,  // then releases the permit at the front of the table
  acquire,         // then starts a callback acquire (key, n) from inside the handler
  try_acquire,     // then try_acquire(key, n) from inside the handler
  cancel,          // then emits `type` on a cancellable op's signal
  close,           // then closes the semaphore
  destroy_sem,     // then destroys the semaphore from inside its own handler
};

enum class sig : std::uint8_t { none, terminal, partial, total, all };

// An acquire's deadline (acquire_until with steady_clock). `past` is
// now() - 1h when the step runs: a waiter times out at the first run of its
// shard's timer. `later` is now() + 24h: it never passes during a run, so
// the waiter is granted, cancelled or aborted, and its deadline only moves
// the shard's deadline heap and timer. Either way the real clock's value
// never decides an outcome (the virtual clock of the model has two ticks:
// "long ago" and "far ahead").
enum class deadline : std::uint8_t { none, past, later };

enum class kind : std::uint8_t {
  acquire,
  defer,        // builds a deferred acquire(key, n); takes nothing
  launch,       // launches deferred op #target
  try_acquire,
  release,      // releases permit-table entry #target (modulo its size)
  cancel,       // emits `type` on cancellable op #target (modulo their number)
  close,
  destroy_sem,
  poll,         // context 0: poll() until nothing is ready
  poll_one,     // context 0: poll_one()
  poll2,        // context 1
  poll_one2,
  destroy_ctx,  // destroys context 0 (and the user strand)
  destroy_ctx2,
  set_limit,    // set_limit(key, n): n >= 1, may be above or below permits_per_key
  reset_limit,  // reset_limit(key)
};

inline constexpr int kind_count = 16;

struct handler_action {
  act what = act::keep;
  int key = 0;
  int n = 1;
  int target = 0;
  sig type = sig::terminal;
};

struct step {
  kind what = kind::poll;
  int key = 0;
  int n = 1;
  token tok = token::callback;
  bool cancellable = false;
  handler_action then;
  int target = 0;
  sig type = sig::terminal;
  // acquire steps only: acquire_until(key, n, deadline, token) (printed
  // `deadline=past` / `deadline=later`). Ignored for the coroutine tokens.
  deadline dl = deadline::none;
};

struct config {
  int keys = 2;    // keys are the ints 0 .. keys-1
  int limit = 2;   // permits_per_key
  int shards = 1;  // semaphore_options::shards (1, 2 or 4); key k lives on shard k % shards
  // semaphore_options::max_waiters_per_key: -1 for unbounded (the default),
  // else 0, 1 or 2. Printed in the header only when bounded.
  int max_waiters = -1;
  // semaphore_options::total_limit: 0 for none (the default), else at least
  // 1. Printed in the header only when set.
  int total = 0;
};

struct sequence {
  config cfg;
  std::vector<step> steps;
};

// --------------------------------------------------------------------------
// Text form: one step per line, `key=value` fields. `print` and `parse` are
// inverse; failures are reported in this form, and KEYSEM_MODEL_REPLAY
// (a file) runs one back. `#` starts a comment.
//
//   keys=K limit=L shards=S [max_waiters=W] [total=T]
//                                               the header (W: 0, 1 or 2;
//                                               absent: unbounded; T: the
//                                               total limit, absent: none)
//   acquire k= n= tok= cancel=0|1 then=ACTION [deadline=past|later]
//   defer k= n=              launch target= cancel= then=
//   try k= n=                release target=        cancel target= type=
//   set_limit k= n=          reset_limit k=
//   close  destroy_sem  poll  poll_one  poll2  poll_one2  destroy_ctx  destroy_ctx2
//
// ACTION is keep, drop, release_oldest, acquire:K:N, try:K:N,
// cancel:TARGET:TYPE, close or destroy_sem. Files written before
// set_limit/reset_limit/max_waiters or deadline= existed replay unchanged.
// --------------------------------------------------------------------------

inline const char* name(token t) {
  switch (t) {
    case token::callback: return "callback";
    case token::tuple: return "tuple";
    case token::strand: return "strand";
    case token::ctx2: return "ctx2";
    case token::alloc: return "alloc";
    case token::coro: return "coro";
    case token::future: return "future";
    case token::detached: return "detached";
    case token::awaitable: return "awaitable";
    case token::deferred: return "deferred";
  }
  return "?";
}

inline const char* name(act a) {
  switch (a) {
    case act::keep: return "keep";
    case act::drop: return "drop";
    case act::release_oldest: return "release_oldest";
    case act::acquire: return "acquire";
    case act::try_acquire: return "try";
    case act::cancel: return "cancel";
    case act::close: return "close";
    case act::destroy_sem: return "destroy_sem";
  }
  return "?";
}

inline const char* name(sig s) {
  switch (s) {
    case sig::none: return "none";
    case sig::terminal: return "terminal";
    case sig::partial: return "partial";
    case sig::total: return "total";
    case sig::all: return "all";
  }
  return "?";
}

inline const char* name(deadline d) {
  switch (d) {
    case deadline::none: return "none";
    case deadline::past: return "past";
    case deadline::later: return "later";
  }
  return "?";
}

inline const char* name(kind k) {
  switch (k) {
    case kind::acquire: return "acquire";
    case kind::defer: return "defer";
    case kind::launch: return "launch";
    case kind::try_acquire: return "try";
    case kind::release: return "release";
    case kind::cancel: return "cancel";
    case kind::close: return "close";
    case kind::destroy_sem: return "destroy_sem";
    case kind::poll: return "poll";
    case kind::poll_one: return "poll_one";
    case kind::poll2: return "poll2";
    case kind::poll_one2: return "poll_one2";
    case kind::destroy_ctx: return "destroy_ctx";
    case kind::destroy_ctx2: return "destroy_ctx2";
    case kind::set_limit: return "set_limit";
    case kind::reset_limit: return "reset_limit";
  }
  return "?";
}

inline std::string print_action(const handler_action& a) {
  std::string s = name(a.what);
  switch (a.what) {
    case act::acquire:
    case act::try_acquire:
      s += ":" + std::to_string(a.key) + ":" + std::to_string(a.n);
      break;
    case act::cancel:
      s += ":" + std::to_string(a.target) + ":" + name(a.type);
      break;
    default:
      break;
  }
  return s;
}

inline std::string print(const step& s) {
  std::ostringstream out;
  out << name(s.what);
  switch (s.what) {
    case kind::acquire:
      out << " k=" << s.key << " n=" << s.n << " tok=" << name(s.tok) << " cancel=" << s.cancellable
          << " then=" << print_action(s.then);
      if (s.dl != deadline::none) out << " deadline=" << name(s.dl);
      break;
    case kind::defer:
      out << " k=" << s.key << " n=" << s.n;
      break;
    case kind::launch:
      out << " target=" << s.target << " cancel=" << s.cancellable << " then=" << print_action(s.then);
      break;
    case kind::try_acquire:
    case kind::set_limit:
      out << " k=" << s.key << " n=" << s.n;
      break;
    case kind::reset_limit:
      out << " k=" << s.key;
      break;
    case kind::release:
      out << " target=" << s.target;
      break;
    case kind::cancel:
      out << " target=" << s.target << " type=" << name(s.type);
      break;
    default:
      break;
  }
  return out.str();
}

inline std::string print(const sequence& seq) {
  std::ostringstream out;
  out << "keys=" << seq.cfg.keys << " limit=" << seq.cfg.limit << " shards=" << seq.cfg.shards;
  if (seq.cfg.max_waiters >= 0) out << " max_waiters=" << seq.cfg.max_waiters;
  if (seq.cfg.total > 0) out << " total=" << seq.cfg.total;
  out << "\n";
  for (const step& s : seq.steps) {
    out << print(s) << "\n";
  }
  return out.str();
}

namespace detail {

template <class E>
E parse_enum(std::string_view text, int count) {
  for (int i = 0; i < count; ++i) {
    if (text == name(static_cast<E>(i))) {
      return static_cast<E>(i);
    }
  }
  throw std::invalid_argument("model: unknown name '" + std::string(text) + "'");
}

inline std::vector<std::string> split(std::string_view text, char by) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = text.find(by, start);
    parts.emplace_back(text.substr(start, end - start));
    if (end == std::string_view::npos) {
      return parts;
    }
    start = end + 1;
  }
}

inline handler_action parse_action(std::string_view text) {
  const auto parts = split(text, ':');
  handler_action a;
  a.what = parse_enum<act>(parts[0], 8);
  if ((a.what == act::acquire || a.what == act::try_acquire) && parts.size() == 3) {
    a.key = std::stoi(parts[1]);
    a.n = std::stoi(parts[2]);
  } else if (a.what == act::cancel && parts.size() == 3) {
    a.target = std::stoi(parts[1]);
    a.type = parse_enum<sig>(parts[2], 5);
  }
  return a;
}

}  // namespace detail

inline step parse_step(std::string_view line) {
  std::istringstream in{std::string(line)};
  std::string word;
  in >> word;
  step s;
  s.what = detail::parse_enum<kind>(word, kind_count);
  while (in >> word) {
    const auto eq = word.find('=');
    if (eq == std::string::npos) {
      throw std::invalid_argument("model: bad field '" + word + "'");
    }
    const std::string key = word.substr(0, eq);
    const std::string value = word.substr(eq + 1);
    if (key == "k") s.key = std::stoi(value);
    else if (key == "n") s.n = std::stoi(value);
    else if (key == "tok") s.tok = detail::parse_enum<token>(value, 10);
    else if (key == "cancel") s.cancellable = value == "1";
    else if (key == "then") s.then = detail::parse_action(value);
    else if (key == "target") s.target = std::stoi(value);
    else if (key == "type") s.type = detail::parse_enum<sig>(value, 5);
    else if (key == "deadline") s.dl = detail::parse_enum<deadline>(value, 3);
    else throw std::invalid_argument("model: unknown field '" + key + "'");
  }
  return s;
}

inline sequence parse(std::string_view text) {
  sequence seq;
  bool header = true;
  for (const std::string& raw : detail::split(text, '\n')) {
    std::string line = raw;
    if (const auto hash = line.find('#'); hash != std::string::npos) {
      line.erase(hash);
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    }
    if (header) {
      header = false;
      std::istringstream in(line);
      std::string field;
      while (in >> field) {
        const auto eq = field.find('=');
        const std::string key = field.substr(0, eq);
        const int value = std::stoi(field.substr(eq + 1));
        if (key == "keys") seq.cfg.keys = value;
        else if (key == "limit") seq.cfg.limit = value;
        else if (key == "shards") seq.cfg.shards = value;
        else if (key == "max_waiters") seq.cfg.max_waiters = value;
        else if (key == "total") seq.cfg.total = value;
        else if (key == "avoid_known_bugs") (void)value;  // older replay files: no longer used
        else throw std::invalid_argument("model: unknown header field '" + key + "'");
      }
      continue;
    }
    seq.steps.push_back(parse_step(line));
  }
  return seq;
}

// --------------------------------------------------------------------------
// Random sequences. The generator knows nothing of the state: steps that do
// not apply when their turn comes (a release with an empty table, an acquire
// bound to a destroyed context...) are skipped by the runner, identically on
// both sides.
// --------------------------------------------------------------------------

// SplitMix64: small, fast, and the same on every platform.
class rng {
 public:
  explicit rng(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int below(int n) noexcept { return n <= 0 ? 0 : static_cast<int>(next() % static_cast<std::uint64_t>(n)); }
  bool chance(int percent) noexcept { return below(100) < percent; }

 private:
  std::uint64_t state_;
};

// Picks an index by weight.
template <std::size_t N>
int weighted(rng& r, const int (&weights)[N]) {
  int total = 0;
  for (int w : weights) total += w;
  int roll = r.below(total);
  for (std::size_t i = 0; i < N; ++i) {
    if (roll < weights[i]) return static_cast<int>(i);
    roll -= weights[i];
  }
  return 0;
}

struct generator_options {
  int min_steps = 10;
  int max_steps = 60;
  int max_keys = 3;
  int max_limit = 3;
  bool multi_shard = true;
  // Rare steps that end parts of the world (close, destruction).
  bool endings = true;
  // Polls are rarer by this factor: more jobs and handlers are still queued
  // when something is destroyed.
  int poll_divisor = 1;
  // Append a destroy_ctx step: every sequence ends with context 0 dying.
  bool end_with_context_death = false;
  // Admission control: set_limit / reset_limit steps, and a bounded
  // max_waiters_per_key in some sequences.
  bool admission = true;
  // Percentages of acquire steps (non-coroutine tokens) with a deadline
  // already in the past, and with one far ahead.
  int past_deadline_percent = 15;
  int later_deadline_percent = 10;
  // Percentage of configurations with a total limit (semaphore_options::
  // total_limit), drawn from 1 .. keys * limit.
  int total_percent = 0;
};

inline int random_count(rng& r, int limit) {
  if (r.chance(4)) {
    return r.chance(50) ? 0 : limit + 1;  // invalid_argument
  }
  return 1 + r.below(limit);
}

inline handler_action random_action(rng& r, const config& cfg, bool endings) {
  static constexpr int weights[] = {40, 22, 10, 9, 5, 8, 2, 1};
  handler_action a;
  a.what = static_cast<act>(weighted(r, weights));
  if (!endings && (a.what == act::close || a.what == act::destroy_sem)) {
    a.what = act::keep;
  }
  a.key = r.below(cfg.keys);
  // Never invalid: try_acquire would throw out of the handler.
  a.n = 1 + r.below(cfg.total > 0 ? std::min(cfg.limit, cfg.total) : cfg.limit);
  a.target = r.below(64);
  a.type = static_cast<sig>(1 + r.below(4));
  return a;
}

// use_future hands errors to the driver as an exception_ptr made on asio's
// system thread; libstdc++ counts its references with atomics TSan cannot
// see (libstdc++.so is not instrumented), so TSan reports the promise's
// destruction as a race. Under TSan the generator leaves that token out.
#if defined(__SANITIZE_THREAD__)
inline constexpr int future_weight = 0;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr int future_weight = 0;
#else
inline constexpr int future_weight = 6;
#endif
#else
inline constexpr int future_weight = 6;
#endif

inline sequence generate(std::uint64_t seed, const generator_options& options = {}) {
  rng r(seed);
  sequence seq;
  seq.cfg.keys = 1 + r.below(options.max_keys);
  seq.cfg.limit = 1 + r.below(options.max_limit);
  seq.cfg.shards = options.multi_shard ? (1 << r.below(3)) : 1;
  if (options.admission && r.chance(30)) seq.cfg.max_waiters = r.below(3);
  // Drawn only when asked for, so that sequences without a total limit keep
  // the streams they had.
  if (options.total_percent > 0 && r.chance(options.total_percent)) {
    seq.cfg.total = 1 + r.below(seq.cfg.keys * seq.cfg.limit);
  }
  const int count = options.min_steps + r.below(options.max_steps - options.min_steps + 1);
  //                     acq def lau try rel can clo des pol p1 pl2 p12 dc dc2 set rst
  int weights[] = {26, 2, 3, 8, 13, 9, 1, 1, 9, 16, 2, 4, 1, 1, 3, 2};
  for (int k : {8, 9, 10, 11}) weights[k] = std::max(1, weights[k] / std::max(1, options.poll_divisor));
  if (!options.admission) weights[14] = weights[15] = 0;
  for (int i = 0; i < count; ++i) {
    step s;
    s.what = static_cast<kind>(weighted(r, weights));
    if (!options.endings &&
        (s.what == kind::close || s.what == kind::destroy_sem || s.what == kind::destroy_ctx ||
         s.what == kind::destroy_ctx2)) {
      s.what = kind::poll_one;
    }
    s.key = r.below(seq.cfg.keys);
    s.n = random_count(r, seq.cfg.limit);
    if (s.what == kind::set_limit) s.n = 1 + r.below(seq.cfg.limit + 1);
    static constexpr int token_weights[] = {28, 7, 11, 10, 8, 9, future_weight, 5, 9};
    s.tok = static_cast<token>(weighted(r, token_weights));
    s.cancellable = r.chance(55);
    s.then = random_action(r, seq.cfg, options.endings);
    s.target = r.below(64);
    static constexpr int sig_weights[] = {2, 30, 20, 20, 20};
    s.type = static_cast<sig>(weighted(r, sig_weights));
    // Drawn for every step, so that the stream of the other fields does not
    // depend on the kind.
    const int roll = r.below(100);
    if (s.what == kind::acquire && s.tok != token::coro && s.tok != token::awaitable) {
      if (roll < options.past_deadline_percent) {
        s.dl = deadline::past;
      } else if (roll < options.past_deadline_percent + options.later_deadline_percent) {
        s.dl = deadline::later;
      }
    }
    seq.steps.push_back(s);
  }
  if (options.end_with_context_death) {
    step s;
    s.what = kind::destroy_ctx;
    seq.steps.push_back(s);
  }
  return seq;
}

}  // namespace keysem::model

#endif
