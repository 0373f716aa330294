/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

int fd_nonblock(int fd, bool nonblock);
int fd_cloexec(int fd, bool cloexec);

/* Creates the directory and its parents with the given mode (existing ones are left as they are). */
int mkdir_parents_and_self(const char *path, mode_t mode);

/* Reads a whole file (at most max bytes, -EFBIG beyond), NUL-terminated. */
int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size);

/* Writes data to path atomically: a temporary file in the same directory, optional fsync, rename(). */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode, bool sync);
