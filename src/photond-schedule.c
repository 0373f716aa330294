/* SPDX-License-Identifier: MIT */

/* Scheduled jobs: the job table, one CLOCK_REALTIME timer per job, persistence in the reference daemon's file
 * layout (<base>/.data/<photon>/schedules/<jobId>.json, so jobs move between photond and the reference daemon),
 * catch-up after downtime like systemd's Persistent=, and the run history (executions.jsonl). The control protocol's
 * requests are photond-control-jobs.c's; they call the typed functions at the end of this file. */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <uthash.h>

#include "cron.h"
#include "fd-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "photond-channel.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "photond-schedule.h"
#include "string-util.h"

/* The reference's run-history and catch-up constants (execution-history.js, schedule loading). */
#define HISTORY_FILE_NAME "executions.jsonl"
#define HISTORY_ROTATE_BYTES ((uint64_t) 10 * 1024 * 1024)
#define HISTORY_ARCHIVES 3
#define HISTORY_TTL_MS SCHEDULE_HISTORY_TTL_MS
#define HISTORY_MAX_PER_METHOD SCHEDULE_HISTORY_MAX_PER_METHOD
#define PREVIEW_MAX_CHARS 500
#define CATCHUP_WINDOW_MS ((int64_t) 14 * 24 * 3600 * 1000)
/* The reference sweeps the history only at start; a photond that runs for weeks sweeps once a day too. */
#define HISTORY_SWEEP_INTERVAL_MS ((int64_t) 24 * 3600 * 1000)
/* Handler errors end up in job files, history lines and channel messages; a runaway stderr must not. */
#define ERROR_MAX_BYTES 4096
#define JOB_FILE_MAX_BYTES ((size_t) 4 * 1024 * 1024)
#define BASES_FILE_MAX_BYTES ((size_t) 4 * 1024 * 1024)

/* The test hook: shifts the scheduler's idea of "now" so integration tests can put photond a second before a
 * minute boundary, or pretend that hours went by while it was down. Only honoured by the user instance and
 * announced at warning level at start, so it cannot go unnoticed. */
#define TEST_CLOCK_OFFSET_ENV "PHOTOND_TEST_CLOCK_OFFSET_MS"

typedef enum JobStatus {
        JOB_STATUS_NONE,
        JOB_STATUS_SUCCESS,
        JOB_STATUS_ERROR,
} JobStatus;

typedef struct Job Job;

struct Job {
        Scheduler *scheduler;
        UT_hash_handle hh;              /* keyed by id; uthash keeps insertion order, as the reference's Map */

        char *id;                       /* the key "<photon>[:<hash8>]:ipc:<jobId>" */
        char *job_id;                   /* the jobId as sent: the file name */
        char *photon;
        char *method;
        char *cron;
        CronSpec spec;
        struct json_object *args;       /* NULL when the request had none */
        char *working_dir;              /* NULL: the default base */
        char *created_by;
        char *path;                     /* the job file */
        struct json_object *file;       /* the file as last read: keys photond does not know survive rewrites */

        int64_t created_at;             /* ms */
        int64_t scheduled_at;           /* last schedule request (catch-up must not count times before it) */
        uint64_t run_count;             /* successful runs, as the reference counts them */
        uint64_t consecutive_failures;
        uint64_t skipped_runs;
        int64_t last_run;               /* last success, 0 = never */
        int64_t last_attempt;           /* last finished run, 0 = never */
        JobStatus last_status;
        char *last_error;
        bool enabled;
        bool paused;

        int64_t next_run;               /* scheduler time in ms; 0 = not armed */
        bool catch_up;                  /* next_run is a catch-up run */
        sd_event_source *timer;
        int64_t claim_due;              /* cluster mode: the occurrence whose claim waits for an answer, 0 = none */
        bool claim_catch_up;

        DispatchCall *call;             /* the running call */
        uint64_t run_started_usec;      /* CLOCK_MONOTONIC */
        JobRunCallback waiter_cb;       /* who asked for the running run (scheduler_run_job()) */
        void *waiter;
        char *waiter_id;

        bool dirty;                     /* the file is behind: written by scheduler_flush() */
        LIST_FIELDS(Job, dirty);
};

/* A JobFinished signal that waits for the job file it reports on (see scheduler_flush()). */
typedef struct JobSignal {
        char *id;
        bool success;
        int64_t duration_ms;
} JobSignal;

struct Scheduler {
        sd_event *event;
        Channels *channels;
        Dispatcher *dispatcher;
        char *jobs_base_dir;
        SchedulerHooks hooks;
        Job *jobs;
        unsigned n_jobs;
        unsigned n_running;
        int64_t clock_offset_ms;

        /* counters since the start (GET /metrics) */
        uint64_t n_fired, n_run_now, n_succeeded, n_failed, n_skipped;
        Histogram lateness;             /* how late timer runs started (catch-ups aside) */

        LIST_HEAD(Job, dirty_jobs);
        JobSignal *signals;
        size_t n_signals, n_signals_alloc;

        sd_event_source *sweep_event_source;

        /* wall-clock steps and time-zone changes move every due time */
        int clock_fd;
        sd_event_source *clock_event_source;
        int tz_fd;
        sd_event_source *tz_event_source;
};

static int64_t scheduler_now_ms(Scheduler *s) {
        return now_ms() + s->clock_offset_ms;
}

/* Jobs came, went, started or ended (SchedulerHooks). */
static void notify_counts_changed(Scheduler *s) {
        if (s->hooks.counts_changed)
                s->hooks.counts_changed(s->hooks.userdata);
}

/* Something waits for scheduler_flush() (SchedulerHooks). */
static void notify_flush_needed(Scheduler *s) {
        if (s->hooks.flush_needed)
                s->hooks.flush_needed(s->hooks.userdata);
}

static const char* job_status_to_string(JobStatus st) {
        return st == JOB_STATUS_SUCCESS ? "success" : st == JOB_STATUS_ERROR ? "error" : NULL;
}

/* ---- pure helpers ---- */

int schedule_job_key(const char *photon, const char *working_dir, const char *job_id, char **ret) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;

        if (!working_dir)
                return asprintf(ret, "%s:ipc:%s", photon, job_id) < 0 ? -ENOMEM : 0;

        if (EVP_Digest(working_dir, strlen(working_dir), md, &md_len, EVP_sha256(), NULL) != 1 || md_len < 4)
                return -EIO;
        return asprintf(ret, "%s:%02x%02x%02x%02x:ipc:%s", photon, md[0], md[1], md[2], md[3], job_id) < 0 ?
                -ENOMEM : 0;
}

void schedule_format_iso(int64_t ms, char *buf, size_t size) {
        time_t t = (time_t) (ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
        int frac = (int) (ms - (int64_t) t * 1000);
        struct tm tm;

        if (!gmtime_r(&t, &tm)) {
                snprintf(buf, size, "1970-01-01T00:00:00.000Z");
                return;
        }
        snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

int schedule_parse_iso(const char *s, int64_t *ret_ms) {
        int year, mon, day, hour, min, sec, n = 0, ms = 0;
        struct tm tm = {};
        const char *p;
        time_t t;

        if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &mon, &day, &hour, &min, &sec, &n) != 6 || n != 19)
                return -EINVAL;
        if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
                return -EINVAL;
        p = s + n;
        if (*p == '.') {
                int digits = 0;

                for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                        if (digits < 3)
                                ms = ms * 10 + (*p - '0');
                if (digits == 0)
                        return -EINVAL;
                for (; digits < 3; digits++)
                        ms *= 10;
        }

        tm.tm_year = year - 1900;
        tm.tm_mon = mon - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_sec = sec;
        t = timegm(&tm);
        if (t == (time_t) -1)
                return -EINVAL;

        if (*p == 'Z')
                p++;
        else if ((*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '9') {
                int oh, om, k = 0;

                if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
                        return -EINVAL;
                t += (*p == '+' ? -1 : 1) * (time_t) (oh * 3600 + om * 60);
                p += 6;
        } else
                return -EINVAL;
        if (*p)
                return -EINVAL;

        *ret_ms = (int64_t) t * 1000 + ms;
        return 0;
}

char* schedule_truncate_utf8(const char *s, size_t max) {
        size_t n = strlen(s);

        if (n > max) {
                n = max;
                /* Back up to the start of a character. */
                while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
                        n--;
        }
        return strndup(s, n);
}

char* schedule_output_preview(struct json_object *data) {
        const char *s;
        size_t i = 0, chars = 0;
        char *out;

        if (!data)
                return NULL;
        /* A string with a NUL byte is shown as JSON, so the preview is not cut short at the NUL. */
        s = json_object_get_cstring(data);
        if (!s)
                s = json_object_to_json_string_ext(data, JSON_FORMAT_FLAGS);
        if (!s)
                return NULL;

        /* Characters, not bytes, as the reference's String.slice() (which counts UTF-16 units; the two agree
         * outside the astral planes). */
        while (s[i] && chars < PREVIEW_MAX_CHARS) {
                i++;
                while (((unsigned char) s[i] & 0xC0) == 0x80)
                        i++;
                chars++;
        }
        if (!s[i])
                return strdup(s);
        if (asprintf(&out, "%.*s\u2026", (int) i, s) < 0)
                return NULL;
        return out;
}

static time_t ms_to_sec_floor(int64_t ms) {
        return (time_t) (ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
}

static int spec_next(const CronSpec *spec, int64_t from_ms, int64_t *ret_ms) {
        time_t t;
        int r;

        r = cron_next(spec, ms_to_sec_floor(from_ms), &t);
        if (r < 0)
                return r;
        *ret_ms = (int64_t) t * 1000;
        return 0;
}

static int spec_missed_occurrence(const CronSpec *spec, int64_t anchor_ms, int64_t now_ms, int64_t *ret_missed_ms) {
        int64_t from = MAX(anchor_ms, now_ms - CATCHUP_WINDOW_MS), t;
        int r;

        if (from >= now_ms)
                return 0;
        r = spec_next(spec, from, &t);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (t > now_ms)
                return 0;
        if (ret_missed_ms)
                *ret_missed_ms = t;
        return 1;
}

/* What a wall-clock step or a time-zone change does to an armed job. A job whose due time has passed (a step
 * forward over it) is left alone: its absolute timer has elapsed and fires now, and the re-arm after that run
 * starts from the new time. A pending catch-up keeps its time too. Any other due time was computed from the old
 * clock or zone and is computed again from now: after a step back by a day, the occurrence the old due time
 * would have skipped comes first. */
static int spec_recompute_due(const CronSpec *spec, int64_t next_run_ms, bool catch_up, int64_t now_ms,
                              int64_t *ret_ms) {
        int r;

        if (catch_up || (next_run_ms > 0 && next_run_ms <= now_ms))
                return 0;
        r = spec_next(spec, now_ms, ret_ms);
        return r < 0 ? r : 1;
}

int schedule_cron_next(const char *expr, int64_t from_ms, int64_t *ret_ms) {
        CronSpec spec;
        char err[256];
        int r;

        r = cron_parse(expr, &spec, err, sizeof(err));
        if (r < 0)
                return r;
        return spec_next(&spec, from_ms, ret_ms);
}

int schedule_recompute_due(const char *expr, int64_t next_run_ms, bool catch_up, int64_t now_ms, int64_t *ret_ms) {
        CronSpec spec;
        char err[256];
        int r;

        r = cron_parse(expr, &spec, err, sizeof(err));
        if (r < 0)
                return r;
        return spec_recompute_due(&spec, next_run_ms, catch_up, now_ms, ret_ms);
}

int schedule_missed_occurrence(const char *expr, int64_t anchor_ms, int64_t now_ms, int64_t *ret_missed_ms) {
        CronSpec spec;
        char err[256];
        int r;

        r = cron_parse(expr, &spec, err, sizeof(err));
        if (r < 0)
                return r;
        return spec_missed_occurrence(&spec, anchor_ms, now_ms, ret_missed_ms);
}

/* ---- run history (executions.jsonl) ---- */

static int history_rotate(const char *path) {
        /* executions.jsonl -> executions.1.jsonl -> ... -> executions.3.jsonl, the oldest dropped. */
        _cleanup_free_ char *stem = NULL;
        const char *dot = strrchr(path, '.');

        if (!dot || !streq(dot, ".jsonl"))
                return -EINVAL;
        stem = strndup(path, dot - path);
        if (!stem)
                return -ENOMEM;

        for (int i = HISTORY_ARCHIVES; i >= 1; i--) {
                _cleanup_free_ char *src = NULL, *dst = NULL;

                if (asprintf(&dst, "%s.%d.jsonl", stem, i) < 0)
                        return -ENOMEM;
                if (i == 1)
                        src = strdup(path);
                else if (asprintf(&src, "%s.%d.jsonl", stem, i - 1) < 0)
                        src = NULL;
                if (!src)
                        return -ENOMEM;
                if (rename(src, dst) < 0 && errno != ENOENT)
                        return -errno;
        }
        return 0;
}

int schedule_history_append(const char *path, struct json_object *entry, uint64_t rotate_bytes) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *line = NULL;
        const char *s;
        struct stat st;
        size_t len;
        ssize_t n;
        int r;

        s = json_object_to_json_string_ext(entry, JSON_FORMAT_FLAGS);
        if (!s)
                return -ENOMEM;
        len = strlen(s);
        line = malloc(len + 1);
        if (!line)
                return -ENOMEM;
        memcpy(line, s, len);
        line[len++] = '\n';

        if (stat(path, &st) >= 0 && (uint64_t) st.st_size >= rotate_bytes) {
                r = history_rotate(path);
                if (r < 0)
                        return r;
        }

        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        /* One write() with O_APPEND: concurrent writers (a reference daemon on the same base) do not interleave. */
        n = write(fd, line, len);
        if (n < 0)
                return -errno;
        return (size_t) n == len ? 0 : -EIO;
}

typedef struct HistoryEntry {
        struct json_object *obj;        /* NULL: a malformed line */
        int64_t ts;
        const char *method;
        size_t order;
        bool keep;
} HistoryEntry;

static void history_entries_free(HistoryEntry *e, size_t n) {
        for (size_t i = 0; i < n; i++)
                json_object_put(e[i].obj);
        free(e);
}

/* Parses the whole file; only_method (may be NULL) skips other methods' lines cheaply before parsing. */
static int history_load(const char *path, const char *only_method, HistoryEntry **ret, size_t *ret_n,
                        size_t *ret_lines) {
        _cleanup_free_ char *text = NULL, *needle = NULL;
        HistoryEntry *e = NULL;
        size_t n = 0, alloc = 0, lines = 0;
        int r;

        r = read_full_file(path, HISTORY_ROTATE_BYTES * 2, &text, NULL);
        if (r == -ENOENT) {
                *ret = NULL;
                *ret_n = 0;
                if (ret_lines)
                        *ret_lines = 0;
                return 0;
        }
        if (r < 0)
                return r;

        if (only_method && asprintf(&needle, "\"%s\"", only_method) < 0)
                return -ENOMEM;

        for (char *line = text, *next; line && *line; line = next) {
                struct json_object *o = NULL;
                int64_t ts;
                const char *method;
                size_t len;

                next = strchr(line, '\n');
                len = next ? (size_t) (next - line) : strlen(line);
                if (next)
                        *next++ = '\0';
                if (strspn(line, " \t\r") == len)
                        continue;
                lines++;
                if (needle && !strstr(line, needle))
                        continue;
                if (json_parse(line, len, &o, NULL) < 0)
                        continue;
                method = json_get_string(o, "method");
                if (!json_object_is_type(o, json_type_object) || !method ||
                    json_get_int64(o, "ts", false, &ts) < 0 || (only_method && !streq(method, only_method))) {
                        json_object_put(o);
                        continue;
                }
                if (n == alloc) {
                        HistoryEntry *ne = realloc(e, sizeof(HistoryEntry) * (alloc = MAX(alloc * 2, 64u)));
                        if (!ne) {
                                json_object_put(o);
                                history_entries_free(e, n);
                                return -ENOMEM;
                        }
                        e = ne;
                }
                e[n] = (HistoryEntry) { .obj = o, .ts = ts, .method = method, .order = n };
                n++;
        }

        *ret = e;
        *ret_n = n;
        if (ret_lines)
                *ret_lines = lines;
        return 0;
}

static int history_cmp_newest_first(const void *a, const void *b) {
        const HistoryEntry *x = a, *y = b;

        if (x->ts != y->ts)
                return x->ts > y->ts ? -1 : 1;
        /* Same millisecond: the later line is the newer entry. */
        return x->order > y->order ? -1 : x->order < y->order;
}

static int history_cmp_file_order(const void *a, const void *b) {
        const HistoryEntry *x = a, *y = b;

        return x->order < y->order ? -1 : x->order > y->order;
}

int schedule_history_read(const char *path, const char *method, int64_t since_ms, unsigned limit, int64_t now_ms,
                          struct json_object **ret_entries) {
        _cleanup_(json_object_putp) struct json_object *arr = NULL;
        HistoryEntry *e = NULL;
        size_t n = 0;
        unsigned added = 0;
        int r;

        r = history_load(path, method, &e, &n, NULL);
        if (r < 0)
                return r;

        arr = json_object_new_array();
        if (!arr) {
                history_entries_free(e, n);
                return -ENOMEM;
        }
        if (n > 0)
                qsort(e, n, sizeof(HistoryEntry), history_cmp_newest_first);
        /* The per-method retention bounds a reply, whatever limit asks for. */
        if (limit == 0 || limit > HISTORY_MAX_PER_METHOD)
                limit = HISTORY_MAX_PER_METHOD;
        /* The sweeps run at start and once a day; in between, entries past the 14-day TTL are still in the file. */
        since_ms = MAX(since_ms, now_ms - HISTORY_TTL_MS);
        for (size_t i = 0; i < n && added < limit; i++) {
                if (e[i].ts < since_ms)
                        continue;
                if (json_object_array_add(arr, json_object_get(e[i].obj)) < 0) {
                        json_object_put(e[i].obj);
                        history_entries_free(e, n);
                        return -ENOMEM;
                }
                added++;
        }
        history_entries_free(e, n);
        *ret_entries = TAKE_PTR(arr);
        return 0;
}

typedef struct MethodCount {
        const char *method;
        unsigned n;
        UT_hash_handle hh;
} MethodCount;

int schedule_history_sweep(const char *path, int64_t now_ms) {
        HistoryEntry *e = NULL;
        MethodCount *counts = NULL, *mc, *tmp;
        size_t n = 0, lines = 0, kept = 0;
        char *buf = NULL;
        size_t buf_size = 0;
        FILE *f;
        int r;

        r = history_load(path, NULL, &e, &n, &lines);
        if (r < 0)
                return r;
        if (lines == 0) {
                history_entries_free(e, n);
                return 0;
        }

        if (n > 0)
                qsort(e, n, sizeof(HistoryEntry), history_cmp_newest_first);
        for (size_t i = 0; i < n; i++) {
                if (e[i].ts < now_ms - HISTORY_TTL_MS)
                        continue;
                HASH_FIND_STR(counts, e[i].method, mc);
                if (!mc) {
                        mc = new0(MethodCount, 1);
                        if (!mc) {
                                r = -ENOMEM;
                                goto finish;
                        }
                        mc->method = e[i].method;
                        HASH_ADD_KEYPTR(hh, counts, mc->method, strlen(mc->method), mc);
                }
                if (mc->n >= HISTORY_MAX_PER_METHOD)
                        continue;
                mc->n++;
                e[i].keep = true;
                kept++;
        }

        r = 0;
        if (kept == lines)      /* nothing aged, over the cap or malformed: leave the file alone */
                goto finish;

        if (n > 0)
                qsort(e, n, sizeof(HistoryEntry), history_cmp_file_order);
        f = open_memstream(&buf, &buf_size);
        if (!f) {
                r = -ENOMEM;
                goto finish;
        }
        for (size_t i = 0; i < n; i++)
                if (e[i].keep)
                        fprintf(f, "%s\n", json_object_to_json_string_ext(e[i].obj, JSON_FORMAT_FLAGS));
        if (fclose(f) != 0) {
                r = -ENOMEM;
                goto finish;
        }
        r = write_file_atomic(path, buf, buf_size, 0644, true);

finish:
        HASH_ITER(hh, counts, mc, tmp) {
                HASH_DEL(counts, mc);
                free(mc);
        }
        free(buf);
        history_entries_free(e, n);
        return r;
}

/* ---- paths and files ---- */

static inline void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
        *d = NULL;
}

static int schedules_dir(const char *base, const char *photon, char **ret) {
        return asprintf(ret, "%s/.data/%s/schedules", base, photon) < 0 ? -ENOMEM : 0;
}

static int job_history_path(Job *j, char **ret) {
        const char *slash = strrchr(j->path, '/');

        /* Beside the job file, wherever it was found. */
        return asprintf(ret, "%.*s/%s", (int) (slash - j->path), j->path, HISTORY_FILE_NAME) < 0 ? -ENOMEM : 0;
}

static int json_add_null(struct json_object *o, const char *key) {
        return json_object_object_add(o, key, NULL) < 0 ? -ENOMEM : 0;
}

static int json_add_iso_or_null(struct json_object *o, const char *key, int64_t ms) {
        char buf[64];

        if (ms <= 0)
                return json_add_null(o, key);
        schedule_format_iso(ms, buf, sizeof(buf));
        return json_add_string(o, key, buf);
}

static const char* job_file_status(Job *j) {
        return !j->enabled ? "disabled" : j->paused ? "paused" : "active";
}

/* The reference's file fields, in its order, plus photond's (enabled, paused, skippedRuns, scheduledAt) which the
 * reference ignores. Keys photond does not know, from a file written by someone else, are kept. */
static int job_to_file_json(Job *j, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;

        r = json_add_string(o, "id", j->id);
        if (r >= 0)
                r = json_add_string(o, "method", j->method);
        if (r >= 0)
                r = json_add(o, "args", j->args ? json_object_get(j->args) : json_object_new_object());
        if (r >= 0)
                r = json_add_string(o, "cron", j->cron);
        if (r >= 0) {
                struct json_object *rc = NULL;

                if (j->file && json_object_object_get_ex(j->file, "requiredConfig", &rc))
                        r = json_add(o, "requiredConfig", json_object_get(rc));
                else
                        r = json_add(o, "requiredConfig", json_object_new_array());
        }
        if (r >= 0)
                r = json_add_string(o, "photonName", j->photon);
        if (r >= 0 && j->working_dir)
                r = json_add_string(o, "workingDir", j->working_dir);
        if (r >= 0)
                r = json_add_string(o, "source", "ipc");
        if (r >= 0)
                r = json_add_string(o, "status", job_file_status(j));
        if (r >= 0)
                r = json_add_iso_or_null(o, "createdAt", j->created_at);
        if (r >= 0 && j->created_by)
                r = json_add_string(o, "createdBy", j->created_by);
        if (r >= 0)
                r = json_add_int64(o, "executionCount", (int64_t) j->run_count);
        if (r >= 0)
                r = json_add_iso_or_null(o, "lastExecutionAt", j->last_run);
        if (r >= 0)
                r = json_add_iso_or_null(o, "lastAttemptAt", j->last_attempt);
        if (r >= 0)
                r = job_status_to_string(j->last_status) ?
                        json_add_string(o, "lastStatus", job_status_to_string(j->last_status)) :
                        json_add_null(o, "lastStatus");
        if (r >= 0)
                r = j->last_error ? json_add_string(o, "lastError", j->last_error) : json_add_null(o, "lastError");
        if (r >= 0)
                r = json_add_int64(o, "consecutiveFailures", (int64_t) j->consecutive_failures);
        /* photond's additions */
        if (r >= 0)
                r = json_add_bool(o, "enabled", j->enabled);
        if (r >= 0)
                r = json_add_bool(o, "paused", j->paused);
        if (r >= 0)
                r = json_add_int64(o, "skippedRuns", (int64_t) j->skipped_runs);
        if (r >= 0 && j->scheduled_at > 0)
                r = json_add_iso_or_null(o, "scheduledAt", j->scheduled_at);
        if (r < 0)
                return r;

        if (j->file) {
                json_object_object_foreach(j->file, key, val)
                        if (!json_object_object_get_ex(o, key, NULL)) {
                                r = json_add(o, key, json_object_get(val));
                                if (r < 0)
                                        return r;
                        }
        }

        *ret = TAKE_PTR(o);
        return 0;
}

/* Every write of a job file is durable (tmp + fsync + rename + fsync of the directory), the counters of a run
 * included: a rename without the fsync can leave an empty file after a power loss, and that would be the job gone,
 * not just its counters. It costs about 0.5 ms here per write (0.07 ms without the fsyncs), and it happens per
 * schedule request and per run, never per lock or publish. */
static int job_save(Job *j) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_free_ char *dir = NULL;
        const char *text;
        char *slash;
        int r;

        r = job_to_file_json(j, &o);
        if (r < 0)
                return r;
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text)
                return -ENOMEM;

        dir = strdup(j->path);
        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        *slash = '\0';
        if (access(dir, F_OK) < 0) {
                r = mkdir_parents_and_self(dir, 0755);
                if (r < 0)
                        return r;
                /* A new directory is an entry in its parent: the first job of a photon makes the chain it may
                 * have created (.data/<photon>/schedules) durable too, else the file could be unreachable. */
                for (unsigned i = 0; i < 3 && (slash = strrchr(dir, '/')) && slash != dir; i++) {
                        r = fsync_parent_directory(dir);
                        if (r < 0)
                                return r;
                        *slash = '\0';
                }
        }

        return write_file_atomic(j->path, text, strlen(text), 0644, /* sync= */ true);
}

static void job_save_or_warn(Job *j) {
        int r = job_save(j);

        if (r < 0)
                log_warning_errno(r, "Failed to write the job file %s: %m", j->path);
}

/* Runs, skipped runs and the state switches change a job's file, but the write waits for the end of the event-loop
 * iteration: the owner's flush (the Manager's manager_flush(), at idle priority, so after every timer that was
 * due) calls scheduler_flush() before any reply or event leaves. A timer callback thus does no disk I/O, and the
 * fsyncs of a few hundred jobs due in the same minute do not push back the later ones' starts, while nobody hears
 * of a run its file does not show yet. */
static void job_mark_dirty(Job *j) {
        Scheduler *s = j->scheduler;

        if (j->dirty)
                return;
        j->dirty = true;
        LIST_PREPEND(dirty, s->dirty_jobs, j);
        notify_flush_needed(s);
}

static void job_unmark_dirty(Job *j) {
        if (!j->dirty)
                return;
        j->dirty = false;
        LIST_REMOVE(dirty, j->scheduler->dirty_jobs, j);
}

static void job_queue_signal(Job *j, bool success, int64_t duration_ms) {
        Scheduler *s = j->scheduler;
        char *id;

        if (!s->hooks.job_finished)
                return;         /* nobody listens */
        if (s->n_signals == s->n_signals_alloc) {
                size_t na = MAX(s->n_signals_alloc * 2, 16u);
                JobSignal *n = realloc(s->signals, na * sizeof(JobSignal));

                if (!n)
                        return (void) log_oom();
                s->signals = n;
                s->n_signals_alloc = na;
        }
        id = strdup(j->id);
        if (!id)
                return (void) log_oom();
        s->signals[s->n_signals++] = (JobSignal) { .id = id, .success = success, .duration_ms = duration_ms };
        notify_flush_needed(s);
}

bool scheduler_unsaved(Scheduler *s) {
        return s && (s->dirty_jobs || s->n_signals > 0);
}

void scheduler_flush(Scheduler *s) {
        Job *j;

        if (!s)
                return;
        while ((j = s->dirty_jobs)) {
                job_unmark_dirty(j);
                job_save_or_warn(j);
        }
        for (size_t i = 0; i < s->n_signals; i++) {
                if (s->hooks.job_finished)
                        s->hooks.job_finished(s->hooks.userdata, s->signals[i].id,
                                              s->signals[i].success ? "success" : "error", s->signals[i].duration_ms);
                free(s->signals[i].id);
        }
        s->n_signals = 0;
}

/* ---- the bases registry (<default base>/.data/.bases.json), shared with the reference ---- */

static int bases_path(Scheduler *s, char **ret) {
        return asprintf(ret, "%s/.data/.bases.json", s->jobs_base_dir) < 0 ? -ENOMEM : 0;
}

static int bases_register(Scheduler *s, const char *base) {
        _cleanup_(json_object_putp) struct json_object *reg = NULL, *entry = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL, *dir = NULL;
        struct json_object *bases = NULL;
        char iso[64];
        int r;

        r = bases_path(s, &path);
        if (r < 0)
                return r;

        r = read_full_file(path, BASES_FILE_MAX_BYTES, &text, NULL);
        if (r >= 0) {
                if (json_parse(text, strlen(text), &reg, NULL) < 0 || !json_object_is_type(reg, json_type_object))
                        /* Someone else's file we cannot read: leave it for a human rather than clobber it. */
                        return -EBADMSG;
        } else if (r != -ENOENT)
                return r;
        else {
                reg = json_object_new_object();
                if (!reg)
                        return -ENOMEM;
        }

        if (!json_object_object_get_ex(reg, "bases", &bases) || !json_object_is_type(bases, json_type_array)) {
                r = json_add(reg, "bases", json_object_new_array());
                if (r < 0)
                        return r;
                json_object_object_get_ex(reg, "bases", &bases);
        }

        schedule_format_iso(now_ms(), iso, sizeof(iso));
        for (size_t i = 0; i < json_object_array_length(bases); i++) {
                struct json_object *b = json_object_array_get_idx(bases, i);

                if (streq_ptr(json_get_string(b, "path"), base)) {
                        r = json_add_string(b, "lastSeen", iso);
                        goto write;
                }
        }
        entry = json_object_new_object();
        if (!entry)
                return -ENOMEM;
        r = json_add_string(entry, "path", base);
        if (r >= 0)
                r = json_add_string(entry, "firstSeen", iso);
        if (r >= 0)
                r = json_add_string(entry, "lastSeen", iso);
        if (r >= 0)
                r = json_object_array_add(bases, TAKE_PTR(entry)) < 0 ? -ENOMEM : 0;

write:
        if (r < 0)
                return r;
        dir = strndup(path, strrchr(path, '/') - path);
        if (!dir)
                return -ENOMEM;
        r = mkdir_parents_and_self(dir, 0755);
        if (r < 0)
                return r;
        const char *out = json_object_to_json_string_ext(reg, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!out)
                return -ENOMEM;
        return write_file_atomic(path, out, strlen(out), 0644, true);
}

/* ---- jobs ---- */

static void job_reply_waiter(Job *j, const JobRunResult *result) {
        JobRunCallback cb = TAKE_PTR(j->waiter_cb);
        void *waiter = TAKE_PTR(j->waiter);
        _cleanup_free_ char *id = TAKE_PTR(j->waiter_id);

        if (cb)
                cb(waiter, id, result);
}

static void job_stop_call(Job *j) {
        if (!j->call)
                return;
        dispatch_call_abandon(TAKE_PTR(j->call));
        j->scheduler->n_running--;
}

static Job* job_free(Job *j) {
        if (!j)
                return NULL;

        if (j->scheduler) {
                Scheduler *s = j->scheduler;

                if (j->call)
                        job_stop_call(j);
                job_reply_waiter(j, &(const JobRunResult) {
                                .id = j->id,
                                .reason = "The job was unscheduled while it ran",
                        });
                if (j->hh.tbl) {
                        HASH_DELETE(hh, s->jobs, j);
                        s->n_jobs--;
                }
                job_unmark_dirty(j);
        }

        sd_event_source_disable_unref(j->timer);
        free(j->id);
        free(j->job_id);
        free(j->photon);
        free(j->method);
        free(j->cron);
        json_object_put(j->args);
        free(j->working_dir);
        free(j->created_by);
        free(j->path);
        json_object_put(j->file);
        free(j->last_error);
        free(j->waiter_id);
        return mfree(j);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Job*, job_free);

static Job* job_find(Scheduler *s, const char *id) {
        Job *j;

        HASH_FIND_STR(s->jobs, id, j);
        if (j)
                return j;

        /* As the reference: the first job (in insertion order) whose key ends with ":ipc:<id>". */
        size_t n = strlen(id);
        for (j = s->jobs; j; j = j->hh.next) {
                size_t k = strlen(j->id);

                if (k > n + 5 && streq(j->id + k - n, id) && memcmp(j->id + k - n - 5, ":ipc:", 5) == 0)
                        return j;
        }
        return NULL;
}

static bool job_active(Job *j) {
        return j->enabled && !j->paused;
}

static int on_job_timer(sd_event_source *src, uint64_t usec, void *userdata);

static int job_set_timer(Job *j, int64_t due_ms) {
        Scheduler *s = j->scheduler;
        int64_t real_ms = due_ms - s->clock_offset_ms;
        uint64_t usec = real_ms > 0 ? (uint64_t) real_ms * USEC_PER_MSEC : 1;
        int r;

        j->next_run = due_ms;
        if (j->timer) {
                r = sd_event_source_set_time(j->timer, usec);
                if (r < 0)
                        return r;
                return sd_event_source_set_enabled(j->timer, SD_EVENT_ONESHOT);
        }

        /* One timer per job: sd-event keeps its timers in a priority queue over a single timerfd per clock, so
         * the kernel still sees one timer and re-arming one job costs O(log n) without a second queue of our own.
         * CLOCK_REALTIME because cron times are wall-clock times, and an absolute realtime timer also fires right
         * after a resume from suspend that slept through its time. The explicit 1 ms accuracy keeps sd-event from
         * coalescing the wakeup into its default 250 ms window. */
        r = sd_event_add_time(s->event, &j->timer, CLOCK_REALTIME, usec, USEC_PER_MSEC, on_job_timer, j);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(j->timer, "job-timer");
        return 0;
}

static void job_disarm(Job *j) {
        j->next_run = 0;
        j->catch_up = false;
        if (j->timer)
                (void) sd_event_source_set_enabled(j->timer, SD_EVENT_OFF);
}

/* Arms the timer at next, or disarms it when computing next failed (r < 0, next unset). */
static int job_arm_at(Job *j, int r, int64_t next) {
        j->catch_up = false;
        if (r < 0) {
                job_disarm(j);
                if (r == -ENOENT)
                        log_warning("Job %s ('%s') has no further occurrence; it stays listed but will not fire.",
                                    j->id, j->cron);
                return r;
        }
        r = job_set_timer(j, next);
        if (r < 0) {
                job_disarm(j);
                return log_error_errno(r, "Failed to arm the timer of job %s: %m", j->id);
        }
        return 0;
}

/* Arms the timer for the first occurrence strictly after from_ms. */
static int job_arm_from(Job *j, int64_t from_ms) {
        int64_t next = 0;
        int r;

        if (!job_active(j)) {
                job_disarm(j);
                return 0;
        }
        r = spec_next(&j->spec, from_ms, &next);
        return job_arm_at(j, r, next);
}

static int job_new(Scheduler *s, Job **ret) {
        Job *j = new0(Job, 1);

        if (!j)
                return -ENOMEM;
        j->scheduler = s;
        j->enabled = true;
        *ret = j;
        return 0;
}

static void job_add(Scheduler *s, Job *j) {
        HASH_ADD_KEYPTR(hh, s->jobs, j->id, strlen(j->id), j);
        s->n_jobs++;
        notify_counts_changed(s);
}

/* ---- running a job ---- */

static void job_publish(Job *j, bool success, const char *error) {
        Scheduler *s = j->scheduler;
        _cleanup_(json_object_putp) struct json_object *msg = json_object_new_object();
        _cleanup_free_ char *channel = NULL;
        int r;

        if (!msg || asprintf(&channel, "jobs:%s", j->photon) < 0) {
                log_oom();
                return;
        }
        r = json_add_string(msg, "event", success ? "job-completed" : "job-failed");
        if (r >= 0)
                r = json_add_string(msg, "jobId", j->id);
        if (r >= 0)
                r = json_add_string(msg, "method", j->method);
        if (r >= 0)
                r = success ? json_add_int64(msg, "runCount", (int64_t) j->run_count) :
                              json_add_string(msg, "error", error);
        if (r < 0) {
                log_oom();
                return;
        }
        r = channels_publish(s->channels, channel, msg, NULL, NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to publish the result of job %s on %s: %m", j->id, channel);
}

static void job_record_history(Job *j, int64_t ts, uint64_t duration_ms, bool success, const char *error,
                               struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *e = json_object_new_object();
        _cleanup_free_ char *path = NULL, *preview = NULL;
        int r;

        if (!e)
                return (void) log_oom();
        r = json_add_int64(e, "ts", ts);
        if (r >= 0)
                r = json_add_string(e, "jobId", j->id);
        if (r >= 0)
                r = json_add_string(e, "method", j->method);
        if (r >= 0)
                r = json_add_int64(e, "durationMs", (int64_t) duration_ms);
        if (r >= 0)
                r = json_add_string(e, "status", success ? "success" : "error");
        if (r >= 0 && !success)
                r = json_add_string(e, "errorMessage", error);
        if (r >= 0 && success && (preview = schedule_output_preview(data)))
                r = json_add_string(e, "outputPreview", preview);
        if (r >= 0)
                r = job_history_path(j, &path);
        if (r < 0)
                return (void) log_oom();

        r = schedule_history_append(path, e, HISTORY_ROTATE_BYTES);
        if (r == -ENOENT) {
                /* First run before the schedules directory exists (a job file that failed to write). */
                _cleanup_free_ char *dir = strndup(path, strrchr(path, '/') - path);

                if (dir && mkdir_parents_and_self(dir, 0755) >= 0)
                        r = schedule_history_append(path, e, HISTORY_ROTATE_BYTES);
        }
        if (r < 0)
                log_warning_errno(r, "Failed to append to %s: %m", path);
        if (j->scheduler->hooks.run_recorded)
                j->scheduler->hooks.run_recorded(j->scheduler->hooks.userdata, j->photon, j->method, j->working_dir,
                                                 e);
}

/* Everything that follows a run: the job's counters and file, the channel event, the history, the bus signal and
 * a waiting run_job requester. */
static void job_finish(Job *j, bool success, struct json_object *data, const char *error) {
        Scheduler *s = j->scheduler;
        int64_t ts = scheduler_now_ms(s);
        uint64_t duration_ms = (now_usec(CLOCK_MONOTONIC) - j->run_started_usec) / USEC_PER_MSEC;
        _cleanup_free_ char *err = NULL;

        if (!success) {
                err = schedule_truncate_utf8(error ?: "Unknown error", ERROR_MAX_BYTES);
                if (!err)
                        return (void) log_oom();
        }

        j->last_attempt = ts;
        if (success)
                s->n_succeeded++;
        else
                s->n_failed++;
        if (success) {
                j->last_run = ts;
                j->last_status = JOB_STATUS_SUCCESS;
                j->consecutive_failures = 0;
                j->run_count++;
                j->last_error = mfree(j->last_error);
                log_info("Job %s (%s.%s) succeeded in %" PRIu64 " ms.", j->id, j->photon, j->method, duration_ms);
        } else {
                j->last_status = JOB_STATUS_ERROR;
                j->consecutive_failures++;
                free(j->last_error);
                j->last_error = strdup(err);
                log_warning("Job %s (%s.%s) failed after %" PRIu64 " ms: %s", j->id, j->photon, j->method,
                            duration_ms, err);
        }

        /* The event first: it marks the moment the run ended for everyone watching. It leaves with the owner's
         * next flush, after the job file is written (scheduler_flush()); so does the D-Bus signal. */
        job_publish(j, success, err);
        job_mark_dirty(j);
        job_record_history(j, ts, duration_ms, success, err, data);
        job_queue_signal(j, success, (int64_t) duration_ms);

        job_reply_waiter(j, &(const JobRunResult) {
                        .id = j->id,
                        .ran = true,
                        .success = success,
                        .duration_ms = (int64_t) duration_ms,
                        .run_count = j->run_count,
                        .result = success ? data : NULL,
                        .reason = err,
                });
}

static void on_job_done(const DispatchResult *result, void *userdata) {
        Job *j = userdata;
        Scheduler *s = j->scheduler;

        j->call = NULL;
        s->n_running--;
        notify_counts_changed(s);
        job_finish(j, result->success, result->data, result->error);
}

/* Its run goes on, or the process of a run that timed out is still ending. */
static bool job_running(Job *j) {
        return j->call || dispatcher_job_ending(j->scheduler->dispatcher, j->id);
}

static int job_start(Job *j, const char *why) {
        _cleanup_(dispatch_failure_done) DispatchFailure failure = {};
        Scheduler *s = j->scheduler;
        int r;

        assert(!j->call);

        j->run_started_usec = now_usec(CLOCK_MONOTONIC);
        log_debug("Starting job %s (%s.%s, %s).", j->id, j->photon, j->method, why);

        r = dispatcher_call(s->dispatcher,
                            &(DispatchRequest) {
                                    .photon = j->photon,
                                    .method = j->method,
                                    .args = j->args,
                                    .trigger = DISPATCH_TRIGGER_SCHEDULE,
                                    .job_id = j->id,
                            },
                            on_job_done, j, &j->call, &failure);
        if (r >= 0) {
                s->n_running++;
                notify_counts_changed(s);
                return 0;
        }

        j->call = NULL;
        if (failure.error == DISPATCH_ERROR_SHUTTING_DOWN) {
                /* Not a failure of the job: photond is going down. */
                job_reply_waiter(j, &(const JobRunResult) { .id = j->id });
                return 0;
        }
        /* Nothing ran, but the attempt is a failed run all the same: it shows in the job, its channel and the
         * history, which is where people look when a job "does nothing". Worded as a command's error. */
        job_finish(j, false, NULL, failure.message ?: "Failed to start the method call");
        return 0;
}

static void job_skip(Job *j, int64_t due) {
        Scheduler *s = j->scheduler;
        char when[64];

        s->n_skipped++;
        j->skipped_runs++;
        schedule_format_iso(due, when, sizeof(when));
        log_notice("Job %s is still running; skipped the run due at %s (%" PRIu64 " skipped so far).",
                   j->id, when, j->skipped_runs);
        job_mark_dirty(j);
}

static int job_fire(Job *j, int64_t due, bool catch_up) {
        Scheduler *s = j->scheduler;

        s->n_fired++;
        if (catch_up)
                log_info("Job %s missed its time while photond was down; running it once now.", j->id);
        else {
                /* On the scheduler's clock, in µs: the timer's accuracy is 1 ms. A catch-up is as late as photond
                 * was down, which says nothing about the loop. */
                int64_t late = (int64_t) now_usec(CLOCK_REALTIME) + s->clock_offset_ms * (int64_t) USEC_PER_MSEC -
                               due * (int64_t) USEC_PER_MSEC;
                histogram_observe(&s->lateness, late > 0 ? (uint64_t) late : 0);
        }
        return job_start(j, catch_up ? "catch-up" : "schedule");
}

static int on_job_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Job *j = userdata;
        Scheduler *s = j->scheduler;
        int64_t now = scheduler_now_ms(s), due = j->next_run;
        bool catch_up = j->catch_up;

        log_debug("Job %s: timer for %" PRIi64 " fired %" PRIi64 " ms late.", j->id, due, now - due);

        /* Re-arm first, from the due time (no drift) or from now if we woke late (suspend, clock step), so that a
         * long sleep yields one run, not a burst of every occurrence missed. */
        (void) job_arm_from(j, MAX(due, now));

        if (s->hooks.shutting_down && s->hooks.shutting_down(s->hooks.userdata))
                return 0;

        if (job_running(j)) {
                job_skip(j, due);
                return 0;
        }

        if (s->hooks.claim_occurrence) {
                /* Cluster mode: the occurrence is this node's only once the cluster says so
                 * (scheduler_claim_done()); a node that cannot or may not run it records nothing. */
                if (s->hooks.claim_occurrence(s->hooks.userdata, j->id, j->photon, j->method, due, now,
                                              catch_up) < 0)
                        return 0;
                j->claim_due = due;
                j->claim_catch_up = catch_up;
                return 0;
        }
        return job_fire(j, due, catch_up);
}

/* ---- list_jobs objects ---- */

static int job_to_list_json(Job *j, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        r = json_add_string(o, "id", j->id);
        if (r >= 0)
                r = json_add_string(o, "method", j->method);
        if (r >= 0 && j->args)
                r = json_add(o, "args", json_object_get(j->args));
        if (r >= 0)
                r = json_add_string(o, "cron", j->cron);
        if (r >= 0)
                r = json_add_int64(o, "runCount", (int64_t) j->run_count);
        if (r >= 0)
                r = json_add_int64(o, "createdAt", j->created_at);
        if (r >= 0 && j->created_by)
                r = json_add_string(o, "createdBy", j->created_by);
        if (r >= 0)
                r = json_add_string(o, "photonName", j->photon);
        if (r >= 0 && j->working_dir)
                r = json_add_string(o, "workingDir", j->working_dir);
        if (r >= 0 && j->next_run > 0)
                r = json_add_int64(o, "nextRun", j->next_run);
        if (r >= 0 && j->last_run > 0)
                r = json_add_int64(o, "lastRun", j->last_run);
        if (r >= 0 && j->last_attempt > 0)
                r = json_add_int64(o, "lastAttempt", j->last_attempt);
        if (r >= 0 && j->last_status != JOB_STATUS_NONE)
                r = json_add_string(o, "lastStatus", job_status_to_string(j->last_status));
        if (r >= 0 && j->last_error)
                r = json_add_string(o, "lastError", j->last_error);
        if (r >= 0 && j->last_status != JOB_STATUS_NONE)
                r = json_add_int64(o, "consecutiveFailures", (int64_t) j->consecutive_failures);
        /* photond extensions */
        if (r >= 0)
                r = json_add_bool(o, "enabled", j->enabled);
        if (r >= 0)
                r = json_add_bool(o, "paused", j->paused);
        if (r >= 0)
                r = json_add_int64(o, "skippedRuns", (int64_t) j->skipped_runs);
        if (r >= 0)
                r = json_add_bool(o, "running", j->call != NULL);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

static JobInfo job_info(Job *j) {
        return (JobInfo) {
                .id = j->id,
                .photon = j->photon,
                .method = j->method,
                .cron = j->cron,
                .last_status = j->last_status != JOB_STATUS_NONE ? job_status_to_string(j->last_status) : "",
                .last_error = j->last_error ?: "",
                .next_run = j->next_run,
                .last_run = j->last_run,
                .run_count = j->run_count,
                .enabled = j->enabled,
                .paused = j->paused,
                .running = job_running(j),
        };
}

int scheduler_foreach(Scheduler *s, JobInfoCallback cb, void *userdata) {
        int r;

        for (Job *j = s->jobs; j; j = j->hh.next) {
                JobInfo info = job_info(j);

                r = cb(&info, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int scheduler_get(Scheduler *s, const char *id, JobInfo *ret) {
        Job *j = job_find(s, id);

        if (!j)
                return -ENOENT;
        *ret = job_info(j);
        return 0;
}

int scheduler_list(Scheduler *s, struct json_object **ret_array) {
        _cleanup_(json_object_putp) struct json_object *arr = json_object_new_array();
        int r;

        if (!arr)
                return -ENOMEM;
        for (Job *j = s->jobs; j; j = j->hh.next) {
                struct json_object *o;

                r = job_to_list_json(j, &o);
                if (r < 0)
                        return r;
                if (json_object_array_add(arr, o) < 0) {
                        json_object_put(o);
                        return -ENOMEM;
                }
        }
        *ret_array = TAKE_PTR(arr);
        return 0;
}

/* ---- loading ---- */

static int json_get_iso_ms(struct json_object *o, const char *key, int64_t *ret) {
        struct json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
                *ret = 0;
                return 0;
        }
        if (json_object_is_type(v, json_type_string)) {
                const char *s = json_object_get_cstring(v);

                return s ? schedule_parse_iso(s, ret) : -EINVAL;
        }
        /* Tolerate epoch milliseconds too. */
        return json_get_int64(o, key, false, ret);
}

static int json_get_count(struct json_object *o, const char *key, uint64_t *ret) {
        int64_t v;
        int r;

        r = json_get_int64(o, key, false, &v);
        if (r == -ENOENT) {
                *ret = 0;
                return 0;
        }
        if (r < 0 || v < 0)
                return -EINVAL;
        *ret = (uint64_t) v;
        return 0;
}

/* Builds a job from a job file. Non-logging: *ret_reason says what is wrong (static or in errbuf). Returns 0,
 * -EBADMSG for a file to report and skip, -ENOMEDIUM for a file that is not an IPC job (not ours to run). */
static int job_from_file(Scheduler *s, const char *path, const char *job_id, struct json_object *o, Job **ret,
                         char *errbuf, size_t errlen) {
        _cleanup_(job_freep) Job *j = NULL;
        const char *id, *photon, *method, *cron, *wd, *source, *status, *by, *last_status, *last_error;
        struct json_object *args = NULL, *v;
        int64_t now = scheduler_now_ms(s);
        char cron_err[256];
        int r;

#define BAD(...) ({ snprintf(errbuf, errlen, __VA_ARGS__); -EBADMSG; })

        if (!json_object_is_type(o, json_type_object))
                return BAD("not a JSON object");

        source = json_get_string(o, "source");
        if (!streq_ptr(source, "ipc")) {
                snprintf(errbuf, errlen, "source is '%s', not 'ipc'", source ?: "(none)");
                return -ENOMEDIUM;
        }

        id = json_get_string(o, "id");
        photon = json_get_string(o, "photonName");
        method = json_get_string(o, "method");
        cron = json_get_string(o, "cron");
        if (!id || !id[0] || strlen(id) > 256)
                return BAD("missing or bad \"id\"");
        if (!photon || !name_is_valid(photon))
                return BAD("missing or bad \"photonName\"");
        if (!method || !name_is_valid(method))
                return BAD("missing or bad \"method\"");
        if (!cron)
                return BAD("missing \"cron\"");

        if (json_object_object_get_ex(o, "args", &args) && json_object_is_type(args, json_type_null))
                args = NULL;
        if (args && !json_object_is_type(args, json_type_object))
                return BAD("\"args\" is not an object");
        if (args && strlen(json_object_to_json_string_ext(args, JSON_FORMAT_FLAGS)) > limits.MAX_JOB_ARGS_BYTES)
                return BAD("\"args\" exceed MAX_JOB_ARGS_BYTES (%" PRIu64 " bytes)", limits.MAX_JOB_ARGS_BYTES);

        wd = NULL;
        if (json_object_object_get_ex(o, "workingDir", &v) && !json_object_is_type(v, json_type_null)) {
                wd = json_get_string(o, "workingDir");
                if (!wd || wd[0] != '/')
                        return BAD("\"workingDir\" is not an absolute path");
        }

        r = job_new(s, &j);
        if (r < 0)
                return r;
        /* Not in the table yet: job_free() must not try to unlink it. */

        r = cron_parse(cron, &j->spec, cron_err, sizeof(cron_err));
        if (r < 0)
                return BAD("invalid cron expression '%s': %s", cron, cron_err);

        j->id = strdup(id);
        j->job_id = strdup(job_id);
        j->photon = strdup(photon);
        j->method = strdup(method);
        j->cron = strdup(cron);
        j->path = strdup(path);
        if (!j->id || !j->job_id || !j->photon || !j->method || !j->cron || !j->path)
                return -ENOMEM;
        if (wd && !(j->working_dir = strdup(wd)))
                return -ENOMEM;
        by = json_get_string(o, "createdBy");
        if (by && !(j->created_by = strdup(by)))
                return -ENOMEM;
        j->args = args ? json_object_get(args) : NULL;
        j->file = json_object_get(o);

        if (json_get_iso_ms(o, "createdAt", &j->created_at) < 0)
                return BAD("bad \"createdAt\"");
        if (j->created_at <= 0)
                j->created_at = now;
        if (json_get_iso_ms(o, "lastExecutionAt", &j->last_run) < 0)
                return BAD("bad \"lastExecutionAt\"");
        if (json_get_iso_ms(o, "lastAttemptAt", &j->last_attempt) < 0)
                return BAD("bad \"lastAttemptAt\"");
        if (json_get_iso_ms(o, "scheduledAt", &j->scheduled_at) < 0)
                return BAD("bad \"scheduledAt\"");
        if (json_get_count(o, "executionCount", &j->run_count) < 0)
                return BAD("bad \"executionCount\"");
        if (json_get_count(o, "consecutiveFailures", &j->consecutive_failures) < 0)
                return BAD("bad \"consecutiveFailures\"");
        if (json_get_count(o, "skippedRuns", &j->skipped_runs) < 0)
                return BAD("bad \"skippedRuns\"");

        last_status = json_get_string(o, "lastStatus");
        j->last_status = streq_ptr(last_status, "success") ? JOB_STATUS_SUCCESS :
                         streq_ptr(last_status, "error") ? JOB_STATUS_ERROR : JOB_STATUS_NONE;
        last_error = json_get_string(o, "lastError");
        if (last_error && !(j->last_error = schedule_truncate_utf8(last_error, ERROR_MAX_BYTES)))
                return -ENOMEM;

        /* photond's own flags win; otherwise the status a photond file carries ("active" in the reference's). */
        status = json_get_string(o, "status");
        j->enabled = !streq_ptr(status, "disabled");
        j->paused = streq_ptr(status, "paused");
        if (json_object_object_get_ex(o, "enabled", &v) && json_object_is_type(v, json_type_boolean))
                j->enabled = json_object_get_boolean(v);
        if (json_object_object_get_ex(o, "paused", &v) && json_object_is_type(v, json_type_boolean))
                j->paused = json_object_get_boolean(v);

#undef BAD
        *ret = TAKE_PTR(j);
        return 0;
}

/* Arms a job loaded at start: its regular next time, or one catch-up run shortly after start if an occurrence
 * fell into the time photond was down (within the reference's 14-day window), whichever comes first. */
static int job_arm_at_start(Job *j) {
        Scheduler *s = j->scheduler;
        int64_t now = scheduler_now_ms(s), anchor, missed, catch_at;
        int r;

        r = job_arm_from(j, now);
        if (r < 0 && r != -ENOENT)
                return r;
        if (!job_active(j))
                return 0;

        anchor = MAX(MAX(j->created_at, j->scheduled_at), MAX(j->last_run, j->last_attempt));
        r = spec_missed_occurrence(&j->spec, anchor, now, &missed);
        if (r <= 0)
                return r;

        catch_at = now + (int64_t) limits.JOB_CATCHUP_DELAY_MS;
        if (j->next_run > 0 && j->next_run <= catch_at)
                return 0;       /* the regular run comes first and serves as the catch-up */

        r = job_set_timer(j, catch_at);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the catch-up timer of job %s: %m", j->id);
        j->catch_up = true;

        char when[64];
        schedule_format_iso(missed, when, sizeof(when));
        log_info("Job %s missed its run at %s while photond was down; catching up in %" PRIu64 " ms.",
                 j->id, when, limits.JOB_CATCHUP_DELAY_MS);
        return 0;
}

static void scheduler_load_file(Scheduler *s, const char *path, const char *job_id) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_free_ char *text = NULL;
        const char *perr = NULL;
        char reason[512];
        Job *existing;
        int r;

        r = read_full_file(path, JOB_FILE_MAX_BYTES, &text, NULL);
        if (r < 0)
                return (void) log_warning_errno(r, "Skipping job file %s: cannot read it: %m", path);
        if (json_parse(text, strlen(text), &o, &perr) < 0)
                return (void) log_warning("Skipping job file %s: not valid JSON (%s). The file is left as it is.",
                                          path, perr ?: "syntax error");

        r = job_from_file(s, path, job_id, o, &j, reason, sizeof(reason));
        if (r == -ENOMEDIUM)
                return (void) log_info("Skipping %s: %s (only IPC schedules are photond's to run).", path, reason);
        if (r == -EBADMSG)
                return (void) log_warning("Skipping job file %s: %s. The file is left as it is.", path, reason);
        if (r < 0)
                return (void) log_warning_errno(r, "Skipping job file %s: %m", path);

        HASH_FIND_STR(s->jobs, j->id, existing);
        if (existing)
                return (void) log_warning("Skipping job file %s: job %s was already loaded from %s.", path, j->id,
                                          existing->path);
        if (s->n_jobs >= limits.MAX_JOBS)
                return (void) log_warning("Skipping job file %s: MAX_JOBS (%" PRIu64 ") jobs are loaded already.",
                                          path, limits.MAX_JOBS);

        job_add(s, j);
        r = job_arm_at_start(j);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Job %s could not be armed: %m", j->id);
        log_debug("Loaded job %s from %s.", j->id, path);
        TAKE_PTR(j);
}

static void history_sweep_dir(Scheduler *s, const char *dir) {
        _cleanup_free_ char *history = NULL;
        int r;

        if (asprintf(&history, "%s/%s", dir, HISTORY_FILE_NAME) < 0)
                return (void) log_oom();
        r = schedule_history_sweep(history, scheduler_now_ms(s));
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Failed to sweep %s: %m", history);
}

static void scheduler_load_base(Scheduler *s, const char *base) {
        _cleanup_free_ char *data = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        if (asprintf(&data, "%s/.data", base) < 0)
                return (void) log_oom();
        d = opendir(data);
        if (!d) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "Cannot read %s: %m", data);
                return;
        }

        while ((de = readdir(d))) {
                _cleanup_free_ char *dir = NULL;
                _cleanup_(closedirp) DIR *sd = NULL;
                struct dirent *fe;

                if (!name_is_valid(de->d_name))
                        continue;
                if (schedules_dir(base, de->d_name, &dir) < 0)
                        return (void) log_oom();
                sd = opendir(dir);
                if (!sd)
                        continue;

                while ((fe = readdir(sd))) {
                        _cleanup_free_ char *path = NULL, *job_id = NULL;
                        size_t n = strlen(fe->d_name);

                        if (n <= 5 || !endswith(fe->d_name, ".json"))
                                continue;
                        job_id = strndup(fe->d_name, n - 5);
                        if (!job_id)
                                return (void) log_oom();
                        if (asprintf(&path, "%s/%s", dir, fe->d_name) < 0)
                                return (void) log_oom();
                        if (!name_is_valid(job_id)) {
                                log_warning("Skipping job file %s: its name is not a valid jobId.", path);
                                continue;
                        }
                        scheduler_load_file(s, path, job_id);
                }

                /* The reference sweeps the history at start; so do we (14-day TTL, 500 per method). */
                history_sweep_dir(s, dir);
        }
}

static int scheduler_bases(Scheduler *s, char ***ret) {
        _cleanup_(json_object_putp) struct json_object *reg = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL;
        struct json_object *bases;
        char **list;
        size_t n = 0;
        int r;

        r = bases_path(s, &path);
        if (r < 0)
                return r;

        list = new0(char*, 2);
        if (!list)
                return -ENOMEM;
        list[n++] = strdup(s->jobs_base_dir);

        r = read_full_file(path, BASES_FILE_MAX_BYTES, &text, NULL);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Cannot read the bases registry %s: %m", path);
        else if (r >= 0 && (json_parse(text, strlen(text), &reg, NULL) < 0 ||
                            !json_object_object_get_ex(reg, "bases", &bases) ||
                            !json_object_is_type(bases, json_type_array)))
                log_warning("Ignoring the bases registry %s: not the expected JSON.", path);
        else if (r >= 0)
                for (size_t i = 0; i < json_object_array_length(bases); i++) {
                        const char *p = json_get_string(json_object_array_get_idx(bases, i), "path");
                        bool dup = false;
                        char **nl;

                        if (!p || p[0] != '/')
                                continue;
                        for (size_t k = 0; k < n && !dup; k++)
                                dup = streq_ptr(list[k], p);
                        if (dup)
                                continue;
                        nl = realloc(list, sizeof(char*) * (n + 2));
                        if (!nl)
                                break;
                        list = nl;
                        list[n++] = strdup(p);
                        list[n] = NULL;
                }

        for (size_t k = 0; k < n; k++)
                if (!list[k]) {
                        for (size_t i = 0; i < n; i++)
                                free(list[i]);
                        free(list);
                        return -ENOMEM;
                }
        *ret = list;
        return 0;
}

static void scheduler_arm_sweep(Scheduler *s);

/* The daily history sweep: the run histories of every base photond loads jobs from, as at start. */
void scheduler_sweep_history(Scheduler *s) {
        char **bases = NULL;
        int r;

        r = scheduler_bases(s, &bases);
        if (r < 0)
                return (void) log_warning_errno(r, "Cannot list the bases to sweep the run history: %m");
        for (char **b = bases; *b; b++) {
                _cleanup_free_ char *data = NULL;
                _cleanup_(closedirp) DIR *d = NULL;
                struct dirent *de;

                if (asprintf(&data, "%s/.data", *b) >= 0 && (d = opendir(data)))
                        while ((de = readdir(d))) {
                                _cleanup_free_ char *dir = NULL;

                                if (!name_is_valid(de->d_name))
                                        continue;
                                if (schedules_dir(*b, de->d_name, &dir) < 0) {
                                        log_oom();
                                        break;
                                }
                                history_sweep_dir(s, dir);
                        }
                free(*b);
        }
        free(bases);
}

static int on_sweep_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Scheduler *s = userdata;

        log_debug("Sweeping the run history (14-day TTL, %u entries per method).", HISTORY_MAX_PER_METHOD);
        scheduler_sweep_history(s);
        scheduler_arm_sweep(s);
        return 0;
}

static void scheduler_arm_sweep(Scheduler *s) {
        /* A day from now, at second 30 of a minute on the scheduler's clock: cron times are whole minutes, so a
         * sweep of large files never holds up a job that is due. */
        int64_t due = (scheduler_now_ms(s) + HISTORY_SWEEP_INTERVAL_MS) / 60000 * 60000 + 30000 -
                      s->clock_offset_ms;
        uint64_t usec = due > 0 ? (uint64_t) due * USEC_PER_MSEC : 1;
        int r;

        if (s->sweep_event_source) {
                r = sd_event_source_set_time(s->sweep_event_source, usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s->sweep_event_source, SD_EVENT_ONESHOT);
        } else {
                r = sd_event_add_time(s->event, &s->sweep_event_source, CLOCK_REALTIME, usec,
                                      USEC_PER_SEC, on_sweep_timer, s);
                if (r >= 0) {
                        (void) sd_event_source_set_description(s->sweep_event_source, "history-sweep");
                        /* After any job timer due in the same iteration. */
                        r = sd_event_source_set_priority(s->sweep_event_source, SD_EVENT_PRIORITY_IDLE);
                }
        }
        if (r < 0)
                log_warning_errno(r, "Failed to arm the daily run-history sweep: %m");
}

int scheduler_load(Scheduler *s) {
        char **bases = NULL;
        int r;

        r = scheduler_bases(s, &bases);
        if (r < 0)
                return r;
        for (char **b = bases; *b; b++) {
                scheduler_load_base(s, *b);
                free(*b);
        }
        free(bases);

        if (s->n_jobs > 0)
                log_info("Loaded %u scheduled job%s.", s->n_jobs, s->n_jobs == 1 ? "" : "s");
        scheduler_arm_sweep(s);
        return 0;
}

/* ---- wall-clock and time-zone changes ---- */

static void scheduler_recompute(Scheduler *s, const char *why) {
        int64_t now = scheduler_now_ms(s);

        log_info("%s: recomputing the due times of %u job%s.", why, s->n_jobs, s->n_jobs == 1 ? "" : "s");
        for (Job *j = s->jobs; j; j = j->hh.next) {
                int64_t next = 0;
                int r;

                if (!job_active(j))
                        continue;
                r = spec_recompute_due(&j->spec, j->next_run, j->catch_up, now, &next);
                if (r != 0)
                        (void) job_arm_at(j, r, next);
        }
}

static int clock_watch_arm(int fd) {
        /* Never expires; only there to be cancelled when someone sets the clock. */
        struct itimerspec its = { .it_value.tv_sec = (time_t) INT32_MAX * 64 };

        if (timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0)
                return -errno;
        return 0;
}

static int on_clock_changed(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Scheduler *s = userdata;
        uint64_t expirations;
        int r;

        /* ECANCELED is the news: the clock was set (settimeofday, an NTP step). */
        if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != ECANCELED && errno != EAGAIN)
                log_debug_errno(errno, "Reading the clock watch failed: %m");
        r = clock_watch_arm(fd);
        if (r < 0)
                log_warning_errno(r, "Failed to re-arm the clock watch: %m");
        scheduler_recompute(s, "The system clock was set");
        return 0;
}

static int on_tz_changed(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Scheduler *s = userdata;
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        bool changed = false;
        ssize_t n;

        while ((n = read(fd, buf, sizeof(buf))) > 0)
                for (char *p = buf; p < buf + n;) {
                        struct inotify_event *e = (struct inotify_event*) p;

                        if (e->len > 0 && streq(e->name, "localtime"))
                                changed = true;
                        p += sizeof(struct inotify_event) + e->len;
                }
        if (!changed)
                return 0;

        tzset();
        scheduler_recompute(s, "The time zone changed (/etc/localtime)");
        return 0;
}

static int scheduler_watch_time(Scheduler *s) {
        sd_event *e = s->event;
        int r;

        s->clock_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
        if (s->clock_fd < 0)
                return log_warning_errno(errno, "Cannot watch for clock changes: %m");
        r = clock_watch_arm(s->clock_fd);
        if (r >= 0)
                r = sd_event_add_io(e, &s->clock_event_source, s->clock_fd, EPOLLIN, on_clock_changed, s);
        if (r < 0)
                return log_warning_errno(r, "Cannot watch for clock changes: %m");
        (void) sd_event_source_set_description(s->clock_event_source, "clock-changed");

        /* The directory, not the file: the time zone is changed by replacing the /etc/localtime symlink. */
        s->tz_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (s->tz_fd < 0)
                return log_warning_errno(errno, "Cannot watch for time-zone changes: %m");
        if (inotify_add_watch(s->tz_fd, "/etc", IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE) < 0)
                return log_warning_errno(errno, "Cannot watch /etc for time-zone changes: %m");
        r = sd_event_add_io(e, &s->tz_event_source, s->tz_fd, EPOLLIN, on_tz_changed, s);
        if (r < 0)
                return log_warning_errno(r, "Cannot watch for time-zone changes: %m");
        (void) sd_event_source_set_description(s->tz_event_source, "tz-changed");
        return 0;
}

/* ---- lifecycle ---- */

int scheduler_new(const SchedulerConfig *config, const SchedulerHooks *hooks, Scheduler **ret) {
        _cleanup_(scheduler_freep) Scheduler *s = NULL;
        const char *e;

        assert(config);
        assert(config->event);
        assert(config->jobs_base_dir);

        s = new0(Scheduler, 1);
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(config->event);
        s->channels = config->channels;
        s->dispatcher = config->dispatcher;
        if (hooks)
                s->hooks = *hooks;
        s->clock_fd = -EBADF;
        s->tz_fd = -EBADF;
        histogram_init(&s->lateness, histogram_lateness_bounds, histogram_lateness_n_bounds);
        s->jobs_base_dir = strdup(config->jobs_base_dir);
        if (!s->jobs_base_dir)
                return -ENOMEM;

        e = getenv(TEST_CLOCK_OFFSET_ENV);
        if (e && config->system)
                log_warning("Ignoring %s: test hooks are not available to the system instance.", TEST_CLOCK_OFFSET_ENV);
        else if (e) {
                int64_t off;

                if (safe_atoi64(e, &off) < 0)
                        log_warning("Ignoring %s=%s: not a number of milliseconds.", TEST_CLOCK_OFFSET_ENV, e);
                else {
                        s->clock_offset_ms = off;
                        log_warning("TEST HOOK ACTIVE: %s=%" PRIi64 " shifts the job scheduler's clock by that many "
                                    "milliseconds. Never set this outside of tests.", TEST_CLOCK_OFFSET_ENV, off);
                }
        }

        (void) scheduler_watch_time(s);
        *ret = TAKE_PTR(s);
        return 0;
}

Scheduler* scheduler_free(Scheduler *s) {
        Job *j, *tmp;

        if (!s)
                return NULL;

        /* Runs that ended in the last iteration before the loop stopped. */
        scheduler_flush(s);
        free(s->signals);

        HASH_ITER(hh, s->jobs, j, tmp) {
                /* Going down: nobody to answer, and the runs are not ours to finish. */
                j->waiter_cb = NULL;
                job_free(j);
        }
        sd_event_source_disable_unref(s->sweep_event_source);
        sd_event_source_disable_unref(s->clock_event_source);
        sd_event_source_disable_unref(s->tz_event_source);
        safe_close(s->clock_fd);
        safe_close(s->tz_fd);
        sd_event_unref(s->event);
        free(s->jobs_base_dir);
        return mfree(s);
}

int64_t scheduler_clock_ms(Scheduler *s) {
        return scheduler_now_ms(s);
}

unsigned scheduler_count(Scheduler *s) {
        return s ? s->n_jobs : 0;
}

unsigned scheduler_running(Scheduler *s) {
        return s ? s->n_running : 0;
}

void scheduler_get_stats(Scheduler *s, SchedulerStats *ret) {
        assert(ret);

        *ret = (SchedulerStats) {
                .jobs = s->n_jobs,
                .running = s->n_running,
                .fired = s->n_fired,
                .run_now = s->n_run_now,
                .succeeded = s->n_succeeded,
                .failed = s->n_failed,
                .skipped = s->n_skipped,
                .lateness = &s->lateness,
        };
}

int scheduler_add_status(Scheduler *s, struct json_object *data) {
        int r;

        r = json_add_int64(data, "jobs", s->n_jobs);
        if (r < 0)
                return r;
        return json_add_int64(data, "runningJobs", s->n_running);
}

/* ---- what the front ends ask (photond-control-jobs.c, photond-bus.c) ---- */

/* Moves the configuration of src (a fully built replacement) into the live job dst; counters, state, timer, a
 * running call and the file's keys photond does not know (requiredConfig, a newer reference's) stay with dst. */
static void job_take_config(Job *dst, Job *src) {
#define SWAP(a, b) do { __typeof__(a) _t = (a); (a) = (b); (b) = _t; } while (false)
        SWAP(dst->method, src->method);
        SWAP(dst->cron, src->cron);
        SWAP(dst->spec, src->spec);
        SWAP(dst->args, src->args);
        SWAP(dst->created_by, src->created_by);
        dst->scheduled_at = src->scheduled_at;
#undef SWAP
}

static int refuse(char **ret_reason, int error, const char *fmt, ...) _printf_(3, 4);
static int refuse(char **ret_reason, int error, const char *fmt, ...) {
        va_list ap;

        if (!ret_reason)
                return error;
        va_start(ap, fmt);
        if (vasprintf(ret_reason, fmt, ap) < 0)
                *ret_reason = NULL;
        va_end(ap);
        return *ret_reason ? error : -ENOMEM;
}

/* What scheduling spec would be refused for (scheduler_check()'s rules); on success its parsed cron expression, its
 * key and the job it would replace (NULL: a new one). */
static int job_spec_check(Scheduler *s, const JobSpec *spec, int64_t now, CronSpec *ret_cron, char **ret_key,
                          Job **ret_existing, char **ret_reason) {
        const char *base = spec->working_dir ?: s->jobs_base_dir;
        _cleanup_free_ char *key = NULL, *marker = NULL;
        char err[256];
        Job *j = NULL;
        int r;

        if (ret_reason)
                *ret_reason = NULL;
        if (!name_is_valid(spec->photon) || !name_is_valid(spec->job_id) || !name_is_valid(spec->method) ||
            !spec->cron)
                return -EINVAL;
        if (spec->args &&
            strlen(json_object_to_json_string_ext(spec->args, JSON_FORMAT_FLAGS)) > limits.MAX_JOB_ARGS_BYTES)
                return -E2BIG;
        if (asprintf(&marker, "%s/.photon-no-host", base) < 0)
                return -ENOMEM;
        if (access(marker, F_OK) >= 0)
                return refuse(ret_reason, -EPERM, "host-disabled: %s has a .photon-no-host marker", base);
        r = cron_validate(spec->cron, ms_to_sec_floor(now), ret_cron, err, sizeof(err));
        if (r < 0)
                return refuse(ret_reason, -EINVAL, "Invalid cron expression: %s", err);
        r = schedule_job_key(spec->photon, spec->working_dir, spec->job_id, &key);
        if (r < 0)
                return r;
        HASH_FIND_STR(s->jobs, key, j);
        if (!j && s->n_jobs >= limits.MAX_JOBS)
                return -ENOSPC;
        if (ret_key)
                *ret_key = TAKE_PTR(key);
        if (ret_existing)
                *ret_existing = j;
        return 0;
}

int scheduler_schedule(Scheduler *s, const JobSpec *spec, JobInfo *ret_info, char **ret_reason) {
        _cleanup_(job_freep) Job *n = NULL;
        _cleanup_free_ char *key = NULL, *dir = NULL;
        const char *wd = spec->working_dir, *base = wd ?: s->jobs_base_dir;
        int64_t now = scheduler_now_ms(s);
        Job *j;
        int r;

        r = job_new(s, &n);
        if (r < 0)
                return r;
        r = job_spec_check(s, spec, now, &n->spec, &key, &j, ret_reason);
        if (r < 0)
                return r;

        r = schedules_dir(base, spec->photon, &dir);
        if (r < 0)
                return r;
        n->id = TAKE_PTR(key);
        n->job_id = strdup(spec->job_id);
        n->photon = strdup(spec->photon);
        n->method = strdup(spec->method);
        n->cron = strdup(spec->cron);
        if (j)
                n->path = strdup(j->path);
        else if (asprintf(&n->path, "%s/%s.json", dir, spec->job_id) < 0)
                n->path = NULL;
        if (!n->id || !n->job_id || !n->photon || !n->method || !n->cron || !n->path)
                return -ENOMEM;
        if (wd && !(n->working_dir = strdup(wd)))
                return -ENOMEM;
        if (spec->created_by && !(n->created_by = strdup(spec->created_by)))
                return -ENOMEM;
        n->args = spec->args ? json_object_get(spec->args) : NULL;
        n->scheduled_at = now;

        /* Rescheduling replaces the job's configuration; the reference keeps runCount and createdAt, photond
         * also keeps the other counters and the enabled/paused state an administrator set. */
        if (j) {
                n->created_at = j->created_at;
                n->run_count = j->run_count;
                n->consecutive_failures = j->consecutive_failures;
                n->skipped_runs = j->skipped_runs;
                n->last_run = j->last_run;
                n->last_attempt = j->last_attempt;
                n->last_status = j->last_status;
                n->enabled = j->enabled;
                n->paused = j->paused;
                n->file = json_object_get(j->file);     /* keys photond does not know stay in the file */
                if (j->last_error && !(n->last_error = strdup(j->last_error)))
                        return -ENOMEM;
        } else
                n->created_at = now;

        /* On disk before we say "scheduled": a job we confirmed must survive a restart. */
        r = job_save(n);
        if (r < 0) {
                log_warning_errno(r, "Failed to write the job file %s: %m", n->path);
                return refuse(ret_reason, -EIO, "Failed to persist the job to %s: %s", n->path,
                              strerror(ERRNO_VALUE(r)));
        }

        if (j) {
                job_take_config(j, n);
                job_unmark_dirty(j);    /* the file just written holds its counters too */
                log_info("Rescheduled job %s: %s.%s at '%s'.", j->id, j->photon, j->method, j->cron);
        } else {
                j = TAKE_PTR(n);
                job_add(s, j);
                log_info("Scheduled job %s: %s.%s at '%s'.", j->id, j->photon, j->method, j->cron);
        }
        (void) job_arm_from(j, now);

        if (wd && !streq(wd, s->jobs_base_dir)) {
                r = bases_register(s, wd);
                if (r < 0)
                        log_warning_errno(r, "Failed to register %s in the bases registry; the job will not be "
                                          "loaded after a restart: %m", wd);
        }

        if (ret_info)
                *ret_info = job_info(j);
        return 0;
}

int scheduler_check(Scheduler *s, const JobSpec *spec, char **ret_reason) {
        CronSpec cron;

        return job_spec_check(s, spec, scheduler_now_ms(s), &cron, NULL, NULL, ret_reason);
}

void scheduler_claim_done(Scheduler *s, const char *id, int64_t due_ms, bool granted) {
        bool catch_up;
        Job *j;

        HASH_FIND_STR(s->jobs, id, j);
        if (!j || j->claim_due != due_ms)
                return;         /* unscheduled, or rescheduled to other times, meanwhile */
        j->claim_due = 0;
        catch_up = j->claim_catch_up;
        if (!granted)
                return;
        if (s->hooks.shutting_down && s->hooks.shutting_down(s->hooks.userdata))
                return;
        if (job_running(j)) {
                /* A run_job began while the claim was on its way. */
                job_skip(j, due_ms);
                return;
        }
        (void) job_fire(j, due_ms, catch_up);
}

int scheduler_set_state(Scheduler *s, const char *id, bool enabled, bool paused) {
        Job *j;
        bool was_active;

        HASH_FIND_STR(s->jobs, id, j);
        if (!j)
                return -ENOENT;
        if (j->enabled == enabled && j->paused == paused)
                return 0;
        was_active = job_active(j);
        j->enabled = enabled;
        j->paused = paused;
        if (was_active != job_active(j))
                (void) job_arm_from(j, scheduler_now_ms(s));
        job_mark_dirty(j);
        notify_counts_changed(s);
        return 0;
}

int scheduler_unschedule(Scheduler *s, const char *id) {
        Job *j = job_find(s, id);

        if (!j)
                return -ENOENT;
        log_info("Unscheduling job %s.", j->id);
        if (unlink(j->path) < 0) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "Failed to remove the job file %s: %m", j->path);
        } else {
                /* Else a power loss could bring the job back. */
                int r = fsync_parent_directory(j->path);
                if (r < 0)
                        log_warning_errno(r, "Failed to sync the directory of %s: %m", j->path);
        }
        job_free(j);
        notify_counts_changed(s);
        return 0;
}

int scheduler_switch(Scheduler *s, const char *photon, const char *method, JobSwitch sw,
                     struct json_object **ret_ids) {
        _cleanup_(json_object_putp) struct json_object *ids = NULL;
        int64_t now = scheduler_now_ms(s);

        if (sw < 0 || sw >= _JOB_SWITCH_MAX)
                return -EINVAL;

        ids = json_object_new_array();
        if (!ids)
                return -ENOMEM;
        for (Job *j = s->jobs; j; j = j->hh.next) {
                bool was_active = job_active(j);

                if (!streq(j->photon, photon) || !streq(j->method, method))
                        continue;
                switch (sw) {
                case JOB_SWITCH_ENABLE:
                        j->enabled = true;
                        break;
                case JOB_SWITCH_DISABLE:
                        j->enabled = false;
                        break;
                case JOB_SWITCH_PAUSE:
                        j->paused = true;
                        break;
                case JOB_SWITCH_RESUME:
                default:
                        j->paused = false;
                        break;
                }
                if (was_active != job_active(j))
                        (void) job_arm_from(j, now);
                job_mark_dirty(j);      /* written before the reply leaves */
                if (json_object_array_add(ids, json_object_new_string(j->id)) < 0)
                        return -ENOMEM;
        }
        if (json_object_array_length(ids) == 0)
                return -ENOENT;

        notify_counts_changed(s);
        *ret_ids = TAKE_PTR(ids);
        return 0;
}

int scheduler_history(Scheduler *s, const char *photon, const char *method, const char *working_dir,
                      int64_t since_ms, unsigned limit, struct json_object **ret_entries) {
        _cleanup_free_ char *dir = NULL, *path = NULL;
        int r;

        r = schedules_dir(working_dir ?: s->jobs_base_dir, photon, &dir);
        if (r < 0)
                return r;
        if (asprintf(&path, "%s/%s", dir, HISTORY_FILE_NAME) < 0)
                return -ENOMEM;
        r = schedule_history_read(path, method, since_ms, limit, scheduler_now_ms(s), ret_entries);
        if (r < 0) {
                log_warning_errno(r, "Failed to read %s: %m", path);
                return -EIO;
        }
        return 0;
}

int scheduler_run_job(Scheduler *s, const char *id, JobRunCallback cb, void *waiter, const char *waiter_id) {
        Job *j = job_find(s, id);

        if (!j)
                return -ENOENT;
        if (job_running(j))
                return -EBUSY;

        /* job_finish() reports to the waiter (also when the call could not even start). */
        if (cb) {
                j->waiter_id = waiter_id ? strdup(waiter_id) : NULL;
                if (waiter_id && !j->waiter_id)
                        return -ENOMEM;
                j->waiter_cb = cb;
                j->waiter = waiter;
        }
        s->n_run_now++;
        return job_start(j, "run now");
}

void scheduler_waiter_gone(Scheduler *s, void *waiter) {
        if (!s)
                return;         /* the owner may free the scheduler before its waiters go */
        for (Job *j = s->jobs; j; j = j->hh.next)
                if (j->waiter_cb && j->waiter == waiter) {
                        j->waiter_cb = NULL;
                        j->waiter = NULL;
                        j->waiter_id = mfree(j->waiter_id);
                }
}

int scheduler_foreach_waiter(Scheduler *s, int (*cb)(void *waiter, const char *waiter_id, void *userdata),
                             void *userdata) {
        int r;

        for (Job *j = s->jobs; j; j = j->hh.next) {
                if (!j->waiter_cb)
                        continue;
                r = cb(j->waiter, j->waiter_id, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}
