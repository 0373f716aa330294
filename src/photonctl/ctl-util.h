/* SPDX-License-Identifier: MIT */
#pragma once

/* photonctl's connection and output helpers, shared by every verb file. */

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>

#include "json-util.h"
#include "macro.h"

/* How the control socket was chosen: what to suggest when nothing answers there depends on it. */
typedef enum CtlSocketSource {
        CTL_SOCKET_USER,                /* the default: the user instance's socket */
        CTL_SOCKET_SYSTEM,              /* --system */
        CTL_SOCKET_PATH,                /* --socket=PATH */
        _CTL_SOCKET_SOURCE_MAX,
        _CTL_SOCKET_SOURCE_INVALID = -EINVAL,
} CtlSocketSource;

typedef struct CtlContext {
        const char *socket_path;
        CtlSocketSource socket_source;
        bool custom_home;       /* the user socket is under a PHOTON_HOME other than ~/.photon */
        bool json;              /* --json: print raw protocol replies */
} CtlContext;

typedef int (*CtlVerbFunc)(CtlContext *ctx, int argc, char *argv[]);

/* What to do when connect() to the daemon's socket failed with error (a positive errno), for a socket chosen
 * as source; NULL when there is nothing better to say than the error itself. */
const char* ctl_connect_hint(CtlSocketSource source, int error, bool custom_home);

/* Connects to the daemon; a clear one-line error when it is not running. */
int ctl_connect(const CtlContext *ctx, int *ret_fd);

/* A new request object {"type":type,"id":"ctl-<pid>-<n>"}. */
struct json_object* ctl_request_new(const char *type);

/* Writes one request line. */
int ctl_send(int fd, struct json_object *req);

/* Reads one reply line (blocking, timeout_ms < 0: none). -ETIMEDOUT, -ECONNRESET on EOF. */
int ctl_recv(int fd, int timeout_ms, struct json_object **ret);

/* Connects, sends req, and returns the reply whose id matches (pushes in between are skipped). */
int ctl_call(const CtlContext *ctx, struct json_object *req, struct json_object **ret_reply);

/* For a reply of type "error" or a result with success:false prints a one-line error (with the daemon's
 * suggestion, if it gave one) and returns -EIO. */
int ctl_check_reply(struct json_object *reply, const char *what);

/* ctl_call() and ctl_check_reply() for a verb that prints its reply: req may be NULL (out of memory). With --json the
 * reply is printed here and 0 returned; otherwise 1, and the caller prints *ret_reply its own way. */
int ctl_query(const CtlContext *ctx, struct json_object *req, const char *what, struct json_object **ret_reply);

/* Prints o as one compact JSON line. */
void ctl_print_json(struct json_object *o);

/* Parses a JSON argument given on the command line. */
int ctl_parse_json_arg(const char *arg, const char *what, struct json_object **ret);

/* "3h 12m", "45s", "in 2d 4h" helpers for tables. */
void ctl_format_duration(char *buf, size_t len, int64_t ms);
void ctl_format_time(char *buf, size_t len, int64_t epoch_ms);

/* Logs "Usage: photonctl VERB SYNOPSIS" from the verb table (photonctl.c) and returns -EINVAL. */
int ctl_usage_error(const char *verb);

/* Verbs, one file per area. */
/* status' cluster object as a section of photonctl status (ctl-cluster.c). */
void ctl_print_cluster(struct json_object *cluster);

int verb_ping(CtlContext *ctx, int argc, char *argv[]);
int verb_status(CtlContext *ctx, int argc, char *argv[]);
int verb_shutdown(CtlContext *ctx, int argc, char *argv[]);
int verb_ps(CtlContext *ctx, int argc, char *argv[]);
/* ctl-channels.c */
int verb_publish(CtlContext *ctx, int argc, char *argv[]);
int verb_subscribe(CtlContext *ctx, int argc, char *argv[]);
int verb_channels(CtlContext *ctx, int argc, char *argv[]);
/* ctl-locks.c */
int verb_lock(CtlContext *ctx, int argc, char *argv[]);
int verb_unlock(CtlContext *ctx, int argc, char *argv[]);
int verb_locks(CtlContext *ctx, int argc, char *argv[]);
int verb_with_lock(CtlContext *ctx, int argc, char *argv[]);
/* ctl-jobs.c */
int verb_schedule(CtlContext *ctx, int argc, char *argv[]);
int verb_unschedule(CtlContext *ctx, int argc, char *argv[]);
int verb_jobs(CtlContext *ctx, int argc, char *argv[]);
int verb_cron(CtlContext *ctx, int argc, char *argv[]);
int verb_history(CtlContext *ctx, int argc, char *argv[]);
int verb_run_job(CtlContext *ctx, int argc, char *argv[]);
/* ctl-dispatch.c */
int verb_call(CtlContext *ctx, int argc, char *argv[]);
int verb_provide(CtlContext *ctx, int argc, char *argv[]);
/* ctl-webhook.c */
int verb_webhook_test(CtlContext *ctx, int argc, char *argv[]);
