/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>

#include "cluster-pair.h"

void cluster2_start(Cluster2 *c, const char *extra) {
        if (!test_redis_available())
                cr_skip_test("no redis-server");
        c->dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&c->redis, c->dir, NULL), 0);
        c->a = cluster_node_start(c->redis.url, "node-a", NULL, extra, NULL);
        c->b = cluster_node_start(c->redis.url, "node-b", NULL, extra, NULL);
        cluster_wait_ready(c->a, true);
        cluster_wait_ready(c->b, true);
}

void cluster2_stop(Cluster2 *c) {
        daemon_stop_clean(c->a);
        daemon_stop_clean(c->b);
        test_redis_stop(&c->redis);
        tmpdir_remove(c->dir);
}
