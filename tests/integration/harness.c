/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "json-util.h"
#include "macro.h"

const char* photond_binary(void) {
        return getenv("PHOTOND_BINARY") ?: getenv("PHOTOND_BUILD_BINARY") ?: "photond";
}

const char* photonctl_binary(void) {
        return getenv("PHOTONCTL_BINARY") ?: getenv("PHOTONCTL_BUILD_BINARY") ?: "photonctl";
}

uint64_t mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void daemon_stop_clean(Daemon *d) {
        int st = daemon_signal_and_wait(d, SIGTERM);

        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "photond exited with status %d", st);
        daemon_free(d);
}

Daemon* cluster_node_start(const char *url, const char *node_id, const char *home, ...) {
        char url_env[400], id_env[64];
        const char *env[16] = { url_env, id_env };
        size_t n = 2;
        va_list ap;

        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", url);
        snprintf(id_env, sizeof(id_env), "PHOTOND_NODE_ID=%s", node_id);
        va_start(ap, home);
        for (const char *e; n < ELEMENTSOF(env) - 1 && (e = va_arg(ap, const char *)); )
                env[n++] = e;
        va_end(ap);
        return daemon_start(&(DaemonOptions) { .env = env, .home = home });
}

void cluster_wait_ready(Daemon *d, bool ready) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o = status_of(d);
                bool ok = jbool(o, "data.cluster.ready");

                json_object_put(o);
                if (ok == ready)
                        return;
                cr_assert_lt(mono_ms(), deadline, "node never became %s", ready ? "ready" : "unready");
                (void) poll(NULL, 0, 20);
        }
}

int64_t real_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char* xasprintf(const char *fmt, ...) {
        va_list ap;
        char *s;

        va_start(ap, fmt);
        cr_assert(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        return s;
}

static int notify_socket_open(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert(fd >= 0);
        strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
        cr_assert(bind(fd, (struct sockaddr*) &sa, sizeof(sa)) == 0, "bind %s: %m", path);
        return fd;
}

static int webhook_listener(int *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd, one = 1;

        fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fd >= 0);
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        cr_assert(bind(fd, (struct sockaddr*) &sa, sizeof(sa)) == 0);
        cr_assert(listen(fd, 128) == 0);
        cr_assert(getsockname(fd, (struct sockaddr*) &sa, &len) == 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

Daemon* daemon_start(const DaemonOptions *opts) {
        static const DaemonOptions defaults = {};
        Daemon *d;
        char *argv[64];
        int argc = 0, webhook_fd = -1;
        char *envp[64];
        int envc = 0;
        char *owned[64];        /* what argv/envp allocated: freed once the child has its copy */
        size_t n_owned = 0;
#define OWN(s) (owned[n_owned++] = (s))

        if (!opts)
                opts = &defaults;

        d = calloc(1, sizeof(Daemon));
        cr_assert(d);
        d->notify_fd = -1;
        if (opts->home)
                d->home = strdup(opts->home);
        else {
                char tmpl[] = "/tmp/photond-test-XXXXXX";
                cr_assert(mkdtemp(tmpl));
                d->home = strdup(tmpl);
                d->own_home = true;
        }
        d->socket_path = xasprintf("%s/.data/daemon.sock", d->home);
        d->log_path = xasprintf("%s/photond-%d.log", d->home, (int) getpid());
        d->notify_path = xasprintf("%s/notify-%d-%llu", d->home, (int) getpid(), (unsigned long long) mono_ms());
        d->notify_fd = notify_socket_open(d->notify_path);

        if (opts->socket_activate) {
                char *dir = xasprintf("%s/.data", d->home);
                mkdir(dir, 0700);
                free(dir);
                argv[argc++] = "systemd-socket-activate";
                argv[argc++] = OWN(xasprintf("--listen=%s", d->socket_path));
                if (opts->webhook)
                        webhook_fd = webhook_listener(&d->webhook_port);
                if (opts->fdnames)
                        argv[argc++] = OWN(xasprintf("--fdname=%s", opts->fdnames));
                else
                        argv[argc++] = opts->webhook ? "--fdname=webhook:control" : "--fdname=control";
                argv[argc++] = OWN(xasprintf("--setenv=PHOTON_HOME=%s", d->home));
                argv[argc++] = OWN(xasprintf("--setenv=HOME=%s", d->home));
                argv[argc++] = OWN(xasprintf("--setenv=NOTIFY_SOCKET=%s", d->notify_path));
                for (const char *const *e = opts->env; e && *e; e++)
                        argv[argc++] = OWN(xasprintf("--setenv=%s", *e));
        }
        argv[argc++] = (char*) photond_binary();
        argv[argc++] = "--bus=none";
        if (getenv("PHOTOND_TEST_DEBUG"))
                argv[argc++] = "--log-level=debug";
        for (const char *const *a = opts->args; a && *a; a++)
                argv[argc++] = (char*) *a;
        argv[argc] = NULL;

        envp[envc++] = OWN(xasprintf("PHOTON_HOME=%s", d->home));
        envp[envc++] = OWN(xasprintf("HOME=%s", d->home));
        envp[envc++] = OWN(xasprintf("NOTIFY_SOCKET=%s", d->notify_path));
        envp[envc++] = OWN(xasprintf("PATH=%s", getenv("PATH") ?: "/usr/bin:/bin"));
        if (getenv("ASAN_OPTIONS"))
                envp[envc++] = OWN(xasprintf("ASAN_OPTIONS=%s", getenv("ASAN_OPTIONS")));
        if (getenv("UBSAN_OPTIONS"))
                envp[envc++] = OWN(xasprintf("UBSAN_OPTIONS=%s", getenv("UBSAN_OPTIONS")));
        for (const char *const *e = opts->env; e && *e; e++)
                envp[envc++] = (char*) *e;
        envp[envc] = NULL;

        d->pid = fork();
        cr_assert(d->pid >= 0);
        if (d->pid == 0) {
                /* A failing test exits without daemon_free(): the daemon must not outlive it. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                int log = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                if (log >= 0 && !getenv("PHOTOND_TEST_VERBOSE"))
                        dup2(log, STDERR_FILENO);
                if (opts->nofile > 0) {
                        struct rlimit rl = { opts->nofile, opts->nofile };
                        (void) setrlimit(RLIMIT_NOFILE, &rl);
                }
                if (webhook_fd >= 0) {
                        /* systemd-socket-activate passes on fds it got via LISTEN_FDS: ours becomes fd 3, named by
                         * the first --fdname entry; its own listener follows as fd 4. */
                        dup2(webhook_fd, 3);
                        setenv("LISTEN_FDS", "1", 1);
                        char pid[32];
                        snprintf(pid, sizeof(pid), "%d", (int) getpid());
                        setenv("LISTEN_PID", pid, 1);
                        for (int i = 0; envp[i]; i++)
                                putenv(envp[i]);
                        execvp(argv[0], argv);
                        _exit(127);
                }
                execvpe(argv[0], argv, envp);
                _exit(127);
        }
        if (webhook_fd >= 0)
                close(webhook_fd);
        for (size_t i = 0; i < n_owned; i++)
                free(owned[i]);
#undef OWN

        if (opts->socket_activate) {
                /* The listener exists as soon as systemd-socket-activate has bound it; photond starts on the
                 * first connection, which then waits in the backlog. */
                uint64_t deadline = mono_ms() + 10000;
                struct stat st;
                while (stat(d->socket_path, &st) < 0) {
                        cr_assert(mono_ms() < deadline, "systemd-socket-activate did not create %s", d->socket_path);
                        cr_assert(waitpid(d->pid, NULL, WNOHANG) == 0, "systemd-socket-activate exited");
                        usleep(2000);   /* polling a path with a deadline: there is no readiness signal for it */
                }
        } else
                daemon_wait_ready(d);

        return d;
}

void daemon_wait_ready(Daemon *d) {
        uint64_t deadline = mono_ms() + 10000;

        while (!d->ready) {
                struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };
                char buf[4096];
                ssize_t n;
                int k;

                k = poll(&p, 1, 100);
                if (k == 0) {
                        int status;
                        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
                                daemon_dump_log(d);
                                d->pid = 0;
                                cr_assert_fail("photond exited before READY=1 (status %d)", status);
                        }
                        cr_assert(mono_ms() < deadline, "photond not ready within 10 s");
                        continue;
                }
                n = recv(d->notify_fd, buf, sizeof(buf) - 1, 0);
                cr_assert(n >= 0);
                buf[n] = '\0';
                if (strstr(buf, "READY=1"))
                        d->ready = true;
        }
}

int daemon_wait_exit(Daemon *d, int timeout_ms) {
        uint64_t deadline = mono_ms() + timeout_ms;
        int status;

        if (d->pid <= 0)
                return -1;
        for (;;) {
                pid_t p = waitpid(d->pid, &status, WNOHANG);
                if (p == d->pid) {
                        d->pid = 0;
                        return status;
                }
                if (mono_ms() >= deadline)
                        return -1;
                /* waitpid has no timeout; the notify socket doubles as a 10 ms wait (STOPPING=1 may arrive). */
                struct pollfd pf = { .fd = d->notify_fd, .events = POLLIN };
                if (poll(&pf, 1, 10) > 0) {
                        char buf[512];
                        (void) recv(d->notify_fd, buf, sizeof(buf), 0);
                }
        }
}

int daemon_signal_and_wait(Daemon *d, int sig) {
        int status;

        cr_assert(d->pid > 0);
        kill(d->pid, sig);
        status = daemon_wait_exit(d, 10000);
        cr_assert(status != -1, "photond did not exit within 10 s of signal %d", sig);
        return status;
}

static void rm_rf(const char *path) {
        char *cmd = xasprintf("rm -rf '%s'", path);
        (void) !system(cmd);
        free(cmd);
}

char* daemon_take_home(Daemon *d) {
        d->own_home = false;
        return strdup(d->home);
}

void daemon_dump_log(Daemon *d) {
        FILE *f = fopen(d->log_path, "re");
        char line[1024];

        if (!f)
                return;
        fprintf(stderr, "---- photond log (%s) ----\n", d->log_path);
        while (fgets(line, sizeof(line), f))
                fputs(line, stderr);
        fclose(f);
}

void daemon_free(Daemon *d) {
        if (!d)
                return;
        if (d->pid > 0) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, NULL, 0);
        }
        if (d->notify_fd >= 0)
                close(d->notify_fd);
        if (d->notify_path)
                unlink(d->notify_path);
        if (d->own_home && !getenv("PHOTOND_TEST_KEEP"))
                rm_rf(d->home);
        free(d->home);
        free(d->socket_path);
        free(d->log_path);
        free(d->notify_path);
        free(d);
}

struct json_object* status_of(Daemon *d) {
        Conn *c = conn_open(d);
        struct json_object *o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");

        conn_close(c);
        return o;
}

Conn* conn_open_path(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Conn *c;

        c = calloc(1, sizeof(Conn));
        cr_assert(c);
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert(c->fd >= 0);
        strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
        /* systemd-socket-activate creates the socket file a moment before it calls listen(): refusal in that
         * window is not an error. Nothing signals the listen(), so retry briefly. */
        uint64_t deadline = mono_ms() + 2000;
        while (connect(c->fd, (struct sockaddr*) &sa, sizeof(sa)) < 0) {
                cr_assert(errno == ECONNREFUSED && mono_ms() < deadline, "connect %s: %m", path);
                usleep(1000);
        }
        return c;
}

Conn* conn_open(Daemon *d) {
        return conn_open_path(d->socket_path);
}

void conn_close(Conn *c) {
        if (!c)
                return;
        close(c->fd);
        free(c->buf);
        free(c);
}

void conn_send_raw(Conn *c, const void *data, size_t size) {
        const char *p = data;

        while (size > 0) {
                ssize_t n = send(c->fd, p, size, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                cr_assert(n > 0, "send: %m");
                p += n;
                size -= n;
        }
}

void conn_send(Conn *c, const char *fmt, ...) {
        va_list ap;
        char *s;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&s, fmt, ap);
        va_end(ap);
        cr_assert(n >= 0);
        conn_send_raw(c, s, n);
        conn_send_raw(c, "\n", 1);
        free(s);
}

/* Returns 1 with a line, 0 on timeout, -1 on EOF. */
static int conn_read_line(Conn *c, int timeout_ms, char **ret, size_t *ret_len) {
        uint64_t deadline = mono_ms() + timeout_ms;

        for (;;) {
                char *nl = c->buf ? memchr(c->buf, '\n', c->len) : NULL;
                if (nl) {
                        *ret_len = nl - c->buf;
                        *ret = strndup(c->buf, *ret_len);
                        memmove(c->buf, nl + 1, c->len - *ret_len - 1);
                        c->len -= *ret_len + 1;
                        return 1;
                }
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                if (left <= 0)
                        return 0;
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                int k = poll(&p, 1, (int) left);
                if (k == 0)
                        return 0;
                cr_assert(k > 0);
                if (c->alloc - c->len < 65536) {
                        c->alloc = c->alloc ? c->alloc * 2 : 131072;
                        c->buf = realloc(c->buf, c->alloc);
                        cr_assert(c->buf);
                }
                ssize_t n = read(c->fd, c->buf + c->len, c->alloc - c->len);
                if (n <= 0)
                        return -1;
                c->len += n;
        }
}

struct json_object* conn_recv(Conn *c, int timeout_ms) {
        struct json_object *o = NULL;
        char *line;
        size_t len;

        if (conn_read_line(c, timeout_ms, &line, &len) <= 0)
                return NULL;
        cr_assert(json_parse(line, len, &o, NULL) == 0, "photond sent a line that is not JSON: %s", line);
        free(line);
        return o;
}

char* conn_expect_line(Conn *c, int timeout_ms) {
        char *line;
        size_t len;

        cr_assert(conn_read_line(c, timeout_ms, &line, &len) > 0, "no line from photond within %d ms", timeout_ms);
        return line;
}

void conn_expect_quiet(Conn *c, int ms) {
        struct json_object *o = conn_recv(c, ms);

        cr_assert_null(o, "unexpected %s", o ? json_object_to_json_string(o) : "");
}

int64_t conn_publish(Conn *c, const char *channel, const char *message) {
        static unsigned serial;
        struct json_object *o;
        int64_t event_id;
        char id[32];

        snprintf(id, sizeof(id), "pub%u", ++serial);
        o = conn_request(c, id, "{\"type\":\"publish\",\"id\":\"%s\",\"channel\":\"%s\",\"message\":%s}", id, channel,
                         message);
        cr_assert_str_eq(jstr(o, "type"), "result", "publish: %s", json_object_to_json_string(o));
        event_id = jint(o, "data.eventId");
        cr_assert_gt(event_id, 0);
        json_object_put(o);
        return event_id;
}

struct json_object* conn_expect(Conn *c, int timeout_ms) {
        struct json_object *o = conn_recv(c, timeout_ms);
        cr_assert(o, "no line from photond within %d ms", timeout_ms);
        return o;
}

struct json_object* conn_request(Conn *c, const char *id, const char *fmt, ...) {
        uint64_t deadline;
        va_list ap;
        char *s;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&s, fmt, ap);
        va_end(ap);
        cr_assert(n >= 0);
        conn_send_raw(c, s, n);
        conn_send_raw(c, "\n", 1);
        free(s);

        deadline = mono_ms() + 5000;
        for (;;) {
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                cr_assert(left > 0, "no reply to request '%s' within 5 s", id);
                struct json_object *o = conn_recv(c, (int) left);
                cr_assert(o, "no reply to request '%s' (timeout or EOF)", id);
                const char *rid = jstr(o, "id");
                if (rid && strcmp(rid, id) == 0)
                        return o;
                json_object_put(o);
        }
}

bool conn_wait_eof(Conn *c, int timeout_ms) {
        uint64_t deadline = mono_ms() + timeout_ms;

        for (;;) {
                char *line;
                size_t len;
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                if (left <= 0)
                        return false;
                int r = conn_read_line(c, (int) left, &line, &len);
                if (r < 0)
                        return true;
                if (r == 0)
                        return false;
                free(line);
        }
}

bool jhas(struct json_object *o, const char *path) {
        struct json_object *holder;
        char *copy = strdup(path), *dot = strrchr(copy, '.');
        bool r;

        /* Distinguishes a key holding null from a missing key. */
        if (dot) {
                *dot = '\0';
                holder = jget(o, copy);
                r = holder && json_object_is_type(holder, json_type_object) &&
                    json_object_object_get_ex(holder, dot + 1, NULL);
        } else
                r = json_object_object_get_ex(o, copy, NULL);
        free(copy);
        return r;
}

int run_ctl(Daemon *d, char **ret_out, const char *arg, ...) {
        const char *argv[64];
        int argc = 0, pipefd[2], status;
        va_list ap;
        pid_t pid;

        argv[argc++] = photonctl_binary();
        argv[argc++] = "--socket";
        argv[argc++] = d->socket_path;
        va_start(ap, arg);
        for (const char *a = arg; a && argc < 63; a = va_arg(ap, const char*))
                argv[argc++] = a;
        va_end(ap);
        argv[argc] = NULL;

        cr_assert(pipe2(pipefd, O_CLOEXEC) == 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(pipefd[1], STDOUT_FILENO);
                execv(argv[0], (char**) argv);
                _exit(127);
        }
        close(pipefd[1]);

        size_t len = 0, alloc = 4096;
        char *out = malloc(alloc);
        for (;;) {
                if (alloc - len < 1024)
                        out = realloc(out, alloc *= 2);
                ssize_t n = read(pipefd[0], out + len, alloc - len - 1);
                if (n <= 0)
                        break;
                len += n;
        }
        out[len] = '\0';
        close(pipefd[0]);
        cr_assert(waitpid(pid, &status, 0) == pid);
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

const char* daemon_wait_notify(Daemon *d, const char *text, int timeout_ms) {
        static char buf[4096];
        uint64_t deadline = mono_ms() + timeout_ms;

        for (;;) {
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };
                ssize_t n;

                if (left <= 0 || poll(&p, 1, (int) left) <= 0)
                        return NULL;
                n = recv(d->notify_fd, buf, sizeof(buf) - 1, 0);
                if (n < 0)
                        return NULL;
                buf[n] = '\0';
                if (strstr(buf, "READY=1"))
                        d->ready = true;
                if (strstr(buf, text))
                        return buf;
        }
}

bool daemon_log_contains(Daemon *d, const char *text) {
        FILE *f = fopen(d->log_path, "re");
        char line[4096];
        bool found = false;

        if (!f)
                return false;
        while (!found && fgets(line, sizeof(line), f))
                found = strstr(line, text) != NULL;
        fclose(f);
        return found;
}
