/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "photond-protocol.h"
#include "string-util.h"

static void expect_invalid(const char *line, const char *prefix, const char *id) {
        _cleanup_(request_freep) Request *req = NULL;
        _cleanup_free_ char *error = NULL, *rid = NULL;

        cr_assert_eq(request_parse(line, strlen(line), &req, &error, &rid), -EINVAL, "accepted: %s", line);
        cr_assert_null(req);
        cr_assert(error && startswith(error, prefix), "'%s' gave '%s', want prefix '%s'", line, error, prefix);
        if (id)
                cr_assert_str_eq(rid, id);
        else
                cr_assert_null(rid, "id '%s' for %s", rid, line);
}

static Request* expect_valid(const char *line) {
        Request *req = NULL;
        _cleanup_free_ char *error = NULL, *rid = NULL;

        cr_assert_eq(request_parse(line, strlen(line), &req, &error, &rid), 0, "rejected %s: %s", line, error);
        cr_assert_not_null(req);
        return req;
}

Test(protocol, type_table_round_trips) {
        for (RequestType t = 0; t < _REQUEST_TYPE_MAX; t++) {
                cr_assert_not_null(request_type_to_string(t));
                cr_assert_eq(request_type_from_string(request_type_to_string(t)), t);
        }
        cr_assert_eq(request_type_from_string("nope"), _REQUEST_TYPE_INVALID);
        cr_assert_null(request_type_to_string(_REQUEST_TYPE_MAX));
}

Test(protocol, invalid_json) {
        expect_invalid("not json", "Invalid JSON", NULL);
        expect_invalid("{\"id\":\"a\",", "Invalid JSON", NULL);
        expect_invalid("{\"id\":\"a\"} x", "Invalid JSON", NULL);
        expect_invalid("{\"id\":\"a\",\"type\":\"ping\"}{}", "Invalid JSON", NULL);
}

Test(protocol, nul_byte) {
        static const char line[] = "{\"id\":\"a\",\"type\":\"ping\"}\0";
        _cleanup_(request_freep) Request *req = NULL;
        _cleanup_free_ char *error = NULL, *rid = NULL;

        cr_assert_eq(request_parse(line, sizeof(line) - 1, &req, &error, &rid), -EINVAL);
        cr_assert(startswith(error, "Invalid JSON"));
}

Test(protocol, not_an_object) {
        expect_invalid("[1,2]", "Invalid request format: request must be a JSON object", NULL);
        expect_invalid("null", "Invalid request format", NULL);
        expect_invalid("\"ping\"", "Invalid request format", NULL);
        expect_invalid("42", "Invalid request format", NULL);
}

Test(protocol, id_rules) {
        expect_invalid("{\"type\":\"ping\"}", "Invalid request format: id is missing", NULL);
        expect_invalid("{\"type\":\"ping\",\"id\":1}", "Invalid request format: id must be a string", NULL);
        expect_invalid("{\"type\":\"ping\",\"id\":null}", "Invalid request format: id must be a string", NULL);
}

Test(protocol, type_rules_echo_id) {
        expect_invalid("{\"id\":\"r1\"}", "Invalid request format: type is missing", "r1");
        expect_invalid("{\"id\":\"r2\",\"type\":7}", "Invalid request format: type must be a string", "r2");
        expect_invalid("{\"id\":\"r3\",\"type\":\"x\"}", "Invalid request format: unknown type 'x'", "r3");
}

Test(protocol, required_fields) {
        static const struct {
                const char *line, *error;
        } cases[] = {
                { "{\"id\":\"a\",\"type\":\"command\"}", "Invalid request format: method is missing" },
                { "{\"id\":\"a\",\"type\":\"command\",\"method\":1}", "Invalid request format: method must be a string" },
                { "{\"id\":\"a\",\"type\":\"subscribe\"}", "Invalid request format: channel is missing" },
                { "{\"id\":\"a\",\"type\":\"unsubscribe\"}", "Invalid request format: channel is missing" },
                { "{\"id\":\"a\",\"type\":\"publish\",\"channel\":null}", "Invalid request format: channel must be a string" },
                { "{\"id\":\"a\",\"type\":\"lock\"}", "Invalid request format: lockName is missing" },
                { "{\"id\":\"a\",\"type\":\"unlock\"}", "Invalid request format: lockName is missing" },
                { "{\"id\":\"a\",\"type\":\"assign_lock\"}", "Invalid request format: lockName is missing" },
                { "{\"id\":\"a\",\"type\":\"transfer_lock\"}", "Invalid request format: lockName is missing" },
                { "{\"id\":\"a\",\"type\":\"query_lock\",\"lockName\":[]}", "Invalid request format: lockName must be a string" },
                { "{\"id\":\"a\",\"type\":\"schedule\",\"jobId\":\"j\",\"method\":\"m\"}", "Invalid request format: cron is missing" },
                { "{\"id\":\"a\",\"type\":\"unschedule\"}", "Invalid request format: jobId is missing" },
                { "{\"id\":\"a\",\"type\":\"reload\"}", "Invalid request format: photonPath is missing" },
                { "{\"id\":\"a\",\"type\":\"get_execution_history\",\"photonName\":\"p\"}", "Invalid request format: method is missing" },
                { "{\"id\":\"a\",\"type\":\"get_line_history\"}", "Invalid request format: photonName is missing" },
                { "{\"id\":\"a\",\"type\":\"provide\"}", "Invalid request format: photonName is missing" },
                { "{\"id\":\"a\",\"type\":\"run_job\"}", "Invalid request format: jobId is missing" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                expect_invalid(cases[i].line, cases[i].error, "a");
}

/* A C string ends at a NUL byte: a name with one would silently become a shorter name ("a\u0000x" the lock "a",
 * "p\u0000/../../evil" the photon "p"). Every member photond reads as a C string refuses it, in every request type;
 * an id with one is not echoed at all (the reply says "unknown"), never shortened. */
Test(protocol, nul_in_a_name_is_refused) {
        static const struct {
                const char *line, *member;
        } cases[] = {
                { "{\"id\":\"1\",\"type\":\"lock\",\"lockName\":\"a\\u0000x\"}", "lockName" },
                { "{\"id\":\"1\",\"type\":\"query_lock\",\"lockName\":\"\\u0000\"}", "lockName" },
                { "{\"id\":\"1\",\"type\":\"unlock\",\"lockName\":\"a\",\"lockHolder\":\"owner\\u0000other\"}", "lockHolder" },
                { "{\"id\":\"1\",\"type\":\"transfer_lock\",\"lockName\":\"a\",\"lockTransferTo\":\"b\\u0000c\"}", "lockTransferTo" },
                { "{\"id\":\"1\",\"type\":\"lock\",\"lockName\":\"a\",\"sessionId\":\"s\\u0000t\"}", "sessionId" },
                { "{\"id\":\"1\",\"type\":\"ping\",\"sessionId\":\"s\\u0000\"}", "sessionId" },
                { "{\"id\":\"1\",\"type\":\"publish\",\"channel\":\"a\\u0000b\",\"message\":1}", "channel" },
                { "{\"id\":\"1\",\"type\":\"subscribe\",\"channel\":\"a:\\u0000\"}", "channel" },
                { "{\"id\":\"1\",\"type\":\"get_events_since\",\"channel\":\"a\\u0000\"}", "channel" },
                { "{\"id\":\"1\",\"type\":\"command\",\"photonName\":\"p\\u0000/../../evil\",\"method\":\"m\"}", "photonName" },
                { "{\"id\":\"1\",\"type\":\"command\",\"photonName\":\"p\",\"method\":\"m\\u0000x\"}", "method" },
                { "{\"id\":\"1\",\"type\":\"command\",\"photonName\":\"p\",\"method\":\"m\",\"instanceName\":\"i\\u0000\"}", "instanceName" },
                { "{\"id\":\"1\",\"type\":\"provide\",\"photonName\":\"p\\u0000q\"}", "photonName" },
                { "{\"id\":\"1\",\"type\":\"schedule\",\"photonName\":\"p\",\"jobId\":\"j\\u0000k\",\"method\":\"m\",\"cron\":\"* * * * *\"}", "jobId" },
                { "{\"id\":\"1\",\"type\":\"schedule\",\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\\u0000x\"}", "cron" },
                { "{\"id\":\"1\",\"type\":\"schedule\",\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"@daily\",\"workingDir\":\"/tmp\\u0000/x\"}", "workingDir" },
                { "{\"id\":\"1\",\"type\":\"unschedule\",\"jobId\":\"p:ipc:j\\u0000\"}", "jobId" },
                { "{\"id\":\"1\",\"type\":\"run_job\",\"jobId\":\"\\u0000\"}", "jobId" },
                { "{\"id\":\"1\",\"type\":\"enable_schedule\",\"photonName\":\"p\",\"method\":\"m\\u0000\"}", "method" },
                { "{\"id\":\"1\",\"type\":\"get_execution_history\",\"photonName\":\"p\\u0000\",\"method\":\"m\"}", "photonName" },
                { "{\"id\":\"1\",\"type\":\"ping\\u0000x\"}", "type" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *want = NULL;

                cr_assert(asprintf(&want, "Invalid request format: %s must not contain a NUL character",
                                   cases[i].member) > 0);
                expect_invalid(cases[i].line, want, "1");
        }

        expect_invalid("{\"id\":\"x\\u0000y\",\"type\":\"ping\"}",
                       "Invalid request format: id must not contain a NUL character", NULL);
        expect_invalid("{\"id\":\"\\u0000\",\"type\":\"lock\",\"lockName\":\"a\"}",
                       "Invalid request format: id must not contain a NUL character", NULL);
}

/* A NUL byte in a payload is data: it stays in the request, to be written back as \u0000. */
Test(protocol, nul_in_a_payload_is_kept) {
        static const char *const lines[] = {
                "{\"id\":\"a\",\"type\":\"publish\",\"channel\":\"c\",\"message\":\"x\\u0000y\"}",
                "{\"id\":\"a\",\"type\":\"publish\",\"channel\":\"c\",\"message\":{\"k\":[\"\\u0000\"]}}",
                "{\"id\":\"a\",\"type\":\"command\",\"photonName\":\"p\",\"method\":\"m\",\"args\":{\"s\":\"a\\u0000b\"}}",
                "{\"id\":\"a\",\"type\":\"prompt_response\",\"promptValue\":\"a\\u0000b\"}",
                "{\"id\":\"a\",\"type\":\"ping\",\"note\":\"\\u0000\"}",
        };
        _cleanup_(request_freep) Request *req = NULL;

        for (size_t i = 0; i < ELEMENTSOF(lines); i++)
                request_free(expect_valid(lines[i]));

        req = expect_valid(lines[1]);
        cr_assert_str_eq(json_object_to_json_string_ext(json_object_object_get(req->json, "message"), JSON_FORMAT_FLAGS),
                         "{\"k\":[\"\\u0000\"]}");

        /* json-c keeps keys as C strings: a key with a NUL cannot round-trip, so the request is refused. */
        expect_invalid("{\"id\":\"a\",\"type\":\"publish\",\"channel\":\"c\",\"message\":{\"k\\u0000x\":1}}",
                       "Invalid JSON: an object key contains a NUL character", NULL);
}

Test(protocol, minimal_requests_are_valid) {
        static const char *const lines[] = {
                "{\"id\":\"a\",\"type\":\"ping\",\"extra\":[1]}",
                "{\"id\":\"a\",\"type\":\"status\"}",
                "{\"id\":\"a\",\"type\":\"shutdown\"}",
                "{\"id\":\"a\",\"type\":\"list_locks\"}",
                "{\"id\":\"a\",\"type\":\"list_jobs\"}",
                "{\"id\":\"a\",\"type\":\"get_events_since\"}",
                "{\"id\":\"a\",\"type\":\"command\",\"method\":\"m\"}",
                "{\"id\":\"a\",\"type\":\"schedule\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\"}",
                "{\"id\":\"a\",\"type\":\"reload\",\"photonPath\":null}",
                "  {\"id\":\"a\",\"type\":\"ping\"}  ",
        };

        for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
                _cleanup_(request_freep) Request *req = expect_valid(lines[i]);
                cr_assert_str_eq(req->id, "a");
        }
}

Test(protocol, request_fields) {
        _cleanup_(request_freep) Request *req = expect_valid("{\"id\":\"x1\",\"type\":\"publish\",\"channel\":\"a:b\"}");

        cr_assert_eq(req->type, REQUEST_PUBLISH);
        cr_assert_str_eq(request_string(req, "channel"), "a:b");
        cr_assert_null(request_string(req, "message"));
}

static char* to_string(struct json_object *o) {
        char *s = strdup(json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS));
        json_object_put(o);
        return s;
}

Test(protocol, response_shapes_match_reference) {
        _cleanup_free_ char *pong = NULL, *err = NULL, *err2 = NULL, *res = NULL, *shut = NULL, *res2 = NULL;
        struct json_object *data = json_object_new_object();

        json_object_object_add(data, "path", json_object_new_string("a/b"));
        pong = to_string(response_pong_new("p1"));
        err = to_string(response_error_new(NULL, "Invalid request format", NULL));
        err2 = to_string(response_error_new("e", "Daemon is shutting down", "Retry after the daemon restarts"));
        res = to_string(response_result_new("r", true, data));
        res2 = to_string(response_result_new("r", false, NULL));
        shut = to_string(response_shutdown_new());

        cr_assert_str_eq(pong, "{\"type\":\"pong\",\"id\":\"p1\"}");
        cr_assert_str_eq(err, "{\"type\":\"error\",\"id\":\"unknown\",\"error\":\"Invalid request format\"}");
        cr_assert_str_eq(err2, "{\"type\":\"error\",\"id\":\"e\",\"error\":\"Daemon is shutting down\","
                               "\"suggestion\":\"Retry after the daemon restarts\"}");
        /* JSON.stringify does not escape '/', and neither may we. */
        cr_assert_str_eq(res, "{\"type\":\"result\",\"id\":\"r\",\"success\":true,\"data\":{\"path\":\"a/b\"}}");
        cr_assert_str_eq(res2, "{\"type\":\"result\",\"id\":\"r\",\"success\":false}");
        cr_assert_str_eq(shut, "{\"type\":\"shutdown\",\"id\":\"daemon-shutdown\",\"reason\":\"daemon-shutting-down\"}");
}

/* ---- the publish fast path's scan ---- */

static bool scans(const char *line) {
        PublishScan s;

        return request_scan_publish(line, strlen(line), &s) == 1;
}

Test(protocol, publish_scan_accepts_and_declines) {
        PublishScan s;
        const char *line = " {\"type\" : \"publish\", \"photonName\":{\"x\": [1, 2.5e3]},\"id\":\"p-1\",\"channel\":\"a:b\","
                           "\"message\":{\"k\":[1,-2,0.5,\"\\u001f\\n\",true,null,{}],\"\\u00e\":0}} ";

        cr_assert_not(scans(line), "a bad \\u escape in a key is not JSON");
        line = " {\"type\" : \"publish\", \"photonName\":{\"x\": [1, 2.5e3]},\"id\":\"p-1\",\"channel\":\"a:b\","
               "\"message\":{\"k\":[1,-2,0.5,\"\\u001f\\n\",true,null,{}],\"\\u000b\":0}} ";
        cr_assert_eq(request_scan_publish(line, strlen(line), &s), 1);
        cr_assert_eq(s.id_len, 3);
        cr_assert(memcmp(s.id, "p-1", 3) == 0);
        cr_assert(memcmp(s.channel, "a:b", 3) == 0 && s.channel_len == 3);
        cr_assert_eq(s.message_len, strlen("{\"k\":[1,-2,0.5,\"\\u001f\\n\",true,null,{}],\"\\u000b\":0}"));

        cr_assert(scans("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\"}"), "no message");
        cr_assert(scans("{\"channel\":\"c\",\"message\":null,\"id\":\"1\",\"type\":\"publish\"}"), "any key order");

        static const char *const declined[] = {
                "{\"type\":\"publish\",\"id\":\"1\"}",                                    /* no channel */
                "{\"type\":\"subscribe\",\"id\":\"1\",\"channel\":\"c\"}",
                "{\"type\":\"publish\",\"id\":1,\"channel\":\"c\"}",                     /* id not a string */
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"sessionId\":\"s\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"id\":\"2\"}",       /* duplicate */
                "{\"type\":\"publish\",\"id\":\"\\u0031\",\"channel\":\"c\"}",            /* escaped id */
                "{\"type\":\"publ\\u0069sh\",\"id\":\"1\",\"channel\":\"c\"}",
                "{\"t\\u0079pe\":\"publish\",\"id\":\"1\",\"channel\":\"c\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":{\"a\": 1}}",  /* not compact */
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":{\"a\":1,\"a\":2}}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":-0}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":12345678901234567890}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"\\/\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"\\u00e9\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"\\u000a\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"\\u001F\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"a\tb\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":1.}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":[1,]}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":01}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":tru}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\"} x",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",}",
                "[\"publish\"]",
                "",
        };
        for (size_t i = 0; i < ELEMENTSOF(declined); i++)
                cr_assert_not(scans(declined[i]), "should be left to the general path: %s", declined[i]);

        /* Nesting: json-c takes 32 levels, the fast path stays below. */
        for (int levels = 30; levels <= 31; levels++) {
                char deep[256];
                int n = snprintf(deep, sizeof(deep), "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":");
                for (int i = 0; i < levels; i++)
                        deep[n++] = '[';
                for (int i = 0; i < levels; i++)
                        deep[n++] = ']';
                deep[n++] = '}';
                deep[n] = '\0';
                cr_assert_eq(scans(deep), levels == 30, "%d levels in the message", levels);
        }
}

static uint64_t rng_state = 88172645463325252ULL;

static unsigned rnd(unsigned n) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return (unsigned) (rng_state % n);
}

/* Whenever the scanner takes a line, json-c parses it strictly and prints the message back byte for byte. */
static void check_scan_agrees_with_json_c(const char *line, size_t len, unsigned *n_taken) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *v;
        PublishScan s;
        const char *text;
        size_t n;

        if (request_scan_publish(line, len, &s) != 1)
                return;
        (*n_taken)++;
        cr_assert_eq(json_parse(line, len, &o, NULL), 0, "taken but not JSON: %.*s", (int) len, line);
        cr_assert(json_object_is_type(o, json_type_object));
        cr_assert_str_eq(json_get_string(o, "type"), "publish");
        cr_assert_not(json_object_object_get_ex(o, "sessionId", NULL));
        cr_assert(json_object_object_get_ex(o, "id", &v) && (size_t) json_object_get_string_len(v) == s.id_len &&
                  memcmp(json_object_get_string(v), s.id, s.id_len) == 0);
        cr_assert(json_object_object_get_ex(o, "channel", &v) &&
                  (size_t) json_object_get_string_len(v) == s.channel_len &&
                  memcmp(json_object_get_string(v), s.channel, s.channel_len) == 0);
        cr_assert_eq(json_object_object_get_ex(o, "message", &v), s.message != NULL);
        if (!s.message)
                return;
        text = json_object_to_json_string_length(v, JSON_FORMAT_FLAGS, &n);
        cr_assert(n == s.message_len && memcmp(text, s.message, n) == 0,
                  "message differs from json-c's: %.*s vs %s", (int) s.message_len, s.message, text);
}

/* Strings are skipped eight bytes at a time: a byte that needs a look, at any place in a run, in any word, is still
 * seen (a control character refused, an escape taken), and plain bytes of any value are taken. */
Test(protocol, publish_scan_sees_every_byte_of_a_long_string) {
        static const char *const specials[] = { "\"", "\\", "\x01", "\x1f", "\n", "\x7f", "\x80", "\xc3\xa9",
                                                "\\\"", "\\n", "\\u0001", " ", "\xff\"", "\x80\x01", "\xc3\\", "\x01\x80" };
        unsigned taken = 0;
        char line[256];

        for (size_t k = 0; k < ELEMENTSOF(specials); k++)
                for (unsigned len = 0; len < 40; len++)
                        for (unsigned at = 0; at <= len; at++) {
                                int n = snprintf(line, sizeof(line),
                                                 "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"%.*s%s%.*s\"}",
                                                 (int) at, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", specials[k],
                                                 (int) (len - at), "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
                                /* '"' ends the string early; '\\' alone and controls are errors, also next to a
                                 * byte >= 0x80 in the same word */
                                bool valid = k >= 5 && k <= 11;

                                check_scan_agrees_with_json_c(line, (size_t) n, &taken);
                                cr_assert_eq(scans(line), valid, "%s", line);
                        }
        cr_assert_gt(taken, 0);
}

Test(protocol, publish_scan_agrees_with_json_c_on_mutations) {
        static const char *const seeds[] = {
                "{\"type\":\"publish\",\"id\":\"p1\",\"channel\":\"a:b\",\"message\":{\"k\":[1,-2,0.5,1e3,\"x\\n\\u0001\",true,null,{}]}}",
                "{\"id\":\"p2\",\"type\":\"publish\",\"channel\":\"z\",\"message\":\"t\\\"\\\\\\b\\f\\r\\t\",\"photonName\":[1, {\"a\":2}]}",
                "{\"type\":\"publish\",\"channel\":\"q\",\"id\":\"3\",\"message\":[[],{},[[0]],-0.0,12,\"\\u001f\"]}",
        };
        static const char alphabet[] = "{}[],:\"\\ u0019aefnrtlsE+-.\t/x";
        unsigned taken = 0, tried = 0;
        char buf[512];

        for (size_t k = 0; k < ELEMENTSOF(seeds); k++)
                for (unsigned iter = 0; iter < 60000; iter++) {
                        size_t len = strlen(seeds[k]);

                        memcpy(buf, seeds[k], len);
                        for (unsigned m = 1 + rnd(3); m > 0; m--) {
                                size_t at = rnd((unsigned) len);
                                char c = alphabet[rnd(sizeof(alphabet) - 1)];

                                switch (rnd(3)) {
                                case 0:         /* replace */
                                        buf[at] = c;
                                        break;
                                case 1:         /* insert */
                                        if (len + 1 >= sizeof(buf))
                                                break;
                                        memmove(buf + at + 1, buf + at, len - at);
                                        buf[at] = c;
                                        len++;
                                        break;
                                default:        /* delete */
                                        memmove(buf + at, buf + at + 1, len - at - 1);
                                        len--;
                                }
                        }
                        tried++;
                        check_scan_agrees_with_json_c(buf, len, &taken);
                }
        /* The seeds themselves are taken, and a fair share of the near-misses. */
        for (size_t k = 0; k < ELEMENTSOF(seeds); k++)
                cr_assert(scans(seeds[k]), "%s", seeds[k]);
        cr_assert_gt(taken, tried / 50, "only %u of %u mutations were taken", taken, tried);
}

/* Random messages as json-c prints them are all taken, so the fast path really is the common path. */
static struct json_object* random_value(unsigned depth) {
        switch (rnd(depth > 4 ? 5 : 7)) {
        case 0:
                return json_object_new_int64((int64_t) rnd(2000000) - 1000000);
        case 1:
                return json_object_new_double((double) rnd(100000) / 64.0 - 700);
        case 2: {
                char s[16];
                size_t n = rnd(sizeof(s));
                for (size_t i = 0; i < n; i++)
                        s[i] = (char) (rnd(4) == 0 ? rnd(0x20) + 1 : rnd(4) == 0 ? 0xc3 : rnd(95) + 0x20);
                return json_object_new_string_len(s, (int) n);
        }
        case 3:
                return json_object_new_boolean(rnd(2));
        case 4:
                return NULL;
        case 5: {
                struct json_object *a = json_object_new_array();
                for (unsigned i = rnd(4); i > 0; i--)
                        json_object_array_add(a, random_value(depth + 1));
                return a;
        }
        default: {
                struct json_object *o = json_object_new_object();
                for (unsigned i = rnd(4); i > 0; i--) {
                        char key[8];
                        snprintf(key, sizeof(key), "k%u", rnd(6));
                        json_object_object_add(o, key, random_value(depth + 1));
                }
                return o;
        }
        }
}

Test(protocol, publish_scan_takes_what_json_c_prints) {
        for (unsigned i = 0; i < 20000; i++) {
                _cleanup_(json_object_putp) struct json_object *req = json_object_new_object();
                const char *line;
                unsigned taken = 0;
                size_t n;

                json_object_object_add(req, "type", json_object_new_string("publish"));
                json_object_object_add(req, "id", json_object_new_string("r"));
                json_object_object_add(req, "channel", json_object_new_string("c:d"));
                json_object_object_add(req, "message", random_value(0));
                line = json_object_to_json_string_length(req, JSON_FORMAT_FLAGS, &n);
                check_scan_agrees_with_json_c(line, n, &taken);
                cr_assert_eq(taken, 1, "not taken: %s", line);
        }
}

/* The fast path takes only ids and channels without escapes, so a NUL byte in one ("a\u0000b", or raw) is left to
 * the general path, which refuses it; a NUL in the message is data (tests/test-channel.c sees it forwarded). */
Test(protocol, publish_scan_leaves_nul_in_names_to_the_general_path) {
        static const char *const declined[] = {
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\\u0000b\",\"message\":1}",
                "{\"type\":\"publish\",\"id\":\"x\\u0000y\",\"channel\":\"c\",\"message\":1}",
                "{\"type\":\"publish\\u0000\",\"id\":\"1\",\"channel\":\"c\"}",
                /* json-c would cut this key at its NUL, so the general path refuses it */
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":{\"k\\u0000x\":1}}",
        };
        static const char raw[][64] = {
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\0b\"}",
                "{\"type\":\"publish\",\"id\":\"1\0\",\"channel\":\"c\"}",
                "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"\0\"}",
        };
        PublishScan scan;

        for (size_t i = 0; i < ELEMENTSOF(declined); i++)
                cr_assert_not(scans(declined[i]), "taken: %s", declined[i]);
        for (size_t i = 0; i < ELEMENTSOF(raw); i++) {
                size_t len = strlen(raw[i]);

                len += strlen(raw[i] + len + 1) + 1;    /* past the NUL */
                cr_assert_eq(raw[i][len - 1], '}');
                cr_assert_eq(request_scan_publish(raw[i], len, &scan), 0, "taken: case %zu", i);
        }
        cr_assert(scans("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":{\"k\":\"a\\u0000b\"}}"),
                  "a NUL in the message is data");
}

/* What the scan must leave to the general path, and what request_parse() makes of it there: a publish on the channel
 * json-c reads, or the refusal every request type gets. */
#define LINE(s) s, sizeof(s) - 1
Test(protocol, publish_scan_leaves_to_the_general_path) {
        static const struct {
                const char *line;
                size_t len;
                const char *error;      /* request_parse()'s refusal (its start); NULL: it takes the publish */
                const char *id, *channel, *message;     /* then: what it publishes, the message as json-c prints it */
        } cases[] = {
                /* escapes in the channel or the id */
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\\/b\"}"), NULL, "1", "a/b", NULL },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"\\u0061b\",\"message\":1}"), NULL, "1", "ab", "1" },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"caf\\u00e9\",\"message\":1}"), NULL, "1", "caf\xc3\xa9", "1" },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\\\"b\\n\",\"message\":1}"), NULL, "1", "a\"b\n", "1" },
                { LINE("{\"type\":\"publish\",\"id\":\"\\u0031\",\"channel\":\"c\",\"message\":1}"), NULL, "1", "c", "1" },
                { LINE("{\"type\":\"publish\",\"id\":\"a\\\\b\",\"channel\":\"c\",\"message\":1}"), NULL, "a\\b", "c", "1" },
                /* NUL, escaped or raw: refused in a name, the id or any text member, and anywhere raw */
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\\u0000b\"}"),
                  "Invalid request format: channel must not contain a NUL character" },
                { LINE("{\"type\":\"publish\",\"id\":\"x\\u0000y\",\"channel\":\"c\"}"),
                  "Invalid request format: id must not contain a NUL character" },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"workingDir\":\"/\\u0000\"}"),
                  "Invalid request format: workingDir must not contain a NUL character" },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\0b\"}"), "Invalid JSON: NUL byte in request" },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":\"\0\"}"),
                  "Invalid JSON: NUL byte in request" },
                /* not an object */
                { LINE("[\"publish\",\"1\",\"c\"]"), "Invalid request format: request must be a JSON object" },
                { LINE("\"{\\\"type\\\":\\\"publish\\\",\\\"id\\\":\\\"1\\\",\\\"channel\\\":\\\"c\\\"}\""),
                  "Invalid request format: request must be a JSON object" },
                { LINE("null"), "Invalid request format: request must be a JSON object" },
                /* duplicate keys: json-c keeps the last */
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\",\"channel\":\"b\"}"), NULL, "1", "b", NULL },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"id\":\"2\",\"channel\":\"c\"}"), NULL, "2", "c", NULL },
                { LINE("{\"type\":\"subscribe\",\"id\":\"1\",\"channel\":\"c\",\"type\":\"publish\"}"), NULL, "1", "c", NULL },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":1,\"message\":[2]}"), NULL, "1", "c", "[2]" },
                { LINE("{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"c\",\"message\":{\"a\":1,\"b\":{\"a\":2},\"a\":3}}"),
                  NULL, "1", "c", "{\"a\":3,\"b\":{\"a\":2}}" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(request_freep) Request *req = NULL;
                _cleanup_free_ char *error = NULL, *id = NULL;
                struct json_object *v;
                PublishScan scan;
                int r;

                cr_assert_eq(request_scan_publish(cases[i].line, cases[i].len, &scan), 0, "taken: case %zu", i);

                r = request_parse(cases[i].line, cases[i].len, &req, &error, &id);
                if (cases[i].error) {
                        cr_assert_eq(r, -EINVAL, "case %zu accepted", i);
                        cr_assert(startswith(error, cases[i].error), "case %zu: %s", i, error);
                        continue;
                }
                cr_assert_eq(r, 0, "case %zu: %s", i, error);
                cr_assert_eq(req->type, REQUEST_PUBLISH, "case %zu", i);
                cr_assert_str_eq(req->id, cases[i].id, "case %zu", i);
                cr_assert_str_eq(request_string(req, "channel"), cases[i].channel, "case %zu", i);
                cr_assert_eq(json_object_object_get_ex(req->json, "message", &v), !!cases[i].message, "case %zu", i);
                if (cases[i].message)
                        cr_assert_str_eq(json_object_to_json_string_ext(v, JSON_FORMAT_FLAGS), cases[i].message,
                                         "case %zu", i);
        }
}

/* ---- lock requests: the fast path's parse and the general one ---- */

static void expect_same_lock_request(const LockRequest *a, const LockRequest *b, const char *line) {
        cr_assert_eq(a->type, b->type, "type of %s", line);
        cr_assert(streq_ptr(a->id, b->id), "id of %s", line);
        cr_assert(streq_ptr(a->name, b->name), "lockName of %s", line);
        cr_assert(streq_ptr(a->holder, b->holder), "lockHolder of %s", line);
        cr_assert(streq_ptr(a->session, b->session), "sessionId of %s", line);
        cr_assert(streq_ptr(a->transfer_to, b->transfer_to), "lockTransferTo of %s", line);
        cr_assert_eq(a->timeout_ms, b->timeout_ms, "lockTimeout of %s", line);
        cr_assert_eq(a->timeout_invalid, b->timeout_invalid, "lockTimeout of %s", line);
        cr_assert_eq(a->wait_ms, b->wait_ms, "lockWait of %s", line);
        cr_assert_eq(a->wait_invalid, b->wait_invalid, "lockWait of %s", line);
}

/* The general parse of line, which must be valid. */
static LockRequest general_lock_request(const char *line, size_t len, Request **ret_req) {
        _cleanup_free_ char *error = NULL, *rid = NULL;
        LockRequest r;

        cr_assert_eq(request_parse(line, len, ret_req, &error, &rid), 0, "rejected %s: %s", line, error);
        lock_request_from_request(*ret_req, &r);
        return r;
}

Test(protocol, lock_line_parse_reads_what_the_general_parse_reads) {
        static const char *const lines[] = {
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"s1\",\"lockTimeout\":5000}",
                "{\"lockTimeout\":0,\"sessionId\":\"\",\"lockName\":\"b/c\",\"id\":\"x/y\",\"type\":\"lock\"}",
                "{\"type\":\"unlock\",\"id\":\"2\",\"lockName\":\"a\",\"lockHolder\":\"h\",\"sessionId\":\"s\"}",
                "{\"type\":\"lock\",\"id\":\"3\",\"lockName\":\"a\",\"lockWait\":100,\"lockTimeout\":999999999999999999}",
                "{\"type\":\"lock\",\"id\":\"4\",\"lockName\":\"a\",\"lockTransferTo\":\"t\",\"photonName\":\"p\",\"n\":12}",
                "{\"type\":\"unlock\",\"id\":\"\",\"lockName\":\"\",\"lockHolder\":\"\"}",
                "{\"type\":\"lock\",\"id\":\"~ !#$%&'()*+,-.:;<=>?@[]^_`{|}\",\"lockName\":\"a\"}",
        };

        for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
                _cleanup_(request_freep) Request *req = NULL;
                LockLineBuf buf;
                LockRequest fast, general;

                cr_assert(lock_request_parse_line(lines[i], strlen(lines[i]), &buf, &fast), "not taken: %s", lines[i]);
                general = general_lock_request(lines[i], strlen(lines[i]), &req);
                expect_same_lock_request(&fast, &general, lines[i]);
                /* Copies: the line may go away. */
                cr_assert(fast.id >= buf.data && fast.id < buf.data + sizeof(buf.data));
        }

        _cleanup_(request_freep) Request *req = NULL;
        LockLineBuf buf;
        LockRequest r;
        const char *line = lines[4];

        cr_assert(lock_request_parse_line(line, strlen(line), &buf, &r));
        cr_assert_eq(r.type, REQUEST_LOCK);
        cr_assert_str_eq(r.id, "3");
        cr_assert_str_eq(r.name, "a");
        cr_assert_null(r.holder);
        cr_assert_null(r.session);
        cr_assert_eq(r.wait_ms, 100);
        cr_assert_eq(r.timeout_ms, UINT64_C(999999999999999999));
        cr_assert_not(r.timeout_invalid || r.wait_invalid);
        line = lines[3];
        cr_assert(lock_request_parse_line(line, strlen(line), &buf, &r));
        cr_assert_eq(r.type, REQUEST_UNLOCK);
        cr_assert_str_eq(r.holder, "h");
        cr_assert_str_eq(r.session, "s");
        cr_assert_eq(r.timeout_ms + r.wait_ms, 0, "absent: 0");
}

/* Everything but the plainest lock or unlock line is left to request_parse(), which takes it (and reads it) or
 * refuses it with its wording. */
Test(protocol, lock_line_parse_leaves_the_rest_to_the_general_path) {
        static const struct {
                const char *line;
                bool valid;                     /* request_parse() takes it */
        } cases[] = {
                /* escapes, in every string the parse reads and in a key */
                { "{\"type\":\"lock\",\"id\":\"a\\\"b\",\"lockName\":\"a\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\\\\b\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\\/b\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"\\u0061\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"s\\tt\"}", true },
                { "{\"type\":\"unlock\",\"id\":\"1\",\"lockName\":\"a\",\"lockHolder\":\"h\\n\"}", true },
                { "{\"type\":\"l\\u006fck\",\"id\":\"1\",\"lockName\":\"a\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lock\\u004eame\":\"a\"}", true },
                /* NUL bytes, escaped: the general path refuses them in a name, holder, session or type */
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\\u0000x\"}", false },
                { "{\"type\":\"lock\",\"id\":\"x\\u0000y\",\"lockName\":\"a\"}", false },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"s\\u0000t\"}", false },
                { "{\"type\":\"unlock\",\"id\":\"1\",\"lockName\":\"a\",\"lockHolder\":\"o\\u0000x\"}", false },
                /* bytes JSON allows raw but the parse does not copy: non-ASCII */
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"\xc3\xa9\"}", true },
                /* odd types for the members it reads */
                { "{\"type\":\"lock\",\"id\":1,\"lockName\":\"a\"}", false },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":7}", false },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockHolder\":7}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":null}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":\"5\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":-5}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":1.5}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":1e3}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":null}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":0123}", false },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":1234567890123456789}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockWait\":\"100\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockWait\":true}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"x\":null}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"x\":{}}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"x\":[1]}", true },
                { "{\"type\":7,\"id\":\"1\",\"lockName\":\"a\"}", false },
                /* members given twice: json-c keeps the last */
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockName\":\"b\"}", true },
                { "{\"type\":\"lock\",\"type\":\"unlock\",\"id\":\"1\",\"lockName\":\"a\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":1,\"lockTimeout\":2}", true },
                /* other types, missing members */
                { "{\"type\":\"assign_lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockHolder\":\"h\"}", true },
                { "{\"type\":\"query_lock\",\"id\":\"1\",\"lockName\":\"a\"}", true },
                { "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"a\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\"}", false },
                { "{\"type\":\"lock\",\"lockName\":\"a\"}", false },
                { "{\"id\":\"1\",\"lockName\":\"a\"}", false },
                /* not one flat object without whitespace */
                { "{ \"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"}", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"} ", true },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"}x", false },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"", false },
                { "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",}", false },
                { "{}", false },
                { "[\"lock\"]", false },
                { "", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(request_freep) Request *req = NULL;
                _cleanup_free_ char *error = NULL, *rid = NULL;
                const char *line = cases[i].line;
                LockLineBuf buf;
                LockRequest r;

                cr_assert_not(lock_request_parse_line(line, strlen(line), &buf, &r), "taken: %s", line);
                cr_assert_eq(request_parse(line, strlen(line), &req, &error, &rid), cases[i].valid ? 0 : -EINVAL,
                             "%s: %s", line, error ?: "(accepted)");
        }

        /* Raw NUL bytes, which the general path refuses as invalid JSON, in each string and after the object. */
        static const char raw[][64] = {
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\0x\"}",
                "{\"type\":\"lock\",\"id\":\"1\0\",\"lockName\":\"a\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"\0\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"}\0",
        };
        static const size_t raw_len[] = { 41, 40, 55, 40 };
        for (size_t i = 0; i < ELEMENTSOF(raw); i++) {
                _cleanup_(request_freep) Request *req = NULL;
                _cleanup_free_ char *error = NULL, *rid = NULL;
                LockLineBuf buf;
                LockRequest r;

                cr_assert_eq(raw[i][raw_len[i] - 1], i == 3 ? '\0' : '}', "length of case %zu", i);
                cr_assert_not(lock_request_parse_line(raw[i], raw_len[i], &buf, &r), "taken: case %zu", i);
                cr_assert_eq(request_parse(raw[i], raw_len[i], &req, &error, &rid), -EINVAL);
                cr_assert(startswith(error, "Invalid JSON"), "%s", error);
        }

        /* A line as long as the room for its copies. */
        char line[LOCK_LINE_MAX + 1];
        int n = snprintf(line, sizeof(line), "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"%0*d\"}",
                         (int) (LOCK_LINE_MAX - strlen("{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"\"}")), 0);
        LockLineBuf buf;
        LockRequest r;

        cr_assert_eq(n, LOCK_LINE_MAX);
        cr_assert_not(lock_request_parse_line(line, (size_t) n, &buf, &r), "taken at %d bytes", n);
        line[n - 3] = '"';
        line[n - 2] = '}';
        cr_assert(lock_request_parse_line(line, (size_t) n - 1, &buf, &r), "refused at %d bytes", n - 1);
        cr_assert_eq(strlen(r.name), LOCK_LINE_MAX - 1 - strlen("{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"\"}"));
}

/* What the general parse makes of the members the fast one leaves: the lock rules then see the same values. */
Test(protocol, lock_request_from_a_parsed_request) {
        static const char line[] = "{\"type\":\"transfer_lock\",\"id\":\"i\\\"d\",\"lockName\":\"a\\u00e9\","
                                   "\"lockHolder\":7,\"sessionId\":\"s\",\"lockTransferTo\":\"t\","
                                   "\"lockTimeout\":1.25,\"lockWait\":-1}";
        _cleanup_(request_freep) Request *req = NULL;
        LockRequest r;

        r = general_lock_request(line, strlen(line), &req);
        cr_assert_eq(r.type, REQUEST_TRANSFER_LOCK);
        cr_assert_str_eq(r.id, "i\"d");
        cr_assert_str_eq(r.name, "a\xc3\xa9");
        cr_assert_null(r.holder, "not a string: absent");
        cr_assert_str_eq(r.session, "s");
        cr_assert_str_eq(r.transfer_to, "t");
        cr_assert_eq(r.timeout_ms, 2, "fractions round up");
        cr_assert_not(r.timeout_invalid);
        cr_assert(r.wait_invalid);
        cr_assert_eq(r.wait_ms, 0);

        static const struct {
                const char *value;
                uint64_t ms;
                bool invalid;
        } numbers[] = {
                { "null", 0, false }, { "0", 0, false }, { "7", 7, false }, { "7.0", 7, false }, { "0.001", 1, false },
                { "1e30", UINT64_MAX, false }, { "-1", 0, true }, { "-0.5", 0, true }, { "\"7\"", 0, true },
                { "true", 0, true }, { "{}", 0, true },
        };
        for (size_t i = 0; i < ELEMENTSOF(numbers); i++) {
                _cleanup_(request_freep) Request *q = NULL;
                _cleanup_free_ char *l = NULL;

                cr_assert(asprintf(&l, "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":%s}",
                                   numbers[i].value) > 0);
                r = general_lock_request(l, strlen(l), &q);
                cr_assert_eq(r.timeout_ms, numbers[i].ms, "%s", l);
                cr_assert_eq(r.timeout_invalid, numbers[i].invalid, "%s", l);
        }
}
