/* SPDX-License-Identifier: MIT */

#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "shared-buf.h"

SharedBuf* shared_buf_new(const void *data, size_t size) {
        SharedBuf *b = shared_buf_alloc(size);

        if (b && size > 0)
                memcpy(b->data, data, size);
        return b;
}

SharedBuf* shared_buf_ref(SharedBuf *b) {
        if (b)
                b->n_ref++;
        return b;
}

SharedBuf* shared_buf_unref(SharedBuf *b) {
        if (b && --b->n_ref == 0)
                free(b);
        return NULL;
}

SharedBuf* shared_buf_new_json_line(struct json_object *o) {
        const char *s;
        size_t len;
        SharedBuf *b;

        s = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &len);
        if (!s)
                return NULL;
        b = malloc(offsetof(SharedBuf, data) + len + 2);
        if (!b)
                return NULL;
        b->n_ref = 1;
        b->size = len + 1;
        memcpy(b->data, s, len);
        b->data[len] = '\n';
        b->data[len + 1] = '\0';
        return b;
}
