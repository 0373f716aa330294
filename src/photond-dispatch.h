/* SPDX-License-Identifier: MIT */
#pragma once

/* Method dispatch: a call (command, job, webhook) goes to a connected provider of the photon, else to an executable
 * handler, else fails with an error naming both. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "dispatch-util.h"

typedef struct Channels Channels;
typedef struct Subscriber Subscriber;
typedef struct Dispatcher Dispatcher;
typedef struct DispatchCall DispatchCall;
typedef struct DispatchPeer DispatchPeer;
struct json_object;

typedef struct DispatchResult {
        bool success;
        struct json_object *data;       /* the method's return on success (borrowed; take a ref to keep it) */
        const char *error;              /* on failure */
        struct json_object *patch, *inverse_patch;      /* on success, the provider's state patches or NULL (borrowed) */
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
        const char *instance;           /* a command's instanceName, or NULL ("default" in its state-changed event) */
        const char *session_id;         /* the requester's sessionId, or NULL; both are passed on to a provider */
        bool relayed;                   /* another node's call, run here for it: its state-changed is published
                                         * there, not here */
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

/* ---- peers: providers and callers ---- */

/* A call as a provider is sent it (valid during the op only). */
typedef struct DispatchInvoke {
        const char *invoke_id;          /* the call's id: the provider's answers name it (dispatcher_provider_call()) */
        const char *photon;
        const char *method;
        struct json_object *args;       /* never NULL */
        DispatchTrigger trigger;
        const char *job_id;             /* the rest as in DispatchRequest, NULL when not set */
        const char *instance;
        const char *session_id;
        uint64_t timeout_ms;            /* the call's timeout (another node that runs it keeps the same) */
} DispatchInvoke;

/* What the dispatcher sends to a peer: a provider of photons (invoke, prompt_response) or the caller of a command
 * (call_done, emit, prompt). The owner (a control-socket Client today, whose ops photond-control-calls.c fills in)
 * embeds a DispatchPeer; the dispatcher knows nothing else of it, as the channels know only a Subscriber.
 * An op may cost the peer its connection (its owner then calls dispatcher_peer_gone(), at once or later); the
 * dispatcher never calls an op from inside dispatcher_peer_gone() for the peer that is going. */
typedef struct DispatchPeerOps {
        /* To a provider: run this call and answer under inv->invoke_id. A negative errno when it cannot be sent:
         * the call then fails to start (DISPATCH_ERROR_PROVIDER_GONE; -ENOMEM: DISPATCH_ERROR_INTERNAL). */
        int (*invoke)(DispatchPeer *p, const DispatchInvoke *inv);
        /* To a provider: the caller's answer to a prompt of the call invoke_id (value borrowed; NULL: JSON null,
         * also when nobody is there to answer). -ENOMEM, or another negative errno when it cannot be sent. */
        int (*prompt_response)(DispatchPeer *p, const char *invoke_id, struct json_object *value);
        /* To a caller: the end of its call caller_id (result valid during the op only). */
        void (*call_done)(DispatchPeer *p, const char *caller_id, const DispatchResult *result);
        /* To a caller: the provider's emit (emit_data) or question (prompt, answered with
         * dispatcher_prompt_response()) for the call caller_id; both borrowed. -ENOMEM, or another negative errno
         * when it cannot be sent. */
        int (*emit)(DispatchPeer *p, const char *caller_id, struct json_object *emit_data);
        int (*prompt)(DispatchPeer *p, const char *caller_id, struct json_object *prompt);
} DispatchPeerOps;

struct DispatchPeer {
        const DispatchPeerOps *ops;
        /* What the peer subscribes with, if anything: it does not receive the events its own calls publish
         * (state-changed, emits), as it hears of them directly. NULL: no subscriber. */
        Subscriber *subscriber;
        /* photond-dispatch.c's, zero-initialised by the owner */
        void *providers;                /* what it provides */
        unsigned n_calls;               /* the calls it waits for as a caller */
        unsigned n_remote_calls;        /* the calls it runs as DispatcherHooks.find_remote()'s answer */
};

/* What the dispatcher is given and tells its owner, who fills this in (the Manager: photond-manager.c). A NULL
 * member means nobody listens. */
typedef struct DispatcherHooks {
        /* A provider came (the counted D-Bus properties are compared and announced if they changed). */
        void (*counts_changed)(void *userdata);
        /* Is photond going down? Then no call starts (DISPATCH_ERROR_SHUTTING_DOWN). NULL: never. */
        bool (*shutting_down)(void *userdata);
        /* Cluster mode: the peer that takes a call nobody here can run (providers on other nodes), or NULL. Asked
         * only when the photon has no provider here and no executable handler of the method (local ones are
         * preferred); the peer is invoked like a provider and answers through dispatcher_provider_call(). NULL
         * member: a single node. */
        DispatchPeer* (*find_remote)(const char *photon, const char *method, void *userdata);
        /* Cluster mode: the photon's first provider here came (provided) or its last one went. */
        void (*provided_changed)(const char *photon, bool provided, void *userdata);
        void *userdata;
} DispatcherHooks;

/* What the dispatcher works with; the strings are copied. */
typedef struct DispatcherConfig {
        sd_event *event;                /* the call timers, the exec children, delivery */
        Channels *channels;             /* where a command's state-changed and the emits are published */
        const char *handlers_dir;       /* the executable handlers: <dir>/<photon>[/<method>] */
} DispatcherConfig;

/* hooks may be NULL (nobody listens); it is copied. */
int dispatcher_new(const DispatcherConfig *config, const DispatcherHooks *hooks, Dispatcher **ret);
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

/* The call ids issued so far, and a floor for the next ones: a provider kept connected across a restart
 * (photond-fdstore.c) may still answer a call of the last process, which must not name a call of this one. */
uint64_t dispatcher_last_serial(Dispatcher *d);
void dispatcher_raise_serial(Dispatcher *d, uint64_t serial);

/* Delivers now the answers of the calls that have ended and would otherwise be delivered from the loop (callbacks,
 * the callers' call_done): a stop that keeps the connections sends what is known before it writes them down. */
void dispatcher_deliver_done(Dispatcher *d);

/* Starts a command: a call of the peer caller, which hears of it through its ops under caller_id (its request's
 * id): the provider's emits and prompts while it runs, then call_done (later, never from inside this function).
 * A successful command publishes <photon>:<instance>:state-changed, whether or not its caller is still there.
 * Failures as dispatcher_call(); ret_failure is required. */
int dispatcher_command(Dispatcher *d, const DispatchRequest *req, DispatchPeer *caller, const char *caller_id,
                       DispatchFailure *ret_failure);

/* True while the process of a timed-out run of job_id is still ending (SIGTERM sent, not reaped yet): its call
 * has been answered, but the job's next run must not overlap it. */
bool dispatcher_job_ending(Dispatcher *d, const char *job_id);

/* True if the photon has a provider or an executable handler on this node (_here), or may have one on another
 * node too (hooks.find_remote). A job's occurrence is claimed only by a node that can serve it here: the node
 * with the provider claims it itself, and a handler of another node cannot be called from here. */
bool dispatcher_can_serve_here(Dispatcher *d, const char *photon, const char *method);
bool dispatcher_can_serve(Dispatcher *d, const char *photon, const char *method);

/* The peer provides photon from now on: calls of it go round-robin over its providers, before any executable
 * handler. Returns 1 when that is new, 0 when the peer provided it already, and *ret_n_providers (may be NULL): how
 * many peers provide it now; -EINVAL for a name that is not one, -ENOSPC when limits.MAX_PROVIDERS peers provide
 * already, -ENOMEM. */
int dispatcher_provide(Dispatcher *d, DispatchPeer *p, const char *photon, unsigned *ret_n_providers);

/* The peer goes away: the calls it provides fail now, the calls it waits for go on without it (its open prompts
 * are answered with null), it provides nothing any more. Sends nothing to p. */
void dispatcher_peer_gone(Dispatcher *d, DispatchPeer *p);

/* The running call that provider serves under invoke_id, or NULL (it finished, timed out, or is another's). Valid
 * until the loop runs on or the call is answered. */
DispatchCall* dispatcher_provider_call(Dispatcher *d, DispatchPeer *provider, const char *invoke_id);

/* The provider's answer to a running call: on success data (NULL: JSON null) and the state patches (may be NULL),
 * all borrowed; else error (NULL: "Method failed"). The result is delivered later, from the loop. */
void dispatch_call_answer(DispatchCall *call, bool success, struct json_object *data, struct json_object *patch,
                          struct json_object *inverse_patch, const char *error);

/* The provider's emit (emit_data borrowed): forwarded to the caller if forward and it still waits (the emit op), and
 * published on channel (NULL: not published), which the caller does not receive. -ENOMEM, else 0: a send or a
 * publish that fails is not the provider's to hear of (logged). */
int dispatch_call_emit(DispatchCall *call, struct json_object *emit_data, const char *channel, bool forward);

/* The provider's question (prompt borrowed): forwarded to the caller (the prompt op), or, with nobody to ask (a job,
 * a webhook, a caller that left), answered with null at once, as the reference does. -ENOMEM, else 0. */
int dispatch_call_prompt(DispatchCall *call, struct json_object *prompt);

/* The caller's answer (value borrowed; NULL: JSON null) to a prompt of its running call caller_id, passed on to the
 * provider; nothing when no such prompt is open. -ENOMEM, else 0. */
int dispatcher_prompt_response(Dispatcher *d, DispatchPeer *caller, const char *caller_id, struct json_object *value);

/* ---- what ps shows: the providers and the running calls, without building JSON ---- */

/* One provider of a photon (valid during the callback only). */
typedef struct DispatchProviderInfo {
        const char *photon;             /* the same pointer for every provider of a photon, which come together */
        unsigned photon_calls;          /* the photon's calls not delivered yet */
        DispatchPeer *peer;
        unsigned running_calls;         /* the calls this provider runs */
        uint64_t served;                /* the calls it answered */
} DispatchProviderInfo;

/* One running call (valid during the callback only). */
typedef struct DispatchCallInfo {
        const char *invoke_id;
        const char *photon;
        const char *method;
        DispatchTrigger trigger;
        const char *job_id;             /* NULL unless a job's */
        bool exec;                      /* an executable handler runs it (pid), else a provider */
        pid_t pid;                      /* exec: the handler's process, else 0 */
        uint64_t age_ms;
        uint64_t timeout_ms;
        DispatchPeer *provider;         /* NULL unless a provider runs it */
        DispatchPeer *caller;           /* NULL unless a command whose caller still waits */
        const char *caller_id;          /* with caller: the id its answer goes out under */
} DispatchCallInfo;

/* Call cb for every provider (grouped by photon) or running call, newest call first; stop at cb's first negative
 * return and return it. */
int dispatcher_foreach_provider(Dispatcher *d, int (*cb)(const DispatchProviderInfo *info, void *userdata),
                                void *userdata);
int dispatcher_foreach_call(Dispatcher *d, int (*cb)(const DispatchCallInfo *info, void *userdata), void *userdata);
/* Call cb with every photon p provides, newest first; stop at cb's first negative return and return it. */
int dispatch_peer_foreach_provided(DispatchPeer *p, int (*cb)(const char *photon, void *userdata), void *userdata);

int dispatcher_add_status(Dispatcher *d, struct json_object *data);
unsigned dispatcher_running_calls(Dispatcher *d);

