/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "macro.h"

void bytes_done(Bytes *b) {
        b->data = mfree(b->data);
        b->size = b->alloc = 0;
}

int bytes_put(Bytes *b, const void *p, size_t n) {
        if (n > SIZE_MAX - b->size)
                return -ENOMEM;
        if (b->size + n > b->alloc) {
                size_t na = MAX(b->alloc * 2, MAX(b->size + n, (size_t) 256));
                char *d = realloc(b->data, na);

                if (!d)
                        return -ENOMEM;
                b->data = d;
                b->alloc = na;
        }
        if (n > 0)
                memcpy(b->data + b->size, p, n);
        b->size += n;
        return 0;
}
