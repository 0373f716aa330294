/* SPDX-License-Identifier: MIT */

/* Cluster mode's publish batches, with real photond nodes and one real redis-server: the publishes of one loop
 * iteration go to Redis as one script call and come back as one message, and still every subscriber on every node
 * sees one order with increasing eventIds, each publisher gets its own eventId (or its own refusal), a batch that
 * fails fails as a whole and delivers nothing, and the replay caps stay exact. */

#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "cluster-pair.h"
#include "redis-helper.h"

static void subscribe(Conn *c, const char *id, const char *channel) {
        struct json_object *o;

        o = conn_request(c, id, "{\"type\":\"subscribe\",\"id\":\"%s\",\"channel\":\"%s\"}", id, channel);
        cr_assert_str_eq(jstr(o, "type"), "result", "subscribe %s: %s", channel, json_object_to_json_string(o));
        json_object_put(o);
}

/* n publish lines of publisher who on channel (message {"from":who,"n":i}, ids "<who>-<i>"), sent in one write so
 * that the node reads them together. */
static void send_burst(Conn *c, int who, const char *channel, int first, int n) {
        size_t size = (size_t) n * 160 + 1, len = 0;
        char *buf = malloc(size);

        cr_assert_not_null(buf);
        for (int i = first; i < first + n; i++)
                len += (size_t) snprintf(buf + len, size - len,
                                         "{\"type\":\"publish\",\"id\":\"%d-%d\",\"channel\":\"%s\","
                                         "\"message\":{\"from\":%d,\"n\":%d}}\n", who, i, channel, who, i);
        cr_assert_lt(len, size);
        conn_send_raw(c, buf, len);
        free(buf);
}

/* ---- one order ---- */

#define N_PUB 5                 /* 3 publishers on node a, 2 on node b */
#define N_EACH 200
#define N_ALL (N_PUB * N_EACH)

typedef struct Seen {
        int64_t ids[N_ALL];
        int who[N_ALL];
        int n[N_ALL];
        size_t count;
} Seen;

/* Reads c's lines until it has want messages (and, with acked, its publisher's N_EACH results, in order). */
static void collect(Conn *c, Seen *s, size_t want, int who, int64_t *acked) {
        int results = 0;

        while (s->count < want || (acked && results < N_EACH)) {
                struct json_object *o = conn_expect(c, 10000);

                if (streq(jstr(o, "type"), "result")) {
                        char id[32];

                        cr_assert_not_null(acked, "unexpected %s", json_object_to_json_string(o));
                        snprintf(id, sizeof(id), "%d-%d", who, ++results);
                        cr_assert_str_eq(jstr(o, "id"), id, "results out of order: %s", json_object_to_json_string(o));
                        acked[results] = jint(o, "data.eventId");
                        cr_assert_gt(acked[results], 0);
                } else {
                        cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
                        cr_assert_lt(s->count, want, "one message too many: %s", json_object_to_json_string(o));
                        s->ids[s->count] = jint(o, "eventId");
                        s->who[s->count] = (int) jint(o, "message.from");
                        s->n[s->count] = (int) jint(o, "message.n");
                        cr_assert_neq(s->who[s->count], who, "a publisher got its own message: %s",
                                      json_object_to_json_string(o));
                        s->count++;
                }
                json_object_put(o);
        }
}

/* Five publishers on two nodes each write N_EACH publishes at once on two channels of different prefixes (a batch
 * touches two streams): every subscriber on both nodes sees all of them in one order, eventIds strictly
 * increasing, each publisher's messages in its order under the eventId it was answered with, and a publisher that
 * is subscribed gets all but its own; the nodes sent fewer script calls than publishes. */
Test(cluster_batch, bursts_from_two_nodes_in_one_order) {
        static Seen seen_a, seen_b, seen_p0;
        static int64_t acked[N_PUB][N_EACH + 1];
        Cluster2 c = {};
        Conn *pub[N_PUB], *sa, *sb;
        struct json_object *o;
        int64_t published = 0, batches = 0;

        cluster2_start(&c, NULL);
        for (int i = 0; i < N_PUB; i++)
                pub[i] = conn_open(i < 3 ? c.a : c.b);
        sa = conn_open(c.a);
        sb = conn_open(c.b);
        subscribe(sa, "s1", "burst");
        subscribe(sa, "s2", "other:*");
        subscribe(sb, "s1", "burst");
        subscribe(sb, "s2", "other:*");
        /* Publisher 0 hears everyone's on "burst" (and "other:x" through the wildcard) but its own. */
        subscribe(pub[0], "s0", "burst");
        subscribe(pub[0], "s0b", "other:*");

        for (int i = 0; i < N_PUB; i++) {
                /* Half on "burst", half on "other:x", in two writes each. */
                send_burst(pub[i], i, "burst", 1, N_EACH / 2);
                send_burst(pub[i], i, "other:x", N_EACH / 2 + 1, N_EACH / 2);
        }
        for (int i = 1; i < N_PUB; i++) {
                static Seen none;

                none.count = 0;
                collect(pub[i], &none, 0, i, acked[i]);
        }
        collect(pub[0], &seen_p0, N_ALL - N_EACH, 0, acked[0]);
        collect(sa, &seen_a, N_ALL, -1, NULL);
        collect(sb, &seen_b, N_ALL, -1, NULL);
        conn_expect_quiet(sa, 300);
        conn_expect_quiet(sb, 0);
        conn_expect_quiet(pub[0], 0);

        {
                int next[N_PUB];

                for (int i = 0; i < N_PUB; i++)
                        next[i] = 1;
                for (size_t i = 0; i < N_ALL; i++) {
                        int w = seen_a.who[i];

                        if (i > 0)
                                cr_assert_gt(seen_a.ids[i], seen_a.ids[i - 1], "eventIds not increasing at %zu", i);
                        cr_assert_eq(seen_b.ids[i], seen_a.ids[i], "node b's order differs at %zu", i);
                        cr_assert_eq(seen_b.who[i], w);
                        cr_assert_eq(seen_b.n[i], seen_a.n[i]);
                        cr_assert(w >= 0 && w < N_PUB);
                        cr_assert_eq(seen_a.n[i], next[w], "message %d of publisher %d came as %zu", next[w], w, i);
                        cr_assert_eq(acked[w][seen_a.n[i]], seen_a.ids[i], "publisher %d's %d: answered %" PRIi64
                                     ", delivered as %" PRIi64, w, seen_a.n[i], acked[w][seen_a.n[i]], seen_a.ids[i]);
                        next[w]++;
                }
                for (int i = 0; i < N_PUB; i++)
                        cr_assert_eq(next[i], N_EACH + 1);
        }
        for (size_t i = 0, j = 0; i < N_ALL; i++)
                if (seen_a.who[i] != 0)
                        cr_assert_eq(seen_p0.ids[j++], seen_a.ids[i], "publisher 0's order differs");

        for (int i = 0; i < 2; i++) {
                o = status_of(i == 0 ? c.a : c.b);
                cr_assert_eq(jint(o, "data.cluster.duplicates"), 0);
                cr_assert_eq(jint(o, "data.cluster.invalid"), 0);
                cr_assert_eq(jint(o, "data.cluster.publishRefused"), 0);
                cr_assert_eq(jint(o, "data.cluster.received"), N_ALL);
                cr_assert_eq(jint(o, "data.cluster.lastEventId"), seen_a.ids[N_ALL - 1]);
                published += jint(o, "data.cluster.published");
                batches += jint(o, "data.cluster.publishBatches");
                json_object_put(o);
        }
        cr_assert_eq(published, N_ALL);
        /* 10 writes of 100 publishes: far fewer calls than publishes (each write is read in a few pieces). */
        cr_assert_lt(batches, N_ALL / 4, "%" PRIi64 " script calls for %d publishes", batches, N_ALL);

        for (int i = 0; i < N_PUB; i++)
                conn_close(pub[i]);
        conn_close(sa);
        conn_close(sb);
        cluster2_stop(&c);
}

/* ---- refusal ---- */

/* No channel_message on c for ms (a refresh_needed may come: a connection may have been reset). */
static void expect_no_message(Conn *c, int ms) {
        uint64_t deadline = mono_ms() + (uint64_t) ms;
        struct json_object *o;

        for (uint64_t now = mono_ms(); now < deadline; now = mono_ms()) {
                o = conn_recv(c, (int) (deadline - now));
                if (!o)
                        return;
                cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "got %s", json_object_to_json_string(o));
                json_object_put(o);
        }
}

/* The next channel_message on c, refresh_needed lines skipped. */
static struct json_object* next_message(Conn *c) {
        for (;;) {
                struct json_object *o = conn_expect(c, 5000);

                if (!streq(jstr(o, "type"), "refresh_needed"))
                        return o;
                json_object_put(o);
        }
}

/* Reads n answers of publisher who (ids who-first…), in order: every one must be "Cluster unavailable". */
static void expect_refused(Conn *c, int who, int first, int n) {
        for (int i = first; i < first + n; i++) {
                struct json_object *o = conn_expect(c, 5000);
                char id[32];

                snprintf(id, sizeof(id), "%d-%d", who, i);
                cr_assert_str_eq(jstr(o, "id"), id, "got %s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "type"), "error", "got %s", json_object_to_json_string(o));
                cr_assert_eq(strncmp(jstr(o, "error"), "Cluster unavailable: ", 21), 0, "%s", jstr(o, "error"));
                json_object_put(o);
        }
}

/* A stuck Redis (SIGSTOP): bursts of two publishers go out as batches that are never answered; each of their
 * publishes is answered "Cluster unavailable" within the command timeout, and when Redis goes on and runs the
 * batches late, their deadline has passed: nothing is delivered, on either node. Redis stopped: every publish of
 * a burst is refused at once. Then bursts go through again. */
Test(cluster_batch, failed_batch_fails_every_publish_and_delivers_nothing) {
        Cluster2 c = {};
        Conn *p1, *p2, *sa, *sb;
        struct json_object *o;
        uint64_t t0;

        cluster2_start(&c, NULL);
        p1 = conn_open(c.a);
        p2 = conn_open(c.a);
        sa = conn_open(c.a);
        sb = conn_open(c.b);
        subscribe(sa, "s", "stuck");
        subscribe(sb, "s", "stuck");

        cr_assert_eq(kill(c.redis.pid, SIGSTOP), 0);
        t0 = mono_ms();
        send_burst(p1, 1, "stuck", 1, 50);
        send_burst(p2, 2, "stuck", 1, 50);
        expect_refused(p1, 1, 1, 50);
        expect_refused(p2, 2, 1, 50);
        cr_assert_lt(mono_ms() - t0, 3500, "took %" PRIu64 " ms", mono_ms() - t0);
        o = status_of(c.a);
        cr_assert_geq(jint(o, "data.cluster.publishRefused"), 100);
        cr_assert_eq(jint(o, "data.cluster.published"), 0);
        json_object_put(o);

        cr_assert_eq(kill(c.redis.pid, SIGCONT), 0);
        cluster_wait_ready(c.a, true);
        cluster_wait_ready(c.b, true);
        /* The batches Redis ran late published nothing. */
        expect_no_message(sa, 500);
        expect_no_message(sb, 100);

        /* Redis stopped: refused at once, every one. */
        test_redis_stop(&c.redis);
        cluster_wait_ready(c.a, false);
        t0 = mono_ms();
        send_burst(p1, 1, "stuck", 51, 50);
        expect_refused(p1, 1, 51, 50);
        cr_assert_lt(mono_ms() - t0, 2500, "took %" PRIu64 " ms", mono_ms() - t0);
        expect_no_message(sa, 300);
        expect_no_message(sb, 100);

        cr_assert_eq(test_redis_start(&c.redis, c.dir, NULL), 0);
        cluster_wait_ready(c.a, true);
        cluster_wait_ready(c.b, true);
        send_burst(p2, 2, "stuck", 51, 20);
        for (int i = 51; i <= 70; i++) {
                o = conn_expect(p2, 5000);
                cr_assert_str_eq(jstr(o, "type"), "result", "got %s", json_object_to_json_string(o));
                json_object_put(o);
        }
        for (int k = 0; k < 2; k++)
                for (int i = 51; i <= 70; i++) {
                        o = next_message(k == 0 ? sa : sb);
                        cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
                        cr_assert_eq(jint(o, "message.n"), i);
                        json_object_put(o);
                }

        conn_close(p1);
        conn_close(p2);
        conn_close(sa);
        conn_close(sb);
        cluster2_stop(&c);
}

/* ---- the caps ---- */

/* A subscribe from last on a new connection to d: the messages with ids[from..to] in order, then the result. */
static void expect_resumed(Daemon *d, const char *channel, int64_t last, const int64_t *ids, int from, int to) {
        Conn *sub = conn_open(d);
        struct json_object *o;

        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"r\",\"channel\":\"%s\",\"lastEventId\":%" PRId64 "}",
                  channel, last);
        for (int i = from; i <= to; i++) {
                o = conn_expect(sub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "%s", json_object_to_json_string(o));
                cr_assert_eq(jint(o, "eventId"), ids[i]);
                json_object_put(o);
        }
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_close(sub);
}

/* The cap (PHOTOND_REPLAY_MAX_EVENTS=5 per prefix) with bursts of 30 publishes (batches larger than the cap: they
 * drop their own first events) on one prefix, and 2 on another: a replay from below the last dropped id is
 * refresh_needed, one from it is complete, and the other prefix lost nothing. */
Test(cluster_batch, caps_stay_exact_with_batches) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        int64_t ids[33];

        cluster2_start(&c, "PHOTOND_REPLAY_MAX_EVENTS=5");
        pub = conn_open(c.a);
        send_burst(pub, 0, "capped", 1, 15);
        send_burst(pub, 0, "kept", 16, 2);
        send_burst(pub, 0, "capped", 18, 15);
        for (int i = 1; i <= 32; i++) {
                o = conn_expect(pub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "result", "got %s", json_object_to_json_string(o));
                ids[i] = jint(o, "data.eventId");
                if (i > 1)
                        cr_assert_gt(ids[i], ids[i - 1]);
                json_object_put(o);
        }
        /* "capped" keeps 28-32: from 26 (below the last dropped, 27) events are missing. */
        sub = conn_open(c.b);
        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"r1\",\"channel\":\"capped\",\"lastEventId\":%" PRId64 "}",
                  ids[26]);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_close(sub);
        /* From 27 (the last dropped) nothing is missing: 28-32. */
        expect_resumed(c.b, "capped", ids[27], ids, 28, 32);
        /* "kept" (another prefix, another stream) lost nothing: from before its first, both. */
        expect_resumed(c.b, "kept", ids[15], ids, 16, 17);

        conn_close(pub);
        cluster2_stop(&c);
}

/* One batch on two prefixes: "gap"'s stream entry has a hole where "hole"'s event is (its ids are not consecutive),
 * so the count cap cannot count its way to the last event to drop: it reads the entry. With a cap of 2, "gap"'s
 * events 1-3 and 5 go (the 4th publish is "hole"'s): the floor is the 5th publish's id, not the 4th's (which an
 * entry taken as consecutive would give). */
static long long redis_int(Cluster2 *c, const char *cmd, const char *key);

Test(cluster_batch, count_cap_reads_an_entry_with_a_hole) {
        static const char *const chans[8] = { NULL, "gap", "gap", "gap", "hole", "gap", "gap", "gap" };
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        int64_t ids[8];
        char buf[1024];
        size_t len = 0;

        cluster2_start(&c, "PHOTOND_REPLAY_MAX_EVENTS=2");
        pub = conn_open(c.a);
        for (int i = 1; i <= 7; i++)
                len += (size_t) snprintf(buf + len, sizeof(buf) - len,
                                         "{\"type\":\"publish\",\"id\":\"%d\",\"channel\":\"%s\","
                                         "\"message\":{\"n\":%d}}\n", i, chans[i], i);
        conn_send_raw(pub, buf, len);
        for (int i = 1; i <= 7; i++) {
                o = conn_expect(pub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "result", "got %s", json_object_to_json_string(o));
                ids[i] = jint(o, "data.eventId");
                json_object_put(o);
        }
        /* One batch: consecutive ids, one entry in each stream. */
        cr_assert_eq(ids[7] - ids[1], 6);
        cr_assert_eq(redis_int(&c, "XLEN", "photon:replay4:gap"), 1);

        o = conn_request(pub, "e1", "{\"type\":\"get_events_since\",\"id\":\"e1\",\"channel\":\"gap\","
                         "\"lastEventId\":%" PRId64 "}", ids[4]);
        cr_assert(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_request(pub, "e2", "{\"type\":\"get_events_since\",\"id\":\"e2\",\"channel\":\"gap\","
                         "\"lastEventId\":%" PRId64 "}", ids[5]);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 2, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.events.0.id"), ids[6]);
        cr_assert_eq(jint(o, "data.events.1.id"), ids[7]);
        json_object_put(o);
        /* "hole" kept its one event. */
        sub = conn_open(c.b);
        o = conn_request(sub, "e3", "{\"type\":\"get_events_since\",\"id\":\"e3\",\"channel\":\"hole\","
                         "\"lastEventId\":%" PRId64 "}", ids[3]);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 1, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.events.0.id"), ids[4]);
        cr_assert_eq(jint(o, "data.events.0.message.n"), 4);
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* ---- the batch cap ---- */

/* 600 publishes written at once (read in several pieces within one turn of the loop, or a few): no batch holds
 * more than 256, so there are at least 3 script calls; all are answered in order with increasing eventIds and
 * delivered on the other node in that order. */
Test(cluster_batch, at_most_256_publishes_per_batch) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        int64_t ids[601];

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        sub = conn_open(c.b);
        subscribe(sub, "s", "many");
        send_burst(pub, 0, "many", 1, 600);
        for (int i = 1; i <= 600; i++) {
                char id[32];

                o = conn_expect(pub, 5000);
                snprintf(id, sizeof(id), "0-%d", i);
                cr_assert_str_eq(jstr(o, "type"), "result", "got %s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "id"), id);
                ids[i] = jint(o, "data.eventId");
                if (i > 1)
                        cr_assert_gt(ids[i], ids[i - 1]);
                json_object_put(o);
        }
        for (int i = 1; i <= 600; i++) {
                o = conn_expect(sub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
                cr_assert_eq(jint(o, "eventId"), ids[i]);
                cr_assert_eq(jint(o, "message.n"), i);
                json_object_put(o);
        }
        o = status_of(c.a);
        cr_assert_eq(jint(o, "data.cluster.published"), 600);
        cr_assert_geq(jint(o, "data.cluster.publishBatches"), 3);
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* ---- what other versions, or anyone with access to Redis, send ---- */

/* redis-cli with these arguments, as anyone with access to Redis could. */
static void redis_cli(Cluster2 *c, const char *a1, const char *a2, const char *a3) {
        char *argv[] = { "redis-cli", "-s", c->redis.socket, (char *) a1, (char *) a2, (char *) a3, NULL };
        pid_t pid;
        int st;

        cr_assert_eq(posix_spawnp(&pid, "redis-cli", NULL, NULL, argv, NULL), 0);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A version 2 envelope (one publish, as photond sent them before batches) is still delivered; a malformed batch is
 * refused whole (counted in invalid, nothing of it delivered); then publishes go on in order. */
Test(cluster_batch, one_publish_envelopes_still_received_malformed_batches_refused) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        char env[200], id[32];
        int64_t last, invalid;

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        sub = conn_open(c.b);
        subscribe(sub, "s", "legacy");
        send_burst(pub, 0, "legacy", 1, 1);
        o = conn_expect(pub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "got %s", json_object_to_json_string(o));
        last = jint(o, "data.eventId");
        json_object_put(o);
        json_object_put(conn_expect(sub, 5000));

        /* The next id, as an older node would have taken it from the counter. */
        snprintf(id, sizeof(id), "%" PRIi64, last + 1);
        redis_cli(&c, "SET", "photon:eventid", id);
        snprintf(env, sizeof(env), "2 %" PRIi64 " %" PRIi64 " 7 node-old\n{\"v\":2}", last + 1, last);
        redis_cli(&c, "PUBLISH", "photon:ch:legacy", env);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "channel"), "legacy");
        cr_assert_eq(jint(o, "eventId"), last + 1);
        cr_assert_eq(jint(o, "message.v"), 2);
        json_object_put(o);

        o = status_of(c.b);
        invalid = jint(o, "data.cluster.invalid");
        json_object_put(o);
        /* Two events announced, one there, no NUL after its message: nothing of it. And a batch on a channel's
         * own Redis channel (batches come on <prefix>ch: only). */
        snprintf(env, sizeof(env), "3 %" PRIi64 " %" PRIi64 " 2 node-old\n1 6 1\nlegacy7", last + 2, last);
        redis_cli(&c, "PUBLISH", "photon:ch:", env);
        snprintf(env, sizeof(env), "3 %" PRIi64 " %" PRIi64 " 1 node-old\n1 6 1\nlegacy7", last + 2, last);
        redis_cli(&c, "PUBLISH", "photon:ch:legacy", env);
        conn_expect_quiet(sub, 300);
        o = status_of(c.b);
        cr_assert_eq(jint(o, "data.cluster.invalid"), invalid + 2);
        json_object_put(o);

        send_burst(pub, 0, "legacy", 2, 3);
        for (int i = 2; i <= 4; i++) {
                o = conn_expect(sub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
                cr_assert_gt(jint(o, "eventId"), last + 1);
                cr_assert_eq(jint(o, "message.n"), i);
                json_object_put(o);
        }

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* ---- the replay stream: one entry per prefix and batch ---- */

static long long redis_int(Cluster2 *c, const char *cmd, const char *key) {
        redisContext *ctx = redisConnectUnix(c->redis.socket);
        redisReply *r;
        long long v;

        cr_assert(ctx && !ctx->err);
        r = redisCommand(ctx, "%s %s", cmd, key);
        cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s %s", cmd, key);
        v = r->integer;
        freeReplyObject(r);
        redisFree(ctx);
        return v;
}

/* One write of publishes on two prefixes, interleaved: the batch wrote fewer stream entries than events (one per
 * prefix and batch), and replays split them exactly: a wildcard from the middle of the batch gets the prefix's
 * later events in eventId order (none of the other prefix), a channel gets its own later ones only, one from
 * the last id nothing. */
Test(cluster_batch, replays_split_the_entries_of_a_batch) {
        static const char *const chans[9] = { NULL, "mix:a", "mix:b", "other", "mix:a", "mix", "other", "mix:b",
                                              "mix:a" };
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        int64_t ids[9];
        char buf[2048];
        size_t len = 0;

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        for (int i = 1; i <= 8; i++)
                len += (size_t) snprintf(buf + len, sizeof(buf) - len,
                                         "{\"type\":\"publish\",\"id\":\"%d\",\"channel\":\"%s\","
                                         "\"message\":{\"n\":%d}}\n", i, chans[i], i);
        conn_send_raw(pub, buf, len);
        for (int i = 1; i <= 8; i++) {
                o = conn_expect(pub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "result", "got %s", json_object_to_json_string(o));
                ids[i] = jint(o, "data.eventId");
                json_object_put(o);
        }
        cr_assert_lt(redis_int(&c, "XLEN", "photon:replay4:mix"), 6);

        sub = conn_open(c.b);
        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"w\",\"channel\":\"mix:*\",\"lastEventId\":%" PRId64 "}",
                  ids[2]);
        for (int i = 3; i <= 8; i++) {
                if (!strcmp(chans[i], "other"))
                        continue;
                o = conn_expect(sub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "%s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "channel"), chans[i]);
                cr_assert_eq(jint(o, "eventId"), ids[i]);
                cr_assert_eq(jint(o, "message.n"), i);
                json_object_put(o);
        }
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_close(sub);

        o = conn_request(pub, "ev", "{\"type\":\"get_events_since\",\"id\":\"ev\",\"channel\":\"mix:a\","
                         "\"lastEventId\":%" PRId64 "}", ids[1]);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 2, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.events.0.id"), ids[4]);
        cr_assert_eq(jint(o, "data.events.1.id"), ids[8]);
        json_object_put(o);
        o = conn_request(pub, "ev2", "{\"type\":\"get_events_since\",\"id\":\"ev2\",\"channel\":\"mix:b\","
                         "\"lastEventId\":%" PRId64 "}", ids[8]);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 0, "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(pub);
        cluster2_stop(&c);
}

/* A Redis that protocol 3 nodes wrote to (a counter, no replay format marker): what they stored is in streams
 * protocol 4 does not read, so the first node of protocol 4 raises the birth to the counter and a replay from
 * before it is refresh_needed, not silently empty. */
Test(cluster_batch, replay_from_before_the_stream_format_changed_is_refresh_needed) {
        Cluster2 c = {};
        Conn *sub;
        struct json_object *o;
        /* Ids are milliseconds: recent ones, as the counter would hold (a replay from long ago is refresh_needed
         * anyway). */
        int64_t last = (int64_t) time(NULL) * 1000;
        char last_text[32], born_text[32];

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        c.dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&c.redis, c.dir, NULL), 0);
        snprintf(last_text, sizeof(last_text), "%" PRId64, last);
        snprintf(born_text, sizeof(born_text), "%" PRId64, last - 60000);
        redis_cli(&c, "SET", "photon:eventid", last_text);
        redis_cli(&c, "SET", "photon:eventid:born", born_text);
        c.a = cluster_node_start(c.redis.url, "node-a", NULL, NULL);
        c.b = cluster_node_start(c.redis.url, "node-b", NULL, NULL);
        cluster_wait_ready(c.a, true);
        cluster_wait_ready(c.b, true);

        sub = conn_open(c.b);
        o = conn_request(sub, "a", "{\"type\":\"get_events_since\",\"id\":\"a\",\"channel\":\"old\","
                         "\"lastEventId\":%" PRId64 "}", last - 1000);
        cr_assert(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_request(sub, "b", "{\"type\":\"get_events_since\",\"id\":\"b\",\"channel\":\"old\","
                         "\"lastEventId\":%" PRId64 "}", last);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(sub);
        cluster2_stop(&c);
}

/* PUBLISHes a protocol 4 batch by hand: its head, then its events (binary: NULs inside). One connection, one
 * MULTI, so the two come together as from the publish script. */
static void publish_batch(Cluster2 *c, const char *head, const char *events, size_t events_len) {
        redisContext *ctx = redisConnectUnix(c->redis.socket);
        redisReply *r;

        cr_assert(ctx && !ctx->err);
        r = redisCommand(ctx, "MULTI");
        freeReplyObject(r);
        r = redisCommand(ctx, "PUBLISH photon:ch: %s", head);
        freeReplyObject(r);
        r = redisCommand(ctx, "PUBLISH photon:ch: %b", events, events_len);
        freeReplyObject(r);
        r = redisCommand(ctx, "EXEC");
        cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        freeReplyObject(r);
        redisFree(ctx);
}

/* Another node's messages are taken as they are when they are one JSON value without whitespace (what a node
 * sends), checked in place: one with whitespace, one cut short and one with a raw line feed are refused, each
 * alone (counted in invalid), and the others of the batch delivered in order, byte for byte. A value nested
 * deeper than json-c parses (a webhook's body inside photond's event) is taken. */
Test(cluster_batch, other_nodes_messages_are_checked_in_place) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        char head[128], events[1024], id[32], deep[200];
        size_t len = 0;
        int64_t last, invalid;
        static const char *const msgs[] = { "{\"a\":[1,2.5e3,\"\\u00e9\\n\"]}", "{\"a\": 1}", "{\"a\":", "\"x\ny\"",
                                            NULL, "[true,null]" };

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        sub = conn_open(c.b);
        subscribe(sub, "s", "raw");
        send_burst(pub, 0, "raw", 1, 1);
        o = conn_expect(pub, 5000);
        last = jint(o, "data.eventId");
        json_object_put(o);
        json_object_put(conn_expect(sub, 5000));
        o = status_of(c.b);
        invalid = jint(o, "data.cluster.invalid");
        json_object_put(o);

        /* 40 levels of arrays around a number. */
        memset(deep, '[', 40);
        deep[40] = '7';
        memset(deep + 41, ']', 40);
        deep[81] = 0;
        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                const char *m = msgs[i] ?: deep;

                len += (size_t) snprintf(events + len, sizeof(events) - len, "%zu 3 %zu\nraw%s", i + 1, strlen(m), m);
                events[len++] = 0;
        }
        snprintf(id, sizeof(id), "%" PRIi64, last + ELEMENTSOF(msgs));
        redis_cli(&c, "SET", "photon:eventid", id);
        snprintf(head, sizeof(head), "4 %" PRIi64 " %" PRIi64 " %zu node-x", last + 1, last, ELEMENTSOF(msgs));
        publish_batch(&c, head, events, len);

        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                const char *text;

                if (i == 1 || i == 2 || i == 3)
                        continue;
                if (i == 4) {
                        /* Deeper than the test's own json-c parses: the line as it came. */
                        char *line = conn_expect_line(sub, 5000), want[300];

                        snprintf(want, sizeof(want), "\"eventId\":%" PRIi64 ",\"channel\":\"raw\",\"message\":%s}",
                                 last + 5, deep);
                        cr_assert(strstr(line, want), "%s", line);
                        free(line);
                        continue;
                }
                o = conn_expect(sub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
                cr_assert_eq(jint(o, "eventId"), last + 1 + (int64_t) i);
                text = json_object_to_json_string_ext(jget(o, "message"), JSON_C_TO_STRING_PLAIN);
                if (i == 0)
                        cr_assert_str_eq(jstr(o, "message.a.2"), "\xc3\xa9\n");
                else if (i == 5)
                        cr_assert_str_eq(text, "[true,null]");
                json_object_put(o);
        }
        conn_expect_quiet(sub, 300);
        o = status_of(c.b);
        cr_assert_eq(jint(o, "data.cluster.invalid"), invalid + 3);
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* The stream, its list and its floor key go together; one deleted alone (by hand, or evicted under maxmemory)
 * starts the prefix over instead of failing publishes: each batch after is answered and kept, a replay from before
 * it is refresh_needed, one from inside it exact. */
Test(cluster_batch, a_replay_key_lost_alone_starts_the_prefix_over) {
        static const char *const lost[] = { "photon:replaymeta4:gap", "photon:replay4:gap", "photon:replayfloor4:gap" };
        static const char *const chans[5] = { NULL, "gap", "hole", "gap", "gap" };
        Cluster2 c = {};
        Conn *pub;
        struct json_object *o;

        cluster2_start(&c, "PHOTOND_REPLAY_MAX_EVENTS=2");
        pub = conn_open(c.a);
        for (size_t round = 0; round <= ELEMENTSOF(lost); round++) {
                int64_t ids[5];
                char buf[1024];
                size_t len = 0;

                if (round > 0)
                        redis_cli(&c, "DEL", lost[round - 1], NULL);
                for (int i = 1; i <= 4; i++)
                        len += (size_t) snprintf(buf + len, sizeof(buf) - len,
                                                 "{\"type\":\"publish\",\"id\":\"%d\",\"channel\":\"%s\","
                                                 "\"message\":{\"n\":%d}}\n", i, chans[i], i);
                conn_send_raw(pub, buf, len);
                for (int i = 1; i <= 4; i++) {
                        o = conn_expect(pub, 5000);
                        cr_assert_str_eq(jstr(o, "type"), "result", "round %zu: %s", round,
                                         json_object_to_json_string(o));
                        cr_assert(jbool(o, "success"), "round %zu: %s", round, json_object_to_json_string(o));
                        ids[i] = jint(o, "data.eventId");
                        json_object_put(o);
                }
                cr_assert_eq(ids[4] - ids[1], 3, "one batch");
                /* Cap 2: of gap's events 1, 3, 4 the first went. */
                o = conn_request(pub, "e1", "{\"type\":\"get_events_since\",\"id\":\"e1\",\"channel\":\"gap\","
                                 "\"lastEventId\":%" PRId64 "}", ids[1] - 1);
                cr_assert(jbool(o, "data.refreshNeeded"), "round %zu: %s", round, json_object_to_json_string(o));
                json_object_put(o);
                o = conn_request(pub, "e2", "{\"type\":\"get_events_since\",\"id\":\"e2\",\"channel\":\"gap\","
                                 "\"lastEventId\":%" PRId64 "}", ids[1]);
                cr_assert_not(jbool(o, "data.refreshNeeded"), "round %zu: %s", round, json_object_to_json_string(o));
                cr_assert_eq(json_object_array_length(jget(o, "data.events")), 2, "round %zu: %s", round,
                             json_object_to_json_string(o));
                cr_assert_eq(jint(o, "data.events.0.id"), ids[3]);
                cr_assert_eq(jint(o, "data.events.1.id"), ids[4]);
                json_object_put(o);
        }

        conn_close(pub);
        cluster2_stop(&c);
}
