// baselines::mutex_single_flight — the single-flight group a competent asio
// engineer writes in an afternoon, to measure keysem::single_flight against.
// Not part of the library.
//
// Shards of { std::mutex, boost::unordered_flat_map<Key, std::shared_ptr<call>> }:
// a call is the shared state of one execution, a vector of the callers'
// type-erased handlers (any_completion_handler). The key is hashed once with
// keysem::hash (XXH3) for the shard and the probe. The first caller of a key
// co_spawns fn on the group's executor; its completion takes the entry out
// of the map and posts the outcome to every handler's associated executor
// (never inline). Differences from keysem: no per-caller cancellation, no
// cancellation of abandoned executions, no forget(); the group must outlive
// its executions.
#ifndef KEYSEM_BENCHMARKS_BASELINES_MUTEX_SINGLE_FLIGHT_HPP
#define KEYSEM_BENCHMARKS_BASELINES_MUTEX_SINGLE_FLIGHT_HPP

#include <keysem/hash.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/unordered/unordered_flat_map.hpp>

#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace baselines {

template <class Key, class T>
class mutex_single_flight {
 public:
  using signature = void(std::exception_ptr, T);

  explicit mutex_single_flight(boost::asio::any_io_executor ex, std::size_t shards = 16)
      : executor_(std::move(ex)), shards_(shards) {}

  template <class Fn, class CompletionToken>
  auto run(Key key, Fn&& fn, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, signature>(
        [this](auto handler, Key k, std::decay_t<Fn> f) {
          start(std::move(k), std::move(f), handler_type(std::move(handler)));
        },
        token, std::move(key), std::forward<Fn>(fn));
  }

 private:
  using handler_type = boost::asio::any_completion_handler<signature>;

  struct call {
    std::vector<handler_type> waiters;
  };

  struct shard {
    std::mutex mutex;
    boost::unordered_flat_map<Key, std::shared_ptr<call>, keysem::hash<Key>> calls;
  };

  template <class Fn>
  void start(Key key, Fn fn, handler_type handler) {
    const std::size_t h = keysem::hash<Key>()(key);
    shard& s = shards_[(h >> 24) % shards_.size()];
    std::shared_ptr<call> fresh;
    {
      std::lock_guard guard(s.mutex);
      auto [it, inserted] = s.calls.try_emplace(key);
      if (!inserted) {
        it->second->waiters.push_back(std::move(handler));
        return;
      }
      it->second = fresh = std::make_shared<call>();
      fresh->waiters.push_back(std::move(handler));
    }
    boost::asio::co_spawn(executor_, fn(),
                          [this, &s, key = std::move(key), fresh](std::exception_ptr e, T value) {
                            finish(s, key, *fresh, e, std::move(value));
                          });
  }

  void finish(shard& s, const Key& key, call& c, std::exception_ptr e, T value) {
    std::vector<handler_type> waiters;
    {
      std::lock_guard guard(s.mutex);
      s.calls.erase(key);
      waiters.swap(c.waiters);
    }
    for (auto& waiter : waiters) {
      boost::asio::post(executor_, boost::asio::append(std::move(waiter), e, value));
    }
  }

  boost::asio::any_io_executor executor_;
  std::vector<shard> shards_;
};

}  // namespace baselines

#endif
