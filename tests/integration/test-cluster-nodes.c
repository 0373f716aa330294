/* SPDX-License-Identifier: MIT */

/* Cluster mode: the nodes and how operators see the cluster, with real photond nodes and one real redis-server (on
 * a Unix socket in a temporary directory, or on a loopback port for a password): nodes that join, leave (SIGKILL)
 * and share an id, the cluster's state in status, photonctl status, D-Bus and the journal, the caps, and the
 * failures of what exists (Redis restarted mid-traffic, a node killed, a Redis that accepts and never answers). */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "fd-util.h"
#include "harness.h"
#include "macro.h"
#include "redis-helper.h"

static unsigned req_serial;

/* What a test started, stopped by the suite's fini when an assertion ends the test early: a redis-server left
 * running would hold the test runner's output open. Each test runs in a process of its own. */
static TestRedis *cur_redis;
static Daemon *started[8];
static pid_t cur_dbus, cur_relay;

static Daemon* track(Daemon *d) {
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (!started[i]) {
                        started[i] = d;
                        break;
                }
        return d;
}

static void untrack(Daemon *d) {
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (started[i] == d)
                        started[i] = NULL;
}

static void suite_fini(void) {
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (started[i]) {
                        daemon_free(started[i]);
                        started[i] = NULL;
                }
        if (cur_redis && cur_redis->pid > 0) {
                (void) kill(cur_redis->pid, SIGCONT);
                test_redis_stop(cur_redis);
        }
        if (cur_relay > 0) {
                kill(cur_relay, SIGKILL);
                waitpid(cur_relay, NULL, 0);
                cur_relay = 0;
        }
        if (cur_dbus > 0) {
                kill(cur_dbus, SIGTERM);
                waitpid(cur_dbus, NULL, 0);
                cur_dbus = 0;
        }
}

TestSuite(cluster_nodes, .fini = suite_fini);

static void subscribe(Conn *c, const char *channel) {
        char id[32];
        struct json_object *o;

        snprintf(id, sizeof(id), "s%u", ++req_serial);
        o = conn_request(c, id, "{\"type\":\"subscribe\",\"id\":\"%s\",\"channel\":\"%s\"}", id, channel);
        cr_assert_str_eq(jstr(o, "type"), "result", "subscribe %s: %s", channel, json_object_to_json_string(o));
        json_object_put(o);
}

static void publish(Conn *c, const char *channel, const char *message) {
        char id[32];
        struct json_object *o;

        snprintf(id, sizeof(id), "p%u", ++req_serial);
        o = conn_request(c, id, "{\"type\":\"publish\",\"id\":\"%s\",\"channel\":\"%s\",\"message\":%s}", id, channel,
                         message);
        cr_assert_str_eq(jstr(o, "type"), "result", "publish: %s", json_object_to_json_string(o));
        json_object_put(o);
}

/* A publish while Redis may be going: answered either way, and when refused, with "Cluster unavailable: …"
 * (nothing is delivered then). Returns whether it was accepted. */
static bool publish_maybe(Conn *c, const char *channel, const char *message) {
        char id[32];
        struct json_object *o;
        bool ok;

        snprintf(id, sizeof(id), "p%u", ++req_serial);
        o = conn_request(c, id, "{\"type\":\"publish\",\"id\":\"%s\",\"channel\":\"%s\",\"message\":%s}", id, channel,
                         message);
        ok = strcmp(jstr(o, "type"), "result") == 0;
        if (!ok)
                cr_assert_eq(strncmp(jstr(o, "error") ?: "", "Cluster unavailable: ", 21), 0, "publish: %s",
                             json_object_to_json_string(o));
        json_object_put(o);
        return ok;
}

/* A node with a short heartbeat (200 ms: gone 600 ms after its last one), so that leaving is quick to see. */
static Daemon* node_start_with(const char *url, const char *node_id, const char *const *extra) {
        char url_env[400], id_env[64];
        const char *env[16] = { url_env, id_env, "PHOTOND_CLUSTER_HEARTBEAT_MS=200" };
        size_t n = 3;

        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", url);
        snprintf(id_env, sizeof(id_env), "PHOTOND_NODE_ID=%s", node_id);
        for (; extra && *extra && n < 15; extra++)
                env[n++] = *extra;
        env[n] = NULL;
        return track(daemon_start(&(DaemonOptions) { .env = env }));
}

static Daemon* node_start(const char *url, const char *node_id) {
        return node_start_with(url, node_id, NULL);
}

static void node_stop(Daemon *d) {
        int st = daemon_signal_and_wait(d, SIGTERM);

        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "photond exited with status %d", st);
        untrack(d);
        daemon_free(d);
}

static void node_kill(Daemon *d) {
        int st = daemon_signal_and_wait(d, SIGKILL);

        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "photond exited with status %d", st);
        untrack(d);
        daemon_free(d);
}

static bool state_is(Daemon *d, const char *state) {
        struct json_object *o = status_of(d);
        bool ok = jstr(o, "data.cluster.state") && strcmp(jstr(o, "data.cluster.state"), state) == 0;

        json_object_put(o);
        return ok;
}

static bool is_ready(Daemon *d) {
        struct json_object *o = status_of(d);
        bool ok = jbool(o, "data.cluster.ready");

        json_object_put(o);
        return ok;
}

/* Polls status (the node's own answer, not a sleep) until the cluster's state is state: 10 s at most. "connected"
 * also waits for the channels' set-up (status cluster.ready: the subscriptions confirmed), so that a subscriber that
 * comes next gets no refresh_needed from the node's first connect. */
static void wait_state(Daemon *d, const char *state) {
        uint64_t deadline = mono_ms() + 10000;

        while (!state_is(d, state) || (strcmp(state, "connected") == 0 && !is_ready(d))) {
                cr_assert_lt(mono_ms(), deadline, "the node never got %s", state);
                (void) poll(NULL, 0, 20);
        }
}

/* The ids of the nodes d sees, sorted and joined with ',' (the self one marked with '*'). */
static void nodes_seen(Daemon *d, char *buf, size_t size) {
        struct json_object *o = status_of(d), *nodes = jget(o, "data.cluster.nodes");
        size_t len = 0;

        buf[0] = 0;
        cr_assert(nodes && json_object_is_type(nodes, json_type_array), "%s", json_object_to_json_string(o));
        for (size_t i = 0; i < json_object_array_length(nodes); i++) {
                struct json_object *e = json_object_array_get_idx(nodes, i);

                len += snprintf(buf + len, size - len, "%s%s%s", i ? "," : "", jstr(e, "id"),
                                jbool(e, "self") ? "*" : "");
        }
        json_object_put(o);
}

static void wait_nodes(Daemon *d, const char *expected) {
        uint64_t deadline = mono_ms() + 10000;
        char seen[512];

        for (;;) {
                nodes_seen(d, seen, sizeof(seen));
                if (strcmp(seen, expected) == 0)
                        return;
                cr_assert_lt(mono_ms(), deadline, "nodes seen: %s, expected %s", seen, expected);
                (void) poll(NULL, 0, 20);
        }
}

static void wait_log(Daemon *d, const char *text) {
        uint64_t deadline = mono_ms() + 10000;

        while (!daemon_log_contains(d, text)) {
                if (mono_ms() >= deadline)
                        daemon_dump_log(d);
                cr_assert_lt(mono_ms(), deadline, "the log never said: %s", text);
                (void) poll(NULL, 0, 20);
        }
}

static bool duplicate(Daemon *d) {
        struct json_object *o = status_of(d);
        bool dup = jbool(o, "data.cluster.duplicateNodeId");

        json_object_put(o);
        return dup;
}

static void wait_duplicate(Daemon *d, bool expected) {
        uint64_t deadline = mono_ms() + 10000;

        while (duplicate(d) != expected) {
                cr_assert_lt(mono_ms(), deadline, "duplicateNodeId never became %s", expected ? "true" : "false");
                (void) poll(NULL, 0, 20);
        }
}

static void drain(Conn *c, int quiet_ms) {
        struct json_object *o;

        while ((o = conn_recv(c, quiet_ms)))
                json_object_put(o);
}

/* The other node's Redis subscription is in place once a probe published on from reaches sub. */
static void sync_subscription(Conn *from, Conn *sub, const char *channel) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o;

                publish(from, channel, "{\"probe\":true}");
                o = conn_recv(sub, 100);
                if (o) {
                        json_object_put(o);
                        break;
                }
                cr_assert_lt(mono_ms(), deadline, "the subscription never reached the other node");
        }
        drain(sub, 300);
}

#define SKIP_WITHOUT_REDIS()                                            \
        do {                                                            \
                if (!test_redis_available())                            \
                        cr_skip_test("no redis-server");                \
        } while (0)

Test(cluster_nodes, join_leave_and_restart) {
        static TestRedis redis;
        char *dir, *out = NULL;
        Daemon *a, *b, *c;
        struct json_object *o, *nodes;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start(redis.url, "node-a");
        wait_nodes(a, "node-a*");
        b = node_start(redis.url, "node-b");
        c = node_start(redis.url, "node-c");
        wait_nodes(a, "node-a*,node-b,node-c");
        wait_nodes(b, "node-a,node-b*,node-c");
        wait_log(a, "Cluster: node node-b joined (pid ");
        wait_log(a, "Cluster: node node-c joined (pid ");
        cr_assert(daemon_log_contains(a, "Cluster: 1 node seen: node-a (this node)."));

        /* What each node says of itself, as the others see it. */
        o = status_of(a);
        nodes = jget(o, "data.cluster.nodes");
        for (size_t i = 0; i < json_object_array_length(nodes); i++) {
                struct json_object *e = json_object_array_get_idx(nodes, i);
                Daemon *x = strcmp(jstr(e, "id"), "node-a") == 0 ? a : strcmp(jstr(e, "id"), "node-b") == 0 ? b : c;

                cr_assert_eq(jint(e, "pid"), x->pid, "%s", json_object_to_json_string(e));
                cr_assert_str_eq(jstr(e, "version"), PHOTOND_VERSION);
                cr_assert_gt(jint(e, "lastSeen"), 1600000000000LL);
                cr_assert_gt(jint(e, "started"), 1600000000000LL);
        }
        cr_assert_eq(jbool(o, "data.cluster.duplicateNodeId"), false);
        cr_assert_eq(jint(o, "data.cluster.heartbeatMs"), 200);
        cr_assert_eq(jint(o, "data.cluster.nodesNotShown"), 0);
        /* the heartbeats each node hears on its own beat channel are not messages from other nodes */
        cr_assert_eq(jint(o, "data.cluster.invalid"), 0);
        cr_assert_eq(jint(o, "data.cluster.received"), 0);
        json_object_put(o);

        /* photonctl status: a section, readable, with the nodes. */
        cr_assert_eq(run_ctl(a, &out, "status", NULL), 0);
        cr_assert(strstr(out, "\ncluster\n"), "%s", out);
        cr_assert(strstr(out, "  state         connected since "), "%s", out);
        cr_assert(strstr(out, "  node id       node-a\n"), "%s", out);
        cr_assert(strstr(out, "  nodes seen    3\n"), "%s", out);
        cr_assert(strstr(out, "    node-a (this node): seen "), "%s", out);
        cr_assert(strstr(out, "    node-c: seen "), "%s", out);
        cr_assert_null(strstr(out, "{\"url\""), "the cluster is not one line of JSON: %s", out);
        free(out);

        /* SIGKILL: c says nothing, and goes from the others' lists when its record expires. */
        node_kill(c);
        wait_nodes(a, "node-a*,node-b");
        wait_nodes(b, "node-a,node-b*");
        wait_log(a, "Cluster: node node-c left (last seen ");

        /* c again, at once, with the same id: a new process, not a second one, so no duplicate. */
        c = node_start(redis.url, "node-c");
        wait_nodes(a, "node-a*,node-b,node-c");
        for (int i = 0; i < 5; i++) {
                /* five heartbeats of c, each of which would have seen the old instance if it counted */
                cr_assert_not(duplicate(c));
                (void) poll(NULL, 0, 200);
        }
        cr_assert_not(daemon_log_contains(c, "announces itself with this node's id"));

        node_stop(a);
        node_stop(b);
        node_stop(c);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

/* A clean stop takes the node out of the index at once: with a 5 s heartbeat its record would stay 15 s, and the
 * others see it leave at their next heartbeat instead. */
Test(cluster_nodes, clean_stop_leaves_at_once) {
        static TestRedis redis;
        char *dir;
        Daemon *a, *b;
        uint64_t t0;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start_with(redis.url, "node-a", (const char *[]) { "PHOTOND_CLUSTER_HEARTBEAT_MS=1000", NULL });
        b = node_start_with(redis.url, "node-b", (const char *[]) { "PHOTOND_CLUSTER_HEARTBEAT_MS=5000", NULL });
        wait_nodes(a, "node-a*,node-b");
        t0 = mono_ms();
        cr_assert(daemon_log_contains(b, "Cluster: 2 nodes seen") || daemon_log_contains(b, "Cluster: 1 node seen"));
        {
                /* node_stop() with the log kept for the check */
                int st = daemon_signal_and_wait(b, SIGTERM);

                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "photond exited with status %d", st);
                cr_assert(daemon_log_contains(b, "Cluster: node node-b left the cluster (stopping)."));
                untrack(b);
                daemon_free(b);
        }
        wait_nodes(a, "node-a*");
        cr_assert_lt(mono_ms() - t0, 5000, "node-b's record stayed until it expired");
        wait_log(a, "Cluster: node node-b left");

        node_stop(a);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

Test(cluster_nodes, duplicate_node_id_is_detected) {
        static TestRedis redis;
        char *dir, *out = NULL;
        Daemon *a, *b, *twin;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start(redis.url, "node-a");
        b = node_start(redis.url, "node-b");
        wait_nodes(a, "node-a*,node-b");
        cr_assert_not(duplicate(b));

        /* A second live process calling itself node-b: both hear of it, a does not. */
        twin = node_start(redis.url, "node-b");
        wait_duplicate(b, true);
        wait_duplicate(twin, true);
        wait_log(b, "Cluster: another running photond announces itself with this node's id node-b");
        wait_log(twin, "Cluster: another running photond announces itself with this node's id node-b");
        cr_assert_not(duplicate(a));
        cr_assert_eq(run_ctl(b, &out, "status", NULL), 0);
        cr_assert(strstr(out, "WARNING       another live process uses this node id"), "%s", out);
        free(out);

        /* The twin goes: b is alone with its id again. */
        node_kill(twin);
        wait_duplicate(b, false);
        wait_log(b, "Cluster: node id node-b is no longer announced by another process.");

        node_stop(a);
        node_stop(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

static int64_t incompatible(Daemon *d) {
        struct json_object *o = status_of(d);
        int64_t v = jint(o, "data.cluster.incompatibleNodes");

        json_object_put(o);
        return v;
}

static void wait_incompatible(Daemon *d, int64_t expected) {
        uint64_t deadline = mono_ms() + 10000;

        while (incompatible(d) != expected) {
                cr_assert_lt(mono_ms(), deadline, "incompatibleNodes never became %" PRId64, expected);
                (void) poll(NULL, 0, 20);
        }
}

/* Announces a node in Redis the way the heartbeat script does (docs/cluster.md, "Nodes and the heartbeat"), with
 * the record given, for a minute of Redis' clock. */
static void announce(const TestRedis *redis, const char *id, const char *record) {
        redisContext *c = redisConnectUnix(redis->socket);
        redisReply *r;
        long long now;

        cr_assert(c && !c->err);
        r = redisCommand(c, "TIME");
        cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        now = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
        freeReplyObject(r);
        r = redisCommand(c, "ZADD photon:nodes %lld %s", now + 60000, id);
        cr_assert(r && r->type == REDIS_REPLY_INTEGER);
        freeReplyObject(r);
        r = redisCommand(c, "HSET photon:nodes:seen %s %lld", id, now);
        cr_assert(r && r->type == REDIS_REPLY_INTEGER);
        freeReplyObject(r);
        r = redisCommand(c, "HSET photon:nodes:info %s %s", id, record);
        cr_assert(r && r->type == REDIS_REPLY_INTEGER);
        freeReplyObject(r);
        redisFree(c);
}

/* A node of an older photond (a record without "protocol": protocol 2) or of another protocol is reported by
 * every node: an error in the journal, incompatibleNodes in status, a warning in photonctl status. */
Test(cluster_nodes, other_protocol_is_reported) {
        static TestRedis redis;
        char *dir, *out = NULL;
        Daemon *a, *b;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start(redis.url, "node-a");
        b = node_start(redis.url, "node-b");
        wait_nodes(a, "node-a*,node-b");
        cr_assert_eq(incompatible(a), 0, "two nodes of one build agree");
        {
                struct json_object *o = status_of(a);

                cr_assert_eq(jint(o, "data.cluster.protocol"), 4);
                json_object_put(o);
        }

        announce(&redis, "node-old", "{\"token\":\"00112233445566778899aabbccddeeff\",\"pid\":7,"
                 "\"hostname\":\"old\",\"started\":1,\"version\":\"0.0.9\",\"heartbeatMs\":1000}");
        wait_incompatible(a, 1);
        wait_incompatible(b, 1);
        wait_log(a, "Cluster: node node-old (photond 0.0.9) speaks cluster protocol 2, this node 4");
        cr_assert_eq(run_ctl(a, &out, "status", NULL), 0);
        cr_assert(strstr(out, "WARNING       1 node(s) run a photond that speaks another cluster protocol"), "%s", out);
        free(out);

        /* One error per node and protocol, not one per heartbeat. */
        announce(&redis, "node-new", "{\"token\":\"ffeeddccbbaa99887766554433221100\",\"protocol\":3}");
        wait_incompatible(a, 2);
        wait_log(a, "Cluster: node node-new (photond ?) speaks cluster protocol 3, this node 4");
        {
                const char *needle = "speaks cluster protocol 2";
                char *log = NULL;
                unsigned count = 0;

                cr_assert_geq(read_full_file(a->log_path, 1 << 24, &log, NULL), 0);
                for (const char *p = log; (p = strstr(p, needle)); p++)
                        count++;
                free(log);
                cr_assert_eq(count, 1, "node-old was reported %u times", count);
        }

        node_stop(a);
        node_stop(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

/* A free loopback port for a redis-server on TCP (closed again just before Redis binds it). */
static int free_port(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

        cr_assert_geq(fd, 0);
        cr_assert_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        cr_assert_eq(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
        port = ntohs(sa.sin_port);
        close(fd);
        return port;
}

/* ---- D-Bus: a private dbus-daemon, as tests/integration/test-bus.c runs it ---- */

static pid_t dbus_start(const char *dir, char **ret_address) {
        char buf[512];
        int pipefd[2];
        pid_t pid;
        ssize_t n;

        cr_assert_eq(pipe(pipefd), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                char fd[16], addr[600];
                int devnull = open("/dev/null", O_WRONLY);

                close(pipefd[0]);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (devnull >= 0)
                        dup2(devnull, STDERR_FILENO);
                snprintf(fd, sizeof(fd), "%d", pipefd[1]);
                snprintf(addr, sizeof(addr), "--address=unix:path=%s/bus", dir);
                execlp("dbus-daemon", "dbus-daemon", "--session", "--nofork", "--nopidfile", addr, "--print-address",
                       fd, NULL);
                _exit(127);
        }
        close(pipefd[1]);
        n = read(pipefd[0], buf, sizeof(buf) - 1);
        close(pipefd[0]);
        cr_assert(n > 0, "dbus-daemon did not start");
        buf[n] = 0;
        buf[strcspn(buf, ",\n")] = 0;
        *ret_address = strdup(buf);
        return pid;
}

static void dbus_stop(pid_t pid) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        cur_dbus = 0;
}

typedef struct Watch {
        char states[1024];      /* "state;" for each ClusterStateChanged */
        char props[4096];       /* the names in each PropertiesChanged */
} Watch;

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Watch *w = userdata;

        if (sd_bus_message_is_signal(m, "org.photond.Daemon1", "ClusterStateChanged")) {
                const char *state;
                uint64_t since;

                cr_assert_geq(sd_bus_message_read(m, "st", &state, &since), 0);
                cr_assert_gt(since, 1600000000000ULL);
                strncat(w->states, state, sizeof(w->states) - strlen(w->states) - 2);
                strcat(w->states, ";");
        } else if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged")) {
                const char *iface, *name;

                cr_assert_geq(sd_bus_message_read(m, "s", &iface), 0);
                cr_assert_geq(sd_bus_message_enter_container(m, 'a', "{sv}"), 0);
                while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                        cr_assert_geq(sd_bus_message_read(m, "s", &name), 0);
                        strncat(w->props, name, sizeof(w->props) - strlen(w->props) - 2);
                        strcat(w->props, ";");
                        cr_assert_geq(sd_bus_message_skip(m, "v"), 0);
                        cr_assert_geq(sd_bus_message_exit_container(m), 0);
                }
        }
        return 0;
}

static void bus_wait_for(sd_bus *bus, const char *haystack, const char *text) {
        uint64_t deadline = mono_ms() + 15000;

        while (!strstr(haystack, text)) {
                cr_assert_lt(mono_ms(), deadline, "never got '%s' (have '%s')", text, haystack);
                while (sd_bus_process(bus, NULL) > 0)
                        ;
                if (!strstr(haystack, text))
                        (void) sd_bus_wait(bus, 100 * 1000);
        }
}

static char* get_property(sd_bus *bus, const char *name) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        char *s = NULL;

        cr_assert_geq(sd_bus_get_property_string(bus, "org.photond.Daemon1", "/org/photond/Daemon1",
                                                 "org.photond.Daemon1", name, &error, &s), 0, "%s: %s", name,
                      error.message);
        return s;
}

/* The nodes property as "id[*],…" (self marked with '*'). */
static void bus_nodes(sd_bus *bus, char *buf, size_t size) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *id;
        int64_t seen;
        int self;
        size_t len = 0;

        buf[0] = 0;
        cr_assert_geq(sd_bus_get_property(bus, "org.photond.Daemon1", "/org/photond/Daemon1", "org.photond.Daemon1",
                                          "ClusterNodes", &error, &reply, "a(sxb)"), 0, "%s", error.message);
        cr_assert_geq(sd_bus_message_enter_container(reply, 'a', "(sxb)"), 0);
        while (sd_bus_message_read(reply, "(sxb)", &id, &seen, &self) > 0) {
                cr_assert_gt(seen, 1600000000000LL);
                len += snprintf(buf + len, size - len, "%s%s%s", len ? "," : "", id, self ? "*" : "");
        }
        sd_bus_message_unref(reply);
}

static bool text_has(const char *text, const char *secret) {
        return text && strstr(text, secret);
}

/* The state through every window an operator has, and a password in the URL that none of them shows: status,
 * photonctl status (both forms), D-Bus (properties, GetStatus), the log. Redis goes and comes back on the way:
 * ClusterStateChanged and PropertiesChanged say so, and the journal has one line per transition. */
Test(cluster_nodes, state_on_every_window_and_no_password) {
        static const char secret[] = "Sup3rS3cretPw";
        static TestRedis redis;
        char *dir, *addr, url[200], port[16], env_bus[700], *out = NULL, *s, nodes[256];
        Daemon *a, *b;
        pid_t dbus;
        sd_bus *bus = NULL;
        Watch w = {};
        struct json_object *o;
        const char *redis_args[] = { "--port", port, "--bind", "127.0.0.1", "--requirepass", secret, NULL };

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        snprintf(port, sizeof(port), "%d", free_port());
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, redis_args), 0);
        snprintf(url, sizeof(url), "redis://default:%s@127.0.0.1:%s/0", secret, port);
        dbus = cur_dbus = dbus_start(dir, &addr);
        snprintf(env_bus, sizeof(env_bus), "DBUS_SESSION_BUS_ADDRESS=%s", addr);

        cr_assert_geq(sd_bus_new(&bus), 0);
        cr_assert_geq(sd_bus_set_address(bus, addr), 0);
        cr_assert_geq(sd_bus_set_bus_client(bus, 1), 0);
        cr_assert_geq(sd_bus_start(bus), 0);
        cr_assert_geq(sd_bus_add_match(bus, NULL, "type='signal',sender='org.photond.Daemon1',"
                                       "path='/org/photond/Daemon1'", on_signal, &w), 0);

        {
                const char *args[] = { "--bus=user", NULL };
                char url_env[300];
                const char *env[] = { url_env, "PHOTOND_NODE_ID=node-a", "PHOTOND_CLUSTER_HEARTBEAT_MS=200",
                                      "PHOTOND_CLUSTER_RECONNECT_MAX_MS=200", env_bus, NULL };

                snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", url);
                a = track(daemon_start(&(DaemonOptions) { .env = env, .args = args }));
        }
        b = node_start(url, "node-b");
        wait_state(a, "connected");
        wait_nodes(a, "node-a*,node-b");
        bus_wait_for(bus, w.props, "ClusterNodes;");

        s = get_property(bus, "ClusterState");
        cr_assert_str_eq(s, "connected");
        free(s);
        bus_nodes(bus, nodes, sizeof(nodes));
        cr_assert_str_eq(nodes, "node-a*,node-b");

        /* Redis goes: one state change on every window. */
        test_redis_stop(&redis);
        wait_state(a, "reconnecting");
        bus_wait_for(bus, w.states, "reconnecting;");
        s = get_property(bus, "ClusterState");
        cr_assert_str_eq(s, "reconnecting");
        free(s);
        cr_assert(strstr(w.props, "ClusterState;"), "%s", w.props);
        cr_assert(strstr(w.props, "ClusterStateSince;"), "%s", w.props);
        o = status_of(a);
        cr_assert_str_eq(jstr(o, "data.cluster.state"), "reconnecting");
        cr_assert_not(jbool(o, "data.cluster.connected"));
        cr_assert(jstr(o, "data.cluster.lastError"));
        json_object_put(o);
        cr_assert_eq(run_ctl(a, &out, "status", NULL), 0);
        cr_assert(strstr(out, "  state         reconnecting since "), "%s", out);
        cr_assert(strstr(out, "  last error    "), "%s", out);
        cr_assert(strstr(out, "redis://default:***@127.0.0.1:"), "%s", out);
        cr_assert_not(text_has(out, secret), "%s", out);
        free(out);
        wait_log(a, "Cluster: lost Redis, reconnecting since ");

        /* ... and comes back. */
        cr_assert_eq(test_redis_start(&redis, dir, redis_args), 0);
        wait_state(a, "connected");
        bus_wait_for(bus, w.states, "reconnecting;connected;");
        wait_log(a, "Cluster: connected to Redis again, back after ");
        wait_nodes(a, "node-a*,node-b");
        s = get_property(bus, "ClusterState");
        cr_assert_str_eq(s, "connected");
        free(s);

        /* One line per transition of the cluster, whatever each connection did. */
        {
                FILE *f = fopen(a->log_path, "re");
                char line[4096];
                unsigned lost = 0, back = 0;

                cr_assert(f);
                while (fgets(line, sizeof(line), f)) {
                        lost += strstr(line, "Cluster: lost Redis") != NULL;
                        back += strstr(line, "Cluster: connected to Redis again") != NULL;
                        cr_assert_not(text_has(line, secret), "the log shows the password: %s", line);
                }
                fclose(f);
                cr_assert_eq(lost, 1);
                cr_assert_eq(back, 1);
        }

        /* The password nowhere. */
        o = status_of(a);
        cr_assert(strncmp(jstr(o, "data.cluster.url"), "redis://default:***@127.0.0.1:", 30) == 0);
        cr_assert_not(text_has(json_object_to_json_string(o), secret));
        json_object_put(o);
        cr_assert_eq(run_ctl(a, &out, "--json", "status", NULL), 0);
        cr_assert_not(text_has(out, secret), "%s", out);
        free(out);
        cr_assert_eq(run_ctl(a, &out, "status", NULL), 0);
        cr_assert_not(text_has(out, secret), "%s", out);
        free(out);
        {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                sd_bus_message *reply = NULL;
                char *dump = NULL;
                size_t size = 0;
                FILE *f = open_memstream(&dump, &size);

                cr_assert_geq(sd_bus_call_method(bus, "org.photond.Daemon1", "/org/photond/Daemon1",
                                                 "org.photond.Daemon1", "GetStatus", &error, &reply, ""), 0, "%s",
                              error.message);
                cr_assert_geq(sd_bus_message_dump(reply, f, SD_BUS_MESSAGE_DUMP_WITH_HEADER), 0);
                fclose(f);
                cr_assert(strstr(dump, "***@127.0.0.1"), "GetStatus has no cluster url: %s", dump);
                cr_assert_not(text_has(dump, secret), "%s", dump);
                free(dump);
                sd_bus_message_unref(reply);
        }
        cr_assert_not(daemon_log_contains(a, secret));
        cr_assert_not(daemon_log_contains(b, secret));

        sd_bus_flush_close_unref(bus);
        node_stop(a);
        node_stop(b);
        test_redis_stop(&redis);
        dbus_stop(dbus);
        free(addr);
        tmpdir_remove(dir);
}

/* Without a cluster URL, D-Bus says so: an empty state and no nodes. */
Test(cluster_nodes, single_node_bus_properties) {
        char *dir = tmpdir_new(), *addr, env_bus[700], *s, nodes[64];
        pid_t dbus = cur_dbus = dbus_start(dir, &addr);
        sd_bus *bus = NULL;
        Daemon *d;

        snprintf(env_bus, sizeof(env_bus), "DBUS_SESSION_BUS_ADDRESS=%s", addr);
        d = track(daemon_start(&(DaemonOptions) { .env = (const char *[]) { env_bus, NULL },
                                                  .args = (const char *[]) { "--bus=user", NULL } }));
        cr_assert_geq(sd_bus_new(&bus), 0);
        cr_assert_geq(sd_bus_set_address(bus, addr), 0);
        cr_assert_geq(sd_bus_set_bus_client(bus, 1), 0);
        cr_assert_geq(sd_bus_start(bus), 0);
        s = get_property(bus, "ClusterState");
        cr_assert_str_eq(s, "");
        free(s);
        bus_nodes(bus, nodes, sizeof(nodes));
        cr_assert_str_eq(nodes, "");

        sd_bus_flush_close_unref(bus);
        node_stop(d);
        dbus_stop(dbus);
        free(addr);
        tmpdir_remove(dir);
}

/* An invalid cap: photond refuses to start, and says which and why. */
Test(cluster_nodes, invalid_caps_refuse_to_start) {
        static const char *const bad[] = {
                "PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS=0",
                "PHOTOND_CLUSTER_MAX_PENDING=lots",
                "PHOTOND_CLUSTER_RECONNECT_MAX_MS=99999999",
                "PHOTOND_CLUSTER_HEARTBEAT_MS=-1",
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char name[64];
                int out[2], st;
                pid_t pid;
                char *home = tmpdir_new(), buf[4096];
                ssize_t n;
                size_t len = 0;

                snprintf(name, sizeof(name), "%.*s", (int) strcspn(bad[i], "="), bad[i]);
                cr_assert_eq(pipe(out), 0);
                pid = fork();
                cr_assert(pid >= 0);
                if (pid == 0) {
                        dup2(out[1], STDERR_FILENO);
                        setenv("PHOTON_HOME", home, 1);
                        setenv("PHOTOND_CLUSTER_URL", "unix:///nonexistent/redis.sock", 1);
                        putenv((char *) bad[i]);
                        execl(photond_binary(), "photond", "--bus=none", NULL);
                        _exit(127);
                }
                close(out[1]);
                while ((n = read(out[0], buf + len, sizeof(buf) - 1 - len)) > 0)
                        len += n;
                buf[len] = 0;
                close(out[0]);
                cr_assert_eq(waitpid(pid, &st, 0), pid);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "%s: photond started (status %d)", bad[i], st);
                cr_assert(strstr(buf, "Invalid ") && strstr(buf, name) && strstr(buf, "expected a whole number"),
                          "%s: %s", bad[i], buf);
                tmpdir_remove(home);
        }
}

/* ---- failures of what exists ---- */

/* Redis stopped and started again while a publisher on a keeps publishing and subscribers on b listen: both
 * nodes reconnect by themselves, no request waits on Redis (a publish is refused at once with "Cluster
 * unavailable" while it is away: the channels slice made publishes wait for Redis), b's subscribers hear
 * refresh_needed for the outage, the state goes reconnecting -> connected, and messages flow again. */
Test(cluster_nodes, redis_restart_mid_traffic) {
        static TestRedis redis;
        char *dir, msg[64];
        Daemon *a, *b;
        Conn *pub, *sub1, *sub2;
        struct json_object *o;
        unsigned n = 0;
        uint64_t t0;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start_with(redis.url, "node-a", (const char *[]) { "PHOTOND_CLUSTER_RECONNECT_MAX_MS=300", NULL });
        b = node_start_with(redis.url, "node-b", (const char *[]) { "PHOTOND_CLUSTER_RECONNECT_MAX_MS=300", NULL });
        wait_state(a, "connected");
        wait_state(b, "connected");
        pub = conn_open(a);
        sub1 = conn_open(b);
        sub2 = conn_open(b);
        subscribe(sub1, "feed");
        subscribe(sub2, "feed:*");
        sync_subscription(pub, sub1, "feed");
        drain(sub2, 300);

        /* Traffic before, during and after the outage: every publish is answered at once. */
        for (int i = 0; i < 50; i++) {
                snprintf(msg, sizeof(msg), "{\"n\":%u}", ++n);
                publish(pub, "feed", msg);
        }
        test_redis_stop(&redis);
        t0 = mono_ms();
        while (state_is(b, "connected") || state_is(a, "connected")) {
                snprintf(msg, sizeof(msg), "{\"n\":%u}", ++n);
                (void) publish_maybe(pub, "feed", msg);
                cr_assert_lt(mono_ms() - t0, 10000, "the nodes never noticed Redis went away");
        }
        for (int i = 0; i < 50; i++) {
                uint64_t s = mono_ms();

                snprintf(msg, sizeof(msg), "{\"n\":%u}", ++n);
                cr_assert_not(publish_maybe(pub, "feed", msg), "a publish was accepted while Redis was away");
                cr_assert_lt(mono_ms() - s, 1000, "a publish waited on the missing Redis");
        }
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        wait_state(a, "connected");
        wait_state(b, "connected");

        /* b's subscribers: the messages before, then refresh_needed (the outage), each once. */
        for (int k = 0; k < 2; k++) {
                Conn *s = k == 0 ? sub1 : sub2;
                bool refresh = false;
                uint64_t deadline = mono_ms() + 10000;

                while (!refresh) {
                        o = conn_recv(s, 200);
                        cr_assert_lt(mono_ms(), deadline, "no refresh_needed on b after the outage");
                        if (!o)
                                continue;
                        if (strcmp(jstr(o, "type"), "refresh_needed") == 0) {
                                refresh = true;
                                cr_assert_str_eq(jstr(o, "channel"), k == 0 ? "feed" : "feed:*");
                        } else
                                cr_assert_str_eq(jstr(o, "type"), "channel_message");
                        json_object_put(o);
                }
        }
        sync_subscription(pub, sub1, "feed");
        drain(sub2, 300);
        for (int i = 1; i <= 20; i++) {
                snprintf(msg, sizeof(msg), "{\"after\":%d}", i);
                publish(pub, "feed:x", msg);
        }
        for (int i = 1; i <= 20; i++) {
                o = conn_expect(sub2, 5000);
                cr_assert_str_eq(jstr(o, "type"), "channel_message", "%s", json_object_to_json_string(o));
                cr_assert_eq(jint(o, "message.after"), i);
                json_object_put(o);
        }
        o = status_of(a);
        cr_assert_gt(jint(o, "data.cluster.publishRefused"), 0, "publishes refused during the outage are counted");
        json_object_put(o);
        wait_log(b, "Cluster: lost Redis, reconnecting since ");
        wait_log(b, "Cluster: connected to Redis again, back after ");

        conn_close(pub);
        conn_close(sub1);
        conn_close(sub2);
        node_stop(a);
        node_stop(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

/* A node killed with SIGKILL: the others keep serving, between themselves too, and see it leave. */
Test(cluster_nodes, node_killed_the_others_keep_serving) {
        static TestRedis redis;
        char *dir;
        Daemon *a, *b, *c;
        Conn *pub, *sub;
        struct json_object *o;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start(redis.url, "node-a");
        b = node_start(redis.url, "node-b");
        c = node_start(redis.url, "node-c");
        wait_nodes(a, "node-a*,node-b,node-c");
        {
                Conn *sub_c = conn_open(c);

                subscribe(sub_c, "jobs");
                /* c dies holding a subscription and a connection */
                node_kill(c);
                conn_close(sub_c);
        }
        pub = conn_open(a);
        sub = conn_open(b);
        subscribe(sub, "jobs");
        sync_subscription(pub, sub, "jobs");
        wait_nodes(a, "node-a*,node-b");
        wait_nodes(b, "node-a,node-b*");
        wait_log(b, "Cluster: node node-c left");
        for (int i = 1; i <= 10; i++) {
                char msg[32];

                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                publish(pub, "jobs", msg);
        }
        for (int i = 1; i <= 10; i++) {
                o = conn_expect(sub, 5000);
                cr_assert_eq(jint(o, "message.n"), i, "%s", json_object_to_json_string(o));
                json_object_put(o);
        }
        cr_assert(state_is(a, "connected"));
        cr_assert(state_is(b, "connected"));

        conn_close(pub);
        conn_close(sub);
        node_stop(a);
        node_stop(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

/* A Redis that accepts and never answers (SIGSTOP): the command timeout drops the connection, status says so,
 * requests do not hang; after SIGCONT the node is back. */
Test(cluster_nodes, redis_that_never_answers) {
        static TestRedis redis;
        char *dir, *out = NULL;
        Daemon *a;
        Conn *pub, *sub;
        struct json_object *o;
        uint64_t t0;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        a = node_start_with(redis.url, "node-a", (const char *[]) { "PHOTOND_CLUSTER_COMMAND_TIMEOUT_MS=150",
                                                                    "PHOTOND_CLUSTER_RECONNECT_MAX_MS=400", NULL });
        wait_state(a, "connected");
        pub = conn_open(a);
        sub = conn_open(a);
        subscribe(sub, "local");

        cr_assert_eq(kill(redis.pid, SIGSTOP), 0);
        /* Nothing is sent by the clients: the heartbeat alone finds out, within heartbeat + timeout (350 ms here;
         * with the default timeout it would take 1800 ms at least). */
        t0 = mono_ms();
        wait_state(a, "reconnecting");
        cr_assert_lt(mono_ms() - t0, 1500, "took %" PRIu64 " ms", mono_ms() - t0);
        o = status_of(a);
        cr_assert_str_eq(jstr(o, "data.cluster.lastError"), "timed out", "%s", json_object_to_json_string(o));
        json_object_put(o);
        wait_log(a, "Cluster: lost Redis, reconnecting since ");
        wait_log(a, ": timed out.");

        /* Requests go on, answered at once; a publish is refused ("Cluster unavailable": the channels slice made
         * publishes wait for Redis) and reaches no subscriber, not even a local one. */
        for (int i = 1; i <= 20; i++) {
                char msg[32];
                uint64_t s = mono_ms();

                snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
                cr_assert_not(publish_maybe(pub, "local", msg), "a publish was accepted by a stuck Redis");
                cr_assert_lt(mono_ms() - s, 1000, "a publish waited on the stuck Redis");
        }
        /* (A refresh_needed may come: the subscription may have come before the node's own in Redis was
         * confirmed, which tells the subscribers of every key.) */
        while ((o = conn_recv(sub, 300))) {
                cr_assert_str_neq(jstr(o, "type"), "channel_message", "delivered anyway: %s",
                                  json_object_to_json_string(o));
                json_object_put(o);
        }
        cr_assert_eq(run_ctl(a, &out, "status", NULL), 0);
        cr_assert(strstr(out, "  state         reconnecting since "), "%s", out);
        cr_assert(strstr(out, "  last error    timed out"), "%s", out);
        free(out);
        /* The attempts against the stuck server keep failing, and the pending commands stay within the cap. */
        (void) poll(NULL, 0, 1000);
        cr_assert(state_is(a, "reconnecting"));

        cr_assert_eq(kill(redis.pid, SIGCONT), 0);
        wait_state(a, "connected");
        wait_log(a, "Cluster: connected to Redis again, back after ");

        conn_close(pub);
        conn_close(sub);
        node_stop(a);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}

/* ---- a relay that goes silent ---- */

/* A relay between photond and redis-server on Unix sockets, in a child process. It copies bytes both ways; after
 * SIGUSR1 it swallows everything, both ways, on the connections that had subscribed by then, and keeps them open:
 * a subscriber connection whose peer went silent without closing, as a half-open TCP connection or a hung proxy
 * looks. Connections made later are relayed as before. */
static volatile sig_atomic_t relay_silence;

static void on_usr1(int sig) {
        relay_silence = 1;
}

static void write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);

                if (k <= 0)
                        return;
                p += k;
                n -= (size_t) k;
        }
}

static void relay_run(int listen_fd, const char *target) {
        struct { int fd[2]; bool sub, silent; } pairs[32] = {};
        size_t n_pairs = 0;
        bool silenced = false;

        for (;;) {
                struct pollfd p[1 + 2 * 32];
                size_t n = 1;

                if (relay_silence && !silenced) {
                        for (size_t i = 0; i < n_pairs; i++)
                                pairs[i].silent = pairs[i].sub;
                        silenced = true;
                }
                p[0] = (struct pollfd) { .fd = listen_fd, .events = POLLIN };
                for (size_t i = 0; i < n_pairs; i++)
                        for (int k = 0; k < 2; k++)
                                p[n++] = (struct pollfd) { .fd = pairs[i].fd[k], .events = POLLIN };
                if (poll(p, n, -1) < 0)
                        continue;       /* EINTR: SIGUSR1 */
                if (p[0].revents & POLLIN) {
                        struct sockaddr_un sa = { .sun_family = AF_UNIX };
                        int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC), t = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

                        bool fits = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", target) < (int) sizeof(sa.sun_path);

                        if (fits && c >= 0 && t >= 0 && n_pairs < 32 &&
                            connect(t, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                                pairs[n_pairs++] = (typeof(pairs[0])) { .fd = { c, t } };
                        else {
                                close(c);
                                close(t);
                        }
                        continue;
                }
                for (size_t i = 0, j = 1; i < n_pairs; i++)
                        for (int k = 0; k < 2; k++, j++) {
                                char buf[65536];
                                ssize_t r;

                                if (!(p[j].revents & (POLLIN | POLLHUP | POLLERR)))
                                        continue;
                                r = read(pairs[i].fd[k], buf, sizeof(buf));
                                if (r <= 0) {
                                        /* either side closed: close both (the entry stays, dead, for simplicity) */
                                        close(pairs[i].fd[0]);
                                        close(pairs[i].fd[1]);
                                        pairs[i].fd[0] = pairs[i].fd[1] = -1;
                                        continue;
                                }
                                if (k == 0 && memmem(buf, (size_t) r, "SUBSCRIBE", 9))
                                        pairs[i].sub = true;
                                if (!pairs[i].silent)
                                        write_all(pairs[i].fd[1 - k], buf, (size_t) r);
                        }
        }
}

static pid_t relay_start(const char *path, const char *target) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pid_t pid;

        cr_assert_geq(fd, 0);
        cr_assert_lt(strlen(path), sizeof(sa.sun_path));
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        cr_assert_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        /* listening before the fork: a connect succeeds from now on, no waiting needed */
        cr_assert_eq(listen(fd, 16), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                signal(SIGUSR1, on_usr1);
                relay_run(fd, target);
                _exit(0);
        }
        close(fd);
        return pid;
}

/* The subscriber connection goes silent without closing (the relay swallows it): the heartbeats the node publishes
 * for itself stop coming back while Redis answers them, so the node drops that connection, reconnects, tells its
 * subscribers (refresh_needed), and messages from the other node come again. */
Test(cluster_nodes, silent_subscriber_connection_is_dropped) {
        static TestRedis redis;
        char *dir, relay_path[300], url[320];
        Daemon *a, *b;
        Conn *pub, *sub;
        struct json_object *o;
        uint64_t deadline;
        bool refresh = false;

        SKIP_WITHOUT_REDIS();
        dir = tmpdir_new();
        cur_redis = &redis;
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        snprintf(relay_path, sizeof(relay_path), "%s/relay.sock", dir);
        snprintf(url, sizeof(url), "unix://%s", relay_path);
        cur_relay = relay_start(relay_path, redis.socket);
        a = node_start_with(url, "node-a", (const char *[]) { "PHOTOND_CLUSTER_RECONNECT_MAX_MS=200", NULL });
        b = node_start(redis.url, "node-b");
        wait_state(a, "connected");
        wait_state(b, "connected");
        pub = conn_open(b);
        sub = conn_open(a);
        subscribe(sub, "news");
        sync_subscription(pub, sub, "news");

        cr_assert_eq(kill(cur_relay, SIGUSR1), 0);
        wait_log(a, "Cluster: the subscriber connection heard nothing for ");
        wait_log(a, "Redis (subscriber): connection lost: heard no heartbeat. Reconnecting.");
        deadline = mono_ms() + 10000;
        while (!refresh) {
                o = conn_recv(sub, 200);
                cr_assert_lt(mono_ms(), deadline, "no refresh_needed after the silent subscriber was dropped");
                if (!o)
                        continue;
                refresh = strcmp(jstr(o, "type"), "refresh_needed") == 0;
                json_object_put(o);
        }
        wait_state(a, "connected");
        sync_subscription(pub, sub, "news");
        publish(pub, "news", "{\"n\":1}");
        o = conn_expect(sub, 5000);
        cr_assert_eq(jint(o, "message.n"), 1, "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(pub);
        conn_close(sub);
        node_stop(a);
        node_stop(b);
        kill(cur_relay, SIGKILL);
        waitpid(cur_relay, NULL, 0);
        cur_relay = 0;
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}
