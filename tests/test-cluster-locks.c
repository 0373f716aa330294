/* SPDX-License-Identifier: MIT */

/* The cluster lock backend's keys and the lock value its scripts write (photond-cluster-locks.c); the scripts
 * themselves run against a real Redis in tests/integration/test-cluster-locks.c. */

#include <criterion/criterion.h>
#include <stdlib.h>

#include "photond-cluster-locks.h"

Test(cluster_locks, keys) {
        static const struct {
                ClusterLockKey key;
                const char *name, *expect;
        } cases[] = {
                { CLUSTER_LOCK_KEY_LOCK, "db", "photon:lock:db" },
                { CLUSTER_LOCK_KEY_LOCK, "a b:c", "photon:lock:a b:c" },
                { CLUSTER_LOCK_KEY_WAIT, "db", "photon:lockwait:db" },
                { CLUSTER_LOCK_KEY_TOKEN, "ignored", "photon:locks:token" },
                { CLUSTER_LOCK_KEY_INDEX, NULL, "photon:locks:index" },
                { CLUSTER_LOCK_KEY_CHANNEL, NULL, "photon:locks:released" },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *k = cluster_lock_key("photon:", cases[i].key, cases[i].name);

                cr_assert_str_eq(k, cases[i].expect);
                free(k);
        }
        {
                char *k = cluster_lock_key("", CLUSTER_LOCK_KEY_LOCK, "x");

                cr_assert_str_eq(k, "lock:x", "an empty prefix");
                free(k);
        }
}

Test(cluster_locks, value_parse) {
        uint64_t tok;
        int64_t at;
        const char *h;

        cr_assert_eq(cluster_lock_value_parse("1796561217021000 1796561217021 s1", &tok, &at, &h), 0);
        cr_assert_eq(tok, UINT64_C(1796561217021000));
        cr_assert_eq(at, INT64_C(1796561217021));
        cr_assert_str_eq(h, "s1");
        /* The holder is the rest, spaces included. */
        cr_assert_eq(cluster_lock_value_parse("7 8 a holder with spaces", &tok, &at, &h), 0);
        cr_assert_str_eq(h, "a holder with spaces");
        cr_assert_eq(cluster_lock_value_parse("7 8 ", &tok, &at, &h), 0);
        cr_assert_str_eq(h, "");

        cr_assert_eq(cluster_lock_value_parse(NULL, &tok, &at, &h), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("", &tok, &at, &h), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("x 8 h", &tok, &at, &h), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("7 8", &tok, &at, &h), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("7  8 h", &tok, &at, &h), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("99999999999999999999999 8 h", &tok, &at, &h), -EINVAL);
}
