/* SPDX-License-Identifier: MIT */
#pragma once

/* Cron expressions: the reference's 5-field grammar plus month/day names and @nicknames, and the next fire
 * time in the process's local time zone, DST included. Pure and non-logging. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* How far cron_next() looks ahead; an expression with no match in this window is invalid, as in the reference. */
#define CRON_SEARCH_LIMIT_SEC ((int64_t) 4 * 366 * 24 * 60 * 60)

typedef struct CronSpec {
        uint64_t minutes;       /* bit n set: minute n (0-59) */
        uint32_t hours;         /* bit n set: hour n (0-23) */
        uint32_t days;          /* bit n set: day of month n (1-31) */
        uint16_t months;        /* bit n set: month n (1-12) */
        uint8_t weekdays;       /* bit n set: weekday n (0-6, 0 = Sunday; 7 is folded into 0) */
        bool dom_star;          /* day-of-month is the literal '*' (for the DOM/DOW OR rule) */
        bool dow_star;          /* day-of-week is the literal '*' */
        bool hour_wild;         /* hour is '*' or a single step item: fires in both passes of a repeated hour */
} CronSpec;

/* Parses a 5-field expression or an @nickname into *ret. Returns 0, or -EINVAL with a message naming the
 * bad field written to errbuf (may be NULL). */
int cron_parse(const char *expr, CronSpec *ret, char *errbuf, size_t errlen);

/* The first matching local wall-clock minute strictly after `after`. A wall time that does not exist that day
 * is skipped; in a repeated hour a fixed hour fires on the first pass only, a wild hour on both. Returns 0,
 * -ENOENT if nothing matches within CRON_SEARCH_LIMIT_SEC, -ERANGE if `after` is absurdly far from 1970. */
int cron_next(const CronSpec *spec, time_t after, time_t *ret);

/* cron_parse() plus a check that the expression fires within CRON_SEARCH_LIMIT_SEC of `now`.
 * Returns 0 or -EINVAL with a message in errbuf. */
int cron_validate(const char *expr, time_t now, CronSpec *ret, char *errbuf, size_t errlen);
