/* SPDX-License-Identifier: MIT */
#pragma once

/* Every cap and default photond applies to what clients control, named in one place. Each can be tuned at start by
 * the environment variable PHOTOND_<NAME> (a decimal number), e.g. PHOTOND_MAX_LINE_BYTES=4194304; see photond(8).
 * The reference daemon has none of these caps: they are what keeps one bad client from exhausting the daemon. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*        NAME                                    default                    meaning */
#define LIMITS_FOREACH(X)                                                                                        \
        /* control socket */                                                                                    \
        X(MAX_CLIENTS,                          32768)             /* connected clients at once */              \
        X(MAX_LINE_BYTES,                       (1024 * 1024))     /* one pending NDJSON request line */        \
        X(MAX_WRITE_QUEUE_BYTES,                (4 * 1024 * 1024)) /* bytes queued to one client */             \
        X(ACCEPT_PAUSE_MS,                      100)               /* listener pause after EMFILE/ENFILE */     \
        X(SHUTDOWN_FLUSH_MS,                    500)               /* time to flush clients on shutdown */      \
        X(BUSY_POLL_US,                         20)                /* poll clients before sleeping; 0: off */   \
        X(FDSTORE_MAX_CLIENTS,                  4095)              /* connections kept across a restart */      \
        X(FDSTORE_MAX_BYTES,                    (64 * 1024 * 1024)) /* their state, kept for the next start */   \
        /* pub/sub */                                                                                           \
        X(MAX_SUBSCRIPTIONS_PER_CLIENT,         1024)                                                           \
        X(MAX_CHANNEL_NAME_BYTES,               256)                                                            \
        X(MAX_MESSAGE_BYTES,                    (512 * 1024))      /* serialized published message */           \
        X(MAX_CHANNELS,                         65536)             /* channels with buffers or subscribers */   \
        X(REPLAY_WINDOW_MS,                     300000)            /* events kept for replay (reference) */     \
        X(REPLAY_MAX_EVENTS,                    500)               /* per channel (reference) */                \
        X(REPLAY_MAX_TOTAL_BYTES,               (64 * 1024 * 1024)) /* all channels' buffers together */        \
        /* locks */                                                                                             \
        X(MAX_LOCK_NAME_BYTES,                  256)                                                            \
        X(MAX_LOCK_HOLDER_BYTES,                1024)              /* lockHolder/sessionId/id kept as holder */ \
        X(MAX_LOCKS,                            65536)                                                          \
        X(LOCK_DEFAULT_TIMEOUT_MS,              30000)             /* reference default, also for 0 */          \
        X(MAX_LOCK_WAITERS_PER_LOCK,            1024)                                                           \
        X(MAX_LOCK_WAITERS,                     65536)                                                          \
        X(MAX_LOCK_WAIT_MS,                     300000)                                                         \
        /* jobs */                                                                                              \
        X(MAX_JOBS,                             4096)                                                           \
        X(MAX_JOB_ARGS_BYTES,                   (64 * 1024))                                                    \
        X(JOB_CATCHUP_DELAY_MS,                 15000)             /* catch-up run delay after start */         \
        /* method dispatch */                                                                                   \
        X(MAX_CALLS_PER_PHOTON,                 64)                /* in-flight calls per photon */             \
        X(MAX_CALLS,                            1024)              /* in-flight calls in all */                 \
        X(HANDLER_TIMEOUT_MS,                   60000)             /* exec handler / provider call */           \
        X(HANDLER_MAX_TIMEOUT_MS,               3600000)           /* largest per-call timeoutMs */             \
        X(HANDLER_KILL_GRACE_MS,                5000)              /* SIGTERM -> SIGKILL */                     \
        X(HANDLER_MAX_OUTPUT_BYTES,             (4 * 1024 * 1024)) /* handler stdout */                         \
        X(HANDLER_MAX_LOG_BYTES,                (64 * 1024))       /* handler stderr logged per call */         \
        X(MAX_PROVIDERS,                        4096)                                                           \
        /* webhook */                                                                                           \
        X(WEBHOOK_MAX_BODY_BYTES,               (1024 * 1024))     /* reference: 1 MiB */                       \
        X(WEBHOOK_MAX_CONNECTIONS,              512)                                                            \
        X(WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS,  256)               /* from one source address */                \
        X(WEBHOOK_RESERVED_CONNECTIONS,         16)                /* kept free by closing unfinished heads */  \
        X(WEBHOOK_HEAD_TIMEOUT_S,               20)                /* accept to complete request head */        \
        X(WEBHOOK_CONNECTION_MEMORY_BYTES,      (64 * 1024))                                                    \
        X(WEBHOOK_IDLE_TIMEOUT_S,               30)                                                             \
        X(WEBHOOK_REQUEST_TIMEOUT_S,            60)                /* headers received to whole body */         \
        X(WEBHOOK_STOP_GRACE_MS,                10000)             /* a stop waits this for webhook calls */    \
        X(WEBHOOK_REPLAY_CACHE_IDS,             65536)             /* Standard Webhooks ids remembered */       \
        X(WEBHOOK_RATE_LIMIT_ADDRESSES,         65536)             /* source addresses the rate limit tracks */ \
        X(WEBHOOK_MAX_BUFFERED_BYTES,           (64 * 1024 * 1024)) /* request bodies held at once, all conns */ \
        X(WEBHOOK_SIGNATURE_TOLERANCE_S,        300)                                                            \
        /* HTTP event streams (GET /v1/events) */                                                               \
        X(SSE_MAX_STREAMS,                      128)               /* open at once */                           \
        X(SSE_MAX_STREAMS_PER_ADDRESS,          32)                /* from one source address */                \
        X(SSE_KEEPALIVE_S,                      15)                /* comment sent on a quiet stream */         \
        X(SSE_TOKEN_LIFETIME_S,                 60)                /* POST /v1/events/token's tokens */

typedef enum LimitId {
#define _LIMIT_ID(name, def) LIMIT_##name,
        LIMITS_FOREACH(_LIMIT_ID)
#undef _LIMIT_ID
        _LIMIT_ID_MAX,
        _LIMIT_ID_INVALID = -EINVAL,
} LimitId;

typedef struct Limits {
#define _LIMIT_FIELD(name, def) uint64_t name;
        LIMITS_FOREACH(_LIMIT_FIELD)
#undef _LIMIT_FIELD
} Limits;

/* The caps in force. Filled with the defaults at start, then overridden from the environment. */
extern Limits limits;

/* Resets every limit to its default. */
void limits_reset(void);

/* Whether 0 is a valid value of the limit name (it then turns something off); else limits are positive. */
bool limit_may_be_zero(const char *name);

/* Applies PHOTOND_<NAME> variables. Returns 0, or -EINVAL with *ret_bad naming the first bad variable. */
int limits_load_from_env(const char **ret_bad);

/* The largest MAX_CLIENTS that leaves photond, under a RLIMIT_NOFILE of nofile, the file descriptors it needs
 * besides its clients: a quarter of nofile, at least 64, at most half (the state files, the loop's sources, handler
 * pipes, webhook connections, and the one a refused connection takes for a moment). */
uint64_t limits_clients_for_nofile(uint64_t nofile);

/* Iterates the table (for status output and the man page test): name i, or NULL past the end. */
const char* limits_name(unsigned i, uint64_t *ret_value, uint64_t *ret_default);

/* The one wording of a request refused by a cap, for every request type and the bus, and the suggestion that goes
 * with it (docs/protocol.md): "<what>: <n> bytes, at most <max> (PHOTOND_<CAP>)" for a size (without "<n> bytes, "
 * when actual is UINT64_MAX, unknown), "<what>: at most <max> (PHOTOND_<CAP>)" for a count. Returns buf, or NULL
 * for a limit that is no cap a request runs into. */
const char* limit_error(LimitId id, uint64_t actual, char *buf, size_t size, const char **ret_suggestion);
