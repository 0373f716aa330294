/* SPDX-License-Identifier: MIT */

/* Method dispatch. A call (a `command` request, a job firing, a webhook) runs on a provider of its photon
 * (round-robin over several) or, without one, on an executable handler under the handlers directory. Providers
 * and the callers of commands are DispatchPeers: this file knows only their ops (photond-dispatch.h), never what
 * carries them (a control-socket Client today, photond-control-calls.c).
 *
 * A call lives in three steps: running (it holds a provider slot or a child process with its pipes), done
 * (outcome recorded, resources released, queued) and delivered (reply, state-changed, callback; freed). Delivery
 * happens from a defer source, never on the stack of whatever finished the call. That keeps two promises: a
 * DispatchCallback never runs inside dispatcher_call(), and no call is freed while code up the stack (a send that
 * cost a peer its connection, a peer going away that fails other calls) still holds it. */

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uthash.h>

#include "event-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-dispatch.h"
#include "photond-exec.h"
#include "photond-limits.h"
#include "string-util.h"

#define INVOKE_ID_PREFIX "inv_"

typedef struct Provider Provider;

typedef struct PhotonEntry {
        UT_hash_handle hh;
        LIST_HEAD(Provider, providers);
        Provider *rr_next;              /* the provider the next call goes to */
        unsigned n_providers;
        unsigned n_calls;               /* calls of this photon not yet delivered */
        char name[];
} PhotonEntry;

struct Provider {
        PhotonEntry *photon;
        DispatchPeer *peer;
        LIST_FIELDS(Provider, by_photon);
        LIST_FIELDS(Provider, by_peer);         /* the list head is peer->providers */
        unsigned n_calls;
        uint64_t n_served;
};


typedef enum CallState {
        CALL_RUNNING,
        CALL_DONE,
} CallState;

struct DispatchCall {
        Dispatcher *dispatcher;
        LIST_FIELDS(DispatchCall, calls);
        LIST_FIELDS(DispatchCall, done);
        UT_hash_handle hh;              /* by serial, for invoke ids */
        uint64_t serial;
        char invoke_id[32];
        CallState state;

        PhotonEntry *photon;
        char *method;
        struct json_object *args;       /* never NULL */
        DispatchTrigger trigger;
        char *job_id;
        uint64_t timeout_ms;
        uint64_t started_usec;          /* CLOCK_MONOTONIC */
        sd_event_source *timer_source;

        /* a command: the requester (NULL once it went away) */
        bool is_command;
        bool relayed;
        DispatchPeer *caller;
        char *caller_id;
        char *instance;
        char *session_id;
        /* a job or webhook */
        DispatchCallback callback;
        void *userdata;

        /* where it runs */
        Provider *provider;
        DispatchPeer *remote;           /* hooks.find_remote()'s peer, instead of a provider of this node */
        unsigned n_prompts;             /* prompts forwarded to the caller, not answered yet */
        ExecChild *exec;

        /* outcome */
        bool success;
        struct json_object *data;
        char *error;
        struct json_object *patch, *inverse_patch;
        uint64_t duration_ms;
};

struct Dispatcher {
        sd_event *event;
        Channels *channels;
        char *handlers_dir;
        DispatcherHooks hooks;
        ExecRunner *runner;             /* the executable handlers, and the timed-out ones still ending */

        PhotonEntry *photons;
        unsigned n_providers;
        unsigned n_photons_provided;

        LIST_HEAD(DispatchCall, calls);
        DispatchCall *calls_by_serial;
        unsigned n_calls;
        uint64_t next_serial;

        LIST_HEAD(DispatchCall, done);
        sd_event_source *done_event_source;
        bool freeing;
};

static const char *const dispatch_error_table[_DISPATCH_ERROR_MAX] = {
        [DISPATCH_ERROR_SHUTTING_DOWN]  = "shutting-down",
        [DISPATCH_ERROR_BUSY]           = "busy",
        [DISPATCH_ERROR_PHOTON_BUSY]    = "photon-busy",
        [DISPATCH_ERROR_NO_PROVIDER]    = "no-provider",
        [DISPATCH_ERROR_NO_METHOD]      = "no-method",
        [DISPATCH_ERROR_NOT_EXECUTABLE] = "not-executable",
        [DISPATCH_ERROR_UNSAFE_HANDLER] = "unsafe-handler",
        [DISPATCH_ERROR_INVALID_NAME]   = "invalid-name",
        [DISPATCH_ERROR_PROVIDER_GONE]  = "provider-gone",
        [DISPATCH_ERROR_SPAWN_FAILED]   = "spawn-failed",
        [DISPATCH_ERROR_INTERNAL]       = "internal",
};

const char* dispatch_error_to_string(DispatchError e) {
        if (e < 0 || e >= _DISPATCH_ERROR_MAX)
                return NULL;
        return dispatch_error_table[e];
}

static const char *const dispatch_error_suggestion_table[_DISPATCH_ERROR_MAX] = {
        [DISPATCH_ERROR_SHUTTING_DOWN]  = "Retry after the daemon restarts",
        [DISPATCH_ERROR_BUSY]           = "Retry later",
        [DISPATCH_ERROR_PHOTON_BUSY]    = "Retry later",
        [DISPATCH_ERROR_NO_PROVIDER]    = "Start a provider (photonctl provide PHOTON -- CMD) or install an executable "
                                          "handler",
        [DISPATCH_ERROR_NOT_EXECUTABLE] = "Make the handler executable (chmod +x)",
        [DISPATCH_ERROR_PROVIDER_GONE]  = "Retry: another provider or the handler takes the call",
};

const char* dispatch_error_suggestion(DispatchError e) {
        if (e < 0 || e >= _DISPATCH_ERROR_MAX)
                return NULL;
        return dispatch_error_suggestion_table[e];
}

void dispatch_failure_done(DispatchFailure *f) {
        if (f)
                f->message = mfree(f->message);
}

/* ---- photon entries and providers ---- */

static PhotonEntry* photon_find(Dispatcher *d, const char *name) {
        PhotonEntry *e = NULL;

        HASH_FIND_STR(d->photons, name, e);
        return e;
}

static int photon_get(Dispatcher *d, const char *name, PhotonEntry **ret) {
        PhotonEntry *e = photon_find(d, name);
        size_t l;

        if (!e) {
                l = strlen(name);
                e = calloc(1, sizeof(PhotonEntry) + l + 1);
                if (!e)
                        return -ENOMEM;
                memcpy(e->name, name, l + 1);
                HASH_ADD(hh, d->photons, name[0], l, e);
        }
        *ret = e;
        return 0;
}

static void photon_gc(Dispatcher *d, PhotonEntry *e) {
        if (!e || e->n_providers > 0 || e->n_calls > 0)
                return;
        HASH_DEL(d->photons, e);
        free(e);
}

static Provider* provider_free(Dispatcher *d, Provider *p) {
        PhotonEntry *e;

        if (!p)
                return NULL;
        e = p->photon;
        if (e->rr_next == p)
                e->rr_next = p->by_photon_next;
        LIST_REMOVE(by_photon, e->providers, p);
        e->n_providers--;
        if (e->n_providers == 0) {
                d->n_photons_provided--;
                if (d->hooks.provided_changed && !d->freeing)
                        d->hooks.provided_changed(e->name, false, d->hooks.userdata);
        }
        d->n_providers--;
        if (p->peer) {
                Provider *head = p->peer->providers;
                LIST_REMOVE(by_peer, head, p);
                p->peer->providers = head;
        }
        photon_gc(d, e);
        return mfree(p);
}

static Provider* provider_pick(PhotonEntry *e) {
        Provider *p = e->rr_next ?: e->providers;

        if (p)
                e->rr_next = p->by_photon_next;
        return p;
}

/* ---- calls ---- */

static DispatchCall* call_free(DispatchCall *call) {
        Dispatcher *d;

        if (!call)
                return NULL;
        d = call->dispatcher;

        if (call->photon) {
                call->photon->n_calls--;
                photon_gc(d, call->photon);
        }
        if (call->provider)
                call->provider->n_calls--;
        if (call->remote)
                call->remote->n_remote_calls--;
        if (call->caller)
                call->caller->n_calls--;
        exec_child_free(call->exec);
        sd_event_source_disable_unref(call->timer_source);
        json_object_put(call->args);
        json_object_put(call->data);
        json_object_put(call->patch);
        json_object_put(call->inverse_patch);
        free(call->error);
        free(call->method);
        free(call->job_id);
        free(call->caller_id);
        free(call->instance);
        free(call->session_id);
        return mfree(call);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(DispatchCall*, call_free);

static void call_unlink(DispatchCall *call) {
        Dispatcher *d = call->dispatcher;

        LIST_REMOVE(calls, d->calls, call);
        HASH_DELETE(hh, d->calls_by_serial, call);
        d->n_calls--;
}

/* Records the outcome (data is taken, error copied) and queues the call for delivery. Releases the provider
 * slot; an exec call comes here only after its child was reaped or, timed out, handed to the exec
 * runner's terminating list. Never sends anything. */
static void call_complete(DispatchCall *call, bool success, struct json_object *data, const char *error) {
        Dispatcher *d = call->dispatcher;

        if (call->state != CALL_RUNNING) {
                json_object_put(data);
                return;
        }
        call->state = CALL_DONE;
        call->success = success;
        call->data = data;
        if (!success) {
                call->error = strdup(error ?: "Method failed");
                if (!call->error)
                        log_oom();
        }
        call->duration_ms = (now_usec(CLOCK_MONOTONIC) - call->started_usec) / USEC_PER_MSEC;

        if (call->provider) {
                call->provider->n_calls--;
                call->provider->n_served++;
                call->provider = NULL;
        }
        if (call->remote) {
                call->remote->n_remote_calls--;
                call->remote = NULL;
        }
        call->n_prompts = 0;
        call->timer_source = sd_event_source_disable_unref(call->timer_source);

        LIST_PREPEND(done, d->done, call);
        (void) sd_event_source_set_enabled(d->done_event_source, SD_EVENT_ONESHOT);
}

static void call_fail(DispatchCall *call, const char *fmt, ...) _printf_(2, 3);
static void call_fail(DispatchCall *call, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        call_complete(call, false, NULL, msg ?: "Method failed (out of memory)");
}

static void command_publish_state_changed(DispatchCall *call) {
        Dispatcher *d = call->dispatcher;
        _cleanup_(json_object_putp) struct json_object *ev = NULL;
        _cleanup_free_ char *channel = NULL, *uri = NULL;
        const char *instance = call->instance ?: "default";
        int r;

        if (asprintf(&channel, "%s:%s:state-changed", call->photon->name, instance) < 0 ||
            asprintf(&uri, "photon://%s/%s", call->photon->name, instance) < 0) {
                log_oom();
                return;
        }
        ev = json_object_new_object();
        if (!ev ||
            json_add_string(ev, "event", "state-changed") < 0 ||
            json_add_string(ev, "method", call->method) < 0 ||
            json_add(ev, "params", json_object_get(call->args)) < 0 ||
            json_add_string(ev, "instance", instance) < 0 ||
            json_add_nullable(ev, "data", json_ref_or_null(call->data)) < 0 ||
            (call->patch && json_add(ev, "patch", json_object_get(call->patch)) < 0) ||
            (call->inverse_patch && json_add(ev, "inversePatch", json_object_get(call->inverse_patch)) < 0) ||
            json_add_string(ev, "uri", uri) < 0) {
                log_oom();
                return;
        }
        r = channels_publish(d->channels, channel, ev, call->caller ? call->caller->subscriber : NULL, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to publish %s: %m", channel);
}

static void call_deliver(DispatchCall *call) {
        DispatchResult result = {
                .success = call->success,
                .data = call->data,
                .error = call->success ? NULL : (call->error ?: "Method failed"),
                .patch = call->patch,
                .inverse_patch = call->inverse_patch,
                .duration_ms = call->duration_ms,
        };

        if (!call->is_command) {
                if (call->callback)
                        call->callback(&result, call->userdata);
                return;
        }

        if (call->caller)
                call->caller->ops->call_done(call->caller, call->caller_id, &result);
        /* The call changed the photon's state whether or not its requester is still there to hear it. */
        if (call->success && !call->dispatcher->freeing && !call->relayed)
                command_publish_state_changed(call);
}

static int on_done(sd_event_source *s, void *userdata) {
        Dispatcher *d = userdata;
        DispatchCall *call;

        while ((call = d->done)) {
                LIST_REMOVE(done, d->done, call);
                call_unlink(call);
                call_deliver(call);
                call_free(call);
        }
        return 0;
}

uint64_t dispatcher_last_serial(Dispatcher *d) {
        return d->next_serial;
}

void dispatcher_raise_serial(Dispatcher *d, uint64_t serial) {
        d->next_serial = MAX(d->next_serial, serial);
}

void dispatcher_deliver_done(Dispatcher *d) {
        (void) sd_event_source_set_enabled(d->done_event_source, SD_EVENT_OFF);
        (void) on_done(d->done_event_source, d);
}

/* ---- provider calls ---- */

static int peer_send_invoke(DispatchCall *call, DispatchPeer *peer) {
        return peer->ops->invoke(peer, &(const DispatchInvoke) {
                        .invoke_id = call->invoke_id,
                        .photon = call->photon->name,
                        .method = call->method,
                        .args = call->args,
                        .trigger = call->trigger,
                        .job_id = call->job_id,
                        .instance = call->instance,
                        .session_id = call->session_id,
                        .timeout_ms = call->timeout_ms,
                });
}

static int send_prompt_response(DispatchCall *call, struct json_object *value) {
        DispatchPeer *p = call->provider ? call->provider->peer : call->remote;

        if (!p)
                return 0;
        return p->ops->prompt_response(p, call->invoke_id, value);
}

/* ---- exec handlers (photond-exec.c) ---- */

static void on_exec_done(bool success, struct json_object *data, const char *error, void *userdata) {
        call_complete(userdata, success, data, error);
}

static int exec_spawn(DispatchCall *call, const char *path, bool method_arg) {
        return exec_child_spawn(call->dispatcher->runner, &(ExecSpec) {
                                        .path = path,
                                        .method_arg = method_arg,
                                        .cwd = call->dispatcher->handlers_dir,
                                        .photon = call->photon->name,
                                        .method = call->method,
                                        .args = call->args,
                                        .trigger = call->trigger,
                                        .job_id = call->job_id,
                                        .timeout_ms = call->timeout_ms,
                                        .timer_source = call->timer_source,
                                }, on_exec_done, call, &call->exec);
}

/* ---- timers ---- */

static int on_call_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        DispatchCall *call = userdata;

        if (call->state != CALL_RUNNING)
                return 0;

        if (!call->exec) {
                call_fail(call, "Timed out after %" PRIu64 " ms waiting for the provider of '%s' to answer %s",
                          call->timeout_ms, call->photon->name, call->method);
                return 0;
        }

        /* The timeout (the call is answered, the process left to the runner's terminating list) or the end of
         * the exit grace. */
        if (exec_child_timer(call->exec) > 0)
                call->exec = NULL;
        return 0;
}

/* ---- starting calls ---- */

/* The one wording of each DispatchError. Returns error (negative errno) for the caller's convenience. */
static int failure_set(Dispatcher *d, const DispatchRequest *req, DispatchError e, int error, DispatchFailure *f) {
        const char *dir = d->handlers_dir;
        PhotonEntry *p;
        char buf[256];
        int k = 0;

        assert(error < 0);

        f->error = e;
        f->errno_value = error;
        f->message = NULL;

        switch (e) {
        case DISPATCH_ERROR_SHUTTING_DOWN:
                f->message = strdup("Daemon is shutting down");
                break;
        case DISPATCH_ERROR_BUSY:
                k = asprintf(&f->message, "Busy: %u calls in flight and %u timed-out handlers not ended yet "
                             "(PHOTOND_MAX_CALLS)", d->n_calls, exec_runner_n_terminating(d->runner));
                break;
        case DISPATCH_ERROR_PHOTON_BUSY:
                p = photon_find(d, req->photon);
                k = asprintf(&f->message, "Busy: photon '%s' has %u calls in flight (PHOTOND_MAX_CALLS_PER_PHOTON)",
                             req->photon, p ? p->n_calls : 0);
                break;
        case DISPATCH_ERROR_NO_PROVIDER:
                k = asprintf(&f->message, "Cannot initialize photon '%s': no provider is connected (a client sends "
                             "{\"type\":\"provide\",\"photonName\":\"%s\"}) and there is no executable handler "
                             "%s/%s/%s or %s/%s",
                             req->photon, req->photon, dir, req->photon, req->method, dir, req->photon);
                break;
        case DISPATCH_ERROR_NO_METHOD:
                k = asprintf(&f->message, "Tool not found: %s (no executable %s/%s/%s)", req->method, dir,
                             req->photon, req->method);
                break;
        case DISPATCH_ERROR_NOT_EXECUTABLE:
                k = asprintf(&f->message, "Cannot run the handler of %s/%s: it is not executable", req->photon,
                             req->method);
                break;
        case DISPATCH_ERROR_UNSAFE_HANDLER:
                k = asprintf(&f->message, "Refusing the handler of %s/%s: it or its directory under %s is "
                             "writable by group or others, or owned by a user other than root and photond's "
                             "(chmod go-w, chown)", req->photon, req->method, dir);
                break;
        case DISPATCH_ERROR_INVALID_NAME:
                if (!name_is_valid(req->photon))
                        f->message = strdup(name_error("photonName", req->photon, buf, sizeof(buf)));
                else
                        f->message = strdup(name_error("method", req->method, buf, sizeof(buf)));
                break;
        case DISPATCH_ERROR_PROVIDER_GONE:
                k = asprintf(&f->message, "The provider of '%s' went away", req->photon);
                break;
        case DISPATCH_ERROR_SPAWN_FAILED:
                k = asprintf(&f->message, "Cannot start the handler of %s/%s: %s", req->photon, req->method,
                             strerror(ERRNO_VALUE(error)));
                break;
        case DISPATCH_ERROR_INTERNAL:
        default:
                f->error = DISPATCH_ERROR_INTERNAL;
                k = asprintf(&f->message, "Cannot call %s/%s: %s", req->photon, req->method,
                             strerror(ERRNO_VALUE(error)));
                break;
        }
        if (k < 0)
                f->message = NULL;      /* asprintf() leaves it undefined on failure */
        return error;
}

static bool shutting_down(Dispatcher *d) {
        return d->freeing || (d->hooks.shutting_down && d->hooks.shutting_down(d->hooks.userdata));
}

/* Starts a call: a command when caller is set. On failure returns a negative errno and says why in *f. */
static int call_start(Dispatcher *d, const DispatchRequest *req, DispatchPeer *caller, const char *caller_id,
                      DispatchCall **ret, DispatchFailure *f) {
        _cleanup_(call_freep) DispatchCall *call = NULL;
        _cleanup_free_ char *path = NULL;
        DispatchPeer *remote = NULL;
        PhotonEntry *e;
        bool method_arg = false;
        int r;

        *f = (DispatchFailure) {};

        if (shutting_down(d))
                return failure_set(d, req, DISPATCH_ERROR_SHUTTING_DOWN, -ESHUTDOWN, f);
        if (!name_is_valid(req->photon) || !name_is_valid(req->method))
                return failure_set(d, req, DISPATCH_ERROR_INVALID_NAME, -EINVAL, f);
        if (!dispatch_trigger_to_string(req->trigger))
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -EINVAL, f);

        e = photon_find(d, req->photon);
        if (d->n_calls + exec_runner_n_terminating(d->runner) >= limits.MAX_CALLS)
                return failure_set(d, req, DISPATCH_ERROR_BUSY, -EBUSY, f);
        if (e && e->n_calls >= limits.MAX_CALLS_PER_PHOTON)
                return failure_set(d, req, DISPATCH_ERROR_PHOTON_BUSY, -EBUSY, f);

        if (!e || e->n_providers == 0) {
                r = dispatch_resolve_handler(d->handlers_dir, req->photon, req->method, &path, &method_arg);
                /* Nothing here runs it: a provider on another node may (cluster mode). */
                if ((r == -ENOENT || r == -ESRCH) && d->hooks.find_remote)
                        remote = d->hooks.find_remote(req->photon, req->method, d->hooks.userdata);
                if (remote)
                        r = 0;
                else if (r == -ENOENT)
                        return failure_set(d, req, DISPATCH_ERROR_NO_PROVIDER, r, f);
                if (r == -ESRCH)
                        return failure_set(d, req, DISPATCH_ERROR_NO_METHOD, r, f);
                if (r == -EACCES)
                        return failure_set(d, req, DISPATCH_ERROR_NOT_EXECUTABLE, r, f);
                if (r == -EPERM)
                        return failure_set(d, req, DISPATCH_ERROR_UNSAFE_HANDLER, r, f);
                if (r < 0)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
        }

        call = new0(DispatchCall, 1);
        if (!call)
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        call->dispatcher = d;
        call->serial = ++d->next_serial;
        snprintf(call->invoke_id, sizeof(call->invoke_id), INVOKE_ID_PREFIX "%" PRIu64, call->serial);
        call->trigger = req->trigger;
        call->timeout_ms = req->timeout_ms ?: limits.HANDLER_TIMEOUT_MS;
        call->started_usec = now_usec(CLOCK_MONOTONIC);
        call->args = req->args ? json_object_get(req->args) : json_object_new_object();
        call->method = strdup(req->method);
        if (!call->args || !call->method)
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        if (req->job_id && !(call->job_id = strdup(req->job_id)))
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        if (req->instance && !(call->instance = strdup(req->instance)))
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        if (req->session_id && !(call->session_id = strdup(req->session_id)))
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        call->relayed = req->relayed;
        if (caller) {
                call->is_command = true;
                call->caller_id = strdup(caller_id);
                if (!call->caller_id)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        }

        /* Counted against the photon from now on, which also keeps its entry alive. */
        r = photon_get(d, req->photon, &e);
        if (r < 0)
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
        call->photon = e;
        e->n_calls++;

        if (call->timeout_ms > 0) {
                r = sd_event_add_time_relative(d->event, &call->timer_source, CLOCK_MONOTONIC,
                                               call->timeout_ms * USEC_PER_MSEC, USEC_PER_MSEC, on_call_timer,
                                               call);
                if (r < 0)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
        } else {
                /* No timeout: the timer still serves the exec grace periods. */
                r = sd_event_add_time_relative(d->event, &call->timer_source, CLOCK_MONOTONIC,
                                               USEC_PER_SEC, USEC_PER_MSEC, on_call_timer, call);
                if (r < 0)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
                (void) sd_event_source_set_enabled(call->timer_source, SD_EVENT_OFF);
        }
        (void) sd_event_source_set_description(call->timer_source, "dispatch-call-timer");

        if (e->n_providers > 0) {
                Provider *p = provider_pick(e);

                /* A failed send may cost the provider its connection (and free p): the call is not linked to it
                 * yet. */
                r = peer_send_invoke(call, p->peer);
                if (r < 0)
                        return r == -ENOMEM ? failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f) :
                                              failure_set(d, req, DISPATCH_ERROR_PROVIDER_GONE, -ECONNRESET, f);
                call->provider = p;
                p->n_calls++;
        } else if (remote) {
                r = peer_send_invoke(call, remote);
                if (r < 0)
                        return r == -ENOMEM ? failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f) :
                                              failure_set(d, req, DISPATCH_ERROR_PROVIDER_GONE, -ECONNRESET, f);
                call->remote = remote;
                remote->n_remote_calls++;
        } else {
                r = exec_spawn(call, path, method_arg);
                if (r < 0) {
                        log_warning_errno(r, "Failed to start the handler %s: %m", path);
                        return failure_set(d, req, DISPATCH_ERROR_SPAWN_FAILED, r, f);
                }
        }

        if (caller) {
                call->caller = caller;
                caller->n_calls++;
        }
        LIST_PREPEND(calls, d->calls, call);
        HASH_ADD(hh, d->calls_by_serial, serial, sizeof(call->serial), call);
        d->n_calls++;

        *ret = TAKE_PTR(call);
        return 0;
}

/* ---- public API ---- */

int dispatcher_new(const DispatcherConfig *config, const DispatcherHooks *hooks, Dispatcher **ret) {
        _cleanup_(dispatcher_freep) Dispatcher *d = NULL;
        int r;

        assert(config);
        assert(config->event);

        d = new0(Dispatcher, 1);
        if (!d)
                return -ENOMEM;
        d->event = sd_event_ref(config->event);
        d->channels = config->channels;
        if (hooks)
                d->hooks = *hooks;
        if (config->handlers_dir) {
                d->handlers_dir = strdup(config->handlers_dir);
                if (!d->handlers_dir)
                        return -ENOMEM;
        }

        r = exec_runner_new(d->event, &d->runner);
        if (r < 0)
                return r;

        r = sd_event_add_defer(d->event, &d->done_event_source, on_done, d);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(d->done_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(d->done_event_source, "dispatch-done");

        *ret = TAKE_PTR(d);
        return 0;
}

Dispatcher* dispatcher_free(Dispatcher *d) {
        PhotonEntry *e, *tmp;

        if (!d)
                return NULL;
        d->freeing = true;

        /* Every call still running ends now; each waiting job, webhook or caller hears about it once. */
        LIST_FOREACH(calls, call, d->calls) {
                if (call->state != CALL_RUNNING)
                        continue;
                exec_child_kill(call->exec);
                call_fail(call, "photond is shutting down");
        }
        on_done(NULL, d);
        d->runner = exec_runner_free(d->runner);

        /* Counted, not "while (e->providers)": with its last provider and no call left, e goes too. */
        HASH_ITER(hh, d->photons, e, tmp)
                for (unsigned n = e->n_providers; n > 0; n--) {
                        Provider *p = e->providers;

                        if (p->peer)
                                p->peer->providers = NULL;
                        p->peer = NULL;
                        provider_free(d, p);
                }

        sd_event_source_disable_unref(d->done_event_source);
        sd_event_unref(d->event);
        free(d->handlers_dir);
        return mfree(d);
}

int dispatcher_call(Dispatcher *d, const DispatchRequest *req, DispatchCallback cb, void *userdata,
                    DispatchCall **ret_call, DispatchFailure *ret_failure) {
        _cleanup_(dispatch_failure_done) DispatchFailure f = {};
        DispatchCall *call;
        int r;

        assert(d);
        assert(req);

        r = call_start(d, req, NULL, NULL, &call, &f);
        if (r < 0) {
                log_debug("Cannot dispatch %s/%s (%s): %s: %s", req->photon, req->method,
                          dispatch_trigger_to_string(req->trigger), dispatch_error_to_string(f.error),
                          f.message ?: "-");
                if (ret_failure)
                        *ret_failure = TAKE_STRUCT(f);
                return r;
        }
        call->callback = cb;
        call->userdata = userdata;
        if (ret_call)
                *ret_call = call;
        return 0;
}

void dispatch_call_abandon(DispatchCall *call) {
        if (!call)
                return;
        call->callback = NULL;
        call->userdata = NULL;
}

int dispatcher_command(Dispatcher *d, const DispatchRequest *req, DispatchPeer *caller, const char *caller_id,
                       DispatchFailure *ret_failure) {
        DispatchCall *call;

        assert(d);
        assert(req);
        assert(caller);
        assert(caller_id);
        assert(ret_failure);

        return call_start(d, req, caller, caller_id, &call, ret_failure);
}

bool dispatcher_job_ending(Dispatcher *d, const char *job_id) {
        return exec_runner_job_ending(d->runner, job_id);
}

bool dispatcher_can_serve_here(Dispatcher *d, const char *photon, const char *method) {
        _cleanup_free_ char *path = NULL;
        PhotonEntry *e;
        bool method_arg;

        if (!name_is_valid(photon) || !name_is_valid(method))
                return false;
        e = photon_find(d, photon);
        if (e && e->n_providers > 0)
                return true;
        return dispatch_resolve_handler(d->handlers_dir, photon, method, &path, &method_arg) >= 0;
}

bool dispatcher_can_serve(Dispatcher *d, const char *photon, const char *method) {
        return dispatcher_can_serve_here(d, photon, method) ||
                (d->hooks.find_remote && name_is_valid(photon) && name_is_valid(method) &&
                 d->hooks.find_remote(photon, method, d->hooks.userdata));
}

/* ---- peers ---- */

int dispatcher_provide(Dispatcher *d, DispatchPeer *peer, const char *photon, unsigned *ret_n_providers) {
        PhotonEntry *e;
        Provider *p = NULL, *head;
        int r;

        assert(d);
        assert(peer);

        if (!name_is_valid(photon))
                return -EINVAL;

        LIST_FOREACH(by_peer, i, (Provider*) peer->providers)
                if (streq(i->photon->name, photon))
                        p = i;
        if (p) {
                if (ret_n_providers)
                        *ret_n_providers = p->photon->n_providers;
                return 0;
        }

        if (d->n_providers >= limits.MAX_PROVIDERS)
                return -ENOSPC;
        r = photon_get(d, photon, &e);
        if (r < 0)
                return r;
        p = new0(Provider, 1);
        if (!p) {
                photon_gc(d, e);
                return -ENOMEM;
        }
        p->photon = e;
        p->peer = peer;
        LIST_PREPEND(by_photon, e->providers, p);
        if (e->n_providers++ == 0) {
                d->n_photons_provided++;
                if (d->hooks.provided_changed)
                        d->hooks.provided_changed(e->name, true, d->hooks.userdata);
        }
        d->n_providers++;
        head = peer->providers;
        LIST_PREPEND(by_peer, head, p);
        peer->providers = head;

        if (d->hooks.counts_changed)
                d->hooks.counts_changed(d->hooks.userdata);
        if (ret_n_providers)
                *ret_n_providers = e->n_providers;
        return 1;
}

void dispatcher_peer_gone(Dispatcher *d, DispatchPeer *peer) {
        bool answer_prompts = false;

        if (!peer->providers && peer->n_calls == 0 && peer->n_remote_calls == 0)
                return;

        /* First, without sending anything, drop every reference to the peer. Sends come after, because a send can
         * cost another peer its connection and bring us back here. */
        LIST_FOREACH(calls, call, d->calls) {
                if ((call->provider && call->provider->peer == peer) || call->remote == peer)
                        call_fail(call, "The provider of '%s' disconnected before answering %s",
                                  call->photon->name, call->method);
                if (call->caller == peer) {
                        call->caller = NULL;
                        peer->n_calls--;
                        if (call->n_prompts > 0)
                                answer_prompts = true;
                }
        }
        while (peer->providers) {
                Provider *p = peer->providers;

                log_debug("'%s' lost a provider (%u left).", p->photon->name, p->photon->n_providers - 1);
                provider_free(d, p);
        }

        /* A caller that went away answers its open prompts with null, as the reference resolves them. */
        if (answer_prompts)
                LIST_FOREACH(calls, call, d->calls)
                        if (!call->caller && call->is_command && call->state == CALL_RUNNING)
                                for (; call->n_prompts > 0; call->n_prompts--)
                                        (void) send_prompt_response(call, NULL);
}

static DispatchCall* call_by_invoke_id(Dispatcher *d, const char *id) {
        DispatchCall *call = NULL;
        const char *n;
        uint64_t serial;

        if (!id)
                return NULL;
        n = startswith(id, INVOKE_ID_PREFIX);
        if (!n || safe_atou64(n, &serial) < 0)
                return NULL;
        HASH_FIND(hh, d->calls_by_serial, &serial, sizeof(serial), call);
        return call;
}

DispatchCall* dispatcher_provider_call(Dispatcher *d, DispatchPeer *provider, const char *invoke_id) {
        DispatchCall *call = call_by_invoke_id(d, invoke_id);

        if (call && call->state == CALL_RUNNING &&
            ((call->provider && call->provider->peer == provider) || call->remote == provider))
                return call;
        return NULL;
}

void dispatch_call_answer(DispatchCall *call, bool success, struct json_object *data, struct json_object *patch,
                          struct json_object *inverse_patch, const char *error) {
        if (call->state != CALL_RUNNING)
                return;
        if (!success) {
                call_complete(call, false, NULL, error ?: "Method failed");
                return;
        }
        if (patch)
                call->patch = json_object_get(patch);
        if (inverse_patch)
                call->inverse_patch = json_object_get(inverse_patch);
        call_complete(call, true, json_ref_or_null(data), NULL);
}

int dispatch_call_emit(DispatchCall *call, struct json_object *emit_data, const char *channel, bool forward) {
        int r;

        if (forward && call->caller) {
                r = call->caller->ops->emit(call->caller, call->caller_id, emit_data);
                if (r == -ENOMEM)
                        return r;
        }

        /* The send above may have cost the caller its connection; call->caller is NULL then, which is what we
         * want. */
        if (channel) {
                r = channels_publish(call->dispatcher->channels, channel, emit_data,
                                     call->caller ? call->caller->subscriber : NULL, NULL);
                if (r < 0)
                        log_debug_errno(r, "Failed to publish an emit of %s/%s on '%s': %m", call->photon->name,
                                        call->method, channel);
        }
        return 0;
}

int dispatch_call_prompt(DispatchCall *call, struct json_object *prompt) {
        int r;

        /* Nobody to ask (a job, a webhook, a caller that left): the answer is null, as in the reference. */
        if (!call->caller) {
                r = send_prompt_response(call, NULL);
                return r == -ENOMEM ? r : 0;
        }

        /* Counted before the send, which may cost the caller its connection: dispatcher_peer_gone() then answers
         * this prompt too. */
        call->n_prompts++;
        r = call->caller->ops->prompt(call->caller, call->caller_id, prompt);
        if (r == -ENOMEM) {
                if (call->n_prompts > 0)
                        call->n_prompts--;
                return r;
        }
        return 0;
}

int dispatcher_prompt_response(Dispatcher *d, DispatchPeer *caller, const char *caller_id,
                               struct json_object *value) {
        int r;

        if (caller->n_calls == 0)
                return 0;

        LIST_FOREACH(calls, call, d->calls)
                if (call->caller == caller && call->state == CALL_RUNNING && call->n_prompts > 0 &&
                    streq_ptr(call->caller_id, caller_id)) {
                        call->n_prompts--;
                        r = send_prompt_response(call, value);
                        return r == -ENOMEM ? r : 0;
                }
        return 0;
}

/* ---- ps ---- */

int dispatcher_foreach_provider(Dispatcher *d, int (*cb)(const DispatchProviderInfo *info, void *userdata),
                                void *userdata) {
        PhotonEntry *e, *tmp;
        int r;

        HASH_ITER(hh, d->photons, e, tmp)
                LIST_FOREACH(by_photon, p, e->providers) {
                        r = cb(&(const DispatchProviderInfo) {
                                        .photon = e->name,
                                        .photon_calls = e->n_calls,
                                        .peer = p->peer,
                                        .running_calls = p->n_calls,
                                        .served = p->n_served,
                                }, userdata);
                        if (r < 0)
                                return r;
                }
        return 0;
}

int dispatcher_foreach_call(Dispatcher *d, int (*cb)(const DispatchCallInfo *info, void *userdata),
                            void *userdata) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        int r;

        LIST_FOREACH(calls, call, d->calls) {
                if (call->state != CALL_RUNNING)
                        continue;
                r = cb(&(const DispatchCallInfo) {
                                .invoke_id = call->invoke_id,
                                .photon = call->photon->name,
                                .method = call->method,
                                .trigger = call->trigger,
                                .job_id = call->job_id,
                                .exec = call->exec,
                                .pid = call->exec ? exec_child_pid(call->exec) : 0,
                                .age_ms = (now - call->started_usec) / USEC_PER_MSEC,
                                .timeout_ms = call->timeout_ms,
                                .provider = call->provider ? call->provider->peer : call->remote,
                                .caller = call->caller,
                                .caller_id = call->caller ? call->caller_id : NULL,
                        }, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int dispatch_peer_foreach_provided(DispatchPeer *peer, int (*cb)(const char *photon, void *userdata),
                                   void *userdata) {
        int r;

        LIST_FOREACH(by_peer, p, (Provider*) peer->providers) {
                r = cb(p->photon->name, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int dispatcher_add_status(Dispatcher *d, struct json_object *data) {
        int r;

        if ((r = json_add_int64(data, "photonsLoaded", d->n_photons_provided)) < 0 ||
            (r = json_add_int64(data, "providers", d->n_providers)) < 0 ||
            (r = json_add_int64(data, "runningCalls", dispatcher_running_calls(d))) < 0)
                return r;
        return 0;
}

unsigned dispatcher_running_calls(Dispatcher *d) {
        unsigned n = 0;

        if (!d)
                return 0;
        /* Done calls are delivered within this loop iteration; only running ones count. */
        n = d->n_calls;
        LIST_FOREACH(done, call, d->done)
                n--;
        return n;
}
