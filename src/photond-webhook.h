/* SPDX-License-Identifier: MIT */
#pragma once

/* The webhook HTTP endpoint: libmicrohttpd on the loop, routing, authentication, limits. */

typedef struct Manager Manager;
typedef struct Webhook Webhook;
struct json_object;

#include "macro.h"

/* Serves HTTP on fd (a listening stream socket, taken over). */
int webhook_new(Manager *m, int fd, Webhook **ret);
Webhook* webhook_free(Webhook *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(Webhook*, webhook_free);

/* Binds the listener when not socket-activated: PHOTON_WEBHOOK_PORT (0/unset = off) on PHOTON_WEBHOOK_ADDRESS
 * (default 127.0.0.1). Returns the fd, -ENOENT when off. */
int webhook_bind_from_env(int *ret_fd);

/* Re-reads the secrets (SIGHUP). */
int webhook_reload_secrets(Webhook *w);

int webhook_add_status(Webhook *w, struct json_object *data);
