/* SPDX-License-Identifier: MIT */
#pragma once

/* json-c helpers. Non-logging. Every byte photond writes as JSON is formatted here, so the wire format has one
 * place to match the reference daemon (JSON.stringify: compact, '/' not escaped). */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

#define JSON_FORMAT_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static inline void json_object_putp(struct json_object **p) {
        if (*p)
                (void) json_object_put(*p);
        *p = NULL;
}

/* The one rule for turning a json-c string into a C string. JSON strings may hold NUL ("a\u0000x"), which every
 * C string function would silently cut at: "a\u0000x" and "a\u0000y" would be the same lock "a". So a string
 * with a NUL byte is never a C string: 0 and *ret for a string without one, -EINVAL for a string with one,
 * -EMEDIUMTYPE for anything but a string. */
int json_string_get_cstring(struct json_object *v, const char **ret);
/* The same as a value: the C string, or NULL for anything else (a string with a NUL byte included). */
const char* json_object_get_cstring(struct json_object *v);

/* The string value of key as a C string: NULL if absent, not a string, or holding a NUL byte. Callers that must
 * tell "holds a NUL" from "absent" use json_string_get_cstring(). */
const char* json_get_string(struct json_object *o, const char *key);

/* 0 and *ret if key holds an integer-valued number (or a decimal string when allow_string), -ENOENT if absent or
 * null, -EINVAL otherwise. */
int json_get_int64(struct json_object *o, const char *key, bool allow_string, int64_t *ret);

/* Adds key:value, taking ownership of value even on failure. -ENOMEM on failure. */
int json_add(struct json_object *o, const char *key, struct json_object *value);
/* The same for a value that may be JSON null, which json-c represents as NULL (json_add() reads NULL as an
 * allocation failure). */
int json_add_nullable(struct json_object *o, const char *key, struct json_object *value);
/* A new reference to o, or NULL (JSON null) for NULL. */
struct json_object* json_ref_or_null(struct json_object *o);
/* A number of seconds with millisecond resolution ("12.345", not json-c's 17 significant digits). */
struct json_object* json_new_seconds(uint64_t usec);
int json_add_string(struct json_object *o, const char *key, const char *value);   /* NULL value: key left out */
int json_add_int64(struct json_object *o, const char *key, int64_t value);
int json_add_bool(struct json_object *o, const char *key, bool value);

/* Parses exactly one JSON value from buf (len bytes); trailing whitespace is allowed. On a syntax error returns
 * -EINVAL and, if ret_error is non-NULL, a static description. */
int json_parse(const char *buf, size_t len, struct json_object **ret, const char **ret_error);

/* For the few records written on every iteration of a hot path (the lock journal), where a json-c tree per line
 * cost as much as the write itself: s as a JSON string, quotes included, byte for byte as json-c prints it with
 * JSON_FORMAT_FLAGS, at p, which must have room for JSON_STRING_SIZE_MAX(strlen(s)). Returns the end. */
#define JSON_STRING_SIZE_MAX(len) (6 * (size_t) (len) + 2)
char* json_put_string(char *p, const char *s);
/* v in decimal at p (room for JSON_INT64_SIZE_MAX bytes; nothing is written after the digits). Returns the end. */
#define JSON_INT64_SIZE_MAX 21
char* json_put_int64(char *p, int64_t v);
char* json_put_uint64(char *p, uint64_t v);

/* Whether s is exactly one JSON value without whitespace (json-c's compact print is one), nested at most max_depth
 * deep, checked in place without building anything. Every text it takes, json-c's strict parser takes too (up to
 * json-c's own depth; the fuzzers check); no raw control character, so a newline cannot end a line it is copied
 * into. The form photond keeps messages in. */
bool json_text_is_compact_value(const char *s, size_t len, unsigned max_depth);
/* Whether s is exactly one JSON value (RFC 8259), whitespace allowed between tokens and around it. */
bool json_text_is_json(const char *s, size_t len);
/* The depth photond takes a message's text to: deeper than json-c parses does occur (a webhook's body of json-c's
 * depth inside the event photond wraps around it); the limit only bounds the recursion. */
#define JSON_TEXT_MAX_DEPTH 128U
