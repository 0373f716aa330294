/* SPDX-License-Identifier: MIT */

/* Socket activation by name, as dbus-broker does it: "control" is the NDJSON socket, "webhook" the HTTP one. Without
 * passed fds photond binds the reference path itself, so the same binary serves both ways of starting. */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fd-util.h"
#include "macro.h"
#include "photond-listen.h"
#include "string-util.h"

static int strv_push(char ***l, const char *s) {
        size_t n = 0;
        char **nl;

        if (*l)
                while ((*l)[n])
                        n++;
        nl = realloc(*l, (n + 2) * sizeof(char*));
        if (!nl)
                return -ENOMEM;
        *l = nl;
        nl[n] = strdup(s);
        if (!nl[n])
                return -ENOMEM;
        nl[n + 1] = NULL;
        return 0;
}

void listen_fds_done(ListenFds *fds) {
        fds->control_fd = safe_close(fds->control_fd);
        fds->webhook_fd = safe_close(fds->webhook_fd);
        fds->state_fd = safe_close(fds->state_fd);
        for (size_t i = 0; i < fds->n_client_fds; i++)
                safe_close(fds->client_fds[i]);
        fds->client_fds = mfree(fds->client_fds);
        fds->n_client_fds = 0;
        strv_free(fds->unknown_names);
        fds->unknown_names = NULL;
}

static bool fd_is_regular(int fd) {
        struct stat st;

        return fstat(fd, &st) >= 0 && S_ISREG(st.st_mode);
}

int listen_fds_collect(ListenFds *ret) {
        char **names = NULL;
        int n, r = 0;

        *ret = (ListenFds) { .control_fd = -EBADF, .webhook_fd = -EBADF, .state_fd = -EBADF };

        n = sd_listen_fds_with_names(/* unset_environment= */ true, &names);
        if (n <= 0)
                return n;

        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";

                if (streq(name, FDSTORE_STATE_NAME) || streq(name, FDSTORE_CLIENT_NAME))
                        ret->store_names = true;

                if (streq(name, "control") && ret->control_fd < 0 &&
                    sd_is_socket_unix(fd, SOCK_STREAM, /* listening= */ 1, NULL, 0) > 0)
                        ret->control_fd = fd;
                else if (streq(name, "webhook") && ret->webhook_fd < 0 &&
                         sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, /* listening= */ 1) > 0)
                        ret->webhook_fd = fd;
                else if (streq(name, FDSTORE_STATE_NAME) && ret->state_fd < 0 && fd_is_regular(fd))
                        ret->state_fd = fd;
                else if (streq(name, FDSTORE_CLIENT_NAME) &&
                         sd_is_socket_unix(fd, SOCK_STREAM, /* listening= */ 0, NULL, 0) > 0) {
                        int *l = realloc(ret->client_fds, (ret->n_client_fds + 1) * sizeof(int));

                        if (!l) {
                                safe_close(fd);
                                r = -ENOMEM;
                                continue;
                        }
                        ret->client_fds = l;
                        ret->client_fds[ret->n_client_fds++] = fd;
                } else {
                        safe_close(fd);
                        if (r >= 0)
                                r = strv_push(&ret->unknown_names, name);
                        continue;
                }
                (void) fd_nonblock(fd, true);
                (void) fd_cloexec(fd, true);
        }

        strv_free(names);
        if (r < 0) {
                listen_fds_done(ret);
                return r;
        }
        return n;
}

static int unix_address(const char *path, struct sockaddr_un *sa, socklen_t *len) {
        size_t l = strlen(path);

        if (l == 0 || l >= sizeof(sa->sun_path))
                return -ENAMETOOLONG;
        *sa = (struct sockaddr_un) { .sun_family = AF_UNIX };
        memcpy(sa->sun_path, path, l);
        *len = offsetof(struct sockaddr_un, sun_path) + l + 1;
        return 0;
}

/* 1 if something accepts connections on path, 0 if not (a stale socket or nothing). */
static int socket_is_live(const struct sockaddr_un *sa, socklen_t len) {
        _cleanup_close_ int fd = -EBADF;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr*) sa, len) >= 0)
                return 1;
        return errno == EAGAIN ? 1 : 0;   /* EAGAIN: a live listener with a full backlog */
}

int listen_bind_unix(const char *path, int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *dir = NULL;
        struct sockaddr_un sa;
        socklen_t len;
        struct stat st;
        mode_t old_umask;
        int r;

        r = unix_address(path, &sa, &len);
        if (r < 0)
                return r;

        dir = strdup(path);
        if (!dir)
                return -ENOMEM;
        r = mkdir_parents_and_self(dirname(dir), 0700);
        if (r < 0)
                return r;

        if (lstat(path, &st) >= 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                r = socket_is_live(&sa, len);
                if (r < 0)
                        return r;
                if (r > 0)
                        return -EADDRINUSE;
                if (unlink(path) < 0 && errno != ENOENT)
                        return -errno;
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;

        /* The mode of a Unix socket file comes from the umask at bind(); chmod afterwards would leave a window. */
        old_umask = umask(0177);
        r = bind(fd, (struct sockaddr*) &sa, len) < 0 ? -errno : 0;
        umask(old_umask);
        if (r < 0)
                return r;

        if (listen(fd, SOMAXCONN) < 0)
                return -errno;

        *ret_fd = TAKE_FD(fd);
        return 0;
}

int listen_socket_path(int fd, char **ret) {
        struct sockaddr_un sa = {};
        socklen_t len = sizeof(sa);
        char *p;

        if (getsockname(fd, (struct sockaddr*) &sa, &len) < 0)
                return -errno;
        if (sa.sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] == '\0')
                return -EAFNOSUPPORT;
        p = strndup(sa.sun_path, len - offsetof(struct sockaddr_un, sun_path));
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}
