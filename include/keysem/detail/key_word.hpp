// The atomic word that holds a key's whole synchronous state, and every
// transition of it: small pure functions, tested without an io_context.
#ifndef KEYSEM_DETAIL_KEY_WORD_HPP
#define KEYSEM_DETAIL_KEY_WORD_HPP

#include <cstdint>

namespace keysem::detail::key_word {

// Layout of key_state_base::word_:
//   bits  0..30  permits held
//   bit  31      an owner outside the counts keeps the state alive: the one
//                state of an unkeyed async_semaphore, for as long as the
//                semaphore object lives (keyed states never set it)
//   bits 32..60  acquire operations registered as waiting (queued, about to be
//                queued, or cancelled and about to leave the queue)
//   bit  61      the limit changed while acquires waited: the next grant pass
//                first fails those the new limit can never grant (set only
//                together with the drain bit, so it never outlives a drain)
//   bit  62      the strand is working on the queue outside a drain job
//   bit  63      a drain job is scheduled on the shard's strand
// Every part counts as a reference to the key's state: the state is reclaimed
// exactly when the word becomes zero, and that transition only ever happens
// under the shard's lock (see docs/design.md).
inline constexpr std::uint64_t held_mask = 0x7FFF'FFFFull;
inline constexpr std::uint64_t owner_bit = 1ull << 31;
inline constexpr std::uint64_t one_waiter = 1ull << 32;
inline constexpr std::uint64_t waiters_mask = 0x1FFF'FFFFull << 32;
inline constexpr std::uint64_t limit_changed_bit = 1ull << 61;
inline constexpr std::uint64_t strand_pin_bit = 1ull << 62;
inline constexpr std::uint64_t drain_bit = 1ull << 63;

// The largest limit of a key: held permits must fit in bits 0..30.
inline constexpr std::uint64_t max_permits = 0x7FFF'FFFFull;

// The most acquires that can be registered as waiting on one key.
inline constexpr std::uint64_t max_waiters = waiters_mask >> 32;

constexpr std::uint64_t held(std::uint64_t word) noexcept { return word & held_mask; }

constexpr std::uint64_t waiters(std::uint64_t word) noexcept { return (word & waiters_mask) >> 32; }

constexpr bool drain_scheduled(std::uint64_t word) noexcept { return (word & drain_bit) != 0; }

// What a key admits: its own limit, and how many acquires may wait on it
// (capped at max_waiters, what the word can count).
struct policy {
  std::uint64_t limit;
  std::uint64_t max_waiting;
};

// The answer to a request on a key.
enum class verdict {
  granted,     // the permits are taken
  queued,      // one waiter is registered: the request waits in the queue
  busy,        // try_acquire only: the permits are not free now
  queue_full,  // it would have to wait, and the queue is at its bound
  invalid,     // n is 0 or above the key's limit: it could never be granted
  staged,      // with a total limit: the key's permits are taken and one waiter
               // is registered, and the request waits for the total
};

// An acquire of n permits: granted when nobody waits and they fit (no
// barging past waiters), else queued while the queue has room.
constexpr verdict admit(std::uint64_t word, std::uint64_t n, const policy& p) noexcept {
  if (n == 0 || n > p.limit) {
    return verdict::invalid;
  }
  if (waiters(word) == 0 && held(word) + n <= p.limit) {
    return verdict::granted;
  }
  const std::uint64_t bound = p.max_waiting < max_waiters ? p.max_waiting : max_waiters;
  return waiters(word) < bound ? verdict::queued : verdict::queue_full;
}

// A try_acquire of n permits: never waits.
constexpr verdict try_admit(std::uint64_t word, std::uint64_t n, const policy& p) noexcept {
  if (n == 0 || n > p.limit) {
    return verdict::invalid;
  }
  return waiters(word) == 0 && held(word) + n <= p.limit ? verdict::granted : verdict::busy;
}

// The word after a verdict of admit() or try_admit() is applied.
constexpr std::uint64_t apply(std::uint64_t word, std::uint64_t n, verdict v) noexcept {
  switch (v) {
    case verdict::granted:
      return word + n;
    case verdict::queued:
      return word + one_waiter;
    default:
      return word;
  }
}

// A new limit: when anyone waits, a grant pass must look at every waiter
// again; the changed word also makes a drain already past its scan go round
// once more.
constexpr std::uint64_t limit_changed(std::uint64_t word) noexcept {
  return waiters(word) != 0 ? (word | limit_changed_bit | drain_bit) : word;
}

// A release of n held permits; asks for a drain when anyone waits.
constexpr std::uint64_t released(std::uint64_t word, std::uint64_t n) noexcept {
  const std::uint64_t next = word - n;
  return waiters(next) != 0 ? (next | drain_bit) : next;
}

// Whether a grant pass could act on the queue now: permits are free under
// `limit`, or the limit changed (the pass first fails what the new limit can
// never grant). When it is false, a pass grants nothing, and a release that
// frees permits later finds waiters and schedules a drain, which runs on the
// strand after the job that asked.
constexpr bool may_grant(std::uint64_t word, std::uint64_t limit) noexcept {
  return (word & limit_changed_bit) != 0 || held(word) < limit;
}

// What the strand does with the oldest live waiter, wanting n permits, under
// the key's current limit: grant it, leave it (and everyone behind it:
// head-of-line) waiting for releases, or fail it because a lowered limit
// means it could never be granted.
enum class head_action { grant, wait, fail };

constexpr head_action serve_head(std::uint64_t word, std::uint64_t n, std::uint64_t limit) noexcept {
  if (n > limit) {
    return head_action::fail;
  }
  return held(word) + n <= limit ? head_action::grant : head_action::wait;
}

// A queued waiter granted n permits: it stops waiting and holds them.
constexpr std::uint64_t granted_from_queue(std::uint64_t word, std::uint64_t n) noexcept {
  return word + n - one_waiter;
}

// A registered waiter that leaves without permits (cancelled, timed out,
// failed, or never queued).
constexpr std::uint64_t left_queue(std::uint64_t word) noexcept { return word - one_waiter; }

// With a total limit, a request its key admits but the total holds back
// waits at the total with the key's permits reserved: it holds them, and
// still counts as a waiter of its key (waiting(key) and the queue bound
// count it; no request of the key overtakes it).

// A request granted by its key (word before the grant) that must wait for
// the total: the key's permits, and one waiter.
constexpr std::uint64_t staged(std::uint64_t word, std::uint64_t n) noexcept {
  return word + n + one_waiter;
}

// The queue's head granted n permits by its key, moving on to wait for the
// total: it keeps its waiter registration.
constexpr std::uint64_t staged_from_queue(std::uint64_t word, std::uint64_t n) noexcept {
  return word + n;
}

// A staged request granted by the total: it stops waiting, keeping its permits.
constexpr std::uint64_t granted_from_stage(std::uint64_t word) noexcept { return word - one_waiter; }

// A staged request that leaves without permits: its reservation and its
// waiter go; asks for a drain when others wait.
constexpr std::uint64_t left_stage(std::uint64_t word, std::uint64_t n) noexcept {
  return released(word - one_waiter, n);
}

}  // namespace keysem::detail::key_word

#endif
