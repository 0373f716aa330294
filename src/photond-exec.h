/* SPDX-License-Identifier: MIT */
#pragma once

/* Executable handlers: the dispatcher's runner for a call that no provider takes. A child per call, in its own
 * process group, with the arguments on stdin, the result read from stdout and stderr logged and kept as a tail
 * for the messages; the call's timeout answers the caller at once and leaves the process on the runner's
 * terminating list until it is reaped. The runner knows a call only through an ExecSpec and one callback. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "dispatch-util.h"
#include "macro.h"

typedef struct sd_event sd_event;
typedef struct sd_event_source sd_event_source;
typedef struct ExecRunner ExecRunner;
typedef struct ExecChild ExecChild;
struct json_object;

/* The outcome of a handler run, called once per child (never from inside exec_child_spawn()): data is taken
 * (NULL = JSON null or a failure), error is borrowed. */
typedef void (*ExecDoneCallback)(bool success, struct json_object *data, const char *error, void *userdata);

typedef struct ExecSpec {
        const char *path;               /* the handler, from dispatch_resolve_handler() */
        bool method_arg;                /* the method goes as argv[1] */
        const char *cwd;                /* the handlers directory */
        const char *photon, *method;    /* borrowed: must live as long as the child is the caller's */
        struct json_object *args;       /* written to stdin, one line */
        DispatchTrigger trigger;
        const char *job_id;             /* kept after a timeout, for exec_runner_job_ending() */
        uint64_t timeout_ms;            /* for the timeout message */
        /* The caller's timer, which it owns and which is already added: the exit grace re-arms it, and when it
         * fires the caller hands it to exec_child_timer(). */
        sd_event_source *timer_source;
} ExecSpec;

/* Blocks SIGCHLD (sd_event_add_child() requires it) and finds the HOME handlers get. */
int exec_runner_new(sd_event *event, ExecRunner **ret);
/* Kills and frees the terminating children (sd-event reaps them as their child sources go). */
ExecRunner* exec_runner_free(ExecRunner *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(ExecRunner*, exec_runner_free);

/* Timed-out handlers not reaped yet: they count against MAX_CALLS. */
unsigned exec_runner_n_terminating(ExecRunner *r);
/* True while the process of a timed-out run of job_id is still ending. */
bool exec_runner_job_ending(ExecRunner *r, const char *job_id);

/* Starts the handler. On failure *ret is still set if the child was allocated (free it with exec_child_free(),
 * which kills and reaps what was started). */
int exec_child_spawn(ExecRunner *r, const ExecSpec *spec, ExecDoneCallback cb, void *userdata, ExecChild **ret);
/* Kills what is left (SIGKILL to the group) and frees; NULL is fine. */
void exec_child_free(ExecChild *x);
/* The caller's timer fired: on a running handler this is the timeout (SIGTERM, the callback with the timeout
 * message, then the child moves to the terminating list and returns 1: the caller forgets it); after the exit
 * it ends the grace and finishes (0). */
int exec_child_timer(ExecChild *x);
/* SIGKILL to the group unless the handler was reaped already (shutdown). */
void exec_child_kill(ExecChild *x);
pid_t exec_child_pid(ExecChild *x);
