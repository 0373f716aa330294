/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "json-util.h"
#include "log.h"
#include "photond-cluster-nodes.h"
#include "photond-redis.h"
#include "ratelimit.h"
#include "string-util.h"

/* ---- caps ---- */

static const ClusterCapInfo cap_table[] = {
        { "PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS", CLUSTER_DEFAULT_COMMAND_TIMEOUT_MS, 10, 600000 },
        { "PHOTOND_CLUSTER_MAX_PENDING", CLUSTER_DEFAULT_MAX_PENDING, 1, 16 * 1024 * 1024 },
        /* below the first delay (100 ms) the back-off would not double at all */
        { "PHOTOND_CLUSTER_RECONNECT_MAX_MS", CLUSTER_DEFAULT_RECONNECT_MAX_MS, 100, 3600000 },
        { "PHOTOND_CLUSTER_HEARTBEAT_MS", CLUSTER_DEFAULT_HEARTBEAT_MS, 100, 60000 },
};

const ClusterCapInfo* cluster_cap_info(unsigned i) {
        return i < ELEMENTSOF(cap_table) ? &cap_table[i] : NULL;
}

int cluster_cap_parse(const ClusterCapInfo *info, const char *s, uint64_t *ret) {
        uint64_t v;
        int r;

        if (!s || !s[0]) {
                *ret = info->def;
                return 0;
        }
        r = safe_atou64(s, &v);
        if (r < 0)
                return r;
        if (v < info->min || v > info->max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int cluster_caps_from_env(ClusterCaps *ret) {
        uint64_t v[ELEMENTSOF(cap_table)];

        for (size_t i = 0; i < ELEMENTSOF(cap_table); i++) {
                const ClusterCapInfo *info = &cap_table[i];
                const char *e = getenv(info->variable);
                int r = cluster_cap_parse(info, e, &v[i]);

                if (r < 0)
                        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid %s=%s: expected a whole number "
                                               "from %" PRIu64 " to %" PRIu64 " (default %" PRIu64 ").",
                                               info->variable, e, info->min, info->max, info->def);
        }
        *ret = (ClusterCaps) {
                .command_timeout_usec = v[0] * USEC_PER_MSEC,
                .max_pending = (size_t) v[1],
                .reconnect_max_usec = v[2] * USEC_PER_MSEC,
                .heartbeat_usec = v[3] * USEC_PER_MSEC,
        };
        return 0;
}

/* ---- the node record ---- */

void cluster_node_record_done(ClusterNodeRecord *r) {
        free(r->token);
        free(r->hostname);
        free(r->version);
        *r = (ClusterNodeRecord) {};
}

int cluster_node_record_build(const ClusterNodeRecord *r, char **ret) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        const char *s;
        char *t;
        int k;

        if (!o)
                return -ENOMEM;
        if ((k = json_add_string(o, "token", r->token)) < 0 ||
            (k = json_add_int64(o, "pid", r->pid)) < 0 ||
            (k = json_add_string(o, "hostname", r->hostname)) < 0 ||
            (k = json_add_int64(o, "started", r->started_ms)) < 0 ||
            (k = json_add_string(o, "version", r->version)) < 0 ||
            (k = json_add_int64(o, "heartbeatMs", r->heartbeat_ms)) < 0 ||
            (k = json_add_int64(o, "protocol", r->protocol)) < 0)
                return k;
        s = json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS);
        if (!s || !(t = strdup(s)))
                return -ENOMEM;
        *ret = t;
        return 0;
}

static bool token_valid(const char *t) {
        if (strlen(t) != CLUSTER_NODE_TOKEN_LEN)
                return false;
        return strspn(t, "0123456789abcdef") == CLUSTER_NODE_TOKEN_LEN;
}

static bool text_valid(const char *t) {
        size_t n = strlen(t);

        if (n == 0 || n > 255)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) t[i] < 0x20 || (unsigned char) t[i] == 0x7f)
                        return false;
        return true;
}

/* A string field that has the right type and shape, else NULL; -ENOMEM only for a failed copy. */
static int take_text(struct json_object *o, const char *key, char **ret) {
        const char *s = json_get_string(o, key);

        *ret = NULL;
        if (!s || !text_valid(s))
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int cluster_node_record_parse(const char *s, size_t len, ClusterNodeRecord *ret) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(cluster_node_record_done) ClusterNodeRecord r = {};
        const char *token;
        int k;

        /* json_parse() takes a NUL after the value for whitespace; no record has one */
        if (memchr(s, 0, len) || json_parse(s, len, &o, NULL) < 0 || !json_object_is_type(o, json_type_object))
                return -EINVAL;
        token = json_get_string(o, "token");
        if (!token || !token_valid(token))
                return -EINVAL;
        r.token = strdup(token);
        if (!r.token)
                return -ENOMEM;
        if ((k = take_text(o, "hostname", &r.hostname)) < 0 || (k = take_text(o, "version", &r.version)) < 0)
                return k;
        if (json_get_int64(o, "pid", false, &r.pid) < 0 || r.pid < 0)
                r.pid = 0;
        if (json_get_int64(o, "started", false, &r.started_ms) < 0 || r.started_ms < 0)
                r.started_ms = 0;
        if (json_get_int64(o, "heartbeatMs", false, &r.heartbeat_ms) < 0 || r.heartbeat_ms < 0)
                r.heartbeat_ms = 0;
        /* Absent: a photond from before the field, which spoke protocol 2; not a number: 0, which no photond
         * speaks. */
        k = json_get_int64(o, "protocol", false, &r.protocol);
        if (k == -ENOENT)
                r.protocol = 2;
        else if (k < 0 || r.protocol < 0)
                r.protocol = 0;
        *ret = r;
        r = (ClusterNodeRecord) {};
        return 0;
}

/* ---- the heartbeat script ----
 *
 * KEYS: <prefix>nodes (sorted set: node id -> when it expires, ms of Redis' clock), <prefix>nodes:info (hash: node
 * id -> record), <prefix>nodes:seen (hash: node id -> last seen), <prefix>node:<id>:instances (hash: instance token
 * -> last seen; expires with the node), the channel <prefix>node:<id>:beat, where the token is published for
 * the node's own subscriber connection to hear, and <prefix>locks:index (the cluster's locks by expiry,
 * photond-cluster-locks.h), only counted. ARGV: node id, token, TTL ms, record, nodes to return at most,
 * this process' first heartbeat (Redis' clock, ms; 0 before it was answered).
 *
 * Redis' own clock (TIME) is the one clock: the nodes' clocks need not agree. A second live process with this id
 * is another instance seen after this process' first heartbeat (ARGV[6], 0 before it) and within the TTL: a
 * process that restarted leaves the old token behind, last seen before its successor's first heartbeat, and is not
 * mistaken for one; a live one stays a duplicate until it has been silent for the TTL, however its heartbeats
 * interleave with ours.
 * Returns { now, duplicate (0/1), number of nodes, live locks (expiry after now), then id, last seen, record for
 * each node returned }. The lock count is O(log n): D-Bus' Locks and /metrics read it between heartbeats. */
static const char heartbeat_script[] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local id, token, ttl, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])\n"
        "local first = tonumber(ARGV[6]) or 0\n"
        "local dup = 0\n"
        "local inst = redis.call('HGETALL', KEYS[4])\n"
        "for i = 1, #inst, 2 do\n"
        "  if inst[i] ~= token then\n"
        "    local seen = tonumber(inst[i + 1]) or 0\n"
        "    if seen <= now - ttl then\n"
        "      redis.call('HDEL', KEYS[4], inst[i])\n"
        "    elseif first > 0 and seen > first then\n"
        "      dup = 1\n"
        "    end\n"
        "  end\n"
        "end\n"
        "redis.call('PUBLISH', KEYS[5], token)\n"
        "redis.call('HSET', KEYS[4], token, string.format('%.0f', now))\n"
        "redis.call('PEXPIRE', KEYS[4], ttl)\n"
        "redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), id)\n"
        "redis.call('HSET', KEYS[2], id, ARGV[4])\n"
        "redis.call('HSET', KEYS[3], id, string.format('%.0f', now))\n"
        "local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))\n"
        "for _, g in ipairs(gone) do\n"
        "  redis.call('ZREM', KEYS[1], g)\n"
        "  redis.call('HDEL', KEYS[2], g)\n"
        "  redis.call('HDEL', KEYS[3], g)\n"
        "end\n"
        "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now), '+inf', 'LIMIT', 0, max)\n"
        "local out = { now, dup, redis.call('ZCARD', KEYS[1]),\n"
        "              redis.call('ZCOUNT', KEYS[6], '(' .. string.format('%.0f', now), '+inf') }\n"
        "for _, n in ipairs(ids) do\n"
        "  out[#out + 1] = n\n"
        "  out[#out + 1] = tonumber(redis.call('HGET', KEYS[3], n) or 0) or 0\n"
        "  out[#out + 1] = redis.call('HGET', KEYS[2], n) or ''\n"
        "end\n"
        "return out\n";

/* A clean stop: the node takes itself out of the index at once, instead of three heartbeats later. Only its own
 * instance: a second process with its id (a duplicate) puts the id back at its next heartbeat.
 * KEYS: <prefix>nodes, <prefix>nodes:info, <prefix>nodes:seen, <prefix>node:<id>:instances. ARGV: node id, token. */
static const char leave_script[] =
        "redis.call('HDEL', KEYS[4], ARGV[2])\n"
        "redis.call('ZREM', KEYS[1], ARGV[1])\n"
        "redis.call('HDEL', KEYS[2], ARGV[1])\n"
        "redis.call('HDEL', KEYS[3], ARGV[1])\n"
        "return 1\n";

/* ---- the nodes ---- */

typedef struct ClusterNode {
        char *id;
        int64_t last_seen;      /* Redis' clock, ms */
        ClusterNodeRecord record;       /* token NULL: none or not valid */
} ClusterNode;

struct ClusterNodes {
        sd_event *event;
        RedisConn *commands, *subscriber;
        char *node_id;
        char *keys[6];          /* the script's KEYS: [4] the beat channel, [5] the locks' index */
        char *record;           /* this node's record */
        char token[CLUSTER_NODE_TOKEN_LEN + 1];
        uint64_t heartbeat_usec;
        void (*changed)(bool state, void *userdata);
        void (*locks_counted)(void *userdata);
        void *userdata;

        sd_event_source *timer;
        bool beat_pending;      /* one heartbeat at a time: a slow Redis gets no pile of them */
        bool beat_answered;     /* at least one heartbeat answered: nodes is what Redis said */
        int64_t last_beat;      /* Redis' clock, ms, of the last answer */
        int64_t first_beat;     /* Redis' clock, ms, of the first answer: what a duplicate is newer than */

        ClusterNode *nodes;     /* sorted by id */
        size_t n_nodes;
        size_t n_total;         /* nodes in the index (more than n_nodes past CLUSTER_NODES_MAX) */
        bool duplicate;
        size_t n_incompatible;  /* nodes seen whose record names another CLUSTER_PROTOCOL */
        int64_t lock_count;     /* live locks in Redis at the last heartbeat; -1: none answered yet */

        ClusterState state;
        uint64_t state_since;   /* CLOCK_REALTIME µs */
        bool was_connected;

        /* The subscriber connection sends nothing once subscribed, so a dead one that the kernel does not report
         * would go unnoticed: each heartbeat publishes on the beat channel, and a subscriber that hears nothing
         * while Redis answers heartbeats is dropped. */
        bool subscriber_up;
        uint64_t heard_usec;            /* CLOCK_MONOTONIC: the last push on the subscriber connection */
        unsigned beats_unheard;         /* heartbeats answered since then */

        RateLimit error_log;

        bool leaving;           /* the leave script is under way */
        void (*left)(void *userdata);
        void *left_userdata;
};

const char* cluster_state_to_string(ClusterState s) {
        static const char *const table[_CLUSTER_STATE_MAX] = {
                [CLUSTER_STATE_CONNECTING] = "connecting",
                [CLUSTER_STATE_CONNECTED] = "connected",
                [CLUSTER_STATE_RECONNECTING] = "reconnecting",
        };

        return s < _CLUSTER_STATE_MAX ? table[s] : NULL;
}

static void node_done(ClusterNode *x) {
        free(x->id);
        cluster_node_record_done(&x->record);
}

static void nodes_free_array(ClusterNode *a, size_t n) {
        for (size_t i = 0; i < n; i++)
                node_done(&a[i]);
        free(a);
}

static int node_cmp(const void *a, const void *b) {
        return strcmp(((const ClusterNode *) a)->id, ((const ClusterNode *) b)->id);
}

static void format_time(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
                snprintf(buf, size, "%" PRIu64, usec / USEC_PER_MSEC);
}

static void describe(const ClusterNode *x, char *buf, size_t size) {
        if (!x->record.token) {
                snprintf(buf, size, "no record");
                return;
        }
        snprintf(buf, size, "pid %" PRId64 " on %s, photond %s", x->record.pid, x->record.hostname ?: "?",
                 x->record.version ?: "?");
}

/* The new list against the old: one line per node that came or went; the first list is logged whole. */
static void nodes_log_changes(ClusterNodes *n, const ClusterNode *old, size_t n_old, int64_t now) {
        char info[320];
        size_t i = 0, j = 0;

        if (!n->beat_answered) {
                size_t len = 0;
                char list[1024] = "";

                for (size_t k = 0; k < n->n_nodes && len < sizeof(list) - 1; k++)
                        len += snprintf(list + len, sizeof(list) - len, "%s%s%s", k ? ", " : "", n->nodes[k].id,
                                        streq(n->nodes[k].id, n->node_id) ? " (this node)" : "");
                log_info("Cluster: %zu node%s seen: %s.", n->n_total, n->n_total == 1 ? "" : "s", list);
                return;
        }
        while (i < n_old || j < n->n_nodes) {
                int c = i >= n_old ? 1 : j >= n->n_nodes ? -1 : strcmp(old[i].id, n->nodes[j].id);

                if (c < 0) {
                        log_info("Cluster: node %s left (last seen %" PRId64 " ms ago).", old[i].id,
                                 MAX(now - old[i].last_seen, (int64_t) 0));
                        i++;
                } else if (c > 0) {
                        describe(&n->nodes[j], info, sizeof(info));
                        log_info("Cluster: node %s joined (%s).", n->nodes[j].id, info);
                        j++;
                } else {
                        i++;
                        j++;
                }
        }
}

static bool node_incompatible(const ClusterNode *x) {
        /* A node without a record (being written, or not valid) is not judged. */
        return x->record.token && x->record.protocol != CLUSTER_PROTOCOL;
}

/* Counts the nodes of another protocol and logs each one newly seen: their messages, locks and batches do not
 * mix with this node's (docs/cluster.md, "Upgrades"). */
static void nodes_check_protocol(ClusterNodes *n, const ClusterNode *old, size_t n_old) {
        n->n_incompatible = 0;
        for (size_t j = 0; j < n->n_nodes; j++) {
                const ClusterNode *x = &n->nodes[j], *was;

                if (!node_incompatible(x))
                        continue;
                n->n_incompatible++;
                was = n_old > 0 ? bsearch(x, old, n_old, sizeof(*old), node_cmp) : NULL;
                if (was && node_incompatible(was) && was->record.protocol == x->record.protocol)
                        continue;
                log_error("Cluster: node %s (photond %s) speaks cluster protocol %" PRId64 ", this node %d: "
                          "they drop each other's publishes and misread each other's locks. Run the same photond "
                          "version on every node.", x->id, x->record.version ?: "?", x->record.protocol,
                          CLUSTER_PROTOCOL);
        }
}

static bool nodes_same_ids(const ClusterNode *a, size_t n_a, const ClusterNode *b, size_t n_b) {
        if (n_a != n_b)
                return false;
        for (size_t i = 0; i < n_a; i++)
                if (!streq(a[i].id, b[i].id))
                        return false;
        return true;
}

static void beat_error(ClusterNodes *n, const char *what) {
        if (ratelimit_below(&n->error_log, now_usec(CLOCK_MONOTONIC)))
                log_warning("Cluster: heartbeat failed: %s.%s", what,
                            n->error_log.suppressed > 0 ? " (more suppressed)" : "");
}

/* Reads the script's answer; a reply that is not what the script returns changes nothing. */
static int beat_parse(ClusterNodes *n, redisReply *reply, int64_t *ret_now, bool *ret_dup, ClusterNode **ret,
                      size_t *ret_n, size_t *ret_total, int64_t *ret_locks) {
        ClusterNode *a = NULL;
        size_t k = 0, count;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 4 || (reply->elements - 4) % 3 != 0 ||
            reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[1]->type != REDIS_REPLY_INTEGER ||
            reply->element[2]->type != REDIS_REPLY_INTEGER || reply->element[3]->type != REDIS_REPLY_INTEGER)
                return -EBADMSG;
        count = MIN((reply->elements - 4) / 3, (size_t) CLUSTER_NODES_MAX);
        if (count > 0) {
                a = new0(ClusterNode, count);
                if (!a)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < count; i++) {
                redisReply *id = reply->element[4 + 3 * i], *seen = reply->element[5 + 3 * i],
                           *rec = reply->element[6 + 3 * i];

                /* Anyone may write into Redis: what does not look like a node is not shown. */
                if (id->type != REDIS_REPLY_STRING || strlen(id->str) != id->len || !cluster_node_id_valid(id->str) ||
                    seen->type != REDIS_REPLY_INTEGER)
                        continue;
                a[k].id = strdup(id->str);
                if (!a[k].id) {
                        nodes_free_array(a, k);
                        return -ENOMEM;
                }
                a[k].last_seen = seen->integer;
                if (rec->type == REDIS_REPLY_STRING && rec->len > 0 &&
                    cluster_node_record_parse(rec->str, rec->len, &a[k].record) == -ENOMEM) {
                        nodes_free_array(a, k + 1);
                        return -ENOMEM;
                }
                k++;
        }
        if (k > 0)
                qsort(a, k, sizeof(*a), node_cmp);
        *ret_now = reply->element[0]->integer;
        *ret_dup = reply->element[1]->integer != 0;
        *ret_total = (size_t) MAX(reply->element[2]->integer, (long long) 0);
        *ret_locks = MAX(reply->element[3]->integer, (long long) 0);
        *ret = a;
        *ret_n = k;
        return 0;
}

static void on_beat_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        ClusterNodes *n = userdata;
        ClusterNode *old, *a;
        size_t n_old, n_a, total;
        int64_t now, locks;
        bool dup, changed;
        int r;

        n->beat_pending = false;
        if (!reply)
                return;         /* the connection went: the state's transition says so */
        if (reply->type == REDIS_REPLY_ERROR) {
                beat_error(n, reply->str);
                return;
        }
        r = beat_parse(n, reply, &now, &dup, &a, &n_a, &total, &locks);
        if (r < 0) {
                beat_error(n, r == -ENOMEM ? "out of memory" : "unexpected answer");
                return;
        }

        if (dup && !n->duplicate)
                log_error("Cluster: another running photond announces itself with this node's id %s (a different "
                          "instance): the two take each other's messages for their own and drop them. Give each "
                          "node its own PHOTOND_NODE_ID.", n->node_id);
        else if (!dup && n->duplicate)
                log_info("Cluster: node id %s is no longer announced by another process.", n->node_id);
        n->duplicate = dup;

        old = n->nodes;
        n_old = n->n_nodes;
        n->nodes = a;
        n->n_nodes = n_a;
        n->n_total = total;
        changed = !n->beat_answered || !nodes_same_ids(old, n_old, a, n_a);
        if (changed)
                nodes_log_changes(n, old, n_old, now);
        nodes_check_protocol(n, old, n_old);
        nodes_free_array(old, n_old);
        n->beat_answered = true;
        n->last_beat = now;
        if (n->first_beat == 0)
                n->first_beat = now;
        if (n->beats_unheard < UINT_MAX)
                n->beats_unheard++;
        if (changed && n->changed)
                n->changed(false, n->userdata);
        if (locks != n->lock_count) {
                n->lock_count = locks;
                if (n->locks_counted)
                        n->locks_counted(n->userdata);
        }
}

static void beat(ClusterNodes *n) {
        char ttl[24], max[24], first[24];
        int r;

        if (n->beat_pending || redis_conn_state(n->commands) != REDIS_CONN_CONNECTED)
                return;
        snprintf(ttl, sizeof(ttl), "%" PRIu64, CLUSTER_NODE_TTL_BEATS * n->heartbeat_usec / USEC_PER_MSEC);
        snprintf(max, sizeof(max), "%d", CLUSTER_NODES_MAX);
        snprintf(first, sizeof(first), "%" PRId64, n->first_beat);
        /* EVAL, not a script loaded at connect: once a heartbeat its source costs nothing, and the commands
         * connection's script list stays with the parts that call theirs on every request. */
        r = redis_conn_command(n->commands, on_beat_reply, n, 15,
                               (const char *[]) { "EVAL", heartbeat_script, "6", n->keys[0], n->keys[1], n->keys[2],
                                                  n->keys[3], n->keys[4], n->keys[5], n->node_id, n->token, ttl,
                                                  n->record, max, first },
                               (const size_t[]) { 4, sizeof(heartbeat_script) - 1, 1, strlen(n->keys[0]),
                                                  strlen(n->keys[1]), strlen(n->keys[2]), strlen(n->keys[3]),
                                                  strlen(n->keys[4]), strlen(n->keys[5]), strlen(n->node_id),
                                                  CLUSTER_NODE_TOKEN_LEN,
                                                  strlen(ttl), strlen(n->record), strlen(max), strlen(first) });
        if (r < 0) {
                /* -ENOTCONN and -ENOBUFS say the connection is in trouble: the state and pending show it. */
                if (r != -ENOTCONN && r != -ENOBUFS)
                        beat_error(n, strerror(-r));
                return;
        }
        n->beat_pending = true;
}

/* Heartbeats were answered and their publishes never came back on the subscriber connection: it is dead (a
 * half-open TCP connection, a proxy that stopped relaying) even if the kernel has not said so. */
static void check_subscriber(ClusterNodes *n, uint64_t now) {
        uint64_t quiet;

        if (!n->subscriber_up || n->beats_unheard < CLUSTER_NODE_TTL_BEATS)
                return;
        quiet = now - MIN(n->heard_usec, now);
        if (quiet < CLUSTER_NODE_TTL_BEATS * n->heartbeat_usec)
                return;
        log_warning("Cluster: the subscriber connection heard nothing for %" PRIu64 " ms while Redis answered %u "
                    "heartbeats: dropping it.", quiet / USEC_PER_MSEC, n->beats_unheard);
        n->beats_unheard = 0;
        redis_conn_reset(n->subscriber, "heard no heartbeat");
}

bool cluster_nodes_push(ClusterNodes *n, const char *channel, size_t len) {
        if (!n)
                return false;
        n->heard_usec = now_usec(CLOCK_MONOTONIC);
        n->beats_unheard = 0;
        return channel && len == strlen(n->keys[4]) && memcmp(channel, n->keys[4], len) == 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ClusterNodes *n = userdata;

        check_subscriber(n, now_usec(CLOCK_MONOTONIC));
        beat(n);
        /* from now, not from when it was due: a loop that was held up does not make up for it in a burst */
        (void) sd_event_source_set_time_relative(s, n->heartbeat_usec);
        return 0;
}

static void on_leave_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        ClusterNodes *n = userdata;

        n->leaving = false;
        if (reply && reply->type != REDIS_REPLY_ERROR)
                log_info("Cluster: node %s left the cluster (stopping).", n->node_id);
        else
                log_info("Cluster: node %s is stopping; the others see it leave when its record expires (%s).",
                         n->node_id, reply ? reply->str : "no answer");
        if (n->left)
                n->left(n->left_userdata);
}

int cluster_nodes_leave(ClusterNodes *n, void (*left)(void *userdata), void *userdata) {
        int r;

        if (!n || n->leaving)
                return 0;
        (void) sd_event_source_set_enabled(n->timer, SD_EVENT_OFF);
        r = redis_conn_command(n->commands, on_leave_reply, n, 9,
                               (const char *[]) { "EVAL", leave_script, "4", n->keys[0], n->keys[1], n->keys[2],
                                                  n->keys[3], n->node_id, n->token },
                               (const size_t[]) { 4, sizeof(leave_script) - 1, 1, strlen(n->keys[0]),
                                                  strlen(n->keys[1]), strlen(n->keys[2]), strlen(n->keys[3]),
                                                  strlen(n->node_id), CLUSTER_NODE_TOKEN_LEN });
        if (r < 0)
                return 0;       /* not connected: the record expires by itself */
        n->leaving = true;
        n->left = left;
        n->left_userdata = userdata;
        return 1;
}

bool cluster_nodes_leaving(ClusterNodes *n) {
        return n && n->leaving;
}

/* ---- the cluster's state ---- */

void cluster_nodes_conn_changed(ClusterNodes *n) {
        RedisConn *worst;
        ClusterState state;
        uint64_t now;
        char since[64];

        if (!n)
                return;
        if (!n->subscriber_up && redis_conn_state(n->subscriber) == REDIS_CONN_CONNECTED) {
                /* -ENOTCONN cannot happen here; -EIO (out of memory) leaves the check without its heartbeats,
                 * which then drops the connection and tries again */
                (void) redis_conn_subscribe(n->subscriber, 2, (const char *[]) { "SUBSCRIBE", n->keys[4] },
                                            (const size_t[]) { 9, strlen(n->keys[4]) });
                n->heard_usec = now_usec(CLOCK_MONOTONIC);
                n->beats_unheard = 0;
        }
        n->subscriber_up = redis_conn_state(n->subscriber) == REDIS_CONN_CONNECTED;
        worst = redis_conn_state(n->commands) != REDIS_CONN_CONNECTED ? n->commands : n->subscriber;
        switch (redis_conn_state(worst)) {
        case REDIS_CONN_CONNECTED:
                state = CLUSTER_STATE_CONNECTED;
                break;
        case REDIS_CONN_CONNECTING:
                /* the other connection may have failed already: that is reconnecting */
                state = n->state == CLUSTER_STATE_CONNECTING ? CLUSTER_STATE_CONNECTING : CLUSTER_STATE_RECONNECTING;
                break;
        default:
                state = CLUSTER_STATE_RECONNECTING;
        }
        if (redis_conn_state(n->commands) == REDIS_CONN_CONNECTED)
                beat(n);
        if (state == n->state)
                return;

        now = now_usec(CLOCK_REALTIME);
        if (state == CLUSTER_STATE_CONNECTED && n->was_connected)
                log_info("Cluster: connected to Redis again, back after %" PRIu64 " ms.",
                         (now - MIN(n->state_since, now)) / USEC_PER_MSEC);
        else if (state == CLUSTER_STATE_CONNECTED)
                log_info("Cluster: connected to Redis as node %s.", n->node_id);
        else {
                format_time(now, since, sizeof(since));
                log_warning("Cluster: %s Redis, reconnecting since %s: %s.",
                            n->was_connected ? "lost" : "cannot reach", since,
                            redis_conn_last_error(worst) ?: "no answer");
        }
        if (state == CLUSTER_STATE_CONNECTED)
                n->was_connected = true;
        n->state = state;
        n->state_since = now;
        if (n->changed)
                n->changed(true, n->userdata);
}

ClusterState cluster_nodes_state(ClusterNodes *n, uint64_t *ret_since) {
        if (ret_since)
                *ret_since = n->state_since;
        return n->state;
}

size_t cluster_nodes_count(ClusterNodes *n) {
        return n ? n->n_nodes : 0;
}

bool cluster_nodes_get(ClusterNodes *n, size_t i, const char **ret_id, int64_t *ret_last_seen, bool *ret_self) {
        if (!n || i >= n->n_nodes)
                return false;
        if (ret_id)
                *ret_id = n->nodes[i].id;
        if (ret_last_seen)
                *ret_last_seen = n->nodes[i].last_seen;
        if (ret_self)
                *ret_self = streq(n->nodes[i].id, n->node_id);
        return true;
}

int64_t cluster_nodes_lock_count(ClusterNodes *n) {
        return n ? n->lock_count : -1;
}

bool cluster_nodes_duplicate(ClusterNodes *n) {
        return n && n->duplicate;
}

int cluster_nodes_add_status(ClusterNodes *n, struct json_object *o) {
        _cleanup_(json_object_putp) struct json_object *a = json_object_new_array();
        int r;

        if (!a)
                return -ENOMEM;
        for (size_t i = 0; i < n->n_nodes; i++) {
                const ClusterNode *x = &n->nodes[i];
                struct json_object *e = json_object_new_object();

                if (!e)
                        return -ENOMEM;
                if (json_object_array_add(a, e) < 0) {
                        json_object_put(e);
                        return -ENOMEM;
                }
                if ((r = json_add_string(e, "id", x->id)) < 0 ||
                    (r = json_add_int64(e, "lastSeen", x->last_seen)) < 0 ||
                    (r = json_add_bool(e, "self", streq(x->id, n->node_id))) < 0)
                        return r;
                if (!x->record.token)
                        continue;
                if ((r = json_add_int64(e, "pid", x->record.pid)) < 0 ||
                    (r = json_add_string(e, "hostname", x->record.hostname)) < 0 ||
                    (r = json_add_int64(e, "started", x->record.started_ms)) < 0 ||
                    (r = json_add_string(e, "version", x->record.version)) < 0 ||
                    (r = json_add_int64(e, "protocol", x->record.protocol)) < 0)
                        return r;
        }
        if ((r = json_add(o, "nodes", TAKE_PTR(a))) < 0 ||
            (r = json_add_int64(o, "nodesNotShown", (int64_t) (n->n_total > n->n_nodes ? n->n_total - n->n_nodes : 0))) < 0 ||
            (r = json_add_bool(o, "duplicateNodeId", n->duplicate)) < 0 ||
            (r = json_add_int64(o, "protocol", CLUSTER_PROTOCOL)) < 0 ||
            (r = json_add_int64(o, "incompatibleNodes", (int64_t) n->n_incompatible)) < 0 ||
            (r = json_add_int64(o, "heartbeatMs", (int64_t) (n->heartbeat_usec / USEC_PER_MSEC))) < 0 ||
            (r = json_add_int64(o, "lastHeartbeat", n->last_beat)) < 0)
                return r;
        return 0;
}

/* ---- lifecycle ---- */

int cluster_nodes_new(const ClusterNodesConfig *config, ClusterNodes **ret) {
        _cleanup_(cluster_nodes_freep) ClusterNodes *n = NULL;
        ClusterNodeRecord rec;
        uint8_t raw[CLUSTER_NODE_TOKEN_LEN / 2];
        char host[256] = {};
        int r;

        n = new0(ClusterNodes, 1);
        if (!n)
                return -ENOMEM;
        n->event = sd_event_ref(config->event);
        n->commands = config->commands;
        n->subscriber = config->subscriber;
        n->heartbeat_usec = config->heartbeat_usec ?: CLUSTER_DEFAULT_HEARTBEAT_MS * USEC_PER_MSEC;
        n->changed = config->changed;
        n->locks_counted = config->locks_counted;
        n->userdata = config->userdata;
        n->lock_count = -1;
        n->error_log = (RateLimit) { .interval = 10 * USEC_PER_SEC, .burst = 3 };
        n->state = CLUSTER_STATE_CONNECTING;
        n->state_since = now_usec(CLOCK_REALTIME);
        n->node_id = strdup(config->node_id);
        if (!n->node_id)
                return -ENOMEM;
        if (asprintf(&n->keys[0], "%snodes", config->prefix) < 0 ||
            asprintf(&n->keys[1], "%snodes:info", config->prefix) < 0 ||
            asprintf(&n->keys[2], "%snodes:seen", config->prefix) < 0 ||
            asprintf(&n->keys[3], "%snode:%s:instances", config->prefix, config->node_id) < 0 ||
            asprintf(&n->keys[4], "%snode:%s:beat", config->prefix, config->node_id) < 0 ||
            asprintf(&n->keys[5], "%slocks:index", config->prefix) < 0)
                return -ENOMEM;

        /* New for each process: what tells a second live process with this id from this one. */
        if (getrandom(raw, sizeof(raw), 0) != (ssize_t) sizeof(raw))
                return -errno ?: -EIO;
        for (size_t i = 0; i < sizeof(raw); i++)
                snprintf(n->token + 2 * i, 3, "%02x", raw[i]);
        if (gethostname(host, sizeof(host) - 1) < 0 || !host[0] || !text_valid(host))
                strcpy(host, "localhost");
        rec = (ClusterNodeRecord) {
                .token = n->token,
                .pid = getpid(),
                .hostname = host,
                .started_ms = now_ms(),
                .version = (char *) PHOTOND_VERSION,
                .heartbeat_ms = (int64_t) (n->heartbeat_usec / USEC_PER_MSEC),
                .protocol = CLUSTER_PROTOCOL,
        };
        r = cluster_node_record_build(&rec, &n->record);
        if (r < 0)
                return r;

        r = sd_event_add_time_relative(n->event, &n->timer, CLOCK_MONOTONIC, n->heartbeat_usec,
                                       n->heartbeat_usec / 20, on_timer, n);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(n->timer, SD_EVENT_ON);
        (void) sd_event_source_set_description(n->timer, "cluster-heartbeat");

        /* The connections may have moved already (a connect that failed at once). */
        cluster_nodes_conn_changed(n);
        *ret = TAKE_PTR(n);
        return 0;
}

ClusterNodes* cluster_nodes_free(ClusterNodes *n) {
        if (!n)
                return NULL;
        sd_event_source_disable_unref(n->timer);
        sd_event_unref(n->event);
        nodes_free_array(n->nodes, n->n_nodes);
        for (size_t i = 0; i < ELEMENTSOF(n->keys); i++)
                free(n->keys[i]);
        free(n->record);
        free(n->node_id);
        return mfree(n);
}
