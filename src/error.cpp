#include <keysem/error.hpp>

#include <string>

namespace keysem {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "keysem"; }

  std::string message(int value) const override {
    switch (static_cast<error>(value)) {
      case error::closed:
        return "the semaphore is closed";
      case error::queue_full:
        return "too many acquires are waiting on the key";
    }
    return "unknown keysem error";
  }
};

}  // namespace

const boost::system::error_category& keysem_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace keysem
