/* SPDX-License-Identifier: MIT */
#pragma once

/* photond's own state, in two files in the state directory: state.json, a snapshot
 * {"version":1,"journalGeneration":G, ...each subsystem's keys...}, and state.journal, the changes since that
 * snapshot, one JSON object a line: a header {"version":1,"generation":G,<high-water marks>}, then
 * {"set":{<a lock as in state.json>}}, {"del":"<lock name>"}, {"fencingTokenReserved":N}, {"eventIdHighWater":N}. */

#include "macro.h"

typedef struct Channels Channels;
typedef struct LockTable LockTable;
typedef struct StateFile StateFile;

#define STATE_FILE_VERSION 1

/* A new snapshot once the journal would grow past the larger of this and the last snapshot's size: the cost of a
 * snapshot, O(locks), is then spread over at least as many bytes of O(1) appends. 1 MiB rather than less: each
 * snapshot also syncs the fresh journal (see photond-store.c), and at 64 KiB that happened about a hundred times a
 * second under the lock benchmark, visible in its p99; replaying 1 MiB at start takes milliseconds. */
#define STATE_JOURNAL_MIN_COMPACT (1024 * 1024)

/* state.reserve holds the last snapshot's size and this much more for a compaction on a full disk (see
 * photond-store.c): room for the journal's header and the locks taken since that snapshot. */
#define STATE_RESERVE_MIN (64 * 1024)

/* The state files in the directory dir (which need not exist yet: the first load or save opens it), holding the
 * state of channels (the eventId mark) and locks (the lock table and the fencing mark), which must outlive the
 * StateFile. Opens nothing before the first load or save. */
int state_file_new(const char *dir, Channels *channels, LockTable *locks, StateFile **ret);
StateFile* state_file_free(StateFile *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(StateFile*, state_file_free);

/* Loads state.json and replays state.journal into the cores. Returns 0 when it loaded or there was none (a fresh
 * start); 1 when the state was lost: a file could not be read or is corrupt, and is kept aside as
 * <name>.corrupt-<time> (its high-water marks still count); the owner tells the clients, and fencing tokens must
 * continue above any issued. < 0 only when the state directory cannot be opened. */
int store_load_state(StateFile *f);

/* Writes what changed since the last call: appended to state.journal, or as a new snapshot (see photond-store.c).
 * < 0: nothing reliable was written; the next call writes a whole snapshot. */
int store_save_state(StateFile *f);
