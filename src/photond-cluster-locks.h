/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode's lock backend: every lock request of the control socket acts on locks kept in Redis; the
 * operations of one loop iteration go to Redis as one call of one Lua script (docs/cluster.md, "Locks"). The control front end hands it LockOps through its
 * LockBackend (photond-control.h), which the Manager fills in with cluster_locks_backend() only in cluster mode;
 * the lock core (photond-lock.c) knows nothing of it.
 *
 * Keys (prefix P): P"lock:"<name> a string "<token> <acquiredAt> <expiresAt> <waitUntil> <holder>" with PXAT =
 * expiresAt (Redis' clock decides expiry); P"locks:token" the fencing-token counter; P"locks:index" a sorted set
 * name → expiresAt for list_locks and MAX_LOCKS. A release or transfer of a lock some node waits for (waitUntil
 * still ahead) PUBLISHes its name on P"locks:released", which every node subscribes to. */

#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "macro.h"
#include "photond-cluster.h"
#include "photond-control.h"

typedef struct ClusterLocks ClusterLocks;
struct json_object;

typedef struct ClusterLocksConfig {
        sd_event *event;
        const ClusterSettings *settings;        /* the URL, the prefix, and the caps of its Redis connections */
} ClusterLocksConfig;

/* Starts connecting (two Redis connections: the scripts, and the subscriber of P"locks:released"). */
int cluster_locks_new(const ClusterLocksConfig *config, ClusterLocks **ret);
/* Operations still under way end with -ECANCELED. */
ClusterLocks* cluster_locks_free(ClusterLocks *cl);
DEFINE_TRIVIAL_CLEANUP_FUNC(ClusterLocks*, cluster_locks_free);

/* The LockBackend that serves the control socket's lock requests (valid while cl lives). */
const LockBackend* cluster_locks_backend(ClusterLocks *cl);

/* Sends the operations gathered so far (the Manager's flush, after a batch of clients was served): one script
 * call. Without it they go at the end of the loop iteration. NULL: nothing. */
void cluster_locks_flush(ClusterLocks *cl);

/* status' "clusterLocks" object: state, pending, waiters, counters. */
int cluster_locks_add_status(ClusterLocks *cl, struct json_object *data);

/* ---- the keys and the scripts' arguments (exposed for the unit tests) ---- */

typedef enum ClusterLockKey {
        CLUSTER_LOCK_KEY_LOCK,          /* P"lock:"<name> */
        CLUSTER_LOCK_KEY_TOKEN,         /* P"locks:token" */
        CLUSTER_LOCK_KEY_INDEX,         /* P"locks:index" */
        CLUSTER_LOCK_KEY_CHANNEL,       /* P"locks:released" (a pub/sub channel) */
        _CLUSTER_LOCK_KEY_MAX,
} ClusterLockKey;

/* The key (name is ignored for the shared ones), allocated. */
char* cluster_lock_key(const char *prefix, ClusterLockKey key, const char *name);

/* A lock's value, "<token> <acquiredAt> <expiresAt> <waitUntil> <holder>" (times in Redis' ms; waitUntil 0: no
 * node waits). */
typedef struct ClusterLockValue {
        uint64_t token;
        int64_t acquired_at, expires_at, wait_until;
        const char *holder;             /* points into the value */
} ClusterLockValue;

/* -EINVAL if malformed. */
int cluster_lock_value_parse(const char *value, ClusterLockValue *ret);

/* The batch script's source (its arguments: photond-cluster-locks.c), for the unit tests that run it in Redis. */
const char* cluster_locks_script(void);

/* The longest timeout Redis is given (a century, as the lock core clamps). */
#define CLUSTER_LOCK_TIMEOUT_MAX_MS (UINT64_C(100) * 366 * 24 * 3600 * 1000)
