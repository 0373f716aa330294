/* SPDX-License-Identifier: MIT */

/* The control front end's lock requests: lock, unlock, assign_lock, transfer_lock, query_lock and list_locks, served
 * from the LockTable (photond-lock.c). Both parses end here: a plain lock or unlock line straight from its bytes
 * (control_lock_line(), the fast path, before the line is parsed) and every other lock request after
 * request_parse() (control_lock_request()). Each is a LockRequest (photond-protocol.h), and serve() applies the
 * protocol's rules to it, once for both: which member names the holder, the default timeout, the wait's bounds,
 * the session a request names. The table knows nothing of requests or connections: a parked acquire is answered
 * through its LockWaitOps. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "log.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-protocol.h"
#include "shared-buf.h"

/* ---- the rules ---- */

/* `lock` takes the holder from sessionId || id (the reference ignores lockHolder there); the other requests from
 * lockHolder || sessionId || id. Empty strings fall through, as with JavaScript's ||. */
static const char* lock_request_holder(const LockRequest *r) {
        if (r->type != REQUEST_LOCK && r->holder && r->holder[0])
                return r->holder;
        if (r->session && r->session[0])
                return r->session;
        return r->id;
}

/* The reference's `lockTimeout || 30000`: absent and 0 mean the default. (The table clamps what is too long.) */
static uint64_t lock_request_timeout(const LockRequest *r) {
        return r->timeout_ms ?: limits.LOCK_DEFAULT_TIMEOUT_MS;
}

static int reply_bad_timeout(Client *c, const char *id) {
        return client_reply_error(c, id,
                                  "Invalid request format: lockTimeout must be a non-negative number of milliseconds",
                                  NULL);
}

static int reply_bad_wait(Client *c, const char *id) {
        char msg[160];

        snprintf(msg, sizeof(msg), "Invalid request format: lockWait must be a number of milliseconds from 0 to %"
                 PRIu64, limits.MAX_LOCK_WAIT_MS);
        return client_reply_error(c, id, msg, NULL);
}

/* ---- the answers of lock, assign_lock and unlock ---- */

/* Written as bytes, with no json-c objects: on the fast path building them cost more than the rest of the request,
 * and one writer serves both paths and the answers to waits. The keys are the reference's, in its order, then
 * photond's fencingToken; json_put_string() writes a string as json-c does. */
typedef struct LockAnswer {
        const char *id;
        bool success;
        bool release;                   /* "released" rather than "acquired" */
        const char *name;
        const char *holder;             /* the requester's; NULL in a release's answer */
        uint64_t token;                 /* with a granted acquire */
        const char *reason;             /* with a refusal: one of our texts, which need no escaping */
        const char *current_holder;     /* with assign_lock's refusal */
} LockAnswer;

#define LOCK_ANSWER_FIXED_SIZE \
        sizeof("{\"type\":\"result\",\"id\":,\"success\":false,\"data\":{\"acquired\":false,\"lockName\":," \
               "\"holder\":,\"fencingToken\":,\"reason\":,\"currentHolder\":}}\n")

static size_t string_size_max(const char *s) {
        return s ? JSON_STRING_SIZE_MAX(strlen(s)) : 0;
}

static int send_answer(Client *c, const LockAnswer *a) {
        _cleanup_(shared_buf_unrefp) SharedBuf *b = NULL;
        _cleanup_free_ char *heap = NULL;
        /* Room for any answer of the fast path: its id, name and holder come from a line shorter than
         * LOCK_LINE_MAX (the holder may be the id again), the reason is one of ours. */
        char stack[LOCK_ANSWER_FIXED_SIZE + JSON_INT64_SIZE_MAX + 2 * JSON_STRING_SIZE_MAX(LOCK_LINE_MAX) +
                   JSON_STRING_SIZE_MAX(64)];
        char *buf = stack, *p;
        size_t max;

        max = LOCK_ANSWER_FIXED_SIZE + JSON_INT64_SIZE_MAX + string_size_max(a->id) + string_size_max(a->name) +
                string_size_max(a->holder) + (a->reason ? strlen(a->reason) + 2 : 0) + string_size_max(a->current_holder);
        if (max > sizeof(stack)) {
                buf = heap = malloc(max);
                if (!heap)
                        return -ENOMEM;
        }

        p = stpcpy(buf, "{\"type\":\"result\",\"id\":");
        p = json_put_string(p, a->id);
        p = stpcpy(p, a->success ? ",\"success\":true,\"data\":{" : ",\"success\":false,\"data\":{");
        p = stpcpy(p, a->release ? "\"released\":" : "\"acquired\":");
        p = stpcpy(p, a->success ? "true,\"lockName\":" : "false,\"lockName\":");
        p = json_put_string(p, a->name);
        if (a->holder) {
                p = stpcpy(p, ",\"holder\":");
                p = json_put_string(p, a->holder);
        }
        if (a->success && !a->release) {
                p = stpcpy(p, ",\"fencingToken\":");
                p = json_put_int64(p, (int64_t) a->token);
        }
        if (a->reason) {
                p = stpcpy(p, ",\"reason\":\"");
                p = stpcpy(p, a->reason);
                *p++ = '"';
        }
        if (a->current_holder) {
                p = stpcpy(p, ",\"currentHolder\":");
                p = json_put_string(p, a->current_holder);
        }
        p = stpcpy(p, "}}\n");

        b = shared_buf_new(buf, p - buf);
        if (!b)
                return -ENOMEM;
        return client_send(c, b, NULL);
}

static int send_acquired(Client *c, const char *id, const char *name, const char *holder, uint64_t token) {
        return send_answer(c, &(LockAnswer) {
                        .id = id,
                        .success = true,
                        .name = name,
                        .holder = holder,
                        .token = token,
                });
}

static int send_refused(Client *c, RequestType type, const char *id, const char *name, const char *holder,
                        const char *current) {
        bool assign = type == REQUEST_ASSIGN_LOCK;

        /* The two texts differ in the reference ("client" / "caller"); clients may match them. */
        return send_answer(c, &(LockAnswer) {
                        .id = id,
                        .name = name,
                        .holder = holder,
                        .reason = assign ? "Lock held by another caller" : "Lock held by another client",
                        .current_holder = assign ? current : NULL,
                });
}

static int send_released(Client *c, const char *id, const char *name, bool success) {
        return send_answer(c, &(LockAnswer) {
                        .id = id,
                        .success = success,
                        .release = true,
                        .name = name,
                        .reason = success ? NULL : "Cannot release lock held by another client",
                });
}

/* Caps and allocation failures of the table as error replies; other errors go to control_handle_line(). */
static int reply_table_error(Client *c, const char *id, int r, const char *name, const char *holder) {
        switch (r) {
        case -ENAMETOOLONG:
                return client_reply_limit(c, id, LIMIT_MAX_LOCK_NAME_BYTES, strlen(name));
        case -EMSGSIZE:
                return client_reply_limit(c, id, LIMIT_MAX_LOCK_HOLDER_BYTES, strlen(holder));
        case -ENOSPC:
                return client_reply_limit(c, id, LIMIT_MAX_LOCKS, UINT64_MAX);
        default:
                return r;
        }
}

static int reply_wait_error(Client *c, const char *id, int r, const char *name, const char *holder) {
        switch (r) {
        case -EXFULL:
                return client_reply_limit(c, id, LIMIT_MAX_LOCK_WAITERS_PER_LOCK, UINT64_MAX);
        case -ENOSPC:
                return client_reply_limit(c, id, LIMIT_MAX_LOCK_WAITERS, UINT64_MAX);
        default:
                return reply_table_error(c, id, r, name, holder);
        }
}

/* ---- waiting acquires (lockWait) ---- */

/* What the answer to a parked acquire needs; the table hands it back to one of the ops below, which free it. */
typedef struct PendingAcquire {
        Client *client;
        RequestType type;               /* lock or assign_lock: the refusal's shape */
        char id[];
} PendingAcquire;

static void on_wait_granted(void *userdata, const LockInfo *lock) {
        _cleanup_free_ PendingAcquire *w = userdata;

        (void) send_acquired(w->client, w->id, lock->name, lock->holder, lock->fencing_token);
}

static void on_wait_failed(void *userdata, int error, const char *holder, const LockInfo *lock) {
        _cleanup_free_ PendingAcquire *w = userdata;

        /* -ECANCELED: the client is going (or gone, when the table ends after it); nothing is owed to it. */
        if (error == -ECANCELED)
                return;
        (void) send_refused(w->client, w->type, w->id, lock->name, holder, lock->holder);
}

static const LockWaitOps pending_acquire_ops = {
        .granted = on_wait_granted,
        .failed = on_wait_failed,
};

typedef struct WaitIdCallback {
        int (*cb)(const char *request_id, void *userdata);
        void *userdata;
} WaitIdCallback;

static int on_pending_acquire(void *userdata, void *cb_userdata) {
        PendingAcquire *w = userdata;
        WaitIdCallback *c = cb_userdata;

        return c->cb(w->id, c->userdata);
}

int control_lock_foreach_wait(Client *c, int (*cb)(const char *request_id, void *userdata), void *userdata) {
        return lock_table_foreach_owner_wait(&c->lock_waits, on_pending_acquire,
                                             &(WaitIdCallback) { cb, userdata });
}

static int lock_wait(LockTable *t, Client *c, const LockRequest *r, const char *holder, const LockTime *now) {
        _cleanup_free_ PendingAcquire *w = NULL;
        size_t n = strlen(r->id);
        int k;

        w = malloc(offsetof(PendingAcquire, id) + n + 1);
        if (!w)
                return -ENOMEM;
        w->client = c;
        w->type = r->type;
        memcpy(w->id, r->id, n + 1);

        k = lock_table_wait(t, r->name, holder, lock_request_timeout(r), r->wait_ms, now, &c->lock_waits,
                            &pending_acquire_ops, w);
        if (k < 0)
                return reply_wait_error(c, r->id, k, r->name, holder);
        TAKE_PTR(w);
        return 0;
}

/* ---- another backend (cluster mode): the same rules, the answers later ---- */

static const char* dup_into(char **p, const char *s) {
        char *start = *p;

        if (!s)
                return NULL;
        *p = stpcpy(*p, s) + 1;
        return start;
}

static int backend_submit(const LockBackend *b, Client *c, RequestType type, const char *id, const char *name,
                          const char *holder, const char *to, uint64_t timeout_ms, uint64_t wait_ms) {
        size_t n = strlen(id) + 1 + (name ? strlen(name) + 1 : 0) + (holder ? strlen(holder) + 1 : 0) +
                (to ? strlen(to) + 1 : 0);
        LockOp *op;
        char *p;

        op = malloc(offsetof(LockOp, data) + n);
        if (!op)
                return -ENOMEM;
        *op = (LockOp) {
                .type = type,
                .timeout_ms = timeout_ms,
                .wait_ms = wait_ms,
                .client = c,
                .awaiting = true,
        };
        p = op->data;
        op->id = (char *) dup_into(&p, id);
        op->name = dup_into(&p, name);
        op->holder = dup_into(&p, holder);
        op->transfer_to = dup_into(&p, to);

        LIST_PREPEND(ops, c->lock_ops, op);
        client_await_begin(c);
        b->submit(b->userdata, op);
        return 0;
}

static void op_detach(LockOp *op) {
        Client *c = op->client;

        if (!c)
                return;
        LIST_REMOVE(ops, c->lock_ops, op);
        if (op->awaiting) {
                op->awaiting = false;
                client_await_end(c);
        }
        op->client = NULL;
}

void lock_op_parked(LockOp *op) {
        if (op->client && op->awaiting) {
                op->awaiting = false;
                client_await_end(op->client);
        }
}

void control_lock_client_gone(const LockBackend *b, Client *c) {
        LockOp *op;

        while ((op = c->lock_ops)) {
                op_detach(op);
                b->cancel(b->userdata, op);
        }
}

static int answer_unavailable(Client *c, const char *id, const char *reason);

void control_lock_stop(const LockBackend *b, Client *c) {
        LockOp *op;

        while ((op = c->lock_ops)) {
                (void) answer_unavailable(c, op->id, "photond is stopping");
                op_detach(op);
                b->cancel(b->userdata, op);
        }
}

static int answer_unavailable(Client *c, const char *id, const char *reason) {
        char msg[256];

        snprintf(msg, sizeof(msg), "Cluster unavailable: %s", reason ?: "Redis did not answer");
        return client_reply_error(c, id, msg,
                                  "Check that Redis is running and reachable (photonctl status shows the cluster "
                                  "state); photond reconnects on its own, retry then");
}

static int answer_transfer(Client *c, const LockOp *op, const LockOpResult *res) {
        _cleanup_(json_object_putp) struct json_object *d = json_object_new_object();

        if (!d)
                return -ENOMEM;
        if (res->error == -EPERM) {
                if (json_add_bool(d, "transferred", false) < 0 ||
                    json_add_string(d, "lockName", op->name) < 0 ||
                    json_add_string(d, "reason", "Not the current holder") < 0 ||
                    json_add_string(d, "currentHolder", res->lock.holder) < 0)
                        return -ENOMEM;
                return client_reply_result(c, op->id, false, TAKE_PTR(d));
        }
        if (json_add_bool(d, "transferred", true) < 0 ||
            json_add_string(d, "lockName", op->name) < 0 ||
            json_add_string(d, "from", op->holder) < 0 ||
            json_add_string(d, "to", op->transfer_to) < 0 ||
            json_add_int64(d, "fencingToken", (int64_t) res->lock.fencing_token) < 0)
                return -ENOMEM;
        return client_reply_result(c, op->id, true, TAKE_PTR(d));
}

static int answer_query(Client *c, const LockOp *op, const LockOpResult *res) {
        _cleanup_(json_object_putp) struct json_object *d = json_object_new_object();

        if (!d || json_add_string(d, "lockName", op->name) < 0)
                return -ENOMEM;
        if (!res->found) {
                if (json_object_object_add(d, "holder", NULL) < 0)
                        return -ENOMEM;
                return client_reply_result(c, op->id, true, TAKE_PTR(d));
        }
        if (json_add_string(d, "holder", res->lock.holder) < 0 ||
            json_add_int64(d, "acquiredAt", res->lock.acquired_at) < 0 ||
            json_add_int64(d, "expiresAt", res->lock.expires_at) < 0 ||
            json_add_int64(d, "fencingToken", (int64_t) res->lock.fencing_token) < 0)
                return -ENOMEM;
        return client_reply_result(c, op->id, true, TAKE_PTR(d));
}

static int answer_list(Client *c, const LockOp *op, struct json_object *locks) {
        _cleanup_(json_object_putp) struct json_object *d = json_object_new_object();

        if (!d || json_add(d, "locks", locks) < 0)
                return -ENOMEM;
        return client_reply_result(c, op->id, true, TAKE_PTR(d));
}

static int answer(Client *c, const LockOp *op, const LockOpResult *res) {
        switch (res->error) {
        case 0:
        case -EBUSY:
        case -EPERM:
        case -ETIME:
                break;
        case -ENOSPC:
                return client_reply_limit(c, op->id, LIMIT_MAX_LOCKS, UINT64_MAX);
        case -EUSERS:
                return client_reply_limit(c, op->id, LIMIT_MAX_LOCK_WAITERS, UINT64_MAX);
        case -EXFULL:
                return client_reply_limit(c, op->id, LIMIT_MAX_LOCK_WAITERS_PER_LOCK, UINT64_MAX);
        case -ENOMEM:
                return client_reply_error(c, op->id, "Internal error: Cannot allocate memory", NULL);
        default:
                return answer_unavailable(c, op->id, res->reason);
        }

        switch (op->type) {
        case REQUEST_LOCK:
        case REQUEST_ASSIGN_LOCK:
                if (res->error == 0)
                        return send_acquired(c, op->id, op->name, op->holder, res->lock.fencing_token);
                return send_refused(c, op->type, op->id, op->name, op->holder, res->lock.holder);
        case REQUEST_UNLOCK:
                return send_released(c, op->id, op->name, res->error == 0);
        case REQUEST_TRANSFER_LOCK:
                return answer_transfer(c, op, res);
        case REQUEST_QUERY_LOCK:
                return answer_query(c, op, res);
        case REQUEST_LIST_LOCKS:
                return answer_list(c, op, res->locks);
        default:
                return -EINVAL;
        }
}

void lock_op_done(LockOp *op, const LockOpResult *res) {
        Client *c = op->client;
        int r;

        if (op->view_done) {
                op->view_done(res->error, res->error == -ENOMEM ? "out of memory" : res->reason, res->locks,
                              op->view_userdata);
                free(op);
                return;
        }

        op_detach(op);
        if (!c || c->disconnected || res->error == -ECANCELED) {
                /* Nobody to answer; a list made all the same is dropped. */
                if (op->type == REQUEST_LIST_LOCKS)
                        json_object_put(res->locks);
        } else {
                r = answer(c, op, res);
                if (r < 0) {
                        log_warning_errno(r, "Lock request '%s' from client %" PRIu64 " failed: %m", op->id,
                                          c->serial);
                        if (r == -ENOMEM)
                                (void) client_reply_error(c, op->id, "Internal error: Cannot allocate memory",
                                                          NULL);
                }
        }
        free(op);
}

static int serve_backend(const LockBackend *b, Client *c, const LockRequest *r) {
        const char *holder = lock_request_holder(r);

        if (r->timeout_invalid && r->type != REQUEST_UNLOCK && r->type != REQUEST_QUERY_LOCK)
                return reply_bad_timeout(c, r->id);
        switch (r->type) {
        case REQUEST_LOCK:
        case REQUEST_ASSIGN_LOCK:
                if (r->wait_invalid || r->wait_ms > limits.MAX_LOCK_WAIT_MS)
                        return reply_bad_wait(c, r->id);
                break;
        case REQUEST_TRANSFER_LOCK:
                if (!r->transfer_to || !r->transfer_to[0])
                        return client_reply_error(c, r->id, !r->transfer_to ?
                                                  "Invalid request format: lockTransferTo is missing" :
                                                  "Invalid request format: lockTransferTo is empty",
                                                  "Name the new holder in lockTransferTo");
                if (strlen(r->transfer_to) > limits.MAX_LOCK_HOLDER_BYTES)
                        return client_reply_limit(c, r->id, LIMIT_MAX_LOCK_HOLDER_BYTES, strlen(r->transfer_to));
                break;
        case REQUEST_UNLOCK:
        case REQUEST_QUERY_LOCK:
                break;
        default:
                return -EINVAL;
        }
        /* The table's caps, checked before Redis sees the request (a query of any name is answered there). */
        if (r->type != REQUEST_QUERY_LOCK && r->type != REQUEST_UNLOCK) {
                if (strlen(r->name) > limits.MAX_LOCK_NAME_BYTES)
                        return client_reply_limit(c, r->id, LIMIT_MAX_LOCK_NAME_BYTES, strlen(r->name));
                if (strlen(holder) > limits.MAX_LOCK_HOLDER_BYTES)
                        return client_reply_limit(c, r->id, LIMIT_MAX_LOCK_HOLDER_BYTES, strlen(holder));
        }
        return backend_submit(b, c, r->type, r->id, r->name, holder, r->transfer_to, lock_request_timeout(r),
                              r->type == REQUEST_LOCK || r->type == REQUEST_ASSIGN_LOCK ? r->wait_ms : 0);
}

/* ---- the requests ---- */

static int lock_acquire(LockTable *t, Client *c, const LockRequest *r) {
        const char *holder = lock_request_holder(r);
        LockTime now;
        Lock *l;
        int k;

        if (r->timeout_invalid)
                return reply_bad_timeout(c, r->id);
        if (r->wait_invalid || r->wait_ms > limits.MAX_LOCK_WAIT_MS)
                return reply_bad_wait(c, r->id);

        now = lock_table_now(t);
        k = lock_table_acquire(t, r->name, holder, lock_request_timeout(r), &now, &l);
        if (k >= 0)
                return send_acquired(c, r->id, r->name, holder, l->token);
        if (k != -EBUSY)
                return reply_table_error(c, r->id, k, r->name, holder);

        /* Answered later: when the lock is handed over, or with the refusal when the wait ends. */
        if (r->wait_ms > 0)
                return lock_wait(t, c, r, holder, &now);

        return send_refused(c, r->type, r->id, r->name, holder, l->holder);
}

static int lock_release(LockTable *t, Client *c, const LockRequest *r) {
        LockTime now = lock_table_now(t);
        int k;

        k = lock_table_release(t, r->name, lock_request_holder(r), &now);
        return send_released(c, r->id, r->name, k >= 0);
}

static int lock_transfer(LockTable *t, Client *c, const LockRequest *r) {
        _cleanup_(json_object_putp) struct json_object *d = NULL;
        const char *from = lock_request_holder(r), *to = r->transfer_to;
        LockTime now;
        Lock *l;
        int k;

        /* The reference makes a lock without a holder here; photond refuses the request. */
        if (!to)
                return client_reply_error(c, r->id, "Invalid request format: lockTransferTo is missing",
                                          "Name the new holder in lockTransferTo");
        if (!to[0])
                return client_reply_error(c, r->id, "Invalid request format: lockTransferTo is empty",
                                          "Name the new holder in lockTransferTo");
        if (r->timeout_invalid)
                return reply_bad_timeout(c, r->id);

        now = lock_table_now(t);
        k = lock_table_transfer(t, r->name, from, to, lock_request_timeout(r), &now, &l);
        if (k < 0 && k != -EPERM)
                return reply_table_error(c, r->id, k, r->name, to);

        d = json_object_new_object();
        if (!d)
                return -ENOMEM;
        if (k == -EPERM) {
                if (json_add_bool(d, "transferred", false) < 0 ||
                    json_add_string(d, "lockName", r->name) < 0 ||
                    json_add_string(d, "reason", "Not the current holder") < 0 ||
                    json_add_string(d, "currentHolder", l->holder) < 0)
                        return -ENOMEM;
                return client_reply_result(c, r->id, false, TAKE_PTR(d));
        }
        if (json_add_bool(d, "transferred", true) < 0 ||
            json_add_string(d, "lockName", r->name) < 0 ||
            json_add_string(d, "from", from) < 0 ||
            json_add_string(d, "to", to) < 0 ||
            json_add_int64(d, "fencingToken", (int64_t) l->token) < 0)
                return -ENOMEM;
        return client_reply_result(c, r->id, true, TAKE_PTR(d));
}

static int lock_query(LockTable *t, Client *c, const LockRequest *r) {
        _cleanup_(json_object_putp) struct json_object *d = NULL;
        LockTime now = lock_table_now(t);
        Lock *l;

        l = lock_table_get(t, r->name, &now);

        d = json_object_new_object();
        if (!d || json_add_string(d, "lockName", r->name) < 0)
                return -ENOMEM;
        if (!l) {
                if (json_object_object_add(d, "holder", NULL) < 0)
                        return -ENOMEM;
                return client_reply_result(c, r->id, true, TAKE_PTR(d));
        }
        if (json_add_string(d, "holder", l->holder) < 0 ||
            json_add_int64(d, "acquiredAt", l->acquired_at) < 0 ||
            json_add_int64(d, "expiresAt", l->expires_at) < 0 ||
            json_add_int64(d, "fencingToken", (int64_t) l->token) < 0)
                return -ENOMEM;
        return client_reply_result(c, r->id, true, TAKE_PTR(d));
}

/* Every lock request ends here, whichever parse made r. */
static int serve(LockTable *t, const LockBackend *b, Client *c, const LockRequest *r) {
        if (b)
                return serve_backend(b, c, r);
        switch (r->type) {
        case REQUEST_LOCK:
        case REQUEST_ASSIGN_LOCK:
                return lock_acquire(t, c, r);
        case REQUEST_UNLOCK:
                return lock_release(t, c, r);
        case REQUEST_TRANSFER_LOCK:
                return lock_transfer(t, c, r);
        case REQUEST_QUERY_LOCK:
                return lock_query(t, c, r);
        default:
                return -EINVAL;
        }
}

int control_lock_line(LockTable *t, const LockBackend *b, Client *c, const char *line, size_t len,
                      RequestType *ret_type) {
        LockLineBuf buf;
        LockRequest r;
        int k;

        if (!lock_request_parse_line(line, len, &buf, &r))
                return 0;
        if (ret_type)
                *ret_type = r.type;

        /* What control_handle_line() does for every request it parses. */
        if (r.session)
                client_note_session(c, r.session);

        k = serve(t, b, c, &r);
        return k < 0 ? k : 1;
}

int control_lock_request(LockTable *t, const LockBackend *b, Client *c, const Request *req) {
        LockRequest r;

        lock_request_from_request(req, &r);
        return serve(t, b, c, &r);
}

void control_lock_view_list(void *userdata, LockViewDone done, void *done_userdata) {
        const LockBackend *b = userdata;
        LockOp *op;

        op = malloc(offsetof(LockOp, data) + 1);
        if (!op) {
                done(-ENOMEM, "out of memory", NULL, done_userdata);
                return;
        }
        *op = (LockOp) {
                .type = REQUEST_LIST_LOCKS,
                .view_done = done,
                .view_userdata = done_userdata,
        };
        op->data[0] = 0;
        op->id = op->data;
        b->submit(b->userdata, op);
}

int control_lock_list(LockTable *t, const LockBackend *b, Client *c, const Request *req) {
        _cleanup_(json_object_putp) struct json_object *d = NULL;
        struct json_object *a = NULL;
        int r;

        if (b)
                return backend_submit(b, c, REQUEST_LIST_LOCKS, req->id, NULL, NULL, NULL, 0, 0);

        r = lock_table_list(t, &a);
        if (r < 0)
                return r;
        d = json_object_new_object();
        if (!d || json_add(d, "locks", a) < 0)
                return -ENOMEM;
        return client_reply_result(c, req->id, true, TAKE_PTR(d));
}
