// http_server/load_client.hpp — an HTTP load generator for the example
// server, and the table it prints.
//
// Every virtual user keeps one keep-alive connection and sends requests back
// to back as one tenant (X-Tenant). The server answers each 200 with X-Limit
// (the tenant's limit), X-Concurrency (keysem's count of the tenant's
// permits in use just after this one was granted) and X-Permit-Held (the
// interval, on the server's steady clock, during which the request held its
// permit). The client checks each tenant's limit from outside: the most
// intervals that overlap at any instant, and the highest X-Concurrency,
// must not exceed the tenant's limit.
//
// With several servers (replicas sharing limits through Redis, see
// fleet_limiter.hpp) the users are spread over them, and the steady clock
// is the machine's CLOCK_MONOTONIC, shared by every process: overlapping
// X-Permit-Held intervals of all replicas give the fleet-wide concurrency.
// A user whose server dies moves on to the next one; after that first
// failure the client also reports, per tenant, how long it took until the
// surviving servers held the tenant's full limit at once again (which needs
// the dead server's permits back).
#ifndef KEYSEM_EXAMPLE_HTTP_LOAD_CLIENT_HPP
#define KEYSEM_EXAMPLE_HTTP_LOAD_CLIENT_HPP

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

struct tenant_profile {
  std::string name;
  std::size_t users;  // concurrent connections sending as this tenant
  int min_work_ms;    // each request asks the server to work this long...
  int max_work_ms;    // ...up to this, drawn at random
};

// acme and globex offer the same heavy load; acme is the demo's paying tenant
// (a higher limit, --tier acme=8), globex a free one. initech offers little.
std::vector<tenant_profile> default_tenant_profiles();

struct http_load_options {
  std::vector<boost::asio::ip::tcp::endpoint> servers;  // user i starts on servers[i % size]
  std::chrono::milliseconds duration{2000};  // users stop starting requests after this
  std::size_t max_requests_per_user = 100000;
  std::chrono::milliseconds backoff{20};  // after a 429/503; see load_client.cpp
  std::vector<tenant_profile> tenants = default_tenant_profiles();
};

struct http_tenant_stats {
  std::size_t users = 0;
  std::size_t requests = 0;
  std::size_t served = 0;     // 200
  std::size_t shed = 0;       // 429
  std::size_t timed_out = 0;  // 503
  std::size_t other = 0;      // any other status, or a 429/503 without Retry-After
  std::size_t peak_concurrency = 0;  // of X-Permit-Held intervals and X-Concurrency
  std::size_t limit = 0;             // X-Limit as the server reported it
  std::vector<double> latency_ms;    // of served requests
  std::vector<std::pair<long long, long long>> held;  // X-Permit-Held, [from, until)
  // After the first server failure: until the tenant's full limit was held
  // at once again (-1: never seen).
  double full_limit_again_ms = -1;
};

struct http_load_report {
  std::map<std::string, http_tenant_stats> tenants;
  std::size_t transport_errors = 0;  // failed connects, reads or writes, with nowhere left to go
  std::size_t failovers = 0;         // requests cut off by a server that failed; the user moved on
  long long first_failure_ns = 0;    // steady clock (ns) of the first failover; 0: none
  std::vector<std::size_t> served_by_server;  // 200s per entry of servers
  double seconds = 0;
};

// Runs the load until `duration` has passed; completes when every user has
// finished its last request.
boost::asio::awaitable<http_load_report> run_http_load(http_load_options options);

// Prints the per-tenant table. Returns true if no tenant ever exceeded its
// own limit, every answer was a well-formed 200/429/503, and nothing failed.
bool print_load_table(const http_load_report& report);

#endif
