// keysem/keysem.hpp — everything keysem offers.
#ifndef KEYSEM_KEYSEM_HPP
#define KEYSEM_KEYSEM_HPP

#include <keysem/async_keyed_semaphore.hpp>
#include <keysem/async_semaphore.hpp>
#include <keysem/error.hpp>
#include <keysem/hash.hpp>
#include <keysem/permit.hpp>
#include <keysem/semaphore_options.hpp>

#endif
