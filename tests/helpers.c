/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "json-util.h"
#include "photond-control.h"
#include "shared-buf.h"

char* tmpdir_new(void) {
        char tmpl[] = "/tmp/photond-unit-XXXXXX";

        cr_assert(mkdtemp(tmpl));
        return strdup(tmpl);
}

void tmpdir_remove(char *path) {
        char *cmd;

        if (!path)
                return;
        cr_assert(asprintf(&cmd, "rm -rf '%s'", path) >= 0);
        (void) !system(cmd);
        free(cmd);
        free(path);
}

struct json_object* jget(struct json_object *o, const char *path) {
        char *copy = strdup(path), *save = NULL;

        cr_assert(copy);
        for (char *tok = strtok_r(copy, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save)) {
                if (json_object_is_type(o, json_type_array)) {
                        char *end;
                        long i = strtol(tok, &end, 10);
                        o = *end ? NULL : json_object_array_get_idx(o, i);
                } else if (json_object_is_type(o, json_type_object)) {
                        struct json_object *v;
                        o = json_object_object_get_ex(o, tok, &v) ? v : NULL;
                } else
                        o = NULL;
        }
        free(copy);
        return o;
}

const char* jstr(struct json_object *o, const char *path) {
        struct json_object *v = jget(o, path);
        return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

int64_t jint(struct json_object *o, const char *path) {
        struct json_object *v = jget(o, path);
        cr_assert(v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)),
                  "'%s' is not a number in %s", path, json_object_to_json_string(o));
        return json_object_get_int64(v);
}

bool jbool(struct json_object *o, const char *path) {
        struct json_object *v = jget(o, path);
        cr_assert(v && json_object_is_type(v, json_type_boolean), "'%s' is not a boolean in %s", path,
                  json_object_to_json_string(o));
        return json_object_get_boolean(v);
}

char* test_pop_line(Client *c) {
        SharedBuf *b = client_pop_queued(c);
        char *s;

        if (!b)
                return NULL;
        cr_assert(b->size > 0 && b->data[b->size - 1] == '\n', "every line ends in a newline");
        s = strndup(b->data, b->size - 1);
        shared_buf_unref(b);
        cr_assert(s);
        return s;
}

struct json_object* test_pop_json(Client *c) {
        char *s = test_pop_line(c);
        struct json_object *o = NULL;

        cr_assert_not_null(s, "nothing queued");
        cr_assert_eq(json_parse(s, strlen(s), &o, NULL), 0, "not JSON: %s", s);
        free(s);
        return o;
}

void test_request(Manager *m, Client *c, const char *fmt, ...) {
        _cleanup_free_ char *line = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        cr_assert(vasprintf(&line, fmt, ap) >= 0);
        va_end(ap);

        c->manager = m;
        r = control_handle_line(c, line, strlen(line));
        cr_assert_eq(r, 0, "%s: %d", line, r);
}
