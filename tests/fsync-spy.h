/* SPDX-License-Identifier: MIT */
#pragma once

/* Records what fsync() and fdatasync() were called on, for the tests that check durability. Linked into a test
 * with -Wl,--wrap=fsync,--wrap=fdatasync (tests/meson.build), so the calls made by the code under test are seen
 * too. Both count as "fsync" below. */

#include <stdbool.h>

/* Forgets what was recorded. */
void fsync_spy_reset(void);
/* How many fsync() calls there were since the reset. */
unsigned fsync_spy_count(void);
/* True if fsync() was called on a file or directory whose path (as /proc/self/fd shows it, at the time of the
 * call) is path, or starts with path when prefix is set. */
bool fsync_spy_saw(const char *path, bool prefix);
/* Prints the recorded paths to stderr (for failing tests). */
void fsync_spy_dump(void);
