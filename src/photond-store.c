/* SPDX-License-Identifier: MIT */

/* photond's own state (lock table, fencing and eventId high-water marks) in one small JSON file, written atomically
 * at the end of every loop iteration that changed it (group commit, DECISIONS.md).
 *
 * Durability is split by what a power loss would break. Lock-table changes are written without fsync: they must
 * survive a photond crash (the kernel has the data), and a power loss ends every process that held a lock anyway.
 * Syncing them would put an fsync on the lock path: an unsynced write costs about 2 us here, one with the file and
 * directory fsync'ed about 340 us. The high-water marks are different: a fencing token or eventId handed out twice
 * is a broken promise to resources outside this machine's memory. So a write that raises a mark (once per 1024
 * tokens, at most once per 10 s of publishing) is durable, and leaves no older copy behind that an unsynced later
 * write could bring back (see state_file_write()). After a power loss state.json is then either a version with
 * marks at least as high as any token or id handed out, or unreadable, which counts as lost state (tokens and ids
 * restart above the wall clock). */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fd-util.h"
#include "json-util.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-store.h"

#define STATE_FILE_MAX (64 * 1024 * 1024)

static int state_path(Manager *m, char **ret) {
        return asprintf(ret, "%s/state.json", m->state_dir) < 0 ? -ENOMEM : 0;
}

static void store_keep_aside(const char *path) {
        _cleanup_free_ char *aside = NULL;

        if (asprintf(&aside, "%s.corrupt-%lld", path, (long long) time(NULL)) < 0)
                return;
        if (rename(path, aside) < 0)
                log_warning_errno(errno, "Failed to move unreadable %s aside: %m", path);
        else
                log_warning("Kept the unreadable state file as %s.", aside);
}

int store_load_state(Manager *m) {
        _cleanup_(json_object_putp) struct json_object *state = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL;
        const char *jerr = NULL;
        int64_t version;
        size_t size;
        int r;

        r = state_path(m, &path);
        if (r < 0)
                return r;

        r = read_full_file(path, STATE_FILE_MAX, &text, &size);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                log_error_errno(r, "Failed to read %s, starting with no locks: %m", path);
                goto lost;
        }

        if (json_parse(text, size, &state, &jerr) < 0 || !json_object_is_type(state, json_type_object)) {
                log_error("State file %s is not a JSON object (%s), starting with no locks.", path,
                          jerr ?: "wrong type");
                goto lost;
        }
        if (json_get_int64(state, "version", false, &version) < 0 || version != STATE_FILE_VERSION) {
                log_error("State file %s has an unknown version, starting with no locks.", path);
                goto lost;
        }

        r = channels_load_state(m->channels, state);
        if (r < 0) {
                log_error_errno(r, "Failed to load channel state from %s: %m", path);
                goto lost;
        }
        r = lock_table_load_state(m->locks, state);
        if (r < 0) {
                log_error_errno(r, "Failed to load the lock table from %s: %m", path);
                goto lost;
        }
        return 0;

lost:
        store_keep_aside(path);
        m->state_lost = true;
        return 0;
}

/* state.json is rewritten on every lock change, so this write is the lock table's main cost. Two files stay open,
 * state.json and state.json.tmp: a write goes into the tmp one, which is then exchanged with state.json
 * (renameat2(RENAME_EXCHANGE)). For readers and for a crash of photond that is as atomic as tmp + rename (the name
 * state.json always holds a whole file), but no file is created, unlinked or opened per write, and ext4 does not
 * start writeback as it does on a rename over an existing file (auto_da_alloc). The previous state stays in
 * state.json.tmp until the next write. File systems without RENAME_EXCHANGE (overlayfs) get tmp + rename. */
struct StateFile {
        char *path, *tmp_path;
        int fd[2];
        off_t size[2];
        unsigned named;         /* fd[named] is state.json (or -EBADF before the first write), the other the tmp */
        bool plain;             /* no RENAME_EXCHANGE here: write_file_atomic() every time */

        /* the high-water marks of the last durable write; a write that raises one is made durable */
        bool synced;
        int64_t synced_fencing, synced_event_id;
};

StateFile* state_file_free(StateFile *f) {
        if (!f)
                return NULL;
        safe_close(f->fd[0]);
        safe_close(f->fd[1]);
        free(f->path);
        free(f->tmp_path);
        return mfree(f);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(StateFile*, state_file_free);

static int state_file_open_one(const char *path, int flags, int *ret_fd, off_t *ret_size) {
        struct stat st;
        int fd;

        fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | flags, 0600);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                safe_close(fd);
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                safe_close(fd);
                return -EBADFD;
        }
        *ret_fd = fd;
        *ret_size = st.st_size;
        return 0;
}

static int state_file_new(const char *path, StateFile **ret) {
        _cleanup_(state_file_freep) StateFile *f = NULL;
        int r;

        f = new0(StateFile, 1);
        if (!f)
                return -ENOMEM;
        f->fd[0] = f->fd[1] = -EBADF;
        f->path = strdup(path);
        if (!f->path || asprintf(&f->tmp_path, "%s.tmp", path) < 0)
                return -ENOMEM;

        r = state_file_open_one(f->path, 0, &f->fd[0], &f->size[0]);
        if (r < 0 && r != -ENOENT)
                return r;
        r = state_file_open_one(f->tmp_path, O_CREAT, &f->fd[1], &f->size[1]);
        if (r < 0)
                return r;
        f->named = 0;
        *ret = TAKE_PTR(f);
        return 0;
}

/* sync: make this write durable. Unsynced writes go into the file that held an older state, in place, so a power
 * loss could leave that older content under the name state.json; for that reason a durable write also empties the
 * other file (durably), and every state found on disk afterwards is this one or a later one. */
static int state_file_write(StateFile *f, const char *text, size_t len, bool sync) {
        unsigned w = !f->named;
        int r;

        if (f->plain)
                return write_file_atomic(f->path, text, len, 0600, sync);

        for (size_t done = 0; done < len;) {
                ssize_t n = pwrite(f->fd[w], text + done, len - done, (off_t) done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += n;
        }
        if ((off_t) len < f->size[w] && ftruncate(f->fd[w], (off_t) len) < 0)
                return -errno;
        f->size[w] = (off_t) len;
        if (sync && fsync(f->fd[w]) < 0)
                return -errno;

        if (f->fd[f->named] < 0) {
                /* The first state.json: nothing to exchange with. The tmp becomes it, and a new (empty) tmp is
                 * made. */
                if (rename(f->tmp_path, f->path) < 0)
                        return -errno;
                if (sync) {
                        r = fsync_parent_directory(f->path);
                        if (r < 0)
                                return r;
                }
                f->named = w;
                return state_file_open_one(f->tmp_path, O_CREAT, &f->fd[!w], &f->size[!w]);
        }

        if (renameat2(AT_FDCWD, f->tmp_path, AT_FDCWD, f->path, RENAME_EXCHANGE) < 0) {
                r = -errno;
                if (r != -EINVAL && r != -ENOSYS && r != -EOPNOTSUPP)
                        return r;
                f->plain = true;
                (void) unlink(f->tmp_path);
                f->fd[0] = safe_close(f->fd[0]);
                f->fd[1] = safe_close(f->fd[1]);
                return write_file_atomic(f->path, text, len, 0600, sync);
        }
        f->named = w;

        if (sync) {
                r = fsync_parent_directory(f->path);
                if (r < 0)
                        return r;
                if (ftruncate(f->fd[!w], 0) < 0 || fsync(f->fd[!w]) < 0)
                        return -errno;
                f->size[!w] = 0;
        }
        return 0;
}

int store_save_state(Manager *m) {
        _cleanup_(json_object_putp) struct json_object *state = NULL;
        _cleanup_free_ char *path = NULL;
        int64_t fencing = 0, event_id = 0;
        const char *text;
        StateFile *f;
        bool sync;
        size_t len;
        int r;

        state = json_object_new_object();
        if (!state)
                return -ENOMEM;
        r = json_add_int64(state, "version", STATE_FILE_VERSION);
        if (r < 0)
                return r;
        r = channels_save_state(m->channels, state);
        if (r < 0)
                return r;
        r = lock_table_save_state(m->locks, state);
        if (r < 0)
                return r;

        r = state_path(m, &path);
        if (r < 0)
                return r;

        text = json_object_to_json_string_length(state, JSON_FORMAT_FLAGS, &len);
        if (!text)
                return -ENOMEM;

        /* Absent marks read as 0. */
        (void) json_get_int64(state, "fencingTokenReserved", false, &fencing);
        (void) json_get_int64(state, "eventIdHighWater", false, &event_id);

        if (!m->state_file)
                (void) state_file_new(path, &m->state_file);
        f = m->state_file;
        if (f) {
                /* The first write of a StateFile is durable too: the tmp it found may hold an older state. */
                sync = !f->synced || fencing > f->synced_fencing || event_id > f->synced_event_id;
                r = state_file_write(f, text, len, sync);
                if (r >= 0) {
                        if (sync) {
                                f->synced = true;
                                f->synced_fencing = fencing;
                                f->synced_event_id = event_id;
                        }
                        return 0;
                }
                /* Someone removed or replaced one of the files: this write the plain way, then open afresh. */
                m->state_file = state_file_free(m->state_file);
        }
        return write_file_atomic(path, text, len, 0600, /* sync= */ true);
}
