/* SPDX-License-Identifier: MIT */

/* org.photond.Daemon1 on a private dbus-daemon: introspection, properties, every method, errors, signals, and
 * lists that mirror the socket protocol's lists. busctl is the client users have, so most checks use it. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "harness.h"
#include "redis-helper.h"
#include "json-util.h"

static pid_t bus_pid, system_bus_pid;
static char *bus_dir, *bus_address;

/* Starts a dbus-daemon listening on unix:path=DIR/NAME, with the session configuration or the given config file.
 * It prints its address on a pipe once it listens: the readiness signal. *ret_address: that address. */
static pid_t dbus_spawn(const char *name, const char *config_file, char **ret_address) {
        char buf[512];
        int pipefd[2];
        pid_t pid;
        ssize_t n;

        cr_assert_eq(pipe(pipefd), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                char fd[16], addr[600], config[600];

                close(pipefd[0]);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                /* It complains that it cannot raise its fd limit in a sandbox; that is noise here. */
                int devnull = open("/dev/null", O_WRONLY);
                if (devnull >= 0 && !getenv("PHOTOND_TEST_VERBOSE"))
                        dup2(devnull, STDERR_FILENO);
                snprintf(fd, sizeof(fd), "%d", pipefd[1]);
                snprintf(addr, sizeof(addr), "--address=unix:path=%s/%s", bus_dir, name);
                snprintf(config, sizeof(config), "--config-file=%s", config_file ?: "");
                execlp("dbus-daemon", "dbus-daemon", config_file ? config : "--session", "--nofork", "--nopidfile",
                       addr, "--print-address", fd, NULL);
                _exit(127);
        }
        close(pipefd[1]);
        n = read(pipefd[0], buf, sizeof(buf) - 1);
        close(pipefd[0]);
        cr_assert(n > 0, "dbus-daemon did not start");
        buf[n] = '\0';
        /* Without its guid=, so the address also reaches the next dbus-daemon there, as the user bus's does. */
        buf[strcspn(buf, ",\n")] = '\0';
        if (ret_address)
                *ret_address = strdup(buf);
        return pid;
}

static void dbus_kill(pid_t *pid) {
        if (*pid > 0) {
                kill(*pid, SIGKILL);
                waitpid(*pid, NULL, 0);
        }
        *pid = 0;
}

/* A private session bus for each test. */
static void bus_start(void) {
        char tmpl[] = "/tmp/photond-bus-XXXXXX";

        cr_assert(mkdtemp(tmpl));
        bus_dir = strdup(tmpl);
        bus_pid = dbus_spawn("bus", NULL, &bus_address);
        setenv("DBUS_SESSION_BUS_ADDRESS", bus_address, 1);
}

static void bus_stop(void) {
        if (bus_pid > 0) {
                kill(bus_pid, SIGTERM);
                waitpid(bus_pid, NULL, 0);
        }
        dbus_kill(&system_bus_pid);
        if (bus_dir) {
                char cmd[600];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", bus_dir);
                (void) !system(cmd);
        }
        free(bus_dir);
        free(bus_address);
        bus_dir = bus_address = NULL;
}

TestSuite(bus, .init = bus_start, .fini = bus_stop);

/* extra: more "NAME=value" entries (limits), NULL-terminated; may be NULL. args: photond's arguments after
 * --bus=user; may be NULL. */
static Daemon* start_on_bus_with_args(const char *const *extra, const char *const *args) {
        static char envbuf[700];
        const char *env[16] = { envbuf }, *argv[8] = { "--bus=user" };
        size_t n = 1;

        snprintf(envbuf, sizeof(envbuf), "DBUS_SESSION_BUS_ADDRESS=%s", bus_address);
        for (; extra && *extra; extra++) {
                cr_assert(n < 15);
                env[n++] = *extra;
        }
        env[n] = NULL;
        for (n = 1; args && *args; args++) {
                cr_assert(n < 7);
                argv[n++] = *args;
        }
        argv[n] = NULL;
        /* READY=1 comes only after the name request was answered, so no waiting for the name is needed. */
        return daemon_start(&(DaemonOptions) { .env = env, .args = argv });
}

static Daemon* start_on_bus_with(const char *const *extra) {
        return start_on_bus_with_args(extra, NULL);
}

static Daemon* start_on_bus(void) {
        return start_on_bus_with(NULL);
}

/* Runs a command, returns its exit status, stdout and stderr (each may be NULL). */
static int run(char **ret_out, char **ret_err, const char *const *argv) {
        int out[2], err[2], status;
        pid_t pid;

        cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
        cr_assert_eq(pipe2(err, O_CLOEXEC), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(out[1], 1);
                dup2(err[1], 2);
                execvp(argv[0], (char**) argv);
                _exit(127);
        }
        close(out[1]);
        close(err[1]);
        for (int k = 0; k < 2; k++) {
                int fd = k == 0 ? out[0] : err[0];
                size_t len = 0, alloc = 65536;
                char *b = malloc(alloc);
                ssize_t n;
                while ((n = read(fd, b + len, alloc - len - 1)) > 0) {
                        len += n;
                        if (alloc - len < 1024)
                                b = realloc(b, alloc *= 2);
                }
                b[len] = '\0';
                close(fd);
                if (k == 0 && ret_out)
                        *ret_out = b;
                else if (k == 1 && ret_err)
                        *ret_err = b;
                else
                        free(b);
        }
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* busctl --user --json=short call ... → the "data" array of the reply. */
static struct json_object* busctl_call(const char *method, const char *sig, const char *a1, const char *a2) {
        const char *argv[16] = { "busctl", "--user", "--json=short", "call", "org.photond.Daemon1",
                                 "/org/photond/Daemon1", "org.photond.Daemon1", method };
        int n = 8;
        char *out = NULL, *err = NULL;
        struct json_object *o;

        if (sig) {
                argv[n++] = sig;
                argv[n++] = a1;
                if (a2)
                        argv[n++] = a2;
        }
        argv[n] = NULL;
        cr_assert_eq(run(&out, &err, argv), 0, "busctl call %s failed: %s", method, err);
        /* A method with no result prints nothing. */
        o = out[strspn(out, " \n")] ? json_tokener_parse(out) : NULL;
        cr_assert(o || !out[strspn(out, " \n")], "busctl output is not JSON: %s", out);
        free(out);
        free(err);
        return o;
}

static struct json_object* get_property(const char *name) {
        const char *argv[] = { "busctl", "--user", "--json=short", "get-property", "org.photond.Daemon1",
                               "/org/photond/Daemon1", "org.photond.Daemon1", name, NULL };
        char *out = NULL;
        struct json_object *o;

        cr_assert_eq(run(&out, NULL, argv), 0);
        o = json_tokener_parse(out);
        cr_assert(o, "%s", out);
        free(out);
        return o;
}

Test(bus, introspect_and_properties) {
        Daemon *d = start_on_bus();
        const char *argv[] = { "busctl", "--user", "introspect", "org.photond.Daemon1", "/org/photond/Daemon1", NULL };
        char *out = NULL;
        struct json_object *p;

        cr_assert_eq(run(&out, NULL, argv), 0);
        static const char *const members[] = {
                ".ListLocks", ".ListJobs", ".ListChannels", ".GetStatus", ".ReleaseLock", ".RunJob",
                ".Unschedule", ".Publish", ".JobFinished", ".LockChanged", ".Version", ".StartedAt", ".Clients",
                ".Channels", ".Subscriptions", ".Locks", ".Jobs", ".WebhookEnabled", ".ClusterState",
                ".ClusterStateSince", ".ClusterNodes", ".ClusterStateChanged",
        };
        for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
                cr_assert(strstr(out, members[i]), "%s missing from introspection", members[i]);
        free(out);

        p = get_property("Version");
        cr_assert_str_eq(jstr(p, "data"), PHOTOND_VERSION);
        json_object_put(p);

        Conn *c = conn_open(d);
        struct json_object *o = conn_request(c, "l", "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"a\",\"sessionId\":\"s\"}");
        json_object_put(o);
        p = get_property("Locks");
        cr_assert_eq(jint(p, "data"), 1);
        json_object_put(p);
        p = get_property("Clients");
        cr_assert_eq(jint(p, "data"), 1);
        json_object_put(p);
        p = get_property("WebhookEnabled");
        cr_assert_eq(jbool(p, "data"), false);
        json_object_put(p);
        p = get_property("StartedAt");
        cr_assert(jint(p, "data") > 1600000000000LL);
        json_object_put(p);
        /* a single node: no cluster state, no nodes (tests/integration/test-cluster-nodes.c has the cluster) */
        p = get_property("ClusterState");
        cr_assert_str_eq(jstr(p, "data"), "");
        json_object_put(p);
        p = get_property("ClusterStateSince");
        cr_assert_eq(jint(p, "data"), 0);
        json_object_put(p);

        conn_close(c);
        daemon_free(d);
}

Test(bus, list_locks_mirrors_the_socket) {
        Daemon *d = start_on_bus();
        Conn *c = conn_open(d);
        struct json_object *o, *socket_list, *bus_list;

        o = conn_request(c, "1", "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"db\",\"sessionId\":\"alice\",\"lockTimeout\":60000}");
        cr_assert(jbool(o, "data.acquired"));
        json_object_put(o);
        o = conn_request(c, "2", "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"cache\",\"sessionId\":\"bob\"}");
        json_object_put(o);

        socket_list = conn_request(c, "3", "{\"type\":\"list_locks\",\"id\":\"3\"}");
        bus_list = busctl_call("ListLocks", NULL, NULL, NULL);
        struct json_object *locks = jget(socket_list, "data.locks"), *rows = jget(bus_list, "data.0");
        cr_assert_eq(json_object_array_length(rows), json_object_array_length(locks));
        for (size_t i = 0; i < json_object_array_length(locks); i++) {
                struct json_object *l = json_object_array_get_idx(locks, i);
                bool found = false;
                for (size_t k = 0; k < json_object_array_length(rows); k++) {
                        struct json_object *r = json_object_array_get_idx(rows, k);
                        if (strcmp(json_object_get_string(json_object_array_get_idx(r, 0)), jstr(l, "name")) != 0)
                                continue;
                        found = true;
                        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 1)), jstr(l, "holder"));
                        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 2)), jint(l, "acquiredAt"));
                        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 3)), jint(l, "expiresAt"));
                        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 4)), jint(l, "fencingToken"));
                }
                cr_assert(found, "lock %s not listed on the bus", jstr(l, "name"));
        }
        json_object_put(socket_list);
        json_object_put(bus_list);

        /* Force release by an admin, then the socket agrees it is free. */
        json_object_put(busctl_call("ReleaseLock", "s", "db", NULL));
        o = conn_request(c, "4", "{\"type\":\"query_lock\",\"id\":\"4\",\"lockName\":\"db\"}");
        cr_assert(json_object_is_type(jget(o, "data.holder"), json_type_null));
        json_object_put(o);

        conn_close(c);
        daemon_free(d);
}

Test(bus, errors_are_named) {
        Daemon *d = start_on_bus();
        char *err = NULL;
        const char *release[] = { "busctl", "--user", "call", "org.photond.Daemon1", "/org/photond/Daemon1",
                                  "org.photond.Daemon1", "ReleaseLock", "s", "nope", NULL };
        const char *run_job[] = { "busctl", "--user", "call", "org.photond.Daemon1", "/org/photond/Daemon1",
                                  "org.photond.Daemon1", "RunJob", "s", "ghost", NULL };
        const char *unsched[] = { "busctl", "--user", "call", "org.photond.Daemon1", "/org/photond/Daemon1",
                                  "org.photond.Daemon1", "Unschedule", "s", "ghost", NULL };
        const char *publish[] = { "busctl", "--user", "call", "org.photond.Daemon1", "/org/photond/Daemon1",
                                  "org.photond.Daemon1", "Publish", "ss", "a:b", "{not json", NULL };
        const char *wrong[] = { "busctl", "--user", "call", "org.photond.Daemon1", "/org/photond/Daemon1",
                                "org.photond.Daemon1", "ReleaseLock", "u", "5", NULL };

        cr_assert_neq(run(NULL, &err, release), 0);
        cr_assert(strstr(err, "No live lock named 'nope'"), "%s", err);
        free(err);
        cr_assert_neq(run(NULL, &err, run_job), 0);
        cr_assert(strstr(err, "No job 'ghost'"), "%s", err);
        free(err);
        cr_assert_neq(run(NULL, &err, unsched), 0);
        cr_assert(strstr(err, "No job 'ghost'"), "%s", err);
        free(err);
        cr_assert_neq(run(NULL, &err, publish), 0);
        cr_assert(strstr(err, "not valid JSON"), "%s", err);
        free(err);
        cr_assert_neq(run(NULL, &err, wrong), 0, "a wrong signature is refused");
        free(err);

        /* The daemon is fine after all that. */
        Conn *c = conn_open(d);
        struct json_object *o = conn_request(c, "p", "{\"type\":\"ping\",\"id\":\"p\"}");
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);
        conn_close(c);
        daemon_free(d);
}

Test(bus, publish_reaches_socket_subscribers) {
        Daemon *d = start_on_bus();
        Conn *sub = conn_open(d);
        struct json_object *o;

        o = conn_request(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"ops:*\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);

        o = busctl_call("Publish", "ss", "ops:deploy", "{\"version\":7}");
        int64_t event_id = json_object_get_int64(json_object_array_get_idx(jget(o, "data"), 0));
        json_object_put(o);

        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        cr_assert_str_eq(jstr(o, "channel"), "ops:deploy");
        cr_assert_eq(jint(o, "message.version"), 7);
        cr_assert_eq(jint(o, "eventId"), event_id);
        json_object_put(o);

        /* One more channel, only subscribed to, so the lists have rows of both kinds. */
        struct json_object *s2 = conn_request(sub, "s2", "{\"type\":\"subscribe\",\"id\":\"s2\",\"channel\":\"alerts\"}");
        json_object_put(s2);

        o = busctl_call("ListChannels", NULL, NULL, NULL);
        struct json_object *rows = jget(o, "data.0");
        bool found = false;

        /* Row for row what the socket's status "channelList" says (both sorted by name). */
        struct json_object *st = conn_request(sub, "st", "{\"type\":\"status\",\"id\":\"st\",\"channelList\":true}");
        struct json_object *list = jget(st, "data.channelList");
        cr_assert_eq(json_object_array_length(rows), json_object_array_length(list));
        cr_assert_eq(json_object_array_length(rows), 3, "ops:*, alerts, ops:deploy");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                struct json_object *r = json_object_array_get_idx(rows, i), *l = json_object_array_get_idx(list, i);

                cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 0)), jstr(l, "name"));
                cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 1)), jint(l, "subscribers"));
                cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 2)), jint(l, "bufferedEvents"));
                cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 3)), jint(l, "lastEventId"));
        }
        json_object_put(st);
        for (size_t i = 0; i < json_object_array_length(rows); i++) {
                struct json_object *r = json_object_array_get_idx(rows, i);
                if (strcmp(json_object_get_string(json_object_array_get_idx(r, 0)), "ops:deploy") == 0) {
                        found = true;
                        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 2)), 1, "one buffered event");
                        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 3)), event_id);
                }
        }
        cr_assert(found);
        json_object_put(o);

        o = busctl_call("GetStatus", NULL, NULL, NULL);
        cr_assert_str_eq(jstr(o, "data.0.version.data"), PHOTOND_VERSION);
        cr_assert_eq(jint(o, "data.0.clients.data"), 1);
        json_object_put(o);

        conn_close(sub);
        daemon_free(d);
}

/* Cluster mode: Publish is answered with the cluster's eventId once Redis has the message, and fails with
 * "Cluster unavailable: …" while Redis is stopped. */
Test(bus, cluster_publish_waits_for_redis) {
        TestRedis redis;
        char url_env[400], *dir, *out = NULL, *err = NULL;
        Daemon *d;
        Conn *sub;
        struct json_object *o;
        int64_t event_id;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", redis.url);
        d = start_on_bus_with((const char*[]) { url_env, "PHOTOND_NODE_ID=bus-node", NULL });
        sub = conn_open(d);
        for (uint64_t deadline = mono_ms() + 10000;;) {
                bool ready;

                o = conn_request(sub, "st", "{\"type\":\"status\",\"id\":\"st\"}");
                ready = jbool(o, "data.cluster.ready");
                json_object_put(o);
                if (ready)
                        break;
                cr_assert_lt(mono_ms(), deadline, "never ready");
                (void) poll(NULL, 0, 20);
        }
        json_object_put(conn_request(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"ops\"}"));

        o = busctl_call("Publish", "ss", "ops", "{\"version\":8}");
        event_id = json_object_get_int64(json_object_array_get_idx(jget(o, "data"), 0));
        json_object_put(o);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        cr_assert_eq(jint(o, "eventId"), event_id);
        json_object_put(o);

        test_redis_stop(&redis);
        for (uint64_t deadline = mono_ms() + 10000;;) {
                bool ready;

                o = conn_request(sub, "st", "{\"type\":\"status\",\"id\":\"st\"}");
                ready = jbool(o, "data.cluster.ready");
                json_object_put(o);
                if (!ready)
                        break;
                cr_assert_lt(mono_ms(), deadline, "never noticed");
                (void) poll(NULL, 0, 20);
        }
        cr_assert_neq(run(&out, &err, (const char*[]) { "busctl", "--user", "call", "org.photond.Daemon1",
                                                         "/org/photond/Daemon1", "org.photond.Daemon1", "Publish",
                                                         "ss", "ops", "{\"version\":9}", NULL }), 0);
        cr_assert_not_null(strstr(err, "Cluster unavailable: "), "%s", err);
        free(out);
        free(err);
        o = conn_recv(sub, 300);
        cr_assert_null(o, "delivered anyway: %s", o ? json_object_to_json_string(o) : "");

        conn_close(sub);
        daemon_free(d);
        tmpdir_remove(dir);
}

/* "deploy" locked for "ci" through ca's node in cluster mode, as soon as the node's lock connection is up: the
 * reply. */
static struct json_object* lock_deploy_in_cluster(Conn *ca) {
        struct json_object *o;

        for (uint64_t deadline = mono_ms() + 10000;;) {
                o = conn_request(ca, "l", "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"deploy\","
                                 "\"sessionId\":\"ci\",\"lockTimeout\":60000}");
                if (jbool(o, "success"))
                        return o;
                cr_assert_lt(mono_ms(), deadline, "no lock: %s", json_object_to_json_string(o));
                json_object_put(o);
                (void) poll(NULL, 0, 20);
        }
}

/* Cluster mode: ListLocks lists the cluster's locks from Redis, a lock taken on another node included, and fails
 * with "Cluster unavailable: …" while Redis is stopped (never the node's own, empty, table). */
Test(bus, cluster_list_locks_is_the_clusters) {
        TestRedis redis;
        char url_env[400], *dir, *out = NULL, *err = NULL;
        Daemon *a, *b;
        Conn *ca;
        struct json_object *o, *e;
        int64_t token;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", redis.url);
        a = daemon_start(&(DaemonOptions) { .env = (const char*[]) { url_env, "PHOTOND_NODE_ID=node-a", NULL } });
        b = start_on_bus_with((const char*[]) { url_env, "PHOTOND_NODE_ID=node-b", NULL });
        ca = conn_open(a);
        o = lock_deploy_in_cluster(ca);
        token = jint(o, "data.fencingToken");
        json_object_put(o);

        for (uint64_t deadline = mono_ms() + 10000;;) {
                const char *argv[] = { "busctl", "--user", "--json=short", "call", "org.photond.Daemon1",
                                       "/org/photond/Daemon1", "org.photond.Daemon1", "ListLocks", NULL };
                int st = run(&out, &err, argv);

                if (st == 0)
                        break;
                /* Until node b's lock connection is up: the error says why meanwhile. */
                cr_assert_not_null(strstr(err, "Cluster unavailable: "), "%s", err);
                cr_assert_lt(mono_ms(), deadline, "ListLocks never answered: %s", err);
                free(out);
                free(err);
                (void) poll(NULL, 0, 50);
        }
        o = json_tokener_parse(out);
        free(out);
        free(err);
        cr_assert_not_null(o);
        e = json_object_array_get_idx(json_object_array_get_idx(jget(o, "data"), 0), 0);
        cr_assert_not_null(e, "nothing listed");
        cr_assert_eq(json_object_array_length(json_object_array_get_idx(jget(o, "data"), 0)), 1);
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(e, 0)), "deploy");
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(e, 1)), "ci");
        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(e, 4)), token);
        json_object_put(o);

        /* No forced release: Redis releases for the holder only. */
        cr_assert_neq(run(&out, &err, (const char*[]) { "busctl", "--user", "call", "org.photond.Daemon1",
                                                         "/org/photond/Daemon1", "org.photond.Daemon1", "ReleaseLock",
                                                         "s", "deploy", NULL }), 0);
        cr_assert_not_null(strstr(err, "a forced release is not supported"), "%s", err);
        free(out);
        free(err);

        /* Released on node a: gone from node b's list. */
        o = conn_request(ca, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"deploy\",\"sessionId\":\"ci\"}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = busctl_call("ListLocks", NULL, NULL, NULL);
        cr_assert_eq(json_object_array_length(json_object_array_get_idx(jget(o, "data"), 0)), 0);
        json_object_put(o);

        test_redis_stop(&redis);
        cr_assert_neq(run(&out, &err, (const char*[]) { "busctl", "--user", "call", "org.photond.Daemon1",
                                                         "/org/photond/Daemon1", "org.photond.Daemon1", "ListLocks",
                                                         NULL }), 0);
        cr_assert_not_null(strstr(err, "Cluster unavailable: "), "%s", err);
        free(out);
        free(err);

        conn_close(ca);
        daemon_free(a);
        daemon_free(b);
        tmpdir_remove(dir);
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        char *seen = userdata;
        const char *a = NULL, *b = NULL, *c = NULL;

        if (sd_bus_message_is_signal(m, "org.photond.Daemon1", "LockChanged") &&
            sd_bus_message_read(m, "sss", &a, &b, &c) >= 0)
                snprintf(seen + strlen(seen), 1024 - strlen(seen), "lock:%s:%s:%s;", a, b, c);
        else if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged"))
                strncat(seen, "props;", 1023 - strlen(seen));
        return 0;
}

static void wait_for(sd_bus *bus, const char *seen, const char *text) {
        uint64_t deadline = mono_ms() + 5000;

        while (!strstr(seen, text)) {
                cr_assert(mono_ms() < deadline, "no '%s' within 5 s; seen: %s", text, seen);
                if (sd_bus_process(bus, NULL) > 0)
                        continue;
                (void) sd_bus_wait(bus, 100 * 1000);
        }
}

Test(bus, signals) {
        Daemon *d = start_on_bus();
        sd_bus *bus = NULL;
        char seen[1024] = "";
        struct json_object *o;

        cr_assert_eq(sd_bus_open_user(&bus), 0);
        cr_assert(sd_bus_add_match(bus, NULL, "type='signal',sender='org.photond.Daemon1',path='/org/photond/Daemon1'",
                                   on_signal, seen) >= 0);

        Conn *c = conn_open(d);
        o = conn_request(c, "1", "{\"type\":\"lock\",\"id\":\"1\",\"lockName\":\"k\",\"sessionId\":\"alice\",\"lockTimeout\":300}");
        json_object_put(o);
        wait_for(bus, seen, "lock:k:alice:acquired;");
        wait_for(bus, seen, "props;");
        wait_for(bus, seen, "lock:k:alice:expired;");

        o = conn_request(c, "2", "{\"type\":\"lock\",\"id\":\"2\",\"lockName\":\"k2\",\"sessionId\":\"bob\"}");
        json_object_put(o);
        o = conn_request(c, "3", "{\"type\":\"unlock\",\"id\":\"3\",\"lockName\":\"k2\",\"sessionId\":\"bob\"}");
        json_object_put(o);
        wait_for(bus, seen, "lock:k2:bob:released;");

        sd_bus_flush_close_unref(bus);
        conn_close(c);
        daemon_free(d);
}

Test(bus, missing_bus_is_only_a_warning) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { "DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent/bus", NULL },
                .args = (const char*[]) { "--bus=user", NULL } });
        Conn *c = conn_open(d);
        struct json_object *o = conn_request(c, "p", "{\"type\":\"ping\",\"id\":\"p\"}");

        cr_assert_str_eq(jstr(o, "type"), "pong");
        cr_assert(daemon_log_contains(d, "continuing without D-Bus"));
        json_object_put(o);
        conn_close(c);
        daemon_free(d);
}

static int on_job_finished(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        char *seen = userdata;
        const char *id = NULL, *status = NULL;
        int64_t ms = -1;

        if (sd_bus_message_read(m, "ssx", &id, &status, &ms) >= 0)
                snprintf(seen + strlen(seen), 1024 - strlen(seen), "job:%s:%s;", id, status);
        return 0;
}

Test(bus, list_jobs_mirrors_the_socket_and_admin_methods) {
        Daemon *d = start_on_bus();
        Conn *c = conn_open(d);
        sd_bus *bus = NULL;
        char seen[1024] = "";
        struct json_object *o, *sock, *rows;

        o = conn_request(c, "1", "{\"type\":\"schedule\",\"id\":\"1\",\"photonName\":\"kan\",\"jobId\":\"nightly\","
                                 "\"method\":\"archive\",\"cron\":\"0 3 * * *\"}");
        cr_assert(jbool(o, "data.scheduled"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        sock = conn_request(c, "2", "{\"type\":\"list_jobs\",\"id\":\"2\"}");
        o = busctl_call("ListJobs", NULL, NULL, NULL);
        rows = jget(o, "data.0");
        cr_assert_eq(json_object_array_length(rows), 1);
        struct json_object *r = json_object_array_get_idx(rows, 0), *j = jget(sock, "data.jobs.0");
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 0)), jstr(j, "id"));
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 0)), "kan:ipc:nightly");
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 1)), "kan");
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 2)), "archive");
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 3)), "0 3 * * *");
        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 5)), jint(j, "nextRun"));
        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 6)), 0, "never ran");
        json_object_put(o);
        json_object_put(sock);

        /* RunJob: no handler exists, so the run fails, and JobFinished says so. */
        cr_assert_eq(sd_bus_open_user(&bus), 0);
        cr_assert(sd_bus_match_signal(bus, NULL, "org.photond.Daemon1", "/org/photond/Daemon1",
                                      "org.photond.Daemon1", "JobFinished", on_job_finished, seen) >= 0);
        json_object_put(busctl_call("RunJob", "s", "kan:ipc:nightly", NULL));
        wait_for(bus, seen, "job:kan:ipc:nightly:error;");
        sd_bus_flush_close_unref(bus);

        /* After the run the outcome columns agree too. */
        sock = conn_request(c, "2b", "{\"type\":\"list_jobs\",\"id\":\"2b\"}");
        o = busctl_call("ListJobs", NULL, NULL, NULL);
        r = jget(o, "data.0.0");
        j = jget(sock, "data.jobs.0");
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 4)), jstr(j, "lastStatus"));
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 4)), "error");
        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 5)), jint(j, "nextRun"));
        /* "last run" is the socket's lastRun, the last success: a failed run leaves it at 0 (never). */
        cr_assert(!jhas(j, "lastRun"));
        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 6)), 0);
        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(r, 7)), jint(j, "runCount"));
        cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(r, 8)), jstr(j, "lastError"));
        json_object_put(o);
        json_object_put(sock);

        json_object_put(busctl_call("Unschedule", "s", "nightly", NULL));
        o = conn_request(c, "3", "{\"type\":\"list_jobs\",\"id\":\"3\"}");
        cr_assert_eq(json_object_array_length(jget(o, "data.jobs")), 0);
        json_object_put(o);

        conn_close(c);
        daemon_free(d);
}

/* ---- PropertiesChanged, property values, coalescing ---- */

#define DEST "org.photond.Daemon1"
#define PATH "/org/photond/Daemon1"
#define IFACE "org.photond.Daemon1"

/* Every PropertiesChanged photond sent, in order, each as "Name=value " for the changed properties and "Name? "
 * for the invalidated ones. */
typedef struct Props {
        sd_bus *bus;
        char signals[256][256];
        unsigned n;
} Props;

static int on_props(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        Props *p = userdata;
        char *entry, **invalidated = NULL;
        const char *iface, *name;
        size_t len = 0;

        cr_assert(p->n < 256, "too many PropertiesChanged");
        entry = p->signals[p->n++];
        entry[0] = '\0';
        cr_assert(sd_bus_message_read(m, "s", &iface) >= 0);
        cr_assert_str_eq(iface, IFACE);
        cr_assert(sd_bus_message_enter_container(m, 'a', "{sv}") >= 0);
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                const char *contents;
                char type;

                cr_assert(sd_bus_message_read(m, "s", &name) >= 0);
                cr_assert(sd_bus_message_peek_type(m, &type, &contents) >= 0);
                if (streq(contents, "u")) {
                        uint32_t u;
                        cr_assert(sd_bus_message_read(m, "v", "u", &u) >= 0);
                        len += snprintf(entry + len, 256 - len, "%s=%u ", name, u);
                } else {
                        cr_assert(sd_bus_message_skip(m, "v") >= 0);
                        len += snprintf(entry + len, 256 - len, "%s=* ", name);
                }
                cr_assert(sd_bus_message_exit_container(m) >= 0);
        }
        cr_assert(sd_bus_message_exit_container(m) >= 0);
        cr_assert(sd_bus_message_read_strv(m, &invalidated) >= 0);
        for (char **i = invalidated; i && *i; i++)
                len += snprintf(entry + len, 256 - len, "%s? ", *i);
        for (char **i = invalidated; i && *i; i++)
                free(*i);
        free(invalidated);
        return 0;
}

static void props_start(Props *p) {
        *p = (Props) {};
        cr_assert_eq(sd_bus_open_user(&p->bus), 0);
        /* Synchronous: the match is in place before the test goes on. */
        cr_assert(sd_bus_match_signal(p->bus, NULL, DEST, PATH, "org.freedesktop.DBus.Properties",
                                      "PropertiesChanged", on_props, p) >= 0);
}

static void props_stop(Props *p) {
        p->bus = sd_bus_flush_close_unref(p->bus);
}

static bool entry_has_all(const char *entry, const char *const *tokens) {
        for (; *tokens; tokens++)
                if (!strstr(entry, *tokens))
                        return false;
        return true;
}

/* Waits (10 s at most) for a PropertiesChanged at index >= from that carries every token ("Channels=1 ", with
 * the trailing space); returns its index. */
static unsigned props_wait(Props *p, unsigned from, const char *const *tokens) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                for (unsigned i = from; i < p->n; i++)
                        if (entry_has_all(p->signals[i], tokens))
                                return i;
                if (mono_ms() >= deadline) {
                        fprintf(stderr, "PropertiesChanged seen from %u on:\n", from);
                        for (unsigned i = from; i < p->n; i++)
                                fprintf(stderr, "  %u: %s\n", i, p->signals[i]);
                        cr_assert_fail("no PropertiesChanged with %s%s%s within 10 s", tokens[0],
                                       tokens[1] ? tokens[1] : "", tokens[1] && tokens[2] ? tokens[2] : "");
                }
                if (sd_bus_process(p->bus, NULL) > 0)
                        continue;
                (void) sd_bus_wait(p->bus, 100 * 1000);
        }
}

#define PROPS_WAIT(p, from, ...) props_wait((p), (from), (const char *const[]) { __VA_ARGS__, NULL })

static uint32_t property_u(Props *p, const char *name) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        uint32_t u = 0;

        cr_assert(sd_bus_get_property_trivial(p->bus, DEST, PATH, IFACE, name, &e, 'u', &u) >= 0,
                  "Get %s: %s", name, e.message);
        return u;
}

/* The value a property has, read over the bus and from the socket's status, which must agree. */
static void expect_count(Props *p, Conn *c, const char *property, const char *status_key, uint32_t want) {
        struct json_object *o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\"}");

        cr_assert_eq(property_u(p, property), want, "%s", property);
        cr_assert_eq(jint(o, status_key), want, "status %s", status_key);
        json_object_put(o);
}

Test(bus, properties_channels_subscriptions_jobs_announce_changes) {
        /* A short replay window, so a channel that only holds an event goes away by itself. */
        Daemon *d = start_on_bus_with((const char*[]) { "PHOTOND_REPLAY_WINDOW_MS=2000", NULL });
        Props p;
        struct json_object *o;
        unsigned i;

        props_start(&p);
        Conn *c = conn_open(d);
        i = PROPS_WAIT(&p, 0, "Clients=1 ");
        expect_count(&p, c, "Channels", "data.channels", 0);
        expect_count(&p, c, "Subscriptions", "data.subscriptions", 0);
        expect_count(&p, c, "Jobs", "data.jobs", 0);

        /* Each of these changes the value and nothing else, so only the announcement can tell the watcher. */
        o = conn_request(c, "1", "{\"type\":\"subscribe\",\"id\":\"1\",\"channel\":\"news\"}");
        json_object_put(o);
        i = PROPS_WAIT(&p, i + 1, "Channels=1 ", "Subscriptions=1 ");
        expect_count(&p, c, "Channels", "data.channels", 1);
        expect_count(&p, c, "Subscriptions", "data.subscriptions", 1);

        o = conn_request(c, "2", "{\"type\":\"publish\",\"id\":\"2\",\"channel\":\"other\",\"message\":{}}");
        json_object_put(o);
        i = PROPS_WAIT(&p, i + 1, "Channels=2 ");
        cr_assert_null(strstr(p.signals[i], "Subscriptions"), "Subscriptions did not change: %s", p.signals[i]);
        expect_count(&p, c, "Channels", "data.channels", 2);

        o = conn_request(c, "3", "{\"type\":\"unsubscribe\",\"id\":\"3\",\"channel\":\"news\"}");
        json_object_put(o);
        i = PROPS_WAIT(&p, i + 1, "Channels=1 ", "Subscriptions=0 ");
        expect_count(&p, c, "Subscriptions", "data.subscriptions", 0);

        /* "other" holds one event; when it leaves the replay window the channel goes, with no request to notice. */
        i = PROPS_WAIT(&p, i + 1, "Channels=0 ");
        cr_assert_eq(property_u(&p, "Channels"), 0);

        o = conn_request(c, "4", "{\"type\":\"schedule\",\"id\":\"4\",\"photonName\":\"kan\",\"jobId\":\"nightly\","
                                 "\"method\":\"archive\",\"cron\":\"0 3 * * *\"}");
        cr_assert(jbool(o, "data.scheduled"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        i = PROPS_WAIT(&p, i + 1, "Jobs=1 ");
        expect_count(&p, c, "Jobs", "data.jobs", 1);
        o = conn_request(c, "5", "{\"type\":\"unschedule\",\"id\":\"5\",\"photonName\":\"kan\",\"jobId\":\"nightly\"}");
        json_object_put(o);
        i = PROPS_WAIT(&p, i + 1, "Jobs=0 ");
        expect_count(&p, c, "Jobs", "data.jobs", 0);

        /* A disconnect drops the subscriptions and the channels with them. */
        o = conn_request(c, "6", "{\"type\":\"subscribe\",\"id\":\"6\",\"channel\":\"a\"}");
        json_object_put(o);
        i = PROPS_WAIT(&p, i + 1, "Channels=1 ", "Subscriptions=1 ");
        conn_close(c);
        i = PROPS_WAIT(&p, i + 1, "Clients=0 ", "Channels=0 ", "Subscriptions=0 ");

        props_stop(&p);
        daemon_free(d);
}

Test(bus, property_changes_of_one_batch_are_one_signal) {
        Daemon *d = start_on_bus();
        char batch[8192];
        size_t len = 0;
        unsigned first, batch_signal, last;
        Props p;
        struct json_object *o;

        props_start(&p);
        Conn *c = conn_open(d);
        first = PROPS_WAIT(&p, 0, "Clients=1 ");

        /* 20 subscriptions (20 channels) and a lock, written at once: photond reads and serves them in one loop
         * iteration, so they must come out as one PropertiesChanged carrying the final values. */
        for (int k = 0; k < 20; k++)
                len += snprintf(batch + len, sizeof(batch) - len,
                                "{\"type\":\"subscribe\",\"id\":\"s%d\",\"channel\":\"c%d\"}\n", k, k);
        len += snprintf(batch + len, sizeof(batch) - len,
                        "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"x\",\"sessionId\":\"s\"}\n");
        conn_send_raw(c, batch, len);
        for (int k = 0; k < 21; k++) {
                o = conn_expect(c, 5000);
                cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
                json_object_put(o);
        }
        batch_signal = PROPS_WAIT(&p, first + 1, "Channels=20 ", "Subscriptions=20 ", "Locks=1 ");

        /* A later change as a fence: everything photond sent about the batch arrived before its signal. */
        o = conn_request(c, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"x\",\"sessionId\":\"s\"}");
        json_object_put(o);
        last = PROPS_WAIT(&p, batch_signal + 1, "Locks=0 ");
        for (unsigned k = first + 1; k < last; k++)
                fprintf(stderr, "signal %u: %s\n", k, p.signals[k]);
        cr_assert_eq(batch_signal, first + 1, "the batch's changes came in more than one signal");
        cr_assert_eq(last, batch_signal + 1, "more than one signal for the batch");
        cr_assert_null(strstr(p.signals[last], "Channels"), "%s", p.signals[last]);

        conn_close(c);
        props_stop(&p);
        daemon_free(d);
}

/* ---- error names ---- */

static void expect_error(sd_bus *bus, const char *name, const char *text, const char *method, const char *types, ...) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        va_list ap;
        int r;

        va_start(ap, types);
        r = sd_bus_call_methodv(bus, DEST, PATH, IFACE, method, &e, NULL, types, ap);
        va_end(ap);
        cr_assert(r < 0, "%s succeeded", method);
        cr_assert_str_eq(e.name, name, "%s: %s", method, e.message);
        if (text)
                cr_assert(e.message && strstr(e.message, text), "%s: '%s' lacks '%s'", method, e.message, text);
        sd_bus_error_free(&e);
}

Test(bus, error_names_and_limit_texts) {
        Daemon *d = start_on_bus_with((const char*[]) {
                "PHOTOND_MAX_MESSAGE_BYTES=64", "PHOTOND_MAX_CHANNEL_NAME_BYTES=16", "PHOTOND_MAX_CHANNELS=1", NULL });
        sd_bus *bus = NULL;
        char big[256];
        struct json_object *o;

        cr_assert_eq(sd_bus_open_user(&bus), 0);

        expect_error(bus, IFACE ".Error.NoSuchLock", "No live lock named 'nope'", "ReleaseLock", "s", "nope");
        expect_error(bus, IFACE ".Error.InvalidArgs", "must not be empty", "ReleaseLock", "s", "");
        expect_error(bus, IFACE ".Error.NoSuchJob", "No job 'ghost'", "RunJob", "s", "ghost");
        expect_error(bus, IFACE ".Error.NoSuchJob", "No job 'ghost'", "Unschedule", "s", "ghost");
        expect_error(bus, IFACE ".Error.InvalidArgs", "not valid JSON", "Publish", "ss", "a:b", "{not json");
        expect_error(bus, IFACE ".Error.InvalidArgs", "must not be empty", "Publish", "ss", "", "{}");

        /* The limits say what the socket says. */
        snprintf(big, sizeof(big), "{\"text\":\"%0100d\"}", 0);
        expect_error(bus, IFACE ".Error.LimitExceeded",
                     "Message too large: 111 bytes of JSON, at most 64 (PHOTOND_MAX_MESSAGE_BYTES)",
                     "Publish", "ss", "a", big);
        Conn *c = conn_open(d);
        o = conn_request(c, "p", "{\"type\":\"publish\",\"id\":\"p\",\"channel\":\"a\",\"message\":%s}", big);
        cr_assert_str_eq(jstr(o, "error"), "Message too large: 111 bytes of JSON, at most 64 (PHOTOND_MAX_MESSAGE_BYTES)");
        cr_assert_str_eq(jstr(o, "suggestion"), "Publish a reference to the data instead");
        json_object_put(o);
        expect_error(bus, IFACE ".Error.LimitExceeded",
                     "Channel name too long: 24 bytes, at most 16 (PHOTOND_MAX_CHANNEL_NAME_BYTES)",
                     "Publish", "ss", "a-very-long-channel-name", "{}");

        o = conn_request(c, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"held\"}");
        cr_assert(jbool(o, "success"));
        json_object_put(o);
        expect_error(bus, IFACE ".Error.LimitExceeded", "Too many channels: at most 1 (PHOTOND_MAX_CHANNELS)",
                     "Publish", "ss", "other", "{}");

        /* sd-bus's own checks keep the standard names. */
        expect_error(bus, "org.freedesktop.DBus.Error.InvalidArgs", NULL, "ReleaseLock", "u", 5);
        expect_error(bus, "org.freedesktop.DBus.Error.UnknownMethod", NULL, "NoSuchMethod", "");

        conn_close(c);
        sd_bus_flush_close_unref(bus);
        daemon_free(d);
}

Test(bus, run_job_while_it_runs_is_job_running) {
        Daemon *d = start_on_bus();
        Conn *prov = conn_open(d), *c = conn_open(d);
        sd_bus *bus = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char seen[1024] = "";
        struct json_object *o, *inv;

        /* A provider that answers only when told: the job runs until then. */
        o = conn_request(prov, "p", "{\"type\":\"provide\",\"id\":\"p\",\"photonName\":\"svc\"}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        o = conn_request(c, "1", "{\"type\":\"schedule\",\"id\":\"1\",\"photonName\":\"svc\",\"jobId\":\"job\","
                                 "\"method\":\"compute\",\"cron\":\"0 0 1 1 *\"}");
        cr_assert(jbool(o, "data.scheduled"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        cr_assert_eq(sd_bus_open_user(&bus), 0);
        cr_assert(sd_bus_match_signal(bus, NULL, DEST, PATH, IFACE, "JobFinished", on_job_finished, seen) >= 0);
        cr_assert(sd_bus_call_method(bus, DEST, PATH, IFACE, "RunJob", &e, NULL, "s", "svc:ipc:job") >= 0,
                  "%s", e.message);
        inv = conn_expect(prov, 5000);
        cr_assert_str_eq(jstr(inv, "type"), "invoke");

        expect_error(bus, IFACE ".Error.JobRunning", "Job 'svc:ipc:job' is running already", "RunJob", "s",
                     "svc:ipc:job");

        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":{}}", jstr(inv, "id"));
        json_object_put(inv);
        wait_for(bus, seen, "job:svc:ipc:job:success;");

        sd_bus_flush_close_unref(bus);
        conn_close(prov);
        conn_close(c);
        daemon_free(d);
}

/* ---- losing the bus and getting it back ---- */

static unsigned log_count(Daemon *d, const char *text) {
        char buf[65536];
        unsigned count = 0;
        FILE *f = fopen(d->log_path, "re");

        cr_assert(f);
        while (fgets(buf, sizeof(buf), f))
                if (strstr(buf, text))
                        count++;
        fclose(f);
        return count;
}

/* Waits for a line in photond's log; the file is the only signal there is for a log line. */
static void wait_log(Daemon *d, const char *text, int timeout_ms) {
        uint64_t deadline = mono_ms() + timeout_ms;

        while (!daemon_log_contains(d, text)) {
                if (mono_ms() >= deadline) {
                        daemon_dump_log(d);
                        cr_assert_fail("'%s' not logged within %d ms", text, timeout_ms);
                }
                usleep(10 * 1000);
        }
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) >= 0 && new_owner[0])
                *(bool*) userdata = true;
        return 0;
}

/* Waits until org.photond.Daemon1 has an owner on the session bus: NameOwnerChanged, or already owned. Returns
 * the milliseconds it took. */
static uint64_t wait_for_name(int timeout_ms) {
        uint64_t start = mono_ms(), deadline = start + timeout_ms;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        sd_bus *bus = NULL;
        bool owned = false;
        int has = 0;

        cr_assert_eq(sd_bus_open_user(&bus), 0);
        cr_assert(sd_bus_add_match(bus, NULL, "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                                   "arg0='" DEST "'", on_owner_changed, &owned) >= 0);
        cr_assert(sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                     "NameHasOwner", &e, &reply, "s", DEST) >= 0, "%s", e.message);
        cr_assert(sd_bus_message_read(reply, "b", &has) >= 0);
        sd_bus_message_unref(reply);
        owned = owned || has;
        while (!owned) {
                cr_assert(mono_ms() < deadline, DEST " did not appear on the bus within %d ms", timeout_ms);
                if (sd_bus_process(bus, NULL) > 0)
                        continue;
                (void) sd_bus_wait(bus, 100 * 1000);
        }
        sd_bus_flush_close_unref(bus);
        return mono_ms() - start;
}

static void expect_pong(Conn *c) {
        struct json_object *o = conn_request(c, "p", "{\"type\":\"ping\",\"id\":\"p\"}");

        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);
}

Test(bus, reconnects_when_the_bus_comes_back) {
        /* Debug level, to see photond's failed attempts: the warning must still come only once. */
        Daemon *d = start_on_bus_with_args(NULL, (const char*[]) { "--log-level=debug", NULL });
        struct json_object *o;
        uint64_t took;
        Props p;

        o = get_property("Version");
        cr_assert_str_eq(jstr(o, "data"), PHOTOND_VERSION);
        json_object_put(o);
        Conn *c = conn_open(d);

        /* The bus dies under photond: a warning, and the socket goes on. */
        dbus_kill(&bus_pid);
        wait_log(d, "Lost the connection to the user bus", 5000);
        expect_pong(c);
        wait_log(d, "Still cannot connect to the user bus", 5000);
        expect_pong(c);
        cr_assert_eq(log_count(d, "Lost the connection"), 1);

        /* A new bus at the same address: photond comes back on it by itself, within the back-off. */
        bus_pid = dbus_spawn("bus", NULL, NULL);
        took = wait_for_name(10000);
        fprintf(stderr, "photond was back on the bus %" PRIu64 " ms after it restarted\n", took);
        wait_log(d, "Connected to the user bus on a retry", 5000);
        cr_assert_eq(log_count(d, "Lost the connection"), 1);

        o = get_property("Version");
        cr_assert_str_eq(jstr(o, "data"), PHOTOND_VERSION);
        json_object_put(o);
        o = busctl_call("ListLocks", NULL, NULL, NULL);
        cr_assert_eq(json_object_array_length(jget(o, "data.0")), 0);
        json_object_put(o);

        /* The object announces its changes again. */
        props_start(&p);
        Conn *c2 = conn_open(d);
        PROPS_WAIT(&p, 0, "Clients=2 ");
        cr_assert_eq(property_u(&p, "Clients"), 2);
        props_stop(&p);

        conn_close(c2);
        conn_close(c);
        daemon_free(d);
}

Test(bus, connects_to_a_bus_that_appears_after_start) {
        Daemon *d;

        /* No bus at the address when photond starts: a warning, READY=1 anyway, and the socket works. */
        dbus_kill(&bus_pid);
        d = start_on_bus();
        cr_assert(daemon_log_contains(d, "Cannot connect to the user bus"));
        Conn *c = conn_open(d);
        expect_pong(c);

        bus_pid = dbus_spawn("bus", NULL, NULL);
        (void) wait_for_name(10000);
        struct json_object *o = get_property("Clients");
        cr_assert_eq(jint(o, "data"), 1);
        json_object_put(o);

        conn_close(c);
        daemon_free(d);
}

/* ---- the admin check on the system bus ---- */

/* Like the system bus in that photond checks admin callers there, but letting everyone send anything: every
 * AccessDenied seen then comes from photond itself, not from the bus policy. */
static const char permissive_bus_config[] =
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
        " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
        "<busconfig>\n"
        "  <listen>unix:tmpdir=/tmp</listen>\n"      /* required, and replaced by --address */
        "  <auth>EXTERNAL</auth>\n"
        "  <policy context=\"default\">\n"
        "    <allow user=\"*\"/>\n"
        "    <allow own=\"*\"/>\n"
        "    <allow send_destination=\"*\"/>\n"
        "    <allow receive_sender=\"*\"/>\n"
        "  </policy>\n"
        "</busconfig>\n";

/* Calls an admin method on the system bus from a child process running as uid with the groups given (the first
 * is the primary group). Returns "" on success, else the error name (a static buffer). */
static const char* call_as(uid_t uid, const gid_t *groups, size_t n_groups, const char *method, const char *types,
                           const char *a1, const char *a2) {
        static char result[256];
        size_t len = 0;
        int pipefd[2], status;
        pid_t pid;
        ssize_t n;

        cr_assert_eq(pipe(pipefd), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                sd_bus *bus = NULL;
                const char *out = "";

                close(pipefd[0]);
                if (setgroups(n_groups, groups) < 0 || setgid(groups[0]) < 0 || setuid(uid) < 0)
                        out = "setuid failed";
                else if (sd_bus_open_system(&bus) < 0)
                        out = "no bus";
                else if (sd_bus_call_method(bus, DEST, PATH, IFACE, method, &e, NULL, types, a1, a2) < 0)
                        out = e.name ?: "failed";
                (void) !write(pipefd[1], out, strlen(out));
                _exit(0);
        }
        close(pipefd[1]);
        while (len < sizeof(result) - 1 && (n = read(pipefd[0], result + len, sizeof(result) - 1 - len)) > 0)
                len += n;
        result[len] = '\0';
        close(pipefd[0]);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        return result;
}

static bool lock_is_free(Conn *c, const char *name) {
        struct json_object *o = conn_request(c, "q", "{\"type\":\"query_lock\",\"id\":\"q\",\"lockName\":\"%s\"}", name);
        bool free_ = json_object_is_type(jget(o, "data.holder"), json_type_null);

        json_object_put(o);
        return free_;
}

static void take_lock(Conn *c, const char *name) {
        struct json_object *o = conn_request(c, "l", "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"%s\","
                                                     "\"sessionId\":\"s\"}", name);

        cr_assert(jbool(o, "data.acquired"), "%s", json_object_to_json_string(o));
        json_object_put(o);
}

Test(bus, admin_methods_refuse_other_users_on_the_system_bus) {
        static const gid_t nobody_groups[] = { 65534 };
        gid_t nobody_in_our_group[] = { 65534, getegid() };
        static const gid_t root_groups[] = { 0 };
        char *conf, *address, envbuf[700];
        FILE *f;

        if (geteuid() != 0)
                cr_skip_test("needs root, to call as another user");

        /* The other user must reach the bus socket. */
        cr_assert_eq(chmod(bus_dir, 0755), 0);
        cr_assert(asprintf(&conf, "%s/system.conf", bus_dir) > 0);
        cr_assert(f = fopen(conf, "we"));
        fputs(permissive_bus_config, f);
        cr_assert_eq(fclose(f), 0);
        system_bus_pid = dbus_spawn("system_bus", conf, &address);
        setenv("DBUS_SYSTEM_BUS_ADDRESS", address, 1);
        snprintf(envbuf, sizeof(envbuf), "DBUS_SYSTEM_BUS_ADDRESS=%s", address);
        Daemon *d = daemon_start(&(DaemonOptions) {
                .env = (const char*[]) { envbuf, NULL },
                .args = (const char*[]) { "--bus=system", NULL } });
        Conn *c = conn_open(d);

        take_lock(c, "db");
        /* Another user: refused by photond, for each admin method. */
        cr_assert_str_eq(call_as(65534, nobody_groups, 1, "ReleaseLock", "s", "db", NULL), IFACE ".Error.AccessDenied");
        cr_assert(!lock_is_free(c, "db"));
        cr_assert_str_eq(call_as(65534, nobody_groups, 1, "RunJob", "s", "x", NULL), IFACE ".Error.AccessDenied");
        cr_assert_str_eq(call_as(65534, nobody_groups, 1, "Unschedule", "s", "x", NULL), IFACE ".Error.AccessDenied");
        cr_assert_str_eq(call_as(65534, nobody_groups, 1, "Publish", "ss", "a", "{}"), IFACE ".Error.AccessDenied");
        /* Reading is for everyone. */
        cr_assert_str_eq(call_as(65534, nobody_groups, 1, "ListLocks", "", NULL, NULL), "");

        /* The same user in photond's group may; the method's own errors come through after the check. */
        cr_assert_str_eq(call_as(65534, nobody_in_our_group, 2, "ReleaseLock", "s", "db", NULL), "");
        cr_assert(lock_is_free(c, "db"));
        cr_assert_str_eq(call_as(65534, nobody_in_our_group, 2, "ReleaseLock", "s", "db", NULL),
                         IFACE ".Error.NoSuchLock");
        cr_assert_str_eq(call_as(65534, nobody_in_our_group, 2, "Publish", "ss", "a", "{}"), "");

        /* root may. */
        take_lock(c, "db");
        cr_assert_str_eq(call_as(0, root_groups, 1, "ReleaseLock", "s", "db", NULL), "");
        cr_assert(lock_is_free(c, "db"));
        expect_pong(c);

        conn_close(c);
        daemon_free(d);
        dbus_kill(&system_bus_pid);
        unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
        free(address);
        free(conf);
}

/* A list larger than a D-Bus message may be (locks at their cap with long names and holders) is refused with
 * LimitExceeded; sending it made dbus-daemon drop photond's connection, and with it every bus client. */
Test(bus, list_larger_than_a_message_is_refused_and_the_bus_stays) {
        /* Few long holders rather than 65536 locks: the same bytes, quick under ASan too. */
        Daemon *d = start_on_bus_with((const char*[]) { "PHOTOND_MAX_LOCK_HOLDER_BYTES=65536", NULL });
        Conn *c = conn_open(d);
        const char *argv[] = { "busctl", "--user", "call", "org.photond.Daemon1", "/org/photond/Daemon1",
                               "org.photond.Daemon1", "ListLocks", NULL };
        static char holder[60001];
        char pad[231], *out = NULL, *err = NULL, *batch;
        size_t len = 0;
        FILE *f;
        struct json_object *o;
        enum { N = 1200, W = 50 };     /* 1200 * about 60 KB: over the 64 MiB of a D-Bus array */

        memset(holder, 'h', 60000);
        holder[60000] = '\0';
        memset(pad, 'n', 230);
        pad[230] = '\0';
        for (int i = 0; i < N; i += W) {
                f = open_memstream(&batch, &len);
                cr_assert(f);
                for (int j = i; j < i + W; j++)
                        fprintf(f, "{\"type\":\"lock\",\"id\":\"l%d\",\"lockName\":\"lock-%06d%s\","
                                "\"sessionId\":\"%s%d\",\"lockTimeout\":600000}\n", j, j, pad, holder, j);
                fclose(f);
                conn_send_raw(c, batch, len);
                free(batch);
                for (int j = i; j < i + W; j++) {
                        o = conn_expect(c, 10000);
                        cr_assert(jbool(o, "data.acquired"), "lock %d", j);
                        json_object_put(o);
                }
        }

        cr_assert_neq(run(&out, &err, argv), 0, "ListLocks of %d locks succeeded", N);
        cr_assert(strstr(err, "more than a D-Bus message may hold"), "%s", err);
        cr_assert(strstr(err, "photonctl locks"), "%s", err);
        free(out);
        free(err);

        o = get_property("Version");
        cr_assert_str_eq(jstr(o, "data"), PHOTOND_VERSION);
        json_object_put(o);
        cr_assert_eq(log_count(d, "Lost the connection"), 0);
        o = conn_request(c, "s", "{\"type\":\"status\",\"id\":\"s\"}");
        cr_assert_eq(jint(o, "data.locks"), N);
        json_object_put(o);
        conn_close(c);
        daemon_free(d);
}

/* Cluster mode: the Locks property counts the cluster's locks in Redis, as the heartbeat last counted them (a lock
 * taken on another node included), and announces the count's changes with PropertiesChanged. */
Test(bus, cluster_locks_property_counts_the_clusters) {
        TestRedis redis;
        char url_env[400], *dir;
        Daemon *a, *b;
        Conn *ca;
        Props p;
        struct json_object *o;
        unsigned i;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&redis, dir, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", redis.url);
        a = daemon_start(&(DaemonOptions) { .env = (const char*[]) { url_env, "PHOTOND_NODE_ID=node-a", NULL } });
        b = start_on_bus_with((const char*[]) { url_env, "PHOTOND_NODE_ID=node-b", "PHOTOND_CLUSTER_HEARTBEAT_MS=100",
                                                NULL });
        props_start(&p);
        ca = conn_open(a);
        o = lock_deploy_in_cluster(ca);
        json_object_put(o);

        i = PROPS_WAIT(&p, 0, "Locks=1 ");
        cr_assert_eq(property_u(&p, "Locks"), 1);

        o = conn_request(ca, "u", "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"deploy\",\"sessionId\":\"ci\"}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        (void) PROPS_WAIT(&p, i + 1, "Locks=0 ");
        cr_assert_eq(property_u(&p, "Locks"), 0);

        props_stop(&p);
        conn_close(ca);
        daemon_free(a);
        daemon_free(b);
        test_redis_stop(&redis);
        tmpdir_remove(dir);
}
