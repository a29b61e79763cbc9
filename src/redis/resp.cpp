// RESP2 codec on top of hiredis 0.14's format and reader functions.
#include <keysem/redis/detail/resp.hpp>

#include <hiredis/hiredis.h>

#include <new>
#include <stdexcept>

namespace keysem::redis::detail {
namespace {

reply convert(const redisReply& in) {
  reply out;
  switch (in.type) {
    case REDIS_REPLY_STRING: out.type = reply::kind::string; break;
    case REDIS_REPLY_ARRAY: out.type = reply::kind::array; break;
    case REDIS_REPLY_INTEGER: out.type = reply::kind::integer; break;
    case REDIS_REPLY_STATUS: out.type = reply::kind::status; break;
    case REDIS_REPLY_ERROR: out.type = reply::kind::error; break;
    default: out.type = reply::kind::nil; break;
  }
  out.integer = in.integer;
  if (in.str != nullptr) {
    out.str.assign(in.str, in.len);
  }
  out.elements.reserve(in.elements);
  for (std::size_t i = 0; i < in.elements; ++i) {
    out.elements.push_back(convert(*in.element[i]));
  }
  return out;
}

}  // namespace

std::string encode_command(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> argvlen;
  argv.reserve(args.size());
  argvlen.reserve(args.size());
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    argvlen.push_back(arg.size());
  }
  char* target = nullptr;
  const int len = redisFormatCommandArgv(&target, static_cast<int>(args.size()), argv.data(),
                                         argvlen.data());
  if (len < 0 || target == nullptr) {
    throw std::bad_alloc();
  }
  std::string out(target, static_cast<std::size_t>(len));
  redisFreeCommand(target);
  return out;
}

struct reply_decoder::impl {
  redisReader* reader = redisReaderCreate();
  ~impl() {
    if (reader != nullptr) {
      redisReaderFree(reader);
    }
  }
};

reply_decoder::reply_decoder() : impl_(std::make_unique<impl>()) {
  if (impl_->reader == nullptr) {
    throw std::bad_alloc();
  }
  // Keep the buffer hiredis retains between reads small (0 would mean never shrink).
  impl_->reader->maxbuf = 64 * 1024;
}

reply_decoder::~reply_decoder() = default;

void reply_decoder::feed(std::string_view bytes) {
  if (!failed_ && redisReaderFeed(impl_->reader, bytes.data(), bytes.size()) != REDIS_OK) {
    failed_ = true;
  }
}

std::optional<reply> reply_decoder::next() {
  if (failed_) {
    return std::nullopt;
  }
  void* raw = nullptr;
  if (redisReaderGetReply(impl_->reader, &raw) != REDIS_OK) {
    failed_ = true;
    return std::nullopt;
  }
  if (raw == nullptr) {
    return std::nullopt;
  }
  auto* tree = static_cast<redisReply*>(raw);
  reply out = convert(*tree);
  freeReplyObject(tree);
  return out;
}

}  // namespace keysem::redis::detail
