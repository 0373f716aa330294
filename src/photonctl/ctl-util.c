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

/* The read buffer of the one connection photonctl reads at a time. It grows to the longest line: a result is as
 * large as the method's output (HANDLER_MAX_OUTPUT_BYTES, 4 MiB by default, raised by PHOTOND_*), and JSON
 * escaping can make the line several times that. */
#define CTL_MAX_LINE_BYTES (256U * 1024U * 1024U)
static char *rbuf = NULL;
static size_t rbuf_len = 0, rbuf_alloc = 0;

const char* ctl_connect_hint(CtlSocketSource source, int error, bool custom_home) {
        bool absent = error == ENOENT || error == ENOTDIR, refused = error == ECONNREFUSED,
                denied = error == EACCES || error == EPERM;

        switch (source) {
        case CTL_SOCKET_USER:
                /* The packaged photond.socket listens under ~/.photon only: another PHOTON_HOME needs a drop-in. */
                if ((absent || refused) && custom_home)
                        return "photond is not running for this PHOTON_HOME: start photond, or give photond.socket "
                               "a drop-in that listens here (see photond.socket(5)) and run "
                               "systemctl --user start photond.socket";
                if (absent)
                        return "photond is not running: systemctl --user start photond.socket";
                if (refused)
                        return "photond is not running, the socket is stale: systemctl --user start photond.socket";
                if (denied)
                        return "the user instance's socket is only for the user running photond";
                return NULL;

        case CTL_SOCKET_SYSTEM:
                /* units/system/photond.socket: SocketUser=root, SocketGroup=photon, SocketMode=0660. */
                if (absent || refused)
                        return "the system instance is not running; as root: systemctl start photond.socket";
                if (denied)
                        return "only root and group 'photon' may use the system instance; as root: "
                               "usermod -aG photon USER, then log in again";
                return NULL;

        case CTL_SOCKET_PATH:
                if (absent)
                        return "nothing listens on this path: there is no socket";
                if (refused)
                        return "nothing listens on this path: the socket file is stale";
                if (denied)
                        return "no permission to connect: check the modes of the socket and its directories";
                return NULL;

        default:
                return NULL;
        }
}

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
        if (connect(fd, (struct sockaddr*) &sa, offsetof(struct sockaddr_un, sun_path) + l + 1) < 0) {
                int error = errno;
                const char *hint = ctl_connect_hint(ctx->socket_source, error, ctx->custom_home);

                return log_error_errno(error, "Cannot connect to photond at %s: %m%s%s%s", ctx->socket_path,
                                       hint ? " (" : "", hint ?: "", hint ? ")" : "");
        }
        /* Whatever a previous connection left unread belongs to it, not to this one. */
        rbuf_len = 0;
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

/* Deeper than json-c's default of 32: photond accepts a method's output up to that depth, and the reply wraps it
 * in one more level. */
#define CTL_JSON_MAX_DEPTH 128

static int parse_line(const char *line, size_t len, struct json_object **ret) {
        struct json_object *o;
        json_tokener *tok;
        bool ok;

        tok = json_tokener_new_ex(CTL_JSON_MAX_DEPTH);
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        o = json_tokener_parse_ex(tok, line, (int) len);
        ok = json_tokener_get_error(tok) == json_tokener_success && json_object_is_type(o, json_type_object) &&
                strspn(line + json_tokener_get_parse_end(tok), " \t\r") == len - json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (!ok) {
                json_object_put(o);
                return -EBADMSG;
        }
        *ret = o;
        return 0;
}

int ctl_recv(int fd, int timeout_ms, struct json_object **ret) {
        size_t scanned = 0;

        for (;;) {
                char *nl = rbuf ? memchr(rbuf + scanned, '\n', rbuf_len - scanned) : NULL;

                if (nl) {
                        size_t l = nl - rbuf;
                        int r = parse_line(rbuf, l, ret);
                        memmove(rbuf, nl + 1, rbuf_len - l - 1);
                        rbuf_len -= l + 1;
                        return r;
                }
                scanned = rbuf_len;
                if (rbuf_alloc - rbuf_len < 65536) {
                        size_t n = MAX(rbuf_alloc * 2, (size_t) 65536);
                        char *p;

                        if (rbuf_alloc >= CTL_MAX_LINE_BYTES)
                                return -E2BIG;
                        p = realloc(rbuf, MIN(n, (size_t) CTL_MAX_LINE_BYTES));
                        if (!p)
                                return -ENOMEM;
                        rbuf = p;
                        rbuf_alloc = MIN(n, (size_t) CTL_MAX_LINE_BYTES);
                }

                struct pollfd p = { .fd = fd, .events = POLLIN };
                int k = poll(&p, 1, timeout_ms);
                if (k < 0) {
                        if (errno == EINTR)
                                return -EINTR;
                        return -errno;
                }
                if (k == 0)
                        return -ETIMEDOUT;

                ssize_t n = read(fd, rbuf + rbuf_len, rbuf_alloc - rbuf_len);
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

        if (streq_ptr(type, "error")) {
                const char *suggestion = json_get_string(reply, "suggestion");

                return log_error_errno(SYNTHETIC_ERRNO(EIO), "%s failed: %s%s%s%s", what,
                                       json_get_string(reply, "error") ?: "unknown error",
                                       suggestion ? " (suggestion: " : "", suggestion ?: "",
                                       suggestion ? ")" : "");
        }
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
