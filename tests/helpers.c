/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

FakeStore* fake_store_new(const char *dir) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        FakeStore *s = calloc(1, sizeof(FakeStore));
        int one = 1;

        cr_assert(s);
        cr_assert(asprintf(&s->path, "%s/notify-%d", dir, (int) getpid()) >= 0);
        s->text = strdup("");
        s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        cr_assert(s->fd >= 0);
        cr_assert(strlen(s->path) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, s->path);
        cr_assert(bind(s->fd, (struct sockaddr*) &sa, sizeof(sa)) == 0, "bind %s: %m", s->path);
        /* sd_pid_notify_with_fds() sends credentials; systemd asks for them too. */
        (void) setsockopt(s->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
        return s;
}

static void fake_store_message(FakeStore *s, char *text, const int *fds, size_t n_fds) {
        const char *name = "stored";
        char *t, *line, *save = NULL;
        bool store = false, remove = false;

        cr_assert(asprintf(&t, "%s%s\n", s->text, text) >= 0);
        free(s->text);
        s->text = t;

        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (streq(line, "FDSTORE=1"))
                        store = true;
                else if (streq(line, "FDSTOREREMOVE=1"))
                        remove = true;
                else if (strncmp(line, "FDNAME=", 7) == 0)
                        name = line + 7;
        }
        if (store)
                for (size_t i = 0; i < n_fds; i++) {
                        cr_assert(s->n_fds < FAKE_STORE_MAX);
                        s->fds[s->n_fds] = fds[i];
                        s->names[s->n_fds++] = strdup(name);
                }
        else
                for (size_t i = 0; i < n_fds; i++)
                        close(fds[i]);
        if (remove) {
                size_t k = 0;

                s->n_removed++;
                for (size_t i = 0; i < s->n_fds; i++) {
                        if (streq(s->names[i], name)) {
                                close(s->fds[i]);
                                free(s->names[i]);
                                continue;
                        }
                        s->fds[k] = s->fds[i];
                        s->names[k++] = s->names[i];
                }
                s->n_fds = k;
        }
}

unsigned fake_store_receive(FakeStore *s, int wait_ms) {
        unsigned n = 0;

        for (;;) {
                union {
                        struct cmsghdr h;
                        char buf[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(struct ucred))];
                } control;
                char text[4096];
                struct iovec iov = { text, sizeof(text) - 1 };
                struct msghdr mh = {
                        .msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = &control,
                        .msg_controllen = sizeof(control),
                };
                int fds[253];
                size_t n_fds = 0;
                ssize_t k;

                if (n == 0 && wait_ms > 0) {
                        struct pollfd p = { .fd = s->fd, .events = POLLIN };
                        (void) poll(&p, 1, wait_ms);
                }
                k = recvmsg(s->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (k < 0) {
                        cr_assert(errno == EAGAIN, "recvmsg: %m");
                        return n;
                }
                cr_assert(!(mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)), "a notification was cut short");
                text[k] = '\0';
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                                size_t m = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

                                memcpy(fds + n_fds, CMSG_DATA(c), m * sizeof(int));
                                n_fds += m;
                        }
                fake_store_message(s, text, fds, n_fds);
                n++;
        }
}

size_t fake_store_get(FakeStore *s, const char *name, int *ret_fds, size_t max) {
        size_t n = 0;

        for (size_t i = 0; i < s->n_fds; i++)
                if (streq(s->names[i], name) && n < max)
                        ret_fds[n++] = s->fds[i];
        return n;
}

void fake_store_free(FakeStore *s) {
        if (!s)
                return;
        for (size_t i = 0; i < s->n_fds; i++) {
                close(s->fds[i]);
                free(s->names[i]);
        }
        close(s->fd);
        unlink(s->path);
        free(s->path);
        free(s->text);
        free(s);
}
