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

/* ---- the script: the operations of one loop iteration, in one call, atomic in Redis ----
 *
 * Every lock operation a node has to send during one iteration of its event loop (from all its clients, its
 * waiters' tries, a compensating release) goes to Redis as one call of one script, which runs them in order and
 * answers an array: Redis' time, then one answer per operation. A single operation is a batch of one. What a
 * batch shares is done once for it: TIME, the fencing-token counter's GET and SET, and the count of live locks
 * (ZCARD) for MAX_LOCKS, kept exact within the script by the answers of its ZADDs and ZREMs.
 *
 * A lock is one key: the string "<token> <acquiredAt> <expiresAt> <waitUntil> <holder>" with an absolute expiry
 * (PXAT) equal to expiresAt, so that a refusal, a query and a list read everything with one GET. waitUntil (0:
 * nobody) marks the lock waited for: a node's waiter was refused by this holder and waits until then; a release
 * or a transfer before it PUBLISHes the name. An acquire reads the lock first (GET) and prepares a new value only
 * when it is free: refusals, most attempts under contention, cost one GET.
 *
 * The time is Redis' (TIME): acquiredAt and expiresAt are its milliseconds, and the key's PXAT makes its expiry
 * Redis' too, to the millisecond clients are told. A fencing token is the counter + 1, but never below Redis'
 * time in ms × 1000: a counter that came back behind (an AOF that lost its last second, a replica promoted
 * before it had the last increments) or not at all (no persistence) still issues tokens above every one issued
 * before, as long as fewer than 1000 were issued per ms on average and Redis' clock did not go back (the lock
 * core does the same when its state is lost).
 *
 * What costs in a script is each redis.call (about 0.5-1 µs) and Lua turning numbers into strings (glibc's
 * float formatting, about 0.6 µs each): so the time is made a string from TIME's strings, a token is the
 * counter's string incremented digit by digit (or the time's string and "000"), and each expiry is formatted
 * once and used as a string. Answers are flat (a token as an integer, a value as a string), not a table an
 * operation. (A release stays GET and DEL: a GETDEL that put back a lock not the releaser's would lose the
 * expiry of a value it cannot read, one written by another version.)
 *
 * Each operation runs in a pcall: one that fails (a key of the wrong type, Redis out of memory for a write) is
 * answered its own error and the others go on. */

/* KEYS: counter, index, then each operation's lock key (list: the index). ARGV: channel, MAX_LOCKS, the lock keys'
 * prefix, then the operations:
 *   A name holder timeout wait  acquire: the token (an integer) when granted, negated when re-entrant; the value
 *                               when held by another (wait > 0 marks it waited for until now + wait); 0 at
 *                               MAX_LOCKS
 *   R name holder               release: 0 released (or not held), 1 held by another
 *   T name from to timeout      transfer: the token (acquired when free); the value when held by someone other
 *                               than from; 0 at MAX_LOCKS
 *   Q                           query: the value, or nil
 *   L                           list: name, value, name, value, ... of every live lock */
static const char batch_lua[] =
        "local t = redis.call('TIME')\n"
        "local nows = t[1] .. string.sub(string.rep('0', 6 - #t[2]) .. t[2], 1, 3)\n"
        "local now = tonumber(nows)\n"
        "local idx = KEYS[2]\n"
        "local count, tokn, toks, issued\n"
        "local function candidate()\n"
        "  if not tokn then\n"
        "    toks = redis.call('GET', KEYS[1])\n"
        "    if not toks or not string.match(toks, '^%d+$') then toks = '0' end\n"
        "    tokn = tonumber(toks)\n"
        "  end\n"
        "  if tokn + 1 < now * 1000 then return nows .. '000', now * 1000 end\n"
        "  local i = #toks\n"
        "  while i > 0 and string.byte(toks, i) == 57 do i = i - 1 end\n"
        "  if i == 0 then return '1' .. string.rep('0', #toks), tokn + 1 end\n"
        "  return string.sub(toks, 1, i - 1) .. string.char(string.byte(toks, i) + 1) ..\n"
        "    string.rep('0', #toks - i), tokn + 1\n"
        "end\n"
        "local function room()\n"
        "  if not count then count = redis.call('ZCARD', idx) end\n"
        "  if count >= tonumber(ARGV[2]) then\n"
        "    redis.call('ZREMRANGEBYSCORE', idx, '-inf', nows)\n"
        "    count = redis.call('ZCARD', idx)\n"
        "  end\n"
        "  return count < tonumber(ARGV[2])\n"
        "end\n"
        "local function run(op, key, a)\n"
        "  if op == 'A' then\n"
        "    local name, h, wait = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4]\n"
        "    local v = redis.call('GET', key)\n"
        "    if not v then\n"
        "      if not room() then return 0 end\n"
        "      local exps = tostring(now + tonumber(ARGV[a + 3]))\n"
        "      local c, cn = candidate()\n"
        "      redis.call('SET', key, c .. ' ' .. nows .. ' ' .. exps .. ' 0 ' .. h, 'PXAT', exps)\n"
        "      toks, tokn, issued = c, cn, true\n"
        "      if redis.call('ZADD', idx, exps, name) == 1 then count = count + 1 end\n"
        "      return cn\n"
        "    end\n"
        "    local holder = string.match(v, '^%d+ %d+ %d+ %d+ (.*)$')\n"
        "    if holder == h then\n"
        "      local exps = tostring(now + tonumber(ARGV[a + 3]))\n"
        "      local tk, at, _, w = string.match(v, '^(%d+) (%d+) (%d+) (%d+) ')\n"
        "      redis.call('SET', key, tk .. ' ' .. at .. ' ' .. exps .. ' ' .. w .. ' ' .. h, 'PXAT', exps)\n"
        "      if redis.call('ZADD', idx, exps, name) == 1 and count then count = count + 1 end\n"
        "      return -tonumber(tk)\n"
        "    end\n"
        "    if holder and wait ~= '0' then\n"
        "      local w = now + tonumber(wait)\n"
        "      if w > tonumber(string.match(v, '^%d+ %d+ %d+ (%d+) ')) then\n"
        "        v = string.gsub(v, '^(%d+ %d+ %d+) %d+', '%1 ' .. tostring(w), 1)\n"
        "        redis.call('SET', key, v, 'KEEPTTL')\n"
        "      end\n"
        "    end\n"
        "    return v\n"
        "  elseif op == 'R' then\n"
        "    local v = redis.call('GET', key)\n"
        "    if not v then return 0 end\n"
        "    local w, holder = string.match(v, '^%d+ %d+ %d+ (%d+) (.*)$')\n"
        "    if holder ~= ARGV[a + 2] then return 1 end\n"
        "    redis.call('DEL', key)\n"
        "    if redis.call('ZREM', idx, ARGV[a + 1]) == 1 and count then count = count - 1 end\n"
        "    if w ~= '0' and tonumber(w) > now then redis.call('PUBLISH', ARGV[1], ARGV[a + 1]) end\n"
        "    return 0\n"
        "  elseif op == 'T' then\n"
        "    local name, from, to = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]\n"
        "    local exps = tostring(now + tonumber(ARGV[a + 4]))\n"
        "    local v = redis.call('GET', key)\n"
        "    local w = '0'\n"
        "    if v then\n"
        "      local ww, holder = string.match(v, '^%d+ %d+ %d+ (%d+) (.*)$')\n"
        "      if holder ~= from then return v end\n"
        "      w = ww\n"
        "    elseif not room() then\n"
        "      return 0\n"
        "    end\n"
        "    local c, cn = candidate()\n"
        "    redis.call('SET', key, c .. ' ' .. nows .. ' ' .. exps .. ' ' .. w .. ' ' .. to, 'PXAT', exps)\n"
        "    toks, tokn, issued = c, cn, true\n"
        "    if redis.call('ZADD', idx, exps, name) == 1 and count then count = count + 1 end\n"
        "    if v and w ~= '0' and tonumber(w) > now then redis.call('PUBLISH', ARGV[1], name) end\n"
        "    return cn\n"
        "  elseif op == 'Q' then\n"
        "    return redis.call('GET', key)\n"
        "  elseif op == 'L' then\n"
        "    redis.call('ZREMRANGEBYSCORE', idx, '-inf', nows)\n"
        "    local out = {}\n"
        "    for _, n in ipairs(redis.call('ZRANGE', idx, 0, -1)) do\n"
        "      local v = redis.call('GET', ARGV[3] .. n)\n"
        "      if v then\n"
        "        out[#out + 1] = n\n"
        "        out[#out + 1] = v\n"
        "      else\n"
        "        redis.call('ZREM', idx, n)\n"
        "      end\n"
        "    end\n"
        "    count = nil\n"
        "    return out\n"
        "  end\n"
        "end\n"
        "local out = {now}\n"
        "local a, k, n = 4, 3, #ARGV\n"
        "while a <= n do\n"
        "  local op = ARGV[a]\n"
        "  local ok, r = pcall(run, op, KEYS[k], a)\n"
        "  if not ok then\n"
        "    if type(r) ~= 'table' or not r.err then r = {err = tostring(r)} end\n"
        "  end\n"
        "  out[k - 1] = r\n"
        "  if op == 'A' or op == 'T' then a = a + 5\n"
        "  elseif op == 'R' then a = a + 3\n"
        "  elseif op == 'Q' or op == 'L' then a = a + 1\n"
        "  else return redis.error_reply('photond lock batch: unknown operation') end\n"
        "  k = k + 1\n"
        "end\n"
        "if issued then redis.call('SET', KEYS[1], toks) end\n"
        "return out\n";

const char* cluster_locks_script(void) {
        return batch_lua;
}

/* ---- state ---- */

/* The most operations in one script call: a batch is one Redis command (one EVALSHA, at most 6 arguments an
 * operation), and Redis runs nothing else while it runs (about 2 µs an operation). More operations in one loop
 * iteration go out in further calls. */
#define BATCH_MAX_OPS 128
#define BATCH_FIXED_KEYS 2              /* the counter, the index */
#define BATCH_FIXED_ARGS 3              /* the channel, MAX_LOCKS, the lock keys' prefix */
#define BATCH_MAX_ARGS (BATCH_FIXED_KEYS + BATCH_FIXED_ARGS + 6 * BATCH_MAX_OPS)
_Static_assert(BATCH_MAX_ARGS <= REDIS_SCRIPT_MAX_ARGS, "a full batch fits in one EVALSHA");

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

/* Whose an operation of a batch is, which its answer goes to. */
typedef enum EntryKind {
        ENTRY_OP,                       /* a client's request (LockOp) */
        ENTRY_ATTEMPT,                  /* a parked waiter's try (Waiter) */
        ENTRY_DETACHED,                 /* a compensating release: nobody waits for its answer */
} EntryKind;

typedef struct BatchEntry {
        EntryKind kind;
        char code;                      /* the script's: A R T Q L */
        void *userdata;
} BatchEntry;

typedef struct FailedEntry {
        BatchEntry entry;
        int error;
} FailedEntry;

/* A batch sent: its entries, in the order of the script's answers. */
typedef struct SentBatch {
        size_t n;
        BatchEntry entries[];
} SentBatch;

/* The batch being built: its operations' keys and arguments are copied into buf (as offsets: buf grows). */
typedef struct Batch {
        BatchEntry entries[BATCH_MAX_OPS];
        size_t n;
        char *buf;
        size_t buf_len, buf_size;
        size_t key_off[BATCH_MAX_OPS], key_len[BATCH_MAX_OPS];
        size_t arg_off[5 * BATCH_MAX_OPS], arg_len[5 * BATCH_MAX_OPS];
        size_t n_args;
        const char *argv[BATCH_MAX_ARGS];
        size_t argl[BATCH_MAX_ARGS];
} Batch;

struct ClusterLocks {
        sd_event *event;
        char *prefix;
        char *keys[_CLUSTER_LOCK_KEY_MAX];      /* the shared ones: token, index, channel; and P"lock:" */
        char *lock_prefix;
        char max_locks[24];
        RedisScript script;
        const RedisScript *script_list[2];
        LockBackend backend;

        RedisConn *commands;
        RedisConn *subscriber;
        WaitQueue *queues;              /* by name */
        unsigned n_waiters;
        bool freeing;

        Batch batch;
        sd_event_source *flush_source;  /* sends the batch at the end of the loop iteration */
        /* Operations of a batch that filled up inside another operation's handling and could not be sent: they
         * are answered from fail_source, since an answer may free what that caller is working on (a waiter's
         * queue, say). */
        FailedEntry *failed;
        size_t n_failed, failed_size;
        sd_event_source *fail_source;

        uint64_t n_ops, n_batches, n_unavailable, n_notifications, n_handovers;
};

/* ---- keys ---- */

static const char *const key_suffix[_CLUSTER_LOCK_KEY_MAX] = {
        [CLUSTER_LOCK_KEY_LOCK] = "lock:",
        [CLUSTER_LOCK_KEY_TOKEN] = "locks:token",
        [CLUSTER_LOCK_KEY_INDEX] = "locks:index",
        [CLUSTER_LOCK_KEY_CHANNEL] = "locks:released",
};

char* cluster_lock_key(const char *prefix, ClusterLockKey key, const char *name) {
        char *k;

        if (asprintf(&k, "%s%s%s", prefix, key_suffix[key], key == CLUSTER_LOCK_KEY_LOCK ? name : "") < 0)
                return NULL;
        return k;
}

static int parse_field(const char **p, int64_t *ret) {
        unsigned long long v;
        char *end;

        if (**p < '0' || **p > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(*p, &end, 10);
        if (errno != 0 || *end != ' ' || v > INT64_MAX)
                return -EINVAL;
        *ret = (int64_t) v;
        *p = end + 1;
        return 0;
}

int cluster_lock_value_parse(const char *value, ClusterLockValue *ret) {
        int64_t tok, at, exp, wait;
        const char *p = value;

        if (!p || parse_field(&p, &tok) < 0 || parse_field(&p, &at) < 0 || parse_field(&p, &exp) < 0 ||
            parse_field(&p, &wait) < 0)
                return -EINVAL;
        *ret = (ClusterLockValue) {
                .token = (uint64_t) tok,
                .acquired_at = at,
                .expires_at = exp,
                .wait_until = wait,
                .holder = p,
        };
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

/* A lock's value as the script answered it: ret's members (holder points into r). */
static int reply_value(const redisReply *r, LockInfo *ret) {
        ClusterLockValue v;

        if (r->type != REDIS_REPLY_STRING || cluster_lock_value_parse(r->str, &v) < 0)
                return -EINVAL;
        ret->fencing_token = v.token;
        ret->acquired_at = v.acquired_at;
        ret->expires_at = v.expires_at;
        ret->holder = v.holder;
        return 0;
}

/* An acquire's or a transfer's answer: the token (granted: *ret_code 0; negated, re-entrant: 1), the holder's
 * value (*ret_code 2), 0 (MAX_LOCKS: *ret_code 3). ret: the token, or the holder's lock; *ret_left: the ms until
 * the holder's lock expires. */
static int reply_grant(const redisReply *r, int64_t now, int64_t *ret_code, LockInfo *ret, int64_t *ret_left) {
        if (r->type == REDIS_REPLY_INTEGER) {
                *ret_code = r->integer == 0 ? 3 : r->integer > 0 ? 0 : 1;
                ret->fencing_token = r->integer < 0 ? -(uint64_t) r->integer : (uint64_t) r->integer;
                return 0;
        }
        if (reply_value(r, ret) < 0)
                return -EINVAL;
        *ret_code = 2;
        *ret_left = MAX(ret->expires_at - now, (int64_t) 0);
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
        if (error == -ENOMEM) {
                lock_op_done(op, &(LockOpResult) { .error = -ENOMEM });
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

static LockOp* waiter_remove(Waiter *w);

/* An operation of a batch that Redis did not decide (error: as fail_unavailable()'s). */
static void entry_fail(ClusterLocks *cl, const BatchEntry *e, int error, const char *reply_error) {
        Waiter *w;
        LockOp *op;
        bool cancelled;

        switch (e->kind) {
        case ENTRY_OP:
                fail_unavailable(cl, e->userdata, error, reply_error);
                break;
        case ENTRY_ATTEMPT:
                w = e->userdata;
                cancelled = w->cancelled;
                w->in_flight = false;
                op = waiter_remove(w);
                if (cancelled)
                        lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                else
                        fail_unavailable(cl, op, error, reply_error);
                break;
        case ENTRY_DETACHED:
                break;
        }
}

/* An answer that is none: NULL (lost, timed out), an error, or not the script's shape. */
static void entry_fail_reply(ClusterLocks *cl, const BatchEntry *e, const redisReply *reply) {
        if (!reply)
                entry_fail(cl, e, -ETIMEDOUT, NULL);
        else if (reply->type == REDIS_REPLY_ERROR)
                entry_fail(cl, e, -EIO, reply->str);
        else
                entry_fail(cl, e, -EIO, "unexpected answer to photond's script");
}

/* ---- the batch ---- */

static int batch_reserve(Batch *b, size_t n) {
        size_t size;
        char *p;

        if (b->buf_len + n <= b->buf_size)
                return 0;
        size = MAX(MAX(b->buf_size * 2, b->buf_len + n), (size_t) 4096);
        p = realloc(b->buf, size);
        if (!p)
                return -ENOMEM;
        b->buf = p;
        b->buf_size = size;
        return 0;
}

/* An argument (key: the operation's key) made of a (may be NULL when a_len is 0) and s, copied. */
static int batch_push(Batch *b, bool key, const char *a, size_t a_len, const char *s, size_t s_len) {
        size_t off = b->buf_len;

        if (batch_reserve(b, a_len + s_len) < 0)
                return -ENOMEM;
        if (a_len > 0)
                memcpy(b->buf + off, a, a_len);
        memcpy(b->buf + off + a_len, s, s_len);
        b->buf_len += a_len + s_len;
        if (key) {
                b->key_off[b->n] = off;
                b->key_len[b->n] = a_len + s_len;
        } else {
                assert(b->n_args < ELEMENTSOF(b->arg_off));
                b->arg_off[b->n_args] = off;
                b->arg_len[b->n_args++] = a_len + s_len;
        }
        return 0;
}

static int batch_push_str(Batch *b, const char *s) {
        return batch_push(b, false, NULL, 0, s, strlen(s));
}

/* v in decimal into buf (at least 21 bytes), without snprintf(): returns buf. */
static char* format_u64(char *buf, uint64_t v) {
        char d[20];
        size_t i = sizeof(d);

        do
                d[--i] = '0' + v % 10;
        while ((v /= 10) > 0);
        memcpy(buf, d + i, sizeof(d) - i);
        buf[sizeof(d) - i] = 0;
        return buf;
}

static int batch_push_num(Batch *b, uint64_t v) {
        char d[21];

        format_u64(d, v);
        return batch_push(b, false, NULL, 0, d, strlen(d));
}

static void batch_flush(ClusterLocks *cl, bool full);

static void batch_schedule(ClusterLocks *cl) {
        if (cl->batch.n == 1)
                (void) sd_event_source_set_enabled(cl->flush_source, SD_EVENT_ONESHOT);
}

/* Adds an operation to this iteration's batch (sent by cluster_locks_flush() or at the end of the iteration; at
 * once when it is full). Its answer goes to userdata as kind says. name, holder, to are copied. -ENOMEM. */
static int batch_add(ClusterLocks *cl, EntryKind kind, void *userdata, char code, const char *name,
                     const char *holder, const char *to, uint64_t timeout_ms, uint64_t wait_ms) {
        Batch *b = &cl->batch;
        size_t buf_len = b->buf_len, n_args = b->n_args;
        const char c[2] = { code, 0 };
        int r;

        assert(b->n < BATCH_MAX_OPS);
        if (code == 'L')
                r = batch_push(b, true, NULL, 0, cl->keys[CLUSTER_LOCK_KEY_INDEX],
                               strlen(cl->keys[CLUSTER_LOCK_KEY_INDEX]));
        else
                r = batch_push(b, true, cl->lock_prefix, strlen(cl->lock_prefix), name, strlen(name));
        if (r >= 0)
                r = batch_push_str(b, c);
        if (r >= 0 && (code == 'A' || code == 'R' || code == 'T'))
                r = batch_push_str(b, name) ?: batch_push_str(b, holder);
        if (r >= 0 && code == 'T')
                r = batch_push_str(b, to);
        if (r >= 0 && (code == 'A' || code == 'T'))
                r = batch_push_num(b, timeout_ms);
        if (r >= 0 && code == 'A')
                r = batch_push_num(b, wait_ms);
        if (r < 0) {
                b->buf_len = buf_len;
                b->n_args = n_args;
                return r;
        }
        b->entries[b->n++] = (BatchEntry) { .kind = kind, .code = code, .userdata = userdata };
        if (b->n == BATCH_MAX_OPS)
                batch_flush(cl, true);
        else
                batch_schedule(cl);
        return 0;
}

static void entry_done(ClusterLocks *cl, const BatchEntry *e, const redisReply *r, int64_t now);

static void on_batch_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        _cleanup_free_ SentBatch *b = userdata;
        ClusterLocks *cl = redis_conn_userdata(conn);
        int64_t now;

        if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != b->n + 1 ||
            reply_int(reply->element[0], &now) < 0) {
                for (size_t i = 0; i < b->n; i++)
                        entry_fail_reply(cl, &b->entries[i], reply);
                return;
        }
        for (size_t i = 0; i < b->n; i++)
                entry_done(cl, &b->entries[i], reply->element[i + 1], now);
}

/* Keeps the operations of a batch that could not be sent for fail_source to answer. */
static int batch_fail_later(ClusterLocks *cl, const BatchEntry *entries, size_t n, int error) {
        if (cl->n_failed + n > cl->failed_size) {
                size_t size = MAX(cl->n_failed + n, cl->failed_size * 2);
                FailedEntry *f = reallocarray(cl->failed, size, sizeof(FailedEntry));

                if (!f)
                        return -ENOMEM;
                cl->failed = f;
                cl->failed_size = size;
        }
        for (size_t i = 0; i < n; i++)
                cl->failed[cl->n_failed++] = (FailedEntry) { .entry = entries[i], .error = error };
        (void) sd_event_source_set_enabled(cl->fail_source, SD_EVENT_ONESHOT);
        return 0;
}

static void failed_answer_all(ClusterLocks *cl) {
        /* Taken first: an answer may add to the next batch, whose failure may add here. */
        _cleanup_free_ FailedEntry *f = TAKE_PTR(cl->failed);
        size_t n = cl->n_failed;

        cl->n_failed = cl->failed_size = 0;
        for (size_t i = 0; i < n; i++)
                entry_fail(cl, &f[i].entry, f[i].error, NULL);
}

static int on_fail(sd_event_source *s, void *userdata) {
        failed_answer_all(userdata);
        return 0;
}

/* Sends the batch: one EVALSHA, written at once. Each of its operations is answered from the script's answer, or
 * fails with the call. A batch that filled up (full) is sent from within the handling of one of its operations:
 * its failures are answered later, and it is written at the connection's next turn, since a failed write answers
 * every command under way at once. */
static void batch_flush(ClusterLocks *cl, bool full) {
        Batch *b = &cl->batch;
        SentBatch *sent;
        size_t n = b->n, argc = 0;
        int r;

        if (n == 0)
                return;
        (void) sd_event_source_set_enabled(cl->flush_source, SD_EVENT_OFF);

        b->argv[argc++] = cl->keys[CLUSTER_LOCK_KEY_TOKEN];
        b->argv[argc++] = cl->keys[CLUSTER_LOCK_KEY_INDEX];
        for (size_t i = 0; i < n; i++) {
                b->argv[argc] = b->buf + b->key_off[i];
                b->argl[argc++] = b->key_len[i];
        }
        b->argv[argc++] = cl->keys[CLUSTER_LOCK_KEY_CHANNEL];
        b->argv[argc++] = format_u64(cl->max_locks, limits.MAX_LOCKS);
        b->argv[argc++] = cl->lock_prefix;
        for (size_t i = 0; i < b->n_args; i++) {
                b->argv[argc] = b->buf + b->arg_off[i];
                b->argl[argc++] = b->arg_len[i];
        }
        for (size_t i = 0; i < BATCH_FIXED_KEYS; i++)
                b->argl[i] = strlen(b->argv[i]);
        for (size_t i = BATCH_FIXED_KEYS + n; i < BATCH_FIXED_KEYS + n + BATCH_FIXED_ARGS; i++)
                b->argl[i] = strlen(b->argv[i]);

        sent = malloc(offsetof(SentBatch, entries) + n * sizeof(BatchEntry));
        if (sent) {
                sent->n = n;
                memcpy(sent->entries, b->entries, n * sizeof(BatchEntry));
                r = redis_conn_eval(cl->commands, &cl->script, on_batch_reply, sent, (int) (BATCH_FIXED_KEYS + n),
                                    (int) argc, b->argv, b->argl);
        } else
                r = -ENOMEM;
        /* Emptied before anyone is answered: an answer may add to the next batch. */
        b->n = b->n_args = b->buf_len = 0;
        if (r < 0) {
                BatchEntry failed[BATCH_MAX_OPS];

                memcpy(failed, sent ? sent->entries : b->entries, n * sizeof(BatchEntry));
                free(sent);
                if (full && batch_fail_later(cl, failed, n, r) >= 0)
                        return;
                for (size_t i = 0; i < n; i++)
                        entry_fail(cl, &failed[i], r, NULL);
                return;
        }
        cl->n_batches++;
        cl->n_ops += n;
        if (!full)
                redis_conn_write_now(cl->commands);
}

static int on_flush(sd_event_source *s, void *userdata) {
        batch_flush(userdata, false);
        return 0;
}

void cluster_locks_flush(ClusterLocks *cl) {
        if (cl)
                batch_flush(cl, false);
}

static uint64_t op_timeout(const LockOp *op) {
        return MIN(op->timeout_ms, CLUSTER_LOCK_TIMEOUT_MAX_MS);
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

/* A waiter whose client went was granted the lock all the same (its attempt was under way): nobody will release
 * it, so it is released now, rather than held until its timeout. */
static void release_abandoned(ClusterLocks *cl, const LockOp *op) {
        (void) batch_add(cl, ENTRY_DETACHED, NULL, 'R', op->name, op->holder, NULL, 0, 0);
}

/* The lock is held until Redis' expiry, left_ms from now: the first waiter asks again just after it (a lock that
 * expires sends no notification). */
static void queue_arm_retry(WaitQueue *q, int64_t left_ms) {
        (void) sd_event_source_set_time_relative(q->retry, (uint64_t) left_ms * USEC_PER_MSEC + USEC_PER_MSEC);
        (void) sd_event_source_set_enabled(q->retry, SD_EVENT_ONESHOT);
}

static void attempt_done(ClusterLocks *cl, Waiter *w, const redisReply *reply, int64_t now) {
        WaitQueue *q = w->queue;
        LockInfo lock = { .name = w->op->name, .holder = w->op->holder };
        int64_t code, left = 0;
        LockOp *op;

        w->in_flight = false;
        if (w->cancelled || cl->freeing) {
                if (!cl->freeing && reply_grant(reply, now, &code, &lock, &left) >= 0 && code == 0)
                        release_abandoned(cl, w->op);
                op = waiter_remove(w);
                lock_op_done(op, &(LockOpResult) { .error = -ECANCELED });
                return;
        }
        if (reply_grant(reply, now, &code, &lock, &left) < 0) {
                op = waiter_remove(w);
                fail_unavailable(cl, op, -EIO, "unexpected answer to photond's script");
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
        /* Still held: try again when it expires (Redis' time), or at the next release. */
        queue_arm_retry(q, left);
        if (q->notified)
                queue_try(q);
}

static void waiter_attempt(Waiter *w) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), end, left = 0;
        int r;

        if (sd_event_source_get_time(w->deadline, &end) >= 0 && end > now)
                left = (end - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
        w->in_flight = true;
        r = batch_add(w->cl, ENTRY_ATTEMPT, w, 'A', w->op->name, w->op->holder, NULL, op_timeout(w->op),
                      w->timed_out ? 0 : MAX(left, (uint64_t) 1));
        if (r < 0) {
                ClusterLocks *cl = w->cl;
                LockOp *op = w->op;

                w->in_flight = false;
                (void) waiter_remove(w);
                fail_unavailable(cl, op, r, NULL);
        }
}

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

/* An acquire that found the lock held (until left_ms from now) and may wait: parked here, the client goes on
 * meanwhile. */
static int park(ClusterLocks *cl, LockOp *op, int64_t left_ms) {
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
        queue_arm_retry(q, left_ms);
        TAKE_PTR(w);
        return 0;
}

/* ---- the operations ---- */

static void acquire_done(ClusterLocks *cl, LockOp *op, const redisReply *reply, int64_t now) {
        LockInfo lock = { .name = op->name, .holder = op->holder };
        int64_t code, left = 0;
        int r;

        if (reply_grant(reply, now, &code, &lock, &left) < 0) {
                entry_fail_reply(cl, &(BatchEntry) { .kind = ENTRY_OP, .userdata = op }, reply);
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
        r = park(cl, op, left);
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

static void transfer_done(ClusterLocks *cl, LockOp *op, const redisReply *reply, int64_t now) {
        LockInfo lock = { .name = op->name, .holder = op->transfer_to };
        int64_t code, left;

        if (reply_grant(reply, now, &code, &lock, &left) < 0 || code == 1)
                entry_fail_reply(cl, &(BatchEntry) { .kind = ENTRY_OP, .userdata = op }, reply);
        else
                lock_op_done(op, &(LockOpResult) {
                                .error = code == 0 ? 0 : code == 2 ? -EPERM : -ENOSPC,
                                .lock = lock,
                        });
}

static void query_done(ClusterLocks *cl, LockOp *op, const redisReply *reply) {
        LockInfo lock = { .name = op->name };

        if (reply->type == REDIS_REPLY_NIL)
                lock_op_done(op, &(LockOpResult) { .found = false, .lock = lock });
        else if (reply_value(reply, &lock) < 0)
                entry_fail_reply(cl, &(BatchEntry) { .kind = ENTRY_OP, .userdata = op }, reply);
        else
                lock_op_done(op, &(LockOpResult) { .found = true, .lock = lock });
}

typedef struct ListEntry {
        const char *name;
        LockInfo lock;
} ListEntry;

static int list_entry_compare(const void *a, const void *b) {
        const ListEntry *x = a, *y = b;

        return x->lock.fencing_token < y->lock.fencing_token ? -1 : x->lock.fencing_token > y->lock.fencing_token;
}

/* name, value, name, value, ...: the list_locks array, oldest acquisition first. */
static int build_list(const redisReply *reply, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *a = NULL;
        _cleanup_free_ ListEntry *entries = NULL;
        size_t n;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0)
                return -EINVAL;
        n = reply->elements / 2;
        entries = new0(ListEntry, MAX(n, (size_t) 1));
        a = json_object_new_array();
        if (!entries || !a)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (reply->element[2 * i]->type != REDIS_REPLY_STRING ||
                    reply_value(reply->element[2 * i + 1], &entries[i].lock) < 0)
                        return -EINVAL;
                entries[i].name = reply->element[2 * i]->str;
        }
        /* Oldest acquisition first, as a single node lists them: tokens rise with every acquisition. */
        qsort(entries, n, sizeof(ListEntry), list_entry_compare);
        for (size_t i = 0; i < n; i++) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

                if (!o)
                        return -ENOMEM;
                if (json_add_string(o, "name", entries[i].name) < 0 ||
                    json_add_string(o, "holder", entries[i].lock.holder) < 0 ||
                    json_add_int64(o, "acquiredAt", entries[i].lock.acquired_at) < 0 ||
                    json_add_int64(o, "expiresAt", entries[i].lock.expires_at) < 0 ||
                    json_add_int64(o, "fencingToken", (int64_t) entries[i].lock.fencing_token) < 0 ||
                    json_object_array_add(a, o) < 0)
                        return -ENOMEM;
                TAKE_PTR(o);
        }
        *ret = TAKE_PTR(a);
        return 0;
}

static void list_done(ClusterLocks *cl, LockOp *op, const redisReply *reply) {
        struct json_object *a = NULL;
        int r;

        r = build_list(reply, &a);
        if (r == -ENOMEM)
                lock_op_done(op, &(LockOpResult) { .error = -ENOMEM });
        else if (r < 0)
                entry_fail_reply(cl, &(BatchEntry) { .kind = ENTRY_OP, .userdata = op }, reply);
        else
                lock_op_done(op, &(LockOpResult) { .locks = a });
}

/* One operation's answer (reply: its element of the script's answer; now: Redis' time then). */
static void entry_done(ClusterLocks *cl, const BatchEntry *e, const redisReply *reply, int64_t now) {
        LockOp *op = e->userdata;

        if (cl->freeing || reply->type == REDIS_REPLY_ERROR) {
                entry_fail_reply(cl, e, reply);
                return;
        }
        if (e->kind == ENTRY_ATTEMPT) {
                attempt_done(cl, e->userdata, reply, now);
                return;
        }
        if (e->kind == ENTRY_DETACHED)
                return;
        switch (e->code) {
        case 'A':
                acquire_done(cl, op, reply, now);
                break;
        case 'R':
                if (reply->type != REDIS_REPLY_INTEGER)
                        entry_fail_reply(cl, e, reply);
                else
                        lock_op_done(op, &(LockOpResult) { .error = reply->integer == 0 ? 0 : -EPERM });
                break;
        case 'T':
                transfer_done(cl, op, reply, now);
                break;
        case 'Q':
                query_done(cl, op, reply);
                break;
        case 'L':
                list_done(cl, op, reply);
                break;
        default:
                assert(false);
        }
}

static void backend_submit(void *userdata, LockOp *op) {
        ClusterLocks *cl = userdata;
        int r;

        switch (op->type) {
        case REQUEST_LOCK:
        case REQUEST_ASSIGN_LOCK:
                op->backend_mark = cl->n_notifications;
                r = batch_add(cl, ENTRY_OP, op, 'A', op->name, op->holder, NULL, op_timeout(op), op->wait_ms);
                break;
        case REQUEST_UNLOCK:
                r = batch_add(cl, ENTRY_OP, op, 'R', op->name, op->holder, NULL, 0, 0);
                break;
        case REQUEST_TRANSFER_LOCK:
                r = batch_add(cl, ENTRY_OP, op, 'T', op->name, op->holder, op->transfer_to, op_timeout(op), 0);
                break;
        case REQUEST_QUERY_LOCK:
                r = batch_add(cl, ENTRY_OP, op, 'Q', op->name, NULL, NULL, 0, 0);
                break;
        case REQUEST_LIST_LOCKS:
                r = batch_add(cl, ENTRY_OP, op, 'L', NULL, NULL, NULL, 0, 0);
                break;
        default:
                r = -EINVAL;
        }
        if (r < 0)
                fail_unavailable(cl, op, r, NULL);
}

static void backend_cancel(void *userdata, LockOp *op) {
        Waiter *w = op->backend_data;

        /* Under way in Redis or in the batch (not parked): its answer ends it, and finds no client. */
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
        /* Releases may have gone unheard meanwhile: every waiter asks again, each queue from its own retry timer
         * (an attempt's answer can free a queue, so none is tried while the table is walked). */
        HASH_ITER(hh, cl->queues, q, tmp)
                queue_arm_retry(q, 0);
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
        r = redis_script_init(&cl->script, batch_lua);
        if (r < 0)
                return r;
        cl->script_list[0] = &cl->script;
        r = sd_event_add_defer(cl->event, &cl->flush_source, on_flush, cl);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(cl->flush_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(cl->flush_source, "cluster-locks-flush");
        /* After the sources of this iteration that may add to the batch (the clients, Redis' answers, timers). */
        (void) sd_event_source_set_priority(cl->flush_source, SD_EVENT_PRIORITY_NORMAL + 1);
        r = sd_event_add_defer(cl->event, &cl->fail_source, on_fail, cl);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(cl->fail_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(cl->fail_source, "cluster-locks-fail");
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
        /* The batch not sent yet, then the answers under way (NULL now): their operations end (-ECANCELED). */
        for (size_t i = 0; i < cl->batch.n; i++)
                entry_fail(cl, &cl->batch.entries[i], -ECANCELED, NULL);
        cl->batch.n = 0;
        failed_answer_all(cl);
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
        sd_event_source_disable_unref(cl->flush_source);
        sd_event_source_disable_unref(cl->fail_source);
        free(cl->failed);
        free(cl->batch.buf);
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
            (r = json_add_int64(o, "batches", (int64_t) cl->n_batches)) < 0 ||
            (r = json_add_int64(o, "unavailable", (int64_t) cl->n_unavailable)) < 0 ||
            (r = json_add_int64(o, "notifications", (int64_t) cl->n_notifications)) < 0 ||
            (r = json_add_int64(o, "handovers", (int64_t) cl->n_handovers)) < 0)
                return r;
        return json_add(data, "clusterLocks", TAKE_PTR(o));
}
