/* SPDX-License-Identifier: MIT */
#pragma once

/* The NDJSON request/response protocol: request types, validation as the reference daemon's isValidDaemonRequest
 * (with photond's clearer error texts), and response builders. Pure and non-logging. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

typedef enum RequestType {
        /* reference request types */
        REQUEST_COMMAND,
        REQUEST_PING,
        REQUEST_SHUTDOWN,
        REQUEST_RELOAD,
        REQUEST_PROMPT_RESPONSE,
        REQUEST_SUBSCRIBE,
        REQUEST_UNSUBSCRIBE,
        REQUEST_PUBLISH,
        REQUEST_LOCK,
        REQUEST_UNLOCK,
        REQUEST_ASSIGN_LOCK,
        REQUEST_TRANSFER_LOCK,
        REQUEST_QUERY_LOCK,
        REQUEST_SCHEDULE,
        REQUEST_UNSCHEDULE,
        REQUEST_LIST_JOBS,
        REQUEST_PS,
        REQUEST_ENABLE_SCHEDULE,
        REQUEST_DISABLE_SCHEDULE,
        REQUEST_PAUSE_SCHEDULE,
        REQUEST_RESUME_SCHEDULE,
        REQUEST_ADD_MANUAL_SCHEDULE,
        REQUEST_ENABLE_LINE,
        REQUEST_DISABLE_LINE,
        REQUEST_PAUSE_LINE,
        REQUEST_RESUME_LINE,
        REQUEST_GET_LINE_HISTORY,
        REQUEST_GET_EXECUTION_HISTORY,
        REQUEST_LIST_LOCKS,
        REQUEST_GET_EVENTS_SINCE,
        REQUEST_CLEAR_INSTANCES,
        REQUEST_GET_CIRCUIT_HEALTH,
        REQUEST_STATUS,
        /* photond extensions */
        REQUEST_PROVIDE,          /* a connection offers to serve a photon's methods */
        REQUEST_INVOKE_RESULT,    /* provider -> photond: the answer to an invoke */
        REQUEST_EMIT,             /* provider -> photond: progress of an invoke */
        REQUEST_PROMPT,           /* provider -> photond: a question for the caller of an invoke */
        REQUEST_RUN_JOB,          /* run a scheduled job now */
        _REQUEST_TYPE_MAX,
        _REQUEST_TYPE_INVALID = -EINVAL,
} RequestType;

const char* request_type_to_string(RequestType t);
RequestType request_type_from_string(const char *s);

typedef struct Request {
        RequestType type;
        const char *id;                 /* points into json */
        struct json_object *json;       /* the whole request, owned */
} Request;

Request* request_free(Request *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Request*, request_free);

/* Parses and validates one line (without its newline). On success returns 0 and *ret. On failure returns
 * -EINVAL and *ret_error (allocated, the full error text such as "Invalid request format: id must be a string")
 * and *ret_id (allocated copy of the request id when the line had a string id, else NULL).
 * -ENOMEM on allocation failure. */
int request_parse(const char *line, size_t len, Request **ret, char **ret_error, char **ret_id);

/* A string field of the request, or NULL. */
const char* request_string(const Request *r, const char *key);

/* ---- lock requests ----
 *
 * The members of a lock request (lock, unlock, assign_lock, transfer_lock, query_lock) typed, from either parse:
 * lock_request_from_request() after request_parse(), or lock_request_parse_line() straight from the line (the fast
 * path). What they mean (which member names the holder, the default timeout, the caps) is the control front end's
 * (photond-control-locks.c), written once for both. */

typedef struct LockRequest {
        RequestType type;
        const char *id;
        const char *name;               /* lockName */
        const char *holder;             /* lockHolder: NULL when absent or not a string, as every string here */
        const char *session;            /* sessionId */
        const char *transfer_to;        /* lockTransferTo */
        /* lockTimeout and lockWait in ms: 0 when absent or null; fractions round up (a JavaScript timer would still
         * be pending), huge values saturate. *_invalid: given, but not a non-negative number (the value is 0). */
        uint64_t timeout_ms, wait_ms;
        bool timeout_invalid, wait_invalid;
} LockRequest;

/* The members of req, a request of a lock type; the strings are req's. */
void lock_request_from_request(const Request *req, LockRequest *ret);

/* The longest line lock_request_parse_line() takes; the room its strings are copied to. */
#define LOCK_LINE_MAX 512
typedef struct LockLineBuf {
        char data[LOCK_LINE_MAX];
} LockLineBuf;

/* The fast path's parse of a plain lock or unlock line, with no json-c objects and no allocation: only one flat
 * object without whitespace whose values are strings without escapes, control characters or non-ASCII bytes, or
 * integers of up to 18 digits, with no member it reads given twice, shorter than LOCK_LINE_MAX. For exactly such a
 * line returns true and *ret, its strings NUL-terminated copies in *buf: what request_parse() and
 * lock_request_from_request() make of the same line. Anything else returns false and is left to request_parse(),
 * which may take or refuse it. */
bool lock_request_parse_line(const char *line, size_t len, LockLineBuf *buf, LockRequest *ret);

/* Response builders. They return a new object (NULL on allocation failure). Ownership of data is taken, even on
 * failure. A NULL id becomes "unknown", as the reference daemon writes it. */
struct json_object* response_result_new(const char *id, bool success, struct json_object *data);
struct json_object* response_error_new(const char *id, const char *error, const char *suggestion);
struct json_object* response_pong_new(const char *id);
struct json_object* response_shutdown_new(void);

/* The parts of a publish request line as the publish fast path takes it, pointing into the line (nothing is
 * allocated): id and channel are strings without escapes (the bytes between the quotes, which json-c prints back
 * between quotes as they are), message the JSON text of the message (NULL if absent), already in the form json-c
 * prints with JSON_FORMAT_FLAGS. */
typedef struct PublishScan {
        const char *id, *channel, *message;
        size_t id_len, channel_len, message_len;
} PublishScan;

/* Scans line for the publish fast path without building JSON: 1 and *ret if it is a strictly valid JSON publish
 * request that request_parse() takes as the same publish (type, id and channel strings without escapes, a message
 * json-c would print back unchanged, no sessionId, no duplicate keys, no NUL in a member request_parse() refuses it
 * in); 0 otherwise, and the line is left to request_parse(), which takes or refuses it. */
int request_scan_publish(const char *line, size_t len, PublishScan *ret);
