/* SPDX-License-Identifier: MIT */

#include <errno.h>
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

uint64_t limits_clients_for_nofile(uint64_t nofile) {
        return nofile - MIN(MAX(nofile / 4, (uint64_t) 64), nofile / 2);
}
