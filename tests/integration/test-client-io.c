/* SPDX-License-Identifier: MIT */

/* Connection I/O against a real photond: the end of a client's input (half-close, close) wherever it falls
 * relative to the 16 KiB reads, the line cap inside one read, answers larger than the write-queue cap, and the
 * status counters of every reason photond closes a connection. */

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "macro.h"

/* A ping padded to about size bytes, with its newline unless told otherwise. */
static char* padded_ping(const char *id, size_t size, bool newline, size_t *ret_len) {
        char *s;
        int n;

        n = asprintf(&s, "{\"type\":\"ping\",\"id\":\"%s\",\"pad\":\"%*s\"}%s", id, (int) size, "",
                     newline ? "\n" : "");
        cr_assert(n > 0);
        *ret_len = n;
        return s;
}

static struct json_object* status(Conn *c) {
        return conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");
}

/* Closes race with our status requests: they must all be processed within a deadline. */
static void expect_clients(Conn *c, int64_t n) {
        uint64_t deadline = mono_ms() + 5000;

        for (;;) {
                struct json_object *o = status(c);
                int64_t have = jint(o, "data.clients");

                json_object_put(o);
                if (have == n)
                        return;
                cr_assert(mono_ms() < deadline, "status.clients stays %lld, expected %lld", (long long) have,
                          (long long) n);
        }
}

static int64_t closed_count(Conn *c, const char *reason) {
        char path[64];
        struct json_object *o = status(c);
        int64_t n;

        snprintf(path, sizeof(path), "data.clientsClosed.%s", reason);
        cr_assert(jhas(o, path), "status has no %s", path);
        n = jint(o, path);
        json_object_put(o);
        return n;
}

/* Waits (5 s at most) until at least n connections were closed for reason. */
static void expect_closed(Conn *c, const char *reason, int64_t n) {
        uint64_t deadline = mono_ms() + 5000;
        int64_t have;

        while ((have = closed_count(c, reason)) < n)
                cr_assert(mono_ms() < deadline, "clientsClosed.%s stays %lld, expected %lld", reason,
                          (long long) have, (long long) n);
}

/* Every complete request of a client that shuts down its sending side is answered, then the connection closes,
 * wherever the end of input falls relative to the 16 KiB reads. */
Test(client_io, half_close_after_requests_of_any_size_answers_then_closes) {
        static const size_t sizes[] = { 100, 16 * 1024 - 60, 16 * 1024, 20 * 1024, 40 * 1024, 100 * 1024 };
        Daemon *d = daemon_start(NULL);
        Conn *watch = conn_open(d);

        for (size_t k = 0; k < ELEMENTSOF(sizes); k++)
                for (int i = 0; i < 10; i++) {
                        Conn *c = conn_open(d);
                        size_t len;
                        char *s = padded_ping("p", sizes[k], true, &len);
                        struct json_object *o;

                        conn_send_raw(c, s, len);
                        /* and a second one in the same stream, so the end may come with either */
                        conn_send_raw(c, s, len);
                        free(s);
                        cr_assert_eq(shutdown(c->fd, SHUT_WR), 0);
                        for (int j = 0; j < 2; j++) {
                                o = conn_recv(c, 5000);
                                cr_assert(o, "request %d of %zu bytes (round %d) got no answer", j, sizes[k], i);
                                cr_assert_str_eq(jstr(o, "type"), "pong");
                                json_object_put(o);
                        }
                        cr_assert(conn_wait_eof(c, 5000), "not closed after a %zu-byte request (round %d)",
                                  sizes[k], i);
                        conn_close(c);
                }

        expect_clients(watch, 1);
        cr_assert_geq(closed_count(watch, "peer"), 60);
        conn_close(watch);
        daemon_free(d);
}

/* A last line without its newline is no request (as in the reference, which splits on '\n'): dropped, and the
 * connection closes. */
Test(client_io, half_close_after_a_line_without_newline_closes) {
        static const size_t sizes[] = { 50, 20 * 1024, 40 * 1024 };
        Daemon *d = daemon_start(NULL);
        Conn *watch = conn_open(d);

        for (size_t k = 0; k < ELEMENTSOF(sizes); k++)
                for (int i = 0; i < 10; i++) {
                        Conn *c = conn_open(d);
                        size_t len;
                        char *s = padded_ping("answered", 10, true, &len);
                        struct json_object *o;

                        conn_send_raw(c, s, len);
                        free(s);
                        s = padded_ping("dropped", sizes[k], false, &len);
                        conn_send_raw(c, s, len);
                        free(s);
                        cr_assert_eq(shutdown(c->fd, SHUT_WR), 0);

                        o = conn_expect(c, 5000);
                        cr_assert_str_eq(jstr(o, "id"), "answered");
                        json_object_put(o);
                        cr_assert_null(conn_recv(c, 5000), "the line without newline is not answered");
                        cr_assert(conn_wait_eof(c, 5000));
                        conn_close(c);
                }

        expect_clients(watch, 1);
        conn_close(watch);
        daemon_free(d);
}

/* Clients that write more than one read's worth and close while photond does not look (stopped): the data and
 * the hang-up are one edge, the hang-up must not be lost in the second read. */
Test(client_io, clients_that_write_much_and_close_leave_no_slot) {
        Daemon *d = daemon_start(NULL);
        Conn *watch = conn_open(d);
        enum { N = 50 };

        expect_clients(watch, 1);
        for (int variant = 0; variant < 2; variant++) {
                cr_assert_eq(kill(d->pid, SIGSTOP), 0);
                for (int i = 0; i < N; i++) {
                        Conn *c = conn_open(d);
                        size_t len;
                        /* no newline: a request nobody answers, so no failed write gives the close away */
                        char *s = padded_ping("x", variant == 0 ? 20 * 1024 : 40 * 1024, false, &len);

                        conn_send_raw(c, s, len);
                        free(s);
                        conn_close(c);
                }
                cr_assert_eq(kill(d->pid, SIGCONT), 0);
                /* The connections may still wait in the listen backlog when the first status is answered: count
                 * them closed first, then see that none is left. */
                expect_closed(watch, "peer", (variant + 1) * N);
                expect_clients(watch, 1);
        }
        cr_assert_eq(closed_count(watch, "peer"), 2 * N);
        conn_close(watch);
        daemon_free(d);
}

/* PHOTOND_MAX_LINE_BYTES below one read: a line that arrives whole is checked too. */
Test(client_io, small_max_line_bytes_holds_inside_one_read) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_LINE_BYTES=200", NULL } });
        Conn *c = conn_open(d), *watch = conn_open(d);
        struct json_object *o;
        size_t l1, l2;
        char *ok = padded_ping("ok", 100, true, &l1), *big = padded_ping("big", 300, true, &l2);
        char buf[1024];

        cr_assert_lt(l1, 200u);
        memcpy(buf, ok, l1);
        memcpy(buf + l1, big, l2);
        conn_send_raw(c, buf, l1 + l2);         /* one write: one read */
        free(ok);
        free(big);

        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "id"), "ok");
        json_object_put(o);
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert(strstr(jstr(o, "error"), "request line too long: at most 200 bytes (PHOTOND_MAX_LINE_BYTES)"), "%s", jstr(o, "error"));
        json_object_put(o);
        cr_assert(conn_wait_eof(c, 5000));

        expect_clients(watch, 1);
        cr_assert_eq(closed_count(watch, "lineTooLong"), 1);
        conn_close(c);
        conn_close(watch);
        daemon_free(d);
}

/* n locks whose holders are 1000 bytes long, taken over one connection. */
static void take_locks(Conn *c, int n) {
        char holder[1001];

        memset(holder, 'h', 1000);
        holder[1000] = '\0';
        for (int i = 0; i < n; i++) {
                char id[32];
                struct json_object *o;

                snprintf(id, sizeof(id), "l%d", i);
                o = conn_request(c, id, "{\"type\":\"lock\",\"id\":\"%s\",\"lockName\":\"lock-%06d\","
                                 "\"sessionId\":\"%s-%d\",\"lockTimeout\":600000}", id, i, holder, i);
                cr_assert(jbool(o, "data.acquired"), "lock %d", i);
                json_object_put(o);
        }
}

/* A list at its cap is far larger than the write-queue cap: it arrives whole, also several pipelined, and the
 * client that asked is not disconnected. Caps are lowered so the test stays quick: 500 locks of 1 KiB holders
 * against a 64 KiB write queue. */
Test(client_io, list_at_its_cap_arrives_whole_beyond_the_write_queue_cap) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_LOCKS=500", "PHOTOND_MAX_WRITE_QUEUE_BYTES=65536", NULL } });
        Conn *c = conn_open(d), *watch = conn_open(d);
        struct json_object *o;
        enum { PIPELINED = 5 };

        take_locks(c, 500);
        o = conn_request(c, "over", "{\"type\":\"lock\",\"id\":\"over\",\"lockName\":\"one-too-many\"}");
        cr_assert_str_eq(jstr(o, "type"), "error", "the cap is 500 locks");
        json_object_put(o);

        for (int i = 0; i < PIPELINED; i++)
                conn_send(c, "{\"type\":\"list_locks\",\"id\":\"list%d\"}", i);
        conn_send(c, "{\"type\":\"ping\",\"id\":\"after\"}");
        for (int i = 0; i < PIPELINED; i++) {
                char id[32];

                snprintf(id, sizeof(id), "list%d", i);
                o = conn_expect(c, 10000);
                cr_assert_str_eq(jstr(o, "id"), id);
                cr_assert_eq(json_object_array_length(jget(o, "data.locks")), 500);
                cr_assert_gt(strlen(json_object_to_json_string(o)), 500u * 1000u);
                json_object_put(o);
        }
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "id"), "after", "requests after the lists are answered, in order");
        json_object_put(o);

        cr_assert_eq(closed_count(watch, "writeQueue"), 0);
        o = status(watch);
        cr_assert_eq(jint(o, "data.writeQueueDisconnects"), 0);
        cr_assert_eq(jint(o, "data.clients"), 2);
        json_object_put(o);
        conn_close(c);
        conn_close(watch);
        daemon_free(d);
}

/* A client that asks for lists and never reads is not read either once its queue is over the cap: photond keeps
 * at most the cap plus one answer for it, serves everyone else, and answers the rest once it reads. */
Test(client_io, client_that_never_reads_pins_one_answer_beyond_the_cap) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_WRITE_QUEUE_BYTES=65536", NULL } });
        Conn *c = conn_open(d), *watch = conn_open(d);
        struct json_object *o;
        int64_t mem_before, mem_after;
        enum { N = 40 };

        take_locks(c, 2000);            /* list_locks: about 2.3 MB */
        o = status(watch);
        mem_before = jint(o, "data.memoryMB");
        json_object_put(o);

        for (int i = 0; i < N; i++)
                conn_send(c, "{\"type\":\"list_locks\",\"id\":\"list%d\"}", i);
        /* Everyone else is served meanwhile, and the lists did not pile up: 40 of them would be 90 MB. */
        o = conn_request(watch, "st", "{\"type\":\"status\",\"id\":\"st\"}");
        mem_after = jint(o, "data.memoryMB");
        json_object_put(o);
        cr_assert_lt(mem_after - mem_before, 30, "photond grew from %lld to %lld MiB", (long long) mem_before,
                     (long long) mem_after);

        for (int i = 0; i < N; i++) {
                char id[32];

                snprintf(id, sizeof(id), "list%d", i);
                o = conn_expect(c, 10000);
                cr_assert_str_eq(jstr(o, "id"), id);
                cr_assert_eq(json_object_array_length(jget(o, "data.locks")), 2000);
                json_object_put(o);
        }
        cr_assert_eq(closed_count(watch, "writeQueue"), 0);
        conn_close(c);
        conn_close(watch);
        daemon_free(d);
}

/* An answer to an earlier request (a lock wait's grant) that finds its client's queue over the cap, because the
 * client does not read, disconnects it; that is counted in both status fields. */
Test(client_io, write_queue_disconnect_is_counted) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_WRITE_QUEUE_BYTES=65536", NULL } });
        Conn *holder = conn_open(d), *waiter = conn_open(d), *watch = conn_open(d);
        struct json_object *o;

        take_locks(holder, 1000);
        o = conn_request(holder, "x", "{\"type\":\"lock\",\"id\":\"x\",\"lockName\":\"x\",\"sessionId\":\"a\"}");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);

        conn_send(waiter, "{\"type\":\"lock\",\"id\":\"w\",\"lockName\":\"x\",\"sessionId\":\"b\",\"lockWait\":30000}");
        conn_send(waiter, "{\"type\":\"list_locks\",\"id\":\"big\"}");
        /* Both requests are handled once status counts the wait and the list has left photond's hands. */
        uint64_t deadline = mono_ms() + 5000;
        for (;;) {
                o = status(watch);
                int64_t waiters = jint(o, "data.lockWaiters");
                json_object_put(o);
                if (waiters == 1)
                        break;
                cr_assert(mono_ms() < deadline, "the lock wait was not parked");
        }
        conn_send(watch, "{\"type\":\"ping\",\"id\":\"sync\"}");  /* the list was handled before this */
        o = conn_request(watch, "sync2", "{\"type\":\"ping\",\"id\":\"sync2\"}");
        json_object_put(o);

        o = conn_request(holder, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"x\",\"lockHolder\":\"a\"}");
        cr_assert(jbool(o, "data.released"));
        json_object_put(o);

        o = status(watch);
        cr_assert_eq(jint(o, "data.writeQueueDisconnects"), 1);
        cr_assert_eq(jint(o, "data.clientsClosed.writeQueue"), 1);
        json_object_put(o);
        conn_close(holder);
        conn_close(waiter);
        conn_close(watch);
        daemon_free(d);
}

/* How many times text occurs in photond's log. */
static unsigned log_count(Daemon *d, const char *text) {
        _cleanup_free_ char *log = NULL;
        size_t size = 0;
        unsigned n = 0;
        FILE *f = fopen(d->log_path, "re");

        cr_assert(f, "%s: %m", d->log_path);
        cr_assert(getdelim(&log, &size, '\0', f) >= 0 || feof(f));
        fclose(f);
        for (const char *p = log ?: ""; (p = strstr(p, text)); p += strlen(text))
                n++;
        return n;
}

/* A connection refused at MAX_CLIENTS is counted too. */
Test(client_io, refused_connections_are_counted) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_CLIENTS=2", NULL } });
        Conn *a = conn_open(d), *b = conn_open(d), *c;
        struct json_object *o;

        expect_clients(a, 2);
        c = conn_open(d);
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "error"), "Too many clients connected: at most 2 (PHOTOND_MAX_CLIENTS)");
        cr_assert_str_eq(jstr(o, "suggestion"), "Retry when other clients have disconnected, or raise PHOTOND_MAX_CLIENTS");
        json_object_put(o);
        cr_assert(conn_wait_eof(c, 5000));
        cr_assert_eq(closed_count(a, "refused"), 1);
        conn_close(c);

        /* A storm of them is counted whole, but logged only a few times per 10 s. */
        for (int i = 0; i < 20; i++) {
                c = conn_open(d);
                cr_assert(conn_wait_eof(c, 5000));
                conn_close(c);
        }
        cr_assert_eq(closed_count(a, "refused"), 21);
        cr_assert_leq(log_count(d, "Refusing a connection"), 5, "the refusals flood the log");
        conn_close(a);
        conn_close(b);
        daemon_free(d);
}

/* A sessionId is kept per connection (status "sessions", ps): one longer than MAX_LOCK_HOLDER_BYTES is not, or
 * every connection could pin up to a line's worth for good, and ps list it. */
Test(client_io, over_long_session_id_is_not_kept) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_LOCK_HOLDER_BYTES=64", NULL } });
        Conn *c = conn_open(d), *watch = conn_open(d);
        struct json_object *o;
        char long_id[101];

        memset(long_id, 's', 100);
        long_id[100] = '\0';
        o = conn_request(c, "a", "{\"type\":\"ping\",\"id\":\"a\",\"sessionId\":\"short\"}");
        json_object_put(o);
        o = status(watch);
        cr_assert_eq(jint(o, "data.sessions"), 1);
        json_object_put(o);

        /* Through the parser and through the lock fast path. */
        o = conn_request(c, "b", "{\"type\":\"ping\",\"id\":\"b\",\"sessionId\":\"%s\"}", long_id);
        json_object_put(o);
        o = status(watch);
        cr_assert_eq(jint(o, "data.sessions"), 0, "a sessionId of 100 bytes was kept");
        json_object_put(o);
        o = conn_request(c, "c", "{\"type\":\"lock\",\"id\":\"c\",\"lockName\":\"n\",\"sessionId\":\"%s\"}", long_id);
        json_object_put(o);
        o = conn_request(watch, "ps", "{\"type\":\"ps\",\"id\":\"ps\"}");
        cr_assert_null(strstr(json_object_to_json_string(o), long_id), "ps lists the long sessionId");
        json_object_put(o);
        o = status(watch);
        cr_assert_eq(jint(o, "data.sessions"), 0);
        json_object_put(o);

        conn_close(c);
        conn_close(watch);
        daemon_free(d);
}

/* The slow-consumer policy's disconnects are counted with every other close. */
Test(client_io, slow_consumer_disconnect_is_counted) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "PHOTOND_MAX_WRITE_QUEUE_BYTES=65536", NULL } });
        Conn *pub = conn_open(d), *slow = conn_open(d);
        struct json_object *o;
        char pad[1001];

        memset(pad, 'x', 1000);
        pad[1000] = '\0';
        o = conn_request(slow, "sub", "{\"type\":\"subscribe\",\"id\":\"sub\",\"channel\":\"load\"}");
        json_object_put(o);

        /* 1 MB for a subscriber that never reads: its socket buffer, then its queue, overflow twice. */
        for (int i = 0; i < 1000; i += 50) {
                for (int k = i; k < i + 50; k++)
                        conn_send(pub, "{\"type\":\"publish\",\"id\":\"p%d\",\"channel\":\"load\",\"message\":"
                                  "{\"n\":%d,\"pad\":\"%s\"}}", k, k, pad);
                for (int k = i; k < i + 50; k++)
                        json_object_put(conn_expect(pub, 5000));
        }

        expect_clients(pub, 1);
        o = status(pub);
        cr_assert_eq(jint(o, "data.slowConsumerDisconnects"), 1);
        cr_assert_eq(jint(o, "data.clientsClosed.slowConsumer"), 1);
        cr_assert_eq(jint(o, "data.clientsClosed.writeQueue"), 0);
        json_object_put(o);
        conn_close(pub);
        conn_close(slow);
        daemon_free(d);
}

/* A client that writes much and closes at once (no half-close) still has every request handled: its publishes
 * reach the subscribers although nobody reads their answers. photond is stopped meanwhile, so the close is
 * already there when it reads the first 16 KiB. */
Test(client_io, requests_of_a_client_that_closed_are_still_handled) {
        Daemon *d = daemon_start(NULL);
        Conn *sub = conn_open(d), *pub;
        struct json_object *o;
        char pad[1001];
        enum { N = 60 };        /* 60 KiB: four reads */

        memset(pad, 'x', 1000);
        pad[1000] = '\0';
        o = conn_request(sub, "sub", "{\"type\":\"subscribe\",\"id\":\"sub\",\"channel\":\"fire\"}");
        json_object_put(o);

        cr_assert_eq(kill(d->pid, SIGSTOP), 0);
        pub = conn_open(d);
        for (int i = 0; i < N; i++)
                conn_send(pub, "{\"type\":\"publish\",\"id\":\"p%d\",\"channel\":\"fire\",\"message\":"
                          "{\"n\":%d,\"pad\":\"%s\"}}", i, i, pad);
        conn_close(pub);
        cr_assert_eq(kill(d->pid, SIGCONT), 0);

        for (int i = 0; i < N; i++) {
                o = conn_recv(sub, 5000);
                cr_assert(o, "message %d of %d did not arrive", i, N);
                cr_assert_eq(jint(o, "message.n"), i);
                json_object_put(o);
        }
        expect_clients(sub, 1);
        cr_assert_eq(closed_count(sub, "writeError"), 0);
        conn_close(sub);
        daemon_free(d);
}

/* An answer still being worked on when the client shuts down its side (a lock wait) arrives before the close. */
Test(client_io, half_close_waits_for_an_answer_still_to_come) {
        Daemon *d = daemon_start(NULL);
        Conn *holder = conn_open(d), *waiter = conn_open(d);
        struct json_object *o;

        o = conn_request(holder, "a", "{\"type\":\"lock\",\"id\":\"a\",\"lockName\":\"x\",\"sessionId\":\"a\"}");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);

        conn_send(waiter, "{\"type\":\"lock\",\"id\":\"w\",\"lockName\":\"x\",\"sessionId\":\"b\",\"lockWait\":10000}");
        cr_assert_eq(shutdown(waiter->fd, SHUT_WR), 0);
        /* The wait is parked: status counts the waiter. */
        uint64_t deadline = mono_ms() + 5000;
        for (;;) {
                o = status(holder);
                int64_t waiters = jint(o, "data.lockWaiters");
                json_object_put(o);
                if (waiters == 1)
                        break;
                cr_assert(mono_ms() < deadline, "the lock wait was not parked");
        }

        o = conn_request(holder, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"x\",\"lockHolder\":\"a\"}");
        cr_assert(jbool(o, "data.released"));
        json_object_put(o);
        o = conn_expect(waiter, 5000);
        cr_assert_str_eq(jstr(o, "id"), "w");
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        cr_assert(conn_wait_eof(waiter, 5000), "closed once the last answer went out");
        conn_close(holder);
        conn_close(waiter);
        daemon_free(d);
}

/* A client that half-closes with a lock wait parked, then closes entirely: it is noticed at once, its wait leaves
 * the queue, and the lock goes to the next live waiter, not to the departed client for its lockTimeout. */
Test(client_io, half_closed_waiter_that_leaves_gives_up_its_place) {
        Daemon *d = daemon_start(NULL);
        Conn *holder = conn_open(d), *gone = conn_open(d), *next = conn_open(d);
        struct json_object *o;
        uint64_t deadline;

        o = conn_request(holder, "a", "{\"type\":\"lock\",\"id\":\"a\",\"lockName\":\"y\",\"sessionId\":\"a\","
                         "\"lockTimeout\":60000}");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);

        conn_send(gone, "{\"type\":\"lock\",\"id\":\"b\",\"lockName\":\"y\",\"sessionId\":\"b\","
                  "\"lockWait\":60000,\"lockTimeout\":30000}");
        cr_assert_eq(shutdown(gone->fd, SHUT_WR), 0);
        for (deadline = mono_ms() + 5000;;) {
                o = status(holder);
                int64_t waiters = jint(o, "data.lockWaiters");
                json_object_put(o);
                if (waiters == 1)
                        break;
                cr_assert(mono_ms() < deadline, "the lock wait was not parked");
        }
        conn_send(next, "{\"type\":\"lock\",\"id\":\"c\",\"lockName\":\"y\",\"sessionId\":\"c\",\"lockWait\":60000}");
        close(gone->fd);
        gone->fd = -1;

        /* The departed waiter is dropped: only the live one is left, and one client fewer. */
        for (deadline = mono_ms() + 5000;;) {
                o = status(holder);
                int64_t waiters = jint(o, "data.lockWaiters"), clients = jint(o, "data.clients");
                json_object_put(o);
                if (waiters == 1 && clients == 2)
                        break;
                cr_assert(mono_ms() < deadline, "the half-closed client that left is still there (%" PRIi64
                          " waiters, %" PRIi64 " clients)", waiters, clients);
        }
        cr_assert_eq(closed_count(holder, "peer"), 1);

        o = conn_request(holder, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"y\",\"lockHolder\":\"a\"}");
        cr_assert(jbool(o, "data.released"));
        json_object_put(o);
        o = conn_expect(next, 5000);
        cr_assert_str_eq(jstr(o, "id"), "c");
        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(holder);
        conn_close(gone);
        conn_close(next);
        daemon_free(d);
}
