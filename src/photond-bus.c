/* SPDX-License-Identifier: MIT */

/* D-Bus admin interface (stub until the D-Bus issue lands). */

#include "log.h"
#include "photond-bus.h"
#include "photond-manager.h"

int manager_connect_bus(Manager *m) {
        return 0;
}

void manager_bus_flush_changes(Manager *m) {
}

void bus_send_lock_changed(Manager *m, const char *name, const char *holder, const char *event) {
}

void bus_send_job_finished(Manager *m, const char *id, const char *status, int64_t duration_ms) {
}
