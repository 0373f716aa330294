/* SPDX-License-Identifier: MIT */

/* The Manager: event loop, control listener, coalesced flushing, lifecycle; it builds the cores and the front ends
 * and wires them. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "event-util.h"
#include "fd-util.h"
#include "json-util.h"
#include "log.h"
#include "metrics.h"
#include "path-util.h"
#include "photond-bus.h"
#include "photond-channel.h"
#include "photond-cluster-channels.h"
#include "photond-cluster.h"
#include "photond-cluster-calls.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-dispatch.h"
#include "photond-fdstore.h"
#include "photond-http-api.h"
#include "photond-http-page.h"
#include "photond-http-sse.h"
#include "photond-http.h"
#include "photond-limits.h"
#include "photond-listen.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-metrics.h"
#include "photond-replay-file.h"
#include "photond-schedule.h"
#include "photond-store.h"
#include "photond-webhook.h"
#include "string-util.h"

#ifndef PHOTOND_VERSION
#define PHOTOND_VERSION "0.0"
#endif

uint64_t manager_now(Manager *m, clockid_t clock) {
        /* Not m->clock: the minimal Managers of tests set only the event. */
        return loop_clock_now(&(LoopClock) { m->event, client_io_time_offset(&m->client_io) }, clock);
}

/* ---- paths ---- */

static int path_join(char **ret, const char *a, const char *b) {
        return asprintf(ret, "%s/%s", a, b) < 0 ? -ENOMEM : 0;
}

static int home_dir(const char **ret) {
        const char *h = getenv("HOME");
        struct passwd *pw;

        if (h && h[0] == '/') {
                *ret = h;
                return 0;
        }
        pw = getpwuid(getuid());
        if (!pw || !pw->pw_dir || pw->pw_dir[0] != '/')
                return -ENXIO;
        *ret = pw->pw_dir;
        return 0;
}

static int manager_setup_paths(Manager *m, const ManagerConfig *config) {
        const char *home, *e;
        int r;

        if (m->system) {
                e = getenv("STATE_DIRECTORY");
                if (e && e[0] == '/')
                        m->base_dir = strndup(e, strcspn(e, ":"));   /* systemd may list several */
                else
                        m->base_dir = strdup("/var/lib/photon");
                if (!m->base_dir)
                        return -ENOMEM;
                m->jobs_base_dir = strdup(m->base_dir);
                m->state_dir = strdup(m->base_dir);
                m->handlers_dir = strdup("/etc/photon/handlers");
                if (config->socket_path) {
                        r = path_resolve(config->socket_path, &m->socket_path);
                        if (r < 0)
                                return r;
                } else
                        m->socket_path = strdup("/run/photon/daemon.sock");
        } else {
                r = home_dir(&home);
                e = getenv("PHOTON_HOME");
                if (e && e[0])
                        r = path_resolve(e, &m->base_dir);
                else if (r >= 0)
                        r = path_join(&m->base_dir, home, ".photon");
                if (r < 0)
                        return r;

                /* The reference keeps job files under PHOTON_DIR (not PHOTON_HOME), defaulting to ~/.photon. */
                e = getenv("PHOTON_DIR");
                if (e && e[0])
                        r = path_resolve(e, &m->jobs_base_dir);
                else if (home_dir(&home) >= 0)
                        r = path_join(&m->jobs_base_dir, home, ".photon");
                else
                        m->jobs_base_dir = strdup(m->base_dir);
                if (r < 0)
                        return r;

                if (asprintf(&m->state_dir, "%s/.data/photond", m->base_dir) < 0)
                        return -ENOMEM;
                r = path_join(&m->handlers_dir, m->base_dir, "handlers");
                if (r < 0)
                        return r;
                if (config->socket_path)
                        r = path_resolve(config->socket_path, &m->socket_path);
                else if (asprintf(&m->socket_path, "%s/.data/daemon.sock", m->base_dir) < 0)
                        r = -ENOMEM;
                if (r < 0)
                        return r;
        }
        if (!m->jobs_base_dir || !m->state_dir || !m->handlers_dir || !m->socket_path)
                return -ENOMEM;

        return 0;
}

/* The pid and owner files live beside the socket, where the reference client looks for them. */
static int manager_setup_side_files(Manager *m) {
        _cleanup_free_ char *dir = NULL;

        dir = strdup(m->socket_path);
        if (!dir)
                return -ENOMEM;
        free(m->pid_path);
        free(m->owner_path);
        m->pid_path = m->owner_path = NULL;
        if (path_join(&m->pid_path, dirname(dir), "daemon.pid") < 0)
                return -ENOMEM;
        return path_join(&m->owner_path, dir, "daemon.owner.json");
}

/* ---- the status object (the control socket's status request, D-Bus GetStatus) ---- */

static uint64_t rss_bytes(void) {
        uint64_t resident, virtual;

        return process_memory(&resident, &virtual) >= 0 ? resident : 0;
}

static unsigned count_sessions(Manager *m) {
        unsigned n = 0;

        /* status is rare; a scan over clients is fine here and keeps the hot path free of bookkeeping. */
        LIST_FOREACH(clients, c, m->clients) {
                bool seen = false;

                if (!c->session_id || c->disconnected)
                        continue;
                for (Client *o = m->clients; o != c && !seen; o = o->clients_next)
                        seen = !o->disconnected && streq_ptr(o->session_id, c->session_id);
                if (!seen)
                        n++;
        }
        return n;
}

/* "stateWrite": whether photond's state can be written; when not, why and since when, so a health check can tell
 * a full disk from a hang. */
static int manager_add_state_write_status(Manager *m, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        r = json_add_bool(o, "ok", !m->state_unsaved);
        if (r >= 0 && m->state_unsaved) {
                r = json_add_string(o, "error", strerror(ERRNO_VALUE(m->state_error)));
                if (r >= 0)
                        r = json_add_int64(o, "since", m->state_unsaved_since);
        }
        if (r < 0)
                return r;
        return json_add(data, "stateWrite", TAKE_PTR(o));
}

int manager_build_status(Manager *m, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *data = NULL, *caps = NULL, *closed = NULL;
        static const char *const capabilities[] = {
                "fencingToken", "lockWait", "providers", "wildcardReplay", "runJob", "execHandlers",
        };
        uint64_t up = now_usec(CLOCK_MONOTONIC) - m->started_mono_usec;
        int r;

        data = json_object_new_object();
        caps = json_object_new_array();
        closed = json_object_new_object();
        if (!data || !caps || !closed)
                return -ENOMEM;
        for (ClientClose i = 0; i < _CLIENT_CLOSE_MAX; i++)
                if ((r = json_add_int64(closed, client_close_to_string(i), (int64_t) m->n_clients_closed[i])) < 0)
                        return r;
        for (size_t i = 0; i < ELEMENTSOF(capabilities); i++)
                if (json_object_array_add(caps, json_object_new_string(capabilities[i])) < 0)
                        return -ENOMEM;

        if ((r = json_add(data, "uptime", json_new_seconds(up))) < 0 ||
            (r = json_add_int64(data, "memoryMB", (int64_t) (rss_bytes() / (1024 * 1024)))) < 0 ||
            (r = json_add_int64(data, "sessions", count_sessions(m))) < 0 ||
            (r = json_add_int64(data, "subscriptions", 0)) < 0 ||
            (r = json_add_int64(data, "photonsLoaded", 0)) < 0 ||
            (r = json_add_string(data, "version", PHOTOND_VERSION)) < 0 ||
            (r = json_add_int64(data, "pid", getpid())) < 0 ||
            (r = json_add_int64(data, "clients", m->n_clients)) < 0 ||
            (r = json_add_int64(data, "channels", channels_count(m->channels))) < 0 ||
            (r = json_add_int64(data, "locks", lock_table_count(m->locks))) < 0 ||
            (r = json_add_int64(data, "jobs", scheduler_count(m->scheduler))) < 0 ||
            (r = json_add_int64(data, "startedAt", (int64_t) (m->started_at_usec / USEC_PER_MSEC))) < 0 ||
            (r = json_add_string(data, "instance", m->system ? "system" : "user")) < 0 ||
            (r = json_add_int64(data, "writeQueueDisconnects",
                                (int64_t) m->n_clients_closed[CLIENT_CLOSE_WRITE_QUEUE])) < 0 ||
            (r = json_add(data, "clientsClosed", TAKE_PTR(closed))) < 0 ||
            (r = client_io_add_status(&m->client_io, data)) < 0 ||
            (r = json_add(data, "capabilities", TAKE_PTR(caps))) < 0)
                return r;

        r = manager_add_state_write_status(m, data);
        if (r < 0)
                return r;

        /* Subsystems add (or overwrite, e.g. "subscriptions", "photonsLoaded") their own fields. */
        if ((r = channels_add_status(m->channels, data)) < 0 ||
            (r = lock_table_add_status(m->locks, data)) < 0 ||
            (r = scheduler_add_status(m->scheduler, data)) < 0 ||
            (r = dispatcher_add_status(m->dispatcher, data)) < 0 ||
            (r = webhook_add_status(m->webhook, data)) < 0 ||
            (r = cluster_add_status(m->cluster, data)) < 0 ||
            (r = cluster_locks_add_status(m->cluster_locks, data)) < 0 ||
            (r = cluster_jobs_add_status(m->cluster_jobs, data)) < 0 ||
            (r = cluster_calls_add_status(m->cluster_calls, data)) < 0)
                return r;

        *ret = TAKE_PTR(data);
        return 0;
}

/* ---- clients and flushing ---- */

void manager_schedule_flush(Manager *m) {
        (void) sd_event_source_set_enabled(m->flush_event_source, SD_EVENT_ONESHOT);
}

void manager_state_changed(Manager *m) {
        m->state_dirty = true;
        m->state_changes++;
        manager_schedule_flush(m);
}

void manager_bus_changed(Manager *m) {
        /* Tested here, not only in bus_changed(): the lock path calls this for every lock taken or freed, and
         * without D-Bus it then costs no call. */
        if (m->bus)
                bus_changed(m->bus);
}

/* ---- what the cores tell the manager (their hooks, filled in by manager_new()) ---- */

static void hook_state_changed(void *userdata) {
        manager_state_changed(userdata);
}

static void hook_counts_changed(void *userdata) {
        manager_bus_changed(userdata);
}

static bool hook_may_write_now(void *userdata) {
        return manager_may_write_now(userdata);
}

/* Cluster mode only: without a cluster URL the channels have no backend. */
static void backend_publish(const char *name, size_t len, const char *message, size_t message_len,
                            Subscriber *publisher, ChannelsPublishDone done, void *done_userdata, void *userdata) {
        ClusterChannels *cc = cluster_get_channels(((Manager*) userdata)->cluster);

        if (!cc) {
                /* Only while the Manager is being built or freed. */
                if (done)
                        done(publisher, -ENOTCONN, "not connected to Redis", 0, done_userdata);
                return;
        }
        cluster_channels_publish(cc, name, len, message, message_len, publisher, done, done_userdata);
}

static void backend_subscriber_gone(Subscriber *s, void *userdata) {
        ClusterChannels *cc = cluster_get_channels(((Manager*) userdata)->cluster);

        if (cc)
                cluster_channels_subscriber_gone(cc, s);
}

static void backend_replay(const char *name, size_t len, int64_t last_event_id, Subscriber *s,
                           ChannelsReplayDone done, void *done_userdata, void *userdata) {
        ClusterChannels *cc = cluster_get_channels(((Manager*) userdata)->cluster);

        if (!cc) {
                done(s, &(const ChannelsReplayed) { .error = -ENOTCONN, .reason = "not connected to Redis" },
                     done_userdata);
                return;
        }
        cluster_channels_replay(cc, name, len, last_event_id, s, done, done_userdata);
}

/* The heartbeat counted the cluster's locks anew: D-Bus' Locks shows that count in cluster mode. */
static void hook_cluster_locks_counted(void *userdata) {
        manager_bus_changed(userdata);
}

static void hook_cluster_changed(bool state, void *userdata) {
        Manager *m = userdata;

        bus_cluster_changed(m->bus, state);
}

/* The node took itself out of the cluster's node index: the stop may end now (manager_flush()). */
static void hook_cluster_left(void *userdata) {
        manager_schedule_flush(userdata);
}

static int hook_claim_occurrence(void *userdata, const char *id, const char *photon, const char *method,
                                 int64_t due_ms, int64_t now_ms, bool catch_up) {
        Manager *m = userdata;

        return cluster_jobs_claim(m->cluster_jobs, id, photon, method, due_ms, now_ms, catch_up);
}

static void hook_run_recorded(void *userdata, const char *photon, const char *method, const char *working_dir,
                              struct json_object *entry) {
        Manager *m = userdata;

        cluster_jobs_record_run(m->cluster_jobs, photon, method, working_dir, entry);
}

static DispatchPeer* hook_find_remote(const char *photon, const char *method, void *userdata) {
        Manager *m = userdata;

        return cluster_calls_find_remote(m->cluster_calls, photon, method);
}

static void hook_provided_changed(const char *photon, bool provided, void *userdata) {
        Manager *m = userdata;

        cluster_calls_provided_changed(m->cluster_calls, photon, provided);
}

static void hook_lock_changed(void *userdata, const char *name, const char *holder, const char *event) {
        Manager *m = userdata;

        bus_send_lock_changed(m->bus, name, holder, event);
}

static void hook_job_finished(void *userdata, const char *id, const char *status, int64_t duration_ms) {
        Manager *m = userdata;

        bus_send_job_finished(m->bus, id, status, duration_ms);
}

/* ---- what the HTTP front end asks (filled in by manager_startup()) ---- */

/* HTTP answers and events that may report a change wait for its write, as socket replies do. */
/* The last webhook request under way ended: a stop that waited for it may end now (manager_flush()). */
static void hook_webhook_idle(void *userdata) {
        Manager *m = userdata;

        if (m->shutting_down)
                manager_schedule_flush(m);
}

static bool hook_http_output_held(void *userdata) {
        Manager *m = userdata;

        return m->state_dirty || manager_output_held(m);
}

static int hook_http_build_status(void *userdata, struct json_object **ret) {
        return manager_build_status(userdata, ret);
}

static void hook_metrics_daemon_stats(void *userdata, MetricsDaemonStats *ret) {
        Manager *m = userdata;

        *ret = (MetricsDaemonStats) {
                .clients = m->n_clients,
                .clients_accepted = m->n_clients_accepted,
                .state_unsaved = m->state_unsaved,
        };
        memcpy(ret->clients_closed, m->n_clients_closed, sizeof(ret->clients_closed));
        if (m->cluster) {
                int64_t n = cluster_nodes_lock_count(cluster_get_nodes(m->cluster));

                ret->cluster_locks_known = n >= 0;
                ret->cluster_locks = (uint64_t) MAX(n, (int64_t) 0);
        }
}

static void hook_flush_needed(void *userdata) {
        manager_schedule_flush(userdata);
}

static bool hook_shutting_down(void *userdata) {
        Manager *m = userdata;

        return m->shutting_down;
}

void manager_client_disconnect(Manager *m, Client *c) {
        if (c->disconnected)
                return;

        log_debug("Client %" PRIu64 " disconnected.", c->serial);
        if (m->idle_event_source)
                m->idle_last_activity_usec = manager_now(m, CLOCK_MONOTONIC);
        /* Subsystems drop their references first, while the client is still whole. */
        channels_subscriber_gone(m->channels, &c->subscriber);
        lock_table_owner_gone(m->locks, &c->lock_waits);
        if (m->lock_backend)
                control_lock_client_gone(m->lock_backend, c);
        dispatcher_peer_gone(m->dispatcher, &c->peer);
        scheduler_waiter_gone(m->scheduler, c);         /* a run_job requester (photond-control-jobs.c) */
        cluster_jobs_waiter_gone(m->cluster_jobs, c);   /* a schedule change waiting for Redis */

        c->disconnected = true;
        client_stop_io(c);
        c->fd = safe_close(c->fd);      /* give the fd back now: it matters when we are at RLIMIT_NOFILE */
        /* A listener paused at the limit may take it at once rather than after the pause. */
        if (m->accept_paused && !m->shutting_down) {
                (void) sd_event_source_set_enabled(m->accept_pause_event_source, SD_EVENT_OFF);
                (void) sd_event_source_set_enabled(m->control_event_source, SD_EVENT_ON);
        }

        /* The memory goes at the next flush, so callers up the stack may still look at c. */
        if (!c->dirty) {
                c->dirty = true;
                LIST_PREPEND(dirty, m->dirty_clients, c);
        }
        manager_schedule_flush(m);
        manager_bus_changed(m);
}

void manager_client_close(Manager *m, Client *c, ClientClose reason) {
        if (c->disconnected)
                return;
        if (reason >= 0 && reason < _CLIENT_CLOSE_MAX)
                m->n_clients_closed[reason]++;
        manager_client_disconnect(m, c);
}

static bool manager_output_pending(Manager *m) {
        /* A webhook call under way at a stop finishes and is answered first (bounded by the stop's timer). */
        if (webhook_busy(m->webhook))
                return true;
        /* Cluster mode: the node's leave is answered first (bounded by the stop's timer). */
        if (cluster_nodes_leaving(cluster_get_nodes(m->cluster)))
                return true;
        LIST_FOREACH(clients, c, m->clients)
                if (c->out_n > 0 && !c->disconnected)
                        return true;
        return false;
}

static void manager_update_status(Manager *m) {
        char status[256];

        snprintf(status, sizeof(status), "STATUS=%u clients, %u channels, %u locks, %u jobs%s%s",
                 m->n_clients, channels_count(m->channels), lock_table_count(m->locks),
                 scheduler_count(m->scheduler), m->state_unsaved ? "; cannot save the state: " : "",
                 m->state_unsaved ? strerror(ERRNO_VALUE(m->state_error)) : "");
        if (streq_ptr(status, m->last_status))
                return;
        free(m->last_status);
        m->last_status = strdup(status);
        (void) sd_notify(false, status);
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        manager_update_status(userdata);
        return 0;
}

/* STATUS= is for humans: at most one update a second, so a connection storm does not become a notification storm
 * (sd_notify() is a blocking send to PID 1). */
static void manager_schedule_status(Manager *m) {
        int enabled = SD_EVENT_OFF;
        int r;

        if (m->shutting_down)
                return;
        if (m->status_event_source &&
            sd_event_source_get_enabled(m->status_event_source, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return;
        r = event_reset_time_relative(m->event, &m->status_event_source, CLOCK_MONOTONIC, USEC_PER_SEC,
                                      USEC_PER_SEC / 10, on_status_timer, m, "status");
        if (r < 0)
                log_debug_errno(r, "Failed to arm the status timer: %m");
}

bool manager_output_held(Manager *m) {
        /* Replies and events wait for the state and job-file writes that cover them: pending job writes leave
         * with the next manager_flush(), a failed state write until one succeeds (for what does not need the
         * state, only until that flush: see manager_output_needs_state()). */
        return m->state_unsaved || scheduler_unsaved(m->scheduler);
}

bool manager_output_needs_state(Manager *m) {
        return m->state_changes != m->request_changes;
}

bool manager_state_unsaved(Manager *m) {
        return m->state_unsaved && !m->shutting_down;
}

/* Nothing this iteration changed must reach the disk first, and the request being served is the last of the
 * batch (its client sent nothing more, no other client is still to be served), so no later request of this batch
 * adds to the same queues, which then leave in one write each. */
bool manager_may_write_now(Manager *m) {
        return !client_io_more_follows(&m->client_io) && !m->state_dirty && !manager_output_held(m) &&
                !m->shutting_down;
}

static int on_state_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->state_dirty = true;
        m->state_retry_due = true;
        return manager_flush(m);
}

/* Group commit: state changes of this iteration reach the disk before any reply that reports them, so nobody hears
 * "acquired" for a lock (or a fencing token) that a crash could forget. When the write fails (disk full, file
 * system read-only) the replies that report changes are held, and whatever their clients are sent after them
 * (a client sees its replies in order); the write is retried each second and with every batch that changes the
 * state again; clients see latency, never a promise photond cannot keep. Requests that change nothing (ping,
 * status, queries) are still answered, so a health check sees "cannot write" (status "stateWrite"), not a hang.
 * Shutdown sends what it has: there is nothing left to protect. */
static bool manager_save_state(Manager *m) {
        int r;

        if (!m->state_dirty)
                return true;
        /* Each attempt may write a whole snapshot: not again for a batch that changed nothing. */
        if (m->state_unsaved && !m->state_retry_due && m->state_changes == m->state_changes_tried &&
            !m->shutting_down)
                return false;
        m->state_retry_due = false;
        r = store_save_state(m->state_file);
        if (r >= 0) {
                channels_state_saved(m->channels);
                m->state_dirty = false;
                m->request_changes = m->state_changes;
                if (m->state_unsaved) {
                        log_notice("Saved the state in %s again; sending the replies held meanwhile.", m->state_dir);
                        m->state_unsaved = false;
                        (void) sd_event_source_set_enabled(m->state_retry_event_source, SD_EVENT_OFF);
                        LIST_FOREACH(clients, c, m->clients)
                                client_release_held(c);
                }
                return true;
        }

        m->state_changes_tried = m->state_changes;
        if (!m->state_unsaved || r != m->state_error)
                log_error_errno(r, "Failed to save the state in %s (state.json, state.journal): %m. Holding the "
                                "replies that report changes until it can be saved (retrying each second); "
                                "other requests are answered.", m->state_dir);
        if (!m->state_unsaved)
                m->state_unsaved_since = now_ms();
        m->state_error = r;
        m->state_unsaved = true;
        r = event_reset_time_relative(m->event, &m->state_retry_event_source, CLOCK_MONOTONIC, USEC_PER_SEC,
                                      USEC_PER_SEC / 10, on_state_retry, m, "state-retry");
        if (r < 0)
                log_error_errno(r, "Failed to arm the state write retry timer: %m");
        return false;
}

int manager_flush(Manager *m) {
        Client *c;
        int r;

        (void) sd_event_source_set_enabled(m->flush_event_source, SD_EVENT_OFF);

        /* The lock operations of the clients just served, to Redis as one script call (cluster mode). */
        cluster_locks_flush(m->cluster_locks);

        /* The job files that this iteration's runs changed, before anyone hears of those runs. */
        scheduler_flush(m->scheduler);

        /* Cluster mode: the iteration's publishes go to Redis now, not after a busy poll of the clients (whose
         * answers wait for Redis'); a batch that cannot be sent answers its publishers in this flush. */
        if (m->cluster)
                cluster_channels_flush(cluster_get_channels(m->cluster));

        /* When it fails, client_flush() sends only what needs no state. */
        (void) manager_save_state(m);

        /* The list was built newest first: flush oldest first, so the pushes a publish queued leave before the
         * publisher's reply, in the reference's order. */
        Client *oldest_first = NULL;
        while ((c = m->dirty_clients)) {
                LIST_REMOVE(dirty, m->dirty_clients, c);
                LIST_PREPEND(dirty, oldest_first, c);
        }
        m->dirty_clients = oldest_first;

        while ((c = m->dirty_clients)) {
                LIST_REMOVE(dirty, m->dirty_clients, c);
                c->dirty = false;

                if (c->disconnected) {
                        client_free(c);
                        continue;
                }
                if (c->close_at_flush) {
                        manager_client_close(m, c, c->close_reason);   /* back on the list, to be freed */
                        continue;
                }
                /* The socket was full a moment ago: EPOLLOUT will say when it takes more. */
                if (c->want_pollout)
                        continue;

                r = client_flush(c);
                if (r < 0) {
                        log_debug_errno(r, "Client %" PRIu64 ": write failed, disconnecting: %m", c->serial);
                        manager_client_close(m, c, client_write_error_reason(c));
                        continue;
                }
                if (client_closing_done(c))
                        manager_client_close(m, c, c->close_reason);
        }

        /* HTTP answers and event streams that waited for these writes. */
        http_server_flushed(m->http);

        /* Not before the shutdown has queued its notices (a stop that keeps connections flushes first). */
        if (m->shutting_down && m->shutdown_event_source && !manager_output_pending(m))
                return sd_event_exit(m->event, m->exit_code);

        manager_schedule_status(m);
        return 0;
}

static int on_flush(sd_event_source *s, void *userdata) {
        return manager_flush(userdata);
}

static int on_accept_resume(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (!m->shutting_down)
                (void) sd_event_source_set_enabled(m->control_event_source, SD_EVENT_ON);
        return 0;
}

static void reject_client(int fd, const char *why, const char *suggestion) {
        char line[512];
        int n;

        n = snprintf(line, sizeof(line), "{\"type\":\"error\",\"id\":\"unknown\",\"error\":\"%s\",\"suggestion\":\"%s\"}\n",
                     why, suggestion);
        (void) !write(fd, line, n);   /* best effort on a fresh non-blocking socket */
        safe_close(fd);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        int r;

        /* Bounded, so a connection storm cannot starve the clients already connected. */
        for (unsigned i = 0; i < 64; i++) {
                Client *c;
                int cfd;

                cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* Level-triggered epoll would wake us at once again: pause instead of spinning,
                                 * until a client leaves or for ACCEPT_PAUSE_MS. At the limit every disconnect
                                 * ends a pause: warned about at most every 10 s. */
                                r = -errno;
                                if (!m->accept_paused &&
                                    ratelimit_below(&m->accept_pause_log, manager_now(m, CLOCK_MONOTONIC)))
                                        log_warning_errno(r, "Cannot accept connections (%m), pausing until a "
                                                          "client leaves or for %" PRIu64 " ms.",
                                                          limits.ACCEPT_PAUSE_MS);
                                else
                                        log_debug_errno(r, "Cannot accept connections (%m), pausing.");
                                m->accept_paused = true;
                                (void) sd_event_source_set_enabled(m->control_event_source, SD_EVENT_OFF);
                                r = event_source_arm_relative(m->accept_pause_event_source,
                                                              limits.ACCEPT_PAUSE_MS * USEC_PER_MSEC);
                                if (r < 0)
                                        log_error_errno(r, "Failed to arm the accept pause timer: %m");
                                return 0;
                        }
                        return log_error_errno(errno, "accept4() failed: %m"), 0;
                }

                m->accept_paused = false;
                m->n_clients_accepted++;

                if (m->n_clients >= limits.MAX_CLIENTS) {
                        const char *suggestion = NULL;
                        char why[192];

                        if (ratelimit_below(&m->refuse_log, manager_now(m, CLOCK_MONOTONIC))) {
                                if (m->refuse_log.suppressed > 0)
                                        log_warning("Refusing a connection: %" PRIu64 " clients connected "
                                                    "(PHOTOND_MAX_CLIENTS); %u more were refused without a log "
                                                    "line.", limits.MAX_CLIENTS, m->refuse_log.suppressed);
                                else
                                        log_warning("Refusing a connection: %" PRIu64 " clients connected "
                                                    "(PHOTOND_MAX_CLIENTS).", limits.MAX_CLIENTS);
                        }
                        limit_error(LIMIT_MAX_CLIENTS, UINT64_MAX, why, sizeof(why), &suggestion);
                        reject_client(cfd, why, suggestion);
                        m->n_clients_closed[CLIENT_CLOSE_REFUSED]++;
                        continue;
                }

                r = client_new(m, cfd, &c);
                if (r < 0) {
                        log_error_errno(r, "Failed to set up a client: %m");
                        safe_close(cfd);
                        m->n_clients_closed[CLIENT_CLOSE_REFUSED]++;
                        continue;
                }
                log_debug("Client %" PRIu64 " connected (pid %d, uid %u).",
                          c->serial, (int) c->ucred.pid, (unsigned) c->ucred.uid);
                manager_bus_changed(m);
        }
        return 0;
}

/* ---- lifecycle ---- */

static int on_shutdown_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (webhook_busy(m->webhook))
                log_notice("Webhook requests still under way after PHOTOND_WEBHOOK_STOP_GRACE_MS (%" PRIu64 " ms): "
                           "exiting, their connections close without an answer.", limits.WEBHOOK_STOP_GRACE_MS);
        else
                log_debug("Shutdown flush bound reached, exiting with output still queued.");
        return sd_event_exit(m->event, m->exit_code);
}

/* keep_clients: systemd stops us (SIGTERM) and keeps connections in its file descriptor store, if it has one for
 * us (photond-fdstore.c): those go on in the next process after a restart, or systemd closes them after a stop.
 * Either way they hear nothing of this process's end; the others get the notice, as without the store. */
static void manager_shutdown(Manager *m, const char *why, bool keep_clients) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(shared_buf_unrefp) SharedBuf *b = NULL;
        int r;

        if (m->shutting_down)
                return;
        m->shutting_down = true;

        log_info("Shutting down (%s).", why);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");

        (void) sd_event_source_set_enabled(m->control_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(m->accept_pause_event_source, SD_EVENT_OFF);

        /* Cluster lock requests under way are answered now: the next process would not know them. */
        if (m->lock_backend)
                LIST_FOREACH(clients, c, m->clients)
                        if (!c->disconnected)
                                control_lock_stop(m->lock_backend, c);

        if (keep_clients)
                (void) fdstore_keep_clients(m);

        /* New HTTP connections wait in the listener's backlog (systemd keeps it); those under way go on. */
        http_server_quiesce(m->http);

        /* One buffer for everyone. */
        o = response_shutdown_new();
        b = o ? shared_buf_new_json_line(o) : NULL;
        if (b)
                LIST_FOREACH(clients, c, m->clients)
                        if (!c->disconnected)
                                (void) client_send(c, b, NULL);

        (void) cluster_nodes_leave(cluster_get_nodes(m->cluster), hook_cluster_left, m);

        /* Webhook calls under way get WEBHOOK_STOP_GRACE_MS to finish and be answered; clients alone, the flush
         * bound. */
        r = sd_event_add_time_relative(m->event, &m->shutdown_event_source, CLOCK_MONOTONIC,
                                       MAX(limits.SHUTDOWN_FLUSH_MS,
                                           webhook_busy(m->webhook) ? limits.WEBHOOK_STOP_GRACE_MS : 0) *
                                       USEC_PER_MSEC, USEC_PER_MSEC, on_shutdown_timeout, m);
        if (r < 0) {
                log_error_errno(r, "Failed to arm the shutdown timer, exiting now: %m");
                (void) sd_event_exit(m->event, m->exit_code);
                return;
        }
        manager_schedule_flush(m);
}

void manager_begin_shutdown(Manager *m, const char *why) {
        manager_shutdown(m, why, false);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        if (si->ssi_signo == SIGHUP) {
                /* RELOADING=1 … READY=1 keeps 'systemctl reload' honest about when the reload is over. */
                (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading webhook secrets");
                log_info("SIGHUP: reloading webhook secrets.");
                if (m->webhook)
                        (void) webhook_reload_secrets(m->webhook);
                if (m->http)
                        (void) http_server_reload_token(m->http);
                (void) sd_notify(false, "READY=1");
                m->last_status = mfree(m->last_status);
                manager_update_status(m);
                return 0;
        }
        /* SIGTERM is how systemd stops us, for a restart too; SIGINT someone at a terminal. */
        if (si->ssi_signo == SIGTERM)
                manager_shutdown(m, "SIGTERM", fdstore_stop_keeps_clients(m));
        else
                manager_begin_shutdown(m, "SIGINT");
        return 0;
}

static bool manager_is_idle(Manager *m) {
        return m->n_clients == 0 && lock_table_count(m->locks) == 0 && scheduler_count(m->scheduler) == 0 &&
               dispatcher_running_calls(m->dispatcher) == 0 &&
               (!m->http_sse || http_sse_stats(m->http_sse)->n_streams == 0);   /* a stream is a subscriber */
}

/* Idle means idle for a whole timeout, counted from the last activity: a disconnect (stamped when it happens) or
 * requests or a busy daemon seen by a check (stamped with the check's time, which errs on the side of staying up).
 * Stamping every request would cost a clock read on the hot path. */
static int on_idle_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now;

        if (sd_event_now(m->event, CLOCK_MONOTONIC, &now) < 0)
                now = now_usec(CLOCK_MONOTONIC);
        if (m->n_requests != m->idle_checked_requests || !manager_is_idle(m)) {
                m->idle_checked_requests = m->n_requests;
                m->idle_last_activity_usec = now;
        }
        if (now >= m->idle_last_activity_usec + m->idle_timeout_usec) {
                manager_begin_shutdown(m, "idle timeout");
                return 0;
        }
        (void) sd_event_source_set_time(s, m->idle_last_activity_usec + m->idle_timeout_usec);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

int manager_new(const ManagerConfig *config, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        BusMode bus_mode;
        const char *e;
        int r;

        m = new0(Manager, 1);
        if (!m)
                return -ENOMEM;
        m->control_fd = -EBADF;
        m->webhook_fd = -EBADF;
        m->client_io = (ClientIO) CLIENT_IO_INIT;
        control_stats_init(&m->control_stats);
        /* status' clientsClosed counts every refusal; the journal gets the first few of each 10 s. */
        m->refuse_log = (RateLimit) { .interval = 10 * USEC_PER_SEC, .burst = 5 };
        m->accept_pause_log = (RateLimit) { .interval = 10 * USEC_PER_SEC, .burst = 1 };
        m->system = config->system;
        m->started_at_usec = now_usec(CLOCK_REALTIME);
        m->started_mono_usec = now_usec(CLOCK_MONOTONIC);

        r = manager_setup_paths(m, config);
        if (r < 0)
                return r;
        r = manager_setup_side_files(m);
        if (r < 0)
                return r;

        r = sd_event_new(&m->event);
        if (r < 0)
                return r;
        (void) sd_event_set_watchdog(m->event, true);
        m->clock = (LoopClock) { m->event, client_io_time_offset(&m->client_io) };

        r = sd_event_add_signal(m->event, NULL, SIGTERM | SD_EVENT_SIGNAL_PROCMASK, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT | SD_EVENT_SIGNAL_PROCMASK, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP | SD_EVENT_SIGNAL_PROCMASK, on_signal, m);
        if (r < 0)
                return r;
        (void) signal(SIGPIPE, SIG_IGN);

        r = sd_event_add_defer(m->event, &m->flush_event_source, on_flush, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(m->flush_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(m->flush_event_source, "flush");
        /* After every other pending source: all requests that arrived together are handled before the one state
         * write and the writes to the clients, which is what makes the group commit a group. */
        (void) sd_event_source_set_priority(m->flush_event_source, SD_EVENT_PRIORITY_IDLE);

        r = client_io_setup(m);
        if (r < 0)
                return r;

        r = sd_event_add_time_relative(m->event, &m->accept_pause_event_source, CLOCK_MONOTONIC,
                                       USEC_PER_SEC, USEC_PER_MSEC, on_accept_resume, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(m->accept_pause_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(m->accept_pause_event_source, "accept-pause");

        e = getenv("PHOTON_DAEMON_IDLE_TIMEOUT_MS");
        if (e) {
                uint64_t ms;
                if (safe_atou64(e, &ms) < 0)
                        log_warning("Ignoring PHOTON_DAEMON_IDLE_TIMEOUT_MS=%s: not a number of milliseconds.", e);
                else
                        m->idle_timeout_usec = ms * USEC_PER_MSEC;
        }

        r = cluster_settings_from_env(m->system, &m->cluster_settings);
        if (r < 0)
                return r;
        m->channels_backend = (ChannelsBackend) {
                .publish = backend_publish,
                .subscriber_gone = backend_subscriber_gone,
                .replay = backend_replay,
                .userdata = m,
        };
        r = channels_new(&(ChannelsHooks) {
                                 .clock = &m->clock,
                                 .state_changed = hook_state_changed,
                                 .counts_changed = hook_counts_changed,
                                 .may_write_now = hook_may_write_now,
                                 .backend = m->cluster_settings.enabled ? &m->channels_backend : NULL,
                                 .userdata = m,
                         }, &m->channels);
        if (r < 0)
                return r;
        if (m->cluster_settings.enabled) {
                const RedisScript *const *scripts;

                r = cluster_jobs_scripts(&scripts);
                if (r < 0)
                        return r;
                /* Connects in the background: an unreachable Redis does not keep photond from starting. */
                r = cluster_new(&(ClusterConfig) {
                                        .event = m->event,
                                        .channels = m->channels,
                                        .settings = &m->cluster_settings,
                                        .changed = hook_cluster_changed,
                                        .locks_counted = hook_cluster_locks_counted,
                                        .userdata = m,
                                        .scripts = scripts,
                                }, &m->cluster);
                if (r < 0)
                        return r;
                /* Every lock request then acts on the locks in Redis; the local table stays, unused by them. */
                r = cluster_locks_new(&(ClusterLocksConfig) {
                                              .event = m->event,
                                              .settings = &m->cluster_settings,
                                      }, &m->cluster_locks);
                if (r < 0)
                        return r;
                m->lock_backend = cluster_locks_backend(m->cluster_locks);
                /* D-Bus and HTTP list the cluster's locks, not the (unused) local table. */
                m->lock_view = (LockView) { .list = control_lock_view_list, .userdata = (void*) m->lock_backend };
        }
        r = lock_table_new(m->event, &(LockTableHooks) {
                                   .clock = &m->clock,
                                   .state_changed = hook_state_changed,
                                   .counts_changed = hook_counts_changed,
                                   .lock_changed = hook_lock_changed,
                                   .userdata = m,
                                   .state_lost = &m->state_lost,
                           }, &m->locks);
        if (r < 0)
                return r;
        r = state_file_new(m->state_dir, m->channels, m->locks, &m->state_file);
        if (r < 0)
                return r;
        r = dispatcher_new(&(DispatcherConfig) {
                                   .event = m->event,
                                   .channels = m->channels,
                                   .handlers_dir = m->handlers_dir,
                           }, &(DispatcherHooks) {
                                   .counts_changed = hook_counts_changed,
                                   .shutting_down = hook_shutting_down,
                                   .find_remote = m->cluster ? hook_find_remote : NULL,
                                   .provided_changed = m->cluster ? hook_provided_changed : NULL,
                                   .userdata = m,
                           }, &m->dispatcher);
        if (r < 0)
                return r;
        if (m->cluster) {
                r = cluster_calls_new(&(ClusterCallsConfig) {
                                              .event = m->event,
                                              .cluster = m->cluster,
                                              .dispatcher = m->dispatcher,
                                      }, &m->cluster_calls);
                if (r < 0)
                        return r;
        }
        r = scheduler_new(&(SchedulerConfig) {
                                  .event = m->event,
                                  .channels = m->channels,
                                  .dispatcher = m->dispatcher,
                                  .jobs_base_dir = m->jobs_base_dir,
                                  .system = m->system,
                          }, &(SchedulerHooks) {
                                  .counts_changed = hook_counts_changed,
                                  .job_finished = hook_job_finished,
                                  .flush_needed = hook_flush_needed,
                                  .shutting_down = hook_shutting_down,
                                  .claim_occurrence = m->cluster ? hook_claim_occurrence : NULL,
                                  .run_recorded = m->cluster ? hook_run_recorded : NULL,
                                  .userdata = m,
                          }, &m->scheduler);
        if (r < 0)
                return r;
        if (m->cluster) {
                r = cluster_jobs_new(&(ClusterJobsConfig) {
                                             .event = m->event,
                                             .scheduler = m->scheduler,
                                             .dispatcher = m->dispatcher,
                                             .commands = cluster_commands(m->cluster),
                                             .settings = &m->cluster_settings,
                                     }, &m->cluster_jobs);
                if (r < 0)
                        return r;
        }

        bus_mode = config->bus_mode == BUS_MODE_AUTO ? (m->system ? BUS_MODE_SYSTEM : BUS_MODE_USER) :
                                                       config->bus_mode;
        if (bus_mode != BUS_MODE_NONE) {
                r = bus_new(m, bus_mode, &m->bus);
                if (r < 0)
                        return r;
        }

        client_line_handler = control_handle_line;
        *ret = TAKE_PTR(m);
        return 0;
}

static void raise_nofile_limit(void) {
        struct rlimit rl;

        /* Every client is an fd; the units set LimitNOFILE= and we use all of it (DECISIONS.md). */
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
                return;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                log_debug_errno(errno, "Failed to raise RLIMIT_NOFILE: %m");
}

/* Clients that would take every file descriptor leave none for the state writes, the handlers or the webhook: a
 * default cap that does not fit the limit is lowered. One an administrator set is kept (the listener pauses at the
 * limit instead). */
static void fit_clients_to_nofile(void) {
        struct rlimit rl;
        uint64_t fit;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
                return;
        fit = limits_clients_for_nofile((uint64_t) rl.rlim_cur);
        if (limits.MAX_CLIENTS <= fit)
                return;
        if (getenv("PHOTOND_MAX_CLIENTS")) {
                log_warning("PHOTOND_MAX_CLIENTS=%" PRIu64 " does not fit RLIMIT_NOFILE=%" PRIu64 " (room for %"
                            PRIu64 " clients): connections beyond the file limit wait until clients leave.",
                            limits.MAX_CLIENTS, (uint64_t) rl.rlim_cur, fit);
                return;
        }
        log_notice("RLIMIT_NOFILE is %" PRIu64 ": accepting at most %" PRIu64 " clients, not %" PRIu64
                   " (raise LimitNOFILE= or set PHOTOND_MAX_CLIENTS).", (uint64_t) rl.rlim_cur, fit,
                   limits.MAX_CLIENTS);
        limits.MAX_CLIENTS = fit;
}

static int write_side_files(Manager *m) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_free_ char *pid = NULL;
        const char *owner;
        int r;

        /* The real @portel/photon client checks both files before it trusts a daemon on this socket. json-c writes
         * the owner file: the socket path may hold any byte a JSON string must escape. */
        o = json_object_new_object();
        if (!o || asprintf(&pid, "%d", (int) getpid()) < 0 ||
            json_add_int64(o, "pid", getpid()) < 0 ||
            json_add_string(o, "socketPath", m->socket_path) < 0 ||
            json_add_int64(o, "claimedAt", now_ms()) < 0)
                return -ENOMEM;
        owner = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!owner)
                return -ENOMEM;

        r = write_file_atomic(m->pid_path, pid, strlen(pid), 0644, false);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", m->pid_path);
        r = write_file_atomic(m->owner_path, owner, strlen(owner), 0644, false);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", m->owner_path);
        return 0;
}

static void remove_side_files(Manager *m) {
        _cleanup_free_ char *text = NULL;
        char mine[32];

        if (!m->pid_path)
                return;
        /* Only ours: a successor may already have replaced them. */
        snprintf(mine, sizeof(mine), "%d", (int) getpid());
        if (read_full_file(m->pid_path, 64, &text, NULL) < 0 || !streq(text, mine))
                return;
        (void) unlink(m->owner_path);
        (void) unlink(m->pid_path);
        if (!m->control_fd_passed && m->control_fd >= 0)
                (void) unlink(m->socket_path);
}

int manager_startup(Manager *m) {
        _cleanup_(listen_fds_done) ListenFds fds = {
                .control_fd = -EBADF,
                .webhook_fd = -EBADF,
                .state_fd = -EBADF,
        };
        const char *bad = NULL;
        int r;

        raise_nofile_limit();

        r = limits_load_from_env(&bad);
        if (r < 0) {
                char var[96];

                snprintf(var, sizeof(var), "PHOTOND_%s", bad);
                return log_error_errno(r, "Invalid %s=%s in the environment: %s.", var, getenv(var) ?: "",
                                       limit_may_be_zero(bad) ? "a decimal number (0: off)" :
                                                                "a limit is a positive decimal number");
        }
        fit_clients_to_nofile();

        r = fdstore_config_from_env(&m->fdstore_max);
        if (r < 0)
                return log_error_errno(r, "Invalid PHOTOND_FDSTORE=%s in the environment: auto, no, or the size of "
                                       "the unit's file descriptor store (FileDescriptorStoreMax=).",
                                       getenv("PHOTOND_FDSTORE"));

        r = listen_fds_collect(&fds);
        if (r < 0)
                return log_error_errno(r, "Failed to take the file descriptors passed by systemd: %m");
        for (char **n = fds.unknown_names; n && *n; n++)
                log_warning("Closed a passed file descriptor with an unexpected name '%s'.", *n);
        /* What the store passed is ours now, and ours alone: a client photond closes must see the close, and a
         * later start must not take the same connections over again. */
        if (fds.store_names)
                fdstore_forget(true, true);

        if (fds.control_fd >= 0) {
                _cleanup_free_ char *path = NULL;

                m->control_fd = TAKE_FD(fds.control_fd);
                m->control_fd_passed = true;
                if (listen_socket_path(m->control_fd, &path) >= 0) {
                        free(m->socket_path);
                        m->socket_path = TAKE_PTR(path);
                        r = manager_setup_side_files(m);
                        if (r < 0)
                                return log_oom();
                }
                log_info("Serving the control socket %s passed by systemd.", m->socket_path);
        } else {
                r = listen_bind_unix(m->socket_path, &m->control_fd);
                if (r == -EADDRINUSE)
                        return log_error_errno(r, "Another daemon is already answering on %s; not starting a second one.",
                                               m->socket_path);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen on %s: %m", m->socket_path);
                log_info("Listening on %s.", m->socket_path);
        }

        if (fds.webhook_fd >= 0)
                m->webhook_fd = TAKE_FD(fds.webhook_fd);

        r = mkdir_parents_and_self(m->state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create the state directory %s: %m", m->state_dir);

        r = store_load_state(m->state_file);
        if (r < 0)
                return log_error_errno(r, "Failed to load state: %m");
        m->state_lost = r > 0;
        /* The buffers the last graceful stop saved, before anything is published; they continue above its mark. */
        (void) replay_file_load(m->state_dir, m->channels);
        m->replay_loaded = true;
        /* The connections the last stop kept, before anything is published: what was queued for them comes first. */
        (void) fdstore_adopt(m, TAKE_FD(fds.state_fd), fds.client_fds, fds.n_client_fds);
        /* A fresh snapshot and journal now, before any client is accepted: a state directory that cannot be
         * written shows at start, and the files are open before the first lock (and before the clients take the
         * file descriptors a snapshot needs). It reserves the next block of eventIds if the clock has passed the
         * saved mark, so the first publish does not wait for the disk. A failure is retried as any other
         * (manager_save_state()). */
        channels_reserve_event_ids(m->channels);
        m->state_dirty = true;
        (void) manager_save_state(m);
        if (m->state_lost) {
                _cleanup_(json_object_putp) struct json_object *msg = json_object_new_object();

                /* The reference announces this on every start; photond only when it really lost locks. */
                if (msg && json_add_string(msg, "event", "locks-reset") >= 0 &&
                    json_add_string(msg, "reason", "state-lost") >= 0 &&
                    json_add_int64(msg, "timestamp", now_ms()) >= 0)
                        (void) channels_publish(m->channels, "system:*", msg, NULL, NULL);
                manager_state_changed(m);
        }

        r = scheduler_load(m->scheduler);
        if (r < 0)
                return log_error_errno(r, "Failed to load scheduled jobs: %m");

        if (m->webhook_fd < 0) {
                r = http_bind_from_env(&m->webhook_fd);
                if (r < 0 && r != -ENOENT)
                        return log_error_errno(r, "Failed to set up the webhook listener: %m");
        }
        if (m->webhook_fd >= 0) {
                r = http_server_new(&(HttpServerConfig) {
                                            .event = m->event,
                                            .started_mono_usec = m->started_mono_usec,
                                            .output_held = hook_http_output_held,
                                            .userdata = m,
                                    }, m->webhook_fd, &m->http);
                m->webhook_fd = -EBADF;   /* taken over (or closed) by http_server_new() */
                if (r < 0)
                        return log_error_errno(r, "Failed to start the HTTP endpoint: %m");
                r = webhook_new(m->http, m->dispatcher, m->channels, &m->webhook);
                if (r < 0)
                        return log_error_errno(r, "Failed to start the webhook endpoint: %m");
                webhook_set_idle_callback(m->webhook, hook_webhook_idle, m);
                r = http_api_new(m->http, &(HttpApiConfig) {
                                         .channels = m->channels,
                                         .locks = m->locks,
                                         .lock_view = m->lock_backend ? &m->lock_view : NULL,
                                         .scheduler = m->scheduler,
                                         .build_status = hook_http_build_status,
                                         .userdata = m,
                                 }, &m->http_api);
                if (r < 0)
                        return r;
                r = http_sse_new(m->http, m->channels, &m->http_sse);
                if (r < 0)
                        return r;
                r = metrics_endpoint_new(m->http, &(MetricsConfig) {
                                                 .channels = m->channels,
                                                 .locks = m->locks,
                                                 .scheduler = m->scheduler,
                                                 .webhook = m->webhook,
                                                 .sse = m->http_sse,
                                                 .control = &m->control_stats,
                                                 .started_at_usec = m->started_at_usec,
                                                 .daemon_stats = hook_metrics_daemon_stats,
                                                 .userdata = m,
                                         }, &m->metrics);
                if (r < 0)
                        return r;
                r = http_page_add_routes(m->http);
                if (r < 0)
                        return r;
        }

        r = bus_start(m->bus);
        if (r < 0)
                return r;

        r = sd_event_add_io(m->event, &m->control_event_source, m->control_fd, EPOLLIN, on_accept, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the control socket: %m");
        (void) sd_event_source_set_description(m->control_event_source, "control-accept");

        r = write_side_files(m);
        if (r < 0)
                return r;

        if (m->idle_timeout_usec > 0) {
                m->idle_last_activity_usec = now_usec(CLOCK_MONOTONIC);
                r = sd_event_add_time_relative(m->event, &m->idle_event_source, CLOCK_MONOTONIC,
                                               m->idle_timeout_usec, MIN(m->idle_timeout_usec / 20, USEC_PER_SEC),
                                               on_idle_check, m);
                if (r < 0)
                        return log_error_errno(r, "Failed to arm the idle timer: %m");
        }

        return 0;
}

static void manager_notify_ready(Manager *m) {
        (void) sd_notify(false, "READY=1");
        manager_update_status(m);
}

void manager_bus_name_settled(Manager *m) {
        if (m->loop_running)
                manager_notify_ready(m);
}

int manager_run(Manager *m) {
        int r;

        /* Clients may connect as soon as the socket listens; READY=1 also promises the bus name is settled. */
        m->loop_running = true;
        if (!bus_name_pending(m->bus))
                manager_notify_ready(m);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return r;
}

Manager* manager_free(Manager *m) {
        Client *c;

        if (!m)
                return NULL;

        remove_side_files(m);

        /* Before the clients leave: the publishes and replays still waiting for Redis are answered ("photond is
         * stopping") while their clients are there. The jobs' and calls' parts first: the answers still to come
         * from the cluster's command connection then find nobody. */
        m->cluster_jobs = cluster_jobs_free(m->cluster_jobs);
        m->cluster_calls = cluster_calls_free(m->cluster_calls);
        m->cluster = cluster_free(m->cluster);
        m->lock_backend = NULL;
        m->cluster_locks = cluster_locks_free(m->cluster_locks);
        cluster_settings_done(&m->cluster_settings);

        /* Subsystems first: they may still refer to clients. */
        /* The front end first: ending its requests lets the routes' pending calls go. */
        webhook_set_idle_callback(m->webhook, NULL, NULL);
        m->http = http_server_free(m->http);
        m->http_api = http_api_free(m->http_api);
        m->http_sse = http_sse_free(m->http_sse);
        m->metrics = metrics_endpoint_free(m->metrics);
        m->webhook = webhook_free(m->webhook);
        m->scheduler = scheduler_free(m->scheduler);

        while ((c = m->clients)) {
                manager_client_disconnect(m, c);
                client_free(c);
        }

        client_io_done(m);

        m->state_file = state_file_free(m->state_file);
        m->dispatcher = dispatcher_free(m->dispatcher);
        m->locks = lock_table_free(m->locks);
        /* Nothing publishes any more: the buffers for the next start (a crash leaves none, see
         * photond-replay-file.c). */
        if (m->replay_loaded)
                (void) replay_file_save(m->state_dir, m->channels);
        m->channels = channels_free(m->channels);

        m->bus = bus_free(m->bus);
        sd_event_source_disable_unref(m->idle_event_source);
        sd_event_source_disable_unref(m->status_event_source);
        sd_event_source_disable_unref(m->shutdown_event_source);
        sd_event_source_disable_unref(m->flush_event_source);
        sd_event_source_disable_unref(m->state_retry_event_source);
        sd_event_source_disable_unref(m->accept_pause_event_source);
        sd_event_source_disable_unref(m->control_event_source);
        safe_close(m->control_fd);
        safe_close(m->webhook_fd);
        sd_event_unref(m->event);

        free(m->last_status);
        free(m->base_dir);
        free(m->jobs_base_dir);
        free(m->state_dir);
        free(m->handlers_dir);
        free(m->socket_path);
        free(m->pid_path);
        free(m->owner_path);
        return mfree(m);
}
