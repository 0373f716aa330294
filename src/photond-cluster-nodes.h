/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode: the nodes and how operators see the cluster. Each node announces itself in Redis once a heartbeat
 * (one script on the commands connection: its record, the node index cleaned of the expired, the nodes seen back),
 * notices nodes that join and leave and a second live process with its own node id, and follows the state of the
 * cluster as a whole (the worse of its two Redis connections): one journal line per transition and a hook for
 * D-Bus. Also the cluster's caps, read from the environment. Nothing of this exists without a cluster URL. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "macro.h"

typedef struct RedisConn RedisConn;
typedef struct ClusterNodes ClusterNodes;
struct json_object;

/* ---- caps (PHOTOND_CLUSTER_*, photond(8)) ---- */

#define CLUSTER_DEFAULT_COMMAND_TIMEOUT_MS 2000
#define CLUSTER_DEFAULT_MAX_PENDING 65536
#define CLUSTER_DEFAULT_RECONNECT_MAX_MS 5000
#define CLUSTER_DEFAULT_HEARTBEAT_MS 1000
/* A node not seen for this many heartbeats is gone. */
#define CLUSTER_NODE_TTL_BEATS 3
/* Nodes shown and followed at most (status, D-Bus, the journal); more are counted in nodesNotShown. */
#define CLUSTER_NODES_MAX 256

typedef struct ClusterCaps {
        uint64_t command_timeout_usec;  /* PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS */
        size_t max_pending;             /* PHOTOND_CLUSTER_MAX_PENDING */
        uint64_t reconnect_max_usec;    /* PHOTOND_CLUSTER_RECONNECT_MAX_MS */
        uint64_t heartbeat_usec;        /* PHOTOND_CLUSTER_HEARTBEAT_MS */
} ClusterCaps;

/* One cap's table entry: its variable, default and range, for the parser and the error message. */
typedef struct ClusterCapInfo {
        const char *variable;
        uint64_t def, min, max;
} ClusterCapInfo;

/* The caps' table entries in order (command timeout, max pending, reconnect max, heartbeat), NULL past the end. */
const ClusterCapInfo* cluster_cap_info(unsigned i);

/* A cap's value: a decimal number within [info->min, info->max]; NULL or "" is the default. 0, -EINVAL (not a
 * number), -ERANGE (out of range). Non-logging. */
int cluster_cap_parse(const ClusterCapInfo *info, const char *s, uint64_t *ret);

/* Reads the four variables. An invalid one: -EINVAL, logged with the variable, the value and the range. */
int cluster_caps_from_env(ClusterCaps *ret);

/* ---- the node record (what a node writes about itself in Redis) ---- */

#define CLUSTER_NODE_TOKEN_LEN 32      /* hex characters: 16 random bytes, new for each process */

/* What nodes say to each other through Redis, in one number: raised when a node of the new version and one of
 * the old cannot share a cluster. 2 (a record without the field): one publish per message, the first lock value;
 * 3: publish batches (the version-3 envelope), the lock value with its wait mark; 4: the replay stream holds one
 * entry per prefix and batch (<prefix>replay4:<P>; a node of 3 neither reads nor trims it, so replays across the
 * two would miss events). */
#define CLUSTER_PROTOCOL 4

typedef struct ClusterNodeRecord {
        char *token;            /* the process' instance token */
        int64_t pid;
        char *hostname;
        int64_t started_ms;     /* when photond started, ms since the epoch */
        char *version;
        int64_t heartbeat_ms;
        int64_t protocol;       /* CLUSTER_PROTOCOL of its photond; 2 when the record has none */
} ClusterNodeRecord;

/* The record as one line of JSON: {"token":…,"pid":…,"hostname":…,"started":…,"version":…,"heartbeatMs":…,
 * "protocol":…}. */
int cluster_node_record_build(const ClusterNodeRecord *r, char **ret);
/* Parses what another node wrote (a boundary: anything may come): a JSON object with at least a token of
 * CLUSTER_NODE_TOKEN_LEN hex digits; the other fields are taken when they have the right type (hostname and
 * version: up to 255 printable bytes), else left NULL/0. Unknown fields are ignored. -EINVAL, -ENOMEM. */
int cluster_node_record_parse(const char *s, size_t len, ClusterNodeRecord *ret);
void cluster_node_record_done(ClusterNodeRecord *r);

/* ---- the cluster's state and the nodes seen ---- */

typedef enum ClusterState {
        CLUSTER_STATE_CONNECTING,       /* the first attempt, not answered yet */
        CLUSTER_STATE_CONNECTED,        /* both connections up */
        CLUSTER_STATE_RECONNECTING,     /* one of them lost (or never reached): reconnecting */
        _CLUSTER_STATE_MAX,
} ClusterState;

const char* cluster_state_to_string(ClusterState s);

typedef struct ClusterNodesConfig {
        sd_event *event;
        RedisConn *commands;            /* borrowed: the heartbeat goes there */
        RedisConn *subscriber;          /* borrowed: only its state is read */
        const char *prefix;
        const char *node_id;
        uint64_t heartbeat_usec;        /* 0: CLUSTER_DEFAULT_HEARTBEAT_MS */
        /* The cluster's state changed (state) or the set of nodes seen did (!state); may be NULL. */
        void (*changed)(bool state, void *userdata);
        /* The count of the cluster's live locks changed (cluster_nodes_lock_count()); may be NULL. */
        void (*locks_counted)(void *userdata);
        void *userdata;
} ClusterNodesConfig;

int cluster_nodes_new(const ClusterNodesConfig *config, ClusterNodes **ret);
/* Free it after the connections: a heartbeat still pending is answered (NULL) when they go. */
ClusterNodes* cluster_nodes_free(ClusterNodes *n);
DEFINE_TRIVIAL_CLEANUP_FUNC(ClusterNodes*, cluster_nodes_free);

/* A connection's state changed (the Cluster's Redis hooks call it; NULL is fine): the cluster's state is worked
 * out again and a transition logged and announced. Once the commands connection is up, a heartbeat goes at once. */
void cluster_nodes_conn_changed(ClusterNodes *n);

/* Something came on the subscriber connection (the Cluster's push hook calls it first; NULL is fine): the
 * connection is alive. true when it was this node's beat channel, which is the nodes' own and goes no further. */
bool cluster_nodes_push(ClusterNodes *n, const char *channel, size_t len);

/* A clean stop: stops the heartbeat and takes this node out of the node index, so the others see it leave at their
 * next heartbeat. 1: under way, left (may be NULL) is called once Redis answered (or the connection went); 0:
 * nothing to wait for (not connected). */
int cluster_nodes_leave(ClusterNodes *n, void (*left)(void *userdata), void *userdata);
bool cluster_nodes_leaving(ClusterNodes *n);

/* The cluster's state and since when (CLOCK_REALTIME µs). */
ClusterState cluster_nodes_state(ClusterNodes *n, uint64_t *ret_since);

/* The nodes seen at the last heartbeat, by id: i-th node's id and last-seen (Redis' clock, ms since the epoch).
 * false past the end. */
bool cluster_nodes_get(ClusterNodes *n, size_t i, const char **ret_id, int64_t *ret_last_seen, bool *ret_self);
size_t cluster_nodes_count(ClusterNodes *n);
/* The cluster's live locks (<prefix>locks:index entries whose expiry is after Redis' now) as the last heartbeat
 * counted them: at most one heartbeat old; -1 before the first heartbeat was answered (n NULL too). */
int64_t cluster_nodes_lock_count(ClusterNodes *n);
/* Another live process announces itself with this node's id. */
bool cluster_nodes_duplicate(ClusterNodes *n);

/* Adds "nodes" ([{id, lastSeen, self, pid, hostname, started, version}]), "duplicateNodeId", "heartbeatMs" and
 * "lastHeartbeat" to status' cluster object. */
int cluster_nodes_add_status(ClusterNodes *n, struct json_object *o);
