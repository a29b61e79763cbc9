// The reference model of async_keyed_semaphore, and of just enough of asio to
// say when each of its jobs runs.
//
// Two layers:
//
// 1. The contract (README "What it promises", the header comments and
//    docs/design.md), per key: permits held, the FIFO queue of weighted
//    waiters, the waiter count, the drain-pending flag; per semaphore: open /
//    closed / destroyed, and whether its context is gone. These are small
//    and written from the documentation, not from src/.
//
// 2. The schedule: the io_context's ready queue, every strand's ready and
//    waiting queues, and when a dispatch runs inline. The semaphore's
//    documented jobs (enqueue, drain, cancel, close/destroy) are modelled as
//    strand jobs, so a poll_one() step is predicted exactly. This mirrors
//    asio 1.81 (strand_executor_service, scheduler), not keysem:
//    - post(strand, f): f joins the strand's waiting queue if the strand is
//      locked; otherwise it becomes the strand's ready batch and an invoker
//      is posted to the context.
//    - dispatch(strand, f) from inside the context's run (a handler running
//      on this thread): runs f at once if the strand is running here, or if
//      the strand is idle (the invoker is dispatched inline too).
//    - An invoker runs its ready batch; on exit, what queued up meanwhile
//      becomes the next batch and a new invoker is posted at the back.
//    - Destroying a context: services shut down newest first — the keysem
//      service (detach every semaphore), then the strand service (each
//      strand's waiting jobs, then its ready jobs, destroyed unrun), then the
//      scheduler (queued handlers destroyed unrun).
//
// Admission (grant, queue, queue_full, invalid; a waiter granted, left
// waiting or failed by a lowered limit) is not re-derived here: the model
// builds the library's key word from its own counts (held, waiters, drain,
// limit change) and asks keysem::detail::key_word (admit, try_admit,
// released, limit_changed, serve_head, granted_from_queue), so a change of
// the rule changes one place. What the model owns is everything around it:
// which job runs the rule when, per-key limits (set_limit / reset_limit
// overrides, live or not), the FIFO queue, and semaphore_stats, counted when
// the semaphore decides an outcome.
//
// Deadlines: an acquire step may carry a deadline (acquire_until) long past
// (now - 1h) or far ahead (now + 24h), so that the clock's value never
// decides an outcome: the model's clock has two ticks. Granted at once, a
// timed acquire is a plain acquire; otherwise its enqueue job adds it to the
// shard's deadline heap and arms the shard's timer for the earliest deadline
// (the context's first timer puts the scheduler's reactor task at the back of
// context 0's queue). The reactor task is an entry of the FIFO: when
// do_poll_one finds it at the front it runs the reactor, which queues every
// pending wait whose expiry has passed at the back, by expiry, then the task
// again; poll_one returns 0 if the task is then at the front. A wait
// cancelled (heap emptied, expires_at for an earlier deadline) is queued at
// once. The timer's handler is dispatched to the shard's strand, where the
// current generation times out every op of the heap whose deadline has
// passed (each: timed_out posted, then a grant pass) and re-arms.
//
// With timerfd (Linux), the reactor sees an expired wait only once the
// kernel has reported the timerfd readable, a moment after it was armed:
// that moment is not the contract's, nor predictable. The checker makes it
// irrelevant instead of guessing it: a poll step on context 0 runs as
// poll_one calls, and before one that starts with the reactor task while an
// expired wait is pending (reactor_collects_next), the real system waits
// until the kernel has reported the reactor's timerfd (system::
// await_timer_report). The reactor run then collects every expired wait, as
// the model says, whatever the load.
//
// The total limit (semaphore_options::total_limit, config::total): the
// total is one more word and one FIFO queue across keys, with its own strand
// (and its shard's deadline heap and timer). A request its key grants asks
// the total in the same step; held back there it is staged (key_word::
// staged: its key's permits reserved, still a waiter of its key) and its
// enqueue job goes to the total's strand. A key's grant pass moves a head
// the total holds back (key_word::staged_from_queue) through a transfer job
// posted to the total's strand; a signal meanwhile makes the transfer job
// finish it as cancelled. Granted at the total, a staged op stops being a
// waiter of its key (granted_from_stage); leaving otherwise, it gives the
// reservation back (left_stage), which may post its key's drain before its
// own completion. A release gives back the total first, then the key.
//
// One order is left open by the contract: a close/destroy job completes the
// queued ops of every key of its shard, FIFO within a key, keys in an
// unspecified order (the table's). The model does not guess it: the real
// system runs each step first and logs the handlers it invoked; the model
// follows that log for such a batch, checking that it is a legal order (each
// key's ops in FIFO order, each key's ops together, one key order for every
// executor), and checks the log against its own prediction everywhere else.
#ifndef KEYSEM_TESTS_MODEL_MODEL_HPP
#define KEYSEM_TESTS_MODEL_MODEL_HPP

#include "sequence.hpp"

#include <keysem/detail/key_word.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace keysem::model {

enum class ec_kind : std::uint8_t { ok, closed, aborted, invalid, queue_full, timed_out };

inline const char* name(ec_kind e) {
  switch (e) {
    case ec_kind::ok: return "ok";
    case ec_kind::closed: return "closed";
    case ec_kind::aborted: return "operation_aborted";
    case ec_kind::invalid: return "invalid_argument";
    case ec_kind::queue_full: return "queue_full";
    case ec_kind::timed_out: return "timed_out";
  }
  return "?";
}

// What became of an acquire's handler.
enum class fate : std::uint8_t {
  pending,        // not invoked, still alive somewhere
  completed,      // invoked once
  destroyed,      // destroyed without being invoked (its context died)
  never_started,  // a coroutine that found the semaphore gone when it started
};

inline const char* name(fate f) {
  switch (f) {
    case fate::pending: return "pending";
    case fate::completed: return "completed";
    case fate::destroyed: return "destroyed";
    case fate::never_started: return "never_started";
  }
  return "?";
}

// Everything the checker compares after every step.
struct op_view {
  fate f = fate::pending;
  ec_kind ec = ec_kind::ok;
  int count = 0;
  bool observable = true;  // detached handlers report nothing
  bool operator==(const op_view&) const = default;
};

// semaphore_stats, field by field (the checker compares them after every
// step). The model counts an outcome when the semaphore decides it, as the
// library does: once the executors have run everything posted, every
// completed acquire and every try_acquire is in exactly one counter.
struct stats_view {
  std::uint64_t granted_immediately = 0, granted_after_wait = 0, try_failed = 0, cancelled = 0, timed_out = 0,
                rejected_queue_full = 0, rejected_closed = 0, invalid_argument = 0;
  std::size_t keys = 0, waiting = 0, in_use = 0;
  bool operator==(const stats_view&) const = default;
};

struct observation {
  bool sem_alive = false;
  bool closed = false;
  std::size_t key_count = 0;
  std::vector<std::size_t> in_use, available, waiting, limit;
  std::size_t total_in_use = 0, total_waiting = 0;
  stats_view stats;
  std::vector<op_view> ops;
  std::vector<std::pair<int, int>> table;  // (key, count) of every permit the driver holds
};

// A step after resolution against the current state: the concrete op, table
// entry or deferred op it names, or `skip`.
struct resolved {
  bool skip = false;
  int index = -1;  // table index, op id, or deferred index
};

class model {
 public:
  explicit model(const config& cfg) : cfg_(cfg) {
    shards_ = cfg.shards;
    // Strand ids: 0 .. shards-1 are the semaphore's shards, `shards` is the
    // user strand. The user strand is created before the semaphore, so the
    // strand service lists it last (it lists newest first).
    // With a total limit, `shards + 1` is the total's strand (its own shard).
    strands_.resize(static_cast<std::size_t>(shards_) + 2);
    // Timer `shards` is the total's shard's (its heap holds staged ops).
    timers_.resize(static_cast<std::size_t>(shards_) + 1);
  }

  // The handlers the real system invoked during the step about to be
  // applied, in order (use_future and detached ops excluded).
  void set_oracle(const std::vector<int>& invoked) {
    oracle_.assign(invoked.begin(), invoked.end());
  }
  // Where the real system's handler order left the model's: empty if none.
  std::string take_divergence() {
    if (!oracle_.empty() && divergence_.empty()) {
      divergence_ = "the real system invoked " + std::to_string(oracle_.size()) +
                    " more handler(s) than the model, next op #" + std::to_string(oracle_.front());
    }
    oracle_.clear();
    return std::exchange(divergence_, std::string());
  }

  // ------------------------------------------------------------------------
  // Resolution and applicability: the runner asks here, and applies the same
  // decision to the real system.
  // ------------------------------------------------------------------------
  resolved resolve(const step& s) const {
    resolved r;
    switch (s.what) {
      case kind::acquire:
        r.skip = !sem_alive_ || !token_usable(s.tok);
        break;
      case kind::defer:
        r.skip = !sem_alive_;
        break;
      case kind::launch:
        r.skip = !sem_alive_ || !ctx_[0].alive || deferred_.empty();
        if (!r.skip) {
          r.index = s.target % static_cast<int>(deferred_.size());
          r.skip = deferred_[static_cast<std::size_t>(r.index)].launched;
        }
        break;
      case kind::try_acquire:
      case kind::close:
      case kind::destroy_sem:
      case kind::reset_limit:
        r.skip = !sem_alive_;
        break;
      case kind::set_limit:
        r.skip = !sem_alive_ || s.n <= 0;
        break;
      case kind::release:
        r.skip = table_.empty();
        if (!r.skip) r.index = s.target % static_cast<int>(table_.size());
        break;
      case kind::cancel: {
        const int target = cancel_target(s.target);
        r.skip = target < 0;
        r.index = target;
        break;
      }
      case kind::poll:
      case kind::poll_one:
      case kind::destroy_ctx:
        r.skip = !ctx_[0].alive;
        break;
      case kind::poll2:
      case kind::poll_one2:
        r.skip = !ctx_[1].alive;
        break;
      case kind::destroy_ctx2:
        r.skip = !ctx_[1].alive || ctx2_op_in_flight();
        break;
    }
    return r;
  }

  // Returns what a poll or poll_one step ran; -1 for other steps.
  long apply(const step& s, const resolved& r) {
    switch (s.what) {
      case kind::acquire:
        start_op(s.key, s.n, s.tok, s.cancellable, s.then, s.dl);
        return -1;
      case kind::defer:
        deferred_.push_back({s.key, s.n, false});
        return -1;
      case kind::launch: {
        auto& d = deferred_[static_cast<std::size_t>(r.index)];
        d.launched = true;
        start_op(d.key, d.n, token::deferred, s.cancellable, s.then);
        return -1;
      }
      case kind::try_acquire:
        last_try_ = try_acquire(s.key, s.n);
        return -1;
      case kind::release: {
        const auto entry = table_[static_cast<std::size_t>(r.index)];
        table_.erase(table_.begin() + r.index);
        release(entry.first, entry.second);
        return -1;
      }
      case kind::cancel:
        emit(r.index, s.type);
        return -1;
      case kind::close:
        close();
        return -1;
      case kind::destroy_sem:
        destroy_semaphore();
        return -1;
      case kind::poll:
        return poll(0, false);
      case kind::poll_one:
        return poll(0, true);
      case kind::poll2:
        return poll(1, false);
      case kind::poll_one2:
        return poll(1, true);
      case kind::destroy_ctx:
        destroy_context0();
        return -1;
      case kind::destroy_ctx2:
        destroy_context1();
        return -1;
      case kind::set_limit:
        set_limit(s.key, s.n);
        return -1;
      case kind::reset_limit:
        set_limit(s.key, 0);
        return -1;
    }
    return -1;
  }

  // Outcome of the last try_acquire step: the permit count, 0 for nullopt,
  // -1 for std::invalid_argument.
  int last_try() const { return last_try_; }

  // Futures whose promise has been set (or broken) and not yet collected
  // are collected in op order after every step, on both sides.
  std::vector<int> futures_to_collect() const {
    std::vector<int> ids;
    for (const op& o : ops_) {
      if (o.tok == token::future && !o.collected && (o.posted || o.f == fate::destroyed)) {
        ids.push_back(o.id);
      }
    }
    return ids;
  }
  void collect_future(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    o.collected = true;
    if (o.f == fate::destroyed) {
      return;  // broken promise
    }
    o.f = fate::completed;
    o.final_ec = o.ec;
    o.final_count = o.granted;
    if (o.granted != 0) {
      table_.emplace_back(o.key, o.granted);
      o.granted = 0;
    }
  }
  bool future_pending(int id) const {
    const op& o = ops_[static_cast<std::size_t>(id)];
    return !o.posted && o.f == fate::pending;
  }

  bool sem_alive() const { return sem_alive_; }
  std::size_t staged_at_once() const { return staged_at_once_; }
  std::size_t transferred() const { return transferred_; }
  std::size_t timed_out_at_total() const { return timed_out_at_total_; }
  std::size_t timed_out_outcomes() const {
    return static_cast<std::size_t>(std::count_if(ops_.begin(), ops_.end(), [](const op& o) {
      return o.f == fate::completed && o.final_ec == ec_kind::timed_out;
    }));
  }
  bool ctx_alive(int c) const { return ctx_[c].alive; }
  // Handlers queued on context c, and expired timer waits that become
  // handlers at its next reactor run (the reactor task itself is not a
  // handler; a wait for a later deadline never becomes one).
  std::size_t queued(int c) const {
    std::size_t n = static_cast<std::size_t>(std::count_if(
        ctx_[c].q.begin(), ctx_[c].q.end(), [](const item& it) { return it.what != item_kind::task; }));
    if (c == 0) n += static_cast<std::size_t>(expired_waits());
    return n;
  }
  // Whether the next do_poll_one on context 0 starts with a reactor run that
  // must collect expired timer waits: the real system then first waits for
  // the kernel's report (see the file comment).
  bool reactor_collects_next() const {
    return ctx_[0].alive && !ctx_[0].q.empty() && ctx_[0].q.front().what == item_kind::task && expired_waits() != 0;
  }
  std::size_t table_size() const { return table_.size(); }
  std::size_t op_count() const { return ops_.size(); }
  token op_token(int id) const { return ops_[static_cast<std::size_t>(id)].tok; }
  bool op_cancellable(int id) const { return ops_[static_cast<std::size_t>(id)].cancellable; }
  bool any_pending_op() const {
    return std::any_of(ops_.begin(), ops_.end(), [](const op& o) { return o.f == fate::pending; });
  }
  std::vector<int> pending_ops() const {
    std::vector<int> ids;
    for (const op& o : ops_) {
      if (o.f == fate::pending) ids.push_back(o.id);
    }
    return ids;
  }

  observation observe() const {
    observation obs;
    obs.sem_alive = sem_alive_;
    if (sem_alive_) {
      obs.closed = stop_ != stop_state::open;
      obs.key_count = static_cast<std::size_t>(std::count_if(
          keys_.begin(), keys_.end(), [](const auto& entry) { return entry.second.exists(); }));
      for (int k = 0; k < cfg_.keys; ++k) {
        const key_state* ks = find(k);
        const int held = ks ? ks->held - ks->staged : 0;  // reserved permits are not in use
        const int limit = key_limit(k);
        obs.in_use.push_back(static_cast<std::size_t>(held));
        obs.available.push_back(static_cast<std::size_t>(held < limit ? limit - held : 0));
        obs.waiting.push_back(static_cast<std::size_t>(ks ? ks->waiters : 0));
        obs.limit.push_back(static_cast<std::size_t>(limit));
      }
      obs.stats = counts_;
      obs.stats.keys = obs.key_count;
      for (const auto& [k, ks] : keys_) {
        obs.stats.waiting += static_cast<std::size_t>(ks.waiters);
        obs.stats.in_use += static_cast<std::size_t>(ks.held - ks.staged);
      }
      obs.total_in_use = capped() ? static_cast<std::size_t>(total_.held) : obs.stats.in_use;
      obs.total_waiting = capped() ? static_cast<std::size_t>(total_.waiters) : 0;
    }
    for (const op& o : ops_) {
      op_view v;
      v.f = o.f;
      v.observable = o.tok != token::detached;
      if (o.f == fate::completed) {
        v.ec = o.final_ec;
        v.count = o.final_count;
      }
      obs.ops.push_back(v);
    }
    obs.table = table_;
    return obs;
  }

  // Model-internal consistency, checked after every step (a failure here is
  // a bug in the model, not in keysem).
  std::string self_check() const {
    for (const auto& [k, ks] : keys_) {
      // (a lowered limit may leave more held than it allows)
      if (ks.held < 0) return "model: negative held on key " + std::to_string(k);
      if (ks.limit_changed && !ks.drain) return "model: limit change without a drain on key " + std::to_string(k);
      if (ks.waiters < 0) return "model: negative waiters on key " + std::to_string(k);
      if (static_cast<int>(ks.queue.size()) > ks.waiters) return "model: queue longer than waiters";
      if (ks.staged < 0 || ks.staged > ks.held) return "model: staged permits out of range on key " + std::to_string(k);
    }
    if (capped()) {
      // Both levels count the same granted permits (a grant takes both, a
      // release gives back both, in one step here).
      int granted = 0;
      for (const auto& [k, ks] : keys_) granted += ks.held - ks.staged;
      if (granted != total_.held) return "model: the total's held permits differ from the keys' granted ones";
      if (total_.held < 0 || total_.held > cfg_.total) return "model: total held out of range";
      if (static_cast<int>(total_.queue.size()) > total_.waiters) return "model: total queue longer than waiters";
    }
    return {};
  }


 private:
  enum class stop_state { open, closed, destroyed };
  // transferring / transfer_cancelled: on the way from the key's queue to
  // the total's (the transfer job), and cancelled on that way.
  enum class status { waiting, cancelled, claimed, transferring, transfer_cancelled };

  struct key_state {
    int held = 0;
    int waiters = 0;  // registered: queued, about to be queued, or cancelled and not yet removed
    bool drain = false;
    bool limit_changed = false;  // the next grant pass first fails waiters above the limit
    int staged = 0;  // permits reserved by requests waiting for the total (in held, not in in_use)
    std::deque<int> queue;  // op ids, strand order
    bool exists() const { return held != 0 || waiters != 0 || drain; }
  };

  struct op {
    int id = 0;
    int key = 0;
    int n = 1;
    token tok = token::callback;
    bool cancellable = false;
    handler_action then;
    bool nested = false;  // started from inside a handler: a plain callback, keep
    // A waiter_op exists (the acquire had to wait) and is not freed yet.
    bool has_waiter = false;
    status st = status::waiting;
    bool linked = false;
    // A result is on its way to the handler (posted, or in a future).
    bool posted = false;
    ec_kind ec = ec_kind::ok;
    int granted = 0;  // permits carried by the pending result
    fate f = fate::pending;
    ec_kind final_ec = ec_kind::ok;
    int final_count = 0;
    enum class coro_state { none, not_started, awaiting, done } coro = coro_state::none;
    bool collected = false;  // futures
    deadline dl = deadline::none;  // acquire_until's deadline
    long stamp = 0;  // orders deadlines: past ones by when taken, then later ones

    bool in_heap = false;
    // Total limit: the op's key reserved its permits and the op waits for
    // the total (its key counts it as a waiter, the total too); its strand
    // jobs run on the total's strand from then on.
    bool staged = false;
  };

  // The total limit's state (an async_semaphore of its own: one word, one
  // queue across keys, its own strand). Never reclaimed while the semaphore
  // lives.
  struct total_state {
    int held = 0;
    int waiters = 0;
    bool drain = false;
    std::deque<int> queue;
  };

  // A shard's deadline heap and its timer (src/deadline_queue.cpp), and the
  // timer's one pending wait in the reactor's timer queue (expired if armed
  // for a past deadline; a later one never expires during a run).
  struct shard_timer {
    std::vector<int> heap;  // op ids by deadline (stamp)
    bool created = false;
    bool armed = false;      // armed_for_ != no_deadline
    long armed_for = 0;      // the stamp it is armed for
    long generation = 0;
    bool wait_pending = false;  // in the reactor's timer queue, not yet ready
    long wait_generation = 0;
    long wait_stamp = 0;        // the wait's expiry, ordering the reactor's timer queue
    bool wait_expired = false;  // armed for a past deadline
  };

  // enqueue, cancel, drain and abort also serve the total (an op that is
  // staged; key / shard -1); transfer carries an op from its key's queue to
  // the total's.
  enum class job_kind { enqueue, drain, cancel, abort, call, group_call, fire, transfer };
  struct job {
    job_kind what;
    int op = -1;  // the op; the batch for group_call
    int key = -1;
    int shard = -1;
    ec_kind ec = ec_kind::ok;
  };
  struct strand {
    bool locked = false;
    bool running = false;
    std::deque<job> ready, waiting;
  };
  // task: the scheduler's reactor task (in the queue once the context has a
  // timer service); timer: a timer wait's completion (strand = shard, op =
  // its generation).
  enum class item_kind { invoker, call, group_call, batch_slot, coro_start, coro_emit, noop, task, timer };
  struct item {
    item_kind what;
    int strand = -1;
    int op = -1;  // the op; the batch for group_call
    sig type = sig::none;
  };
  // The completions one close/destroy job posted, per destination
  // (0: context 0, 1: context 1, 2: the user strand), per key, FIFO.
  struct batch {
    std::map<int, std::deque<int>> ops[3];
    std::deque<int> silent[3];  // detached ops: they log nothing, so they fill in
    // Timer waits cancelled by the job (a shard's heap emptied): context-0
    // slots that log nothing either, (shard, generation).
    std::deque<std::pair<int, long>> timer_cancels;
    // The job posts the cancelled wait just before the completion of the op
    // whose unlinking emptied the heap (op E, of key cancel_key): after
    // cancel_before of that key's logged context-0 completions, with
    // cancel_after of them (E's own included) still to come.
    int cancel_key = -1;
    std::size_t cancel_before = 0, cancel_after = 0;
    bool strand_invoker_pending = false;  // one of the context-0 slots is the user strand's invoker
    int current[3] = {-1, -1, -1};
    std::vector<int> seen[3];
    std::vector<std::pair<int, int>> before;  // (a, b): key a's ops were posted before key b's
  };
  struct context {
    bool alive = true;
    bool reactor = false;  // the reactor task is in q
    int depth = 0;  // > 0 while this thread runs one of its handlers
    std::deque<item> q;
  };
  struct deferred_op {
    int key;
    int n;
    bool launched;
  };

  // ------------------------------------------------------------------------
  // Helpers
  // ------------------------------------------------------------------------
  int shard_of(int key) const { return key % shards_; }

  int expired_waits() const {
    return static_cast<int>(std::count_if(timers_.begin(), timers_.end(),
                                          [](const shard_timer& t) { return t.wait_pending && t.wait_expired; }));
  }

  // The limit in force: the override, else permits_per_key (a live key's
  // limit always equals it: set_limit updates both).
  int key_limit(int k) const {
    auto it = overrides_.find(k);
    return it == overrides_.end() ? cfg_.limit : it->second;
  }

  // The model's own counts as the library's word, so the admission rule is
  // the library's pure state machine (keysem::detail::key_word), not a copy.
  static std::uint64_t word_of(const key_state* ks) {
    namespace kw = keysem::detail::key_word;
    if (ks == nullptr) return 0;
    return static_cast<std::uint64_t>(ks->held) | static_cast<std::uint64_t>(ks->waiters) * kw::one_waiter |
           (ks->drain ? kw::drain_bit : 0) | (ks->limit_changed ? kw::limit_changed_bit : 0);
  }
  bool capped() const { return cfg_.total > 0; }
  int total_strand() const { return shards_ + 1; }
  std::uint64_t total_word() const {
    namespace kw = keysem::detail::key_word;
    return static_cast<std::uint64_t>(total_.held) + static_cast<std::uint64_t>(total_.waiters) * kw::one_waiter +
           (total_.drain ? kw::drain_bit : 0);
  }
  void set_total_word(std::uint64_t w) {
    namespace kw = keysem::detail::key_word;
    total_.held = static_cast<int>(kw::held(w));
    total_.waiters = static_cast<int>(kw::waiters(w));
    total_.drain = kw::drain_scheduled(w);
  }
  void set_key_word(key_state& ks, std::uint64_t w) {
    namespace kw = keysem::detail::key_word;
    ks.held = static_cast<int>(kw::held(w));
    ks.waiters = static_cast<int>(kw::waiters(w));
    ks.drain = kw::drain_scheduled(w);
  }
  // The total's answer for a request its key grants (key_state_base::
  // take_total, by the contract): granted (taken), staged (one waiter
  // registered at the total), busy (a try may not wait) or queue_full (the
  // key's queue bound is 0, and waiting at the total would make one more
  // waiter of the key). The total's rule is the key rule: FIFO, no barging.
  keysem::detail::key_word::verdict take_total(int n, std::uint64_t max_waiting, bool may_wait) {
    namespace kw = keysem::detail::key_word;
    const auto count = static_cast<std::uint64_t>(n);
    const auto limit = static_cast<std::uint64_t>(cfg_.total);
    if (!may_wait || max_waiting == 0) {
      if (kw::try_admit(total_word(), count, {limit, 0}) == kw::verdict::granted) {
        set_total_word(kw::apply(total_word(), count, kw::verdict::granted));
        return kw::verdict::granted;
      }
      return may_wait ? kw::verdict::queue_full : kw::verdict::busy;
    }
    const kw::verdict v = kw::admit(total_word(), count, {limit, ~std::uint64_t{0}});
    if (v == kw::verdict::granted || v == kw::verdict::queued) set_total_word(kw::apply(total_word(), count, v));
    return v == kw::verdict::granted ? kw::verdict::granted
           : v == kw::verdict::queued ? kw::verdict::staged
                                      : kw::verdict::queue_full;
  }
  keysem::detail::key_word::policy policy_of(int k) const {
    return {static_cast<std::uint64_t>(key_limit(k)),
            cfg_.max_waiters < 0 ? ~std::uint64_t{0} : static_cast<std::uint64_t>(cfg_.max_waiters)};
  }
  // Applies a verdict of admit/try_admit to the model's counts, through the
  // library's apply() (the key's state is created only when granted).
  void apply_verdict(int k, int n, keysem::detail::key_word::verdict v) {
    namespace kw = keysem::detail::key_word;
    if (v != kw::verdict::granted && v != kw::verdict::queued) return;
    key_state& ks = keys_[k];
    const std::uint64_t next = kw::apply(word_of(&ks), static_cast<std::uint64_t>(n), v);
    ks.held = static_cast<int>(kw::held(next));
    ks.waiters = static_cast<int>(kw::waiters(next));
  }
  static bool is_coroutine(token t) { return t == token::coro || t == token::awaitable; }
  int user_strand() const { return shards_; }

  key_state* find(int k) {
    auto it = keys_.find(k);
    return it == keys_.end() ? nullptr : &it->second;
  }
  const key_state* find(int k) const {
    auto it = keys_.find(k);
    return it == keys_.end() ? nullptr : &it->second;
  }
  void reclaim_if_idle(int k) {
    auto it = keys_.find(k);
    if (it != keys_.end() && !it->second.exists()) {
      keys_.erase(it);
    }
  }

  bool token_usable(token t) const {
    switch (t) {
      case token::ctx2:
        return ctx_[1].alive;
      case token::future:
        return true;
      default:
        return ctx_[0].alive;
    }
  }

  bool ctx2_op_in_flight() const {
    return std::any_of(ops_.begin(), ops_.end(), [](const op& o) {
      return o.tok == token::ctx2 && o.f == fate::pending && !o.posted;
    });
  }

  int cancel_target(int pick) const {
    std::vector<int> candidates;
    for (const op& o : ops_) {
      if (!o.cancellable) continue;
      // A coroutine's slot belongs to co_spawn: only while the coroutine
      // awaits the acquire.
      if (is_coroutine(o.tok) && o.coro != op::coro_state::awaiting) continue;
      candidates.push_back(o.id);
    }
    if (candidates.empty()) return -1;
    return candidates[static_cast<std::size_t>(pick) % candidates.size()];
  }

  // ------------------------------------------------------------------------
  // The schedule (asio)
  // ------------------------------------------------------------------------
  void post_item(int c, item it) { ctx_[c].q.push_back(it); }

  void strand_execute(int s, job j, bool never) {
    strand& st = strands_[static_cast<std::size_t>(s)];
    if (!never && st.running) {
      run_job(j);
      return;
    }
    if (st.locked) {
      st.waiting.push_back(j);
      return;
    }
    st.locked = true;
    st.ready.push_back(j);
    // Every strand here runs on context 0.
    if (!never && ctx_[0].depth > 0) {
      run_invoker(s);
    } else {
      post_item(0, {item_kind::invoker, s, -1});
    }
  }

  void run_invoker(int s) {
    strand& st = strands_[static_cast<std::size_t>(s)];
    st.running = true;
    while (!st.ready.empty()) {
      const job j = st.ready.front();
      st.ready.pop_front();
      run_job(j);
    }
    st.running = false;
    for (const job& j : st.waiting) st.ready.push_back(j);
    st.waiting.clear();
    st.locked = !st.ready.empty();
    if (st.locked) {
      post_item(0, {item_kind::invoker, s, -1});
    }
  }

  void run_item(int c, const item& it) {
    ++ctx_[c].depth;
    switch (it.what) {
      case item_kind::invoker:
        run_invoker(it.strand);
        break;
      case item_kind::call:
        invoke(it.op);
        break;
      case item_kind::group_call:
        invoke_from_batch(it.op, c);
        break;
      case item_kind::batch_slot:
        run_batch_slot(it.op);
        break;
      case item_kind::coro_start:
        coro_start(it.op);
        break;
      case item_kind::coro_emit:
        emit_now(it.op, it.type);
        break;
      case item_kind::noop:
      case item_kind::task:
        break;
      case item_kind::timer:
        timer_completion(it.strand, it.op);
        break;
    }
    --ctx_[c].depth;
  }

  // asio 1.81 scheduler::poll / poll_one (do_poll_one). Without a timer the
  // queue is a plain FIFO of handlers. The context's first timer adds the
  // reactor task, an entry of the FIFO like any handler: when it reaches the
  // front it is popped and the reactor runs (timeout 0): the expired timer
  // waits are queued at the back, by expiry, then the task again. If the
  // task is then at the front nothing else was ready and the call returns 0;
  // otherwise the front handler runs. poll() repeats do_poll_one until it
  // returns 0.
  long poll(int c, bool one) {
    long ran = 0;
    for (;;) {
      context& ctx = ctx_[c];
      if (ctx.q.empty()) return ran;
      if (ctx.q.front().what == item_kind::task) {
        ctx.q.pop_front();
        run_reactor(c);
        ctx.q.push_back({item_kind::task});
        if (ctx.q.front().what == item_kind::task) return ran;
      }
      const item it = ctx.q.front();
      ctx.q.pop_front();
      run_item(c, it);
      ++ran;
      if (one) return ran;
    }
  }

  void run_reactor(int c) {
    if (c != 0) return;
    std::vector<int> ready;
    for (int s = 0; s < static_cast<int>(timers_.size()); ++s) {
      const shard_timer& t = timers_[static_cast<std::size_t>(s)];
      if (t.wait_pending && t.wait_expired) ready.push_back(s);
    }
    std::sort(ready.begin(), ready.end(), [&](int a, int b) {
      return timers_[static_cast<std::size_t>(a)].wait_stamp < timers_[static_cast<std::size_t>(b)].wait_stamp;
    });
    for (int s : ready) {
      shard_timer& t = timers_[static_cast<std::size_t>(s)];
      t.wait_pending = false;
      post_item(0, {item_kind::timer, s, static_cast<int>(t.wait_generation)});
    }
  }

  // ------------------------------------------------------------------------
  // Deadlines (src/deadline_queue.cpp, key_state::time_out)
  // ------------------------------------------------------------------------
  void heap_add(int s, int id) {
    shard_timer& t = timers_[static_cast<std::size_t>(s)];
    op& o = ops_[static_cast<std::size_t>(id)];
    auto at = std::find_if(t.heap.begin(), t.heap.end(),
                           [&](int other) { return ops_[static_cast<std::size_t>(other)].stamp > o.stamp; });
    t.heap.insert(at, id);
    o.in_heap = true;
    arm(s);
  }

  void heap_remove(op& o) {
    if (!o.in_heap) return;
    o.in_heap = false;
    const int s = heap_of(o);
    shard_timer& t = timers_[static_cast<std::size_t>(s)];
    t.heap.erase(std::find(t.heap.begin(), t.heap.end(), o.id));
    if (t.heap.empty()) disarm(s);
  }

  // The pending wait is cancelled: its handler is queued with
  // operation_aborted (epoll_reactor::cancel_timer, at the back).
  void cancel_wait(int s) {
    shard_timer& t = timers_[static_cast<std::size_t>(s)];
    if (!t.wait_pending) return;
    t.wait_pending = false;
    const item it{item_kind::timer, s, static_cast<int>(t.wait_generation)};
    if (collecting_ != nullptr) {
      collecting_->timer_cancels.emplace_back(s, t.wait_generation);
      const int k = ops_[static_cast<std::size_t>(collecting_op_)].key;
      collecting_->cancel_key = k;
      collecting_->cancel_before = collecting_->ops[0][k].size();
      ++collecting_slots_;
      return;
    }
    post_item(0, it);
  }

  void arm(int s) {
    shard_timer& t = timers_[static_cast<std::size_t>(s)];
    if (t.heap.empty()) {
      disarm(s);
      return;
    }
    const long earliest = ops_[static_cast<std::size_t>(t.heap.front())].stamp;
    if (t.armed && earliest >= t.armed_for) return;
    if (!t.created) {
      t.created = true;
      if (!ctx_[0].reactor) {
        // The context's first timer creates the timer service, which puts
        // the reactor task at the back of the queue (scheduler::init_task).
        ctx_[0].reactor = true;
        post_item(0, {item_kind::task});
      }
    }
    t.armed = false;
    cancel_wait(s);  // expires_at cancels a pending wait
    ++t.generation;
    t.wait_pending = true;
    t.wait_generation = t.generation;
    t.wait_stamp = earliest;
    t.wait_expired = ops_[static_cast<std::size_t>(t.heap.front())].dl == deadline::past;
    t.armed = true;
    t.armed_for = earliest;
  }

  void disarm(int s) {
    shard_timer& t = timers_[static_cast<std::size_t>(s)];
    if (!t.armed || !t.created) return;
    ++t.generation;
    t.armed = false;
    cancel_wait(s);
  }

  // The timer's handler (expired or cancelled) is dispatched to the shard's
  // strand: the timer's executor is the strand.
  void timer_completion(int s, int generation) {
    strand_execute(s < shards_ ? s : total_strand(), {job_kind::fire, generation, -1, s}, false);
  }
  // The deadline heap (timer) an op is in: its key's shard's, or once
  // staged the total's shard's.
  int heap_of(const op& o) const { return o.staged ? shards_ : shard_of(o.key); }

  void fire(int s, long generation) {
    shard_timer& t = timers_[static_cast<std::size_t>(s)];
    if (generation != t.generation) return;  // superseded or cancelled
    t.armed = false;
    // Every past deadline has passed, no later one has.
    while (!t.heap.empty() && ops_[static_cast<std::size_t>(t.heap.front())].dl == deadline::past) {
      op& o = ops_[static_cast<std::size_t>(t.heap.front())];
      heap_remove(o);
      time_out(o.id);
    }
    arm(s);
  }

  void time_out(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (o.st != status::waiting) return;  // cancelled: its cancel job takes it out
    o.st = status::claimed;
    if (o.staged) {
      // At the total: it leaves the total's queue (its key gets the
      // reservation back), then the waiters it held back are served.
      erase_from_total(o);
      --total_.waiters;
      ++timed_out_at_total_;
      deliver(o, ec_kind::timed_out, 0);
      grant_total();
      return;
    }
    key_state& ks = keys_.at(o.key);
    erase_from_queue(ks, o);
    --ks.waiters;
    deliver(o, ec_kind::timed_out, 0);
    grant_waiters(o.key);  // it may have been holding the head back
    reclaim_if_idle(o.key);
  }

  // ------------------------------------------------------------------------
  // The semaphore's jobs (docs/design.md, "A key's life" and "The races")
  // ------------------------------------------------------------------------
  void run_job(const job& j) {
    switch (j.what) {
      case job_kind::enqueue:
        enqueue(j.op);
        break;
      case job_kind::drain:
        if (j.key < 0) {
          drain_total();
        } else {
          drain(j.key);
        }
        break;
      case job_kind::cancel:
        finish_cancelled(j.op);
        break;
      case job_kind::abort:
        if (j.shard < 0) {
          abort_total(j.ec);
        } else {
          abort_shard(j.shard, j.ec, true);
        }
        break;
      case job_kind::transfer:
        run_transfer(j.op);
        break;
      case job_kind::call:
        invoke(j.op);
        break;
      case job_kind::group_call:
        invoke_from_batch(j.op, 2);
        break;
      case job_kind::fire:
        fire(j.shard, j.op);
        break;
    }
  }

  // Whether op `id` may be the next completion of batch g at destination d:
  // the head of its key's FIFO, and no other key's ops left half done.
  bool legal_in(const batch& g, int d, int id) const {
    if (id < 0 || id >= static_cast<int>(ops_.size())) return false;
    const int k = ops_[static_cast<std::size_t>(id)].key;
    auto it = g.ops[d].find(k);
    if (it == g.ops[d].end() || it->second.empty() || it->second.front() != id) return false;
    const int cur = g.current[d];
    if (cur != -1 && cur != k) {
      auto at = g.ops[d].find(cur);
      if (at != g.ops[d].end() && !at->second.empty()) return false;  // a key's ops come together
    }
    return true;
  }

  // Which op of the batch the real system ran next at destination d: the
  // next one in its log if that is legal, else one that logs nothing.
  // Returns -1 (and notes a divergence) when neither fits.
  int take_from_batch(int b, int d) {
    batch& g = batches_[static_cast<std::size_t>(b)];
    int id = oracle_.empty() ? -1 : oracle_.front();
    if (legal_in(g, d, id)) {
      oracle_.pop_front();
    } else if (!g.silent[d].empty()) {
      // The real system ran one that logs nothing here (or the order inside
      // one step is not observable anyway).
      id = g.silent[d].front();
      g.silent[d].pop_front();
      return id;
    } else {
      if (divergence_.empty()) {
        divergence_ = id < 0 ? "a close/destroy completion the real system did not run"
                             : "op #" + std::to_string(id) + " is not a legal next completion of a close/destroy batch";
      }
      oracle_.clear();
      id = -1;
      for (auto& [k, q] : g.ops[d]) {
        if (!q.empty() && legal_in(g, d, q.front())) {
          id = q.front();
          break;
        }
      }
      if (id < 0) return -1;
    }
    const int k = ops_[static_cast<std::size_t>(id)].key;
    if (std::find(g.seen[d].begin(), g.seen[d].end(), k) == g.seen[d].end()) {
      for (int earlier : g.seen[d]) {
        if (std::find(g.before.begin(), g.before.end(), std::make_pair(k, earlier)) != g.before.end() &&
            divergence_.empty()) {
          divergence_ = "close/destroy completions of keys " + std::to_string(earlier) + " and " +
                        std::to_string(k) + " ran in different orders on different executors";
        }
        g.before.emplace_back(earlier, k);
      }
      g.seen[d].push_back(k);
    }
    g.current[d] = k;
    g.ops[d][k].pop_front();
    return id;
  }

  void invoke_from_batch(int b, int d) {
    const int id = take_from_batch(b, d);
    if (id >= 0) invoke(id, false);
  }

  // One of the context-0 items a batch posted: a completion, or the user
  // strand's invoker (posted when the first completion bound to the user
  // strand was, at a place in the batch that depends on the key order).
  void run_batch_slot(int b) {
    batch& g = batches_[static_cast<std::size_t>(b)];
    const int front = oracle_.empty() ? -1 : oracle_.front();
    const bool any_left = !g.silent[0].empty() || !g.timer_cancels.empty() ||
                          std::any_of(g.ops[0].begin(), g.ops[0].end(), [](const auto& e) { return !e.second.empty(); });
    if (g.strand_invoker_pending && (legal_in(g, 2, front) || !any_left)) {
      g.strand_invoker_pending = false;
      run_invoker(user_strand());
      return;
    }
    if (!g.timer_cancels.empty() && !legal_in(g, 0, front) && (g.silent[0].empty() || cancel_due(g))) {
      // The real system ran a handler that logs nothing: the cancelled wait
      // (or a detached op's completion, which has no effect: where the wait
      // runs matters only relative to logged handlers, see cancel_due).
      const auto [shard, generation] = g.timer_cancels.front();
      g.timer_cancels.pop_front();
      timer_completion(shard, static_cast<int>(generation));
      return;
    }
    invoke_from_batch(b, 0);
  }

  // Whether the batch's cancelled timer wait is the next of its context-0
  // items that logs nothing: every logged completion of its key before op E
  // has run, and no other key is half done (a key's items come together).
  bool cancel_due(const batch& g) const {
    if (g.cancel_key < 0) return true;
    auto it = g.ops[0].find(g.cancel_key);
    const std::size_t left = it == g.ops[0].end() ? 0 : it->second.size();
    if (left > g.cancel_after) return false;
    const int cur = g.current[0];
    if (cur == -1 || cur == g.cancel_key) return true;
    auto at = g.ops[0].find(cur);
    return at == g.ops[0].end() || at->second.empty();
  }

  // A batch completion destroyed unrun: any one of them, they carry no permit.
  void destroy_from_batch(int b, int d) {
    batch& g = batches_[static_cast<std::size_t>(b)];
    if (!g.silent[d].empty()) {
      destroy_result(ops_[static_cast<std::size_t>(g.silent[d].front())]);
      g.silent[d].pop_front();
      return;
    }
    for (auto& [k, q] : g.ops[d]) {
      if (!q.empty()) {
        const int id = q.front();
        q.pop_front();
        destroy_result(ops_[static_cast<std::size_t>(id)]);
        return;
      }
    }
    if (d == 0 && !g.timer_cancels.empty()) g.timer_cancels.pop_front();  // a timer wait: nothing to destroy
  }

  ec_kind stop_error() const {
    switch (stop_) {
      case stop_state::closed: return ec_kind::closed;
      case stop_state::destroyed: return ec_kind::aborted;
      default: return ec_kind::ok;
    }
  }

  // key_state::unlink: out of the key's queue and the shard's deadline heap.
  void erase_from_queue(key_state& ks, op& o) {
    ks.queue.erase(std::find(ks.queue.begin(), ks.queue.end(), o.id));
    o.linked = false;
    heap_remove(o);
  }

  // The semaphore counts an outcome when it decides it (semaphore_stats).
  void count(ec_kind ec, bool waited) {
    switch (ec) {
      case ec_kind::ok: ++(waited ? counts_.granted_after_wait : counts_.granted_immediately); break;
      case ec_kind::closed: ++counts_.rejected_closed; break;
      case ec_kind::aborted: ++counts_.cancelled; break;
      case ec_kind::invalid: ++counts_.invalid_argument; break;
      case ec_kind::queue_full: ++counts_.rejected_queue_full; break;
      case ec_kind::timed_out: ++counts_.timed_out; break;
    }
  }

  // The op's result travels to its handler's executor.
  void deliver(op& o, ec_kind ec, int granted) {
    if (o.staged) leave_stage(o, ec == ec_kind::ok);
    count(ec, o.has_waiter);
    o.posted = true;
    o.ec = ec;
    o.granted = granted;
    switch (o.tok) {
      case token::strand:
        strand_execute(user_strand(), {job_kind::call, o.id}, true);
        break;
      case token::ctx2:
        post_item(1, {item_kind::call, -1, o.id});
        break;
      case token::future:
        break;  // the system executor sets the promise; collected after the step
      default:
        post_item(0, {item_kind::call, -1, o.id});
        break;
    }
  }

  void enqueue(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (o.staged) return enqueue_total(id);
    key_state& ks = keys_.at(o.key);
    if (const ec_kind ec = stop_error(); ec != ec_kind::ok) {
      if (o.st == status::waiting) {
        o.st = status::claimed;
        deliver(o, ec, 0);
        --ks.waiters;
        reclaim_if_idle(o.key);
      }
      return;  // a cancelled op is finished by its cancel job
    }
    ks.queue.push_back(id);
    o.linked = true;
    if (o.dl != deadline::none) heap_add(shard_of(o.key), id);
    // As the library: no grant pass while the key has no free permit and no
    // limit change (key_word::may_grant); the release that frees one drains.
    namespace kw = keysem::detail::key_word;
    if (!kw::may_grant(word_of(&ks), static_cast<std::uint64_t>(key_limit(o.key)))) return;
    grant_waiters(o.key);
    reclaim_if_idle(o.key);
  }

  // A grant pass (enqueue, drain, cancel jobs). A limit change pending on
  // the key is consumed first, even on a stopped semaphore; then, if the
  // limit changed, every live waiter above the new limit fails with
  // invalid_argument, wherever it is in the queue. Then FIFO, head-of-line,
  // as key_word::serve_head decides: the first live waiter that does not fit
  // stops the scan; cancelled ops are skipped until their cancel job
  // removes them.
  void grant_waiters(int k) {
    namespace kw = keysem::detail::key_word;
    key_state& ks = keys_.at(k);
    const bool changed = std::exchange(ks.limit_changed, false);
    if (stop_ != stop_state::open) {
      return;
    }
    const auto limit = static_cast<std::uint64_t>(key_limit(k));
    if (changed) {
      const std::deque<int> snapshot = ks.queue;
      for (int id : snapshot) {
        op& o = ops_[static_cast<std::size_t>(id)];
        if (o.st != status::waiting || static_cast<std::uint64_t>(o.n) <= limit) continue;
        o.st = status::claimed;
        erase_from_queue(ks, o);
        ks.waiters = static_cast<int>(kw::waiters(kw::left_queue(word_of(&ks))));
        deliver(o, ec_kind::invalid, 0);
      }
    }
    const std::deque<int> snapshot = ks.queue;
    for (int id : snapshot) {
      op& o = ops_[static_cast<std::size_t>(id)];
      if (o.st == status::cancelled) continue;
      const kw::head_action action = kw::serve_head(word_of(&ks), static_cast<std::uint64_t>(o.n), limit);
      if (action == kw::head_action::wait) break;
      // A head its key grants asks the total; held back there, it moves on
      // to the total's queue and the scan goes on (the next head fits the
      // key only if the reservation leaves room, and meets the total's FIFO).
      if (capped() && action == kw::head_action::grant &&
          take_total(o.n, ~std::uint64_t{0}, true) == kw::verdict::staged) {
        stage_at_total(ks, o);
        continue;
      }
      o.st = status::claimed;
      erase_from_queue(ks, o);
      if (action == kw::head_action::fail) {
        ks.waiters = static_cast<int>(kw::waiters(kw::left_queue(word_of(&ks))));
        deliver(o, ec_kind::invalid, 0);
        continue;
      }
      const std::uint64_t next = kw::granted_from_queue(word_of(&ks), static_cast<std::uint64_t>(o.n));
      ks.held = static_cast<int>(kw::held(next));
      ks.waiters = static_cast<int>(kw::waiters(next));
      deliver(o, ec_kind::ok, o.n);
    }
  }

  void drain(int k) {
    grant_waiters(k);
    keys_.at(k).drain = false;
    reclaim_if_idle(k);
  }

  void finish_cancelled(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (o.staged) return finish_cancelled_total(id);
    key_state& ks = keys_.at(o.key);
    if (o.linked) {
      erase_from_queue(ks, o);
    }
    grant_waiters(o.key);  // a cancelled head may have been blocking the queue
    deliver(o, ec_kind::aborted, 0);
    --ks.waiters;
    reclaim_if_idle(o.key);
  }

  // A close/destroy job (invoke) or the context's shutdown (!invoke): every
  // waiting op of every key of the shard, FIFO per key, keys in table order.
  void abort_shard(int s, ec_kind ec, bool invoke) {
    std::vector<int> waiting_keys;
    for (const auto& [k, ks] : keys_) {
      if (shard_of(k) == s && !ks.queue.empty()) waiting_keys.push_back(k);
    }
    batch g;
    int per_destination[3] = {0, 0, 0};
    // A timer wait cancelled as the shard's heap empties is posted between
    // the completions, at a place that depends on the key order: one more
    // context-0 slot of the batch.
    if (invoke) {
      collecting_ = &g;
      collecting_slots_ = 0;
    }
    for (int k : waiting_keys) {
      key_state& ks = keys_.at(k);
      int aborted = 0;
      const std::deque<int> snapshot = ks.queue;
      for (int id : snapshot) {
        op& o = ops_[static_cast<std::size_t>(id)];
        if (o.st != status::waiting) continue;
        o.st = status::claimed;
        collecting_op_ = id;
        erase_from_queue(ks, o);
        ++aborted;
        if (!invoke) {
          destroy_op(o);
          continue;
        }
        o.posted = true;
        o.ec = ec;
        o.granted = 0;
        count(ec, true);
        const int d = o.tok == token::ctx2 ? 1 : o.tok == token::strand ? 2 : o.tok == token::future ? -1 : 0;
        if (d >= 0) {
          (o.tok == token::detached ? g.silent[d] : g.ops[d][k]).push_back(id);
          ++per_destination[d];
        }
      }
      ks.waiters -= aborted;
      reclaim_if_idle(k);
    }
    collecting_ = nullptr;
    if (!invoke) return;
    if (g.cancel_key >= 0) g.cancel_after = g.ops[0][g.cancel_key].size() - g.cancel_before;
    per_destination[0] += std::exchange(collecting_slots_, 0);
    // The real job posts key by key in table order; only the per-executor
    // counts are known here. The user strand's first job, if it finds the
    // strand idle, makes the strand post its invoker to context 0 somewhere
    // among the batch's context-0 items.
    const int b = static_cast<int>(batches_.size());
    strand& user = strands_[static_cast<std::size_t>(user_strand())];
    int slots = per_destination[0];
    for (int i = 0; i < per_destination[2]; ++i) {
      const job j{job_kind::group_call, b};
      if (!user.locked) {
        user.locked = true;
        user.ready.push_back(j);
        g.strand_invoker_pending = true;
        ++slots;
      } else {
        user.waiting.push_back(j);
      }
    }
    batches_.push_back(std::move(g));
    for (int i = 0; i < slots; ++i) post_item(0, {item_kind::batch_slot, -1, b});
    for (int i = 0; i < per_destination[1]; ++i) post_item(1, {item_kind::group_call, -1, b});
  }

  // ---- The total limit ----------------------------------------------------

  // The key's strand moves its head to the total (key_word::
  // staged_from_queue): the key reserves its permits and keeps counting it
  // as a waiter; a transfer job, posted to the total's strand (never run
  // inline: the key's strand is running), queues it there.
  void stage_at_total(key_state& ks, op& o) {
    namespace kw = keysem::detail::key_word;
    o.st = status::transferring;
    erase_from_queue(ks, o);
    ks.staged += o.n;
    set_key_word(ks, kw::staged_from_queue(word_of(&ks), static_cast<std::uint64_t>(o.n)));
    o.staged = true;
    ++transferred_;
    strand_execute(total_strand(), {job_kind::transfer, o.id}, true);
  }

  // The transfer job: queued at the total, or finished as cancelled if a
  // signal caught it on the way.
  void run_transfer(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (o.st == status::transferring) {
      o.st = status::waiting;
      enqueue_total(id);
    } else {
      o.st = status::cancelled;
      finish_cancelled_total(id);
    }
  }

  // A staged op leaves the total's stage: granted (key_word::
  // granted_from_stage: it stops being a waiter of its key, keeping the
  // permits) or without permits (key_word::left_stage: the reservation and
  // the waiter go, and a drain is posted when others wait: the total's
  // strand is running, so never inline). Runs before the result is posted.
  void leave_stage(op& o, bool granted) {
    namespace kw = keysem::detail::key_word;
    o.staged = false;
    key_state& ks = keys_.at(o.key);
    ks.staged -= o.n;
    const std::uint64_t before = word_of(&ks);
    if (granted) {
      set_key_word(ks, kw::granted_from_stage(before));
      return;
    }
    const std::uint64_t after = kw::left_stage(before, static_cast<std::uint64_t>(o.n));
    set_key_word(ks, after);
    const bool newly = !kw::drain_scheduled(before) && kw::drain_scheduled(after);
    reclaim_if_idle(o.key);
    if (newly) schedule_drain(o.key, true);
  }

  void enqueue_total(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (const ec_kind ec = stop_error(); ec != ec_kind::ok) {
      if (o.st == status::waiting) {
        o.st = status::claimed;
        deliver(o, ec, 0);
        --total_.waiters;
      }
      return;  // a cancelled op is finished by its cancel job
    }
    total_.queue.push_back(id);
    o.linked = true;
    if (o.dl != deadline::none) heap_add(shards_, id);
    namespace kw = keysem::detail::key_word;
    if (!kw::may_grant(total_word(), static_cast<std::uint64_t>(cfg_.total))) return;
    grant_total();
  }

  // The total's grant pass: FIFO across keys, head-of-line, the key rule
  // (key_word::serve_head, granted_from_queue) on the total's word.
  void grant_total() {
    namespace kw = keysem::detail::key_word;
    if (stop_ != stop_state::open) return;
    const auto limit = static_cast<std::uint64_t>(cfg_.total);
    const std::deque<int> snapshot = total_.queue;
    for (int id : snapshot) {
      op& o = ops_[static_cast<std::size_t>(id)];
      if (o.st == status::cancelled) continue;
      if (kw::serve_head(total_word(), static_cast<std::uint64_t>(o.n), limit) != kw::head_action::grant) break;
      o.st = status::claimed;
      erase_from_total(o);
      set_total_word(kw::granted_from_queue(total_word(), static_cast<std::uint64_t>(o.n)));
      deliver(o, ec_kind::ok, o.n);
    }
  }

  // unlink at the total: its queue and its shard's deadline heap.
  void erase_from_total(op& o) {
    total_.queue.erase(std::find(total_.queue.begin(), total_.queue.end(), o.id));
    o.linked = false;
    heap_remove(o);
  }

  void drain_total() {
    grant_total();
    total_.drain = false;
  }

  void finish_cancelled_total(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (o.linked) {
      erase_from_total(o);
    }
    grant_total();  // the cancelled op may have been blocking the head
    deliver(o, ec_kind::aborted, 0);
    --total_.waiters;
  }

  // The total's close/destroy job: its queue, FIFO (one queue, so the order
  // is fixed); each staged op gives its key's reservation back as it goes.
  void abort_total(ec_kind ec) {
    int aborted = 0;
    const std::deque<int> snapshot = total_.queue;
    for (int id : snapshot) {
      op& o = ops_[static_cast<std::size_t>(id)];
      if (o.st != status::waiting) continue;
      o.st = status::claimed;
      erase_from_total(o);
      ++aborted;
      deliver(o, ec, 0);
    }
    total_.waiters -= aborted;
  }

  // The context's shutdown: the total's queued ops are destroyed unrun,
  // each giving its key's reservation back.
  void drop_total_waiters() {
    const std::deque<int> snapshot = total_.queue;
    for (int id : snapshot) {
      op& o = ops_[static_cast<std::size_t>(id)];
      if (o.st != status::waiting) continue;
      o.st = status::claimed;
      erase_from_total(o);
      destroy_op(o);
      leave_stage(o, false);
      --total_.waiters;
    }
  }

  void release_total(int n) {
    namespace kw = keysem::detail::key_word;
    const std::uint64_t before = total_word();
    const std::uint64_t after = kw::released(before, static_cast<std::uint64_t>(n));
    set_total_word(after);
    if (!kw::drain_scheduled(before) && kw::drain_scheduled(after)) {
      if (detached_) {
        total_.drain = false;
        return;
      }
      strand_execute(total_strand(), {job_kind::drain, -1, -1}, false);
    }
  }

  // never: posted from a strand job (never dispatched inline).
  void schedule_drain(int k, bool never = false) {
    if (detached_) {
      // The drain job cannot be posted: it gives back its bit, and the limit
      // change that only a grant pass would consume.
      keys_.at(k).drain = false;
      keys_.at(k).limit_changed = false;
      reclaim_if_idle(k);
      return;
    }
    strand_execute(shard_of(k), {job_kind::drain, -1, k}, never);
  }

  // key_state_base::release_permit: a capped semaphore's permit goes back
  // to the total first, then to its key.
  void release(int k, int n) {
    namespace kw = keysem::detail::key_word;
    if (capped()) release_total(n);
    key_state& ks = keys_.at(k);
    const std::uint64_t before = word_of(&ks);
    const std::uint64_t after = kw::released(before, static_cast<std::uint64_t>(n));
    ks.held = static_cast<int>(kw::held(after));
    ks.drain = kw::drain_scheduled(after);
    const bool newly = !kw::drain_scheduled(before) && kw::drain_scheduled(after);
    reclaim_if_idle(k);
    if (newly) schedule_drain(k);
  }

  // set_limit(k, n), or reset_limit(k) for n == 0: the override changes at
  // once; a live key with waiters gets a limit change and, unless one is
  // already pending, a drain job (posted after the shard's lock is released,
  // dispatched like a release's).
  void set_limit(int k, int n) {
    namespace kw = keysem::detail::key_word;
    if (n > 0) {
      overrides_[k] = n;
    } else {
      overrides_.erase(k);
    }
    key_state* ks = find(k);
    if (ks == nullptr) return;
    const std::uint64_t before = word_of(ks);
    const std::uint64_t after = kw::limit_changed(before);
    ks->drain = kw::drain_scheduled(after);
    ks->limit_changed = (after & kw::limit_changed_bit) != 0;
    if (!kw::drain_scheduled(before) && kw::drain_scheduled(after)) schedule_drain(k);
  }

  // ------------------------------------------------------------------------
  // The public surface
  // ------------------------------------------------------------------------
  int new_op(int key, int n, token tok, bool cancellable, const handler_action& then) {
    op o;
    o.id = static_cast<int>(ops_.size());
    o.key = key;
    o.n = n;
    o.tok = tok;
    o.cancellable = cancellable && tok != token::future && tok != token::detached;
    o.then = then;
    ops_.push_back(o);
    return o.id;
  }

  void start_op(int key, int n, token tok, bool cancellable, const handler_action& then,
                deadline dl = deadline::none) {
    const int id = new_op(key, n, tok, cancellable, then);
    if (dl != deadline::none && !is_coroutine(tok)) {
      // Past deadlines are all earlier than later ones; each kind grows.
      constexpr long later_base = 1L << 40;
      ops_[static_cast<std::size_t>(id)].dl = dl;
      ops_[static_cast<std::size_t>(id)].stamp = (dl == deadline::later ? later_base : 0) + ++clock_;
    }
    if (is_coroutine(tok)) {
      ops_[static_cast<std::size_t>(id)].coro = op::coro_state::not_started;
      post_item(0, {item_kind::coro_start, -1, id});  // co_spawn dispatches from outside the context
      return;
    }
    initiate(id);
  }

  void initiate(int id) {
    namespace kw = keysem::detail::key_word;
    op& o = ops_[static_cast<std::size_t>(id)];
    const bool unfit = o.n <= 0 || o.n > key_limit(o.key);
    // Above the total limit: invalid before anything else (max_request).
    if (over_total(o.n)) return deliver(o, ec_kind::invalid, 0);
    if (const ec_kind ec = stop_error(); ec != ec_kind::ok) return deliver(o, unfit ? ec_kind::invalid : ec, 0);
    if (detached_) return deliver(o, unfit ? ec_kind::invalid : ec_kind::aborted, 0);
    if (o.n <= 0) return deliver(o, ec_kind::invalid, 0);
    kw::verdict v = kw::admit(word_of(find(o.key)), static_cast<std::uint64_t>(o.n), policy_of(o.key));
    if (v == kw::verdict::granted && capped()) {
      // The key grants: the total is asked in the same step.
      const kw::verdict at_total = take_total(o.n, policy_of(o.key).max_waiting, true);
      if (at_total == kw::verdict::queue_full) return deliver(o, ec_kind::queue_full, 0);
      if (at_total == kw::verdict::staged) return wait_staged(id);
    }
    apply_verdict(o.key, o.n, v);
    switch (v) {
      case kw::verdict::granted:
        return deliver(o, ec_kind::ok, o.n);
      case kw::verdict::queued:
        return wait_queued(id);
      case kw::verdict::queue_full:
        return deliver(o, ec_kind::queue_full, 0);  // posted, never inline
      default:
        return deliver(o, ec_kind::invalid, 0);
    }
  }

  // A request its key admitted but the total holds back: its key reserves
  // its permits and it waits in the total's queue.
  void wait_staged(int id) {
    namespace kw = keysem::detail::key_word;
    op& o = ops_[static_cast<std::size_t>(id)];
    key_state& ks = keys_[o.key];
    set_key_word(ks, kw::staged(word_of(&ks), static_cast<std::uint64_t>(o.n)));
    ks.staged += o.n;
    o.has_waiter = true;
    o.st = status::waiting;
    o.staged = true;
    ++staged_at_once_;
    strand_execute(total_strand(), {job_kind::enqueue, id}, false);
  }

  // Undoes take_total's "staged": the waiter it registered at the total.
  void give_back_total_registration() {
    namespace kw = keysem::detail::key_word;
    set_total_word(total_word() - kw::one_waiter);
  }

  // A request registered as a waiter of its key (the word already counts it).
  void wait_queued(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    o.has_waiter = true;
    o.st = status::waiting;
    strand_execute(shard_of(o.key), {job_kind::enqueue, id}, false);
  }

  // The token-less awaitable's one admission: what it can decide it
  // decides without posting (a bad count, a stopped semaphore, free
  // permits, a full queue, a context already gone before it would wait);
  // a request that must wait is registered by this very admission and its
  // asynchronous operation queues it without deciding again. Returns
  // false when the request waits.
  bool awaitable_first_try(op& o, ec_kind& ec, int& taken) {
    namespace kw = keysem::detail::key_word;
    if (o.n <= 0 || over_total(o.n)) {
      ec = ec_kind::invalid;
      return true;
    }
    if (const ec_kind stopped = stop_error(); stopped != ec_kind::ok) {
      ec = o.n > key_limit(o.key) ? ec_kind::invalid : stopped;
      return true;
    }
    kw::verdict v = kw::admit(word_of(find(o.key)), static_cast<std::uint64_t>(o.n), policy_of(o.key));
    bool staged = false;
    if (v == kw::verdict::granted && capped()) {
      const kw::verdict at_total = take_total(o.n, policy_of(o.key).max_waiting, true);
      if (at_total == kw::verdict::queue_full) v = kw::verdict::queue_full;
      staged = at_total == kw::verdict::staged;
      if (staged && detached_) {
        give_back_total_registration();
      }
    }
    if ((v == kw::verdict::queued || staged) && detached_) {
      ec = ec_kind::aborted;  // registered, then given back: nothing changes
      return true;
    }
    if (staged) {
      wait_staged(o.id);
      return false;
    }
    apply_verdict(o.key, o.n, v);
    switch (v) {
      case kw::verdict::granted:
        taken = o.n;
        return true;
      case kw::verdict::queued:
        wait_queued(o.id);
        return false;
      case kw::verdict::queue_full:
        ec = ec_kind::queue_full;
        return true;
      default:
        ec = ec_kind::invalid;
        return true;
    }
  }

  void coro_start(int id) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (!sem_alive_) {
      o.coro = op::coro_state::done;
      o.f = fate::never_started;
      // The coroutine ends without having switched context: co_spawn posts
      // once more before its completion handler.
      post_item(0, {item_kind::noop});
      return;
    }
    o.coro = op::coro_state::awaiting;
    if (o.tok == token::awaitable) {
      ec_kind ec = ec_kind::ok;
      int taken = 0;
      if (!awaitable_first_try(o, ec, taken)) {
        return;  // waiting, through the asynchronous operation
      }
      count(ec, false);
      o.ec = ec;
      o.granted = taken;
      invoke(id);
      // The coroutine ended without switching context: co_spawn posts once more.
      post_item(0, {item_kind::noop});
      return;
    }
    initiate(id);
  }

  bool over_total(int n) const { return capped() && n > cfg_.total; }

  int try_acquire(int k, int n) {
    namespace kw = keysem::detail::key_word;
    if (n <= 0 || over_total(n) || (stop_ != stop_state::open && n > key_limit(k))) {
      ++counts_.invalid_argument;
      return -1;
    }
    if (stop_ != stop_state::open) {
      ++counts_.rejected_closed;
      return 0;
    }
    kw::verdict v = kw::try_admit(word_of(find(k)), static_cast<std::uint64_t>(n), policy_of(k));
    // Both levels must have room, nobody waiting at either (no overtaking).
    if (v == kw::verdict::granted && capped() && take_total(n, 0, false) != kw::verdict::granted) {
      v = kw::verdict::busy;
    }
    apply_verdict(k, n, v);
    switch (v) {
      case kw::verdict::granted:
        ++counts_.granted_immediately;
        table_.emplace_back(k, n);
        return n;
      case kw::verdict::busy:
        ++counts_.try_failed;
        return 0;
      default:
        ++counts_.invalid_argument;
        return -1;
    }
  }

  void emit(int id, sig type) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (is_coroutine(o.tok)) {
      // co_spawn's slot handler dispatches the emission to the coroutine's
      // executor (inline only from inside context 0), and the coroutine's
      // cancellation state lets terminal through, nothing else.
      if (ctx_[0].depth > 0) {
        emit_now(id, type);
      } else {
        post_item(0, {item_kind::coro_emit, -1, id, type});
      }
      return;
    }
    emit_now(id, type);
  }

  void emit_now(int id, sig type) {
    op& o = ops_[static_cast<std::size_t>(id)];
    bool honoured = type != sig::none;
    if (is_coroutine(o.tok)) {
      honoured = type == sig::terminal || type == sig::all;
    }
    if (honoured && o.has_waiter && o.st == status::transferring) {
      o.st = status::transfer_cancelled;  // the transfer job finishes it
      return;
    }
    if (!honoured || !o.has_waiter || o.st != status::waiting) {
      return;  // not waiting (never queued, granted, or already decided): ignored
    }
    o.st = status::cancelled;
    // To the strand of the queue it is in: its key's, or the total's.
    strand_execute(o.staged ? total_strand() : shard_of(o.key), {job_kind::cancel, id}, true);
  }

  void close() {
    if (stop_ != stop_state::open) return;
    stop_ = stop_state::closed;
    post_aborts(ec_kind::closed);
  }

  void destroy_semaphore() {
    stop_ = stop_state::destroyed;
    sem_alive_ = false;
    post_aborts(ec_kind::aborted);
  }

  // close() reaches the shards, then the total; destruction shuts the total
  // down first.
  void post_aborts(ec_kind ec) {
    if (detached_) return;
    const job total_abort{job_kind::abort, -1, -1, -1, ec};
    if (capped() && ec == ec_kind::aborted) strand_execute(total_strand(), total_abort, true);
    for (int s = 0; s < shards_; ++s) {
      strand_execute(s, {job_kind::abort, -1, -1, s, ec}, true);
    }
    if (capped() && ec != ec_kind::aborted) strand_execute(total_strand(), total_abort, true);
  }

  // ------------------------------------------------------------------------
  // Handlers
  // ------------------------------------------------------------------------
  void invoke(int id, bool check_order = true) {
    op& o = ops_[static_cast<std::size_t>(id)];
    if (check_order && o.tok != token::detached && o.tok != token::future) {
      if (oracle_.empty() || oracle_.front() != id) {
        if (divergence_.empty()) {
          divergence_ = "the model ran op #" + std::to_string(id) + "'s handler, the real system " +
                        (oracle_.empty() ? std::string("none") : "op #" + std::to_string(oracle_.front()));
        }
        oracle_.clear();
      } else {
        oracle_.pop_front();
      }
    }
    o.has_waiter = false;  // the op is freed before the upcall
    o.f = fate::completed;
    o.final_ec = o.ec;
    o.final_count = o.granted;
    if (is_coroutine(o.tok)) o.coro = op::coro_state::done;
    const int permit = o.granted;
    o.granted = 0;
    const int key = o.key;
    const handler_action then = o.nested ? handler_action{} : o.then;
    if (o.tok == token::detached) {
      if (permit != 0) release(key, permit);
      return;
    }
    if (then.what == act::drop) {
      if (permit != 0) release(key, permit);
      return;
    }
    if (permit != 0) table_.emplace_back(key, permit);
    switch (then.what) {
      case act::release_oldest:
        if (!table_.empty()) {
          const auto entry = table_.front();
          table_.erase(table_.begin());
          release(entry.first, entry.second);
        }
        break;
      case act::acquire:
        if (sem_alive_ && ctx_[0].alive) {
          const int nested = new_op(then.key, then.n, token::callback, false, {});
          ops_[static_cast<std::size_t>(nested)].nested = true;
          initiate(nested);
        }
        break;
      case act::try_acquire:
        if (sem_alive_) try_acquire(then.key, then.n);
        break;
      case act::cancel:
        if (const int target = cancel_target(then.target); target >= 0) emit(target, then.type);
        break;
      case act::close:
        if (sem_alive_) close();
        break;
      case act::destroy_sem:
        if (sem_alive_) destroy_semaphore();
        break;
      default:
        break;
    }
  }

  // A handler destroyed without running: a permit it carried is released.
  void destroy_result(op& o) {
    o.f = fate::destroyed;
    if (is_coroutine(o.tok)) o.coro = op::coro_state::done;
    const int permit = o.granted;
    o.granted = 0;
    if (permit != 0) release(o.key, permit);
  }

  // A waiting op destroyed with its handler (no result yet).
  void destroy_op(op& o) {
    o.has_waiter = false;
    o.f = fate::destroyed;
    if (is_coroutine(o.tok)) o.coro = op::coro_state::done;
  }

  void destroy_job(const job& j) {
    switch (j.what) {
      case job_kind::enqueue: {
        op& o = ops_[static_cast<std::size_t>(j.op)];
        if (o.st == status::waiting) {
          o.st = status::claimed;
          destroy_op(o);
          if (o.staged) {
            leave_stage(o, false);  // ~waiter_op: the key's reservation goes
            --total_.waiters;
            break;
          }
          --keys_.at(o.key).waiters;
          reclaim_if_idle(o.key);
        }
        break;
      }
      case job_kind::cancel: {
        op& o = ops_[static_cast<std::size_t>(j.op)];
        if (o.staged) {
          if (o.linked) erase_from_total(o);
          destroy_op(o);
          leave_stage(o, false);
          --total_.waiters;
          break;
        }
        key_state& ks = keys_.at(o.key);
        if (o.linked) {
          erase_from_queue(ks, o);
        }
        destroy_op(o);
        --ks.waiters;
        reclaim_if_idle(o.key);
        break;
      }
      case job_kind::drain:
        if (j.key < 0) {
          total_.drain = false;
          break;
        }
        keys_.at(j.key).drain = false;
        keys_.at(j.key).limit_changed = false;  // drop_drain
        reclaim_if_idle(j.key);
        break;
      case job_kind::abort:
        if (j.shard < 0) {
          drop_total_waiters();
        } else {
          abort_shard(j.shard, j.ec, false);
        }
        break;
      case job_kind::call:
        destroy_result(ops_[static_cast<std::size_t>(j.op)]);
        break;
      case job_kind::group_call:
        destroy_from_batch(j.op, 2);
        break;
      case job_kind::fire:
        break;
      case job_kind::transfer: {
        // The op is destroyed; its key gets its reservation back, the total
        // its registration.
        op& o = ops_[static_cast<std::size_t>(j.op)];
        destroy_op(o);
        leave_stage(o, false);
        --total_.waiters;
        break;
      }
    }
  }

  void destroy_item(const item& it, int c) {
    switch (it.what) {
      case item_kind::call:
        destroy_result(ops_[static_cast<std::size_t>(it.op)]);
        break;
      case item_kind::group_call:
      case item_kind::batch_slot:
        destroy_from_batch(it.op, c);  // (the strand's invoker slot has nothing to destroy)
        break;
      case item_kind::coro_start: {
        op& o = ops_[static_cast<std::size_t>(it.op)];
        o.f = fate::destroyed;
        o.coro = op::coro_state::done;
        break;
      }
      default:
        break;
    }
  }

  void destroy_context0() {
    // 1. keysem's service: every semaphore drops its queued ops unrun and
    //    lets go of its strands.
    for (int s = 0; s < shards_; ++s) abort_shard(s, ec_kind::aborted, false);
    detached_ = true;
    // The total too (a drain its staged ops' keys would need cannot be
    // posted any more: dropped, as the shards' detachment drops it).
    if (capped()) drop_total_waiters();
    // The shards drop their timers (the heaps stay: a cancel job destroyed
    // below still takes its op out); pending waits die with the reactor.
    for (shard_timer& t : timers_) {
      ++t.generation;
      t.armed = false;
      t.created = false;
      t.wait_pending = false;
    }
    // 2. The strand service, newest strand first: waiting jobs, then ready ones.
    std::vector<job> doomed;
    // shards_-1, ..., 0, then the total's strand (created before the
    // shards'), then the user strand (created before the semaphore).
    std::vector<int> order;
    for (int i = shards_ - 1; i >= 0; --i) order.push_back(i);
    if (capped()) order.push_back(total_strand());
    order.push_back(user_strand());
    for (int s : order) {
      strand& st = strands_[static_cast<std::size_t>(s)];
      for (const job& j : st.waiting) doomed.push_back(j);
      for (const job& j : st.ready) doomed.push_back(j);
      st.waiting.clear();
      st.ready.clear();
      st.locked = false;
    }
    for (const job& j : doomed) destroy_job(j);
    // 3. The scheduler: queued handlers, front to back.
    std::deque<item> q;
    q.swap(ctx_[0].q);
    for (const item& it : q) destroy_item(it, 0);
    ctx_[0].alive = false;
  }

  void destroy_context1() {
    std::deque<item> q;
    q.swap(ctx_[1].q);
    for (const item& it : q) destroy_item(it, 1);
    ctx_[1].alive = false;
  }

  config cfg_;
  int shards_ = 1;
  std::map<int, key_state> keys_;
  total_state total_;
  std::map<int, int> overrides_;  // set_limit's overrides, live key or not
  stats_view counts_;
  std::vector<op> ops_;
  std::vector<std::pair<int, int>> table_;
  std::vector<deferred_op> deferred_;
  std::vector<strand> strands_;
  std::vector<batch> batches_;
  std::deque<int> oracle_;
  std::string divergence_;
  std::vector<shard_timer> timers_;
  long clock_ = 0;
  batch* collecting_ = nullptr;  // the close/destroy batch being built
  int collecting_slots_ = 0;
  int collecting_op_ = -1;  // the op the batch being built is unlinking
  context ctx_[2];
  stop_state stop_ = stop_state::open;
  bool sem_alive_ = true;
  bool detached_ = false;
  int last_try_ = 0;
  std::size_t staged_at_once_ = 0, transferred_ = 0, timed_out_at_total_ = 0;
};

}  // namespace keysem::model

#endif
