/* SPDX-License-Identifier: MIT */

/* request_parse(): every line a client sends on the control socket. */

#include "fuzz.h"
#include "photond-protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(request_freep) Request *req = NULL;
        _cleanup_free_ char *error = NULL, *id = NULL;
        int r;

        fuzz_setup_logging();

        r = request_parse((const char *) data, size, &req, &error, &id);
        if (r < 0)
                return 0;
        (void) request_type_to_string(req->type);
        (void) request_string(req, "channel");
        (void) request_string(req, "lockName");
        (void) request_string(req, "sessionId");
        return 0;
}
