/* SPDX-License-Identifier: MIT */
#pragma once

/* Pub/sub: channel registry, exact and "prefix:*" subscriptions, per-channel replay buffers, fan-out. The core
 * delivers to Subscribers (photond-subscriber.h), whatever they are, and knows no request: the control socket's
 * are photond-control-channels.c's. */

#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "macro.h"
#include "photond-subscriber.h"

typedef struct Channels Channels;
struct json_object;

/* What the channels tell their owner, who fills this in (the Manager: photond-manager.c). A NULL member means
 * nobody listens. */
typedef struct ChannelsHooks {
        const LoopClock *clock;         /* the batch's time; NULL: the system clock, read now */
        /* The persistent state (the eventId mark) changed: it must be written before any reply that reports the
         * change leaves, so this is called before such a reply is queued. */
        void (*state_changed)(void *userdata);
        /* The number of channels or of subscribed channels changed (the D-Bus properties Channels and
         * Subscriptions). */
        void (*counts_changed)(void *userdata);
        /* Asked once per publish that has a publisher (exclude non-NULL): may the pushes leave now (each
         * subscriber's write_now()), because nothing of the batch must leave first? NULL: never. */
        bool (*may_write_now)(void *userdata);
        /* A backend that orders and numbers every publish (cluster mode: ChannelsBackend below); NULL: the
         * channels do it themselves. */
        const struct ChannelsBackend *backend;
        void *userdata;
} ChannelsHooks;

/* The end of a publish a backend took (channels_publish_deferred()): error 0 and the eventId it got, or a
 * negative errno and a short reason (why the backend could not take it, for the publisher's error). publisher is
 * NULL when it went away meanwhile (channels_subscriber_gone()): then only userdata is to be freed. */
typedef void (*ChannelsPublishDone)(Subscriber *publisher, int error, const char *reason, uint64_t event_id,
                                    void *userdata);

/* What a backend's replay found (ChannelsEvent: see channels_events_since()). */
typedef struct ChannelEvent ChannelEvent;
typedef struct ChannelsReplayed {
        int error;                      /* 0; or a negative errno: the backend could not answer, reason says why */
        const char *reason;
        bool refresh_needed;            /* as channels_events_since()'s */
        const ChannelEvent *events;     /* in eventId order, valid during the call only */
        size_t n_events;
} ChannelsReplayed;
/* s is NULL when it went away meanwhile (only userdata is to be freed then). */
typedef void (*ChannelsReplayDone)(Subscriber *s, const ChannelsReplayed *r, void *userdata);

/* A backend (cluster mode) takes every publish over: the channels check the caps of name and message, hand the
 * publish to it instead of fanning it out, and the backend brings it back, numbered, through
 * channels_publish_at() — on every node in the same order — where it is fanned out (exclude: the publisher, if
 * still there) and buffered like a publish of one node. */
typedef struct ChannelsBackend {
        /* Takes the publish of message (NULL: none) on name by publisher (NULL: photond's own). done (NULL for a
         * publish nobody waits for) is called exactly once, maybe from within this call (a refusal), never after
         * backend's owner is gone. Returns 0; photond's own publishes (done NULL) are counted and logged by the
         * backend when they cannot be taken, never refused. */
        void (*publish)(const char *name, size_t len, const char *message, size_t message_len, Subscriber *publisher,
                        ChannelsPublishDone done, void *done_userdata, void *userdata);
        /* publisher went away: the backend forgets it (its pending publishes' done get NULL). */
        void (*subscriber_gone)(Subscriber *s, void *userdata);
        /* A replay of the key name after last_event_id for s, from the backend's store (channels_replay_deferred()):
         * done is called exactly once, maybe from within this call, at the point of the backend's order where
         * every event it replays has been published here and none after it. */
        void (*replay)(const char *name, size_t len, int64_t last_event_id, Subscriber *s,
                       ChannelsReplayDone done, void *done_userdata, void *userdata);
        void *userdata;
} ChannelsBackend;

/* hooks may be NULL (nobody listens, the system clock); it is copied. */
int channels_new(const ChannelsHooks *hooks, Channels **ret);
Channels* channels_free(Channels *ch);
DEFINE_TRIVIAL_CLEANUP_FUNC(Channels*, channels_free);

/* ---- the core: subscribers (photond-subscriber.h) ---- */

/* Subscribes s to the channel key name (a set: twice changes nothing). -EINVAL for a name over
 * MAX_CHANNEL_NAME_BYTES, -ENOSPC when MAX_CHANNELS channels are in use, -EDQUOT when s has
 * MAX_SUBSCRIPTIONS_PER_CLIENT keys already, -ENOMEM. */
int channels_subscribe(Channels *ch, Subscriber *s, const char *name, size_t len);
/* Unsubscribes s from name; nothing if it was not subscribed. */
void channels_unsubscribe(Channels *ch, Subscriber *s, const char *name, size_t len);
/* Queues to s what name had after last_event_id (replay lines), or, when that is not possible or does not fit
 * s's queue, one refresh_needed with the id request_id. Slow consumers found meanwhile are closed. */
int channels_replay(Channels *ch, Subscriber *s, const char *request_id, const char *name, size_t len,
                    int64_t last_event_id);
/* Drops every subscription of a subscriber that goes away. */
void channels_subscriber_gone(Channels *ch, Subscriber *s);
/* Calls cb with every channel key s is subscribed to (name: len bytes, NUL-terminated, valid during the call only),
 * newest first; stops at cb's first negative return and returns it. cb must not change the subscriptions. (A stop
 * that keeps the connections writes them down: photond-fdstore.c.) */
typedef int (*ChannelKeyCallback)(const char *name, size_t len, void *userdata);
int channels_foreach_subscription(Channels *ch, Subscriber *s, ChannelKeyCallback cb, void *userdata);

/* Publishes message_json, a message already serialized as json-c prints it with JSON_FORMAT_FLAGS (the caller
 * vouches for that: the bytes go out as they are), or no "message" key when it is NULL, on the channel name of len
 * bytes (any JSON string, NUL included). The push line is built once and shared by every subscriber and the replay
 * buffer. exclude (may be NULL) is the publisher: it does not receive the push, which may then be written at once
 * (see may_write_now). Returns 0 and the eventId; -EINVAL for a channel name over MAX_CHANNEL_NAME_BYTES, -EMSGSIZE
 * for a message over MAX_MESSAGE_BYTES, -ENOSPC when MAX_CHANNELS channels are subscribed to and none can be
 * reclaimed (checked in that order), -ENOMEM. */
int channels_publish_serialized(Channels *ch, const char *name, size_t len, const char *message_json,
                                size_t message_len, Subscriber *exclude, uint64_t *ret_event_id);
/* (With a backend, channels_publish_serialized() and channels_publish() hand the message to it and return 0 with
 * eventId 0: the id is not known yet. Only photond's own publishes and those of front ends that do not wait take
 * that way.) */

/* True when a backend (cluster mode) takes the publishes over: a publisher that waits for its eventId then goes
 * through channels_publish_deferred(). One pointer test. */
bool channels_deferred(Channels *ch);

/* With a backend: checks the caps as channels_publish_serialized() (-EINVAL, -EMSGSIZE, returned at once and done
 * not called) and hands the publish to the backend, which calls done once with its eventId or its refusal. Without
 * one: -EOPNOTSUPP. */
int channels_publish_deferred(Channels *ch, const char *name, size_t len, const char *message_json,
                              size_t message_len, Subscriber *publisher, ChannelsPublishDone done, void *userdata);

/* The backend's side: publishes, as channels_publish_serialized() does, a message that the backend numbered
 * event_id (with its wall-clock timestamp in ms). Ids must increase strictly: -ESTALE for one that is not above
 * every id this node issued or saw (nothing published; the caller treats it as a gap). The eventId mark of
 * state.json is not raised (the backend's ids are not this node's to reserve); channels_save_state() writes the
 * greater of the mark and the last id. Otherwise channels_publish_serialized()'s errors. */
int channels_publish_at(Channels *ch, const char *name, size_t len, const char *message_json, size_t message_len,
                        Subscriber *exclude, uint64_t event_id, int64_t timestamp);

/* The greatest eventId issued or seen, the mark loaded at the start included (what a backend's ids must stay
 * above); not the block reserved ahead of the clock since. */
uint64_t channels_last_event_id(Channels *ch);

/* channels_publish_serialized() of a json-c object, for photond's own publishes (jobs:*, webhooks:*,
 * state-changed, emits, system:*) and D-Bus Publish: message is borrowed; NULL leaves the "message" key out; channel
 * is a C string. ret_event_id may be NULL. */
int channels_publish(Channels *ch, const char *channel, struct json_object *message, Subscriber *exclude,
                     uint64_t *ret_event_id);

/* With a backend: asks it for what name had after last_event_id (channels_replay()'s question); done gets the
 * answer, which the caller hands to channels_replay_events() or lists. The backend calls done where its order puts
 * the answer: the events it lists were all published here before, none after. -EOPNOTSUPP without a backend. */
int channels_replay_deferred(Channels *ch, const char *name, size_t len, int64_t last_event_id, Subscriber *s,
                             ChannelsReplayDone done, void *userdata);
/* Queues to s (subscribed, as for channels_replay()) the replay lines of r's events, or one refresh_needed with
 * the id request_id for name when r needs a refresh or does not fit s's queue: what channels_replay() queues for
 * events of its own buffers. */
int channels_replay_events(Channels *ch, Subscriber *s, const char *request_id, const char *name, size_t len,
                           const ChannelsReplayed *r);

/* Events of the channel key name may have been published elsewhere without reaching here (cluster mode: the node
 * lost Redis for a while). Every replay from before now is made to answer refresh_needed (the key's buffered
 * events are dropped, those of every channel of its prefix for a "P:*" key, and the wildcard floor raised to the
 * last eventId issued), and each subscriber of the key gets one refresh_needed notice for it (one that cannot
 * take it goes the slow consumers' way). Nothing if the key does not exist. 0 or -ENOMEM. */
int channels_gap(Channels *ch, const char *name, size_t len);

/* One buffered event as get_events_since lists it: valid during the callback only. */
struct ChannelEvent {
        uint64_t id;
        int64_t timestamp;              /* wall clock, ms */
        const char *channel_json;       /* the channel's name as JSON text (quoted and escaped), not NUL-terminated */
        size_t channel_json_len;
        const char *message_json;       /* the message as JSON text, not NUL-terminated; NULL: it had none */
        size_t message_json_len;
};
typedef int (*ChannelEventCallback)(const ChannelEvent *e, void *userdata);

/* The reference's getEventsSince(): calls cb, in eventId order and without building JSON, for each event buffered
 * after last_event_id on name (a channel, or "P:*" for every channel with prefix P; NULL: none), and stops at cb's
 * first negative return and returns it. *ret_refresh_needed: what is buffered cannot be all the caller missed (the events
 * are gone or were never here, or lastEventId is ahead of every id issued); it may still come with the newer events
 * of a wildcard. 0, or -ENOMEM. */
int channels_events_since(Channels *ch, const char *name, size_t len, int64_t last_event_id,
                          ChannelEventCallback cb, void *userdata, bool *ret_refresh_needed);

/* ---- the core: status, listing, state ---- */

/* Adds this subsystem's fields to the status data object. */
int channels_add_status(Channels *ch, struct json_object *data);

/* The channels' counters (GET /metrics): what exists now, and totals since the start. */
typedef struct ChannelsStats {
        unsigned channels;              /* channel keys in use (channels_count()) */
        unsigned subscribed;            /* of them with a subscriber */
        uint64_t subscriptions;         /* subscriber-channel pairs */
        uint64_t buffered_events;       /* in the replay buffers */
        uint64_t buffered_bytes;
        uint64_t published;             /* events published (clients' and photond's own) */
        uint64_t delivered;             /* events queued to a subscriber by a fan-out */
        uint64_t dropped;               /* events a subscriber lost (a full queue, a write error) */
        uint64_t refresh_sent;          /* refresh_needed notices queued */
        uint64_t slow_disconnects;      /* subscribers closed by the slow-consumer policy */
} ChannelsStats;

/* Fills in *ret (after dropping expired events, as channels_count()). */
void channels_get_stats(Channels *ch, ChannelsStats *ret);

/* A new array [{name, subscribers, bufferedEvents, bufferedBytes, lastEventId}] of every channel key, sorted by
 * name (status "channelList", photonctl channels, D-Bus ListChannels). */
int channels_list(Channels *ch, struct json_object **ret_array);

/* One channel as a list shows it (D-Bus ListChannels): valid during the callback only. */
typedef struct ChannelInfo {
        const char *name;               /* NUL-terminated; name_len bytes */
        size_t name_len;
        unsigned subscribers;
        uint64_t buffered_events;
        uint64_t buffered_bytes;
        uint64_t last_event_id;
} ChannelInfo;
typedef int (*ChannelInfoCallback)(const ChannelInfo *info, void *userdata);

/* Calls cb for every channel, sorted by name as channels_list(), without building JSON; stops at cb's first
 * negative return and returns it. */
int channels_foreach(Channels *ch, ChannelInfoCallback cb, void *userdata);

/* photond's persisted state (state.json): the eventId high-water mark. */
int channels_save_state(Channels *ch, struct json_object *state);
int channels_load_state(Channels *ch, struct json_object *state);
/* The eventId high-water mark as it must be persisted (0: none yet). */
uint64_t channels_event_id_mark(Channels *ch);
/* The state with the current mark reached the disk (called by whoever saved it). */
void channels_state_saved(Channels *ch);
/* Raises the mark over the block the next eventId falls in, before any publish needs it, if the clock has passed
 * it: called before the snapshot written at start, so the first publish after a start does not wait for the disk
 * (unless the last start or reservation was less than 10 s ago). */
void channels_reserve_event_ids(Channels *ch);

/* ---- the core: the replay buffers across a restart ----
 *
 * What a stop keeps for the next start (photond-replay-file.c writes it): the buffered events as they are stored,
 * and per channel what a wildcard replay needs to tell a gap. The channels know nothing of files. */

/* A channel with buffered events: valid during the callback only. */
typedef struct ReplayChannel {
        const char *name;               /* name_len bytes, any JSON string (NUL included) */
        size_t name_len;
        /* Of the channel's wildcard prefix P: a "P:*" replay from below this eventId may have lost events (the
         * channels of P share it). */
        uint64_t prefix_floor;
        size_t n_events;                /* the walk: how many of its events follow; restoring ignores it */
} ReplayChannel;

/* One buffered event as it is stored. */
typedef struct ReplayEvent {
        uint64_t id;
        int64_t timestamp;              /* wall clock, ms */
        const char *message_json;       /* JSON text as json-c prints it, not NUL-terminated; NULL: none */
        size_t message_json_len;
} ReplayEvent;

typedef int (*ReplayChannelCallback)(const ReplayChannel *channel, void *userdata);
typedef int (*ReplayEventCallback)(const ReplayEvent *event, void *userdata);

/* Walks the replay buffers (after dropping expired events): for each channel with buffered events, in no
 * particular order, channel_cb, then event_cb for each of its events, oldest first. Stops at a callback's first
 * negative return and returns it; 0 otherwise. Nothing is copied or built. */
int channels_replay_walk(Channels *ch, ReplayChannelCallback channel_cb, ReplayEventCallback event_cb,
                         void *userdata);

/* An event to put back: what channels_replay_walk() gave, with its channel's record. */
typedef struct ReplayRecord {
        const ReplayChannel *channel;
        ReplayEvent event;
} ReplayRecord;

/* Puts events back into the replay buffers of a Channels that has no channel yet (-EBUSY otherwise: restore
 * before any subscription or publish), with their eventIds and timestamps, as if they had been published in
 * eventId order: records (sorted in place) may come in any order, but an id may occur once only and is never 0
 * (-EINVAL, and nothing is restored). Each event is aged by its timestamp against the wall clock now (a timestamp
 * ahead of it counts as now). Dropped, and counted as lost in its channel's wildcard prefix: an event older than
 * REPLAY_WINDOW_MS or with a name or a message over its cap (it takes its channel's older events along: an exact
 * channel's replay is complete from its oldest event on), what REPLAY_MAX_EVENTS and REPLAY_MAX_TOTAL_BYTES leave
 * out, oldest first, as a publish does, and the events of the channels beyond MAX_CHANNELS. Ids issued afterwards are
 * above every id of records, and the eventId mark is not below any (hooks.state_changed when it rose). The caller
 * vouches for message_json as channels_publish_serialized()'s does. Returns the number of events restored, or
 * -ENOMEM, after which nothing is restored either (a buffer with an event missing in its middle would replay as
 * complete). */
int channels_restore(Channels *ch, ReplayRecord *records, size_t n_records);

/* Channel keys with subscribers or buffered events (after dropping expired events). */
unsigned channels_count(Channels *ch);

/* Channel keys with at least one subscriber (status "subscriptions", D-Bus Subscriptions). O(1). */
unsigned channels_subscribed_count(Channels *ch);

/* When the oldest buffered event leaves the replay window (CLOCK_MONOTONIC ms, as the channels' clock): 1 and
 * *ret_mono_ms, or 0 when nothing is buffered. Until then channels_count() cannot drop by expiry. O(1). */
int channels_next_expiry(Channels *ch, uint64_t *ret_mono_ms);

/* limit_error()'s text, the socket's, for channels_publish(channel, message)'s -EINVAL (channel name too long),
 * -EMSGSIZE and -ENOSPC; NULL for any other error. Written to buf. */
const char* channels_limit_error(int error, const char *channel, struct json_object *message, char *buf,
                                 size_t size);

/* The wildcard prefix P of a channel: a publish on it reaches "P:*". P is the text before the first colon when
 * that colon has text on both sides, else the whole channel (as the reference). Returns P's length. */
size_t channel_prefix_length(const char *channel, size_t len);

/* The next eventId: max(now_ms, last + 1), so ids increase strictly even within a millisecond or when the wall
 * clock steps back. */
uint64_t event_id_next(uint64_t last, int64_t now_ms);

/* Tests: replaces the clocks (wall-clock ms for eventIds and timestamps, monotonic ms for ageing). */
typedef struct ChannelsClock {
        int64_t (*wall_ms)(void *userdata);
        uint64_t (*mono_ms)(void *userdata);
        void *userdata;
} ChannelsClock;
void channels_set_clock(Channels *ch, const ChannelsClock *clock);
