/* SPDX-License-Identifier: MIT */

/* Cluster mode seen through the HTTP front end, with real photond nodes and one real redis-server (on a Unix
 * socket in a temporary directory): an event stream's Last-Event-ID answered from Redis on another node than the
 * one the events were published on (every missed event in order, then the live ones, none twice and none
 * missing; refresh_needed when the cap dropped events; 503 "Cluster unavailable" while Redis is down or stuck),
 * and the cluster's locks listed by GET /v1/locks and counted by /metrics of a node that did not take them. D-Bus'
 * ListLocks and Locks are in test-bus.c, which has the bus. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "http-client.h"
#include "redis-helper.h"

#define TOKEN "t0ken-for-views"
#define AUTH "Authorization: Bearer " TOKEN

static void wait_ready(Daemon *d, bool ready) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o = status_of(d);
                bool ok = jbool(o, "data.cluster.ready") && jbool(o, "data.clusterLocks.connected");

                json_object_put(o);
                if (ok == ready)
                        return;
                cr_assert_lt(mono_ms(), deadline, "node never became %s", ready ? "ready" : "unready");
                (void) poll(NULL, 0, 20);
        }
}

typedef struct Views {
        char *dir;
        TestRedis redis;
        Daemon *a;                      /* the control socket only */
        Daemon *b;                      /* with the HTTP listener */
} Views;

/* A failed assertion ends the test before views_stop(): the suite's fini stops its redis-server then. */
static TestRedis *running_redis;

static void views_fini(void) {
        if (running_redis && running_redis->pid > 0) {
                /* It may have been stopped (SIGSTOP) by the test. */
                (void) kill(running_redis->pid, SIGCONT);
                test_redis_stop(running_redis);
        }
        running_redis = NULL;
}

TestSuite(cluster_views, .fini = views_fini);

static void views_start(Views *v, const char *extra) {
        static char url_env[400];
        const char *env_a[] = { url_env, "PHOTOND_NODE_ID=node-a", extra, NULL };
        const char *env_b[] = { url_env, "PHOTOND_NODE_ID=node-b", "PHOTOND_API_TOKEN=" TOKEN, extra, NULL };

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        v->dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&v->redis, v->dir, NULL), 0);
        running_redis = &v->redis;
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", v->redis.url);
        v->a = daemon_start(&(DaemonOptions) { .env = env_a });
        v->b = daemon_start_http(env_b);
        wait_ready(v->a, true);
        wait_ready(v->b, true);
}

/* Node b again, with empty buffers: what it replays from then on can only come from Redis. */
static void views_restart_b(Views *v) {
        daemon_free(v->b);
        v->b = daemon_start_http((const char*[]) { hdr("PHOTOND_CLUSTER_URL=%s", v->redis.url),
                                                   "PHOTOND_NODE_ID=node-b", "PHOTOND_API_TOKEN=" TOKEN, NULL });
        wait_ready(v->b, true);
}

static void views_stop(Views *v) {
        daemon_free(v->a);
        daemon_free(v->b);
        test_redis_stop(&v->redis);
        running_redis = NULL;
        tmpdir_remove(v->dir);
}

/* ---- an event stream through curl ---- */

static Sse* sse_open(int port, const char *query, const char *header) {
        return sse_open_as(port, query, AUTH, header);
}

#define REFRESH_EVENT(channel) \
        "event: refresh_needed\ndata: {\"type\":\"refresh_needed\",\"id\":\"lastEventId\",\"channel\":\"" channel "\"}"

/* ---- SSE's Last-Event-ID from Redis ---- */

/* Events published on node a while no stream was open are replayed by node b from Redis, in order, then the live
 * ones follow with none missing and none twice: checked against what a subscriber of node b received, while a
 * second process publishes on node a all through the stream's start. */
#define N_BEFORE 20
#define N_DURING 300

Test(cluster_views, sse_last_event_id_replays_from_redis_on_another_node) {
        Views v = {};
        Conn *pa, *sub;
        int64_t before[N_BEFORE], all[N_BEFORE + N_DURING];
        size_t n_all = 0, from;
        pid_t child;
        int status;
        Sse *s;

        views_start(&v, NULL);
        pa = conn_open(v.a);
        for (size_t i = 0; i < N_BEFORE; i++)
                before[i] = conn_publish(pa, "feed", hdr("{\"n\":%zu}", i));
        for (size_t i = 0; i < N_BEFORE; i++)
                all[n_all++] = before[i];

        /* Node b never had them (it starts afterwards): the replay must come from Redis, and meet the live
         * messages of a publisher that keeps going meanwhile. */
        views_restart_b(&v);
        sub = conn_open(v.b);
        json_object_put(conn_request(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"feed\"}"));
        child = fork();
        cr_assert(child >= 0);
        if (child == 0) {
                Conn *c = conn_open(v.a);

                for (size_t i = 0; i < N_DURING; i++) {
                        struct json_object *o = conn_request(c, "q", "{\"type\":\"publish\",\"id\":\"q\","
                                                             "\"channel\":\"feed\",\"message\":{\"m\":%zu}}", i);

                        if (!o || !streq(jstr(o, "type"), "result"))
                                _exit(1);
                        json_object_put(o);
                }
                _exit(0);
        }
        from = 7;
        s = sse_open(v.b->webhook_port, "channel=feed", hdr("Last-Event-ID: %" PRId64, before[from - 1]));
        cr_assert_eq(waitpid(child, &status, 0), child);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "publisher failed: %d", status);

        /* Every later message, as node b's subscriber saw them. */
        while (n_all < N_BEFORE + N_DURING) {
                struct json_object *o = conn_expect(sub, 5000);

                if (streq(jstr(o, "type") ?: "", "channel_message"))
                        all[n_all++] = jint(o, "eventId");
                json_object_put(o);
        }

        /* The stream: exactly what came after before[from - 1]. */
        for (size_t i = from; i < n_all; i++) {
                const char *e = sse_next(s, 5000);
                int64_t id;

                cr_assert_not_null(e, "event %zu of %zu missing", i, n_all);
                cr_assert_eq(sscanf(e, "id: %" SCNd64, &id), 1, "not a message: %s", e);
                cr_assert_eq(id, all[i], "event %zu: %" PRId64 ", expected %" PRId64, i, id, all[i]);
        }
        cr_assert_null(sse_next(s, 300), "an event too many");

        /* And the live ones go on. */
        int64_t live = conn_publish(pa, "feed", "\"live\"");
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(live, "feed", "\"live\""));
        sse_close(s);

        conn_close(pa);
        conn_close(sub);
        views_stop(&v);
}

/* Several channels and a wildcard, from a node that was started after the events were published: each channel's
 * replay from Redis; a Last-Event-ID ahead of every id is refresh_needed, as on one node. */
Test(cluster_views, sse_replays_every_channel_of_a_restarted_view) {
        Views v = {};
        Conn *pa;
        int64_t ids[4];
        Sse *s;

        views_start(&v, NULL);
        pa = conn_open(v.a);
        ids[0] = conn_publish(pa, "jobs:a", "1");
        ids[1] = conn_publish(pa, "jobs:b", "2");
        ids[2] = conn_publish(pa, "jobs:a", "3");
        ids[3] = conn_publish(pa, "other", "4");

        /* Node b restarts: its buffers are gone; Redis has it all. */
        views_restart_b(&v);

        s = sse_open(v.b->webhook_port, "channel=jobs:*&channel=other", hdr("Last-Event-ID: %" PRId64, ids[0]));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[1], "jobs:b", "2"));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[2], "jobs:a", "3"));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[3], "other", "4"));
        cr_assert_null(sse_next(s, 300));
        int64_t live = conn_publish(pa, "jobs:c", "5");
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(live, "jobs:c", "5"));
        sse_close(s);

        s = sse_open(v.b->webhook_port, "channel=other", hdr("Last-Event-ID: %" PRId64, live + 1000000));
        cr_assert_str_eq(sse_next(s, 5000), REFRESH_EVENT("other"));
        sse_close(s);

        conn_close(pa);
        views_stop(&v);
}

/* The cap (PHOTOND_REPLAY_MAX_EVENTS=5 in Redis) dropped events: a stream from before them starts with
 * refresh_needed, then the live events; one from after them is complete. */
Test(cluster_views, sse_refresh_needed_when_the_cap_dropped_events) {
        Views v = {};
        Conn *pa;
        int64_t ids[10];
        Sse *s;

        views_start(&v, "PHOTOND_REPLAY_MAX_EVENTS=5");
        pa = conn_open(v.a);
        for (size_t i = 0; i < 10; i++)
                ids[i] = conn_publish(pa, "feed", hdr("%zu", i));

        s = sse_open(v.b->webhook_port, "channel=feed", hdr("Last-Event-ID: %" PRId64, ids[1]));
        cr_assert_str_eq(sse_next(s, 5000), REFRESH_EVENT("feed"));
        cr_assert_null(sse_next(s, 300));
        int64_t live = conn_publish(pa, "feed", "\"live\"");
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(live, "feed", "\"live\""));
        sse_close(s);

        s = sse_open(v.b->webhook_port, "channel=feed", hdr("Last-Event-ID: %" PRId64, ids[6]));
        for (size_t i = 7; i < 10; i++)
                cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[i], "feed", hdr("%zu", i)));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(live, "feed", "\"live\""));
        cr_assert_null(sse_next(s, 300));
        sse_close(s);

        conn_close(pa);
        views_stop(&v);
}

/* Redis down: a stream with Last-Event-ID is refused with 503 "Cluster unavailable: …" before it starts (no
 * stream that would miss events silently); one without it is live, as before. */
Test(cluster_views, sse_last_event_id_while_redis_is_down) {
        Views v = {};
        Http *h;

        views_start(&v, NULL);
        test_redis_stop(&v.redis);
        wait_ready(v.b, false);

        h = http(v.b->webhook_port, "GET", "/v1/events?channel=feed", NULL, "-H", AUTH, "-H", "Last-Event-ID: 5",
                 NULL);
        cr_assert_eq(h->status, 503, "%d %s", h->status, h->body);
        cr_assert_not_null(h->json, "%s", h->body);
        cr_assert_not_null(strstr(jstr(h->json, "error"), "Cluster unavailable: "), "%s", h->body);
        http_free(h);

        /* A query's lastEventId too. */
        h = http(v.b->webhook_port, "GET", "/v1/events?channel=feed&lastEventId=5", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 503, "%d %s", h->status, h->body);
        http_free(h);

        views_stop(&v);
}

/* ---- the cluster's locks over HTTP ---- */

/* GET /v1/locks of node b lists a lock taken on node a (from Redis, not node b's empty table), /metrics counts
 * them, DELETE is refused, and GET answers 503 "Cluster unavailable: …" while Redis is stopped. */
Test(cluster_views, http_locks_are_the_clusters) {
        Views v = {};
        Conn *ca;
        struct json_object *o, *e;
        int64_t token;
        Http *h;

        views_start(&v, NULL);
        ca = conn_open(v.a);
        o = conn_request(ca, "l", "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"deploy\",\"sessionId\":\"ci\","
                         "\"lockTimeout\":60000}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        token = jint(o, "data.fencingToken");
        json_object_put(o);
        o = conn_request(ca, "l2", "{\"type\":\"lock\",\"id\":\"l2\",\"lockName\":\"db/main\","
                         "\"sessionId\":\"worker 2\",\"lockTimeout\":60000}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        h = http(v.b->webhook_port, "GET", "/v1/locks", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 200, "%d %s", h->status, h->body);
        /* list_locks' shape and order (oldest acquisition first), as the socket of either node lists them. */
        cr_assert_eq(json_object_array_length(jget(h->json, "locks")), 2, "%s", h->body);
        e = json_object_array_get_idx(jget(h->json, "locks"), 0);
        cr_assert_str_eq(jstr(e, "name"), "deploy");
        cr_assert_str_eq(jstr(e, "holder"), "ci");
        cr_assert_eq(jint(e, "fencingToken"), token);
        cr_assert_gt(jint(e, "expiresAt"), jint(e, "acquiredAt"));
        e = json_object_array_get_idx(jget(h->json, "locks"), 1);
        cr_assert_str_eq(jstr(e, "name"), "db/main");
        cr_assert_str_eq(jstr(e, "holder"), "worker 2");
        http_free(h);

        /* /metrics: the count the heartbeat took in Redis (within a heartbeat, 1 s). */
        for (uint64_t deadline = mono_ms() + 5000;;) {
                bool seen;

                h = http(v.b->webhook_port, "GET", "/metrics", NULL, "-H", AUTH, NULL);
                cr_assert_eq(h->status, 200, "%d", h->status);
                seen = strstr(h->body, "\nphotond_cluster_locks_held 2\n") != NULL;
                /* The node's own table is not where the cluster's locks are. */
                cr_assert_not_null(strstr(h->body, "\nphotond_locks_held 0\n"));
                http_free(h);
                if (seen)
                        break;
                cr_assert_lt(mono_ms(), deadline, "photond_cluster_locks_held never became 2");
                (void) poll(NULL, 0, 50);
        }

        /* No forced release: Redis releases for the holder only; the lock stays. */
        h = http(v.b->webhook_port, "DELETE", "/v1/locks/deploy", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 501, "%d %s", h->status, h->body);
        cr_assert_not_null(strstr(jstr(h->json, "error"), "a forced release is not supported"), "%s", h->body);
        http_free(h);
        o = conn_request(ca, "q", "{\"type\":\"query_lock\",\"id\":\"q\",\"lockName\":\"deploy\"}");
        cr_assert_str_eq(jstr(o, "data.holder"), "ci", "%s", json_object_to_json_string(o));
        json_object_put(o);

        test_redis_stop(&v.redis);
        wait_ready(v.b, false);
        h = http(v.b->webhook_port, "GET", "/v1/locks", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 503, "%d %s", h->status, h->body);
        cr_assert_not_null(strstr(jstr(h->json, "error"), "Cluster unavailable: "), "%s", h->body);
        http_free(h);

        conn_close(ca);
        views_stop(&v);
}

/* A stuck Redis (SIGSTOP): what was asked for is answered when the command timeout ends it, never a hang; an
 * event stream's replay and a lock list, both waiting suspended meanwhile, get 503 "Cluster unavailable: …". */
Test(cluster_views, stuck_redis_ends_waiting_requests_with_503) {
        Views v = {};
        Sse *s;
        Http *h;
        uint64_t t0, elapsed;
        bool refused;

        views_start(&v, "PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS=500");
        cr_assert_eq(kill(v.redis.pid, SIGSTOP), 0);

        t0 = mono_ms();
        s = sse_open(v.b->webhook_port, "channel=feed", "Last-Event-ID: 5");
        h = http(v.b->webhook_port, "GET", "/v1/locks", NULL, "-H", AUTH, NULL);
        /* The stream's request got its 503 as well: curl prints the body and ends. */
        refused = sse_wait(s, "Cluster unavailable: ", 10000);
        elapsed = mono_ms() - t0;
        /* Going on before any assertion: a stopped redis-server would outlive a failed test. */
        cr_assert_eq(kill(v.redis.pid, SIGCONT), 0);

        cr_assert_eq(h->status, 503, "%d %s", h->status, h->body);
        cr_assert_not_null(strstr(jstr(h->json, "error"), "Cluster unavailable: "), "%s", h->body);
        http_free(h);
        cr_assert(refused, "no refusal: %s", s->buf);
        cr_assert_null(strstr(s->buf, "photond event stream"), "a stream started: %s", s->buf);
        cr_assert_lt(elapsed, 10000, "no answer for %" PRIu64 " ms", elapsed);
        sse_close(s);

        views_stop(&v);
}
