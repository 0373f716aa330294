/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include "harness.h"
Test(core, placeholder_ping) {
        Daemon *d = daemon_start(NULL);
        Conn *c = conn_open(d);
        struct json_object *o = conn_request(c, "p1", "{\"type\":\"ping\",\"id\":\"p1\"}");
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);
        conn_close(c);
        daemon_free(d);
}
