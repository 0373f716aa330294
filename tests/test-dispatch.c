/* SPDX-License-Identifier: MIT */

/* Unit tests for the pure parts of method dispatch: handler path resolution, the handler environment, turning
 * handler output into a result, the stderr tail and exit messages. */

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
