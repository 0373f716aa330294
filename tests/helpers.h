/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared fixtures for the unit tests. */

/* Creates a fresh temporary directory (removed by tmpdir_remove). */
char* tmpdir_new(void);
void tmpdir_remove(char *path);
