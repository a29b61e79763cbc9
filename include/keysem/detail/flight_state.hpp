// The life of one execution of a single_flight, as a pure state machine: the
// code around it (flight_group.hpp) holds its shard's lock while it asks, and
// only applies the verdicts.
#ifndef KEYSEM_DETAIL_FLIGHT_STATE_HPP
#define KEYSEM_DETAIL_FLIGHT_STATE_HPP

#include <cstddef>
#include <utility>

namespace keysem::detail {

// A flight is created running with its first caller, listed in its key's
// table (so that later callers of the key join it). It leaves the table when
// it is forgotten, abandoned (with cancel_abandoned), stopped or done; only a
// listed flight can be joined, so a run() never joins an execution whose
// result would be thrown away.
//
//   running --(last caller leaves, cancel_abandoned)--> cancelling --(fn ends)--> done
//   running --(the single_flight stops)---------------> cancelling
//   running --(fn ends: result or exception)-----------------------------------> done
//
// With cancel_abandoned = false, a running flight whose callers all left
// stays running and listed: a new caller joins it, and if none does its
// result is discarded when it arrives.
class flight_state {
 public:
  enum class phase : unsigned char { running, cancelling, done };

  phase current() const noexcept { return phase_; }
  std::size_t callers() const noexcept { return callers_; }
  bool listed() const noexcept { return listed_; }

  // A run() found this flight in its key's table (a new flight is created
  // with no caller and joined by its first). False: the flight must not be
  // joined (never the case for a flight found in the table).
  bool join() noexcept {
    if (phase_ != phase::running || !listed_) {
      return false;
    }
    ++callers_;
    return true;
  }

  struct leave_verdict {
    bool cancel_execution = false;  // emit terminal cancellation to fn
    bool unlist = false;            // take the flight out of the key's table
    bool abandoned = false;         // count the execution as abandoned
  };

  // A caller left (cancelled) before the result reached it.
  leave_verdict leave(bool cancel_abandoned) noexcept {
    --callers_;
    leave_verdict verdict;
    if (callers_ != 0 || phase_ != phase::running) {
      return verdict;
    }
    if (!cancel_abandoned) {
      left_empty_ = true;  // counted when the result is discarded
      return verdict;
    }
    phase_ = phase::cancelling;
    verdict.cancel_execution = true;
    verdict.abandoned = true;
    verdict.unlist = std::exchange(listed_, false);
    return verdict;
  }

  struct finish_verdict {
    bool deliver = false;    // hand the outcome to the callers still linked
    bool unlist = false;     // take the flight out of the key's table
    bool abandoned = false;  // count the execution as abandoned
  };

  // fn completed (value or exception), or its coroutine was destroyed
  // unfinished (its execution context shut down): the flight is done.
  finish_verdict finish() noexcept {
    finish_verdict verdict;
    verdict.deliver = phase_ == phase::running && callers_ != 0;
    verdict.abandoned = phase_ == phase::running && callers_ == 0 && left_empty_;
    verdict.unlist = std::exchange(listed_, false);
    phase_ = phase::done;
    callers_ = 0;
    return verdict;
  }

  // forget(key): later run() calls start a new execution; this one's callers
  // keep waiting for its result. True if the flight was listed.
  bool forget() noexcept { return std::exchange(listed_, false); }

  struct stop_verdict {
    bool cancel_execution = false;  // emit terminal cancellation to fn
    bool abort_callers = false;     // complete every linked caller with operation_aborted
    bool unlist = false;
  };

  // The single_flight is destroyed: callers are aborted, a running
  // execution cancelled.
  stop_verdict stop() noexcept {
    stop_verdict verdict;
    if (phase_ != phase::running) {
      return verdict;
    }
    phase_ = phase::cancelling;
    verdict.cancel_execution = true;
    verdict.abort_callers = callers_ != 0;
    verdict.unlist = std::exchange(listed_, false);
    callers_ = 0;
    return verdict;
  }

 private:
  phase phase_ = phase::running;
  bool listed_ = true;
  bool left_empty_ = false;  // every caller left once (cancel_abandoned = false)
  std::size_t callers_ = 0;
};

}  // namespace keysem::detail

#endif
