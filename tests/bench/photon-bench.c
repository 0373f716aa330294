/* SPDX-License-Identifier: MIT */
/*
 * photon-bench: a load generator for photond and, in the same run and with the same client behaviour, for Redis,
 * so docs/performance.md can give ratios measured side by side.
 *
 * One process, one thread, one epoll set, libc only. Replies are not parsed as JSON: the few fields the scenarios
 * need are picked out of each NDJSON line (photond) or RESP reply (Redis) by hand, so that the client spends as
 * little CPU per message as possible and the server, not the instrument, is what saturates. Each report says how
 * much CPU both sides used, so a reader can tell when that did not hold.
 *
 * Scenarios: fanout, conns, locks; paced (one client at a fixed rate, for the server's CPU time per request);
 * command and provide for the webhook comparison; "start" launches a server and waits for its READY=1 (the
 * sd_notify protocol, which photond and redis-server --supervised systemd both speak), so run.sh never guesses
 * with sleeps.
 */

#include <endian.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_USEC UINT64_C(1000)
#define NSEC_PER_MSEC UINT64_C(1000000)
#define NSEC_PER_SEC  UINT64_C(1000000000)

#define CHANNEL "bench:c"

typedef enum Target {
        TARGET_PHOTON,
        TARGET_REDIS,
} Target;

static Target arg_target = TARGET_PHOTON;
static const char *arg_socket = NULL;
static pid_t arg_pid = 0;
/* --socket and --pid may name several servers, comma-separated (cluster mode: two photond nodes and their Redis):
 * connection i goes to socket i modulo their number, and the CPU and RSS are the sum of the pids'. */
#define MAX_SERVERS 8
static char *arg_sockets[MAX_SERVERS];
static unsigned n_sockets;
static pid_t arg_pids[MAX_SERVERS];
static unsigned n_pids;
static unsigned arg_subscribers = 10;
static unsigned arg_publishers = 1;
static unsigned arg_messages = 10000;
static unsigned arg_bytes = 64;
static unsigned arg_window = 64;            /* DECISIONS.md: "Benchmark parameters" */
static unsigned arg_conns = 10000;
static unsigned arg_clients = 8;
static unsigned arg_pairs = 10000;
static unsigned arg_names = 1;
static unsigned arg_lock_wait = 0;          /* photond only: "lockWait" in ms, 0 = retry loop as with Redis */
static unsigned arg_timeout = 60;           /* seconds, whole scenario */
static unsigned arg_duration = 0;           /* locks: start no new pair after this many seconds (0: no limit) */
static const char *arg_log = NULL;
static const char *arg_photon = "bench";    /* command: the photon whose provider answers */

#define IN_SET(x, a, b) ((x) == (a) || (x) == (b))

static const char *target_name(void) {
        return arg_target == TARGET_REDIS ? "redis" : "photond";
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        fputs("photon-bench: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(2);
}

static void *xrealloc(void *p, size_t n) {
        p = realloc(p, n ?: 1);
        if (!p)
                die("out of memory");
        return p;
}

static void *xcalloc(size_t n, size_t size) {
        void *p = calloc(n ?: 1, size ?: 1);
        if (!p)
                die("out of memory");
        return p;
}

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

/* ---- latency histogram: log-linear, 64 steps per power of two (< 1.6 % error), constant memory ---- */

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (59 * HIST_SUB)

typedef struct Histogram {
        uint64_t count;
        uint64_t max;
        uint64_t buckets[HIST_BUCKETS];
} Histogram;

static unsigned hist_index(uint64_t v) {
        unsigned e, shift;

        if (v < 2 * HIST_SUB)
                return (unsigned) v;
        e = 63 - (unsigned) __builtin_clzll(v);
        shift = e - HIST_SUB_BITS;
        return (shift + 1) * HIST_SUB + (unsigned) (v >> shift) - HIST_SUB;
}

static uint64_t hist_value(unsigned idx) {
        unsigned shift;

        if (idx < 2 * HIST_SUB)
                return idx;
        shift = idx / HIST_SUB - 1;
        /* the middle of the bucket */
        return ((uint64_t) (idx % HIST_SUB + HIST_SUB) << shift) + (UINT64_C(1) << shift) / 2;
}

static void hist_add(Histogram *h, uint64_t v) {
        h->buckets[hist_index(v)]++;
        h->count++;
        if (v > h->max)
                h->max = v;
}

static uint64_t hist_percentile(const Histogram *h, double p) {
        uint64_t rank, seen = 0;

        if (h->count == 0)
                return 0;
        rank = (uint64_t) (p / 100.0 * (double) h->count + 0.999999);
        if (rank < 1)
                rank = 1;
        for (unsigned i = 0; i < HIST_BUCKETS; i++) {
                seen += h->buckets[i];
                if (seen >= rank)
                        return hist_value(i) < h->max ? hist_value(i) : h->max;
        }
        return h->max;
}

static double us(uint64_t ns) {
        return (double) ns / (double) NSEC_PER_USEC;
}

/* ---- the server's footprint, from /proc ---- */

typedef struct ServerSample {
        uint64_t rss_kib;
        uint64_t cpu_ticks;
        uint64_t cpu_ns;        /* the sum of its threads' run time, or 0 without schedstat */
        uint64_t at;
} ServerSample;

/* The run time of every thread of the server in ns (/proc/PID/task/TID/schedstat, first field), or 0 if the kernel
 * has no schedstat. utime+stime count in clock ticks (10 ms): too coarse for a paced run at 1 % of a core. */
static uint64_t server_cpu_ns_of(pid_t pid) {
        char path[384];
        uint64_t sum = 0;
        DIR *d;
        struct dirent *de;

        snprintf(path, sizeof path, "/proc/%d/task", (int) pid);
        d = opendir(path);
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                unsigned long long ns;
                FILE *f;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", (int) pid, de->d_name);
                f = fopen(path, "re");
                if (!f)
                        continue;
                if (fscanf(f, "%llu", &ns) == 1)
                        sum += ns;
                fclose(f);
        }
        closedir(d);
        return sum;
}

/* The write system calls the process made so far (/proc/PID/io, syscw: write, writev, sendmsg, …), or 0. */
static uint64_t server_write_calls_of(pid_t pid) {
        char path[64], buf[256];
        uint64_t n = 0;
        FILE *f;

        snprintf(path, sizeof path, "/proc/%d/io", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return 0;
        while (fgets(buf, sizeof buf, f))
                if (sscanf(buf, "syscw: %" SCNu64, &n) == 1)
                        break;
        fclose(f);
        return n;
}

static void server_sample_of(pid_t pid, ServerSample *ret) {
        char path[64], buf[4096], *p;
        FILE *f;

        *ret = (ServerSample) { .at = now_ns() };
        if (pid <= 0)
                return;

        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                die("cannot read %s: %m (is --pid right?)", path);
        while (fgets(buf, sizeof buf, f))
                if (sscanf(buf, "VmRSS: %" SCNu64, &ret->rss_kib) == 1)
                        break;
        fclose(f);

        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                die("cannot read %s: %m", path);
        if (!fgets(buf, sizeof buf, f))
                buf[0] = 0;
        fclose(f);
        /* utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so count after ')' */
        p = strrchr(buf, ')');
        if (p) {
                unsigned long long ut = 0, st = 0;

                if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
                        ret->cpu_ticks = ut + st;
        }
        ret->cpu_ns = server_cpu_ns_of(pid);
}

static void server_sample(ServerSample *ret) {
        *ret = (ServerSample) { .at = now_ns() };
        for (unsigned i = 0; i < n_pids; i++) {
                ServerSample one;

                server_sample_of(arg_pids[i], &one);
                ret->rss_kib += one.rss_kib;
                ret->cpu_ticks += one.cpu_ticks;
                /* all or nothing: one pid without schedstat leaves the ticks to count */
                ret->cpu_ns = i == 0 || ret->cpu_ns > 0 ? (one.cpu_ns > 0 ? ret->cpu_ns + one.cpu_ns : 0) : 0;
        }
}

static double server_cpu_percent(const ServerSample *a, const ServerSample *b) {
        double wall = (double) (b->at - a->at) / (double) NSEC_PER_SEC;

        if (arg_pid <= 0 || wall <= 0)
                return 0;
        if (a->cpu_ns > 0 && b->cpu_ns > 0)
                return 100.0 * (double) (b->cpu_ns - a->cpu_ns) / (double) NSEC_PER_SEC / wall;
        return 100.0 * (double) (b->cpu_ticks - a->cpu_ticks) / (double) sysconf(_SC_CLK_TCK) / wall;
}

/* The server's CPU time in µs per request between two samples. */
static double server_cpu_us_per(const ServerSample *a, const ServerSample *b, uint64_t requests) {
        double wall = (double) (b->at - a->at) / (double) NSEC_PER_USEC;

        if (arg_pid <= 0 || requests == 0)
                return 0;
        return server_cpu_percent(a, b) / 100.0 * wall / (double) requests;
}

static uint64_t self_cpu_ns(void) {
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (uint64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * NSEC_PER_SEC +
                (uint64_t) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * NSEC_PER_USEC;
}

/* ---- connections ---- */

typedef enum Role {
        ROLE_SUBSCRIBER,
        ROLE_PUBLISHER,
        ROLE_LOCKER,
        ROLE_TIMER,             /* a timerfd: its expirations go to on_tick() */
} Role;

typedef struct Conn {
        int fd;
        Role role;
        unsigned idx;
        bool closed;
        bool want_out;
        char *rbuf;
        size_t rlen, rcap;
        char *wbuf;
        size_t wlen, woff, wcap;
} Conn;

/* One reply or push, whichever the protocol, reduced to what the scenarios look at. */
typedef enum FrameKind {
        FRAME_OK,               /* photond success:true / pong; Redis +OK, :N, bulk, subscribe confirmation */
        FRAME_REFUSED,          /* photond success:false (lock held); Redis nil */
        FRAME_ERROR,            /* photond type:error; Redis -ERR */
        FRAME_MESSAGE,          /* a channel message */
        FRAME_REFRESH,          /* photond refresh_needed: messages were dropped for this subscriber */
        FRAME_INVOKE,           /* photond asks a provider to run a method; payload is the invoke id */
        FRAME_OTHER,
} FrameKind;

typedef struct Frame {
        FrameKind kind;
        const char *raw;        /* the whole line or reply, for diagnostics */
        size_t raw_len;
        const char *payload;    /* MESSAGE: the message; Redis bulk reply: its bytes */
        size_t payload_len;
        int64_t event_id;       /* photond MESSAGE; -1 if absent */
        int64_t integer;        /* Redis integer reply; photond fencingToken; -1 if absent */
} Frame;

static int epoll_fd = -1;
static unsigned conns_closed = 0;
static void (*on_frame)(Conn *c, const Frame *f, uint64_t now) = NULL;
static void (*after_batch)(uint64_t now) = NULL;
static void (*on_tick)(uint64_t expirations, uint64_t now) = NULL;

static void conn_close(Conn *c) {
        if (c->closed)
                return;
        (void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->closed = true;
        conns_closed++;
        if (conns_closed <= 3)
                fprintf(stderr, "photon-bench: %s closed connection %u (role %d)\n",
                        target_name(), c->idx, (int) c->role);
}

static Conn *conn_new(Role role, unsigned idx, size_t rcap) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct epoll_event ev = { .events = EPOLLIN };
        Conn *c;
        int fd;

        const char *path = arg_sockets[idx % n_sockets];

        if (strlen(path) >= sizeof sa.sun_path)
                die("socket path too long: %s", path);
        strcpy(sa.sun_path, path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                die("socket(): %m (connection %u; is RLIMIT_NOFILE high enough?)", idx);
        /* Blocking connect: when the server's backlog is full it waits for an accept instead of failing. */
        while (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                if (errno != EINTR)
                        die("connect(%s): %m (connection %u)", path, idx);
        if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
                die("fcntl(): %m");

        c = xcalloc(1, sizeof *c);
        *c = (Conn) { .fd = fd, .role = role, .idx = idx, .rcap = rcap };
        ev.data.ptr = c;
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
                die("epoll_ctl(): %m");
        return c;
}

static void conn_flush(Conn *c) {
        while (!c->closed && c->woff < c->wlen) {
                ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                if (!c->want_out) {
                                        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };

                                        if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                                                die("epoll_ctl(): %m");
                                        c->want_out = true;
                                }
                                return;
                        }
                        conn_close(c);
                        return;
                }
                c->woff += (size_t) n;
        }
        c->woff = c->wlen = 0;
        if (c->want_out && !c->closed) {
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

                if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                        die("epoll_ctl(): %m");
                c->want_out = false;
        }
}

/* Reserve n bytes at the end of the write buffer; the caller fills them and adds to wlen. */
static char *conn_reserve(Conn *c, size_t n) {
        if (c->wcap - c->wlen < n) {
                if (c->woff > 0) {
                        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
                        c->wlen -= c->woff;
                        c->woff = 0;
                }
                if (c->wcap - c->wlen < n) {
                        c->wcap = (c->wlen + n) * 2;
                        c->wbuf = xrealloc(c->wbuf, c->wcap);
                }
        }
        return c->wbuf + c->wlen;
}

static void conn_printf(Conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_printf(Conn *c, const char *fmt, ...) {
        va_list ap;
        int n;

        for (size_t want = 256;;) {
                char *p = conn_reserve(c, want);

                va_start(ap, fmt);
                n = vsnprintf(p, want, fmt, ap);
                va_end(ap);
                if (n < 0)
                        die("vsnprintf failed");
                if ((size_t) n < want)
                        break;
                want = (size_t) n + 1;
        }
        c->wlen += (size_t) n;
}

static void conn_append(Conn *c, const void *p, size_t n) {
        memcpy(conn_reserve(c, n), p, n);
        c->wlen += n;
}

/* Append a RESP command: an array of bulk strings. */
static void resp_command(Conn *c, unsigned argc, const char *const *argv, const size_t *lens) {
        conn_printf(c, "*%u\r\n", argc);
        for (unsigned i = 0; i < argc; i++) {
                size_t n = lens ? lens[i] : strlen(argv[i]);

                conn_printf(c, "$%zu\r\n", n);
                conn_append(c, argv[i], n);
                conn_append(c, "\r\n", 2);
        }
}

/* ---- parsing the few fields we need ---- */

/* The value after "key": (spaces allowed), or NULL. A plain byte loop: memmem() and memchr() cost more to set up
 * than these short scans take, and were the client's top cost in the fanout scenario. */
static const char *json_find(const char *p, const char *end, const char *key) {
        size_t k = strlen(key);
        const char *q;

        for (q = p;; q++) {
                if (end - q < (ptrdiff_t) k)
                        return NULL;
                if (q[0] == key[0] && q[1] == key[1] && memcmp(q, key, k) == 0)
                        break;
        }
        q += k;
        while (q < end && *q == ' ')
                q++;
        if (q >= end || *q != ':')
                return NULL;
        q++;
        while (q < end && *q == ' ')
                q++;
        return q;
}

static bool parse_i64(const char *p, const char *end, int64_t *ret) {
        bool neg = false;
        int64_t v = 0;

        if (!p || p >= end)
                return false;
        if (*p == '-') {
                neg = true;
                p++;
        }
        if (p >= end || *p < '0' || *p > '9')
                return false;
        while (p < end && *p >= '0' && *p <= '9')
                v = v * 10 + (*p++ - '0');
        *ret = neg ? -v : v;
        return true;
}

static bool json_int(const char *p, const char *end, const char *key, int64_t *ret) {
        return parse_i64(json_find(p, end, key), end, ret);
}

static bool has_prefix(const char *p, const char *end, const char *s) {
        size_t n = strlen(s);

        return p && (size_t) (end - p) >= n && memcmp(p, s, n) == 0;
}

/* p advanced past s if it starts there, else NULL. */
static const char *skip_prefix(const char *p, const char *end, const char *s, size_t n) {
        return p && (size_t) (end - p) >= n && memcmp(p, s, n) == 0 ? p + n : NULL;
}

#define SKIP(p, end, s) skip_prefix(p, end, s, sizeof(s) - 1)

/* The digits at p: their value in *ret and the end of them, or NULL. */
static const char *digits(const char *p, const char *end, int64_t *ret) {
        int64_t v = 0;
        const char *start = p;

        if (!p)
                return NULL;
        while (p < end && *p >= '0' && *p <= '9')
                v = v * 10 + (*p++ - '0');
        if (p == start)
                return NULL;
        *ret = v;
        return p;
}

/* A push in the layout photond writes it: {"type":"channel_message","id":"ch_N","eventId":N,"channel":"…",
 * "message":…}. Read in place, as a RESP reply is by its lengths; anything else takes the key search below. */
static bool photon_message_canonical(const char *line, const char *end, Frame *f) {
        const char *id = SKIP(line, end, "{\"type\":\"channel_message\",\"id\":\"ch_"), *p;
        int64_t event_id;
        size_t n;

        /* The id repeats the eventId's digits: compared, not parsed twice. */
        p = digits(id, end, &event_id);
        if (!p)
                return false;
        n = (size_t) (p - id);
        p = SKIP(p, end, "\",\"eventId\":");
        if (!p || (size_t) (end - p) < n || memcmp(p, id, n) != 0)
                return false;
        p = SKIP(p + n, end, ",\"channel\":\"");
        if (!p || !(p = memchr(p, '"', (size_t) (end - p))))
                return false;
        p = SKIP(p, end, "\",\"message\":");
        if (!p)
                return false;
        f->kind = FRAME_MESSAGE;
        f->event_id = event_id;
        f->payload = p;
        f->payload_len = (size_t) (end - p);
        return true;
}

static void photon_frame(const char *line, size_t len, Frame *f) {
        const char *end = line + len, *type;

        *f = (Frame) { .kind = FRAME_OTHER, .raw = line, .raw_len = len, .event_id = -1, .integer = -1 };
        if (photon_message_canonical(line, end, f))
                return;
        type = json_find(line, end, "\"type\"");
        if (has_prefix(type, end, "\"channel_message\"")) {
                const char *e = json_find(type, end, "\"eventId\"");

                f->kind = FRAME_MESSAGE;
                (void) parse_i64(e, end, &f->event_id);
                /* photond sends "message" after "eventId", as the reference does; look from there first */
                f->payload = e ? json_find(e, end, "\"message\"") : NULL;
                if (!f->payload)
                        f->payload = json_find(type, end, "\"message\"");
                if (f->payload)
                        f->payload_len = (size_t) (end - f->payload);
        } else if (has_prefix(type, end, "\"result\"")) {
                f->kind = has_prefix(json_find(line, end, "\"success\""), end, "true") ? FRAME_OK : FRAME_REFUSED;
                (void) json_int(line, end, "\"fencingToken\"", &f->integer);
        } else if (has_prefix(type, end, "\"pong\""))
                f->kind = FRAME_OK;
        else if (has_prefix(type, end, "\"error\""))
                f->kind = FRAME_ERROR;
        else if (has_prefix(type, end, "\"refresh_needed\""))
                f->kind = FRAME_REFRESH;
        else if (has_prefix(type, end, "\"invoke\"")) {
                const char *id = json_find(line, end, "\"id\""), *q;

                if (id && id < end && *id == '"' && (q = memchr(id + 1, '"', (size_t) (end - id - 1)))) {
                        f->kind = FRAME_INVOKE;
                        f->payload = id + 1;
                        f->payload_len = (size_t) (q - id - 1);
                }
        }
}

/* Length of the CRLF-terminated line at p (including CRLF), or 0 if incomplete. */
static size_t resp_line(const char *p, const char *end) {
        const char *nl = memchr(p, '\n', (size_t) (end - p));

        return nl ? (size_t) (nl - p) + 1 : 0;
}

/* One element: a simple string, error, integer or bulk string (type 'n' for a nil one).
 * Returns bytes used, 0 if incomplete, -1 if malformed. */
static ssize_t resp_element(const char *p, const char *end, char *ret_type, const char **ret_s, size_t *ret_n,
                            int64_t *ret_i) {
        size_t l = resp_line(p, end);
        int64_t v;

        if (l == 0)
                return 0;
        if (l < 3)
                return -1;
        *ret_type = p[0];
        *ret_s = p + 1;
        *ret_n = l - 3;
        *ret_i = -1;
        switch (p[0]) {
        case '+':
        case '-':
                return (ssize_t) l;
        case ':':
                if (!parse_i64(p + 1, p + l, ret_i))
                        return -1;
                return (ssize_t) l;
        case '$':
                if (!parse_i64(p + 1, p + l, &v))
                        return -1;
                if (v < 0) {
                        *ret_type = 'n';        /* nil */
                        *ret_n = 0;
                        return (ssize_t) l;
                }
                if ((size_t) (end - p) < l + (size_t) v + 2)
                        return 0;
                *ret_s = p + l;
                *ret_n = (size_t) v;
                return (ssize_t) (l + (size_t) v + 2);
        default:
                return -1;
        }
}

/* One reply at p. Returns bytes used, 0 if incomplete, -1 on a protocol error. */
static ssize_t redis_frame(const char *p, const char *end, Frame *f) {
        const char *s[4];
        size_t n[4], used;
        int64_t count, iv[4];
        char t[4];
        ssize_t k;

        *f = (Frame) { .kind = FRAME_OTHER, .raw = p, .event_id = -1, .integer = -1 };
        if (p >= end)
                return 0;
        if (*p != '*') {
                k = resp_element(p, end, &t[0], &s[0], &n[0], &iv[0]);
                if (k <= 0)
                        return k;
                f->raw_len = (size_t) k;
                f->kind = t[0] == '-' ? FRAME_ERROR : t[0] == 'n' ? FRAME_REFUSED : FRAME_OK;
                f->payload = s[0];
                f->payload_len = n[0];
                f->integer = iv[0];
                return k;
        }

        used = resp_line(p, end);
        if (used == 0)
                return 0;
        if (!parse_i64(p + 1, p + used, &count))
                return -1;
        if (count < 0) {
                f->kind = FRAME_REFUSED;
                f->raw_len = used;
                return (ssize_t) used;
        }
        if (count > 4)
                return -1;      /* no reply we provoke is longer */
        for (int64_t i = 0; i < count; i++) {
                k = resp_element(p + used, end, &t[i], &s[i], &n[i], &iv[i]);
                if (k <= 0)
                        return k;
                used += (size_t) k;
        }
        f->raw_len = used;
        f->kind = FRAME_OK;
        if (count == 3 && t[0] == '$' && n[0] == 7 && memcmp(s[0], "message", 7) == 0) {
                f->kind = FRAME_MESSAGE;
                f->payload = s[2];
                f->payload_len = n[2];
        } else if (count == 3 && t[2] == ':')
                f->integer = iv[2];     /* subscribe confirmation: the subscription count */
        return (ssize_t) used;
}

/* Reads that find nothing left over from the last one go here, whatever the connection: one buffer stays in the
 * cache where 10,000 connections' own buffers would each be a miss (the conns scenario). Only a frame cut by the
 * end of a read moves to the connection's buffer. */
static char shared_rbuf[256 * 1024];

static void conn_read(Conn *c) {
        size_t off = 0, len, cap;
        uint64_t now;
        char *buf;
        ssize_t n;

        if (c->rlen == 0) {
                buf = shared_rbuf;
                len = 0;
                cap = c->rcap < sizeof shared_rbuf ? c->rcap : sizeof shared_rbuf;
        } else {
                if (c->rcap - c->rlen < 1024) {
                        c->rcap *= 2;
                        c->rbuf = xrealloc(c->rbuf, c->rcap);
                }
                buf = c->rbuf;
                len = c->rlen;
                cap = c->rcap;
        }
        n = read(c->fd, buf + len, cap - len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return;
                conn_close(c);
                return;
        }
        if (n == 0) {
                conn_close(c);
                return;
        }
        len += (size_t) n;
        /* One timestamp per read: every message in it arrived by then. */
        now = now_ns();

        while (off < len && !c->closed) {
                const char *p = buf + off, *end = buf + len;
                Frame f;

                if (arg_target == TARGET_PHOTON) {
                        const char *nl = memchr(p, '\n', (size_t) (end - p));

                        if (!nl)
                                break;
                        photon_frame(p, (size_t) (nl - p), &f);
                        off += (size_t) (nl - p) + 1;
                } else {
                        ssize_t k = redis_frame(p, end, &f);

                        if (k < 0)
                                die("Redis protocol error on connection %u: %.40s", c->idx, p);
                        if (k == 0)
                                break;
                        off += (size_t) k;
                }
                on_frame(c, &f, now);
        }
        if (c->closed)
                return;
        if (buf == shared_rbuf && len > off) {
                while (c->rcap - (len - off) < 1024)
                        c->rcap *= 2;
                c->rbuf = xrealloc(c->rbuf, c->rcap);
        }
        if (len > off)
                memmove(c->rbuf, buf + off, len - off);
        c->rlen = len - off;
}

/* Run the loop until done() says so; false if the deadline passed first. */
static bool loop_run(bool (*done)(uint64_t now), uint64_t deadline) {
        struct epoll_event ev[256];

        for (;;) {
                uint64_t now = now_ns();
                int n, timeout;

                if (done(now))
                        return true;
                if (now >= deadline)
                        return false;
                timeout = (int) ((deadline - now) / NSEC_PER_MSEC) + 1;
                n = epoll_wait(epoll_fd, ev, (int) (sizeof ev / sizeof ev[0]), timeout < 100 ? timeout : 100);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die("epoll_wait(): %m");
                }
                for (int i = 0; i < n; i++) {
                        Conn *c = ev[i].data.ptr;
                        uint64_t expirations;

                        if (c->role == ROLE_TIMER) {
                                if (read(c->fd, &expirations, sizeof expirations) == sizeof expirations)
                                        on_tick(expirations, now_ns());
                                continue;
                        }
                        if (!c->closed && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                                conn_read(c);
                        if (!c->closed && (ev[i].events & EPOLLOUT))
                                conn_flush(c);
                }
                if (after_batch)
                        after_batch(now_ns());
        }
}

static uint64_t deadline_from_now(void) {
        return now_ns() + (uint64_t) arg_timeout * NSEC_PER_SEC;
}

static void print_error_once(const Frame *f) {
        static unsigned printed = 0;

        if (printed++ < 3)
                fprintf(stderr, "photon-bench: %s answered: %.*s\n", target_name(),
                        (int) (f->raw_len < 300 ? f->raw_len : 300), f->raw);
}

/* ---- the message payload shared by fanout and conns ---- */

/* {"w":"<publisher>","s":"<seq>","t":"<CLOCK_MONOTONIC ns>","p":"xxx…"}, the numbers as fixed-width hex strings
 * and padded to exactly arg_bytes when possible. Fixed widths let payload_parse() read them at known offsets: with
 * decimal numbers found by key, parsing the payload was the largest cost of the reading client after the copy
 * out of the kernel, and the bench, not the server, set the pace at 100 subscribers. */
#define PAYLOAD_HEAD_FMT "{\"w\":\"%08x\",\"s\":\"%08x\",\"t\":\"%016" PRIx64 "\",\"p\":\""
#define PAYLOAD_W_AT 6
#define PAYLOAD_S_AT 21
#define PAYLOAD_T_AT 36
#define PAYLOAD_HEAD_LEN 59

static size_t payload_build(char *buf, size_t size, unsigned w, unsigned seq, uint64_t t) {
        int n = snprintf(buf, size, PAYLOAD_HEAD_FMT, w, seq, t);
        size_t pad = 0;

        if (n != PAYLOAD_HEAD_LEN || (size_t) n + 3 > size)
                die("payload buffer too small");
        if (arg_bytes > (size_t) n + 2)
                pad = arg_bytes - (size_t) n - 2;
        if ((size_t) n + pad + 3 > size)
                die("payload buffer too small");
        memset(buf + n, 'x', pad);
        memcpy(buf + n + pad, "\"}", 3);
        return (size_t) n + pad + 2;
}

/* The 8 lowercase hex digits at p, eight bytes at a time; -1 if any is not one. */
static inline int64_t hex8(const char *p) {
        const uint64_t ones = UINT64_C(0x0101010101010101), high = ones * 0x80;
        uint64_t x, digit, alpha, v;

        memcpy(&x, p, 8);
        x = le64toh(x);                 /* the first character in the lowest byte */
        /* Bytes below 0x80 can take these additions without a carry into the next byte: each sets a byte's top
         * bit when it is at least 0x80 minus the addend. */
        digit = (x + ones * (0x80 - '0')) & ~(x + ones * (0x80 - '9' - 1));
        alpha = (x + ones * (0x80 - 'a')) & ~(x + ones * (0x80 - 'f' - 1));
        if ((x & high) || ((digit | alpha) & high) != high)
                return -1;
        v = (x & ones * 0x0f) + ((x >> 6) & ones) * 9;          /* each byte its digit's value */
        v = ((v << 4) | (v >> 8)) & UINT64_C(0x00ff00ff00ff00ff);  /* first byte (in memory) is most significant */
        v = ((v << 8) | (v >> 16)) & UINT64_C(0x0000ffff0000ffff);
        v = ((v << 16) | (v >> 32)) & UINT64_C(0xffffffff);
        return (int64_t) v;
}

static bool payload_parse(const char *p, size_t n, int64_t *w, int64_t *seq, int64_t *t) {
        int64_t t_hi, t_lo;

        if (n < PAYLOAD_HEAD_LEN + 2 || memcmp(p, "{\"w\":\"", 6) != 0 || memcmp(p + 14, "\",\"s\":\"", 7) != 0 ||
            memcmp(p + 29, "\",\"t\":\"", 7) != 0 || memcmp(p + 52, "\",\"p\":\"", 7) != 0)
                return false;
        *w = hex8(p + PAYLOAD_W_AT);
        *seq = hex8(p + PAYLOAD_S_AT);
        t_hi = hex8(p + PAYLOAD_T_AT);
        t_lo = hex8(p + PAYLOAD_T_AT + 8);
        if (*w < 0 || *seq < 0 || t_hi < 0 || t_lo < 0 || t_hi > INT32_MAX)
                return false;
        *t = t_hi << 32 | t_lo;
        return true;
}

static void send_subscribe(Conn *c) {
        if (arg_target == TARGET_PHOTON)
                conn_printf(c, "{\"type\":\"subscribe\",\"id\":\"s%u\",\"channel\":\"" CHANNEL "\"}\n", c->idx);
        else
                resp_command(c, 2, (const char *[]) { "SUBSCRIBE", CHANNEL }, NULL);
        conn_flush(c);
}

static void send_publish(Conn *c, unsigned seq, uint64_t t) {
        char payload[arg_bytes + 128];
        size_t n = payload_build(payload, sizeof payload, c->idx, seq, t);

        if (arg_target == TARGET_PHOTON) {
                conn_printf(c, "{\"type\":\"publish\",\"id\":\"p%u-%u\",\"channel\":\"" CHANNEL "\",\"message\":",
                            c->idx, seq);
                conn_append(c, payload, n);
                conn_append(c, "}\n", 2);
        } else
                resp_command(c, 3, (const char *[]) { "PUBLISH", CHANNEL, payload },
                             (const size_t[]) { 7, strlen(CHANNEL), n });
}

/* ---- fanout: S subscribers, P publishers pipelining M messages each with a window W ---- */

static struct {
        Conn **subs, **pubs;
        unsigned subscribed;
        uint8_t **seen;                 /* per subscriber: a bit per (publisher, seq) */
        int64_t **max_seq;              /* per subscriber and publisher: the highest seq seen */
        uint64_t *received;             /* per subscriber: distinct messages */
        int64_t *last_event;            /* per subscriber: the last eventId (photond) */
        unsigned *next_seq, *outstanding, *acked;
        uint64_t delivered, dup, ooo, event_order, refresh, errors, garbled;
        uint64_t first_send, last_recv, last_progress;
        bool publishing;
        Histogram lat;
        /* With several --socket: deliveries to subscribers on the publisher's server and on another one (in
         * cluster mode, those crossed Redis to another node). */
        Histogram lat_local, lat_remote;
} fo;

static void fanout_frame(Conn *c, const Frame *f, uint64_t now) {
        unsigned i = c->idx;
        int64_t w, seq, t;
        uint64_t bit;

        if (c->role == ROLE_PUBLISHER) {
                if (f->kind == FRAME_OK || f->kind == FRAME_REFUSED || f->kind == FRAME_ERROR) {
                        if (f->kind != FRAME_OK) {
                                fo.errors++;
                                print_error_once(f);
                        }
                        if (fo.outstanding[i] > 0)
                                fo.outstanding[i]--;
                        fo.acked[i]++;
                }
                return;
        }

        switch (f->kind) {
        case FRAME_OK:
                if (!fo.publishing)
                        fo.subscribed++;
                return;
        case FRAME_REFRESH:
                fo.refresh++;
                return;
        case FRAME_ERROR:
        case FRAME_REFUSED:
                fo.errors++;
                print_error_once(f);
                return;
        case FRAME_MESSAGE:
                break;
        default:
                return;
        }

        if (!f->payload || !payload_parse(f->payload, f->payload_len, &w, &seq, &t) ||
            w < 0 || w >= arg_publishers || seq < 0 || seq >= arg_messages || (uint64_t) t > now) {
                fo.garbled++;
                return;
        }
        if (arg_target == TARGET_PHOTON) {
                if (f->event_id <= fo.last_event[i])
                        fo.event_order++;
                fo.last_event[i] = f->event_id;
        }
        fo.delivered++;
        fo.last_recv = fo.last_progress = now;
        hist_add(&fo.lat, now - (uint64_t) t);
        /* subscriber i is on socket i % n, publisher w on socket w % n */
        hist_add(i % n_sockets == (unsigned) w % n_sockets ? &fo.lat_local : &fo.lat_remote, now - (uint64_t) t);

        bit = (uint64_t) w * arg_messages + (uint64_t) seq;
        if (fo.seen[i][bit / 8] & (1u << (bit % 8))) {
                fo.dup++;
                return;
        }
        fo.seen[i][bit / 8] |= (uint8_t) (1u << (bit % 8));
        fo.received[i]++;
        if (seq < fo.max_seq[i][w])
                fo.ooo++;
        else
                fo.max_seq[i][w] = seq;
}

static void fanout_fill(uint64_t now) {
        for (unsigned p = 0; p < arg_publishers; p++) {
                Conn *c = fo.pubs[p];
                bool sent = false;

                if (c->closed)
                        continue;
                while (fo.outstanding[p] < arg_window && fo.next_seq[p] < arg_messages) {
                        send_publish(c, fo.next_seq[p]++, now);
                        fo.outstanding[p]++;
                        sent = true;
                }
                if (sent) {
                        if (fo.first_send == 0)
                                fo.first_send = now;
                        conn_flush(c);
                }
        }
}

static void fanout_after_batch(uint64_t now) {
        if (fo.publishing)
                fanout_fill(now);
}

static bool fanout_subscribed(uint64_t now) {
        return fo.subscribed >= arg_subscribers || conns_closed > 0;
}

static bool fanout_done(uint64_t now) {
        bool all = true;

        for (unsigned p = 0; p < arg_publishers; p++)
                if (fo.acked[p] < arg_messages && !fo.pubs[p]->closed)
                        return false;
        for (unsigned s = 0; s < arg_subscribers; s++)
                if (fo.received[s] < (uint64_t) arg_publishers * arg_messages && !fo.subs[s]->closed)
                        all = false;
        /* Every publish is answered: whatever has not arrived two seconds later is lost. */
        return all || now - fo.last_progress > 2 * NSEC_PER_SEC;
}

static int scenario_fanout(void) {
        uint64_t expected = (uint64_t) arg_subscribers * arg_publishers * arg_messages, lost = 0, cpu0, cpu1;
        size_t bitmap = ((size_t) arg_publishers * arg_messages + 7) / 8;
        ServerSample s0, s1;
        uint64_t part0[MAX_SERVERS], part1[MAX_SERVERS], writes0[MAX_SERVERS], writes1[MAX_SERVERS];
        char parts[MAX_SERVERS * 24] = "", writes[MAX_SERVERS * 24] = "";
        double secs, rate;
        bool ok;

        fo.subs = xcalloc(arg_subscribers, sizeof(Conn *));
        fo.pubs = xcalloc(arg_publishers, sizeof(Conn *));
        fo.seen = xcalloc(arg_subscribers, sizeof(uint8_t *));
        fo.max_seq = xcalloc(arg_subscribers, sizeof(int64_t *));
        fo.received = xcalloc(arg_subscribers, sizeof(uint64_t));
        fo.last_event = xcalloc(arg_subscribers, sizeof(int64_t));
        fo.next_seq = xcalloc(arg_publishers, sizeof(unsigned));
        fo.outstanding = xcalloc(arg_publishers, sizeof(unsigned));
        fo.acked = xcalloc(arg_publishers, sizeof(unsigned));
        on_frame = fanout_frame;
        after_batch = fanout_after_batch;

        for (unsigned s = 0; s < arg_subscribers; s++) {
                fo.subs[s] = conn_new(ROLE_SUBSCRIBER, s, 256 * 1024);
                fo.seen[s] = xcalloc(bitmap, 1);
                fo.max_seq[s] = xcalloc(arg_publishers, sizeof(int64_t));
                fo.last_event[s] = -1;
                send_subscribe(fo.subs[s]);
        }
        if (!loop_run(fanout_subscribed, deadline_from_now()) || conns_closed > 0)
                die("%s: subscribing %u connections failed", target_name(), arg_subscribers);
        for (unsigned p = 0; p < arg_publishers; p++)
                fo.pubs[p] = conn_new(ROLE_PUBLISHER, p, 64 * 1024);

        for (unsigned i = 0; i < n_pids; i++) {
                part0[i] = server_cpu_ns_of(arg_pids[i]);
                writes0[i] = server_write_calls_of(arg_pids[i]);
        }
        server_sample(&s0);
        cpu0 = self_cpu_ns();
        fo.publishing = true;
        fo.last_progress = now_ns();
        fanout_fill(now_ns());
        ok = loop_run(fanout_done, deadline_from_now());
        cpu1 = self_cpu_ns();
        server_sample(&s1);
        for (unsigned i = 0; i < n_pids; i++) {
                part1[i] = server_cpu_ns_of(arg_pids[i]);
                writes1[i] = server_write_calls_of(arg_pids[i]);
                snprintf(writes + strlen(writes), sizeof writes - strlen(writes), "%s%.3f", i > 0 ? " " : "",
                         fo.delivered > 0 ? (double) (writes1[i] - writes0[i]) / (double) fo.delivered : 0.0);
                snprintf(parts + strlen(parts), sizeof parts - strlen(parts), "%s%.3f", i > 0 ? " " : "",
                         fo.delivered > 0 ? us(part1[i] - part0[i]) / (double) fo.delivered : 0.0);
        }

        for (unsigned s = 0; s < arg_subscribers; s++)
                lost += (uint64_t) arg_publishers * arg_messages - fo.received[s];
        secs = fo.last_recv > fo.first_send ? (double) (fo.last_recv - fo.first_send) / (double) NSEC_PER_SEC : 0;
        rate = secs > 0 ? (double) fo.delivered / secs : 0;

        fprintf(stderr,
                "%s fanout S=%u P=%u M=%u B=%u W=%u: %" PRIu64 "/%" PRIu64 " delivered in %.3f s = %.0f msg/s; "
                "latency p50 %.1f us p99 %.1f us max %.1f us; lost %" PRIu64 " dup %" PRIu64 " ooo %" PRIu64
                " eventId-order %" PRIu64 " refresh_needed %" PRIu64 " errors %" PRIu64 " garbled %" PRIu64
                " closed %u; server RSS %" PRIu64 " KiB CPU %.0f%%; bench CPU %.0f%%%s\n",
                target_name(), arg_subscribers, arg_publishers, arg_messages, arg_bytes, arg_window,
                fo.delivered, expected, secs, rate,
                us(hist_percentile(&fo.lat, 50)), us(hist_percentile(&fo.lat, 99)), us(fo.lat.max),
                lost, fo.dup, fo.ooo, fo.event_order, fo.refresh, fo.errors, fo.garbled, conns_closed,
                s1.rss_kib, server_cpu_percent(&s0, &s1),
                100.0 * (double) (cpu1 - cpu0) / (double) (s1.at - s0.at), ok ? "" : " (TIMED OUT)");
        /* The servers' CPU (every --pid summed) per delivered message, and the latency by where the subscriber
         * is: tests/bench/cluster-fanout.sh reads this line. */
        fprintf(stderr,
                "%s fanout servers %u: server CPU %.3f us per delivered message (by --pid: %s); "
                "write syscalls per delivered message (by --pid: %s); "
                "same-server latency p50 %.1f us p99 %.1f us (%" PRIu64 "); "
                "other-server latency p50 %.1f us p99 %.1f us (%" PRIu64 ")\n",
                target_name(), n_sockets, server_cpu_us_per(&s0, &s1, fo.delivered), parts, writes,
                us(hist_percentile(&fo.lat_local, 50)), us(hist_percentile(&fo.lat_local, 99)), fo.lat_local.count,
                us(hist_percentile(&fo.lat_remote, 50)), us(hist_percentile(&fo.lat_remote, 99)),
                fo.lat_remote.count);
        /* | target | S | B | M | msg/s | p50 | p99 | max | lost/dup/ooo | server RSS | server CPU | bench CPU | */
        printf("| %s | %u | %u | %u | %.0f | %.0f | %.0f | %.0f | %" PRIu64 "/%" PRIu64 "/%" PRIu64
               " | %.1f | %.0f%% | %.0f%% |\n",
               target_name(), arg_subscribers, arg_bytes, arg_messages, rate,
               us(hist_percentile(&fo.lat, 50)), us(hist_percentile(&fo.lat, 99)), us(fo.lat.max),
               lost, fo.dup, fo.ooo, (double) s1.rss_kib / 1024.0, server_cpu_percent(&s0, &s1),
               100.0 * (double) (cpu1 - cpu0) / (double) (s1.at - s0.at));

        return ok && lost == 0 && fo.dup == 0 && fo.ooo == 0 && fo.event_order == 0 && fo.errors == 0 &&
                fo.garbled == 0 && conns_closed == 0 ? 0 : 1;
}

/* ---- conns: N idle subscribers, one publish, time until every one has it ---- */

static struct {
        Conn **subs;
        Conn *pub;
        unsigned subscribed, have, errors;
        bool published;
        uint64_t sent, last;
        Histogram lat;
} cn;

static void conns_frame(Conn *c, const Frame *f, uint64_t now) {
        int64_t w, seq, t;

        if (f->kind == FRAME_ERROR || f->kind == FRAME_REFUSED || f->kind == FRAME_REFRESH) {
                cn.errors++;
                print_error_once(f);
                return;
        }
        if (c->role == ROLE_PUBLISHER)
                return;
        if (f->kind == FRAME_OK && !cn.published)
                cn.subscribed++;
        else if (f->kind == FRAME_MESSAGE && f->payload &&
                 payload_parse(f->payload, f->payload_len, &w, &seq, &t) && (uint64_t) t == cn.sent) {
                cn.have++;
                cn.last = now;
                hist_add(&cn.lat, now - cn.sent);
        }
}

static unsigned conns_target;

static bool conns_subscribed(uint64_t now) {
        return cn.subscribed >= conns_target || conns_closed > 0;
}

static bool conns_delivered(uint64_t now) {
        return cn.have >= arg_conns || conns_closed > 0;
}

static int scenario_conns(void) {
        const unsigned batch = 500;
        ServerSample before, subscribed, after;
        uint64_t t0, t1;
        double per, per_after;
        bool ok;

        cn.subs = xcalloc(arg_conns, sizeof(Conn *));
        on_frame = conns_frame;

        cn.pub = conn_new(ROLE_PUBLISHER, 0, 4096);
        server_sample(&before);
        t0 = now_ns();
        /* In batches, so the server's accept backlog and our socket buffers stay small. */
        for (unsigned i = 0; i < arg_conns; i += batch) {
                conns_target = i + batch < arg_conns ? i + batch : arg_conns;
                for (unsigned j = i; j < conns_target; j++) {
                        cn.subs[j] = conn_new(ROLE_SUBSCRIBER, j, 2048);
                        send_subscribe(cn.subs[j]);
                }
                if (!loop_run(conns_subscribed, deadline_from_now()) || conns_closed > 0)
                        die("%s: subscribing connection %u failed (%u closed)", target_name(), i, conns_closed);
        }
        t1 = now_ns();
        server_sample(&subscribed);

        cn.published = true;
        cn.sent = now_ns();
        send_publish(cn.pub, 0, cn.sent);
        conn_flush(cn.pub);
        ok = loop_run(conns_delivered, deadline_from_now());
        server_sample(&after);

        per = ((double) subscribed.rss_kib - (double) before.rss_kib) / arg_conns;
        per_after = ((double) after.rss_kib - (double) before.rss_kib) / arg_conns;
        fprintf(stderr,
                "%s conns N=%u: subscribed in %.2f s; all %u/%u had the publish after %.2f ms (p50 %.2f ms); "
                "server RSS %" PRIu64 " KiB before, %" PRIu64 " KiB subscribed (%.2f KiB/conn), %" PRIu64
                " KiB after the publish (%.2f KiB/conn); errors %u closed %u%s\n",
                target_name(), arg_conns, (double) (t1 - t0) / (double) NSEC_PER_SEC, cn.have, arg_conns,
                (double) (cn.last - cn.sent) / (double) NSEC_PER_MSEC,
                (double) hist_percentile(&cn.lat, 50) / (double) NSEC_PER_MSEC,
                before.rss_kib, subscribed.rss_kib, per, after.rss_kib, per_after, cn.errors, conns_closed,
                ok ? "" : " (TIMED OUT)");
        /* | target | N | all have it (ms) | p50 (ms) | RSS before | RSS idle | KiB/conn idle | KiB/conn after | */
        printf("| %s | %u | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f |\n",
               target_name(), arg_conns, (double) (cn.last - cn.sent) / (double) NSEC_PER_MSEC,
               (double) hist_percentile(&cn.lat, 50) / (double) NSEC_PER_MSEC,
               (double) before.rss_kib / 1024.0, (double) subscribed.rss_kib / 1024.0, per, per_after,
               (double) (t1 - t0) / (double) NSEC_PER_SEC);

        return ok && cn.have == arg_conns && cn.errors == 0 && conns_closed == 0 ? 0 : 1;
}

/* ---- locks: C clients, N acquire+release pairs each on K names ---- */

typedef enum LockState {
        LOCK_ACQUIRING,
        LOCK_HOLDING,           /* granted; the release goes out after this loop iteration */
        LOCK_RELEASING,
        LOCK_DONE,
} LockState;

static struct {
        Conn **cl;
        LockState *state;
        unsigned *name, *pairs;
        uint64_t *sent, *acq_start, *rng, *reqno;
        int *holder;                    /* per name: the client we saw granted it and not yet releasing, or -1 */
        int64_t *last_token;            /* per name: the last fencingToken (photond) */
        unsigned *pending;              /* clients holding a lock, to release after the iteration */
        unsigned npending, done;
        uint64_t stop_at;
        uint64_t pairs_total, refused, violations, token_violations, release_failures, errors;
        char sha[41];
        Histogram req, acq;
} lk;

static uint64_t xorshift(uint64_t *s) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static void lock_send_acquire(unsigned i, uint64_t now) {
        Conn *c = lk.cl[i];
        char key[32], token[48];

        snprintf(key, sizeof key, "bench:%u", lk.name[i]);
        lk.reqno[i]++;
        if (arg_target == TARGET_PHOTON) {
                conn_printf(c, "{\"type\":\"lock\",\"id\":\"l%u-%" PRIu64 "\",\"lockName\":\"%s\","
                            "\"sessionId\":\"client-%u\",\"lockTimeout\":30000", i, lk.reqno[i], key, i);
                if (arg_lock_wait > 0)
                        conn_printf(c, ",\"lockWait\":%u", arg_lock_wait);
                conn_append(c, "}\n", 2);
        } else {
                snprintf(token, sizeof token, "client-%u-%" PRIu64, i, lk.reqno[i]);
                resp_command(c, 6, (const char *[]) { "SET", key, token, "NX", "PX", "30000" }, NULL);
        }
        lk.sent[i] = now;
        conn_flush(c);
}

static void lock_send_release(unsigned i, uint64_t now) {
        Conn *c = lk.cl[i];
        char key[32], token[48];

        snprintf(key, sizeof key, "bench:%u", lk.name[i]);
        if (arg_target == TARGET_PHOTON)
                conn_printf(c, "{\"type\":\"unlock\",\"id\":\"u%u-%" PRIu64 "\",\"lockName\":\"%s\","
                            "\"sessionId\":\"client-%u\"}\n", i, lk.reqno[i], key, i);
        else {
                /* compare-and-delete: only the token that acquired may release */
                snprintf(token, sizeof token, "client-%u-%" PRIu64, i, lk.reqno[i]);
                resp_command(c, 5, (const char *[]) { "EVALSHA", lk.sha, "1", key, token }, NULL);
        }
        lk.sent[i] = now;
        conn_flush(c);
}

static void lock_start_pair(unsigned i, uint64_t now) {
        if (lk.pairs[i] >= arg_pairs || (lk.stop_at > 0 && now >= lk.stop_at)) {
                lk.state[i] = LOCK_DONE;
                lk.done++;
                return;
        }
        lk.name[i] = (unsigned) (xorshift(&lk.rng[i]) % arg_names);
        lk.state[i] = LOCK_ACQUIRING;
        lk.acq_start[i] = now;
        lock_send_acquire(i, now);
}

static void locks_frame(Conn *c, const Frame *f, uint64_t now) {
        unsigned i = c->idx, k = lk.name[i];

        hist_add(&lk.req, now - lk.sent[i]);
        if (!IN_SET(f->kind, FRAME_OK, FRAME_REFUSED)) {
                /* Nothing sensible to retry: stop this client rather than spin on an error. */
                lk.errors++;
                print_error_once(f);
                lk.state[i] = LOCK_DONE;
                lk.done++;
                return;
        }

        switch (lk.state[i]) {
        case LOCK_ACQUIRING:
                if (f->kind == FRAME_REFUSED) {
                        /* held by someone else (or, with lockWait, the wait ran out): ask again at once */
                        lk.refused++;
                        lock_send_acquire(i, now);
                        return;
                }
                /* The server must not grant a name while another client has not yet sent its release. */
                if (lk.holder[k] >= 0 && lk.holder[k] != (int) i)
                        lk.violations++;
                lk.holder[k] = (int) i;
                if (f->integer >= 0) {
                        if (f->integer <= lk.last_token[k])
                                lk.token_violations++;
                        lk.last_token[k] = f->integer;
                }
                hist_add(&lk.acq, now - lk.acq_start[i]);
                lk.state[i] = LOCK_HOLDING;
                lk.pending[lk.npending++] = i;
                return;
        case LOCK_RELEASING:
                /* Redis' compare-and-delete answers :0 when the key was not ours any more */
                if (f->kind != FRAME_OK || (arg_target == TARGET_REDIS && f->integer != 1))
                        lk.release_failures++;
                lk.pairs[i]++;
                lk.pairs_total++;
                lock_start_pair(i, now);
                return;
        default:
                lk.errors++;
                print_error_once(f);
                return;
        }
}

/* Holding a lock across a loop iteration gives the exclusion check a window to catch a double grant in. */
static void locks_after_batch(uint64_t now) {
        for (unsigned j = 0; j < lk.npending; j++) {
                unsigned i = lk.pending[j];

                lk.holder[lk.name[i]] = -1;
                lk.state[i] = LOCK_RELEASING;
                lock_send_release(i, now);
        }
        lk.npending = 0;
}

static bool locks_done(uint64_t now) {
        return lk.done >= arg_clients || conns_closed > 0;
}

static void script_frame(Conn *c, const Frame *f, uint64_t now) {
        if (f->kind != FRAME_OK || f->payload_len != 40)
                die("SCRIPT LOAD failed: %.*s", (int) f->raw_len, f->raw);
        memcpy(lk.sha, f->payload, 40);
}

static bool script_loaded(uint64_t now) {
        return lk.sha[0] != 0 || conns_closed > 0;
}

static int scenario_locks(void) {
        static const char release_script[] =
                "if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('del', KEYS[1]) else return 0 end";
        const char *mode = arg_target == TARGET_REDIS ? "SET NX PX + retry" :
                arg_lock_wait > 0 ? "lockWait" : "lock + retry";
        ServerSample s0, s1;
        uint64_t t0, t1, cpu0, cpu1, requests;
        double secs, rate;
        bool ok;

        lk.cl = xcalloc(arg_clients, sizeof(Conn *));
        lk.state = xcalloc(arg_clients, sizeof(LockState));
        lk.name = xcalloc(arg_clients, sizeof(unsigned));
        lk.pairs = xcalloc(arg_clients, sizeof(unsigned));
        lk.sent = xcalloc(arg_clients, sizeof(uint64_t));
        lk.acq_start = xcalloc(arg_clients, sizeof(uint64_t));
        lk.rng = xcalloc(arg_clients, sizeof(uint64_t));
        lk.reqno = xcalloc(arg_clients, sizeof(uint64_t));
        lk.pending = xcalloc(arg_clients, sizeof(unsigned));
        lk.holder = xcalloc(arg_names, sizeof(int));
        lk.last_token = xcalloc(arg_names, sizeof(int64_t));
        for (unsigned k = 0; k < arg_names; k++) {
                lk.holder[k] = -1;
                lk.last_token[k] = -1;
        }

        for (unsigned i = 0; i < arg_clients; i++) {
                lk.cl[i] = conn_new(ROLE_LOCKER, i, 16 * 1024);
                lk.rng[i] = UINT64_C(0x9E3779B97F4A7C15) * (i + 1);
        }
        if (arg_target == TARGET_REDIS) {
                on_frame = script_frame;
                resp_command(lk.cl[0], 3, (const char *[]) { "SCRIPT", "LOAD", release_script }, NULL);
                conn_flush(lk.cl[0]);
                if (!loop_run(script_loaded, deadline_from_now()) || conns_closed > 0)
                        die("SCRIPT LOAD got no answer");
        }

        on_frame = locks_frame;
        after_batch = locks_after_batch;
        server_sample(&s0);
        cpu0 = self_cpu_ns();
        t0 = now_ns();
        if (arg_duration > 0)
                lk.stop_at = t0 + (uint64_t) arg_duration * NSEC_PER_SEC;
        for (unsigned i = 0; i < arg_clients; i++)
                lock_start_pair(i, t0);
        ok = loop_run(locks_done, deadline_from_now());
        t1 = now_ns();
        cpu1 = self_cpu_ns();
        server_sample(&s1);

        secs = (double) (t1 - t0) / (double) NSEC_PER_SEC;
        rate = (double) lk.pairs_total / secs;
        /* every acquire, granted or refused, and every release answered */
        requests = 2 * lk.pairs_total + lk.refused;
        fprintf(stderr,
                "%s locks (%s) C=%u K=%u N=%u: %" PRIu64 " pairs in %.3f s = %.0f pairs/s; request p50 %.1f us "
                "p99 %.1f us; acquire p50 %.1f us p99 %.1f us max %.1f us; refused attempts %" PRIu64
                "; exclusion violations %" PRIu64 ", token order violations %" PRIu64 ", failed releases %" PRIu64
                ", errors %" PRIu64 ", closed %u; server CPU %.0f%% = %.2f us per request, bench CPU %.0f%%%s\n",
                target_name(), mode, arg_clients, arg_names, arg_pairs, lk.pairs_total, secs, rate,
                us(hist_percentile(&lk.req, 50)), us(hist_percentile(&lk.req, 99)),
                us(hist_percentile(&lk.acq, 50)), us(hist_percentile(&lk.acq, 99)), us(lk.acq.max),
                lk.refused, lk.violations, lk.token_violations, lk.release_failures, lk.errors, conns_closed,
                server_cpu_percent(&s0, &s1), server_cpu_us_per(&s0, &s1, requests),
                100.0 * (double) (cpu1 - cpu0) / (double) (t1 - t0), ok ? "" : " (TIMED OUT)");
        /* | target | mode | C | K | pairs/s | req p50 | req p99 | acquire p99 | refused | violations | CPU |
         *   bench CPU | server CPU µs per request | */
        printf("| %s | %s | %u | %u | %.0f | %.0f | %.0f | %.0f | %" PRIu64 " | %" PRIu64 " | %.0f%% | %.0f%% "
               "| %.2f |\n",
               target_name(), mode, arg_clients, arg_names, rate,
               us(hist_percentile(&lk.req, 50)), us(hist_percentile(&lk.req, 99)),
               us(hist_percentile(&lk.acq, 99)), lk.refused,
               lk.violations + lk.token_violations + lk.release_failures,
               server_cpu_percent(&s0, &s1), 100.0 * (double) (cpu1 - cpu0) / (double) (t1 - t0),
               server_cpu_us_per(&s0, &s1, requests));

        return ok && (lk.stop_at > 0 || lk.pairs_total == (uint64_t) arg_clients * arg_pairs) &&
                lk.violations == 0 && lk.token_violations == 0 && lk.release_failures == 0 && lk.errors == 0 &&
                conns_closed == 0 ? 0 : 1;
}

/* ---- paced: one client at a fixed request rate, for the server's CPU time per request at an everyday load ---- */

/* Requests go out at fixed instants (a periodic timerfd), not as fast as the server answers, so the server sleeps
 * between them as a daemon on a laptop does; what the run measures is the server's CPU time per request
 * (schedstat), which busy polling raises when it spins for input that does not come (docs/performance.md, "Busy
 * polling at everyday loads"). "lock" sends a lock and, once granted, its unlock: a pair of requests per tick, at
 * half the ticks. A tick that finds the previous exchange still going is skipped and counted. --rate=0: no pacing,
 * the next exchange starts as soon as the last one ended (one client saturating the server). */

static unsigned arg_rate = 1000;            /* paced: requests per second */
static bool arg_ping = false;               /* paced: pings instead of lock+unlock pairs */

static struct {
        Conn *cl, *timer;
        bool busy, locking;
        uint64_t seq, sent, requests, skipped, errors, stop_at;
        bool stopped;
        Histogram req;
} pc;

static void paced_send(uint64_t now) {
        pc.seq++;
        if (arg_ping)
                conn_printf(pc.cl, "{\"type\":\"ping\",\"id\":\"p%" PRIu64 "\"}\n", pc.seq);
        else
                conn_printf(pc.cl, "{\"type\":\"%s\",\"id\":\"l%" PRIu64 "\",\"lockName\":\"bench:paced\","
                            "\"sessionId\":\"paced\"%s}\n", pc.locking ? "unlock" : "lock", pc.seq,
                            pc.locking ? "" : ",\"lockTimeout\":30000");
        pc.sent = now;
        conn_flush(pc.cl);
}

static void paced_start(uint64_t now) {
        if (now >= pc.stop_at) {
                pc.stopped = true;
                return;
        }
        pc.busy = true;
        pc.locking = false;
        paced_send(now);
}

static void paced_frame(Conn *c, const Frame *f, uint64_t now) {
        hist_add(&pc.req, now - pc.sent);
        pc.requests++;
        if (f->kind != FRAME_OK) {
                pc.errors++;
                print_error_once(f);
        }
        if (!arg_ping && !pc.locking) {
                pc.locking = true;
                paced_send(now);
                return;
        }
        pc.busy = false;
        if (arg_rate == 0)
                paced_start(now);
}

static void paced_tick(uint64_t expirations, uint64_t now) {
        pc.skipped += expirations - 1;
        if (pc.busy)
                pc.skipped++;
        else
                paced_start(now);
}

static bool paced_done(uint64_t now) {
        return (pc.stopped && !pc.busy) || conns_closed > 0 || pc.errors > 0;
}

static int scenario_paced(void) {
        const char *what = arg_ping ? "ping" : "lock+unlock";
        unsigned secs = arg_duration > 0 ? arg_duration : 5;
        ServerSample s0, s1;
        uint64_t t0, t1, cpu0, cpu1;
        double wall, rate;
        bool ok;

        if (arg_target != TARGET_PHOTON)
                die("paced is a photond scenario");
        /* The default 50 µs of timer slack would blur a 100 µs period. */
        (void) prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
        pc.cl = conn_new(ROLE_LOCKER, 0, 16 * 1024);
        on_frame = paced_frame;
        on_tick = paced_tick;

        server_sample(&s0);
        cpu0 = self_cpu_ns();
        t0 = now_ns();
        pc.stop_at = t0 + (uint64_t) secs * NSEC_PER_SEC;
        if (arg_rate > 0) {
                /* A pair is two requests: a tick for each pair. */
                uint64_t period = NSEC_PER_SEC * (arg_ping ? 1 : 2) / arg_rate;
                struct itimerspec its = {
                        .it_value = { .tv_sec = 0, .tv_nsec = 1 },
                        .it_interval = { .tv_sec = (time_t) (period / NSEC_PER_SEC),
                                         .tv_nsec = (long) (period % NSEC_PER_SEC) },
                };
                struct epoll_event ev = { .events = EPOLLIN };
                int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);

                if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) < 0)
                        die("timerfd: %m");
                pc.timer = xcalloc(1, sizeof *pc.timer);
                *pc.timer = (Conn) { .fd = fd, .role = ROLE_TIMER };
                ev.data.ptr = pc.timer;
                if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
                        die("epoll_ctl(): %m");
        } else
                paced_start(t0);
        ok = loop_run(paced_done, deadline_from_now());
        t1 = now_ns();
        cpu1 = self_cpu_ns();
        server_sample(&s1);

        wall = (double) (t1 - t0) / (double) NSEC_PER_SEC;
        rate = (double) pc.requests / wall;
        fprintf(stderr,
                "%s paced (%s) target %u req/s for %u s: %" PRIu64 " requests = %.0f req/s, %" PRIu64 " ticks "
                "skipped; request p50 %.1f us p99 %.1f us max %.1f us; server CPU %.1f%% = %.2f us per request; "
                "bench CPU %.0f%%; errors %" PRIu64 ", closed %u%s\n",
                target_name(), what, arg_rate, secs, pc.requests, rate, pc.skipped,
                us(hist_percentile(&pc.req, 50)), us(hist_percentile(&pc.req, 99)), us(pc.req.max),
                server_cpu_percent(&s0, &s1), server_cpu_us_per(&s0, &s1, pc.requests),
                100.0 * (double) (cpu1 - cpu0) / (double) (t1 - t0), pc.errors, conns_closed,
                ok ? "" : " (TIMED OUT)");
        /* | requests | target req/s | req/s | server CPU | server CPU µs per request | p50 | p99 | skipped | */
        printf("| %s | %u | %.0f | %.1f%% | %.2f | %.0f | %.0f | %" PRIu64 " |\n", what, arg_rate, rate,
               server_cpu_percent(&s0, &s1), server_cpu_us_per(&s0, &s1, pc.requests),
               us(hist_percentile(&pc.req, 50)), us(hist_percentile(&pc.req, 99)), pc.skipped);

        return ok && pc.errors == 0 && conns_closed == 0 ? 0 : 1;
}

/* ---- command: C clients, N method calls each through photond's dispatcher (one outstanding per client) ---- */

static struct {
        Conn **cl;
        unsigned *left;
        uint64_t *sent;
        unsigned done;
        uint64_t calls, errors;
        Histogram req;
} cm;

static void command_send(unsigned i, uint64_t now) {
        conn_printf(cm.cl[i], "{\"type\":\"command\",\"id\":\"c%u-%u\",\"photonName\":\"%s\",\"method\":\"ping\","
                    "\"args\":{\"n\":1},\"sessionId\":\"bench-%u\"}\n", i, cm.left[i], arg_photon, i);
        cm.sent[i] = now;
        conn_flush(cm.cl[i]);
}

static void command_frame(Conn *c, const Frame *f, uint64_t now) {
        unsigned i = c->idx;

        if (f->kind == FRAME_MESSAGE)
                return;         /* state-changed pushes are not answers */
        hist_add(&cm.req, now - cm.sent[i]);
        if (f->kind == FRAME_OK)
                cm.calls++;
        else {
                cm.errors++;
                print_error_once(f);
        }
        if (--cm.left[i] == 0)
                cm.done++;
        else
                command_send(i, now);
}

static bool command_done(uint64_t now) {
        return cm.done >= arg_clients || conns_closed > 0;
}

static int scenario_command(void) {
        ServerSample s0, s1;
        uint64_t t0, t1;
        double rate;
        bool ok;

        if (arg_target != TARGET_PHOTON)
                die("command is a photond scenario");
        cm.cl = xcalloc(arg_clients, sizeof(Conn *));
        cm.left = xcalloc(arg_clients, sizeof(unsigned));
        cm.sent = xcalloc(arg_clients, sizeof(uint64_t));
        on_frame = command_frame;
        for (unsigned i = 0; i < arg_clients; i++) {
                cm.cl[i] = conn_new(ROLE_LOCKER, i, 16 * 1024);
                cm.left[i] = arg_pairs;
        }
        server_sample(&s0);
        t0 = now_ns();
        for (unsigned i = 0; i < arg_clients; i++)
                command_send(i, t0);
        ok = loop_run(command_done, deadline_from_now());
        t1 = now_ns();
        server_sample(&s1);

        rate = (double) cm.calls / ((double) (t1 - t0) / (double) NSEC_PER_SEC);
        fprintf(stderr, "%s command C=%u N=%u: %" PRIu64 " calls = %.0f calls/s; p50 %.1f us p99 %.1f us "
                "max %.1f us; errors %" PRIu64 ", closed %u; server CPU %.0f%%%s\n",
                target_name(), arg_clients, arg_pairs, cm.calls, rate, us(hist_percentile(&cm.req, 50)),
                us(hist_percentile(&cm.req, 99)), us(cm.req.max), cm.errors, conns_closed,
                server_cpu_percent(&s0, &s1), ok ? "" : " (TIMED OUT)");
        /* | path | connections | requests/s | p50 | p99 | errors | */
        printf("| Unix socket `command` | %u | %.0f | %.2f | %.2f | %" PRIu64 " |\n", arg_clients, rate,
               us(hist_percentile(&cm.req, 50)) / 1000.0, us(hist_percentile(&cm.req, 99)) / 1000.0, cm.errors);

        return ok && cm.errors == 0 && conns_closed == 0 ? 0 : 1;
}

/* ---- provide: a trivial provider in C, so webhook and command figures measure photond, not the provider ---- */

static bool provide_ready = false;

static void provide_frame(Conn *c, const Frame *f, uint64_t now) {
        if (f->kind == FRAME_INVOKE) {
                conn_printf(c, "{\"type\":\"invoke_result\",\"id\":\"%.*s\",\"success\":true,"
                            "\"data\":{\"ok\":true}}\n", (int) f->payload_len, f->payload);
                return;
        }
        if (provide_ready)
                return;
        if (f->kind != FRAME_OK)
                die("provide failed: %.*s", (int) f->raw_len, f->raw);
        /* run.sh waits for this line */
        fprintf(stderr, "providing %s\n", arg_photon);
        provide_ready = true;
}

static Conn *provider;

/* Answers go out once per loop iteration, however many invokes one read held. */
static void provide_after_batch(uint64_t now) {
        conn_flush(provider);
}

static bool provide_closed(uint64_t now) {
        return conns_closed > 0;
}

static int scenario_provide(void) {
        if (arg_target != TARGET_PHOTON)
                die("provide is a photond scenario");
        on_frame = provide_frame;
        after_batch = provide_after_batch;
        provider = conn_new(ROLE_LOCKER, 0, 256 * 1024);
        conn_printf(provider, "{\"type\":\"provide\",\"id\":\"provide-1\",\"photonName\":\"%s\"}\n", arg_photon);
        conn_flush(provider);
        /* until photond closes the connection or we are killed */
        while (!loop_run(provide_closed, now_ns() + 3600 * NSEC_PER_SEC))
                ;
        return 0;
}

/* ---- start: run a server and return once it said READY=1 ---- */

static int scenario_start(char **argv) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char buf[4096];
        uint64_t deadline = deadline_from_now();
        socklen_t salen;
        pid_t pid;
        int fd;

        if (!arg_log)
                die("start needs --log=FILE");
        /* An abstract socket: nothing to clean up, unique per invocation. */
        snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "photon-bench-notify-%d", (int) getpid());
        /* abstract names are compared with their length: bind exactly what the child will send to */
        salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, salen) < 0)
                die("notify socket: %m");

        pid = fork();
        if (pid < 0)
                die("fork(): %m");
        if (pid == 0) {
                int log = open(arg_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                char name[sizeof sa.sun_path + 1];

                if (log < 0 || dup2(log, STDOUT_FILENO) < 0 || dup2(log, STDERR_FILENO) < 0)
                        _exit(127);
                snprintf(name, sizeof name, "@%s", sa.sun_path + 1);
                setenv("NOTIFY_SOCKET", name, 1);
                setsid();
                execvp(argv[0], argv);
                fprintf(stderr, "photon-bench: cannot run %s: %m\n", argv[0]);
                _exit(127);
        }

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                uint64_t now = now_ns();
                ssize_t n;
                int status;

                if (waitpid(pid, &status, WNOHANG) == pid)
                        die("%s exited before it was ready (see %s)", argv[0], arg_log);
                if (now >= deadline) {
                        kill(pid, SIGTERM);
                        die("%s did not report READY=1 within %u s (see %s)", argv[0], arg_timeout, arg_log);
                }
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = recv(fd, buf, sizeof buf - 1, 0);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
                        if (strcmp(l, "READY=1") == 0) {
                                printf("%d\n", (int) pid);
                                return 0;
                        }
        }
}

/* ---- command line ---- */

static void help(void) {
        printf("photon-bench SCENARIO [OPTIONS]\n\n"
               "Load generator for photond and Redis over a Unix socket. Prints a human summary on stderr\n"
               "and one markdown table row on stdout; exits 1 if a correctness check failed, 2 on a setup error.\n\n"
               "Scenarios:\n"
               "  fanout    S subscribers, P publishers pipelining M messages of B bytes with window W\n"
               "  conns     N idle subscribers, one publish: time until all have it, server KiB per connection\n"
               "  locks     C clients doing N acquire+release pairs each on K names\n"
               "  paced     photond: one client at --rate requests/s (lock+unlock pairs, or --ping) for\n"
               "            --duration s (default 5): the server's CPU time per request\n"
               "  command   photond: C clients doing N calls each of method \"ping\" on --photon (a provider)\n"
               "  provide   photond: serve every method of --photon with {\"ok\":true} until killed\n"
               "  start -- CMD...   run a server, wait for its READY=1 (sd_notify), print its pid\n\n"
               "Options:\n"
               "  --target=photon|redis   Protocol to speak (default photon)\n"
               "  --socket=PATH[,PATH…]   The server's Unix socket; several: connection i goes to the i-th\n"
               "                          modulo their number (cluster nodes)\n"
               "  --pid=PID[,PID…]        The server's pid, for RSS and CPU from /proc (several: summed)\n"
               "  --subscribers=S  --publishers=P  --messages=M  --bytes=B  --window=W\n"
               "  --conns=N  --clients=C  --pairs=N (locks pairs, command calls per client)  --names=K\n"
               "  --photon=NAME           command: the photon to call (default bench)\n"
               "  --lock-wait=MS          photond: waiting acquires (\"lockWait\") instead of a retry loop\n"
               "  --duration=SEC          locks: start no new pair after this long, whatever --pairs says\n"
               "  --rate=N                paced: requests per second (default 1000; 0: as fast as answered)\n"
               "  --ping                  paced: pings instead of lock+unlock pairs\n"
               "  --timeout=SEC           Give up after this long (default 60)\n"
               "  --log=FILE              start: the server's stdout and stderr\n");
}

static unsigned parse_unsigned(const char *s, const char *what, unsigned min) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end || v < min || v > 100000000UL)
                die("invalid %s: '%s'", what, s);
        return (unsigned) v;
}

int main(int argc, char *argv[]) {
        enum {
                ARG_TARGET = 0x100, ARG_SOCKET, ARG_PID, ARG_SUBSCRIBERS, ARG_PUBLISHERS, ARG_MESSAGES, ARG_BYTES,
                ARG_WINDOW, ARG_CONNS, ARG_CLIENTS, ARG_PAIRS, ARG_NAMES, ARG_LOCK_WAIT, ARG_TIMEOUT, ARG_LOG,
                ARG_PHOTON, ARG_DURATION, ARG_RATE, ARG_PING,
        };
        static const struct option options[] = {
                { "help",        no_argument,       NULL, 'h'             },
                { "target",      required_argument, NULL, ARG_TARGET      },
                { "socket",      required_argument, NULL, ARG_SOCKET      },
                { "pid",         required_argument, NULL, ARG_PID         },
                { "subscribers", required_argument, NULL, ARG_SUBSCRIBERS },
                { "publishers",  required_argument, NULL, ARG_PUBLISHERS  },
                { "messages",    required_argument, NULL, ARG_MESSAGES    },
                { "bytes",       required_argument, NULL, ARG_BYTES       },
                { "window",      required_argument, NULL, ARG_WINDOW      },
                { "conns",       required_argument, NULL, ARG_CONNS       },
                { "clients",     required_argument, NULL, ARG_CLIENTS     },
                { "pairs",       required_argument, NULL, ARG_PAIRS       },
                { "names",       required_argument, NULL, ARG_NAMES       },
                { "lock-wait",   required_argument, NULL, ARG_LOCK_WAIT   },
                { "timeout",     required_argument, NULL, ARG_TIMEOUT     },
                { "log",         required_argument, NULL, ARG_LOG         },
                { "photon",      required_argument, NULL, ARG_PHOTON      },
                { "duration",    required_argument, NULL, ARG_DURATION    },
                { "rate",        required_argument, NULL, ARG_RATE        },
                { "ping",        no_argument,       NULL, ARG_PING        },
                {}
        };
        struct rlimit rl;
        const char *scenario = NULL;
        int c;

        /* The scenario comes first; "+" stops option parsing at the command that "start" runs. */
        if (argc > 1 && argv[1][0] != '-') {
                scenario = argv[1];
                argv++;
                argc--;
        }
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_TARGET:
                        if (strcmp(optarg, "photon") == 0 || strcmp(optarg, "photond") == 0)
                                arg_target = TARGET_PHOTON;
                        else if (strcmp(optarg, "redis") == 0)
                                arg_target = TARGET_REDIS;
                        else
                                die("invalid --target: '%s' (photon or redis)", optarg);
                        break;
                case ARG_SOCKET:
                        arg_socket = optarg;
                        n_sockets = 0;
                        for (char *t = strtok(optarg, ","); t; t = strtok(NULL, ","))
                                if (n_sockets < MAX_SERVERS)
                                        arg_sockets[n_sockets++] = t;
                        if (n_sockets == 0)
                                die("invalid --socket: '%s'", optarg);
                        break;
                case ARG_PID:
                        n_pids = 0;
                        for (char *t = strtok(optarg, ","); t; t = strtok(NULL, ","))
                                if (n_pids < MAX_SERVERS)
                                        arg_pids[n_pids++] = (pid_t) parse_unsigned(t, "--pid", 1);
                        arg_pid = n_pids > 0 ? arg_pids[0] : 0;
                        break;
                case ARG_SUBSCRIBERS:
                        arg_subscribers = parse_unsigned(optarg, "--subscribers", 1);
                        break;
                case ARG_PUBLISHERS:
                        arg_publishers = parse_unsigned(optarg, "--publishers", 1);
                        break;
                case ARG_MESSAGES:
                        arg_messages = parse_unsigned(optarg, "--messages", 1);
                        break;
                case ARG_BYTES:
                        arg_bytes = parse_unsigned(optarg, "--bytes", 0);
                        if (arg_bytes > 1024 * 1024)
                                die("--bytes is at most 1048576");
                        break;
                case ARG_WINDOW:
                        arg_window = parse_unsigned(optarg, "--window", 1);
                        break;
                case ARG_CONNS:
                        arg_conns = parse_unsigned(optarg, "--conns", 1);
                        break;
                case ARG_CLIENTS:
                        arg_clients = parse_unsigned(optarg, "--clients", 1);
                        break;
                case ARG_PAIRS:
                        arg_pairs = parse_unsigned(optarg, "--pairs", 1);
                        break;
                case ARG_NAMES:
                        arg_names = parse_unsigned(optarg, "--names", 1);
                        break;
                case ARG_LOCK_WAIT:
                        arg_lock_wait = parse_unsigned(optarg, "--lock-wait", 0);
                        break;
                case ARG_TIMEOUT:
                        arg_timeout = parse_unsigned(optarg, "--timeout", 1);
                        break;
                case ARG_LOG:
                        arg_log = optarg;
                        break;
                case ARG_PHOTON:
                        arg_photon = optarg;
                        break;
                case ARG_DURATION:
                        arg_duration = parse_unsigned(optarg, "--duration", 0);
                        break;
                case ARG_RATE:
                        arg_rate = parse_unsigned(optarg, "--rate", 0);
                        break;
                case ARG_PING:
                        arg_ping = true;
                        break;
                default:
                        return 2;
                }

        if (!scenario)
                die("which scenario? (fanout, conns, locks, paced, command, provide, start; --help)");
        if (strcmp(scenario, "start") == 0) {
                if (optind >= argc)
                        die("start needs a command");
                return scenario_start(argv + optind);
        }
        if (optind < argc)
                die("unexpected argument '%s'", argv[optind]);
        if (!arg_socket)
                die("--socket is required");
        if (arg_lock_wait > 0 && arg_target != TARGET_PHOTON)
                die("--lock-wait is a photond extension");

        /* 10,000 idle connections need as many descriptors. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        signal(SIGPIPE, SIG_IGN);
        epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (epoll_fd < 0)
                die("epoll_create1(): %m");

        if (strcmp(scenario, "fanout") == 0)
                return scenario_fanout();
        if (strcmp(scenario, "conns") == 0)
                return scenario_conns();
        if (strcmp(scenario, "locks") == 0)
                return scenario_locks();
        if (strcmp(scenario, "paced") == 0)
                return scenario_paced();
        if (strcmp(scenario, "command") == 0)
                return scenario_command();
        if (strcmp(scenario, "provide") == 0)
                return scenario_provide();
        die("unknown scenario '%s'", scenario);
}
