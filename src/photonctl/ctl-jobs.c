/* SPDX-License-Identifier: MIT */

/* photonctl verbs for scheduled jobs: schedule, unschedule, jobs, run-job, history, and cron (which needs no
 * daemon: it shows when an expression would fire, in the local time zone). */

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cron.h"
#include "ctl-util.h"
#include "log.h"
#include "string-util.h"

#define CRON_MAX_COUNT 1000

static int parse_count_option(int argc, char *argv[], const char *name, uint64_t def, uint64_t max,
                              uint64_t *ret, int *ret_first_arg) {
        const struct option options[] = {
                { name, required_argument, NULL, 'n' },
                {}
        };
        int c;

        *ret = def;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'n':
                        if (safe_atou64(optarg, ret) < 0 || *ret == 0 || *ret > max)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                                       "--%s must be a number from 1 to %" PRIu64 ": %s", name,
                                                       max, optarg);
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        *ret_first_arg = optind;
        return 0;
}

/* "2024-05-02 03:00:00 CEST (in 3h 12m)" */
static void format_when(char *buf, size_t len, int64_t when_ms, int64_t now) {
        char t[64], d[32];

        ctl_format_time(t, sizeof(t), when_ms);
        ctl_format_duration(d, sizeof(d), when_ms - now);
        snprintf(buf, len, "%s (%s%s%s)", t, when_ms >= now ? "in " : "", d, when_ms >= now ? "" : " ago");
}

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct json_object* reply_data(struct json_object *reply) {
        struct json_object *data = NULL;

        (void) json_object_object_get_ex(reply, "data", &data);
        return data;
}

int verb_schedule(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("schedule"), *reply = NULL;
        struct json_object *args = NULL, *data;
        int64_t next;
        char when[128];
        int r;

        if (!req)
                return log_oom();
        if (argc > 5) {
                r = ctl_parse_json_arg(argv[5], "ARGS_JSON", &args);
                if (r < 0)
                        return r;
                if (!json_object_is_type(args, json_type_object)) {
                        json_object_put(args);
                        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "ARGS_JSON must be a JSON object: %s",
                                               argv[5]);
                }
        }
        if (json_add_string(req, "photonName", argv[1]) < 0 || json_add_string(req, "jobId", argv[2]) < 0 ||
            json_add_string(req, "method", argv[3]) < 0 || json_add_string(req, "cron", argv[4]) < 0 ||
            (args && json_add(req, "args", args) < 0))
                return log_oom();

        r = ctl_call(ctx, req, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        r = ctl_check_reply(reply, "schedule");
        if (r < 0 || ctx->json)
                return r;

        data = reply_data(reply);
        if (json_get_int64(data, "nextRun", false, &next) >= 0) {
                format_when(when, sizeof(when), next, wall_ms());
                printf("Scheduled %s, next run %s\n", json_get_string(data, "jobId"), when);
        } else
                printf("Scheduled %s (not armed: the job is disabled or paused)\n", json_get_string(data, "jobId"));
        return 0;
}

int verb_unschedule(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("unschedule"), *reply = NULL;
        struct json_object *v;
        int r;

        if (!req)
                return log_oom();
        if (json_add_string(req, "jobId", argv[1]) < 0)
                return log_oom();
        r = ctl_call(ctx, req, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        r = ctl_check_reply(reply, "unschedule");
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(reply_data(reply), "unscheduled", &v) || !json_object_get_boolean(v))
                return log_error_errno(SYNTHETIC_ERRNO(ENOENT), "No scheduled job '%s'.", argv[1]);
        if (!ctx->json)
                printf("Unscheduled %s\n", argv[1]);
        return 0;
}

static const char* job_state(struct json_object *job) {
        struct json_object *v;

        if (json_object_object_get_ex(job, "running", &v) && json_object_get_boolean(v))
                return "running";
        if (json_object_object_get_ex(job, "enabled", &v) && !json_object_get_boolean(v))
                return "disabled";
        if (json_object_object_get_ex(job, "paused", &v) && json_object_get_boolean(v))
                return "paused";
        return NULL;
}

int verb_jobs(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("list_jobs"), *reply = NULL;
        struct json_object *jobs = NULL;
        int w_id = 2, w_method = 6, w_cron = 4, w_next = 8;
        int64_t now = wall_ms();
        size_t n;
        int r;

        r = ctl_query(ctx, req, "list_jobs", &reply);
        if (r <= 0)
                return r;
        if (!json_object_object_get_ex(reply_data(reply), "jobs", &jobs) ||
            !json_object_is_type(jobs, json_type_array))
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "list_jobs reply has no jobs array.");

        n = json_object_array_length(jobs);
        if (n == 0) {
                puts("No scheduled jobs.");
                return 0;
        }

        char (*next)[128] = calloc(n, sizeof(*next));
        if (!next)
                return log_oom();
        for (size_t i = 0; i < n; i++) {
                struct json_object *job = json_object_array_get_idx(jobs, i);
                const char *state = job_state(job);
                int64_t t;

                if (state && !streq(state, "running"))
                        snprintf(next[i], sizeof(next[i]), "-");
                else if (json_get_int64(job, "nextRun", false, &t) >= 0)
                        format_when(next[i], sizeof(next[i]), t, now);
                else
                        snprintf(next[i], sizeof(next[i]), "-");
                w_id = MAX(w_id, (int) strlen(json_get_string(job, "id") ?: ""));
                w_method = MAX(w_method, (int) strlen(json_get_string(job, "method") ?: ""));
                w_cron = MAX(w_cron, (int) strlen(json_get_string(job, "cron") ?: ""));
                w_next = MAX(w_next, (int) strlen(next[i]));
        }

        printf("%-*s  %-*s  %-*s  %-*s  %s\n", w_id, "ID", w_method, "METHOD", w_cron, "CRON", w_next, "NEXT RUN",
               "LAST");
        for (size_t i = 0; i < n; i++) {
                struct json_object *job = json_object_array_get_idx(jobs, i);
                const char *state = job_state(job), *last = json_get_string(job, "lastStatus") ?: "-";
                int64_t skipped = 0;
                char extra[96] = "";

                (void) json_get_int64(job, "skippedRuns", false, &skipped);
                if (state || skipped > 0)
                        snprintf(extra, sizeof(extra), " (%s%s%s)", state ?: "",
                                 state && skipped > 0 ? ", " : "",
                                 skipped > 0 ? "skipped runs" : "");
                printf("%-*s  %-*s  %-*s  %-*s  %s%s\n", w_id, json_get_string(job, "id") ?: "",
                       w_method, json_get_string(job, "method") ?: "", w_cron, json_get_string(job, "cron") ?: "",
                       w_next, next[i], last, extra);
        }
        free(next);
        return 0;
}

int verb_run_job(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("run_job"), *reply = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *id;
        struct json_object *data, *result;
        int64_t ms = 0;
        int r;

        if (!req)
                return log_oom();
        if (json_add_string(req, "jobId", argv[1]) < 0)
                return log_oom();
        id = json_get_string(req, "id");

        /* The reply comes when the run ends, which may take up to the handler timeout: no client-side deadline. */
        r = ctl_connect(ctx, &fd);
        if (r < 0)
                return r;
        r = ctl_send(fd, req);
        if (r < 0)
                return log_error_errno(r, "Failed to send the request: %m");
        for (;;) {
                json_object_put(reply);
                reply = NULL;
                r = ctl_recv(fd, -1, &reply);
                if (r == -ECONNRESET)
                        return log_error_errno(r, "photond closed the connection before the run ended.");
                if (r < 0)
                        return log_error_errno(r, "Failed to read the reply: %m");
                if (streq_ptr(json_get_string(reply, "id"), id) || streq_ptr(json_get_string(reply, "id"), "unknown"))
                        break;
        }
        if (ctx->json) {
                ctl_print_json(reply);
                return ctl_check_reply(reply, "run-job");
        }

        data = reply_data(reply);
        (void) json_get_int64(data, "durationMs", false, &ms);
        r = ctl_check_reply(reply, "run-job");
        if (r < 0)
                return r;
        printf("Job %s succeeded in %" PRIi64 " ms\n", json_get_string(data, "jobId") ?: argv[1], ms);
        if (json_object_object_get_ex(data, "result", &result))
                /* A string as it is, unless a NUL in it would cut it short: then as JSON, like anything else. */
                puts(json_object_get_cstring(result) ?:
                     json_object_to_json_string_ext(result, JSON_C_TO_STRING_PRETTY | JSON_FORMAT_FLAGS));
        return 0;
}

int verb_cron(CtlContext *ctx, int argc, char *argv[]) {
        CronSpec spec;
        uint64_t count;
        char err[256], when[128];
        int64_t now = wall_ms();
        time_t t;
        int r, first;

        r = parse_count_option(argc, argv, "count", 5, CRON_MAX_COUNT, &count, &first);
        if (r < 0)
                return r;
        if (argc - first != 1)
                return ctl_usage_error(argv[0]);

        r = cron_validate(argv[first], (time_t) (now / 1000), &spec, err, sizeof(err));
        if (r < 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid cron expression: %s", err);

        t = (time_t) (now / 1000);
        for (uint64_t i = 0; i < count; i++) {
                r = cron_next(&spec, t, &t);
                if (r == -ENOENT)
                        break;
                if (r < 0)
                        return log_error_errno(r, "Failed to compute the next time: %m");
                if (ctx->json)
                        printf("%" PRIi64 "\n", (int64_t) t * 1000);
                else {
                        format_when(when, sizeof(when), (int64_t) t * 1000, now);
                        puts(when);
                }
        }
        return 0;
}

int verb_history(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("get_execution_history"),
                *reply = NULL;
        struct json_object *entries = NULL;
        uint64_t limit;
        int r, first;

        if (!req)
                return log_oom();
        r = parse_count_option(argc, argv, "limit", 20, 500, &limit, &first);
        if (r < 0)
                return r;
        if (argc - first != 2)
                return ctl_usage_error(argv[0]);
        if (json_add_string(req, "photonName", argv[first]) < 0 ||
            json_add_string(req, "method", argv[first + 1]) < 0 ||
            json_add_int64(req, "limit", (int64_t) limit) < 0)
                return log_oom();

        r = ctl_call(ctx, req, &reply);
        if (r < 0)
                return r;
        if (ctx->json) {
                ctl_print_json(reply);
                return ctl_check_reply(reply, "history");
        }
        r = ctl_check_reply(reply, "history");
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(reply_data(reply), "entries", &entries) ||
            !json_object_is_type(entries, json_type_array))
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "get_execution_history reply has no entries.");
        if (json_object_array_length(entries) == 0) {
                printf("No runs of %s.%s recorded.\n", argv[first], argv[first + 1]);
                return 0;
        }

        printf("%-25s  %-7s  %9s  %s\n", "TIME", "STATUS", "DURATION", "OUTPUT / ERROR");
        for (size_t i = 0; i < json_object_array_length(entries); i++) {
                struct json_object *e = json_object_array_get_idx(entries, i);
                const char *status = json_get_string(e, "status") ?: "-";
                const char *text = json_get_string(e, streq(status, "success") ? "outputPreview" : "errorMessage");
                int64_t ts = 0, ms = 0;
                char t[64], d[32];
                int cut = 0;

                (void) json_get_int64(e, "ts", false, &ts);
                (void) json_get_int64(e, "durationMs", false, &ms);
                ctl_format_time(t, sizeof(t), ts);
                snprintf(d, sizeof(d), "%" PRIi64 " ms", ms);
                text = text ?: "";
                /* One line per run: the first line of the text, at most 100 bytes (at a character boundary). */
                while (text[cut] && text[cut] != '\n' && cut < 100)
                        cut++;
                while (cut > 0 && text[cut] && ((unsigned char) text[cut] & 0xC0) == 0x80)
                        cut--;
                printf("%-25s  %-7s  %9s  %.*s%s\n", t, status, d, cut, text, text[cut] ? "…" : "");
        }
        return 0;
}
