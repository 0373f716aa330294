/* SPDX-License-Identifier: MIT */

/* The webhook endpoint's pure parts: signature schemes against published and openssl(1)-computed vectors, base64,
 * the CIDR allowlist, the rate limiter, the replay cache, routing, CORS and header filtering. */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "webhook-auth.h"

static WebhookKey* key(const char *s) {
        WebhookKey *k = NULL;

        cr_assert_eq(webhook_key_new(s, strlen(s), &k), 0);
        return k;
}

/* --- encodings --- */

Test(webhook, base64_roundtrip_and_strictness) {
        static const char *const vectors[][2] = {
                { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" }, { "foob", "Zm9vYg==" },
                { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
        };
        uint8_t *out;
        size_t n;
        char *s;

        for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
                cr_assert_eq(base64_encode((const uint8_t*) vectors[i][0], strlen(vectors[i][0]), &s), 0);
                cr_assert_str_eq(s, vectors[i][1]);
                free(s);
                cr_assert_eq(base64_decode(vectors[i][1], strlen(vectors[i][1]), &out, &n), 0);
                cr_assert_eq(n, strlen(vectors[i][0]));
                cr_assert(memcmp(out, vectors[i][0], n) == 0);
                free(out);
        }
        /* Unpadded input is accepted. */
        cr_assert_eq(base64_decode("Zm8", 3, &out, &n), 0);
        cr_assert_eq(n, 2);
        free(out);
        /* Bad characters, bad lengths, misplaced padding, non-zero trailing bits. */
        cr_assert_eq(base64_decode("Zm9v!", 5, &out, &n), -EINVAL);
        cr_assert_eq(base64_decode("Z", 1, &out, &n), -EINVAL);
        cr_assert_eq(base64_decode("Zm=v", 4, &out, &n), -EINVAL);
        cr_assert_eq(base64_decode("Zm8==", 5, &out, &n), -EINVAL);
        cr_assert_eq(base64_decode("Zm9=", 4, &out, &n), -EINVAL);
}

Test(webhook, hex) {
        uint8_t b[2];
        char s[5];

        cr_assert_eq(hex_decode_exact("aB0f", 4, b, 2), 0);
        cr_assert_eq(b[0], 0xab);
        cr_assert_eq(b[1], 0x0f);
        hex_encode(b, 2, s);
        cr_assert_str_eq(s, "ab0f");
        cr_assert_eq(hex_decode_exact("ab0", 3, b, 2), -EINVAL);
        cr_assert_eq(hex_decode_exact("zz00", 4, b, 2), -EINVAL);
}

/* --- schemes --- */

Test(webhook, header_scheme) {
        WebhookKey *k = key("s3cret");

        cr_assert_eq(webhook_verify_header(k, "s3cret"), 0);
        cr_assert_eq(webhook_verify_header(k, "s3cre"), -EBADMSG);
        cr_assert_eq(webhook_verify_header(k, "s3cret "), -EBADMSG);
        cr_assert_eq(webhook_verify_header(k, ""), -EBADMSG);
        cr_assert_eq(webhook_verify_header(k, NULL), -EINVAL);
        webhook_key_free(k);
}

/* GitHub's documented example ("Validating webhook deliveries"). */
Test(webhook, github_vector) {
        WebhookKey *k = key("It's a Secret to Everybody");
        const char *body = "Hello, World!";
        const char *good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        char *sig;

        cr_assert_eq(webhook_verify_github(k, good, body, strlen(body)), 0);
        cr_assert_eq(webhook_verify_github(k, "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
                                           body, strlen(body)), 0);
        cr_assert_eq(webhook_verify_github(k, good, "Hello, World?", 13), -EBADMSG);
        cr_assert_eq(webhook_verify_github(k, "sha1=757107ea", body, strlen(body)), -EINVAL);
        cr_assert_eq(webhook_verify_github(k, "sha256=7571", body, strlen(body)), -EINVAL);
        cr_assert_eq(webhook_verify_github(k, NULL, body, strlen(body)), -EINVAL);

        cr_assert_eq(webhook_sign_github(k, body, strlen(body), &sig), 0);
        cr_assert_str_eq(sig, good);
        free(sig);
        webhook_key_free(k);
}

/* printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac sk_test_secret */
#define ZERO64 "0000000000000000000000000000000000000000000000000000000000000000"
#define STRIPE_V1 "8acc7052a743c57b34165136d59c23ebba0939580e30e9710fcb6f85528caf80"

Test(webhook, stripe_vector_tolerance_and_several_v1) {
        WebhookKey *k = key("sk_test_secret");
        const char *body = "{\"a\":1}";
        size_t n = strlen(body);
        char *sig;

        cr_assert_eq(webhook_verify_stripe(k, "t=1700000000,v1=" STRIPE_V1, body, n, 1700000000, 300), 0);
        /* Any v1 may match; v0 and unknown keys are ignored. */
        cr_assert_eq(webhook_verify_stripe(k, "t=1700000000,v0=abc,v1=" ZERO64 ",v1=" STRIPE_V1, body, n,
                                           1700000000, 300), 0);
        cr_assert_eq(webhook_verify_stripe(k, "v1=" STRIPE_V1 ",t=1700000000", body, n, 1700000000, 300), 0);
        /* Five minutes either way, and not a second more. */
        cr_assert_eq(webhook_verify_stripe(k, "t=1700000000,v1=" STRIPE_V1, body, n, 1700000300, 300), 0);
        cr_assert_eq(webhook_verify_stripe(k, "t=1700000000,v1=" STRIPE_V1, body, n, 1700000301, 300), -ETIME);
        cr_assert_eq(webhook_verify_stripe(k, "t=1700000000,v1=" STRIPE_V1, body, n, 1699999699, 300), -ETIME);
        /* The timestamp is signed: changing it breaks the signature. */
        cr_assert_eq(webhook_verify_stripe(k, "t=1700000001,v1=" STRIPE_V1, body, n, 1700000000, 300), -EBADMSG);
        cr_assert_eq(webhook_verify_stripe(k, "t=1700000000,v1=" STRIPE_V1, "{\"a\":2}", n, 1700000000, 300),
                     -EBADMSG);
        cr_assert_eq(webhook_verify_stripe(k, "v1=" STRIPE_V1, body, n, 1700000000, 300), -EINVAL);
        cr_assert_eq(webhook_verify_stripe(k, "t=1700000000", body, n, 1700000000, 300), -EINVAL);
        cr_assert_eq(webhook_verify_stripe(k, "t=abc,v1=" STRIPE_V1, body, n, 1700000000, 300), -EINVAL);
        cr_assert_eq(webhook_verify_stripe(k, "", body, n, 1700000000, 300), -EINVAL);

        cr_assert_eq(webhook_sign_stripe(k, 1700000000, body, n, &sig), 0);
        cr_assert_str_eq(sig, "t=1700000000,v1=" STRIPE_V1);
        free(sig);
        webhook_key_free(k);
}

/* The example of the Standard Webhooks specification (also used by its reference libraries). */
Test(webhook, standard_vector) {
        WebhookKey *k = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        const char *id = "msg_p5jXN8AQM9LWM0D4loKWxJek", *body = "{\"test\": 2432232314}";
        const char *good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        size_t n = strlen(body);
        char *sig;

        cr_assert_eq(k->std_key_len, 24);
        cr_assert_eq(webhook_verify_standard(k, id, "1614265330", good, body, n, 1614265330, 300, NULL), 0);
        /* A space-separated list; other versions are skipped. */
        cr_assert_eq(webhook_verify_standard(k, id, "1614265330",
                                             "v1a,abcd v1,Zm9v " "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                                             body, n, 1614265330, 300, NULL), 0);
        cr_assert_eq(webhook_verify_standard(k, id, "1614265330", good, body, n, 1614265631, 300, NULL), -ETIME);
        cr_assert_eq(webhook_verify_standard(k, id, "1614265330", good, body, n, 1614265029, 300, NULL), -ETIME);
        cr_assert_eq(webhook_verify_standard(k, "msg_other", "1614265330", good, body, n, 1614265330, 300, NULL),
                     -EBADMSG);
        cr_assert_eq(webhook_verify_standard(k, id, "1614265331", good, body, n, 1614265330, 300, NULL), -EBADMSG);
        cr_assert_eq(webhook_verify_standard(k, id, "1614265330", good, "{}", 2, 1614265330, 300, NULL), -EBADMSG);
        cr_assert_eq(webhook_verify_standard(k, id, "1614265330", "v2,abc", body, n, 1614265330, 300, NULL),
                     -EINVAL);
        cr_assert_eq(webhook_verify_standard(k, id, "soon", good, body, n, 1614265330, 300, NULL), -EINVAL);
        cr_assert_eq(webhook_verify_standard(k, NULL, "1614265330", good, body, n, 1614265330, 300, NULL), -EINVAL);

        cr_assert_eq(webhook_sign_standard(k, id, 1614265330, body, n, &sig), 0);
        cr_assert_str_eq(sig, good);
        free(sig);
        webhook_key_free(k);
}

Test(webhook, standard_key_without_prefix_and_invalid) {
        WebhookKey *k = key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        cr_assert_eq(k->std_key_len, 24);
        webhook_key_free(k);

        /* A secret that is no base64 still serves the other schemes, but never verifies a Standard signature. */
        k = key("not base64!");
        cr_assert_null(k->std_key);
        cr_assert_eq(webhook_verify_standard(k, "id", "1", "v1,Zm9v", "", 0, 1, 300, NULL), -ENOKEY);
        cr_assert_eq(webhook_verify_header(k, "not base64!"), 0);
        webhook_key_free(k);

        cr_assert_eq(webhook_key_new("", 0, &k), -EINVAL);
}

/* --- replay cache --- */

Test(webhook, replay_cache) {
        ReplayCache *c;

        cr_assert_eq(replay_cache_new(3, &c), 0);
        cr_assert_eq(replay_cache_add(c, "a", 1000, 0, NULL), 0);
        cr_assert_eq(replay_cache_add(c, "a", 1999, 999, NULL), -EEXIST);
        cr_assert_eq(replay_cache_add(c, "b", 1010, 10, NULL), 0);
        cr_assert_eq(replay_cache_add(c, "c", 1020, 20, NULL), 0);
        cr_assert_eq(replay_cache_size(c), 3);
        cr_assert_eq(replay_cache_add(c, "b", 1040, 40, NULL), -EEXIST);
        /* Each id is forgotten at its own expiry. */
        cr_assert_eq(replay_cache_add(c, "a", 2000, 1000, NULL), 0);
        cr_assert_eq(replay_cache_add(c, "b", 2010, 1010, NULL), 0);
        cr_assert_eq(replay_cache_size(c), 3);   /* c, a, b */
        cr_assert_eq(replay_cache_add(c, "x", 6000, 5000, NULL), 0);
        cr_assert_eq(replay_cache_size(c), 1);
        replay_cache_free(c);
}

Test(webhook, replay_expiry) {
        /* Ahead of photond's clock: the signature verifies until ts + tolerance (through its last second). */
        cr_assert_eq(replay_expiry_ms(1003, 1000000, 3), 1007000);
        /* Behind it, or now: from now. */
        cr_assert_eq(replay_expiry_ms(997, 1000500, 3), 1004500);
        cr_assert_eq(replay_expiry_ms(1000, 1000000, 300), 1301000);
}

/* The property the cache exists for: while a delivery's signature still verifies, its id is refused, whichever
 * side of photond's clock the sender's timestamp is on. With ids forgotten a tolerance after they arrived, the
 * delivery stamped now + 3 could be replayed between now + 3 s and now + 6 s. */
Test(webhook, replay_refused_while_the_signature_verifies) {
        WebhookKey *k = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        const char *body = "{}";
        const uint64_t tol = 3, t0 = 1000000;   /* ms */

        for (int64_t skew = -3; skew <= 3; skew++) {
                int64_t ts = (int64_t) (t0 / 1000) + skew, got;
                ReplayCache *c;
                char id[32], ts_str[24], *sig;

                snprintf(id, sizeof(id), "msg_%" PRIi64, skew);
                cr_assert_eq(webhook_sign_standard(k, id, ts, body, 2, &sig), 0);
                cr_assert_eq(replay_cache_new(16, &c), 0);
                snprintf(ts_str, sizeof(ts_str), "%" PRIi64, ts);
                cr_assert_eq(webhook_verify_standard(k, id, ts_str, sig, body, 2, (int64_t) (t0 / 1000), tol, &got),
                             0);
                cr_assert_eq(got, ts);
                cr_assert_eq(replay_cache_add(c, id, replay_expiry_ms(ts, t0, tol), t0, NULL), 0);

                for (uint64_t now = t0; now < t0 + 10000; now += 100) {
                        bool verifies = webhook_verify_standard(k, id, ts_str, sig, body, 2,
                                                                (int64_t) (now / 1000), tol, NULL) == 0;
                        int r = replay_cache_add(c, id, replay_expiry_ms(ts, now, tol), now, NULL);

                        if (verifies)
                                cr_assert_eq(r, -EEXIST, "skew %" PRIi64 ": replay accepted at +%" PRIu64 " ms",
                                             skew, now - t0);
                        else if (r == 0)
                                break;  /* forgotten only once it cannot verify any more */
                }
                replay_cache_free(c);
                free(sig);
        }
        webhook_key_free(k);
}

/* A full cache of live ids refuses the new one rather than forgetting one that could still be replayed. */
Test(webhook, replay_cache_full_refuses) {
        ReplayCache *c;
        uint64_t retry = 0;

        cr_assert_eq(replay_cache_new(2, &c), 0);
        cr_assert_eq(replay_cache_add(c, "a", 5000, 0, NULL), 0);
        cr_assert_eq(replay_cache_add(c, "b", 3000, 0, NULL), 0);
        cr_assert_eq(replay_cache_add(c, "c", 3100, 100, &retry), -ENOSPC);
        cr_assert_eq(retry, 2900);      /* when "b" expires */
        cr_assert_eq(replay_cache_add(c, "a", 5000, 2000, NULL), -EEXIST);
        cr_assert_eq(replay_cache_add(c, "b", 5000, 2000, NULL), -EEXIST);
        cr_assert_eq(replay_cache_size(c), 2);
        /* A replay is still told apart from a full cache. */
        cr_assert_eq(replay_cache_add(c, "b", 5000, 2999, &retry), -EEXIST);
        cr_assert_eq(replay_cache_add(c, "c", 6000, 3000, NULL), 0);
        cr_assert_eq(replay_cache_add(c, "d", 6000, 3000, &retry), -ENOSPC);
        cr_assert_eq(retry, 2000);
        cr_assert_eq(replay_cache_add(c, "d", 7000, 5000, NULL), 0);
        cr_assert_eq(replay_cache_size(c), 2);
        replay_cache_free(c);
}

/* Many ids with expiries out of arrival order leave in expiry order (the heap). */
Test(webhook, replay_cache_expiry_order) {
        ReplayCache *c;

        cr_assert_eq(replay_cache_new(1000, &c), 0);
        for (unsigned i = 0; i < 1000; i++) {
                char id[16];

                snprintf(id, sizeof(id), "id%u", i);
                cr_assert_eq(replay_cache_add(c, id, 1000 + (i * 7919) % 1000, 0, NULL), 0);
        }
        /* The expiries are 1000..1999, one each: at now, those up to now are gone (the probe stays one). */
        for (uint64_t now = 1000; now < 2000; now++) {
                cr_assert_eq(replay_cache_add(c, "probe", now + 1, now, NULL), 0);
                cr_assert_eq(replay_cache_size(c), 2000 - now);
        }
        replay_cache_free(c);
}

/* --- allowlist --- */

static struct sockaddr_storage v4(const char *s) {
        struct sockaddr_storage ss = {};
        struct sockaddr_in *sin = (struct sockaddr_in*) &ss;

        sin->sin_family = AF_INET;
        cr_assert_eq(inet_pton(AF_INET, s, &sin->sin_addr), 1);
        return ss;
}

static struct sockaddr_storage v6(const char *s) {
        struct sockaddr_storage ss = {};
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6*) &ss;

        sin6->sin6_family = AF_INET6;
        cr_assert_eq(inet_pton(AF_INET6, s, &sin6->sin6_addr), 1);
        return ss;
}

static bool MATCH(const Cidr *list, size_t n, struct sockaddr_storage ss) {
        return cidr_list_match(list, n, (struct sockaddr*) &ss);
}

Test(webhook, cidr_parse_and_match) {
        Cidr *l;
        size_t n, bad;

        cr_assert_eq(cidr_list_parse("10.0.0.0/8, 192.168.1.7 ,fd00::/8\t::1 172.16.5.9/12,0.0.0.0/0", &l, &n, &bad), 0);
        cr_assert_eq(n, 6);
        free(l);

        cr_assert_eq(cidr_list_parse("10.0.0.0/8,192.168.1.7,fd00::/8,::ffff:172.16.0.0/108", &l, &n, NULL), 0);
        cr_assert_eq(n, 4);
        cr_assert(MATCH(l, n, v4("10.200.3.4")));
        cr_assert(!MATCH(l, n, v4("11.0.0.1")));
        cr_assert(MATCH(l, n, v4("192.168.1.7")));
        cr_assert(!MATCH(l, n, v4("192.168.1.8")));
        cr_assert(MATCH(l, n, v6("fd12::1")));
        cr_assert(!MATCH(l, n, v6("fe80::1")));
        /* IPv4-mapped peers (a dual-stack listener) match IPv4 entries, and mapped entries match IPv4 peers. */
        cr_assert(MATCH(l, n, v6("::ffff:10.1.2.3")));
        cr_assert(MATCH(l, n, v4("172.31.255.255")));
        cr_assert(!MATCH(l, n, v4("172.32.0.0")));
        free(l);

        /* Prefix boundaries inside a byte; host bits in the entry are ignored. */
        cr_assert_eq(cidr_list_parse("127.0.0.1/25", &l, &n, NULL), 0);
        cr_assert(MATCH(l, n, v4("127.0.0.127")));
        cr_assert(!MATCH(l, n, v4("127.0.0.128")));
        free(l);

        cr_assert_eq(cidr_list_parse("0.0.0.0/0", &l, &n, NULL), 0);
        cr_assert(MATCH(l, n, v4("203.0.113.9")));
        cr_assert(!MATCH(l, n, v6("2001:db8::1")));
        free(l);

        cr_assert_eq(cidr_list_parse("", &l, &n, NULL), 0);
        cr_assert_eq(n, 0);
        cr_assert(!MATCH(l, n, v4("127.0.0.1")));
        free(l);

        cr_assert_eq(cidr_list_parse("10.0.0.0/8, 10.0.0.0/33", &l, &n, &bad), -EINVAL);
        cr_assert_eq(bad, 12);
        cr_assert_eq(cidr_list_parse("localhost", &l, &n, &bad), -EINVAL);
        cr_assert_eq(bad, 0);
        cr_assert_eq(cidr_list_parse("::1/129", &l, &n, NULL), -EINVAL);
        cr_assert_eq(cidr_list_parse("1.2.3.4/", &l, &n, NULL), -EINVAL);
        cr_assert_eq(cidr_list_parse("1.2.3.4/-1", &l, &n, NULL), -EINVAL);
        cr_assert_eq(cidr_list_parse("1.2.3", &l, &n, NULL), -EINVAL);
}

Test(webhook, sockaddr_to_string) {
        struct sockaddr_storage a = v6("::ffff:127.0.0.1"), b = v6("::1"), c = v4("10.1.2.3");
        char s[64];

        cr_assert_eq(sockaddr_to_string((struct sockaddr*) &a, s, sizeof(s)), 0);
        cr_assert_str_eq(s, "127.0.0.1");
        cr_assert_eq(sockaddr_to_string((struct sockaddr*) &b, s, sizeof(s)), 0);
        cr_assert_str_eq(s, "::1");
        cr_assert_eq(sockaddr_to_string((struct sockaddr*) &c, s, sizeof(s)), 0);
        cr_assert_str_eq(s, "10.1.2.3");
}

/* --- rate limiter --- */

Test(webhook, rate_limiter_window) {
        RateLimiter *rl;
        uint64_t retry = 0;

        cr_assert_eq(rate_limiter_new(3, 1000, 16, &rl), 0);
        cr_assert(rate_limiter_check(rl, "1.1.1.1", 100, NULL));
        cr_assert(rate_limiter_check(rl, "1.1.1.1", 200, NULL));
        cr_assert(rate_limiter_check(rl, "1.1.1.1", 300, NULL));
        cr_assert(!rate_limiter_check(rl, "1.1.1.1", 400, &retry));
        cr_assert_eq(retry, 700);
        /* Another address has its own budget. */
        cr_assert(rate_limiter_check(rl, "2.2.2.2", 400, NULL));
        /* The window of 1.1.1.1 started at 100: at 1100 it is new again. */
        cr_assert(!rate_limiter_check(rl, "1.1.1.1", 1099, &retry));
        cr_assert_eq(retry, 1);
        cr_assert(rate_limiter_check(rl, "1.1.1.1", 1100, NULL));
        cr_assert_eq(rate_limiter_size(rl), 2);
        /* Old windows are dropped as time passes. */
        cr_assert(rate_limiter_check(rl, "3.3.3.3", 5000, NULL));
        cr_assert_eq(rate_limiter_size(rl), 1);
        rate_limiter_free(rl);
}

Test(webhook, rate_limiter_table_is_capped) {
        RateLimiter *rl;
        char a[32];

        cr_assert_eq(rate_limiter_new(1, 60000, 4, &rl), 0);
        for (int i = 0; i < 100; i++) {
                snprintf(a, sizeof(a), "10.0.0.%d", i);
                cr_assert(rate_limiter_check(rl, a, 1000 + i, NULL));
                cr_assert_leq(rate_limiter_size(rl), 4);
        }
        /* The four newest are still tracked; the oldest were evicted. */
        cr_assert(!rate_limiter_check(rl, "10.0.0.99", 2000, NULL));
        cr_assert(!rate_limiter_check(rl, "10.0.0.96", 2000, NULL));
        rate_limiter_free(rl);

        cr_assert_eq(rate_limiter_new(1, 0, 4, &rl), -EINVAL);
}

/* --- routing, headers, CORS --- */

static void route_ok(const char *path, const char *hdr, const char *photon, const char *method) {
        char *p = NULL, *m = NULL;

        cr_assert_eq(webhook_parse_route(path, hdr, &p, &m), 0, "%s", path);
        cr_assert_str_eq(p, photon);
        cr_assert_str_eq(m, method);
        free(p);
        free(m);
}

static void route_bad(const char *path, const char *hdr) {
        char *p = NULL, *m = NULL;

        cr_assert_eq(webhook_parse_route(path, hdr, &p, &m), -ENOENT, "%s", path);
        cr_assert_null(p);
}

Test(webhook, routes) {
        route_ok("/webhook/kanban/onPush", NULL, "kanban", "onPush");
        route_ok("//webhook//kanban/onPush/", NULL, "kanban", "onPush");
        route_ok("/webhook/kanban/onPush/extra/parts", NULL, "kanban", "onPush");
        route_ok("/webhook/kanban/onPush", "other", "kanban", "onPush");   /* the path wins */
        route_ok("/webhook/onPush", "kanban", "kanban", "onPush");
        route_bad("/webhook/onPush", NULL);
        route_bad("/webhook", "kanban");
        route_bad("/", NULL);
        route_bad("/health", NULL);
        route_bad("/healthz", NULL);
        route_bad("/hooks/kanban/onPush", NULL);
        route_bad("/webhookx/kanban/onPush", NULL);
        route_bad("/webhook/.hidden/onPush", NULL);
        route_bad("/webhook/kan ban/onPush", NULL);
        route_bad("/webhook/onPush", "../etc");
        route_bad("/webhook/onPush", "");
        route_bad("/webhook/kanban/" "a123456789a123456789a123456789a123456789a123456789a123456789abcde", NULL);
        route_bad(NULL, NULL);
}

/* As libmicrohttpd's own unescaping, but "%00" stays as it is: a decoded NUL would cut the URL short. */
Test(webhook, unescape_keeps_nul_escaped) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "/webhook/p/m", "/webhook/p/m" },
                { "/webhook/a%20b/m%2Fx", "/webhook/a b/m/x" },
                { "/webhook/p/m%00x", "/webhook/p/m%00x" },
                { "%00%41%0", "%00A%0" },
                { "%zz%4", "%zz%4" },
                { "%c3%A9", "\xc3\xa9" },
                { "", "" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[64];

                strcpy(buf, cases[i].in);
                cr_assert_eq(webhook_unescape(NULL, NULL, buf), strlen(cases[i].out), "%s", cases[i].in);
                cr_assert_str_eq(buf, cases[i].out);
        }
}

Test(webhook, hidden_headers) {
        cr_assert(webhook_header_is_hidden("X-Webhook-Secret"));
        cr_assert(webhook_header_is_hidden("x-webhook-secret"));
        cr_assert(webhook_header_is_hidden("authorization"));
        cr_assert(webhook_header_is_hidden("X-Hub-Signature-256"));
        cr_assert(webhook_header_is_hidden("X-Hub-Signature"));
        cr_assert(webhook_header_is_hidden("Stripe-Signature"));
        cr_assert(webhook_header_is_hidden("webhook-signature"));
        cr_assert(!webhook_header_is_hidden("webhook-id"));
        cr_assert(!webhook_header_is_hidden("webhook-timestamp"));
        cr_assert(!webhook_header_is_hidden("Content-Type"));
        cr_assert(!webhook_header_is_hidden("X-GitHub-Event"));
}

Test(webhook, cors_origin) {
        cr_assert_str_eq(webhook_cors_origin(NULL), "http://localhost");
        cr_assert_str_eq(webhook_cors_origin("http://localhost"), "http://localhost");
        cr_assert_str_eq(webhook_cors_origin("http://localhost:5173"), "http://localhost:5173");
        cr_assert_str_eq(webhook_cors_origin("https://127.0.0.1:8443"), "https://127.0.0.1:8443");
        cr_assert_str_eq(webhook_cors_origin("http://[::1]:3000"), "http://[::1]:3000");
        cr_assert_null(webhook_cors_origin("http://localhost.evil.com"));
        cr_assert_null(webhook_cors_origin("http://127.0.0.1.nip.io"));
        cr_assert_null(webhook_cors_origin("http://localhost:80x"));
        cr_assert_null(webhook_cors_origin("http://localhost:"));
        cr_assert_null(webhook_cors_origin("https://example.com"));
        cr_assert_null(webhook_cors_origin("null"));
}
