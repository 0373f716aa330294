/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uthash.h>

#include "clock.h"
#include "json-util.h"
#include "log.h"
#include "photond-cluster.h"
#include "photond-limits.h"
#include "photond-redis.h"
#include "ratelimit.h"
#include "webhook-auth.h"

/* One Redis channel or pattern the subscriber connection holds, with how many local channel keys need it (a "P"
 * key and a "P:*" key both need <prefix>ch:P). */
typedef struct RedisSub {
        char *key;              /* key_len bytes, any bytes */
        size_t key_len;
        bool pattern;
        unsigned n_refs;
        UT_hash_handle hh;
} RedisSub;

struct Cluster {
        sd_event *event;
        Channels *channels;
        char *url_redacted;
        char *prefix;
        char *node_id;
        size_t node_id_len;

        RedisConn *commands;    /* PUBLISH */
        RedisConn *subscriber;  /* SUBSCRIBE, PSUBSCRIBE: a connection in subscriber mode takes no other command */
        RedisSub *subs;         /* by key; a pattern's key starts with 'p', a channel's with 'c' (one table) */
        ClusterNodes *nodes;    /* the heartbeat, the nodes seen, the cluster's state (photond-cluster-nodes.c) */

        /* A message from another node being published into the local channels: its publish is not sent back. */
        bool relaying;
        /* The subscriber connection was up before: a connect after that is a reconnect, with a gap. */
        bool subscriber_was_connected;
        /* The last message delivered: one publish reaches a node once per matching subscription and pattern, in a
         * row (Redis writes them together), so one remembered (origin, eventId) drops the repeats. */
        char last_origin[CLUSTER_NODE_ID_MAX];
        size_t last_origin_len;
        uint64_t last_event_id;

        /* Method calls (photond-cluster-calls.c): its hooks and this node's calls channel. */
        ClusterCallHooks call_hooks;
        char *calls_channel;
        size_t calls_channel_len;

        RateLimit publish_fail_log;
        uint64_t n_published, n_publish_failed, n_received, n_duplicates, n_invalid;
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

/* ---- subscriptions ---- */

/* The Redis channel of a local channel: <prefix>ch:<name>; *ret_len bytes. */
static int channel_key(Cluster *c, const char *name, size_t len, char **ret, size_t *ret_len) {
        size_t plen = strlen(c->prefix);
        char *k = malloc(plen + 3 + len + 1);

        if (!k)
                return -ENOMEM;
        memcpy(k, c->prefix, plen);
        memcpy(k + plen, "ch:", 3);
        memcpy(k + plen + 3, name, len);
        k[plen + 3 + len] = 0;
        *ret = k;
        *ret_len = plen + 3 + len;
        return 0;
}

static void sub_send(Cluster *c, const RedisSub *s, bool subscribe) {
        const char *cmd = s->pattern ? (subscribe ? "PSUBSCRIBE" : "PUNSUBSCRIBE") :
                                       (subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE");
        int r;

        r = redis_conn_subscribe(c->subscriber, 2, (const char *[]) { cmd, s->key + 1 },
                                 (const size_t[]) { strlen(cmd), s->key_len - 1 });
        if (r < 0 && r != -ENOTCONN)
                log_warning_errno(r, "Cluster: failed to send %s: %m", cmd);
        /* -ENOTCONN: sent with all the others when the connection is back (on_subscriber_connected). */
}

/* Takes key (1 + Redis name bytes, the first 'c' or 'p'). */
static int sub_ref(Cluster *c, char *key, size_t key_len, bool add) {
        RedisSub *s;

        HASH_FIND(hh, c->subs, key, key_len, s);
        if (!add) {
                free(key);
                if (!s || --s->n_refs > 0)
                        return 0;
                sub_send(c, s, false);
                HASH_DEL(c->subs, s);
                free(s->key);
                free(s);
                return 0;
        }
        if (s) {
                free(key);
                s->n_refs++;
                return 0;
        }
        s = new0(RedisSub, 1);
        if (!s) {
                free(key);
                return -ENOMEM;
        }
        *s = (RedisSub) { .key = key, .key_len = key_len, .pattern = key[0] == 'p', .n_refs = 1 };
        HASH_ADD_KEYPTR(hh, c->subs, s->key, s->key_len, s);
        sub_send(c, s, true);
        return 0;
}

static int sub_key(Cluster *c, char kind, const char *name, size_t len, bool glob, char **ret, size_t *ret_len) {
        _cleanup_free_ char *rk = NULL, *esc = NULL;
        size_t rk_len, esc_len;
        char *k;
        int r;

        r = channel_key(c, name, len, &rk, &rk_len);
        if (r < 0)
                return r;
        if (glob) {
                r = cluster_glob_escape(rk, rk_len, &esc, &esc_len);
                if (r < 0)
                        return r;
        }
        k = malloc(1 + (glob ? esc_len : rk_len) + 3);
        if (!k)
                return -ENOMEM;
        k[0] = kind;
        memcpy(k + 1, glob ? esc : rk, glob ? esc_len : rk_len);
        *ret_len = 1 + (glob ? esc_len : rk_len);
        if (glob) {
                memcpy(k + *ret_len, ":*", 2);
                *ret_len += 2;
        }
        k[*ret_len] = 0;
        *ret = k;
        return 0;
}

void cluster_channel_subscribed(Cluster *c, const char *name, size_t len, bool subscribed) {
        char *k;
        size_t k_len;
        int r;

        if (!c)
                return;
        if (len >= 2 && name[len - 2] == ':' && name[len - 1] == '*') {
                /* "P:*": the channels P:… and P itself; the channels decide which of them it serves. */
                r = sub_key(c, 'p', name, len - 2, true, &k, &k_len);
                if (r >= 0)
                        r = sub_ref(c, k, k_len, subscribed);
                if (r >= 0)
                        r = sub_key(c, 'c', name, len - 2, false, &k, &k_len);
                if (r >= 0)
                        r = sub_ref(c, k, k_len, subscribed);
        } else {
                r = sub_key(c, 'c', name, len, false, &k, &k_len);
                if (r >= 0)
                        r = sub_ref(c, k, k_len, subscribed);
        }
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to follow a subscription in Redis: %m");
}

typedef struct KeyList {
        char **names;
        size_t *lens;
        size_t n, alloc;
} KeyList;

static int collect_subscribed(const ChannelInfo *info, void *userdata) {
        KeyList *l = userdata;

        if (info->subscribers == 0)
                return 0;
        if (l->n == l->alloc) {
                size_t na = MAX(l->alloc * 2, (size_t) 16);
                char **nn = realloc(l->names, na * sizeof(char*));
                size_t *nl;

                if (!nn)
                        return -ENOMEM;
                l->names = nn;
                nl = realloc(l->lens, na * sizeof(size_t));
                if (!nl)
                        return -ENOMEM;
                l->lens = nl;
                l->alloc = na;
        }
        l->names[l->n] = malloc(info->name_len + 1);
        if (!l->names[l->n])
                return -ENOMEM;
        memcpy(l->names[l->n], info->name, info->name_len + 1);
        l->lens[l->n++] = info->name_len;
        return 0;
}

/* The subscriber connection was lost and is back: what other nodes published meanwhile never came here, so the
 * local subscribers of every key are told (refresh_needed) and replays from before now say so too. */
static void announce_gap(Cluster *c) {
        KeyList l = {};
        int r;

        r = channels_foreach(c->channels, collect_subscribed, &l);
        for (size_t i = 0; i < l.n; i++) {
                if (r >= 0)
                        r = channels_gap(c->channels, l.names[i], l.lens[i]);
                free(l.names[i]);
        }
        free(l.names);
        free(l.lens);
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to tell the subscribers they may have missed events: %m");
        else
                log_info("Cluster: refresh_needed sent on %zu subscribed channel keys (Redis was out of reach).", l.n);
}

static void on_subscriber_connected(RedisConn *conn, void *userdata) {
        Cluster *c = userdata;
        RedisSub *s, *tmp;

        HASH_ITER(hh, c->subs, s, tmp)
                sub_send(c, s, true);
        log_info("Cluster: node %s subscribed to %u Redis channels and patterns.", c->node_id, HASH_COUNT(c->subs));
        if (c->subscriber_was_connected)
                announce_gap(c);
        c->subscriber_was_connected = true;
        cluster_nodes_conn_changed(c->nodes);
        if (c->call_hooks.connection_changed && cluster_connected(c))
                c->call_hooks.connection_changed(true, c->call_hooks.userdata);
}

static void on_commands_connected(RedisConn *conn, void *userdata) {
        Cluster *c = userdata;

        cluster_nodes_conn_changed(c->nodes);
        if (c->call_hooks.connection_changed && cluster_connected(c))
                c->call_hooks.connection_changed(true, c->call_hooks.userdata);
}

static void on_disconnected(RedisConn *conn, const char *error, void *userdata) {
        Cluster *c = userdata;

        /* Subscriptions are sent again at the reconnect; the cluster's state logs one line for both. */
        cluster_nodes_conn_changed(c->nodes);
        if (c->call_hooks.connection_changed)
                c->call_hooks.connection_changed(false, c->call_hooks.userdata);
}

/* ---- messages ---- */

static void deliver(Cluster *c, const char *rchannel, size_t rchannel_len, const char *payload, size_t payload_len) {
        size_t plen = strlen(c->prefix);
        _cleanup_(json_object_putp) struct json_object *msg = NULL;
        const char *text = NULL;
        size_t text_len = 0;
        ClusterEnvelope e;
        int r;

        if (rchannel_len < plen + 3 || memcmp(rchannel, c->prefix, plen) != 0 ||
            memcmp(rchannel + plen, "ch:", 3) != 0 || cluster_envelope_parse(payload, payload_len, &e) < 0) {
                c->n_invalid++;
                return;
        }
        if (e.node_id_len == c->node_id_len && memcmp(e.node_id, c->node_id, e.node_id_len) == 0)
                return;         /* ours: fanned out here already */
        if (e.event_id == c->last_event_id && e.node_id_len == c->last_origin_len &&
            memcmp(e.node_id, c->last_origin, e.node_id_len) == 0) {
                c->n_duplicates++;
                return;
        }
        memcpy(c->last_origin, e.node_id, e.node_id_len);
        c->last_origin_len = e.node_id_len;
        c->last_event_id = e.event_id;

        if (e.message_len > limits.MAX_MESSAGE_BYTES) {
                /* This node's cap, before any parse: another node's may be larger. */
                c->n_invalid++;
                return;
        }
        if (e.message) {
                /* Redis is a boundary: the channels send what they are given as it is, so it is parsed and
                 * printed as json-c prints (what a local publish vouches for). */
                struct json_tokener *tok = json_tokener_new();

                if (!tok) {
                        log_oom();
                        return;
                }
                msg = json_tokener_parse_ex(tok, e.message, (int) e.message_len);
                if (!msg || json_tokener_get_error(tok) != json_tokener_success ||
                    json_tokener_get_parse_end(tok) != e.message_len) {
                        json_tokener_free(tok);
                        c->n_invalid++;
                        return;
                }
                json_tokener_free(tok);
                text = json_object_to_json_string_length(msg, JSON_FORMAT_FLAGS, &text_len);
                if (!text) {
                        log_oom();
                        return;
                }
        }

        c->relaying = true;
        r = channels_publish_serialized(c->channels, rchannel + plen + 3, rchannel_len - plen - 3, text, text_len,
                                        NULL, NULL);
        c->relaying = false;
        if (r < 0) {
                c->n_invalid++;
                log_debug_errno(r, "Cluster: a message from %.*s was not published here: %m", (int) e.node_id_len,
                                e.node_id);
                return;
        }
        c->n_received++;
}

static void on_push(RedisConn *conn, redisReply *reply, void *userdata) {
        Cluster *c = userdata;
        redisReply *ch, *payload;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING)
                return;
        if (streq(reply->element[0]->str, "message") && reply->elements == 3) {
                ch = reply->element[1];
                payload = reply->element[2];
        } else if (streq(reply->element[0]->str, "pmessage") && reply->elements == 4) {
                ch = reply->element[2];
                payload = reply->element[3];
        } else {
                (void) cluster_nodes_push(c->nodes, NULL, 0);
                return;         /* (un)subscribe confirmations */
        }
        if (ch->type != REDIS_REPLY_STRING || payload->type != REDIS_REPLY_STRING ||
            cluster_nodes_push(c->nodes, ch->str, ch->len))
                return;
        if (c->calls_channel && ch->len == c->calls_channel_len &&
            memcmp(ch->str, c->calls_channel, ch->len) == 0) {
                if (c->call_hooks.message)
                        c->call_hooks.message(payload->str, payload->len, c->call_hooks.userdata);
                return;
        }
        deliver(c, ch->str, ch->len, payload->str, payload->len);
}

static void on_publish_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        Cluster *c = userdata;

        if (reply && reply->type != REDIS_REPLY_ERROR)
                return;
        c->n_publish_failed++;
        if (ratelimit_below(&c->publish_fail_log, now_usec(CLOCK_MONOTONIC)))
                log_warning("Cluster: a publish did not reach Redis: %s.",
                            reply ? reply->str : (redis_conn_last_error(conn) ?: "no answer"));
}

void cluster_channel_published(Cluster *c, const char *name, size_t len, const char *message, size_t message_len,
                               uint64_t event_id) {
        _cleanup_free_ char *key = NULL, *env = NULL;
        size_t key_len, env_len;
        int r;

        if (!c || c->relaying)
                return;
        r = channel_key(c, name, len, &key, &key_len);
        if (r >= 0)
                r = cluster_envelope_build(c->node_id, event_id, message, message_len, &env, &env_len);
        if (r >= 0)
                r = redis_conn_command(c->commands, on_publish_reply, c, 3,
                                       (const char *[]) { "PUBLISH", key, env },
                                       (const size_t[]) { 7, key_len, env_len });
        if (r < 0) {
                /* Published here, not to the other nodes: the acknowledged-after-Redis publish is not built
                 * yet (docs/cluster.md). */
                c->n_publish_failed++;
                if (ratelimit_below(&c->publish_fail_log, now_usec(CLOCK_MONOTONIC)))
                        log_warning_errno(r, "Cluster: a publish was not sent to Redis: %s",
                                          r == -ENOTCONN ? "not connected" : strerror(-r));
                return;
        }
        c->n_published++;
}

RedisConn* cluster_commands(Cluster *c) {
        return c ? c->commands : NULL;
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
            (r = json_add_int64(o, "redisSubscriptions", HASH_COUNT(c->subs))) < 0 ||
            (r = json_add_int64(o, "pending", (int64_t) redis_conn_pending(c->commands))) < 0 ||
            (r = json_add_int64(o, "published", (int64_t) c->n_published)) < 0 ||
            (r = json_add_int64(o, "publishFailed", (int64_t) c->n_publish_failed)) < 0 ||
            (r = json_add_int64(o, "received", (int64_t) c->n_received)) < 0 ||
            (r = json_add_int64(o, "duplicates", (int64_t) c->n_duplicates)) < 0 ||
            (r = json_add_int64(o, "invalid", (int64_t) c->n_invalid)) < 0 ||
            (r = cluster_nodes_add_status(c->nodes, o)) < 0)
                return r;
        return json_add(data, "cluster", TAKE_PTR(o));
}

ClusterNodes* cluster_get_nodes(Cluster *c) {
        return c ? c->nodes : NULL;
}

/* ---- lifecycle ---- */

int cluster_new(const ClusterConfig *config, Cluster **ret) {
        _cleanup_(cluster_freep) Cluster *c = NULL;
        const ClusterSettings *s = config->settings;
        int r;

        c = new0(Cluster, 1);
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(config->event);
        c->channels = config->channels;
        c->publish_fail_log = (RateLimit) { .interval = 10 * USEC_PER_SEC, .burst = 5 };
        c->prefix = strdup(s->prefix);
        c->node_id = strdup(s->node_id);
        if (!c->prefix || !c->node_id)
                return -ENOMEM;
        c->node_id_len = strlen(c->node_id);
        r = cluster_url_redacted(&s->url, &c->url_redacted);
        if (r < 0)
                return r;

        r = redis_conn_new(&(RedisConnConfig) { .event = c->event, .url = &s->url, .name = "commands",
                                                .command_timeout_usec = s->caps.command_timeout_usec,
                                                .max_pending = s->caps.max_pending,
                                                .backoff_max_usec = s->caps.reconnect_max_usec,
                                                .scripts = config->scripts },
                           &(RedisConnHooks) {
                                   .connected = on_commands_connected,
                                   .disconnected = on_disconnected,
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
                                   .disconnected = on_disconnected,
                                   .push = on_push,
                                   .userdata = c,
                           }, &c->subscriber);
        if (r < 0)
                return r;
        r = cluster_nodes_new(&(ClusterNodesConfig) {
                                      .event = c->event,
                                      .commands = c->commands,
                                      .subscriber = c->subscriber,
                                      .prefix = c->prefix,
                                      .node_id = c->node_id,
                                      .heartbeat_usec = s->caps.heartbeat_usec,
                                      .changed = config->changed,
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
        RedisSub *s, *tmp;

        if (!c)
                return NULL;
        c->call_hooks = (ClusterCallHooks) {};
        c->subscriber = redis_conn_free(c->subscriber);
        c->commands = redis_conn_free(c->commands);
        /* after the connections: a heartbeat they still hold is answered as they go */
        c->nodes = cluster_nodes_free(c->nodes);
        HASH_ITER(hh, c->subs, s, tmp) {
                HASH_DEL(c->subs, s);
                free(s->key);
                free(s);
        }
        sd_event_unref(c->event);
        free(c->url_redacted);
        free(c->prefix);
        free(c->node_id);
        free(c->calls_channel);
        return mfree(c);
}

/* ---- for the method calls (photond-cluster-calls.c) ---- */

int cluster_set_call_hooks(Cluster *c, const ClusterCallHooks *hooks) {
        char *k;

        c->call_hooks = hooks ? *hooks : (ClusterCallHooks) {};
        if (!hooks || c->calls_channel)
                return 0;
        if (asprintf(&c->calls_channel, "%snode:%s:calls", c->prefix, c->node_id) < 0) {
                c->calls_channel = NULL;
                return -ENOMEM;
        }
        c->calls_channel_len = strlen(c->calls_channel);
        /* In the subscriptions' table (a 'c' key), so that it is sent again at every reconnect. */
        if (asprintf(&k, "c%s", c->calls_channel) < 0)
                return -ENOMEM;
        return sub_ref(c, k, c->calls_channel_len + 1, true);
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
