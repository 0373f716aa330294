/* SPDX-License-Identifier: MIT */

/* Cluster mode: two real photond nodes sharing one real redis-server (on a Unix socket in a temporary
 * directory): a publish on one node reaches the subscribers of the other once, wildcards across nodes, and a Redis
 * that is not there at the start. */

#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "redis-helper.h"

static unsigned req_serial;

static void subscribe(Conn *c, const char *channel) {
        char id[32];
        struct json_object *o;

        snprintf(id, sizeof(id), "s%u", ++req_serial);
        o = conn_request(c, id, "{\"type\":\"subscribe\",\"id\":\"%s\",\"channel\":\"%s\"}", id, channel);
        cr_assert_str_eq(jstr(o, "type"), "result", "subscribe %s: %s", channel, json_object_to_json_string(o));
        json_object_put(o);
}

static void publish(Conn *c, const char *channel, const char *message) {
        char id[32];
        struct json_object *o;

        snprintf(id, sizeof(id), "p%u", ++req_serial);
        o = conn_request(c, id, "{\"type\":\"publish\",\"id\":\"%s\",\"channel\":\"%s\",\"message\":%s}", id, channel,
                         message);
        cr_assert_str_eq(jstr(o, "type"), "result", "publish: %s", json_object_to_json_string(o));
        json_object_put(o);
}

/* Waits (10 s at most) for status to say the node is connected to Redis and takes publishes (ready: its
 * subscriptions confirmed, the eventId counter raised). */
static void wait_connected(Daemon *d) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o = status_of(d);
                bool ok = jbool(o, "data.cluster.connected") && jbool(o, "data.cluster.ready");

                json_object_put(o);
                if (ok)
                        return;
                cr_assert_lt(mono_ms(), deadline, "node never connected to Redis");
                (void) poll(NULL, 0, 20);
        }
}

/* The other node's Redis subscription is in place once a probe published on from reaches sub (probes are
 * published until one does; the ones that arrive meanwhile are drained with a ping). */
static void sync_subscription(Conn *from, Conn *sub, const char *channel) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o;

                publish(from, channel, "{\"probe\":true}");
                o = conn_recv(sub, 100);
                if (o) {
                        cr_assert_str_eq(jstr(o, "type"), "channel_message");
                        json_object_put(o);
                        break;
                }
                cr_assert_lt(mono_ms(), deadline, "the subscription never reached the other node");
        }
        /* Probes still in flight: drain until a ping comes back, then a little longer for Redis' side. */
        for (;;) {
                struct json_object *o = conn_recv(sub, 300);

                if (!o)
                        break;
                cr_assert_str_eq(jstr(o, "type"), "channel_message");
                json_object_put(o);
        }
}

/* A publish refused: "Cluster unavailable: …" naming the URL without its password. */
static void publish_refused(Conn *c, const char *channel, const char *url) {
        struct json_object *o;

        o = conn_request(c, "refused", "{\"type\":\"publish\",\"id\":\"refused\",\"channel\":\"%s\",\"message\":1}",
                         channel);
        cr_assert_str_eq(jstr(o, "type"), "error", "publish: %s", json_object_to_json_string(o));
        cr_assert_eq(strncmp(jstr(o, "error"), "Cluster unavailable: ", 21), 0, "%s", jstr(o, "error"));
        cr_assert_not_null(strstr(jstr(o, "error"), url), "%s", jstr(o, "error"));
        json_object_put(o);
}

static void expect_n(Conn *c, const char *channel, int n) {
        for (int i = 1; i <= n; i++) {
                struct json_object *o = conn_expect(c, 5000);

                cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "channel"), channel);
                cr_assert_eq(jint(o, "message.n"), i, "message %d came as %" PRId64, i, jint(o, "message.n"));
                json_object_put(o);
        }
}

static void expect_quiet(Conn *c) {
        struct json_object *o;

        /* Nothing else within half a second: no duplicate came through Redis. */
        o = conn_recv(c, 500);
        cr_assert_null(o, "unexpected %s", o ? json_object_to_json_string(o) : "");
}

Test(cluster, publish_reaches_the_other_node_once) {
        TestRedis redis;
        char *dir;
        Daemon *a, *b;
        Conn *pub, *sub_b, *sub_a;
        struct json_object *o;
        char msg[32];

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = cluster_node_start(redis.url, "node-a", NULL, NULL);
        b = cluster_node_start(redis.url, "node-b", NULL, NULL);
        wait_connected(a);
        wait_connected(b);

        pub = conn_open(a);
        sub_a = conn_open(a);
        sub_b = conn_open(b);
        subscribe(sub_b, "news");
        subscribe(sub_a, "news");
        sync_subscription(pub, sub_b, "news");
        /* sub_a got the probes locally, once each. */
        for (;;) {
                o = conn_recv(sub_a, 200);
                if (!o)
                        break;
                json_object_put(o);
        }

        for (int i = 1; i <= 50; i++) {
                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                publish(pub, "news", msg);
        }
        expect_n(sub_b, "news", 50);
        expect_n(sub_a, "news", 50);
        expect_quiet(sub_b);
        expect_quiet(sub_a);

        o = status_of(b);
        cr_assert_str_eq(jstr(o, "data.cluster.nodeId"), "node-b");
        cr_assert_str_eq(jstr(o, "data.cluster.prefix"), "photon:");
        cr_assert_str_eq(jstr(o, "data.cluster.state"), "connected");
        cr_assert_str_eq(jstr(o, "data.cluster.url"), redis.url);
        cr_assert_geq(jint(o, "data.cluster.received"), 50);
        json_object_put(o);
        {
                char *out = NULL;

                cr_assert_eq(run_ctl(b, &out, "status", NULL), 0);
                cr_assert_not_null(strstr(out, "  node id       node-b\n"), "%s", out);
                free(out);
        }

        conn_close(pub);
        conn_close(sub_a);
        conn_close(sub_b);
        daemon_stop_clean(a);
        daemon_stop_clean(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

Test(cluster, wildcard_across_nodes) {
        TestRedis redis;
        char *dir;
        Daemon *a, *b;
        Conn *pub, *wild, *exact;
        char msg[32];

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = cluster_node_start(redis.url, "node-a", NULL, NULL);
        b = cluster_node_start(redis.url, "node-b", NULL, NULL);
        wait_connected(a);
        wait_connected(b);

        pub = conn_open(a);
        wild = conn_open(b);
        exact = conn_open(b);
        subscribe(wild, "orders:*");
        subscribe(exact, "orders:eu");
        /* Node b holds both a pattern and a channel that one publish on orders:eu matches: Redis delivers it
         * twice to b, which publishes it here once. */
        sync_subscription(pub, exact, "orders:eu");
        for (;;) {
                struct json_object *o = conn_recv(wild, 200);
                if (!o)
                        break;
                json_object_put(o);
        }

        for (int i = 1; i <= 20; i++) {
                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                publish(pub, "orders:eu", msg);
        }
        expect_n(wild, "orders:eu", 20);
        expect_n(exact, "orders:eu", 20);
        publish(pub, "orders:us", "{\"n\":1}");
        expect_n(wild, "orders:us", 1);
        publish(pub, "other", "{\"n\":1}");
        expect_quiet(wild);
        expect_quiet(exact);

        conn_close(pub);
        conn_close(wild);
        conn_close(exact);
        daemon_stop_clean(a);
        daemon_stop_clean(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

/* Redis goes away and comes back: both nodes reconnect, subscribe again and tell their subscribers they may have
 * missed events (refresh_needed), and publishes cross again. While it is away, a publish on a is refused
 * ("Cluster unavailable"; the first slice delivered it to a's own subscribers) and reaches nobody. */
Test(cluster, redis_restart_restores_subscriptions) {
        TestRedis redis;
        char *dir;
        Daemon *a, *b;
        Conn *pub, *sub_a, *sub_b;
        struct json_object *o;
        uint64_t deadline;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = cluster_node_start(redis.url, "node-a", NULL, NULL);
        b = cluster_node_start(redis.url, "node-b", NULL, NULL);
        wait_connected(a);
        wait_connected(b);
        pub = conn_open(a);
        sub_a = conn_open(a);
        sub_b = conn_open(b);
        subscribe(sub_a, "news");
        subscribe(sub_b, "news");
        sync_subscription(pub, sub_b, "news");

        test_redis_stop(&redis);
        deadline = mono_ms() + 10000;
        for (;;) {
                bool connected;

                o = status_of(b);
                connected = jbool(o, "data.cluster.connected");
                json_object_put(o);
                if (!connected)
                        break;
                cr_assert_lt(mono_ms(), deadline, "b never noticed Redis went away");
                (void) poll(NULL, 0, 20);
        }
        for (;;) {
                o = conn_recv(sub_a, 100);
                if (!o)
                        break;
                json_object_put(o);
        }
        publish_refused(pub, "news", redis.url);
        expect_quiet(sub_a);

        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        wait_connected(a);
        wait_connected(b);
        /* What was published elsewhere meanwhile never came: each node's subscribers hear it, first. */
        o = conn_expect(sub_b, 5000);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "got %s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "channel"), "news");
        json_object_put(o);
        o = conn_expect(sub_a, 5000);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "got %s", json_object_to_json_string(o));
        json_object_put(o);
        sync_subscription(pub, sub_b, "news");
        for (;;) {
                o = conn_recv(sub_a, 200);
                if (!o)
                        break;
                json_object_put(o);
        }
        publish(pub, "news", "{\"n\":1}");
        publish(pub, "news", "{\"n\":2}");
        expect_n(sub_b, "news", 2);
        expect_n(sub_a, "news", 2);

        conn_close(pub);
        conn_close(sub_a);
        conn_close(sub_b);
        daemon_stop_clean(a);
        daemon_stop_clean(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

Test(cluster, redis_unreachable_at_start) {
        Daemon *d;
        Conn *pub, *sub;
        struct json_object *o;

        /* Port 1 on the loopback refuses: photond starts all the same and serves what is local; a publish, which
         * needs the cluster, is refused at once (the first slice delivered it here) and reaches nobody. */
        d = cluster_node_start("redis://app:hunter2@127.0.0.1:1/0", "lonely", NULL, NULL);
        pub = conn_open(d);
        sub = conn_open(d);
        subscribe(sub, "local");
        publish_refused(pub, "local", "redis://app:***@127.0.0.1:1/0");
        expect_quiet(sub);

        o = status_of(d);
        cr_assert_not(jbool(o, "data.cluster.connected"));
        cr_assert_str_neq(jstr(o, "data.cluster.state"), "connected");
        cr_assert_str_eq(jstr(o, "data.cluster.url"), "redis://app:***@127.0.0.1:1/0");
        cr_assert_str_eq(jstr(o, "data.cluster.nodeId"), "lonely");
        cr_assert_null(strstr(json_object_to_json_string(o), "hunter2"));
        json_object_put(o);
        cr_assert_not(daemon_log_contains(d, "hunter2"));

        conn_close(pub);
        conn_close(sub);
        daemon_stop_clean(d);
}

Test(cluster, single_node_has_no_cluster_status) {
        Daemon *d = daemon_start(&(DaemonOptions) {});
        struct json_object *o = status_of(d);

        cr_assert_not(jhas(o, "data.cluster"));
        json_object_put(o);
        daemon_stop_clean(d);
}
