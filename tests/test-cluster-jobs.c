/* SPDX-License-Identifier: MIT */

/* Cluster mode, jobs: the pure parts of photond-cluster-jobs.c (claim keys, the definition a schedule request makes
 * and its parse, the state field). The rest is tested with real nodes (tests/integration/test-cluster-jobs.c). */

#include <criterion/criterion.h>
#include <json-c/json.h>
#include <string.h>

#include "json-util.h"
#include "photond-cluster-jobs.h"

Test(cluster_jobs, claim_key) {
        char *k = NULL;

        cr_assert_eq(cluster_jobs_claim_key("photon:", "kanban:ipc:nightly", 1767225600000, &k), 0);
        cr_assert_str_eq(k, "photon:fire:kanban:ipc:nightly:1767225600000");
        free(k);
        cr_assert_eq(cluster_jobs_claim_key("", "p:1a2b3c4d:ipc:j", -60000, &k), 0);
        cr_assert_str_eq(k, "fire:p:1a2b3c4d:ipc:j:-60000");
        free(k);
}

Test(cluster_jobs, history_key) {
        char *k = NULL, *job = NULL;

        cr_assert_eq(cluster_jobs_history_key("photon:", "kanban", "sweep", NULL, &k), 0);
        cr_assert_str_eq(k, "photon:history:kanban:sweep");
        free(k);
        /* With a base: the same 8 hex digits as the job key of a job there. */
        cr_assert_eq(cluster_jobs_history_key("x:", "kanban", "sweep", "/srv/board", &k), 0);
        cr_assert_eq(schedule_job_key("kanban", "/srv/board", "nightly", &job), 0);
        cr_assert_eq(strlen(k), strlen("x:history:kanban:12345678:sweep"), "%s", k);
        cr_assert(strncmp(k + strlen("x:history:"), job, strlen("kanban:12345678")) == 0, "%s vs %s", k, job);
        cr_assert_str_eq(k + strlen(k) - 6, ":sweep");
        free(k);
        free(job);
}

Test(cluster_jobs, definition_round_trip) {
        struct json_object *args = json_tokener_parse("{\"deep\":true,\"n\":9007199254740993,\"e\":{},\"a\":[]}"), *o;
        char *def = NULL, *again = NULL;
        JobSpec spec;

        cr_assert_eq(cluster_jobs_definition(&(const JobSpec) {
                                                     .photon = "kanban",
                                                     .job_id = "nightly",
                                                     .method = "sweep",
                                                     .cron = "0 3 * * *",
                                                     .args = args,
                                                     .working_dir = "/srv/board",
                                                     .created_by = "s1",
                                             }, &def), 0);
        cr_assert_str_eq(def, "{\"photonName\":\"kanban\",\"jobId\":\"nightly\",\"method\":\"sweep\",\"cron\":\"0 3 * * *\","
                              "\"args\":{\"deep\":true,\"n\":9007199254740993,\"e\":{},\"a\":[]},"
                              "\"workingDir\":\"/srv/board\",\"createdBy\":\"s1\"}");
        cr_assert_eq(cluster_jobs_definition_parse(def, &spec, &o), 0);
        cr_assert_str_eq(spec.photon, "kanban");
        cr_assert_str_eq(spec.job_id, "nightly");
        cr_assert_str_eq(spec.method, "sweep");
        cr_assert_str_eq(spec.cron, "0 3 * * *");
        cr_assert_str_eq(spec.working_dir, "/srv/board");
        cr_assert_str_eq(spec.created_by, "s1");
        /* The same definition again: a node that reloads compares the text and leaves its job alone. */
        cr_assert_eq(cluster_jobs_definition(&spec, &again), 0);
        cr_assert_str_eq(again, def);
        json_object_put(o);
        json_object_put(args);
        free(def);
        free(again);

        /* Optional members left out. */
        cr_assert_eq(cluster_jobs_definition(&(const JobSpec) { .photon = "p", .job_id = "j", .method = "m",
                                                                .cron = "@daily" }, &def), 0);
        cr_assert_str_eq(def, "{\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"@daily\"}");
        cr_assert_eq(cluster_jobs_definition_parse(def, &spec, &o), 0);
        cr_assert_null(spec.args);
        cr_assert_null(spec.working_dir);
        cr_assert_null(spec.created_by);
        json_object_put(o);
        free(def);
}

Test(cluster_jobs, definition_refused) {
        const char *bad[] = {
                "",
                "[]",
                "not json",
                "{\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\"}",
                "{\"photonName\":\"../x\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\"}",
                "{\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"m\"}",
                "{\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\",\"args\":[1]}",
                "{\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\",\"workingDir\":\"rel\"}",
                "{\"photonName\":\"p\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\",\"workingDir\":1}",
        };
        struct json_object *o = NULL;
        JobSpec spec;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_assert_eq(cluster_jobs_definition_parse(bad[i], &spec, &o), -EBADMSG, "%s", bad[i]);
}

Test(cluster_jobs, state) {
        bool e, p;

        cr_assert_eq(cluster_jobs_state_parse("10", 2, &e, &p), 0);
        cr_assert(e && !p);
        cr_assert_eq(cluster_jobs_state_parse("01", 2, &e, &p), 0);
        cr_assert(!e && p);
        cr_assert_eq(cluster_jobs_state_parse("1", 1, &e, &p), -EBADMSG);
        cr_assert_eq(cluster_jobs_state_parse("12", 2, &e, &p), -EBADMSG);
        cr_assert_eq(cluster_jobs_state_parse("100", 3, &e, &p), -EBADMSG);
}

Test(cluster_jobs, scripts) {
        const RedisScript *const *s = NULL;
        size_t n = 0;

        cr_assert_eq(cluster_jobs_scripts(&s), 0);
        for (; s[n]; n++) {
                cr_assert_eq(strlen(s[n]->sha), 40);
                cr_assert_not_null(strstr(s[n]->source, "return"));
        }
        cr_assert_eq(n, 5);
}
