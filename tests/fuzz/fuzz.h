/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared by the fuzz targets: the libFuzzer entry point every target defines, and small helpers to turn the
 * fuzzer's bytes into what the parsers take. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The parsers are non-logging, but the loaders around them log each bad file: at the millions of inputs a fuzzer
 * tries, that is the output. */
static inline void fuzz_setup_logging(void) {
        log_set_max_level(-1);
}

/* A NUL-terminated copy (NULL on allocation failure). Embedded NULs stay: the C-string parsers stop there. */
static inline char* fuzz_strndup(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1);

        if (!s)
                return NULL;
        if (size > 0)
                memcpy(s, data, size);
        s[size] = '\0';
        return s;
}

/* Splits off the next part of *data up to the byte sep: *ret_part, *ret_len is the part (without sep), *data and
 * *size move past sep. Without sep the rest is the part. Returns false once nothing is left. */
static inline bool fuzz_next_part(const uint8_t **data, size_t *size, uint8_t sep, const uint8_t **ret_part,
                                  size_t *ret_len) {
        const uint8_t *p;

        if (!*data)
                return false;
        *ret_part = *data;
        p = *size > 0 ? memchr(*data, sep, *size) : NULL;
        if (!p) {
                *ret_len = *size;
                *data = NULL;
                *size = 0;
                return true;
        }
        *ret_len = p - *data;
        *size -= p - *data + 1;
        *data = p + 1;
        return true;
}
