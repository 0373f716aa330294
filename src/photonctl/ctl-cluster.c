/* SPDX-License-Identifier: MIT */

/* photonctl status: the cluster object of status (cluster mode, docs/cluster.md) as a few readable lines. */

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "ctl-util.h"
#include "json-util.h"
#include "macro.h"

static int64_t get_int(struct json_object *o, const char *key) {
        int64_t v = 0;

        (void) json_get_int64(o, key, false, &v);
        return v;
}

static void print_nodes(struct json_object *nodes, int64_t now) {
        size_t n = json_object_is_type(nodes, json_type_array) ? json_object_array_length(nodes) : 0;

        printf("  %-13s %zu\n", "nodes seen", n);
        for (size_t i = 0; i < n; i++) {
                struct json_object *e = json_object_array_get_idx(nodes, i);
                struct json_object *self;
                const char *id = json_get_string(e, "id"), *host = json_get_string(e, "hostname"),
                           *version = json_get_string(e, "version");
                char ago[64];

                ctl_format_duration(ago, sizeof(ago), now - get_int(e, "lastSeen"));
                printf("    %s%s: seen %s ago", id ?: "?",
                       json_object_object_get_ex(e, "self", &self) && json_object_get_boolean(self) ?
                       " (this node)" : "", ago);
                if (host)
                        printf(", pid %" PRId64 " on %s", get_int(e, "pid"), host);
                if (version)
                        printf(", photond %s", version);
                putchar('\n');
        }
}

void ctl_print_cluster(struct json_object *c) {
        const char *state = json_get_string(c, "state"), *err = json_get_string(c, "lastError");
        struct json_object *v;
        int64_t now = now_ms(), since = get_int(c, "since");
        char when[64], ago[64];

        ctl_format_time(when, sizeof(when), since);
        ctl_format_duration(ago, sizeof(ago), now - since);
        printf("cluster\n");
        printf("  %-13s %s since %s (%s)\n", "state", state ?: "?", when, ago);
        if (json_object_object_get_ex(c, "duplicateNodeId", &v) && json_object_get_boolean(v))
                printf("  %-13s %s\n", "WARNING", "another live process uses this node id (give each node its own "
                       "PHOTOND_NODE_ID)");
        if (get_int(c, "incompatibleNodes") > 0)
                printf("  %-13s %" PRId64 " node(s) run a photond that speaks another cluster protocol: they drop "
                       "each other's publishes (run one version on every node)\n", "WARNING",
                       get_int(c, "incompatibleNodes"));
        printf("  %-13s %s\n", "node id", json_get_string(c, "nodeId") ?: "?");
        /* status shows the URL without its password already */
        printf("  %-13s %s (key prefix \"%s\")\n", "redis", json_get_string(c, "url") ?: "?",
               json_get_string(c, "prefix") ?: "");
        if (err && !streq_ptr(state, "connected"))
                printf("  %-13s %s\n", "last error", err);
        if (json_object_object_get_ex(c, "nodes", &v))
                print_nodes(v, now);
        printf("  %-13s %" PRId64 " commands\n", "pending", get_int(c, "pending"));
        printf("  %-13s %" PRId64 " (refused %" PRId64 ", own events lost %" PRId64 ")\n", "published",
               get_int(c, "published"), get_int(c, "publishRefused"), get_int(c, "publishFailed"));
        printf("  %-13s %" PRId64 " (duplicates %" PRId64 ", invalid %" PRId64 ")\n", "received",
               get_int(c, "received"), get_int(c, "duplicates"), get_int(c, "invalid"));
        printf("  %-13s %" PRId64 "\n", "subscriptions", get_int(c, "redisSubscriptions"));
}
