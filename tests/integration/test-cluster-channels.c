/* SPDX-License-Identifier: MIT */

/* Cluster mode's channel guarantees, with real photond nodes and one real redis-server (on a Unix socket in a
 * temporary directory): publishes acknowledged once Redis has them and refused ("Cluster unavailable") otherwise,
 * cluster-wide eventIds in one order on every node, replays from Redis on any node, refresh_needed when events
 * were lost. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "http-client.h"
#include "cluster-pair.h"
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

/* The next line, which must be a channel_message on channel; returns it. */
static struct json_object* expect_message(Conn *c, const char *channel) {
        struct json_object *o = conn_expect(c, 5000);

        cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "channel"), channel, "got %s", json_object_to_json_string(o));
        return o;
}

static void expect_refresh(Conn *c, const char *channel) {
        struct json_object *o = conn_expect(c, 5000);

        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "got %s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "channel"), channel);
        json_object_put(o);
}

/* ---- order ---- */

#define N_EACH 300

typedef struct Seen {
        int64_t ids[2 * N_EACH];
        int who[2 * N_EACH];            /* 0: from a, 1: from b */
        int n[2 * N_EACH];
        size_t count;
} Seen;

static void collect(Conn *c, Seen *s, size_t want) {
        while (s->count < want) {
                struct json_object *o = expect_message(c, "race");

                s->ids[s->count] = jint(o, "eventId");
                s->who[s->count] = (int) jint(o, "message.from");
                s->n[s->count] = (int) jint(o, "message.n");
                s->count++;
                json_object_put(o);
        }
}

/* Two publishers on two nodes send N_EACH messages each at once on one channel: every subscriber on every node
 * sees the same sequence, with strictly increasing eventIds, nothing lost or repeated, each message under the
 * eventId its publisher was acknowledged with; a publisher that is also subscribed gets the other's messages and
 * not its own. */
Test(cluster_channels, concurrent_publishers_one_order) {
        Cluster2 c = {};
        Conn *pa, *pb, *sa, *sb, *sb2;
        static Seen seen_a, seen_b, seen_b2, seen_pa;
        int64_t acked[2][N_EACH + 1];

        cluster2_start(&c, NULL);
        pa = conn_open(c.a);
        pb = conn_open(c.b);
        sa = conn_open(c.a);
        sb = conn_open(c.b);
        sb2 = conn_open(c.b);
        subscribe(sa, "race");
        subscribe(sb, "race");
        subscribe(sb2, "race:*");
        subscribe(pa, "race");

        /* Pipelined, interleaved: both nodes publish at the same time. */
        for (int i = 1; i <= N_EACH; i++) {
                conn_send(pa, "{\"type\":\"publish\",\"id\":\"a%d\",\"channel\":\"race\",\"message\":{\"from\":0,\"n\":%d}}",
                          i, i);
                conn_send(pb, "{\"type\":\"publish\",\"id\":\"b%d\",\"channel\":\"race\",\"message\":{\"from\":1,\"n\":%d}}",
                          i, i);
        }
        /* pb's answers: results only, in order. pa's: its results, and b's messages (pa is subscribed). */
        for (int i = 1; i <= N_EACH; i++) {
                struct json_object *o = conn_expect(pb, 10000);
                char id[16];

                snprintf(id, sizeof(id), "b%d", i);
                cr_assert_str_eq(jstr(o, "type"), "result", "got %s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "id"), id);
                acked[1][i] = jint(o, "data.eventId");
                json_object_put(o);
        }
        {
                int results = 0;

                while (results < N_EACH || seen_pa.count < N_EACH) {
                        struct json_object *o = conn_expect(pa, 10000);

                        if (!strcmp(jstr(o, "type"), "result")) {
                                char id[16];

                                snprintf(id, sizeof(id), "a%d", ++results);
                                cr_assert_str_eq(jstr(o, "id"), id);
                                acked[0][results] = jint(o, "data.eventId");
                        } else {
                                cr_assert_str_eq(jstr(o, "type"), "channel_message");
                                cr_assert_eq(jint(o, "message.from"), 1, "pa got its own message: %s",
                                             json_object_to_json_string(o));
                                seen_pa.ids[seen_pa.count++] = jint(o, "eventId");
                        }
                        json_object_put(o);
                }
        }

        collect(sa, &seen_a, 2 * N_EACH);
        collect(sb, &seen_b, 2 * N_EACH);
        while (seen_b2.count < 2 * N_EACH) {
                /* The wildcard "race:*" serves the channel "race" (its prefix). */
                struct json_object *o = expect_message(sb2, "race");

                seen_b2.ids[seen_b2.count] = jint(o, "eventId");
                seen_b2.who[seen_b2.count] = (int) jint(o, "message.from");
                seen_b2.n[seen_b2.count++] = (int) jint(o, "message.n");
                json_object_put(o);
        }
        conn_expect_quiet(sa, 300);
        conn_expect_quiet(sb, 0);
        conn_expect_quiet(sb2, 0);

        {
                int next[2] = { 1, 1 };

                for (size_t i = 0; i < 2 * N_EACH; i++) {
                        if (i > 0)
                                cr_assert_gt(seen_a.ids[i], seen_a.ids[i - 1], "eventIds not increasing at %zu", i);
                        cr_assert_eq(seen_b.ids[i], seen_a.ids[i], "node b's order differs at %zu", i);
                        cr_assert_eq(seen_b.who[i], seen_a.who[i]);
                        cr_assert_eq(seen_b.n[i], seen_a.n[i]);
                        cr_assert_eq(seen_b2.ids[i], seen_a.ids[i], "the wildcard's order differs at %zu", i);
                        /* Each publisher's messages in its order, under the id it was acknowledged with. */
                        cr_assert_eq(seen_a.n[i], next[seen_a.who[i]], "message %d of %d came as %zu",
                                     next[seen_a.who[i]], seen_a.who[i], i);
                        cr_assert_eq(acked[seen_a.who[i]][seen_a.n[i]], seen_a.ids[i]);
                        next[seen_a.who[i]]++;
                }
                cr_assert_eq(next[0], N_EACH + 1);
                cr_assert_eq(next[1], N_EACH + 1);
        }
        /* pa saw b's messages, in the same order. */
        cr_assert_eq(seen_pa.count, N_EACH);
        for (size_t i = 0, j = 0; i < 2 * N_EACH; i++)
                if (seen_a.who[i] == 1)
                        cr_assert_eq(seen_pa.ids[j++], seen_a.ids[i]);

        {
                struct json_object *o = status_of(c.a);

                cr_assert_eq(jint(o, "data.cluster.duplicates"), 0);
                cr_assert_eq(jint(o, "data.cluster.invalid"), 0);
                cr_assert_eq(jint(o, "data.cluster.publishRefused"), 0);
                cr_assert_eq(jint(o, "data.cluster.lastEventId"), seen_a.ids[2 * N_EACH - 1]);
                json_object_put(o);
        }

        conn_close(pa);
        conn_close(pb);
        conn_close(sa);
        conn_close(sb);
        conn_close(sb2);
        cluster2_stop(&c);
}

/* ---- acknowledgement ---- */

/* While Redis is stopped a publish is refused at once with "Cluster unavailable: …" (the URL, no hang) and nobody
 * gets it, not even this node's subscribers; when Redis is back the subscribers hear that they may have missed
 * events, and publishes are acknowledged and delivered again. */
Test(cluster_channels, publish_refused_while_redis_is_stopped) {
        Cluster2 c = {};
        Conn *pub, *sa, *sb;
        struct json_object *o;
        uint64_t t0;

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        sa = conn_open(c.a);
        sb = conn_open(c.b);
        subscribe(sa, "jobs");
        subscribe(sb, "jobs");
        (void) conn_publish(pub, "jobs", "{\"n\":1}");
        json_object_put(expect_message(sa, "jobs"));
        json_object_put(expect_message(sb, "jobs"));

        test_redis_stop(&c.redis);
        cluster_wait_ready(c.a, false);
        t0 = mono_ms();
        o = conn_request(pub, "down", "{\"type\":\"publish\",\"id\":\"down\",\"channel\":\"jobs\",\"message\":{\"n\":2}}");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_eq(strncmp(jstr(o, "error"), "Cluster unavailable: ", 21), 0, "%s", jstr(o, "error"));
        cr_assert_not_null(strstr(jstr(o, "error"), c.redis.url), "%s", jstr(o, "error"));
        cr_assert_not_null(strstr(jstr(o, "error"), "photond reconnects on its own"), "%s", jstr(o, "error"));
        cr_assert_lt(mono_ms() - t0, 2500, "the refusal took %" PRIu64 " ms", mono_ms() - t0);
        json_object_put(o);
        /* The fast path (a plain publish line) is refused the same way. */
        o = conn_request(pub, "down2", "{\"type\":\"publish\",\"id\":\"down2\",\"channel\":\"jobs\",\"message\":3}");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_expect_quiet(sa, 300);
        conn_expect_quiet(sb, 0);
        o = status_of(c.a);
        cr_assert_geq(jint(o, "data.cluster.publishRefused"), 2);
        json_object_put(o);

        cr_assert_eq(test_redis_start(&c.redis, c.dir, NULL), 0);
        cluster_wait_ready(c.a, true);
        cluster_wait_ready(c.b, true);
        expect_refresh(sa, "jobs");
        expect_refresh(sb, "jobs");
        (void) conn_publish(pub, "jobs", "{\"n\":4}");
        o = expect_message(sa, "jobs");
        cr_assert_eq(jint(o, "message.n"), 4);
        json_object_put(o);
        o = expect_message(sb, "jobs");
        cr_assert_eq(jint(o, "message.n"), 4);
        json_object_put(o);
        conn_expect_quiet(sa, 300);
        conn_expect_quiet(sb, 0);

        conn_close(pub);
        conn_close(sa);
        conn_close(sb);
        cluster2_stop(&c);
}

/* A stuck Redis (SIGSTOP: connected, never answering): a publish and a replay are answered "Cluster unavailable"
 * within the 2 s command timeout, never left hanging, and the publish is delivered nowhere, not even when Redis
 * goes on and runs it late; then publishes go through again. */
Test(cluster_channels, stuck_redis_gives_errors_within_the_timeout) {
        Cluster2 c = {};
        Conn *pub, *sub, *re;
        struct json_object *o;
        uint64_t t0;
        int64_t id;

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        sub = conn_open(c.a);
        re = conn_open(c.a);
        subscribe(sub, "stuck");
        id = conn_publish(pub, "stuck", "{\"n\":1}");
        json_object_put(expect_message(sub, "stuck"));

        cr_assert_eq(kill(c.redis.pid, SIGSTOP), 0);
        t0 = mono_ms();
        conn_send(pub, "{\"type\":\"publish\",\"id\":\"late\",\"channel\":\"stuck\",\"message\":{\"n\":2}}");
        conn_send(re, "{\"type\":\"subscribe\",\"id\":\"re\",\"channel\":\"stuck\",\"lastEventId\":%" PRId64 "}", id);
        o = conn_expect(pub, 4000);
        cr_assert_str_eq(jstr(o, "id"), "late");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_eq(strncmp(jstr(o, "error"), "Cluster unavailable: ", 21), 0, "%s", jstr(o, "error"));
        json_object_put(o);
        o = conn_expect(re, 4000);
        cr_assert_str_eq(jstr(o, "id"), "re");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_eq(strncmp(jstr(o, "error"), "Cluster unavailable: ", 21), 0, "%s", jstr(o, "error"));
        json_object_put(o);
        cr_assert_lt(mono_ms() - t0, 3500, "took %" PRIu64 " ms", mono_ms() - t0);
        conn_expect_quiet(sub, 300);

        /* Redis runs what waited in its socket when it goes on, the refused publish among them: its script is past
         * its deadline and publishes nothing (the refusal stands). */
        cr_assert_eq(kill(c.redis.pid, SIGCONT), 0);
        cluster_wait_ready(c.a, true);
        (void) conn_publish(pub, "stuck", "{\"n\":3}");
        o = expect_message(sub, "stuck");
        cr_assert_eq(jint(o, "message.n"), 3);
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        conn_close(re);
        cluster2_stop(&c);
}

/* ---- replay ---- */

/* A subscriber of node a goes away after the second of five events and comes back on node b with lastEventId:
 * it gets the three it missed (from Redis), in order, then the live ones, nothing twice; get_events_since on b
 * lists the same. */
Test(cluster_channels, replay_on_another_node) {
        Cluster2 c = {};
        Conn *pub, *sub, *again;
        struct json_object *o;
        int64_t ids[7];
        char msg[32];

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        sub = conn_open(c.a);
        subscribe(sub, "feed");
        for (int i = 1; i <= 2; i++) {
                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                ids[i] = conn_publish(pub, "feed", msg);
                o = expect_message(sub, "feed");
                cr_assert_eq(jint(o, "eventId"), ids[i]);
                json_object_put(o);
        }
        conn_close(sub);
        for (int i = 3; i <= 5; i++) {
                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                ids[i] = conn_publish(pub, "feed", msg);
        }
        (void) conn_publish(pub, "other", "{\"n\":0}");

        again = conn_open(c.b);
        conn_send(again, "{\"type\":\"subscribe\",\"id\":\"re\",\"channel\":\"feed\",\"lastEventId\":%" PRId64 "}",
                  ids[2]);
        for (int i = 3; i <= 5; i++) {
                o = expect_message(again, "feed");
                cr_assert_eq(jint(o, "eventId"), ids[i]);
                cr_assert_eq(jint(o, "message.n"), i);
                cr_assert(jbool(o, "replay"), "%s", json_object_to_json_string(o));
                json_object_put(o);
        }
        o = conn_expect(again, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "id"), "re");
        json_object_put(o);
        ids[6] = conn_publish(pub, "feed", "{\"n\":6}");
        o = expect_message(again, "feed");
        cr_assert_eq(jint(o, "eventId"), ids[6]);
        cr_assert_not(jhas(o, "replay"));
        json_object_put(o);
        conn_expect_quiet(again, 300);

        /* get_events_since on b: what Redis kept. */
        o = conn_request(again, "ev", "{\"type\":\"get_events_since\",\"id\":\"ev\",\"channel\":\"feed\",\"lastEventId\":%"
                         PRId64 "}", ids[2]);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 4, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.events.0.id"), ids[3]);
        cr_assert_eq(jint(o, "data.events.3.id"), ids[6]);
        cr_assert_gt(jint(o, "data.events.0.timestamp"), 0);
        json_object_put(o);

        /* Up to date: nothing to replay, no refresh. */
        conn_close(again);
        again = conn_open(c.b);
        conn_send(again, "{\"type\":\"subscribe\",\"id\":\"re2\",\"channel\":\"feed\",\"lastEventId\":%" PRId64 "}",
                  ids[6]);
        o = conn_expect(again, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        /* Ahead of every id issued: refresh. */
        conn_send(again, "{\"type\":\"subscribe\",\"id\":\"re3\",\"channel\":\"feed\",\"lastEventId\":%" PRId64 "}",
                  ids[6] + 1000000);
        o = conn_expect(again, 5000);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "id"), "re3");
        json_object_put(o);
        o = conn_expect(again, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result");
        json_object_put(o);

        conn_close(pub);
        conn_close(again);
        cluster2_stop(&c);
}

/* A subscribe with lastEventId on node b while node a's publisher is in full flow on the channel: the replayed
 * events and the live ones that follow are exactly the published ones after lastEventId, in order, none twice,
 * none missing, whatever was in flight when the replay ran. */
Test(cluster_channels, replay_meets_live_messages_without_gap_or_repeat) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        enum { N = 400, FIRST = 200, READ = 50 };
        static int64_t acked[N + 1];
        int acks = 0, next, results = 0;
        bool replayed_done = false;

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        for (int i = 1; i <= FIRST; i++)
                conn_send(pub, "{\"type\":\"publish\",\"id\":\"%d\",\"channel\":\"flow\",\"message\":%d}", i, i);
        while (acks < READ) {
                o = conn_expect(pub, 10000);
                cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
                acked[++acks] = jint(o, "data.eventId");
                json_object_put(o);
        }
        /* Published 1-50 for sure, more on the way. */
        sub = conn_open(c.b);
        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"re\",\"channel\":\"flow\",\"lastEventId\":%" PRId64 "}",
                  acked[READ]);
        for (int i = FIRST + 1; i <= N; i++)
                conn_send(pub, "{\"type\":\"publish\",\"id\":\"%d\",\"channel\":\"flow\",\"message\":%d}", i, i);
        while (acks < N) {
                o = conn_expect(pub, 10000);
                cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
                acked[++acks] = jint(o, "data.eventId");
                cr_assert_gt(acked[acks], acked[acks - 1]);
                json_object_put(o);
        }

        /* Messages READ+1 .. N, replayed ones first, then the result, then live ones. */
        for (next = READ + 1; next <= N;) {
                o = conn_expect(sub, 10000);
                if (!strcmp(jstr(o, "type"), "result")) {
                        cr_assert_not(replayed_done);
                        replayed_done = true;
                        results++;
                        json_object_put(o);
                        continue;
                }
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "%s", json_object_to_json_string(o));
                cr_assert_eq(jint(o, "message"), next, "expected message %d: %s", next, json_object_to_json_string(o));
                cr_assert_eq(jint(o, "eventId"), acked[next]);
                cr_assert_eq(jhas(o, "replay"), !replayed_done, "%s", json_object_to_json_string(o));
                json_object_put(o);
                next++;
        }
        if (!replayed_done) {
                o = conn_expect(sub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
                json_object_put(o);
        }
        conn_expect_quiet(sub, 300);

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* The cap (PHOTOND_REPLAY_MAX_EVENTS=5, per prefix in Redis) dropped events: a replay from before them is
 * refresh_needed, one from after them is complete. */
Test(cluster_channels, refresh_needed_when_the_cap_dropped_events) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        int64_t ids[11];
        char msg[32];

        cluster2_start(&c, "PHOTOND_REPLAY_MAX_EVENTS=5");
        pub = conn_open(c.a);
        for (int i = 1; i <= 10; i++) {
                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                ids[i] = conn_publish(pub, "capped", msg);
        }
        /* Events 1-5 are gone: from 2 some are missing. */
        sub = conn_open(c.b);
        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"r1\",\"channel\":\"capped\",\"lastEventId\":%" PRId64 "}",
                  ids[2]);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "id"), "r1");
        json_object_put(o);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result");
        json_object_put(o);
        /* From 5 (the last dropped) on, nothing is missing: 6-10. */
        conn_close(sub);
        sub = conn_open(c.b);
        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"r2\",\"channel\":\"capped\",\"lastEventId\":%" PRId64 "}",
                  ids[5]);
        for (int i = 6; i <= 10; i++) {
                o = expect_message(sub, "capped");
                cr_assert_eq(jint(o, "eventId"), ids[i]);
                json_object_put(o);
        }
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* Redis restarts without persistence: its replay store is gone, so a replay from before the restart is
 * refresh_needed (not an empty, complete-looking answer), and eventIds go on rising. */
Test(cluster_channels, replay_after_redis_lost_its_data) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        int64_t before, after;

        cluster2_start(&c, NULL);
        pub = conn_open(c.a);
        before = conn_publish(pub, "log", "{\"n\":1}");
        test_redis_stop(&c.redis);
        cluster_wait_ready(c.a, false);
        cr_assert_eq(test_redis_start(&c.redis, c.dir, NULL), 0);
        cluster_wait_ready(c.a, true);
        cluster_wait_ready(c.b, true);
        after = conn_publish(pub, "log", "{\"n\":2}");
        cr_assert_gt(after, before);

        sub = conn_open(c.b);
        /* Missed the event before the restart: that is unknown now. */
        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"r\",\"channel\":\"log\",\"lastEventId\":%" PRId64 "}",
                  before - 1);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        /* Saw it: what came after the restart is complete. */
        o = conn_request(sub, "ev", "{\"type\":\"get_events_since\",\"id\":\"ev\",\"channel\":\"log\",\"lastEventId\":%"
                         PRId64 "}", before);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 1);
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* The window (PHOTOND_REPLAY_WINDOW_MS=1000) dropped an event: a replay from before it is refresh_needed, one from
 * it on is complete. */
Test(cluster_channels, refresh_needed_when_the_window_dropped_events) {
        Cluster2 c = {};
        Conn *pub, *sub;
        struct json_object *o;
        int64_t old, fresh;

        cluster2_start(&c, "PHOTOND_REPLAY_WINDOW_MS=1000");
        pub = conn_open(c.a);
        old = conn_publish(pub, "win", "{\"n\":1}");
        /* Time passing is the point here, not a wait for something. */
        (void) poll(NULL, 0, 1300);
        fresh = conn_publish(pub, "win", "{\"n\":2}");

        sub = conn_open(c.b);
        o = conn_request(sub, "a", "{\"type\":\"get_events_since\",\"id\":\"a\",\"channel\":\"win\",\"lastEventId\":%"
                         PRId64 "}", old - 1);
        cr_assert(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_request(sub, "b", "{\"type\":\"get_events_since\",\"id\":\"b\",\"channel\":\"win\",\"lastEventId\":%"
                         PRId64 "}", old);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 1, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.events.0.id"), fresh);
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        cluster2_stop(&c);
}

/* A wildcard replay spans the channels of its prefix in eventId order, and leaves other prefixes out. */
Test(cluster_channels, wildcard_replay_across_channels) {
        Cluster2 c = {};
        Conn *pa, *pb, *sub;
        struct json_object *o;
        int64_t from, ids[7];
        static const char *const chans[7] = { NULL, "orders:eu", "orders:us", "orders", "orders:eu", "ordersx",
                                              "orders:us" };

        cluster2_start(&c, NULL);
        pa = conn_open(c.a);
        pb = conn_open(c.b);
        from = conn_publish(pa, "orders:eu", "{\"n\":0}");
        for (int i = 1; i <= 6; i++) {
                char msg[32];

                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                ids[i] = conn_publish(i % 2 ? pa : pb, chans[i], msg);
        }
        sub = conn_open(c.b);
        conn_send(sub, "{\"type\":\"subscribe\",\"id\":\"w\",\"channel\":\"orders:*\",\"lastEventId\":%" PRId64 "}",
                  from);
        for (int i = 1; i <= 6; i++) {
                if (!strcmp(chans[i], "ordersx"))
                        continue;
                o = expect_message(sub, chans[i]);
                cr_assert_eq(jint(o, "eventId"), ids[i]);
                cr_assert_eq(jint(o, "message.n"), i);
                json_object_put(o);
        }
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        (void) conn_publish(pa, "orders:jp", "{\"n\":7}");
        o = expect_message(sub, "orders:jp");
        json_object_put(o);
        conn_expect_quiet(sub, 300);

        conn_close(pa);
        conn_close(pb);
        conn_close(sub);
        cluster2_stop(&c);
}

/* ---- the HTTP API ---- */

#define TOKEN "cluster-channels-token"
#define AUTH "Authorization: Bearer " TOKEN

/* POST /v1/channels/{channel} goes the same way: answered with the cluster's eventId once Redis has the message,
 * 503 "Cluster unavailable: …" while Redis is stopped (and delivered nowhere). */
Test(cluster_channels, http_publish_waits_for_redis) {
        char *dir;
        TestRedis redis;
        char url_env[400];
        Daemon *d, *b;
        Conn *sub;
        Http *h;
        struct json_object *o;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", redis.url);
        d = daemon_start_http((const char*[]) { url_env, "PHOTOND_NODE_ID=node-http", "PHOTOND_API_TOKEN=" TOKEN,
                                                NULL });
        b = cluster_node_start(redis.url, "node-b", NULL, NULL, NULL);
        cluster_wait_ready(d, true);
        cluster_wait_ready(b, true);
        sub = conn_open(b);
        subscribe(sub, "hooks");

        h = http(d->webhook_port, "POST", "/v1/channels/hooks", "{\"n\":1}", "-H", AUTH, NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        o = expect_message(sub, "hooks");
        cr_assert_eq(jint(o, "eventId"), jint(h->json, "eventId"), "%s", h->body);
        cr_assert_eq(jint(o, "message.n"), 1);
        json_object_put(o);
        http_free(h);

        test_redis_stop(&redis);
        cluster_wait_ready(d, false);
        h = http(d->webhook_port, "POST", "/v1/channels/hooks", "{\"n\":2}", "-H", AUTH, NULL);
        cr_assert_eq(h->status, 503, "%s", h->body);
        cr_assert_not_null(strstr(jstr(h->json, "error"), "Cluster unavailable: "), "%s", h->body);
        http_free(h);

        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        cluster_wait_ready(d, true);
        cluster_wait_ready(b, true);
        expect_refresh(sub, "hooks");
        h = http(d->webhook_port, "POST", "/v1/channels/hooks", "{\"n\":3}", "-H", AUTH, NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        http_free(h);
        o = expect_message(sub, "hooks");
        cr_assert_eq(jint(o, "message.n"), 3);
        json_object_put(o);
        conn_expect_quiet(sub, 300);

        conn_close(sub);
        daemon_stop_clean(d);
        daemon_stop_clean(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}
