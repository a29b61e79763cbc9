// Regression (found by the model checker): destroying an io_context while a waiting acquire's enqueue job and
// its cancel job are both still queued on the shard's strand is a
// use-after-free.
//
// Why: asio's strand service shuts down by destroying each strand's
// *waiting* queue before its *ready* queue. The enqueue job, posted to an
// idle strand, is in the ready queue; the cancel job, posted after it, is in
// the waiting queue. ~cancel_job runs first: finish_cancelled(op, false)
// frees the op. ~enqueue_job runs next and calls op_->try_claim() on the
// freed op (include/keysem/detail/acquire_op.hpp, enqueue_job::~enqueue_job).
//
// Reproduce: build with -fsanitize=address and run this test; ASan reports
// heap-use-after-free in enqueue_job::~enqueue_job, freed by
// key_state_base::finish_cancelled from cancel_job::~cancel_job, both under
// strand_executor_service::shutdown. Model replay (KEYSEM_MODEL_REPLAY):
//   keys=1 limit=1 shards=1 avoid_known_bugs=0
//   try k=0 n=1
//   acquire k=0 n=1 tok=callback cancel=1 then=keep
//   cancel target=0 type=terminal
//   destroy_ctx
//
// The strand is now keysem's serialiser, which drops its jobs in order, and
// the enqueue job is embedded in the op (enqueue_policy::drop); the test
// keeps the shutdown order that broke.
#include <keysem/keysem.hpp>

#include <boost/asio.hpp>
#include <doctest/doctest.h>

#include <memory>

namespace {

namespace asio = boost::asio;

TEST_CASE("regression: a context destroyed with an unrun enqueue job and its cancel job frees the op once") {
  keysem::keyed_semaphore::permit held;
  asio::cancellation_signal signal;  // outlives the context, as asio requires
  bool invoked = false;
  auto tracker = std::make_shared<int>(0);
  std::weak_ptr<int> watch = tracker;
  {
    asio::io_context ctx;
    keysem::keyed_semaphore sem(ctx, 1);
    held = std::move(*sem.try_acquire("k"));
    // Waits: its enqueue job goes to the (idle) shard strand's ready queue.
    sem.acquire("k", asio::bind_cancellation_slot(
                         signal.slot(), [&invoked, tracker](boost::system::error_code, keysem::keyed_semaphore::permit) {
                           invoked = true;
                         }));
    tracker.reset();
    // Decided at once; the cancel job goes to the strand's waiting queue.
    signal.emit(asio::cancellation_type::terminal);
    CHECK(sem.waiting("k") == 1);
  }  // the semaphore, then the context: neither job ever runs
  CHECK_FALSE(invoked);
  CHECK(watch.expired());
  CHECK_FALSE(signal.slot().has_handler());
  held.release();
}

}  // namespace
