/* SPDX-License-Identifier: MIT */

/* Method dispatch (stub until the method-dispatch issue lands: every call fails with "no handler"). */

#include <json-c/json.h>

#include "photond-client.h"
#include "photond-dispatch.h"
#include "photond-manager.h"

struct Dispatcher {
        Manager *manager;
};

static const char *const dispatch_trigger_table[_DISPATCH_TRIGGER_MAX] = {
        [DISPATCH_TRIGGER_COMMAND] = "command",
        [DISPATCH_TRIGGER_SCHEDULE] = "schedule",
        [DISPATCH_TRIGGER_WEBHOOK] = "webhook",
};

const char* dispatch_trigger_to_string(DispatchTrigger t) {
        if (t < 0 || t >= _DISPATCH_TRIGGER_MAX)
                return NULL;
        return dispatch_trigger_table[t];
}

int dispatcher_new(Manager *m, Dispatcher **ret) {
        Dispatcher *d = new0(Dispatcher, 1);
        if (!d)
                return -ENOMEM;
        d->manager = m;
        *ret = d;
        return 0;
}

Dispatcher* dispatcher_free(Dispatcher *d) {
        return mfree(d);
}

int dispatcher_call(Dispatcher *d, const DispatchRequest *req, DispatchCallback cb, void *userdata,
                    DispatchCall **ret_call) {
        return -ENOENT;
}

void dispatch_call_abandon(DispatchCall *call) {
}

bool dispatcher_can_serve(Dispatcher *d, const char *photon, const char *method) {
        return false;
}

void dispatcher_client_gone(Dispatcher *d, Client *c) {
}

int dispatcher_handle_command(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int dispatcher_handle_provide(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int dispatcher_handle_invoke_result(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int dispatcher_handle_emit(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int dispatcher_handle_prompt(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int dispatcher_handle_prompt_response(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int dispatcher_handle_ps(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int dispatcher_add_status(Dispatcher *d, struct json_object *data) {
        return 0;
}

unsigned dispatcher_running_calls(Dispatcher *d) {
        return 0;
}
