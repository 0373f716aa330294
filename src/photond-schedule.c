/* SPDX-License-Identifier: MIT */

/* Scheduled jobs (stub until the scheduling issue lands). */

#include <json-c/json.h>

#include "photond-client.h"
#include "photond-manager.h"
#include "photond-schedule.h"

struct Scheduler {
        Manager *manager;
};

int scheduler_new(Manager *m, Scheduler **ret) {
        Scheduler *s = new0(Scheduler, 1);
        if (!s)
                return -ENOMEM;
        s->manager = m;
        *ret = s;
        return 0;
}

Scheduler* scheduler_free(Scheduler *s) {
        return mfree(s);
}

int scheduler_load(Scheduler *s) {
        return 0;
}

int scheduler_handle_schedule(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int scheduler_handle_unschedule(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int scheduler_handle_list_jobs(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int scheduler_handle_set_state(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int scheduler_handle_get_execution_history(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int scheduler_handle_run_job(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int scheduler_add_status(Scheduler *s, struct json_object *data) {
        return 0;
}

unsigned scheduler_count(Scheduler *s) {
        return 0;
}
