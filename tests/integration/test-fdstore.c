/* SPDX-License-Identifier: MIT */

/* Connections kept across a restart, end to end: the test is systemd. It holds the control socket as photond.socket
 * does, receives photond's notifications on its own NOTIFY_SOCKET with the fds of FDSTORE=1 (tests/helpers.c), and
 * starts the next photond with the listener and the stored fds as systemd passes them (LISTEN_FDS, LISTEN_FDNAMES,
 * LISTEN_PID). Subscribers and a publisher keep going through the restarts. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd-util.h"
#include "harness.h"
#include "redis-helper.h"

typedef struct Systemd {
        char *home;
        char *socket_path;
        char *log_path;
        int listen_fd;                  /* the control socket, held as photond.socket holds it */
        FakeStore *store;
        pid_t pid;
        unsigned n_ready;               /* READY=1 seen so far */
} Systemd;

static Systemd* systemd_new(void) {
        Systemd *s = calloc(1, sizeof(Systemd));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char tmpl[] = "/tmp/photond-fdstore-XXXXXX", *dir;

        cr_assert(s);
        cr_assert(mkdtemp(tmpl));
        s->home = strdup(tmpl);
        s->socket_path = xasprintf("%s/.data/daemon.sock", s->home);
        s->log_path = xasprintf("%s/photond.log", s->home);
        dir = xasprintf("%s/.data", s->home);
        cr_assert_eq(mkdir(dir, 0700), 0);
        free(dir);

        s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert(s->listen_fd >= 0);
        strcpy(sa.sun_path, s->socket_path);
        cr_assert_eq(bind(s->listen_fd, (struct sockaddr*) &sa, sizeof(sa)), 0);
        cr_assert_eq(listen(s->listen_fd, 256), 0);
        s->store = fake_store_new(s->home);
        return s;
}

static void systemd_dump_log(Systemd *s) {
        FILE *f = fopen(s->log_path, "re");
        char line[1024];

        if (!f)
                return;
        fprintf(stderr, "---- photond log ----\n");
        while (fgets(line, sizeof(line), f))
                fputs(line, stderr);
        fclose(f);
}

/* Starts photond with the listener and whatever the store holds, as systemd does; env: extra "NAME=value". */
static void systemd_start_with(Systemd *s, const char *const *env) {
        int fds[1 + FAKE_STORE_MAX];
        char *names;
        size_t n = 0;

        fds[n++] = s->listen_fd;
        names = strdup("control");
        for (size_t i = 0; i < s->store->n_fds; i++) {
                char *t = xasprintf("%s:%s", names, s->store->names[i]);

                free(names);
                names = t;
                fds[n++] = s->store->fds[i];
        }

        s->pid = fork();
        cr_assert(s->pid >= 0);
        if (s->pid == 0) {
                int high = 1000, log;
                char pid[32], count[32];

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                /* Out of the way first, then into place from 3 on, not inherited past exec otherwise. */
                for (size_t i = 0; i < n; i++)
                        if (dup2(fds[i], high + (int) i) < 0)
                                _exit(126);
                for (size_t i = 0; i < n; i++)
                        if (dup2(high + (int) i, 3 + (int) i) < 0)
                                _exit(126);
                for (size_t i = 0; i < n; i++)
                        close(high + (int) i);
                log = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                if (log >= 0 && !getenv("PHOTOND_TEST_VERBOSE"))
                        dup2(log, STDERR_FILENO);
                snprintf(pid, sizeof(pid), "%d", (int) getpid());
                snprintf(count, sizeof(count), "%zu", n);
                setenv("LISTEN_PID", pid, 1);
                setenv("LISTEN_FDS", count, 1);
                setenv("LISTEN_FDNAMES", names, 1);
                setenv("NOTIFY_SOCKET", s->store->path, 1);
                setenv("PHOTON_HOME", s->home, 1);
                setenv("HOME", s->home, 1);
                setenv("PHOTOND_FDSTORE", "64", 1);
                for (const char *const *e = env; e && *e; e++)
                        putenv((char*) *e);
                execlp(photond_binary(), photond_binary(), "--bus=none",
                       getenv("PHOTOND_TEST_DEBUG") ? "--log-level=debug" : NULL, NULL);
                _exit(127);
        }
        free(names);

        /* READY=1, through the notifications. */
        for (uint64_t deadline = mono_ms() + 10000;;) {
                unsigned ready = 0;

                (void) fake_store_receive(s->store, 50);
                for (const char *t = s->store->text; (t = strstr(t, "READY=1")); t++)
                        ready++;
                if (ready > s->n_ready) {
                        s->n_ready = ready;
                        return;
                }
                if (waitpid(s->pid, NULL, WNOHANG) == s->pid || mono_ms() > deadline) {
                        systemd_dump_log(s);
                        cr_assert_fail("photond did not get ready");
                }
        }
}

static void systemd_start(Systemd *s) {
        systemd_start_with(s, NULL);
}

/* After SIGTERM: what photond hands over until it has exited. */
static void systemd_wait_stopped(Systemd *s) {
        int status;

        for (uint64_t deadline = mono_ms() + 10000;;) {
                (void) fake_store_receive(s->store, 10);
                if (waitpid(s->pid, &status, WNOHANG) == s->pid)
                        break;
                cr_assert(mono_ms() < deadline, "photond did not exit within 10 s of SIGTERM");
        }
        /* systemd reads what the process sent before it reaps it. */
        (void) fake_store_receive(s->store, 0);
        s->pid = 0;
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "photond exited with status %d", status);
}

static void systemd_free(Systemd *s) {
        if (s->pid > 0) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, NULL, 0);
        }
        fake_store_free(s->store);
        close(s->listen_fd);
        if (!getenv("PHOTOND_TEST_KEEP")) {
                char *cmd = xasprintf("rm -rf '%s'", s->home);
                (void) !system(cmd);
                free(cmd);
        }
        free(s->home);
        free(s->socket_path);
        free(s->log_path);
        free(s);
}

static bool log_contains(Systemd *s, const char *text) {
        _cleanup_free_ char *log = NULL;

        return read_full_file(s->log_path, 16 * 1024 * 1024, &log, NULL) >= 0 && strstr(log, text);
}

#define N_SUBSCRIBERS 20
#define N_PER_PHASE 100

/* Publishes seq from..to-1 on "feed" without waiting for the results, each message 2 KB: nobody reads until the
 * end, so each subscriber's socket fills and photond queues the rest, which a stop must carry over. */
static void publish_range(Conn *pub, int from, int to) {
        char pad[2048];

        memset(pad, 'x', sizeof(pad) - 1);
        pad[sizeof(pad) - 1] = '\0';
        for (int i = from; i < to; i++)
                conn_send(pub, "{\"type\":\"publish\",\"id\":\"pub-%d\",\"channel\":\"feed\","
                          "\"message\":{\"seq\":%d,\"pad\":\"%s\"}}", i, i, pad);
}

typedef struct PublishJob {
        pthread_t thread;
        Conn *pub;
        int from, to;
} PublishJob;

static void* publish_job_run(void *userdata) {
        PublishJob *j = userdata;

        publish_range(j->pub, j->from, j->to);
        return NULL;
}

/* Publishes from..to-1 from a thread: a stopping photond may stop reading, and the test, which is systemd too, must
 * still see it exit and start the next one, which reads the rest from the same socket. */
static void publish_job_start(PublishJob *j, Conn *pub, int from, int to) {
        *j = (PublishJob) { .pub = pub, .from = from, .to = to };
        cr_assert_eq(pthread_create(&j->thread, NULL, publish_job_run, j), 0);
}

static void publish_job_join(PublishJob *j) {
        cr_assert_eq(pthread_join(j->thread, NULL), 0);
}

/* The size of the state the n-th stop kept (its log line). */
static uint64_t kept_bytes(Systemd *s, unsigned n) {
        _cleanup_free_ char *log = NULL;
        const char *p;

        cr_assert(read_full_file(s->log_path, 16 * 1024 * 1024, &log, NULL) >= 0);
        p = log;
        for (unsigned i = 0; i <= n; i++) {
                p = strstr(p, "file descriptor store for the next start (");
                cr_assert_not_null(p);
                p += strlen("file descriptor store for the next start (");
        }
        return strtoull(p, NULL, 10);
}

/* Reads the subscriber's channel messages up to seq last: every one once, in order. No shutdown notice. */
static void expect_feed(Conn *c, int first, int last) {
        int next = first;

        while (next <= last) {
                struct json_object *o = conn_recv(c, 10000);
                const char *type;

                cr_assert_not_null(o, "the subscriber got seq %d..%d, then nothing (or its connection closed)",
                                   first, next - 1);
                type = jstr(o, "type");
                cr_assert_str_neq(type, "shutdown", "a kept connection hears nothing of the stop");
                cr_assert_str_neq(type, "refresh_needed");
                if (streq(type, "channel_message")) {
                        cr_assert_eq(jint(o, "message.seq"), next, "got seq %" PRId64 ", wanted %d",
                                     jint(o, "message.seq"), next);
                        next++;
                }
                json_object_put(o);
        }
}

/* The publisher's results: one per publish, in order. */
static void expect_results(Conn *c, int first, int last) {
        for (int i = first; i <= last; i++) {
                struct json_object *o = conn_expect(c, 10000);
                char id[32];

                snprintf(id, sizeof(id), "pub-%d", i);
                cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
                cr_assert(jbool(o, "success"));
                json_object_put(o);
        }
}

Test(fdstore, subscribers_stay_connected_through_restarts) {
        Systemd *s = systemd_new();
        Conn *subs[N_SUBSCRIBERS], *pub, *holder, *waiter, *late;
        struct json_object *o;
        int seq = 0, acked = 0;

        systemd_start(s);

        for (int i = 0; i < N_SUBSCRIBERS; i++) {
                subs[i] = conn_open_path(s->socket_path);
                o = conn_request(subs[i], "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"feed\"}");
                cr_assert(jbool(o, "success"));
                json_object_put(o);
        }
        pub = conn_open_path(s->socket_path);

        /* A lock wait in flight over the first restart. */
        holder = conn_open_path(s->socket_path);
        o = conn_request(holder, "h", "{\"type\":\"lock\",\"id\":\"h\",\"lockName\":\"L\",\"lockHolder\":\"h\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        waiter = conn_open_path(s->socket_path);
        conn_send(waiter, "{\"type\":\"lock\",\"id\":\"w\",\"lockName\":\"L\",\"lockHolder\":\"w\",\"lockWait\":60000}");
        o = conn_request(waiter, "p", "{\"type\":\"ping\",\"id\":\"p\"}");      /* the wait is parked */
        json_object_put(o);

        for (int restart = 0; restart < 2; restart++) {
                PublishJob during;

                /* Before the stop (photond has served them all: their results are in, so what the subscribers' sockets
                 * did not take is queued in photond, twice the phase so that this is far more than a socket holds),
                 * while it stops (photond may or may not read them), and after. */
                publish_range(pub, seq, seq + 2 * N_PER_PHASE);
                seq += 2 * N_PER_PHASE;
                expect_results(pub, acked, seq - 1);
                acked = seq;
                cr_assert_eq(kill(s->pid, SIGTERM), 0);
                publish_job_start(&during, pub, seq, seq + N_PER_PHASE);
                seq += N_PER_PHASE;
                systemd_wait_stopped(s);
                cr_assert_eq(fake_store_get(s->store, "photond-state", (int[1]) {}, 1), 1, "%s",
                             s->store->text);
                cr_assert_eq(fake_store_get(s->store, "photond-client", (int[64]) {}, 64), N_SUBSCRIBERS + 3);

                /* A new connection waits in the listener's backlog meanwhile. */
                late = conn_open_path(s->socket_path);
                conn_send(late, "{\"type\":\"ping\",\"id\":\"late\"}");

                systemd_start(s);
                cr_assert_eq(s->store->n_fds, 0, "the new photond holds the only copies (FDSTOREREMOVE=1)");
                cr_assert_eq(s->store->n_removed, 2 * (restart + 1));
                o = conn_expect(late, 5000);
                cr_assert_str_eq(jstr(o, "id"), "late");
                json_object_put(o);
                conn_close(late);
                publish_job_join(&during);

                publish_range(pub, seq, seq + N_PER_PHASE);
                seq += N_PER_PHASE;

                if (restart == 0) {
                        o = conn_expect(waiter, 5000);
                        cr_assert_str_eq(jstr(o, "id"), "w");
                        cr_assert_str_eq(jstr(o, "type"), "error");
                        cr_assert_str_eq(jstr(o, "error"), "Daemon restarted while the request was in flight");
                        json_object_put(o);
                }
        }

        expect_results(pub, acked, seq - 1);
        for (int i = 0; i < N_SUBSCRIBERS; i++)
                expect_feed(subs[i], 0, seq - 1);
        cr_assert(log_contains(s, "Kept 23 connections"));
        cr_assert(log_contains(s, "Took over 23 connections"));
        /* What the sockets did not take went over in the state, each line once for all 20 subscribers. */
        cr_assert_gt(kept_bytes(s, 0), 100 * 1024, "%" PRIu64, kept_bytes(s, 0));
        cr_assert_lt(kept_bytes(s, 0), 2 * 200 * 2100, "%" PRIu64, kept_bytes(s, 0));

        /* Still the same connections, answering. */
        o = conn_request(subs[0], "ping", "{\"type\":\"ping\",\"id\":\"ping\"}");
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);

        for (int i = 0; i < N_SUBSCRIBERS; i++)
                conn_close(subs[i]);
        conn_close(pub);
        conn_close(holder);
        conn_close(waiter);
        systemd_free(s);
}

Test(fdstore, a_state_it_cannot_read_closes_the_connections) {
        Systemd *s = systemd_new();
        struct json_object *o;
        Conn *c, *again;
        int fd;

        systemd_start(s);
        c = conn_open_path(s->socket_path);
        o = conn_request(c, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"feed\"}");
        json_object_put(o);
        cr_assert_eq(kill(s->pid, SIGTERM), 0);
        systemd_wait_stopped(s);

        /* A newer photond's state (version 9), as a downgrade would find it. */
        for (size_t i = 0; i < s->store->n_fds; i++)
                if (streq(s->store->names[i], "photond-state")) {
                        fd = memfd_create("state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
                        cr_assert_eq(write(fd, "PHOTONFD\x09\0\0\0\0\0\0\0", 16), 16);
                        cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK), 0);
                        close(s->store->fds[i]);
                        s->store->fds[i] = fd;
                }

        systemd_start(s);
        cr_assert(conn_wait_eof(c, 5000), "the connection is closed, so its client reconnects");
        cr_assert(log_contains(s, "written by another version of photond (format 9, this one reads 1)"));
        again = conn_open_path(s->socket_path);
        o = conn_request(again, "p", "{\"type\":\"ping\",\"id\":\"p\"}");
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);

        conn_close(c);
        conn_close(again);
        systemd_free(s);
}

Test(fdstore, without_a_store_a_stop_is_a_stop) {
        Systemd *s = systemd_new();
        static const char *const env[] = { "PHOTOND_FDSTORE=no", NULL };
        struct json_object *o;
        Conn *c;

        systemd_start_with(s, env);
        c = conn_open_path(s->socket_path);
        o = conn_request(c, "p", "{\"type\":\"ping\",\"id\":\"p\"}");
        json_object_put(o);
        cr_assert_eq(kill(s->pid, SIGTERM), 0);
        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "type"), "shutdown");
        json_object_put(o);
        systemd_wait_stopped(s);
        cr_assert_eq(s->store->n_fds, 0);
        cr_assert(conn_wait_eof(c, 5000));

        conn_close(c);
        systemd_free(s);
}

/* Cluster mode: a publish waiting for Redis (stopped with SIGSTOP, so it neither answers nor refuses) when photond
 * restarts is answered by the next process, as a lock wait is: the client is not left waiting for good. */
Test(fdstore, cluster_publish_in_flight_over_a_restart) {
        Systemd *s = systemd_new();
        TestRedis redis;
        char url_env[400];
        const char *env[] = { url_env, "PHOTOND_NODE_ID=fd-node", NULL };
        struct json_object *o;
        Conn *c;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        cr_assert_eq(test_redis_start(&redis, s->home, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", redis.url);
        systemd_start_with(s, env);
        c = conn_open_path(s->socket_path);
        for (uint64_t deadline = mono_ms() + 10000;;) {
                bool ready;

                o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");
                ready = jbool(o, "data.cluster.ready");
                json_object_put(o);
                if (ready)
                        break;
                cr_assert_lt(mono_ms(), deadline, "never ready");
                (void) poll(NULL, 0, 20);
        }

        cr_assert_eq(kill(redis.pid, SIGSTOP), 0);
        conn_send(c, "{\"type\":\"publish\",\"id\":\"inflight\",\"channel\":\"x\",\"message\":1}");
        for (uint64_t deadline = mono_ms() + 5000;;) {
                int64_t pending;

                o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");
                pending = jint(o, "data.cluster.pendingPublishes");
                json_object_put(o);
                if (pending == 1)
                        break;
                cr_assert_lt(mono_ms(), deadline, "the publish never went to Redis");
                (void) poll(NULL, 0, 10);
        }
        cr_assert_eq(kill(s->pid, SIGTERM), 0);
        systemd_wait_stopped(s);
        systemd_start_with(s, env);

        o = conn_expect(c, 5000);
        cr_assert_str_eq(jstr(o, "id"), "inflight", "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "type"), "error");
        cr_assert_str_eq(jstr(o, "error"), "Daemon restarted while the request was in flight");
        json_object_put(o);

        (void) kill(redis.pid, SIGCONT);
        conn_close(c);
        cr_assert_eq(kill(s->pid, SIGTERM), 0);
        systemd_wait_stopped(s);
        test_redis_stop(&redis);
        systemd_free(s);
}
