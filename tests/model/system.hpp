// The real system the model is checked against: an async_keyed_semaphore on
// a single-threaded io_context (context 0), a second io_context (context 1)
// for handlers bound elsewhere, a user strand on context 0, and the permits
// the driver holds.
#ifndef KEYSEM_TESTS_MODEL_SYSTEM_HPP
#define KEYSEM_TESTS_MODEL_SYSTEM_HPP

#include "model.hpp"
#include "../unit/counting_allocator.hpp"

// g++ 12 at -O1 reports asio's use_future promise_handler as
// maybe-uninitialized (a false positive in Boost's header). This silences it
// when the file is compiled on its own; with the tests' precompiled header
// the warning is attributed to the header and still shows at -O1 (the asan
// preset, which does not use -Werror); -O2 (the -Werror preset) is clean.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/detail/reactor.hpp>

#include <cerrno>
#include <cstring>

// The reactor's timerfd (asio 1.81's epoll_reactor on Linux). A private
// member, read through the one legal way to name one from outside (an
// explicit instantiation may name it); see system::await_timer_report.
#if defined(BOOST_ASIO_HAS_EPOLL) && defined(BOOST_ASIO_HAS_TIMERFD) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#define KEYSEM_MODEL_TIMERFD 1
#include <boost/asio/detail/epoll_reactor.hpp>

#include <poll.h>

namespace keysem::model::reactor_access {
struct timer_fd {
  using type = int boost::asio::detail::epoll_reactor::*;
  friend type member(timer_fd);
};
timer_fd::type member(timer_fd);
template <class Tag, typename Tag::type Member>
struct expose {
  friend typename Tag::type member(Tag) { return Member; }
};
template struct expose<timer_fd, &boost::asio::detail::epoll_reactor::timer_fd_>;
}  // namespace keysem::model::reactor_access
#endif

namespace keysem::model {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

// The model puts key k on shard k % shards and numbers shards in the order
// close() reaches them. Rather than knowing which hash bits pick a shard (a
// private detail of the library), the checker *measures* it once per shard
// count, through documented behaviour only: the semaphore's hasher is a
// table (key -> hash value), and a calibration (calibrated_hashes below)
// searches hash values until keys 0..max_model_keys-1 land as the model
// assumes. Any hasher is valid for the library (not declared avalanching,
// so the library mixes the values itself).
inline constexpr int max_model_keys = 4;

struct model_hash {
  const std::size_t* values = nullptr;  // max_model_keys entries; null: the identity
  std::size_t operator()(int key) const noexcept {
    return values != nullptr && key >= 0 && key < max_model_keys ? values[key] : static_cast<std::size_t>(key);
  }
};

using semaphore = async_keyed_semaphore<int, model_hash>;
using permit = semaphore::permit;

namespace calibration {

// A semaphore of `shards` shards where key 0 hashes to a and key 1 to b.
struct probe {
  std::size_t values[max_model_keys] = {};
  asio::io_context ctx;
  semaphore sem;
  probe(int shards, std::size_t a, std::size_t b)
      : values{a, b}, sem(ctx, 1, semaphore_options{static_cast<std::size_t>(shards)}, model_hash{values}) {}
};

// Whether keys hashing to a and b share a shard (hence a strand): with a
// waiter on each and both drains posted from outside the context, one
// strand runs the second drain only after the first grant's handler, two
// strands run it before.
inline bool same_shard(int shards, std::size_t a, std::size_t b) {
  probe p(shards, a, b);
  auto x = p.sem.try_acquire(0);
  auto y = p.sem.try_acquire(1);
  p.sem.acquire(0, [](boost::system::error_code, permit) {});
  p.sem.acquire(1, [](boost::system::error_code, permit) {});
  p.ctx.poll();
  p.ctx.restart();
  x->release();
  y->release();
  p.ctx.poll_one();  // the first strand's invoker: grants key 0
  p.ctx.poll_one();  // same strand: key 0's handler; two strands: the second invoker
  return p.sem.waiting(1) == 1;
}

// For keys on different shards: whether close() reaches a's shard first (the
// completions of its queued ops are posted in shard order).
inline bool closes_first(int shards, std::size_t a, std::size_t b) {
  probe p(shards, a, b);
  auto x = p.sem.try_acquire(0);
  auto y = p.sem.try_acquire(1);
  int first = -1;
  p.sem.acquire(0, [&](boost::system::error_code, permit) { if (first < 0) first = 0; });
  p.sem.acquire(1, [&](boost::system::error_code, permit) { if (first < 0) first = 1; });
  p.ctx.poll();
  p.sem.close();
  p.ctx.restart();
  p.ctx.poll();
  return first == 0;
}

// Hash values for keys 0..max_model_keys-1 such that key k is on the k % shards'th
// shard in close() order; shards is 1, 2 or 4. Throws if none is found.
inline std::vector<std::size_t> search(int shards) {
  std::vector<std::size_t> found;
  std::size_t candidate = 0;
  for (int k = 0; k < max_model_keys; ++k) {
    for (int tries = 0;; ++tries, ++candidate) {
      if (tries > 10000) throw std::runtime_error("model: shard calibration failed");
      bool fits = true;
      for (int j = 0; j < k && fits; ++j) {
        const bool same = j % shards == k % shards;
        const std::size_t other = found[static_cast<std::size_t>(j)];
        if (same_shard(shards, candidate, other) != same) {
          fits = false;
        } else if (!same && closes_first(shards, other, candidate) != (j % shards < k % shards)) {
          fits = false;
        }
      }
      if (fits) break;
    }
    found.push_back(candidate++);
  }
  return found;
}

}  // namespace calibration

// The calibrated table for a shard count, measured on first use.
inline const std::size_t* calibrated_hashes(int shards) {
  if (shards <= 1) return nullptr;
  static const std::vector<std::size_t> two = calibration::search(2);
  static const std::vector<std::size_t> four = calibration::search(4);
  return shards == 2 ? two.data() : four.data();
}

inline semaphore_options options_of(const config& cfg) {
  semaphore_options o;
  o.shards = static_cast<std::size_t>(cfg.shards);
  if (cfg.max_waiters >= 0) o.max_waiters_per_key = static_cast<std::size_t>(cfg.max_waiters);
  if (cfg.total > 0) o.total_limit = static_cast<std::size_t>(cfg.total);
  return o;
}

using test::counting_allocator;
using alloc_counts = test::allocation_counts;

inline ec_kind classify(const error_code& ec, std::string& problem) {
  if (!ec) return ec_kind::ok;
  if (ec == keysem::error::closed) return ec_kind::closed;
  if (ec == asio::error::operation_aborted) return ec_kind::aborted;
  if (ec == asio::error::invalid_argument) return ec_kind::invalid;
  if (ec == keysem::error::queue_full) return ec_kind::queue_full;
  if (ec == asio::error::timed_out) return ec_kind::timed_out;
  problem += "unexpected error " + ec.message() + "; ";
  return ec_kind::invalid;
}

// What one acquire's handler saw. The driver keeps one reference; the
// handler (or coroutine) holds the other, so use_count() == 1 means the
// handler is gone.
struct record {
  int id = 0;
  int key = 0;
  int n = 1;
  token tok = token::callback;
  handler_action then;
  bool nested = false;
  int calls = 0;
  ec_kind ec = ec_kind::ok;
  int count = 0;
  bool never_started = false;
  bool coro_awaiting = false;
  bool collected = false;
  std::string problem;  // contract violations seen inside the handler
};

class system {
 public:
  explicit system(const config& cfg) : cfg_(cfg) {
    ctx0_.emplace();
    ctx1_.emplace();
    strand_.emplace(asio::make_strand(*ctx0_));  // before the semaphore: see model.hpp
    sem_ = std::make_unique<semaphore>(*ctx0_, static_cast<std::size_t>(cfg.limit), options_of(cfg),
                                       model_hash{calibrated_hashes(cfg.shards)});
  }

  system(const system&) = delete;
  system& operator=(const system&) = delete;

  ~system() {
    // Safe order: nothing may post to a dead context.
    deferred_.clear();
    sem_.reset();
    strand_.reset();
    ctx0_.reset();
    ctx1_.reset();
    table_.clear();
    futures_.clear();
  }

  // Applies a step the model has resolved; returns what a poll ran, or -1.
  long apply(const step& s, const resolved& r) {
    switch (s.what) {
      case kind::acquire:
        start(s.key, s.n, s.tok, s.cancellable, s.then, false, s.dl);
        return -1;
      case kind::defer:
        deferred_.emplace_back(sem_->acquire(s.key, static_cast<std::size_t>(s.n), asio::deferred));
        deferred_args_.emplace_back(s.key, s.n);
        return -1;
      case kind::launch:
        launch(r.index, s.cancellable, s.then);
        return -1;
      case kind::try_acquire:
        last_try_ = try_acquire(s.key, s.n);
        return -1;
      case kind::release: {
        permit p = std::move(table_[static_cast<std::size_t>(r.index)]);
        table_.erase(table_.begin() + r.index);
        p.release();
        if (p) problem_ += "permit not empty after release(); ";
        return -1;
      }
      case kind::cancel:
        emit(r.index, s.type);
        return -1;
      case kind::close:
        sem_->close();
        return -1;
      case kind::destroy_sem:
        destroy_semaphore();
        return -1;
      case kind::poll:
        return run(*ctx0_, false);
      case kind::poll_one:
        return run(*ctx0_, true);
      case kind::poll2:
        return run(*ctx1_, false);
      case kind::poll_one2:
        return run(*ctx1_, true);
      case kind::destroy_ctx:
        strand_.reset();
        ctx0_.reset();
        return -1;
      case kind::destroy_ctx2:
        ctx1_.reset();
        return -1;
      case kind::set_limit:
        sem_->set_limit(s.key, static_cast<std::size_t>(s.n));
        return -1;
      case kind::reset_limit:
        sem_->reset_limit(s.key);
        return -1;
    }
    return -1;
  }

  int last_try() const { return last_try_; }
  // How many times await_timer_report found the kernel's report still due.
  std::size_t late_reports() const { return late_reports_; }

  // Blocks until context 0's reactor will see its expired timers at its next
  // run (see model.hpp): with timerfd, until the kernel has reported the
  // timerfd readable. This is the event itself, not a guess at its timing;
  // the bound only turns a lost report into a failure instead of a hang.
  // Returns a problem, or an empty string.
  std::string await_timer_report() {
    if (!ctx0_) return "await_timer_report: context 0 is gone";
#if defined(KEYSEM_MODEL_TIMERFD)
    if (!asio::has_service<asio::detail::epoll_reactor>(*ctx0_)) {
      return "the model expects a timer but context 0 has no reactor";
    }
    auto& reactor = asio::use_service<asio::detail::epoll_reactor>(*ctx0_);
    const int fd = reactor.*reactor_access::member(reactor_access::timer_fd{});
    if (fd < 0) return {};  // no timerfd: the reactor reads the clock at every run
    pollfd watch{fd, POLLIN, 0};
    if (::poll(&watch, 1, 0) > 0) return {};
    ++late_reports_;  // without this wait, the reactor run would have missed the timer
    for (;;) {
      const int ready = ::poll(&watch, 1, 60'000);
      if (ready > 0) return {};
      if (ready == 0) return "the kernel did not report an expired timer within 60 s";
      if (errno != EINTR) return std::string("poll on the reactor's timerfd: ") + std::strerror(errno);
    }
#else
    return {};  // the reactor reads the clock at every run
#endif
  }

  // The handlers invoked since the last call, in order.
  std::vector<int> take_log() { return std::exchange(log_, {}); }

  // Collects a future the model says is set (or broken). Waits for it: the
  // promise is set on asio's system executor, another thread.
  void collect_future(int id, bool broken) {
    auto& f = futures_[static_cast<std::size_t>(id)];
    record& rec = *ops_[static_cast<std::size_t>(id)].rec;
    if (!f.valid()) {
      rec.problem += "future not valid; ";
      return;
    }
    if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      rec.problem += "future never became ready; ";
      return;
    }
    rec.collected = true;
    try {
      permit p = f.get();
      if (broken) rec.problem += "expected a broken promise, got a value; ";
      ++rec.calls;
      rec.ec = ec_kind::ok;
      rec.count = static_cast<int>(p.count());
      check_permit(rec, p);
      if (p) table_.push_back(std::move(p));
    } catch (const boost::system::system_error& e) {
      if (broken) rec.problem += "expected a broken promise, got an error; ";
      ++rec.calls;
      rec.ec = classify(e.code(), rec.problem);
      rec.count = 0;
    } catch (const std::future_error& e) {
      if (!broken) rec.problem += std::string("unexpected future_error: ") + e.what() + "; ";
      rec.never_started = false;
    }
  }

  // A future the model says is not set yet must not be ready.
  void check_future_pending(int id) {
    auto& f = futures_[static_cast<std::size_t>(id)];
    if (f.valid() && f.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      ops_[static_cast<std::size_t>(id)].rec->problem += "future ready before the model posted its result; ";
    }
  }

  observation observe() const {
    observation obs;
    obs.sem_alive = sem_ != nullptr;
    if (sem_) {
      obs.closed = sem_->is_closed();
      obs.key_count = sem_->key_count();
      for (int k = 0; k < cfg_.keys; ++k) {
        obs.in_use.push_back(sem_->in_use(k));
        obs.available.push_back(sem_->available(k));
        obs.waiting.push_back(sem_->waiting(k));
        obs.limit.push_back(sem_->limit(k));
      }
      obs.total_in_use = sem_->total_in_use();
      obs.total_waiting = sem_->total_waiting();
      const semaphore_stats st = sem_->stats();
      obs.stats = {st.granted_immediately, st.granted_after_wait, st.try_failed, st.cancelled, st.timed_out,
                   st.rejected_queue_full, st.rejected_closed, st.invalid_argument, st.keys, st.waiting,
                   st.in_use};
    }
    for (const real_op& o : ops_) {
      op_view v;
      const record& rec = *o.rec;
      v.observable = rec.tok != token::detached;
      if (rec.tok == token::future) {
        if (rec.collected) {
          v.f = rec.calls != 0 ? fate::completed : fate::destroyed;
        } else {
          v.f = fate::pending;
        }
      } else if (rec.never_started) {
        v.f = fate::never_started;
      } else if (rec.calls != 0) {
        v.f = fate::completed;
      } else if (o.rec.use_count() == 1) {
        v.f = fate::destroyed;
      } else {
        v.f = fate::pending;
      }
      if (v.f == fate::completed) {
        v.ec = rec.ec;
        v.count = rec.count;
      }
      obs.ops.push_back(v);
    }
    for (const permit& p : table_) {
      obs.table.emplace_back(p ? p.key() : -1, static_cast<int>(p.count()));
    }
    return obs;
  }

  // Contract violations seen so far (inside handlers or by the driver).
  std::string problems() const {
    std::string all = problem_;
    for (const real_op& o : ops_) {
      if (!o.rec->problem.empty()) all += "op #" + std::to_string(o.rec->id) + ": " + o.rec->problem;
      if (o.rec->calls > 1) all += "op #" + std::to_string(o.rec->id) + ": handler invoked twice; ";
    }
    return all;
  }

  // At the very end: every slot cleared, every op's memory given back.
  std::string final_problems() const {
    std::string all;
    for (const real_op& o : ops_) {
      // (co_spawn owns a coroutine's slot and leaves its own handler there.)
      if (o.signal && !is_coroutine(o.rec->tok) && o.signal->slot().has_handler()) {
        all += "op #" + std::to_string(o.rec->id) + ": cancellation slot not cleared; ";
      }
      if (o.counts && o.counts->allocations != o.counts->deallocations) {
        all += "op #" + std::to_string(o.rec->id) + ": " + std::to_string(o.counts->allocations) +
               " allocations, " + std::to_string(o.counts->deallocations) + " deallocations; ";
      }
    }
    return all;
  }

 private:
  struct real_op {
    std::shared_ptr<record> rec;
    std::unique_ptr<asio::cancellation_signal> signal;
    std::unique_ptr<alloc_counts> counts;
  };

  struct handler {
    system* sys;
    std::shared_ptr<record> rec;
    void operator()(error_code ec, permit p) { sys->on_complete(*rec, ec, std::move(p)); }
    void operator()(std::tuple<error_code, permit> result) {
      sys->on_complete(*rec, std::get<0>(result), std::move(std::get<1>(result)));
    }
  };

  using deferred_type = decltype(std::declval<semaphore&>().acquire(0, std::size_t{1}, asio::deferred));

  static long run(asio::io_context& ctx, bool one) {
    // A context whose work count fell to zero stops itself (asio); the
    // driver always restarts it, as a server's loop would.
    if (ctx.stopped()) ctx.restart();
    const std::size_t ran = one ? ctx.poll_one() : ctx.poll();
    if (ctx.stopped()) ctx.restart();
    return static_cast<long>(ran);
  }

  int try_acquire(int key, int n) {
    try {
      auto p = sem_->try_acquire(key, static_cast<std::size_t>(n));
      if (!p) return 0;
      const int count = static_cast<int>(p->count());
      if (p->key() != key) problem_ += "try_acquire: permit on the wrong key; ";
      table_.push_back(std::move(*p));
      return count;
    } catch (const std::invalid_argument&) {
      return -1;
    }
  }

  real_op& new_op(int key, int n, token tok, bool cancellable, const handler_action& then, bool nested) {
    real_op o;
    o.rec = std::make_shared<record>();
    o.rec->id = static_cast<int>(ops_.size());
    o.rec->key = key;
    o.rec->n = n;
    o.rec->tok = tok;
    o.rec->then = then;
    o.rec->nested = nested;
    if (cancellable && tok != token::future && tok != token::detached) {
      o.signal = std::make_unique<asio::cancellation_signal>();
    }
    if (tok == token::alloc) {
      o.counts = std::make_unique<alloc_counts>();
    }
    ops_.push_back(std::move(o));
    futures_.emplace_back();
    return ops_.back();
  }

  // Calls f with the handler, bound to the op's cancellation slot if it has one.
  template <class F>
  static void with_slot(real_op& o, handler h, F&& f) {
    if (o.signal) {
      f(asio::bind_cancellation_slot(o.signal->slot(), std::move(h)));
    } else {
      f(std::move(h));
    }
  }

  // acquire(k, c, token), acquire_until(k, c, at, token), or
  // acquire_for(k, c, 24h, token).
  struct acquirer {
    enum class form { plain, until, for_a_day } how;
    semaphore* sem;
    std::chrono::steady_clock::time_point at;
    template <class Token>
    decltype(auto) operator()(int k, std::size_t c, Token&& t) const {
      if (how == form::until) return sem->acquire_until(k, c, at, std::forward<Token>(t));
      if (how == form::for_a_day) return sem->acquire_for(k, c, std::chrono::hours(24), std::forward<Token>(t));
      return sem->acquire(k, c, std::forward<Token>(t));
    }
  };

  void start(int key, int n, token tok, bool cancellable, const handler_action& then, bool nested,
             deadline dl = deadline::none) {
    real_op& o = new_op(key, n, tok, cancellable, then, nested);
    const auto count = static_cast<std::size_t>(n);
    const bool timed = dl != deadline::none && !is_coroutine(tok);
    // Every other later deadline goes through acquire_for, which takes the
    // time when the operation is launched: after the ones taken before it,
    // before the ones taken after it (deadline_of bumps those past it).
    const bool for_a_day = timed && dl == deadline::later && o.rec->id % 2 == 1;
    using form = acquirer::form;
    const acquirer acquire{timed ? (for_a_day ? form::for_a_day : form::until) : form::plain, sem_.get(),
                           timed && !for_a_day ? deadline_of(dl) : std::chrono::steady_clock::time_point{}};
    struct bump_later {
      system* sys;
      bool active;
      ~bump_later() {
        if (active) sys->last_later_ = std::max(sys->last_later_, std::chrono::steady_clock::now() + std::chrono::hours(24));
      }
    } bump{this, for_a_day};
    handler h{this, o.rec};
    switch (tok) {
      case token::callback:
      case token::deferred:
        with_slot(o, std::move(h), [&](auto&& bound) { acquire(key, count, std::move(bound)); });
        break;
      case token::tuple:
        with_slot(o, std::move(h), [&](auto&& bound) { acquire(key, count, asio::as_tuple(std::move(bound))); });
        break;
      case token::strand:
        with_slot(o, std::move(h), [&](auto&& bound) {
          acquire(key, count, asio::bind_executor(*strand_, std::move(bound)));
        });
        break;
      case token::ctx2:
        with_slot(o, std::move(h), [&](auto&& bound) {
          acquire(key, count, asio::bind_executor(ctx1_->get_executor(), std::move(bound)));
        });
        break;
      case token::alloc: {
        alloc_counts& counts = *o.counts;
        with_slot(o, std::move(h), [&](auto&& bound) {
          acquire(key, count, asio::bind_allocator(counting_allocator<void>(counts), std::move(bound)));
        });
        break;
      }
      case token::coro:
      case token::awaitable:
        spawn(o);
        break;
      case token::future:
        futures_.back() = acquire(key, count, asio::use_future);
        break;
      case token::detached:
        acquire(key, count, asio::detached);
        break;
    }
  }

  void spawn(real_op& o) {
    auto body = [this, rec = o.rec]() -> asio::awaitable<void> {
      if (!sem_) {
        rec->never_started = true;
        co_return;
      }
      // Cleared on resumption, and also when the suspended frame is
      // destroyed with its context.
      struct awaiting_flag {
        record* r;
        explicit awaiting_flag(record* rec) : r(rec) { r->coro_awaiting = true; }
        ~awaiting_flag() { r->coro_awaiting = false; }
      };
      std::optional<awaiting_flag> awaiting(std::in_place, rec.get());
      error_code ec;
      permit p;
      if (rec->tok == token::awaitable) {
        try {
          p = co_await sem_->acquire(rec->key, static_cast<std::size_t>(rec->n));
        } catch (const boost::system::system_error& e) {
          ec = e.code();
        }
      } else {
        std::tie(ec, p) = co_await sem_->acquire(rec->key, static_cast<std::size_t>(rec->n),
                                                 asio::as_tuple(asio::use_awaitable));
      }
      awaiting.reset();
      on_complete(*rec, ec, std::move(p));
    };
    if (o.signal) {
      asio::co_spawn(*ctx0_, std::move(body), asio::bind_cancellation_slot(o.signal->slot(), asio::detached));
    } else {
      asio::co_spawn(*ctx0_, std::move(body), asio::detached);
    }
  }

  void launch(int index, bool cancellable, const handler_action& then) {
    auto& d = deferred_[static_cast<std::size_t>(index)];
    deferred_type op = std::move(*d);
    d.reset();
    // The deferred op knows its key and count; the record needs them too.
    const auto [key, n] = deferred_args_[static_cast<std::size_t>(index)];
    real_op& o = new_op(key, n, token::deferred, cancellable, then, false);
    handler h{this, o.rec};
    with_slot(o, std::move(h), [&](auto&& bound) { std::move(op)(std::move(bound)); });
  }

  void emit(int id, sig type) {
    auto& o = ops_[static_cast<std::size_t>(id)];
    switch (type) {
      case sig::none: o.signal->emit(asio::cancellation_type::none); break;
      case sig::terminal: o.signal->emit(asio::cancellation_type::terminal); break;
      case sig::partial: o.signal->emit(asio::cancellation_type::partial); break;
      case sig::total: o.signal->emit(asio::cancellation_type::total); break;
      case sig::all: o.signal->emit(asio::cancellation_type::all); break;
    }
  }

  int cancel_target(int pick) const {
    std::vector<int> candidates;
    for (const real_op& o : ops_) {
      if (!o.signal) continue;
      if (is_coroutine(o.rec->tok) && !o.rec->coro_awaiting) continue;
      candidates.push_back(o.rec->id);
    }
    if (candidates.empty()) return -1;
    return candidates[static_cast<std::size_t>(pick) % candidates.size()];
  }

  void destroy_semaphore() {
    deferred_.clear();  // they point at the semaphore; the model never launches them now
    sem_.reset();
  }

  void check_permit(record& rec, const permit& p) {
    if (rec.ec == ec_kind::ok) {
      if (!p) {
        rec.problem += "success without a permit; ";
      } else if (p.key() != rec.key || static_cast<int>(p.count()) != rec.n) {
        rec.problem += "permit for the wrong key or count; ";
      }
    } else if (p) {
      rec.problem += "an error with a permit; ";
    }
  }

  static bool is_coroutine(token t) { return t == token::coro || t == token::awaitable; }

  // now() - 1h or now() + 24h, strictly later than the last deadline of its
  // kind: the model orders a shard's deadline heap (and the timers of
  // several shards) by the order the deadlines were taken, every past one
  // before every later one.
  std::chrono::steady_clock::time_point deadline_of(deadline dl) {
    using clock = std::chrono::steady_clock;
    const bool past = dl == deadline::past;
    auto& last = past ? last_past_ : last_later_;
    auto at = past ? clock::now() - std::chrono::hours(1) : clock::now() + std::chrono::hours(24);
    if (at <= last) at = last + std::chrono::nanoseconds(1);
    last = at;
    return at;
  }

  void on_complete(record& rec, error_code ec, permit p) {
    log_.push_back(rec.id);
    ++rec.calls;
    rec.ec = classify(ec, rec.problem);
    rec.count = static_cast<int>(p.count());
    check_permit(rec, p);
    const real_op& o = ops_[static_cast<std::size_t>(rec.id)];
    if (o.counts && o.counts->allocations != o.counts->deallocations) {
      rec.problem += "op memory not freed before the upcall; ";
    }
    const handler_action then = rec.nested ? handler_action{} : rec.then;
    if (then.what == act::drop) {
      return;  // p goes at the end of the handler
    }
    if (p) table_.push_back(std::move(p));
    switch (then.what) {
      case act::release_oldest:
        if (!table_.empty()) {
          permit oldest = std::move(table_.front());
          table_.erase(table_.begin());
          oldest.release();
        }
        break;
      case act::acquire:
        if (sem_ && ctx0_) start(then.key, then.n, token::callback, false, {}, true);
        break;
      case act::try_acquire:
        if (sem_) try_acquire(then.key, then.n);
        break;
      case act::cancel:
        if (const int target = cancel_target(then.target); target >= 0) emit(target, then.type);
        break;
      case act::close:
        if (sem_) sem_->close();
        break;
      case act::destroy_sem:
        if (sem_) destroy_semaphore();
        break;
      default:
        break;
    }
  }

  config cfg_;
  std::optional<asio::io_context> ctx0_;
  std::optional<asio::io_context> ctx1_;
  std::optional<asio::strand<asio::io_context::executor_type>> strand_;
  std::unique_ptr<semaphore> sem_;
  std::vector<real_op> ops_;
  std::vector<std::future<permit>> futures_;  // one per op; valid for use_future ops
  std::vector<permit> table_;
  std::vector<std::optional<deferred_type>> deferred_;
  std::vector<std::pair<int, int>> deferred_args_;  // (key, n) of each deferred op
  std::string problem_;
  std::vector<int> log_;
  int last_try_ = 0;
  std::size_t late_reports_ = 0;
  std::chrono::steady_clock::time_point last_past_ = std::chrono::steady_clock::time_point::min();
  std::chrono::steady_clock::time_point last_later_ = std::chrono::steady_clock::time_point::min();
};

}  // namespace keysem::model

#endif
