// keysem/redis/detail/connection.hpp — one pipelined RESP connection on an
// asio socket owned by keysem.
//
// Every member function must be called on the connection's strand, and every
// callback runs there, never from inside the call that queued it. Requests
// are written in batches as they queue up (pipelining) and matched to replies
// in order. The connection is made on demand; a failure fails every queued
// request with a keysem::redis::error and, for `backoff` (doubling up to the
// maximum), fails new requests at once with connection_failed instead of
// hammering an unreachable server: nothing ever waits longer than the
// request timeout. A subscriber connection (config::subscriber) expects no
// replies to what it sends: every message goes to on_push, and it reconnects
// by itself after the backoff while keep_connected() is on. A subscriber
// that has heard nothing for `heartbeat` sends PING; without an answer
// within the request timeout the link is taken for dead (a silent
// partition loses release messages) and is replaced.
#ifndef KEYSEM_REDIS_DETAIL_CONNECTION_HPP
#define KEYSEM_REDIS_DETAIL_CONNECTION_HPP

#include <keysem/redis/detail/resp.hpp>
#include <keysem/redis/detail/scripts.hpp>
#include <keysem/redis/endpoint.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keysem::redis::detail {

/// The SHA1 EVALSHA names a script by (computed locally, so the first
/// request after a connect need not wait for SCRIPT LOAD's answer).
const std::string& script_sha(script s);

class connection : public std::enable_shared_from_this<connection> {
 public:
  using strand_type = boost::asio::strand<boost::asio::any_io_executor>;
  using callback = std::function<void(boost::system::error_code, reply)>;

  struct config {
    endpoint server;
    std::chrono::milliseconds request_timeout{2000};
    std::chrono::milliseconds reconnect_min{50};
    std::chrono::milliseconds reconnect_max{2000};
    bool subscriber = false;
    std::chrono::milliseconds heartbeat{0};     // subscriber: 0 = no liveness check
    std::function<void(const reply&)> on_push;  // subscriber: every message
    std::function<void()> on_connected;         // after each successful connect
    std::function<void()> on_round_trip;        // a reply arrived (stats)
  };

  connection(strand_type strand, config cfg);

  /// Queues one command; `done` gets its reply or an error.
  void execute(const std::vector<std::string>& args, callback done);
  /// EVALSHA of a keysem script (keys then args); re-sent as EVAL on NOSCRIPT.
  void eval(script s, const std::vector<std::string>& keys_and_args, callback done);
  /// Subscriber only: queues a command whose replies go to on_push.
  void send(const std::vector<std::string>& args);
  /// Subscriber only: stay connected (reconnect after failures) or not.
  void keep_connected(bool on);
  bool is_connected() const noexcept { return state_ == state::ready; }
  /// Fails everything queued with operation_aborted; nothing reconnects.
  void close();

 private:
  enum class state { idle, connecting, ready, backoff, closed };
  struct pending {
    std::string wire;
    callback done;  // empty: no reply expected
    std::optional<script> retry;
    std::vector<std::string> retry_args;
    std::chrono::steady_clock::time_point sent_at{};
    bool sent = false;
  };

  void enqueue(pending p);
  void start_connect();
  void on_connected();
  void fail_all(boost::system::error_code ec, bool backoff);
  void write_some();
  void read_some();
  void on_bytes(std::size_t n);
  void on_reply(reply r);
  void arm_timer();
  void on_timer();
  std::optional<std::chrono::steady_clock::time_point> heartbeat_due() const;
  bool on_heartbeat(std::chrono::steady_clock::time_point now);
  void post_callback(callback done, boost::system::error_code ec, reply r = {});

  strand_type strand_;
  config cfg_;
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  state state_ = state::idle;
  bool keep_connected_ = false;
  bool writing_ = false;
  std::uint64_t generation_ = 0;  // ignores completions of a dropped socket
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point backoff_until_{};
  std::chrono::steady_clock::time_point connect_deadline_{};
  std::chrono::steady_clock::time_point last_heard_{};  // subscriber: bytes or connect
  std::optional<std::chrono::steady_clock::time_point> ping_sent_;
  std::deque<pending> queue_;  // sent requests first, in order
  std::string write_buffer_;
  std::array<char, 16384> read_buffer_{};
  std::unique_ptr<reply_decoder> decoder_;
};

}  // namespace keysem::redis::detail

#endif
