/* SPDX-License-Identifier: MIT */
#pragma once

/* Listening sockets: the ones systemd passes by name, or a control socket photond binds itself. Non-logging. */

typedef struct ListenFds {
        int control_fd;         /* -EBADF if none passed */
        int webhook_fd;         /* -EBADF if none passed */
        char **unknown_names;   /* names of passed fds we closed, for the caller to warn about (strv) */
} ListenFds;

/* Takes the fds passed by systemd (LISTEN_FDS/LISTEN_FDNAMES, environment unset afterwards). The control fd must be
 * a Unix stream socket, the webhook fd a stream socket; others are closed and listed in unknown_names.
 * Returns the number of fds taken (0 when not socket-activated) or negative errno. */
int listen_fds_collect(ListenFds *ret);
void listen_fds_done(ListenFds *fds);

/* Binds and listens on a Unix stream socket at path, mode 0600, creating the directory (0700).
 * -EADDRINUSE when another live daemon answers on path; a stale socket file is removed first. */
int listen_bind_unix(const char *path, int *ret_fd);

/* The filesystem path a listening Unix socket is bound to (for the owner file under activation). */
int listen_socket_path(int fd, char **ret);
