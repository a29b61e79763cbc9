// Running small functions on a handler's executor, with the handler's allocator.
#ifndef KEYSEM_DETAIL_HANDLER_WORK_HPP
#define KEYSEM_DETAIL_HANDLER_WORK_HPP

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/execution/allocator.hpp>
#include <boost/asio/execution/blocking.hpp>
#include <boost/asio/execution/execute.hpp>
#include <boost/asio/execution/executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/execution/relationship.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/require.hpp>
#include <boost/asio/thread_pool.hpp>

#include <memory>
#include <type_traits>
#include <utility>

namespace keysem::detail {

// The allocator for an operation's memory: the handler's associated
// allocator, or asio's per-thread recycling allocator when the handler has
// none (asio's own operations do the same), so a waiting acquire usually
// costs no trip to malloc.
template <class Handler>
auto operation_allocator(const Handler& handler) {
  using associated = boost::asio::associated_allocator_t<Handler>;
  if constexpr (std::is_same_v<associated, std::allocator<void>>) {
    return boost::asio::recycling_allocator<void>();
  } else {
    return boost::asio::get_associated_allocator(handler);
  }
}

template <class Handler>
using operation_allocator_t = decltype(operation_allocator(std::declval<const Handler&>()));

// Posts f to ex. asio::post would wrap a function that carries an allocator
// in a work_dispatcher (a second tracked executor and a second dispatch);
// these functions already target the right executor and need neither.
template <class Executor, class Allocator, class Function>
void post_to(const Executor& ex, const Allocator& alloc, Function&& f);

// The executor that posts for ex without tracking work. Each property set
// on a tracking executor copies it, and every copy counts work on its
// context: three increments and three decrements for one post. The
// caller's executor keeps the context's work while the post runs, and a
// posted function counts as work of its own. An executor that cannot drop
// the property (any_io_executor only prefers it) is used as it is.
template <class Executor>
decltype(auto) without_tracking(const Executor& ex) {
  if constexpr (boost::asio::can_require<const Executor&,
                                         boost::asio::execution::outstanding_work_t::untracked_t>::value) {
    return boost::asio::require(ex, boost::asio::execution::outstanding_work.untracked);
  } else {
    return (ex);
  }
}

// Posts f through the executor of type Plain that ex holds, plain or
// tracking work. False when ex holds neither.
template <class Plain, class Allocator, class Function>
bool post_to_target(const boost::asio::any_io_executor& ex, const Allocator& alloc, Function& f) {
  using tracked = std::decay_t<decltype(boost::asio::prefer(
      std::declval<Plain>(), boost::asio::execution::outstanding_work.tracked))>;
  if (const auto* plain = ex.target<Plain>()) {
    post_to(*plain, alloc, std::move(f));
    return true;
  }
  if (const auto* io = ex.target<tracked>()) {
    post_to(*io, alloc, std::move(f));
    return true;
  }
  return false;
}

// An any_io_executor mostly holds an io_context or thread_pool executor
// (co_spawn's, a socket's), plain or tracking work. Posting to that executor
// itself has the same effect, without a type-erased copy of the executor per
// property and a type-erased function around f. False when it holds
// something else.
template <class Allocator, class Function>
bool post_to_context_executor(const boost::asio::any_io_executor& ex, const Allocator& alloc, Function& f) {
  return post_to_target<boost::asio::io_context::executor_type>(ex, alloc, f) ||
         post_to_target<boost::asio::thread_pool::executor_type>(ex, alloc, f);
}

template <class Executor, class Allocator, class Function>
void post_to(const Executor& ex, const Allocator& alloc, Function&& f) {
  if constexpr (std::is_same_v<Executor, boost::asio::any_io_executor> &&
                !std::is_lvalue_reference_v<Function>) {
    if (post_to_context_executor(ex, alloc, f)) {
      return;
    }
  }
  if constexpr (boost::asio::execution::is_executor<Executor>::value) {
    boost::asio::execution::execute(
        boost::asio::prefer(boost::asio::require(without_tracking(ex),
                                                 boost::asio::execution::blocking.never),
                            boost::asio::execution::relationship.fork,
                            boost::asio::execution::allocator(alloc)),
        std::forward<Function>(f));
  } else {
    ex.post(std::forward<Function>(f), alloc);  // a Networking TS style executor
  }
}

// Like post_to, but may run f at once when the caller already runs in ex.
template <class Executor, class Allocator, class Function>
void dispatch_to(const Executor& ex, const Allocator& alloc, Function&& f) {
  if constexpr (boost::asio::execution::is_executor<Executor>::value) {
    boost::asio::execution::execute(
        boost::asio::prefer(ex, boost::asio::execution::blocking.possibly,
                            boost::asio::execution::allocator(alloc)),
        std::forward<Function>(f));
  } else {
    ex.dispatch(std::forward<Function>(f), alloc);
  }
}

}  // namespace keysem::detail

#endif
