/* SPDX-License-Identifier: MIT */
#pragma once

/* Cluster mode's method calls on the wire: the message one node sends another over Redis pub/sub
 * (<prefix>node:<nodeId>:calls) about a call, one JSON object {"v":1,"k":KIND,"from":NODE,"call":ID,…}. The caller's
 * node sends "invoke" and "prompt_response", the provider's node "emit", "prompt" and "result". Pure and
 * non-logging: what comes from Redis is checked here, so a parse never trusts it. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

struct json_object;

typedef enum ClusterCallKind {
        CLUSTER_CALL_INVOKE,            /* caller's node → provider's node: run this */
        CLUSTER_CALL_EMIT,              /* provider's node → caller's node: the provider's emit (value) */
        CLUSTER_CALL_PROMPT,            /* provider's node → caller's node: the provider's question (value) */
        CLUSTER_CALL_PROMPT_RESPONSE,   /* caller's node → provider's node: the answer (value; NULL: null) */
        CLUSTER_CALL_RESULT,            /* provider's node → caller's node: the end of the call */
        _CLUSTER_CALL_KIND_MAX,
        _CLUSTER_CALL_KIND_INVALID = -EINVAL,
} ClusterCallKind;

const char* cluster_call_kind_to_string(ClusterCallKind k);

/* The longest call id: the caller node's invoke id ("inv_<serial>"). */
#define CLUSTER_CALL_ID_MAX 64

typedef struct ClusterCallMsg {
        ClusterCallKind kind;
        const char *from;               /* the node that sends it (a valid node id) */
        const char *call;               /* the call's id on the caller's node: 1..CLUSTER_CALL_ID_MAX bytes */

        /* invoke */
        const char *photon, *method;    /* valid names */
        struct json_object *args;       /* an object; NULL on build: {} */
        const char *trigger;            /* "command", "schedule" or "webhook" */
        const char *job_id, *instance, *session_id;     /* NULL: not set */
        uint64_t timeout_ms;            /* 0: the provider node's default */

        /* emit and prompt (an object), prompt_response (any JSON; NULL: null), result (data on success) */
        struct json_object *value;

        /* result */
        bool success;
        const char *error;              /* on failure; NULL on build: "Method failed" */
        struct json_object *patch, *inverse_patch;      /* on success, NULL: none */
        uint64_t duration_ms;

        struct json_object *root;       /* a parsed message owns what the pointers above point into */
} ClusterCallMsg;

/* The message's bytes (JSON, NUL-terminated, *ret_len without the NUL). -EINVAL for a kind, node id, call id or
 * name that the parse would refuse, -ENOMEM. */
int cluster_call_msg_build(const ClusterCallMsg *m, char **ret, size_t *ret_len);

/* Parses len bytes (any bytes) of at most max_len into *ret, which then owns a reference (release with
 * cluster_call_msg_done()). -EMSGSIZE past max_len, -EINVAL for anything that is not a message of a known kind with
 * every field of it valid, -ENOMEM. */
int cluster_call_msg_parse(const char *p, size_t len, size_t max_len, ClusterCallMsg *ret);
void cluster_call_msg_done(ClusterCallMsg *m);
