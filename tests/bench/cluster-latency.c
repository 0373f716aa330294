/* SPDX-License-Identifier: MIT */
/*
 * cluster-latency: publish→delivery latency and the publish rate of one publisher, through photond's control
 * socket, with the subscriber on the same node or on another (cluster mode). Run by tests/bench/cluster-channels.sh.
 *
 *   cluster-latency --pub SOCKET --sub SOCKET [--messages N] [--window W]
 *
 * Latency: N publishes one at a time (the next once the previous was acknowledged and delivered): per publish the
 * time to its acknowledgement and to its delivery to the subscriber; p50 and p99. Rate: N publishes with up to W
 * unacknowledged, the time until the last acknowledgement and the last delivery. One line of results. Waits
 * (10 s at most) for both nodes to say status cluster.ready, or to have no cluster. libc only; replies are
 * picked apart by hand.
 */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct Conn {
        int fd;
        char buf[1 << 16];
        size_t len;
} Conn;

static void die(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        fputs("cluster-latency: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(1);
}

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}

static void conn_open(Conn *c, const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        c->len = 0;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || strlen(path) >= sizeof(sa.sun_path))
                die("socket: %m");
        strcpy(sa.sun_path, path);
        if (connect(c->fd, (struct sockaddr*) &sa, sizeof(sa)) < 0)
                die("connect %s: %m", path);
}

static void conn_write(Conn *c, const char *fmt, ...) {
        char line[512];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof(line))
                die("line too long");
        for (int off = 0; off < n;) {
                ssize_t k = write(c->fd, line + off, n - off);
                if (k < 0 && errno != EINTR)
                        die("write: %m");
                if (k > 0)
                        off += k;
        }
}

/* The next complete line (NUL-terminated, valid until the next call), or NULL when none is buffered. */
static char* conn_line(Conn *c, size_t *consumed) {
        char *nl = memchr(c->buf, '\n', c->len);

        if (!nl)
                return NULL;
        *nl = 0;
        *consumed = nl - c->buf + 1;
        return c->buf;
}

static void conn_consume(Conn *c, size_t n) {
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
}

/* Reads what is there (waiting up to timeout_ms for something). */
static void conn_fill(Conn *c, int timeout_ms) {
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        ssize_t k;

        if (poll(&p, 1, timeout_ms) <= 0)
                return;
        if (c->len == sizeof(c->buf))
                die("line over %zu bytes", sizeof(c->buf));
        k = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (k == 0)
                die("photond closed the connection");
        if (k < 0 && errno != EINTR && errno != EAGAIN)
                die("read: %m");
        if (k > 0)
                c->len += k;
}

/* Waits (5 s) for a line containing needle; returns whether one came. Lines before it are dropped. */
static bool conn_wait_for(Conn *c, const char *needle, char *copy, size_t copy_size) {
        uint64_t deadline = now_ns() + 5 * UINT64_C(1000000000);

        while (now_ns() < deadline) {
                size_t n;
                char *l;

                while ((l = conn_line(c, &n))) {
                        bool hit = strstr(l, needle);

                        if (hit && copy)
                                snprintf(copy, copy_size, "%s", l);
                        conn_consume(c, n);
                        if (hit)
                                return true;
                }
                conn_fill(c, 100);
        }
        return false;
}

static void wait_ready(const char *path) {
        uint64_t deadline = now_ns() + 10 * UINT64_C(1000000000);
        char reply[sizeof(((Conn*) NULL)->buf)];
        Conn *c = malloc(sizeof(Conn));

        if (!c)
                die("out of memory");
        conn_open(c, path);
        for (;;) {
                conn_write(c, "{\"type\":\"status\",\"id\":\"st\"}\n");
                if (!conn_wait_for(c, "\"id\":\"st\"", reply, sizeof(reply)))
                        die("no status from %s", path);
                if (!strstr(reply, "\"cluster\":") || strstr(reply, "\"ready\":true"))
                        break;
                if (now_ns() > deadline)
                        die("%s never became ready", path);
                usleep(20000);
        }
        close(c->fd);
        free(c);
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t*) a, y = *(const uint64_t*) b;

        return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, size_t n, double p) {
        size_t i = (size_t) (p * (double) (n - 1) + 0.5);

        return (double) v[i] / 1000.0;
}

int main(int argc, char **argv) {
        const char *pub_path = NULL, *sub_path = NULL;
        unsigned n = 2000, window = 64;
        static Conn pub, sub;
        uint64_t *ack, *del, t0, t_ack = 0, t_del = 0;
        unsigned acked = 0, delivered = 0, sent = 0;

        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--pub") && i + 1 < argc)
                        pub_path = argv[++i];
                else if (!strcmp(argv[i], "--sub") && i + 1 < argc)
                        sub_path = argv[++i];
                else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
                        n = (unsigned) strtoul(argv[++i], NULL, 10);
                else if (!strcmp(argv[i], "--window") && i + 1 < argc)
                        window = (unsigned) strtoul(argv[++i], NULL, 10);
                else
                        die("usage: cluster-latency --pub SOCKET --sub SOCKET [--messages N] [--window W]");
        }
        if (!pub_path || !sub_path || n == 0 || n > 1000000 || window == 0)
                die("--pub and --sub are needed; 1 <= N <= 1000000, W >= 1");
        ack = calloc(n, sizeof(uint64_t));
        del = calloc(n, sizeof(uint64_t));
        if (!ack || !del)
                die("out of memory");

        wait_ready(pub_path);
        wait_ready(sub_path);
        conn_open(&pub, pub_path);
        conn_open(&sub, sub_path);
        conn_write(&sub, "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"lat\"}\n");
        if (!conn_wait_for(&sub, "\"id\":\"s\"", NULL, 0))
                die("subscribe not answered");

        /* Latency: one at a time. */
        for (unsigned i = 0; i < n; i++) {
                char want_ack[32], want_del[32];
                bool got_ack = false, got_del = false;

                snprintf(want_ack, sizeof(want_ack), "\"id\":\"%u\"", i);
                snprintf(want_del, sizeof(want_del), "{\"i\":%u}", i);
                t0 = now_ns();
                conn_write(&pub, "{\"type\":\"publish\",\"id\":\"%u\",\"channel\":\"lat\",\"message\":{\"i\":%u}}\n", i,
                           i);
                while (!got_ack || !got_del) {
                        size_t k;
                        char *l;

                        if (!got_ack) {
                                while (!got_ack && (l = conn_line(&pub, &k))) {
                                        if (strstr(l, want_ack)) {
                                                if (!strstr(l, "\"success\":true"))
                                                        die("publish refused: %s", l);
                                                ack[i] = now_ns() - t0;
                                                got_ack = true;
                                        }
                                        conn_consume(&pub, k);
                                }
                                if (!got_ack)
                                        conn_fill(&pub, got_del ? 1000 : 0);
                        }
                        if (!got_del) {
                                while (!got_del && (l = conn_line(&sub, &k))) {
                                        if (strstr(l, want_del)) {
                                                del[i] = now_ns() - t0;
                                                got_del = true;
                                        }
                                        conn_consume(&sub, k);
                                }
                                if (!got_del)
                                        conn_fill(&sub, got_ack ? 1000 : 0);
                        }
                        if (now_ns() - t0 > 5 * UINT64_C(1000000000))
                                die("publish %u: no %s within 5 s", i, got_ack ? "delivery" : "answer");
                }
        }
        qsort(ack, n, sizeof(uint64_t), cmp_u64);
        qsort(del, n, sizeof(uint64_t), cmp_u64);
        printf("latency(us): ack p50 %.0f p99 %.0f; delivery p50 %.0f p99 %.0f (n=%u)\n", pct_us(ack, n, 0.5),
               pct_us(ack, n, 0.99), pct_us(del, n, 0.5), pct_us(del, n, 0.99), n);

        /* Rate: up to window unacknowledged. */
        t0 = now_ns();
        while (acked < n || delivered < n) {
                size_t k;
                char *l;

                while (sent < n && sent - acked < window) {
                        conn_write(&pub, "{\"type\":\"publish\",\"id\":\"r%u\",\"channel\":\"lat\",\"message\":{\"r\":%u}}\n",
                                   sent, sent);
                        sent++;
                }
                conn_fill(&pub, 0);
                while ((l = conn_line(&pub, &k))) {
                        if (strstr(l, "\"type\":\"result\"")) {
                                if (!strstr(l, "\"success\":true"))
                                        die("publish refused: %s", l);
                                if (++acked == n)
                                        t_ack = now_ns() - t0;
                        }
                        conn_consume(&pub, k);
                }
                conn_fill(&sub, acked < n ? 0 : 100);
                while ((l = conn_line(&sub, &k))) {
                        if (strstr(l, "\"channel_message\"") && ++delivered == n)
                                t_del = now_ns() - t0;
                        conn_consume(&sub, k);
                }
                if (now_ns() - t0 > 60 * UINT64_C(1000000000))
                        die("rate: %u/%u answered, %u delivered after 60 s", acked, n, delivered);
                if (acked < n && sent - acked >= window) {
                        struct pollfd p[2] = { { .fd = pub.fd, .events = POLLIN }, { .fd = sub.fd, .events = POLLIN } };
                        (void) poll(p, 2, 100);
                }
        }
        printf("rate: %.0f publishes/s answered, %.0f/s delivered (n=%u, window %u)\n",
               (double) n * 1e9 / (double) t_ack, (double) n * 1e9 / (double) t_del, n, window);
        return 0;
}
