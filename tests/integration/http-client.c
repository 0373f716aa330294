/* SPDX-License-Identifier: MIT */

/* HTTP through curl for the integration tests of photond's HTTP listener (webhooks, the API, /metrics), and photond
 * started with that listener. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "http-client.h"
#include "json-util.h"

void http_free(Http *h) {
        if (!h)
                return;
        free(h->head);
        free(h->body);
        json_object_put(h->json);
        free(h);
}

char* read_all(int fd) {
        size_t len = 0, alloc = 65536;
        char *out = malloc(alloc);

        cr_assert(out);
        for (;;) {
                if (alloc - len < 4096)
                        cr_assert(out = realloc(out, alloc *= 2));
                ssize_t n = read(fd, out + len, alloc - len - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += n;
        }
        out[len] = '\0';
        return out;
}

/* Starts curl with args (NULL-terminated, without the program name); its stdout is *ret_fd. */
pid_t curl_spawn(const char *const *args, int *ret_fd) {
        const char *argv[128];
        int argc = 0, pipefd[2];
        pid_t pid;

        argv[argc++] = "curl";
        argv[argc++] = "--silent";
        argv[argc++] = "--show-error";
        argv[argc++] = "--http1.1";
        argv[argc++] = "--max-time";
        argv[argc++] = "20";
        for (const char *const *a = args; *a; a++) {
                cr_assert(argc < 126);
                argv[argc++] = *a;
        }
        argv[argc] = NULL;

        cr_assert(pipe2(pipefd, O_CLOEXEC) == 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(pipefd[1], STDOUT_FILENO);
                execvp(argv[0], (char**) argv);
                _exit(127);
        }
        close(pipefd[1]);
        *ret_fd = pipefd[0];
        return pid;
}

int curl_wait(pid_t pid) {
        int status;

        cr_assert(waitpid(pid, &status, 0) == pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs curl with args (NULL-terminated, without the program name); returns its exit status and stdout. */
int run_curl(const char *const *args, char **ret_out) {
        int fd;
        pid_t pid = curl_spawn(args, &fd);

        *ret_out = read_all(fd);
        close(fd);
        return curl_wait(pid);
}

/* One HTTP request through curl. body: NULL for none, "@path" for a file. Extra curl arguments (headers as
 * "-H", "Name: value", ...) follow, NULL-terminated. */
Http* http_v(int port, const char *method, const char *path, const char *body, va_list ap) {
        const char *args[96];
        int n = 0;
        char *url, *out, *p, *sep;
        Http *h;

        cr_assert(asprintf(&url, "http://127.0.0.1:%d%s", port, path) >= 0);
        args[n++] = "--include";
        args[n++] = "--request";
        args[n++] = method;
        if (body) {
                args[n++] = "--data-binary";
                args[n++] = body;
                args[n++] = "-H";
                args[n++] = "Content-Type: application/json";
        }
        for (const char *a = va_arg(ap, const char*); a; a = va_arg(ap, const char*)) {
                cr_assert(n < 90);
                args[n++] = a;
        }
        args[n++] = url;
        args[n] = NULL;

        int r = run_curl(args, &out);
        free(url);
        cr_assert_eq(r, 0, "curl %s %s failed with %d", method, path, r);

        h = calloc(1, sizeof(Http));
        cr_assert(h);
        /* Skip interim responses (100 Continue). */
        p = out;
        for (;;) {
                sep = strstr(p, "\r\n\r\n");
                cr_assert(sep, "no header block in: %s", out);
                cr_assert(sscanf(p, "HTTP/1.1 %d", &h->status) == 1, "bad status line: %s", p);
                if (h->status >= 200)
                        break;
                p = sep + 4;
        }
        h->head = strndup(p, sep - p);
        h->body = strdup(sep + 4);
        if (h->body[0])
                (void) json_parse(h->body, strlen(h->body), &h->json, NULL);
        free(out);
        return h;
}

Http* http(int port, const char *method, const char *path, const char *body, ...) {
        va_list ap;
        Http *h;

        va_start(ap, body);
        h = http_v(port, method, path, body, ap);
        va_end(ap);
        return h;
}

/* The value of a response header (case-insensitive name), or NULL; static buffer. */
const char* http_header(const Http *h, const char *name) {
        static char value[1024];
        size_t nl = strlen(name);

        for (const char *line = strstr(h->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
                const char *l = line + 2;
                if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
                        const char *v = l + nl + 1, *end = strstr(v, "\r\n");
                        size_t len;
                        v += strspn(v, " ");
                        len = end ? (size_t) (end - v) : strlen(v);
                        cr_assert(len < sizeof(value));
                        memcpy(value, v, len);
                        value[len] = '\0';
                        return value;
                }
        }
        return NULL;
}

void expect(Http *h, int status, const char *error) {
        cr_assert_eq(h->status, status, "expected %d, got %d: %s", status, h->status, h->body);
        if (error) {
                cr_assert(h->json, "body is not JSON: %s", h->body);
                cr_assert_str_eq(jstr(h->json, "error"), error);
        }
        http_free(h);
}

/* daemon_start() returns once systemd-socket-activate has bound the control socket, which may be a moment before
 * it listens; connecting until it does has no better signal. */
void wait_listening(Daemon *d) {
        uint64_t deadline = mono_ms() + 10000;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        strncpy(sa.sun_path, d->socket_path, sizeof(sa.sun_path) - 1);
        for (;;) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

                cr_assert(fd >= 0);
                r = connect(fd, (struct sockaddr*) &sa, sizeof(sa));
                close(fd);
                if (r == 0)
                        return;
                cr_assert(errno == ECONNREFUSED, "connect %s: %m", d->socket_path);
                cr_assert(mono_ms() < deadline, "%s does not accept connections", d->socket_path);
                usleep(2000);
        }
}

/* photond socket-activated with the webhook (HTTP) fd and env, ready: the first control connection starts it. */
Daemon* daemon_start_http(const char *const *env) {
        Daemon *d = daemon_start(&(DaemonOptions) { .socket_activate = true, .webhook = true, .env = env });
        Conn *c;

        wait_listening(d);
        c = conn_open(d);
        json_object_put(conn_request(c, "p", "{\"type\":\"ping\",\"id\":\"p\"}"));
        conn_close(c);
        daemon_wait_ready(d);
        cr_assert_gt(d->webhook_port, 0);
        return d;
}

/* Strings that live until the test process ends; kept reachable so LeakSanitizer does not report them. */
static char *kept[1024];
static size_t n_kept;

char* keep(char *s) {
        cr_assert(n_kept < sizeof(kept) / sizeof(kept[0]));
        return kept[n_kept++] = s;
}

char* hdr(const char *fmt, ...) {
        va_list ap;
        char *s;

        va_start(ap, fmt);
        cr_assert(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        return keep(s);
}

/* ---- Server-Sent Events ---- */


/* auth: the Authorization header (NULL: none), header: another one (NULL: none). */
Sse* sse_open_as(int port, const char *query, const char *auth, const char *header) {
        const char *args[16];
        int n = 0;
        Sse *s = calloc(1, sizeof(Sse));

        cr_assert(s);
        args[n++] = "--no-buffer";
        if (auth) {
                args[n++] = "-H";
                args[n++] = auth;
        }
        if (header) {
                args[n++] = "-H";
                args[n++] = header;
        }
        args[n++] = hdr("http://127.0.0.1:%d/v1/events?%s", port, query);
        args[n] = NULL;
        s->pid = curl_spawn(args, &s->fd);
        s->buf = calloc(1, 1);
        return s;
}

/* Reads until text has come (true) or timeout_ms passed, or the stream ended (false). */
bool sse_wait(Sse *s, const char *text, int timeout_ms) {
        uint64_t deadline = mono_ms() + (uint64_t) timeout_ms;

        while (!strstr(s->buf + s->seen, text)) {
                struct pollfd p = { .fd = s->fd, .events = POLLIN };
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                char chunk[4096];
                ssize_t k;

                if (left <= 0 || poll(&p, 1, (int) left) <= 0)
                        return false;
                k = read(s->fd, chunk, sizeof(chunk));
                if (k <= 0)
                        return false;
                cr_assert(s->buf = realloc(s->buf, s->len + k + 1));
                memcpy(s->buf + s->len, chunk, k);
                s->len += k;
                s->buf[s->len] = '\0';
        }
        return true;
}

/* Reads what has come, without waiting. */
void sse_drain(Sse *s) {
        for (;;) {
                struct pollfd p = { .fd = s->fd, .events = POLLIN };
                char chunk[65536];
                ssize_t k;

                if (poll(&p, 1, 0) <= 0)
                        return;
                k = read(s->fd, chunk, sizeof(chunk));
                if (k <= 0)
                        return;
                /* Only the last bytes matter to the callers that drain. */
                if (s->len > 1024 * 1024) {
                        s->len = s->seen = 0;
                        s->buf[0] = '\0';
                }
                cr_assert(s->buf = realloc(s->buf, s->len + k + 1));
                memcpy(s->buf + s->len, chunk, k);
                s->len += k;
                s->buf[s->len] = '\0';
        }
}

/* The next event (up to its blank line) after what was seen, within timeout_ms, as a string (kept); NULL if none. */
const char* sse_next(Sse *s, int timeout_ms) {
        const char *start, *end;

        /* Comments (keep-alives, the greeting) are not events. */
        for (;;) {
                if (!sse_wait(s, "\n\n", timeout_ms))
                        return NULL;
                start = s->buf + s->seen;
                end = strstr(start, "\n\n");
                s->seen = end + 2 - s->buf;
                if (start[0] != ':')
                        return keep(strndup(start, end - start));
        }
}

/* sse_next() without keeping the event: true when one came within timeout_ms. */
bool sse_skip_event(Sse *s, int timeout_ms) {
        for (;;) {
                const char *start;

                if (!sse_wait(s, "\n\n", timeout_ms))
                        return false;
                start = s->buf + s->seen;
                s->seen = strstr(start, "\n\n") + 2 - s->buf;
                if (start[0] != ':')
                        break;
        }
        /* What was skipped is not kept: thousands of events must not make every read copy megabytes. */
        memmove(s->buf, s->buf + s->seen, s->len - s->seen + 1);
        s->len -= s->seen;
        s->seen = 0;
        return true;
}

void sse_close(Sse *s) {
        kill(s->pid, SIGTERM);
        (void) curl_wait(s->pid);
        close(s->fd);
        free(s->buf);
        free(s);
}

const char* sse_event_text(int64_t id, const char *channel, const char *data) {
        return hdr("id: %" PRId64 "\nevent: %s\ndata: %s", id, channel, data);
}
