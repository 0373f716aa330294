/* SPDX-License-Identifier: MIT */
#pragma once

/* The replay buffers across a stop: replay.bin in the state directory, written when photond stops gracefully and
 * read, then removed, at the next start, so a subscriber that comes back with its lastEventId gets what it missed
 * rather than refresh_needed. A crash leaves no file, and no file means empty buffers, as before. The layout is
 * at the top of photond-replay-file.c. */

#include <stddef.h>
#include <stdint.h>

#include "photond-channel.h"

#define REPLAY_FILE_NAME "replay.bin"
#define REPLAY_FILE_VERSION 1
#define REPLAY_FILE_HEADER_SIZE 64

/* The largest file the limits allow (the header and REPLAY_MAX_TOTAL_BYTES: a file takes fewer bytes than the
 * buffers count for what it holds), and the most a start reads. */
uint64_t replay_file_size_max(void);

/* A parsed file: every pointer points into the parsed bytes, or into channels. */
typedef struct ReplayFile {
        uint32_t version;
        int64_t saved_ms;               /* wall clock at the save */
        uint64_t event_id_mark;         /* channels_event_id_mark() at the save */
        ReplayChannel *channels;
        size_t n_channels;
        ReplayRecord *records;
        size_t n_records;
} ReplayFile;

void replay_file_done(ReplayFile *f);

/* Parses a file's bytes, which must outlive *ret (non-logging, never trusts them). 0 and *ret; -EPROTONOSUPPORT
 * for a newer format (ret->version says which), -EFBIG over replay_file_size_max(), -EBADMSG for anything else
 * that is not a whole file as replay_file_save() writes it: another file, a checksum that does not match, a
 * truncated or overlong one, a record that does not add up, a message that is not one JSON value without control
 * characters; -ENOMEM. Record ids are checked by channels_restore(). */
int replay_file_parse(const void *data, size_t size, ReplayFile *ret);

/* The file's bytes for the buffers of chs, in memory (tests, the fuzzer): *ret is freed by the caller. */
int replay_file_serialize(Channels *chs, int64_t saved_ms, char **ret, size_t *ret_size);

/* Recomputes the checksums of a file's bytes (at least a header's) in place, so that what a test or the fuzzer
 * changed past them reads as written that way. */
void replay_file_seal(void *data, size_t size);

/* Writes the buffers of chs (expired events left out) as dir/replay.bin: a temporary file, synced, renamed, the
 * directory synced; so a crash during it leaves no file or the whole file. Called when nothing publishes any
 * more. Logs; 0, or the negative errno of the failure (then no new file is in place). */
int replay_file_save(const char *dir, Channels *chs);

/* Loads dir/replay.bin into chs, which has no channel yet (after the state's eventId mark is loaded, before any
 * subscription or publish), and removes it first: restored buffers that a crash of this process would outdate are
 * never read again (if it cannot be removed, nothing is restored). A damaged file, one of a newer format, one older
 * than the state (its eventId mark is below the state's: a photond ran after it was written) is dropped. Logs what
 * it restores or why not. Returns the number of events restored, 0 when there was no file, or the negative errno
 * of why nothing was restored (-ESTALE for a file older than the state, replay_file_parse()'s, or the file
 * system's). */
int replay_file_load(const char *dir, Channels *chs);
