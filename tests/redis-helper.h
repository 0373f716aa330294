/* SPDX-License-Identifier: MIT */
#pragma once

/* A real redis-server for the tests: on a Unix socket in a directory of the test's, no TCP port, no persistence;
 * started with --supervised systemd and a NOTIFY_SOCKET of ours, so "ready" is its READY=1, not a guess. */

#include <stdbool.h>
#include <sys/types.h>

typedef struct TestRedis {
        pid_t pid;
        char socket[256];       /* the Unix socket's path */
        char url[300];          /* unix://<socket> */
} TestRedis;

/* Starts redis-server in dir (which must exist) with extra arguments (NULL-terminated, may be NULL) and waits up
 * to 10 s for READY=1. 0 or -errno. */
int test_redis_start(TestRedis *r, const char *dir, const char *const *extra);
/* SIGTERM and wait; nothing if not running. */
void test_redis_stop(TestRedis *r);
/* Whether redis-server is installed (tests skip without it). */
bool test_redis_available(void);
