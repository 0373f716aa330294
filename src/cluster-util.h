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

/* The envelope of a message published to Redis: "2 <eventId> <timestamp> <token> <nodeId>\n" then the message's
 * JSON text, or nothing when it had none (no JSON text is empty). The cluster's publish script writes it (the
 * eventId and the timestamp in ms are the cluster's); token is the publishing node's number for the publish, which
 * tells it its own publishes apart. The channel is Redis' channel name, not repeated. */
int cluster_envelope_build(const char *node_id, uint64_t event_id, int64_t timestamp, uint64_t token,
                           const char *message, size_t message_len, char **ret, size_t *ret_len);

typedef struct ClusterEnvelope {
        uint64_t event_id;      /* the cluster's id, > 0 */
        int64_t timestamp;      /* ms since the epoch */
        uint64_t token;
        const char *node_id;    /* into the parsed bytes: node_id_len bytes, not NUL-terminated */
        size_t node_id_len;
        const char *message;    /* into the parsed bytes; NULL: none */
        size_t message_len;
} ClusterEnvelope;

/* Parses an envelope of len bytes, pointing into it. -EINVAL when it is not one (of an unknown version too). */
int cluster_envelope_parse(const char *p, size_t len, ClusterEnvelope *ret);

/* A batch envelope, what the publish script PUBLISHes for the publishes of one call (one or more, of one node):
 * "3 <first eventId> <timestamp> <n> <nodeId>\n", then n events "<token> <channel bytes> <message bytes, -1:
 * none>\n<channel><message>\0", whose eventIds are first, first + 1, … first + n - 1 and whose tokens rise. The
 * NUL after each message lets a JSON parser see where its text ends without a copy. */
#define CLUSTER_BATCH_MAX 65536

typedef struct ClusterBatch {
        uint64_t first_event_id;        /* > 0 */
        int64_t timestamp;              /* ms since the epoch, every event's */
        uint64_t n_events;              /* 1..CLUSTER_BATCH_MAX */
        const char *node_id;            /* into the parsed bytes: node_id_len bytes, not NUL-terminated */
        size_t node_id_len;
        const char *next;               /* the cursor of cluster_batch_next() */
        const char *end;
        uint64_t n_read;
        uint64_t last_token;
} ClusterBatch;

typedef struct ClusterBatchEvent {
        uint64_t event_id;
        uint64_t token;
        const char *channel;            /* channel_len bytes, any bytes */
        size_t channel_len;
        const char *message;            /* NULL: none; else message_len bytes followed by a NUL */
        size_t message_len;
} ClusterBatchEvent;

/* Parses the head and checks every event (a malformed batch is refused whole, before any of it is delivered):
 * -EINVAL when p is no batch envelope. */
int cluster_batch_parse(const char *p, size_t len, ClusterBatch *ret);
/* Cluster protocol 4 PUBLISHes a batch as two messages, so that Redis does not copy its events into a new string:
 * the head alone, "4 <first eventId> <timestamp> <n> <nodeId>" (no line feed), then the events as above. The head
 * (*ret points into p: keep it while the batch is read), then the events, checked as cluster_batch_parse() checks
 * them; both -EINVAL when malformed. */
int cluster_batch_parse_head(const char *p, size_t len, ClusterBatch *ret);
int cluster_batch_set_events(ClusterBatch *b, const char *p, size_t len);
/* The next event of a parsed batch: 1 and *ret, 0 after the last, -EINVAL on a malformed one. */
int cluster_batch_next(ClusterBatch *b, ClusterBatchEvent *ret);

/* A replay the cluster's replay script sends to the asking node: "R <token> <refresh 0|1> <lastEventId>\n", then
 * per event "<eventId> <timestamp> <channel bytes> <message bytes, -1: none>\n<channel><message>", in eventId
 * order. */
typedef struct ClusterReplay {
        uint64_t token;
        bool refresh_needed;
        uint64_t last_event_id;  /* the cluster's last eventId when the script ran */
        const char *next;        /* the first event; the cursor of cluster_replay_next() */
        const char *end;
} ClusterReplay;

typedef struct ClusterReplayEvent {
        uint64_t event_id;
        int64_t timestamp;
        const char *channel;    /* channel_len bytes, any bytes */
        size_t channel_len;
        const char *message;    /* NULL: none */
        size_t message_len;
} ClusterReplayEvent;

/* The head; -EINVAL when p is no replay. */
int cluster_replay_parse(const char *p, size_t len, ClusterReplay *ret);
/* The next event: 1 and *ret, 0 at the end, -EINVAL on a malformed one. *ret holds the previous event (zero it
 * before the first call): ids must rise. */
int cluster_replay_next(ClusterReplay *r, ClusterReplayEvent *ret);

/* <prefix><kind><name>: a Redis key or channel name of len + strlen(prefix) + strlen(kind) bytes (name: any bytes;
 * NUL-terminated for convenience). */
int cluster_key(const char *prefix, const char *kind, const char *name, size_t len, char **ret, size_t *ret_len);

/* Escapes the glob characters of Redis' PSUBSCRIBE (*?[]\) in len bytes of s with a backslash: a new string of
 * *ret_len bytes (any bytes, NUL included; NUL-terminated for convenience). */
int cluster_glob_escape(const char *s, size_t len, char **ret, size_t *ret_len);
