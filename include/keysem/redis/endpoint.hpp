// keysem/redis/endpoint.hpp — where the Redis server is.
#ifndef KEYSEM_REDIS_ENDPOINT_HPP
#define KEYSEM_REDIS_ENDPOINT_HPP

#include <cstdint>
#include <string>

namespace keysem::redis {

/// A Redis server (a single primary). `host` is resolved at each connection
/// attempt; an empty `password` sends no AUTH; `db` is SELECTed when not 0.
struct endpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string password;
  int db = 0;
};

}  // namespace keysem::redis

#endif
