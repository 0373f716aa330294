/* SPDX-License-Identifier: MIT */
#pragma once

/* Clocks. LoopClock is the time a core reads on its hot paths (publish, lock, unlock): the owner of the event loop
 * (the Manager) fills one in and hands the cores a pointer to it, and a read is inline, with no call into the
 * owner. */

#include <stdint.h>
#include <systemd/sd-event.h>
#include <time.h>

/* The system clock, read now. */
uint64_t now_usec(clockid_t clock);
int64_t now_ms(void);   /* CLOCK_REALTIME in milliseconds, as the protocol's timestamps */

/* The time of the batch of requests being served, which every request of it sees (no clock read per request): the
 * loop's (sd_event_now()), plus *offset, which busy polling (photond-client.c) sets to how far past the loop's
 * time the batch it found is. */
typedef struct LoopClock {
        sd_event *event;                /* NULL: the system clock, read now */
        const uint64_t *offset;         /* µs added to the loop's time; NULL for none */
} LoopClock;

/* c may be NULL: the system clock, read now (unit tests of a core without a loop). */
static inline uint64_t loop_clock_now(const LoopClock *c, clockid_t clock) {
        uint64_t t;

        if (!c || !c->event || sd_event_now(c->event, clock, &t) < 0)
                return now_usec(clock);
        return c->offset ? t + *c->offset : t;
}
