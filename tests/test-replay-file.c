/* SPDX-License-Identifier: MIT */

/* The replay buffers across a stop: the channels core's walk and restore (channels_replay_walk(),
 * channels_restore()), replay.bin's reader and writer (photond-replay-file.c), and what get_events_since and a
 * subscribe's replay decide on restored buffers (channels_events_since(), which both use): a lastEventId inside
 * them replays, refresh_needed only where an event was lost: before the save, aged out or over a cap while down,
 * or after the file (a crash). The channels run on a clock the tests move by hand; no Manager. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsync-spy.h"
#include "helpers.h"
#include "json-util.h"
#include "photond-channel.h"
#include "photond-limits.h"
#include "photond-replay-file.h"

static int64_t wall;
static uint64_t mono;

static int64_t test_wall(void *u) {
        return wall;
}

static uint64_t test_mono(void *u) {
        return mono;
}

static void setup(void) {
        limits_reset();
        wall = 1700000000000;
        mono = 1000000;
}

TestSuite(replay, .init = setup);

static Channels* channels_fresh(void) {
        Channels *chs;

        cr_assert_eq(channels_new(NULL, &chs), 0);
        channels_set_clock(chs, &(ChannelsClock) { test_wall, test_mono, NULL });
        return chs;
}

/* Publishes on a channel given with its length (NUL allowed); message: JSON text or NULL. */
static uint64_t pub_len(Channels *chs, const char *channel, size_t len, const char *message) {
        uint64_t id;

        cr_assert_eq(channels_publish_serialized(chs, channel, len, message, message ? strlen(message) : 0, NULL,
                                                 &id), 0);
        return id;
}

static uint64_t pub(Channels *chs, const char *channel, const char *message) {
        return pub_len(chs, channel, strlen(channel), message);
}

/* ---- what the buffers hold ---- */

typedef struct Rec {
        char *channel;
        size_t channel_len;
        uint64_t floor, id;
        int64_t timestamp;
        char *message;          /* NULL: none */
} Rec;

typedef struct Recs {
        Rec r[64];
        size_t n;
        const char *current_name;
        size_t current_len;
        uint64_t current_floor;
        size_t left;            /* events the current channel announced and has not given yet */
} Recs;

static int rec_channel(const ReplayChannel *c, void *userdata) {
        Recs *rs = userdata;

        cr_assert_eq(rs->left, 0, "a channel's events all come before the next channel");
        cr_assert_gt(c->n_events, 0, "only channels with events");
        rs->current_name = c->name;     /* valid until the next callback of this channel's events */
        rs->current_len = c->name_len;
        rs->current_floor = c->prefix_floor;
        rs->left = c->n_events;
        return 0;
}

static int rec_event(const ReplayEvent *e, void *userdata) {
        Recs *rs = userdata;
        Rec *r;

        cr_assert_lt(rs->n, ELEMENTSOF(rs->r));
        cr_assert_gt(rs->left, 0);
        if (rs->n > 0 && rs->r[rs->n - 1].channel_len == rs->current_len &&
            memcmp(rs->r[rs->n - 1].channel, rs->current_name, rs->current_len) == 0)
                cr_assert_gt(e->id, rs->r[rs->n - 1].id, "a channel's events oldest first");
        rs->left--;
        r = &rs->r[rs->n++];
        r->channel = malloc(rs->current_len + 1);
        memcpy(r->channel, rs->current_name, rs->current_len);
        r->channel[rs->current_len] = '\0';
        r->channel_len = rs->current_len;
        r->floor = rs->current_floor;
        r->id = e->id;
        r->timestamp = e->timestamp;
        r->message = e->message_json ? strndup(e->message_json, e->message_json_len) : NULL;
        return 0;
}

static int rec_cmp(const void *a, const void *b) {
        const Rec *x = a, *y = b;

        return x->id < y->id ? -1 : x->id > y->id;
}

/* Every buffered event, by eventId. */
static Recs walk(Channels *chs) {
        Recs rs = {};

        cr_assert_eq(channels_replay_walk(chs, rec_channel, rec_event, &rs), 0);
        cr_assert_eq(rs.left, 0);
        qsort(rs.r, rs.n, sizeof(Rec), rec_cmp);
        return rs;
}

static void recs_done(Recs *rs) {
        for (size_t i = 0; i < rs->n; i++) {
                free(rs->r[i].channel);
                free(rs->r[i].message);
        }
        rs->n = 0;
}

static void recs_assert_equal(Recs *a, Recs *b) {
        cr_assert_eq(a->n, b->n, "%zu events, not %zu", b->n, a->n);
        for (size_t i = 0; i < a->n; i++) {
                cr_assert_eq(a->r[i].id, b->r[i].id);
                cr_assert_eq(a->r[i].timestamp, b->r[i].timestamp);
                cr_assert_eq(a->r[i].channel_len, b->r[i].channel_len);
                cr_assert_eq(memcmp(a->r[i].channel, b->r[i].channel, a->r[i].channel_len), 0);
                cr_assert_eq(a->r[i].floor, b->r[i].floor, "the prefix floor of %s", a->r[i].channel);
                cr_assert_eq(!a->r[i].message, !b->r[i].message);
                if (a->r[i].message)
                        cr_assert_str_eq(a->r[i].message, b->r[i].message);
        }
}

/* ---- what a replay from lastEventId gets ---- */

typedef struct Since {
        uint64_t ids[64];
        size_t n;
        bool refresh;
} Since;

static int since_add(const ChannelEvent *e, void *userdata) {
        Since *s = userdata;

        cr_assert_lt(s->n, ELEMENTSOF(s->ids));
        s->ids[s->n++] = e->id;
        return 0;
}

static Since since(Channels *chs, const char *key, int64_t last_event_id) {
        Since s = {};

        cr_assert_eq(channels_events_since(chs, key, strlen(key), last_event_id, since_add, &s, &s.refresh), 0);
        return s;
}

/* A replay that is complete: exactly ids, no refresh_needed. */
static void expect_replay(Channels *chs, const char *key, int64_t last, const uint64_t *ids, size_t n) {
        Since s = since(chs, key, last);

        cr_assert_not(s.refresh, "%s since %" PRIi64 ": no refresh_needed", key, last);
        cr_assert_eq(s.n, n, "%s since %" PRIi64 ": %zu events, not %zu", key, last, n, s.n);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(s.ids[i], ids[i], "%s since %" PRIi64 ": event %zu", key, last, i);
}

static void expect_refresh(Channels *chs, const char *key, int64_t last) {
        cr_assert(since(chs, key, last).refresh, "%s since %" PRIi64 ": refresh_needed", key, last);
}

/* The file of chs, parsed and restored into a fresh Channels on the clock as it is then. */
static int restore_into(Channels *chs, Channels **ret) {
        _cleanup_(replay_file_done) ReplayFile f = {};
        _cleanup_free_ char *data = NULL;
        size_t size;
        int r;

        cr_assert_eq(replay_file_serialize(chs, wall, &data, &size), 0);
        cr_assert_eq(replay_file_parse(data, size, &f), 0);
        *ret = channels_fresh();
        r = channels_restore(*ret, f.records, f.n_records);
        return r;
}

/* ---- round trip ---- */

Test(replay, round_trip_keeps_events_ids_timestamps_and_messages) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh(), *again = NULL;
        Recs before, after;
        uint64_t ids[8], next;
        int n = 0;

        ids[n++] = pub(chs, "a", "{\"k\":[1,\"x/y\",null]}");
        wall += 3;
        ids[n++] = pub(chs, "b:x", NULL);                       /* no message key */
        ids[n++] = pub(chs, "a", "null");                        /* a null message */
        ids[n++] = pub_len(chs, "n\0ul", 4, "\"line\\nbreak \\u00e9 é\"");       /* a NUL in the name */
        wall -= 60000;                                           /* the clock steps back: ids still rise */
        ids[n++] = pub(chs, "b:y", "[]");
        ids[n++] = pub(chs, "a", "1.5e3");
        wall += 60000;

        before = walk(chs);
        cr_assert_eq(before.n, (size_t) n);
        cr_assert_eq(restore_into(chs, &again), n, "every event restored");
        after = walk(again);
        recs_assert_equal(&before, &after);
        cr_assert_eq(after.r[4].timestamp, before.r[3].timestamp - 60000, "the timestamp as it was, not the id");

        /* The same replays as before the stop. */
        uint64_t a_all[] = { ids[0], ids[2], ids[5] };
        expect_replay(again, "a", (int64_t) ids[0], a_all + 1, 2);
        expect_replay(again, "a", (int64_t) ids[2], a_all + 2, 1);
        uint64_t b_all[] = { ids[1], ids[4] };
        expect_replay(again, "b:*", (int64_t) ids[0], b_all, 2);
        expect_replay(chs, "b:*", (int64_t) ids[0], b_all, 2);

        /* Ids go on above every restored one, with the clock an hour behind. */
        wall -= 3600 * 1000;
        next = pub(again, "a", "2");
        cr_assert_eq(next, ids[5] + 1);
        cr_assert_geq(channels_event_id_mark(again), ids[5]);

        recs_done(&before);
        recs_done(&after);
}

Test(replay, an_empty_buffer_round_trips_to_nothing) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh(), *again = NULL;
        _cleanup_free_ char *data = NULL;
        size_t size;

        cr_assert_eq(replay_file_serialize(chs, wall, &data, &size), 0);
        cr_assert_eq(size, (size_t) REPLAY_FILE_HEADER_SIZE);
        cr_assert_eq(restore_into(chs, &again), 0);
        cr_assert_eq(channels_count(again), 0);
}

/* ---- ageing and the caps while restoring ---- */

Test(replay, events_age_by_their_timestamps) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh(), *again = NULL;
        uint64_t e1, e2, e3;

        e1 = pub(chs, "t", "1");
        wall += 100000;
        mono += 100000;
        e2 = pub(chs, "t", "2");
        wall += 100000;
        mono += 100000;
        e3 = pub(chs, "t", "3");

        /* Down for 150 s: e1 is 350 s old, over the 300 s window; e2 250 s, e3 150 s. */
        wall += 150000;
        mono += 7;      /* another boot's monotonic clock: only the timestamps count */
        cr_assert_eq(restore_into(chs, &again), 2);
        expect_refresh(again, "t", (int64_t) e1 - 1);
        expect_refresh(again, "t", (int64_t) e1);       /* e2's predecessor is gone */
        expect_replay(again, "t", (int64_t) e2, &e3, 1);

        /* From then on they age on the monotonic clock, from the age they came back with. */
        mono += 50000;
        expect_replay(again, "t", (int64_t) e2, &e3, 1);
        mono += 1;
        /* e2 is gone now: as for any exact channel, a replay must reach back to the oldest event. */
        expect_refresh(again, "t", (int64_t) e2);
        expect_replay(again, "t", (int64_t) e3, NULL, 0);
        mono += 100000;
        cr_assert_eq(channels_count(again), 0, "all aged out after the window");
}

Test(replay, a_timestamp_ahead_of_the_clock_counts_as_new) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh(), *again = NULL;
        uint64_t e;

        e = pub(chs, "u", "1");
        /* The clock was set back while photond was down. */
        wall -= 3600 * 1000;
        cr_assert_eq(restore_into(chs, &again), 1);
        mono += 300000;
        expect_replay(again, "u", (int64_t) e, NULL, 0);
        mono += 1;
        cr_assert_eq(channels_count(again), 0, "it ages from the restart on");
}

Test(replay, what_the_caps_drop_while_restoring_is_lost) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh(), *again = NULL;
        char big[200];
        uint64_t a[4], small1, bigid, small3, p1, p2;

        for (int i = 0; i < 4; i++)
                a[i] = pub(chs, "cap:a", "1");
        memset(big, 'x', sizeof(big) - 1);
        big[0] = big[sizeof(big) - 2] = '"';
        big[sizeof(big) - 1] = '\0';
        small1 = pub(chs, "m", "1");
        bigid = pub(chs, "m", big);
        small3 = pub(chs, "m", "3");
        p1 = pub(chs, "big:a", big);
        p2 = pub(chs, "big:b", "2");
        pub(chs, "third", "1");

        /* A restart with lower caps: 2 events per channel, smaller messages, two channels. */
        limits.REPLAY_MAX_EVENTS = 2;
        limits.MAX_MESSAGE_BYTES = 100;
        limits.MAX_CHANNELS = 4;
        cr_assert_gt(restore_into(chs, &again), 0);

        /* The oldest events of cap:a went: a replay from before them is incomplete; the wildcard's, which knows
         * the newest lost id, is complete from a[1] on. */
        expect_replay(again, "cap:a", (int64_t) a[2], a + 3, 1);
        expect_refresh(again, "cap:a", (int64_t) a[1]);
        expect_refresh(again, "cap:*", (int64_t) a[0]);
        expect_replay(again, "cap:*", (int64_t) a[1], a + 2, 2);

        /* The big message could not come back: what was older than it goes too, so no replay skips it. */
        expect_refresh(again, "m", (int64_t) small1);
        expect_refresh(again, "m", (int64_t) bigid);
        expect_replay(again, "m", (int64_t) small3, NULL, 0);

        /* big:a's event is lost: a wildcard replay from before it says so, and still lists big:b's. */
        Since s = since(again, "big:*", (int64_t) p1 - 1);
        cr_assert(s.refresh);
        cr_assert_eq(s.n, 1);
        cr_assert_eq(s.ids[0], p2);
        expect_replay(again, "big:*", (int64_t) p1, &p2, 1);

        /* Four channels at most: the last one made did not come back. */
        cr_assert_leq(channels_count(again), 4);
        expect_refresh(again, "third", (int64_t) a[0]);
}

/* ---- the refresh_needed decision on restored buffers ---- */

Test(replay, refresh_needed_at_the_boundaries) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh(), *again = NULL;
        uint64_t c[5], w[6], before_w;

        for (int i = 0; i < 5; i++)
                c[i] = pub(chs, "c", "1");
        /* A prefix that lost an event before the stop: w:a's first, pushed out by the per-channel cap. */
        before_w = pub(chs, "elsewhere", "1");
        limits.REPLAY_MAX_EVENTS = 2;
        w[0] = pub(chs, "w:a", "1");
        w[1] = pub(chs, "w:b", "1");
        w[2] = pub(chs, "w:a", "1");
        w[3] = pub(chs, "w:a", "1");    /* drops w[0] */
        limits_reset();
        w[4] = pub(chs, "w:b", "1");
        w[5] = pub(chs, "w", "1");

        cr_assert_gt(restore_into(chs, &again), 0);

        /* Exact channel: from inside the buffer, a replay; from before its oldest or 0, refresh_needed. */
        expect_replay(again, "c", (int64_t) c[4], NULL, 0);
        expect_replay(again, "c", (int64_t) c[3], c + 4, 1);
        expect_replay(again, "c", (int64_t) c[0], c + 1, 4);
        expect_refresh(again, "c", (int64_t) c[0] - 1);
        expect_refresh(again, "c", 0);
        /* Above every id issued. */
        expect_refresh(again, "c", (int64_t) w[5] + 1);
        /* A channel with nothing buffered. */
        expect_refresh(again, "quiet", (int64_t) c[0]);
        expect_replay(again, "quiet", 0, NULL, 0);

        /* Wildcard: the floor came back with the buffers; from before the lost event, a gap, and exactly at it or
         * after, complete. */
        Since s = since(again, "w:*", (int64_t) before_w);
        cr_assert(s.refresh, "w[0] was lost before the stop");
        cr_assert_eq(s.n, 5);
        s = since(chs, "w:*", (int64_t) before_w);
        cr_assert(s.refresh, "as it was before the stop");
        expect_replay(again, "w:*", (int64_t) w[0], w + 1, 5);
        expect_replay(again, "w:*", (int64_t) w[3], w + 4, 2);
        expect_refresh(again, "nothing:*", (int64_t) c[0]);
}

/* ---- restore's refusals ---- */

Test(replay, restore_refuses_a_used_channels_and_duplicate_ids) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh(), *used = channels_fresh();
        ReplayChannel rc = { .name = "x", .name_len = 1 };
        ReplayRecord twice[3] = {
                { &rc, { .id = 20, .timestamp = wall, .message_json = "1", .message_json_len = 1 } },
                { &rc, { .id = 10, .timestamp = wall } },
                { &rc, { .id = 20, .timestamp = wall } },
        }, zero[2] = {
                { &rc, { .id = 10, .timestamp = wall } },
                { &rc, { .id = 0, .timestamp = wall } },
        }, good[2] = {
                { &rc, { .id = 30, .timestamp = wall, .message_json = "1", .message_json_len = 1 } },
                { &rc, { .id = 20, .timestamp = wall } },
        };

        pub(used, "y", "1");
        cr_assert_eq(channels_restore(used, good, 2), -EBUSY);
        cr_assert_eq(channels_restore(chs, twice, 3), -EINVAL);
        cr_assert_eq(channels_count(chs), 0, "nothing restored");
        cr_assert_eq(channels_restore(chs, zero, 2), -EINVAL);
        cr_assert_eq(channels_count(chs), 0, "nothing restored");
        /* In any order: sorted by id. */
        cr_assert_eq(channels_restore(chs, good, 2), 2);
        expect_replay(chs, "x", 20, (uint64_t[]) { 30 }, 1);
}

/* ---- the file ---- */

static char* file_of(Channels *chs, size_t *ret_size) {
        char *data;

        cr_assert_eq(replay_file_serialize(chs, wall, &data, ret_size), 0);
        return data;
}

static Channels* sample(void) {
        Channels *chs = channels_fresh();

        pub(chs, "a", "{\"k\":1}");
        pub(chs, "b", NULL);
        pub(chs, "a", "[1]");
        return chs;
}

Test(replay, every_truncation_and_every_flipped_bit_is_rejected) {
        _cleanup_(channels_freep) Channels *chs = sample();
        _cleanup_free_ char *data = NULL;
        size_t size;

        data = file_of(chs, &size);
        for (size_t len = 0; len < size; len++) {
                ReplayFile f = {};

                cr_assert_lt(replay_file_parse(data, len, &f), 0, "cut at %zu of %zu", len, size);
                cr_assert_null(f.records);
        }
        for (size_t i = 0; i < size; i++)
                for (int bit = 0; bit < 8; bit++) {
                        ReplayFile f = {};

                        data[i] ^= (char) (1 << bit);
                        cr_assert_lt(replay_file_parse(data, size, &f), 0, "byte %zu bit %d", i, bit);
                        data[i] ^= (char) (1 << bit);
                }
}

/* Changes a sample file with fix(), seals it and expects the parser's answer. */
static void expect_parse(size_t (*fix)(char *data, size_t size), int expect) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh();
        _cleanup_(replay_file_done) ReplayFile f = {};
        _cleanup_free_ char *data = NULL;
        size_t size;

        pub(chs, "ch", "[1]");
        data = file_of(chs, &size);
        data = realloc(data, size + 16);
        size = fix(data, size);
        replay_file_seal(data, size);
        cr_assert_eq(replay_file_parse(data, size, &f), expect);
}

/* One channel "ch" with one event "[1]": the body is the channel record (16 + 2), the event record (20 + 3). */
#define CH_OFF REPLAY_FILE_HEADER_SIZE
#define EV_OFF (REPLAY_FILE_HEADER_SIZE + 16 + 2)
#define MSG_OFF (EV_OFF + 20)

static size_t fix_nothing(char *d, size_t size) {
        return size;
}

static size_t fix_newer_version(char *d, size_t size) {
        d[8] = 2;
        return size;
}

static size_t fix_version_zero(char *d, size_t size) {
        d[8] = 0;
        return size;
}

static size_t fix_flags(char *d, size_t size) {
        d[12] = 1;
        return size;
}

static size_t fix_message_not_json(char *d, size_t size) {
        memcpy(d + MSG_OFF, "[1[", 3);
        return size;
}

static size_t fix_message_newline(char *d, size_t size) {
        memcpy(d + MSG_OFF, "[\n]", 3);
        return size;
}

static size_t fix_message_two_values(char *d, size_t size) {
        memcpy(d + MSG_OFF, "1 2", 3);
        return size;
}

static size_t fix_message_too_long(char *d, size_t size) {
        d[EV_OFF + 16] = 4;
        return size;
}

static size_t fix_name_too_long(char *d, size_t size) {
        d[CH_OFF] = (char) 0xff;
        return size;
}

static size_t fix_no_events_in_channel(char *d, size_t size) {
        d[CH_OFF + 4] = 0;
        return size;
}

static size_t fix_more_events_announced(char *d, size_t size) {
        d[CH_OFF + 4] = 2;
        return size;
}

static size_t fix_total_events(char *d, size_t size) {
        d[48] = 2;
        return size;
}

static size_t fix_trailing_bytes(char *d, size_t size) {
        memset(d + size, 0, 4);
        return size + 4;
}

static size_t fix_no_message(char *d, size_t size) {
        memset(d + EV_OFF + 16, 0xff, 4);
        return size - 3;
}

Test(replay, the_reader_rejects_what_the_writer_never_writes) {
        expect_parse(fix_nothing, 0);
        expect_parse(fix_no_message, 0);
        expect_parse(fix_newer_version, -EPROTONOSUPPORT);
        expect_parse(fix_version_zero, -EBADMSG);
        expect_parse(fix_flags, -EBADMSG);
        expect_parse(fix_message_not_json, -EBADMSG);
        expect_parse(fix_message_newline, -EBADMSG);
        expect_parse(fix_message_two_values, -EBADMSG);
        expect_parse(fix_message_too_long, -EBADMSG);
        expect_parse(fix_name_too_long, -EBADMSG);
        expect_parse(fix_no_events_in_channel, -EBADMSG);
        expect_parse(fix_more_events_announced, -EBADMSG);
        expect_parse(fix_total_events, -EBADMSG);
        expect_parse(fix_trailing_bytes, -EBADMSG);
}

Test(replay, the_file_is_bounded_by_the_buffers_cap) {
        _cleanup_(channels_freep) Channels *chs = channels_fresh();
        _cleanup_(replay_file_done) ReplayFile f = {};
        _cleanup_free_ char *data = NULL;
        char msg[1002];
        size_t size;

        memset(msg, 'x', sizeof(msg) - 1);
        msg[0] = msg[sizeof(msg) - 2] = '"';
        msg[sizeof(msg) - 1] = '\0';
        limits.REPLAY_MAX_TOTAL_BYTES = 20000;
        for (int i = 0; i < 100; i++)
                pub(chs, i % 2 ? "a" : "b", msg);
        data = file_of(chs, &size);
        cr_assert_leq(size, replay_file_size_max(), "%zu bytes for a cap of %" PRIu64, size,
                      limits.REPLAY_MAX_TOTAL_BYTES);
        cr_assert_eq(replay_file_parse(data, size, &f), 0);
        limits.REPLAY_MAX_TOTAL_BYTES = 10000;
        cr_assert_eq(replay_file_parse(data, size, &f), -EFBIG, "a file over the cap is not read");
}

/* ---- saving and loading in the state directory ---- */

static char* path_in(const char *dir, const char *name) {
        char *p;

        cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

Test(replay, save_is_atomic_and_durable_and_load_reads_once) {
        _cleanup_(channels_freep) Channels *chs = sample(), *again = channels_fresh(), *third = channels_fresh();
        char *dir = tmpdir_new(), *real = realpath(dir, NULL);
        _cleanup_free_ char *path = path_in(real, REPLAY_FILE_NAME), *tmp = path_in(real, "replay.bin.tmp");
        Recs before = walk(chs), after;
        struct stat st;
        int fd;

        fsync_spy_reset();
        cr_assert_eq(replay_file_save(dir, chs), 0);
        if (!fsync_spy_saw(tmp, false) || !fsync_spy_saw(real, false))
                fsync_spy_dump();
        cr_assert(fsync_spy_saw(tmp, false), "the data is synced before the rename");
        cr_assert(fsync_spy_saw(real, false), "the directory after it");
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0600);
        cr_assert_neq(access(tmp, F_OK), 0);

        /* A save a crash cut short is removed, and does not count. */
        fd = open(tmp, O_WRONLY | O_CREAT, 0600);
        cr_assert_geq(fd, 0);
        close(fd);
        fsync_spy_reset();
        cr_assert_eq(replay_file_load(dir, again), 3);
        cr_assert(fsync_spy_saw(real, false), "the removal is synced before anything is published");
        cr_assert_neq(access(path, F_OK), 0, "read once");
        cr_assert_neq(access(tmp, F_OK), 0);
        after = walk(again);
        recs_assert_equal(&before, &after);

        /* A second start (after a crash of the first) has nothing to restore. */
        cr_assert_eq(replay_file_load(dir, third), 0);
        cr_assert_eq(channels_count(third), 0);

        recs_done(&before);
        recs_done(&after);
        free(real);
        tmpdir_remove(dir);
}

static void write_bytes(const char *path, const char *data, size_t size) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, data, size), (ssize_t) size);
        close(fd);
}

Test(replay, load_drops_a_damaged_a_newer_and_an_outdated_file) {
        _cleanup_(channels_freep) Channels *chs = sample();
        char *dir = tmpdir_new();
        _cleanup_free_ char *path = path_in(dir, REPLAY_FILE_NAME), *data = NULL;
        _cleanup_(json_object_putp) struct json_object *state = json_object_new_object();
        size_t size;

        data = file_of(chs, &size);

        /* Damaged. */
        data[size - 1] ^= 1;
        write_bytes(path, data, size);
        {
                _cleanup_(channels_freep) Channels *c = channels_fresh();
                cr_assert_eq(replay_file_load(dir, c), -EBADMSG);
                cr_assert_eq(channels_count(c), 0);
                cr_assert_neq(access(path, F_OK), 0, "dropped");
        }
        data[size - 1] ^= 1;

        /* Truncated. */
        write_bytes(path, data, size / 2);
        {
                _cleanup_(channels_freep) Channels *c = channels_fresh();
                cr_assert_eq(replay_file_load(dir, c), -EBADMSG);
                cr_assert_eq(channels_count(c), 0);
        }

        /* From a newer photond. */
        data[8] = 7;
        replay_file_seal(data, size);
        write_bytes(path, data, size);
        {
                _cleanup_(channels_freep) Channels *c = channels_fresh();
                cr_assert_eq(replay_file_load(dir, c), -EPROTONOSUPPORT);
                cr_assert_eq(channels_count(c), 0);
                cr_assert_neq(access(path, F_OK), 0, "dropped");
        }
        data[8] = REPLAY_FILE_VERSION;
        replay_file_seal(data, size);

        /* Older than the state: a photond ran after it was written (and crashed, or its own file is missing). */
        write_bytes(path, data, size);
        cr_assert_eq(json_add_int64(state, "eventIdHighWater", (int64_t) channels_event_id_mark(chs) + 1), 0);
        {
                _cleanup_(channels_freep) Channels *c = channels_fresh();
                cr_assert_eq(channels_load_state(c, state), 0);
                cr_assert_eq(replay_file_load(dir, c), -ESTALE);
                cr_assert_eq(channels_count(c), 0);
                cr_assert_neq(access(path, F_OK), 0, "dropped");
        }

        /* The state as the stop left it: restored. */
        write_bytes(path, data, size);
        json_object_object_add(state, "eventIdHighWater", json_object_new_int64((int64_t) channels_event_id_mark(chs)));
        {
                _cleanup_(channels_freep) Channels *c = channels_fresh();
                cr_assert_eq(channels_load_state(c, state), 0);
                cr_assert_eq(replay_file_load(dir, c), 3);
        }
        tmpdir_remove(dir);
}
