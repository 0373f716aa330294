/* SPDX-License-Identifier: MIT */

/* What anyone who can PUBLISH to Redis sends on a node's channels: cluster_batch_parse() must refuse garbage
 * without crashing, and what it takes must iterate to exactly its events, inside the input, with consecutive ids,
 * rising tokens and a NUL after every message. The same of protocol 4's two messages: the input up to its first
 * line feed as the head (cluster_batch_parse_head()), the rest as its events (cluster_batch_set_events()). */

#include <assert.h>
#include <string.h>

#include "cluster-util.h"
#include "fuzz.h"

static void check(const ClusterBatch *parsed, const char *s, const char *end) {
        ClusterBatch b = *parsed;
        ClusterBatchEvent e;
        uint64_t n = 0, token = 0;
        int r;

        assert(b.first_event_id > 0 && b.n_events > 0 && b.n_events <= CLUSTER_BATCH_MAX);
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *s = (const char *) data, *end = s + size, *nl;
        ClusterBatch b;
        int r;

        fuzz_setup_logging();

        r = cluster_batch_parse(s, size, &b);
        assert(r == 0 || r == -EINVAL);
        if (r == 0) {
                assert(b.node_id > s && b.node_id + b.node_id_len < end);
                check(&b, s, end);
        }

        nl = memchr(s, '\n', size);
        if (!nl)
                return 0;
        r = cluster_batch_parse_head(s, (size_t) (nl - s), &b);
        assert(r == 0 || r == -EINVAL);
        if (r < 0)
                return 0;
        assert(b.node_id > s && b.node_id + b.node_id_len == nl);
        r = cluster_batch_set_events(&b, nl + 1, (size_t) (end - nl - 1));
        assert(r == 0 || r == -EINVAL);
        if (r == 0)
                check(&b, nl + 1, end);
        return 0;
}
