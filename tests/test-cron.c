/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cron.h"
#include "macro.h"

static void use_tz(const char *tz) {
        cr_assert_eq(setenv("TZ", tz, 1), 0);
        tzset();
}

static bool tm_same_wall(const struct tm *a, const struct tm *b) {
        return a->tm_year == b->tm_year && a->tm_mon == b->tm_mon && a->tm_mday == b->tm_mday &&
                a->tm_hour == b->tm_hour && a->tm_min == b->tm_min && a->tm_sec == b->tm_sec;
}

/* "YYYY-MM-DD[ HH:MM[:SS]][ ±HHMM]" in the current TZ. Without an offset the wall time must exist exactly once,
 * so every ambiguous vector has to say which pass of a repeated hour it means. */
static time_t lt(const char *s) {
        int y, mo, d, h = 0, mi = 0, sec = 0, n = 0, k;
        char sign;
        struct tm want = {}, got;
        time_t found[2];
        unsigned n_found = 0;

        cr_assert_geq(sscanf(s, "%d-%d-%d%n", &y, &mo, &d, &n), 3, "bad time '%s'", s);
        if (sscanf(s + n, " %d:%d%n", &h, &mi, &k) == 2) {
                n += k;
                if (sscanf(s + n, ":%d%n", &sec, &k) == 1)
                        n += k;
        }
        want = (struct tm) { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                             .tm_hour = h, .tm_min = mi, .tm_sec = sec };

        if (sscanf(s + n, " %c%n", &sign, &k) == 1) {
                int hh, mm;
                long off;
                time_t t;

                cr_assert(sign == '+' || sign == '-', "bad offset in '%s'", s);
                n += k;
                cr_assert_eq(sscanf(s + n, "%2d%2d", &hh, &mm), 2, "bad offset in '%s'", s);
                off = (sign == '-' ? -1 : 1) * (hh * 3600L + mm * 60L);
                got = want;
                t = timegm(&got) - off;
                cr_assert_not_null(localtime_r(&t, &got));
                cr_assert(got.tm_gmtoff == off && tm_same_wall(&got, &want), "'%s' does not exist in %s", s,
                          getenv("TZ"));
                return t;
        }

        for (int isdst = 0; isdst <= 1; isdst++) {
                struct tm tm = want;
                time_t t;

                tm.tm_isdst = isdst;
                t = mktime(&tm);
                cr_assert_not_null(localtime_r(&t, &got));
                if (tm_same_wall(&got, &want) && (n_found == 0 || found[0] != t))
                        found[n_found++] = t;
        }
        cr_assert_eq(n_found, 1, "'%s' occurs %u times in %s; give an offset", s, n_found, getenv("TZ"));
        return found[0];
}

static const char* fmt(time_t t) {
        static char bufs[4][64];
        static unsigned i;
        char *b = bufs[i++ % 4];
        struct tm tm;

        if (!localtime_r(&t, &tm) || strftime(b, sizeof(bufs[0]), "%Y-%m-%d %H:%M:%S %z (%a)", &tm) == 0)
                snprintf(b, sizeof(bufs[0]), "@%lld", (long long) t);
        return b;
}

typedef struct Vector {
        const char *tz;
        const char *expr;
        const char *now;
        const char *next;       /* NULL: no match within 4 years */
} Vector;

static const Vector vectors[] = {
        /* basics */
        { "UTC", "* * * * *", "2025-01-01 00:00:00", "2025-01-01 00:01" },
        { "UTC", "* * * * *", "2025-01-01 00:00:59", "2025-01-01 00:01" },
        { "UTC", "* * * * *", "2024-12-31 23:59:30", "2025-01-01 00:00" },
        { "UTC", "0 * * * *", "2025-01-01 00:00", "2025-01-01 01:00" },
        { "UTC", "30 14 * * *", "2025-06-15 14:30", "2025-06-16 14:30" },
        { "UTC", "30 14 * * *", "2025-06-15 14:29:59", "2025-06-15 14:30" },
        { "UTC", "30 14 * * *", "2025-06-15 14:30:01", "2025-06-16 14:30" },
        { "UTC", "0 0 * * *", "2025-12-31 23:59:59", "2026-01-01 00:00" },
        { "UTC", "59 23 31 12 *", "2025-12-31 23:59", "2026-12-31 23:59" },
        { "UTC", "0,30 * * * *", "2025-06-15 10:00", "2025-06-15 10:30" },
        { "UTC", "1-5,10 * * * *", "2025-06-15 10:05", "2025-06-15 10:10" },
        { "UTC", "1-5,10 * * * *", "2025-06-15 10:10", "2025-06-15 11:01" },
        { "UTC", "15 6,18 * * *", "2025-06-15 06:15", "2025-06-15 18:15" },
        /* steps over ranges */
        { "UTC", "*/15 * * * *", "2025-06-15 10:07", "2025-06-15 10:15" },
        { "UTC", "*/15 * * * *", "2025-06-15 10:45", "2025-06-15 11:00" },
        { "UTC", "*/7 * * * *", "2025-06-15 10:56", "2025-06-15 11:00" },
        { "UTC", "5/20 * * * *", "2025-06-15 10:46", "2025-06-15 11:05" },
        { "UTC", "5/20 * * * *", "2025-06-15 10:05", "2025-06-15 10:25" },
        { "UTC", "10-30/10 * * * *", "2025-06-15 10:30", "2025-06-15 11:10" },
        { "UTC", "10-30/10 * * * *", "2025-06-15 10:15", "2025-06-15 10:20" },
        { "UTC", "0-59/30 * * * *", "2025-06-15 10:31", "2025-06-15 11:00" },
        { "UTC", "0 9-17/4 * * *", "2025-06-15 13:00", "2025-06-15 17:00" },
        { "UTC", "0 9-17/4 * * *", "2025-06-15 17:00", "2025-06-16 09:00" },
        { "UTC", "0 */6 * * *", "2025-06-15 18:00", "2025-06-16 00:00" },
        { "UTC", "0 20/3 * * *", "2025-06-15 20:00", "2025-06-15 23:00" },
        { "UTC", "0 0 1/10 * *", "2025-06-15 00:00", "2025-06-21 00:00" },
        { "UTC", "0 0 1/10 * *", "2025-06-30 00:00", "2025-07-01 00:00" },
        { "UTC", "0 0 1/10 * *", "2025-07-21 00:00", "2025-07-31 00:00" },
        { "UTC", "0 0 1 */3 *", "2025-02-01 00:00", "2025-04-01 00:00" },
        { "UTC", "0 0 1 2/5 *", "2025-02-01 00:00", "2025-07-01 00:00" },
        { "UTC", "0 0 1 2/5 *", "2025-07-01 00:00", "2025-12-01 00:00" },
        { "UTC", "0 0 * * */2", "2025-06-16 00:00", "2025-06-17 00:00" },     /* Mon -> Tue */
        { "UTC", "0 0 * * 1/3", "2025-06-16 00:00", "2025-06-19 00:00" },     /* 1,4,7: Mon -> Thu */
        { "UTC", "0 0 * * 1/3", "2025-06-19 00:00", "2025-06-22 00:00" },     /* Thu -> Sun (7) */
        { "UTC", "0 0 * * */7", "2025-06-16 00:00", "2025-06-22 00:00" },     /* 0 and 7: Sundays */
        /* month lengths, leap years, Feb 29/30/31 */
        { "UTC", "0 0 1 * *", "2025-01-31 12:00", "2025-02-01 00:00" },
        { "UTC", "0 0 31 * *", "2025-04-01 00:00", "2025-05-31 00:00" },
        { "UTC", "0 0 31 * *", "2025-07-31 00:00", "2025-08-31 00:00" },
        { "UTC", "0 0 31 * *", "2025-08-31 00:00", "2025-10-31 00:00" },
        { "UTC", "0 0 30 * *", "2025-01-30 00:00", "2025-03-30 00:00" },
        { "UTC", "0 0 29 * *", "2025-01-29 00:00", "2025-03-29 00:00" },
        { "UTC", "0 0 29 * *", "2024-01-29 00:00", "2024-02-29 00:00" },
        { "UTC", "0 0 29 2 *", "2025-01-01 00:00", "2028-02-29 00:00" },
        { "UTC", "0 0 29 2 *", "2024-02-28 23:59", "2024-02-29 00:00" },
        { "UTC", "0 0 29 2 *", "2024-02-29 00:00", "2028-02-29 00:00" },
        { "UTC", "0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00" },
        { "UTC", "0 0 29 2 *", "2000-01-01 00:00", "2000-02-29 00:00" },     /* 2000 is a leap year */
        { "UTC", "0 0 29 2 *", "2096-03-01 00:00", NULL },                     /* 2100 is not; 2104 is too far */
        { "UTC", "0 0 29 2 *", "2100-03-01 00:00", "2104-02-29 00:00" },
        { "UTC", "0 0 28 2 *", "2024-02-28 00:00", "2025-02-28 00:00" },
        { "UTC", "0 0 30 2 *", "2025-01-01 00:00", NULL },
        { "UTC", "0 0 31 2 *", "2025-01-01 00:00", NULL },
        { "UTC", "0 0 31 4,6,9,11 *", "2025-01-01 00:00", NULL },
        { "UTC", "0 0 31 2,4 *", "2025-01-01 00:00", NULL },
        { "UTC", "0 0 30,31 2 *", "2025-01-01 00:00", NULL },
        { "UTC", "0 0 31 1,2 *", "2025-01-31 00:00", "2026-01-31 00:00" },
        /* DOM/DOW: OR when both are restricted, '*' defers to the other field */
        { "UTC", "0 0 13 * 5", "2025-06-11 00:00", "2025-06-13 00:00" },      /* Fri 13th */
        { "UTC", "0 0 13 * 5", "2025-06-13 00:00", "2025-06-20 00:00" },      /* next Friday */
        { "UTC", "0 0 13 * 5", "2025-07-05 00:00", "2025-07-11 00:00" },
        { "UTC", "0 0 13 * 5", "2025-07-11 00:00", "2025-07-13 00:00" },      /* Sun 13th */
        { "UTC", "0 0 1 * 1", "2025-06-01 00:00", "2025-06-02 00:00" },
        { "UTC", "0 0 1 * 1", "2025-06-30 00:00", "2025-07-01 00:00" },
        { "UTC", "0 0 */1 * 1", "2025-06-03 00:00", "2025-06-04 00:00" },     /* "*" + "/1" is restricted */
        { "UTC", "0 0 * * 1", "2025-06-03 00:00", "2025-06-09 00:00" },
        { "UTC", "0 0 1 * *", "2025-06-03 00:00", "2025-07-01 00:00" },
        { "UTC", "0 0 1-7 * 1", "2025-06-07 00:00", "2025-06-09 00:00" },
        { "UTC", "0 0 29 2 1", "2025-01-01 00:00", "2025-02-03 00:00" },
        { "UTC", "0 0 31 2 1", "2025-01-07 00:00", "2025-02-03 00:00" },
        { "UTC", "0 0 30 2 0", "2025-06-16 00:00", "2026-02-01 00:00" },
        { "UTC", "0 12 29 2 * ", "2027-12-01 00:00", "2028-02-29 12:00" },
        /* 7 = Sunday, ranges over 7 */
        { "UTC", "0 0 * * 7", "2025-06-11 00:00", "2025-06-15 00:00" },
        { "UTC", "0 0 * * 0", "2025-06-11 00:00", "2025-06-15 00:00" },
        { "UTC", "0 0 * * 5-7", "2025-06-14 01:00", "2025-06-15 00:00" },
        { "UTC", "0 0 * * 5-7", "2025-06-15 01:00", "2025-06-20 00:00" },
        { "UTC", "0 0 * * 1-5", "2025-06-13 12:00", "2025-06-16 00:00" },
        { "UTC", "0 0 * * 0,7", "2025-06-15 00:00", "2025-06-22 00:00" },
        /* names and nicknames */
        { "UTC", "0 12 * JAN,JUL *", "2025-02-01 00:00", "2025-07-01 12:00" },
        { "UTC", "0 12 1 jan-mar *", "2025-03-01 12:00", "2026-01-01 12:00" },
        { "UTC", "0 12 1 Feb/4 *", "2025-06-01 12:00", "2025-10-01 12:00" },
        { "UTC", "0 8 * * MON-FRI", "2025-06-14 08:00", "2025-06-16 08:00" },
        { "UTC", "0 8 * * fri-sun", "2025-06-16 08:00", "2025-06-20 08:00" },
        { "UTC", "0 8 * * fri-sun", "2025-06-21 08:00", "2025-06-22 08:00" },
        { "UTC", "0 8 * * SAT,sun", "2025-06-16 08:00", "2025-06-21 08:00" },
        { "UTC", "0 8 * * Wed", "2025-06-16 08:00", "2025-06-18 08:00" },
        { "UTC", "0 8 * DEC SUN", "2025-06-16 08:00", "2025-12-07 08:00" },
        { "UTC", "@yearly", "2025-06-01 00:00", "2026-01-01 00:00" },
        { "UTC", "@annually", "2025-01-01 00:00", "2026-01-01 00:00" },
        { "UTC", "@monthly", "2025-12-15 00:00", "2026-01-01 00:00" },
        { "UTC", "@weekly", "2025-06-11 00:00", "2025-06-15 00:00" },
        { "UTC", "@daily", "2025-06-11 10:00", "2025-06-12 00:00" },
        { "UTC", "@midnight", "2025-06-11 23:59:59", "2025-06-12 00:00" },
        { "UTC", "@hourly", "2025-06-11 10:00", "2025-06-11 11:00" },
        { "UTC", " @DAILY ", "2025-06-11 10:00", "2025-06-12 00:00" },
        { "UTC", "\t0  12\t* *  * ", "2025-06-11 10:00", "2025-06-11 12:00" },
        /* far future, 2038 and before 1970 */
        { "UTC", "0 0 1 1 *", "2025-01-01 00:00", "2026-01-01 00:00" },
        { "UTC", "0 0 15 3 *", "2025-03-15 00:01", "2026-03-15 00:00" },
        { "UTC", "0 0 1 1 *", "2037-12-31 00:00", "2038-01-01 00:00" },
        { "UTC", "14 3 19 1 *", "2038-01-19 03:14:07", "2039-01-19 03:14" },
        { "UTC", "0 0 1 1 *", "2105-06-01 00:00", "2106-01-01 00:00" },
        { "UTC", "30 6 * * *", "2999-12-31 23:00", "3000-01-01 06:30" },
        { "UTC", "0 0 1 1 *", "1969-06-01 00:00", "1970-01-01 00:00" },
        { "UTC", "0 0 * * *", "1969-12-31 00:00", "1970-01-01 00:00" },
        { "UTC", "0 0 29 2 *", "1897-01-01 00:00", NULL },
        { "UTC", "0 0 29 2 *", "1900-03-01 00:00", "1904-02-29 00:00" },
        /* America/New_York 2025: 02:00 EST -> 03:00 EDT on Mar 9, 02:00 EDT -> 01:00 EST on Nov 2 */
        { "America/New_York", "30 2 * * *", "2025-03-08 02:30", "2025-03-10 02:30" },
        { "America/New_York", "30 2 * * *", "2025-03-09 01:00", "2025-03-10 02:30" },
        { "America/New_York", "0 2 * * *", "2025-03-08 03:00", "2025-03-10 02:00" },
        { "America/New_York", "0 3 * * *", "2025-03-09 01:59", "2025-03-09 03:00" },
        { "America/New_York", "* * * * *", "2025-03-09 01:59", "2025-03-09 03:00" },
        { "America/New_York", "*/15 * * * *", "2025-03-09 01:50", "2025-03-09 03:00" },
        { "America/New_York", "59 1 * * *", "2025-03-08 02:00", "2025-03-09 01:59" },
        { "America/New_York", "0 * * * *", "2025-03-09 01:00", "2025-03-09 03:00" },
        { "America/New_York", "30 2 9 3 *", "2025-03-01 00:00", "2026-03-09 02:30" },
        { "America/New_York", "30 2 8 3 *", "2026-01-01 00:00", "2027-03-08 02:30" },
        { "America/New_York", "30 2 * 3 0", "2025-03-02 03:00", "2025-03-16 02:30" },
        { "America/New_York", "30 1 * * *", "2025-11-02 00:00", "2025-11-02 01:30 -0400" },
        { "America/New_York", "30 1 * * *", "2025-11-02 01:30 -0400", "2025-11-03 01:30" },
        { "America/New_York", "30 1 * * *", "2025-11-02 01:45 -0400", "2025-11-03 01:30" },
        { "America/New_York", "30 1 * * *", "2025-11-02 01:10 -0500", "2025-11-03 01:30" },
        { "America/New_York", "30 * * * *", "2025-11-02 01:30 -0400", "2025-11-02 01:30 -0500" },
        { "America/New_York", "30 * * * *", "2025-11-02 01:30 -0500", "2025-11-02 02:30" },
        { "America/New_York", "30 */1 * * *", "2025-11-02 01:30 -0400", "2025-11-02 01:30 -0500" },
        { "America/New_York", "30 1-3/1 * * *", "2025-11-02 01:30 -0400", "2025-11-02 01:30 -0500" },
        { "America/New_York", "30 1/2 * * *", "2025-11-02 01:30 -0400", "2025-11-02 01:30 -0500" },
        { "America/New_York", "30 0-3 * * *", "2025-11-02 01:30 -0400", "2025-11-02 02:30" },
        { "America/New_York", "30 1,2 * * *", "2025-11-02 01:30 -0400", "2025-11-02 02:30" },
        { "America/New_York", "* * * * *", "2025-11-02 01:59 -0400", "2025-11-02 01:00 -0500" },
        { "America/New_York", "* 1 * * *", "2025-11-02 01:59 -0400", "2025-11-03 01:00" },
        { "America/New_York", "0 1 * * *", "2025-11-02 00:30", "2025-11-02 01:00 -0400" },
        { "America/New_York", "0 2 * * *", "2025-11-02 01:30 -0400", "2025-11-02 02:00" },
        { "America/New_York", "*/20 * * * *", "2025-11-02 01:40 -0400", "2025-11-02 01:00 -0500" },
        { "America/New_York", "0 * * * *", "2025-11-02 01:00 -0400", "2025-11-02 01:00 -0500" },
        { "America/New_York", "0 * * * *", "2025-11-02 01:00 -0500", "2025-11-02 02:00" },
        { "America/New_York", "0 0 2 11 *", "2025-11-01 12:00", "2025-11-02 00:00" },
        { "America/New_York", "0 12 * * *", "2025-11-02 01:30 -0500", "2025-11-02 12:00" },
        /* Europe/Berlin 2025: 02:00 CET -> 03:00 CEST on Mar 30, 03:00 CEST -> 02:00 CET on Oct 26 */
        { "Europe/Berlin", "30 2 * * *", "2025-03-29 03:00", "2025-03-31 02:30" },
        { "Europe/Berlin", "* * * * *", "2025-03-30 01:59", "2025-03-30 03:00" },
        { "Europe/Berlin", "0 3 * * *", "2025-03-30 01:00", "2025-03-30 03:00" },
        { "Europe/Berlin", "30 2 * * 0", "2025-03-29 00:00", "2025-04-06 02:30" },
        { "Europe/Berlin", "30 2 30 3 *", "2025-03-01 00:00", "2026-03-30 02:30" },
        { "Europe/Berlin", "0 2 * * *", "2025-03-30 00:00", "2025-03-31 02:00" },
        { "Europe/Berlin", "0 */2 * * *", "2025-03-30 00:30", "2025-03-30 04:00" },
        { "Europe/Berlin", "30 2 * * *", "2025-10-26 00:00", "2025-10-26 02:30 +0200" },
        { "Europe/Berlin", "30 2 * * *", "2025-10-26 02:30 +0200", "2025-10-27 02:30" },
        { "Europe/Berlin", "30 * * * *", "2025-10-26 02:30 +0200", "2025-10-26 02:30 +0100" },
        { "Europe/Berlin", "*/30 * * * *", "2025-10-26 02:30 +0200", "2025-10-26 02:00 +0100" },
        { "Europe/Berlin", "0 2 * * *", "2025-10-26 02:00 +0200", "2025-10-27 02:00" },
        { "Europe/Berlin", "15 2,3 * * *", "2025-10-26 02:15 +0200", "2025-10-26 03:15" },
        { "Europe/Berlin", "15 2-3 * * *", "2025-10-26 02:15 +0200", "2025-10-26 03:15" },
        { "Europe/Berlin", "15 */1 * * *", "2025-10-26 02:15 +0200", "2025-10-26 02:15 +0100" },
        { "Europe/Berlin", "* * * * *", "2025-10-26 02:59 +0200", "2025-10-26 02:00 +0100" },
        { "Europe/Berlin", "59 2 * * *", "2025-10-26 02:58 +0100", "2025-10-27 02:59" },
        { "Europe/Berlin", "0 0 * * *", "2025-10-25 12:00", "2025-10-26 00:00" },
        { "Europe/Berlin", "0 0 29 2 *", "2025-01-01 00:00", "2028-02-29 00:00" },
        /* southern hemisphere: Sydney leaves DST Apr 6 2025 03:00 -> 02:00, enters Oct 5 02:00 -> 03:00 */
        { "Australia/Sydney", "30 2 * * *", "2025-04-06 00:00", "2025-04-06 02:30 +1100" },
        { "Australia/Sydney", "30 2 * * *", "2025-04-06 02:30 +1100", "2025-04-07 02:30" },
        { "Australia/Sydney", "30 * * * *", "2025-04-06 02:30 +1100", "2025-04-06 02:30 +1000" },
        { "Australia/Sydney", "30 2 * * *", "2025-10-04 03:00", "2025-10-06 02:30" },
        /* Santiago changes at midnight: 00:00 does not exist on 2025-09-07, 23:xx repeats on 2025-04-05 */
        { "America/Santiago", "0 0 * * *", "2025-09-06 12:00", "2025-09-08 00:00" },
        { "America/Santiago", "30 0 * * *", "2025-09-06 12:00", "2025-09-08 00:30" },
        { "America/Santiago", "* * * * *", "2025-09-06 23:59", "2025-09-07 01:00" },
        { "America/Santiago", "30 23 * * *", "2025-04-05 12:00", "2025-04-05 23:30 -0300" },
        { "America/Santiago", "30 23 * * *", "2025-04-05 23:30 -0300", "2025-04-06 23:30" },
        { "America/Santiago", "30 * * * *", "2025-04-05 23:30 -0300", "2025-04-05 23:30 -0400" },
        { "America/Santiago", "0 0 * * *", "2025-04-05 23:30 -0300", "2025-04-06 00:00" },
        /* Moncton fell back at 00:01 until 2006, so the repeated wall times 23:01-00:00 straddle midnight */
        { "America/Moncton", "* * * * *", "2005-10-30 00:00 -0300", "2005-10-29 23:01 -0400" },
        { "America/Moncton", "* * * * *", "2005-10-29 23:59:30 -0300", "2005-10-30 00:00 -0300" },
        { "America/Moncton", "30 * * * *", "2005-10-30 00:00 -0300", "2005-10-29 23:30 -0400" },
        { "America/Moncton", "30 23 * * *", "2005-10-29 22:00", "2005-10-29 23:30 -0300" },
        { "America/Moncton", "30 23 * * *", "2005-10-29 23:30 -0300", "2005-10-30 23:30" },
        { "America/Moncton", "30 23 * * *", "2005-10-30 00:00 -0300", "2005-10-30 23:30" },
        { "America/Moncton", "0 0 * * *", "2005-10-29 23:30 -0300", "2005-10-30 00:00 -0300" },
        { "America/Moncton", "0 0 * * *", "2005-10-30 00:00 -0300", "2005-10-31 00:00" },
        { "America/Moncton", "0 * * * *", "2005-10-29 23:30 -0400", "2005-10-30 00:00 -0400" },
        { "America/Moncton", "0 * * * *", "2005-10-29 23:30 -0300", "2005-10-30 00:00 -0300" },
        /* no DST, half-hour offset */
        { "Asia/Kolkata", "0 0 * * *", "2025-06-15 12:00", "2025-06-16 00:00" },
        { "Asia/Kolkata", "*/45 * * * *", "2025-06-15 23:46", "2025-06-16 00:00" },
};

Test(cron, vectors) {
        unsigned failed = 0;

        cr_assert_geq(ELEMENTSOF(vectors), 100);

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                const Vector *v = &vectors[i];
                char err[256] = "";
                CronSpec spec;
                time_t now, next = 0, want;
                int r;

                use_tz(v->tz);
                now = lt(v->now);
                cr_assert_eq(cron_parse(v->expr, &spec, err, sizeof(err)), 0, "#%zu '%s': %s", i, v->expr, err);

                r = cron_next(&spec, now, &next);
                if (!v->next) {
                        cr_expect_eq(r, -ENOENT, "#%zu %s '%s' from %s: got %d %s, want none", i, v->tz, v->expr,
                                     v->now, r, fmt(next));
                        failed += r != -ENOENT;
                        continue;
                }

                want = lt(v->next);
                cr_expect(r == 0 && next == want, "#%zu %s '%s' from %s: got %d %s, want %s", i, v->tz, v->expr,
                          fmt(now), r, fmt(next), fmt(want));
                failed += !(r == 0 && next == want);
        }
        cr_assert_eq(failed, 0);
}

static void expect_parse_error(const char *expr, const char *needle) {
        char err[256] = "";
        CronSpec spec;

        cr_expect_eq(cron_parse(expr, &spec, err, sizeof(err)), -EINVAL, "accepted '%s'", expr);
        cr_expect(strstr(err, needle), "'%s' gave '%s', want it to mention '%s'", expr, err, needle);
}

Test(cron, parse_errors_name_the_field) {
        expect_parse_error("5abc * * * *", "invalid minute field '5abc'");
        expect_parse_error("60 * * * *", "invalid minute field '60': value 60 out of range 0-59");
        expect_parse_error("5-70 * * * *", "minute field '5-70': value 70 out of range");
        expect_parse_error("-1 * * * *", "minute field '-1'");
        expect_parse_error("+1 * * * *", "minute field '+1'");
        expect_parse_error("1.5 * * * *", "minute field '1.5'");
        expect_parse_error("0x10 * * * *", "minute field '0x10'");
        expect_parse_error("99999999999999999999 * * * *", "minute field '99999999999999999999': value");
        expect_parse_error("5-3 * * * *", "minute field '5-3': reversed range 5-3");
        expect_parse_error("*/0 * * * *", "minute field '*/0': step 0 out of range");
        expect_parse_error("*/61 * * * *", "minute field '*/61': step 61 out of range 1-59");
        expect_parse_error("*/99999999999 * * * *", "minute field");
        expect_parse_error("*/ * * * *", "minute field '*/': step in '*/' is not a number");
        expect_parse_error("5/ * * * *", "minute field '5/'");
        expect_parse_error("/5 * * * *", "minute field '/5'");
        expect_parse_error("1-/5 * * * *", "minute field '1-/5'");
        expect_parse_error("1- * * * *", "minute field '1-'");
        expect_parse_error("*-5 * * * *", "minute field '*-5'");
        expect_parse_error("** * * * *", "minute field '**'");
        expect_parse_error("1/2/3 * * * *", "minute field '1/2/3'");
        expect_parse_error("1,,2 * * * *", "minute field '1,,2': empty list item");
        expect_parse_error(",1 * * * *", "minute field ',1': empty list item");
        expect_parse_error("1, * * * *", "minute field '1,': empty list item");
        expect_parse_error("? * * * *", "minute field '?'");
        expect_parse_error("L * * * *", "minute field 'L'");
        expect_parse_error("* 24 * * *", "invalid hour field '24'");
        expect_parse_error("* JAN * * *", "invalid hour field 'JAN'");
        expect_parse_error("* 1-2-3 * * *", "invalid hour field '1-2-3'");
        expect_parse_error("* */24 * * *", "invalid hour field '*/24'");
        expect_parse_error("* * 0 * *", "invalid day-of-month field '0'");
        expect_parse_error("* * 32 * *", "invalid day-of-month field '32'");
        expect_parse_error("* * MON * *", "invalid day-of-month field 'MON'");
        expect_parse_error("* * 15W * *", "invalid day-of-month field '15W'");
        expect_parse_error("* * L * *", "invalid day-of-month field 'L'");
        expect_parse_error("* * ? * *", "invalid day-of-month field '?'");
        expect_parse_error("* * 20-10 * *", "invalid day-of-month field '20-10': reversed");
        expect_parse_error("* * * 0 *", "invalid month field '0'");
        expect_parse_error("* * * 13 *", "invalid month field '13'");
        expect_parse_error("* * * JANUARY *", "invalid month field 'JANUARY'");
        expect_parse_error("* * * FOO *", "invalid month field 'FOO'");
        expect_parse_error("* * * DEC-JAN *", "invalid month field 'DEC-JAN': reversed range 12-1");
        expect_parse_error("* * * JA *", "invalid month field 'JA'");
        expect_parse_error("* * * MON *", "invalid month field 'MON'");
        expect_parse_error("* * * * 8", "invalid day-of-week field '8'");
        expect_parse_error("* * * * MONDAY", "invalid day-of-week field 'MONDAY'");
        expect_parse_error("* * * * 5#3", "invalid day-of-week field '5#3'");
        expect_parse_error("* * * * 5L", "invalid day-of-week field '5L'");
        expect_parse_error("* * * * SAT-FRI", "invalid day-of-week field 'SAT-FRI': reversed");
        expect_parse_error("* * * * JAN", "invalid day-of-week field 'JAN'");
        expect_parse_error("* * * * */8", "invalid day-of-week field '*/8'");
        expect_parse_error("* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6");
        expect_parse_error("0 0 * * * 2025", "got 6");
        expect_parse_error("* * * *", "got 4");
        expect_parse_error("*", "got 1");
        expect_parse_error("", "empty cron expression");
        expect_parse_error(" \t ", "empty cron expression");
        expect_parse_error("@reboot", "unknown nickname '@reboot'");
        expect_parse_error("@", "unknown nickname '@'");
        expect_parse_error("@dailyx", "unknown nickname '@dailyx'");
        expect_parse_error("@daily *", "unexpected text after '@daily'");
        expect_parse_error(NULL, "missing");
}

Test(cron, parse_error_without_buffer_and_truncated) {
        CronSpec spec = { .minutes = 42 };
        char tiny[8];

        cr_assert_eq(cron_parse("61 * * * *", &spec, NULL, 0), -EINVAL);
        cr_assert_eq(spec.minutes, 42, "output touched on error");
        cr_assert_eq(cron_parse("61 * * * *", &spec, tiny, sizeof(tiny)), -EINVAL);
        cr_assert_str_eq(tiny, "invalid");
}

static CronSpec parse_ok(const char *expr) {
        char err[256] = "";
        CronSpec spec;

        cr_assert_eq(cron_parse(expr, &spec, err, sizeof(err)), 0, "'%s' rejected: %s", expr, err);
        return spec;
}

Test(cron, parse_sets) {
        CronSpec s;

        s = parse_ok("* * * * *");
        cr_assert_eq(s.minutes, (UINT64_C(1) << 60) - 1);
        cr_assert_eq(s.hours, (UINT32_C(1) << 24) - 1);
        cr_assert_eq(s.days, UINT32_C(0xfffffffe));
        cr_assert_eq(s.months, 0x1ffe);
        cr_assert_eq(s.weekdays, 0x7f);
        cr_assert(s.dom_star && s.dow_star && s.hour_wild);

        s = parse_ok("0,59 0,23 1,31 1,12 0,6");
        cr_assert_eq(s.minutes, (UINT64_C(1) << 59) | 1);
        cr_assert_eq(s.hours, (UINT32_C(1) << 23) | 1);
        cr_assert_eq(s.days, (UINT32_C(1) << 31) | 2);
        cr_assert_eq(s.months, (1u << 12) | 2);
        cr_assert_eq(s.weekdays, 0x41);
        cr_assert(!s.dom_star && !s.dow_star && !s.hour_wild);

        cr_assert_eq(parse_ok("* * * * 7").weekdays, 0x01);
        cr_assert_eq(parse_ok("* * * * 5-7").weekdays, 0x61);
        cr_assert_eq(parse_ok("* * * * fri-sun").weekdays, 0x61);
        cr_assert_eq(parse_ok("* * * * SUN-MON").weekdays, 0x03);
        cr_assert_eq(parse_ok("* * * * sun-sun").weekdays, 0x01);
        cr_assert_eq(parse_ok("* * * * 0-SUN").weekdays, 0x01);
        cr_assert_eq(parse_ok("* * * * SAT-SUN").weekdays, 0x41);
        cr_assert_eq(parse_ok("* * * * MON-SUN").weekdays, 0x7f);
        cr_assert_eq(parse_ok("* * * * sUn,WeD").weekdays, 0x09);
        cr_assert_eq(parse_ok("* * * * */2").weekdays, 0x55);
        cr_assert_eq(parse_ok("* * * * 1/3").weekdays, 0x13);
        cr_assert_eq(parse_ok("* * * * */7").weekdays, 0x01);
        cr_assert_eq(parse_ok("* * * jan-MAR,Dec *").months, 0x100e);
        cr_assert_eq(parse_ok("* * * 2/5 *").months, (1u << 2) | (1u << 7) | (1u << 12));
        cr_assert_eq(parse_ok("* * * feb/5 *").months, (1u << 2) | (1u << 7) | (1u << 12));
        cr_assert_eq(parse_ok("10-30/10 * * * *").minutes, (UINT64_C(1) << 10) | (UINT64_C(1) << 20) |
                                                           (UINT64_C(1) << 30));
        cr_assert_eq(parse_ok("55/2 * * * *").minutes, (UINT64_C(0x15) << 55));
        cr_assert_eq(parse_ok("007 * * * *").minutes, UINT64_C(1) << 7);
        cr_assert_eq(parse_ok("*/59 * * * *").minutes, (UINT64_C(1) << 59) | 1);

        /* "wild" for the OR rule is the literal '*' only, as in the reference */
        s = parse_ok("* * */1 * */1");
        cr_assert(!s.dom_star && !s.dow_star);
        cr_assert_eq(s.days, UINT32_C(0xfffffffe));

        /* the repeated-hour rule: '*' or a single step item fires in both passes */
        cr_assert(parse_ok("0 */2 * * *").hour_wild);
        cr_assert(parse_ok("0 1-5/2 * * *").hour_wild);
        cr_assert(parse_ok("0 1/2 * * *").hour_wild);
        cr_assert(!parse_ok("0 1 * * *").hour_wild);
        cr_assert(!parse_ok("0 1-5 * * *").hour_wild);
        cr_assert(!parse_ok("0 */2,5 * * *").hour_wild);

        /* nicknames are their 5-field equivalents */
        s = parse_ok("@hourly");
        cr_assert_eq(s.minutes, 1);
        cr_assert(s.hour_wild && s.dom_star && s.dow_star);
        s = parse_ok("@weekly");
        cr_assert_eq(s.weekdays, 1);
        cr_assert(s.dom_star && !s.dow_star && !s.hour_wild);
        s = parse_ok("@YEARLY");
        cr_assert_eq(s.months, 2);
        cr_assert_eq(s.days, 2);
}

Test(cron, validate_rejects_expressions_that_never_fire) {
        char err[256] = "";
        CronSpec spec;
        time_t now;

        use_tz("UTC");
        now = lt("2025-01-01 00:00");

        cr_assert_eq(cron_validate("0 0 31 2 *", now, &spec, err, sizeof(err)), -EINVAL);
        cr_assert(strstr(err, "never matches"), "%s", err);
        cr_assert_eq(cron_validate("0 0 30 2 *", now, &spec, err, sizeof(err)), -EINVAL);
        cr_assert_eq(cron_validate("0 0 31 4 *", now, &spec, err, sizeof(err)), -EINVAL);
        cr_assert_eq(cron_validate("0 0 29 2 *", lt("2097-01-01 00:00"), &spec, err, sizeof(err)), -EINVAL);
        cr_assert_eq(cron_validate("0 0 31 2 *", now, NULL, NULL, 0), -EINVAL);

        cr_assert_eq(cron_validate("5abc * * * *", now, &spec, err, sizeof(err)), -EINVAL);
        cr_assert(strstr(err, "invalid minute field '5abc'"), "%s", err);

        memset(&spec, 0, sizeof(spec));
        cr_assert_eq(cron_validate("0 0 29 2 *", now, &spec, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(spec.days, UINT32_C(1) << 29);
        cr_assert_eq(cron_validate("0 0 31 2 1", now, &spec, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(cron_validate("@yearly", now, NULL, err, sizeof(err)), 0, "%s", err);
}

Test(cron, next_far_from_1970) {
        CronSpec spec = parse_ok("* * * * *");
        time_t t;

        use_tz("UTC");
        cr_assert_eq(cron_next(&spec, (time_t) 1 << 50, &t), -ERANGE);
        cr_assert_eq(cron_next(&spec, -((time_t) 1 << 50), &t), -ERANGE);
        cr_assert_eq(cron_next(&spec, -1, &t), 0);
        cr_assert_eq(t, 0);
        cr_assert_eq(cron_next(&spec, 0, &t), 0);
        cr_assert_eq(t, 60);
}

static double elapsed_ms(const struct timespec *a, const struct timespec *b) {
        return (b->tv_sec - a->tv_sec) * 1e3 + (b->tv_nsec - a->tv_nsec) / 1e6;
}

/* The search skips whole months and days: a 4-year miss and the densest DST day stay far below 10 ms. */
Test(cron, search_is_fast) {
        static const struct {
                const char *tz, *expr, *now;
        } cases[] = {
                { "Europe/Berlin", "0 0 31 2 *", "2025-01-01 00:00" },
                { "Europe/Berlin", "* * 31 2 1-5", "2025-02-28 23:59" },  /* OR: Feb weekdays, then a year's gap */
                { "America/New_York", "59 23 * * *", "2025-11-02 23:59 -0500" },
                { "America/New_York", "* * * * *", "2025-11-02 23:58 -0500" },
                { "America/New_York", "0 0 29 2 *", "2096-03-01 00:00" },
                { "America/New_York", "* * * * *", "2095-11-06 23:58 -0500" },   /* beyond tzdata's table */
                { "Europe/Berlin", "0 0 13 * 5", "2090-01-01 00:00" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                CronSpec spec = parse_ok(cases[i].expr);
                double best = 1e9;
                time_t now, t;

                use_tz(cases[i].tz);
                now = lt(cases[i].now);
                for (int k = 0; k < 5; k++) {
                        struct timespec a, b;

                        clock_gettime(CLOCK_MONOTONIC, &a);
                        (void) cron_next(&spec, now, &t);
                        clock_gettime(CLOCK_MONOTONIC, &b);
                        if (elapsed_ms(&a, &b) < best)
                                best = elapsed_ms(&a, &b);
                }
                cr_expect_lt(best, 10.0, "'%s' from %s took %.2f ms", cases[i].expr, cases[i].now, best);
        }
}

/* Property test: random expressions whose sets the test computes itself, random times (half of them within two
 * days of a DST change), checked against a brute-force minute walk that uses libc's time functions only. */

typedef struct Expect {
        uint64_t mask[5];
        bool dom_star, dow_star, hour_wild;
} Expect;

static const struct {
        unsigned min, max;
} spans[5] = { { 0, 59 }, { 0, 23 }, { 1, 31 }, { 1, 12 }, { 0, 7 } };

static const char *const zones[] = {
        "UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "America/Moncton",
        "America/Santiago",
};

static uint64_t rng = UINT64_C(0x2545f4914f6cdd1d);

static unsigned rnd(unsigned n) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (unsigned) ((rng >> 11) % n);
}

static int put_value(char *out, int f, unsigned v, bool sun_is_7) {
        static const char *const months[] = { "Jan", "FEB", "mar", "Apr", "MAY", "jun",
                                              "Jul", "AUG", "sep", "Oct", "NOV", "dec" };
        static const char *const days[] = { "sun", "MON", "Tue", "wed", "THU", "Fri", "SAT" };

        if (f == 3 && rnd(3) == 0)
                return sprintf(out, "%s", months[v - 1]);
        if (f == 4 && rnd(3) == 0 && (v < 7 || sun_is_7))
                return sprintf(out, "%s", days[v % 7]);
        return sprintf(out, "%u", v);
}

static void gen_field(int f, char *out, Expect *e) {
        static const unsigned star_pct[5] = { 15, 30, 50, 60, 60 };
        unsigned min = spans[f].min, max = spans[f].max, n_items;
        bool wild = false;
        char *p = out;

        if (rnd(100) < star_pct[f]) {
                strcpy(out, "*");
                e->mask[f] = 0;
                for (unsigned v = min; v <= max; v++)
                        e->mask[f] |= UINT64_C(1) << (f == 4 && v == 7 ? 0 : v);
                if (f == 1)
                        e->hour_wild = true;
                if (f == 2)
                        e->dom_star = true;
                if (f == 4)
                        e->dow_star = true;
                return;
        }

        n_items = 1 + rnd(3);
        for (unsigned i = 0; i < n_items; i++) {
                unsigned kind = rnd(6), a = min + rnd(max - min + 1), b = a + rnd(max - a + 1);
                unsigned step = 1 + rnd(max < 12 ? max : 12), lo = a, hi = a, s = 1;

                if (i > 0)
                        *p++ = ',';
                switch (kind) {
                case 0:
                        p += sprintf(p, "*/%u", step);
                        lo = min, hi = max, s = step;
                        wild = true;
                        break;
                case 1:
                case 5:
                        p += put_value(p, f, a, false);
                        break;
                case 2:
                        p += put_value(p, f, a, false);
                        *p++ = '-';
                        p += put_value(p, f, b, a > 0);
                        hi = b;
                        break;
                case 3:
                        p += put_value(p, f, a, false);
                        p += sprintf(p, "/%u", step);
                        hi = max, s = step;
                        wild = true;
                        break;
                case 4:
                        p += put_value(p, f, a, false);
                        *p++ = '-';
                        p += put_value(p, f, b, a > 0);
                        p += sprintf(p, "/%u", step);
                        hi = b, s = step;
                        wild = true;
                        break;
                }
                for (unsigned v = lo; v <= hi; v += s)
                        e->mask[f] |= UINT64_C(1) << (f == 4 && v == 7 ? 0 : v);
        }
        *p = '\0';
        if (f == 1)
                e->hour_wild = n_items == 1 && wild;
}

static void gen_expr(char *out, Expect *e) {
        char field[5][128];

        *e = (Expect) {};
        for (int f = 0; f < 5; f++)
                gen_field(f, field[f], e);

        /* Now and then a day that is rare or never comes: Feb 29, Feb 30/31, the 31st of a short month. */
        if (rnd(20) == 0) {
                static const struct {
                        const char *dom, *month;
                        unsigned day;
                        uint64_t months;
                } rare[] = {
                        { "29", "2", 29, 1u << 2 },
                        { "29", "FEB", 29, 1u << 2 },
                        { "30", "feb", 30, 1u << 2 },
                        { "31", "2,4", 31, 1u << 2 | 1u << 4 },
                        { "31", "APR,jun,9,11", 31, 1u << 4 | 1u << 6 | 1u << 9 | 1u << 11 },
                        { "31", "2-6/2", 31, 1u << 2 | 1u << 4 | 1u << 6 },
                };
                unsigned i = rnd(ELEMENTSOF(rare));

                strcpy(field[2], rare[i].dom);
                strcpy(field[3], rare[i].month);
                strcpy(field[4], "*");
                e->mask[2] = UINT64_C(1) << rare[i].day;
                e->mask[3] = rare[i].months;
                e->mask[4] = 0x7f;
                e->dom_star = false;
                e->dow_star = true;
        }
        sprintf(out, "%s %s %s %s %s", field[0], field[1], field[2], field[3], field[4]);
}

static bool expect_day(const Expect *e, const struct tm *tm) {
        bool dom = e->mask[2] >> tm->tm_mday & 1, dow = e->mask[4] >> tm->tm_wday & 1;

        if (!(e->mask[3] >> (tm->tm_mon + 1) & 1))
                return false;
        return e->dom_star || e->dow_star ? dom && dow : dom || dow;
}

/* The test zones change by whole hours, so a second pass is the same wall time one hour earlier. */
static bool second_pass(time_t t, const struct tm *tm) {
        time_t p = t - 3600;
        struct tm tp;

        cr_assert_not_null(localtime_r(&p, &tp));
        return tp.tm_mday == tm->tm_mday && tp.tm_hour == tm->tm_hour && tp.tm_min == tm->tm_min;
}

/* The earliest instant of the next local day (or month); midnight may repeat (Moncton) or be skipped (Santiago). */
static time_t next_local_midnight(time_t now, const struct tm *tm, bool next_month) {
        time_t best = 0;
        bool have = false;

        for (int isdst = -1; isdst <= 1; isdst++) {
                struct tm m = *tm, back;
                time_t t;

                m.tm_mday = next_month ? 1 : m.tm_mday + 1;
                m.tm_mon += next_month;
                m.tm_hour = m.tm_min = m.tm_sec = 0;
                m.tm_isdst = isdst;
                t = mktime(&m);
                cr_assert_not_null(localtime_r(&t, &back));
                if (back.tm_hour != 0 || back.tm_min != 0 || t <= now)
                        continue;
                if (!have || t < best)
                        best = t;
                have = true;
        }
        return have ? best : now + 60;
}

/* Walks minute by minute, hopping over days, months and hours that cannot match. -EAGAIN: out of budget. */
static int oracle_next(const Expect *e, time_t after, time_t *ret) {
        time_t t = after - ((after % 60) + 60) % 60 + 60, limit = after + CRON_SEARCH_LIMIT_SEC;
        struct tm tm;

        for (unsigned steps = 0; t <= limit; steps++) {
                if (steps > 200000)
                        return -EAGAIN;
                cr_assert_not_null(localtime_r(&t, &tm));
                if (!(e->mask[3] >> (tm.tm_mon + 1) & 1))
                        t = next_local_midnight(t, &tm, true);
                else if (!expect_day(e, &tm))
                        t = next_local_midnight(t, &tm, false);
                else if (!(e->mask[1] >> tm.tm_hour & 1)) {
                        /* Hop to the next hour unless the offset changes on the way (Moncton's 00:01). */
                        time_t h = t + (60 - tm.tm_min) * 60;
                        struct tm th;

                        cr_assert_not_null(localtime_r(&h, &th));
                        t = th.tm_gmtoff == tm.tm_gmtoff ? h : t + 60;
                }
                else if ((e->mask[0] >> tm.tm_min & 1) && (e->hour_wild || !second_pass(t, &tm))) {
                        *ret = t;
                        return 0;
                } else
                        t += 60;
        }
        return -ENOENT;
}

static time_t random_time(unsigned zone) {
        static time_t transitions[ELEMENTSOF(zones)][128];
        static unsigned n_transitions[ELEMENTSOF(zones)];
        static bool scanned[ELEMENTSOF(zones)];
        const time_t from = 946684800, to = 2208988800;     /* 2000-01-01 .. 2040-01-01 */

        if (!scanned[zone]) {
                struct tm a, b;

                for (time_t d = from; d < to && n_transitions[zone] < 128; d += 86400) {
                        time_t lo = d, hi = d + 86400;

                        cr_assert_not_null(localtime_r(&lo, &a));
                        cr_assert_not_null(localtime_r(&hi, &b));
                        if (a.tm_gmtoff == b.tm_gmtoff)
                                continue;
                        while (hi - lo > 1) {
                                time_t mid = lo + (hi - lo) / 2;

                                cr_assert_not_null(localtime_r(&mid, &b));
                                if (b.tm_gmtoff == a.tm_gmtoff)
                                        lo = mid;
                                else
                                        hi = mid;
                        }
                        transitions[zone][n_transitions[zone]++] = hi;
                }
                scanned[zone] = true;
        }

        if (n_transitions[zone] > 0 && rnd(2) == 0) {
                time_t t = transitions[zone][rnd(n_transitions[zone])];

                return rnd(2) ? t - 2 * 86400 + rnd(4 * 86400) : t - 3 * 3600 + rnd(6 * 3600);
        }
        return from + (time_t) rnd((unsigned) (to - from));
}

Test(cron, property_random_expressions, .timeout = 300) {
        unsigned checks = 0, verified = 0, none = 0, second_passes = 0;

        for (unsigned i = 0; i < 2000; i++) {
                char expr[700], err[256] = "";
                CronSpec spec;
                Expect e;

                gen_expr(expr, &e);
                cr_assert_eq(cron_parse(expr, &spec, err, sizeof(err)), 0, "'%s' rejected: %s", expr, err);
                cr_assert_eq(spec.minutes, e.mask[0], "'%s': minutes", expr);
                cr_assert_eq(spec.hours, e.mask[1], "'%s': hours", expr);
                cr_assert_eq(spec.days, e.mask[2], "'%s': days", expr);
                cr_assert_eq(spec.months, e.mask[3], "'%s': months", expr);
                cr_assert_eq(spec.weekdays, e.mask[4], "'%s': weekdays", expr);
                cr_assert_eq(spec.dom_star, e.dom_star, "'%s'", expr);
                cr_assert_eq(spec.dow_star, e.dow_star, "'%s'", expr);
                cr_assert_eq(spec.hour_wild, e.hour_wild, "'%s'", expr);

                for (unsigned k = 0; k < 3; k++) {
                        unsigned zone = rnd(ELEMENTSOF(zones));
                        time_t after, next = 0, want = 0;
                        struct tm tm;
                        int r, o;

                        use_tz(zones[zone]);
                        after = random_time(zone);
                        checks++;

                        r = cron_next(&spec, after, &next);
                        cr_assert(r == 0 || r == -ENOENT, "'%s' from %s: %d", expr, fmt(after), r);
                        if (r == 0) {
                                cr_assert_gt(next, after, "'%s' %s", expr, zones[zone]);
                                cr_assert_leq(next, after + CRON_SEARCH_LIMIT_SEC);
                                cr_assert_not_null(localtime_r(&next, &tm));
                                cr_assert(tm.tm_sec == 0 && (e.mask[0] >> tm.tm_min & 1) &&
                                          (e.mask[1] >> tm.tm_hour & 1) && expect_day(&e, &tm),
                                          "'%s' from %s fired at non-matching %s", expr, fmt(after), fmt(next));
                                if (second_pass(next, &tm)) {
                                        cr_assert(e.hour_wild, "'%s' fired in a second pass at %s", expr, fmt(next));
                                        second_passes++;
                                }
                        } else
                                none++;

                        o = oracle_next(&e, after, &want);
                        if (o == -EAGAIN)
                                continue;
                        verified++;
                        cr_assert_eq(r, o, "'%s' in %s from %s: cron_next %d %s, oracle %d %s", expr, zones[zone],
                                     fmt(after), r, fmt(next), o, fmt(want));
                        if (r == 0)
                                cr_assert_eq(next, want, "'%s' in %s from %s: cron_next %s, oracle %s", expr,
                                             zones[zone], fmt(after), fmt(next), fmt(want));
                }
        }

        cr_log_info("%u checks, %u verified by the oracle, %u without a match, %u second passes",
                    checks, verified, none, second_passes);
        cr_assert_geq(verified, checks * 95 / 100, "oracle gave up too often: %u of %u", verified, checks);
}

/* Successive runs of one expression across a whole DST year: the chain must match a minute-by-minute walk. */
Test(cron, chain_through_a_dst_year) {
        static const char *const exprs[] = { "30 * * * *", "*/20 1-3 * * *", "0,30 2 * * *", "15 1 * * *" };

        for (size_t z = 1; z <= 2; z++)
                for (size_t i = 0; i < ELEMENTSOF(exprs); i++) {
                        CronSpec spec = parse_ok(exprs[i]);
                        char err[256];
                        Expect e = {};
                        time_t t, walk;
                        unsigned n = 0;

                        use_tz(zones[z]);
                        t = walk = lt("2025-01-01 00:00");
                        /* Reuse the property oracle with sets from the parser checked above. */
                        e.mask[0] = spec.minutes, e.mask[1] = spec.hours, e.mask[2] = spec.days;
                        e.mask[3] = spec.months, e.mask[4] = spec.weekdays;
                        e.dom_star = spec.dom_star, e.dow_star = spec.dow_star, e.hour_wild = spec.hour_wild;
                        cr_assert_eq(cron_validate(exprs[i], t, NULL, err, sizeof(err)), 0);

                        while (t < lt("2026-01-01 00:00")) {
                                time_t next, want;

                                cr_assert_eq(cron_next(&spec, t, &next), 0);
                                cr_assert_eq(oracle_next(&e, walk, &want), 0);
                                cr_assert_eq(next, want, "'%s' in %s after %s: %s vs %s", exprs[i], zones[z],
                                             fmt(t), fmt(next), fmt(want));
                                t = walk = next;
                                n++;
                        }
                        cr_assert_gt(n, 300);
                }
}
