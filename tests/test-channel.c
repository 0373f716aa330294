/* SPDX-License-Identifier: MIT */

/* Pub/sub without sockets: requests go through the control front end (test_request(): control_handle_line(), the
 * publish fast path included) to a Channels whose only hooks are a clock the tests move by hand, and the clients'
 * write queues are read as their peers would. The "sink" suite drives the core alone, delivering to fake
 * Subscribers that are no Client at all. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "json-util.h"
#include "photond-channel.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "string-util.h"

static Channels *chs;
static Manager manager;
static Client clients[8];
static int64_t wall = 1700000000000;
static uint64_t mono = 1000000;

static int64_t test_wall(void *u) {
        return wall;
}

static uint64_t test_mono(void *u) {
        return mono;
}

static int noop_defer(sd_event_source *s, void *userdata) {
        return 0;
}

static void setup(void) {
        limits_reset();
        wall = 1700000000000;
        mono = 1000000;
        cr_assert_eq(channels_new(NULL, &chs), 0);
        channels_set_clock(chs, &(ChannelsClock) { test_wall, test_mono, NULL });
        /* The Manager the control front end reaches the channels through; its flush, which the replies schedule,
         * never runs: the tests read the queues. */
        manager = (Manager) { .channels = chs };
        cr_assert_eq(sd_event_new(&manager.event), 0);
        cr_assert_eq(sd_event_add_defer(manager.event, &manager.flush_event_source, noop_defer, NULL), 0);
        cr_assert_eq(sd_event_source_set_enabled(manager.flush_event_source, SD_EVENT_OFF), 0);
        for (size_t i = 0; i < ELEMENTSOF(clients); i++)
                clients[i] = (Client) { .fd = -EBADF, .serial = i, .subscriber.ops = &client_subscriber_ops };
}

static void drain(Client *c) {
        client_discard_queue(c);
}

static void teardown(void) {
        for (size_t i = 0; i < ELEMENTSOF(clients); i++) {
                channels_subscriber_gone(chs, &clients[i].subscriber);
                drain(&clients[i]);
        }
        chs = channels_free(chs);
        sd_event_source_disable_unref(manager.flush_event_source);
        sd_event_unref(manager.event);
}

TestSuite(channel, .init = setup, .fini = teardown);

static uint64_t publish(Client *c, const char *channel, const char *message) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        if (message)
                test_request(&manager, c, "{\"type\":\"publish\",\"id\":\"p\",\"channel\":\"%s\",\"message\":%s}", channel, message);
        else
                test_request(&manager, c, "{\"type\":\"publish\",\"id\":\"p\",\"channel\":\"%s\"}", channel);
        o = test_pop_json(c);
        cr_assert_str_eq(jstr(o, "type"), "result");
        return jint(json_object_object_get(o, "data"), "eventId");
}

static void subscribe(Client *c, const char *channel) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        test_request(&manager, c, "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"%s\"}", channel);
        o = test_pop_json(c);
        cr_assert_str_eq(jstr(o, "type"), "result");
}

Test(channel, prefix_extraction) {
        static const struct {
                const char *channel, *prefix;
        } cases[] = {
                { "a:b:c", "a" },
                { "jobs:kanban", "jobs" },
                { "plain", "plain" },
                { ":lead", ":lead" },           /* a leading colon: the whole channel */
                { "trail:", "trail:" },         /* a trailing-only colon: the whole channel */
                { "a::", "a" },
                { "a:*", "a" },
                { ":*", ":*" },
                { "", "" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                cr_assert_eq(channel_prefix_length(cases[i].channel, strlen(cases[i].channel)),
                             strlen(cases[i].prefix), "prefix of '%s'", cases[i].channel);
}

Test(channel, event_id_monotonic) {
        cr_assert_eq(event_id_next(0, 1000), 1000);
        cr_assert_eq(event_id_next(1000, 1000), 1001, "same millisecond twice");
        cr_assert_eq(event_id_next(1001, 1000), 1002);
        cr_assert_eq(event_id_next(5000, 1000), 5001, "the wall clock stepped back");
        cr_assert_eq(event_id_next(5001, 9000), 9000);
        cr_assert_eq(event_id_next(7, -5), 8);

        /* The same through publishes, with the clock standing still and then going back. */
        Client *p = &clients[0];
        uint64_t a = publish(p, "x", "1"), b = publish(p, "x", "2");
        wall -= 60000;
        uint64_t c = publish(p, "y", "3");
        cr_assert_eq(a, (uint64_t) wall + 60000);
        cr_assert_eq(b, a + 1);
        cr_assert_eq(c, b + 1);
}

Test(channel, wire_shapes) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_free_ char *push = NULL, *reply = NULL, *expect_push = NULL, *expect_reply = NULL;
        uint64_t id;

        subscribe(s, "room:1");
        test_request(&manager, p, "{\"type\":\"publish\",\"id\":\"pub-1\",\"channel\":\"room:1\",\"message\":{\"a\":[1,\"x/y\"],\"b\":null}}");
        id = (uint64_t) wall;

        push = test_pop_line(s);
        cr_assert(asprintf(&expect_push, "{\"type\":\"channel_message\",\"id\":\"ch_%" PRIu64 "\",\"eventId\":%" PRIu64
                           ",\"channel\":\"room:1\",\"message\":{\"a\":[1,\"x/y\"],\"b\":null}}", id, id) > 0);
        cr_assert_str_eq(push, expect_push);

        reply = test_pop_line(p);
        cr_assert(asprintf(&expect_reply, "{\"type\":\"result\",\"id\":\"pub-1\",\"success\":true,\"data\":"
                           "{\"published\":true,\"channel\":\"room:1\",\"eventId\":%" PRIu64 "}}", id) > 0);
        cr_assert_str_eq(reply, expect_reply);
        cr_assert_null(test_pop_line(p), "the publisher never gets its own message");
}

Test(channel, message_missing_stays_missing_null_stays_null) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_(json_object_putp) struct json_object *a = NULL, *b = NULL;

        subscribe(s, "m");
        publish(p, "m", NULL);
        publish(p, "m", "null");
        a = test_pop_json(s);
        b = test_pop_json(s);
        cr_assert_not(json_object_object_get_ex(a, "message", NULL));
        cr_assert(json_object_object_get_ex(b, "message", NULL));
        cr_assert_null(json_object_object_get(b, "message"));
}

Test(channel, escaping_of_names) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        subscribe(s, "q\\\"u\\u00e9:*");
        publish(p, "q\\\"u\\u00e9:x", "1");
        o = test_pop_json(s);
        cr_assert_str_eq(jstr(o, "channel"), "q\"u\xc3\xa9:x");
}

Test(channel, fanout_self_exclusion_and_single_copy) {
        Client *p = &clients[0], *exact = &clients[1], *wild = &clients[2], *both = &clients[3],
               *deep = &clients[4];
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        subscribe(p, "a:b:c");
        subscribe(p, "a:*");
        subscribe(exact, "a:b:c");
        subscribe(wild, "a:*");
        subscribe(both, "a:b:c");
        subscribe(both, "a:*");
        subscribe(both, "a:*");         /* a duplicate subscribe is harmless */
        subscribe(deep, "a:b:*");       /* "a:b:c" reaches "a:*", not "a:b:*" */

        publish(p, "a:b:c", "42");
        cr_assert_eq(client_queued(p), 0);
        cr_assert_eq(client_queued(exact), 1);
        cr_assert_eq(client_queued(wild), 1);
        cr_assert_eq(client_queued(both), 1, "exact + wildcard match gives one copy");
        cr_assert_eq(client_queued(deep), 0);

        /* "plain" reaches "plain:*". */
        subscribe(deep, "plain:*");
        publish(p, "plain", "1");
        cr_assert_eq(client_queued(deep), 1);
        o = test_pop_json(deep);
        cr_assert_str_eq(jstr(o, "channel"), "plain");
}

Test(channel, unsubscribe_and_disconnect) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        test_request(&manager, s, "{\"type\":\"unsubscribe\",\"id\":\"u0\",\"channel\":\"never\"}");
        o = test_pop_json(s);
        cr_assert(json_object_get_boolean(json_object_object_get(json_object_object_get(o, "data"), "unsubscribed")),
                  "unsubscribe is always ok");

        subscribe(s, "k1");
        subscribe(s, "k2:*");
        cr_assert_eq(s->subscriber.n_subscriptions, 2);
        test_request(&manager, s, "{\"type\":\"unsubscribe\",\"id\":\"u1\",\"channel\":\"k1\"}");
        json_object_put(test_pop_json(s));
        publish(p, "k1", "1");
        cr_assert_eq(client_queued(s), 0);

        channels_subscriber_gone(chs, &s->subscriber);
        cr_assert_eq(s->subscriber.n_subscriptions, 0);
        cr_assert_null(s->subscriber.subscriptions);
        publish(p, "k2:x", "1");
        cr_assert_eq(client_queued(s), 0);
        /* Only buffers are left: k1 and k2:x. */
        cr_assert_eq(channels_count(chs), 2);
}

static void expect_refresh(Client *c, const char *request_id, const char *channel) {
        _cleanup_(json_object_putp) struct json_object *o = test_pop_json(c), *r = NULL;

        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "got %s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "id"), request_id);
        cr_assert_str_eq(jstr(o, "channel"), channel);
        r = test_pop_json(c);
        cr_assert_str_eq(jstr(r, "type"), "result", "the result comes after refresh_needed");
}

static void subscribe_since(Client *c, const char *channel, const char *last) {
        test_request(&manager, c, "{\"type\":\"subscribe\",\"id\":\"r\",\"channel\":\"%s\",\"lastEventId\":%s}", channel, last);
}

Test(channel, replay_exact) {
        Client *p = &clients[0], *s = &clients[1];
        uint64_t ids[5];
        char last[32];

        for (int i = 0; i < 5; i++) {
                char msg[16];
                snprintf(msg, sizeof(msg), "%d", i);
                ids[i] = publish(p, "ev", msg);
                wall++;
        }

        snprintf(last, sizeof(last), "%" PRIu64, ids[1]);
        subscribe_since(s, "ev", last);
        for (int i = 2; i < 5; i++) {
                _cleanup_(json_object_putp) struct json_object *o = test_pop_json(s);
                char id[64];

                snprintf(id, sizeof(id), "replay_%" PRIu64, ids[i]);
                cr_assert_str_eq(jstr(o, "type"), "channel_message");
                cr_assert_str_eq(jstr(o, "id"), id);
                cr_assert_eq(jint(o, "eventId"), (int64_t) ids[i]);
                cr_assert_str_eq(jstr(o, "channel"), "ev");
                cr_assert_eq(jint(o, "message"), i);
                cr_assert(json_object_get_boolean(json_object_object_get(o, "replay")));
        }
        json_object_put(test_pop_json(s));   /* the result */
        cr_assert_eq(client_queued(s), 0);

        /* As a string ("123abc" reads as 123, as parseInt does), up to date: nothing. */
        char str[40];
        snprintf(str, sizeof(str), "\"%" PRIu64 "abc\"", ids[4]);
        subscribe_since(s, "ev", str);
        json_object_put(test_pop_json(s));
        cr_assert_eq(client_queued(s), 0, "nothing newer, no refresh");

        subscribe_since(s, "ev", "0");
        expect_refresh(s, "r", "ev");           /* ts=0 against a non-empty buffer */
        subscribe_since(s, "ev", "null");
        expect_refresh(s, "r", "ev");           /* null reads as 0 */
        subscribe_since(s, "ev", "\"abc\"");
        expect_refresh(s, "r", "ev");
        snprintf(last, sizeof(last), "%" PRIu64, ids[0] - 1);
        subscribe_since(s, "ev", last);
        expect_refresh(s, "r", "ev");           /* older than the oldest */
        snprintf(last, sizeof(last), "%" PRIu64, ids[4] + 1);
        subscribe_since(s, "ev", last);
        expect_refresh(s, "r", "ev");           /* above the last issued id (DECISIONS.md) */

        subscribe_since(s, "empty", "5");
        expect_refresh(s, "r", "empty");        /* empty buffer, ts > 0 */
        subscribe_since(s, "empty", "0");
        json_object_put(test_pop_json(s));
        cr_assert_eq(client_queued(s), 0, "empty buffer, ts = 0: nothing");
}

/* Cluster mode lost Redis for a while: the key's subscribers are told, and replays from before say refresh_needed
 * while replays of what came after are complete. */
Test(channel, gap_notifies_and_breaks_older_replays) {
        Client *p = &clients[0], *s = &clients[1], *w = &clients[2], *late = &clients[3];
        uint64_t before, after;
        char last[32], id[64];

        subscribe(s, "g:x");
        subscribe(w, "g:*");
        before = publish(p, "g:x", "1");
        json_object_put(test_pop_json(s));
        json_object_put(test_pop_json(w));
        wall++;

        cr_assert_eq(channels_gap(chs, "g:x", 3), 0);
        {
                _cleanup_(json_object_putp) struct json_object *o = test_pop_json(s);

                snprintf(id, sizeof(id), "refresh_%" PRIu64, before);
                cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "got %s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "channel"), "g:x");
                cr_assert_str_eq(jstr(o, "id"), id);
        }
        cr_assert_eq(client_queued(s), 0, "one notice");
        cr_assert_eq(client_queued(w), 0, "the wildcard's own gap is its own");
        cr_assert_eq(channels_gap(chs, "g:*", 3), 0);
        {
                _cleanup_(json_object_putp) struct json_object *o = test_pop_json(w);

                cr_assert_str_eq(jstr(o, "type"), "refresh_needed");
                cr_assert_str_eq(jstr(o, "channel"), "g:*");
        }
        cr_assert_eq(channels_gap(chs, "nothing", 7), 0, "an unknown key: nothing");

        snprintf(last, sizeof(last), "%" PRIu64, before - 1);
        subscribe_since(late, "g:x", last);
        expect_refresh(late, "r", "g:x");
        subscribe_since(late, "g:*", last);
        expect_refresh(late, "r", "g:*");

        after = publish(p, "g:x", "2");
        json_object_put(test_pop_json(s));
        json_object_put(test_pop_json(w));
        json_object_put(test_pop_json(late));  /* once, though both of its keys match (single copy) */
        cr_assert_eq(client_queued(late), 0);
        snprintf(last, sizeof(last), "%" PRIu64, after);
        subscribe_since(late, "g:x", last);
        json_object_put(test_pop_json(late));
        cr_assert_eq(client_queued(late), 0, "from after the gap: complete, nothing to replay");
}

Test(channel, replay_window_and_cap) {
        Client *p = &clients[0], *s = &clients[1];
        uint64_t first, tenth = 0, last_id = 0;
        char last[32];

        first = publish(p, "w", "0");
        for (int i = 1; i < 510; i++) {
                last_id = publish(p, "w", "1");
                if (i == 10)
                        tenth = last_id;
        }

        /* 500 kept: events 10..509; the 10th is the oldest. */
        snprintf(last, sizeof(last), "%" PRIu64, first);
        subscribe_since(s, "w", last);
        expect_refresh(s, "r", "w");
        snprintf(last, sizeof(last), "%" PRIu64, tenth);
        subscribe_since(s, "w", last);
        cr_assert_eq(client_queued(s), 500, "499 replayed + the result");
        drain(s);

        /* Five minutes later (by the monotonic clock) everything has aged out. */
        mono += 300001;
        cr_assert_eq(channels_count(chs), 1, "only the subscribed key is left");
        snprintf(last, sizeof(last), "%" PRIu64, last_id);
        subscribe_since(s, "w", last);
        expect_refresh(s, "r", "w");

        /* A wall-clock step does not age anything. */
        publish(p, "w", "2");
        wall += 3600 * 1000;
        _cleanup_(json_object_putp) struct json_object *status = json_object_new_object();
        cr_assert_eq(channels_add_status(chs, status), 0);
        cr_assert_eq(jint(status, "bufferedEvents"), 1);
}

Test(channel, replay_total_bytes_cap_evicts_oldest_globally) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        char big[2048], msg[2100];
        uint64_t a, b;

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        snprintf(msg, sizeof(msg), "\"%s\"", big);

        limits.REPLAY_MAX_TOTAL_BYTES = 5 * 2300;
        a = publish(p, "old", msg);
        for (int i = 0; i < 4; i++)
                b = publish(p, "new", msg);
        /* Five events fit; a sixth pushes out the globally oldest, which is the only one of "old". */
        b = publish(p, "new", msg);
        test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"g\",\"channel\":\"old\",\"lastEventId\":%" PRIu64 "}", a - 1);
        o = test_pop_json(s);
        cr_assert(json_object_get_boolean(json_object_object_get(json_object_object_get(o, "data"), "refreshNeeded")));
        cr_assert_eq(channels_count(chs), 1, "the emptied channel is gone");
        (void) b;
}

Test(channel, get_events_since_shapes) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_free_ char *line = NULL, *expect = NULL;
        uint64_t a, b, first;

        first = publish(p, "g", "0");
        wall += 5;
        a = publish(p, "g", "{\"k\":1}");
        wall += 5;
        b = publish(p, "g", NULL);

        test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"g1\",\"channel\":\"g\",\"lastEventId\":\"%" PRIu64 "\"}", a - 0);
        line = test_pop_line(s);
        cr_assert(asprintf(&expect, "{\"type\":\"result\",\"id\":\"g1\",\"success\":true,\"data\":{\"events\":["
                           "{\"id\":%" PRIu64 ",\"channel\":\"g\",\"timestamp\":%" PRIi64 "}],\"refreshNeeded\":false}}",
                           b, wall) > 0);
        cr_assert_str_eq(line, expect);
        free(line);
        free(expect);

        /* Not the request's lastEventId: none means 0, so a non-empty buffer needs a refresh. */
        test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"g2\",\"channel\":\"g\"}");
        line = test_pop_line(s);
        cr_assert_str_eq(line, "{\"type\":\"result\",\"id\":\"g2\",\"success\":true,\"data\":{\"events\":[],"
                         "\"refreshNeeded\":true}}");
        free(line);

        test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"g3\"}");
        line = test_pop_line(s);
        cr_assert_str_eq(line, "{\"type\":\"result\",\"id\":\"g3\",\"success\":true,\"data\":{\"events\":[],"
                         "\"refreshNeeded\":false}}");
        free(line);

        test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"g4\",\"channel\":\"g\",\"lastEventId\":%" PRIu64 "}", first);
        line = test_pop_line(s);
        cr_assert(asprintf(&expect, "{\"type\":\"result\",\"id\":\"g4\",\"success\":true,\"data\":{\"events\":["
                           "{\"id\":%" PRIu64 ",\"channel\":\"g\",\"message\":{\"k\":1},\"timestamp\":%" PRIi64 "},"
                           "{\"id\":%" PRIu64 ",\"channel\":\"g\",\"timestamp\":%" PRIi64 "}],\"refreshNeeded\":false}}",
                           a, wall - 5, b, wall) > 0);
        cr_assert_str_eq(line, expect);
}

/* A get_events_since answer that would take the client's queue, what it has not read yet included, past its cap is
 * no answer: it says refreshNeeded instead. An event is reckoned at an upper bound of what it adds: 80 bytes, its
 * channel twice and its message, with the keys around them. */
Test(channel, get_events_since_that_cannot_fit_the_queue_needs_a_refresh) {
        Client *p = &clients[0], *s = &clients[1];
        const size_t bound = 80 + 2 * strlen("\"g\"") + strlen("\"channel\":}\n,\"message\":") + 102;
        char msg[103];
        uint64_t first;

        memset(msg, 'x', sizeof(msg) - 1);
        msg[0] = msg[101] = '"';
        msg[102] = '\0';
        first = publish(p, "g", msg);
        publish(p, "g", msg);
        publish(p, "g", msg);

        for (size_t over = 0; over <= 1; over++) {
                _cleanup_(json_object_putp) struct json_object *o = NULL;
                SharedBuf *b;

                /* An answer it has not read yet counts. */
                client_discard_queue(s);
                test_request(&manager, s, "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"other\"}");
                limits.MAX_WRITE_QUEUE_BYTES = client_queued_bytes(s) + 2 * bound - over;
                test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"g\",\"channel\":\"g\",\"lastEventId\":%" PRIu64 "}",
                             first);
                cr_assert_eq(client_queued(s), 2);
                b = client_queued_line(s, 1);
                cr_assert_eq(json_parse(b->data, b->size, &o, NULL), 0);
                cr_assert_eq(jbool(o, "data.refreshNeeded"), over, "%s", b->data);
                cr_assert_eq(json_object_array_length(jget(o, "data.events")), over ? 0 : 2, "%s", b->data);
        }
}

Test(channel, wildcard_replay) {
        Client *p = &clients[0], *s = &clients[1];
        uint64_t ids[6];
        const char *chan[6] = { "z:a", "z:b", "other", "z:a", "z", "z:b" };
        char last[32];

        for (int i = 0; i < 6; i++)
                ids[i] = publish(p, chan[i], "1");

        snprintf(last, sizeof(last), "%" PRIu64, ids[0]);
        subscribe_since(s, "z:*", last);
        /* Every channel with prefix z, newer than ids[0], in eventId order. */
        int want[] = { 1, 3, 4, 5 };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                _cleanup_(json_object_putp) struct json_object *o = test_pop_json(s);
                cr_assert_eq(jint(o, "eventId"), (int64_t) ids[want[i]]);
                cr_assert_str_eq(jstr(o, "channel"), chan[want[i]]);
                cr_assert(json_object_get_boolean(json_object_object_get(o, "replay")));
        }
        json_object_put(test_pop_json(s));
        cr_assert_eq(client_queued(s), 0);

        /* Evict z:a's first event: a replay from before it can no longer be complete. */
        limits.REPLAY_MAX_EVENTS = 1;
        publish(p, "z:a", "1");
        drain(s);
        snprintf(last, sizeof(last), "%" PRIu64, ids[0]);
        subscribe_since(s, "z:*", last);
        expect_refresh(s, "r", "z:*");
        snprintf(last, sizeof(last), "%" PRIu64, ids[3]);
        subscribe_since(s, "z:*", last);
        cr_assert_eq(client_queued(s), 4, "z, z:b, z:a and the result");
        drain(s);

        /* A prefix nothing was ever published on. */
        subscribe_since(s, "nothing:*", "5");
        expect_refresh(s, "r", "nothing:*");
}

/* A wildcard's gap is still answered with what is buffered after lastEventId: after a state loss photond's
 * locks-reset notice is the one event a client asking from before the restart must not miss. */
Test(channel, get_events_since_gap_keeps_newer_wildcard_events) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_(json_object_putp) struct json_object *o = NULL, *again = NULL;
        struct json_object *events;
        uint64_t lost, kept;

        limits.REPLAY_MAX_EVENTS = 1;
        lost = publish(p, "sys:a", "1");
        kept = publish(p, "sys:a", "2");        /* evicts the first: a replay from before it has a gap */

        test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"g\",\"channel\":\"sys:*\",\"lastEventId\":%" PRIu64 "}",
                lost - 1);
        o = test_pop_json(s);
        cr_assert(json_object_get_boolean(json_object_object_get(json_object_object_get(o, "data"), "refreshNeeded")));
        events = json_object_object_get(json_object_object_get(o, "data"), "events");
        cr_assert_eq(json_object_array_length(events), 1, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(json_object_array_get_idx(events, 0), "id"), (int64_t) kept);

        /* A subscribe's replay over the same gap still sends refresh_needed alone, as the reference does. */
        subscribe_since(s, "sys:*", "1");
        expect_refresh(s, "r", "sys:*");

        /* No lastEventId and a non-empty buffer: a refresh with no events, the reference's answer. */
        test_request(&manager, s, "{\"type\":\"get_events_since\",\"id\":\"h\",\"channel\":\"sys:*\"}");
        again = test_pop_json(s);
        events = json_object_object_get(json_object_object_get(again, "data"), "events");
        cr_assert_eq(json_object_array_length(events), 0, "%s", json_object_to_json_string(again));
}

Test(channel, state_high_water_mark) {
        Client *p = &clients[0];
        _cleanup_(json_object_putp) struct json_object *state = json_object_new_object(), *loaded = NULL;
        _cleanup_(channels_freep) Channels *again = NULL;
        int64_t mark;
        uint64_t first, next;

        first = publish(p, "s", "1");
        wall += 10;
        publish(p, "s", "1");
        cr_assert_eq(channels_save_state(chs, state), 0);
        cr_assert_eq(json_get_int64(state, "eventIdHighWater", false, &mark), 0);
        cr_assert_eq(mark, (int64_t) first + 10000, "reserved ahead, not moved by every publish");

        /* A new daemon with the clock far behind continues above the mark. */
        cr_assert_eq(channels_new(NULL, &again), 0);
        wall -= 3600 * 1000;
        channels_set_clock(again, &(ChannelsClock) { test_wall, test_mono, NULL });
        loaded = json_object_new_object();
        cr_assert_eq(json_add_int64(loaded, "eventIdHighWater", mark), 0);
        cr_assert_eq(channels_load_state(again, loaded), 0);
        cr_assert_eq(channels_publish(again, "s", NULL, NULL, &next), 0);
        cr_assert_eq(next, (uint64_t) mark + 1);

        json_object_object_add(loaded, "eventIdHighWater", json_object_new_string("x"));
        cr_assert_lt(channels_load_state(again, loaded), 0, "a malformed mark is an error, not a silent 0");
}

/* What the channels tell their owner (ChannelsHooks). */
static unsigned heard_state, heard_counts;

static void heard_state_changed(void *userdata) {
        cr_assert_eq(userdata, &heard_state);
        heard_state++;
}

static void heard_counts_changed(void *userdata) {
        heard_counts++;
}

Test(channel, hooks_hear_the_mark_and_the_counts) {
        _cleanup_(channels_freep) Channels *h = NULL;
        uint64_t id;

        heard_state = heard_counts = 0;
        cr_assert_eq(channels_new(&(ChannelsHooks) {
                                          .state_changed = heard_state_changed,
                                          .counts_changed = heard_counts_changed,
                                          .userdata = &heard_state,
                                  }, &h), 0);
        channels_set_clock(h, &(ChannelsClock) { test_wall, test_mono, NULL });

        cr_assert_eq(channels_publish(h, "s", NULL, NULL, &id), 0);
        cr_assert_eq(heard_state, 1, "the first publish raises the eventId mark: saved before its reply");
        cr_assert_eq(heard_counts, 1, "a new channel is counted");

        /* Until the owner says the mark is on disk, an id of the new block is no promise: saved first too. */
        cr_assert_eq(channels_publish(h, "s", NULL, NULL, &id), 0);
        cr_assert_eq(heard_state, 2, "an id of a block not yet saved waits for the save");
        channels_state_saved(h);

        cr_assert_eq(channels_publish(h, "s", NULL, NULL, &id), 0);
        cr_assert_eq(heard_state, 2, "within the saved block nothing is saved");
        cr_assert_eq(heard_counts, 1, "a publish on an existing channel changes no count");

        wall += 20000;          /* past the block */
        cr_assert_eq(channels_publish(h, "t", NULL, NULL, &id), 0);
        cr_assert_eq(heard_state, 3);
        cr_assert_eq(heard_counts, 2);
}

/* Cluster mode's seam: with a backend, a publish is handed to it (caps checked first, eventId unknown), a
 * publish that waits for its id goes through channels_publish_deferred(), and the backend brings messages back
 * with its own ids (channels_publish_at(): strictly increasing, the publisher left out) and replays with
 * channels_replay_events(), whose lines are those of a replay from the buffers. */
static unsigned backend_calls;
static Subscriber *backend_publisher;
static ChannelsPublishDone backend_done;
static void *backend_done_userdata;

static void fake_backend_publish(const char *name, size_t len, const char *message, size_t message_len,
                                 Subscriber *publisher, ChannelsPublishDone done, void *done_userdata,
                                 void *userdata) {
        backend_calls++;
        backend_publisher = publisher;
        backend_done = done;
        backend_done_userdata = done_userdata;
}

static void fake_done(Subscriber *s, int error, const char *reason, uint64_t event_id, void *userdata) {
        *(uint64_t*) userdata = event_id;
}

Test(channel, backend_takes_publishes_and_gives_ids) {
        static const ChannelsBackend backend = { .publish = fake_backend_publish };
        _cleanup_(channels_freep) Channels *h = NULL, *single = NULL;
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        SharedBuf *b;
        uint64_t id = 99, answered = 0;
        char big[64];

        backend_calls = 0;
        cr_assert_eq(channels_new(&(ChannelsHooks) { .backend = &backend }, &h), 0);
        channels_set_clock(h, &(ChannelsClock) { test_wall, test_mono, NULL });
        cr_assert(channels_deferred(h));
        cr_assert_eq(channels_subscribe(h, &clients[0].subscriber, "a", 1), 0);
        cr_assert_eq(channels_subscribe(h, &clients[1].subscriber, "a", 1), 0);

        /* Handed over, not fanned out. */
        cr_assert_eq(channels_publish_serialized(h, "a", 1, "1", 1, NULL, &id), 0);
        cr_assert_eq(id, 0);
        cr_assert_eq(backend_calls, 1);
        cr_assert_null(backend_done);
        cr_assert_eq(client_queued(&clients[0]), 0);
        cr_assert_eq(channels_publish_deferred(h, "a", 1, "2", 1, &clients[1].subscriber, fake_done, &answered), 0);
        cr_assert_eq(backend_calls, 2);
        cr_assert_eq(backend_publisher, &clients[1].subscriber);
        backend_done(backend_publisher, 0, NULL, 1700000000500, backend_done_userdata);
        cr_assert_eq(answered, 1700000000500);
        /* The caps before the backend sees it. */
        limits.MAX_MESSAGE_BYTES = 8;
        memset(big, '1', sizeof(big));
        cr_assert_eq(channels_publish_deferred(h, "a", 1, big, sizeof(big), NULL, fake_done, &answered), -EMSGSIZE);
        cr_assert_eq(backend_calls, 2);
        limits_reset();

        /* Back with the backend's ids: fanned out (the publisher left out) and buffered. */
        cr_assert_eq(channels_publish_at(h, "a", 1, "2", 1, &clients[1].subscriber, 1700000000500, 1700000000400), 0);
        cr_assert_eq(client_queued(&clients[0]), 1);
        cr_assert_eq(client_queued(&clients[1]), 0);
        b = client_queued_line(&clients[0], 0);
        cr_assert_eq(strncmp(b->data, "{\"type\":\"channel_message\",\"id\":\"ch_1700000000500\",\"eventId\":1700000000500,"
                             "\"channel\":\"a\",\"message\":2}\n", b->size), 0, "%.*s", (int) b->size, b->data);
        cr_assert_eq(channels_publish_at(h, "a", 1, "3", 1, NULL, 1700000000500, 1700000000400), -ESTALE);
        cr_assert_eq(channels_publish_at(h, "a", 1, "3", 1, NULL, 1700000000499, 1700000000400), -ESTALE);
        cr_assert_eq(channels_last_event_id(h), 1700000000500);
        cr_assert_eq(channels_event_id_mark(h), 0, "a backend's ids are not reserved");
        drain(&clients[0]);

        /* A replay of events that are not buffered here gives the lines a replay of buffered ones gives. */
        cr_assert_eq(channels_new(NULL, &single), 0);
        channels_set_clock(single, &(ChannelsClock) { test_wall, test_mono, NULL });
        cr_assert_eq(channels_publish_serialized(single, "a", 1, "0", 1, NULL, &id), 0);
        {
                uint64_t from = id;

                cr_assert_eq(channels_publish_serialized(single, "a", 1, "{\"x\":1}", 7, NULL, &id), 0);
                cr_assert_eq(channels_publish_serialized(single, "a", 1, NULL, 0, NULL, &id), 0);
                /* A replay follows a subscribe (the subscriber's state is the channels'). */
                cr_assert_eq(channels_subscribe(single, &clients[2].subscriber, "a", 1), 0);
                cr_assert_eq(channels_subscribe(h, &clients[3].subscriber, "a", 1), 0);
                cr_assert_eq(channels_subscribe(h, &clients[4].subscriber, "a", 1), 0);
                cr_assert_eq(channels_replay(single, &clients[2].subscriber, "r", "a", 1, (int64_t) from), 0);
        }
        cr_assert_eq(client_queued(&clients[2]), 2);
        {
                SharedBuf *l0 = client_queued_line(&clients[2], 0), *l1 = client_queued_line(&clients[2], 1);
                ChannelEvent ev[2] = {
                        { .id = id - 1, .channel_json = "\"a\"", .channel_json_len = 3, .message_json = "{\"x\":1}",
                          .message_json_len = 7 },
                        { .id = id, .channel_json = "\"a\"", .channel_json_len = 3 },
                };

                cr_assert_eq(channels_replay_events(h, &clients[3].subscriber, "r", "a", 1,
                                                    &(ChannelsReplayed) { .events = ev, .n_events = 2 }), 0);
                cr_assert_eq(client_queued(&clients[3]), 2);
                cr_assert_eq(client_queued_line(&clients[3], 0)->size, l0->size);
                cr_assert_eq(memcmp(client_queued_line(&clients[3], 0)->data, l0->data, l0->size), 0);
                cr_assert_eq(client_queued_line(&clients[3], 1)->size, l1->size);
                cr_assert_eq(memcmp(client_queued_line(&clients[3], 1)->data, l1->data, l1->size), 0);
        }
        /* A refresh comes alone, with the request's id. */
        cr_assert_eq(channels_replay_events(h, &clients[4].subscriber, "r9", "a", 1,
                                            &(ChannelsReplayed) { .refresh_needed = true }), 0);
        o = test_pop_json(&clients[4]);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed");
        cr_assert_str_eq(jstr(o, "id"), "r9");
        for (size_t i = 0; i < 5; i++) {
                channels_subscriber_gone(h, &clients[i].subscriber);
                channels_subscriber_gone(single, &clients[i].subscriber);
                drain(&clients[i]);
        }
}

/* Faster than one publish per millisecond, a block of eventIds used up within a second is followed by one twice as
 * large, so the mark (an fsync'ed write holding the iteration's output) is raised about once a second at any rate;
 * after a quiet spell the base block again. */
Test(channel, reservation_grows_with_the_rate) {
        uint64_t id, block = 10000, mark;
        unsigned raised = 0;

        cr_assert_eq(channels_publish(chs, "r", NULL, NULL, &id), 0);
        mark = channels_event_id_mark(chs);
        cr_assert_eq(mark, id + block);

        /* 100,000 publishes in the same millisecond: ids run ahead of the clock. */
        for (unsigned i = 0; i < 100000; i++) {
                cr_assert_eq(channels_publish(chs, "r", NULL, NULL, &id), 0);
                if (channels_event_id_mark(chs) == mark)
                        continue;
                cr_assert_eq(id, mark + 1, "raised when the block is used up");
                block *= 2;
                mark = channels_event_id_mark(chs);
                cr_assert_eq(mark, id + block, "twice the last block");
                raised++;
        }
        cr_assert_eq(raised, 3, "20,000, 40,000, 80,000 more, where blocks of 10,000 would have taken 10 writes");

        /* Half a second later the next block still grows. */
        mono += 500;
        while (channels_event_id_mark(chs) == mark)
                cr_assert_eq(channels_publish(chs, "r", NULL, NULL, &id), 0);
        cr_assert_eq(channels_event_id_mark(chs), id + 2 * block);

        block *= 2;

        /* A publish that sees an earlier time than the last reservation (a busy-polled batch runs ahead of the
         * loop's time) counts as within the second. The clock jumping to the mark uses the block up at once. */
        mono -= 1;
        wall = (int64_t) channels_event_id_mark(chs) + 1;
        cr_assert_eq(channels_publish(chs, "r", NULL, NULL, &id), 0);
        block *= 2;
        cr_assert_eq(channels_event_id_mark(chs), id + block, "grown, not reset");

        /* Between one and ten seconds later: the same size. */
        mono += 5000;
        wall = (int64_t) channels_event_id_mark(chs) + 1;
        cr_assert_eq(channels_publish(chs, "r", NULL, NULL, &id), 0);
        cr_assert_eq(channels_event_id_mark(chs), id + block);

        /* After 20 quiet seconds (the clock past the mark), the base block again. */
        mono += 20000;
        wall = (int64_t) channels_event_id_mark(chs) + 20000;
        cr_assert_eq(channels_publish(chs, "r", NULL, NULL, &id), 0);
        cr_assert_eq(id, (uint64_t) wall);
        cr_assert_eq(channels_event_id_mark(chs), id + 10000);
}

Test(channel, caps) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        char name[300];

        limits.MAX_SUBSCRIPTIONS_PER_CLIENT = 2;
        subscribe(s, "c1");
        subscribe(s, "c2");
        subscribe(s, "c2");
        test_request(&manager, s, "{\"type\":\"subscribe\",\"id\":\"s3\",\"channel\":\"c3\"}");
        o = test_pop_json(s);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "id"), "s3");
        cr_assert(strstr(jstr(o, "error"), "Too many subscriptions"));
        json_object_put(TAKE_PTR(o));

        memset(name, 'n', 257);
        name[257] = '\0';
        test_request(&manager, p, "{\"type\":\"publish\",\"id\":\"p1\",\"channel\":\"%s\",\"message\":1}", name);
        o = test_pop_json(p);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "Channel name too long"));
        json_object_put(TAKE_PTR(o));
        cr_assert_eq(channels_publish(chs, name, NULL, NULL, NULL), -EINVAL);

        limits.MAX_MESSAGE_BYTES = 10;
        test_request(&manager, p, "{\"type\":\"publish\",\"id\":\"p2\",\"channel\":\"c1\",\"message\":\"0123456789\"}");
        o = test_pop_json(p);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "Message too large"));
        json_object_put(TAKE_PTR(o));
        cr_assert_eq(client_queued(s), 0, "nothing was delivered");

        /* Two subscribed channels fill the table: a third cannot be made... */
        limits.MAX_CHANNELS = 2;
        test_request(&manager, p, "{\"type\":\"publish\",\"id\":\"p3\",\"channel\":\"c9\",\"message\":1}");
        o = test_pop_json(p);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "Too many channels"));
        json_object_put(TAKE_PTR(o));

        /* ...but channels that only hold a buffer make room. */
        test_request(&manager, s, "{\"type\":\"unsubscribe\",\"id\":\"u\",\"channel\":\"c2\"}");
        json_object_put(test_pop_json(s));
        publish(p, "c8", "1");
        publish(p, "c9", "1");
        cr_assert_eq(channels_count(chs), 2);
}

/* Publishes on channel until c's queue has no room for one more such message. */
static void fill_queue(Client *p, Client *c, Client *fast, const char *channel, const char *msg) {
        for (;;) {
                size_t last;

                publish(p, channel, msg);
                drain(fast);
                cr_assert_gt(client_queued(c), 0);
                last = client_queued_line(c, client_queued(c) - 1)->size;
                if (client_queued_bytes(c) + last > limits.MAX_WRITE_QUEUE_BYTES)
                        return;
        }
}

Test(channel, slow_consumer_policy) {
        Client *p = &clients[0], *slow = &clients[1], *fast = &clients[2];
        _cleanup_(json_object_putp) struct json_object *o = NULL, *status = json_object_new_object();
        char msg[200], rid[64];
        unsigned queued;
        uint64_t id;

        snprintf(msg, sizeof(msg), "\"%0100d\"", 0);
        limits.MAX_WRITE_QUEUE_BYTES = 2000;

        subscribe(slow, "s:one");
        subscribe(slow, "s:*");
        subscribe(fast, "s:*");

        /* Fill the slow queue with two channels' messages; the fast subscriber reads everything. */
        publish(p, "s:two", msg);
        fill_queue(p, slow, fast, "s:one", msg);
        queued = client_queued(slow);

        /* Overflow: queued messages dropped, one refresh_needed per channel lost, then the new message. */
        id = publish(p, "s:one", msg);
        cr_assert_eq(client_queued(fast), 1, "the fast subscriber is not affected");
        drain(fast);
        snprintf(rid, sizeof(rid), "refresh_%" PRIu64, id);
        o = test_pop_json(slow);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed");
        cr_assert_str_eq(jstr(o, "id"), rid);
        cr_assert_str_eq(jstr(o, "channel"), "s:two", "in the order the lost messages were queued");
        json_object_put(TAKE_PTR(o));
        o = test_pop_json(slow);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed");
        cr_assert_str_eq(jstr(o, "channel"), "s:one");
        json_object_put(TAKE_PTR(o));
        o = test_pop_json(slow);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        cr_assert_eq(jint(o, "eventId"), (int64_t) id);
        json_object_put(TAKE_PTR(o));
        cr_assert_eq(client_queued(slow), 0);

        /* It read the notices: the next overflow is handled the same way, not by a disconnect. */
        fill_queue(p, slow, fast, "s:one", msg);
        publish(p, "s:one", msg);
        cr_assert_not(slow->disconnected);
        o = test_pop_json(slow);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed");
        json_object_put(TAKE_PTR(o));
        cr_assert_eq(client_queued(slow), 1, "only the new message is left");

        /* This time it does not read the notice: overflowing again before that is a disconnect. */
        fill_queue(p, slow, fast, "s:two", msg);
        publish(p, "s:two", msg);
        cr_assert_not(slow->disconnected);
        fill_queue(p, slow, fast, "s:two", msg);
        cr_assert_not(slow->disconnected);
        publish(p, "s:two", msg);
        cr_assert(slow->disconnected, "still over the cap before reading the notice");
        cr_assert_null(slow->subscriber.subscriptions);
        cr_assert_eq(client_queued(fast), 1, "the fast subscriber got that message too");

        cr_assert_eq(channels_add_status(chs, status), 0);
        cr_assert_eq(jint(status, "slowConsumerDisconnects"), 1);
        cr_assert_eq(jint(status, "refreshNeededSent"), 5);
        cr_assert_geq(jint(status, "messagesDropped"), (int64_t) queued);
}

Test(channel, list_and_status) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_(json_object_putp) struct json_object *list = NULL, *status = json_object_new_object();

        subscribe(s, "b");
        subscribe(s, "a:*");
        publish(p, "b", "1");
        publish(p, "a:x", "1");
        cr_assert_eq(channels_list(chs, &list), 0);
        cr_assert_eq(json_object_array_length(list), 3);
        struct json_object *e0 = json_object_array_get_idx(list, 0), *e2 = json_object_array_get_idx(list, 2);
        cr_assert_str_eq(jstr(e0, "name"), "a:*");
        cr_assert_eq(jint(e0, "subscribers"), 1);
        cr_assert_eq(jint(e0, "bufferedEvents"), 0);
        cr_assert_str_eq(jstr(e2, "name"), "b");
        cr_assert_eq(jint(e2, "bufferedEvents"), 1);
        cr_assert_gt(jint(e2, "lastEventId"), 0);

        cr_assert_eq(channels_add_status(chs, status), 0);
        cr_assert_eq(jint(status, "subscriptions"), 2, "channel keys with a subscriber");
        cr_assert_eq(channels_count(chs), 3);
}

/* ---- the control front end's publish fast path (photond-control-channels.c; its scan: tests/test-protocol.c) ---- */

Test(channel, fast_and_general_paths_answer_alike) {
        Client *p = &clients[0], *s = &clients[1];
        _cleanup_free_ char *fast_push = NULL, *fast_reply = NULL, *slow_push = NULL, *slow_reply = NULL;
        _cleanup_(json_object_putp) struct json_object *refused = NULL;
        const char *msg = "{\"a\":[1,2.50,\"\\u0001\\n\"],\"b\":{\"c\":null}}";
        char line[256], session_line[256];
        int n, m;

        subscribe(s, "x:1");
        n = snprintf(line, sizeof(line), "{\"type\":\"publish\",\"id\":\"same\",\"channel\":\"x:1\",\"message\":%s}", msg);
        cr_assert_eq(control_channels_publish_line(chs, p, line, n), 1, "the fast path takes it");
        fast_push = test_pop_line(s);
        fast_reply = test_pop_line(p);

        /* A sessionId sends the same publish down the general path. */
        m = snprintf(session_line, sizeof(session_line),
                     "{\"type\":\"publish\",\"id\":\"same\",\"channel\":\"x:1\",\"sessionId\":\"s\",\"message\":%s}", msg);
        cr_assert_eq(control_channels_publish_line(chs, p, session_line, m), 0, "the fast path leaves it");
        cr_assert_eq(client_queued(p) + client_queued(s), 0);
        test_request(&manager, p, "%s", session_line);
        slow_push = test_pop_line(s);
        slow_reply = test_pop_line(p);

        /* Equal but for the eventIds (one apart, the same number of digits). */
        for (char *a = fast_push, *b = slow_push; *a && *b; a++, b++)
                if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9')
                        *a = *b = '#';
        for (char *a = fast_reply, *b = slow_reply; *a && *b; a++, b++)
                if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9')
                        *a = *b = '#';
        cr_assert_str_eq(fast_push, slow_push);
        cr_assert_str_eq(fast_reply, slow_reply);
        cr_assert(strstr(slow_push, "\"message\":{\"a\":[#,#.##,\"\\u####\\n\"],\"b\":{\"c\":null}}}"), "%s", slow_push);

        /* Refusals go to the general path, which words them; nothing is published. */
        limits.MAX_MESSAGE_BYTES = 4;
        cr_assert_eq(control_channels_publish_line(chs, p, line, n), 0);
        cr_assert_eq(client_queued(p) + client_queued(s), 0);
        test_request(&manager, p, "%s", line);
        refused = test_pop_json(p);
        cr_assert_str_eq(jstr(refused, "type"), "error");
        cr_assert_str_eq(jstr(refused, "id"), "same");
        cr_assert(startswith(jstr(refused, "error"), "Message too large"), "%s", jstr(refused, "error"));
        cr_assert_eq(client_queued(s), 0);
}

/* A NUL in the message is data: taken by the fast path and forwarded byte for byte. */
Test(channel, fast_path_forwards_a_nul_in_the_message) {
        Client *p = &clients[0], *s = &clients[1];
        const char *line = "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":{\"k\":\"a\\u0000b\"}}";
        _cleanup_free_ char *push = NULL;

        subscribe(s, "c");
        cr_assert_eq(control_channels_publish_line(chs, p, line, strlen(line)), 1, "a NUL in the message is taken");
        push = test_pop_line(s);
        cr_assert(strstr(push, "\"message\":{\"k\":\"a\\u0000b\"}}"), "%s", push);
}

/* Writes each eventId (a run of ten digits or more) of s as one '#'. */
static void hide_event_ids(char *s) {
        for (char *p = s; p && *p; p++) {
                size_t n = strspn(p, "0123456789");

                if (n >= 10) {
                        memmove(p + 1, p + n, strlen(p + n) + 1);
                        *p = '#';
                }
        }
}

/* What the scan leaves to the general path (escapes in the id or channel, a NUL, no object, duplicate keys, a
 * sessionId) is answered there as json-c reads the line. */
Test(channel, declined_publishes_take_the_general_path) {
        static const struct {
                const char *line;
                const char *reply;      /* the publisher's answer, eventIds as '#' */
                const char *push;       /* what the subscriber of "a/b", "b" and "m" hears, the same; NULL: nothing */
        } cases[] = {
                { "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\\/b\",\"message\":1}",
                  "{\"type\":\"result\",\"id\":\"1\",\"success\":true,\"data\":{\"published\":true,\"channel\":\"a/b\",\"eventId\":#}}",
                  "{\"type\":\"channel_message\",\"id\":\"ch_#\",\"eventId\":#,\"channel\":\"a/b\",\"message\":1}" },
                { "{\"type\":\"publish\",\"id\":\"\\u0031\\\"\\n\",\"channel\":\"\\u0062\",\"message\":\"\\/\"}",
                  "{\"type\":\"result\",\"id\":\"1\\\"\\n\",\"success\":true,\"data\":{\"published\":true,\"channel\":\"b\",\"eventId\":#}}",
                  "{\"type\":\"channel_message\",\"id\":\"ch_#\",\"eventId\":#,\"channel\":\"b\",\"message\":\"/\"}" },
                { "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"x\",\"channel\":\"b\",\"message\":1}",
                  "{\"type\":\"result\",\"id\":\"1\",\"success\":true,\"data\":{\"published\":true,\"channel\":\"b\",\"eventId\":#}}",
                  "{\"type\":\"channel_message\",\"id\":\"ch_#\",\"eventId\":#,\"channel\":\"b\",\"message\":1}" },
                { "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"b\",\"message\":{\"k\":1,\"k\":[2]}}",
                  "{\"type\":\"result\",\"id\":\"1\",\"success\":true,\"data\":{\"published\":true,\"channel\":\"b\",\"eventId\":#}}",
                  "{\"type\":\"channel_message\",\"id\":\"ch_#\",\"eventId\":#,\"channel\":\"b\",\"message\":{\"k\":[2]}}" },
                { "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"m\",\"sessionId\":\"s\"}",
                  "{\"type\":\"result\",\"id\":\"1\",\"success\":true,\"data\":{\"published\":true,\"channel\":\"m\",\"eventId\":#}}",
                  "{\"type\":\"channel_message\",\"id\":\"ch_#\",\"eventId\":#,\"channel\":\"m\"}" },
                { "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"m\",\"sessionId\":\"s\",\"message\":null}",
                  "{\"type\":\"result\",\"id\":\"1\",\"success\":true,\"data\":{\"published\":true,\"channel\":\"m\",\"eventId\":#}}",
                  "{\"type\":\"channel_message\",\"id\":\"ch_#\",\"eventId\":#,\"channel\":\"m\",\"message\":null}" },
                { "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\\u0000b\",\"message\":1}",
                  "{\"type\":\"error\",\"id\":\"1\",\"error\":\"Invalid request format: channel must not contain a NUL character\"}",
                  NULL },
                { "[\"publish\",\"1\",\"b\"]",
                  "{\"type\":\"error\",\"id\":\"unknown\",\"error\":\"Invalid request format: request must be a JSON object\"}",
                  NULL },
        };
        Client *p = &clients[0], *s = &clients[1];

        subscribe(s, "a/b");
        subscribe(s, "b");
        subscribe(s, "m");
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *reply = NULL, *push = NULL;

                cr_assert_eq(control_channels_publish_line(chs, p, cases[i].line, strlen(cases[i].line)), 0,
                             "taken by the fast path: %s", cases[i].line);
                cr_assert_eq(client_queued(p) + client_queued(s), 0);

                test_request(&manager, p, "%s", cases[i].line);
                reply = test_pop_line(p);
                push = test_pop_line(s);
                cr_assert_null(test_pop_line(p));
                hide_event_ids(reply);
                hide_event_ids(push);
                cr_assert_str_eq(reply, cases[i].reply, "%s", cases[i].line);
                if (cases[i].push)
                        cr_assert_str_eq(push, cases[i].push, "%s", cases[i].line);
                else
                        cr_assert_null(push, "%s: %s", cases[i].line, push);
        }
}

/* ---- the Subscriber seam: the channels deliver to anything with SubscriberOps, here a fake that is no Client ---- */

typedef struct FakeEntry {
        SharedBuf *buf;
        const void *tag;
} FakeEntry;

typedef struct FakeSub {
        Subscriber sub;                 /* not first on purpose: the ops find the fake by offset */
        FakeEntry q[64];
        size_t n, bytes;
        unsigned n_write_now, n_drop_calls, n_closed;
} FakeSub;

static FakeSub* fake_of(Subscriber *s) {
        return (FakeSub*) ((uint8_t*) s - offsetof(FakeSub, sub));
}

static int fake_send(Subscriber *s, SharedBuf *b, const void *tag) {
        FakeSub *f = fake_of(s);

        /* As client_send(): a tagged buffer that would take the queue past the cap is refused. */
        if (tag && f->bytes + b->size > limits.MAX_WRITE_QUEUE_BYTES)
                return -ENOBUFS;
        cr_assert_lt(f->n, ELEMENTSOF(f->q));
        f->q[f->n++] = (FakeEntry) { shared_buf_ref(b), tag };
        f->bytes += b->size;
        return 0;
}

static size_t fake_drop_tagged(Subscriber *s, SubscriberDropFunc cb, void *userdata) {
        FakeSub *f = fake_of(s);
        const void *seen[ELEMENTSOF(f->q)];
        size_t k = 0, n_seen = 0, dropped = 0;

        f->n_drop_calls++;
        for (size_t i = 0; i < f->n; i++) {
                FakeEntry e = f->q[i];
                bool known = false;

                if (!e.tag) {
                        f->q[k++] = e;
                        continue;
                }
                for (size_t j = 0; j < n_seen && !known; j++)
                        known = seen[j] == e.tag;
                if (!known) {
                        seen[n_seen++] = e.tag;
                        if (cb)
                                cb(s, e.tag, e.buf, userdata);
                }
                f->bytes -= e.buf->size;
                shared_buf_unref(e.buf);
                dropped++;
        }
        f->n = k;
        return dropped;
}

static void fake_write_now(Subscriber *s) {
        fake_of(s)->n_write_now++;
}

static size_t fake_queued_bytes(Subscriber *s) {
        return fake_of(s)->bytes;
}

static void fake_close_slow(Subscriber *s) {
        fake_of(s)->n_closed++;
}

static const SubscriberOps fake_ops = {
        .send = fake_send,
        .drop_tagged = fake_drop_tagged,
        .write_now = fake_write_now,
        .queued_bytes = fake_queued_bytes,
        .close_slow = fake_close_slow,
};

static FakeSub fakes[3];
static bool write_now_allowed;

static bool fake_may_write_now(void *userdata) {
        return write_now_allowed;
}

/* Reads everything queued. */
static void fake_drain(FakeSub *f) {
        for (size_t i = 0; i < f->n; i++)
                shared_buf_unref(f->q[i].buf);
        f->n = f->bytes = 0;
}

static void fake_reset(FakeSub *f) {
        fake_drain(f);
        *f = (FakeSub) { .sub.ops = &fake_ops };
}

static void sink_setup(void) {
        limits_reset();
        wall = 1700000000000;
        mono = 1000000;
        write_now_allowed = false;
        cr_assert_eq(channels_new(&(ChannelsHooks) { .may_write_now = fake_may_write_now }, &chs), 0);
        channels_set_clock(chs, &(ChannelsClock) { test_wall, test_mono, NULL });
        for (size_t i = 0; i < ELEMENTSOF(fakes); i++)
                fake_reset(&fakes[i]);
}

static void sink_teardown(void) {
        for (size_t i = 0; i < ELEMENTSOF(fakes); i++) {
                channels_subscriber_gone(chs, &fakes[i].sub);
                fake_reset(&fakes[i]);
        }
        chs = channels_free(chs);
}

TestSuite(sink, .init = sink_setup, .fini = sink_teardown);

/* Pops the oldest queued line of a fake as JSON, and its tag. */
static struct json_object* fake_pop(FakeSub *f, const void **ret_tag) {
        struct json_object *o;
        FakeEntry e;

        cr_assert_gt(f->n, 0, "nothing queued");
        e = f->q[0];
        memmove(f->q, f->q + 1, --f->n * sizeof(FakeEntry));
        f->bytes -= e.buf->size;
        cr_assert(e.buf->size > 0 && e.buf->data[e.buf->size - 1] == '\n');
        _cleanup_free_ char *line = strndup(e.buf->data, e.buf->size - 1);
        cr_assert_not_null(line);
        o = json_tokener_parse(line);
        cr_assert_not_null(o);
        if (ret_tag)
                *ret_tag = e.tag;
        shared_buf_unref(e.buf);
        return o;
}

static uint64_t fake_publish(const char *channel, const char *text, Subscriber *exclude) {
        _cleanup_(json_object_putp) struct json_object *msg = json_object_new_string(text);
        uint64_t id;

        cr_assert_eq(channels_publish(chs, channel, msg, exclude, &id), 0);
        return id;
}

/* Cluster mode: what the backend brings back (channels_publish_at()) waits for the iteration's flush even when its
 * publisher is here and the hook would let a local publish through: messages from Redis come many to a read, and
 * writing each at once cost one write per message per subscriber. The publisher is still left out. */
Test(sink, backend_messages_are_not_written_through) {
        FakeSub *a = &fakes[0], *publisher = &fakes[1];

        cr_assert_eq(channels_subscribe(chs, &a->sub, "c", 1), 0);
        cr_assert_eq(channels_subscribe(chs, &publisher->sub, "c", 1), 0);
        write_now_allowed = true;
        cr_assert_eq(channels_publish_at(chs, "c", 1, "1", 1, &publisher->sub, wall + 5, wall), 0);
        cr_assert_eq(a->n, 1);
        cr_assert_eq(publisher->n, 0, "the publisher is excluded");
        cr_assert_eq(a->n_write_now, 0, "left to the flush");
        fake_publish("c", "local", &publisher->sub);
        cr_assert_eq(a->n_write_now, 1, "a local publish still goes at once");
}

Test(sink, fanout_shares_one_line_and_writes_through) {
        FakeSub *a = &fakes[0], *b = &fakes[1], *publisher = &fakes[2];
        const void *tag;
        uint64_t id;

        cr_assert_eq(channels_subscribe(chs, &a->sub, "t:x", 3), 0);
        cr_assert_eq(channels_subscribe(chs, &a->sub, "t:x", 3), 0, "a set");
        cr_assert_eq(a->sub.n_subscriptions, 1);
        cr_assert_eq(channels_subscribe(chs, &b->sub, "t:x", 3), 0);
        cr_assert_eq(channels_subscribe(chs, &b->sub, "t:*", 3), 0);
        cr_assert_eq(channels_subscribe(chs, &publisher->sub, "t:x", 3), 0);
        cr_assert_eq(channels_subscribed_count(chs), 2);

        /* The daemon's own event: delivered, never written through. */
        write_now_allowed = true;
        fake_publish("t:x", "own", NULL);
        cr_assert_eq(a->n, 1);
        cr_assert_eq(b->n, 1, "exact and wildcard: one copy");
        cr_assert_eq(publisher->n, 1);
        cr_assert_eq(a->n_write_now + b->n_write_now + publisher->n_write_now, 0);
        cr_assert_eq(a->q[0].buf, b->q[0].buf, "serialized once, the same bytes for every subscriber");
        cr_assert_not_null(a->q[0].tag, "a channel message is droppable");

        /* A subscriber's publish: not to itself, written through when the hook allows it. */
        id = fake_publish("t:x", "two", &publisher->sub);
        cr_assert_eq(a->n, 2);
        cr_assert_eq(b->n, 2);
        cr_assert_eq(publisher->n, 1, "the publisher is excluded");
        cr_assert_eq(a->n_write_now, 1);
        cr_assert_eq(b->n_write_now, 1);
        write_now_allowed = false;
        fake_publish("t:x", "three", &publisher->sub);
        cr_assert_eq(a->n_write_now, 1, "the hook said no");

        /* The wildcard alone. */
        fake_publish("t:y", "four", NULL);
        cr_assert_eq(a->n, 3);
        cr_assert_eq(b->n, 4);

        _cleanup_(json_object_putp) struct json_object *o = fake_pop(a, &tag);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        json_object_put(TAKE_PTR(o));
        o = fake_pop(a, NULL);
        cr_assert_eq(jint(o, "eventId"), (int64_t) id);
        cr_assert_str_eq(jstr(o, "message"), "two");

        channels_unsubscribe(chs, &a->sub, "t:x", 3);
        cr_assert_eq(a->sub.n_subscriptions, 0);
        cr_assert_null(a->sub.subscriptions);
        fake_publish("t:x", "five", NULL);
        cr_assert_eq(a->n, 1, "unsubscribed");
}

Test(sink, replay_and_refresh_through_the_subscriber) {
        FakeSub *f = &fakes[0];
        uint64_t first, second, third;
        const void *tag;

        first = fake_publish("r:x", "one", NULL);
        second = fake_publish("r:x", "two", NULL);
        third = fake_publish("r:x", "three", NULL);

        cr_assert_eq(channels_subscribe(chs, &f->sub, "r:x", 3), 0);
        cr_assert_eq(channels_replay(chs, &f->sub, "sub1", "r:x", 3, (int64_t) first), 0);
        cr_assert_eq(f->n, 2);

        _cleanup_(json_object_putp) struct json_object *o = fake_pop(f, &tag);
        cr_assert_eq(jint(o, "eventId"), (int64_t) second);
        struct json_object *v;
        cr_assert(json_object_object_get_ex(o, "replay", &v) && json_object_get_boolean(v));
        cr_assert(strncmp(jstr(o, "id"), "replay_", strlen("replay_")) == 0);
        cr_assert_not_null(tag);
        json_object_put(TAKE_PTR(o));
        o = fake_pop(f, NULL);
        cr_assert_eq(jint(o, "eventId"), (int64_t) third);
        json_object_put(TAKE_PTR(o));

        /* From beyond the last id: one refresh_needed answering the request, which no drop may take. */
        cr_assert_eq(channels_replay(chs, &f->sub, "sub2", "r:x", 3, (int64_t) third + 1000), 0);
        o = fake_pop(f, &tag);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed");
        cr_assert_str_eq(jstr(o, "id"), "sub2");
        cr_assert_str_eq(jstr(o, "channel"), "r:x");
        cr_assert_null(tag);
        cr_assert_eq(f->n, 0);
}

Test(sink, slow_consumer_drop_then_close) {
        _cleanup_free_ char *text = NULL;
        FakeSub *slow = &fakes[0], *fast = &fakes[1];
        const void *tag;
        uint64_t id;

        limits.MAX_WRITE_QUEUE_BYTES = 1000;
        cr_assert(asprintf(&text, "%0200d", 0) >= 0);
        cr_assert_eq(channels_subscribe(chs, &slow->sub, "s:x", 3), 0);
        cr_assert_eq(channels_subscribe(chs, &fast->sub, "s:x", 3), 0);

        /* An answer queued first (untagged) must survive the drop, in its place. */
        cr_assert_eq(channels_replay(chs, &slow->sub, "req", "s:x", 3, 1), 0);
        cr_assert_eq(slow->n, 1);
        for (unsigned i = 0; i < 20 && slow->n_drop_calls == 0; i++) {
                id = fake_publish("s:x", text, NULL);
                fake_drain(fast);
        }
        cr_assert_eq(slow->n_drop_calls, 1, "the queued channel messages were dropped through the interface");
        cr_assert_eq(slow->n_closed, 0);
        _cleanup_(json_object_putp) struct json_object *o = fake_pop(slow, &tag);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "the earlier answer, kept");
        cr_assert_str_eq(jstr(o, "id"), "req");
        json_object_put(TAKE_PTR(o));
        o = fake_pop(slow, &tag);
        cr_assert_str_eq(jstr(o, "type"), "refresh_needed", "the notice for the dropped messages");
        cr_assert_str_eq(jstr(o, "channel"), "s:x");
        cr_assert_null(tag);
        json_object_put(TAKE_PTR(o));
        cr_assert_eq(slow->n, 1, "the new message");
        o = fake_pop(slow, &tag);
        cr_assert_eq(jint(o, "eventId"), (int64_t) id);
        cr_assert_not_null(tag);
        json_object_put(TAKE_PTR(o));

        /* It read that notice: the next overflow drops again. */
        slow->n_drop_calls = 0;
        for (unsigned i = 0; i < 20 && slow->n_drop_calls == 0 && slow->n_closed == 0; i++) {
                fake_publish("s:x", text, NULL);
                fake_drain(fast);
        }
        cr_assert_eq(slow->n_drop_calls, 1);
        cr_assert_eq(slow->n_closed, 0, "the notices were read: dropped again, not closed");
        cr_assert_gt(slow->n, 0);
        /* It does not read this notice: overflowing again closes it through the interface, and the channels drop
         * its subscriptions. */
        for (unsigned i = 0; i < 20 && slow->n_closed == 0; i++) {
                fake_publish("s:x", text, NULL);
                fake_drain(fast);
        }
        cr_assert_eq(slow->n_closed, 1);
        cr_assert_eq(slow->sub.n_subscriptions, 0, "the channels dropped its subscriptions");
        cr_assert_null(slow->sub.subscriptions);
        cr_assert_eq(fast->n_closed, 0);
        cr_assert_eq(fast->sub.n_subscriptions, 1, "the fast one is still there");
}

/* channels_get_stats(): what GET /metrics shows, counted by the fan-out itself. */
Test(sink, stats_count_what_the_channels_do) {
        _cleanup_free_ char *text = NULL;
        FakeSub *a = &fakes[0], *b = &fakes[1], *slow = &fakes[2];
        ChannelsStats st;
        uint64_t dropped;

        channels_get_stats(chs, &st);
        cr_assert_eq(st.channels + st.subscriptions + st.published + st.delivered + st.dropped, 0);

        cr_assert_eq(channels_subscribe(chs, &a->sub, "m:x", 3), 0);
        cr_assert_eq(channels_subscribe(chs, &a->sub, "m:x", 3), 0, "a set: counted once");
        cr_assert_eq(channels_subscribe(chs, &b->sub, "m:x", 3), 0);
        cr_assert_eq(channels_subscribe(chs, &b->sub, "m:*", 3), 0);
        channels_get_stats(chs, &st);
        cr_assert_eq(st.subscriptions, 3);
        cr_assert_eq(st.subscribed, 2);
        cr_assert_eq(st.channels, 2);

        /* One event each, delivered once per subscriber however many of its keys match. */
        fake_publish("m:x", "one", NULL);
        fake_publish("m:x", "two", &a->sub);
        fake_publish("m:y", "three", NULL);
        channels_get_stats(chs, &st);
        cr_assert_eq(st.published, 3);
        cr_assert_eq(st.delivered, 2 + 1 + 1);
        cr_assert_eq(st.buffered_events, 3);
        cr_assert_gt(st.buffered_bytes, 0);
        cr_assert_eq(st.channels, 3, "m:y holds an event");
        cr_assert_eq(st.refresh_sent + st.dropped + st.slow_disconnects, 0);

        /* A replay is no fan-out; a refresh_needed answering it is a notice. */
        cr_assert_eq(channels_replay(chs, &a->sub, "r", "m:x", 3, 1), 0);
        channels_get_stats(chs, &st);
        cr_assert_eq(st.delivered, 4);
        cr_assert_eq(st.refresh_sent, 1);
        fake_drain(a);
        fake_drain(b);

        /* A subscriber that does not read: its messages dropped with a notice, then it is cut off. */
        channels_unsubscribe(chs, &a->sub, "m:x", 3);
        channels_subscriber_gone(chs, &b->sub);
        channels_get_stats(chs, &st);
        cr_assert_eq(st.subscriptions, 0);
        limits.MAX_WRITE_QUEUE_BYTES = 1000;
        cr_assert(asprintf(&text, "%0200d", 0) >= 0);
        cr_assert_eq(channels_subscribe(chs, &slow->sub, "m:x", 3), 0);
        for (unsigned i = 0; i < 20 && slow->n_drop_calls == 0; i++)
                fake_publish("m:x", text, NULL);
        channels_get_stats(chs, &st);
        cr_assert_eq(st.refresh_sent, 2, "one more: the notice of the drop");
        cr_assert_gt(st.dropped, 0);
        cr_assert_eq(st.slow_disconnects, 0);
        dropped = st.dropped;
        for (unsigned i = 0; i < 20 && slow->n_closed == 0; i++)
                fake_publish("m:x", text, NULL);
        cr_assert_eq(slow->n_closed, 1);
        channels_get_stats(chs, &st);
        cr_assert_eq(st.slow_disconnects, 1);
        cr_assert_gt(st.dropped, dropped, "the message it could not take");
        cr_assert_eq(st.subscriptions, 0);
        cr_assert_eq(st.subscribed, 0);
}
