/* SPDX-License-Identifier: MIT */
#pragma once

/* GET /metrics on the HTTP front end: Prometheus' text exposition of the cores' and the front ends' counters, read
 * through their typed stats accessors at each scrape (docs/operating.md lists every metric). */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"
#include "photond-client.h"

typedef struct HttpServer HttpServer;
typedef struct HttpSse HttpSse;
typedef struct Channels Channels;
typedef struct LockTable LockTable;
typedef struct Scheduler Scheduler;
typedef struct Webhook Webhook;
typedef struct ControlStats ControlStats;
typedef struct MetricsEndpoint MetricsEndpoint;

/* What only the Manager knows, asked at each scrape. */
typedef struct MetricsDaemonStats {
        unsigned clients;                       /* control connections open */
        uint64_t clients_accepted;              /* accepted, those refused at once included */
        uint64_t clients_closed[_CLIENT_CLOSE_MAX];     /* by reason (ClientClose), as status "clientsClosed" */
        bool state_unsaved;                     /* the last state write failed */
        /* cluster mode, once a heartbeat counted them: the cluster's live locks in Redis */
        bool cluster_locks_known;
        uint64_t cluster_locks;
} MetricsDaemonStats;

typedef struct MetricsConfig {
        Channels *channels;
        LockTable *locks;
        Scheduler *scheduler;
        Webhook *webhook;
        HttpSse *sse;                           /* may be NULL */
        const ControlStats *control;            /* the control front end's request counts */
        uint64_t started_at_usec;               /* CLOCK_REALTIME: process_start_time_seconds */
        void (*daemon_stats)(void *userdata, MetricsDaemonStats *ret);
        void *userdata;
} MetricsConfig;

/* Adds GET /metrics to http (the config is copied; what it points to must outlive the endpoint). It needs the API
 * token unless PHOTOND_METRICS_AUTH=none; another value fails (logged). http may be NULL (unit tests): no route,
 * only metrics_endpoint_write(). Freed after http. */
int metrics_endpoint_new(HttpServer *http, const MetricsConfig *config, MetricsEndpoint **ret);
MetricsEndpoint* metrics_endpoint_free(MetricsEndpoint *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(MetricsEndpoint*, metrics_endpoint_free);

/* Writes the whole exposition to f (the route's body; exposed for the unit tests). 0, or -EIO when f failed. */
int metrics_endpoint_write(MetricsEndpoint *e, FILE *f);
