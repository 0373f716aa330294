/* SPDX-License-Identifier: MIT */

/* request_scan_publish(): the publish fast path's scanner, offered every request line before it is parsed. What it
 * takes must be a valid request the general path would take too, with the parts it found. */

#include <assert.h>

#include "fuzz.h"
#include "json-util.h"
#include "photond-protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(request_freep) Request *req = NULL;
        _cleanup_free_ char *error = NULL, *id = NULL;
        const char *line = (const char *) data;
        PublishScan s;

        fuzz_setup_logging();

        if (request_scan_publish(line, size, &s) != 1)
                return 0;

        /* The parts point into the line. */
        assert(s.id >= line && s.id + s.id_len <= line + size);
        assert(s.channel >= line && s.channel + s.channel_len <= line + size);
        assert(!s.message || (s.message >= line && s.message + s.message_len <= line + size));

        /* The general path takes it as a publish with the same id and channel. */
        assert(request_parse(line, size, &req, &error, &id) == 0);
        assert(req->type == REQUEST_PUBLISH);
        assert(strlen(req->id) == s.id_len && memcmp(req->id, s.id, s.id_len) == 0);
        const char *channel = request_string(req, "channel");
        assert(channel && strlen(channel) == s.channel_len && memcmp(channel, s.channel, s.channel_len) == 0);

        /* The message is already in the form json-c prints, which the fast path relies on. */
        if (s.message) {
                struct json_object *m = json_object_object_get(req->json, "message");
                size_t n;
                const char *text = json_object_to_json_string_length(m, JSON_FORMAT_FLAGS, &n);

                assert(text && n == s.message_len && memcmp(text, s.message, n) == 0);
        }
        return 0;
}
