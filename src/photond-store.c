/* SPDX-License-Identifier: MIT */

/* photond's own state (lock table, fencing and eventId high-water marks), written at the end of every loop
 * iteration that changed it, before any reply of that iteration leaves (group commit, DECISIONS.md).
 *
 * A write costs what changed, not what is held: state.journal gets one line per lock changed and per mark raised,
 * in one write(). state.json, the snapshot, is rewritten only when the journal would grow past the larger of
 * STATE_JOURNAL_MIN_COMPACT and the snapshot's own size, so its O(locks) cost is spread over at least as many bytes
 * of appends. (Rewriting the whole table every iteration took the lock path from 35,000 to 160 pairs/s with 10,000
 * locks held.) A snapshot names its generation, and so does its journal's first line; a journal is replayed only
 * over the snapshot of its own generation. A new snapshot is written under a new generation (tmp + rename), then a
 * fresh journal (tmp + rename): a crash between the two leaves the old journal, which its generation marks stale.
 *
 * Crashes (kill -9): the kernel keeps every write, and each one is done before the replies it covers leave. An
 * append is one write() at the end of the file; were one cut short anyway, its last line lacks the newline and is
 * ignored (its replies never left). After a write fails, the journal is left behind: the next write is a snapshot
 * (a full disk aside, see below).
 *
 * Power loss: lock-table changes are not synced. They must survive a photond crash, and a power loss ends every
 * process that held a lock anyway; an fsync would put a few hundred us on the lock path. The high-water marks are
 * different: a fencing token or eventId handed out twice is a broken promise to resources outside this machine's
 * memory. Marks only rise, and loading takes the greatest value in either file, whatever its generation. So:
 * - a write that raises a mark is fdatasync'ed in the journal, and the first such write in a journal's life also
 *   syncs the directory (the journal's name);
 * - a fresh journal, whose first line carries the current marks, is synced before it replaces the old one, so
 *   whichever journal a power loss leaves under the name has marks at least as high as any synced before.
 * After a power loss the state then has marks at least as high as any token or id handed out, or is unreadable,
 * which counts as lost state (tokens and ids restart above the wall clock).
 *
 * A full disk: the journal that filled it is freed only by a compaction, and a compaction writes the new files
 * before it removes the old ones. So state.reserve, a preallocated file the size of the last snapshot plus
 * STATE_RESERVE_MIN, holds room for one: a write that fails with ENOSPC removes it and compacts, and the next
 * compaction that succeeds makes it again. When even that fails (the disk is full of something else), what the
 * failed append wrote is cut off again and the journal kept: the retry appends the same changes, which needs room
 * for them only, not for a snapshot of every lock. */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fd-util.h"
#include "json-util.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-lock.h"
#include "photond-store.h"

#define STATE_FILE_MAX (64 * 1024 * 1024)
/* A journal is compacted once it outgrows the snapshot: twice the snapshot's limit, with room for the last batch. */
#define STATE_JOURNAL_MAX (3 * STATE_FILE_MAX)
#define STATE_JOURNAL_VERSION 1

/* File descriptors a write may need at once besides the directory's: the old snapshot, the new one, the journal.
 * The store holds that many from its first use on (files it keeps open, and spares for the rest), so a write never
 * needs a descriptor the clients could have taken: at RLIMIT_NOFILE every open() would fail with EMFILE, and every
 * reply waited for the write. */
#define STATE_FILE_FDS 3

struct StateFile {
        Channels *channels;     /* what the state holds: the channels' eventId mark and the lock table */
        LockTable *locks;
        char *dir;              /* the state directory, for logs and to open it */
        char *path, *journal_path;      /* for logs and loading */
        int dir_fd;             /* the state directory: every file is opened, renamed and synced through it */
        int spare_fds[STATE_FILE_FDS];  /* slots held for the files opened during a write */
        unsigned n_spare_fds;
        int snapshot_fd;        /* the state.json last written (to notice it removed or replaced), or -EBADF */
        int journal_fd;         /* state.journal, appended to; -EBADF: the next write is a snapshot */
        uint64_t generation;    /* of the last snapshot written, or the greatest one found when loading */
        off_t snapshot_size, journal_size;
        bool journal_name_durable;      /* the directory was synced since state.journal got its name */
        int64_t written_fencing, written_event_id;      /* the marks state.journal holds */
        int64_t synced_fencing, synced_event_id;        /* the marks durable on disk */
        char *buf;              /* the lines of one append */
        size_t buf_alloc;
};

#define SNAPSHOT_NAME "state.json"
#define SNAPSHOT_TMP_NAME "state.json.tmp"
#define JOURNAL_NAME "state.journal"
#define JOURNAL_TMP_NAME "state.journal.tmp"
#define RESERVE_NAME "state.reserve"

StateFile* state_file_free(StateFile *f) {
        if (!f)
                return NULL;
        for (unsigned i = 0; i < f->n_spare_fds; i++)
                safe_close(f->spare_fds[i]);
        safe_close(f->dir_fd);
        safe_close(f->snapshot_fd);
        safe_close(f->journal_fd);
        free(f->dir);
        free(f->path);
        free(f->journal_path);
        free(f->buf);
        return mfree(f);
}

int state_file_new(const char *dir, Channels *channels, LockTable *locks, StateFile **ret) {
        _cleanup_(state_file_freep) StateFile *f = NULL;

        assert(dir);
        assert(channels);
        assert(locks);
        assert(ret);

        f = new(StateFile, 1);
        if (!f)
                return -ENOMEM;
        *f = (StateFile) {
                .channels = channels,
                .locks = locks,
                .dir_fd = -EBADF,
                .snapshot_fd = -EBADF,
                .journal_fd = -EBADF,
        };
        f->dir = strdup(dir);
        if (!f->dir ||
            asprintf(&f->path, "%s/" SNAPSHOT_NAME, dir) < 0 ||
            asprintf(&f->journal_path, "%s/" JOURNAL_NAME, dir) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(f);
        return 0;
}

/* Tops the spares up, so that they and the open files hold STATE_FILE_FDS slots. */
static void state_file_fill_spares(StateFile *f) {
        while (f->dir_fd >= 0 &&
               f->n_spare_fds + (f->snapshot_fd >= 0) + (f->journal_fd >= 0) < STATE_FILE_FDS) {
                int fd = fcntl(f->dir_fd, F_DUPFD_CLOEXEC, 3);

                if (fd < 0)
                        return;
                f->spare_fds[f->n_spare_fds++] = fd;
        }
}

/* Closes fd, no longer in f; its slot becomes a spare at once. */
static void state_file_close(StateFile *f, int fd) {
        safe_close(fd);
        state_file_fill_spares(f);
}

static void state_file_close_journal(StateFile *f) {
        int fd = f->journal_fd;

        f->journal_fd = -EBADF;
        state_file_close(f, fd);
}

/* Opens name in the state directory in the slot of a spare. */
static int state_file_openat(StateFile *f, const char *name, int flags) {
        int fd;

        if (f->n_spare_fds > 0) {
                f->n_spare_fds--;
                safe_close(f->spare_fds[f->n_spare_fds]);
        }
        fd = openat(f->dir_fd, name, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                fd = -errno;
                state_file_fill_spares(f);
        }
        return fd;
}

/* The state directory, opened at the first load or save (and again after it was removed: see
 * store_save_state()). */
static int state_file_open_dir(StateFile *f) {
        if (f->dir_fd >= 0)
                return 0;
        f->dir_fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (f->dir_fd < 0)
                return -errno;
        state_file_fill_spares(f);
        return 0;
}

/* ---- loading ---- */

static void store_keep_aside(const char *path) {
        _cleanup_free_ char *aside = NULL;

        if (asprintf(&aside, "%s.corrupt-%lld", path, (long long) time(NULL)) < 0)
                return;
        if (rename(path, aside) < 0)
                log_warning_errno(errno, "Failed to move unreadable %s aside: %m", path);
        else
                log_warning("Kept the unreadable state file as %s.", aside);
}

/* Replays state.journal: every line's marks, and with have_snapshot its lock changes too when its generation is
 * the snapshot's (gen). *ret_found: there is a journal. Returns -EBADMSG (logged) when it cannot be read or a line
 * other than the last is not a valid record. */
static int store_load_journal(StateFile *f, bool have_snapshot, uint64_t gen, bool *ret_found) {
        _cleanup_free_ char *text = NULL;
        bool replay = false;
        unsigned line = 0;
        size_t size;
        int r;

        *ret_found = false;
        r = read_full_file(f->journal_path, STATE_JOURNAL_MAX, &text, &size);
        if (r == -ENOENT)
                return 0;
        *ret_found = true;
        if (r < 0) {
                log_error_errno(r, "Failed to read %s: %m", f->journal_path);
                return -EBADMSG;
        }

        for (const char *p = text, *end = text + size; p < end;) {
                _cleanup_(json_object_putp) struct json_object *record = NULL;
                const char *nl = memchr(p, '\n', end - p);

                if (!nl) {
                        /* The last append was cut short by a crash: its replies never left. */
                        log_notice("Ignoring the incomplete last line of %s.", f->journal_path);
                        break;
                }
                line++;
                if (json_parse(p, nl - p, &record, NULL) < 0 || !json_object_is_type(record, json_type_object)) {
                        log_error("Line %u of %s is not a JSON object.", line, f->journal_path);
                        return -EBADMSG;
                }
                if (line == 1) {
                        int64_t version, g;

                        if (json_get_int64(record, "version", false, &version) < 0 ||
                            version != STATE_JOURNAL_VERSION ||
                            json_get_int64(record, "generation", false, &g) < 0 || g <= 0) {
                                log_error("%s does not start with a known header.", f->journal_path);
                                return -EBADMSG;
                        }
                        replay = have_snapshot && (uint64_t) g == gen;
                        if (have_snapshot && !replay)
                                log_notice("%s belongs to another state.json (generation %" PRIi64 ", not %" PRIu64
                                           "): only its high-water marks are taken.", f->journal_path, g, gen);
                        f->generation = MAX(f->generation, (uint64_t) g);
                }

                r = channels_load_state(f->channels, record);
                if (r >= 0)
                        r = lock_table_load_record(f->locks, record, replay && line > 1);
                if (r < 0) {
                        log_error_errno(r, "Line %u of %s is not a valid record: %m", line, f->journal_path);
                        return -EBADMSG;
                }
                p = nl + 1;
        }
        return 0;
}

int store_load_state(StateFile *f) {
        _cleanup_(json_object_putp) struct json_object *state = NULL;
        _cleanup_free_ char *text = NULL;
        const char *jerr = NULL;
        int64_t version, gen = 0;
        bool found;
        size_t size;
        int r;

        assert(f);

        r = state_file_open_dir(f);
        if (r < 0)
                return r;

        r = read_full_file(f->path, STATE_FILE_MAX, &text, &size);
        if (r == -ENOENT) {
                r = store_load_journal(f, /* have_snapshot= */ false, 0, &found);
                if (r < 0)
                        store_keep_aside(f->journal_path);
                if (!found)
                        return 0;
                /* Its changes continued a snapshot that is gone. */
                log_error("%s is missing but %s is there, starting with no locks.", f->path, f->journal_path);
                return 1;
        }
        if (r < 0) {
                log_error_errno(r, "Failed to read %s, starting with no locks: %m", f->path);
                goto lost;
        }

        if (json_parse(text, size, &state, &jerr) < 0 || !json_object_is_type(state, json_type_object)) {
                log_error("State file %s is not a JSON object (%s), starting with no locks.", f->path,
                          jerr ?: "wrong type");
                goto lost;
        }
        if (json_get_int64(state, "version", false, &version) < 0 || version != STATE_FILE_VERSION) {
                log_error("State file %s has an unknown version, starting with no locks.", f->path);
                goto lost;
        }
        r = json_get_int64(state, "journalGeneration", false, &gen);
        if ((r < 0 && r != -ENOENT) || gen < 0) {
                log_error("State file %s has an invalid journalGeneration, starting with no locks.", f->path);
                goto lost;
        }

        r = channels_load_state(f->channels, state);
        if (r < 0) {
                log_error_errno(r, "Failed to load channel state from %s: %m", f->path);
                goto lost;
        }
        r = lock_table_load_state(f->locks, state);
        if (r < 0) {
                log_error_errno(r, "Failed to load the lock table from %s: %m", f->path);
                goto lost;
        }
        f->generation = (uint64_t) gen;
        f->snapshot_size = (off_t) size;

        r = store_load_journal(f, /* have_snapshot= */ true, (uint64_t) gen, &found);
        if (r < 0) {
                /* All or nothing, as for state.json: a lock table with some changes missing is not one we had. */
                log_error("Starting with no locks: %s cannot be replayed.", f->journal_path);
                lock_table_reset(f->locks);
                store_keep_aside(f->journal_path);
                return 1;
        }
        return 0;

lost:
        store_keep_aside(f->path);
        /* Its marks still count (they only rise); its lock changes belonged to the snapshot lost. */
        (void) store_load_journal(f, /* have_snapshot= */ false, 0, &found);
        return 1;
}

/* ---- writing ---- */

static int loop_write(int fd, const char *p, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= n;
        }
        return 0;
}

/* Writes data into tmp_name and renames it to name. With sync the data is durable before the rename. Returns the
 * file, still open (flags: O_APPEND for the journal). */
static int write_and_rename(StateFile *f, const char *tmp_name, const char *name, const char *data, size_t len,
                            int flags, bool sync, int *ret_fd) {
        int fd, r;

        fd = state_file_openat(f, tmp_name, O_WRONLY | O_CREAT | O_TRUNC | flags);
        if (fd < 0)
                return fd;
        r = loop_write(fd, data, len);
        if (r >= 0 && sync && fdatasync(fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(f->dir_fd, tmp_name, f->dir_fd, name) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(f->dir_fd, tmp_name, 0);
                state_file_close(f, fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

/* Makes the names in the state directory durable. */
static int state_file_sync_dir(StateFile *f) {
        return fsync(f->dir_fd) < 0 ? -errno : 0;
}

/* Appends json's text and a newline to f->buf at *len. */
static int buf_add_line(StateFile *f, size_t *len, struct json_object *json) {
        const char *text;
        size_t n;

        text = json_object_to_json_string_length(json, JSON_FORMAT_FLAGS, &n);
        if (!text)
                return -ENOMEM;
        if (*len + n + 1 > f->buf_alloc) {
                size_t na = MAX(f->buf_alloc * 2, *len + n + 1);
                char *b = realloc(f->buf, na);

                if (!b)
                        return -ENOMEM;
                f->buf = b;
                f->buf_alloc = na;
        }
        memcpy(f->buf + *len, text, n);
        f->buf[*len + n] = '\n';
        *len += n + 1;
        return 0;
}

static char* put_mark(char *p, const char *key, int64_t value) {
        p = stpcpy(p, "{\"");
        p = stpcpy(p, key);
        p = stpcpy(p, "\":");
        p = json_put_int64(p, value);
        return stpcpy(p, "}\n");
}

#define MARK_SIZE_MAX (sizeof("{\"fencingTokenReserved\":}\n") + JSON_INT64_SIZE_MAX)

static bool file_is_gone(int fd) {
        struct stat st;

        return fd < 0 || fstat(fd, &st) < 0 || st.st_nlink == 0;
}

/* Removed, or written or truncated by someone else: appending to it would save nothing, or nothing readable. */
static bool journal_is_not_ours(StateFile *f) {
        struct stat st;

        return fstat(f->journal_fd, &st) < 0 || st.st_nlink == 0 || st.st_size != f->journal_size;
}

/* Appends this iteration's changes to state.journal. Returns 1 when done, 0 when the journal is due for a new
 * snapshot, < 0 on failure: the journal is then not to be appended to again, unless *ret_intact says that what
 * was written of the changes was cut off again. */
static int store_append(StateFile *f, int64_t fencing, int64_t event_id, bool sync, bool *ret_intact) {
        size_t max, len;
        char *p;
        int r;

        /* The records are printed by hand, not through a json-c tree: this runs in every iteration that changes a
         * lock, between its requests and its replies, where the tree cost as much as the write. */
        r = lock_table_changes_size_max(f->locks, &max);
        if (r < 0)
                return r;
        max += 2 * MARK_SIZE_MAX;
        if (max > f->buf_alloc) {
                char *b = realloc(f->buf, MAX(max, f->buf_alloc * 2));

                if (!b)
                        return -ENOMEM;
                f->buf = b;
                f->buf_alloc = MAX(max, f->buf_alloc * 2);
        }
        p = lock_table_put_changes(f->locks, f->buf);
        if (fencing > f->written_fencing)
                p = put_mark(p, "fencingTokenReserved", fencing);
        if (event_id > f->written_event_id)
                p = put_mark(p, "eventIdHighWater", event_id);
        len = (size_t) (p - f->buf);
        if (len == 0)
                return 1;
        if (f->journal_size + (off_t) len > MAX((off_t) STATE_JOURNAL_MIN_COMPACT, f->snapshot_size))
                return 0;

        /* Changed behind our back: see journal_is_not_ours(). */
        if (journal_is_not_ours(f) || file_is_gone(f->snapshot_fd))
                return -ESTALE;

        r = loop_write(f->journal_fd, f->buf, len);
        if (r >= 0 && sync && fdatasync(f->journal_fd) < 0)
                r = -errno;
        if (r < 0) {
                /* Cut off what was written of it (a full file system still shrinks a file): the journal takes
                 * these changes again when there is room for them, which on a full disk comes long before room
                 * for the snapshot a compaction writes. */
                *ret_intact = ftruncate(f->journal_fd, f->journal_size) >= 0;
                return r;
        }
        f->journal_size += (off_t) len;
        f->written_fencing = MAX(f->written_fencing, fencing);
        f->written_event_id = MAX(f->written_event_id, event_id);

        if (sync) {
                if (!f->journal_name_durable) {
                        r = state_file_sync_dir(f);
                        if (r < 0)
                                return r;
                        f->journal_name_durable = true;
                }
                f->synced_fencing = fencing;
                f->synced_event_id = event_id;
        }
        return 1;
}

/* Makes state.reserve the size a compaction may need: the snapshot and the journal's header. Best effort: without
 * it a full disk is only recovered from when space is freed. */
static void state_file_make_reserve(StateFile *f) {
        off_t want = f->snapshot_size + STATE_RESERVE_MIN;
        struct stat st;
        int fd, r;

        fd = state_file_openat(f, RESERVE_NAME, O_WRONLY | O_CREAT);
        if (fd < 0) {
                log_debug_errno(fd, "Failed to open the space reserve in the state directory: %m");
                return;
        }
        if (fstat(fd, &st) < 0 || st.st_size == want) {
                state_file_close(f, fd);
                return;
        }
        if (st.st_size > want && ftruncate(fd, want) < 0)
                log_debug_errno(errno, "Failed to shrink the space reserve: %m");
        /* posix_fallocate() returns the error rather than setting errno. */
        r = posix_fallocate(fd, 0, want);
        if (r != 0)
                log_debug_errno(r, "Failed to reserve %lld bytes for a compaction: %m", (long long) want);
        state_file_close(f, fd);
}

/* Removes state.reserve; true if there was one to free. */
static bool state_file_drop_reserve(StateFile *f) {
        return unlinkat(f->dir_fd, RESERVE_NAME, 0) >= 0;
}

/* A new snapshot of everything, under a new generation, and a fresh journal for it. */
static int store_compact(StateFile *f, int64_t fencing, int64_t event_id, bool sync, bool *ret_renamed) {
        _cleanup_(json_object_putp) struct json_object *state = NULL, *header = NULL;
        const char *text;
        size_t len = 0;
        int fd, old_fd, r;

        /* Never used twice, even when this write fails half way. */
        f->generation++;

        state = json_object_new_object();
        if (!state)
                return -ENOMEM;
        if ((r = json_add_int64(state, "version", STATE_FILE_VERSION)) < 0 ||
            (r = json_add_int64(state, "journalGeneration", (int64_t) f->generation)) < 0 ||
            (r = channels_save_state(f->channels, state)) < 0 ||
            (r = lock_table_save_state(f->locks, state)) < 0)
                return r;
        text = json_object_to_json_string_length(state, JSON_FORMAT_FLAGS, &len);
        if (!text)
                return -ENOMEM;
        r = write_and_rename(f, SNAPSHOT_TMP_NAME, SNAPSHOT_NAME, text, len, 0, /* sync= */ false, &fd);
        if (r < 0)
                return r;
        *ret_renamed = true;
        old_fd = f->snapshot_fd;
        f->snapshot_fd = fd;
        state_file_close(f, old_fd);
        f->snapshot_size = (off_t) len;

        header = json_object_new_object();
        if (!header)
                return -ENOMEM;
        if ((r = json_add_int64(header, "version", STATE_JOURNAL_VERSION)) < 0 ||
            (r = json_add_int64(header, "generation", (int64_t) f->generation)) < 0 ||
            (fencing > 0 && (r = json_add_int64(header, "fencingTokenReserved", fencing)) < 0) ||
            (event_id > 0 && (r = json_add_int64(header, "eventIdHighWater", event_id)) < 0))
                return r;
        len = 0;
        r = buf_add_line(f, &len, header);
        if (r < 0)
                return r;
        /* Synced before it takes the name: see the top of this file. */
        r = write_and_rename(f, JOURNAL_TMP_NAME, JOURNAL_NAME, f->buf, len, O_APPEND, /* sync= */ true, &fd);
        if (r < 0)
                return r;
        f->journal_fd = fd;
        f->journal_size = (off_t) len;
        f->journal_name_durable = false;
        f->written_fencing = fencing;
        f->written_event_id = event_id;

        if (sync) {
                r = state_file_sync_dir(f);
                if (r < 0)
                        return r;
                f->journal_name_durable = true;
                f->synced_fencing = fencing;
                f->synced_event_id = event_id;
        }
        return 0;
}

int store_save_state(StateFile *f) {
        int64_t fencing, event_id;
        bool sync, intact = false, renamed = false;
        int old_journal = -EBADF;
        int r;

        assert(f);

        r = state_file_open_dir(f);
        if (r < 0)
                return r;

        fencing = (int64_t) lock_table_token_mark(f->locks);
        event_id = (int64_t) channels_event_id_mark(f->channels);
        sync = fencing > f->synced_fencing || event_id > f->synced_event_id;

        if (f->journal_fd >= 0) {
                r = store_append(f, fencing, event_id, sync, &intact);
                if (r > 0)
                        goto saved;
                if (r < 0)
                        log_debug_errno(r, "Failed to append to %s, writing a new snapshot instead: %m",
                                        f->journal_path);
                if (r < 0 && intact && (r == -ENOSPC || r == -EDQUOT)) {
                        /* Kept for the next write, should the compaction not get as far as a new snapshot. */
                        old_journal = f->journal_fd;
                        f->journal_fd = -EBADF;
                } else
                        state_file_close_journal(f);
        }

        r = store_compact(f, fencing, event_id, sync, &renamed);
        if ((r == -ENOSPC || r == -EDQUOT) && state_file_drop_reserve(f)) {
                log_notice("The file system of %s is full, compacting the state in the space reserved for it.",
                           f->dir);
                state_file_close_journal(f);
                r = store_compact(f, fencing, event_id, sync, &renamed);
        }
        if (r < 0 && old_journal >= 0 && !renamed) {
                /* state.json and state.journal are as they were: the next write appends again. */
                state_file_close_journal(f);
                f->journal_fd = old_journal;
                while (f->n_spare_fds > 0 &&
                       f->n_spare_fds + (f->snapshot_fd >= 0) + 1 > STATE_FILE_FDS) {
                        f->n_spare_fds--;
                        safe_close(f->spare_fds[f->n_spare_fds]);
                }
                return r;
        }
        if (old_journal >= 0)
                state_file_close(f, old_journal);
        if (r < 0) {
                state_file_close_journal(f);
                /* A directory without a name takes no new files: the next write opens the one under the name. */
                if (file_is_gone(f->dir_fd)) {
                        for (; f->n_spare_fds > 0; f->n_spare_fds--)
                                safe_close(f->spare_fds[f->n_spare_fds - 1]);
                        f->dir_fd = safe_close(f->dir_fd);
                }
                return r;
        }
        state_file_make_reserve(f);
saved:
        lock_table_changes_saved(f->locks);
        return 0;
}
