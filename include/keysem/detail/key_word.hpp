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

// The most acquires that can be registered as waiting on one key.
inline constexpr std::uint64_t max_waiters = waiters_mask >> 32;

constexpr std::uint64_t held(std::uint64_t word) noexcept { return word & held_mask; }

constexpr std::uint64_t waiters(std::uint64_t word) noexcept { return (word & waiters_mask) >> 32; }

constexpr bool drain_scheduled(std::uint64_t word) noexcept { return (word & drain_bit) != 0; }

// What an acquire of n permits on a key whose word is `word` gets, when the
// key's limit is `limit`: the permits at once (nobody waits and they fit), a
// place in the queue, or a refusal because the queue is full. Only the word
// decides, so a caller can retry its compare-and-swap with the verdict for
// the new word.
enum class admission { granted, queued, queue_full };

constexpr admission admit(std::uint64_t word, std::uint64_t n, std::uint64_t limit) noexcept {
  if (waiters(word) == 0 && held(word) + n <= limit) {
    return admission::granted;
  }
  return waiters(word) < max_waiters ? admission::queued : admission::queue_full;
}

// The word after the verdict is applied.
constexpr std::uint64_t admitted(std::uint64_t word, std::uint64_t n, admission verdict) noexcept {
  switch (verdict) {
    case admission::granted:
      return word + n;
    case admission::queued:
      return word + one_waiter;
    default:
      return word;
  }
}

}  // namespace keysem::detail::key_word

#endif
