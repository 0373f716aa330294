/* SPDX-License-Identifier: MIT */

/* Cluster mode's method calls: two real photond nodes and one real redis-server (on a Unix socket in a temporary
 * directory). A command on node a reaches a provider connected to node b, with its emits, prompts and the caller's
 * prompt_response relayed; a provider of a's own is preferred; and the failures: b's provider disconnects, b is
 * killed, Redis stops. Providers are simulated over the control socket as in test-dispatch.c. */

#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "http-client.h"
#include "json-util.h"
#include "redis-helper.h"

typedef struct Cluster2 {
        TestRedis redis;
        char *dir;
        Daemon *a, *b;
} Cluster2;

static void wait_connected(Daemon *d, bool want) {
        uint64_t deadline = mono_ms() + 10000;

        for (;;) {
                struct json_object *o = status_of(d);
                bool ok = jbool(o, "data.cluster.connected");

                json_object_put(o);
                if (ok == want)
                        return;
                cr_assert_lt(mono_ms(), deadline, "node never %s", want ? "connected" : "noticed the loss");
                (void) poll(NULL, 0, 20);
        }
}

static void cluster_start(Cluster2 *c) {
        if (!test_redis_available())
                cr_skip_test("no redis-server");
        c->dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&c->redis, c->dir, NULL), 0);
        c->a = cluster_node_start(c->redis.url, "node-a", NULL, NULL);
        c->b = cluster_node_start(c->redis.url, "node-b", NULL, NULL);
        wait_connected(c->a, true);
        wait_connected(c->b, true);
}

static void daemon_stop_checked(Daemon *d) {
        int st;

        if (!d)
                return;
        st = daemon_signal_and_wait(d, SIGTERM);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || daemon_log_contains(d, "Sanitizer") ||
            daemon_log_contains(d, "runtime error"))
                daemon_dump_log(d);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "photond exited with status %d", st);
        cr_assert(!daemon_log_contains(d, "runtime error"), "UBSan report in photond's log");
        cr_assert(!daemon_log_contains(d, "Sanitizer"), "sanitizer report in photond's log");
        daemon_free(d);
}

static void cluster_stop(Cluster2 *c) {
        daemon_stop_checked(c->a);
        daemon_stop_checked(c->b);
        test_redis_stop(&c->redis);
        tmpdir_remove(c->dir);
}

static Conn* provider_open(Daemon *d, const char *photon) {
        Conn *p = conn_open(d);
        struct json_object *o;

        o = conn_request(p, "prov", "{\"type\":\"provide\",\"id\":\"prov\",\"photonName\":\"%s\"}", photon);
        cr_assert_str_eq(jstr(o, "type"), "result", "%s", json_object_to_json_string(o));
        json_object_put(o);
        return p;
}

static struct json_object* expect_line(Conn *c, const char *type, const char *id, int timeout_ms) {
        struct json_object *o = conn_expect(c, timeout_ms);

        cr_assert_str_eq(jstr(o, "type"), type, "%s", json_object_to_json_string(o));
        if (id)
                cr_assert_str_eq(jstr(o, "id"), id, "%s", json_object_to_json_string(o));
        return o;
}

static void assert_contains(const char *s, const char *needle) {
        cr_assert(s && strstr(s, needle), "'%s' does not contain '%s'", s ?: "(null)", needle);
}

/* Until b's provider is known in Redis: probe commands from a until one reaches the provider (answered at once);
 * the ones before it find nobody. The provide's HSET and a's lookup go over different connections. */
static void wait_remote_provider(Conn *caller, Conn *provider, const char *photon) {
        uint64_t deadline = mono_ms() + 10000;

        for (unsigned i = 0;; i++) {
                char id[32];
                struct json_object *o, *inv;

                snprintf(id, sizeof(id), "probe%u", i);
                conn_send(caller, "{\"type\":\"command\",\"id\":\"%s\",\"photonName\":\"%s\",\"method\":\"probe\"}",
                          id, photon);
                inv = conn_recv(provider, 200);
                if (inv) {
                        cr_assert_str_eq(jstr(inv, "type"), "invoke", "%s", json_object_to_json_string(inv));
                        conn_send(provider, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":1}",
                                  jstr(inv, "id"));
                        json_object_put(inv);
                        o = expect_line(caller, "result", id, 5000);
                        json_object_put(o);
                        return;
                }
                o = expect_line(caller, "error", id, 5000);
                assert_contains(jstr(o, "error"), "Cannot initialize photon");
                json_object_put(o);
                cr_assert_lt(mono_ms(), deadline, "the provider on the other node was never found");
        }
}

/* PUBLISH through redis-cli, as anyone with access to Redis could. */
static void redis_publish(Cluster2 *c, const char *channel, const char *payload) {
        char *argv[] = { "redis-cli", "-s", c->redis.socket, "PUBLISH", (char *) channel, (char *) payload, NULL };
        pid_t pid;
        int st;

        cr_assert_eq(posix_spawnp(&pid, "redis-cli", NULL, NULL, argv, NULL), 0);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static char* invoke_id_of(struct json_object *inv) {
        return strdup(jstr(inv, "id"));
}

Test(cluster_calls, command_reaches_a_provider_on_another_node) {
        Cluster2 c;
        Conn *prov, *caller, *watcher;
        struct json_object *o, *inv;
        char *inv_id;

        cluster_start(&c);
        prov = provider_open(c.b, "kanban");
        caller = conn_open(c.a);
        watcher = conn_open(c.a);
        o = conn_request(watcher, "w", "{\"type\":\"subscribe\",\"id\":\"w\",\"channel\":\"kanban:work:state-changed\"}");
        cr_assert_str_eq(jstr(o, "type"), "result");
        json_object_put(o);
        wait_remote_provider(caller, prov, "kanban");
        /* The probes' state-changed (instance "default") are not on the watched channel. */

        conn_send(caller, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"add\","
                  "\"args\":{\"title\":\"x\"},\"instanceName\":\"work\",\"sessionId\":\"s-1\"}");
        inv = expect_line(prov, "invoke", NULL, 5000);
        cr_assert_str_eq(jstr(inv, "photonName"), "kanban");
        cr_assert_str_eq(jstr(inv, "method"), "add");
        cr_assert_str_eq(jstr(inv, "args.title"), "x");
        cr_assert_str_eq(jstr(inv, "trigger"), "command");
        cr_assert_str_eq(jstr(inv, "instanceName"), "work");
        cr_assert_str_eq(jstr(inv, "sessionId"), "s-1");
        inv_id = invoke_id_of(inv);
        json_object_put(inv);

        /* While it runs, b's ps shows it, and a's status counts it in flight. */
        o = status_of(c.a);
        cr_assert_eq(jint(o, "data.cluster.calls.inFlight"), 1, "%s", json_object_to_json_string(o));
        cr_assert_eq(jint(o, "data.runningCalls"), 1);
        json_object_put(o);

        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":{\"id\":7},"
                  "\"patch\":[{\"op\":\"add\",\"path\":\"/x\",\"value\":1}]}", inv_id);
        o = expect_line(caller, "result", "c1", 5000);
        cr_assert(jbool(o, "success"));
        cr_assert_eq(jint(o, "data.id"), 7);
        json_object_put(o);

        /* state-changed once, from the caller's node, with the provider's patch; not again from b. */
        o = expect_line(watcher, "channel_message", NULL, 5000);
        cr_assert_str_eq(jstr(o, "message.method"), "add");
        cr_assert_str_eq(jstr(o, "message.patch.0.path"), "/x");
        json_object_put(o);
        o = conn_recv(watcher, 500);
        cr_assert_null(o, "a second state-changed: %s", o ? json_object_to_json_string(o) : "");

        /* A failure on b is the caller's error, word for word. */
        conn_send(caller, "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"add\"}");
        inv = expect_line(prov, "invoke", NULL, 5000);
        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":false,\"error\":\"Board is full\"}",
                  jstr(inv, "id"));
        json_object_put(inv);
        o = expect_line(caller, "error", "c2", 5000);
        cr_assert_str_eq(jstr(o, "error"), "Board is full");
        json_object_put(o);

        o = status_of(c.b);
        cr_assert_geq(jint(o, "data.cluster.calls.served"), 2);
        json_object_put(o);
        o = status_of(c.a);
        cr_assert_eq(jint(o, "data.cluster.calls.inFlight"), 0);
        cr_assert_eq(jint(o, "data.runningCalls"), 0);
        json_object_put(o);

        free(inv_id);
        conn_close(watcher);
        conn_close(caller);
        conn_close(prov);
        cluster_stop(&c);
}

Test(cluster_calls, emits_and_prompts_cross_nodes) {
        Cluster2 c;
        Conn *prov, *caller;
        struct json_object *o, *inv;
        char *inv_id;

        cluster_start(&c);
        prov = provider_open(c.b, "wizard");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "wizard");

        conn_send(caller, "{\"type\":\"command\",\"id\":\"w1\",\"photonName\":\"wizard\",\"method\":\"run\"}");
        inv = expect_line(prov, "invoke", NULL, 5000);
        inv_id = invoke_id_of(inv);
        json_object_put(inv);

        conn_send(prov, "{\"type\":\"emit\",\"id\":\"%s\",\"emitData\":{\"emit\":\"progress\",\"value\":0.5}}", inv_id);
        o = expect_line(caller, "emit", "w1", 5000);
        cr_assert_str_eq(jstr(o, "emitData.emit"), "progress");
        json_object_put(o);

        conn_send(prov, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"Colour?\"}}",
                  inv_id);
        o = expect_line(caller, "prompt", "w1", 5000);
        cr_assert_str_eq(jstr(o, "prompt.message"), "Colour?");
        json_object_put(o);
        conn_send(caller, "{\"type\":\"prompt_response\",\"id\":\"w1\",\"promptValue\":\"blue\"}");
        o = expect_line(prov, "prompt_response", inv_id, 5000);
        cr_assert_str_eq(jstr(o, "promptValue"), "blue");
        json_object_put(o);

        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":\"blue it is\"}", inv_id);
        o = expect_line(caller, "result", "w1", 5000);
        cr_assert_str_eq(jstr(o, "data"), "blue it is");
        json_object_put(o);

        /* The caller leaves with a prompt open: the provider on b gets null, as on one node. */
        conn_send(caller, "{\"type\":\"command\",\"id\":\"w2\",\"photonName\":\"wizard\",\"method\":\"run\"}");
        inv = expect_line(prov, "invoke", NULL, 5000);
        free(inv_id);
        inv_id = invoke_id_of(inv);
        json_object_put(inv);
        conn_send(prov, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"?\"}}", inv_id);
        json_object_put(expect_line(caller, "prompt", "w2", 5000));
        conn_close(caller);
        o = expect_line(prov, "prompt_response", inv_id, 5000);
        cr_assert(jhas(o, "promptValue"));
        cr_assert_null(jget(o, "promptValue"));
        json_object_put(o);
        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":1}", inv_id);

        free(inv_id);
        conn_close(prov);
        cluster_stop(&c);
}

Test(cluster_calls, a_local_provider_is_preferred) {
        Cluster2 c;
        Conn *remote, *local, *caller;
        struct json_object *o, *inv;
        char id[16];

        cluster_start(&c);
        remote = provider_open(c.b, "kanban");
        /* Registered in Redis before a's own provider comes (the probe reaches it). */
        caller = conn_open(c.a);
        wait_remote_provider(caller, remote, "kanban");
        local = provider_open(c.a, "kanban");

        for (int i = 0; i < 10; i++) {
                snprintf(id, sizeof(id), "c%d", i);
                conn_send(caller, "{\"type\":\"command\",\"id\":\"%s\",\"photonName\":\"kanban\",\"method\":\"m\"}", id);
                inv = expect_line(local, "invoke", NULL, 5000);
                conn_send(local, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":%d}",
                          jstr(inv, "id"), i);
                json_object_put(inv);
                o = expect_line(caller, "result", id, 5000);
                cr_assert_eq(jint(o, "data"), i);
                json_object_put(o);
        }
        o = conn_recv(remote, 300);
        cr_assert_null(o, "the remote provider got %s", o ? json_object_to_json_string(o) : "");
        o = status_of(c.a);
        cr_assert_eq(jint(o, "data.cluster.calls.sent"), 1, "only the probe went to b: %s",
                     json_object_to_json_string(o));
        json_object_put(o);

        conn_close(caller);
        conn_close(local);
        conn_close(remote);
        cluster_stop(&c);
}

Test(cluster_calls, provider_disconnect_on_the_other_node_fails_the_call) {
        Cluster2 c;
        Conn *prov, *caller;
        struct json_object *o;

        cluster_start(&c);
        prov = provider_open(c.b, "kanban");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "kanban");

        conn_send(caller, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"slow\"}");
        json_object_put(expect_line(prov, "invoke", NULL, 5000));
        conn_close(prov);
        o = expect_line(caller, "error", "c1", 5000);
        cr_assert_str_eq(jstr(o, "error"), "The provider of 'kanban' disconnected before answering slow");
        json_object_put(o);

        /* b provides it no more: the next call finds nobody in the cluster (b drops its entry). */
        o = conn_request(caller, "c2", "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"m\"}");
        cr_assert_str_eq(jstr(o, "type"), "error");
        assert_contains(jstr(o, "error"), "Cannot initialize photon 'kanban'");
        json_object_put(o);

        conn_close(caller);
        cluster_stop(&c);
}

Test(cluster_calls, node_killed_mid_call_fails_the_call) {
        Cluster2 c;
        Conn *prov, *caller;
        struct json_object *o;
        uint64_t t0;
        int st;

        cluster_start(&c);
        prov = provider_open(c.b, "kanban");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "kanban");

        conn_send(caller, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"slow\"}");
        json_object_put(expect_line(prov, "invoke", NULL, 5000));
        t0 = mono_ms();
        st = daemon_signal_and_wait(c.b, SIGKILL);
        cr_assert(WIFSIGNALED(st));
        daemon_free(c.b);
        c.b = NULL;
        conn_close(prov);

        /* Noticed at the next check (every second), long before the call's 30 s timeout. */
        o = expect_line(caller, "error", "c1", 5000);
        cr_assert_str_eq(jstr(o, "error"), "The provider of 'kanban' on node node-b went away before answering slow "
                         "(the node is no longer connected to the cluster)");
        json_object_put(o);
        cr_assert_lt(mono_ms() - t0, 4000);

        /* Its entry is dropped at the next lookup: nobody provides it. */
        o = conn_request(caller, "c2", "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"m\"}");
        assert_contains(jstr(o, "error"), "Cannot initialize photon 'kanban'");
        json_object_put(o);

        conn_close(caller);
        cluster_stop(&c);
}

Test(cluster_calls, redis_stopped_fails_remote_calls_clearly) {
        Cluster2 c;
        Conn *prov, *caller;
        struct json_object *o;

        cluster_start(&c);
        prov = provider_open(c.b, "kanban");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "kanban");

        /* Mid-call: the answer could no longer come back. */
        conn_send(caller, "{\"type\":\"command\",\"id\":\"c1\",\"photonName\":\"kanban\",\"method\":\"slow\"}");
        json_object_put(expect_line(prov, "invoke", NULL, 5000));
        test_redis_stop(&c.redis);
        o = expect_line(caller, "error", "c1", 5000);
        assert_contains(jstr(o, "error"), "Cluster unavailable: the connection to Redis was lost while node-b ran "
                        "kanban/slow");
        json_object_put(o);

        /* A new call that needs another node's provider. */
        wait_connected(c.a, false);
        o = conn_request(caller, "c2", "{\"type\":\"command\",\"id\":\"c2\",\"photonName\":\"kanban\",\"method\":\"m\"}");
        assert_contains(jstr(o, "error"), "Cluster unavailable: no provider of 'kanban' on this node");
        json_object_put(o);
        /* A local one still answers. */
        {
                Conn *local = provider_open(c.a, "kanban");
                struct json_object *inv;

                conn_send(caller, "{\"type\":\"command\",\"id\":\"c3\",\"photonName\":\"kanban\",\"method\":\"m\"}");
                inv = expect_line(local, "invoke", NULL, 5000);
                conn_send(local, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":3}",
                          jstr(inv, "id"));
                json_object_put(inv);
                o = expect_line(caller, "result", "c3", 5000);
                json_object_put(o);
                conn_close(local);
        }

        /* Redis back: b writes its providers again, and calls cross again. */
        cr_assert_eq(test_redis_start(&c.redis, c.dir, NULL), 0);
        wait_connected(c.a, true);
        wait_connected(c.b, true);
        wait_remote_provider(caller, prov, "kanban");

        conn_close(caller);
        conn_close(prov);
        cluster_stop(&c);
}

/* A job that fires on a (run_job here) reaches the provider on b, with its trigger and job id. */
Test(cluster_calls, a_job_reaches_a_provider_on_another_node) {
        Cluster2 c;
        Conn *prov, *caller;
        struct json_object *o, *inv;

        cluster_start(&c);
        prov = provider_open(c.b, "kanban");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "kanban");

        o = conn_request(caller, "s1", "{\"type\":\"schedule\",\"id\":\"s1\",\"photonName\":\"kanban\",\"jobId\":\"r\","
                         "\"method\":\"nightly\",\"cron\":\"0 0 1 1 *\",\"args\":{\"v\":1}}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_send(caller, "{\"type\":\"run_job\",\"id\":\"r1\",\"jobId\":\"r\"}");
        inv = expect_line(prov, "invoke", NULL, 5000);
        cr_assert_str_eq(jstr(inv, "method"), "nightly");
        cr_assert_str_eq(jstr(inv, "trigger"), "schedule");
        cr_assert_str_eq(jstr(inv, "jobId"), "kanban:ipc:r");
        cr_assert_eq(jint(inv, "args.v"), 1);
        /* A job's prompt has nobody to ask: null comes back from a, through Redis. */
        conn_send(prov, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"?\"}}",
                  jstr(inv, "id"));
        o = expect_line(prov, "prompt_response", jstr(inv, "id"), 5000);
        cr_assert_null(jget(o, "promptValue"));
        json_object_put(o);
        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":\"done on b\"}",
                  jstr(inv, "id"));
        json_object_put(inv);

        o = expect_line(caller, "result", "r1", 5000);
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        cr_assert_str_eq(jstr(o, "data.status"), "success");
        cr_assert_str_eq(jstr(o, "data.result"), "done on b");
        json_object_put(o);

        conn_close(caller);
        conn_close(prov);
        cluster_stop(&c);
}

/* What comes on a node's calls channel from Redis is checked: garbage and messages that are not one are counted
 * and dropped, an answer for a call of another life of the node (another nonce) or of no call is stray, and the
 * node goes on serving calls. */
Test(cluster_calls, garbage_on_the_calls_channel_is_refused) {
        static const char *const garbage[] = {
                "",
                "garbage",
                "\x01\xff",
                "[1,2]",
                "{\"v\":1,\"k\":\"result\",\"from\":\"node-b\",\"call\":\"inv_1\",\"ok\":\"yes\"}",
                "{\"v\":1,\"k\":\"invoke\",\"from\":\"node-b\",\"call\":\"c\",\"photon\":\"../x\","
                        "\"method\":\"m\",\"args\":{},\"trigger\":\"command\"}",
                "{\"v\":1,\"k\":\"emit\",\"from\":\"node-a\",\"call\":\"inv_1.0\",\"value\":{}}",
        };
        Cluster2 c;
        Conn *prov, *caller;
        struct json_object *o;
        int64_t invalid, stray;

        cluster_start(&c);
        prov = provider_open(c.b, "kanban");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "kanban");

        for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
                redis_publish(&c, "photon:node:node-a:calls", garbage[i]);
        /* Well formed, but for calls a has not sent: another life's nonce, and no nonce. */
        redis_publish(&c, "photon:node:node-a:calls", "{\"v\":1,\"k\":\"result\",\"from\":\"node-b\","
                      "\"call\":\"inv_1.0000000000000000\",\"ok\":true,\"value\":1}");
        redis_publish(&c, "photon:node:node-a:calls", "{\"v\":1,\"k\":\"result\",\"from\":\"node-b\","
                      "\"call\":\"inv_1\",\"ok\":true,\"value\":1}");

        /* Still serving: a call crosses after all of it (the messages above came first on the channel). */
        wait_remote_provider(caller, prov, "kanban");
        o = status_of(c.a);
        invalid = jint(o, "data.cluster.calls.invalid");
        stray = jint(o, "data.cluster.calls.stray");
        cr_assert_eq(invalid, 7, "%s", json_object_to_json_string(o));
        cr_assert_eq(stray, 2, "%s", json_object_to_json_string(o));
        json_object_put(o);

        conn_close(caller);
        conn_close(prov);
        cluster_stop(&c);
}

/* A webhook on a reaches the provider on b; one for a photon nobody in the cluster provides fails with the
 * no-provider text. */
Test(cluster_calls, a_webhook_reaches_a_provider_on_another_node) {
        Cluster2 c;
        char url_env[400];
        const char *env[] = { url_env, "PHOTOND_NODE_ID=node-a", "PHOTON_WEBHOOK_SECRET=s3cret", NULL };
        Conn *prov, *caller;
        struct json_object *inv, *o = NULL;
        char url[128], *out;
        int fd, st;
        pid_t pid;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        c.dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&c.redis, c.dir, NULL), 0);
        snprintf(url_env, sizeof(url_env), "PHOTOND_CLUSTER_URL=%s", c.redis.url);
        c.a = daemon_start_http(env);
        c.b = cluster_node_start(c.redis.url, "node-b", NULL, NULL);
        wait_connected(c.a, true);
        wait_connected(c.b, true);
        prov = provider_open(c.b, "kanban");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "kanban");

        snprintf(url, sizeof(url), "http://127.0.0.1:%d/webhook/kanban/onPush", c.a->webhook_port);
        pid = curl_spawn((const char *[]) { "--request", "POST", "--data-binary", "{\"ref\":\"main\"}",
                                            "-H", "Content-Type: application/json", "-H", "X-Webhook-Secret: s3cret",
                                            "--write-out", "\n%{http_code}", url, NULL }, &fd);
        inv = expect_line(prov, "invoke", NULL, 10000);
        cr_assert_str_eq(jstr(inv, "method"), "onPush");
        cr_assert_str_eq(jstr(inv, "trigger"), "webhook");
        cr_assert_str_eq(jstr(inv, "args.ref"), "main");
        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":{\"ok\":1}}",
                  jstr(inv, "id"));
        json_object_put(inv);
        out = read_all(fd);
        close(fd);
        st = curl_wait(pid);
        cr_assert_eq(st, 0);
        cr_assert(strstr(out, "\n200"), "%s", out);
        *strrchr(out, '\n') = 0;
        cr_assert_eq(json_parse(out, strlen(out), &o, NULL), 0, "%s", out);
        cr_assert(jbool(o, "success"));
        cr_assert_eq(jint(o, "data.ok"), 1);
        json_object_put(o);
        free(out);

        /* Nobody anywhere provides it: the cluster says so (after asking Redis, with status 500). */
        expect(http(c.a->webhook_port, "POST", "/webhook/nobody/m", "{}", "-H", "X-Webhook-Secret: s3cret", NULL),
               500, "Cannot initialize photon 'nobody': no provider is connected to this node or to any other node "
               "of the cluster, and there is no executable handler of nobody/m here");

        conn_close(caller);
        conn_close(prov);
        cluster_stop(&c);
}

/* The caller's node dies mid-call: the call goes on at b without a caller, as when a caller disconnects; a prompt
 * nobody can receive is answered null, and the call still frees its slot when the provider answers. */
Test(cluster_calls, caller_node_killed_mid_call) {
        Cluster2 c;
        Conn *prov, *caller;
        struct json_object *o, *inv;
        int st;

        cluster_start(&c);
        prov = provider_open(c.b, "wizard");
        caller = conn_open(c.a);
        wait_remote_provider(caller, prov, "wizard");

        conn_send(caller, "{\"type\":\"command\",\"id\":\"w1\",\"photonName\":\"wizard\",\"method\":\"run\"}");
        inv = expect_line(prov, "invoke", NULL, 5000);
        st = daemon_signal_and_wait(c.a, SIGKILL);
        cr_assert(WIFSIGNALED(st));
        daemon_free(c.a);
        c.a = NULL;
        conn_close(caller);

        conn_send(prov, "{\"type\":\"prompt\",\"id\":\"%s\",\"prompt\":{\"type\":\"text\",\"message\":\"?\"}}",
                  jstr(inv, "id"));
        o = expect_line(prov, "prompt_response", jstr(inv, "id"), 5000);
        cr_assert(jhas(o, "promptValue"));
        cr_assert_null(jget(o, "promptValue"));
        json_object_put(o);
        conn_send(prov, "{\"type\":\"invoke_result\",\"id\":\"%s\",\"success\":true,\"data\":1}", jstr(inv, "id"));
        json_object_put(inv);
        for (uint64_t deadline = mono_ms() + 5000;;) {
                int64_t running;

                o = status_of(c.b);
                running = jint(o, "data.runningCalls");
                json_object_put(o);
                if (running == 0)
                        break;
                cr_assert_lt(mono_ms(), deadline, "the call never ended on b");
                (void) poll(NULL, 0, 20);
        }

        conn_close(prov);
        cluster_stop(&c);
}
