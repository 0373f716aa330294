/* SPDX-License-Identifier: MIT */
#pragma once

/* What the channels (photond-channel.c) deliver to: anything that receives pushes. The owner (the control
 * socket's Client today; an SSE stream or a Redis backend next) embeds a Subscriber and fills in its ops; the
 * channels know nothing else of it. The channels keep their per-subscriber state in it (subscriptions,
 * n_subscriptions), which the owner leaves alone and zero-initialises.
 *
 * The fan-out calls send() (and, for the last request of a batch, write_now()) once per subscriber per message:
 * one indirect call each where there was a direct one. */

#include <stdbool.h>
#include <stddef.h>

#include "shared-buf.h"

typedef struct Subscriber Subscriber;

/* Called once per distinct tag dropped, in queue order, with the first dropped buffer of that tag (valid during the
 * call only). */
typedef void (*SubscriberDropFunc)(Subscriber *s, const void *tag, SharedBuf *first, void *userdata);

typedef struct SubscriberOps {
        /* Queues the shared bytes b (a reference is taken; every subscriber of a message gets the same bytes).
         * tag non-NULL: a channel message of that channel, which drop_tagged() may drop again; NULL: an answer
         * (refresh_needed for a subscribe) that must stay. Returns -ENOBUFS when a tagged buffer does not fit the
         * subscriber's queue (the channels then apply the slow-consumer policy), another negative errno when it
         * cannot be queued at all (counted as dropped). */
        int (*send)(Subscriber *s, SharedBuf *b, const void *tag);
        /* Drops the queued buffers carrying a tag (not one partly written), keeping the untagged ones and the order;
         * returns how many were dropped. */
        size_t (*drop_tagged)(Subscriber *s, SubscriberDropFunc cb, void *userdata);
        /* May write the buffer just queued now, rather than at the end of the batch (only called when the channels'
         * may_write_now hook said so, and only right after a send() that queued it); NULL: never. */
        void (*write_now)(Subscriber *s);
        /* The bytes queued and not written yet, which the slow-consumer policy measures against
         * limits.MAX_WRITE_QUEUE_BYTES. */
        size_t (*queued_bytes)(Subscriber *s);
        /* The subscriber did not read its messages (the slow-consumer policy): disconnect it. Called after the
         * fan-out, never from within send(); the channels drop its subscriptions afterwards if the owner has not
         * done so (channels_subscriber_gone()). */
        void (*close_slow)(Subscriber *s);
} SubscriberOps;

struct Subscriber {
        const SubscriberOps *ops;
        /* photond-channel.c's, zero-initialised by the owner */
        void *subscriptions;
        unsigned n_subscriptions;
};
