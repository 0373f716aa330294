/* SPDX-License-Identifier: MIT */
/*
 * lock-relay: the cheapest possible cluster node for photon-bench's "locks" scenario, to measure the ceiling that
 * tests/bench/cluster-locks.sh compares photond's cluster mode against.
 *
 * It does only what any node must do when a lock is acknowledged after Redis granted it (issue 17): read a
 * client's request, send it to Redis, read Redis' answer, write the client's answer. It does less than photond
 * in every step: the photon lines are not parsed as JSON (the three fields are picked out by hand), there are no
 * fencing tokens, no expiry of its own, no waiters, no caps and no errors worth the name; an acquire is Redis'
 * own `SET key holder NX PX timeout` and a release the direct clients' compare-and-delete script. Every request
 * read in one epoll iteration goes to Redis in one write (a pipeline), and every answer Redis gave in one read
 * goes back in one write a client. So no node design that waits for Redis can answer faster than this one on the
 * same machine: its rate is an upper bound for photond's.
 *
 *   lock-relay --socket PATH --redis REDIS_SOCKET
 *
 * One process, one thread, libc only. It says READY=1 on $NOTIFY_SOCKET when listening (photon-bench start).
 * Not a product: it trusts its clients and exits on any error.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define RING 65536              /* requests in flight to Redis, a power of two */

static const char CAD[] = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
                          "else return 0 end";

typedef struct Buf {
        char *p;
        size_t len, off, cap;
} Buf;

typedef struct Client {
        int fd;
        Buf in, out;
        bool dirty;
} Client;

typedef struct Pending {
        Client *c;
        bool release;
        char id[64];
} Pending;

static int redis_fd = -1;
static Buf redis_in, redis_out;
static Pending ring[RING];
static size_t ring_head, ring_tail;
static Client *dirty[MAX_CLIENTS];
static size_t ndirty;
static char sha[41];

static void die(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        fputs("lock-relay: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(1);
}

static void buf_add(Buf *b, const void *p, size_t n) {
        if (b->cap - b->len < n) {
                b->cap = (b->len + n) * 2;
                b->p = realloc(b->p, b->cap);
                if (!b->p)
                        die("out of memory");
        }
        memcpy(b->p + b->len, p, n);
        b->len += n;
}

static void buf_printf(Buf *b, const char *fmt, ...) {
        char tmp[512];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof tmp)
                die("line too long");
        buf_add(b, tmp, (size_t) n);
}

/* Writes what it can; a relay that cannot write at once just tries again at its next turn. */
static void buf_flush(int fd, Buf *b) {
        while (b->off < b->len) {
                ssize_t n = write(fd, b->p + b->off, b->len - b->off);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return;
                        die("write: %m");
                }
                b->off += (size_t) n;
        }
        b->off = b->len = 0;
}

static void resp_command(Buf *b, int argc, const char *const *argv, const size_t *lens) {
        buf_printf(b, "*%d\r\n", argc);
        for (int i = 0; i < argc; i++) {
                buf_printf(b, "$%zu\r\n", lens[i]);
                buf_add(b, argv[i], lens[i]);
                buf_add(b, "\r\n", 2);
        }
}

/* The string value of "key" in one flat JSON line, not unescaped (photon-bench's names need none). */
static bool field(const char *line, const char *end, const char *key, const char **v, size_t *n) {
        size_t kl = strlen(key);

        for (const char *p = line; p + kl + 2 < end; p++)
                if (*p == '"' && memcmp(p + 1, key, kl) == 0 && p[kl + 1] == '"') {
                        const char *q = p + kl + 2, *e;

                        while (q < end && (*q == ':' || *q == ' '))
                                q++;
                        if (q < end && *q == '"') {
                                e = memchr(q + 1, '"', (size_t) (end - q - 1));
                                if (!e)
                                        return false;
                                *v = q + 1;
                                *n = (size_t) (e - q - 1);
                        } else {
                                for (e = q; e < end && *e != ',' && *e != '}'; e++)
                                        ;
                                *v = q;
                                *n = (size_t) (e - q);
                        }
                        return true;
                }
        return false;
}

static void client_line(Client *c, const char *line, const char *end) {
        const char *type, *id, *name, *holder, *timeout;
        size_t tl, il, nl, hl, ol;
        Pending *p;

        if (!field(line, end, "type", &type, &tl) || !field(line, end, "id", &id, &il) ||
            !field(line, end, "lockName", &name, &nl) || !field(line, end, "sessionId", &holder, &hl))
                die("not a lock request: %.*s", (int) (end - line), line);
        if (ring_tail - ring_head == RING)
                die("too many requests in flight");
        if (il >= sizeof p->id)
                die("id too long");
        p = &ring[ring_tail++ & (RING - 1)];
        *p = (Pending) { .c = c, .release = tl == 6 && memcmp(type, "unlock", 6) == 0 };
        memcpy(p->id, id, il);
        if (p->release)
                resp_command(&redis_out, 5, (const char *[]) { "EVALSHA", sha, "1", name, holder },
                             (size_t[]) { 7, 40, 1, nl, hl });
        else {
                if (!field(line, end, "lockTimeout", &timeout, &ol)) {
                        timeout = "30000";
                        ol = 5;
                }
                resp_command(&redis_out, 6, (const char *[]) { "SET", name, holder, "NX", "PX", timeout },
                             (size_t[]) { 3, nl, hl, 2, 2, ol });
        }
}

static void client_read(Client *c) {
        char *nl, *start;

        for (;;) {
                ssize_t n;

                if (c->in.cap - c->in.len < 4096) {
                        c->in.cap = c->in.cap * 2 + 4096;
                        c->in.p = realloc(c->in.p, c->in.cap);
                        if (!c->in.p)
                                die("out of memory");
                }
                n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n <= 0) {
                        /* the bench is done with this client; so are we */
                        close(c->fd);
                        c->fd = -1;
                        return;
                }
                c->in.len += (size_t) n;
        }
        start = c->in.p;
        while ((nl = memchr(start, '\n', (size_t) (c->in.p + c->in.len - start)))) {
                client_line(c, start, nl);
                start = nl + 1;
        }
        c->in.len -= (size_t) (start - c->in.p);
        memmove(c->in.p, start, c->in.len);
}

/* One RESP reply at *p, reduced to what the answers need: 1 for +OK and :1, 0 for nil and :0. Returns the bytes
 * it took, 0 when incomplete. */
static size_t resp_reply(const char *p, const char *end, int *ok) {
        const char *crlf = memmem(p, (size_t) (end - p), "\r\n", 2);

        if (!crlf)
                return 0;
        switch (p[0]) {
        case '+':
                *ok = 1;
                break;
        case ':':
                *ok = p[1] == '1';
                break;
        case '$':
                if (p[1] == '-')
                        *ok = 0;
                else {
                        /* a bulk string: SCRIPT LOAD's answer */
                        long n = strtol(p + 1, NULL, 10);

                        if (end - (crlf + 2) < n + 2)
                                return 0;
                        if (n == 40)
                                memcpy(sha, crlf + 2, 40);
                        *ok = 1;
                        return (size_t) (crlf + 2 + n + 2 - p);
                }
                break;
        default:
                die("Redis said %.*s", (int) (crlf - p), p);
        }
        return (size_t) (crlf + 2 - p);
}

static void redis_read(void) {
        const char *p, *end;

        for (;;) {
                ssize_t n;

                if (redis_in.cap - redis_in.len < 65536) {
                        redis_in.cap = redis_in.cap * 2 + 65536;
                        redis_in.p = realloc(redis_in.p, redis_in.cap);
                        if (!redis_in.p)
                                die("out of memory");
                }
                n = read(redis_fd, redis_in.p + redis_in.len, redis_in.cap - redis_in.len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n <= 0)
                        die("Redis closed the connection");
                redis_in.len += (size_t) n;
        }
        p = redis_in.p;
        end = redis_in.p + redis_in.len;
        while (p < end && ring_head < ring_tail) {
                Pending *q = &ring[ring_head & (RING - 1)];
                size_t took;
                int ok;

                took = resp_reply(p, end, &ok);
                if (took == 0)
                        break;
                p += took;
                ring_head++;
                if (q->c->fd < 0)
                        continue;
                buf_printf(&q->c->out, "{\"type\":\"result\",\"id\":\"%s\",\"success\":%s}\n", q->id,
                           ok ? "true" : "false");
                if (!q->c->dirty) {
                        q->c->dirty = true;
                        dirty[ndirty++] = q->c;
                }
        }
        redis_in.len = (size_t) (end - p);
        memmove(redis_in.p, p, redis_in.len);
}

static int unix_socket(const char *path, bool listening) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || strlen(path) >= sizeof sa.sun_path)
                die("socket %s: %m", path);
        strcpy(sa.sun_path, path);
        if (listening) {
                (void) unlink(path);
                if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(fd, 128) < 0)
                        die("listen on %s: %m", path);
        } else if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                die("connect to %s: %m", path);
        return fd;
}

static void notify_ready(void) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (!path || strlen(path) >= sizeof sa.sun_path)
                return;
        strcpy(sa.sun_path, path);
        if (sa.sun_path[0] == '@')
                sa.sun_path[0] = 0;
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || sendto(fd, "READY=1", 7, 0, (struct sockaddr *) &sa,
                             (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(path))) < 0)
                die("sd_notify: %m");
        close(fd);
}

int main(int argc, char **argv) {
        const char *sock = NULL, *rsock = NULL;
        Client clients[MAX_CLIENTS];
        size_t nclients = 0;
        bool redis_want_out = false;
        struct epoll_event ev;
        int ep, lfd;

        for (int i = 1; i + 1 < argc; i += 2)
                if (strcmp(argv[i], "--socket") == 0)
                        sock = argv[i + 1];
                else if (strcmp(argv[i], "--redis") == 0)
                        rsock = argv[i + 1];
        if (!sock || !rsock)
                die("usage: lock-relay --socket PATH --redis REDIS_SOCKET");
        signal(SIGPIPE, SIG_IGN);

        /* Load the compare-and-delete script before anything else, blocking: its sha is in every release. */
        redis_fd = unix_socket(rsock, false);
        resp_command(&redis_out, 3, (const char *[]) { "SCRIPT", "LOAD", CAD },
                     (size_t[]) { 6, 4, sizeof CAD - 1 });
        buf_flush(redis_fd, &redis_out);
        while (!sha[0]) {
                ssize_t n;

                if (redis_in.cap - redis_in.len < 4096) {
                        redis_in.cap += 4096;
                        redis_in.p = realloc(redis_in.p, redis_in.cap);
                }
                n = read(redis_fd, redis_in.p + redis_in.len, redis_in.cap - redis_in.len);
                if (n <= 0)
                        die("SCRIPT LOAD: no answer");
                redis_in.len += (size_t) n;
                int ok;
                size_t took = resp_reply(redis_in.p, redis_in.p + redis_in.len, &ok);
                if (took > 0)
                        redis_in.len = 0;
        }
        if (fcntl(redis_fd, F_SETFL, O_NONBLOCK) < 0)
                die("fcntl: %m");

        lfd = unix_socket(sock, true);
        ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0)
                die("epoll: %m");
        ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = NULL };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
                die("epoll_ctl: %m");
        ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = &redis_fd };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, redis_fd, &ev) < 0)
                die("epoll_ctl: %m");
        notify_ready();

        for (;;) {
                struct epoll_event evs[MAX_CLIENTS + 2];
                int n = epoll_wait(ep, evs, MAX_CLIENTS + 2, -1);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        die("epoll_wait: %m");
                for (int i = 0; i < n; i++) {
                        void *what = evs[i].data.ptr;

                        if (!what) {
                                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                                if (fd < 0)
                                        continue;
                                if (nclients == MAX_CLIENTS)
                                        die("too many clients");
                                clients[nclients] = (Client) { .fd = fd };
                                ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = &clients[nclients++] };
                                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                                        die("epoll_ctl: %m");
                        } else if (what == &redis_fd)
                                redis_read();
                        else if (((Client *) what)->fd >= 0)
                                client_read(what);
                }
                /* the pipeline: one write to Redis and one to each client per iteration */
                buf_flush(redis_fd, &redis_out);
                if ((redis_out.len > 0) != redis_want_out) {
                        redis_want_out = !redis_want_out;
                        ev = (struct epoll_event) { .events = EPOLLIN | (redis_want_out ? EPOLLOUT : 0),
                                                    .data.ptr = &redis_fd };
                        if (epoll_ctl(ep, EPOLL_CTL_MOD, redis_fd, &ev) < 0)
                                die("epoll_ctl: %m");
                }
                for (size_t i = 0; i < ndirty; i++) {
                        dirty[i]->dirty = false;
                        if (dirty[i]->fd >= 0)
                                buf_flush(dirty[i]->fd, &dirty[i]->out);
                }
                ndirty = 0;
        }
}
