/* SPDX-License-Identifier: MIT */

/* What another node (or anyone who can PUBLISH to Redis) sends on a node's calls channel: cluster_call_msg_parse()
 * must refuse garbage without crashing, and what it takes must build again and parse to the same message. */

#include <assert.h>
#include <json-c/json.h>

#include "cluster-call-msg.h"
#include "fuzz.h"

static bool json_eq(struct json_object *a, struct json_object *b) {
        return (!a && !b) || (a && b && json_object_equal(a, b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(cluster_call_msg_done) ClusterCallMsg m = {}, again = {};
        _cleanup_free_ char *s = NULL;
        size_t len;
        int r;

        fuzz_setup_logging();

        r = cluster_call_msg_parse((const char *) data, size, 1 << 20, &m);
        if (r < 0) {
                assert(r == -EINVAL || r == -EMSGSIZE || r == -ENOMEM);
                return 0;
        }
        r = cluster_call_msg_build(&m, &s, &len);
        if (r == -ENOMEM)
                return 0;
        assert(r == 0);
        assert(cluster_call_msg_parse(s, len, 1 << 20, &again) == 0);
        assert(again.kind == m.kind);
        assert(streq(again.from, m.from) && streq(again.call, m.call));
        assert(json_eq(again.value, m.value) && json_eq(again.args, m.args));
        assert(again.success == m.success && again.duration_ms == m.duration_ms);
        return 0;
}
