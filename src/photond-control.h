/* SPDX-License-Identifier: MIT */
#pragma once

/* The control front end: the control socket's NDJSON requests (photond-control*.c). */

#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "metrics.h"
#include "photond-client.h"
#include "photond-lock.h"
#include "photond-lock-view.h"
#include "photond-protocol.h"

typedef struct Channels Channels;
typedef struct Dispatcher Dispatcher;
typedef struct Manager Manager;

/* Handles one complete request line of a client (the ClientLineHandler the Manager installs). */
int control_handle_line(Client *c, const char *line, size_t len);

/* How a request was answered by the time its handler returned (the request counts, GET /metrics). */
typedef enum RequestOutcome {
        REQUEST_OUTCOME_OK,             /* answered: a result (success true or false), a pong, the events, … */
        REQUEST_OUTCOME_ERROR,          /* answered with an error line, or the handler failed */
        REQUEST_OUTCOME_PENDING,        /* not answered yet: the answer comes later (a lock wait, a command,
                                         * run_job, a prompt) or, for invoke_result, emit and prompt_response,
                                         * which get no answer of their own, never */
        _REQUEST_OUTCOME_MAX,
        _REQUEST_OUTCOME_INVALID = -EINVAL,
} RequestOutcome;

const char* request_outcome_to_string(RequestOutcome o);

/* The request counts' type of a line that is no valid request (not JSON, no id or type, an unknown type, a
 * required member missing): request_parse() refused it, so its type is not known. */
#define CONTROL_TYPE_INVALID _REQUEST_TYPE_MAX

/* The control front end's counters, kept by control_handle_line() in the Manager (m->control_stats): requests by
 * type (RequestType, or CONTROL_TYPE_INVALID) and outcome, and the time from the line being handled to its handler
 * returning. */
typedef struct ControlStats {
        uint64_t requests[_REQUEST_TYPE_MAX + 1][_REQUEST_OUTCOME_MAX];
        Histogram duration[_REQUEST_TYPE_MAX + 1];
} ControlStats;

void control_stats_init(ControlStats *s);
/* The label a type is counted under: request_type_to_string(), or "invalid". */
const char* control_stats_type_to_string(unsigned type);

/* ---- locks (photond-control-locks.c) ---- */

/* A lock backend other than the local LockTable: cluster mode's (photond-cluster-locks.c), which the Manager
 * chooses at construction. Without one (a single node) the requests go to the table as they always did; with one,
 * every lock request goes to it, after the same rules (holder, default timeout, bounds), and its answers come
 * later, in the shapes of the table's. */
typedef struct LockOp LockOp;

/* How an operation ended. */
typedef struct LockOpResult {
        /* 0: done (an acquire or transfer granted, a release, a query or list answered); -EBUSY: held by another
         * holder (lock: that lock); -EPERM: a release or transfer by someone who does not hold it (lock: the
         * holder's lock); -ETIME: lockWait ran out (lock: the holder's lock); -ENOSPC, -EXFULL, -EUSERS: a cap
         * (MAX_LOCKS, MAX_LOCK_WAITERS_PER_LOCK, MAX_LOCK_WAITERS); -ECANCELED: no answer is owed (the client went, photond is stopping); -ENOTCONN,
         * -ETIMEDOUT, -EIO: the backend could not decide (reason says why): never a grant. */
        int error;
        const char *reason;
        bool found;                     /* query_lock: there is a live lock (lock) */
        LockInfo lock;
        struct json_object *locks;      /* list_locks: the array (taken) */
} LockOpResult;

struct LockOp {
        /* the request as the rules made it; read-only for the backend */
        RequestType type;               /* lock, assign_lock, unlock, transfer_lock, query_lock, list_locks */
        const char *name, *holder, *transfer_to;
        uint64_t timeout_ms, wait_ms;
        void *backend_data;             /* the backend's */
        uint64_t backend_mark;          /* the backend's */

        /* the control front end's */
        LockViewDone view_done;         /* a list for another front end (control_lock_view_list()): no client */
        void *view_userdata;
        Client *client;                 /* NULL once it went */
        LIST_FIELDS(LockOp, ops);       /* on client->lock_ops */
        bool awaiting;                  /* holds the client's next request (client_await_begin()) */
        char *id;
        char data[];                    /* the strings */
};

typedef struct LockBackend {
        /* Starts op. It ends with exactly one lock_op_done(), which may come before submit returns. */
        void (*submit)(void *userdata, LockOp *op);
        /* op's client is gone: the backend ends op with -ECANCELED, at once when it is only waiting, else when
         * its answer comes. */
        void (*cancel)(void *userdata, LockOp *op);
        void *userdata;
} LockBackend;

/* The backend's answer to op, which is freed. */
void lock_op_done(LockOp *op, const LockOpResult *result);
/* op waits (lockWait): the client's next requests are answered meanwhile, as on a single node. */
void lock_op_parked(LockOp *op);
/* c is going: its operations still under way are cancelled (LockBackend.cancel). */
void control_lock_client_gone(const LockBackend *b, Client *c);
/* photond is stopping: c's operations still under way (parked waits too) are answered "Cluster unavailable:
 * photond is stopping" now and cancelled, so that a stop that keeps the connections leaves none unanswered. */
void control_lock_stop(const LockBackend *b, Client *c);

/* The lock/unlock fast path, offered every line before it is parsed: a plain lock or unlock line
 * (lock_request_parse_line()) is served without json-c objects. Returns 1 when the line was handled (and answered),
 * 0 when it is left to the general path (nothing done), or a negative errno as a handler does (-ENOMEM);
 * *ret_type (may be NULL): which of the two it was, once parsed. */
int control_lock_line(LockTable *t, const LockBackend *b, Client *c, const char *line, size_t len,
                      RequestType *ret_type);
/* lock, unlock, assign_lock, transfer_lock and query_lock after request_parse(): served by the same code as the
 * fast path's lines. */
int control_lock_request(LockTable *t, const LockBackend *b, Client *c, const Request *req);
int control_lock_list(LockTable *t, const LockBackend *b, Client *c, const Request *req);
/* LockView.list over the backend b (a const LockBackend*): a list_locks without a client, for D-Bus and HTTP. */
void control_lock_view_list(void *b, LockViewDone done, void *userdata);
/* Calls cb with the id of each lock request c waits for (lockWait), oldest first; stops at cb's first negative
 * return and returns it (a stop that keeps the connections writes them down: photond-fdstore.c). */
int control_lock_foreach_wait(Client *c, int (*cb)(const char *request_id, void *userdata), void *userdata);

/* ---- channels: photond-control-channels.c ---- */

/* Cluster mode: calls cb with the id of each publish, subscribe with lastEventId or get_events_since c waits for
 * Redis' answer to, oldest first; stops at cb's first negative return and returns it (photond-fdstore.c). */
int control_channels_foreach_deferred(Client *c, int (*cb)(const char *request_id, void *userdata),
                                      void *userdata);

/* The pub/sub requests, handled for c as the channels' Subscriber, and answered to c. */
int control_channels_subscribe(Channels *chs, Client *c, Request *req);
int control_channels_unsubscribe(Channels *chs, Client *c, Request *req);
int control_channels_publish(Channels *chs, Client *c, Request *req);
int control_channels_get_events_since(Channels *chs, Client *c, Request *req);

/* The publish fast path, offered every request line before it is parsed: a publish that request_scan_publish()
 * takes is handled in place, building no JSON objects, and 1 returned. Anything else, or anything that would be
 * refused, gives 0 and takes the general path, which then answers exactly as it always does. -ENOMEM on
 * allocation failure. */
int control_channels_publish_line(Channels *chs, Client *c, const char *line, size_t len);

/* ---- method calls (photond-control-calls.c): a Client as the dispatcher's DispatchPeer ---- */

int control_calls_command(Manager *m, Client *c, Request *req);
int control_calls_provide(Manager *m, Client *c, Request *req);
int control_calls_invoke_result(Manager *m, Client *c, Request *req);
int control_calls_emit(Manager *m, Client *c, Request *req);
int control_calls_prompt(Manager *m, Client *c, Request *req);
int control_calls_prompt_response(Manager *m, Client *c, Request *req);
int control_calls_ps(Manager *m, Client *c, Request *req);
/* c provides photon again: a connection kept across a restart (photond-fdstore.c). As dispatcher_provide(). */
int control_calls_restore_provider(Dispatcher *d, Client *c, const char *photon);

/* ---- scheduled jobs (photond-control-jobs.c): a run_job requester waits as the scheduler's waiter c ---- */

int control_jobs_schedule(Manager *m, Client *c, Request *req);
int control_jobs_unschedule(Manager *m, Client *c, Request *req);
int control_jobs_list(Manager *m, Client *c, Request *req);
int control_jobs_set_state(Manager *m, Client *c, Request *req);     /* enable|disable|pause|resume_schedule */
int control_jobs_get_execution_history(Manager *m, Client *c, Request *req);
int control_jobs_run_job(Manager *m, Client *c, Request *req);
