// baselines::mutex_keyed_semaphore — the keyed semaphore a competent asio
// engineer writes in an afternoon, to measure keysem against. Not part of the
// library.
//
// Shards of { std::mutex, boost::unordered_flat_map<Key, entry> }, where an
// entry is { permits held, intrusive FIFO of waiting operations }. The key is
// hashed once with keysem::hash (XXH3, avalanching) and the hash is reused
// for the shard and for the map probe. Entries are erased as soon as they
// have neither holders nor waiters. Completions are posted to the handler's
// associated executor (never run inside acquire()), a waiting operation
// tracks work on that executor, and its memory comes from the handler's
// associated allocator — asio's thread-local recycling allocator when the
// handler has none, as asio's own operations do.
//
// Timed acquires (acquire_for) are what an asio engineer would add: the
// duration travels with the operation, and only an acquire that has to wait
// gets a boost::asio::steady_timer, a member of its waiting operation, armed
// with expires_after() when the operation is queued. The timer's handler
// takes the shard mutex and completes a still-queued operation with
// boost::asio::error::timed_out; a timed operation is freed by whichever of
// its completion and its timer handler finishes last, and its completion
// cancels the timer. An acquire granted at once never reads the clock.
//
// The contract is keysem's as far as the benchmarks need it: acquire() with
// any completion token (deferred by default), try_acquire() by key or by a
// transparent lookup type, move-only RAII permits, strict FIFO per key with
// no barging, per-operation cancellation (terminal/partial/total) of a
// waiting acquire, which leaves no trace. Differences: permits must not
// outlive the semaphore, there is no close(), a cancellation signal must
// be emitted from the handler's executor (as for asio's own operations), and
// the semaphore must outlive the timer handlers of its timed acquires (run
// its context before destroying it).
#ifndef KEYSEM_BENCHMARKS_BASELINES_MUTEX_KEYED_SEMAPHORE_HPP
#define KEYSEM_BENCHMARKS_BASELINES_MUTEX_KEYED_SEMAPHORE_HPP

#include "baselines/prehashed.hpp"

#include <keysem/hash.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>
#include <boost/unordered/unordered_flat_map.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>

namespace baselines {

template <class Key, class Hash = keysem::hash<Key>, class KeyEqual = std::equal_to<>,
          class Executor = boost::asio::any_io_executor>
class mutex_keyed_semaphore {
 public:
  using key_type = Key;
  using executor_type = Executor;

  class permit {
   public:
    permit() noexcept = default;
    permit(permit&& other) noexcept
        : sem_(std::exchange(other.sem_, nullptr)),
          key_(std::move(other.key_)),
          hash_(other.hash_),
          count_(std::exchange(other.count_, 0)) {}
    permit& operator=(permit&& other) noexcept {
      if (this != &other) {
        release();
        sem_ = std::exchange(other.sem_, nullptr);
        key_ = std::move(other.key_);
        hash_ = other.hash_;
        count_ = std::exchange(other.count_, 0);
      }
      return *this;
    }
    ~permit() { release(); }

    void release() noexcept {
      if (auto* sem = std::exchange(sem_, nullptr)) {
        sem->release(key_, hash_, std::exchange(count_, 0));
      }
    }
    explicit operator bool() const noexcept { return sem_ != nullptr; }
    const Key& key() const noexcept { return key_; }
    std::size_t count() const noexcept { return count_; }

   private:
    friend class mutex_keyed_semaphore;
    permit(mutex_keyed_semaphore& sem, Key key, std::size_t hash, std::uint32_t count) noexcept
        : sem_(&sem), key_(std::move(key)), hash_(hash), count_(count) {}

    mutex_keyed_semaphore* sem_ = nullptr;
    Key key_{};
    std::size_t hash_ = 0;
    std::uint32_t count_ = 0;
  };

  using acquire_signature = void(boost::system::error_code, permit);

  mutex_keyed_semaphore(const executor_type& ex, std::size_t permits_per_key)
      : executor_(ex), limit_(checked_limit(permits_per_key)), shards_(new shard[shard_count]) {}

  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  mutex_keyed_semaphore(ExecutionContext& context, std::size_t permits_per_key)
      : mutex_keyed_semaphore(executor_type(context.get_executor()), permits_per_key) {}

  mutex_keyed_semaphore(const mutex_keyed_semaphore&) = delete;
  mutex_keyed_semaphore& operator=(const mutex_keyed_semaphore&) = delete;

  // Completes every waiting acquire with operation_aborted.
  ~mutex_keyed_semaphore() {
    for (std::size_t i = 0; i < shard_count; ++i) {
      waiter_list aborted;
      {
        std::lock_guard guard(shards_[i].mutex);
        for (auto& [key, e] : shards_[i].map) {
          while (waiter* w = e.head) {
            unlink(e, *w);
            aborted.push_back(*w);
          }
        }
      }
      while (waiter* w = aborted.pop_front()) {
        w->complete(boost::asio::error::operation_aborted, permit());
      }
    }
  }

  executor_type get_executor() const noexcept { return executor_; }
  std::size_t permits_per_key() const noexcept { return limit_; }

  template <class K>
  std::optional<permit> try_acquire(const K& key, std::size_t n = 1) {
    const auto count = checked_count(n);
    const std::size_t hash = hash_(key);
    shard& s = shard_for(hash);
    {
      std::lock_guard guard(s.mutex);
      const auto found = s.map.find(detail::prehashed<K>{key, hash});
      if (found == s.map.end()) {
        s.map.emplace(Key(key), entry{count});
      } else if (entry& e = found->second; e.head == nullptr && e.held + count <= limit_) {
        e.held += count;
      } else {
        return std::nullopt;
      }
    }
    return permit(*this, Key(key), hash, count);
  }

  template <class Token = boost::asio::deferred_t>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<Token>>)
  auto acquire(Key key, Token&& token = Token()) {
    return acquire(std::move(key), 1, std::forward<Token>(token));
  }

  template <class Token = boost::asio::deferred_t>
  auto acquire(Key key, std::size_t n, Token&& token = Token()) {
    return boost::asio::async_initiate<Token, acquire_signature>(initiate{this}, token,
                                                                 std::move(key), std::size_t{n});
  }

  // acquire() that stops waiting after `timeout`, completing with
  // boost::asio::error::timed_out and an empty permit.
  template <class Rep, class Period, class Token = boost::asio::deferred_t>
    requires(!std::is_arithmetic_v<std::remove_cvref_t<Token>>)
  auto acquire_for(Key key, std::chrono::duration<Rep, Period> timeout, Token&& token = Token()) {
    return acquire_for(std::move(key), 1, timeout, std::forward<Token>(token));
  }

  template <class Rep, class Period, class Token = boost::asio::deferred_t>
  auto acquire_for(Key key, std::size_t n, std::chrono::duration<Rep, Period> timeout,
                   Token&& token = Token()) {
    return boost::asio::async_initiate<Token, acquire_signature>(
        initiate_timed{this}, token, std::move(key), std::size_t{n},
        std::chrono::duration_cast<typename timer_type::duration>(timeout));
  }

  std::size_t key_count() const {
    std::size_t keys = 0;
    for (std::size_t i = 0; i < shard_count; ++i) {
      std::lock_guard guard(shards_[i].mutex);
      keys += shards_[i].map.size();
    }
    return keys;
  }

 private:
  // The type-erased part of a waiting acquire; guarded by its shard's mutex
  // while queued.
  struct waiter {
    using complete_fn = void (*)(waiter*, const boost::system::error_code&, permit&&);
    waiter(mutex_keyed_semaphore& s, Key k, std::size_t h, std::uint32_t c, complete_fn f)
        : sem(&s), key(std::move(k)), hash(h), count(c), complete_(f) {}
    // Posts the handler's completion; ownership of the waiter moves with it.
    void complete(const boost::system::error_code& ec, permit&& p) { complete_(this, ec, std::move(p)); }

    waiter* next = nullptr;
    waiter* prev = nullptr;
    bool queued = false;
    mutex_keyed_semaphore* sem;
    Key key;
    std::size_t hash;
    std::uint32_t count;
    complete_fn complete_;
  };

  // Singly linked list of waiters taken off their queues, completed after
  // the mutex is released.
  struct waiter_list {
    waiter* head = nullptr;
    waiter* tail = nullptr;
    void push_back(waiter& w) noexcept {
      w.next = nullptr;
      (tail ? tail->next : head) = &w;
      tail = &w;
    }
    waiter* pop_front() noexcept {
      waiter* w = head;
      if (w != nullptr && (head = w->next) == nullptr) {
        tail = nullptr;
      }
      return w;
    }
  };

  struct entry {
    std::uint32_t held = 0;
    waiter* head = nullptr;
    waiter* tail = nullptr;
  };

  using timer_type = boost::asio::basic_waitable_timer<
      std::chrono::steady_clock, boost::asio::wait_traits<std::chrono::steady_clock>, Executor>;

  struct untimed {};

  using map_type = boost::unordered_flat_map<Key, entry, detail::prehashed_hash<Hash>,
                                             detail::prehashed_equal<KeyEqual>>;

  struct alignas(64) shard {
    std::mutex mutex;
    map_type map;
  };

  // As many shards as keysem uses by default: a few per hardware thread.
  static inline const std::size_t shard_count =
      std::bit_ceil(std::max<std::size_t>(1, std::thread::hardware_concurrency()) * 4);

  template <class Handler, bool Timed = false>
  class op final : public waiter {
   public:
    using handler_allocator = boost::asio::associated_allocator_t<Handler>;
    // asio's own operations recycle thread-local blocks when the handler has
    // no allocator of its own; so does this one.
    using proto_allocator =
        std::conditional_t<std::is_same_v<handler_allocator, std::allocator<void>>,
                           boost::asio::recycling_allocator<void>, handler_allocator>;
    using op_allocator = typename std::allocator_traits<proto_allocator>::template rebind_alloc<op>;

    static op& create(Handler& handler, mutex_keyed_semaphore& sem, Key&& key, std::size_t hash,
                      std::uint32_t count) {
      op_allocator alloc(allocator_of(handler));
      op* o = std::allocator_traits<op_allocator>::allocate(alloc, 1);
      try {
        return *new (o) op(handler, sem, std::move(key), hash, count);
      } catch (...) {
        std::allocator_traits<op_allocator>::deallocate(alloc, o, 1);
        throw;
      }
    }

    void install_cancellation() {
      if (slot_.is_connected()) {
        slot_.template emplace<cancel_handler>(this);
      }
    }

    // Shard mutex held, the op just queued: the timer is created and armed
    // (asio's wait operation comes from its recycling allocator).
    void arm(typename timer_type::duration timeout)
      requires Timed
    {
      timed_.timer.emplace(this->sem->executor_);
      timed_.timer->expires_after(timeout);
      timed_.timer->async_wait(expiry(*this));
    }

   private:
    // A timed op is referenced by its completion path and by its timer's
    // pending handler; the last of the two frees it.
    struct timed_state {
      std::optional<timer_type> timer;
      std::atomic<int> refs{2};
    };

    // The timer's handler. Expired: a still-queued op times out. Cancelled
    // (the op was completed): only the reference goes.
    class expiry {
     public:
      explicit expiry(op& o) noexcept : op_(&o) {}
      expiry(expiry&& other) noexcept : op_(std::exchange(other.op_, nullptr)) {}
      ~expiry() {
        if (op_ != nullptr) {
          op_->unref();
        }
      }
      void operator()(const boost::system::error_code& ec) {
        op* o = std::exchange(op_, nullptr);
        if (!ec) {
          o->sem->expire(*o);
        }
        o->unref();
      }

     private:
      op* op_;
    };

    struct cancel_handler {
      op* self;
      void operator()(boost::asio::cancellation_type type) const {
        constexpr auto honoured = boost::asio::cancellation_type::terminal |
                                  boost::asio::cancellation_type::partial |
                                  boost::asio::cancellation_type::total;
        if ((type & honoured) != boost::asio::cancellation_type::none) {
          self->sem->cancel(*self);
        }
      }
    };

    // Owns the op between completion and upcall, on the handler's executor.
    // It names its allocator as a member rather than through bind_allocator:
    // asio wraps a handler with a specialised associator (allocator_binder is
    // one) in a work_dispatcher, an extra tracked executor and dispatch.
    class completion {
     public:
      using allocator_type = boost::asio::associated_allocator_t<Handler>;
      allocator_type get_allocator() const noexcept {
        return boost::asio::get_associated_allocator(op_->handler_);
      }
      explicit completion(op& o) noexcept : op_(&o) {}
      completion(completion&& other) noexcept : op_(std::exchange(other.op_, nullptr)) {}
      ~completion() {
        if (op_ != nullptr) {
          op_->unref();
        }
      }
      void operator()() { std::exchange(op_, nullptr)->invoke(); }

     private:
      op* op_;
    };

    using tracked_executor = std::decay_t<decltype(boost::asio::prefer(
        std::declval<boost::asio::associated_executor_t<Handler, Executor>>(),
        boost::asio::execution::outstanding_work.tracked))>;

    op(Handler& handler, mutex_keyed_semaphore& sem, Key&& key, std::size_t hash, std::uint32_t count)
        : waiter(sem, std::move(key), hash, count, &do_complete),
          work_(boost::asio::prefer(boost::asio::get_associated_executor(handler, sem.executor_),
                                    boost::asio::execution::outstanding_work.tracked)),
          slot_(boost::asio::get_associated_cancellation_slot(handler)),
          handler_(std::move(handler)) {}

    ~op() {
      if (slot_.is_connected()) {
        slot_.clear();
      }
    }

    static proto_allocator allocator_of(const Handler& handler) {
      if constexpr (std::is_same_v<handler_allocator, std::allocator<void>>) {
        return proto_allocator();
      } else {
        return boost::asio::get_associated_allocator(handler);
      }
    }

    static void do_complete(waiter* base, const boost::system::error_code& ec, permit&& p) {
      auto* self = static_cast<op*>(base);
      self->ec_ = ec;
      self->permit_ = std::move(p);
      boost::asio::post(self->work_, completion(*self));
    }

    void invoke() {
      const boost::system::error_code ec = ec_;
      permit p = std::move(permit_);
      Handler handler(std::move(handler_));
      if constexpr (Timed) {
        if (timed_.timer) {
          timed_.timer->cancel();
        }
      }
      unref();
      std::move(handler)(ec, std::move(p));
    }

    void unref() noexcept {
      if constexpr (Timed) {
        if (timed_.refs.fetch_sub(1, std::memory_order_acq_rel) != 1) {
          return;
        }
      }
      free(this);
    }

    static void free(op* o) noexcept {
      op_allocator alloc(allocator_of(o->handler_));
      o->~op();
      std::allocator_traits<op_allocator>::deallocate(alloc, o, 1);
    }

    tracked_executor work_;
    boost::asio::cancellation_slot slot_;
    Handler handler_;
    boost::system::error_code ec_;
    permit permit_;
    [[no_unique_address]] std::conditional_t<Timed, timed_state, untimed> timed_;
  };

  struct initiate {
    mutex_keyed_semaphore* self;
    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->executor_; }

    template <class Handler>
    void operator()(Handler&& handler, Key key, std::size_t n) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      self->start(owned, std::move(key), n);
    }
  };

  struct initiate_timed {
    mutex_keyed_semaphore* self;
    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->executor_; }

    template <class Handler>
    void operator()(Handler&& handler, Key key, std::size_t n,
                    typename timer_type::duration timeout) const {
      std::decay_t<Handler> owned(std::forward<Handler>(handler));
      self->start(owned, std::move(key), n, timeout);
    }
  };

  // Untimed when `timeout` is untimed{}.
  template <class Handler, class Timeout = untimed>
  void start(Handler& handler, Key key, std::size_t n, Timeout timeout = {}) {
    constexpr bool timed = !std::is_same_v<Timeout, untimed>;
    if (n == 0 || n > limit_) {
      return post_result(handler, boost::asio::error::invalid_argument, permit());
    }
    const auto count = static_cast<std::uint32_t>(n);
    const std::size_t hash = hash_(key);
    shard& s = shard_for(hash);
    std::unique_lock lock(s.mutex);
    const auto found = s.map.find(detail::prehashed<Key>{key, hash});
    if (found == s.map.end()) {
      s.map.emplace(key, entry{count});
    } else if (entry& e = found->second; e.head == nullptr && e.held + count <= limit_) {
      e.held += count;
    } else {
      auto& o = op<Handler, timed>::create(handler, *this, std::move(key), hash, count);
      o.queued = true;
      o.prev = e.tail;
      (e.tail ? e.tail->next : e.head) = &o;
      e.tail = &o;
      o.install_cancellation();
      if constexpr (timed) {
        o.arm(timeout);
      }
      return;
    }
    lock.unlock();
    post_result(handler, {}, permit(*this, std::move(key), hash, count));
  }

  // A completion that carries its result; its allocator is a member, not a
  // bind_allocator wrapper, for the reason given at op::completion.
  template <class Handler>
  struct immediate_completion {
    using allocator_type = boost::asio::associated_allocator_t<Handler>;
    allocator_type get_allocator() const noexcept { return boost::asio::get_associated_allocator(handler); }
    void operator()() { std::move(handler)(ec, std::move(result)); }

    Handler handler;
    boost::system::error_code ec;
    permit result;
  };

  template <class Handler>
  void post_result(Handler& handler, const boost::system::error_code& ec, permit p) {
    auto ex = boost::asio::get_associated_executor(handler, executor_);
    boost::asio::post(ex, immediate_completion<Handler>{std::move(handler), ec, std::move(p)});
  }

  // Mutex held: takes waiters off the head of e's queue while they fit.
  void grant_locked(entry& e, waiter_list& granted) noexcept {
    while (waiter* w = e.head) {
      if (e.held + w->count > limit_) {
        break;
      }
      unlink(e, *w);
      e.held += w->count;
      granted.push_back(*w);
    }
  }

  static void unlink(entry& e, waiter& w) noexcept {
    (w.prev ? w.prev->next : e.head) = w.next;
    (w.next ? w.next->prev : e.tail) = w.prev;
    w.next = w.prev = nullptr;
    w.queued = false;
  }

  void complete_granted(waiter_list& granted) {
    while (waiter* w = granted.pop_front()) {
      w->complete({}, permit(*this, std::move(w->key), w->hash, w->count));
    }
  }

  void release(const Key& key, std::size_t hash, std::uint32_t n) noexcept {
    shard& s = shard_for(hash);
    waiter_list granted;
    {
      std::lock_guard guard(s.mutex);
      const auto found = s.map.find(detail::prehashed<Key>{key, hash});
      entry& e = found->second;
      e.held -= n;
      grant_locked(e, granted);
      if (e.held == 0 && e.head == nullptr) {
        s.map.erase(found);
      }
    }
    complete_granted(granted);
  }

  // On the emitting thread: a queued waiter leaves without a trace; one
  // already granted keeps its permits.
  void cancel(waiter& w) {
    shard& s = shard_for(w.hash);
    waiter_list granted;
    {
      std::lock_guard guard(s.mutex);
      if (!w.queued) {
        return;
      }
      const auto found = s.map.find(detail::prehashed<Key>{w.key, w.hash});
      entry& e = found->second;
      unlink(e, w);
      grant_locked(e, granted);  // w may have blocked the head
      if (e.held == 0 && e.head == nullptr) {
        s.map.erase(found);
      }
    }
    w.complete(boost::asio::error::operation_aborted, permit());
    complete_granted(granted);
  }

  // On the timer's executor: a timed waiter whose timer expired leaves the
  // queue with timed_out, unless it was granted or cancelled meanwhile.
  void expire(waiter& w) {
    shard& s = shard_for(w.hash);
    waiter_list granted;
    {
      std::lock_guard guard(s.mutex);
      if (!w.queued) {
        return;
      }
      const auto found = s.map.find(detail::prehashed<Key>{w.key, w.hash});
      entry& e = found->second;
      unlink(e, w);
      grant_locked(e, granted);  // w may have blocked the head
      if (e.held == 0 && e.head == nullptr) {
        s.map.erase(found);
      }
    }
    w.complete(boost::asio::error::timed_out, permit());
    complete_granted(granted);
  }

  shard& shard_for(std::size_t hash) const noexcept {
    return shards_[(hash >> 24) & (shard_count - 1)];
  }

  static std::uint32_t checked_limit(std::size_t n) {
    if (n == 0 || n > 0x7FFF'FFFF) {
      throw std::invalid_argument("mutex_keyed_semaphore: bad permits_per_key");
    }
    return static_cast<std::uint32_t>(n);
  }

  std::uint32_t checked_count(std::size_t n) const {
    if (n == 0 || n > limit_) {
      throw std::invalid_argument("mutex_keyed_semaphore::try_acquire: bad n");
    }
    return static_cast<std::uint32_t>(n);
  }

  executor_type executor_;
  std::uint32_t limit_;
  [[no_unique_address]] Hash hash_;
  std::unique_ptr<shard[]> shards_;
};

}  // namespace baselines

#endif
