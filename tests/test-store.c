/* SPDX-License-Identifier: MIT */

/* state.json and state.journal, written by the StateFile a real Manager builds on its cores: what a write costs (an
 * append of the change, a snapshot only now and then), which writes are durable (every one that raises the
 * fencing-token or eventId high-water mark, never a plain lock-table change), and what a restart finds: the
 * journal replayed over its own snapshot, a torn last line ignored, a stale journal's marks only, a corrupt one as
 * lost state. Then the Manager's group commit: which replies wait for the write. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "fd-util.h"
#include "fsync-spy.h"
#include "helpers.h"
#include "json-util.h"
#include "photond-channel.h"
#include "photond-client.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-store.h"

typedef struct Env {
        char *home, *state_dir, *path, *journal, *journal_tmp;
        Manager *m;
        bool lost;              /* the last load said the state was lost */
} Env;

static void env_start(Env *e) {
        cr_assert_eq(manager_new(&(ManagerConfig) { .bus_mode = BUS_MODE_NONE }, &e->m), 0);
}

static Env env_new(void) {
        Env e = { .home = tmpdir_new() };
        char *real;

        limits_reset();
        setenv("HOME", e.home, 1);
        setenv("PHOTON_HOME", e.home, 1);
        unsetenv("PHOTON_DIR");
        env_start(&e);
        cr_assert_eq(mkdir_parents_and_self(e.m->state_dir, 0700), 0);
        /* fsync-spy sees the paths as the kernel names them. */
        real = realpath(e.m->state_dir, NULL);
        cr_assert_not_null(real);
        e.state_dir = real;
        cr_assert(asprintf(&e.path, "%s/state.json", real) > 0);
        cr_assert(asprintf(&e.journal, "%s/state.journal", real) > 0);
        cr_assert(asprintf(&e.journal_tmp, "%s/state.journal.tmp", real) > 0);
        return e;
}

/* photond stops (or crashes: nothing is written on the way out) and starts again on the same files. */
static void env_restart(Env *e) {
        int r;

        manager_free(e->m);
        env_start(e);
        r = store_load_state(e->m->state_file);
        cr_assert(r == 0 || r == 1, "load: %d", r);
        e->lost = r > 0;
        /* As manager_startup() does: the lock table then restarts its fencing tokens above the clock. */
        e->m->state_lost = e->lost;
}

static void env_free(Env *e) {
        manager_free(e->m);
        fsync_spy_reset();
        free(e->state_dir);
        free(e->path);
        free(e->journal);
        free(e->journal_tmp);
        tmpdir_remove(e->home);
}

/* key in the file's first line (all of state.json, the journal's header). */
static int64_t file_int(const char *path, const char *key) {
        struct json_object *o = NULL;
        char *t = NULL;
        int64_t v = -1;

        cr_assert_eq(read_full_file(path, 1 << 24, &t, NULL), 0, "read %s", path);
        t[strcspn(t, "\n")] = '\0';
        cr_assert_eq(json_parse(t, strlen(t), &o, NULL), 0, "%s: %s", path, t);
        (void) json_get_int64(o, key, false, &v);
        json_object_put(o);
        free(t);
        return v;
}

/* The greatest value of key on any line of the journal (-1: none). */
static int64_t journal_max(Env *e, const char *key) {
        char *t = NULL, *line, *save = NULL;
        int64_t max = -1;

        cr_assert_eq(read_full_file(e->journal, 1 << 24, &t, NULL), 0);
        for (line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                struct json_object *o = NULL;
                int64_t v;

                cr_assert_eq(json_parse(line, strlen(line), &o, NULL), 0, "%s", line);
                if (json_get_int64(o, key, false, &v) >= 0 && v > max)
                        max = v;
                json_object_put(o);
        }
        free(t);
        return max;
}

static bool journal_has(Env *e, const char *text) {
        char *t = NULL;
        bool found;

        cr_assert_eq(read_full_file(e->journal, 1 << 24, &t, NULL), 0);
        found = strstr(t, text);
        free(t);
        return found;
}

static struct stat file_stat(const char *path) {
        struct stat st;

        cr_assert_eq(stat(path, &st), 0, "stat %s", path);
        return st;
}

static void append_text(const char *path, const char *text) {
        FILE *f = fopen(path, "ae");

        cr_assert_not_null(f);
        fputs(text, f);
        cr_assert_eq(fclose(f), 0);
}

static void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        cr_assert_not_null(f);
        fputs(text, f);
        cr_assert_eq(fclose(f), 0);
}

static void save(Env *e) {
        fsync_spy_reset();
        cr_assert_eq(store_save_state(e->m->state_file), 0);
}

static Lock* acquire(Env *e, const char *name, const char *holder) {
        LockTime now = lock_table_now(e->m->locks);
        Lock *l = NULL;

        cr_assert_geq(lock_table_acquire(e->m->locks, name, holder, 600000, &now, &l), 0, "acquire %s", name);
        return l;
}

static void release(Env *e, const char *name, const char *holder) {
        LockTime now = lock_table_now(e->m->locks);

        cr_assert_eq(lock_table_release(e->m->locks, name, holder, &now), 0);
}

static Lock* get(Env *e, const char *name) {
        LockTime now = lock_table_now(e->m->locks);

        return lock_table_get(e->m->locks, name, &now);
}

static void expect_not_synced(const char *what) {
        if (fsync_spy_count() != 0)
                fsync_spy_dump();
        cr_assert_eq(fsync_spy_count(), 0, "%s: no fsync on the lock path", what);
}

Test(store, durable_only_when_a_high_water_mark_rises) {
        Env e = env_new();

        /* The first write is a snapshot with a fresh journal, synced before it takes the journal's name. */
        save(&e);
        cr_assert(fsync_spy_saw(e.journal_tmp, false), "a fresh journal is synced before the rename");

        save(&e);
        expect_not_synced("same state again");

        /* The first token reserves a block: the raised mark must be on disk before the token leaves, and the
         * journal's name with it. */
        acquire(&e, "a", "s1");
        uint64_t reserved = lock_table_reserved_token(e.m->locks);
        cr_assert_gt(reserved, lock_table_last_token(e.m->locks));
        save(&e);
        if (!fsync_spy_saw(e.journal, false) || !fsync_spy_saw(e.state_dir, false))
                fsync_spy_dump();
        cr_assert(fsync_spy_saw(e.journal, false), "fencing mark raised: the journal is synced");
        cr_assert(fsync_spy_saw(e.state_dir, false), "and the directory, the first time in the journal's life");
        cr_assert_eq(journal_max(&e, "fencingTokenReserved"), (int64_t) reserved);

        /* Lock changes inside the reserved block: appended, not synced. */
        release(&e, "a", "s1");
        save(&e);
        expect_not_synced("release");
        acquire(&e, "b", "s2");
        cr_assert_eq(lock_table_reserved_token(e.m->locks), reserved, "still inside the block");
        save(&e);
        expect_not_synced("acquire inside the block");

        /* Past the block: durable again; the journal's name already is. */
        while (lock_table_reserved_token(e.m->locks) == reserved) {
                release(&e, "b", "s2");
                acquire(&e, "b", "s2");
        }
        save(&e);
        cr_assert(fsync_spy_saw(e.journal, false), "next block");
        cr_assert_not(fsync_spy_saw(e.state_dir, false), "the journal's name was synced before");
        cr_assert_gt(journal_max(&e, "fencingTokenReserved"), (int64_t) reserved);

        /* eventIds the same way. */
        struct json_object *mark = json_tokener_parse("{\"eventIdHighWater\":123456}");
        cr_assert_eq(channels_load_state(e.m->channels, mark), 0);
        json_object_put(mark);
        manager_state_changed(e.m);
        save(&e);
        cr_assert(fsync_spy_saw(e.journal, false), "eventId mark raised");
        cr_assert_eq(journal_max(&e, "eventIdHighWater"), 123456);

        env_free(&e);
}

/* A change costs an append of that change: with thousands of locks held, state.json is not touched. */
Test(store, a_change_appends_only_the_change) {
        Env e = env_new();
        struct stat before, after;
        off_t journal_before;
        char name[32];

        for (unsigned i = 0; i < 5000; i++) {
                snprintf(name, sizeof(name), "filler-%u", i);
                acquire(&e, name, "filler");
        }
        save(&e);
        before = file_stat(e.path);
        cr_assert_gt(before.st_size, 400000, "the snapshot holds the 5000 locks");
        journal_before = file_stat(e.journal).st_size;

        acquire(&e, "one-more", "h");
        save(&e);
        after = file_stat(e.path);
        cr_assert_eq(after.st_ino, before.st_ino, "state.json was rewritten for one lock");
        cr_assert_eq(after.st_size, before.st_size);
        cr_assert_lt(file_stat(e.journal).st_size - journal_before, 300, "the append is one lock's record");
        cr_assert(journal_has(&e, "\"one-more\""));

        release(&e, "one-more", "h");
        save(&e);
        cr_assert(journal_has(&e, "{\"del\":\"one-more\"}"));
        cr_assert_eq(file_stat(e.path).st_ino, before.st_ino);

        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_eq(lock_table_count(e.m->locks), 5000);
        cr_assert_null(get(&e, "one-more"));
        env_free(&e);
}

/* The state written comes back after a restart: the snapshot, then the journal's sets and dels over it. */
Test(store, save_and_load) {
        Env e = env_new();
        int64_t acquired_c, expires_b;
        uint64_t token;
        Lock *l;

        acquire(&e, "a", "s1");
        acquire(&e, "b", "s2");
        save(&e);                               /* the snapshot */
        acquire(&e, "c", "s3");
        acquired_c = get(&e, "c")->acquired_at;
        save(&e);                               /* journaled: set c */
        release(&e, "a", "s1");
        save(&e);                               /* del a */
        {
                LockTime later = lock_table_now(e.m->locks);

                later.wall_ms += 5000;
                later.boot_usec += 5000 * USEC_PER_MSEC;
                cr_assert_eq(lock_table_acquire(e.m->locks, "b", "s2", 900000, &later, &l), 0);
                expires_b = l->expires_at;
        }
        acquire(&e, "a", "s4");                 /* a again, another holder: now after c */
        save(&e);                               /* set b (overwrite), set a */
        token = lock_table_last_token(e.m->locks);

        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_eq(lock_table_count(e.m->locks), 3);
        cr_assert_str_eq(get(&e, "a")->holder, "s4");
        cr_assert_eq(get(&e, "a")->token, token);
        cr_assert_eq(get(&e, "b")->expires_at, expires_b, "the refresh was replayed over the snapshot's b");
        cr_assert_eq(get(&e, "c")->acquired_at, acquired_c);

        /* The acquisition order (list_locks) is the one before the restart: b, c, a. */
        struct json_object *list = NULL;
        cr_assert_eq(lock_table_list(e.m->locks, &list), 0);
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(list, 0), "name"), "b");
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(list, 1), "name"), "c");
        cr_assert_str_eq(json_get_string(json_object_array_get_idx(list, 2), "name"), "a");
        json_object_put(list);

        cr_assert_gt(acquire(&e, "d", "s5")->token, token, "tokens continue above");
        env_free(&e);
}

/* A crash in the middle of an append leaves a last line without its newline: its replies never left, it is
 * ignored, and the state before it loads in full. */
Test(store, a_torn_last_line_is_ignored) {
        Env e = env_new();

        acquire(&e, "a", "s1");
        save(&e);
        acquire(&e, "b", "s2");
        save(&e);
        append_text(e.journal, "{\"del\":\"a\"}\n{\"del\":\"b\"");

        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_null(get(&e, "a"), "the complete line before it counts");
        cr_assert_not_null(get(&e, "b"), "the torn line does not");

        /* The next write starts a new journal, not one after the torn line. */
        acquire(&e, "c", "s3");
        save(&e);
        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_not_null(get(&e, "b"));
        cr_assert_not_null(get(&e, "c"));
        env_free(&e);
}

/* A line that is not a record, with more after it, is not a crash's doing: the state counts as lost (all or
 * nothing, as for a corrupt state.json), the journal is kept aside. */
Test(store, a_corrupt_journal_is_lost_state) {
        Env e = env_new();
        char pattern[1024];
        glob_t g;

        acquire(&e, "a", "s1");
        save(&e);
        acquire(&e, "b", "s2");
        save(&e);
        append_text(e.journal, "{\"set\":{\"name\":\"x\"\n{\"del\":\"b\"}\n");

        env_restart(&e);
        cr_assert(e.lost);
        cr_assert_eq(lock_table_count(e.m->locks), 0);
        snprintf(pattern, sizeof(pattern), "%s.corrupt-*", e.journal);
        cr_assert_eq(glob(pattern, 0, NULL, &g), 0, "the journal was not kept aside");
        globfree(&g);
        env_free(&e);
}

/* A journal of another generation than state.json (a crash between a new snapshot and its fresh journal) is not
 * replayed, but its high-water marks count: they only rise. */
Test(store, a_stale_journal_gives_only_its_marks) {
        Env e = env_new();
        char text[1024];
        int64_t wall = lock_table_now(e.m->locks).wall_ms;

        snprintf(text, sizeof(text),
                 "{\"version\":1,\"journalGeneration\":5,\"fencingTokenReserved\":2048,\"locks\":["
                 "{\"name\":\"a\",\"holder\":\"h\",\"acquiredAt\":%" PRIi64 ",\"expiresAt\":%" PRIi64
                 ",\"fencingToken\":7}]}", wall, wall + 600000);
        write_text(e.path, text);
        write_text(e.journal, "{\"version\":1,\"generation\":4,\"fencingTokenReserved\":4096}\n"
                              "{\"del\":\"a\"}\n{\"eventIdHighWater\":99999}\n");
        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_not_null(get(&e, "a"), "a stale journal's del was replayed");
        cr_assert_eq(lock_table_reserved_token(e.m->locks), 4096);
        cr_assert_eq(channels_event_id_mark(e.m->channels), 99999);

        /* The same journal with the snapshot's generation is replayed. */
        write_text(e.journal, "{\"version\":1,\"generation\":5}\n{\"del\":\"a\"}\n");
        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_null(get(&e, "a"));

        /* The next snapshot takes a generation above both. */
        acquire(&e, "b", "h");
        save(&e);
        cr_assert_eq(file_int(e.path, "journalGeneration"), 6);
        cr_assert_eq(file_int(e.journal, "generation"), 6);
        env_free(&e);
}

/* state.json as written before the journal existed loads, and the next write starts the journal. */
Test(store, a_state_file_without_journal_loads) {
        Env e = env_new();
        char text[1024];
        int64_t wall = lock_table_now(e.m->locks).wall_ms;

        snprintf(text, sizeof(text),
                 "{\"version\":1,\"fencingTokenReserved\":2048,\"locks\":["
                 "{\"name\":\"a\",\"holder\":\"h\",\"acquiredAt\":%" PRIi64 ",\"expiresAt\":%" PRIi64
                 ",\"fencingToken\":7}]}", wall, wall + 600000);
        write_text(e.path, text);
        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_not_null(get(&e, "a"));
        acquire(&e, "b", "h");
        save(&e);
        cr_assert_eq(file_int(e.journal, "generation"), 1);
        env_restart(&e);
        cr_assert_eq(lock_table_count(e.m->locks), 2);
        env_free(&e);
}

/* A journal without its state.json: the locks it changed are gone with the snapshot, so the state counts as lost. */
Test(store, a_journal_without_its_snapshot_is_lost_state) {
        Env e = env_new();

        acquire(&e, "a", "s1");
        save(&e);
        cr_assert_eq(unlink(e.path), 0);
        env_restart(&e);
        cr_assert(e.lost);
        cr_assert_eq(lock_table_count(e.m->locks), 0);
        cr_assert_geq(lock_table_reserved_token(e.m->locks), LOCK_TOKEN_BLOCK, "its marks still count");
        env_free(&e);
}

/* The store knows only what state_file_new() gave it, the directory and the cores: a second StateFile on the same
 * cores writes where it is told, not in the Manager's state directory, and loads from there. */
Test(store, writes_and_loads_in_the_directory_it_is_given) {
        Env e = env_new();
        char *other = tmpdir_new(), *missing = NULL, *path = NULL;
        StateFile *f = NULL;

        acquire(&e, "a", "s1");
        cr_assert_eq(state_file_new(other, e.m->channels, e.m->locks, &f), 0);
        cr_assert_eq(store_load_state(f), 0, "an empty directory is a fresh start");
        cr_assert_eq(store_save_state(f), 0);
        f = state_file_free(f);
        cr_assert(asprintf(&path, "%s/state.json", other) > 0);
        cr_assert_eq(access(path, F_OK), 0, "state.json is in the directory given");
        cr_assert_neq(access(e.path, F_OK), 0, "and not in the Manager's");

        manager_free(e.m);
        env_start(&e);
        cr_assert_eq(state_file_new(other, e.m->channels, e.m->locks, &f), 0);
        cr_assert_eq(store_load_state(f), 0);
        cr_assert_not_null(get(&e, "a"), "the lock came back into the new cores");
        f = state_file_free(f);

        /* A directory that cannot be opened is an error, not a lost state. */
        cr_assert(asprintf(&missing, "%s/missing", other) > 0);
        cr_assert_eq(state_file_new(missing, e.m->channels, e.m->locks, &f), 0);
        cr_assert_eq(store_load_state(f), -ENOENT);
        state_file_free(f);

        free(missing);
        free(path);
        tmpdir_remove(other);
        env_free(&e);
}

/* Once the journal outgrows the snapshot (and STATE_JOURNAL_MIN_COMPACT), a new snapshot takes its changes in; the
 * journal starts again, and a restart finds the same locks. */
Test(store, compaction_then_restart) {
        Env e = env_new();
        unsigned i, kept = 0;
        char name[32];
        int64_t gen;

        save(&e);
        gen = file_int(e.path, "journalGeneration");
        /* Each snapshot is a new file (tmp + rename), written anew. */
        struct stat last = file_stat(e.path);
        unsigned snapshots = 0;
        for (i = 0; i < 100000 && snapshots < 3; i++) {
                snprintf(name, sizeof(name), "lock-%u", i);
                acquire(&e, name, "h");
                save(&e);
                if (i % 3 != 0) {
                        release(&e, name, "h");
                        save(&e);
                } else
                        kept++;
                struct stat st = file_stat(e.path);
                cr_assert_leq(file_stat(e.journal).st_size, MAX((off_t) STATE_JOURNAL_MIN_COMPACT, st.st_size),
                              "the journal is bounded");
                if (st.st_ino != last.st_ino || st.st_mtim.tv_sec != last.st_mtim.tv_sec ||
                    st.st_mtim.tv_nsec != last.st_mtim.tv_nsec) {
                        snapshots++;
                        last = st;
                }
        }
        cr_assert_geq(file_int(e.path, "journalGeneration"), gen + 3, "no new snapshot was written");
        cr_assert_gt(i, 1000, "a snapshot long before the journal outgrew it");
        cr_assert_eq(file_int(e.journal, "generation"), file_int(e.path, "journalGeneration"));

        /* Changes after the last snapshot are in its journal. */
        release(&e, "lock-0", "h");
        kept--;
        save(&e);

        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_eq(lock_table_count(e.m->locks), kept);
        cr_assert_null(get(&e, "lock-0"));
        snprintf(name, sizeof(name), "lock-%u", (i - 1) / 3 * 3);
        cr_assert_not_null(get(&e, name));
        env_free(&e);
}

/* Files removed, replaced or truncated behind photond's back are noticed before the next append: a write into a file
 * without a name would save nothing, one after a truncation nothing readable. The next write is a new snapshot;
 * while even that cannot be written, every write fails (the manager then holds the replies). */
Test(store, a_missing_file_is_written_again_or_fails) {
        Env e = env_new();
        char cmd[2048];

        acquire(&e, "a", "s1");
        save(&e);
        cr_assert_eq(unlink(e.path), 0);
        acquire(&e, "b", "s2");
        save(&e);
        cr_assert_eq(access(e.path, F_OK), 0, "state.json is there again");

        cr_assert_eq(truncate(e.journal, 0), 0);
        acquire(&e, "b2", "s2");
        save(&e);
        cr_assert_gt(file_int(e.journal, "generation"), 0, "state.journal starts with a header again");

        snprintf(cmd, sizeof(cmd), "rm -f '%s' && mkdir -p '%s/x'", e.journal, e.journal);
        cr_assert_eq(system(cmd), 0);
        acquire(&e, "c", "s3");
        cr_assert_lt(store_save_state(e.m->state_file), 0, "a journal that cannot be written is a failed write");
        cr_assert_lt(store_save_state(e.m->state_file), 0, "and stays one");
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e.journal);
        cr_assert_eq(system(cmd), 0);
        save(&e);

        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_eq(lock_table_count(e.m->locks), 4);
        env_free(&e);
}

/* Every write needs only the file descriptors the store took at its first write: with all others taken (clients
 * at RLIMIT_NOFILE), compactions and raised fencing marks still reach the disk. (Before, a raised mark after a
 * compaction opened the directory to sync it and got EMFILE, and so did every retry, holding every reply.) */
Test(store, writes_need_no_new_file_descriptor) {
        Env e = env_new();
        struct rlimit rl = { 128, 128 };
        char holder[1001];
        int hoard[128], n = 0, fd;
        uint64_t reserved;
        ino_t snapshot;

        memset(holder, 'h', sizeof(holder) - 1);
        holder[sizeof(holder) - 1] = '\0';
        save(&e);
        snapshot = file_stat(e.path).st_ino;
        reserved = lock_table_reserved_token(e.m->locks);

        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
        while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) {
                cr_assert_lt(n, 128);
                hoard[n++] = fd;
        }
        cr_assert_eq(errno, EMFILE);

        /* 1,000-byte holders: a compaction every 900 or so acquires (1 MiB of journal), a fencing block of 1024 used
         * up in between. */
        for (unsigned i = 0; i < 2200; i++) {
                acquire(&e, "busy", holder);
                cr_assert_eq(store_save_state(e.m->state_file), 0, "write %u failed at the file limit", i);
                release(&e, "busy", holder);
                cr_assert_eq(store_save_state(e.m->state_file), 0, "write %u failed at the file limit", i);
        }
        acquire(&e, "kept", "k");
        cr_assert_eq(store_save_state(e.m->state_file), 0);
        cr_assert_neq(file_stat(e.path).st_ino, snapshot, "compacted");
        cr_assert_gt(lock_table_reserved_token(e.m->locks), reserved + 2048, "fencing marks raised");
        cr_assert_lt(open("/dev/null", O_RDONLY | O_CLOEXEC), 0, "and the store gave back what it took");

        for (int i = 0; i < n; i++)
                safe_close(hoard[i]);
        reserved = lock_table_reserved_token(e.m->locks);
        env_restart(&e);
        cr_assert_not(e.lost);
        cr_assert_not_null(get(&e, "kept"));
        cr_assert_null(get(&e, "busy"));
        cr_assert_geq(lock_table_reserved_token(e.m->locks), reserved);
        env_free(&e);
}

/* What is on the subscriber's end of a socketpair now, without waiting; "" when nothing is. */
static const char* pending(int fd, char *buf, size_t size) {
        ssize_t n = recv(fd, buf, size - 1, MSG_DONTWAIT);

        if (n < 0) {
                cr_assert_eq(errno, EAGAIN, "recv: %m");
                n = 0;
        }
        buf[n] = '\0';
        return buf;
}

static void feed(Client *c, const char *text) {
        cr_assert_eq(client_feed(c, text, strlen(text)), 0, "%s", text);
}

/* Pushes are written while a publish is served (client_write_now()) only when nothing of the batch waits for the
 * disk and no request of the batch follows: the publish that reserves a new block of eventIds waits for the flush
 * that saves the mark (else a crash could hand out its eventId again), one inside the block leaves at once, and
 * publishes that came together leave together with the flush. */
Test(store, a_push_leaves_at_once_only_when_nothing_waits_for_the_disk) {
        Env e = env_new();
        int pub_fds[2], sub_fds[2];
        Client *pub, *sub;
        char buf[4096];
        int64_t mark;

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pub_fds), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sub_fds), 0);
        cr_assert_eq(client_new(e.m, pub_fds[0], &pub), 0);
        cr_assert_eq(client_new(e.m, sub_fds[0], &sub), 0);
        feed(sub, "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"c\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(sub_fds[1], buf, sizeof(buf)), "\"subscribed\":true"), "%s", buf);

        feed(pub, "{\"type\":\"publish\",\"id\":\"p1\",\"channel\":\"c\",\"message\":1}\n");
        cr_assert_str_eq(pending(sub_fds[1], buf, sizeof(buf)), "", "the first eventId waits for its mark");
        cr_assert_eq(manager_flush(e.m), 0);
        mark = journal_max(&e, "eventIdHighWater");
        cr_assert_gt(mark, 0, "the mark is saved");
        cr_assert(strstr(pending(sub_fds[1], buf, sizeof(buf)), "\"message\":1}"), "then the push leaves: %s", buf);

        feed(pub, "{\"type\":\"publish\",\"id\":\"p2\",\"channel\":\"c\",\"message\":2}\n");
        cr_assert(strstr(pending(sub_fds[1], buf, sizeof(buf)), "\"message\":2}"), "inside the block, at once: %s",
                  buf);
        cr_assert_not(sub->dirty, "nothing left for the flush");
        cr_assert(pub->dirty, "the publisher's result still waits for the flush");
        cr_assert_eq(manager_flush(e.m), 0);

        feed(pub, "{\"type\":\"publish\",\"id\":\"p3\",\"channel\":\"c\",\"message\":3}\n"
                  "{\"type\":\"publish\",\"id\":\"p4\",\"channel\":\"c\",\"message\":4}\n");
        cr_assert_str_eq(pending(sub_fds[1], buf, sizeof(buf)), "", "publishes that came together wait for the flush");
        cr_assert_eq(client_queued(sub), 2);
        cr_assert_eq(manager_flush(e.m), 0);
        pending(sub_fds[1], buf, sizeof(buf));
        cr_assert(strstr(buf, "\"message\":3}\n") && strstr(buf, "\"message\":4}\n"), "in one write: %s", buf);
        cr_assert_eq(journal_max(&e, "eventIdHighWater"), mark, "the block was not used up");

        /* Nor do they while output is held (a failed state write), nor the daemon's own events, whose files are
         * written at the end of the iteration. */
        e.m->state_unsaved = true;
        feed(pub, "{\"type\":\"publish\",\"id\":\"p5\",\"channel\":\"c\",\"message\":5}\n");
        cr_assert_str_eq(pending(sub_fds[1], buf, sizeof(buf)), "", "held output stays held");
        e.m->state_unsaved = false;
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(sub_fds[1], buf, sizeof(buf)), "\"message\":5}"), "%s", buf);
        cr_assert_eq(channels_publish(e.m->channels, "c", NULL, NULL, NULL), 0);
        cr_assert_str_eq(pending(sub_fds[1], buf, sizeof(buf)), "", "the daemon's events wait for the flush");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(sub_fds[1], buf, sizeof(buf)), "channel_message"), "%s", buf);

        /* A publisher with a result already queued: the flush (oldest first) still sends the push before the
         * publisher's results, as its place on the flush list is that of its newest output. */
        feed(pub, "{\"type\":\"publish\",\"id\":\"p6\",\"channel\":\"nobody\",\"message\":6}\n"
                  "{\"type\":\"publish\",\"id\":\"p7\",\"channel\":\"c\",\"message\":7}\n"
                  "{\"type\":\"ping\",\"id\":\"p8\"}\n");
        cr_assert(sub->dirty && pub->dirty);
        cr_assert_eq(e.m->dirty_clients, pub, "the publisher is the newest on the flush list");
        cr_assert_eq(manager_flush(e.m), 0);

        safe_close(pub_fds[1]);
        safe_close(sub_fds[1]);
        env_free(&e);
}

/* While the state cannot be written (here state.journal is a directory, which every way of writing it fails, even
 * for root), a reply that reports a change waits, and so does whatever its client is sent after it; replies to
 * requests that change nothing leave, and status says why. Once a write succeeds the held replies leave in order.
 * (Before, every reply to every client waited.) */
Test(store, while_the_state_cannot_be_written_only_changes_wait) {
        Env e = env_new();
        int a_fds[2], b_fds[2];
        Client *a, *b;
        char buf[4096], cmd[2048];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a_fds), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b_fds), 0);
        cr_assert_eq(client_new(e.m, a_fds[0], &a), 0);
        cr_assert_eq(client_new(e.m, b_fds[0], &b), 0);
        save(&e);
        snprintf(cmd, sizeof(cmd), "rm -f '%s' && mkdir -p '%s/x'", e.journal, e.journal);
        cr_assert_eq(system(cmd), 0);

        feed(a, "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"x\",\"sessionId\":\"a\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(e.m->state_unsaved);
        cr_assert_str_eq(pending(a_fds[1], buf, sizeof(buf)), "", "acquired before it was saved: %s", buf);

        feed(b, "{\"type\":\"ping\",\"id\":\"p\"}\n");
        feed(a, "{\"type\":\"ping\",\"id\":\"pa\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(b_fds[1], buf, sizeof(buf)), "\"pong\""), "a ping waited: %s", buf);
        cr_assert_str_eq(pending(a_fds[1], buf, sizeof(buf)), "", "a reply overtook a held one: %s", buf);

        feed(b, "{\"type\":\"status\",\"id\":\"s\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        pending(b_fds[1], buf, sizeof(buf));
        cr_assert(strstr(buf, "\"stateWrite\":{\"ok\":false,\"error\":\"Is a directory\",\"since\":"), "%s", buf);

        /* Another change retries at once; it succeeds now, and everything leaves in order. */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e.journal);
        cr_assert_eq(system(cmd), 0);
        feed(b, "{\"type\":\"lock\",\"id\":\"l2\",\"lockName\":\"y\",\"sessionId\":\"b\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert_not(e.m->state_unsaved);
        pending(a_fds[1], buf, sizeof(buf));
        cr_assert(strstr(buf, "\"id\":\"l\"") && strstr(buf, "\"id\":\"pa\"") &&
                  strstr(buf, "\"id\":\"l\"") < strstr(buf, "\"id\":\"pa\""), "%s", buf);
        cr_assert(strstr(pending(b_fds[1], buf, sizeof(buf)), "\"acquired\":true"), "%s", buf);
        feed(b, "{\"type\":\"status\",\"id\":\"s2\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(b_fds[1], buf, sizeof(buf)), "\"stateWrite\":{\"ok\":true}"), "%s", buf);

        safe_close(a_fds[1]);
        safe_close(b_fds[1]);
        env_free(&e);
}

/* eventIds are reserved in blocks whose mark must be on disk before an id of the block is acknowledged. While
 * the write that reserves a block fails, a publish inside that block (by a client that did not cross the mark)
 * reports an id that a crash would issue again: its reply waits for the write too. */
Test(store, event_ids_of_an_unsaved_reservation_wait_for_it) {
        Env e = env_new();
        int p_fds[2], q_fds[2];
        Client *p, *q;
        char buf[4096], cmd[2048];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p_fds), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, q_fds), 0);
        cr_assert_eq(client_new(e.m, p_fds[0], &p), 0);
        cr_assert_eq(client_new(e.m, q_fds[0], &q), 0);
        save(&e);
        snprintf(cmd, sizeof(cmd), "rm -f '%s' && mkdir -p '%s/x'", e.journal, e.journal);
        cr_assert_eq(system(cmd), 0);

        /* The first publish reserves a block: its write fails, its reply waits. */
        feed(p, "{\"type\":\"publish\",\"id\":\"p1\",\"channel\":\"c\",\"message\":1}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(e.m->state_unsaved);
        cr_assert_str_eq(pending(p_fds[1], buf, sizeof(buf)), "", "an id of an unsaved block was acknowledged: %s",
                         buf);

        /* Another client's publish inside that block: as unsaved. */
        feed(q, "{\"type\":\"publish\",\"id\":\"q1\",\"channel\":\"c\",\"message\":2}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert_str_eq(pending(q_fds[1], buf, sizeof(buf)), "", "an id of an unsaved block was acknowledged: %s",
                         buf);

        /* Once the block is on disk both leave, and later publishes in it leave at once. */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e.journal);
        cr_assert_eq(system(cmd), 0);
        feed(q, "{\"type\":\"publish\",\"id\":\"q2\",\"channel\":\"c\",\"message\":3}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert_not(e.m->state_unsaved);
        cr_assert(strstr(pending(p_fds[1], buf, sizeof(buf)), "\"id\":\"p1\""), "%s", buf);
        pending(q_fds[1], buf, sizeof(buf));
        cr_assert(strstr(buf, "\"id\":\"q1\"") && strstr(buf, "\"id\":\"q2\""), "%s", buf);

        safe_close(p_fds[1]);
        safe_close(q_fds[1]);
        env_free(&e);
}

/* A waiting acquire granted by another client's unlock while the state cannot be written: the grant reports a
 * change (a new holder, a new token) and waits like the unlock's own reply, though it is queued to a client that
 * changed nothing itself. */
Test(store, a_lock_handed_to_a_waiter_is_not_acknowledged_before_it_is_saved) {
        Env e = env_new();
        int a_fds[2], w_fds[2];
        Client *a, *w;
        char buf[4096], cmd[2048];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a_fds), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, w_fds), 0);
        cr_assert_eq(client_new(e.m, a_fds[0], &a), 0);
        cr_assert_eq(client_new(e.m, w_fds[0], &w), 0);
        feed(a, "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"x\",\"sessionId\":\"a\"}\n");
        feed(w, "{\"type\":\"lock\",\"id\":\"lw\",\"lockName\":\"x\",\"sessionId\":\"w\",\"lockWait\":60000}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(a_fds[1], buf, sizeof(buf)), "\"acquired\":true"), "%s", buf);
        cr_assert_str_eq(pending(w_fds[1], buf, sizeof(buf)), "", "the waiter waits: %s", buf);

        snprintf(cmd, sizeof(cmd), "rm -f '%s' && mkdir -p '%s/x'", e.journal, e.journal);
        cr_assert_eq(system(cmd), 0);
        /* The waiter's own last request changed nothing. */
        feed(w, "{\"type\":\"ping\",\"id\":\"p\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(w_fds[1], buf, sizeof(buf)), "\"pong\""), "%s", buf);
        feed(a, "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"x\",\"sessionId\":\"a\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(e.m->state_unsaved);
        cr_assert_str_eq(pending(w_fds[1], buf, sizeof(buf)), "", "handed over before it was saved: %s", buf);
        cr_assert_str_eq(pending(a_fds[1], buf, sizeof(buf)), "", "released before it was saved: %s", buf);

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e.journal);
        cr_assert_eq(system(cmd), 0);
        manager_state_changed(e.m);
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert(strstr(pending(w_fds[1], buf, sizeof(buf)), "\"holder\":\"w\""), "%s", buf);
        cr_assert(strstr(pending(a_fds[1], buf, sizeof(buf)), "\"released\":true"), "%s", buf);

        safe_close(a_fds[1]);
        safe_close(w_fds[1]);
        env_free(&e);
}

/* Two publishers served in one batch of the loop: the first's publish is not written at once, because the
 * second's is still to be served; the subscriber gets both pushes in one write. Its end of the connection is a
 * SOCK_SEQPACKET socket, so every write() is one record. */
Test(store, publishes_of_one_batch_leave_in_one_write) {
        Env e = env_new();
        int a_fds[2], b_fds[2], sub_fds[2];
        Client *a, *b, *sub;
        const char *line;
        char buf[4096];
        ssize_t n;

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a_fds), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b_fds), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sub_fds), 0);
        cr_assert_eq(client_new(e.m, a_fds[0], &a), 0);
        cr_assert_eq(client_new(e.m, b_fds[0], &b), 0);
        cr_assert_eq(client_new(e.m, sub_fds[0], &sub), 0);
        feed(sub, "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"c\"}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert_gt(recv(sub_fds[1], buf, sizeof(buf), MSG_DONTWAIT), 0);

        /* The first publish reserves a block of eventIds, whose write would hold any push anyway. */
        feed(a, "{\"type\":\"publish\",\"id\":\"p0\",\"channel\":\"c\",\"message\":0}\n");
        cr_assert_eq(manager_flush(e.m), 0);
        cr_assert_gt(recv(sub_fds[1], buf, sizeof(buf), MSG_DONTWAIT), 0);

        line = "{\"type\":\"publish\",\"id\":\"p\",\"channel\":\"c\",\"message\":1}\n";
        cr_assert_eq(write(a_fds[1], line, strlen(line)), (ssize_t) strlen(line));
        cr_assert_eq(write(b_fds[1], line, strlen(line)), (ssize_t) strlen(line));
        /* One loop iteration serves both (the clients' epoll set is one source) and flushes. */
        cr_assert_geq(sd_event_run(e.m->event, 1000 * 1000), 0);

        n = recv(sub_fds[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
        cr_assert_gt(n, 0);
        buf[n] = '\0';
        cr_assert(strstr(buf, "\"message\":1}\n") && strstr(strstr(buf, "\"message\":1}\n") + 1, "\"message\":1}\n"),
                  "both pushes in the first write: %s", buf);
        cr_assert_lt(recv(sub_fds[1], buf, sizeof(buf), MSG_DONTWAIT), 0, "and no second write");

        safe_close(a_fds[1]);
        safe_close(b_fds[1]);
        safe_close(sub_fds[1]);
        env_free(&e);
}
