/* SPDX-License-Identifier: MIT */

/* lock_table_handle_line(): the lock fast path, offered every request line before it is parsed. Each input line
 * goes to one table in turn (so lock, unlock and a second holder meet); every reply the fast path writes itself
 * must be a JSON object. A minimal Manager carries the event loop, as in test-lock.c. */

#include <assert.h>

#include "fuzz.h"
#include "json-util.h"
#include "photond-client.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-manager.h"

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

                if (lock_table_handle_line(m->locks, c, (const char *) line, len) < 0)
                        break;
                check_replies(c);
        }

        for (size_t k = 0; k < ELEMENTSOF(clients); k++) {
                lock_table_client_gone(m->locks, &clients[k]);
                check_replies(&clients[k]);
                free(clients[k].out);
                free(clients[k].session_id);
        }
        m->locks = lock_table_free(m->locks);
        return 0;
}
