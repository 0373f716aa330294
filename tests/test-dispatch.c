/* SPDX-License-Identifier: MIT */

/* Unit tests for the pure parts of method dispatch: handler path resolution, the handler environment, turning
 * handler output into a result, the stderr tail and exit messages; then dispatcher_call() on a real event loop, and
 * the "dispatch_peer" suite: providers and callers that are fake DispatchPeers, no Client. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "json-util.h"
#include "photond-dispatch.h"

static struct json_object* parse(const char *s) {
        struct json_object *o = (struct json_object*) 0x1;

        cr_assert_eq(dispatch_parse_output(s, strlen(s), &o), 0);
        return o;
}

Test(dispatch, output_json_values) {
        struct json_object *o;

        o = parse("{\"a\":1}\n");
        cr_assert(json_object_is_type(o, json_type_object));
        cr_assert_eq(json_object_get_int(json_object_object_get(o, "a")), 1);
        json_object_put(o);

        /* A bare number needs no trailing newline. */
        o = parse("42");
        cr_assert(json_object_is_type(o, json_type_int));
        cr_assert_eq(json_object_get_int(o), 42);
        json_object_put(o);

        o = parse("  [1,2]\r\n\n");
        cr_assert(json_object_is_type(o, json_type_array));
        cr_assert_eq(json_object_array_length(o), 2);
        json_object_put(o);

        o = parse("\"quoted\"\n");
        cr_assert_str_eq(json_object_get_string(o), "quoted");
        json_object_put(o);

        o = parse("true");
        cr_assert(json_object_get_boolean(o));
        json_object_put(o);

        cr_assert_null(parse("null\n"));
}

Test(dispatch, output_text_and_empty) {
        struct json_object *o;

        o = parse("hello world\n");
        cr_assert(json_object_is_type(o, json_type_string));
        cr_assert_str_eq(json_object_get_string(o), "hello world");
        json_object_put(o);

        /* Only the trailing newlines go: other whitespace is the handler's. */
        o = parse("  two\nlines \r\n\n");
        cr_assert_str_eq(json_object_get_string(o), "  two\nlines ");
        json_object_put(o);

        /* Two JSON values are not one result. */
        o = parse("1 2\n");
        cr_assert_str_eq(json_object_get_string(o), "1 2");
        json_object_put(o);

        o = parse("{\"a\":1} trailing");
        cr_assert_str_eq(json_object_get_string(o), "{\"a\":1} trailing");
        json_object_put(o);

        cr_assert_null(parse(""));
        cr_assert_null(parse(" \n\n"));
}

Test(dispatch, output_invalid_utf8_and_nul) {
        struct json_object *o;
        const char bin[] = { 'a', '\0', 'b', '\xff', '\n' };

        o = parse("caf\xc3\xa9 \xff\n");
        cr_assert_str_eq(json_object_get_string(o), "caf\xc3\xa9 \xef\xbf\xbd");
        json_object_put(o);

        /* Invalid UTF-8 inside a JSON string is repaired, not passed through to clients. */
        o = parse("{\"s\":\"x\xc0\xafy\"}");
        cr_assert_str_eq(json_object_get_string(json_object_object_get(o, "s")), "x\xef\xbf\xbd\xef\xbf\xbdy");
        json_object_put(o);

        cr_assert_eq(dispatch_parse_output(bin, sizeof(bin), &o), 0);
        cr_assert_eq(json_object_get_string_len(o), 6);
        cr_assert_eq(memcmp(json_object_get_string(o), "a\0b\xef\xbf\xbd", 6), 0);
        json_object_put(o);
}

Test(dispatch, utf8_sanitize_cases) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "plain", "plain" },
                { "\xe2\x82\xac", "\xe2\x82\xac" },                    /* € */
                { "\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80" },            /* an emoji */
                { "\xc0\x80", "\xef\xbf\xbd\xef\xbf\xbd" },            /* overlong NUL */
                { "\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* overlong '/' */
                { "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* a surrogate */
                { "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* > U+10FFFF */
                { "ab\xe2\x82", "ab\xef\xbf\xbd\xef\xbf\xbd" },        /* cut short */
                { "", "" },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *out;
                size_t len;

                cr_assert_eq(utf8_sanitize(cases[i].in, strlen(cases[i].in), &out, &len), 0);
                cr_assert_str_eq(out, cases[i].out, "case %zu", i);
                cr_assert_eq(len, strlen(cases[i].out));
                free(out);
        }
}

Test(dispatch, tail_keeps_the_last_bytes) {
        TailBuf t = {};
        char big[5000], *text;

        tail_buf_append(&t, "first\n", 6);
        tail_buf_append(&t, "second\n\n", 8);
        text = tail_buf_text(&t);
        cr_assert_str_eq(text, "first\nsecond");
        free(text);

        memset(big, 'x', sizeof(big));
        memcpy(big + sizeof(big) - 4, "END\n", 4);
        tail_buf_append(&t, big, sizeof(big));
        cr_assert_eq(t.size, TAIL_BUF_BYTES);
        text = tail_buf_text(&t);
        cr_assert_eq(strlen(text), TAIL_BUF_BYTES - 1);
        cr_assert_str_eq(text + strlen(text) - 3, "END");
        free(text);

        /* Many small appends past the size keep exactly the newest bytes. */
        t = (TailBuf) {};
        for (int i = 0; i < 1000; i++) {
                char line[16];
                int n = snprintf(line, sizeof(line), "%04d\n", i);
                tail_buf_append(&t, line, n);
        }
        cr_assert_eq(t.size, TAIL_BUF_BYTES);
        text = tail_buf_text(&t);
        cr_assert_str_eq(text + strlen(text) - 4, "0999");
        /* 5000 bytes written, the last 2048 kept: the cut falls two bytes into "0590\n". */
        cr_assert_eq(memcmp(text, "90\n0591\n", 8), 0, "got %.10s", text);
        free(text);
}

Test(dispatch, tail_text_starts_at_a_character) {
        TailBuf t = {};
        char buf[TAIL_BUF_BYTES + 1], *text;

        /* "é" is 2 bytes: the cut falls inside the first one. */
        memset(buf, 'a', sizeof(buf));
        buf[0] = '\xc3';
        buf[1] = '\xa9';
        tail_buf_append(&t, buf, sizeof(buf));
        cr_assert_eq((unsigned char) t.data[0], 0xa9);
        text = tail_buf_text(&t);
        cr_assert_eq(text[0], 'a');
        cr_assert_eq(strlen(text), TAIL_BUF_BYTES - 1);
        free(text);

        t = (TailBuf) {};
        text = tail_buf_text(&t);
        cr_assert_str_eq(text, "");
        free(text);
}

static bool env_has(char **env, const char *entry) {
        for (char **e = env; *e; e++)
                if (strcmp(*e, entry) == 0)
                        return true;
        return false;
}

static size_t env_count(char **env) {
        size_t n = 0;

        while (env[n])
                n++;
        return n;
}

Test(dispatch, handler_environment_is_exactly_the_documented_one) {
        char **env = NULL;

        cr_assert_eq(dispatch_build_env("/home/u", "kanban", "add", DISPATCH_TRIGGER_COMMAND, NULL, &env), 0);
        cr_assert_eq(env_count(env), 5);
        cr_assert(env_has(env, "HOME=/home/u"));
        cr_assert(env_has(env, "PHOTON_NAME=kanban"));
        cr_assert(env_has(env, "PHOTON_METHOD=add"));
        cr_assert(env_has(env, "PHOTON_TRIGGER=command"));
        cr_assert_eq(strncmp(env[0], "PATH=/", 6), 0);
        dispatch_strv_free(env);

        cr_assert_eq(dispatch_build_env(NULL, "kanban", "sweep", DISPATCH_TRIGGER_SCHEDULE, "kanban:ipc:nightly",
                                        &env), 0);
        cr_assert_eq(env_count(env), 6);
        cr_assert(env_has(env, "HOME=/"));
        cr_assert(env_has(env, "PHOTON_TRIGGER=schedule"));
        cr_assert(env_has(env, "PHOTON_JOB_ID=kanban:ipc:nightly"));
        dispatch_strv_free(env);

        cr_assert_eq(dispatch_build_env("/", "p", "m", DISPATCH_TRIGGER_WEBHOOK, NULL, &env), 0);
        cr_assert(env_has(env, "PHOTON_TRIGGER=webhook"));
        dispatch_strv_free(env);

        cr_assert_eq(dispatch_build_env("/", "p", "m", _DISPATCH_TRIGGER_MAX, NULL, &env), -EINVAL);
}

Test(dispatch, trigger_names) {
        cr_assert_str_eq(dispatch_trigger_to_string(DISPATCH_TRIGGER_COMMAND), "command");
        cr_assert_str_eq(dispatch_trigger_to_string(DISPATCH_TRIGGER_SCHEDULE), "schedule");
        cr_assert_str_eq(dispatch_trigger_to_string(DISPATCH_TRIGGER_WEBHOOK), "webhook");
        cr_assert_null(dispatch_trigger_to_string(_DISPATCH_TRIGGER_MAX));
        cr_assert_null(dispatch_trigger_to_string(_DISPATCH_TRIGGER_INVALID));
}

static void write_file(const char *dir, const char *name, mode_t mode) {
        char *p;
        int fd;

        cr_assert(asprintf(&p, "%s/%s", dir, name) >= 0);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        cr_assert(fd >= 0, "%s: %m", p);
        cr_assert_eq(write(fd, "#!/bin/sh\n", 10), 10);
        close(fd);
        cr_assert_eq(chmod(p, mode), 0);
        free(p);
}

Test(dispatch, handler_resolution) {
        char *dir = tmpdir_new(), *sub, *path = NULL;
        bool method_arg;

        cr_assert(asprintf(&sub, "%s/kanban", dir) >= 0);
        cr_assert_eq(mkdir(sub, 0755), 0);
        write_file(sub, "add", 0755);
        write_file(sub, "notexec", 0644);
        cr_assert(asprintf(&path, "%s/dir-method", sub) >= 0);
        cr_assert_eq(mkdir(path, 0755), 0);
        free(path);
        write_file(dir, "single", 0755);
        write_file(dir, "plainfile", 0600);

        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "add", &path, &method_arg), 0);
        cr_assert(!method_arg);
        cr_assert_str_eq(strrchr(path, '/'), "/add");
        cr_assert_eq(strncmp(path, sub, strlen(sub)), 0);
        free(path);

        /* One executable for the whole photon: the method comes as argv[1]. */
        cr_assert_eq(dispatch_resolve_handler(dir, "single", "anything", &path, &method_arg), 0);
        cr_assert(method_arg);
        cr_assert_str_eq(strrchr(path, '/'), "/single");
        free(path);

        cr_assert_eq(dispatch_resolve_handler(dir, "missing", "add", &path, &method_arg), -ENOENT);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "nope", &path, &method_arg), -ESRCH);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "dir-method", &path, &method_arg), -ESRCH);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "notexec", &path, &method_arg), -EACCES);
        cr_assert_eq(dispatch_resolve_handler(dir, "plainfile", "x", &path, &method_arg), -EACCES);
        cr_assert_eq(dispatch_resolve_handler("/nonexistent-photond-dir", "kanban", "add", &path, &method_arg),
                     -ENOENT);

        /* StrictModes: a handler others can change is refused, file or directory. */
        write_file(sub, "groupw", 0775);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "groupw", &path, &method_arg), -EPERM);
        write_file(dir, "otherw", 0757);
        cr_assert_eq(dispatch_resolve_handler(dir, "otherw", "x", &path, &method_arg), -EPERM);
        cr_assert_eq(chmod(sub, 0775), 0);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "add", &path, &method_arg), -EPERM);
        cr_assert_eq(chmod(sub, 0755), 0);
        cr_assert_eq(chmod(dir, 0777), 0);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "add", &path, &method_arg), -EPERM);
        cr_assert_eq(chmod(dir, 0700), 0);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "add", &path, &method_arg), 0);
        free(path);
        if (geteuid() == 0) {
                char *foreign;

                /* Owned by another user: refused even without write bits for others. */
                cr_assert(asprintf(&foreign, "%s/add", sub) >= 0);
                cr_assert_eq(chown(foreign, 65534, 65534), 0);
                cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "add", &path, &method_arg), -EPERM);
                cr_assert_eq(chown(foreign, 0, 0), 0);
                free(foreign);
        }

        /* Names never escape the handlers directory. */
        cr_assert_eq(dispatch_resolve_handler(dir, "..", "add", &path, &method_arg), -EINVAL);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "../single", &path, &method_arg), -EINVAL);
        cr_assert_eq(dispatch_resolve_handler(dir, ".hidden", "add", &path, &method_arg), -EINVAL);
        cr_assert_eq(dispatch_resolve_handler(dir, "kanban", "", &path, &method_arg), -EINVAL);
        cr_assert_eq(dispatch_resolve_handler(dir, "a/b", "add", &path, &method_arg), -EINVAL);
        cr_assert_eq(dispatch_resolve_handler(NULL, "kanban", "add", &path, &method_arg), -EINVAL);

        free(sub);
        tmpdir_remove(dir);
}

Test(dispatch, exit_messages) {
        char *m;

        m = dispatch_exit_message("kanban", "add", CLD_EXITED, 3, "oops: disk full");
        cr_assert_str_eq(m, "Handler kanban/add exited with status 3: oops: disk full");
        free(m);

        m = dispatch_exit_message("kanban", "add", CLD_KILLED, SIGSEGV, "");
        cr_assert_str_eq(m, "Handler kanban/add was killed by signal SIGSEGV");
        free(m);

        m = dispatch_exit_message("kanban", "add", CLD_DUMPED, SIGABRT, NULL);
        cr_assert_str_eq(m, "Handler kanban/add was killed by signal SIGABRT (core dumped)");
        free(m);
}

/* ---- dispatcher_call(): the contract jobs and webhooks rely on, on a real event loop ---- */

#include <sys/socket.h>

#include "fd-util.h"
#include "photond-channel.h"
#include "photond-limits.h"
#include "photond-manager.h"

typedef struct Outcome {
        unsigned n_called;
        bool success;
        char *data;             /* compact JSON of the result, or NULL */
        char *error;
        uint64_t duration_ms;
} Outcome;

static void on_result(const DispatchResult *result, void *userdata) {
        Outcome *o = userdata;

        o->n_called++;
        o->success = result->success;
        o->duration_ms = result->duration_ms;
        free(o->data);
        free(o->error);
        o->data = result->data ? strdup(json_object_to_json_string_ext(result->data, JSON_FORMAT_FLAGS)) : NULL;
        o->error = result->error ? strdup(result->error) : NULL;
}

static Manager* manager_for_test(char **ret_home) {
        char *home = tmpdir_new(), *dir;
        Manager *m = NULL;

        cr_assert_eq(setenv("PHOTON_HOME", home, 1), 0);
        cr_assert_eq(setenv("HOME", home, 1), 0);
        cr_assert_eq(manager_new(&(ManagerConfig) { .bus_mode = BUS_MODE_NONE }, &m), 0);
        cr_assert(asprintf(&dir, "%s/handlers", home) >= 0);
        cr_assert_eq(mkdir(dir, 0755), 0);
        free(dir);
        *ret_home = home;
        return m;
}

static void handler_script(const char *home, const char *photon, const char *script) {
        char *path;
        FILE *f;

        cr_assert(asprintf(&path, "%s/handlers/%s", home, photon) >= 0);
        f = fopen(path, "we");
        cr_assert(f);
        fputs(script, f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(chmod(path, 0755), 0);
        free(path);
}

static void run_until(Manager *m, const unsigned *counter, unsigned want) {
        for (int i = 0; *counter < want; i++) {
                cr_assert(i < 1000, "no callback within 10 s");
                cr_assert(sd_event_run(m->event, 10 * USEC_PER_MSEC) >= 0);
        }
}

Test(dispatch_call, callback_runs_later_exactly_once) {
        char *home;
        Manager *m = manager_for_test(&home);
        Outcome o = {};
        DispatchCall *call = NULL;

        handler_script(home, "jobs", "#!/bin/sh\nread -r a\nprintf '{\"m\":\"%s\",\"t\":\"%s\",\"j\":\"%s\",\"a\":%s}' "
                       "\"$1\" \"$PHOTON_TRIGGER\" \"$PHOTON_JOB_ID\" \"$a\"\n");
        cr_assert(dispatcher_can_serve(m->dispatcher, "jobs", "sweep"));
        cr_assert(!dispatcher_can_serve(m->dispatcher, "nobody", "sweep"));
        cr_assert(!dispatcher_can_serve(m->dispatcher, "..", "sweep"));

        struct json_object *args = json_tokener_parse("{\"days\":3}");
        cr_assert_eq(dispatcher_call(m->dispatcher, &(DispatchRequest) {
                        .photon = "jobs", .method = "sweep", .args = args, .trigger = DISPATCH_TRIGGER_SCHEDULE,
                        .job_id = "jobs:ipc:nightly" }, on_result, &o, &call, NULL), 0);
        json_object_put(args);          /* borrowed: the call keeps its own reference */
        cr_assert_not_null(call);
        cr_assert_eq(o.n_called, 0, "the callback ran inside dispatcher_call()");
        cr_assert_eq(dispatcher_running_calls(m->dispatcher), 1);

        run_until(m, &o.n_called, 1);
        cr_assert(o.success, "%s", o.error);
        cr_assert_str_eq(o.data, "{\"m\":\"sweep\",\"t\":\"schedule\",\"j\":\"jobs:ipc:nightly\",\"a\":{\"days\":3}}");
        cr_assert_eq(dispatcher_running_calls(m->dispatcher), 0);

        /* Nothing more arrives later. */
        for (int i = 0; i < 5; i++)
                cr_assert(sd_event_run(m->event, 10 * USEC_PER_MSEC) >= 0);
        cr_assert_eq(o.n_called, 1);

        manager_free(m);
        free(o.data);
        free(o.error);
        tmpdir_remove(home);
}

Test(dispatch_call, synchronous_errors_and_no_callback) {
        char *home;
        Manager *m = manager_for_test(&home);
        Outcome o = {};
        DispatchCall *call = NULL;

        DispatchFailure f = {};

        /* One vocabulary: the value and the text that the command request, jobs and webhooks all use. */
        cr_assert_eq(dispatcher_call(m->dispatcher, &(DispatchRequest) {
                        .photon = "nobody", .method = "run", .trigger = DISPATCH_TRIGGER_WEBHOOK },
                        on_result, &o, &call, &f), -ENOENT);
        cr_assert_eq(f.error, DISPATCH_ERROR_NO_PROVIDER);
        cr_assert_str_eq(dispatch_error_to_string(f.error), "no-provider");
        cr_assert(f.message && strstr(f.message, "Cannot initialize photon 'nobody': no provider is connected"),
                  "%s", f.message);
        cr_assert_not_null(dispatch_error_suggestion(f.error));
        dispatch_failure_done(&f);
        cr_assert_null(f.message);
        cr_assert_eq(dispatcher_call(m->dispatcher, &(DispatchRequest) {
                        .photon = "../x", .method = "run", .trigger = DISPATCH_TRIGGER_WEBHOOK },
                        on_result, &o, &call, &f), -EINVAL);
        cr_assert_eq(f.error, DISPATCH_ERROR_INVALID_NAME);
        cr_assert(f.message && strstr(f.message, "Cannot initialize photon '../x': not a valid photon name"),
                  "%s", f.message);
        dispatch_failure_done(&f);

        /* Every value has a name. */
        for (DispatchError e = 0; e < _DISPATCH_ERROR_MAX; e++)
                cr_assert_not_null(dispatch_error_to_string(e), "DispatchError %d has no name", e);
        cr_assert_null(dispatch_error_to_string(_DISPATCH_ERROR_MAX));

        handler_script(home, "slow", "#!/bin/sh\nexec sleep 30\n");
        limits.MAX_CALLS_PER_PHOTON = 1;
        cr_assert_eq(dispatcher_call(m->dispatcher, &(DispatchRequest) {
                        .photon = "slow", .method = "a", .trigger = DISPATCH_TRIGGER_SCHEDULE },
                        on_result, &o, &call, NULL), 0);
        cr_assert_eq(dispatcher_call(m->dispatcher, &(DispatchRequest) {
                        .photon = "slow", .method = "b", .trigger = DISPATCH_TRIGGER_SCHEDULE },
                        on_result, &o, NULL, &f), -EBUSY);
        cr_assert_eq(f.error, DISPATCH_ERROR_PHOTON_BUSY);
        cr_assert_str_eq(f.message, "Busy: photon 'slow' has 1 calls in flight (PHOTOND_MAX_CALLS_PER_PHOTON)");
        dispatch_failure_done(&f);
        limits_reset();

        for (int i = 0; i < 5; i++)
                cr_assert(sd_event_run(m->event, 10 * USEC_PER_MSEC) >= 0);
        cr_assert_eq(o.n_called, 0);

        /* Freeing the dispatcher ends the running call and reports it once. */
        manager_free(m);
        cr_assert_eq(o.n_called, 1);
        cr_assert(!o.success);
        cr_assert_str_eq(o.error, "photond is shutting down");
        free(o.data);
        free(o.error);
        tmpdir_remove(home);
}

Test(dispatch_call, abandoned_call_never_calls_back) {
        char *home;
        Manager *m = manager_for_test(&home);
        Outcome o = {};
        DispatchCall *call = NULL;

        handler_script(home, "quick", "#!/bin/sh\necho done\n");
        cr_assert_eq(dispatcher_call(m->dispatcher, &(DispatchRequest) {
                        .photon = "quick", .method = "x", .trigger = DISPATCH_TRIGGER_WEBHOOK },
                        on_result, &o, &call, NULL), 0);
        dispatch_call_abandon(call);
        for (int i = 0; dispatcher_running_calls(m->dispatcher) > 0; i++) {
                cr_assert(i < 1000);
                cr_assert(sd_event_run(m->event, 10 * USEC_PER_MSEC) >= 0);
        }
        for (int i = 0; i < 5; i++)
                cr_assert(sd_event_run(m->event, 10 * USEC_PER_MSEC) >= 0);
        cr_assert_eq(o.n_called, 0);

        manager_free(m);
        tmpdir_remove(home);
}

Test(dispatch_call, timeout_per_call) {
        char *home;
        Manager *m = manager_for_test(&home);
        Outcome o = {};
        uint64_t t0;

        handler_script(home, "sleepy", "#!/bin/sh\nexec sleep 30\n");
        t0 = now_usec(CLOCK_MONOTONIC);
        cr_assert_eq(dispatcher_call(m->dispatcher, &(DispatchRequest) {
                        .photon = "sleepy", .method = "x", .trigger = DISPATCH_TRIGGER_SCHEDULE, .timeout_ms = 150 },
                        on_result, &o, NULL, NULL), 0);
        run_until(m, &o.n_called, 1);
        cr_assert(!o.success);
        cr_assert_str_eq(o.error, "Handler sleepy/x timed out after 150 ms");
        cr_assert((now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_MSEC >= 150);
        cr_assert(o.duration_ms >= 150);

        manager_free(m);
        free(o.error);
        tmpdir_remove(home);
}

/* What the dispatcher tells its owner (DispatcherHooks): a new provider, not a repeated provide. The provides are
 * requests of a Client, through the control front end. */
static unsigned heard_counts;

static void heard_counts_changed(void *userdata) {
        cr_assert_eq(userdata, &heard_counts);
        heard_counts++;
}

static void provide(Manager *m, Client *c, const char *photon, int64_t n_providers) {
        _cleanup_(json_object_putp) struct json_object *reply = NULL;

        test_request(m, c, "{\"type\":\"provide\",\"id\":\"p\",\"photonName\":\"%s\"}", photon);
        reply = test_pop_json(c);
        cr_assert(jbool(reply, "success"), "%s", json_object_to_json_string(reply));
        cr_assert_str_eq(jstr(reply, "data.photonName"), photon);
        cr_assert_eq(jint(reply, "data.providers"), n_providers);
}


Test(dispatch_call, hooks_hear_new_providers) {
        char *home;
        Manager *m = manager_for_test(&home);
        DispatcherConfig config = { .event = m->event, .channels = m->channels, .handlers_dir = m->handlers_dir };
        int fds[2];
        Client *c;

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
        cr_assert_eq(client_new(m, fds[0], &c), 0);

        heard_counts = 0;
        m->dispatcher = dispatcher_free(m->dispatcher);
        cr_assert_eq(dispatcher_new(&config, &(DispatcherHooks) {
                                            .counts_changed = heard_counts_changed,
                                            .userdata = &heard_counts,
                                    }, &m->dispatcher), 0);

        provide(m, c, "kanban", 1);
        cr_assert_eq(heard_counts, 1);
        provide(m, c, "kanban", 1);
        cr_assert_eq(heard_counts, 1, "the same provider again changes nothing");
        provide(m, c, "board", 1);
        cr_assert_eq(heard_counts, 2);
        dispatcher_peer_gone(m->dispatcher, &c->peer);
        cr_assert_null(c->peer.providers);

        /* Nobody listening is fine too. */
        m->dispatcher = dispatcher_free(m->dispatcher);
        cr_assert_eq(dispatcher_new(&config, NULL, &m->dispatcher), 0);
        provide(m, c, "kanban", 1);
        cr_assert_eq(heard_counts, 2);

        manager_free(m);
        safe_close(fds[1]);
        tmpdir_remove(home);
}

/* ---- the DispatchPeer seam: providers and callers are fakes that are no Client, on a dispatcher of its own ---- */

typedef struct FakePeer {
        unsigned n_invokes;
        char invoke_id[32];
        char *invoke;                   /* "photon method args trigger instance session" of the last invoke */
        int invoke_error;               /* what invoke returns */
        unsigned n_prompt_responses;
        char *prompt_response;          /* compact JSON of the last promptValue */
        unsigned n_done;
        char *caller_id;
        bool success;
        char *result;                   /* compact JSON of the data, or the error */
        unsigned n_emits, n_prompts;
        DispatchPeer peer;              /* not first on purpose: the ops find the fake by offset */
} FakePeer;

static FakePeer* fake_peer(DispatchPeer *p) {
        return (FakePeer*) ((uint8_t*) p - offsetof(FakePeer, peer));
}

static char* json_text(struct json_object *o) {
        char *s = strdup(o ? json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS) : "null");

        cr_assert(s);
        return s;
}

static int fake_invoke(DispatchPeer *p, const DispatchInvoke *inv) {
        FakePeer *f = fake_peer(p);
        _cleanup_free_ char *args = json_text(inv->args);

        f->n_invokes++;
        snprintf(f->invoke_id, sizeof(f->invoke_id), "%s", inv->invoke_id);
        free(f->invoke);
        cr_assert(asprintf(&f->invoke, "%s %s %s %s %s %s", inv->photon, inv->method, args,
                           dispatch_trigger_to_string(inv->trigger), inv->instance ?: "-",
                           inv->session_id ?: "-") > 0);
        return f->invoke_error;
}

static int fake_prompt_response(DispatchPeer *p, const char *invoke_id, struct json_object *value) {
        FakePeer *f = fake_peer(p);

        cr_assert_str_eq(invoke_id, f->invoke_id);
        f->n_prompt_responses++;
        free(f->prompt_response);
        f->prompt_response = json_text(value);
        return 0;
}

static void fake_call_done(DispatchPeer *p, const char *caller_id, const DispatchResult *result) {
        FakePeer *f = fake_peer(p);

        f->n_done++;
        free(f->caller_id);
        free(f->result);
        f->caller_id = strdup(caller_id);
        f->success = result->success;
        f->result = result->success ? json_text(result->data) : strdup(result->error);
}

static int fake_emit(DispatchPeer *p, const char *caller_id, struct json_object *emit_data) {
        fake_peer(p)->n_emits++;
        return 0;
}

static int fake_prompt(DispatchPeer *p, const char *caller_id, struct json_object *prompt) {
        fake_peer(p)->n_prompts++;
        return 0;
}

static const DispatchPeerOps fake_peer_ops = {
        .invoke = fake_invoke,
        .prompt_response = fake_prompt_response,
        .call_done = fake_call_done,
        .emit = fake_emit,
        .prompt = fake_prompt,
};

static void fake_peer_done(FakePeer *f) {
        free(f->invoke);
        free(f->prompt_response);
        free(f->caller_id);
        free(f->result);
}

/* Counts what a channel delivers to it: a Subscriber that is no Client either. */
typedef struct CountingSub {
        unsigned n;
        Subscriber sub;
} CountingSub;

static int counting_send(Subscriber *s, SharedBuf *b, const void *tag) {
        ((CountingSub*) ((uint8_t*) s - offsetof(CountingSub, sub)))->n++;
        return 0;
}

static size_t counting_drop_tagged(Subscriber *s, SubscriberDropFunc cb, void *userdata) {
        return 0;
}

static size_t counting_queued_bytes(Subscriber *s) {
        return 0;
}

static void counting_close_slow(Subscriber *s) {
}

static const SubscriberOps counting_ops = {
        .send = counting_send,
        .drop_tagged = counting_drop_tagged,
        .queued_bytes = counting_queued_bytes,
        .close_slow = counting_close_slow,
};

typedef struct PeerEnv {
        sd_event *event;
        Channels *channels;
        Dispatcher *d;
        FakePeer provider, caller;
        CountingSub watcher, caller_sub;        /* on the state-changed and emit channels */
        unsigned counts_changed;
} PeerEnv;

static void env_counts_changed(void *userdata) {
        ((PeerEnv*) userdata)->counts_changed++;
}

static void subscribe(PeerEnv *e, CountingSub *s, const char *channel) {
        cr_assert_eq(channels_subscribe(e->channels, &s->sub, channel, strlen(channel)), 0);
}

/* No handlers directory: a call goes to a provider or nowhere. */
static void peer_env_new(PeerEnv *e) {
        *e = (PeerEnv) {};
        limits_reset();
        cr_assert_eq(sd_event_new(&e->event), 0);
        cr_assert_eq(channels_new(NULL, &e->channels), 0);
        cr_assert_eq(dispatcher_new(&(DispatcherConfig) {
                                            .event = e->event,
                                            .channels = e->channels,
                                            .handlers_dir = "/nonexistent-photond-handlers",
                                    }, &(DispatcherHooks) {
                                            .counts_changed = env_counts_changed,
                                            .userdata = e,
                                    }, &e->d), 0);
        e->provider.peer.ops = &fake_peer_ops;
        e->caller.peer.ops = &fake_peer_ops;
        e->caller.peer.subscriber = &e->caller_sub.sub;
        e->watcher.sub.ops = &counting_ops;
        e->caller_sub.sub.ops = &counting_ops;
}

static void peer_env_free(PeerEnv *e) {
        e->d = dispatcher_free(e->d);
        channels_subscriber_gone(e->channels, &e->watcher.sub);
        channels_subscriber_gone(e->channels, &e->caller_sub.sub);
        e->channels = channels_free(e->channels);
        e->event = sd_event_unref(e->event);
        fake_peer_done(&e->provider);
        fake_peer_done(&e->caller);
}

static void peer_env_run_until(PeerEnv *e, const unsigned *counter, unsigned want) {
        for (int i = 0; *counter < want; i++) {
                cr_assert(i < 500, "nothing within 5 s");
                cr_assert(sd_event_run(e->event, 10 * USEC_PER_MSEC) >= 0);
        }
}

static void peer_env_command(PeerEnv *e, const char *caller_id, uint64_t timeout_ms) {
        _cleanup_(dispatch_failure_done) DispatchFailure f = {};
        struct json_object *args = json_tokener_parse("{\"card\":7}");

        cr_assert_eq(dispatcher_command(e->d, &(DispatchRequest) {
                                                .photon = "kanban",
                                                .method = "add",
                                                .args = args,
                                                .trigger = DISPATCH_TRIGGER_COMMAND,
                                                .timeout_ms = timeout_ms,
                                                .instance = "board",
                                                .session_id = "s1",
                                        }, &e->caller.peer, caller_id, &f), 0, "%s", f.message);
        json_object_put(args);
}

Test(dispatch_peer, a_provider_answers_its_caller) {
        PeerEnv e;
        unsigned n = 0;
        DispatchCall *call;
        struct json_object *data = json_tokener_parse("{\"added\":true}");

        peer_env_new(&e);
        subscribe(&e, &e.watcher, "kanban:board:state-changed");
        subscribe(&e, &e.caller_sub, "kanban:board:state-changed");

        cr_assert_eq(dispatcher_provide(e.d, &e.provider.peer, "kanban", &n), 1);
        cr_assert_eq(n, 1);
        cr_assert_eq(e.counts_changed, 1);
        cr_assert_eq(dispatcher_provide(e.d, &e.provider.peer, "kanban", &n), 0, "provided already");
        cr_assert_eq(e.counts_changed, 1);
        cr_assert(dispatcher_can_serve(e.d, "kanban", "add"));

        peer_env_command(&e, "c1", 0);
        cr_assert_eq(e.provider.n_invokes, 1);
        cr_assert_str_eq(e.provider.invoke, "kanban add {\"card\":7} command board s1");
        cr_assert_eq(e.caller.peer.n_calls, 1, "the caller waits");
        cr_assert_null(dispatcher_provider_call(e.d, &e.caller.peer, e.provider.invoke_id), "not the caller's");
        cr_assert_null(dispatcher_provider_call(e.d, &e.provider.peer, "inv_999"));
        call = dispatcher_provider_call(e.d, &e.provider.peer, e.provider.invoke_id);
        cr_assert_not_null(call);

        /* A question goes to the caller, its answer back to the provider. */
        struct json_object *q = json_tokener_parse("{\"ask\":\"sure?\"}"), *yes = json_object_new_boolean(true);
        cr_assert_eq(dispatch_call_prompt(call, q), 0);
        cr_assert_eq(e.caller.n_prompts, 1);
        cr_assert_eq(dispatcher_prompt_response(e.d, &e.caller.peer, "other", yes), 0);
        cr_assert_eq(e.provider.n_prompt_responses, 0, "not a prompt of that call");
        cr_assert_eq(dispatcher_prompt_response(e.d, &e.caller.peer, "c1", yes), 0);
        cr_assert_eq(e.provider.n_prompt_responses, 1);
        cr_assert_str_eq(e.provider.prompt_response, "true");
        cr_assert_eq(dispatcher_prompt_response(e.d, &e.caller.peer, "c1", yes), 0);
        cr_assert_eq(e.provider.n_prompt_responses, 1, "answered already");
        json_object_put(q);
        json_object_put(yes);

        /* An emit goes to the caller and to the channel, where the caller does not get it again. */
        struct json_object *ev = json_tokener_parse("{\"channel\":\"kanban:board:state-changed\",\"step\":1}");
        cr_assert_eq(dispatch_call_emit(call, ev, "kanban:board:state-changed", true), 0);
        cr_assert_eq(dispatch_call_emit(call, ev, NULL, false), 0);
        json_object_put(ev);
        cr_assert_eq(e.caller.n_emits, 1);
        cr_assert_eq(e.watcher.n, 1);
        cr_assert_eq(e.caller_sub.n, 0, "the caller hears of its emits directly");

        dispatch_call_answer(call, true, data, NULL, NULL, NULL);
        json_object_put(data);          /* borrowed: the call took its own reference */
        cr_assert_eq(e.caller.n_done, 0, "delivered from the loop, not from inside the answer");
        cr_assert_null(dispatcher_provider_call(e.d, &e.provider.peer, e.provider.invoke_id), "answered");

        peer_env_run_until(&e, &e.caller.n_done, 1);
        cr_assert(e.caller.success);
        cr_assert_str_eq(e.caller.caller_id, "c1");
        cr_assert_str_eq(e.caller.result, "{\"added\":true}");
        cr_assert_eq(e.caller.peer.n_calls, 0);
        cr_assert_eq(e.watcher.n, 2, "state-changed is published");
        cr_assert_eq(e.caller_sub.n, 0, "but not to the caller, which has its result");

        peer_env_free(&e);
}

Test(dispatch_peer, a_provider_that_does_not_answer_times_out) {
        PeerEnv e;

        peer_env_new(&e);
        subscribe(&e, &e.watcher, "kanban:board:state-changed");
        cr_assert_eq(dispatcher_provide(e.d, &e.provider.peer, "kanban", NULL), 1);
        peer_env_command(&e, "c1", 50);
        cr_assert_eq(e.provider.n_invokes, 1);

        peer_env_run_until(&e, &e.caller.n_done, 1);
        cr_assert(!e.caller.success);
        cr_assert_str_eq(e.caller.result, "Timed out after 50 ms waiting for the provider of 'kanban' to answer add");
        cr_assert_eq(e.caller.peer.n_calls, 0);
        cr_assert_null(dispatcher_provider_call(e.d, &e.provider.peer, e.provider.invoke_id),
                       "a late answer finds no call");
        cr_assert_eq(e.watcher.n, 0, "a failed command changes no state");

        peer_env_free(&e);
}

static void on_job_result(const DispatchResult *result, void *userdata) {
        Outcome *o = userdata;

        o->n_called++;
        o->success = result->success;
        free(o->error);
        o->error = result->error ? strdup(result->error) : NULL;
}

Test(dispatch_peer, a_provider_that_goes_away_fails_its_calls) {
        _cleanup_(dispatch_failure_done) DispatchFailure f = {};
        PeerEnv e;
        Outcome job = {};

        peer_env_new(&e);
        cr_assert_eq(dispatcher_provide(e.d, &e.provider.peer, "kanban", NULL), 1);
        peer_env_command(&e, "c1", 0);
        cr_assert_eq(dispatcher_call(e.d, &(DispatchRequest) {
                                             .photon = "kanban", .method = "sweep",
                                             .trigger = DISPATCH_TRIGGER_SCHEDULE, .job_id = "kanban:ipc:nightly" },
                                     on_job_result, &job, NULL, NULL), 0);
        cr_assert_eq(e.provider.n_invokes, 2);
        cr_assert_str_eq(e.provider.invoke, "kanban sweep {} schedule - -");

        dispatcher_peer_gone(e.d, &e.provider.peer);
        cr_assert_null(e.provider.peer.providers);
        cr_assert_eq(e.provider.n_invokes, 2, "nothing is sent to a peer that goes");
        cr_assert_eq(e.provider.n_prompt_responses, 0);
        cr_assert(!dispatcher_can_serve(e.d, "kanban", "add"));

        peer_env_run_until(&e, &e.caller.n_done, 1);
        peer_env_run_until(&e, &job.n_called, 1);
        cr_assert(!e.caller.success);
        cr_assert_str_eq(e.caller.result, "The provider of 'kanban' disconnected before answering add");
        cr_assert(!job.success);
        cr_assert_str_eq(job.error, "The provider of 'kanban' disconnected before answering sweep");

        /* A provider whose invoke cannot be sent: the call does not start. */
        e.provider.invoke_error = -ECONNRESET;
        cr_assert_eq(dispatcher_provide(e.d, &e.provider.peer, "kanban", NULL), 1);
        cr_assert_eq(dispatcher_command(e.d, &(DispatchRequest) {
                                                .photon = "kanban", .method = "add",
                                                .trigger = DISPATCH_TRIGGER_COMMAND },
                                        &e.caller.peer, "c2", &f), -ECONNRESET);
        cr_assert_eq(f.error, DISPATCH_ERROR_PROVIDER_GONE);
        cr_assert_str_eq(f.message, "The provider of 'kanban' went away");
        cr_assert_eq(e.caller.peer.n_calls, 0);

        peer_env_free(&e);
        free(job.error);
}

Test(dispatch_peer, a_caller_that_goes_away) {
        PeerEnv e;
        DispatchCall *call;
        struct json_object *q = json_tokener_parse("{\"ask\":\"sure?\"}");

        peer_env_new(&e);
        subscribe(&e, &e.watcher, "kanban:board:state-changed");
        cr_assert_eq(dispatcher_provide(e.d, &e.provider.peer, "kanban", NULL), 1);
        peer_env_command(&e, "c1", 0);
        call = dispatcher_provider_call(e.d, &e.provider.peer, e.provider.invoke_id);
        cr_assert_not_null(call);
        cr_assert_eq(dispatch_call_prompt(call, q), 0);
        cr_assert_eq(e.caller.n_prompts, 1);

        /* Its open prompt is answered with null; the call goes on. */
        dispatcher_peer_gone(e.d, &e.caller.peer);
        cr_assert_eq(e.caller.peer.n_calls, 0);
        cr_assert_eq(e.provider.n_prompt_responses, 1);
        cr_assert_str_eq(e.provider.prompt_response, "null");

        /* Later prompts too, at once, with nobody to ask. */
        cr_assert_eq(dispatch_call_prompt(call, q), 0);
        cr_assert_eq(e.caller.n_prompts, 1);
        cr_assert_eq(e.provider.n_prompt_responses, 2);
        json_object_put(q);

        dispatch_call_answer(call, true, NULL, NULL, NULL, NULL);
        peer_env_run_until(&e, &e.watcher.n, 1);
        cr_assert_eq(e.caller.n_done, 0, "nobody to tell");
        cr_assert_eq(e.watcher.n, 1, "the state changed all the same");

        peer_env_free(&e);
}

/* ---- cluster mode's seam: DispatcherHooks.find_remote and .provided_changed ---- */

typedef struct RemoteEnv {
        PeerEnv e;
        FakePeer remote;                /* what find_remote answers: a provider on another node */
        unsigned n_asked;
        char provided[256];             /* "+photon -photon …" as provided_changed heard it */
} RemoteEnv;

static DispatchPeer* remote_find(const char *photon, const char *method, void *userdata) {
        RemoteEnv *r = userdata;

        r->n_asked++;
        return streq(photon, "kanban") ? &r->remote.peer : NULL;
}

static void remote_provided_changed(const char *photon, bool provided, void *userdata) {
        RemoteEnv *r = userdata;
        size_t l = strlen(r->provided);

        snprintf(r->provided + l, sizeof(r->provided) - l, "%s%c%s", l ? " " : "", provided ? '+' : '-', photon);
}

static void remote_env_new(RemoteEnv *r) {
        peer_env_new(&r->e);
        r->e.d = dispatcher_free(r->e.d);
        cr_assert_eq(dispatcher_new(&(DispatcherConfig) {
                                            .event = r->e.event,
                                            .channels = r->e.channels,
                                            .handlers_dir = "/nonexistent-photond-handlers",
                                    }, &(DispatcherHooks) {
                                            .find_remote = remote_find,
                                            .provided_changed = remote_provided_changed,
                                            .userdata = r,
                                    }, &r->e.d), 0);
        r->remote.peer.ops = &fake_peer_ops;
}

Test(dispatch_peer, a_call_nobody_here_runs_goes_to_the_remote_peer) {
        RemoteEnv r = {};
        DispatchCall *call;
        struct json_object *data = json_tokener_parse("{\"id\":7}"), *patch = json_tokener_parse("[]");
        struct json_object *q = json_tokener_parse("{\"ask\":1}"), *yes = json_object_new_boolean(true);

        remote_env_new(&r);
        subscribe(&r.e, &r.e.watcher, "kanban:board:state-changed");

        /* No provider or handler here: the remote peer is invoked like a provider. */
        cr_assert(dispatcher_can_serve(r.e.d, "kanban", "add"));
        cr_assert_not(dispatcher_can_serve(r.e.d, "other", "add"), "find_remote said nobody");
        peer_env_command(&r.e, "c1", 0);
        cr_assert_eq(r.remote.n_invokes, 1);
        cr_assert_str_eq(r.remote.invoke, "kanban add {\"card\":7} command board s1");
        cr_assert_eq(r.remote.peer.n_remote_calls, 1);
        call = dispatcher_provider_call(r.e.d, &r.remote.peer, r.remote.invoke_id);
        cr_assert_not_null(call, "it answers as a provider does");

        cr_assert_eq(dispatch_call_prompt(call, q), 0);
        cr_assert_eq(r.e.caller.n_prompts, 1);
        cr_assert_eq(dispatcher_prompt_response(r.e.d, &r.e.caller.peer, "c1", yes), 0);
        cr_assert_eq(r.remote.n_prompt_responses, 1, "the answer goes to the remote peer");

        dispatch_call_answer(call, true, data, patch, NULL, NULL);
        peer_env_run_until(&r.e, &r.e.caller.n_done, 1);
        cr_assert(r.e.caller.success);
        cr_assert_str_eq(r.e.caller.result, "{\"id\":7}");
        cr_assert_eq(r.remote.peer.n_remote_calls, 0);
        cr_assert_eq(r.e.watcher.n, 1, "the caller's node publishes state-changed");

        /* A peer that goes away fails its remote calls as a provider's. */
        peer_env_command(&r.e, "c2", 0);
        cr_assert_eq(r.remote.peer.n_remote_calls, 1);
        dispatcher_peer_gone(r.e.d, &r.remote.peer);
        peer_env_run_until(&r.e, &r.e.caller.n_done, 2);
        cr_assert_not(r.e.caller.success);
        cr_assert_str_eq(r.e.caller.result, "The provider of 'kanban' disconnected before answering add");
        cr_assert_eq(r.remote.peer.n_remote_calls, 0);

        /* A local provider is preferred: find_remote is not even asked. */
        r.n_asked = 0;
        cr_assert_eq(dispatcher_provide(r.e.d, &r.e.provider.peer, "kanban", NULL), 1);
        cr_assert_str_eq(r.provided, "+kanban");
        peer_env_command(&r.e, "c3", 0);
        cr_assert_eq(r.e.provider.n_invokes, 1);
        cr_assert_eq(r.remote.n_invokes, 2);
        cr_assert_eq(r.n_asked, 0);
        dispatcher_peer_gone(r.e.d, &r.e.provider.peer);
        cr_assert_str_eq(r.provided, "+kanban -kanban");
        peer_env_run_until(&r.e, &r.e.caller.n_done, 3);

        json_object_put(data);
        json_object_put(patch);
        json_object_put(q);
        json_object_put(yes);
        peer_env_free(&r.e);
        fake_peer_done(&r.remote);
}

Test(dispatch_peer, a_relayed_command_publishes_no_state_changed) {
        PeerEnv e;
        _cleanup_(dispatch_failure_done) DispatchFailure f = {};
        struct json_object *patch = json_tokener_parse("[{\"op\":\"add\"}]");
        DispatchCall *call;

        peer_env_new(&e);
        subscribe(&e, &e.watcher, "kanban:board:state-changed");
        cr_assert_eq(dispatcher_provide(e.d, &e.provider.peer, "kanban", NULL), 1);
        cr_assert_eq(dispatcher_command(e.d, &(DispatchRequest) {
                                                .photon = "kanban",
                                                .method = "add",
                                                .trigger = DISPATCH_TRIGGER_COMMAND,
                                                .instance = "board",
                                                .relayed = true,
                                        }, &e.caller.peer, "node-a inv_1", &f), 0);
        call = dispatcher_provider_call(e.d, &e.provider.peer, e.provider.invoke_id);
        dispatch_call_answer(call, true, NULL, patch, NULL, NULL);
        peer_env_run_until(&e, &e.caller.n_done, 1);
        cr_assert(e.caller.success);
        cr_assert_eq(e.watcher.n, 0, "the caller's node publishes it");

        json_object_put(patch);
        peer_env_free(&e);
}
