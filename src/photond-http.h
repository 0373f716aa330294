/* SPDX-License-Identifier: MIT */
#pragma once

/* The HTTP front end: one libmicrohttpd daemon on the "webhook" listener, driven by the sd-event loop, with the
 * connection caps and slow-client defences every route shares, and a route table. A route is a method and a path
 * pattern with its handlers (HttpRoute); a handler sees a small request context (HttpRequest: method, path, the
 * captured parts of the pattern, headers, the body once complete) and answers through http_respond*(). The
 * webhook (photond-webhook.c) is one such route; /healthz is the front end's own. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "list.h"
#include "macro.h"

typedef struct HttpServer HttpServer;
typedef struct HttpRequest HttpRequest;
struct MHD_Connection;
struct json_object;

/* Which CORS headers a route's answers carry. */
typedef enum HttpCors {
        /* The default: Access-Control-Allow-Origin only for an Origin in PHOTOND_HTTP_CORS_ORIGINS (none by
         * default), with Vary: Origin; a preflight (OPTIONS) names the methods of the routes on that path. */
        HTTP_CORS_ALLOWLIST,
        /* The reference's, on every answer: Access-Control-Allow-Origin for loopback origins (webhook_cors_origin()),
         * and its Allow-Methods and Allow-Headers. Webhooks, /healthz, and whatever no route takes. */
        HTTP_CORS_LOOPBACK,
        _HTTP_CORS_MAX,
        _HTTP_CORS_INVALID = -EINVAL,
} HttpCors;

/* Who may use a route. */
typedef enum HttpAuth {
        /* The default: "Authorization: Bearer <token>" with the API token ($CREDENTIALS_DIRECTORY/api-token, else
         * PHOTOND_API_TOKEN); 401 without it or with another, 403 while none is configured. */
        HTTP_AUTH_TOKEN,
        /* Anyone the allowlist lets in (/healthz; webhooks, which check their own signatures). */
        HTTP_AUTH_NONE,
        /* The API token as for HTTP_AUTH_TOKEN or, without an Authorization header, a stream token
         * (http_server_stream_token()) in the query parameter "token": for what a browser opens with EventSource,
         * which cannot send a header (GET /v1/events). 401 for a stream token that is expired or not ours. */
        HTTP_AUTH_TOKEN_OR_STREAM,
        _HTTP_AUTH_MAX,
        _HTTP_AUTH_INVALID = -EINVAL,
} HttpAuth;

/* What the front end refused on a route's behalf while taking the body in (the route's refused() counts it). */
typedef enum HttpRefusal {
        HTTP_REFUSAL_TOO_LARGE,         /* 413: over the route's max_body */
        HTTP_REFUSAL_BUSY,              /* 503: all bodies in flight would pass WEBHOOK_MAX_BUFFERED_BYTES */
        HTTP_REFUSAL_TIMEOUT,           /* 408: not complete WEBHOOK_REQUEST_TIMEOUT_S after the head */
        _HTTP_REFUSAL_MAX,
        _HTTP_REFUSAL_INVALID = -EINVAL,
} HttpRefusal;

/* One route. The handlers return 0, or a negative errno to drop the connection without an answer (out of memory).
 * Every handler gets the route's userdata. */
typedef struct HttpRoute {
        /* "GET", "POST", …; NULL: any method (OPTIONS never reaches a route: it is the CORS preflight). */
        const char *method;
        /* The path: literal segments, "{name}" for one non-empty segment and, as the last segment, "{name*}" for
         * the non-empty rest (slashes included); captured parts are read with http_request_capture(). "*" makes
         * the fallback: every request no other route takes (at most one). */
        const char *pattern;
        HttpCors cors;
        HttpAuth auth;                  /* checked before begin() */
        /* The head is complete, no byte of the body read yet: answer to end the request here, or return 0 without
         * answering to take the body in (NULL: take it). */
        int (*begin)(HttpRequest *req, void *userdata);
        /* The body is complete (http_request_body()): answer now, or http_request_suspend() and answer later with
         * http_request_finish(). Required. */
        int (*complete)(HttpRequest *req, void *userdata);
        /* The request ends, answered or not: release what the route keeps in it (http_request_set_data()). */
        void (*done)(HttpRequest *req, void *userdata);
        /* The front end refused the body (counting only: the answer is given). */
        void (*refused)(HttpRequest *req, HttpRefusal why, void *userdata);
        /* The client went away while the request was suspended; the request is finished after this returns. */
        void (*gone)(HttpRequest *req, void *userdata);
        uint64_t max_body;              /* bytes; 0: limits.WEBHOOK_MAX_BODY_BYTES */
        void *userdata;
} HttpRoute;

/* The front end's own counters (status: the webhook object shows them, as it did before the split). */
typedef struct HttpStats {
        uint64_t n_requests;            /* every request head, whatever became of it */
        unsigned n_connections;         /* open, not closed by photond */
        uint64_t n_bad_framing;         /* 400/501: ambiguous body length */
        uint64_t n_source_not_allowed;  /* 403: PHOTON_WEBHOOK_ALLOWED_IPS */
        uint64_t n_head_timeout;        /* closed: head not complete within WEBHOOK_HEAD_TIMEOUT_S */
        uint64_t n_evicted;             /* closed: an unfinished head made room for a newcomer */
        uint64_t n_too_many_connections; /* refused: WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS */
        uint64_t n_unauthorized;        /* 401: no or a wrong API token, a bad or expired stream token */
        uint64_t n_token_not_configured; /* 403: a route that needs the API token, and none is configured */
} HttpStats;

typedef struct HttpServerConfig {
        sd_event *event;
        uint64_t started_mono_usec;     /* for /healthz's uptime: when the daemon started (CLOCK_MONOTONIC) */
        /* Whether output must still wait: something this loop iteration changed is not on disk yet (the state,
         * job files; group commit). Asked after the Manager's flush, before releasing answers and events that
         * may report such a change (HttpRelease). NULL: never. */
        bool (*output_held)(void *userdata);
        void *userdata;
} HttpServerConfig;

/* A callback run once the output of this loop iteration may leave: after the Manager's flush (a defer source of
 * lower priority than its), and only when output_held() says so (else it is tried again a second later). The
 * owner embeds it, zero-initialised, and fills in cb. */
typedef struct HttpRelease HttpRelease;
struct HttpRelease {
        void (*cb)(HttpRelease *r);
        LIST_FIELDS(HttpRelease, releases);
        bool pending;
};

/* Serves HTTP on fd (a listening stream socket, taken over: closed on failure, by libmicrohttpd when freed). Reads
 * PHOTON_WEBHOOK_ALLOWED_IPS, PHOTOND_HTTP_CORS_ORIGINS and the API token, and checks the connection caps; a bad
 * setting fails (logged). Nothing is served
 * before the loop runs, so the routes are added in between (/healthz is there from the start). */
int http_server_new(const HttpServerConfig *config, int fd, HttpServer **ret);
/* Ends every request (suspended ones included: their routes' done() runs) and closes the listener. */
/* At a stop: stops accepting connections (the listener stays open, so new ones wait in its backlog for the next
 * process); the requests under way go on. */
void http_server_quiesce(HttpServer *h);
HttpServer* http_server_free(HttpServer *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer*, http_server_free);

/* Adds a route (copied; its strings must outlive the server). Routes are tried in the order added, the fallback
 * last. -EEXIST for a second fallback, -EINVAL for a bad pattern, -ENOMEM. */
int http_server_add_route(HttpServer *h, const HttpRoute *route);

const HttpStats* http_server_stats(HttpServer *h);
/* The loop it runs on (for the routes' timers). */
sd_event* http_server_event(HttpServer *h);

/* Re-reads the API token (SIGHUP), and makes a new stream token key: the stream tokens issued so far are
 * refused from now on. On failure the old token stays. */
int http_server_reload_token(HttpServer *h);

/* "<expiry>.<64 hex digits>": the expiry in milliseconds of CLOCK_BOOTTIME, then HMAC-SHA256 over it. */
#define HTTP_STREAM_TOKEN_MAX (20 + 1 + 64 + 1)

/* A stream token: opens a route with HTTP_AUTH_TOKEN_OR_STREAM in place of the API token until it expires,
 * limits.SSE_TOKEN_LIFETIME_S from now. It is signed with a random key made when the API token is read (at start,
 * on SIGHUP), never with the API token, and names nothing else: whoever holds it may open such a route, any
 * number of times, until it expires. Written NUL-terminated into ret; *ret_expires_ms is when it expires
 * (CLOCK_REALTIME, milliseconds, as the protocol's timestamps). 0, or -EIO. */
int http_server_stream_token(HttpServer *h, char ret[static HTTP_STREAM_TOKEN_MAX], int64_t *ret_expires_ms);

/* Queues r's callback (once, however often it is queued before it runs). */
void http_server_release(HttpServer *h, HttpRelease *r);
/* Unqueues it (its owner goes away). */
void http_server_release_cancel(HttpServer *h, HttpRelease *r);
/* Called by the Manager at the end of its flush: releases now what waited for it (the defer source alone could
 * wait long behind a steady stream of requests). h may be NULL. */
void http_server_flushed(HttpServer *h);

/* Binds the listener when not socket-activated: PHOTON_WEBHOOK_PORT (0/unset = off) on PHOTON_WEBHOOK_ADDRESS
 * (default 127.0.0.1). Returns the fd, -ENOENT when off. */
int http_bind_from_env(int *ret_fd);

/* ---- a request, for its route's handlers ---- */

const char* http_request_method(HttpRequest *req);
const char* http_request_path(HttpRequest *req);
/* The part of the path the pattern's "{name}" matched, or NULL. */
const char* http_request_capture(HttpRequest *req, const char *name);
/* A request header (case-insensitive name), or NULL. */
const char* http_request_header(HttpRequest *req, const char *name);
/* The body received (NULL and 0 before complete() or without one). */
const char* http_request_body(HttpRequest *req, size_t *ret_len);
/* The peer's printable address ("127.0.0.1", "::1", "unknown"). */
const char* http_request_address(HttpRequest *req);
/* libmicrohttpd's connection, for what the helpers do not cover (every header, the query arguments). */
struct MHD_Connection* http_request_connection(HttpRequest *req);
/* What the route keeps in the request (released by its done()). */
void* http_request_get_data(HttpRequest *req);
void http_request_set_data(HttpRequest *req, void *data);

/* ---- answers ---- */

/* Answers with status and body (serialized; NULL: none), the route's CORS headers and Retry-After if not NULL.
 * 0, or a negative errno (the connection is then dropped). */
int http_respond(HttpRequest *req, unsigned status, struct json_object *body, const char *retry_after);
/* The same with {"error": error}. */
int http_respond_error(HttpRequest *req, unsigned status, const char *error, const char *retry_after);
/* Answers with body (len bytes, taken over: freed with free(), also on failure) as content_type. */
int http_respond_text(HttpRequest *req, unsigned status, const char *content_type, char *body, size_t len);
/* The status the request was answered with (refusals written early by the front end included), 0 while none: for
 * a route's done(). */
unsigned http_request_status(HttpRequest *req);

/* A header of an answer. */
typedef struct HttpHeader {
        const char *name;
        const char *value;
} HttpHeader;

/* Answers status with size bytes of data (not copied: they must outlive the server, as a file built into
 * photond does), content_type, the route's CORS headers and the n_headers headers. 0, or a negative errno. */
int http_respond_static(HttpRequest *req, unsigned status, const char *content_type, const void *data, size_t size,
                        const HttpHeader *headers, size_t n_headers);

/* Waits for an answer that comes later (a method call): the connection is set aside, and the route's gone() is
 * called if the client leaves meanwhile. */
void http_request_suspend(HttpRequest *req);
/* The later answer (answer taken over; NULL: drop the connection without one), sent on the next loop iteration. */
void http_request_finish(HttpRequest *req, unsigned status, struct json_object *answer);
/* From a handler that changed something: the answer (taken over) leaves once that change is saved (HttpRelease).
 * 0 or -ENOMEM. */
int http_respond_saved(HttpRequest *req, unsigned status, struct json_object *answer);

/* ---- streams: answers written as they come (Server-Sent Events) ---- */

/* Copies up to max bytes of the stream into buf: their count; 0 when nothing is ready (the connection is set aside,
 * watched for hang-ups, until http_stream_wake()); -1 to end the response. */
typedef ssize_t (*HttpStreamRead)(HttpRequest *req, char *buf, size_t max, void *userdata);

/* Answers status with a body of unknown length read from read() (chunked), content_type, and Cache-Control:
 * no-store and X-Accel-Buffering: no (a proxy must not hold it back). The route's done() ends it. */
int http_respond_stream(HttpRequest *req, unsigned status, const char *content_type, HttpStreamRead read,
                        void *userdata);
/* The later answer of a suspended request (http_request_suspend()) is a stream: as http_respond_stream(), sent
 * on the next loop iteration. content_type must outlive the request (a literal). */
void http_request_finish_stream(HttpRequest *req, unsigned status, const char *content_type, HttpStreamRead read,
                                void *userdata);
/* There is something to read again: resumes a stream that is set aside. */
void http_stream_wake(HttpRequest *req);
/* Cuts the connection (a stream whose reader does not keep up): the route's done() follows. */
void http_request_abort(HttpRequest *req);
