/* SPDX-License-Identifier: MIT */

/* cron_parse() and cron_validate(): the cron of a schedule request, and of every job file loaded. The zone has
 * DST so that the repeated and skipped hours are searched too. */

#include <assert.h>

#include "cron.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *expr = NULL;
        char err[256];
        CronSpec spec;
        time_t next;
        int r;

        fuzz_setup_logging();
        /* Requests carry short expressions; the manager's line limit keeps them under 1 MiB anyway. */
        if (size > 4096)
                return 0;
        setenv("TZ", "Europe/Berlin", 1);

        expr = fuzz_strndup(data, size);
        if (!expr)
                return 0;

        r = cron_parse(expr, &spec, err, sizeof(err));
        if (r < 0) {
                assert(r == -EINVAL);
                return 0;
        }
        /* 2026-03-29 00:30 UTC: an hour before Berlin springs forward. */
        r = cron_validate(expr, 1774744200, &spec, err, sizeof(err));
        if (r < 0)
                return 0;
        r = cron_next(&spec, 1774744200, &next);
        assert(r == 0 && next > 1774744200);
        /* Into the repeated hour of 2026-10-25. */
        r = cron_next(&spec, 1792885000, &next);
        assert(r == 0 || r == -ENOENT);
        if (r == 0)
                assert(next > 1792885000);
        return 0;
}
