// baselines::channel_semaphore — the keyed semaphore asio users hand-roll
// today: per key, a concurrent_channel<void(error_code)> with capacity N, in
// a map guarded by one mutex. Not part of the library.
//
// acquire = async_send (completes when the channel has buffer space, i.e.
// fewer than N permits are held), release = try_receive. The channel queues
// blocked senders FIFO and supports per-operation cancellation, which is why
// people reach for it. An entry counts its users (holders and senders) under
// the mutex and is erased when the count drops to zero.
//
// Contract: as keysem's where the benchmarks need it, except that only n = 1
// is supported (a channel message is one permit) and permits must not
// outlive the semaphore. A cancelled acquire completes with
// operation_aborted (the channel says channel_cancelled; it is translated).
#ifndef KEYSEM_BENCHMARKS_BASELINES_CHANNEL_SEMAPHORE_HPP
#define KEYSEM_BENCHMARKS_BASELINES_CHANNEL_SEMAPHORE_HPP

#include <keysem/hash.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associator.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <boost/unordered/unordered_flat_map.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace baselines {

namespace detail {

// Turns the channel's void(error_code) into acquire's void(error_code, permit),
// keeping the user's executor, allocator and cancellation slot (associator below).
template <class Handler, class Semaphore, class Entry>
struct channel_send_handler {
  Handler handler;
  Semaphore* sem;
  Entry* entry;

  void operator()(boost::system::error_code ec) {
    if (ec) {
      sem->detach(*entry);
      std::move(handler)(boost::asio::error::operation_aborted, typename Semaphore::permit());
    } else {
      std::move(handler)(ec, typename Semaphore::permit(*sem, *entry));
    }
  }
};

}  // namespace detail

template <class Key, class Hash = keysem::hash<Key>, class KeyEqual = std::equal_to<>,
          class Executor = boost::asio::any_io_executor>
class channel_semaphore {
  struct entry;

 public:
  using key_type = Key;
  using executor_type = Executor;
  using channel_type =
      boost::asio::experimental::concurrent_channel<Executor, void(boost::system::error_code)>;

  class permit {
   public:
    permit() noexcept = default;
    permit(permit&& other) noexcept
        : sem_(std::exchange(other.sem_, nullptr)), entry_(std::exchange(other.entry_, nullptr)) {}
    permit& operator=(permit&& other) noexcept {
      if (this != &other) {
        release();
        sem_ = std::exchange(other.sem_, nullptr);
        entry_ = std::exchange(other.entry_, nullptr);
      }
      return *this;
    }
    ~permit() { release(); }
    void release() noexcept {
      if (auto* sem = std::exchange(sem_, nullptr)) {
        sem->release(*std::exchange(entry_, nullptr));
      }
    }
    explicit operator bool() const noexcept { return sem_ != nullptr; }
    const Key& key() const noexcept { return entry_->key; }
    std::size_t count() const noexcept { return sem_ != nullptr ? 1 : 0; }

   private:
    template <class, class, class>
    friend struct detail::channel_send_handler;
    friend class channel_semaphore;
    permit(channel_semaphore& sem, entry& e) noexcept : sem_(&sem), entry_(&e) {}

    channel_semaphore* sem_ = nullptr;
    entry* entry_ = nullptr;
  };

  using acquire_signature = void(boost::system::error_code, permit);

  channel_semaphore(const executor_type& ex, std::size_t permits_per_key)
      : executor_(ex), limit_(permits_per_key) {
    if (permits_per_key == 0) {
      throw std::invalid_argument("channel_semaphore: permits_per_key must be positive");
    }
  }

  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  channel_semaphore(ExecutionContext& context, std::size_t permits_per_key)
      : channel_semaphore(executor_type(context.get_executor()), permits_per_key) {}

  channel_semaphore(const channel_semaphore&) = delete;
  channel_semaphore& operator=(const channel_semaphore&) = delete;

  executor_type get_executor() const noexcept { return executor_; }
  std::size_t permits_per_key() const noexcept { return limit_; }

  template <class K>
  std::optional<permit> try_acquire(const K& key, std::size_t n = 1) {
    if (n != 1) {
      throw std::invalid_argument("channel_semaphore: only n == 1 is supported");
    }
    entry& e = attach(key);
    if (e.chan.try_send(boost::system::error_code())) {
      return permit(*this, e);
    }
    detach(e);
    return std::nullopt;
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

  std::size_t key_count() const {
    std::lock_guard guard(mutex_);
    return map_.size();
  }

 private:
  template <class, class, class>
  friend struct detail::channel_send_handler;

  struct entry {
    entry(const Executor& ex, std::size_t capacity, Key k) : key(std::move(k)), chan(ex, capacity) {}
    Key key;
    channel_type chan;
    std::size_t users = 0;  // guarded by the map's mutex
  };

  struct initiate {
    channel_semaphore* self;
    using executor_type = Executor;
    executor_type get_executor() const noexcept { return self->executor_; }

    template <class Handler>
    void operator()(Handler&& handler, Key key, std::size_t n) const {
      using send_handler = detail::channel_send_handler<std::decay_t<Handler>, channel_semaphore, entry>;
      if (n != 1) {
        auto ex = boost::asio::get_associated_executor(handler, self->executor_);
        boost::asio::post(ex, [h = std::forward<Handler>(handler)]() mutable {
          std::move(h)(boost::asio::error::invalid_argument, permit());
        });
        return;
      }
      entry& e = self->attach(key);
      e.chan.async_send(boost::system::error_code(),
                        send_handler{std::forward<Handler>(handler), self, &e});
    }
  };

  template <class K>
  entry& attach(const K& key) {
    std::lock_guard guard(mutex_);
    auto found = map_.find(key);
    if (found == map_.end()) {
      found = map_.emplace(Key(key), std::make_unique<entry>(executor_, limit_, Key(key))).first;
    }
    ++found->second->users;
    return *found->second;
  }

  void detach(entry& e) noexcept {
    std::lock_guard guard(mutex_);
    if (--e.users == 0) {
      map_.erase(e.key);
    }
  }

  void release(entry& e) noexcept {
    e.chan.try_receive([](boost::system::error_code) {});
    detach(e);
  }

  executor_type executor_;
  std::size_t limit_;
  mutable std::mutex mutex_;
  boost::unordered_flat_map<Key, std::unique_ptr<entry>, Hash, KeyEqual> map_;
};

}  // namespace baselines

// The send handler is the user's handler as far as asio is concerned: its
// executor, allocator and cancellation slot.
template <template <class, class> class Associator, class Handler, class Semaphore, class Entry,
          class DefaultCandidate>
struct boost::asio::associator<Associator,
                               baselines::detail::channel_send_handler<Handler, Semaphore, Entry>,
                               DefaultCandidate> {
  using type = typename Associator<Handler, DefaultCandidate>::type;
  static type get(const baselines::detail::channel_send_handler<Handler, Semaphore, Entry>& h) noexcept {
    return Associator<Handler, DefaultCandidate>::get(h.handler);
  }
  static auto get(const baselines::detail::channel_send_handler<Handler, Semaphore, Entry>& h,
                  const DefaultCandidate& c) noexcept {
    return Associator<Handler, DefaultCandidate>::get(h.handler, c);
  }
};

#endif
