/* SPDX-License-Identifier: MIT */

/* The webhook route of the HTTP front end (photond-http.c): /webhook/<photon>/<method> and /webhook/<method> with
 * X-Photon-Name, and the 404 of every path no other route takes. It is the front end's fallback route, so the
 * reference's order holds: after the preflight and the allowlist (the front end's), the rate limit, then the
 * route, then authentication, then the body; the method call then waits on a suspended connection until the
 * dispatcher reports back. */

#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>
#include <uthash.h>

#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-dispatch.h"
#include "photond-http.h"
#include "photond-limits.h"
#include "photond-webhook.h"
#include "string-util.h"
#include "webhook-auth.h"

#define ERROR_NOT_FOUND "Not found. Use /webhook/{photonName}/{method}"
#define ERROR_BAD_SECRET "Invalid webhook secret"
#define ERROR_NOT_CONFIGURED \
        "Webhook secret not configured. Set PHOTON_WEBHOOK_SECRET or PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED=true"

/* Why a request was refused (status "webhook.rejected"). The front end's own refusals (framing, allowlist,
 * connections) are its counters (HttpStats), shown here under the names they always had. */
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

struct Webhook {
        HttpServer *http;
        Dispatcher *dispatcher;
        Channels *channels;

        /* configuration from the environment, fixed at start */
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
        void (*idle)(void *userdata);   /* webhook_set_idle_callback() */
        void *idle_userdata;

        /* counters for status */
        uint64_t n_succeeded;
        uint64_t n_failed;
        uint64_t n_abandoned;
        uint64_t n_rejected[_WEBHOOK_REJECT_MAX];
        /* and for GET /metrics: the answers by status and scheme, in the order each pair first occurred */
        WebhookAnswerCount answers[WEBHOOK_ANSWERS_MAX];
        size_t n_answers;
};

/* What the route keeps in a request that names a webhook (http_request_set_data()), from its head to its end. */
struct WebhookRequest {
        Webhook *webhook;
        HttpRequest *request;
        LIST_FIELDS(WebhookRequest, requests);

        char *photon;
        char *method;
        bool authenticated;             /* X-Webhook-Secret matched before the body arrived */
        WebhookScheme scheme;           /* the one that authenticated it */
        DispatchCall *call;
};

static const char *const webhook_scheme_table[_WEBHOOK_SCHEME_MAX] = {
        [WEBHOOK_SCHEME_NONE] = "none",
        [WEBHOOK_SCHEME_HEADER] = "header",
        [WEBHOOK_SCHEME_GITHUB] = "github",
        [WEBHOOK_SCHEME_STRIPE] = "stripe",
        [WEBHOOK_SCHEME_STANDARD] = "standard",
};

const char* webhook_scheme_to_string(WebhookScheme s) {
        return s >= 0 && s < _WEBHOOK_SCHEME_MAX ? webhook_scheme_table[s] : NULL;
}

static const char* webhook_reject_to_string(WebhookReject r) {
        if (r < 0 || r >= _WEBHOOK_REJECT_MAX)
                return NULL;
        return webhook_reject_table[r];
}

static WebhookRequest* webhook_request_free(WebhookRequest *wr) {
        if (!wr)
                return NULL;

        if (wr->call)
                dispatch_call_abandon(wr->call);
        LIST_REMOVE(requests, wr->webhook->requests, wr);
        if (!wr->webhook->requests && wr->webhook->idle)
                wr->webhook->idle(wr->webhook->idle_userdata);
        free(wr->photon);
        free(wr->method);
        return mfree(wr);
}

/* --- answers --- */

static int webhook_reject(Webhook *w, HttpRequest *req, WebhookReject reason, unsigned status,
                          struct json_object *body, const char *retry_after) {
        w->n_rejected[reason]++;
        return http_respond(req, status, body, retry_after);
}

static int webhook_reject_error(Webhook *w, HttpRequest *req, WebhookReject reason, unsigned status,
                                const char *error, const char *retry_after) {
        w->n_rejected[reason]++;
        return http_respond_error(req, status, error, retry_after);
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

static void on_call_done(const DispatchResult *result, void *userdata) {
        WebhookRequest *wr = userdata;
        Webhook *w = wr->webhook;
        _cleanup_(json_object_putp) struct json_object *answer = json_object_new_object();
        unsigned status;

        wr->call = NULL;

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
                    json_add_string(event, "method", wr->method) >= 0 &&
                    json_add_int64(event, "timestamp", now_ms()) >= 0 &&
                    asprintf(&channel, "webhooks:%s", wr->photon) >= 0)
                        (void) channels_publish(w->channels, channel, event, NULL, NULL);
                else
                        log_oom();
        } else {
                status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                w->n_failed++;
                if (answer && json_add_string(answer, "error", result->error ?: "Method failed") < 0)
                        json_object_putp(&answer);
        }

        /* Without an answer object the front end closes the connection (out of memory). */
        http_request_finish(wr->request, status, TAKE_PTR(answer));
}

static int webhook_start_call(WebhookRequest *wr, struct json_object *args) {
        _cleanup_(dispatch_failure_done) DispatchFailure failure = {};
        Webhook *w = wr->webhook;
        HttpRequest *req = wr->request;
        _cleanup_free_ char *error = NULL;
        int r;

        if (!dispatcher_can_serve(w->dispatcher, wr->photon, wr->method)) {
                if (asprintf(&error, "Photon '%s' not initialized", wr->photon) < 0)
                        return -ENOMEM;
                return webhook_reject_error(w, req, WEBHOOK_REJECT_UNAVAILABLE, MHD_HTTP_SERVICE_UNAVAILABLE,
                                            error, NULL);
        }

        r = dispatcher_call(w->dispatcher,
                            &(DispatchRequest) {
                                    .photon = wr->photon,
                                    .method = wr->method,
                                    .args = args,
                                    .trigger = DISPATCH_TRIGGER_WEBHOOK,
                            },
                            on_call_done, wr, &wr->call, &failure);
        if (r < 0)
                switch (failure.error) {
                case DISPATCH_ERROR_NO_PROVIDER:
                        /* The reference's text; the command request's names the handler paths instead. */
                        if (asprintf(&error, "Photon '%s' not initialized", wr->photon) < 0)
                                return -ENOMEM;
                        return webhook_reject_error(w, req, WEBHOOK_REJECT_UNAVAILABLE,
                                                    MHD_HTTP_SERVICE_UNAVAILABLE, error, NULL);
                case DISPATCH_ERROR_SHUTTING_DOWN:
                        return webhook_reject_error(w, req, WEBHOOK_REJECT_BUSY, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                    failure.message ?: "Daemon is shutting down", NULL);
                case DISPATCH_ERROR_BUSY:
                case DISPATCH_ERROR_PHOTON_BUSY:
                        return webhook_reject_error(w, req, WEBHOOK_REJECT_BUSY, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                    failure.message ?: "Busy", "1");
                default:
                        w->n_failed++;
                        log_warning("Webhook call %s.%s failed to start: %s", wr->photon, wr->method,
                                    failure.message ?: dispatch_error_to_string(failure.error));
                        return http_respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                  failure.message ?: "Failed to start the method", NULL);
                }

        http_request_suspend(req);
        return 0;
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
static WebhookReject webhook_authenticate(WebhookRequest *wr, const WebhookKey *key,
                                          uint64_t *ret_retry_after_ms) {
        Webhook *w = wr->webhook;
        struct MHD_Connection *c = http_request_connection(wr->request);
        size_t body_len;
        const char *body = http_request_body(wr->request, &body_len), *v, *id;
        uint64_t now = (uint64_t) now_ms();
        int64_t now_s = (int64_t) (now / 1000), ts;
        uint64_t tol = limits.WEBHOOK_SIGNATURE_TOLERANCE_S;
        bool expired = false;
        int r;

        if (wr->authenticated)
                return 0;

        v = header(c, "X-Webhook-Secret");
        if (v && webhook_verify_header(key, v) == 0) {
                wr->scheme = WEBHOOK_SCHEME_HEADER;
                return 0;
        }

        v = header(c, "X-Hub-Signature-256");
        if (v && webhook_verify_github(key, v, body, body_len) == 0) {
                wr->scheme = WEBHOOK_SCHEME_GITHUB;
                return 0;
        }

        v = header(c, "Stripe-Signature");
        if (v) {
                r = webhook_verify_stripe(key, v, body, body_len, now_s, tol);
                if (r == 0) {
                        wr->scheme = WEBHOOK_SCHEME_STRIPE;
                        return 0;
                }
                expired = expired || r == -ETIME;
        }

        v = header(c, "webhook-signature");
        id = header(c, "webhook-id");
        if (v) {
                r = webhook_verify_standard(key, id, header(c, "webhook-timestamp"), v, body, body_len,
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
                        wr->scheme = WEBHOOK_SCHEME_STANDARD;
                        return 0;
                }
                expired = expired || r == -ETIME;
        }

        return expired ? WEBHOOK_REJECT_EXPIRED : WEBHOOK_REJECT_UNAUTHORIZED;
}

/* --- the route --- */

/* The head is complete: the rate limit, the route, whether there is a key and a credential to check. Answers, or
 * keeps the webhook's names in the request and lets the front end take the body in. */
static int webhook_begin(HttpRequest *req, void *userdata) {
        Webhook *w = userdata;
        struct MHD_Connection *connection = http_request_connection(req);
        _cleanup_free_ char *photon = NULL, *method = NULL;
        const WebhookKey *key;
        WebhookRequest *wr;
        int r;

        if (w->rate_limiter) {
                uint64_t retry_ms;

                if (!rate_limiter_check(w->rate_limiter, http_request_address(req),
                                        now_usec(CLOCK_MONOTONIC) / USEC_PER_MSEC, &retry_ms)) {
                        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
                        char retry[32];

                        /* The time left in this address's window, rounded up (the reference always sends the
                         * whole window). */
                        snprintf(retry, sizeof(retry), "%" PRIu64, MAX((retry_ms + 999) / 1000, (uint64_t) 1));
                        if (!o ||
                            json_add_string(o, "error", "Too many requests") < 0 ||
                            json_add_int64(o, "limit", (int64_t) w->rate_limit) < 0 ||
                            json_add_int64(o, "windowMs", (int64_t) w->rate_window_ms) < 0)
                                return -ENOMEM;
                        return webhook_reject(w, req, WEBHOOK_REJECT_RATE_LIMITED, MHD_HTTP_TOO_MANY_REQUESTS, o,
                                              retry);
                }
        }

        r = webhook_parse_route(http_request_path(req), header(connection, "X-Photon-Name"), &photon, &method);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return webhook_reject_error(w, req, WEBHOOK_REJECT_NOT_FOUND, MHD_HTTP_NOT_FOUND, ERROR_NOT_FOUND,
                                            NULL);

        key = webhook_key_for(w, photon);
        if (!key && !w->allow_unauthenticated)
                return webhook_reject_error(w, req, WEBHOOK_REJECT_NOT_CONFIGURED, MHD_HTTP_FORBIDDEN,
                                            ERROR_NOT_CONFIGURED, NULL);
        /* Without any credential there is nothing to wait for the body for. */
        if (key && !has_signature_headers(connection))
                return webhook_reject_error(w, req, WEBHOOK_REJECT_UNAUTHORIZED, MHD_HTTP_UNAUTHORIZED,
                                            ERROR_BAD_SECRET, NULL);

        wr = new0(WebhookRequest, 1);
        if (!wr)
                return -ENOMEM;
        *wr = (WebhookRequest) {
                .webhook = w,
                .request = req,
                .photon = TAKE_PTR(photon),
                .method = TAKE_PTR(method),
                .authenticated = key && webhook_verify_header(key, header(connection, "X-Webhook-Secret")) == 0,
        };
        if (wr->authenticated)
                wr->scheme = WEBHOOK_SCHEME_HEADER;
        LIST_PREPEND(requests, w->requests, wr);
        http_request_set_data(req, wr);
        return 0;
}

/* The whole body is here: authenticate, parse, call. */
static int webhook_complete(HttpRequest *req, void *userdata) {
        Webhook *w = userdata;
        WebhookRequest *wr = http_request_get_data(req);
        _cleanup_(json_object_putp) struct json_object *args = NULL, *info = NULL;
        const WebhookKey *key;
        WebhookReject reason;
        const char *body;
        size_t body_len;
        int r;

        /* Looked up again: a SIGHUP may have changed the secrets while the body arrived. */
        key = webhook_key_for(w, wr->photon);
        if (!key && !w->allow_unauthenticated)
                return webhook_reject_error(w, req, WEBHOOK_REJECT_NOT_CONFIGURED, MHD_HTTP_FORBIDDEN,
                                            ERROR_NOT_CONFIGURED, NULL);
        if (key) {
                uint64_t retry_ms = 0;

                reason = webhook_authenticate(wr, key, &retry_ms);
                if (reason == WEBHOOK_REJECT_REPLAY_CACHE_FULL) {
                        char retry[32];

                        snprintf(retry, sizeof(retry), "%" PRIu64, MAX((retry_ms + 999) / 1000, (uint64_t) 1));
                        /* Once per stretch of refusals (counted in status), not once per delivery. */
                        if (!w->replay_cache_full)
                                log_warning("Refusing Standard Webhooks deliveries for now: %" PRIu64
                                            " webhook-ids are remembered and none has expired yet "
                                            "(PHOTOND_WEBHOOK_REPLAY_CACHE_IDS).", limits.WEBHOOK_REPLAY_CACHE_IDS);
                        w->replay_cache_full = true;
                        return webhook_reject_error(w, req, reason, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                    "Too many webhook-ids to remember, retry later", retry);
                }
                if (reason == WEBHOOK_REJECT_EXPIRED)
                        return webhook_reject_error(w, req, reason, MHD_HTTP_UNAUTHORIZED,
                                                    ERROR_BAD_SECRET ": signature timestamp outside the tolerance",
                                                    NULL);
                if (reason == WEBHOOK_REJECT_REPLAYED)
                        return webhook_reject_error(w, req, reason, MHD_HTTP_UNAUTHORIZED,
                                                    ERROR_BAD_SECRET ": webhook-id already delivered", NULL);
                if (reason != 0)
                        return webhook_reject_error(w, req, reason, MHD_HTTP_UNAUTHORIZED, ERROR_BAD_SECRET, NULL);
        }

        body = http_request_body(req, &body_len);
        if (body_len == 0)
                args = json_object_new_object();
        else {
                r = json_parse(body, body_len, &args, NULL);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return webhook_reject_error(w, req, WEBHOOK_REJECT_BAD_JSON, MHD_HTTP_BAD_REQUEST,
                                                    "Invalid JSON body", NULL);
        }

        /* The reference adds _webhook to the parsed body; a body that is no object cannot carry it in JSON, so
         * it is passed on as it is. */
        if (json_object_is_type(args, json_type_object)) {
                info = build_webhook_info(http_request_connection(req), http_request_method(req));
                if (!info || json_add(args, "_webhook", TAKE_PTR(info)) < 0)
                        return -ENOMEM;
        }

        return webhook_start_call(wr, args);
}

static void webhook_refused(HttpRequest *req, HttpRefusal why, void *userdata) {
        static const WebhookReject reasons[_HTTP_REFUSAL_MAX] = {
                [HTTP_REFUSAL_TOO_LARGE] = WEBHOOK_REJECT_TOO_LARGE,
                [HTTP_REFUSAL_BUSY] = WEBHOOK_REJECT_BUSY,
                [HTTP_REFUSAL_TIMEOUT] = WEBHOOK_REJECT_TIMEOUT,
        };
        Webhook *w = userdata;

        w->n_rejected[reasons[why]]++;
}

static void webhook_gone(HttpRequest *req, void *userdata) {
        Webhook *w = userdata;
        WebhookRequest *wr = http_request_get_data(req);

        /* The client closed its side while the method runs: nobody will read the answer. */
        log_debug("Webhook client went away during %s.%s; abandoning the call.", wr->photon, wr->method);
        w->n_abandoned++;
        if (wr->call) {
                dispatch_call_abandon(wr->call);
                wr->call = NULL;
        }
}

/* Counts an answer under its status and scheme. */
static void webhook_count_answer(Webhook *w, unsigned status, WebhookScheme scheme) {
        size_t i;

        for (i = 0; i < w->n_answers; i++)
                if (w->answers[i].status == status && w->answers[i].scheme == scheme)
                        break;
        if (i == w->n_answers) {
                /* The route answers with a dozen statuses: the table never fills. */
                if (i == WEBHOOK_ANSWERS_MAX)
                        return;
                w->answers[w->n_answers++] = (WebhookAnswerCount) { .status = status, .scheme = scheme };
        }
        w->answers[i].n++;
}

static void webhook_done(HttpRequest *req, void *userdata) {
        WebhookRequest *wr = http_request_get_data(req);
        unsigned status = http_request_status(req);

        if (status > 0)
                webhook_count_answer(userdata, status, wr ? wr->scheme : WEBHOOK_SCHEME_NONE);
        webhook_request_free(wr);
        http_request_set_data(req, NULL);
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
        int r;

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

int webhook_new(HttpServer *http, Dispatcher *dispatcher, Channels *channels, Webhook **ret) {
        _cleanup_(webhook_freep) Webhook *w = NULL;
        int r;

        assert(http);
        assert(dispatcher);
        assert(channels);
        assert(ret);

        w = new0(Webhook, 1);
        if (!w)
                return log_oom();
        *w = (Webhook) {
                .http = http,
                .dispatcher = dispatcher,
                .channels = channels,
        };

        r = webhook_configure(w);
        if (r < 0)
                return r;

        /* The fallback: what no other route takes is the webhook's, and its 404 is the reference's. */
        r = http_server_add_route(http, &(HttpRoute) {
                                          .pattern = "*",
                                          .cors = HTTP_CORS_LOOPBACK,
                                          .auth = HTTP_AUTH_NONE,
                                          .begin = webhook_begin,
                                          .complete = webhook_complete,
                                          .done = webhook_done,
                                          .refused = webhook_refused,
                                          .gone = webhook_gone,
                                          .max_body = limits.WEBHOOK_MAX_BODY_BYTES,
                                          .userdata = w,
                                  });
        if (r < 0)
                return log_error_errno(r, "Failed to add the webhook route: %m");

        log_info("Webhook endpoint ready.");
        *ret = TAKE_PTR(w);
        return 0;
}

bool webhook_busy(Webhook *w) {
        return w && w->requests;
}

void webhook_set_idle_callback(Webhook *w, void (*idle)(void *userdata), void *userdata) {
        if (!w)
                return;
        w->idle = idle;
        w->idle_userdata = userdata;
}

Webhook* webhook_free(Webhook *w) {
        if (!w)
                return NULL;

        /* The HTTP front end, freed first, ended every request (webhook_done()). */
        while (w->requests)
                webhook_request_free(w->requests);
        rate_limiter_free(w->rate_limiter);
        replay_cache_free(w->replay_cache);
        webhook_key_free(w->secret);
        photon_secrets_free_all(&w->photon_secrets);
        return mfree(w);
}

void webhook_get_stats(Webhook *w, WebhookStats *ret) {
        assert(w);
        assert(ret);

        *ret = (WebhookStats) {
                .answers = w->answers,
                .n_answers = w->n_answers,
                .abandoned = w->n_abandoned,
        };
}

int webhook_add_status(Webhook *w, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = NULL, *rejected = NULL;
        const HttpStats *hs;
        unsigned in_flight = 0;
        int r;

        if (!w)
                return json_add_bool(data, "webhookEnabled", false);

        o = json_object_new_object();
        rejected = json_object_new_object();
        if (!o || !rejected)
                return -ENOMEM;

        hs = http_server_stats(w->http);
        for (WebhookReject i = 0; i < _WEBHOOK_REJECT_MAX; i++) {
                uint64_t n = i == WEBHOOK_REJECT_SOURCE ? hs->n_source_not_allowed :
                             i == WEBHOOK_REJECT_BAD_FRAMING ? hs->n_bad_framing :
                             i == WEBHOOK_REJECT_HEAD_TIMEOUT ? hs->n_head_timeout :
                             i == WEBHOOK_REJECT_EVICTED ? hs->n_evicted :
                             i == WEBHOOK_REJECT_TOO_MANY_CONNECTIONS ? hs->n_too_many_connections :
                             w->n_rejected[i];

                r = json_add_int64(rejected, webhook_reject_to_string(i), (int64_t) n);
                if (r < 0)
                        return r;
        }
        LIST_FOREACH(requests, wr, w->requests)
                if (wr->call)
                        in_flight++;

        if ((r = json_add_int64(o, "requests", (int64_t) hs->n_requests)) < 0 ||
            (r = json_add_int64(o, "succeeded", (int64_t) w->n_succeeded)) < 0 ||
            (r = json_add_int64(o, "failed", (int64_t) w->n_failed)) < 0 ||
            (r = json_add_int64(o, "abandoned", (int64_t) w->n_abandoned)) < 0 ||
            (r = json_add_int64(o, "inFlight", in_flight)) < 0 ||
            (r = json_add_int64(o, "connections", hs->n_connections)) < 0 ||
            (r = json_add(o, "rejected", TAKE_PTR(rejected))) < 0 ||
            (r = json_add_bool(o, "secretConfigured", w->secret || w->photon_secrets)) < 0 ||
            (r = json_add_bool(o, "allowUnauthenticated", w->allow_unauthenticated)) < 0)
                return r;

        if ((r = json_add_bool(data, "webhookEnabled", true)) < 0 ||
            (r = json_add(data, "webhook", TAKE_PTR(o))) < 0)
                return r;
        return 0;
}
