/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode's method calls: a call that no provider or executable handler of this node can run goes to a node
 * whose provider can, and the provider's emits, prompts and result come back, all over Redis. Two DispatchPeers
 * stand for the other nodes in this node's dispatcher, which knows nothing of Redis:
 *   - the remote provider (DispatcherHooks.find_remote()'s answer): its invoke picks a node that provides the
 *     photon and sends it the call, its prompt_response sends the caller's answers;
 *   - the remote caller: the calls other nodes sent here are its commands, and its call_done, emit and prompt send
 *     back to the node that asked.
 * Which node provides what is kept in Redis (<prefix>providers:<photon>, a hash of node ids), written as this
 * node's own providers come and go and again at every reconnect. Nothing of this exists without a cluster URL. */

#include <stdbool.h>

#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Cluster Cluster;
typedef struct ClusterCalls ClusterCalls;
typedef struct Dispatcher Dispatcher;
typedef struct DispatchPeer DispatchPeer;
struct json_object;

/* The largest message about a call sent to or taken from another node (an invoke's args, a result's data). */
#define CLUSTER_CALL_MAX_MESSAGE_BYTES (16U * 1024U * 1024U)
/* How often the nodes that run this node's calls are checked for being still connected to Redis. */
#define CLUSTER_CALL_CHECK_USEC (1 * USEC_PER_SEC)

typedef struct ClusterCallsConfig {
        sd_event *event;
        Cluster *cluster;               /* its connections, node id and prefix */
        Dispatcher *dispatcher;
} ClusterCallsConfig;

int cluster_calls_new(const ClusterCallsConfig *config, ClusterCalls **ret);
/* Fails the calls sent to other nodes that are still running and drops the other nodes' calls' caller (they go on
 * here without one): call before the dispatcher and the cluster are freed. */
ClusterCalls* cluster_calls_free(ClusterCalls *cc);
DEFINE_TRIVIAL_CLEANUP_FUNC(ClusterCalls*, cluster_calls_free);

/* DispatcherHooks.find_remote and .provided_changed, forwarded by the Manager. */
DispatchPeer* cluster_calls_find_remote(ClusterCalls *cc, const char *photon, const char *method);
void cluster_calls_provided_changed(ClusterCalls *cc, const char *photon, bool provided);

/* Adds "calls" (counters) to status' "cluster" object, if there is one. */
int cluster_calls_add_status(ClusterCalls *cc, struct json_object *data);
