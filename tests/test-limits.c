/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

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
