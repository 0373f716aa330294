/* SPDX-License-Identifier: MIT */
#pragma once

/* The webhook route of the HTTP front end (photond-http.h): routing, authentication and the method call. */

typedef struct HttpServer HttpServer;
typedef struct Dispatcher Dispatcher;
typedef struct Channels Channels;
typedef struct Webhook Webhook;
struct json_object;

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* Which signature scheme authenticated a webhook request. */
typedef enum WebhookScheme {
        WEBHOOK_SCHEME_NONE,            /* none did: no secret is needed (PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED), or
                                         * the request was refused before or by the check */
        WEBHOOK_SCHEME_HEADER,          /* X-Webhook-Secret */
        WEBHOOK_SCHEME_GITHUB,          /* X-Hub-Signature-256 */
        WEBHOOK_SCHEME_STRIPE,          /* Stripe-Signature */
        WEBHOOK_SCHEME_STANDARD,        /* Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature */
        _WEBHOOK_SCHEME_MAX,
        _WEBHOOK_SCHEME_INVALID = -EINVAL,
} WebhookScheme;

const char* webhook_scheme_to_string(WebhookScheme s);

/* How many requests of the route were answered with status, by the scheme that authenticated them (GET
 * /metrics). */
typedef struct WebhookAnswerCount {
        unsigned status;
        WebhookScheme scheme;
        uint64_t n;
} WebhookAnswerCount;

#define WEBHOOK_ANSWERS_MAX 64

typedef struct WebhookStats {
        const WebhookAnswerCount *answers;      /* n_answers of them, valid while w lives */
        size_t n_answers;
        uint64_t abandoned;             /* calls whose client went away before the answer */
} WebhookStats;

/* Adds the webhook route to http, as its fallback (every path no other route takes): calls go to dispatcher,
 * webhook-received events to channels. Reads the PHOTON_WEBHOOK_* configuration and the secrets; a bad setting
 * fails (logged). Freed after http. */
int webhook_new(HttpServer *http, Dispatcher *dispatcher, Channels *channels, Webhook **ret);
Webhook* webhook_free(Webhook *w);

/* Whether a webhook request is under way: from its head until its answer has been written (a stop waits for these,
 * up to WEBHOOK_STOP_GRACE_MS). */
bool webhook_busy(Webhook *w);
/* idle is called when the last request under way has ended. */
void webhook_set_idle_callback(Webhook *w, void (*idle)(void *userdata), void *userdata);
DEFINE_TRIVIAL_CLEANUP_FUNC(Webhook*, webhook_free);

/* Re-reads the secrets (SIGHUP): $CREDENTIALS_DIRECTORY/webhook-secret[.<photon>], else PHOTON_WEBHOOK_SECRET.
 * On failure the old secrets stay. */
int webhook_reload_secrets(Webhook *w);

/* The route's counters. Requests the front end refused before the route saw them (framing, the allowlist, the
 * connection caps) are in http_server_stats(). */
void webhook_get_stats(Webhook *w, WebhookStats *ret);

/* Adds "webhookEnabled" (false for w == NULL) and the "webhook" counters to the status data; the front end's own
 * counters (requests, connections, its refusals) are shown there as they always were. */
int webhook_add_status(Webhook *w, struct json_object *data);
