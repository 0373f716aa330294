/* SPDX-License-Identifier: MIT */

#include <stdlib.h>

#include "clock.h"
#include "macro.h"

uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        if (clock_gettime(clock, &ts) < 0)
                abort();
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

int64_t now_ms(void) {
        return (int64_t) (now_usec(CLOCK_REALTIME) / USEC_PER_MSEC);
}
