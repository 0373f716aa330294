/* SPDX-License-Identifier: MIT */

/* The messages of cluster-mode method calls (cluster-call-msg.c): each kind survives a build and a parse, and the
 * parse refuses what Redis could carry that is not one (it comes from outside the node). */

#include <criterion/criterion.h>
#include <string.h>

#include "cluster-call-msg.h"
#include "json-util.h"

static struct json_object* J(const char *text) {
        struct json_object *o = NULL;

        cr_assert_eq(json_parse(text, strlen(text), &o, NULL), 0, "%s", text);
        return o;
}

static void roundtrip(const ClusterCallMsg *in, ClusterCallMsg *out) {
        char *s = NULL;
        size_t len = 0;

        cr_assert_eq(cluster_call_msg_build(in, &s, &len), 0);
        cr_assert_eq(strlen(s), len);
        cr_assert_eq(cluster_call_msg_parse(s, len, 1 << 20, out), 0, "%s", s);
        free(s);
        cr_assert_eq(out->kind, in->kind);
        cr_assert_str_eq(out->from, in->from);
        cr_assert_str_eq(out->call, in->call);
}

Test(cluster_call_msg, invoke_roundtrip) {
        struct json_object *args = J("{\"title\":\"x\",\"n\":[1,2]}");
        ClusterCallMsg m;

        roundtrip(&(ClusterCallMsg) {
                        .kind = CLUSTER_CALL_INVOKE, .from = "node-a", .call = "inv_12",
                        .photon = "kanban", .method = "add", .args = args, .trigger = "command",
                        .instance = "work", .session_id = "s-1", .timeout_ms = 1500,
                }, &m);
        cr_assert_str_eq(m.photon, "kanban");
        cr_assert_str_eq(m.method, "add");
        cr_assert(json_object_equal(m.args, args));
        cr_assert_str_eq(m.trigger, "command");
        cr_assert_null(m.job_id);
        cr_assert_str_eq(m.instance, "work");
        cr_assert_str_eq(m.session_id, "s-1");
        cr_assert_eq(m.timeout_ms, 1500);
        cluster_call_msg_done(&m);
        cr_assert_null(m.root);

        /* No args: {}; a job's id. */
        roundtrip(&(ClusterCallMsg) {
                        .kind = CLUSTER_CALL_INVOKE, .from = "b@system", .call = "inv_1",
                        .photon = "p", .method = "m", .trigger = "schedule", .job_id = "p:nightly",
                }, &m);
        cr_assert(json_object_is_type(m.args, json_type_object));
        cr_assert_eq(json_object_object_length(m.args), 0);
        cr_assert_str_eq(m.job_id, "p:nightly");
        cr_assert_eq(m.timeout_ms, 0);
        cluster_call_msg_done(&m);
        json_object_put(args);
}

Test(cluster_call_msg, emit_prompt_response_result_roundtrip) {
        struct json_object *v = J("{\"emit\":\"progress\",\"value\":0.5}"), *patch = J("[{\"op\":\"add\"}]");
        ClusterCallMsg m;

        roundtrip(&(ClusterCallMsg) { .kind = CLUSTER_CALL_EMIT, .from = "n", .call = "c", .value = v }, &m);
        cr_assert(json_object_equal(m.value, v));
        cluster_call_msg_done(&m);
        roundtrip(&(ClusterCallMsg) { .kind = CLUSTER_CALL_PROMPT, .from = "n", .call = "c", .value = v }, &m);
        cr_assert(json_object_equal(m.value, v));
        cluster_call_msg_done(&m);

        /* A prompt's answer may be null. */
        roundtrip(&(ClusterCallMsg) { .kind = CLUSTER_CALL_PROMPT_RESPONSE, .from = "n", .call = "c" }, &m);
        cr_assert_null(m.value);
        cluster_call_msg_done(&m);

        roundtrip(&(ClusterCallMsg) {
                        .kind = CLUSTER_CALL_RESULT, .from = "n", .call = "c", .success = true, .value = v,
                        .patch = patch, .duration_ms = 42,
                }, &m);
        cr_assert(m.success);
        cr_assert(json_object_equal(m.value, v));
        cr_assert(json_object_equal(m.patch, patch));
        cr_assert_null(m.inverse_patch);
        cr_assert_eq(m.duration_ms, 42);
        cluster_call_msg_done(&m);

        roundtrip(&(ClusterCallMsg) { .kind = CLUSTER_CALL_RESULT, .from = "n", .call = "c", .error = "Board is full" },
                  &m);
        cr_assert_not(m.success);
        cr_assert_str_eq(m.error, "Board is full");
        cluster_call_msg_done(&m);
        json_object_put(v);
        json_object_put(patch);
}

Test(cluster_call_msg, build_refuses_what_the_parse_would) {
        char *s = NULL;
        size_t len;

        cr_assert_eq(cluster_call_msg_build(&(ClusterCallMsg) { .kind = CLUSTER_CALL_RESULT, .from = "bad id",
                                                                .call = "c" }, &s, &len), -EINVAL);
        cr_assert_eq(cluster_call_msg_build(&(ClusterCallMsg) { .kind = CLUSTER_CALL_RESULT, .from = "n",
                                                                .call = "" }, &s, &len), -EINVAL);
        cr_assert_eq(cluster_call_msg_build(&(ClusterCallMsg) { .kind = CLUSTER_CALL_INVOKE, .from = "n", .call = "c",
                                                                .photon = "../x", .method = "m",
                                                                .trigger = "command" }, &s, &len), -EINVAL);
        cr_assert_eq(cluster_call_msg_build(&(ClusterCallMsg) { .kind = CLUSTER_CALL_INVOKE, .from = "n", .call = "c",
                                                                .photon = "p", .method = "m",
                                                                .trigger = "cron" }, &s, &len), -EINVAL);
        cr_assert_eq(cluster_call_msg_build(&(ClusterCallMsg) { .kind = CLUSTER_CALL_EMIT, .from = "n",
                                                                .call = "c" }, &s, &len), -EINVAL);
        cr_assert_eq(cluster_call_msg_build(&(ClusterCallMsg) { .kind = 99, .from = "n", .call = "c" }, &s, &len),
                     -EINVAL);
        cr_assert_null(s);
}

Test(cluster_call_msg, parse_refuses_garbage) {
        static const char *const bad[] = {
                "",
                "null",
                "[]",
                "{",
                "\"invoke\"",
                "{\"k\":\"emit\",\"from\":\"n\",\"call\":\"c\",\"value\":{}}",                    /* no version */
                "{\"v\":2,\"k\":\"emit\",\"from\":\"n\",\"call\":\"c\",\"value\":{}}",            /* another version */
                "{\"v\":1,\"k\":\"shout\",\"from\":\"n\",\"call\":\"c\"}",
                "{\"v\":1,\"k\":\"emit\",\"from\":\"a b\",\"call\":\"c\",\"value\":{}}",
                "{\"v\":1,\"k\":\"emit\",\"from\":\"n\",\"call\":\"\",\"value\":{}}",
                "{\"v\":1,\"k\":\"emit\",\"from\":\"n\",\"call\":\"c\\u0000d\",\"value\":{}}",
                "{\"v\":1,\"k\":\"emit\",\"from\":\"n\",\"call\":1,\"value\":{}}",
                "{\"v\":1,\"k\":\"emit\",\"from\":\"n\",\"call\":\"c\",\"value\":[]}",
                "{\"v\":1,\"k\":\"prompt\",\"from\":\"n\",\"call\":\"c\"}",
                "{\"v\":1,\"k\":\"prompt_response\",\"from\":\"n\",\"call\":\"c\"}",
                "{\"v\":1,\"k\":\"result\",\"from\":\"n\",\"call\":\"c\",\"ok\":\"yes\",\"value\":1}",
                "{\"v\":1,\"k\":\"result\",\"from\":\"n\",\"call\":\"c\",\"ok\":true}",
                "{\"v\":1,\"k\":\"result\",\"from\":\"n\",\"call\":\"c\",\"ok\":false}",
                "{\"v\":1,\"k\":\"result\",\"from\":\"n\",\"call\":\"c\",\"ok\":true,\"value\":1,\"durationMs\":-1}",
                "{\"v\":1,\"k\":\"invoke\",\"from\":\"n\",\"call\":\"c\",\"photon\":\"..\",\"method\":\"m\","
                        "\"args\":{},\"trigger\":\"command\"}",
                "{\"v\":1,\"k\":\"invoke\",\"from\":\"n\",\"call\":\"c\",\"photon\":\"p\",\"method\":\"m\","
                        "\"args\":[],\"trigger\":\"command\"}",
                "{\"v\":1,\"k\":\"invoke\",\"from\":\"n\",\"call\":\"c\",\"photon\":\"p\",\"method\":\"m\","
                        "\"args\":{},\"trigger\":\"later\"}",
                "{\"v\":1,\"k\":\"invoke\",\"from\":\"n\",\"call\":\"c\",\"photon\":\"p\",\"method\":\"m\","
                        "\"args\":{},\"trigger\":\"command\",\"instance\":\"a/b\"}",
                "{\"v\":1,\"k\":\"invoke\",\"from\":\"n\",\"call\":\"c\",\"photon\":\"p\",\"method\":\"m\","
                        "\"args\":{},\"trigger\":\"command\",\"timeoutMs\":1.5}",
                "{\"v\":1,\"k\":\"invoke\",\"from\":\"n\",\"call\":\"c\",\"photon\":\"p\",\"method\":\"m\","
                        "\"args\":{},\"trigger\":\"command\",\"sessionId\":7}",
        };
        ClusterCallMsg m;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_assert_eq(cluster_call_msg_parse(bad[i], strlen(bad[i]), 1 << 20, &m), -EINVAL, "%s", bad[i]);

        /* Bytes that are not text at all, and the size cap before any parse. */
        cr_assert_eq(cluster_call_msg_parse("\x00\xff{}", 4, 1 << 20, &m), -EINVAL);
        const char *ok = "{\"v\":1,\"k\":\"prompt_response\",\"from\":\"n\",\"call\":\"c\",\"value\":null}";
        cr_assert_eq(cluster_call_msg_parse(ok, strlen(ok), strlen(ok) - 1, &m), -EMSGSIZE);
        cr_assert_eq(cluster_call_msg_parse(ok, strlen(ok), strlen(ok), &m), 0);
        cluster_call_msg_done(&m);
}
