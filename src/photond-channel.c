/* SPDX-License-Identifier: MIT */

/* Pub/sub channels (stub until the pub/sub issue lands). */

#include <json-c/json.h>

#include "photond-channel.h"
#include "photond-client.h"
#include "photond-manager.h"

struct Channels {
        Manager *manager;
};

int channels_new(Manager *m, Channels **ret) {
        Channels *ch = new0(Channels, 1);
        if (!ch)
                return -ENOMEM;
        ch->manager = m;
        *ret = ch;
        return 0;
}

Channels* channels_free(Channels *ch) {
        return mfree(ch);
}

void channels_client_gone(Channels *ch, Client *c) {
}

int channels_handle_subscribe(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int channels_handle_unsubscribe(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int channels_handle_publish(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int channels_handle_get_events_since(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int channels_publish(Channels *ch, const char *channel, struct json_object *message, Client *exclude,
                     uint64_t *ret_event_id) {
        return -EOPNOTSUPP;
}

int channels_add_status(Channels *ch, struct json_object *data) {
        return 0;
}

int channels_save_state(Channels *ch, struct json_object *state) {
        return 0;
}

int channels_load_state(Channels *ch, struct json_object *state) {
        return 0;
}

unsigned channels_count(Channels *ch) {
        return 0;
}
