/* SPDX-License-Identifier: MIT */

/* json_parse(): request lines, state files, job files and webhook bodies all go through it. What it accepts must
 * print back as JSON that parses to the same text. */

#include <assert.h>

#include "fuzz.h"
#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_object_putp) struct json_object *o = NULL, *again = NULL;
        const char *error = NULL, *text;
        size_t len;
        int r;

        fuzz_setup_logging();

        r = json_parse((const char *) data, size, &o, &error);
        if (r < 0) {
                assert(error);
                return 0;
        }
        text = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &len);
        assert(text);
        r = json_parse(text, len, &again, NULL);
        assert(r == 0);
        assert(streq(json_object_to_json_string_ext(again, JSON_FORMAT_FLAGS), text));
        return 0;
}
