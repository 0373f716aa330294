/* SPDX-License-Identifier: MIT */

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsync-spy.h"

#define SPY_MAX 256

static char *seen[SPY_MAX];
static unsigned n_seen, n_calls;

int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);

static void spy_record(int fd) {
        char link[64], target[PATH_MAX];
        ssize_t n;

        n_calls++;
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        n = readlink(link, target, sizeof(target) - 1);
        if (n >= 0 && n_seen < SPY_MAX) {
                target[n] = '\0';
                seen[n_seen++] = strdup(target);
        }
}

int __wrap_fsync(int fd) {
        spy_record(fd);
        return __real_fsync(fd);
}

int __wrap_fdatasync(int fd) {
        spy_record(fd);
        return __real_fdatasync(fd);
}

void fsync_spy_reset(void) {
        for (unsigned i = 0; i < n_seen; i++)
                free(seen[i]);
        n_seen = n_calls = 0;
}

unsigned fsync_spy_count(void) {
        return n_calls;
}

bool fsync_spy_saw(const char *path, bool prefix) {
        for (unsigned i = 0; i < n_seen; i++)
                if (seen[i] && (prefix ? strncmp(seen[i], path, strlen(path)) == 0 : strcmp(seen[i], path) == 0))
                        return true;
        return false;
}

void fsync_spy_dump(void) {
        fprintf(stderr, "fsync() calls: %u\n", n_calls);
        for (unsigned i = 0; i < n_seen; i++)
                fprintf(stderr, "  %s\n", seen[i] ?: "(out of memory)");
}
