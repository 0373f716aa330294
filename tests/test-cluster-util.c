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

        cr_assert_eq(cluster_envelope_build("host-1@system", 1700000000123, 1700000000120, 42, "{\"a\":1}", 7, &b,
                                            &n), 0);
        cr_assert_str_eq(b, "2 1700000000123 1700000000120 42 host-1@system\n{\"a\":1}");
        cr_assert_eq(cluster_envelope_parse(b, n, &e), 0);
        cr_assert_eq(e.event_id, 1700000000123);
        cr_assert_eq(e.timestamp, 1700000000120);
        cr_assert_eq(e.token, 42);
        cr_assert_eq(e.node_id_len, strlen("host-1@system"));
        cr_assert_eq(memcmp(e.node_id, "host-1@system", e.node_id_len), 0);
        cr_assert_eq(e.message_len, 7);
        cr_assert_eq(memcmp(e.message, "{\"a\":1}", 7), 0);
        free(b);

        cr_assert_eq(cluster_envelope_build("n", 5, 4, 0, NULL, 0, &b, &n), 0);
        cr_assert_eq(cluster_envelope_parse(b, n, &e), 0);
        cr_assert_null(e.message);
        cr_assert_eq(e.token, 0);
        free(b);

        /* The first slice's form, and broken ones. */
        cr_assert_eq(cluster_envelope_parse("1 5 n\n{}", 8, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("2 5 n\n{}", 8, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("2 0 1 1 n\n{}", 12, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("2 5 1 1 \n{}", 11, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("2 5x 1 1 n\n", 11, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("2 5 -1 1 n\n", 11, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("2 5 1 1 n", 9, &e), -EINVAL);
        cr_assert_eq(cluster_envelope_parse("2 99999999999999999999 1 1 n\n", 29, &e), -EINVAL);
}

Test(cluster_replay, parse) {
        static const char p[] = "R 7 0 1700000000200\n"
                                "1700000000100 1700000000099 3 7\nabc{\"a\":1}"
                                "1700000000150 1700000000150 2 -1\nx\n";
        ClusterReplay r;
        ClusterReplayEvent e = {};

        cr_assert_eq(cluster_replay_parse(p, sizeof(p) - 1, &r), 0);
        cr_assert_eq(r.token, 7);
        cr_assert_not(r.refresh_needed);
        cr_assert_eq(r.last_event_id, 1700000000200);
        cr_assert_eq(cluster_replay_next(&r, &e), 1);
        cr_assert_eq(e.event_id, 1700000000100);
        cr_assert_eq(e.timestamp, 1700000000099);
        cr_assert_eq(e.channel_len, 3);
        cr_assert_eq(memcmp(e.channel, "abc", 3), 0);
        cr_assert_eq(e.message_len, 7);
        cr_assert_eq(memcmp(e.message, "{\"a\":1}", 7), 0);
        cr_assert_eq(cluster_replay_next(&r, &e), 1);
        cr_assert_eq(e.event_id, 1700000000150);
        cr_assert_eq(e.channel_len, 2);
        cr_assert_eq(memcmp(e.channel, "x\n", 2), 0);        /* any bytes */
        cr_assert_null(e.message);
        cr_assert_eq(cluster_replay_next(&r, &e), 0);

        /* A refresh with nothing after the head. */
        cr_assert_eq(cluster_replay_parse("R 1 1 5\n", 8, &r), 0);
        cr_assert(r.refresh_needed);
        e = (ClusterReplayEvent) {};
        cr_assert_eq(cluster_replay_next(&r, &e), 0);

        cr_assert_eq(cluster_replay_parse("R 1 2 5\n", 8, &r), -EINVAL);
        cr_assert_eq(cluster_replay_parse("R 1 1 5", 7, &r), -EINVAL);
        cr_assert_eq(cluster_replay_parse("2 1 1 5\n", 8, &r), -EINVAL);

        /* Lengths past the end, ids that do not rise. */
        cr_assert_eq(cluster_replay_parse("R 1 0 5\n5 5 9 1\nabc", 19, &r), 0);
        e = (ClusterReplayEvent) {};
        cr_assert_eq(cluster_replay_next(&r, &e), -EINVAL);
        cr_assert_eq(cluster_replay_parse("R 1 0 5\n5 5 1 -1\na4 5 1 -1\nb", 28, &r), 0);
        e = (ClusterReplayEvent) {};
        cr_assert_eq(cluster_replay_next(&r, &e), 1);
        cr_assert_eq(cluster_replay_next(&r, &e), -EINVAL);
}

Test(cluster_util, keys) {
        char *k;
        size_t n;

        cr_assert_eq(cluster_key("photon:", "replay:", "orders", 6, &k, &n), 0);
        cr_assert_str_eq(k, "photon:replay:orders");
        cr_assert_eq(n, strlen("photon:replay:orders"));
        free(k);
        cr_assert_eq(cluster_key("", "eventid", NULL, 0, &k, &n), 0);
        cr_assert_str_eq(k, "eventid");
        free(k);
        cr_assert_eq(cluster_key("p:", "ch:", "a\0b", 3, &k, &n), 0);
        cr_assert_eq(n, 8);
        cr_assert_eq(memcmp(k, "p:ch:a\0b", 8), 0);
        free(k);
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

#define BATCH(s) s, sizeof(s) - 1

Test(cluster_batch, events_in_order) {
        /* Three events: a message, none, a message on a channel with a space and a NUL in its name. */
        static const char s[] = "3 1700000000123 1700000000120 3 host-1@system\n"
                                "41 5 7\nnews:{\"a\":1}\0"
                                "42 5 -1\nnews:\0"
                                "50 3 1\na\0b7\0";
        ClusterBatch b;
        ClusterBatchEvent e;

        cr_assert_eq(cluster_batch_parse(BATCH(s), &b), 0);
        cr_assert_eq(b.first_event_id, 1700000000123);
        cr_assert_eq(b.timestamp, 1700000000120);
        cr_assert_eq(b.n_events, 3);
        cr_assert_eq(b.node_id_len, 13);
        cr_assert_eq(memcmp(b.node_id, "host-1@system", 13), 0);

        cr_assert_eq(cluster_batch_next(&b, &e), 1);
        cr_assert_eq(e.event_id, 1700000000123);
        cr_assert_eq(e.token, 41);
        cr_assert_eq(e.channel_len, 5);
        cr_assert_eq(memcmp(e.channel, "news:", 5), 0);
        cr_assert_eq(e.message_len, 7);
        cr_assert_str_eq(e.message, "{\"a\":1}");         /* ends with its NUL */

        cr_assert_eq(cluster_batch_next(&b, &e), 1);
        cr_assert_eq(e.event_id, 1700000000124);
        cr_assert_eq(e.token, 42);
        cr_assert_null(e.message);

        cr_assert_eq(cluster_batch_next(&b, &e), 1);
        cr_assert_eq(e.event_id, 1700000000125);
        cr_assert_eq(e.channel_len, 3);
        cr_assert_eq(memcmp(e.channel, "a\0b", 3), 0);
        cr_assert_eq(e.message_len, 1);
        cr_assert_str_eq(e.message, "7");

        cr_assert_eq(cluster_batch_next(&b, &e), 0);
        cr_assert_eq(cluster_batch_next(&b, &e), 0);

        /* A batch of one. */
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 2\nx{}\0"), &b), 0);
        cr_assert_eq(cluster_batch_next(&b, &e), 1);
        cr_assert_eq(e.event_id, 5);
        cr_assert_eq(cluster_batch_next(&b, &e), 0);
}

/* Protocol 4: the head alone, then the events in a message of their own. */
Test(cluster_batch, head_and_events_apart) {
        static const char head[] = "4 1700000000123 1700000000120 2 host-1@system";
        static const char events[] = "41 5 7\nnews:{\"a\":1}\0" "42 5 -1\nnews:\0";
        ClusterBatch b;
        ClusterBatchEvent e;

        cr_assert_eq(cluster_batch_parse_head(head, strlen(head), &b), 0);
        cr_assert_eq(b.first_event_id, 1700000000123);
        cr_assert_eq(b.timestamp, 1700000000120);
        cr_assert_eq(b.n_events, 2);
        cr_assert_eq(b.node_id_len, 13);
        cr_assert_eq(memcmp(b.node_id, "host-1@system", 13), 0);
        cr_assert_eq(cluster_batch_set_events(&b, events, sizeof(events) - 1), 0);
        cr_assert_eq(cluster_batch_next(&b, &e), 1);
        cr_assert_eq(e.event_id, 1700000000123);
        cr_assert_eq(e.token, 41);
        cr_assert_str_eq(e.message, "{\"a\":1}");
        cr_assert_eq(cluster_batch_next(&b, &e), 1);
        cr_assert_eq(e.event_id, 1700000000124);
        cr_assert_null(e.message);
        cr_assert_eq(cluster_batch_next(&b, &e), 0);

        /* A head: of version 4 only, without a line feed or anything after the node id, the same bounds. */
        cr_assert_eq(cluster_batch_parse_head(BATCH("3 5 4 1 n"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse_head(BATCH("4 5 4 1 n\n"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse_head(BATCH("4 5 4 1 n\n1 1 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse_head(BATCH("4 5 4 1 "), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse_head(BATCH("4 0 4 1 n"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse_head(BATCH("4 5 4 0 n"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse_head(BATCH("4 5 4 65537 n"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse_head("", 0, &b), -EINVAL);
        /* Its events: exactly as many as it announced, checked as in one message. */
        cr_assert_eq(cluster_batch_parse_head(BATCH("4 5 4 2 n"), &b), 0);
        cr_assert_eq(cluster_batch_set_events(&b, BATCH("1 1 2\nx{}\0")), -EINVAL);
        cr_assert_eq(cluster_batch_set_events(&b, BATCH("1 1 2\nx{}\0" "2 1 2\nx{}\0" "3 1 2\nx{}\0")), -EINVAL);
        cr_assert_eq(cluster_batch_set_events(&b, BATCH("2 1 2\nx{}\0" "1 1 2\nx{}\0")), -EINVAL);
        cr_assert_eq(cluster_batch_set_events(&b, BATCH("1 1 2\nx{}\0" "2 1 2\nx{}")), -EINVAL);
        cr_assert_eq(cluster_batch_set_events(&b, "", 0), -EINVAL);
        cr_assert_eq(cluster_batch_set_events(&b, BATCH("1 1 2\nx{}\0" "2 1 2\nx{}\0")), 0);
}

Test(cluster_batch, refused_at_the_boundary) {
        ClusterBatch b;

        /* Not a batch: another version, a version 2 envelope, nothing. */
        cr_assert_eq(cluster_batch_parse("", 0, &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("2 5 4 1 n\n{}"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("4 5 4 1 n\n1 1 2\nx{}\0"), &b), -EINVAL);
        /* The head: id 0, no node id, count 0, a count over the cap, an id past the range. */
        cr_assert_eq(cluster_batch_parse(BATCH("3 0 4 1 n\n1 1 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 \n1 1 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 0 n\n"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 65537 n\n1 1 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 18446744073709551615 4 1 n\n1 1 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 9223372036854775807 4 1 n\n1 1 2\nx{}\0"), &b), 0);
        /* Fewer events than announced, more, trailing bytes. */
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 2 n\n1 1 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 2\nx{}\0" "2 1 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 2\nx{}\0x"), &b), -EINVAL);
        /* Lengths past the end by one, the NUL missing, no room for it. */
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 3\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 2 2\nx{}\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 2\nx{}x"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 2\nx{}"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 -1\nx"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 -1\nx\0"), &b), 0);
        /* Tokens that do not rise; a negative or huge length. */
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 2 n\n2 1 -1\nx\0" "2 1 -1\nx\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 2 n\n2 1 -1\nx\0" "3 1 -1\nx\0"), &b), 0);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 -1 -1\nx\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 18446744073709551615 -1\nx\0"), &b), -EINVAL);
        cr_assert_eq(cluster_batch_parse(BATCH("3 5 4 1 n\n1 1 18446744073709551615\nx\0"), &b), -EINVAL);
}
