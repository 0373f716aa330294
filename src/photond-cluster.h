/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode: the settings, the two Redis connections (commands; a subscriber), and status' "cluster" object.
 * The channels' backend on them is photond-cluster-channels.c's. Nothing of this exists without a cluster URL. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "cluster-util.h"
#include "macro.h"
#include "photond-channel.h"
#include "photond-cluster-nodes.h"
#include "photond-redis.h"

typedef struct Cluster Cluster;
struct json_object;

/* What the environment and the credentials configure. */
typedef struct ClusterSettings {
        bool enabled;           /* a URL was given */
        ClusterUrl url;
        char *url_source;       /* "credential cluster-url" or "PHOTOND_CLUSTER_URL" */
        char *prefix;           /* PHOTOND_CLUSTER_PREFIX, default CLUSTER_DEFAULT_PREFIX */
        char *node_id;          /* PHOTOND_NODE_ID, default <hostname>@system or <hostname>@user-<uid> */
        ClusterCaps caps;       /* PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS, _MAX_PENDING, _RECONNECT_MAX_MS, _HEARTBEAT_MS */
} ClusterSettings;

/* Reads the credential cluster-url ($CREDENTIALS_DIRECTORY/cluster-url; an empty one falls through), else
 * PHOTOND_CLUSTER_URL, then PHOTOND_CLUSTER_PREFIX, PHOTOND_NODE_ID and the caps. Not configured: 0 and !enabled.
 * A URL, prefix, node id or cap that is not valid: -EINVAL, logged without the URL (it may hold a password). */
int cluster_settings_from_env(bool system, ClusterSettings *ret);
void cluster_settings_done(ClusterSettings *s);

typedef struct ClusterConfig {
        sd_event *event;
        Channels *channels;
        const ClusterSettings *settings;        /* copied */
        /* The cluster's state changed (state) or the nodes seen did (!state): for D-Bus; may be NULL. */
        void (*changed)(bool state, void *userdata);
        /* The heartbeat's count of the cluster's live locks changed (cluster_nodes_lock_count()); may be NULL. */
        void (*locks_counted)(void *userdata);
        void *userdata;
        const RedisScript *const *scripts;      /* the command connection's scripts (NULL-terminated), or NULL */
} ClusterConfig;

/* Starts connecting (the Redis connections reconnect on their own; nothing waits for them). */
int cluster_new(const ClusterConfig *config, Cluster **ret);
Cluster* cluster_free(Cluster *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Cluster*, cluster_free);

/* The channels' backend (photond-cluster-channels.h), which the Manager's ChannelsBackend forwards to; NULL for
 * NULL. */
struct ClusterChannels;
struct ClusterChannels* cluster_get_channels(Cluster *c);

/* The nodes and the cluster's state (photond-cluster-nodes.h), for D-Bus. */
ClusterNodes* cluster_get_nodes(Cluster *c);

/* status' "cluster" object: url (no password), nodeId, prefix, state, since, lastError, counters. */
int cluster_add_status(Cluster *c, struct json_object *data);

/* ---- what cluster mode's method calls (photond-cluster-calls.c) use of the bridge ---- */

typedef struct RedisConn RedisConn;

typedef struct ClusterCallHooks {
        /* A message on this node's calls channel (<prefix>node:<nodeId>:calls), any bytes. */
        void (*message)(const char *payload, size_t len, void *userdata);
        /* Both connections are up (again), or one of them was lost. */
        void (*connection_changed)(bool connected, void *userdata);
        void *userdata;
} ClusterCallHooks;

/* Sets the hooks (copied; NULL: none) and holds the subscription to this node's calls channel, which comes back
 * with the subscriber connection. -ENOMEM. */
int cluster_set_call_hooks(Cluster *c, const ClusterCallHooks *hooks);
/* The connection that takes commands (PUBLISH, EVAL, …; for the other cluster parts, valid while c lives), this
 * node's id, the key prefix. */
RedisConn* cluster_commands(Cluster *c);
const char* cluster_node_id(Cluster *c);
const char* cluster_prefix(Cluster *c);
/* Both connections are up. */
bool cluster_connected(Cluster *c);
