/* SPDX-License-Identifier: MIT */
#pragma once

/* The D-Bus admin interface org.photond.Daemon1: the object, its connection and what it announces. A Bus keeps
 * its state to itself (photond-bus.c) and reads the cores through its Manager. The functions that take a Bus take
 * NULL too (no D-Bus: --bus=none) and then do nothing; the signals and announcements do nothing while the bus is
 * away either. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

typedef struct Manager Manager;
typedef struct Bus Bus;

typedef enum BusMode {
        BUS_MODE_AUTO,
        BUS_MODE_USER,
        BUS_MODE_SYSTEM,
        BUS_MODE_NONE,
        _BUS_MODE_MAX,
        _BUS_MODE_INVALID = -EINVAL,
} BusMode;

const char* bus_mode_to_string(BusMode m);
BusMode bus_mode_from_string(const char *s);

/* The object of m for the bus of mode (BUS_MODE_USER or BUS_MODE_SYSTEM); connects nothing yet. */
int bus_new(Manager *m, BusMode mode, Bus **ret);
Bus* bus_free(Bus *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Bus*, bus_free);

/* Connects, exports the object and requests the name. A missing bus is a warning: returns 0 and tries again in
 * the background. When the name request is answered, manager_bus_name_settled() is called, once. */
int bus_start(Bus *b);

/* Whether the answer to the name request is still awaited (READY=1 waits for it). */
bool bus_name_pending(const Bus *b);

/* Announces the changed counts (PropertiesChanged) at the end of the iteration, once however often it is called. */
void bus_changed(Bus *b);

/* Signals. event: "acquired", "released", "expired". */
void bus_send_lock_changed(Bus *b, const char *name, const char *holder, const char *event);
void bus_send_job_finished(Bus *b, const char *id, const char *status, int64_t duration_ms);
/* Cluster mode: the cluster's state changed (state: ClusterState, ClusterStateSince and ClusterStateChanged) or the
 * nodes seen did (!state: ClusterNodes). */
void bus_cluster_changed(Bus *b, bool state);

/* What the service manager is doing with photond's unit: the type of the job it runs on it ("restart", "stop", …;
 * free()), 1; 0 when none runs (a kill, or no unit); -ENOTCONN without a bus, or the error of the calls to
 * org.freedesktop.systemd1 (each waits at most 250 ms). Synchronous: for the stop (photond-fdstore.c). */
int bus_unit_job_type(Bus *b, char **ret);
