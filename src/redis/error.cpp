// The keysem.redis error category.
#include <keysem/redis/error.hpp>

#include <string>

namespace keysem::redis {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "keysem.redis"; }

  std::string message(int value) const override {
    switch (static_cast<error>(value)) {
      case error::connection_failed: return "no connection to Redis";
      case error::timed_out: return "Redis did not answer in time";
      case error::protocol: return "unexpected reply from Redis";
      case error::server_error: return "Redis answered with an error";
      case error::limit_mismatch:
        return "permits_per_key differs from the default limit stored in Redis";
      case error::closed: return "the fleet semaphore is closed";
      case error::not_replicated: return "too few replicas acknowledged the grant";
    }
    return "unknown keysem.redis error";
  }
};

}  // namespace

const boost::system::error_category& redis_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace keysem::redis
