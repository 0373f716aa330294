/* SPDX-License-Identifier: MIT */
#pragma once

/* Scheduled jobs: cron timers, persistence in the reference layout, catch-up, run history. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "metrics.h"

typedef struct Channels Channels;
typedef struct Dispatcher Dispatcher;
typedef struct Scheduler Scheduler;
struct json_object;

/* What the scheduler tells its owner, who fills this in (the Manager: photond-manager.c). A NULL member means
 * nobody listens. */
typedef struct SchedulerHooks {
        /* Jobs came, went, started or ended (the D-Bus property Jobs is compared and announced if it changed). */
        void (*counts_changed)(void *userdata);
        /* A run ended (the D-Bus signal JobFinished), announced by scheduler_flush() once its files are written;
         * status: "success" or "error". */
        void (*job_finished)(void *userdata, const char *id, const char *status, int64_t duration_ms);
        /* Job files or JobFinished signals wait for scheduler_flush(): the owner calls it before any output that
         * may report them leaves (the Manager's flush at the end of the loop iteration). */
        void (*flush_needed)(void *userdata);
        /* Is photond going down? A job that falls due then does not run (nor count as skipped). NULL: never. */
        bool (*shutting_down)(void *userdata);
        /* Cluster mode only (NULL on a single node: every occurrence is this node's, no other cost). May this node
         * run the occurrence of job id due at due_ms (the scheduler's clock, as now_ms)? A catch-up run after a
         * start is flagged. Returns 0 and answers once, later, with scheduler_claim_done(); or a negative errno:
         * not here, and nothing runs or is recorded here (another node runs it, or none can). */
        int (*claim_occurrence)(void *userdata, const char *id, const char *photon, const char *method,
                                int64_t due_ms, int64_t now_ms, bool catch_up);
        /* Cluster mode only (NULL on a single node): a run's history entry, as it was appended to the run history
         * of photon in the base working_dir (NULL: the default one); entry is borrowed. */
        void (*run_recorded)(void *userdata, const char *photon, const char *method, const char *working_dir,
                             struct json_object *entry);
        void *userdata;
} SchedulerHooks;

/* What the scheduler works with; the string is copied. */
typedef struct SchedulerConfig {
        sd_event *event;                /* the job timers, the clock and time-zone watches, the daily sweep */
        Channels *channels;             /* job-completed/job-failed on jobs:<photon> */
        Dispatcher *dispatcher;         /* runs the jobs */
        const char *jobs_base_dir;      /* the default base: <dir>/.data/<photon>/schedules/, .data/.bases.json */
        bool system;                    /* the system instance, which ignores the test clock hook */
} SchedulerConfig;

/* The run history's retention, per method of a photon in a base (the reference's). */
#define SCHEDULE_HISTORY_TTL_MS ((int64_t) 14 * 24 * 3600 * 1000)
#define SCHEDULE_HISTORY_MAX_PER_METHOD 500u

/* hooks may be NULL (nobody listens); it is copied. */
int scheduler_new(const SchedulerConfig *config, const SchedulerHooks *hooks, Scheduler **ret);
Scheduler* scheduler_free(Scheduler *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Scheduler*, scheduler_free);

/* Loads persisted jobs and arms their timers. Problems with single files are logged, not fatal. */
int scheduler_load(Scheduler *s);

/* Writes the job files that runs and state switches changed, then emits the JobFinished signals that waited for
 * them. The owner calls it (after hooks.flush_needed) before any output leaves (group commit, as state.json);
 * scheduler_free() calls it too. scheduler_unsaved() says whether anything waits. */
void scheduler_flush(Scheduler *s);
bool scheduler_unsaved(Scheduler *s);

/* Sweeps the run history of every base (14-day TTL, 500 per method): at start and then once a day. */
void scheduler_sweep_history(Scheduler *s);

int scheduler_add_status(Scheduler *s, struct json_object *data);
unsigned scheduler_count(Scheduler *s);
/* The scheduler's "now" in ms since the epoch (the test clock offset included): run history times are on it. */
int64_t scheduler_clock_ms(Scheduler *s);
unsigned scheduler_running(Scheduler *s);

/* The scheduler's counters (GET /metrics): runs since the start, by how they began and ended. */
typedef struct SchedulerStats {
        unsigned jobs;                  /* scheduled (scheduler_count()) */
        unsigned running;
        uint64_t fired;                 /* runs their timer started, catch-ups included */
        uint64_t run_now;               /* runs scheduler_run_job() started (run_job, RunJob, the HTTP API) */
        uint64_t succeeded;             /* runs that ended, whatever started them */
        uint64_t failed;                /* the same, a run that could not even start included */
        uint64_t skipped;               /* due while the last run still went on: not run */
        const Histogram *lateness;      /* how late timer runs started after their due time (catch-ups, which
                                         * are as late as photond was down, aside); valid while s lives */
} SchedulerStats;

void scheduler_get_stats(Scheduler *s, SchedulerStats *ret);

/* A job is named by its full key or, as unschedule does, by the jobId after ":ipc:" (the first such job). */

/* A new array of the list_jobs objects (owned by the caller). */
int scheduler_list(Scheduler *s, struct json_object **ret_array);

/* One job as a list shows it (D-Bus ListJobs). Strings are never NULL: "" for a job that never ran (last_status)
 * or never failed (last_error); times 0 when unknown. */
typedef struct JobInfo {
        const char *id;
        const char *photon;
        const char *method;
        const char *cron;
        const char *last_status;
        const char *last_error;
        int64_t next_run;               /* ms since the epoch, 0: not armed */
        int64_t last_run;
        uint64_t run_count;
        bool enabled;
        bool paused;
        bool running;                   /* a run goes on, or the process of a timed-out one is still ending */
} JobInfo;
typedef int (*JobInfoCallback)(const JobInfo *info, void *userdata);

/* Calls cb for every job, in scheduler_list()'s order, without building JSON (info valid during the callback
 * only); stops at cb's first negative return and returns it. */
int scheduler_foreach(Scheduler *s, JobInfoCallback cb, void *userdata);
/* The job id names; -ENOENT if none. *ret is valid until the job changes or goes. */
int scheduler_get(Scheduler *s, const char *id, JobInfo *ret);

/* A job as a schedule request defines it (all borrowed). */
typedef struct JobSpec {
        const char *photon;             /* photon, job_id and method: valid names (name_is_valid()) */
        const char *job_id;
        const char *method;
        const char *cron;
        struct json_object *args;       /* an object, or NULL for none */
        const char *working_dir;        /* the base, an existing directory; NULL: the default one */
        const char *created_by;         /* the requester's sessionId, or NULL */
} JobSpec;

/* Creates the job, or gives the job of the same key (photon, working_dir, job_id) the new method, cron, args and
 * created_by, keeping its counters and its enabled/paused state; writes its file (before returning: a job
 * confirmed must survive a restart) and arms its timer. Returns 0 and the job in *ret_info (may be NULL; valid as
 * scheduler_get()'s). Refused with *ret_reason set (allocated, the one wording; may be NULL not to have it):
 * -EPERM, the base has a .photon-no-host marker; -EINVAL, a bad cron expression; -EIO, the file could not be
 * written. A cap, without a reason (limit_error() words it): -E2BIG, args over limits.MAX_JOB_ARGS_BYTES; -ENOSPC,
 * limits.MAX_JOBS jobs exist. -EINVAL without a reason for names that are not valid; -ENOMEM. */
int scheduler_schedule(Scheduler *s, const JobSpec *spec, JobInfo *ret_info, char **ret_reason);

/* What scheduler_schedule() would refuse, without changing anything: the same errors and reasons (a write of
 * the file aside). Cluster mode checks a schedule request with it before Redis gets it. */
int scheduler_check(Scheduler *s, const JobSpec *spec, char **ret_reason);

/* The answer to SchedulerHooks.claim_occurrence for job id (its full key) and due_ms: granted, the run starts
 * now (unless the job went, changed its due time, or runs already: then it is skipped); else nothing happens. */
void scheduler_claim_done(Scheduler *s, const char *id, int64_t due_ms, bool granted);

/* Sets both switches of the job id (its full key) at once, as a cluster's copy of the job says; re-arms or
 * disarms it, the file written before the next output leaves. -ENOENT unknown job. */
int scheduler_set_state(Scheduler *s, const char *id, bool enabled, bool paused);

/* Removes the job and its file. -ENOENT unknown job. */
int scheduler_unschedule(Scheduler *s, const char *id);

/* The state switches, which a job's file keeps. */
typedef enum JobSwitch {
        JOB_SWITCH_ENABLE,
        JOB_SWITCH_DISABLE,
        JOB_SWITCH_PAUSE,               /* paused: not run until resumed; disabled is the stronger, lasting off */
        JOB_SWITCH_RESUME,
        _JOB_SWITCH_MAX,
        _JOB_SWITCH_INVALID = -EINVAL,
} JobSwitch;

/* Switches every job of photon that runs method, and re-arms or disarms it; the files are written before the next
 * output leaves (scheduler_flush()). Returns 0 and a new array of their ids, in scheduler_list()'s order; -ENOENT
 * when no job matched; -ENOMEM. */
int scheduler_switch(Scheduler *s, const char *photon, const char *method, JobSwitch sw,
                     struct json_object **ret_ids);

/* The run history of photon's method in the base working_dir (NULL: the default one): a new array of entries,
 * newest first, at most limit (0: all that are kept), none older than since_ms. -EIO when the history exists but
 * cannot be read (logged), -ENOMEM. */
int scheduler_history(Scheduler *s, const char *photon, const char *method, const char *working_dir,
                      int64_t since_ms, unsigned limit, struct json_object **ret_entries);

/* How a run that scheduler_run_job() started ended, for the waiter that asked (valid during the callback only). */
typedef struct JobRunResult {
        const char *id;                 /* the job's key */
        bool ran;                       /* false: no run to report: reason says why, or NULL: photond is going
                                         * down and nothing started */
        bool success;
        int64_t duration_ms;
        uint64_t run_count;
        struct json_object *result;     /* success: what the method returned, or NULL */
        const char *reason;             /* failure: why */
} JobRunResult;

/* waiter and waiter_id (the waiter's own id of its request) as given to scheduler_run_job(). */
typedef void (*JobRunCallback)(void *waiter, const char *waiter_id, const JobRunResult *result);

/* Starts a run now, out of schedule. -ENOENT unknown job, -EBUSY when it is running already, -ENOMEM. With cb,
 * the waiter hears how it ended, once: perhaps before this returns (a run that cannot start is a failed run at
 * once); when the job is unscheduled while it runs; never after scheduler_waiter_gone(waiter) or once the
 * scheduler is freed. waiter_id is copied. */
int scheduler_run_job(Scheduler *s, const char *id, JobRunCallback cb, void *waiter, const char *waiter_id);

/* The waiter went away: the runs it asked for go on and report to nobody. */
void scheduler_waiter_gone(Scheduler *s, void *waiter);
/* Calls cb with every waiter a run still has to report to and its waiter_id (valid during the call only); stops at
 * cb's first negative return and returns it. cb must not change the jobs. */
int scheduler_foreach_waiter(Scheduler *s, int (*cb)(void *waiter, const char *waiter_id, void *userdata),
                             void *userdata);

/* ---- pure helpers, exposed for the unit tests ---- */

/* The reference's job key: "<photon>:ipc:<jobId>", or "<photon>:<first 8 hex of sha256(workingDir)>:ipc:<jobId>". */
int schedule_job_key(const char *photon, const char *working_dir, const char *job_id, char **ret);

/* JavaScript's Date.toISOString(): "2024-05-01T12:00:00.000Z" (buf of at least 32 bytes). */
void schedule_format_iso(int64_t ms, char *buf, size_t size);
/* Parses that form (and "+hh:mm" offsets, missing milliseconds). -EINVAL otherwise. */
int schedule_parse_iso(const char *s, int64_t *ret_ms);

/* The history's outputPreview of a method result: strings as they are (as JSON if they hold a NUL byte), anything
 * else as compact JSON, cut after 500 characters with "…" appended. NULL for no result (NULL or JSON null).
 * Allocated. */
char* schedule_output_preview(struct json_object *data);

/* Copies s into a new string of at most max bytes, cut at a UTF-8 character boundary. */
char* schedule_truncate_utf8(const char *s, size_t max);

/* The first occurrence of the expression strictly after from_ms, in ms. -ENOENT if none within the engine's
 * search window, -EINVAL for a bad expression. */
int schedule_cron_next(const char *expr, int64_t from_ms, int64_t *ret_ms);

/* After a wall-clock step or a time-zone change: the new due time of an armed job (next_run_ms, 0 = none) computed
 * from now_ms. Returns 1 with *ret_ms, 0 when the job keeps its timer (a pending catch-up, or a due time that
 * has passed and fires now), or a negative errno (-ENOENT: no further occurrence). */
int schedule_recompute_due(const char *expr, int64_t next_run_ms, bool catch_up, int64_t now_ms, int64_t *ret_ms);

/* Persistent=-style catch-up: did an occurrence of expr fall in (max(anchor, now - 14 days), now]? Returns 1
 * (and the missed occurrence), 0, or a negative errno. */
int schedule_missed_occurrence(const char *expr, int64_t anchor_ms, int64_t now_ms, int64_t *ret_missed_ms);

/* The run history file (executions.jsonl): append one entry (rotating first when the file has reached
 * rotate_bytes, keeping 3 archives), read entries of one method newest first (ts >= since_ms and not past the
 * 14-day TTL at now_ms; at most limit, 0 = all up to the per-method cap of 500), and sweep (14-day TTL, newest 500
 * per method). Only the active file is read; the rotated archives are not. */
int schedule_history_append(const char *path, struct json_object *entry, uint64_t rotate_bytes);
int schedule_history_read(const char *path, const char *method, int64_t since_ms, unsigned limit, int64_t now_ms,
                          struct json_object **ret_entries);
int schedule_history_sweep(const char *path, int64_t now_ms);
