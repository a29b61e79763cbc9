// Helpers for the fault-injection and peer-regression tests: the unit
// tests' support, plus snapshots and an allocator that fails on purpose.
#ifndef KEYSEM_TESTS_FAULTS_FAULT_SUPPORT_HPP
#define KEYSEM_TESTS_FAULTS_FAULT_SUPPORT_HPP

#include "../unit/test_support.hpp"

#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>

namespace keysem::faults {

namespace asio = boost::asio;
using test::drain;
using test::error_code;
using test::outcome;
using test::permit;
using test::record;
using test::start;

// The observable counts of one key, for "nothing changed" checks.
struct snapshot {
  std::size_t in_use, waiting, keys;
  bool operator==(const snapshot&) const = default;
};
inline snapshot counts(const keyed_semaphore& sem, const std::string& key) {
  return {sem.in_use(key), sem.waiting(key), sem.key_count()};
}

// An allocator that fails its n-th allocation (1-based; 0 never) and counts
// what it handed out and got back.
struct fault_plan {
  int fail_at = 0;
  int attempts = 0;
  int allocations = 0;
  int deallocations = 0;
  bool balanced() const { return allocations == deallocations; }
};

template <class T>
struct failing_allocator {
  using value_type = T;
  fault_plan* plan;
  explicit failing_allocator(fault_plan& p) noexcept : plan(&p) {}
  template <class U>
  failing_allocator(const failing_allocator<U>& other) noexcept : plan(other.plan) {}
  T* allocate(std::size_t n) {
    if (++plan->attempts == plan->fail_at) {
      throw std::bad_alloc();
    }
    ++plan->allocations;
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    ++plan->deallocations;
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const failing_allocator<U>& other) const noexcept {
    return plan == other.plan;
  }
};

}  // namespace keysem::faults

#endif
