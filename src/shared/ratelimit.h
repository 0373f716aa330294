/* SPDX-License-Identifier: MIT */
#pragma once

/* As systemd's RateLimit: at most `burst` events per `interval`; the caller says what happens to the rest (a log
 * line that would flood the journal in a connection storm, typically). Times are CLOCK_MONOTONIC usec. */

#include <stdbool.h>
#include <stdint.h>

typedef struct RateLimit {
        uint64_t interval;
        unsigned burst;
        uint64_t begin;
        unsigned num;
        unsigned suppressed;            /* events refused in the interval that ended with the last allowed one */
} RateLimit;

/* True if the event at now is within the limit. The first allowed event of a new interval leaves the count of
 * the previous interval's refused events in rl->suppressed, for the log line to mention. */
static inline bool ratelimit_below(RateLimit *rl, uint64_t now) {
        if (rl->num == 0 || now - rl->begin >= rl->interval) {
                rl->suppressed = rl->num > rl->burst ? rl->num - rl->burst : 0;
                rl->begin = now;
                rl->num = 1;
                return true;
        }
        if (rl->num < UINT32_MAX)
                rl->num++;
        return rl->num <= rl->burst;
}
