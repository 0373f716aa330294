/* SPDX-License-Identifier: MIT */

/* replay.bin: the replay buffers from one graceful stop to the next start.
 *
 * Layout, every number little-endian:
 *
 *   header (REPLAY_FILE_HEADER_SIZE bytes)
 *     0  "PHOTRPLY"           magic
 *     8  u32 version          REPLAY_FILE_VERSION; a reader drops a newer one (read before anything else), and a
 *                             photond that writes a newer one still reads this one
 *    12  u32 flags            0
 *    16  i64 saved_ms         wall clock at the save
 *    24  u64 event_id_mark    the eventId mark at the save (channels_event_id_mark())
 *    32  u64 body_size        the bytes after the header
 *    40  u64 n_channels
 *    48  u64 n_events
 *    56  u32 body_crc         CRC-32C of the body
 *    60  u32 header_crc       CRC-32C of bytes 0..59
 *   body: n_channels times
 *     u32 name_len, u32 n_events, u64 prefix_floor, name          a channel
 *     n_events times: u64 id, i64 timestamp, u32 message_len, message     its events, oldest first
 *                                          (message_len UINT32_MAX: no message key)
 *
 * A record is smaller than what its event counts for in the buffers (the live line and the event's overhead), so
 * the body is bounded by REPLAY_MAX_TOTAL_BYTES.
 *
 * Honesty over a crash: the file is written only when nothing publishes any more (a graceful stop), and removed
 * (the removal synced) by the start that reads it, before anything is published; so a file that exists was
 * written after the last publish of the last daemon that ran. A crash leaves none, and the buffers start empty:
 * every subscriber resuming from before it gets refresh_needed, as it must, since the events of the crashed run
 * are gone. As a second guard a file whose eventId mark is below the state's (a daemon ran and saved its state
 * after the file was written) is dropped. */

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "fd-util.h"
#include "log.h"
#include "photond-limits.h"
#include "json-util.h"
#include "photond-replay-file.h"
#include "unaligned.h"

#define REPLAY_FILE_TMP_NAME REPLAY_FILE_NAME ".tmp"
#define REPLAY_FILE_MAGIC "PHOTRPLY"
#define CHANNEL_RECORD_SIZE 16
#define EVENT_RECORD_SIZE 20
#define NO_MESSAGE UINT32_MAX
/* What the writer collects before a write(). */
#define WRITE_BUFFER_SIZE (64 * 1024)

/* ---- CRC-32C (Castagnoli), as ext4 and iSCSI use it ---- */

static uint32_t crc32c_table[256];

static uint32_t crc32c(uint32_t crc, const void *data, size_t size) {
        const uint8_t *p = data;

        if (crc32c_table[1] == 0)
                for (uint32_t i = 0; i < 256; i++) {
                        uint32_t c = i;

                        for (int k = 0; k < 8; k++)
                                c = c & 1 ? (c >> 1) ^ UINT32_C(0x82F63B78) : c >> 1;
                        crc32c_table[i] = c;
                }

        crc = ~crc;
        for (size_t i = 0; i < size; i++)
                crc = crc32c_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
        return ~crc;
}

uint64_t replay_file_size_max(void) {
        return REPLAY_FILE_HEADER_SIZE + limits.REPLAY_MAX_TOTAL_BYTES;
}

/* ---- reading ---- */

void replay_file_done(ReplayFile *f) {
        if (!f)
                return;
        free(f->channels);
        free(f->records);
        *f = (ReplayFile) {};
}

/* Messages are checked in place, building nothing (json_text_is_compact_value()): with json_parse() reading a file
 * of 56 MiB of 1 KiB messages took 1.9 s, now 0.2 s (most of it the checksum). The buffers hold each message as one
 * JSON value without whitespace (json-c's compact print, or a client's text the publish scan found to be just that).
 */

int replay_file_parse(const void *data, size_t size, ReplayFile *ret) {
        _cleanup_(replay_file_done) ReplayFile f = {};
        const uint8_t *h = data, *p, *end;
        uint64_t body_size, n_channels, n_events;
        size_t k = 0;

        assert(data || size == 0);
        assert(ret);

        /* The version first: a newer format may lay out everything after it differently. */
        if (size < 12 || memcmp(h, REPLAY_FILE_MAGIC, 8) != 0)
                return -EBADMSG;
        f.version = unaligned_read_le32(h + 8);
        if (f.version > REPLAY_FILE_VERSION) {
                ret->version = f.version;
                return -EPROTONOSUPPORT;
        }
        if (f.version != REPLAY_FILE_VERSION || size < REPLAY_FILE_HEADER_SIZE)
                return -EBADMSG;
        if (size > replay_file_size_max())
                return -EFBIG;
        if (unaligned_read_le32(h + 60) != crc32c(0, h, 60) || unaligned_read_le32(h + 12) != 0)
                return -EBADMSG;

        f.saved_ms = (int64_t) unaligned_read_le64(h + 16);
        f.event_id_mark = unaligned_read_le64(h + 24);
        body_size = unaligned_read_le64(h + 32);
        n_channels = unaligned_read_le64(h + 40);
        n_events = unaligned_read_le64(h + 48);
        if (body_size != size - REPLAY_FILE_HEADER_SIZE ||
            unaligned_read_le32(h + 56) != crc32c(0, h + REPLAY_FILE_HEADER_SIZE, body_size))
                return -EBADMSG;
        /* Before anything is allocated for them: what the body could hold at most. */
        if (n_channels > body_size / CHANNEL_RECORD_SIZE || n_events > body_size / EVENT_RECORD_SIZE ||
            (n_events == 0) != (n_channels == 0))
                return -EBADMSG;

        f.channels = new0(ReplayChannel, n_channels ?: 1);
        f.records = new0(ReplayRecord, n_events ?: 1);
        if (!f.channels || !f.records)
                return -ENOMEM;

        p = h + REPLAY_FILE_HEADER_SIZE;
        end = p + body_size;
        for (size_t c = 0; c < n_channels; c++) {
                ReplayChannel *rc = f.channels + c;
                uint32_t name_len, n;

                if ((size_t) (end - p) < CHANNEL_RECORD_SIZE)
                        return -EBADMSG;
                name_len = unaligned_read_le32(p);
                n = unaligned_read_le32(p + 4);
                rc->prefix_floor = unaligned_read_le64(p + 8);
                p += CHANNEL_RECORD_SIZE;
                /* A channel is written for its events only. */
                if (name_len > (size_t) (end - p) || n == 0 || n > n_events - k)
                        return -EBADMSG;
                rc->name = (const char*) p;
                rc->name_len = name_len;
                rc->n_events = n;
                p += name_len;

                for (uint32_t i = 0; i < n; i++, k++) {
                        ReplayRecord *rec = f.records + k;
                        uint32_t len;

                        if ((size_t) (end - p) < EVENT_RECORD_SIZE)
                                return -EBADMSG;
                        rec->channel = rc;
                        rec->event.id = unaligned_read_le64(p);
                        rec->event.timestamp = (int64_t) unaligned_read_le64(p + 8);
                        len = unaligned_read_le32(p + 16);
                        p += EVENT_RECORD_SIZE;
                        if (len == NO_MESSAGE)
                                continue;
                        if (len > (size_t) (end - p) || !json_text_is_compact_value((const char*) p, len, JSON_TEXT_MAX_DEPTH))
                                return -EBADMSG;
                        rec->event.message_json = (const char*) p;
                        rec->event.message_json_len = len;
                        p += len;
                }
        }
        if (k != n_events || p != end)
                return -EBADMSG;

        f.n_channels = n_channels;
        f.n_records = n_events;
        *ret = f;
        f = (ReplayFile) {};
        return 0;
}

/* ---- writing ---- */

/* The body, streamed to fd at offset (after the header, which is written last), or kept whole in buf (fd < 0,
 * the header's room first). */
typedef struct Writer {
        int fd;
        off_t offset;
        char *buf;
        size_t len, alloc;
        uint64_t body_size, n_channels, n_events;
        uint32_t crc;
} Writer;

static int writer_flush(Writer *w) {
        size_t done = 0;

        while (done < w->len) {
                ssize_t n = pwrite(w->fd, w->buf + done, w->len - done, w->offset);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += n;
                w->offset += n;
        }
        w->len = 0;
        return 0;
}

static int writer_put(Writer *w, const void *data, size_t size) {
        int r;

        w->crc = crc32c(w->crc, data, size);
        w->body_size += size;

        if (w->len + size > w->alloc) {
                if (w->fd >= 0) {
                        r = writer_flush(w);
                        if (r < 0)
                                return r;
                }
                if (w->len + size > w->alloc) {
                        size_t na = MAX(w->alloc * 2, w->len + size);
                        char *b = realloc(w->buf, na);

                        if (!b)
                                return -ENOMEM;
                        w->buf = b;
                        w->alloc = na;
                }
        }
        memcpy(w->buf + w->len, data, size);
        w->len += size;
        return 0;
}

static int writer_channel(const ReplayChannel *c, void *userdata) {
        Writer *w = userdata;
        uint8_t rec[CHANNEL_RECORD_SIZE];
        int r;

        /* Neither can be over UINT32_MAX under any cap, but the file must not lie if one was. */
        if (c->name_len > UINT32_MAX || c->n_events > UINT32_MAX)
                return -E2BIG;
        unaligned_write_le32(rec, (uint32_t) c->name_len);
        unaligned_write_le32(rec + 4, (uint32_t) c->n_events);
        unaligned_write_le64(rec + 8, c->prefix_floor);
        w->n_channels++;
        r = writer_put(w, rec, sizeof(rec));
        if (r < 0)
                return r;
        return writer_put(w, c->name, c->name_len);
}

static int writer_event(const ReplayEvent *e, void *userdata) {
        Writer *w = userdata;
        uint8_t rec[EVENT_RECORD_SIZE];
        int r;

        if (e->message_json && e->message_json_len >= NO_MESSAGE)
                return -E2BIG;
        unaligned_write_le64(rec, e->id);
        unaligned_write_le64(rec + 8, (uint64_t) e->timestamp);
        unaligned_write_le32(rec + 16, e->message_json ? (uint32_t) e->message_json_len : NO_MESSAGE);
        w->n_events++;
        r = writer_put(w, rec, sizeof(rec));
        if (r < 0 || !e->message_json)
                return r;
        return writer_put(w, e->message_json, e->message_json_len);
}

static void header_fill(uint8_t *h, const Writer *w, int64_t saved_ms, uint64_t mark) {
        memset(h, 0, REPLAY_FILE_HEADER_SIZE);
        memcpy(h, REPLAY_FILE_MAGIC, 8);
        unaligned_write_le32(h + 8, REPLAY_FILE_VERSION);
        unaligned_write_le64(h + 16, (uint64_t) saved_ms);
        unaligned_write_le64(h + 24, mark);
        unaligned_write_le64(h + 32, w->body_size);
        unaligned_write_le64(h + 40, w->n_channels);
        unaligned_write_le64(h + 48, w->n_events);
        unaligned_write_le32(h + 56, w->crc);
        unaligned_write_le32(h + 60, crc32c(0, h, 60));
}

void replay_file_seal(void *data, size_t size) {
        uint8_t *h = data;

        assert(size >= REPLAY_FILE_HEADER_SIZE);
        unaligned_write_le64(h + 32, size - REPLAY_FILE_HEADER_SIZE);
        unaligned_write_le32(h + 56, crc32c(0, h + REPLAY_FILE_HEADER_SIZE, size - REPLAY_FILE_HEADER_SIZE));
        unaligned_write_le32(h + 60, crc32c(0, h, 60));
}

int replay_file_serialize(Channels *chs, int64_t saved_ms, char **ret, size_t *ret_size) {
        Writer w = { .fd = -EBADF };
        int r;

        assert(chs);
        assert(ret);
        assert(ret_size);

        w.buf = malloc(REPLAY_FILE_HEADER_SIZE);
        if (!w.buf)
                return -ENOMEM;
        w.len = w.alloc = REPLAY_FILE_HEADER_SIZE;
        r = channels_replay_walk(chs, writer_channel, writer_event, &w);
        if (r < 0) {
                free(w.buf);
                return r;
        }
        header_fill((uint8_t*) w.buf, &w, saved_ms, channels_event_id_mark(chs));
        *ret = w.buf;
        *ret_size = w.len;
        return 0;
}

int replay_file_save(const char *dir, Channels *chs) {
        _cleanup_close_ int dir_fd = -EBADF, fd = -EBADF;
        uint8_t header[REPLAY_FILE_HEADER_SIZE];
        Writer w = {};
        int r;

        assert(dir);
        assert(chs);

        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return log_error_errno(errno, "Failed to open %s to save the replay buffers: %m", dir);
        fd = openat(dir_fd, REPLAY_FILE_TMP_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create %s/%s: %m", dir, REPLAY_FILE_TMP_NAME);

        w = (Writer) {
                .fd = fd,
                .offset = REPLAY_FILE_HEADER_SIZE,
                .buf = malloc(WRITE_BUFFER_SIZE),
                .alloc = WRITE_BUFFER_SIZE,
        };
        if (!w.buf)
                r = -ENOMEM;
        else
                r = channels_replay_walk(chs, writer_channel, writer_event, &w);
        if (r >= 0)
                r = writer_flush(&w);
        free(w.buf);
        if (r >= 0) {
                /* Last: a file cut short anywhere has no header that matches its body. */
                header_fill(header, &w, (int64_t) (now_usec(CLOCK_REALTIME) / USEC_PER_MSEC),
                            channels_event_id_mark(chs));
                w.buf = (char*) header;
                w.len = sizeof(header);
                w.offset = 0;
                r = writer_flush(&w);
        }
        if (r >= 0 && fdatasync(fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(dir_fd, REPLAY_FILE_TMP_NAME, dir_fd, REPLAY_FILE_NAME) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(dir_fd, REPLAY_FILE_TMP_NAME, 0);
                return log_error_errno(r, "Failed to save the replay buffers in %s/%s, the next start begins "
                                       "with none: %m", dir, REPLAY_FILE_NAME);
        }
        if (fsync(dir_fd) < 0)
                /* In place, though a power loss may take it: the next start then finds none, as after a crash. */
                log_warning_errno(errno, "Failed to sync %s after saving the replay buffers: %m", dir);

        log_info("Saved %" PRIu64 " buffered events of %" PRIu64 " channels in %s/%s (%" PRIu64 " bytes).",
                 w.n_events, w.n_channels, dir, REPLAY_FILE_NAME, REPLAY_FILE_HEADER_SIZE + w.body_size);
        return 0;
}

/* Reads the file of dir_fd (at most replay_file_size_max() bytes). */
static int read_replay_file(int dir_fd, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t done = 0;

        fd = openat(dir_fd, REPLAY_FILE_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if ((uint64_t) st.st_size > replay_file_size_max())
                return -EFBIG;
        buf = malloc(st.st_size ?: 1);
        if (!buf)
                return -ENOMEM;
        while (done < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + done, st.st_size - done);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                done += n;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = done;
        return 0;
}

int replay_file_load(const char *dir, Channels *chs) {
        _cleanup_(replay_file_done) ReplayFile f = {};
        _cleanup_close_ int dir_fd = -EBADF;
        _cleanup_free_ char *data = NULL;
        uint64_t mark = channels_event_id_mark(chs);
        int64_t now;
        size_t size = 0;
        int r;

        assert(dir);
        assert(chs);

        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return log_error_errno(errno, "Failed to open %s to load the replay buffers: %m", dir);
        /* A save that a crash interrupted. */
        (void) unlinkat(dir_fd, REPLAY_FILE_TMP_NAME, 0);

        r = read_replay_file(dir_fd, &data, &size);
        if (r == -ENOENT) {
                if (mark > 0)
                        log_notice("No %s in %s: photond did not stop gracefully last time (or a version without it "
                                   "ran), so the replay buffers start empty and subscribers resuming from before "
                                   "this start get refresh_needed.", REPLAY_FILE_NAME, dir);
                return 0;
        }

        /* Read once: were this start's buffers to be restored again after a crash, the events published in between
         * would be missing from a replay that looks complete. */
        if (unlinkat(dir_fd, REPLAY_FILE_NAME, 0) < 0 || fsync(dir_fd) < 0)
                return log_error_errno(errno, "Failed to remove %s/%s after reading it, starting with empty replay "
                                       "buffers: %m", dir, REPLAY_FILE_NAME);

        if (r >= 0)
                r = replay_file_parse(data, size, &f);
        if (r == -EPROTONOSUPPORT)
                return log_warning_errno(r, "%s/%s was written by a newer photond (format version %" PRIu32 ", this "
                                         "one reads %d): dropped, the replay buffers start empty.", dir,
                                         REPLAY_FILE_NAME, f.version, REPLAY_FILE_VERSION);
        if (r == -EFBIG)
                return log_warning_errno(r, "%s/%s is larger than PHOTOND_REPLAY_MAX_TOTAL_BYTES allows: dropped, "
                                         "the replay buffers start empty.", dir, REPLAY_FILE_NAME);
        if (r == -EBADMSG)
                return log_warning_errno(r, "%s/%s is damaged: dropped, the replay buffers start empty.", dir,
                                         REPLAY_FILE_NAME);
        if (r < 0)
                return log_warning_errno(r, "Failed to read %s/%s, the replay buffers start empty: %m", dir,
                                         REPLAY_FILE_NAME);
        if (f.event_id_mark < mark)
                return log_warning_errno(SYNTHETIC_ERRNO(ESTALE),
                                         "%s/%s is older than the state (eventId mark %" PRIu64 " < %" PRIu64 "): "
                                         "events published after it are not in it, dropped; the replay buffers "
                                         "start empty.", dir, REPLAY_FILE_NAME, f.event_id_mark, mark);

        r = channels_restore(chs, f.records, f.n_records);
        if (r == -EINVAL)
                return log_warning_errno(SYNTHETIC_ERRNO(EBADMSG), "%s/%s is damaged (an eventId twice or 0): "
                                         "dropped, the replay buffers start empty.", dir, REPLAY_FILE_NAME);
        if (r < 0)
                return log_error_errno(r, "Failed to restore the replay buffers, they start empty: %m");

        now = (int64_t) (now_usec(CLOCK_REALTIME) / USEC_PER_MSEC);
        log_info("Restored %d buffered events on %zu channels from %s/%s, saved %" PRIi64 " ms ago%s.", r,
                 f.n_channels, dir, REPLAY_FILE_NAME, now > f.saved_ms ? now - f.saved_ms : 0,
                 (size_t) r < f.n_records ? " (the others had aged out or were over the caps meanwhile)" : "");
        return r;
}
