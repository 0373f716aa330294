/* SPDX-License-Identifier: MIT */

/* Scheduled jobs: job keys, ISO times, previews, catch-up decisions, the run history file; a real Manager's
 * scheduler loading reference-format files and running a job with no handler; a scheduler on a loop of its own,
 * without a Manager, asked through its typed functions; and the job requests through the control front end. */

#include <criterion/criterion.h>
#include <json-c/json.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fd-util.h"
#include "fsync-spy.h"
#include "helpers.h"
#include "json-util.h"
#include "photond-channel.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "photond-schedule.h"

#define MIN_MS ((int64_t) 60 * 1000)
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)

static void utc(void) {
        setenv("TZ", "UTC", 1);
        tzset();
}

static int64_t iso(const char *s) {
        int64_t ms;

        cr_assert_eq(schedule_parse_iso(s, &ms), 0, "parse %s", s);
        return ms;
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

Test(schedule, job_keys) {
        char *k;

        cr_assert_eq(schedule_job_key("kanban", NULL, "nightly", &k), 0);
        cr_assert_str_eq(k, "kanban:ipc:nightly");
        free(k);

        /* sha256("/home/alice/project") starts with 9c2098df (sha256sum). */
        cr_assert_eq(schedule_job_key("kanban", "/home/alice/project", "nightly", &k), 0);
        cr_assert_str_eq(k, "kanban:9c2098df:ipc:nightly");
        free(k);
        cr_assert_eq(schedule_job_key("p", "/", "j", &k), 0);
        cr_assert_str_eq(k, "p:8a5edab2:ipc:j");
        free(k);
}

Test(schedule, iso_times) {
        char buf[64];

        schedule_format_iso(0, buf, sizeof(buf));
        cr_assert_str_eq(buf, "1970-01-01T00:00:00.000Z");
        schedule_format_iso(1714564800123, buf, sizeof(buf));
        cr_assert_str_eq(buf, "2024-05-01T12:00:00.123Z");
        cr_assert_eq(iso("2024-05-01T12:00:00.123Z"), 1714564800123);
        cr_assert_eq(iso("2024-05-01T12:00:00Z"), 1714564800000);
        cr_assert_eq(iso("2024-05-01T14:00:00.5+02:00"), 1714564800500);
        cr_assert_eq(iso("2024-05-01T07:30:00.000-04:30"), 1714564800000);
        cr_assert_eq(iso("2024-02-29T00:00:00.000Z") + DAY_MS, iso("2024-03-01T00:00:00.000Z"));

        /* Round trip over a range of values, far future included. */
        for (int64_t ms = 1; ms < 4102444800000LL * 2; ms = ms * 3 + 7777) {
                int64_t back;

                schedule_format_iso(ms, buf, sizeof(buf));
                cr_assert_eq(schedule_parse_iso(buf, &back), 0, "%s", buf);
                cr_assert_eq(back, ms, "%s", buf);
        }

        int64_t dummy;
        const char *bad[] = { "", "2024-05-01", "2024-05-01 12:00:00Z", "2024-13-01T00:00:00Z",
                              "2024-05-01T12:00:00", "2024-05-01T12:00:00.Z", "2024-05-01T12:00:00Zjunk",
                              "2024-05-01T25:00:00Z", "yesterday", "2024-05-01T12:00:00+2", NULL };
        for (const char **b = bad; *b; b++)
                cr_assert_eq(schedule_parse_iso(*b, &dummy), -EINVAL, "'%s' must be refused", *b);
}

Test(schedule, output_preview) {
        struct json_object *o;
        char *p, big[700];

        cr_assert_null(schedule_output_preview(NULL));

        o = json_object_new_string("plain text");
        p = schedule_output_preview(o);
        cr_assert_str_eq(p, "plain text", "strings are not JSON-quoted");
        free(p);
        json_object_put(o);

        /* ... unless a NUL would cut them short: then as JSON, all of it. */
        o = json_object_new_string_len("a\0b", 3);
        p = schedule_output_preview(o);
        cr_assert_str_eq(p, "\"a\\u0000b\"");
        free(p);
        json_object_put(o);

        cr_assert_eq(json_parse("{\"a\":[1,2],\"b\":\"x/y\"}", 21, &o, NULL), 0);
        p = schedule_output_preview(o);
        cr_assert_str_eq(p, "{\"a\":[1,2],\"b\":\"x/y\"}");
        free(p);
        json_object_put(o);

        memset(big, 'a', 600);
        big[600] = '\0';
        o = json_object_new_string(big);
        p = schedule_output_preview(o);
        cr_assert_eq(strlen(p), 500 + strlen("…"));
        cr_assert(strncmp(p, big, 500) == 0);
        cr_assert_str_eq(p + 500, "…");
        free(p);
        json_object_put(o);

        /* Exactly 500 characters: no ellipsis. */
        big[500] = '\0';
        o = json_object_new_string(big);
        p = schedule_output_preview(o);
        cr_assert_str_eq(p, big);
        free(p);
        json_object_put(o);

        /* Characters, not bytes: 600 two-byte characters keep 500 of them. */
        char *u = malloc(1201);
        for (int i = 0; i < 600; i++)
                memcpy(u + 2 * i, "é", 2);
        u[1200] = '\0';
        o = json_object_new_string(u);
        p = schedule_output_preview(o);
        cr_assert_eq(strlen(p), 1000 + strlen("…"));
        cr_assert_str_eq(p + 1000, "…");
        free(p);
        free(u);
        json_object_put(o);
}

Test(schedule, truncate_utf8) {
        char *p;

        p = schedule_truncate_utf8("héllo", 2);
        cr_assert_str_eq(p, "h", "never cut inside a character");
        free(p);
        p = schedule_truncate_utf8("héllo", 3);
        cr_assert_str_eq(p, "hé");
        free(p);
        p = schedule_truncate_utf8("short", 100);
        cr_assert_str_eq(p, "short");
        free(p);
}

Test(schedule, catch_up_decision) {
        int64_t now = iso("2024-05-10T04:00:00.000Z"), missed = 0;

        utc();
        /* Down from 02:00 to 04:00 over a 03:00 job: one missed run. */
        cr_assert_eq(schedule_missed_occurrence("0 3 * * *", iso("2024-05-10T02:00:00.000Z"), now, &missed), 1);
        cr_assert_eq(missed, iso("2024-05-10T03:00:00.000Z"));
        /* Last ran at 03:00:00.250 (that run itself is not a missed one). */
        cr_assert_eq(schedule_missed_occurrence("0 3 * * *", iso("2024-05-10T03:00:00.250Z"), now, NULL), 0);
        /* The first occurrence is exactly now: due, counts. */
        cr_assert_eq(schedule_missed_occurrence("0 4 * * *", iso("2024-05-10T03:30:00.000Z"), now, &missed), 1);
        cr_assert_eq(missed, now);
        /* Yearly job last run 30 days ago whose occurrence was 20 days ago: outside the 14-day window. */
        cr_assert_eq(schedule_missed_occurrence("0 4 20 4 *", now - 30 * DAY_MS, now, NULL), 0);
        /* ... and one 10 days ago is inside it. */
        cr_assert_eq(schedule_missed_occurrence("0 4 30 4 *", now - 30 * DAY_MS, now, &missed), 1);
        cr_assert_eq(missed, iso("2024-04-30T04:00:00.000Z"));
        /* An anchor in the future (clock went back): nothing missed. */
        cr_assert_eq(schedule_missed_occurrence("* * * * *", now + HOUR_MS, now, NULL), 0);
        cr_assert_lt(schedule_missed_occurrence("not cron", 0, now, NULL), 0);
}

Test(schedule, cron_next_far_future) {
        int64_t next;

        utc();
        /* Beyond Node's 24.8-day timer limit, and beyond 2038: plain 64-bit arithmetic. */
        cr_assert_eq(schedule_cron_next("0 0 1 1 *", iso("2024-01-01T00:00:00.000Z"), &next), 0);
        cr_assert_eq(next, iso("2025-01-01T00:00:00.000Z"));
        cr_assert_eq(schedule_cron_next("0 0 1 1 *", iso("2099-06-01T00:00:00.000Z"), &next), 0);
        cr_assert_eq(next, iso("2100-01-01T00:00:00.000Z"));
        cr_assert_eq(schedule_cron_next("* * * * *", iso("2024-01-01T00:00:59.999Z"), &next), 0);
        cr_assert_eq(next, iso("2024-01-01T00:01:00.000Z"));
}

static struct json_object* entry(int64_t ts, const char *method, const char *status) {
        struct json_object *e = json_object_new_object();

        json_add_int64(e, "ts", ts);
        json_add_string(e, "jobId", "p:ipc:j");
        json_add_string(e, "method", method);
        json_add_int64(e, "durationMs", 5);
        json_add_string(e, "status", status);
        return e;
}

Test(schedule, history_append_read) {
        char *dir = tmpdir_new(), *path, *text;
        struct json_object *arr;

        cr_assert(asprintf(&path, "%s/executions.jsonl", dir) > 0);
        for (int i = 0; i < 10; i++) {
                struct json_object *e = entry(1000 + i, i % 2 ? "odd" : "even", i == 4 ? "error" : "success");
                cr_assert_eq(schedule_history_append(path, e, 10 << 20), 0);
                json_object_put(e);
        }
        /* Lines another writer mangled are skipped, not fatal. */
        FILE *f = fopen(path, "ae");
        fputs("{not json\n\n{\"ts\":\"x\",\"method\":\"even\"}\n", f);
        fclose(f);

        text = read_text(path);
        cr_assert(strncmp(text, "{\"ts\":1000,\"jobId\":\"p:ipc:j\",\"method\":\"even\",\"durationMs\":5,"
                          "\"status\":\"success\"}\n", 77) == 0, "one compact line per entry: %s", text);
        free(text);

        cr_assert_eq(schedule_history_read(path, "even", INT64_MIN, 0, 2000, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 5);
        int64_t prev = INT64_MAX;
        for (size_t i = 0; i < 5; i++) {
                int64_t ts;
                cr_assert_eq(json_get_int64(json_object_array_get_idx(arr, i), "ts", false, &ts), 0);
                cr_assert_lt(ts, prev, "newest first");
                prev = ts;
        }
        json_object_put(arr);

        cr_assert_eq(schedule_history_read(path, "odd", INT64_MIN, 2, 2000, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 2);
        json_object_put(arr);

        /* sinceTs is inclusive, as the reference's ts >= sinceTs. */
        cr_assert_eq(schedule_history_read(path, "even", 1004, 0, 2000, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 3);
        json_object_put(arr);

        cr_assert_eq(schedule_history_read(path, "nothing", INT64_MIN, 0, 2000, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 0);
        json_object_put(arr);

        /* No file yet: an empty history. */
        char *missing;
        cr_assert(asprintf(&missing, "%s/none.jsonl", dir) > 0);
        cr_assert_eq(schedule_history_read(missing, "x", INT64_MIN, 0, 2000, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 0);
        json_object_put(arr);
        free(missing);

        free(path);
        tmpdir_remove(dir);
}

Test(schedule, history_rotation) {
        char *dir = tmpdir_new(), *path, *p;
        struct stat st;

        cr_assert(asprintf(&path, "%s/executions.jsonl", dir) > 0);
        /* A tiny threshold: each append past 300 bytes rotates first. */
        for (int i = 0; i < 40; i++) {
                struct json_object *e = entry(i, "m", "success");
                cr_assert_eq(schedule_history_append(path, e, 300), 0);
                json_object_put(e);
        }
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_leq(st.st_size, 400);
        for (int i = 1; i <= 3; i++) {
                cr_assert(asprintf(&p, "%s/executions.%d.jsonl", dir, i) > 0);
                cr_assert_eq(stat(p, &st), 0, "%s kept", p);
                free(p);
        }
        cr_assert(asprintf(&p, "%s/executions.4.jsonl", dir) > 0);
        cr_assert_neq(stat(p, &st), 0, "only 3 archives are kept");
        free(p);

        /* The newest entry is in the active file; the oldest are gone. */
        struct json_object *arr;
        cr_assert_eq(schedule_history_read(path, "m", INT64_MIN, 1, 1000, &arr), 0);
        cr_assert_eq(json_object_get_int64(json_object_object_get(json_object_array_get_idx(arr, 0), "ts")), 39);
        json_object_put(arr);

        free(path);
        tmpdir_remove(dir);
}

Test(schedule, history_sweep) {
        char *dir = tmpdir_new(), *path, *before, *after;
        int64_t now = 100 * DAY_MS;
        struct json_object *arr;

        cr_assert(asprintf(&path, "%s/executions.jsonl", dir) > 0);
        /* 20 days old: dropped by the 14-day TTL. */
        for (int i = 0; i < 3; i++) {
                struct json_object *e = entry(now - 20 * DAY_MS + i, "old", "success");
                cr_assert_eq(schedule_history_append(path, e, 10 << 20), 0);
                json_object_put(e);
        }
        /* 600 recent runs of one method: the newest 500 stay. */
        for (int i = 0; i < 600; i++) {
                struct json_object *e = entry(now - HOUR_MS + i, "busy", "success");
                cr_assert_eq(schedule_history_append(path, e, 10 << 20), 0);
                json_object_put(e);
        }
        struct json_object *e = entry(now - 13 * DAY_MS, "quiet", "error");
        cr_assert_eq(schedule_history_append(path, e, 10 << 20), 0);
        json_object_put(e);

        cr_assert_eq(schedule_history_sweep(path, now), 0);
        before = read_text(path);
        cr_assert_null(strstr(before, "\"old\""), "the aged entries left the file");
        free(before);
        cr_assert_eq(schedule_history_read(path, "busy", INT64_MIN, 0, now, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 500);
        cr_assert_eq(json_object_get_int64(json_object_object_get(json_object_array_get_idx(arr, 499), "ts")),
                     now - HOUR_MS + 100, "the oldest 100 went");
        json_object_put(arr);
        cr_assert_eq(schedule_history_read(path, "quiet", INT64_MIN, 0, now, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 1);
        json_object_put(arr);

        /* A clean file is not rewritten. */
        before = read_text(path);
        cr_assert_eq(schedule_history_sweep(path, now), 0);
        after = read_text(path);
        cr_assert_str_eq(before, after);
        free(before);
        free(after);

        free(path);
        tmpdir_remove(dir);
}

/* A daemon that runs for weeks sweeps only once a day: reads skip what has aged past 14 days in between. */
Test(schedule, history_read_skips_entries_past_the_ttl) {
        char *dir = tmpdir_new(), *path;
        int64_t now = 100 * DAY_MS;
        struct json_object *arr;
        const int64_t ages[] = { 20 * DAY_MS, 14 * DAY_MS + 1, 14 * DAY_MS, 13 * DAY_MS, HOUR_MS };

        cr_assert(asprintf(&path, "%s/executions.jsonl", dir) > 0);
        for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++) {
                struct json_object *e = entry(now - ages[i], "m", "success");
                cr_assert_eq(schedule_history_append(path, e, 10 << 20), 0);
                json_object_put(e);
        }

        cr_assert_eq(schedule_history_read(path, "m", INT64_MIN, 0, now, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 3, "%s", json_object_to_json_string(arr));
        cr_assert_eq(json_object_get_int64(json_object_object_get(json_object_array_get_idx(arr, 2), "ts")),
                     now - 14 * DAY_MS, "exactly 14 days old is still in");
        json_object_put(arr);

        /* An older sinceTs does not bring them back; a newer one still narrows. */
        cr_assert_eq(schedule_history_read(path, "m", now - 30 * DAY_MS, 0, now, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 3);
        json_object_put(arr);
        cr_assert_eq(schedule_history_read(path, "m", now - DAY_MS, 0, now, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 1);
        json_object_put(arr);

        /* Half a day later, one more has aged out, with nothing written in between. */
        cr_assert_eq(schedule_history_read(path, "m", INT64_MIN, 0, now + 12 * HOUR_MS, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 2);
        json_object_put(arr);

        free(path);
        tmpdir_remove(dir);
}

/* ---- wall-clock steps and time-zone changes ---- */

Test(schedule, recompute_after_a_backward_step) {
        int64_t t0, next, due = 0;

        utc();
        /* Armed at 13:00 on May 1st: the next noon is May 2nd. */
        t0 = iso("2024-05-01T13:00:00.000Z");
        cr_assert_eq(schedule_cron_next("0 12 * * *", t0, &next), 0);
        cr_assert_eq(next, iso("2024-05-02T12:00:00.000Z"));

        /* The clock steps back a day, to 13:00 on April 30th: May 1st's noon comes first now. Kept as it was, the
         * absolute timer would skip it and fire two days of real time later. */
        cr_assert_eq(schedule_recompute_due("0 12 * * *", next, false, t0 - DAY_MS, &due), 1);
        cr_assert_eq(due, iso("2024-05-01T12:00:00.000Z"));
        cr_assert_lt(due, next, "moved earlier");

        /* A small step back, still after the last noon: the same due time, computed again. */
        cr_assert_eq(schedule_recompute_due("0 12 * * *", next, false, t0 - 30 * MIN_MS, &due), 1);
        cr_assert_eq(due, next);

        /* Every five minutes, stepped back 12 minutes from 10:03 (due 10:05): 09:55 is next. */
        cr_assert_eq(schedule_recompute_due("*/5 * * * *", iso("2024-05-01T10:05:00.000Z"), false,
                                            iso("2024-05-01T09:51:00.000Z"), &due), 1);
        cr_assert_eq(due, iso("2024-05-01T09:55:00.000Z"));
}

Test(schedule, recompute_after_a_forward_step) {
        int64_t t0 = iso("2024-05-01T13:00:00.000Z"), next = iso("2024-05-02T12:00:00.000Z"), due = 0;

        utc();
        /* Forward by an hour, short of the due time: recomputed from the new time, the same noon. */
        cr_assert_eq(schedule_recompute_due("0 12 * * *", next, false, t0 + HOUR_MS, &due), 1);
        cr_assert_eq(due, next);

        /* Every 5 minutes, forward from 10:01 to 10:03:30: still 10:05. */
        cr_assert_eq(schedule_recompute_due("*/5 * * * *", iso("2024-05-01T10:05:00.000Z"), false,
                                            iso("2024-05-01T10:03:30.000Z"), &due), 1);
        cr_assert_eq(due, iso("2024-05-01T10:05:00.000Z"));

        /* Forward by a day, over the due time: left alone, so the elapsed timer fires once now and re-arms from
         * the new time, instead of being moved to the day after and losing that run. */
        due = -1;
        cr_assert_eq(schedule_recompute_due("0 12 * * *", next, false, t0 + DAY_MS, &due), 0);
        cr_assert_eq(due, -1, "untouched");
        cr_assert_eq(schedule_recompute_due("0 12 * * *", next, false, next, &due), 0, "due this very ms");

        /* A pending catch-up keeps its time, whichever way the clock went. */
        cr_assert_eq(schedule_recompute_due("0 12 * * *", t0 + 15000, true, t0 - DAY_MS, &due), 0);
        cr_assert_eq(schedule_recompute_due("0 12 * * *", t0 + 15000, true, t0 + HOUR_MS, &due), 0);

        /* Not armed (no further occurrence before): armed if there is one now. */
        cr_assert_eq(schedule_recompute_due("0 12 * * *", 0, false, t0, &due), 1);
        cr_assert_eq(due, next);
        cr_assert_eq(schedule_recompute_due("0 12 31 2 *", 0, false, t0, &due), -ENOENT);
}

/* ---- a real Manager ---- */

static Manager* manager_in(const char *home) {
        Manager *m = NULL;

        setenv("HOME", home, 1);
        setenv("PHOTON_HOME", home, 1);
        unsetenv("PHOTON_DIR");
        cr_assert_eq(manager_new(&(ManagerConfig) { .bus_mode = BUS_MODE_NONE }, &m), 0);
        return m;
}

static struct json_object* find_job(struct json_object *arr, const char *id) {
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                struct json_object *j = json_object_array_get_idx(arr, i);
                if (streq_ptr(json_get_string(j, "id"), id))
                        return j;
        }
        return NULL;
}

Test(schedule, reference_files_load_and_run) {
        char *home = tmpdir_new(), *dir, *ref, *bad, *lenient, *other, *hist;
        char *bad_text = "{\"id\": \"p:ipc:bad\", \"method\": ";
        char *lenient_text = "{\"id\":\"p:ipc:lenient\",\"method\":\"m\",\"cron\":\"5abc * * * *\",\"photonName\":\"p\","
                             "\"source\":\"ipc\",\"status\":\"active\"}";
        struct json_object *arr, *job, *file;
        Manager *m;

        utc();
        limits_reset();
        cr_assert(asprintf(&dir, "%s/.photon/.data/p/schedules", home) > 0);
        cr_assert(asprintf(&ref, "%s/nightly.json", dir) > 0);
        cr_assert(asprintf(&bad, "%s/bad.json", dir) > 0);
        cr_assert(asprintf(&lenient, "%s/lenient.json", dir) > 0);
        cr_assert(asprintf(&other, "%s/provider.json", dir) > 0);
        cr_assert(asprintf(&hist, "%s/executions.jsonl", dir) > 0);

        /* As the reference daemon writes it. */
        write_text(ref,
                   "{\n  \"id\": \"p:ipc:nightly\",\n  \"method\": \"sweep\",\n  \"args\": {\n    \"deep\": true\n  },\n"
                   "  \"cron\": \"0 3 * * *\",\n  \"requiredConfig\": [\"API_KEY\"],\n  \"photonName\": \"p\",\n"
                   "  \"source\": \"ipc\",\n  \"status\": \"active\",\n  \"createdAt\": \"2024-05-01T10:00:00.000Z\",\n"
                   "  \"createdBy\": \"cli-42-deadbeef\",\n  \"executionCount\": 7,\n"
                   "  \"lastExecutionAt\": \"2099-05-09T03:00:00.012Z\",\n  \"lastAttemptAt\": \"2099-05-09T03:00:00.012Z\",\n"
                   "  \"lastStatus\": \"success\",\n  \"lastError\": null,\n  \"consecutiveFailures\": 0\n}");
        write_text(bad, bad_text);
        write_text(lenient, lenient_text);
        write_text(other, "{\"id\":\"x\",\"method\":\"m\",\"cron\":\"* * * * *\",\"source\":\"schedule-provider\"}");

        m = manager_in(home);
        cr_assert_eq(scheduler_load(m->scheduler), 0);
        cr_assert_eq(scheduler_count(m->scheduler), 1, "only the good IPC file is a job");

        cr_assert_eq(scheduler_list(m->scheduler, &arr), 0);
        job = find_job(arr, "p:ipc:nightly");
        cr_assert_not_null(job);
        cr_assert_str_eq(json_get_string(job, "method"), "sweep");
        cr_assert_str_eq(json_get_string(job, "cron"), "0 3 * * *");
        cr_assert_eq(json_object_get_int64(json_object_object_get(job, "runCount")), 7);
        cr_assert_eq(json_object_get_int64(json_object_object_get(job, "createdAt")), iso("2024-05-01T10:00:00.000Z"));
        cr_assert_str_eq(json_get_string(job, "createdBy"), "cli-42-deadbeef");
        cr_assert(json_object_get_boolean(json_object_object_get(json_object_object_get(job, "args"), "deep")));
        cr_assert(json_object_object_get_ex(job, "nextRun", NULL));
        json_object_put(arr);

        /* Corrupt and lenient files stay exactly as they were. */
        char *t = read_text(bad);
        cr_assert_str_eq(t, bad_text);
        free(t);
        t = read_text(lenient);
        cr_assert_str_eq(t, lenient_text);
        free(t);

        /* No provider, no handler: the run fails at once, and everything records it. */
        cr_assert_eq(scheduler_run_job(m->scheduler, "nightly", NULL, NULL, NULL), 0);
        cr_assert_eq(scheduler_running(m->scheduler), 0);
        cr_assert_eq(scheduler_list(m->scheduler, &arr), 0);
        job = find_job(arr, "p:ipc:nightly");
        cr_assert_str_eq(json_get_string(job, "lastStatus"), "error");
        /* Worded as the command request words it (one vocabulary, DispatchError). */
        cr_assert_not_null(strstr(json_get_string(job, "lastError"), "Cannot initialize photon 'p': no provider is "
                                  "connected"));
        cr_assert_not_null(strstr(json_get_string(job, "lastError"), "provide"));
        cr_assert_eq(json_object_get_int64(json_object_object_get(job, "consecutiveFailures")), 1);
        cr_assert_eq(json_object_get_int64(json_object_object_get(job, "runCount")), 7);
        json_object_put(arr);

        /* The file is rewritten with the reference's fields; unknown ones (requiredConfig's content) survive. It is
         * written at the end of the event-loop iteration, before the run's event leaves. */
        scheduler_flush(m->scheduler);
        t = read_text(ref);
        cr_assert_eq(json_parse(t, strlen(t), &file, NULL), 0);
        free(t);
        cr_assert_str_eq(json_get_string(file, "id"), "p:ipc:nightly");
        cr_assert_str_eq(json_get_string(file, "source"), "ipc");
        cr_assert_str_eq(json_get_string(file, "status"), "active");
        cr_assert_str_eq(json_get_string(file, "lastStatus"), "error");
        cr_assert_str_eq(json_get_string(file, "createdAt"), "2024-05-01T10:00:00.000Z");
        cr_assert_str_eq(json_get_string(file, "lastExecutionAt"), "2099-05-09T03:00:00.012Z");
        cr_assert_eq(json_object_get_int64(json_object_object_get(file, "executionCount")), 7);
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(
                                 json_object_object_get(file, "requiredConfig"), 0)), "API_KEY");
        cr_assert_eq(schedule_parse_iso(json_get_string(file, "lastAttemptAt"), &(int64_t) { 0 }), 0);
        json_object_put(file);

        cr_assert_eq(schedule_history_read(hist, "sweep", INT64_MIN, 0, (int64_t) time(NULL) * 1000, &arr), 0);
        cr_assert_eq(json_object_array_length(arr), 1);
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(arr, 0), "status"), "error");
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(arr, 0), "jobId"), "p:ipc:nightly");
        json_object_put(arr);

        cr_assert_eq(scheduler_run_job(m->scheduler, "nope", NULL, NULL, NULL), -ENOENT);
        cr_assert_eq(scheduler_unschedule(m->scheduler, "nope"), -ENOENT);
        cr_assert_eq(scheduler_unschedule(m->scheduler, "p:ipc:nightly"), 0);
        cr_assert_eq(scheduler_count(m->scheduler), 0);
        cr_assert_neq(access(ref, F_OK), 0, "unschedule removes the file");
        cr_assert_eq(access(bad, F_OK), 0);

        manager_free(m);
        free(dir);
        free(ref);
        free(bad);
        free(lenient);
        free(other);
        free(hist);
        tmpdir_remove(home);
}

/* What the scheduler tells its owner (SchedulerHooks): a scheduler of a real Manager, with hooks that record. */
static struct {
        unsigned counts_changed, job_finished, flush_needed;
        char last[256];         /* "id status" of the last job_finished */
        int64_t duration_ms;
} heard;

static void heard_counts_changed(void *userdata) {
        cr_assert_eq(userdata, &heard);
        heard.counts_changed++;
}

static void heard_flush_needed(void *userdata) {
        heard.flush_needed++;
}

static SchedulerConfig config_of(Manager *m) {
        return (SchedulerConfig) {
                .event = m->event,
                .channels = m->channels,
                .dispatcher = m->dispatcher,
                .jobs_base_dir = m->jobs_base_dir,
        };
}

static void heard_job_finished(void *userdata, const char *id, const char *status, int64_t duration_ms) {
        heard.job_finished++;
        snprintf(heard.last, sizeof(heard.last), "%s %s", id, status);
        heard.duration_ms = duration_ms;
}

Test(schedule, hooks_hear_jobs_and_runs) {
        char *home = tmpdir_new(), *path;
        SchedulerConfig config;
        unsigned counts;
        Manager *m;

        utc();
        limits_reset();
        heard = (typeof(heard)) {};
        cr_assert(asprintf(&path, "%s/.photon/.data/p/schedules/nightly.json", home) > 0);
        write_text(path, "{\"id\":\"p:ipc:nightly\",\"method\":\"sweep\",\"cron\":\"0 3 * * *\","
                         "\"photonName\":\"p\",\"source\":\"ipc\",\"status\":\"active\"}");

        m = manager_in(home);
        config = config_of(m);
        m->scheduler = scheduler_free(m->scheduler);
        cr_assert_eq(scheduler_new(&config, &(SchedulerHooks) {
                                           .counts_changed = heard_counts_changed,
                                           .job_finished = heard_job_finished,
                                           .flush_needed = heard_flush_needed,
                                           .userdata = &heard,
                                   }, &m->scheduler), 0);
        cr_assert_eq(scheduler_load(m->scheduler), 0);
        cr_assert_eq(scheduler_count(m->scheduler), 1);
        cr_assert_geq(heard.counts_changed, 1, "a loaded job is counted");

        /* No provider, no handler: the run fails at once; JobFinished waits for the flush that writes its file. */
        cr_assert_eq(scheduler_run_job(m->scheduler, "nightly", NULL, NULL, NULL), 0);
        cr_assert_eq(heard.job_finished, 0, "announced only once the job file is written");
        cr_assert_gt(heard.flush_needed, 0, "the owner is asked for the flush that writes it");
        scheduler_flush(m->scheduler);
        cr_assert_eq(heard.job_finished, 1);
        cr_assert_str_eq(heard.last, "p:ipc:nightly error");
        cr_assert_geq(heard.duration_ms, 0);
        scheduler_flush(m->scheduler);
        cr_assert_eq(heard.job_finished, 1, "once");

        counts = heard.counts_changed;
        cr_assert_eq(scheduler_unschedule(m->scheduler, "p:ipc:nightly"), 0);
        cr_assert_gt(heard.counts_changed, counts, "a removed job is counted");

        /* Nobody listening is fine too. */
        m->scheduler = scheduler_free(m->scheduler);
        cr_assert_eq(scheduler_new(&config, NULL, &m->scheduler), 0);
        write_text(path, "{\"id\":\"p:ipc:nightly\",\"method\":\"sweep\",\"cron\":\"0 3 * * *\","
                         "\"photonName\":\"p\",\"source\":\"ipc\",\"status\":\"active\"}");
        cr_assert_eq(scheduler_load(m->scheduler), 0);
        cr_assert_eq(scheduler_run_job(m->scheduler, "nightly", NULL, NULL, NULL), 0);
        scheduler_flush(m->scheduler);
        cr_assert_eq(heard.job_finished, 1);

        manager_free(m);
        free(path);
        tmpdir_remove(home);
}

/* A run's counters are written durably (the file before its rename, the directory after), and so is the removal
 * by unschedule: after a power loss a confirmed job is there with its last run, and a removed one stays gone. */
Test(schedule, job_file_writes_are_durable) {
        char *home = tmpdir_new(), *dir, *path, *tmp_prefix, *real;
        Manager *m;

        utc();
        limits_reset();
        cr_assert(asprintf(&dir, "%s/.photon/.data/p/schedules", home) > 0);
        cr_assert(asprintf(&path, "%s/nightly.json", dir) > 0);
        write_text(path, "{\"id\":\"p:ipc:nightly\",\"method\":\"sweep\",\"cron\":\"0 3 * * *\","
                         "\"photonName\":\"p\",\"source\":\"ipc\",\"status\":\"active\"}");
        real = realpath(dir, NULL);
        cr_assert_not_null(real);
        cr_assert(asprintf(&tmp_prefix, "%s/nightly.json.tmp.", real) > 0);

        m = manager_in(home);
        cr_assert_eq(scheduler_load(m->scheduler), 0);
        cr_assert_eq(scheduler_count(m->scheduler), 1);

        /* No handler: the run fails at once. Its counters are written with the flush at the end of the event-loop
         * iteration, before any reply or event leaves, not inside the run (a timer callback). */
        fsync_spy_reset();
        cr_assert_eq(scheduler_run_job(m->scheduler, "nightly", NULL, NULL, NULL), 0);
        cr_assert(!fsync_spy_saw(tmp_prefix, true), "no disk write inside the run");
        cr_assert(scheduler_unsaved(m->scheduler));
        cr_assert_eq(manager_flush(m), 0);
        cr_assert(!scheduler_unsaved(m->scheduler));
        if (!fsync_spy_saw(tmp_prefix, true) || !fsync_spy_saw(real, false))
                fsync_spy_dump();
        cr_assert(fsync_spy_saw(tmp_prefix, true), "the job file's data is synced before the rename");
        cr_assert(fsync_spy_saw(real, false), "the directory is synced after the rename");
        char *t = read_text(path);
        cr_assert_not_null(strstr(t, "\"consecutiveFailures\": 1"), "%s", t);
        free(t);

        fsync_spy_reset();
        cr_assert_eq(scheduler_unschedule(m->scheduler, "nightly"), 0);
        cr_assert_neq(access(path, F_OK), 0);
        cr_assert(fsync_spy_saw(real, false), "the unlink is made durable");

        manager_free(m);
        fsync_spy_reset();
        free(real);
        free(tmp_prefix);
        free(path);
        free(dir);
        tmpdir_remove(home);
}

/* A run that ended in the last iteration before the loop stopped is not lost: freeing the scheduler writes it. */
Test(schedule, pending_job_writes_survive_shutdown) {
        char *home = tmpdir_new(), *path;
        Manager *m;

        utc();
        limits_reset();
        cr_assert(asprintf(&path, "%s/.photon/.data/p/schedules/nightly.json", home) > 0);
        write_text(path, "{\"id\":\"p:ipc:nightly\",\"method\":\"sweep\",\"cron\":\"0 3 * * *\","
                         "\"photonName\":\"p\",\"source\":\"ipc\",\"status\":\"active\"}");

        m = manager_in(home);
        cr_assert_eq(scheduler_load(m->scheduler), 0);
        cr_assert_eq(scheduler_run_job(m->scheduler, "nightly", NULL, NULL, NULL), 0);
        cr_assert(scheduler_unsaved(m->scheduler));
        manager_free(m);

        char *t = read_text(path);
        cr_assert_not_null(strstr(t, "\"consecutiveFailures\": 1"), "%s", t);
        cr_assert_not_null(strstr(t, "\"lastStatus\": \"error\""), "%s", t);
        free(t);
        free(path);
        tmpdir_remove(home);
}

/* The daily sweep covers every base's histories, as the one at start does. */
Test(schedule, periodic_history_sweep) {
        char *home = tmpdir_new(), *hist, *t;
        int64_t now = (int64_t) time(NULL) * 1000;
        Manager *m;

        utc();
        limits_reset();
        cr_assert(asprintf(&hist, "%s/.photon/.data/p/schedules/executions.jsonl", home) > 0);
        m = manager_in(home);
        cr_assert_eq(scheduler_load(m->scheduler), 0);
        cr_assert_eq(mkdir_parents_and_self(dirname(strdupa(hist)), 0755), 0);

        /* Written while photond runs: the start sweep is long past. */
        for (int i = 0; i < 3; i++) {
                struct json_object *e = entry(now - 20 * DAY_MS + i, "old", "success");
                cr_assert_eq(schedule_history_append(hist, e, 10 << 20), 0);
                json_object_put(e);
        }
        struct json_object *e = entry(now - HOUR_MS, "new", "success");
        cr_assert_eq(schedule_history_append(hist, e, 10 << 20), 0);
        json_object_put(e);

        scheduler_sweep_history(m->scheduler);
        t = read_text(hist);
        cr_assert_null(strstr(t, "\"old\""), "%s", t);
        cr_assert_not_null(strstr(t, "\"new\""), "%s", t);
        free(t);

        manager_free(m);
        free(hist);
        tmpdir_remove(home);
}

/* ---- a scheduler without a Manager, on a loop of its own; a run_job waiter that is no Client ---- */

typedef struct Waited {
        unsigned n;
        char waiter_id[32];
        bool ran, success;
        char *result;           /* compact JSON of what the method returned, or NULL */
        char *reason;
        uint64_t run_count;
} Waited;

static void on_waited(void *waiter, const char *waiter_id, const JobRunResult *result) {
        Waited *w = waiter;

        w->n++;
        snprintf(w->waiter_id, sizeof(w->waiter_id), "%s", waiter_id);
        w->ran = result->ran;
        w->success = result->success;
        w->run_count = result->run_count;
        free(w->result);
        free(w->reason);
        w->result = result->result ? strdup(json_object_to_json_string_ext(result->result, JSON_FORMAT_FLAGS)) : NULL;
        w->reason = result->reason ? strdup(result->reason) : NULL;
}

typedef struct Own {
        char *home, *handlers;
        sd_event *event;
        Channels *channels;
        Dispatcher *dispatcher;
        Scheduler *s;
} Own;

/* photon p's handler answers {"method": <method>} after a moment, so that a run is seen running. */
static Own own_new(void) {
        Own o = { .home = tmpdir_new() };
        char *path;
        FILE *f;

        utc();
        limits_reset();
        heard = (typeof(heard)) {};
        cr_assert(asprintf(&o.handlers, "%s/handlers", o.home) > 0);
        cr_assert_eq(mkdir(o.handlers, 0755), 0);
        cr_assert(asprintf(&path, "%s/p", o.handlers) > 0);
        f = fopen(path, "we");
        cr_assert(f);
        fputs("#!/bin/sh\nsleep 0.2\nprintf '{\"method\":\"%s\"}' \"$1\"\n", f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(chmod(path, 0755), 0);
        free(path);

        cr_assert_eq(sd_event_new(&o.event), 0);
        cr_assert_eq(channels_new(NULL, &o.channels), 0);
        cr_assert_eq(dispatcher_new(&(DispatcherConfig) {
                                            .event = o.event, .channels = o.channels, .handlers_dir = o.handlers,
                                    }, NULL, &o.dispatcher), 0);
        cr_assert_eq(scheduler_new(&(SchedulerConfig) {
                                           .event = o.event,
                                           .channels = o.channels,
                                           .dispatcher = o.dispatcher,
                                           .jobs_base_dir = o.home,
                                   }, &(SchedulerHooks) {
                                           .counts_changed = heard_counts_changed,
                                           .job_finished = heard_job_finished,
                                           .flush_needed = heard_flush_needed,
                                           .userdata = &heard,
                                   }, &o.s), 0);
        return o;
}

static void own_free(Own *o) {
        o->s = scheduler_free(o->s);
        o->dispatcher = dispatcher_free(o->dispatcher);
        o->channels = channels_free(o->channels);
        o->event = sd_event_unref(o->event);
        free(o->handlers);
        tmpdir_remove(o->home);
}

static void own_run_until(Own *o, const unsigned *counter, unsigned want) {
        for (int i = 0; *counter < want; i++) {
                cr_assert(i < 500, "nothing within 5 s");
                cr_assert(sd_event_run(o->event, 10 * USEC_PER_MSEC) >= 0);
        }
}

#define SPEC(job_id_, cron_)                                                                    \
        (&(const JobSpec) { .photon = "p", .job_id = (job_id_), .method = "sweep", .cron = (cron_), \
                            .created_by = "s1" })

Test(schedule, typed_requests_without_a_manager) {
        Own o = own_new();
        _cleanup_free_ char *reason = NULL, *marker = NULL;
        struct json_object *ids = NULL, *big;
        JobInfo job;

        cr_assert_eq(scheduler_schedule(o.s, SPEC("nightly", "0 3 * * *"), &job, &reason), 0);
        cr_assert_null(reason);
        cr_assert_str_eq(job.id, "p:ipc:nightly");
        cr_assert(job.enabled && !job.paused && !job.running);
        cr_assert_gt(job.next_run, 0);
        cr_assert_eq(scheduler_count(o.s), 1);
        cr_assert_gt(heard.counts_changed, 0);

        /* Refusals come with their one wording; caps without, for limit_error(). */
        cr_assert_eq(scheduler_schedule(o.s, SPEC("bad", "61 * * * *"), NULL, &reason), -EINVAL);
        cr_assert(reason && strstr(reason, "Invalid cron expression: "), "%s", reason);
        reason = mfree(reason);
        limits.MAX_JOBS = 1;
        cr_assert_eq(scheduler_schedule(o.s, SPEC("second", "0 4 * * *"), NULL, &reason), -ENOSPC);
        cr_assert_null(reason);
        cr_assert_eq(scheduler_schedule(o.s, SPEC("nightly", "0 4 * * *"), &job, &reason), 0,
                     "rescheduling is no new job");
        limits_reset();
        limits.MAX_JOB_ARGS_BYTES = 8;
        big = json_tokener_parse("{\"a\":\"0123456789\"}");
        cr_assert_eq(scheduler_schedule(o.s, &(JobSpec) { .photon = "p", .job_id = "big", .method = "m",
                                                          .cron = "* * * * *", .args = big }, NULL, &reason), -E2BIG);
        cr_assert_null(reason);
        json_object_put(big);
        limits_reset();
        cr_assert(asprintf(&marker, "%s/.photon-no-host", o.home) > 0);
        write_text(marker, "");
        cr_assert_eq(scheduler_schedule(o.s, SPEC("other", "0 5 * * *"), NULL, &reason), -EPERM);
        cr_assert(reason && strstr(reason, "host-disabled: "), "%s", reason);
        cr_assert_eq(unlink(marker), 0);
        cr_assert_eq(scheduler_schedule(o.s, SPEC("../x", "0 5 * * *"), NULL, NULL), -EINVAL);

        /* Switches: the matching jobs, or -ENOENT. */
        cr_assert_eq(scheduler_switch(o.s, "p", "nope", JOB_SWITCH_PAUSE, &ids), -ENOENT);
        cr_assert_eq(scheduler_switch(o.s, "p", "sweep", JOB_SWITCH_PAUSE, &ids), 0);
        cr_assert_eq(json_object_array_length(ids), 1);
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(ids, 0)), "p:ipc:nightly");
        json_object_put(ids);
        cr_assert_eq(scheduler_get(o.s, "nightly", &job), 0);
        cr_assert(job.paused);
        cr_assert_eq(job.next_run, 0, "a paused job is not armed");
        cr_assert_eq(scheduler_get(o.s, "nope", &job), -ENOENT);

        own_free(&o);
}

Test(schedule, a_run_job_waiter_hears_its_run) {
        Own o = own_new();
        Waited w = {}, other = {};
        struct json_object *entries;
        JobInfo job;

        cr_assert_eq(scheduler_schedule(o.s, SPEC("nightly", "0 3 * * *"), NULL, NULL), 0);
        cr_assert_eq(scheduler_run_job(o.s, "nightly", on_waited, &w, "r1"), 0);
        cr_assert_eq(scheduler_get(o.s, "nightly", &job), 0);
        cr_assert(job.running);
        cr_assert_eq(scheduler_run_job(o.s, "nightly", on_waited, &other, "r2"), -EBUSY);
        cr_assert_eq(scheduler_run_job(o.s, "nope", on_waited, &other, "r3"), -ENOENT);
        cr_assert_eq(w.n, 0, "the waiter hears of the run when it ends");

        own_run_until(&o, &w.n, 1);
        cr_assert_str_eq(w.waiter_id, "r1");
        cr_assert(w.ran && w.success, "%s", w.reason);
        cr_assert_str_eq(w.result, "{\"method\":\"sweep\"}");
        cr_assert_eq(w.run_count, 1);
        cr_assert_eq(other.n, 0);
        scheduler_flush(o.s);
        cr_assert_str_eq(heard.last, "p:ipc:nightly success");

        cr_assert_eq(scheduler_history(o.s, "p", "sweep", NULL, INT64_MIN, 0, &entries), 0);
        cr_assert_eq(json_object_array_length(entries), 1);
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(entries, 0), "status"), "success");
        json_object_put(entries);

        /* A waiter that went away hears nothing; the run goes on. */
        cr_assert_eq(scheduler_run_job(o.s, "nightly", on_waited, &w, "r4"), 0);
        scheduler_waiter_gone(o.s, &w);
        for (int i = 0; scheduler_running(o.s) > 0; i++) {
                cr_assert(i < 500);
                cr_assert(sd_event_run(o.event, 10 * USEC_PER_MSEC) >= 0);
        }
        cr_assert_eq(w.n, 1);
        scheduler_flush(o.s);
        cr_assert_eq(heard.job_finished, 2, "the run happened");

        /* Unscheduled while it runs: the waiter hears that, at once. */
        cr_assert_eq(scheduler_run_job(o.s, "nightly", on_waited, &w, "r5"), 0);
        cr_assert_eq(scheduler_unschedule(o.s, "nightly"), 0);
        cr_assert_eq(w.n, 2);
        cr_assert_str_eq(w.waiter_id, "r5");
        cr_assert(!w.ran && !w.success);
        cr_assert_str_eq(w.reason, "The job was unscheduled while it ran");

        own_free(&o);
        free(w.result);
        free(w.reason);
}

/* scheduler_get_stats(): what GET /metrics shows. Three jobs fall due on one minute boundary, which the test clock
 * hook puts 1.5 s ahead: one with a handler (fired, succeeds), one without (fired, fails) and one whose run_job
 * run still goes on (skipped). */
Test(schedule, stats_count_runs_and_their_lateness, .timeout = 60) {
        int64_t real = now_ms(), target = real + 1500, offset = (target / 60000 + 1) * 60000 - target;
        _cleanup_free_ char *env = NULL, *path = NULL;
        Waited w = {};
        SchedulerStats st;
        Own o;
        FILE *f;

        cr_assert(asprintf(&env, "%" PRIi64, offset) > 0);
        cr_assert_eq(setenv("PHOTOND_TEST_CLOCK_OFFSET_MS", env, 1), 0);
        o = own_new();
        cr_assert_eq(unsetenv("PHOTOND_TEST_CLOCK_OFFSET_MS"), 0);
        cr_assert(asprintf(&path, "%s/slow", o.handlers) > 0);
        f = fopen(path, "we");
        cr_assert(f);
        fputs("#!/bin/sh\nsleep 3\necho '\"done\"'\n", f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(chmod(path, 0755), 0);

        scheduler_get_stats(o.s, &st);
        cr_assert_eq(st.fired + st.run_now + st.succeeded + st.failed + st.skipped + st.lateness->count, 0);

        cr_assert_eq(scheduler_schedule(o.s, &(JobSpec) { .photon = "p", .job_id = "ok", .method = "sweep",
                                                          .cron = "* * * * *" }, NULL, NULL), 0);
        cr_assert_eq(scheduler_schedule(o.s, &(JobSpec) { .photon = "nobody", .job_id = "fails", .method = "m",
                                                          .cron = "* * * * *" }, NULL, NULL), 0);
        cr_assert_eq(scheduler_schedule(o.s, &(JobSpec) { .photon = "slow", .job_id = "busy", .method = "m",
                                                          .cron = "* * * * *" }, NULL, NULL), 0);
        cr_assert_eq(scheduler_run_job(o.s, "busy", on_waited, &w, "r"), 0);
        scheduler_get_stats(o.s, &st);
        cr_assert_eq(st.jobs, 3);
        cr_assert_eq(st.run_now, 1);
        cr_assert_eq(st.running, 1);
        cr_assert_eq(st.fired, 0);

        own_run_until(&o, &w.n, 1);
        cr_assert(w.success, "%s", w.reason);
        for (int i = 0; scheduler_running(o.s) > 0; i++) {
                cr_assert(i < 500);
                cr_assert(sd_event_run(o.event, 10 * USEC_PER_MSEC) >= 0);
        }
        scheduler_get_stats(o.s, &st);
        cr_assert_eq(st.fired, 2, "the two that were not running");
        cr_assert_eq(st.skipped, 1, "the one still running from run_job");
        cr_assert_eq(st.succeeded, 2, "the run_job run and the one with a handler");
        cr_assert_eq(st.failed, 1, "the one without");
        cr_assert_eq(st.running, 0);
        cr_assert_eq(st.lateness->count, 2, "the timer runs");
        cr_assert_lt(st.lateness->sum_usec, 2 * 5 * USEC_PER_SEC,
                     "they started on time, give or take a loaded machine");

        own_free(&o);
        free(w.result);
        free(w.reason);
}

/* ---- the control front end's job requests (photond-control-jobs.c), as a Client sends them ---- */

/* The reply with that id, read as the peer of fd reads it, running the loop until it arrives. */
static struct json_object* reply_of(Manager *m, int fd, const char *id) {
        static char buf[65536];
        static size_t len;

        for (int i = 0; i < 500; i++) {
                char *nl;
                ssize_t n;

                while ((nl = memchr(buf, '\n', len))) {
                        struct json_object *o = NULL;
                        size_t l = nl - buf + 1;

                        *nl = '\0';
                        cr_assert_eq(json_parse(buf, l - 1, &o, NULL), 0, "not JSON: %s", buf);
                        memmove(buf, buf + l, len - l);
                        len -= l;
                        if (streq_ptr(json_get_string(o, "id"), id))
                                return o;
                        json_object_put(o);
                }
                cr_assert(sd_event_run(m->event, 10 * USEC_PER_MSEC) >= 0);
                n = recv(fd, buf + len, sizeof(buf) - len, MSG_DONTWAIT);
                if (n > 0)
                        len += n;
        }
        cr_assert_fail("no reply '%s' within 5 s", id);
        return NULL;
}

Test(schedule, requests_through_the_control_front_end) {
        char *home = tmpdir_new(), *handler;
        struct json_object *o;
        int fds[2];
        Manager *m;
        Client *c;
        FILE *f;

        utc();
        limits_reset();
        m = manager_in(home);
        /* A run's event reserves eventIds, which the replies after it wait to see saved. */
        cr_assert_eq(mkdir_parents_and_self(m->state_dir, 0700), 0);
        cr_assert(asprintf(&handler, "%s/handlers", home) > 0);
        cr_assert_eq(mkdir(handler, 0755), 0);
        free(handler);
        cr_assert(asprintf(&handler, "%s/handlers/p", home) > 0);
        f = fopen(handler, "we");
        cr_assert(f);
        fputs("#!/bin/sh\nsleep 0.2\necho '\"swept\"'\n", f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(chmod(handler, 0755), 0);
        free(handler);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        cr_assert_eq(client_new(m, fds[0], &c), 0);

        test_request(m, c, "{\"type\":\"schedule\",\"id\":\"s1\",\"photonName\":\"p\","
                                        "\"jobId\":\"nightly\",\"method\":\"sweep\",\"cron\":\"0 3 * * *\","
                                        "\"args\":{\"deep\":true}}");
        o = reply_of(m, fds[1], "s1");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert(jbool(o, "data.scheduled"));
        cr_assert_str_eq(jstr(o, "data.jobId"), "p:ipc:nightly");
        cr_assert_gt(jint(o, "data.nextRun"), 0);
        json_object_put(o);

        /* A refusal is a result that says why; a cap is an error with its suggestion. */
        test_request(m, c, "{\"type\":\"schedule\",\"id\":\"s2\",\"photonName\":\"p\",\"jobId\":\"bad\","
                                        "\"method\":\"sweep\",\"cron\":\"61 * * * *\"}");
        o = reply_of(m, fds[1], "s2");
        cr_assert(!jbool(o, "success"));
        cr_assert(!jbool(o, "data.scheduled"));
        cr_assert(strstr(jstr(o, "data.reason"), "Invalid cron expression: "), "%s", jstr(o, "data.reason"));
        json_object_put(o);
        limits.MAX_JOBS = 1;
        test_request(m, c, "{\"type\":\"schedule\",\"id\":\"s3\",\"photonName\":\"p\",\"jobId\":\"more\","
                                        "\"method\":\"sweep\",\"cron\":\"0 4 * * *\"}");
        o = reply_of(m, fds[1], "s3");
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "(PHOTOND_MAX_JOBS)"), "%s", jstr(o, "error"));
        json_object_put(o);
        limits_reset();

        test_request(m, c, "{\"type\":\"pause_schedule\",\"id\":\"p1\",\"photonName\":\"p\","
                                        "\"method\":\"nope\"}");
        o = reply_of(m, fds[1], "p1");
        cr_assert(!jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.reason"), "No scheduled job of photon 'p' runs method 'nope'");
        json_object_put(o);

        /* run_job answers when the run has ended; meanwhile another is refused. */
        test_request(m, c, "{\"type\":\"run_job\",\"id\":\"r1\",\"jobId\":\"nightly\"}");
        test_request(m, c, "{\"type\":\"run_job\",\"id\":\"r2\",\"jobId\":\"nightly\"}");
        o = reply_of(m, fds[1], "r2");
        cr_assert(!jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.reason"), "Job p:ipc:nightly is already running");
        json_object_put(o);
        o = reply_of(m, fds[1], "r1");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.jobId"), "p:ipc:nightly");
        cr_assert_str_eq(jstr(o, "data.status"), "success");
        cr_assert_str_eq(jstr(o, "data.result"), "swept");
        cr_assert_eq(jint(o, "data.runCount"), 1);
        json_object_put(o);

        test_request(m, c, "{\"type\":\"get_execution_history\",\"id\":\"h1\",\"photonName\":\"p\","
                                        "\"method\":\"sweep\"}");
        o = reply_of(m, fds[1], "h1");
        cr_assert(jbool(o, "success"));
        cr_assert_str_eq(jstr(o, "data.entries.0.status"), "success");
        json_object_put(o);

        test_request(m, c, "{\"type\":\"run_job\",\"id\":\"r3\",\"jobId\":\"nope\"}");
        o = reply_of(m, fds[1], "r3");
        cr_assert_str_eq(jstr(o, "data.reason"), "No scheduled job 'nope'");
        json_object_put(o);

        manager_free(m);
        safe_close(fds[1]);
        tmpdir_remove(home);
}
