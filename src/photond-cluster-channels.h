/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode's channels: the channels' backend (ChannelsBackend, photond-channel.h) on Redis. Every publish, a
 * client's or photond's own, is one call of a Lua script that numbers it from one cluster-wide counter
 * (eventId = max(Redis TIME in ms, last + 1)), appends it to its prefix's replay stream and PUBLISHes it; every node
 * (the publishing one too) publishes it into its local channels as it comes from its one pattern subscription
 * (channels_publish_at()), so every node sees the same order. A client's publish is answered from the script's
 * reply; a replay is another script, whose answer comes through the subscriber connection, in order with the
 * messages. docs/cluster.md has the keys, the scripts and the guarantees. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "macro.h"
#include "photond-channel.h"
#include "photond-redis.h"

typedef struct ClusterChannels ClusterChannels;
struct json_object;
struct redisReply;

typedef struct ClusterChannelsConfig {
        sd_event *event;
        Channels *channels;
        const char *prefix;             /* copied */
        const char *node_id;            /* copied */
        const char *url_redacted;       /* for the errors' suggestion: the URL without its password; copied */
        uint64_t command_timeout_usec;  /* the connections' (0: REDIS_DEFAULT_COMMAND_TIMEOUT_USEC): a publish's
                                         * deadline in Redis is 3/4 of it, a replay's answer is awaited as long */
} ClusterChannelsConfig;

int cluster_channels_new(const ClusterChannelsConfig *config, ClusterChannels **ret);
/* Pending publishes and replays are answered "Cluster unavailable" (their publishers may be gone already). */
ClusterChannels* cluster_channels_free(ClusterChannels *cc);
DEFINE_TRIVIAL_CLEANUP_FUNC(ClusterChannels*, cluster_channels_free);

/* The scripts the command connection loads at each connect (NULL-terminated; they live as long as cc). */
const RedisScript* const* cluster_channels_scripts(ClusterChannels *cc);
/* The two connections (made after cc, freed before it; cluster_channels_connections_gone() before they go). */
void cluster_channels_set_connections(ClusterChannels *cc, RedisConn *commands, RedisConn *subscriber);
void cluster_channels_connections_gone(ClusterChannels *cc);

/* The connections' events, forwarded by the Cluster. */
void cluster_channels_commands_connected(ClusterChannels *cc);
void cluster_channels_commands_disconnected(ClusterChannels *cc);
void cluster_channels_subscriber_connected(ClusterChannels *cc);
void cluster_channels_subscriber_disconnected(ClusterChannels *cc);
void cluster_channels_push(ClusterChannels *cc, struct redisReply *reply);

/* ChannelsBackend's members, forwarded by the Manager. */
void cluster_channels_publish(ClusterChannels *cc, const char *name, size_t len, const char *message,
                              size_t message_len, Subscriber *publisher, ChannelsPublishDone done,
                              void *done_userdata);
void cluster_channels_subscriber_gone(ClusterChannels *cc, Subscriber *s);
/* Sends the publishes taken so far in this loop iteration (their batch) now, with the Manager's flush, rather than
 * from the batch's own idle-priority source: before the Manager polls its clients without sleeping. NULL: nothing. */
void cluster_channels_flush(ClusterChannels *cc);
void cluster_channels_replay(ClusterChannels *cc, const char *name, size_t len, int64_t last_event_id,
                             Subscriber *s, ChannelsReplayDone done, void *done_userdata);

/* Publishes and replays may be sent (both connections up, the floor raised and the subscriptions confirmed). */
bool cluster_channels_ready(ClusterChannels *cc);
/* Adds the channels' counters to status' "cluster" object. */
int cluster_channels_add_status(ClusterChannels *cc, struct json_object *o);

/* The text after "Cluster unavailable: " for why cc cannot take a publish now; pure, for tests: what is down. */
const char* cluster_channels_unready_reason(bool commands_connected, bool floor_raised, bool subscriber_connected,
                                            bool subscribed);
