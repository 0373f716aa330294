/* SPDX-License-Identifier: MIT */

/* GET /metrics against a real photond under systemd-socket-activate (the "webhook" fd), scraped with curl: the
 * exposition passes `promtool check metrics` (Debian's prometheus package; skipped with a message without it),
 * the route needs the API token unless PHOTOND_METRICS_AUTH=none, and the values move when the daemon does
 * something: a publish, a lock, a lock wait, failing requests, a job firing, a webhook request, an SSE stream, a
 * connection closing. */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "http-client.h"
#include "json-util.h"

#define TOKEN "m3trics-token"
#define AUTH "Authorization: Bearer " TOKEN
#define MIN_MS ((int64_t) 60 * 1000)

/* ---- curl ---- */

typedef struct Scrape {
        int status;
        char *content_type;
        char *body;
} Scrape;

static void scrape_free(Scrape *s) {
        if (!s)
                return;
        free(s->content_type);
        free(s->body);
        free(s);
}

/* One request through curl; header may be NULL. The body, the status and the Content-Type. */
static Scrape* get(int port, const char *method, const char *path, const char *header) {
        char *url = xasprintf("http://127.0.0.1:%d%s", port, path), *out, *meta;
        const char *argv[24];
        int argc = 0, pipefd[2], status;
        pid_t pid;
        Scrape *s;

        argv[argc++] = "curl";
        argv[argc++] = "--silent";
        argv[argc++] = "--show-error";
        argv[argc++] = "--max-time";
        argv[argc++] = "20";
        argv[argc++] = "--request";
        argv[argc++] = method;
        /* The body, then the status and the type on a last line of their own. */
        argv[argc++] = "--write-out";
        argv[argc++] = "\n%{http_code} %{content_type}";
        if (header) {
                argv[argc++] = "-H";
                argv[argc++] = header;
        }
        argv[argc++] = url;
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
        out = read_all(pipefd[0]);
        close(pipefd[0]);
        cr_assert(waitpid(pid, &status, 0) == pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "curl %s %s failed", method, url);
        free(url);

        s = calloc(1, sizeof(Scrape));
        cr_assert(s);
        meta = strrchr(out, '\n');
        cr_assert(meta, "no status line from curl: %s", out);
        *meta++ = '\0';
        cr_assert(sscanf(meta, "%d", &s->status) == 1, "bad status line: %s", meta);
        s->content_type = strdup(strchr(meta, ' ') ? strchr(meta, ' ') + 1 : "");
        s->body = out;
        return s;
}

static Scrape* scrape(Daemon *d) {
        Scrape *s = get(d->webhook_port, "GET", "/metrics", AUTH);

        cr_assert_eq(s->status, 200, "GET /metrics: %d %s", s->status, s->body);
        return s;
}

/* The value of the sample series ("name" or "name{labels}", exactly as written), NAN if it is not there. */
static double value_of(const Scrape *s, const char *series) {
        size_t n = strlen(series);

        for (const char *l = s->body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, series, n) == 0 && l[n] == ' ')
                        return strtod(l + n + 1, NULL);
        return NAN;
}

/* How far series moved from a to b: b must have it; a request type shows only once requested, so a series missing
 * from a counts as 0 there. */
static double moved(const Scrape *a, const Scrape *b, const char *series) {
        double x = value_of(a, series), y = value_of(b, series);

        cr_assert(!isnan(y), "%s missing from the scrape", series);
        return isnan(x) ? y : y - x;
}

/* `promtool check metrics` on the scrape: 0, or its complaints (the test fails). Skipped when there is no
 * promtool (Debian: prometheus); the test says so. */
static void promtool_check(const Scrape *s) {
        char path[] = "/tmp/photond-metrics-XXXXXX", *cmd, *out;
        int fd, pipefd[2], status;
        pid_t pid;

        if (access("/usr/bin/promtool", X_OK) != 0 && system("command -v promtool >/dev/null 2>&1") != 0) {
                fprintf(stderr, "metrics: promtool not found (Debian package prometheus): `promtool check "
                                "metrics` SKIPPED\n");
                return;
        }
        fd = mkstemp(path);
        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, s->body, strlen(s->body)), (ssize_t) strlen(s->body));
        close(fd);

        cmd = xasprintf("promtool check metrics < '%s' 2>&1", path);
        cr_assert(pipe2(pipefd, O_CLOEXEC) == 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(pipefd[1], STDOUT_FILENO);
                execl("/bin/sh", "sh", "-c", cmd, (char*) NULL);
                _exit(127);
        }
        close(pipefd[1]);
        out = read_all(pipefd[0]);
        close(pipefd[0]);
        cr_assert(waitpid(pid, &status, 0) == pid);
        unlink(path);
        free(cmd);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0 && !out[0],
                  "promtool check metrics: %s\n--- the scrape:\n%s", out, s->body);
        free(out);
}

/* ---- the daemon ---- */

static Daemon* start_env(const char *const *env) {
        return daemon_start_http(env);
}

static void expect_result(Conn *c, const char *id, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect_result(Conn *c, const char *id, const char *fmt, ...) {
        struct json_object *o;
        va_list ap;
        char *line;

        va_start(ap, fmt);
        cr_assert(vasprintf(&line, fmt, ap) >= 0);
        va_end(ap);
        o = conn_request(c, id, "%s", line);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        free(line);
}

/* ---- tests ---- */

Test(metrics, passes_promtool_and_needs_the_token) {
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, NULL });
        Scrape *s;

        s = scrape(d);
        cr_assert_str_eq(s->content_type, "text/plain; version=0.0.4; charset=utf-8");
        cr_assert_eq(value_of(s, "photond_build_info{version=\"" PHOTOND_VERSION "\"}"), 1);
        cr_assert_gt(value_of(s, "process_resident_memory_bytes"), 0);
        cr_assert_gt(value_of(s, "process_open_fds"), 2);
        cr_assert_gt(value_of(s, "process_start_time_seconds"), 1.6e9);
        cr_assert(strstr(s->body, "# TYPE photond_request_duration_seconds histogram\n"));
        promtool_check(s);
        scrape_free(s);

        s = get(d->webhook_port, "GET", "/metrics", NULL);
        cr_assert_eq(s->status, 401, "no token: %d %s", s->status, s->body);
        scrape_free(s);
        s = get(d->webhook_port, "GET", "/metrics", "Authorization: Bearer not-" TOKEN);
        cr_assert_eq(s->status, 401);
        scrape_free(s);

        /* The refusals are counted. */
        s = scrape(d);
        cr_assert_eq(value_of(s, "photond_http_refused_total{reason=\"unauthorized\"}"), 2);
        scrape_free(s);
        daemon_free(d);
}

Test(metrics, no_token_configured_is_403_unless_opened) {
        Daemon *d = start_env(NULL);
        Scrape *s;

        s = get(d->webhook_port, "GET", "/metrics", NULL);
        cr_assert_eq(s->status, 403, "%d %s", s->status, s->body);
        cr_assert(strstr(s->body, "PHOTOND_API_TOKEN"), "the answer says how to set one: %s", s->body);
        scrape_free(s);
        daemon_free(d);

        d = start_env((const char*[]) { "PHOTOND_METRICS_AUTH=none", NULL });
        s = get(d->webhook_port, "GET", "/metrics", NULL);
        cr_assert_eq(s->status, 200, "%d %s", s->status, s->body);
        cr_assert(strstr(s->body, "photond_build_info{"));
        scrape_free(s);
        /* Only /metrics: the rest of the API still needs the token. */
        s = get(d->webhook_port, "GET", "/v1/status", NULL);
        cr_assert_eq(s->status, 403);
        scrape_free(s);
        cr_assert(daemon_log_contains(d, "PHOTOND_METRICS_AUTH=none"), "the open endpoint is logged");
        daemon_free(d);
}

Test(metrics, bad_auth_setting_fails_start) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                        .socket_activate = true, .webhook = true,
                        .env = (const char*[]) { "PHOTOND_METRICS_AUTH=maybe", NULL } });
        Conn *c;
        int status;

        wait_listening(d);
        c = conn_open(d);               /* starts photond, which exits */
        status = daemon_wait_exit(d, 10000);
        cr_assert(status != -1 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0), "photond exits with failure");
        cr_assert(daemon_log_contains(d, "Invalid PHOTOND_METRICS_AUTH=maybe"));
        conn_close(c);
        daemon_free(d);
}

/* Opens GET /v1/events on a socket of its own, reads the answer's head (a 200 stream), and closes. */
static void sse_open_and_close(int port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        const char *req = "GET /v1/events?channel=m:x HTTP/1.1\r\nHost: localhost\r\n" AUTH "\r\n\r\n";
        char buf[1024];
        size_t len = 0;
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert(fd >= 0);
        cr_assert_eq(connect(fd, (struct sockaddr*) &sa, sizeof(sa)), 0);
        cr_assert_eq(write(fd, req, strlen(req)), (ssize_t) strlen(req));
        while (len < sizeof(buf) - 1) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;

                cr_assert_eq(poll(&p, 1, 5000), 1, "no answer to GET /v1/events");
                n = read(fd, buf + len, sizeof(buf) - 1 - len);
                cr_assert_gt(n, 0);
                len += n;
                buf[len] = '\0';
                if (strstr(buf, "\r\n\r\n"))
                        break;
        }
        cr_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
        close(fd);
}

/* Scrapes until series has the value want (what the daemon does for another connection may take a moment). */
static Scrape* scrape_until(Daemon *d, const char *series, double want) {
        uint64_t deadline = mono_ms() + 5000;

        for (;;) {
                Scrape *s = scrape(d);

                if (value_of(s, series) == want)
                        return s;
                cr_assert(mono_ms() < deadline, "%s is %g, not %g", series, value_of(s, series), want);
                scrape_free(s);
                usleep(20 * 1000);
        }
}

Test(metrics, values_move_when_photond_does_something, .timeout = 120) {
        /* The scheduler's clock is set so that a minute boundary falls LEAD_MS after the daemon starts: a
         * "* * * * *" job fires then, without waiting for the real minute. */
        enum { LEAD_MS = 10000 };
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t now = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                offset = (now / MIN_MS + 3) * MIN_MS - (now + LEAD_MS);
        char *off = xasprintf("PHOTOND_TEST_CLOCK_OFFSET_MS=%lld", (long long) offset);
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, "TZ=UTC", off, NULL });
        Conn *sub = conn_open(d), *c = conn_open(d), *w = conn_open(d), *jobs = conn_open(d), *gone;
        Scrape *a, *b, *s;
        struct json_object *o;

        /* Scheduled first: it fires while the rest goes on, and is looked at last. */
        expect_result(jobs, "sj", "{\"type\":\"subscribe\",\"id\":\"sj\",\"channel\":\"jobs:tick\"}");
        expect_result(jobs, "j", "{\"type\":\"schedule\",\"id\":\"j\",\"photonName\":\"tick\",\"jobId\":\"every\","
                                 "\"method\":\"beat\",\"cron\":\"* * * * *\"}");
        expect_result(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"m:x\"}");
        a = scrape(d);
        cr_assert_eq(value_of(a, "photond_subscriptions"), 2, "m:x and jobs:tick");
        cr_assert_eq(value_of(a, "photond_channels_subscribed"), 2);
        cr_assert_eq(value_of(a, "photond_jobs"), 1);

        /* A publish reaches the subscriber: one publish, one delivery. */
        expect_result(c, "pub", "{\"type\":\"publish\",\"id\":\"pub\",\"channel\":\"m:x\",\"message\":{\"n\":1}}");
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        json_object_put(o);

        /* A lock (the fast path), a refused unlock (a result: ok), a waiting lock (pending). */
        expect_result(c, "l1", "{\"type\":\"lock\",\"id\":\"l1\",\"lockName\":\"m\",\"sessionId\":\"a\"}");
        expect_result(c, "u1", "{\"type\":\"unlock\",\"id\":\"u1\",\"lockName\":\"m\",\"sessionId\":\"b\"}");
        conn_send(w, "{\"type\":\"lock\",\"id\":\"l2\",\"lockName\":\"m\",\"sessionId\":\"b\",\"lockWait\":5000}");

        /* Failing requests: not a request at all, and a lock name over its cap. */
        o = conn_request(c, "bad", "{\"type\":\"no_such_type\",\"id\":\"bad\"}");
        cr_assert_str_eq(jstr(o, "type"), "error");
        json_object_put(o);
        o = conn_request(c, "big", "{\"type\":\"lock\",\"id\":\"big\",\"lockName\":\"%0300d\"}", 0);
        cr_assert_str_eq(jstr(o, "type"), "error", "%s", json_object_to_json_string(o));
        json_object_put(o);

        /* A webhook request of a path the route does not know, and an SSE stream. */
        s = get(d->webhook_port, "POST", "/nowhere", NULL);
        cr_assert_eq(s->status, 404);
        scrape_free(s);
        sse_open_and_close(d->webhook_port);

        /* A connection that closes. */
        gone = conn_open(d);
        json_object_put(conn_request(gone, "p", "{\"type\":\"ping\",\"id\":\"p\"}"));
        conn_close(gone);

        /* The waiter gets the lock once it is released. */
        expect_result(c, "u2", "{\"type\":\"unlock\",\"id\":\"u2\",\"lockName\":\"m\",\"sessionId\":\"a\"}");
        o = conn_expect(w, 5000);
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        b = scrape_until(d, "photond_connections_closed_total{reason=\"peer\"}",
                         value_of(a, "photond_connections_closed_total{reason=\"peer\"}") + 1);
        promtool_check(b);
        cr_assert_eq(moved(a, b, "photond_requests_total{type=\"publish\",outcome=\"ok\"}"), 1);
        cr_assert_eq(moved(a, b, "photond_messages_published_total"), 1);
        cr_assert_eq(moved(a, b, "photond_messages_delivered_total"), 1);

        cr_assert_eq(moved(a, b, "photond_locks_acquired_total"), 2, "the lock, then the waiter's hand-over");
        cr_assert_eq(value_of(b, "photond_locks_held"), 1);
        cr_assert_eq(value_of(b, "photond_lock_fencing_token"), 2);
        cr_assert_eq(value_of(b, "photond_lock_waiters"), 0);
        cr_assert_eq(value_of(b, "photond_requests_total{type=\"lock\",outcome=\"ok\"}"), 1);
        cr_assert_eq(value_of(b, "photond_requests_total{type=\"lock\",outcome=\"pending\"}"), 1);
        cr_assert_eq(value_of(b, "photond_requests_total{type=\"lock\",outcome=\"error\"}"), 1);
        cr_assert_eq(value_of(b, "photond_requests_total{type=\"unlock\",outcome=\"ok\"}"), 2);
        cr_assert_eq(value_of(b, "photond_requests_total{type=\"invalid\",outcome=\"error\"}"), 1);
        cr_assert_eq(value_of(b, "photond_request_duration_seconds_count{type=\"lock\"}"), 3);
        cr_assert_eq(value_of(b, "photond_request_duration_seconds_bucket{type=\"lock\",le=\"+Inf\"}"), 3);

        cr_assert_eq(moved(a, b, "photond_connections_accepted_total"), 1);
        cr_assert_eq(value_of(b, "photond_connections"), 4);
        cr_assert_eq(value_of(b, "photond_webhook_requests_total{status=\"404\",scheme=\"none\"}"), 1);
        cr_assert_eq(moved(a, b, "photond_sse_streams_opened_total"), 1);
        scrape_free(a);
        scrape_free(b);

        /* The job fires at the boundary; with no handler its run fails. */
        for (;;) {
                o = conn_recv(jobs, LEAD_MS + 15000);
                cr_assert_not_null(o, "the job did not fire");
                if (streq_ptr(jstr(o, "message.event"), "job-failed"))
                        break;
                json_object_put(o);
        }
        json_object_put(o);
        a = scrape(d);
        promtool_check(a);
        cr_assert_eq(value_of(a, "photond_jobs_fired_total"), 1);
        cr_assert_eq(value_of(a, "photond_jobs_failed_total"), 1);
        cr_assert_eq(value_of(a, "photond_jobs_succeeded_total"), 0);
        cr_assert_eq(value_of(a, "photond_job_lateness_seconds_count"), 1);
        cr_assert_eq(value_of(a, "photond_job_lateness_seconds_bucket{le=\"60\"}"), 1);
        scrape_free(a);

        conn_close(sub);
        conn_close(c);
        conn_close(w);
        conn_close(jobs);
        free(off);
        daemon_free(d);
}
