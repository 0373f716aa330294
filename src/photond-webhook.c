/* SPDX-License-Identifier: MIT */

/* The webhook endpoint: libmicrohttpd on the "webhook" listener, driven by the manager's sd-event loop as
 * journal-remote does it (MHD's epoll fd is an IO source, its timeout a timer; no MHD threads, so every callback
 * runs on the loop thread and may touch the Manager). Requests are checked in the reference's order (preflight,
 * allowlist, rate limit, route, authentication, body), after photond's own check of the body's framing; the method
 * call then waits on a suspended connection until the dispatcher reports back. */

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <uthash.h>

#include "fd-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "photond-webhook.h"
#include "string-util.h"
#include "webhook-auth.h"

#define ERROR_NOT_FOUND "Not found. Use /webhook/{photonName}/{method}"
#define ERROR_BAD_SECRET "Invalid webhook secret"
#define ERROR_TOO_LARGE "Request body too large"
#define ERROR_BODIES_IN_FLIGHT "Too many webhook bodies in flight"
#define CORS_ALLOW_METHODS "GET, POST, OPTIONS"
#define CORS_ALLOW_HEADERS "Content-Type, X-Webhook-Secret, X-Photon-Name"
/* After an answer given while the body still streams in, how long the rest is read and dropped so that closing
 * does not reset the connection before the sender has read the answer (a sender that stops on an error answer,
 * as curl does, closes first). */
#define EARLY_ANSWER_LINGER_USEC (2 * USEC_PER_SEC)

typedef enum WebhookReject {
        WEBHOOK_REJECT_SOURCE,
        WEBHOOK_REJECT_RATE_LIMITED,
        WEBHOOK_REJECT_NOT_FOUND,
        WEBHOOK_REJECT_NOT_CONFIGURED,
        WEBHOOK_REJECT_UNAUTHORIZED,
        WEBHOOK_REJECT_EXPIRED,
        WEBHOOK_REJECT_REPLAYED,
        WEBHOOK_REJECT_TOO_LARGE,
        WEBHOOK_REJECT_BAD_JSON,
        WEBHOOK_REJECT_UNAVAILABLE,
        WEBHOOK_REJECT_BUSY,
        WEBHOOK_REJECT_BAD_FRAMING,
        WEBHOOK_REJECT_TIMEOUT,
        WEBHOOK_REJECT_REPLAY_CACHE_FULL,
        WEBHOOK_REJECT_HEAD_TIMEOUT,
        WEBHOOK_REJECT_EVICTED,
        WEBHOOK_REJECT_TOO_MANY_CONNECTIONS,
        _WEBHOOK_REJECT_MAX,
        _WEBHOOK_REJECT_INVALID = -EINVAL,
} WebhookReject;

static const char *const webhook_reject_table[_WEBHOOK_REJECT_MAX] = {
        [WEBHOOK_REJECT_SOURCE] = "sourceNotAllowed",
        [WEBHOOK_REJECT_RATE_LIMITED] = "rateLimited",
        [WEBHOOK_REJECT_NOT_FOUND] = "notFound",
        [WEBHOOK_REJECT_NOT_CONFIGURED] = "secretNotConfigured",
        [WEBHOOK_REJECT_UNAUTHORIZED] = "unauthorized",
        [WEBHOOK_REJECT_EXPIRED] = "signatureExpired",
        [WEBHOOK_REJECT_REPLAYED] = "replayed",
        [WEBHOOK_REJECT_TOO_LARGE] = "bodyTooLarge",
        [WEBHOOK_REJECT_BAD_JSON] = "invalidJson",
        [WEBHOOK_REJECT_UNAVAILABLE] = "photonUnavailable",
        [WEBHOOK_REJECT_BUSY] = "busy",
        [WEBHOOK_REJECT_BAD_FRAMING] = "badFraming",
        [WEBHOOK_REJECT_TIMEOUT] = "requestTimeout",
        [WEBHOOK_REJECT_REPLAY_CACHE_FULL] = "replayCacheFull",
        [WEBHOOK_REJECT_HEAD_TIMEOUT] = "headTimeout",
        [WEBHOOK_REJECT_EVICTED] = "evicted",
        [WEBHOOK_REJECT_TOO_MANY_CONNECTIONS] = "tooManyConnections",
};

typedef struct PhotonSecret {
        WebhookKey *key;
        UT_hash_handle hh;
        char photon[];
} PhotonSecret;

typedef struct WebhookRequest WebhookRequest;
typedef struct WebhookConnection WebhookConnection;

/* The open connections of one source address. */
typedef struct WebhookAddress {
        UT_hash_handle hh;
        unsigned n_connections;
        char address[];
} WebhookAddress;

/* One TCP connection, from accept to close (MHD's socket context). libmicrohttpd's own timeout only counts idle
 * time and restarts with every byte, and it calls photond only once a request's head is complete: a peer that
 * trickles its head would hold a slot of the connection table for as long as it likes, and enough of them lock
 * everyone out, /healthz included. So photond tracks the connections still sending a head, in the order of
 * their deadlines, and closes them at the deadline, or earlier, oldest first, when the table or the peer's share
 * of it runs full. */
struct WebhookConnection {
        Webhook *webhook;
        int fd;
        WebhookAddress *address;        /* NULL once closed by photond (no longer counted) */
        LIST_FIELDS(WebhookConnection, heads);
        bool in_head;                   /* in webhook->heads: a request head is awaited */
        bool closing;                   /* shut down by photond; MHD closes it when it next looks */
        uint64_t head_deadline_usec;    /* CLOCK_MONOTONIC */
};

struct Webhook {
        Manager *manager;
        struct MHD_Daemon *daemon;
        sd_event_source *io_event_source;
        sd_event_source *timer_event_source;
        bool running;                   /* past start-up: MHD's own messages are only debug noise from now on */

        /* configuration from the environment, fixed at start */
        Cidr *allowed;                  /* PHOTON_WEBHOOK_ALLOWED_IPS; n_allowed == 0: everyone */
        size_t n_allowed;
        RateLimiter *rate_limiter;      /* NULL when PHOTON_WEBHOOK_RATE_LIMIT=0 */
        uint64_t rate_limit;
        uint64_t rate_window_ms;
        bool allow_unauthenticated;

        /* secrets, re-read on SIGHUP */
        WebhookKey *secret;
        PhotonSecret *photon_secrets;
        ReplayCache *replay_cache;
        bool replay_cache_full;         /* refusing deliveries since the last id was added (logged once) */

        LIST_HEAD(WebhookRequest, requests);
        uint64_t buffered_bytes;        /* request bodies held by all connections */

        /* connections: those awaiting a request head, oldest deadline first, and the count per address */
        LIST_HEAD(WebhookConnection, heads);
        WebhookConnection *heads_tail;
        WebhookAddress *addresses;
        unsigned n_connections;         /* not closed by photond */
        sd_event_source *head_timer_source;
        bool connection_closed;         /* during this MHD_run() */

        /* counters for status */
        uint64_t n_requests;
        uint64_t n_succeeded;
        uint64_t n_failed;
        uint64_t n_abandoned;
        uint64_t n_rejected[_WEBHOOK_REJECT_MAX];
};

/* The state of one request with a route, from its headers to its answer (MHD's *con_cls). */
struct WebhookRequest {
        Webhook *webhook;
        struct MHD_Connection *connection;
        LIST_FIELDS(WebhookRequest, requests);

        char *photon;
        char *method;
        bool authenticated;             /* X-Webhook-Secret matched before the body arrived */

        char *body;
        size_t body_len;
        size_t body_alloc;
        uint64_t body_deadline_usec;    /* CLOCK_MONOTONIC: the whole body must be here by then */
        bool answered_early;            /* refused while the body streamed in: the rest is dropped */
        uint64_t linger_until_usec;     /* ... until then, after which the connection is cut */

        DispatchCall *call;
        sd_event_source *hup_event_source;
        bool suspended;
        bool client_gone;
        unsigned status;                /* non-zero once the answer is ready */
        struct json_object *answer;
};

static const char* webhook_reject_to_string(WebhookReject r) {
        if (r < 0 || r >= _WEBHOOK_REJECT_MAX)
                return NULL;
        return webhook_reject_table[r];
}

/* --- requests --- */

static void webhook_request_release_body(WebhookRequest *req) {
        req->webhook->buffered_bytes -= req->body_alloc;
        req->body = mfree(req->body);
        req->body_len = req->body_alloc = 0;
}

static WebhookRequest* webhook_request_free(WebhookRequest *req) {
        if (!req)
                return NULL;

        if (req->call)
                dispatch_call_abandon(req->call);
        sd_event_source_disable_unref(req->hup_event_source);
        webhook_request_release_body(req);
        LIST_REMOVE(requests, req->webhook->requests, req);
        json_object_put(req->answer);
        free(req->photon);
        free(req->method);
        return mfree(req);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(WebhookRequest*, webhook_request_free);

/* --- connections --- */

/* A head is closed to make room only once it has been pending this long: in a burst of connections, the heads
 * of the newest ones are still unread in their sockets, which says nothing about their senders. */
#define HEAD_EVICT_MIN_AGE_USEC (1 * USEC_PER_SEC)

/* What a connection closed before its request head was complete gets, written straight to the socket: MHD has
 * nothing to answer with (it never called us), and a client should see why rather than a bare reset. */
#define RAW_408 "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
#define RAW_503 "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n" \
        "Content-Length: 0\r\n\r\n"

static void heads_append(Webhook *w, WebhookConnection *c) {
        c->heads_next = NULL;
        c->heads_prev = w->heads_tail;
        if (w->heads_tail)
                w->heads_tail->heads_next = c;
        else
                w->heads = c;
        w->heads_tail = c;
        c->in_head = true;
}

static void heads_remove(Webhook *w, WebhookConnection *c) {
        if (!c->in_head)
                return;
        if (w->heads_tail == c)
                w->heads_tail = c->heads_prev;
        LIST_REMOVE(heads, w->heads, c);
        c->in_head = false;
}

static bool webhook_over_headroom(Webhook *w) {
        return w->n_connections + limits.WEBHOOK_RESERVED_CONNECTIONS > limits.WEBHOOK_MAX_CONNECTIONS;
}

/* When c's head may be closed to make room. */
static uint64_t head_evictable_usec(WebhookConnection *c) {
        return c->head_deadline_usec - limits.WEBHOOK_HEAD_TIMEOUT_S * USEC_PER_SEC + HEAD_EVICT_MIN_AGE_USEC;
}

/* For the oldest head's deadline, or earlier, while the table is over its headroom, for when that head may be
 * closed to make room: a full table has no accept left to do that at. */
static void webhook_arm_head_timer(Webhook *w) {
        uint64_t when;
        int r;

        if (!w->head_timer_source)
                return;
        if (!w->heads) {
                (void) sd_event_source_set_enabled(w->head_timer_source, SD_EVENT_OFF);
                return;
        }
        when = w->heads->head_deadline_usec;
        if (webhook_over_headroom(w))
                when = MIN(when, head_evictable_usec(w->heads));
        r = sd_event_source_set_time(w->head_timer_source, when);
        if (r >= 0)
                r = sd_event_source_set_enabled(w->head_timer_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the webhook head timer: %m");
}

static void webhook_connection_uncount(Webhook *w, WebhookConnection *c) {
        if (!c->address)
                return;
        w->n_connections--;
        if (--c->address->n_connections == 0) {
                HASH_DEL(w->addresses, c->address);
                free(c->address);
        }
        c->address = NULL;
}

/* Ends a connection that has not sent a complete request head: a short answer, then shutdown(), which MHD sees
 * as the peer going away (it owns the fd and closes it). It stops counting against the caps at once. */
static void webhook_connection_close(Webhook *w, WebhookConnection *c, WebhookReject reason, const char *raw) {
        if (c->closing)
                return;
        c->closing = true;
        heads_remove(w, c);
        webhook_connection_uncount(w, c);
        w->n_rejected[reason]++;
        (void) send(c->fd, raw, strlen(raw), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void) shutdown(c->fd, SHUT_RDWR);
}

/* The oldest connection still sending its head, of address a (any if NULL), other than except, if its head has
 * been pending for HEAD_EVICT_MIN_AGE_USEC at least. */
static WebhookConnection* webhook_oldest_head(Webhook *w, WebhookAddress *a, WebhookConnection *except) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        /* Oldest first: the first match decides. */
        LIST_FOREACH(heads, c, w->heads)
                if (c != except && (!a || c->address == a))
                        return head_evictable_usec(c) <= now ? c : NULL;
        return NULL;
}

static int on_head_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Webhook *w = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        WebhookConnection *victim;

        while (w->heads && w->heads->head_deadline_usec <= now)
                webhook_connection_close(w, w->heads, WEBHOOK_REJECT_HEAD_TIMEOUT, RAW_408);
        while (webhook_over_headroom(w) && (victim = webhook_oldest_head(w, NULL, NULL)))
                webhook_connection_close(w, victim, WEBHOOK_REJECT_EVICTED, RAW_408);
        webhook_arm_head_timer(w);
        return 0;
}

static void webhook_connection_started(Webhook *w, struct MHD_Connection *connection, void **socket_context) {
        const union MHD_ConnectionInfo *info;
        WebhookConnection *c, *victim;
        WebhookAddress *a;
        char address[INET6_ADDRSTRLEN];

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!info)
                return;         /* untracked: MHD's own limits still apply */
        c = new0(WebhookConnection, 1);
        if (!c) {
                log_oom();
                return;
        }
        *c = (WebhookConnection) {
                .webhook = w,
                .fd = info->connect_fd,
                .head_deadline_usec = now_usec(CLOCK_MONOTONIC) + limits.WEBHOOK_HEAD_TIMEOUT_S * USEC_PER_SEC,
        };

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!info || sockaddr_to_string(info->client_addr, address, sizeof(address)) < 0)
                strcpy(address, "unknown");
        HASH_FIND_STR(w->addresses, address, a);
        if (!a) {
                a = malloc(offsetof(WebhookAddress, address) + strlen(address) + 1);
                if (!a) {
                        free(c);
                        log_oom();
                        return;
                }
                *a = (WebhookAddress) {};
                strcpy(a->address, address);
                HASH_ADD_STR(w->addresses, address, a);
        }
        a->n_connections++;
        c->address = a;
        w->n_connections++;
        heads_append(w, c);
        *socket_context = c;

        /* One address's share: its oldest unfinished head makes room; with none (or none pending for a second),
         * the newcomer is refused. So a flood of trickling connections from one address only ever holds its
         * share, and a monitor polling /healthz from the same address (loopback: a reverse proxy, the local host)
         * still gets in. */
        if (a->n_connections > limits.WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS) {
                victim = webhook_oldest_head(w, a, c);
                if (victim) {
                        log_debug("Webhook: %s has %u connections, closing its oldest unfinished one.", address,
                                  a->n_connections);
                        webhook_connection_close(w, victim, WEBHOOK_REJECT_EVICTED, RAW_408);
                } else {
                        log_debug("Webhook: refusing a connection from %s, which has %" PRIu64 " already.",
                                  address, limits.WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS);
                        webhook_connection_close(w, c, WEBHOOK_REJECT_TOO_MANY_CONNECTIONS, RAW_503);
                }
        }

        /* Headroom in the whole table, whoever the newcomer is: it must not find the table full of heads that
         * may never complete. */
        if (!c->closing && webhook_over_headroom(w)) {
                victim = webhook_oldest_head(w, NULL, c);
                if (victim)
                        webhook_connection_close(w, victim, WEBHOOK_REJECT_EVICTED, RAW_408);
        }

        webhook_arm_head_timer(w);
}

static void on_connection_notify(void *cls, struct MHD_Connection *connection, void **socket_context,
                                 enum MHD_ConnectionNotificationCode toe) {
        Webhook *w = cls;
        WebhookConnection *c = *socket_context;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                webhook_connection_started(w, connection, socket_context);
                return;
        }
        if (toe != MHD_CONNECTION_NOTIFY_CLOSED)
                return;
        w->connection_closed = true;
        if (!c)
                return;
        heads_remove(w, c);
        webhook_connection_uncount(w, c);
        free(c);
        *socket_context = NULL;
        webhook_arm_head_timer(w);
}

static WebhookConnection* webhook_connection_of(struct MHD_Connection *connection) {
        const union MHD_ConnectionInfo *info;

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return info ? info->socket_context : NULL;
}

/* --- responses --- */

static enum MHD_Result webhook_respond(struct MHD_Connection *connection, unsigned status,
                                       struct json_object *body, const char *retry_after) {
        struct MHD_Response *response;
        const char *s = "", *origin;
        size_t len = 0;
        enum MHD_Result ret;

        if (body) {
                s = json_object_to_json_string_length(body, JSON_FORMAT_FLAGS, &len);
                if (!s)
                        return MHD_NO;
        }

        response = MHD_create_response_from_buffer(len, (void*) s, MHD_RESPMEM_MUST_COPY);
        if (!response)
                return MHD_NO;

        /* The reference's CORS headers, on every response. */
        origin = webhook_cors_origin(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Origin"));
        if ((origin && MHD_add_response_header(response, "Access-Control-Allow-Origin", origin) == MHD_NO) ||
            MHD_add_response_header(response, "Access-Control-Allow-Methods", CORS_ALLOW_METHODS) == MHD_NO ||
            MHD_add_response_header(response, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS) == MHD_NO ||
            (body && MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") == MHD_NO) ||
            (retry_after && MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, retry_after) == MHD_NO)) {
                MHD_destroy_response(response);
                return MHD_NO;
        }

        ret = MHD_queue_response(connection, status, response);
        MHD_destroy_response(response);
        return ret;
}

static enum MHD_Result webhook_respond_error(struct MHD_Connection *connection, unsigned status, const char *error,
                                             const char *retry_after) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o || json_add_string(o, "error", error) < 0)
                return MHD_NO;
        return webhook_respond(connection, status, o, retry_after);
}

/* Refuses a request whose body is still arriving, at once. libmicrohttpd 0.9.75 cannot do that: its
 * MHD_queue_response() fails until the whole body has been read (which for a chunked body may be never), and
 * failing the request only resets the connection. So the answer is written to the socket here, in the form
 * webhook_respond() gives it, and the write side is shut: by now MHD has sent nothing for this request but, at
 * most, a complete "100 Continue", and the connection is never used for another request. The caller drops the
 * rest of the body for a moment (see EARLY_ANSWER_LINGER_USEC) and then ends the connection. */
static void webhook_answer_early(WebhookRequest *req, WebhookReject reason, unsigned status, const char *error,
                                 const char *retry_after) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        _cleanup_free_ char *head = NULL;
        const union MHD_ConnectionInfo *info;
        const char *body = NULL, *origin;
        size_t body_len = 0;
        int fd;

        req->webhook->n_rejected[reason]++;
        req->answered_early = true;
        req->linger_until_usec = now_usec(CLOCK_MONOTONIC) + EARLY_ANSWER_LINGER_USEC;
        webhook_request_release_body(req);

        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!info)
                return;
        fd = info->connect_fd;

        if (o && json_add_string(o, "error", error) >= 0)
                body = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &body_len);
        origin = webhook_cors_origin(MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Origin"));
        if (body &&
            asprintf(&head,
                     "HTTP/1.1 %u %s\r\n"
                     "Connection: close\r\n"
                     "%s%s%s"
                     "Access-Control-Allow-Methods: " CORS_ALLOW_METHODS "\r\n"
                     "Access-Control-Allow-Headers: " CORS_ALLOW_HEADERS "\r\n"
                     "%s%s%s"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "\r\n",
                     status, MHD_get_reason_phrase_for(status),
                     origin ? "Access-Control-Allow-Origin: " : "", origin ?: "", origin ? "\r\n" : "",
                     retry_after ? "Retry-After: " : "", retry_after ?: "", retry_after ? "\r\n" : "",
                     body_len) >= 0) {
                /* A few hundred bytes into an idle send buffer; anything short of all of them is only a close. */
                struct iovec iov[2] = { { head, strlen(head) }, { (void*) body, body_len } };
                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };

                (void) sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        (void) shutdown(fd, SHUT_WR);
}

static enum MHD_Result webhook_reject(Webhook *w, struct MHD_Connection *connection, WebhookReject reason,
                                      unsigned status, struct json_object *body, const char *retry_after) {
        w->n_rejected[reason]++;
        return webhook_respond(connection, status, body, retry_after);
}

static enum MHD_Result webhook_reject_error(Webhook *w, struct MHD_Connection *connection, WebhookReject reason,
                                            unsigned status, const char *error, const char *retry_after) {
        w->n_rejected[reason]++;
        return webhook_respond_error(connection, status, error, retry_after);
}

static enum MHD_Result webhook_respond_healthz(Webhook *w, struct MHD_Connection *connection) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        uint64_t up = now_usec(CLOCK_MONOTONIC) - w->manager->started_mono_usec;

        if (!o ||
            json_add_string(o, "status", "ok") < 0 ||
            json_add_string(o, "version", PHOTOND_VERSION) < 0 ||
            json_add(o, "uptime", json_new_seconds(up)) < 0)
                return MHD_NO;
        return webhook_respond(connection, MHD_HTTP_OK, o, NULL);
}

/* --- secrets --- */

static inline void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

static PhotonSecret* photon_secret_free(PhotonSecret *s) {
        if (!s)
                return NULL;
        webhook_key_free(s->key);
        return mfree(s);
}

static void photon_secrets_free_all(PhotonSecret **table) {
        PhotonSecret *s, *tmp;

        HASH_ITER(hh, *table, s, tmp) {
                HASH_DEL(*table, s);
                photon_secret_free(s);
        }
}

/* A secret file into a key; the bytes read are wiped. -ENOENT if absent, -ENODATA if empty. */
static int read_secret_file(const char *path, WebhookKey **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size;
        int r;

        r = webhook_secret_read_file(path, &buf, &size);
        if (r < 0)
                return r;
        r = webhook_key_new(buf, size, ret);
        explicit_bzero(buf, size);
        return r;
}

/* Adds the webhook-secret.<photon> files of dir to table. Logs its errors. */
static int load_photon_secrets(const char *dir, PhotonSecret **table) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int r;

        d = opendir(dir);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "Failed to open %s: %m", dir);
        }

        while ((errno = 0, de = readdir(d))) {
                _cleanup_free_ char *path = NULL;
                WebhookKey *key = NULL;
                PhotonSecret *s;
                const char *photon = startswith(de->d_name, "webhook-secret.");

                if (!photon)
                        continue;
                if (!name_is_valid(photon)) {
                        log_warning("Ignoring credential %s/%s: '%s' is not a valid photon name.", dir, de->d_name,
                                    photon);
                        continue;
                }
                if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
                        return log_oom();
                r = read_secret_file(path, &key);
                if (r == -ENODATA) {
                        log_warning("Ignoring empty credential %s.", path);
                        continue;
                }
                if (r < 0)
                        return log_error_errno(r, "Failed to read %s: %m", path);

                s = malloc(offsetof(PhotonSecret, photon) + strlen(photon) + 1);
                if (!s) {
                        webhook_key_free(key);
                        return log_oom();
                }
                *s = (PhotonSecret) { .key = key };
                strcpy(s->photon, photon);
                HASH_ADD_STR(*table, photon, s);
        }
        if (errno > 0)
                return log_error_errno(errno, "Failed to read %s: %m", dir);
        return 0;
}

static int webhook_load_secrets(Webhook *w) {
        _cleanup_(webhook_key_freep) WebhookKey *secret = NULL;
        _cleanup_free_ char *buf = NULL;
        PhotonSecret *photon_secrets = NULL;
        const char *creds = getenv("CREDENTIALS_DIRECTORY"), *source = NULL;
        bool empty_credential = false;
        size_t len = 0;
        int r;

        /* The same search as photonctl webhook-test's, so that what it signs with is what is checked here. */
        r = webhook_secret_find(&buf, &len, &source, &empty_credential);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(r, "Failed to read %s/webhook-secret: %m", creds);
        if (empty_credential)
                /* What the shipped units' SetCredential= fallback gives when no secret file exists. */
                log_info("Credential webhook-secret is empty: no secret from it.");
        if (buf) {
                r = webhook_key_new(buf, len, &secret);
                explicit_bzero(buf, len);
                if (r < 0)
                        return log_oom();
        }

        if (creds) {
                r = load_photon_secrets(creds, &photon_secrets);   /* logs */
                if (r < 0) {
                        photon_secrets_free_all(&photon_secrets);
                        return r;
                }
        }

        webhook_key_free(w->secret);
        w->secret = TAKE_PTR(secret);
        photon_secrets_free_all(&w->photon_secrets);
        w->photon_secrets = photon_secrets;

        /* Names only: secrets never reach the log. */
        if (w->secret)
                log_info("Webhook secret from %s%s.", source,
                         w->secret->std_key ? "" : " (not base64: Standard Webhooks signatures cannot verify)");
        else if (w->allow_unauthenticated)
                log_warning("No webhook secret: accepting unauthenticated webhooks (PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED).");
        else
                log_info("No webhook secret configured: webhooks are refused until one is set.");
        if (HASH_COUNT(w->photon_secrets) > 0)
                log_info("Per-photon webhook secrets for %u photon(s).", HASH_COUNT(w->photon_secrets));
        return 0;
}

int webhook_reload_secrets(Webhook *w) {
        assert(w);
        return webhook_load_secrets(w);
}

static const WebhookKey* webhook_key_for(Webhook *w, const char *photon) {
        PhotonSecret *s;

        HASH_FIND_STR(w->photon_secrets, photon, s);
        return s ? s->key : w->secret;
}

/* --- the method call --- */

static void webhook_request_finish(WebhookRequest *req, unsigned status, struct json_object *answer) {
        req->status = status;
        req->answer = answer;
        req->hup_event_source = sd_event_source_disable_unref(req->hup_event_source);
        if (req->suspended) {
                req->suspended = false;
                MHD_resume_connection(req->connection);
                /* In external-epoll mode nothing wakes MHD for a resume: run it from the timer on the next loop
                 * iteration, where the handler queues the answer (never from inside an MHD callback). */
                (void) sd_event_source_set_time_relative(req->webhook->timer_event_source, 0);
                (void) sd_event_source_set_enabled(req->webhook->timer_event_source, SD_EVENT_ONESHOT);
        }
}

static void on_call_done(const DispatchResult *result, void *userdata) {
        WebhookRequest *req = userdata;
        Webhook *w = req->webhook;
        _cleanup_(json_object_putp) struct json_object *answer = json_object_new_object();
        unsigned status;

        req->call = NULL;

        if (result->success) {
                status = MHD_HTTP_OK;
                w->n_succeeded++;
                /* No data (a handler that printed nothing) leaves the key out, as JSON.stringify() does with
                 * undefined. */
                if (answer &&
                    (json_add_bool(answer, "success", true) < 0 ||
                     (result->data && json_add(answer, "data", json_object_get(result->data)) < 0)))
                        json_object_putp(&answer);

                _cleanup_(json_object_putp) struct json_object *event = json_object_new_object();
                _cleanup_free_ char *channel = NULL;
                if (event &&
                    json_add_string(event, "event", "webhook-received") >= 0 &&
                    json_add_string(event, "method", req->method) >= 0 &&
                    json_add_int64(event, "timestamp", now_ms()) >= 0 &&
                    asprintf(&channel, "webhooks:%s", req->photon) >= 0)
                        (void) channels_publish(w->manager->channels, channel, event, NULL, NULL);
                else
                        log_oom();
        } else {
                status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                w->n_failed++;
                if (answer && json_add_string(answer, "error", result->error ?: "Method failed") < 0)
                        json_object_putp(&answer);
        }

        /* Without an answer object the handler closes the connection (out of memory). */
        webhook_request_finish(req, status, TAKE_PTR(answer));
}

static int on_client_hup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        WebhookRequest *req = userdata;

        /* The client closed its side while the method runs: nobody will read the answer. A half-close cannot be
         * told apart from a close without writing, and webhook senders do not half-close, so it counts as gone. */
        log_debug("Webhook client went away during %s.%s; abandoning the call.", req->photon, req->method);
        req->webhook->n_abandoned++;
        if (req->call) {
                dispatch_call_abandon(req->call);
                req->call = NULL;
        }
        req->client_gone = true;
        webhook_request_finish(req, 0, NULL);
        return 0;
}

static enum MHD_Result webhook_start_call(WebhookRequest *req, struct json_object *args) {
        _cleanup_(dispatch_failure_done) DispatchFailure failure = {};
        Webhook *w = req->webhook;
        struct MHD_Connection *connection = req->connection;
        const union MHD_ConnectionInfo *info;
        _cleanup_free_ char *error = NULL;
        int r;

        if (!dispatcher_can_serve(w->manager->dispatcher, req->photon, req->method)) {
                if (asprintf(&error, "Photon '%s' not initialized", req->photon) < 0)
                        return MHD_NO;
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_UNAVAILABLE, MHD_HTTP_SERVICE_UNAVAILABLE,
                                            error, NULL);
        }

        r = dispatcher_call(w->manager->dispatcher,
                            &(DispatchRequest) {
                                    .photon = req->photon,
                                    .method = req->method,
                                    .args = args,
                                    .trigger = DISPATCH_TRIGGER_WEBHOOK,
                            },
                            on_call_done, req, &req->call, &failure);
        if (r < 0)
                switch (failure.error) {
                case DISPATCH_ERROR_NO_PROVIDER:
                        /* The reference's text; the command request's names the handler paths instead. */
                        if (asprintf(&error, "Photon '%s' not initialized", req->photon) < 0)
                                return MHD_NO;
                        return webhook_reject_error(w, connection, WEBHOOK_REJECT_UNAVAILABLE,
                                                    MHD_HTTP_SERVICE_UNAVAILABLE, error, NULL);
                case DISPATCH_ERROR_SHUTTING_DOWN:
                        return webhook_reject_error(w, connection, WEBHOOK_REJECT_BUSY, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                    failure.message ?: "Daemon is shutting down", NULL);
                case DISPATCH_ERROR_BUSY:
                case DISPATCH_ERROR_PHOTON_BUSY:
                        return webhook_reject_error(w, connection, WEBHOOK_REJECT_BUSY, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                    failure.message ?: "Busy", "1");
                default:
                        w->n_failed++;
                        log_warning("Webhook call %s.%s failed to start: %s", req->photon, req->method,
                                    failure.message ?: dispatch_error_to_string(failure.error));
                        return webhook_respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                     failure.message ?: "Failed to start the method", NULL);
                }

        /* Watch for the client leaving while the connection is suspended (MHD does not look at it then). */
        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info) {
                r = sd_event_add_io(w->manager->event, &req->hup_event_source, info->connect_fd, EPOLLRDHUP,
                                    on_client_hup, req);
                if (r < 0)
                        log_debug_errno(r, "Cannot watch the webhook client for hang-ups, continuing: %m");
                else
                        (void) sd_event_source_set_description(req->hup_event_source, "webhook-client-hup");
        }

        req->suspended = true;
        MHD_suspend_connection(connection);
        return MHD_YES;
}

/* --- request handling --- */

static enum MHD_Result add_header_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        struct json_object *headers = cls, *old;
        _cleanup_free_ char *name = NULL;

        if (webhook_header_is_hidden(key))
                return MHD_YES;

        /* node lower-cases header names and joins repeated ones with ", ". */
        name = strdup(key);
        if (!name)
                return MHD_NO;
        for (char *p = name; *p; p++)
                *p = (char) tolower((unsigned char) *p);

        if (json_object_object_get_ex(headers, name, &old)) {
                _cleanup_free_ char *joined = NULL;
                if (asprintf(&joined, "%s, %s", json_object_get_string(old), value ?: "") < 0)
                        return MHD_NO;
                return json_add_string(headers, name, joined) < 0 ? MHD_NO : MHD_YES;
        }
        return json_add_string(headers, name, value ?: "") < 0 ? MHD_NO : MHD_YES;
}

static enum MHD_Result add_query_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        /* The last of repeated keys wins, as Object.fromEntries() does. */
        return json_add_string(cls, key, value ?: "") < 0 ? MHD_NO : MHD_YES;
}

static struct json_object* build_webhook_info(struct MHD_Connection *connection, const char *http_method) {
        _cleanup_(json_object_putp) struct json_object *info = json_object_new_object(),
                *headers = json_object_new_object(), *query = json_object_new_object();

        if (!info || !headers || !query)
                return NULL;
        if (MHD_get_connection_values(connection, MHD_HEADER_KIND, add_header_cb, headers) < 0 ||
            MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, add_query_cb, query) < 0)
                return NULL;
        if (json_add_string(info, "method", http_method) < 0 ||
            json_add(info, "headers", TAKE_PTR(headers)) < 0 ||
            json_add(info, "query", TAKE_PTR(query)) < 0 ||
            json_add_int64(info, "timestamp", now_ms()) < 0)
                return NULL;
        return TAKE_PTR(info);
}

static const char* header(struct MHD_Connection *connection, const char *name) {
        return MHD_lookup_connection_value(connection, MHD_HEADER_KIND, name);
}

static bool has_signature_headers(struct MHD_Connection *connection) {
        return header(connection, "X-Webhook-Secret") || header(connection, "X-Hub-Signature-256") ||
               header(connection, "Stripe-Signature") || header(connection, "webhook-signature");
}

/* Any one scheme passing is enough. Returns 0 or the reason to refuse; for WEBHOOK_REJECT_REPLAY_CACHE_FULL
 * *ret_retry_after_ms says when an id is forgotten. */
static WebhookReject webhook_authenticate(WebhookRequest *req, const WebhookKey *key,
                                          uint64_t *ret_retry_after_ms) {
        Webhook *w = req->webhook;
        struct MHD_Connection *c = req->connection;
        const char *v, *id;
        uint64_t now = (uint64_t) now_ms();
        int64_t now_s = (int64_t) (now / 1000), ts;
        uint64_t tol = limits.WEBHOOK_SIGNATURE_TOLERANCE_S;
        bool expired = false;
        int r;

        if (req->authenticated)
                return 0;

        v = header(c, "X-Webhook-Secret");
        if (v && webhook_verify_header(key, v) == 0)
                return 0;

        v = header(c, "X-Hub-Signature-256");
        if (v && webhook_verify_github(key, v, req->body, req->body_len) == 0)
                return 0;

        v = header(c, "Stripe-Signature");
        if (v) {
                r = webhook_verify_stripe(key, v, req->body, req->body_len, now_s, tol);
                if (r == 0)
                        return 0;
                expired = expired || r == -ETIME;
        }

        v = header(c, "webhook-signature");
        id = header(c, "webhook-id");
        if (v) {
                r = webhook_verify_standard(key, id, header(c, "webhook-timestamp"), v, req->body, req->body_len,
                                            now_s, tol, &ts);
                if (r == 0) {
                        /* Only genuine deliveries enter the cache, so forged ids cannot crowd it. The wall clock,
                         * as the signature's timestamp is checked against it. */
                        r = replay_cache_add(w->replay_cache, id, replay_expiry_ms(ts, now, tol), now,
                                             ret_retry_after_ms);
                        if (r == -EEXIST)
                                return WEBHOOK_REJECT_REPLAYED;
                        if (r == -ENOSPC)
                                return WEBHOOK_REJECT_REPLAY_CACHE_FULL;
                        if (r < 0)
                                return WEBHOOK_REJECT_UNAUTHORIZED;
                        w->replay_cache_full = false;
                        return 0;
                }
                expired = expired || r == -ETIME;
        }

        return expired ? WEBHOOK_REJECT_EXPIRED : WEBHOOK_REJECT_UNAUTHORIZED;
}

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
static int webhook_check_framing(struct MHD_Connection *connection, unsigned *ret_status, const char **ret_error) {
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

/* First call for a request: only its headers are known. Either answers at once or sets up *con_cls. */
static enum MHD_Result webhook_begin(Webhook *w, struct MHD_Connection *connection, const char *url,
                                     const char *http_method, void **con_cls) {
        _cleanup_(webhook_request_freep) WebhookRequest *req = NULL;
        _cleanup_free_ char *photon = NULL, *method = NULL;
        const union MHD_ConnectionInfo *info;
        const struct sockaddr *peer;
        const char *cl, *error;
        uint64_t length = 0;
        char address[INET6_ADDRSTRLEN];
        unsigned status;
        int r;

        w->n_requests++;

        /* Before anything else, OPTIONS included: where this request ends decides where the next one starts. MHD
         * closes the connection after an answer given before the body was read. */
        r = webhook_check_framing(connection, &status, &error);
        if (r < 0)
                return MHD_NO;
        if (status > 0)
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_BAD_FRAMING, status, error, NULL);

        if (streq(http_method, MHD_HTTP_METHOD_OPTIONS))
                return webhook_respond(connection, MHD_HTTP_NO_CONTENT, NULL, NULL);

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        peer = info ? info->client_addr : NULL;
        if (!peer || sockaddr_to_string(peer, address, sizeof(address)) < 0)
                strcpy(address, "unknown");

        if (w->n_allowed > 0 && !cidr_list_match(w->allowed, w->n_allowed, peer)) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
                if (!o ||
                    json_add_string(o, "error", "Source IP not in webhook allowlist") < 0 ||
                    json_add_string(o, "sourceIp", address) < 0)
                        return MHD_NO;
                return webhook_reject(w, connection, WEBHOOK_REJECT_SOURCE, MHD_HTTP_FORBIDDEN, o, NULL);
        }

        /* Behind the allowlist (it tells the version and uptime), before the rate limit (monitors poll). */
        if (streq(http_method, MHD_HTTP_METHOD_GET) && streq(url, "/healthz"))
                return webhook_respond_healthz(w, connection);

        if (w->rate_limiter) {
                uint64_t retry_ms;

                if (!rate_limiter_check(w->rate_limiter, address, now_usec(CLOCK_MONOTONIC) / USEC_PER_MSEC,
                                        &retry_ms)) {
                        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
                        char retry[32];

                        /* The time left in this address's window, rounded up (the reference always sends the
                         * whole window). */
                        snprintf(retry, sizeof(retry), "%" PRIu64, MAX((retry_ms + 999) / 1000, (uint64_t) 1));
                        if (!o ||
                            json_add_string(o, "error", "Too many requests") < 0 ||
                            json_add_int64(o, "limit", (int64_t) w->rate_limit) < 0 ||
                            json_add_int64(o, "windowMs", (int64_t) w->rate_window_ms) < 0)
                                return MHD_NO;
                        return webhook_reject(w, connection, WEBHOOK_REJECT_RATE_LIMITED,
                                              MHD_HTTP_TOO_MANY_REQUESTS, o, retry);
                }
        }

        r = webhook_parse_route(url, header(connection, "X-Photon-Name"), &photon, &method);
        if (r == -ENOMEM)
                return MHD_NO;
        if (r < 0)
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_NOT_FOUND, MHD_HTTP_NOT_FOUND,
                                            ERROR_NOT_FOUND, NULL);

        const WebhookKey *key = webhook_key_for(w, photon);
        if (!key && !w->allow_unauthenticated)
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_NOT_CONFIGURED, MHD_HTTP_FORBIDDEN,
                                            "Webhook secret not configured. Set PHOTON_WEBHOOK_SECRET or "
                                            "PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED=true", NULL);
        /* Without any credential there is nothing to wait for the body for. */
        if (key && !has_signature_headers(connection))
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_UNAUTHORIZED, MHD_HTTP_UNAUTHORIZED,
                                            ERROR_BAD_SECRET, NULL);

        /* A declared body over the cap is refused before a byte of it is read (MHD then skips the body). */
        cl = header(connection, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && (safe_atou64(cl, &length) < 0 || length > limits.WEBHOOK_MAX_BODY_BYTES))
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_TOO_LARGE, MHD_HTTP_CONTENT_TOO_LARGE,
                                            ERROR_TOO_LARGE, NULL);
        if (w->buffered_bytes + length > limits.WEBHOOK_MAX_BUFFERED_BYTES)
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_BUSY, MHD_HTTP_SERVICE_UNAVAILABLE,
                                            ERROR_BODIES_IN_FLIGHT, "1");

        req = new0(WebhookRequest, 1);
        if (!req)
                return MHD_NO;
        *req = (WebhookRequest) {
                .webhook = w,
                .connection = connection,
                .photon = TAKE_PTR(photon),
                .method = TAKE_PTR(method),
                .body_deadline_usec = now_usec(CLOCK_MONOTONIC) + limits.WEBHOOK_REQUEST_TIMEOUT_S * USEC_PER_SEC,
        };
        LIST_PREPEND(requests, w->requests, req);

        if (key && webhook_verify_header(key, header(connection, "X-Webhook-Secret")) == 0)
                req->authenticated = true;

        if (length > 0) {
                /* Reserved up front from the declared length; chunked bodies grow below. */
                req->body = malloc(length);
                if (!req->body)
                        return MHD_NO;
                req->body_alloc = length;
                w->buffered_bytes += length;
        }

        *con_cls = TAKE_PTR(req);
        return MHD_YES;
}

/* A piece of the body arrived. Refuses the request at once when the body grows past the cap or beyond what all
 * connections may hold, or when it is still arriving at its deadline (a sender dripping bytes would otherwise keep
 * the connection for as long as it likes: MHD's timeout only counts idle time). */
static void webhook_receive(WebhookRequest *req, const char *data, size_t size) {
        Webhook *w = req->webhook;

        if (now_usec(CLOCK_MONOTONIC) >= req->body_deadline_usec)
                return webhook_answer_early(req, WEBHOOK_REJECT_TIMEOUT, MHD_HTTP_REQUEST_TIMEOUT,
                                            "Request body not received in time", NULL);
        if (size > limits.WEBHOOK_MAX_BODY_BYTES - req->body_len)
                return webhook_answer_early(req, WEBHOOK_REJECT_TOO_LARGE, MHD_HTTP_CONTENT_TOO_LARGE,
                                            ERROR_TOO_LARGE, NULL);
        if (req->body_len + size > req->body_alloc) {
                size_t n = MAX(req->body_alloc * 2, req->body_len + size);
                char *p;

                n = MIN(MAX(n, (size_t) 4096), (size_t) limits.WEBHOOK_MAX_BODY_BYTES);
                if (w->buffered_bytes - req->body_alloc + n > limits.WEBHOOK_MAX_BUFFERED_BYTES ||
                    !(p = realloc(req->body, n)))
                        return webhook_answer_early(req, WEBHOOK_REJECT_BUSY, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                    ERROR_BODIES_IN_FLIGHT, "1");
                w->buffered_bytes += n - req->body_alloc;
                req->body = p;
                req->body_alloc = n;
        }
        memcpy(req->body + req->body_len, data, size);
        req->body_len += size;
}

/* The whole body is here: authenticate, parse, call. */
static enum MHD_Result webhook_complete(WebhookRequest *req, const char *http_method) {
        Webhook *w = req->webhook;
        struct MHD_Connection *connection = req->connection;
        _cleanup_(json_object_putp) struct json_object *args = NULL, *info = NULL;
        const WebhookKey *key;
        WebhookReject reason;
        int r;

        /* Looked up again: a SIGHUP may have changed the secrets while the body arrived. */
        key = webhook_key_for(w, req->photon);
        if (!key && !w->allow_unauthenticated)
                return webhook_reject_error(w, connection, WEBHOOK_REJECT_NOT_CONFIGURED, MHD_HTTP_FORBIDDEN,
                                            "Webhook secret not configured. Set PHOTON_WEBHOOK_SECRET or "
                                            "PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED=true", NULL);
        if (key) {
                uint64_t retry_ms = 0;

                reason = webhook_authenticate(req, key, &retry_ms);
                if (reason == WEBHOOK_REJECT_REPLAY_CACHE_FULL) {
                        char retry[32];

                        snprintf(retry, sizeof(retry), "%" PRIu64, MAX((retry_ms + 999) / 1000, (uint64_t) 1));
                        /* Once per stretch of refusals (counted in status), not once per delivery. */
                        if (!w->replay_cache_full)
                                log_warning("Refusing Standard Webhooks deliveries for now: %" PRIu64
                                            " webhook-ids are remembered and none has expired yet "
                                            "(PHOTOND_WEBHOOK_REPLAY_CACHE_IDS).", limits.WEBHOOK_REPLAY_CACHE_IDS);
                        w->replay_cache_full = true;
                        return webhook_reject_error(w, connection, reason, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                    "Too many webhook-ids to remember, retry later", retry);
                }
                if (reason == WEBHOOK_REJECT_EXPIRED)
                        return webhook_reject_error(w, connection, reason, MHD_HTTP_UNAUTHORIZED,
                                                    ERROR_BAD_SECRET ": signature timestamp outside the tolerance",
                                                    NULL);
                if (reason == WEBHOOK_REJECT_REPLAYED)
                        return webhook_reject_error(w, connection, reason, MHD_HTTP_UNAUTHORIZED,
                                                    ERROR_BAD_SECRET ": webhook-id already delivered", NULL);
                if (reason != 0)
                        return webhook_reject_error(w, connection, reason, MHD_HTTP_UNAUTHORIZED,
                                                    ERROR_BAD_SECRET, NULL);
        }

        if (req->body_len == 0)
                args = json_object_new_object();
        else {
                r = json_parse(req->body, req->body_len, &args, NULL);
                if (r == -ENOMEM)
                        return MHD_NO;
                if (r < 0)
                        return webhook_reject_error(w, connection, WEBHOOK_REJECT_BAD_JSON, MHD_HTTP_BAD_REQUEST,
                                                    "Invalid JSON body", NULL);
        }
        webhook_request_release_body(req);

        /* The reference adds _webhook to the parsed body; a body that is no object cannot carry it in JSON, so
         * it is passed on as it is. */
        if (json_object_is_type(args, json_type_object)) {
                info = build_webhook_info(connection, http_method);
                if (!info || json_add(args, "_webhook", TAKE_PTR(info)) < 0)
                        return MHD_NO;
        }

        return webhook_start_call(req, args);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *http_method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
        Webhook *w = cls;
        WebhookRequest *req = *con_cls;
        enum MHD_Result ret;

        if (!req) {
                WebhookConnection *c = webhook_connection_of(connection);

                if (c) {
                        /* Closed for its slow head while the rest of it was already buffered: not served. */
                        if (c->closing)
                                return MHD_NO;
                        heads_remove(w, c);
                        webhook_arm_head_timer(w);
                }
                return webhook_begin(w, connection, url, http_method, con_cls);
        }

        if (req->answered_early) {
                /* Answered on the socket already: drop what still comes for a moment, then end the connection.
                 * MHD_NO is also the only way to finish the request without MHD sending an answer of its own. */
                bool more = *upload_data_size > 0;

                *upload_data_size = 0;
                return more && now_usec(CLOCK_MONOTONIC) < req->linger_until_usec ? MHD_YES : MHD_NO;
        }
        if (*upload_data_size > 0) {
                webhook_receive(req, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return MHD_YES;
        }

        /* Resumed: the call finished, or the client left. */
        if (req->client_gone)
                return MHD_NO;
        if (req->status > 0) {
                if (!req->answer)
                        return MHD_NO;
                ret = webhook_respond(connection, req->status, req->answer, NULL);
                json_object_putp(&req->answer);
                return ret;
        }
        if (req->call)
                return MHD_YES;

        return webhook_complete(req, http_method);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        Webhook *w = cls;
        WebhookConnection *c;

        webhook_request_free(*con_cls);
        *con_cls = NULL;

        /* A kept-alive connection waits for its next head, with a deadline of its own from now. */
        c = webhook_connection_of(connection);
        if (c && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && !c->closing && !c->in_head) {
                c->head_deadline_usec = now_usec(CLOCK_MONOTONIC) + limits.WEBHOOK_HEAD_TIMEOUT_S * USEC_PER_SEC;
                heads_append(w, c);
                webhook_arm_head_timer(w);
        }
}

/* --- the loop --- */

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        Webhook *w = cls;
        _cleanup_free_ char *s = NULL;
        size_t n;

        if (vasprintf(&s, fmt, ap) < 0)
                return;
        n = strlen(s);
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
                s[--n] = '\0';
        /* Once running, MHD reports per-connection trouble (resets, bad requests) that is not ours to shout about. */
        if (w->running)
                log_debug("libmicrohttpd: %s", s);
        else
                log_error("libmicrohttpd: %s", s);
}

static int webhook_dispatch(Webhook *w) {
        MHD_UNSIGNED_LONG_LONG ms;

        w->connection_closed = false;
        if (MHD_run(w->daemon) == MHD_NO)
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "MHD_run() failed.");

        /* MHD stops watching the listener while its connection table is full and watches it again only at the
         * start of its next run, which nothing would trigger: without this, connections closed in this run left
         * the listener unwatched and the endpoint deaf until some other event came. */
        if (w->connection_closed)
                ms = 0;
        else if (MHD_get_timeout(w->daemon, &ms) == MHD_NO)
                return sd_event_source_set_enabled(w->timer_event_source, SD_EVENT_OFF);

        /* MHD gives a relative time in milliseconds; sd-event wants microseconds. */
        (void) sd_event_source_set_time_relative(w->timer_event_source, (uint64_t) ms * USEC_PER_MSEC);
        return sd_event_source_set_enabled(w->timer_event_source, SD_EVENT_ONESHOT);
}

static int on_mhd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) webhook_dispatch(userdata);
        return 0;
}

static int on_mhd_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) webhook_dispatch(userdata);
        return 0;
}

/* --- setup --- */

static int parse_env_u64(const char *name, uint64_t def, uint64_t *ret) {
        const char *e = getenv(name);

        if (!e || !e[0]) {
                *ret = def;
                return 0;
        }
        if (safe_atou64(e, ret) < 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid %s=%s: expected a number.", name, e);
        return 0;
}

static int webhook_configure(Webhook *w) {
        const char *e;
        size_t bad = 0;
        int r;

        e = getenv("PHOTON_WEBHOOK_ALLOWED_IPS");
        if (cidr_list_parse(e, &w->allowed, &w->n_allowed, &bad) < 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "Invalid PHOTON_WEBHOOK_ALLOWED_IPS: bad entry at '%s'.", e + bad);
        if (w->n_allowed > 0)
                log_info("Webhook allowlist: %s", e);

        r = parse_env_u64("PHOTON_WEBHOOK_RATE_LIMIT", 60, &w->rate_limit);
        if (r < 0)
                return r;
        r = parse_env_u64("PHOTON_WEBHOOK_RATE_WINDOW_MS", 60000, &w->rate_window_ms);
        if (r < 0)
                return r;
        if (w->rate_window_ms == 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "PHOTON_WEBHOOK_RATE_WINDOW_MS must be positive.");
        if (w->rate_limit > 0) {
                r = rate_limiter_new(w->rate_limit, w->rate_window_ms, limits.WEBHOOK_RATE_LIMIT_ADDRESSES,
                                     &w->rate_limiter);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the webhook rate limit: %m");
        }

        e = getenv("PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED");
        w->allow_unauthenticated = e && e[0];

        r = replay_cache_new(limits.WEBHOOK_REPLAY_CACHE_IDS, &w->replay_cache);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the webhook replay cache: %m");

        return webhook_load_secrets(w);
}

int webhook_new(Manager *m, int fd, Webhook **ret) {
        _cleanup_(webhook_freep) Webhook *w = NULL;
        _cleanup_close_ int fd_close = fd;
        const union MHD_DaemonInfo *info;
        int r;

        assert(m);
        assert(fd >= 0);
        assert(ret);

        w = new0(Webhook, 1);
        if (!w)
                return log_oom();
        w->manager = m;

        if (limits.WEBHOOK_RESERVED_CONNECTIONS >= limits.WEBHOOK_MAX_CONNECTIONS)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "PHOTOND_WEBHOOK_RESERVED_CONNECTIONS=%" PRIu64 " leaves no connection of "
                                       "PHOTOND_WEBHOOK_MAX_CONNECTIONS=%" PRIu64 ".",
                                       limits.WEBHOOK_RESERVED_CONNECTIONS, limits.WEBHOOK_MAX_CONNECTIONS);

        /* Before MHD starts: its first connections already need it. Armed when a head is awaited. */
        r = sd_event_add_time(m->event, &w->head_timer_source, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC,
                              on_head_timer, w);
        if (r < 0)
                return log_error_errno(r, "Failed to add the webhook head timer: %m");
        (void) sd_event_source_set_enabled(w->head_timer_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(w->head_timer_source, "webhook-head-timer");

        r = webhook_configure(w);
        if (r < 0)
                return r;

        w->daemon = MHD_start_daemon(
                        MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME,
                        0, NULL, NULL,
                        on_request, w,
                        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, w,     /* first, so MHD uses it for the rest */
                        MHD_OPTION_LISTEN_SOCKET, fd,
                        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w,
                        MHD_OPTION_NOTIFY_CONNECTION, on_connection_notify, w,
                        MHD_OPTION_CONNECTION_LIMIT, (unsigned) limits.WEBHOOK_MAX_CONNECTIONS,
                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) limits.WEBHOOK_IDLE_TIMEOUT_S,
                        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) limits.WEBHOOK_CONNECTION_MEMORY_BYTES,
                        MHD_OPTION_UNESCAPE_CALLBACK, webhook_unescape, NULL,
                        MHD_OPTION_END);
        if (!w->daemon)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Failed to start libmicrohttpd on the webhook socket.");
        TAKE_FD(fd_close);      /* MHD owns the listener now and closes it when stopped */

        info = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "libmicrohttpd has no epoll fd.");

        r = sd_event_add_io(m->event, &w->io_event_source, info->epoll_fd, EPOLLIN, on_mhd_io, w);
        if (r < 0)
                return log_error_errno(r, "Failed to watch libmicrohttpd's epoll fd: %m");
        (void) sd_event_source_set_description(w->io_event_source, "webhook-io");

        /* 1 ms accuracy: MHD asks for 0 when it has buffered work, which must not wait sd-event's default 250 ms. */
        r = sd_event_add_time_relative(m->event, &w->timer_event_source, CLOCK_MONOTONIC, 0, USEC_PER_MSEC,
                                       on_mhd_timer, w);
        if (r < 0)
                return log_error_errno(r, "Failed to add the webhook timer: %m");
        (void) sd_event_source_set_description(w->timer_event_source, "webhook-timer");

        r = webhook_dispatch(w);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the webhook timer: %m");

        w->running = true;
        log_info("Webhook endpoint ready.");
        *ret = TAKE_PTR(w);
        return 0;
}

Webhook* webhook_free(Webhook *w) {
        WebhookAddress *a, *tmp;

        if (!w)
                return NULL;

        /* MHD must not be stopped with suspended connections: let every waiting request go first. */
        LIST_FOREACH(requests, req, w->requests) {
                if (req->call) {
                        dispatch_call_abandon(req->call);
                        req->call = NULL;
                }
                req->hup_event_source = sd_event_source_disable_unref(req->hup_event_source);
                req->client_gone = true;
                if (req->suspended) {
                        req->suspended = false;
                        MHD_resume_connection(req->connection);
                }
        }

        /* Runs on_completed() for every connection, which frees the requests; anything left is freed here. */
        if (w->daemon)
                MHD_stop_daemon(w->daemon);
        while (w->requests)
                webhook_request_free(w->requests);
        /* MHD_stop_daemon() reported every connection closed, which freed them and emptied this table; this only
         * guards against a leak should it not have. */
        HASH_ITER(hh, w->addresses, a, tmp) {
                HASH_DEL(w->addresses, a);
                free(a);
        }
        sd_event_source_disable_unref(w->head_timer_source);

        sd_event_source_disable_unref(w->timer_event_source);
        sd_event_source_disable_unref(w->io_event_source);

        free(w->allowed);
        rate_limiter_free(w->rate_limiter);
        replay_cache_free(w->replay_cache);
        webhook_key_free(w->secret);
        photon_secrets_free_all(&w->photon_secrets);
        return mfree(w);
}

int webhook_bind_from_env(int *ret_fd) {
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

int webhook_add_status(Webhook *w, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = NULL, *rejected = NULL;
        unsigned in_flight = 0;
        int r;

        if (!w)
                return json_add_bool(data, "webhookEnabled", false);

        o = json_object_new_object();
        rejected = json_object_new_object();
        if (!o || !rejected)
                return -ENOMEM;

        for (WebhookReject i = 0; i < _WEBHOOK_REJECT_MAX; i++) {
                r = json_add_int64(rejected, webhook_reject_to_string(i), (int64_t) w->n_rejected[i]);
                if (r < 0)
                        return r;
        }
        LIST_FOREACH(requests, req, w->requests)
                if (req->call)
                        in_flight++;

        if ((r = json_add_int64(o, "requests", (int64_t) w->n_requests)) < 0 ||
            (r = json_add_int64(o, "succeeded", (int64_t) w->n_succeeded)) < 0 ||
            (r = json_add_int64(o, "failed", (int64_t) w->n_failed)) < 0 ||
            (r = json_add_int64(o, "abandoned", (int64_t) w->n_abandoned)) < 0 ||
            (r = json_add_int64(o, "inFlight", in_flight)) < 0 ||
            (r = json_add_int64(o, "connections", w->n_connections)) < 0 ||
            (r = json_add(o, "rejected", TAKE_PTR(rejected))) < 0 ||
            (r = json_add_bool(o, "secretConfigured", w->secret || w->photon_secrets)) < 0 ||
            (r = json_add_bool(o, "allowUnauthenticated", w->allow_unauthenticated)) < 0)
                return r;

        if ((r = json_add_bool(data, "webhookEnabled", true)) < 0 ||
            (r = json_add(data, "webhook", TAKE_PTR(o))) < 0)
                return r;
        return 0;
}
