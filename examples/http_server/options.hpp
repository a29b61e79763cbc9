// http_server/options.hpp — the example's command line, kept out of main.cpp
// so that main.cpp reads as the server and its admission policy.
//
//   keysem_example_http_server [--seconds S] [server options]   server + load client, one process
//   keysem_example_http_server serve [server options] [--port-file F]
//   keysem_example_http_server load --port P[,P...] [--seconds S]
//
// Server options:
//   --port P           listen on 127.0.0.1:P (0, the default: a free port)
//   --limit N          concurrent requests per tenant: the free tier (default 4)
//   --tier T=N         tenant T may run N concurrent requests (repeatable)
//   --tiers FILE       one "tenant limit" pair per line; '#' starts a comment
//   --max-waiting N    requests that may queue per tenant before 429 (default 8)
//   --total N          requests in progress over all tenants (default: no total)
//   --timeout-ms N     queued longer than this: 503 (default 100)
//   --threads N        threads running the server (default 2)
//   --redis HOST:PORT  fleet mode: the per-tenant limits hold across every
//                      replica using this Redis server (fleet_limiter.hpp)
//   --lease-ms T       fleet mode: lease length, the time within which a
//                      dead replica's permits come back (default 10000)
//
// load with several ports spreads its users over them (replicas of one
// fleet); a user whose server dies moves on to the next port.
//
// A tenant named by --tier or --tiers more than once keeps its last limit.
#ifndef KEYSEM_EXAMPLE_HTTP_OPTIONS_HPP
#define KEYSEM_EXAMPLE_HTTP_OPTIONS_HPP

#include "fleet_limiter.hpp"

#include <keysem/semaphore_options.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

struct server_options {
  unsigned short port = 0;                         // 0: the kernel picks a free port
  std::size_t limit = 4;                           // permits per tenant without a tier
  std::map<std::string, std::size_t> tiers;       // paying tenants → their own limits
  std::size_t max_waiting = 8;                     // queued requests per tenant before 429
  std::size_t total = keysem::unbounded;           // requests in progress over all tenants
  std::chrono::milliseconds acquire_timeout{100};  // queued longer than this: 503
  std::size_t threads = 2;
  std::size_t metrics_top = 10;  // /metrics lists this many of the busiest tenants
  fleet_config fleet;            // --redis: limits shared by every replica
};

struct command_line {
  std::string mode = "both";  // "both", "serve" or "load"
  server_options server;
  std::string port_file;                      // serve: write the port here once listening
  std::vector<unsigned short> ports;          // load: the servers (--port P1,P2,...)
  std::chrono::milliseconds duration{2000};  // load: how long users start requests
};

// Parses argv. Throws std::invalid_argument, with a message naming the bad
// argument, on anything it does not understand (the caller prints usage()).
command_line parse_command_line(int argc, char** argv);

// The synopsis above, for error messages.
const char* usage();

// A tenant name as the server accepts it in X-Tenant: 1 to 64 of
// [A-Za-z0-9._-], so it needs no escaping in a Prometheus label.
bool valid_tenant(std::string_view tenant);

#endif
