/* SPDX-License-Identifier: MIT */

/* The small helpers in src/shared/. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "bytes.h"
#include "fd-util.h"
#include "helpers.h"
#include "json-util.h"
#include "log.h"
#include "metrics.h"
#include "path-util.h"
#include "shared-buf.h"
#include "ratelimit.h"
#include "string-util.h"

Test(shared, name_is_valid) {
        cr_assert(name_is_valid("kanban"));
        cr_assert(name_is_valid("a.b-c_D9"));
        cr_assert(name_is_valid("x"));
        cr_assert(!name_is_valid(""));
        cr_assert(!name_is_valid(NULL));
        cr_assert(!name_is_valid(".hidden"));
        cr_assert(!name_is_valid(".."));
        cr_assert(!name_is_valid("a/b"));
        cr_assert(!name_is_valid("a b"));
        cr_assert(!name_is_valid("ü"));
        cr_assert(name_is_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));   /* 64 */
        cr_assert(!name_is_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));  /* 65 */
}

/* A bad name reads the same in every request type; the reference's text is the prefix where it has one. */
Test(shared, name_errors_are_worded_once) {
        char buf[512];

        cr_assert_str_eq(name_error("method", "../../bin/sh", buf, sizeof(buf)),
                         "Tool not found: ../../bin/sh (not a valid method name: 1-64 characters of A-Z a-z 0-9 . _ -, "
                         "not starting with a dot)");
        cr_assert_str_eq(name_error("photonName", "../x", buf, sizeof(buf)),
                         "Cannot initialize photon '../x': not a valid photon name (1-64 characters of A-Z a-z 0-9 . _ "
                         "-, not starting with a dot)");
        cr_assert_str_eq(name_error("jobId", "a/b", buf, sizeof(buf)),
                         "Invalid request format: jobId 'a/b' is not a valid name (1-64 characters of A-Z a-z 0-9 . _ "
                         "-, not starting with a dot)");
        cr_assert_str_eq(name_error("photonName", NULL, buf, sizeof(buf)),
                         "Invalid request format: photonName is missing", "as the parser says it");
        cr_assert(strstr(name_error("instanceName", "01234567890123456789012345678901234567890123456789"
                                    "0123456789012345", buf, sizeof(buf)),
                         "'0123456789012345678901234567890123456789012345678901234567890123…'"), "%s", buf);
}

Test(shared, safe_atou64) {
        uint64_t u;

        cr_assert_eq(safe_atou64("0", &u), 0);
        cr_assert_eq(u, 0);
        cr_assert_eq(safe_atou64("18446744073709551615", &u), 0);
        cr_assert_eq(u, UINT64_MAX);
        cr_assert_eq(safe_atou64("18446744073709551616", &u), -ERANGE);
        cr_assert_eq(safe_atou64("-1", &u), -EINVAL);
        cr_assert_eq(safe_atou64("5abc", &u), -EINVAL);
        cr_assert_eq(safe_atou64("", &u), -EINVAL);
        cr_assert_eq(safe_atou64(" 5", &u), -EINVAL);
}

Test(shared, memeq_consttime) {
        cr_assert(memeq_consttime("abc", 3, "abc", 3));
        cr_assert(!memeq_consttime("abc", 3, "abd", 3));
        cr_assert(!memeq_consttime("abc", 3, "abcd", 4));
        cr_assert(memeq_consttime("", 0, "", 0));
}

Test(shared, json_get_int64) {
        _cleanup_(json_object_putp) struct json_object *o =
                json_tokener_parse("{\"i\":5,\"d\":2.0,\"f\":2.5,\"s\":\"17\",\"n\":null,\"b\":true,\"x\":\"1x\"}");
        int64_t v;

        cr_assert_eq(json_get_int64(o, "i", false, &v), 0);
        cr_assert_eq(v, 5);
        cr_assert_eq(json_get_int64(o, "d", false, &v), 0);
        cr_assert_eq(v, 2);
        cr_assert_eq(json_get_int64(o, "f", false, &v), -EINVAL);
        cr_assert_eq(json_get_int64(o, "s", false, &v), -EINVAL);
        cr_assert_eq(json_get_int64(o, "s", true, &v), 0);
        cr_assert_eq(v, 17);
        cr_assert_eq(json_get_int64(o, "x", true, &v), -EINVAL);
        cr_assert_eq(json_get_int64(o, "n", false, &v), -ENOENT);
        cr_assert_eq(json_get_int64(o, "missing", false, &v), -ENOENT);
        cr_assert_eq(json_get_int64(o, "b", false, &v), -EINVAL);
}

/* A C string ends at a NUL byte, so a json-c string holding one never becomes a C string: "a\u0000x" is not "a",
 * "17\u0000x" is not 17. */
Test(shared, json_get_string_refuses_nul) {
        _cleanup_(json_object_putp) struct json_object *o =
                json_tokener_parse("{\"a\":\"a\\u0000x\",\"n\":\"17\\u0000x\",\"z\":\"\\u0000\",\"ok\":\"plain\"}");
        int64_t v;

        cr_assert_not_null(o);
        cr_assert_null(json_get_string(o, "a"));
        cr_assert_null(json_get_string(o, "z"));
        cr_assert_str_eq(json_get_string(o, "ok"), "plain");
        cr_assert_eq(json_get_int64(o, "n", true, &v), -EINVAL);
}

/* json-c cuts object keys at a NUL ("k\u0000a" and "k\u0000b" would both be "k"), so json_parse() refuses them;
 * NUL bytes in values are kept, and an escaped backslash before "u0000" is no NUL. */
Test(shared, json_parse_refuses_nul_in_keys) {
        static const char *const refused[] = {
                "{\"k\\u0000a\":1,\"k\\u0000b\":2}",
                "{\"a\":{\"\\u0000\" :1}}",
                "[{\"x\\\"\\u0000\"\n:true}]",
        };
        static const char *const kept[] = {
                "{\"k\":\"\\u0000\"}",
                "[\"a\\u0000\",\"b\"]",
                "{\"k\\\\u0000\":1}",
                "\"\\u0000\"",
        };
        struct json_object *o = NULL;
        const char *error = NULL;

        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                cr_assert_eq(json_parse(refused[i], strlen(refused[i]), &o, &error), -EINVAL, "%s", refused[i]);
                cr_assert(strstr(error, "NUL"), "%s", error);
        }
        for (size_t i = 0; i < ELEMENTSOF(kept); i++) {
                cr_assert_eq(json_parse(kept[i], strlen(kept[i]), &o, &error), 0, "%s: %s", kept[i], error);
                cr_assert_str_eq(json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS), kept[i]);
                json_object_put(o);
        }
}

Test(shared, json_string_get_cstring) {
        _cleanup_(json_object_putp) struct json_object *o =
                json_tokener_parse("{\"a\":\"a\\u0000x\",\"e\":\"\",\"ok\":\"plain\",\"i\":1}");
        const char *s = NULL;

        cr_assert_eq(json_string_get_cstring(json_object_object_get(o, "a"), &s), -EINVAL);
        cr_assert_null(s, "nothing returned for a string with a NUL byte");
        cr_assert_eq(json_string_get_cstring(json_object_object_get(o, "i"), &s), -EMEDIUMTYPE);
        cr_assert_eq(json_string_get_cstring(NULL, &s), -EMEDIUMTYPE);
        cr_assert_eq(json_string_get_cstring(json_object_object_get(o, "e"), &s), 0);
        cr_assert_str_eq(s, "");
        cr_assert_eq(json_string_get_cstring(json_object_object_get(o, "ok"), NULL), 0);
        cr_assert_str_eq(json_object_get_cstring(json_object_object_get(o, "ok")), "plain");
        cr_assert_null(json_object_get_cstring(json_object_object_get(o, "a")));
        cr_assert_null(json_object_get_cstring(json_object_object_get(o, "i")));
}

Test(shared, bytes_grow_and_keep_what_was_put) {
        Bytes b = {};
        char big[1000];

        cr_assert_eq(bytes_put(&b, NULL, 0), 0);
        cr_assert_eq(b.size, 0);
        cr_assert_eq(bytes_put(&b, "abc", 3), 0);
        memset(big, 'x', sizeof(big));
        for (int i = 0; i < 10; i++)
                cr_assert_eq(bytes_put(&b, big, sizeof(big)), 0);
        cr_assert_eq(bytes_put(&b, "", 1), 0);
        cr_assert_eq(b.size, 3 + 10 * sizeof(big) + 1);
        cr_assert_geq(b.alloc, b.size);
        cr_assert_eq(memcmp(b.data, "abcxxx", 6), 0);
        cr_assert_eq(b.data[b.size - 1], 0);
        /* A size past what can be counted is refused, and nothing changes. */
        cr_assert_eq(bytes_put(&b, big, SIZE_MAX - b.size + 1), -ENOMEM);
        cr_assert_eq(b.size, 3 + 10 * sizeof(big) + 1);
        bytes_done(&b);
        cr_assert_null(b.data);
        cr_assert_eq(b.size, 0);
        cr_assert_eq(b.alloc, 0);
}

Test(shared, json_text_is_compact_value) {
        static const char *const good[] = { "{}", "[]", "0", "-0.5e+3", "\"\\u00e9\\n\\/\"", "true", "null",
                                            "{\"a\":[1,{\"b\":false}],\"c\":\"\xc3\xa9\"}", "[\"\\u0000\"]" };
        static const char *const bad[] = { "", " 1", "1 ", "{\"a\": 1}", "{\"a\":1,}", "[1,]", "01", "1.", "-",
                                           "\"x\ny\"", "\"\\x\"", "\"\\u12\"", "tru", "nul", "{\"a\"}",
                                           "{1:2}", "[1]]", "\"open", "'a'", "{\"\\u0000\":1}" };
        char deep[300];

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                cr_assert(json_text_is_compact_value(good[i], strlen(good[i]), 8), "%s", good[i]);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_assert_not(json_text_is_compact_value(bad[i], strlen(bad[i]), 8), "%s", bad[i]);
        /* Exactly max_depth levels are taken, one more is not. */
        memset(deep, '[', 8);
        memset(deep + 8, ']', 8);
        cr_assert(json_text_is_compact_value(deep, 16, 8));
        memset(deep, '[', 9);
        memset(deep + 9, ']', 9);
        cr_assert_not(json_text_is_compact_value(deep, 18, 8));
        /* A NUL is not whitespace either. */
        cr_assert_not(json_text_is_compact_value("1\0", 2, 8));
}

/* json-c's strict mode takes these and prints them as they came, which no JSON parser takes back (a client's
 * JSON.parse(), a replay file's load): json_parse() refuses them. */
Test(shared, json_parse_refuses_what_json_does_not_allow) {
        static const char *const bad[] = { "[NaN]", "[Infinity]", "-Infinity", "[1.]", "[05e1]", "[0578e309]", "00",
                                           "{\"a\":[1, 2.]}", "[\"a\tb\"]" };
        static const char *const good[] = { " [ -0 , 1e999 , 1.5e-399 , 0.25E+2 ] \n", "{ \"a\" : [ 1, {} ] }", "42",
                                            "\"x\"", "\t null\r\n", "[\"\\t\"]" };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct json_object *o = NULL;
                const char *error = NULL;

                cr_assert_eq(json_parse(bad[i], strlen(bad[i]), &o, &error), -EINVAL, "%s", bad[i]);
                cr_assert_not_null(error);
                cr_assert_not(json_text_is_json(bad[i], strlen(bad[i])), "%s", bad[i]);
        }
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                struct json_object *o = NULL;

                cr_assert_eq(json_parse(good[i], strlen(good[i]), &o, NULL), 0, "%s", good[i]);
                json_object_put(o);
                cr_assert(json_text_is_json(good[i], strlen(good[i])), "%s", good[i]);
        }
        /* Whitespace is JSON's, not the compact form's. */
        cr_assert_not(json_text_is_compact_value(good[0], strlen(good[0]), JSON_TEXT_MAX_DEPTH));
}

Test(shared, shared_buf_json_line) {
        _cleanup_(json_object_putp) struct json_object *o = json_tokener_parse("{\"u\":\"a/b\",\"n\":null}");
        _cleanup_(shared_buf_unrefp) SharedBuf *b = shared_buf_new_json_line(o);

        cr_assert_str_eq(b->data, "{\"u\":\"a/b\",\"n\":null}\n");
        cr_assert_eq(b->size, strlen(b->data));
        cr_assert_eq(shared_buf_ref(b), b);
        cr_assert_eq(b->n_ref, 2);
        shared_buf_unref(b);
}

Test(shared, atomic_write_and_read) {
        char *dir = tmpdir_new(), *path, *text = NULL;
        size_t size;
        struct stat st;

        cr_assert(asprintf(&path, "%s/sub/dir/file.json", dir) >= 0);
        cr_assert_eq(write_file_atomic(path, "x", 1, 0600, true), -ENOENT);
        *strrchr(path, '/') = '\0';
        cr_assert_eq(mkdir_parents_and_self(path, 0700), 0);
        cr_assert_eq(mkdir_parents_and_self(path, 0700), 0, "existing directories are fine");
        strcat(path, "/file.json");
        cr_assert_eq(write_file_atomic(path, "{\"a\":1}", 7, 0600, true), 0);
        cr_assert_eq(write_file_atomic(path, "{\"b\":22}", 8, 0600, false), 0);
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        cr_assert_eq(read_full_file(path, 100, &text, &size), 0);
        cr_assert_str_eq(text, "{\"b\":22}");
        cr_assert_eq(size, 8);
        free(text);
        cr_assert_eq(read_full_file(path, 4, &text, &size), -EFBIG);
        free(path);
        tmpdir_remove(dir);
}

Test(shared, log_stream_is_journal) {
        char *dir = tmpdir_new(), *path, value[96];
        struct stat st;
        int fd;

        cr_assert(asprintf(&path, "%s/stream", dir) >= 0);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        cr_assert(fd >= 0);
        cr_assert_eq(fstat(fd, &st), 0);

        snprintf(value, sizeof(value), "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        cr_assert(log_stream_is_journal(value, fd));
        snprintf(value, sizeof(value), "%llu:%llu", (unsigned long long) st.st_dev,
                 (unsigned long long) st.st_ino + 1);
        cr_assert_not(log_stream_is_journal(value, fd), "another inode");
        snprintf(value, sizeof(value), "%llu:%llu", (unsigned long long) st.st_dev + 1,
                 (unsigned long long) st.st_ino);
        cr_assert_not(log_stream_is_journal(value, fd), "another device");
        snprintf(value, sizeof(value), "%llu:%llux", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        cr_assert_not(log_stream_is_journal(value, fd), "trailing garbage");
        snprintf(value, sizeof(value), " %llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        cr_assert_not(log_stream_is_journal(value, fd), "leading space");
        cr_assert_not(log_stream_is_journal("", fd));
        cr_assert_not(log_stream_is_journal("1", fd));
        cr_assert_not(log_stream_is_journal(":", fd));
        cr_assert_not(log_stream_is_journal("1:-2", fd));
        cr_assert_not(log_stream_is_journal(NULL, fd));
        snprintf(value, sizeof(value), "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        cr_assert_not(log_stream_is_journal(value, -1), "a closed fd is no stream");

        close(fd);
        free(path);
        tmpdir_remove(dir);
}

/* The cases of Node's path.resolve(cwd, p) that PHOTON_HOME and --socket meet. */
Test(shared, path_resolve_at) {
        static const struct {
                const char *cwd, *p, *expect;
        } cases[] = {
                { "/home/u/sub", "../.photon/", "/home/u/.photon" },
                { "/home/u/sub", "../.photon//.data/daemon.sock", "/home/u/.photon/.data/daemon.sock" },
                { "/home/u", ".photon", "/home/u/.photon" },
                { "/home/u", "./a/./b/", "/home/u/a/b" },
                { "/home/u", "a//b///c", "/home/u/a/b/c" },
                { "/home/u", "a/../../..", "/" },
                { "/home/u", "../../../../x", "/x" },
                { "/home/u", ".", "/home/u" },
                { "/home/u/", "", "/home/u" },
                { "/", "..", "/" },
                { "//srv//", "x", "/srv/x" },
                { "/home/u", "/abs//p/../q/", "/abs/q" },
                { NULL, "/abs/./q", "/abs/q" },
                { "/home/u", "/", "/" },
                { "/home/u", "///", "/" },
                { "/home/u", "a/..b/c..", "/home/u/a/..b/c.." },
                { "/home/u", "...", "/home/u/..." },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *out = NULL;

                cr_assert_eq(path_resolve_at(cases[i].cwd, cases[i].p, &out), 0, "%s", cases[i].p);
                cr_assert_str_eq(out, cases[i].expect, "resolve(%s, %s)", cases[i].cwd, cases[i].p);
                free(out);
        }

        char *out = NULL;
        cr_assert_eq(path_resolve_at("relative", "x", &out), -EINVAL, "a relative cwd resolves nothing");
        cr_assert_eq(path_resolve_at(NULL, "x", &out), -EINVAL);
        cr_assert_null(out);
}

/* json_parse() reuses one tokener: a failed or half-finished parse must leave nothing behind for the next one. */
Test(shared, json_parse_after_errors) {
        static const char *const bad[] = { "{\"a\":", "[1,2", "{\"a\":1}}", "nul", "\"abc", "{\"a\":[{\"b\":", "" };
        struct json_object *o;
        const char *err;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                err = NULL;
                cr_assert_lt(json_parse(bad[i], strlen(bad[i]), &o, &err), 0, "accepted %s", bad[i]);
                cr_assert_not_null(err);

                cr_assert_eq(json_parse("{\"x\":[1,{\"y\":2}]}", 17, &o, NULL), 0, "after %s", bad[i]);
                cr_assert_str_eq(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), "{\"x\":[1,{\"y\":2}]}");
                json_object_put(o);

                cr_assert_eq(json_parse("42", 2, &o, NULL), 0);
                cr_assert_eq(json_object_get_int(o), 42);
                json_object_put(o);
                cr_assert_eq(json_parse(" null ", 6, &o, NULL), 0);
                cr_assert_null(o);
        }
}

Test(shared, shell_quote) {
        static const struct { const char *in, *out; } cases[] = {
                { "deploy", "deploy" },
                { "ctl-4242-1", "ctl-4242-1" },
                { "a:b/c.d", "a:b/c.d" },
                { "", "''" },
                { "two words", "'two words'" },
                { "it's", "'it'\\''s'" },
                { "$(rm -rf /)", "'$(rm -rf /)'" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *q = shell_quote(cases[i].in);

                cr_assert_str_eq(q, cases[i].out, "%s", cases[i].in);
                free(q);
        }
}

/* json_put_string() prints what json-c prints (JSON_FORMAT_FLAGS), for every byte value. */
Test(shared, json_put_string_matches_json_c) {
        char s[256], out[JSON_STRING_SIZE_MAX(255) + 1], *end;
        struct json_object *o;

        for (int c = 1; c < 256; c++) {
                snprintf(s, sizeof(s), "a%cb", c);
                o = json_object_new_string(s);
                end = json_put_string(out, s);
                *end = '\0';
                cr_assert_str_eq(out, json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS), "byte %d", c);
                json_object_put(o);
        }

        for (int c = 1; c < 256; c++)
                s[c - 1] = (char) c;
        s[255] = '\0';
        o = json_object_new_string(s);
        end = json_put_string(out, s);
        cr_assert_leq((size_t) (end - out), JSON_STRING_SIZE_MAX(255));
        *end = '\0';
        cr_assert_str_eq(out, json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS));
        json_object_put(o);

        end = json_put_int64(out, INT64_MIN);
        *end = '\0';
        cr_assert_str_eq(out, "-9223372036854775808");
        cr_assert_eq(end - out, 20);
}

Test(shared, ratelimit) {
        RateLimit rl = { .interval = 10, .burst = 2 };

        /* The first event of a clock that starts at 0 counts as a start. */
        cr_assert(ratelimit_below(&rl, 0));
        cr_assert(ratelimit_below(&rl, 1));
        cr_assert_not(ratelimit_below(&rl, 2));
        cr_assert_not(ratelimit_below(&rl, 9));
        cr_assert_eq(rl.suppressed, 0);
        /* A new interval: allowed again, and it knows how many the last one refused. */
        cr_assert(ratelimit_below(&rl, 10));
        cr_assert_eq(rl.suppressed, 2);
        cr_assert(ratelimit_below(&rl, 11));
        cr_assert(ratelimit_below(&rl, 25));
        cr_assert_eq(rl.suppressed, 0);
}

/* One tokener parses every request line: a line that fails in the middle of a surrogate escape must leave nothing
 * behind for the next line (json-c 0.16 kept the pending high surrogate and put a U+FFFD into the next line's first
 * \u escape). Found by fuzz-json. */
Test(shared, json_parse_after_a_broken_surrogate) {
        static const char *const broken[] = { "\"\\ud83d\\u", "[\"\\ud83d\\", "{\"k\":\"\\udbff\\u00", NULL };

        for (size_t i = 0; broken[i]; i++) {
                _cleanup_(json_object_putp) struct json_object *o = NULL, *b = NULL;
                const char *error = NULL;

                cr_assert_lt(json_parse(broken[i], strlen(broken[i]), &b, &error), 0, "%s parsed", broken[i]);
                cr_assert_eq(json_parse("\"x\\u0014y\"", 10, &o, NULL), 0);
                cr_assert_str_eq(json_object_get_string(o), "x\x14y", "after %s", broken[i]);
        }
}

static char* exposition(void (*fill)(FILE *f)) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        cr_assert_not_null(f);
        fill(f);
        cr_assert_eq(fclose(f), 0);
        return buf;
}

static void fill_samples(FILE *f) {
        cr_assert_eq(metrics_family(f, "photond_requests_total", "counter", "Requests handled."), 0);
        cr_assert_eq(metrics_sample_u64(f, "photond_requests_total",
                                        (const char *const[]) { "type", "lock", "outcome", "ok", NULL }, 42), 0);
        cr_assert_eq(metrics_sample(f, "photond_up", NULL, 1), 0);
        cr_assert_eq(metrics_sample_u64(f, "photond_odd", (const char *const[]) { "v", "a\\b\"c\nd", NULL }, 7), 0);
}

Test(shared, metrics_exposition_lines_and_label_escapes) {
        _cleanup_free_ char *text = exposition(fill_samples);

        cr_assert_str_eq(text,
                         "# HELP photond_requests_total Requests handled.\n"
                         "# TYPE photond_requests_total counter\n"
                         "photond_requests_total{type=\"lock\",outcome=\"ok\"} 42\n"
                         "photond_up 1\n"
                         "photond_odd{v=\"a\\\\b\\\"c\\nd\"} 7\n");
}

static const uint64_t test_bounds[] = { 100, 1000 };

static void fill_histogram(FILE *f) {
        Histogram h;

        histogram_init(&h, test_bounds, 2);
        histogram_observe(&h, 100);     /* on a bound: that bucket (le is "less or equal") */
        histogram_observe(&h, 101);
        histogram_observe(&h, 999);
        histogram_observe(&h, 5000000);
        cr_assert_eq(metrics_histogram(f, "photond_request_duration_seconds",
                                       (const char *const[]) { "type", "ping", NULL }, &h), 0);
}

Test(shared, metrics_histogram_is_cumulative_in_seconds) {
        _cleanup_free_ char *text = exposition(fill_histogram);

        cr_assert_str_eq(text,
                         "photond_request_duration_seconds_bucket{type=\"ping\",le=\"0.0001\"} 1\n"
                         "photond_request_duration_seconds_bucket{type=\"ping\",le=\"0.001\"} 3\n"
                         "photond_request_duration_seconds_bucket{type=\"ping\",le=\"+Inf\"} 4\n"
                         "photond_request_duration_seconds_sum{type=\"ping\"} 5.0012\n"
                         "photond_request_duration_seconds_count{type=\"ping\"} 4\n");
}

Test(shared, metrics_names) {
        cr_assert(metrics_name_is_valid("photond_locks_held"));
        cr_assert(metrics_name_is_valid("a:b_c9"));
        cr_assert(!metrics_name_is_valid("9a"));
        cr_assert(!metrics_name_is_valid("a-b"));
        cr_assert(!metrics_name_is_valid(""));
        for (unsigned i = 1; i < histogram_request_n_bounds; i++)
                cr_assert_gt(histogram_request_bounds[i], histogram_request_bounds[i - 1]);
        for (unsigned i = 1; i < histogram_lateness_n_bounds; i++)
                cr_assert_gt(histogram_lateness_bounds[i], histogram_lateness_bounds[i - 1]);
        cr_assert_leq(histogram_request_n_bounds, HISTOGRAM_MAX_BUCKETS);
}
