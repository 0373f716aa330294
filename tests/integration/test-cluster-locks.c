/* SPDX-License-Identifier: MIT */

/* Cluster mode's locks: two real photond nodes sharing one real redis-server. Mutual exclusion under contention
 * from both nodes, fencing tokens across nodes and across a Redis restart with AOF, lockWait handed over across
 * nodes on a release (a notification) and on an expiry, assign/transfer/query/list across nodes, and a stopped
 * Redis answered with "Cluster unavailable", never a local grant. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "redis-helper.h"

static unsigned req_serial;

/* Waits (10 s at most) for the lock backend's connections to Redis. */
static void wait_locks_connected(Daemon *d) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o = status_of(d);
                bool ok = jbool(o, "data.clusterLocks.connected");

                json_object_put(o);
                if (ok)
                        return;
                cr_assert_lt(mono_ms(), deadline, "the node's lock backend never connected to Redis");
                (void) poll(NULL, 0, 20);
        }
}

/* A request whose reply is returned (its id is made here). */
#define REQ(c, fmt, ...) ({                                                                             \
        char _id[32];                                                                                   \
        snprintf(_id, sizeof(_id), "r%u", ++req_serial);                                                \
        conn_request((c), _id, "{\"id\":\"%s\"," fmt "}", _id, ##__VA_ARGS__);                          \
})

typedef struct Cluster2 {
        TestRedis redis;
        char *dir;
        Daemon *a, *b;
} Cluster2;

static void cluster_up(Cluster2 *k, const char *const *redis_args) {
        if (!test_redis_available())
                cr_skip_test("no redis-server");
        k->dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&k->redis, k->dir, redis_args), 0);
        k->a = cluster_node_start(k->redis.url, "node-a", NULL, NULL);
        k->b = cluster_node_start(k->redis.url, "node-b", NULL, NULL);
        wait_locks_connected(k->a);
        wait_locks_connected(k->b);
}

static void cluster_down(Cluster2 *k) {
        daemon_stop_clean(k->a);
        daemon_stop_clean(k->b);
        test_redis_stop(&k->redis);
        tmpdir_remove(k->dir);
}

/* ---- mutual exclusion ---- */

#define N_NAMES 3
#define CLIENTS_PER_NODE 4
#define CYCLES 500

typedef struct Worker {
        Conn *conn;
        int id;
        bool waits;             /* uses lockWait; the others retry a refused lock at once */
        int cycles;
        int name;
        bool holding;
        bool release_due;
        unsigned serial;
} Worker;

static void worker_lock(Worker *w) {
        w->name = (w->id + w->cycles) % N_NAMES;
        conn_send(w->conn, "{\"type\":\"lock\",\"id\":\"l%u\",\"lockName\":\"mx%d\",\"sessionId\":\"w%d\","
                  "\"lockTimeout\":10000%s}", ++w->serial, w->name, w->id, w->waits ? ",\"lockWait\":10000" : "");
}

Test(cluster_locks, mutual_exclusion_under_contention) {
        Cluster2 k;
        Worker w[2 * CLIENTS_PER_NODE];
        int inside[N_NAMES];
        uint64_t last_token[N_NAMES] = {};
        unsigned violations = 0, acquisitions = 0, refusals = 0, done = 0;
        uint64_t deadline;

        cluster_up(&k, NULL);
        for (int i = 0; i < N_NAMES; i++)
                inside[i] = -1;
        for (int i = 0; i < 2 * CLIENTS_PER_NODE; i++) {
                w[i] = (Worker) { .conn = conn_open(i % 2 ? k.b : k.a), .id = i, .waits = i % 4 < 2 };
                worker_lock(&w[i]);
        }

        deadline = mono_ms() + 120000;
        while (done < 2 * CLIENTS_PER_NODE) {
                struct pollfd p[2 * CLIENTS_PER_NODE];
                bool due = false;

                cr_assert_lt(mono_ms(), deadline, "contention did not finish (%u acquisitions)", acquisitions);
                for (int i = 0; i < 2 * CLIENTS_PER_NODE; i++) {
                        p[i] = (struct pollfd) { .fd = w[i].conn->fd, .events = POLLIN };
                        due = due || w[i].release_due;
                }
                /* A holder stays inside for one poll: what the others were answered meanwhile must find it. */
                (void) poll(p, 2 * CLIENTS_PER_NODE, due ? 1 : 1000);

                /* The holders that got the lock in the last round leave now: every reply that arrived meanwhile,
                 * on any node, found them inside. */
                for (int i = 0; i < 2 * CLIENTS_PER_NODE; i++) {
                        if (!w[i].release_due)
                                continue;
                        w[i].release_due = false;
                        cr_assert_eq(inside[w[i].name], w[i].id);
                        inside[w[i].name] = -1;
                        conn_send(w[i].conn, "{\"type\":\"unlock\",\"id\":\"u%u\",\"lockName\":\"mx%d\","
                                  "\"lockHolder\":\"w%d\"}", ++w[i].serial, w[i].name, w[i].id);
                }

                for (int i = 0; i < 2 * CLIENTS_PER_NODE; i++) {
                        struct json_object *o;
                        /* One read when poll said so, then only the lines it brought (a timeout of 0 reads
                         * nothing). */
                        int t = p[i].revents & POLLIN ? 1 : 0;

                        while ((o = conn_recv(w[i].conn, t))) {
                                t = 0;
                                const char *id = jstr(o, "id");

                                cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
                                if (id[0] == 'l' && jbool(o, "data.acquired")) {
                                        uint64_t tok = (uint64_t) jint(o, "data.fencingToken");

                                        acquisitions++;
                                        if (inside[w[i].name] != -1)
                                                violations++;
                                        inside[w[i].name] = w[i].id;
                                        cr_assert_gt(tok, last_token[w[i].name], "tokens of mx%d went back",
                                                     w[i].name);
                                        last_token[w[i].name] = tok;
                                        w[i].release_due = true;
                                } else if (id[0] == 'l') {
                                        refusals++;
                                        cr_assert_str_eq(jstr(o, "data.reason"), "Lock held by another client");
                                        worker_lock(&w[i]);
                                } else {
                                        cr_assert(jbool(o, "data.released"), "%s", json_object_to_json_string(o));
                                        if (++w[i].cycles == CYCLES)
                                                done++;
                                        else
                                                worker_lock(&w[i]);
                                }
                                json_object_put(o);
                        }
                }
        }
        cr_assert_eq(violations, 0, "%u of %u acquisitions found another holder inside", violations, acquisitions);
        cr_assert_eq(acquisitions, 2 * CLIENTS_PER_NODE * CYCLES);
        cr_log_info("%u acquisitions, %u refusals, 0 violations", acquisitions, refusals);

        for (int i = 0; i < 2 * CLIENTS_PER_NODE; i++)
                conn_close(w[i].conn);
        cluster_down(&k);
}

/* ---- fencing tokens, re-entrance ---- */

Test(cluster_locks, fencing_tokens_increase_across_nodes) {
        Cluster2 k;
        Conn *ca, *cb;
        struct json_object *o;
        uint64_t last = 0, tok;
        int64_t at;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        cb = conn_open(k.b);
        for (int i = 0; i < 20; i++) {
                Conn *c = i % 2 ? cb : ca;

                o = REQ(c, "\"type\":\"lock\",\"lockName\":\"ft\",\"sessionId\":\"s%d\"", i);
                cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
                tok = (uint64_t) jint(o, "data.fencingToken");
                cr_assert_gt(tok, last);
                last = tok;
                json_object_put(o);
                o = REQ(c, "\"type\":\"unlock\",\"lockName\":\"ft\",\"lockHolder\":\"s%d\"", i);
                cr_assert(jbool(o, "data.released"));
                json_object_put(o);
        }

        /* A counter that comes back behind (an AOF that lost its last second, a replica promoted early): tokens
         * still go up, from Redis' clock. */
        {
                char cmd[512];

                snprintf(cmd, sizeof(cmd), "redis-cli -s '%s' SET photon:locks:token 5 >/dev/null", k.redis.socket);
                cr_assert_eq(system(cmd), 0);
        }
        o = REQ(cb, "\"type\":\"lock\",\"lockName\":\"ft\",\"sessionId\":\"after-loss\"");
        cr_assert(jbool(o, "data.acquired"));
        cr_assert_gt((uint64_t) jint(o, "data.fencingToken"), last, "a lost counter gave %" PRId64,
                     jint(o, "data.fencingToken"));
        json_object_put(o);

        /* Re-entrant from the other node: the token and acquiredAt stay, the expiry moves. */
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"re\",\"sessionId\":\"same\",\"lockTimeout\":5000");
        tok = (uint64_t) jint(o, "data.fencingToken");
        json_object_put(o);
        o = REQ(ca, "\"type\":\"query_lock\",\"lockName\":\"re\"");
        at = jint(o, "data.acquiredAt");
        cr_assert_leq(jint(o, "data.expiresAt") - at, 5000);
        json_object_put(o);
        o = REQ(cb, "\"type\":\"lock\",\"lockName\":\"re\",\"sessionId\":\"same\",\"lockTimeout\":60000");
        cr_assert(jbool(o, "data.acquired"));
        cr_assert_eq((uint64_t) jint(o, "data.fencingToken"), tok);
        json_object_put(o);
        o = REQ(cb, "\"type\":\"query_lock\",\"lockName\":\"re\"");
        cr_assert_eq(jint(o, "data.acquiredAt"), at);
        cr_assert_eq((uint64_t) jint(o, "data.fencingToken"), tok);
        cr_assert_gt(jint(o, "data.expiresAt") - at, 50000);
        json_object_put(o);

        conn_close(ca);
        conn_close(cb);
        cluster_down(&k);
}

/* ---- lockWait across nodes ---- */

Test(cluster_locks, lock_wait_handed_over_across_nodes_on_release) {
        Cluster2 k;
        Conn *ca, *cb;
        struct json_object *o;
        uint64_t released_at, granted_at, tok;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        cb = conn_open(k.b);
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"h\",\"sessionId\":\"a1\",\"lockTimeout\":60000");
        cr_assert(jbool(o, "data.acquired"));
        tok = (uint64_t) jint(o, "data.fencingToken");
        json_object_put(o);

        conn_send(cb, "{\"type\":\"lock\",\"id\":\"w1\",\"lockName\":\"h\",\"sessionId\":\"b1\",\"lockWait\":20000}");
        /* Parked, and b's other requests are answered meanwhile. */
        o = REQ(cb, "\"type\":\"ping\"");
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);
        cr_assert_null(conn_recv(cb, 300), "the waiter was answered while the lock was held");

        o = REQ(ca, "\"type\":\"unlock\",\"lockName\":\"h\",\"lockHolder\":\"a1\"");
        released_at = mono_ms();
        cr_assert(jbool(o, "data.released"));
        json_object_put(o);
        o = conn_expect(cb, 5000);
        granted_at = mono_ms();
        cr_assert_str_eq(jstr(o, "id"), "w1");
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.holder"), "b1");
        cr_assert_gt((uint64_t) jint(o, "data.fencingToken"), tok);
        json_object_put(o);
        /* A notification, not a poll: well within the 20 s wait (tens of ms; the bound leaves room for a loaded
         * machine and the sanitizers). */
        cr_assert_lt(granted_at - released_at, 250, "handed over %" PRIu64 " ms after the release",
                     granted_at - released_at);
        cr_log_info("lockWait hand-over across nodes: %" PRIu64 " ms", granted_at - released_at);

        /* A waiter that ran out gets the refusal. */
        conn_send(ca, "{\"type\":\"assign_lock\",\"id\":\"w2\",\"lockName\":\"h\",\"lockHolder\":\"a2\","
                  "\"lockWait\":300}");
        o = conn_expect(ca, 3000);
        cr_assert_str_eq(jstr(o, "id"), "w2");
        cr_assert_not(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.reason"), "Lock held by another caller");
        cr_assert_str_eq(jstr(o, "data.currentHolder"), "b1");
        json_object_put(o);

        /* A waiter that goes away leaves the queue: the next release leaves the lock free. */
        {
                Conn *gone = conn_open(k.a);

                conn_send(gone, "{\"type\":\"lock\",\"id\":\"w3\",\"lockName\":\"h\",\"sessionId\":\"g\","
                          "\"lockWait\":20000}");
                cr_assert_null(conn_recv(gone, 200));
                conn_close(gone);
                (void) poll(NULL, 0, 100);
        }
        o = REQ(cb, "\"type\":\"unlock\",\"lockName\":\"h\",\"lockHolder\":\"b1\"");
        cr_assert(jbool(o, "data.released"));
        json_object_put(o);
        (void) poll(NULL, 0, 200);
        o = REQ(ca, "\"type\":\"query_lock\",\"lockName\":\"h\"");
        cr_assert(jhas(o, "data.holder") && !jstr(o, "data.holder"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(ca);
        conn_close(cb);
        cluster_down(&k);
}

Test(cluster_locks, lock_wait_handed_over_across_nodes_on_expiry) {
        Cluster2 k;
        Conn *ca, *cb;
        struct json_object *o;
        uint64_t locked_at, granted_at;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        cb = conn_open(k.b);
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"e\",\"sessionId\":\"a1\",\"lockTimeout\":400");
        locked_at = mono_ms();
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);

        conn_send(cb, "{\"type\":\"lock\",\"id\":\"w1\",\"lockName\":\"e\",\"sessionId\":\"b1\",\"lockWait\":10000}");
        o = conn_expect(cb, 5000);
        granted_at = mono_ms();
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        /* At the expiry (Redis' PTTL), not at the end of the wait or a poll's tick. */
        cr_assert_geq(granted_at - locked_at, 380, "granted %" PRIu64 " ms after", granted_at - locked_at);
        cr_assert_lt(granted_at - locked_at, 700, "granted %" PRIu64 " ms after", granted_at - locked_at);

        conn_close(ca);
        conn_close(cb);
        cluster_down(&k);
}

/* ---- assign, transfer, query, list ---- */

Test(cluster_locks, assign_transfer_query_list_across_nodes) {
        Cluster2 k;
        Conn *ca, *cb;
        struct json_object *o, *l;
        uint64_t tok;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        cb = conn_open(k.b);

        o = REQ(ca, "\"type\":\"assign_lock\",\"lockName\":\"db\",\"lockHolder\":\"s1\",\"lockTimeout\":30000");
        cr_assert(jbool(o, "data.acquired"));
        tok = (uint64_t) jint(o, "data.fencingToken");
        json_object_put(o);
        o = REQ(cb, "\"type\":\"assign_lock\",\"lockName\":\"db\",\"lockHolder\":\"s2\"");
        cr_assert_not(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.reason"), "Lock held by another caller");
        cr_assert_str_eq(jstr(o, "data.currentHolder"), "s1");
        cr_assert_str_eq(jstr(o, "data.holder"), "s2");
        json_object_put(o);
        o = REQ(cb, "\"type\":\"lock\",\"lockName\":\"db\",\"sessionId\":\"s2\"");
        cr_assert_str_eq(jstr(o, "data.reason"), "Lock held by another client");
        cr_assert_not(jhas(o, "data.currentHolder"));
        json_object_put(o);
        o = REQ(cb, "\"type\":\"query_lock\",\"lockName\":\"db\"");
        cr_assert_str_eq(jstr(o, "data.holder"), "s1");
        cr_assert_eq((uint64_t) jint(o, "data.fencingToken"), tok);
        cr_assert_eq(jint(o, "data.expiresAt") - jint(o, "data.acquiredAt") <= 30000, true);
        json_object_put(o);

        o = REQ(cb, "\"type\":\"unlock\",\"lockName\":\"db\",\"lockHolder\":\"s2\"");
        cr_assert_not(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.reason"), "Cannot release lock held by another client");
        json_object_put(o);
        o = REQ(cb, "\"type\":\"transfer_lock\",\"lockName\":\"db\",\"lockHolder\":\"s9\",\"lockTransferTo\":\"s2\"");
        cr_assert_not(jbool(o, "data.transferred"));
        cr_assert_str_eq(jstr(o, "data.reason"), "Not the current holder");
        cr_assert_str_eq(jstr(o, "data.currentHolder"), "s1");
        json_object_put(o);
        o = REQ(cb, "\"type\":\"transfer_lock\",\"lockName\":\"db\",\"lockHolder\":\"s1\",\"lockTransferTo\":\"s2\"");
        cr_assert(jbool(o, "data.transferred"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.from"), "s1");
        cr_assert_str_eq(jstr(o, "data.to"), "s2");
        cr_assert_gt((uint64_t) jint(o, "data.fencingToken"), tok);
        json_object_put(o);
        o = REQ(cb, "\"type\":\"transfer_lock\",\"lockName\":\"db\",\"lockHolder\":\"s1\"");
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: lockTransferTo is missing");
        json_object_put(o);
        o = REQ(ca, "\"type\":\"query_lock\",\"lockName\":\"db\"");
        cr_assert_str_eq(jstr(o, "data.holder"), "s2");
        json_object_put(o);

        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"db2\",\"sessionId\":\"x\"");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"short\",\"sessionId\":\"x\",\"lockTimeout\":100");
        json_object_put(o);
        (void) poll(NULL, 0, 200);
        o = REQ(cb, "\"type\":\"list_locks\"");
        l = jget(o, "data.locks");
        cr_assert_eq(json_object_array_length(l), 2, "%s", json_object_to_json_string(o));
        /* Oldest acquisition first: db was transferred before db2 was taken. */
        cr_assert_str_eq(json_object_get_string(json_object_object_get(json_object_array_get_idx(l, 0), "name")), "db");
        cr_assert_str_eq(json_object_get_string(json_object_object_get(json_object_array_get_idx(l, 0), "holder")), "s2");
        cr_assert_str_eq(json_object_get_string(json_object_object_get(json_object_array_get_idx(l, 1), "name")), "db2");
        json_object_put(o);

        o = REQ(ca, "\"type\":\"unlock\",\"lockName\":\"db\",\"lockHolder\":\"s2\"");
        cr_assert(jbool(o, "data.released"));
        json_object_put(o);
        o = REQ(cb, "\"type\":\"query_lock\",\"lockName\":\"db\"");
        cr_assert(jhas(o, "data.holder") && !jstr(o, "data.holder"));
        json_object_put(o);
        /* The local table of the nodes holds nothing: the locks are Redis'. */
        o = status_of(k.a);
        cr_assert_eq(jint(o, "data.locks"), 0);
        json_object_put(o);

        conn_close(ca);
        conn_close(cb);
        cluster_down(&k);
}

/* Replies of one connection keep their order, the lock's (from Redis) before the ping's (local). */
Test(cluster_locks, replies_keep_their_order) {
        Cluster2 k;
        Conn *ca;
        struct json_object *o;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        conn_send(ca, "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"o\",\"sessionId\":\"s\"}\n"
                  "{\"type\":\"ping\",\"id\":\"2\"}\n"
                  "{\"type\":\"query_lock\",\"id\":\"3\",\"lockName\":\"o\"}\n"
                  "{\"type\":\"ping\",\"id\":\"4\"}");
        for (int i = 1; i <= 4; i++) {
                char id[4];

                o = conn_expect(ca, 5000);
                snprintf(id, sizeof(id), "%d", i);
                cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
                json_object_put(o);
        }
        conn_close(ca);
        cluster_down(&k);
}

/* ---- failures ---- */

Test(cluster_locks, redis_stopped_is_cluster_unavailable) {
        Cluster2 k;
        Conn *ca;
        struct json_object *o;
        uint64_t t0;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"u\",\"sessionId\":\"s\"");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);

        test_redis_stop(&k.redis);
        t0 = mono_ms();
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"u2\",\"sessionId\":\"s\"");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_eq(strncmp(jstr(o, "error"), "Cluster unavailable: ", 21), 0, "%s", jstr(o, "error"));
        cr_assert_not_null(jstr(o, "suggestion"));
        json_object_put(o);
        cr_assert_lt(mono_ms() - t0, 3000);
        o = REQ(ca, "\"type\":\"query_lock\",\"lockName\":\"u\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);
        o = REQ(ca, "\"type\":\"list_locks\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);
        o = REQ(ca, "\"type\":\"unlock\",\"lockName\":\"u\",\"lockHolder\":\"s\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);
        /* Nothing was granted locally. */
        o = status_of(k.a);
        cr_assert_eq(jint(o, "data.locks"), 0);
        cr_assert_gt(jint(o, "data.clusterLocks.unavailable"), 0);
        json_object_put(o);

        conn_close(ca);
        daemon_stop_clean(k.a);
        daemon_stop_clean(k.b);
        tmpdir_remove(k.dir);
}

/* A Redis that accepts and never answers (SIGSTOP): the request is answered "Cluster unavailable" when the command
 * timeout (300 ms here) drops the connection, never a hang, never a local grant; and locks work again after. */
Test(cluster_locks, a_stuck_redis_is_cluster_unavailable_within_the_command_timeout) {
        TestRedis redis;
        char *dir, url_env[400];
        const char *env[] = { url_env, "PHOTOND_NODE_ID=stuck", "PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS=300", NULL };
        Daemon *d;
        Conn *c;
        struct json_object *o;
        uint64_t t0, took;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", redis.url);
        d = daemon_start(&(DaemonOptions) { .env = env });
        wait_locks_connected(d);
        c = conn_open(d);

        cr_assert_eq(kill(redis.pid, SIGSTOP), 0);
        t0 = mono_ms();
        o = REQ(c, "\"type\":\"lock\",\"lockName\":\"st\",\"sessionId\":\"s\"");
        took = mono_ms() - t0;
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_eq(strncmp(jstr(o, "error"), "Cluster unavailable: no answer from Redis", 41), 0, "%s",
                     jstr(o, "error"));
        json_object_put(o);
        cr_assert_geq(took, 250, "answered after %" PRIu64 " ms", took);
        cr_assert_lt(took, 2000, "answered after %" PRIu64 " ms", took);
        o = status_of(d);
        cr_assert_eq(jint(o, "data.locks"), 0);
        json_object_put(o);

        cr_assert_eq(kill(redis.pid, SIGCONT), 0);
        wait_locks_connected(d);
        o = REQ(c, "\"type\":\"lock\",\"lockName\":\"st2\",\"sessionId\":\"s\"");
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(c);
        daemon_stop_clean(d);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

/* A node killed with SIGKILL: its clients' locks are Redis keys that end at their timeouts, neither before nor
 * after; a waiter on the other node gets the lock then. */
Test(cluster_locks, a_killed_node_neither_releases_nor_keeps_its_locks) {
        Cluster2 k;
        Conn *ca, *cb;
        struct json_object *o;
        uint64_t locked_at, granted_at;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        cb = conn_open(k.b);
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"k\",\"sessionId\":\"a\",\"lockTimeout\":1000");
        locked_at = mono_ms();
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);
        conn_close(ca);
        (void) daemon_signal_and_wait(k.a, SIGKILL);
        daemon_free(k.a);

        o = REQ(cb, "\"type\":\"query_lock\",\"lockName\":\"k\"");
        cr_assert_str_eq(jstr(o, "data.holder"), "a", "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_send(cb, "{\"type\":\"lock\",\"id\":\"w\",\"lockName\":\"k\",\"sessionId\":\"b\",\"lockWait\":10000}");
        o = conn_expect(cb, 5000);
        granted_at = mono_ms();
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        cr_assert_geq(granted_at - locked_at, 980, "granted %" PRIu64 " ms after", granted_at - locked_at);
        cr_assert_lt(granted_at - locked_at, 1400, "granted %" PRIu64 " ms after", granted_at - locked_at);

        conn_close(cb);
        daemon_stop_clean(k.b);
        test_redis_stop(&k.redis);
        tmpdir_remove(k.dir);
}

/* A stop answers the lock requests under way (a parked lockWait here): the next process would not know them. */
Test(cluster_locks, a_stop_answers_the_waits) {
        Cluster2 k;
        Conn *ca, *cb;
        struct json_object *o;
        int st;

        cluster_up(&k, NULL);
        ca = conn_open(k.a);
        cb = conn_open(k.b);
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"s\",\"sessionId\":\"a\"");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);
        conn_send(cb, "{\"type\":\"lock\",\"id\":\"w\",\"lockName\":\"s\",\"sessionId\":\"b\",\"lockWait\":60000}");
        cr_assert_null(conn_recv(cb, 200));

        st = daemon_signal_and_wait(k.b, SIGTERM);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        daemon_free(k.b);
        o = conn_expect(cb, 1000);
        cr_assert_str_eq(jstr(o, "id"), "w");
        cr_assert_str_eq(jstr(o, "error"), "Cluster unavailable: photond is stopping", "%s",
                         json_object_to_json_string(o));
        json_object_put(o);

        conn_close(ca);
        conn_close(cb);
        daemon_stop_clean(k.a);
        test_redis_stop(&k.redis);
        tmpdir_remove(k.dir);
}

Test(cluster_locks, fencing_tokens_survive_a_redis_restart_with_aof) {
        const char *const aof[] = { "--appendonly", "yes", "--appendfsync", "always", NULL };
        Cluster2 k;
        Conn *ca;
        struct json_object *o;
        uint64_t last = 0;

        cluster_up(&k, aof);
        ca = conn_open(k.a);
        for (int i = 0; i < 5; i++) {
                o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"p%d\",\"sessionId\":\"s\"", i);
                cr_assert_gt((uint64_t) jint(o, "data.fencingToken"), last);
                last = (uint64_t) jint(o, "data.fencingToken");
                json_object_put(o);
        }

        test_redis_stop(&k.redis);
        cr_assert_eq(test_redis_start(&k.redis, k.dir, aof), 0);
        wait_locks_connected(k.a);
        wait_locks_connected(k.b);
        o = REQ(ca, "\"type\":\"query_lock\",\"lockName\":\"p4\"");
        cr_assert_str_eq(jstr(o, "data.holder"), "s", "the lock did not survive: %s", json_object_to_json_string(o));
        json_object_put(o);
        conn_close(ca);
        ca = conn_open(k.b);
        o = REQ(ca, "\"type\":\"lock\",\"lockName\":\"after\",\"sessionId\":\"s\"");
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        cr_assert_gt((uint64_t) jint(o, "data.fencingToken"), last);
        json_object_put(o);

        conn_close(ca);
        cluster_down(&k);
}

/* ---- batches: the operations of one loop iteration in one script call ---- */

/* Stops (SIGSTOP) or resumes a process and waits until /proc says it is stopped: what is written to a stopped
 * node's clients meanwhile is all there when it runs again, and it serves them in one iteration. */
static void process_stop(pid_t pid) {
        char path[64], buf[512];
        uint64_t deadline = mono_ms() + 5000;

        cr_assert_eq(kill(pid, SIGSTOP), 0);
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        for (;;) {
                FILE *f = fopen(path, "re");
                char *p;

                cr_assert_not_null(f);
                p = fgets(buf, sizeof(buf), f);
                fclose(f);
                cr_assert_not_null(p);
                p = strrchr(buf, ')');
                if (p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't'))
                        return;
                cr_assert_lt(mono_ms(), deadline, "pid %d did not stop", (int) pid);
                (void) poll(NULL, 0, 1);
        }
}

static void status_counts(Daemon *d, int64_t *ret_ops, int64_t *ret_batches) {
        struct json_object *o = status_of(d);

        *ret_ops = jint(o, "data.clusterLocks.operations");
        *ret_batches = jint(o, "data.clusterLocks.batches");
        json_object_put(o);
}

#define BATCH_CLIENTS 16
#define BATCH_NAMES 4

/* 16 clients of one node send lock, query_lock, unlock at once (the node stopped meanwhile), and 4 more query the
 * same names: the 20 first requests are one script call. Every reply comes in its client's order and is what
 * running them one after the other gives: one holder a name, the others refused; a holder's query finds it, its
 * unlock releases. */
Test(cluster_locks, many_clients_in_one_iteration_are_one_batch) {
        Cluster2 k;
        Conn *c[BATCH_CLIENTS + BATCH_NAMES];
        int winner[BATCH_NAMES];
        bool acquired[BATCH_CLIENTS];
        int64_t ops0, batches0, ops1, batches1;

        cluster_up(&k, NULL);
        for (int i = 0; i < BATCH_CLIENTS + BATCH_NAMES; i++)
                c[i] = conn_open(k.a);
        for (int i = 0; i < BATCH_NAMES; i++)
                winner[i] = -1;
        status_counts(k.a, &ops0, &batches0);

        process_stop(k.a->pid);
        for (int i = 0; i < BATCH_CLIENTS; i++)
                conn_send(c[i], "{\"type\":\"lock\",\"id\":\"l%d\",\"lockName\":\"bt%d\",\"sessionId\":\"c%d\"}\n"
                          "{\"type\":\"query_lock\",\"id\":\"q%d\",\"lockName\":\"bt%d\"}\n"
                          "{\"type\":\"unlock\",\"id\":\"u%d\",\"lockName\":\"bt%d\",\"lockHolder\":\"c%d\"}",
                          i, i % BATCH_NAMES, i, i, i % BATCH_NAMES, i, i % BATCH_NAMES, i);
        for (int i = 0; i < BATCH_NAMES; i++)
                conn_send(c[BATCH_CLIENTS + i], "{\"type\":\"query_lock\",\"id\":\"o%d\",\"lockName\":\"bt%d\"}",
                          i, i);
        cr_assert_eq(kill(k.a->pid, SIGCONT), 0);

        for (int i = 0; i < BATCH_CLIENTS; i++) {
                struct json_object *o = conn_expect(c[i], 5000);
                int name = i % BATCH_NAMES;
                char id[16];

                snprintf(id, sizeof(id), "l%d", i);
                cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
                acquired[i] = jbool(o, "data.acquired");
                if (acquired[i]) {
                        cr_assert_eq(winner[name], -1, "bt%d granted to c%d and c%d in one batch", name,
                                     winner[name], i);
                        winner[name] = i;
                } else
                        cr_assert_str_eq(jstr(o, "data.reason"), "Lock held by another client", "%s",
                                         json_object_to_json_string(o));
                json_object_put(o);
        }
        for (int i = 0; i < BATCH_NAMES; i++)
                cr_assert_neq(winner[i], -1, "nobody got bt%d", i);
        for (int i = 0; i < BATCH_CLIENTS; i++) {
                struct json_object *o = conn_expect(c[i], 5000);
                int name = i % BATCH_NAMES;
                char id[16], self[16], win[16];

                snprintf(id, sizeof(id), "q%d", i);
                snprintf(self, sizeof(self), "c%d", i);
                snprintf(win, sizeof(win), "c%d", winner[name]);
                cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
                if (acquired[i])
                        cr_assert_str_eq(jstr(o, "data.holder"), self, "%s", json_object_to_json_string(o));
                else
                        /* The winner's, or nobody's once the winner's unlock ran. */
                        cr_assert(!jstr(o, "data.holder") || streq(jstr(o, "data.holder"), win), "%s",
                                  json_object_to_json_string(o));
                json_object_put(o);

                o = conn_expect(c[i], 5000);
                snprintf(id, sizeof(id), "u%d", i);
                cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
                if (acquired[i])
                        cr_assert(jbool(o, "data.released"), "%s", json_object_to_json_string(o));
                json_object_put(o);
        }
        for (int i = 0; i < BATCH_NAMES; i++) {
                struct json_object *o = conn_expect(c[BATCH_CLIENTS + i], 5000);
                char win[16];

                snprintf(win, sizeof(win), "c%d", winner[i]);
                cr_assert(!jstr(o, "data.holder") || streq(jstr(o, "data.holder"), win), "%s",
                          json_object_to_json_string(o));
                json_object_put(o);
        }

        /* 52 operations: the first 20 in one call, the rest grouped as they came (3 calls in all here). */
        status_counts(k.a, &ops1, &batches1);
        cr_assert_eq(ops1 - ops0, 3 * BATCH_CLIENTS + BATCH_NAMES);
        cr_assert_leq(batches1 - batches0, 3 * BATCH_CLIENTS + BATCH_NAMES - (BATCH_CLIENTS + BATCH_NAMES - 1),
                      "%" PRId64 " calls for %" PRId64 " operations", batches1 - batches0, ops1 - ops0);
        cr_log_info("%" PRId64 " operations in %" PRId64 " script calls", ops1 - ops0, batches1 - batches0);

        for (int i = 0; i < BATCH_CLIENTS + BATCH_NAMES; i++)
                conn_close(c[i]);
        cluster_down(&k);
}

/* A batch whose call fails fails every operation in it, each answered "Cluster unavailable" (never a grant), in
 * its client's order: Redis stuck (the command timeout), then Redis gone (not connected). There are more clients
 * than a batch holds (128): the full batch is sent while the node still reads the others, and when it cannot be
 * sent its operations are answered after that, not in the middle of it. */
#define N_FAILED_CLIENTS 140

Test(cluster_locks, a_failed_batch_answers_each_operation_unavailable) {
        TestRedis redis;
        char *dir, url_env[400];
        const char *env[] = { url_env, "PHOTOND_NODE_ID=batch", "PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS=300", NULL };
        Daemon *d;
        Conn *c[N_FAILED_CLIENTS];
        int64_t ops0, batches0, ops1, batches1;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", redis.url);
        d = daemon_start(&(DaemonOptions) { .env = env });
        wait_locks_connected(d);
        for (int i = 0; i < N_FAILED_CLIENTS; i++)
                c[i] = conn_open(d);

        for (int round = 0; round < 2; round++) {
                const char *expect = round == 0 ? "Cluster unavailable: no answer from Redis" :
                        "Cluster unavailable: not connected to Redis";

                if (round == 0)
                        cr_assert_eq(kill(redis.pid, SIGSTOP), 0);
                status_counts(d, &ops0, &batches0);
                process_stop(d->pid);
                for (int i = 0; i < N_FAILED_CLIENTS; i++)
                        conn_send(c[i], "{\"type\":\"%s\",\"id\":\"a%d\",\"lockName\":\"f%d\",\"sessionId\":\"s%d\"}\n"
                                  "{\"type\":\"ping\",\"id\":\"b%d\"}",
                                  i % 2 ? "lock" : "query_lock", i, i % 3, i, i);
                cr_assert_eq(kill(d->pid, SIGCONT), 0);
                for (int i = 0; i < N_FAILED_CLIENTS; i++) {
                        struct json_object *o = conn_expect(c[i], 5000);
                        char id[16];

                        snprintf(id, sizeof(id), "a%d", i);
                        cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
                        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
                        cr_assert_eq(strncmp(jstr(o, "error"), expect, strlen(expect)), 0, "%s", jstr(o, "error"));
                        json_object_put(o);
                        o = conn_expect(c[i], 5000);
                        snprintf(id, sizeof(id), "b%d", i);
                        cr_assert_str_eq(jstr(o, "id"), id, "the ping after it, in order");
                        json_object_put(o);
                }
                status_counts(d, &ops1, &batches1);
                if (round == 0) {
                        /* Sent and never answered: a full call of 128 and one of the rest. */
                        cr_assert_eq(ops1 - ops0, N_FAILED_CLIENTS);
                        cr_assert_geq(batches1 - batches0, 2);
                        /* Redis gone: the connection is down, nothing is sent. */
                        cr_assert_eq(kill(redis.pid, SIGCONT), 0);
                        test_redis_stop(&redis);
                } else
                        cr_assert_eq(batches1 - batches0, 0);
        }
        {
                struct json_object *o = status_of(d);

                cr_assert_eq(jint(o, "data.locks"), 0, "nothing was granted locally");
                cr_assert_geq(jint(o, "data.clusterLocks.unavailable"), 2 * N_FAILED_CLIENTS);
                json_object_put(o);
        }

        for (int i = 0; i < N_FAILED_CLIENTS; i++)
                conn_close(c[i]);
        daemon_stop_clean(d);
        tmpdir_remove(dir);
}
