// The key word's transitions for the total limit (a request its key admits
// but the total holds back) and the owner bit of an unkeyed semaphore's
// state: exhaustively over small words; no io_context.
#include <keysem/detail/key_word.hpp>

#include <doctest/doctest.h>

#include <cstdint>

namespace kw = keysem::detail::key_word;

namespace {

constexpr std::uint64_t word_of(std::uint64_t held, std::uint64_t waiters,
                                std::uint64_t flags = 0) {
  return held | (waiters << 32) | flags;
}

constexpr std::uint64_t flag_sets[] = {0, kw::owner_bit, kw::drain_bit, kw::owner_bit | kw::drain_bit};

}  // namespace

TEST_CASE("key word, stages: a staged request holds its key's permits and stays a waiter") {
  for (std::uint64_t flags : flag_sets) {
    for (std::uint64_t held = 0; held <= 4; ++held) {
      for (std::uint64_t waiters = 0; waiters <= 3; ++waiters) {
        for (std::uint64_t n = 1; n <= 3; ++n) {
          const std::uint64_t before = word_of(held, waiters, flags);
          // At once: the key's permits and one waiter.
          CHECK(kw::staged(before, n) == word_of(held + n, waiters + 1, flags));
          // From the queue: the waiter it already is, and the permits.
          if (waiters > 0) {
            CHECK(kw::staged_from_queue(before, n) == word_of(held + n, waiters, flags));
          }
        }
      }
    }
  }
}

TEST_CASE("key word, stages: leaving the total keeps or returns the reservation") {
  for (std::uint64_t flags : flag_sets) {
    for (std::uint64_t n = 1; n <= 3; ++n) {
      for (std::uint64_t others = 0; others <= 3; ++others) {  // other holders
        for (std::uint64_t waiters = 1; waiters <= 3; ++waiters) {
          const std::uint64_t before = word_of(others + n, waiters, flags);
          // Granted by the total: still holding, no longer waiting.
          CHECK(kw::granted_from_stage(before) == word_of(others + n, waiters - 1, flags));
          // Left without permits: both go; a drain when others still wait.
          const std::uint64_t after = kw::left_stage(before, n);
          CHECK(kw::held(after) == others);
          CHECK(kw::waiters(after) == waiters - 1);
          CHECK(kw::drain_scheduled(after) == ((waiters - 1 != 0) || (flags & kw::drain_bit) != 0));
          CHECK((after & kw::owner_bit) == (flags & kw::owner_bit));
        }
      }
    }
  }
}

TEST_CASE("key word, owner bit: invisible to every rule, and the word never reaches zero with it") {
  const kw::policy p{3, 2};
  for (std::uint64_t held = 0; held <= 4; ++held) {
    for (std::uint64_t waiters = 0; waiters <= 3; ++waiters) {
      const std::uint64_t plain = word_of(held, waiters);
      const std::uint64_t owned = plain | kw::owner_bit;
      CHECK(kw::held(owned) == held);
      CHECK(kw::waiters(owned) == waiters);
      for (std::uint64_t n = 0; n <= 4; ++n) {
        CHECK(kw::admit(owned, n, p) == kw::admit(plain, n, p));
        CHECK(kw::try_admit(owned, n, p) == kw::try_admit(plain, n, p));
      }
      for (std::uint64_t n = 1; n <= held; ++n) {
        CHECK(kw::released(owned, n) == (kw::released(plain, n) | kw::owner_bit));
        CHECK(kw::released(owned, n) != 0);
      }
    }
  }
  CHECK(kw::held_mask == kw::max_permits);  // held permits never reach the owner bit
}
