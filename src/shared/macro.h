/* SPDX-License-Identifier: MIT */
#pragma once

/* Small systemd-style helpers: cleanup attributes, ownership transfer, allocation shorthands. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _unused_ __attribute__((unused))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _noreturn_ __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define USEC_PER_SEC ((uint64_t) 1000000ULL)
#define USEC_PER_MSEC ((uint64_t) 1000ULL)
#define NSEC_PER_USEC ((uint64_t) 1000ULL)
#define NSEC_PER_MSEC ((uint64_t) 1000000ULL)
#define USEC_INFINITY ((uint64_t) UINT64_MAX)

#define new(t, n) ((t*) malloc(sizeof(t) * (n)))
#define new0(t, n) ((t*) calloc((n) ?: 1, sizeof(t)))

#define streq(a, b) (strcmp((a), (b)) == 0)

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}

static inline void* mfree(void *p) {
        free(p);
        return NULL;
}

/* Returns the pointer and leaves NULL behind, so a _cleanup_ variable hands over ownership. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _p_ = (p);        \
                (p) = NULL;                     \
                _p_;                            \
        })

/* Moves a struct out of a variable whose cleanup would otherwise free what it points to. */
#define TAKE_STRUCT(s)                          \
        ({                                      \
                __typeof__(s) _s_ = (s);        \
                (s) = (__typeof__(s)) {};       \
                _s_;                            \
        })

#define TAKE_FD(fd)                             \
        ({                                      \
                int _fd_ = (fd);                \
                (fd) = -EBADF;                  \
                _fd_;                           \
        })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                 \
        static inline void func##p(type *p) {                   \
                if (*p)                                         \
                        *p = func(*p);                          \
        }

static inline void freep(void *p) {
        free(*(void**) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        *fd = safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* A made-up error code: the log helpers do not print strerror() for it. */
#define ERRNO_SYNTHETIC_BIT (1 << 30)
#define SYNTHETIC_ERRNO(e) (ERRNO_SYNTHETIC_BIT | (e))
#define ERRNO_VALUE(e) (abs(e) & ~ERRNO_SYNTHETIC_BIT)
