/* SPDX-License-Identifier: MIT */

/* Cluster mode's method calls (photond-cluster-calls.h). On the caller's node, a call is an OutCall from the
 * remote provider's invoke to the result; the node that runs it is picked in Redis by one script, which also sends
 * it the call, so that the pick and the send cannot be told apart by a node that dies in between. On the
 * provider's node, another node's call is an ordinary command of the remote caller, whose caller id is
 * "<node> <call id>": where its answers go. Every message between nodes is a ClusterCallMsg (cluster-call-msg.c),
 * parsed and checked before anything here trusts it. */

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <uthash.h>

#include "cluster-call-msg.h"
#include "cluster-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-cluster-calls.h"
#include "photond-cluster.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "photond-redis.h"
#include "ratelimit.h"
#include "string-util.h"

/* KEYS[1] <prefix>providers:<photon> (node id → "1"), KEYS[2] <prefix>providers-rr:<photon> (the round-robin
 * counter); ARGV[1] "<prefix>node:", ARGV[2] ":calls", ARGV[3] the invoke message, ARGV[4] this node's id. Sends
 * the message to the next node of the hash, round-robin, that has a subscriber on its calls channel; a node without
 * one (it died, or lost Redis) is dropped from the hash (it writes itself back when it connects again). Returns the
 * node's id, or nil when no node took it. */
static const char pick_script[] =
        "local nodes = redis.call('HKEYS', KEYS[1])\n"
        "local n = #nodes\n"
        "if n == 0 then return false end\n"
        "local start = redis.call('INCR', KEYS[2])\n"
        "for i = 0, n - 1 do\n"
        "  local node = nodes[((start + i) % n) + 1]\n"
        "  if node ~= ARGV[4] then\n"
        "    if redis.call('PUBLISH', ARGV[1] .. node .. ARGV[2], ARGV[3]) > 0 then return node end\n"
        "    redis.call('HDEL', KEYS[1], node)\n"
        "  end\n"
        "end\n"
        "return false\n";

typedef struct ClusterCalls ClusterCalls;

/* A node that runs calls of this node: checked every CLUSTER_CALL_CHECK_USEC while it does. */
typedef struct RemoteNode {
        UT_hash_handle hh;
        unsigned n_calls;
        char id[];
} RemoteNode;

/* A call of this node that another node runs (or is being picked for). */
typedef struct OutCall {
        UT_hash_handle hh;
        char *photon, *method;
        RemoteNode *node;               /* NULL while the pick is under way */
        char *failure;                  /* to be answered with this error from the defer source */
        char id[];                      /* the call's invoke id */
} OutCall;

typedef enum TicketKind {
        TICKET_PICK,                    /* key: the invoke id */
        TICKET_CHECK,                   /* key: the node id */
        TICKET_PROMPT,                  /* key: the caller id the prompt went to */
        TICKET_NONE,
} TicketKind;

/* What a Redis reply is about. The connection outlives us (the Cluster is freed after us): a ticket whose cc is
 * NULL is only freed. */
typedef struct Ticket {
        ClusterCalls *cc;
        LIST_FIELDS(struct Ticket, tickets);
        TicketKind kind;
        char key[];
} Ticket;

struct ClusterCalls {
        sd_event *event;
        Cluster *cluster;
        Dispatcher *dispatcher;

        DispatchPeer provider_peer;     /* the other nodes' providers, for this node's calls */
        DispatchPeer caller_peer;       /* the other nodes' callers, for the calls they send here */

        OutCall *out;                   /* by invoke id */
        RemoteNode *nodes;              /* by node id */
        LIST_HEAD(Ticket, tickets);
        sd_event_source *fail_source;   /* answers the OutCalls that failed inside the invoke op */
        sd_event_source *check_timer;

        bool relaying;                  /* starting another node's call: it never goes on to a third node */
        /* Ends the call ids this node sends ("<invoke id>.<nonce>"): a node that crashed and came back issues
         * invoke ids again from 1, and an answer to the call of its last life must not name one of this life. */
        char nonce[17];
        RateLimit log_limit;
        uint64_t n_sent, n_failed, n_served, n_invalid, n_stray;
};

/* ---- bookkeeping ---- */

static RemoteNode* node_ref(ClusterCalls *cc, const char *id) {
        RemoteNode *n;
        size_t l = strlen(id);

        HASH_FIND(hh, cc->nodes, id, l, n);
        if (!n) {
                n = calloc(1, sizeof(RemoteNode) + l + 1);
                if (!n)
                        return NULL;
                memcpy(n->id, id, l + 1);
                HASH_ADD(hh, cc->nodes, id[0], l, n);
        }
        n->n_calls++;
        if (cc->check_timer)
                (void) sd_event_source_set_enabled(cc->check_timer, SD_EVENT_ON);
        return n;
}

static void node_unref(ClusterCalls *cc, RemoteNode *n) {
        if (!n || --n->n_calls > 0)
                return;
        HASH_DEL(cc->nodes, n);
        free(n);
}

static OutCall* out_find(ClusterCalls *cc, const char *id) {
        OutCall *o;

        HASH_FIND_STR(cc->out, id, o);
        return o;
}

/* The id a call of ours has between nodes: "<invoke id>.<nonce>". */
static int wire_id(ClusterCalls *cc, const char *invoke_id, char buf[static CLUSTER_CALL_ID_MAX + 1]) {
        int k = snprintf(buf, CLUSTER_CALL_ID_MAX + 1, "%s.%s", invoke_id, cc->nonce);

        return k < 0 || k > CLUSTER_CALL_ID_MAX ? -EINVAL : 0;
}

/* The OutCall a wire id names, or NULL (another life's, or unknown). */
static OutCall* out_find_wire(ClusterCalls *cc, const char *wire) {
        char id[CLUSTER_CALL_ID_MAX + 1];
        const char *dot = strrchr(wire, '.');

        if (!dot || !streq(dot + 1, cc->nonce) || (size_t) (dot - wire) > CLUSTER_CALL_ID_MAX)
                return NULL;
        memcpy(id, wire, dot - wire);
        id[dot - wire] = 0;
        return out_find(cc, id);
}

static void out_free(ClusterCalls *cc, OutCall *o) {
        if (!o)
                return;
        HASH_DEL(cc->out, o);
        node_unref(cc, o->node);
        free(o->photon);
        free(o->method);
        free(o->failure);
        free(o);
}

/* Answers the call with an error now (never from inside the invoke op: the call is not linked to us yet). */
static void out_fail_now(ClusterCalls *cc, OutCall *o, const char *message) {
        DispatchCall *call = dispatcher_provider_call(cc->dispatcher, &cc->provider_peer, o->id);

        if (call) {
                dispatch_call_answer(call, false, NULL, NULL, NULL, message);
                cc->n_failed++;
                if (ratelimit_below(&cc->log_limit, now_usec(CLOCK_MONOTONIC)))
                        log_warning("Cluster: %s/%s failed: %s", o->photon, o->method, message);
        }
        out_free(cc, o);
}

static void out_fail_later(ClusterCalls *cc, OutCall *o, const char *fmt, ...) _printf_(3, 4);
static void out_fail_later(ClusterCalls *cc, OutCall *o, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&o->failure, fmt, ap) < 0)
                o->failure = NULL;
        va_end(ap);
        if (!o->failure)
                o->failure = strdup("Method failed (out of memory)");
        (void) sd_event_source_set_enabled(cc->fail_source, SD_EVENT_ONESHOT);
}

static int on_fail(sd_event_source *s, void *userdata) {
        ClusterCalls *cc = userdata;
        OutCall *o, *tmp;

        HASH_ITER(hh, cc->out, o, tmp)
                if (o->failure)
                        out_fail_now(cc, o, o->failure);
        return 0;
}

static Ticket* ticket_new(ClusterCalls *cc, TicketKind kind, const char *key) {
        size_t l = strlen(key);
        Ticket *t = calloc(1, sizeof(Ticket) + l + 1);

        if (!t)
                return NULL;
        t->cc = cc;
        t->kind = kind;
        memcpy(t->key, key, l + 1);
        LIST_PREPEND(tickets, cc->tickets, t);
        return t;
}

/* Takes the ticket back from the list; returns its owner, or NULL if there is none any more. */
static ClusterCalls* ticket_take(Ticket *t) {
        ClusterCalls *cc = t->cc;

        if (cc)
                LIST_REMOVE(tickets, cc->tickets, t);
        return cc;
}

/* "<prefix>node:<node>:calls". */
static char* calls_channel(ClusterCalls *cc, const char *node) {
        char *s;

        if (asprintf(&s, "%snode:%s:calls", cluster_prefix(cc->cluster), node) < 0)
                return NULL;
        return s;
}

static const char* redis_error(ClusterCalls *cc) {
        return redis_conn_last_error(cluster_commands(cc->cluster)) ?: "not connected";
}

/* ---- sending ---- */

static void on_publish_reply(RedisConn *conn, redisReply *reply, void *userdata);

/* PUBLISHes a message to node's calls channel; with a ticket (taken, also on failure), the reply comes to
 * on_publish_reply(). -E2BIG past CLUSTER_CALL_MAX_MESSAGE_BYTES, -ENOTCONN, -ENOMEM, … */
static int send_msg(ClusterCalls *cc, const char *node, const ClusterCallMsg *m, Ticket *t) {
        _cleanup_free_ char *text = NULL, *channel = NULL;
        size_t len;
        int r;

        r = cluster_call_msg_build(m, &text, &len);
        if (r >= 0 && len > CLUSTER_CALL_MAX_MESSAGE_BYTES)
                r = -E2BIG;
        if (r >= 0 && !(channel = calls_channel(cc, node)))
                r = -ENOMEM;
        if (r >= 0)
                r = redis_conn_command(cluster_commands(cc->cluster), t ? on_publish_reply : NULL, t, 3,
                                       (const char *[]) { "PUBLISH", channel, text },
                                       (const size_t[]) { 7, strlen(channel), len });
        if (r < 0 && t) {
                ticket_take(t);
                free(t);
        }
        return r;
}

/* ---- the caller's side: the remote provider peer ---- */

static ClusterCalls* of_provider_peer(DispatchPeer *p) {
        return (ClusterCalls*) ((uint8_t*) p - offsetof(ClusterCalls, provider_peer));
}

static ClusterCalls* of_caller_peer(DispatchPeer *p) {
        return (ClusterCalls*) ((uint8_t*) p - offsetof(ClusterCalls, caller_peer));
}

static void on_pick_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        Ticket *t = userdata;
        ClusterCalls *cc = ticket_take(t);
        OutCall *o = cc ? out_find(cc, t->key) : NULL;

        if (!o)
                goto finish;
        if (!reply)
                out_fail_now(cc, o, "Cluster unavailable: Redis did not answer while a node providing the photon "
                             "was looked for. Retry when the cluster is connected again (photonctl status)");
        else if (reply->type == REDIS_REPLY_NIL) {
                _cleanup_free_ char *msg = NULL;

                if (asprintf(&msg, "Cannot initialize photon '%s': no provider is connected to this node or to "
                             "any other node of the cluster, and there is no executable handler of %s/%s here",
                             o->photon, o->photon, o->method) < 0)
                        msg = NULL;
                out_fail_now(cc, o, msg ?: "Cannot initialize photon: no provider in the cluster");
        } else if (reply->type == REDIS_REPLY_STRING && cluster_node_id_valid(reply->str) &&
                   strlen(reply->str) == reply->len) {
                cc->n_sent++;
                if (!o->node) {
                        o->node = node_ref(cc, reply->str);
                        if (!o->node)
                                out_fail_now(cc, o, "Method failed (out of memory)");
                }
        } else {
                _cleanup_free_ char *msg = NULL;

                if (asprintf(&msg, "Cluster unavailable: Redis refused to look for a node providing '%s': %.200s",
                             o->photon, reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected answer") < 0)
                        msg = NULL;
                out_fail_now(cc, o, msg ?: "Cluster unavailable");
        }
finish:
        free(t);
}

static int provider_invoke(DispatchPeer *p, const DispatchInvoke *inv) {
        ClusterCalls *cc = of_provider_peer(p);
        _cleanup_free_ char *text = NULL, *key = NULL, *rr = NULL, *chan_prefix = NULL;
        const char *prefix = cluster_prefix(cc->cluster), *self = cluster_node_id(cc->cluster);
        char wire[CLUSTER_CALL_ID_MAX + 1];
        size_t len, l = strlen(inv->invoke_id);
        OutCall *o;
        Ticket *t;
        int r;

        o = calloc(1, sizeof(OutCall) + l + 1);
        if (!o)
                return -ENOMEM;
        memcpy(o->id, inv->invoke_id, l + 1);
        o->photon = strdup(inv->photon);
        o->method = strdup(inv->method);
        if (!o->photon || !o->method || out_find(cc, o->id)) {
                /* An id in use cannot be (the dispatcher's ids are unique): the call fails to start. */
                r = o->photon && o->method ? -EEXIST : -ENOMEM;
                free(o->photon);
                free(o->method);
                free(o);
                return r;
        }
        HASH_ADD(hh, cc->out, id[0], l, o);

        r = wire_id(cc, inv->invoke_id, wire);
        if (r >= 0)
                r = cluster_call_msg_build(&(const ClusterCallMsg) {
                                           .kind = CLUSTER_CALL_INVOKE,
                                           .from = self,
                                           .call = wire,
                                           .photon = inv->photon,
                                           .method = inv->method,
                                           .args = inv->args,
                                           .trigger = dispatch_trigger_to_string(inv->trigger),
                                           .job_id = inv->job_id,
                                           .instance = inv->instance,
                                           .session_id = inv->session_id,
                                           .timeout_ms = inv->timeout_ms,
                                   }, &text, &len);
        if (r == -ENOMEM) {
                out_free(cc, o);
                return r;
        }
        if (r < 0) {
                out_fail_later(cc, o, "Cannot send %s/%s to another node: %s", inv->photon, inv->method,
                               strerror(-r));
                return 0;
        }
        if (len > CLUSTER_CALL_MAX_MESSAGE_BYTES) {
                out_fail_later(cc, o, "Cannot send %s/%s to another node: the call is %zu bytes, more than the %u a "
                               "call between nodes may carry", inv->photon, inv->method, len,
                               CLUSTER_CALL_MAX_MESSAGE_BYTES);
                return 0;
        }
        if (!cluster_connected(cc->cluster)) {
                out_fail_later(cc, o, "Cluster unavailable: no provider of '%s' on this node, and no other node "
                               "can be asked while Redis is out of reach (%s). Retry when the cluster is connected "
                               "again (photonctl status)", inv->photon, redis_error(cc));
                return 0;
        }

        if (asprintf(&key, "%sproviders:%s", prefix, inv->photon) < 0 ||
            asprintf(&rr, "%sproviders-rr:%s", prefix, inv->photon) < 0 ||
            asprintf(&chan_prefix, "%snode:", prefix) < 0) {
                out_free(cc, o);
                return -ENOMEM;
        }
        t = ticket_new(cc, TICKET_PICK, o->id);
        if (!t) {
                out_free(cc, o);
                return -ENOMEM;
        }
        r = redis_conn_command(cluster_commands(cc->cluster), on_pick_reply, t, 9,
                               (const char *[]) { "EVAL", pick_script, "2", key, rr, chan_prefix, ":calls", text,
                                                  self },
                               (const size_t[]) { 4, sizeof(pick_script) - 1, 1, strlen(key), strlen(rr),
                                                  strlen(chan_prefix), 6, len, strlen(self) });
        if (r < 0) {
                ticket_take(t);
                free(t);
                out_fail_later(cc, o, "Cluster unavailable: the call of %s/%s could not be sent to Redis (%s). "
                               "Retry when the cluster is connected again (photonctl status)", inv->photon,
                               inv->method, r == -ENOBUFS ? "too many commands waiting for Redis" : redis_error(cc));
                return 0;
        }
        return 0;
}

static int provider_prompt_response(DispatchPeer *p, const char *invoke_id, struct json_object *value) {
        ClusterCalls *cc = of_provider_peer(p);
        OutCall *o = out_find(cc, invoke_id);
        char wire[CLUSTER_CALL_ID_MAX + 1];
        int r;

        /* A prompt came from the node, so it is known; without it there is nobody to answer. */
        if (!o || !o->node || wire_id(cc, invoke_id, wire) < 0)
                return 0;
        r = send_msg(cc, o->node->id, &(const ClusterCallMsg) {
                                .kind = CLUSTER_CALL_PROMPT_RESPONSE,
                                .from = cluster_node_id(cc->cluster),
                                .call = wire,
                                .value = value,
                        }, NULL);
        if (r == -E2BIG)
                /* The provider waits for an answer: null rather than nothing. */
                r = send_msg(cc, o->node->id, &(const ClusterCallMsg) {
                                        .kind = CLUSTER_CALL_PROMPT_RESPONSE,
                                        .from = cluster_node_id(cc->cluster),
                                        .call = wire,
                                }, NULL);
        return r;
}

static void nop_call_done(DispatchPeer *p, const char *caller_id, const DispatchResult *result) {
}

static int nop_forward(DispatchPeer *p, const char *caller_id, struct json_object *v) {
        return -EOPNOTSUPP;
}

static const DispatchPeerOps provider_peer_ops = {
        .invoke = provider_invoke,
        .prompt_response = provider_prompt_response,
        .call_done = nop_call_done,     /* it calls nothing */
        .emit = nop_forward,
        .prompt = nop_forward,
};

/* What the node running one of our calls sent about it. */
static void on_answer(ClusterCalls *cc, const ClusterCallMsg *m) {
        OutCall *o = out_find_wire(cc, m->call);
        DispatchCall *call;

        if (!o || o->failure) {
                cc->n_stray++;
                return;
        }
        if (o->node && !streq(o->node->id, m->from)) {
                cc->n_invalid++;
                return;
        }
        if (!o->node) {
                /* Its answer came before Redis' answer to the pick (another connection). */
                o->node = node_ref(cc, m->from);
                if (!o->node) {
                        log_oom();
                        return;
                }
        }
        call = dispatcher_provider_call(cc->dispatcher, &cc->provider_peer, o->id);
        if (!call) {
                /* It timed out here. */
                cc->n_stray++;
                out_free(cc, o);
                return;
        }

        switch (m->kind) {
        case CLUSTER_CALL_EMIT:
                /* The provider's node published it on its channel, if it named one: only the caller is left. */
                if (dispatch_call_emit(call, m->value, NULL, true) < 0)
                        log_oom();
                break;
        case CLUSTER_CALL_PROMPT:
                if (dispatch_call_prompt(call, m->value) < 0)
                        log_oom();
                break;
        case CLUSTER_CALL_RESULT:
                dispatch_call_answer(call, m->success, m->value, m->patch, m->inverse_patch, m->error);
                out_free(cc, o);
                break;
        default:
                break;
        }
}

/* ---- the provider's side: the remote caller peer ---- */

/* "<node> <call id>": a node id has no space. */
static int caller_id_split(const char *caller_id, char node[static CLUSTER_NODE_ID_MAX + 1], const char **ret_call) {
        const char *sp = strchr(caller_id, ' ');

        if (!sp || sp == caller_id || (size_t) (sp - caller_id) > CLUSTER_NODE_ID_MAX)
                return -EINVAL;
        memcpy(node, caller_id, sp - caller_id);
        node[sp - caller_id] = 0;
        *ret_call = sp + 1;
        return 0;
}

static void caller_call_done(DispatchPeer *p, const char *caller_id, const DispatchResult *result) {
        ClusterCalls *cc = of_caller_peer(p);
        char node[CLUSTER_NODE_ID_MAX + 1];
        const char *call;
        ClusterCallMsg m;
        int r;

        if (caller_id_split(caller_id, node, &call) < 0)
                return;
        m = (ClusterCallMsg) {
                .kind = CLUSTER_CALL_RESULT,
                .from = cluster_node_id(cc->cluster),
                .call = call,
                .success = result->success,
                .value = result->data,
                .error = result->error,
                .patch = result->patch,
                .inverse_patch = result->inverse_patch,
                .duration_ms = result->duration_ms,
        };
        r = send_msg(cc, node, &m, NULL);
        if (r == -E2BIG) {
                m.success = false;
                m.error = "The method's result is too large to be sent to another node (more than "
                          "16777216 bytes)";
                r = send_msg(cc, node, &m, NULL);
        }
        if (r < 0 && ratelimit_below(&cc->log_limit, now_usec(CLOCK_MONOTONIC)))
                log_warning_errno(r, "Cluster: the result of a call of node %s could not be sent back: %m", node);
}

static int caller_forward(DispatchPeer *p, ClusterCallKind kind, const char *caller_id, struct json_object *v) {
        ClusterCalls *cc = of_caller_peer(p);
        char node[CLUSTER_NODE_ID_MAX + 1];
        const char *call;
        Ticket *t = NULL;

        if (caller_id_split(caller_id, node, &call) < 0)
                return -EINVAL;
        if (kind == CLUSTER_CALL_PROMPT) {
                /* Nobody on that node's channel: the prompt is answered with null, as when a caller left. */
                t = ticket_new(cc, TICKET_PROMPT, caller_id);
                if (!t)
                        return -ENOMEM;
        }
        return send_msg(cc, node, &(const ClusterCallMsg) {
                                .kind = kind,
                                .from = cluster_node_id(cc->cluster),
                                .call = call,
                                .value = v,
                        }, t);
}

static int caller_emit(DispatchPeer *p, const char *caller_id, struct json_object *emit_data) {
        return caller_forward(p, CLUSTER_CALL_EMIT, caller_id, emit_data);
}

static int caller_prompt(DispatchPeer *p, const char *caller_id, struct json_object *prompt) {
        return caller_forward(p, CLUSTER_CALL_PROMPT, caller_id, prompt);
}

static int nop_invoke(DispatchPeer *p, const DispatchInvoke *inv) {
        return -EOPNOTSUPP;
}

static int nop_prompt_response(DispatchPeer *p, const char *invoke_id, struct json_object *value) {
        return -EOPNOTSUPP;
}

static const DispatchPeerOps caller_peer_ops = {
        .invoke = nop_invoke,           /* it provides nothing */
        .prompt_response = nop_prompt_response,
        .call_done = caller_call_done,
        .emit = caller_emit,
        .prompt = caller_prompt,
};

static void on_publish_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        Ticket *t = userdata;
        ClusterCalls *cc = ticket_take(t);

        if (cc && t->kind == TICKET_PROMPT && (!reply || (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)))
                (void) dispatcher_prompt_response(cc->dispatcher, &cc->caller_peer, t->key, NULL);
        free(t);
}

static DispatchTrigger trigger_from_string(const char *s) {
        for (DispatchTrigger t = 0; t < _DISPATCH_TRIGGER_MAX; t++)
                if (streq(s, dispatch_trigger_to_string(t)))
                        return t;
        return _DISPATCH_TRIGGER_INVALID;
}

static void send_result_error(ClusterCalls *cc, const ClusterCallMsg *m, const char *error) {
        int r;

        r = send_msg(cc, m->from, &(const ClusterCallMsg) {
                                .kind = CLUSTER_CALL_RESULT,
                                .from = cluster_node_id(cc->cluster),
                                .call = m->call,
                                .error = error,
                        }, NULL);
        if (r < 0)
                log_debug_errno(r, "Cluster: an error for node %s could not be sent: %m", m->from);
}

/* Another node's call, to run here. */
static void on_invoke(ClusterCalls *cc, const ClusterCallMsg *m) {
        _cleanup_(dispatch_failure_done) DispatchFailure failure = {};
        _cleanup_free_ char *caller_id = NULL;
        DispatchTrigger trigger = trigger_from_string(m->trigger);
        int r;

        if (trigger < 0) {
                cc->n_invalid++;
                return;
        }
        if (asprintf(&caller_id, "%s %s", m->from, m->call) < 0) {
                log_oom();
                return;
        }
        cc->relaying = true;
        r = dispatcher_command(cc->dispatcher, &(const DispatchRequest) {
                                       .photon = m->photon,
                                       .method = m->method,
                                       .args = m->args,
                                       .trigger = trigger,
                                       .job_id = m->job_id,
                                       .timeout_ms = MIN(m->timeout_ms, limits.HANDLER_MAX_TIMEOUT_MS),
                                       .instance = m->instance,
                                       .session_id = m->session_id,
                                       .relayed = true,
                               }, &cc->caller_peer, caller_id, &failure);
        cc->relaying = false;
        if (r >= 0) {
                cc->n_served++;
                return;
        }
        send_result_error(cc, m, failure.message ?: "Cannot call the method");
        if (failure.error == DISPATCH_ERROR_NO_PROVIDER) {
                /* The hash said this node provides it, which is no longer true: so that the next call goes
                 * elsewhere. */
                _cleanup_free_ char *key = NULL;

                if (asprintf(&key, "%sproviders:%s", cluster_prefix(cc->cluster), m->photon) >= 0)
                        (void) redis_conn_command(cluster_commands(cc->cluster), NULL, NULL, 3,
                                                  (const char *[]) { "HDEL", key, cluster_node_id(cc->cluster) },
                                                  (const size_t[]) { 4, strlen(key),
                                                                     strlen(cluster_node_id(cc->cluster)) });
        }
}

static void on_message(const char *payload, size_t len, void *userdata) {
        _cleanup_(cluster_call_msg_done) ClusterCallMsg m = {};
        _cleanup_free_ char *caller_id = NULL;
        ClusterCalls *cc = userdata;
        int r;

        r = cluster_call_msg_parse(payload, len, CLUSTER_CALL_MAX_MESSAGE_BYTES, &m);
        if (r == -ENOMEM) {
                log_oom();
                return;
        }
        if (r < 0 || streq(m.from, cluster_node_id(cc->cluster))) {
                cc->n_invalid++;
                return;
        }

        switch (m.kind) {
        case CLUSTER_CALL_INVOKE:
                on_invoke(cc, &m);
                break;
        case CLUSTER_CALL_PROMPT_RESPONSE:
                if (asprintf(&caller_id, "%s %s", m.from, m.call) < 0) {
                        log_oom();
                        return;
                }
                if (dispatcher_prompt_response(cc->dispatcher, &cc->caller_peer, caller_id, m.value) < 0)
                        log_oom();
                break;
        default:
                on_answer(cc, &m);
                break;
        }
}

/* ---- the registry of providers ---- */

static void registry_write(ClusterCalls *cc, const char *photon, bool provided) {
        _cleanup_free_ char *key = NULL;
        const char *self = cluster_node_id(cc->cluster);
        int r;

        if (asprintf(&key, "%sproviders:%s", cluster_prefix(cc->cluster), photon) < 0) {
                log_oom();
                return;
        }
        if (provided)
                r = redis_conn_command(cluster_commands(cc->cluster), NULL, NULL, 4,
                                       (const char *[]) { "HSET", key, self, "1" },
                                       (const size_t[]) { 4, strlen(key), strlen(self), 1 });
        else
                r = redis_conn_command(cluster_commands(cc->cluster), NULL, NULL, 3,
                                       (const char *[]) { "HDEL", key, self },
                                       (const size_t[]) { 4, strlen(key), strlen(self) });
        /* -ENOTCONN: written with the others at the reconnect. */
        if (r < 0 && r != -ENOTCONN)
                log_warning_errno(r, "Cluster: could not tell Redis that this node %s '%s': %m",
                                  provided ? "provides" : "no longer provides", photon);
}

void cluster_calls_provided_changed(ClusterCalls *cc, const char *photon, bool provided) {
        if (!cc || !cluster_connected(cc->cluster))
                return;
        registry_write(cc, photon, provided);
}

typedef struct RegisterAll {
        ClusterCalls *cc;
        const char *last;
        unsigned n;
} RegisterAll;

static int register_one(const DispatchProviderInfo *info, void *userdata) {
        RegisterAll *ra = userdata;

        /* The providers of a photon come together, with the same name pointer. */
        if (info->photon == ra->last || info->peer == &ra->cc->provider_peer)
                return 0;
        ra->last = info->photon;
        ra->n++;
        registry_write(ra->cc, info->photon, true);
        return 0;
}

/* ---- connection and liveness ---- */

static void fail_all(ClusterCalls *cc, const char *why) {
        OutCall *o, *tmp;

        HASH_ITER(hh, cc->out, o, tmp) {
                _cleanup_free_ char *msg = NULL;

                if (o->failure)
                        continue;
                if (asprintf(&msg, "Cluster unavailable: %s while %s ran %s/%s; it may have run. Retry when the "
                             "cluster is connected again (photonctl status)", why,
                             o->node ? o->node->id : "another node", o->photon, o->method) < 0)
                        msg = NULL;
                out_fail_now(cc, o, msg ?: "Cluster unavailable");
        }
}

static void on_connection_changed(bool connected, void *userdata) {
        ClusterCalls *cc = userdata;

        if (connected) {
                RegisterAll ra = { .cc = cc };

                (void) dispatcher_foreach_provider(cc->dispatcher, register_one, &ra);
                if (ra.n > 0)
                        log_info("Cluster: told Redis that this node provides %u photons.", ra.n);
                return;
        }
        /* Answers sent to us meanwhile are lost (pub/sub keeps nothing): the calls fail now, not at their
         * timeout. The other nodes' calls running here go on without their callers. */
        fail_all(cc, "the connection to Redis was lost");
        dispatcher_peer_gone(cc->dispatcher, &cc->caller_peer);
}

static void on_check_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        Ticket *t = userdata;
        ClusterCalls *cc = ticket_take(t);
        OutCall *o, *tmp;

        /* PUBSUB NUMSUB answers [channel, count]. No answer: the connection's loss fails everything anyway. */
        if (!cc || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[1]->type != REDIS_REPLY_INTEGER || reply->element[1]->integer != 0) {
                free(t);
                return;
        }
        HASH_ITER(hh, cc->out, o, tmp) {
                _cleanup_free_ char *msg = NULL;

                if (!o->node || o->failure || !streq(o->node->id, t->key))
                        continue;
                if (asprintf(&msg, "The provider of '%s' on node %s went away before answering %s (the node is no "
                             "longer connected to the cluster)", o->photon, o->node->id, o->method) < 0)
                        msg = NULL;
                out_fail_now(cc, o, msg ?: "The provider went away");
        }
        free(t);
}

static int on_check_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ClusterCalls *cc = userdata;
        OutCall *o, *otmp;
        RemoteNode *n, *ntmp;

        /* Calls that ended here (timed out) without an answer from their node. */
        HASH_ITER(hh, cc->out, o, otmp)
                if (!o->failure && !dispatcher_provider_call(cc->dispatcher, &cc->provider_peer, o->id))
                        out_free(cc, o);

        if (!cc->nodes) {
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
                return 0;
        }
        HASH_ITER(hh, cc->nodes, n, ntmp) {
                _cleanup_free_ char *channel = calls_channel(cc, n->id);
                Ticket *t;
                int r;

                if (!channel)
                        break;
                t = ticket_new(cc, TICKET_CHECK, n->id);
                if (!t)
                        break;
                r = redis_conn_command(cluster_commands(cc->cluster), on_check_reply, t, 3,
                                       (const char *[]) { "PUBSUB", "NUMSUB", channel },
                                       (const size_t[]) { 6, 6, strlen(channel) });
                if (r < 0) {
                        ticket_take(t);
                        free(t);
                }
        }
        (void) sd_event_source_set_time_relative(s, CLUSTER_CALL_CHECK_USEC);
        return 0;
}

/* ---- lifecycle, status ---- */

int cluster_calls_new(const ClusterCallsConfig *config, ClusterCalls **ret) {
        _cleanup_(cluster_calls_freep) ClusterCalls *cc = NULL;
        int r;

        cc = new0(ClusterCalls, 1);
        if (!cc)
                return -ENOMEM;
        cc->event = sd_event_ref(config->event);
        cc->cluster = config->cluster;
        cc->dispatcher = config->dispatcher;
        cc->provider_peer.ops = &provider_peer_ops;
        cc->caller_peer.ops = &caller_peer_ops;
        cc->log_limit = (RateLimit) { .interval = 10 * USEC_PER_SEC, .burst = 5 };
        {
                uint64_t n;

                if (getrandom(&n, sizeof(n), GRND_NONBLOCK) != sizeof(n))
                        n = now_usec(CLOCK_REALTIME) ^ ((uint64_t) getpid() << 32);
                snprintf(cc->nonce, sizeof(cc->nonce), "%016" PRIx64, n);
        }

        r = sd_event_add_defer(cc->event, &cc->fail_source, on_fail, cc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(cc->fail_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(cc->fail_source, "cluster-calls-fail");
        r = sd_event_add_time_relative(cc->event, &cc->check_timer, CLOCK_MONOTONIC, CLUSTER_CALL_CHECK_USEC,
                                       10 * USEC_PER_MSEC, on_check_timer, cc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(cc->check_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(cc->check_timer, "cluster-calls-check");

        r = cluster_set_call_hooks(cc->cluster, &(ClusterCallHooks) {
                                           .message = on_message,
                                           .connection_changed = on_connection_changed,
                                           .userdata = cc,
                                   });
        if (r < 0)
                return r;
        *ret = TAKE_PTR(cc);
        return 0;
}

ClusterCalls* cluster_calls_free(ClusterCalls *cc) {
        OutCall *o, *otmp;
        Ticket *t;

        if (!cc)
                return NULL;
        if (cc->cluster)
                (void) cluster_set_call_hooks(cc->cluster, NULL);
        /* Our calls fail ("disconnected before answering"), the other nodes' go on without their callers. */
        if (cc->dispatcher) {
                dispatcher_peer_gone(cc->dispatcher, &cc->provider_peer);
                dispatcher_peer_gone(cc->dispatcher, &cc->caller_peer);
        }
        HASH_ITER(hh, cc->out, o, otmp)
                out_free(cc, o);
        while ((t = cc->tickets)) {
                LIST_REMOVE(tickets, cc->tickets, t);
                t->cc = NULL;   /* freed by its callback, when the connection answers or goes */
        }
        sd_event_source_disable_unref(cc->fail_source);
        sd_event_source_disable_unref(cc->check_timer);
        sd_event_unref(cc->event);
        return mfree(cc);
}

DispatchPeer* cluster_calls_find_remote(ClusterCalls *cc, const char *photon, const char *method) {
        if (!cc || cc->relaying)
                return NULL;
        return &cc->provider_peer;
}

int cluster_calls_add_status(ClusterCalls *cc, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *cluster;

        if (!cc || !json_object_object_get_ex(data, "cluster", &cluster))
                return 0;
        o = json_object_new_object();
        if (!o ||
            json_add_int64(o, "inFlight", HASH_COUNT(cc->out)) < 0 ||
            json_add_int64(o, "sent", (int64_t) cc->n_sent) < 0 ||
            json_add_int64(o, "failed", (int64_t) cc->n_failed) < 0 ||
            json_add_int64(o, "served", (int64_t) cc->n_served) < 0 ||
            json_add_int64(o, "invalid", (int64_t) cc->n_invalid) < 0 ||
            json_add_int64(o, "stray", (int64_t) cc->n_stray) < 0)
                return -ENOMEM;
        return json_add(cluster, "calls", TAKE_PTR(o));
}
