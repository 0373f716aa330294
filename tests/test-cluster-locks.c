/* SPDX-License-Identifier: MIT */

/* The cluster lock backend's keys, the lock value its script writes, and the batch script itself in a real Redis
 * (photond-cluster-locks.c); the nodes' use of it in tests/integration/test-cluster-locks.c. */

#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "photond-cluster-locks.h"
#include "redis-helper.h"
#include "string-util.h"

Test(cluster_locks, keys) {
        static const struct {
                ClusterLockKey key;
                const char *name, *expect;
        } cases[] = {
                { CLUSTER_LOCK_KEY_LOCK, "db", "photon:lock:db" },
                { CLUSTER_LOCK_KEY_LOCK, "a b:c", "photon:lock:a b:c" },
                { CLUSTER_LOCK_KEY_TOKEN, "ignored", "photon:locks:token" },
                { CLUSTER_LOCK_KEY_INDEX, NULL, "photon:locks:index" },
                { CLUSTER_LOCK_KEY_CHANNEL, NULL, "photon:locks:released" },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *k = cluster_lock_key("photon:", cases[i].key, cases[i].name);

                cr_assert_str_eq(k, cases[i].expect);
                free(k);
        }
        {
                char *k = cluster_lock_key("", CLUSTER_LOCK_KEY_LOCK, "x");

                cr_assert_str_eq(k, "lock:x", "an empty prefix");
                free(k);
        }
}

Test(cluster_locks, value_parse) {
        ClusterLockValue v;

        cr_assert_eq(cluster_lock_value_parse("1796561217021000 1796561217021 1796561247021 0 s1", &v), 0);
        cr_assert_eq(v.token, UINT64_C(1796561217021000));
        cr_assert_eq(v.acquired_at, INT64_C(1796561217021));
        cr_assert_eq(v.expires_at, INT64_C(1796561247021));
        cr_assert_eq(v.wait_until, 0);
        cr_assert_str_eq(v.holder, "s1");
        /* The holder is the rest, spaces and digits included. */
        cr_assert_eq(cluster_lock_value_parse("7 8 9 10 a holder 11 with spaces", &v), 0);
        cr_assert_eq(v.wait_until, 10);
        cr_assert_str_eq(v.holder, "a holder 11 with spaces");
        cr_assert_eq(cluster_lock_value_parse("7 8 9 0 ", &v), 0);
        cr_assert_str_eq(v.holder, "");

        cr_assert_eq(cluster_lock_value_parse(NULL, &v), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("", &v), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("x 8 9 0 h", &v), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("7 8 9 0", &v), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("7  8 9 0 h", &v), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("7 8 -9 0 h", &v), -EINVAL);
        /* The value of photond before batching ("<token> <acquiredAt> <holder>"). */
        cr_assert_eq(cluster_lock_value_parse("7 8 h", &v), -EINVAL);
        cr_assert_eq(cluster_lock_value_parse("99999999999999999999999 8 9 0 h", &v), -EINVAL);
}

/* ---- the batch script, in a real Redis ---- */

typedef struct ScriptRedis {
        TestRedis redis;
        char *dir;
        redisContext *c;
        char sha[41];
} ScriptRedis;

static bool script_up(ScriptRedis *s) {
        redisReply *r;

        if (!test_redis_available())
                return false;
        s->dir = tmpdir_new();
        cr_assert_eq(test_redis_start(&s->redis, s->dir, NULL), 0);
        s->c = redisConnectUnix(s->redis.socket);
        cr_assert(s->c && !s->c->err);
        r = redisCommand(s->c, "SCRIPT LOAD %s", cluster_locks_script());
        cr_assert(r && r->type == REDIS_REPLY_STRING, "%s", r ? r->str : "no answer");
        snprintf(s->sha, sizeof(s->sha), "%s", r->str);
        freeReplyObject(r);
        return true;
}

static void script_down(ScriptRedis *s) {
        redisFree(s->c);
        test_redis_stop(&s->redis);
        tmpdir_remove(s->dir);
}

/* One batch: ops is a NULL-terminated list of operations, each a string of space-separated words, its first the
 * code and, for A R T Q, its second the lock's name (the key is made from it); max: MAX_LOCKS. */
static redisReply* run_batch(ScriptRedis *s, unsigned max, const char *const *ops) {
        const char *argv[256];
        size_t n_ops = 0, argc = 0, n_args = 0;
        char *keys[64], *words[64][6], max_s[16];
        const char *args[256];
        redisReply *r;

        for (; ops[n_ops]; n_ops++) {
                char *copy = strdup(ops[n_ops]), *save = NULL, *w;
                size_t i = 0;

                for (w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
                        words[n_ops][i++] = w;
                words[n_ops][i] = NULL;
                if (streq(words[n_ops][0], "L"))
                        keys[n_ops] = strdup("photon:locks:index");
                else
                        cr_assert(asprintf(&keys[n_ops], "photon:lock:%s", words[n_ops][1]) > 0);
                args[n_args++] = words[n_ops][0];
                for (size_t j = 1; j < i; j++)
                        if (!streq(words[n_ops][0], "Q"))
                                args[n_args++] = words[n_ops][j];
        }
        snprintf(max_s, sizeof(max_s), "%u", max);
        argv[argc++] = "EVALSHA";
        argv[argc++] = s->sha;
        {
                static char nk[16];

                snprintf(nk, sizeof(nk), "%zu", 2 + n_ops);
                argv[argc++] = nk;
        }
        argv[argc++] = "photon:locks:token";
        argv[argc++] = "photon:locks:index";
        for (size_t i = 0; i < n_ops; i++)
                argv[argc++] = keys[i];
        argv[argc++] = "photon:locks:released";
        argv[argc++] = max_s;
        argv[argc++] = "photon:lock:";
        for (size_t i = 0; i < n_args; i++)
                argv[argc++] = args[i];
        r = redisCommandArgv(s->c, (int) argc, argv, NULL);
        cr_assert_not_null(r);
        for (size_t i = 0; i < n_ops; i++) {
                free(keys[i]);
                free(words[i][0]);
        }
        cr_assert_eq(r->type, REDIS_REPLY_ARRAY, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
        cr_assert_eq(r->elements, n_ops + 1);
        cr_assert_eq(r->element[0]->type, REDIS_REPLY_INTEGER, "Redis' time first");
        return r;
}

/* An acquire's or a transfer's answer: 0 new, 1 re-entrant, 2 held by another, 3 MAX_LOCKS. */
static int64_t code_of(const redisReply *r) {
        if (r->type == REDIS_REPLY_STRING)
                return 2;
        cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
        return r->integer == 0 ? 3 : r->integer > 0 ? 0 : 1;
}

static uint64_t token_of(const redisReply *r) {
        cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
        return r->integer < 0 ? (uint64_t) -r->integer : (uint64_t) r->integer;
}

/* A held answer's or a query's value. */
static ClusterLockValue value_of(const redisReply *r) {
        ClusterLockValue v;

        cr_assert_eq(r->type, REDIS_REPLY_STRING);
        cr_assert_eq(cluster_lock_value_parse(r->str, &v), 0, "%s", r->str);
        return v;
}

/* Operations on one name in one call give what they would one after the other. */
Test(cluster_locks, batch_runs_its_operations_in_order) {
        ScriptRedis s;
        redisReply *r, *sub;
        ClusterLockValue v;
        uint64_t t1, t2, t3;
        int64_t now;

        if (!script_up(&s))
                cr_skip_test("no redis-server");
        /* Someone listens for releases of waited-for locks. */
        {
                redisContext *c = redisConnectUnix(s.redis.socket);

                cr_assert(c && !c->err);
                sub = redisCommand(c, "SUBSCRIBE photon:locks:released");
                freeReplyObject(sub);
                r = run_batch(&s, 100, (const char *const[]) {
                        "A x h1 30000 0",       /* 1: granted */
                        "Q x",                  /* 2: h1 */
                        "A x h2 30000 0",       /* 3: held by h1 */
                        "A x h1 60000 0",       /* 4: re-entrant, same token */
                        "R x h2",               /* 5: not h2's */
                        "R x h1",               /* 6: released; nobody waited: no message */
                        "Q x",                  /* 7: free */
                        "A x h2 30000 5000",    /* 8: granted, a new token */
                        "A x h3 30000 5000",    /* 9: held; h3 waits: marked */
                        "T x h2 h4 30000",      /* 10: h4's, a new token; waited for: a message */
                        "Q x",                  /* 11: h4, still marked */
                        "L",                    /* 12: x */
                        "R x h4",               /* 13: released; a message */
                        "L",                    /* 14: nothing */
                        NULL });
                now = r->element[0]->integer;
                cr_assert_eq(code_of(r->element[1]), 0);
                t1 = token_of(r->element[1]);
                cr_assert_geq(t1, (uint64_t) now * 1000, "the token floor: Redis' ms × 1000");
                v = value_of(r->element[2]);
                cr_assert_str_eq(v.holder, "h1");
                cr_assert_eq(v.token, t1);
                cr_assert_eq(v.acquired_at, now);
                cr_assert_eq(v.expires_at, now + 30000);
                cr_assert_eq(v.wait_until, 0);
                cr_assert_eq(code_of(r->element[3]), 2);
                cr_assert_str_eq(value_of(r->element[3]).holder, "h1");
                cr_assert_eq(code_of(r->element[4]), 1);
                cr_assert_eq(token_of(r->element[4]), t1);
                cr_assert_eq(r->element[5]->integer, 1);
                cr_assert_eq(r->element[6]->integer, 0);
                cr_assert_eq(r->element[7]->type, REDIS_REPLY_NIL);
                cr_assert_eq(code_of(r->element[8]), 0);
                t2 = token_of(r->element[8]);
                cr_assert_gt(t2, t1);
                cr_assert_eq(code_of(r->element[9]), 2);
                v = value_of(r->element[9]);
                cr_assert_str_eq(v.holder, "h2");
                cr_assert_eq(v.wait_until, now + 5000);
                cr_assert_eq(code_of(r->element[10]), 0);
                t3 = token_of(r->element[10]);
                cr_assert_gt(t3, t2);
                v = value_of(r->element[11]);
                cr_assert_str_eq(v.holder, "h4");
                cr_assert_eq(v.token, t3);
                cr_assert_eq(v.wait_until, now + 5000, "a transfer keeps the mark");
                cr_assert_eq(r->element[12]->type, REDIS_REPLY_ARRAY);
                cr_assert_eq(r->element[12]->elements, 2);
                cr_assert_str_eq(r->element[12]->element[0]->str, "x");
                cr_assert_eq(r->element[13]->integer, 0);
                cr_assert_eq(r->element[14]->elements, 0);
                freeReplyObject(r);

                /* The two messages: the transfer's and the release's, none for the release nobody waited for. */
                for (int i = 0; i < 2; i++) {
                        cr_assert_eq(redisGetReply(c, (void **) &sub), REDIS_OK);
                        cr_assert_str_eq(sub->element[0]->str, "message");
                        cr_assert_str_eq(sub->element[2]->str, "x");
                        freeReplyObject(sub);
                }
                r = redisCommand(s.c, "PUBLISH photon:locks:released end");
                freeReplyObject(r);
                cr_assert_eq(redisGetReply(c, (void **) &sub), REDIS_OK);
                cr_assert_str_eq(sub->element[2]->str, "end", "a third message came before ours");
                freeReplyObject(sub);
                redisFree(c);
        }

        /* The counter written once, at the end: the next batch goes on from t3. */
        r = redisCommand(s.c, "GET photon:locks:token");
        cr_assert_eq(strtoull(r->str, NULL, 10), t3);
        freeReplyObject(r);
        /* A counter set back (lost) still gives tokens above, from Redis' clock: t3 was at most its ms × 1000 + 2,
         * below the floor of any later ms. */
        freeReplyObject(redisCommand(s.c, "SET photon:locks:token 5"));
        usleep(2 * 1000);
        r = run_batch(&s, 100, (const char *const[]) { "A y h 1000 0", NULL });
        cr_assert_gt(token_of(r->element[1]), t3);
        freeReplyObject(r);
        /* The expiry is the value's, on the key. */
        r = redisCommand(s.c, "PEXPIRETIME photon:lock:y");
        cr_assert_gt(r->integer, 0);
        {
                redisReply *q = run_batch(&s, 100, (const char *const[]) { "Q y", NULL });

                cr_assert_eq(value_of(q->element[1]).expires_at, r->integer);
                freeReplyObject(q);
        }
        freeReplyObject(r);
        script_down(&s);
}

/* MAX_LOCKS counts within a batch exactly; one operation's error is its own. */
Test(cluster_locks, batch_counts_max_locks_and_fails_alone) {
        ScriptRedis s;
        redisReply *r;

        if (!script_up(&s))
                cr_skip_test("no redis-server");
        r = run_batch(&s, 2, (const char *const[]) {
                "A a h 30000 0", "A b h 30000 0", "A c h 30000 0",     /* the third: MAX_LOCKS */
                "A a h 30000 0",                                        /* re-entrant: no new lock */
                "R a h", "A c h 30000 0",                               /* room again */
                "T d h x 30000",                                        /* a transfer of a free lock: MAX_LOCKS */
                NULL });
        cr_assert_eq(code_of(r->element[1]), 0);
        cr_assert_eq(code_of(r->element[2]), 0);
        cr_assert_eq(code_of(r->element[3]), 3);
        cr_assert_eq(code_of(r->element[4]), 1);
        cr_assert_eq(r->element[5]->integer, 0);
        cr_assert_eq(code_of(r->element[6]), 0);
        cr_assert_eq(code_of(r->element[7]), 3);
        freeReplyObject(r);
        r = redisCommand(s.c, "EXISTS photon:lock:d");
        cr_assert_eq(r->integer, 0, "a lock refused for MAX_LOCKS is not left behind");
        freeReplyObject(r);
        r = redisCommand(s.c, "ZCARD photon:locks:index");
        cr_assert_eq(r->integer, 2);
        freeReplyObject(r);

        /* An expired lock in the index makes room when the cap is reached. */
        r = run_batch(&s, 3, (const char *const[]) { "A e h 1 0", NULL });
        cr_assert_eq(code_of(r->element[1]), 0);
        freeReplyObject(r);
        usleep(10 * 1000);
        r = run_batch(&s, 3, (const char *const[]) { "A f h 30000 0", NULL });
        cr_assert_eq(code_of(r->element[1]), 0, "the expired one was dropped from the count");
        freeReplyObject(r);

        /* A release by someone else leaves the lock as it was, its expiry too. */
        r = run_batch(&s, 100, (const char *const[]) { "R f someone-else", "Q f", NULL });
        cr_assert_eq(r->element[1]->integer, 1);
        {
                ClusterLockValue v = value_of(r->element[2]);
                redisReply *e = redisCommand(s.c, "PEXPIRETIME photon:lock:f");

                cr_assert_str_eq(v.holder, "h");
                cr_assert_eq(e->integer, v.expires_at);
                freeReplyObject(e);
        }
        freeReplyObject(r);

        /* A value of another version ("<token> <acquiredAt> <holder>"): never granted over, never deleted. */
        freeReplyObject(redisCommand(s.c, "SET photon:lock:old %s PX 60000", "7 8 h"));
        r = run_batch(&s, 100, (const char *const[]) { "A old h 30000 0", "R old h", "T old h x 30000", NULL });
        cr_assert_eq(r->element[1]->type, REDIS_REPLY_STRING, "answered as held (the node cannot read it)");
        cr_assert_eq(r->element[2]->integer, 1);
        cr_assert_eq(r->element[3]->type, REDIS_REPLY_STRING);
        freeReplyObject(r);
        r = redisCommand(s.c, "PTTL photon:lock:old");
        cr_assert_gt(r->integer, 50000, "still there, its expiry untouched");
        freeReplyObject(r);

        /* A key of the wrong type: that operation's error, the others answered. */
        freeReplyObject(redisCommand(s.c, "HSET photon:lock:bad f v"));
        r = run_batch(&s, 100, (const char *const[]) { "A g h 30000 0", "A bad h 30000 0", "Q g", NULL });
        cr_assert_eq(code_of(r->element[1]), 0);
        cr_assert_eq(r->element[2]->type, REDIS_REPLY_ERROR);
        cr_assert(strstr(r->element[2]->str, "WRONGTYPE"), "%s", r->element[2]->str);
        cr_assert_str_eq(value_of(r->element[3]).holder, "h");
        freeReplyObject(r);
        script_down(&s);
}
