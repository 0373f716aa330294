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

/* A bad name reads the same in every request type; the reference's text is the prefix where it has one. */
Test(protocol, name_errors_are_worded_once) {
        char buf[512];

        cr_assert_str_eq(request_name_error("method", "../../bin/sh", buf, sizeof(buf)),
                         "Tool not found: ../../bin/sh (not a valid method name: 1-64 characters of A-Z a-z 0-9 . _ -, "
                         "not starting with a dot)");
        cr_assert_str_eq(request_name_error("photonName", "../x", buf, sizeof(buf)),
                         "Cannot initialize photon '../x': not a valid photon name (1-64 characters of A-Z a-z 0-9 . _ "
                         "-, not starting with a dot)");
        cr_assert_str_eq(request_name_error("jobId", "a/b", buf, sizeof(buf)),
                         "Invalid request format: jobId 'a/b' is not a valid name (1-64 characters of A-Z a-z 0-9 . _ "
                         "-, not starting with a dot)");
        cr_assert_str_eq(request_name_error("photonName", NULL, buf, sizeof(buf)),
                         "Invalid request format: photonName is missing", "as the parser says it");
        cr_assert(strstr(request_name_error("instanceName", "01234567890123456789012345678901234567890123456789"
                                            "0123456789012345", buf, sizeof(buf)),
                         "'0123456789012345678901234567890123456789012345678901234567890123…'"), "%s", buf);
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
