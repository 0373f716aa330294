/* SPDX-License-Identifier: MIT */
#pragma once

/* The D-Bus admin interface org.photond.Daemon1. */

#include <stdint.h>

typedef struct Manager Manager;

/* Connects to the bus chosen by m->bus_mode, exports the object and requests the name. A missing bus is a warning:
 * returns 0 with m->bus unset. */
int manager_connect_bus(Manager *m);

/* Emits PropertiesChanged for what changed since the last call (coalesced by the manager). */
void manager_bus_flush_changes(Manager *m);

/* Signals. No-ops without a bus. event: "acquired", "released", "expired". */
void bus_send_lock_changed(Manager *m, const char *name, const char *holder, const char *event);
void bus_send_job_finished(Manager *m, const char *id, const char *status, int64_t duration_ms);
