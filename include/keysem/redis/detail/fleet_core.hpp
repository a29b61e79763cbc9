// keysem/redis/detail/fleet_core.hpp — the compiled engine behind
// fleet_semaphore: local stage, command and subscriber connections,
// refresher, waiting keys. Everything mutable lives on one strand.
#ifndef KEYSEM_REDIS_DETAIL_FLEET_CORE_HPP
#define KEYSEM_REDIS_DETAIL_FLEET_CORE_HPP

#include <keysem/async_keyed_semaphore.hpp>
#include <keysem/redis/detail/connection.hpp>
#include <keysem/redis/detail/lease_record.hpp>
#include <keysem/redis/endpoint.hpp>
#include <keysem/redis/fleet_options.hpp>
#include <keysem/redis/fleet_permit.hpp>
#include <keysem/redis/fleet_stats.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace keysem::redis::detail {

using acquire_handler =
    boost::asio::any_completion_handler<void(boost::system::error_code, fleet_permit)>;
using done_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
using steady_time = std::chrono::steady_clock::time_point;

/// The options with their defaults resolved; throws std::invalid_argument
/// on values that cannot work (lease <= 0, margin >= lease).
fleet_options resolve(fleet_options options);

class fleet_core : public std::enable_shared_from_this<fleet_core> {
 public:
  static std::shared_ptr<fleet_core> create(boost::asio::any_io_executor ex, endpoint server,
                                            std::size_t permits_per_key, fleet_options options);

  // Thread-safe entry points: each hops onto the strand.
  void acquire(std::string key, std::size_t n, std::optional<steady_time> deadline, bool try_only,
               acquire_handler handler);
  void set_limit(std::string key, std::size_t n, done_handler handler);
  void close();
  void shutdown();  // close() and drop the connections: the owner is gone
  void release(std::shared_ptr<lease_record> record, keysem::keyed_semaphore::permit local);
  fleet_stats stats() const noexcept;
  std::size_t permits_per_key() const noexcept { return permits_; }

 private:
  struct outcome {
    boost::system::error_code ec;
    fleet_permit permit;
  };
  struct waiting_key {
    std::vector<boost::asio::steady_timer*> timers;
    std::uint64_t epoch = 0;
    std::size_t interested = 0;  // acquires of this process waiting on the key
  };
  using reply_tuple = std::tuple<boost::system::error_code, reply>;

  fleet_core(boost::asio::any_io_executor ex, endpoint server, std::size_t permits,
             fleet_options options);
  void start();

  boost::asio::awaitable<outcome> run_acquire(std::string key, std::uint32_t n,
                                              std::optional<steady_time> deadline, bool try_only);
  boost::asio::awaitable<outcome> acquire_remote(const std::string& key, std::uint32_t n,
                                                 std::optional<steady_time> deadline, bool try_only,
                                                 keysem::keyed_semaphore::permit local,
                                                 bool& interested);
  boost::asio::awaitable<reply_tuple> call(std::optional<script> s, std::vector<std::string> args);
  boost::asio::awaitable<boost::system::error_code> confirm_replicated(const std::string& key,
                                                                       const std::string& id,
                                                                       std::uint32_t n);
  boost::asio::awaitable<boost::system::error_code> wait_for_turn(
      const std::string& key, std::int64_t hint_ms, std::optional<steady_time> deadline);
  outcome grant(const std::string& key, const std::string& id, std::uint32_t n, std::uint64_t fence,
                steady_time sent, keysem::keyed_semaphore::permit local);
  void adopt_limit(const std::string& key, std::int64_t limit);
  void send_release(const std::string& key, const std::string& id, std::uint32_t n,
                    std::int64_t withdraw_ms = 0);
  std::string next_id();

  // waiting keys and the subscriber
  bool add_interest(const std::string& key);  // true if the key was not watched yet
  void drop_interest(const std::string& key);
  void add_waiter(const std::string& key, boost::asio::steady_timer* timer);
  void remove_waiter(const std::string& key, boost::asio::steady_timer* timer);
  std::uint64_t epoch_of(const std::string& key) const;
  void wake(const std::string& key);
  void wake_all();
  void on_push(const reply& message);
  void on_subscriber_connected();

  // refresher
  void schedule_refresh(steady_time now);
  void refresh_tick();
  void on_refreshed(const std::shared_ptr<lease_record>& record, boost::system::error_code ec,
                    const reply& r);
  void mark_lost(const std::shared_ptr<lease_record>& record, bool release_remote);
  void forget(const std::shared_ptr<lease_record>& record);
  void close_on_strand();

  boost::asio::any_io_executor executor_;
  connection::strand_type strand_;
  const std::size_t permits_;
  const fleet_options options_;
  std::shared_ptr<keysem::keyed_semaphore> stage_;  // the local stage, shared with permits
  keysem::keyed_semaphore& local_;
  std::shared_ptr<connection> commands_;
  std::shared_ptr<connection> subscriber_;
  connection::config subscriber_config_;  // until start()
  boost::asio::steady_timer refresh_timer_;
  bool refresh_armed_ = false;
  bool closed_ = false;
  bool closed_connections_ = false;
  std::vector<std::shared_ptr<lease_record>> leases_;
  std::map<std::string, waiting_key> waiting_;
  std::map<std::string, std::size_t> overridden_;  // keys whose local limit differs from permits_
  std::uint64_t epochs_ = 0;
  std::string client_id_;
  std::uint64_t next_id_ = 0;
  std::minstd_rand jitter_;

  struct counters {
    std::atomic<std::uint64_t> granted{0}, waited{0}, busy{0}, failed{0}, lost{0}, redis_errors{0},
        round_trips{0}, reconnects{0}, wakeups{0}, held{0}, not_replicated{0};
  };
  std::shared_ptr<counters> counters_ = std::make_shared<counters>();
};

}  // namespace keysem::redis::detail

#endif
