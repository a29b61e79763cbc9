// keysem/redis.hpp — everything of keysem::redis (link keysem::redis).
#ifndef KEYSEM_REDIS_HPP
#define KEYSEM_REDIS_HPP

#include <keysem/redis/endpoint.hpp>
#include <keysem/redis/error.hpp>
#include <keysem/redis/fleet_options.hpp>
#include <keysem/redis/fleet_permit.hpp>
#include <keysem/redis/fleet_semaphore.hpp>
#include <keysem/redis/fleet_stats.hpp>

#endif
