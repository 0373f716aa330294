/* SPDX-License-Identifier: MIT */
#pragma once

/* Named expiring locks: who may hold, renew and release what as in the reference, exact expiry, fencing tokens,
 * waiting acquires. No protocol: the control front end (photond-control-locks.c) and D-Bus call it. */

#include <stdint.h>
#include <systemd/sd-event.h>
#include <uthash.h>

#include "clock.h"
#include "macro.h"

typedef struct LockTable LockTable;
typedef struct LockWaiter LockWaiter;
struct json_object;

/* A live lock. Read-only outside photond-lock.c. */
typedef struct Lock {
        char *name;
        char *holder;
        int64_t acquired_at;            /* wall clock, ms since the epoch (what clients see) */
        int64_t expires_at;             /* wall clock, ms since the epoch (what clients see) */
        uint64_t deadline;              /* CLOCK_BOOTTIME µs: what really decides expiry */
        uint64_t token;                 /* fencing token of the current acquisition */
        unsigned heap_idx;              /* position in the table's deadline heap */
        bool changed;                   /* in the table's list of changes not yet written */
        size_t changed_idx;             /* its position there */
        LockWaiter *waiters;            /* FIFO of parked acquires (utlist) */
        unsigned n_waiters;
        LockTable *table;
        UT_hash_handle hh;              /* by name, in acquisition order */
} Lock;

/* The two clocks every operation needs: the deadline clock (BOOTTIME: a wall-clock jump neither frees nor extends
 * a lock) and the wall clock clients see in acquiredAt/expiresAt. */
typedef struct LockTime {
        uint64_t boot_usec;
        int64_t wall_ms;
} LockTime;

/* How many fencing tokens are reserved in state.json ahead of the last one issued (DECISIONS.md). */
#define LOCK_TOKEN_BLOCK 1024

/* What the table tells its owner, who fills this in (the Manager: photond-manager.c). A NULL member means nobody
 * listens. */
typedef struct LockTableHooks {
        const LoopClock *clock;         /* the batch's time; NULL: the system clock, read now */
        /* The persistent state (locks, the token mark) changed: it must be written before any reply that reports
         * the change leaves, so this is called before such a reply is queued. */
        void (*state_changed)(void *userdata);
        /* The number of live locks changed (the D-Bus property Locks). */
        void (*counts_changed)(void *userdata);
        /* A lock changed hands (the D-Bus signal LockChanged); event: "acquired", "released" or "expired". */
        void (*lock_changed)(void *userdata, const char *name, const char *holder, const char *event);
        void *userdata;
        /* Read, not called: true when the persisted state was lost (the owner's; the store sets it while loading).
         * Fencing tokens then continue above any that can have been issued. NULL: never. */
        const bool *state_lost;
} LockTableHooks;

/* event: the loop the expiry and wait timers run on (a reference is not taken: it must outlive the table). hooks
 * may be NULL (nobody listens, the system clock); it is copied. */
int lock_table_new(sd_event *event, const LockTableHooks *hooks, LockTable **ret);
/* Waits still parked end with failed(-ECANCELED); their owners (LockWaitOwner) are not touched, they may be gone. */
LockTable* lock_table_free(LockTable *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(LockTable*, lock_table_free);

int lock_table_add_status(LockTable *t, struct json_object *data);

/* photond's persisted state (state.json): live locks and the fencing-token high-water mark. load returns -EINVAL
 * for a malformed lock table (the caller then treats the state as lost). */
int lock_table_save_state(LockTable *t, struct json_object *state);
int lock_table_load_state(LockTable *t, struct json_object *state);

/* The changes since the last state write, as state.journal lines (photond-store.c): {"set":{...}} (a lock as in
 * state.json) for every lock changed and {"del":"name"} for every lock gone, the removals first. size_max gives
 * the room put needs (-ESTALE when a change could not be recorded, out of memory at the time: only a whole
 * snapshot is then complete); put writes them at p and returns the end. */
int lock_table_changes_size_max(LockTable *t, size_t *ret);
char* lock_table_put_changes(LockTable *t, char *p);
/* The recorded changes are written (journal or snapshot): forget them. */
void lock_table_changes_saved(LockTable *t);
/* Applies one journal record over the loaded state: the fencing-token mark always (it only rises), "set" and "del"
 * only with replay_locks (a journal that continues the snapshot loaded). -EINVAL for a malformed record. */
int lock_table_load_record(LockTable *t, struct json_object *record, bool replay_locks);
/* Drops every lock, recording nothing (a state that cannot be replayed counts as lost). */
void lock_table_reset(LockTable *t);
/* The fencing-token high-water mark as it must be persisted. */
uint64_t lock_table_token_mark(LockTable *t);

/* Live locks. */
unsigned lock_table_count(LockTable *t);

/* The lock table's counters (GET /metrics). */
typedef struct LockTableStats {
        unsigned held;                  /* live locks (lock_table_count()) */
        unsigned waiters;               /* acquires waiting for a lock (lockWait) */
        uint64_t acquired;              /* acquisitions since the start: a new fencing token each (a re-entrant
                                         * refresh is none) */
        uint64_t expired;               /* locks that ran out before their holder released them */
        uint64_t last_token;            /* the last fencing token issued */
} LockTableStats;

void lock_table_get_stats(LockTable *t, LockTableStats *ret);

/* For the D-Bus interface: the live locks as list_locks shows them (a new array), and a release on behalf of an
 * administrator (-ENOENT when there is no live lock of that name; waiters are served as after an unlock). */
int lock_table_list(LockTable *t, struct json_object **ret_array);

/* One lock as a list shows it (D-Bus ListLocks): valid during the callback only. */
typedef struct LockInfo {
        const char *name;
        const char *holder;
        int64_t acquired_at;            /* ms since the epoch */
        int64_t expires_at;
        uint64_t fencing_token;
} LockInfo;
typedef int (*LockInfoCallback)(const LockInfo *info, void *userdata);

/* Calls cb for every live lock, in lock_table_list()'s order, without building JSON; stops at cb's first negative
 * return and returns it. cb must not change the table. */
int lock_table_foreach(LockTable *t, LockInfoCallback cb, void *userdata);
int lock_table_force_release(LockTable *t, const char *name);

/* ---- the rules, with the time passed in (the front ends use lock_table_now(); tests pass their own) ---- */

LockTime lock_table_now(LockTable *t);

/* The live lock of that name, or NULL. A lock whose deadline has passed is expired here and now, even if its timer
 * has not fired yet (its first waiter, if any, then holds it). */
Lock* lock_table_get(LockTable *t, const char *name, const LockTime *now);

/* Acquires name for holder. Returns 1 for a new acquisition (a new fencing token), 0 for a re-entrant refresh by
 * the same holder (expiry reset to now + timeout, acquiredAt and token kept), -EBUSY when another holder has it
 * (*ret is then that lock), -ENAMETOOLONG / -EMSGSIZE for a name / holder over its cap, -ENOSPC at MAX_LOCKS.
 * Timeouts over about a century are taken as a century (the deadline must not overflow). */
int lock_table_acquire(LockTable *t, const char *name, const char *holder, uint64_t timeout_ms, const LockTime *now,
                       Lock **ret);

/* Releases name held by holder; a missing (or expired) lock counts as released. Returns 0, or -EPERM when another
 * holder has it. The first waiter, if any, gets the lock at once. */
int lock_table_release(LockTable *t, const char *name, const char *holder, const LockTime *now);

/* Hands name from `from` to `to` with a new acquisition (new acquiredAt, expiry and token). A missing or expired
 * lock is simply acquired for `to`. Returns 1 on success (*ret the lock), -EPERM when someone other than `from`
 * holds it (*ret that lock), or the errors of lock_table_acquire(). */
int lock_table_transfer(LockTable *t, const char *name, const char *from, const char *to, uint64_t timeout_ms,
                        const LockTime *now, Lock **ret);

/* ---- waiting acquires (lockWait) ----
 *
 * Whoever parks an acquire (the control front end, for a connection) hears how it ends through the ops it passes,
 * as the channels deliver to a Subscriber: the table knows nothing else of it. Every wait ends in exactly one call
 * of granted() or failed(), after which the table forgets userdata (the owner frees it then, if it must). The calls
 * come from within the table's functions and timers: they must not call back into the table. */

typedef struct LockWaitOps {
        /* The lock was handed to the waiter's holder (or that holder already had it: a re-entrant acquire). lock:
         * the lock as it is now, valid during the call only. The state change is announced (hooks.state_changed)
         * before. */
        void (*granted)(void *userdata, const LockInfo *lock);
        /* The wait ended without the lock. error: -ETIME, the wait ran out (lock: the lock as its holder keeps
         * it; holder: the waiter's); -ECANCELED, the wait was dropped and is owed no answer
         * (lock_table_owner_gone(), lock_table_free(), or its lock dropped by lock_table_reset() or a journal
         * record while loading). lock and holder are valid during the call only. */
        void (*failed)(void *userdata, int error, const char *holder, const LockInfo *lock);
} LockWaitOps;

/* Whose waits go together (a connection): embedded by the owner, zero-initialised and otherwise left alone; the
 * table links the owner's waits here, so lock_table_owner_gone() drops them without a search. */
typedef struct LockWaitOwner {
        LockWaiter *waiters;
        unsigned n_waiters;             /* the owner may read it: how many of its waits are still to end */
} LockWaitOwner;

/* Parks an acquire of name for holder behind the lock's current holder for at most wait_ms; once granted, the lock
 * is holder's for timeout_ms. Returns 0 (ops->granted() or ops->failed() follows, with userdata, later), -ENOENT if
 * the lock is not held, -EMSGSIZE for a holder over its cap, -EXFULL / -ENOSPC at the per-lock / total cap,
 * -ENOMEM. */
int lock_table_wait(LockTable *t, const char *name, const char *holder, uint64_t timeout_ms, uint64_t wait_ms,
                    const LockTime *now, LockWaitOwner *owner, const LockWaitOps *ops, void *userdata);

/* Calls cb with the userdata of each of the owner's waits, oldest first; stops at cb's first negative return and
 * returns it. cb must end no wait. (A stop that keeps the connections writes down what they wait for.) */
int lock_table_foreach_owner_wait(LockWaitOwner *owner, int (*cb)(void *userdata, void *cb_userdata),
                                  void *cb_userdata);

/* The owner is going away (a disconnecting client): its waits end with failed(-ECANCELED). Its locks stay: locks
 * belong to holder strings, not to connections. */
void lock_table_owner_gone(LockTable *t, LockWaitOwner *owner);

/* The last fencing token issued and the persisted high-water mark. */
uint64_t lock_table_last_token(LockTable *t);
uint64_t lock_table_reserved_token(LockTable *t);
unsigned lock_table_waiter_count(LockTable *t);
