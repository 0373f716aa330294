/* SPDX-License-Identifier: MIT */
#pragma once

/* The JSON API of the HTTP front end (/v1/…): the same data as the control socket's status, list_locks and
 * list_jobs and D-Bus ListChannels, a publish, and the D-Bus admin actions (run a job, release a lock). Every route
 * needs the API token (photond-http.h). */

#include "macro.h"
#include "photond-lock-view.h"

typedef struct HttpServer HttpServer;
typedef struct HttpApi HttpApi;
typedef struct Channels Channels;
typedef struct LockTable LockTable;
typedef struct Scheduler Scheduler;
struct json_object;

typedef struct HttpApiConfig {
        Channels *channels;
        LockTable *locks;
        /* Where GET /v1/locks lists the locks when they are not the table's (cluster mode: Redis), answered
         * later; NULL: the table. */
        const LockView *lock_view;
        Scheduler *scheduler;
        /* The status request's data object (the Manager's manager_build_status()): a new reference in *ret. */
        int (*build_status)(void *userdata, struct json_object **ret);
        void *userdata;
} HttpApiConfig;

/* Adds the /v1/ routes to http. Freed after http. */
int http_api_new(HttpServer *http, const HttpApiConfig *config, HttpApi **ret);
HttpApi* http_api_free(HttpApi *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpApi*, http_api_free);
