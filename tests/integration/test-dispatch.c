/* SPDX-License-Identifier: MIT */

/* Method dispatch against a real photond: commands served by provider connections (invoke, invoke_result, emits,
 * prompts, disconnects, round-robin, timeouts, caps) and by exec handlers written into <home>/handlers (clean
 * environment and fds, JSON and text output, failures, timeouts, output cap, grandchildren), many concurrent
 * calls, state-changed, and photonctl's call/provide/ps. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- helpers ---- */

static void mkdir_p(const char *path) {
        char *p = strdup(path);

        for (char *s = p + 1; *s; s++)
                if (*s == '/') {
                        *s = '\0';
                        (void) mkdir(p, 0755);
                        *s = '/';
                }
        (void) mkdir(p, 0755);
        free(p);
}

/* Writes an executable <home>/handlers/<rel>. */
static void write_handler(Daemon *d, const char *rel, const char *script) {
        char *path, *dir;
        FILE *f;

        cr_assert(asprintf(&path, "%s/handlers/%s", d->home, rel) >= 0);
        dir = strdup(path);
        *strrchr(dir, '/') = '\0';
        mkdir_p(dir);
        f = fopen(path, "we");
        cr_assert(f, "%s: %m", path);
        fputs(script, f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(chmod(path, 0755), 0);
        free(dir);
        free(path);
}

static Conn* provider_open(Daemon *d, const char *photon) {
        Conn *p = conn_open(d);
        struct json_object *o;

        o = conn_request(p, "prov", "{\"type\":\"provide\",\"id\":\"prov\",\"photonName\":\"%s\"}", photon);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "success"));
        cr_assert(jbool(o, "data.provided"));
        cr_assert_str_eq(jstr(o, "data.photonName"), photon);
        json_object_put(o);
        return p;
}

/* The next line on a provider connection, which must be an invoke. */
static struct json_object* expect_invoke(Conn *p) {
        struct json_object *o = conn_expect(p, 5000);

        cr_assert_str_eq(jstr(o, "type"), "invoke", "%s", json_object_to_json_string(o));
        cr_assert_not_null(jstr(o, "id"));
        return o;
}

/* The next line on c, which must have this type and id. */
static struct json_object* expect_line(Conn *c, const char *type, const char *id, int timeout_ms) {
        struct json_object *o = conn_expect(c, timeout_ms);

        cr_assert_str_eq(jstr(o, "type"), type, "%s", json_object_to_json_string(o));
        if (id)
                cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
        return o;
}

/* Runs one command and returns its reply (a result or an error). */
static struct json_object* command(Conn *c, const char *id, const char *photon, const char *method,
                                   const char *args_json) {
        return conn_request(c, id, "{\"type\":\"command\",\"id\":\"%s\",\"photonName\":\"%s\",\"method\":\"%s\","
                            "\"args\":%s}", id, photon, method, args_json ?: "{}");
}

static const char* error_of(struct json_object *o) {
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        cr_assert_not_null(jstr(o, "error"));
        return jstr(o, "error");
}

static void assert_contains(const char *s, const char *needle) {
        cr_assert(s && strstr(s, needle), "'%s' does not contain '%s'", s ?: "(null)", needle);
}

/* True if photond's stderr (its journal) contains text. */
static bool photond_log_has(Daemon *d, const char *text) {
        char *buf = NULL;
        size_t n = 0;
        bool found;
        FILE *f = fopen(d->log_path, "re");

        if (!f)
                return false;
        found = getdelim(&buf, &n, '\0', f) > 0 && strstr(buf, text);
        free(buf);
        fclose(f);
        return found;
}

/* Stops photond with SIGTERM and requires a clean exit: status 0 (a sanitizer build fails it on leaks) and no
 * sanitizer report in its log. Then frees d. */
static void daemon_stop_checked(Daemon *d) {
        int status = daemon_signal_and_wait(d, SIGTERM);

        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || photond_log_has(d, "runtime error") ||
            photond_log_has(d, "Sanitizer"))
                daemon_dump_log(d);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "photond exit status %d", status);
        cr_assert(!photond_log_has(d, "runtime error"), "UBSan report in photond's log");
        cr_assert(!photond_log_has(d, "Sanitizer"), "sanitizer report in photond's log");
        daemon_free(d);
}

static struct json_object* conn_status(Conn *c) {
        struct json_object *o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");

        cr_assert(jbool(o, "success"));
        return o;
}

/* Waits until photond has seen provider connections come and go: status "providers" equals n. Another
 * connection's close is not ordered with our requests, so this is the readiness signal to wait for. */
static void wait_providers(Conn *c, int64_t n) {
        for (uint64_t deadline = mono_ms() + 5000;;) {
                struct json_object *o = conn_status(c);
                int64_t have = jint(o, "data.providers");

                json_object_put(o);
                if (have == n)
                        return;
                cr_assert(mono_ms() < deadline, "providers stayed at %lld, want %lld", (long long) have,
                          (long long) n);
                usleep(5000);
        }
}

/* ---- providers ---- */

Test(dispatch, provider_serves_a_command) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "kanban"), *c = conn_open(d);
        struct json_object *o, *inv;
        char inv_id[64];

        o = conn_status(c);
        cr_assert_eq(jint(o, "data.photonsLoaded"), 1);
        cr_assert_eq(jint(o, "data.providers"), 1);
        json_object_put(o);

        conn_send(c, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"add\","
                  "\"args\":{\"title\":\"x\"},\"instanceName\":\"work\",\"sessionId\":\"s-1\"}");
        inv = expect_invoke(p);
        cr_assert_eq(strncmp(jstr(inv, "id"), "inv_", 4), 0);
        cr_assert_str_eq(jstr(inv, "photonName"), "kanban");
        cr_assert_str_eq(jstr(inv, "method"), "add");
        cr_assert_str_eq(jstr(inv, "args.title"), "x");
        cr_assert_str_eq(jstr(inv, "trigger"), "command");
        cr_assert_str_eq(jstr(inv, "instanceName"), "work");
        cr_assert_str_eq(jstr(inv, "sessionId"), "s-1");
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);

        /* While it runs, ps shows it. */
        o = conn_request(p, "ps1", "{\"type\":\"ps\",\"id\":\"ps1\"}");
        cr_assert_eq(json_object_array_length(jget(o, "data.calls")), 1);
        cr_assert_str_eq(jstr(o, "data.calls.0.id"), inv_id);
        cr_assert_str_eq(jstr(o, "data.calls.0.photonName"), "kanban");
        cr_assert_str_eq(jstr(o, "data.calls.0.method"), "add");
        cr_assert_str_eq(jstr(o, "data.calls.0.trigger"), "command");
        cr_assert_str_eq(jstr(o, "data.calls.0.via"), "provider");
        cr_assert(jint(o, "data.calls.0.ageMs") >= 0);
        cr_assert_str_eq(jstr(o, "data.providers.0.photonName"), "kanban");
        cr_assert_eq(json_object_array_length(jget(o, "data.providers.0.providers")), 1);
        cr_assert_eq(json_object_array_length(jget(o, "data.clients")), 2);
        cr_assert(jhas(o, "data.jobs"));
        json_object_put(o);

        o = conn_status(p);
        cr_assert_eq(jint(o, "data.runningCalls"), 1);
        json_object_put(o);

        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":{\"id\":7,\"ok\":true}}",
                  inv_id);
        o = expect_line(c, "result", "c1", 5000);
        cr_assert(jbool(o, "success"));
        cr_assert_eq(jint(o, "data.id"), 7);
        cr_assert(jbool(o, "data.ok"));
        cr_assert(jint(o, "durationMs") >= 0);
        json_object_put(o);

        /* A method may return null: the key stays, as JSON.stringify keeps null. */
        conn_send(c, "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"clear\"}");
        inv = expect_invoke(p);
        cr_assert(json_object_is_type(jget(inv, "args"), json_type_object), "args default to {}");
        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":null}", jstr(inv, "id"));
        json_object_put(inv);
        o = expect_line(c, "result", "c2", 5000);
        cr_assert(jhas(o, "data"));
        cr_assert_null(jget(o, "data"));
        json_object_put(o);

        o = conn_status(p);
        cr_assert_eq(jint(o, "data.runningCalls"), 0);
        json_object_put(o);

        conn_close(c);
        conn_close(p);
        daemon_stop_checked(d);
}

Test(dispatch, provider_failures_and_stray_messages) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "kanban"), *c = conn_open(d), *other = conn_open(d);
        struct json_object *o, *inv;
        char inv_id[64];

        conn_send(c, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"add\"}");
        inv = expect_invoke(p);
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);

        /* Only the provider that got the invoke may answer it. */
        o = conn_request(other, inv_id, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true}", inv_id);
        assert_contains(error_of(o), "Unknown invocation");
        json_object_put(o);

        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":false,\"error\":\"Board is full\"}",
                  inv_id);
        o = expect_line(c, "error", "c1", 5000);
        cr_assert_str_eq(jstr(o, "error"), "Board is full");
        json_object_put(o);

        /* A late or unknown answer gets an error; the provider stays connected and useful. */
        o = conn_request(p, inv_id, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true}", inv_id);
        assert_contains(error_of(o), "Unknown invocation");
        json_object_put(o);
        o = conn_request(p, "inv_999999", "{\"type\":\"emit\",\"id\":\"inv_999999\",\"emitData\":{\"emit\":\"x\"}}");
        assert_contains(error_of(o), "Unknown invocation");
        json_object_put(o);

        /* An error given as an object with a message. */
        conn_send(c, "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"add\"}");
        inv = expect_invoke(p);
        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":false,\"error\":{\"message\":\"nope\"}}",
                  jstr(inv, "id"));
        json_object_put(inv);
        o = expect_line(c, "error", "c2", 5000);
        cr_assert_str_eq(jstr(o, "error"), "nope");
        json_object_put(o);

        /* A NUL byte: an emit to a channel with one is refused (the channel would be cut short); an error message
         * with one reaches the caller whole, as its JSON text, not cut at the NUL. */
        conn_send(c, "{\"type\":\"command\",\"id\":\"c3\",\"photonName\":\"kanban\",\"method\":\"add\"}");
        inv = expect_invoke(p);
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);
        o = conn_request(p, inv_id, "{\"type\":\"emit\",\"id\":\"%s\",\"emitData\":{\"channel\":\"a\\u0000b\"}}", inv_id);
        cr_assert_str_eq(error_of(o), "Invalid request format: emitData.channel must not contain a NUL character");
        json_object_put(o);
        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":false,\"error\":\"Board\\u0000full\"}",
                  inv_id);
        o = expect_line(c, "error", "c3", 5000);
        cr_assert_str_eq(jstr(o, "error"), "\"Board\\u0000full\"");
        json_object_put(o);

        /* provide validates the name like every path part. */
        o = conn_request(other, "pv", "{\"type\":\"provide\",\"id\":\"pv\",\"photonName\":\"../etc\"}");
        cr_assert_str_eq(error_of(o), "Cannot initialize photon '../etc': not a valid photon name (1-64 characters "
                         "of A-Z a-z 0-9 . _ -, not starting with a dot)");
        json_object_put(o);

        conn_close(other);
        conn_close(c);
        conn_close(p);
        daemon_stop_checked(d);
}

Test(dispatch, emits_and_prompts_travel_between_provider_and_caller) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "wizard"), *c = conn_open(d);
        struct json_object *o, *inv;
        char inv_id[64];

        conn_send(c, "{\"type\":\"command\",\"id\":\"w1\",\"photonName\":\"wizard\",\"method\":\"run\"}");
        inv = expect_invoke(p);
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);

        conn_send(p, "{\"type\":\"emit\",\"id\":\"%s\",\"emitData\":{\"emit\":\"progress\",\"value\":0.5,"
                  "\"message\":\"half way\"}}", inv_id);
        o = expect_line(c, "emit", "w1", 5000);
        cr_assert_str_eq(jstr(o, "emitData.emit"), "progress");
        cr_assert_str_eq(jstr(o, "emitData.message"), "half way");
        json_object_put(o);

        /* An emit without "emit" (only a channel, or nothing) is not written to the caller. */
        conn_send(p, "{\"type\":\"emit\",\"id\":\"%s\",\"emitData\":{\"channel\":\"wizard:log\",\"line\":1}}",
                  inv_id);
        conn_send(p, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"Colour?\","
                  "\"default\":\"red\"}}", inv_id);
        o = expect_line(c, "prompt", "w1", 5000);
        cr_assert_str_eq(jstr(o, "prompt.type"), "text");
        cr_assert_str_eq(jstr(o, "prompt.message"), "Colour?");
        cr_assert_str_eq(jstr(o, "prompt.default"), "red");
        json_object_put(o);

        /* The answer goes to the provider under its invoke id; the caller gets no reply for it. */
        conn_send(c, "{\"type\":\"prompt_response\",\"id\":\"w1\",\"promptValue\":\"blue\"}");
        o = expect_line(p, "prompt_response", inv_id, 5000);
        cr_assert_str_eq(jstr(o, "promptValue"), "blue");
        json_object_put(o);

        /* A stray prompt_response is ignored silently, as the reference does. */
        conn_send(c, "{\"type\":\"prompt_response\",\"id\":\"w1\",\"promptValue\":\"again\"}");

        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":\"blue it is\"}", inv_id);
        o = expect_line(c, "result", "w1", 5000);
        cr_assert_str_eq(jstr(o, "data"), "blue it is");
        json_object_put(o);
        cr_assert_null(conn_recv(p, 200), "the stray prompt_response reached the provider");

        conn_close(c);
        conn_close(p);
        daemon_stop_checked(d);
}

Test(dispatch, caller_that_leaves_answers_its_prompt_with_null) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "wizard"), *c = conn_open(d);
        struct json_object *o, *inv;
        char inv_id[64];

        conn_send(c, "{\"type\":\"command\",\"id\":\"w1\",\"photonName\":\"wizard\",\"method\":\"run\"}");
        inv = expect_invoke(p);
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);

        conn_send(p, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"?\"}}", inv_id);
        o = expect_line(c, "prompt", "w1", 5000);
        json_object_put(o);
        conn_close(c);

        o = expect_line(p, "prompt_response", inv_id, 5000);
        cr_assert(jhas(o, "promptValue"));
        cr_assert_null(jget(o, "promptValue"));
        json_object_put(o);

        /* With nobody left to ask, the next prompt is answered null at once. */
        conn_send(p, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"??\"}}", inv_id);
        o = expect_line(p, "prompt_response", inv_id, 5000);
        cr_assert_null(jget(o, "promptValue"));
        json_object_put(o);

        /* The call still completes (into the void) and frees its slot. */
        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":1}", inv_id);
        c = conn_open(d);
        o = conn_status(c);
        cr_assert_eq(jint(o, "data.runningCalls"), 0);
        json_object_put(o);

        conn_close(c);
        conn_close(p);
        daemon_stop_checked(d);
}

Test(dispatch, provider_disconnect_fails_its_calls) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "kanban"), *c = conn_open(d);
        struct json_object *o;

        conn_send(c, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"slow\"}");
        conn_send(c, "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"slow\"}");
        json_object_put(expect_invoke(p));
        json_object_put(expect_invoke(p));
        conn_close(p);

        for (int i = 0; i < 2; i++) {
                o = conn_expect(c, 5000);
                assert_contains(error_of(o), "disconnected");
                assert_contains(jstr(o, "error"), "kanban");
                json_object_put(o);
        }

        /* The provider is gone: photonsLoaded drops and a new call finds nobody. */
        o = conn_status(c);
        cr_assert_eq(jint(o, "data.photonsLoaded"), 0);
        cr_assert_eq(jint(o, "data.runningCalls"), 0);
        json_object_put(o);
        o = command(c, "c3", "kanban", "slow", NULL);
        assert_contains(error_of(o), "Cannot initialize photon 'kanban'");
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, calls_round_robin_over_providers) {
        Daemon *d = daemon_start(NULL);
        Conn *p1 = provider_open(d, "kanban"), *p2 = provider_open(d, "kanban"), *c = conn_open(d);
        int got1 = 0, got2 = 0;

        for (int i = 0; i < 6; i++) {
                struct json_object *o, *inv;
                char id[16];
                struct pollfd fds[2] = { { .fd = p1->fd, .events = POLLIN }, { .fd = p2->fd, .events = POLLIN } };
                Conn *which;

                snprintf(id, sizeof(id), "c%d", i);
                conn_send(c, "{\"type\":\"command\",\"id\":\"%s\",\"photonName\":\"kanban\",\"method\":\"m\"}", id);
                cr_assert(poll(fds, 2, 5000) > 0);
                which = (fds[0].revents & POLLIN) ? p1 : p2;
                if (which == p1)
                        got1++;
                else
                        got2++;
                inv = expect_invoke(which);
                conn_send(which, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":%d}",
                          jstr(inv, "id"), which == p1 ? 1 : 2);
                json_object_put(inv);
                o = expect_line(c, "result", id, 5000);
                cr_assert_eq(jint(o, "data"), which == p1 ? 1 : 2);
                json_object_put(o);

                /* Strictly alternating. */
                cr_assert(got1 - got2 <= 1 && got2 - got1 <= 1, "p1 %d, p2 %d", got1, got2);
        }
        cr_assert_eq(got1, 3);
        cr_assert_eq(got2, 3);

        /* One of two leaves: everything goes to the other. */
        conn_close(p1);
        wait_providers(c, 1);
        for (int i = 0; i < 2; i++) {
                struct json_object *o, *inv;

                conn_send(c, "{\"type\":\"command\",\"id\":\"d%d\",\"photonName\":\"kanban\",\"method\":\"m\"}", i);
                inv = expect_invoke(p2);
                conn_send(p2, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"data\":2}", jstr(inv, "id"));
                json_object_put(inv);
                o = expect_line(c, "result", NULL, 5000);
                cr_assert_eq(jint(o, "data"), 2);
                json_object_put(o);
        }

        conn_close(c);
        conn_close(p2);
        daemon_stop_checked(d);
}

Test(dispatch, provider_call_timeout) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "kanban"), *c = conn_open(d);
        struct json_object *o, *inv;
        uint64_t t0 = mono_ms();
        char inv_id[64];

        conn_send(c, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"m\",\"timeoutMs\":300}");
        inv = expect_invoke(p);
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);
        o = expect_line(c, "error", "c1", 5000);
        assert_contains(jstr(o, "error"), "Timed out after 300 ms");
        cr_assert(mono_ms() - t0 >= 290);
        json_object_put(o);

        o = conn_request(p, inv_id, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"data\":1}", inv_id);
        assert_contains(error_of(o), "Unknown invocation");
        json_object_put(o);

        o = conn_request(c, "c2", "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"m\","
                         "\"timeoutMs\":0}");
        assert_contains(error_of(o), "Invalid timeoutMs");
        json_object_put(o);
        o = conn_request(c, "c3", "{\"type\":\"command\",\"id\":\"c3\",\"photonName\":\"kanban\",\"method\":\"m\","
                         "\"timeoutMs\":\"5\"}");
        assert_contains(error_of(o), "Invalid timeoutMs");
        json_object_put(o);

        conn_close(c);
        conn_close(p);
        daemon_stop_checked(d);
}

Test(dispatch, busy_caps) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char *const[]) { "PHOTOND_MAX_CALLS_PER_PHOTON=2", "PHOTOND_MAX_CALLS=3", NULL } });
        Conn *slow = provider_open(d, "slow"), *other = provider_open(d, "other"), *c = conn_open(d);
        struct json_object *o, *inv;

        conn_send(c, "{\"type\":\"command\",\"id\":\"s1\",\"photonName\":\"slow\",\"method\":\"m\"}");
        conn_send(c, "{\"type\":\"command\",\"id\":\"s2\",\"photonName\":\"slow\",\"method\":\"m\"}");
        json_object_put(expect_invoke(slow));
        inv = expect_invoke(slow);

        o = command(c, "s3", "slow", "m", NULL);
        assert_contains(error_of(o), "Busy");
        assert_contains(jstr(o, "error"), "PHOTOND_MAX_CALLS_PER_PHOTON");
        json_object_put(o);

        conn_send(c, "{\"type\":\"command\",\"id\":\"o1\",\"photonName\":\"other\",\"method\":\"m\"}");
        json_object_put(expect_invoke(other));
        o = command(c, "o2", "other", "m", NULL);
        assert_contains(error_of(o), "Busy");
        assert_contains(jstr(o, "error"), "PHOTOND_MAX_CALLS)");
        json_object_put(o);

        /* A finished call frees its slot at once. */
        conn_send(slow, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"data\":1}", jstr(inv, "id"));
        json_object_put(inv);
        o = expect_line(c, "result", "s2", 5000);
        json_object_put(o);
        conn_send(c, "{\"type\":\"command\",\"id\":\"o3\",\"photonName\":\"other\",\"method\":\"m\"}");
        inv = expect_invoke(other);
        json_object_put(inv);

        conn_close(c);
        conn_close(slow);
        conn_close(other);
        daemon_stop_checked(d);
}

/* ---- exec handlers ---- */

static const char env_handler[] =
        "#!/bin/sh\n"
        "read -r args\n"
        "env=$(tr '\\0' ',' < /proc/$$/environ)\n"
        "pgid=$(cut -d' ' -f5 /proc/$$/stat)\n"
        "blk=$(grep '^SigBlk' /proc/$$/status | cut -f2)\n"
        "ign=$(grep '^SigIgn' /proc/$$/status | cut -f2)\n"
        "echo 'a line for the journal' >&2\n"
        "printf '{\"args\":%s,\"env\":\"%s\",\"pid\":%s,\"pgid\":%s,\"blk\":\"%s\",\"ign\":\"%s\",\"cwd\":\"%s\","
        "\"argc\":%s}\\n' \"$args\" \"$env\" $$ \"$pgid\" \"$blk\" \"$ign\" \"$(pwd)\" $#\n";

Test(dispatch, exec_handler_runs_clean) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        char *expected_env, *cwd;

        write_handler(d, "echo/info", env_handler);
        write_handler(d, "echo/fds", "#!/bin/sh\nexec ls /proc/self/fd\n");

        o = command(c, "e1", "echo", "info", "{\"n\":1,\"s\":\"two\"}");
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "success"));
        cr_assert(jint(o, "durationMs") >= 0);
        cr_assert_eq(jint(o, "data.args.n"), 1);
        cr_assert_str_eq(jstr(o, "data.args.s"), "two");
        cr_assert_eq(jint(o, "data.argc"), 0);

        /* Exactly the documented variables, nothing of photond's own environment. */
        cr_assert(asprintf(&expected_env,
                           "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin,HOME=%s,"
                           "PHOTON_NAME=echo,PHOTON_METHOD=info,PHOTON_TRIGGER=command,", d->home) >= 0);
        cr_assert_str_eq(jstr(o, "data.env"), expected_env);
        free(expected_env);

        /* Its own process group, an empty signal mask, no ignored signals (photond ignores SIGPIPE). */
        cr_assert_eq(jint(o, "data.pgid"), jint(o, "data.pid"));
        cr_assert_str_eq(jstr(o, "data.blk"), "0000000000000000");
        cr_assert_str_eq(jstr(o, "data.ign"), "0000000000000000");
        cr_assert(asprintf(&cwd, "%s/handlers", d->home) >= 0);
        cr_assert_str_eq(jstr(o, "data.cwd"), cwd);
        free(cwd);
        json_object_put(o);

        /* stdin, stdout, stderr and ls's own directory fd: nothing inherited. */
        o = command(c, "e2", "echo", "fds", NULL);
        cr_assert_str_eq(jstr(o, "data"), "0\n1\n2\n3", "%s", json_object_to_json_string(o));
        json_object_put(o);

        cr_assert(photond_log_has(d, "echo/info["));
        cr_assert(photond_log_has(d, "]: a line for the journal"));

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, exec_handler_output_kinds) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;

        write_handler(d, "multi", "#!/bin/sh\nprintf '{\"method\":\"%s\",\"env\":\"%s\"}' \"$1\" \"$PHOTON_METHOD\"\n");
        write_handler(d, "text/hello", "#!/bin/sh\necho 'hello world'\n");
        write_handler(d, "text/number", "#!/bin/sh\nprintf 42\n");
        write_handler(d, "text/nothing", "#!/bin/sh\nexit 0\n");

        /* One executable per photon: the method is argv[1]. */
        o = command(c, "m1", "multi", "listCards", NULL);
        cr_assert_str_eq(jstr(o, "data.method"), "listCards", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.env"), "listCards");
        json_object_put(o);

        o = command(c, "t1", "text", "hello", NULL);
        cr_assert(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data"), "hello world");
        json_object_put(o);

        o = command(c, "t2", "text", "number", NULL);
        cr_assert_eq(jint(o, "data"), 42);
        json_object_put(o);

        o = command(c, "t3", "text", "nothing", NULL);
        cr_assert(jbool(o, "success"));
        cr_assert(jhas(o, "data"));
        cr_assert_null(jget(o, "data"));
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, exec_handler_failures) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        const char *e;

        write_handler(d, "bad/exit3", "#!/bin/sh\necho 'first line' >&2\necho 'disk full' >&2\nexit 3\n");
        write_handler(d, "bad/segv", "#!/bin/sh\necho 'about to crash' >&2\nkill -SEGV $$\n");
        write_handler(d, "bad/noisy",
                      "#!/bin/sh\ni=0\nwhile [ $i -lt 400 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done\n"
                      "echo 'the real reason' >&2\nexit 1\n");

        o = command(c, "f1", "bad", "exit3", NULL);
        e = error_of(o);
        assert_contains(e, "Handler bad/exit3 exited with status 3");
        assert_contains(e, "first line\ndisk full");
        json_object_put(o);

        o = command(c, "f2", "bad", "segv", NULL);
        e = error_of(o);
        assert_contains(e, "killed by signal SIGSEGV");
        assert_contains(e, "about to crash");
        json_object_put(o);

        /* Only the tail of stderr: the end is kept, the start is cut. */
        o = command(c, "f3", "bad", "noisy", NULL);
        e = error_of(o);
        assert_contains(e, "the real reason");
        cr_assert_null(strstr(e, "noise line 0\n"), "the head of stderr should be cut");
        cr_assert(strlen(e) < 2300, "error is %zu bytes", strlen(e));
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, missing_handlers_and_bad_requests) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        char *path;

        write_handler(d, "kanban/add", "#!/bin/sh\necho 1\n");
        write_handler(d, "kanban/readonly", "#!/bin/sh\necho 1\n");
        cr_assert(asprintf(&path, "%s/handlers/kanban/readonly", d->home) >= 0);
        cr_assert_eq(chmod(path, 0644), 0);
        free(path);

        o = command(c, "n1", "ghost", "run", NULL);
        assert_contains(error_of(o), "Cannot initialize photon 'ghost'");
        assert_contains(jstr(o, "error"), "provide");
        assert_contains(jstr(o, "error"), "/handlers/ghost/run");
        cr_assert_not_null(jstr(o, "suggestion"));
        json_object_put(o);

        o = command(c, "n2", "kanban", "remove", NULL);
        assert_contains(error_of(o), "Tool not found: remove");
        json_object_put(o);

        o = command(c, "n3", "kanban", "readonly", NULL);
        assert_contains(error_of(o), "not executable");
        json_object_put(o);

        /* Anyone in the group could put code there: refused, and said how to fix it. */
        write_handler(d, "kanban/shared", "#!/bin/sh\necho 1\n");
        cr_assert(asprintf(&path, "%s/handlers/kanban/shared", d->home) >= 0);
        cr_assert_eq(chmod(path, 0775), 0);
        free(path);
        o = command(c, "n3w", "kanban", "shared", NULL);
        assert_contains(error_of(o), "Refusing the handler of kanban/shared");
        assert_contains(error_of(o), "chmod go-w");
        json_object_put(o);

        o = conn_request(c, "n4", "{\"type\":\"command\",\"id\":\"n4\",\"method\":\"add\"}");
        cr_assert_str_eq(error_of(o), "photonName required for commands");
        cr_assert_str_eq(jstr(o, "suggestion"), "Include photonName in the request payload");
        json_object_put(o);

        o = command(c, "n5", "..", "add", NULL);
        cr_assert_str_eq(error_of(o), "Cannot initialize photon '..': not a valid photon name (1-64 characters of "
                         "A-Z a-z 0-9 . _ -, not starting with a dot)");
        json_object_put(o);
        o = command(c, "n6", "kanban", "../../bin/sh", NULL);
        cr_assert_str_eq(error_of(o), "Tool not found: ../../bin/sh (not a valid method name: 1-64 characters of "
                         "A-Z a-z 0-9 . _ -, not starting with a dot)");
        json_object_put(o);
        o = conn_request(c, "n7", "{\"type\":\"command\",\"id\":\"n7\",\"photonName\":\"kanban\",\"method\":\"add\","
                         "\"instanceName\":\"a/b\"}");
        cr_assert_str_eq(error_of(o), "Invalid request format: instanceName 'a/b' is not a valid name (1-64 "
                         "characters of A-Z a-z 0-9 . _ -, not starting with a dot)");
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, exec_handler_timeout) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char *const[]) { "PHOTOND_HANDLER_TIMEOUT_MS=300", "PHOTOND_HANDLER_KILL_GRACE_MS=400",
                                               NULL } });
        Conn *c = conn_open(d);
        struct json_object *o;
        uint64_t t0;

        write_handler(d, "t/sleepy", "#!/bin/sh\necho 'going to sleep' >&2\nexec sleep 30\n");
        write_handler(d, "t/stubborn", "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.05; done\n");

        /* SIGTERM ends a handler that respects it. */
        t0 = mono_ms();
        o = command(c, "t1", "t", "sleepy", NULL);
        assert_contains(error_of(o), "Handler t/sleepy timed out after 300 ms");
        assert_contains(jstr(o, "error"), "going to sleep");
        cr_assert(mono_ms() - t0 < 2000, "took %llu ms", (unsigned long long) (mono_ms() - t0));
        json_object_put(o);

        /* One that ignores it is answered at the timeout all the same, and gets SIGKILL after the grace (the log
         * line is the only sign of that here; timeout_answers_the_caller_before_the_kill_grace has the details). */
        t0 = mono_ms();
        o = command(c, "t2", "t", "stubborn", NULL);
        assert_contains(error_of(o), "timed out after 300 ms");
        cr_assert(mono_ms() - t0 < 650, "answered after the grace: %llu ms", (unsigned long long) (mono_ms() - t0));
        json_object_put(o);
        while (!photond_log_has(d, "ignored SIGTERM, sending SIGKILL")) {
                cr_assert(mono_ms() - t0 < 5000, "no SIGKILL after the grace");
                usleep(10000);          /* a log line has no readiness signal */
        }

        /* timeoutMs overrides the default per call. */
        t0 = mono_ms();
        o = conn_request(c, "t3", "{\"type\":\"command\",\"id\":\"t3\",\"photonName\":\"t\",\"method\":\"sleepy\","
                         "\"timeoutMs\":100}");
        assert_contains(error_of(o), "timed out after 100 ms");
        cr_assert(mono_ms() - t0 >= 100);
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

/* A handler that ignores SIGTERM does not hold its caller past timeoutMs: the answer comes at the timeout, while
 * the process lives on through the kill grace, is killed and reaped, and meanwhile still counts against
 * MAX_CALLS. */
Test(dispatch, timeout_answers_the_caller_before_the_kill_grace) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char *const[]) { "PHOTOND_HANDLER_KILL_GRACE_MS=3000", "PHOTOND_MAX_CALLS=1", NULL } });
        Conn *c = conn_open(d);
        struct json_object *o;
        char fifo[512], script[1024], line[64] = "";
        struct pollfd pfd;
        uint64_t t0, answered;
        ssize_t n;
        pid_t pid;
        int fd;

        cr_assert(snprintf(fifo, sizeof(fifo), "%s/ready.fifo", d->home) < (int) sizeof(fifo));
        cr_assert_eq(mkfifo(fifo, 0600), 0);
        /* The pid goes out only once SIGTERM is ignored; exec keeps the pid (and the ignored disposition). */
        snprintf(script, sizeof(script), "#!/bin/sh\ntrap '' TERM\necho $$ > '%s'\nexec sleep 60\n", fifo);
        write_handler(d, "t/stubborn", script);
        write_handler(d, "t/quick", "#!/bin/sh\necho '{\"ok\":1}'\n");

        fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        cr_assert(fd >= 0);
        t0 = mono_ms();
        conn_send(c, "{\"type\":\"command\",\"id\":\"s1\",\"photonName\":\"t\",\"method\":\"stubborn\","
                  "\"timeoutMs\":500}");
        pfd = (struct pollfd) { .fd = fd, .events = POLLIN };
        cr_assert_eq(poll(&pfd, 1, 5000), 1, "the handler did not start");
        n = read(fd, line, sizeof(line) - 1);
        cr_assert(n > 0);
        line[n] = '\0';
        close(fd);
        pid = (pid_t) atoi(line);
        cr_assert_gt(pid, 1);
        cr_assert_lt(mono_ms() - t0, 500, "the handler must ignore SIGTERM before its timeout for this test");

        o = expect_line(c, "error", "s1", 10000);
        answered = mono_ms() - t0;
        assert_contains(jstr(o, "error"), "Handler t/stubborn timed out after 500 ms");
        json_object_put(o);
        cr_log_info("timeoutMs 500, grace 3000: answered after %llu ms", (unsigned long long) answered);
        cr_assert_geq(answered, 500, "answered before the timeout: %llu ms", (unsigned long long) answered);
        cr_assert_lt(answered, 500 + 3000, "answered after timeout + grace: %llu ms", (unsigned long long) answered);
        cr_assert_lt(answered, 1500, "answered %llu ms after the call, the timeout is 500 ms",
                     (unsigned long long) answered);

        /* The handler still runs (it ignored SIGTERM) and holds the only call slot. */
        cr_assert_eq(kill(pid, 0), 0, "the handler is still there during the grace");
        o = command(c, "q1", "t", "quick", NULL);
        assert_contains(error_of(o), "Busy:");
        json_object_put(o);

        /* SIGKILL after the grace, then reaped (kill() finds a zombie too, so ESRCH means reaped). Nothing signals
         * a reaping to another process: poll with a deadline. */
        while (kill(pid, 0) == 0) {
                cr_assert_lt(mono_ms() - t0, 500 + 3000 + 5000, "the handler was not killed and reaped");
                usleep(10000);
        }
        cr_assert_geq(mono_ms() - t0, 500 + 3000, "killed before the grace was over");
        cr_assert(photond_log_has(d, "Handler t/stubborn (pid"));
        cr_assert(photond_log_has(d, "ignored SIGTERM, sending SIGKILL"));

        /* The slot is free again. */
        o = command(c, "q2", "t", "quick", NULL);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, exec_handler_output_cap) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char *const[]) { "PHOTOND_HANDLER_MAX_OUTPUT_BYTES=100000", NULL } });
        Conn *c = conn_open(d);
        struct json_object *o;

        write_handler(d, "big/flood", "#!/bin/sh\nexec yes 0123456789\n");
        write_handler(d, "big/fits", "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' a\n");

        o = command(c, "b1", "big", "flood", NULL);
        assert_contains(error_of(o), "output too large");
        assert_contains(jstr(o, "error"), "100000");
        json_object_put(o);

        o = command(c, "b2", "big", "fits", NULL);
        cr_assert(jbool(o, "success"), "%s", jstr(o, "error"));
        cr_assert_eq(strlen(jstr(o, "data")), 100000);
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

static bool process_gone(pid_t pid) {
        char path[64], state = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return true;
        /* A zombie waiting for its (re)parent counts as gone. */
        if (fscanf(f, "%*d %*s %c", &state) != 1)
                state = 0;
        fclose(f);
        return state == 'Z' || state == 'X';
}

Test(dispatch, grandchild_holding_stdout_does_not_hang) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        char *pidfile, *script, *text = NULL;
        uint64_t t0;
        pid_t pid;
        FILE *f;

        cr_assert(asprintf(&pidfile, "%s/grandchild.pid", d->home) >= 0);
        cr_assert(asprintf(&script, "#!/bin/sh\nsleep 30 &\necho $! > %s\necho '\"done\"'\nexit 0\n", pidfile) >= 0);
        write_handler(d, "gc/run", script);
        free(script);

        t0 = mono_ms();
        o = command(c, "g1", "gc", "run", NULL);
        cr_assert_str_eq(jstr(o, "data"), "done", "%s", json_object_to_json_string(o));
        cr_assert(mono_ms() - t0 < 2000, "took %llu ms", (unsigned long long) (mono_ms() - t0));
        json_object_put(o);

        /* The grandchild was in the handler's process group, which photond cleans up. */
        f = fopen(pidfile, "re");
        cr_assert(f);
        cr_assert_eq(fscanf(f, "%d", &pid), 1);
        fclose(f);
        for (uint64_t deadline = mono_ms() + 3000; !process_gone(pid); usleep(10000))
                cr_assert(mono_ms() < deadline, "grandchild %d still alive", (int) pid);
        free(text);
        free(pidfile);

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, handler_that_never_reads_large_args) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d), *c2;
        struct json_object *o;
        size_t n = 600 * 1024;
        char *big = malloc(n + 32);

        /* The args do not fit in a pipe buffer; photond must not block writing them. */
        write_handler(d, "lazy/run", "#!/bin/sh\nsleep 0.3\necho ok\n");
        memset(big, 'x', n);
        big[n] = '\0';
        conn_send(c, "{\"type\":\"command\",\"id\":\"l1\",\"photonName\":\"lazy\",\"method\":\"run\",\"args\":"
                  "{\"blob\":\"%s\"}}", big);

        /* The loop stays responsive meanwhile. */
        c2 = conn_open(d);
        o = conn_request(c2, "p", "{\"type\":\"ping\",\"id\":\"p\"}");
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);

        o = expect_line(c, "result", "l1", 5000);
        cr_assert_str_eq(jstr(o, "data"), "ok");
        json_object_put(o);
        free(big);

        conn_close(c2);
        conn_close(c);
        daemon_stop_checked(d);
}

/* ---- many calls ---- */

Test(dispatch, hundred_concurrent_commands) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char *const[]) { "PHOTOND_MAX_CALLS_PER_PHOTON=200", NULL } });
        enum { CONNS = 4, PER = 25 };
        Conn *c[CONNS], *p;
        bool seen[CONNS * PER] = {};
        struct json_object *o;
        int answered = 0;

        write_handler(d, "calc/double", "#!/bin/sh\nread -r args\nn=${args#*:}\nn=${n%%\\}}\necho $((n * 2))\n");

        /* Pipelined: every request is written before any reply is read. */
        for (int i = 0; i < CONNS; i++)
                c[i] = conn_open(d);
        for (int k = 0; k < PER; k++)
                for (int i = 0; i < CONNS; i++)
                        conn_send(c[i], "{\"type\":\"command\",\"id\":\"q%d\",\"photonName\":\"calc\","
                                  "\"method\":\"double\",\"args\":{\"n\":%d}}", i * PER + k, i * PER + k);

        for (int i = 0; i < CONNS; i++)
                for (int k = 0; k < PER; k++) {
                        int n;

                        o = conn_expect(c[i], 20000);
                        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
                        cr_assert_eq(sscanf(jstr(o, "id"), "q%d", &n), 1);
                        cr_assert(n / PER == i, "reply %d on connection %d", n, i);
                        cr_assert(!seen[n], "two replies for q%d", n);
                        seen[n] = true;
                        cr_assert_eq(jint(o, "data"), 2 * n);
                        answered++;
                        json_object_put(o);
                }
        cr_assert_eq(answered, CONNS * PER);

        /* The same through a provider that answers as the invokes arrive. */
        p = provider_open(d, "calc");
        for (int k = 0; k < PER; k++)
                for (int i = 0; i < CONNS; i++)
                        conn_send(c[i], "{\"type\":\"command\",\"id\":\"r%d\",\"photonName\":\"calc\","
                                  "\"method\":\"double\",\"args\":{\"n\":%d}}", i * PER + k, i * PER + k);
        for (int j = 0; j < CONNS * PER; j++) {
                struct json_object *inv = expect_invoke(p);
                conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":%lld}",
                          jstr(inv, "id"), (long long) jint(inv, "args.n") * 3);
                json_object_put(inv);
        }
        answered = 0;
        for (int i = 0; i < CONNS; i++)
                for (int k = 0; k < PER; k++) {
                        int n;

                        o = conn_expect(c[i], 10000);
                        cr_assert_eq(sscanf(jstr(o, "id"), "r%d", &n), 1);
                        cr_assert_eq(jint(o, "data"), 3 * n);
                        answered++;
                        json_object_put(o);
                }
        cr_assert_eq(answered, CONNS * PER);

        for (int i = 0; i < CONNS; i++)
                conn_close(c[i]);
        conn_close(p);
        daemon_stop_checked(d);
}

/* ---- photonctl ---- */

/* Starts "photonctl provide PHOTON -- CMD..." in the background; returns its pid. */
static pid_t ctl_provide_start(Daemon *d, const char *photon, const char *const *cmd) {
        const char *argv[32];
        int argc = 0;
        pid_t pid;

        argv[argc++] = photonctl_binary();
        argv[argc++] = "--socket";
        argv[argc++] = d->socket_path;
        argv[argc++] = "provide";
        argv[argc++] = photon;
        argv[argc++] = "--";
        for (; *cmd && argc < 31; cmd++)
                argv[argc++] = *cmd;
        argv[argc] = NULL;

        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(null, STDIN_FILENO);
                dup2(null, STDOUT_FILENO);
                execv(argv[0], (char**) argv);
                _exit(127);
        }
        return pid;
}

static void wait_for_provider(Daemon *d, const char *photon) {
        Conn *c = conn_open(d);

        /* Readiness is visible in status: poll it with a deadline. */
        for (uint64_t deadline = mono_ms() + 5000;;) {
                struct json_object *o = conn_status(c);
                int64_t n = jint(o, "data.photonsLoaded");

                json_object_put(o);
                if (n > 0)
                        break;
                cr_assert(mono_ms() < deadline, "photonctl provide %s did not register", photon);
                usleep(10000);
        }
        conn_close(c);
}

Test(dispatch, photonctl_call_provide_ps) {
        Daemon *d = daemon_start(NULL);
        char *out = NULL;
        int status;
        pid_t pid;

        write_handler(d, "echo/hi", "#!/bin/sh\nread -r args\nprintf '{\"got\":%s}\\n' \"$args\"\n");

        cr_assert_eq(run_ctl(d, &out, "call", "echo", "hi", "{\"a\":1}", NULL), 0);
        cr_assert_str_eq(out, "{\"got\":{\"a\":1}}\n");
        free(out);

        cr_assert_neq(run_ctl(d, &out, "call", "ghost", "hi", NULL), 0);
        free(out);
        cr_assert_neq(run_ctl(d, &out, "call", "echo", "hi", "{not json", NULL), 0);
        free(out);

        /* Any command becomes a provider: args on stdin, PHOTON_* in the environment, stdout the result. */
        pid = ctl_provide_start(d, "shell", (const char *const[]) {
                "/bin/sh", "-c", "read -r a; if [ \"$PHOTON_METHOD\" = fail ]; then echo broken >&2; exit 4; fi; "
                "printf '{\"m\":\"%s\",\"t\":\"%s\",\"a\":%s}' \"$PHOTON_METHOD\" \"$PHOTON_TRIGGER\" \"$a\"", NULL });
        wait_for_provider(d, "shell");

        cr_assert_eq(run_ctl(d, &out, "call", "shell", "greet", "{\"x\":2}", NULL), 0);
        cr_assert_str_eq(out, "{\"m\":\"greet\",\"t\":\"command\",\"a\":{\"x\":2}}\n");
        free(out);

        cr_assert_eq(run_ctl(d, &out, "--json", "call", "shell", "greet", NULL), 0);
        assert_contains(out, "\"type\":\"result\"");
        assert_contains(out, "\"durationMs\":");
        free(out);

        cr_assert_neq(run_ctl(d, &out, "call", "shell", "fail", NULL), 0);
        free(out);
        {
                Conn *c = conn_open(d);
                struct json_object *o = command(c, "f", "shell", "fail", NULL);
                assert_contains(error_of(o), "broken");
                assert_contains(jstr(o, "error"), "status 4");
                json_object_put(o);
                conn_close(c);
        }

        cr_assert_eq(run_ctl(d, &out, "ps", NULL), 0);
        assert_contains(out, "shell");
        free(out);
        cr_assert_eq(run_ctl(d, &out, "--json", "ps", NULL), 0);
        assert_contains(out, "\"providers\":[{\"photonName\":\"shell\"");
        free(out);

        cr_assert_eq(kill(pid, SIGTERM), 0);
        cr_assert_eq(waitpid(pid, &status, 0), pid);

        conn_close(conn_open(d));
        daemon_stop_checked(d);
}

Test(dispatch, photonctl_call_shows_emits_and_answers_prompts) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "wizard");
        int in[2], out[2], err[2], status;
        char buf[4096];
        size_t len = 0;
        struct json_object *inv, *o;
        char inv_id[64];
        pid_t pid;

        cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
        cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
        cr_assert_eq(pipe2(err, O_CLOEXEC), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(in[0], STDIN_FILENO);
                dup2(out[1], STDOUT_FILENO);
                dup2(err[1], STDERR_FILENO);
                execl(photonctl_binary(), photonctl_binary(), "--socket", d->socket_path, "call", "wizard", "run",
                      (char*) NULL);
                _exit(127);
        }
        close(in[0]);
        close(out[1]);
        close(err[1]);

        inv = expect_invoke(p);
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);
        conn_send(p, "{\"type\":\"emit\",\"id\":\"%s\",\"emitData\":{\"emit\":\"progress\",\"message\":\"step 1 of 2\"}}",
                  inv_id);
        conn_send(p, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"Name?\"}}", inv_id);
        cr_assert_eq(write(in[1], "Ada\n", 4), 4);
        o = expect_line(p, "prompt_response", inv_id, 5000);
        cr_assert_str_eq(jstr(o, "promptValue"), "Ada");
        json_object_put(o);
        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":{\"hello\":\"Ada\"}}", inv_id);

        for (;;) {
                ssize_t n = read(out[0], buf + len, sizeof(buf) - 1 - len);
                if (n <= 0)
                        break;
                len += n;
        }
        buf[len] = '\0';
        cr_assert_str_eq(buf, "{\"hello\":\"Ada\"}\n");
        len = 0;
        for (;;) {
                ssize_t n = read(err[0], buf + len, sizeof(buf) - 1 - len);
                if (n <= 0)
                        break;
                len += n;
        }
        buf[len] = '\0';
        assert_contains(buf, "step 1 of 2");
        assert_contains(buf, "Name?");
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d, stderr: %s", status, buf);

        close(in[1]);
        close(out[0]);
        close(err[0]);
        conn_close(p);
        daemon_stop_checked(d);
}

/* ---- follow-ups on channels ---- */

static void subscribe(Conn *c, const char *channel) {
        struct json_object *o;

        o = conn_request(c, "sub", "{\"type\":\"subscribe\",\"id\":\"sub\",\"channel\":\"%s\"}", channel);
        cr_assert(jbool(o, "data.subscribed"), "%s", json_object_to_json_string(o));
        json_object_put(o);
}

Test(dispatch, state_changed_published_without_the_caller) {
        Daemon *d = daemon_start(NULL);
        Conn *s = conn_open(d), *c = conn_open(d);
        struct json_object *o;

        write_handler(d, "notes/add", "#!/bin/sh\nread -r a\nprintf '{\"saved\":%s}' \"$a\"\n");
        write_handler(d, "notes/fail", "#!/bin/sh\nexit 1\n");
        subscribe(s, "notes:default:state-changed");
        subscribe(s, "notes:work:state-changed");
        subscribe(c, "notes:*");

        o = command(c, "a1", "notes", "add", "{\"text\":\"hi\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        o = expect_line(s, "channel_message", NULL, 5000);
        cr_assert_str_eq(jstr(o, "channel"), "notes:default:state-changed");
        cr_assert_str_eq(jstr(o, "message.event"), "state-changed");
        cr_assert_str_eq(jstr(o, "message.method"), "add");
        cr_assert_str_eq(jstr(o, "message.params.text"), "hi");
        cr_assert_str_eq(jstr(o, "message.instance"), "default");
        cr_assert_str_eq(jstr(o, "message.data.saved.text"), "hi");
        cr_assert_str_eq(jstr(o, "message.uri"), "photon://notes/default");
        json_object_put(o);

        o = conn_request(c, "a2", "{\"type\":\"command\",\"id\":\"a2\",\"photonName\":\"notes\",\"method\":\"add\","
                         "\"args\":{\"text\":\"w\"},\"instanceName\":\"work\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        o = expect_line(s, "channel_message", NULL, 5000);
        cr_assert_str_eq(jstr(o, "channel"), "notes:work:state-changed");
        cr_assert_str_eq(jstr(o, "message.instance"), "work");
        cr_assert_str_eq(jstr(o, "message.uri"), "photon://notes/work");
        json_object_put(o);

        /* A failed call changed nothing. */
        o = command(c, "a3", "notes", "fail", NULL);
        error_of(o);
        json_object_put(o);
        cr_assert_null(conn_recv(s, 300), "state-changed after a failure");

        /* The caller, although subscribed to notes:*, never hears its own state-changed. */
        cr_assert_null(conn_recv(c, 100), "the caller got its own state-changed");

        conn_close(c);
        conn_close(s);
        daemon_stop_checked(d);
}

Test(dispatch, emit_with_a_channel_is_published) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "wizard"), *s = conn_open(d), *c = conn_open(d);
        struct json_object *o, *inv;
        char inv_id[64];

        subscribe(s, "wizard:log");
        subscribe(c, "wizard:log");
        conn_send(c, "{\"type\":\"command\",\"id\":\"w1\",\"photonName\":\"wizard\",\"method\":\"run\"}");
        inv = expect_invoke(p);
        snprintf(inv_id, sizeof(inv_id), "%s", jstr(inv, "id"));
        json_object_put(inv);

        /* Both "emit" and "channel": the caller gets the emit, everyone else on the channel the message. */
        conn_send(p, "{\"type\":\"emit\",\"id\":\"%s\",\"emitData\":{\"emit\":\"log\",\"channel\":\"wizard:log\","
                  "\"line\":\"step 1\"}}", inv_id);
        o = expect_line(s, "channel_message", NULL, 5000);
        cr_assert_str_eq(jstr(o, "channel"), "wizard:log");
        cr_assert_str_eq(jstr(o, "message.line"), "step 1");
        json_object_put(o);
        o = expect_line(c, "emit", "w1", 5000);
        cr_assert_str_eq(jstr(o, "emitData.line"), "step 1");
        json_object_put(o);

        conn_send(p, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"data\":true}", inv_id);
        o = expect_line(c, "result", "w1", 5000);
        json_object_put(o);

        conn_close(c);
        conn_close(s);
        conn_close(p);
        daemon_stop_checked(d);
}

Test(dispatch, shutdown_with_calls_in_flight) {
        Daemon *d = daemon_start(NULL);
        Conn *p = provider_open(d, "waiting"), *c = conn_open(d);
        char *script, *pidfile;
        pid_t pid = 0;
        FILE *f;

        cr_assert(asprintf(&pidfile, "%s/handler.pid", d->home) >= 0);
        cr_assert(asprintf(&script, "#!/bin/sh\necho $$ > %s.tmp\nmv %s.tmp %s\nexec sleep 30\n", pidfile, pidfile,
                           pidfile) >= 0);
        write_handler(d, "sleeper/run", script);
        free(script);

        conn_send(c, "{\"type\":\"command\",\"id\":\"s1\",\"photonName\":\"sleeper\",\"method\":\"run\"}");
        conn_send(c, "{\"type\":\"command\",\"id\":\"w1\",\"photonName\":\"waiting\",\"method\":\"run\"}");
        json_object_put(expect_invoke(p));
        for (uint64_t deadline = mono_ms() + 5000; !(f = fopen(pidfile, "re")); usleep(10000))
                cr_assert(mono_ms() < deadline, "the handler did not start");
        cr_assert_eq(fscanf(f, "%d", &pid), 1);
        fclose(f);

        /* photond exits cleanly (no leaks under sanitizers) and takes its handlers with it. */
        daemon_stop_checked(d);
        for (uint64_t deadline = mono_ms() + 3000; !process_gone(pid); usleep(10000))
                cr_assert(mono_ms() < deadline, "handler %d survived photond", (int) pid);

        free(pidfile);
        conn_close(c);
        conn_close(p);
}

Test(dispatch, provider_registration_cap) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char *const[]) { "PHOTOND_MAX_PROVIDERS=2", NULL } });
        Conn *a = provider_open(d, "one"), *b = conn_open(d);
        struct json_object *o;

        /* Providing the same photon again is no new registration. */
        o = conn_request(a, "again", "{\"type\":\"provide\",\"id\":\"again\",\"photonName\":\"one\"}");
        cr_assert(jbool(o, "success"));
        cr_assert_eq(jint(o, "data.providers"), 1);
        json_object_put(o);

        o = conn_request(a, "two", "{\"type\":\"provide\",\"id\":\"two\",\"photonName\":\"two\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        o = conn_request(b, "three", "{\"type\":\"provide\",\"id\":\"three\",\"photonName\":\"three\"}");
        assert_contains(error_of(o), "Too many providers");
        assert_contains(jstr(o, "error"), "PHOTOND_MAX_PROVIDERS");
        json_object_put(o);

        o = conn_status(b);
        cr_assert_eq(jint(o, "data.providers"), 2);
        cr_assert_eq(jint(o, "data.photonsLoaded"), 2);
        json_object_put(o);

        /* A disconnect frees both registrations of that connection. */
        conn_close(a);
        wait_providers(b, 0);
        o = conn_request(b, "three", "{\"type\":\"provide\",\"id\":\"three\",\"photonName\":\"three\"}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_status(b);
        cr_assert_eq(jint(o, "data.providers"), 1);
        cr_assert_eq(jint(o, "data.photonsLoaded"), 1);
        json_object_put(o);

        conn_close(b);
        daemon_stop_checked(d);
}

/* ---- the examples in docs/examples work as documented ---- */

static const char* examples_dir(void) {
        const char *e = getenv("PHOTOND_EXAMPLES");

        if (!e)
                cr_skip_test("PHOTOND_EXAMPLES is not set (run under meson test)");
        return e;
}

Test(dispatch, example_handler_sh) {
        const char *examples = examples_dir();
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;
        char cmd[2048];

        mkdir_p(d->home);
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s/handlers' && install -m 0755 '%s/handler.sh' '%s/handlers/sysinfo'",
                 d->home, examples, d->home);
        cr_assert_eq(system(cmd), 0);

        o = command(c, "e1", "sysinfo", "echo", "{\"a\":[1,\"x\"]}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.a.0"), 1);
        cr_assert_str_eq(jstr(o, "data.a.1"), "x");
        json_object_put(o);

        o = command(c, "e2", "sysinfo", "whoami", NULL);
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        assert_contains(jstr(o, "data"), "via command");
        json_object_put(o);

        o = command(c, "e3", "sysinfo", "uptime", NULL);
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert(jhas(o, "data.seconds") && jhas(o, "data.load"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        o = command(c, "e4", "sysinfo", "reboot", NULL);
        assert_contains(error_of(o), "unknown method 'reboot'");
        json_object_put(o);

        conn_close(c);
        daemon_stop_checked(d);
}

Test(dispatch, example_provider_js) {
        const char *examples = examples_dir();
        char script[1024];
        pid_t node;

        if (system("command -v node >/dev/null 2>&1") != 0)
                cr_skip_test("node is not installed");
        snprintf(script, sizeof(script), "%s/provider.js", examples);

        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o;

        node = fork();
        cr_assert(node >= 0);
        if (node == 0) {
                setenv("PHOTON_HOME", d->home, 1);
                execlp("node", "node", script, (char*) NULL);
                _exit(127);
        }

        /* Ready when photond counts its registration. */
        for (uint64_t deadline = mono_ms() + 20000;;) {
                o = conn_status(c);
                int64_t have = jint(o, "data.providers");
                json_object_put(o);
                if (have == 1)
                        break;
                cr_assert(mono_ms() < deadline, "provider.js did not register");
                cr_assert_eq(waitpid(node, NULL, WNOHANG), 0, "provider.js exited");
                usleep(10000);
        }

        o = command(c, "n1", "notes", "add", "{\"text\":\"milk\"}");
        cr_assert_str_eq(jstr(o, "type"), "emit", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "emitData.message"), "saved note 1");
        json_object_put(o);
        o = conn_expect(c, 5000);
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.id"), 1);
        cr_assert_str_eq(jstr(o, "data.text"), "milk");
        json_object_put(o);
        o = command(c, "n2", "notes", "list", NULL);
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.0"), "milk");
        json_object_put(o);

        kill(node, SIGTERM);
        waitpid(node, NULL, 0);
        conn_close(c);
        daemon_stop_checked(d);
}
