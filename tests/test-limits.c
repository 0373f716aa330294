/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "photond-limits.h"

static void reset(void) {
        limits_reset();
        unsetenv("PHOTOND_MAX_LINE_BYTES");
        unsetenv("PHOTOND_MAX_LOCKS");
}

TestSuite(limits, .init = reset, .fini = reset);

Test(limits, defaults) {
        cr_assert_eq(limits.MAX_LINE_BYTES, 1024 * 1024);
        cr_assert_eq(limits.REPLAY_MAX_EVENTS, 500);
        cr_assert_eq(limits.REPLAY_WINDOW_MS, 300000);
        cr_assert_eq(limits.LOCK_DEFAULT_TIMEOUT_MS, 30000);
        cr_assert_eq(limits.WEBHOOK_MAX_BODY_BYTES, 1048576);
}

Test(limits, clients_fit_the_file_limit) {
        cr_assert_eq(limits_clients_for_nofile(256), 192, "64 kept under ulimit -n 256");
        cr_assert_eq(limits_clients_for_nofile(1024), 768, "a quarter kept");
        cr_assert_eq(limits_clients_for_nofile(65536), 49152, "the units' LimitNOFILE= leaves the default cap");
        cr_assert_geq(limits_clients_for_nofile(65536), 32768);
        cr_assert_eq(limits_clients_for_nofile(100), 50, "at most half kept");
        cr_assert_eq(limits_clients_for_nofile(24), 12);
        cr_assert_eq(limits_clients_for_nofile(1), 1);
        for (uint64_t n = 1; n < 5000; n++) {
                uint64_t c = limits_clients_for_nofile(n);

                cr_assert(c >= 1 && c <= n, "%" PRIu64 " -> %" PRIu64, n, c);
                cr_assert(n < 128 || n - c >= 64, "%" PRIu64 " keeps %" PRIu64, n, n - c);
                cr_assert_geq(c, limits_clients_for_nofile(n - 1), "monotonic at %" PRIu64, n);
        }
}

Test(limits, environment_overrides) {
        setenv("PHOTOND_MAX_LINE_BYTES", "4096", 1);
        setenv("PHOTOND_MAX_LOCKS", "7", 1);
        cr_assert_eq(limits_load_from_env(NULL), 0);
        cr_assert_eq(limits.MAX_LINE_BYTES, 4096);
        cr_assert_eq(limits.MAX_LOCKS, 7);
}

Test(limits, bad_values_are_named) {
        static const char *const bad[] = { "", "-1", "0", "12abc", "99999999999999999999999" };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                const char *name = NULL;

                limits_reset();
                setenv("PHOTOND_MAX_LINE_BYTES", bad[i], 1);
                cr_assert_eq(limits_load_from_env(&name), -EINVAL, "'%s' accepted", bad[i]);
                cr_assert_str_eq(name, "MAX_LINE_BYTES");
                cr_assert_eq(limits.MAX_LINE_BYTES, 1024 * 1024, "a bad value leaves the default");
        }
}

/* Busy polling is a setting: 0 turns it off; anything not a number is still refused. */
Test(limits, busy_poll_may_be_zero) {
        const char *name = NULL;

        setenv("PHOTOND_BUSY_POLL_US", "0", 1);
        cr_assert_eq(limits_load_from_env(NULL), 0);
        cr_assert_eq(limits.BUSY_POLL_US, 0);
        cr_assert(limit_may_be_zero("BUSY_POLL_US"));
        cr_assert_not(limit_may_be_zero("MAX_LINE_BYTES"));

        limits_reset();
        setenv("PHOTOND_BUSY_POLL_US", "off", 1);
        cr_assert_eq(limits_load_from_env(&name), -EINVAL);
        cr_assert_str_eq(name, "BUSY_POLL_US");
        unsetenv("PHOTOND_BUSY_POLL_US");
}

Test(limits, table_lists_every_limit) {
        uint64_t value, def;
        unsigned n = 0;
        const char *name;

        while ((name = limits_name(n, &value, &def))) {
                cr_assert_eq(value, def);
                cr_assert(value > 0, "%s has no default", name);
                n++;
        }
        cr_assert_eq(n * sizeof(uint64_t), sizeof(Limits));
}

/* One wording per cap, naming the variable that raises it, always with a suggestion (docs/protocol.md). */
Test(limits, cap_errors_are_worded_once_with_a_suggestion) {
        static const LimitId caps[] = {
                LIMIT_MAX_SUBSCRIPTIONS_PER_CLIENT, LIMIT_MAX_CHANNEL_NAME_BYTES, LIMIT_MAX_MESSAGE_BYTES,
                LIMIT_MAX_CHANNELS, LIMIT_MAX_LOCK_NAME_BYTES, LIMIT_MAX_LOCK_HOLDER_BYTES, LIMIT_MAX_LOCKS,
                LIMIT_MAX_LOCK_WAITERS_PER_LOCK, LIMIT_MAX_LOCK_WAITERS, LIMIT_MAX_JOBS, LIMIT_MAX_JOB_ARGS_BYTES,
                LIMIT_MAX_PROVIDERS,
        };
        const char *suggestion;
        char buf[256], var[96];

        for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
                suggestion = NULL;
                cr_assert_eq(limit_error(caps[i], UINT64_MAX, buf, sizeof(buf), &suggestion), buf);
                snprintf(var, sizeof(var), "(PHOTOND_%s)", limits_name((unsigned) caps[i], NULL, NULL));
                cr_assert(strlen(buf) > strlen(var) && streq(buf + strlen(buf) - strlen(var), var), "%s", buf);
                cr_assert(suggestion && suggestion[0], "%s has no suggestion", buf);
        }

        limits.MAX_LOCK_NAME_BYTES = 8;
        cr_assert_str_eq(limit_error(LIMIT_MAX_LOCK_NAME_BYTES, 9, buf, sizeof(buf), NULL),
                         "Lock name too long: 9 bytes, at most 8 (PHOTOND_MAX_LOCK_NAME_BYTES)");
        cr_assert_str_eq(limit_error(LIMIT_MAX_LOCK_NAME_BYTES, UINT64_MAX, buf, sizeof(buf), NULL),
                         "Lock name too long: at most 8 bytes (PHOTOND_MAX_LOCK_NAME_BYTES)");
        cr_assert_str_eq(limit_error(LIMIT_MAX_MESSAGE_BYTES, 600000, buf, sizeof(buf), NULL),
                         "Message too large: 600000 bytes of JSON, at most 524288 (PHOTOND_MAX_MESSAGE_BYTES)");
        cr_assert_str_eq(limit_error(LIMIT_MAX_LOCKS, UINT64_MAX, buf, sizeof(buf), &suggestion),
                         "Too many locks: at most 65536 (PHOTOND_MAX_LOCKS)");
        cr_assert_str_eq(suggestion, "Release locks that are no longer needed");

        /* Settings, not caps a request runs into. */
        cr_assert_null(limit_error(LIMIT_BUSY_POLL_US, 1, buf, sizeof(buf), NULL));
        cr_assert_null(limit_error(_LIMIT_ID_MAX, 1, buf, sizeof(buf), NULL));
}
