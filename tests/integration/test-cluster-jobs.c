/* SPDX-License-Identifier: MIT */

/* Cluster mode, jobs: real photond nodes sharing one real redis-server. A schedule made on one node is listed,
 * switched and unscheduled on another; each occurrence runs exactly once in the cluster, on a node that has a
 * handler for it, also after a node was killed; with Redis gone a change is refused with "Cluster unavailable". */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "fd-util.h"
#include "harness.h"
#include "path-util.h"
#include "redis-helper.h"
#include "string-util.h"

#define MIN_MS ((int64_t) 60 * 1000)

/* Sends {"id":<auto>,<body>} and returns the reply. */
static struct json_object* call(Conn *c, const char *fmt, ...) {
        char id[32], *body;
        struct json_object *o;
        va_list ap;

        va_start(ap, fmt);
        cr_assert(vasprintf(&body, fmt, ap) >= 0);
        va_end(ap);
        snprintf(id, sizeof(id), "r%u", ++c->next_id);
        o = conn_request(c, id, "{\"id\":\"%s\",%s}", id, body);
        free(body);
        cr_assert_not_null(o, "no reply to %s", id);
        return o;
}

static struct json_object* node_call(Daemon *d, const char *fmt, const char *arg) {
        Conn *c = conn_open(d);
        struct json_object *o = call(c, fmt, arg);

        conn_close(c);
        return o;
}

static struct json_object* status(Daemon *d) {
        return node_call(d, "\"type\":\"status\"%s", "");
}

static void schedule_ok(Daemon *d, const char *photon, const char *job_id, const char *method, const char *cron) {
        Conn *c = conn_open(d);
        struct json_object *o = call(c, "\"type\":\"schedule\",\"photonName\":\"%s\",\"jobId\":\"%s\",\"method\":\"%s\","
                                     "\"cron\":\"%s\"", photon, job_id, method, cron);

        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_close(c);
}

/* The list_jobs object of one job on d (a new reference), or NULL. */
static struct json_object* get_job(Daemon *d, const char *id) {
        struct json_object *o = node_call(d, "\"type\":\"list_jobs\"%s", ""), *jobs = jget(o, "data.jobs"),
                           *found = NULL;

        cr_assert(json_object_is_type(jobs, json_type_array), "%s", json_object_to_json_string(o));
        for (size_t i = 0; i < json_object_array_length(jobs); i++) {
                struct json_object *j = json_object_array_get_idx(jobs, i);
                if (streq_ptr(jstr(j, "id"), id))
                        found = json_object_get(j);
        }
        json_object_put(o);
        return found;
}

static size_t n_jobs(Daemon *d) {
        struct json_object *o = node_call(d, "\"type\":\"list_jobs\"%s", "");
        size_t n = json_object_array_length(jget(o, "data.jobs"));

        json_object_put(o);
        return n;
}

/* Waits (10 s at most) until d lists the job id with field equal to value ("" for the field left out), or,
 * with field NULL, until it does not list it at all. */
static void wait_job(Daemon *d, const char *id, const char *field, const char *value) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *j = get_job(d, id);
                bool ok;

                if (!field)
                        ok = !j;
                else if (!j)
                        ok = false;
                else {
                        struct json_object *v = jget(j, field);
                        const char *s = v ? json_object_get_string(v) : "";

                        ok = streq(s, value);
                }
                json_object_put(j);
                if (ok)
                        return;
                cr_assert_lt(mono_ms(), deadline, "job %s never had %s=%s", id, field ?: "(gone)", value ?: "");
                (void) poll(NULL, 0, 20);
        }
}

static Daemon* node_start(const char *url, const char *node_id, const char *home, int64_t clock_offset) {
        char off_env[64];

        snprintf(off_env, sizeof(off_env), "PHOTOND_TEST_CLOCK_OFFSET_MS=%" PRIi64, clock_offset);
        return cluster_node_start(url, node_id, home, "TZ=UTC", clock_offset ? off_env : NULL, NULL);
}

/* Waits (30 s at most: a minute boundary may come first) until status has value at path. */
static void wait_status(Daemon *d, const char *path, int64_t value) {
        uint64_t deadline = mono_ms() + 30000;

        for (;;) {
                struct json_object *o = status(d), *f = jget(o, path);
                int64_t v = f ? json_object_get_int64(f) : -1;      /* a boolean: 0 or 1 */

                json_object_put(o);
                if (v == value)
                        return;
                cr_assert_lt(mono_ms(), deadline, "%s stayed %" PRIi64 ", not %" PRIi64, path, v, value);
                (void) poll(NULL, 0, 20);
        }
}

static void wait_connected(Daemon *d) {
        wait_status(d, "data.cluster.connected", 1);
}

static void stop_clean(Daemon *d) {
        int st = daemon_signal_and_wait(d, SIGTERM);

        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                daemon_dump_log(d);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "photond exited with status %d", st);
        daemon_free(d);
}

Test(cluster_jobs, schedule_on_one_node_acts_everywhere) {
        TestRedis redis;
        char *dir;
        Daemon *a, *b;
        Conn *cb;
        struct json_object *o, *j;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start(redis.url, "node-a", NULL, 0);
        b = node_start(redis.url, "node-b", NULL, 0);
        wait_connected(a);
        wait_connected(b);

        /* Scheduled on a: b lists it, with what a was given. */
        schedule_ok(a, "kanban", "nightly", "sweep", "0 3 * * *");
        wait_job(b, "kanban:ipc:nightly", "cron", "0 3 * * *");
        j = get_job(b, "kanban:ipc:nightly");
        cr_assert_str_eq(jstr(j, "method"), "sweep");
        cr_assert_str_eq(jstr(j, "photonName"), "kanban");
        cr_assert(jbool(j, "enabled") && !jbool(j, "paused"));
        cr_assert(jint(j, "nextRun") > 0);
        json_object_put(j);

        /* Rescheduled on b: a has the new cron. */
        schedule_ok(b, "kanban", "nightly", "sweep", "30 4 * * *");
        wait_job(a, "kanban:ipc:nightly", "cron", "30 4 * * *");

        /* Paused on b, by photon and method: a's copy is paused too, and resumed. */
        cb = conn_open(b);
        o = call(cb, "\"type\":\"pause_schedule\",\"photonName\":\"kanban\",\"method\":\"sweep\"");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.updated"), 1);
        cr_assert_str_eq(jstr(o, "data.jobIds.0"), "kanban:ipc:nightly");
        json_object_put(o);
        wait_job(a, "kanban:ipc:nightly", "paused", "true");
        j = get_job(a, "kanban:ipc:nightly");
        cr_assert_not(jhas(j, "nextRun"), "a paused job is not armed");
        json_object_put(j);
        o = call(cb, "\"type\":\"resume_schedule\",\"photonName\":\"kanban\",\"method\":\"sweep\"");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        wait_job(a, "kanban:ipc:nightly", "paused", "false");
        o = call(cb, "\"type\":\"pause_schedule\",\"photonName\":\"kanban\",\"method\":\"nothing\"");
        cr_assert_not(jbool(o, "success"), "no job matched: %s", json_object_to_json_string(o));
        json_object_put(o);

        /* Unscheduled on b by its bare jobId: gone from a too; a second time it is unknown. */
        o = call(cb, "\"type\":\"unschedule\",\"jobId\":\"nightly\"");
        cr_assert(jbool(o, "success"));
        cr_assert(jbool(o, "data.unscheduled"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.jobId"), "nightly");
        json_object_put(o);
        cr_assert_null(get_job(b, "kanban:ipc:nightly"), "gone on b when the answer came");
        wait_job(a, "kanban:ipc:nightly", NULL, NULL);
        o = call(cb, "\"type\":\"unschedule\",\"jobId\":\"nightly\"");
        cr_assert_not(jbool(o, "data.unscheduled"));
        json_object_put(o);
        conn_close(cb);

        /* A node that starts later gets the cluster's jobs, and drops a job file of its own that Redis does not
         * have. */
        schedule_ok(a, "kanban", "weekly", "report", "0 8 * * 1");
        {
                Daemon *late;
                char *home = tmpdir_new(), *jobs = xasprintf("%s/.photon/.data/old/schedules", home),
                     *file = xasprintf("%s/stale.json", jobs);
                const char *text = "{\"id\":\"old:ipc:stale\",\"method\":\"m\",\"cron\":\"0 1 * * *\","
                                   "\"photonName\":\"old\",\"source\":\"ipc\",\"status\":\"active\"}";

                cr_assert_eq(mkdir_parents_and_self(jobs, 0755), 0);
                cr_assert_eq(write_file_atomic(file, text, strlen(text), 0644, false), 0);
                late = node_start(redis.url, "node-late", home, 0);
                wait_job(late, "kanban:ipc:weekly", "cron", "0 8 * * 1");
                wait_job(late, "old:ipc:stale", NULL, NULL);
                cr_assert_eq(n_jobs(late), 1);
                cr_assert_neq(access(file, F_OK), 0, "its file went with it");
                stop_clean(late);
                tmpdir_remove(home);
                free(jobs);
                free(file);
        }

        stop_clean(a);
        stop_clean(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

static void write_handler(const char *home, const char *node, const char *log);

/* Redis goes away: every change (and the run history) is refused with "Cluster unavailable", the node's copy is
 * still listed, and an occurrence due meanwhile runs nowhere, not even on the node that has its handler. */
Test(cluster_jobs, redis_gone_refuses_changes_and_runs_nothing) {
        TestRedis redis;
        char *dir, *home, *log;
        Daemon *a;
        Conn *c;
        struct json_object *o;
        const char *err;
        int64_t r0, boundary, offset;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        home = tmpdir_new();
        log = xasprintf("%s/runs", dir);
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        /* A minute boundary of the scheduler's clock 12 s from now. */
        r0 = real_ms();
        boundary = (r0 / MIN_MS + 3) * MIN_MS;
        offset = boundary - (r0 + 12000);
        write_handler(home, "node-a", log);
        a = node_start(redis.url, "node-a", home, offset);
        wait_connected(a);
        schedule_ok(a, "p", "j", "m", "0 3 * * *");
        schedule_ok(a, "tick", "j1", "beat", "* * * * *");

        test_redis_stop(&redis);
        wait_status(a, "data.cluster.connected", 0);
        c = conn_open(a);
        o = call(c, "\"type\":\"schedule\",\"photonName\":\"p\",\"jobId\":\"k\",\"method\":\"m\",\"cron\":\"0 4 * * *\"");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        err = jstr(o, "error");
        cr_assert(strncmp(err, "Cluster unavailable: ", 21) == 0, "%s", err);
        cr_assert_not_null(jstr(o, "suggestion"));
        json_object_put(o);
        o = call(c, "\"type\":\"unschedule\",\"jobId\":\"j\"");
        cr_assert(strncmp(jstr(o, "error") ?: "", "Cluster unavailable: ", 21) == 0, "%s",
                  json_object_to_json_string(o));
        json_object_put(o);
        o = call(c, "\"type\":\"pause_schedule\",\"photonName\":\"p\",\"method\":\"m\"");
        cr_assert(strncmp(jstr(o, "error") ?: "", "Cluster unavailable: ", 21) == 0, "%s",
                  json_object_to_json_string(o));
        json_object_put(o);
        /* The run history is the cluster's: not this node's part of it instead. */
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"p\",\"method\":\"m\"");
        cr_assert(strncmp(jstr(o, "error") ?: "", "Cluster unavailable: ", 21) == 0, "%s",
                  json_object_to_json_string(o));
        json_object_put(o);
        /* Nothing changed here: the copy of the cluster's jobs this node has is still listed as it was. */
        cr_assert_eq(n_jobs(a), 2);
        o = get_job(a, "p:ipc:j");
        cr_assert_not_null(o);
        cr_assert_not(jbool(o, "paused"));
        json_object_put(o);
        conn_close(c);

        /* The occurrence at the boundary: no claim, so no run (the node has the handler). */
        cr_assert_lt(real_ms(), boundary - offset, "Redis was gone before the boundary");
        wait_status(a, "data.cluster.jobs.claimFailed", 1);
        /* In whole ms: the timer fired at the boundary or after it, and the answer may come within that ms. */
        cr_assert_geq(real_ms(), boundary - offset);
        (void) poll(NULL, 0, 1000);
        cr_assert_neq(access(log, F_OK), 0, "the job ran during the outage");
        o = status(a);
        cr_assert_eq(jint(o, "data.cluster.jobs.claimed"), 0);
        json_object_put(o);

        /* Redis comes back without persistence, empty: the node loads the cluster's jobs again at the reconnect,
         * and so drops its copies (docs/cluster.md: run Redis with appendonly yes). Changes work again. */
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        wait_connected(a);
        wait_job(a, "p:ipc:j", NULL, NULL);
        cr_assert_eq(n_jobs(a), 0);
        schedule_ok(a, "p", "j", "m", "0 3 * * *");
        cr_assert_eq(n_jobs(a), 1);

        stop_clean(a);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
        tmpdir_remove(home);
        free(log);
}

/* ---- firing ---- */

/* These tests wait for minute boundaries and have no criterion .timeout: criterion 2.4's runner leaks a timeout
 * record when timed tests run in parallel (-j2), which LeakSanitizer reports; meson's 300 s bound them. */

/* A handler that appends "<node> <job key> <start time in ns>" to log. */
static void write_handler(const char *home, const char *node, const char *log) {
        char *dir = xasprintf("%s/handlers/tick", home), *path = xasprintf("%s/beat", dir);
        char *script = xasprintf("#!/bin/sh\nt=$(date +%%s%%N)\ncat >/dev/null\necho \"%s $PHOTON_JOB_ID $t\" >> '%s'\n",
                               node, log);

        cr_assert_eq(mkdir_parents_and_self(dir, 0755), 0);
        cr_assert_eq(write_file_atomic(path, script, strlen(script), 0755, false), 0);
        cr_assert_eq(chmod(path, 0755), 0);
        free(dir);
        free(path);
        free(script);
}

/* The nodes whose logs a failed wait prints (each test runs in a process of its own). */
static Daemon *dump_on_failure[4];

/* Waits until log has n lines (deadline: real time until_ms), then a little longer for any extra one. */

static char* wait_lines(const char *log, unsigned n, int64_t until_ms) {
        for (;;) {
                char *t = NULL;
                unsigned lines = 0;

                if (read_full_file(log, 1 << 20, &t, NULL) >= 0)
                        for (char *p = t; *p; p++)
                                lines += *p == '\n';
                if (lines >= n) {
                        free(t);
                        break;
                }
                free(t);
                if (real_ms() >= until_ms)
                        for (size_t i = 0; i < ELEMENTSOF(dump_on_failure); i++)
                                if (dump_on_failure[i])
                                        daemon_dump_log(dump_on_failure[i]);
                cr_assert_lt(real_ms(), until_ms, "%u runs of %u came", lines, n);
                (void) poll(NULL, 0, 50);
        }
        /* A second run of an occurrence would come within the same second: wait for it to show. */
        (void) poll(NULL, 0, 1500);
        char *t = NULL;
        cr_assert_eq(read_full_file(log, 1 << 20, &t, NULL), 0);
        return t;
}

/* Each of the n jobs ran exactly once in text (lines "<node> tick:ipc:j<k> <ns>"), and never on the node not.
 * Prints how late the handlers started after due_real_ms (the claim's round trip to Redis is in it). */
static void check_once(const char *text, unsigned n, const char *not, int64_t due_real_ms) {
        int64_t worst = 0;
        unsigned lines = 0;

        for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
                const char *sp = strrchr(strndupa(p, strcspn(p, "\n")), ' ');

                if (sp)
                        worst = MAX(worst, strtoll(sp + 1, NULL, 10) / 1000000 - due_real_ms);
                if (!strchr(p, '\n'))
                        break;
        }
        fprintf(stderr, "cluster jobs: the last of %u handlers started %" PRIi64 " ms after the boundary\n", n, worst);

        for (const char *p = text; *p; p++)
                lines += *p == '\n';
        cr_assert_eq(lines, n, "%u runs for %u occurrences:\n%s", lines, n, text);
        for (unsigned k = 1; k <= n; k++) {
                char needle[64];
                unsigned found = 0;

                snprintf(needle, sizeof(needle), " tick:ipc:j%u ", k);
                for (const char *p = text; (p = strstr(p, needle)); p++)
                        found++;
                cr_assert_eq(found, 1, "j%u ran %u times:\n%s", k, found, text);
        }
        if (not)
                cr_assert_null(strstr(text, not), "%s ran a job:\n%s", not, text);
}

#define N_JOBS 12u

/* Waits (10 s at most) until d's get_execution_history of tick.beat has n entries, all successes. */
static void wait_history(Daemon *d, unsigned n) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o = node_call(d, "\"type\":\"get_execution_history\",\"photonName\":\"tick\","
                                                  "\"method\":\"%s\"", "beat"), *e = jget(o, "data.entries");
                size_t got = e ? json_object_array_length(e) : 0;

                if (got == n) {
                        for (size_t i = 0; i < got; i++)
                                cr_assert_str_eq(jstr(json_object_array_get_idx(e, i), "status"), "success");
                        cr_assert_null(jget(json_object_array_get_idx(e, 0), "errorMessage"));
                        json_object_put(o);
                        return;
                }
                cr_assert_lt(got, n, "%zu history entries, not %u: %s", got, n, json_object_to_json_string(o));
                json_object_put(o);
                cr_assert_lt(mono_ms(), deadline, "the history never had %u entries", n);
                (void) poll(NULL, 0, 50);
        }
}

/* Four nodes: a, b and c have the handler, d does not. At the first minute boundary each of the jobs runs exactly
 * once, on a, b or c; d claims nothing. a is then killed with SIGKILL, and at the next boundary b and c run each
 * job exactly once again. */
Test(cluster_jobs, each_occurrence_fires_once_and_survives_a_killed_node) {
        const char *names[] = { "node-a", "node-b", "node-c", "node-d" };
        char *homes[4], *dir, *log1, *log2, *first, *text;
        Daemon *n[4];
        TestRedis redis;
        int64_t r0, boundary, offset, claimed = 0, elsewhere = 0;
        struct json_object *o;
        Conn *sub;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        log1 = xasprintf("%s/runs", dir);
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);

        /* The scheduler clock of every node: a minute boundary 20 s from now, the next one 60 s later. */
        r0 = real_ms();
        boundary = (r0 / MIN_MS + 3) * MIN_MS;
        offset = boundary - (r0 + 20000);
        for (int i = 0; i < 4; i++) {
                homes[i] = tmpdir_new();
                if (i < 3)
                        write_handler(homes[i], names[i], log1);
                n[i] = dump_on_failure[i] = node_start(redis.url, names[i], homes[i], offset);
        }
        for (int i = 0; i < 4; i++)
                wait_connected(n[i]);
        for (unsigned k = 1; k <= N_JOBS; k++) {
                char id[16];

                snprintf(id, sizeof(id), "j%u", k);
                schedule_ok(n[k % 4], "tick", id, "beat", "* * * * *");
        }
        for (int i = 0; i < 4; i++)
                wait_status(n[i], "data.cluster.jobs.mirrored", N_JOBS);
        /* d's subscriber of the jobs' events, which the nodes that run them publish. */
        sub = conn_open(n[3]);
        o = call(sub, "\"type\":\"subscribe\",\"channel\":\"jobs:tick\"");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        cr_assert_lt(real_ms(), boundary - offset - 1000, "set up in time for the boundary");

        text = wait_lines(log1, N_JOBS, boundary - offset + 15000);
        check_once(text, N_JOBS, "node-d", boundary - offset);
        free(text);
        for (unsigned k = 0; k < N_JOBS; k++) {
                o = conn_expect(sub, 5000);
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "%s", json_object_to_json_string(o));
                cr_assert_str_eq(jstr(o, "message.event"), "job-completed");
                cr_assert_eq(jint(o, "message.runCount"), 1, "the first run of %s", jstr(o, "message.jobId"));
                json_object_put(o);
        }
        o = conn_recv(sub, 500);
        cr_assert_null(o, "one event per run: %s", o ? json_object_to_json_string(o) : "");
        conn_close(sub);
        for (int i = 0; i < 4; i++) {
                o = status(n[i]);
                claimed += jint(o, "data.cluster.jobs.claimed");
                elsewhere += jint(o, "data.cluster.jobs.claimedElsewhere");
                if (i == 3) {
                        cr_assert_eq(jint(o, "data.cluster.jobs.claimed"), 0, "d claims nothing");
                        cr_assert_eq(jint(o, "data.cluster.jobs.notCapable"), N_JOBS);
                }
                json_object_put(o);
        }
        cr_assert_eq(claimed, N_JOBS);
        cr_assert_eq(elsewhere, 2 * N_JOBS, "the other two capable nodes each lost every claim a node won");

        /* The run history of any node shows every node's runs: d ran none of them. */
        wait_history(n[3], N_JOBS);

        /* a dies at once: no stop, no goodbye. The others take every occurrence of the next minute. */
        /* The runs of the next boundary must go to the new log, not to the one renamed below. */
        cr_assert_lt(real_ms(), boundary + MIN_MS - offset - 2000, "a killed well before the next boundary");
        cr_assert(WIFSIGNALED(daemon_signal_and_wait(n[0], SIGKILL)));
        daemon_free(n[0]);
        dump_on_failure[0] = NULL;
        log2 = xasprintf("%s/runs", dir);
        first = xasprintf("%s/runs-first", dir);
        cr_assert_eq(rename(log1, first), 0);
        free(first);
        text = wait_lines(log2, N_JOBS, boundary + MIN_MS - offset + 15000);
        check_once(text, N_JOBS, "node-a", boundary + MIN_MS - offset);
        cr_assert_null(strstr(text, "node-d"));
        free(text);
        wait_history(n[3], 2 * N_JOBS);

        for (int i = 1; i < 4; i++)
                stop_clean(n[i]);
        for (int i = 0; i < 4; i++)
                tmpdir_remove(homes[i]);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
        free(log1);
        free(log2);
}
