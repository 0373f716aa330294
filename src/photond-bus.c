/* SPDX-License-Identifier: MIT */

/* The D-Bus admin interface org.photond.Daemon1, laid out like timesyncd-bus.c: getters, methods, the vtable, then
 * the connection. The lists mirror the socket protocol's list_locks/list_jobs exactly: both are built from the
 * same JSON the subsystems produce, so the two views cannot drift apart. */

#include <assert.h>
#include <errno.h>
#include <grp.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "event-util.h"
#include "json-util.h"
#include "log.h"
#include "photond-bus.h"
#include "photond-channel.h"
#include "photond-cluster.h"
#include "photond-lock.h"
#include "photond-lock-view.h"
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

/* The D-Bus properties that are counts and announced with PropertiesChanged when they change. */
typedef enum BusCounted {
        BUS_COUNTED_CLIENTS,
        BUS_COUNTED_CHANNELS,
        BUS_COUNTED_SUBSCRIPTIONS,
        BUS_COUNTED_LOCKS,
        BUS_COUNTED_JOBS,
        _BUS_COUNTED_MAX,
        _BUS_COUNTED_INVALID = -EINVAL,
} BusCounted;

struct Bus {
        Manager *manager;
        BusMode mode;                   /* BUS_MODE_USER or BUS_MODE_SYSTEM */
        sd_bus *conn;                   /* NULL while the bus is away */
        sd_event_source *changed_event_source;
        sd_event_source *expiry_event_source;   /* the oldest buffered event expires */
        uint32_t announced[_BUS_COUNTED_MAX];   /* the counted properties as last announced */
        bool name_pending;              /* READY=1 waits for the answer to the name request */
        bool up;                        /* the connection got as far as the name request's answer */
        bool retrying;                  /* connected by a retry, not at start */
        sd_event_source *reconnect_event_source;        /* the next attempt while the bus is away */
        uint64_t reconnect_usec;                        /* the back-off before that attempt */
        sd_bus_message *admin_allowed;  /* the admin call now answered after its check */
};

static const char *const bus_mode_table[_BUS_MODE_MAX] = {
        [BUS_MODE_AUTO] = "auto",
        [BUS_MODE_USER] = "user",
        [BUS_MODE_SYSTEM] = "system",
        [BUS_MODE_NONE] = "none",
};

const char* bus_mode_to_string(BusMode m) {
        if (m < 0 || m >= _BUS_MODE_MAX)
                return NULL;
        return bus_mode_table[m];
}

BusMode bus_mode_from_string(const char *s) {
        for (BusMode m = 0; s && m < _BUS_MODE_MAX; m++)
                if (streq(bus_mode_table[m], s))
                        return m;
        return _BUS_MODE_INVALID;
}

/* A list at its cap can be larger than a D-Bus message may be: dbus-daemon drops a connection that sends one
 * (it lost us the bus, and every client of it, for a ListLocks of 65536 locks with long names: 86 MB). The
 * specification allows arrays of 64 MiB; the system bus' default max_message_size is 32 MiB. Beyond that a list
 * is refused with LimitExceeded, and photonctl or the socket, which have no such limit, list it. The estimate
 * errs high: every struct and string padded to its worst. */
#define BUS_LIST_MAX_BYTES (64U * 1024U * 1024U)
#define BUS_LIST_MAX_BYTES_SYSTEM (32U * 1024U * 1024U)

static size_t bus_list_max(Bus *b) {
        return b->mode == BUS_MODE_SYSTEM ? BUS_LIST_MAX_BYTES_SYSTEM : BUS_LIST_MAX_BYTES;
}

static size_t bus_string_size(const char *s) {
        return 4 + strlen(s) + 1 + 3;
}

static int bus_list_too_large(size_t max, sd_bus_error *error, const char *what, const char *instead) {
        return sd_bus_error_setf(error, BUS_ERROR_LIMIT_EXCEEDED,
                                 "The %s are more than a D-Bus message may hold (%zu bytes); use %s instead.",
                                 what, max, instead);
}

#define LOCKS_INSTEAD "'photonctl locks' (or list_locks on the socket)"

/* ---- property getters ---- */

/* Locks: the table's; in cluster mode the cluster's, as the last heartbeat counted them in Redis (a property is
 * answered at once: it cannot wait for Redis; ListLocks asks it). 0 until the first heartbeat. */
static uint32_t bus_lock_count(Manager *m) {
        if (m->cluster)
                return (uint32_t) MIN(MAX(cluster_nodes_lock_count(cluster_get_nodes(m->cluster)), (int64_t) 0),
                                      (int64_t) UINT32_MAX);
        return lock_table_count(m->locks);
}

static int property_get_count(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        Manager *m = b->manager;
        uint32_t n = 0;

        if (streq(property, "Clients"))
                n = m->n_clients;
        else if (streq(property, "Channels"))
                n = channels_count(m->channels);
        else if (streq(property, "Locks"))
                n = bus_lock_count(m);
        else if (streq(property, "Jobs"))
                n = scheduler_count(m->scheduler);
        else if (streq(property, "Subscriptions"))
                n = channels_subscribed_count(m->channels);
        return sd_bus_message_append(reply, "u", n);
}

static int property_get_started_at(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;

        return sd_bus_message_append(reply, "t", b->manager->started_at_usec / USEC_PER_MSEC);
}

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PHOTOND_VERSION);
}

static int property_get_webhook_enabled(sd_bus *bus, const char *path, const char *interface, const char *property,
                                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;

        return sd_bus_message_append(reply, "b", b->manager->webhook != NULL);
}

/* Cluster mode (photond-cluster-nodes.c): "" and no nodes on a single node. */
static int property_get_cluster_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        ClusterNodes *n = cluster_get_nodes(b->manager->cluster);

        return sd_bus_message_append(reply, "s", n ? cluster_state_to_string(cluster_nodes_state(n, NULL)) : "");
}

static int property_get_cluster_since(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        ClusterNodes *n = cluster_get_nodes(b->manager->cluster);
        uint64_t since = 0;

        if (n)
                (void) cluster_nodes_state(n, &since);
        return sd_bus_message_append(reply, "t", since / USEC_PER_MSEC);
}

static int property_get_cluster_nodes(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        ClusterNodes *n = cluster_get_nodes(b->manager->cluster);
        const char *id;
        int64_t seen;
        bool self;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(sxb)");
        if (r < 0)
                return r;
        for (size_t i = 0; cluster_nodes_get(n, i, &id, &seen, &self); i++) {
                r = sd_bus_message_append(reply, "(sxb)", id, seen, self);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

/* ---- methods ---- */

/* On the system bus the admin methods belong to root, the daemon's own user and the members of its group; the
 * policy file says the same to dbus-daemon, this is the second lock on the door. The user bus is trusted.
 *
 * Messages from dbus-daemon carry no credentials, and sd_bus_query_sender_creds() would fetch them with a
 * synchronous GetConnectionCredentials call from inside the event loop. So the check asks the bus driver
 * asynchronously, holds a reference on the method call meanwhile, and calls the method's handler once more when
 * the answer allows it; the handler finds its call in b->admin_allowed then. */

typedef struct AdminCheck {
        Bus *bus;
        sd_bus_message *call;
        sd_bus_message_handler_t handler;
} AdminCheck;

static void admin_check_free(void *userdata) {
        AdminCheck *c = userdata;

        sd_bus_message_unref(c->call);
        free(c);
}

static bool gid_is_ours(gid_t gid) {
        return gid == getegid();
}

/* Decides from a GetConnectionCredentials answer: > 0 allowed, 0 not allowed, < 0 the answer is unusable.
 * UnixUserID comes from the kernel (the socket's peer credentials), so it is taken as it is. So do the groups in
 * UnixGroupIDs, which the bus sends where the kernel tells it the peer's groups (SO_PEERGROUPS); without them the
 * groups are read from /proc/ProcessID, trusted only while that process still runs as UnixUserID (a pid reused by
 * another user's process cannot lend its groups). */
static int admin_creds_allowed(sd_bus_message *reply) {
        const uint32_t *groups = NULL;
        bool have_uid = false, have_groups = false;
        uint32_t uid = 0, pid = 0;
        size_t size = 0;
        int r;

        if (sd_bus_message_is_method_error(reply, NULL))
                return -sd_bus_message_get_errno(reply) ?: -EIO;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key;

                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "UnixUserID")) {
                        r = sd_bus_message_read(reply, "v", "u", &uid);
                        have_uid = r >= 0;
                } else if (streq(key, "ProcessID"))
                        r = sd_bus_message_read(reply, "v", "u", &pid);
                else if (streq(key, "UnixGroupIDs")) {
                        r = sd_bus_message_enter_container(reply, 'v', "au");
                        if (r < 0)
                                return r;
                        r = sd_bus_message_read_array(reply, 'u', (const void**) &groups, &size);
                        if (r < 0)
                                return r;
                        have_groups = true;
                        r = sd_bus_message_exit_container(reply);
                } else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        if (!have_uid)
                return -EPROTO;

        if (uid == 0 || uid == geteuid())
                return 1;

        if (have_groups) {
                for (size_t i = 0; i < size / sizeof(uint32_t); i++)
                        if (gid_is_ours(groups[i]))
                                return 1;
                return 0;
        }

        if (pid > 0) {
                _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
                const gid_t *gids;
                uid_t euid;
                gid_t egid;
                int n;

                if (sd_bus_creds_new_from_pid(&creds, pid, SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID |
                                              SD_BUS_CREDS_SUPPLEMENTARY_GIDS) < 0)
                        return 0;
                if (sd_bus_creds_get_euid(creds, &euid) < 0 || euid != uid)
                        return 0;
                if (sd_bus_creds_get_egid(creds, &egid) >= 0 && gid_is_ours(egid))
                        return 1;
                n = sd_bus_creds_get_supplementary_gids(creds, &gids);
                for (int i = 0; i < n; i++)
                        if (gid_is_ours(gids[i]))
                                return 1;
        }
        return 0;
}

static int on_admin_creds(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        AdminCheck *c = userdata;
        Bus *b = c->bus;
        int r;

        r = admin_creds_allowed(reply);
        if (r < 0) {
                log_debug_errno(r, "Could not learn who called %s over D-Bus, refusing: %m",
                                sd_bus_message_get_member(c->call));
                (void) sd_bus_reply_method_errorf(c->call, BUS_ERROR_ACCESS_DENIED,
                                                  "Could not verify the caller's credentials.");
                return 0;
        }
        if (r == 0) {
                (void) sd_bus_reply_method_errorf(c->call, BUS_ERROR_ACCESS_DENIED,
                                                  "Only root and the photon group may change photond's state.");
                return 0;
        }

        r = sd_bus_message_rewind(c->call, true);
        if (r >= 0) {
                b->admin_allowed = c->call;
                r = c->handler(c->call, b, &error);
                b->admin_allowed = NULL;
        }
        /* What sd-bus does with a handler's result when it called the handler itself. */
        if (r < 0 || sd_bus_error_is_set(&error))
                (void) sd_bus_reply_method_errno(c->call, r, &error);
        return 0;
}

/* Returns 1 when the caller may go on now, 0 when the call is answered later (the handler then returns 1, which
 * tells sd-bus it took the call over), < 0 on failure. */
static int check_admin(Bus *b, sd_bus_message *message, sd_bus_message_handler_t handler, sd_bus_error *error) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        const char *sender;
        AdminCheck *c;
        int r;

        if (b->mode != BUS_MODE_SYSTEM || message == b->admin_allowed)
                return 1;

        sender = sd_bus_message_get_sender(message);
        if (!sender)
                return sd_bus_error_set(error, BUS_ERROR_ACCESS_DENIED, "The caller has no bus name to check.");

        c = new0(AdminCheck, 1);
        if (!c)
                return -ENOMEM;
        *c = (AdminCheck) { .bus = b, .handler = handler };

        r = sd_bus_call_method_async(sd_bus_message_get_bus(message), &slot, "org.freedesktop.DBus",
                                     "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionCredentials",
                                     on_admin_creds, c, "s", sender);
        if (r < 0) {
                free(c);
                return r;
        }
        c->call = sd_bus_message_ref(message);
        /* The bus owns the pending call from here on, and frees c with it: after the answer, or when it closes. */
        (void) sd_bus_slot_set_destroy_callback(slot, admin_check_free);
        r = sd_bus_slot_set_floating(slot, true);
        if (r < 0)
                return r;
        return 0;
}

/* A list reply being filled from a core's foreach: the message, and its size so far against what a D-Bus message
 * may hold (bus_list_max()). */
typedef struct ListReply {
        sd_bus_message *reply;
        size_t size, max;
} ListReply;

/* -E2BIG when the entry of size bytes would not fit. */
static int list_reply_account(ListReply *l, size_t size) {
        l->size += size;
        return l->size > l->max ? -E2BIG : 0;
}

static int list_lock(const LockInfo *info, void *userdata) {
        ListReply *l = userdata;

        if (list_reply_account(l, 7 + bus_string_size(info->name) + bus_string_size(info->holder) + 7 + 3 * 8) < 0)
                return -E2BIG;
        return sd_bus_message_append(l->reply, "(ssxxt)", info->name, info->holder, info->acquired_at,
                                     info->expires_at, info->fencing_token);
}

static int list_job(const JobInfo *info, void *userdata) {
        ListReply *l = userdata;

        if (list_reply_account(l, 7 + bus_string_size(info->id) + bus_string_size(info->photon) +
                                  bus_string_size(info->method) + bus_string_size(info->cron) +
                                  bus_string_size(info->last_status) + 7 + 2 * 8 + 4 +
                                  bus_string_size(info->last_error)) < 0)
                return -E2BIG;
        return sd_bus_message_append(l->reply, "(sssssxxus)", info->id, info->photon, info->method, info->cron,
                                     info->last_status, info->next_run, info->last_run, (uint32_t) info->run_count,
                                     info->last_error);
}

static int list_channel(const ChannelInfo *info, void *userdata) {
        ListReply *l = userdata;

        if (list_reply_account(l, 7 + bus_string_size(info->name) + 2 * 4 + 4 + 8) < 0)
                return -E2BIG;
        return sd_bus_message_append(l->reply, "(suux)", info->name, (uint32_t) info->subscribers,
                                     (uint32_t) info->buffered_events, (int64_t) info->last_event_id);
}

/* Answers call with the array of signature that foreach fills (the cores' typed iterators, no JSON between), at
 * most max bytes; a longer one sets error (LimitExceeded) and returns its errno. */
static int list_send(sd_bus_message *call, size_t max, sd_bus_error *error, const char *signature,
                     int (*foreach)(void *ctx, ListReply *l), void *ctx, const char *what, const char *instead) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        ListReply l = { .max = max };
        int r;

        r = sd_bus_message_new_method_return(call, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', signature);
        if (r < 0)
                return r;
        l.reply = reply;
        r = foreach(ctx, &l);
        if (r == -E2BIG)
                return bus_list_too_large(max, error, what, instead);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_list(sd_bus_message *message, Bus *b, sd_bus_error *error, const char *signature,
                       int (*foreach)(void *ctx, ListReply *l), const char *what, const char *instead) {
        return list_send(message, bus_list_max(b), error, signature, foreach, b->manager, what, instead);
}

static int foreach_lock(void *ctx, ListReply *l) {
        return lock_table_foreach(((Manager *) ctx)->locks, list_lock, l);
}

static int foreach_job(void *ctx, ListReply *l) {
        return scheduler_foreach(((Manager *) ctx)->scheduler, list_job, l);
}

static int foreach_channel(void *ctx, ListReply *l) {
        return channels_foreach(((Manager *) ctx)->channels, list_channel, l);
}

/* Cluster mode: ListLocks is answered when Redis has listed the cluster's locks (the Manager's LockView); the
 * call is ours until then. */
typedef struct BusLockList {
        sd_bus_message *call;
        size_t max;
} BusLockList;

/* The backend's list, in list_locks' shape, as the table's iterator gives it. */
static int foreach_listed_lock(void *ctx, ListReply *l) {
        struct json_object *locks = ctx;
        size_t n = json_object_array_length(locks);
        int r;

        for (size_t i = 0; i < n; i++) {
                struct json_object *e = json_object_array_get_idx(locks, i);
                int64_t token;
                LockInfo info = {
                        .name = json_get_string(e, "name"),
                        .holder = json_get_string(e, "holder"),
                };

                if (!info.name || !info.holder || json_get_int64(e, "acquiredAt", false, &info.acquired_at) < 0 ||
                    json_get_int64(e, "expiresAt", false, &info.expires_at) < 0 ||
                    json_get_int64(e, "fencingToken", false, &token) < 0)
                        return -EINVAL;
                info.fencing_token = (uint64_t) token;
                r = list_lock(&info, l);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void on_lock_list_done(int error, const char *reason, struct json_object *locks, void *userdata) {
        _cleanup_(json_object_putp) struct json_object *a = locks;
        BusLockList *l = userdata;
        int r;

        if (error < 0)
                r = sd_bus_reply_method_errorf(l->call, SD_BUS_ERROR_FAILED, "Cluster unavailable: %s",
                                               error == -ECANCELED ? "photond is stopping" :
                                               reason ?: "unknown error");
        else {
                _cleanup_(sd_bus_error_free) sd_bus_error too_large = SD_BUS_ERROR_NULL;

                r = list_send(l->call, l->max, &too_large, "(ssxxt)", foreach_listed_lock, a, "locks",
                              LOCKS_INSTEAD);
                if (sd_bus_error_is_set(&too_large))
                        r = sd_bus_reply_method_error(l->call, &too_large);
                else if (r < 0)
                        r = sd_bus_reply_method_errnof(l->call, r, "Failed to list the locks: %m");
        }
        if (r < 0)
                log_debug_errno(r, "Failed to answer ListLocks: %m");
        sd_bus_message_unref(l->call);
        free(l);
}

static int method_list_locks(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        Manager *m = b->manager;
        BusLockList *l;

        if (!m->lock_backend)
                return method_list(message, userdata, error, "(ssxxt)", foreach_lock, "locks", LOCKS_INSTEAD);

        l = new0(BusLockList, 1);
        if (!l)
                return -ENOMEM;
        l->call = sd_bus_message_ref(message);
        l->max = bus_list_max(b);
        m->lock_view.list(m->lock_view.userdata, on_lock_list_done, l);
        /* Answered later (or already): 1 tells sd-bus that an answer is ours to send. */
        return 1;
}

static int method_list_jobs(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return method_list(message, userdata, error, "(sssssxxus)", foreach_job, "jobs",
                           "'photonctl jobs' (or list_jobs on the socket)");
}

static int method_list_channels(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return method_list(message, userdata, error, "(suux)", foreach_channel, "channels",
                           "'photonctl channels' (or status with channelList)");
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
        Bus *b = userdata;
        int r;

        r = manager_build_status(b->manager, &status);
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
        Bus *b = userdata;
        Manager *m = b->manager;
        const char *name;
        int r;

        r = check_admin(b, message, method_release_lock, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;       /* answered when the caller's credentials are in */
        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;
        if ((!name || !name[0]))
                return sd_bus_error_set(error, BUS_ERROR_INVALID_ARGS, "The lock name must not be empty.");
        if (m->lock_backend)
                /* The local table holds none of the cluster's locks, and Redis releases only for the holder. */
                return sd_bus_error_set(error, SD_BUS_ERROR_NOT_SUPPORTED, CLUSTER_FORCE_RELEASE_REFUSAL);

        r = lock_table_force_release(m->locks, name);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_LOCK, "No live lock named '%s'.", name);
        if (r < 0)
                return r;
        log_info("Lock '%s' released over D-Bus.", name);
        return sd_bus_reply_method_return(message, NULL);
}

static int method_run_job(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        Manager *m = b->manager;
        const char *id;
        int r;

        r = check_admin(b, message, method_run_job, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;       /* answered when the caller's credentials are in */
        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        r = scheduler_run_job(m->scheduler, id, NULL, NULL, NULL);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_JOB, "No job '%s'.", id);
        if (r == -EBUSY)
                return sd_bus_error_setf(error, BUS_ERROR_JOB_RUNNING, "Job '%s' is running already.", id);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_unschedule(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        Manager *m = b->manager;
        const char *id;
        int r;

        r = check_admin(b, message, method_unschedule, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;       /* answered when the caller's credentials are in */
        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        if (m->cluster_jobs)
                /* A change of this node's copy alone would come back at the next reload from Redis. */
                return sd_bus_error_set(error, SD_BUS_ERROR_NOT_SUPPORTED,
                                        "In cluster mode jobs are unscheduled through the control socket "
                                        "(photonctl unschedule), so that every node hears of it.");
        r = scheduler_unschedule(m->scheduler, id);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_JOB, "No job '%s'.", id);
        if (r < 0)
                return r;
        log_info("Job '%s' unscheduled over D-Bus.", id);
        return sd_bus_reply_method_return(message, NULL);
}

/* Cluster mode: Publish is answered when Redis has the message (channels_publish_deferred()); message is ours
 * until then. */
static void on_publish_answered(Subscriber *unused, int error, const char *reason, uint64_t event_id,
                                void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *message = userdata;
        int r;

        if (error < 0)
                r = sd_bus_reply_method_errorf(message, SD_BUS_ERROR_FAILED, "Cluster unavailable: %s",
                                               reason ?: "unknown error");
        else
                r = sd_bus_reply_method_return(message, "t", event_id);
        if (r < 0)
                log_debug_errno(r, "Failed to answer Publish: %m");
}

static int method_publish(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(json_object_putp) struct json_object *msg = NULL;
        const char *channel, *json, *jerr = NULL, *limit;
        Bus *b = userdata;
        Manager *m = b->manager;
        uint64_t event_id = 0;
        char text[256];
        size_t len;
        int r;

        r = check_admin(b, message, method_publish, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;       /* answered when the caller's credentials are in */
        r = sd_bus_message_read(message, "ss", &channel, &json);
        if (r < 0)
                return r;
        if ((!channel || !channel[0]))
                return sd_bus_error_set(error, BUS_ERROR_INVALID_ARGS, "The channel name must not be empty.");
        if (json_parse(json, strlen(json), &msg, &jerr) < 0)
                return sd_bus_error_setf(error, BUS_ERROR_INVALID_ARGS, "The message is not valid JSON: %s",
                                         jerr ?: "syntax error");

        if (channels_deferred(m->channels)) {
                const char *t = json_object_to_json_string_length(msg, JSON_FORMAT_FLAGS, &len);

                if (!t)
                        return -ENOMEM;
                r = channels_publish_deferred(m->channels, channel, strlen(channel), t, len, NULL,
                                              on_publish_answered, sd_bus_message_ref(message));
                if (r >= 0)
                        return 1;       /* answered when Redis has it */
                sd_bus_message_unref(message);
        } else
                r = channels_publish(m->channels, channel, msg, NULL, &event_id);
        /* The limits answer as on the socket (same text), under one name a client can test for. */
        limit = channels_limit_error(r, channel, msg, text, sizeof(text));
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
        SD_BUS_PROPERTY("ClusterState", "s", property_get_cluster_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ClusterStateSince", "t", property_get_cluster_since, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ClusterNodes", "a(sxb)", property_get_cluster_nodes, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),

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
        SD_BUS_SIGNAL_WITH_ARGS("ClusterStateChanged", SD_BUS_ARGS("s", state, "t", since), 0),

        SD_BUS_VTABLE_END
};

/* ---- signals and change announcements ---- */

void bus_send_lock_changed(Bus *b, const char *name, const char *holder, const char *event) {
        if (!b || !b->conn)
                return;
        (void) sd_bus_emit_signal(b->conn, BUS_PATH, BUS_INTERFACE, "LockChanged", "sss", name, holder ?: "", event);
}

void bus_send_job_finished(Bus *b, const char *id, const char *status, int64_t duration_ms) {
        if (!b || !b->conn)
                return;
        (void) sd_bus_emit_signal(b->conn, BUS_PATH, BUS_INTERFACE, "JobFinished", "ssx", id, status, duration_ms);
}

void bus_cluster_changed(Bus *b, bool state) {
        ClusterNodes *n;
        uint64_t since;
        ClusterState st;

        if (!b || !b->conn)
                return;
        n = cluster_get_nodes(b->manager->cluster);
        if (!n)
                return;
        if (!state) {
                (void) sd_bus_emit_properties_changed(b->conn, BUS_PATH, BUS_INTERFACE, "ClusterNodes", NULL);
                return;
        }
        st = cluster_nodes_state(n, &since);
        (void) sd_bus_emit_properties_changed(b->conn, BUS_PATH, BUS_INTERFACE, "ClusterState", "ClusterStateSince",
                                              NULL);
        (void) sd_bus_emit_signal(b->conn, BUS_PATH, BUS_INTERFACE, "ClusterStateChanged", "st",
                                  cluster_state_to_string(st), since / USEC_PER_MSEC);
}

/* Channels that only hold buffered events go when the last one leaves the replay window, and nothing else
 * happens then that would announce it; so the expiry timer follows the oldest buffered event while there is one.
 * A second of slack lets sd-event fire it once a second at most under a steady stream of publishes, instead of
 * once per event. */
#define BUS_EXPIRY_ACCURACY_USEC USEC_PER_SEC

static void bus_arm_expiry(Bus *b) {
        uint64_t when;

        if (channels_next_expiry(b->manager->channels, &when) <= 0) {
                (void) sd_event_source_set_enabled(b->expiry_event_source, SD_EVENT_OFF);
                return;
        }
        if (sd_event_source_set_time(b->expiry_event_source, when * USEC_PER_MSEC) < 0 ||
            sd_event_source_set_enabled(b->expiry_event_source, SD_EVENT_ONESHOT) < 0)
                log_warning("Failed to arm the channel expiry timer; expired channels are announced late.");
}

/* Emits PropertiesChanged for what changed since the last call. */
static void bus_flush_changes(Bus *b) {
        Manager *m = b->manager;
        /* channels_count() drops expired events and the channels left empty; that changes none of the others. */
        uint32_t now[_BUS_COUNTED_MAX] = {
                [BUS_COUNTED_CLIENTS] = m->n_clients,
                [BUS_COUNTED_CHANNELS] = channels_count(m->channels),
                [BUS_COUNTED_SUBSCRIPTIONS] = channels_subscribed_count(m->channels),
                [BUS_COUNTED_LOCKS] = bus_lock_count(m),
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

        if (!b->conn)
                return;
        bus_arm_expiry(b);
        for (size_t i = 0; i < _BUS_COUNTED_MAX; i++)
                if (now[i] != b->announced[i]) {
                        changed[n++] = names[i];
                        b->announced[i] = now[i];
                }
        if (n == 0)
                return;
        changed[n] = NULL;
        (void) sd_bus_emit_properties_changed_strv(b->conn, BUS_PATH, BUS_INTERFACE, (char**) changed);
}

static int on_bus_changed(sd_event_source *s, void *userdata) {
        bus_flush_changes(userdata);
        return 0;
}

static int on_bus_expiry(sd_event_source *s, uint64_t usec, void *userdata) {
        bus_flush_changes(userdata);
        return 0;
}

void bus_changed(Bus *b) {
        if (b && b->conn)
                (void) sd_event_source_set_enabled(b->changed_event_source, SD_EVENT_ONESHOT);
}

/* ---- connection ---- */

/* While the bus is away photond tries again after 1 s, doubling up to 30 s; a connection that got as far as the
 * answer to the name request starts the back-off afresh. */
#define BUS_RECONNECT_MIN_USEC USEC_PER_SEC
#define BUS_RECONNECT_MAX_USEC (30 * USEC_PER_SEC)

static const char* bus_which(Bus *b) {
        return b->mode == BUS_MODE_SYSTEM ? "system" : "user";
}

static void bus_schedule_reconnect(Bus *b) {
        uint64_t delay = b->reconnect_usec;

        b->reconnect_usec = MIN(delay * 2, BUS_RECONNECT_MAX_USEC);
        b->retrying = true;
        if (event_source_arm_relative(b->reconnect_event_source, delay) < 0)
                log_warning("Failed to arm the bus reconnect timer; staying without D-Bus.");
}

static int on_name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Bus *b = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        /* A connection that went away before the answer came gets a made-up error here, then Disconnected. */
        if (sd_bus_is_open(sd_bus_message_get_bus(reply)) > 0) {
                b->up = true;
                b->reconnect_usec = BUS_RECONNECT_MIN_USEC;
        }
        if (e)
                log_warning("Could not own the bus name " BUS_NAME " (%s); the D-Bus interface stays unnamed.",
                            e->message ?: e->name);
        else if (b->retrying)
                log_info("Connected to the %s bus on a retry; " BUS_NAME " is available.", bus_which(b));
        else
                log_debug("Acquired the bus name " BUS_NAME ".");
        if (b->name_pending) {
                b->name_pending = false;
                manager_bus_name_settled(b->manager);
        }
        return 0;
}

static int on_bus_disconnected(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
        Bus *b = userdata;

        /* Said once per lost connection; failed attempts to get it back are only debug messages. */
        if (b->up)
                log_warning("Lost the connection to the %s bus; serving the socket without D-Bus and reconnecting "
                            "in the background.", bus_which(b));
        else
                log_debug("The %s bus closed the connection before it was set up.", bus_which(b));
        b->up = false;
        /* sd-bus holds its own reference while it dispatches this, so dropping ours here is safe. */
        b->conn = sd_bus_flush_close_unref(b->conn);
        bus_schedule_reconnect(b);
        return 0;
}

/* Opens the connection, exports the object and requests the name, all without waiting on the bus. Does not log:
 * the callers say it once at start and quietly on a retry. */
static int bus_connect(Bus *b) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = b->mode == BUS_MODE_SYSTEM ? sd_bus_open_system(&bus) : sd_bus_open_user(&bus);
        if (r < 0)
                return r;

        r = sd_bus_add_object_vtable(bus, NULL, BUS_PATH, BUS_INTERFACE, manager_vtable, b);
        if (r < 0)
                return r;

        /* A match on the local Disconnected signal costs no bus call: sd-bus keeps it to itself. */
        r = sd_bus_match_signal(bus, NULL, "org.freedesktop.DBus.Local", "/org/freedesktop/DBus/Local",
                                "org.freedesktop.DBus.Local", "Disconnected", on_bus_disconnected, b);
        if (r < 0)
                return r;

        r = sd_bus_attach_event(bus, b->manager->event, 0);
        if (r < 0)
                return r;

        /* Asynchronous, so the loop never waits on the bus; READY=1 waits for the answer instead. */
        r = sd_bus_request_name_async(bus, NULL, BUS_NAME, 0, on_name_acquired, b);
        if (r < 0)
                return r;

        b->conn = TAKE_PTR(bus);
        return 0;
}

static int on_bus_reconnect(sd_event_source *s, uint64_t usec, void *userdata) {
        Bus *b = userdata;
        int r;

        r = bus_connect(b);
        if (r < 0) {
                log_debug_errno(r, "Still cannot connect to the %s bus, trying again in %" PRIu64 " s: %m",
                                bus_which(b), b->reconnect_usec / USEC_PER_SEC);
                bus_schedule_reconnect(b);
        }
        return 0;
}

int bus_new(Manager *m, BusMode mode, Bus **ret) {
        Bus *b;

        assert(m);
        assert(mode == BUS_MODE_USER || mode == BUS_MODE_SYSTEM);
        assert(ret);

        b = new(Bus, 1);
        if (!b)
                return -ENOMEM;
        *b = (Bus) {
                .manager = m,
                .mode = mode,
                .reconnect_usec = BUS_RECONNECT_MIN_USEC,
        };
        *ret = b;
        return 0;
}

Bus* bus_free(Bus *b) {
        if (!b)
                return NULL;

        sd_event_source_disable_unref(b->changed_event_source);
        sd_event_source_disable_unref(b->expiry_event_source);
        sd_event_source_disable_unref(b->reconnect_event_source);
        sd_bus_flush_close_unref(b->conn);
        return mfree(b);
}

bool bus_name_pending(const Bus *b) {
        return b && b->name_pending;
}

int bus_start(Bus *b) {
        sd_event *e;
        int r;

        if (!b)
                return 0;
        e = b->manager->event;

        r = sd_event_add_defer(e, &b->changed_event_source, on_bus_changed, b);
        if (r < 0)
                return log_error_errno(r, "Failed to set up property change announcements: %m");
        (void) sd_event_source_set_enabled(b->changed_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(b->changed_event_source, "bus-changed");

        r = sd_event_add_time(e, &b->expiry_event_source, CLOCK_MONOTONIC, 0, BUS_EXPIRY_ACCURACY_USEC,
                              on_bus_expiry, b);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the channel expiry timer: %m");
        (void) sd_event_source_set_enabled(b->expiry_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(b->expiry_event_source, "bus-channel-expiry");

        r = sd_event_add_time(e, &b->reconnect_event_source, CLOCK_MONOTONIC, 0, 0, on_bus_reconnect, b);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the bus reconnect timer: %m");
        (void) sd_event_source_set_enabled(b->reconnect_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(b->reconnect_event_source, "bus-reconnect");
        b->reconnect_usec = BUS_RECONNECT_MIN_USEC;

        r = bus_connect(b);
        if (r < 0) {
                log_warning_errno(r, "Cannot connect to the %s bus, continuing without D-Bus and trying again in "
                                  "the background: %m", bus_which(b));
                bus_schedule_reconnect(b);
                return 0;
        }

        b->name_pending = true;
        log_debug("Connected to the %s bus.", bus_which(b));
        return 0;
}

/* ---- asking the service manager ---- */

#define SYSTEMD_CALL_TIMEOUT_USEC (250 * USEC_PER_MSEC)

/* The value of property of the object path of systemd, its reply entered at the variant of type contents. */
static int systemd_get_property(Bus *b, const char *path, const char *interface, const char *property,
                                const char *contents, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r;

        r = sd_bus_message_new_method_call(b->conn, &m, "org.freedesktop.systemd1", path,
                                           "org.freedesktop.DBus.Properties", "Get");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", interface, property);
        if (r >= 0)
                r = sd_bus_call(b->conn, m, SYSTEMD_CALL_TIMEOUT_USEC, NULL, &reply);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'v', contents);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(reply);
        return 0;
}

int bus_unit_job_type(Bus *b, char **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL, *job = NULL, *type = NULL;
        const char *unit_path, *job_path, *t;
        uint32_t job_id;
        char *s;
        int r;

        if (!b || !b->conn)
                return -ENOTCONN;

        r = sd_bus_message_new_method_call(b->conn, &m, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                           "org.freedesktop.systemd1.Manager", "GetUnitByPID");
        if (r >= 0)
                r = sd_bus_message_append(m, "u", (uint32_t) getpid());
        if (r >= 0)
                r = sd_bus_call(b->conn, m, SYSTEMD_CALL_TIMEOUT_USEC, NULL, &reply);
        if (r >= 0)
                r = sd_bus_message_read(reply, "o", &unit_path);
        if (r >= 0)
                r = systemd_get_property(b, unit_path, "org.freedesktop.systemd1.Unit", "Job", "(uo)", &job);
        if (r >= 0)
                r = sd_bus_message_read(job, "(uo)", &job_id, &job_path);
        if (r < 0)
                return r;
        if (job_id == 0)
                return 0;
        r = systemd_get_property(b, job_path, "org.freedesktop.systemd1.Job", "JobType", "s", &type);
        if (r >= 0)
                r = sd_bus_message_read(type, "s", &t);
        if (r < 0)
                return r;
        s = strdup(t);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 1;
}
