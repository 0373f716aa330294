/* SPDX-License-Identifier: MIT */

/* The D-Bus admin interface org.photond.Daemon1, laid out like timesyncd-bus.c: getters, methods, the vtable, then
 * the connection. The lists mirror the socket protocol's list_locks/list_jobs exactly: both are built from the
 * same JSON the subsystems produce, so the two views cannot drift apart. */

#include <errno.h>
#include <grp.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "json-util.h"
#include "log.h"
#include "photond-bus.h"
#include "photond-channel.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-schedule.h"

#define BUS_NAME "org.photond.Daemon1"
#define BUS_PATH "/org/photond/Daemon1"
#define BUS_INTERFACE "org.photond.Daemon1"
#define BUS_ERROR_NO_SUCH_LOCK BUS_INTERFACE ".Error.NoSuchLock"
#define BUS_ERROR_NO_SUCH_JOB BUS_INTERFACE ".Error.NoSuchJob"
#define BUS_ERROR_INVALID_ARGS BUS_INTERFACE ".Error.InvalidArgs"
#define BUS_ERROR_ACCESS_DENIED BUS_INTERFACE ".Error.AccessDenied"
#define BUS_ERROR_JOB_RUNNING BUS_INTERFACE ".Error.JobRunning"
#define BUS_ERROR_LIMIT_EXCEEDED BUS_INTERFACE ".Error.LimitExceeded"

int manager_build_status(Manager *m, struct json_object **ret);

static const char* jstr0(struct json_object *o, const char *key) {
        return json_get_string(o, key) ?: "";
}

static int64_t jint0(struct json_object *o, const char *key) {
        int64_t v;

        return json_get_int64(o, key, false, &v) < 0 ? 0 : v;
}

/* ---- property getters ---- */

static int property_get_count(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        uint32_t n = 0;

        if (streq(property, "Clients"))
                n = m->n_clients;
        else if (streq(property, "Channels"))
                n = channels_count(m->channels);
        else if (streq(property, "Locks"))
                n = lock_table_count(m->locks);
        else if (streq(property, "Jobs"))
                n = scheduler_count(m->scheduler);
        else if (streq(property, "Subscriptions"))
                n = channels_subscribed_count(m->channels);
        return sd_bus_message_append(reply, "u", n);
}

static int property_get_started_at(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        return sd_bus_message_append(reply, "t", m->started_at_usec / USEC_PER_MSEC);
}

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PHOTOND_VERSION);
}

static int property_get_webhook_enabled(sd_bus *bus, const char *path, const char *interface, const char *property,
                                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        return sd_bus_message_append(reply, "b", m->webhook != NULL);
}

/* ---- methods ---- */

/* On the system bus the admin methods belong to root, the daemon's own user and the members of its group; the
 * policy file says the same to dbus-daemon, this is the second lock on the door. The user bus is trusted. */
static int check_admin(Manager *m, sd_bus_message *message, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const gid_t *gids;
        uid_t uid;
        gid_t gid;
        int r, n;

        if (m->bus_mode != BUS_MODE_SYSTEM)
                return 0;

        r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID |
                                      SD_BUS_CREDS_SUPPLEMENTARY_GIDS | SD_BUS_CREDS_AUGMENT, &creds);
        if (r < 0)
                return r;
        if (sd_bus_creds_get_euid(creds, &uid) >= 0 && (uid == 0 || uid == geteuid()))
                return 0;
        if (sd_bus_creds_get_egid(creds, &gid) >= 0 && gid == getegid())
                return 0;
        n = sd_bus_creds_get_supplementary_gids(creds, &gids);
        for (int i = 0; i < n; i++)
                if (gids[i] == getegid())
                        return 0;
        return sd_bus_error_set(error, BUS_ERROR_ACCESS_DENIED,
                                "Only root and the photon group may change photond's state.");
}

static int method_list_locks(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) struct json_object *locks = NULL;
        Manager *m = userdata;
        int r;

        r = lock_table_list(m->locks, &locks);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssxxt)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(locks); i++) {
                struct json_object *l = json_object_array_get_idx(locks, i);

                r = sd_bus_message_append(reply, "(ssxxt)", jstr0(l, "name"), jstr0(l, "holder"),
                                          jint0(l, "acquiredAt"), jint0(l, "expiresAt"),
                                          (uint64_t) jint0(l, "fencingToken"));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_list_jobs(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) struct json_object *jobs = NULL;
        Manager *m = userdata;
        int r;

        r = scheduler_list(m->scheduler, &jobs);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sssssxxus)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(jobs); i++) {
                struct json_object *j = json_object_array_get_idx(jobs, i);

                r = sd_bus_message_append(reply, "(sssssxxus)", jstr0(j, "id"), jstr0(j, "photonName"),
                                          jstr0(j, "method"), jstr0(j, "cron"), jstr0(j, "lastStatus"),
                                          jint0(j, "nextRun"), jint0(j, "lastRun"), (uint32_t) jint0(j, "runCount"),
                                          jstr0(j, "lastError"));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_list_channels(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) struct json_object *channels = NULL;
        Manager *m = userdata;
        int r;

        r = channels_list(m->channels, &channels);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(suux)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(channels); i++) {
                struct json_object *c = json_object_array_get_idx(channels, i);

                r = sd_bus_message_append(reply, "(suux)", jstr0(c, "name"), (uint32_t) jint0(c, "subscribers"),
                                          (uint32_t) jint0(c, "bufferedEvents"), jint0(c, "lastEventId"));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int append_json_variant(sd_bus_message *reply, struct json_object *v) {
        int r;

        switch (json_object_get_type(v)) {
        case json_type_boolean:
                return sd_bus_message_append(reply, "v", "b", json_object_get_boolean(v));
        case json_type_int:
                return sd_bus_message_append(reply, "v", "x", json_object_get_int64(v));
        case json_type_double:
                return sd_bus_message_append(reply, "v", "d", json_object_get_double(v));
        case json_type_string:
                return sd_bus_message_append(reply, "v", "s", json_object_get_string(v));
        case json_type_array:
                /* Arrays of strings (capabilities) stay typed; anything else travels as JSON text. */
                r = sd_bus_message_open_container(reply, 'v', "as");
                if (r < 0)
                        return r;
                r = sd_bus_message_open_container(reply, 'a', "s");
                if (r < 0)
                        return r;
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                        struct json_object *e = json_object_array_get_idx(v, i);
                        r = sd_bus_message_append(reply, "s", json_object_is_type(e, json_type_string) ?
                                                  json_object_get_string(e) :
                                                  json_object_to_json_string_ext(e, JSON_FORMAT_FLAGS));
                        if (r < 0)
                                return r;
                }
                r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
                return sd_bus_message_close_container(reply);
        default:
                return sd_bus_message_append(reply, "v", "s", json_object_to_json_string_ext(v, JSON_FORMAT_FLAGS));
        }
}

static int method_get_status(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) struct json_object *status = NULL;
        Manager *m = userdata;
        int r;

        r = manager_build_status(m, &status);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        json_object_object_foreach(status, key, val) {
                r = sd_bus_message_open_container(reply, 'e', "sv");
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "s", key);
                if (r < 0)
                        return r;
                r = append_json_variant(reply, val);
                if (r < 0)
                        return r;
                r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_release_lock(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name;
        int r;

        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;
        r = check_admin(m, message, error);
        if (r < 0)
                return r;
        if ((!name || !name[0]))
                return sd_bus_error_set(error, BUS_ERROR_INVALID_ARGS, "The lock name must not be empty.");

        r = lock_table_force_release(m->locks, name);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_LOCK, "No live lock named '%s'.", name);
        if (r < 0)
                return r;
        log_info("Lock '%s' released over D-Bus.", name);
        return sd_bus_reply_method_return(message, NULL);
}

static int method_run_job(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *id;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        r = check_admin(m, message, error);
        if (r < 0)
                return r;
        r = scheduler_run_job(m->scheduler, id);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_JOB, "No job '%s'.", id);
        if (r == -EBUSY)
                return sd_bus_error_setf(error, BUS_ERROR_JOB_RUNNING, "Job '%s' is running already.", id);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_unschedule(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *id;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        r = check_admin(m, message, error);
        if (r < 0)
                return r;
        r = scheduler_unschedule(m->scheduler, id);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_JOB, "No job '%s'.", id);
        if (r < 0)
                return r;
        log_info("Job '%s' unscheduled over D-Bus.", id);
        return sd_bus_reply_method_return(message, NULL);
}

static int method_publish(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(json_object_putp) struct json_object *msg = NULL;
        const char *channel, *json, *jerr = NULL, *limit;
        Manager *m = userdata;
        uint64_t event_id = 0;
        char text[128];
        int r;

        r = sd_bus_message_read(message, "ss", &channel, &json);
        if (r < 0)
                return r;
        r = check_admin(m, message, error);
        if (r < 0)
                return r;
        if ((!channel || !channel[0]))
                return sd_bus_error_set(error, BUS_ERROR_INVALID_ARGS, "The channel name must not be empty.");
        if (json_parse(json, strlen(json), &msg, &jerr) < 0)
                return sd_bus_error_setf(error, BUS_ERROR_INVALID_ARGS, "The message is not valid JSON: %s",
                                         jerr ?: "syntax error");

        r = channels_publish(m->channels, channel, msg, NULL, &event_id);
        /* The limits answer as on the socket (same text), under one name a client can test for. */
        limit = channels_limit_error(r, text, sizeof(text));
        if (limit)
                return sd_bus_error_set(error, BUS_ERROR_LIMIT_EXCEEDED, limit);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, "t", event_id);
}

/* ---- vtable ---- */

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),

        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("StartedAt", "t", property_get_started_at, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Clients", "u", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Channels", "u", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Subscriptions", "u", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Locks", "u", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Jobs", "u", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("WebhookEnabled", "b", property_get_webhook_enabled, 0, SD_BUS_VTABLE_PROPERTY_CONST),

        SD_BUS_METHOD_WITH_ARGS("ListLocks",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssxxt)", locks),
                                method_list_locks,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListJobs",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(sssssxxus)", jobs),
                                method_list_jobs,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListChannels",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(suux)", channels),
                                method_list_channels,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetStatus",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a{sv}", status),
                                method_get_status,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        /* Admin methods check the caller themselves (check_admin), so sd-bus's CAP_SYS_ADMIN default is off. */
        SD_BUS_METHOD_WITH_ARGS("ReleaseLock",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_NO_RESULT,
                                method_release_lock,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RunJob",
                                SD_BUS_ARGS("s", id),
                                SD_BUS_NO_RESULT,
                                method_run_job,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Unschedule",
                                SD_BUS_ARGS("s", id),
                                SD_BUS_NO_RESULT,
                                method_unschedule,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Publish",
                                SD_BUS_ARGS("s", channel, "s", json),
                                SD_BUS_RESULT("t", event_id),
                                method_publish,
                                SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_SIGNAL_WITH_ARGS("JobFinished", SD_BUS_ARGS("s", id, "s", status, "x", duration_ms), 0),
        SD_BUS_SIGNAL_WITH_ARGS("LockChanged", SD_BUS_ARGS("s", name, "s", holder, "s", event), 0),

        SD_BUS_VTABLE_END
};

/* ---- signals and change announcements ---- */

void bus_send_lock_changed(Manager *m, const char *name, const char *holder, const char *event) {
        if (!m->bus)
                return;
        (void) sd_bus_emit_signal(m->bus, BUS_PATH, BUS_INTERFACE, "LockChanged", "sss", name, holder ?: "", event);
}

void bus_send_job_finished(Manager *m, const char *id, const char *status, int64_t duration_ms) {
        if (!m->bus)
                return;
        (void) sd_bus_emit_signal(m->bus, BUS_PATH, BUS_INTERFACE, "JobFinished", "ssx", id, status, duration_ms);
}

/* Channels that only hold buffered events go when the last one leaves the replay window, and nothing else
 * happens then that would announce it; so the expiry timer follows the oldest buffered event while there is one.
 * A second of slack lets sd-event fire it once a second at most under a steady stream of publishes, instead of
 * once per event. */
#define BUS_EXPIRY_ACCURACY_USEC USEC_PER_SEC

static void bus_arm_expiry(Manager *m) {
        uint64_t when;

        if (channels_next_expiry(m->channels, &when) <= 0) {
                (void) sd_event_source_set_enabled(m->bus_expiry_event_source, SD_EVENT_OFF);
                return;
        }
        if (sd_event_source_set_time(m->bus_expiry_event_source, when * USEC_PER_MSEC) < 0 ||
            sd_event_source_set_enabled(m->bus_expiry_event_source, SD_EVENT_ONESHOT) < 0)
                log_warning("Failed to arm the channel expiry timer; expired channels are announced late.");
}

void manager_bus_flush_changes(Manager *m) {
        /* channels_count() drops expired events and the channels left empty; that changes none of the others. */
        uint32_t now[_BUS_COUNTED_MAX] = {
                [BUS_COUNTED_CLIENTS] = m->n_clients,
                [BUS_COUNTED_CHANNELS] = channels_count(m->channels),
                [BUS_COUNTED_SUBSCRIPTIONS] = channels_subscribed_count(m->channels),
                [BUS_COUNTED_LOCKS] = lock_table_count(m->locks),
                [BUS_COUNTED_JOBS] = scheduler_count(m->scheduler),
        };
        static const char *const names[_BUS_COUNTED_MAX] = {
                [BUS_COUNTED_CLIENTS] = "Clients",
                [BUS_COUNTED_CHANNELS] = "Channels",
                [BUS_COUNTED_SUBSCRIPTIONS] = "Subscriptions",
                [BUS_COUNTED_LOCKS] = "Locks",
                [BUS_COUNTED_JOBS] = "Jobs",
        };
        const char *changed[_BUS_COUNTED_MAX + 1];
        size_t n = 0;

        if (!m->bus)
                return;
        bus_arm_expiry(m);
        for (size_t i = 0; i < _BUS_COUNTED_MAX; i++)
                if (now[i] != m->bus_announced[i]) {
                        changed[n++] = names[i];
                        m->bus_announced[i] = now[i];
                }
        if (n == 0)
                return;
        changed[n] = NULL;
        (void) sd_bus_emit_properties_changed_strv(m->bus, BUS_PATH, BUS_INTERFACE, (char**) changed);
}

static int on_bus_changed(sd_event_source *s, void *userdata) {
        manager_bus_flush_changes(userdata);
        return 0;
}

static int on_bus_expiry(sd_event_source *s, uint64_t usec, void *userdata) {
        manager_bus_flush_changes(userdata);
        return 0;
}

/* ---- connection ---- */

static int on_name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Manager *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (e)
                log_warning("Could not own the bus name " BUS_NAME " (%s); the D-Bus interface stays unnamed.",
                            e->message ?: e->name);
        else
                log_debug("Acquired the bus name " BUS_NAME ".");
        manager_bus_name_settled(m);
        return 0;
}

int manager_connect_bus(Manager *m) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const char *which;
        int r;

        if (m->bus_mode == BUS_MODE_NONE)
                return 0;

        which = m->bus_mode == BUS_MODE_SYSTEM ? "system" : "user";
        r = m->bus_mode == BUS_MODE_SYSTEM ? sd_bus_open_system(&bus) : sd_bus_open_user(&bus);
        if (r < 0) {
                log_warning_errno(r, "Cannot connect to the %s bus, continuing without D-Bus: %m", which);
                return 0;
        }

        r = sd_bus_add_object_vtable(bus, NULL, BUS_PATH, BUS_INTERFACE, manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the D-Bus object: %m");

        r = sd_bus_attach_event(bus, m->event, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");

        /* Asynchronous, so the loop never waits on the bus; READY=1 waits for the answer instead. */
        r = sd_bus_request_name_async(bus, NULL, BUS_NAME, 0, on_name_acquired, m);
        if (r < 0) {
                log_warning_errno(r, "Failed to request the bus name " BUS_NAME ", continuing without D-Bus: %m");
                return 0;
        }

        r = sd_event_add_defer(m->event, &m->bus_changed_event_source, on_bus_changed, m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up property change announcements: %m");
        (void) sd_event_source_set_enabled(m->bus_changed_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(m->bus_changed_event_source, "bus-changed");

        r = sd_event_add_time(m->event, &m->bus_expiry_event_source, CLOCK_MONOTONIC, 0, BUS_EXPIRY_ACCURACY_USEC,
                              on_bus_expiry, m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the channel expiry timer: %m");
        (void) sd_event_source_set_enabled(m->bus_expiry_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(m->bus_expiry_event_source, "bus-channel-expiry");

        m->bus = TAKE_PTR(bus);
        m->bus_name_pending = true;
        log_debug("Connected to the %s bus.", which);
        return 0;
}
