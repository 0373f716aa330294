/* SPDX-License-Identifier: MIT */
#pragma once

/* photond's own state file, <state dir>/state.json: {"version":1, ...each subsystem's keys...}. */

typedef struct Manager Manager;

#define STATE_FILE_VERSION 1

/* Loads state.json into the subsystems. A missing file is a fresh start (0); an unreadable or corrupt one is kept
 * aside as state.json.corrupt-<time>, sets m->state_lost and returns 0. */
int store_load_state(Manager *m);

/* Writes state.json atomically (tmp + rename, see StateFile). */
int store_save_state(Manager *m);

/* The open state.json and state.json.tmp that store_save_state() exchanges (kept in m->state_file). */
typedef struct StateFile StateFile;
StateFile* state_file_free(StateFile *f);
