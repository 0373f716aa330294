/* SPDX-License-Identifier: MIT */
#pragma once

/* HTTP through curl for the integration tests of photond's HTTP listener (http-client.c). */

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

struct json_object;

typedef struct Http {
        int status;
        char *head;                     /* the final response's header block */
        char *body;
        struct json_object *json;       /* body parsed, if it is JSON */
} Http;

void http_free(Http *h);

/* Everything readable from fd until EOF, NUL-terminated. */
char* read_all(int fd);

/* curl (silent, HTTP/1.1, 20 s at most) with args (NULL-terminated, without the program name): started with its
 * stdout as *ret_fd, waited for (its exit status, 128 + signal), or run to the end with its stdout in *ret_out. */
pid_t curl_spawn(const char *const *args, int *ret_fd);
int curl_wait(pid_t pid);
int run_curl(const char *const *args, char **ret_out);

/* One HTTP request to 127.0.0.1:port. body: NULL for none, "@path" for a file. Extra curl arguments (headers as
 * "-H", "Name: value", ...) follow, NULL-terminated. The test fails if curl does. */
Http* http_v(int port, const char *method, const char *path, const char *body, va_list ap);
Http* http(int port, const char *method, const char *path, const char *body, ...);
/* The value of a response header (case-insensitive name), or NULL; static buffer. */
const char* http_header(const Http *h, const char *name);
/* Checks the status and, if error is non-NULL, the JSON body's "error"; frees h. */
void expect(Http *h, int status, const char *error);

/* Strings that live until the test process ends (kept reachable for LeakSanitizer): keep() takes s, hdr() formats. */
char* keep(char *s);
char* hdr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Connects to d's control socket until it accepts (systemd-socket-activate binds it a moment before photond
 * listens). */
void wait_listening(Daemon *d);
/* photond socket-activated with the webhook (HTTP) fd and env, ready. */
Daemon* daemon_start_http(const char *const *env);

/* An SSE stream (GET /v1/events) through curl: its output, read as it comes. */
typedef struct Sse {
        pid_t pid;
        int fd;
        char *buf;
        size_t len, seen;               /* seen: what sse_next() has consumed */
} Sse;

/* auth: the Authorization header (NULL: none), header: another one (NULL: none). */
Sse* sse_open_as(int port, const char *query, const char *auth, const char *header);
/* Reads until text has come (true) or timeout_ms passed, or the stream ended (false). */
bool sse_wait(Sse *s, const char *text, int timeout_ms);
/* Reads what has come, without waiting. */
void sse_drain(Sse *s);
/* The next event (up to its blank line) after what was seen, within timeout_ms, as a string (kept); NULL if none. */
const char* sse_next(Sse *s, int timeout_ms);
/* sse_next() without keeping the event: true when one came within timeout_ms. */
bool sse_skip_event(Sse *s, int timeout_ms);
void sse_close(Sse *s);
/* An event's text as sse_next() returns it. */
const char* sse_event_text(int64_t id, const char *channel, const char *data);
