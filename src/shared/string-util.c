/* SPDX-License-Identifier: MIT */

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "string-util.h"

char* startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);

        if (strncmp(s, prefix, l) != 0)
                return NULL;
        return (char*) s + l;
}

bool endswith(const char *s, const char *suffix) {
        size_t ls = strlen(s), lx = strlen(suffix);

        return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

bool name_is_valid(const char *s) {
        size_t n;

        if (!s || s[0] == '.' || s[0] == '\0')
                return false;
        for (n = 0; s[n]; n++) {
                char c = s[n];
                if (n >= 64)
                        return false;
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                        return false;
        }
        return true;
}

#define NAME_RULE "1-64 characters of A-Z a-z 0-9 . _ -, not starting with a dot"

const char* name_error(const char *field, const char *value, char *buf, size_t size) {
        const char *more;

        assert(field);

        if (!value) {
                snprintf(buf, size, "Invalid request format: %s is missing", field);
                return buf;
        }
        more = strlen(value) > 64 ? "…" : "";
        if (strcmp(field, "method") == 0)
                snprintf(buf, size, "Tool not found: %.64s%s (not a valid method name: " NAME_RULE ")", value, more);
        else if (strcmp(field, "photonName") == 0)
                snprintf(buf, size, "Cannot initialize photon '%.64s%s': not a valid photon name (" NAME_RULE ")",
                         value, more);
        else
                snprintf(buf, size, "Invalid request format: %s '%.64s%s' is not a valid name (" NAME_RULE ")", field,
                         value, more);
        return buf;
}

int unhexchar(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -EINVAL;
}

int safe_atou64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || s[0] < '0' || s[0] > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

int safe_atoi64(const char *s, int64_t *ret) {
        char *end;
        long long v;

        if (!s || !((s[0] >= '0' && s[0] <= '9') || s[0] == '-'))
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (end == s || *end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

bool memeq_consttime(const void *a, size_t a_len, const void *b, size_t b_len) {
        const unsigned char *x = a, *y = b;
        unsigned char d = 0;

        if (a_len != b_len)
                return false;
        for (size_t i = 0; i < a_len; i++)
                d |= x[i] ^ y[i];
        return d == 0;
}

char* shell_quote(const char *s) {
        static const char plain[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-";
        size_t n = 2;
        char *q, *p;

        if (*s && strspn(s, plain) == strlen(s))
                return strdup(s);
        for (const char *c = s; *c; c++)
                n += *c == '\'' ? 4 : 1;
        q = p = malloc(n + 1);
        if (!q)
                return NULL;
        *p++ = '\'';
        for (const char *c = s; *c; c++)
                if (*c == '\'')
                        p = stpcpy(p, "'\\''");
                else
                        *p++ = *c;
        *p++ = '\'';
        *p = '\0';
        return q;
}

void strv_free(char **l) {
        for (char **p = l; p && *p; p++)
                free(*p);
        free(l);
}
