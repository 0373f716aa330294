/* SPDX-License-Identifier: MIT */

/* Connections kept across a restart (photond-fdstore.c): the state's format written and read back, what a reader
 * refuses, the caps; then a Manager with clients in every state kept through a fake systemd (a NOTIFY_SOCKET that
 * receives the fds, tests/helpers.c) and taken over by a fresh Manager, whose peers then read every line once, in
 * order. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd-util.h"
#include "helpers.h"
#include "json-util.h"
#include "photond-channel.h"
#include "photond-client.h"
#include "photond-dispatch.h"
#include "photond-fdstore.h"
#include "photond-limits.h"
#include "photond-manager.h"

static SharedBuf* buf(const char *s) {
        SharedBuf *b = shared_buf_new(s, strlen(s));

        cr_assert(b);
        return b;
}

static bool bytes_eq(FdStoreBytes b, const char *s) {
        return b.size == strlen(s) && memcmp(b.data, s, b.size) == 0;
}

/* A state of two clients that share a line, with every kind of field. */
static void write_example(FdStoreWriter *w, SharedBuf *shared, SharedBuf *own, const void *tag_a,
                          const void *tag_b) {
        cr_assert_eq(fdstore_writer_set_call_serial(w, 42), 0);

        cr_assert_eq(fdstore_writer_begin_client(w, 7, 100, "sess-1"), 0);
        cr_assert_eq(fdstore_writer_add_subscription(w, "news", 4), 0);
        cr_assert_eq(fdstore_writer_add_subscription(w, "a\0b", 3), 0);     /* a channel key may hold a NUL */
        cr_assert_eq(fdstore_writer_add_provides(w, "kanban"), 0);
        cr_assert_eq(fdstore_writer_add_output(w, own, 3, NULL), 0);
        cr_assert_eq(fdstore_writer_add_output(w, shared, 0, tag_a), 0);
        cr_assert_eq(fdstore_writer_add_output(w, shared, 0, tag_b), 0);
        cr_assert_eq(fdstore_writer_add_output(w, own, 0, tag_a), 0);
        cr_assert_eq(fdstore_writer_add_in_flight(w, "cmd-1"), 0);
        cr_assert_eq(fdstore_writer_set_input(w, "{\"id\":\"x\"", 9), 0);
        cr_assert_eq(fdstore_writer_end_client(w), 0);

        cr_assert_eq(fdstore_writer_begin_client(w, 7, 101, NULL), 0);
        cr_assert_eq(fdstore_writer_add_output(w, shared, 5, tag_b), 0);
        cr_assert_eq(fdstore_writer_end_client(w), 0);
}

Test(fdstore_format, round_trip) {
        _cleanup_(fdstore_writer_freep) FdStoreWriter *w = NULL;
        _cleanup_(fdstore_state_done) FdStoreState s = {};
        SharedBuf *shared = buf("{\"type\":\"channel_message\"}\n"), *own = buf("{\"type\":\"result\"}\n");
        int tag_a, tag_b;
        const char *data;
        size_t size;

        cr_assert_eq(fdstore_writer_new(UINT64_MAX, &w), 0);
        write_example(w, shared, own, &tag_a, &tag_b);
        cr_assert_eq(fdstore_writer_n_clients(w), 2);
        cr_assert_eq(fdstore_writer_finish(w, &data, &size), 0);

        cr_assert_eq(fdstore_state_parse(data, size, &s), 0);
        cr_assert_eq(s.call_serial, 42);
        cr_assert_eq(s.n_buffers, 2, "a line queued to several clients, or twice, is written once");
        cr_assert_eq(s.n_clients, 2);

        const FdStoreClient *a = &s.clients[0], *b = &s.clients[1];
        cr_assert_eq(a->dev, 7);
        cr_assert_eq(a->ino, 100);
        cr_assert(a->has_session_id && bytes_eq(a->session_id, "sess-1"));
        cr_assert_eq(a->n_subscriptions, 2);
        cr_assert(bytes_eq(a->subscriptions[0], "news"));
        cr_assert(a->subscriptions[1].size == 3 && memcmp(a->subscriptions[1].data, "a\0b", 3) == 0);
        cr_assert_eq(a->n_provides, 1);
        cr_assert(bytes_eq(a->provides[0], "kanban"));
        cr_assert_eq(a->n_in_flight, 1);
        cr_assert(bytes_eq(a->in_flight[0], "cmd-1"));
        cr_assert(bytes_eq(a->input, "{\"id\":\"x\""));

        cr_assert_eq(a->n_output, 4);
        cr_assert(bytes_eq(s.buffers[a->output[0].buffer], own->data));
        cr_assert_eq(a->output[0].offset, 3);
        cr_assert_eq(a->output[0].tag, 0);
        cr_assert(bytes_eq(s.buffers[a->output[1].buffer], shared->data));
        cr_assert_eq(a->output[1].buffer, a->output[2].buffer);
        cr_assert(a->output[1].tag > 0 && a->output[2].tag > 0 && a->output[1].tag != a->output[2].tag,
                  "one number per channel");
        cr_assert_eq(a->output[3].tag, a->output[1].tag);

        cr_assert_eq(b->ino, 101);
        cr_assert(!b->has_session_id);
        cr_assert_eq(b->n_subscriptions + b->n_provides + b->n_in_flight + b->input.size, 0);
        cr_assert_eq(b->n_output, 1);
        cr_assert_eq(b->output[0].buffer, a->output[1].buffer);
        cr_assert_eq(b->output[0].offset, 5);

        shared_buf_unref(shared);
        shared_buf_unref(own);
}

Test(fdstore_format, memfd_sealed) {
        _cleanup_(fdstore_writer_freep) FdStoreWriter *w = NULL;
        _cleanup_free_ char *back = NULL;
        const char *data;
        size_t size, back_size;
        int fd, plain;

        cr_assert_eq(fdstore_writer_new(UINT64_MAX, &w), 0);
        cr_assert_eq(fdstore_writer_finish(w, &data, &size), 0);
        cr_assert_eq(fdstore_memfd_new(data, size, &fd), 0);
        cr_assert_eq(fcntl(fd, F_GET_SEALS) & (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL),
                     F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
        cr_assert_lt(write(fd, "x", 1), 0, "sealed against writing");

        cr_assert_eq(fdstore_state_read_fd(fd, size, &back, &back_size), 0);
        cr_assert_eq(back_size, size);
        cr_assert_eq(memcmp(back, data, size), 0);
        cr_assert_eq(fdstore_state_read_fd(fd, size - 1, &back, &back_size), -EFBIG);
        close(fd);

        /* Not sealed: the start does not trust it. */
        plain = memfd_create("plain", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        cr_assert(plain >= 0);
        cr_assert_eq(write(plain, data, size), (ssize_t) size);
        cr_assert_eq(fdstore_state_read_fd(plain, UINT64_MAX, &back, &back_size), -EPERM);
        close(plain);
}

/* A copy of the example with its END record replaced: the bytes before END, then extra, then a fresh END. */
static char* rewrite(const char *data, size_t size, const void *extra, size_t extra_size, size_t *ret_size) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        size_t body = size - 16, n = body + extra_size + 16;
        char *p = malloc(n);
        uint32_t v;

        cr_assert(p);
        memcpy(p, data, body);
        memcpy(p + body, extra, extra_size);
        for (size_t i = 0; i < body + extra_size; i++) {
                h ^= (uint8_t) p[i];
                h *= UINT64_C(0x100000001b3);
        }
        v = htole32(3);
        memcpy(p + body + extra_size, &v, 4);
        v = htole32(8);
        memcpy(p + body + extra_size + 4, &v, 4);
        h = htole64(h);
        memcpy(p + body + extra_size + 8, &h, 8);
        *ret_size = n;
        return p;
}

Test(fdstore_format, refuses_damage_and_other_versions) {
        _cleanup_(fdstore_writer_freep) FdStoreWriter *w = NULL;
        SharedBuf *shared = buf("{\"x\":1}\n"), *own = buf("{\"y\":2}\n");
        const uint8_t optional[] = { 0x99, 0, 0, 0, 2, 0, 0, 0, 'h', 'i' };
        const uint8_t must[] = { 0x99, 0, 0, 0x80, 0, 0, 0, 0 };
        FdStoreState s = {};
        const char *data;
        char *copy;
        size_t size, n;
        int tag;

        cr_assert_eq(fdstore_writer_new(UINT64_MAX, &w), 0);
        write_example(w, shared, own, &tag, NULL);
        cr_assert_eq(fdstore_writer_finish(w, &data, &size), 0);

        /* Every prefix is damage, never a crash or a state. */
        for (size_t i = 0; i < size; i++)
                cr_assert_eq(fdstore_state_parse(data, i, &s), -EBADMSG, "prefix of %zu bytes", i);

        /* Any flipped byte of a record: the checksum or the frame says so. */
        copy = malloc(size);
        cr_assert(copy);
        for (size_t i = 16; i < size; i++) {
                memcpy(copy, data, size);
                copy[i] ^= 0x20;
                cr_assert_lt(fdstore_state_parse(copy, size, &s), 0, "byte %zu flipped", i);
        }

        /* Another version: not this photond's to read (a downgrade, or a format not written yet). */
        memcpy(copy, data, size);
        copy[8] = 2;
        cr_assert_eq(fdstore_state_parse(copy, size, &s), -EPROTONOSUPPORT);
        memcpy(copy, data, size);
        copy[0] = 'X';
        cr_assert_eq(fdstore_state_parse(copy, size, &s), -EBADMSG);
        free(copy);

        /* A newer photond's record: skipped if optional, refused if it must be understood. */
        copy = rewrite(data, size, optional, sizeof(optional), &n);
        cr_assert_eq(fdstore_state_parse(copy, n, &s), 0);
        cr_assert_eq(s.n_clients, 2);
        fdstore_state_done(&s);
        free(copy);
        copy = rewrite(data, size, must, sizeof(must), &n);
        cr_assert_eq(fdstore_state_parse(copy, n, &s), -EPROTONOSUPPORT);
        free(copy);

        shared_buf_unref(shared);
        shared_buf_unref(own);
}

Test(fdstore_format, cap_leaves_out_a_whole_record) {
        _cleanup_(fdstore_writer_freep) FdStoreWriter *w = NULL;
        _cleanup_(fdstore_state_done) FdStoreState s = {};
        SharedBuf *small = buf("{\"a\":1}\n"), *big;
        char line[2048];
        const char *data;
        size_t size;

        memset(line, 'x', sizeof(line) - 1);
        line[sizeof(line) - 2] = '\n';
        line[sizeof(line) - 1] = '\0';
        big = buf(line);

        cr_assert_eq(fdstore_writer_new(1024, &w), 0);
        cr_assert_eq(fdstore_writer_begin_client(w, 1, 1, NULL), 0);
        cr_assert_eq(fdstore_writer_add_output(w, small, 0, NULL), 0);
        cr_assert_eq(fdstore_writer_end_client(w), 0);

        /* Its line does not fit: the record goes, and the line with it. */
        cr_assert_eq(fdstore_writer_begin_client(w, 1, 2, NULL), 0);
        cr_assert_eq(fdstore_writer_add_output(w, small, 0, NULL), 0);
        cr_assert_eq(fdstore_writer_add_output(w, big, 0, NULL), -E2BIG);
        fdstore_writer_abort_client(w);

        /* A record that fits after one that did not. */
        cr_assert_eq(fdstore_writer_begin_client(w, 1, 3, "s"), 0);
        cr_assert_eq(fdstore_writer_end_client(w), 0);

        cr_assert_eq(fdstore_writer_finish(w, &data, &size), 0);
        cr_assert_leq(size, 1024);
        cr_assert_eq(fdstore_state_parse(data, size, &s), 0);
        cr_assert_eq(s.n_clients, 2);
        cr_assert_eq(s.n_buffers, 1);
        cr_assert_eq(s.clients[0].ino, 1);
        cr_assert_eq(s.clients[1].ino, 3);

        shared_buf_unref(small);
        shared_buf_unref(big);
}

Test(fdstore_format, config) {
        uint64_t n;

        cr_assert_eq(unsetenv("FDSTORE"), 0);
        cr_assert_eq(unsetenv("PHOTOND_FDSTORE"), 0);
        cr_assert_eq(setenv("NOTIFY_SOCKET", "/run/x", 1), 0);
        cr_assert_eq(fdstore_config_from_env(&n), 0);
        cr_assert_eq(n, 0, "systemd 252 does not say, and the unit did not either");
        cr_assert_eq(setenv("FDSTORE", "512", 1), 0);
        cr_assert_eq(fdstore_config_from_env(&n), 0);
        cr_assert_eq(n, 512, "systemd 254 says");
        cr_assert_eq(setenv("PHOTOND_FDSTORE", "no", 1), 0);
        cr_assert_eq(fdstore_config_from_env(&n), 0);
        cr_assert_eq(n, 0);
        cr_assert_eq(setenv("PHOTOND_FDSTORE", "4096", 1), 0);
        cr_assert_eq(fdstore_config_from_env(&n), 0);
        cr_assert_eq(n, 4096);
        cr_assert_eq(setenv("PHOTOND_FDSTORE", "1", 1), 0);
        cr_assert_eq(fdstore_config_from_env(&n), 0);
        cr_assert_eq(n, 0, "no room for a connection besides the state");
        cr_assert_eq(setenv("PHOTOND_FDSTORE", "yes", 1), 0);
        cr_assert_eq(fdstore_config_from_env(&n), -EINVAL);
        cr_assert_eq(setenv("PHOTOND_FDSTORE", "4096", 1), 0);
        cr_assert_eq(unsetenv("NOTIFY_SOCKET"), 0);
        cr_assert_eq(fdstore_config_from_env(&n), 0);
        cr_assert_eq(n, 0, "no service manager to keep anything");
        cr_assert_eq(unsetenv("PHOTOND_FDSTORE"), 0);
        cr_assert_eq(unsetenv("FDSTORE"), 0);
}

/* ---- a Manager's clients kept and taken over ---- */

static Manager* manager_in(const char *home) {
        Manager *m = NULL;

        cr_assert_eq(setenv("PHOTON_HOME", home, 1), 0);
        cr_assert_eq(setenv("HOME", home, 1), 0);
        cr_assert_eq(manager_new(&(ManagerConfig) { .bus_mode = BUS_MODE_NONE }, &m), 0);
        cr_assert_eq(mkdir_parents_and_self(m->state_dir, 0700), 0);
        return m;
}

typedef struct Peer {
        int fd;                         /* the test's end of the connection */
        Client *client;                 /* photond's end, in the first Manager */
        char *got;                      /* everything read */
        size_t got_size;
} Peer;

static void peer_connect(Manager *m, Peer *p) {
        int sp[2];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp), 0);
        cr_assert_eq(client_new(m, sp[0], &p->client), 0);
        p->fd = sp[1];
        p->got = strdup("");
}

static void peer_read(Peer *p) {
        char b[65536];
        ssize_t n;

        while ((n = read(p->fd, b, sizeof(b))) > 0) {
                p->got = realloc(p->got, p->got_size + n + 1);
                cr_assert(p->got);
                memcpy(p->got + p->got_size, b, n);
                p->got_size += n;
                p->got[p->got_size] = '\0';
        }
}

/* Runs m's loop a little while the peers read. */
static void pump(Manager *m, Peer *peers, size_t n) {
        for (int i = 0; i < 50; i++) {
                cr_assert(sd_event_run(m->event, 2 * USEC_PER_MSEC) >= 0);
                for (size_t j = 0; j < n; j++)
                        peer_read(&peers[j]);
        }
}

/* How often needle occurs in the peer's input. */
static unsigned count(const Peer *p, const char *needle) {
        unsigned k = 0;

        for (const char *s = p->got; (s = strstr(s, needle)); s += strlen(needle))
                k++;
        return k;
}

/* Every line the peer got is a JSON object. */
static void assert_lines(const Peer *p) {
        const char *s = p->got, *nl;

        while ((nl = strchr(s, '\n'))) {
                struct json_object *o = NULL;

                cr_assert_eq(json_parse(s, nl - s, &o, NULL), 0, "not a line of JSON: %.*s", (int) (nl - s), s);
                cr_assert(json_object_is_type(o, json_type_object));
                json_object_put(o);
                s = nl + 1;
        }
        cr_assert_eq(*s, '\0', "the peer's input ends in a whole line");
}

enum { SUBSCRIBER, PROVIDER, CALLER, READER, PUBLISHER, HOLDER, WAITER, RUNNER, _PEER_MAX };

Test(fdstore_manager, kept_and_taken_over) {
        char *home = tmpdir_new();
        Manager *m = manager_in(home), *m2;
        FakeStore *store = fake_store_new(home);
        Peer peers[_PEER_MAX] = {};
        Peer *sub = &peers[SUBSCRIBER], *prov = &peers[PROVIDER], *caller = &peers[CALLER],
                *reader = &peers[READER], *pub = &peers[PUBLISHER], *holder = &peers[HOLDER],
                *waiter = &peers[WAITER], *runner = &peers[RUNNER];
        struct json_object *msg;
        char big[3000], *id;
        int fds[FAKE_STORE_MAX], state_fd, small = 4096;
        size_t n_fds;
        bool partial = false;

        for (size_t i = 0; i < _PEER_MAX; i++)
                peer_connect(m, &peers[i]);

        /* A subscriber with a sessionId on a channel and a wildcard, and a queue its socket does not take whole. */
        cr_assert_eq(setsockopt(sub->client->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        test_request(m, sub->client, "{\"type\":\"subscribe\",\"id\":\"s1\",\"channel\":\"news\",\"sessionId\":\"sess-A\"}");
        test_request(m, sub->client, "{\"type\":\"subscribe\",\"id\":\"s2\",\"channel\":\"jobs:*\"}");
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        for (int i = 0; i < 8; i++)
                test_request(m, pub->client, "{\"type\":\"publish\",\"id\":\"p%d\",\"channel\":\"news\","
                             "\"message\":{\"n\":%d,\"pad\":\"%s\"}}", i, i, big);
        cr_assert_eq(client_flush(sub->client), 0);
        for (size_t i = 0; client_queued_entry(sub->client, i); i++)
                partial = partial || client_queued_entry(sub->client, i)->offset > 0;
        cr_assert(partial, "a line cut in the middle by a full socket");
        peer_read(sub);

        /* A provider, and a caller whose command it is running. */
        test_request(m, prov->client, "{\"type\":\"provide\",\"id\":\"pv\",\"photonName\":\"kanban\"}");
        test_request(m, caller->client, "{\"type\":\"command\",\"id\":\"cmd-1\",\"photonName\":\"kanban\","
                     "\"method\":\"add\",\"args\":{}}");
        cr_assert_eq(caller->client->peer.n_calls, 1);

        /* A lock wait behind another holder. */
        test_request(m, holder->client, "{\"type\":\"lock\",\"id\":\"l1\",\"lockName\":\"L\",\"lockHolder\":\"h\"}");
        test_request(m, waiter->client, "{\"type\":\"lock\",\"id\":\"lw-1\",\"lockName\":\"L\",\"lockHolder\":\"w\","
                     "\"lockWait\":60000}");
        cr_assert_eq(waiter->client->lock_waits.n_waiters, 1);

        /* A run_job waiting for its run, which the provider runs too. */
        test_request(m, runner->client, "{\"type\":\"schedule\",\"id\":\"sc\",\"photonName\":\"kanban\","
                     "\"jobId\":\"nightly\",\"method\":\"sweep\",\"cron\":\"0 3 1 1 *\"}");
        test_request(m, runner->client, "{\"type\":\"run_job\",\"id\":\"rj-1\",\"jobId\":\"nightly\"}");
        cr_assert_eq(dispatcher_running_calls(m->dispatcher), 2);

        /* A request that came in halves: the first half read, not handled. */
        cr_assert_eq(client_feed(reader->client, "{\"type\":\"ping\",\"id\":\"pi",
                                 strlen("{\"type\":\"ping\",\"id\":\"pi")), 0);

        /* The stop, under a fake systemd. */
        cr_assert_eq(setenv("NOTIFY_SOCKET", store->path, 1), 0);
        m->fdstore_max = 64;
        m->shutting_down = true;
        cr_assert_eq(fdstore_keep_clients(m), _PEER_MAX);
        cr_assert_eq(unsetenv("NOTIFY_SOCKET"), 0);
        cr_assert_geq(fake_store_receive(store, 0), 2);
        cr_assert_eq(fake_store_get(store, FDSTORE_STATE_NAME, &state_fd, 1), 1);
        n_fds = fake_store_get(store, FDSTORE_CLIENT_NAME, fds, FAKE_STORE_MAX);
        cr_assert_eq(n_fds, _PEER_MAX);
        for (size_t i = 0; i < _PEER_MAX; i++)
                cr_assert(peers[i].client->disconnected, "the old process lets go of every kept connection");

        /* What systemd does at a stop: the old process goes, the store keeps its fds. */
        manager_free(m);
        for (size_t i = 0; i < _PEER_MAX; i++) {
                struct pollfd p = { .fd = peers[i].fd, .events = POLLRDHUP };
                peer_read(&peers[i]);
                cr_assert_eq(poll(&p, 1, 0), 0, "peer %zu saw its connection close", i);
        }

        /* The start: a fresh Manager takes them over (dups, as systemd passes them). */
        m2 = manager_in(home);
        for (size_t i = 0; i < n_fds; i++)
                fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
        cr_assert_eq(fdstore_adopt(m2, fcntl(state_fd, F_DUPFD_CLOEXEC, 3), fds, n_fds), _PEER_MAX);
        cr_assert_eq(m2->n_clients, _PEER_MAX);
        cr_assert(dispatcher_can_serve(m2->dispatcher, "kanban", "add"), "the provider provides again");
        cr_assert_gt(dispatcher_last_serial(m2->dispatcher), 0, "new calls get ids above the last process's");

        /* The reader's second half, and a publish on each channel the subscriber had. */
        cr_assert_eq(write(reader->fd, "ng-1\"}\n", 7), 7);
        pump(m2, peers, _PEER_MAX);
        msg = json_object_new_int(99);
        cr_assert_eq(channels_publish(m2->channels, "news", msg, NULL, NULL), 0);
        json_object_put(msg);
        cr_assert_eq(channels_publish(m2->channels, "jobs:kanban", NULL, NULL, NULL), 0);
        pump(m2, peers, _PEER_MAX);

        /* The subscriber: every message once, in order, then the new ones. */
        assert_lines(sub);
        for (int i = 0; i < 8; i++) {
                char needle[32];

                snprintf(needle, sizeof(needle), "{\"n\":%d,", i);
                cr_assert_eq(count(sub, needle), 1, "message %d: %u times", i, count(sub, needle));
                if (i > 0) {
                        char prev[32];

                        snprintf(prev, sizeof(prev), "{\"n\":%d,", i - 1);
                        cr_assert_lt(strstr(sub->got, prev) - sub->got, strstr(sub->got, needle) - sub->got);
                }
        }
        cr_assert_eq(count(sub, "\"message\":99"), 1);
        cr_assert_gt(strstr(sub->got, "\"message\":99") - sub->got, strstr(sub->got, "{\"n\":7,") - sub->got);
        cr_assert_eq(count(sub, "\"channel\":\"jobs:kanban\""), 1, "the wildcard subscription too");

        /* The caller: its command is answered, with the restart named. */
        assert_lines(caller);
        cr_assert_eq(count(caller, "\"id\":\"cmd-1\""), 1);
        cr_assert_eq(count(caller, "Daemon restarted while the request was in flight"), 1);

        /* The provider got each call once. */
        assert_lines(prov);
        cr_assert_eq(count(prov, "\"type\":\"invoke\""), 2);

        /* The lock waiter and the run_job requester, answered as the caller. */
        assert_lines(waiter);
        cr_assert_eq(count(waiter, "\"id\":\"lw-1\""), 1);
        cr_assert_eq(count(waiter, "Daemon restarted while the request was in flight"), 1);
        assert_lines(runner);
        cr_assert_eq(count(runner, "\"id\":\"rj-1\""), 1);
        cr_assert_eq(count(runner, "Daemon restarted while the request was in flight"), 1);
        assert_lines(holder);
        cr_assert_eq(count(holder, "\"id\":\"l1\""), 1);

        /* The reader: its request, read in two processes, answered once. */
        assert_lines(reader);
        cr_assert_eq(count(reader, "\"id\":\"ping-1\""), 1, "%s", reader->got);

        /* The publisher: its results once each. */
        assert_lines(pub);
        id = strdup("\"id\":\"p0\"");
        for (int i = 0; i < 8; i++) {
                id[7] = '0' + i;
                cr_assert_eq(count(pub, id), 1);
        }
        free(id);

        /* The session is known again. */
        LIST_FOREACH(clients, c, m2->clients)
                if (c->session_id)
                        cr_assert_str_eq(c->session_id, "sess-A");

        manager_free(m2);
        for (size_t i = 0; i < _PEER_MAX; i++) {
                close(peers[i].fd);
                free(peers[i].got);
        }
        fake_store_free(store);
        tmpdir_remove(home);
}

Test(fdstore_manager, unreadable_state_closes_its_connections) {
        char *home = tmpdir_new();
        Manager *m = manager_in(home);
        int sp[2], fds[1], state;
        char c;

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp), 0);
        fds[0] = sp[0];
        /* A state from another version. */
        state = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        cr_assert_eq(write(state, "PHOTONFD\x09\0\0\0\0\0\0\0", 16), 16);
        cr_assert_eq(fcntl(state, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK), 0);

        cr_assert_eq(fdstore_adopt(m, state, fds, 1), 0);
        cr_assert_eq(m->n_clients, 0);
        cr_assert_eq(read(sp[1], &c, 1), 0, "the connection is closed: its client reconnects");
        close(sp[1]);

        /* Connections without a state, too. */
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp), 0);
        fds[0] = sp[0];
        cr_assert_eq(fdstore_adopt(m, -EBADF, fds, 1), 0);
        cr_assert_eq(read(sp[1], &c, 1), 0);

        manager_free(m);
        close(sp[1]);
        tmpdir_remove(home);
}

Test(fdstore_manager, past_the_cap_the_newest_are_left_to_the_shutdown) {
        char *home = tmpdir_new();
        Manager *m = manager_in(home);
        FakeStore *store = fake_store_new(home);
        Peer peers[4] = {};

        for (size_t i = 0; i < ELEMENTSOF(peers); i++)
                peer_connect(m, &peers[i]);
        /* One closing connection, which no cap concerns: it is left to the shutdown too. */
        client_input_end(peers[0].client);

        cr_assert_eq(setenv("NOTIFY_SOCKET", store->path, 1), 0);
        m->fdstore_max = 3;             /* the state and two connections */
        m->shutting_down = true;
        cr_assert_eq(fdstore_keep_clients(m), 2);
        cr_assert_eq(unsetenv("NOTIFY_SOCKET"), 0);
        (void) fake_store_receive(store, 0);
        cr_assert_eq(fake_store_get(store, FDSTORE_CLIENT_NAME, (int[4]) {}, 4), 2);

        cr_assert(!peers[0].client->disconnected, "closing: left to the shutdown");
        cr_assert(peers[1].client->disconnected, "the oldest are kept");
        cr_assert(peers[2].client->disconnected);
        cr_assert(!peers[3].client->disconnected, "the newest, past the cap, left to the shutdown");

        manager_free(m);
        for (size_t i = 0; i < ELEMENTSOF(peers); i++) {
                close(peers[i].fd);
                free(peers[i].got);
        }
        fake_store_free(store);
        tmpdir_remove(home);
}
