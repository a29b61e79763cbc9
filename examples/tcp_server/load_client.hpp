// tcp_server/load_client.hpp — the load generator's interface, shared by the
// two files of the example.
//
// The line protocol, one request or reply per line:
//
//   request:  <id> <tenant> <wait|try> <work_ms>
//   replies:  <id> OK <tenant_in_flight> <connection_in_flight>
//             <id> BUSY                      (mode "try" and the tenant was at its limit)
//             <id> ERR <reason>
//
// `tenant_in_flight` and `connection_in_flight` are the server's own counts
// of requests holding a permit while this one held its own: the client
// records their maxima, which is how it observes the limits from outside.
#ifndef KEYSEM_EXAMPLE_TCP_LOAD_CLIENT_HPP
#define KEYSEM_EXAMPLE_TCP_LOAD_CLIENT_HPP

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <map>
#include <string>
#include <vector>

struct load_options {
  boost::asio::ip::tcp::endpoint server;
  std::size_t connections = 8;
  std::size_t requests_per_connection = 200;
  std::size_t pipeline_depth = 4;  // requests a connection sends before awaiting replies
  std::size_t try_every = 4;       // every n-th request asks to be shed rather than wait
  int work_ms = 2;                 // how long the server "works" on each request
};

struct tenant_report {
  std::size_t sent = 0;
  std::size_t ok = 0;
  std::size_t busy = 0;
  std::size_t errors = 0;
  std::size_t peak_in_flight = 0;  // highest tenant_in_flight the server reported
  std::vector<double> latency_ms;  // of OK replies
};

struct load_report {
  std::map<std::string, tenant_report> tenants;
  std::size_t peak_connection_in_flight = 0;
  std::size_t unanswered = 0;  // requests whose reply never came
  double seconds = 0;
};

// Opens `options.connections` connections to `options.server` and sends
// every request; completes when every reply has arrived (or a connection failed).
boost::asio::awaitable<load_report> run_load(load_options options);

#endif
