// Runs a sequence against the model and the real semaphore in lock step,
// compares every observable after every step, and shrinks failing sequences.
#ifndef KEYSEM_TESTS_MODEL_CHECKER_HPP
#define KEYSEM_TESTS_MODEL_CHECKER_HPP

#include "model.hpp"
#include "sequence.hpp"
#include "system.hpp"

#include <exception>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace keysem::model {

struct failure {
  std::size_t step = 0;  // index into the sequence, or steps.size() for the teardown
  std::string what;
};

// Counters for docs/reliability.md.
struct run_stats {
  std::size_t sequences = 0;
  std::size_t steps_applied = 0;
  std::size_t steps_skipped = 0;
  std::size_t handlers_run = 0;
  std::size_t timed_out = 0;         // acquires completed with timed_out
  std::size_t reports_awaited = 0;   // reactor runs preceded by await_timer_report
  std::size_t late_reports = 0;      // ... where the kernel had not reported yet
  std::size_t capped = 0;            // sequences with a total limit
  std::size_t staged_at_once = 0;    // acquires staged at the total when initiated
  std::size_t transferred = 0;       // ... moved there from their key's queue (transfer job)
  std::size_t timed_out_at_total = 0;  // acquires timed out while waiting for the total
};

namespace detail {

template <class T>
std::string show(const std::vector<T>& v) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < v.size(); ++i) out << (i ? " " : "") << v[i];
  out << "]";
  return out.str();
}

inline std::string show(const std::vector<std::pair<int, int>>& v) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < v.size(); ++i) out << (i ? " " : "") << "k" << v[i].first << "x" << v[i].second;
  out << "]";
  return out.str();
}

inline std::string show(const stats_view& s) {
  std::ostringstream out;
  out << "{granted_immediately " << s.granted_immediately << ", granted_after_wait " << s.granted_after_wait
      << ", try_failed " << s.try_failed << ", cancelled " << s.cancelled << ", timed_out " << s.timed_out
      << ", rejected_queue_full " << s.rejected_queue_full << ", rejected_closed " << s.rejected_closed
      << ", invalid_argument " << s.invalid_argument << ", keys " << s.keys << ", waiting " << s.waiting
      << ", in_use " << s.in_use << "}";
  return out.str();
}

inline std::string show(const op_view& v) {
  std::string s = name(v.f);
  if (v.f == fate::completed) s += std::string("(") + name(v.ec) + "," + std::to_string(v.count) + ")";
  return s;
}

inline std::string compare(const observation& m, const observation& r) {
  std::ostringstream out;
  if (m.sem_alive != r.sem_alive) out << "semaphore alive: model " << m.sem_alive << ", real " << r.sem_alive << "; ";
  if (m.sem_alive && r.sem_alive) {
    if (m.closed != r.closed) out << "is_closed: model " << m.closed << ", real " << r.closed << "; ";
    if (m.key_count != r.key_count) out << "key_count: model " << m.key_count << ", real " << r.key_count << "; ";
    if (m.in_use != r.in_use) out << "in_use: model " << show(m.in_use) << ", real " << show(r.in_use) << "; ";
    if (m.available != r.available)
      out << "available: model " << show(m.available) << ", real " << show(r.available) << "; ";
    if (m.waiting != r.waiting) out << "waiting: model " << show(m.waiting) << ", real " << show(r.waiting) << "; ";
    if (m.limit != r.limit) out << "limit: model " << show(m.limit) << ", real " << show(r.limit) << "; ";
    if (m.total_in_use != r.total_in_use)
      out << "total_in_use: model " << m.total_in_use << ", real " << r.total_in_use << "; ";
    if (m.total_waiting != r.total_waiting)
      out << "total_waiting: model " << m.total_waiting << ", real " << r.total_waiting << "; ";
    if (!(m.stats == r.stats)) out << "stats: model " << show(m.stats) << ", real " << show(r.stats) << "; ";
  }
  if (m.ops.size() != r.ops.size()) {
    out << "op count: model " << m.ops.size() << ", real " << r.ops.size() << "; ";
  } else {
    for (std::size_t i = 0; i < m.ops.size(); ++i) {
      if (!m.ops[i].observable) continue;
      if (!(m.ops[i] == r.ops[i])) out << "op #" << i << ": model " << show(m.ops[i]) << ", real " << show(r.ops[i]) << "; ";
    }
  }
  if (m.table != r.table) out << "permits held: model " << show(m.table) << ", real " << show(r.table) << "; ";
  return out.str();
}

}  // namespace detail

class runner {
 public:
  explicit runner(const sequence& seq) : seq_(seq), model_(seq.cfg), real_(seq.cfg) {}

  // What the model (hence the real system: they were compared) showed after
  // the sequence's last step, before the teardown.
  const observation& last_observation() const { return last_; }

  std::optional<failure> run(run_stats* stats = nullptr) {
    stats_ = stats;
    if (stats_) ++stats_->sequences;
    try {
      for (std::size_t i = 0; i < seq_.steps.size(); ++i) {
        if (auto f = apply(seq_.steps[i], i)) return f;
      }
      last_ = model_.observe();
      auto f = teardown();
      if (stats_) {
        stats_->timed_out += model_.timed_out_outcomes();
        stats_->late_reports += real_.late_reports();
        if (seq_.cfg.total > 0) ++stats_->capped;
        stats_->staged_at_once += model_.staged_at_once();
        stats_->transferred += model_.transferred();
        stats_->timed_out_at_total += model_.timed_out_at_total();
      }
      return f;
    } catch (const std::exception& e) {
      return failure{index_, std::string("unexpected exception: ") + e.what()};
    }
  }

 private:
  std::optional<failure> apply(const step& s, std::size_t index) {
    index_ = index;
    const resolved r = model_.resolve(s);
    if (r.skip) {
      if (stats_) ++stats_->steps_skipped;
      return std::nullopt;
    }
    if (stats_) ++stats_->steps_applied;
    long expected = 0;
    if (s.what == kind::poll || s.what == kind::poll_one) {
      // Context 0, do_poll_one by do_poll_one (poll() is poll_one() until it
      // returns 0): before each, the real system may have to wait for the
      // kernel's timer report (model.hpp, "With timerfd").
      step one = s;
      one.what = kind::poll_one;
      for (;;) {
        if (auto f = apply_one(one, r, s)) return f;
        expected += last_ran_;
        if (last_ran_ == 0 || s.what == kind::poll_one) break;
      }
    } else {
      if (auto f = apply_one(s, r, s)) return f;
      expected = last_ran_;
    }
    if (stats_ && expected > 0) stats_->handlers_run += static_cast<std::size_t>(expected);
    if (s.what == kind::try_acquire && model_.last_try() != real_.last_try()) {
      return failure{index, "'" + print(s) + "' returned " + std::to_string(real_.last_try()) + ", model " +
                                std::to_string(model_.last_try())};
    }
    return check("after '" + print(s) + "'");
  }

  // One step, or one poll_one of a context-0 poll step (`whole`), on both
  // sides; last_ran_ is what it ran (-1 for steps that are not polls).
  std::optional<failure> apply_one(const step& s, const resolved& r, const step& whole) {
    const std::size_t index = index_;
    if (s.what == kind::poll_one && model_.reactor_collects_next()) {
      if (const std::string problem = real_.await_timer_report(); !problem.empty()) {
        return failure{index, "'" + print(whole) + "': " + problem};
      }
      if (stats_) ++stats_->reports_awaited;
    }
    // The real system first: its log of invoked handlers is the model's
    // oracle where the contract leaves an order open (see model.hpp).
    long actual = -1;
    try {
      actual = real_.apply(s, r);
    } catch (const std::exception& e) {
      return failure{index, std::string("'") + print(whole) + "' threw " + e.what()};
    }
    model_.set_oracle(real_.take_log());
    const long expected = model_.apply(s, r);
    if (const std::string divergence = model_.take_divergence(); !divergence.empty()) {
      return failure{index, "'" + print(whole) + "': handler order: " + divergence};
    }
    if (expected != actual) {
      return failure{index, "'" + print(whole) + "' ran " + std::to_string(actual) + " handlers, model predicted " +
                                std::to_string(expected)};
    }
    last_ran_ = expected;
    return std::nullopt;
  }

  std::optional<failure> check(const std::string& where) {
    for (int id : model_.futures_to_collect()) {
      const bool broken = model_.observe().ops[static_cast<std::size_t>(id)].f == fate::destroyed;
      model_.collect_future(id);
      real_.collect_future(id, broken);
    }
    for (std::size_t id = 0; id < model_.op_count(); ++id) {
      if (model_.op_token(static_cast<int>(id)) == token::future && model_.future_pending(static_cast<int>(id))) {
        real_.check_future_pending(static_cast<int>(id));
      }
    }
    if (auto internal = model_.self_check(); !internal.empty()) return failure{index_, internal};
    const std::string diff = detail::compare(model_.observe(), real_.observe());
    const std::string problems = real_.problems();
    if (!diff.empty() || !problems.empty()) {
      return failure{index_, where + ": " + diff + problems};
    }
    return std::nullopt;
  }

  std::optional<failure> step_both(kind what, int target = 0) {
    step s;
    s.what = what;
    s.target = target;
    return apply(s, seq_.steps.size());
  }

  std::optional<failure> quiesce() {
    for (int round = 0; round < 1000; ++round) {
      const std::size_t before0 = model_.ctx_alive(0) ? model_.queued(0) : 0;
      const std::size_t before1 = model_.ctx_alive(1) ? model_.queued(1) : 0;
      if (before0 == 0 && before1 == 0) return std::nullopt;
      if (before0 != 0) {
        if (auto f = step_both(kind::poll)) return f;
      }
      if (before1 != 0) {
        if (auto f = step_both(kind::poll2)) return f;
      }
    }
    return failure{seq_.steps.size(), "teardown: the contexts never became idle (model)"};
  }

  std::optional<failure> teardown() {
    index_ = seq_.steps.size();
    if (auto f = quiesce()) return f;
    // Give every permit back, oldest first, letting waiters in as we go.
    for (int round = 0; model_.table_size() != 0; ++round) {
      if (round > 10000) return failure{index_, "teardown: permits keep coming (model)"};
      if (auto f = step_both(kind::release, 0)) return f;
      if (auto f = quiesce()) return f;
    }
    // Liveness: with every permit back and the contexts idle, nothing waits.
    if (model_.any_pending_op()) {
      return failure{index_, "teardown: the model still has pending ops " + detail::show(model_.pending_ops()) +
                                 " (a model bug)"};
    }
    const observation end = model_.observe();
    if (end.sem_alive && end.key_count != 0) {
      return failure{index_, "teardown: the model still counts keys (a model bug)"};
    }
    if (model_.sem_alive()) {
      if (auto f = step_both(kind::destroy_sem)) return f;
      if (auto f = quiesce()) return f;
    }
    if (model_.ctx_alive(0)) {
      if (auto f = step_both(kind::destroy_ctx)) return f;
    }
    if (model_.ctx_alive(1)) {
      if (auto f = step_both(kind::destroy_ctx2)) return f;
    }
    if (auto problems = real_.final_problems(); !problems.empty()) {
      return failure{index_, "teardown: " + problems};
    }
    return std::nullopt;
  }

  const sequence& seq_;
  model model_;
  system real_;
  run_stats* stats_ = nullptr;
  std::size_t index_ = 0;
  long last_ran_ = 0;
  observation last_;
};

inline std::optional<failure> check_sequence(const sequence& seq, run_stats* stats = nullptr) {
  runner r(seq);
  return r.run(stats);
}

// --------------------------------------------------------------------------
// Shrinking: delete chunks of steps, then simplify what is left, for as long
// as the sequence still fails. Any failure counts: the shortest sequence that
// still fails is what a reader wants first.
// --------------------------------------------------------------------------
inline sequence shrink(sequence seq, const std::function<bool(const sequence&)>& fails, int budget = 4000) {
  auto attempt = [&](const sequence& candidate) {
    if (budget-- <= 0) return false;
    return fails(candidate);
  };
  // Steps after the failing one never matter: the runner stops there.
  bool progress = true;
  while (progress && budget > 0) {
    progress = false;
    for (std::size_t chunk = std::max<std::size_t>(1, seq.steps.size() / 2); chunk >= 1; chunk /= 2) {
      for (std::size_t start = 0; start + chunk <= seq.steps.size();) {
        sequence candidate = seq;
        candidate.steps.erase(candidate.steps.begin() + static_cast<std::ptrdiff_t>(start),
                              candidate.steps.begin() + static_cast<std::ptrdiff_t>(start + chunk));
        if (attempt(candidate)) {
          seq = std::move(candidate);
          progress = true;
        } else {
          start += chunk;
        }
      }
      if (chunk == 1) break;
    }
    // Simplify individual steps.
    for (std::size_t i = 0; i < seq.steps.size(); ++i) {
      const step original = seq.steps[i];
      std::vector<step> variants;
      auto variant = [&](auto change) {
        step s = seq.steps[i];
        change(s);
        if (print(s) != print(seq.steps[i])) variants.push_back(s);
      };
      variant([](step& s) { s.then = handler_action{}; });
      variant([](step& s) { s.dl = deadline::none; });
      variant([](step& s) { if (s.dl == deadline::later) s.dl = deadline::past; });
      variant([](step& s) { s.cancellable = false; });
      variant([](step& s) { s.tok = token::callback; });
      variant([](step& s) { s.n = 1; });
      variant([](step& s) { s.key = 0; });
      variant([](step& s) { s.target = 0; });
      variant([](step& s) { s.type = sig::terminal; });
      variant([](step& s) { s.then.target = 0; s.then.key = 0; s.then.n = 1; });
      if (original.what == kind::poll) variant([](step& s) { s.what = kind::poll_one; });
      for (const step& v : variants) {
        sequence candidate = seq;
        candidate.steps[i] = v;
        if (attempt(candidate)) {
          seq = std::move(candidate);
          progress = true;
        }
      }
    }
    // Simplify the configuration.
    if (seq.cfg.max_waiters >= 0) {
      sequence candidate = seq;
      candidate.cfg.max_waiters = -1;
      if (attempt(candidate)) {
        seq = std::move(candidate);
        progress = true;
      }
    }
    if (seq.cfg.total > 0) {
      sequence candidate = seq;
      candidate.cfg.total = 0;  // the failure does not need the total limit
      if (attempt(candidate)) {
        seq = std::move(candidate);
        progress = true;
      }
    }
    for (int shards : {1, 2}) {
      if (shards < seq.cfg.shards) {
        sequence candidate = seq;
        candidate.cfg.shards = shards;
        if (attempt(candidate)) {
          seq = std::move(candidate);
          progress = true;
          break;
        }
      }
    }
    if (seq.cfg.keys > 1) {
      sequence candidate = seq;
      candidate.cfg.keys -= 1;
      for (step& s : candidate.steps) {
        s.key %= candidate.cfg.keys;
        s.then.key %= candidate.cfg.keys;
      }
      if (attempt(candidate)) {
        seq = std::move(candidate);
        progress = true;
      }
    }
  }
  return seq;
}

// What kind of failure this is, so that shrinking keeps looking at the same
// one: the first mismatch's label (e.g. "waiting", "op #"), digits removed.
inline std::string signature(const std::string& what) {
  std::string text = what;
  if (text.rfind("after '", 0) == 0) {
    const auto end = text.find("': ");
    if (end != std::string::npos) text = text.substr(end + 3);
  }
  if (text.rfind("teardown: ", 0) == 0) text = text.substr(10);
  if (text.front() == '\'') {
    const auto end = text.find('\'', 1);
    if (end != std::string::npos) text = text.substr(end + 1);
  }
  text = text.substr(0, text.find(':'));
  std::string out;
  for (char c : text) {
    if (c < '0' || c > '9') out += c;
  }
  return out;
}

inline std::string report(std::uint64_t seed, const sequence& original, const failure& first) {
  std::ostringstream out;
  out << "model check failed, seed " << seed << " (" << original.steps.size() << " steps), at step " << first.step
      << ": " << first.what << "\n";
  const std::string kind_of_failure = signature(first.what);
  const sequence shrunk = shrink(original, [&](const sequence& s) {
    const auto f = check_sequence(s);
    return f.has_value() && signature(f->what) == kind_of_failure;
  });
  const auto again = check_sequence(shrunk);
  out << "shrunk to " << shrunk.steps.size() << " steps";
  if (again) out << ", failing at step " << again->step << ": " << again->what;
  out << "\n--- replay: save as a file and run with KEYSEM_MODEL_REPLAY=<file> ---\n" << print(shrunk) << "---\n";
  return out.str();
}

}  // namespace keysem::model

#endif
