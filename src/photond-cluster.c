/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "json-util.h"
#include "log.h"
#include "photond-cluster-channels.h"
#include "photond-cluster.h"
#include "photond-limits.h"
#include "photond-redis.h"
#include "webhook-auth.h"

struct Cluster {
        sd_event *event;
        Channels *channels;
        char *url_redacted;
        char *prefix;
        char *node_id;

        RedisConn *commands;    /* the scripts: publishes, replays, heartbeats */
        RedisConn *subscriber;  /* PSUBSCRIBE, SUBSCRIBE: a connection in subscriber mode takes no other command */
        ClusterChannels *cc;    /* the channels' backend (photond-cluster-channels.c) */
        ClusterNodes *nodes;    /* the heartbeat, the nodes seen, the cluster's state (photond-cluster-nodes.c) */
        /* The command connection's scripts: the channels' and the other parts' (ClusterConfig.scripts). */
        const RedisScript **scripts;

        /* Method calls (photond-cluster-calls.c): its hooks and this node's calls channel. */
        ClusterCallHooks call_hooks;
        char *calls_channel;
        size_t calls_channel_len;
};

/* ---- settings ---- */

void cluster_settings_done(ClusterSettings *s) {
        cluster_url_done(&s->url);
        free(s->url_source);
        free(s->prefix);
        free(s->node_id);
        *s = (ClusterSettings) {};
}

static int default_node_id(bool system, char **ret) {
        char host[256] = {};

        if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
                strcpy(host, "localhost");
        if (system)
                return asprintf(ret, "%s@system", host) < 0 ? -ENOMEM : 0;
        return asprintf(ret, "%s@user-%u", host, (unsigned) getuid()) < 0 ? -ENOMEM : 0;
}

int cluster_settings_from_env(bool system, ClusterSettings *ret) {
        _cleanup_(cluster_settings_done) ClusterSettings s = {};
        const char *creds = getenv("CREDENTIALS_DIRECTORY"), *e;
        _cleanup_free_ char *path = NULL;
        char *buf = NULL;
        size_t len = 0;
        int r;

        if (creds) {
                if (asprintf(&path, "%s/cluster-url", creds) < 0)
                        return log_oom();
                r = webhook_secret_read_file(path, &buf, &len);
                if (r >= 0)
                        s.url_source = strdup("credential cluster-url");
                else if (r != -ENOENT && r != -ENODATA)
                        return log_error_errno(r, "Failed to read %s: %m", path);
        }
        if (!buf && (e = getenv("PHOTOND_CLUSTER_URL")) && e[0]) {
                buf = strdup(e);
                if (!buf)
                        return log_oom();
                len = strlen(buf);
                s.url_source = strdup("PHOTOND_CLUSTER_URL");
        }
        if (!buf) {
                *ret = (ClusterSettings) {};
                return 0;
        }
        r = strlen(buf) == len ? cluster_url_parse(buf, &s.url) : -EINVAL;
        explicit_bzero(buf, len);
        free(buf);
        if (r == -ENOMEM || !s.url_source)
                return log_oom();
        if (r < 0)
                /* Never the URL itself: it may hold a password. */
                return log_error_errno(r, "Invalid cluster URL in %s: expected redis://[user:password@]host[:port][/db] "
                                       "or unix:///path[?db=N].", s.url_source);

        e = getenv("PHOTOND_CLUSTER_PREFIX");
        s.prefix = strdup(e ?: CLUSTER_DEFAULT_PREFIX);
        if (!s.prefix)
                return log_oom();
        if (!cluster_prefix_valid(s.prefix))
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid PHOTOND_CLUSTER_PREFIX=%s: up to %d "
                                       "printable characters without spaces.", s.prefix, CLUSTER_PREFIX_MAX);
        e = getenv("PHOTOND_NODE_ID");
        if (e && e[0])
                s.node_id = strdup(e);
        else if (default_node_id(system, &s.node_id) < 0)
                s.node_id = NULL;
        if (!s.node_id)
                return log_oom();
        if (!cluster_node_id_valid(s.node_id))
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid node id \"%s\" (PHOTOND_NODE_ID): 1 to %d "
                                       "characters of A-Z a-z 0-9 . _ @ : -.", s.node_id, CLUSTER_NODE_ID_MAX);
        r = cluster_caps_from_env(&s.caps);
        if (r < 0)
                return r;
        s.enabled = true;
        *ret = s;
        s = (ClusterSettings) {};
        return 0;
}

/* ---- the connections ---- */

static void calls_connection_changed(Cluster *c) {
        if (c->call_hooks.connection_changed)
                c->call_hooks.connection_changed(cluster_connected(c), c->call_hooks.userdata);
}

static void calls_subscribe(Cluster *c) {
        int r;

        if (!c->calls_channel || redis_conn_state(c->subscriber) != REDIS_CONN_CONNECTED)
                return;
        r = redis_conn_subscribe(c->subscriber, 2, (const char *[]) { "SUBSCRIBE", c->calls_channel },
                                 (const size_t[]) { 9, c->calls_channel_len });
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to subscribe to this node's calls channel: %m");
}

static void on_commands_connected(RedisConn *conn, void *userdata) {
        Cluster *c = userdata;

        cluster_channels_commands_connected(c->cc);
        cluster_nodes_conn_changed(c->nodes);
        calls_connection_changed(c);
}

static void on_commands_disconnected(RedisConn *conn, const char *error, void *userdata) {
        Cluster *c = userdata;

        /* The cluster's state logs one line for both connections. */
        cluster_channels_commands_disconnected(c->cc);
        cluster_nodes_conn_changed(c->nodes);
        calls_connection_changed(c);
}

static void on_subscriber_connected(RedisConn *conn, void *userdata) {
        Cluster *c = userdata;

        cluster_channels_subscriber_connected(c->cc);
        calls_subscribe(c);
        cluster_nodes_conn_changed(c->nodes);
        calls_connection_changed(c);
}

static void on_subscriber_disconnected(RedisConn *conn, const char *error, void *userdata) {
        Cluster *c = userdata;

        cluster_channels_subscriber_disconnected(c->cc);
        cluster_nodes_conn_changed(c->nodes);
        calls_connection_changed(c);
}

static bool is_calls_channel(Cluster *c, const redisReply *ch) {
        return c->calls_channel && ch->type == REDIS_REPLY_STRING && ch->len == c->calls_channel_len &&
                memcmp(ch->str, c->calls_channel, ch->len) == 0;
}

static void on_push(RedisConn *conn, redisReply *reply, void *userdata) {
        Cluster *c = userdata;
        redisReply *ch = NULL;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING)
                return;
        if (streq(reply->element[0]->str, "message") && reply->elements == 3) {
                ch = reply->element[1];
                if (is_calls_channel(c, ch)) {
                        if (c->call_hooks.message && reply->element[2]->type == REDIS_REPLY_STRING)
                                c->call_hooks.message(reply->element[2]->str, reply->element[2]->len,
                                                      c->call_hooks.userdata);
                        return;
                }
        } else if (streq(reply->element[0]->str, "subscribe") && is_calls_channel(c, reply->element[1]))
                return;         /* the calls channel's confirmation: nothing of the channels' */
        else if (streq(reply->element[0]->str, "pmessage") && reply->elements == 4)
                ch = reply->element[2];
        /* The nodes' heartbeats first; the rest (and every (un)subscribe confirmation) is the channels'. */
        if (!ch)
                (void) cluster_nodes_push(c->nodes, NULL, 0);
        else if (ch->type != REDIS_REPLY_STRING || cluster_nodes_push(c->nodes, ch->str, ch->len))
                return;
        cluster_channels_push(c->cc, reply);
}

ClusterChannels* cluster_get_channels(Cluster *c) {
        return c ? c->cc : NULL;
}

/* ---- status ---- */

int cluster_add_status(Cluster *c, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        RedisConn *worst;
        ClusterState state;
        uint64_t since;
        int r;

        if (!c)
                return 0;
        if (!o)
                return -ENOMEM;
        /* Both connections or none: the worse of the two is the state (the nodes part follows it). */
        worst = redis_conn_state(c->commands) != REDIS_CONN_CONNECTED ? c->commands : c->subscriber;
        state = cluster_nodes_state(c->nodes, &since);
        if ((r = json_add_string(o, "url", c->url_redacted)) < 0 ||
            (r = json_add_string(o, "nodeId", c->node_id)) < 0 ||
            (r = json_add_string(o, "prefix", c->prefix)) < 0 ||
            (r = json_add_string(o, "state", cluster_state_to_string(state))) < 0 ||
            (r = json_add_bool(o, "connected", state == CLUSTER_STATE_CONNECTED)) < 0 ||
            (r = json_add_int64(o, "since", (int64_t) (since / USEC_PER_MSEC))) < 0 ||
            (r = json_add_string(o, "lastError", redis_conn_last_error(worst))) < 0 ||
            (r = json_add_int64(o, "pending", (int64_t) redis_conn_pending(c->commands))) < 0 ||
            (r = cluster_channels_add_status(c->cc, o)) < 0 ||
            (r = cluster_nodes_add_status(c->nodes, o)) < 0)
                return r;
        return json_add(data, "cluster", TAKE_PTR(o));
}

ClusterNodes* cluster_get_nodes(Cluster *c) {
        return c ? c->nodes : NULL;
}

/* ---- lifecycle ---- */

/* a then b, each NULL-terminated (or NULL), as one new NULL-terminated array. */
static int scripts_join(const RedisScript *const *a, const RedisScript *const *b, const RedisScript ***ret) {
        size_t na = 0, nb = 0;
        const RedisScript **v;

        while (a && a[na])
                na++;
        while (b && b[nb])
                nb++;
        v = new0(const RedisScript*, na + nb + 1);
        if (!v)
                return -ENOMEM;
        if (na > 0)
                memcpy(v, a, na * sizeof(*v));
        if (nb > 0)
                memcpy(v + na, b, nb * sizeof(*v));
        *ret = v;
        return 0;
}

int cluster_new(const ClusterConfig *config, Cluster **ret) {
        _cleanup_(cluster_freep) Cluster *c = NULL;
        const ClusterSettings *s = config->settings;
        int r;

        c = new0(Cluster, 1);
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(config->event);
        c->channels = config->channels;
        c->prefix = strdup(s->prefix);
        c->node_id = strdup(s->node_id);
        if (!c->prefix || !c->node_id)
                return -ENOMEM;
        r = cluster_url_redacted(&s->url, &c->url_redacted);
        if (r < 0)
                return r;
        r = cluster_channels_new(&(ClusterChannelsConfig) {
                                         .event = c->event,
                                         .channels = c->channels,
                                         .prefix = c->prefix,
                                         .node_id = c->node_id,
                                         .url_redacted = c->url_redacted,
                                         .command_timeout_usec = s->caps.command_timeout_usec,
                                 }, &c->cc);
        if (r < 0)
                return r;

        r = scripts_join(cluster_channels_scripts(c->cc), config->scripts, &c->scripts);
        if (r < 0)
                return r;
        r = redis_conn_new(&(RedisConnConfig) { .event = c->event, .url = &s->url, .name = "commands",
                                                .command_timeout_usec = s->caps.command_timeout_usec,
                                                .max_pending = s->caps.max_pending,
                                                .backoff_max_usec = s->caps.reconnect_max_usec,
                                                .scripts = c->scripts },
                           &(RedisConnHooks) {
                                   .connected = on_commands_connected,
                                   .disconnected = on_commands_disconnected,
                                   .userdata = c,
                           }, &c->commands);
        if (r < 0)
                return r;
        r = redis_conn_new(&(RedisConnConfig) { .event = c->event, .url = &s->url, .name = "subscriber",
                                                .command_timeout_usec = s->caps.command_timeout_usec,
                                                .max_pending = s->caps.max_pending,
                                                .backoff_max_usec = s->caps.reconnect_max_usec },
                           &(RedisConnHooks) {
                                   .connected = on_subscriber_connected,
                                   .disconnected = on_subscriber_disconnected,
                                   .push = on_push,
                                   .userdata = c,
                           }, &c->subscriber);
        if (r < 0)
                return r;
        cluster_channels_set_connections(c->cc, c->commands, c->subscriber);
        r = cluster_nodes_new(&(ClusterNodesConfig) {
                                      .event = c->event,
                                      .commands = c->commands,
                                      .subscriber = c->subscriber,
                                      .prefix = c->prefix,
                                      .node_id = c->node_id,
                                      .heartbeat_usec = s->caps.heartbeat_usec,
                                      .changed = config->changed,
                                      .locks_counted = config->locks_counted,
                                      .userdata = config->userdata,
                              }, &c->nodes);
        if (r < 0)
                return r;

        log_info("Cluster mode: node %s, Redis %s (from %s), key prefix \"%s\".", c->node_id, c->url_redacted,
                 s->url_source ?: "?", c->prefix);
        *ret = TAKE_PTR(c);
        return 0;
}

Cluster* cluster_free(Cluster *c) {
        if (!c)
                return NULL;
        c->call_hooks = (ClusterCallHooks) {};
        /* The connections first: their pending commands' callbacks still reach the channels' backend and the
         * nodes (a heartbeat they still hold is answered as they go). */
        c->subscriber = redis_conn_free(c->subscriber);
        c->commands = redis_conn_free(c->commands);
        c->nodes = cluster_nodes_free(c->nodes);
        if (c->cc)
                cluster_channels_connections_gone(c->cc);
        c->cc = cluster_channels_free(c->cc);
        sd_event_unref(c->event);
        free(c->url_redacted);
        free(c->prefix);
        free(c->node_id);
        free(c->calls_channel);
        free(c->scripts);
        return mfree(c);
}

/* ---- for the other cluster parts (photond-cluster-jobs.c, photond-cluster-calls.c) ---- */

int cluster_set_call_hooks(Cluster *c, const ClusterCallHooks *hooks) {
        c->call_hooks = hooks ? *hooks : (ClusterCallHooks) {};
        if (!hooks || c->calls_channel)
                return 0;
        if (asprintf(&c->calls_channel, "%snode:%s:calls", c->prefix, c->node_id) < 0) {
                c->calls_channel = NULL;
                return -ENOMEM;
        }
        c->calls_channel_len = strlen(c->calls_channel);
        /* Sent again at every reconnect (on_subscriber_connected()). */
        calls_subscribe(c);
        return 0;
}

RedisConn* cluster_commands(Cluster *c) {
        return c ? c->commands : NULL;
}

const char* cluster_node_id(Cluster *c) {
        return c->node_id;
}

const char* cluster_prefix(Cluster *c) {
        return c->prefix;
}

bool cluster_connected(Cluster *c) {
        return redis_conn_state(c->commands) == REDIS_CONN_CONNECTED &&
               redis_conn_state(c->subscriber) == REDIS_CONN_CONNECTED;
}
