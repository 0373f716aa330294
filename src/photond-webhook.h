/* SPDX-License-Identifier: MIT */
#pragma once

/* The webhook route of the HTTP front end (photond-http.h): routing, authentication and the method call. */

typedef struct HttpServer HttpServer;
typedef struct Dispatcher Dispatcher;
typedef struct Channels Channels;
typedef struct Webhook Webhook;
struct json_object;

#include "macro.h"

/* Adds the webhook route to http, as its fallback (every path no other route takes): calls go to dispatcher,
 * webhook-received events to channels. Reads the PHOTON_WEBHOOK_* configuration and the secrets; a bad setting
 * fails (logged). Freed after http. */
int webhook_new(HttpServer *http, Dispatcher *dispatcher, Channels *channels, Webhook **ret);
Webhook* webhook_free(Webhook *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(Webhook*, webhook_free);

/* Re-reads the secrets (SIGHUP): $CREDENTIALS_DIRECTORY/webhook-secret[.<photon>], else PHOTON_WEBHOOK_SECRET.
 * On failure the old secrets stay. */
int webhook_reload_secrets(Webhook *w);

/* Adds "webhookEnabled" (false for w == NULL) and the "webhook" counters to the status data; the front end's own
 * counters (requests, connections, its refusals) are shown there as they always were. */
int webhook_add_status(Webhook *w, struct json_object *data);
