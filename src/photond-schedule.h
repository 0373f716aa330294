/* SPDX-License-Identifier: MIT */
#pragma once

/* Scheduled jobs: cron timers, persistence in the reference layout, catch-up, run history. */

#include "photond-protocol.h"

typedef struct Manager Manager;
typedef struct Client Client;
typedef struct Scheduler Scheduler;
struct json_object;

int scheduler_new(Manager *m, Scheduler **ret);
Scheduler* scheduler_free(Scheduler *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Scheduler*, scheduler_free);

/* Loads persisted jobs and arms their timers. Problems with single files are logged, not fatal. */
int scheduler_load(Scheduler *s);

int scheduler_handle_schedule(Manager *m, Client *c, Request *req);
int scheduler_handle_unschedule(Manager *m, Client *c, Request *req);
int scheduler_handle_list_jobs(Manager *m, Client *c, Request *req);
int scheduler_handle_set_state(Manager *m, Client *c, Request *req);    /* enable|disable|pause|resume_schedule */
int scheduler_handle_get_execution_history(Manager *m, Client *c, Request *req);
int scheduler_handle_run_job(Manager *m, Client *c, Request *req);

int scheduler_add_status(Scheduler *s, struct json_object *data);
unsigned scheduler_count(Scheduler *s);
