/* SPDX-License-Identifier: MIT */

/* fdstore_state_parse(): the state of the connections a stop kept (photond-fdstore.c), as a damaged memfd, a
 * newer or older photond would leave it (the checksum of an input ending like an END record is fixed up first, so
 * that mutations reach the records). What parses must be consistent (every queued line a buffer, no offset
 * past its end), and written again must parse to the same clients. */

#include <assert.h>

#include "fuzz.h"
#include "photond-fdstore.h"

static bool bytes_eq(FdStoreBytes a, FdStoreBytes b) {
        return a.size == b.size && (a.size == 0 || memcmp(a.data, b.data, a.size) == 0);
}

static void write_client(FdStoreWriter *w, const FdStoreClient *c, SharedBuf **bufs) {
        _cleanup_free_ char *session = NULL;

        if (c->has_session_id)
                session = fuzz_strndup((const uint8_t*) c->session_id.data, c->session_id.size);
        assert(fdstore_writer_begin_client(w, c->dev, c->ino, session) >= 0);
        for (size_t i = 0; i < c->n_subscriptions; i++)
                assert(fdstore_writer_add_subscription(w, c->subscriptions[i].data, c->subscriptions[i].size) >= 0);
        for (size_t i = 0; i < c->n_output; i++)
                /* The tag's number as a pointer: the same number, the same channel. */
                assert(fdstore_writer_add_output(w, bufs[c->output[i].buffer], c->output[i].offset,
                                                 (const void*) (uintptr_t) c->output[i].tag) >= 0);
        assert(fdstore_writer_set_input(w, c->input.data, c->input.size) >= 0);
        assert(fdstore_writer_end_client(w) >= 0);
}

/* A mutated state fails its checksum, and the records behind it would go unexplored: an input that ends like an END
 * record gets the checksum of what comes before it. */
static void fix_checksum(uint8_t *p, size_t size) {
        static const uint8_t end_header[8] = { 3, 0, 0, 0, 8, 0, 0, 0 };
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        if (size < 16 || memcmp(p + size - 16, end_header, 8) != 0)
                return;
        for (size_t i = 0; i < size - 16; i++) {
                h ^= p[i];
                h *= UINT64_C(0x100000001b3);
        }
        for (size_t i = 0; i < 8; i++)
                p[size - 8 + i] = (uint8_t) (h >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
        _cleanup_(fdstore_state_done) FdStoreState s = {}, again = {};
        _cleanup_(fdstore_writer_freep) FdStoreWriter *w = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        SharedBuf **bufs;
        const char *out;
        size_t out_size;

        fuzz_setup_logging();

        data = malloc(size ?: 1);
        assert(data);
        if (size > 0)
                memcpy(data, input, size);
        fix_checksum(data, size);
        if (fdstore_state_parse(data, size, &s) < 0)
                return 0;

        for (size_t i = 0; i < s.n_buffers; i++)
                assert(s.buffers[i].data >= (const char*) data &&
                       s.buffers[i].data + s.buffers[i].size <= (const char*) data + size);
        for (size_t i = 0; i < s.n_clients; i++)
                for (size_t j = 0; j < s.clients[i].n_output; j++) {
                        assert(s.clients[i].output[j].buffer < s.n_buffers);
                        assert(s.clients[i].output[j].offset < s.buffers[s.clients[i].output[j].buffer].size);
                }

        /* Written again (sessions, subscriptions, output and input: what a NUL cannot cut short), then read. */
        bufs = calloc(s.n_buffers ?: 1, sizeof(SharedBuf*));
        assert(bufs);
        for (size_t i = 0; i < s.n_buffers; i++) {
                bufs[i] = shared_buf_new(s.buffers[i].data, s.buffers[i].size);
                assert(bufs[i]);
        }
        assert(fdstore_writer_new(UINT64_MAX, &w) >= 0);
        for (size_t i = 0; i < s.n_clients; i++)
                if (!s.clients[i].has_session_id || !memchr(s.clients[i].session_id.data, 0,
                                                            s.clients[i].session_id.size))
                        write_client(w, &s.clients[i], bufs);
        assert(fdstore_writer_finish(w, &out, &out_size) >= 0);
        assert(fdstore_state_parse(out, out_size, &again) >= 0);
        assert(again.n_clients <= s.n_clients);
        for (size_t i = 0, j = 0; i < s.n_clients; i++) {
                const FdStoreClient *a = &s.clients[i], *b;

                if (a->has_session_id && memchr(a->session_id.data, 0, a->session_id.size))
                        continue;
                b = &again.clients[j++];
                assert(a->dev == b->dev && a->ino == b->ino);
                assert(a->has_session_id == b->has_session_id);
                assert(!a->has_session_id || bytes_eq(a->session_id, b->session_id));
                assert(a->n_subscriptions == b->n_subscriptions);
                for (size_t k = 0; k < a->n_subscriptions; k++)
                        assert(bytes_eq(a->subscriptions[k], b->subscriptions[k]));
                assert(bytes_eq(a->input, b->input));
                assert(a->n_output == b->n_output);
                for (size_t k = 0; k < a->n_output; k++) {
                        assert(bytes_eq(s.buffers[a->output[k].buffer], again.buffers[b->output[k].buffer]));
                        assert(a->output[k].offset == b->output[k].offset);
                        assert((a->output[k].tag == 0) == (b->output[k].tag == 0));
                }
        }

        for (size_t i = 0; i < s.n_buffers; i++)
                shared_buf_unref(bufs[i]);
        free(bufs);
        return 0;
}
