/* SPDX-License-Identifier: MIT */

/* state.json: loading and saving through a real Manager, and which writes are durable (fsync'ed): the first one,
 * and every one that raises the fencing-token or eventId high-water mark, never a plain lock-table change. */

#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "fsync-spy.h"
#include "helpers.h"
#include "json-util.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-store.h"

typedef struct Env {
        char *home, *state_dir, *path, *tmp_path;
        Manager *m;
} Env;

static Env env_new(void) {
        Env e = { .home = tmpdir_new() };
        char *real;

        limits_reset();
        setenv("HOME", e.home, 1);
        setenv("PHOTON_HOME", e.home, 1);
        unsetenv("PHOTON_DIR");
        cr_assert_eq(manager_new(&(ManagerConfig) { .bus_mode = BUS_MODE_NONE }, &e.m), 0);
        cr_assert_eq(mkdir_parents_and_self(e.m->state_dir, 0700), 0);
        /* fsync-spy sees the paths as the kernel names them. */
        real = realpath(e.m->state_dir, NULL);
        cr_assert_not_null(real);
        e.state_dir = real;
        cr_assert(asprintf(&e.path, "%s/state.json", real) > 0);
        cr_assert(asprintf(&e.tmp_path, "%s/state.json.tmp", real) > 0);
        return e;
}

static void env_free(Env *e) {
        manager_free(e->m);
        fsync_spy_reset();
        free(e->state_dir);
        free(e->path);
        free(e->tmp_path);
        tmpdir_remove(e->home);
}

static int64_t file_int(const char *path, const char *key) {
        struct json_object *o = NULL;
        char *t = NULL;
        int64_t v = -1;

        cr_assert_eq(read_full_file(path, 1 << 20, &t, NULL), 0, "read %s", path);
        cr_assert_eq(json_parse(t, strlen(t), &o, NULL), 0, "%s: %s", path, t);
        (void) json_get_int64(o, key, false, &v);
        json_object_put(o);
        free(t);
        return v;
}

static off_t file_size(const char *path) {
        struct stat st;

        cr_assert_eq(stat(path, &st), 0, "stat %s", path);
        return st.st_size;
}

static void save(Env *e) {
        fsync_spy_reset();
        cr_assert_eq(store_save_state(e->m), 0);
}

static void expect_durable(Env *e, const char *what) {
        if (!fsync_spy_saw(e->tmp_path, false) || !fsync_spy_saw(e->state_dir, false))
                fsync_spy_dump();
        cr_assert(fsync_spy_saw(e->tmp_path, false), "%s: the new state is synced before the exchange", what);
        cr_assert(fsync_spy_saw(e->state_dir, false), "%s: the directory is synced after it", what);
        cr_assert_eq(file_size(e->tmp_path), 0, "%s: no older state is left in state.json.tmp", what);
}

static void expect_not_synced(Env *e, const char *what) {
        if (fsync_spy_count() != 0)
                fsync_spy_dump();
        cr_assert_eq(fsync_spy_count(), 0, "%s: no fsync on the lock path", what);
}

Test(store, durable_only_when_a_high_water_mark_rises) {
        Env e = env_new();
        LockTime now = lock_table_now(e.m->locks);
        Lock *l = NULL;

        /* The first write of a run: durable (state.json.tmp may hold a state from before). */
        save(&e);
        expect_durable(&e, "first write");

        save(&e);
        expect_not_synced(&e, "same state again");

        /* The first token reserves a block: the raised mark must be on disk before the token leaves. */
        cr_assert_eq(lock_table_acquire(e.m->locks, "a", "s1", 60000, &now, &l), 1);
        uint64_t reserved = lock_table_reserved_token(e.m->locks);
        cr_assert_gt(reserved, lock_table_last_token(e.m->locks));
        save(&e);
        expect_durable(&e, "fencing mark raised");
        cr_assert_eq(file_int(e.path, "fencingTokenReserved"), (int64_t) reserved);

        /* Lock changes inside the reserved block: crash-safe (atomic) but not synced. */
        cr_assert_eq(lock_table_release(e.m->locks, "a", "s1", &now), 0);
        save(&e);
        expect_not_synced(&e, "release");
        cr_assert_eq(lock_table_acquire(e.m->locks, "b", "s2", 60000, &now, &l), 1);
        cr_assert_eq(lock_table_reserved_token(e.m->locks), reserved, "still inside the block");
        save(&e);
        expect_not_synced(&e, "acquire inside the block");
        cr_assert_eq(file_int(e.path, "fencingTokenReserved"), (int64_t) reserved);
        cr_assert_eq(file_int(e.tmp_path, "fencingTokenReserved"), (int64_t) reserved,
                     "what state.json.tmp holds now is never below the durable mark");

        /* Past the block: durable again. */
        while (lock_table_reserved_token(e.m->locks) == reserved) {
                cr_assert_eq(lock_table_release(e.m->locks, "b", "s2", &now), 0);
                cr_assert_eq(lock_table_acquire(e.m->locks, "b", "s2", 60000, &now, &l), 1);
        }
        save(&e);
        expect_durable(&e, "next block");
        cr_assert_gt(file_int(e.path, "fencingTokenReserved"), (int64_t) reserved);

        env_free(&e);
}

/* The state written comes back after a restart. */
Test(store, save_and_load) {
        Env e = env_new();
        LockTime now = lock_table_now(e.m->locks);
        Lock *l = NULL;
        uint64_t token;

        cr_assert_eq(lock_table_acquire(e.m->locks, "a", "s1", 60000, &now, &l), 1);
        token = lock_table_last_token(e.m->locks);
        save(&e);
        manager_free(e.m);

        cr_assert_eq(manager_new(&(ManagerConfig) { .bus_mode = BUS_MODE_NONE }, &e.m), 0);
        cr_assert_eq(store_load_state(e.m), 0);
        cr_assert(!e.m->state_lost);
        cr_assert_eq(lock_table_count(e.m->locks), 1);
        now = lock_table_now(e.m->locks);
        cr_assert_eq(lock_table_acquire(e.m->locks, "b", "s2", 60000, &now, &l), 1);
        cr_assert_gt(lock_table_last_token(e.m->locks), token);
        env_free(&e);
}
