/* SPDX-License-Identifier: MIT */
#pragma once

/* The Manager owns the event loop, the bus, the listeners, the clients and every subsystem. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "clock.h"
#include "list.h"
#include "macro.h"
#include "photond-bus.h"
#include "photond-client.h"
#include "photond-cluster.h"
#include "photond-cluster-locks.h"
#include "photond-cluster-jobs.h"
#include "photond-cluster-calls.h"
#include "photond-control.h"
#include "photond-protocol.h"
#include "ratelimit.h"

typedef struct Channels Channels;
typedef struct LockTable LockTable;
typedef struct Scheduler Scheduler;
typedef struct Dispatcher Dispatcher;
typedef struct HttpServer HttpServer;
typedef struct HttpApi HttpApi;
typedef struct HttpSse HttpSse;
typedef struct MetricsEndpoint MetricsEndpoint;
typedef struct Webhook Webhook;
typedef struct StateFile StateFile;

typedef struct ManagerConfig {
        bool system;            /* --system: the system instance's paths and bus */
        const char *socket_path; /* --socket, or NULL for the instance default */
        BusMode bus_mode;
} ManagerConfig;

typedef struct Manager {
        sd_event *event;
        LoopClock clock;                /* the batch's time (manager_now()), handed to the cores */
        bool system;

        /* paths */
        char *base_dir;         /* user: ${PHOTON_HOME:-$HOME/.photon}; system: the state directory */
        char *jobs_base_dir;    /* user: ${PHOTON_DIR:-$HOME/.photon} (the reference's data base); system: state dir */
        char *state_dir;        /* where photond's own state.json lives */
        char *handlers_dir;
        char *socket_path;
        char *pid_path;
        char *owner_path;

        /* control socket */
        int control_fd;
        bool control_fd_passed; /* systemd owns the socket file: never unlink or chmod it */
        sd_event_source *control_event_source;
        sd_event_source *accept_pause_event_source;
        bool accept_paused;             /* accept() failed for want of a file descriptor, none succeeded since */
        RateLimit accept_pause_log;     /* its warning: at most one per 10 s (every disconnect ends a pause) */
        RateLimit refuse_log;           /* "Refusing a connection" lines: a storm must not flood the journal */
        LIST_HEAD(Client, clients);
        unsigned n_clients;
        ClientIO client_io;             /* photond-client.c's: the epoll set, the batch, busy polling */

        /* coalesced work: one flush (and one state write) per loop iteration */
        LIST_HEAD(Client, dirty_clients);
        sd_event_source *flush_event_source;
        bool state_dirty;
        bool state_unsaved;             /* the last state write failed: replies are held until one succeeds */
        bool state_retry_due;           /* the retry timer fired: write even without a new change */
        int state_error;                /* while state_unsaved: the last write's error */
        int64_t state_unsaved_since;    /* while state_unsaved: when writes began to fail (CLOCK_REALTIME ms) */
        uint64_t state_changes;         /* manager_state_changed() calls */
        uint64_t state_changes_tried;   /* state_changes at the last failed write */
        uint64_t request_changes;       /* state_changes when the request being served began, or when saved */
        sd_event_source *state_retry_event_source;
        StateFile *state_file;  /* photond-store.c: built on the channels and the lock table */
        bool state_lost;        /* store_load_state() found the state lost: fencing tokens restart above the clock */
        bool replay_loaded;     /* replay.bin was read at start: the buffers are saved again at exit */

        /* subsystems */
        Channels *channels;
        LockTable *locks;
        Scheduler *scheduler;
        Dispatcher *dispatcher;

        /* cluster mode (photond-cluster.c): NULL without a cluster URL */
        ClusterSettings cluster_settings;
        Cluster *cluster;
        ChannelsBackend channels_backend;       /* cluster mode: the channels' backend, forwarding to cluster */
        ClusterLocks *cluster_locks;    /* photond-cluster-locks.c: the lock requests' backend */
        const LockBackend *lock_backend;        /* where the control socket's lock requests go; NULL: m->locks */
        LockView lock_view;                     /* the same backend's list, for D-Bus and HTTP (with lock_backend) */
        ClusterJobs *cluster_jobs;      /* photond-cluster-jobs.c: the jobs across the nodes */
        ClusterCalls *cluster_calls;    /* method calls to and from other nodes (photond-cluster-calls.c) */

        /* HTTP: the front end on the "webhook" listener and its routes */
        int webhook_fd;
        HttpServer *http;
        Webhook *webhook;
        HttpApi *http_api;
        HttpSse *http_sse;
        MetricsEndpoint *metrics;

        /* bus */
        Bus *bus;                       /* NULL: no D-Bus (--bus=none) */

        /* lifecycle */
        bool loop_running;              /* READY=1 may go out (manager_run()) */
        uint64_t started_at_usec;       /* CLOCK_REALTIME */
        uint64_t started_mono_usec;     /* CLOCK_MONOTONIC */
        bool shutting_down;
        uint64_t fdstore_max;           /* systemd's file descriptor store: its size; 0: a stop keeps no connection */
        int exit_code;
        sd_event_source *shutdown_event_source;
        sd_event_source *idle_event_source;
        uint64_t idle_timeout_usec;
        uint64_t idle_last_activity_usec;       /* CLOCK_MONOTONIC: last disconnect, or a check that saw activity */
        uint64_t idle_checked_requests;         /* n_requests at the last idle check */
        char *last_status;              /* the STATUS= we told systemd last */
        sd_event_source *status_event_source;

        /* counters for status and GET /metrics */
        uint64_t n_requests;
        uint64_t n_clients_accepted;                    /* clients set up, or refused (counted closed) */
        uint64_t n_clients_closed[_CLIENT_CLOSE_MAX];   /* by reason, ClientClose */
        ControlStats control_stats;     /* photond-control.c's: the requests by type and outcome, their times */
} Manager;

int manager_new(const ManagerConfig *config, Manager **ret);
Manager* manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager*, manager_free);

/* Takes passed fds or binds the socket, loads state, connects the bus, writes the pid/owner files. */
int manager_startup(Manager *m);
/* Runs the loop until shutdown; returns the exit code. */
int manager_run(Manager *m);

/* Begins a graceful shutdown: stop accepting, tell every client, flush within a bound, then exit the loop. */
void manager_begin_shutdown(Manager *m, const char *why);

/* The status request's data object (the socket's status, D-Bus GetStatus). */
int manager_build_status(Manager *m, struct json_object **ret);

/* Removes the client from every subsystem at once; the memory is freed on the next flush, so callers that still
 * hold c may look at c->disconnected. */
void manager_client_disconnect(Manager *m, Client *c);
/* The same, counted in status "clientsClosed" under reason (every close but the daemon's own exit). */
void manager_client_close(Manager *m, Client *c, ClientClose reason);

/* Asks for a flush of every dirty client (and a state write, if dirty) on the next loop iteration. */
void manager_schedule_flush(Manager *m);

/* Does that flush now (after the state write, as always): the client sources call it at the end of a batch of
 * requests, which saves the loop an iteration. */
int manager_flush(Manager *m);

/* Marks photond's state (locks, high-water marks) for writing before the next replies are flushed. Called before
 * any output that reports the change is queued: that output is what waits while the state cannot be written
 * (manager_output_needs_state()). */
void manager_state_changed(Manager *m);

/* The bus name request was answered (either way): READY=1 may go out. */
void manager_bus_name_settled(Manager *m);

/* True while queued output must not leave yet: a state or job-file write that covers it is still to be made. */
bool manager_output_held(Manager *m);
/* Whether output queued now may report a state change not yet on disk: the request being served changed the
 * state (outside a request: anything did since the last one began or the last write). While a state write
 * fails, such output, and whatever its client is sent after it, waits (client_flush()); the rest leaves. */
bool manager_output_needs_state(Manager *m);
/* True while a state write failed and none succeeded since (shutdown aside): output that needs the state waits. */
bool manager_state_unsaved(Manager *m);
/* Whether output queued now may be written at once (client_write_now()) instead of with the flush at the end of
 * the batch: nothing of the batch waits for the disk and no later request of the batch is known to be coming. */
bool manager_may_write_now(Manager *m);

/* Asks the bus object to announce property changes (coalesced). */
void manager_bus_changed(Manager *m);

/* The time of the batch of requests being served, which every request of it sees (no clock read per request): the
 * loop's (sd_event_now()), or, for a batch found by busy polling (photond-client.c), the time it was found. The
 * cores read the same through m->clock (shared/clock.h). */
uint64_t manager_now(Manager *m, clockid_t clock);
