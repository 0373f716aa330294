/* SPDX-License-Identifier: MIT */

/* Cluster mode: the job definitions in Redis, each node's mirror of them in its local scheduler, and the claim of
 * every occurrence before it runs (photond-cluster-jobs.h). A front end beside the scheduler core: it calls the
 * core's typed functions (scheduler_schedule(), scheduler_set_state(), scheduler_unschedule(),
 * scheduler_claim_done()) and the core calls it only through SchedulerHooks.claim_occurrence. */

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "clock.h"
#include "event-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-cluster-jobs.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "ratelimit.h"
#include "string-util.h"

/* KEYS: jobs hash, state hash, version. ARGV: notice channel, key, definition, MAX_JOBS. A new key starts enabled
 * and not paused (a state left by an older job of the key goes); a key already there keeps its state, as a
 * reschedule on one node does. Returns the new version, or -1 when MAX_JOBS keys exist (a new key). */
static const char script_put_source[] =
        "local new = redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0\n"
        "if new and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end\n"
        "if new then redis.call('HDEL', KEYS[2], ARGV[2]) end\n"
        "redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])\n"
        "local v = redis.call('INCR', KEYS[3])\n"
        "redis.call('PUBLISH', ARGV[1], v)\n"
        "return v\n";

/* KEYS as above. ARGV: notice channel, key. Returns the new version, or 0 when there was no such key. */
static const char script_del_source[] =
        "local n = redis.call('HDEL', KEYS[1], ARGV[2])\n"
        "redis.call('HDEL', KEYS[2], ARGV[2])\n"
        "if n == 0 then return 0 end\n"
        "local v = redis.call('INCR', KEYS[3])\n"
        "redis.call('PUBLISH', ARGV[1], v)\n"
        "return v\n";

/* KEYS as above. ARGV: notice channel, photon, method, switch (enable, disable, pause, resume). Switches every job
 * of photon that runs method; returns their keys, sorted. Definitions are only read here (cjson would not print
 * args back as they were). */
static const char script_switch_source[] =
        "local ids = {}\n"
        "local all = redis.call('HGETALL', KEYS[1])\n"
        "for i = 1, #all, 2 do\n"
        "  local ok, j = pcall(cjson.decode, all[i + 1])\n"
        "  if ok and type(j) == 'table' and j.photonName == ARGV[2] and j.method == ARGV[3] then\n"
        "    local st = redis.call('HGET', KEYS[2], all[i]) or '10'\n"
        "    local e, p = string.sub(st, 1, 1), string.sub(st, 2, 2)\n"
        "    if ARGV[4] == 'enable' then e = '1' elseif ARGV[4] == 'disable' then e = '0'\n"
        "    elseif ARGV[4] == 'pause' then p = '1' else p = '0' end\n"
        "    redis.call('HSET', KEYS[2], all[i], e .. p)\n"
        "    ids[#ids + 1] = all[i]\n"
        "  end\n"
        "end\n"
        "table.sort(ids)\n"
        "if #ids > 0 then\n"
        "  local v = redis.call('INCR', KEYS[3])\n"
        "  redis.call('PUBLISH', ARGV[1], v)\n"
        "end\n"
        "return ids\n";

/* KEYS as above. One consistent snapshot: {version, HGETALL jobs, HGETALL state}. */
static const char script_load_source[] =
        "return {redis.call('GET', KEYS[3]) or '0', redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}\n";

/* KEYS: a history list. ARGV: the entry, the cap, the TTL in ms. */
static const char script_history_source[] =
        "redis.call('LPUSH', KEYS[1], ARGV[1])\n"
        "redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)\n"
        "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
        "return 1\n";

static RedisScript script_put, script_del, script_switch, script_load, script_history;
static const RedisScript *const scripts[] = {
        &script_put, &script_del, &script_switch, &script_load, &script_history, NULL
};
static bool scripts_ready;

int cluster_jobs_scripts(const RedisScript *const **ret) {
        int r;

        if (!scripts_ready) {
                if ((r = redis_script_init(&script_put, script_put_source)) < 0 ||
                    (r = redis_script_init(&script_del, script_del_source)) < 0 ||
                    (r = redis_script_init(&script_switch, script_switch_source)) < 0 ||
                    (r = redis_script_init(&script_load, script_load_source)) < 0 ||
                    (r = redis_script_init(&script_history, script_history_source)) < 0)
                        return r;
                scripts_ready = true;
        }
        *ret = scripts;
        return 0;
}

typedef enum OpKind {
        OP_CLAIM,
        OP_PUT,
        OP_DEL,
        OP_SWITCH,
        OP_LOAD,
        OP_HISTORY_ADD,
        OP_HISTORY,
} OpKind;

/* One command sent to Redis and not answered yet. Its owner may go first: cj is then NULL and the answer goes
 * nowhere (the connection calls back even when it is freed). */
typedef struct Op Op;
struct Op {
        ClusterJobs *cj;
        OpKind kind;
        LIST_FIELDS(Op, ops);

        char *id;                       /* claim, put, del: the job key */
        int64_t due;                    /* claim */
        char *def;                      /* put: the definition */
        char *echo_id;                  /* del: the id as the requester sent it */
        char *photon, *method;          /* switch */
        JobSwitch sw;
        int64_t since;                  /* history */
        unsigned limit;

        ClusterJobsCallback cb;
        void *waiter;
        char *waiter_id;
};

/* What this node last applied of a key, so that a reload touches (and writes the file of) only what changed. */
typedef struct Mirrored {
        char *id;
        char *def;
        char state[3];
        bool seen;                      /* in the snapshot being applied */
        UT_hash_handle hh;
} Mirrored;

struct ClusterJobs {
        sd_event *event;
        Scheduler *scheduler;
        Dispatcher *dispatcher;
        RedisConn *commands;
        RedisConn *subscriber;          /* the change notices only */
        char *node_id;
        char *key_jobs, *key_state, *key_version, *channel;
        char *prefix;

        LIST_HEAD(Op, ops);
        Mirrored *mirrored;
        uint64_t version;               /* of the last snapshot applied, 0: none yet */
        bool loading, reload_again;
        sd_event_source *retry_source;

        char reason[512];
        RateLimit warn_log;
        uint64_t n_claimed, n_lost, n_not_capable, n_claim_failed, n_late, n_catch_ups, n_loads, n_invalid;
        uint64_t n_history_sent, n_history_failed;
};

/* ---- pure helpers ---- */

int cluster_jobs_claim_key(const char *prefix, const char *id, int64_t due_ms, char **ret) {
        return asprintf(ret, "%sfire:%s:%" PRIi64, prefix, id, due_ms) < 0 ? -ENOMEM : 0;
}

int cluster_jobs_history_key(const char *prefix, const char *photon, const char *method, const char *working_dir,
                             char **ret) {
        _cleanup_free_ char *k = NULL;
        char *ipc;
        int r;

        /* The job key of a job "x" there ends in ":ipc:x"; what comes before it names the photon and the base. */
        r = schedule_job_key(photon, working_dir, "x", &k);
        if (r < 0)
                return r;
        ipc = strrchr(k, ':');
        ipc -= 4;
        *ipc = 0;
        return asprintf(ret, "%shistory:%s:%s", prefix, k, method) < 0 ? -ENOMEM : 0;
}

int cluster_jobs_definition(const JobSpec *spec, char **ret) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        const char *s;
        int r;

        if (!o)
                return -ENOMEM;
        r = json_add_string(o, "photonName", spec->photon);
        if (r >= 0)
                r = json_add_string(o, "jobId", spec->job_id);
        if (r >= 0)
                r = json_add_string(o, "method", spec->method);
        if (r >= 0)
                r = json_add_string(o, "cron", spec->cron);
        if (r >= 0 && spec->args)
                r = json_add(o, "args", json_object_get(spec->args));
        if (r >= 0)
                r = json_add_string(o, "workingDir", spec->working_dir);
        if (r >= 0)
                r = json_add_string(o, "createdBy", spec->created_by);
        if (r < 0)
                return r;
        s = json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS);
        if (!s)
                return -ENOMEM;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int cluster_jobs_definition_parse(const char *json, JobSpec *ret_spec, struct json_object **ret_obj) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *args = NULL, *v;
        JobSpec spec = {};

        if (json_parse(json, strlen(json), &o, NULL) < 0 || !json_object_is_type(o, json_type_object))
                return -EBADMSG;
        spec.photon = json_get_string(o, "photonName");
        spec.job_id = json_get_string(o, "jobId");
        spec.method = json_get_string(o, "method");
        spec.cron = json_get_string(o, "cron");
        spec.working_dir = json_get_string(o, "workingDir");
        spec.created_by = json_get_string(o, "createdBy");
        if (!name_is_valid(spec.photon) || !name_is_valid(spec.job_id) || !name_is_valid(spec.method) || !spec.cron)
                return -EBADMSG;
        if (json_object_object_get_ex(o, "workingDir", &v) && !spec.working_dir)
                return -EBADMSG;
        if (spec.working_dir && spec.working_dir[0] != '/')
                return -EBADMSG;
        if (json_object_object_get_ex(o, "args", &args) && !json_object_is_type(args, json_type_object))
                return -EBADMSG;
        spec.args = args;
        *ret_spec = spec;
        *ret_obj = TAKE_PTR(o);
        return 0;
}

int cluster_jobs_state_parse(const char *s, size_t len, bool *ret_enabled, bool *ret_paused) {
        if (len != 2 || (s[0] != '0' && s[0] != '1') || (s[1] != '0' && s[1] != '1'))
                return -EBADMSG;
        *ret_enabled = s[0] == '1';
        *ret_paused = s[1] == '1';
        return 0;
}

/* ---- operations ---- */

static Op* op_free(Op *op) {
        if (!op)
                return NULL;
        if (op->cj)
                LIST_REMOVE(ops, op->cj->ops, op);
        free(op->id);
        free(op->def);
        free(op->echo_id);
        free(op->photon);
        free(op->method);
        free(op->waiter_id);
        return mfree(op);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Op*, op_free);

static int op_new(ClusterJobs *cj, OpKind kind, ClusterJobsCallback cb, void *waiter, const char *waiter_id,
                  Op **ret) {
        Op *op = new0(Op, 1);

        if (!op)
                return -ENOMEM;
        op->kind = kind;
        op->cb = cb;
        op->waiter = waiter;
        if (waiter_id && !(op->waiter_id = strdup(waiter_id))) {
                free(op);
                return -ENOMEM;
        }
        op->cj = cj;
        LIST_PREPEND(ops, cj->ops, op);
        *ret = op;
        return 0;
}

static void op_reply(Op *op, const ClusterJobsResult *result) {
        ClusterJobsCallback cb = TAKE_PTR(op->cb);

        if (cb)
                cb(op->waiter, op->waiter_id, result);
}

static const char* reply_problem(ClusterJobs *cj, RedisConn *conn, redisReply *reply) {
        if (!reply)
                snprintf(cj->reason, sizeof(cj->reason), "Redis did not answer (%s)",
                         redis_conn_last_error(conn) ?: "connection lost");
        else
                snprintf(cj->reason, sizeof(cj->reason), "Redis refused the change: %.400s",
                         reply->type == REDIS_REPLY_ERROR && reply->str ? reply->str : "an unexpected answer");
        return cj->reason;
}

const char* cluster_jobs_unavailable(ClusterJobs *cj, int error) {
        const char *last = redis_conn_last_error(cj->commands);

        if (error == -ENOTCONN)
                snprintf(cj->reason, sizeof(cj->reason), "Redis is not connected%s%s%s",
                         last ? " (" : "", last ?: "", last ? ")" : "");
        else if (error == -ENOBUFS)
                snprintf(cj->reason, sizeof(cj->reason), "too many Redis commands are waiting for an answer");
        else
                snprintf(cj->reason, sizeof(cj->reason), "the command could not be sent to Redis: %s",
                         strerror(ERRNO_VALUE(error)));
        return cj->reason;
}

static int send_script(ClusterJobs *cj, const RedisScript *script, Op *op, int argc, const char **argv);

/* ---- the mirror ---- */

static Mirrored* mirrored_find(ClusterJobs *cj, const char *id) {
        Mirrored *m;

        HASH_FIND_STR(cj->mirrored, id, m);
        return m;
}

static void mirrored_drop(ClusterJobs *cj, Mirrored *m) {
        if (!m)
                return;
        HASH_DEL(cj->mirrored, m);
        free(m->id);
        free(m->def);
        free(m);
}

static Mirrored* mirrored_get(ClusterJobs *cj, const char *id) {
        Mirrored *m = mirrored_find(cj, id);

        if (m)
                return m;
        m = new0(Mirrored, 1);
        if (!m)
                return NULL;
        m->id = strdup(id);
        if (!m->id) {
                free(m);
                return NULL;
        }
        memcpy(m->state, "10", 3);
        HASH_ADD_KEYPTR(hh, cj->mirrored, m->id, strlen(m->id), m);
        return m;
}

/* Makes the local job id what def says (its state aside). 0, or a negative errno (logged). */
static int mirror_apply_definition(ClusterJobs *cj, const char *id, const char *def) {
        _cleanup_(json_object_putp) struct json_object *obj = NULL;
        _cleanup_free_ char *key = NULL, *reason = NULL;
        JobInfo info;
        Mirrored *m;
        JobSpec spec;
        int r;

        m = mirrored_find(cj, id);
        if (m && m->def && streq(m->def, def) && scheduler_get(cj->scheduler, id, &info) >= 0 &&
            streq(info.id, id))
                return 0;       /* this node has it as it is */

        r = cluster_jobs_definition_parse(def, &spec, &obj);
        if (r >= 0)
                r = schedule_job_key(spec.photon, spec.working_dir, spec.job_id, &key);
        if (r >= 0 && !streq(key, id))
                r = -EBADMSG;
        if (r < 0) {
                cj->n_invalid++;
                return log_warning_errno(r, "Cluster: ignoring job %s in Redis: not a definition photond wrote.", id);
        }
        r = scheduler_schedule(cj->scheduler, &spec, NULL, &reason);
        if (r < 0)
                return log_warning_errno(r, "Cluster: job %s could not be copied to this node: %s", id,
                                         reason ?: "see above");
        m = mirrored_get(cj, id);
        if (!m)
                return log_oom();
        free(m->def);
        m->def = strdup(def);
        if (!m->def)
                return log_oom();
        return 0;
}

static void mirror_apply_state(ClusterJobs *cj, const char *id, const char *state, size_t len) {
        Mirrored *m = mirrored_find(cj, id);
        bool enabled, paused;
        int r;

        if (cluster_jobs_state_parse(state, len, &enabled, &paused) < 0) {
                cj->n_invalid++;
                return;
        }
        r = scheduler_set_state(cj->scheduler, id, enabled, paused);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Cluster: failed to switch job %s: %m", id);
        if (m)
                memcpy(m->state, state, 2);
}

typedef struct IdList {
        char **ids;
        size_t n, alloc;
} IdList;

static int collect_id(const JobInfo *info, void *userdata) {
        IdList *l = userdata;

        if (l->n == l->alloc) {
                size_t na = MAX(l->alloc * 2, (size_t) 16);
                char **n = realloc(l->ids, na * sizeof(char*));

                if (!n)
                        return -ENOMEM;
                l->ids = n;
                l->alloc = na;
        }
        l->ids[l->n] = strdup(info->id);
        if (!l->ids[l->n])
                return -ENOMEM;
        l->n++;
        return 0;
}

static redisReply* snapshot_state_of(redisReply *states, const char *id) {
        for (size_t i = 0; i + 1 < states->elements; i += 2)
                if (states->element[i]->type == REDIS_REPLY_STRING && streq(states->element[i]->str, id))
                        return states->element[i + 1];
        return NULL;
}

/* A snapshot {version, HGETALL jobs, HGETALL state}: this node's jobs become exactly those. */
static int mirror_apply_snapshot(ClusterJobs *cj, redisReply *reply) {
        redisReply *defs, *states;
        IdList local = {};
        uint64_t version;
        Mirrored *m, *tmp;
        unsigned n_removed = 0;
        int r;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
            reply->element[0]->type != REDIS_REPLY_STRING ||
            safe_atou64(reply->element[0]->str, &version) < 0 ||
            reply->element[1]->type != REDIS_REPLY_ARRAY || reply->element[2]->type != REDIS_REPLY_ARRAY)
                return -EBADMSG;
        defs = reply->element[1];
        states = reply->element[2];

        HASH_ITER(hh, cj->mirrored, m, tmp)
                m->seen = false;
        for (size_t i = 0; i + 1 < defs->elements; i += 2) {
                redisReply *k = defs->element[i], *v = defs->element[i + 1], *st;

                if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || strlen(k->str) != k->len ||
                    strlen(v->str) != v->len) {
                        cj->n_invalid++;
                        continue;
                }
                if (mirror_apply_definition(cj, k->str, v->str) < 0)
                        continue;
                st = snapshot_state_of(states, k->str);
                if (st && st->type == REDIS_REPLY_STRING)
                        mirror_apply_state(cj, k->str, st->str, st->len);
                else
                        mirror_apply_state(cj, k->str, "10", 2);
                m = mirrored_find(cj, k->str);
                if (m)
                        m->seen = true;
        }

        /* What Redis does not have is not the cluster's: unscheduled elsewhere meanwhile, or a job file of this
         * node's from before (Redis is the truth in cluster mode; docs/cluster.md). */
        r = scheduler_foreach(cj->scheduler, collect_id, &local);
        for (size_t i = 0; i < local.n; i++) {
                if (r >= 0) {
                        m = mirrored_find(cj, local.ids[i]);
                        if (!m || !m->seen) {
                                log_info("Cluster: job %s is not in Redis (any more): removing it here.",
                                         local.ids[i]);
                                (void) scheduler_unschedule(cj->scheduler, local.ids[i]);
                                mirrored_drop(cj, m);
                                n_removed++;
                        }
                }
                free(local.ids[i]);
        }
        free(local.ids);
        if (r < 0)
                return r;
        HASH_ITER(hh, cj->mirrored, m, tmp)
                if (!m->seen)
                        mirrored_drop(cj, m);

        cj->version = version;
        cj->n_loads++;
        log_debug("Cluster: job definitions at version %" PRIu64 " applied (%u jobs, %u removed here).", version,
                  HASH_COUNT(cj->mirrored), n_removed);
        return 0;
}

static void request_load(ClusterJobs *cj);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        request_load(userdata);
        return 0;
}

static void load_later(ClusterJobs *cj) {
        int r;

        r = event_reset_time_relative(cj->event, &cj->retry_source, CLOCK_MONOTONIC,
                                      CLUSTER_JOBS_RELOAD_RETRY_USEC, 0, on_retry, cj, "cluster-jobs-retry");
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to arm the reload of the job definitions: %m");
}

static void request_load(ClusterJobs *cj) {
        _cleanup_(op_freep) Op *op = NULL;
        int r;

        if (cj->loading) {
                cj->reload_again = true;
                return;
        }
        r = op_new(cj, OP_LOAD, NULL, NULL, NULL, &op);
        if (r >= 0)
                r = send_script(cj, &script_load, op, 0, NULL);
        if (r < 0) {
                /* The command connection is not (yet) up: again soon. */
                load_later(cj);
                return;
        }
        TAKE_PTR(op);
        cj->loading = true;
        cj->reload_again = false;
}

/* ---- Redis answers ---- */

static void on_claim(ClusterJobs *cj, Op *op, RedisConn *conn, redisReply *reply) {
        bool granted = false;

        if (reply && reply->type == REDIS_REPLY_STATUS) {
                granted = true;
                cj->n_claimed++;
        } else if (reply && reply->type == REDIS_REPLY_NIL)
                cj->n_lost++;   /* another node runs it */
        else {
                cj->n_claim_failed++;
                if (ratelimit_below(&cj->warn_log, now_usec(CLOCK_MONOTONIC)))
                        log_warning("Cluster: the claim of job %s due at %" PRIi64 " failed, this node does not run "
                                    "it: %s.", op->id, op->due, reply_problem(cj, conn, reply));
        }
        scheduler_claim_done(cj->scheduler, op->id, op->due, granted);
}

static void on_put(ClusterJobs *cj, Op *op, RedisConn *conn, redisReply *reply) {
        JobInfo info;

        if (!reply || reply->type != REDIS_REPLY_INTEGER)
                return op_reply(op, &(const ClusterJobsResult) { .unavailable = reply_problem(cj, conn, reply) });
        if (reply->integer < 0)
                return op_reply(op, &(const ClusterJobsResult) { .id = op->id, .full = true });

        /* The cluster has it: this node's copy now, so that the answer shows it (the notice reload finds it done). */
        if (mirror_apply_definition(cj, op->id, op->def) >= 0 && scheduler_get(cj->scheduler, op->id, &info) >= 0)
                return op_reply(op, &(const ClusterJobsResult) { .id = op->id, .job = &info });
        op_reply(op, &(const ClusterJobsResult) { .id = op->id });
}

static void on_del(ClusterJobs *cj, Op *op, RedisConn *conn, redisReply *reply) {
        bool local;

        if (!reply || reply->type != REDIS_REPLY_INTEGER)
                return op_reply(op, &(const ClusterJobsResult) { .unavailable = reply_problem(cj, conn, reply) });
        local = scheduler_unschedule(cj->scheduler, op->id) >= 0;
        mirrored_drop(cj, mirrored_find(cj, op->id));
        op_reply(op, &(const ClusterJobsResult) { .id = op->echo_id, .removed = reply->integer > 0 || local });
}

static void on_switch(ClusterJobs *cj, Op *op, RedisConn *conn, redisReply *reply) {
        _cleanup_(json_object_putp) struct json_object *ids = NULL, *local = NULL;

        if (!reply || reply->type != REDIS_REPLY_ARRAY)
                return op_reply(op, &(const ClusterJobsResult) { .unavailable = reply_problem(cj, conn, reply) });
        ids = json_object_new_array();
        if (!ids)
                return (void) log_oom();
        for (size_t i = 0; i < reply->elements; i++)
                if (reply->element[i]->type == REDIS_REPLY_STRING &&
                    json_object_array_add(ids, json_object_new_string(reply->element[i]->str)) < 0)
                        return (void) log_oom();
        /* This node's copies at once; the reload after the notice sets each exactly as Redis has it. */
        (void) scheduler_switch(cj->scheduler, op->photon, op->method, op->sw, &local);
        op_reply(op, &(const ClusterJobsResult) {
                        .ids = ids,
                        .photon = op->photon,
                        .method = op->method,
                        .sw = op->sw,
                });
}

static void on_load(ClusterJobs *cj, Op *op, RedisConn *conn, redisReply *reply) {
        int r;

        cj->loading = false;
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
                if (ratelimit_below(&cj->warn_log, now_usec(CLOCK_MONOTONIC)))
                        log_warning("Cluster: loading the job definitions failed: %s; trying again.",
                                    reply_problem(cj, conn, reply));
                load_later(cj);
                return;
        }
        r = mirror_apply_snapshot(cj, reply);
        if (r < 0)
                log_warning_errno(r, "Cluster: the job definitions from Redis could not be applied: %m");
        if (cj->reload_again)
                request_load(cj);
}

static void on_history_add(ClusterJobs *cj, Op *op, RedisConn *conn, redisReply *reply) {
        if (reply && reply->type == REDIS_REPLY_INTEGER) {
                cj->n_history_sent++;
                return;
        }
        cj->n_history_failed++;
        if (ratelimit_below(&cj->warn_log, now_usec(CLOCK_MONOTONIC)))
                log_warning("Cluster: a run recorded in %s is only in this node's run history: %s.", op->id,
                            reply_problem(cj, conn, reply));
}

static void on_history(ClusterJobs *cj, Op *op, RedisConn *conn, redisReply *reply) {
        _cleanup_(json_object_putp) struct json_object *entries = NULL;
        int64_t since = MAX(op->since, scheduler_clock_ms(cj->scheduler) - SCHEDULE_HISTORY_TTL_MS);
        unsigned limit = op->limit == 0 || op->limit > SCHEDULE_HISTORY_MAX_PER_METHOD ?
                SCHEDULE_HISTORY_MAX_PER_METHOD : op->limit;

        if (!reply || reply->type != REDIS_REPLY_ARRAY)
                return op_reply(op, &(const ClusterJobsResult) { .unavailable = reply_problem(cj, conn, reply) });
        entries = json_object_new_array();
        if (!entries)
                return (void) log_oom();
        for (size_t i = 0; i < reply->elements && json_object_array_length(entries) < limit; i++) {
                redisReply *e = reply->element[i];
                struct json_object *o = NULL;
                int64_t ts;

                /* Redis is a boundary: what is not an entry photond wrote is skipped, as a bad line of a file. */
                if (e->type != REDIS_REPLY_STRING || json_parse(e->str, e->len, &o, NULL) < 0)
                        continue;
                if (!json_object_is_type(o, json_type_object) || json_get_int64(o, "ts", false, &ts) < 0 ||
                    ts < since || json_object_array_add(entries, o) < 0)
                        json_object_put(o);
        }
        op_reply(op, &(const ClusterJobsResult) { .entries = entries, .photon = op->photon, .method = op->method });
}

static void on_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        _cleanup_(op_freep) Op *op = userdata;
        ClusterJobs *cj = op->cj;

        if (!cj)
                return;         /* its owner went */
        switch (op->kind) {
        case OP_CLAIM:
                return on_claim(cj, op, conn, reply);
        case OP_PUT:
                return on_put(cj, op, conn, reply);
        case OP_DEL:
                return on_del(cj, op, conn, reply);
        case OP_SWITCH:
                return on_switch(cj, op, conn, reply);
        case OP_LOAD:
                return on_load(cj, op, conn, reply);
        case OP_HISTORY_ADD:
                return on_history_add(cj, op, conn, reply);
        case OP_HISTORY:
                return on_history(cj, op, conn, reply);
        }
}

static int send_script(ClusterJobs *cj, const RedisScript *script, Op *op, int argc, const char **argv) {
        const char *v[REDIS_SCRIPT_MAX_ARGS];
        size_t len[REDIS_SCRIPT_MAX_ARGS];
        int n = 0;

        assert(argc + 4 <= REDIS_SCRIPT_MAX_ARGS);
        v[n++] = cj->key_jobs;
        v[n++] = cj->key_state;
        v[n++] = cj->key_version;
        if (script != &script_load)
                v[n++] = cj->channel;
        for (int i = 0; i < argc; i++)
                v[n++] = argv[i];
        for (int i = 0; i < n; i++)
                len[i] = strlen(v[i]);
        return redis_conn_eval(cj->commands, script, on_reply, op, 3, n, v, len);
}

/* ---- what the Manager and the control front end call ---- */

int cluster_jobs_claim(ClusterJobs *cj, const char *id, const char *photon, const char *method, int64_t due_ms,
                       int64_t now_ms, bool catch_up) {
        _cleanup_(op_freep) Op *op = NULL;
        _cleanup_free_ char *key = NULL;
        char node_ttl[32];
        int r;

        if (!cj)
                return -ENOTCONN;
        if (catch_up) {
                /* No node knows when the cluster last ran the job: another node probably ran the occurrence. */
                cj->n_catch_ups++;
                log_debug("Cluster: no catch-up run of job %s (cluster mode).", id);
                return -ESTALE;
        }
        if (now_ms - due_ms > CLUSTER_JOBS_CLAIM_MAX_LATE_MS) {
                cj->n_late++;
                log_notice("Cluster: job %s woke %" PRIi64 " ms after its due time; leaving the occurrence (its "
                           "claim may have expired elsewhere).", id, now_ms - due_ms);
                return -ETIME;
        }
        if (!dispatcher_can_serve_here(cj->dispatcher, photon, method)) {
                /* A node that can run it takes it. */
                cj->n_not_capable++;
                log_debug("Cluster: not claiming job %s: no provider or handler of %s here.", id, photon);
                return -EHOSTUNREACH;
        }

        r = cluster_jobs_claim_key(cj->prefix, id, due_ms, &key);
        if (r >= 0)
                r = op_new(cj, OP_CLAIM, NULL, NULL, NULL, &op);
        if (r >= 0) {
                op->due = due_ms;
                op->id = strdup(id);
                if (!op->id)
                        r = -ENOMEM;
        }
        if (r >= 0) {
                snprintf(node_ttl, sizeof(node_ttl), "%" PRIi64, CLUSTER_JOBS_CLAIM_TTL_MS);
                r = redis_conn_command(cj->commands, on_reply, op, 6,
                                       (const char *[]) { "SET", key, cj->node_id, "NX", "PX", node_ttl },
                                       (const size_t[]) { 3, strlen(key), strlen(cj->node_id), 2, 2,
                                                          strlen(node_ttl) });
        }
        if (r < 0) {
                /* No claim, no run: exactly-once is kept by leaving the occurrence (docs/cluster.md). */
                cj->n_claim_failed++;
                if (ratelimit_below(&cj->warn_log, now_usec(CLOCK_MONOTONIC)))
                        log_warning("Cluster: job %s due at %" PRIi64 " was not claimed, so this node does not run "
                                    "it: %s.", id, due_ms, cluster_jobs_unavailable(cj, r));
                return r;
        }
        TAKE_PTR(op);
        return 0;
}

int cluster_jobs_schedule(ClusterJobs *cj, const JobSpec *spec, ClusterJobsCallback cb, void *waiter,
                          const char *waiter_id) {
        _cleanup_(op_freep) Op *op = NULL;
        char max[32];
        int r;

        r = op_new(cj, OP_PUT, cb, waiter, waiter_id, &op);
        if (r < 0)
                return r;
        r = schedule_job_key(spec->photon, spec->working_dir, spec->job_id, &op->id);
        if (r < 0)
                return r;
        r = cluster_jobs_definition(spec, &op->def);
        if (r < 0)
                return r;
        snprintf(max, sizeof(max), "%" PRIu64, limits.MAX_JOBS);
        r = send_script(cj, &script_put, op, 3, (const char *[]) { op->id, op->def, max });
        if (r < 0)
                return r;
        TAKE_PTR(op);
        return 0;
}

int cluster_jobs_unschedule(ClusterJobs *cj, const char *id, const char *echo_id, ClusterJobsCallback cb,
                            void *waiter, const char *waiter_id) {
        _cleanup_(op_freep) Op *op = NULL;
        int r;

        r = op_new(cj, OP_DEL, cb, waiter, waiter_id, &op);
        if (r < 0)
                return r;
        op->id = strdup(id);
        op->echo_id = strdup(echo_id);
        if (!op->id || !op->echo_id)
                return -ENOMEM;
        r = send_script(cj, &script_del, op, 1, (const char *[]) { op->id });
        if (r < 0)
                return r;
        TAKE_PTR(op);
        return 0;
}

static const char* const switch_names[_JOB_SWITCH_MAX] = {
        [JOB_SWITCH_ENABLE] = "enable",
        [JOB_SWITCH_DISABLE] = "disable",
        [JOB_SWITCH_PAUSE] = "pause",
        [JOB_SWITCH_RESUME] = "resume",
};

int cluster_jobs_switch(ClusterJobs *cj, const char *photon, const char *method, JobSwitch sw,
                        ClusterJobsCallback cb, void *waiter, const char *waiter_id) {
        _cleanup_(op_freep) Op *op = NULL;
        int r;

        if (sw < 0 || sw >= _JOB_SWITCH_MAX)
                return -EINVAL;
        r = op_new(cj, OP_SWITCH, cb, waiter, waiter_id, &op);
        if (r < 0)
                return r;
        op->sw = sw;
        op->photon = strdup(photon);
        op->method = strdup(method);
        if (!op->photon || !op->method)
                return -ENOMEM;
        r = send_script(cj, &script_switch, op, 3, (const char *[]) { photon, method, switch_names[sw] });
        if (r < 0)
                return r;
        TAKE_PTR(op);
        return 0;
}

int cluster_jobs_history(ClusterJobs *cj, const char *photon, const char *method, const char *working_dir,
                         int64_t since_ms, unsigned limit, ClusterJobsCallback cb, void *waiter,
                         const char *waiter_id) {
        _cleanup_(op_freep) Op *op = NULL;
        char stop[32];
        int r;

        r = op_new(cj, OP_HISTORY, cb, waiter, waiter_id, &op);
        if (r < 0)
                return r;
        op->photon = strdup(photon);
        op->method = strdup(method);
        if (!op->photon || !op->method)
                return -ENOMEM;
        r = cluster_jobs_history_key(cj->prefix, photon, method, working_dir, &op->id);
        if (r < 0)
                return r;
        op->since = since_ms;
        op->limit = limit;
        snprintf(stop, sizeof(stop), "%u", SCHEDULE_HISTORY_MAX_PER_METHOD - 1);
        r = redis_conn_command(cj->commands, on_reply, op, 4, (const char *[]) { "LRANGE", op->id, "0", stop },
                               (const size_t[]) { 6, strlen(op->id), 1, strlen(stop) });
        if (r < 0)
                return r;
        TAKE_PTR(op);
        return 0;
}

void cluster_jobs_record_run(ClusterJobs *cj, const char *photon, const char *method, const char *working_dir,
                             struct json_object *entry) {
        _cleanup_(op_freep) Op *op = NULL;
        char cap[32], ttl[32];
        const char *text;
        int r;

        if (!cj)
                return;
        text = json_object_to_json_string_ext(entry, JSON_FORMAT_FLAGS);
        r = text ? op_new(cj, OP_HISTORY_ADD, NULL, NULL, NULL, &op) : -ENOMEM;
        if (r >= 0)
                r = cluster_jobs_history_key(cj->prefix, photon, method, working_dir, &op->id);
        if (r >= 0) {
                snprintf(cap, sizeof(cap), "%u", SCHEDULE_HISTORY_MAX_PER_METHOD);
                snprintf(ttl, sizeof(ttl), "%" PRIi64, SCHEDULE_HISTORY_TTL_MS);
                r = redis_conn_eval(cj->commands, &script_history, on_reply, op, 1, 4,
                                    (const char *[]) { op->id, text, cap, ttl },
                                    (const size_t[]) { strlen(op->id), strlen(text), strlen(cap), strlen(ttl) });
        }
        if (r < 0) {
                cj->n_history_failed++;
                if (ratelimit_below(&cj->warn_log, now_usec(CLOCK_MONOTONIC)))
                        log_warning("Cluster: a run of %s.%s is only in this node's run history: %s.", photon,
                                    method, cluster_jobs_unavailable(cj, r));
                return;
        }
        TAKE_PTR(op);
}

void cluster_jobs_waiter_gone(ClusterJobs *cj, void *waiter) {
        if (!cj)
                return;
        LIST_FOREACH(ops, op, cj->ops)
                if (op->cb && op->waiter == waiter) {
                        op->cb = NULL;
                        op->waiter = NULL;
                }
}

int cluster_jobs_foreach_waiter(ClusterJobs *cj, int (*cb)(void *waiter, const char *waiter_id, void *userdata),
                                void *userdata) {
        int r;

        LIST_FOREACH(ops, op, cj->ops) {
                if (!op->cb)
                        continue;
                r = cb(op->waiter, op->waiter_id, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int cluster_jobs_add_status(ClusterJobs *cj, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *cluster;
        int r;

        if (!cj || !json_object_object_get_ex(data, "cluster", &cluster))
                return 0;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if ((r = json_add_int64(o, "mirrored", HASH_COUNT(cj->mirrored))) < 0 ||
            (r = json_add_int64(o, "version", (int64_t) cj->version)) < 0 ||
            (r = json_add_int64(o, "loads", (int64_t) cj->n_loads)) < 0 ||
            (r = json_add_int64(o, "claimed", (int64_t) cj->n_claimed)) < 0 ||
            (r = json_add_int64(o, "claimedElsewhere", (int64_t) cj->n_lost)) < 0 ||
            (r = json_add_int64(o, "notCapable", (int64_t) cj->n_not_capable)) < 0 ||
            (r = json_add_int64(o, "claimFailed", (int64_t) cj->n_claim_failed)) < 0 ||
            (r = json_add_int64(o, "tooLate", (int64_t) cj->n_late)) < 0 ||
            (r = json_add_int64(o, "catchUpsSkipped", (int64_t) cj->n_catch_ups)) < 0 ||
            (r = json_add_int64(o, "historySent", (int64_t) cj->n_history_sent)) < 0 ||
            (r = json_add_int64(o, "historyFailed", (int64_t) cj->n_history_failed)) < 0 ||
            (r = json_add_int64(o, "invalid", (int64_t) cj->n_invalid)) < 0)
                return r;
        return json_add(cluster, "jobs", TAKE_PTR(o));
}

/* ---- the change notices ---- */

static void on_subscriber_connected(RedisConn *conn, void *userdata) {
        ClusterJobs *cj = userdata;
        int r;

        r = redis_conn_subscribe(conn, 2, (const char *[]) { "SUBSCRIBE", cj->channel },
                                 (const size_t[]) { 9, strlen(cj->channel) });
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to subscribe to the job notices: %m");
        /* The load follows the subscribe's confirmation (on_push): a change made before that is in the snapshot,
         * one made after it is noticed. */
}

static void on_subscriber_disconnected(RedisConn *conn, const char *error, void *userdata) {
        /* The connection logs it. Notices may be missed from now on: the next connect loads everything again. */
}

static void on_push(RedisConn *conn, redisReply *reply, void *userdata) {
        ClusterJobs *cj = userdata;
        redisReply *kind;
        uint64_t v;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
                return;
        kind = reply->element[0];
        if (kind->type != REDIS_REPLY_STRING)
                return;
        if (streq(kind->str, "subscribe")) {
                request_load(cj);
                return;
        }
        if (!streq(kind->str, "message") || reply->element[2]->type != REDIS_REPLY_STRING)
                return;
        if (safe_atou64(reply->element[2]->str, &v) < 0) {
                cj->n_invalid++;
                return;
        }
        if (v > cj->version)
                request_load(cj);
}

/* ---- lifecycle ---- */

int cluster_jobs_new(const ClusterJobsConfig *config, ClusterJobs **ret) {
        _cleanup_(cluster_jobs_freep) ClusterJobs *cj = NULL;
        const ClusterSettings *s = config->settings;
        const RedisScript *const *unused;
        int r;

        r = cluster_jobs_scripts(&unused);
        if (r < 0)
                return r;
        cj = new0(ClusterJobs, 1);
        if (!cj)
                return -ENOMEM;
        cj->event = sd_event_ref(config->event);
        cj->scheduler = config->scheduler;
        cj->dispatcher = config->dispatcher;
        cj->commands = config->commands;
        cj->warn_log = (RateLimit) { .interval = 10 * USEC_PER_SEC, .burst = 5 };
        cj->node_id = strdup(s->node_id);
        cj->prefix = strdup(s->prefix);
        if (!cj->node_id || !cj->prefix ||
            asprintf(&cj->key_jobs, "%sjobs", s->prefix) < 0 ||
            asprintf(&cj->key_state, "%sjobs:state", s->prefix) < 0 ||
            asprintf(&cj->key_version, "%sjobs:version", s->prefix) < 0 ||
            asprintf(&cj->channel, "%sjobs:changed", s->prefix) < 0)
                return -ENOMEM;

        r = redis_conn_new(&(RedisConnConfig) { .event = cj->event, .url = &s->url, .name = "job notices" },
                           &(RedisConnHooks) {
                                   .connected = on_subscriber_connected,
                                   .disconnected = on_subscriber_disconnected,
                                   .push = on_push,
                                   .userdata = cj,
                           }, &cj->subscriber);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(cj);
        return 0;
}

ClusterJobs* cluster_jobs_free(ClusterJobs *cj) {
        Mirrored *m, *tmp;

        if (!cj)
                return NULL;
        cj->subscriber = redis_conn_free(cj->subscriber);
        /* The command connection is the cluster's and outlives us: its answers to come find no owner. */
        while (cj->ops) {
                Op *op = cj->ops;

                LIST_REMOVE(ops, cj->ops, op);
                op->cj = NULL;
                op->cb = NULL;
        }
        HASH_ITER(hh, cj->mirrored, m, tmp)
                mirrored_drop(cj, m);
        sd_event_source_disable_unref(cj->retry_source);
        sd_event_unref(cj->event);
        free(cj->node_id);
        free(cj->prefix);
        free(cj->key_jobs);
        free(cj->key_state);
        free(cj->key_version);
        free(cj->channel);
        return mfree(cj);
}
