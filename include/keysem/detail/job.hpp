// One protocol for every job keysem hands to an executor: it either runs or,
// destroyed without running, cleans up, exactly once.
#ifndef KEYSEM_DETAIL_JOB_HPP
#define KEYSEM_DETAIL_JOB_HPP

#include <utility>

namespace keysem::detail {

// A job whose state is a Policy::state (a pointer and maybe a value or two).
// Policy::run(state, args...) is its body; Policy::drop(state) runs instead
// when the job is destroyed unrun: its execution context shut down with the
// job still queued, or posting it failed. Moved-from jobs do neither. As in
// asio's own operations, the executor frees a job's memory before calling
// it, so a body may free what the job pointed to.
template <class Policy>
class job {
 public:
  using state_type = typename Policy::state;

  explicit job(state_type state) noexcept : state_(std::move(state)), armed_(true) {}
  job(job&& other) noexcept
      : state_(std::move(other.state_)), armed_(std::exchange(other.armed_, false)) {}
  job& operator=(job&&) = delete;
  ~job() {
    if (armed_) {
      Policy::drop(state_);
    }
  }

  template <class... Args>
  void operator()(Args&&... args) {
    armed_ = false;
    Policy::run(state_, std::forward<Args>(args)...);
  }

 private:
  state_type state_;
  bool armed_;
};

}  // namespace keysem::detail

#endif
