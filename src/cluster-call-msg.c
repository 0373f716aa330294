/* SPDX-License-Identifier: MIT */

#include <string.h>

#include "cluster-call-msg.h"
#include "cluster-util.h"
#include "dispatch-util.h"
#include "json-util.h"
#include "string-util.h"

#define CLUSTER_CALL_VERSION 1

static const char *const kind_table[_CLUSTER_CALL_KIND_MAX] = {
        [CLUSTER_CALL_INVOKE]           = "invoke",
        [CLUSTER_CALL_EMIT]             = "emit",
        [CLUSTER_CALL_PROMPT]           = "prompt",
        [CLUSTER_CALL_PROMPT_RESPONSE]  = "prompt_response",
        [CLUSTER_CALL_RESULT]           = "result",
};

const char* cluster_call_kind_to_string(ClusterCallKind k) {
        if (k < 0 || k >= _CLUSTER_CALL_KIND_MAX)
                return NULL;
        return kind_table[k];
}

static ClusterCallKind kind_from_string(const char *s) {
        for (ClusterCallKind k = 0; k < _CLUSTER_CALL_KIND_MAX; k++)
                if (streq_ptr(s, kind_table[k]))
                        return k;
        return _CLUSTER_CALL_KIND_INVALID;
}

static bool trigger_valid(const char *s) {
        for (DispatchTrigger t = 0; t < _DISPATCH_TRIGGER_MAX; t++)
                if (streq_ptr(s, dispatch_trigger_to_string(t)))
                        return true;
        return false;
}

static bool call_id_valid(const char *s) {
        size_t l;

        if (!s)
                return false;
        l = strlen(s);
        return l > 0 && l <= CLUSTER_CALL_ID_MAX;
}

/* ---- build ---- */

int cluster_call_msg_build(const ClusterCallMsg *m, char **ret, size_t *ret_len) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        const char *kind = cluster_call_kind_to_string(m->kind), *text;
        size_t len;
        char *s;

        if (!kind || !m->from || !cluster_node_id_valid(m->from) || !call_id_valid(m->call))
                return -EINVAL;
        o = json_object_new_object();
        if (!o ||
            json_add_int64(o, "v", CLUSTER_CALL_VERSION) < 0 ||
            json_add_string(o, "k", kind) < 0 ||
            json_add_string(o, "from", m->from) < 0 ||
            json_add_string(o, "call", m->call) < 0)
                return -ENOMEM;

        switch (m->kind) {
        case CLUSTER_CALL_INVOKE:
                if (!name_is_valid(m->photon) || !name_is_valid(m->method) || !trigger_valid(m->trigger))
                        return -EINVAL;
                if (json_add_string(o, "photon", m->photon) < 0 ||
                    json_add_string(o, "method", m->method) < 0 ||
                    json_add(o, "args", m->args ? json_object_get(m->args) : json_object_new_object()) < 0 ||
                    json_add_string(o, "trigger", m->trigger) < 0 ||
                    json_add_string(o, "jobId", m->job_id) < 0 ||
                    json_add_string(o, "instance", m->instance) < 0 ||
                    json_add_string(o, "sessionId", m->session_id) < 0 ||
                    (m->timeout_ms > 0 && json_add_int64(o, "timeoutMs", (int64_t) m->timeout_ms) < 0))
                        return -ENOMEM;
                break;
        case CLUSTER_CALL_EMIT:
        case CLUSTER_CALL_PROMPT:
                if (!json_object_is_type(m->value, json_type_object))
                        return -EINVAL;
                if (json_add(o, "value", json_object_get(m->value)) < 0)
                        return -ENOMEM;
                break;
        case CLUSTER_CALL_PROMPT_RESPONSE:
                if (json_add_nullable(o, "value", json_ref_or_null(m->value)) < 0)
                        return -ENOMEM;
                break;
        case CLUSTER_CALL_RESULT:
                if (json_add_bool(o, "ok", m->success) < 0 ||
                    json_add_int64(o, "durationMs", (int64_t) MIN(m->duration_ms, (uint64_t) INT64_MAX)) < 0)
                        return -ENOMEM;
                if (!m->success) {
                        if (json_add_string(o, "error", m->error ?: "Method failed") < 0)
                                return -ENOMEM;
                        break;
                }
                if (json_add_nullable(o, "value", json_ref_or_null(m->value)) < 0 ||
                    (m->patch && json_add(o, "patch", json_object_get(m->patch)) < 0) ||
                    (m->inverse_patch && json_add(o, "inversePatch", json_object_get(m->inverse_patch)) < 0))
                        return -ENOMEM;
                break;
        default:
                return -EINVAL;
        }

        text = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &len);
        if (!text)
                return -ENOMEM;
        s = strndup(text, len);         /* json-c escapes NUL: no NUL byte inside */
        if (!s)
                return -ENOMEM;
        *ret = s;
        *ret_len = len;
        return 0;
}

/* ---- parse ---- */

/* An optional string member: 0 and *ret (NULL when absent or null), -EINVAL for another type or a NUL byte. */
static int get_opt_string(struct json_object *o, const char *key, const char **ret) {
        struct json_object *v;

        *ret = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !v)
                return 0;
        return json_string_get_cstring(v, ret) < 0 ? -EINVAL : 0;
}

static int get_string(struct json_object *o, const char *key, const char **ret) {
        int r = get_opt_string(o, key, ret);

        if (r < 0)
                return r;
        return *ret ? 0 : -EINVAL;
}

static int get_uint(struct json_object *o, const char *key, uint64_t *ret) {
        int64_t v;
        int r;

        *ret = 0;
        r = json_get_int64(o, key, false, &v);
        if (r == -ENOENT)
                return 0;
        if (r < 0 || v < 0)
                return -EINVAL;
        *ret = (uint64_t) v;
        return 0;
}

void cluster_call_msg_done(ClusterCallMsg *m) {
        if (!m)
                return;
        json_object_put(m->root);
        *m = (ClusterCallMsg) {};
}

int cluster_call_msg_parse(const char *p, size_t len, size_t max_len, ClusterCallMsg *ret) {
        _cleanup_(cluster_call_msg_done) ClusterCallMsg m = {};
        struct json_object *v;
        const char *kind;
        int64_t version;
        int r;

        if (len > max_len)
                return -EMSGSIZE;
        r = json_parse(p, len, &m.root, NULL);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if (!json_object_is_type(m.root, json_type_object))
                return -EINVAL;
        if (json_get_int64(m.root, "v", false, &version) < 0 || version != CLUSTER_CALL_VERSION)
                return -EINVAL;
        if (get_string(m.root, "k", &kind) < 0 ||
            get_string(m.root, "from", &m.from) < 0 ||
            get_string(m.root, "call", &m.call) < 0)
                return -EINVAL;
        m.kind = kind_from_string(kind);
        if (m.kind < 0 || !cluster_node_id_valid(m.from) || !call_id_valid(m.call))
                return -EINVAL;

        switch (m.kind) {
        case CLUSTER_CALL_INVOKE:
                if (get_string(m.root, "photon", &m.photon) < 0 || !name_is_valid(m.photon) ||
                    get_string(m.root, "method", &m.method) < 0 || !name_is_valid(m.method) ||
                    get_string(m.root, "trigger", &m.trigger) < 0 || !trigger_valid(m.trigger) ||
                    get_opt_string(m.root, "jobId", &m.job_id) < 0 ||
                    get_opt_string(m.root, "instance", &m.instance) < 0 ||
                    get_opt_string(m.root, "sessionId", &m.session_id) < 0 ||
                    get_uint(m.root, "timeoutMs", &m.timeout_ms) < 0)
                        return -EINVAL;
                /* The instance names a channel (<photon>:<instance>:state-changed) as on the control socket. */
                if (m.instance && !name_is_valid(m.instance))
                        return -EINVAL;
                if (!json_object_object_get_ex(m.root, "args", &m.args) || !json_object_is_type(m.args, json_type_object))
                        return -EINVAL;
                break;
        case CLUSTER_CALL_EMIT:
        case CLUSTER_CALL_PROMPT:
                if (!json_object_object_get_ex(m.root, "value", &m.value) ||
                    !json_object_is_type(m.value, json_type_object))
                        return -EINVAL;
                break;
        case CLUSTER_CALL_PROMPT_RESPONSE:
                if (!json_object_object_get_ex(m.root, "value", &m.value))
                        return -EINVAL;
                break;
        case CLUSTER_CALL_RESULT:
                if (!json_object_object_get_ex(m.root, "ok", &v) || !json_object_is_type(v, json_type_boolean) ||
                    get_uint(m.root, "durationMs", &m.duration_ms) < 0)
                        return -EINVAL;
                m.success = json_object_get_boolean(v);
                if (!m.success) {
                        if (get_string(m.root, "error", &m.error) < 0)
                                return -EINVAL;
                        break;
                }
                if (!json_object_object_get_ex(m.root, "value", &m.value))
                        return -EINVAL;
                (void) json_object_object_get_ex(m.root, "patch", &m.patch);
                (void) json_object_object_get_ex(m.root, "inversePatch", &m.inverse_patch);
                break;
        default:
                return -EINVAL;
        }

        *ret = m;
        m = (ClusterCallMsg) {};
        return 0;
}
