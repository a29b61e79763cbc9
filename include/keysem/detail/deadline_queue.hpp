// The waiting acquires of one shard that have a deadline, and the one timer
// that wakes the strand for the earliest of them.
#ifndef KEYSEM_DETAIL_DEADLINE_QUEUE_HPP
#define KEYSEM_DETAIL_DEADLINE_QUEUE_HPP

#include <keysem/detail/waiter_op.hpp>


#include <cstdint>
#include <memory>
#include <vector>

namespace keysem::detail {

class shard_base;

// A min-heap of ops by deadline, touched only on the shard's strand (or at
// shutdown, when nothing runs). Entries carry their deadline, so sifting
// never chases an op pointer. 100,000 timed waiters cost a heap entry
// each and one armed timer per shard, not one timer each; an acquire
// granted without waiting never enters it. The timer is created on first
// use (so a semaphore without timed acquires never starts its context's
// reactor), and cancelled as soon as no timed op waits, so that it never
// holds its executor's work for nothing. Created after the semaphore's own
// service, the timer service shuts down first; destroying a timer at the
// semaphore's shutdown then finds its queue already emptied, and the
// service objects are only destroyed after every shutdown.
class deadline_queue {
 public:
  deadline_queue() noexcept;
  deadline_queue(const deadline_queue&) = delete;
  deadline_queue& operator=(const deadline_queue&) = delete;
  ~deadline_queue();

  // Strand only. Adds a queued op with a deadline; arms the timer if it is
  // the earliest.
  void add(shard_base& shard, waiter_op& op);

  // Strand only. Takes op out of the heap if it is there; re-arms lazily.
  void remove(waiter_op& op) noexcept;

  // Strand only: the timer fired for `generation`. Times out every op whose
  // deadline has passed and re-arms for the next one.
  void fire(shard_base& shard, std::uint64_t generation);

  // The context is going away (or the shard): destroys the timer, whose
  // pending wait gives its shard reference back as it is destroyed.
  void drop_timer() noexcept;

 private:
  struct timer;
  struct entry {
    waiter_op::clock::time_point deadline;
    waiter_op* op;
  };

  void arm(shard_base& shard);
  void disarm() noexcept;
  void sift_up(std::size_t index) noexcept;
  void sift_down(std::size_t index) noexcept;
  void place(std::size_t index, entry e) noexcept;
  bool earlier(std::size_t a, std::size_t b) const noexcept;

  std::vector<entry> heap_;
  std::unique_ptr<timer> timer_;
  waiter_op::clock::time_point armed_for_ = waiter_op::no_deadline;
  std::uint64_t generation_ = 0;
};

}  // namespace keysem::detail

#endif
