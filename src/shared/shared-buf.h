/* SPDX-License-Identifier: MIT */
#pragma once

/* Reference-counted immutable bytes. A published message is serialized once into a SharedBuf and every
 * subscriber's write queue holds a reference to the same bytes. */

#include <stddef.h>
#include <stdlib.h>

#include "macro.h"

struct json_object;

typedef struct SharedBuf {
        unsigned n_ref;
        size_t size;
        char data[];
} SharedBuf;

SharedBuf* shared_buf_new(const void *data, size_t size);
/* A buffer of size bytes for the caller to fill in, so a line assembled from pieces costs one allocation and no
 * second copy. The caller may lower size to what it filled in. Inline: the publish path calls it twice per
 * message. */
static inline SharedBuf* shared_buf_alloc(size_t size) {
        SharedBuf *b = malloc(offsetof(SharedBuf, data) + size + 1);

        if (!b)
                return NULL;
        b->n_ref = 1;
        b->size = size;
        b->data[size] = '\0';
        return b;
}
SharedBuf* shared_buf_ref(SharedBuf *b);
SharedBuf* shared_buf_unref(SharedBuf *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(SharedBuf*, shared_buf_unref);

/* Serializes o compactly and appends '\n': one NDJSON line. NULL on allocation failure. */
SharedBuf* shared_buf_new_json_line(struct json_object *o);
