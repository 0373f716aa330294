/* SPDX-License-Identifier: MIT */

/* GET /metrics: Prometheus' text exposition (format 0.0.4), written at each scrape from the counters each core and
 * front end keeps (channels_get_stats(), lock_table_get_stats(), scheduler_get_stats(), webhook_get_stats(),
 * http_server_stats(), http_sse_stats(), the control front end's ControlStats) and what only the Manager knows
 * (MetricsDaemonStats, through its callback). Nothing is kept here between scrapes, and the hot paths pay only
 * for their counters: a scrape reads them, no JSON in between. Names follow Prometheus' rules: a photond_ prefix,
 * base units, _total for counters; the process' own are the standard process collector's. docs/operating.md
 * lists them all; a name or label changed here changes it there. */

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "metrics.h"
#include "photond-channel.h"
#include "photond-control.h"
#include "photond-http-sse.h"
#include "photond-http.h"
#include "photond-lock.h"
#include "photond-metrics.h"
#include "photond-schedule.h"
#include "photond-webhook.h"
#include "string-util.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define AUTH_ENV "PHOTOND_METRICS_AUTH"

struct MetricsEndpoint {
        HttpServer *http;
        MetricsConfig config;
};

/* ---- writing ---- */

#define LABELS(...) ((const char *const[]) { __VA_ARGS__, NULL })

static void counter(FILE *f, const char *name, const char *help, uint64_t value) {
        metrics_family(f, name, "counter", help);
        metrics_sample_u64(f, name, NULL, value);
}

static void gauge(FILE *f, const char *name, const char *help, uint64_t value) {
        metrics_family(f, name, "gauge", help);
        metrics_sample_u64(f, name, NULL, value);
}

static void write_requests(FILE *f, const ControlStats *st) {
        /* A type shows once it has been requested: 39 types with three outcomes and a histogram each would be
         * some 700 lines of zeros. */
        metrics_family(f, "photond_requests_total", "counter",
                       "Control socket requests handled, by type and by how they were answered when their handler "
                       "returned.");
        for (unsigned t = 0; t <= CONTROL_TYPE_INVALID; t++) {
                if (st->duration[t].count == 0)
                        continue;
                for (RequestOutcome o = 0; o < _REQUEST_OUTCOME_MAX; o++)
                        metrics_sample_u64(f, "photond_requests_total",
                                           LABELS("type", control_stats_type_to_string(t),
                                                  "outcome", request_outcome_to_string(o)),
                                           st->requests[t][o]);
        }

        metrics_family(f, "photond_request_duration_seconds", "histogram",
                       "Time from a control socket request line being handled to its handler returning, by type.");
        for (unsigned t = 0; t <= CONTROL_TYPE_INVALID; t++)
                if (st->duration[t].count > 0)
                        metrics_histogram(f, "photond_request_duration_seconds",
                                          LABELS("type", control_stats_type_to_string(t)), &st->duration[t]);
}

static void write_daemon(FILE *f, const MetricsDaemonStats *d) {
        gauge(f, "photond_connections", "Control socket connections open.", d->clients);
        counter(f, "photond_connections_accepted_total",
                "Control socket connections accepted, those refused at once (reason \"refused\") included.",
                d->clients_accepted);
        metrics_family(f, "photond_connections_closed_total", "counter",
                       "Control socket connections photond closed or saw closed, by reason (status "
                       "clientsClosed).");
        for (ClientClose i = 0; i < _CLIENT_CLOSE_MAX; i++)
                metrics_sample_u64(f, "photond_connections_closed_total",
                                   LABELS("reason", client_close_to_string(i)), d->clients_closed[i]);
        gauge(f, "photond_state_unsaved", "1 while the last write of the state failed (status stateWrite).",
              d->state_unsaved);
        if (d->cluster_locks_known)
                gauge(f, "photond_cluster_locks_held",
                      "Cluster mode: the cluster's live locks in Redis, as the last heartbeat counted them.",
                      d->cluster_locks);
}

static void write_channels(FILE *f, Channels *channels) {
        ChannelsStats s;

        channels_get_stats(channels, &s);
        gauge(f, "photond_channels", "Channel keys in use (with subscribers or buffered events).", s.channels);
        gauge(f, "photond_channels_subscribed", "Channel keys with at least one subscriber.", s.subscribed);
        gauge(f, "photond_subscriptions",
              "Subscriptions: subscribers (connections, SSE streams) times their keys.", s.subscriptions);
        gauge(f, "photond_replay_buffered_events", "Events held in the channels' replay buffers.",
              s.buffered_events);
        gauge(f, "photond_replay_buffered_bytes", "Bytes held in the channels' replay buffers.",
              s.buffered_bytes);
        counter(f, "photond_messages_published_total", "Events published, by clients and by photond itself.",
                s.published);
        counter(f, "photond_messages_delivered_total", "Events queued to a subscriber by a publish's fan-out.",
                s.delivered);
        counter(f, "photond_messages_dropped_total", "Events a subscriber lost: a full queue or a failed write.",
                s.dropped);
        counter(f, "photond_refresh_needed_sent_total", "refresh_needed notices sent.", s.refresh_sent);
        counter(f, "photond_slow_consumer_disconnects_total",
                "Subscribers cut off by the slow-consumer policy (connections and SSE streams).",
                s.slow_disconnects);
}

static void write_locks(FILE *f, LockTable *locks) {
        LockTableStats s;

        lock_table_get_stats(locks, &s);
        gauge(f, "photond_locks_held", "Locks held.", s.held);
        counter(f, "photond_locks_acquired_total", "Lock acquisitions, each with a new fencing token.",
                s.acquired);
        counter(f, "photond_locks_expired_total", "Locks that ran out before their holder released them.",
                s.expired);
        gauge(f, "photond_lock_waiters", "Lock requests waiting for a lock (lockWait).", s.waiters);
        gauge(f, "photond_lock_fencing_token", "The last fencing token issued.", s.last_token);
}

static void write_jobs(FILE *f, Scheduler *scheduler) {
        SchedulerStats s;

        scheduler_get_stats(scheduler, &s);
        gauge(f, "photond_jobs", "Scheduled jobs.", s.jobs);
        gauge(f, "photond_jobs_running", "Job runs going on.", s.running);
        counter(f, "photond_jobs_fired_total", "Job runs started by their timer, catch-up runs included.",
                s.fired);
        counter(f, "photond_jobs_run_now_total", "Job runs started on request (run_job, RunJob, the HTTP API).",
                s.run_now);
        counter(f, "photond_jobs_succeeded_total", "Job runs that succeeded.", s.succeeded);
        counter(f, "photond_jobs_failed_total", "Job runs that failed, or could not start.", s.failed);
        counter(f, "photond_jobs_skipped_total", "Job runs not started: due while the job's last run went on.",
                s.skipped);
        metrics_family(f, "photond_job_lateness_seconds", "histogram",
                       "How long after its due time a job's timer run started (catch-up runs aside).");
        metrics_histogram(f, "photond_job_lateness_seconds", NULL, s.lateness);
}

static void write_webhook(FILE *f, Webhook *webhook) {
        WebhookStats s;

        webhook_get_stats(webhook, &s);
        metrics_family(f, "photond_webhook_requests_total", "counter",
                       "Requests of the webhook route (every path no other route takes) answered, by HTTP status "
                       "and the signature scheme that authenticated them.");
        for (size_t i = 0; i < s.n_answers; i++) {
                char status[16];

                snprintf(status, sizeof(status), "%u", s.answers[i].status);
                metrics_sample_u64(f, "photond_webhook_requests_total",
                                   LABELS("status", status,
                                          "scheme", webhook_scheme_to_string(s.answers[i].scheme)),
                                   s.answers[i].n);
        }
        counter(f, "photond_webhook_calls_abandoned_total",
                "Webhook calls whose client went away before the answer.", s.abandoned);
}

static void write_http(FILE *f, HttpServer *http, HttpSse *sse) {
        const HttpStats *s = http_server_stats(http);

        gauge(f, "photond_http_connections", "HTTP connections open.", s->n_connections);
        counter(f, "photond_http_requests_total", "HTTP request heads received, whatever became of them.",
                s->n_requests);
        metrics_family(f, "photond_http_refused_total", "counter",
                       "HTTP connections and requests the front end refused or cut off before a route answered, by "
                       "reason.");
        metrics_sample_u64(f, "photond_http_refused_total", LABELS("reason", "tooManyConnections"),
                           s->n_too_many_connections);
        metrics_sample_u64(f, "photond_http_refused_total", LABELS("reason", "evicted"), s->n_evicted);
        metrics_sample_u64(f, "photond_http_refused_total", LABELS("reason", "headTimeout"), s->n_head_timeout);
        metrics_sample_u64(f, "photond_http_refused_total", LABELS("reason", "badFraming"), s->n_bad_framing);
        metrics_sample_u64(f, "photond_http_refused_total", LABELS("reason", "sourceNotAllowed"),
                           s->n_source_not_allowed);
        metrics_sample_u64(f, "photond_http_refused_total", LABELS("reason", "unauthorized"), s->n_unauthorized);
        metrics_sample_u64(f, "photond_http_refused_total", LABELS("reason", "tokenNotConfigured"),
                           s->n_token_not_configured);

        if (!sse)
                return;
        const HttpSseStats *e = http_sse_stats(sse);
        gauge(f, "photond_sse_streams", "Server-Sent Events streams open (GET /v1/events).", e->n_streams);
        counter(f, "photond_sse_streams_opened_total", "Server-Sent Events streams opened.", e->n_opened);
        counter(f, "photond_sse_streams_refused_total",
                "Server-Sent Events streams refused at a cap (PHOTOND_SSE_MAX_STREAMS and per address).",
                e->n_refused);
        counter(f, "photond_sse_slow_disconnects_total",
                "Server-Sent Events streams cut off by the slow-consumer policy.", e->n_slow_disconnects);
}

int metrics_endpoint_write(MetricsEndpoint *e, FILE *f) {
        MetricsDaemonStats d = {};

        assert(e);
        assert(f);

        metrics_family(f, "photond_build_info", "gauge", "Always 1; the labels say which photond this is.");
        metrics_sample(f, "photond_build_info", LABELS("version", PHOTOND_VERSION), 1);

        if (e->config.daemon_stats)
                e->config.daemon_stats(e->config.userdata, &d);
        write_daemon(f, &d);
        if (e->config.control)
                write_requests(f, e->config.control);
        write_channels(f, e->config.channels);
        write_locks(f, e->config.locks);
        write_jobs(f, e->config.scheduler);
        if (e->config.webhook)
                write_webhook(f, e->config.webhook);
        if (e->http)
                write_http(f, e->http, e->config.sse);
        return metrics_process(f, e->config.started_at_usec);
}

/* ---- the route ---- */

static int on_metrics(HttpRequest *req, void *userdata) {
        MetricsEndpoint *e = userdata;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;
        r = metrics_endpoint_write(e, f);
        if (fclose(f) != 0 || r < 0)
                return -ENOMEM;        /* the only way a memory stream fails */
        return http_respond_text(req, MHD_HTTP_OK, CONTENT_TYPE, TAKE_PTR(text), size);
}

int metrics_endpoint_new(HttpServer *http, const MetricsConfig *config, MetricsEndpoint **ret) {
        _cleanup_(metrics_endpoint_freep) MetricsEndpoint *e = NULL;
        const char *v = getenv(AUTH_ENV);
        HttpAuth auth;
        int r;

        assert(config);
        assert(config->channels && config->locks && config->scheduler);
        assert(ret);

        /* Prometheus can send the token (authorization: credentials_file), but many scrapers cannot. */
        if (!v || !v[0] || streq(v, "token"))
                auth = HTTP_AUTH_TOKEN;
        else if (streq(v, "none"))
                auth = HTTP_AUTH_NONE;
        else
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid %s=%s: expected \"token\" or \"none\".",
                                       AUTH_ENV, v);

        e = new0(MetricsEndpoint, 1);
        if (!e)
                return log_oom();
        *e = (MetricsEndpoint) {
                .http = http,
                .config = *config,
        };

        if (http) {
                r = http_server_add_route(http, &(HttpRoute) {
                                                  .method = "GET",
                                                  .pattern = "/metrics",
                                                  .auth = auth,
                                                  .complete = on_metrics,
                                                  .userdata = e,
                                          });
                if (r < 0)
                        return log_error_errno(r, "Failed to add the route GET /metrics: %m");
                if (auth == HTTP_AUTH_NONE)
                        log_notice("GET /metrics is served without the API token (%s=none).", AUTH_ENV);
        }

        *ret = TAKE_PTR(e);
        return 0;
}

MetricsEndpoint* metrics_endpoint_free(MetricsEndpoint *e) {
        return mfree(e);
}
