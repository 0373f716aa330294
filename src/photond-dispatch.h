/* SPDX-License-Identifier: MIT */
#pragma once

/* Method dispatch: a call (command, job, webhook) goes to a connected provider of the photon, else to an executable
 * handler, else fails with an error naming both. */

#include <stdbool.h>
#include <stdint.h>

#include "photond-protocol.h"

typedef struct Manager Manager;
typedef struct Client Client;
typedef struct Dispatcher Dispatcher;
typedef struct DispatchCall DispatchCall;
struct json_object;

typedef enum DispatchTrigger {
        DISPATCH_TRIGGER_COMMAND,
        DISPATCH_TRIGGER_SCHEDULE,
        DISPATCH_TRIGGER_WEBHOOK,
        _DISPATCH_TRIGGER_MAX,
        _DISPATCH_TRIGGER_INVALID = -EINVAL,
} DispatchTrigger;

const char* dispatch_trigger_to_string(DispatchTrigger t);

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

int dispatcher_new(Manager *m, Dispatcher **ret);
Dispatcher* dispatcher_free(Dispatcher *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Dispatcher*, dispatcher_free);

/* Starts a call. On success the callback runs later (never from inside this function). -EBUSY past the in-flight
 * caps, -ENOENT when the photon has neither a provider nor a handler. */
int dispatcher_call(Dispatcher *d, const DispatchRequest *req, DispatchCallback cb, void *userdata,
                    DispatchCall **ret_call);

/* Forgets the callback of a running call (its requester went away); the call itself finishes or times out. */
void dispatch_call_abandon(DispatchCall *call);

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
