/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "string-util.h"

int json_string_get_cstring(struct json_object *v, const char **ret) {
        const char *s;

        if (!json_object_is_type(v, json_type_string))
                return -EMEDIUMTYPE;
        s = json_object_get_string(v);
        if (strlen(s) != (size_t) json_object_get_string_len(v))
                return -EINVAL;
        if (ret)
                *ret = s;
        return 0;
}

const char* json_object_get_cstring(struct json_object *v) {
        const char *s;

        return json_string_get_cstring(v, &s) < 0 ? NULL : s;
}

const char* json_get_string(struct json_object *o, const char *key) {
        struct json_object *v;

        if (!o || !json_object_object_get_ex(o, key, &v))
                return NULL;
        return json_object_get_cstring(v);
}

int json_get_int64(struct json_object *o, const char *key, bool allow_string, int64_t *ret) {
        struct json_object *v;

        if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return -ENOENT;

        switch (json_object_get_type(v)) {
        case json_type_int:
                errno = 0;
                *ret = json_object_get_int64(v);
                return errno == 0 ? 0 : -ERANGE;
        case json_type_double: {
                double d = json_object_get_double(v);
                if (d != d || d < -9.2e18 || d > 9.2e18 || d != (double) (int64_t) d)
                        return -EINVAL;
                *ret = (int64_t) d;
                return 0;
        }
        case json_type_string:
                if (!allow_string)
                        return -EINVAL;
                if (json_string_get_cstring(v, NULL) < 0)
                        return -EINVAL;         /* "12\u0000junk" is not the number 12 */
                return safe_atoi64(json_object_get_string(v), ret);
        default:
                return -EINVAL;
        }
}

int json_add_nullable(struct json_object *o, const char *key, struct json_object *value) {
        return json_object_object_add(o, key, value) < 0 ? -ENOMEM : 0;
}

struct json_object* json_ref_or_null(struct json_object *o) {
        return o ? json_object_get(o) : NULL;
}

int json_add(struct json_object *o, const char *key, struct json_object *value) {
        if (!value)
                return -ENOMEM;
        if (json_object_object_add(o, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

int json_add_string(struct json_object *o, const char *key, const char *value) {
        if (!value)
                return 0;
        return json_add(o, key, json_object_new_string(value));
}

int json_add_int64(struct json_object *o, const char *key, int64_t value) {
        return json_add(o, key, json_object_new_int64(value));
}

int json_add_bool(struct json_object *o, const char *key, bool value) {
        return json_add(o, key, json_object_new_boolean(value));
}

struct json_object* json_new_seconds(uint64_t usec) {
        char text[32];

        snprintf(text, sizeof(text), "%" PRIu64 ".%03" PRIu64, usec / 1000000, usec / 1000 % 1000);
        return json_object_new_double_s((double) usec / 1000000, text);
}

/* One tokener for every parse (photond has one thread, and parsing never calls back into json_parse()): a new one
 * per request line cost three allocations, one of them a 1 KiB calloc(), on the publish path. Reset after each use
 * so it never holds a half-parsed tree; freed at exit so leak checkers see nothing. */
static json_tokener *parse_tokener = NULL;

static void parse_tokener_free(void) __attribute__((destructor));
static void parse_tokener_free(void) {
        if (parse_tokener)
                json_tokener_free(parse_tokener);
        parse_tokener = NULL;
}

/* Whether valid JSON text has an object key with an escaped NUL ("k\u0000"). json-c keeps keys as C strings, so
 * it would cut such a key at the NUL: "k\u0000a" and "k\u0000b" would both be "k", and one value lost. A NUL in
 * a string value is kept (json-c stores values with their length). */
static bool json_text_has_nul_key(const char *buf, size_t len) {
        const char *p = buf, *end = buf + len;

        if (!memmem(buf, len, "\\u0000", 6))
                return false;

        /* Valid JSON has no raw control characters, so strings are all there is to look at. */
        while (p < end) {
                bool nul = false;

                if (*p++ != '"')
                        continue;
                for (; p < end && *p != '"'; p++)
                        if (*p == '\\') {
                                if (end - p >= 6 && memcmp(p, "\\u0000", 6) == 0)
                                        nul = true;
                                p++;    /* the escaped character, which may be '"' */
                        }
                p++;
                if (!nul)
                        continue;
                while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                        p++;
                if (p < end && *p == ':')
                        return true;
        }
        return false;
}

int json_parse(const char *buf, size_t len, struct json_object **ret, const char **ret_error) {
        json_tokener *tok;
        struct json_object *o;
        enum json_tokener_error jerr;
        size_t end;

        if (!parse_tokener) {
                parse_tokener = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
                if (!parse_tokener)
                        return -ENOMEM;
                json_tokener_set_flags(parse_tokener, JSON_TOKENER_STRICT);
        }
        tok = parse_tokener;

        o = json_tokener_parse_ex(tok, buf, (int) len);
        jerr = json_tokener_get_error(tok);
        end = json_tokener_get_parse_end(tok);
        if (jerr == json_tokener_continue) {
                /* A bare literal or number at the very end ("null", "42") needs a terminator to complete. */
                o = json_tokener_parse_ex(tok, "", 1);
                jerr = json_tokener_get_error(tok);
                end = len;
        }
        /* json-c 0.16's reset leaves a failed parse's pending surrogate escape ("\ud83d\u" at the end of a
         * line) in the tokener, and the next parse, maybe another client's request, would put a U+FFFD into its
         * first \u escape. A tokener that failed is therefore not used again; a successful parse leaves nothing
         * behind (tests/test-shared.c). */
        if (jerr == json_tokener_success) {
                json_tokener_reset(tok);
        } else {
                json_tokener_free(tok);
                parse_tokener = NULL;
        }

        if (jerr == json_tokener_continue) {
                json_object_put(o);
                if (ret_error)
                        *ret_error = "Unexpected end of JSON input";
                return -EINVAL;
        }
        /* A literal null parses to a NULL object: valid JSON, just not an object. */
        if (jerr != json_tokener_success) {
                json_object_put(o);
                if (ret_error)
                        *ret_error = json_tokener_error_desc(jerr);
                return -EINVAL;
        }
        for (size_t i = end; i < len; i++)
                if (!strchr(" \t\r\n", buf[i])) {
                        json_object_put(o);
                        if (ret_error)
                                *ret_error = "Unexpected non-whitespace character after JSON";
                        return -EINVAL;
                }
        /* json-c's strict mode still takes what JSON does not: NaN, Infinity, numbers such as 1., 05e1 or
         * 0578e309, and prints them as they came, so a client's JSON.parse() would fail on every line that
         * carried one, and a replay file holding one would not load. The same pass refuses a NUL in a key, which
         * json-c would cut the key at; it is named apart. */
        if (!json_text_is_json(buf, len)) {
                json_object_put(o);
                if (ret_error)
                        *ret_error = json_text_has_nul_key(buf, len) ?
                                "an object key contains a NUL character (\\u0000)" :
                                "not JSON (NaN, Infinity, or a number such as 1. or 05)";
                return -EINVAL;
        }

        *ret = o;
        return 0;
}

char* json_put_string(char *p, const char *s) {
        static const char hex[] = "0123456789abcdef";

        *p++ = '"';
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;

                switch (c) {
                case '"':  p = mempcpy(p, "\\\"", 2); break;
                case '\\': p = mempcpy(p, "\\\\", 2); break;
                case '\b': p = mempcpy(p, "\\b", 2); break;
                case '\f': p = mempcpy(p, "\\f", 2); break;
                case '\n': p = mempcpy(p, "\\n", 2); break;
                case '\r': p = mempcpy(p, "\\r", 2); break;
                case '\t': p = mempcpy(p, "\\t", 2); break;
                default:
                        if (c < ' ') {
                                p = mempcpy(p, "\\u00", 4);
                                *p++ = hex[c >> 4];
                                *p++ = hex[c & 0xf];
                        } else
                                *p++ = (char) c;
                }
        }
        *p++ = '"';
        return p;
}

char* json_put_uint64(char *p, uint64_t v) {
        char tmp[20];
        size_t n = 0;

        do
                tmp[n++] = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        while (n > 0)
                *p++ = tmp[--n];
        return p;
}

char* json_put_int64(char *p, int64_t v) {
        if (v >= 0)
                return json_put_uint64(p, (uint64_t) v);
        *p++ = '-';
        return json_put_uint64(p, -(uint64_t) v);
}

/* ---- compact JSON text, checked in place ---- */

static bool text_is_hex(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A key may not hold a NUL ("\u0000"), as json_parse() refuses: photond's keys are C strings. */
static bool text_string(const char **pp, const char *end, bool key) {
        const char *p = *pp;

        if (p >= end || *p != '"')
                return false;
        for (p++; p < end; p++) {
                if (*p == '"') {
                        *pp = p + 1;
                        return true;
                }
                /* A raw control character: not JSON, and a newline would end the line it is copied into. */
                if ((unsigned char) *p < 0x20)
                        return false;
                if (*p != '\\')
                        continue;
                if (end - p < 2)
                        return false;
                if (p[1] == 'u') {
                        if (end - p < 6 || !text_is_hex(p[2]) || !text_is_hex(p[3]) || !text_is_hex(p[4]) ||
                            !text_is_hex(p[5]))
                                return false;
                        if (key && memcmp(p + 2, "0000", 4) == 0)
                                return false;
                        p += 5;
                } else if (strchr("\"\\/bfnrt", p[1]) && p[1] != '\0')
                        p++;
                else
                        return false;
        }
        return false;
}

static bool text_digits(const char **pp, const char *end) {
        const char *p = *pp;

        while (p < end && *p >= '0' && *p <= '9')
                p++;
        if (p == *pp)
                return false;
        *pp = p;
        return true;
}

static bool text_number(const char **pp, const char *end) {
        const char *p = *pp;

        if (p < end && *p == '-')
                p++;
        if (p < end && *p == '0')
                p++;
        else if (p >= end || *p < '1' || !text_digits(&p, end))
                return false;
        if (p < end && *p == '.' && (++p, !text_digits(&p, end)))
                return false;
        if (p < end && (*p == 'e' || *p == 'E')) {
                p++;
                if (p < end && (*p == '+' || *p == '-'))
                        p++;
                if (!text_digits(&p, end))
                        return false;
        }
        *pp = p;
        return true;
}

static bool text_literal(const char **pp, const char *end, const char *word) {
        size_t n = strlen(word);

        if ((size_t) (end - *pp) < n || memcmp(*pp, word, n) != 0)
                return false;
        *pp += n;
        return true;
}

/* JSON's whitespace, skipped between tokens when ws (json_text_is_json()); never in the compact form. */
static void text_ws(const char **pp, const char *end, bool ws) {
        while (ws && *pp < end && strchr(" \t\r\n", **pp) && **pp != '\0')
                (*pp)++;
}

static bool text_value(const char **pp, const char *end, unsigned depth, unsigned max_depth, bool ws) {
        const char *p = *pp;
        char close;

        if (p >= end)
                return false;
        switch (*p) {
        case '"':
                return text_string(pp, end, false);
        case 't':
                return text_literal(pp, end, "true");
        case 'f':
                return text_literal(pp, end, "false");
        case 'n':
                return text_literal(pp, end, "null");
        case '[':
        case '{':
                break;
        default:
                return text_number(pp, end);
        }

        if (depth >= max_depth)
                return false;
        close = *p == '[' ? ']' : '}';
        p++;
        text_ws(&p, end, ws);
        if (p < end && *p == close) {
                *pp = p + 1;
                return true;
        }
        for (;;) {
                if (close == '}') {
                        if (!text_string(&p, end, true))
                                return false;
                        text_ws(&p, end, ws);
                        if (p >= end || *p++ != ':')
                                return false;
                        text_ws(&p, end, ws);
                }
                if (!text_value(&p, end, depth + 1, max_depth, ws))
                        return false;
                text_ws(&p, end, ws);
                if (p >= end)
                        return false;
                if (*p == close) {
                        *pp = p + 1;
                        return true;
                }
                if (*p++ != ',')
                        return false;
                text_ws(&p, end, ws);
        }
}

bool json_text_is_compact_value(const char *s, size_t len, unsigned max_depth) {
        const char *p = s;

        return text_value(&p, s + len, 0, max_depth, false) && p == s + len;
}

bool json_text_is_json(const char *s, size_t len) {
        const char *p = s, *end = s + len;

        text_ws(&p, end, true);
        if (!text_value(&p, end, 0, JSON_TEXT_MAX_DEPTH, true))
                return false;
        text_ws(&p, end, true);
        return p == end;
}
