// An allocator that counts what it hands out. Free of doctest: the model
// checker's fuzz target includes it too.
#ifndef KEYSEM_TESTS_UNIT_COUNTING_ALLOCATOR_HPP
#define KEYSEM_TESTS_UNIT_COUNTING_ALLOCATOR_HPP

#include <cstddef>
#include <memory>

namespace keysem::test {

// An allocator that counts what it hands out, to check that an operation's
// memory comes from the handler's allocator and is freed before the upcall.
struct allocation_counts {
  std::size_t allocations = 0;
  std::size_t deallocations = 0;
};

template <class T>
struct counting_allocator {
  using value_type = T;
  allocation_counts* counts;

  explicit counting_allocator(allocation_counts& c) noexcept : counts(&c) {}
  template <class U>
  counting_allocator(const counting_allocator<U>& other) noexcept : counts(other.counts) {}

  T* allocate(std::size_t n) {
    ++counts->allocations;
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    ++counts->deallocations;
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const counting_allocator<U>& other) const noexcept {
    return counts == other.counts;
  }
};

}  // namespace keysem::test

#endif
