/* SPDX-License-Identifier: MIT */
#pragma once

/* Server-Sent Events on the HTTP front end: GET /v1/events?channel=A&channel=B:*. Each stream is a Subscriber of
 * the channels (photond-subscriber.h), as a control-socket client is: the same fan-out, replay, refresh_needed,
 * write-queue cap and slow-consumer policy. */

#include <stdint.h>

#include "macro.h"

typedef struct HttpServer HttpServer;
typedef struct HttpSse HttpSse;
typedef struct Channels Channels;

typedef struct HttpSseStats {
        unsigned n_streams;             /* open now */
        uint64_t n_opened;
        uint64_t n_refused;             /* over SSE_MAX_STREAMS or SSE_MAX_STREAMS_PER_ADDRESS */
        uint64_t n_slow_disconnects;    /* cut off by the slow-consumer policy (also in the channels' count) */
} HttpSseStats;

/* Adds the /v1/events route to http; streams subscribe to channels. Lowers limits.SSE_MAX_STREAMS (logged) to
 * half of the connections not reserved when it is more. Freed after http. */
int http_sse_new(HttpServer *http, Channels *channels, HttpSse **ret);
HttpSse* http_sse_free(HttpSse *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpSse*, http_sse_free);

const HttpSseStats* http_sse_stats(HttpSse *s);
