/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "macro.h"
#include "photond-limits.h"
#include "string-util.h"

static const Limits limits_default = {
#define _LIMIT_DEFAULT(name, def) .name = (def),
        LIMITS_FOREACH(_LIMIT_DEFAULT)
#undef _LIMIT_DEFAULT
};

Limits limits = {
#define _LIMIT_DEFAULT(name, def) .name = (def),
        LIMITS_FOREACH(_LIMIT_DEFAULT)
#undef _LIMIT_DEFAULT
};

static const struct {
        const char *name;
        size_t offset;
} limit_table[] = {
#define _LIMIT_ENTRY(name, def) { #name, offsetof(Limits, name) },
        LIMITS_FOREACH(_LIMIT_ENTRY)
#undef _LIMIT_ENTRY
};

bool limit_may_be_zero(const char *name) {
        /* Settings rather than caps, where 0 turns the feature off. */
        return streq(name, "BUSY_POLL_US");
}

void limits_reset(void) {
        limits = limits_default;
}

int limits_load_from_env(const char **ret_bad) {
        for (size_t i = 0; i < sizeof(limit_table) / sizeof(limit_table[0]); i++) {
                char var[96];
                const char *v;
                uint64_t u;

                snprintf(var, sizeof(var), "PHOTOND_%s", limit_table[i].name);
                v = getenv(var);
                if (!v)
                        continue;
                if (safe_atou64(v, &u) < 0 || (u == 0 && !limit_may_be_zero(limit_table[i].name))) {
                        if (ret_bad)
                                *ret_bad = limit_table[i].name;
                        return -EINVAL;
                }
                *(uint64_t*) ((char*) &limits + limit_table[i].offset) = u;
        }
        return 0;
}

const char* limits_name(unsigned i, uint64_t *ret_value, uint64_t *ret_default) {
        if (i >= sizeof(limit_table) / sizeof(limit_table[0]))
                return NULL;
        if (ret_value)
                *ret_value = *(const uint64_t*) ((const char*) &limits + limit_table[i].offset);
        if (ret_default)
                *ret_default = *(const uint64_t*) ((const char*) &limits_default + limit_table[i].offset);
        return limit_table[i].name;
}

static const struct {
        const char *what;
        const char *unit;               /* sizes: what actual and the cap count; NULL for counts */
        const char *suggestion;
} limit_texts[_LIMIT_ID_MAX] = {
        [LIMIT_MAX_SUBSCRIPTIONS_PER_CLIENT] = { "Too many subscriptions on this connection", NULL,
                                                 "Unsubscribe from channels you no longer need" },
        [LIMIT_MAX_CHANNEL_NAME_BYTES] = { "Channel name too long", "bytes", "Use a shorter channel name" },
        [LIMIT_MAX_MESSAGE_BYTES] = { "Message too large", "bytes of JSON", "Publish a reference to the data instead" },
        [LIMIT_MAX_CHANNELS] = { "Too many channels", NULL, "Retry later, or raise PHOTOND_MAX_CHANNELS" },
        [LIMIT_MAX_LOCK_NAME_BYTES] = { "Lock name too long", "bytes", "Use a shorter lockName" },
        [LIMIT_MAX_LOCK_HOLDER_BYTES] = { "Lock holder too long", "bytes",
                                          "Use a shorter holder (lockHolder, sessionId or id)" },
        [LIMIT_MAX_LOCKS] = { "Too many locks", NULL, "Release locks that are no longer needed" },
        [LIMIT_MAX_LOCK_WAITERS_PER_LOCK] = { "Too many waiters for this lock", NULL, "Retry without lockWait, or later" },
        [LIMIT_MAX_LOCK_WAITERS] = { "Too many waiting lock requests", NULL, "Retry without lockWait, or later" },
        [LIMIT_MAX_JOBS] = { "Too many scheduled jobs", NULL, "Unschedule jobs or raise PHOTOND_MAX_JOBS" },
        [LIMIT_MAX_JOB_ARGS_BYTES] = { "Job args too large", "bytes of JSON",
                                       "Pass a reference to the data instead, or raise PHOTOND_MAX_JOB_ARGS_BYTES" },
        [LIMIT_MAX_PROVIDERS] = { "Too many providers", NULL, "Retry later" },
        [LIMIT_MAX_CLIENTS] = { "Too many clients connected", NULL,
                                "Retry when other clients have disconnected, or raise PHOTOND_MAX_CLIENTS" },
        [LIMIT_MAX_LINE_BYTES] = { "Invalid request format: request line too long", "bytes",
                                   "Send smaller requests, or raise PHOTOND_MAX_LINE_BYTES" },
        [LIMIT_SSE_MAX_STREAMS] = { "Too many event streams", NULL,
                                    "Retry later, or raise PHOTOND_SSE_MAX_STREAMS" },
        [LIMIT_SSE_MAX_STREAMS_PER_ADDRESS] = { "Too many event streams from this address", NULL,
                                                "Close other streams, or raise PHOTOND_SSE_MAX_STREAMS_PER_ADDRESS" },
};

const char* limit_error(LimitId id, uint64_t actual, char *buf, size_t size, const char **ret_suggestion) {
        uint64_t max;
        const char *name;

        if (id < 0 || id >= _LIMIT_ID_MAX || !limit_texts[id].what)
                return NULL;
        name = limits_name((unsigned) id, &max, NULL);

        if (limit_texts[id].unit && actual != UINT64_MAX)
                snprintf(buf, size, "%s: %" PRIu64 " %s, at most %" PRIu64 " (PHOTOND_%s)", limit_texts[id].what,
                         actual, limit_texts[id].unit, max, name);
        else if (limit_texts[id].unit)
                snprintf(buf, size, "%s: at most %" PRIu64 " %s (PHOTOND_%s)", limit_texts[id].what, max,
                         limit_texts[id].unit, name);
        else
                snprintf(buf, size, "%s: at most %" PRIu64 " (PHOTOND_%s)", limit_texts[id].what, max, name);
        if (ret_suggestion)
                *ret_suggestion = limit_texts[id].suggestion;
        return buf;
}

uint64_t limits_clients_for_nofile(uint64_t nofile) {
        return nofile - MIN(MAX(nofile / 4, (uint64_t) 64), nofile / 2);
}
