/* SPDX-License-Identifier: MIT */

/* The lock table's rules with the time passed in (expiry by time without waiting), waiter queues through a fake
 * waiter (LockWaitOps, no Client), caps, tokens and the state.json round trip; then the control front end's lock
 * requests (photond-control-locks.c) with their exact reply shapes, through control_handle_line() as a client's
 * lines go. A minimal Manager carries the event loop and what control_handle_line() reads; the Clients collect
 * their replies in their write queue. */

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "json-util.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-manager.h"

static Manager manager;
static LockTable *table;
static Client clients[4];
static LockTime t0;

static int noop_defer(sd_event_source *s, void *userdata) {
        return 0;
}

/* What the table told its owner (LockTableHooks), as the Manager would hear it. */
static struct {
        unsigned state_changed, counts_changed, lock_changed;
        char last[256];         /* "name holder event" of the last lock_changed */
} heard;

static void heard_state_changed(void *userdata) {
        heard.state_changed++;
        manager_state_changed(userdata);        /* as the Manager's hook: the rules' tests look at state_dirty */
}

static void heard_counts_changed(void *userdata) {
        heard.counts_changed++;
}

static void heard_lock_changed(void *userdata, const char *name, const char *holder, const char *event) {
        heard.lock_changed++;
        snprintf(heard.last, sizeof(heard.last), "%s %s %s", name, holder, event);
}

static LoopClock loop_clock;

static const LockTableHooks hooks = {
        .clock = &loop_clock,
        .state_changed = heard_state_changed,
        .counts_changed = heard_counts_changed,
        .lock_changed = heard_lock_changed,
        .userdata = &manager,
        .state_lost = &manager.state_lost,
};

/* ---- a fake waiter: what the table tells the owner of a parked acquire ---- */

typedef struct FakeWait {
        unsigned ended;                 /* how many times it ended: once, or the table broke its promise */
        unsigned order;                 /* the how-manieth wait to end */
        bool granted;
        unsigned state_changed;         /* granted: how many state changes the owner had heard of by then */
        int error;                      /* failed()'s */
        char holder[64];                /* granted: the lock's holder; failed: the waiter's */
        char current[64];               /* failed: the lock's holder */
        char name[64];
        uint64_t token;
} FakeWait;

static FakeWait waits[8];
static LockWaitOwner owners[3];
static unsigned n_ended;

static void fake_granted(void *userdata, const LockInfo *lock) {
        FakeWait *w = userdata;

        w->ended++;
        w->order = ++n_ended;
        w->granted = true;
        w->state_changed = heard.state_changed;
        snprintf(w->name, sizeof(w->name), "%s", lock->name);
        snprintf(w->holder, sizeof(w->holder), "%s", lock->holder);
        w->token = lock->fencing_token;
}

static void fake_failed(void *userdata, int error, const char *holder, const LockInfo *lock) {
        FakeWait *w = userdata;

        w->ended++;
        w->order = ++n_ended;
        w->error = error;
        snprintf(w->name, sizeof(w->name), "%s", lock->name);
        snprintf(w->holder, sizeof(w->holder), "%s", holder);
        snprintf(w->current, sizeof(w->current), "%s", lock->holder);
}

static const LockWaitOps fake_ops = {
        .granted = fake_granted,
        .failed = fake_failed,
};

/* Parks waits[i] (owned by owners[o]) for holder behind the holder of name: timeout 1000 ms once granted. */
static int park(unsigned i, unsigned o, const char *name, const char *holder, uint64_t wait_ms) {
        LockTime now = lock_table_now(table);

        return lock_table_wait(table, name, holder, 1000, wait_ms, &now, &owners[o], &fake_ops, &waits[i]);
}

static void setup(void) {
        limits_reset();
        manager = (Manager) {};
        cr_assert_eq(sd_event_new(&manager.event), 0);
        cr_assert_eq(sd_event_add_defer(manager.event, &manager.flush_event_source, noop_defer, NULL), 0);
        cr_assert_eq(sd_event_source_set_enabled(manager.flush_event_source, SD_EVENT_OFF), 0);
        loop_clock = (LoopClock) { manager.event, client_io_time_offset(&manager.client_io) };
        heard = (typeof(heard)) {};
        cr_assert_eq(lock_table_new(manager.event, &hooks, &table), 0);
        manager.locks = table;
        for (size_t i = 0; i < ELEMENTSOF(clients); i++)
                clients[i] = (Client) { .fd = -EBADF, .serial = i };
        memset(waits, 0, sizeof(waits));
        memset(owners, 0, sizeof(owners));
        n_ended = 0;
        t0 = lock_table_now(table);
}

static void teardown(void) {
        for (size_t i = 0; i < ELEMENTSOF(clients); i++) {
                lock_table_owner_gone(table, &clients[i].lock_waits);
                client_discard_queue(&clients[i]);
        }
        for (size_t i = 0; i < ELEMENTSOF(owners); i++)
                lock_table_owner_gone(table, &owners[i]);
        table = lock_table_free(table);
        sd_event_source_disable_unref(manager.flush_event_source);
        sd_event_unref(manager.event);
}

TestSuite(lock, .init = setup, .fini = teardown);

/* t0 plus ms on both clocks. */
static LockTime at(uint64_t ms) {
        return (LockTime) { .boot_usec = t0.boot_usec + ms * USEC_PER_MSEC, .wall_ms = t0.wall_ms + (int64_t) ms };
}

/* The oldest queued reply of c, parsed (NULL if none). */
static struct json_object* pop_reply(Client *c) {
        return client_queued(c) > 0 ? test_pop_json(c) : NULL;
}

/* The oldest queued reply of c as its exact bytes (without the newline); the caller frees. The test fails if there
 * is none, or if json-c would print the same reply otherwise: some replies are written by hand
 * (photond-control-locks.c), all must be what json-c prints. */
static char* pop_line(Client *c) {
        struct json_object *o = NULL;
        char *s = test_pop_line(c);

        cr_assert_not_null(s, "no reply queued");
        cr_assert_eq(json_parse(s, strlen(s), &o, NULL), 0, "not JSON: %s", s);
        cr_assert_str_eq(s, json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS), "not as json-c prints it");
        json_object_put(o);
        return s;
}

static void expect_line(Client *c, const char *expected) {
        char *s = pop_line(c);

        cr_assert_str_eq(s, expected);
        free(s);
}

/* A line as control_handle_line() hands it over, fast path included. */
static void request(Client *c, const char *line) {
        test_request(&manager, c, "%s", line);
}

/* The same line forced through the general path (request_parse()), past the fast path. */
static void general_request(Client *c, const char *line) {
        Request *req = NULL;
        char *error = NULL, *id = NULL;

        cr_assert_eq(request_parse(line, strlen(line), &req, &error, &id), 0, "%s: %s", line, error);
        c->manager = &manager;
        cr_assert_eq(control_lock_request(table, NULL, c, req), 0, "%s", line);
        request_free(req);
}

/* Runs the loop until c has a reply or limit_ms pass. */
static void run_until_queued(Client *c, uint64_t limit_ms) {
        uint64_t end = now_usec(CLOCK_MONOTONIC) + limit_ms * USEC_PER_MSEC;

        while (client_queued(c) == 0 && now_usec(CLOCK_MONOTONIC) < end)
                cr_assert_geq(sd_event_run(manager.event, 10 * USEC_PER_MSEC), 0);
}

/* ---- the rules ---- */

Test(lock, acquire_then_busy_for_another_holder) {
        LockTime now = at(0);
        Lock *l = NULL;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_str_eq(l->holder, "s1");
        cr_assert_eq(l->acquired_at, now.wall_ms);
        cr_assert_eq(l->expires_at, now.wall_ms + 1000);
        cr_assert_eq(l->token, 1);
        cr_assert(manager.state_dirty, "an acquire must reach state.json");

        manager.state_dirty = false;
        l = NULL;
        cr_assert_eq(lock_table_acquire(table, "a", "s2", 1000, &now, &l), -EBUSY);
        cr_assert_str_eq(l->holder, "s1", "the refusal names the current holder");
        cr_assert_not(manager.state_dirty, "a refusal changes nothing");
        cr_assert_eq(lock_table_count(table), 1);
}

/* ---- what the owner hears (LockTableHooks) ---- */

Test(lock, hooks_hear_every_change_and_nothing_else) {
        LockTime now = at(0);
        unsigned state;
        Lock *l = NULL;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_str_eq(heard.last, "a s1 acquired");
        cr_assert_eq(heard.lock_changed, 1);
        cr_assert_eq(heard.counts_changed, 1, "a new lock changes the count");
        cr_assert_geq(heard.state_changed, 1, "a new lock must be saved before the reply leaves");

        state = heard.state_changed;
        cr_assert_eq(lock_table_acquire(table, "a", "s2", 1000, &now, &l), -EBUSY);
        cr_assert_eq(heard.lock_changed, 1, "a refusal is no LockChanged");
        cr_assert_eq(heard.counts_changed, 1);
        cr_assert_eq(heard.state_changed, state, "a refusal changes nothing");

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 2000, &now, &l), 0);
        cr_assert_gt(heard.state_changed, state, "a re-entrant acquire moves the expiry: saved");
        cr_assert_eq(heard.lock_changed, 1, "nor does a re-entrant acquire change hands");
        cr_assert_eq(heard.counts_changed, 1);

        cr_assert_eq(lock_table_transfer(table, "a", "s1", "s2", 1000, &now, &l), 1);
        cr_assert_eq(heard.lock_changed, 3, "a transfer is a release and an acquire");
        cr_assert_str_eq(heard.last, "a s2 acquired");
        cr_assert_eq(heard.counts_changed, 1);

        state = heard.state_changed;
        cr_assert_eq(lock_table_release(table, "a", "s2", &now), 0);
        cr_assert_str_eq(heard.last, "a s2 released");
        cr_assert_eq(heard.counts_changed, 2);
        cr_assert_gt(heard.state_changed, state);

        now = at(100);
        cr_assert_eq(lock_table_acquire(table, "b", "s3", 50, &now, &l), 1);
        now = at(200);
        cr_assert_null(lock_table_get(table, "b", &now));
        cr_assert_str_eq(heard.last, "b s3 expired");
        cr_assert_eq(heard.counts_changed, 4);
}

Test(lock, null_hooks_mean_nobody_listens) {
        _cleanup_(lock_table_freep) LockTable *t = NULL;
        LockTime now, later;
        Lock *l = NULL;

        cr_assert_eq(lock_table_new(manager.event, NULL, &t), 0);
        now = lock_table_now(t);        /* the system clock */
        cr_assert_gt(now.boot_usec, 0);
        cr_assert_gt(now.wall_ms, 0);
        later = (LockTime) { now.boot_usec + 100 * USEC_PER_MSEC, now.wall_ms + 100 };

        cr_assert_eq(lock_table_acquire(t, "a", "s1", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_transfer(t, "a", "s1", "s2", 50, &now, &l), 1);
        cr_assert_null(lock_table_get(t, "a", &later));
        cr_assert_eq(lock_table_acquire(t, "a", "s1", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_release(t, "a", "s1", &now), 0);
        cr_assert_eq(lock_table_count(t), 0);
        cr_assert_eq(heard.state_changed + heard.counts_changed + heard.lock_changed, 0,
                     "another table's hooks heard nothing");
}

Test(lock, reentrant_acquire_moves_expiry_keeps_acquired_at_and_token) {
        LockTime now = at(0), later = at(500);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "a", "s1", 100, &later, &l), 0);
        cr_assert_eq(l->acquired_at, now.wall_ms);
        cr_assert_eq(l->expires_at, later.wall_ms + 100, "the expiry may shorten, as in the reference");
        cr_assert_eq(l->token, 1, "a refresh keeps the token: the holder never lost the lock");

        LockTime after = at(601);
        cr_assert_null(lock_table_get(table, "a", &after), "the shortened expiry applies");
}

Test(lock, a_timeout_too_long_is_a_century) {
        LockTime now = at(0), later = at(3600 * 1000);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", UINT64_MAX, &now, &l), 1);
        cr_assert_eq(l->expires_at, now.wall_ms + (int64_t) (UINT64_C(100) * 366 * 24 * 3600 * 1000));
        cr_assert_gt(l->deadline, now.boot_usec, "the deadline must not wrap around");
        cr_assert_not_null(lock_table_get(table, "a", &later));
}

Test(lock, expiry_is_exact_by_the_deadline_clock) {
        LockTime now = at(0), just_before = at(200), at_deadline = at(200);
        Lock *l;

        just_before.boot_usec -= 1;
        cr_assert_eq(lock_table_acquire(table, "a", "s1", 200, &now, &l), 1);
        cr_assert_not_null(lock_table_get(table, "a", &just_before));
        cr_assert_null(lock_table_get(table, "a", &at_deadline), "expiresAt <= now is expired (reference)");
        cr_assert_eq(lock_table_count(table), 0, "an expired lock is gone, not kept for a sweep");

        cr_assert_eq(lock_table_acquire(table, "a", "s2", 200, &at_deadline, &l), 1, "free for anyone");
        cr_assert_eq(l->token, 2);
}

Test(lock, wall_clock_jumps_do_not_matter) {
        LockTime now = at(0), jumped = at(10);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        jumped.wall_ms += 3600 * 1000;  /* the wall clock leaps an hour ahead */
        cr_assert_not_null(lock_table_get(table, "a", &jumped));
        jumped.wall_ms -= 7200 * 1000;
        jumped.boot_usec += 1000 * USEC_PER_MSEC;
        cr_assert_null(lock_table_get(table, "a", &jumped));
}

Test(lock, release_rules) {
        LockTime now = at(0), later = at(100);
        Lock *l;

        cr_assert_eq(lock_table_release(table, "missing", "x", &now), 0, "releasing nothing succeeds");
        cr_assert_eq(lock_table_acquire(table, "a", "s1", 50, &now, &l), 1);
        cr_assert_eq(lock_table_release(table, "a", "s2", &now), -EPERM);
        cr_assert_eq(lock_table_count(table), 1);
        cr_assert_eq(lock_table_release(table, "a", "s2", &later), 0, "an expired lock is gone for anyone");
        cr_assert_eq(lock_table_count(table), 0);

        cr_assert_eq(lock_table_acquire(table, "b", "s1", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_release(table, "b", "s1", &now), 0);
        cr_assert_null(lock_table_get(table, "b", &now));
}

Test(lock, transfer_rules) {
        LockTime now = at(0), later = at(300);
        Lock *l;

        cr_assert_eq(lock_table_transfer(table, "a", "x", "y", 1000, &now, &l), 1, "no lock: acquired for 'to'");
        cr_assert_str_eq(l->holder, "y");
        cr_assert_eq(l->token, 1);

        cr_assert_eq(lock_table_transfer(table, "a", "x", "z", 1000, &now, &l), -EPERM);
        cr_assert_str_eq(l->holder, "y");

        cr_assert_eq(lock_table_transfer(table, "a", "y", "z", 5000, &later, &l), 1);
        cr_assert_str_eq(l->holder, "z");
        cr_assert_eq(l->acquired_at, later.wall_ms, "a transfer is a new acquisition");
        cr_assert_eq(l->expires_at, later.wall_ms + 5000);
        cr_assert_eq(l->token, 2);
        cr_assert_eq(lock_table_count(table), 1);
}

Test(lock, tokens_increase_and_are_reserved_in_blocks) {
        LockTime now = at(0);
        uint64_t last = 0;
        Lock *l;

        cr_assert_eq(lock_table_reserved_token(table), 0);
        for (unsigned i = 0; i < LOCK_TOKEN_BLOCK + 2; i++) {
                cr_assert_eq(lock_table_acquire(table, "a", i % 2 ? "odd" : "even", 1000, &now, &l), 1);
                cr_assert_gt(l->token, last);
                last = l->token;
                cr_assert_leq(l->token, lock_table_reserved_token(table), "a token beyond the mark leaked");
                cr_assert_eq(lock_table_release(table, "a", l->holder, &now), 0);
        }
        cr_assert_eq(lock_table_reserved_token(table), 2 * LOCK_TOKEN_BLOCK);
        cr_assert_eq(lock_table_last_token(table), LOCK_TOKEN_BLOCK + 2);
}

Test(lock, lost_state_reseeds_tokens_above_any_issued) {
        LockTime now = at(0);
        Lock *l;

        manager.state_lost = true;
        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_geq(l->token, (uint64_t) now.wall_ms * 1000);
        cr_assert_leq(l->token, lock_table_reserved_token(table));
}

Test(lock, caps) {
        LockTime now = at(0);
        char name[512], holder[2048];
        Lock *l;

        memset(name, 'n', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        memset(holder, 'h', sizeof(holder) - 1);
        holder[sizeof(holder) - 1] = '\0';

        name[limits.MAX_LOCK_NAME_BYTES] = '\0';
        cr_assert_eq(lock_table_acquire(table, name, "s", 1000, &now, &l), 1, "the cap itself is allowed");
        name[limits.MAX_LOCK_NAME_BYTES] = 'n';
        name[limits.MAX_LOCK_NAME_BYTES + 1] = '\0';
        cr_assert_eq(lock_table_acquire(table, name, "s", 1000, &now, &l), -ENAMETOOLONG);
        cr_assert_eq(lock_table_acquire(table, "b", holder, 1000, &now, &l), -EMSGSIZE);

        limits.MAX_LOCKS = 2;
        cr_assert_eq(lock_table_acquire(table, "b", "s", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "c", "s", 1000, &now, &l), -ENOSPC);
        cr_assert_eq(lock_table_acquire(table, "b", "s", 1000, &now, &l), 0, "a refresh is not a new lock");
        cr_assert_eq(lock_table_count(table), 2);
}

/* ---- waiters (the core, with a fake waiter) ---- */

Test(lock, waiters_are_served_in_order_at_release) {
        LockTime now = lock_table_now(table);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "owner", 1000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        cr_assert_eq(park(1, 1, "a", "w2", 5000), 0);
        cr_assert_eq(park(2, 2, "a", "w3", 5000), 0);
        cr_assert_eq(lock_table_waiter_count(table), 3);
        cr_assert_eq(owners[0].n_waiters + owners[1].n_waiters + owners[2].n_waiters, 3);
        cr_assert_eq(n_ended, 0, "nobody hears anything yet");

        unsigned state = heard.state_changed;
        cr_assert_eq(lock_table_release(table, "a", "owner", &now), 0);
        cr_assert_eq(waits[0].ended, 1);
        cr_assert(waits[0].granted);
        cr_assert_str_eq(waits[0].name, "a");
        cr_assert_str_eq(waits[0].holder, "w1");
        cr_assert_eq(waits[0].token, 2, "a hand-over is a new acquisition");
        cr_assert_gt(waits[0].state_changed, state, "the state change is announced before the waiter hears of it");
        cr_assert_eq(waits[1].ended + waits[2].ended, 0);
        cr_assert_eq(owners[0].n_waiters, 0);
        l = lock_table_get(table, "a", &now);
        cr_assert_str_eq(l->holder, "w1", "the first waiter holds it at once");
        cr_assert_eq(l->acquired_at, now.wall_ms);
        cr_assert_eq(l->expires_at, now.wall_ms + 1000, "with its own timeout");

        cr_assert_eq(lock_table_release(table, "a", "w1", &now), 0);
        cr_assert(waits[1].granted);
        cr_assert_str_eq(waits[1].holder, "w2");
        cr_assert_eq(waits[1].token, 3);

        cr_assert_eq(lock_table_release(table, "a", "w2", &now), 0);
        cr_assert(waits[2].granted);
        cr_assert_str_eq(waits[2].holder, "w3");
        cr_assert_eq(waits[0].order * 100 + waits[1].order * 10 + waits[2].order, 123, "first come, first served");
        cr_assert_eq(lock_table_waiter_count(table), 0);
        cr_assert_eq(owners[0].n_waiters + owners[1].n_waiters + owners[2].n_waiters, 0);
}

Test(lock, a_waiter_of_the_new_holder_is_served_with_it) {
        LockTime now = lock_table_now(table);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "owner", 1000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        cr_assert_eq(park(1, 1, "a", "w2", 5000), 0);
        cr_assert_eq(park(2, 2, "a", "w1", 5000), 0);

        cr_assert_eq(lock_table_release(table, "a", "owner", &now), 0);
        cr_assert(waits[0].granted);
        cr_assert(waits[2].granted, "holder w1 already has the lock: its second wait is a re-entrant acquire");
        cr_assert_eq(waits[2].token, waits[0].token, "and keeps the token");
        cr_assert_eq(waits[1].ended, 0);
        cr_assert_eq(lock_table_waiter_count(table), 1);
}

Test(lock, expiry_on_access_hands_the_lock_to_the_first_waiter) {
        LockTime now = lock_table_now(table), later;
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "owner", 100, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        later = now;
        later.boot_usec += 100 * USEC_PER_MSEC;
        later.wall_ms += 100;
        l = lock_table_get(table, "a", &later);
        cr_assert_not_null(l);
        cr_assert_str_eq(l->holder, "w1");
        cr_assert(waits[0].granted);
        cr_assert_str_eq(heard.last, "a w1 acquired");
}

Test(lock, an_owner_gone_leaves_the_queues) {
        LockTime now = lock_table_now(table);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "owner", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "owner", 1000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        cr_assert_eq(park(1, 1, "a", "w2", 5000), 0);
        cr_assert_eq(park(2, 0, "a", "w1b", 5000), 0);
        cr_assert_eq(park(3, 0, "b", "w1c", 5000), 0);
        cr_assert_eq(park(4, 2, "a", "w3", 5000), 0);
        cr_assert_eq(owners[0].n_waiters, 3);

        lock_table_owner_gone(table, &owners[0]);
        cr_assert_eq(owners[0].n_waiters, 0);
        cr_assert_null(owners[0].waiters);
        static const unsigned gone[] = { 0, 2, 3 };
        for (size_t k = 0; k < ELEMENTSOF(gone); k++) {
                const FakeWait *w = &waits[gone[k]];

                cr_assert(w->ended == 1 && !w->granted && w->error == -ECANCELED,
                          "wait %u: ended %u, error %d", gone[k], w->ended, w->error);
        }
        cr_assert_str_eq(waits[3].name, "b");
        cr_assert_eq(lock_table_waiter_count(table), 2);

        cr_assert_eq(lock_table_release(table, "a", "owner", &now), 0);
        cr_assert(waits[1].granted, "the next in the queue gets it");
        cr_assert_str_eq(waits[1].holder, "w2");
        cr_assert_eq(waits[0].ended + waits[2].ended, 2, "a gone owner hears nothing more");
        cr_assert_eq(lock_table_count(table), 2, "locks are not tied to their owners");
        lock_table_owner_gone(table, &owners[0]);       /* nothing left: a no-op */
}

Test(lock, waiter_caps) {
        LockTime now = lock_table_now(table);
        char holder[2048];
        Lock *l;

        limits.MAX_LOCK_WAITERS_PER_LOCK = 2;
        limits.MAX_LOCK_WAITERS = 3;
        cr_assert_eq(lock_table_acquire(table, "a", "owner", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "owner", 1000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        cr_assert_eq(park(1, 0, "a", "w2", 5000), 0);
        cr_assert_eq(park(2, 0, "a", "w3", 5000), -EXFULL);
        cr_assert_eq(park(3, 0, "b", "w4", 5000), 0);
        cr_assert_eq(park(4, 0, "b", "w5", 5000), -ENOSPC);
        cr_assert_eq(park(5, 0, "free", "w6", 5000), -ENOENT, "there is nothing to wait behind");
        memset(holder, 'h', sizeof(holder) - 1);
        holder[sizeof(holder) - 1] = '\0';
        limits.MAX_LOCK_WAITERS = 10;
        cr_assert_eq(park(6, 0, "b", holder, 5000), -EMSGSIZE);
        cr_assert_eq(owners[0].n_waiters, 3, "a refused wait is not parked");
        cr_assert_eq(n_ended, 0, "nor does it end later");
}

Test(lock, a_wait_that_runs_out_fails_with_the_holder_that_kept_the_lock) {
        LockTime now = lock_table_now(table);
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "owner", 10000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 30), 0);
        cr_assert_eq(park(1, 1, "a", "w2", 60), 0);

        while (n_ended < 2 && now_usec(CLOCK_MONOTONIC) - start < 2 * USEC_PER_SEC)
                cr_assert_geq(sd_event_run(manager.event, 10 * USEC_PER_MSEC), 0);
        cr_assert_eq(n_ended, 2, "the waits never ended");
        cr_assert_geq(now_usec(CLOCK_MONOTONIC) - start, 60 * USEC_PER_MSEC, "ended before the wait was over");
        for (unsigned i = 0; i < 2; i++) {
                cr_assert_eq(waits[i].ended, 1);
                cr_assert_not(waits[i].granted);
                cr_assert_eq(waits[i].error, -ETIME);
                cr_assert_str_eq(waits[i].name, "a");
                cr_assert_str_eq(waits[i].current, "owner");
        }
        cr_assert_str_eq(waits[0].holder, "w1");
        cr_assert_str_eq(waits[1].holder, "w2");
        cr_assert_lt(waits[0].order, waits[1].order);
        cr_assert_eq(lock_table_waiter_count(table), 0);
        cr_assert_eq(owners[0].n_waiters + owners[1].n_waiters, 0);
        cr_assert_str_eq(lock_table_get(table, "a", &now)->holder, "owner");
}

Test(lock, the_expiry_timer_frees_the_lock_on_time_and_serves_the_queue) {
        LockTime now = lock_table_now(table);
        uint64_t start = now_usec(CLOCK_BOOTTIME), elapsed;
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "owner", 40, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "owner", 40, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);

        while (waits[0].ended == 0 && now_usec(CLOCK_BOOTTIME) - start < 2 * USEC_PER_SEC)
                cr_assert_geq(sd_event_run(manager.event, 10 * USEC_PER_MSEC), 0);
        elapsed = now_usec(CLOCK_BOOTTIME) - start;
        cr_assert(waits[0].granted, "the expiry never served the waiter");
        cr_assert_str_eq(waits[0].holder, "w1");
        cr_assert_geq(elapsed + 1000, 40 * USEC_PER_MSEC, "expired early: %" PRIu64 " µs", elapsed);
        cr_assert_lt(elapsed, 40 * USEC_PER_MSEC + 200 * USEC_PER_MSEC, "expired late: %" PRIu64 " µs", elapsed);

        /* "b" had no waiter: its timer removes it without anyone asking. */
        for (unsigned i = 0; i < 100 && lock_table_count(table) > 1; i++)
                cr_assert_geq(sd_event_run(manager.event, 10 * USEC_PER_MSEC), 0);
        cr_assert_eq(lock_table_count(table), 1);
        now = lock_table_now(table);
        cr_assert_str_eq(lock_table_get(table, "a", &now)->holder, "w1");
}

Test(lock, the_end_of_the_table_cancels_the_waits_without_their_owners) {
        LockTime now = lock_table_now(table);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "owner", 1000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        cr_assert_eq(park(1, 1, "a", "w2", 5000), 0);

        /* The owners may be gone by then: the table must not touch them. */
        owners[0] = owners[1] = (LockWaitOwner) { .n_waiters = 77 };
        table = lock_table_free(table);
        cr_assert_eq(waits[0].ended + waits[1].ended, 2);
        cr_assert_eq(waits[0].error, -ECANCELED);
        cr_assert_eq(waits[1].error, -ECANCELED);
        cr_assert_eq(owners[0].n_waiters + owners[1].n_waiters, 2 * 77);
        owners[0] = owners[1] = (LockWaitOwner) {};
        cr_assert_eq(lock_table_new(manager.event, &hooks, &table), 0);
        manager.locks = table;
}

Test(lock, the_expiry_timer_outlives_a_released_lock_and_ends_the_next) {
        LockTime now = lock_table_now(table);
        uint64_t start = now_usec(CLOCK_BOOTTIME), elapsed;
        Lock *l;

        /* The timer waits for "a"; "a" goes early, and the timer must still end "b" on time. */
        cr_assert_eq(lock_table_acquire(table, "a", "owner", 20, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "owner", 60, &now, &l), 1);
        cr_assert_eq(lock_table_release(table, "a", "owner", &now), 0);
        cr_assert_eq(lock_table_count(table), 1);

        while (lock_table_count(table) > 0 && now_usec(CLOCK_BOOTTIME) - start < 2 * USEC_PER_SEC)
                cr_assert_geq(sd_event_run(manager.event, 10 * USEC_PER_MSEC), 0);
        elapsed = now_usec(CLOCK_BOOTTIME) - start;
        cr_assert_eq(lock_table_count(table), 0, "the timer never ended \"b\"");
        cr_assert_geq(elapsed + 1000, 60 * USEC_PER_MSEC, "expired early: %" PRIu64 " µs", elapsed);
        cr_assert_lt(elapsed, 60 * USEC_PER_MSEC + 200 * USEC_PER_MSEC, "expired late: %" PRIu64 " µs", elapsed);

        /* A shorter lock taken while a longer one is armed moves the timer earlier. */
        now = lock_table_now(table);
        start = now_usec(CLOCK_BOOTTIME);
        cr_assert_eq(lock_table_acquire(table, "long", "owner", 60000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "short", "owner", 30, &now, &l), 1);
        while (lock_table_count(table) > 1 && now_usec(CLOCK_BOOTTIME) - start < 2 * USEC_PER_SEC)
                cr_assert_geq(sd_event_run(manager.event, 10 * USEC_PER_MSEC), 0);
        elapsed = now_usec(CLOCK_BOOTTIME) - start;
        cr_assert_eq(lock_table_count(table), 1);
        cr_assert_lt(elapsed, 30 * USEC_PER_MSEC + 200 * USEC_PER_MSEC, "expired late: %" PRIu64 " µs", elapsed);
        now = lock_table_now(table);
        cr_assert_not_null(lock_table_get(table, "long", &now));
}

/* ---- handlers: the reference's exact shapes ---- */

Test(lock, lock_shapes_and_holder_rules) {
        struct json_object *o;

        request(&clients[0], "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"s1\","
                             "\"lockHolder\":\"ignored\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"1\",\"success\":true,\"data\":{\"acquired\":true,"
                                 "\"lockName\":\"a\",\"holder\":\"s1\",\"fencingToken\":1}}");
        request(&clients[1], "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"a\"}");
        expect_line(&clients[1], "{\"type\":\"result\",\"id\":\"2\",\"success\":false,\"data\":{\"acquired\":false,"
                                 "\"lockName\":\"a\",\"holder\":\"2\",\"reason\":\"Lock held by another client\"}}");

        /* Re-entrant for the same holder from another connection. */
        request(&clients[2], "{\"type\":\"lock\",\"id\":\"3\",\"lockName\":\"a\",\"sessionId\":\"s1\"}");
        o = pop_reply(&clients[2]);
        cr_assert(json_object_get_boolean(json_object_object_get(o, "success")));
        cr_assert_eq(jint(o, "data.fencingToken"), 1);
        json_object_put(o);

        /* Without sessionId the id is the holder. */
        request(&clients[0], "{\"type\":\"lock\",\"id\":\"4\",\"lockName\":\"b\",\"lockTimeout\":0}");
        o = pop_reply(&clients[0]);
        cr_assert_str_eq(jstr(o, "data.holder"), "4");
        json_object_put(o);
        request(&clients[0], "{\"type\":\"query_lock\",\"id\":\"5\",\"lockName\":\"b\"}");
        o = pop_reply(&clients[0]);
        cr_assert_eq(jint(o, "data.expiresAt") - jint(o, "data.acquiredAt"), 30000, "0 means the default");
        json_object_put(o);
}

/* The oldest queued reply of c as the bytes sent; the caller frees. */
static char* pop_raw(Client *c) {
        SharedBuf *b = client_pop_queued(c);
        char *s;

        cr_assert_not_null(b, "no reply queued");
        s = strndup(b->data, b->size);
        shared_buf_unref(b);
        return s;
}

Test(lock, fast_path_answers_byte_for_byte_as_the_general_path) {
        static const char *const lines[] = {
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"s1\",\"lockTimeout\":5000}",
                "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"a\",\"sessionId\":\"s2\"}",
                "{\"sessionId\":\"s1\",\"lockName\":\"a\",\"id\":\"3\",\"type\":\"lock\"}",
                "{\"type\":\"lock\",\"id\":\"x/y\",\"lockName\":\"b/c\",\"lockTimeout\":0}",
                "{\"type\":\"lock\",\"id\":\"5\",\"lockName\":\"c\",\"sessionId\":\"\"}",
                "{\"type\":\"unlock\",\"id\":\"6\",\"lockName\":\"a\",\"lockHolder\":\"s2\",\"sessionId\":\"s1\"}",
                "{\"type\":\"unlock\",\"id\":\"7\",\"lockName\":\"a\",\"sessionId\":\"s1\"}",
                "{\"type\":\"unlock\",\"id\":\"8\",\"lockName\":\"a\",\"sessionId\":\"s1\"}",
                "{\"type\":\"lock\",\"id\":\"9\",\"lockName\":\"d\",\"lockHolder\":\"h\",\"photonName\":\"p\",\"n\":12}",
                "{\"type\":\"unlock\",\"id\":\"x/y\",\"lockName\":\"b/c\",\"lockHolder\":\"\",\"sessionId\":\"\"}",
                "{\"type\":\"lock\",\"id\":\"11\",\"lockName\":\"a-name-over-the-cap\",\"sessionId\":\"s1\"}",
                "{\"type\":\"lock\",\"id\":\"12\",\"lockName\":\"e\",\"sessionId\":\"a-holder-over-the-cap\"}",
                "{\"type\":\"lock\",\"id\":\"13\",\"lockName\":\"a\",\"sessionId\":\"s3\",\"lockTimeout\":999999999999999999}",
                "{\"type\":\"lock\",\"id\":\"14\",\"lockName\":\"f\",\"lockWait\":100,\"lockTransferTo\":\"t\"}",
                "{\"type\":\"lock\",\"id\":\"15\",\"lockName\":\"f\",\"lockWait\":0,\"sessionId\":\"s3\"}",
                "{\"type\":\"unlock\",\"id\":\"16\",\"lockName\":\"f\",\"lockHolder\":\"14\",\"lockWait\":5}",
        };
        char *fast[ELEMENTSOF(lines)];

        limits.MAX_LOCK_NAME_BYTES = 8;
        limits.MAX_LOCK_HOLDER_BYTES = 8;

        for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
                cr_assert_eq(control_lock_line(table, NULL, &clients[0], lines[i], strlen(lines[i]), NULL), 1,
                             "not taken: %s", lines[i]);
                fast[i] = pop_raw(&clients[0]);
        }
        cr_assert_str_eq(clients[0].session_id, "s3", "the session is noted as for any request");
        clients[0].session_id = mfree(clients[0].session_id);

        /* The same lines through the general path, from the same start. */
        table = lock_table_free(table);
        cr_assert_eq(lock_table_new(manager.event, &hooks, &table), 0);
        manager.locks = table;
        for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
                char *general;

                general_request(&clients[0], lines[i]);
                general = pop_raw(&clients[0]);
                cr_assert_str_eq(fast[i], general, "%s", lines[i]);
                free(general);
                free(fast[i]);
        }
}

Test(lock, fast_path_leaves_everything_else_alone) {
        static const char *const lines[] = {
                "{ \"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"}",
                "{\"type\":\"lock\",\"id\":\"a\\\"b\",\"lockName\":\"a\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"\xc3\xa9\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockWait\":\"100\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockWait\":1,\"lockWait\":2}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockName\":\"b\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":\"5\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":-5}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":1.5}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":0123}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":1234567890123456789}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"x\":null}",
                "{\"type\":\"lock\",\"id\":1,\"lockName\":\"a\"}",
                "{\"type\":\"lock\",\"id\":\"1\"}",
                "{\"type\":\"query_lock\",\"id\":\"1\",\"lockName\":\"a\"}",
                "{\"type\":\"assign_lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockHolder\":\"h\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"}x",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",}",
                "{}",
                "[\"lock\"]",
                /* NUL bytes, escaped: left to the general path, which refuses them */
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\\u0000x\"}",
                "{\"type\":\"lock\",\"id\":\"x\\u0000y\",\"lockName\":\"a\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"s\\u0000t\"}",
                "{\"type\":\"unlock\",\"id\":\"1\",\"lockName\":\"a\",\"lockHolder\":\"owner\\u0000other\"}",
                "{\"type\":\"lock\\u0000\",\"id\":\"1\",\"lockName\":\"a\"}",
        };

        for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
                cr_assert_eq(control_lock_line(table, NULL, &clients[0], lines[i], strlen(lines[i]), NULL), 0,
                             "taken: %s", lines[i]);
                cr_assert_eq(client_queued(&clients[0]), 0, "answered: %s", lines[i]);
                cr_assert_eq(lock_table_count(table), 0, "acted on: %s", lines[i]);
                cr_assert_null(clients[0].session_id);
        }

        /* Raw NUL bytes (which the general path refuses as invalid JSON) in each string, and after the object. */
        static const char raw[][64] = {
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\0x\"}",
                "{\"type\":\"lock\",\"id\":\"1\0\",\"lockName\":\"a\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"\0\"}",
                "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\"}\0",
        };
        static const size_t raw_len[] = { 41, 40, 55, 40 };
        for (size_t i = 0; i < ELEMENTSOF(raw); i++) {
                cr_assert_eq(raw[i][raw_len[i] - 1], i == 3 ? '\0' : '}', "length of case %zu", i);
                cr_assert_eq(control_lock_line(table, NULL, &clients[0], raw[i], raw_len[i], NULL), 0,
                             "taken: case %zu", i);
                cr_assert_eq(client_queued(&clients[0]), 0);
                cr_assert_eq(lock_table_count(table), 0);
        }
}

Test(lock, assign_unlock_transfer_query_list_shapes) {
        request(&clients[0], "{\"type\":\"assign_lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockHolder\":\"h1\","
                             "\"sessionId\":\"s\",\"lockTimeout\":5000}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"1\",\"success\":true,\"data\":{\"acquired\":true,"
                                 "\"lockName\":\"a\",\"holder\":\"h1\",\"fencingToken\":1}}");
        request(&clients[0], "{\"type\":\"assign_lock\",\"id\":\"2\",\"lockName\":\"a\",\"sessionId\":\"s\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"2\",\"success\":false,\"data\":{\"acquired\":false,"
                                 "\"lockName\":\"a\",\"holder\":\"s\",\"reason\":\"Lock held by another caller\","
                                 "\"currentHolder\":\"h1\"}}");

        request(&clients[0], "{\"type\":\"unlock\",\"id\":\"3\",\"lockName\":\"a\",\"sessionId\":\"s\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"3\",\"success\":false,\"data\":{\"released\":false,"
                                 "\"lockName\":\"a\",\"reason\":\"Cannot release lock held by another client\"}}");

        request(&clients[0], "{\"type\":\"transfer_lock\",\"id\":\"4\",\"lockName\":\"a\",\"lockHolder\":\"x\","
                             "\"lockTransferTo\":\"y\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"4\",\"success\":false,\"data\":{\"transferred\":false,"
                                 "\"lockName\":\"a\",\"reason\":\"Not the current holder\",\"currentHolder\":\"h1\"}}");
        request(&clients[0], "{\"type\":\"transfer_lock\",\"id\":\"5\",\"lockName\":\"a\",\"lockHolder\":\"h1\","
                             "\"lockTransferTo\":\"h2\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"5\",\"success\":true,\"data\":{\"transferred\":true,"
                                 "\"lockName\":\"a\",\"from\":\"h1\",\"to\":\"h2\",\"fencingToken\":2}}");
        request(&clients[0], "{\"type\":\"transfer_lock\",\"id\":\"6\",\"lockName\":\"a\",\"lockHolder\":\"h2\"}");
        expect_line(&clients[0], "{\"type\":\"error\",\"id\":\"6\",\"error\":\"Invalid request format: lockTransferTo is "
                                 "missing\",\"suggestion\":\"Name the new holder in lockTransferTo\"}");
        request(&clients[0], "{\"type\":\"transfer_lock\",\"id\":\"7\",\"lockName\":\"new\",\"lockTransferTo\":\"t\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"7\",\"success\":true,\"data\":{\"transferred\":true,"
                                 "\"lockName\":\"new\",\"from\":\"7\",\"to\":\"t\",\"fencingToken\":3}}");

        request(&clients[0], "{\"type\":\"query_lock\",\"id\":\"8\",\"lockName\":\"nothing\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"8\",\"success\":true,\"data\":{\"lockName\":\"nothing\","
                                 "\"holder\":null}}");

        struct json_object *o, *locks;
        request(&clients[0], "{\"type\":\"list_locks\",\"id\":\"9\"}");
        o = pop_reply(&clients[0]);
        locks = json_object_object_get(json_object_object_get(o, "data"), "locks");
        cr_assert_eq(json_object_array_length(locks), 2);
        struct json_object *first = json_object_array_get_idx(locks, 0);
        cr_assert_str_eq(json_get_string(first, "name"), "a");
        cr_assert_str_eq(json_get_string(first, "holder"), "h2");
        cr_assert_not_null(json_object_object_get(first, "acquiredAt"));
        cr_assert_not_null(json_object_object_get(first, "expiresAt"));
        cr_assert_eq(json_object_get_int64(json_object_object_get(first, "fencingToken")), 2);
        json_object_put(o);

        request(&clients[0], "{\"type\":\"unlock\",\"id\":\"10\",\"lockName\":\"a\",\"lockHolder\":\"h2\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"10\",\"success\":true,\"data\":{\"released\":true,"
                                 "\"lockName\":\"a\"}}");
        request(&clients[0], "{\"type\":\"unlock\",\"id\":\"11\",\"lockName\":\"a\",\"lockHolder\":\"h2\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"11\",\"success\":true,\"data\":{\"released\":true,"
                                 "\"lockName\":\"a\"}}");
}

Test(lock, bad_numbers_and_caps_are_clear_errors) {
        struct json_object *o;

        request(&clients[0], "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"lockTimeout\":\"500\"}");
        o = pop_reply(&clients[0]);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "id"), "1");
        cr_assert(strstr(jstr(o, "error"), "Invalid request format: lockTimeout"));
        json_object_put(o);

        request(&clients[0], "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"a\",\"lockTimeout\":-5}");
        o = pop_reply(&clients[0]);
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);

        request(&clients[0], "{\"type\":\"lock\",\"id\":\"3\",\"lockName\":\"a\",\"lockWait\":300001}");
        o = pop_reply(&clients[0]);
        cr_assert(strstr(jstr(o, "error"), "Invalid request format: lockWait"));
        json_object_put(o);
        cr_assert_eq(lock_table_count(table), 0, "a bad request takes no lock");

        limits.MAX_LOCK_NAME_BYTES = 3;
        request(&clients[0], "{\"type\":\"lock\",\"id\":\"4\",\"lockName\":\"abcd\"}");
        o = pop_reply(&clients[0]);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "PHOTOND_MAX_LOCK_NAME_BYTES"));
        json_object_put(o);

        /* A fractional timeout rounds up. */
        request(&clients[0], "{\"type\":\"lock\",\"id\":\"5\",\"lockName\":\"abc\",\"lockTimeout\":60000.5}");
        o = pop_reply(&clients[0]);
        cr_assert(json_object_get_boolean(json_object_object_get(o, "success")));
        json_object_put(o);
        LockTime now = lock_table_now(table);
        Lock *l = lock_table_get(table, "abc", &now);
        cr_assert_not_null(l);
        cr_assert_eq(l->expires_at - l->acquired_at, 60001);
}

Test(lock, lock_wait_over_the_wire_shapes) {
        struct json_object *o;

        request(&clients[0], "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"s1\"}");
        json_object_put(pop_reply(&clients[0]));
        request(&clients[1], "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"a\",\"sessionId\":\"s2\","
                             "\"lockWait\":5000,\"lockTimeout\":7000}");
        cr_assert_eq(client_queued(&clients[1]), 0, "a waiting acquire is answered later");
        request(&clients[1], "{\"type\":\"lock\",\"id\":\"3\",\"lockName\":\"a\",\"sessionId\":\"s1\",\"lockWait\":5000}");
        o = pop_reply(&clients[1]);
        cr_assert_str_eq(jstr(o, "id"), "3", "the holder itself never waits");
        json_object_put(o);

        request(&clients[0], "{\"type\":\"unlock\",\"id\":\"4\",\"lockName\":\"a\",\"sessionId\":\"s1\"}");
        json_object_put(pop_reply(&clients[0]));
        expect_line(&clients[1], "{\"type\":\"result\",\"id\":\"2\",\"success\":true,\"data\":{\"acquired\":true,"
                                 "\"lockName\":\"a\",\"holder\":\"s2\",\"fencingToken\":2}}");
        request(&clients[1], "{\"type\":\"query_lock\",\"id\":\"5\",\"lockName\":\"a\"}");
        o = pop_reply(&clients[1]);
        cr_assert_eq(jint(o, "data.expiresAt") - jint(o, "data.acquiredAt"), 7000, "the waiter's own timeout");
        json_object_put(o);
}

Test(lock, a_wait_that_runs_out_gets_the_reference_refusal) {
        uint64_t start = now_usec(CLOCK_MONOTONIC);

        request(&clients[0], "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"owner\","
                             "\"lockTimeout\":10000}");
        json_object_put(pop_reply(&clients[0]));
        request(&clients[1], "{\"type\":\"lock\",\"id\":\"w-1\",\"lockName\":\"a\",\"sessionId\":\"w1\",\"lockWait\":30}");
        request(&clients[2], "{\"type\":\"assign_lock\",\"id\":\"w-2\",\"lockName\":\"a\",\"lockHolder\":\"w2\","
                             "\"lockWait\":30}");
        cr_assert_eq(clients[1].lock_waits.n_waiters + clients[2].lock_waits.n_waiters, 2);
        cr_assert_eq(client_queued(&clients[1]) + client_queued(&clients[2]), 0, "answered before the wait ended");

        run_until_queued(&clients[1], 2000);
        run_until_queued(&clients[2], 2000);
        cr_assert_geq(now_usec(CLOCK_MONOTONIC) - start, 30 * USEC_PER_MSEC, "answered before the wait was over");
        expect_line(&clients[1], "{\"type\":\"result\",\"id\":\"w-1\",\"success\":false,\"data\":{\"acquired\":false,"
                                 "\"lockName\":\"a\",\"holder\":\"w1\",\"reason\":\"Lock held by another client\"}}");
        expect_line(&clients[2], "{\"type\":\"result\",\"id\":\"w-2\",\"success\":false,\"data\":{\"acquired\":false,"
                                 "\"lockName\":\"a\",\"holder\":\"w2\",\"reason\":\"Lock held by another caller\","
                                 "\"currentHolder\":\"owner\"}}");
        cr_assert_eq(lock_table_waiter_count(table), 0);
        cr_assert_eq(clients[1].lock_waits.n_waiters + clients[2].lock_waits.n_waiters, 0);
}

Test(lock, a_disconnected_client_is_never_answered) {
        request(&clients[0], "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"owner\"}");
        json_object_put(pop_reply(&clients[0]));
        request(&clients[1], "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"a\",\"sessionId\":\"w1\",\"lockWait\":5000}");
        request(&clients[2], "{\"type\":\"lock\",\"id\":\"3\",\"lockName\":\"a\",\"sessionId\":\"w2\",\"lockWait\":5000}");
        request(&clients[1], "{\"type\":\"assign_lock\",\"id\":\"4\",\"lockName\":\"a\",\"lockHolder\":\"w3\","
                             "\"lockWait\":5000}");
        cr_assert_eq(clients[1].lock_waits.n_waiters, 2);

        /* What the Manager does when a client disconnects. */
        lock_table_owner_gone(table, &clients[1].lock_waits);
        cr_assert_eq(clients[1].lock_waits.n_waiters, 0);
        cr_assert_eq(lock_table_waiter_count(table), 1);

        request(&clients[0], "{\"type\":\"unlock\",\"id\":\"5\",\"lockName\":\"a\",\"sessionId\":\"owner\"}");
        json_object_put(pop_reply(&clients[0]));
        cr_assert_eq(client_queued(&clients[1]), 0, "a gone client is never answered");
        expect_line(&clients[2], "{\"type\":\"result\",\"id\":\"3\",\"success\":true,\"data\":{\"acquired\":true,"
                                 "\"lockName\":\"a\",\"holder\":\"w2\",\"fencingToken\":2}}");
}

Test(lock, wait_caps_over_the_wire) {
        struct json_object *o;

        limits.MAX_LOCK_WAITERS_PER_LOCK = 1;
        request(&clients[0], "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"a\",\"sessionId\":\"owner\"}");
        json_object_put(pop_reply(&clients[0]));
        request(&clients[1], "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"a\",\"lockWait\":5000}");
        cr_assert_eq(client_queued(&clients[1]), 0);
        request(&clients[2], "{\"type\":\"lock\",\"id\":\"3\",\"lockName\":\"a\",\"lockWait\":5000}");
        o = pop_reply(&clients[2]);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "id"), "3");
        cr_assert(strstr(jstr(o, "error"), "PHOTOND_MAX_LOCK_WAITERS_PER_LOCK"), "%s", jstr(o, "error"));
        json_object_put(o);
        cr_assert_eq(clients[2].lock_waits.n_waiters, 0);
}

/* Lines the fast path leaves alone (escapes) go the general way, and the answers written by hand still print every
 * string as json-c does (pop_line() checks each). */
Test(lock, answers_with_escapes_are_what_json_c_prints) {
        struct json_object *o;
        char *s;

        request(&clients[0], "{\"type\":\"lock\",\"id\":\"q\\\"1\",\"lockName\":\"n\\\\a/m\\u00e9\\t\\u0001\\u007f\","
                             "\"sessionId\":\"s\\u2028\"}");
        s = pop_line(&clients[0]);
        cr_assert_str_eq(s, "{\"type\":\"result\",\"id\":\"q\\\"1\",\"success\":true,\"data\":{\"acquired\":true,"
                            "\"lockName\":\"n\\\\a/m\xc3\xa9\\t\\u0001\x7f\",\"holder\":\"s\xe2\x80\xa8\",\"fencingToken\":1}}");
        free(s);

        request(&clients[1], "{\"type\":\"assign_lock\",\"id\":\"2\",\"lockName\":\"n\\\\a/m\\u00e9\\t\\u0001\\u007f\","
                             "\"lockHolder\":\"x\\\"y\\n\"}");
        s = pop_line(&clients[1]);
        o = NULL;
        cr_assert_eq(json_parse(s, strlen(s), &o, NULL), 0);
        cr_assert_str_eq(jstr(o, "data.holder"), "x\"y\n");
        cr_assert_str_eq(jstr(o, "data.currentHolder"), "s\xe2\x80\xa8");
        cr_assert_str_eq(jstr(o, "data.lockName"), "n\\a/m\xc3\xa9\t\x01\x7f");
        json_object_put(o);
        free(s);

        request(&clients[1], "{\"type\":\"unlock\",\"id\":\"3\\b\",\"lockName\":\"n\\\\a/m\\u00e9\\t\\u0001\\u007f\","
                             "\"lockHolder\":\"x\\\"y\\n\"}");
        expect_line(&clients[1], "{\"type\":\"result\",\"id\":\"3\\b\",\"success\":false,\"data\":{\"released\":false,"
                                 "\"lockName\":\"n\\\\a/m\xc3\xa9\\t\\u0001\x7f\","
                                 "\"reason\":\"Cannot release lock held by another client\"}}");
        request(&clients[0], "{\"type\":\"unlock\",\"id\":\"4\",\"lockName\":\"n\\\\a/m\\u00e9\\t\\u0001\\u007f\","
                             "\"sessionId\":\"s\\u2028\"}");
        expect_line(&clients[0], "{\"type\":\"result\",\"id\":\"4\",\"success\":true,\"data\":{\"released\":true,"
                                 "\"lockName\":\"n\\\\a/m\xc3\xa9\\t\\u0001\x7f\"}}");
        cr_assert_eq(lock_table_count(table), 0);
}

/* An answer longer than the fast path's room is written whole (the general path: the line is too long for the
 * fast one). */
Test(lock, long_answers_are_whole) {
        size_t n = 20000;
        char *id = malloc(n + 1), *line, *expected, *s;

        limits.MAX_LOCK_HOLDER_BYTES = 2 * n;   /* the id is the holder */
        cr_assert_not_null(id);
        memset(id, 'i', n);
        id[n] = '\0';
        id[n / 2] = '\t';
        cr_assert(asprintf(&line, "{\"type\":\"lock\",\"id\":\"%.*s\\t%s\",\"lockName\":\"a\"}", (int) (n / 2), id,
                           id + n / 2 + 1) > 0);
        id[n / 2] = '\0';
        cr_assert(asprintf(&expected, "{\"type\":\"result\",\"id\":\"%s\\t%s\",\"success\":true,\"data\":{\"acquired\":true,"
                           "\"lockName\":\"a\",\"holder\":\"%s\\t%s\",\"fencingToken\":1}}", id, id + n / 2 + 1, id,
                           id + n / 2 + 1) > 0);
        request(&clients[0], line);
        s = pop_line(&clients[0]);
        cr_assert_str_eq(s, expected);
        free(s);

        /* And refused: the reason and the current holder too. */
        free(line);
        cr_assert(asprintf(&line, "{\"type\":\"assign_lock\",\"id\":\"2\",\"lockName\":\"a\",\"lockHolder\":\"%s\"}",
                           id) > 0);
        request(&clients[0], line);
        s = pop_line(&clients[0]);
        cr_assert(strstr(s, "\"reason\":\"Lock held by another caller\",\"currentHolder\":\""), "%.200s", s);
        cr_assert_eq(strlen(s), strlen("{\"type\":\"result\",\"id\":\"2\",\"success\":false,\"data\":{\"acquired\":false,"
                                       "\"lockName\":\"a\",\"holder\":\"\",\"reason\":\"Lock held by another caller\","
                                       "\"currentHolder\":\"\"}}") + n / 2 + n + 1);
        free(s);
        free(line);
        free(expected);
        free(id);
}

/* ---- D-Bus helpers ---- */

Test(lock, force_release_and_list) {
        LockTime now = lock_table_now(table);
        struct json_object *a = NULL;
        Lock *l;

        cr_assert_eq(lock_table_force_release(table, "a"), -ENOENT);
        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "s2", 1000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);

        cr_assert_eq(lock_table_force_release(table, "a"), 0);
        cr_assert(waits[0].granted, "the queue is served as after an unlock");

        cr_assert_eq(lock_table_list(table, &a), 0);
        cr_assert_eq(json_object_array_length(a), 2);
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(a, 0), "holder"), "w1");
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(a, 1), "name"), "b");
        json_object_put(a);
}

/* The typed iterator D-Bus lists with: the same locks in the same order as lock_table_list(), and it stops at the
 * callback's error. */
static int seen_lock(const LockInfo *info, void *userdata) {
        char *seen = userdata;

        if (strlen(seen) > 0 && streq(info->name, "stop"))
                return -E2BIG;
        strcat(seen, info->name);
        strcat(seen, "=");
        strcat(seen, info->holder);
        strcat(seen, ";");
        return info->fencing_token > 0 && info->expires_at > info->acquired_at ? 0 : -EINVAL;
}

Test(lock, foreach_is_the_list_without_json) {
        LockTime now = t0;
        char seen[256] = "";
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "s2", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_foreach(table, seen_lock, seen), 0);
        cr_assert_str_eq(seen, "a=s1;b=s2;");

        cr_assert_eq(lock_table_acquire(table, "stop", "s3", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "c", "s4", 1000, &now, &l), 1);
        seen[0] = '\0';
        cr_assert_eq(lock_table_foreach(table, seen_lock, seen), -E2BIG);
        cr_assert_str_eq(seen, "a=s1;b=s2;", "the walk went on after the callback's error");
}

/* ---- state.json ---- */

static struct json_object* saved_state(void) {
        struct json_object *state = json_object_new_object();

        cr_assert_eq(lock_table_save_state(table, state), 0);
        return state;
}

static void restart_table(void) {
        table = lock_table_free(table);
        cr_assert_eq(lock_table_new(manager.event, &hooks, &table), 0);
        manager.locks = table;
}

Test(lock, state_round_trip_keeps_locks_and_raises_tokens) {
        LockTime now = lock_table_now(table);
        struct json_object *state;
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 60000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "s2", 60000, &now, &l), 1);
        state = saved_state();
        cr_assert_eq(json_object_get_int64(json_object_object_get(state, "fencingTokenReserved")), LOCK_TOKEN_BLOCK);

        restart_table();
        cr_assert_eq(lock_table_load_state(table, state), 0);
        json_object_put(state);

        now = lock_table_now(table);
        l = lock_table_get(table, "a", &now);
        cr_assert_not_null(l);
        cr_assert_str_eq(l->holder, "s1");
        cr_assert_eq(l->token, 1);
        cr_assert_eq(lock_table_acquire(table, "a", "s2", 1000, &now, &l), -EBUSY, "still held after the restart");
        cr_assert_eq(lock_table_acquire(table, "c", "s3", 1000, &now, &l), 1);
        cr_assert_gt(l->token, LOCK_TOKEN_BLOCK, "a token after a restart is above every reserved one");
}

Test(lock, state_load_drops_expired_and_clamps_a_clock_set_back) {
        struct json_object *state;
        const char *text;
        char buf[1024];
        int64_t wall = lock_table_now(table).wall_ms;
        LockTime now;
        Lock *l;

        snprintf(buf, sizeof(buf),
                 "{\"version\":1,\"fencingTokenReserved\":2048,\"locks\":["
                 "{\"name\":\"old\",\"holder\":\"h\",\"acquiredAt\":%" PRIi64 ",\"expiresAt\":%" PRIi64 ",\"fencingToken\":7},"
                 "{\"name\":\"live\",\"holder\":\"h\",\"acquiredAt\":%" PRIi64 ",\"expiresAt\":%" PRIi64 ",\"fencingToken\":9},"
                 "{\"name\":\"future\",\"holder\":\"h\",\"acquiredAt\":%" PRIi64 ",\"expiresAt\":%" PRIi64 ",\"fencingToken\":8}]}",
                 wall - 2000, wall - 1000, wall - 1000, wall + 60000, wall + 3600000, wall + 3610000);
        cr_assert_eq(json_parse(buf, strlen(buf), &state, NULL), 0);
        cr_assert_eq(lock_table_load_state(table, state), 0);
        json_object_put(state);

        now = lock_table_now(table);
        cr_assert_null(lock_table_get(table, "old", &now), "ran out while photond was down");
        cr_assert_not_null(lock_table_get(table, "live", &now));
        l = lock_table_get(table, "future", &now);
        cr_assert_not_null(l);
        cr_assert_leq(l->deadline - now.boot_usec, 10000 * USEC_PER_MSEC, "never longer than it was granted for");
        cr_assert_eq(lock_table_last_token(table), 2048);

        state = saved_state();
        text = json_object_to_json_string_ext(state, JSON_FORMAT_FLAGS);
        cr_assert_null(strstr(text, "\"old\""), "%s", text);
        json_object_put(state);
}

Test(lock, malformed_state_is_rejected_whole) {
        static const char *const bad[] = {
                "{\"version\":1,\"locks\":{}}",
                "{\"version\":1,\"locks\":[{\"name\":\"a\"}]}",
                "{\"version\":1,\"fencingTokenReserved\":\"x\"}",
                "{\"version\":1,\"locks\":[{\"name\":\"a\",\"holder\":\"h\",\"acquiredAt\":1,\"expiresAt\":99999999999999,"
                "\"fencingToken\":1},{\"name\":\"a\",\"holder\":\"h\",\"acquiredAt\":1,\"expiresAt\":99999999999999,"
                "\"fencingToken\":2}]}",

                /* a NUL byte would make these the locks "a" and "b" */
                "{\"version\":1,\"locks\":[{\"name\":\"a\\u0000x\",\"holder\":\"h\",\"acquiredAt\":1,"
                "\"expiresAt\":99999999999999,\"fencingToken\":1}]}",
                "{\"version\":1,\"locks\":[{\"name\":\"b\",\"holder\":\"h\\u0000x\",\"acquiredAt\":1,"
                "\"expiresAt\":99999999999999,\"fencingToken\":1}]}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct json_object *state;

                restart_table();
                cr_assert_eq(json_parse(bad[i], strlen(bad[i]), &state, NULL), 0);
                cr_assert_eq(lock_table_load_state(table, state), -EINVAL, "accepted: %s", bad[i]);
                cr_assert_eq(lock_table_count(table), 0, "half a table was kept: %s", bad[i]);
                json_object_put(state);
        }
}

Test(lock, status_fields) {
        struct json_object *data = json_object_new_object();
        LockTime now = lock_table_now(table);
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        cr_assert_eq(lock_table_add_status(table, data), 0);
        cr_assert_eq(json_object_get_int64(json_object_object_get(data, "lockWaiters")), 1);
        cr_assert_eq(json_object_get_int64(json_object_object_get(data, "fencingToken")), 1);
        json_object_put(data);
}

/* lock_table_get_stats(): what GET /metrics shows. Every new fencing token is an acquisition; a refresh, a refusal
 * or a release is none. */
Test(lock, stats_count_acquisitions_expiries_and_waiters) {
        LockTime now = at(0);
        LockTableStats st;
        Lock *l;

        lock_table_get_stats(table, &st);
        cr_assert_eq(st.held + st.waiters + st.acquired + st.expired + st.last_token, 0);

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "a", "s1", 1000, &now, &l), 0, "re-entrant");
        cr_assert_eq(lock_table_acquire(table, "a", "s2", 1000, &now, &l), -EBUSY);
        cr_assert_eq(park(0, 0, "a", "w1", 5000), 0);
        lock_table_get_stats(table, &st);
        cr_assert_eq(st.held, 1);
        cr_assert_eq(st.acquired, 1);
        cr_assert_eq(st.waiters, 1);
        cr_assert_eq(st.last_token, 1);

        cr_assert_eq(lock_table_release(table, "a", "s1", &now), 0);
        lock_table_get_stats(table, &st);
        cr_assert_eq(st.acquired, 2, "the hand-over to the waiter");
        cr_assert_eq(st.waiters, 0);
        cr_assert_eq(st.held, 1);
        cr_assert_eq(st.expired, 0, "a release is no expiry");

        cr_assert_eq(lock_table_acquire(table, "b", "s1", 50, &now, &l), 1);
        now = at(100);
        cr_assert_null(lock_table_get(table, "b", &now), "ran out");
        cr_assert_eq(lock_table_transfer(table, "a", "w1", "s3", 1000, &now, &l), 1);
        cr_assert_eq(lock_table_force_release(table, "a"), 0);
        lock_table_get_stats(table, &st);
        cr_assert_eq(st.expired, 1);
        cr_assert_eq(st.acquired, 4, "b, then the transfer");
        cr_assert_eq(st.last_token, 4);
        cr_assert_eq(st.held, 0);
}

/* ---- state.journal records ---- */

/* The changes as lock_table_put_changes() writes them: the text, and its lines parsed into an array. */
static char* saved_changes_text(void) {
        size_t max;
        char *text, *end;

        cr_assert_eq(lock_table_changes_size_max(table, &max), 0);
        text = malloc(max + 1);
        cr_assert_not_null(text);
        end = lock_table_put_changes(table, text);
        cr_assert_leq((size_t) (end - text), max, "wrote past the room it asked for");
        *end = '\0';
        lock_table_changes_saved(table);
        return text;
}

static struct json_object* saved_changes(void) {
        struct json_object *records = json_object_new_array();
        char *text = saved_changes_text(), *save = NULL;

        cr_assert(!*text || text[strlen(text) - 1] == '\n', "every record ends its line: %s", text);
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                struct json_object *o;

                cr_assert_eq(json_parse(line, strlen(line), &o, NULL), 0, "not JSON: %s", line);
                json_object_array_add(records, o);
        }
        free(text);
        return records;
}

static void replay(struct json_object *state, struct json_object *records) {
        restart_table();
        cr_assert_eq(lock_table_load_state(table, state), 0);
        for (size_t i = 0; i < json_object_array_length(records); i++)
                cr_assert_eq(lock_table_load_record(table, json_object_array_get_idx(records, i), true), 0);
}

/* Each change is one record of the lock's final state ({"set"}) or of its end ({"del"}), removals first; replayed
 * over the snapshot they give the same table, in the same acquisition order. */
Test(lock, changes_are_journaled_and_replay_to_the_same_table) {
        LockTime now = lock_table_now(table);
        struct json_object *state, *records, *before, *after;
        Lock *l;

        cr_assert_eq(lock_table_acquire(table, "a", "s1", 60000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "s2", 60000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "c", "s3", 60000, &now, &l), 1);
        state = saved_state();
        records = saved_changes();
        cr_assert_eq(json_object_array_length(records), 3);
        json_object_put(records);
        records = saved_changes();
        cr_assert_eq(json_object_array_length(records), 0, "written changes are forgotten");
        json_object_put(records);

        /* a gone and taken again (a new lock at the end), b refreshed twice (one record), c released, d new. */
        cr_assert_eq(lock_table_release(table, "a", "s1", &now), 0);
        cr_assert_eq(lock_table_acquire(table, "b", "s2", 1000, &now, &l), 0);
        cr_assert_eq(lock_table_acquire(table, "a", "s4", 60000, &now, &l), 1);
        cr_assert_eq(lock_table_acquire(table, "b", "s2", 90000, &now, &l), 0);
        cr_assert_eq(lock_table_release(table, "c", "s3", &now), 0);
        cr_assert_eq(lock_table_acquire(table, "d", "s5", 60000, &now, &l), 1);
        records = saved_changes();
        cr_assert_eq(json_object_array_length(records), 5, "%s", json_object_to_json_string(records));
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(records, 0), "del"), "a");
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(records, 1), "del"), "c");

        before = NULL;
        cr_assert_eq(lock_table_list(table, &before), 0);
        replay(state, records);
        after = NULL;
        cr_assert_eq(lock_table_list(table, &after), 0);
        cr_assert_str_eq(json_object_to_json_string_ext(after, JSON_FORMAT_FLAGS),
                         json_object_to_json_string_ext(before, JSON_FORMAT_FLAGS));
        records = (json_object_put(records), saved_changes());
        cr_assert_eq(json_object_array_length(records), 0, "loading records no changes");
        json_object_put(records);
        json_object_put(before);
        json_object_put(after);
        json_object_put(state);
}

/* Marks only rise, in any record; lock records of a stale journal (replay_locks false) are checked, not applied. */
Test(lock, journal_records_marks_and_stale_replay) {
        struct json_object *rec;
        LockTime now;

        rec = json_tokener_parse("{\"fencingTokenReserved\":5000}");
        cr_assert_eq(lock_table_load_record(table, rec, false), 0);
        json_object_put(rec);
        cr_assert_eq(lock_table_reserved_token(table), 5000);
        rec = json_tokener_parse("{\"fencingTokenReserved\":10}");
        cr_assert_eq(lock_table_load_record(table, rec, false), 0);
        json_object_put(rec);
        cr_assert_eq(lock_table_reserved_token(table), 5000, "a mark never falls");

        rec = json_tokener_parse("{\"set\":{\"name\":\"x\",\"holder\":\"h\",\"acquiredAt\":1,\"expiresAt\":99999999999999,"
                                 "\"fencingToken\":7}}");
        cr_assert_eq(lock_table_load_record(table, rec, false), 0);
        now = lock_table_now(table);
        cr_assert_null(lock_table_get(table, "x", &now), "a stale journal's lock was applied");
        cr_assert_eq(lock_table_load_record(table, rec, true), 0);
        cr_assert_not_null(lock_table_get(table, "x", &now));
        json_object_put(rec);

        static const char *const bad[] = {
                "{\"set\":1}", "{\"del\":2}", "{\"set\":{\"name\":\"x\"}}", "{\"fencingTokenReserved\":-1}",
                "{\"del\":\"x\\u0000y\"}",       /* not the lock "x" */
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                rec = json_tokener_parse(bad[i]);
                cr_assert_eq(lock_table_load_record(table, rec, true), -EINVAL, "accepted: %s", bad[i]);
                json_object_put(rec);
        }
        cr_assert_not_null(lock_table_get(table, "x", &now), "a bad record removed the lock");
}

/* The journal's records are written by hand (photond-store.c): byte for byte what json-c prints for the same lock,
 * whatever its name and holder hold. */
Test(lock, journal_records_match_json_c) {
        static const char *names[] = { "plain", "quote\"back\\slash/", "ctl\x01\x1f\b\f\n\r\t\x7f", "utf-8 \xc3\xa9\xe2\x82\xac" };
        LockTime now = lock_table_now(table);
        Lock *l;

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                struct json_object *state, *set;
                char *text, *expected;

                restart_table();
                cr_assert_eq(lock_table_acquire(table, names[i], names[ELEMENTSOF(names) - 1 - i], 60000, &now, &l), 1);
                state = saved_state();
                set = json_object_new_object();
                json_object_object_add(set, "set",
                                       json_object_get(json_object_array_get_idx(json_object_object_get(state, "locks"), 0)));
                cr_assert(asprintf(&expected, "%s\n", json_object_to_json_string_ext(set, JSON_FORMAT_FLAGS)) > 0);
                text = saved_changes_text();
                cr_assert_str_eq(text, expected);
                free(text);
                free(expected);

                cr_assert_eq(lock_table_release(table, names[i], names[ELEMENTSOF(names) - 1 - i], &now), 0);
                json_object_object_add(set, "set", NULL);
                json_object_object_del(set, "set");
                json_object_object_add(set, "del", json_object_new_string(names[i]));
                cr_assert(asprintf(&expected, "%s\n", json_object_to_json_string_ext(set, JSON_FORMAT_FLAGS)) > 0);
                text = saved_changes_text();
                cr_assert_str_eq(text, expected);
                free(text);
                free(expected);
                json_object_put(set);
                json_object_put(state);
        }
}
