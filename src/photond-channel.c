/* SPDX-License-Identifier: MIT */

/* Pub/sub channels.
 *
 * Every channel key (exact or a literal "P:*") is one Channel in a hash table. A publish looks up its Channel and,
 * through the channel's Prefix, the "P:*" Channel of its wildcard subscribers: two pointer hops, no string work.
 * The message is serialized once into a SharedBuf; every subscriber's write queue and the replay buffer hold a
 * reference to those bytes. A per-publish generation stamp on each subscriber gives one that matches exactly and
 * by wildcard a single copy without any set.
 *
 * The replay buffer keeps each event's live line and two offsets into it, so a replay or get_events_since reply
 * is assembled by copying bytes, never by parsing JSON. Events are on two lists: their channel's (500 per channel,
 * as the reference) and a global one in publish order, which is also age order, so expiry and the total-bytes cap
 * always drop the globally oldest event in O(1).
 *
 * A subscriber whose write queue is full loses its queued channel messages and is told so with one refresh_needed
 * per channel it lost; when its queue fills again before it has read those notices, it is disconnected.
 *
 * The channels deliver to Subscribers (photond-subscriber.h) through their ops, one indirect call per subscriber
 * per message, and know nothing of what they are, nor of requests: the control socket's publish, subscribe and
 * get_events_since are photond-control-channels.c's, which calls the functions here. A publish takes its message
 * as JSON text (channels_publish_serialized()), so the control socket's fast path, which scans a plain publish
 * without building JSON objects (json-c's parse alone costs more than a fan-out to ten subscribers), hands over the
 * message's bytes as they came. */

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <uthash.h>

#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-limits.h"

/* eventIds are reserved this far ahead (in ms) in state.json, so under steady publishing the file is written at
 * most once per this many milliseconds, and after a restart ids continue above everything issued before. Faster
 * than one publish per millisecond, ids run ahead of the clock and a block lasts less: one used up within a
 * second is followed by one twice as large (up to EVENT_ID_RESERVE_MAX), so the mark's fsync, which holds the
 * loop iteration's output, comes about once a second at any rate instead of up to a hundred times; a block that
 * lasted over 10 s is followed by the base size again. A restart skips at most one block. */
#define EVENT_ID_RESERVE 10000
#define EVENT_ID_RESERVE_MAX (UINT64_C(1) << 24)
#define EVENT_ID_RESERVE_GROW_MS 1000
#define EVENT_ID_RESERVE_RESET_MS 10000

typedef struct Channel Channel;
typedef struct Prefix Prefix;
typedef struct Event Event;
typedef struct Subscription Subscription;
typedef struct SubscriberState SubscriberState;

/* One subscriber on one channel key. */
struct Subscription {
        Subscriber *sub;
        Channel *channel;
        LIST_FIELDS(Subscription, by_channel);
        LIST_FIELDS(Subscription, by_sub);
};

/* Per subscriber (Subscriber.subscriptions); gone with its last subscription. */
struct SubscriberState {
        LIST_HEAD(Subscription, subscriptions);
        uint64_t generation;            /* the last publish queued to this subscriber */
        SharedBuf *refresh_marker;      /* the last slow-consumer notice; still queued = not read yet */
        bool doomed;                    /* to be disconnected once the current fan-out is done */
};

struct Event {
        LIST_FIELDS(Event, by_channel); /* the channel's events, newest first */
        LIST_FIELDS(Event, all);        /* every buffered event, newest first */
        Channel *channel;
        uint64_t id;
        int64_t timestamp;              /* wall clock, ms */
        uint64_t mono_ms;               /* ageing: wall-clock steps neither expire nor keep events */
        SharedBuf *line;                /* the live channel_message line */
        uint32_t body_offset;           /* where "channel": starts */
        uint32_t message_offset;        /* where the message value starts; 0: no message key */
};

/* Everything that shares a wildcard prefix P. */
struct Prefix {
        char *name;
        UT_hash_handle hh;
        LIST_HEAD(Channel, members);    /* channels whose publishes reach "P:*" */
        Channel *wildcard;              /* the channel "P:*", while it exists */
        unsigned n_refs;                /* members + wildcard */
        uint64_t floor;                 /* a wildcard replay from below this eventId may have lost events */
};

struct Channel {
        char *name;
        size_t name_len;
        char *name_json;                /* the name as a JSON string, copied into every line */
        size_t name_json_len;
        UT_hash_handle hh;
        uint64_t serial;                /* write-queue tag: never reused, unlike the address */
        Prefix *prefix;
        LIST_FIELDS(Channel, members);
        Prefix *serves;                 /* set when the name is "X:*": the prefix X it receives from */
        LIST_HEAD(Subscription, subscribers);
        unsigned n_subscribers;
        LIST_HEAD(Event, events);
        Event *oldest;
        unsigned n_events;
        uint64_t bytes;
        uint64_t last_event_id;
        unsigned n_pins;                /* in use by a publish: not freed even when empty */
};

struct Channels {
        ChannelsHooks hooks;
        Channel *channels;
        Prefix *prefixes;
        unsigned n_channels;
        unsigned n_subscribed;          /* channels with at least one subscriber */

        LIST_HEAD(Event, events);
        Event *oldest;
        uint64_t n_events;
        uint64_t bytes;

        uint64_t last_event_id;         /* the greatest id issued, or reserved before a restart */
        uint64_t reserved_event_id;     /* persisted high-water mark */
        uint64_t saved_event_id;        /* the mark as last written successfully: ids up to it are safe */
        uint64_t reserve_block;         /* how far the next reservation reaches (EVENT_ID_RESERVE and up) */
        uint64_t reserved_mono_ms;      /* when a publish last raised the mark (0: never) */
        uint64_t next_serial;
        uint64_t generation;

        Subscriber **doomed;
        size_t n_doomed, n_doomed_alloc;

        uint64_t n_subscriptions;       /* subscriber-channel pairs */
        uint64_t n_published;
        uint64_t n_delivered;
        uint64_t n_messages_dropped;
        uint64_t n_refresh_sent;
        uint64_t n_slow_disconnects;

        ChannelsClock clock;
};

/* What an event costs besides its line's bytes. */
#define EVENT_OVERHEAD (sizeof(Event) + offsetof(SharedBuf, data) + 1)

#define REPLAY_TAIL ",\"replay\":true}\n"
#define HEAD_MAX 96

/* {"type":"channel_message","id":"ch_<id>","eventId":<id>,  (or "replay_<id>"): the head of a line, written
 * by hand because it is written for every event. Returns its length (< HEAD_MAX). */
static size_t line_head(char *buf, bool replay, uint64_t id) {
        static const char a[] = "{\"type\":\"channel_message\",\"id\":\"", b[] = "\",\"eventId\":";
        char *p = buf;

        p = mempcpy(p, a, strlen(a));
        p = replay ? mempcpy(p, "replay_", strlen("replay_")) : mempcpy(p, "ch_", strlen("ch_"));
        p = json_put_uint64(p, id);
        p = mempcpy(p, b, strlen(b));
        p = json_put_uint64(p, id);
        *p++ = ',';
        return p - buf;
}

/* The batch's time (the owner's LoopClock): every publish of one batch sees the same instant, which costs no clock
 * read per message; eventIds still rise by one within it. */
static int64_t default_wall_ms(void *userdata) {
        Channels *chs = userdata;

        return (int64_t) (loop_clock_now(chs->hooks.clock, CLOCK_REALTIME) / USEC_PER_MSEC);
}

static uint64_t default_mono_ms(void *userdata) {
        Channels *chs = userdata;

        return loop_clock_now(chs->hooks.clock, CLOCK_MONOTONIC) / USEC_PER_MSEC;
}

void channels_set_clock(Channels *chs, const ChannelsClock *clock) {
        chs->clock = clock ? *clock : (ChannelsClock) { default_wall_ms, default_mono_ms, chs };
}

size_t channel_prefix_length(const char *channel, size_t len) {
        const char *colon = memchr(channel, ':', len);

        /* The reference: "a:b:c" → "a", but ":a", "a:" and "plain" stay whole. */
        if (colon && colon > channel && (size_t) (colon - channel) + 1 < len)
                return colon - channel;
        return len;
}

uint64_t event_id_next(uint64_t last, int64_t now) {
        if (now > 0 && (uint64_t) now > last)
                return (uint64_t) now;
        return last + 1;
}

static bool key_is_wildcard(const char *name, size_t len) {
        /* "P:*" collects the channels whose prefix is P; keys like "a:b:*" only match themselves. */
        return len >= 2 && name[len - 2] == ':' && name[len - 1] == '*' &&
                channel_prefix_length(name, len) == len - 2;
}

static const void* channel_tag(const Channel *channel) {
        return (const void*) (uintptr_t) channel->serial;
}

/* Names may hold any JSON string, NUL included: copied by length. */
static char* name_dup(const char *s, size_t len) {
        char *n = malloc(len + 1);

        if (!n)
                return NULL;
        memcpy(n, s, len);
        n[len] = '\0';
        return n;
}

static char* json_string_new(const char *s, size_t len, size_t *ret_len) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_string_len(s, (int) len);
        const char *text;
        size_t n;

        if (!o)
                return NULL;
        text = json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &n);
        if (!text)
                return NULL;
        *ret_len = n;
        return strndup(text, n);
}

/* ---- prefixes and channels ---- */

static Prefix* prefix_ref(Channels *chs, const char *name, size_t len) {
        Prefix *p;

        HASH_FIND(hh, chs->prefixes, name, len, p);
        if (p) {
                p->n_refs++;
                return p;
        }

        p = new0(Prefix, 1);
        if (!p)
                return NULL;
        p->name = name_dup(name, len);
        if (!p->name)
                return mfree(p);
        /* Nothing is known about what this prefix had before it existed. */
        p->floor = chs->last_event_id;
        p->n_refs = 1;
        HASH_ADD_KEYPTR(hh, chs->prefixes, p->name, len, p);
        return p;
}

static void prefix_unref(Channels *chs, Prefix *p) {
        if (!p || --p->n_refs > 0)
                return;
        HASH_DEL(chs->prefixes, p);
        free(p->name);
        free(p);
}

static Channel* channel_find(Channels *chs, const char *name, size_t len) {
        Channel *channel;

        HASH_FIND(hh, chs->channels, name, len, channel);
        return channel;
}

/* The channel count or the count of subscribed channels changed: the D-Bus properties Channels and Subscriptions
 * are announced (coalesced by the owner). Called only when a count changes, so a publish on an existing channel
 * pays nothing. */
static void channels_changed(Channels *chs) {
        if (chs->hooks.counts_changed)
                chs->hooks.counts_changed(chs->hooks.userdata);
}

static void channel_free(Channels *chs, Channel *channel) {
        assert(!channel->subscribers);
        assert(!channel->events);

        HASH_DEL(chs->channels, channel);
        chs->n_channels--;
        channels_changed(chs);
        if (channel->prefix) {
                LIST_REMOVE(members, channel->prefix->members, channel);
                prefix_unref(chs, channel->prefix);
        }
        if (channel->serves) {
                channel->serves->wildcard = NULL;
                prefix_unref(chs, channel->serves);
        }
        free(channel->name);
        free(channel->name_json);
        free(channel);
}

static void channel_maybe_free(Channels *chs, Channel *channel) {
        if (channel->n_pins > 0 || channel->subscribers || channel->events)
                return;
        channel_free(chs, channel);
}

static void event_drop(Channels *chs, Event *e) {
        Channel *channel = e->channel;
        uint64_t size = e->line->size + EVENT_OVERHEAD;

        if (channel->oldest == e)
                channel->oldest = e->by_channel_prev;
        LIST_REMOVE(by_channel, channel->events, e);
        channel->n_events--;
        channel->bytes -= size;

        if (chs->oldest == e)
                chs->oldest = e->all_prev;
        LIST_REMOVE(all, chs->events, e);
        chs->n_events--;
        chs->bytes -= size;

        /* A wildcard replay from below this id can no longer be complete. */
        channel->prefix->floor = MAX(channel->prefix->floor, e->id);

        shared_buf_unref(e->line);
        free(e);
        channel_maybe_free(chs, channel);
}

static void channels_expire(Channels *chs) {
        uint64_t now = chs->clock.mono_ms(chs->clock.userdata), cutoff;

        if (now <= limits.REPLAY_WINDOW_MS)
                return;
        cutoff = now - limits.REPLAY_WINDOW_MS;
        /* The global list is in publish order and the monotonic clock never steps back: oldest first. */
        while (chs->oldest && chs->oldest->mono_ms < cutoff)
                event_drop(chs, chs->oldest);
}

static int channel_new(Channels *chs, const char *name, size_t len, Channel **ret) {
        Channel *channel;
        size_t plen;

        /* Channels that exist only for their replay buffer can be reclaimed: drop the oldest events until one
         * of them goes. Channels with subscribers cannot. */
        while (chs->n_channels >= limits.MAX_CHANNELS && chs->n_channels > chs->n_subscribed && chs->oldest)
                event_drop(chs, chs->oldest);
        if (chs->n_channels >= limits.MAX_CHANNELS)
                return -ENOSPC;

        channel = new0(Channel, 1);
        if (!channel)
                return -ENOMEM;
        channel->name = name_dup(name, len);
        channel->name_len = len;
        channel->name_json = json_string_new(name, len, &channel->name_json_len);
        if (!channel->name || !channel->name_json)
                goto oom;

        plen = channel_prefix_length(name, len);
        channel->prefix = prefix_ref(chs, name, plen);
        if (!channel->prefix)
                goto oom;
        if (len >= 2 && name[len - 2] == ':' && name[len - 1] == '*') {
                channel->serves = prefix_ref(chs, name, len - 2);
                if (!channel->serves) {
                        prefix_unref(chs, channel->prefix);
                        goto oom;
                }
                channel->serves->wildcard = channel;
        }
        LIST_PREPEND(members, channel->prefix->members, channel);

        channel->serial = ++chs->next_serial;
        HASH_ADD_KEYPTR(hh, chs->channels, channel->name, len, channel);
        chs->n_channels++;
        channels_changed(chs);
        *ret = channel;
        return 0;

oom:
        free(channel->name);
        free(channel->name_json);
        free(channel);
        return -ENOMEM;
}

static int channel_get(Channels *chs, const char *name, size_t len, Channel **ret) {
        Channel *channel = channel_find(chs, name, len);

        if (channel) {
                *ret = channel;
                return 0;
        }
        return channel_new(chs, name, len, ret);
}

/* ---- subscriptions ---- */

static SubscriberState* subscriber_state(Subscriber *sub) {
        return sub->subscriptions;
}

static Subscription* subscription_find(Subscriber *sub, Channel *channel) {
        SubscriberState *ss = subscriber_state(sub);

        if (!ss)
                return NULL;
        /* Walk the shorter list: a subscriber's few keys, or a channel's few subscribers. */
        if (sub->n_subscriptions <= channel->n_subscribers) {
                LIST_FOREACH(by_sub, s, ss->subscriptions)
                        if (s->channel == channel)
                                return s;
        } else
                LIST_FOREACH(by_channel, s, channel->subscribers)
                        if (s->sub == sub)
                                return s;
        return NULL;
}

static void subscriber_state_free(Subscriber *sub) {
        SubscriberState *ss = subscriber_state(sub);

        if (!ss)
                return;
        assert(!ss->subscriptions);
        shared_buf_unref(ss->refresh_marker);
        sub->subscriptions = mfree(ss);
}

static int subscription_add(Channels *chs, Subscriber *sub, Channel *channel) {
        SubscriberState *ss = subscriber_state(sub);
        Subscription *s;

        if (!ss) {
                ss = new0(SubscriberState, 1);
                if (!ss)
                        return -ENOMEM;
                sub->subscriptions = ss;
        }

        s = new(Subscription, 1);
        if (!s) {
                if (!ss->subscriptions)
                        subscriber_state_free(sub);
                return -ENOMEM;
        }
        *s = (Subscription) {
                .sub = sub,
                .channel = channel,
        };
        LIST_PREPEND(by_channel, channel->subscribers, s);
        if (channel->n_subscribers++ == 0) {
                chs->n_subscribed++;
                channels_changed(chs);
        }
        LIST_PREPEND(by_sub, ss->subscriptions, s);
        sub->n_subscriptions++;
        chs->n_subscriptions++;
        return 0;
}

static void subscription_free(Channels *chs, Subscription *s) {
        Channel *channel = s->channel;
        Subscriber *sub = s->sub;
        SubscriberState *ss = subscriber_state(sub);

        LIST_REMOVE(by_channel, channel->subscribers, s);
        if (--channel->n_subscribers == 0) {
                chs->n_subscribed--;
                channels_changed(chs);
        }
        LIST_REMOVE(by_sub, ss->subscriptions, s);
        sub->n_subscriptions--;
        chs->n_subscriptions--;
        free(s);

        if (!ss->subscriptions)
                subscriber_state_free(sub);
        channel_maybe_free(chs, channel);
}

void channels_subscriber_gone(Channels *chs, Subscriber *sub) {
        SubscriberState *ss;

        if (!chs)
                return;
        if (chs->hooks.backend && chs->hooks.backend->subscriber_gone)
                chs->hooks.backend->subscriber_gone(sub, chs->hooks.backend->userdata);
        while ((ss = subscriber_state(sub)) && ss->subscriptions)
                subscription_free(chs, ss->subscriptions);
        subscriber_state_free(sub);
}

int channels_foreach_subscription(Channels *chs, Subscriber *sub, ChannelKeyCallback cb, void *userdata) {
        SubscriberState *ss = subscriber_state(sub);
        int r;

        if (!ss)
                return 0;
        LIST_FOREACH(by_sub, s, ss->subscriptions) {
                r = cb(s->channel->name, s->channel->name_len, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- slow consumers ---- */

static void subscriber_doom(Channels *chs, Subscriber *sub) {
        SubscriberState *ss = subscriber_state(sub);

        if (ss->doomed)
                return;
        if (chs->n_doomed == chs->n_doomed_alloc) {
                size_t na = MAX(chs->n_doomed_alloc * 2, (size_t) 8);
                Subscriber **n = realloc(chs->doomed, na * sizeof(Subscriber*));
                if (!n) {
                        /* Cannot remember it: leave it connected, its queue stays capped anyway. */
                        log_oom();
                        return;
                }
                chs->doomed = n;
                chs->n_doomed_alloc = na;
        }
        ss->doomed = true;
        chs->doomed[chs->n_doomed++] = sub;
}

/* Closes the subscribers doomed during a fan-out, once no list is being walked any more. */
static void channels_reap(Channels *chs) {
        _cleanup_free_ Subscriber **doomed = TAKE_PTR(chs->doomed);
        size_t n = chs->n_doomed;

        /* Taken over first: a disconnect may publish (and reap) again. */
        chs->n_doomed = chs->n_doomed_alloc = 0;
        for (size_t i = 0; i < n; i++) {
                Subscriber *sub = doomed[i];
                SubscriberState *ss = subscriber_state(sub);

                /* Gone meanwhile (an earlier close of this loop took it along): its state went with it. */
                if (!ss || !ss->doomed)
                        continue;
                chs->n_slow_disconnects++;
                sub->ops->close_slow(sub);
                /* The owner normally dropped the subscriptions while closing; if not, they go now. */
                channels_subscriber_gone(chs, sub);
        }
}

typedef struct LostChannels {
        char **names;
        size_t n, alloc;
} LostChannels;

static void lost_channels_done(LostChannels *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->names[i]);
        free(l->names);
}

/* The channel of a channel_message line: the first "channel": key (the header before it is fixed). */
static char* line_channel(const SharedBuf *b) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        json_tokener *tok;
        const char *p;

        p = memmem(b->data, b->size, "\"channel\":", 10);
        if (!p)
                return NULL;
        p += 10;
        tok = json_tokener_new();
        if (!tok)
                return NULL;
        o = json_tokener_parse_ex(tok, p, (int) (b->size - (p - b->data)));
        json_tokener_free(tok);
        if (!o || !json_object_is_type(o, json_type_string))
                return NULL;
        return strdup(json_object_get_string(o));
}

static void on_tagged_dropped(Subscriber *sub, const void *tag, SharedBuf *first, void *userdata) {
        LostChannels *l = userdata;
        char *name;

        if (l->n == l->alloc) {
                size_t na = MAX(l->alloc * 2, (size_t) 4);
                char **n = realloc(l->names, na * sizeof(char*));
                if (!n)
                        return;
                l->names = n;
                l->alloc = na;
        }
        name = line_channel(first);
        if (name)
                l->names[l->n++] = name;
}

static SharedBuf* refresh_notice_new(const char *name, uint64_t event_id) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        char id[64];

        snprintf(id, sizeof(id), "refresh_%" PRIu64, event_id);
        if (!o ||
            json_add_string(o, "type", "refresh_needed") < 0 ||
            json_add_string(o, "id", id) < 0 ||
            json_add_string(o, "channel", name) < 0)
                return NULL;
        return shared_buf_new_json_line(o);
}

/* The queue of sub is full while line (tagged tag, the event event_id) is due: drop its queued channel messages,
 * tell it which channels it lost, then queue line. A subscriber that has not read the notices of its previous
 * overflow yet, or whose queue is full of replies it does not read, is disconnected instead. */
static void subscriber_overflow(Channels *chs, Subscriber *sub, SharedBuf *line, const void *tag,
                                uint64_t event_id) {
        SubscriberState *ss = subscriber_state(sub);
        _cleanup_(lost_channels_done) LostChannels lost = {};
        SharedBuf **notices = NULL;
        size_t need;

        if (ss->refresh_marker && ss->refresh_marker->n_ref > 1) {
                chs->n_messages_dropped++;
                subscriber_doom(chs, sub);
                return;
        }

        chs->n_messages_dropped += sub->ops->drop_tagged(sub, on_tagged_dropped, &lost);

        notices = new0(SharedBuf*, lost.n);
        if (!notices) {
                chs->n_messages_dropped++;
                subscriber_doom(chs, sub);
                return;
        }
        need = line->size;
        for (size_t i = 0; i < lost.n; i++) {
                notices[i] = refresh_notice_new(lost.names[i], event_id);
                if (!notices[i]) {
                        need = SIZE_MAX;
                        break;
                }
                need += notices[i]->size;
        }

        if (need == SIZE_MAX || sub->ops->queued_bytes(sub) + need > limits.MAX_WRITE_QUEUE_BYTES) {
                chs->n_messages_dropped++;
                subscriber_doom(chs, sub);
        } else {
                for (size_t i = 0; i < lost.n; i++) {
                        (void) sub->ops->send(sub, notices[i], NULL);
                        shared_buf_unref(ss->refresh_marker);
                        ss->refresh_marker = shared_buf_ref(notices[i]);
                        chs->n_refresh_sent++;
                }
                if (sub->ops->send(sub, line, tag) >= 0)
                        chs->n_delivered++;
        }

        for (size_t i = 0; i < lost.n; i++)
                shared_buf_unref(notices[i]);
        free(notices);
}

/* Queues line for sub; true if it went on the queue as its last entry without anything dropped first. */
static bool subscriber_deliver(Channels *chs, Subscriber *sub, SharedBuf *line, const void *tag,
                               uint64_t event_id) {
        int r;

        if (subscriber_state(sub)->doomed)
                return false;
        r = sub->ops->send(sub, line, tag);
        if (r >= 0)
                chs->n_delivered++;
        else if (r == -ENOBUFS)
                subscriber_overflow(chs, sub, line, tag, event_id);
        else
                chs->n_messages_dropped++;
        return r >= 0;
}

static void channel_fanout(Channels *chs, Channel *channel, SharedBuf *line, uint64_t event_id,
                           Subscriber *exclude, bool local) {
        Channel *wild = channel->prefix->wildcard;
        const void *tag = channel_tag(channel);
        uint64_t gen = ++chs->generation;
        /* Only what a client published (or a provider emitted) may be written while fanning out: the daemon's own
         * events (exclude NULL: jobs:*, webhooks:*, system:*) report changes whose files are written at the end of
         * the iteration, so they wait for the flush that comes after those writes. A backend's messages (!local:
         * cluster mode) come many to a read from Redis: written at once, each would cost a write per subscriber,
         * so they wait for the iteration's flush too, which writes each subscriber's batch in one go. */
        bool stamp, write_now = local && exclude && chs->hooks.may_write_now &&
                chs->hooks.may_write_now(chs->hooks.userdata);

        if (wild == channel)
                wild = NULL;
        /* Stamping is only needed when a subscriber could be on both lists. */
        stamp = wild && wild->subscribers;

        LIST_FOREACH(by_channel, s, channel->subscribers) {
                if (s->sub == exclude)
                        continue;
                if (stamp)
                        subscriber_state(s->sub)->generation = gen;
                if (subscriber_deliver(chs, s->sub, line, tag, event_id) && write_now && s->sub->ops->write_now)
                        s->sub->ops->write_now(s->sub);
        }

        if (!stamp)
                return;
        LIST_FOREACH(by_channel, s, wild->subscribers) {
                if (s->sub == exclude || subscriber_state(s->sub)->generation == gen)
                        continue;
                if (subscriber_deliver(chs, s->sub, line, tag, event_id) && write_now && s->sub->ops->write_now)
                        s->sub->ops->write_now(s->sub);
        }
}

/* ---- publishing ---- */

static int event_line_new(const Channel *channel, uint64_t id, const char *message, size_t message_len,
                          Event *e) {
        char head[HEAD_MAX];
        size_t size, n;
        char *p;

        n = line_head(head, false, id);
        size = n + strlen("\"channel\":") + channel->name_json_len + 2;
        if (message)
                size += strlen(",\"message\":") + message_len;
        if (size > UINT32_MAX)
                return -EMSGSIZE;

        e->line = shared_buf_alloc(size);
        if (!e->line)
                return -ENOMEM;
        p = mempcpy(e->line->data, head, n);
        e->body_offset = n;
        p = mempcpy(p, "\"channel\":", strlen("\"channel\":"));
        p = mempcpy(p, channel->name_json, channel->name_json_len);
        if (message) {
                p = mempcpy(p, ",\"message\":", strlen(",\"message\":"));
                e->message_offset = p - e->line->data;
                p = mempcpy(p, message, message_len);
        }
        *p++ = '}';
        *p++ = '\n';
        assert(p == e->line->data + size);
        return 0;
}

static void event_push(Channels *chs, Channel *channel, Event *e) {
        uint64_t size = e->line->size + EVENT_OVERHEAD;

        e->channel = channel;
        LIST_PREPEND(by_channel, channel->events, e);
        if (!channel->oldest)
                channel->oldest = e;
        channel->n_events++;
        channel->bytes += size;

        LIST_PREPEND(all, chs->events, e);
        if (!chs->oldest)
                chs->oldest = e;
        chs->n_events++;
        chs->bytes += size;

        while (channel->n_events > limits.REPLAY_MAX_EVENTS)
                event_drop(chs, channel->oldest);
        while (chs->bytes > limits.REPLAY_MAX_TOTAL_BYTES && chs->oldest)
                event_drop(chs, chs->oldest);
}

/* Publishes message (serialized JSON; NULL: no "message" key) on channel, which the caller has pinned, as the
 * event id (above chs->last_event_id) at the wall-clock time now. local: published here, not brought by the backend:
 * the id is this node's (the eventId mark follows it) and the pushes may leave at once. */
static int channel_publish(Channels *chs, Channel *channel, const char *message, size_t message_len,
                           Subscriber *exclude, uint64_t id, int64_t now, bool local) {
        Event *e;
        int r;

        e = new0(Event, 1);
        if (!e)
                return -ENOMEM;
        r = event_line_new(channel, id, message, message_len, e);
        if (r < 0) {
                free(e);
                return r;
        }
        e->id = id;
        e->timestamp = now;
        e->mono_ms = chs->clock.mono_ms(chs->clock.userdata);

        chs->last_event_id = channel->last_event_id = id;
        chs->n_published++;
        if (!local)
                ;       /* a backend's id: not this node's to reserve */
        else if (id > chs->reserved_event_id) {
                /* A batch found by busy polling runs ahead of the loop's time; a later publish of the same
                 * iteration may see an earlier one. */
                uint64_t since = e->mono_ms > chs->reserved_mono_ms ? e->mono_ms - chs->reserved_mono_ms : 0;

                if (chs->reserved_mono_ms > 0 && since < EVENT_ID_RESERVE_GROW_MS)
                        chs->reserve_block = MIN(chs->reserve_block * 2, EVENT_ID_RESERVE_MAX);
                else if (chs->reserved_mono_ms == 0 || since > EVENT_ID_RESERVE_RESET_MS)
                        chs->reserve_block = EVENT_ID_RESERVE;
                chs->reserved_mono_ms = e->mono_ms;
                /* Written before any reply of this loop iteration leaves (group commit), so no id handed out
                 * can be issued again after a crash. */
                chs->reserved_event_id = id + chs->reserve_block;
                if (chs->hooks.state_changed)
                        chs->hooks.state_changed(chs->hooks.userdata);
        } else if (id > chs->saved_event_id && chs->hooks.state_changed)
                /* Inside a block whose write has not succeeded yet (only while the state cannot be written, or
                 * later in the iteration that reserved it): the id is no promise before it has, so its reply
                 * waits with that write. */
                chs->hooks.state_changed(chs->hooks.userdata);

        channel_fanout(chs, channel, e->line, id, exclude, local);
        event_push(chs, channel, e);
        channels_reap(chs);
        return 0;
}

/* The caps every publish checks first, whoever numbers it. */
static int publish_sizes_check(size_t len, const char *message, size_t message_len) {
        if (len > limits.MAX_CHANNEL_NAME_BYTES)
                return -EINVAL;
        if (message && message_len > limits.MAX_MESSAGE_BYTES)
                return -EMSGSIZE;
        return 0;
}

static int publish_checked(Channels *chs, const char *name, size_t len, const char *message, size_t message_len,
                           Subscriber *exclude, uint64_t id, int64_t now, bool local) {
        Channel *channel;
        int r;

        channels_expire(chs);
        r = channel_get(chs, name, len, &channel);
        if (r < 0)
                return r;
        channel->n_pins++;
        r = channel_publish(chs, channel, message, message_len, exclude, id, now, local);
        channel->n_pins--;
        channel_maybe_free(chs, channel);
        return r;
}

int channels_publish_serialized(Channels *chs, const char *name, size_t len, const char *message,
                                size_t message_len, Subscriber *exclude, uint64_t *ret_event_id) {
        int64_t now;
        uint64_t id;
        int r;

        assert(chs);
        assert(name);

        r = publish_sizes_check(len, message, message_len);
        if (r < 0)
                return r;

        if (chs->hooks.backend) {
                /* Nobody waits for the id: it comes back through channels_publish_at(). */
                chs->hooks.backend->publish(name, len, message, message_len, exclude, NULL, NULL,
                                            chs->hooks.backend->userdata);
                if (ret_event_id)
                        *ret_event_id = 0;
                return 0;
        }

        now = chs->clock.wall_ms(chs->clock.userdata);
        id = event_id_next(chs->last_event_id, now);
        r = publish_checked(chs, name, len, message, message_len, exclude, id, now, true);
        if (r < 0)
                return r;
        if (ret_event_id)
                *ret_event_id = id;
        return 0;
}

bool channels_deferred(Channels *chs) {
        return chs->hooks.backend;
}

int channels_publish_deferred(Channels *chs, const char *name, size_t len, const char *message,
                              size_t message_len, Subscriber *publisher, ChannelsPublishDone done, void *userdata) {
        int r;

        assert(chs);
        assert(name);

        if (!chs->hooks.backend)
                return -EOPNOTSUPP;
        r = publish_sizes_check(len, message, message_len);
        if (r < 0)
                return r;
        chs->hooks.backend->publish(name, len, message, message_len, publisher, done, userdata,
                                    chs->hooks.backend->userdata);
        return 0;
}

int channels_publish_at(Channels *chs, const char *name, size_t len, const char *message, size_t message_len,
                        Subscriber *exclude, uint64_t event_id, int64_t timestamp) {
        int r;

        assert(chs);
        assert(name);

        r = publish_sizes_check(len, message, message_len);
        if (r < 0)
                return r;
        /* The buffers, the floors and a replay's "ahead of every id" rely on ids that only rise. */
        if (event_id <= chs->last_event_id)
                return -ESTALE;
        return publish_checked(chs, name, len, message, message_len, exclude, event_id, timestamp, false);
}

uint64_t channels_last_event_id(Channels *chs) {
        /* Not the reservation ahead of the clock: an id handed out is at most this (the loaded mark included). */
        return chs->last_event_id;
}

int channels_publish(Channels *chs, const char *channel, struct json_object *message, Subscriber *exclude,
                     uint64_t *ret_event_id) {
        const char *text = NULL;
        size_t len = 0;

        if (!chs || !channel)
                return -EINVAL;
        if (message) {
                text = json_object_to_json_string_length(message, JSON_FORMAT_FLAGS, &len);
                if (!text)
                        return -ENOMEM;
        }
        return channels_publish_serialized(chs, channel, strlen(channel), text, len, exclude, ret_event_id);
}

/* Empties the replay buffer of channel, which the caller has pinned. */
static void channel_drop_events(Channels *chs, Channel *channel) {
        while (channel->events)
                event_drop(chs, channel->events);
}

int channels_gap(Channels *chs, const char *name, size_t len) {
        _cleanup_(shared_buf_unrefp) SharedBuf *notice = NULL;
        Channel *channel;

        assert(chs);

        channel = channel_find(chs, name, len);
        if (!channel)
                return 0;
        channel->n_pins++;

        /* Replays from before now cannot be complete: an exact replay is complete from its channel's oldest
         * buffered event on, so the buffers go; a wildcard replay from below its prefix's floor is not. */
        if (channel->serves) {
                Channel *m, *next;

                channel->serves->floor = MAX(channel->serves->floor, chs->last_event_id);
                for (m = channel->serves->members; m; m = next) {
                        m->n_pins++;
                        channel_drop_events(chs, m);
                        next = m->members_next;
                        m->n_pins--;
                        channel_maybe_free(chs, m);
                }
        }
        channel_drop_events(chs, channel);
        channel->prefix->floor = MAX(channel->prefix->floor, chs->last_event_id);

        if (channel->subscribers) {
                notice = refresh_notice_new(channel->name, chs->last_event_id);
                if (!notice) {
                        channel->n_pins--;
                        channel_maybe_free(chs, channel);
                        return -ENOMEM;
                }
                LIST_FOREACH(by_channel, s, channel->subscribers)
                        if (subscriber_deliver(chs, s->sub, notice, NULL, chs->last_event_id))
                                chs->n_refresh_sent++;
        }
        channel->n_pins--;
        channel_maybe_free(chs, channel);
        channels_reap(chs);
        return 0;
}

/* ---- replay ---- */
/* ---- replay ---- */

typedef struct Since {
        Event **events;                 /* newer than ts, in eventId order */
        size_t n;
        bool refresh;
} Since;

static void since_done(Since *s) {
        free(s->events);
}

static int since_collect(Since *s, const Channel *channel, int64_t ts) {
        size_t k = 0;
        Event **n;

        LIST_FOREACH(by_channel, e, channel->events) {
                if ((int64_t) e->id <= ts)
                        break;
                k++;
        }
        if (k == 0)
                return 0;
        n = realloc(s->events, (s->n + k) * sizeof(Event*));
        if (!n)
                return -ENOMEM;
        s->events = n;
        /* The channel's list is newest first. */
        size_t i = s->n + k;
        LIST_FOREACH(by_channel, e, channel->events) {
                if (i == s->n)
                        break;
                s->events[--i] = e;
        }
        s->n += k;
        return 0;
}

static int event_cmp(const void *a, const void *b) {
        const Event *x = *(const Event* const*) a, *y = *(const Event* const*) b;

        return x->id < y->id ? -1 : x->id > y->id;
}

/* The reference's getEventsSince() on one key, plus DECISIONS.md: a lastEventId above the last issued id needs a
 * refresh, and "P:*" replays every channel with prefix P (wildcardReplay). */
static int events_since(Channels *chs, const char *key, size_t len, int64_t ts, Since *ret) {
        Since s = {};
        int r;

        channels_expire(chs);

        if (ts > 0 && (uint64_t) ts > chs->last_event_id) {
                ret->refresh = true;
                return 0;
        }

        if (key && key_is_wildcard(key, len)) {
                Prefix *p;
                bool any = false;

                HASH_FIND(hh, chs->prefixes, key, len - 2, p);
                if (!p) {
                        ret->refresh = ts > 0;
                        return 0;
                }
                LIST_FOREACH(members, channel, p->members)
                        any = any || channel->events;
                if (ts <= 0 && any) {
                        ret->refresh = true;
                        return 0;
                }
                /* A gap still comes with what is buffered after ts (wildcards are photond's own, so this adds to
                 * no reference answer): after a state loss that is the locks-reset notice, which a client asking
                 * from before the restart must see. */
                s.refresh = ts > 0 && (uint64_t) ts < p->floor;
                LIST_FOREACH(members, channel, p->members) {
                        r = since_collect(&s, channel, ts);
                        if (r < 0) {
                                since_done(&s);
                                return r;
                        }
                }
                if (s.n > 1)
                        qsort(s.events, s.n, sizeof(Event*), event_cmp);
                *ret = s;
                return 0;
        }

        Channel *channel = key ? channel_find(chs, key, len) : NULL;
        if (!channel || !channel->events) {
                ret->refresh = ts > 0;
                return 0;
        }
        if (ts < (int64_t) channel->oldest->id) {
                ret->refresh = true;
                return 0;
        }
        r = since_collect(&s, channel, ts);
        if (r < 0)
                return r;
        *ret = s;
        return 0;
}

static size_t event_replay_size(const Event *e) {
        char head[HEAD_MAX];

        return line_head(head, true, e->id) + (e->line->size - e->body_offset - 2) + strlen(REPLAY_TAIL);
}

static SharedBuf* event_replay_line(const Event *e) {
        char head[HEAD_MAX];
        size_t body = e->line->size - e->body_offset - 2;   /* without "}\n" */
        size_t n = line_head(head, true, e->id);
        SharedBuf *b;
        char *p;

        b = shared_buf_alloc(n + body + strlen(REPLAY_TAIL));
        if (!b)
                return NULL;
        p = mempcpy(b->data, head, n);
        p = mempcpy(p, e->line->data + e->body_offset, body);
        memcpy(p, REPLAY_TAIL, strlen(REPLAY_TAIL));
        return b;
}

static int send_refresh_for_request(Channels *chs, Subscriber *sub, const char *id, const char *channel,
                                    size_t len) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        _cleanup_(shared_buf_unrefp) SharedBuf *b = NULL;

        if (!o ||
            json_add_string(o, "type", "refresh_needed") < 0 ||
            json_add_string(o, "id", id) < 0 ||
            json_add(o, "channel", json_object_new_string_len(channel, (int) len)) < 0)
                return -ENOMEM;
        b = shared_buf_new_json_line(o);
        if (!b)
                return -ENOMEM;
        chs->n_refresh_sent++;
        return sub->ops->send(sub, b, NULL);
}

static int subscriber_replay(Channels *chs, Subscriber *sub, const char *request_id, const char *name, size_t len,
                             int64_t ts) {
        _cleanup_(since_done) Since s = {};
        uint64_t need = 0;
        int r;

        r = events_since(chs, name, len, ts, &s);
        if (r < 0)
                return r;

        /* A replay that cannot fit the subscriber's queue is no replay: it must resync anyway. */
        for (size_t i = 0; i < s.n && !s.refresh; i++) {
                need += event_replay_size(s.events[i]);
                s.refresh = sub->ops->queued_bytes(sub) + need > limits.MAX_WRITE_QUEUE_BYTES;
        }
        if (s.refresh)
                return send_refresh_for_request(chs, sub, request_id, name, len);

        for (size_t i = 0; i < s.n; i++) {
                _cleanup_(shared_buf_unrefp) SharedBuf *b = event_replay_line(s.events[i]);

                if (!b)
                        return -ENOMEM;
                subscriber_deliver(chs, sub, b, channel_tag(s.events[i]->channel), s.events[i]->id);
        }
        return 0;
}

int channels_replay_deferred(Channels *chs, const char *name, size_t len, int64_t last_event_id, Subscriber *s,
                             ChannelsReplayDone done, void *userdata) {
        if (!chs->hooks.backend || !chs->hooks.backend->replay)
                return -EOPNOTSUPP;
        chs->hooks.backend->replay(name, len, last_event_id, s, done, userdata, chs->hooks.backend->userdata);
        return 0;
}

/* The replay line of an event that is not in a buffer here: the same bytes event_replay_line() cuts out of a
 * buffered one. */
static SharedBuf* external_replay_line(const ChannelEvent *e, size_t *ret_size) {
        char head[HEAD_MAX];
        size_t n = line_head(head, true, e->id), size;
        SharedBuf *b;
        char *p;

        size = n + strlen("\"channel\":") + e->channel_json_len + strlen(REPLAY_TAIL);
        if (e->message_json)
                size += strlen(",\"message\":") + e->message_json_len;
        if (!ret_size) {
                b = shared_buf_alloc(size);
                if (!b)
                        return NULL;
                p = mempcpy(b->data, head, n);
                p = mempcpy(p, "\"channel\":", strlen("\"channel\":"));
                p = mempcpy(p, e->channel_json, e->channel_json_len);
                if (e->message_json) {
                        p = mempcpy(p, ",\"message\":", strlen(",\"message\":"));
                        p = mempcpy(p, e->message_json, e->message_json_len);
                }
                memcpy(p, REPLAY_TAIL, strlen(REPLAY_TAIL));
                return b;
        }
        *ret_size = size;
        return NULL;
}

int channels_replay_events(Channels *chs, Subscriber *sub, const char *request_id, const char *name, size_t len,
                           const ChannelsReplayed *rp) {
        bool refresh = rp->refresh_needed;
        uint64_t need = 0;
        int r = 0;

        for (size_t i = 0; i < rp->n_events && !refresh; i++) {
                size_t size;

                (void) external_replay_line(&rp->events[i], &size);
                need += size;
                refresh = sub->ops->queued_bytes(sub) + need > limits.MAX_WRITE_QUEUE_BYTES;
        }
        if (refresh)
                r = send_refresh_for_request(chs, sub, request_id, name, len);
        else
                for (size_t i = 0; i < rp->n_events; i++) {
                        _cleanup_(shared_buf_unrefp) SharedBuf *b = external_replay_line(&rp->events[i], NULL);
                        _cleanup_free_ char *cname = NULL;
                        Channel *channel;

                        if (!b) {
                                r = -ENOMEM;
                                break;
                        }
                        /* Tagged with its channel when it exists here, so that the slow-consumer policy can drop
                         * it and name the channel; else it stays, as an answer does. */
                        channel = NULL;
                        if (rp->events[i].channel_json_len >= 2) {
                                cname = line_channel(b);
                                if (cname)
                                        channel = channel_find(chs, cname, strlen(cname));
                        }
                        subscriber_deliver(chs, sub, b, channel ? channel_tag(channel) : NULL, rp->events[i].id);
                }
        channels_reap(chs);
        return r;
}

int channels_replay(Channels *chs, Subscriber *sub, const char *request_id, const char *name, size_t len,
                    int64_t last_event_id) {
        int r;

        r = subscriber_replay(chs, sub, request_id, name, len, last_event_id);
        channels_reap(chs);
        return r;
}

int channels_events_since(Channels *chs, const char *name, size_t len, int64_t last_event_id,
                          ChannelEventCallback cb, void *userdata, bool *ret_refresh_needed) {
        _cleanup_(since_done) Since s = {};
        int r;

        r = events_since(chs, name, len, last_event_id, &s);
        if (r < 0)
                return r;
        *ret_refresh_needed = s.refresh;

        for (size_t i = 0; i < s.n; i++) {
                const Event *e = s.events[i];

                /* The pieces are cut out of the live line: nothing is parsed or serialized again. */
                r = cb(&(const ChannelEvent) {
                                .id = e->id,
                                .timestamp = e->timestamp,
                                .channel_json = e->channel->name_json,
                                .channel_json_len = e->channel->name_json_len,
                                .message_json = e->message_offset > 0 ? e->line->data + e->message_offset : NULL,
                                .message_json_len = e->message_offset > 0 ?
                                        e->line->size - e->message_offset - strlen("}\n") : 0,
                        }, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- subscribing ---- */

int channels_subscribe(Channels *chs, Subscriber *sub, const char *name, size_t len) {
        Channel *channel;
        int r;

        if (len > limits.MAX_CHANNEL_NAME_BYTES)
                return -EINVAL;

        channels_expire(chs);
        r = channel_get(chs, name, len, &channel);
        if (r < 0)
                return r;

        /* A set, as the reference: subscribing twice changes nothing. */
        if (subscription_find(sub, channel))
                return 0;
        if (sub->n_subscriptions >= limits.MAX_SUBSCRIPTIONS_PER_CLIENT) {
                channel_maybe_free(chs, channel);
                return -EDQUOT;
        }
        r = subscription_add(chs, sub, channel);
        if (r < 0) {
                channel_maybe_free(chs, channel);
                return r;
        }
        return 0;
}

void channels_unsubscribe(Channels *chs, Subscriber *sub, const char *name, size_t len) {
        Channel *channel = channel_find(chs, name, len);
        Subscription *s;

        if (channel && (s = subscription_find(sub, channel)))
                subscription_free(chs, s);
}

/* ---- status, listing, state ---- */

int channels_add_status(Channels *chs, struct json_object *data) {
        int r;

        channels_expire(chs);
        if ((r = json_add_int64(data, "subscriptions", chs->n_subscribed)) < 0 ||
            (r = json_add_int64(data, "lastEventId", (int64_t) chs->last_event_id)) < 0 ||
            (r = json_add_int64(data, "bufferedEvents", (int64_t) chs->n_events)) < 0 ||
            (r = json_add_int64(data, "bufferedBytes", (int64_t) chs->bytes)) < 0 ||
            (r = json_add_int64(data, "messagesDropped", (int64_t) chs->n_messages_dropped)) < 0 ||
            (r = json_add_int64(data, "refreshNeededSent", (int64_t) chs->n_refresh_sent)) < 0 ||
            (r = json_add_int64(data, "slowConsumerDisconnects", (int64_t) chs->n_slow_disconnects)) < 0)
                return r;
        return 0;
}

void channels_get_stats(Channels *chs, ChannelsStats *ret) {
        assert(ret);

        channels_expire(chs);
        *ret = (ChannelsStats) {
                .channels = chs->n_channels,
                .subscribed = chs->n_subscribed,
                .subscriptions = chs->n_subscriptions,
                .buffered_events = chs->n_events,
                .buffered_bytes = chs->bytes,
                .published = chs->n_published,
                .delivered = chs->n_delivered,
                .dropped = chs->n_messages_dropped,
                .refresh_sent = chs->n_refresh_sent,
                .slow_disconnects = chs->n_slow_disconnects,
        };
}

const char* channels_limit_error(int error, const char *channel, struct json_object *message, char *buf,
                                 size_t size) {
        uint64_t actual = UINT64_MAX;   /* unknown */
        size_t len;

        switch (error) {
        case -EINVAL:
                if (channel)
                        actual = strlen(channel);
                return limit_error(LIMIT_MAX_CHANNEL_NAME_BYTES, actual, buf, size, NULL);
        case -EMSGSIZE:
                if (message && json_object_to_json_string_length(message, JSON_FORMAT_FLAGS, &len))
                        actual = len;
                return limit_error(LIMIT_MAX_MESSAGE_BYTES, actual, buf, size, NULL);
        case -ENOSPC:
                return limit_error(LIMIT_MAX_CHANNELS, UINT64_MAX, buf, size, NULL);
        default:
                return NULL;
        }
}

static int channel_name_cmp(const void *a, const void *b) {
        const Channel *x = *(const Channel* const*) a, *y = *(const Channel* const*) b;

        return strcmp(x->name, y->name);
}

int channels_foreach(Channels *chs, ChannelInfoCallback cb, void *userdata) {
        _cleanup_free_ Channel **all = NULL;
        size_t n = 0;
        int r;

        channels_expire(chs);
        all = new(Channel*, chs->n_channels ?: 1);
        if (!all)
                return -ENOMEM;
        for (Channel *channel = chs->channels; channel; channel = channel->hh.next)
                all[n++] = channel;
        qsort(all, n, sizeof(Channel*), channel_name_cmp);

        for (size_t i = 0; i < n; i++) {
                r = cb(&(const ChannelInfo) {
                                .name = all[i]->name,
                                .name_len = all[i]->name_len,
                                .subscribers = all[i]->n_subscribers,
                                .buffered_events = all[i]->n_events,
                                .buffered_bytes = all[i]->bytes,
                                .last_event_id = all[i]->last_event_id,
                        }, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int channel_list_add(const ChannelInfo *info, void *userdata) {
        struct json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        if ((r = json_object_array_add(userdata, o)) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        if ((r = json_add(o, "name", json_object_new_string_len(info->name, (int) info->name_len))) < 0 ||
            (r = json_add_int64(o, "subscribers", info->subscribers)) < 0 ||
            (r = json_add_int64(o, "bufferedEvents", (int64_t) info->buffered_events)) < 0 ||
            (r = json_add_int64(o, "bufferedBytes", (int64_t) info->buffered_bytes)) < 0 ||
            (r = json_add_int64(o, "lastEventId", (int64_t) info->last_event_id)) < 0)
                return r;
        return 0;
}

int channels_list(Channels *chs, struct json_object **ret_array) {
        _cleanup_(json_object_putp) struct json_object *array = json_object_new_array();
        int r;

        if (!array)
                return -ENOMEM;
        r = channels_foreach(chs, channel_list_add, array);
        if (r < 0)
                return r;
        *ret_array = TAKE_PTR(array);
        return 0;
}

int channels_save_state(Channels *chs, struct json_object *state) {
        /* A backend's ids (channels_publish_at()) are not reserved: the last one seen is the mark then. */
        uint64_t mark = MAX(chs->reserved_event_id, chs->last_event_id);

        if (mark == 0)
                return 0;
        return json_add_int64(state, "eventIdHighWater", (int64_t) mark);
}

void channels_state_saved(Channels *chs) {
        chs->saved_event_id = chs->reserved_event_id;
}

uint64_t channels_event_id_mark(Channels *chs) {
        return chs ? chs->reserved_event_id : 0;
}

void channels_reserve_event_ids(Channels *chs) {
        int64_t now = chs->clock.wall_ms(chs->clock.userdata);

        /* Only when the clock has passed the mark: restarts in a row (a crash loop, socket activation with an idle
         * exit) must not move the ids ever further ahead of the clock when nothing is published. */
        if (now > 0 && (uint64_t) now > chs->reserved_event_id)
                chs->reserved_event_id = event_id_next(chs->last_event_id, now) + EVENT_ID_RESERVE;
}

int channels_load_state(Channels *chs, struct json_object *state) {
        int64_t v;
        int r;

        r = json_get_int64(state, "eventIdHighWater", false, &v);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (v < 0)
                return -EINVAL;
        /* Anything up to the mark may have been issued before the restart. */
        chs->reserved_event_id = MAX(chs->reserved_event_id, (uint64_t) v);
        chs->saved_event_id = MAX(chs->saved_event_id, (uint64_t) v);
        chs->last_event_id = MAX(chs->last_event_id, (uint64_t) v);
        return 0;
}

/* ---- the replay buffers across a restart ---- */

int channels_replay_walk(Channels *chs, ReplayChannelCallback channel_cb, ReplayEventCallback event_cb,
                         void *userdata) {
        int r;

        assert(chs);
        assert(channel_cb);
        assert(event_cb);

        channels_expire(chs);
        for (Channel *channel = chs->channels; channel; channel = channel->hh.next) {
                if (!channel->events)
                        continue;
                r = channel_cb(&(const ReplayChannel) {
                                .name = channel->name,
                                .name_len = channel->name_len,
                                .prefix_floor = channel->prefix->floor,
                                .n_events = channel->n_events,
                        }, userdata);
                if (r < 0)
                        return r;
                /* The channel's list is newest first. */
                for (Event *e = channel->oldest; e; e = e->by_channel_prev) {
                        r = event_cb(&(const ReplayEvent) {
                                        .id = e->id,
                                        .timestamp = e->timestamp,
                                        .message_json = e->message_offset > 0 ? e->line->data + e->message_offset :
                                                                                NULL,
                                        .message_json_len = e->message_offset > 0 ?
                                                e->line->size - e->message_offset - strlen("}\n") : 0,
                                }, userdata);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int replay_record_cmp(const void *a, const void *b) {
        const ReplayRecord *x = a, *y = b;

        return x->event.id < y->event.id ? -1 : x->event.id > y->event.id;
}

/* The channel a record goes to, made (and pinned until the restore is done, so that it and its prefix, with what
 * the prefix has learnt of losses, stay) if need be. NULL: MAX_CHANNELS channels exist, none can be made while
 * the restore runs. */
static int restore_channel(Channels *chs, const ReplayChannel *rc, Channel **ret) {
        Channel *channel = channel_find(chs, rc->name, rc->name_len);
        int r;

        if (!channel) {
                /* Not channel_new()'s reclaiming: every channel here is pinned, it would only empty the buffers. */
                if (chs->n_channels >= limits.MAX_CHANNELS) {
                        *ret = NULL;
                        return 0;
                }
                r = channel_new(chs, rc->name, rc->name_len, &channel);
                if (r < 0)
                        return r;
                channel->n_pins++;
        }
        /* What the prefix had lost before the stop; what it loses while restoring is added by event_drop(). */
        channel->prefix->floor = MAX(channel->prefix->floor, rc->prefix_floor);
        *ret = channel;
        return 0;
}

/* A record not put back: as a lost event, it makes a replay from before it incomplete, for its channel (whose
 * older events go: an exact channel's replay is complete from its oldest event on) and for its prefix. */
static int restore_skip(Channels *chs, const ReplayRecord *rec) {
        Channel *channel;
        Prefix *p;
        int r;

        r = restore_channel(chs, rec->channel, &channel);
        if (r < 0)
                return r;
        if (channel) {
                while (channel->oldest)
                        event_drop(chs, channel->oldest);
                channel->prefix->floor = MAX(channel->prefix->floor, rec->event.id);
                return 0;
        }
        /* No channel can be made for it, so neither can its prefix be made later: only an existing one learns. */
        HASH_FIND(hh, chs->prefixes, rec->channel->name,
                  channel_prefix_length(rec->channel->name, rec->channel->name_len), p);
        if (p)
                p->floor = MAX(p->floor, rec->event.id);
        return 0;
}

static int restore_event(Channels *chs, const ReplayRecord *rec, uint64_t mono_ms) {
        Channel *channel;
        Event *e;
        int r;

        r = restore_channel(chs, rec->channel, &channel);
        if (r < 0)
                return r;
        if (!channel)
                return restore_skip(chs, rec);

        e = new0(Event, 1);
        if (!e)
                return -ENOMEM;
        r = event_line_new(channel, rec->event.id, rec->event.message_json, rec->event.message_json_len, e);
        if (r < 0) {
                free(e);
                return r;
        }
        e->id = rec->event.id;
        e->timestamp = rec->event.timestamp;
        e->mono_ms = mono_ms;
        channel->last_event_id = e->id;
        /* The caps drop the oldest, as for a publish. */
        event_push(chs, channel, e);
        return 0;
}

int channels_restore(Channels *chs, ReplayRecord *records, size_t n_records) {
        int64_t now = chs->clock.wall_ms(chs->clock.userdata);
        uint64_t now_mono = chs->clock.mono_ms(chs->clock.userdata), mono = 0, last, max_id;
        Channel *channel, *tmp;
        int r = 0;

        assert(chs);
        assert(records || n_records == 0);

        if (chs->n_channels > 0)
                return -EBUSY;
        if (n_records == 0)
                return 0;
        qsort(records, n_records, sizeof(ReplayRecord), replay_record_cmp);
        for (size_t i = 0; i < n_records; i++)
                if (records[i].event.id == 0 || (i > 0 && records[i].event.id == records[i - 1].event.id))
                        return -EINVAL;
        max_id = records[n_records - 1].event.id;

        /* prefix_ref() gives a new prefix the last id issued as its floor (nothing is known of what came before
         * it); here what came before is known: the records' floors, and what is dropped on the way. */
        last = chs->last_event_id;
        chs->last_event_id = 0;

        for (size_t i = 0; i < n_records && r >= 0; i++) {
                const ReplayRecord *rec = records + i;
                uint64_t age = 0;

                if (rec->event.timestamp < now)
                        age = (uint64_t) now - (uint64_t) rec->event.timestamp;

                if (age > limits.REPLAY_WINDOW_MS ||
                    rec->channel->name_len > limits.MAX_CHANNEL_NAME_BYTES ||
                    (rec->event.message_json && rec->event.message_json_len > limits.MAX_MESSAGE_BYTES)) {
                        r = restore_skip(chs, rec);
                        continue;
                }

                /* Aged on the monotonic clock from now on, by the age its timestamp gives it. Kept in publish
                 * order, which channels_expire() relies on (a wall clock that stepped back between two publishes
                 * gives the later one the earlier's age). Less than a window after boot an old event counts from
                 * the boot, so it may stay up to that much longer than the window. */
                mono = MAX(mono, now_mono > age ? now_mono - age : 0);
                r = restore_event(chs, rec, mono);
        }

        if (r < 0)
                /* A buffer with an event missing in its middle would replay as complete: none at all instead. */
                while (chs->oldest)
                        event_drop(chs, chs->oldest);

        chs->last_event_id = MAX(last, max_id);
        if (max_id > chs->reserved_event_id) {
                /* The state this daemon writes must not fall behind ids issued before it (state.json was lost). */
                chs->reserved_event_id = max_id;
                if (chs->hooks.state_changed)
                        chs->hooks.state_changed(chs->hooks.userdata);
        }
        HASH_ITER(hh, chs->channels, channel, tmp) {
                channel->n_pins--;
                channel_maybe_free(chs, channel);
        }
        return r < 0 ? r : (int) MIN(chs->n_events, (uint64_t) INT_MAX);
}

unsigned channels_count(Channels *chs) {
        if (!chs)
                return 0;
        channels_expire(chs);
        return chs->n_channels;
}

unsigned channels_subscribed_count(Channels *chs) {
        return chs ? chs->n_subscribed : 0;
}

int channels_next_expiry(Channels *chs, uint64_t *ret_mono_ms) {
        if (!chs || !chs->oldest)
                return 0;
        /* channels_expire() drops events strictly older than now - window. */
        *ret_mono_ms = chs->oldest->mono_ms + limits.REPLAY_WINDOW_MS + 1;
        return 1;
}

/* ---- lifetime ---- */

int channels_new(const ChannelsHooks *hooks, Channels **ret) {
        Channels *chs;

        chs = new0(Channels, 1);
        if (!chs)
                return -ENOMEM;
        if (hooks)
                chs->hooks = *hooks;
        chs->reserve_block = EVENT_ID_RESERVE;
        channels_set_clock(chs, NULL);
        *ret = chs;
        return 0;
}

Channels* channels_free(Channels *chs) {
        Event *e;

        if (!chs)
                return NULL;

        while ((e = chs->events)) {
                LIST_REMOVE(all, chs->events, e);
                shared_buf_unref(e->line);
                free(e);
        }
        for (Channel *channel = chs->channels; channel; channel = channel->hh.next) {
                channel->events = channel->oldest = NULL;
                channel->n_events = 0;
                channel->n_pins = 0;
        }

        /* Normally every subscriber is gone already; if not, their subscriptions go (and with them the channels). */
        while (chs->channels) {
                Channel *channel = chs->channels;

                if (channel->subscribers)
                        channels_subscriber_gone(chs, channel->subscribers->sub);
                else
                        channel_free(chs, channel);
        }
        assert(!chs->prefixes);

        free(chs->doomed);
        return mfree(chs);
}
