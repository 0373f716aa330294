/* SPDX-License-Identifier: MIT */
#pragma once

/* Method dispatch: a call (command, job, webhook) goes to a connected provider of the photon, else to an executable
 * handler, else fails with an error naming both. */

#include <stdbool.h>
#include <stdint.h>

#include "dispatch-util.h"
#include "photond-protocol.h"

typedef struct Manager Manager;
typedef struct Client Client;
typedef struct Dispatcher Dispatcher;
typedef struct DispatchCall DispatchCall;
struct json_object;


typedef struct DispatchResult {
        bool success;
        struct json_object *data;       /* the method's return on success (borrowed; take a ref to keep it) */
        const char *error;              /* on failure */
        uint64_t duration_ms;
} DispatchResult;

/* Called exactly once per call that dispatcher_call() accepted (also when the dispatcher is freed). */
typedef void (*DispatchCallback)(const DispatchResult *result, void *userdata);

typedef struct DispatchRequest {
        const char *photon;
        const char *method;
        struct json_object *args;       /* borrowed; NULL = {} */
        DispatchTrigger trigger;
        const char *job_id;             /* schedule trigger: the job key, for PHOTON_JOB_ID */
        uint64_t timeout_ms;            /* 0 = limits.HANDLER_TIMEOUT_MS */
} DispatchRequest;

/* Why a call did not start: one vocabulary for the command request, jobs and webhooks. Each front end maps the
 * value to its own surface (an error with a suggestion, a failed run in the job's history, an HTTP status); the
 * text is worded once, by dispatcher_call(). */
typedef enum DispatchError {
        DISPATCH_ERROR_SHUTTING_DOWN,   /* photond is going down */
        DISPATCH_ERROR_BUSY,            /* MAX_CALLS reached (calls and timed-out handlers not ended yet) */
        DISPATCH_ERROR_PHOTON_BUSY,     /* MAX_CALLS_PER_PHOTON reached */
        DISPATCH_ERROR_NO_PROVIDER,     /* neither a connected provider nor an executable handler */
        DISPATCH_ERROR_NO_METHOD,       /* the photon's handler directory lacks the method */
        DISPATCH_ERROR_NOT_EXECUTABLE,  /* the handler file is not executable */
        DISPATCH_ERROR_UNSAFE_HANDLER,  /* the handler or a directory above it is writable by others */
        DISPATCH_ERROR_INVALID_NAME,    /* photon or method is not a valid path part */
        DISPATCH_ERROR_PROVIDER_GONE,   /* the chosen provider's connection failed while sending the call */
        DISPATCH_ERROR_SPAWN_FAILED,    /* the handler could not be started (fork, pipes, …) */
        DISPATCH_ERROR_INTERNAL,        /* out of memory, fork failed, …: DispatchFailure.errno_value says */
        _DISPATCH_ERROR_MAX,
        _DISPATCH_ERROR_INVALID = -EINVAL,
} DispatchError;

/* Short names ("no-provider", …) for logs and tests. */
const char* dispatch_error_to_string(DispatchError e);
/* What the caller can do about it, or NULL. */
const char* dispatch_error_suggestion(DispatchError e);

typedef struct DispatchFailure {
        DispatchError error;
        int errno_value;                /* the negative errno dispatcher_call() returned */
        char *message;                  /* the one wording; NULL only if even that allocation failed */
} DispatchFailure;

void dispatch_failure_done(DispatchFailure *f);

/* What the dispatcher tells its owner, who fills this in (the Manager: photond-manager.c). A NULL member means
 * nobody listens. */
typedef struct DispatcherHooks {
        /* A provider came (the counted D-Bus properties are compared and announced if they changed). */
        void (*counts_changed)(void *userdata);
        void *userdata;
} DispatcherHooks;

/* hooks may be NULL (nobody listens); it is copied. */
int dispatcher_new(Manager *m, const DispatcherHooks *hooks, Dispatcher **ret);
Dispatcher* dispatcher_free(Dispatcher *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Dispatcher*, dispatcher_free);

/* Starts a call. On success the callback runs later (never from inside this function). On failure a negative
 * errno (-EBUSY past the in-flight caps, -ENOENT when the photon has neither a provider nor a handler, -ESRCH
 * when its handler directory lacks the method, -EACCES when the handler is not executable, -EPERM when it is
 * unsafe, -EINVAL for names that are not valid path parts, -ESHUTDOWN while photond shuts down, -ENOMEM …), no
 * callback, and, if ret_failure is set, why in the vocabulary above (free with dispatch_failure_done()).
 * *ret_call (may be NULL) stays valid until the callback ran or dispatch_call_abandon() was called. */
int dispatcher_call(Dispatcher *d, const DispatchRequest *req, DispatchCallback cb, void *userdata,
                    DispatchCall **ret_call, DispatchFailure *ret_failure);

/* Forgets the callback of a running call (its requester went away); the call itself finishes or times out. */
void dispatch_call_abandon(DispatchCall *call);

/* True while the process of a timed-out run of job_id is still ending (SIGTERM sent, not reaped yet): its call
 * has been answered, but the job's next run must not overlap it. */
bool dispatcher_job_ending(Dispatcher *d, const char *job_id);

/* True if the photon has a provider or an executable handler. */
bool dispatcher_can_serve(Dispatcher *d, const char *photon, const char *method);

void dispatcher_client_gone(Dispatcher *d, Client *c);

int dispatcher_handle_command(Manager *m, Client *c, Request *req);
int dispatcher_handle_provide(Manager *m, Client *c, Request *req);
int dispatcher_handle_invoke_result(Manager *m, Client *c, Request *req);
int dispatcher_handle_emit(Manager *m, Client *c, Request *req);
int dispatcher_handle_prompt(Manager *m, Client *c, Request *req);
int dispatcher_handle_prompt_response(Manager *m, Client *c, Request *req);
int dispatcher_handle_ps(Manager *m, Client *c, Request *req);

int dispatcher_add_status(Dispatcher *d, struct json_object *data);
unsigned dispatcher_running_calls(Dispatcher *d);

