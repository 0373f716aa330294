/* SPDX-License-Identifier: MIT */

/* photond's state writes against a real photond when the machine runs short: of file descriptors (RLIMIT_NOFILE
 * with more connections than it allows) and of disk space (a small tmpfs as the state directory). Replies that
 * acknowledge a change wait until it is on disk; nothing else waits, and photond recovers by itself. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static void ping_ok(Conn *c, const char *id) {
        struct json_object *o = conn_request(c, id, "{\"type\":\"ping\",\"id\":\"%s\"}", id);

        cr_assert_str_eq(jstr(o, "type"), "pong", "%s", json_object_to_json_string(o));
        json_object_put(o);
}

/* The generation of the last snapshot (state.json): one more for every compaction. */
static int64_t snapshot_generation(Daemon *d) {
        struct json_object *o;
        char path[1024];
        int64_t g;

        snprintf(path, sizeof(path), "%s/.data/photond/state.json", d->home);
        o = json_object_from_file(path);
        cr_assert_not_null(o, "%s", path);
        g = jint(o, "journalGeneration");
        json_object_put(o);
        return g;
}

/* Rounds of 100 locks with 1,000-byte holders, then their unlocks, each followed by a ping that must come back
 * (changes of one batch are written together, so a lock and its unlock must not share one): every 9 rounds or so
 * fill the 1 MiB the journal may grow to (a compaction), every 1024 acquires use up a block of fencing tokens (a
 * synced write). Returns the last token. */
static int64_t churn_locks(Conn *c, unsigned rounds) {
        char holder[1001], id[32];
        struct json_object *o;
        int64_t token;

        memset(holder, 'h', sizeof(holder) - 1);
        holder[sizeof(holder) - 1] = '\0';
        for (unsigned r = 0; r < rounds; r++) {
                for (unsigned i = 0; i < 100; i++)
                        conn_send(c, "{\"type\":\"lock\",\"id\":\"l%u\",\"lockName\":\"churn-%u\","
                                  "\"sessionId\":\"%s\"}", i, i, holder);
                snprintf(id, sizeof(id), "locked-%u", r);
                ping_ok(c, id);
                for (unsigned i = 0; i < 100; i++)
                        conn_send(c, "{\"type\":\"unlock\",\"id\":\"u%u\",\"lockName\":\"churn-%u\","
                                  "\"sessionId\":\"%s\"}", i, i, holder);
                snprintf(id, sizeof(id), "unlocked-%u", r);
                ping_ok(c, id);
        }
        o = conn_request(c, "last",
                         "{\"type\":\"lock\",\"id\":\"last\",\"lockName\":\"churn\",\"sessionId\":\"x\"}");
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        token = jint(o, "data.fencingToken");
        json_object_put(o);
        return token;
}

/* More connections than RLIMIT_NOFILE allows, then compactions and raised fencing marks: every reply still
 * comes back, the connections beyond the limit are refused (the default cap, fitted to the limit) or wait in the
 * backlog (an administrator's larger cap) until clients leave. (Before, the first raised mark after a compaction
 * needed a new descriptor for the directory, and every reply to every client waited until all extra connections
 * had closed.) */
static void replies_flow_at_the_file_limit(bool explicit_cap) {
        enum { NOFILE = 64, N = 100 };
        Daemon *d = daemon_start(&(DaemonOptions) {
                .nofile = NOFILE,
                .env = explicit_cap ? (const char*[]) { "PHOTOND_MAX_CLIENTS=1000", NULL } : NULL });
        Conn *conns[N];
        struct json_object *o;
        int64_t generation;
        int64_t token;

        conns[0] = conn_open(d);
        ping_ok(conns[0], "first");
        generation = snapshot_generation(d);
        for (int i = 1; i < N; i++)
                conns[i] = conn_open(d);   /* the backlog takes them even when photond cannot */

        if (explicit_cap) {
                /* Some of them make photond run out of descriptors. */
                cr_assert(daemon_log_contains(d, "does not fit RLIMIT_NOFILE=64"));
                ping_ok(conns[1], "second");
                cr_assert_null(conn_recv(conns[N - 1], 300), "no descriptor for the last connection");
                cr_assert(daemon_log_contains(d, "pausing"));
        } else {
                /* 64 - 32 kept for photond: the 33rd client and later are refused at once. */
                cr_assert(daemon_log_contains(d, "accepting at most 32 clients"));
                o = conn_expect(conns[N - 1], 5000);
                cr_assert(strstr(jstr(o, "error"), "Too many clients connected: at most "), "%s", jstr(o, "error"));
                json_object_put(o);
                cr_assert(conn_wait_eof(conns[N - 1], 5000));
                cr_assert_not(daemon_log_contains(d, "pausing"), "photond never ran out of descriptors");
        }

        token = churn_locks(conns[0], 22);
        cr_assert_gt(token, 2048, "two blocks of fencing tokens used up");
        cr_assert_geq(snapshot_generation(d), generation + 2, "the journal was compacted twice");
        ping_ok(conns[1], "other-client");
        cr_assert_not(daemon_log_contains(d, "Failed to save the state"));

        /* Clients leaving make room: a waiting connection is served, a new one too. */
        for (int i = 1; i < N - 1; i++)
                conn_close(conns[i]);
        if (explicit_cap)
                ping_ok(conns[N - 1], "waited");
        conn_close(conns[N - 1]);
        conns[1] = conn_open(d);
        ping_ok(conns[1], "new");
        o = conn_request(conns[1], "s", "{\"type\":\"status\",\"id\":\"s\"}");
        cr_assert_eq(jint(o, "data.clients"), 2, "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(conns[1]);
        conn_close(conns[0]);
        daemon_free(d);
}

Test(state, replies_flow_at_the_file_limit_with_the_default_cap) {
        replies_flow_at_the_file_limit(false);
}

Test(state, replies_flow_at_the_file_limit_with_a_cap_above_it) {
        replies_flow_at_the_file_limit(true);
}

/* ---- a small state file system ---- */

/* A PHOTON_HOME whose state directory is a tmpfs of size (mount's size=), mounted in a mount namespace of this
 * test's own: the mount ends with the test process and its photond, whatever the outcome. Skips where mounting is
 * not permitted (the package build runs the suite unprivileged). */
static char* home_on_small_fs(const char *size) {
        char tmpl[] = "/tmp/photond-test-XXXXXX", path[256], opts[64];

        cr_assert_not_null(mkdtemp(tmpl));
        snprintf(path, sizeof(path), "%s/.data", tmpl);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/.data/photond", tmpl);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", path, "tmpfs", 0, opts) < 0) {
                int e = errno;
                char cmd[300];

                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
                (void) !system(cmd);
                cr_skip_test("cannot mount a small tmpfs as the state directory (%s): needs CAP_SYS_ADMIN",
                             strerror(e));
        }
        return strdup(tmpl);
}

static void home_remove(char *home) {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "%s/.data/photond", home);
        (void) umount2(cmd, MNT_DETACH);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
        (void) !system(cmd);
        free(home);
}

static bool state_file_exists(const char *home, const char *name) {
        char path[512];

        snprintf(path, sizeof(path), "%s/.data/photond/%s", home, name);
        return access(path, F_OK) == 0;
}

/* Fills the file system of the state directory with a file of its own, name; returns its path. */
static char* fill_state_fs(const char *home, const char *name, size_t max) {
        static char block[4096];
        size_t written = 0;
        char *path;
        int fd;

        cr_assert(asprintf(&path, "%s/.data/photond/%s", home, name) > 0);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        while (written < max) {
                ssize_t n = write(fd, block, sizeof(block));

                written += n > 0 ? (size_t) n : 0;
                if (n < 0) {
                        cr_assert_eq(errno, ENOSPC, "filling: %m");
                        break;
                }
                /* The last page may be taken in part. */
                if (n < (ssize_t) sizeof(block) && write(fd, block, sizeof(block) - n) < 0)
                        break;
        }
        cr_assert_eq(close(fd), 0);
        return path;
}

static struct json_object* lock_as(Conn *c, const char *id, const char *name, const char *holder) {
        conn_send(c, "{\"type\":\"lock\",\"id\":\"%s\",\"lockName\":\"%s\",\"sessionId\":\"%s\","
                  "\"lockTimeout\":600000}", id, name, holder);
        return conn_recv(c, 300);
}

static void expect_reply(struct json_object *o, const char *id, const char *key) {
        cr_assert_not_null(o, "no reply to %s", id);
        cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, key), "%s", json_object_to_json_string(o));
        json_object_put(o);
}

/* The journal fills the small file system (it would be compacted only past 1 MiB): the write that fails with
 * ENOSPC compacts in the space photond reserved for that, and every change is acknowledged without a stall.
 * (Before, every reply waited until an administrator freed space.) */
Test(state, a_journal_that_fills_the_disk_is_compacted) {
        char *home = home_on_small_fs("384k"), holder[1001], id[32], name[32];
        Daemon *d = daemon_start(&(DaemonOptions) { .home = home });
        Conn *c = conn_open(d);
        int64_t generation = snapshot_generation(d);

        cr_assert(state_file_exists(home, "state.reserve"), "room for a compaction is reserved at start");
        memset(holder, 'h', sizeof(holder) - 1);
        holder[sizeof(holder) - 1] = '\0';
        /* About 33 KiB of journal a round: 20 rounds write 1.7 times the file system's size. */
        for (unsigned r = 0; r < 20; r++) {
                for (unsigned i = 0; i < 30; i++)
                        conn_send(c, "{\"type\":\"lock\",\"id\":\"l%u-%u\",\"lockName\":\"n%u\","
                                  "\"sessionId\":\"%s\"}", r, i, i, holder);
                for (unsigned i = 0; i < 30; i++) {
                        snprintf(id, sizeof(id), "l%u-%u", r, i);
                        expect_reply(conn_expect(c, 5000), id, "data.acquired");
                }
                for (unsigned i = 0; i < 30; i++) {
                        snprintf(name, sizeof(name), "n%u", i);
                        conn_send(c, "{\"type\":\"unlock\",\"id\":\"u%u\",\"lockName\":\"%s\","
                                  "\"sessionId\":\"%s\"}", i, name, holder);
                }
                for (unsigned i = 0; i < 30; i++) {
                        snprintf(id, sizeof(id), "u%u", i);
                        expect_reply(conn_expect(c, 5000), id, "data.released");
                }
        }
        cr_assert(daemon_log_contains(d, "compacting the state in the space reserved"));
        cr_assert_not(daemon_log_contains(d, "Failed to save the state"));
        cr_assert_gt(snapshot_generation(d), generation);
        cr_assert(state_file_exists(home, "state.reserve"), "and reserved again");

        conn_close(c);
        daemon_free(d);
        home_remove(home);
}

/* A file system full for good (other files took the space): the change waits, unacknowledged; requests that
 * change nothing are answered, status says why the state cannot be written; a client's own replies stay in
 * order; once space is freed everything resumes, and the change acknowledged is kept across a crash. The space
 * freed first, 16 KiB, is far less than a snapshot of the locks held: the changes are appended to the journal
 * (before, every retry wrote a whole snapshot, and the replies waited for more space or the locks to expire). */
Test(state, a_full_disk_holds_only_what_reports_a_change) {
        char *home = home_on_small_fs("256k"), *filler, *small, holder[1001], id[32], name[32];
        Daemon *d = daemon_start(&(DaemonOptions) { .home = home });
        Conn *c = conn_open(d), *health = conn_open(d), *other = conn_open(d);
        struct json_object *o;
        const char *held = NULL;
        unsigned i;

        memset(holder, 'h', sizeof(holder) - 1);
        holder[sizeof(holder) - 1] = '\0';
        ping_ok(c, "c0");
        ping_ok(health, "h0");
        ping_ok(other, "o0");
        small = fill_state_fs(home, "small", 16 * 1024);
        filler = fill_state_fs(home, "filler", SIZE_MAX);

        /* The journal's last page and the reserve take some locks; then nothing does. */
        for (i = 0; i < 400 && !held; i++) {
                snprintf(id, sizeof(id), "full-%u", i);
                snprintf(name, sizeof(name), "full-%u", i);
                o = lock_as(c, id, name, holder);
                if (!o)
                        held = id;
                else
                        expect_reply(o, id, "data.acquired");
        }
        cr_assert_not_null(held, "the file system never filled up");
        cr_assert(daemon_log_contains(d, "No space left on device"));

        /* A health check is answered and sees why. */
        ping_ok(health, "h1");
        o = conn_request(health, "s", "{\"type\":\"status\",\"id\":\"s\"}");
        cr_assert_not(jbool(o, "data.stateWrite.ok"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.stateWrite.error"), "No space left on device");
        cr_assert_gt(jint(o, "data.stateWrite.since"), 1600000000000LL);
        json_object_put(o);
        cr_assert_not_null(daemon_wait_notify(d, "cannot save the state: No space left on device", 5000),
                           "systemctl status says it too");
        o = conn_request(health, "q", "{\"type\":\"list_locks\",\"id\":\"q\"}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        /* Another change waits too; the holder's ping waits behind its lock's reply. */
        o = lock_as(other, "o1", "other", "o");
        cr_assert_null(o, "a change was acknowledged on a full disk: %s", json_object_to_json_string(o));
        conn_send(c, "{\"type\":\"ping\",\"id\":\"after\"}");
        o = conn_recv(c, 300);
        cr_assert_null(o, "a reply overtook the held one: %s", json_object_to_json_string(o));
        ping_ok(health, "h2");

        /* Some space comes back: the held replies leave, in order, within the retry's second. */
        cr_assert_eq(unlink(small), 0);
        expect_reply(conn_expect(c, 5000), held, "data.acquired");
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "id"), "after", "%s", json_object_to_json_string(o));
        json_object_put(o);
        expect_reply(conn_expect(other, 5000), "o1", "data.acquired");
        o = conn_request(health, "s2", "{\"type\":\"status\",\"id\":\"s2\"}");
        cr_assert(jbool(o, "data.stateWrite.ok"), "%s", json_object_to_json_string(o));
        cr_assert_not(jhas(o, "data.stateWrite.error"));
        json_object_put(o);

        /* What was acknowledged survives a crash. */
        cr_assert_eq(unlink(filler), 0);
        kill(d->pid, SIGKILL);
        cr_assert_neq(daemon_wait_exit(d, 10000), -1);
        conn_close(c);
        conn_close(health);
        conn_close(other);
        daemon_free(d);
        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        o = conn_request(c, "q2", "{\"type\":\"query_lock\",\"id\":\"q2\",\"lockName\":\"%s\"}", held);
        cr_assert_str_eq(jstr(o, "data.holder"), holder, "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_request(c, "q3", "{\"type\":\"query_lock\",\"id\":\"q3\",\"lockName\":\"other\"}");
        cr_assert_str_eq(jstr(o, "data.holder"), "o", "%s", json_object_to_json_string(o));
        json_object_put(o);

        free(filler);
        free(small);
        conn_close(c);
        daemon_free(d);
        home_remove(home);
}
