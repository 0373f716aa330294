/* SPDX-License-Identifier: MIT */

/* The lock fast path: lock_request_parse_line() (photond-protocol.c), then control_lock_line() (the control front
 * end, photond-control-locks.c), offered every request line before it is parsed. A line the parse takes must parse
 * as the same LockRequest through request_parse() and lock_request_from_request(); each line then goes to one
 * table in turn (so lock, unlock, waits and a second holder meet), and every reply written must be a JSON object.
 * A minimal Manager carries the event loop, as in test-lock.c. */

#include <assert.h>

#include "fuzz.h"
#include "json-util.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-protocol.h"

static int noop_defer(sd_event_source *s, void *userdata) {
        return 0;
}

static Manager* fuzz_manager(void) {
        /* Made once (its event loop is reused, as across the lines of a real run): LeakSanitizer sees it still
         * reachable at exit. */
        static Manager manager;

        if (!manager.event) {
                limits_reset();
                assert(sd_event_new(&manager.event) >= 0);
                assert(sd_event_add_defer(manager.event, &manager.flush_event_source, noop_defer, NULL) >= 0);
                assert(sd_event_source_set_enabled(manager.flush_event_source, SD_EVENT_OFF) >= 0);
        }
        return &manager;
}

static void check_replies(Client *c) {
        SharedBuf *b;

        while ((b = client_pop_queued(c))) {
                struct json_object *o = NULL;

                assert(b->size > 0 && b->data[b->size - 1] == '\n');
                assert(json_parse(b->data, b->size, &o, NULL) == 0);
                assert(json_object_is_type(o, json_type_object));
                json_object_put(o);
                shared_buf_unref(b);
        }
}

/* What the fast parse took, the general parse must read the same. */
static void check_parse(const char *line, size_t len) {
        _cleanup_(request_freep) Request *req = NULL;
        _cleanup_free_ char *error = NULL, *id = NULL;
        LockLineBuf buf;
        LockRequest fast, general;

        if (!lock_request_parse_line(line, len, &buf, &fast))
                return;
        assert(request_parse(line, len, &req, &error, &id) == 0);
        lock_request_from_request(req, &general);
        assert(fast.type == general.type);
        assert(streq_ptr(fast.id, general.id));
        assert(streq_ptr(fast.name, general.name));
        assert(streq_ptr(fast.holder, general.holder));
        assert(streq_ptr(fast.session, general.session));
        assert(streq_ptr(fast.transfer_to, general.transfer_to));
        assert(fast.timeout_ms == general.timeout_ms && fast.timeout_invalid == general.timeout_invalid);
        assert(fast.wait_ms == general.wait_ms && fast.wait_invalid == general.wait_invalid);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Manager *m = fuzz_manager();
        Client clients[2] = {
                { .fd = -EBADF, .serial = 1 },
                { .fd = -EBADF, .serial = 2 },
        };
        const uint8_t *line;
        size_t len;
        unsigned i = 0;

        fuzz_setup_logging();

        if (lock_table_new(m->event, NULL, &m->locks) < 0)
                return 0;

        while (fuzz_next_part(&data, &size, '\n', &line, &len)) {
                Client *c = &clients[i++ % ELEMENTSOF(clients)];

                check_parse((const char *) line, len);
                if (control_lock_line(m->locks, NULL, c, (const char *) line, len, NULL) < 0)
                        break;
                check_replies(c);
        }

        for (size_t k = 0; k < ELEMENTSOF(clients); k++) {
                lock_table_owner_gone(m->locks, &clients[k].lock_waits);
                check_replies(&clients[k]);
                free(clients[k].out);
                free(clients[k].session_id);
        }
        m->locks = lock_table_free(m->locks);
        return 0;
}
