// keysem/hash.hpp — keysem::hash<Key>, the default hasher of async_keyed_semaphore.
#ifndef KEYSEM_HASH_HPP
#define KEYSEM_HASH_HPP

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>

namespace keysem {
namespace detail {

// XXH3 lives in src/hash.cpp so that xxHash stays a private dependency.
std::uint64_t xxh3_bytes(const void* data, std::size_t size) noexcept;
std::uint64_t xxh3_integer(std::uint64_t value) noexcept;

}  // namespace detail

/// The default hasher: XXH3 (xxHash) for strings and integral or enum keys,
/// `std::hash<Key>` for everything else.
///
/// The XXH3-based specialisations declare `is_avalanching` (every output bit
/// depends on every input bit), which lets Boost's flat maps skip their own
/// mixing step, and `is_transparent`, so that a `std::string` key can be looked
/// up by `std::string_view` or `const char*` without building a string.
template <class Key>
struct hash : std::hash<Key> {};

/// XXH3 over the characters; transparent over every kind of narrow string.
struct string_hash {
  using is_transparent = void;
  using is_avalanching = void;

  std::size_t operator()(std::string_view s) const noexcept {
    return static_cast<std::size_t>(detail::xxh3_bytes(s.data(), s.size()));
  }
  std::size_t operator()(const std::string& s) const noexcept {
    return (*this)(std::string_view(s));
  }
  std::size_t operator()(const char* s) const noexcept { return (*this)(std::string_view(s)); }
};

template <>
struct hash<std::string> : string_hash {};

template <>
struct hash<std::string_view> : string_hash {};

/// XXH3 over the integer's value widened to 64 bits, so equal values of
/// different widths hash alike.
// (clang-format 14 cannot lay out requires-clauses)
// clang-format off
template <class Key>
  requires std::integral<Key> || std::is_enum_v<Key>
struct hash<Key> {
  // clang-format on
  using is_avalanching = void;

  std::size_t operator()(Key key) const noexcept {
    return static_cast<std::size_t>(detail::xxh3_integer(to_u64(key)));
  }

 private:
  static std::uint64_t to_u64(Key key) noexcept {
    if constexpr (std::is_enum_v<Key>) {
      return static_cast<std::uint64_t>(static_cast<std::underlying_type_t<Key>>(key));
    } else {
      return static_cast<std::uint64_t>(key);
    }
  }
};

}  // namespace keysem

#endif
