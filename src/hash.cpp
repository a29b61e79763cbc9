#include <keysem/hash.hpp>

#include <xxhash.h>

namespace keysem::detail {

std::uint64_t xxh3_bytes(const void* data, std::size_t size) noexcept {
  return XXH3_64bits(data, size);
}

std::uint64_t xxh3_integer(std::uint64_t value) noexcept {
  return XXH3_64bits(&value, sizeof value);
}

}  // namespace keysem::detail
