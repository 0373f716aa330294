/* SPDX-License-Identifier: MIT */
#pragma once

/* Scheduled jobs: cron timers, persistence in the reference layout, catch-up, run history. */

#include <stdbool.h>
#include <stdint.h>

#include "photond-protocol.h"

typedef struct Manager Manager;
typedef struct Client Client;
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
        void *userdata;
} SchedulerHooks;

/* hooks may be NULL (nobody listens); it is copied. */
int scheduler_new(Manager *m, const SchedulerHooks *hooks, Scheduler **ret);
Scheduler* scheduler_free(Scheduler *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Scheduler*, scheduler_free);

/* Loads persisted jobs and arms their timers. Problems with single files are logged, not fatal. */
int scheduler_load(Scheduler *s);

/* Writes the job files that runs and state switches changed, then emits the JobFinished signals that waited for
 * them. manager_flush() calls it before any client output leaves (group commit, as state.json); scheduler_free()
 * calls it too. scheduler_unsaved() says whether anything waits. */
void scheduler_flush(Scheduler *s);
bool scheduler_unsaved(Scheduler *s);

/* Sweeps the run history of every base (14-day TTL, 500 per method): at start and then once a day. */
void scheduler_sweep_history(Scheduler *s);

/* A disconnecting client stops waiting for the run_job results it asked for (the runs go on). */
void scheduler_client_gone(Scheduler *s, Client *c);

int scheduler_handle_schedule(Manager *m, Client *c, Request *req);
int scheduler_handle_unschedule(Manager *m, Client *c, Request *req);
int scheduler_handle_list_jobs(Manager *m, Client *c, Request *req);
int scheduler_handle_set_state(Manager *m, Client *c, Request *req);    /* enable|disable|pause|resume_schedule */
int scheduler_handle_get_execution_history(Manager *m, Client *c, Request *req);
int scheduler_handle_run_job(Manager *m, Client *c, Request *req);

int scheduler_add_status(Scheduler *s, struct json_object *data);
unsigned scheduler_count(Scheduler *s);
unsigned scheduler_running(Scheduler *s);

/* For the D-Bus object. A job is named by its full key or, as unschedule does, by the jobId after ":ipc:". */
/* A new array of the list_jobs objects (owned by the caller). */
int scheduler_list(Scheduler *s, struct json_object **ret_array);

/* One job as a list shows it (D-Bus ListJobs): valid during the callback only. Strings are never NULL: "" for a
 * job that never ran (last_status) or never failed (last_error); times 0 when unknown. */
typedef struct JobInfo {
        const char *id;
        const char *photon;
        const char *method;
        const char *cron;
        const char *last_status;
        const char *last_error;
        int64_t next_run;               /* ms since the epoch */
        int64_t last_run;
        uint64_t run_count;
} JobInfo;
typedef int (*JobInfoCallback)(const JobInfo *info, void *userdata);

/* Calls cb for every job, in scheduler_list()'s order, without building JSON; stops at cb's first negative return
 * and returns it. */
int scheduler_foreach(Scheduler *s, JobInfoCallback cb, void *userdata);
/* Starts a run now, out of schedule. -ENOENT unknown job, -EBUSY when it is running already. */
int scheduler_run_job(Scheduler *s, const char *id);
/* Removes the job and its file. -ENOENT unknown job. */
int scheduler_unschedule(Scheduler *s, const char *id);

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
