/* SPDX-License-Identifier: MIT */
#pragma once

/* The webhook HTTP endpoint: libmicrohttpd on the loop, routing, authentication, limits. */

typedef struct Manager Manager;
typedef struct Webhook Webhook;
struct json_object;

#include "macro.h"

/* Serves HTTP on fd (a listening stream socket, taken over: closed on failure, by MHD when freed). Reads the
 * PHOTON_WEBHOOK_* configuration and the secrets; a bad setting fails (logged). */
int webhook_new(Manager *m, int fd, Webhook **ret);
Webhook* webhook_free(Webhook *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(Webhook*, webhook_free);

/* Binds the listener when not socket-activated: PHOTON_WEBHOOK_PORT (0/unset = off) on PHOTON_WEBHOOK_ADDRESS
 * (default 127.0.0.1). Returns the fd, -ENOENT when off. */
int webhook_bind_from_env(int *ret_fd);

/* Re-reads the secrets (SIGHUP): $CREDENTIALS_DIRECTORY/webhook-secret[.<photon>], else PHOTON_WEBHOOK_SECRET.
 * On failure the old secrets stay. */
int webhook_reload_secrets(Webhook *w);

/* Adds "webhookEnabled" (false for w == NULL) and the "webhook" counters to the status data. */
int webhook_add_status(Webhook *w, struct json_object *data);
