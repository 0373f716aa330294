/* SPDX-License-Identifier: MIT */
#pragma once

#include "harness.h"
#include "redis-helper.h"

/* Two photond nodes, node-a and node-b, on one redis-server in a temporary directory: the set-up of the cluster
 * tests of channels and publish batches. */
typedef struct Cluster2 {
        char *dir;
        TestRedis redis;
        Daemon *a, *b;
} Cluster2;

/* Starts both with extra ("VAR=value", or NULL) in their environment and waits until each takes publishes
 * (status' cluster.ready); skips the test without a redis-server. */
void cluster2_start(Cluster2 *c, const char *extra);
void cluster2_stop(Cluster2 *c);
