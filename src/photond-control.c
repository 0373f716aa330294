/* SPDX-License-Identifier: MIT */

/* The control front end: the NDJSON requests of the control socket. Every line a Client reads comes here, is
 * parsed by photond-protocol.c into a typed Request and handed to the handler of its type, which calls a core and
 * answers the Client. The cores know nothing of this file. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "json-util.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-dispatch.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-protocol.h"
#include "photond-schedule.h"
#include "string-util.h"

/* ---- requests of the daemon itself ---- */

static int handle_not_supported(Manager *m, Client *c, Request *req) {
        char msg[128];

        /* Reference features tied to its TypeScript runtime, which photond does not host. */
        snprintf(msg, sizeof(msg), "Not supported by photond: %s", request_type_to_string(req->type));
        return client_reply_error(c, req->id, msg, "See photond's docs/protocol.md for the supported requests");
}

static int handle_ping(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *o = response_pong_new(req->id);

        return client_send_json(c, o);
}

static int handle_status(Manager *m, Client *c, Request *req) {
        struct json_object *data = NULL;
        int r;

        r = manager_build_status(m, &data);
        if (r < 0)
                return r;

        /* photond extension: "channelList":true adds the channel table (photonctl channels). */
        struct json_object *v, *list = NULL;
        if (json_object_object_get_ex(req->json, "channelList", &v) && json_object_get_boolean(v)) {
                r = channels_list(m->channels, &list);
                if (r >= 0)
                        r = json_add(data, "channelList", list);
                if (r < 0) {
                        json_object_put(data);
                        return r;
                }
        }
        return client_reply_result(c, req->id, true, data);
}

static int handle_shutdown(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *data = NULL;

        /* The reference lets anyone who can connect stop it; photond only its own user and root. */
        if (c->ucred.uid != geteuid() && c->ucred.uid != 0)
                return client_reply_error(c, req->id,
                                          "Permission denied: only the daemon's user or root may shut it down",
                                          NULL);

        log_info("Shutdown requested by client %" PRIu64 " (pid %d, uid %u).",
                 c->serial, (int) c->ucred.pid, (unsigned) c->ucred.uid);
        manager_begin_shutdown(m, "shutdown request");

        data = json_object_new_object();
        if (!data || json_add_string(data, "message", "Shutting down") < 0)
                return -ENOMEM;
        return client_reply_result(c, req->id, true, TAKE_PTR(data));
}

/* ---- the areas' requests: each is handed the core it serves ---- */

static int handle_subscribe(Manager *m, Client *c, Request *req) {
        return control_channels_subscribe(m->channels, c, req);
}

static int handle_unsubscribe(Manager *m, Client *c, Request *req) {
        return control_channels_unsubscribe(m->channels, c, req);
}

static int handle_publish(Manager *m, Client *c, Request *req) {
        return control_channels_publish(m->channels, c, req);
}

static int handle_get_events_since(Manager *m, Client *c, Request *req) {
        return control_channels_get_events_since(m->channels, c, req);
}

/* The lock requests' front end (photond-control-locks.c) is given the table, not the Manager. */
static int handle_lock_request(Manager *m, Client *c, Request *req) {
        return control_lock_request(m->locks, m->lock_backend, c, req);
}

static int handle_list_locks(Manager *m, Client *c, Request *req) {
        return control_lock_list(m->locks, m->lock_backend, c, req);
}

typedef int (*RequestHandler)(Manager *m, Client *c, Request *req);

static const RequestHandler request_handlers[_REQUEST_TYPE_MAX] = {
        [REQUEST_PING] = handle_ping,
        [REQUEST_STATUS] = handle_status,
        [REQUEST_SHUTDOWN] = handle_shutdown,

        [REQUEST_SUBSCRIBE] = handle_subscribe,
        [REQUEST_UNSUBSCRIBE] = handle_unsubscribe,
        [REQUEST_PUBLISH] = handle_publish,
        [REQUEST_GET_EVENTS_SINCE] = handle_get_events_since,

        [REQUEST_LOCK] = handle_lock_request,
        [REQUEST_UNLOCK] = handle_lock_request,
        [REQUEST_ASSIGN_LOCK] = handle_lock_request,
        [REQUEST_TRANSFER_LOCK] = handle_lock_request,
        [REQUEST_QUERY_LOCK] = handle_lock_request,
        [REQUEST_LIST_LOCKS] = handle_list_locks,

        [REQUEST_SCHEDULE] = control_jobs_schedule,
        [REQUEST_UNSCHEDULE] = control_jobs_unschedule,
        [REQUEST_LIST_JOBS] = control_jobs_list,
        [REQUEST_ENABLE_SCHEDULE] = control_jobs_set_state,
        [REQUEST_DISABLE_SCHEDULE] = control_jobs_set_state,
        [REQUEST_PAUSE_SCHEDULE] = control_jobs_set_state,
        [REQUEST_RESUME_SCHEDULE] = control_jobs_set_state,
        [REQUEST_GET_EXECUTION_HISTORY] = control_jobs_get_execution_history,
        [REQUEST_RUN_JOB] = control_jobs_run_job,

        [REQUEST_COMMAND] = control_calls_command,
        [REQUEST_PROVIDE] = control_calls_provide,
        [REQUEST_INVOKE_RESULT] = control_calls_invoke_result,
        [REQUEST_EMIT] = control_calls_emit,
        [REQUEST_PROMPT] = control_calls_prompt,
        [REQUEST_PROMPT_RESPONSE] = control_calls_prompt_response,
        [REQUEST_PS] = control_calls_ps,

        [REQUEST_RELOAD] = handle_not_supported,
        [REQUEST_CLEAR_INSTANCES] = handle_not_supported,
        [REQUEST_GET_CIRCUIT_HEALTH] = handle_not_supported,
        [REQUEST_ADD_MANUAL_SCHEDULE] = handle_not_supported,
        [REQUEST_ENABLE_LINE] = handle_not_supported,
        [REQUEST_DISABLE_LINE] = handle_not_supported,
        [REQUEST_PAUSE_LINE] = handle_not_supported,
        [REQUEST_RESUME_LINE] = handle_not_supported,
        [REQUEST_GET_LINE_HISTORY] = handle_not_supported,
};

/* ---- request counts ---- */

static const char *const request_outcome_table[_REQUEST_OUTCOME_MAX] = {
        [REQUEST_OUTCOME_OK] = "ok",
        [REQUEST_OUTCOME_ERROR] = "error",
        [REQUEST_OUTCOME_PENDING] = "pending",
};

const char* request_outcome_to_string(RequestOutcome o) {
        return o >= 0 && o < _REQUEST_OUTCOME_MAX ? request_outcome_table[o] : NULL;
}

void control_stats_init(ControlStats *s) {
        *s = (ControlStats) {};
        for (unsigned t = 0; t <= CONTROL_TYPE_INVALID; t++)
                histogram_init(&s->duration[t], histogram_request_bounds, histogram_request_n_bounds);
}

const char* control_stats_type_to_string(unsigned type) {
        return type == CONTROL_TYPE_INVALID ? "invalid" : request_type_to_string(type);
}

/* ---- a request line ---- */

/* Serves one line; *ret_type says what it was (CONTROL_TYPE_INVALID until it is known). */
static int serve_line(Manager *m, Client *c, const char *line, size_t len, unsigned *ret_type) {
        _cleanup_(request_freep) Request *req = NULL;
        _cleanup_free_ char *error = NULL, *id = NULL;
        RequestType type;
        const char *session;
        int r;

        /* The hot paths: a plain publish, lock or unlock is handled without building JSON objects. Whatever they
         * do not take is parsed and dispatched below as usual. */
        if (!m->shutting_down) {
                r = control_channels_publish_line(m->channels, c, line, len);
                if (r != 0) {
                        *ret_type = REQUEST_PUBLISH;
                        return r < 0 ? r : 0;
                }
                r = control_lock_line(m->locks, m->lock_backend, c, line, len, &type);
                if (r != 0) {
                        *ret_type = type;
                        return r < 0 ? r : 0;
                }
        }

        r = request_parse(line, len, &req, &error, &id);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return client_reply_error(c, id, error, NULL);
        *ret_type = req->type;

        session = request_string(req, "sessionId");
        if (session)
                client_note_session(c, session);

        if (m->shutting_down && req->type != REQUEST_PING && req->type != REQUEST_SHUTDOWN)
                return client_reply_error(c, req->id, "Daemon is shutting down", "Retry after the daemon restarts");

        r = request_handlers[req->type](m, c, req);
        if (r == -ENOMEM)
                return r;
        if (r < 0 && !c->disconnected) {
                char msg[256];

                log_warning_errno(r, "Request '%s' (%s) from client %" PRIu64 " failed: %m",
                                  req->id, request_type_to_string(req->type), c->serial);
                snprintf(msg, sizeof(msg), "Internal error: %s", strerror(ERRNO_VALUE(r)));
                (void) client_reply_error(c, req->id, msg, NULL);
        }
        if (r < 0)
                c->answered_error = true;       /* counted as an error, whether that answer went out or not */
        return 0;
}

int control_handle_line(Client *c, const char *line, size_t len) {
        Manager *m = c->manager;
        ControlStats *st = &m->control_stats;
        unsigned type = CONTROL_TYPE_INVALID;
        RequestOutcome outcome;
        uint64_t start;
        int r;

        m->n_requests++;
        m->request_changes = m->state_changes;

        /* Two reads of the vDSO clock per request: tests/bench/ab.sh measured what they cost (docs/performance.md,
         * "GET /metrics"). */
        start = now_usec(CLOCK_MONOTONIC);
        c->answered = c->answered_error = false;
        r = serve_line(m, c, line, len, &type);
        outcome = r < 0 || c->answered_error ? REQUEST_OUTCOME_ERROR :
                  c->answered ? REQUEST_OUTCOME_OK : REQUEST_OUTCOME_PENDING;
        st->requests[type][outcome]++;
        histogram_observe(&st->duration[type], now_usec(CLOCK_MONOTONIC) - start);
        return r;
}
