/* SPDX-License-Identifier: MIT */

/* The pure parts of photond-cluster-nodes.c: the caps' parser and their variables, and the node record another
 * node wrote (a boundary). The heartbeat itself runs against real nodes in tests/integration/test-cluster-nodes.c. */

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "photond-cluster-nodes.h"

#define TOKEN "0123456789abcdef0123456789abcdef"

static const ClusterCapInfo* cap(const char *variable) {
        const ClusterCapInfo *i;

        for (unsigned k = 0; (i = cluster_cap_info(k)); k++)
                if (strcmp(i->variable, variable) == 0)
                        return i;
        cr_assert_fail("no cap %s", variable);
        return NULL;
}

Test(cluster_caps, table) {
        unsigned n = 0;

        while (cluster_cap_info(n))
                n++;
        cr_assert_eq(n, 4);
        cr_assert_eq(cap("PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS")->def, 2000);
        cr_assert_eq(cap("PHOTOND_CLUSTER_MAX_PENDING")->def, 65536);
        cr_assert_eq(cap("PHOTOND_CLUSTER_RECONNECT_MAX_MS")->def, 5000);
        cr_assert_eq(cap("PHOTOND_CLUSTER_HEARTBEAT_MS")->def, 1000);
        for (unsigned k = 0; k < n; k++) {
                const ClusterCapInfo *i = cluster_cap_info(k);

                cr_assert(i->min <= i->def && i->def <= i->max, "%s", i->variable);
        }
}

Test(cluster_caps, parse) {
        const ClusterCapInfo *t = cap("PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS");
        uint64_t v;

        cr_assert_eq(cluster_cap_parse(t, NULL, &v), 0);
        cr_assert_eq(v, 2000);
        cr_assert_eq(cluster_cap_parse(t, "", &v), 0);
        cr_assert_eq(v, 2000);
        cr_assert_eq(cluster_cap_parse(t, "250", &v), 0);
        cr_assert_eq(v, 250);
        cr_assert_eq(cluster_cap_parse(t, "10", &v), 0);
        cr_assert_eq(cluster_cap_parse(t, "600000", &v), 0);
        cr_assert_eq(cluster_cap_parse(t, "9", &v), -ERANGE);
        cr_assert_eq(cluster_cap_parse(t, "0", &v), -ERANGE);
        cr_assert_eq(cluster_cap_parse(t, "600001", &v), -ERANGE);
        cr_assert_lt(cluster_cap_parse(t, "2s", &v), 0);
        cr_assert_lt(cluster_cap_parse(t, "-5", &v), 0);
        cr_assert_lt(cluster_cap_parse(t, " 5", &v), 0);
        cr_assert_lt(cluster_cap_parse(t, "99999999999999999999999", &v), 0);
        cr_assert_eq(v, 600000, "a refused value leaves *ret alone");
}

Test(cluster_caps, from_env) {
        ClusterCaps c;

        unsetenv("PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS");
        unsetenv("PHOTOND_CLUSTER_MAX_PENDING");
        unsetenv("PHOTOND_CLUSTER_RECONNECT_MAX_MS");
        unsetenv("PHOTOND_CLUSTER_HEARTBEAT_MS");
        cr_assert_eq(cluster_caps_from_env(&c), 0);
        cr_assert_eq(c.command_timeout_usec, 2000 * USEC_PER_MSEC);
        cr_assert_eq(c.max_pending, 65536);
        cr_assert_eq(c.reconnect_max_usec, 5000 * USEC_PER_MSEC);
        cr_assert_eq(c.heartbeat_usec, 1000 * USEC_PER_MSEC);

        setenv("PHOTOND_CLUSTER_MAX_PENDING", "16", 1);
        setenv("PHOTOND_CLUSTER_HEARTBEAT_MS", "250", 1);
        cr_assert_eq(cluster_caps_from_env(&c), 0);
        cr_assert_eq(c.max_pending, 16);
        cr_assert_eq(c.heartbeat_usec, 250 * USEC_PER_MSEC);

        setenv("PHOTOND_CLUSTER_RECONNECT_MAX_MS", "fast", 1);
        cr_assert_eq(cluster_caps_from_env(&c), -EINVAL);
        setenv("PHOTOND_CLUSTER_RECONNECT_MAX_MS", "50", 1);
        cr_assert_eq(cluster_caps_from_env(&c), -EINVAL);
        unsetenv("PHOTOND_CLUSTER_RECONNECT_MAX_MS");
        unsetenv("PHOTOND_CLUSTER_MAX_PENDING");
        unsetenv("PHOTOND_CLUSTER_HEARTBEAT_MS");
}

Test(cluster_node_record, round_trip) {
        ClusterNodeRecord in = {
                .token = (char *) TOKEN,
                .pid = 4242,
                .hostname = (char *) "web-1",
                .started_ms = 1700000000123,
                .version = (char *) "0.1.0",
                .heartbeat_ms = 1000,
                .protocol = CLUSTER_PROTOCOL,
        }, out;
        char *s;

        cr_assert_eq(cluster_node_record_build(&in, &s), 0);
        cr_assert_eq(cluster_node_record_parse(s, strlen(s), &out), 0);
        cr_assert_str_eq(out.token, TOKEN);
        cr_assert_eq(out.pid, 4242);
        cr_assert_str_eq(out.hostname, "web-1");
        cr_assert_eq(out.started_ms, 1700000000123);
        cr_assert_str_eq(out.version, "0.1.0");
        cr_assert_eq(out.heartbeat_ms, 1000);
        cr_assert_eq(out.protocol, CLUSTER_PROTOCOL);
        cluster_node_record_done(&out);
        free(s);
}

Test(cluster_node_record, boundary) {
        static const char *const refused[] = {
                "",
                "null",
                "[]",
                "{}",
                "\"" TOKEN "\"",
                "{\"token\":\"short\"}",
                "{\"token\":\"0123456789ABCDEF0123456789ABCDEF\"}",     /* upper case: not ours */
                "{\"token\":\"0123456789abcdef0123456789abcdeg\"}",
                "{\"token\":42}",
                "{\"token\":\"" TOKEN "\"",                             /* cut */
                "{\"token\":\"" TOKEN "\"} x",
        };
        ClusterNodeRecord r;
        const char *odd = "{\"token\":\"" TOKEN "\",\"pid\":\"12\",\"hostname\":\"a\\nb\",\"version\":7,"
                          "\"started\":-1,\"extra\":{\"x\":1}}";

        for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
                cr_assert_eq(cluster_node_record_parse(refused[i], strlen(refused[i]), &r), -EINVAL, "%s",
                             refused[i]);

        /* Fields of the wrong type or shape are left out, the record stays. */
        cr_assert_eq(cluster_node_record_parse(odd, strlen(odd), &r), 0);
        cr_assert_str_eq(r.token, TOKEN);
        cr_assert_eq(r.pid, 0);
        cr_assert_null(r.hostname);
        cr_assert_null(r.version);
        cr_assert_eq(r.started_ms, 0);
        cr_assert_eq(r.protocol, 2, "a record without the field is an older photond's");
        cluster_node_record_done(&r);

        /* A protocol that is not a number is none any photond speaks. */
        cr_assert_eq(cluster_node_record_parse("{\"token\":\"" TOKEN "\",\"protocol\":\"3\"}",
                                               strlen("{\"token\":\"" TOKEN "\",\"protocol\":\"3\"}"), &r), 0);
        cr_assert_eq(r.protocol, 0);
        cluster_node_record_done(&r);

        /* Only len bytes count: a NUL inside is not the end. */
        cr_assert_eq(cluster_node_record_parse("{\"token\":\"" TOKEN "\"}\0junk", 45, &r), -EINVAL);
}

Test(cluster_state, names) {
        cr_assert_str_eq(cluster_state_to_string(CLUSTER_STATE_CONNECTING), "connecting");
        cr_assert_str_eq(cluster_state_to_string(CLUSTER_STATE_CONNECTED), "connected");
        cr_assert_str_eq(cluster_state_to_string(CLUSTER_STATE_RECONNECTING), "reconnecting");
        cr_assert_null(cluster_state_to_string(_CLUSTER_STATE_MAX));
}
