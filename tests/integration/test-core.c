/* SPDX-License-Identifier: MIT */

/* The foundation against a real photond: both ways of starting, readiness, framing over the wire, errors,
 * many connections, fd exhaustion, graceful shutdown. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <sched.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "macro.h"

static void ping_ok(Conn *c, const char *id) {
        char req[128];
        struct json_object *o;

        snprintf(req, sizeof(req), "{\"type\":\"ping\",\"id\":\"%s\"}", id);
        o = conn_request(c, id, "%s", req);
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);
}

Test(core, self_bound_ping_status_shutdown) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        struct stat st;

        ping_ok(c, "p1");

        o = conn_request(c, "s1", "{\"type\":\"status\",\"id\":\"s1\",\"sessionId\":\"sess-a\"}");
        cr_assert_str_eq(jstr(o, "type"), "result");
        cr_assert(jbool(o, "success"));
        cr_assert(json_object_is_type(jget(o, "data.uptime"), json_type_double));
        cr_assert(jint(o, "data.memoryMB") >= 0);
        cr_assert_eq(jint(o, "data.sessions"), 1);
        cr_assert_eq(jint(o, "data.subscriptions"), 0);
        cr_assert_eq(jint(o, "data.photonsLoaded"), 0);
        cr_assert_eq(jint(o, "data.pid"), d->pid);
        cr_assert_eq(jint(o, "data.clients"), 1);
        cr_assert_not_null(jstr(o, "data.version"));
        cr_assert(json_object_is_type(jget(o, "data.capabilities"), json_type_array));
        json_object_put(o);

        /* The reference path, a private directory and a private socket. */
        cr_assert_eq(stat(d->socket_path, &st), 0);
        cr_assert(S_ISSOCK(st.st_mode));
        cr_assert_eq(st.st_mode & 0777, 0600);
        char *dir = strdup(d->socket_path);
        *strrchr(dir, '/') = '\0';
        cr_assert_eq(stat(dir, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0700);
        free(dir);

        o = conn_request(c, "x1", "{\"type\":\"shutdown\",\"id\":\"x1\"}");
        /* conn_request skips the broadcast; it must have come first (the reference's order). */
        cr_assert_str_eq(jstr(o, "type"), "result");
        cr_assert_str_eq(jstr(o, "data.message"), "Shutting down");
        json_object_put(o);

        int status = daemon_wait_exit(d, 5000);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        cr_assert_neq(access(d->socket_path, F_OK), 0, "a self-bound socket is removed on exit");
        conn_close(c);
        daemon_free(d);
}

Test(core, shutdown_broadcast_precedes_result) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;

        conn_send(c, "{\"type\":\"shutdown\",\"id\":\"x1\"}");
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "shutdown");
        cr_assert_str_eq(jstr(o, "id"), "daemon-shutdown");
        cr_assert_str_eq(jstr(o, "reason"), "daemon-shutting-down");
        json_object_put(o);
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "result");
        cr_assert_str_eq(jstr(o, "id"), "x1");
        json_object_put(o);
        cr_assert(conn_wait_eof(c, 5000));
        conn_close(c);
        daemon_free(d);
}

/* Requests that arrive after shutdown began (here: in the same read) get the reference's error; ping still pongs. */
Test(core, requests_during_shutdown_get_the_reference_error) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        bool got_error = false, got_pong = false;

        /* One write, final newline included: photond reads it in one go (it exits once its output is flushed, so
         * a line completed by a later write might never be read). */
        static const char batch[] = "{\"type\":\"shutdown\",\"id\":\"s1\"}\n{\"type\":\"list_locks\",\"id\":\"late\"}\n"
                                    "{\"type\":\"ping\",\"id\":\"late-ping\"}\n";
        conn_send_raw(c, batch, sizeof(batch) - 1);
        while ((o = conn_recv(c, 5000))) {
                if (streq_ptr(jstr(o, "id"), "late")) {
                        cr_assert_str_eq(jstr(o, "type"), "error");
                        cr_assert_str_eq(jstr(o, "error"), "Daemon is shutting down");
                        cr_assert_str_eq(jstr(o, "suggestion"), "Retry after the daemon restarts");
                        got_error = true;
                } else if (streq_ptr(jstr(o, "id"), "late-ping")) {
                        cr_assert_str_eq(jstr(o, "type"), "pong");
                        got_pong = true;
                }
                json_object_put(o);
        }
        cr_assert(got_error, "list_locks after shutdown got the shutdown error");
        cr_assert(got_pong, "ping after shutdown got pong");
        conn_close(c);
        cr_assert_eq(daemon_wait_exit(d, 5000), 0);
        daemon_free(d);
}

Test(core, socket_activated_photonctl_ping) {
        Daemon *d = daemon_start(&(DaemonOptions) { .socket_activate = true });
        char *out = NULL;

        /* photonctl's connection is what makes systemd-socket-activate start photond. */
        cr_assert_eq(run_ctl(d, &out, "ping", NULL), 0);
        cr_assert_str_eq(out, "pong\n");
        free(out);
        daemon_wait_ready(d);

        cr_assert_eq(run_ctl(d, &out, "--json", "status", NULL), 0);
        cr_assert(strstr(out, "\"type\":\"result\""), "%s", out);
        free(out);

        cr_assert(daemon_log_contains(d, "passed by systemd"));
        int status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        cr_assert_eq(access(d->socket_path, F_OK), 0, "a socket passed by systemd is never unlinked");
        daemon_free(d);
}

Test(core, unknown_passed_fd_is_closed_with_a_warning) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .socket_activate = true, .webhook = true, .fdnames = "bogus:control" });
        Conn *c = conn_open(d);

        ping_ok(c, "p");
        daemon_wait_ready(d);
        cr_assert(daemon_log_contains(d, "unexpected name 'bogus'"));
        conn_close(c);
        daemon_free(d);
}

Test(core, pid_and_owner_files) {
        /* A quote and a backslash in the path: the owner file must still be JSON. */
        char home[] = "/tmp/photond-q\"b\\-XXXXXX";
        char path[512], buf[512], expect[64];

        cr_assert_not_null(mkdtemp(home));
        Daemon *d = daemon_start(&(DaemonOptions) { .home = home });
        FILE *f;
        size_t n;

        snprintf(path, sizeof(path), "%s/.data/daemon.pid", d->home);
        f = fopen(path, "re");
        cr_assert(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        snprintf(expect, sizeof(expect), "%d", (int) d->pid);
        cr_assert_str_eq(buf, expect, "the pid, no newline");

        snprintf(path, sizeof(path), "%s/.data/daemon.owner.json", d->home);
        f = fopen(path, "re");
        cr_assert(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        struct json_object *o = json_tokener_parse(buf);
        cr_assert(o);
        cr_assert_eq(jint(o, "pid"), d->pid);
        cr_assert_str_eq(jstr(o, "socketPath"), d->socket_path);
        cr_assert(jint(o, "claimedAt") > 1600000000000LL);
        json_object_put(o);

        daemon_signal_and_wait(d, SIGINT);
        cr_assert_neq(access(path, F_OK), 0, "owner file removed on exit");
        snprintf(path, sizeof(path), "%s/.data/daemon.pid", d->home);
        cr_assert_neq(access(path, F_OK), 0, "pid file removed on exit");
        daemon_free(d);
        snprintf(path, sizeof(path), "rm -rf '%s'", home);
        (void) !system(path);
}

Test(core, second_daemon_refuses_and_stale_socket_is_replaced) {
        Daemon *d = daemon_start(NULL);
        char *home = daemon_take_home(d);
        char cmd[1024];
        int status;

        snprintf(cmd, sizeof(cmd), "PHOTON_HOME='%s' '%s' --bus=none 2>'%s/second.log'", home, photond_binary(), home);
        status = system(cmd);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "a second daemon exits with 2, got %d", status);
        snprintf(cmd, sizeof(cmd), "grep -q 'already answering' '%s/second.log'", home);
        cr_assert_eq(system(cmd), 0, "and says why");

        /* SIGKILL leaves the socket file behind; the next start must replace it. */
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
        char sock[512];
        snprintf(sock, sizeof(sock), "%s/.data/daemon.sock", home);
        cr_assert_eq(access(sock, F_OK), 0);
        daemon_free(d);

        d = daemon_start(&(DaemonOptions) { .home = home });
        Conn *c = conn_open(d);
        ping_ok(c, "after-stale");
        conn_close(c);
        daemon_free(d);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
        (void) !system(cmd);
        free(home);
}

Test(core, invalid_limit_refuses_start_and_names_the_variable) {
        char home[] = "/tmp/photond-limit-XXXXXX", cmd[1024];
        int status;

        cr_assert_not_null(mkdtemp(home));
        snprintf(cmd, sizeof(cmd), "PHOTON_HOME='%s' PHOTOND_HANDLER_TIMEOUT_MS=0 '%s' --bus=none 2>'%s/err.log'",
                 home, photond_binary(), home);
        status = system(cmd);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "photond refuses to start, got %d", status);
        snprintf(cmd, sizeof(cmd), "grep -q 'PHOTOND_HANDLER_TIMEOUT_MS=0' '%s/err.log'", home);
        cr_assert_eq(system(cmd), 0, "the error names the variable and its value");
        snprintf(cmd, sizeof(cmd), "test ! -e '%s/.data/daemon.sock'", home);
        cr_assert_eq(system(cmd), 0, "and nothing listens");
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
        (void) !system(cmd);
}

/* PHOTON_DAEMON_IDLE_TIMEOUT_MS counts from the last activity, not in fixed periods from the start: a client that
 * stays longer than the timeout and then leaves gives photond a whole timeout more. (The waits here are the
 * scenario, not synchronisation.) */
Test(core, idle_timeout_counts_from_the_last_disconnect) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTON_DAEMON_IDLE_TIMEOUT_MS=1000", NULL } });
        Conn *c = conn_open(d);
        uint64_t closed;
        int status;

        ping_ok(c, "held-1");
        usleep(1500 * 1000);
        ping_ok(c, "held-2");
        conn_close(c);
        closed = mono_ms();

        status = daemon_wait_exit(d, 10000);
        cr_assert(status >= 0, "photond exits when idle");
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "cleanly, got %d", status);
        cr_assert_geq(mono_ms() - closed, 990, "not before a whole timeout after the last client left (%" PRIu64 " ms)",
                      mono_ms() - closed);
        daemon_free(d);
}

Test(core, errors_echo_ids_and_keep_reference_prefixes) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;

        conn_send(c, "not json");
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "id"), "unknown");
        cr_assert(strncmp(jstr(o, "error"), "Invalid JSON", 12) == 0);
        json_object_put(o);

        conn_send(c, "{\"type\":\"ping\",\"id\":7}");
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "id"), "unknown");
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: id must be a string");
        json_object_put(o);

        o = conn_request(c, "u1", "{\"type\":\"frobnicate\",\"id\":\"u1\"}");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: unknown type 'frobnicate'");
        json_object_put(o);

        o = conn_request(c, "u2", "{\"type\":\"lock\",\"id\":\"u2\"}");
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: lockName is missing");
        json_object_put(o);

        o = conn_request(c, "u3", "{\"type\":\"reload\",\"id\":\"u3\",\"photonPath\":\"/x\"}");
        cr_assert_str_eq(jstr(o, "error"), "Not supported by photond: reload");
        json_object_put(o);

        /* The connection survives all of that. */
        ping_ok(c, "still-here");
        conn_close(c);
        daemon_free(d);
}

/* The four cases of issue 15: a NUL byte in a name made it a shorter name. Each is refused now, over the socket,
 * and none acted on the shorter name. */
Test(core, nul_in_names_and_ids_is_refused) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;

        /* "a\u0000x" and "a\u0000y" were both the lock "a". */
        o = conn_request(c, "n1", "{\"type\":\"lock\",\"id\":\"n1\",\"lockName\":\"a\\u0000x\",\"sessionId\":\"s1\"}");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: lockName must not contain a NUL character");
        json_object_put(o);
        o = conn_request(c, "n2", "{\"type\":\"lock\",\"id\":\"n2\",\"lockName\":\"a\\u0000y\",\"sessionId\":\"s2\"}");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_request(c, "n3", "{\"type\":\"query_lock\",\"id\":\"n3\",\"lockName\":\"a\"}");
        cr_assert(json_object_is_type(jget(o, "data.holder"), json_type_null), "%s", json_object_to_json_string(o));
        json_object_put(o);

        /* "owner\u0000other" released owner's lock. */
        o = conn_request(c, "n4", "{\"type\":\"lock\",\"id\":\"n4\",\"lockName\":\"b\",\"sessionId\":\"owner\"}");
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_request(c, "n5", "{\"type\":\"unlock\",\"id\":\"n5\",\"lockName\":\"b\",\"lockHolder\":\"owner\\u0000other\"}");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: lockHolder must not contain a NUL character");
        json_object_put(o);
        o = conn_request(c, "n6", "{\"type\":\"query_lock\",\"id\":\"n6\",\"lockName\":\"b\"}");
        cr_assert_str_eq(jstr(o, "data.holder"), "owner", "%s", json_object_to_json_string(o));
        json_object_put(o);

        /* "x\u0000y" was answered as "x": now it is not echoed at all. */
        conn_send(c, "{\"type\":\"ping\",\"id\":\"x\\u0000y\"}");
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "id"), "unknown");
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: id must not contain a NUL character");
        json_object_put(o);

        /* "p\u0000/../../evil" passed the name check as "p". */
        o = conn_request(c, "n7", "{\"type\":\"command\",\"id\":\"n7\",\"photonName\":\"p\\u0000/../../evil\","
                         "\"method\":\"m\"}");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "error"), "Invalid request format: photonName must not contain a NUL character");
        json_object_put(o);

        /* A NUL in a message is data: it arrives as sent. */
        Conn *sub = conn_open(d);
        o = conn_request(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"nul:c\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        o = conn_request(c, "n8", "{\"type\":\"publish\",\"id\":\"n8\",\"channel\":\"nul:c\",\"message\":\"a\\u0000b\"}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        cr_assert_eq(json_object_get_string_len(jget(o, "message")), 3);
        cr_assert(memcmp(json_object_get_string(jget(o, "message")), "a\0b", 3) == 0);
        json_object_put(o);

        ping_ok(c, "still-here");
        conn_close(sub);
        conn_close(c);
        daemon_free(d);
}

/* The error of one mistake reads the same whatever request makes it (issue 15): here every request type that takes
 * the name gets the bad value, and all answers must be the same text. */
static void expect_one_wording(Conn *c, const char *what, const char *const *requests, const char *expected) {
        for (size_t i = 0; requests[i]; i++) {
                struct json_object *o;
                char id[32];

                snprintf(id, sizeof(id), "w%zu", i);
                o = conn_request(c, id, "{\"id\":\"%s\",%s}", id, requests[i]);
                cr_assert_str_eq(jstr(o, "type"), "error", "%s: %s", requests[i], json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "error"), expected, "%s (%s)", what, requests[i]);
                json_object_put(o);
        }
}

#define RULE "1-64 characters of A-Z a-z 0-9 . _ -, not starting with a dot"

Test(core, each_mistake_is_worded_once_across_request_types) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_LOCK_NAME_BYTES=4", "PHOTOND_MAX_LOCK_HOLDER_BYTES=4", NULL } });
        Conn *c = conn_open(d);

        expect_one_wording(c, "photonName", (const char*[]) {
                "\"type\":\"command\",\"photonName\":\"../x\",\"method\":\"m\"",
                "\"type\":\"provide\",\"photonName\":\"../x\"",
                "\"type\":\"schedule\",\"photonName\":\"../x\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\"",
                "\"type\":\"get_execution_history\",\"photonName\":\"../x\",\"method\":\"m\"",
                "\"type\":\"enable_schedule\",\"photonName\":\"../x\",\"method\":\"m\"",
                "\"type\":\"pause_schedule\",\"photonName\":\"../x\",\"method\":\"m\"",
                NULL }, "Cannot initialize photon '../x': not a valid photon name (" RULE ")");

        expect_one_wording(c, "method", (const char*[]) {
                "\"type\":\"command\",\"photonName\":\"p\",\"method\":\"../../bin/sh\"",
                "\"type\":\"schedule\",\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"../../bin/sh\",\"cron\":\"* * * * *\"",
                "\"type\":\"get_execution_history\",\"photonName\":\"p\",\"method\":\"../../bin/sh\"",
                "\"type\":\"disable_schedule\",\"photonName\":\"p\",\"method\":\"../../bin/sh\"",
                "\"type\":\"resume_schedule\",\"photonName\":\"p\",\"method\":\"../../bin/sh\"",
                NULL }, "Tool not found: ../../bin/sh (not a valid method name: " RULE ")");

        expect_one_wording(c, "missing photonName", (const char*[]) {
                "\"type\":\"provide\"",
                "\"type\":\"get_execution_history\",\"method\":\"m\"",
                "\"type\":\"enable_schedule\",\"method\":\"m\"",
                NULL }, "Invalid request format: photonName is missing");

        expect_one_wording(c, "lockName with a NUL", (const char*[]) {
                "\"type\":\"lock\",\"lockName\":\"a\\u0000x\"",
                "\"type\":\"unlock\",\"lockName\":\"a\\u0000x\"",
                "\"type\":\"assign_lock\",\"lockName\":\"a\\u0000x\",\"lockHolder\":\"h\"",
                "\"type\":\"transfer_lock\",\"lockName\":\"a\\u0000x\",\"lockTransferTo\":\"h\"",
                "\"type\":\"query_lock\",\"lockName\":\"a\\u0000x\"",
                NULL }, "Invalid request format: lockName must not contain a NUL character");

        expect_one_wording(c, "sessionId with a NUL", (const char*[]) {
                "\"type\":\"ping\",\"sessionId\":\"s\\u0000\"",
                "\"type\":\"lock\",\"lockName\":\"a\",\"sessionId\":\"s\\u0000\"",
                "\"type\":\"publish\",\"channel\":\"c\",\"sessionId\":\"s\\u0000\"",
                "\"type\":\"command\",\"photonName\":\"p\",\"method\":\"m\",\"sessionId\":\"s\\u0000\"",
                NULL }, "Invalid request format: sessionId must not contain a NUL character");

        expect_one_wording(c, "channel with a NUL", (const char*[]) {
                "\"type\":\"subscribe\",\"channel\":\"c\\u0000\"",
                "\"type\":\"unsubscribe\",\"channel\":\"c\\u0000\"",
                "\"type\":\"publish\",\"channel\":\"c\\u0000\"",
                "\"type\":\"get_events_since\",\"channel\":\"c\\u0000\"",
                NULL }, "Invalid request format: channel must not contain a NUL character");

        expect_one_wording(c, "lock name over the cap", (const char*[]) {
                "\"type\":\"lock\",\"lockName\":\"abcde\",\"sessionId\":\"h\"",
                "\"type\":\"assign_lock\",\"lockName\":\"abcde\",\"lockHolder\":\"h\"",
                "\"type\":\"transfer_lock\",\"lockName\":\"abcde\",\"lockTransferTo\":\"h\"",
                NULL }, "Lock name too long: 5 bytes, at most 4 (PHOTOND_MAX_LOCK_NAME_BYTES)");

        expect_one_wording(c, "lock holder over the cap", (const char*[]) {
                "\"type\":\"lock\",\"lockName\":\"a\",\"sessionId\":\"hhhhh\"",
                "\"type\":\"assign_lock\",\"lockName\":\"a\",\"lockHolder\":\"hhhhh\"",
                "\"type\":\"transfer_lock\",\"lockName\":\"a\",\"lockTransferTo\":\"hhhhh\"",
                NULL }, "Lock holder too long: 5 bytes, at most 4 (PHOTOND_MAX_LOCK_HOLDER_BYTES)");

        /* Cap errors carry the suggestion docs/protocol.md promises, also on the lock fast path. */
        struct json_object *o = conn_request(c, "f1", "{\"type\":\"lock\",\"id\":\"f1\",\"lockName\":\"abcde\"}");
        cr_assert_str_eq(jstr(o, "error"), "Lock name too long: 5 bytes, at most 4 (PHOTOND_MAX_LOCK_NAME_BYTES)");
        cr_assert_str_eq(jstr(o, "suggestion"), "Use a shorter lockName");
        json_object_put(o);
        o = conn_request(c, "f2", "{\"type\":\"lock\",\"id\":\"f2\",\"lockName\":\"a\",\"sessionId\":\"hhhhh\"}");
        cr_assert_str_eq(jstr(o, "suggestion"), "Use a shorter holder (lockHolder, sessionId or id)");
        json_object_put(o);

        conn_close(c);
        daemon_free(d);
}

Test(core, garbage_nul_bytes_crlf_and_pipelining) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        static const char garbage[] = "\x01\x02\xff\xfe{{{\0\0]]\n";
        struct json_object *o;

        conn_send_raw(c, garbage, sizeof(garbage) - 1);
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);

        /* Three requests in one write, CRLF and blank lines in between. */
        const char *three = "{\"type\":\"ping\",\"id\":\"a\"}\r\n\r\n\n{\"type\":\"ping\",\"id\":\"b\"}\n"
                            "{\"type\":\"ping\",\"id\":\"c\"}\n";
        conn_send_raw(c, three, strlen(three));
        static const char *const ids[] = { "a", "b", "c" };
        for (size_t i = 0; i < 3; i++) {
                o = conn_expect(c, 5000);
                cr_assert_str_eq(jstr(o, "id"), ids[i], "replies come in request order");
                json_object_put(o);
        }

        /* One request split over many writes. */
        const char *req = "{\"type\":\"ping\",\"id\":\"split\"}\n";
        for (size_t i = 0; req[i]; i++)
                conn_send_raw(c, req + i, 1);
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "id"), "split");
        json_object_put(o);

        conn_close(c);
        daemon_free(d);
}

Test(core, over_long_line_gets_an_error_and_close) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_LINE_BYTES=4096", NULL } });
        Conn *c = conn_open(d), *other = conn_open(d);
        char big[8192];
        struct json_object *o;

        memset(big, 'a', sizeof(big));
        conn_send_raw(c, big, sizeof(big));
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "request line too long: at most 4096 bytes (PHOTOND_MAX_LINE_BYTES)"));
        json_object_put(o);
        cr_assert(conn_wait_eof(c, 5000), "the connection is closed after the error");

        ping_ok(other, "unaffected");
        conn_close(c);
        conn_close(other);
        daemon_free(d);
}

Test(core, client_disconnecting_mid_line) {
        Daemon *d = daemon_start(NULL);

        for (int i = 0; i < 20; i++) {
                Conn *c = conn_open(d);
                conn_send_raw(c, "{\"type\":\"ping\",\"id\":\"half", 24);
                conn_close(c);
        }
        Conn *c = conn_open(d);
        ping_ok(c, "alive");
        /* The closes race with our status request; they must all be processed within a deadline. */
        uint64_t deadline = mono_ms() + 5000;
        for (;;) {
                struct json_object *o = conn_request(c, "s", "{\"type\":\"status\",\"id\":\"s\"}");
                int64_t n = jint(o, "data.clients");
                json_object_put(o);
                if (n == 1)
                        break;
                cr_assert(mono_ms() < deadline, "half-line clients still counted: %lld", (long long) n);
        }
        conn_close(c);
        daemon_free(d);
}

Test(core, five_hundred_concurrent_connections) {
        Daemon *d = daemon_start(NULL);
        enum { N = 500 };
        Conn *conns[N];
        char id[32];

        for (int i = 0; i < N; i++)
                conns[i] = conn_open(d);
        /* Everyone sends before anyone reads. */
        for (int i = 0; i < N; i++)
                conn_send(conns[i], "{\"type\":\"ping\",\"id\":\"c%d\"}", i);
        for (int i = 0; i < N; i++) {
                struct json_object *o = conn_expect(conns[i], 5000);
                snprintf(id, sizeof(id), "c%d", i);
                cr_assert_str_eq(jstr(o, "id"), id);
                json_object_put(o);
        }
        struct json_object *o = conn_request(conns[0], "s", "{\"type\":\"status\",\"id\":\"s\"}");
        cr_assert_eq(jint(o, "data.clients"), N);
        json_object_put(o);
        for (int i = 0; i < N; i++)
                conn_close(conns[i]);
        daemon_free(d);
}

Test(core, sigterm_notifies_every_client) {
        Daemon *d = daemon_start(NULL);
        enum { N = 20 };
        Conn *conns[N];

        for (int i = 0; i < N; i++) {
                conns[i] = conn_open(d);
                ping_ok(conns[i], "hello");
        }
        kill(d->pid, SIGTERM);
        cr_assert_not_null(daemon_wait_notify(d, "STOPPING=1", 5000));
        for (int i = 0; i < N; i++) {
                struct json_object *o = conn_expect(conns[i], 5000);
                cr_assert_str_eq(jstr(o, "type"), "shutdown");
                cr_assert_str_eq(jstr(o, "id"), "daemon-shutdown");
                cr_assert_str_eq(jstr(o, "reason"), "daemon-shutting-down");
                json_object_put(o);
                cr_assert(conn_wait_eof(conns[i], 5000));
                conn_close(conns[i]);
        }
        int status = daemon_wait_exit(d, 5000);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        daemon_free(d);
}

Test(core, status_and_watchdog_notifications) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "WATCHDOG_USEC=200000", NULL } });
        Conn *c = conn_open(d);

        ping_ok(c, "p");
        cr_assert_not_null(daemon_wait_notify(d, "WATCHDOG=1", 3000), "sd_event pings the watchdog");
        cr_assert_not_null(daemon_wait_notify(d, "STATUS=1 clients", 3000));
        conn_close(c);
        daemon_free(d);
}

Test(core, accept_pauses_instead_of_spinning_when_out_of_fds) {
        /* photond itself needs a handful of fds; 24 leaves room for only a few clients. A cap above what fits the
         * limit (the default one would be lowered to fit) makes photond run out. */
        Daemon *d = daemon_start(&(DaemonOptions) {
                .nofile = 24, .env = (const char*[]) { "PHOTOND_MAX_CLIENTS=1000", NULL } });
        enum { N = 40 };
        Conn *conns[N];
        char path[64], line[512];
        unsigned long utime0 = 0, utime1 = 0;
        FILE *f;

        for (int i = 0; i < N; i++)
                conns[i] = conn_open(d);   /* the backlog takes them even when photond cannot */

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) d->pid);
        f = fopen(path, "re");
        cr_assert(fgets(line, sizeof(line), f));
        fclose(f);
        sscanf(strrchr(line, ')') + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu", &utime0);

        /* The first clients are served; give photond 500 ms of chances to spin. */
        ping_ok(conns[0], "first");
        cr_assert_null(conn_recv(conns[N - 1], 500), "no fd for the last one yet");
        f = fopen(path, "re");
        cr_assert(fgets(line, sizeof(line), f));
        fclose(f);
        sscanf(strrchr(line, ')') + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu", &utime1);
        cr_assert(utime1 - utime0 < 20, "photond busy-looped on EMFILE (%lu ticks)", utime1 - utime0);
        cr_assert(daemon_log_contains(d, "pausing"));

        /* Freeing fds lets the waiting connections in. */
        for (int i = 0; i < N - 1; i++)
                conn_close(conns[i]);
        ping_ok(conns[N - 1], "last");
        conn_close(conns[N - 1]);
        daemon_free(d);
}

Test(core, shutdown_refused_to_other_users) {
        char dir[] = "/tmp/photond-perm-XXXXXX", sock[128];
        Daemon *d;
        pid_t pid;
        int status;

        if (geteuid() != 0)
                cr_skip_test("needs root to act as another user");

        cr_assert(mkdtemp(dir));
        cr_assert_eq(chmod(dir, 0777), 0);
        snprintf(sock, sizeof(sock), "%s/daemon.sock", dir);
        d = daemon_start(&(DaemonOptions) { .args = (const char*[]) { "--socket", sock, NULL } });
        cr_assert_eq(chmod(sock, 0666), 0, "opened up for this test only");

        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                if (setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(3);
                Conn *c = conn_open_path(sock);
                conn_send(c, "{\"type\":\"shutdown\",\"id\":\"evil\"}");
                struct json_object *o = conn_recv(c, 5000);
                _exit(o && strcmp(jstr(o, "type"), "error") == 0 &&
                      strstr(jstr(o, "error"), "Permission denied") ? 0 : 1);
        }
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "another user's shutdown was not refused");

        Conn *c = conn_open_path(sock);
        ping_ok(c, "still-running");
        conn_close(c);
        daemon_free(d);
        rmdir(dir);
}

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t status_busy_poll_batches(Conn *c) {
        struct json_object *o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");
        int64_t n = jint(o, "data.busyPollBatches");

        json_object_put(o);
        return n;
}

/* Busy polling stops where it does not pay: a client whose next request always comes after the poll time (here
 * 300 µs after each reply, with polls of 100 µs, and batches within 1 ms of each other count as busy) makes every
 * poll miss (unless photond lost its CPU between the reply and the poll), and photond backs off
 * (busyPollBackoffs) instead of spinning after every request. */
Test(core, busy_polling_backs_off_when_polls_find_nothing) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_BUSY_POLL_US=100", NULL },
        });
        Conn *c = conn_open(d);
        struct json_object *o;
        cpu_set_t cpus;

        for (unsigned i = 0; i < 100; i++) {
                o = conn_request(c, "p", "{\"type\":\"ping\",\"id\":\"p\"}");
                json_object_put(o);
                (void) nanosleep(&(struct timespec) { .tv_nsec = 300 * 1000 }, NULL);
        }

        o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");
        CPU_ZERO(&cpus);
        cr_assert_eq(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
        if (CPU_COUNT(&cpus) >= 2)
                cr_assert_geq(jint(o, "data.busyPollBackoffs"), 1, "%s", json_object_to_json_string(o));
        else    /* no polling at all */
                cr_assert_eq(jint(o, "data.busyPollBackoffs"), 0);
        json_object_put(o);

        conn_close(c);
        daemon_free(d);
}

/* Busy polling (PHOTOND_BUSY_POLL_US): a client in a tight request/reply loop keeps photond polling for its next
 * request instead of sleeping. Meanwhile a request still sees the time it was found, never the older time the loop
 * woke up at (acquiredAt is never before the request was sent), another client's short lock still expires on
 * time, and SIGTERM still stops photond at once. */
Test(core, busy_polling_keeps_time_expiry_and_signals) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d), *other = conn_open(d);
        struct json_object *o;
        int64_t expires_at, freed_seen = 0, held_late = 0;
        unsigned stale = 0, rounds = 0;
        uint64_t start, t0;
        cpu_set_t cpus;
        int status;
        pid_t pid;

        o = conn_request(other, "s", "{\"type\":\"lock\",\"id\":\"s\",\"lockName\":\"short\",\"sessionId\":\"o\","
                                     "\"lockTimeout\":150}");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);
        o = conn_request(other, "q", "{\"type\":\"query_lock\",\"id\":\"q\",\"lockName\":\"short\"}");
        expires_at = jint(o, "data.expiresAt");
        json_object_put(o);

        start = mono_ms();
        while (mono_ms() - start < 400) {
                int64_t sent = wall_ms();

                o = conn_request(c, "l", "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"hot\",\"sessionId\":\"h\"}");
                cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
                json_object_put(o);
                o = conn_request(c, "h", "{\"type\":\"query_lock\",\"id\":\"h\",\"lockName\":\"hot\"}");
                if (jint(o, "data.acquiredAt") < sent)
                        stale++;
                json_object_put(o);
                o = conn_request(c, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"hot\",\"sessionId\":\"h\"}");
                json_object_put(o);

                if (++rounds % 8 == 0) {
                        int64_t asked = wall_ms();
                        bool held;

                        o = conn_request(c, "q", "{\"type\":\"query_lock\",\"id\":\"q\",\"lockName\":\"short\"}");
                        held = jstr(o, "data.holder") != NULL;
                        json_object_put(o);
                        if (!held && freed_seen == 0)
                                freed_seen = asked;
                        if (held && asked > expires_at + 20)
                                held_late++;
                }
        }
        cr_assert_eq(stale, 0, "%u of %u requests saw a time before they were sent", stale, rounds);
        cr_assert_eq(held_late, 0, "the 150 ms lock was still held 20 ms after it expired");
        cr_assert_geq(freed_seen, expires_at - 1, "the 150 ms lock was free before it expired");

        CPU_ZERO(&cpus);
        cr_assert_eq(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
        if (CPU_COUNT(&cpus) >= 2)
                cr_assert_gt(status_busy_poll_batches(other), 0, "no batch was found by busy polling in %u rounds",
                             rounds);

        /* A client that never pauses does not keep photond from its signals. */
        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                Conn *h;

                /* Gone with the test, whatever its outcome. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                h = conn_open(d);

                /* Plain send(), no cr_assert: photond may exit between a receive and a send, and an assertion in
                 * a forked child blocks in criterion's channel while the test waits for it. */
                for (;;) {
                        static const char ping[] = "{\"type\":\"ping\",\"id\":\"p\"}\n";

                        if (send(h->fd, ping, sizeof(ping) - 1, MSG_NOSIGNAL) != (ssize_t) sizeof(ping) - 1)
                                _exit(0);
                        o = conn_recv(h, 2000);
                        if (!o)
                                _exit(0);
                        json_object_put(o);
                }
        }
        /* Until the pinging child keeps photond polling (or 5 s, with one CPU it never does). */
        t0 = status_busy_poll_batches(other);
        start = mono_ms();
        while (status_busy_poll_batches(other) < (int64_t) t0 + 100 && mono_ms() - start < 5000)
                ;
        t0 = mono_ms();
        status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        cr_assert_lt(mono_ms() - t0, 2000, "SIGTERM took %" PRIu64 " ms under load", mono_ms() - t0);
        cr_assert_eq(waitpid(pid, &status, 0), pid);

        conn_close(c);
        conn_close(other);
        daemon_free(d);
}

/* photond started with JOURNAL_STREAM inherited but stderr elsewhere (a shell in a unit redirecting to a file)
 * writes plain lines; only when stderr is the stream JOURNAL_STREAM names does it add journald's "<N>". */
Test(core, level_prefix_only_when_stderr_is_the_journal_stream) {
        char home[] = "/tmp/photond-journal-XXXXXX", log_path[256], env[128], line[512];
        struct stat st;
        FILE *f;

        cr_assert_not_null(mkdtemp(home));
        /* The harness sends stderr to <home>/photond-<pid>.log, appending: create it first to know its inode. */
        snprintf(log_path, sizeof(log_path), "%s/photond-%d.log", home, (int) getpid());
        f = fopen(log_path, "we");
        cr_assert(f);
        fclose(f);
        cr_assert_eq(stat(log_path, &st), 0);

        for (int matching = 0; matching <= 1; matching++) {
                /* Not matching: the device of the log with another inode, which is what a stale value looks like. */
                snprintf(env, sizeof(env), "JOURNAL_STREAM=%llu:%llu", (unsigned long long) st.st_dev,
                         (unsigned long long) st.st_ino + (matching ? 0 : 1));
                cr_assert_eq(truncate(log_path, 0), 0);
                Daemon *d = daemon_start(&(DaemonOptions) { .home = home,
                                                            .env = (const char*[]) { env, NULL } });
                daemon_signal_and_wait(d, SIGTERM);

                f = fopen(log_path, "re");
                cr_assert(f);
                cr_assert(fgets(line, sizeof(line), f), "photond logged something");
                fclose(f);
                if (matching)
                        cr_assert(line[0] == '<' && line[2] == '>', "prefixed for the journal: %s", line);
                else
                        cr_assert(line[0] != '<', "no prefix in a plain file: %s", line);
                daemon_free(d);
        }
        snprintf(line, sizeof(line), "rm -rf '%s'", home);
        (void) !system(line);
}

static char* read_owner_socket_path(const char *owner_path) {
        char buf[1024];
        struct json_object *o;
        FILE *f;
        size_t n;
        char *s;

        f = fopen(owner_path, "re");
        cr_assert(f, "%s exists", owner_path);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        o = json_tokener_parse(buf);
        cr_assert(o, "%s is JSON: %s", owner_path, buf);
        s = strdup(jstr(o, "socketPath"));
        json_object_put(o);
        return s;
}

/* A client computes the socket path with path.resolve() and compares it with the owner file's socketPath: a
 * relative PHOTON_HOME (and --socket, user or system instance) must come out normalised the same way. */
Test(core, relative_photon_home_and_socket_are_normalised) {
        char base[] = "/tmp/photond-rel-XXXXXX", path[512], expect[512], home[512];
        char *got;
        Daemon *d;

        cr_assert_not_null(mkdtemp(base));
        snprintf(path, sizeof(path), "%s/sub", base);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/.photon", base);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/sys", base);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/sub", base);
        cr_assert_eq(chdir(path), 0);     /* photond inherits it */

        /* The case, PHOTON_HOME=../.photon/ from <base>/sub, is what joining the working directory gave:
         * the harness needs an absolute home (NOTIFY_SOCKET lives there), and the path is normalised all the
         * same. (The joining itself: shared/path_resolve_at.) */
        snprintf(home, sizeof(home), "%s/sub/../.photon/", base);
        d = daemon_start(&(DaemonOptions) { .home = home });
        snprintf(path, sizeof(path), "%s/.photon/.data/daemon.owner.json", base);
        snprintf(expect, sizeof(expect), "%s/.photon/.data/daemon.sock", base);
        got = read_owner_socket_path(path);
        cr_assert_str_eq(got, expect);
        free(got);
        daemon_signal_and_wait(d, SIGTERM);
        daemon_free(d);

        /* A relative --socket, user instance. */
        d = daemon_start(&(DaemonOptions) { .home = home,
                                            .args = (const char*[]) { "--socket=./..//sys/x/../daemon.sock", NULL } });
        snprintf(path, sizeof(path), "%s/sys/daemon.owner.json", base);
        snprintf(expect, sizeof(expect), "%s/sys/daemon.sock", base);
        got = read_owner_socket_path(path);
        cr_assert_str_eq(got, expect);
        free(got);
        daemon_signal_and_wait(d, SIGTERM);
        daemon_free(d);

        /* And the system instance's (which was not even made absolute). */
        snprintf(path, sizeof(path), "STATE_DIRECTORY=%s/.photon", base);
        d = daemon_start(&(DaemonOptions) { .home = home,
                                            .env = (const char*[]) { path, NULL },
                                            .args = (const char*[]) { "--system", "--socket=../sys/./daemon.sock",
                                                                      NULL } });
        snprintf(path, sizeof(path), "%s/sys/daemon.owner.json", base);
        got = read_owner_socket_path(path);
        cr_assert_str_eq(got, expect);
        free(got);
        daemon_signal_and_wait(d, SIGTERM);
        daemon_free(d);

        cr_assert_eq(chdir("/"), 0);
        snprintf(path, sizeof(path), "rm -rf '%s'", base);
        (void) !system(path);
}
