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

/* Writes data to path atomically: a temporary file in the same directory, rename(). With sync the write is also
 * durable (survives a power loss): the file is fsync'ed before the rename and its directory after it. An error
 * from the directory's fsync is returned, though the new file is then in place. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode, bool sync);

/* fsync()s the directory that holds path, which makes a rename, creation or unlink of path durable. */
int fsync_parent_directory(const char *path);
