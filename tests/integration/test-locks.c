/* SPDX-License-Identifier: MIT */

/* Locks against a real photond: contention between sessions, re-entrancy, exact expiry, the reference's shapes,
 * fencing tokens across restarts and crashes, lost state, waiting acquires (FIFO, timeout, disconnect), caps, and
 * photonctl's lock verbs. Waits are on replies (lockWait answers the moment a lock frees), never on sleeps. */

#include <criterion/criterion.h>
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct json_object* lock_req(Conn *c, const char *id, const char *name, const char *session,
                                    const char *extra) {
        return conn_request(c, id, "{\"type\":\"lock\",\"id\":\"%s\",\"lockName\":\"%s\",\"sessionId\":\"%s\"%s}", id,
                            name, session, extra ?: "");
}

static int64_t acquire_ok(Conn *c, const char *id, const char *name, const char *session, const char *extra) {
        struct json_object *o = lock_req(c, id, name, session, extra);
        int64_t token;

        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "data.acquired"));
        cr_assert_str_eq(jstr(o, "data.holder"), session);
        token = jint(o, "data.fencingToken");
        cr_assert_gt(token, 0);
        json_object_put(o);
        return token;
}

static void expect_same(struct json_object *o, const char *expected) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

        cr_assert_str_eq(s, expected);
        json_object_put(o);
}

static struct json_object* query(Conn *c, const char *id, const char *name) {
        return conn_request(c, id, "{\"type\":\"query_lock\",\"id\":\"%s\",\"lockName\":\"%s\"}", id, name);
}

/* photond is killed (SIGKILL: nothing is written on the way out) and started again on its PHOTON_HOME, *home. */
static void crash_and_restart(Daemon **d, Conn **c, const char *home) {
        kill((*d)->pid, SIGKILL);
        cr_assert(daemon_wait_exit(*d, 10000) != -1);
        conn_close(*c);
        daemon_free(*d);
        *d = daemon_start(&(DaemonOptions) { .home = home });
        *c = conn_open(*d);
}

/* name is held by holder with fencing token token. */
static void expect_held(Conn *c, const char *name, const char *holder, int64_t token) {
        struct json_object *o = query(c, "q", name);

        cr_assert_str_eq(jstr(o, "data.holder"), holder, "%s: %s", name, json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.fencingToken"), token, "%s: %s", name, json_object_to_json_string(o));
        json_object_put(o);
}

/* A round trip on c: every request c sent before has been handled (one connection's requests run in order). */
static void sync_conn(Conn *c, const char *id) {
        struct json_object *o = conn_request(c, id, "{\"type\":\"ping\",\"id\":\"%s\"}", id);

        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);
}

static void rm_home(char *home) {
        char *cmd;

        cr_assert(asprintf(&cmd, "rm -rf '%s'", home) > 0);
        (void) !system(cmd);
        free(cmd);
        free(home);
}

Test(locks, contention_between_two_sessions_and_locks_outlive_connections) {
        Daemon *d = daemon_start(NULL);
        Conn *a = conn_open(d), *b = conn_open(d);
        struct json_object *o;

        acquire_ok(a, "a1", "db", "sess-a", NULL);
        expect_same(lock_req(b, "b1", "db", "sess-b", NULL),
                    "{\"type\":\"result\",\"id\":\"b1\",\"success\":false,\"data\":{\"acquired\":false,"
                    "\"lockName\":\"db\",\"holder\":\"sess-b\",\"reason\":\"Lock held by another client\"}}");

        /* Not tied to the connection: a's leaving changes nothing. */
        conn_close(a);
        sync_conn(b, "sync");
        o = query(b, "q1", "db");
        cr_assert_str_eq(jstr(o, "data.holder"), "sess-a");
        json_object_put(o);
        expect_same(conn_request(b, "u1", "{\"type\":\"unlock\",\"id\":\"u1\",\"lockName\":\"db\",\"sessionId\":\"sess-b\"}"),
                    "{\"type\":\"result\",\"id\":\"u1\",\"success\":false,\"data\":{\"released\":false,"
                    "\"lockName\":\"db\",\"reason\":\"Cannot release lock held by another client\"}}");

        /* Anyone naming the holder may act for it. */
        expect_same(conn_request(b, "u2", "{\"type\":\"unlock\",\"id\":\"u2\",\"lockName\":\"db\",\"lockHolder\":\"sess-a\"}"),
                    "{\"type\":\"result\",\"id\":\"u2\",\"success\":true,\"data\":{\"released\":true,\"lockName\":\"db\"}}");
        acquire_ok(b, "b2", "db", "sess-b", NULL);

        conn_close(b);
        daemon_free(d);
}

Test(locks, reentrant_acquire_refreshes_and_keeps_token) {
        Daemon *d = daemon_start(NULL);
        Conn *a = conn_open(d), *a2 = conn_open(d);
        struct json_object *o;
        int64_t t1, t2, acquired, expires;

        t1 = acquire_ok(a, "1", "r", "s", ",\"lockTimeout\":60000");
        o = query(a, "q1", "r");
        acquired = jint(o, "data.acquiredAt");
        json_object_put(o);

        /* Same holder, another connection, shorter timeout: the expiry moves (may shorten), acquiredAt stays. */
        t2 = acquire_ok(a2, "2", "r", "s", ",\"lockTimeout\":5000");
        cr_assert_eq(t2, t1, "a refresh keeps the fencing token");
        o = query(a, "q2", "r");
        expires = jint(o, "data.expiresAt");
        cr_assert_eq(jint(o, "data.acquiredAt"), acquired);
        cr_assert_leq(expires - jint(o, "data.acquiredAt"), 5000 + 1000);
        cr_assert_eq(jint(o, "data.fencingToken"), t1);
        json_object_put(o);

        conn_close(a);
        conn_close(a2);
        daemon_free(d);
}

Test(locks, expiry_is_exact_and_an_expired_lock_is_gone) {
        Daemon *d = daemon_start(NULL);
        Conn *a = conn_open(d), *b = conn_open(d);
        struct json_object *o;
        uint64_t start, elapsed;
        int64_t t1, t2;

        /* "other" first: it runs out no later than "short". */
        acquire_ok(a, "2", "other", "owner", ",\"lockTimeout\":200");
        start = mono_ms();
        t1 = acquire_ok(a, "1", "short", "owner", ",\"lockTimeout\":200");

        /* A waiting acquire is answered the moment the lock frees: that is the expiry, measured. */
        o = lock_req(b, "w", "short", "next", ",\"lockWait\":10000");
        elapsed = mono_ms() - start;
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        t2 = jint(o, "data.fencingToken");
        cr_assert_gt(t2, t1);
        json_object_put(o);
        cr_assert_geq(elapsed, 195, "freed before its time: %" PRIu64 " ms", elapsed);
        cr_assert_lt(elapsed, 200 + 150, "freed late: %" PRIu64 " ms (the reference's sweep takes up to 10 s)", elapsed);

        /* "other" has run out too: right now it is free, unlisted, and anyone may release it. */
        expect_same(query(b, "q", "other"),
                    "{\"type\":\"result\",\"id\":\"q\",\"success\":true,\"data\":{\"lockName\":\"other\",\"holder\":null}}");
        o = conn_request(b, "l", "{\"type\":\"list_locks\",\"id\":\"l\"}");
        cr_assert_eq(json_object_array_length(jget(o, "data.locks")), 1, "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.locks.0.name"), "short");
        cr_assert_str_eq(jstr(o, "data.locks.0.holder"), "next");
        cr_assert_eq(jint(o, "data.locks.0.fencingToken"), t2);
        json_object_put(o);
        expect_same(conn_request(b, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"other\",\"lockHolder\":\"x\"}"),
                    "{\"type\":\"result\",\"id\":\"u\",\"success\":true,\"data\":{\"released\":true,\"lockName\":\"other\"}}");
        acquire_ok(b, "3", "other", "someone-else", NULL);

        conn_close(a);
        conn_close(b);
        daemon_free(d);
}

/* More requests in one go than photond reads at once (64 KiB): every one is answered, in order, without the
 * client sending anything more to wake photond up. */
Test(locks, a_burst_larger_than_one_read_is_answered_in_order) {
        Daemon *d = daemon_start(NULL);
        Conn *a = conn_open(d);
        size_t n = 1200, size = 0, alloc = n * 128;
        char *buf = malloc(alloc);
        int64_t last = 0;

        cr_assert_not_null(buf);
        for (size_t i = 0; i < n; i++)
                size += snprintf(buf + size, alloc - size, i % 2 == 0 ?
                                 "{\"type\":\"lock\",\"id\":\"r%zu\",\"lockName\":\"burst\",\"sessionId\":\"s\"}\n" :
                                 "{\"type\":\"unlock\",\"id\":\"r%zu\",\"lockName\":\"burst\",\"sessionId\":\"s\"}\n",
                                 i);
        cr_assert_gt(size, 64 * 1024);
        conn_send_raw(a, buf, size);

        for (size_t i = 0; i < n; i++) {
                struct json_object *o = conn_expect(a, 5000);
                char id[32];

                cr_assert_not_null(o, "reply %zu of %zu never came", i, n);
                snprintf(id, sizeof(id), "r%zu", i);
                cr_assert_str_eq(jstr(o, "id"), id);
                cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
                if (i % 2 == 0) {
                        cr_assert_gt(jint(o, "data.fencingToken"), last, "a new acquisition every time");
                        last = jint(o, "data.fencingToken");
                }
                json_object_put(o);
        }
        free(buf);
        conn_close(a);
        daemon_free(d);
}

Test(locks, assign_transfer_shapes_and_increasing_tokens) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        int64_t last = 0, t;

        o = conn_request(c, "1", "{\"type\":\"assign_lock\",\"id\":\"1\",\"lockName\":\"res\",\"lockHolder\":\"h1\"}");
        cr_assert(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.holder"), "h1");
        last = jint(o, "data.fencingToken");
        json_object_put(o);

        expect_same(conn_request(c, "2", "{\"type\":\"assign_lock\",\"id\":\"2\",\"lockName\":\"res\",\"lockHolder\":\"h2\"}"),
                    "{\"type\":\"result\",\"id\":\"2\",\"success\":false,\"data\":{\"acquired\":false,\"lockName\":\"res\","
                    "\"holder\":\"h2\",\"reason\":\"Lock held by another caller\",\"currentHolder\":\"h1\"}}");

        o = conn_request(c, "3", "{\"type\":\"transfer_lock\",\"id\":\"3\",\"lockName\":\"res\",\"lockHolder\":\"h1\"}");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "id"), "3");
        cr_assert_eq(strncmp(jstr(o, "error"), "Invalid request format: lockTransferTo", 38), 0, "%s", jstr(o, "error"));
        json_object_put(o);

        expect_same(conn_request(c, "4", "{\"type\":\"transfer_lock\",\"id\":\"4\",\"lockName\":\"res\",\"lockHolder\":\"h2\","
                                 "\"lockTransferTo\":\"h3\"}"),
                    "{\"type\":\"result\",\"id\":\"4\",\"success\":false,\"data\":{\"transferred\":false,\"lockName\":\"res\","
                    "\"reason\":\"Not the current holder\",\"currentHolder\":\"h1\"}}");

        o = conn_request(c, "5", "{\"type\":\"transfer_lock\",\"id\":\"5\",\"lockName\":\"res\",\"lockHolder\":\"h1\","
                         "\"lockTransferTo\":\"h3\"}");
        cr_assert(jbool(o, "success"));
        cr_assert(jbool(o, "data.transferred"));
        cr_assert_str_eq(jstr(o, "data.from"), "h1");
        cr_assert_str_eq(jstr(o, "data.to"), "h3");
        t = jint(o, "data.fencingToken");
        cr_assert_gt(t, last, "the new holder gets a new token");
        last = t;
        json_object_put(o);

        o = query(c, "6", "res");
        cr_assert_str_eq(jstr(o, "data.holder"), "h3");
        cr_assert_eq(jint(o, "data.fencingToken"), last);
        json_object_put(o);

        /* Every new acquisition, whoever and whatever the name, gets a larger token. */
        for (int i = 0; i < 20; i++) {
                char id[16], name[16], who[16];

                snprintf(id, sizeof(id), "n%d", i);
                snprintf(name, sizeof(name), "k%d", i % 3);
                snprintf(who, sizeof(who), "w%d", i);
                o = conn_request(c, id, "{\"type\":\"lock\",\"id\":\"%s\",\"lockName\":\"%s\",\"sessionId\":\"%s\"}",
                                 id, name, who);
                if (jbool(o, "success")) {
                        t = jint(o, "data.fencingToken");
                        cr_assert_gt(t, last);
                        last = t;
                }
                json_object_put(o);
                o = conn_request(c, id, "{\"type\":\"unlock\",\"id\":\"%s\",\"lockName\":\"%s\",\"lockHolder\":\"%s\"}",
                                 id, name, who);
                json_object_put(o);
        }

        conn_close(c);
        daemon_free(d);
}

static void restart_keeps_lock(int sig) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        int64_t token, acquired, t2;
        char *home;

        token = acquire_ok(c, "1", "survivor", "holder-1", ",\"lockTimeout\":60000");
        o = query(c, "q", "survivor");
        acquired = jint(o, "data.acquiredAt");
        json_object_put(o);
        /* Straight after the reply: the group commit wrote state.json before it left. */
        home = daemon_take_home(d);
        if (sig == SIGKILL) {
                kill(d->pid, SIGKILL);
                cr_assert(daemon_wait_exit(d, 10000) != -1);
        } else {
                int status = daemon_signal_and_wait(d, sig);

                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "photond's exit status %d", status);
        }
        conn_close(c);
        daemon_free(d);

        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        o = query(c, "q2", "survivor");
        cr_assert_str_eq(jstr(o, "data.holder"), "holder-1", "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.acquiredAt"), acquired);
        cr_assert_eq(jint(o, "data.fencingToken"), token);
        json_object_put(o);

        o = lock_req(c, "2", "survivor", "intruder", NULL);
        cr_assert_not(jbool(o, "success"), "still held after the restart");
        json_object_put(o);

        t2 = acquire_ok(c, "3", "fresh", "holder-2", NULL);
        cr_assert_gt(t2, token, "tokens keep increasing across the restart");
        acquire_ok(c, "4", "survivor", "holder-1", NULL);   /* the holder still has it: re-entrant */

        conn_close(c);
        daemon_free(d);
        rm_home(home);
}

Test(locks, restart_keeps_a_live_lock) {
        restart_keeps_lock(SIGTERM);
}

Test(locks, crash_keeps_a_live_lock) {
        restart_keeps_lock(SIGKILL);
}

Test(locks, locks_that_expire_while_down_are_dropped) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        char *home;

        acquire_ok(c, "1", "brief", "h", ",\"lockTimeout\":100");
        acquire_ok(c, "2", "long", "h", ",\"lockTimeout\":60000");
        home = daemon_take_home(d);
        kill(d->pid, SIGKILL);
        cr_assert(daemon_wait_exit(d, 10000) != -1);
        conn_close(c);
        daemon_free(d);

        /* Time passing while photond is down is the condition under test, not a synchronisation. */
        usleep(150 * 1000);

        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        o = conn_request(c, "l", "{\"type\":\"list_locks\",\"id\":\"l\"}");
        cr_assert_eq(json_object_array_length(jget(o, "data.locks")), 1, "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.locks.0.name"), "long");
        json_object_put(o);
        conn_close(c);
        daemon_free(d);
        rm_home(home);
}

Test(locks, corrupt_state_is_kept_aside_and_announced) {
        Daemon *d = daemon_start(NULL);
        char *home = daemon_take_home(d), path[1024];
        Conn *c;
        struct json_object *o;
        glob_t g;
        FILE *f;

        cr_assert(WIFEXITED(daemon_signal_and_wait(d, SIGTERM)));
        daemon_free(d);

        snprintf(path, sizeof(path), "%s/.data/photond/state.json", home);
        f = fopen(path, "we");
        cr_assert(f);
        fputs("{\"version\":1,\"locks\":[{\"name\":", f);
        fclose(f);

        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        snprintf(path, sizeof(path), "%s/.data/photond/state.json.corrupt-*", home);
        cr_assert_eq(glob(path, 0, NULL, &g), 0, "the unreadable file was not kept aside");
        globfree(&g);

        /* The reference's notice, in the replay buffer of the channel system:*, asked for from just before it (it
         * is the only publish; eventIds continue above the marks the journal kept, and an older lastEventId would
         * need a refresh). */
        o = conn_request(c, "s", "{\"type\":\"status\",\"id\":\"s\"}");
        snprintf(path, sizeof(path), "{\"type\":\"get_events_since\",\"id\":\"e\",\"channel\":\"system:*\","
                 "\"lastEventId\":%" PRIi64 "}", jint(o, "data.lastEventId") - 1);
        json_object_put(o);
        o = conn_request(c, "e", "%s", path);
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 1, "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.events.0.message.event"), "locks-reset");
        json_object_put(o);

        /* A client that last saw an event before the restart learns that it missed some, and still gets the
         * notice that says why. */
        o = conn_request(c, "e1", "{\"type\":\"get_events_since\",\"id\":\"e1\",\"channel\":\"system:*\","
                         "\"lastEventId\":1}");
        cr_assert(jbool(o, "data.refreshNeeded"), "%s", json_object_to_json_string(o));
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 1, "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.events.0.message.event"), "locks-reset");
        json_object_put(o);

        /* The token high-water mark was lost with the file: tokens continue above anything issued before. */
        int64_t t = acquire_ok(c, "1", "after-loss", "h", NULL);
        cr_assert_geq(t, (int64_t) 1600000000000LL * 1000, "token %" PRIi64 " could repeat an old one", t);

        conn_close(c);
        daemon_free(d);

        /* A clean restart after that is not a loss: no second notice, tokens continue. */
        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        o = conn_request(c, "e2", "{\"type\":\"get_events_since\",\"id\":\"e2\",\"channel\":\"system:*\",\"lastEventId\":1}");
        cr_assert_eq(json_object_array_length(jget(o, "data.events")), 0, "%s", json_object_to_json_string(o));
        json_object_put(o);
        cr_assert_gt(acquire_ok(c, "2", "later", "h", NULL), t);
        conn_close(c);
        daemon_free(d);
        rm_home(home);
}

/* When the state cannot be written, no reply may promise what a crash would forget: replies wait until the write
 * succeeds (retried each second), then leave, and a crash after that keeps both locks. file is made a directory,
 * which every way of writing it fails (EISDIR), even for root. */
static void replies_wait_while_unwritable(const char *file) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        char *home, cmd[2048];
        int64_t t1, t2;

        t1 = acquire_ok(c, "1", "first", "h1", ",\"lockTimeout\":60000");

        snprintf(cmd, sizeof(cmd), "cd '%s/.data/photond' && rm -f %s %s.tmp && mkdir -p %s/x", d->home, file, file,
                 file);
        cr_assert_eq(system(cmd), 0);

        conn_send(c, "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"second\",\"sessionId\":\"h2\","
                     "\"lockTimeout\":60000}");
        o = conn_recv(c, 500);
        cr_assert_null(o, "a reply left while its lock could not be saved: %s", o ? json_object_to_json_string(o) : "");
        cr_assert(daemon_log_contains(d, "Holding the replies that report changes"), "and the journal says why");
        cr_assert_not_null(daemon_wait_notify(d, "cannot save the state: Is a directory", 5000), "and STATUS=");

        snprintf(cmd, sizeof(cmd), "rm -rf '%s/.data/photond/%s'", d->home, file);
        cr_assert_eq(system(cmd), 0);
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "id"), "2", "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        t2 = jint(o, "data.fencingToken");
        cr_assert_gt(t2, t1);
        json_object_put(o);
        cr_assert(daemon_log_contains(d, "Saved the state"), "the recovery is logged");

        home = daemon_take_home(d);
        crash_and_restart(&d, &c, home);
        expect_held(c, "first", "h1", t1);
        expect_held(c, "second", "h2", t2);
        cr_assert_gt(acquire_ok(c, "3", "third", "h3", NULL), t2, "tokens never repeat");
        conn_close(c);
        daemon_free(d);
        rm_home(home);
}

Test(locks, replies_wait_while_the_state_cannot_be_written) {
        replies_wait_while_unwritable("state.json");
}

Test(locks, replies_wait_while_the_journal_cannot_be_written) {
        replies_wait_while_unwritable("state.journal");
}

/* state.journal truncated or removed by another process while photond runs: the next change notices it before it
 * appends (an append to a file without a name saves nothing, one after a truncation leaves no header) and writes
 * the whole state anew, so a crash right after keeps every lock. */
Test(locks, a_journal_truncated_or_removed_by_another_process_is_written_again) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        char *home, path[1024];
        int64_t t1, t2, t3;

        snprintf(path, sizeof(path), "%s/.data/photond/state.journal", d->home);
        t1 = acquire_ok(c, "1", "first", "h1", ",\"lockTimeout\":60000");
        cr_assert_eq(truncate(path, 0), 0);
        t2 = acquire_ok(c, "2", "second", "h2", ",\"lockTimeout\":60000");
        cr_assert_eq(unlink(path), 0);
        t3 = acquire_ok(c, "3", "third", "h3", ",\"lockTimeout\":60000");
        cr_assert_eq(access(path, F_OK), 0, "state.journal was not written again");

        home = daemon_take_home(d);
        crash_and_restart(&d, &c, home);
        expect_held(c, "first", "h1", t1);
        expect_held(c, "second", "h2", t2);
        expect_held(c, "third", "h3", t3);
        cr_assert_not(daemon_log_contains(d, "starting with no locks"));
        conn_close(c);
        daemon_free(d);
        rm_home(home);
}

/* A file in the state directory (all zeros when there is none). */
static struct stat stat_state(Daemon *d, const char *file) {
        char path[1024];
        struct stat st = {};

        snprintf(path, sizeof(path), "%s/.data/photond/%s", d->home, file);
        if (stat(path, &st) < 0)
                cr_assert_eq(errno, ENOENT, "stat %s", path);
        return st;
}

/* A lock taken while thousands are held writes that lock's change, not the table: state.json stays as it is and
 * state.journal grows by one record. (Before the journal every change rewrote all 5000 locks.) */
Test(locks, a_change_writes_only_that_change_with_thousands_held) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct stat snapshot, journal, st;
        char *home, *batch;
        size_t size = 0;
        FILE *f;

        for (unsigned i = 0; i < 5000; i += 500) {
                f = open_memstream(&batch, &size);
                cr_assert(f);
                for (unsigned j = i; j < i + 500; j++)
                        fprintf(f, "{\"type\":\"lock\",\"id\":\"f%u\",\"lockName\":\"filler-%u\",\"sessionId\":\"filler\","
                                "\"lockTimeout\":3600000}\n", j, j);
                cr_assert_eq(fclose(f), 0);
                conn_send_raw(c, batch, size);
                free(batch);
                for (unsigned j = i; j < i + 500; j++) {
                        struct json_object *o = conn_expect(c, 10000);

                        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
                        json_object_put(o);
                }
        }
        conn_close(c);

        /* After a restart the first write is a new snapshot with an empty journal, so the next one cannot happen to
         * be the one that compacts the journal. */
        home = daemon_take_home(d);
        cr_assert(WIFEXITED(daemon_signal_and_wait(d, SIGTERM)));
        daemon_free(d);
        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        acquire_ok(c, "1", "first", "h", NULL);

        snapshot = stat_state(d, "state.json");
        journal = stat_state(d, "state.journal");
        cr_assert_gt(snapshot.st_size, 400000, "the snapshot holds 5000 locks");
        acquire_ok(c, "2", "second", "h", NULL);
        st = stat_state(d, "state.json");
        cr_assert(st.st_ino == snapshot.st_ino && st.st_size == snapshot.st_size &&
                  st.st_mtim.tv_sec == snapshot.st_mtim.tv_sec && st.st_mtim.tv_nsec == snapshot.st_mtim.tv_nsec,
                  "state.json was rewritten for one lock");
        st = stat_state(d, "state.journal");
        cr_assert_eq(st.st_ino, journal.st_ino);
        cr_assert_gt(st.st_size, journal.st_size, "the change was not written");
        cr_assert_lt(st.st_size - journal.st_size, 300, "more than one lock's record was written");

        /* And it is there after a crash. */
        kill(d->pid, SIGKILL);
        cr_assert(daemon_wait_exit(d, 10000) != -1);
        conn_close(c);
        daemon_free(d);
        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        struct json_object *o = query(c, "q", "second");
        cr_assert_str_eq(jstr(o, "data.holder"), "h", "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = query(c, "q2", "filler-4999");
        cr_assert_str_eq(jstr(o, "data.holder"), "filler", "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_close(c);
        daemon_free(d);
        rm_home(home);
}

Test(locks, waiters_are_served_first_come_first_served) {
        Daemon *d = daemon_start(NULL);
        Conn *owner = conn_open(d), *w[3];
        struct json_object *o;
        int64_t last;
        char id[16], who[16], body[256];

        last = acquire_ok(owner, "0", "q", "owner", NULL);
        for (int i = 0; i < 3; i++) {
                w[i] = conn_open(d);
                snprintf(id, sizeof(id), "w%d", i);
                snprintf(who, sizeof(who), "waiter-%d", i);
                conn_send(w[i], "{\"type\":\"lock\",\"id\":\"%s\",\"lockName\":\"q\",\"sessionId\":\"%s\",\"lockWait\":10000}",
                          id, who);
                sync_conn(w[i], "sync");        /* queued before the next one asks */
        }
        o = conn_request(owner, "s", "{\"type\":\"status\",\"id\":\"s\"}");
        cr_assert_eq(jint(o, "data.lockWaiters"), 3);
        json_object_put(o);

        o = conn_request(owner, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"q\",\"lockHolder\":\"owner\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);

        for (int i = 0; i < 3; i++) {
                snprintf(id, sizeof(id), "w%d", i);
                snprintf(who, sizeof(who), "waiter-%d", i);
                o = conn_expect(w[i], 5000);
                cr_assert_str_eq(jstr(o, "id"), id);
                cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "data.holder"), who);
                cr_assert_gt(jint(o, "data.fencingToken"), last);
                last = jint(o, "data.fencingToken");
                json_object_put(o);

                /* The ones behind are still waiting: asking them proves it without a timed wait. */
                for (int j = i + 1; j < 3; j++) {
                        o = conn_request(w[j], "p", "{\"type\":\"ping\",\"id\":\"p\"}");
                        cr_assert_str_eq(jstr(o, "type"), "pong");
                        json_object_put(o);
                }
                o = query(owner, "qq", "q");
                cr_assert_str_eq(jstr(o, "data.holder"), who);
                json_object_put(o);

                snprintf(body, sizeof(body), "{\"type\":\"unlock\",\"id\":\"r\",\"lockName\":\"q\",\"lockHolder\":\"%s\"}", who);
                o = conn_request(owner, "r", "%s", body);
                cr_assert(jbool(o, "success"));
                json_object_put(o);
        }

        for (int i = 0; i < 3; i++)
                conn_close(w[i]);
        conn_close(owner);
        daemon_free(d);
}

Test(locks, a_wait_that_runs_out_is_refused_like_the_reference) {
        Daemon *d = daemon_start(NULL);
        Conn *owner = conn_open(d), *w = conn_open(d);
        uint64_t start;

        acquire_ok(owner, "0", "busy", "owner", NULL);
        start = mono_ms();
        expect_same(lock_req(w, "1", "busy", "patient", ",\"lockWait\":150"),
                    "{\"type\":\"result\",\"id\":\"1\",\"success\":false,\"data\":{\"acquired\":false,\"lockName\":\"busy\","
                    "\"holder\":\"patient\",\"reason\":\"Lock held by another client\"}}");
        cr_assert_geq(mono_ms() - start, 145);
        expect_same(conn_request(w, "2", "{\"type\":\"assign_lock\",\"id\":\"2\",\"lockName\":\"busy\",\"lockHolder\":\"p2\","
                                 "\"lockWait\":50}"),
                    "{\"type\":\"result\",\"id\":\"2\",\"success\":false,\"data\":{\"acquired\":false,\"lockName\":\"busy\","
                    "\"holder\":\"p2\",\"reason\":\"Lock held by another caller\",\"currentHolder\":\"owner\"}}");

        struct json_object *o = lock_req(w, "3", "busy", "x", ",\"lockWait\":300001");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "id"), "3");
        json_object_put(o);

        conn_close(owner);
        conn_close(w);
        daemon_free(d);
}

Test(locks, a_disconnected_waiter_leaves_the_queue) {
        Daemon *d = daemon_start(NULL);
        Conn *owner = conn_open(d), *gone = conn_open(d), *stays = conn_open(d);
        struct json_object *o;

        acquire_ok(owner, "0", "q", "owner", NULL);
        conn_send(gone, "{\"type\":\"lock\",\"id\":\"g\",\"lockName\":\"q\",\"sessionId\":\"gone\",\"lockWait\":10000}");
        sync_conn(gone, "s1");
        conn_send(stays, "{\"type\":\"lock\",\"id\":\"s\",\"lockName\":\"q\",\"sessionId\":\"stays\",\"lockWait\":10000}");
        sync_conn(stays, "s2");
        conn_close(gone);

        /* The close reaches the daemon on its own schedule: poll the waiter count (each poll a round trip) with a
         * deadline. */
        uint64_t deadline = mono_ms() + 5000;
        for (;;) {
                o = conn_request(owner, "st", "{\"type\":\"status\",\"id\":\"st\"}");
                int64_t n = jint(o, "data.lockWaiters");
                json_object_put(o);
                if (n == 1)
                        break;
                cr_assert(mono_ms() < deadline, "the gone waiter is still queued");
        }

        o = conn_request(owner, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"q\",\"lockHolder\":\"owner\"}");
        json_object_put(o);
        o = conn_expect(stays, 5000);
        cr_assert_str_eq(jstr(o, "id"), "s");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        o = query(owner, "q", "q");
        cr_assert_str_eq(jstr(o, "data.holder"), "stays");
        json_object_put(o);

        conn_close(owner);
        conn_close(stays);
        daemon_free(d);
}

Test(locks, caps_are_clear_errors) {
        static const char *const env[] = { "PHOTOND_MAX_LOCKS=2", "PHOTOND_MAX_LOCK_NAME_BYTES=8", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d);
        struct json_object *o;

        acquire_ok(c, "1", "a", "h", NULL);
        acquire_ok(c, "2", "b", "h", NULL);
        o = lock_req(c, "3", "c", "h", NULL);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "id"), "3");
        cr_assert(strstr(jstr(o, "error"), "PHOTOND_MAX_LOCKS"), "%s", jstr(o, "error"));
        json_object_put(o);

        o = lock_req(c, "4", "name-too-long", "h", NULL);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "PHOTOND_MAX_LOCK_NAME_BYTES"), "%s", jstr(o, "error"));
        json_object_put(o);

        conn_close(c);
        daemon_free(d);
}

Test(locks, photonctl_lock_unlock_locks) {
        Daemon *d = daemon_start(NULL);
        char *out = NULL;

        cr_assert_eq(run_ctl(d, &out, "lock", "deploy", "--holder", "me", "--timeout", "60000", NULL), 0);
        cr_assert(strstr(out, "Acquired lock 'deploy' as 'me'"), "%s", out);
        free(out);
        cr_assert_eq(run_ctl(d, NULL, "lock", "deploy", "--holder", "you", NULL), 1);
        cr_assert_eq(run_ctl(d, &out, "locks", NULL), 0);
        cr_assert(strstr(out, "deploy") && strstr(out, "me"), "%s", out);
        free(out);
        cr_assert_eq(run_ctl(d, NULL, "unlock", "deploy", "--holder", "you", NULL), 1);
        cr_assert_eq(run_ctl(d, NULL, "unlock", "deploy", "--holder", "me", NULL), 0);
        cr_assert_eq(run_ctl(d, &out, "locks", NULL), 0);
        cr_assert(strstr(out, "No locks held"), "%s", out);
        free(out);
        daemon_free(d);
}

Test(locks, photonctl_with_lock_holds_refreshes_and_passes_the_exit_status) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        char script[2048], marker[1024];

        /* The command outlives the 300 ms timeout twice over and checks that the lock is still its own. */
        snprintf(script, sizeof(script),
                 "sleep 0.7; '%s' --socket '%s' --json locks | grep -q \"\\\"holder\\\":\\\"$PHOTON_LOCK_HOLDER\\\"\" "
                 "|| exit 99; test \"$PHOTON_LOCK_NAME\" = job -a -n \"$PHOTON_LOCK_TOKEN\" || exit 98; exit 7",
                 photonctl_binary(), d->socket_path);
        cr_assert_eq(run_ctl(d, NULL, "with-lock", "job", "--timeout", "300", "--", "sh", "-c", script, NULL), 7);
        expect_same(query(c, "q", "job"),
                    "{\"type\":\"result\",\"id\":\"q\",\"success\":true,\"data\":{\"lockName\":\"job\",\"holder\":null}}");

        /* Held by someone else: the command does not run. */
        acquire_ok(c, "1", "job", "other", NULL);
        snprintf(marker, sizeof(marker), "%s/ran", d->home);
        snprintf(script, sizeof(script), "touch '%s'", marker);
        cr_assert_eq(run_ctl(d, NULL, "with-lock", "job", "--", "sh", "-c", script, NULL), 1);
        cr_assert_neq(access(marker, F_OK), 0, "the command ran without the lock");

        /* With --wait it runs once the lock frees (here: when its 200 ms run out). */
        o = conn_request(c, "2", "{\"type\":\"transfer_lock\",\"id\":\"2\",\"lockName\":\"job\",\"lockHolder\":\"other\","
                         "\"lockTransferTo\":\"other\",\"lockTimeout\":200}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        cr_assert_eq(run_ctl(d, NULL, "with-lock", "--wait", "5000", "job", "sh", "-c", script, NULL), 0);
        cr_assert_eq(access(marker, F_OK), 0);

        conn_close(c);
        daemon_free(d);
}
