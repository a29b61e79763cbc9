// What a keyed table accepts as a key and as a lookup key.
#ifndef KEYSEM_DETAIL_LOOKUP_KEY_HPP
#define KEYSEM_DETAIL_LOOKUP_KEY_HPP

#include <concepts>
#include <cstddef>
#include <functional>
#include <span>
#include <string_view>
#include <type_traits>

namespace keysem::detail {

// A key type the semaphore can look up without building a key_type: the key
// itself, or any type the hasher and the key comparison accept transparently.
// (clang-format 14 cannot lay out requires-clauses: they are kept as written.)
// clang-format off
template <class K, class Key, class Hash, class KeyEqual>
concept lookup_key_for =
    std::same_as<std::remove_cvref_t<K>, Key> ||
    (requires { typename Hash::is_transparent; } &&
     (requires { typename KeyEqual::is_transparent; } ||
      std::same_as<KeyEqual, std::equal_to<Key>>) &&
     std::constructible_from<Key, const K&>);
// clang-format on

// Views that do not own what they show: a stored key of such a type would
// dangle as soon as the caller's string or buffer goes.
template <class T>
struct is_non_owning_key : std::false_type {};
template <class Char, class Traits>
struct is_non_owning_key<std::basic_string_view<Char, Traits>> : std::true_type {};
template <class T, std::size_t Extent>
struct is_non_owning_key<std::span<T, Extent>> : std::true_type {};

// The comparison stored in the key table: std::equal_to<Key> becomes the
// transparent std::equal_to<>, which compares the same way but also accepts
// looked-up types such as std::string_view.
template <class Key, class KeyEqual>
using table_equal_t =
    std::conditional_t<std::same_as<KeyEqual, std::equal_to<Key>>, std::equal_to<>, KeyEqual>;

}  // namespace keysem::detail

#endif
