/* SPDX-License-Identifier: MIT */
#pragma once

/* Pub/sub: channel registry, exact and "prefix:*" subscriptions, per-channel replay buffers, fan-out. */

#include <stdint.h>

#include "photond-protocol.h"

typedef struct Manager Manager;
typedef struct Client Client;
typedef struct Channels Channels;
struct json_object;

int channels_new(Manager *m, Channels **ret);
Channels* channels_free(Channels *ch);
DEFINE_TRIVIAL_CLEANUP_FUNC(Channels*, channels_free);

/* Drops every subscription of a disconnecting client. */
void channels_client_gone(Channels *ch, Client *c);

int channels_handle_subscribe(Manager *m, Client *c, Request *req);
int channels_handle_unsubscribe(Manager *m, Client *c, Request *req);
int channels_handle_publish(Manager *m, Client *c, Request *req);
int channels_handle_get_events_since(Manager *m, Client *c, Request *req);

/* Publishes on behalf of photond itself (jobs:*, webhooks:*, state-changed, emits, system:*). message is borrowed;
 * NULL leaves the "message" key out. exclude (may be NULL) does not receive it. Returns 0 and the eventId. */
int channels_publish(Channels *ch, const char *channel, struct json_object *message, Client *exclude,
                     uint64_t *ret_event_id);

/* Adds this subsystem's fields to the status data object. */
int channels_add_status(Channels *ch, struct json_object *data);

/* photond's persisted state (state.json): the eventId high-water mark. */
int channels_save_state(Channels *ch, struct json_object *state);
int channels_load_state(Channels *ch, struct json_object *state);

unsigned channels_count(Channels *ch);
