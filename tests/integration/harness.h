/* SPDX-License-Identifier: MIT */
#pragma once

/* Integration harness: start a real photond the way systemd does (self-bound, or under systemd-socket-activate),
 * wait for readiness through NOTIFY_SOCKET (no sleeps), talk NDJSON to it, inspect replies. Every helper asserts
 * with criterion, so tests read as a list of steps. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "helpers.h"

typedef struct DaemonOptions {
        bool socket_activate;           /* start under systemd-socket-activate with fd name "control" */
        bool webhook;                   /* also pass a loopback TCP listener named "webhook" (needs socket_activate) */
        const char *home;               /* reuse this PHOTON_HOME (restart tests); NULL = a new temporary one */
        const char *const *env;         /* extra "NAME=value" entries, NULL-terminated */
        const char *const *args;        /* extra photond arguments, NULL-terminated */
        const char *fdnames;            /* socket activation: --fdname= value (the webhook fd comes first) */
        unsigned nofile;                /* non-zero: RLIMIT_NOFILE soft and hard for photond */
} DaemonOptions;

typedef struct Daemon {
        pid_t pid;
        char *home;                     /* PHOTON_HOME, also the temporary directory */
        bool own_home;
        char *socket_path;
        char *log_path;                 /* photond's stderr */
        int notify_fd;
        char *notify_path;
        int webhook_port;
        bool ready;
} Daemon;

/* Starts photond and, unless socket-activated, waits for READY=1 (10 s deadline). */
Daemon* daemon_start(const DaemonOptions *opts);
/* Waits for READY=1 (socket activation: after the first connection made photond start). */
void daemon_wait_ready(Daemon *d);
/* Waits up to timeout_ms for a notification message containing text (e.g. "WATCHDOG=1"); returns the message
 * (static buffer) or NULL on timeout. */
const char* daemon_wait_notify(Daemon *d, const char *text, int timeout_ms);
/* True if photond's log contains text. */
bool daemon_log_contains(Daemon *d, const char *text);
/* Sends sig and waits for the exit; returns the wait status. */
int daemon_signal_and_wait(Daemon *d, int sig);
/* Waits up to timeout_ms for the process to exit by itself; returns the wait status or -1 on timeout. */
int daemon_wait_exit(Daemon *d, int timeout_ms);
/* Kills a running daemon, removes its temporary home (unless it was given), frees. */
void daemon_free(Daemon *d);
/* d's status answer (a connection of its own, opened and closed). */
struct json_object* status_of(Daemon *d);
/* Keeps the home on free (for restart tests). */
char* daemon_take_home(Daemon *d);
/* Prints photond's log to stderr (for failing tests). */
void daemon_dump_log(Daemon *d);

typedef struct Conn {
        int fd;
        char *buf;
        size_t len, alloc;
        unsigned next_id;
} Conn;

Conn* conn_open(Daemon *d);
Conn* conn_open_path(const char *path);
void conn_close(Conn *c);
/* Sends a printf-formatted line; the newline is added. */
void conn_send(Conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_send_raw(Conn *c, const void *data, size_t size);
/* Receives one JSON line; NULL on timeout or EOF. */
struct json_object* conn_recv(Conn *c, int timeout_ms);
/* Receives one line that must come within timeout_ms (asserts). */
struct json_object* conn_expect(Conn *c, int timeout_ms);
/* The next line as it came, without its line feed (for what json-c would not parse); fails the test on a timeout. */
char* conn_expect_line(Conn *c, int timeout_ms);
/* Fails the test if a line comes within ms. */
void conn_expect_quiet(Conn *c, int ms);
/* Publishes message (JSON text) on channel and returns the eventId of the acknowledgement; fails on anything else. */
int64_t conn_publish(Conn *c, const char *channel, const char *message);
/* Sends a request (printf format, must carry "id":"<id>") and returns the first line whose id is id. Other lines
 * received meanwhile are dropped. 5 s deadline. */
struct json_object* conn_request(Conn *c, const char *id, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* True when the peer closes the connection within timeout_ms (other lines are skipped). */
bool conn_wait_eof(Conn *c, int timeout_ms);

/* Whether the dotted path exists, a null value included (jget(), jstr(), jint() and jbool() are in helpers.h). */
bool jhas(struct json_object *o, const char *path);

/* Runs photonctl against d with the given arguments (NULL-terminated); returns its exit status, its stdout in
 * *ret_out (may be NULL). */
int run_ctl(Daemon *d, char **ret_out, const char *arg, ...) __attribute__((sentinel));

const char* photond_binary(void);
const char* photonctl_binary(void);
uint64_t mono_ms(void);
/* SIGTERM; photond must exit cleanly (status 0). Frees d. */
void daemon_stop_clean(Daemon *d);
/* A cluster node: photond with PHOTOND_CLUSTER_URL=url and PHOTOND_NODE_ID=node_id, in home (NULL: a new one), with
 * the further environment entries that follow (NULL-terminated; the first NULL ends them). */
Daemon* cluster_node_start(const char *url, const char *node_id, const char *home, ...) __attribute__((sentinel));
/* Waits (10 s at most) until the node takes publishes (status' cluster.ready), or (ready false) until it no
 * longer does. */
void cluster_wait_ready(Daemon *d, bool ready);
/* CLOCK_REALTIME in ms. */
int64_t real_ms(void);
/* asprintf() that fails the test instead of returning NULL. */
char* xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
