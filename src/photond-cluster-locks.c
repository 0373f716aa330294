/* SPDX-License-Identifier: MIT */

#include <assert.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>
#include <uthash.h>

#include "clock.h"
#include "json-util.h"
#include "log.h"
#include "photond-cluster-locks.h"
#include "photond-limits.h"
#include "photond-redis.h"

/* ---- the scripts: each operation is one of them, atomic in Redis ----
 *
 * The time is Redis' (TIME): acquiredAt and expiresAt are its milliseconds, and PXAT on the lock's key (read back
 * with PEXPIRETIME, Redis 7) makes its expiry Redis' too, to the millisecond clients are told. A fencing token is
 * the counter's INCR, but never below Redis' time in ms × 1000: a counter that came back behind (an AOF that lost
 * its last second, a replica promoted before it had the last increments) or not at all (no persistence) still
 * issues tokens above every one issued before, as long as fewer than 1000 were issued per ms on average and
 * Redis' clock did not go back (the lock core does the same when its state is lost). Numbers are formatted with
 * %.0f: Lua's tostring() would write 1.7e+15. */

#define LUA_NOW \
        "local t = redis.call('TIME')\n" \
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

#define LUA_NEW_TOKEN \
        "local tok = redis.call('INCR', KEYS[2])\n" \
        "if tok < now * 1000 then\n" \
        "  tok = now * 1000\n" \
        "  redis.call('SET', KEYS[2], string.format('%.0f', tok))\n" \
        "end\n" \
        "local ts = string.format('%.0f', tok)\n"

#define LUA_CAP \
        "if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then\n" \
        "  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n" \
        "  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {3} end\n" \
        "end\n"

/* KEYS: lock, token, index, wait. ARGV: name, holder, timeout, wait, max locks. {code, token, acquiredAt,
 * expiresAt, holder, pttl}; code 0 new, 1 re-entrant, 2 held by another (a wait > 0 marks the lock waited for), 3
 * MAX_LOCKS. */
static const char acquire_lua[] =
        LUA_NOW
        "local timeout = tonumber(ARGV[3])\n"
        "local v = redis.call('GET', KEYS[1])\n"
        "if v then\n"
        "  local tok, at, h = string.match(v, '^(%d+) (%d+) (.*)$')\n"
        "  if h == ARGV[2] then\n"
        "    redis.call('PEXPIREAT', KEYS[1], now + timeout)\n"
        "    redis.call('ZADD', KEYS[3], now + timeout, ARGV[1])\n"
        "    return {1, tok, at, now + timeout, h, timeout}\n"
        "  end\n"
        "  local exp = redis.call('PEXPIRETIME', KEYS[1])\n"
        "  local wait = tonumber(ARGV[4])\n"
        "  if wait > 0 and redis.call('PTTL', KEYS[4]) < wait then\n"
        "    redis.call('SET', KEYS[4], '1', 'PX', wait)\n"
        "  end\n"
        "  return {2, tok, at, exp, h, exp - now}\n"
        "end\n"
        LUA_CAP
        LUA_NEW_TOKEN
        "redis.call('SET', KEYS[1], ts .. ' ' .. string.format('%.0f', now) .. ' ' .. ARGV[2], 'PXAT', now + timeout)\n"
        "redis.call('ZADD', KEYS[3], now + timeout, ARGV[1])\n"
        "return {0, ts, now, now + timeout, ARGV[2], timeout}\n";

/* KEYS: lock, index, wait. ARGV: name, holder, channel. 0 released (or not held), 1 held by another. */
static const char release_lua[] =
        "local v = redis.call('GET', KEYS[1])\n"
        "if not v then return 0 end\n"
        "if string.match(v, '^%d+ %d+ (.*)$') ~= ARGV[2] then return 1 end\n"
        "redis.call('DEL', KEYS[1])\n"
        "redis.call('ZREM', KEYS[2], ARGV[1])\n"
        "if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PUBLISH', ARGV[3], ARGV[1]) end\n"
        "return 0\n";

/* KEYS: lock, token, index, wait. ARGV: name, from, to, timeout, max locks, channel. {code, token, acquiredAt,
 * expiresAt, holder}; code 0 transferred (or acquired, when free), 2 held by someone other than from, 3 MAX_LOCKS. */
static const char transfer_lua[] =
        LUA_NOW
        "local timeout = tonumber(ARGV[4])\n"
        "local v = redis.call('GET', KEYS[1])\n"
        "if v then\n"
        "  local tok, at, h = string.match(v, '^(%d+) (%d+) (.*)$')\n"
        "  if h ~= ARGV[2] then return {2, tok, at, redis.call('PEXPIRETIME', KEYS[1]), h} end\n"
        "else\n"
        LUA_CAP
        "end\n"
        LUA_NEW_TOKEN
        "redis.call('SET', KEYS[1], ts .. ' ' .. string.format('%.0f', now) .. ' ' .. ARGV[3], 'PXAT', now + timeout)\n"
        "redis.call('ZADD', KEYS[3], now + timeout, ARGV[1])\n"
        "if v and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('PUBLISH', ARGV[6], ARGV[1]) end\n"
        "return {0, ts, now, now + timeout, ARGV[3]}\n";

/* KEYS: lock. {0} or {1, token, acquiredAt, expiresAt, holder}. */
static const char query_lua[] =
        "local v = redis.call('GET', KEYS[1])\n"
        "if not v then return {0} end\n"
        "local tok, at, h = string.match(v, '^(%d+) (%d+) (.*)$')\n"
        "return {1, tok, at, redis.call('PEXPIRETIME', KEYS[1]), h}\n";

/* KEYS: index. ARGV: the lock keys' prefix (P"lock:"). Drops what expired from the index and answers name, token,
 * acquiredAt, expiresAt, holder of every live lock, flat. The lock keys are not declared (their names come from
 * the index): fine on one Redis, not on a Redis Cluster. */
static const char list_lua[] =
        LUA_NOW
        "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
        "local out = {}\n"
        "for _, n in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
        "  local k = ARGV[1] .. n\n"
        "  local v = redis.call('GET', k)\n"
        "  if v then\n"
        "    local tok, at, h = string.match(v, '^(%d+) (%d+) (.*)$')\n"
        "    out[#out + 1] = n\n"
        "    out[#out + 1] = tok\n"
        "    out[#out + 1] = at\n"
        "    out[#out + 1] = redis.call('PEXPIRETIME', k)\n"
        "    out[#out + 1] = h\n"
        "  else\n"
        "    redis.call('ZREM', KEYS[1], n)\n"
        "  end\n"
        "end\n"
        "return out\n";

enum {
        SCRIPT_ACQUIRE,
        SCRIPT_RELEASE,
        SCRIPT_TRANSFER,
        SCRIPT_QUERY,
        SCRIPT_LIST,
        _SCRIPT_MAX,
};

/* ---- state ---- */

typedef struct WaitQueue WaitQueue;

/* A parked acquire (lockWait). */
typedef struct Waiter {
        ClusterLocks *cl;
        LockOp *op;
        WaitQueue *queue;
        struct Waiter *prev, *next;     /* the queue's, FIFO */
        sd_event_source *deadline;      /* the end of its lockWait */
        bool in_flight;                 /* an acquire for it is under way */
        bool timed_out;                 /* its wait ran out: the next answer is final */
        bool cancelled;                 /* its client went */
} Waiter;

/* This node's waiters for one lock, first come first served here (across nodes, whoever asks first after a
 * release). */
struct WaitQueue {
        ClusterLocks *cl;
        char *name;
        Waiter *waiters;
        unsigned n_waiters;
        sd_event_source *retry;         /* the lock's expiry as Redis last told it: try again then */
        bool notified;                  /* a release came while an attempt was under way */
        UT_hash_handle hh;
};

struct ClusterLocks {
        sd_event *event;
        char *prefix;
        char *keys[_CLUSTER_LOCK_KEY_MAX];      /* the shared ones: token, index, channel; and P"lock:" */
        char *lock_prefix;
        RedisScript scripts[_SCRIPT_MAX];
        const RedisScript *script_list[_SCRIPT_MAX + 1];
        LockBackend backend;

        RedisConn *commands;
        RedisConn *subscriber;
        WaitQueue *queues;              /* by name */
        unsigned n_waiters;
        bool freeing;

        uint64_t n_ops, n_unavailable, n_notifications, n_handovers;
};

/* ---- keys ---- */

static const char *const key_suffix[_CLUSTER_LOCK_KEY_MAX] = {
        [CLUSTER_LOCK_KEY_LOCK] = "lock:",
        [CLUSTER_LOCK_KEY_WAIT] = "lockwait:",
        [CLUSTER_LOCK_KEY_TOKEN] = "locks:token",
        [CLUSTER_LOCK_KEY_INDEX] = "locks:index",
        [CLUSTER_LOCK_KEY_CHANNEL] = "locks:released",
};

char* cluster_lock_key(const char *prefix, ClusterLockKey key, const char *name) {
        char *k;
        bool named = key == CLUSTER_LOCK_KEY_LOCK || key == CLUSTER_LOCK_KEY_WAIT;

        if (asprintf(&k, "%s%s%s", prefix, key_suffix[key], named ? name : "") < 0)
                return NULL;
        return k;
}

int cluster_lock_value_parse(const char *value, uint64_t *ret_token, int64_t *ret_acquired_at,
                             const char **ret_holder) {
        unsigned long long tok;
        long long at;
        char *end;

        if (!value || value[0] < '0' || value[0] > '9')
                return -EINVAL;
        errno = 0;
        tok = strtoull(value, &end, 10);
        if (errno != 0 || *end != ' ' || end[1] < '0' || end[1] > '9')
                return -EINVAL;
        at = strtoll(end + 1, &end, 10);
        if (errno != 0 || *end != ' ')
                return -EINVAL;
        *ret_token = tok;
        *ret_acquired_at = at;
        *ret_holder = end + 1;
        return 0;
}

/* An integer element of a script's answer: Lua numbers come as integers, the values it read as strings. */
static int reply_int(const redisReply *r, int64_t *ret) {
        char *end;

        if (r->type == REDIS_REPLY_INTEGER) {
                *ret = r->integer;
                return 0;
        }
        if (r->type != REDIS_REPLY_STRING || r->len == 0)
                return -EINVAL;
        errno = 0;
        *ret = strtoll(r->str, &end, 10);
        return errno == 0 && *end == 0 ? 0 : -EINVAL;
}

/* {code, token, acquiredAt, expiresAt, holder, ...}: *ret_code, and ret's members (holder points into r). */
static int reply_lock(const redisReply *r, int64_t *ret_code, LockInfo *ret) {
        int64_t tok;

        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || reply_int(r->element[0], ret_code) < 0)
                return -EINVAL;
        if (r->elements < 5)
                return 0;
        if (reply_int(r->element[1], &tok) < 0 || reply_int(r->element[2], &ret->acquired_at) < 0 ||
            reply_int(r->element[3], &ret->expires_at) < 0 || r->element[4]->type != REDIS_REPLY_STRING)
                return -EINVAL;
        ret->fencing_token = (uint64_t) tok;
        ret->holder = r->element[4]->str;
        return 0;
}

/* ---- failures ---- */

/* What the client is told when Redis did not decide: never a grant. */
static void fail_unavailable(ClusterLocks *cl, LockOp *op, int error, const char *reply_error) {
        char reason[200];
        const char *last;

        if (cl->freeing) {
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                return;
        }
        last = redis_conn_last_error(cl->commands);
        switch (error) {
        case -ENOTCONN:
                snprintf(reason, sizeof(reason), "not connected to Redis (%s)", last ?: "connecting");
                break;
        case -ENOBUFS:
                snprintf(reason, sizeof(reason), "too many commands waiting for Redis");
                break;
        case -ETIMEDOUT:
                snprintf(reason, sizeof(reason), "no answer from Redis (%s)", last ?: "connection lost");
                break;
        default:
                if (reply_error)
                        snprintf(reason, sizeof(reason), "Redis error: %.150s", reply_error);
                else
                        snprintf(reason, sizeof(reason), "Redis did not take the command (%s)", strerror(-error));
                error = -EIO;
        }
        cl->n_unavailable++;
        lock_op_done(op, &(LockOpResult) { .error = error, .reason = reason });
}

/* A reply that is no answer: NULL (lost, timed out), an error, or not the script's shape. */
static void fail_reply(ClusterLocks *cl, LockOp *op, const redisReply *reply) {
        if (!reply)
                fail_unavailable(cl, op, -ETIMEDOUT, NULL);
        else if (reply->type == REDIS_REPLY_ERROR)
                fail_unavailable(cl, op, -EIO, reply->str);
        else
                fail_unavailable(cl, op, -EIO, "unexpected answer to photond's script");
}

/* ---- calling the scripts ---- */

typedef struct Args {
        const char *v[12];
        size_t l[12];
        char *owned[4];
        char num[3][24];
        int n;
} Args;

static void args_done(Args *a) {
        for (size_t i = 0; i < ELEMENTSOF(a->owned); i++)
                free(a->owned[i]);
}

static void args_add(Args *a, const char *s) {
        assert((size_t) a->n < ELEMENTSOF(a->v));
        a->v[a->n] = s;
        a->l[a->n++] = strlen(s);
}

/* A key of this lock, owned by a. */
static int args_add_key(Args *a, ClusterLocks *cl, ClusterLockKey key, const char *name) {
        char *k;

        for (size_t i = 0; i < ELEMENTSOF(a->owned); i++)
                if (!a->owned[i]) {
                        k = a->owned[i] = cluster_lock_key(cl->prefix, key, name);
                        if (!k)
                                return -ENOMEM;
                        args_add(a, k);
                        return 0;
                }
        return -E2BIG;
}

static void args_add_num(Args *a, unsigned slot, uint64_t v) {
        snprintf(a->num[slot], sizeof(a->num[slot]), "%" PRIu64, v);
        args_add(a, a->num[slot]);
}

static int eval(ClusterLocks *cl, unsigned script, RedisReplyCallback cb, void *userdata, int n_keys, Args *a) {
        cl->n_ops++;
        return redis_conn_eval(cl->commands, &cl->scripts[script], cb, userdata, n_keys, a->n, a->v, a->l);
}

static uint64_t op_timeout(const LockOp *op) {
        return MIN(op->timeout_ms, CLUSTER_LOCK_TIMEOUT_MAX_MS);
}

/* The acquire script for name and holder; wait_ms > 0 marks the lock waited for if it is held. */
static int send_acquire(ClusterLocks *cl, const LockOp *op, uint64_t wait_ms, RedisReplyCallback cb,
                        void *userdata) {
        _cleanup_(args_done) Args a = {};
        int r;

        if ((r = args_add_key(&a, cl, CLUSTER_LOCK_KEY_LOCK, op->name)) < 0)
                return r;
        args_add(&a, cl->keys[CLUSTER_LOCK_KEY_TOKEN]);
        args_add(&a, cl->keys[CLUSTER_LOCK_KEY_INDEX]);
        if ((r = args_add_key(&a, cl, CLUSTER_LOCK_KEY_WAIT, op->name)) < 0)
                return r;
        args_add(&a, op->name);
        args_add(&a, op->holder);
        args_add_num(&a, 0, op_timeout(op));
        args_add_num(&a, 1, wait_ms);
        args_add_num(&a, 2, limits.MAX_LOCKS);
        return eval(cl, SCRIPT_ACQUIRE, cb, userdata, 4, &a);
}

/* ---- waiting (lockWait) ---- */

static void queue_try(WaitQueue *q);

static void queue_free(WaitQueue *q) {
        HASH_DEL(q->cl->queues, q);
        sd_event_source_disable_unref(q->retry);
        free(q->name);
        free(q);
}

static void queue_maybe_free(WaitQueue *q) {
        if (!q->waiters)
                queue_free(q);
}

/* Takes w off its queue and frees it; the queue goes with its last waiter. Returns the op. */
static LockOp* waiter_remove(Waiter *w) {
        WaitQueue *q = w->queue;
        LockOp *op = w->op;

        DL_DELETE(q->waiters, w);
        q->n_waiters--;
        w->cl->n_waiters--;
        sd_event_source_disable_unref(w->deadline);
        op->backend_data = NULL;
        free(w);
        queue_maybe_free(q);
        return op;
}

static void on_compensating_release(RedisConn *conn, redisReply *reply, void *userdata) {
}

/* A waiter whose client went was granted the lock all the same (its attempt was under way): nobody will release
 * it, so it is released now, rather than held until its timeout. */
static void release_abandoned(ClusterLocks *cl, const LockOp *op) {
        _cleanup_(args_done) Args a = {};

        if (args_add_key(&a, cl, CLUSTER_LOCK_KEY_LOCK, op->name) < 0)
                return;
        args_add(&a, cl->keys[CLUSTER_LOCK_KEY_INDEX]);
        if (args_add_key(&a, cl, CLUSTER_LOCK_KEY_WAIT, op->name) < 0)
                return;
        args_add(&a, op->name);
        args_add(&a, op->holder);
        args_add(&a, cl->keys[CLUSTER_LOCK_KEY_CHANNEL]);
        (void) eval(cl, SCRIPT_RELEASE, on_compensating_release, NULL, 3, &a);
}

/* The lock is held until Redis' expiry: the first waiter asks again just after it (a lock that expires sends no
 * notification). reply: the acquire script's refusal, its last element the ms left. */
static void queue_arm_retry(WaitQueue *q, const redisReply *reply) {
        int64_t left;

        if (reply->elements < 6 || reply->element[5]->type != REDIS_REPLY_INTEGER)
                return;
        left = MAX(reply->element[5]->integer, (int64_t) 0);
        (void) sd_event_source_set_time_relative(q->retry, (uint64_t) left * USEC_PER_MSEC + USEC_PER_MSEC);
        (void) sd_event_source_set_enabled(q->retry, SD_EVENT_ONESHOT);
}

static void on_attempt_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        Waiter *w = userdata;
        ClusterLocks *cl = w->cl;
        WaitQueue *q = w->queue;
        LockInfo lock = { .name = w->op->name };
        int64_t code;
        LockOp *op;

        w->in_flight = false;
        if (w->cancelled || cl->freeing) {
                if (!cl->freeing && reply_lock(reply, &code, &lock) >= 0 && code == 0)
                        release_abandoned(cl, w->op);
                op = waiter_remove(w);
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                return;
        }
        if (reply_lock(reply, &code, &lock) < 0 || code < 0 || code > 3) {
                op = waiter_remove(w);
                fail_reply(cl, op, reply);
                return;
        }
        if (code == 3) {
                op = waiter_remove(w);
                lock_op_done(op, &(LockOpResult) { .error = -ENOSPC });
                return;
        }
        if (code <= 1) {
                bool more = q->n_waiters > 1;

                cl->n_handovers++;
                op = waiter_remove(w);
                lock_op_done(op, &(LockOpResult) { .lock = lock });
                /* The next waiter asks too: its holder may be the one just granted (re-entrant), and its ask
                 * marks the lock waited for again and learns the new expiry. */
                if (more)
                        queue_try(q);
                return;
        }
        if (w->timed_out) {
                op = waiter_remove(w);
                lock_op_done(op, &(LockOpResult) { .error = -ETIME, .lock = lock });
                return;
        }
        /* Still held: try again when it expires (Redis' PTTL), or at the next release. */
        queue_arm_retry(q, reply);
        if (q->notified)
                queue_try(q);
}

static void waiter_attempt(Waiter *w) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), end, left = 0;
        int r;

        if (sd_event_source_get_time(w->deadline, &end) >= 0 && end > now)
                left = (end - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
        w->in_flight = true;
        r = send_acquire(w->cl, w->op, w->timed_out ? 0 : MAX(left, (uint64_t) 1), on_attempt_reply, w);
        if (r < 0) {
                LockOp *op = w->op;

                w->in_flight = false;
                (void) waiter_remove(w);
                fail_unavailable(w->cl, op, r, NULL);
        }
}

/* The first waiter asks for the lock, unless an ask is under way (its answer then tries again). */
static void queue_try(WaitQueue *q) {
        if (!q->waiters)
                return;
        if (q->waiters->in_flight) {
                q->notified = true;
                return;
        }
        q->notified = false;
        waiter_attempt(q->waiters);
}

static int on_queue_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        queue_try(userdata);
        return 0;
}

static int on_wait_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Waiter *w = userdata;

        /* A last ask: the answer the request would have got without waiting, or the lock after all. */
        w->timed_out = true;
        if (!w->in_flight)
                waiter_attempt(w);
        return 0;
}

/* An acquire that found the lock held and may wait: parked here, the client goes on meanwhile. */
static int park(ClusterLocks *cl, LockOp *op, const redisReply *reply) {
        _cleanup_free_ Waiter *w = NULL;
        WaitQueue *q;
        int r;

        HASH_FIND_STR(cl->queues, op->name, q);
        if (q && q->n_waiters >= limits.MAX_LOCK_WAITERS_PER_LOCK)
                return -EXFULL;
        if (cl->n_waiters >= limits.MAX_LOCK_WAITERS)
                return -EUSERS;

        w = new0(Waiter, 1);
        if (!w)
                return -ENOMEM;
        *w = (Waiter) { .cl = cl, .op = op };
        r = sd_event_add_time_relative(cl->event, &w->deadline, CLOCK_MONOTONIC, op->wait_ms * USEC_PER_MSEC,
                                       USEC_PER_MSEC, on_wait_deadline, w);
        if (r < 0)
                return r;
        if (!q) {
                q = new0(WaitQueue, 1);
                if (!q || !(q->name = strdup(op->name)) ||
                    sd_event_add_time(cl->event, &q->retry, CLOCK_MONOTONIC, 0, USEC_PER_MSEC, on_queue_retry,
                                      q) < 0) {
                        if (q)
                                free(q->name);
                        free(q);
                        sd_event_source_disable_unref(w->deadline);
                        return -ENOMEM;
                }
                (void) sd_event_source_set_enabled(q->retry, SD_EVENT_OFF);
                q->cl = cl;
                HASH_ADD_KEYPTR(hh, cl->queues, q->name, strlen(q->name), q);
        }
        w->queue = q;
        DL_APPEND(q->waiters, w);
        q->n_waiters++;
        cl->n_waiters++;
        op->backend_data = w;
        queue_arm_retry(q, reply);
        TAKE_PTR(w);
        return 0;
}

/* ---- the operations ---- */

static void on_acquire_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        LockOp *op = userdata;
        ClusterLocks *cl = conn ? redis_conn_userdata(conn) : NULL;
        LockInfo lock = { .name = op->name };
        int64_t code;
        int r;

        if (!cl || cl->freeing) {
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                return;
        }
        if (reply_lock(reply, &code, &lock) < 0 || code < 0 || code > 3) {
                fail_reply(cl, op, reply);
                return;
        }
        if (code == 3) {
                lock_op_done(op, &(LockOpResult) { .error = -ENOSPC });
                return;
        }
        if (code <= 1) {
                lock_op_done(op, &(LockOpResult) { .lock = lock });
                return;
        }
        if (op->wait_ms == 0) {
                lock_op_done(op, &(LockOpResult) { .error = -EBUSY, .lock = lock });
                return;
        }
        if (!op->client) {
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                return;
        }
        r = park(cl, op, reply);
        if (r < 0) {
                lock_op_done(op, &(LockOpResult) { .error = r == -EXFULL || r == -EUSERS ? r : -ENOMEM });
                return;
        }
        lock_op_parked(op);
        /* A release heard while the refusal was on its way (the subscriber connection can be read first) found
         * no waiter here yet: ask again now rather than at the expiry. */
        if (cl->n_notifications != op->backend_mark)
                queue_try(((Waiter *) op->backend_data)->queue);
}

static void on_release_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        LockOp *op = userdata;
        ClusterLocks *cl = conn ? redis_conn_userdata(conn) : NULL;

        if (!cl || cl->freeing)
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
        else if (!reply || reply->type != REDIS_REPLY_INTEGER)
                fail_reply(cl, op, reply);
        else
                lock_op_done(op, &(LockOpResult) { .error = reply->integer == 0 ? 0 : -EPERM });
}

static void on_transfer_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        LockOp *op = userdata;
        ClusterLocks *cl = conn ? redis_conn_userdata(conn) : NULL;
        LockInfo lock = { .name = op->name };
        int64_t code;

        if (!cl || cl->freeing)
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
        else if (reply_lock(reply, &code, &lock) < 0 || (code != 0 && code != 2 && code != 3))
                fail_reply(cl, op, reply);
        else
                lock_op_done(op, &(LockOpResult) {
                                .error = code == 0 ? 0 : code == 2 ? -EPERM : -ENOSPC,
                                .lock = lock,
                        });
}

static void on_query_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        LockOp *op = userdata;
        ClusterLocks *cl = conn ? redis_conn_userdata(conn) : NULL;
        LockInfo lock = { .name = op->name };
        int64_t code;

        if (!cl || cl->freeing)
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
        else if (reply_lock(reply, &code, &lock) < 0 || (code == 1 && reply->elements < 5))
                fail_reply(cl, op, reply);
        else
                lock_op_done(op, &(LockOpResult) { .found = code == 1, .lock = lock });
}

typedef struct ListEntry {
        const redisReply *const *e;     /* name, token, acquiredAt, expiresAt, holder */
        int64_t token;
} ListEntry;

static int list_entry_compare(const void *a, const void *b) {
        const ListEntry *x = a, *y = b;

        return x->token < y->token ? -1 : x->token > y->token;
}

static int build_list(const redisReply *reply, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *a = NULL;
        _cleanup_free_ ListEntry *entries = NULL;
        size_t n;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 5 != 0)
                return -EINVAL;
        n = reply->elements / 5;
        entries = new0(ListEntry, MAX(n, (size_t) 1));
        a = json_object_new_array();
        if (!entries || !a)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                entries[i].e = (const redisReply *const *) reply->element + 5 * i;
                if (entries[i].e[0]->type != REDIS_REPLY_STRING || entries[i].e[4]->type != REDIS_REPLY_STRING ||
                    reply_int(entries[i].e[1], &entries[i].token) < 0)
                        return -EINVAL;
        }
        /* Oldest acquisition first, as a single node lists them: tokens rise with every acquisition. */
        qsort(entries, n, sizeof(ListEntry), list_entry_compare);
        for (size_t i = 0; i < n; i++) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
                int64_t at, exp;

                if (!o)
                        return -ENOMEM;
                if (reply_int(entries[i].e[2], &at) < 0 || reply_int(entries[i].e[3], &exp) < 0)
                        return -EINVAL;
                if (json_add_string(o, "name", entries[i].e[0]->str) < 0 ||
                    json_add_string(o, "holder", entries[i].e[4]->str) < 0 ||
                    json_add_int64(o, "acquiredAt", at) < 0 ||
                    json_add_int64(o, "expiresAt", exp) < 0 ||
                    json_add_int64(o, "fencingToken", entries[i].token) < 0 ||
                    json_object_array_add(a, o) < 0)
                        return -ENOMEM;
                TAKE_PTR(o);
        }
        *ret = TAKE_PTR(a);
        return 0;
}

static void on_list_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        LockOp *op = userdata;
        ClusterLocks *cl = conn ? redis_conn_userdata(conn) : NULL;
        struct json_object *a = NULL;
        int r;

        if (!cl || cl->freeing) {
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                return;
        }
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
                fail_reply(cl, op, reply);
                return;
        }
        r = build_list(reply, &a);
        if (r == -ENOMEM)
                lock_op_done(op, &(LockOpResult) { .error = -ENOMEM });
        else if (r < 0)
                fail_reply(cl, op, reply);
        else
                lock_op_done(op, &(LockOpResult) { .locks = a });
}

static void backend_submit(void *userdata, LockOp *op) {
        ClusterLocks *cl = userdata;
        _cleanup_(args_done) Args a = {};
        int r;

        switch (op->type) {
        case REQUEST_LOCK:
        case REQUEST_ASSIGN_LOCK:
                op->backend_mark = cl->n_notifications;
                r = send_acquire(cl, op, op->wait_ms, on_acquire_reply, op);
                break;
        case REQUEST_UNLOCK:
                r = args_add_key(&a, cl, CLUSTER_LOCK_KEY_LOCK, op->name);
                if (r < 0)
                        break;
                args_add(&a, cl->keys[CLUSTER_LOCK_KEY_INDEX]);
                r = args_add_key(&a, cl, CLUSTER_LOCK_KEY_WAIT, op->name);
                if (r < 0)
                        break;
                args_add(&a, op->name);
                args_add(&a, op->holder);
                args_add(&a, cl->keys[CLUSTER_LOCK_KEY_CHANNEL]);
                r = eval(cl, SCRIPT_RELEASE, on_release_reply, op, 3, &a);
                break;
        case REQUEST_TRANSFER_LOCK:
                r = args_add_key(&a, cl, CLUSTER_LOCK_KEY_LOCK, op->name);
                if (r < 0)
                        break;
                args_add(&a, cl->keys[CLUSTER_LOCK_KEY_TOKEN]);
                args_add(&a, cl->keys[CLUSTER_LOCK_KEY_INDEX]);
                r = args_add_key(&a, cl, CLUSTER_LOCK_KEY_WAIT, op->name);
                if (r < 0)
                        break;
                args_add(&a, op->name);
                args_add(&a, op->holder);
                args_add(&a, op->transfer_to);
                args_add_num(&a, 0, op_timeout(op));
                args_add_num(&a, 1, limits.MAX_LOCKS);
                args_add(&a, cl->keys[CLUSTER_LOCK_KEY_CHANNEL]);
                r = eval(cl, SCRIPT_TRANSFER, on_transfer_reply, op, 4, &a);
                break;
        case REQUEST_QUERY_LOCK:
                r = args_add_key(&a, cl, CLUSTER_LOCK_KEY_LOCK, op->name);
                if (r < 0)
                        break;
                r = eval(cl, SCRIPT_QUERY, on_query_reply, op, 1, &a);
                break;
        case REQUEST_LIST_LOCKS:
                args_add(&a, cl->keys[CLUSTER_LOCK_KEY_INDEX]);
                args_add(&a, cl->lock_prefix);
                r = eval(cl, SCRIPT_LIST, on_list_reply, op, 1, &a);
                break;
        default:
                r = -EINVAL;
        }
        if (r == -ENOMEM)
                lock_op_done(op, &(LockOpResult) { .error = -ENOMEM });
        else if (r < 0)
                fail_unavailable(cl, op, r, NULL);
}

static void backend_cancel(void *userdata, LockOp *op) {
        Waiter *w = op->backend_data;

        /* Under way in Redis (not parked): its answer ends it, and finds no client. */
        if (!w)
                return;
        w->cancelled = true;
        if (w->in_flight)
                return;
        op = waiter_remove(w);
        lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
}

/* ---- notifications ---- */

static void on_subscriber_connected(RedisConn *conn, void *userdata) {
        ClusterLocks *cl = userdata;
        const char *ch = cl->keys[CLUSTER_LOCK_KEY_CHANNEL];
        WaitQueue *q, *tmp;
        int r;

        r = redis_conn_subscribe(conn, 2, (const char *[]) { "SUBSCRIBE", ch },
                                 (const size_t[]) { 9, strlen(ch) });
        if (r < 0)
                log_warning_errno(r, "Cluster locks: failed to subscribe to %s: %m", ch);
        /* Releases may have gone unheard meanwhile: every waiter asks again. */
        HASH_ITER(hh, cl->queues, q, tmp)
                queue_try(q);
}

static void on_push(RedisConn *conn, redisReply *reply, void *userdata) {
        ClusterLocks *cl = userdata;
        redisReply *payload;
        WaitQueue *q;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
            !streq(reply->element[0]->str, "message"))
                return;
        payload = reply->element[2];
        if (payload->type != REDIS_REPLY_STRING)
                return;
        cl->n_notifications++;
        HASH_FIND(hh, cl->queues, payload->str, payload->len, q);
        if (q)
                queue_try(q);
}

/* ---- lifecycle ---- */

int cluster_locks_new(const ClusterLocksConfig *config, ClusterLocks **ret) {
        _cleanup_(cluster_locks_freep) ClusterLocks *cl = NULL;
        const ClusterSettings *s = config->settings;
        static const char *const sources[_SCRIPT_MAX] = {
                [SCRIPT_ACQUIRE] = acquire_lua,
                [SCRIPT_RELEASE] = release_lua,
                [SCRIPT_TRANSFER] = transfer_lua,
                [SCRIPT_QUERY] = query_lua,
                [SCRIPT_LIST] = list_lua,
        };
        int r;

        cl = new0(ClusterLocks, 1);
        if (!cl)
                return -ENOMEM;
        cl->event = sd_event_ref(config->event);
        cl->prefix = strdup(s->prefix);
        if (!cl->prefix)
                return -ENOMEM;
        for (ClusterLockKey k = CLUSTER_LOCK_KEY_TOKEN; k < _CLUSTER_LOCK_KEY_MAX; k++) {
                cl->keys[k] = cluster_lock_key(cl->prefix, k, NULL);
                if (!cl->keys[k])
                        return -ENOMEM;
        }
        cl->lock_prefix = cluster_lock_key(cl->prefix, CLUSTER_LOCK_KEY_LOCK, "");
        if (!cl->lock_prefix)
                return -ENOMEM;
        for (unsigned i = 0; i < _SCRIPT_MAX; i++) {
                r = redis_script_init(&cl->scripts[i], sources[i]);
                if (r < 0)
                        return r;
                cl->script_list[i] = &cl->scripts[i];
        }
        cl->backend = (LockBackend) { .submit = backend_submit, .cancel = backend_cancel, .userdata = cl };

        r = redis_conn_new(&(RedisConnConfig) {
                                   .event = cl->event,
                                   .url = &s->url,
                                   .name = "locks",
                                   .command_timeout_usec = s->caps.command_timeout_usec,
                                   .max_pending = s->caps.max_pending,
                                   .backoff_max_usec = s->caps.reconnect_max_usec,
                                   .scripts = cl->script_list,
                           }, &(RedisConnHooks) { .userdata = cl }, &cl->commands);
        if (r < 0)
                return r;
        r = redis_conn_new(&(RedisConnConfig) {
                                   .event = cl->event,
                                   .url = &s->url,
                                   .name = "locks subscriber",
                                   .command_timeout_usec = s->caps.command_timeout_usec,
                                   .max_pending = s->caps.max_pending,
                                   .backoff_max_usec = s->caps.reconnect_max_usec,
                           }, &(RedisConnHooks) {
                                   .connected = on_subscriber_connected,
                                   .push = on_push,
                                   .userdata = cl,
                           }, &cl->subscriber);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(cl);
        return 0;
}

ClusterLocks* cluster_locks_free(ClusterLocks *cl) {
        WaitQueue *q, *tmp;

        if (!cl)
                return NULL;
        cl->freeing = true;
        /* Answers under way come back NULL now and end their operations (-ECANCELED). */
        cl->commands = redis_conn_free(cl->commands);
        cl->subscriber = redis_conn_free(cl->subscriber);
        HASH_ITER(hh, cl->queues, q, tmp)
                while (q->waiters) {
                        bool last = !q->waiters->next;
                        LockOp *op = waiter_remove(q->waiters);

                        lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                        if (last)
                                break;          /* q is gone with its last waiter */
                }
        for (unsigned i = 0; i < _CLUSTER_LOCK_KEY_MAX; i++)
                free(cl->keys[i]);
        free(cl->lock_prefix);
        free(cl->prefix);
        sd_event_unref(cl->event);
        return mfree(cl);
}

const LockBackend* cluster_locks_backend(ClusterLocks *cl) {
        return cl ? &cl->backend : NULL;
}

int cluster_locks_add_status(ClusterLocks *cl, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        int r;

        if (!cl)
                return 0;
        if (!o)
                return -ENOMEM;
        if ((r = json_add_bool(o, "connected", redis_conn_state(cl->commands) == REDIS_CONN_CONNECTED &&
                               redis_conn_state(cl->subscriber) == REDIS_CONN_CONNECTED)) < 0 ||
            (r = json_add_int64(o, "pending", (int64_t) redis_conn_pending(cl->commands))) < 0 ||
            (r = json_add_int64(o, "waiters", cl->n_waiters)) < 0 ||
            (r = json_add_int64(o, "operations", (int64_t) cl->n_ops)) < 0 ||
            (r = json_add_int64(o, "unavailable", (int64_t) cl->n_unavailable)) < 0 ||
            (r = json_add_int64(o, "notifications", (int64_t) cl->n_notifications)) < 0 ||
            (r = json_add_int64(o, "handovers", (int64_t) cl->n_handovers)) < 0)
                return r;
        return json_add(data, "clusterLocks", TAKE_PTR(o));
}
