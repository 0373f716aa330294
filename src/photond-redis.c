/* SPDX-License-Identifier: MIT */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "clock.h"
#include "log.h"
#include "photond-redis.h"
#include "string-util.h"

/* The adapter's state for one hiredis context (ac->ev.data): freed by hiredis' cleanup, unless that comes while
 * its own I/O callback runs (a read that ends in a disconnect), which then frees it. */
typedef struct RedisEvents {
        sd_event *event;        /* not through ac->data: a context being dropped has none */
        redisAsyncContext *ac;
        sd_event_source *io;
        uint32_t events;
        bool dispatching;
        bool dead;
} RedisEvents;

/* A command sent: hiredis answers a connection's commands in order, so a ring in sending order pairs them. */
typedef struct RedisPending {
        RedisReplyCallback cb;
        void *userdata;
        uint64_t deadline;      /* CLOCK_MONOTONIC µs */
        bool eval;              /* an EVALSHA: a NOSCRIPT answer drops the connection */
} RedisPending;

struct RedisConn {
        sd_event *event;
        RedisConnHooks hooks;
        char *name;
        char *host, *path, *user, *password;
        uint16_t port;
        unsigned db;
        uint64_t timeout_usec, backoff_min_usec, backoff_max_usec, backoff_usec;

        redisAsyncContext *ac;          /* NULL between attempts */
        RedisConnState state;
        uint64_t state_since;           /* CLOCK_REALTIME µs */
        char *last_error;
        bool ready_logged;

        const RedisScript *const *scripts;

        RedisPending *ring;
        size_t ring_size, head, n_pending;

        sd_event_source *timeout_source;        /* the oldest pending command's deadline */
        sd_event_source *retry_source;          /* the next attempt */
};

/* ---- the sd-event adapter ---- */

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int events_update(RedisEvents *e) {
        int r;

        if (!e->io) {
                if (e->events == 0)
                        return 0;
                r = sd_event_add_io(e->event, &e->io, e->ac->c.fd, e->events, on_io, e);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(e->io, "redis");
        }
        if (e->events == 0)
                return sd_event_source_set_enabled(e->io, SD_EVENT_OFF);
        r = sd_event_source_set_io_events(e->io, e->events);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(e->io, SD_EVENT_ON);
}

static void events_set(void *privdata, uint32_t add, uint32_t del) {
        RedisEvents *e = privdata;
        int r;

        e->events = (e->events | add) & ~del;
        r = events_update(e);
        if (r < 0)
                /* hiredis cannot hear of it: the command timeout will drop the connection. */
                log_warning_errno(r, "Redis: failed to watch the connection: %m");
}

static void on_add_read(void *privdata) { events_set(privdata, EPOLLIN, 0); }
static void on_del_read(void *privdata) { events_set(privdata, 0, EPOLLIN); }
static void on_add_write(void *privdata) { events_set(privdata, EPOLLOUT, 0); }
static void on_del_write(void *privdata) { events_set(privdata, 0, EPOLLOUT); }

static void events_free(RedisEvents *e) {
        sd_event_source_disable_unref(e->io);
        free(e);
}

static void on_cleanup(void *privdata) {
        RedisEvents *e = privdata;

        if (e->dispatching) {
                e->dead = true;
                (void) sd_event_source_set_enabled(e->io, SD_EVENT_OFF);
        } else
                events_free(e);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        RedisEvents *e = userdata;

        e->dispatching = true;
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                redisAsyncHandleRead(e->ac);
        if (!e->dead && (revents & EPOLLOUT))
                redisAsyncHandleWrite(e->ac);
        e->dispatching = false;
        if (e->dead)
                events_free(e);
        return 0;
}

static int events_attach(RedisConn *c, redisAsyncContext *ac) {
        RedisEvents *e = new0(RedisEvents, 1);

        if (!e)
                return -ENOMEM;
        e->event = c->event;
        e->ac = ac;
        ac->ev.data = e;
        ac->ev.addRead = on_add_read;
        ac->ev.delRead = on_del_read;
        ac->ev.addWrite = on_add_write;
        ac->ev.delWrite = on_del_write;
        ac->ev.cleanup = on_cleanup;
        return 0;
}

/* ---- state ---- */

static void conn_set_state(RedisConn *c, RedisConnState state) {
        if (c->state == state)
                return;
        c->state = state;
        c->state_since = now_usec(CLOCK_REALTIME);
}

static void conn_set_error(RedisConn *c, const char *error) {
        char *t = strdup(error);

        if (t) {
                free(c->last_error);
                c->last_error = t;
        }
}

static void pending_arm(RedisConn *c) {
        if (c->n_pending == 0) {
                (void) sd_event_source_set_enabled(c->timeout_source, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time(c->timeout_source, c->ring[c->head].deadline);
        (void) sd_event_source_set_enabled(c->timeout_source, SD_EVENT_ONESHOT);
}

static void conn_schedule_retry(RedisConn *c) {
        uint64_t delay = c->backoff_usec;

        c->backoff_usec = MIN(c->backoff_usec * 2, c->backoff_max_usec);
        (void) sd_event_source_set_time_relative(c->retry_source, delay);
        (void) sd_event_source_set_enabled(c->retry_source, SD_EVENT_ONESHOT);
}

/* The context is gone or going (hiredis frees it, or the caller just did): the pending commands have had their
 * NULL answers; wait and try again. */
static void conn_lost(RedisConn *c, const char *error) {
        bool was_connected = c->state == REDIS_CONN_CONNECTED;

        c->ac = NULL;
        conn_set_error(c, error);
        conn_set_state(c, REDIS_CONN_RECONNECTING);
        if (was_connected)
                log_warning("Redis (%s): connection lost: %s. Reconnecting.", c->name, error);
        else
                log_debug("Redis (%s): connect failed: %s.", c->name, error);
        conn_schedule_retry(c);
        if (c->hooks.disconnected)
                c->hooks.disconnected(c, error, c->hooks.userdata);
}

/* Drops the current context from our side (a timeout, a refused AUTH). */
static void conn_drop(RedisConn *c, const char *error) {
        redisAsyncContext *ac = c->ac;

        if (!ac)
                return;
        ac->data = NULL;        /* its callbacks are no longer ours to interpret, but the pending still pop */
        c->ac = NULL;
        redisAsyncFree(ac);
        conn_lost(c, error);
}

/* ---- hiredis callbacks ---- */

static void on_connect(const redisAsyncContext *ac, int status) {
        RedisConn *c = ac->data;

        if (!c || status == REDIS_OK)
                return;
        /* hiredis frees the context after this. */
        conn_lost(c, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
        RedisConn *c = ac->data;

        if (!c || c->ac != ac)
                return;
        conn_lost(c, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "I/O error"));
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
        RedisConn *c = privdata;
        RedisPending p;

        assert(c->n_pending > 0);
        p = c->ring[c->head];
        c->head = (c->head + 1) % c->ring_size;
        c->n_pending--;
        if (c->ac == ac)
                pending_arm(c);
        if (p.cb)
                p.cb(c, reply, p.userdata);
        if (p.eval && reply && c->ac == ac && ((redisReply *) reply)->type == REDIS_REPLY_ERROR &&
            startswith(((redisReply *) reply)->str, "NOSCRIPT")) {
                log_warning("Redis (%s): the server lost photond's scripts (SCRIPT FLUSH?), reconnecting to load "
                            "them again.", c->name);
                conn_drop(c, "scripts flushed");
        }
}

static void on_push(redisAsyncContext *ac, void *reply, void *privdata) {
        RedisConn *c = privdata;

        if (reply && c->ac == ac && c->hooks.push)
                c->hooks.push(c, reply, c->hooks.userdata);
}

/* AUTH, SELECT and PING at each connect: ready once the PING answered after both (they are answered in order). */
static void on_setup_reply(RedisConn *c, redisReply *reply, void *userdata) {
        const char *what = userdata;

        if (!c->ac || c->state == REDIS_CONN_CONNECTED)
                return;
        if (!reply)
                return;         /* the connection is being dropped: conn_lost() says why */
        if (reply->type == REDIS_REPLY_ERROR) {
                char buf[160];

                /* Redis' error text never holds the password. */
                snprintf(buf, sizeof(buf), "%s refused: %.*s", what, (int) MIN(reply->len, 100), reply->str);
                log_error("Redis (%s): %s", c->name, buf);
                conn_drop(c, buf);
                return;
        }
        if (!streq(what, "PING"))
                return;
        conn_set_state(c, REDIS_CONN_CONNECTED);
        c->backoff_usec = c->backoff_min_usec;
        log_info("Redis (%s): connected.", c->name);
        if (c->hooks.connected)
                c->hooks.connected(c, c->hooks.userdata);
}

static int pending_push(RedisConn *c, RedisReplyCallback cb, void *userdata, bool eval) {
        size_t tail;

        if (c->n_pending >= c->ring_size)
                return -ENOBUFS;
        tail = (c->head + c->n_pending) % c->ring_size;
        c->ring[tail] = (RedisPending) {
                .cb = cb,
                .userdata = userdata,
                .deadline = now_usec(CLOCK_MONOTONIC) + c->timeout_usec,
                .eval = eval,
        };
        if (c->n_pending++ == 0)
                pending_arm(c);
        return 0;
}

static int conn_send_full(RedisConn *c, RedisReplyCallback cb, void *userdata, bool eval, int argc,
                          const char **argv, const size_t *argv_len) {
        int r;

        r = pending_push(c, cb, userdata, eval);
        if (r < 0)
                return r;
        if (redisAsyncCommandArgv(c->ac, on_reply, c, argc, argv, argv_len) != REDIS_OK) {
                /* Not queued (out of memory, or the context is going): take it back (it is the ring's tail). */
                c->n_pending--;
                pending_arm(c);
                return -EIO;
        }
        return 0;
}

static int conn_send(RedisConn *c, RedisReplyCallback cb, void *userdata, int argc, const char **argv,
                     const size_t *argv_len) {
        return conn_send_full(c, cb, userdata, false, argc, argv, argv_len);
}

static int conn_connect(RedisConn *c) {
        redisAsyncContext *ac;
        char db[16];
        int r;

        ac = c->path ? redisAsyncConnectUnix(c->path) : redisAsyncConnect(c->host, c->port);
        if (!ac)
                return -ENOMEM;
        if (ac->err) {
                char buf[128];

                snprintf(buf, sizeof(buf), "%s", ac->errstr);
                redisAsyncFree(ac);
                conn_lost(c, buf);
                return 0;
        }
        ac->data = c;
        r = events_attach(c, ac);
        if (r < 0) {
                redisAsyncFree(ac);
                return r;
        }
        c->ac = ac;
        (void) redisAsyncSetConnectCallback(ac, on_connect);
        (void) redisAsyncSetDisconnectCallback(ac, on_disconnect);

        if (c->password) {
                const char *argv[3] = { "AUTH" };
                size_t len[3] = { 4 };
                int n = 1;

                if (c->user) {
                        argv[n] = c->user;
                        len[n++] = strlen(c->user);
                }
                argv[n] = c->password;
                len[n++] = strlen(c->password);
                r = conn_send(c, on_setup_reply, (void *) "AUTH", n, argv, len);
                if (r < 0)
                        return r;
        }
        if (c->db > 0) {
                snprintf(db, sizeof(db), "%u", c->db);
                r = conn_send(c, on_setup_reply, (void *) "SELECT", 2, (const char *[]) { "SELECT", db },
                              (const size_t[]) { 6, strlen(db) });
                if (r < 0)
                        return r;
        }
        for (const RedisScript *const *sc = c->scripts; sc && *sc; sc++) {
                r = conn_send(c, on_setup_reply, (void *) "SCRIPT LOAD", 3,
                              (const char *[]) { "SCRIPT", "LOAD", (*sc)->source },
                              (const size_t[]) { 6, 4, strlen((*sc)->source) });
                if (r < 0)
                        return r;
        }
        return conn_send(c, on_setup_reply, (void *) "PING", 1, (const char *[]) { "PING" }, (const size_t[]) { 4 });
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        RedisConn *c = userdata;
        int r;

        r = conn_connect(c);
        if (r < 0) {
                log_warning_errno(r, "Redis (%s): failed to start a connection: %m", c->name);
                if (c->ac)
                        conn_drop(c, "out of memory");
                else
                        conn_schedule_retry(c);
        }
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        RedisConn *c = userdata;

        if (c->n_pending == 0 || !c->ac)
                return 0;
        if (c->ring[c->head].deadline > usec) {
                /* Left armed for a context that is gone; the head is the new one's. */
                pending_arm(c);
                return 0;
        }
        /* While it reconnects, one attempt after another times out on a stuck server: the cluster's state said
         * so once already. */
        (void) log_full_errno(c->state == REDIS_CONN_CONNECTED ? LOG_WARNING : LOG_DEBUG, 0,
                              "Redis (%s): no answer within %" PRIu64 " ms (%zu commands pending).", c->name,
                              c->timeout_usec / USEC_PER_MSEC, c->n_pending);
        conn_drop(c, "timed out");
        return 0;
}

/* ---- API ---- */

int redis_script_init(RedisScript *s, const char *source) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n;

        if (EVP_Digest(source, strlen(source), md, &n, EVP_sha1(), NULL) != 1 || n != 20)
                return -EIO;
        for (unsigned i = 0; i < n; i++)
                snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
        s->source = source;
        return 0;
}

int redis_conn_new(const RedisConnConfig *config, const RedisConnHooks *hooks, RedisConn **ret) {
        _cleanup_(redis_conn_freep) RedisConn *c = NULL;
        const ClusterUrl *u = config->url;
        int r;

        c = new0(RedisConn, 1);
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(config->event);
        if (hooks)
                c->hooks = *hooks;
        c->timeout_usec = config->command_timeout_usec ?: REDIS_DEFAULT_COMMAND_TIMEOUT_USEC;
        c->ring_size = config->max_pending ?: REDIS_DEFAULT_MAX_PENDING;
        c->backoff_min_usec = config->backoff_min_usec ?: REDIS_DEFAULT_BACKOFF_MIN_USEC;
        c->backoff_max_usec = MAX(config->backoff_max_usec ?: REDIS_DEFAULT_BACKOFF_MAX_USEC, c->backoff_min_usec);
        c->backoff_usec = c->backoff_min_usec;
        c->scripts = config->scripts;
        c->port = u->port;
        c->db = u->db;
        c->state = REDIS_CONN_CONNECTING;
        c->state_since = now_usec(CLOCK_REALTIME);
        c->name = strdup(config->name ?: "redis");
        c->ring = new(RedisPending, c->ring_size);
        if (!c->name || !c->ring)
                return -ENOMEM;
        if ((u->host && !(c->host = strdup(u->host))) || (u->path && !(c->path = strdup(u->path))) ||
            (u->user && !(c->user = strdup(u->user))) || (u->password && !(c->password = strdup(u->password))))
                return -ENOMEM;

        r = sd_event_add_time(c->event, &c->timeout_source, CLOCK_MONOTONIC, 0, USEC_PER_MSEC, on_timeout, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->timeout_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->timeout_source, "redis-timeout");
        r = sd_event_add_time(c->event, &c->retry_source, CLOCK_MONOTONIC, 0, USEC_PER_MSEC, on_retry, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->retry_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->retry_source, "redis-retry");

        r = conn_connect(c);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

RedisConn* redis_conn_free(RedisConn *c) {
        if (!c)
                return NULL;
        if (c->ac) {
                redisAsyncContext *ac = c->ac;

                /* The pending commands' callbacks run with NULL now; the context's own callbacks ignore it. */
                ac->data = NULL;
                c->ac = NULL;
                redisAsyncFree(ac);
        }
        sd_event_source_disable_unref(c->timeout_source);
        sd_event_source_disable_unref(c->retry_source);
        sd_event_unref(c->event);
        if (c->password) {
                explicit_bzero(c->password, strlen(c->password));
                free(c->password);
        }
        free(c->user);
        free(c->host);
        free(c->path);
        free(c->name);
        free(c->last_error);
        free(c->ring);
        return mfree(c);
}

RedisConnState redis_conn_state(RedisConn *c) {
        return c->state;
}

uint64_t redis_conn_state_since(RedisConn *c) {
        return c->state_since;
}

const char* redis_conn_last_error(RedisConn *c) {
        return c->last_error;
}

void* redis_conn_userdata(RedisConn *c) {
        return c->hooks.userdata;
}

size_t redis_conn_pending(RedisConn *c) {
        return c->n_pending;
}

void redis_conn_reset(RedisConn *c, const char *error) {
        if (c->state != REDIS_CONN_CONNECTED)
                return;
        conn_drop(c, error);
}

int redis_conn_command(RedisConn *c, RedisReplyCallback cb, void *userdata, int argc, const char **argv,
                       const size_t *argv_len) {
        if (!c->ac || c->state != REDIS_CONN_CONNECTED)
                return -ENOTCONN;
        return conn_send(c, cb, userdata, argc, argv, argv_len);
}

int redis_conn_eval(RedisConn *c, const RedisScript *script, RedisReplyCallback cb, void *userdata, int n_keys,
                    int argc, const char **argv, const size_t *argv_len) {
        const char *sv[64 + 3], **v = sv;
        size_t sl[64 + 3], *l = sl;
        _cleanup_free_ void *hv = NULL, *hl = NULL;

        assert(n_keys >= 0 && n_keys <= argc);
        if (argc > REDIS_SCRIPT_MAX_ARGS)
                return -E2BIG;
        if (!c->ac || c->state != REDIS_CONN_CONNECTED)
                return -ENOTCONN;
        if ((size_t) argc + 3 > ELEMENTSOF(sv)) {
                v = hv = new(const char*, argc + 3);
                l = hl = new(size_t, argc + 3);
                if (!v || !l)
                        return -ENOMEM;
        }
        memcpy(v + 3, argv, argc * sizeof(*argv));
        memcpy(l + 3, argv_len, argc * sizeof(*argv_len));
        return redis_conn_evalv(c, script, cb, userdata, n_keys, argc + 3, v, l);
}

void redis_conn_write_now(RedisConn *c) {
        RedisEvents *e;

        if (!c->ac || c->state != REDIS_CONN_CONNECTED)
                return;
        e = c->ac->ev.data;
        if (!e || e->dispatching || !(e->events & EPOLLOUT))
                return;
        /* The write may fail and drop the context: e is then freed here, as after on_io(). */
        e->dispatching = true;
        redisAsyncHandleWrite(c->ac);
        e->dispatching = false;
        if (e->dead)
                events_free(e);
}

int redis_conn_evalv(RedisConn *c, const RedisScript *script, RedisReplyCallback cb, void *userdata, int n_keys,
                     int argc, const char **argv, size_t *argv_len) {
        char keys[16];

        assert(n_keys >= 0 && n_keys <= argc - 3);
        if (!c->ac || c->state != REDIS_CONN_CONNECTED)
                return -ENOTCONN;
        snprintf(keys, sizeof(keys), "%d", n_keys);
        argv[0] = "EVALSHA";
        argv_len[0] = 7;
        argv[1] = script->sha;
        argv_len[1] = 40;
        argv[2] = keys;
        argv_len[2] = strlen(keys);
        return conn_send_full(c, cb, userdata, true, argc, argv, argv_len);
}

int redis_conn_subscribe(RedisConn *c, int argc, const char **argv, const size_t *argv_len) {
        if (!c->ac || c->state != REDIS_CONN_CONNECTED)
                return -ENOTCONN;
        /* hiredis refuses an (P)UNSUBSCRIBE outside subscriber mode, and anything while the context goes. */
        if (redisAsyncCommandArgv(c->ac, on_push, c, argc, argv, argv_len) != REDIS_OK)
                return -EIO;
        return 0;
}
