// The fleet semaphore's engine: see keysem/redis/detail/fleet_core.hpp and
// docs/fleet.md. Decisions come from the scripts' verdicts (scripts.cpp) and
// the lease state machine (lease.hpp); this file only applies them.
#include <keysem/redis/detail/fleet_core.hpp>
#include <keysem/redis/error.hpp>

// GCC 12 flags asio's awaitable frames, which have class-specific operator
// new/delete, with a false -Wmismatched-new-delete at the end of every
// coroutine (GCC PR 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <limits>
#include <new>
#include <stdexcept>

namespace keysem::redis::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool cancelled(const asio::cancellation_state& state) {
  return state.cancelled() != asio::cancellation_type::none;
}

template <class Handler, class... Args>
void post_to_handler(Handler h, const asio::any_io_executor& fallback, Args... args) {
  // Posted to the fallback first (never inline), then dispatched to the
  // handler's own executor: an any_completion_executor cannot be required
  // to be non-blocking.
  auto ex = asio::get_associated_executor(h, fallback);
  asio::post(fallback, asio::bind_executor(ex, [h = std::move(h), ... args = std::move(args)]() mutable {
                         std::move(h)(std::move(args)...);
                       }));
}

// What an exception escaping an acquire coroutine is reported as.
error_code failure_code(const std::exception_ptr& failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const boost::system::system_error& e) {
    return e.code();
  } catch (const std::bad_alloc&) {
    return asio::error::no_memory;
  } catch (...) {
    return make_error_code(error::protocol);
  }
}

}  // namespace

// --- lease waiters -------------------------------------------------------

void finish_waiters(lease_record& record, error_code ec) {
  std::list<std::pair<std::uint64_t, loss_handler>> parked;
  {
    std::lock_guard lock(record.mutex);
    record.finished = true;
    parked.swap(record.waiters);
  }
  for (auto& [id, h] : parked) {
    post_to_handler(std::move(h), record.default_executor, ec);
  }
}

void start_wait_lost(const std::shared_ptr<lease_record>& record, loss_handler h) {
  if (!record) {
    return post_to_handler(std::move(h), asio::any_io_executor(asio::system_executor()),
                           error_code(asio::error::operation_aborted));
  }
  std::unique_lock lock(record->mutex);
  if (record->finished) {
    lock.unlock();
    const error_code ec = record->lost.load() ? error_code() : error_code(asio::error::operation_aborted);
    return post_to_handler(std::move(h), record->default_executor, ec);
  }
  const auto id = record->next_waiter++;
  auto slot = asio::get_associated_cancellation_slot(h);
  record->waiters.emplace_back(id, std::move(h));
  lock.unlock();
  if (slot.is_connected()) {
    slot.assign([weak = std::weak_ptr<lease_record>(record), id](asio::cancellation_type) {
      auto rec = weak.lock();
      if (!rec) return;
      std::unique_lock lock(rec->mutex);
      auto it = std::find_if(rec->waiters.begin(), rec->waiters.end(),
                             [id](const auto& w) { return w.first == id; });
      if (it == rec->waiters.end()) return;
      std::list<std::pair<std::uint64_t, loss_handler>> taken;
      taken.splice(taken.begin(), rec->waiters, it);
      lock.unlock();
      post_to_handler(std::move(taken.front().second), rec->default_executor,
                      error_code(asio::error::operation_aborted));
    });
  }
}

// --- construction --------------------------------------------------------

fleet_options resolve(fleet_options o) {
  if (o.lease.count() <= 0) throw std::invalid_argument("keysem::redis: fleet_options::lease must be positive");
  if (o.safety_margin.count() <= 0) o.safety_margin = o.lease / 10;
  if (o.safety_margin >= o.lease) {
    throw std::invalid_argument("keysem::redis: fleet_options::safety_margin must be less than lease");
  }
  if (o.request_timeout.count() <= 0) o.request_timeout = std::min<milliseconds>(o.lease / 3, milliseconds(2000));
  if (o.request_timeout.count() <= 0) o.request_timeout = milliseconds(1);
  if (o.reconnect_min.count() <= 0) o.reconnect_min = milliseconds(1);
  if (o.reconnect_max < o.reconnect_min) o.reconnect_max = o.reconnect_min;
  if (o.fallback_poll.count() <= 0) o.fallback_poll = milliseconds(2000);
  if (o.default_limit_ttl.count() <= 0) o.default_limit_ttl = std::chrono::hours(1);
  if (o.prefix.empty()) throw std::invalid_argument("keysem::redis: fleet_options::prefix must not be empty");
  if (o.replicas < 0) throw std::invalid_argument("keysem::redis: fleet_options::replicas must not be negative");
  if (o.replica_timeout.count() <= 0) o.replica_timeout = std::max<milliseconds>(o.request_timeout / 2, milliseconds(1));
  if (o.replicas > 0 && o.replica_timeout >= o.request_timeout) {
    throw std::invalid_argument("keysem::redis: fleet_options::replica_timeout must be less than request_timeout");
  }
  return o;
}

std::shared_ptr<fleet_core> fleet_core::create(asio::any_io_executor ex, endpoint server,
                                               std::size_t permits, fleet_options options) {
  std::shared_ptr<fleet_core> core(
      new fleet_core(std::move(ex), std::move(server), permits, resolve(std::move(options))));
  core->start();
  return core;
}

fleet_core::fleet_core(asio::any_io_executor ex, endpoint server, std::size_t permits,
                       fleet_options options)
    : executor_(std::move(ex)),
      strand_(asio::make_strand(executor_)),
      permits_(permits),
      options_(std::move(options)),
      // The local stage runs on its own strands, over the plain executor:
      // its completions reach the acquire coroutine by a post, never nested
      // inside the core's strand.
      stage_(std::make_shared<keysem::keyed_semaphore>(executor_, permits)),
      local_(*stage_),
      refresh_timer_(strand_) {
  std::random_device seed;
  const std::uint64_t hi = seed(), lo = seed();
  client_id_ = std::to_string((hi << 32) | lo);
  jitter_.seed(static_cast<std::uint32_t>(lo));
  connection::config cfg;
  cfg.server = std::move(server);
  cfg.request_timeout = options_.request_timeout;
  cfg.reconnect_min = options_.reconnect_min;
  cfg.reconnect_max = options_.reconnect_max;
  auto counters = counters_;
  cfg.on_round_trip = [counters] { ++counters->round_trips; };
  cfg.on_connected = [counters] { ++counters->reconnects; };
  commands_ = std::make_shared<connection>(strand_, cfg);
  subscriber_config_ = std::move(cfg);
}

void fleet_core::start() {
  // The subscriber's callbacks hold the core weakly: a connection must not
  // keep its owner alive.
  std::weak_ptr<fleet_core> weak = shared_from_this();
  auto cfg = std::move(subscriber_config_);
  cfg.subscriber = true;
  // A silently dead subscriber would leave waiters to the expiry hint: it
  // is checked at the refresher's pace.
  cfg.heartbeat = options_.lease / 3;
  cfg.on_round_trip = {};
  cfg.on_push = [weak](const reply& message) {
    if (auto self = weak.lock()) self->on_push(message);
  };
  cfg.on_connected = [weak] {
    if (auto self = weak.lock()) self->on_subscriber_connected();
  };
  subscriber_ = std::make_shared<connection>(strand_, std::move(cfg));
}

// --- acquire -------------------------------------------------------------

void fleet_core::acquire(std::string key, std::size_t n, std::optional<steady_time> deadline,
                         bool try_only, acquire_handler handler) {
  // The caller's cancellation slot forwards into the coroutine, on the strand.
  auto signal = std::make_shared<asio::cancellation_signal>();
  auto slot = asio::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) {
    slot.assign([signal, strand = strand_](asio::cancellation_type type) {
      asio::post(strand, [signal, type] { signal->emit(type); });
    });
  }
  auto work = asio::prefer(asio::get_associated_executor(handler, executor_),
                           asio::execution::outstanding_work.tracked);
  const auto count = n > std::numeric_limits<std::uint32_t>::max()
                         ? std::uint32_t{0}
                         : static_cast<std::uint32_t>(n);
  auto self = shared_from_this();
  asio::co_spawn(
      strand_, run_acquire(std::move(key), count, deadline, try_only),
      asio::bind_cancellation_slot(
          signal->slot(),
          [self, signal, slot, work = std::move(work), h = std::move(handler)](
              std::exception_ptr failure, outcome result) mutable {
            if (slot.is_connected()) slot.clear();
            if (failure) result = outcome{failure_code(failure), {}};
            if (result.ec) ++self->counters_->failed;
            post_to_handler(std::move(h), self->executor_, result.ec, std::move(result.permit));
          }));
}

asio::awaitable<fleet_core::outcome> fleet_core::run_acquire(std::string key, std::uint32_t n,
                                                             std::optional<steady_time> deadline,
                                                             bool try_only) {
  // Every cancellation type is honoured; cancellation is reported through
  // error codes, never as an exception out of an await.
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto state = co_await asio::this_coro::cancellation_state;
  if (closed_) co_return outcome{make_error_code(error::closed), {}};
  if (n == 0 || n > keysem::keyed_semaphore::max_permits_per_key) co_return outcome{asio::error::invalid_argument, {}};
  if (cancelled(state)) co_return outcome{asio::error::operation_aborted, {}};

  // The local stage: only the head waiters of a key go on to Redis.
  keysem::keyed_semaphore::permit local;
  if (try_only) {
    if (n > local_.limit(key)) co_return outcome{asio::error::invalid_argument, {}};
    auto taken = local_.try_acquire(key, n);
    if (!taken) {
      ++counters_->busy;
      co_return outcome{closed_ ? make_error_code(error::closed) : error_code(), {}};
    }
    local = std::move(*taken);
  } else {
    // Two plain statements, not `deadline ? co_await a : co_await b`: GCC 12
    // destroys the temporaries of co_await inside a conditional twice, which
    // released the local permit a second time.
    std::tuple<error_code, keysem::keyed_semaphore::permit> got;
    if (deadline) {
      got = co_await local_.acquire_until(key, n, *deadline, use_tuple);
    } else {
      got = co_await local_.acquire(key, n, use_tuple);
    }
    error_code ec = std::get<0>(got);
    if (ec == keysem::error::closed) ec = error::closed;
    if (ec) co_return outcome{ec, {}};
    local = std::move(std::get<1>(got));
  }

  // The key stays subscribed from the first busy answer until this acquire
  // is done: a waiter that loses a race retries without resubscribing, and
  // a release during any of its scripts is noticed.
  bool interested = false;
  outcome result;
  try {
    result = co_await acquire_remote(key, n, deadline, try_only, std::move(local), interested);
  } catch (...) {
    if (interested) drop_interest(key);
    throw;
  }
  if (interested) drop_interest(key);
  co_return result;
}

asio::awaitable<fleet_core::outcome> fleet_core::acquire_remote(
    const std::string& key, std::uint32_t n, std::optional<steady_time> deadline, bool try_only,
    keysem::keyed_semaphore::permit local, bool& interested) {
  const auto state = co_await asio::this_coro::cancellation_state;
  bool waited = false;
  for (;;) {
    if (closed_) co_return outcome{make_error_code(error::closed), {}};
    if (cancelled(state)) co_return outcome{asio::error::operation_aborted, {}};
    const std::string id = next_id();
    const auto epoch = epoch_of(key);
    const auto sent = steady::now();
    const auto names = names_for(options_.prefix, key);
    auto [ec, r] = co_await call(script::acquire,
                                 acquire_args(names, id, n, options_.lease.count(),
                                              static_cast<std::uint32_t>(permits_),
                                              options_.default_limit_ttl.count()));
    if (ec == asio::error::operation_aborted) {
      // Sent, outcome unknown: give the id back whatever the script did,
      // and withdraw it in case the acquire runs after this release.
      send_release(key, id, n, options_.lease.count());
      co_return outcome{ec, {}};
    }
    if (ec) {
      ++counters_->redis_errors;
      co_return outcome{ec, {}};
    }
    const auto result = parse_acquire(r);
    switch (result.outcome) {
      case acquire_result::kind::granted:
        adopt_limit(key, result.limit);
        if (options_.replicas > 0) {
          if (const auto unconfirmed = co_await confirm_replicated(key, id, n)) {
            co_return outcome{unconfirmed, {}};
          }
        }
        if (waited) ++counters_->waited;
        co_return grant(key, id, n, result.fence, sent, std::move(local));
      case acquire_result::kind::limit_mismatch:
        co_return outcome{make_error_code(error::limit_mismatch), {}};
      case acquire_result::kind::too_many:
        co_return outcome{asio::error::invalid_argument, {}};
      case acquire_result::kind::withdrawn:  // only an abandoned id is withdrawn
      case acquire_result::kind::malformed:
        ++counters_->redis_errors;
        co_return outcome{make_error_code(error::protocol), {}};
      case acquire_result::kind::busy:
        break;
    }
    adopt_limit(key, result.limit);
    if (try_only) {
      ++counters_->busy;
      co_return outcome{};
    }
    waited = true;
    // A key subscribed just now wakes this waiter with the confirmation,
    // which covers a release published before the subscription took
    // effect. A key already watched (by this acquire's last try, or by
    // another acquire of this process) may have seen a release while the
    // script ran.
    const bool subscribing = !interested && add_interest(key);
    interested = true;
    if (!subscribing && epoch_of(key) != epoch) continue;
    const auto woke = co_await wait_for_turn(key, result.wait_ms, deadline);
    if (woke) co_return outcome{woke, {}};
  }
}

// One request on the command connection: a keysem script, or (no script)
// a plain command.
asio::awaitable<fleet_core::reply_tuple> fleet_core::call(std::optional<script> s,
                                                          std::vector<std::string> args) {
  auto initiation = [this](auto handler, std::optional<script> which, std::vector<std::string> arguments) {
    using handler_type = decltype(handler);
    // Whichever comes first, reply or cancellation, takes the handler.
    struct pending_call {
      std::optional<handler_type> h;
      asio::cancellation_slot slot;
    };
    auto shared = std::make_shared<pending_call>();
    shared->slot = asio::get_associated_cancellation_slot(handler);
    shared->h.emplace(std::move(handler));
    if (shared->slot.is_connected()) {
      shared->slot.assign([shared, strand = strand_](asio::cancellation_type) {
        if (!shared->h) return;
        auto h = std::move(*shared->h);
        shared->h.reset();
        asio::post(strand, [h = std::move(h)]() mutable {
          std::move(h)(error_code(asio::error::operation_aborted), reply{});
        });
      });
    }
    auto done = [shared](error_code ec, reply r) {
      if (!shared->h) return;
      if (shared->slot.is_connected()) shared->slot.clear();
      auto h = std::move(*shared->h);
      shared->h.reset();
      std::move(h)(ec, std::move(r));
    };
    if (which) {
      commands_->eval(*which, arguments, std::move(done));
    } else {
      commands_->execute(arguments, std::move(done));
    }
  };
  co_return co_await asio::async_initiate<decltype(use_tuple), void(error_code, reply)>(
      initiation, use_tuple, s, std::move(args));
}

// WAIT for the replicas fleet_options asks for. Anything short of that
// (fewer acknowledgements, an error, a cancellation) gives the grant back.
asio::awaitable<error_code> fleet_core::confirm_replicated(const std::string& key, const std::string& id,
                                                           std::uint32_t n) {
  std::vector<std::string> wait{"WAIT", std::to_string(options_.replicas),
                                std::to_string(options_.replica_timeout.count())};
  auto [ec, r] = co_await call(std::nullopt, std::move(wait));
  const bool integer = !ec && r.type == reply::kind::integer;
  if (integer && r.integer >= options_.replicas) co_return error_code();
  send_release(key, id, n);
  if (ec == asio::error::operation_aborted) co_return ec;
  if (ec || !integer) {
    ++counters_->redis_errors;
    co_return ec ? ec : make_error_code(error::protocol);
  }
  ++counters_->not_replicated;
  co_return make_error_code(error::not_replicated);
}

asio::awaitable<error_code> fleet_core::wait_for_turn(const std::string& key, std::int64_t hint_ms,
                                                      std::optional<steady_time> deadline) {
  const auto now = steady::now();
  if (deadline && now >= *deadline) co_return asio::error::timed_out;
  // Retry at the earliest expiry the script saw, or at the jittered
  // fallback, or at the deadline; a release message comes sooner.
  std::uniform_int_distribution<std::int64_t> spread(0, options_.fallback_poll.count() / 2);
  auto at = now + options_.fallback_poll + milliseconds(spread(jitter_));
  at = std::min(at, now + milliseconds(std::max<std::int64_t>(hint_ms, 0) + 1));
  if (deadline) at = std::min(at, *deadline);
  asio::steady_timer timer(strand_, at);
  add_waiter(key, &timer);
  co_await timer.async_wait(use_tuple);
  remove_waiter(key, &timer);
  if (cancelled(co_await asio::this_coro::cancellation_state)) co_return asio::error::operation_aborted;
  if (closed_) co_return make_error_code(error::closed);
  if (deadline && steady::now() >= *deadline) co_return asio::error::timed_out;
  co_return error_code();
}

fleet_core::outcome fleet_core::grant(const std::string& key, const std::string& id, std::uint32_t n,
                                      std::uint64_t fence, steady_time sent,
                                      keysem::keyed_semaphore::permit local) {
  auto record = std::make_shared<lease_record>(key, id, n, fence,
                                               lease_fsm(sent, options_.lease, options_.safety_margin),
                                               executor_);
  leases_.push_back(record);
  ++counters_->granted;
  ++counters_->held;
  schedule_refresh(steady::now());
  return outcome{{}, permit_factory::make(std::move(record), weak_from_this(), stage_, std::move(local))};
}

void fleet_core::adopt_limit(const std::string& key, std::int64_t limit) {
  // Every replica's local stage follows the limit stored in Redis. Keys
  // whose local limit was overridden are tracked here, so the common case
  // (the default limit) costs one set lookup.
  if (limit <= 0 || static_cast<std::uint64_t>(limit) > keysem::keyed_semaphore::max_permits_per_key) return;
  const auto wanted = static_cast<std::size_t>(limit);
  auto it = overridden_.find(key);
  if (wanted == permits_) {
    if (it == overridden_.end()) return;
    overridden_.erase(it);
    local_.reset_limit(key);
  } else if (it == overridden_.end() || it->second != wanted) {
    overridden_[key] = wanted;
    local_.set_limit(key, wanted);
  }
}

void fleet_core::send_release(const std::string& key, const std::string& id, std::uint32_t n,
                              std::int64_t withdraw_ms) {
  commands_->eval(script::release, release_args(names_for(options_.prefix, key), id, n, withdraw_ms),
                  [counters = counters_](error_code ec, const reply&) {
                    if (ec && ec != asio::error::operation_aborted) ++counters->redis_errors;
                  });
}

std::string fleet_core::next_id() { return client_id_ + ":" + std::to_string(++next_id_); }

// --- waiting keys and the subscriber ---------------------------------------

bool fleet_core::add_interest(const std::string& key) {
  auto [it, fresh] = waiting_.try_emplace(key);
  ++it->second.interested;
  if (fresh) {
    it->second.epoch = ++epochs_;
    // Not yet connected: once it is, it subscribes every waiting key.
    if (subscriber_->is_connected()) {
      subscriber_->send({"SUBSCRIBE", names_for(options_.prefix, key).channel});
    }
    subscriber_->keep_connected(true);
  }
  return fresh;
}

void fleet_core::drop_interest(const std::string& key) {
  auto it = waiting_.find(key);
  if (it == waiting_.end() || --it->second.interested != 0) return;
  waiting_.erase(it);
  if (subscriber_->is_connected()) {
    subscriber_->send({"UNSUBSCRIBE", names_for(options_.prefix, key).channel});
  }
  if (waiting_.empty()) subscriber_->keep_connected(false);
}

// The acquire holds an interest in the key, so its entry exists.
void fleet_core::add_waiter(const std::string& key, asio::steady_timer* timer) {
  waiting_[key].timers.push_back(timer);
}

void fleet_core::remove_waiter(const std::string& key, asio::steady_timer* timer) {
  auto it = waiting_.find(key);
  if (it == waiting_.end()) return;
  auto& timers = it->second.timers;
  timers.erase(std::remove(timers.begin(), timers.end(), timer), timers.end());
}

std::uint64_t fleet_core::epoch_of(const std::string& key) const {
  auto it = waiting_.find(key);
  return it == waiting_.end() ? 0 : it->second.epoch;
}

void fleet_core::wake(const std::string& key) {
  auto it = waiting_.find(key);
  if (it == waiting_.end()) return;
  it->second.epoch = ++epochs_;
  for (auto* timer : it->second.timers) timer->cancel();
}

void fleet_core::wake_all() {
  for (auto& [key, entry] : waiting_) {
    entry.epoch = ++epochs_;
    for (auto* timer : entry.timers) timer->cancel();
  }
}

void fleet_core::on_push(const reply& message) {
  // ["message", channel, payload] after a release or a raised limit;
  // ["subscribe", channel, count] once subscribed: a release published
  // before the subscription took effect would be missed, so retry then too.
  if (message.type != reply::kind::array || message.elements.size() < 3) return;
  const auto& kind = message.elements[0].str;
  if (kind != "message" && kind != "subscribe") return;
  const auto key = key_of_channel(options_.prefix, message.elements[1].str);
  if (kind == "message") ++counters_->wakeups;
  wake(key);
}

void fleet_core::on_subscriber_connected() {
  // Messages published while the subscriber was away are lost: subscribe
  // again and let every waiting key retry.
  for (const auto& [key, entry] : waiting_) {
    subscriber_->send({"SUBSCRIBE", names_for(options_.prefix, key).channel});
  }
  wake_all();
}

// --- refresher -------------------------------------------------------------

void fleet_core::schedule_refresh(steady_time now) {
  if (leases_.empty()) {
    refresh_timer_.cancel();
    refresh_armed_ = false;
    return;
  }
  auto at = now + options_.lease / 3;
  for (const auto& record : leases_) at = std::min(at, record->fsm.deadline());
  if (refresh_armed_ && refresh_timer_.expiry() <= at) return;
  refresh_armed_ = true;
  refresh_timer_.expires_at(at);
  refresh_timer_.async_wait([weak = weak_from_this()](error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->refresh_tick();
  });
}

void fleet_core::refresh_tick() {
  refresh_armed_ = false;
  const auto now = steady::now();
  // One pipelined batch: every refresh is queued before the first write.
  for (const auto& record : std::vector(leases_)) {
    if (record->fsm.expire_if_due(now)) {
      mark_lost(record, true);
    } else if (record->fsm.begin_refresh(now)) {
      commands_->eval(script::refresh,
                      refresh_args(names_for(options_.prefix, record->key), record->id, record->n,
                                   options_.lease.count()),
                      [weak = weak_from_this(), record](error_code ec, const reply& r) {
                        if (auto self = weak.lock()) self->on_refreshed(record, ec, r);
                      });
    }
  }
  schedule_refresh(now);
}

void fleet_core::on_refreshed(const std::shared_ptr<lease_record>& record, error_code ec,
                              const reply& r) {
  auto verdict = lease_fsm::reply::failed;
  if (ec) {
    if (ec != asio::error::operation_aborted) ++counters_->redis_errors;
  } else {
    const auto parsed = parse_refresh(r);
    if (parsed == refresh_result::extended) verdict = lease_fsm::reply::extended;
    if (parsed == refresh_result::lost) verdict = lease_fsm::reply::lost;
  }
  const bool server_lost = verdict == lease_fsm::reply::lost;
  if (record->fsm.on_refresh(verdict, steady::now())) {
    mark_lost(record, !server_lost);
  } else {
    record->publish_deadline();
  }
}

void fleet_core::mark_lost(const std::shared_ptr<lease_record>& record, bool release_remote) {
  record->lost.store(true, std::memory_order_release);
  ++counters_->lost;
  forget(record);
  if (release_remote && !closed_connections_) send_release(record->key, record->id, record->n);
  finish_waiters(*record, {});
}

void fleet_core::forget(const std::shared_ptr<lease_record>& record) {
  auto it = std::find(leases_.begin(), leases_.end(), record);
  if (it == leases_.end()) return;
  leases_.erase(it);
  --counters_->held;
}

void fleet_core::release(std::shared_ptr<lease_record> record, keysem::keyed_semaphore::permit local) {
  // Posted, never run inline: a release inside an acquire's completion
  // must not re-enter the local stage from within itself.
  asio::post(strand_, [self = shared_from_this(), record = std::move(record),
                       local = std::move(local)]() mutable {
    const bool live = !record->lost.load();
    record->fsm.release();
    self->forget(record);
    if (live && !self->closed_connections_) self->send_release(record->key, record->id, record->n);
    finish_waiters(*record, asio::error::operation_aborted);
    local.release();  // after the release script is queued: a local waiter's acquire goes behind it
  });
}

// --- limits, close, stats ----------------------------------------------------

void fleet_core::set_limit(std::string key, std::size_t n, done_handler handler) {
  auto work = asio::prefer(asio::get_associated_executor(handler, executor_),
                           asio::execution::outstanding_work.tracked);
  asio::dispatch(strand_, [self = shared_from_this(), key = std::move(key), n, work,
                           h = std::move(handler)]() mutable {
    if (self->closed_) {
      return post_to_handler(std::move(h), self->executor_, make_error_code(error::closed));
    }
    if (n > keysem::keyed_semaphore::max_permits_per_key) {
      return post_to_handler(std::move(h), self->executor_, error_code(asio::error::invalid_argument));
    }
    auto shared = std::make_shared<done_handler>(std::move(h));
    self->commands_->eval(
        script::set_limit,
        set_limit_args(names_for(self->options_.prefix, key), static_cast<std::uint32_t>(n)),
        [self, key, n, shared, work](error_code ec, const reply&) {
          if (ec) {
            ++self->counters_->redis_errors;
          } else {
            self->adopt_limit(key, n == 0 ? static_cast<std::int64_t>(self->permits_)
                                          : static_cast<std::int64_t>(n));
          }
          post_to_handler(std::move(*shared), self->executor_, ec);
        });
  });
}

void fleet_core::close() {
  asio::dispatch(strand_, [self = shared_from_this()] { self->close_on_strand(); });
}

void fleet_core::close_on_strand() {
  if (closed_) return;
  closed_ = true;
  local_.close();
  wake_all();
}

void fleet_core::shutdown() {
  asio::dispatch(strand_, [self = shared_from_this()] {
    self->close_on_strand();
    self->closed_connections_ = true;
    // Nobody refreshes the leases any more: they are lost now, not silently later.
    for (const auto& record : std::vector(self->leases_)) {
      record->fsm.release();
      self->mark_lost(record, false);
    }
    self->refresh_timer_.cancel();
    self->commands_->close();
    self->subscriber_->close();
  });
}

fleet_stats fleet_core::stats() const noexcept {
  const auto& c = *counters_;
  fleet_stats s;
  s.granted = c.granted.load();
  s.waited = c.waited.load();
  s.busy = c.busy.load();
  s.failed = c.failed.load();
  s.lost = c.lost.load();
  s.redis_errors = c.redis_errors.load();
  s.round_trips = c.round_trips.load();
  s.reconnects = c.reconnects.load();
  s.wakeups = c.wakeups.load();
  s.held = c.held.load();
  s.not_replicated = c.not_replicated.load();
  return s;
}

}  // namespace keysem::redis::detail

namespace keysem::redis {

// --- fleet_permit --------------------------------------------------------

void fleet_permit::release() noexcept {
  auto record = std::move(record_);
  record_.reset();
  auto local = std::move(local_);
  auto stage = std::move(stage_);
  stage_.reset();
  if (!record) return;
  if (auto core = core_.lock()) {
    core->release(std::move(record), std::move(local));
  } else {
    detail::finish_waiters(*record, boost::asio::error::operation_aborted);
    local.release();  // before `stage` goes
  }
  core_.reset();
}

const std::string& fleet_permit::key() const {
  if (!record_) throw std::logic_error("keysem::redis::fleet_permit::key: the permit is empty");
  return record_->key;
}

}  // namespace keysem::redis
