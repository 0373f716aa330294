/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode's pure parts: the Redis URL, the node id, and the envelope a message travels in between nodes.
 * Non-logging and daemon-free (photonctl may show a URL without its password too). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define CLUSTER_DEFAULT_PREFIX "photon:"
#define CLUSTER_PREFIX_MAX 64
#define CLUSTER_NODE_ID_MAX 128
#define CLUSTER_URL_MAX 4096

/* redis://[user:password@]host[:port][/db] or unix:///path[?db=N]. */
typedef struct ClusterUrl {
        char *host;             /* NULL for a Unix socket */
        uint16_t port;          /* 6379 when not given */
        char *path;             /* the Unix socket; NULL for TCP */
        char *user;             /* NULL: none (AUTH with the password alone) */
        char *password;         /* NULL: no AUTH; cleared before it is freed */
        unsigned db;            /* SELECT db, 0 when not given */
} ClusterUrl;

/* Parses s into *ret (whose old contents are not freed). -EINVAL for anything else than the two forms above
 * (percent-escapes are decoded in user and password; a host in [] is an IPv6 address), -ENOMEM. Nothing is logged:
 * the string holds a password. */
int cluster_url_parse(const char *s, ClusterUrl *ret);
void cluster_url_done(ClusterUrl *u);

/* The URL without its password ("redis://user:***@host:port/db", "unix:///path?db=N"), for status and logs. */
int cluster_url_redacted(const ClusterUrl *u, char **ret);

/* A node id: 1..CLUSTER_NODE_ID_MAX bytes of [A-Za-z0-9._@:-] (it goes into keys and envelopes unescaped). */
bool cluster_node_id_valid(const char *id);
/* A key prefix: 0..CLUSTER_PREFIX_MAX printable ASCII bytes, no space. */
bool cluster_prefix_valid(const char *prefix);

/* The envelope of a message published to Redis: "1 <eventId> <nodeId>\n" then the message's JSON text, or
 * nothing when it had none (no JSON text is empty). The channel is Redis' channel name, not repeated. */
int cluster_envelope_build(const char *node_id, uint64_t event_id, const char *message, size_t message_len,
                           char **ret, size_t *ret_len);

typedef struct ClusterEnvelope {
        uint64_t event_id;      /* the id the origin gave it */
        const char *node_id;    /* into the parsed bytes: node_id_len bytes, not NUL-terminated */
        size_t node_id_len;
        const char *message;    /* into the parsed bytes; NULL: none */
        size_t message_len;
} ClusterEnvelope;

/* Parses an envelope of len bytes, pointing into it. -EINVAL when it is not one (of an unknown version too). */
int cluster_envelope_parse(const char *p, size_t len, ClusterEnvelope *ret);

/* Escapes the glob characters of Redis' PSUBSCRIBE (*?[]\) in len bytes of s with a backslash: a new string of
 * *ret_len bytes (any bytes, NUL included; NUL-terminated for convenience). */
int cluster_glob_escape(const char *s, size_t len, char **ret, size_t *ret_len);
