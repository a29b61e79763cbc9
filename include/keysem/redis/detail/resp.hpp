// keysem/redis/detail/resp.hpp — RESP2 encoding and incremental decoding.
// hiredis is used only as a codec, behind this interface, in src/redis/resp.cpp:
// keysem owns the sockets, so no hiredis context ever exists.
#ifndef KEYSEM_REDIS_DETAIL_RESP_HPP
#define KEYSEM_REDIS_DETAIL_RESP_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keysem::redis::detail {

/// One decoded reply, owning its data (hiredis' tree is freed at once).
struct reply {
  enum class kind { string, array, integer, nil, status, error };
  kind type = kind::nil;
  std::int64_t integer = 0;
  std::string str;  // string, status and error replies
  std::vector<reply> elements;

  bool is_error() const noexcept { return type == kind::error; }
};

/// The wire form of one command (a RESP array of bulk strings).
std::string encode_command(const std::vector<std::string>& args);

/// Feeds bytes in as they arrive, takes complete replies out in order.
class reply_decoder {
 public:
  reply_decoder();
  ~reply_decoder();
  reply_decoder(const reply_decoder&) = delete;
  reply_decoder& operator=(const reply_decoder&) = delete;

  void feed(std::string_view bytes);

  /// The next complete reply, or nullopt when more bytes are needed.
  /// Sets failed() (and returns nullopt from then on) on malformed input.
  std::optional<reply> next();

  bool failed() const noexcept { return failed_; }

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  bool failed_ = false;
};

}  // namespace keysem::redis::detail

#endif
