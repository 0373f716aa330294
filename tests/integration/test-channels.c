/* SPDX-License-Identifier: MIT */

/* Pub/sub against a real photond over several real connections: delivery rules, replay across reconnects and
 * restarts, the slow-consumer policy, many subscribers, caps, and photonctl's verbs. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "json-util.h"

static unsigned req_serial;

static void subscribe(Conn *c, const char *channel) {
        char id[32];
        struct json_object *o;

        snprintf(id, sizeof(id), "s%u", ++req_serial);
        o = conn_request(c, id, "{\"type\":\"subscribe\",\"id\":\"%s\",\"channel\":\"%s\"}", id, channel);
        cr_assert_str_eq(jstr(o, "type"), "result", "subscribe %s: %s", channel, json_object_to_json_string(o));
        cr_assert(jbool(o, "data.subscribed"));
        cr_assert_str_eq(jstr(o, "data.channel"), channel);
        json_object_put(o);
}

static uint64_t publish(Conn *c, const char *channel, const char *message) {
        char id[32];
        struct json_object *o;
        uint64_t event_id;

        snprintf(id, sizeof(id), "p%u", ++req_serial);
        o = conn_request(c, id, "{\"type\":\"publish\",\"id\":\"%s\",\"channel\":\"%s\",\"message\":%s}", id, channel,
                         message);
        cr_assert_str_eq(jstr(o, "type"), "result", "publish: %s", json_object_to_json_string(o));
        cr_assert(jbool(o, "data.published"));
        cr_assert_str_eq(jstr(o, "data.channel"), channel);
        event_id = jint(o, "data.eventId");
        json_object_put(o);
        return event_id;
}

/* A ping answered with nothing before it proves nothing was queued for c. */
static void expect_nothing_queued(Conn *c) {
        struct json_object *o;

        conn_send(c, "{\"type\":\"ping\",\"id\":\"quiet\"}");
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "pong", "expected nothing, got %s", json_object_to_json_string(o));
        json_object_put(o);
}

static int64_t status_int(Daemon *d, const char *key) {
        Conn *c = conn_open(d);
        struct json_object *o;
        char path[64];
        int64_t v;

        o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");
        snprintf(path, sizeof(path), "data.%s", key);
        v = jint(o, path);
        json_object_put(o);
        conn_close(c);
        return v;
}

static struct json_object* expect_message(Conn *c, const char *channel) {
        struct json_object *o = conn_expect(c, 5000);

        cr_assert_str_eq(jstr(o, "type"), "channel_message", "got %s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "channel"), channel);
        return o;
}

Test(channels, ordering_self_exclusion_wildcard_single_copy) {
        Daemon *d = daemon_start(NULL);
        Conn *pub = conn_open(d), *exact = conn_open(d), *wild = conn_open(d), *both = conn_open(d),
             *deep = conn_open(d), *other = conn_open(d);
        char ids[100][32];
        int64_t last = 0;

        subscribe(pub, "a:b:c");
        subscribe(pub, "a:*");
        subscribe(exact, "a:b:c");
        subscribe(wild, "a:*");
        subscribe(both, "a:b:c");
        subscribe(both, "a:*");
        subscribe(both, "a:b:c");       /* a duplicate subscribe is harmless */
        subscribe(deep, "a:b:*");       /* "a:b:c" reaches "a:*", not "a:b:*" */
        subscribe(other, "b:*");        /* channels are global: photonName does not namespace them */

        /* 100 publishes in one write: results and pushes keep their order. */
        char *batch = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&batch, &size);
        for (int i = 0; i < 100; i++) {
                snprintf(ids[i], sizeof(ids[i]), "p%d", i);
                fprintf(f, "{\"type\":\"publish\",\"id\":\"%s\",\"channel\":\"a:b:c\",\"photonName\":\"x\","
                        "\"message\":{\"n\":%d}}\n", ids[i], i);
        }
        fclose(f);
        conn_send_raw(pub, batch, size);
        free(batch);

        for (int i = 0; i < 100; i++) {
                struct json_object *o = conn_expect(pub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "result", "the publisher never gets its own message");
                cr_assert_str_eq(jstr(o, "id"), ids[i]);
                cr_assert_gt(jint(o, "data.eventId"), last, "eventIds strictly increase");
                last = jint(o, "data.eventId");
                json_object_put(o);
        }

        Conn *subs[] = { exact, wild, both };
        for (size_t k = 0; k < ELEMENTSOF(subs); k++) {
                int64_t prev = 0;
                for (int i = 0; i < 100; i++) {
                        struct json_object *o = expect_message(subs[k], "a:b:c");
                        char id[64];
                        cr_assert_eq(jint(o, "message.n"), i, "in publish order");
                        cr_assert_gt(jint(o, "eventId"), prev);
                        prev = jint(o, "eventId");
                        snprintf(id, sizeof(id), "ch_%" PRIi64, prev);
                        cr_assert_str_eq(jstr(o, "id"), id);
                        cr_assert_not(jhas(o, "replay"));
                        json_object_put(o);
                }
                cr_assert_eq(prev, last);
                expect_nothing_queued(subs[k]);         /* exactly one copy each */
        }
        expect_nothing_queued(deep);
        expect_nothing_queued(other);

        /* "plain" reaches "plain:*". */
        subscribe(deep, "plain:*");
        publish(pub, "plain", "1");
        json_object_put(expect_message(deep, "plain"));

        Conn *all[] = { pub, exact, wild, both, deep, other };
        for (size_t k = 0; k < ELEMENTSOF(all); k++)
                conn_close(all[k]);
        daemon_free(d);
}

Test(channels, pushes_leave_before_the_publish_result) {
        Daemon *d = daemon_start(NULL);
        Conn *pub = conn_open(d), *subs[5];

        for (size_t i = 0; i < ELEMENTSOF(subs); i++) {
                subs[i] = conn_open(d);
                subscribe(subs[i], "order");
        }
        for (int round = 0; round < 20; round++) {
                publish(pub, "order", "1");
                /* The result is here, so every push was written already: readable without waiting. */
                for (size_t i = 0; i < ELEMENTSOF(subs); i++) {
                        struct json_object *o;

                        cr_assert(subs[i]->len > 0 || poll(&(struct pollfd) { .fd = subs[i]->fd, .events = POLLIN }, 1, 0) == 1,
                                  "round %d: subscriber %zu has nothing yet", round, i);
                        o = expect_message(subs[i], "order");
                        json_object_put(o);
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(subs); i++)
                conn_close(subs[i]);
        conn_close(pub);
        daemon_free(d);
}

Test(channels, message_missing_and_null) {
        Daemon *d = daemon_start(NULL);
        Conn *pub = conn_open(d), *sub = conn_open(d);
        struct json_object *o;

        subscribe(sub, "m");
        o = conn_request(pub, "x1", "{\"type\":\"publish\",\"id\":\"x1\",\"channel\":\"m\"}");
        cr_assert(jbool(o, "data.published"));
        json_object_put(o);
        publish(pub, "m", "null");

        o = expect_message(sub, "m");
        cr_assert_not(jhas(o, "message"), "a missing message stays missing");
        json_object_put(o);
        o = expect_message(sub, "m");
        cr_assert(jhas(o, "message"), "null stays null");
        cr_assert_null(jget(o, "message"));
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        daemon_free(d);
}

/* Subscribes with lastEventId and collects what comes before the result. */
static unsigned subscribe_since(Conn *c, const char *channel, const char *last, struct json_object **ret, unsigned max) {
        unsigned n = 0;

        conn_send(c, "{\"type\":\"subscribe\",\"id\":\"since\",\"channel\":\"%s\",\"lastEventId\":%s}", channel, last);
        for (;;) {
                struct json_object *o = conn_expect(c, 5000);
                if (streq_ptr(jstr(o, "id"), "since") && streq_ptr(jstr(o, "type"), "result")) {
                        json_object_put(o);
                        return n;
                }
                cr_assert_lt(n, max, "more lines than expected before the result: %s", json_object_to_json_string(o));
                ret[n++] = o;
        }
}

static void expect_refresh(Conn *c, const char *channel, const char *last) {
        struct json_object *got[4];
        unsigned n = subscribe_since(c, channel, last, got, 4);

        cr_assert_eq(n, 1, "one refresh_needed expected for %s since %s", channel, last);
        cr_assert_str_eq(jstr(got[0], "type"), "refresh_needed");
        cr_assert_str_eq(jstr(got[0], "id"), "since", "refresh_needed carries the request id");
        cr_assert_str_eq(jstr(got[0], "channel"), channel);
        json_object_put(got[0]);
}

Test(channels, replay_across_reconnect) {
        Daemon *d = daemon_start(NULL);
        Conn *pub = conn_open(d), *sub = conn_open(d), *wsub = conn_open(d);
        uint64_t seen = 0, wseen = 0, missed[5], wmissed[4];
        struct json_object *got[16];
        char last[32];
        unsigned n;

        subscribe(sub, "feed");
        subscribe(wsub, "jobs:*");
        for (int i = 0; i < 3; i++) {
                publish(pub, "feed", "\"before\"");
                publish(pub, "jobs:a", "\"before\"");
        }
        for (int i = 0; i < 3; i++) {
                struct json_object *o = expect_message(sub, "feed");
                seen = jint(o, "eventId");
                json_object_put(o);
                o = expect_message(wsub, "jobs:a");
                wseen = jint(o, "eventId");
                json_object_put(o);
        }
        conn_close(sub);
        conn_close(wsub);

        /* While they are away. */
        for (int i = 0; i < 5; i++) {
                char msg[16];
                snprintf(msg, sizeof(msg), "%d", i);
                missed[i] = publish(pub, "feed", msg);
                if (i < 4)
                        wmissed[i] = publish(pub, i % 2 ? "jobs:b" : "jobs:a", msg);
        }
        publish(pub, "elsewhere", "0");

        sub = conn_open(d);
        snprintf(last, sizeof(last), "%" PRIu64, seen);
        n = subscribe_since(sub, "feed", last, got, 16);
        cr_assert_eq(n, 5, "exactly the missed events");
        for (unsigned i = 0; i < n; i++) {
                char id[64];
                snprintf(id, sizeof(id), "replay_%" PRIu64, missed[i]);
                cr_assert_str_eq(jstr(got[i], "type"), "channel_message");
                cr_assert_str_eq(jstr(got[i], "id"), id);
                cr_assert_eq(jint(got[i], "eventId"), (int64_t) missed[i]);
                cr_assert_eq(jint(got[i], "message"), (int64_t) i);
                cr_assert(jbool(got[i], "replay"));
                json_object_put(got[i]);
        }
        /* Then live again. */
        uint64_t live = publish(pub, "feed", "\"live\"");
        struct json_object *o = expect_message(sub, "feed");
        cr_assert_eq(jint(o, "eventId"), (int64_t) live);
        cr_assert_not(jhas(o, "replay"));
        json_object_put(o);

        /* The wildcard subscriber gets both channels' missed events in eventId order (photond extension). */
        wsub = conn_open(d);
        snprintf(last, sizeof(last), "%" PRIu64, wseen);
        n = subscribe_since(wsub, "jobs:*", last, got, 16);
        cr_assert_eq(n, 4);
        for (unsigned i = 0; i < n; i++) {
                cr_assert_eq(jint(got[i], "eventId"), (int64_t) wmissed[i]);
                cr_assert_str_eq(jstr(got[i], "channel"), i % 2 ? "jobs:b" : "jobs:a");
                cr_assert(jbool(got[i], "replay"));
                json_object_put(got[i]);
        }

        /* get_events_since gives the same events. */
        o = conn_request(pub, "g", "{\"type\":\"get_events_since\",\"id\":\"g\",\"channel\":\"feed\",\"lastEventId\":\"%"
                         PRIu64 "\"}", seen);
        cr_assert_not(jbool(o, "data.refreshNeeded"));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 6);
        cr_assert_eq(jint(o, "data.events.0.id"), (int64_t) missed[0]);
        cr_assert_eq(jint(o, "data.events.0.message"), 0);
        cr_assert_str_eq(jstr(o, "data.events.0.channel"), "feed");
        cr_assert_gt(jint(o, "data.events.0.timestamp"), 0);
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        conn_close(wsub);
        daemon_stop_clean(d);
}

Test(channels, refresh_needed_cases) {
        static const char *const env[] = { "PHOTOND_REPLAY_MAX_EVENTS=3", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *pub = conn_open(d), *sub = conn_open(d);
        struct json_object *got[8];
        uint64_t ids[5];
        char last[32];

        for (int i = 0; i < 5; i++)
                ids[i] = publish(pub, "r", "1");

        expect_refresh(sub, "r", "0");                  /* ts=0 against a non-empty buffer */
        snprintf(last, sizeof(last), "%" PRIu64, ids[1]);
        expect_refresh(sub, "r", last);                 /* older than the oldest kept (3 per channel) */
        snprintf(last, sizeof(last), "%" PRIu64, ids[4] + 1000);
        expect_refresh(sub, "r", last);                 /* above the last issued eventId */
        expect_refresh(sub, "empty", "12345");          /* empty buffer, ts > 0 */
        expect_refresh(sub, "r:*", "1");                /* a wildcard that reaches back too far */

        cr_assert_eq(subscribe_since(sub, "empty", "0", got, 8), 0, "empty buffer, ts = 0: nothing");
        snprintf(last, sizeof(last), "%" PRIu64, ids[2]);
        cr_assert_eq(subscribe_since(sub, "r", last, got, 8), 2);
        json_object_put(got[0]);
        json_object_put(got[1]);
        cr_assert_geq(status_int(d, "refreshNeededSent"), 5);

        conn_close(pub);
        conn_close(sub);
        daemon_free(d);
}

/* The greatest eventId high-water mark in the state files under home (state.json and state.journal). */
static uint64_t saved_event_id_mark(const char *home) {
        static const char *const files[] = { "state.json", "state.journal" };
        const char *key = "\"eventIdHighWater\":";
        uint64_t mark = 0;

        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                char path[4096], *line = NULL;
                size_t size = 0;
                FILE *f;

                snprintf(path, sizeof(path), "%s/.data/photond/%s", home, files[i]);
                f = fopen(path, "re");
                if (!f)
                        continue;
                while (getline(&line, &size, f) >= 0)
                        for (const char *p = line; (p = strstr(p, key)); ) {
                                uint64_t v = strtoull(p += strlen(key), NULL, 10);

                                if (v > mark)
                                        mark = v;
                        }
                free(line);
                fclose(f);
        }
        return mark;
}

static uint64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

Test(channels, event_id_increases_across_restart) {
        uint64_t started = wall_ms(), before, after, mark;
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        char *home, *cmd;
        int status;

        cr_assert_geq(saved_event_id_mark(d->home), started + 10000,
                      "the snapshot written at start reserves the first block: the first publish need not wait");
        before = publish(c, "r", "1");
        publish(c, "r", "2");
        conn_close(c);
        home = daemon_take_home(d);
        status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a clean exit (no sanitizer report): %d", status);
        daemon_free(d);
        mark = saved_event_id_mark(home);
        cr_assert_gt(mark, before + 1, "the saved mark covers what was handed out, %" PRIu64 " and after", before);

        d = daemon_start(&(DaemonOptions) { .home = home });
        if (wall_ms() < mark)
                cr_assert_eq(saved_event_id_mark(home), mark, "a restart before the clock reached the mark keeps it");
        c = conn_open(d);
        /* The buffer survived the graceful stop, but from before its oldest event a client must still refresh. */
        expect_refresh(c, "r", "1");
        after = publish(c, "r", "3");
        /* Above the reserved block, which a fast restart's clock could not have reached by itself. */
        cr_assert_gt(after, mark, "mark %" PRIu64 ", after %" PRIu64, mark, after);
        conn_close(c);
        status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a clean exit (no sanitizer report): %d", status);
        daemon_free(d);

        cr_assert(asprintf(&cmd, "rm -rf '%s'", home) > 0);
        (void) !system(cmd);
        free(cmd);
        free(home);
}

/* ---- replay across a stop (issue 19) ---- */

static bool replay_file_exists(const char *home) {
        char path[4096];

        snprintf(path, sizeof(path), "%s/.data/photond/replay.bin", home);
        return access(path, F_OK) == 0;
}

/* Resubscribes to channel from last and requires exactly the events ids[0..n), in order, as replays, and no
 * refresh_needed. */
static void expect_replay(Conn *c, const char *channel, uint64_t last, const uint64_t *ids, const char *const *chans,
                          unsigned n) {
        struct json_object *got[32];
        char since[32];
        unsigned k;

        snprintf(since, sizeof(since), "%" PRIu64, last);
        k = subscribe_since(c, channel, since, got, 32);
        for (unsigned i = 0; i < k; i++) {
                char id[64];

                snprintf(id, sizeof(id), "replay_%" PRIu64, i < n ? ids[i] : 0);
                cr_assert_str_eq(jstr(got[i], "type"), "channel_message", "%s since %s, line %u: %s", channel, since,
                                 i, json_object_to_json_string(got[i]));
                cr_assert_lt(i, n, "%s since %s: more than the %u missed events", channel, since, n);
                cr_assert_str_eq(jstr(got[i], "id"), id);
                cr_assert_eq(jint(got[i], "eventId"), (int64_t) ids[i]);
                cr_assert_str_eq(jstr(got[i], "channel"), chans[i]);
                cr_assert(jbool(got[i], "replay"));
                json_object_put(got[i]);
        }
        cr_assert_eq(k, n, "%s since %s: %u events, not the %u missed", channel, since, k, n);
}

static void daemon_stop_keep_home(Daemon *d, int sig) {
        int status = daemon_signal_and_wait(d, sig);

        if (sig == SIGTERM)
                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a clean exit (no sanitizer report): %d",
                          status);
        else
                cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == sig, "killed: %d", status);
        daemon_free(d);
}

static void home_remove(char *home) {
        char *cmd;

        cr_assert(asprintf(&cmd, "rm -rf '%s'", home) > 0);
        (void) !system(cmd);
        free(cmd);
        free(home);
}

/* A graceful stop keeps the replay buffers: a subscriber that comes back with its lastEventId gets exactly what it
 * missed, across two restarts, as if photond had kept running. */
Test(channels, replay_survives_a_graceful_restart) {
        Daemon *d = daemon_start(NULL);
        Conn *pub = conn_open(d), *sub = conn_open(d), *wsub = conn_open(d);
        const char *feed[16], *jobs[8];
        uint64_t ids[16], wids[8], live, more[2];
        struct json_object *o;
        char *home;

        subscribe(sub, "feed");
        subscribe(wsub, "jobs:*");
        for (int i = 0; i < 10; i++) {
                char msg[16];

                snprintf(msg, sizeof(msg), "%d", i);
                ids[i] = publish(pub, "feed", msg);
                feed[i] = "feed";
                if (i < 6) {
                        jobs[i] = i % 2 ? "jobs:b" : "jobs:a";
                        wids[i] = publish(pub, jobs[i], msg);
                }
        }
        for (int i = 0; i < 10; i++) {
                o = expect_message(sub, "feed");
                cr_assert_eq(jint(o, "eventId"), (int64_t) ids[i]);
                json_object_put(o);
        }
        conn_close(pub);
        conn_close(sub);
        conn_close(wsub);
        home = daemon_take_home(d);
        daemon_stop_keep_home(d, SIGTERM);
        cr_assert(replay_file_exists(home), "a graceful stop writes replay.bin");

        d = daemon_start(&(DaemonOptions) { .home = home });
        cr_assert_not(replay_file_exists(home), "read once");
        cr_assert(daemon_log_contains(d, "Restored 16 buffered events"), "the log says what came back");
        sub = conn_open(d);
        /* Seen up to the fourth: the six after it, and no refresh_needed. */
        expect_replay(sub, "feed", ids[3], ids + 4, feed, 6);
        expect_replay(sub, "jobs:*", wids[1], wids + 2, jobs + 2, 4);
        expect_replay(sub, "jobs:a", wids[2], wids + 4, jobs + 4, 1);
        o = conn_request(sub, "g", "{\"type\":\"get_events_since\",\"id\":\"g\",\"channel\":\"feed\",\"lastEventId\":%"
                         PRIu64 "}", ids[3]);
        cr_assert_not(jbool(o, "data.refreshNeeded"));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 6);
        cr_assert_eq(jint(o, "data.events.0.id"), (int64_t) ids[4]);
        cr_assert_eq(jint(o, "data.events.0.message"), 4);
        cr_assert_gt(jint(o, "data.events.0.timestamp"), 0);
        json_object_put(o);
        /* Up to date: nothing; from before the oldest: refresh_needed, as before the stop. */
        expect_replay(sub, "feed", ids[9], NULL, NULL, 0);
        expect_refresh(sub, "feed", "1");

        /* Live again, above every id of the last run. */
        pub = conn_open(d);
        live = publish(pub, "feed", "\"live\"");
        cr_assert_gt(live, ids[9]);
        o = expect_message(sub, "feed");
        cr_assert_eq(jint(o, "eventId"), (int64_t) live);
        json_object_put(o);

        /* A second restart keeps both runs' events. */
        more[0] = publish(pub, "feed", "\"more\"");
        more[1] = publish(pub, "jobs:b", "\"more\"");
        conn_close(pub);
        conn_close(sub);
        daemon_stop_keep_home(d, SIGTERM);
        d = daemon_start(&(DaemonOptions) { .home = home });
        sub = conn_open(d);
        ids[10] = live;
        ids[11] = more[0];
        feed[10] = feed[11] = "feed";
        expect_replay(sub, "feed", ids[7], ids + 8, feed, 4);
        wids[6] = more[1];
        jobs[6] = "jobs:b";
        expect_replay(sub, "jobs:*", wids[3], wids + 4, jobs + 4, 3);
        conn_close(sub);
        daemon_stop_keep_home(d, SIGTERM);
        home_remove(home);
}

/* json-c's strict mode takes NaN, Infinity and numbers such as 1. or 05e1, which JSON does not: photond refuses
 * such a publish (on the fast path's fallback and on the JSON path alike), so no subscriber gets a line its
 * JSON.parse() cannot take, and the replay file of a graceful stop still loads (one such message had made it
 * "damaged", every channel's history dropped). */
Test(channels, a_message_json_does_not_allow_is_refused_and_the_replay_survives) {
        static const char *const bad[] = { "[NaN]", "[1.]", "{\"a\":05e1}", "[0578e309]", "-Infinity" };
        Daemon *d = daemon_start(NULL);
        Conn *pub = conn_open(d), *sub;
        struct json_object *o;
        uint64_t ids[2];
        char *home;

        ids[0] = publish(pub, "feed", "{\"n\":0}");
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                conn_send(pub, "{\"type\":\"publish\",\"id\":\"b%zu\",\"channel\":\"feed\",\"message\":%s}", i,
                          bad[i]);
                o = conn_expect(pub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "error", "%s: %s", bad[i], json_object_to_json_string(o));
                cr_assert(strstr(jstr(o, "error"), "Invalid JSON: not JSON"), "%s", json_object_to_json_string(o));
                json_object_put(o);
        }
        ids[1] = publish(pub, "feed", "[-0,1e999,1.5e-399]");
        conn_close(pub);
        home = daemon_take_home(d);
        daemon_stop_keep_home(d, SIGTERM);

        d = daemon_start(&(DaemonOptions) { .home = home });
        cr_assert_not(daemon_log_contains(d, "damaged"));
        sub = conn_open(d);
        o = conn_request(sub, "g", "{\"type\":\"get_events_since\",\"id\":\"g\",\"channel\":\"feed\",\"lastEventId\":%"
                         PRIu64 "}", ids[0]);
        cr_assert_not(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 1, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.events.0.id"), (int64_t) ids[1]);
        json_object_put(o);
        conn_close(sub);
        daemon_stop_keep_home(d, SIGTERM);
        home_remove(home);
}

/* A crash keeps nothing of the buffers, and photond says so: every subscriber resuming from before it gets
 * refresh_needed, whether its events came from before the last graceful stop or after it. No replay from the file
 * of an earlier stop. */
Test(channels, replay_after_a_crash_is_refresh_needed) {
        Daemon *d = daemon_start(NULL);
        Conn *pub = conn_open(d), *sub;
        uint64_t before, after, newer;
        char last[32], *home;

        before = publish(pub, "feed", "1");
        publish(pub, "feed", "2");
        conn_close(pub);
        home = daemon_take_home(d);
        daemon_stop_keep_home(d, SIGTERM);

        /* Restored, then more is published, then photond is killed. */
        d = daemon_start(&(DaemonOptions) { .home = home });
        pub = conn_open(d);
        after = publish(pub, "feed", "3");
        newer = publish(pub, "feed", "4");
        conn_close(pub);
        daemon_stop_keep_home(d, SIGKILL);
        cr_assert_not(replay_file_exists(home), "a crash leaves no replay.bin");

        d = daemon_start(&(DaemonOptions) { .home = home });
        cr_assert(daemon_log_contains(d, "did not stop gracefully"), "the log says the buffers were lost");
        sub = conn_open(d);
        snprintf(last, sizeof(last), "%" PRIu64, before);
        expect_refresh(sub, "feed", last);
        snprintf(last, sizeof(last), "%" PRIu64, after);
        expect_refresh(sub, "feed", last);
        snprintf(last, sizeof(last), "%" PRIu64, newer);
        expect_refresh(sub, "feed", last);
        snprintf(last, sizeof(last), "%" PRIu64, newer);
        expect_refresh(sub, "feed:*", last);
        conn_close(sub);
        /* New events replay as usual. */
        pub = conn_open(d);
        after = publish(pub, "feed", "5");
        newer = publish(pub, "feed", "6");
        cr_assert_gt(newer, after);
        sub = conn_open(d);
        expect_replay(sub, "feed", after, &newer, (const char *const[]) { "feed" }, 1);
        conn_close(pub);
        conn_close(sub);
        daemon_stop_keep_home(d, SIGTERM);
        home_remove(home);
}

/* Reads what arrives within timeout_ms (then what comes within 1 ms), checking the order. */
static void drain_fast(Conn *c, int timeout_ms, int *count) {
        struct json_object *o;

        /* conn_recv() with 0 ms would not even look at the socket. */
        while ((o = conn_recv(c, MAX(timeout_ms, 1)))) {
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "the fast subscriber loses nothing: %s",
                                 json_object_to_json_string(o));
                cr_assert_eq(jint(o, "message.n"), *count, "in order, nothing lost, nothing twice");
                (*count)++;
                json_object_put(o);
                timeout_ms = 0;
        }
}

Test(channels, slow_consumer_policy) {
        static const char *const env[] = { "PHOTOND_MAX_WRITE_QUEUE_BYTES=65536", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *pub = conn_open(d), *slow = conn_open(d), *fast = conn_open(d);
        char pad[1001];
        int received = 0, total = 4000, last_n = -1;

        memset(pad, 'x', 1000);
        pad[1000] = '\0';
        subscribe(slow, "load");
        subscribe(fast, "load");

        /* The slow subscriber never reads; the fast one reads after every window of 50 publishes. */
        for (int i = 0; i < total; i += 50) {
                for (int k = i; k < i + 50; k++)
                        conn_send(pub, "{\"type\":\"publish\",\"id\":\"w%d\",\"channel\":\"load\",\"message\":"
                                  "{\"n\":%d,\"pad\":\"%s\"}}", k, k, pad);
                for (int k = i; k < i + 50; k++)
                        json_object_put(conn_expect(pub, 5000));
                drain_fast(fast, 0, &received);
        }
        while (received < total) {
                int before = received;
                drain_fast(fast, 5000, &received);
                cr_assert_gt(received, before, "the fast subscriber stalled at %d", received);
        }

        cr_assert_eq(status_int(d, "slowConsumerDisconnects"), 1);
        cr_assert_geq(status_int(d, "refreshNeededSent"), 1);
        cr_assert_gt(status_int(d, "messagesDropped"), 0);

        /* The slow one finds what fitted its socket buffer, in order (a refresh_needed if photond got that
         * far), then EOF: it was disconnected. */
        for (;;) {
                struct json_object *o = conn_recv(slow, 5000);
                if (!o)
                        break;
                if (streq_ptr(jstr(o, "type"), "refresh_needed")) {
                        cr_assert_str_eq(jstr(o, "channel"), "load");
                        cr_assert(strncmp(jstr(o, "id"), "refresh_", 8) == 0);
                } else {
                        cr_assert_str_eq(jstr(o, "type"), "channel_message");
                        cr_assert_gt(jint(o, "message.n"), last_n);
                        last_n = jint(o, "message.n");
                }
                json_object_put(o);
        }
        cr_assert_lt(last_n, total - 1, "it could not have read everything");
        cr_assert(conn_wait_eof(slow, 1000), "the slow subscriber was disconnected");

        conn_close(pub);
        conn_close(slow);
        conn_close(fast);
        daemon_stop_clean(d);
}

Test(channels, thousand_subscribers) {
        Daemon *d = daemon_start(NULL);
        enum { N = 1000 };
        Conn **subs = calloc(N, sizeof(Conn*)), *pub;
        struct rlimit rl;
        uint64_t id;

        cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < N + 64) {
                rl.rlim_cur = rl.rlim_max;
                cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
        }
        cr_assert_geq(rl.rlim_cur, N + 64, "need %d fds", N + 64);

        for (int i = 0; i < N; i++) {
                subs[i] = conn_open(d);
                conn_send(subs[i], "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"many\"}");
        }
        for (int i = 0; i < N; i++) {
                struct json_object *o = conn_expect(subs[i], 5000);
                cr_assert(jbool(o, "data.subscribed"));
                json_object_put(o);
        }
        cr_assert_eq(status_int(d, "subscriptions"), 1, "one channel key, however many subscribers");

        pub = conn_open(d);
        id = publish(pub, "many", "{\"hello\":1000}");
        for (int i = 0; i < N; i++) {
                struct json_object *o = expect_message(subs[i], "many");
                cr_assert_eq(jint(o, "eventId"), (int64_t) id);
                cr_assert_eq(jint(o, "message.hello"), 1000);
                json_object_put(o);
        }

        /* Disconnect removes every subscription. */
        for (int i = 0; i < N; i++)
                conn_close(subs[i]);
        free(subs);
        uint64_t deadline = mono_ms() + 5000;
        while (status_int(d, "subscriptions") != 0)
                cr_assert_lt(mono_ms(), deadline, "subscriptions of closed connections linger");
        conn_close(pub);
        daemon_stop_clean(d);
}

static void expect_error(Conn *c, const char *id, const char *prefix, const char *fmt, ...) {
        struct json_object *o;
        va_list ap;
        char *s;

        va_start(ap, fmt);
        cr_assert(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        o = conn_request(c, id, "%s", s);
        free(s);
        cr_assert_str_eq(jstr(o, "type"), "error", "got %s", json_object_to_json_string(o));
        cr_assert(strncmp(jstr(o, "error"), prefix, strlen(prefix)) == 0, "error '%s'", jstr(o, "error"));
        json_object_put(o);
}

Test(channels, caps_errors) {
        static const char *const env[] = {
                "PHOTOND_MAX_SUBSCRIPTIONS_PER_CLIENT=2", "PHOTOND_MAX_CHANNEL_NAME_BYTES=8",
                "PHOTOND_MAX_MESSAGE_BYTES=16", "PHOTOND_MAX_CHANNELS=3", NULL
        };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d), *c2 = conn_open(d);

        subscribe(c, "one");
        subscribe(c, "two");
        subscribe(c, "two");
        expect_error(c, "e1", "Too many subscriptions", "{\"type\":\"subscribe\",\"id\":\"e1\",\"channel\":\"three\"}");
        expect_error(c, "e2", "Channel name too long", "{\"type\":\"subscribe\",\"id\":\"e2\",\"channel\":\"123456789\"}");
        expect_error(c, "e3", "Channel name too long",
                     "{\"type\":\"publish\",\"id\":\"e3\",\"channel\":\"123456789\",\"message\":1}");
        expect_error(c, "e4", "Message too large",
                     "{\"type\":\"publish\",\"id\":\"e4\",\"channel\":\"one\",\"message\":\"0123456789abcdef\"}");
        subscribe(c2, "three");
        expect_error(c2, "e5", "Too many channels", "{\"type\":\"subscribe\",\"id\":\"e5\",\"channel\":\"four\"}");
        expect_error(c2, "e6", "Too many channels",
                     "{\"type\":\"publish\",\"id\":\"e6\",\"channel\":\"four\",\"message\":1}");
        /* The daemon is fine. */
        publish(c2, "one", "1");
        json_object_put(expect_message(c, "one"));

        conn_close(c);
        conn_close(c2);
        daemon_free(d);
}

/* Starts photonctl with args (NULL-terminated) and its stdout on *ret_fd. */
static pid_t spawn_ctl(Daemon *d, int *ret_fd, const char *arg, ...) {
        const char *argv[16];
        int argc = 0, p[2];
        va_list ap;
        pid_t pid;

        argv[argc++] = photonctl_binary();
        argv[argc++] = "--socket";
        argv[argc++] = d->socket_path;
        va_start(ap, arg);
        for (const char *a = arg; a && argc < 15; a = va_arg(ap, const char*))
                argv[argc++] = a;
        va_end(ap);
        argv[argc] = NULL;

        cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(p[1], STDOUT_FILENO);
                execv(argv[0], (char**) argv);
                _exit(127);
        }
        close(p[1]);
        *ret_fd = p[0];
        return pid;
}

static char* read_line_fd(int fd, int timeout_ms) {
        char buf[4096];
        size_t n = 0;
        uint64_t deadline = mono_ms() + timeout_ms;

        while (n < sizeof(buf) - 1) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                if (left <= 0 || poll(&pfd, 1, (int) left) <= 0)
                        return NULL;
                if (read(fd, buf + n, 1) != 1)
                        return NULL;
                if (buf[n] == '\n') {
                        buf[n] = '\0';
                        return strdup(buf);
                }
                n++;
        }
        return NULL;
}

static void wait_subscriptions(Daemon *d, int64_t n) {
        uint64_t deadline = mono_ms() + 5000;

        /* photonctl subscribe has no readiness output; the daemon's own count is the signal. */
        while (status_int(d, "subscriptions") < n)
                cr_assert_lt(mono_ms(), deadline, "photonctl did not subscribe");
}

Test(channels, photonctl_publish_subscribe) {
        Daemon *d = daemon_start(NULL);
        char *out = NULL, *line, since[32];
        struct json_object *o = NULL;
        int fd, fd2, status;
        pid_t pid, pid2;
        uint64_t id;

        pid = spawn_ctl(d, &fd, "--json", "subscribe", "ctl:*", NULL);
        wait_subscriptions(d, 1);

        cr_assert_eq(run_ctl(d, &out, "publish", "ctl:one", "{\"x\":1}", NULL), 0);
        cr_assert(strstr(out, "Published on ctl:one as event "), "%s", out);
        id = strtoull(strstr(out, "event ") + 6, NULL, 10);
        free(out);

        line = read_line_fd(fd, 5000);
        cr_assert_not_null(line, "photonctl subscribe printed nothing");
        cr_assert_eq(json_parse(line, strlen(line), &o, NULL), 0, "not JSON: %s", line);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        cr_assert_str_eq(jstr(o, "channel"), "ctl:one");
        cr_assert_eq(jint(o, "eventId"), (int64_t) id);
        cr_assert_eq(jint(o, "message.x"), 1);
        json_object_put(o);
        free(line);

        /* Human output, with a replay from --since, then live. */
        snprintf(since, sizeof(since), "%" PRIu64, id);
        cr_assert_eq(run_ctl(d, NULL, "publish", "ctl:one", "[2]", NULL), 0);
        pid2 = spawn_ctl(d, &fd2, "subscribe", "--since", since, "ctl:one", NULL);
        line = read_line_fd(fd2, 5000);
        cr_assert_not_null(line);
        cr_assert(strncmp(line, "ctl:one ", 8) == 0 && strstr(line, " [2] (replay)"), "%s", line);
        free(line);
        cr_assert_eq(run_ctl(d, NULL, "publish", "ctl:one", "\"live\"", NULL), 0);
        line = read_line_fd(fd2, 5000);
        cr_assert(line && strstr(line, " \"live\"") && !strstr(line, "replay"), "%s", line);
        free(line);

        /* Ctrl-C leaves cleanly. */
        kill(pid, SIGINT);
        kill(pid2, SIGINT);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        cr_assert_eq(waitpid(pid2, &status, 0), pid2);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        close(fd);
        close(fd2);

        cr_assert_eq(run_ctl(d, &out, "channels", NULL), 0);
        cr_assert(strstr(out, "ctl:one"), "%s", out);
        free(out);
        /* --json prints the daemon's reply, as for every listing verb; the list is data.channelList. */
        cr_assert_eq(run_ctl(d, &out, "--json", "channels", NULL), 0);
        cr_assert_eq(json_parse(out, strlen(out), &o, NULL), 0);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", out);
        cr_assert(json_object_is_type(jget(o, "data.channelList"), json_type_array), "%s", out);
        json_object_put(o);
        free(out);

        cr_assert_neq(run_ctl(d, NULL, "publish", "ctl:one", "{not json", NULL), 0);
        cr_assert_neq(run_ctl(d, NULL, "subscribe", "--since", "abc", "x", NULL), 0);
        daemon_free(d);
}
