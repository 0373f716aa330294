/* SPDX-License-Identifier: MIT */

/* The HTTP front end's API against a real photond under systemd-socket-activate (the "webhook" fd), driven by the
 * curl command line: the API token (none configured, wrong, right, from a credential, SIGHUP), CORS and its
 * preflight, every JSON route, and the Server-Sent Events stream (a publish arriving, Last-Event-ID and
 * lastEventId replay, refresh_needed, keep-alives, a slow reader cut off, the caps). */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/evp.h>
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
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "http-client.h"
#include "json-util.h"
#include "photond-http-page.h"
#include "webhook-auth.h"

#define TOKEN "t0ken-for-tests"
#define AUTH "Authorization: Bearer " TOKEN

/* --- curl --- */

/* --- the daemon --- */

/* photond with the webhook fd and the API token (plus env), ready. */
static Daemon* start_env(const char *const *env) {
        return daemon_start_http(env);
}

static Daemon* start(void) {
        return start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, NULL });
}

/* A publish on the control socket; returns its eventId. */
static int64_t socket_publish(Conn *c, const char *channel, const char *message) {
        struct json_object *o = conn_request(c, "pub", "{\"type\":\"publish\",\"id\":\"pub\",\"channel\":\"%s\","
                                             "\"message\":%s}", channel, message);
        int64_t id = jint(o, "data.eventId");

        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        return id;
}

/* --- the API token --- */

Test(http, no_token_configured_is_403_with_how_to_set_one) {
        Daemon *d = start_env(NULL);

        expect(http(d->webhook_port, "GET", "/v1/status", NULL, NULL), 403,
               "API token not configured. Set the api-token credential ($CREDENTIALS_DIRECTORY/api-token) or "
               "PHOTOND_API_TOKEN");
        /* A token sent does not help: there is nothing to compare it with. */
        expect(http(d->webhook_port, "GET", "/v1/locks", NULL, "-H", AUTH, NULL), 403, NULL);
        expect(http(d->webhook_port, "GET", "/v1/events?channel=a", NULL, "-H", AUTH, NULL), 403, NULL);
        /* What needs no token is unchanged. */
        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);
        daemon_free(d);
}

Test(http, wrong_or_missing_token_is_401) {
        Daemon *d = start();
        Http *h;

        h = http(d->webhook_port, "GET", "/v1/status", NULL, NULL);
        cr_assert_eq(h->status, 401, "%s", h->body);
        cr_assert_str_eq(jstr(h->json, "error"), "Invalid or missing API token: send Authorization: Bearer <token>");
        cr_assert_str_eq(http_header(h, "WWW-Authenticate"), "Bearer realm=\"photond\"");
        http_free(h);
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: Bearer nope", NULL), 401, NULL);
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: Bearer " TOKEN "x", NULL), 401,
               NULL);
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: Basic " TOKEN, NULL), 401,
               NULL);
        /* A publish is refused before its body is looked at. */
        expect(http(d->webhook_port, "POST", "/v1/channels/a", "{}", NULL), 401, NULL);
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", AUTH, NULL), 200, NULL);
        /* The scheme is case-insensitive (RFC 9110). */
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: bearer " TOKEN, NULL), 200,
               NULL);
        daemon_free(d);
}

Test(http, token_from_the_credential_and_sighup) {
        char dir[] = "/tmp/photond-creds-XXXXXX", *path;
        FILE *f;

        cr_assert(mkdtemp(dir));
        path = hdr("%s/api-token", dir);
        cr_assert(f = fopen(path, "we"));
        fputs("from-credential\n", f);      /* the trailing newline is not part of the token */
        fclose(f);

        /* The credential wins over the environment. */
        Daemon *d = start_env((const char*[]) { hdr("CREDENTIALS_DIRECTORY=%s", dir), "PHOTOND_API_TOKEN=from-env",
                                                NULL });
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: Bearer from-env", NULL), 401,
               NULL);
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: Bearer from-credential", NULL),
               200, NULL);
        cr_assert(!daemon_log_contains(d, "from-credential"));

        /* SIGHUP reads it again. */
        cr_assert(f = fopen(path, "we"));
        fputs("rotated", f);
        fclose(f);
        cr_assert_eq(kill(d->pid, SIGHUP), 0);
        cr_assert_not_null(daemon_wait_notify(d, "READY=1", 5000));
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: Bearer rotated", NULL), 200,
               NULL);
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Authorization: Bearer from-credential", NULL),
               401, NULL);
        daemon_free(d);
        unlink(path);
        rmdir(dir);
}

/* --- CORS --- */

Test(http, cors_preflight_and_allowlist) {
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN,
                                                "PHOTOND_HTTP_CORS_ORIGINS=http://beam.example:5173, https://ui.example",
                                                NULL });
        Http *h;

        /* A preflight needs no token; an allowed origin learns the path's methods and the headers it may send. */
        h = http(d->webhook_port, "OPTIONS", "/v1/channels/jobs:kanban", NULL, "-H", "Origin: http://beam.example:5173",
                 "-H", "Access-Control-Request-Method: POST", "-H",
                 "Access-Control-Request-Headers: authorization, content-type", NULL);
        cr_assert_eq(h->status, 204);
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Origin"), "http://beam.example:5173");
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Methods"), "POST, OPTIONS");
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Headers"), "Authorization, Content-Type, Last-Event-ID");
        cr_assert_str_eq(http_header(h, "Access-Control-Max-Age"), "600");
        cr_assert_str_eq(http_header(h, "Vary"), "Origin");
        http_free(h);

        h = http(d->webhook_port, "OPTIONS", "/v1/locks/some/lock", NULL, "-H", "Origin: https://ui.example", NULL);
        cr_assert_eq(h->status, 204);
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Methods"), "DELETE, OPTIONS");
        http_free(h);

        /* Another origin gets no grant (the browser then refuses), on the preflight and on answers. */
        h = http(d->webhook_port, "OPTIONS", "/v1/status", NULL, "-H", "Origin: https://evil.example", NULL);
        cr_assert_eq(h->status, 204);
        cr_assert_null(http_header(h, "Access-Control-Allow-Origin"));
        cr_assert_null(http_header(h, "Access-Control-Allow-Methods"));
        http_free(h);
        h = http(d->webhook_port, "GET", "/v1/status", NULL, "-H", AUTH, "-H", "Origin: https://evil.example", NULL);
        cr_assert_eq(h->status, 200);
        cr_assert_null(http_header(h, "Access-Control-Allow-Origin"));
        http_free(h);
        /* Loopback is no exception here, unlike the webhook's CORS. */
        h = http(d->webhook_port, "GET", "/v1/status", NULL, "-H", AUTH, "-H", "Origin: http://localhost:5173", NULL);
        cr_assert_null(http_header(h, "Access-Control-Allow-Origin"));
        http_free(h);

        /* An allowed origin reads answers, errors included. */
        h = http(d->webhook_port, "GET", "/v1/status", NULL, "-H", AUTH, "-H", "Origin: https://ui.example", NULL);
        cr_assert_eq(h->status, 200);
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Origin"), "https://ui.example");
        http_free(h);
        h = http(d->webhook_port, "GET", "/v1/status", NULL, "-H", "Origin: https://ui.example", NULL);
        cr_assert_eq(h->status, 401);
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Origin"), "https://ui.example");
        http_free(h);

        /* The webhook's preflight is the reference's, as before. */
        h = http(d->webhook_port, "OPTIONS", "/webhook/kanban/onPush", NULL, "-H", "Origin: http://localhost:5173",
                 NULL);
        cr_assert_eq(h->status, 204);
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Origin"), "http://localhost:5173");
        cr_assert_str_eq(http_header(h, "Access-Control-Allow-Methods"), "GET, POST, OPTIONS");
        http_free(h);
        daemon_free(d);
}

Test(http, no_cors_origins_by_default) {
        Daemon *d = start();
        Http *h;

        h = http(d->webhook_port, "OPTIONS", "/v1/status", NULL, "-H", "Origin: http://localhost", NULL);
        cr_assert_eq(h->status, 204);
        cr_assert_null(http_header(h, "Access-Control-Allow-Origin"));
        http_free(h);
        daemon_free(d);
}

Test(http, bad_cors_origin_fails_start) {
        Daemon *d = daemon_start(&(DaemonOptions) {
                .socket_activate = true, .webhook = true,
                .env = (const char*[]) { "PHOTOND_HTTP_CORS_ORIGINS=https://ok.example https://bad.example/path",
                                         NULL },
        });

        wait_listening(d);
        int status = daemon_wait_exit(d, 10000);
        cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %d", status);
        cr_assert(daemon_log_contains(d, "PHOTOND_HTTP_CORS_ORIGINS"));
        daemon_free(d);
}

/* --- the JSON routes --- */

Test(http, status_is_the_socket_status) {
        Daemon *d = start();
        Http *h = http(d->webhook_port, "GET", "/v1/status", NULL, "-H", AUTH, NULL);
        struct json_object *st = status_of(d);

        cr_assert_eq(h->status, 200);
        cr_assert_str_eq(http_header(h, "Content-Type"), "application/json");
        cr_assert_eq(jint(h->json, "pid"), d->pid);
        cr_assert_str_eq(jstr(h->json, "version"), jstr(st, "data.version"));
        /* Every field of the socket's status, and no other. */
        cr_assert_eq(json_object_object_length(h->json), json_object_object_length(jget(st, "data")));
        json_object_object_foreach(jget(st, "data"), key, val) {
                (void) val;
                cr_assert(jhas(h->json, key), "no %s", key);
        }
        cr_assert(jbool(h->json, "webhookEnabled"));
        json_object_put(st);
        http_free(h);
        daemon_free(d);
}

Test(http, locks_list_and_release) {
        Daemon *d = start();
        Conn *c = conn_open(d);
        struct json_object *o;
        Http *h;

        o = conn_request(c, "l", "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"deploy/prod\",\"lockHolder\":\"ci\","
                         "\"timeout\":60000}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        /* The same objects as list_locks. */
        h = http(d->webhook_port, "GET", "/v1/locks", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        o = conn_request(c, "ll", "{\"type\":\"list_locks\",\"id\":\"ll\"}");
        cr_assert_str_eq(json_object_to_json_string(jget(h->json, "locks")),
                         json_object_to_json_string(jget(o, "data.locks")));
        cr_assert_eq(json_object_array_length(jget(h->json, "locks")), 1);
        json_object_put(o);
        http_free(h);

        /* The D-Bus ReleaseLock: a name with slashes is the rest of the path. */
        h = http(d->webhook_port, "DELETE", "/v1/locks/deploy/prod", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        cr_assert(jbool(h->json, "released"));
        cr_assert_str_eq(jstr(h->json, "lockName"), "deploy/prod");
        http_free(h);
        o = conn_request(c, "q", "{\"type\":\"query_lock\",\"id\":\"q\",\"lockName\":\"deploy/prod\"}");
        cr_assert(jhas(o, "data.holder") && !jget(o, "data.holder"), "%s", json_object_to_json_string(o));
        json_object_put(o);
        expect(http(d->webhook_port, "DELETE", "/v1/locks/deploy/prod", NULL, "-H", AUTH, NULL), 404,
               "No live lock named 'deploy/prod'.");
        cr_assert(daemon_log_contains(d, "Lock 'deploy/prod' released over HTTP."));
        conn_close(c);
        daemon_free(d);
}

Test(http, jobs_list_and_run) {
        Daemon *d = start();
        Conn *c = conn_open(d);
        struct json_object *o;
        Http *h;

        o = conn_request(c, "s", "{\"type\":\"schedule\",\"id\":\"s\",\"photonName\":\"kanban\",\"jobId\":\"nightly\","
                         "\"method\":\"sweep\",\"cron\":\"0 3 * * *\"}");
        cr_assert(jbool(o, "success"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        h = http(d->webhook_port, "GET", "/v1/jobs", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        o = conn_request(c, "lj", "{\"type\":\"list_jobs\",\"id\":\"lj\"}");
        cr_assert_str_eq(json_object_to_json_string(jget(h->json, "jobs")),
                         json_object_to_json_string(jget(o, "data.jobs")));
        cr_assert_eq(json_object_array_length(jget(h->json, "jobs")), 1);
        json_object_put(o);
        http_free(h);

        /* The D-Bus RunJob: the run starts (there is no handler, so it fails, and says so on jobs:kanban). */
        o = conn_request(c, "sub", "{\"type\":\"subscribe\",\"id\":\"sub\",\"channel\":\"jobs:kanban\"}");
        json_object_put(o);
        h = http(d->webhook_port, "POST", "/v1/jobs/nightly/run", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 202, "%s", h->body);
        cr_assert(jbool(h->json, "started"));
        http_free(h);
        for (;;) {
                o = conn_recv(c, 5000);
                cr_assert(o, "no job event");
                if (streq_ptr(jstr(o, "type"), "channel_message"))
                        break;
                json_object_put(o);
        }
        cr_assert_str_eq(jstr(o, "channel"), "jobs:kanban");
        json_object_put(o);
        expect(http(d->webhook_port, "POST", "/v1/jobs/nope/run", NULL, "-H", AUTH, NULL), 404, "No job 'nope'.");
        /* GET is not the action. */
        expect(http(d->webhook_port, "GET", "/v1/jobs/nightly/run", NULL, "-H", AUTH, NULL), 404, NULL);
        conn_close(c);
        daemon_free(d);
}

Test(http, channels_and_publish) {
        Daemon *d = start();
        Conn *sub = conn_open(d), *c = conn_open(d);
        struct json_object *o;
        Http *h;

        json_object_put(conn_request(sub, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"jobs:*\"}"));

        /* Answered as publish: {published, channel, eventId}; subscribers get it as from any publisher. */
        h = http(d->webhook_port, "POST", "/v1/channels/jobs:kanban", "{\"event\":\"deployed\",\"n\":1}", "-H", AUTH,
                 NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        cr_assert(jbool(h->json, "published"));
        cr_assert_str_eq(jstr(h->json, "channel"), "jobs:kanban");
        int64_t id = jint(h->json, "eventId");
        cr_assert_gt(id, 0);
        http_free(h);
        o = conn_expect(sub, 5000);
        cr_assert_str_eq(jstr(o, "type"), "channel_message");
        cr_assert_eq(jint(o, "eventId"), id);
        cr_assert_str_eq(jstr(o, "message.event"), "deployed");
        json_object_put(o);

        /* No body: a publish without a message. */
        expect(http(d->webhook_port, "POST", "/v1/channels/jobs:empty", NULL, "-H", AUTH, NULL), 200, NULL);
        o = conn_expect(sub, 5000);
        cr_assert(!jhas(o, "message"), "%s", json_object_to_json_string(o));
        json_object_put(o);

        /* The list: status' channelList, D-Bus ListChannels with bufferedBytes. */
        h = http(d->webhook_port, "GET", "/v1/channels", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 200, "%s", h->body);
        o = conn_request(c, "st", "{\"type\":\"status\",\"id\":\"st\",\"channelList\":true}");
        cr_assert_eq(json_object_array_length(jget(h->json, "channels")), 3);      /* jobs:*, :kanban, :empty */
        for (size_t i = 0; i < 3; i++) {
                struct json_object *e = json_object_array_get_idx(jget(h->json, "channels"), i);
                cr_assert(jhas(e, "name") && jhas(e, "subscribers") && jhas(e, "bufferedEvents") &&
                          jhas(e, "bufferedBytes") && jhas(e, "lastEventId"), "%s", json_object_to_json_string(e));
        }
        cr_assert_str_eq(jstr(json_object_array_get_idx(jget(h->json, "channels"), 1), "name"), "jobs:empty");
        json_object_put(o);
        http_free(h);

        /* Refusals, with the socket's texts. */
        expect(http(d->webhook_port, "POST", "/v1/channels/a", "{\"a\":", "-H", AUTH, NULL), 400, NULL);
        char *name = keep(malloc(300));
        memset(name, 'n', 299);
        name[299] = '\0';
        expect(http(d->webhook_port, "POST", hdr("/v1/channels/%s", name), "1", "-H", AUTH, NULL), 400,
               "Channel name too long: 299 bytes, at most 256 (PHOTOND_MAX_CHANNEL_NAME_BYTES)");
        char *big = keep(malloc(600 * 1024));
        big[0] = '"';
        memset(big + 1, 'x', 600 * 1024 - 3);
        big[600 * 1024 - 2] = '"';
        big[600 * 1024 - 1] = '\0';
        char *file = hdr("%s/big.json", d->home);
        FILE *f = fopen(file, "we");
        cr_assert(f);
        fputs(big, f);
        fclose(f);
        h = http(d->webhook_port, "POST", "/v1/channels/a", hdr("@%s", file), "-H", AUTH, NULL);
        cr_assert_eq(h->status, 413, "%s", h->body);
        cr_assert(strncmp(jstr(h->json, "error"), "Message too large: 614399 bytes of JSON, at most 524288 "
                          "(PHOTOND_MAX_MESSAGE_BYTES)", 80) == 0, "%s", h->body);
        http_free(h);
        conn_close(sub);
        conn_close(c);
        daemon_free(d);
}

/* --- Server-Sent Events --- */

static Sse* sse_open(int port, const char *query, const char *header) {
        return sse_open_as(port, query, AUTH, header);
}

Test(http, sse_delivers_publishes) {
        Daemon *d = start();
        Conn *c = conn_open(d);
        Sse *s = sse_open(d->webhook_port, "channel=jobs:kanban&channel=alerts:*", NULL);
        int64_t id;

        cr_assert(sse_wait(s, ": photond event stream\n\n", 5000), "no greeting: %s", s->buf);
        /* It is a subscriber like a socket client: status counts its subscriptions. */
        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.subscriptions"), 2);
        json_object_put(st);

        id = socket_publish(c, "jobs:kanban", "{\"event\":\"job-completed\",\"id\":7}");
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(id, "jobs:kanban", "{\"event\":\"job-completed\",\"id\":7}"));
        id = socket_publish(c, "alerts:disk", "\"full\"");
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(id, "alerts:disk", "\"full\""));
        /* Not subscribed: not sent. */
        (void) socket_publish(c, "other", "1");
        /* An HTTP publish too. */
        Http *h = http(d->webhook_port, "POST", "/v1/channels/jobs:kanban", "[1,2]", "-H", AUTH, NULL);
        id = jint(h->json, "eventId");
        http_free(h);
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(id, "jobs:kanban", "[1,2]"));
        cr_assert_null(sse_next(s, 300));
        cr_assert(strstr(s->buf, "\nevent: other\n") == NULL);

        sse_close(s);
        /* The stream's subscriptions go with it. */
        for (uint64_t deadline = mono_ms() + 5000;; usleep(20000)) {
                st = status_of(d);
                int64_t n = jint(st, "data.subscriptions");
                json_object_put(st);
                if (n == 0)
                        break;
                cr_assert_lt(mono_ms(), deadline, "the stream's subscriptions stayed");
        }
        conn_close(c);
        daemon_free(d);
}

Test(http, sse_head_and_refusals) {
        Daemon *d = start();
        const char *args[] = { "--include", "--max-time", "2", "-H", AUTH,
                               hdr("http://127.0.0.1:%d/v1/events?channel=a", d->webhook_port), NULL };
        int fd;
        pid_t pid = curl_spawn(args, &fd);
        char *out = read_all(fd);

        close(fd);
        (void) curl_wait(pid);      /* ends by --max-time */
        cr_assert(strncmp(out, "HTTP/1.1 200 ", 13) == 0, "%s", out);
        cr_assert(strcasestr(out, "\r\nContent-Type: text/event-stream\r\n"), "%s", out);
        cr_assert(strcasestr(out, "\r\nCache-Control: no-store\r\n"), "%s", out);
        cr_assert(strcasestr(out, "\r\nTransfer-Encoding: chunked\r\n"), "%s", out);
        free(out);

        expect(http(d->webhook_port, "GET", "/v1/events", NULL, "-H", AUTH, NULL), 400,
               "Name the channels: /v1/events?channel=A&channel=B:*");
        expect(http(d->webhook_port, "GET", "/v1/events?channel=", NULL, "-H", AUTH, NULL), 400, NULL);
        expect(http(d->webhook_port, "GET", "/v1/events?channel=a", NULL, NULL), 401, NULL);
        daemon_free(d);
}

Test(http, sse_last_event_id_replays) {
        Daemon *d = start();
        Conn *c = conn_open(d);
        int64_t ids[4];
        Sse *s;

        ids[0] = socket_publish(c, "jobs:a", "1");
        ids[1] = socket_publish(c, "jobs:b", "2");
        ids[2] = socket_publish(c, "jobs:a", "3");
        ids[3] = socket_publish(c, "jobs:b", "4");

        /* Header (as a browser reconnects): what came after it, in eventId order over a wildcard, then live. */
        s = sse_open(d->webhook_port, "channel=jobs:*", hdr("Last-Event-ID: %" PRId64, ids[1]));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[2], "jobs:a", "3"));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[3], "jobs:b", "4"));
        int64_t live = socket_publish(c, "jobs:c", "5");
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(live, "jobs:c", "5"));
        sse_close(s);

        /* The query, channel by channel as subscribes with lastEventId would. */
        s = sse_open(d->webhook_port, hdr("channel=jobs:b&channel=jobs:a&lastEventId=%" PRId64, ids[1]), NULL);
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[3], "jobs:b", "4"));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(ids[2], "jobs:a", "3"));
        cr_assert_null(sse_next(s, 300));
        sse_close(s);

        /* The header wins over the query. */
        s = sse_open(d->webhook_port, hdr("channel=jobs:a&lastEventId=%" PRId64, ids[0]),
                     hdr("Last-Event-ID: %" PRId64, ids[2]));
        cr_assert_null(sse_next(s, 300));
        sse_close(s);
        conn_close(c);
        daemon_free(d);
}

Test(http, sse_refresh_needed_as_the_socket_sends_it) {
        Daemon *d = start();
        Conn *c = conn_open(d);
        struct json_object *o;
        int64_t id;
        Sse *s;

        id = socket_publish(c, "jobs:a", "1");

        /* From before the oldest buffered event: refresh_needed, exactly as a subscribe with that lastEventId
         * gets it on the socket. */
        o = conn_request(c, "s", "{\"type\":\"subscribe\",\"id\":\"s\",\"channel\":\"jobs:a\",\"lastEventId\":5}");
        json_object_put(o);
        s = sse_open(d->webhook_port, "channel=jobs:a&lastEventId=5", NULL);
        cr_assert_str_eq(sse_next(s, 5000),
                         "event: refresh_needed\n"
                         "data: {\"type\":\"refresh_needed\",\"id\":\"lastEventId\",\"channel\":\"jobs:a\"}");
        sse_close(s);

        /* Beyond the last eventId issued. */
        s = sse_open(d->webhook_port, "channel=jobs:a", hdr("Last-Event-ID: %" PRId64, id + 1000000));
        cr_assert_str_eq(sse_next(s, 5000),
                         "event: refresh_needed\n"
                         "data: {\"type\":\"refresh_needed\",\"id\":\"lastEventId\",\"channel\":\"jobs:a\"}");
        sse_close(s);

        /* Up to date: nothing. A channel with nothing buffered and lastEventId > 0: refresh_needed. */
        s = sse_open(d->webhook_port, "channel=jobs:a&channel=quiet", hdr("Last-Event-ID: %" PRId64, id));
        cr_assert_str_eq(sse_next(s, 5000),
                         "event: refresh_needed\n"
                         "data: {\"type\":\"refresh_needed\",\"id\":\"lastEventId\",\"channel\":\"quiet\"}");
        cr_assert_null(sse_next(s, 300));
        sse_close(s);

        struct json_object *st = status_of(d);
        cr_assert_eq(jint(st, "data.refreshNeededSent"), 4);     /* the socket's one and the streams' three */
        json_object_put(st);
        conn_close(c);
        daemon_free(d);
}

Test(http, sse_keepalive) {
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, "PHOTOND_SSE_KEEPALIVE_S=1", NULL });
        Sse *s = sse_open(d->webhook_port, "channel=a", NULL);

        cr_assert(sse_wait(s, ": photond event stream\n\n", 5000));
        s->seen = s->len;
        cr_assert(sse_wait(s, ":\n\n", 2500), "no keep-alive: %s", s->buf);
        sse_close(s);
        daemon_free(d);
}

/* --- the status page --- */

/* "'sha256-<base64>'" of the text between the one <tag> of the page and its </tag> (kept). */
static const char* inline_source(const char *page, const char *tag) {
        const char *open = strstr(page, hdr("<%s>", tag)), *close = strstr(page, hdr("</%s>", tag));
        uint8_t md[32];
        unsigned n = 0;
        char *b64;

        cr_assert(open && close && close > open, "no <%s> in the page", tag);
        cr_assert_null(strstr(close + 1, hdr("<%s>", tag)), "a second <%s> in the page", tag);
        open += strlen(tag) + 2;
        cr_assert_eq(EVP_Digest(open, close - open, md, &n, EVP_sha256(), NULL), 1);
        cr_assert_eq(base64_encode(md, n, &b64), 0);
        return hdr("'sha256-%s'", keep(b64));
}

Test(http, page_is_served_without_a_token) {
        Daemon *d = start();
        Http *h = http(d->webhook_port, "GET", "/", NULL, NULL);
        const char *csp;

        cr_assert_eq(h->status, 200, "%s", h->body);
        cr_assert_str_eq(http_header(h, "Content-Type"), "text/html; charset=utf-8");
        cr_assert_str_eq(http_header(h, "X-Content-Type-Options"), "nosniff");
        cr_assert_str_eq(http_header(h, "Cache-Control"), "no-store");
        cr_assert_eq(strlen(h->body), status_page_html_size);
        cr_assert(memcmp(h->body, status_page_html, status_page_html_size) == 0);
        cr_assert(strstr(h->body, "<title>photond status</title>"));

        /* A strict policy: nothing by default, the page's own inline style and script by their hashes (computed
         * at build time: they must be those of the page served), the API on this origin only. */
        csp = http_header(h, "Content-Security-Policy");
        cr_assert_not_null(csp);
        cr_assert_str_eq(csp, status_page_csp);
        cr_assert(strncmp(csp, "default-src 'none'; ", 20) == 0, "%s", csp);
        cr_assert(strstr(csp, hdr("script-src %s;", inline_source(h->body, "script"))), "%s", csp);
        cr_assert(strstr(csp, hdr("style-src %s;", inline_source(h->body, "style"))), "%s", csp);
        cr_assert(strstr(csp, "connect-src 'self';"), "%s", csp);
        cr_assert(strstr(csp, "frame-ancestors 'none'"), "%s", csp);
        cr_assert_null(strstr(csp, "unsafe"), "%s", csp);
        http_free(h);

        /* With no token configured too: the page holds no data (the API it calls answers 403). */
        daemon_free(d);
        d = start_env(NULL);
        expect(http(d->webhook_port, "GET", "/", NULL, NULL), 200, NULL);
        /* Only GET /: anything else there, or elsewhere, is what it was (the webhook endpoint's 404). */
        expect(http(d->webhook_port, "POST", "/", "{}", NULL), 404,
               "Not found. Use /webhook/{photonName}/{method}");
        expect(http(d->webhook_port, "GET", "/index.html", NULL, NULL), 404, NULL);
        expect(http(d->webhook_port, "GET", "/status.js", NULL, NULL), 404, NULL);
        daemon_free(d);
}

/* --- stream tokens (EventSource cannot send a header) --- */

/* A stream token from POST /v1/events/token (kept). */
static const char* stream_token(Daemon *d, int64_t *ret_expires) {
        Http *h = http(d->webhook_port, "POST", "/v1/events/token", NULL, "-H", AUTH, NULL);
        const char *token;

        cr_assert_eq(h->status, 200, "%s", h->body);
        token = keep(strdup(jstr(h->json, "token")));
        if (ret_expires)
                *ret_expires = jint(h->json, "expiresAt");
        http_free(h);
        return token;
}

/* The status of GET /v1/events?query (no Authorization header; a stream is cut after a second), its body in
 * *ret_body (kept) if not NULL. */
static int stream_open_status(Daemon *d, const char *query, const char **ret_body) {
        const char *args[] = { "--include", "--max-time", "1",
                               hdr("http://127.0.0.1:%d/v1/events?%s", d->webhook_port, query), NULL };
        int fd, status = 0;
        pid_t pid = curl_spawn(args, &fd);
        char *out = read_all(fd), *body;

        close(fd);
        (void) curl_wait(pid);      /* a stream ends by --max-time */
        cr_assert(sscanf(out, "HTTP/1.1 %d", &status) == 1, "no answer: %s", out);
        if (ret_body) {
                body = strstr(out, "\r\n\r\n");
                *ret_body = keep(strdup(body ? body + 4 : ""));
        }
        free(out);
        return status;
}

static void expect_stream_refused(Daemon *d, const char *query, const char *error) {
        const char *body;
        struct json_object *o = NULL;

        cr_assert_eq(stream_open_status(d, query, &body), 401, "%s: %s", query, body);
        cr_assert_eq(json_parse(body, strlen(body), &o, NULL), 0, "%s", body);
        cr_assert_str_eq(jstr(o, "error"), error);
        json_object_put(o);
}

#define ERROR_STREAM_TOKEN_INVALID "Invalid stream token: ask for a new one (POST /v1/events/token)"

Test(http, stream_token_is_issued_for_the_api_token_only) {
        Daemon *d = start();
        int64_t expires, now = (int64_t) (now_usec(CLOCK_REALTIME) / 1000);
        const char *token;
        Http *h;

        expect(http(d->webhook_port, "POST", "/v1/events/token", NULL, NULL), 401,
               "Invalid or missing API token: send Authorization: Bearer <token>");
        expect(http(d->webhook_port, "POST", "/v1/events/token", NULL, "-H", "Authorization: Bearer nope", NULL),
               401, NULL);
        /* A stream token does not buy another. */
        token = stream_token(d, &expires);
        expect(http(d->webhook_port, "POST", hdr("/v1/events/token?token=%s", token), NULL, NULL), 401,
               "A stream token (?token=) only opens event streams: send Authorization: Bearer <token>");

        /* "<expiry>.<64 hex>", expiring PHOTOND_SSE_TOKEN_LIFETIME_S (60) from now. */
        cr_assert(strlen(token) > 65 && token[strlen(token) - 65] == '.', "%s", token);
        cr_assert_eq(strspn(token + strlen(token) - 64, "0123456789abcdef"), 64, "%s", token);
        cr_assert(expires >= now + 59000 && expires <= now + 65000, "expiresAt %" PRId64 ", now %" PRId64, expires,
                  now);
        /* Not the API token, and not a constant: the expiry is part of it. */
        cr_assert(!strstr(token, TOKEN));
        usleep(5000);
        cr_assert_str_neq(stream_token(d, NULL), token);

        h = http(d->webhook_port, "POST", "/v1/events/token", NULL, "-H", AUTH, NULL);
        cr_assert_str_eq(http_header(h, "Content-Type"), "application/json");
        http_free(h);

        /* No token configured: 403, as every API route. */
        daemon_free(d);
        d = start_env(NULL);
        expect(http(d->webhook_port, "POST", "/v1/events/token", NULL, "-H", AUTH, NULL), 403, NULL);
        cr_assert_eq(stream_open_status(d, hdr("channel=a&token=%s", token), NULL), 403);
        daemon_free(d);
}

/* curl stands in for a browser's EventSource: no Authorization header, the token in the URL. */
Test(http, stream_token_opens_a_stream) {
        Daemon *d = start();
        Conn *c = conn_open(d);
        const char *token = stream_token(d, NULL);
        int64_t first, id;
        Sse *s;

        first = socket_publish(c, "board:news", "{\"n\":1}");
        s = sse_open_as(d->webhook_port, hdr("channel=board:news&token=%s", token), NULL, NULL);
        cr_assert(sse_wait(s, ": photond event stream\n\n", 5000), "no greeting: %s", s->buf);
        id = socket_publish(c, "board:news", "{\"n\":2}");
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(id, "board:news", "{\"n\":2}"));
        sse_close(s);

        /* Replay as with the header: lastEventId in the query, or Last-Event-ID as a browser reconnecting sends
         * it; the same token, again (it is not used up). */
        s = sse_open_as(d->webhook_port, hdr("channel=board:news&token=%s&lastEventId=%" PRId64, token, first), NULL,
                        NULL);
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(id, "board:news", "{\"n\":2}"));
        sse_close(s);
        s = sse_open_as(d->webhook_port, hdr("channel=board:news&token=%s", token), NULL,
                        hdr("Last-Event-ID: %" PRId64, first));
        cr_assert_str_eq(sse_next(s, 5000), sse_event_text(id, "board:news", "{\"n\":2}"));
        sse_close(s);

        /* A good Authorization header decides on its own; a bad one is not rescued by a good stream token. */
        s = sse_open_as(d->webhook_port, "channel=a&token=garbage", AUTH, NULL);
        cr_assert(sse_wait(s, ": photond event stream\n\n", 5000), "refused: %s", s->buf);
        sse_close(s);
        expect(http(d->webhook_port, "GET", hdr("/v1/events?channel=a&token=%s", token), NULL, "-H",
                    "Authorization: Bearer nope", NULL), 401,
               "Invalid or missing API token: send Authorization: Bearer <token>");
        conn_close(c);
        daemon_free(d);
}

Test(http, stream_token_altered_or_expired_is_refused) {
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, "PHOTOND_SSE_TOKEN_LIFETIME_S=2",
                                                NULL });
        const char *token = stream_token(d, NULL), *dot = strchr(token, '.');
        char *altered;
        uint64_t expiry, deadline;

        cr_assert(dot);
        cr_assert_eq(stream_open_status(d, hdr("channel=a&token=%s", token), NULL), 200);

        /* One hex digit of the MAC changed. */
        altered = keep(strdup(token));
        altered[strlen(altered) - 1] = altered[strlen(altered) - 1] == '0' ? '1' : '0';
        expect_stream_refused(d, hdr("channel=a&token=%s", altered), ERROR_STREAM_TOKEN_INVALID);
        /* A later expiry with the old MAC. */
        cr_assert(sscanf(token, "%" SCNu64, &expiry) == 1);
        expect_stream_refused(d, hdr("channel=a&token=%" PRIu64 "%s", expiry + 3600000, dot),
                              ERROR_STREAM_TOKEN_INVALID);
        /* The same expiry written otherwise. */
        expect_stream_refused(d, hdr("channel=a&token=0%s", token), ERROR_STREAM_TOKEN_INVALID);
        /* Not a token at all; empty; the API token itself. */
        expect_stream_refused(d, "channel=a&token=garbage", ERROR_STREAM_TOKEN_INVALID);
        expect_stream_refused(d, "channel=a&token=", ERROR_STREAM_TOKEN_INVALID);
        expect_stream_refused(d, "channel=a&token=" TOKEN, ERROR_STREAM_TOKEN_INVALID);
        /* Without a token or a header: the API token is asked for. */
        expect_stream_refused(d, "channel=a", "Invalid or missing API token: send Authorization: Bearer <token>");

        /* Expired: refused with its own word (waited for, up to twice its lifetime). */
        deadline = mono_ms() + 5000;
        for (;;) {
                const char *body;
                int status = stream_open_status(d, hdr("channel=a&token=%s", token), &body);

                if (status == 401) {
                        cr_assert(strstr(body, "Stream token expired: ask for a new one (POST /v1/events/token)"),
                                  "%s", body);
                        break;
                }
                cr_assert_eq(status, 200);
                cr_assert_lt(mono_ms(), deadline, "the stream token does not expire");
        }
        /* A new one works. */
        cr_assert_eq(stream_open_status(d, hdr("channel=a&token=%s", stream_token(d, NULL)), NULL), 200);
        daemon_free(d);
}

Test(http, stream_token_refused_on_other_routes) {
        Daemon *d = start();
        const char *token = stream_token(d, NULL);
        static const char *const elsewhere =
                "A stream token (?token=) only opens event streams: send Authorization: Bearer <token>";

        expect(http(d->webhook_port, "GET", hdr("/v1/status?token=%s", token), NULL, NULL), 401, elsewhere);
        expect(http(d->webhook_port, "GET", hdr("/v1/locks?token=%s", token), NULL, NULL), 401, elsewhere);
        expect(http(d->webhook_port, "GET", hdr("/v1/channels?token=%s", token), NULL, NULL), 401, elsewhere);
        expect(http(d->webhook_port, "POST", hdr("/v1/channels/a?token=%s", token), "1", NULL), 401, elsewhere);
        expect(http(d->webhook_port, "DELETE", hdr("/v1/locks/x?token=%s", token), NULL, NULL), 401, elsewhere);
        /* As the Authorization header's token it is nothing either. */
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", hdr("Authorization: Bearer %s", token), NULL),
               401, "Invalid or missing API token: send Authorization: Bearer <token>");
        /* Where it belongs it still works. */
        cr_assert_eq(stream_open_status(d, hdr("channel=a&token=%s", token), NULL), 200);
        daemon_free(d);
}

Test(http, stream_tokens_die_with_a_reload) {
        Daemon *d = start();
        const char *token = stream_token(d, NULL);

        cr_assert_eq(stream_open_status(d, hdr("channel=a&token=%s", token), NULL), 200);
        /* SIGHUP is how a leaked API token is replaced: the stream tokens issued with it go too. */
        cr_assert_eq(kill(d->pid, SIGHUP), 0);
        cr_assert_not_null(daemon_wait_notify(d, "READY=1", 5000));
        expect_stream_refused(d, hdr("channel=a&token=%s", token), ERROR_STREAM_TOKEN_INVALID);
        cr_assert_eq(stream_open_status(d, hdr("channel=a&token=%s", stream_token(d, NULL)), NULL), 200);
        daemon_free(d);
}

static int tcp_connect_from(int port, const char *from, int rcvbuf) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct sockaddr_in src = { .sin_family = AF_INET };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        cr_assert(fd >= 0);
        if (rcvbuf > 0)
                cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
        cr_assert_eq(inet_pton(AF_INET, from, &src.sin_addr), 1);
        cr_assert_eq(bind(fd, (struct sockaddr*) &src, sizeof(src)), 0, "bind %s: %m", from);
        cr_assert_eq(connect(fd, (struct sockaddr*) &sa, sizeof(sa)), 0, "connect: %m");
        return fd;
}

/* Opens a stream on a raw connection from address `from`; returns the fd once the head of the answer is read
 * (asserting its status). */
static int raw_stream(int port, const char *from, int rcvbuf, const char *channel, int status) {
        int fd = tcp_connect_from(port, from, rcvbuf);
        char *req = hdr("GET /v1/events?channel=%s HTTP/1.1\r\nHost: x\r\n" AUTH "\r\n\r\n", channel);
        char buf[1024] = "", line[32];
        struct pollfd p = { .fd = fd, .events = POLLIN };

        cr_assert_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t) strlen(req));
        cr_assert_eq(poll(&p, 1, 5000), 1, "no answer");
        cr_assert_gt(recv(fd, buf, sizeof(buf) - 1, 0), 0);
        snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
        cr_assert(strncmp(buf, line, strlen(line)) == 0, "expected %d: %s", status, buf);
        return fd;
}

Test(http, sse_caps) {
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, "PHOTOND_SSE_MAX_STREAMS=2",
                                                "PHOTOND_SSE_MAX_STREAMS_PER_ADDRESS=1", NULL });
        int a, b;
        Http *h;

        a = raw_stream(d->webhook_port, "127.0.0.1", 0, "a", 200);
        /* The address's share is taken. */
        h = http(d->webhook_port, "GET", "/v1/events?channel=a", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 429, "%s", h->body);
        cr_assert_str_eq(jstr(h->json, "error"),
                         "Too many event streams from this address: at most 1 (PHOTOND_SSE_MAX_STREAMS_PER_ADDRESS)");
        http_free(h);
        /* Another address is not affected, up to the total. */
        b = raw_stream(d->webhook_port, "127.0.0.2", 0, "a", 200);
        close(raw_stream(d->webhook_port, "127.0.0.3", 0, "a", 503));
        /* Everything else is still served. */
        expect(http(d->webhook_port, "GET", "/v1/status", NULL, "-H", AUTH, NULL), 200, NULL);
        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);

        /* A stream that ends makes room. */
        close(a);
        for (uint64_t deadline = mono_ms() + 5000;; usleep(20000)) {
                int fd = tcp_connect_from(d->webhook_port, "127.0.0.1", 0);
                const char *req = "GET /v1/events?channel=a HTTP/1.1\r\nHost: x\r\n" AUTH "\r\n\r\n";
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char buf[64] = "";

                cr_assert_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t) strlen(req));
                cr_assert_eq(poll(&p, 1, 5000), 1);
                cr_assert_gt(recv(fd, buf, sizeof(buf) - 1, 0), 0);
                close(fd);
                if (strncmp(buf, "HTTP/1.1 200 ", 13) == 0)
                        break;
                cr_assert(strncmp(buf, "HTTP/1.1 429 ", 13) == 0, "%s", buf);
                cr_assert_lt(mono_ms(), deadline, "the closed stream still counts");
        }
        close(b);
        daemon_free(d);
}

/* Streams take at most half of the connections not reserved, whatever PHOTOND_SSE_MAX_STREAMS says. */
Test(http, sse_caps_leave_connections_for_the_rest) {
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, "PHOTOND_WEBHOOK_MAX_CONNECTIONS=24",
                                                "PHOTOND_WEBHOOK_RESERVED_CONNECTIONS=4", NULL });
        int fds[10];
        Http *h;

        cr_assert(daemon_log_contains(d, "PHOTOND_SSE_MAX_STREAMS lowered from 128 to 10"));
        for (int i = 0; i < 10; i++)
                fds[i] = raw_stream(d->webhook_port, "127.0.0.1", 0, "a", 200);
        h = http(d->webhook_port, "GET", "/v1/events?channel=a", NULL, "-H", AUTH, NULL);
        cr_assert_eq(h->status, 503, "%s", h->body);
        cr_assert_str_eq(jstr(h->json, "error"), "Too many event streams: at most 10 (PHOTOND_SSE_MAX_STREAMS)");
        cr_assert_str_eq(http_header(h, "Retry-After"), "1");
        http_free(h);
        expect(http(d->webhook_port, "GET", "/healthz", NULL, NULL), 200, NULL);
        for (int i = 0; i < 10; i++)
                close(fds[i]);
        daemon_free(d);
}

/* A reader that stops reading is cut off as a slow socket subscriber is: its queued messages dropped with a
 * refresh_needed, and when it has not read that either, the connection closed; others go on. */
Test(http, sse_slow_reader_is_cut_off) {
        Daemon *d = start_env((const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, "PHOTOND_MAX_WRITE_QUEUE_BYTES=65536",
                                                NULL });
        Conn *c = conn_open(d);
        Sse *fast = sse_open(d->webhook_port, "channel=flood", NULL);
        char *msg = keep(malloc(4096 + 3));
        struct json_object *st;
        int slow;

        cr_assert(sse_wait(fast, ": photond event stream\n\n", 5000));
        slow = raw_stream(d->webhook_port, "127.0.0.1", 4096, "flood", 200);
        msg[0] = '"';
        memset(msg + 1, 'x', 4094);
        msg[4095] = '"';
        msg[4096] = '\0';

        /* Far more than the slow reader's socket buffers and its 64 KiB queue hold. */
        for (int i = 0; i < 2000; i++) {
                (void) socket_publish(c, "flood", msg);
                /* The fast reader keeps up: it has each event before the next is published (draining what had come
                 * was not enough on a loaded machine, where curl itself fell 64 KiB behind). */
                cr_assert(sse_skip_event(fast, 5000), "the fast reader got %d events, then nothing", i);
        }

        for (uint64_t deadline = mono_ms() + 10000;; usleep(50000)) {
                st = status_of(d);
                int64_t n = jint(st, "data.slowConsumerDisconnects");
                json_object_put(st);
                if (n >= 1)
                        break;
                sse_drain(fast);
                cr_assert_lt(mono_ms(), deadline, "the slow reader was not cut off");
        }
        cr_assert(daemon_log_contains(d, "Event stream from 127.0.0.1 is not reading its events, closing it."));

        /* Its connection ends (after what was in flight). */
        char buf[65536];
        ssize_t k;
        uint64_t deadline = mono_ms() + 10000;
        while ((k = recv(slow, buf, sizeof(buf), MSG_DONTWAIT)) != 0) {
                if (k < 0 && errno == ECONNRESET)
                        break;
                cr_assert(k > 0 || errno == EAGAIN, "recv: %m");
                cr_assert_lt(mono_ms(), deadline, "the slow reader's connection stays open");
                if (k < 0)
                        usleep(10000);
        }
        close(slow);

        /* The fast one still gets what comes next. */
        st = status_of(d);
        cr_assert_eq(jint(st, "data.slowConsumerDisconnects"), 1, "the fast reader was cut off too");
        json_object_put(st);
        sse_drain(fast);
        fast->seen = fast->len;
        int64_t id = socket_publish(c, "flood", "\"last\"");
        cr_assert(sse_wait(fast, hdr("id: %" PRId64 "\nevent: flood\ndata: \"last\"\n\n", id), 5000));
        sse_close(fast);
        conn_close(c);
        daemon_free(d);
}

Test(http, shutdown_with_streams_open) {
        Daemon *d = start();
        Sse *s = sse_open(d->webhook_port, "channel=a", NULL);

        cr_assert(sse_wait(s, ": photond event stream\n\n", 5000));
        int status = daemon_signal_and_wait(d, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        /* The stream ends with the daemon. */
        cr_assert(!sse_wait(s, "never", 5000));
        sse_close(s);
        daemon_free(d);
}
