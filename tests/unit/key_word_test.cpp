// The admission rule of a key's word, on its own: no semaphore, no io_context.
#include <keysem/detail/key_word.hpp>

#include <doctest/doctest.h>

#include <cstdint>

namespace kw = keysem::detail::key_word;

namespace {

constexpr std::uint64_t word_of(std::uint64_t held, std::uint64_t waiters) {
  return held | (waiters << 32);
}

}  // namespace

TEST_CASE("key word: admit grants exactly when nobody waits and the permits fit") {
  for (std::uint64_t limit = 1; limit <= 4; ++limit) {
    for (std::uint64_t held = 0; held <= limit; ++held) {
      for (std::uint64_t waiters = 0; waiters <= 3; ++waiters) {
        for (std::uint64_t n = 1; n <= limit; ++n) {
          const std::uint64_t word = word_of(held, waiters);
          const kw::admission verdict = kw::admit(word, n, limit);
          const bool fits = waiters == 0 && held + n <= limit;
          CHECK(verdict == (fits ? kw::admission::granted : kw::admission::queued));
          const std::uint64_t after = kw::admitted(word, n, verdict);
          if (fits) {
            CHECK(kw::held(after) == held + n);
            CHECK(kw::waiters(after) == waiters);
          } else {
            CHECK(kw::held(after) == held);
            CHECK(kw::waiters(after) == waiters + 1);
          }
        }
      }
    }
  }
}

TEST_CASE("key word: a key whose waiter count is at its maximum refuses to queue one more") {
  const std::uint64_t full = word_of(1, kw::max_waiters);
  CHECK(kw::waiters(full) == kw::max_waiters);
  CHECK(kw::admit(full, 1, 1) == kw::admission::queue_full);
  CHECK(kw::admitted(full, 1, kw::admission::queue_full) == full);
  // One below the maximum still queues, and the result does not spill into
  // the strand-pin or drain bits.
  const std::uint64_t almost = word_of(1, kw::max_waiters - 1);
  CHECK(kw::admit(almost, 1, 1) == kw::admission::queued);
  const std::uint64_t after = kw::admitted(almost, 1, kw::admission::queued);
  CHECK(kw::waiters(after) == kw::max_waiters);
  CHECK((after & (kw::strand_pin_bit | kw::drain_bit)) == 0);
}

TEST_CASE("key word: the pin and drain bits do not change the verdict") {
  const std::uint64_t flags = kw::strand_pin_bit | kw::drain_bit;
  CHECK(kw::admit(word_of(0, 0) | flags, 1, 1) == kw::admission::granted);
  CHECK(kw::admit(word_of(1, 0) | flags, 1, 1) == kw::admission::queued);
  CHECK(kw::admit(word_of(0, 1) | flags, 1, 1) == kw::admission::queued);
  CHECK(kw::held(kw::admitted(word_of(0, 0) | flags, 1, kw::admission::granted)) == 1);
}
