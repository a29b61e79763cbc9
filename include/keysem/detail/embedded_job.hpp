// A job that lives inside the object it acts on: queued on a shard's
// serialiser without an allocation of its own.
#ifndef KEYSEM_DETAIL_EMBEDDED_JOB_HPP
#define KEYSEM_DETAIL_EMBEDDED_JOB_HPP

#include <keysem/detail/serial_executor.hpp>

namespace keysem::detail {

// The job protocol of job.hpp (Policy::run, or Policy::drop when it is
// destroyed unrun) on a serial_node the owner embeds. Each time it is
// queued it is invoked exactly once, run or dropped; it must not be queued
// again before that. The body may free the owner, node and all: the state is
// copied out first, as an executor frees a job's memory before calling it.
template <class Policy>
class embedded_job final : public serial_node {
 public:
  using state_type = typename Policy::state;

  explicit embedded_job(state_type state) noexcept : serial_node(&invoke_node), state_(state) {}
  embedded_job(const embedded_job&) = delete;
  embedded_job& operator=(const embedded_job&) = delete;

 private:
  static void invoke_node(serial_node* base, bool run) {
    const state_type state = static_cast<embedded_job*>(base)->state_;
    if (run) {
      Policy::run(state);
    } else {
      Policy::drop(state);
    }
  }

  state_type state_;
};

// An embedded node carried by an executor that is not keysem's serialiser
// (asio's strand, for a Networking TS style executor): the job protocol
// around it.
struct node_policy {
  using state = serial_node*;
  static void run(serial_node* node) { node->invoke(node, true); }
  static void drop(serial_node* node) noexcept { node->invoke(node, false); }
};

}  // namespace keysem::detail

#endif
