/* SPDX-License-Identifier: MIT */

/* The webhook endpoint against a real photond under systemd-socket-activate (the "webhook" fd) and self-bound
 * (PHOTON_WEBHOOK_PORT), driven by the curl command line: status codes, CORS, every signature scheme, body limits,
 * rate limit, allowlist, secrets from credentials and SIGHUP, slow and many clients, method calls. */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fd-util.h"
#include "harness.h"
#include "http-client.h"
#include "json-util.h"
#include "webhook-auth.h"

#define SECRET "s3cret-for-tests"
#define STD_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static void expect_prefix(Http *h, int status, const char *error_prefix) {
        cr_assert_eq(h->status, status, "expected %d, got %d: %s", status, h->status, h->body);
        cr_assert(h->json && jstr(h->json, "error"), "no error in: %s", h->body);
        cr_assert(strncmp(jstr(h->json, "error"), error_prefix, strlen(error_prefix)) == 0, "%s", h->body);
        http_free(h);
}

static Daemon* start(const char *const *env) {
        return daemon_start_http(env);
}

static char* sign(const char *secret, const char *scheme, const char *id, int64_t ts, const char *body) {
        WebhookKey *k = NULL;
        char *sig = NULL;

        cr_assert_eq(webhook_key_new(secret, strlen(secret), &k), 0);
        if (strcmp(scheme, "github") == 0)
                cr_assert_eq(webhook_sign_github(k, body, strlen(body), &sig), 0);
        else if (strcmp(scheme, "stripe") == 0)
                cr_assert_eq(webhook_sign_stripe(k, ts, body, strlen(body), &sig), 0);
        else
                cr_assert_eq(webhook_sign_standard(k, id, ts, body, strlen(body), &sig), 0);
        webhook_key_free(k);
        return keep(sig);
}

static int64_t now_s(void) {
        return (int64_t) time(NULL);
}

#define NOT_INITIALIZED "Photon 'nohandler' not initialized"

/* --- before routing --- */

Test(webhook, healthz_and_cors) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        Http *h;

        h = http(d->webhook_port, "GET", "/healthz", NULL, NULL);
        cr_assert_eq(h->status, 200);
        cr_assert_str_eq(jstr(h->json, "status"), "ok");
        cr_assert_not_null(jstr(h->json, "version"));
        cr_assert(json_object_is_type(jget(h->json, "uptime"), json_type_double));
        cr_assert_str_eq(http_header(h, "Content-Type"), "application/json");
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Origin"), "http://localhost");
        http_free(h);

        /* The reference has no health route: anything else, /health included, is the router's 404. */
        expect(http(d->webhook_port, "GET", "/health", NULL, NULL), 404,
               "Not found. Use /webhook/{photonName}/{method}");
        expect(http(d->webhook_port, "POST", "/healthz", "{}", NULL), 404,
               "Not found. Use /webhook/{photonName}/{method}");

        /* Preflight: 204 before any other check (no secret sent), with the reference's headers. */
        h = http(d->webhook_port, "OPTIONS", "/webhook/kanban/onPush", NULL, "-H", "Origin: http://localhost:5173",
                 NULL);
        cr_assert_eq(h->status, 204);
        cr_assert_str_eq(h->body, "");
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Origin"), "http://localhost:5173");
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Methods"), "GET, POST, OPTIONS");
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Headers"),
                         "Content-Type, X-Webhook-Secret, X-Photon-Name");
        http_free(h);

        /* A foreign origin gets no Allow-Origin, on errors too. */
        h = http(d->webhook_port, "POST", "/webhook/kanban/onPush", "{}", "-H", "Origin: https://evil.example", NULL);
        cr_assert_eq(h->status, 401);
        cr_assert_null(http_header(h, "Access-Control-Allow-Origin"));
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Methods"), "GET, POST, OPTIONS");
        http_free(h);

        daemon_free(d);
}

Test(webhook, routes_404) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        const char *paths[] = { "/", "/webhook", "/webhook/onlyMethod", "/hooks/a/b", "/webhook/.hidden/m",
                                "/webhook/a%20b/m", "/webhookz/a/b",
                                /* a NUL ends a C string: these were the method "m" and the route "/webhook/p" */
                                "/webhook/nohandler/m%00x", "/webhook/p%00q/m", "/webhook/nohandler/m%00" };

        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
                expect(http(d->webhook_port, "POST", paths[i], "{}", "-H", "X-Webhook-Secret: " SECRET, NULL), 404,
                       "Not found. Use /webhook/{photonName}/{method}");

        /* Both route forms reach authentication and the dispatcher: any HTTP method but OPTIONS, GET too. */
        expect(http(d->webhook_port, "GET", "/webhook/nohandler/m", NULL, "-H", "X-Webhook-Secret: " SECRET, NULL),
               503, NOT_INITIALIZED);
        expect(http(d->webhook_port, "PUT", "/webhook/nohandler/m/extra", "{}", "-H", "X-Webhook-Secret: " SECRET,
                    NULL), 503, NOT_INITIALIZED);
        expect(http(d->webhook_port, "POST", "/webhook/m", "{}", "-H", "X-Webhook-Secret: " SECRET,
                    "-H", "X-Photon-Name: nohandler", NULL), 503, NOT_INITIALIZED);
        expect(http(d->webhook_port, "POST", "/webhook/m", "{}", "-H", "X-Webhook-Secret: " SECRET,
                    "-H", "X-Photon-Name: ../etc", NULL), 404, "Not found. Use /webhook/{photonName}/{method}");
        daemon_free(d);
}

/* --- authentication --- */

Test(webhook, no_secret_configured) {
        Daemon *d = start(NULL);

        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", NULL), 403,
               "Webhook secret not configured. Set PHOTON_WEBHOOK_SECRET or PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED=true");
        daemon_free(d);

        d = start((const char*[]) { "PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED=yes", NULL });
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", NULL), 503, NOT_INITIALIZED);
        daemon_free(d);
}

Test(webhook, header_secret) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        struct json_object *st;

        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", NULL), 401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: wrong", NULL),
               401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET "x",
                    NULL), 401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL),
               503, NOT_INITIALIZED);

        st = status_of(d);
        cr_assert(jbool(st, "data.webhookEnabled"));
        cr_assert_eq(jint(st, "data.webhook.requests"), 4);
        cr_assert_eq(jint(st, "data.webhook.rejected.unauthorized"), 3);
        cr_assert_eq(jint(st, "data.webhook.rejected.photonUnavailable"), 1);
        cr_assert(jbool(st, "data.webhook.secretConfigured"));
        json_object_put(st);
        /* Secrets never reach the log. */
        cr_assert(!daemon_log_contains(d, SECRET));
        daemon_free(d);
}

Test(webhook, github_signature) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        const char *body = "{\"ref\":\"refs/heads/main\"}";
        char *good = sign(SECRET, "github", NULL, 0, body), *other = sign(SECRET, "github", NULL, 0, "{}");

        expect(http(d->webhook_port, "POST", "/webhook/nohandler/push", body,
                    "-H", hdr("X-Hub-Signature-256: %s", good), NULL), 503, NOT_INITIALIZED);
        /* A signature over another body, a mangled one, the wrong algorithm. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/push", body,
                    "-H", hdr("X-Hub-Signature-256: %s", other), NULL), 401, "Invalid webhook secret");
        good[10] = good[10] == 'a' ? 'b' : 'a';
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/push", body,
                    "-H", hdr("X-Hub-Signature-256: %s", good), NULL), 401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/push", body,
                    "-H", "X-Hub-Signature-256: sha1=0123", NULL), 401, "Invalid webhook secret");
        cr_assert(!daemon_log_contains(d, other + 7));
        daemon_free(d);
}

Test(webhook, stripe_signature) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        const char *body = "{\"type\":\"charge.succeeded\"}";
        char *good = sign(SECRET, "stripe", NULL, now_s(), body);
        char *old = sign(SECRET, "stripe", NULL, now_s() - 400, body);
        char *future = sign(SECRET, "stripe", NULL, now_s() + 400, body);
        char *wrong = sign("another-secret", "stripe", NULL, now_s(), body);

        expect(http(d->webhook_port, "POST", "/webhook/nohandler/charge", body,
                    "-H", hdr("Stripe-Signature: %s", good), NULL), 503, NOT_INITIALIZED);
        /* Several v1 entries (secret rotation): one matching is enough. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/charge", body,
                    "-H", hdr("Stripe-Signature: %s,v1=%s", good, strstr(wrong, "v1=") + 3), NULL),
               503, NOT_INITIALIZED);
        expect_prefix(http(d->webhook_port, "POST", "/webhook/nohandler/charge", body,
                           "-H", hdr("Stripe-Signature: %s", old), NULL), 401,
                      "Invalid webhook secret: signature timestamp outside the tolerance");
        expect_prefix(http(d->webhook_port, "POST", "/webhook/nohandler/charge", body,
                           "-H", hdr("Stripe-Signature: %s", future), NULL), 401,
                      "Invalid webhook secret: signature timestamp outside the tolerance");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/charge", body,
                    "-H", hdr("Stripe-Signature: %s", wrong), NULL), 401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/charge", "{\"type\":\"charge.failed\"}",
                    "-H", hdr("Stripe-Signature: %s", good), NULL), 401, "Invalid webhook secret");
        daemon_free(d);
}

Test(webhook, standard_webhooks_signature_and_replay) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" STD_SECRET, NULL });
        const char *body = "{\"type\":\"invoice.paid\"}";
        int64_t t = now_s();
        char *good = sign(STD_SECRET, "standard", "msg_1", t, body);
        char *old = sign(STD_SECRET, "standard", "msg_2", t - 301, body);
        char *wrong = sign("whsec_c2VjcmV0LW90aGVy", "standard", "msg_3", t, body);

        expect(http(d->webhook_port, "POST", "/webhook/nohandler/paid", body,
                    "-H", "webhook-id: msg_1", "-H", hdr("webhook-timestamp: %lld", (long long) t),
                    "-H", hdr("webhook-signature: v1,AAAA %s", good), NULL), 503, NOT_INITIALIZED);
        /* The same delivery again is a replay. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/paid", body,
                    "-H", "webhook-id: msg_1", "-H", hdr("webhook-timestamp: %lld", (long long) t),
                    "-H", hdr("webhook-signature: %s", good), NULL), 401,
               "Invalid webhook secret: webhook-id already delivered");
        expect_prefix(http(d->webhook_port, "POST", "/webhook/nohandler/paid", body,
                           "-H", "webhook-id: msg_2", "-H", hdr("webhook-timestamp: %lld", (long long) t - 301),
                           "-H", hdr("webhook-signature: %s", old), NULL), 401,
                      "Invalid webhook secret: signature timestamp outside the tolerance");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/paid", body,
                    "-H", "webhook-id: msg_3", "-H", hdr("webhook-timestamp: %lld", (long long) t),
                    "-H", hdr("webhook-signature: %s", wrong), NULL), 401, "Invalid webhook secret");
        /* The id and the timestamp are signed. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/paid", body,
                    "-H", "webhook-id: msg_9", "-H", hdr("webhook-timestamp: %lld", (long long) t),
                    "-H", hdr("webhook-signature: %s", good), NULL), 401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/paid", body,
                    "-H", "webhook-id: msg_1", "-H", hdr("webhook-timestamp: %lld", (long long) t + 1),
                    "-H", hdr("webhook-signature: %s", good), NULL), 401, "Invalid webhook secret");
        /* A forged delivery did not enter the replay cache: msg_3 signed correctly is still accepted. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/paid", body,
                    "-H", "webhook-id: msg_3", "-H", hdr("webhook-timestamp: %lld", (long long) t),
                    "-H", hdr("webhook-signature: %s", sign(STD_SECRET, "standard", "msg_3", t, body)), NULL),
               503, NOT_INITIALIZED);

        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.rejected.replayed"), 1);
        cr_assert_eq(jint(st, "data.webhook.rejected.signatureExpired"), 1);
        json_object_put(st);
        daemon_free(d);
}

/* A sender whose clock is ahead of photond's: its delivery verifies until its own timestamp + the tolerance, so its
 * id must be remembered that long, not a tolerance after it arrived. */
Test(webhook, standard_webhooks_replay_with_a_timestamp_ahead) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" STD_SECRET,
                                            "PHOTOND_WEBHOOK_SIGNATURE_TOLERANCE_S=2", NULL });
        const char *body = "{}";
        int64_t t = now_s() + 2;
        char *sig = sign(STD_SECRET, "standard", "msg_ahead", t, body), *ts = hdr("webhook-timestamp: %lld",
                                                                                  (long long) t);

        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", body, "-H", "webhook-id: msg_ahead",
                    "-H", ts, "-H", hdr("webhook-signature: %s", sig), NULL), 503, NOT_INITIALIZED);
        /* More than the tolerance later, while the timestamp is still within it. */
        usleep(2500 * 1000);    /* waiting out the tolerance is the behaviour under test */
        cr_assert_leq(now_s(), t + 2);
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", body, "-H", "webhook-id: msg_ahead",
                    "-H", ts, "-H", hdr("webhook-signature: %s", sig), NULL), 401,
               "Invalid webhook secret: webhook-id already delivered");
        daemon_free(d);
}

/* A full replay cache never forgets an id that could still be replayed: new deliveries wait instead. */
Test(webhook, standard_webhooks_replay_cache_full) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" STD_SECRET,
                                            "PHOTOND_WEBHOOK_REPLAY_CACHE_IDS=2", NULL });
        const char *body = "{}", *ids[] = { "msg_a", "msg_b", "msg_c" };
        int64_t t = now_s();
        Http *h[3];

        for (int i = 0; i < 3; i++)
                h[i] = http(d->webhook_port, "POST", "/webhook/nohandler/m", body,
                            "-H", hdr("webhook-id: %s", ids[i]),
                            "-H", hdr("webhook-timestamp: %lld", (long long) t),
                            "-H", hdr("webhook-signature: %s", sign(STD_SECRET, "standard", ids[i], t, body)),
                            NULL);
        expect(h[0], 503, NOT_INITIALIZED);
        expect(h[1], 503, NOT_INITIALIZED);
        cr_assert_eq(h[2]->status, 503, "%s", h[2]->body);
        cr_assert_str_eq(jstr(h[2]->json, "error"), "Too many webhook-ids to remember, retry later");
        /* Until msg_a is forgotten: the tolerance (300 s) and a second, give or take the test's own second. */
        cr_assert_not_null(http_header(h[2], "Retry-After"));
        int retry = atoi(http_header(h[2], "Retry-After"));
        cr_assert(retry >= 299 && retry <= 301, "Retry-After: %d", retry);
        http_free(h[2]);

        /* The remembered ids are still refused as replays. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", body, "-H", "webhook-id: msg_a",
                    "-H", hdr("webhook-timestamp: %lld", (long long) t),
                    "-H", hdr("webhook-signature: %s", sign(STD_SECRET, "standard", "msg_a", t, body)), NULL), 401,
               "Invalid webhook secret: webhook-id already delivered");

        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.rejected.replayCacheFull"), 1);
        cr_assert_eq(jint(st, "data.webhook.rejected.replayed"), 1);
        json_object_put(st);
        cr_assert(daemon_log_contains(d, "none has expired yet"));
        daemon_free(d);
}

Test(webhook, credentials_per_photon_and_sighup) {
        char dir[] = "/tmp/photond-creds-XXXXXX", *path, *env;
        FILE *f;

        cr_assert(mkdtemp(dir));
        path = hdr("%s/webhook-secret", dir);
        cr_assert(f = fopen(path, "we"));
        fputs("from-credential\n", f);      /* the trailing newline is not part of the secret */
        fclose(f);
        env = hdr("CREDENTIALS_DIRECTORY=%s", dir);
        cr_assert(f = fopen(hdr("%s/webhook-secret.special", dir), "we"));
        fputs("special-secret", f);
        fclose(f);

        /* The credential wins over the environment. */
        Daemon *d = start((const char*[]) { env, "PHOTON_WEBHOOK_SECRET=from-env", NULL });
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: from-env", NULL),
               401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}",
                    "-H", "X-Webhook-Secret: from-credential", NULL), 503, NOT_INITIALIZED);
        /* A per-photon secret replaces the general one for that photon. */
        expect(http(d->webhook_port, "POST", "/webhook/special/m", "{}",
                    "-H", "X-Webhook-Secret: from-credential", NULL), 401, "Invalid webhook secret");
        expect(http(d->webhook_port, "POST", "/webhook/special/m", "{}",
                    "-H", "X-Webhook-Secret: special-secret", NULL), 503, "Photon 'special' not initialized");

        /* SIGHUP re-reads the files. */
        cr_assert(f = fopen(path, "we"));
        fputs("rotated", f);
        fclose(f);
        cr_assert_eq(kill(d->pid, SIGHUP), 0);
        /* The reload has no notification of its own; poll the endpoint with a deadline. */
        uint64_t deadline = mono_ms() + 5000;
        for (;;) {
                Http *h = http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}",
                               "-H", "X-Webhook-Secret: rotated", NULL);
                int s = h->status;
                http_free(h);
                if (s == 503)
                        break;
                cr_assert_eq(s, 401);
                cr_assert(mono_ms() < deadline, "SIGHUP did not reload the secret");
                usleep(20000);
        }
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}",
                    "-H", "X-Webhook-Secret: from-credential", NULL), 401, "Invalid webhook secret");
        cr_assert(!daemon_log_contains(d, "rotated"));
        cr_assert(!daemon_log_contains(d, "special-secret"));
        daemon_free(d);
        (void) !system(hdr("rm -rf '%s'", dir));
}

/* --- body --- */

static char* write_temp(size_t size, char fill) {
        char *path = keep(strdup("/tmp/photond-body-XXXXXX"));
        int fd = mkstemp(path);
        char buf[65536];

        cr_assert(fd >= 0);
        memset(buf, fill, sizeof(buf));
        for (size_t left = size; left > 0;) {
                size_t n = left < sizeof(buf) ? left : sizeof(buf);
                cr_assert_eq(write(fd, buf, n), (ssize_t) n);
                left -= n;
        }
        close(fd);
        return path;
}

Test(webhook, body_json_and_size) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        char *over = write_temp(1024 * 1024 + 1, 'a'), *exact = write_temp(1024 * 1024, ' ');

        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{\"a\":", "-H", "X-Webhook-Secret: " SECRET,
                    NULL), 400, "Invalid JSON body");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "not json", "-H", "X-Webhook-Secret: " SECRET,
                    NULL), 400, "Invalid JSON body");
        /* An empty body is {}; arrays and scalars are JSON too. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "", "-H", "X-Webhook-Secret: " SECRET, NULL),
               503, NOT_INITIALIZED);
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "[1,2]", "-H", "X-Webhook-Secret: " SECRET,
                    NULL), 503, NOT_INITIALIZED);

        /* Over 1 MiB with a Content-Length: a real 413, whether or not curl waits for 100-continue. */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", hdr("@%s", over),
                    "-H", "X-Webhook-Secret: " SECRET, NULL), 413, "Request body too large");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", hdr("@%s", over),
                    "-H", "X-Webhook-Secret: " SECRET, "-H", "Expect:", NULL), 413, "Request body too large");
        /* Chunked: found while streaming, answered at once (see chunked_body_over_the_cap_is_cut_off). */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", hdr("@%s", over),
                    "-H", "X-Webhook-Secret: " SECRET, "-H", "Transfer-Encoding: chunked", NULL), 413,
               "Request body too large");
        /* Exactly 1 MiB is allowed (and is whitespace only, so not JSON). */
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", hdr("@%s", exact),
                    "-H", "X-Webhook-Secret: " SECRET, NULL), 400, "Invalid JSON body");
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", hdr("@%s", exact),
                    "-H", "X-Webhook-Secret: " SECRET, "-H", "Transfer-Encoding: chunked", NULL), 400,
               "Invalid JSON body");

        /* The daemon is fine afterwards and holds no body memory. */
        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);
        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.rejected.bodyTooLarge"), 3);
        json_object_put(st);
        unlink(over);
        unlink(exact);
        daemon_free(d);
}

/* --- allowlist and rate limit --- */

Test(webhook, allowlist) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET,
                                            "PHOTON_WEBHOOK_ALLOWED_IPS=10.0.0.0/8, 192.168.0.0/16", NULL });
        Http *h;

        h = http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL);
        cr_assert_eq(h->status, 403);
        cr_assert_str_eq(jstr(h->json, "error"), "Source IP not in webhook allowlist");
        cr_assert_str_eq(jstr(h->json, "sourceIp"), "127.0.0.1");
        http_free(h);
        /* Preflight comes before the allowlist (as in the reference; its 204 says nothing). */
        expect(http(d->webhook_port, "OPTIONS", "/webhook/nohandler/m", NULL, NULL), 204, NULL);
        /* The health route tells the version and uptime: only to allowed addresses. */
        h = http(d->webhook_port, "GET", "/healthz", NULL, NULL);
        cr_assert_eq(h->status, 403, "%s", h->body);
        cr_assert_str_eq(jstr(h->json, "error"), "Source IP not in webhook allowlist");
        cr_assert(!strstr(h->body, "version") && !strstr(h->body, "uptime"), "%s", h->body);
        http_free(h);
        daemon_free(d);

        d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTON_WEBHOOK_ALLOWED_IPS=127.0.0.0/8", NULL });
        expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL),
               503, NOT_INITIALIZED);
        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);
        daemon_free(d);
}

Test(webhook, bad_configuration_fails_start) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .socket_activate = true, .webhook = true,
                .env = (const char*[]) { "PHOTON_WEBHOOK_ALLOWED_IPS=10.0.0.0/8,bogus", NULL },
        });

        /* The first connection starts photond, which refuses its configuration and exits. */
        wait_listening(d);
        int status = daemon_wait_exit(d, 10000);
        cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %d", status);
        cr_assert(daemon_log_contains(d, "PHOTON_WEBHOOK_ALLOWED_IPS"));
        daemon_free(d);

        /* Reserving every connection would leave none to serve. */
        d = daemon_start(&(DaemonOptions) {
                .socket_activate = true, .webhook = true,
                .env = (const char*[]) { "PHOTOND_WEBHOOK_MAX_CONNECTIONS=8", "PHOTOND_WEBHOOK_RESERVED_CONNECTIONS=8",
                                         NULL },
        });
        wait_listening(d);
        status = daemon_wait_exit(d, 10000);
        cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %d", status);
        cr_assert(daemon_log_contains(d, "PHOTOND_WEBHOOK_RESERVED_CONNECTIONS=8"));
        daemon_free(d);
}

Test(webhook, rate_limit) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTON_WEBHOOK_RATE_LIMIT=3",
                                            "PHOTON_WEBHOOK_RATE_WINDOW_MS=60000", NULL });
        Http *h;

        for (int i = 0; i < 3; i++)
                expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET,
                            NULL), 503, NOT_INITIALIZED);
        /* Health checks are not counted. */
        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);

        h = http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL);
        cr_assert_eq(h->status, 429);
        cr_assert_str_eq(jstr(h->json, "error"), "Too many requests");
        cr_assert_eq(jint(h->json, "limit"), 3);
        cr_assert_eq(jint(h->json, "windowMs"), 60000);
        int retry = atoi(http_header(h, "Retry-After") ?: "0");
        cr_assert(retry >= 1 && retry <= 60, "Retry-After %d", retry);
        http_free(h);
        /* Counted before routing and authentication, as the reference does. */
        expect(http(d->webhook_port, "GET", "/nope", NULL, NULL), 429, "Too many requests");
        daemon_free(d);

        /* A short window opens again. */
        d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTON_WEBHOOK_RATE_LIMIT=1",
                                    "PHOTON_WEBHOOK_RATE_WINDOW_MS=300", NULL });
        expect(http(d->webhook_port, "GET", "/nope", NULL, NULL), 404, NULL);
        expect(http(d->webhook_port, "GET", "/nope", NULL, NULL), 429, NULL);
        usleep(350 * 1000);     /* waiting out the window is the behaviour under test */
        expect(http(d->webhook_port, "GET", "/nope", NULL, NULL), 404, NULL);
        daemon_free(d);
}

/* --- the body's framing --- */

static int tcp_connect(int port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        cr_assert(fd >= 0);
        cr_assert_eq(connect(fd, (struct sockaddr*) &sa, sizeof(sa)), 0, "connect: %m");
        return fd;
}

/* Reads from fd until EOF or deadline_ms; returns what came (asserts that something came before EOF). */
static char* read_until_eof(int fd, int timeout_ms) {
        uint64_t deadline = mono_ms() + timeout_ms;
        size_t len = 0, alloc = 16384;
        char *out = malloc(alloc);

        cr_assert(out);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int64_t left = (int64_t) deadline - (int64_t) mono_ms();
                ssize_t n;

                cr_assert_gt(left, 0, "no answer and close within %d ms; got: %.*s", timeout_ms, (int) len, out);
                if (poll(&p, 1, (int) left) == 0)
                        continue;
                n = read(fd, out + len, alloc - len - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += n;
                cr_assert_lt(len, alloc - 1);
        }
        out[len] = '\0';
        return out;
}

/* Sends raw bytes on a new connection and returns everything photond answers until it closes the connection
 * (asserted within 5 s: the idle timeout is 30 s, so a connection kept open fails the test). */
static char* raw_exchange(int port, const char *request) {
        int fd = tcp_connect(port);
        char *out;

        cr_assert_eq(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t) strlen(request));
        out = read_until_eof(fd, 5000);
        close(fd);
        return out;
}

static unsigned count(const char *haystack, const char *needle) {
        unsigned n = 0;

        for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

/* Request smuggling (RFC 9112 §6.1 and §6.3, RFC 9110 §8.6): a body length that two parsers could read
 * differently is refused before anything else, and the connection is closed, so the bytes after the headers
 * (here a second, pipelined request) are never read as a request. */
static void expect_framing_refused(int port, const char *headers, int status, const char *error) {
        char *req = hdr("POST /webhook/nohandler/m HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: " SECRET "\r\n%s\r\n"
                        "{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", headers);
        char *out = raw_exchange(port, req), *line = hdr("HTTP/1.1 %d ", status);

        cr_assert(strncmp(out, line, strlen(line)) == 0, "%s: %s", headers, out);
        cr_assert_eq(count(out, "HTTP/1.1 "), 1, "one answer, the pipelined request is not served: %s", out);
        cr_assert_not_null(strstr(out, hdr("{\"error\":\"%s\"}", error)), "%s", out);
        free(out);
}

Test(webhook, ambiguous_body_length_is_refused) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        const char *conflict = "Bad request: invalid or conflicting Content-Length headers";
        const char *both = "Bad request: both Transfer-Encoding and Content-Length";
        const char *not_last = "Bad request: Transfer-Encoding must end with chunked, applied once";
        struct json_object *st;
        char *out;

        expect_framing_refused(d->webhook_port, "Content-Length: 2\r\nContent-Length: 40\r\n", 400, conflict);
        expect_framing_refused(d->webhook_port, "Content-Length: 40\r\nContent-Length: 2\r\n", 400, conflict);
        expect_framing_refused(d->webhook_port, "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", 400, both);
        expect_framing_refused(d->webhook_port, "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", 400, both);
        expect_framing_refused(d->webhook_port, "Transfer-Encoding: chunked, identity\r\n", 400, not_last);
        expect_framing_refused(d->webhook_port, "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400,
                               not_last);
        expect_framing_refused(d->webhook_port, "Transfer-Encoding: gzip, chunked\r\n", 501,
                               "Transfer-Encoding not supported: only chunked");
        /* Before the preflight's answer too. */
        out = raw_exchange(d->webhook_port, "OPTIONS /webhook/a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                            "Content-Length: 3\r\n\r\nx");
        cr_assert(strncmp(out, "HTTP/1.1 400 ", 13) == 0, "%s", out);
        free(out);

        /* Repeats of one value are that value (RFC 9110 §8.6), and chunked alone is fine. */
        out = raw_exchange(d->webhook_port, "POST /webhook/nohandler/m HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: "
                                            SECRET "\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
                                            "Connection: close\r\n\r\n{}");
        cr_assert(strncmp(out, "HTTP/1.1 503 ", 13) == 0, "%s", out);
        free(out);
        out = raw_exchange(d->webhook_port, "POST /webhook/nohandler/m HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: "
                                            SECRET "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                            "2\r\n{}\r\n0\r\n\r\n");
        cr_assert(strncmp(out, "HTTP/1.1 503 ", 13) == 0, "%s", out);
        free(out);

        st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.rejected.badFraming"), 8);
        json_object_put(st);
        daemon_free(d);
}

/* --- bodies that do not end --- */


/* A chunked body that keeps coming past the cap is refused when it passes the cap, not when it ends: here it would
 * never end. A child streams 16 KiB chunks (about 800 KiB/s, 1 MiB after ~1.3 s) for up to 15 s and exits 0 as
 * soon as photond cuts the connection, 1 if it could send everything. */
Test(webhook, chunked_body_over_the_cap_is_cut_off) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        const char *head = "POST /webhook/nohandler/m HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: " SECRET
                           "\r\nTransfer-Encoding: chunked\r\n\r\n";
        int fd = tcp_connect(d->webhook_port), status;
        uint64_t t0 = mono_ms();
        char *out;
        pid_t pid;

        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                static char chunk[16384 + 32];
                int n = snprintf(chunk, sizeof(chunk), "%x\r\n", 16384);

                memset(chunk + n, '{', 16384);
                memcpy(chunk + n + 16384, "\r\n", 2);
                if (send(fd, head, strlen(head), MSG_NOSIGNAL) < 0)
                        _exit(2);
                for (uint64_t end = mono_ms() + 15000; mono_ms() < end;) {
                        if (send(fd, chunk, n + 16384 + 2, MSG_NOSIGNAL) < 0)
                                _exit(0);
                        usleep(20 * 1000);
                }
                _exit(1);
        }

        out = read_until_eof(fd, 8000);
        cr_assert(strncmp(out, "HTTP/1.1 413 ", 13) == 0, "%s", out);
        cr_assert_not_null(strstr(out, "\r\n\r\n{\"error\":\"Request body too large\"}"), "%s", out);
        cr_assert_not_null(strstr(out, "Connection: close\r\n"), "%s", out);
        cr_assert_lt(mono_ms() - t0, 8000);
        /* The sender is cut off: it cannot go on sending. */
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the sender was not cut off (status %d)", status);
        cr_assert_lt(mono_ms() - t0, 12000);
        close(fd);
        free(out);

        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);
        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.rejected.bodyTooLarge"), 1);
        json_object_put(st);
        daemon_free(d);
}

/* Bytes dripping in keep a connection from ever being idle: the body has a deadline of its own. */
Test(webhook, dripping_body_hits_the_request_deadline) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTOND_WEBHOOK_REQUEST_TIMEOUT_S=1",
                                            NULL });
        const char *head = "POST /webhook/nohandler/m HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: " SECRET
                           "\r\nContent-Length: 100\r\n\r\n";
        int fd = tcp_connect(d->webhook_port), status;
        uint64_t t0 = mono_ms(), took;
        char *out;
        pid_t pid;

        cr_assert_eq(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t) strlen(head));
        /* A child sends one byte of the body every 100 ms: 10 s for all of it. */
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                for (int i = 0; i < 100; i++) {
                        if (send(fd, " ", 1, MSG_NOSIGNAL) != 1)
                                _exit(0);
                        usleep(100 * 1000);
                }
                _exit(1);
        }

        out = read_until_eof(fd, 5000);
        took = mono_ms() - t0;
        cr_assert(strncmp(out, "HTTP/1.1 408 ", 13) == 0, "%s", out);
        cr_assert_not_null(strstr(out, "{\"error\":\"Request body not received in time\"}"), "%s", out);
        cr_assert_geq(took, 900);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the sender was not cut off (status %d)", status);
        close(fd);
        free(out);

        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.rejected.requestTimeout"), 1);
        json_object_put(st);
        daemon_free(d);
}

/* --- many and slow clients --- */

Test(webhook, slow_client_does_not_block_others) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        const char *req = "POST /webhook/nohandler/slow HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: " SECRET
                          "\r\nContent-Length: 2\r\n\r\n{}";
        int fd = tcp_connect(d->webhook_port);
        pid_t pid;

        /* A child trickles the request, one byte per 100 ms (about 9 s in all). */
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                for (const char *p = req; *p; p++) {
                        if (send(fd, p, 1, MSG_NOSIGNAL) != 1)
                                _exit(1);
                        usleep(100 * 1000);
                }
                _exit(0);
        }

        /* Meanwhile others are served at once. */
        for (int i = 0; i < 10; i++) {
                uint64_t t0 = mono_ms();
                expect(http(d->webhook_port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET,
                            NULL), 503, NOT_INITIALIZED);
                cr_assert_lt(mono_ms() - t0, 2000);
        }
        cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "the trickle should still be going");

        /* The slow request is answered too once complete. */
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 5000), 1);
        char buf[512] = {};
        cr_assert_gt(read(fd, buf, sizeof(buf) - 1), 0);
        cr_assert(strncmp(buf, "HTTP/1.1 503", 12) == 0, "%s", buf);
        close(fd);
        daemon_free(d);
}

Test(webhook, idle_connection_times_out) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTOND_WEBHOOK_IDLE_TIMEOUT_S=1",
                                            NULL });
        int fd = tcp_connect(d->webhook_port);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        uint64_t t0 = mono_ms();
        char buf[64];

        /* Half a request, then silence: MHD's timeout (driven by our timer) closes it. */
        cr_assert_eq(send(fd, "POST /webhook/a/b HTTP/1.1\r\n", 28, MSG_NOSIGNAL), 28);
        cr_assert_eq(poll(&p, 1, 5000), 1, "not closed within 5 s");
        cr_assert_leq(read(fd, buf, sizeof(buf)), 0);
        cr_assert_geq(mono_ms() - t0, 900);
        close(fd);
        daemon_free(d);
}

/* --- connections that never finish their head (slowloris) --- */

/* A connection from source address from (127.0.0.x: any of them reaches a listener on 127.0.0.1). */
static int tcp_connect_from(int port, const char *from) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct sockaddr_in local = { .sin_family = AF_INET };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        cr_assert(fd >= 0);
        cr_assert_eq(inet_pton(AF_INET, from, &local.sin_addr), 1);
        cr_assert_eq(bind(fd, (struct sockaddr*) &local, sizeof(local)), 0, "bind %s: %m", from);
        cr_assert_eq(connect(fd, (struct sockaddr*) &sa, sizeof(sa)), 0, "connect: %m");
        return fd;
}

/* A connection that sends a request line and the start of a header, and then nothing. */
static int slow_head(int port, const char *from) {
        static const char part[] = "POST /webhook/p/m HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        int fd = tcp_connect_from(port, from);

        cr_assert_eq(send(fd, part, sizeof(part) - 1, MSG_NOSIGNAL), (ssize_t) sizeof(part) - 1);
        return fd;
}

/* GET /healthz on a new connection; whether a 200 came within timeout_ms. */
static bool healthz_raw(int port, const char *from, int timeout_ms) {
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        int fd = tcp_connect_from(port, from);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char buf[64] = "";
        bool ok = false;

        cr_assert_eq(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t) sizeof(req) - 1);
        if (poll(&p, 1, timeout_ms) == 1 && read(fd, buf, sizeof(buf) - 1) > 0)
                ok = strncmp(buf, "HTTP/1.1 200 ", 13) == 0;
        close(fd);
        return ok;
}

/* What photond answers on fd (up to its close) within timeout_ms; "" if it closed without a word, NULL if it
 * stayed open and silent. */
static char* answer_or_null(int fd, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char buf[512];
        ssize_t n;

        if (poll(&p, 1, timeout_ms) != 1)
                return NULL;
        n = read(fd, buf, sizeof(buf) - 1);
        buf[MAX(n, (ssize_t) 0)] = '\0';
        return keep(strdup(buf));
}

static int64_t rejected(Daemon *d, const char *reason) {
        struct json_object *st = status_of(d);
        int64_t n = jint(st, hdr("data.webhook.rejected.%s", reason));

        json_object_put(st);
        return n;
}

/* More connections with unfinished heads than the table holds, spread over addresses so that no per-address
 * cap applies: the oldest are closed to keep room, and /healthz answers every probe. (The real scenario, 600
 * connections at the default caps, is measured by hand: see the report of issue 15.) */
Test(webhook, slow_heads_do_not_lock_out_healthz) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTOND_WEBHOOK_MAX_CONNECTIONS=24",
                                            "PHOTOND_WEBHOOK_RESERVED_CONNECTIONS=4",
                                            "PHOTOND_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS=1000", NULL });
        int fds[60];
        char from[32];
        unsigned answered = 0, closed = 0;

        for (int i = 0; i < 60; i++) {
                snprintf(from, sizeof(from), "127.0.0.%d", 10 + i % 6);
                fds[i] = slow_head(d->webhook_port, from);
        }
        /* Only heads pending for a second make room (a burst's unread heads do not): the first probe may wait
         * that long in the listen backlog. */
        for (int i = 0; i < 7; i++)
                answered += healthz_raw(d->webhook_port, "127.0.0.1", 3000);
        cr_assert_eq(answered, 7, "/healthz answered %u of 7 probes", answered);

        /* The oldest heads made room, with a 408; the newest are still open. */
        for (int i = 0; i < 60; i++) {
                char *a = answer_or_null(fds[i], i < 20 ? 2000 : 0);

                if (i < 20)
                        cr_assert(a && strncmp(a, "HTTP/1.1 408 ", 13) == 0, "connection %d: %s", i, a ?: "open");
                closed += !!a;
                close(fds[i]);
        }
        cr_assert_geq(rejected(d, "evicted"), 20 + 7);
        cr_assert_lt(closed, 60, "the newest connections were left alone");
        daemon_free(d);
}

/* The head deadline counts from the accept, whatever trickles in: MHD's idle timeout (30 s) never fires for a
 * connection that sends a byte every 200 ms, the head deadline (1 s here) does. */
Test(webhook, head_deadline_closes_a_trickling_connection) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTOND_WEBHOOK_HEAD_TIMEOUT_S=1",
                                            NULL });
        int fd = slow_head(d->webhook_port, "127.0.0.1");
        uint64_t t0 = mono_ms();
        char *a = NULL;

        /* The pace of the trickle is the scenario: poll() waits for the answer between two bytes. */
        while (!(a = answer_or_null(fd, 200))) {
                cr_assert_lt(mono_ms() - t0, 5000, "still open after 5 s");
                (void) send(fd, "a", 1, MSG_NOSIGNAL);
        }
        cr_assert(strncmp(a, "HTTP/1.1 408 ", 13) == 0, "%s", a);
        cr_assert_geq(mono_ms() - t0, 900);
        close(fd);
        cr_assert_eq(rejected(d, "headTimeout"), 1);

        /* A head that comes in time is served as before, also one sent in pieces. */
        fd = tcp_connect(d->webhook_port);
        cr_assert_eq(send(fd, "GET /healthz HTTP/1.1\r\n", 24, MSG_NOSIGNAL), 24);
        cr_assert_null(answer_or_null(fd, 300));
        cr_assert_eq(send(fd, "Host: x\r\n\r\n", 11, MSG_NOSIGNAL), 11);
        a = answer_or_null(fd, 2000);
        cr_assert(a && strncmp(a, "HTTP/1.1 200 ", 13) == 0, "%s", a ?: "no answer");
        close(fd);
        cr_assert_eq(rejected(d, "headTimeout"), 1);
        daemon_free(d);
}

/* One address holds at most its share: an extra connection from it first closes its oldest unfinished head
 * (so /healthz from the same address still gets in); when all of its connections are past their heads, the
 * extra one is refused with a 503. Other addresses are not affected. */
Test(webhook, per_address_connection_cap) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_ALLOW_UNAUTHENTICATED=1",
                                            "PHOTOND_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS=4", NULL });
        static const char in_body[] = "POST /webhook/p/m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                      "Content-Length: 100\r\n\r\n{";
        struct json_object *st;
        int slow[4], body[4], extra;
        int64_t requests;
        char *a;

        /* Four unfinished heads; a fifth connection (/healthz) closes the oldest once it has been pending for a
         * second (before that, the newcomer is refused: see below). The wait is the scenario. */
        for (int i = 0; i < 4; i++)
                slow[i] = slow_head(d->webhook_port, "127.0.0.1");
        usleep(1100 * 1000);
        cr_assert(healthz_raw(d->webhook_port, "127.0.0.1", 3000));
        a = answer_or_null(slow[0], 2000);
        cr_assert(a && strncmp(a, "HTTP/1.1 408 ", 13) == 0, "%s", a ?: "open");
        for (int i = 1; i < 4; i++)
                cr_assert_null(answer_or_null(slow[i], 0), "connection %d left alone", i);
        for (int i = 0; i < 4; i++)
                close(slow[i]);

        /* Four requests past their heads, waiting for their bodies: the fifth connection is refused. Their heads
         * are in once status counts four more requests. */
        st = status_of(d);
        requests = jint(st, "data.webhook.requests");
        json_object_put(st);
        for (int i = 0; i < 4; i++) {
                body[i] = tcp_connect(d->webhook_port);
                cr_assert_eq(send(body[i], in_body, sizeof(in_body) - 1, MSG_NOSIGNAL), (ssize_t) sizeof(in_body) - 1);
        }
        for (uint64_t t0 = mono_ms();;) {
                st = status_of(d);
                bool in = jint(st, "data.webhook.requests") >= requests + 4;
                json_object_put(st);
                if (in)
                        break;
                cr_assert_lt(mono_ms() - t0, 5000, "the four heads were not read");
        }
        cr_assert(healthz_raw(d->webhook_port, "127.0.0.2", 3000), "another address is not affected");
        extra = tcp_connect(d->webhook_port);
        a = answer_or_null(extra, 3000);
        cr_assert(a && strncmp(a, "HTTP/1.1 503 ", 13) == 0, "%s", a ?: "open");
        close(extra);
        cr_assert_eq(rejected(d, "tooManyConnections"), 1);
        for (int i = 0; i < 4; i++) {
                cr_assert_null(answer_or_null(body[i], 0), "request %d still waits for its body", i);
                close(body[i]);
        }
        daemon_free(d);
}

static void write_handler(Daemon *d, const char *photon, const char *method, const char *script);

/* n POSTs to path at once through one curl --parallel; returns curl's output, one "<status> <Retry-After>" line
 * per request, and the time it took in *ret_ms. */
static char* curl_parallel(int port, const char *path, int n, uint64_t *ret_ms) {
        char cfg[] = "/tmp/photond-curl-XXXXXX", *out;
        int fd = mkstemp(cfg);
        FILE *f = fdopen(fd, "w");
        uint64_t t0;

        cr_assert(f);
        /* "next" separates the transfers: options before it apply to its URL only. */
        for (int i = 0; i < n; i++)
                fprintf(f, "url = \"http://127.0.0.1:%d%s\"\nheader = \"X-Webhook-Secret: " SECRET "\"\n"
                           "data = \"{}\"\noutput = \"/dev/null\"\n"
                           "write-out = \"%%{http_code} %%header{retry-after}\\n\"\nmax-time = 20\n%s",
                        port, path, i < n - 1 ? "next\n" : "");
        fclose(f);

        t0 = mono_ms();
        cr_assert_eq(run_curl((const char*[]) { "--no-progress-meter", "--parallel", "--parallel-immediate",
                                                "--parallel-max", "300", "--config", cfg, NULL }, &out), 0);
        *ret_ms = mono_ms() - t0;
        unlink(cfg);
        return out;
}

/* 200 method calls at once, each waiting on a suspended connection while its handler sleeps: they must run side by
 * side (one after the other they would take 100 s), and every one must be answered after its resume. */
Test(webhook, two_hundred_concurrent_calls) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTON_WEBHOOK_RATE_LIMIT=0",
                                            "PHOTOND_MAX_CALLS_PER_PHOTON=256", NULL });
        uint64_t took;
        char *out;
        int n200 = 0;

        write_handler(d, "sleepy", "run", "sleep 0.5; echo '{}'");
        out = curl_parallel(d->webhook_port, "/webhook/sleepy/run", 200, &took);
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
                cr_assert_str_eq(line, "200 ", "unexpected status line '%s'", line);
                n200++;
        }
        cr_assert_eq(n200, 200);
        cr_assert_lt(took, 10000, "the calls did not overlap: %" PRIu64 " ms", took);
        free(out);

        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.requests"), 200);
        cr_assert_eq(jint(st, "data.webhook.succeeded"), 200);
        cr_assert_eq(jint(st, "data.webhook.inFlight"), 0);
        json_object_put(st);
        daemon_free(d);
}

/* At the default cap of calls in flight per photon (64) the rest are told to come back. */
Test(webhook, concurrent_calls_over_the_cap_get_503) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTON_WEBHOOK_RATE_LIMIT=0", NULL });
        uint64_t took;
        char *out;
        int n200 = 0, n503 = 0;

        write_handler(d, "sleepy", "run", "sleep 2; echo '{}'");
        out = curl_parallel(d->webhook_port, "/webhook/sleepy/run", 200, &took);
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
                if (strcmp(line, "200 ") == 0)
                        n200++;
                else if (strcmp(line, "503 1") == 0)
                        n503++;
                else
                        cr_assert_fail("unexpected status line '%s'", line);
        }
        cr_assert_eq(n200 + n503, 200);
        cr_assert_geq(n200, 64);
        cr_assert_gt(n503, 0);
        free(out);

        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.rejected.busy"), n503);
        json_object_put(st);
        daemon_free(d);
}

/* --- listeners --- */

static int free_port(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port;

        cr_assert(fd >= 0);
        cr_assert_eq(bind(fd, (struct sockaddr*) &sa, sizeof(sa)), 0);
        cr_assert_eq(getsockname(fd, (struct sockaddr*) &sa, &len), 0);
        port = ntohs(sa.sin_port);
        close(fd);
        return port;
}

Test(webhook, self_bound_from_port) {
        int port = free_port();
        char *env = hdr("PHOTON_WEBHOOK_PORT=%d", port);
        Daemon *d = daemon_start(&(DaemonOptions) { .env = (const char*[]) { env, "PHOTON_WEBHOOK_SECRET=" SECRET,
                                                                            NULL } });

        expect(http(port, "GET", "/healthz", NULL, NULL), 200, NULL);
        expect(http(port, "POST", "/webhook/nohandler/m", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL), 503,
               NOT_INITIALIZED);
        cr_assert(daemon_log_contains(d, hdr("Webhook listening on 127.0.0.1 port %d", port)));

        /* A graceful stop with the endpoint running. */
        int status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        daemon_free(d);
}

Test(webhook, disabled_without_port) {
        Daemon *d = daemon_start(NULL);
        struct json_object *st = status_of(d);

        cr_assert(!jbool(st, "data.webhookEnabled"));
        cr_assert(!jhas(st, "data.webhook"));
        json_object_put(st);
        daemon_free(d);
}

/* --- method calls through the dispatcher (exec handlers) --- */

static void write_handler(Daemon *d, const char *photon, const char *method, const char *script) {
        char *dir = hdr("%s/handlers/%s", d->home, photon), *path = hdr("%s/%s", dir, method);
        FILE *f;

        (void) mkdir(hdr("%s/handlers", d->home), 0755);
        (void) mkdir(dir, 0755);
        cr_assert(f = fopen(path, "we"));
        fprintf(f, "#!/bin/sh\n%s\n", script);
        fclose(f);
        cr_assert_eq(chmod(path, 0755), 0);
}

Test(webhook, call_success_args_and_event) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        Conn *sub = conn_open(d);
        struct json_object *o;
        Http *h;

        write_handler(d, "echo", "run", "cat");
        o = conn_request(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"webhooks:echo\"}");
        json_object_put(o);

        h = http(d->webhook_port, "POST", "/webhook/echo/run?x=1&y=two&x=3", "{\"a\":1}",
                 "-H", "X-Webhook-Secret: " SECRET, "-H", "Authorization: Bearer token", "-H", "X-Custom: hi",
                 "-H", "X-Hub-Signature-256: sha256=00", NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        cr_assert(jbool(h->json, "success"));
        /* The handler echoed its args: the body plus _webhook. */
        cr_assert_eq(jint(h->json, "data.a"), 1);
        cr_assert_str_eq(jstr(h->json, "data._webhook.method"), "POST");
        cr_assert_str_eq(jstr(h->json, "data._webhook.query.x"), "3");
        cr_assert_str_eq(jstr(h->json, "data._webhook.query.y"), "two");
        cr_assert_str_eq(jstr(h->json, "data._webhook.headers.x-custom"), "hi");
        cr_assert_str_eq(jstr(h->json, "data._webhook.headers.content-type"), "application/json");
        cr_assert_gt(jint(h->json, "data._webhook.timestamp"), 1600000000000LL);
        /* Credentials never reach the handler. */
        cr_assert(!jhas(h->json, "data._webhook.headers.x-webhook-secret"));
        cr_assert(!jhas(h->json, "data._webhook.headers.authorization"));
        cr_assert(!jhas(h->json, "data._webhook.headers.x-hub-signature-256"));
        cr_assert(!strstr(h->body, SECRET));
        http_free(h);

        /* Subscribers hear about it. */
        for (;;) {
                o = conn_expect(sub, 5000);
                if (jstr(o, "message.event"))
                        break;
                json_object_put(o);
        }
        cr_assert_str_eq(jstr(o, "channel"), "webhooks:echo");
        cr_assert_str_eq(jstr(o, "message.event"), "webhook-received");
        cr_assert_str_eq(jstr(o, "message.method"), "run");
        cr_assert_gt(jint(o, "message.timestamp"), 1600000000000LL);
        json_object_put(o);

        /* The X-Photon-Name form; a handler printing text answers a string; nothing printed leaves data out. */
        write_handler(d, "echo", "hello", "echo hello");
        h = http(d->webhook_port, "POST", "/webhook/hello", NULL, "-H", "X-Webhook-Secret: " SECRET,
                 "-H", "X-Photon-Name: echo", NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        cr_assert_str_eq(h->body, "{\"success\":true,\"data\":\"hello\"}");
        http_free(h);
        write_handler(d, "echo", "quiet", "true");
        h = http(d->webhook_port, "POST", "/webhook/echo/quiet", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL);
        cr_assert_str_eq(h->body, "{\"success\":true}");
        http_free(h);

        /* A JSON array body is passed as it is. */
        h = http(d->webhook_port, "POST", "/webhook/echo/run", "[1,2]", "-H", "X-Webhook-Secret: " SECRET, NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        cr_assert_str_eq(h->body, "{\"success\":true,\"data\":[1,2]}");
        http_free(h);

        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.succeeded"), 4);
        json_object_put(st);
        conn_close(sub);
        daemon_free(d);
}

Test(webhook, call_failure_is_500) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        Conn *sub = conn_open(d);
        struct json_object *o;
        Http *h;

        write_handler(d, "bad", "run", "echo boom >&2; exit 3");
        o = conn_request(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"webhooks:bad\"}");
        json_object_put(o);

        h = http(d->webhook_port, "POST", "/webhook/bad/run", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL);
        cr_assert_eq(h->status, 500, "%s", h->body);
        cr_assert(strstr(jstr(h->json, "error"), "boom"), "%s", h->body);
        cr_assert(!jhas(h->json, "success"));
        http_free(h);

        /* No webhook-received for a failed call. */
        o = conn_recv(sub, 300);
        cr_assert_null(o, "unexpected %s", o ? json_object_to_json_string(o) : "");
        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.webhook.failed"), 1);
        json_object_put(st);
        conn_close(sub);
        daemon_free(d);
}

Test(webhook, client_leaving_abandons_the_call) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        char *out;
        uint64_t deadline;

        write_handler(d, "slow", "run", "sleep 2; echo '{}'");
        /* curl gives up after 0.5 s and closes the connection while the handler runs. */
        cr_assert_eq(run_curl((const char*[]) { "--max-time", "0.5", "-o", "/dev/null", "-H",
                                                "X-Webhook-Secret: " SECRET, "-d", "{}",
                                                hdr("http://127.0.0.1:%d/webhook/slow/run", d->webhook_port),
                                                NULL }, &out), 28);
        free(out);

        /* photond notices the hang-up (no notification to wait for; poll the counters). */
        deadline = mono_ms() + 3000;
        for (;;) {
                struct json_object *st = status_of(d);
                int64_t n = jint(st, "data.webhook.abandoned");
                json_object_put(st);
                if (n == 1)
                        break;
                cr_assert(mono_ms() < deadline, "the call was not abandoned");
                usleep(20000);
        }

        /* The endpoint carries on, also after the abandoned handler finishes. */
        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);
        write_handler(d, "slow", "fast", "echo 1");
        expect(http(d->webhook_port, "POST", "/webhook/slow/fast", "{}", "-H", "X-Webhook-Secret: " SECRET, NULL),
               200, NULL);
        daemon_free(d);
}

/* Starts a webhook call of slow.run in a child running curl (its exit status: curl's) once it runs, waiting until
 * photond reports it in flight. The answer's body goes to body_path. */
static pid_t start_slow_call(Daemon *d, const char *body_path) {
        uint64_t deadline;
        pid_t pid;

        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                char *out;
                int r = run_curl((const char*[]) { "-s", "-o", body_path, "-w", "%{http_code}",
                                                   "-H", "X-Webhook-Secret: " SECRET, "-d", "{}",
                                                   hdr("http://127.0.0.1:%d/webhook/slow/run", d->webhook_port),
                                                   NULL }, &out);
                _exit(r != 0 ? r : strcmp(out, "200") == 0 ? 0 : 99);
        }
        deadline = mono_ms() + 5000;
        for (;;) {
                struct json_object *st = status_of(d);
                int64_t n = jint(st, "data.webhook.inFlight");
                json_object_put(st);
                if (n == 1)
                        return pid;
                cr_assert(mono_ms() < deadline, "the call did not start");
                usleep(20000);
        }
}

/* A stop lets a webhook call under way finish and be answered (WEBHOOK_STOP_GRACE_MS), then exits at once. */
Test(webhook, shutdown_waits_for_a_call_under_way) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, NULL });
        _cleanup_free_ char *body_path = NULL, *body = NULL;
        uint64_t t0;
        pid_t pid;
        int status;

        cr_assert(asprintf(&body_path, "%s/answer.json", d->home) >= 0);
        write_handler(d, "slow", "run", "sleep 1; echo '{\"done\":true}'");
        pid = start_slow_call(d, body_path);
        t0 = mono_ms();
        status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        cr_assert_lt(mono_ms() - t0, 5000, "the stop took %" PRIu64 " ms", mono_ms() - t0);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "curl got no 200 (status %d)", status);
        cr_assert_eq(read_full_file(body_path, 4096, &body, NULL), 0);
        cr_assert(strstr(body, "\"done\":true"), "answer: %s", body);
        daemon_free(d);
}

/* Past the grace, the stop does not wait any longer: the connection closes without an answer. */
Test(webhook, shutdown_grace_is_bounded) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" SECRET, "PHOTOND_WEBHOOK_STOP_GRACE_MS=300",
                                            NULL });
        _cleanup_free_ char *body_path = NULL;
        uint64_t t0, took;
        pid_t pid;
        int status;

        cr_assert(asprintf(&body_path, "%s/answer.json", d->home) >= 0);
        write_handler(d, "slow", "run", "sleep 5; echo '{}'");
        pid = start_slow_call(d, body_path);
        t0 = mono_ms();
        status = daemon_signal_and_wait(d, SIGTERM);
        took = mono_ms() - t0;
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        cr_assert(took >= 250 && took < 3000, "the stop took %" PRIu64 " ms, not about the 300 ms grace", took);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        /* curl saw the connection close without an answer (52: empty reply). */
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 52, "curl status %d", status);
        daemon_free(d);
}

/* --- photonctl webhook-test --- */

Test(webhook, photonctl_webhook_test) {
        Daemon *d = start((const char*[]) { "PHOTON_WEBHOOK_SECRET=" STD_SECRET, NULL });
        const char *schemes[] = { "header", "github", "stripe", "standard" };
        char *url = hdr("--url=http://127.0.0.1:%d", d->webhook_port), *out, secret_file[] = "/tmp/photond-sec-XXXXXX";
        int fd;

        write_handler(d, "echo", "run", "cat");
        cr_assert_eq(setenv("PHOTON_WEBHOOK_SECRET", STD_SECRET, 1), 0);
        for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
                cr_assert_eq(run_ctl(d, &out, "webhook-test", "echo", "run", "{\"n\":7}", url,
                                     hdr("--scheme=%s", schemes[i]), NULL), 0, "%s", schemes[i]);
                cr_assert(strstr(out, "HTTP/1.1 200 OK"), "%s: %s", schemes[i], out);
                cr_assert(strstr(out, "\"n\":7"), "%s", out);
                free(out);
        }

        /* --json prints the body only; a refused request exits non-zero. */
        cr_assert_eq(run_ctl(d, &out, "--json", "webhook-test", "echo", "run", url, NULL), 0);
        cr_assert(strncmp(out, "{\"success\":true", 15) == 0, "%s", out);
        free(out);
        cr_assert_neq(run_ctl(d, &out, "webhook-test", "nohandler", "run", url, NULL), 0);
        cr_assert(strstr(out, "503"), "%s", out);
        free(out);

        /* --secret-file wins over the environment. */
        fd = mkstemp(secret_file);
        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, "wrong\n", 6), 6);
        close(fd);
        cr_assert_neq(run_ctl(d, &out, "webhook-test", "echo", "run", url, hdr("--secret-file=%s", secret_file),
                              "--scheme=github", NULL), 0);
        cr_assert(strstr(out, "HTTP/1.1 401"), "%s", out);
        free(out);
        unlink(secret_file);

        /* Bad usage is refused before anything is sent. */
        cr_assert_neq(run_ctl(d, NULL, "webhook-test", "echo", "run", url, "--scheme=md5", NULL), 0);
        cr_assert_neq(run_ctl(d, NULL, "webhook-test", "echo", "run", "{bad", url, NULL), 0);
        cr_assert_neq(run_ctl(d, NULL, "webhook-test", "../x", "run", url, NULL), 0);
        daemon_free(d);
}

/* photonctl signs with the secret photond checks, whichever of the credential and the environment holds it: the
 * credential first, the environment when it is absent or empty. */
Test(webhook, photonctl_webhook_test_finds_the_secret_as_photond_does) {
        char dir[] = "/tmp/photond-ctlcreds-XXXXXX", *path, *env, *url, *out;
        FILE *f;

        cr_assert(mkdtemp(dir));
        path = hdr("%s/webhook-secret", dir);
        cr_assert(f = fopen(path, "we"));
        fputs("from-credential\n", f);
        fclose(f);
        env = hdr("CREDENTIALS_DIRECTORY=%s", dir);

        Daemon *d = start((const char*[]) { env, "PHOTON_WEBHOOK_SECRET=from-env", NULL });
        write_handler(d, "echo", "run", "cat");
        url = hdr("--url=http://127.0.0.1:%d", d->webhook_port);
        cr_assert_eq(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);
        cr_assert_eq(setenv("PHOTON_WEBHOOK_SECRET", "from-env", 1), 0);
        for (int i = 0; i < 2; i++) {
                const char *scheme = i == 0 ? "--scheme=header" : "--scheme=github";

                cr_assert_eq(run_ctl(d, &out, "webhook-test", "echo", "run", url, scheme, NULL), 0,
                             "credential and environment both set (%s): %s", scheme, out);
                cr_assert(strstr(out, "HTTP/1.1 200 OK"), "%s", out);
                free(out);
        }
        daemon_free(d);

        /* An empty credential (the shipped units' fallback) is no secret: both go on to the environment. */
        cr_assert(f = fopen(path, "we"));
        fputs("\n", f);
        fclose(f);
        d = start((const char*[]) { env, "PHOTON_WEBHOOK_SECRET=from-env", NULL });
        write_handler(d, "echo", "run", "cat");
        url = hdr("--url=http://127.0.0.1:%d", d->webhook_port);
        cr_assert_eq(run_ctl(d, &out, "webhook-test", "echo", "run", url, "--scheme=github", NULL), 0,
                     "empty credential: %s", out);
        cr_assert(strstr(out, "HTTP/1.1 200 OK"), "%s", out);
        free(out);
        daemon_free(d);

        unsetenv("CREDENTIALS_DIRECTORY");
        unsetenv("PHOTON_WEBHOOK_SECRET");
        unlink(path);
        rmdir(dir);
}
