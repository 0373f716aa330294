/* SPDX-License-Identifier: MIT */
#pragma once

/* One connection to Redis, driven by sd-event: hiredis' async context with an sd-event adapter (its
 * addRead/delRead/addWrite/delWrite/cleanup), a connect that is ready once AUTH, SELECT and a PING have answered,
 * reconnection with a doubling back-off, a timeout on every command (the oldest unanswered command older than the
 * timeout drops the connection, which fails every pending command), and a bounded number of pending commands.
 * hiredis 0.14 (Debian 12) has no timers of its own: the timeout is ours. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "cluster-util.h"
#include "macro.h"

typedef struct RedisConn RedisConn;
struct redisReply;

typedef enum RedisConnState {
        REDIS_CONN_CONNECTING,          /* the first connect, not answered yet */
        REDIS_CONN_CONNECTED,           /* AUTH/SELECT/PING answered */
        REDIS_CONN_RECONNECTING,        /* lost (or never reached): waiting for the next attempt, or in it */
} RedisConnState;

/* reply is NULL when the command failed without an answer (the connection was lost, timed out or is being freed);
 * an error answer is a reply of type REDIS_REPLY_ERROR. Valid during the call only. */
typedef void (*RedisReplyCallback)(RedisConn *c, struct redisReply *reply, void *userdata);

typedef struct RedisConnHooks {
        /* The connection is ready (again): what a new connection needs (subscriptions) is sent from here. */
        void (*connected)(RedisConn *c, void *userdata);
        /* The connection was lost or an attempt failed; error is a short text without secrets. */
        void (*disconnected)(RedisConn *c, const char *error, void *userdata);
        /* A pub/sub message ("message", channel, payload / "pmessage", pattern, channel, payload) or a
         * (un)subscribe confirmation on a connection in subscriber mode; never NULL. */
        void (*push)(RedisConn *c, struct redisReply *reply, void *userdata);
        void *userdata;
} RedisConnHooks;

/* A Lua script, called by its SHA1 (EVALSHA): each connection loads its scripts (SCRIPT LOAD) before it counts as
 * connected, so a call never ships the source. Fill it in with redis_script_init(); it must outlive the
 * connections that use it. */
typedef struct RedisScript {
        const char *source;
        char sha[41];
} RedisScript;

/* Sets s->source (borrowed) and its SHA1, as Redis names it. -EIO if libcrypto fails. */
int redis_script_init(RedisScript *s, const char *source);

typedef struct RedisConnConfig {
        sd_event *event;
        const ClusterUrl *url;          /* copied what is needed; the password too, cleared at the free */
        const char *name;               /* for the log: "commands", "subscriber" */
        uint64_t command_timeout_usec;  /* 0: REDIS_DEFAULT_COMMAND_TIMEOUT_USEC */
        size_t max_pending;             /* 0: REDIS_DEFAULT_MAX_PENDING */
        uint64_t backoff_min_usec;      /* 0: REDIS_DEFAULT_BACKOFF_MIN_USEC */
        uint64_t backoff_max_usec;      /* 0: REDIS_DEFAULT_BACKOFF_MAX_USEC */
        const RedisScript *const *scripts;      /* NULL-terminated, or NULL: loaded at every connect */
} RedisConnConfig;

#define REDIS_DEFAULT_COMMAND_TIMEOUT_USEC (2 * USEC_PER_SEC)
#define REDIS_DEFAULT_MAX_PENDING 65536
#define REDIS_DEFAULT_BACKOFF_MIN_USEC (100 * USEC_PER_MSEC)
#define REDIS_DEFAULT_BACKOFF_MAX_USEC (5 * USEC_PER_SEC)

/* Starts connecting at once (the result comes through the hooks). */
int redis_conn_new(const RedisConnConfig *config, const RedisConnHooks *hooks, RedisConn **ret);
/* Pending commands' callbacks are called with NULL. */
RedisConn* redis_conn_free(RedisConn *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(RedisConn*, redis_conn_free);

RedisConnState redis_conn_state(RedisConn *c);
/* CLOCK_REALTIME µs since the current state began. */
uint64_t redis_conn_state_since(RedisConn *c);
/* The last connection error (no secrets), or NULL. */
const char* redis_conn_last_error(RedisConn *c);
/* hooks.userdata (for a reply callback whose own userdata is the request's). */
void* redis_conn_userdata(RedisConn *c);
/* Commands sent and not answered yet. */
size_t redis_conn_pending(RedisConn *c);
/* Drops the connection as a timeout would (pending commands fail, hooks.disconnected is called) and reconnects
 * after the back-off: for a caller that knows the connection is dead when the kernel does not (a subscriber that
 * stopped receiving). error: for the log and redis_conn_last_error(). Nothing when not connected. */
void redis_conn_reset(RedisConn *c, const char *error);

/* Sends a command of argc binary-safe arguments. cb (may be NULL) is called once with its reply. -ENOTCONN
 * when not connected, -ENOBUFS when max_pending commands are unanswered, -EIO when hiredis did not take it
 * (out of memory, the context going). */
int redis_conn_command(RedisConn *c, RedisReplyCallback cb, void *userdata, int argc, const char **argv,
                       const size_t *argv_len);
/* EVALSHA of one of the connection's scripts (config.scripts) with n_keys keys followed by the other arguments:
 * argc (at most REDIS_SCRIPT_MAX_ARGS) binary-safe arguments in all. cb as redis_conn_command()'s. A NOSCRIPT
 * answer (someone ran SCRIPT FLUSH) reaches cb as the error it is, and the connection is dropped, so that the
 * next connect loads the scripts again. -E2BIG for too many arguments, else redis_conn_command()'s errors. */
#define REDIS_SCRIPT_MAX_ARGS 1024
int redis_conn_eval(RedisConn *c, const RedisScript *script, RedisReplyCallback cb, void *userdata, int n_keys,
                    int argc, const char **argv, const size_t *argv_len);

/* Writes the commands sent so far now rather than at the next EPOLLOUT (a loop iteration later): for a caller that
 * sends one command for many requests at the end of a batch of work. Nothing when not connected, when nothing is
 * queued, or from within the connection's own callbacks (EPOLLOUT writes it then). A write that fails drops the
 * connection as one at EPOLLOUT would. */
void redis_conn_write_now(RedisConn *c);

/* redis_conn_eval() without its cap on the arguments (a batch of publishes): argv and argv_len hold argc entries of
 * which the first 3 are left for this to fill in (EVALSHA, the script's SHA1, n_keys), so that nothing is copied. */
int redis_conn_evalv(RedisConn *c, const RedisScript *script, RedisReplyCallback cb, void *userdata, int n_keys,
                     int argc, const char **argv, size_t *argv_len);

/* A SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE or PUNSUBSCRIBE: what it brings goes to hooks.push. -ENOTCONN, -EIO. */
int redis_conn_subscribe(RedisConn *c, int argc, const char **argv, const size_t *argv_len);
