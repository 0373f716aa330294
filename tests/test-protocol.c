/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
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
