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

/* The one wording of a name that is not one, whatever asks for it (a request of any type, a call, a job; see
 * docs/protocol.md, "Requests and errors"): field is the request field that carries it (photonName, method, jobId,
 * instanceName). The reference's text is the prefix where it has one for the case: a method it cannot find is "Tool
 * not found: <m>", a photon it cannot load "Cannot initialize photon '<p>'"; other fields "Invalid request format:
 * <field> …". A NULL value is the request parser's "Invalid request format: <field> is missing". Returns buf. */
const char* name_error(const char *field, const char *value, char *buf, size_t size);

/* The value of one hex digit (either case), or -EINVAL. */
int unhexchar(char c);

/* Strict decimal parsers: the whole string must be a number in range. 0 or -EINVAL/-ERANGE. */
int safe_atou64(const char *s, uint64_t *ret);
int safe_atoi64(const char *s, int64_t *ret);

/* Constant-time comparison of two byte strings (length is not secret). */
bool memeq_consttime(const void *a, size_t a_len, const void *b, size_t b_len);

/* s as one shell word, for commands printed as advice: as is when it holds only characters no shell treats
 * specially, else in single quotes (a ' inside becomes '\''). NULL on OOM. */
char* shell_quote(const char *s);

/* Frees a NULL-terminated array of strings and the array itself; NULL is fine. */
void strv_free(char **l);
