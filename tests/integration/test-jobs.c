/* SPDX-License-Identifier: MIT */

/* Scheduled jobs against a real photond: request shapes and refusals, firing at the right second (through the
 * PHOTOND_TEST_CLOCK_OFFSET_MS hook), persistence across restarts, catch-up, reference-format files, corrupt
 * files, the run history, enable/disable/pause/resume, run_job, exec handlers and providers, photonctl. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fd-util.h"
#include "harness.h"
#include "photond-schedule.h"

#define MIN_MS ((int64_t) 60 * 1000)
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)

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

static void subscribe(Conn *c, const char *channel) {
        struct json_object *o = call(c, "\"type\":\"subscribe\",\"channel\":\"%s\"", channel);

        cr_assert(jbool(o, "data.subscribed"));
        json_object_put(o);
}

/* The next channel_message carrying message.event == event (others are skipped), or NULL after timeout_ms. */
static struct json_object* wait_event(Conn *c, const char *event, int timeout_ms) {
        uint64_t deadline = mono_ms() + (uint64_t) timeout_ms;

        for (;;) {
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                struct json_object *o;

                if (left <= 0)
                        return NULL;
                o = conn_recv(c, (int) left);
                if (!o)
                        return NULL;
                if (streq_ptr(jstr(o, "type"), "channel_message") && streq_ptr(jstr(o, "message.event"), event))
                        return o;
                json_object_put(o);
        }
}

static struct json_object* schedule(Conn *c, const char *photon, const char *job_id, const char *method,
                                    const char *cron, const char *extra) {
        return call(c, "\"type\":\"schedule\",\"photonName\":\"%s\",\"jobId\":\"%s\",\"method\":\"%s\","
                    "\"cron\":\"%s\"%s%s", photon, job_id, method, cron, extra ? "," : "", extra ?: "");
}

static void schedule_ok(Conn *c, const char *photon, const char *job_id, const char *method, const char *cron,
                        const char *extra) {
        struct json_object *o = schedule(c, photon, job_id, method, cron, extra);

        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
}

/* The list_jobs object of one job (a new reference), or NULL. */
static struct json_object* get_job(Conn *c, const char *id) {
        struct json_object *o = call(c, "\"type\":\"list_jobs\""), *jobs = jget(o, "data.jobs"), *found = NULL;

        cr_assert(json_object_is_type(jobs, json_type_array));
        for (size_t i = 0; i < json_object_array_length(jobs); i++) {
                struct json_object *j = json_object_array_get_idx(jobs, i);
                if (streq_ptr(jstr(j, "id"), id))
                        found = json_object_get(j);
        }
        json_object_put(o);
        return found;
}

static char* job_path(const char *home, const char *photon, const char *job_id) {
        return xasprintf("%s/.photon/.data/%s/schedules/%s.json", home, photon, job_id);
}

static void write_text(const char *path, const char *text) {
        char *dir = strdup(path);

        *strrchr(dir, '/') = '\0';
        cr_assert_eq(mkdir_parents_and_self(dir, 0755), 0);
        free(dir);
        cr_assert_eq(write_file_atomic(path, text, strlen(text), 0644, false), 0);
}

static char* read_text(const char *path) {
        char *t = NULL;

        cr_assert_eq(read_full_file(path, 16 << 20, &t, NULL), 0, "read %s", path);
        return t;
}

static struct json_object* read_json(const char *path) {
        char *t = read_text(path);
        struct json_object *o = json_tokener_parse(t);

        cr_assert_not_null(o, "%s is JSON", path);
        free(t);
        return o;
}

static void write_handler(const char *home, const char *photon, const char *method, const char *script) {
        char *path = xasprintf("%s/handlers/%s/%s", home, photon, method);

        write_text(path, script);
        cr_assert_eq(chmod(path, 0755), 0);
        free(path);
}

static char* iso(int64_t ms) {
        char *b = malloc(64);

        schedule_format_iso(ms, b, 64);
        return b;
}

static char* make_home(void) {
        char tmpl[] = "/tmp/photond-jobs-XXXXXX";

        cr_assert(mkdtemp(tmpl));
        return strdup(tmpl);
}

static void rm_home(char *home) {
        char *cmd = xasprintf("rm -rf '%s'", home);

        (void) !system(cmd);
        free(cmd);
        free(home);
}

/* Stops photond the way systemd does and requires a clean exit: no crash, no sanitizer report, no leak. */
static void stop(Daemon *d) {
        if (d->pid > 0) {
                int status = daemon_signal_and_wait(d, SIGTERM);

                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        daemon_dump_log(d);
                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "photond exit status %d", status);
        }
        cr_assert(!daemon_log_contains(d, "Sanitizer") && !daemon_log_contains(d, "runtime error"),
                  "sanitizer report in photond's log");
        daemon_free(d);
}

/* ---- shapes and refusals ---- */

Test(jobs, schedule_list_unschedule_shapes) {
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d);
        struct json_object *o, *j;
        int64_t before = real_ms();

        o = schedule(c, "kanban", "nightly", "sweep", "0 3 * * *", "\"args\":{\"deep\":true},\"sessionId\":\"s-1\"");
        cr_assert(jbool(o, "success"));
        cr_assert(jbool(o, "data.scheduled"));
        cr_assert_str_eq(jstr(o, "data.jobId"), "kanban:ipc:nightly");
        int64_t next = jint(o, "data.nextRun");
        int64_t expect;
        cr_assert_eq(schedule_cron_next("0 3 * * *", real_ms(), &expect), 0);
        cr_assert_eq(next, expect);
        cr_assert_eq(next % (24 * HOUR_MS), 3 * HOUR_MS, "03:00 UTC");
        json_object_put(o);

        j = get_job(c, "kanban:ipc:nightly");
        cr_assert_not_null(j);
        cr_assert_str_eq(jstr(j, "method"), "sweep");
        cr_assert(jbool(j, "args.deep"));
        cr_assert_str_eq(jstr(j, "cron"), "0 3 * * *");
        cr_assert_eq(jint(j, "runCount"), 0);
        cr_assert(jint(j, "createdAt") >= before && jint(j, "createdAt") <= real_ms());
        cr_assert_str_eq(jstr(j, "createdBy"), "s-1");
        cr_assert_str_eq(jstr(j, "photonName"), "kanban");
        cr_assert_eq(jint(j, "nextRun"), next);
        cr_assert(!jhas(j, "workingDir"));
        cr_assert(!jhas(j, "lastRun") && !jhas(j, "lastStatus"), "no run yet");
        cr_assert(jbool(j, "enabled") && !jbool(j, "paused"));
        cr_assert_eq(jint(j, "skippedRuns"), 0);
        json_object_put(j);

        /* Without args, the key is left out of list_jobs (the reference's undefined). */
        schedule_ok(c, "kanban", "hourly", "tick", "@hourly", NULL);
        j = get_job(c, "kanban:ipc:hourly");
        cr_assert(!jhas(j, "args"));
        cr_assert(!jhas(j, "createdBy"));
        json_object_put(j);

        /* More than 2^31 ms ahead: the reference's Node timer overflows and fires such a job at once. */
        Conn *sub = conn_open(d);
        time_t now_s = time(NULL);
        struct tm tm;
        gmtime_r(&now_s, &tm);
        char *far = xasprintf("0 0 1 %d *", (tm.tm_mon + 4) % 12 + 1);
        subscribe(sub, "jobs:far");
        schedule_ok(c, "far", "future", "run", far, NULL);
        j = get_job(c, "far:ipc:future");
        cr_assert(jint(j, "nextRun") - real_ms() > ((int64_t) 1 << 31), "%s is months away", far);
        json_object_put(j);
        cr_assert_null(wait_event(sub, "job-failed", 500), "a far-future job waits for its time");
        o = call(c, "\"type\":\"unschedule\",\"jobId\":\"far:ipc:future\"");
        cr_assert(jbool(o, "data.unscheduled"));
        json_object_put(o);
        conn_close(sub);
        free(far);

        o = call(c, "\"type\":\"status\"");
        cr_assert_eq(jint(o, "data.jobs"), 2);
        cr_assert_eq(jint(o, "data.runningJobs"), 0);
        json_object_put(o);

        /* unschedule: exact key, then the ":ipc:<jobId>" suffix; the reply echoes the jobId as sent. */
        o = call(c, "\"type\":\"unschedule\",\"jobId\":\"nightly\"");
        cr_assert(jbool(o, "success"));
        cr_assert(jbool(o, "data.unscheduled"));
        cr_assert_str_eq(jstr(o, "data.jobId"), "nightly");
        json_object_put(o);
        o = call(c, "\"type\":\"unschedule\",\"jobId\":\"kanban:ipc:hourly\"");
        cr_assert(jbool(o, "data.unscheduled"));
        json_object_put(o);
        o = call(c, "\"type\":\"unschedule\",\"jobId\":\"nightly\"");
        cr_assert(jbool(o, "success"), "always success:true");
        cr_assert(!jbool(o, "data.unscheduled"));
        json_object_put(o);

        o = call(c, "\"type\":\"list_jobs\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.jobs")), 0);
        json_object_put(o);

        char *path = job_path(d->home, "kanban", "nightly");
        cr_assert_neq(access(path, F_OK), 0, "unschedule deletes the file");
        free(path);

        conn_close(c);
        stop(d);
}

Test(jobs, refusals_and_errors) {
        const char *env[] = { "TZ=UTC", "PHOTOND_MAX_JOBS=2", "PHOTOND_MAX_JOB_ARGS_BYTES=64", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d);
        struct json_object *o;
        char *wd, *marker, *file;

        o = call(c, "\"type\":\"schedule\",\"jobId\":\"j\",\"method\":\"m\",\"cron\":\"* * * * *\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "error"), "photonName required for scheduling");
        cr_assert_str_eq(jstr(o, "suggestion"), "Include photonName in the request payload");
        cr_assert_str_eq(jstr(o, "id"), "r1", "photond echoes the id");
        json_object_put(o);

        /* The reference lets "5abc" through as 5; photond names the problem. */
        o = schedule(c, "p", "j", "m", "5abc * * * *", NULL);
        cr_assert_str_eq(jstr(o, "type"), "result");
        cr_assert(!jbool(o, "success"));
        cr_assert(!jbool(o, "data.scheduled"));
        cr_assert(strncmp(jstr(o, "data.reason"), "Invalid cron expression: ", 25) == 0, "%s", jstr(o, "data.reason"));
        cr_assert_not_null(strstr(jstr(o, "data.reason"), "5abc"), "%s", jstr(o, "data.reason"));
        json_object_put(o);
        o = schedule(c, "p", "j", "m", "0 0 31 2 *", NULL);
        cr_assert(!jbool(o, "success"));
        cr_assert(strncmp(jstr(o, "data.reason"), "Invalid cron expression", 23) == 0);
        json_object_put(o);

        /* Worded as in every other request type (tests/test-protocol.c, name_errors_are_worded_once). */
        const char *bad_names[][4] = {
                { "../etc", "j", "m", "Cannot initialize photon '../etc': not a valid photon name (" },
                { ".hidden", "j", "m", "Cannot initialize photon '.hidden': not a valid photon name (" },
                { "p", "a/b", "m", "Invalid request format: jobId 'a/b' is not a valid name (" },
                { "p", "j", "", "Tool not found:  (not a valid method name: " },
                { "p", "j", "m m", "Tool not found: m m (not a valid method name: " },
                { "p", "0123456789012345678901234567890123456789012345678901234567890123456789", "m",
                  "Invalid request format: jobId '0123456789012345678901234567890123456789012345678901234567890123…' "
                  "is not a valid name (" },
        };
        for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
                o = schedule(c, bad_names[i][0], bad_names[i][1], bad_names[i][2], "* * * * *", NULL);
                cr_assert_str_eq(jstr(o, "type"), "error", "%s/%s/%s", bad_names[i][0], bad_names[i][1],
                                 bad_names[i][2]);
                cr_assert(strncmp(jstr(o, "error"), bad_names[i][3], strlen(bad_names[i][3])) == 0, "%s",
                          jstr(o, "error"));
                cr_assert_not_null(strstr(jstr(o, "error"), "1-64 characters of A-Z a-z 0-9 . _ -, not starting "
                                          "with a dot)"));
                json_object_put(o);
        }

        o = schedule(c, "p", "j", "m", "* * * * *", "\"workingDir\":\"relative/dir\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_not_null(strstr(jstr(o, "error"), "absolute"));
        json_object_put(o);
        o = schedule(c, "p", "j", "m", "* * * * *", "\"workingDir\":\"/nonexistent/photond-test\"");
        cr_assert_not_null(strstr(jstr(o, "error"), "not an existing directory"));
        json_object_put(o);
        o = schedule(c, "p", "j", "m", "* * * * *", "\"workingDir\":42");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);

        o = schedule(c, "p", "j", "m", "* * * * *", "\"args\":[1,2]");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_not_null(strstr(jstr(o, "error"), "object"));
        json_object_put(o);
        o = schedule(c, "p", "j", "m", "* * * * *",
                     "\"args\":{\"text\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_not_null(strstr(jstr(o, "error"), "MAX_JOB_ARGS_BYTES"));
        json_object_put(o);

        /* .photon-no-host in the base refuses the job, with the reference's reason. */
        wd = xasprintf("%s/nohost", d->home);
        cr_assert_eq(mkdir(wd, 0755), 0);
        marker = xasprintf("%s/.photon-no-host", wd);
        write_text(marker, "");
        char *extra = xasprintf("\"workingDir\":\"%s\"", wd);
        o = schedule(c, "p", "j", "m", "* * * * *", extra);
        free(extra);
        cr_assert(!jbool(o, "success"));
        cr_assert(!jbool(o, "data.scheduled"));
        char *reason = xasprintf("host-disabled: %s has a .photon-no-host marker", wd);
        cr_assert_str_eq(jstr(o, "data.reason"), reason);
        free(reason);
        json_object_put(o);

        /* MAX_JOBS: a third job is refused; replacing an existing one is not a new job. */
        schedule_ok(c, "p", "a", "m", "* * * * *", NULL);
        schedule_ok(c, "p", "b", "m", "* * * * *", NULL);
        o = schedule(c, "p", "c", "m", "* * * * *", NULL);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_not_null(strstr(jstr(o, "error"), "MAX_JOBS"));
        json_object_put(o);
        schedule_ok(c, "p", "b", "m", "*/5 * * * *", NULL);
        file = job_path(d->home, "p", "c");
        cr_assert_neq(access(file, F_OK), 0, "nothing is written for a refused job");
        free(file);

        /* enable/disable/pause/resume need photonName and method; no match is a refusal. */
        o = call(c, "\"type\":\"pause_schedule\",\"photonName\":\"p\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);
        o = call(c, "\"type\":\"pause_schedule\",\"photonName\":\"p\",\"method\":\"other\"");
        cr_assert(!jbool(o, "success"));
        cr_assert_not_null(jstr(o, "data.reason"));
        json_object_put(o);

        o = call(c, "\"type\":\"run_job\",\"jobId\":\"missing\"");
        cr_assert(!jbool(o, "success"));
        cr_assert_not_null(strstr(jstr(o, "data.reason"), "missing"));
        json_object_put(o);

        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"../x\",\"method\":\"m\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"p\",\"method\":\"m\",\"limit\":\"ten\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);

        free(marker);
        free(wd);
        conn_close(c);
        stop(d);
}

Test(jobs, system_instance_refuses_working_dir) {
        char *state = make_home();
        char *sock = xasprintf("%s/daemon.sock", state);
        char *env_state = xasprintf("STATE_DIRECTORY=%s", state);
        const char *env[] = { "TZ=UTC", env_state, NULL };
        const char *args[] = { "--system", "--socket", sock, NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env, .args = args });
        Conn *c = conn_open_path(sock);
        struct json_object *o;

        o = schedule(c, "p", "j", "m", "* * * * *", "\"workingDir\":\"/tmp\"");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_not_null(strstr(jstr(o, "error"), "system instance"));
        json_object_put(o);

        /* Jobs of the system instance live in its state directory. */
        schedule_ok(c, "p", "j", "m", "* * * * *", NULL);
        char *file = xasprintf("%s/.data/p/schedules/j.json", state);
        cr_assert_eq(access(file, F_OK), 0, "%s", file);
        free(file);

        conn_close(c);
        stop(d);
        free(sock);
        free(env_state);
        rm_home(state);
}

/* The test hook is for tests of the user instance only: the system instance logs that it ignores it and keeps
 * real time (createdAt, nextRun). The same offset does shift a user instance, so the check can fail. */
Test(jobs, system_instance_ignores_the_test_clock_hook) {
        const int64_t offset = 3 * DAY_MS;
        char *state = make_home();
        char *sock = xasprintf("%s/daemon.sock", state);
        char *env_state = xasprintf("STATE_DIRECTORY=%s", state);
        char *env_off = xasprintf("PHOTOND_TEST_CLOCK_OFFSET_MS=%" PRIi64, offset);
        const char *env[] = { "TZ=UTC", env_state, env_off, NULL };
        const char *args[] = { "--system", "--socket", sock, NULL };
        int64_t before, after, expect;
        struct json_object *j;
        Daemon *d;
        Conn *c;

        before = real_ms();
        d = daemon_start(&(DaemonOptions) { .env = env, .args = args });
        c = conn_open_path(sock);
        cr_assert(daemon_log_contains(d, "Ignoring PHOTOND_TEST_CLOCK_OFFSET_MS"), "the refusal is logged");
        cr_assert(!daemon_log_contains(d, "TEST HOOK ACTIVE"));
        schedule_ok(c, "sys", "daily", "run", "0 3 * * *", NULL);
        after = real_ms();
        j = get_job(c, "sys:ipc:daily");
        cr_assert_not_null(j);
        cr_assert(jint(j, "createdAt") >= before && jint(j, "createdAt") <= after,
                  "createdAt %" PRIi64 " is real time, not shifted", jint(j, "createdAt"));
        cr_assert_eq(schedule_cron_next("0 3 * * *", jint(j, "createdAt"), &expect), 0);
        cr_assert_eq(jint(j, "nextRun"), expect);
        json_object_put(j);
        conn_close(c);
        stop(d);

        /* The user instance honours it. */
        before = real_ms();
        d = daemon_start(&(DaemonOptions) { .env = (const char*[]) { "TZ=UTC", env_off, NULL } });
        c = conn_open(d);
        cr_assert(daemon_log_contains(d, "TEST HOOK ACTIVE"));
        schedule_ok(c, "usr", "daily", "run", "0 3 * * *", NULL);
        j = get_job(c, "usr:ipc:daily");
        cr_assert(jint(j, "createdAt") >= before + offset, "the user instance's clock is shifted");
        json_object_put(j);
        conn_close(c);
        stop(d);

        free(env_off);
        free(env_state);
        free(sock);
        rm_home(state);
}

/* PHOTON_DIR (not PHOTON_HOME) is the base of job files, as in the reference: the job file, its history and the
 * bases registry go there, jobs are loaded from there at start, and photond's own state stays under
 * PHOTON_HOME. */
Test(jobs, photon_dir_moves_job_files) {
        const char *env_plain[] = { "TZ=UTC", NULL };
        char *home = make_home(), *jobs_dir = xasprintf("%s/elsewhere", home);
        char *env_dir = xasprintf("PHOTON_DIR=%s", jobs_dir);
        const char *env[] = { "TZ=UTC", env_dir, NULL };
        char *file = xasprintf("%s/.data/mv/schedules/nightly.json", jobs_dir);
        char *hist = xasprintf("%s/.data/mv/schedules/executions.jsonl", jobs_dir);
        char *bases = xasprintf("%s/.data/.bases.json", jobs_dir);
        char *default_file = job_path(home, "mv", "nightly");
        char *home_file = xasprintf("%s/.data/mv/schedules/nightly.json", home);
        char *wd = xasprintf("%s/project", home), *extra = xasprintf("\"workingDir\":\"%s\"", wd);
        struct json_object *o, *j;
        Daemon *d;
        Conn *c;

        cr_assert_eq(mkdir(jobs_dir, 0755), 0);
        cr_assert_eq(mkdir(wd, 0755), 0);
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        schedule_ok(c, "mv", "nightly", "sweep", "0 3 * * *", NULL);
        cr_assert_eq(access(file, F_OK), 0, "the job file is under PHOTON_DIR: %s", file);
        cr_assert_neq(access(default_file, F_OK), 0, "not under ~/.photon");
        cr_assert_neq(access(home_file, F_OK), 0, "not under PHOTON_HOME");

        o = call(c, "\"type\":\"run_job\",\"jobId\":\"nightly\"");
        cr_assert(!jbool(o, "success"), "no handler");
        json_object_put(o);
        cr_assert_eq(access(hist, F_OK), 0, "the run history is beside it: %s", hist);

        schedule_ok(c, "mv", "build", "make", "0 * * * *", extra);
        o = read_json(bases);
        cr_assert_str_eq(jstr(o, "bases.0.path"), wd, "the bases registry is under PHOTON_DIR");
        json_object_put(o);

        /* photond's own state is not a job file: it stays under PHOTON_HOME. */
        conn_close(c);
        stop(d);
        char *state = xasprintf("%s/.data/photond/state.json", home);
        cr_assert_eq(access(state, F_OK), 0, "%s", state);
        free(state);

        /* Loaded from PHOTON_DIR at start, with its counters... */
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        j = get_job(c, "mv:ipc:nightly");
        cr_assert_not_null(j, "loaded from PHOTON_DIR");
        cr_assert_eq(jint(j, "consecutiveFailures"), 1);
        json_object_put(j);
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"mv\",\"method\":\"sweep\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 1);
        json_object_put(o);
        conn_close(c);
        stop(d);

        /* ...and a daemon without PHOTON_DIR (the same PHOTON_HOME) does not see them. */
        d = daemon_start(&(DaemonOptions) { .env = env_plain, .home = home });
        c = conn_open(d);
        o = call(c, "\"type\":\"list_jobs\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.jobs")), 0, "%s", json_object_to_json_string(o));
        json_object_put(o);
        conn_close(c);
        stop(d);

        free(extra);
        free(wd);
        free(home_file);
        free(default_file);
        free(bases);
        free(hist);
        free(file);
        free(env_dir);
        free(jobs_dir);
        rm_home(home);
}

/* ---- firing at the right second ---- */

/* Starts photond with its scheduler clock set so that a minute boundary falls lead_ms from now; returns the
 * offset. Real time of a scheduler time t is t - offset. */
static Daemon* start_before_boundary(int64_t lead_ms, int64_t *ret_offset, const char *home, const char *extra_env) {
        int64_t r0 = real_ms(), boundary = (r0 / MIN_MS + 3) * MIN_MS, offset = boundary - (r0 + lead_ms);
        char *e = xasprintf("PHOTOND_TEST_CLOCK_OFFSET_MS=%" PRIi64, offset);
        const char *env[] = { "TZ=UTC", e, extra_env, NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env, .home = home });

        *ret_offset = offset;
        cr_assert(daemon_log_contains(d, "TEST HOOK ACTIVE"), "the test hook is announced");
        free(e);
        return d;
}

Test(jobs, fires_at_the_minute_boundary, .timeout = 150) {
        int64_t offset;
        Daemon *d = start_before_boundary(2500, &offset, NULL, NULL);
        Conn *sub = conn_open(d), *c = conn_open(d);
        struct json_object *o, *ev, *j;
        int64_t next, expected, arrived;

        subscribe(sub, "jobs:tick");
        o = schedule(c, "tick", "every", "beat", "* * * * *", NULL);
        cr_assert(jbool(o, "success"));
        next = jint(o, "data.nextRun");
        json_object_put(o);
        cr_assert_eq(next % MIN_MS, 0, "a minute boundary of the scheduler's clock");

        /* No handler: the run fails at once, so the event marks the timer's own accuracy. */
        expected = next - offset;
        ev = wait_event(sub, "job-failed", (int) (expected - real_ms()) + 5000);
        arrived = real_ms();
        cr_assert_not_null(ev, "the job fired");
        cr_assert_str_eq(jstr(ev, "channel"), "jobs:tick");
        cr_assert_str_eq(jstr(ev, "message.jobId"), "tick:ipc:every");
        cr_assert_str_eq(jstr(ev, "message.method"), "beat");
        cr_assert_not_null(strstr(jstr(ev, "message.error"), "Cannot initialize photon"));
        json_object_put(ev);
        fprintf(stderr, "jobs: job-failed event %" PRIi64 " ms after the minute boundary\n", arrived - expected);
        cr_assert(arrived - expected >= -2, "not early: %" PRIi64 " ms", arrived - expected);
        cr_assert(arrived - expected <= 100, "within 100 ms: %" PRIi64 " ms late", arrived - expected);

        j = get_job(c, "tick:ipc:every");
        cr_assert_eq(jint(j, "nextRun"), next + MIN_MS, "re-armed for the next minute, not twice");
        cr_assert_str_eq(jstr(j, "lastStatus"), "error");
        cr_assert(jint(j, "lastAttempt") >= next && jint(j, "lastAttempt") < next + 1000);
        cr_assert_eq(jint(j, "consecutiveFailures"), 1);
        json_object_put(j);

        /* Only one event for that minute. */
        ev = wait_event(sub, "job-failed", 300);
        cr_assert_null(ev);

        conn_close(sub);
        conn_close(c);
        stop(d);
}

/* Many jobs due in the same minute all start within 100 ms of it: each run's durable job-file write (two
 * fsyncs) must not hold up the next job's timer. No handler, so every run ends at once and its lastAttempt is
 * the moment its timer was served. What is checked is the spread from the first run to the last (400 fsynced
 * writes one after the other would take seconds), and the first run's lateness more loosely: a loaded machine
 * wakes photond late as a whole, which is not what this test is about. Sanitizer builds run several times
 * slower: their bounds are five times wider. */
#define MANY_JOBS 400
#if defined(__SANITIZE_ADDRESS__)
#  define TIMING_SLACK 5
#else
#  define TIMING_SLACK 1
#endif

Test(jobs, many_jobs_on_one_boundary_start_within_100ms, .timeout = 150) {
        int64_t offset, next = 0, first = INT64_MAX, last = INT64_MIN;
        Daemon *d = start_before_boundary(6000, &offset, NULL, NULL);
        Conn *sub = conn_open(d), *c = conn_open(d);
        struct json_object *o, *ev, *jobs;
        unsigned seen = 0;

        subscribe(sub, "jobs:many");
        for (unsigned i = 0; i < MANY_JOBS; i++) {
                char id[16];

                snprintf(id, sizeof(id), "j%u", i);
                o = schedule(c, "many", id, "beat", "* * * * *", NULL);
                cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
                cr_assert(next == 0 || jint(o, "data.nextRun") == next, "all on one boundary");
                next = jint(o, "data.nextRun");
                json_object_put(o);
        }
        cr_assert(next - offset - real_ms() > 200, "all scheduled before the boundary (%" PRIi64 " ms left)",
                  next - offset - real_ms());

        while (seen < MANY_JOBS) {
                const char *id;
                char *file;

                ev = wait_event(sub, "job-failed", (int) (next - offset - real_ms()) + 10000);
                if (!ev)
                        break;
                /* The event leaves only after the job file shows the run. */
                id = jstr(ev, "message.jobId");
                cr_assert(id && strncmp(id, "many:ipc:", 9) == 0);
                file = job_path(d->home, "many", id + 9);
                o = read_json(file);
                cr_assert_eq(jint(o, "consecutiveFailures"), 1, "%s", file);
                json_object_put(o);
                free(file);
                json_object_put(ev);
                seen++;
        }
        cr_assert_eq(seen, MANY_JOBS, "every job ran once");

        o = call(c, "\"type\":\"list_jobs\"");
        jobs = jget(o, "data.jobs");
        cr_assert_eq(json_object_array_length(jobs), MANY_JOBS);
        for (size_t i = 0; i < MANY_JOBS; i++) {
                int64_t t = jint(json_object_array_get_idx(jobs, i), "lastAttempt");

                first = MIN(first, t);
                last = MAX(last, t);
        }
        json_object_put(o);
        fprintf(stderr, "jobs: %d jobs on one boundary ran from +%" PRIi64 " to +%" PRIi64 " ms\n", MANY_JOBS,
                first - next, last - next);
        cr_assert(first >= next, "not early: %" PRIi64 " ms", first - next);
        cr_assert(first - next <= 250 * TIMING_SLACK, "the first of %d jobs ran %" PRIi64 " ms after its due time",
                  MANY_JOBS, first - next);
        cr_assert(last - first <= 100 * TIMING_SLACK, "the last of %d jobs ran %" PRIi64 " ms after the first",
                  MANY_JOBS, last - first);

        conn_close(sub);
        conn_close(c);
        stop(d);
}

Test(jobs, exec_handler_fires_at_the_boundary, .timeout = 150) {
        char *home = make_home(), *stamp = xasprintf("%s/fired", home);
        char *script = xasprintf("#!/bin/sh\ndate +%%s%%N > '%s.tmp' && mv '%s.tmp' '%s'\ncat > '%s.args'\n"
                               "echo \"{\\\"trigger\\\":\\\"$PHOTON_TRIGGER\\\",\\\"job\\\":\\\"$PHOTON_JOB_ID\\\"}\"\n",
                               stamp, stamp, stamp, stamp);
        int64_t offset;
        Daemon *d;
        Conn *sub, *c;
        struct json_object *o, *ev, *j;
        int64_t next, expected, ran_ms;

        write_handler(home, "clock", "tick", script);
        d = start_before_boundary(2500, &offset, home, NULL);
        sub = conn_open(d);
        c = conn_open(d);
        subscribe(sub, "jobs:clock");
        o = schedule(c, "clock", "t", "tick", "* * * * *", "\"args\":{\"n\":1}");
        next = jint(o, "data.nextRun");
        json_object_put(o);
        expected = next - offset;

        ev = wait_event(sub, "job-completed", (int) (expected - real_ms()) + 10000);
        cr_assert_not_null(ev, "the handler ran");
        cr_assert_str_eq(jstr(ev, "message.jobId"), "clock:ipc:t");
        cr_assert_str_eq(jstr(ev, "message.method"), "tick");
        cr_assert_eq(jint(ev, "message.runCount"), 1);
        json_object_put(ev);

        char *t = read_text(stamp);
        ran_ms = strtoll(t, NULL, 10) / 1000000;
        free(t);
        fprintf(stderr, "jobs: exec handler started %" PRIi64 " ms after the minute boundary\n", ran_ms - expected);
        cr_assert(ran_ms - expected >= 0 && ran_ms - expected <= 250, "%" PRIi64 " ms", ran_ms - expected);

        char *args_path = xasprintf("%s.args", stamp);
        o = read_json(args_path);
        cr_assert_eq(jint(o, "n"), 1, "the job's args on stdin");
        json_object_put(o);
        free(args_path);

        j = get_job(c, "clock:ipc:t");
        cr_assert_str_eq(jstr(j, "lastStatus"), "success");
        cr_assert_eq(jint(j, "runCount"), 1);
        cr_assert(jint(j, "lastRun") >= next);
        cr_assert_eq(jint(j, "consecutiveFailures"), 0);
        json_object_put(j);

        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"clock\",\"method\":\"tick\"");
        cr_assert_str_eq(jstr(o, "data.photon"), "clock");
        cr_assert_str_eq(jstr(o, "data.method"), "tick");
        cr_assert_str_eq(jstr(o, "data.entries.0.status"), "success");
        cr_assert_str_eq(jstr(o, "data.entries.0.outputPreview"), "{\"trigger\":\"schedule\",\"job\":\"clock:ipc:t\"}");
        json_object_put(o);

        conn_close(sub);
        conn_close(c);
        stop(d);
        free(script);
        free(stamp);
        rm_home(home);
}

Test(jobs, busy_job_skips_a_run, .timeout = 150) {
        char *home = make_home();
        int64_t offset;
        Daemon *d;
        Conn *c, *runner, *sub;
        struct json_object *o, *j;
        int64_t next;

        /* The manual run lasts past the boundary; the scheduled run finds it busy. */
        write_handler(home, "slow", "work", "#!/bin/sh\ncat >/dev/null\nsleep 3\necho done\n");
        d = start_before_boundary(2000, &offset, home, NULL);
        c = conn_open(d);
        runner = conn_open(d);
        sub = conn_open(d);
        subscribe(sub, "jobs:slow");
        o = schedule(c, "slow", "s", "work", "* * * * *", NULL);
        next = jint(o, "data.nextRun");
        json_object_put(o);
        cr_assert(next - offset - real_ms() > 500, "enough time to start the manual run first");

        conn_send(runner, "{\"type\":\"run_job\",\"id\":\"run1\",\"jobId\":\"s\"}");
        o = call(c, "\"type\":\"status\"");
        cr_assert_eq(jint(o, "data.runningJobs"), 1);
        json_object_put(o);

        /* Wait until the boundary has passed. */
        while (real_ms() < next - offset + 300)
                usleep(50 * 1000);       /* waiting for wall-clock time itself: there is nothing to wait on */
        j = get_job(c, "slow:ipc:s");
        cr_assert_eq(jint(j, "skippedRuns"), 1);
        cr_assert(jbool(j, "running"));
        cr_assert_eq(jint(j, "nextRun"), next + MIN_MS);
        json_object_put(j);
        cr_assert(daemon_log_contains(d, "still running"));

        o = conn_expect(runner, 10000);
        cr_assert_str_eq(jstr(o, "id"), "run1");
        cr_assert(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.status"), "success");
        cr_assert_str_eq(jstr(o, "data.result"), "done");
        cr_assert(jint(o, "data.durationMs") >= 2900);
        json_object_put(o);

        /* One completion only: the skipped run did not start a second process. */
        o = wait_event(sub, "job-completed", 2000);
        cr_assert_not_null(o);
        json_object_put(o);
        o = wait_event(sub, "job-completed", 500);
        cr_assert_null(o);

        conn_close(c);
        conn_close(runner);
        conn_close(sub);
        stop(d);
        rm_home(home);
}

/* ---- persistence, restarts, catch-up ---- */

Test(jobs, persists_across_restart) {
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d);
        struct json_object *o, *f, *j;
        char *path, *home, *text;
        int64_t created, next;

        schedule_ok(c, "notes", "digest", "send", "30 7 * * 1-5", "\"args\":{\"to\":\"me@example.org\"},\"sessionId\":\"cli-1\"");
        j = get_job(c, "notes:ipc:digest");
        created = jint(j, "createdAt");
        next = jint(j, "nextRun");
        json_object_put(j);

        path = job_path(d->home, "notes", "digest");
        text = read_text(path);
        cr_assert_not_null(strstr(text, "\n  \"id\": \"notes:ipc:digest\""), "pretty JSON: %s", text);
        free(text);
        f = read_json(path);
        cr_assert_str_eq(jstr(f, "id"), "notes:ipc:digest");
        cr_assert_str_eq(jstr(f, "method"), "send");
        cr_assert_str_eq(jstr(f, "args.to"), "me@example.org");
        cr_assert_str_eq(jstr(f, "cron"), "30 7 * * 1-5");
        cr_assert(json_object_is_type(jget(f, "requiredConfig"), json_type_array));
        cr_assert_str_eq(jstr(f, "photonName"), "notes");
        cr_assert_str_eq(jstr(f, "source"), "ipc");
        cr_assert_str_eq(jstr(f, "status"), "active");
        char *created_iso = iso(created);
        cr_assert_str_eq(jstr(f, "createdAt"), created_iso);
        free(created_iso);
        cr_assert_str_eq(jstr(f, "createdBy"), "cli-1");
        cr_assert_eq(jint(f, "executionCount"), 0);
        cr_assert(jhas(f, "lastExecutionAt") && !jget(f, "lastExecutionAt"), "null, as the reference writes");
        cr_assert(jhas(f, "lastAttemptAt") && !jget(f, "lastAttemptAt"));
        cr_assert(jhas(f, "lastStatus") && !jget(f, "lastStatus"));
        cr_assert(jhas(f, "lastError") && !jget(f, "lastError"));
        cr_assert_eq(jint(f, "consecutiveFailures"), 0);
        cr_assert(!jhas(f, "workingDir"));
        json_object_put(f);

        home = daemon_take_home(d);
        int status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        conn_close(c);
        stop(d);
        cr_assert_eq(access(path, F_OK), 0, "jobs are not deleted on shutdown");

        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        j = get_job(c, "notes:ipc:digest");
        cr_assert_not_null(j, "loaded after the restart");
        cr_assert_eq(jint(j, "createdAt"), created);
        cr_assert_eq(jint(j, "nextRun"), next);
        cr_assert_str_eq(jstr(j, "args.to"), "me@example.org");
        cr_assert_str_eq(jstr(j, "createdBy"), "cli-1");
        json_object_put(j);
        o = call(c, "\"type\":\"status\"");
        cr_assert_eq(jint(o, "data.jobs"), 1);
        json_object_put(o);

        conn_close(c);
        stop(d);
        free(path);
        rm_home(home);
}

Test(jobs, working_dir_jobs_and_bases_registry) {
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d);
        char *wd = xasprintf("%s/project", d->home), *key, *path, *home, *bases;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len;
        struct json_object *o, *j;

        cr_assert_eq(mkdir(wd, 0755), 0);
        cr_assert_eq(EVP_Digest(wd, strlen(wd), md, &md_len, EVP_sha256(), NULL), 1);
        key = xasprintf("proj:%02x%02x%02x%02x:ipc:build", md[0], md[1], md[2], md[3]);

        char *extra = xasprintf("\"workingDir\":\"%s\"", wd);
        o = schedule(c, "proj", "build", "make", "0 * * * *", extra);
        cr_assert(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.jobId"), key);
        json_object_put(o);
        /* The same jobId without workingDir is another job. */
        schedule_ok(c, "proj", "build", "make", "0 * * * *", NULL);

        path = xasprintf("%s/.data/proj/schedules/build.json", wd);
        o = read_json(path);
        cr_assert_str_eq(jstr(o, "workingDir"), wd);
        cr_assert_str_eq(jstr(o, "id"), key);
        json_object_put(o);

        bases = xasprintf("%s/.photon/.data/.bases.json", d->home);
        o = read_json(bases);
        cr_assert_str_eq(jstr(o, "bases.0.path"), wd);
        int64_t ms;
        cr_assert_eq(schedule_parse_iso(jstr(o, "bases.0.firstSeen"), &ms), 0);
        cr_assert_eq(schedule_parse_iso(jstr(o, "bases.0.lastSeen"), &ms), 0);
        json_object_put(o);

        home = daemon_take_home(d);
        conn_close(c);
        stop(d);

        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        j = get_job(c, key);
        cr_assert_not_null(j, "a job in a registered base is loaded at start");
        cr_assert_str_eq(jstr(j, "workingDir"), wd);
        json_object_put(j);
        j = get_job(c, "proj:ipc:build");
        cr_assert_not_null(j);
        json_object_put(j);

        /* History of a workingDir job is read from its base. */
        o = call(c, "\"type\":\"run_job\",\"jobId\":\"%s\"", key);
        cr_assert(!jbool(o, "success"));
        json_object_put(o);
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"proj\",\"method\":\"make\",%s", extra);
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 1);
        cr_assert_str_eq(jstr(o, "data.entries.0.jobId"), key);
        json_object_put(o);
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"proj\",\"method\":\"make\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 0, "the default base has none");
        json_object_put(o);

        conn_close(c);
        stop(d);
        free(extra);
        free(bases);
        free(path);
        free(key);
        free(wd);
        rm_home(home);
}

/* "M H" of a UTC time, for daily expressions that fire at that minute. */
static char* daily_at(int64_t ms) {
        time_t t = (time_t) (ms / 1000);
        struct tm tm;

        gmtime_r(&t, &tm);
        return xasprintf("%d %d * * *", tm.tm_min, tm.tm_hour);
}

static char* yearly_at(int64_t ms) {
        time_t t = (time_t) (ms / 1000);
        struct tm tm;

        gmtime_r(&t, &tm);
        return xasprintf("%d %d %d %d *", tm.tm_min, tm.tm_hour, tm.tm_mday, tm.tm_mon + 1);
}

static void write_reference_job(const char *home, const char *photon, const char *job_id, const char *cron,
                                int64_t created, int64_t last) {
        char *path = job_path(home, photon, job_id), *c = iso(created), *l = last ? iso(last) : NULL;
        char *lq = l ? xasprintf("\"%s\"", l) : strdup("null");
        /* Exactly the reference's field list, in its order and layout. */
        char *text = xasprintf("{\n  \"id\": \"%s:ipc:%s\",\n  \"method\": \"run\",\n  \"args\": {},\n"
                             "  \"cron\": \"%s\",\n  \"requiredConfig\": [],\n  \"photonName\": \"%s\",\n"
                             "  \"source\": \"ipc\",\n  \"status\": \"active\",\n  \"createdAt\": \"%s\",\n"
                             "  \"createdBy\": \"cli-7-abcdef12\",\n  \"executionCount\": 3,\n"
                             "  \"lastExecutionAt\": %s,\n  \"lastAttemptAt\": %s,\n  \"lastStatus\": %s,\n"
                             "  \"lastError\": null,\n  \"consecutiveFailures\": 0\n}",
                             photon, job_id, cron, photon, c, lq, lq, l ? "\"success\"" : "null");

        write_text(path, text);
        free(text);
        free(lq);
        free(l);
        free(c);
        free(path);
}

Test(jobs, reference_files_catch_up_and_corrupt_files) {
        char *home = make_home();
        int64_t now = real_ms(), start, got;
        char *daily = daily_at(now - 2 * HOUR_MS), *old = yearly_at(now - 20 * DAY_MS);
        char *bad = job_path(home, "cu", "broken"), *lenient = job_path(home, "cu", "lenient");
        const char *bad_text = "{\"id\":\"cu:ipc:broken\",\"method\":";
        const char *lenient_text = "{\"id\":\"cu:ipc:lenient\",\"method\":\"run\",\"cron\":\"5abc * * * *\","
                                   "\"photonName\":\"cu\",\"source\":\"ipc\",\"status\":\"active\"}";
        const char *env[] = { "TZ=UTC", "PHOTOND_JOB_CATCHUP_DELAY_MS=800", NULL };
        struct json_object *o, *ev, *j;
        Daemon *d;
        Conn *c, *sub;

        /* Missed at now-2h (last ran a day before): one catch-up run. */
        write_reference_job(home, "cu", "missed", daily, now - 3 * DAY_MS, now - 26 * HOUR_MS);
        /* Ran after its last occurrence: nothing to catch up. */
        write_reference_job(home, "cu", "fine", daily, now - 3 * DAY_MS, now - HOUR_MS);
        /* Its only missed occurrence is 20 days old: outside the 14-day window. */
        write_reference_job(home, "cu", "ancient", old, now - 40 * DAY_MS, now - 30 * DAY_MS);
        write_text(bad, bad_text);
        write_text(lenient, lenient_text);

        start = real_ms();
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        sub = conn_open(d);
        c = conn_open(d);
        subscribe(sub, "jobs:cu");

        o = call(c, "\"type\":\"list_jobs\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.jobs")), 3, "%s", json_object_to_json_string(o));
        json_object_put(o);

        /* The reference's fields came in. */
        j = get_job(c, "cu:ipc:fine");
        cr_assert_eq(jint(j, "runCount"), 3);
        cr_assert_eq(jint(j, "createdAt") / 1000, (now - 3 * DAY_MS) / 1000);
        cr_assert_str_eq(jstr(j, "createdBy"), "cli-7-abcdef12");
        cr_assert_str_eq(jstr(j, "lastStatus"), "success");
        cr_assert_eq(jint(j, "lastRun"), now - HOUR_MS);
        json_object_put(j);
        j = get_job(c, "cu:ipc:missed");
        cr_assert(jint(j, "nextRun") >= start + 700 && jint(j, "nextRun") <= real_ms() + 800,
                  "the catch-up run is the next one");
        json_object_put(j);

        ev = wait_event(sub, "job-failed", 5000);
        got = real_ms();
        cr_assert_not_null(ev, "catch-up ran");
        cr_assert_str_eq(jstr(ev, "message.jobId"), "cu:ipc:missed");
        json_object_put(ev);
        cr_assert(got - start >= 800, "after the configured delay (%" PRIi64 " ms)", got - start);
        cr_assert(daemon_log_contains(d, "catching up"));

        ev = wait_event(sub, "job-failed", 1500);
        cr_assert_null(ev, "exactly one catch-up: %s", ev ? json_object_to_json_string(ev) : "");

        j = get_job(c, "cu:ipc:missed");
        int64_t expect;
        cr_assert_eq(schedule_cron_next(daily, real_ms(), &expect), 0);
        cr_assert_eq(jint(j, "nextRun"), expect, "back on its cron after the catch-up");
        cr_assert(jint(j, "lastAttempt") >= start);
        json_object_put(j);

        /* Corrupt and lenient files: reported once each, skipped, left byte for byte. */
        cr_assert(daemon_log_contains(d, "broken.json"));
        cr_assert(daemon_log_contains(d, "lenient.json"));
        char *t = read_text(bad);
        cr_assert_str_eq(t, bad_text);
        free(t);
        t = read_text(lenient);
        cr_assert_str_eq(t, lenient_text);
        free(t);

        conn_close(sub);
        conn_close(c);
        stop(d);
        free(bad);
        free(lenient);
        free(daily);
        free(old);
        rm_home(home);
}

/* A reschedule replaces the job's configuration, not what photond does not know of its file. */
Test(jobs, reschedule_keeps_keys_photond_does_not_know) {
        char *home = make_home(), *path = job_path(home, "rk", "nightly"), *text;
        struct json_object *f;
        Daemon *d;
        Conn *c;

        write_text(path, "{\"id\":\"rk:ipc:nightly\",\"method\":\"run\",\"args\":{},\"cron\":\"0 3 * * *\","
                         "\"requiredConfig\":[\"API_KEY\"],\"photonName\":\"rk\",\"source\":\"ipc\","
                         "\"status\":\"active\",\"createdAt\":\"2026-01-01T00:00:00.000Z\",\"executionCount\":0,"
                         "\"lastExecutionAt\":null,\"lastAttemptAt\":null,\"lastStatus\":null,\"lastError\":null,"
                         "\"consecutiveFailures\":0,\"xFuture\":{\"kept\":true}}");
        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        schedule_ok(c, "rk", "nightly", "archive", "0 4 * * *", NULL);

        text = read_text(path);
        f = json_tokener_parse(text);
        cr_assert_not_null(f, "%s", text);
        cr_assert_str_eq(jstr(f, "cron"), "0 4 * * *", "%s", text);
        cr_assert_str_eq(jstr(f, "method"), "archive");
        cr_assert_str_eq(jstr(f, "requiredConfig.0"), "API_KEY", "%s", text);
        cr_assert(jbool(f, "xFuture.kept"), "%s", text);
        json_object_put(f);
        free(text);

        conn_close(c);
        stop(d);
        free(path);
        rm_home(home);
}

Test(jobs, catch_up_after_downtime) {
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d), *sub;
        struct json_object *ev;
        char *home;

        schedule_ok(c, "down", "hourly", "ping", "0 * * * *", NULL);
        home = daemon_take_home(d);
        conn_close(c);
        stop(d);

        /* Come back "two hours later" through the test hook: two hourly occurrences passed, one run. */
        char *off = xasprintf("PHOTOND_TEST_CLOCK_OFFSET_MS=%" PRIi64, 2 * HOUR_MS + 5 * MIN_MS);
        const char *env2[] = { "TZ=UTC", off, "PHOTOND_JOB_CATCHUP_DELAY_MS=500", NULL };
        d = daemon_start(&(DaemonOptions) { .env = env2, .home = home });
        sub = conn_open(d);
        subscribe(sub, "jobs:down");
        ev = wait_event(sub, "job-failed", 5000);
        cr_assert_not_null(ev);
        cr_assert_str_eq(jstr(ev, "message.jobId"), "down:ipc:hourly");
        json_object_put(ev);
        ev = wait_event(sub, "job-failed", 1000);
        cr_assert_null(ev, "one catch-up run, not one per missed hour");

        conn_close(sub);
        stop(d);
        free(off);
        rm_home(home);
}

/* A time-zone change (the /etc/localtime symlink replaced, as timedatectl does) moves the due times. photond runs
 * in a mount namespace over a copy of /etc, so the test never touches the machine's own time zone. */
Test(jobs, time_zone_change_moves_due_times) {
        char *home, *etc, *wrapper, *cmd, *link_new, *link;
        struct json_object *j;
        int64_t before, after = 0;
        Daemon *d;
        Conn *c;

        if (geteuid() != 0 || access("/usr/bin/unshare", X_OK) < 0 ||
            access("/usr/share/zoneinfo/Asia/Tokyo", F_OK) < 0)
                cr_skip_test("needs root, unshare and tzdata");

        home = make_home();
        etc = xasprintf("%s/etc", home);
        cmd = xasprintf("cp -a /etc '%s' && ln -sfn /usr/share/zoneinfo/Etc/UTC '%s/localtime'", etc, etc);
        cr_assert_eq(system(cmd), 0);
        free(cmd);
        wrapper = xasprintf("%s/photond-ns", home);
        cmd = xasprintf("#!/bin/sh\nexec unshare --mount --propagation private sh -c "
                      "'mount --bind \"$0\" /etc && exec \"$@\"' '%s' '%s' \"$@\"\n", etc, photond_binary());
        write_text(wrapper, cmd);
        free(cmd);
        cr_assert_eq(chmod(wrapper, 0755), 0);
        setenv("PHOTOND_BINARY", wrapper, 1);

        /* No TZ: the zone comes from /etc/localtime. */
        d = daemon_start(&(DaemonOptions) { .home = home });
        c = conn_open(d);
        schedule_ok(c, "tz", "noon", "lunch", "0 12 * * *", NULL);
        j = get_job(c, "tz:ipc:noon");
        before = jint(j, "nextRun");
        json_object_put(j);
        cr_assert_eq(before % DAY_MS, 12 * HOUR_MS, "noon UTC");

        link_new = xasprintf("%s/localtime.new", etc);
        link = xasprintf("%s/localtime", etc);
        cr_assert_eq(symlink("/usr/share/zoneinfo/Asia/Tokyo", link_new), 0);
        cr_assert_eq(rename(link_new, link), 0);

        for (uint64_t deadline = mono_ms() + 5000; mono_ms() < deadline;) {
                j = get_job(c, "tz:ipc:noon");
                after = jint(j, "nextRun");
                json_object_put(j);
                if (after != before)
                        break;
                usleep(20 * 1000);      /* polling the job: the change is photond's to notice, with no reply to await */
        }
        cr_assert_eq(after % DAY_MS, 3 * HOUR_MS, "noon in Tokyo is 03:00 UTC (got %" PRIi64 ")", after);
        cr_assert(daemon_log_contains(d, "time zone changed"));

        conn_close(c);
        stop(d);
        free(link);
        free(link_new);
        free(wrapper);
        free(etc);
        rm_home(home);
}

/* Setting the system clock (settimeofday, an NTP step) makes photond recompute every due time. The test sets the
 * clock to the time it reads, which moves it back by the microseconds in between: enough for the kernel to report
 * a clock change, too little to matter to anything else on the machine, and too little to move a due time. So
 * this test proves only that photond hears of the change; what the recompute does with a real step (a day back, a
 * day forward) is schedule_recompute_due()'s, unit-tested in test-schedule.c. */
Test(jobs, clock_set_recomputes_due_times) {
        const char *env[] = { "TZ=UTC", NULL };
        struct json_object *j;
        struct timespec ts;
        int64_t before;
        Daemon *d;
        Conn *c;
        bool seen = false;

        if (geteuid() != 0)
                cr_skip_test("needs CAP_SYS_TIME");

        d = daemon_start(&(DaemonOptions) { .env = env });
        c = conn_open(d);
        schedule_ok(c, "clk", "noon", "lunch", "0 12 * * *", NULL);
        j = get_job(c, "clk:ipc:noon");
        before = jint(j, "nextRun");
        json_object_put(j);

        cr_assert_eq(clock_gettime(CLOCK_REALTIME, &ts), 0);
        if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
                conn_close(c);
                stop(d);
                cr_skip_test("clock_settime: %m");
        }

        for (uint64_t deadline = mono_ms() + 5000; !seen && mono_ms() < deadline;) {
                seen = daemon_log_contains(d, "The system clock was set: recomputing the due times of 1 job.");
                if (!seen)
                        usleep(20 * 1000);      /* polling the log: photond reacts to the kernel, not to us */
        }
        cr_assert(seen, "photond noticed the clock change");
        j = get_job(c, "clk:ipc:noon");
        cr_assert_eq(jint(j, "nextRun"), before, "the due time, recomputed, is still the next noon");
        json_object_put(j);

        conn_close(c);
        stop(d);
}

/* ---- state changes, replace, history, run_job ---- */

Test(jobs, enable_disable_pause_resume) {
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *c = conn_open(d);
        struct json_object *o, *j;
        char *path, *home;

        schedule_ok(c, "ops", "a", "backup", "0 1 * * *", NULL);
        schedule_ok(c, "ops", "b", "backup", "0 2 * * *", NULL);
        schedule_ok(c, "ops", "c", "rotate", "0 3 * * *", NULL);

        o = call(c, "\"type\":\"pause_schedule\",\"photonName\":\"ops\",\"method\":\"backup\"");
        cr_assert(jbool(o, "success"));
        cr_assert_eq(jint(o, "data.updated"), 2);
        cr_assert_str_eq(jstr(o, "data.jobIds.0"), "ops:ipc:a");
        cr_assert_str_eq(jstr(o, "data.jobIds.1"), "ops:ipc:b");
        json_object_put(o);

        j = get_job(c, "ops:ipc:a");
        cr_assert(jbool(j, "paused"));
        cr_assert(!jhas(j, "nextRun"), "a paused job has no next run");
        json_object_put(j);
        j = get_job(c, "ops:ipc:c");
        cr_assert(!jbool(j, "paused") && jhas(j, "nextRun"), "other methods are untouched");
        json_object_put(j);
        path = job_path(d->home, "ops", "a");
        o = read_json(path);
        cr_assert_str_eq(jstr(o, "status"), "paused");
        json_object_put(o);

        o = call(c, "\"type\":\"resume_schedule\",\"photonName\":\"ops\",\"method\":\"backup\"");
        cr_assert_eq(jint(o, "data.updated"), 2);
        json_object_put(o);
        j = get_job(c, "ops:ipc:b");
        cr_assert(!jbool(j, "paused") && jhas(j, "nextRun"));
        json_object_put(j);

        o = call(c, "\"type\":\"disable_schedule\",\"photonName\":\"ops\",\"method\":\"backup\"");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        o = read_json(path);
        cr_assert_str_eq(jstr(o, "status"), "disabled");
        cr_assert(!jbool(o, "enabled"));
        json_object_put(o);

        /* A reschedule keeps an administrator's decision. */
        schedule_ok(c, "ops", "a", "backup", "0 4 * * *", NULL);
        j = get_job(c, "ops:ipc:a");
        cr_assert(!jbool(j, "enabled"));
        cr_assert_str_eq(jstr(j, "cron"), "0 4 * * *");
        json_object_put(j);

        /* The state survives a restart. */
        home = daemon_take_home(d);
        conn_close(c);
        stop(d);
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        j = get_job(c, "ops:ipc:b");
        cr_assert(!jbool(j, "enabled"));
        cr_assert(!jhas(j, "nextRun"));
        json_object_put(j);

        o = call(c, "\"type\":\"enable_schedule\",\"photonName\":\"ops\",\"method\":\"backup\"");
        cr_assert_eq(jint(o, "data.updated"), 2);
        json_object_put(o);
        j = get_job(c, "ops:ipc:b");
        cr_assert(jbool(j, "enabled") && jhas(j, "nextRun"));
        json_object_put(j);

        conn_close(c);
        stop(d);
        free(path);
        rm_home(home);
}

Test(jobs, run_job_history_and_replace) {
        char *home = make_home();
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d;
        Conn *c;
        struct json_object *o, *j;
        char *hist, *t;
        int64_t created;

        /* 600 characters of output: the preview keeps 500 and adds the ellipsis. */
        write_handler(home, "rep", "long",
                      "#!/bin/sh\ncat >/dev/null\nhead -c 600 /dev/zero | tr '\\0' x\n");
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);

        schedule_ok(c, "rep", "r", "long", "0 0 1 1 *", "\"args\":{\"v\":1}");
        j = get_job(c, "rep:ipc:r");
        created = jint(j, "createdAt");
        json_object_put(j);

        o = call(c, "\"type\":\"run_job\",\"jobId\":\"r\"");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.jobId"), "rep:ipc:r");
        cr_assert_str_eq(jstr(o, "data.status"), "success");
        cr_assert_eq(jint(o, "data.runCount"), 1);
        cr_assert_eq(strlen(jstr(o, "data.result")), 600);
        json_object_put(o);

        hist = xasprintf("%s/.photon/.data/rep/schedules/executions.jsonl", home);
        t = read_text(hist);
        o = json_tokener_parse(t);
        free(t);
        cr_assert_str_eq(jstr(o, "jobId"), "rep:ipc:r");
        cr_assert_str_eq(jstr(o, "method"), "long");
        cr_assert_str_eq(jstr(o, "status"), "success");
        cr_assert(jhas(o, "ts") && jhas(o, "durationMs"));
        cr_assert(!jhas(o, "errorMessage"));
        cr_assert_eq(strlen(jstr(o, "outputPreview")), 500 + strlen("…"));
        cr_assert_str_eq(jstr(o, "outputPreview") + 500, "…");
        json_object_put(o);

        /* Rescheduling replaces args and cron, keeps runCount and createdAt. */
        schedule_ok(c, "rep", "r", "long", "0 0 2 1 *", "\"args\":{\"v\":2}");
        j = get_job(c, "rep:ipc:r");
        cr_assert_eq(jint(j, "runCount"), 1);
        cr_assert_eq(jint(j, "createdAt"), created);
        cr_assert_eq(jint(j, "args.v"), 2);
        cr_assert_str_eq(jstr(j, "cron"), "0 0 2 1 *");
        json_object_put(j);
        char *file = job_path(home, "rep", "r");
        o = read_json(file);
        free(file);
        cr_assert_eq(jint(o, "executionCount"), 1);
        cr_assert_str_eq(jstr(o, "lastStatus"), "success");
        json_object_put(o);

        /* A failing run: no handler for this method. */
        schedule_ok(c, "rep", "gone", "nothing", "0 0 1 1 *", NULL);
        o = call(c, "\"type\":\"run_job\",\"jobId\":\"rep:ipc:gone\"");
        cr_assert(!jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.status"), "error");
        cr_assert_not_null(strstr(jstr(o, "data.reason"), "nothing"), "%s", jstr(o, "data.reason"));
        json_object_put(o);

        int64_t mid = real_ms();
        o = call(c, "\"type\":\"run_job\",\"jobId\":\"r\"");
        json_object_put(o);

        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"rep\",\"method\":\"long\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 2);
        cr_assert(jint(o, "data.entries.0.ts") >= jint(o, "data.entries.1.ts"), "newest first");
        json_object_put(o);
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"rep\",\"method\":\"long\",\"limit\":1");
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 1);
        json_object_put(o);
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"rep\",\"method\":\"long\",\"sinceTs\":%" PRIi64,
                 mid);
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 1);
        json_object_put(o);
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"rep\",\"method\":\"nothing\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 1);
        cr_assert_str_eq(jstr(o, "data.entries.0.status"), "error");
        cr_assert_not_null(jstr(o, "data.entries.0.errorMessage"));
        cr_assert(!jhas(o, "data.entries.0.outputPreview"));
        json_object_put(o);

        free(hist);
        conn_close(c);
        stop(d);
        rm_home(home);
}

/* A run whose handler timed out is answered at the timeout, but its process may still be ending (it ignores
 * SIGTERM until the kill grace is over): the job's next run must not overlap it. */
Test(jobs, a_timed_out_run_still_ending_blocks_the_next) {
        char *home = make_home(), *trapped;
        const char *env[] = { "TZ=UTC", "PHOTOND_HANDLER_TIMEOUT_MS=500", "PHOTOND_HANDLER_KILL_GRACE_MS=30000",
                              NULL };
        Daemon *d;
        Conn *c;
        struct json_object *o;

        trapped = xasprintf("%s/trapped", home);
        write_handler(home, "stubborn", "run", "#!/bin/sh\ntrap '' TERM\ntouch \"$HOME/trapped\"\nexec sleep 60\n");
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        schedule_ok(c, "stubborn", "s", "run", "0 0 1 1 *", NULL);

        o = call(c, "\"type\":\"run_job\",\"jobId\":\"s\"");
        cr_assert_str_eq(jstr(o, "data.status"), "error", "%s", json_object_to_json_string(o));
        json_object_put(o);
        /* The handler had set its trap before the timeout: its process outlives the answer. */
        cr_assert_eq(access(trapped, F_OK), 0, "the handler never ran far enough to ignore SIGTERM");

        o = call(c, "\"type\":\"run_job\",\"jobId\":\"s\"");
        cr_assert_not(jbool(o, "success"), "a second run started beside the ending one: %s",
                      json_object_to_json_string(o));
        cr_assert(strstr(jstr(o, "data.reason"), "already running"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        free(trapped);
        conn_close(c);
        stop(d);
        rm_home(home);
}

/* A run that cannot start records the text a command gets for the same reason: one vocabulary (DispatchError). */
Test(jobs, a_run_that_cannot_start_is_worded_as_a_command) {
        char *home = make_home(), *path;
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d;
        Conn *c;
        struct json_object *o, *j;
        _cleanup_free_ char *command_error = NULL;

        write_handler(home, "unsafe", "run", "#!/bin/sh\necho ran\n");
        path = xasprintf("%s/handlers/unsafe/run", home);
        cr_assert_eq(chmod(path, 0775), 0);             /* group-writable: refused */
        free(path);
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);

        o = call(c, "\"type\":\"command\",\"photonName\":\"unsafe\",\"method\":\"run\"");
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        command_error = strdup(jstr(o, "error"));
        json_object_put(o);
        cr_assert(strstr(command_error, "Refusing the handler of unsafe/run"), "%s", command_error);

        schedule_ok(c, "unsafe", "u", "run", "0 0 1 1 *", NULL);
        o = call(c, "\"type\":\"run_job\",\"jobId\":\"u\"");
        json_object_put(o);
        j = get_job(c, "unsafe:ipc:u");
        cr_assert_str_eq(jstr(j, "lastStatus"), "error");
        cr_assert_str_eq(jstr(j, "lastError"), command_error);
        json_object_put(j);

        conn_close(c);
        stop(d);
        rm_home(home);
}

/* The reference drops history entries past 14 days only at start. photond also skips them on every read, so a
 * daemon that has been running for weeks does not answer with them. The clock hook puts photond 15 days ahead;
 * lines appended after its start stand for runs recorded while it ran. */
Test(jobs, history_skips_entries_that_aged_while_running) {
        char *home = make_home(), *hist, *env_off = xasprintf("PHOTOND_TEST_CLOCK_OFFSET_MS=%" PRIi64, 15 * DAY_MS);
        const char *env[] = { "TZ=UTC", env_off, NULL };
        int64_t now = real_ms();
        Daemon *d;
        Conn *c;
        struct json_object *o;
        FILE *f;

        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        schedule_ok(c, "aged", "a", "m", "0 0 1 1 *", NULL);
        o = call(c, "\"type\":\"run_job\",\"jobId\":\"a\"");       /* no handler: one failed run, now */
        json_object_put(o);

        hist = xasprintf("%s/.photon/.data/aged/schedules/executions.jsonl", home);
        f = fopen(hist, "ae");
        cr_assert_not_null(f);
        /* 15 days and 13 days before photond's clock. */
        for (int i = 0; i < 2; i++)
                fprintf(f, "{\"ts\":%" PRIi64 ",\"jobId\":\"aged:ipc:a\",\"method\":\"m\",\"durationMs\":%d,"
                        "\"status\":\"success\"}\n", now + i * 2 * DAY_MS, i + 1);
        cr_assert_eq(fclose(f), 0);

        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"aged\",\"method\":\"m\"");
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 2, "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.entries.0.status"), "error", "photond's own run, newest");
        cr_assert_eq(jint(o, "data.entries.1.durationMs"), 2, "13 days old: kept");
        json_object_put(o);

        /* An old sinceTs does not bring it back. */
        o = call(c, "\"type\":\"get_execution_history\",\"photonName\":\"aged\",\"method\":\"m\",\"sinceTs\":0");
        cr_assert_eq(json_object_array_length(jget(o, "data.entries")), 2);
        json_object_put(o);

        conn_close(c);
        stop(d);
        free(hist);
        free(env_off);
        rm_home(home);
}

Test(jobs, provider_serves_a_job) {
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d = daemon_start(&(DaemonOptions) { .env = env });
        Conn *prov = conn_open(d), *c = conn_open(d), *runner = conn_open(d);
        struct json_object *o, *inv;

        o = call(prov, "\"type\":\"provide\",\"photonName\":\"svc\"");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        schedule_ok(c, "svc", "job", "compute", "0 0 1 1 *", "\"args\":{\"x\":21}");

        conn_send(runner, "{\"type\":\"run_job\",\"id\":\"rj\",\"jobId\":\"job\"}");
        inv = conn_expect(prov, 5000);
        cr_assert_str_eq(jstr(inv, "type"), "invoke");
        cr_assert_str_eq(jstr(inv, "photonName"), "svc");
        cr_assert_str_eq(jstr(inv, "method"), "compute");
        cr_assert_str_eq(jstr(inv, "trigger"), "schedule");
        cr_assert_eq(jint(inv, "args.x"), 21);
        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":{\"y\":42}}",
                  jstr(inv, "id"));
        json_object_put(inv);

        o = conn_expect(runner, 5000);
        cr_assert_str_eq(jstr(o, "id"), "rj");
        cr_assert(jbool(o, "success"));
        cr_assert_eq(jint(o, "data.result.y"), 42);
        json_object_put(o);

        /* A provider's failure is the job's failure. */
        conn_send(runner, "{\"type\":\"run_job\",\"id\":\"rj2\",\"jobId\":\"job\"}");
        inv = conn_expect(prov, 5000);
        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":false,\"error\":\"disk full\"}",
                  jstr(inv, "id"));
        json_object_put(inv);
        o = conn_expect(runner, 5000);
        cr_assert(!jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.reason"), "disk full");
        json_object_put(o);

        struct json_object *j = get_job(c, "svc:ipc:job");
        cr_assert_eq(jint(j, "runCount"), 1);
        cr_assert_str_eq(jstr(j, "lastError"), "disk full");
        cr_assert_eq(jint(j, "consecutiveFailures"), 1);
        json_object_put(j);

        conn_close(prov);
        conn_close(c);
        conn_close(runner);
        stop(d);
}

Test(jobs, run_job_requester_leaves) {
        char *home = make_home();
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d;
        Conn *c, *runner;
        struct json_object *o, *j;

        write_handler(home, "bye", "wait", "#!/bin/sh\ncat >/dev/null\nsleep 1\necho ok\n");
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });
        c = conn_open(d);
        runner = conn_open(d);
        schedule_ok(c, "bye", "w", "wait", "0 0 1 1 *", NULL);
        conn_send(runner, "{\"type\":\"run_job\",\"id\":\"x\",\"jobId\":\"w\"}");
        o = call(c, "\"type\":\"status\"");
        cr_assert_eq(jint(o, "data.runningJobs"), 1);
        json_object_put(o);
        conn_close(runner);

        /* The run finishes and is recorded; photond survives answering nobody. */
        for (int i = 0; i < 100; i++) {
                j = get_job(c, "bye:ipc:w");
                bool done = jhas(j, "lastStatus");
                json_object_put(j);
                if (done)
                        break;
                usleep(50 * 1000);      /* polling a job's state: the result goes to the requester that left */
        }
        j = get_job(c, "bye:ipc:w");
        cr_assert_str_eq(jstr(j, "lastStatus"), "success");
        json_object_put(j);

        conn_close(c);
        stop(d);
        rm_home(home);
}

/* ---- photonctl ---- */

Test(jobs, photonctl_verbs) {
        char *home = make_home();
        const char *env[] = { "TZ=UTC", NULL };
        Daemon *d;
        char *out = NULL;

        setenv("TZ", "UTC", 1);
        write_handler(home, "cli", "hello", "#!/bin/sh\ncat >/dev/null\necho '\"hi there\"'\n");
        write_handler(home, "cli", "nul", "#!/bin/sh\ncat >/dev/null\necho '\"a\\u0000b\"'\n");
        d = daemon_start(&(DaemonOptions) { .env = env, .home = home });

        cr_assert_eq(run_ctl(d, &out, "cron", "*/15 * * * *", "--count", "3", NULL), 0);
        int lines = 0;
        for (char *p = out; (p = strchr(p, '\n')); p++)
                lines++;
        cr_assert_eq(lines, 3, "%s", out);
        cr_assert_not_null(strstr(out, ":00 UTC") ?: strstr(out, ":15 UTC") ?: strstr(out, ":30 UTC") ?:
                           strstr(out, ":45 UTC"), "%s", out);
        cr_assert_not_null(strstr(out, "(in "), "%s", out);
        free(out);

        cr_assert_neq(run_ctl(d, &out, "cron", "61 * * * *", NULL), 0);
        free(out);

        cr_assert_eq(run_ctl(d, &out, "schedule", "cli", "greet", "hello", "0 9 * * *", "{\"name\":\"x\"}", NULL), 0);
        cr_assert_not_null(strstr(out, "Scheduled cli:ipc:greet"), "%s", out);
        cr_assert_not_null(strstr(out, "09:00:00 UTC"), "%s", out);
        free(out);
        cr_assert_neq(run_ctl(d, &out, "schedule", "cli", "bad", "hello", "nope", NULL), 0);
        free(out);

        cr_assert_eq(run_ctl(d, &out, "jobs", NULL), 0);
        cr_assert_not_null(strstr(out, "ID"), "%s", out);
        cr_assert_not_null(strstr(out, "cli:ipc:greet"), "%s", out);
        cr_assert_not_null(strstr(out, "0 9 * * *"), "%s", out);
        cr_assert_not_null(strstr(out, "(in "), "%s", out);
        free(out);

        cr_assert_eq(run_ctl(d, &out, "run-job", "greet", NULL), 0);
        cr_assert_not_null(strstr(out, "succeeded"), "%s", out);
        cr_assert_not_null(strstr(out, "hi there"), "%s", out);
        free(out);

        /* A result with a NUL is printed whole, as JSON, and so is its preview in the history. */
        cr_assert_eq(run_ctl(d, &out, "schedule", "cli", "nulrun", "nul", "0 9 * * *", NULL), 0);
        free(out);
        cr_assert_eq(run_ctl(d, &out, "run-job", "nulrun", NULL), 0);
        cr_assert_not_null(strstr(out, "\"a\\u0000b\""), "%s", out);
        free(out);
        cr_assert_eq(run_ctl(d, &out, "history", "cli", "nul", NULL), 0);
        cr_assert_not_null(strstr(out, "a\\u0000b"), "%s", out);
        free(out);

        cr_assert_eq(run_ctl(d, &out, "history", "cli", "hello", "--limit", "5", NULL), 0);
        cr_assert_not_null(strstr(out, "success"), "%s", out);
        cr_assert_not_null(strstr(out, "hi there"), "%s", out);
        free(out);

        cr_assert_eq(run_ctl(d, &out, "jobs", NULL), 0);
        cr_assert_not_null(strstr(out, "success"), "last status shown: %s", out);
        free(out);

        cr_assert_eq(run_ctl(d, &out, "unschedule", "greet", NULL), 0);
        free(out);
        cr_assert_neq(run_ctl(d, &out, "unschedule", "greet", NULL), 0, "a second time there is nothing");
        free(out);
        cr_assert_neq(run_ctl(d, &out, "run-job", "greet", NULL), 0);
        free(out);

        stop(d);
        rm_home(home);
}
