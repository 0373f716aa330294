/* SPDX-License-Identifier: MIT */

/* photond-redis.c against a real redis-server on a Unix socket: connect, commands, pub/sub, a lost server and its
 * return, unreachable at start, the command timeout (a stopped server), the pending cap, AUTH. */

#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <string.h>

#include "clock.h"
#include "helpers.h"
#include "photond-redis.h"
#include "redis-helper.h"

typedef struct T {
        sd_event *event;
        char *dir;
        TestRedis redis;
        ClusterUrl url;
        unsigned connected, disconnected, pushes, replies, null_replies;
        char last_reply[128];
        char last_push[128];
} T;

static void on_connected(RedisConn *c, void *userdata) {
        ((T *) userdata)->connected++;
}

static void on_disconnected(RedisConn *c, const char *error, void *userdata) {
        ((T *) userdata)->disconnected++;
}

static void on_push(RedisConn *c, redisReply *reply, void *userdata) {
        T *t = userdata;

        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 && streq(reply->element[0]->str, "message")) {
                t->pushes++;
                snprintf(t->last_push, sizeof(t->last_push), "%s=%s", reply->element[1]->str,
                         reply->element[2]->str);
        }
}

static void on_reply(RedisConn *c, redisReply *reply, void *userdata) {
        T *t = userdata;

        if (!reply) {
                t->null_replies++;
                return;
        }
        t->replies++;
        if (reply->type == REDIS_REPLY_STATUS || reply->type == REDIS_REPLY_STRING ||
            reply->type == REDIS_REPLY_ERROR)
                snprintf(t->last_reply, sizeof(t->last_reply), "%s", reply->str);
        else if (reply->type == REDIS_REPLY_INTEGER)
                snprintf(t->last_reply, sizeof(t->last_reply), "%lld", reply->integer);
        else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
                 reply->element[0]->type == REDIS_REPLY_INTEGER)
                snprintf(t->last_reply, sizeof(t->last_reply), "%lld", reply->element[0]->integer);
}

/* Runs the loop until *counter reaches want, or 10 s pass (then fails). */
static void run_until(T *t, unsigned *counter, unsigned want) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 10 * USEC_PER_SEC;

        while (*counter < want) {
                cr_assert_lt(now_usec(CLOCK_MONOTONIC), deadline, "timed out waiting (%u < %u)", *counter, want);
                cr_assert_geq(sd_event_run(t->event, 100 * USEC_PER_MSEC), 0);
        }
}

static void t_init(T *t, const char *const *extra, bool start) {
        *t = (T) {};
        cr_assert_eq(sd_event_new(&t->event), 0);
        t->dir = tmpdir_new();
        if (start)
                cr_assert_eq(test_redis_start(&t->redis, t->dir, extra), 0);
        else
                snprintf(t->redis.url, sizeof(t->redis.url), "unix://%s/redis.sock", t->dir);
        cr_assert_eq(cluster_url_parse(t->redis.url, &t->url), 0);
}

static void t_done(T *t) {
        test_redis_stop(&t->redis);
        cluster_url_done(&t->url);
        sd_event_unref(t->event);
        tmpdir_remove(t->dir);
}

static RedisConn* t_conn_scripts(T *t, const char *name, uint64_t timeout, size_t max_pending,
                                 const RedisScript *const *scripts) {
        RedisConn *c;

        cr_assert_eq(redis_conn_new(&(RedisConnConfig) {
                                            .event = t->event,
                                            .url = &t->url,
                                            .name = name,
                                            .command_timeout_usec = timeout,
                                            .max_pending = max_pending,
                                            .backoff_min_usec = 10 * USEC_PER_MSEC,
                                            .backoff_max_usec = 50 * USEC_PER_MSEC,
                                            .scripts = scripts,
                                    }, &(RedisConnHooks) {
                                            .connected = on_connected,
                                            .disconnected = on_disconnected,
                                            .push = on_push,
                                            .userdata = t,
                                    }, &c), 0);
        return c;
}

static RedisConn* t_conn(T *t, const char *name, uint64_t timeout, size_t max_pending) {
        return t_conn_scripts(t, name, timeout, max_pending, NULL);
}

static int cmd(RedisConn *c, T *t, const char *a, const char *b, const char *d) {
        const char *argv[3] = { a, b, d };
        size_t len[3] = { strlen(a), b ? strlen(b) : 0, d ? strlen(d) : 0 };

        return redis_conn_command(c, on_reply, t, b ? (d ? 3 : 2) : 1, argv, len);
}

Test(redis, commands_and_pubsub, .disabled = false) {
        RedisConn *c, *sub;
        T t;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        t_init(&t, NULL, true);
        c = t_conn(&t, "commands", 0, 0);
        sub = t_conn(&t, "subscriber", 0, 0);
        cr_assert_eq(redis_conn_state(c), REDIS_CONN_CONNECTING);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), -ENOTCONN);
        run_until(&t, &t.connected, 2);
        cr_assert_eq(redis_conn_state(c), REDIS_CONN_CONNECTED);

        cr_assert_eq(cmd(c, &t, "SET", "k", "v"), 0);
        cr_assert_eq(cmd(c, &t, "GET", "k", NULL), 0);
        cr_assert_eq(redis_conn_pending(c), 2);
        run_until(&t, &t.replies, 2);
        cr_assert_str_eq(t.last_reply, "v");
        cr_assert_eq(redis_conn_pending(c), 0);

        cr_assert_eq(redis_conn_subscribe(sub, 2, (const char *[]) { "SUBSCRIBE", "ch" },
                                          (const size_t[]) { 9, 2 }), 0);
        /* Published until the subscription is in place: the confirmation is a push too, not counted. */
        while (t.pushes == 0) {
                unsigned before = t.replies;

                cr_assert_eq(cmd(c, &t, "PUBLISH", "ch", "hello"), 0);
                run_until(&t, &t.replies, before + 1);
        }
        cr_assert_str_eq(t.last_push, "ch=hello");

        redis_conn_free(sub);
        redis_conn_free(c);
        t_done(&t);
}

Test(redis, lost_and_back) {
        RedisConn *c;
        T t;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        t_init(&t, NULL, true);
        c = t_conn(&t, "commands", 0, 0);
        run_until(&t, &t.connected, 1);

        test_redis_stop(&t.redis);
        run_until(&t, &t.disconnected, 1);
        cr_assert_eq(redis_conn_state(c), REDIS_CONN_RECONNECTING);
        cr_assert_not_null(redis_conn_last_error(c));
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), -ENOTCONN);

        cr_assert_eq(test_redis_start(&t.redis, t.dir, NULL), 0);
        run_until(&t, &t.connected, 2);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), 0);
        run_until(&t, &t.replies, 1);
        cr_assert_str_eq(t.last_reply, "PONG");

        redis_conn_free(c);
        t_done(&t);
}

Test(redis, unreachable_at_start) {
        RedisConn *c;
        T t;

        t_init(&t, NULL, false);
        c = t_conn(&t, "commands", 0, 0);
        /* The socket does not exist: the attempt fails at once, and again at each retry. */
        run_until(&t, &t.disconnected, 3);
        cr_assert_eq(redis_conn_state(c), REDIS_CONN_RECONNECTING);
        cr_assert_eq(t.connected, 0);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), -ENOTCONN);

        if (test_redis_available()) {
                cr_assert_eq(test_redis_start(&t.redis, t.dir, NULL), 0);
                run_until(&t, &t.connected, 1);
        }
        redis_conn_free(c);
        t_done(&t);
}

Test(redis, timeout_and_cap) {
        RedisConn *c;
        T t;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        t_init(&t, NULL, true);
        c = t_conn(&t, "commands", 200 * USEC_PER_MSEC, 2);
        run_until(&t, &t.connected, 1);

        cr_assert_eq(kill(t.redis.pid, SIGSTOP), 0);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), 0);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), 0);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), -ENOBUFS);
        run_until(&t, &t.null_replies, 2);
        cr_assert_eq(t.disconnected, 1);
        cr_assert_str_eq(redis_conn_last_error(c), "timed out");
        cr_assert_eq(redis_conn_pending(c), 0);

        cr_assert_eq(kill(t.redis.pid, SIGCONT), 0);
        run_until(&t, &t.connected, 2);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), 0);
        run_until(&t, &t.replies, 1);

        redis_conn_free(c);
        t_done(&t);
}

Test(redis, auth) {
        static const char *const extra[] = { "--requirepass", "s3cret", NULL };
        RedisConn *c;
        T t;

        if (!test_redis_available())
                cr_skip_test("no redis-server");
        t_init(&t, extra, true);

        /* Wrong password: refused, and the error names no password. */
        cluster_url_done(&t.url);
        cr_assert_eq(cluster_url_parse("unix:///nonexistent", &t.url), 0);
        free(t.url.path);
        t.url.path = strdup(t.redis.socket);
        t.url.password = strdup("wrong");
        c = t_conn(&t, "commands", 0, 0);
        run_until(&t, &t.disconnected, 1);
        cr_assert_eq(t.connected, 0);
        cr_assert_not_null(strstr(redis_conn_last_error(c), "AUTH refused"));
        cr_assert_null(strstr(redis_conn_last_error(c), "wrong"));
        redis_conn_free(c);

        free(t.url.password);
        t.url.password = strdup("s3cret");
        c = t_conn(&t, "commands", 0, 0);
        run_until(&t, &t.connected, 1);
        cr_assert_eq(cmd(c, &t, "PING", NULL, NULL), 0);
        run_until(&t, &t.replies, 1);
        cr_assert_str_eq(t.last_reply, "PONG");
        redis_conn_free(c);
        t_done(&t);
}

/* The SHA1 is Redis' own (what SCRIPT LOAD answers), the scripts are loaded before the connection counts as
 * connected, and a server that lost them (SCRIPT FLUSH) gets them again through a reconnect. */
Test(redis, scripts) {
        RedisScript add;
        const RedisScript *const scripts[] = { &add, NULL };
        const char *argv[] = { "k", "5" };
        const size_t len[] = { 1, 1 };
        RedisConn *c, *plain;
        T t;

        cr_assert_eq(redis_script_init(&add, "return redis.call('INCRBY', KEYS[1], ARGV[1])"), 0);
        /* sha1 of that text, as `printf %s "..." | sha1sum` prints it. */
        cr_assert_str_eq(add.sha, "8cd00688c05c46bde4a2e60658ef20a2e5c0b248");
        if (!test_redis_available())
                cr_skip_test("no redis-server");
        t_init(&t, NULL, true);
        c = t_conn_scripts(&t, "commands", 0, 0, scripts);
        plain = t_conn(&t, "plain", 0, 0);
        run_until(&t, &t.connected, 2);

        /* Loaded by the connect: no EVAL with the source is ever sent. */
        cr_assert_eq(cmd(plain, &t, "SCRIPT", "EXISTS", add.sha), 0);
        run_until(&t, &t.replies, 1);
        cr_assert_str_eq(t.last_reply, "1");
        cr_assert_eq(redis_conn_eval(c, &add, on_reply, &t, 1, 2, argv, len), 0);
        run_until(&t, &t.replies, 2);
        cr_assert_str_eq(t.last_reply, "5");
        cr_assert_eq(redis_conn_eval(c, &add, on_reply, &t, 1, REDIS_SCRIPT_MAX_ARGS + 1, argv, len), -E2BIG);

        /* Flushed: the call gets the NOSCRIPT error, the connection reconnects and loads them, the next call works. */
        cr_assert_eq(cmd(plain, &t, "SCRIPT", "FLUSH", NULL), 0);
        run_until(&t, &t.replies, 3);
        cr_assert_eq(redis_conn_eval(c, &add, on_reply, &t, 1, 2, argv, len), 0);
        run_until(&t, &t.replies, 4);
        cr_assert(strncmp(t.last_reply, "NOSCRIPT", 8) == 0, "%s", t.last_reply);
        run_until(&t, &t.disconnected, 1);
        run_until(&t, &t.connected, 3);
        cr_assert_eq(redis_conn_eval(c, &add, on_reply, &t, 1, 2, argv, len), 0);
        run_until(&t, &t.replies, 5);
        cr_assert_str_eq(t.last_reply, "10");

        redis_conn_free(plain);
        redis_conn_free(c);
        t_done(&t);
}
