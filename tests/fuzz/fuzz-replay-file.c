/* SPDX-License-Identifier: MIT */

/* replay_file_parse() (photond-replay-file.c): replay.bin as a crash, a bad disk or another program left it. Each
 * input is read as it is and, made past its checksums (replay_file_seal()), once more, so that the fuzzer reaches
 * the records behind them. What parses must hold messages json-c takes too (up to json-c's depth), and is restored
 * into fresh channels on a clock at the file's save time; the buffers restored must write a file that parses
 * again with as many events. */

#include <assert.h>
#include <string.h>

#include "fuzz.h"
#include "json-util.h"
#include "photond-channel.h"
#include "photond-limits.h"
#include "photond-replay-file.h"

static int64_t clock_wall;

static int64_t fuzz_wall(void *userdata) {
        return clock_wall;
}

static uint64_t fuzz_mono(void *userdata) {
        return UINT64_C(1) << 40;
}

/* How deep a JSON text nests (outside strings). */
static unsigned nesting(const char *s, size_t len) {
        unsigned depth = 0, max = 0;
        bool in_string = false;

        for (size_t i = 0; i < len; i++) {
                if (in_string) {
                        if (s[i] == '\\')
                                i++;
                        else if (s[i] == '"')
                                in_string = false;
                } else if (s[i] == '"')
                        in_string = true;
                else if (s[i] == '[' || s[i] == '{')
                        max = MAX(max, ++depth);
                else if (s[i] == ']' || s[i] == '}')
                        depth--;
        }
        return max;
}

static void check(const uint8_t *data, size_t size) {
        _cleanup_(replay_file_done) ReplayFile f = {}, again = {};
        _cleanup_(channels_freep) Channels *chs = NULL;
        _cleanup_free_ char *out = NULL;
        size_t out_size;
        int r, n;

        r = replay_file_parse(data, size, &f);
        if (r < 0) {
                assert(!f.records && !f.channels);
                return;
        }

        for (size_t i = 0; i < f.n_records; i++) {
                const ReplayEvent *e = &f.records[i].event;
                _cleanup_(json_object_putp) struct json_object *o = NULL;

                if (e->message_json && nesting(e->message_json, e->message_json_len) < 32)
                        assert(json_parse(e->message_json, e->message_json_len, &o, NULL) >= 0);
        }

        assert(channels_new(NULL, &chs) >= 0);
        clock_wall = f.saved_ms;
        channels_set_clock(chs, &(ChannelsClock) { fuzz_wall, fuzz_mono, NULL });
        n = channels_restore(chs, f.records, f.n_records);
        if (n < 0) {
                assert(n == -EINVAL || n == -ENOMEM);
                return;
        }
        assert(replay_file_serialize(chs, f.saved_ms, &out, &out_size) >= 0);
        assert(replay_file_parse(out, out_size, &again) == 0);
        assert(again.n_records == (size_t) n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t *sealed;

        fuzz_setup_logging();
        limits_reset();

        check(data, size);
        if (size < REPLAY_FILE_HEADER_SIZE)
                return 0;
        sealed = malloc(size);
        if (!sealed)
                return 0;
        memcpy(sealed, data, size);
        replay_file_seal(sealed, size);
        check(sealed, size);
        free(sealed);
        return 0;
}
