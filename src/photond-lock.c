/* SPDX-License-Identifier: MIT */

/* Locks: named expiring locks in a hash table by name, and in a min-heap by deadline (CLOCK_BOOTTIME). One sd-event
 * timer with 1 ms accuracy waits for the heap's earliest deadline, so an expired lock is gone the moment its time
 * is up, with no sweep; a lock whose deadline has passed is also treated as gone when it is looked up, whatever
 * order the loop dispatches in. The timer is moved only to an earlier deadline, never on a release: a timer per
 * lock made sd-event reprogram its timerfd on almost every release of the earliest lock (a system call per
 * request under load), where now a timer that finds its lock already released re-arms once for the next one.
 * Fencing tokens increase over the daemon's whole life: state.json holds a high-water mark raised a block at a
 * time ahead of the tokens issued. Waiting acquires (lockWait) queue FIFO on the held lock and get it at once
 * when it frees; their owners hear how a wait ends through LockWaitOps. Every change is recorded (the lock changed, or the name of the lock gone) and marks the state
 * dirty; the manager writes those changes (state.journal, photond-store.c) before any reply of the same loop
 * iteration leaves (group commit), so nobody hears "acquired" for a lock a crash could forget. */

#include <errno.h>
#include <string.h>
#include <utlist.h>

#include "json-util.h"
#include "photond-limits.h"
#include "photond-lock.h"

/* Larger timeouts are clamped to this ("practically forever") so the deadline in µs and expiresAt in ms cannot
 * overflow. */
#define LOCK_TIMEOUT_MAX_MS (UINT64_C(100) * 366 * 24 * 3600 * 1000)

struct LockWaiter {
        Lock *lock;
        char *holder;
        uint64_t timeout_ms;            /* the lock's timeout once it is handed over */
        sd_event_source *timer;         /* the end of the wait */
        LockWaiter *prev, *next;        /* lock->waiters */
        /* who hears how it ends (LockWaitOps) */
        const LockWaitOps *ops;
        void *userdata;
        LockWaitOwner *owner;
        LockWaiter *owner_prev, *owner_next;    /* owner->waiters */
};

struct LockTable {
        LockTableHooks hooks;
        sd_event *event;
        Lock *locks;                    /* uthash by name */
        Lock **heap;                    /* every live lock, earliest deadline first */
        unsigned heap_size, heap_alloc;
        sd_event_source *timer;         /* at or before heap[0]'s deadline, off when the table is empty */
        uint64_t timer_usec;            /* when it fires; USEC_INFINITY when off */
        unsigned n_waiters;
        uint64_t last_token;            /* the last fencing token issued */
        uint64_t n_acquired;            /* acquisitions (tokens issued) since the start */
        uint64_t n_expired;             /* locks that ran out */
        uint64_t reserved_token;        /* persisted: no token above it has been issued */
        bool tokens_reseeded;

        /* What changed since the last state write, so that write is as small as the change (state.journal): the
         * live locks changed, in the order of their first change (NULL where one has gone since), and the names of
         * the locks gone. changes_lost: one could not be recorded, only a whole snapshot is complete. */
        Lock **changed;
        size_t n_changed, n_changed_alloc;
        char **removed;
        size_t n_removed, n_removed_alloc;
        bool changes_lost;
};

/* ---- locks as others see them ---- */

static LockInfo lock_info(const Lock *l) {
        return (LockInfo) {
                .name = l->name,
                .holder = l->holder,
                .acquired_at = l->acquired_at,
                .expires_at = l->expires_at,
                .fencing_token = l->token,
        };
}

/* One lock as list_locks and state.json have it. */
static struct json_object* lock_info_json(const LockInfo *i) {
        struct json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        if (json_add_string(o, "name", i->name) < 0 ||
            json_add_string(o, "holder", i->holder) < 0 ||
            json_add_int64(o, "acquiredAt", i->acquired_at) < 0 ||
            json_add_int64(o, "expiresAt", i->expires_at) < 0 ||
            json_add_int64(o, "fencingToken", (int64_t) i->fencing_token) < 0)
                return json_object_put(o), NULL;
        return o;
}

static struct json_object* lock_json_new(const Lock *l) {
        LockInfo i = lock_info(l);

        return lock_info_json(&i);
}

/* ---- what the owner hears (LockTableHooks) ---- */

static void notify_state_changed(LockTable *t) {
        if (t->hooks.state_changed)
                t->hooks.state_changed(t->hooks.userdata);
}

static void notify_counts_changed(LockTable *t) {
        if (t->hooks.counts_changed)
                t->hooks.counts_changed(t->hooks.userdata);
}

static void notify_lock_changed(LockTable *t, const Lock *l, const char *event) {
        if (t->hooks.lock_changed)
                t->hooks.lock_changed(t->hooks.userdata, l->name, l->holder, event);
}

/* ---- the table ---- */

LockTime lock_table_now(LockTable *t) {
        uint64_t boot, wall;

        /* The batch's time: every request of one batch sees the same instant, and it costs no syscall. */
        boot = loop_clock_now(t->hooks.clock, CLOCK_BOOTTIME);
        wall = loop_clock_now(t->hooks.clock, CLOCK_REALTIME);
        return (LockTime) { .boot_usec = boot, .wall_ms = (int64_t) (wall / USEC_PER_MSEC) };
}

/* When state.json was lost the high-water mark went with it. Tokens then continue above any we can have issued
 * (fewer than 1000 per millisecond since the epoch), so a resource that saw an old token still accepts the new
 * holders' larger ones. Checked before a token is issued or the mark is written. */
static void lock_table_reseed_tokens(LockTable *t) {
        uint64_t seed;

        if (t->tokens_reseeded || !t->hooks.state_lost || !*t->hooks.state_lost)
                return;
        t->tokens_reseeded = true;
        seed = (uint64_t) MAX(now_ms(), 0) * 1000;
        if (seed > t->reserved_token)
                t->last_token = t->reserved_token = seed;
}

static uint64_t lock_table_next_token(LockTable *t) {
        lock_table_reseed_tokens(t);
        t->n_acquired++;
        t->last_token++;
        if (t->last_token > t->reserved_token)
                t->reserved_token = t->last_token + LOCK_TOKEN_BLOCK - 1;   /* written before the reply leaves */
        return t->last_token;
}

/* Room for one more element in *array (of size elements, *alloc allocated). */
static bool array_reserve(void **array, size_t *alloc, size_t n, size_t size) {
        size_t na;
        void *p;

        if (n < *alloc)
                return true;
        na = *alloc ? *alloc * 2 : 16;
        p = reallocarray(*array, na, size);
        if (!p)
                return false;
        *array = p;
        *alloc = na;
        return true;
}

/* l is new or changed: it goes into the next state write. */
static void lock_changed(LockTable *t, Lock *l) {
        if (!l->changed) {
                if (array_reserve((void**) &t->changed, &t->n_changed_alloc, t->n_changed, sizeof(Lock*))) {
                        l->changed = true;
                        l->changed_idx = t->n_changed;
                        t->changed[t->n_changed++] = l;
                } else
                        t->changes_lost = true;
        }
        notify_state_changed(t);
}

static void lock_set_expiry(Lock *l, uint64_t timeout_ms, const LockTime *now) {
        timeout_ms = MIN(timeout_ms, LOCK_TIMEOUT_MAX_MS);
        l->expires_at = now->wall_ms + (int64_t) timeout_ms;
        l->deadline = now->boot_usec + timeout_ms * USEC_PER_MSEC;
}

static void lock_vacate(LockTable *t, Lock *l, const LockTime *now, const char *event);

/* ---- the deadline heap ---- */

static void heap_set(LockTable *t, unsigned i, Lock *l) {
        t->heap[i] = l;
        l->heap_idx = i;
}

static void heap_up(LockTable *t, unsigned i) {
        Lock *l = t->heap[i];

        while (i > 0 && t->heap[(i - 1) / 2]->deadline > l->deadline) {
                heap_set(t, i, t->heap[(i - 1) / 2]);
                i = (i - 1) / 2;
        }
        heap_set(t, i, l);
}

static void heap_down(LockTable *t, unsigned i) {
        Lock *l = t->heap[i];

        for (;;) {
                unsigned c = 2 * i + 1;

                if (c >= t->heap_size)
                        break;
                if (c + 1 < t->heap_size && t->heap[c + 1]->deadline < t->heap[c]->deadline)
                        c++;
                if (t->heap[c]->deadline >= l->deadline)
                        break;
                heap_set(t, i, t->heap[c]);
                i = c;
        }
        heap_set(t, i, l);
}

static int heap_push(LockTable *t, Lock *l) {
        if (t->heap_size == t->heap_alloc) {
                unsigned na = t->heap_alloc ? t->heap_alloc * 2 : 16;
                Lock **n = reallocarray(t->heap, na, sizeof(Lock*));

                if (!n)
                        return -ENOMEM;
                t->heap = n;
                t->heap_alloc = na;
        }
        heap_set(t, t->heap_size++, l);
        heap_up(t, l->heap_idx);
        return 0;
}

static void heap_remove(LockTable *t, Lock *l) {
        unsigned i = l->heap_idx;

        assert(i < t->heap_size && t->heap[i] == l);
        t->heap_size--;
        if (i == t->heap_size)
                return;
        heap_set(t, i, t->heap[t->heap_size]);
        heap_up(t, i);
        heap_down(t, t->heap[i]->heap_idx);
}

static void lock_vacate(LockTable *t, Lock *l, const LockTime *now, const char *event);
static int lock_table_arm_timer(LockTable *t);

static int on_lock_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        LockTable *t = userdata;
        LockTime now = lock_table_now(t);

        /* Not re-armed by the hand-overs in here (a deadline still due would fire again at once), only after.
         * A hand-over gives the lock a deadline after now, so this ends. */
        t->timer_usec = 0;
        while (t->heap_size > 0 && t->heap[0]->deadline <= now.boot_usec)
                lock_vacate(t, t->heap[0], &now, "expired");
        t->timer_usec = USEC_INFINITY;
        (void) lock_table_arm_timer(t);
        return 0;
}

/* Makes the timer fire no later than the earliest deadline. Should that fail (ENOMEM), the deadline check on
 * access still ends every lock on time for anyone who asks. */
static int lock_table_arm_timer(LockTable *t) {
        uint64_t when;
        int r;

        if (t->heap_size == 0 || t->timer_usec <= t->heap[0]->deadline)
                return 0;
        when = t->heap[0]->deadline;

        if (t->timer) {
                r = sd_event_source_set_time(t->timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(t->timer, SD_EVENT_ONESHOT);
        } else {
                /* 1 ms accuracy: sd-event's default of 250 ms would let a lock outlive its timeout visibly. */
                r = sd_event_add_time(t->event, &t->timer, CLOCK_BOOTTIME, when, USEC_PER_MSEC, on_lock_timer, t);
                if (r >= 0)
                        (void) sd_event_source_set_description(t->timer, "lock-expiry");
        }
        if (r < 0)
                return r;
        t->timer_usec = when;
        return 0;
}

/* After l's deadline moved. */
static void lock_deadline_changed(LockTable *t, Lock *l) {
        heap_up(t, l->heap_idx);
        heap_down(t, l->heap_idx);
        (void) lock_table_arm_timer(t);
}

/* Forgets a wait that has been answered. detach_owner: false only when the owner may be gone (the table's end). */
static void waiter_free(LockTable *t, LockWaiter *w, bool detach_owner) {
        Lock *l = w->lock;

        DL_DELETE2(l->waiters, w, prev, next);
        l->n_waiters--;
        t->n_waiters--;

        if (detach_owner) {
                DL_DELETE2(w->owner->waiters, w, owner_prev, owner_next);
                w->owner->n_waiters--;
        }

        sd_event_source_disable_unref(w->timer);
        free(w->holder);
        free(w);
}

/* Ends a wait without the lock: error as for LockWaitOps.failed(). */
static void waiter_fail(LockTable *t, LockWaiter *w, int error, bool detach_owner) {
        LockInfo i = lock_info(w->lock);

        w->ops->failed(w->userdata, error, w->holder, &i);
        waiter_free(t, w, detach_owner);
}

/* record: the lock is gone for good and the next state write must say so (not when loading or shutting down). */
static void lock_free(LockTable *t, Lock *l, bool record) {
        LockWaiter *w;

        HASH_DEL(t->locks, l);
        heap_remove(t, l);
        while ((w = l->waiters))
                waiter_fail(t, w, -ECANCELED, /* detach_owner= */ true);
        if (l->changed)
                t->changed[l->changed_idx] = NULL;
        if (record) {
                if (array_reserve((void**) &t->removed, &t->n_removed_alloc, t->n_removed, sizeof(char*)))
                        t->removed[t->n_removed++] = TAKE_PTR(l->name);
                else
                        t->changes_lost = true;
        }
        free(l->name);
        free(l->holder);
        free(l);
}

/* Tells a waiter that its holder now holds the lock, and forgets it. */
static void waiter_grant(LockTable *t, LockWaiter *w) {
        LockInfo i = lock_info(w->lock);

        /* Before the owner hears it: its answer reports the change, so it must wait for the state write. */
        notify_state_changed(t);

        w->ops->granted(w->userdata, &i);
        waiter_free(t, w, /* detach_owner= */ true);
}

/* Waiters whose holder now holds the lock succeed as a re-entrant acquire would: expiry reset, token kept. */
static void lock_serve_holder_waiters(LockTable *t, Lock *l, const LockTime *now) {
        LockWaiter *w, *w_next;

        DL_FOREACH_SAFE2(l->waiters, w, w_next, next) {
                if (!streq(w->holder, l->holder))
                        continue;
                lock_set_expiry(l, w->timeout_ms, now);
                lock_deadline_changed(t, l);
                waiter_grant(t, w);
        }
}

/* The first waiter becomes the holder: a new acquisition with its own timeout and a new token. */
static void lock_hand_over(LockTable *t, Lock *l, const LockTime *now) {
        LockWaiter *w = l->waiters;
        char *old = l->holder;

        l->holder = w->holder;
        w->holder = old;                /* freed with the waiter */
        l->acquired_at = now->wall_ms;
        lock_set_expiry(l, w->timeout_ms, now);
        l->token = lock_table_next_token(t);
        lock_deadline_changed(t, l);

        waiter_grant(t, w);
        notify_lock_changed(t, l, "acquired");
        lock_serve_holder_waiters(t, l, now);
}

/* The holder is gone (released, expired, removed by an administrator): the lock passes to the first waiter, or
 * disappears. */
static void lock_vacate(LockTable *t, Lock *l, const LockTime *now, const char *event) {
        if (streq(event, "expired"))
                t->n_expired++;
        notify_lock_changed(t, l, event);

        if (l->waiters) {
                lock_hand_over(t, l, now);
                lock_changed(t, l);
        } else {
                lock_free(t, l, /* record= */ true);
                notify_counts_changed(t);
                notify_state_changed(t);
        }
}

Lock* lock_table_get(LockTable *t, const char *name, const LockTime *now) {
        Lock *l;

        HASH_FIND_STR(t->locks, name, l);
        if (!l || now->boot_usec < l->deadline)
                return l;

        /* Past its deadline, timer not run yet: it is expired now. Handing it over keeps the entry. */
        bool handed_over = l->waiters;
        lock_vacate(t, l, now, "expired");
        return handed_over ? l : NULL;
}

int lock_table_acquire(LockTable *t, const char *name, const char *holder, uint64_t timeout_ms, const LockTime *now,
                       Lock **ret) {
        _cleanup_free_ Lock *l = NULL;
        Lock *existing;
        int r;

        existing = lock_table_get(t, name, now);
        if (existing) {
                *ret = existing;
                if (!streq(existing->holder, holder))
                        return -EBUSY;

                /* Re-entrant: the reference moves the expiry (it may shorten) and keeps acquiredAt; so does the
                 * fencing token, since the holder never lost the lock. */
                lock_set_expiry(existing, timeout_ms, now);
                lock_deadline_changed(t, existing);
                lock_changed(t, existing);
                return 0;
        }

        if (strlen(name) > limits.MAX_LOCK_NAME_BYTES)
                return -ENAMETOOLONG;
        if (strlen(holder) > limits.MAX_LOCK_HOLDER_BYTES)
                return -EMSGSIZE;
        if (HASH_COUNT(t->locks) >= limits.MAX_LOCKS)
                return -ENOSPC;

        l = new0(Lock, 1);
        if (!l)
                return -ENOMEM;
        l->table = t;
        l->name = strdup(name);
        l->holder = strdup(holder);
        if (!l->name || !l->holder) {
                free(l->name);
                free(l->holder);
                return -ENOMEM;
        }
        l->acquired_at = now->wall_ms;
        lock_set_expiry(l, timeout_ms, now);
        r = heap_push(t, l);
        if (r < 0) {
                free(l->name);
                free(l->holder);
                return r;
        }
        l->token = lock_table_next_token(t);

        HASH_ADD_KEYPTR(hh, t->locks, l->name, strlen(l->name), l);
        existing = TAKE_PTR(l);
        (void) lock_table_arm_timer(t);
        notify_lock_changed(t, existing, "acquired");
        notify_counts_changed(t);
        lock_changed(t, existing);
        *ret = existing;
        return 1;
}

int lock_table_release(LockTable *t, const char *name, const char *holder, const LockTime *now) {
        Lock *l;

        l = lock_table_get(t, name, now);
        if (!l)
                return 0;       /* idempotent, as the reference; an expired lock is already gone */
        if (!streq(l->holder, holder))
                return -EPERM;
        lock_vacate(t, l, now, "released");
        return 0;
}

int lock_table_transfer(LockTable *t, const char *name, const char *from, const char *to, uint64_t timeout_ms,
                        const LockTime *now, Lock **ret) {
        Lock *l;
        char *h;

        l = lock_table_get(t, name, now);
        if (!l) {
                int r = lock_table_acquire(t, name, to, timeout_ms, now, ret);
                return r < 0 ? r : 1;
        }

        *ret = l;
        if (!streq(l->holder, from))
                return -EPERM;
        if (strlen(to) > limits.MAX_LOCK_HOLDER_BYTES)
                return -EMSGSIZE;
        h = strdup(to);
        if (!h)
                return -ENOMEM;

        notify_lock_changed(t, l, "released");
        free(l->holder);
        l->holder = h;
        l->acquired_at = now->wall_ms;
        lock_set_expiry(l, timeout_ms, now);
        l->token = lock_table_next_token(t);
        lock_deadline_changed(t, l);
        notify_lock_changed(t, l, "acquired");
        lock_serve_holder_waiters(t, l, now);
        lock_changed(t, l);
        return 1;
}

static int on_waiter_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        LockWaiter *w = userdata;
        Lock *l = w->lock;
        LockTable *t = l->table;
        LockTime now = lock_table_now(t);

        /* The lock may have run out at this same instant with its timer still pending: then it is free now, and the
         * queue is served in order first; this waiter may be the one that gets it. */
        if (now.boot_usec >= l->deadline) {
                bool served = l->waiters == w || streq(l->waiters->holder, w->holder);

                lock_vacate(t, l, &now, "expired");
                if (served)
                        return 0;
        }

        waiter_fail(t, w, -ETIME, /* detach_owner= */ true);
        return 0;
}

int lock_table_wait(LockTable *t, const char *name, const char *holder, uint64_t timeout_ms, uint64_t wait_ms,
                    const LockTime *now, LockWaitOwner *owner, const LockWaitOps *ops, void *userdata) {
        _cleanup_free_ LockWaiter *w = NULL;
        Lock *l;
        int r;

        assert(owner);
        assert(ops && ops->granted && ops->failed);

        l = lock_table_get(t, name, now);
        if (!l)
                return -ENOENT;
        if (strlen(holder) > limits.MAX_LOCK_HOLDER_BYTES)
                return -EMSGSIZE;
        if (l->n_waiters >= limits.MAX_LOCK_WAITERS_PER_LOCK)
                return -EXFULL;
        if (t->n_waiters >= limits.MAX_LOCK_WAITERS)
                return -ENOSPC;

        w = new0(LockWaiter, 1);
        if (!w)
                return -ENOMEM;
        *w = (LockWaiter) {
                .lock = l,
                .timeout_ms = timeout_ms,
                .holder = strdup(holder),
                .ops = ops,
                .userdata = userdata,
                .owner = owner,
        };
        if (!w->holder)
                return -ENOMEM;
        r = sd_event_add_time(t->event, &w->timer, CLOCK_BOOTTIME, now->boot_usec + wait_ms * USEC_PER_MSEC,
                              USEC_PER_MSEC, on_waiter_timeout, w);
        if (r < 0) {
                free(w->holder);
                return r;
        }
        (void) sd_event_source_set_description(w->timer, "lock-wait");

        DL_APPEND2(l->waiters, w, prev, next);
        DL_APPEND2(owner->waiters, w, owner_prev, owner_next);
        l->n_waiters++;
        t->n_waiters++;
        owner->n_waiters++;
        TAKE_PTR(w);
        return 0;
}

int lock_table_force_release(LockTable *t, const char *name) {
        LockTime now = lock_table_now(t);
        Lock *l;

        l = lock_table_get(t, name, &now);
        if (!l)
                return -ENOENT;
        lock_vacate(t, l, &now, "released");
        return 0;
}

int lock_table_foreach(LockTable *t, LockInfoCallback cb, void *userdata) {
        LockTime now = lock_table_now(t);
        Lock *l, *tmp;
        int r;

        /* Insertion order, as the reference's Map; only live locks. */
        HASH_ITER(hh, t->locks, l, tmp) {
                if (!lock_table_get(t, l->name, &now))
                        continue;
                LockInfo i = lock_info(l);

                r = cb(&i, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int lock_list_add(const LockInfo *info, void *userdata) {
        struct json_object *o = lock_info_json(info);

        if (!o || json_object_array_add(userdata, o) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        return 0;
}

int lock_table_list(LockTable *t, struct json_object **ret_array) {
        _cleanup_(json_object_putp) struct json_object *a = NULL;
        int r;

        a = json_object_new_array_ext((int) HASH_COUNT(t->locks));
        if (!a)
                return -ENOMEM;
        r = lock_table_foreach(t, lock_list_add, a);
        if (r < 0)
                return r;
        *ret_array = TAKE_PTR(a);
        return 0;
}

int lock_table_new(sd_event *event, const LockTableHooks *hooks, LockTable **ret) {
        LockTable *t;

        assert(event);

        t = new0(LockTable, 1);
        if (!t)
                return -ENOMEM;
        if (hooks)
                t->hooks = *hooks;
        t->event = event;
        t->timer_usec = USEC_INFINITY;
        *ret = t;
        return 0;
}

LockTable* lock_table_free(LockTable *t) {
        Lock *l, *tmp;

        if (!t)
                return NULL;

        /* The owners may be gone by now (the Manager has disconnected every client): do not touch them. */
        HASH_ITER(hh, t->locks, l, tmp) {
                LockWaiter *w;

                while ((w = l->waiters))
                        waiter_fail(t, w, -ECANCELED, /* detach_owner= */ false);
                lock_free(t, l, /* record= */ false);
        }
        sd_event_source_disable_unref(t->timer);
        free(t->heap);
        lock_table_changes_saved(t);
        free(t->changed);
        free(t->removed);
        return mfree(t);
}

int lock_table_foreach_owner_wait(LockWaitOwner *owner, int (*cb)(void *userdata, void *cb_userdata),
                                  void *cb_userdata) {
        LockWaiter *w;
        int r;

        DL_FOREACH2(owner->waiters, w, owner_next) {
                r = cb(w->userdata, cb_userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

void lock_table_owner_gone(LockTable *t, LockWaitOwner *owner) {
        if (!t)
                return;

        /* Only its parked acquires go; the locks it holds stay (they belong to holder strings, not connections). */
        while (owner->waiters)
                waiter_fail(t, owner->waiters, -ECANCELED, /* detach_owner= */ true);
}

unsigned lock_table_count(LockTable *t) {
        return t ? HASH_COUNT(t->locks) : 0;
}

unsigned lock_table_waiter_count(LockTable *t) {
        return t->n_waiters;
}

uint64_t lock_table_last_token(LockTable *t) {
        return t->last_token;
}

uint64_t lock_table_reserved_token(LockTable *t) {
        return t->reserved_token;
}

void lock_table_get_stats(LockTable *t, LockTableStats *ret) {
        assert(ret);

        *ret = (LockTableStats) {
                .held = HASH_COUNT(t->locks),
                .waiters = t->n_waiters,
                .acquired = t->n_acquired,
                .expired = t->n_expired,
                .last_token = t->last_token,
        };
}

int lock_table_add_status(LockTable *t, struct json_object *data) {
        int r;

        r = json_add_int64(data, "lockWaiters", t->n_waiters);
        if (r < 0)
                return r;
        return json_add_int64(data, "fencingToken", (int64_t) t->last_token);
}

/* ---- state.json ---- */

int lock_table_save_state(LockTable *t, struct json_object *state) {
        _cleanup_(json_object_putp) struct json_object *a = NULL;
        Lock *l;
        int r;

        lock_table_reseed_tokens(t);

        a = json_object_new_array_ext((int) HASH_COUNT(t->locks));
        if (!a)
                return -ENOMEM;
        for (l = t->locks; l; l = l->hh.next)
                if (json_object_array_add(a, lock_json_new(l)) < 0)
                        return -ENOMEM;

        r = json_add(state, "locks", TAKE_PTR(a));
        if (r < 0)
                return r;
        return json_add_int64(state, "fencingTokenReserved", (int64_t) t->reserved_token);
}

void lock_table_reset(LockTable *t) {
        Lock *l, *tmp;

        if (HASH_COUNT(t->locks) == 0)
                return;
        HASH_ITER(hh, t->locks, l, tmp)
                lock_free(t, l, /* record= */ false);
        notify_counts_changed(t);
}

/* One lock as state.json has it. replace: a journal record, which replaces a lock of that name (in place: its
 * position in the acquisition order stays) or, when expired, removes it. */
static int lock_table_load_one(LockTable *t, struct json_object *e, const LockTime *now, bool replace) {
        _cleanup_free_ Lock *l = NULL;
        int64_t acquired, expires, token, remaining;
        const char *name, *holder;
        Lock *dup;
        int r;

        name = json_get_string(e, "name");
        holder = json_get_string(e, "holder");
        if (!name || !holder ||
            json_get_int64(e, "acquiredAt", false, &acquired) < 0 ||
            json_get_int64(e, "expiresAt", false, &expires) < 0 ||
            json_get_int64(e, "fencingToken", false, &token) < 0 || token <= 0)
                return -EINVAL;

        /* Tokens in the file are below the mark we wrote with them; stay above them even if it was edited. */
        if ((uint64_t) token > t->reserved_token)
                t->last_token = t->reserved_token = (uint64_t) token;

        HASH_FIND_STR(t->locks, name, dup);
        if (dup && !replace)
                return -EINVAL;

        if (expires <= now->wall_ms) {
                /* ran out while photond was down */
                if (dup)
                        lock_free(t, dup, /* record= */ false);
                return 0;
        }

        /* Only the wall clock spans a restart. Were it set back meanwhile, the lock would live longer than it was
         * ever granted for; it never gets more than its last expiresAt - acquiredAt. */
        remaining = expires - now->wall_ms;
        if (expires - acquired > 0 && remaining > expires - acquired)
                remaining = expires - acquired;

        if (dup) {
                char *h = strdup(holder);

                if (!h)
                        return -ENOMEM;
                free(dup->holder);
                dup->holder = h;
                dup->acquired_at = acquired;
                dup->expires_at = expires;
                dup->deadline = now->boot_usec + (uint64_t) remaining * USEC_PER_MSEC;
                dup->token = (uint64_t) token;
                lock_deadline_changed(t, dup);
                return 0;
        }

        l = new0(Lock, 1);
        if (!l)
                return -ENOMEM;
        l->table = t;
        l->acquired_at = acquired;
        l->expires_at = expires;
        l->deadline = now->boot_usec + (uint64_t) remaining * USEC_PER_MSEC;
        l->token = (uint64_t) token;
        l->name = strdup(name);
        l->holder = strdup(holder);
        if (!l->name || !l->holder)
                r = -ENOMEM;
        else
                r = heap_push(t, l);
        if (r < 0) {
                free(l->name);
                free(l->holder);
                return r;
        }
        HASH_ADD_KEYPTR(hh, t->locks, l->name, strlen(l->name), l);
        TAKE_PTR(l);
        (void) lock_table_arm_timer(t);
        return 0;
}

int lock_table_load_state(LockTable *t, struct json_object *state) {
        struct json_object *a;
        LockTime now = lock_table_now(t);
        int64_t reserved = 0;
        int r;

        r = json_get_int64(state, "fencingTokenReserved", false, &reserved);
        if ((r < 0 && r != -ENOENT) || reserved < 0)
                return -EINVAL;
        t->last_token = t->reserved_token = (uint64_t) reserved;

        if (!json_object_object_get_ex(state, "locks", &a))
                return 0;
        if (!json_object_is_type(a, json_type_array))
                return -EINVAL;

        for (size_t i = 0; i < json_object_array_length(a); i++) {
                r = lock_table_load_one(t, json_object_array_get_idx(a, i), &now, /* replace= */ false);
                if (r < 0) {
                        /* All or nothing: the caller reports the state as lost. */
                        lock_table_reset(t);
                        return r;
                }
        }
        if (HASH_COUNT(t->locks) > 0)
                notify_counts_changed(t);
        return 0;
}

/* ---- state.journal ---- */

uint64_t lock_table_token_mark(LockTable *t) {
        lock_table_reseed_tokens(t);
        return t->reserved_token;
}

/* {"set":{...}} as lock_json_new() prints it (a unit test compares the two). */
#define LOCK_SET_FIXED_SIZE (sizeof("{\"set\":{\"name\":,\"holder\":,\"acquiredAt\":,\"expiresAt\":,\"fencingToken\":}}\n") + \
                             3 * JSON_INT64_SIZE_MAX)
#define LOCK_DEL_FIXED_SIZE sizeof("{\"del\":}\n")

int lock_table_changes_size_max(LockTable *t, size_t *ret) {
        size_t n = 0;

        if (t->changes_lost)
                return -ESTALE;
        for (size_t i = 0; i < t->n_removed; i++)
                n += LOCK_DEL_FIXED_SIZE + JSON_STRING_SIZE_MAX(strlen(t->removed[i]));
        for (size_t i = 0; i < t->n_changed; i++)
                if (t->changed[i])
                        n += LOCK_SET_FIXED_SIZE + JSON_STRING_SIZE_MAX(strlen(t->changed[i]->name)) +
                             JSON_STRING_SIZE_MAX(strlen(t->changed[i]->holder));
        *ret = n;
        return 0;
}

char* lock_table_put_changes(LockTable *t, char *p) {
        /* Removals first: a name gone and taken again in the same iteration is then a new lock at the end of the
         * acquisition order after a replay, as it is here. */
        for (size_t i = 0; i < t->n_removed; i++) {
                p = stpcpy(p, "{\"del\":");
                p = json_put_string(p, t->removed[i]);
                p = stpcpy(p, "}\n");
        }
        for (size_t i = 0; i < t->n_changed; i++) {
                const Lock *l = t->changed[i];

                if (!l)
                        continue;
                p = stpcpy(p, "{\"set\":{\"name\":");
                p = json_put_string(p, l->name);
                p = stpcpy(p, ",\"holder\":");
                p = json_put_string(p, l->holder);
                p = stpcpy(p, ",\"acquiredAt\":");
                p = json_put_int64(p, l->acquired_at);
                p = stpcpy(p, ",\"expiresAt\":");
                p = json_put_int64(p, l->expires_at);
                p = stpcpy(p, ",\"fencingToken\":");
                p = json_put_int64(p, (int64_t) l->token);
                p = stpcpy(p, "}}\n");
        }
        return p;
}

void lock_table_changes_saved(LockTable *t) {
        for (size_t i = 0; i < t->n_changed; i++)
                if (t->changed[i])
                        t->changed[i]->changed = false;
        t->n_changed = 0;
        for (size_t i = 0; i < t->n_removed; i++)
                free(t->removed[i]);
        t->n_removed = 0;
        t->changes_lost = false;
}

int lock_table_load_record(LockTable *t, struct json_object *record, bool replay_locks) {
        struct json_object *v;
        int64_t reserved;
        int r;

        r = json_get_int64(record, "fencingTokenReserved", false, &reserved);
        if ((r < 0 && r != -ENOENT) || (r >= 0 && reserved < 0))
                return -EINVAL;
        if (r >= 0 && (uint64_t) reserved > t->reserved_token)
                t->last_token = t->reserved_token = (uint64_t) reserved;

        if (json_object_object_get_ex(record, "set", &v)) {
                LockTime now = lock_table_now(t);

                if (!json_object_is_type(v, json_type_object))
                        return -EINVAL;
                if (!replay_locks)
                        return 0;
                return lock_table_load_one(t, v, &now, /* replace= */ true);
        }
        if (json_object_object_get_ex(record, "del", &v)) {
                Lock *l;

                if (!json_object_is_type(v, json_type_string))
                        return -EINVAL;
                if (!replay_locks)
                        return 0;
                const char *name = json_object_get_cstring(v);

                if (!name)
                        return -EINVAL;
                HASH_FIND_STR(t->locks, name, l);
                if (l)
                        lock_free(t, l, /* record= */ false);
        }
        return 0;
}
