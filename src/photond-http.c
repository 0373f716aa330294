/* SPDX-License-Identifier: MIT */

/* The HTTP front end: libmicrohttpd on the "webhook" listener, driven by the manager's sd-event loop as
 * journal-remote does it (MHD's epoll fd is an IO source, its timeout a timer; no MHD threads, so every callback
 * runs on the loop thread and may call the cores). What every route shares is here: the connection table with its
 * defences against slow clients (a deadline for the request head, connections kept free, a share per address),
 * the body's framing and size, the source allowlist, CORS, the route table, suspending a request whose answer
 * comes later. A request is checked in the reference's order (preflight, allowlist, route), after photond's own
 * check of the body's framing; the route then decides (photond-webhook.c for /webhook/…). */

#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <uthash.h>

#include "clock.h"
#include "fd-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-http.h"
#include "photond-limits.h"
#include "string-util.h"
#include "webhook-auth.h"

#define ERROR_TOO_LARGE "Request body too large"
#define ERROR_BODIES_IN_FLIGHT "Too many webhook bodies in flight"
#define CORS_ALLOW_METHODS "GET, POST, OPTIONS"
#define CORS_ALLOW_HEADERS "Content-Type, X-Webhook-Secret, X-Photon-Name"
/* What a browser may send to a route with the allowlist's CORS, and how long it may cache a preflight. */
#define CORS_API_ALLOW_HEADERS "Authorization, Content-Type, Last-Event-ID"
#define CORS_API_MAX_AGE "600"
#define ERROR_TOKEN_NOT_CONFIGURED \
        "API token not configured. Set the api-token credential ($CREDENTIALS_DIRECTORY/api-token) or PHOTOND_API_TOKEN"
#define ERROR_UNAUTHORIZED "Invalid or missing API token: send Authorization: Bearer <token>"
#define ERROR_STREAM_TOKEN_INVALID "Invalid stream token: ask for a new one (POST /v1/events/token)"
#define ERROR_STREAM_TOKEN_EXPIRED "Stream token expired: ask for a new one (POST /v1/events/token)"
#define ERROR_STREAM_TOKEN_ELSEWHERE \
        "A stream token (?token=) only opens event streams: send Authorization: Bearer <token>"
#define TOKEN_DIGEST_SIZE 32
/* What a stream token's MAC covers: this, then its expiry in decimal. The text keeps the MAC from meaning anything
 * else should the key ever sign something else. */
#define STREAM_TOKEN_CONTEXT "photond stream token, expires "
#define STREAM_KEY_SIZE 32
/* The longest SSE_TOKEN_LIFETIME_S: the token travels in URLs, which proxies log. */
#define STREAM_TOKEN_MAX_LIFETIME_S (24 * 3600)
/* After an answer given while the body still streams in, how long the rest is read and dropped so that closing
 * does not reset the connection before the sender has read the answer (a sender that stops on an error answer,
 * as curl does, closes first). */
#define EARLY_ANSWER_LINGER_USEC (2 * USEC_PER_SEC)
/* "{name}" parts in one pattern. */
#define HTTP_MAX_CAPTURES 4

typedef struct HttpAddress HttpAddress;
typedef struct HttpConnection HttpConnection;

/* A route as added, with its pattern cut into segments. */
typedef struct HttpRouteEntry {
        HttpRoute route;
        bool fallback;
} HttpRouteEntry;

/* The open connections of one source address. */
struct HttpAddress {
        UT_hash_handle hh;
        unsigned n_connections;
        char address[];
};

/* One TCP connection, from accept to close (MHD's socket context). libmicrohttpd's own timeout only counts idle
 * time and restarts with every byte, and it calls photond only once a request's head is complete: a peer that
 * trickles its head would hold a slot of the connection table for as long as it likes, and enough of them lock
 * everyone out, /healthz included. So photond tracks the connections still sending a head, in the order of
 * their deadlines, and closes them at the deadline, or earlier, oldest first, when the table or the peer's share
 * of it runs full. */
struct HttpConnection {
        HttpServer *server;
        int fd;
        HttpAddress *address;           /* NULL once closed by photond (no longer counted) */
        LIST_FIELDS(HttpConnection, heads);
        bool in_head;                   /* in server->heads: a request head is awaited */
        bool closing;                   /* shut down by photond; MHD closes it when it next looks */
        uint64_t head_deadline_usec;    /* CLOCK_MONOTONIC */
};

/* One request that reached a route, from its head to its answer (MHD's *con_cls). */
struct HttpRequest {
        HttpServer *server;
        struct MHD_Connection *connection;
        const HttpRouteEntry *entry;
        LIST_FIELDS(HttpRequest, requests);

        const char *method;             /* MHD's, valid for the request */
        const char *path;
        char address[INET6_ADDRSTRLEN];
        struct {
                const char *name;       /* into the pattern, name_len bytes */
                size_t name_len;
                char *value;
        } captures[HTTP_MAX_CAPTURES];
        unsigned n_captures;
        void *data;                     /* the route's */

        char *body;
        size_t body_len;
        size_t body_alloc;
        uint64_t max_body;
        uint64_t body_deadline_usec;    /* CLOCK_MONOTONIC: the whole body must be here by then */
        bool answered_early;            /* refused while the body streamed in: the rest is dropped */
        uint64_t linger_until_usec;     /* ... until then, after which the connection is cut */

        bool completed;                 /* complete() was called */
        bool answered;                  /* a response is queued */
        unsigned answered_status;       /* its status (also of one written early); 0: none */
        HttpRelease release;            /* http_respond_saved(): the answer waits for it */
        unsigned saved_status;
        struct json_object *saved_answer;
        HttpStreamRead stream_read;     /* a stream: what it reads from */
        void *stream_userdata;
        const char *stream_content_type; /* http_request_finish_stream(): the stream to answer with, once resumed */
        bool stream_suspended;          /* the stream had nothing to read: set aside until woken */
        sd_event_source *hup_event_source;
        bool suspended;
        bool waiting;                   /* suspended for a later answer that has not come */
        bool closing;                   /* finished without an answer (client gone, shutdown): drop it */
        unsigned status;                /* non-zero once the later answer is ready */
        struct json_object *answer;
};

struct HttpServer {
        sd_event *event;
        uint64_t started_mono_usec;
        bool (*output_held)(void *userdata);
        void *userdata;
        struct MHD_Daemon *daemon;
        int quiesced_fd;                /* the listener MHD gave back at a stop (http_server_quiesce()); closed last */
        sd_event_source *io_event_source;
        sd_event_source *timer_event_source;
        sd_event_source *run_source;    /* defer: MHD_run() on the next iteration, after a resume */
        bool resumed;                   /* a connection was resumed since the last MHD_run() */
        bool running;                   /* past start-up: MHD's own messages are only debug noise from now on */

        /* configuration from the environment, fixed at start */
        Cidr *allowed;                  /* PHOTON_WEBHOOK_ALLOWED_IPS; n_allowed == 0: everyone */
        size_t n_allowed;
        char **cors_origins;            /* PHOTOND_HTTP_CORS_ORIGINS, NULL-terminated; "*" allows any */

        /* the API token, re-read on SIGHUP: only its SHA-256 is kept, so comparing takes the same time whatever
         * the length of a guess */
        bool token_set;
        uint8_t token_digest[TOKEN_DIGEST_SIZE];
        /* signs stream tokens (HTTP_AUTH_TOKEN_OR_STREAM): random, made anew with every read of the API token */
        uint8_t stream_key[STREAM_KEY_SIZE];

        HttpRouteEntry **routes;        /* in the order added; each its own allocation, so requests may point at it */
        size_t n_routes;
        HttpRouteEntry *fallback;

        LIST_HEAD(HttpRequest, requests);
        uint64_t buffered_bytes;        /* request bodies held by all connections */

        /* connections: those awaiting a request head, oldest deadline first, and the count per address */
        LIST_HEAD(HttpConnection, heads);
        HttpConnection *heads_tail;
        HttpAddress *addresses;
        sd_event_source *head_timer_source;
        bool connection_closed;         /* during this MHD_run() */

        /* output that waits for the end of the loop iteration's writes (HttpRelease), oldest last */
        LIST_HEAD(HttpRelease, releases);
        HttpRelease *releases_tail;
        size_t n_releases;
        sd_event_source *release_source;        /* defer, after the Manager's flush */
        sd_event_source *release_retry_source;  /* while output_held(): try again a second later */

        HttpStats stats;
};

/* --- routes --- */

/* Whether path matches pattern; captures go to req (may be NULL: only test). A "{name*}" takes the rest. */
static int route_match(const char *pattern, const char *path, HttpRequest *req, bool *ret_match) {
        const char *p = pattern, *s = path;

        *ret_match = false;
        if (req) {
                for (unsigned i = 0; i < req->n_captures; i++)
                        req->captures[i].value = mfree(req->captures[i].value);
                req->n_captures = 0;
        }

        while (*p) {
                if (*p != '{') {
                        if (*p != *s)
                                return 0;
                        p++;
                        s++;
                        continue;
                }

                const char *close = strchr(p, '}');
                bool rest = close[-1] == '*';
                size_t len = rest ? strlen(s) : strcspn(s, "/");

                if (len == 0)
                        return 0;
                if (req) {
                        char *v = strndup(s, len);

                        if (!v)
                                return -ENOMEM;
                        req->captures[req->n_captures++] = (typeof(req->captures[0])) {
                                .name = p + 1,
                                .name_len = close - p - 1 - rest,
                                .value = v,
                        };
                }
                p = close + 1;
                s += len;
        }
        *ret_match = *s == '\0';
        return 0;
}

static bool pattern_is_valid(const char *pattern) {
        unsigned n = 0;

        if (streq(pattern, "*"))
                return true;
        if (pattern[0] != '/')
                return false;
        for (const char *p = pattern; (p = strchr(p, '{')); n++) {
                const char *close = strchr(p, '}');

                /* A capture is a whole segment; "{name*}" only the last one. */
                if (!close || close == p + 1 || p[-1] != '/' || (close[1] != '/' && close[1] != '\0') ||
                    (close[-1] == '*' && (close[1] != '\0' || close == p + 2)) || memchr(p + 1, '{', close - p - 1))
                        return false;
                p = close;
        }
        return n <= HTTP_MAX_CAPTURES;
}

int http_server_add_route(HttpServer *h, const HttpRoute *route) {
        _cleanup_free_ HttpRouteEntry *e = NULL;
        HttpRouteEntry **n;
        bool fallback;

        assert(h);
        assert(route);
        assert(route->pattern);
        assert(route->complete);

        fallback = streq(route->pattern, "*");
        if (fallback && h->fallback)
                return -EEXIST;
        if (!pattern_is_valid(route->pattern))
                return -EINVAL;

        e = new(HttpRouteEntry, 1);
        if (!e)
                return -ENOMEM;
        *e = (HttpRouteEntry) { .route = *route, .fallback = fallback };
        n = realloc(h->routes, (h->n_routes + 1) * sizeof(HttpRouteEntry*));
        if (!n)
                return -ENOMEM;
        h->routes = n;
        if (fallback)
                h->fallback = e;
        h->routes[h->n_routes++] = TAKE_PTR(e);
        return 0;
}

/* The route for method and path (captures into req), the fallback when none matches, NULL without one. */
static int route_find(HttpServer *h, const char *method, const char *path, HttpRequest *req,
                      const HttpRouteEntry **ret) {
        int r;

        for (size_t i = 0; i < h->n_routes; i++) {
                const HttpRouteEntry *e = h->routes[i];
                bool match;

                if (e->fallback || (e->route.method && !streq(e->route.method, method)))
                        continue;
                r = route_match(e->route.pattern, path, req, &match);
                if (r < 0)
                        return r;
                if (match) {
                        *ret = e;
                        return 0;
                }
        }
        *ret = h->fallback;
        return 0;
}

const HttpStats* http_server_stats(HttpServer *h) {
        assert(h);
        return &h->stats;
}

sd_event* http_server_event(HttpServer *h) {
        assert(h);
        return h->event;
}

/* --- requests --- */

const char* http_request_method(HttpRequest *req) {
        return req->method;
}

const char* http_request_path(HttpRequest *req) {
        return req->path;
}

const char* http_request_capture(HttpRequest *req, const char *name) {
        for (unsigned i = 0; i < req->n_captures; i++)
                if (strlen(name) == req->captures[i].name_len &&
                    strncmp(req->captures[i].name, name, req->captures[i].name_len) == 0)
                        return req->captures[i].value;
        return NULL;
}

const char* http_request_header(HttpRequest *req, const char *name) {
        return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char* http_request_body(HttpRequest *req, size_t *ret_len) {
        if (ret_len)
                *ret_len = req->body_len;
        return req->body;
}

const char* http_request_address(HttpRequest *req) {
        return req->address;
}

struct MHD_Connection* http_request_connection(HttpRequest *req) {
        return req->connection;
}

void* http_request_get_data(HttpRequest *req) {
        return req->data;
}

void http_request_set_data(HttpRequest *req, void *data) {
        req->data = data;
}

static void http_request_release_body(HttpRequest *req) {
        req->server->buffered_bytes -= req->body_alloc;
        req->body = mfree(req->body);
        req->body_len = req->body_alloc = 0;
}

static HttpRequest* http_request_free(HttpRequest *req) {
        if (!req)
                return NULL;

        if (req->entry && req->entry->route.done)
                req->entry->route.done(req, req->entry->route.userdata);
        http_server_release_cancel(req->server, &req->release);
        json_object_put(req->saved_answer);
        sd_event_source_disable_unref(req->hup_event_source);
        http_request_release_body(req);
        LIST_REMOVE(requests, req->server->requests, req);
        json_object_put(req->answer);
        for (unsigned i = 0; i < req->n_captures; i++)
                free(req->captures[i].value);
        return mfree(req);
}

/* --- connections --- */

/* A head is closed to make room only once it has been pending this long: in a burst of connections, the heads
 * of the newest ones are still unread in their sockets, which says nothing about their senders. */
#define HEAD_EVICT_MIN_AGE_USEC (1 * USEC_PER_SEC)

/* What a connection closed before its request head was complete gets, written straight to the socket: MHD has
 * nothing to answer with (it never called us), and a client should see why rather than a bare reset. */
#define RAW_408 "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
#define RAW_503 "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n" \
        "Content-Length: 0\r\n\r\n"

static void heads_append(HttpServer *h, HttpConnection *c) {
        c->heads_next = NULL;
        c->heads_prev = h->heads_tail;
        if (h->heads_tail)
                h->heads_tail->heads_next = c;
        else
                h->heads = c;
        h->heads_tail = c;
        c->in_head = true;
}

static void heads_remove(HttpServer *h, HttpConnection *c) {
        if (!c->in_head)
                return;
        if (h->heads_tail == c)
                h->heads_tail = c->heads_prev;
        LIST_REMOVE(heads, h->heads, c);
        c->in_head = false;
}

static bool http_over_headroom(HttpServer *h) {
        return h->stats.n_connections + limits.WEBHOOK_RESERVED_CONNECTIONS > limits.WEBHOOK_MAX_CONNECTIONS;
}

/* When c's head may be closed to make room. */
static uint64_t head_evictable_usec(HttpConnection *c) {
        return c->head_deadline_usec - limits.WEBHOOK_HEAD_TIMEOUT_S * USEC_PER_SEC + HEAD_EVICT_MIN_AGE_USEC;
}

/* For the oldest head's deadline, or earlier, while the table is over its headroom, for when that head may be
 * closed to make room: a full table has no accept left to do that at. */
static void http_arm_head_timer(HttpServer *h) {
        uint64_t when;
        int r;

        if (!h->head_timer_source)
                return;
        if (!h->heads) {
                (void) sd_event_source_set_enabled(h->head_timer_source, SD_EVENT_OFF);
                return;
        }
        when = h->heads->head_deadline_usec;
        if (http_over_headroom(h))
                when = MIN(when, head_evictable_usec(h->heads));
        r = sd_event_source_set_time(h->head_timer_source, when);
        if (r >= 0)
                r = sd_event_source_set_enabled(h->head_timer_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the HTTP head timer: %m");
}

static void http_connection_uncount(HttpServer *h, HttpConnection *c) {
        if (!c->address)
                return;
        h->stats.n_connections--;
        if (--c->address->n_connections == 0) {
                HASH_DEL(h->addresses, c->address);
                free(c->address);
        }
        c->address = NULL;
}

/* Ends a connection that has not sent a complete request head: a short answer, then shutdown(), which MHD sees
 * as the peer going away (it owns the fd and closes it). It stops counting against the caps at once. */
static void http_connection_close(HttpServer *h, HttpConnection *c, uint64_t *counter, const char *raw) {
        if (c->closing)
                return;
        c->closing = true;
        heads_remove(h, c);
        http_connection_uncount(h, c);
        (*counter)++;
        (void) send(c->fd, raw, strlen(raw), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void) shutdown(c->fd, SHUT_RDWR);
}

/* The oldest connection still sending its head, of address a (any if NULL), other than except, if its head has
 * been pending for HEAD_EVICT_MIN_AGE_USEC at least. */
static HttpConnection* http_oldest_head(HttpServer *h, HttpAddress *a, HttpConnection *except) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        /* Oldest first: the first match decides. */
        LIST_FOREACH(heads, c, h->heads)
                if (c != except && (!a || c->address == a))
                        return head_evictable_usec(c) <= now ? c : NULL;
        return NULL;
}

static int on_head_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpServer *h = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        HttpConnection *victim;

        while (h->heads && h->heads->head_deadline_usec <= now)
                http_connection_close(h, h->heads, &h->stats.n_head_timeout, RAW_408);
        while (http_over_headroom(h) && (victim = http_oldest_head(h, NULL, NULL)))
                http_connection_close(h, victim, &h->stats.n_evicted, RAW_408);
        http_arm_head_timer(h);
        return 0;
}

static void http_connection_started(HttpServer *h, struct MHD_Connection *connection, void **socket_context) {
        const union MHD_ConnectionInfo *info;
        HttpConnection *c, *victim;
        HttpAddress *a;
        char address[INET6_ADDRSTRLEN];

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!info)
                return;         /* untracked: MHD's own limits still apply */
        c = new0(HttpConnection, 1);
        if (!c) {
                log_oom();
                return;
        }
        *c = (HttpConnection) {
                .server = h,
                .fd = info->connect_fd,
                .head_deadline_usec = now_usec(CLOCK_MONOTONIC) + limits.WEBHOOK_HEAD_TIMEOUT_S * USEC_PER_SEC,
        };

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!info || sockaddr_to_string(info->client_addr, address, sizeof(address)) < 0)
                strcpy(address, "unknown");
        HASH_FIND_STR(h->addresses, address, a);
        if (!a) {
                a = malloc(offsetof(HttpAddress, address) + strlen(address) + 1);
                if (!a) {
                        free(c);
                        log_oom();
                        return;
                }
                *a = (HttpAddress) {};
                strcpy(a->address, address);
                HASH_ADD_STR(h->addresses, address, a);
        }
        a->n_connections++;
        c->address = a;
        h->stats.n_connections++;
        heads_append(h, c);
        *socket_context = c;

        /* One address's share: its oldest unfinished head makes room; with none (or none pending for a second),
         * the newcomer is refused. So a flood of trickling connections from one address only ever holds its
         * share, and a monitor polling /healthz from the same address (loopback: a reverse proxy, the local host)
         * still gets in. */
        if (a->n_connections > limits.WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS) {
                victim = http_oldest_head(h, a, c);
                if (victim) {
                        log_debug("HTTP: %s has %u connections, closing its oldest unfinished one.", address,
                                  a->n_connections);
                        http_connection_close(h, victim, &h->stats.n_evicted, RAW_408);
                } else {
                        log_debug("HTTP: refusing a connection from %s, which has %" PRIu64 " already.",
                                  address, limits.WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS);
                        http_connection_close(h, c, &h->stats.n_too_many_connections, RAW_503);
                }
        }

        /* Headroom in the whole table, whoever the newcomer is: it must not find the table full of heads that
         * may never complete. */
        if (!c->closing && http_over_headroom(h)) {
                victim = http_oldest_head(h, NULL, c);
                if (victim)
                        http_connection_close(h, victim, &h->stats.n_evicted, RAW_408);
        }

        http_arm_head_timer(h);
}

static void on_connection_notify(void *cls, struct MHD_Connection *connection, void **socket_context,
                                 enum MHD_ConnectionNotificationCode toe) {
        HttpServer *h = cls;
        HttpConnection *c = *socket_context;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                http_connection_started(h, connection, socket_context);
                return;
        }
        if (toe != MHD_CONNECTION_NOTIFY_CLOSED)
                return;
        h->connection_closed = true;
        if (!c)
                return;
        heads_remove(h, c);
        http_connection_uncount(h, c);
        free(c);
        *socket_context = NULL;
        http_arm_head_timer(h);
}

static HttpConnection* http_connection_of(struct MHD_Connection *connection) {
        const union MHD_ConnectionInfo *info;

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return info ? info->socket_context : NULL;
}

/* --- responses --- */

static const char* header_of(struct MHD_Connection *connection, const char *name) {
        return MHD_lookup_connection_value(connection, MHD_HEADER_KIND, name);
}

/* The Origin header if PHOTOND_HTTP_CORS_ORIGINS allows it, else NULL. */
static const char* cors_allowed_origin(HttpServer *h, struct MHD_Connection *connection) {
        const char *origin = header_of(connection, "Origin");

        if (!origin)
                return NULL;
        for (char **o = h->cors_origins; o && *o; o++)
                if (streq(*o, "*") || strcasecmp(*o, origin) == 0)
                        return origin;
        return NULL;
}

static int response_add_cors(HttpServer *h, struct MHD_Response *response, struct MHD_Connection *connection,
                             HttpCors cors) {
        const char *origin;

        switch (cors) {
        case HTTP_CORS_ALLOWLIST:
                origin = cors_allowed_origin(h, connection);
                if ((origin && MHD_add_response_header(response, "Access-Control-Allow-Origin", origin) == MHD_NO) ||
                    MHD_add_response_header(response, "Vary", "Origin") == MHD_NO)
                        return -ENOMEM;
                return 0;
        case HTTP_CORS_LOOPBACK:
                /* The reference's CORS headers, on every response. */
                origin = webhook_cors_origin(header_of(connection, "Origin"));
                if ((origin && MHD_add_response_header(response, "Access-Control-Allow-Origin", origin) == MHD_NO) ||
                    MHD_add_response_header(response, "Access-Control-Allow-Methods", CORS_ALLOW_METHODS) == MHD_NO ||
                    MHD_add_response_header(response, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS) == MHD_NO)
                        return -ENOMEM;
                return 0;
        default:
                assert(false);
                return -EINVAL;
        }
}

/* Queues an answer with the bytes at data (copied, or taken over and freed with free(): mode), of content_type
 * (NULL: none). */
static enum MHD_Result respond_buffer(HttpServer *h, struct MHD_Connection *connection, HttpCors cors,
                                      unsigned status, const char *content_type, void *data, size_t len,
                                      enum MHD_ResponseMemoryMode mode, const char *retry_after) {
        struct MHD_Response *response;
        enum MHD_Result ret;

        response = MHD_create_response_from_buffer(len, data, mode);
        if (!response) {
                if (mode == MHD_RESPMEM_MUST_FREE)
                        free(data);
                return MHD_NO;
        }

        if (response_add_cors(h, response, connection, cors) < 0 ||
            (content_type &&
             MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) == MHD_NO) ||
            (retry_after && MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, retry_after) == MHD_NO)) {
                MHD_destroy_response(response);
                return MHD_NO;
        }

        ret = MHD_queue_response(connection, status, response);
        MHD_destroy_response(response);
        return ret;
}

static enum MHD_Result respond_connection(HttpServer *h, struct MHD_Connection *connection, HttpCors cors,
                                          unsigned status, struct json_object *body, const char *retry_after) {
        const char *s = "";
        size_t len = 0;

        if (body) {
                s = json_object_to_json_string_length(body, JSON_FORMAT_FLAGS, &len);
                if (!s)
                        return MHD_NO;
        }
        return respond_buffer(h, connection, cors, status, body ? "application/json" : NULL, (void*) s, len,
                              MHD_RESPMEM_MUST_COPY, retry_after);
}

static enum MHD_Result respond_connection_error(HttpServer *h, struct MHD_Connection *connection, HttpCors cors,
                                                unsigned status, const char *error, const char *retry_after) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o || json_add_string(o, "error", error) < 0)
                return MHD_NO;
        return respond_connection(h, connection, cors, status, o, retry_after);
}

static HttpCors http_request_cors(HttpRequest *req) {
        return req->entry ? req->entry->route.cors : HTTP_CORS_LOOPBACK;
}

int http_respond(HttpRequest *req, unsigned status, struct json_object *body, const char *retry_after) {
        assert(req);

        if (respond_connection(req->server, req->connection, http_request_cors(req), status, body, retry_after) ==
            MHD_NO)
                return -EIO;
        req->answered = true;
        req->answered_status = status;
        return 0;
}

int http_respond_text(HttpRequest *req, unsigned status, const char *content_type, char *body, size_t len) {
        assert(req);
        assert(content_type);
        assert(body);

        if (respond_buffer(req->server, req->connection, http_request_cors(req), status, content_type, body, len,
                           MHD_RESPMEM_MUST_FREE, NULL) == MHD_NO)
                return -EIO;
        req->answered = true;
        req->answered_status = status;
        return 0;
}

unsigned http_request_status(HttpRequest *req) {
        assert(req);
        return req->answered_status;
}

int http_respond_error(HttpRequest *req, unsigned status, const char *error, const char *retry_after) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o || json_add_string(o, "error", error) < 0)
                return -ENOMEM;
        return http_respond(req, status, o, retry_after);
}

int http_respond_static(HttpRequest *req, unsigned status, const char *content_type, const void *data, size_t size,
                        const HttpHeader *headers, size_t n_headers) {
        struct MHD_Response *response;
        enum MHD_Result ret;

        assert(req);
        assert(content_type);
        assert(data || size == 0);

        response = MHD_create_response_from_buffer(size, (void*) (data ?: ""), MHD_RESPMEM_PERSISTENT);
        if (!response)
                return -ENOMEM;
        if (response_add_cors(req->server, response, req->connection, http_request_cors(req)) < 0 ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) == MHD_NO)
                goto fail;
        for (size_t i = 0; i < n_headers; i++)
                if (MHD_add_response_header(response, headers[i].name, headers[i].value) == MHD_NO)
                        goto fail;
        ret = MHD_queue_response(req->connection, status, response);
        MHD_destroy_response(response);
        if (ret == MHD_NO)
                return -EIO;
        req->answered = true;
        req->answered_status = status;
        return 0;
fail:
        MHD_destroy_response(response);
        return -ENOMEM;
}

/* Refuses a request whose body is still arriving, at once. libmicrohttpd 0.9.75 cannot do that: its
 * MHD_queue_response() fails until the whole body has been read (which for a chunked body may be never), and
 * failing the request only resets the connection. So the answer is written to the socket here, in the form
 * http_respond() gives it, and the write side is shut: by now MHD has sent nothing for this request but, at
 * most, a complete "100 Continue", and the connection is never used for another request. The caller drops the
 * rest of the body for a moment (see EARLY_ANSWER_LINGER_USEC) and then ends the connection. */
static void http_answer_early(HttpRequest *req, HttpRefusal why, unsigned status, const char *error,
                              const char *retry_after) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        _cleanup_free_ char *head = NULL, *cors = NULL;
        const union MHD_ConnectionInfo *info;
        const char *body = NULL, *origin;
        size_t body_len = 0;
        int fd;

        if (req->entry->route.refused)
                req->entry->route.refused(req, why, req->entry->route.userdata);
        req->answered_early = true;
        req->answered_status = status;
        req->linger_until_usec = now_usec(CLOCK_MONOTONIC) + EARLY_ANSWER_LINGER_USEC;
        http_request_release_body(req);

        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!info)
                return;
        fd = info->connect_fd;

        if (o && json_add_string(o, "error", error) >= 0)
                body = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &body_len);
        /* The headers response_add_cors() gives. */
        if (http_request_cors(req) == HTTP_CORS_LOOPBACK) {
                origin = webhook_cors_origin(header_of(req->connection, "Origin"));
                if (asprintf(&cors, "%s%s%s"
                             "Access-Control-Allow-Methods: " CORS_ALLOW_METHODS "\r\n"
                             "Access-Control-Allow-Headers: " CORS_ALLOW_HEADERS "\r\n",
                             origin ? "Access-Control-Allow-Origin: " : "", origin ?: "", origin ? "\r\n" : "") < 0)
                        cors = NULL;
        } else {
                origin = cors_allowed_origin(req->server, req->connection);
                if (asprintf(&cors, "%s%s%sVary: Origin\r\n",
                             origin ? "Access-Control-Allow-Origin: " : "", origin ?: "", origin ? "\r\n" : "") < 0)
                        cors = NULL;
        }
        if (body && cors &&
            asprintf(&head,
                     "HTTP/1.1 %u %s\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "%s%s%s"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "\r\n",
                     status, MHD_get_reason_phrase_for(status), cors,
                     retry_after ? "Retry-After: " : "", retry_after ?: "", retry_after ? "\r\n" : "",
                     body_len) >= 0) {
                /* A few hundred bytes into an idle send buffer; anything short of all of them is only a close. */
                struct iovec iov[2] = { { head, strlen(head) }, { (void*) body, body_len } };
                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };

                (void) sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        (void) shutdown(fd, SHUT_WR);
}

/* --- answers that come later --- */

/* In external-epoll mode nothing wakes MHD for a resume: it runs on the next loop iteration (never from inside an
 * MHD callback), from a defer source rather than the timer, whose millisecond of slack a stream of requests
 * would pass many times over. */
static void http_run_soon(HttpServer *h) {
        h->resumed = true;
        (void) sd_event_source_set_enabled(h->run_source, SD_EVENT_ONESHOT);
}

void http_request_finish(HttpRequest *req, unsigned status, struct json_object *answer) {
        assert(req);

        req->waiting = false;
        req->status = status;
        req->answer = answer;
        if (!answer)
                req->closing = true;
        req->hup_event_source = sd_event_source_disable_unref(req->hup_event_source);
        if (req->suspended) {
                req->suspended = false;
                MHD_resume_connection(req->connection);
                http_run_soon(req->server);
        }
}

void http_request_finish_stream(HttpRequest *req, unsigned status, const char *content_type, HttpStreamRead read,
                                void *userdata) {
        bool closing;

        assert(req);
        assert(status > 0);
        assert(content_type);
        assert(read);

        /* http_request_finish() without an answer marks the request closing; a stream is an answer. */
        closing = req->closing;
        /* Queued by the access handler once resumed: only it may queue a response. */
        req->stream_content_type = content_type;
        req->stream_read = read;
        req->stream_userdata = userdata;
        http_request_finish(req, status, NULL);
        req->closing = closing;
}

static int on_client_hup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpRequest *req = userdata;

        /* The client closed its side while the request waits: nobody will read the answer. A half-close cannot be
         * told apart from a close without writing, and HTTP clients do not half-close, so it counts as gone. */
        if (req->entry->route.gone)
                req->entry->route.gone(req, req->entry->route.userdata);
        if (req->stream_read) {
                req->closing = true;
                http_stream_wake(req);
        } else
                http_request_finish(req, 0, NULL);
        return 0;
}

void http_request_suspend(HttpRequest *req) {
        const union MHD_ConnectionInfo *info;
        int r;

        assert(req);
        assert(!req->suspended);

        /* Watch for the client leaving while the connection is suspended (MHD does not look at it then). */
        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info) {
                r = sd_event_add_io(req->server->event, &req->hup_event_source, info->connect_fd, EPOLLRDHUP,
                                    on_client_hup, req);
                if (r < 0)
                        log_debug_errno(r, "Cannot watch the HTTP client for hang-ups, continuing: %m");
                else
                        (void) sd_event_source_set_description(req->hup_event_source, "http-client-hup");
        }

        req->suspended = req->waiting = true;
        MHD_suspend_connection(req->connection);
}

/* --- output after the loop iteration's writes --- */

void http_server_release(HttpServer *h, HttpRelease *r) {
        assert(h);
        assert(r);
        assert(r->cb);

        if (r->pending)
                return;
        r->pending = true;
        LIST_PREPEND(releases, h->releases, r);
        if (!h->releases_tail)
                h->releases_tail = r;
        h->n_releases++;
        (void) sd_event_source_set_enabled(h->release_source, SD_EVENT_ONESHOT);
}

void http_server_release_cancel(HttpServer *h, HttpRelease *r) {
        if (!r->pending)
                return;
        if (h->releases_tail == r)
                h->releases_tail = r->releases_prev;
        LIST_REMOVE(releases, h->releases, r);
        r->pending = false;
        h->n_releases--;
}

static void http_release_now(HttpServer *h) {
        size_t n;

        if (h->output_held && h->output_held(h->userdata)) {
                /* A write failed (or is still due): the Manager retries it each second; so do we. */
                (void) sd_event_source_set_time_relative(h->release_retry_source, USEC_PER_SEC);
                (void) sd_event_source_set_enabled(h->release_retry_source, SD_EVENT_ONESHOT);
                return;
        }

        /* Oldest first, and only what was queued before: a callback may queue again. */
        for (n = h->n_releases; n > 0 && h->releases_tail; n--) {
                HttpRelease *r = h->releases_tail;

                http_server_release_cancel(h, r);
                r->cb(r);
        }
        (void) sd_event_source_set_enabled(h->release_source, h->releases ? SD_EVENT_ONESHOT : SD_EVENT_OFF);
}

static int on_release(sd_event_source *s, void *userdata) {
        http_release_now(userdata);
        return 0;
}

void http_server_flushed(HttpServer *h) {
        if (h && h->releases)
                http_release_now(h);
}

static int on_release_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpServer *h = userdata;

        if (h->releases)
                (void) sd_event_source_set_enabled(h->release_source, SD_EVENT_ONESHOT);
        return 0;
}

static void on_request_release(HttpRelease *r) {
        HttpRequest *req = (HttpRequest*) ((uint8_t*) r - offsetof(HttpRequest, release));

        if (req->closing || !req->waiting)
                return;         /* the client left meanwhile */
        http_request_finish(req, req->saved_status, TAKE_PTR(req->saved_answer));
}

int http_respond_saved(HttpRequest *req, unsigned status, struct json_object *answer) {
        HttpServer *h = req->server;
        int r;

        if (!answer)
                return -ENOMEM;
        /* Nothing waits for a write (the common case): the answer goes now. */
        if (!h->output_held || !h->output_held(h->userdata)) {
                r = http_respond(req, status, answer, NULL);
                json_object_put(answer);
                return r;
        }

        req->saved_status = status;
        req->saved_answer = answer;
        req->release.cb = on_request_release;
        http_request_suspend(req);
        http_server_release(h, &req->release);
        return 0;
}

/* --- streams --- */

static void http_stream_set_aside(HttpRequest *req) {
        const union MHD_ConnectionInfo *info;
        int r;

        /* Watch for the client leaving meanwhile (MHD does not look at a suspended connection). */
        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info && !req->hup_event_source) {
                r = sd_event_add_io(req->server->event, &req->hup_event_source, info->connect_fd, EPOLLRDHUP,
                                    on_client_hup, req);
                if (r < 0)
                        log_debug_errno(r, "Cannot watch the HTTP stream for hang-ups, continuing: %m");
                else
                        (void) sd_event_source_set_description(req->hup_event_source, "http-stream-hup");
        }
        req->stream_suspended = true;
        MHD_suspend_connection(req->connection);
}

void http_stream_wake(HttpRequest *req) {
        assert(req);

        if (!req->stream_suspended)
                return;
        req->stream_suspended = false;
        req->hup_event_source = sd_event_source_disable_unref(req->hup_event_source);
        MHD_resume_connection(req->connection);
        http_run_soon(req->server);
}

void http_request_abort(HttpRequest *req) {
        const union MHD_ConnectionInfo *info;

        assert(req);

        if (req->closing)
                return;
        req->closing = true;
        /* shutdown(), not close(): MHD owns the fd, and sees the peer gone when it next looks. */
        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info)
                (void) shutdown(info->connect_fd, SHUT_RDWR);
        http_stream_wake(req);
}

static ssize_t on_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
        HttpRequest *req = cls;
        ssize_t n;

        if (req->closing)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        n = req->stream_read(req, buf, max, req->stream_userdata);
        if (n < 0)
                return MHD_CONTENT_READER_END_OF_STREAM;
        if (n == 0)
                /* Allowed from here (and from the access handler only); MHD calls again once resumed. */
                http_stream_set_aside(req);
        return n;
}

int http_respond_stream(HttpRequest *req, unsigned status, const char *content_type, HttpStreamRead read,
                        void *userdata) {
        struct MHD_Response *response;
        enum MHD_Result ret;

        assert(req);
        assert(read);

        req->stream_read = read;
        req->stream_userdata = userdata;
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, on_stream_read, req, NULL);
        if (!response)
                return -ENOMEM;
        if (response_add_cors(req->server, response, req->connection, http_request_cors(req)) < 0 ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) == MHD_NO ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_NO ||
            MHD_add_response_header(response, "X-Accel-Buffering", "no") == MHD_NO) {
                MHD_destroy_response(response);
                return -ENOMEM;
        }
        ret = MHD_queue_response(req->connection, status, response);
        MHD_destroy_response(response);
        if (ret == MHD_NO)
                return -EIO;
        req->answered = true;
        req->answered_status = status;
        return 0;
}

/* --- the body's framing --- */

typedef struct Framing {
        unsigned n_content_length;
        bool content_length_differs;
        uint64_t content_length;
        char *transfer_encoding;        /* every Transfer-Encoding header, joined with ", " */
        bool oom;
} Framing;

static enum MHD_Result framing_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        Framing *f = cls;

        if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
                uint64_t v;

                /* Repeats of one value may be read as that value (RFC 9110 §8.6); anything else may not. */
                if (!value || safe_atou64(value, &v) < 0 || (f->n_content_length > 0 && v != f->content_length))
                        f->content_length_differs = true;
                else
                        f->content_length = v;
                f->n_content_length++;
        } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
                char *t = NULL;

                if (asprintf(&t, "%s%s%s", f->transfer_encoding ?: "", f->transfer_encoding ? ", " : "",
                             value ?: "") < 0) {
                        f->oom = true;
                        return MHD_NO;
                }
                free(f->transfer_encoding);
                f->transfer_encoding = t;
        }
        return MHD_YES;
}

/* The request smuggling rules of RFC 9112 §6.1 and §6.3, which libmicrohttpd 0.9.75 does not enforce: it reads the
 * first of several Content-Length headers and lets "chunked" silently win over a Content-Length, while a proxy in
 * front of photond may have framed the same bytes differently. Sets *ret_status to 0 when the body's length is
 * unambiguous, else to the status to answer (the connection is then closed, its remaining bytes never parsed) and
 * *ret_error to the error text. Returns 0 or -ENOMEM. */
static int http_check_framing(struct MHD_Connection *connection, unsigned *ret_status, const char **ret_error) {
        _cleanup_free_ char *te = NULL;
        const char *last = NULL;
        unsigned n_chunked = 0;
        bool others = false;
        Framing f = {};

        (void) MHD_get_connection_values(connection, MHD_HEADER_KIND, framing_cb, &f);
        te = f.transfer_encoding;
        if (f.oom)
                return -ENOMEM;

        *ret_status = MHD_HTTP_BAD_REQUEST;
        if (f.content_length_differs) {
                *ret_error = "Bad request: invalid or conflicting Content-Length headers";
                return 0;
        }
        if (!te) {
                *ret_status = 0;
                return 0;
        }
        if (f.n_content_length > 0) {
                *ret_error = "Bad request: both Transfer-Encoding and Content-Length";
                return 0;
        }

        /* The codings in order: the last must be chunked, and chunked must come only once. */
        for (char *p = te, *tok; (tok = strsep(&p, ","));) {
                tok += strspn(tok, " \t");
                tok[strcspn(tok, " \t;")] = '\0';
                if (!tok[0])
                        continue;
                if (last)
                        others = true;
                last = tok;
                n_chunked += strcasecmp(tok, "chunked") == 0;
        }
        if (!last || strcasecmp(last, "chunked") != 0 || n_chunked > 1) {
                *ret_error = "Bad request: Transfer-Encoding must end with chunked, applied once";
                return 0;
        }
        if (others) {
                *ret_status = MHD_HTTP_NOT_IMPLEMENTED;
                *ret_error = "Transfer-Encoding not supported: only chunked";
                return 0;
        }
        *ret_status = 0;
        return 0;
}

/* --- request handling --- */

static enum MHD_Result result_of(int r) {
        return r < 0 ? MHD_NO : MHD_YES;
}

/* After the route's begin(): the declared body against the caps, then room for it. */
static enum MHD_Result http_accept_body(HttpRequest *req) {
        HttpServer *h = req->server;
        const HttpRoute *route = &req->entry->route;
        const char *cl;
        uint64_t length = 0;

        /* A declared body over the cap is refused before a byte of it is read (MHD then skips the body). */
        cl = header_of(req->connection, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && (safe_atou64(cl, &length) < 0 || length > req->max_body)) {
                if (route->refused)
                        route->refused(req, HTTP_REFUSAL_TOO_LARGE, route->userdata);
                return result_of(http_respond_error(req, MHD_HTTP_CONTENT_TOO_LARGE, ERROR_TOO_LARGE, NULL));
        }
        if (h->buffered_bytes + length > limits.WEBHOOK_MAX_BUFFERED_BYTES) {
                if (route->refused)
                        route->refused(req, HTTP_REFUSAL_BUSY, route->userdata);
                return result_of(http_respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, ERROR_BODIES_IN_FLIGHT,
                                                    "1"));
        }

        req->body_deadline_usec = now_usec(CLOCK_MONOTONIC) + limits.WEBHOOK_REQUEST_TIMEOUT_S * USEC_PER_SEC;
        if (length > 0) {
                /* Reserved up front from the declared length; chunked bodies grow below. */
                req->body = malloc(length);
                if (!req->body)
                        return MHD_NO;
                req->body_alloc = length;
                h->buffered_bytes += length;
        }
        return MHD_YES;
}

/* OPTIONS, the CORS preflight, answered before the allowlist (as the reference does) and without a token (a
 * browser sends none with it). A path of routes with the allowlist's CORS gets their methods, and the origin if
 * PHOTOND_HTTP_CORS_ORIGINS allows it; any other the reference's headers. */
static enum MHD_Result http_preflight(HttpServer *h, struct MHD_Connection *connection, const char *path) {
        struct MHD_Response *response;
        char methods[256] = "";
        const char *origin;
        bool api = false;
        enum MHD_Result ret;

        for (size_t i = 0; i < h->n_routes; i++) {
                const HttpRoute *route = &h->routes[i]->route;
                bool match;

                if (h->routes[i]->fallback || route->cors != HTTP_CORS_ALLOWLIST ||
                    route_match(route->pattern, path, NULL, &match) < 0 || !match)
                        continue;
                api = true;
                if (route->method && !strstr(methods, route->method) &&
                    strlen(methods) + strlen(route->method) + 2 < sizeof(methods) - strlen(", OPTIONS"))
                        strcat(strcat(methods, route->method), ", ");
        }
        if (!api)
                return respond_connection(h, connection, HTTP_CORS_LOOPBACK, MHD_HTTP_NO_CONTENT, NULL, NULL);
        strcat(methods, "OPTIONS");

        response = MHD_create_response_from_buffer(0, (void*) "", MHD_RESPMEM_PERSISTENT);
        if (!response)
                return MHD_NO;
        origin = cors_allowed_origin(h, connection);
        if (MHD_add_response_header(response, "Vary", "Origin") == MHD_NO ||
            (origin &&
             (MHD_add_response_header(response, "Access-Control-Allow-Origin", origin) == MHD_NO ||
              MHD_add_response_header(response, "Access-Control-Allow-Methods", methods) == MHD_NO ||
              MHD_add_response_header(response, "Access-Control-Allow-Headers", CORS_API_ALLOW_HEADERS) == MHD_NO ||
              MHD_add_response_header(response, "Access-Control-Max-Age", CORS_API_MAX_AGE) == MHD_NO))) {
                MHD_destroy_response(response);
                return MHD_NO;
        }
        ret = MHD_queue_response(connection, MHD_HTTP_NO_CONTENT, response);
        MHD_destroy_response(response);
        return ret;
}

static int token_digest(const void *token, size_t len, uint8_t ret[static TOKEN_DIGEST_SIZE]) {
        unsigned n = 0;

        if (EVP_Digest(token, len, ret, &n, EVP_sha256(), NULL) != 1 || n != TOKEN_DIGEST_SIZE)
                return -EIO;
        return 0;
}

/* A stream token's MAC over its expiry, as hex into ret. */
static int stream_token_mac(HttpServer *h, uint64_t expiry_ms, char ret[static 2 * TOKEN_DIGEST_SIZE + 1]) {
        uint8_t mac[TOKEN_DIGEST_SIZE];
        unsigned n = 0;
        char msg[64];
        int len;

        len = snprintf(msg, sizeof(msg), STREAM_TOKEN_CONTEXT "%" PRIu64, expiry_ms);
        if (!HMAC(EVP_sha256(), h->stream_key, sizeof(h->stream_key), (const unsigned char*) msg, (size_t) len, mac,
                  &n) || n != TOKEN_DIGEST_SIZE)
                return -EIO;
        hex_encode(mac, sizeof(mac), ret);
        return 0;
}

int http_server_stream_token(HttpServer *h, char ret[static HTTP_STREAM_TOKEN_MAX], int64_t *ret_expires_ms) {
        uint64_t lifetime_ms = limits.SSE_TOKEN_LIFETIME_S * 1000, expiry;
        char mac[2 * TOKEN_DIGEST_SIZE + 1];
        int r;

        assert(h);
        assert(ret_expires_ms);

        /* CLOCK_BOOTTIME: setting the wall clock back does not lengthen a token's life, and time asleep counts. */
        expiry = now_usec(CLOCK_BOOTTIME) / USEC_PER_MSEC + lifetime_ms;
        r = stream_token_mac(h, expiry, mac);
        if (r < 0)
                return r;
        snprintf(ret, HTTP_STREAM_TOKEN_MAX, "%" PRIu64 ".%s", expiry, mac);
        *ret_expires_ms = now_ms() + (int64_t) lifetime_ms;
        return 0;
}

/* 0 for a stream token of ours that has not expired, -EKEYEXPIRED for one that has, -EINVAL for anything else. */
static int stream_token_check(HttpServer *h, const char *token) {
        const char *dot = strchr(token, '.');
        char digits[21], expected[2 * TOKEN_DIGEST_SIZE + 1];
        uint64_t expiry;
        size_t n;
        int r;

        /* The expiry in its one decimal form (no sign, no leading zero), then the MAC: one string per token. */
        n = dot ? (size_t) (dot - token) : 0;
        if (n == 0 || n >= sizeof(digits) || token[0] == '0' || strspn(token, "0123456789") != n ||
            strlen(dot + 1) != 2 * TOKEN_DIGEST_SIZE)
                return -EINVAL;
        memcpy(digits, token, n);
        digits[n] = '\0';
        if (safe_atou64(digits, &expiry) < 0)
                return -EINVAL;

        r = stream_token_mac(h, expiry, expected);
        if (r < 0)
                return r;
        if (!memeq_consttime(dot + 1, 2 * TOKEN_DIGEST_SIZE, expected, 2 * TOKEN_DIGEST_SIZE))
                return -EINVAL;
        /* Only now: whether a token that is not ours has expired is nobody's business. */
        if (expiry <= now_usec(CLOCK_BOOTTIME) / USEC_PER_MSEC)
                return -EKEYEXPIRED;
        return 0;
}

/* 401 with error and the Bearer challenge. */
static int http_refuse_token(HttpRequest *req, const char *error) {
        HttpServer *h = req->server;
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        struct MHD_Response *response;
        const char *s;
        size_t len;
        enum MHD_Result ret;

        h->stats.n_unauthorized++;
        if (!o || json_add_string(o, "error", error) < 0 ||
            !(s = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &len)))
                return -ENOMEM;
        response = MHD_create_response_from_buffer(len, (void*) s, MHD_RESPMEM_MUST_COPY);
        if (!response)
                return -ENOMEM;
        if (response_add_cors(h, response, req->connection, http_request_cors(req)) < 0 ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") == MHD_NO ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"photond\"") ==
            MHD_NO) {
                MHD_destroy_response(response);
                return -ENOMEM;
        }
        ret = MHD_queue_response(req->connection, MHD_HTTP_UNAUTHORIZED, response);
        MHD_destroy_response(response);
        if (ret == MHD_NO)
                return -EIO;
        req->answered = true;
        req->answered_status = MHD_HTTP_UNAUTHORIZED;
        return 0;
}

/* A route that needs the API token: answers 403 while none is configured, 401 unless the request carries it (or,
 * for HTTP_AUTH_TOKEN_OR_STREAM and without an Authorization header, a valid stream token in ?token=). */
static int http_check_token(HttpRequest *req, HttpAuth auth) {
        HttpServer *h = req->server;
        uint8_t digest[TOKEN_DIGEST_SIZE];
        const char *v, *token;
        int r;

        if (!h->token_set) {
                h->stats.n_token_not_configured++;
                return http_respond_error(req, MHD_HTTP_FORBIDDEN, ERROR_TOKEN_NOT_CONFIGURED, NULL);
        }

        v = http_request_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
        if (v && strncasecmp(v, "Bearer ", 7) == 0) {
                token = v + 7 + strspn(v + 7, " ");
                r = token_digest(token, strlen(token), digest);
                if (r < 0)
                        return r;
                if (memeq_consttime(digest, sizeof(digest), h->token_digest, sizeof(h->token_digest)))
                        return 0;
        }
        if (v)
                return http_refuse_token(req, ERROR_UNAUTHORIZED);

        /* Looked at only without a header, so a request with a good one is never refused for its query. */
        token = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "token");
        if (!token)
                return http_refuse_token(req, ERROR_UNAUTHORIZED);
        if (auth != HTTP_AUTH_TOKEN_OR_STREAM)
                return http_refuse_token(req, ERROR_STREAM_TOKEN_ELSEWHERE);
        r = stream_token_check(h, token);
        if (r == -EKEYEXPIRED)
                return http_refuse_token(req, ERROR_STREAM_TOKEN_EXPIRED);
        if (r == -EINVAL)
                return http_refuse_token(req, ERROR_STREAM_TOKEN_INVALID);
        return r;
}

/* First call for a request: only its head is known. Either answers at once or sets up *con_cls. */
static enum MHD_Result http_begin(HttpServer *h, struct MHD_Connection *connection, const char *url,
                                  const char *http_method, void **con_cls) {
        const union MHD_ConnectionInfo *info;
        const struct sockaddr *peer;
        const HttpRouteEntry *entry;
        HttpRequest *req;
        const char *error;
        unsigned status;
        int r;

        h->stats.n_requests++;

        /* Before anything else, OPTIONS included: where this request ends decides where the next one starts. MHD
         * closes the connection after an answer given before the body was read. */
        r = http_check_framing(connection, &status, &error);
        if (r < 0)
                return MHD_NO;
        if (status > 0) {
                h->stats.n_bad_framing++;
                return respond_connection_error(h, connection, HTTP_CORS_LOOPBACK, status, error, NULL);
        }

        if (streq(http_method, MHD_HTTP_METHOD_OPTIONS))
                return http_preflight(h, connection, url);

        req = new0(HttpRequest, 1);
        if (!req)
                return MHD_NO;
        *req = (HttpRequest) {
                .server = h,
                .connection = connection,
                .method = http_method,
                .path = url,
                .max_body = limits.WEBHOOK_MAX_BODY_BYTES,
        };
        LIST_PREPEND(requests, h->requests, req);
        /* From here on on_completed() frees it, whatever happens. */
        *con_cls = req;

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        peer = info ? info->client_addr : NULL;
        if (!peer || sockaddr_to_string(peer, req->address, sizeof(req->address)) < 0)
                strcpy(req->address, "unknown");

        if (h->n_allowed > 0 && !cidr_list_match(h->allowed, h->n_allowed, peer)) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

                h->stats.n_source_not_allowed++;
                if (!o ||
                    json_add_string(o, "error", "Source IP not in webhook allowlist") < 0 ||
                    json_add_string(o, "sourceIp", req->address) < 0)
                        return MHD_NO;
                return result_of(http_respond(req, MHD_HTTP_FORBIDDEN, o, NULL));
        }

        r = route_find(h, http_method, url, req, &entry);
        if (r < 0)
                return MHD_NO;
        if (!entry)
                return result_of(http_respond_error(req, MHD_HTTP_NOT_FOUND, "Not found", NULL));
        req->entry = entry;
        if (entry->route.max_body > 0)
                req->max_body = entry->route.max_body;

        if (entry->route.auth != HTTP_AUTH_NONE) {
                r = http_check_token(req, entry->route.auth);
                if (r < 0)
                        return MHD_NO;
                if (req->answered)
                        return MHD_YES;
        }

        if (entry->route.begin) {
                r = entry->route.begin(req, entry->route.userdata);
                if (r < 0)
                        return MHD_NO;
                if (req->answered)
                        return MHD_YES;
        }

        return http_accept_body(req);
}

/* A piece of the body arrived. Refuses the request at once when the body grows past the cap or beyond what all
 * connections may hold, or when it is still arriving at its deadline (a sender dripping bytes would otherwise keep
 * the connection for as long as it likes: MHD's timeout only counts idle time). */
static void http_receive(HttpRequest *req, const char *data, size_t size) {
        HttpServer *h = req->server;

        if (now_usec(CLOCK_MONOTONIC) >= req->body_deadline_usec)
                return http_answer_early(req, HTTP_REFUSAL_TIMEOUT, MHD_HTTP_REQUEST_TIMEOUT,
                                         "Request body not received in time", NULL);
        if (size > req->max_body - req->body_len)
                return http_answer_early(req, HTTP_REFUSAL_TOO_LARGE, MHD_HTTP_CONTENT_TOO_LARGE, ERROR_TOO_LARGE,
                                         NULL);
        if (req->body_len + size > req->body_alloc) {
                size_t n = MAX(req->body_alloc * 2, req->body_len + size);
                char *p;

                n = MIN(MAX(n, (size_t) 4096), (size_t) req->max_body);
                if (h->buffered_bytes - req->body_alloc + n > limits.WEBHOOK_MAX_BUFFERED_BYTES ||
                    !(p = realloc(req->body, n)))
                        return http_answer_early(req, HTTP_REFUSAL_BUSY, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                 ERROR_BODIES_IN_FLIGHT, "1");
                h->buffered_bytes += n - req->body_alloc;
                req->body = p;
                req->body_alloc = n;
        }
        memcpy(req->body + req->body_len, data, size);
        req->body_len += size;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *http_method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
        HttpServer *h = cls;
        HttpRequest *req = *con_cls;
        enum MHD_Result ret;
        int r;

        if (!req) {
                HttpConnection *c = http_connection_of(connection);

                if (c) {
                        /* Closed for its slow head while the rest of it was already buffered: not served. */
                        if (c->closing)
                                return MHD_NO;
                        heads_remove(h, c);
                        http_arm_head_timer(h);
                }
                return http_begin(h, connection, url, http_method, con_cls);
        }

        if (req->answered_early) {
                /* Answered on the socket already: drop what still comes for a moment, then end the connection.
                 * MHD_NO is also the only way to finish the request without MHD sending an answer of its own. */
                bool more = *upload_data_size > 0;

                *upload_data_size = 0;
                return more && now_usec(CLOCK_MONOTONIC) < req->linger_until_usec ? MHD_YES : MHD_NO;
        }
        if (*upload_data_size > 0) {
                http_receive(req, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return MHD_YES;
        }

        /* Resumed: the answer came, or the client left. */
        if (req->closing)
                return MHD_NO;
        if (req->status > 0 && req->stream_content_type) {
                r = http_respond_stream(req, req->status, req->stream_content_type, req->stream_read,
                                        req->stream_userdata);
                req->stream_content_type = NULL;
                return r < 0 ? MHD_NO : MHD_YES;
        }
        if (req->status > 0) {
                ret = respond_connection(h, connection, http_request_cors(req), req->status, req->answer, NULL);
                json_object_putp(&req->answer);
                req->answered = ret == MHD_YES;
                if (req->answered)
                        req->answered_status = req->status;
                return ret;
        }
        if (req->waiting)
                return MHD_YES;
        if (req->completed)
                /* Neither answered nor waiting: nothing will come. */
                return MHD_NO;

        req->completed = true;
        r = req->entry->route.complete(req, req->entry->route.userdata);
        if (r < 0)
                return MHD_NO;
        if (!req->answered && !req->waiting) {
                log_debug("HTTP: %s %s was neither answered nor set aside; closing.", req->method, req->path);
                return MHD_NO;
        }
        return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpServer *h = cls;
        HttpConnection *c;

        http_request_free(*con_cls);
        *con_cls = NULL;

        /* A kept-alive connection waits for its next head, with a deadline of its own from now. */
        c = http_connection_of(connection);
        if (c && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && !c->closing && !c->in_head) {
                c->head_deadline_usec = now_usec(CLOCK_MONOTONIC) + limits.WEBHOOK_HEAD_TIMEOUT_S * USEC_PER_SEC;
                heads_append(h, c);
                http_arm_head_timer(h);
        }
}

/* --- /healthz --- */

/* Answered from the head alone, as it always was (a body, if any, is never read). Behind the allowlist (it tells
 * the version and uptime), and before the webhook's rate limit (monitors poll). */
static int on_healthz(HttpRequest *req, void *userdata) {
        HttpServer *h = userdata;
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        uint64_t up = now_usec(CLOCK_MONOTONIC) - h->started_mono_usec;

        if (!o ||
            json_add_string(o, "status", "ok") < 0 ||
            json_add_string(o, "version", PHOTOND_VERSION) < 0 ||
            json_add(o, "uptime", json_new_seconds(up)) < 0)
                return -ENOMEM;
        return http_respond(req, MHD_HTTP_OK, o, NULL);
}

/* --- the loop --- */

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        HttpServer *h = cls;
        _cleanup_free_ char *s = NULL;
        size_t n;

        if (vasprintf(&s, fmt, ap) < 0)
                return;
        n = strlen(s);
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
                s[--n] = '\0';
        /* Once running, MHD reports per-connection trouble (resets, bad requests) that is not ours to shout about. */
        if (h->running)
                log_debug("libmicrohttpd: %s", s);
        else
                log_error("libmicrohttpd: %s", s);
}

static int http_dispatch(HttpServer *h) {
        MHD_UNSIGNED_LONG_LONG ms;
        bool resumed = h->resumed;

        h->connection_closed = h->resumed = false;
        if (MHD_run(h->daemon) == MHD_NO)
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "MHD_run() failed.");

        /* MHD stops watching the listener while its connection table is full and watches it again only at the
         * start of its next run, which nothing would trigger: without this, connections closed in this run left
         * the listener unwatched and the endpoint deaf until some other event came. */
        if (h->connection_closed)
                ms = 0;
        else if (resumed) {
                /* A run takes resumed connections back, and may only serve them in the next. */
                (void) sd_event_source_set_enabled(h->run_source, SD_EVENT_ONESHOT);
                ms = 0;
        }
        else if (MHD_get_timeout(h->daemon, &ms) == MHD_NO)
                return sd_event_source_set_enabled(h->timer_event_source, SD_EVENT_OFF);

        /* MHD gives a relative time in milliseconds; sd-event wants microseconds. */
        (void) sd_event_source_set_time_relative(h->timer_event_source, (uint64_t) ms * USEC_PER_MSEC);
        return sd_event_source_set_enabled(h->timer_event_source, SD_EVENT_ONESHOT);
}

static int on_mhd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) http_dispatch(userdata);
        return 0;
}

static int on_mhd_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) http_dispatch(userdata);
        return 0;
}

static int on_mhd_run(sd_event_source *s, void *userdata) {
        (void) http_dispatch(userdata);
        return 0;
}

/* --- setup --- */

/* The API token: the credential api-token, else PHOTOND_API_TOKEN (an empty credential, what the shipped units'
 * SetCredential= fallback gives without a file, is none). Names only reach the log, never the token. */
static int http_load_token(HttpServer *h) {
        const char *creds = getenv("CREDENTIALS_DIRECTORY"), *env = getenv("PHOTOND_API_TOKEN"), *source = NULL;
        _cleanup_free_ char *buf = NULL, *path = NULL;
        uint8_t digest[TOKEN_DIGEST_SIZE], key[STREAM_KEY_SIZE];
        size_t len = 0;
        int r;

        /* A new key for stream tokens, whatever the token read says: a reload is how a leaked API token is
         * replaced, and the stream tokens issued with it must go with it. */
        if (RAND_bytes(key, sizeof(key)) != 1)
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "Failed to make a stream token key.");

        if (creds) {
                if (asprintf(&path, "%s/api-token", creds) < 0)
                        return log_oom();
                r = webhook_secret_read_file(path, &buf, &len);
                if (r >= 0)
                        source = "credential api-token";
                else if (r != -ENOENT && r != -ENODATA)
                        return log_error_errno(r, "Failed to read %s: %m", path);
        }
        if (!source && env && env[0]) {
                buf = strdup(env);
                if (!buf)
                        return log_oom();
                len = strlen(env);
                source = "PHOTOND_API_TOKEN";
        }

        memcpy(h->stream_key, key, sizeof(key));
        explicit_bzero(key, sizeof(key));
        if (!source) {
                h->token_set = false;
                explicit_bzero(h->token_digest, sizeof(h->token_digest));
                log_info("No API token configured: the HTTP API answers 403 until one is set (credential api-token "
                         "or PHOTOND_API_TOKEN).");
                return 0;
        }
        r = token_digest(buf, len, digest);
        explicit_bzero(buf, len);
        if (r < 0)
                return log_error_errno(r, "Failed to hash the API token: %m");
        memcpy(h->token_digest, digest, sizeof(digest));
        h->token_set = true;
        log_info("API token from %s.", source);
        return 0;
}

int http_server_reload_token(HttpServer *h) {
        assert(h);
        return http_load_token(h);
}

/* "https://beam.example.org, http://localhost:5173" (commas or spaces): each an origin as browsers send it,
 * scheme://host[:port] without a path, or "*". */
static int cors_origins_parse(const char *s, char ***ret, const char **ret_bad) {
        char **l = NULL;
        size_t n = 0;

        for (const char *p = s; p && *p;) {
                size_t len;
                const char *rest;
                char **nl;

                p += strspn(p, ", \t");
                len = strcspn(p, ", \t");
                if (len == 0)
                        break;
                rest = NULL;
                if (strncmp(p, "http://", 7) == 0)
                        rest = p + 7;
                else if (strncmp(p, "https://", 8) == 0)
                        rest = p + 8;
                if (!(len == 1 && p[0] == '*') &&
                    (!rest || rest >= p + len || memchr(rest, '/', p + len - rest))) {
                        strv_free(l);
                        *ret_bad = p;
                        return -EINVAL;
                }
                nl = realloc(l, (n + 2) * sizeof(char*));
                if (!nl || !(nl[n] = strndup(p, len))) {
                        strv_free(nl ?: l);
                        return -ENOMEM;
                }
                nl[++n] = NULL;
                l = nl;
                p += len;
        }
        *ret = l;
        return 0;
}

static int http_configure(HttpServer *h) {
        const char *e, *bad_origin = NULL;
        size_t bad = 0;
        int r;

        if (limits.WEBHOOK_RESERVED_CONNECTIONS >= limits.WEBHOOK_MAX_CONNECTIONS)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "PHOTOND_WEBHOOK_RESERVED_CONNECTIONS=%" PRIu64 " leaves no connection of "
                                       "PHOTOND_WEBHOOK_MAX_CONNECTIONS=%" PRIu64 ".",
                                       limits.WEBHOOK_RESERVED_CONNECTIONS, limits.WEBHOOK_MAX_CONNECTIONS);

        e = getenv("PHOTON_WEBHOOK_ALLOWED_IPS");
        if (cidr_list_parse(e, &h->allowed, &h->n_allowed, &bad) < 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "Invalid PHOTON_WEBHOOK_ALLOWED_IPS: bad entry at '%s'.", e + bad);
        if (h->n_allowed > 0)
                log_info("Webhook allowlist: %s", e);

        e = getenv("PHOTOND_HTTP_CORS_ORIGINS");
        r = cors_origins_parse(e, &h->cors_origins, &bad_origin);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "Invalid PHOTOND_HTTP_CORS_ORIGINS: '%s' is no origin (scheme://host[:port], "
                                       "or *).", bad_origin);
        if (h->cors_origins)
                log_info("CORS origins for the HTTP API: %s", e);

        if (limits.SSE_TOKEN_LIFETIME_S > STREAM_TOKEN_MAX_LIFETIME_S)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "PHOTOND_SSE_TOKEN_LIFETIME_S=%" PRIu64 " is too long: a stream token travels "
                                       "in URLs; at most %u.", limits.SSE_TOKEN_LIFETIME_S,
                                       STREAM_TOKEN_MAX_LIFETIME_S);

        return http_load_token(h);
}

int http_server_new(const HttpServerConfig *config, int fd, HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *h = NULL;
        _cleanup_close_ int fd_close = fd;
        const union MHD_DaemonInfo *info;
        int r;

        assert(config);
        assert(config->event);
        assert(fd >= 0);
        assert(ret);

        h = new0(HttpServer, 1);
        if (!h)
                return log_oom();
        h->quiesced_fd = -EBADF;
        h->event = sd_event_ref(config->event);
        h->started_mono_usec = config->started_mono_usec;
        h->output_held = config->output_held;
        h->userdata = config->userdata;

        r = sd_event_add_defer(h->event, &h->release_source, on_release, h);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP release source: %m");
        (void) sd_event_source_set_enabled(h->release_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(h->release_source, "http-release");
        /* After the Manager's flush (SD_EVENT_PRIORITY_IDLE), which writes what the output may report. */
        (void) sd_event_source_set_priority(h->release_source, SD_EVENT_PRIORITY_IDLE + 1);
        r = sd_event_add_time_relative(h->event, &h->release_retry_source, CLOCK_MONOTONIC, USEC_PER_SEC,
                                       10 * USEC_PER_MSEC, on_release_retry, h);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP release timer: %m");
        (void) sd_event_source_set_enabled(h->release_retry_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(h->release_retry_source, "http-release-retry");

        r = http_configure(h);
        if (r < 0)
                return r;

        r = http_server_add_route(h, &(HttpRoute) {
                                          .method = "GET",
                                          .pattern = "/healthz",
                                          .cors = HTTP_CORS_LOOPBACK,
                                          .auth = HTTP_AUTH_NONE,
                                          .begin = on_healthz,
                                          .complete = on_healthz,
                                          .userdata = h,
                                  });
        if (r < 0)
                return log_oom();

        /* Before MHD starts: its first connections already need it. Armed when a head is awaited. */
        r = sd_event_add_time(h->event, &h->head_timer_source, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC,
                              on_head_timer, h);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP head timer: %m");
        (void) sd_event_source_set_enabled(h->head_timer_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(h->head_timer_source, "http-head-timer");

        h->daemon = MHD_start_daemon(
                        MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME,
                        0, NULL, NULL,
                        on_request, h,
                        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,     /* first, so MHD uses it for the rest */
                        MHD_OPTION_LISTEN_SOCKET, fd,
                        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                        MHD_OPTION_NOTIFY_CONNECTION, on_connection_notify, h,
                        MHD_OPTION_CONNECTION_LIMIT, (unsigned) limits.WEBHOOK_MAX_CONNECTIONS,
                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) limits.WEBHOOK_IDLE_TIMEOUT_S,
                        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) limits.WEBHOOK_CONNECTION_MEMORY_BYTES,
                        MHD_OPTION_UNESCAPE_CALLBACK, webhook_unescape, NULL,
                        MHD_OPTION_END);
        if (!h->daemon)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Failed to start libmicrohttpd on the webhook socket.");
        TAKE_FD(fd_close);      /* MHD owns the listener now and closes it when stopped */

        info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "libmicrohttpd has no epoll fd.");

        r = sd_event_add_io(h->event, &h->io_event_source, info->epoll_fd, EPOLLIN, on_mhd_io, h);
        if (r < 0)
                return log_error_errno(r, "Failed to watch libmicrohttpd's epoll fd: %m");
        (void) sd_event_source_set_description(h->io_event_source, "http-io");

        /* 1 ms accuracy: MHD asks for 0 when it has buffered work, which must not wait sd-event's default 250 ms. */
        r = sd_event_add_time_relative(h->event, &h->timer_event_source, CLOCK_MONOTONIC, 0, USEC_PER_MSEC,
                                       on_mhd_timer, h);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP timer: %m");
        (void) sd_event_source_set_description(h->timer_event_source, "http-timer");

        r = sd_event_add_defer(h->event, &h->run_source, on_mhd_run, h);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP run source: %m");
        (void) sd_event_source_set_enabled(h->run_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(h->run_source, "http-run");

        /* MHD's first run (a connection may be waiting: the one that activated photond) comes from the loop, once
         * the routes are added. */
        r = sd_event_source_set_enabled(h->timer_event_source, SD_EVENT_ONESHOT);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the HTTP timer: %m");

        h->running = true;
        *ret = TAKE_PTR(h);
        return 0;
}

void http_server_quiesce(HttpServer *h) {
        MHD_socket fd;

        if (!h || !h->daemon || h->quiesced_fd >= 0)
                return;
        /* The listener leaves MHD's epoll set; systemd (or whoever passed it) keeps it, so a connection made now
         * waits in the backlog for the next process instead of being refused by this one. */
        fd = MHD_quiesce_daemon(h->daemon);
        if (fd == MHD_INVALID_SOCKET)
                log_debug("HTTP: libmicrohttpd could not stop listening; new connections are answered until exit.");
        else
                h->quiesced_fd = fd;
}

HttpServer* http_server_free(HttpServer *h) {
        HttpAddress *a, *tmp;

        if (!h)
                return NULL;

        /* MHD must not be stopped with suspended connections: let every waiting request go first (its route's
         * done() releases what it waited for). */
        LIST_FOREACH(requests, req, h->requests) {
                req->hup_event_source = sd_event_source_disable_unref(req->hup_event_source);
                req->closing = true;
                req->waiting = false;
                if (req->suspended || req->stream_suspended) {
                        req->suspended = req->stream_suspended = false;
                        MHD_resume_connection(req->connection);
                }
        }

        /* Runs on_completed() for every connection, which frees the requests; anything left is freed here. */
        if (h->daemon)
                MHD_stop_daemon(h->daemon);
        h->quiesced_fd = safe_close(h->quiesced_fd);
        while (h->requests)
                http_request_free(h->requests);
        /* What waits for a release is its owners' to free (they go after the server). */
        while (h->releases_tail)
                http_server_release_cancel(h, h->releases_tail);
        /* MHD_stop_daemon() reported every connection closed, which freed them and emptied this table; this only
         * guards against a leak should it not have. */
        HASH_ITER(hh, h->addresses, a, tmp) {
                HASH_DEL(h->addresses, a);
                free(a);
        }
        sd_event_source_disable_unref(h->head_timer_source);

        sd_event_source_disable_unref(h->timer_event_source);
        sd_event_source_disable_unref(h->run_source);
        sd_event_source_disable_unref(h->io_event_source);
        sd_event_source_disable_unref(h->release_source);
        sd_event_source_disable_unref(h->release_retry_source);

        for (size_t i = 0; i < h->n_routes; i++)
                free(h->routes[i]);
        free(h->routes);
        free(h->allowed);
        strv_free(h->cors_origins);
        explicit_bzero(h->stream_key, sizeof(h->stream_key));
        sd_event_unref(h->event);
        return mfree(h);
}

int http_bind_from_env(int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        socklen_t sa_len;
        const char *port_str = getenv("PHOTON_WEBHOOK_PORT"), *address = getenv("PHOTON_WEBHOOK_ADDRESS");
        uint64_t port;
        int one = 1;

        assert(ret_fd);

        if (!port_str || !port_str[0])
                return -ENOENT;
        if (safe_atou64(port_str, &port) < 0 || port > 65535)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid PHOTON_WEBHOOK_PORT=%s.", port_str);
        if (port == 0)
                return -ENOENT;
        if (!address || !address[0])
                address = "127.0.0.1";  /* the reference listens on every interface; photond stays local */

        if (inet_pton(AF_INET, address, &sa.in.sin_addr) == 1) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons((uint16_t) port);
                sa_len = sizeof(sa.in);
        } else if (inet_pton(AF_INET6, address, &sa.in6.sin6_addr) == 1) {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons((uint16_t) port);
                sa_len = sizeof(sa.in6);
        } else
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "Invalid PHOTON_WEBHOOK_ADDRESS=%s: expected an IPv4 or IPv6 address.",
                                       address);

        fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return -errno;
        if (bind(fd, &sa.sa, sa_len) < 0)
                return log_error_errno(errno, "Cannot bind the webhook listener to %s port %" PRIu64 ": %m",
                                       address, port);
        if (listen(fd, SOMAXCONN) < 0)
                return -errno;

        log_info("Webhook listening on %s port %" PRIu64 ".", address, port);
        *ret_fd = TAKE_FD(fd);
        return 0;
}
