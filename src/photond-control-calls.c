/* SPDX-License-Identifier: MIT */

/* The control front end's method calls: the requests of callers (command, prompt_response) and of providers
 * (provide, invoke_result, emit, prompt), and ps. A Client takes part as a DispatchPeer (c->peer): this file fills
 * in its ops, which put the dispatcher's messages (invoke, prompt_response, the command's result, emit, prompt) on
 * the wire. The dispatcher (photond-dispatch.c) knows nothing of Clients or NDJSON. */

#include <inttypes.h>
#include <stdio.h>

#include "json-util.h"
#include "log.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "photond-protocol.h"
#include "photond-schedule.h"
#include "string-util.h"

/* ---- a Client as a DispatchPeer ---- */

static Client* peer_client(DispatchPeer *p) {
        return (Client*) ((uint8_t*) p - offsetof(Client, peer));
}

static int peer_invoke(DispatchPeer *p, const DispatchInvoke *inv) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o ||
            json_add_string(o, "type", "invoke") < 0 ||
            json_add_string(o, "id", inv->invoke_id) < 0 ||
            json_add_string(o, "photonName", inv->photon) < 0 ||
            json_add_string(o, "method", inv->method) < 0 ||
            json_add(o, "args", json_object_get(inv->args)) < 0 ||
            json_add_string(o, "trigger", dispatch_trigger_to_string(inv->trigger)) < 0 ||
            json_add_string(o, "jobId", inv->job_id) < 0 ||
            json_add_string(o, "instanceName", inv->instance) < 0 ||
            json_add_string(o, "sessionId", inv->session_id) < 0)
                return -ENOMEM;
        return client_send_json(peer_client(p), o);
}

static int peer_prompt_response(DispatchPeer *p, const char *invoke_id, struct json_object *value) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        Client *c = peer_client(p);

        if (c->disconnected)
                return 0;
        o = json_object_new_object();
        if (!o ||
            json_add_string(o, "type", "prompt_response") < 0 ||
            json_add_string(o, "id", invoke_id) < 0 ||
            json_add_nullable(o, "promptValue", json_ref_or_null(value)) < 0)
                return -ENOMEM;
        return client_send_json(c, o);
}

static void peer_call_done(DispatchPeer *p, const char *caller_id, const DispatchResult *result) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        Client *c = peer_client(p);

        if (c->disconnected)
                return;
        if (!result->success) {
                (void) client_reply_error(c, caller_id, result->error, NULL);
                return;
        }
        o = json_object_new_object();
        if (!o ||
            json_add_string(o, "type", "result") < 0 ||
            json_add_string(o, "id", caller_id) < 0 ||
            json_add_bool(o, "success", true) < 0 ||
            json_add_nullable(o, "data", json_ref_or_null(result->data)) < 0 ||
            json_add_int64(o, "durationMs", (int64_t) result->duration_ms) < 0) {
                log_oom();
                return;
        }
        (void) client_send_json(c, o);
}

/* An emit or a prompt for the caller: only an object that cannot be built is the provider's to hear of. */
static int peer_forward(DispatchPeer *p, const char *type, const char *caller_id, const char *key,
                        struct json_object *v) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o ||
            json_add_string(o, "type", type) < 0 ||
            json_add_string(o, "id", caller_id) < 0 ||
            json_add(o, key, json_object_get(v)) < 0)
                return -ENOMEM;
        (void) client_send_json(peer_client(p), o);
        return 0;
}

static int peer_emit(DispatchPeer *p, const char *caller_id, struct json_object *emit_data) {
        return peer_forward(p, "emit", caller_id, "emitData", emit_data);
}

static int peer_prompt(DispatchPeer *p, const char *caller_id, struct json_object *prompt) {
        return peer_forward(p, "prompt", caller_id, "prompt", prompt);
}

static const DispatchPeerOps client_peer_ops = {
        .invoke = peer_invoke,
        .prompt_response = peer_prompt_response,
        .call_done = peer_call_done,
        .emit = peer_emit,
        .prompt = peer_prompt,
};

/* c as a peer, set up the first time it provides or calls. */
static DispatchPeer* client_peer(Client *c) {
        if (!c->peer.ops) {
                c->peer.ops = &client_peer_ops;
                c->peer.subscriber = &c->subscriber;
        }
        return &c->peer;
}

int control_calls_restore_provider(Dispatcher *d, Client *c, const char *photon) {
        return dispatcher_provide(d, client_peer(c), photon, NULL);
}

/* ---- callers ---- */

int control_calls_command(Manager *m, Client *c, Request *req) {
        _cleanup_(dispatch_failure_done) DispatchFailure failure = {};
        const char *photon = request_string(req, "photonName"), *method = request_string(req, "method");
        const char *instance = NULL;
        struct json_object *args = NULL, *v;
        int64_t timeout = 0;
        char msg[192];
        int r;

        if (!photon)
                return client_reply_error(c, req->id, "photonName required for commands",
                                          "Include photonName in the request payload");
        if (!name_is_valid(photon))
                return client_reply_error(c, req->id, name_error("photonName", photon, msg, sizeof(msg)), NULL);
        if (!name_is_valid(method))
                return client_reply_error(c, req->id, name_error("method", method, msg, sizeof(msg)), NULL);

        if (json_object_object_get_ex(req->json, "instanceName", &v) && v) {
                instance = json_object_get_cstring(v);
                if (!instance)
                        return client_reply_error(c, req->id,
                                                  "Invalid request format: instanceName must be a string", NULL);
                if (!name_is_valid(instance))
                        return client_reply_error(c, req->id, name_error("instanceName", instance, msg, sizeof(msg)),
                                                  NULL);
        }

        r = json_get_int64(req->json, "timeoutMs", false, &timeout);
        if (r != -ENOENT && (r < 0 || timeout < 1 || (uint64_t) timeout > limits.HANDLER_MAX_TIMEOUT_MS)) {
                snprintf(msg, sizeof(msg), "Invalid timeoutMs: an integer from 1 to %" PRIu64 " (PHOTOND_HANDLER_MAX_TIMEOUT_MS)",
                         limits.HANDLER_MAX_TIMEOUT_MS);
                return client_reply_error(c, req->id, msg, NULL);
        }

        (void) json_object_object_get_ex(req->json, "args", &args);

        r = dispatcher_command(m->dispatcher, &(const DispatchRequest) {
                                       .photon = photon,
                                       .method = method,
                                       .args = args,
                                       .trigger = DISPATCH_TRIGGER_COMMAND,
                                       .timeout_ms = (uint64_t) MAX(timeout, 0),
                                       .instance = instance,
                                       .session_id = request_string(req, "sessionId"),
                               }, client_peer(c), req->id, &failure);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return client_reply_error(c, req->id, failure.message ?: "Cannot call the method",
                                          dispatch_error_suggestion(failure.error));
        return 0;
}

int control_calls_prompt_response(Manager *m, Client *c, Request *req) {
        struct json_object *v = NULL;

        /* As in the reference, a prompt_response gets no reply of its own. */
        (void) json_object_object_get_ex(req->json, "promptValue", &v);
        return dispatcher_prompt_response(m->dispatcher, &c->peer, req->id, v);
}

/* ---- providers ---- */

int control_calls_provide(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *data = NULL;
        const char *photon = request_string(req, "photonName");
        unsigned n_providers = 0;
        char msg[192];
        int r;

        if (!name_is_valid(photon))
                return client_reply_error(c, req->id, name_error("photonName", photon, msg, sizeof(msg)), NULL);

        r = dispatcher_provide(m->dispatcher, client_peer(c), photon, &n_providers);
        if (r == -ENOSPC)
                return client_reply_limit(c, req->id, LIMIT_MAX_PROVIDERS, UINT64_MAX);
        if (r < 0)
                return r;
        if (r > 0)
                log_debug("Client %" PRIu64 " (pid %d) provides '%s' (%u providers).", c->serial,
                          (int) c->ucred.pid, photon, n_providers);

        data = json_object_new_object();
        if (!data ||
            json_add_bool(data, "provided", true) < 0 ||
            json_add_string(data, "photonName", photon) < 0 ||
            json_add_int64(data, "providers", n_providers) < 0)
                return -ENOMEM;
        return client_reply_result(c, req->id, true, TAKE_PTR(data));
}

/* The running call that c provides under the request's id, or NULL after an error reply. */
static DispatchCall* provider_call_of(Manager *m, Client *c, Request *req) {
        DispatchCall *call = dispatcher_provider_call(m->dispatcher, &c->peer, req->id);
        char msg[160];

        if (call)
                return call;
        snprintf(msg, sizeof(msg), "Unknown invocation '%.64s': it finished, timed out or is not yours", req->id);
        (void) client_reply_error(c, req->id, msg, NULL);
        return NULL;
}

int control_calls_invoke_result(Manager *m, Client *c, Request *req) {
        DispatchCall *call = provider_call_of(m, c, req);
        struct json_object *v, *data = NULL, *patch = NULL, *inverse_patch = NULL;
        const char *error = NULL;
        bool success;

        if (!call)
                return 0;

        if (json_object_object_get_ex(req->json, "success", &v) && json_object_is_type(v, json_type_boolean))
                success = json_object_get_boolean(v);
        else
                success = !json_object_object_get_ex(req->json, "error", NULL);

        if (success) {
                (void) json_object_object_get_ex(req->json, "data", &data);
                (void) json_object_object_get_ex(req->json, "patch", &patch);
                (void) json_object_object_get_ex(req->json, "inversePatch", &inverse_patch);
        } else if (json_object_object_get_ex(req->json, "error", &v) && v) {
                struct json_object *text = json_object_is_type(v, json_type_string) ? v :
                        json_object_object_get(v, "message");

                /* A message with a NUL byte is passed on as its JSON text, so the caller sees all of it. */
                error = json_object_get_cstring(text);
                if (!error && json_object_is_type(text, json_type_string))
                        error = json_object_to_json_string_ext(text, JSON_FORMAT_FLAGS);
        }
        dispatch_call_answer(call, success, data, patch, inverse_patch, error);
        return 0;
}

int control_calls_emit(Manager *m, Client *c, Request *req) {
        DispatchCall *call = provider_call_of(m, c, req);
        struct json_object *e, *v;
        const char *channel;
        bool forward;

        if (!call)
                return 0;
        if (!json_object_object_get_ex(req->json, "emitData", &e) || !json_object_is_type(e, json_type_object))
                return client_reply_error(c, req->id, "Invalid request format: emitData must be an object", NULL);
        if (json_object_object_get_ex(e, "channel", &v) && json_string_get_cstring(v, &channel) == -EINVAL)
                return client_reply_error(c, req->id,
                                          "Invalid request format: emitData.channel must not contain a NUL character",
                                          NULL);

        forward = json_object_object_get_ex(e, "emit", &v) && v &&
                  !(json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v));
        return dispatch_call_emit(call, e, json_get_string(e, "channel"), forward);
}

int control_calls_prompt(Manager *m, Client *c, Request *req) {
        DispatchCall *call = provider_call_of(m, c, req);
        struct json_object *p;

        if (!call)
                return 0;
        if (!json_object_object_get_ex(req->json, "prompt", &p) || !json_object_is_type(p, json_type_object))
                return client_reply_error(c, req->id, "Invalid request format: prompt must be an object", NULL);
        return dispatch_call_prompt(call, p);
}

/* ---- ps ---- */

/* The Client behind a peer; every peer is one today, but a peer of another front end would show as none. */
static Client* client_of_peer(DispatchPeer *p) {
        return p && p->ops == &client_peer_ops ? peer_client(p) : NULL;
}

static int ps_add_provided(const char *photon, void *userdata) {
        return json_object_array_add(userdata, json_object_new_string(photon)) < 0 ? -ENOMEM : 0;
}

static int ps_add_clients(Manager *m, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *arr = json_object_new_array();
        int r;

        if (!arr)
                return -ENOMEM;
        LIST_FOREACH(clients, c, m->clients) {
                _cleanup_(json_object_putp) struct json_object *o = NULL, *provides = NULL;

                if (c->disconnected)
                        continue;
                o = json_object_new_object();
                provides = json_object_new_array();
                if (!o || !provides ||
                    json_add_int64(o, "id", (int64_t) c->serial) < 0 ||
                    json_add_int64(o, "pid", c->ucred.pid) < 0 ||
                    json_add_int64(o, "uid", c->ucred.uid == (uid_t) -1 ? -1 : (int64_t) c->ucred.uid) < 0 ||
                    json_add_string(o, "sessionId", c->session_id) < 0 ||
                    json_add_int64(o, "subscriptions", c->subscriber.n_subscriptions) < 0 ||
                    json_add_int64(o, "waitingCalls", c->peer.n_calls) < 0)
                        return -ENOMEM;
                r = dispatch_peer_foreach_provided(&c->peer, ps_add_provided, provides);
                if (r < 0)
                        return r;
                if (json_add(o, "provides", TAKE_PTR(provides)) < 0 ||
                    json_object_array_add(arr, TAKE_PTR(o)) < 0)
                        return -ENOMEM;
        }
        return json_add(data, "clients", TAKE_PTR(arr));
}

typedef struct PsProviders {
        struct json_object *arr;        /* one object per photon */
        struct json_object *clients;    /* the providers of the photon being listed */
        const char *photon;
} PsProviders;

static int ps_add_provider(const DispatchProviderInfo *info, void *userdata) {
        PsProviders *ps = userdata;
        Client *c = client_of_peer(info->peer);
        struct json_object *o, *pc;

        if (info->photon != ps->photon) {
                _cleanup_(json_object_putp) struct json_object *clients = json_object_new_array();

                o = json_object_new_object();
                if (!o || json_object_array_add(ps->arr, o) < 0) {
                        json_object_put(o);
                        return -ENOMEM;
                }
                if (!clients ||
                    json_add_string(o, "photonName", info->photon) < 0 ||
                    json_add_int64(o, "runningCalls", info->photon_calls) < 0)
                        return -ENOMEM;
                ps->clients = clients;
                if (json_add(o, "providers", TAKE_PTR(clients)) < 0)
                        return -ENOMEM;
                ps->photon = info->photon;
        }

        pc = json_object_new_object();
        if (!pc || json_object_array_add(ps->clients, pc) < 0) {
                json_object_put(pc);
                return -ENOMEM;
        }
        if ((c && json_add_int64(pc, "client", (int64_t) c->serial) < 0) ||
            (c && json_add_int64(pc, "pid", c->ucred.pid) < 0) ||
            json_add_int64(pc, "runningCalls", info->running_calls) < 0 ||
            json_add_int64(pc, "served", (int64_t) info->served) < 0)
                return -ENOMEM;
        return 0;
}

static int ps_add_call(const DispatchCallInfo *info, void *userdata) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        Client *provider = client_of_peer(info->provider), *caller = client_of_peer(info->caller);

        if (!o ||
            json_add_string(o, "id", info->invoke_id) < 0 ||
            json_add_string(o, "photonName", info->photon) < 0 ||
            json_add_string(o, "method", info->method) < 0 ||
            json_add_string(o, "trigger", dispatch_trigger_to_string(info->trigger)) < 0 ||
            json_add_string(o, "jobId", info->job_id) < 0 ||
            json_add_string(o, "via", info->exec ? "exec" : "provider") < 0 ||
            json_add_int64(o, "ageMs", (int64_t) info->age_ms) < 0 ||
            json_add_int64(o, "timeoutMs", (int64_t) info->timeout_ms) < 0)
                return -ENOMEM;
        if (info->exec && json_add_int64(o, "pid", info->pid) < 0)
                return -ENOMEM;
        if (provider && json_add_int64(o, "provider", (int64_t) provider->serial) < 0)
                return -ENOMEM;
        if (caller && json_add_int64(o, "caller", (int64_t) caller->serial) < 0)
                return -ENOMEM;
        return json_object_array_add(userdata, TAKE_PTR(o)) < 0 ? -ENOMEM : 0;
}

int control_calls_ps(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *data = json_object_new_object(),
                *providers = json_object_new_array(), *calls = json_object_new_array();
        int r;

        if (!data || !providers || !calls)
                return -ENOMEM;
        if ((r = ps_add_clients(m, data)) < 0 ||
            (r = dispatcher_foreach_provider(m->dispatcher, ps_add_provider,
                                             &(PsProviders) { .arr = providers })) < 0 ||
            (r = json_add(data, "providers", TAKE_PTR(providers))) < 0 ||
            (r = dispatcher_foreach_call(m->dispatcher, ps_add_call, calls)) < 0 ||
            (r = json_add(data, "calls", TAKE_PTR(calls))) < 0 ||
            (r = json_add_int64(data, "jobs", scheduler_count(m->scheduler))) < 0)
                return r;
        return client_reply_result(c, req->id, true, TAKE_PTR(data));
}
