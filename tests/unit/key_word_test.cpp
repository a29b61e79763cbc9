// The key's state machine on its own (key_word.hpp): every transition,
// exhaustively over small words, limits and queue bounds; no io_context.
#include <keysem/detail/key_word.hpp>

#include <doctest/doctest.h>

#include <cstdint>

namespace kw = keysem::detail::key_word;
using kw::verdict;

namespace {

constexpr std::uint64_t word_of(std::uint64_t held, std::uint64_t waiters,
                                std::uint64_t flags = 0) {
  return held | (waiters << 32) | flags;
}

// The rule of docs/design.md, written out plainly.
verdict expected_admit(std::uint64_t held, std::uint64_t waiters, std::uint64_t n,
                       std::uint64_t limit, std::uint64_t bound) {
  if (n == 0 || n > limit) return verdict::invalid;
  if (waiters == 0 && held + n <= limit) return verdict::granted;
  return waiters < bound ? verdict::queued : verdict::queue_full;
}

constexpr std::uint64_t flag_sets[] = {0, kw::strand_pin_bit, kw::drain_bit,
                                       kw::strand_pin_bit | kw::drain_bit};

}  // namespace

TEST_CASE("key word: admit follows the table for every small word, limit and bound") {
  for (std::uint64_t limit = 1; limit <= 4; ++limit) {
    for (std::uint64_t bound = 0; bound <= 3; ++bound) {
      for (std::uint64_t held = 0; held <= limit + 1; ++held) {  // +1: a lowered limit
        for (std::uint64_t waiters = 0; waiters <= 4; ++waiters) {
          for (std::uint64_t n = 0; n <= limit + 1; ++n) {
            for (const std::uint64_t flags : flag_sets) {
              const std::uint64_t word = word_of(held, waiters, flags);
              const verdict v = kw::admit(word, n, {limit, bound});
              CHECK(v == expected_admit(held, waiters, n, limit, bound));
              const std::uint64_t after = kw::apply(word, n, v);
              CHECK((after & (kw::strand_pin_bit | kw::drain_bit)) == flags);
              CHECK(kw::held(after) == held + (v == verdict::granted ? n : 0));
              CHECK(kw::waiters(after) == waiters + (v == verdict::queued ? 1 : 0));
              CHECK(kw::waiters(after) <= (bound > waiters ? bound : waiters));
            }
          }
        }
      }
    }
  }
}

TEST_CASE("key word: try_admit never queues and never refuses for a full queue") {
  for (std::uint64_t limit = 1; limit <= 4; ++limit) {
    for (std::uint64_t held = 0; held <= limit + 1; ++held) {
      for (std::uint64_t waiters = 0; waiters <= 2; ++waiters) {
        for (std::uint64_t n = 0; n <= limit + 1; ++n) {
          const verdict v = kw::try_admit(word_of(held, waiters), n, {limit, 0});
          if (n == 0 || n > limit) {
            CHECK(v == verdict::invalid);
          } else if (waiters == 0 && held + n <= limit) {
            CHECK(v == verdict::granted);
          } else {
            CHECK(v == verdict::busy);
          }
          CHECK(kw::apply(word_of(held, waiters), n, verdict::busy) == word_of(held, waiters));
        }
      }
    }
  }
}

TEST_CASE("key word: the word's own waiter capacity bounds an unbounded queue") {
  const kw::policy unbounded{1, ~std::uint64_t{0}};
  CHECK(kw::admit(word_of(1, kw::max_waiters), 1, unbounded) == verdict::queue_full);
  CHECK(kw::admit(word_of(1, kw::max_waiters - 1), 1, unbounded) == verdict::queued);
  const std::uint64_t after =
      kw::apply(word_of(1, kw::max_waiters - 1), 1, verdict::queued);
  CHECK(kw::waiters(after) == kw::max_waiters);
  CHECK((after & (kw::strand_pin_bit | kw::drain_bit)) == 0);
}

TEST_CASE("key word: a release asks for a drain exactly when someone waits") {
  for (std::uint64_t held = 1; held <= 4; ++held) {
    for (std::uint64_t waiters = 0; waiters <= 3; ++waiters) {
      for (std::uint64_t n = 1; n <= held; ++n) {
        const std::uint64_t after = kw::released(word_of(held, waiters), n);
        CHECK(kw::held(after) == held - n);
        CHECK(kw::waiters(after) == waiters);
        CHECK(kw::drain_scheduled(after) == (waiters != 0));
      }
    }
  }
}

TEST_CASE("key word: the strand grants the head when it fits, fails it when it never can") {
  for (std::uint64_t limit = 1; limit <= 4; ++limit) {
    for (std::uint64_t held = 0; held <= limit + 1; ++held) {
      for (std::uint64_t n = 1; n <= limit + 1; ++n) {
        const auto action = kw::serve_head(word_of(held, 2), n, limit);
        if (n > limit) {
          CHECK(action == kw::head_action::fail);
        } else if (held + n <= limit) {
          CHECK(action == kw::head_action::grant);
          const std::uint64_t after = kw::granted_from_queue(word_of(held, 2), n);
          CHECK(after == word_of(held + n, 1));
        } else {
          CHECK(action == kw::head_action::wait);
        }
      }
    }
  }
  CHECK(kw::left_queue(word_of(3, 2, kw::drain_bit)) == word_of(3, 1, kw::drain_bit));
}

TEST_CASE("key word: a grant pass is worth making only with free permits or a changed limit") {
  for (std::uint64_t limit = 1; limit <= 4; ++limit) {
    for (std::uint64_t held = 0; held <= limit + 1; ++held) {
      const std::uint64_t word = word_of(held, 3);
      CHECK(kw::may_grant(word, limit) == (held < limit));
      CHECK(kw::may_grant(word | kw::drain_bit, limit) == (held < limit));
      CHECK(kw::may_grant(word | kw::limit_changed_bit | kw::drain_bit, limit));
      // No head can be served when may_grant is false, whatever it asks for.
      if (!kw::may_grant(word, limit)) {
        for (std::uint64_t n = 1; n <= limit; ++n) {
          CHECK(kw::serve_head(word, n, limit) == kw::head_action::wait);
        }
      }
    }
  }
}

TEST_CASE("key word: the owner bit is neither a permit nor a waiter, and keeps the word from zero") {
  // The one state of an async_semaphore carries owner_bit while the semaphore
  // lives: every transition must behave as without it, keep it, and never
  // bring the word to zero (which would reclaim the state under a request).
  CHECK((kw::owner_bit & (kw::held_mask | kw::waiters_mask | kw::limit_changed_bit |
                          kw::strand_pin_bit | kw::drain_bit)) == 0);
  CHECK(kw::max_permits < kw::owner_bit);
  for (std::uint64_t limit = 1; limit <= 4; ++limit) {
    for (std::uint64_t held = 0; held <= limit; ++held) {
      for (std::uint64_t waiters = 0; waiters <= 3; ++waiters) {
        for (const std::uint64_t flags : flag_sets) {
          const std::uint64_t plain = word_of(held, waiters, flags);
          const std::uint64_t owned = plain | kw::owner_bit;
          CHECK(kw::held(owned) == held);
          CHECK(kw::waiters(owned) == waiters);
          for (std::uint64_t n = 0; n <= limit + 1; ++n) {
            const kw::policy p{limit, 8};
            const verdict v = kw::admit(owned, n, p);
            CHECK(v == kw::admit(plain, n, p));
            CHECK(kw::try_admit(owned, n, p) == kw::try_admit(plain, n, p));
            CHECK(kw::apply(owned, n, v) == (kw::apply(plain, n, v) | kw::owner_bit));
            if (n >= 1 && n <= held) {
              const std::uint64_t after = kw::released(owned, n);
              CHECK(after == (kw::released(plain, n) | kw::owner_bit));
              CHECK(after != 0);
            }
            if (n >= 1 && waiters > 0) {
              CHECK(kw::serve_head(owned, n, limit) == kw::serve_head(plain, n, limit));
              CHECK(kw::granted_from_queue(owned, n) ==
                    (kw::granted_from_queue(plain, n) | kw::owner_bit));
            }
          }
          if (waiters > 0) {
            CHECK(kw::left_queue(owned) == (kw::left_queue(plain) | kw::owner_bit));
          }
          CHECK(kw::limit_changed(owned) == (kw::limit_changed(plain) | kw::owner_bit));
        }
      }
    }
  }
  // The last release of an owned state leaves the owner bit alone; once the
  // owner has gone (drop_owner subtracts the bit), it reaches zero.
  CHECK(kw::released(word_of(1, 0) | kw::owner_bit, 1) == kw::owner_bit);
  CHECK(kw::released(word_of(1, 0), 1) == 0);
}
