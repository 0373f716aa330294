/* SPDX-License-Identifier: MIT */

/* store_load_state(): state.json and state.journal as a crash, a full disk or another program left them. Input:
 * state.json's bytes, a NUL, state.journal's bytes (no NUL: state.json only). What loads is then written (a new
 * snapshot) and loaded again: the same number of locks must come back, and the state must not be lost. The
 * StateFile is built on the cores as manager_new() does; the lock table still wants a Manager, a minimal one as in
 * test-lock.c. */

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "fd-util.h"
#include "fuzz.h"
#include "photond-channel.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-store.h"

static int noop_defer(sd_event_source *s, void *userdata) {
        return 0;
}

static void clean_dir(const char *path);

static char state_dir[] = "/tmp/photond-fuzz-state-XXXXXX";

static void remove_dir(void) {
        clean_dir(state_dir);
        (void) rmdir(state_dir);
}

/* Made once (LeakSanitizer sees them still reachable at exit). */
static Manager* fuzz_manager(void) {
        static Manager manager;

        if (!manager.event) {
                limits_reset();
                assert(mkdtemp(state_dir));
                assert(atexit(remove_dir) == 0);
                manager.state_dir = state_dir;
                assert(sd_event_new(&manager.event) >= 0);
                assert(sd_event_add_defer(manager.event, &manager.flush_event_source, noop_defer, NULL) >= 0);
                assert(sd_event_source_set_enabled(manager.flush_event_source, SD_EVENT_OFF) >= 0);
        }
        return &manager;
}

static void clean_dir(const char *path) {
        DIR *d = opendir(path);
        struct dirent *de;

        assert(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' || (de->d_name[1] && de->d_name[1] != '.'))
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
}

static void write_file(const char *dir, const char *name, const uint8_t *data, size_t size) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;

        assert(asprintf(&path, "%s/%s", dir, name) > 0);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert(fd >= 0);
        assert(write(fd, data, size) == (ssize_t) size);
}

/* 1: the state was lost. */
static int manager_load(Manager *m) {
        int r;

        if (channels_new(NULL, &m->channels) < 0 ||
            lock_table_new(m->event, &(LockTableHooks) { .state_lost = &m->state_lost }, &m->locks) < 0 ||
            state_file_new(m->state_dir, m->channels, m->locks, &m->state_file) < 0)
                return -ENOMEM;
        r = store_load_state(m->state_file);
        /* As manager_startup() does: the lock table reads it. */
        m->state_lost = r > 0;
        return r;
}

static void manager_unload(Manager *m) {
        m->state_file = state_file_free(m->state_file);
        m->locks = lock_table_free(m->locks);
        m->channels = channels_free(m->channels);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Manager *m = fuzz_manager();
        const uint8_t *part;
        size_t len;
        unsigned n_locks;

        fuzz_setup_logging();
        clean_dir(m->state_dir);

        if (fuzz_next_part(&data, &size, '\0', &part, &len))
                write_file(m->state_dir, "state.json", part, len);
        if (data)
                write_file(m->state_dir, "state.journal", data, size);

        if (manager_load(m) < 0)
                goto finish;
        n_locks = lock_table_count(m->locks);
        if (store_save_state(m->state_file) < 0)
                goto finish;
        manager_unload(m);

        assert(manager_load(m) == 0);
        assert(lock_table_count(m->locks) == n_locks);

finish:
        manager_unload(m);
        return 0;
}
