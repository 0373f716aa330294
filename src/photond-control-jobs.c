/* SPDX-License-Identifier: MIT */

/* The control front end's scheduled jobs: schedule, unschedule, list_jobs, enable/disable/pause/resume_schedule,
 * get_execution_history and run_job. Each checks its request, calls the scheduler (photond-schedule.c) and words
 * the answer; a run_job requester waits as the scheduler's waiter (the Client, scheduler_waiter_gone() when it
 * goes). */

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "json-util.h"
#include "log.h"
#include "photond-client.h"
#include "photond-cluster-jobs.h"
#include "photond-control.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "photond-protocol.h"
#include "photond-schedule.h"
#include "string-util.h"

/* A result with success false: what the reference answers when it refuses a job request. */
static int reply_refusal(Client *c, const char *id, const char *flag, const char *reason) {
        _cleanup_(json_object_putp) struct json_object *data = json_object_new_object();

        if (!data)
                return -ENOMEM;
        if ((flag && json_add_bool(data, flag, false) < 0) || json_add_string(data, "reason", reason) < 0)
                return -ENOMEM;
        return client_reply_result(c, id, false, TAKE_PTR(data));
}

static int reply_bad_name(Client *c, const Request *req, const char *field, const char *value) {
        char msg[256];

        return client_reply_error(c, req->id, name_error(field, value, msg, sizeof(msg)), NULL);
}

/* The optional workingDir of a request: NULL when absent. Replies itself and returns 1 when it is unacceptable. */
static int request_working_dir(Manager *m, Client *c, const Request *req, const char **ret) {
        struct json_object *v;
        const char *wd;
        struct stat st;
        char msg[PATH_MAX + 128];

        *ret = NULL;
        if (!json_object_object_get_ex(req->json, "workingDir", &v) || json_object_is_type(v, json_type_null))
                return 0;
        wd = json_get_string(req->json, "workingDir");
        if (!wd)
                return client_reply_error(c, req->id, "Invalid workingDir: it must be a string", NULL) ?: 1;
        if (m->system)
                return client_reply_error(c, req->id, "workingDir is not supported by the system instance",
                                          "Leave workingDir out; the system instance keeps jobs in its state "
                                          "directory") ?: 1;
        if (wd[0] != '/' || strlen(wd) >= PATH_MAX) {
                snprintf(msg, sizeof(msg), "Invalid workingDir '%.200s': it must be an absolute path", wd);
                return client_reply_error(c, req->id, msg, NULL) ?: 1;
        }
        if (stat(wd, &st) < 0 || !S_ISDIR(st.st_mode)) {
                snprintf(msg, sizeof(msg), "Invalid workingDir '%.200s': it is not an existing directory", wd);
                return client_reply_error(c, req->id, msg, NULL) ?: 1;
        }
        *ret = wd;
        return 0;
}

static int reply_scheduled(Client *c, const char *request_id, const char *id, const JobInfo *job) {
        _cleanup_(json_object_putp) struct json_object *data = json_object_new_object();
        int r;

        if (!data)
                return -ENOMEM;
        r = json_add_bool(data, "scheduled", true);
        if (r >= 0)
                r = json_add_string(data, "jobId", id);
        if (r >= 0 && job && job->next_run > 0)
                r = json_add_int64(data, "nextRun", job->next_run);
        if (r >= 0 && job && !(job->enabled && !job->paused)) {
                r = json_add_bool(data, "enabled", job->enabled);
                if (r >= 0)
                        r = json_add_bool(data, "paused", job->paused);
        }
        if (r < 0)
                return r;
        return client_reply_result(c, request_id, true, TAKE_PTR(data));
}

/* Cluster mode: Redis did not take a change, so nothing changed anywhere. */
static int reply_cluster_unavailable_text(Client *c, const char *request_id, const char *why) {
        char msg[640];

        snprintf(msg, sizeof(msg), "Cluster unavailable: %s", why);
        return client_reply_error(c, request_id, msg,
                                  "Check that Redis is running and reachable (photonctl status shows the cluster "
                                  "state), then send the request again; nothing was changed");
}

static int reply_cluster_unavailable(Manager *m, Client *c, const char *request_id, int error) {
        return reply_cluster_unavailable_text(c, request_id, cluster_jobs_unavailable(m->cluster_jobs, error));
}

/* Whether an answer of the cluster is one to reply with: false when its client went, or when Redis could not
 * be asked (that reply is made here). */
static bool cluster_answer_usable(Client *c, const char *request_id, const ClusterJobsResult *result) {
        if (c->disconnected)
                return false;
        if (result->unavailable) {
                (void) reply_cluster_unavailable_text(c, request_id, result->unavailable);
                return false;
        }
        return true;
}

/* The answers of the cluster (photond-cluster-jobs.c) to the changes below; the client is the waiter. */
static void on_cluster_scheduled(void *waiter, const char *request_id, const ClusterJobsResult *result) {
        Client *c = waiter;
        int r;

        if (!cluster_answer_usable(c, request_id, result))
                return;
        if (result->full)
                r = client_reply_limit(c, request_id, LIMIT_MAX_JOBS, UINT64_MAX);
        else
                r = reply_scheduled(c, request_id, result->id, result->job);
        if (r < 0)
                log_oom();
}

static void on_cluster_unscheduled(void *waiter, const char *request_id, const ClusterJobsResult *result) {
        _cleanup_(json_object_putp) struct json_object *data = NULL;
        Client *c = waiter;

        if (!cluster_answer_usable(c, request_id, result))
                return;
        data = json_object_new_object();
        if (!data || json_add_bool(data, "unscheduled", result->removed) < 0 ||
            json_add_string(data, "jobId", result->id) < 0)
                return (void) log_oom();
        (void) client_reply_result(c, request_id, true, TAKE_PTR(data));
}

int control_jobs_schedule(Manager *m, Client *c, Request *req) {
        _cleanup_free_ char *reason = NULL;
        const char *photon, *job_id, *method, *wd;
        struct json_object *args = NULL;
        JobSpec spec;
        JobInfo job;
        int r;

        photon = request_string(req, "photonName");
        if (!photon)
                return client_reply_error(c, req->id, "photonName required for scheduling",
                                          "Include photonName in the request payload");
        job_id = request_string(req, "jobId");
        method = request_string(req, "method");

        if (!name_is_valid(photon))
                return reply_bad_name(c, req, "photonName", photon);
        if (!name_is_valid(job_id))
                return reply_bad_name(c, req, "jobId", job_id);
        if (!name_is_valid(method))
                return reply_bad_name(c, req, "method", method);

        r = request_working_dir(m, c, req, &wd);
        if (r != 0)
                return r < 0 ? r : 0;

        if (json_object_object_get_ex(req->json, "args", &args) && json_object_is_type(args, json_type_null))
                args = NULL;
        if (args && !json_object_is_type(args, json_type_object))
                return client_reply_error(c, req->id, "Invalid args: they must be a JSON object (the method's "
                                          "parameters)", NULL);

        spec = (JobSpec) {
                .photon = photon,
                .job_id = job_id,
                .method = method,
                .cron = request_string(req, "cron"),
                .args = args,
                .working_dir = wd,
                .created_by = request_string(req, "sessionId"),
        };
        if (m->cluster_jobs) {
                /* Cluster mode: checked here as scheduler_schedule() would, then Redis first (on_cluster_scheduled
                 * answers). */
                r = scheduler_check(m->scheduler, &spec, &reason);
                if (r >= 0) {
                        r = cluster_jobs_schedule(m->cluster_jobs, &spec, on_cluster_scheduled, c, req->id);
                        if (r == -ENOTCONN || r == -ENOBUFS)
                                return reply_cluster_unavailable(m, c, req->id, r);
                        if (r >= 0)
                                return 0;
                }
        } else
                r = scheduler_schedule(m->scheduler, &spec, &job, &reason);
        if (r < 0 && reason)
                return reply_refusal(c, req->id, "scheduled", reason);
        if (r == -E2BIG)
                return client_reply_limit(c, req->id, LIMIT_MAX_JOB_ARGS_BYTES,
                                   strlen(json_object_to_json_string_ext(args, JSON_FORMAT_FLAGS)));
        if (r == -ENOSPC)
                return client_reply_limit(c, req->id, LIMIT_MAX_JOBS, UINT64_MAX);
        if (r < 0)
                return r;
        return reply_scheduled(c, req->id, job.id, &job);
}

int control_jobs_unschedule(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *data = json_object_new_object();
        const char *job_id = request_string(req, "jobId");
        int r;

        if (!data)
                return -ENOMEM;
        if (m->cluster_jobs) {
                JobInfo job;

                /* The full key as this node's copy knows it (a bare jobId is looked up as here); else as sent,
                 * a key this node has not heard of yet. The answer echoes jobId as sent. */
                r = cluster_jobs_unschedule(m->cluster_jobs,
                                            scheduler_get(m->scheduler, job_id, &job) >= 0 ? job.id : job_id,
                                            job_id, on_cluster_unscheduled, c, req->id);
                return r == -ENOTCONN || r == -ENOBUFS ? reply_cluster_unavailable(m, c, req->id, r) : r;
        }
        r = scheduler_unschedule(m->scheduler, job_id);
        if (r < 0 && r != -ENOENT)
                return r;
        if (json_add_bool(data, "unscheduled", r >= 0) < 0 || json_add_string(data, "jobId", job_id) < 0)
                return -ENOMEM;
        return client_reply_result(c, req->id, true, TAKE_PTR(data));
}

int control_jobs_list(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *data = json_object_new_object();
        struct json_object *arr;
        int r;

        if (!data)
                return -ENOMEM;
        r = scheduler_list(m->scheduler, &arr);
        if (r < 0)
                return r;
        r = json_add(data, "jobs", arr);
        if (r < 0)
                return r;
        return client_reply_result(c, req->id, true, TAKE_PTR(data));
}

static JobSwitch job_switch_of(RequestType t) {
        switch (t) {
        case REQUEST_ENABLE_SCHEDULE:
                return JOB_SWITCH_ENABLE;
        case REQUEST_DISABLE_SCHEDULE:
                return JOB_SWITCH_DISABLE;
        case REQUEST_PAUSE_SCHEDULE:
                return JOB_SWITCH_PAUSE;
        case REQUEST_RESUME_SCHEDULE:
                return JOB_SWITCH_RESUME;
        default:
                return _JOB_SWITCH_INVALID;
        }
}

static int reply_switched(Client *c, const char *request_id, RequestType type, const char *photon,
                          const char *method, struct json_object *ids) {
        _cleanup_(json_object_putp) struct json_object *data = NULL, *owned = ids;
        char reason[256];
        size_t n;
        int r;

        if (!ids || json_object_array_length(ids) == 0) {
                snprintf(reason, sizeof(reason), "No scheduled job of photon '%.64s' runs method '%.64s'", photon,
                         method);
                return reply_refusal(c, request_id, NULL, reason);
        }
        n = json_object_array_length(ids);
        log_info("%s: %zu job%s of %s.%s.", request_type_to_string(type), n, n == 1 ? "" : "s", photon,
                 method);

        data = json_object_new_object();
        if (!data)
                return -ENOMEM;
        r = json_add_string(data, "photonName", photon);
        if (r >= 0)
                r = json_add_string(data, "method", method);
        if (r >= 0)
                r = json_add_int64(data, "updated", (int64_t) n);
        if (r >= 0)
                r = json_add(data, "jobIds", TAKE_PTR(owned));
        if (r < 0)
                return r;
        return client_reply_result(c, request_id, true, TAKE_PTR(data));
}

static RequestType request_type_of(JobSwitch sw) {
        switch (sw) {
        case JOB_SWITCH_ENABLE:
                return REQUEST_ENABLE_SCHEDULE;
        case JOB_SWITCH_DISABLE:
                return REQUEST_DISABLE_SCHEDULE;
        case JOB_SWITCH_PAUSE:
                return REQUEST_PAUSE_SCHEDULE;
        default:
                return REQUEST_RESUME_SCHEDULE;
        }
}

static void on_cluster_switched(void *waiter, const char *request_id, const ClusterJobsResult *result) {
        Client *c = waiter;

        if (!cluster_answer_usable(c, request_id, result))
                return;
        if (reply_switched(c, request_id, request_type_of(result->sw), result->photon, result->method,
                           json_object_get(result->ids)) < 0)
                log_oom();
}

int control_jobs_set_state(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *ids = NULL;
        const char *photon = request_string(req, "photonName"), *method = request_string(req, "method");
        char reason[256];
        int r;

        if (!photon || !method)
                return client_reply_error(c, req->id,
                                          name_error(photon ? "method" : "photonName", NULL, reason, sizeof(reason)),
                                          "Name the photon and the method whose jobs to change");
        if (!name_is_valid(photon))
                return reply_bad_name(c, req, "photonName", photon);
        if (!name_is_valid(method))
                return reply_bad_name(c, req, "method", method);

        if (m->cluster_jobs) {
                r = cluster_jobs_switch(m->cluster_jobs, photon, method, job_switch_of(req->type),
                                        on_cluster_switched, c, req->id);
                return r == -ENOTCONN || r == -ENOBUFS ? reply_cluster_unavailable(m, c, req->id, r) : r;
        }
        r = scheduler_switch(m->scheduler, photon, method, job_switch_of(req->type), &ids);
        if (r < 0 && r != -ENOENT)
                return r;
        return reply_switched(c, req->id, req->type, photon, method, r == -ENOENT ? NULL : TAKE_PTR(ids));
}


static int request_optional_int(const Request *req, const char *key, int64_t *ret) {
        int r = json_get_int64(req->json, key, false, ret);

        return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

static int reply_history(Client *c, const char *request_id, const char *photon, const char *method,
                         struct json_object *entries) {
        _cleanup_(json_object_putp) struct json_object *data = NULL, *owned = entries;
        int r;

        data = json_object_new_object();
        if (!data)
                return -ENOMEM;
        r = json_add_string(data, "photon", photon);
        if (r >= 0)
                r = json_add_string(data, "method", method);
        if (r >= 0)
                r = json_add(data, "entries", TAKE_PTR(owned));
        if (r < 0)
                return r;
        return client_reply_result(c, request_id, true, TAKE_PTR(data));
}

static void on_cluster_history(void *waiter, const char *request_id, const ClusterJobsResult *result) {
        Client *c = waiter;

        if (!cluster_answer_usable(c, request_id, result))
                return;
        if (reply_history(c, request_id, result->photon, result->method, json_object_get(result->entries)) < 0)
                log_oom();
}

int control_jobs_get_execution_history(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *entries = NULL;
        const char *photon = request_string(req, "photonName"), *method = request_string(req, "method"), *wd;
        int64_t limit = 0, since = INT64_MIN;
        int r;

        if (!name_is_valid(photon))
                return reply_bad_name(c, req, "photonName", photon);
        if (!name_is_valid(method))
                return reply_bad_name(c, req, "method", method);
        r = request_working_dir(m, c, req, &wd);
        if (r != 0)
                return r < 0 ? r : 0;
        r = request_optional_int(req, "limit", &limit);
        if (r < 0 || limit < 0)
                return client_reply_error(c, req->id, "Invalid limit: it must be a non-negative integer", NULL);
        r = request_optional_int(req, "sinceTs", &since);
        if (r < 0)
                return client_reply_error(c, req->id, "Invalid sinceTs: it must be a timestamp in milliseconds",
                                          NULL);

        if (m->cluster_jobs) {
                /* Cluster mode: every node's runs, from Redis (on_cluster_history answers). */
                r = cluster_jobs_history(m->cluster_jobs, photon, method, wd, since,
                                         (unsigned) MIN(limit, (int64_t) UINT_MAX), on_cluster_history, c, req->id);
                return r == -ENOTCONN || r == -ENOBUFS ? reply_cluster_unavailable(m, c, req->id, r) : r;
        }
        r = scheduler_history(m->scheduler, photon, method, wd, since, (unsigned) MIN(limit, (int64_t) UINT_MAX),
                              &entries);
        if (r == -EIO)
                return reply_refusal(c, req->id, NULL, "Failed to read the run history");
        if (r < 0)
                return r;
        return reply_history(c, req->id, photon, method, TAKE_PTR(entries));
}

/* The end of a run a client asked for: the client is the waiter, the request's id the waiter's id. */
static void on_run_job_done(void *waiter, const char *request_id, const JobRunResult *result) {
        _cleanup_(json_object_putp) struct json_object *data = NULL;
        Client *c = waiter;
        int r;

        if (c->disconnected)
                return;
        if (!result->ran && !result->reason) {
                /* Nothing ran: photond is going down. */
                (void) client_reply_result(c, request_id, false, NULL);
                return;
        }

        data = json_object_new_object();
        r = data ? json_add_string(data, "jobId", result->id) : -ENOMEM;
        if (r >= 0 && result->ran) {
                r = json_add_string(data, "status", result->success ? "success" : "error");
                if (r >= 0)
                        r = json_add_int64(data, "durationMs", result->duration_ms);
                if (r >= 0)
                        r = json_add_int64(data, "runCount", (int64_t) result->run_count);
                if (r >= 0 && result->success && result->result)
                        r = json_add(data, "result", json_object_get(result->result));
        }
        if (r >= 0 && !result->success)
                r = json_add_string(data, "reason", result->reason);
        if (r < 0) {
                log_oom();
                return;
        }
        (void) client_reply_result(c, request_id, result->success, TAKE_PTR(data));
}

int control_jobs_run_job(Manager *m, Client *c, Request *req) {
        const char *id = request_string(req, "jobId");
        char reason[512];
        JobInfo job;
        int r;

        r = scheduler_get(m->scheduler, id, &job);
        if (r < 0) {
                snprintf(reason, sizeof(reason), "No scheduled job '%.256s'", id);
                return reply_refusal(c, req->id, NULL, reason);
        }
        if (job.running) {
                snprintf(reason, sizeof(reason), "Job %.256s is already running", job.id);
                return reply_refusal(c, req->id, NULL, reason);
        }

        /* The reply waits for the run; on_run_job_done() sends it (also when the call could not even start). */
        log_info("Running job %s now, as asked by client %" PRIu64 ".", job.id, c->serial);
        return scheduler_run_job(m->scheduler, job.id, on_run_job_done, c, req->id);
}
