/* SPDX-License-Identifier: MIT */

/* GET /metrics' exposition (photond-metrics.c) without an HTTP server: the control front end's request counts by
 * type and outcome, as control_handle_line() keeps them for a real Manager's requests, and the text written from
 * them and the cores' stats, checked line by line against the format's rules (the integration test runs promtool
 * on a real scrape). */

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fd-util.h"
#include "helpers.h"
#include "metrics.h"
#include "photond-control.h"
#include "photond-manager.h"
#include "photond-metrics.h"
#include "string-util.h"

static char *home;
static Manager *m;
static int fds[2][2] = { { -EBADF, -EBADF }, { -EBADF, -EBADF } };
static Client *c[2];

static void setup(void) {
        home = tmpdir_new();
        setenv("HOME", home, 1);
        setenv("PHOTON_HOME", home, 1);
        unsetenv("PHOTON_DIR");
        unsetenv("PHOTOND_METRICS_AUTH");
        cr_assert_eq(manager_new(&(ManagerConfig) { .bus_mode = BUS_MODE_NONE }, &m), 0);
        for (int i = 0; i < 2; i++) {
                cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds[i]), 0);
                cr_assert_eq(client_new(m, fds[i][0], &c[i]), 0);
        }
}

static void teardown(void) {
        m = manager_free(m);
        for (int i = 0; i < 2; i++)
                fds[i][1] = safe_close(fds[i][1]);
        tmpdir_remove(home);
}

TestSuite(metrics, .init = setup, .fini = teardown);

/* c's answer to its last request, read off its queue: "result", "error", … or NULL for none. */
static char* answer_type(Client *client) {
        struct json_object *o;
        char *t;

        if (client_queued(client) == 0)
                return NULL;
        o = test_pop_json(client);
        t = strdup(jstr(o, "type"));
        json_object_put(o);
        return t;
}

static void expect(unsigned type, RequestOutcome outcome, uint64_t n) {
        const ControlStats *st = &m->control_stats;

        cr_assert_eq(st->requests[type][outcome], n, "%s %s: %" PRIu64 ", not %" PRIu64,
                     control_stats_type_to_string(type), request_outcome_to_string(outcome),
                     st->requests[type][outcome], n);
}

Test(metrics, requests_by_type_and_outcome) {
        const ControlStats *st = &m->control_stats;
        _cleanup_free_ char *t = NULL;

        /* Answered while handled: ok, whatever the result says; error lines are errors. */
        test_request(m, c[0], "{\"type\":\"ping\",\"id\":\"p\"}");
        test_request(m, c[0], "{\"type\":\"publish\",\"id\":\"pub\",\"channel\":\"x\",\"message\":1}");
        test_request(m, c[0], "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"a\",\"sessionId\":\"s1\"}");
        test_request(m, c[0], "{\"type\":\"unlock\",\"id\":\"u\",\"lockName\":\"a\",\"sessionId\":\"s2\"}");
        test_request(m, c[0], "{\"type\":\"status\",\"id\":\"st\"}");
        for (int i = 0; i < 5; i++) {
                t = answer_type(c[0]);
                cr_assert_str_eq(t, i == 0 ? "pong" : "result", "answer %d: %s", i, t);
                t = mfree(t);
        }
        expect(REQUEST_PING, REQUEST_OUTCOME_OK, 1);
        expect(REQUEST_PUBLISH, REQUEST_OUTCOME_OK, 1);        /* the fast path */
        expect(REQUEST_LOCK, REQUEST_OUTCOME_OK, 1);           /* the fast path */
        expect(REQUEST_UNLOCK, REQUEST_OUTCOME_OK, 1);         /* success false: an answer all the same */
        expect(REQUEST_STATUS, REQUEST_OUTCOME_OK, 1);

        test_request(m, c[0], "not json");
        test_request(m, c[0], "{\"type\":\"lock\",\"id\":\"no-name\"}");
        test_request(m, c[0], "{\"type\":\"lock\",\"id\":\"big\",\"lockName\":\"%0300d\"}", 0);
        test_request(m, c[0], "{\"type\":\"invoke_result\",\"id\":\"nobody-asked\",\"success\":true}");
        test_request(m, c[0], "{\"type\":\"reload\",\"id\":\"r\",\"photonPath\":\"/x\"}");
        for (int i = 0; i < 5; i++) {
                t = answer_type(c[0]);
                cr_assert_str_eq(t, "error", "answer %d", i);
                t = mfree(t);
        }
        expect(CONTROL_TYPE_INVALID, REQUEST_OUTCOME_ERROR, 2);        /* not JSON; a member missing */
        expect(REQUEST_LOCK, REQUEST_OUTCOME_ERROR, 1);
        expect(REQUEST_INVOKE_RESULT, REQUEST_OUTCOME_ERROR, 1);
        expect(REQUEST_RELOAD, REQUEST_OUTCOME_ERROR, 1);

        /* Not answered while handled: a lock wait, and a request that gets no answer of its own. */
        test_request(m, c[1], "{\"type\":\"lock\",\"id\":\"w\",\"lockName\":\"a\",\"sessionId\":\"s2\","
                              "\"lockWait\":60000}");
        test_request(m, c[1], "{\"type\":\"prompt_response\",\"id\":\"pr\",\"promptValue\":1}");
        cr_assert_null(answer_type(c[1]));
        expect(REQUEST_LOCK, REQUEST_OUTCOME_PENDING, 1);
        expect(REQUEST_PROMPT_RESPONSE, REQUEST_OUTCOME_PENDING, 1);
        /* Its answer, later, changes no count: the request was counted once. */
        test_request(m, c[0], "{\"type\":\"unlock\",\"id\":\"u2\",\"lockName\":\"a\",\"sessionId\":\"s1\"}");
        t = answer_type(c[1]);
        cr_assert_str_eq(t, "result");
        expect(REQUEST_LOCK, REQUEST_OUTCOME_PENDING, 1);
        expect(REQUEST_LOCK, REQUEST_OUTCOME_OK, 1);
        expect(REQUEST_UNLOCK, REQUEST_OUTCOME_OK, 2);

        /* Every request is timed once. */
        cr_assert_eq(st->duration[REQUEST_LOCK].count, 3);
        cr_assert_eq(st->duration[REQUEST_UNLOCK].count, 2);
        cr_assert_eq(st->duration[CONTROL_TYPE_INVALID].count, 2);
        cr_assert_eq(st->duration[REQUEST_SUBSCRIBE].count, 0);
        cr_assert_eq(m->n_requests, 13);
}

/* ---- the text ---- */

static void fake_daemon_stats(void *userdata, MetricsDaemonStats *ret) {
        *ret = (MetricsDaemonStats) { .clients = 2, .clients_accepted = 5, .state_unsaved = true };
        ret->clients_closed[CLIENT_CLOSE_PEER] = 3;
}

static char* exposition(void) {
        _cleanup_(metrics_endpoint_freep) MetricsEndpoint *e = NULL;
        char *text = NULL;
        size_t size = 0;
        FILE *f;

        cr_assert_eq(metrics_endpoint_new(NULL, &(MetricsConfig) {
                                                  .channels = m->channels,
                                                  .locks = m->locks,
                                                  .scheduler = m->scheduler,
                                                  .control = &m->control_stats,
                                                  .started_at_usec = 1700000000123456,
                                                  .daemon_stats = fake_daemon_stats,
                                          }, &e), 0);
        f = open_memstream(&text, &size);
        cr_assert_not_null(f);
        cr_assert_eq(metrics_endpoint_write(e, f), 0);
        cr_assert_eq(fclose(f), 0);
        return text;
}

static bool has_line(const char *text, const char *line) {
        size_t n = strlen(line);

        for (const char *p = text; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (strncmp(p, line, n) == 0 && p[n] == '\n')
                        return true;
        return false;
}

/* The family a sample's name belongs to: the name, or a histogram's without _bucket, _sum or _count. */
static bool sample_of(const char *sample, size_t len, const char *family, const char *type) {
        size_t n = strlen(family);

        if (len < n || strncmp(sample, family, n) != 0)
                return false;
        if (len == n)
                return true;
        if (!streq(type, "histogram"))
                return false;
        return (len - n == 7 && strncmp(sample + n, "_bucket", 7) == 0) ||
               (len - n == 4 && strncmp(sample + n, "_sum", 4) == 0) ||
               (len - n == 6 && strncmp(sample + n, "_count", 6) == 0);
}

Test(metrics, exposition_follows_the_format) {
        _cleanup_free_ char *text = NULL, *copy = NULL;
        char family[128] = "", type[16] = "", *save = NULL, seen[128][128];
        unsigned n_families = 0, n_samples = 0;

        test_request(m, c[0], "{\"type\":\"ping\",\"id\":\"p\"}");
        test_request(m, c[0], "nope");
        test_request(m, c[0], "{\"type\":\"lock\",\"id\":\"l\",\"lockName\":\"a\"}");
        text = exposition();

        cr_assert(has_line(text, "photond_build_info{version=\"" PHOTOND_VERSION "\"} 1"));
        cr_assert(has_line(text, "photond_requests_total{type=\"ping\",outcome=\"ok\"} 1"));
        cr_assert(has_line(text, "photond_requests_total{type=\"ping\",outcome=\"pending\"} 0"));
        cr_assert(has_line(text, "photond_requests_total{type=\"invalid\",outcome=\"error\"} 1"));
        cr_assert(!strstr(text, "type=\"subscribe\""), "a type never requested does not show");
        cr_assert(has_line(text, "photond_request_duration_seconds_count{type=\"lock\"} 1"));
        cr_assert(has_line(text, "photond_request_duration_seconds_bucket{type=\"lock\",le=\"+Inf\"} 1"));
        cr_assert(has_line(text, "photond_locks_held 1"));
        cr_assert(has_line(text, "photond_locks_acquired_total 1"));
        cr_assert(has_line(text, "photond_lock_fencing_token 1"));
        cr_assert(has_line(text, "photond_connections 2"));
        cr_assert(has_line(text, "photond_connections_accepted_total 5"));
        cr_assert(has_line(text, "photond_connections_closed_total{reason=\"peer\"} 3"));
        cr_assert(has_line(text, "photond_connections_closed_total{reason=\"slowConsumer\"} 0"));
        cr_assert(has_line(text, "photond_state_unsaved 1"));
        cr_assert(has_line(text, "photond_job_lateness_seconds_count 0"));
        cr_assert(has_line(text, "process_start_time_seconds 1700000000.123456"));
        cr_assert(strstr(text, "\nprocess_resident_memory_bytes "));
        cr_assert(strstr(text, "\nprocess_open_fds "));

        /* Each family once, HELP then TYPE, its samples right after; valid names; counters end in _total; every
         * value a number. */
        copy = strdup(text);
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char name[128], *end;
                size_t len;

                if (startswith(line, "# HELP ")) {
                        cr_assert_eq(sscanf(line, "# HELP %127s", name), 1);
                        for (unsigned i = 0; i < n_families; i++)
                                cr_assert_str_neq(seen[i], name, "%s twice", name);
                        cr_assert_lt(n_families, ELEMENTSOF(seen));
                        snprintf(seen[n_families++], sizeof(seen[0]), "%s", name);
                        snprintf(family, sizeof(family), "%s", name);
                        continue;
                }
                if (startswith(line, "# TYPE ")) {
                        cr_assert_eq(sscanf(line, "# TYPE %127s %15s", name, type), 2, "%s", line);
                        cr_assert_str_eq(name, family, "TYPE right after its HELP");
                        cr_assert(metrics_name_is_valid(name), "%s", name);
                        cr_assert(streq(type, "counter") || streq(type, "gauge") || streq(type, "histogram"), "%s",
                                  line);
                        cr_assert(!streq(type, "counter") || endswith(name, "_total"), "%s", line);
                        continue;
                }
                cr_assert(line[0] != '#', "%s", line);
                len = strcspn(line, "{ ");
                cr_assert(sample_of(line, len, family, type), "%s outside its family %s", line, family);
                end = strrchr(line, ' ');
                cr_assert_not_null(end);
                errno = 0;
                (void) strtod(end + 1, &end);
                cr_assert(errno == 0 && *end == '\0', "not a number: %s", line);
                n_samples++;
        }
        cr_assert_gt(n_families, 30, "%u families", n_families);
        cr_assert_gt(n_samples, n_families);
}

Test(metrics, auth_setting) {
        MetricsEndpoint *e = NULL;
        const MetricsConfig config = { .channels = m->channels, .locks = m->locks, .scheduler = m->scheduler };

        cr_assert_eq(setenv("PHOTOND_METRICS_AUTH", "none", 1), 0);
        cr_assert_eq(metrics_endpoint_new(NULL, &config, &e), 0);
        e = metrics_endpoint_free(e);
        cr_assert_eq(setenv("PHOTOND_METRICS_AUTH", "token", 1), 0);
        cr_assert_eq(metrics_endpoint_new(NULL, &config, &e), 0);
        e = metrics_endpoint_free(e);
        cr_assert_eq(setenv("PHOTOND_METRICS_AUTH", "open", 1), 0);
        cr_assert_eq(metrics_endpoint_new(NULL, &config, &e), -EINVAL);
        cr_assert_null(e);
        unsetenv("PHOTOND_METRICS_AUTH");
}
