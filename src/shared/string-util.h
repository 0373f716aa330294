/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Returns a pointer just past the prefix, or NULL if s does not start with it. */
char* startswith(const char *s, const char *prefix);
bool endswith(const char *s, const char *suffix);

/* [A-Za-z0-9._-]{1,64} without a leading dot: safe to use as one path component (DECISIONS.md). */
bool name_is_valid(const char *s);

/* Strict decimal parsers: the whole string must be a number in range. 0 or -EINVAL/-ERANGE. */
int safe_atou64(const char *s, uint64_t *ret);
int safe_atoi64(const char *s, int64_t *ret);

/* Constant-time comparison of two byte strings (length is not secret). */
bool memeq_consttime(const void *a, size_t a_len, const void *b, size_t b_len);

/* s as one shell word, for commands printed as advice: as is when it holds only characters no shell treats
 * specially, else in single quotes (a ' inside becomes '\''). NULL on OOM. */
char* shell_quote(const char *s);
