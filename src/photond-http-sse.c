/* SPDX-License-Identifier: MIT */

/* Server-Sent Events: GET /v1/events?channel=A&channel=B:* streams what is published on those channels.
 *
 * A stream is a Subscriber of the channels, exactly as a control-socket client is: the channels hand it the
 * control protocol's lines (a channel_message, a refresh_needed) as shared buffers, and apply their own
 * write-queue cap and slow-consumer policy through its ops. The stream keeps a reference to each line until it is
 * written (the channels tell a read refresh_needed from an unread one by its references) and, beside it, the line
 * as an SSE event: "id:" the eventId, "event:" the channel, "data:" the message. A message sent to many streams is
 * converted once (a one-entry cache: the fan-out hands the same buffer to every subscriber in a row).
 *
 * Nothing is written from within the fan-out: the lines queued in a loop iteration are released together after the
 * Manager's flush (HttpRelease), so an event never leaves before the state write that covers it, and then the
 * stream's connection, set aside while it had nothing to read, is resumed. libmicrohttpd pulls the bytes
 * (MHD_create_response_from_callback()) only as fast as the socket takes them: a reader that stops reading leaves
 * its lines queued here, where the cap (MAX_WRITE_QUEUE_BYTES) and the channels' policy (drop its queued messages
 * and send refresh_needed; when it has not read that either, cut it off) bound them. */

#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-http-sse.h"
#include "photond-http.h"
#include "photond-limits.h"
#include "photond-subscriber.h"
#include "shared-buf.h"

/* The request id of a refresh_needed sent for a Last-Event-ID that cannot be replayed (a subscribe's would carry
 * the request's id). */
#define SSE_REPLAY_REQUEST_ID "lastEventId"
#define SSE_HELLO ": photond event stream\n\n"
#define SSE_KEEPALIVE ":\n\n"

typedef struct SseStream SseStream;

typedef struct SseEntry {
        SharedBuf *line;                /* the channels' line (NULL for a comment of ours) */
        SharedBuf *sse;                 /* what is written */
        const void *tag;                /* as the channels gave it: a droppable channel message */
        uint64_t cycle;                 /* the release cycle it was queued in */
} SseEntry;

struct SseStream {
        Subscriber subscriber;
        HttpSse *hub;
        HttpRequest *request;
        LIST_FIELDS(SseStream, streams);
        LIST_FIELDS(SseStream, dirty);
        bool dirty;                     /* on hub->dirty: queued to since the last release */

        SseEntry *queue;                /* a ring: head, n of alloc */
        size_t head, n, alloc;
        size_t offset;                  /* bytes of the first entry's sse already handed to libmicrohttpd */
        size_t queued_bytes;            /* of the lines (what the channels measure against the cap) */
        bool closing;

        /* Cluster mode, a Last-Event-ID: the replays from Redis still to come before the answer */
        unsigned replays_pending;
        bool replays_started;           /* all asked for: the last answer answers the request */
        bool suspended;                 /* the request waits (http_request_suspend()) */
        unsigned refusal_status;        /* the first replay that failed: the request's answer */
        char *refusal;
};

struct HttpSse {
        HttpServer *http;
        Channels *channels;
        LIST_HEAD(SseStream, streams);
        LIST_HEAD(SseStream, dirty);
        HttpRelease release;
        uint64_t cycle;                 /* lines queued now belong to this release cycle */
        uint64_t released;              /* cycles up to this one may be written */
        SharedBuf *render_src, *render_out;     /* the last line converted, and what it became */
        SharedBuf *hello, *keepalive;
        sd_event_source *keepalive_source;
        HttpSseStats stats;
};

static SseStream* stream_from_subscriber(Subscriber *s) {
        return (SseStream*) ((uint8_t*) s - offsetof(SseStream, subscriber));
}

/* ---- converting the control protocol's lines ---- */

/* The end of the JSON value at p, or NULL. The lines are JSON as photond writes it; this only needs to find
 * where each top-level value ends. */
static const char* json_value_end(const char *p, const char *end) {
        unsigned depth = 0;

        if (p >= end)
                return NULL;
        if (*p != '"' && *p != '{' && *p != '[') {
                while (p < end && !strchr(",}] \t\r\n", *p))
                        p++;
                return p;
        }
        for (; p < end; p++) {
                if (*p == '"') {
                        for (p++; p < end && *p != '"'; p++)
                                if (*p == '\\')
                                        p++;
                        if (p >= end)
                                return NULL;
                } else if (*p == '{' || *p == '[')
                        depth++;
                else if (*p == '}' || *p == ']')
                        depth--;
                if (depth == 0)
                        return p + 1;
        }
        return NULL;
}

typedef struct LineParts {
        const char *type, *event_id, *channel, *message;        /* values as JSON text */
        size_t type_len, event_id_len, channel_len, message_len;
} LineParts;

static const char* skip_ws(const char *p, const char *end) {
        while (p < end && strchr(" \t\r\n", *p))
                p++;
        return p;
}

/* The top-level members of one JSON object line that an SSE event needs. -EINVAL if it is not one. */
static int line_parts(const char *p, size_t size, LineParts *ret) {
        const char *end = p + size;
        LineParts parts = {};

        p = skip_ws(p, end);
        if (p >= end || *p++ != '{')
                return -EINVAL;
        for (;;) {
                const char *key, *key_end, *v, *v_end;

                p = skip_ws(p, end);
                if (p < end && *p == '}')
                        break;
                if (p >= end || *p != '"' || !(key_end = json_value_end(p, end)))
                        return -EINVAL;
                key = p + 1;
                p = skip_ws(key_end, end);
                if (p >= end || *p++ != ':')
                        return -EINVAL;
                v = skip_ws(p, end);
                v_end = json_value_end(v, end);
                if (!v_end)
                        return -EINVAL;

#define PART(name, field)                                                                               \
                if ((size_t) (key_end - 1 - key) == strlen(name) && strncmp(key, name, strlen(name)) == 0) { \
                        parts.field = v;                                                                \
                        parts.field##_len = v_end - v;                                                  \
                }
                PART("type", type);
                PART("eventId", event_id);
                PART("channel", channel);
                PART("message", message);
#undef PART

                p = skip_ws(v_end, end);
                if (p < end && *p == ',')
                        p++;
        }
        *ret = parts;
        return 0;
}

static bool json_string_is(const char *v, size_t len, const char *s) {
        return len == strlen(s) + 2 && v[0] == '"' && strncmp(v + 1, s, strlen(s)) == 0;
}

/* "data:" lines for text (one per line of it, as SSE wants; photond's JSON has no line breaks, but the format must
 * not depend on that). Returns the end. */
static char* put_data(char *p, const char *text, size_t len) {
        for (;;) {
                size_t n = 0;

                while (n < len && text[n] != '\n' && text[n] != '\r')
                        n++;
                p = mempcpy(p, "data: ", 6);
                p = mempcpy(p, text, n);
                *p++ = '\n';
                if (n == len)
                        return p;
                n += text[n] == '\r' && n + 1 < len && text[n + 1] == '\n' ? 2 : 1;
                text += n;
                len -= n;
        }
}

/* A channel_message line becomes "id: <eventId>", "event: <channel>" (the name as JSON writes it, without the
 * quotes: the name itself unless it holds '"', '\' or control characters) and "data: <message>" ("null" for a
 * publish without one); anything else (refresh_needed) "event: <type>" and the whole line as data. */
static SharedBuf* sse_render(const SharedBuf *line) {
        _cleanup_free_ char *text = NULL;
        size_t size = line->size;
        LineParts parts = {};
        char *p;

        while (size > 0 && line->data[size - 1] == '\n')
                size--;
        if (line_parts(line->data, size, &parts) < 0 || !parts.type || parts.type[0] != '"')
                parts = (LineParts) { .type = "\"message\"", .type_len = strlen("\"message\"") };

        /* Room for the worst case: every byte of the data a line break of its own. */
        text = malloc(64 + 2 * parts.type_len + parts.event_id_len + parts.channel_len + 8 * (size + 4));
        if (!text)
                return NULL;
        p = text;
        if (json_string_is(parts.type, parts.type_len, "channel_message") && parts.event_id && parts.channel &&
            parts.channel[0] == '"') {
                p = mempcpy(p, "id: ", 4);
                p = mempcpy(p, parts.event_id, parts.event_id_len);
                p = mempcpy(p, "\nevent: ", 8);
                p = mempcpy(p, parts.channel + 1, parts.channel_len - 2);
                *p++ = '\n';
                p = parts.message ? put_data(p, parts.message, parts.message_len) : put_data(p, "null", 4);
        } else {
                p = mempcpy(p, "event: ", 7);
                p = mempcpy(p, parts.type + 1, parts.type_len - 2);
                *p++ = '\n';
                p = put_data(p, line->data, size);
        }
        *p++ = '\n';
        return shared_buf_new(text, p - text);
}

/* The conversion of line, from the cache when the fan-out hands the same line to the next stream. Only channel
 * messages (tagged) are cached: a reference kept to a refresh_needed would make the channels think it unread. */
static SharedBuf* hub_render(HttpSse *hub, SharedBuf *line, bool cache) {
        SharedBuf *out;

        if (hub->render_src == line)
                return shared_buf_ref(hub->render_out);
        out = sse_render(line);
        if (!out || !cache)
                return out;
        shared_buf_unref(hub->render_src);
        shared_buf_unref(hub->render_out);
        hub->render_src = shared_buf_ref(line);
        hub->render_out = shared_buf_ref(out);
        return out;
}

/* ---- the queue ---- */

static void stream_mark_dirty(SseStream *st) {
        HttpSse *hub = st->hub;

        if (!st->dirty) {
                st->dirty = true;
                LIST_PREPEND(dirty, hub->dirty, st);
        }
        http_server_release(hub->http, &hub->release);
}

/* Takes over sse (and a reference to line). */
static int stream_push(SseStream *st, SharedBuf *line, SharedBuf *sse, const void *tag) {
        if (st->n == st->alloc) {
                size_t na = st->alloc ? st->alloc * 2 : 8;
                SseEntry *q = new(SseEntry, na);

                if (!q) {
                        shared_buf_unref(sse);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < st->n; i++)
                        q[i] = st->queue[(st->head + i) % st->alloc];
                free(st->queue);
                st->queue = q;
                st->head = 0;
                st->alloc = na;
        }
        st->queue[(st->head + st->n++) % st->alloc] = (SseEntry) {
                .line = line ? shared_buf_ref(line) : NULL,
                .sse = sse,
                .tag = tag,
                .cycle = st->hub->cycle,
        };
        st->queued_bytes += line ? line->size : sse->size;
        stream_mark_dirty(st);
        return 0;
}

static void entry_done(SseStream *st, SseEntry *e) {
        st->queued_bytes -= e->line ? e->line->size : e->sse->size;
        shared_buf_unref(e->line);
        shared_buf_unref(e->sse);
        *e = (SseEntry) {};
}

/* ---- the channels' Subscriber ---- */

static int subscriber_send(Subscriber *s, SharedBuf *b, const void *tag) {
        SseStream *st = stream_from_subscriber(s);
        SharedBuf *sse;

        if (st->closing)
                return -ECONNRESET;
        /* As a client's queue: a channel message beyond the cap is the channels' to decide about; an answer (a
         * refresh_needed) always goes on. */
        if (tag && st->queued_bytes + b->size > limits.MAX_WRITE_QUEUE_BYTES)
                return -ENOBUFS;
        sse = hub_render(st->hub, b, tag != NULL);
        if (!sse)
                return -ENOMEM;
        return stream_push(st, b, sse, tag);
}

static size_t subscriber_drop_tagged(Subscriber *s, SubscriberDropFunc cb, void *userdata) {
        SseStream *st = stream_from_subscriber(s);
        size_t kept = 0, dropped = 0;

        for (size_t i = 0; i < st->n; i++) {
                SseEntry *e = &st->queue[(st->head + i) % st->alloc];

                /* Not the one partly written. */
                if (!e->tag || (i == 0 && st->offset > 0))
                        continue;
                bool seen = false;
                /* Each tag once, with its first buffer; the dropped keep their tag and lose their line. */
                for (size_t j = 0; j < i && !seen; j++) {
                        SseEntry *d = &st->queue[(st->head + j) % st->alloc];
                        seen = !d->sse && d->tag == e->tag;
                }
                if (!seen && cb)
                        cb(s, e->tag, e->line, userdata);
                const void *tag = e->tag;
                entry_done(st, e);
                e->tag = tag;
                dropped++;
        }

        /* Compact the survivors in order. */
        for (size_t i = 0; i < st->n; i++) {
                SseEntry e = st->queue[(st->head + i) % st->alloc];

                if (e.sse)
                        st->queue[(st->head + kept++) % st->alloc] = e;
        }
        st->n = kept;
        return dropped;
}

static size_t subscriber_queued_bytes(Subscriber *s) {
        return stream_from_subscriber(s)->queued_bytes;
}

static void subscriber_close_slow(Subscriber *s) {
        SseStream *st = stream_from_subscriber(s);

        if (st->closing)
                return;
        log_warning("Event stream from %s is not reading its events, closing it.",
                    http_request_address(st->request));
        st->closing = true;
        st->hub->stats.n_slow_disconnects++;
        /* The channels drop its subscriptions when this returns; the request ends when libmicrohttpd sees the
         * connection gone (sse_done()). */
        http_request_abort(st->request);
}

static const SubscriberOps sse_subscriber_ops = {
        .send = subscriber_send,
        .drop_tagged = subscriber_drop_tagged,
        .write_now = NULL,              /* never from the fan-out: see the release */
        .queued_bytes = subscriber_queued_bytes,
        .close_slow = subscriber_close_slow,
};

/* ---- the stream ---- */

/* libmicrohttpd wants bytes: what has been released, as much as fits. 0 sets the connection aside. */
static ssize_t sse_read(HttpRequest *req, char *buf, size_t max, void *userdata) {
        SseStream *st = userdata;
        size_t n = 0;

        if (st->closing)
                return -1;
        while (n < max && st->n > 0) {
                SseEntry *e = &st->queue[st->head];
                size_t k;

                if (e->cycle > st->hub->released)
                        break;
                k = MIN(max - n, e->sse->size - st->offset);
                memcpy(buf + n, e->sse->data + st->offset, k);
                n += k;
                st->offset += k;
                if (st->offset < e->sse->size)
                        break;
                entry_done(st, e);
                st->offset = 0;
                st->head = (st->head + 1) % st->alloc;
                st->n--;
        }
        return (ssize_t) n;
}

static SseStream* sse_stream_free(SseStream *st) {
        HttpSse *hub;

        if (!st)
                return NULL;
        hub = st->hub;
        channels_subscriber_gone(hub->channels, &st->subscriber);
        while (st->n > 0) {
                entry_done(st, &st->queue[st->head]);
                st->head = (st->head + 1) % st->alloc;
                st->n--;
        }
        free(st->queue);
        free(st->refusal);
        if (st->dirty)
                LIST_REMOVE(dirty, hub->dirty, st);
        LIST_REMOVE(streams, hub->streams, st);
        hub->stats.n_streams--;
        return mfree(st);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(SseStream*, sse_stream_free);

/* After the Manager's flush: what was queued may leave. */
static void on_release(HttpRelease *r) {
        HttpSse *hub = (HttpSse*) ((uint8_t*) r - offsetof(HttpSse, release));
        SseStream *st;

        hub->released = hub->cycle++;
        while ((st = hub->dirty)) {
                LIST_REMOVE(dirty, hub->dirty, st);
                st->dirty = false;
                http_stream_wake(st->request);
        }
        /* Nothing pins the last converted message past its fan-out. */
        hub->render_src = shared_buf_unref(hub->render_src);
        hub->render_out = shared_buf_unref(hub->render_out);
}

/* A quiet stream gets a comment now and then: proxies and browsers keep it open, and a peer that is gone shows. */
static int on_keepalive(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpSse *hub = userdata;

        LIST_FOREACH(streams, st, hub->streams)
                if (st->n == 0 && !st->closing)
                        (void) stream_push(st, NULL, shared_buf_ref(hub->keepalive), NULL);
        (void) sd_event_source_set_time_relative(s, limits.SSE_KEEPALIVE_S * USEC_PER_SEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ON);
}

typedef struct ChannelArgs {
        const char **names;
        size_t n;
        bool empty;                     /* a channel= without a name */
        bool too_many;
} ChannelArgs;

static enum MHD_Result channel_arg_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        ChannelArgs *a = cls;

        if (!streq(key, "channel"))
                return MHD_YES;
        if (!value || !value[0]) {
                a->empty = true;
                return MHD_YES;
        }
        if (a->n >= limits.MAX_SUBSCRIPTIONS_PER_CLIENT) {
                a->too_many = true;
                return MHD_NO;
        }
        a->names[a->n++] = value;
        return MHD_YES;
}

/* The reference's reading of lastEventId (parseInt(String(v), 10) || 0), for the header's and the query's text. */
static int64_t parse_last_event_id(const char *s) {
        bool negative = false;
        int64_t n = 0;

        s += strspn(s, " \t\n\v\f\r");
        if (*s == '+' || *s == '-')
                negative = *s++ == '-';
        for (; *s >= '0' && *s <= '9'; s++)
                n = n > (INT64_MAX - 9) / 10 ? INT64_MAX : n * 10 + (*s - '0');
        return negative ? -n : n;
}

static int sse_refuse_limit(HttpSse *hub, HttpRequest *req, LimitId id, unsigned status) {
        char text[256];

        hub->stats.n_refused++;
        return http_respond_error(req, status, limit_error(id, UINT64_MAX, text, sizeof(text), NULL), "1");
}

/* ---- cluster mode: Last-Event-ID from Redis ----
 *
 * The channels have a backend (channels_deferred()): a replay comes from Redis, as for a subscribe with
 * lastEventId on the control socket (photond-control-channels.c). Each channel's replay is asked for at once, in
 * order; each answer arrives at the point of Redis' order where the events it lists have been published here and
 * none after it, so the stream subscribes to that channel there and queues the replayed events (or one
 * refresh_needed): live messages follow with no gap and none twice. The request waits for every answer: then it
 * is answered with the stream, or, if one replay could not be made (Redis down, no answer in time), 503
 * {"error":"Cluster unavailable: …"} and no stream at all, so a client never reads a stream that misses events
 * silently. */

typedef struct SseReplay {
        HttpSse *hub;
        size_t len;
        char name[];
} SseReplay;

static void sse_refuse(SseStream *st, unsigned status, const char *text) {
        if (st->refusal_status > 0)
                return;
        st->refusal_status = status;
        st->refusal = strdup(text);
}

/* Every replay has answered: the stream, the refusal, or nothing (cut off meanwhile). */
static int sse_cluster_answer(SseStream *st) {
        HttpRequest *req = st->request;
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        if (st->refusal_status > 0) {
                /* No stream: what was subscribed meanwhile goes (and the queue with the request). */
                channels_subscriber_gone(st->hub->channels, &st->subscriber);
                if (!st->suspended)
                        return st->refusal ? http_respond_error(req, st->refusal_status, st->refusal, NULL) :
                                             -ENOMEM;
                o = json_object_new_object();
                if (!st->refusal || !o || json_add_string(o, "error", st->refusal) < 0)
                        http_request_finish(req, 0, NULL);
                else
                        http_request_finish(req, st->refusal_status, TAKE_PTR(o));
                return 0;
        }
        if (st->closing) {
                if (st->suspended)
                        http_request_finish(req, 0, NULL);
                return 0;
        }
        st->hub->stats.n_opened++;
        if (st->suspended) {
                http_request_finish_stream(req, MHD_HTTP_OK, "text/event-stream", sse_read, st);
                return 0;
        }
        return http_respond_stream(req, MHD_HTTP_OK, "text/event-stream", sse_read, st);
}

static void on_sse_replay_done(Subscriber *s, const ChannelsReplayed *rp, void *userdata) {
        _cleanup_free_ SseReplay *p = userdata;
        SseStream *st;
        char text[256];
        int r;

        if (!s)
                return;         /* the stream is gone */
        st = stream_from_subscriber(s);
        assert(st->replays_pending > 0);
        st->replays_pending--;

        if (st->refusal_status == 0 && !st->closing) {
                if (rp->error < 0) {
                        _cleanup_free_ char *t = NULL;

                        if (asprintf(&t, "Cluster unavailable: %s", rp->reason ?: "unknown error") < 0)
                                t = NULL;
                        sse_refuse(st, MHD_HTTP_SERVICE_UNAVAILABLE, t ?: "Cluster unavailable");
                } else {
                        r = channels_subscribe(p->hub->channels, &st->subscriber, p->name, p->len);
                        if (r == -EINVAL || r == -ENOSPC)
                                sse_refuse(st, r == -ENOSPC ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_REQUEST,
                                           channels_limit_error(r, p->name, NULL, text, sizeof(text)));
                        else if (r == -EDQUOT)
                                sse_refuse(st, MHD_HTTP_BAD_REQUEST,
                                           limit_error(LIMIT_MAX_SUBSCRIPTIONS_PER_CLIENT, UINT64_MAX, text,
                                                       sizeof(text), NULL));
                        else if (r >= 0)
                                r = channels_replay_events(p->hub->channels, &st->subscriber, SSE_REPLAY_REQUEST_ID,
                                                           p->name, p->len, rp);
                        if (r < 0 && st->refusal_status == 0)
                                /* Out of memory: cut off, as a failed answer on the socket. */
                                st->closing = true;
                }
        }

        if (st->replays_pending == 0 && st->replays_started) {
                r = sse_cluster_answer(st);
                if (r < 0)
                        http_request_finish(st->request, 0, NULL);
        }
}

/* Asks for every channel's replay; the request is answered when the last answer came (maybe at once). st is the
 * request's already. */
static int sse_cluster_start(HttpSse *hub, SseStream *st, const ChannelArgs *args, int64_t last_event_id) {
        HttpRequest *req = st->request;
        char text[256];
        int r;

        /* A name over the cap is refused before Redis is asked, as the socket's subscribe does. */
        for (size_t i = 0; i < args->n; i++)
                if (strlen(args->names[i]) > limits.MAX_CHANNEL_NAME_BYTES)
                        return http_respond_error(req, MHD_HTTP_BAD_REQUEST,
                                                  channels_limit_error(-EINVAL, args->names[i], NULL, text,
                                                                       sizeof(text)), NULL);

        for (size_t i = 0; i < args->n && st->refusal_status == 0; i++) {
                size_t len = strlen(args->names[i]);
                SseReplay *p = malloc(offsetof(SseReplay, name) + len + 1);

                if (!p) {
                        sse_refuse(st, MHD_HTTP_SERVICE_UNAVAILABLE, "Out of memory");
                        break;
                }
                p->hub = hub;
                p->len = len;
                memcpy(p->name, args->names[i], len + 1);
                st->replays_pending++;
                r = channels_replay_deferred(hub->channels, p->name, len, last_event_id, &st->subscriber,
                                             on_sse_replay_done, p);
                if (r < 0) {
                        st->replays_pending--;
                        free(p);
                        return r;
                }
        }
        st->replays_started = true;
        if (st->replays_pending == 0)
                /* Answered within the calls (Redis is known to be down), or refused. */
                return sse_cluster_answer(st);
        st->suspended = true;
        http_request_suspend(req);
        return 0;
}

/* GET /v1/events: subscribes, replays when asked, then streams. */
static int sse_complete(HttpRequest *req, void *userdata) {
        HttpSse *hub = userdata;
        _cleanup_(sse_stream_freep) SseStream *st = NULL;
        _cleanup_free_ const char **names = NULL;
        struct MHD_Connection *connection = http_request_connection(req);
        const char *last, *address = http_request_address(req);
        ChannelArgs args;
        unsigned from_address = 0;
        char text[256];
        int r;

        names = new(const char*, limits.MAX_SUBSCRIPTIONS_PER_CLIENT);
        if (!names)
                return -ENOMEM;
        args = (ChannelArgs) { .names = names };
        (void) MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, channel_arg_cb, &args);
        if (args.too_many)
                return http_respond_error(req, MHD_HTTP_BAD_REQUEST,
                                          limit_error(LIMIT_MAX_SUBSCRIPTIONS_PER_CLIENT, UINT64_MAX, text,
                                                      sizeof(text), NULL), NULL);
        if (args.empty || args.n == 0)
                return http_respond_error(req, MHD_HTTP_BAD_REQUEST,
                                          "Name the channels: /v1/events?channel=A&channel=B:*", NULL);

        LIST_FOREACH(streams, o, hub->streams)
                from_address += streq(http_request_address(o->request), address);
        if (hub->stats.n_streams >= limits.SSE_MAX_STREAMS)
                return sse_refuse_limit(hub, req, LIMIT_SSE_MAX_STREAMS, MHD_HTTP_SERVICE_UNAVAILABLE);
        if (from_address >= limits.SSE_MAX_STREAMS_PER_ADDRESS)
                return sse_refuse_limit(hub, req, LIMIT_SSE_MAX_STREAMS_PER_ADDRESS, MHD_HTTP_TOO_MANY_REQUESTS);

        st = new0(SseStream, 1);
        if (!st)
                return -ENOMEM;
        *st = (SseStream) {
                .subscriber.ops = &sse_subscriber_ops,
                .hub = hub,
                .request = req,
        };
        LIST_PREPEND(streams, hub->streams, st);
        hub->stats.n_streams++;

        r = stream_push(st, NULL, shared_buf_ref(hub->hello), NULL);
        if (r < 0)
                return r;

        /* As a browser reconnects (the header) or as a client asks (the query); the header wins. */
        last = http_request_header(req, "Last-Event-ID");
        if (!last)
                last = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "lastEventId");

        if (last && channels_deferred(hub->channels)) {
                SseStream *owned = TAKE_PTR(st);

                /* The request owns the stream from here: sse_done() frees it, whatever the answer. */
                http_request_set_data(req, owned);
                return sse_cluster_start(hub, owned, &args, parse_last_event_id(last));
        }

        /* One subscribe per channel, in order, each with its replay: what the socket does for the same requests. */
        for (size_t i = 0; i < args.n; i++) {
                size_t len = strlen(args.names[i]);
                const char *limit = NULL;

                r = channels_subscribe(hub->channels, &st->subscriber, args.names[i], len);
                if (r == -EDQUOT)
                        limit = limit_error(LIMIT_MAX_SUBSCRIPTIONS_PER_CLIENT, UINT64_MAX, text, sizeof(text), NULL);
                else if (r == -EINVAL || r == -ENOSPC)
                        limit = channels_limit_error(r, args.names[i], NULL, text, sizeof(text));
                if (limit)
                        return http_respond_error(req, r == -ENOSPC ? MHD_HTTP_SERVICE_UNAVAILABLE :
                                                  MHD_HTTP_BAD_REQUEST, limit, NULL);
                if (r < 0)
                        return r;
                if (last) {
                        r = channels_replay(hub->channels, &st->subscriber, SSE_REPLAY_REQUEST_ID, args.names[i],
                                            len, parse_last_event_id(last));
                        if (r < 0)
                                return r;
                        if (st->closing)
                                /* The replay overflowed a queue it never had the chance to write. */
                                return 0;
                }
        }

        r = http_respond_stream(req, MHD_HTTP_OK, "text/event-stream", sse_read, st);
        if (r < 0)
                return r;
        hub->stats.n_opened++;
        http_request_set_data(req, TAKE_PTR(st));
        return 0;
}

static void sse_done(HttpRequest *req, void *userdata) {
        sse_stream_free(http_request_get_data(req));
        http_request_set_data(req, NULL);
}

/* POST /v1/events/token: a stream token for GET /v1/events?…&token=, for a browser's EventSource, which cannot
 * send the API token in a header. Issued to the API token only (the route's default auth). */
static int on_stream_token(HttpRequest *req, void *userdata) {
        HttpSse *hub = userdata;
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        char token[HTTP_STREAM_TOKEN_MAX];
        int64_t expires;
        int r;

        r = http_server_stream_token(hub->http, token, &expires);
        if (r < 0)
                return r;
        o = json_object_new_object();
        if (!o || json_add_string(o, "token", token) < 0 || json_add_int64(o, "expiresAt", expires) < 0)
                return -ENOMEM;
        return http_respond(req, MHD_HTTP_OK, o, NULL);
}

int http_sse_new(HttpServer *http, Channels *channels, HttpSse **ret) {
        _cleanup_(http_sse_freep) HttpSse *hub = NULL;
        int r;

        assert(http);
        assert(channels);
        assert(ret);

        /* Streams stay open and are no unfinished heads to close for room: they may take at most half of the
         * connections not kept in reserve, whatever the settings, so webhooks and /healthz always get in. */
        uint64_t room = (limits.WEBHOOK_MAX_CONNECTIONS - limits.WEBHOOK_RESERVED_CONNECTIONS) / 2;
        if (limits.SSE_MAX_STREAMS > room) {
                log_info("PHOTOND_SSE_MAX_STREAMS lowered from %" PRIu64 " to %" PRIu64 ": event streams may take "
                         "half of the HTTP connections not reserved (PHOTOND_WEBHOOK_MAX_CONNECTIONS=%" PRIu64
                         ", PHOTOND_WEBHOOK_RESERVED_CONNECTIONS=%" PRIu64 ").", limits.SSE_MAX_STREAMS,
                         MAX(room, (uint64_t) 1), limits.WEBHOOK_MAX_CONNECTIONS,
                         limits.WEBHOOK_RESERVED_CONNECTIONS);
                limits.SSE_MAX_STREAMS = MAX(room, (uint64_t) 1);
        }

        hub = new0(HttpSse, 1);
        if (!hub)
                return log_oom();
        *hub = (HttpSse) {
                .http = http,
                .channels = channels,
                .release.cb = on_release,
                .cycle = 1,
                .hello = shared_buf_new(SSE_HELLO, strlen(SSE_HELLO)),
                .keepalive = shared_buf_new(SSE_KEEPALIVE, strlen(SSE_KEEPALIVE)),
        };
        if (!hub->hello || !hub->keepalive)
                return log_oom();

        r = sd_event_add_time_relative(http_server_event(http), &hub->keepalive_source, CLOCK_MONOTONIC,
                                       limits.SSE_KEEPALIVE_S * USEC_PER_SEC, USEC_PER_SEC, on_keepalive, hub);
        if (r < 0)
                return log_error_errno(r, "Failed to add the event stream keep-alive timer: %m");
        (void) sd_event_source_set_enabled(hub->keepalive_source, SD_EVENT_ON);
        (void) sd_event_source_set_description(hub->keepalive_source, "sse-keepalive");

        r = http_server_add_route(http, &(HttpRoute) {
                                          .method = "GET",
                                          .pattern = "/v1/events",
                                          .auth = HTTP_AUTH_TOKEN_OR_STREAM,
                                          .complete = sse_complete,
                                          .done = sse_done,
                                          .userdata = hub,
                                  });
        if (r < 0)
                return log_error_errno(r, "Failed to add the route GET /v1/events: %m");
        r = http_server_add_route(http, &(HttpRoute) {
                                          .method = "POST",
                                          .pattern = "/v1/events/token",
                                          .complete = on_stream_token,
                                          .userdata = hub,
                                  });
        if (r < 0)
                return log_error_errno(r, "Failed to add the route POST /v1/events/token: %m");

        *ret = TAKE_PTR(hub);
        return 0;
}

HttpSse* http_sse_free(HttpSse *hub) {
        if (!hub)
                return NULL;

        /* The HTTP server, freed first, ended every stream (sse_done()) and forgot the release. */
        while (hub->streams)
                sse_stream_free(hub->streams);
        sd_event_source_disable_unref(hub->keepalive_source);
        shared_buf_unref(hub->render_src);
        shared_buf_unref(hub->render_out);
        shared_buf_unref(hub->hello);
        shared_buf_unref(hub->keepalive);
        return mfree(hub);
}

const HttpSseStats* http_sse_stats(HttpSse *hub) {
        assert(hub);
        return &hub->stats;
}
