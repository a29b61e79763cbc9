// One pipelined RESP connection: see keysem/redis/detail/connection.hpp.
#include <keysem/redis/detail/connection.hpp>
#include <keysem/redis/error.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/uuid/detail/sha1.hpp>

#include <array>
#include <cstdio>

namespace keysem::redis::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using steady = std::chrono::steady_clock;

namespace {

std::string compute_sha(script s) {
  boost::uuids::detail::sha1 hash;
  const std::string& source = script_source(s);
  hash.process_bytes(source.data(), source.size());
  boost::uuids::detail::sha1::digest_type digest;
  hash.get_digest(digest);
  std::string hex;
  char word[9];
  for (unsigned part : digest) {
    std::snprintf(word, sizeof word, "%08x", part);
    hex += word;
  }
  return hex;
}

}  // namespace

// Computed once: every EVALSHA names its script by it.
const std::string& script_sha(script s) {
  static const std::array<std::string, script_count> shas = [] {
    std::array<std::string, script_count> all;
    for (int i = 0; i < script_count; ++i) all[i] = compute_sha(static_cast<script>(i));
    return all;
  }();
  return shas[static_cast<int>(s)];
}

connection::connection(strand_type strand, config cfg)
    : strand_(std::move(strand)),
      cfg_(std::move(cfg)),
      resolver_(strand_),
      socket_(strand_),
      timer_(strand_) {}

void connection::execute(const std::vector<std::string>& args, callback done) {
  enqueue(pending{encode_command(args), std::move(done), std::nullopt, {}});
}

void connection::eval(script s, const std::vector<std::string>& keys_and_args, callback done) {
  std::vector<std::string> args{"EVALSHA", script_sha(s), std::to_string(key_count(s))};
  args.insert(args.end(), keys_and_args.begin(), keys_and_args.end());
  enqueue(pending{encode_command(args), std::move(done), s, keys_and_args});
}

void connection::send(const std::vector<std::string>& args) {
  enqueue(pending{encode_command(args), {}, std::nullopt, {}});
}

void connection::keep_connected(bool on) {
  keep_connected_ = on;
  if (on && state_ == state::idle) {
    start_connect();
  }
  arm_timer();
}

void connection::close() {
  state_ = state::closed;
  ++generation_;
  error_code ignored;
  socket_.close(ignored);
  resolver_.cancel();
  timer_.cancel();
  auto queued = std::move(queue_);
  queue_.clear();
  for (auto& p : queued) {
    if (p.done) {
      post_callback(std::move(p.done), asio::error::operation_aborted);
    }
  }
}

void connection::enqueue(pending p) {
  if (state_ == state::closed) {
    if (p.done) post_callback(std::move(p.done), asio::error::operation_aborted);
    return;
  }
  if (state_ == state::backoff) {
    if (steady::now() < backoff_until_) {
      // Fail fast while the server is known to be unreachable.
      if (p.done) post_callback(std::move(p.done), error::connection_failed);
      return;
    }
    state_ = state::idle;
  }
  queue_.push_back(std::move(p));
  if (state_ == state::idle) {
    start_connect();
  } else if (state_ == state::ready) {
    write_some();
  }
}

void connection::start_connect() {
  state_ = state::connecting;
  const auto gen = ++generation_;
  decoder_ = std::make_unique<reply_decoder>();
  connect_deadline_ = steady::now() + cfg_.request_timeout;
  arm_timer();
  auto self = shared_from_this();
  error_code not_numeric;
  const auto address = asio::ip::make_address(cfg_.server.host, not_numeric);
  if (!not_numeric) {
    // A numeric address needs no resolver (whose thread a fork would not keep).
    socket_.async_connect(asio::ip::tcp::endpoint(address, cfg_.server.port),
                          asio::bind_executor(strand_, [self, gen](error_code ec) {
                            if (gen != self->generation_) return;
                            if (ec) return self->fail_all(error::connection_failed, true);
                            self->on_connected();
                          }));
    return;
  }
  resolver_.async_resolve(
      cfg_.server.host, std::to_string(cfg_.server.port),
      asio::bind_executor(strand_, [self, gen](error_code ec, asio::ip::tcp::resolver::results_type results) {
        if (gen != self->generation_) return;
        if (ec) return self->fail_all(error::connection_failed, true);
        asio::async_connect(self->socket_, results,
                            asio::bind_executor(self->strand_, [self, gen](error_code ec2, const auto&) {
                              if (gen != self->generation_) return;
                              if (ec2) return self->fail_all(error::connection_failed, true);
                              self->on_connected();
                            }));
      }));
}

void connection::on_connected() {
  state_ = state::ready;
  backoff_ = std::chrono::milliseconds(0);
  last_heard_ = steady::now();
  ping_sent_.reset();
  error_code ignored;
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  // The handshake goes first, before whatever waited for the connection.
  std::vector<pending> handshake;
  auto check = [self = shared_from_this(), gen = generation_](error_code ec, const reply&) {
    if (ec && gen == self->generation_) self->fail_all(error::server_error, true);
  };
  const bool replies = !cfg_.subscriber;
  auto add = [&](std::vector<std::string> args) {
    handshake.push_back(pending{encode_command(args), replies ? callback(check) : callback{}, std::nullopt, {}});
  };
  if (!cfg_.server.password.empty()) add({"AUTH", cfg_.server.password});
  if (cfg_.server.db != 0) add({"SELECT", std::to_string(cfg_.server.db)});
  if (!cfg_.subscriber) {
    for (int i = 0; i < script_count; ++i) add({"SCRIPT", "LOAD", script_source(static_cast<script>(i))});
  }
  queue_.insert(queue_.begin(), std::make_move_iterator(handshake.begin()),
                std::make_move_iterator(handshake.end()));
  if (cfg_.on_connected) {
    asio::post(strand_, cfg_.on_connected);
  }
  read_some();
  write_some();
}

void connection::fail_all(error_code ec, bool backoff) {
  ++generation_;
  writing_ = false;
  error_code ignored;
  socket_.close(ignored);
  resolver_.cancel();
  auto queued = std::move(queue_);
  queue_.clear();
  for (auto& p : queued) {
    if (p.done) post_callback(std::move(p.done), ec);
  }
  if (backoff) {
    backoff_ = backoff_.count() == 0 ? cfg_.reconnect_min : std::min(backoff_ * 2, cfg_.reconnect_max);
    backoff_until_ = steady::now() + backoff_;
    state_ = state::backoff;
  } else {
    backoff_until_ = steady::now();
    state_ = state::backoff;
  }
  arm_timer();
}

void connection::write_some() {
  if (writing_ || state_ != state::ready) return;
  write_buffer_.clear();
  const auto now = steady::now();
  std::deque<pending> kept;
  for (auto& p : queue_) {
    if (!p.sent) {
      write_buffer_ += p.wire;
      p.sent = true;
      p.sent_at = now;
    }
    if (p.done) kept.push_back(std::move(p));  // no reply expected: done with it
  }
  queue_ = std::move(kept);
  if (write_buffer_.empty()) return;
  writing_ = true;
  arm_timer();
  const auto gen = generation_;
  asio::async_write(socket_, asio::buffer(write_buffer_),
                    asio::bind_executor(strand_, [self = shared_from_this(), gen](error_code ec, std::size_t) {
                      if (gen != self->generation_) return;
                      self->writing_ = false;
                      if (ec) return self->fail_all(error::connection_failed, true);
                      self->write_some();
                    }));
}

void connection::read_some() {
  const auto gen = generation_;
  socket_.async_read_some(asio::buffer(read_buffer_),
                          asio::bind_executor(strand_, [self = shared_from_this(), gen](error_code ec, std::size_t n) {
                            if (gen != self->generation_) return;
                            if (ec) return self->fail_all(error::connection_failed, true);
                            self->on_bytes(n);
                          }));
}

void connection::on_bytes(std::size_t n) {
  const auto gen = generation_;
  last_heard_ = steady::now();
  ping_sent_.reset();
  decoder_->feed(std::string_view(read_buffer_.data(), n));
  while (gen == generation_) {
    auto r = decoder_->next();
    if (!r) break;
    on_reply(std::move(*r));
  }
  if (gen != generation_) return;
  if (decoder_->failed()) return fail_all(error::protocol, true);
  read_some();
}

void connection::on_reply(reply r) {
  if (cfg_.on_round_trip) cfg_.on_round_trip();
  if (cfg_.subscriber) {
    if (cfg_.on_push) cfg_.on_push(r);
    return;
  }
  if (queue_.empty() || !queue_.front().sent) {
    return fail_all(error::protocol, true);  // a reply nobody asked for
  }
  pending p = std::move(queue_.front());
  queue_.pop_front();
  if (r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0 && p.retry) {
    // The script cache was flushed: EVAL caches it again and runs it.
    std::vector<std::string> args{"EVAL", script_source(*p.retry), std::to_string(key_count(*p.retry))};
    args.insert(args.end(), p.retry_args.begin(), p.retry_args.end());
    enqueue(pending{encode_command(args), std::move(p.done), std::nullopt, {}});
  } else if (r.is_error()) {
    post_callback(std::move(p.done), error::server_error, std::move(r));
  } else {
    post_callback(std::move(p.done), {}, std::move(r));
  }
  arm_timer();
}

void connection::arm_timer() {
  std::optional<steady::time_point> at;
  if (state_ == state::connecting) {
    at = connect_deadline_;
  } else if (state_ == state::ready && !queue_.empty() && queue_.front().sent) {
    at = queue_.front().sent_at + cfg_.request_timeout;
  } else if (state_ == state::backoff && keep_connected_) {
    at = backoff_until_;
  } else {
    at = heartbeat_due();
  }
  if (!at) {
    timer_.cancel();
    return;
  }
  timer_.expires_at(*at);
  timer_.async_wait(asio::bind_executor(strand_, [self = shared_from_this()](error_code ec) {
    if (!ec) self->on_timer();
  }));
}

void connection::on_timer() {
  const auto now = steady::now();
  if (state_ == state::connecting && now >= connect_deadline_) {
    return fail_all(error::timed_out, true);
  }
  if (state_ == state::ready && !queue_.empty() && queue_.front().sent &&
      now >= queue_.front().sent_at + cfg_.request_timeout) {
    return fail_all(error::timed_out, true);
  }
  if (state_ == state::backoff && keep_connected_ && now >= backoff_until_) {
    return start_connect();
  }
  if (!on_heartbeat(now)) return;
  arm_timer();
}

// Subscriber only: when the liveness check next needs the timer, if ever.
std::optional<steady::time_point> connection::heartbeat_due() const {
  if (!cfg_.subscriber || cfg_.heartbeat.count() <= 0 || state_ != state::ready || !keep_connected_) {
    return std::nullopt;
  }
  if (ping_sent_) return *ping_sent_ + cfg_.request_timeout;
  return last_heard_ + cfg_.heartbeat;
}

// Sends the PING that is due, or drops a link whose PING went unanswered.
// False if the connection failed.
bool connection::on_heartbeat(steady::time_point now) {
  const auto due = heartbeat_due();
  if (!due || now < *due) return true;
  if (ping_sent_) {
    fail_all(error::timed_out, true);
    return false;
  }
  ping_sent_ = now;
  send({"PING"});  // allowed while subscribed; any bytes back prove the link
  return true;
}

void connection::post_callback(callback done, error_code ec, reply r) {
  asio::post(strand_, [done = std::move(done), ec, r = std::move(r)]() mutable { done(ec, std::move(r)); });
}

}  // namespace keysem::redis::detail
