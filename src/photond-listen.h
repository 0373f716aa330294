/* SPDX-License-Identifier: MIT */
#pragma once

/* Listening sockets: the ones systemd passes by name, or a control socket photond binds itself; and what systemd
 * kept for photond in its file descriptor store. Non-logging. */

#include <stdbool.h>
#include <stddef.h>

/* The names systemd's file descriptor store knows photond's fds by (FDNAME=, LISTEN_FDNAMES; photond-fdstore.c): the
 * state of the connections a stop kept, and each of those connections. */
#define FDSTORE_STATE_NAME "photond-state"
#define FDSTORE_CLIENT_NAME "photond-client"

typedef struct ListenFds {
        int control_fd;         /* -EBADF if none passed */
        int webhook_fd;         /* -EBADF if none passed */
        /* what the last stop kept in systemd's file descriptor store (photond-fdstore.h) */
        int state_fd;           /* "photond-state": -EBADF if none passed */
        int *client_fds;        /* "photond-client" */
        size_t n_client_fds;
        bool store_names;       /* fds of the store's names were passed (kept or closed) */
        char **unknown_names;   /* names of passed fds we closed, for the caller to warn about (strv) */
} ListenFds;

/* Takes the fds passed by systemd (LISTEN_FDS/LISTEN_FDNAMES, environment unset afterwards). The control fd must be
 * a Unix stream socket listening, the webhook fd a stream socket listening, the state fd a regular file (a memfd),
 * the client fds connected Unix stream sockets; others are closed and listed in unknown_names.
 * Returns the number of fds taken (0 when not socket-activated) or negative errno. */
int listen_fds_collect(ListenFds *ret);
void listen_fds_done(ListenFds *fds);

/* Binds and listens on a Unix stream socket at path, mode 0600, creating the directory (0700).
 * -EADDRINUSE when another live daemon answers on path; a stale socket file is removed first. */
int listen_bind_unix(const char *path, int *ret_fd);

/* The filesystem path a listening Unix socket is bound to (for the owner file under activation). */
int listen_socket_path(int fd, char **ret);
