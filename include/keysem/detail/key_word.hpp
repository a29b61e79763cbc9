// The atomic word that holds a key's whole synchronous state.
#ifndef KEYSEM_DETAIL_KEY_WORD_HPP
#define KEYSEM_DETAIL_KEY_WORD_HPP

#include <cstdint>

namespace keysem::detail::key_word {

// Layout of key_state_base::word_:
//   bits  0..31  permits held
//   bits 32..61  acquire operations registered as waiting (queued, about to be
//                queued, or cancelled and about to leave the queue)
//   bit  62      the strand is working on the queue outside a drain job
//   bit  63      a drain job is scheduled on the shard's strand
// Every part counts as a reference to the key's state: the state is reclaimed
// exactly when the word becomes zero, and that transition only ever happens
// under the shard's lock (see docs/design.md).
inline constexpr std::uint64_t held_mask = 0xFFFF'FFFFull;
inline constexpr std::uint64_t one_waiter = 1ull << 32;
inline constexpr std::uint64_t waiters_mask = 0x3FFF'FFFFull << 32;
inline constexpr std::uint64_t strand_pin_bit = 1ull << 62;
inline constexpr std::uint64_t drain_bit = 1ull << 63;

// The largest permits_per_key: held permits must fit in bits 0..31.
inline constexpr std::uint64_t max_permits = 0x7FFF'FFFFull;

constexpr std::uint64_t held(std::uint64_t word) noexcept { return word & held_mask; }

constexpr std::uint64_t waiters(std::uint64_t word) noexcept { return (word & waiters_mask) >> 32; }

constexpr bool drain_scheduled(std::uint64_t word) noexcept { return (word & drain_bit) != 0; }

}  // namespace keysem::detail::key_word

#endif
