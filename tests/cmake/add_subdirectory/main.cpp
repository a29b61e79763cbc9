// Built by a stand-alone project, so it proves the public headers and the
// link line work for a user, not just inside keysem's own build.
#include <keysem/keysem.hpp>

#include <boost/asio/io_context.hpp>

int main()
{
    boost::asio::io_context ctx;
    keysem::keyed_semaphore sem(ctx, 2);
    auto p = sem.try_acquire("k");
    return (p && sem.in_use("k") == 1) ? 0 : 1;
}
