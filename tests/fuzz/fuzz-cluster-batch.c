/* SPDX-License-Identifier: MIT */

/* What anyone who can PUBLISH to Redis sends on a node's channels: cluster_batch_parse() must refuse garbage
 * without crashing, and what it takes must iterate to exactly its events, inside the input, with consecutive ids,
 * rising tokens and a NUL after every message. */

#include <assert.h>

#include "cluster-util.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *s = (const char *) data, *end = s + size;
        ClusterBatch b;
        ClusterBatchEvent e;
        uint64_t n = 0, token = 0;
        int r;

        fuzz_setup_logging();

        r = cluster_batch_parse(s, size, &b);
        if (r < 0) {
                assert(r == -EINVAL);
                return 0;
        }
        assert(b.first_event_id > 0 && b.n_events > 0 && b.n_events <= CLUSTER_BATCH_MAX);
        assert(b.node_id > s && b.node_id + b.node_id_len < end);
        while ((r = cluster_batch_next(&b, &e)) > 0) {
                assert(e.event_id == b.first_event_id + n);
                assert(n == 0 || e.token > token);
                assert(e.channel >= s && e.channel + e.channel_len < end);
                if (e.message) {
                        assert(e.message == e.channel + e.channel_len);
                        assert(e.message + e.message_len < end && e.message[e.message_len] == '\0');
                }
                token = e.token;
                n++;
        }
        assert(r == 0 && n == b.n_events);
        return 0;
}
