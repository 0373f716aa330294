/* SPDX-License-Identifier: MIT */

/* The control socket's pub/sub requests: subscribe, unsubscribe, publish, get_events_since, and the publish fast
 * path. They read the request, call the channels (photond-channel.c) with the Client's Subscriber and answer the
 * Client; the channels know nothing of requests or Clients.
 *
 * A request line is offered to the publish fast path before control_handle_line() parses it:
 * request_scan_publish() (photond-protocol.c) picks out id, channel and message without building JSON objects, and
 * the message's bytes, already as json-c prints them, go to channels_publish_serialized() as they came, which
 * serializes the push once for every subscriber. The general path hands it json-c's text of the parsed message.
 * Both answer with publish_reply() and echo id and channel by one rule (reply_string()), so they give the same
 * bytes. */

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "list.h"
#include "photond-channel.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-limits.h"
#include "photond-protocol.h"
#include "shared-buf.h"

/* ---- reading the request ---- */

/* The request's channel (validated to be a string without NUL bytes) and its length. */
static const char* request_channel(Request *req, size_t *ret_len) {
        struct json_object *v;

        if (!json_object_object_get_ex(req->json, "channel", &v) || !json_object_is_type(v, json_type_string)) {
                *ret_len = 0;
                return NULL;
        }
        *ret_len = json_object_get_string_len(v);
        return json_object_get_string(v);
}

/* The JSON text of a request member, as json-c writes it. */
static const char* request_member_json(Request *req, const char *key, size_t *ret_len) {
        struct json_object *v;

        if (!json_object_object_get_ex(req->json, key, &v))
                return NULL;
        return json_object_to_json_string_length(v, JSON_FORMAT_FLAGS, ret_len);
}

/* lastEventId as the reference reads it: parseInt(String(v), 10) || 0. Numbers are truncated; strings give
 * their leading decimal integer; anything else is 0. */
static int64_t last_event_id_from_json(struct json_object *v) {
        switch (json_object_get_type(v)) {
        case json_type_int:
                return json_object_get_int64(v);
        case json_type_double: {
                double d = json_object_get_double(v);
                if (d != d)
                        return 0;
                if (d >= 9.2e18)
                        return INT64_MAX;
                if (d <= -9.2e18)
                        return INT64_MIN;
                return (int64_t) d;
        }
        case json_type_string: {
                const char *s = json_object_get_string(v);
                bool negative = false;
                int64_t n = 0;

                s += strspn(s, " \t\n\v\f\r");
                if (*s == '+' || *s == '-')
                        negative = *s++ == '-';
                for (; *s >= '0' && *s <= '9'; s++)
                        n = n > (INT64_MAX - 9) / 10 ? INT64_MAX : n * 10 + (*s - '0');
                return negative ? -n : n;
        }
        default:
                return 0;
        }
}

/* ---- replies ---- */

/* A string as a reply echoes it, written by hand: its bytes between quotes when json-c prints them so (nothing to
 * escape: what the fast path's scan takes, and most of what the general path sees), else json-c's text of it. */
typedef struct ReplyString {
        const char *s;
        size_t len;
        bool quote;
} ReplyString;

/* True if json-c writes s as '"' s '"': nothing to escape. */
static bool json_string_is_plain(const char *s, size_t len) {
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == '"' || s[i] == '\\')
                        return false;
        return true;
}

/* The id and channel rule of both paths: the request's string member key (which the parser made sure is there and a
 * string) as the reply echoes it. -ENOMEM. */
static int reply_string(Request *req, const char *key, ReplyString *ret) {
        struct json_object *v;
        const char *s;
        size_t len;

        if (!json_object_object_get_ex(req->json, key, &v) || !json_object_is_type(v, json_type_string))
                return -EINVAL;
        s = json_object_get_string(v);
        len = json_object_get_string_len(v);
        if (json_string_is_plain(s, len)) {
                *ret = (ReplyString) { s, len, true };
                return 0;
        }
        s = json_object_to_json_string_length(v, JSON_FORMAT_FLAGS, &len);
        if (!s)
                return -ENOMEM;
        *ret = (ReplyString) { s, len, false };
        return 0;
}

static size_t reply_string_size(const ReplyString *s) {
        return s->len + 2 * s->quote;
}

static char* reply_string_put(char *p, const ReplyString *s) {
        if (s->quote)
                *p++ = '"';
        p = mempcpy(p, s->s, s->len);
        if (s->quote)
                *p++ = '"';
        return p;
}

/* The publish result, assembled by hand on the hot path. */
static int publish_reply(Client *c, const ReplyString *id, const ReplyString *channel, uint64_t event_id) {
        static const char a[] = "{\"type\":\"result\",\"id\":",
                b[] = ",\"success\":true,\"data\":{\"published\":true,\"channel\":", d[] = ",\"eventId\":";
        _cleanup_(shared_buf_unrefp) SharedBuf *reply = NULL;
        char *p;

        reply = shared_buf_alloc(strlen(a) + reply_string_size(id) + strlen(b) + reply_string_size(channel) +
                                 strlen(d) + JSON_INT64_SIZE_MAX + strlen("}}\n"));
        if (!reply)
                return -ENOMEM;
        p = mempcpy(reply->data, a, strlen(a));
        p = reply_string_put(p, id);
        p = mempcpy(p, b, strlen(b));
        p = reply_string_put(p, channel);
        p = mempcpy(p, d, strlen(d));
        p = json_put_uint64(p, event_id);
        p = mempcpy(p, "}}\n", strlen("}}\n"));
        reply->size = p - reply->data;
        return client_send(c, reply, NULL);
}

static int reply_name_too_long(Client *c, Request *req, size_t len) {
        return client_reply_limit(c, req->id, LIMIT_MAX_CHANNEL_NAME_BYTES, len);
}

static int reply_too_many_channels(Client *c, Request *req) {
        return client_reply_limit(c, req->id, LIMIT_MAX_CHANNELS, UINT64_MAX);
}

static struct json_object* channel_reply_data(const char *key, const char *channel, size_t len) {
        _cleanup_(json_object_putp) struct json_object *data = json_object_new_object();

        if (!data || json_add_bool(data, key, true) < 0 ||
            json_add(data, "channel", json_object_new_string_len(channel, (int) len)) < 0)
                return NULL;
        return TAKE_PTR(data);
}

/* ---- cluster mode: answered when the backend has it ---- */

/* A publish or a replay the channels' backend answers later (cluster mode): what its answer echoes. */
typedef struct ChannelsDeferred Deferred;
struct ChannelsDeferred {
        LIST_FIELDS(Deferred, deferred);        /* on the client's list while it waits (not after it went) */
        Channels *channels;
        char *id;                       /* the request's id, NUL-terminated */
        char *channel;                  /* channel_len bytes, NUL-terminated */
        size_t channel_len;
        bool subscribe;                 /* a replay for a subscribe (else for get_events_since) */
};

static Deferred* deferred_free(Deferred *d) {
        if (!d)
                return NULL;
        free(d->id);
        free(d->channel);
        return mfree(d);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Deferred*, deferred_free);

static Deferred* deferred_new(const char *id, size_t id_len, const char *channel, size_t channel_len) {
        _cleanup_(deferred_freep) Deferred *d = new0(Deferred, 1);

        if (!d)
                return NULL;
        d->id = strndup(id, id_len);
        d->channel = malloc(channel_len + 1);
        if (!d->id || !d->channel)
                return NULL;
        memcpy(d->channel, channel, channel_len);
        d->channel[channel_len] = 0;
        d->channel_len = channel_len;
        return TAKE_PTR(d);
}

/* The client d waits on (the backend's answer came while it is there): d leaves its list. */
static Client* deferred_client(Subscriber *s, Deferred *d) {
        Client *c = (Client*) ((uint8_t*) s - offsetof(Client, subscriber));

        assert(c->n_deferred > 0);
        LIST_REMOVE(deferred, c->deferred, d);
        c->n_deferred--;
        return c;
}

static void deferred_add(Client *c, Deferred *d) {
        LIST_PREPEND(deferred, c->deferred, d);
        c->n_deferred++;
}

int control_channels_foreach_deferred(Client *c, int (*cb)(const char *request_id, void *userdata),
                                      void *userdata) {
        Deferred *last = NULL;
        int r;

        LIST_FOREACH(deferred, d, c->deferred)
                last = d;
        /* The list is newest first. */
        for (Deferred *d = last; d; d = d->deferred_prev) {
                r = cb(d->id, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* "Cluster unavailable: <reason>" to the request d answers, or a failed client's close. */
static void deferred_reply_error(Client *c, Deferred *d, const char *reason) {
        _cleanup_free_ char *text = NULL;

        /* A failed answer closes the client (client_send()). */
        if (asprintf(&text, "Cluster unavailable: %s", reason ?: "unknown error") >= 0)
                (void) client_reply_error(c, d->id, text, NULL);
}

static void on_publish_done(Subscriber *s, int error, const char *reason, uint64_t event_id, void *userdata) {
        _cleanup_(deferred_freep) Deferred *d = userdata;
        _cleanup_(json_object_putp) struct json_object *oid = NULL, *och = NULL;
        ReplyString id, channel;
        Client *c;

        if (!s)
                return;
        c = deferred_client(s, d);
        if (error < 0) {
                deferred_reply_error(c, d, reason);
                return;
        }
        /* The echo rule of both paths (reply_string()). */
        id = (ReplyString) { d->id, strlen(d->id), true };
        channel = (ReplyString) { d->channel, d->channel_len, true };
        if (!json_string_is_plain(id.s, id.len)) {
                oid = json_object_new_string(d->id);
                id.s = oid ? json_object_to_json_string_length(oid, JSON_FORMAT_FLAGS, &id.len) : NULL;
                id.quote = false;
        }
        if (!json_string_is_plain(channel.s, channel.len)) {
                och = json_object_new_string_len(d->channel, (int) d->channel_len);
                channel.s = och ? json_object_to_json_string_length(och, JSON_FORMAT_FLAGS, &channel.len) : NULL;
                channel.quote = false;
        }
        if (id.s && channel.s)
                (void) publish_reply(c, &id, &channel, event_id);
}

/* Cluster mode: the publish goes to the backend and is answered when it has it. 1: answered later. */
static int publish_deferred(Channels *chs, Client *c, const char *id, size_t id_len, const char *name, size_t len,
                            const char *message, size_t message_len) {
        _cleanup_(deferred_freep) Deferred *d = deferred_new(id, id_len, name, len);
        int r;

        if (!d)
                return -ENOMEM;
        deferred_add(c, d);
        r = channels_publish_deferred(chs, name, len, message, message_len, &c->subscriber, on_publish_done, d);
        if (r < 0) {
                (void) deferred_client(&c->subscriber, d);
                return r;
        }
        TAKE_PTR(d);
        return 1;
}

static int on_subscribe_replay_done(Channels *chs, Client *c, Deferred *d, const ChannelsReplayed *rp);
static int on_events_replay_done(Client *c, Deferred *d, const ChannelsReplayed *rp);

static void on_replay_done(Subscriber *s, const ChannelsReplayed *rp, void *userdata) {
        _cleanup_(deferred_freep) Deferred *d = userdata;
        Client *c;
        int r;

        if (!s)
                return;
        c = deferred_client(s, d);
        if (rp->error < 0) {
                deferred_reply_error(c, d, rp->reason);
                return;
        }
        r = d->subscribe ? on_subscribe_replay_done(d->channels, c, d, rp) : on_events_replay_done(c, d, rp);
        if (r < 0)
                /* What control_handle_line() does with a handler's failure. */
                (void) client_reply_error(c, d->id, "Internal error", NULL);
}

/* Cluster mode: the replay comes from the backend's store (channels_replay_deferred()). 1: answered later. */
static int replay_deferred(Channels *chs, Client *c, Request *req, const char *name, size_t len, int64_t from,
                           bool subscribe) {
        _cleanup_(deferred_freep) Deferred *d = deferred_new(req->id, strlen(req->id), name ?: "", name ? len : 0);
        int r;

        if (!d)
                return -ENOMEM;
        d->channels = chs;
        d->subscribe = subscribe;
        deferred_add(c, d);
        r = channels_replay_deferred(chs, d->channel, d->channel_len, from, &c->subscriber, on_replay_done, d);
        if (r < 0) {
                (void) deferred_client(&c->subscriber, d);
                return r;
        }
        TAKE_PTR(d);
        return 1;
}

/* ---- the requests ---- */

int control_channels_subscribe(Channels *chs, Client *c, Request *req) {
        struct json_object *v;
        size_t len;
        const char *name = request_channel(req, &len);
        int r;

        assert(name);

        if (channels_deferred(chs) && json_object_object_get_ex(req->json, "lastEventId", &v)) {
                /* Subscribed when the replay is there: live messages come after it (photond-cluster-channels.c). */
                if (len > limits.MAX_CHANNEL_NAME_BYTES)
                        return reply_name_too_long(c, req, len);
                r = replay_deferred(chs, c, req, name, len, last_event_id_from_json(v), true);
                return r < 0 ? r : 0;
        }

        r = channels_subscribe(chs, &c->subscriber, name, len);
        if (r == -EINVAL)
                return reply_name_too_long(c, req, len);
        if (r == -ENOSPC)
                return reply_too_many_channels(c, req);
        if (r == -EDQUOT)
                return client_reply_limit(c, req->id, LIMIT_MAX_SUBSCRIPTIONS_PER_CLIENT, UINT64_MAX);
        if (r < 0)
                return r;

        /* Replays and refresh_needed go out before the result, as the reference writes them. */
        if (json_object_object_get_ex(req->json, "lastEventId", &v)) {
                r = channels_replay(chs, &c->subscriber, req->id, name, len, last_event_id_from_json(v));
                if (r < 0)
                        return r;
        }

        return client_reply_result(c, req->id, true, channel_reply_data("subscribed", name, len));
}

static int on_subscribe_replay_done(Channels *chs, Client *c, Deferred *d, const ChannelsReplayed *rp) {
        int r;

        r = channels_subscribe(chs, &c->subscriber, d->channel, d->channel_len);
        if (r == -EINVAL)
                return client_reply_limit(c, d->id, LIMIT_MAX_CHANNEL_NAME_BYTES, d->channel_len);
        if (r == -ENOSPC)
                return client_reply_limit(c, d->id, LIMIT_MAX_CHANNELS, UINT64_MAX);
        if (r == -EDQUOT)
                return client_reply_limit(c, d->id, LIMIT_MAX_SUBSCRIPTIONS_PER_CLIENT, UINT64_MAX);
        if (r < 0)
                return r;
        /* Replays and refresh_needed go out before the result, as on one node. */
        r = channels_replay_events(chs, &c->subscriber, d->id, d->channel, d->channel_len, rp);
        if (r < 0)
                return r;
        return client_reply_result(c, d->id, true, channel_reply_data("subscribed", d->channel, d->channel_len));
}

int control_channels_unsubscribe(Channels *chs, Client *c, Request *req) {
        size_t len;
        const char *name = request_channel(req, &len);

        assert(name);

        /* Always a success, subscribed or not (the reference). */
        channels_unsubscribe(chs, &c->subscriber, name, len);
        return client_reply_result(c, req->id, true, channel_reply_data("unsubscribed", name, len));
}

int control_channels_publish(Channels *chs, Client *c, Request *req) {
        ReplyString id, channel;
        const char *name, *message;
        size_t len, message_len = 0;
        uint64_t event_id;
        int r;

        name = request_channel(req, &len);
        assert(name);

        /* A missing message stays missing; null stays null. */
        message = request_member_json(req, "message", &message_len);

        /* Before the publish: once it is out, only its reply may follow. */
        r = reply_string(req, "id", &id);
        if (r >= 0)
                r = reply_string(req, "channel", &channel);
        if (r < 0)
                return r;

        if (channels_deferred(chs))
                r = publish_deferred(chs, c, req->id, strlen(req->id), name, len, message, message_len);
        else
                r = channels_publish_serialized(chs, name, len, message, message_len, &c->subscriber, &event_id);
        if (r == -EINVAL)
                return reply_name_too_long(c, req, len);
        if (r == -EMSGSIZE)
                return client_reply_limit(c, req->id, LIMIT_MAX_MESSAGE_BYTES, message_len);
        if (r == -ENOSPC)
                return reply_too_many_channels(c, req);
        if (r != 0)
                return r < 0 ? r : 0;
        return publish_reply(c, &id, &channel, event_id);
}

int control_channels_publish_line(Channels *chs, Client *c, const char *line, size_t len) {
        PublishScan s;
        uint64_t event_id;
        int r;

        if (!request_scan_publish(line, len, &s))
                return 0;

        if (channels_deferred(chs)) {
                /* The scan's id and channel have no escapes: they are as the general path would read them. */
                r = publish_deferred(chs, c, s.id, s.id_len, s.channel, s.channel_len, s.message, s.message_len);
                if (r == -EINVAL || r == -EMSGSIZE)
                        return 0;
                return r;
        }

        r = channels_publish_serialized(chs, s.channel, s.channel_len, s.message, s.message_len, &c->subscriber,
                                        &event_id);
        /* Refused before anything was published: the general path words the refusal. */
        if (r == -EINVAL || r == -EMSGSIZE || r == -ENOSPC)
                return 0;
        if (r < 0)
                return r;

        /* The scan took id and channel only without escapes: they are echoed between quotes, by the general path's
         * rule too. */
        r = publish_reply(c, &(const ReplyString) { s.id, s.id_len, true },
                          &(const ReplyString) { s.channel, s.channel_len, true }, event_id);
        return r < 0 ? r : 1;
}

typedef struct EventsList {
        FILE *f;
        size_t queued;                  /* the client's queue before the reply */
        uint64_t need;
        size_t n;
        bool over;
} EventsList;

static int events_list_add(const ChannelEvent *e, void *userdata) {
        EventsList *l = userdata;
        /* What the event adds to the reply, bounded from above: its push line's body ("channel":…,"message":…}\n),
         * its channel once more and 80 bytes for the rest. */
        uint64_t body = strlen("\"channel\":") + e->channel_json_len + strlen("}\n");

        if (e->message_json)
                body += strlen(",\"message\":") + e->message_json_len;
        l->need += 80 + e->channel_json_len + body;
        /* A reply that cannot fit the client's queue is no reply: it must refresh anyway. */
        if (l->queued + l->need > limits.MAX_WRITE_QUEUE_BYTES) {
                l->over = true;
                return -ENOBUFS;
        }

        fprintf(l->f, "%s{\"id\":%" PRIu64 ",\"channel\":", l->n++ > 0 ? "," : "", e->id);
        fwrite(e->channel_json, 1, e->channel_json_len, l->f);
        if (e->message_json) {
                fputs(",\"message\":", l->f);
                fwrite(e->message_json, 1, e->message_json_len, l->f);
        }
        fprintf(l->f, ",\"timestamp\":%" PRIi64 "}", e->timestamp);
        return 0;
}

static int send_events_reply(Client *c, const ReplyString *id, const char *events, size_t events_size,
                             bool refresh);

/* get_events_since's answer from the backend's store. */
static int on_events_replay_done(Client *c, Deferred *d, const ChannelsReplayed *rp) {
        _cleanup_free_ char *events = NULL;
        _cleanup_(json_object_putp) struct json_object *oid = NULL;
        EventsList l = { .queued = c->out_bytes };
        bool refresh = rp->refresh_needed;
        size_t events_size = 0;
        ReplyString id = { d->id, strlen(d->id), true };
        int r = 0;

        if (!json_string_is_plain(id.s, id.len)) {
                oid = json_object_new_string(d->id);
                id.s = oid ? json_object_to_json_string_length(oid, JSON_FORMAT_FLAGS, &id.len) : NULL;
                if (!id.s)
                        return -ENOMEM;
                id.quote = false;
        }
        l.f = open_memstream(&events, &events_size);
        if (!l.f)
                return -ENOMEM;
        for (size_t i = 0; i < rp->n_events && r >= 0; i++)
                r = events_list_add(&rp->events[i], &l);
        if (fclose(l.f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r == -ENOBUFS && l.over) {
                refresh = true;
                events_size = 0;
        } else if (r < 0)
                return r;
        return send_events_reply(c, &id, events, events_size, refresh);
}

int control_channels_get_events_since(Channels *chs, Client *c, Request *req) {
        _cleanup_free_ char *events = NULL;
        EventsList l = { .queued = c->out_bytes };
        size_t len = 0, events_size = 0;
        struct json_object *v;
        const char *name;
        bool refresh = false;
        ReplyString id;
        int64_t ts = 0;
        int r;

        name = request_channel(req, &len);
        if (json_object_object_get_ex(req->json, "lastEventId", &v))
                ts = last_event_id_from_json(v);

        r = reply_string(req, "id", &id);
        if (r < 0)
                return r;

        if (channels_deferred(chs) && name && len <= limits.MAX_CHANNEL_NAME_BYTES) {
                /* Cluster mode: what the cluster kept, not what this node happened to buffer. */
                r = replay_deferred(chs, c, req, name, len, ts, false);
                return r < 0 ? r : 0;
        }

        l.f = open_memstream(&events, &events_size);
        if (!l.f)
                return -ENOMEM;
        /* No channel: no buffer, as the reference's lookup of an undefined key. */
        r = channels_events_since(chs, name && len <= limits.MAX_CHANNEL_NAME_BYTES ? name : NULL, len, ts,
                                  events_list_add, &l, &refresh);
        if (fclose(l.f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r == -ENOBUFS && l.over) {
                refresh = true;
                events_size = 0;
        } else if (r < 0)
                return r;
        return send_events_reply(c, &id, events, events_size, refresh);
}

static int send_events_reply(Client *c, const ReplyString *idp, const char *events, size_t events_size,
                             bool refresh) {
        _cleanup_free_ char *text = NULL;
        _cleanup_(shared_buf_unrefp) SharedBuf *b = NULL;
        ReplyString id = *idp;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;
        fputs("{\"type\":\"result\",\"id\":", f);
        if (id.quote)
                fputc('"', f);
        fwrite(id.s, 1, id.len, f);
        if (id.quote)
                fputc('"', f);
        fputs(",\"success\":true,\"data\":{\"events\":[", f);
        fwrite(events, 1, events_size, f);
        fprintf(f, "],\"refreshNeeded\":%s}}\n", refresh ? "true" : "false");
        if (fclose(f) != 0)
                return -ENOMEM;

        b = shared_buf_new(text, size);
        if (!b)
                return -ENOMEM;
        return client_send(c, b, NULL);
}
