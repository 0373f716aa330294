/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

/* A growing byte string, for what is built piece by piece before it goes out whole: the fd store's records, a
 * cluster publish batch's events. */
typedef struct Bytes {
        char *data;
        size_t size, alloc;
} Bytes;

/* Frees the bytes; b is empty again. */
void bytes_done(Bytes *b);
/* Appends n bytes (p may be NULL when n is 0). 0, or -ENOMEM. */
int bytes_put(Bytes *b, const void *p, size_t n);
