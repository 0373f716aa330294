/* SPDX-License-Identifier: MIT */
#pragma once

/* The locks as the front ends that only show them (D-Bus ListLocks, HTTP GET /v1/locks) see them when a lock
 * backend other than the local table serves the lock requests (cluster mode: the locks are in Redis). The Manager
 * fills it in (control_lock_view_list() over its LockBackend) and hands it to them; without a backend they read
 * the local LockTable as always, and this is NULL. They know nothing of Redis or of the control socket. */

struct json_object;

/* error 0 and locks (an array as list_locks' "locks", taken over by the callee); or a negative errno and a short
 * reason ("not connected to Redis (…)": the caller words it "Cluster unavailable: <reason>"); -ECANCELED: photond
 * is stopping, nobody needs an answer. */
typedef void (*LockViewDone)(int error, const char *reason, struct json_object *locks, void *userdata);

typedef struct LockView {
        /* Lists the live locks: done is called exactly once, maybe before this returns, never after the backend
         * is freed (it ends what is under way with -ECANCELED then). */
        void (*list)(void *userdata, LockViewDone done, void *done_userdata);
        void *userdata;
} LockView;

/* Why D-Bus ReleaseLock and HTTP DELETE /v1/locks/{name} are refused with a LockView (cluster mode). */
#define CLUSTER_FORCE_RELEASE_REFUSAL                                                                         \
        "In cluster mode a lock is released by its holder through the control socket (unlock, or photonctl), "   \
        "and expires at its timeout otherwise; a forced release is not supported."
