// http_server/load_client.hpp — an HTTP load generator for the example
// server, and the table it prints.
//
// Every virtual user keeps one keep-alive connection and sends requests back
// to back as one tenant (X-Tenant). The server answers each request with
// X-Concurrency (its own count of that tenant's requests holding a permit,
// this one included) and X-Limit: the client keeps the maximum per tenant,
// which is how it checks the limit from outside the server.
#ifndef KEYSEM_EXAMPLE_HTTP_LOAD_CLIENT_HPP
#define KEYSEM_EXAMPLE_HTTP_LOAD_CLIENT_HPP

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

struct tenant_profile {
  std::string name;
  std::size_t users;  // concurrent connections sending as this tenant
  int min_work_ms;    // each request asks the server to work this long...
  int max_work_ms;    // ...up to this, drawn at random
};

// acme offers more than its limit allows, globex about its limit, initech little.
std::vector<tenant_profile> default_tenant_profiles();

struct http_load_options {
  boost::asio::ip::tcp::endpoint server;
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
  std::size_t peak_concurrency = 0;
  std::size_t limit = 0;           // X-Limit as the server reported it
  std::vector<double> latency_ms;  // of served requests
};

struct http_load_report {
  std::map<std::string, http_tenant_stats> tenants;
  std::size_t transport_errors = 0;  // failed connects, reads or writes
  double seconds = 0;
};

// Runs the load until `duration` has passed; completes when every user has
// finished its last request.
boost::asio::awaitable<http_load_report> run_http_load(http_load_options options);

// Prints the per-tenant table. Returns true if no tenant ever exceeded its
// limit, every answer was a well-formed 200/429/503, and nothing failed.
bool print_load_table(const http_load_report& report);

#endif
