/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode: scheduled jobs across the nodes. The job definitions live in Redis (the hash <prefix>jobs: key ->
 * definition JSON, the hash <prefix>jobs:state: key -> "<enabled><paused>" as "10"), changed only by one script
 * call each that also bumps <prefix>jobs:version and publishes the new version on <prefix>jobs:changed. Every node
 * mirrors them into its local scheduler (all of them at each subscribe to that channel, and again after every
 * notice), and before it runs an occurrence it claims it in Redis (SET <prefix>fire:<key>:<due ms> <nodeId> NX
 * PX ...), through SchedulerHooks.claim_occurrence, which the Manager fills in only in cluster mode. The
 * scheduler core knows none of this. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "macro.h"
#include "photond-cluster.h"
#include "photond-redis.h"
#include "photond-schedule.h"

typedef struct ClusterJobs ClusterJobs;
typedef struct Dispatcher Dispatcher;
struct json_object;

/* An occurrence may be claimed until this late after its due time: a node that wakes later (a suspend, a stuck
 * loop) leaves it, since the claims of the others may have expired by then. */
#define CLUSTER_JOBS_CLAIM_MAX_LATE_MS ((int64_t) 60 * 1000)
/* A claim key lives this long: much longer than CLAIM_MAX_LATE_MS plus the clock skew between nodes. */
#define CLUSTER_JOBS_CLAIM_TTL_MS ((int64_t) 10 * 60 * 1000)
/* After a failed load of the definitions, the next attempt. */
#define CLUSTER_JOBS_RELOAD_RETRY_USEC (500 * USEC_PER_MSEC)

/* The scripts the cluster's command connection must load (ClusterConfig.scripts), NULL-terminated; initialised
 * on the first call. -EIO if libcrypto fails. */
int cluster_jobs_scripts(const RedisScript *const **ret);

typedef struct ClusterJobsConfig {
        sd_event *event;
        Scheduler *scheduler;
        Dispatcher *dispatcher;                 /* can this node run a job? */
        RedisConn *commands;                    /* the cluster's command connection (cluster_commands()), borrowed */
        const ClusterSettings *settings;        /* the URL (for the notice subscriber), prefix, node id; copied */
} ClusterJobsConfig;

/* Opens the subscriber connection for the change notices; the mirror is loaded when it is up. */
int cluster_jobs_new(const ClusterJobsConfig *config, ClusterJobs **ret);
/* The Redis answers still to come go nowhere; the waiters are not answered (the owner is going down). */
ClusterJobs* cluster_jobs_free(ClusterJobs *cj);
DEFINE_TRIVIAL_CLEANUP_FUNC(ClusterJobs*, cluster_jobs_free);

/* SchedulerHooks.claim_occurrence, forwarded by the Manager. */
int cluster_jobs_claim(ClusterJobs *cj, const char *id, const char *photon, const char *method, int64_t due_ms,
                       int64_t now_ms, bool catch_up);

/* How a change asked of the cluster ended (valid during the callback only). */
typedef struct ClusterJobsResult {
        const char *unavailable;        /* set: Redis did not take the change, nothing changed: why (no secrets) */
        const char *id;                 /* schedule: the job key; unschedule: the id as the requester sent it */
        const char *photon, *method;    /* switch: as asked */
        JobSwitch sw;
        bool full;                      /* schedule: the cluster has limits.MAX_JOBS jobs already (a new key) */
        const JobInfo *job;             /* schedule: the job as this node now has it; NULL if its copy failed */
        bool removed;                   /* unschedule: there was such a job */
        struct json_object *ids;        /* switch: the keys switched (borrowed), empty when none matched */
        struct json_object *entries;    /* history: the entries, newest first (borrowed) */
} ClusterJobsResult;

typedef void (*ClusterJobsCallback)(void *waiter, const char *waiter_id, const ClusterJobsResult *result);

/* The changes: sent to Redis; cb hears once, later, after Redis answered (and this node applied the change to its
 * own copy), unless cluster_jobs_waiter_gone(waiter) came first. A negative errno when nothing was sent (-ENOTCONN:
 * not connected, -ENOBUFS, -ENOMEM): cluster_jobs_unavailable() words it. spec as scheduler_schedule() takes it,
 * checked with scheduler_check() first; id: a full job key, echo_id what the answer names (result.id). waiter_id
 * is copied. */
int cluster_jobs_schedule(ClusterJobs *cj, const JobSpec *spec, ClusterJobsCallback cb, void *waiter,
                          const char *waiter_id);
int cluster_jobs_unschedule(ClusterJobs *cj, const char *id, const char *echo_id, ClusterJobsCallback cb,
                            void *waiter, const char *waiter_id);
int cluster_jobs_switch(ClusterJobs *cj, const char *photon, const char *method, JobSwitch sw,
                        ClusterJobsCallback cb, void *waiter, const char *waiter_id);
/* The run history of photon's method in the base working_dir (NULL: the default one), from Redis, as
 * scheduler_history() reads it from a file: newest first, at most limit (0: all kept), none older than since_ms
 * or the 14-day TTL. */
int cluster_jobs_history(ClusterJobs *cj, const char *photon, const char *method, const char *working_dir,
                         int64_t since_ms, unsigned limit, ClusterJobsCallback cb, void *waiter,
                         const char *waiter_id);
void cluster_jobs_waiter_gone(ClusterJobs *cj, void *waiter);
/* Calls cb with every waiter an answer of Redis is still due to, and its waiter_id; stops at cb's first negative
 * return and returns it. */
int cluster_jobs_foreach_waiter(ClusterJobs *cj, int (*cb)(void *waiter, const char *waiter_id, void *userdata),
                                void *userdata);

/* SchedulerHooks.run_recorded, forwarded by the Manager: the entry also goes to the list of its photon's method in
 * Redis (LPUSH, cut to SCHEDULE_HISTORY_MAX_PER_METHOD, expiring SCHEDULE_HISTORY_TTL_MS after the last run).
 * Not sent while Redis is unreachable (counted in historyFailed). */
void cluster_jobs_record_run(ClusterJobs *cj, const char *photon, const char *method, const char *working_dir,
                             struct json_object *entry);

/* Why a change could not be sent (error: what cluster_jobs_schedule() and the others returned); valid until the
 * next call. */
const char* cluster_jobs_unavailable(ClusterJobs *cj, int error);

/* Adds "jobs" to status' "cluster" object (made by cluster_add_status() before). */
int cluster_jobs_add_status(ClusterJobs *cj, struct json_object *data);

/* ---- pure helpers, exposed for the unit tests ---- */

/* The claim key of an occurrence: "<prefix>fire:<id>:<due ms>". */
int cluster_jobs_claim_key(const char *prefix, const char *id, int64_t due_ms, char **ret);
/* The run history list of photon's method in a base: "<prefix>history:<photon>[:<hash8>]:<method>", hash8 as in
 * the job key of a job with that working_dir (NULL: none). */
int cluster_jobs_history_key(const char *prefix, const char *photon, const char *method, const char *working_dir,
                             char **ret);
/* The definition a schedule request makes, as the hash keeps it (compact JSON, fixed key order). */
int cluster_jobs_definition(const JobSpec *spec, char **ret);
/* The other way round: *ret_spec borrows from *ret_obj (free that). -EBADMSG if it is not one. */
int cluster_jobs_definition_parse(const char *json, JobSpec *ret_spec, struct json_object **ret_obj);
/* The state field: "<enabled><paused>", each '1' or '0'. -EBADMSG otherwise. */
int cluster_jobs_state_parse(const char *s, size_t len, bool *ret_enabled, bool *ret_paused);
