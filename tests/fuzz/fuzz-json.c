/* SPDX-License-Identifier: MIT */

/* json_parse(): request lines, state files, job files and webhook bodies all go through it. What it accepts must
 * print back as JSON that parses to the same text. And json_text_is_compact_value(), which takes another cluster
 * node's messages and a replay file's as they are: whatever it takes within json-c's depth, json_parse() takes, and
 * json-c's compact print of anything json_parse() takes is such a value. */

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
        if (json_text_is_compact_value((const char *) data, size, JSON_TOKENER_DEFAULT_DEPTH - 1))
                assert(r == 0);
        if (r < 0) {
                assert(error);
                return 0;
        }
        text = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &len);
        assert(text);
        assert(json_text_is_compact_value(text, len, JSON_TEXT_MAX_DEPTH));
        r = json_parse(text, len, &again, NULL);
        assert(r == 0);
        assert(streq(json_object_to_json_string_ext(again, JSON_FORMAT_FLAGS), text));
        return 0;
}
