/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl-util.h"
#include "log.h"

int ctl_connect(const CtlContext *ctx, int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t l = strlen(ctx->socket_path);

        if (l >= sizeof(sa.sun_path))
                return log_error_errno(SYNTHETIC_ERRNO(ENAMETOOLONG), "Socket path too long: %s", ctx->socket_path);
        memcpy(sa.sun_path, ctx->socket_path, l);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "socket(): %m");
        if (connect(fd, (struct sockaddr*) &sa, offsetof(struct sockaddr_un, sun_path) + l + 1) < 0)
                return log_error_errno(errno, "Cannot connect to photond at %s: %m (is it running? "
                                       "systemctl --user start photond.socket)", ctx->socket_path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

struct json_object* ctl_request_new(const char *type) {
        static unsigned counter = 0;
        struct json_object *o;
        char id[64];

        snprintf(id, sizeof(id), "ctl-%d-%u", (int) getpid(), ++counter);
        o = json_object_new_object();
        if (!o)
                return NULL;
        if (json_add_string(o, "type", type) < 0 || json_add_string(o, "id", id) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

int ctl_send(int fd, struct json_object *req) {
        const char *s;
        size_t len;
        _cleanup_free_ char *line = NULL;

        s = json_object_to_json_string_length(req, JSON_FORMAT_FLAGS, &len);
        if (!s)
                return -ENOMEM;
        line = malloc(len + 1);
        if (!line)
                return -ENOMEM;
        memcpy(line, s, len);
        line[len] = '\n';
        for (size_t off = 0; off < len + 1;) {
                ssize_t n = send(fd, line + off, len + 1 - off, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                off += n;
        }
        return 0;
}

/* Per-fd read buffer: photonctl talks to one socket at a time. */
static char rbuf[1 << 20];
static size_t rbuf_len = 0;

int ctl_recv(int fd, int timeout_ms, struct json_object **ret) {
        for (;;) {
                char *nl = memchr(rbuf, '\n', rbuf_len);

                if (nl) {
                        size_t l = nl - rbuf;
                        int r = json_parse(rbuf, l, ret, NULL);
                        memmove(rbuf, nl + 1, rbuf_len - l - 1);
                        rbuf_len -= l + 1;
                        if (r < 0)
                                return -EBADMSG;
                        return 0;
                }
                if (rbuf_len == sizeof(rbuf))
                        return -E2BIG;

                struct pollfd p = { .fd = fd, .events = POLLIN };
                int k = poll(&p, 1, timeout_ms);
                if (k < 0) {
                        if (errno == EINTR)
                                return -EINTR;
                        return -errno;
                }
                if (k == 0)
                        return -ETIMEDOUT;

                ssize_t n = read(fd, rbuf + rbuf_len, sizeof(rbuf) - rbuf_len);
                if (n < 0) {
                        if (errno == EINTR)
                                return -EINTR;
                        return -errno;
                }
                if (n == 0)
                        return -ECONNRESET;
                rbuf_len += n;
        }
}

int ctl_call(const CtlContext *ctx, struct json_object *req, struct json_object **ret_reply) {
        _cleanup_close_ int fd = -EBADF;
        const char *id = json_get_string(req, "id");
        int r;

        r = ctl_connect(ctx, &fd);
        if (r < 0)
                return r;
        r = ctl_send(fd, req);
        if (r < 0)
                return log_error_errno(r, "Failed to send the request: %m");

        for (;;) {
                _cleanup_(json_object_putp) struct json_object *reply = NULL;

                r = ctl_recv(fd, 30000, &reply);
                if (r == -ETIMEDOUT)
                        return log_error_errno(r, "No answer from photond within 30 s.");
                if (r == -ECONNRESET)
                        return log_error_errno(r, "photond closed the connection without answering.");
                if (r < 0)
                        return log_error_errno(r, "Failed to read the reply: %m");
                if (streq_ptr(json_get_string(reply, "id"), id) ||
                    streq_ptr(json_get_string(reply, "id"), "unknown")) {
                        *ret_reply = TAKE_PTR(reply);
                        return 0;
                }
        }
}

int ctl_check_reply(struct json_object *reply, const char *what) {
        struct json_object *v, *data;
        const char *type = json_get_string(reply, "type");

        if (streq_ptr(type, "error"))
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "%s failed: %s", what,
                                       json_get_string(reply, "error") ?: "unknown error");
        if (json_object_object_get_ex(reply, "success", &v) && !json_object_get_boolean(v)) {
                const char *reason = NULL;
                if (json_object_object_get_ex(reply, "data", &data))
                        reason = json_get_string(data, "reason");
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "%s failed: %s", what,
                                       reason ?: json_get_string(reply, "error") ?: "refused");
        }
        return 0;
}

int ctl_query(const CtlContext *ctx, struct json_object *req, const char *what, struct json_object **ret_reply) {
        _cleanup_(json_object_putp) struct json_object *reply = NULL;
        int r;

        if (!req)
                return log_oom();
        r = ctl_call(ctx, req, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        r = ctl_check_reply(reply, what);
        if (r < 0)
                return r;
        *ret_reply = TAKE_PTR(reply);
        return !ctx->json;
}

void ctl_print_json(struct json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS));
}

int ctl_parse_json_arg(const char *arg, const char *what, struct json_object **ret) {
        const char *err = NULL;

        if (json_parse(arg, strlen(arg), ret, &err) < 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "%s is not valid JSON (%s): %s", what,
                                       err ?: "syntax error", arg);
        return 0;
}

void ctl_format_duration(char *buf, size_t len, int64_t ms) {
        int64_t s = ms / 1000;

        if (ms < 0)
                ms = -ms, s = -s;
        if (s < 60)
                snprintf(buf, len, "%" PRIi64 "s", s);
        else if (s < 3600)
                snprintf(buf, len, "%" PRIi64 "m %" PRIi64 "s", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, len, "%" PRIi64 "h %" PRIi64 "m", s / 3600, (s % 3600) / 60);
        else
                snprintf(buf, len, "%" PRIi64 "d %" PRIi64 "h", s / 86400, (s % 86400) / 3600);
}

void ctl_format_time(char *buf, size_t len, int64_t epoch_ms) {
        time_t t = (time_t) (epoch_ms / 1000);
        struct tm tm;

        if (epoch_ms <= 0 || !localtime_r(&t, &tm)) {
                snprintf(buf, len, "-");
                return;
        }
        strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm);
}
