/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis-helper.h"

bool test_redis_available(void) {
        return access("/usr/bin/redis-server", X_OK) == 0 || access("/usr/local/bin/redis-server", X_OK) == 0;
}

static long long mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int test_redis_start(TestRedis *r, const char *dir, const char *const *extra) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char notify[sizeof(sa.sun_path)];
        long long deadline;
        int fd, e;

        r->pid = 0;
        snprintf(r->socket, sizeof(r->socket), "%s/redis.sock", dir);
        snprintf(r->url, sizeof(r->url), "unix://%s", r->socket);
        snprintf(notify, sizeof(notify), "%s/redis-notify", dir);
        (void) unlink(notify);

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        memcpy(sa.sun_path, notify, strlen(notify) + 1);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                e = -errno;
                close(fd);
                return e;
        }

        r->pid = fork();
        if (r->pid < 0) {
                e = -errno;
                close(fd);
                r->pid = 0;
                return e;
        }
        if (r->pid == 0) {
                const char *argv[64] = {
                        "redis-server", "--port", "0", "--unixsocket", r->socket, "--unixsocketperm", "700",
                        "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
                        "--supervised", "systemd", "--loglevel", "warning",
                };
                size_t n = 19;

                /* A failing test exits without test_redis_stop(): its Redis must not outlive it. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (size_t i = 0; extra && extra[i] && n < 62; i++)
                        argv[n++] = extra[i];
                argv[n] = NULL;
                setenv("NOTIFY_SOCKET", notify, 1);
                int null = open("/dev/null", O_WRONLY);
                if (null >= 0)
                        dup2(null, STDOUT_FILENO);
                execvp("redis-server", (char **) argv);
                _exit(127);
        }

        deadline = mono_ms() + 10000;
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char buf[512];
                ssize_t k;
                long long left = deadline - mono_ms();

                if (left <= 0 || poll(&p, 1, (int) left) <= 0)
                        break;
                k = recv(fd, buf, sizeof(buf) - 1, 0);
                if (k < 0)
                        break;
                buf[k] = 0;
                if (strstr(buf, "READY=1")) {
                        close(fd);
                        (void) unlink(notify);
                        return 0;
                }
        }
        close(fd);
        (void) unlink(notify);
        test_redis_stop(r);
        return -ETIMEDOUT;
}

void test_redis_stop(TestRedis *r) {
        if (r->pid <= 0)
                return;
        (void) kill(r->pid, SIGCONT);
        (void) kill(r->pid, SIGTERM);
        (void) waitpid(r->pid, NULL, 0);
        r->pid = 0;
}
