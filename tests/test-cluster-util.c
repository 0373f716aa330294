/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <string.h>

#include "cluster-util.h"

Test(cluster_url, tcp_forms) {
        ClusterUrl u;
        char *s;

        cr_assert_eq(cluster_url_parse("redis://localhost", &u), 0);
        cr_assert_str_eq(u.host, "localhost");
        cr_assert_eq(u.port, 6379);
        cr_assert_eq(u.db, 0);
        cr_assert_null(u.password);
        cr_assert_null(u.path);
        cluster_url_done(&u);

        cr_assert_eq(cluster_url_parse("redis://app:s%40cr%3At@10.0.0.1:6380/3", &u), 0);
        cr_assert_str_eq(u.host, "10.0.0.1");
        cr_assert_eq(u.port, 6380);
        cr_assert_eq(u.db, 3);
        cr_assert_str_eq(u.user, "app");
        cr_assert_str_eq(u.password, "s@cr:t");
        cr_assert_eq(cluster_url_redacted(&u, &s), 0);
        cr_assert_str_eq(s, "redis://app:***@10.0.0.1:6380/3");
        cr_assert_null(strstr(s, "cr"));
        free(s);
        cluster_url_done(&u);

        cr_assert_eq(cluster_url_parse("redis://secret@[::1]:7000/", &u), 0);
        cr_assert_str_eq(u.host, "::1");
        cr_assert_null(u.user);
        cr_assert_str_eq(u.password, "secret");
        cr_assert_eq(cluster_url_redacted(&u, &s), 0);
        cr_assert_str_eq(s, "redis://***@[::1]:7000/0");
        free(s);
        cluster_url_done(&u);
}

Test(cluster_url, unix_forms) {
        ClusterUrl u;
        char *s;

        cr_assert_eq(cluster_url_parse("unix:///run/redis/redis-server.sock?db=2", &u), 0);
        cr_assert_str_eq(u.path, "/run/redis/redis-server.sock");
        cr_assert_null(u.host);
        cr_assert_eq(u.db, 2);
        cr_assert_eq(cluster_url_redacted(&u, &s), 0);
        cr_assert_str_eq(s, "unix:///run/redis/redis-server.sock?db=2");
        free(s);
        cluster_url_done(&u);

        cr_assert_eq(cluster_url_parse("unix:///tmp/r.sock", &u), 0);
        cr_assert_eq(u.db, 0);
        cluster_url_done(&u);
}

Test(cluster_url, refused) {
        static const char *bad[] = {
                "", "redis://", "redis://:1", "redis://host:0", "redis://host:65536", "redis://host:x",
                "redis://host/x", "redis://ho st", "http://host", "unix://", "unix://relative",
                "unix:///p?db=x", "unix:///p?foo=1", "redis://u:p%4@h", "redis://u:p%00@h", "redis://[]:1",
                "redis://[::1]x", "redis://host/1/2", "rediss://host",
        };
        ClusterUrl u;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_expect_eq(cluster_url_parse(bad[i], &u), -EINVAL, "%s", bad[i]);
}

Test(cluster_envelope, round_trip) {
        ClusterEnvelope e;
        char *b;
        size_t n;

        cr_assert_eq(cluster_envelope_build("host-1@system", 1700000000123, "{\"a\":1}", 7, &b, &n), 0);
        cr_assert_eq(cluster_envelope_parse(b, n, &e), 0);
        cr_assert_eq(e.event_id, 1700000000123);
        cr_assert_eq(e.node_id_len, strlen("host-1@system"));
        cr_assert_eq(memcmp(e.node_id, "host-1@system", e.node_id_len), 0);
        cr_assert_eq(e.message_len, 7);
        cr_assert_eq(memcmp(e.message, "{\"a\":1}", 7), 0);
        free(b);

        cr_assert_eq(cluster_envelope_build("n", 5, NULL, 0, &b, &n), 0);
        cr_assert_eq(cluster_envelope_parse(b, n, &e), 0);
        cr_assert_null(e.message);
        free(b);

        cr_assert_eq(cluster_envelope_parse("2 5 n\n{}", 8, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("1 0 n\n{}", 8, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("1 5 \n{}", 7, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("1 5x n\n", 7, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("1 99999999999999999999 n\n", 25, &e), -EINVAL);
}

Test(cluster_util, names) {
        char *s;
        size_t n;

        cr_assert(cluster_node_id_valid("web-1.example@system"));
        cr_assert(!cluster_node_id_valid(""));
        cr_assert(!cluster_node_id_valid("a b"));
        cr_assert(!cluster_node_id_valid("a\nb"));
        cr_assert(cluster_prefix_valid(""));
        cr_assert(cluster_prefix_valid("photon:"));
        cr_assert(!cluster_prefix_valid("a b"));

        cr_assert_eq(cluster_glob_escape("a*b?[c]\\", 8, &s, &n), 0);
        cr_assert_str_eq(s, "a\\*b\\?\\[c\\]\\\\");
        cr_assert_eq(n, 13);
        free(s);
}
