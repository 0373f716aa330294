/* SPDX-License-Identifier: MIT */

/* Control-socket connections. Requests are framed by '\n' (a trailing '\r' and blank lines are tolerated, as
 * JSON.parse does in the reference). Complete lines are handed over straight from the shared read buffer; only an
 * incomplete tail is copied into the client's own buffer. Output is queued as references to shared buffers and
 * leaves in one writev() per client when the manager flushes, so a burst of messages costs one syscall. The pushes
 * of a publish that is the last request of the batch, with nothing of the batch waiting for the disk, leave while
 * the fan-out goes on (client_write_now()). */

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include "json-util.h"
#include "log.h"
#include "photond-client.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "photond-protocol.h"

ClientLineHandler client_line_handler = NULL;

/* One read buffer for every connection: the loop is single-threaded and lines are consumed before returning.
 * 16 KiB (as Redis reads) rather than 64: what one read brings in is answered and pushed before the next read of
 * that client, so a pipelining publisher gets its first replies, and the subscribers their first messages, after
 * a quarter of the work. In the fan-out benchmark with 1 KiB messages that took delivered messages/s from 0.94 to
 * 1.41 times Redis' and p99 latency from 0.92 to 0.73 (tests/bench, docs/performance.md); fewer lines per read
 * cost nothing visible where lines are short. */
#define READ_CHUNK (16 * 1024)
static char read_buffer[READ_CHUNK];

/* Ready clients served per wake-up; the rest stay on epoll's ready list for the next one, so the other sources of
 * the loop get their turn in between. */
#define CLIENT_POLL_BATCH 256

static int client_update_io_events(Client *c) {
        struct epoll_event ev;
        uint32_t events = 0;
        int op;

        if (!c->manager || c->fd < 0 || c->disconnected)
                return 0;
        if (!c->close_after_flush && !c->input_paused)
                events |= EPOLLIN;
        if (c->want_pollout)
                events |= EPOLLOUT;
        /* Closing with answers still to come (a call, a lock wait): the peer may yet go away entirely, and its
         * wait must then leave the queue at once, not be granted to nobody. Registered for the hang-up alone
         * (epoll reports EPOLLHUP whatever the mask; EPOLLHUP here only marks "in the set"), edge-triggered, so
         * it wakes the loop once. */
        if (events == 0 && c->close_after_flush && !c->peer_gone &&
            (c->peer.n_calls > 0 || c->lock_waits.n_waiters > 0 || c->lock_ops))
                events = EPOLLHUP;
        if (events == c->io_events)
                return 0;
        /* The half-close that made us close is an EPOLLRDHUP that stays: asked for, it would wake us again. */
        events |= EPOLLET | (events & EPOLLIN ? EPOLLRDHUP : 0);

        /* Nothing to wait for (closing, output not yet stuck, no answer to come): out of the set, or a hang-up,
         * which epoll reports whatever the mask, would keep waking the loop before the flush that closes us. */
        op = !(events & (EPOLLIN|EPOLLOUT|EPOLLHUP)) ? EPOLL_CTL_DEL : c->io_events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
        ev = (struct epoll_event) { .events = events, .data.ptr = c };
        if (epoll_ctl(c->manager->client_io.epoll_fd, op, c->fd, &ev) < 0)
                return -errno;
        c->io_events = events & ~(EPOLLET | EPOLLRDHUP);
        return 0;
}

static void client_read_more(Client *c) {
        Manager *m = c->manager;

        if (c->read_more || !m)
                return;
        c->read_more = true;
        LIST_PREPEND(read_more, m->client_io.read_more_clients, c);
        (void) sd_event_source_set_enabled(m->client_io.read_more_event_source, SD_EVENT_ONESHOT);
}

static void client_read_more_done(Client *c) {
        if (!c->read_more)
                return;
        c->read_more = false;
        LIST_REMOVE(read_more, c->manager->client_io.read_more_clients, c);
}

static void client_mark_dirty(Client *c);
static void client_clear_queue(Client *c);
static int client_rbuf_put(Client *c, const char *data, size_t size);
static void client_resume_input(Client *c);
static int client_feed_read(Client *c, const char *data, size_t size, bool more_waiting);

static const char* const client_close_table[_CLIENT_CLOSE_MAX] = {
        [CLIENT_CLOSE_PEER] = "peer",
        [CLIENT_CLOSE_READ_ERROR] = "readError",
        [CLIENT_CLOSE_WRITE_ERROR] = "writeError",
        [CLIENT_CLOSE_LINE_TOO_LONG] = "lineTooLong",
        [CLIENT_CLOSE_WRITE_QUEUE] = "writeQueue",
        [CLIENT_CLOSE_SLOW_CONSUMER] = "slowConsumer",
        [CLIENT_CLOSE_OUT_OF_MEMORY] = "outOfMemory",
        [CLIENT_CLOSE_REFUSED] = "refused",
};

const char* client_close_to_string(ClientClose c) {
        return c >= 0 && c < _CLIENT_CLOSE_MAX ? client_close_table[c] : NULL;
}

ClientClose client_write_error_reason(Client *c) {
        /* A write to a peer known to have gone is its hang-up, not a failure. */
        return c->peer_gone ? CLIENT_CLOSE_PEER : CLIENT_CLOSE_WRITE_ERROR;
}

void client_note_session(Client *c, const char *s) {
        char *n;

        if (streq_ptr(c->session_id, s))
                return;
        if (strlen(s) > limits.MAX_LOCK_HOLDER_BYTES) {
                c->session_id = mfree(c->session_id);
                return;
        }
        n = strdup(s);
        if (!n)
                return;         /* only status and ps miss it */
        free(c->session_id);
        c->session_id = n;
}

bool client_closing_done(Client *c) {
        return c->close_after_flush && c->out_n == 0 && c->peer.n_calls == 0 && c->lock_waits.n_waiters == 0 &&
                c->n_deferred == 0 && !c->lock_ops;
}

void client_input_end(Client *c) {
        /* The reference splits on '\n' and handles a line only when its newline came, so a last line without one
         * is no request there either; it is dropped, not guessed at. */
        c->rbuf = mfree(c->rbuf);
        c->rbuf_size = c->rbuf_alloc = 0;
        c->rbuf_lines = c->input_paused = false;
        if (c->close_after_flush)
                return;
        c->close_after_flush = true;
        c->close_reason = CLIENT_CLOSE_PEER;
        client_read_more_done(c);
        (void) client_update_io_events(c);
}

/* After a feed: out of memory closes the client (-ENOMEM, nothing more to do with it); another refusal (a line over
 * the cap) changed what the client waits for. */
static int client_fed(Client *c, int r) {
        if (r == -ENOMEM) {
                log_oom();
                manager_client_close(c->manager, c, CLIENT_CLOSE_OUT_OF_MEMORY);
                return r;
        }
        if (r < 0 && !c->disconnected)
                (void) client_update_io_events(c);
        return 0;
}

static void client_on_io(Client *c, uint32_t revents) {
        int r;

        /* Edge-triggered: a hang-up is reported once, maybe with data that takes several reads; the read that
         * meets the end of input acts on it. */
        if (revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->peer_hup = true;
        /* Nobody reads what is queued or still to come; a write would fail and close the connection before
         * the rest of its input is read, and that input is still handled, as the reference handles every
         * chunk it got before the close. */
        if ((revents & EPOLLHUP) && !c->peer_gone) {
                c->peer_gone = true;
                client_clear_queue(c);
                c->want_pollout = false;
                client_resume_input(c);
                (void) client_update_io_events(c);
        }

        if (revents & EPOLLOUT) {
                if (c->manager && manager_output_held(c->manager)) {
                        /* The flush writes what may leave (manager_flush() passes over clients waiting for
                         * EPOLLOUT, which has just come), and waits for EPOLLOUT again if the socket fills. */
                        c->want_pollout = false;
                        (void) client_update_io_events(c);
                        client_mark_dirty(c);
                        goto read;
                }
                r = client_flush(c);
                if (r < 0) {
                        log_debug_errno(r, "Client %" PRIu64 ": write failed, disconnecting: %m", c->serial);
                        manager_client_close(c->manager, c, client_write_error_reason(c));
                        return;
                }
                if (client_closing_done(c)) {
                        manager_client_close(c->manager, c, c->close_reason);
                        return;
                }
        }

read:
        if (revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                ssize_t n;

                /* Nobody reads the answers of a closing client that went away entirely. */
                if (c->close_after_flush) {
                        if (c->peer_gone)
                                manager_client_close(c->manager, c, c->close_reason);
                        return;
                }
                if (c->input_paused)
                        return;

                /* First the input kept while the write queue was over its cap: it came before anything unread. */
                if (c->rbuf_lines) {
                        if (client_fed(c, client_feed_read(c, NULL, 0, true)) < 0)
                                return;
                        if (c->input_paused || c->close_after_flush || c->disconnected)
                                return;
                }

                n = read(c->fd, read_buffer, sizeof(read_buffer));
                if (n < 0) {
                        if (errno == EINTR)
                                client_read_more(c);
                        if (errno == EAGAIN || errno == EINTR)
                                return;
                        log_debug_errno(errno, "Client %" PRIu64 ": read failed, disconnecting: %m", c->serial);
                        manager_client_close(c->manager, c, CLIENT_CLOSE_READ_ERROR);
                        return;
                }
                if (n == 0) {
                        client_input_end(c);
                        if (c->peer_gone || client_closing_done(c))
                                manager_client_close(c->manager, c, c->close_reason);
                        return;
                }

                /* After a full read more input may be waiting. */
                if (client_fed(c, client_feed_read(c, read_buffer, n, (size_t) n == sizeof(read_buffer))) < 0)
                        return;
                /* Edge-triggered: a short read took all there was, later input is a new edge; after a full one
                 * there may be more, and no edge will say so. After a hang-up no edge comes again: read on until
                 * the end of input. */
                if (((size_t) n == sizeof(read_buffer) || c->peer_hup) &&
                    !c->disconnected && !c->close_after_flush && !c->input_paused)
                        client_read_more(c);
        }
}

static void clients_serve_ready(ClientIO *io, const struct epoll_event *evs, int n) {
        for (int i = 0; i < n; i++) {
                Client *c = evs[i].data.ptr;

                if (c->disconnected)
                        continue;
                io->batch_follows = i + 1 < n;
                client_on_io(c, evs[i].events);
        }
        io->batch_follows = false;
}

/* Busy polling. Under a request/reply load every batch used to end with photond asleep in epoll_wait(), and each
 * next request had to wake it: a wake-up on another CPU costs an inter-processor interrupt (on a VM, exits on both
 * sides), and in the lock benchmark those wake-ups, not the work, set the pace. So after a batch served while
 * busy, the client set is polled without sleeping for up to BUSY_POLL_US; work found is served at once and starts
 * that time again. "Busy": the batch began within BUSY_POLL_IDLE_FACTOR times that time of the last one's end, so
 * a light load (and an idle daemon) never polls. The loop's other sources (timers, signals, the listener) get
 * their turn at least every BUSY_POLL_MAX_SLICE_USEC. Off with one CPU, where polling only delays the client we
 * wait for (client_io_setup()).
 *
 * A poll pays only when it finds input: one that finds nothing burns the whole poll time, and the wake-up it
 * spares a poll that does find input is worth a few µs of photond's CPU. One client at a steady 10,000 requests/s
 * found its unlock and missed its next lock, and paid 30 µs of CPU per request against 21 without polling; at
 * saturation most polls find input (8 lock clients: 87 % at K=64, 99.8 % at K=1), and polling lowers the CPU per
 * request and raises the rate (docs/performance.md, "Busy polling at everyday loads"). One client can find at most
 * every other poll useful, however fast it sends: what it sends next waits for photond's answer. So polling goes on
 * while at most BUSY_POLL_MAX_MISSES of the last BUSY_POLL_WINDOW polls missed (a hit ratio of 3/4) and otherwise
 * stops for a back-off. Polling after it is a probe, judged at that ratio from its first poll (its record starts
 * with the misses allowed, evenly spread): a probe that misses again within a window doubles the next back-off, up
 * to BUSY_POLL_BACKOFF_MAX_USEC, and a window of polls without a back-off resets it. A paced load thus polls a few
 * times per back-off instead of after every request, and a saturating one is found again within
 * BUSY_POLL_BACKOFF_MAX_USEC. */
#define BUSY_POLL_IDLE_FACTOR 10
#define BUSY_POLL_MAX_SLICE_USEC 1000

bool busy_poll_may_poll(const BusyPoll *b, uint64_t now) {
        return now >= b->resume_at;
}

bool busy_poll_record(BusyPoll *b, bool found, uint64_t now) {
        b->missed = b->missed << 1 | !found;
        if (__builtin_popcount(b->missed) <= BUSY_POLL_MAX_MISSES) {
                if (b->polls < BUSY_POLL_WINDOW && ++b->polls == BUSY_POLL_WINDOW)
                        b->backoff_usec = 0;
                return true;
        }

        b->backoff_usec = MAX(b->backoff_usec, BUSY_POLL_BACKOFF_MIN_USEC);
        b->resume_at = now + b->backoff_usec;
        b->backoff_usec = MIN(b->backoff_usec * 2, BUSY_POLL_BACKOFF_MAX_USEC);
        b->backoffs++;
        /* The probe's record: one miss in every step polls, the most allowed, so that the probe's own misses count
         * at once and a probe at a paced load ends at its second miss. */
        b->missed = 0;
        for (unsigned step = BUSY_POLL_WINDOW / BUSY_POLL_MAX_MISSES, i = step; i <= BUSY_POLL_WINDOW; i += step)
                b->missed |= UINT32_C(1) << (i - 1);
        b->polls = 0;
        return false;
}

static uint64_t busy_poll_usec(const ClientIO *io) {
        return io->one_cpu ? 0 : MIN(limits.BUSY_POLL_US, (uint64_t) BUSY_POLL_MAX_SLICE_USEC);
}

static int clients_busy_poll(Manager *m, uint64_t batch_start) {
        struct epoll_event evs[CLIENT_POLL_BATCH];
        ClientIO *io = &m->client_io;
        uint64_t now = now_usec(CLOCK_MONOTONIC), until, slice_end, loop_time;
        bool busy = io->last_batch_end > 0 &&
                batch_start - io->last_batch_end <= BUSY_POLL_IDLE_FACTOR * busy_poll_usec(io);
        int r = 0;

        io->last_batch_end = now;
        if (!busy || !busy_poll_may_poll(&io->busy_poll, now))
                return 0;

        if (sd_event_now(m->event, CLOCK_MONOTONIC, &loop_time) < 0 || loop_time > now)
                return 0;
        until = now + busy_poll_usec(io);
        slice_end = now + BUSY_POLL_MAX_SLICE_USEC;
        while (now < until && now < slice_end) {
                int n;

                /* Left to the loop: data left over from a full read (its defer source), replies held for a state
                 * write, shutdown. */
                if (io->read_more_clients || manager_output_held(m) || m->shutting_down)
                        break;
                n = epoll_wait(io->epoll_fd, evs, ELEMENTSOF(evs), 0);
                now = now_usec(CLOCK_MONOTONIC);
                if (n <= 0)
                        continue;
                (void) busy_poll_record(&io->busy_poll, true, now);
                /* This batch's requests came after the loop's time: they see the time they were found. */
                io->batch_time_offset = now - loop_time;
                io->busy_poll_batches++;
                clients_serve_ready(io, evs, n);
                r = manager_flush(m);
                if (r < 0)
                        break;
                now = io->last_batch_end = now_usec(CLOCK_MONOTONIC);
                until = now + busy_poll_usec(io);
        }
        /* Only a poll that ran its whole time counts as a miss, not one cut short by the slice or the loop. */
        if (now >= until)
                (void) busy_poll_record(&io->busy_poll, false, now);
        io->batch_time_offset = 0;
        return r;
}

/* Serves every client with input: first those with data left over from a full read (it came before anything
 * epoll reports now), then those epoll reports. */
static int clients_serve(Manager *m) {
        struct epoll_event evs[CLIENT_POLL_BATCH];
        Client *more[CLIENT_POLL_BATCH], *c;
        ClientIO *io = &m->client_io;
        uint64_t start = manager_now(m, CLOCK_MONOTONIC);      /* when the loop woke up for this batch */
        size_t n_more = 0;
        int n, r;

        /* Off the list before serving, so one that fills the buffer again waits for the next round. */
        while (n_more < ELEMENTSOF(more) && (c = io->read_more_clients)) {
                client_read_more_done(c);
                more[n_more++] = c;
        }

        /* A client served earlier in this batch may disconnect a later one (a slow subscriber, a provider, a
         * shutdown): that only marks it, its memory is freed by the manager's flush below. The list was built
         * newest first. */
        io->batch_follows = n_more > 0;        /* and whatever epoll reports next */
        while (n_more > 0) {
                c = more[--n_more];
                if (!c->disconnected)
                        client_on_io(c, EPOLLIN);
        }
        io->batch_follows = false;

        n = epoll_wait(io->epoll_fd, evs, ELEMENTSOF(evs), 0);
        if (n < 0 && errno != EINTR)
                log_error_errno(errno, "epoll_wait() on the client set failed: %m");
        clients_serve_ready(io, evs, n);

        /* The replies (and the one state write before them) leave now rather than from the flush source on the
         * next iteration, which would cost sd-event another poll for nothing. */
        r = manager_flush(m);
        if (r < 0 || busy_poll_usec(io) == 0)
                return r;
        return clients_busy_poll(m, start);
}

static int on_clients_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        return clients_serve(userdata);
}

static int on_read_more(sd_event_source *s, void *userdata) {
        return clients_serve(userdata);
}

int client_io_setup(Manager *m) {
        _cleanup_close_ int fd = -EBADF;
        ClientIO *io = &m->client_io;
        cpu_set_t cpus;
        int r;

        /* The CPUs we may run on (cgroup limits aside). A failure means more than CPU_SETSIZE of them. */
        CPU_ZERO(&cpus);
        if (sched_getaffinity(0, sizeof(cpus), &cpus) < 0)
                CPU_SET(0, &cpus), CPU_SET(1, &cpus);

        fd = epoll_create1(EPOLL_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = sd_event_add_io(m->event, &io->event_source, fd, EPOLLIN, on_clients_io, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(io->event_source, "clients-io");
        r = sd_event_add_defer(m->event, &io->read_more_event_source, on_read_more, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(io->read_more_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(io->read_more_event_source, "clients-read-more");
        io->epoll_fd = TAKE_FD(fd);
        io->one_cpu = CPU_COUNT(&cpus) < 2;
        return 0;
}

void client_io_done(Manager *m) {
        ClientIO *io = &m->client_io;

        io->read_more_event_source = sd_event_source_disable_unref(io->read_more_event_source);
        io->event_source = sd_event_source_disable_unref(io->event_source);
        io->epoll_fd = safe_close(io->epoll_fd);
}

int client_io_add_status(const ClientIO *io, struct json_object *data) {
        int r;

        r = json_add_int64(data, "busyPollBatches", (int64_t) io->busy_poll_batches);
        if (r < 0)
                return r;
        return json_add_int64(data, "busyPollBackoffs", (int64_t) io->busy_poll.backoffs);
}

int client_new(Manager *m, int fd, Client **ret) {
        _cleanup_(client_freep) Client *c = NULL;
        socklen_t len = sizeof(c->ucred);
        struct epoll_event ev;

        assert(m);
        assert(fd >= 0);
        assert(ret);

        c = new(Client, 1);
        if (!c)
                return -ENOMEM;
        *c = (Client) {
                .fd = -EBADF,
                .serial = ++m->client_io.client_serial,
                .subscriber.ops = &client_subscriber_ops,
                .ucred = { .pid = 0, .uid = (uid_t) -1, .gid = (gid_t) -1 },
        };

        /* Peer credentials decide who may shut the daemon down. A socketpair in tests has them too. */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->ucred, &len) < 0)
                c->ucred = (struct ucred) { .pid = 0, .uid = (uid_t) -1, .gid = (gid_t) -1 };

        ev = (struct epoll_event) { .events = EPOLLIN | EPOLLET | EPOLLRDHUP, .data.ptr = c };
        if (epoll_ctl(m->client_io.epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
                return -errno;
        c->io_events = EPOLLIN;

        c->fd = fd;
        c->manager = m;
        LIST_PREPEND(clients, m->clients, c);
        m->n_clients++;
        *ret = TAKE_PTR(c);
        return 0;
}

void client_stop_io(Client *c) {
        if (c->io_events != 0 && c->manager && c->fd >= 0)
                (void) epoll_ctl(c->manager->client_io.epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        c->io_events = 0;
        client_read_more_done(c);
}

static void client_clear_queue(Client *c) {
        for (size_t i = 0; i < c->out_n; i++)
                shared_buf_unref(c->out[c->out_head + i].buf);
        c->out = mfree(c->out);
        c->out_head = c->out_n = c->out_alloc = 0;
        c->out_bytes = 0;
}

size_t client_queued(const Client *c) {
        return c->out_n;
}

uint64_t client_queued_bytes(const Client *c) {
        return c->out_bytes;
}

SharedBuf* client_queued_line(const Client *c, size_t i) {
        return i < c->out_n ? c->out[c->out_head + i].buf : NULL;
}

SharedBuf* client_pop_queued(Client *c) {
        OutEntry e;

        if (c->out_n == 0)
                return NULL;
        e = c->out[c->out_head++];
        if (--c->out_n == 0)
                c->out_head = 0;
        c->out_bytes -= e.buf->size - e.offset;
        return e.buf;
}

void client_discard_queue(Client *c) {
        client_clear_queue(c);
}

const OutEntry* client_queued_entry(const Client *c, size_t i) {
        return i < c->out_n ? &c->out[c->out_head + i] : NULL;
}

size_t client_unhandled_input(const Client *c, const char **ret) {
        *ret = c->rbuf;
        return c->rbuf_size;
}

static int client_queue_grow(Client *c) {
        size_t na;
        OutEntry *n;

        if (c->out_head + c->out_n < c->out_alloc)
                return 0;
        if (c->out_head > 0) {
                memmove(c->out, c->out + c->out_head, c->out_n * sizeof(OutEntry));
                c->out_head = 0;
                return 0;
        }
        na = c->out_alloc ? c->out_alloc * 2 : 8;
        n = realloc(c->out, na * sizeof(OutEntry));
        if (!n)
                return -ENOMEM;
        c->out = n;
        c->out_alloc = na;
        return 0;
}

int client_requeue(Client *c, SharedBuf *b, size_t offset, const void *tag) {
        int r;

        assert(offset < b->size);

        if (c->disconnected)
                return -ECONNRESET;
        r = client_queue_grow(c);
        if (r < 0)
                return r;
        c->out[c->out_head + c->out_n++] = (OutEntry) {
                .buf = shared_buf_ref(b),
                .offset = offset,
                .tag = tag,
        };
        c->out_bytes += b->size - offset;
        client_mark_dirty(c);
        return 0;
}

int client_restore_input(Client *c, const char *data, size_t size) {
        int r;

        assert(c->rbuf_size == 0);

        r = client_rbuf_put(c, data, size);
        if (r < 0)
                return r;
        /* Fed by client_on_io() before the next read, whether or not it holds a whole line. */
        c->rbuf_lines = size > 0;
        if (size > 0)
                client_read_more(c);
        return 0;
}

Client* client_free(Client *c) {
        if (!c)
                return NULL;

        if (c->manager) {
                LIST_REMOVE(clients, c->manager->clients, c);
                c->manager->n_clients--;
                if (c->dirty)
                        LIST_REMOVE(dirty, c->manager->dirty_clients, c);
        }

        client_stop_io(c);
        safe_close(c->fd);
        client_clear_queue(c);
        free(c->rbuf);
        free(c->session_id);
        return mfree(c);
}

/* The flush goes oldest first and a client's place is that of its newest output: the pushes of a publish leave
 * before the publisher's result (the reference's order), also when the publisher had output queued before. */
static void client_mark_dirty(Client *c) {
        Manager *m = c->manager;

        if (!m)
                return;
        if (c->dirty) {
                if (m->dirty_clients != c) {
                        LIST_REMOVE(dirty, m->dirty_clients, c);
                        LIST_PREPEND(dirty, m->dirty_clients, c);
                }
                return;
        }
        c->dirty = true;
        LIST_PREPEND(dirty, m->dirty_clients, c);
        manager_schedule_flush(m);
}

int client_send(Client *c, SharedBuf *b, const void *tag) {
        assert(c);
        assert(b);

        if (!tag)
                c->answered = true;

        if (c->disconnected || c->close_at_flush)
                return -ECONNRESET;
        if (c->peer_gone)
                return 0;       /* nowhere to go: see client_on_io() */

        if (c->out_bytes + b->size > limits.MAX_WRITE_QUEUE_BYTES) {
                if (tag)
                        return -ENOBUFS;
                /* An answer must arrive whatever its size (a list at its cap is far larger than the queue's cap):
                 * the client being served, and any whose queue is still within the cap, get it, and are not read
                 * again until the queue is back under the cap. Only an answer to an earlier request that finds
                 * the queue over the cap, from a client that does not read, is beyond that bound. */
                if (c->out_bytes > limits.MAX_WRITE_QUEUE_BYTES && !(c->manager && c->manager->client_io.serving == c)) {
                        log_warning("Client %" PRIu64 " (pid %d): write queue over %" PRIu64 " bytes, disconnecting.",
                                    c->serial, (int) c->ucred.pid, limits.MAX_WRITE_QUEUE_BYTES);
                        /* Not now: the caller may be walking a list the disconnect would change (a lock's
                         * waiters); the manager's flush closes it. */
                        c->close_after_flush = c->close_at_flush = true;
                        c->close_reason = CLIENT_CLOSE_WRITE_QUEUE;
                        client_read_more_done(c);
                        (void) client_update_io_events(c);
                        client_mark_dirty(c);
                        return -ENOBUFS;
                }
        }

        if (client_queue_grow(c) < 0)
                return -ENOMEM;

        c->out[c->out_head + c->out_n++] = (OutEntry) {
                .buf = shared_buf_ref(b),
                .tag = tag,
                .needs_state = c->manager && manager_output_needs_state(c->manager),
        };
        c->out_bytes += b->size;
        client_mark_dirty(c);
        return 0;
}

int client_send_json(Client *c, struct json_object *o) {
        _cleanup_(shared_buf_unrefp) SharedBuf *b = NULL;

        if (!o)
                return -ENOMEM;
        b = shared_buf_new_json_line(o);
        if (!b)
                return -ENOMEM;
        return client_send(c, b, NULL);
}

int client_reply_result(Client *c, const char *id, bool success, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        o = response_result_new(id, success, data);
        if (!o)
                return -ENOMEM;
        return client_send_json(c, o);
}

int client_reply_limit(Client *c, const char *id, LimitId limit, uint64_t actual) {
        const char *suggestion = NULL;
        char msg[256];

        /* Two statements: the order in which arguments are evaluated is unspecified. */
        limit_error(limit, actual, msg, sizeof(msg), &suggestion);
        return client_reply_error(c, id, msg, suggestion);
}

int client_reply_error(Client *c, const char *id, const char *error, const char *suggestion) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        c->answered_error = true;
        o = response_error_new(id, error, suggestion);
        if (!o)
                return -ENOMEM;
        return client_send_json(c, o);
}

/* The queue is back under its cap: the input kept meanwhile is handled from the read-more source, and the
 * socket read again (input that came while paused raised no edge we would have seen). */
static void client_resume_input(Client *c) {
        if (!c->input_paused || (c->n_awaiting > 0 && !c->peer_gone))
                return;
        c->input_paused = false;
        (void) client_update_io_events(c);
        client_read_more(c);
}

int client_flush(Client *c) {
        bool held;

        assert(c);
        held = c->manager && manager_state_unsaved(c->manager);

        while (c->out_n > 0) {
                struct iovec iov[IOV_MAX];
                size_t n = MIN(c->out_n, (size_t) IOV_MAX);
                ssize_t w;

                /* The client's output stays in order: what follows an entry that waits for the state waits too. */
                if (held) {
                        size_t k = 0;

                        while (k < n && !c->out[c->out_head + k].needs_state)
                                k++;
                        if (k == 0)
                                break;
                        n = k;
                }

                for (size_t i = 0; i < n; i++) {
                        OutEntry *e = &c->out[c->out_head + i];
                        iov[i] = (struct iovec) {
                                .iov_base = e->buf->data + e->offset,
                                .iov_len = e->buf->size - e->offset,
                        };
                }

                w = writev(c->fd, iov, (int) n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                if (c->out_bytes <= limits.MAX_WRITE_QUEUE_BYTES)
                                        client_resume_input(c);
                                if (!c->want_pollout) {
                                        c->want_pollout = true;
                                        (void) client_update_io_events(c);
                                }
                                return 0;
                        }
                        return -errno;
                }

                c->out_bytes -= w;
                while (w > 0) {
                        OutEntry *e = &c->out[c->out_head];
                        size_t left = e->buf->size - e->offset;

                        if ((size_t) w < left) {
                                e->offset += w;
                                break;
                        }
                        w -= left;
                        shared_buf_unref(e->buf);
                        c->out_head++;
                        c->out_n--;
                }
        }

        /* Idle connections keep no queue memory. */
        if (c->out_n == 0) {
                c->out = mfree(c->out);
                c->out_head = c->out_alloc = 0;
        }
        if (c->want_pollout || c->input_paused) {
                c->want_pollout = false;
                /* Output held for the state write still counts: the client reads on once it has left. */
                if (c->out_bytes <= limits.MAX_WRITE_QUEUE_BYTES)
                        client_resume_input(c);
                (void) client_update_io_events(c);
        }
        return 0;
}

void client_release_held(Client *c) {
        for (size_t i = 0; i < c->out_n; i++)
                c->out[c->out_head + i].needs_state = false;
        if (c->out_n > 0 && !c->disconnected)
                client_mark_dirty(c);
}

/* A publish to many subscribers so reaches the first of them while the rest are being queued, and each is touched
 * once instead of again by the flush; later pushes of the same batch, or a write that did not take everything,
 * wait for the flush (or EPOLLOUT) as before, which also deals with any error. */
void client_write_now(Client *c) {
        if (c->out_n != 1 || c->want_pollout || c->disconnected || c->close_after_flush || !c->manager)
                return;
        if (client_flush(c) < 0 || c->out_n > 0 || !c->dirty)
                return;
        c->dirty = false;
        LIST_REMOVE(dirty, c->manager->dirty_clients, c);
}

size_t client_drop_tagged(Client *c, ClientDropFunc cb, void *userdata) {
        size_t kept = 0, dropped = 0;

        for (size_t i = 0; i < c->out_n; i++) {
                OutEntry e = c->out[c->out_head + i];

                if (e.tag && e.offset == 0) {
                        bool seen = false;

                        /* Report each tag once: look back over what we dropped before (tags are few per client). */
                        for (size_t j = 0; j < i && !seen; j++)
                                seen = c->out[c->out_head + j].buf == NULL && c->out[c->out_head + j].tag == e.tag;
                        if (!seen && cb)
                                cb(c, e.tag, e.buf, userdata);
                        c->out_bytes -= e.buf->size;
                        shared_buf_unref(e.buf);
                        c->out[c->out_head + i].buf = NULL;
                        dropped++;
                        continue;
                }
                kept++;
        }

        /* Compact the survivors in order. */
        for (size_t i = 0, k = 0; i < c->out_n; i++) {
                OutEntry e = c->out[c->out_head + i];
                if (e.buf)
                        c->out[c->out_head + k++] = e;
        }
        c->out_n = kept;
        return dropped;
}

/* more: input of this client follows the line, in this read or after a full one. */
static int client_handle_line(Client *c, const char *line, size_t len, bool more) {
        int r;

        /* Trim surrounding whitespace (CRLF clients, blank lines). */
        while (len > 0 && strchr(" \t\r\n", line[len - 1]))
                len--;
        while (len > 0 && strchr(" \t\r\n", line[0])) {
                line++;
                len--;
        }
        if (len == 0 || !client_line_handler)
                return 0;
        if (c->manager) {
                c->manager->client_io.input_follows = more;
                c->manager->client_io.serving = c;
        }
        r = client_line_handler(c, line, len);
        if (c->manager) {
                c->manager->client_io.input_follows = false;
                c->manager->client_io.serving = NULL;
        }
        return r;
}

static int client_line_too_long(Client *c) {
        const char *suggestion = NULL;
        char msg[192];

        /* The length is not known: the rest of the line is never read. */
        limit_error(LIMIT_MAX_LINE_BYTES, UINT64_MAX, msg, sizeof(msg), &suggestion);
        /* The answer to the line being read, as any request's (client_send()). */
        if (c->manager)
                c->manager->client_io.serving = c;
        (void) client_reply_error(c, NULL, msg, suggestion);
        if (c->manager)
                c->manager->client_io.serving = NULL;
        c->close_after_flush = true;
        c->close_reason = CLIENT_CLOSE_LINE_TOO_LONG;
        c->rbuf = mfree(c->rbuf);
        c->rbuf_size = c->rbuf_alloc = 0;
        c->rbuf_lines = false;
        return -E2BIG;
}

/* Appends to rbuf; unchecked: for input kept while paused, which holds the lines of one read at most. */
static int client_rbuf_put(Client *c, const char *data, size_t size) {
        if (size == 0)
                return 0;
        if (c->rbuf_size + size > c->rbuf_alloc) {
                size_t na = MAX(c->rbuf_alloc * 2, c->rbuf_size + size);
                char *n = realloc(c->rbuf, na);
                if (!n)
                        return -ENOMEM;
                c->rbuf = n;
                c->rbuf_alloc = na;
        }
        memcpy(c->rbuf + c->rbuf_size, data, size);
        c->rbuf_size += size;
        return 0;
}

static int client_rbuf_append(Client *c, const char *data, size_t size) {
        if (c->rbuf_size + size > limits.MAX_LINE_BYTES)
                return client_line_too_long(c);
        return client_rbuf_put(c, data, size);
}

/* The queue is over its cap: what is left of this read waits, lines and all, until it drains (the caller still
 * holds any older pending input in rbuf, which comes first). */
static int client_pause_input(Client *c, const char *data, size_t size) {
        int r;

        r = client_rbuf_put(c, data, size);
        if (r < 0)
                return r;
        c->rbuf_lines = true;
        c->input_paused = true;
        client_read_more_done(c);
        (void) client_update_io_events(c);
        return 0;
}

/* Also while an earlier request's answer is still to come (client_await_begin()): input waits as it does for a
 * full queue. */
static bool client_queue_full(Client *c) {
        return c->out_bytes > limits.MAX_WRITE_QUEUE_BYTES || (c->n_awaiting > 0 && !c->peer_gone);
}

void client_await_begin(Client *c) {
        c->n_awaiting++;
}

void client_await_end(Client *c) {
        assert(c->n_awaiting > 0);
        if (--c->n_awaiting > 0 || c->disconnected)
                return;
        if (c->out_bytes <= limits.MAX_WRITE_QUEUE_BYTES)
                client_resume_input(c);
}

static bool client_stopped(Client *c) {
        return c->disconnected || c->close_after_flush;
}

/* more_waiting: the socket may hold more input than data (a full read). */
static int client_feed_read(Client *c, const char *data, size_t size, bool more_waiting) {
        const char *nl;
        int r;

        if (client_stopped(c))
                return 0;
        /* Not read while paused; kept in order all the same, should a caller feed it. */
        if (c->input_paused)
                return client_pause_input(c, data, size);

        /* Input kept while paused comes first: feed it as if just read, then what came now. */
        if (c->rbuf_lines) {
                _cleanup_free_ char *kept = TAKE_PTR(c->rbuf);
                size_t kept_size = c->rbuf_size;

                c->rbuf_size = c->rbuf_alloc = 0;
                c->rbuf_lines = false;
                r = client_feed_read(c, kept, kept_size, true);
                if (r < 0)
                        return r;
                if (client_stopped(c))
                        return 0;
                if (c->input_paused)
                        return client_pause_input(c, data, size);
        }
        if (size == 0)
                return 0;

        if (c->rbuf_size > 0 && client_queue_full(c))
                return client_pause_input(c, data, size);

        if (c->rbuf_size > 0) {
                nl = memchr(data, '\n', size);
                if (!nl)
                        return client_rbuf_append(c, data, size);

                r = client_rbuf_append(c, data, nl - data);
                if (r < 0)
                        return r;
                r = client_handle_line(c, c->rbuf, c->rbuf_size, more_waiting || (size_t) (nl + 1 - data) < size);
                /* The line is consumed; free the buffer so an idle client holds none. */
                c->rbuf = mfree(c->rbuf);
                c->rbuf_size = c->rbuf_alloc = 0;
                if (r == -ENOMEM)
                        return r;
                size -= nl + 1 - data;
                data = nl + 1;
        }

        while (size > 0 && !client_stopped(c)) {
                nl = memchr(data, '\n', size);
                if (!nl)
                        return client_rbuf_append(c, data, size);
                if (client_queue_full(c))
                        return client_pause_input(c, data, size);
                /* A line that came whole in one read never was pending: the cap applies here too. */
                if ((size_t) (nl - data) > limits.MAX_LINE_BYTES)
                        return client_line_too_long(c);

                r = client_handle_line(c, data, nl - data, more_waiting || (size_t) (nl + 1 - data) < size);
                if (r == -ENOMEM)
                        return r;
                size -= nl + 1 - data;
                data = nl + 1;
        }

        return 0;
}

int client_feed(Client *c, const char *data, size_t size) {
        return client_feed_read(c, data, size, false);
}

/* ---- the channels' Subscriber ---- */

static Client* client_from_subscriber(Subscriber *s) {
        return (Client*) ((uint8_t*) s - offsetof(Client, subscriber));
}

static int subscriber_send(Subscriber *s, SharedBuf *b, const void *tag) {
        return client_send(client_from_subscriber(s), b, tag);
}

typedef struct DropAdapter {
        SubscriberDropFunc cb;
        void *userdata;
} DropAdapter;

static void on_drop(Client *c, const void *tag, SharedBuf *first, void *userdata) {
        DropAdapter *a = userdata;

        a->cb(&c->subscriber, tag, first, a->userdata);
}

static size_t subscriber_drop_tagged(Subscriber *s, SubscriberDropFunc cb, void *userdata) {
        return client_drop_tagged(client_from_subscriber(s), cb ? on_drop : NULL, &(DropAdapter) { cb, userdata });
}

static void subscriber_write_now(Subscriber *s) {
        client_write_now(client_from_subscriber(s));
}

static size_t subscriber_queued_bytes(Subscriber *s) {
        return client_from_subscriber(s)->out_bytes;
}

static void subscriber_close_slow(Subscriber *s) {
        Client *c = client_from_subscriber(s);

        if (c->disconnected)
                return;
        log_warning("Client %" PRIu64 " (pid %d) is not reading its channel messages, disconnecting.",
                    c->serial, (int) c->ucred.pid);
        if (c->manager)
                manager_client_close(c->manager, c, CLIENT_CLOSE_SLOW_CONSUMER);
        else
                c->disconnected = true;         /* unit tests: the channels drop its subscriptions */
}

const SubscriberOps client_subscriber_ops = {
        .send = subscriber_send,
        .drop_tagged = subscriber_drop_tagged,
        .write_now = subscriber_write_now,
        .queued_bytes = subscriber_queued_bytes,
        .close_slow = subscriber_close_slow,
};
