/* SPDX-License-Identifier: MIT */

/* The JSON API routes (/v1/…). They answer with the JSON the control socket answers with (the cores' lists, the
 * Manager's status object), never a field list of their own, and change things through the same core calls as
 * the D-Bus admin methods (photond-bus.c). An answer that reports a change leaves once the change is saved
 * (http_respond_saved()), as a socket reply does. */

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-http-api.h"
#include "photond-http.h"
#include "photond-lock.h"
#include "photond-schedule.h"

struct HttpApi {
        HttpApiConfig config;
};

/* {key: list} from a core's list (a new array, taken over). */
static int respond_list(HttpRequest *req, const char *key, int r, struct json_object *array) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        if (r < 0)
                return r;
        o = json_object_new_object();
        if (!o) {
                json_object_put(array);
                return -ENOMEM;
        }
        r = json_add(o, key, array);
        if (r < 0)
                return r;
        return http_respond(req, MHD_HTTP_OK, o, NULL);
}

/* GET /v1/status: the status request's data (socket status, D-Bus GetStatus). */
static int on_status(HttpRequest *req, void *userdata) {
        HttpApi *a = userdata;
        _cleanup_(json_object_putp) struct json_object *status = NULL;
        int r;

        r = a->config.build_status(a->config.userdata, &status);
        if (r < 0)
                return r;
        return http_respond(req, MHD_HTTP_OK, status, NULL);
}

/* A list of the lock view under way: the request may end first (the client left), req is then NULL. */
typedef struct HttpLockList {
        HttpRequest *req;
        bool in_call;                   /* within LockView.list(): an answer now is given by on_locks() */
        bool answered_now;
        int error;
        char *reason;
        struct json_object *locks;
} HttpLockList;

/* {locks: […]} (taken), or {error: "Cluster unavailable: …"} with 503; NULL status 0 when nobody needs one. */
static struct json_object* lock_list_answer(int error, const char *reason, struct json_object *locks,
                                            unsigned *ret_status) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object(), *a = locks;
        _cleanup_free_ char *text = NULL;

        *ret_status = 0;
        if (!o || error == -ECANCELED)
                return NULL;
        if (error < 0) {
                if (asprintf(&text, "Cluster unavailable: %s", reason ?: "unknown error") < 0 ||
                    json_add_string(o, "error", text) < 0)
                        return NULL;
                *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        } else {
                if (json_add(o, "locks", TAKE_PTR(a)) < 0)
                        return NULL;
                *ret_status = MHD_HTTP_OK;
        }
        return TAKE_PTR(o);
}

static void on_lock_list_done(int error, const char *reason, struct json_object *locks, void *userdata) {
        HttpLockList *l = userdata;
        struct json_object *o;
        unsigned status;

        if (l->in_call) {
                l->answered_now = true;
                l->error = error;
                l->reason = reason ? strdup(reason) : NULL;
                l->locks = locks;
                return;
        }
        if (l->req) {
                http_request_set_data(l->req, NULL);
                o = lock_list_answer(error, reason, locks, &status);
                http_request_finish(l->req, o ? status : 0, o);
        } else
                json_object_put(locks);
        free(l);
}

static void on_locks_done(HttpRequest *req, void *userdata) {
        HttpLockList *l = http_request_get_data(req);

        /* Still waiting for the backend, which frees l when it answers. */
        if (l)
                l->req = NULL;
}

/* GET /v1/locks: list_locks' data; in cluster mode the cluster's, from Redis. */
static int on_locks(HttpRequest *req, void *userdata) {
        HttpApi *a = userdata;
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *array = NULL;
        HttpLockList *l;
        unsigned status;
        int r;

        if (!a->config.lock_view) {
                r = lock_table_list(a->config.locks, &array);
                return respond_list(req, "locks", r, array);
        }

        l = new0(HttpLockList, 1);
        if (!l)
                return -ENOMEM;
        l->req = req;
        l->in_call = true;
        a->config.lock_view->list(a->config.lock_view->userdata, on_lock_list_done, l);
        l->in_call = false;
        if (!l->answered_now) {
                http_request_set_data(req, l);
                http_request_suspend(req);
                return 0;
        }
        /* Answered at once (Redis is known to be down). */
        o = lock_list_answer(l->error, l->reason, l->locks, &status);
        free(l->reason);
        free(l);
        if (!o)
                return -ENOMEM;
        return http_respond(req, status, o, NULL);
}

/* GET /v1/jobs: list_jobs' data. */
static int on_jobs(HttpRequest *req, void *userdata) {
        HttpApi *a = userdata;
        struct json_object *array = NULL;
        int r;

        r = scheduler_list(a->config.scheduler, &array);
        return respond_list(req, "jobs", r, array);
}

/* GET /v1/channels: every channel key as status' channelList (D-Bus ListChannels, with bufferedBytes). */
static int on_channels(HttpRequest *req, void *userdata) {
        HttpApi *a = userdata;
        struct json_object *array = NULL;
        int r;

        r = channels_list(a->config.channels, &array);
        return respond_list(req, "channels", r, array);
}

/* Cluster mode: a publish answered when Redis has it (channels_publish_deferred()). The request may end first
 * (the client left): req is then NULL, and the answer goes nowhere. */
typedef struct HttpPublish {
        HttpRequest *req;
        char *channel;
        bool in_call;                   /* within channels_publish_deferred(): an answer now is kept for it */
        bool answered_now;
        int error;
        char *reason;
} HttpPublish;

/* The answer's body: {published, channel, eventId}, or {error: "Cluster unavailable: …"}. */
static struct json_object* publish_answer_new(const char *channel, int error, const char *reason,
                                              uint64_t event_id) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        _cleanup_free_ char *text = NULL;

        if (!o)
                return NULL;
        if (error < 0) {
                if (asprintf(&text, "Cluster unavailable: %s", reason ?: "unknown error") < 0 ||
                    json_add_string(o, "error", text) < 0)
                        return NULL;
        } else if (json_add_bool(o, "published", true) < 0 || json_add_string(o, "channel", channel) < 0 ||
                   json_add_int64(o, "eventId", (int64_t) event_id) < 0)
                return NULL;
        return TAKE_PTR(o);
}

static void on_publish_answered(Subscriber *unused, int error, const char *reason, uint64_t event_id,
                                void *userdata) {
        HttpPublish *p = userdata;
        struct json_object *o;

        if (p->in_call) {
                /* A refusal at once: on_publish() answers it and frees p. */
                p->answered_now = true;
                p->error = error;
                p->reason = reason ? strdup(reason) : NULL;
                return;
        }
        if (p->req) {
                http_request_set_data(p->req, NULL);
                o = publish_answer_new(p->channel, error, reason, event_id);
                http_request_finish(p->req, !o ? 0 : error < 0 ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, o);
        }
        free(p->channel);
        free(p);
}

static void on_publish_done(HttpRequest *req, void *userdata) {
        HttpPublish *p = http_request_get_data(req);

        /* Still waiting for the backend, which frees p when it answers. */
        if (p)
                p->req = NULL;
}

/* POST /v1/channels/{channel}: the body (JSON) is the message; an empty body publishes none, as a publish
 * without "message". Answered as publish's data: {published, channel, eventId}. */
static int on_publish(HttpRequest *req, void *userdata) {
        HttpApi *a = userdata;
        _cleanup_(json_object_putp) struct json_object *msg = NULL, *o = NULL;
        const char *channel = http_request_capture(req, "channel"), *body, *jerr = NULL, *limit;
        uint64_t event_id = 0;
        unsigned status;
        size_t len;
        char text[256], error[320];
        int r;

        assert(channel);

        body = http_request_body(req, &len);
        if (len > 0) {
                r = json_parse(body, len, &msg, &jerr);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        snprintf(error, sizeof(error), "Invalid JSON body: %s", jerr ?: "syntax error");
                        return http_respond_error(req, MHD_HTTP_BAD_REQUEST, error, NULL);
                }
        }

        if (channels_deferred(a->config.channels)) {
                HttpPublish *p = new0(HttpPublish, 1);
                const char *text_msg = NULL;
                size_t text_len = 0;

                if (!p || !(p->channel = strdup(channel))) {
                        free(p);
                        return -ENOMEM;
                }
                if (msg && !(text_msg = json_object_to_json_string_length(msg, JSON_FORMAT_FLAGS, &text_len))) {
                        free(p->channel);
                        free(p);
                        return -ENOMEM;
                }
                p->req = req;
                p->in_call = true;
                r = channels_publish_deferred(a->config.channels, channel, strlen(channel), text_msg, text_len,
                                              NULL, on_publish_answered, p);
                p->in_call = false;
                if (r >= 0 && !p->answered_now) {
                        http_request_set_data(req, p);
                        http_request_suspend(req);
                        return 0;
                }
                /* Refused at once: by a cap before the backend saw it, or by the backend. */
                if (r >= 0) {
                        o = publish_answer_new(channel, p->error, p->reason, 0);
                        free(p->reason);
                }
                free(p->channel);
                free(p);
                if (r >= 0)
                        /* o goes with the function's cleanup. */
                        return o ? http_respond(req, MHD_HTTP_SERVICE_UNAVAILABLE, o, NULL) : -ENOMEM;
                limit = channels_limit_error(r, channel, msg, text, sizeof(text));
                if (!limit)
                        return r;
                return http_respond_error(req, r == -EMSGSIZE ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST,
                                          limit, NULL);
        }

        r = channels_publish(a->config.channels, channel, msg, NULL, &event_id);
        /* The limits answer with the socket's text. */
        limit = channels_limit_error(r, channel, msg, text, sizeof(text));
        if (limit) {
                status = r == -ENOSPC ? MHD_HTTP_SERVICE_UNAVAILABLE :
                         r == -EMSGSIZE ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST;
                return http_respond_error(req, status, limit, NULL);
        }
        if (r < 0)
                return r;

        o = json_object_new_object();
        if (!o ||
            json_add_bool(o, "published", true) < 0 ||
            json_add_string(o, "channel", channel) < 0 ||
            json_add_int64(o, "eventId", (int64_t) event_id) < 0)
                return -ENOMEM;
        /* The eventId may come from a block reserved just now: it leaves once the mark is saved. */
        return http_respond_saved(req, MHD_HTTP_OK, TAKE_PTR(o));
}

/* POST /v1/jobs/{jobId}/run: D-Bus RunJob. */
static int on_run_job(HttpRequest *req, void *userdata) {
        HttpApi *a = userdata;
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        const char *id = http_request_capture(req, "jobId");
        char error[512];
        int r;

        assert(id);

        r = scheduler_run_job(a->config.scheduler, id, NULL, NULL, NULL);
        if (r == -ENOENT) {
                snprintf(error, sizeof(error), "No job '%s'.", id);
                return http_respond_error(req, MHD_HTTP_NOT_FOUND, error, NULL);
        }
        if (r == -EBUSY) {
                snprintf(error, sizeof(error), "Job '%s' is running already.", id);
                return http_respond_error(req, MHD_HTTP_CONFLICT, error, NULL);
        }
        if (r < 0)
                return r;
        log_info("Job '%s' run over HTTP.", id);

        o = json_object_new_object();
        if (!o || json_add_bool(o, "started", true) < 0 || json_add_string(o, "jobId", id) < 0)
                return -ENOMEM;
        return http_respond_saved(req, MHD_HTTP_ACCEPTED, TAKE_PTR(o));
}

/* DELETE /v1/locks/{name}: D-Bus ReleaseLock (waiters are served as after an unlock). */
static int on_release_lock(HttpRequest *req, void *userdata) {
        HttpApi *a = userdata;
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        const char *name = http_request_capture(req, "name");
        char error[512];
        int r;

        assert(name);

        if (a->config.lock_view)
                return http_respond_error(req, MHD_HTTP_NOT_IMPLEMENTED, CLUSTER_FORCE_RELEASE_REFUSAL, NULL);

        r = lock_table_force_release(a->config.locks, name);
        if (r == -ENOENT) {
                snprintf(error, sizeof(error), "No live lock named '%s'.", name);
                return http_respond_error(req, MHD_HTTP_NOT_FOUND, error, NULL);
        }
        if (r < 0)
                return r;
        log_info("Lock '%s' released over HTTP.", name);

        o = json_object_new_object();
        if (!o || json_add_bool(o, "released", true) < 0 || json_add_string(o, "lockName", name) < 0)
                return -ENOMEM;
        return http_respond_saved(req, MHD_HTTP_OK, TAKE_PTR(o));
}

int http_api_new(HttpServer *http, const HttpApiConfig *config, HttpApi **ret) {
        _cleanup_(http_api_freep) HttpApi *a = NULL;
        /* cors and auth stay at their defaults: the origin allowlist and the API token. */
        static const HttpRoute routes[] = {
                { .method = "GET",    .pattern = "/v1/status",              .complete = on_status },
                { .method = "GET",    .pattern = "/v1/locks",               .complete = on_locks,
                  .done = on_locks_done },
                { .method = "DELETE", .pattern = "/v1/locks/{name*}",       .complete = on_release_lock },
                { .method = "GET",    .pattern = "/v1/jobs",                .complete = on_jobs },
                { .method = "POST",   .pattern = "/v1/jobs/{jobId}/run",    .complete = on_run_job },
                { .method = "GET",    .pattern = "/v1/channels",            .complete = on_channels },
                { .method = "POST",   .pattern = "/v1/channels/{channel*}", .complete = on_publish,
                  .done = on_publish_done },
        };
        int r;

        assert(http);
        assert(config);
        assert(config->channels && config->locks && config->scheduler && config->build_status);
        assert(ret);

        a = new0(HttpApi, 1);
        if (!a)
                return log_oom();
        a->config = *config;

        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                HttpRoute route = routes[i];

                route.userdata = a;
                r = http_server_add_route(http, &route);
                if (r < 0)
                        return log_error_errno(r, "Failed to add the route %s %s: %m", route.method, route.pattern);
        }

        *ret = TAKE_PTR(a);
        return 0;
}

HttpApi* http_api_free(HttpApi *a) {
        return mfree(a);
}
