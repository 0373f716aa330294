/* SPDX-License-Identifier: MIT */
/* Cron: parsing and next fire time. The search walks local calendar days with pure date arithmetic and only asks
 * the time zone database about the days it could fire on, so a 4-year miss costs a few thousand integer steps. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cron.h"
#include "macro.h"

#define SEC_PER_MIN 60
#define SEC_PER_HOUR 3600
#define SEC_PER_DAY 86400
/* No UTC offset is larger than this, so the instants of one local day lie within it of the day's bounds. */
#define OFFSET_MAX_SEC (26 * SEC_PER_HOUR)
/* Keeps every date computation far from overflow: about ±34000 years around 1970. */
#define TIME_ABS_MAX ((int64_t) 1 << 40)

typedef enum CronField {
        CRON_MINUTE,
        CRON_HOUR,
        CRON_DOM,
        CRON_MONTH,
        CRON_DOW,
        _CRON_FIELD_MAX,
} CronField;

static const char *const month_names[] = {
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
};

static const char *const day_names[] = {
        "sun", "mon", "tue", "wed", "thu", "fri", "sat",
};

static const struct {
        const char *name;
        unsigned min, max;
        const char *const *names;       /* names[i] is the value min + i */
        size_t n_names;
} fields[_CRON_FIELD_MAX] = {
        [CRON_MINUTE] = { "minute",       0, 59 },
        [CRON_HOUR]   = { "hour",         0, 23 },
        [CRON_DOM]    = { "day-of-month", 1, 31 },
        [CRON_MONTH]  = { "month",        1, 12, month_names, ELEMENTSOF(month_names) },
        /* 7 is Sunday too, as in the reference; it is folded into bit 0 after expansion. */
        [CRON_DOW]    = { "day-of-week",  0,  7, day_names, ELEMENTSOF(day_names) },
};

static const struct {
        const char *name;
        const char *expr;
} nicknames[] = {
        { "@yearly",   "0 0 1 1 *" },
        { "@annually", "0 0 1 1 *" },
        { "@monthly",  "0 0 1 * *" },
        { "@weekly",   "0 0 * * 0" },
        { "@daily",    "0 0 * * *" },
        { "@midnight", "0 0 * * *" },
        { "@hourly",   "0 * * * *" },
};

static bool is_blank(char c) {
        return c != '\0' && strchr(" \t\n\r\f\v", c);
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_alpha(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

_printf_(6, 7)
static int field_error(char *errbuf, size_t errlen, CronField f, const char *text, size_t len, const char *fmt, ...) {
        va_list ap;
        int n;

        if (!errbuf || errlen == 0)
                return -EINVAL;

        n = snprintf(errbuf, errlen, "invalid %s field '%.*s': ", fields[f].name, (int) len, text);
        if (n >= 0 && (size_t) n < errlen) {
                va_start(ap, fmt);
                (void) vsnprintf(errbuf + n, errlen - n, fmt, ap);
                va_end(ap);
        }
        return -EINVAL;
}

_printf_(3, 4)
static int plain_error(char *errbuf, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (!errbuf || errlen == 0)
                return -EINVAL;

        va_start(ap, fmt);
        (void) vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* Reads a decimal number or (in fields that have them) a three-letter name at *p. Numbers saturate instead of
 * overflowing; the caller's range check rejects them. */
static int parse_value(CronField f, const char **p, const char *end, unsigned *ret, bool *ret_named) {
        const char *s = *p;
        unsigned v = 0;

        if (s < end && is_digit(*s)) {
                for (; s < end && is_digit(*s); s++)
                        v = v > 100000 ? v : v * 10 + (unsigned) (*s - '0');
                *p = s;
                *ret = v;
                *ret_named = false;
                return 0;
        }

        if (fields[f].names && end - s >= 3 && (end - s == 3 || !is_alpha(s[3])))
                for (size_t i = 0; i < fields[f].n_names; i++)
                        if (strncasecmp(s, fields[f].names[i], 3) == 0) {
                                *p = s + 3;
                                *ret = fields[f].min + i;
                                *ret_named = true;
                                return 0;
                        }

        return -EINVAL;
}

static int parse_item(CronField f, const char *item, size_t len, uint64_t *mask,
                      const char *field, size_t field_len, char *errbuf, size_t errlen) {
        unsigned min = fields[f].min, max = fields[f].max, lo, hi, step = 1;
        const char *p = item, *end = item + len;
        bool star = false, range = false, named;

        if (len == 0)
                return field_error(errbuf, errlen, f, field, field_len, "empty list item");

        if (*p == '*') {
                star = true;
                lo = min;
                hi = max;
                p++;
        } else {
                if (parse_value(f, &p, end, &lo, &named) < 0)
                        return field_error(errbuf, errlen, f, field, field_len, "'%.*s' is not a %s",
                                           (int) len, item, fields[f].names ? "number or name" : "number");
                hi = lo;

                if (p < end && *p == '-') {
                        p++;
                        range = true;
                        if (parse_value(f, &p, end, &hi, &named) < 0)
                                return field_error(errbuf, errlen, f, field, field_len,
                                                   "range '%.*s' lacks a valid end", (int) len, item);
                        /* "FRI-SUN" reads naturally: a SUN that would end a reversed range means 7. */
                        if (f == CRON_DOW && named && hi == 0 && lo > 0)
                                hi = 7;
                }
        }

        if (p < end && *p == '/') {
                const char *s = ++p;

                if (p >= end || !is_digit(*p))
                        return field_error(errbuf, errlen, f, field, field_len,
                                           "step in '%.*s' is not a number", (int) len, item);
                for (step = 0; p < end && is_digit(*p); p++)
                        step = step > 100000 ? step : step * 10 + (unsigned) (*p - '0');
                if (step == 0 || step > max)
                        return field_error(errbuf, errlen, f, field, field_len,
                                           "step %.*s out of range 1-%u", (int) (p - s), s, max);
                /* "a/n" means a, a+n, … up to the field's maximum. */
                if (!star && !range)
                        hi = max;
        }

        if (p != end)
                return field_error(errbuf, errlen, f, field, field_len, "unexpected '%.*s'", (int) (end - p), p);

        if (lo < min || lo > max)
                return field_error(errbuf, errlen, f, field, field_len, "value %u out of range %u-%u", lo, min, max);
        if (hi < min || hi > max)
                return field_error(errbuf, errlen, f, field, field_len, "value %u out of range %u-%u", hi, min, max);
        if (lo > hi)
                return field_error(errbuf, errlen, f, field, field_len, "reversed range %u-%u", lo, hi);

        for (unsigned v = lo; v <= hi; v += step)
                *mask |= UINT64_C(1) << (f == CRON_DOW && v == 7 ? 0 : v);
        return 0;
}

static int parse_field(CronField f, const char *field, size_t len, CronSpec *spec, char *errbuf, size_t errlen) {
        const char *item = field, *end = field + len;
        uint64_t mask = 0;
        int r;

        for (;;) {
                const char *comma = memchr(item, ',', end - item);
                const char *item_end = comma ?: end;

                r = parse_item(f, item, item_end - item, &mask, field, len, errbuf, errlen);
                if (r < 0)
                        return r;
                if (!comma)
                        break;
                item = comma + 1;
        }

        switch (f) {
        case CRON_MINUTE:
                spec->minutes = mask;
                break;
        case CRON_HOUR:
                spec->hours = (uint32_t) mask;
                spec->hour_wild = !memchr(field, ',', len) && (field[0] == '*' || memchr(field, '/', len));
                break;
        case CRON_DOM:
                spec->days = (uint32_t) mask;
                spec->dom_star = len == 1 && field[0] == '*';
                break;
        case CRON_MONTH:
                spec->months = (uint16_t) mask;
                break;
        case CRON_DOW:
                spec->weekdays = (uint8_t) mask;
                spec->dow_star = len == 1 && field[0] == '*';
                break;
        default:
                return -EINVAL;
        }
        return 0;
}

int cron_parse(const char *expr, CronSpec *ret, char *errbuf, size_t errlen) {
        const char *p, *start[_CRON_FIELD_MAX];
        size_t len[_CRON_FIELD_MAX];
        CronSpec spec = {};
        unsigned n = 0;
        int r;

        if (!expr || !ret)
                return plain_error(errbuf, errlen, "missing cron expression");

        for (p = expr; is_blank(*p); p++)
                ;

        if (*p == '@') {
                const char *e = p;
                size_t l;

                while (*e && !is_blank(*e))
                        e++;
                l = e - p;
                for (const char *q = e; *q; q++)
                        if (!is_blank(*q))
                                return plain_error(errbuf, errlen, "unexpected text after '%.*s'", (int) l, p);

                for (size_t i = 0; i < ELEMENTSOF(nicknames); i++)
                        if (strlen(nicknames[i].name) == l && strncasecmp(p, nicknames[i].name, l) == 0)
                                return cron_parse(nicknames[i].expr, ret, errbuf, errlen);

                return plain_error(errbuf, errlen,
                                   "unknown nickname '%.*s' (known: @yearly @annually @monthly @weekly @daily "
                                   "@midnight @hourly)", (int) l, p);
        }

        while (*p) {
                const char *s = p;

                while (*p && !is_blank(*p))
                        p++;
                if (n < _CRON_FIELD_MAX) {
                        start[n] = s;
                        len[n] = p - s;
                }
                n++;
                while (is_blank(*p))
                        p++;
        }

        if (n == 0)
                return plain_error(errbuf, errlen, "empty cron expression");
        if (n != _CRON_FIELD_MAX)
                return plain_error(errbuf, errlen,
                                   "expected 5 fields (minute hour day-of-month month day-of-week), got %u", n);

        for (CronField f = 0; f < _CRON_FIELD_MAX; f++) {
                r = parse_field(f, start[f], len[f], &spec, errbuf, errlen);
                if (r < 0)
                        return r;
        }

        *ret = spec;
        return 0;
}

static int64_t floor_div(int64_t a, int64_t b) {
        return a / b - (a % b < 0);
}

/* Proleptic Gregorian calendar <-> days since 1970-01-01 (H. Hinnant's algorithms). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        int64_t era;
        unsigned yoe, doy, doe;

        y -= m <= 2;
        era = floor_div(y, 400);
        yoe = (unsigned) (y - era * 400);
        doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t) doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d) {
        int64_t era, y;
        unsigned doe, yoe, doy, mp, m;

        z += 719468;
        era = floor_div(z, 146097);
        doe = (unsigned) (z - era * 146097);
        yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        y = (int64_t) yoe + era * 400;
        doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        mp = (5 * doy + 2) / 153;
        m = mp < 10 ? mp + 3 : mp - 9;
        *ret_y = y + (m <= 2);
        *ret_m = m;
        *ret_d = doy - (153 * mp + 2) / 5 + 1;
}

static int utc_offset(int64_t t, int64_t *ret) {
        time_t tt = (time_t) t;
        struct tm tm;

        if ((int64_t) tt != t || !localtime_r(&tt, &tm))
                return -ERANGE;
        *ret = tm.tm_gmtoff;
        return 0;
}

static bool day_matches(const CronSpec *spec, int64_t day, unsigned d) {
        unsigned wd = (unsigned) (day - floor_div(day + 4, 7) * 7 + 4) % 7;   /* 1970-01-01 was a Thursday */
        bool dom = spec->days & (UINT32_C(1) << d), dow = spec->weekdays & (1u << wd);

        /* Vixie's rule: a restricted DOM and a restricted DOW are OR-ed; '*' defers to the other field. */
        if (spec->dom_star || spec->dow_star)
                return dom && dow;
        return dom || dow;
}

/* The instants whose local wall time is `civil` (seconds of a UTC-labelled calendar), given the distinct
 * offsets in force around it: 0 in a gap, 2 in a repeated hour. Returns how many, earliest first. */
static int civil_to_instants(int64_t civil, const int64_t *offsets, unsigned n_offsets, int64_t ret[static 2]) {
        unsigned n = 0;
        int r;

        for (unsigned i = 0; i < n_offsets; i++) {
                int64_t t = civil - offsets[i], o;

                r = utc_offset(t, &o);
                if (r < 0)
                        return r;
                if (o != offsets[i])
                        continue;
                if (n == 0)
                        ret[n++] = t;
                else if (t < ret[0]) {
                        ret[1] = ret[0];
                        ret[0] = t;
                        n = 2;
                } else if (t > ret[0] && (n == 1 || t < ret[1])) {
                        ret[1] = t;
                        n = 2;
                }
        }
        return (int) n;
}

/* Earliest fire instant > after on local day `day`. Returns 1 and *ret, 0 if none; *ret_changing tells whether
 * the UTC offset changes near that day (then the following day may hold an earlier instant). */
static int day_next(const CronSpec *spec, int64_t day, int64_t after, int64_t *ret, bool *ret_changing) {
        int64_t start = day * SEC_PER_DAY, offsets[3], min_offset, best_first = 0, best_second = 0;
        bool have_first = false, have_second = false;
        unsigned n_offsets = 0;
        int r;

        /* Probe the offset before, inside and after the span that this day's wall times can map to. */
        for (unsigned i = 0; i < 3; i++) {
                int64_t probe = start + (int64_t[]) { -OFFSET_MAX_SEC, SEC_PER_DAY / 2,
                                                      SEC_PER_DAY + OFFSET_MAX_SEC }[i], o;
                bool seen = false;

                r = utc_offset(probe, &o);
                if (r < 0)
                        return r;
                for (unsigned j = 0; j < n_offsets; j++)
                        seen = seen || offsets[j] == o;
                if (!seen)
                        offsets[n_offsets++] = o;
        }
        *ret_changing = n_offsets > 1;
        min_offset = offsets[0];
        for (unsigned j = 1; j < n_offsets; j++)
                min_offset = MIN(min_offset, offsets[j]);

        for (unsigned h = 0; h < 24; h++) {
                if (!(spec->hours & (UINT32_C(1) << h)))
                        continue;

                for (unsigned m = 0; m < 60; m++) {
                        /* t is set by civil_to_instants(); zeroed only to quiet -Wmaybe-uninitialized at -O2. */
                        int64_t civil = start + h * SEC_PER_HOUR + m * SEC_PER_MIN, t[2] = {};

                        /* Every instant of this wall time is at most civil - min_offset: cheap to rule out. */
                        if (!(spec->minutes & (UINT64_C(1) << m)) || civil - min_offset <= after)
                                continue;

                        if (n_offsets == 1) {
                                /* One offset all day: wall time and instant move together. */
                                *ret = civil - offsets[0];
                                return 1;
                        }

                        r = civil_to_instants(civil, offsets, n_offsets, t);
                        if (r < 0)
                                return r;
                        if (r == 0)
                                continue;       /* skipped by a spring-forward gap */

                        /* First passes are increasing in wall-time order, and so are second passes, and a second
                         * pass is later than its own first pass: the first hit of each list is its minimum, and
                         * once a first pass hits, no later wall time can beat it. */
                        if (r == 2 && spec->hour_wild && !have_second && t[1] > after) {
                                best_second = t[1];
                                have_second = true;
                        }
                        if (t[0] > after) {
                                best_first = t[0];
                                have_first = true;
                                break;
                        }
                }
                if (have_first)
                        break;
        }

        if (!have_first && !have_second)
                return 0;
        if (have_first && have_second)
                *ret = MIN(best_first, best_second);
        else
                *ret = have_first ? best_first : best_second;
        return 1;
}

int cron_next(const CronSpec *spec, time_t after, time_t *ret) {
        int64_t a = (int64_t) after, limit, offset, day, last_day, found = 0;
        bool have = false;
        int r;

        if (!spec || !ret)
                return -EINVAL;
        if (a > TIME_ABS_MAX || a < -TIME_ABS_MAX)
                return -ERANGE;

        tzset();

        r = utc_offset(a, &offset);
        if (r < 0)
                return r;

        limit = a + CRON_SEARCH_LIMIT_SEC;
        /* A day early: in a repeated hour that straddles midnight, a later instant can carry an earlier date. */
        day = floor_div(a + offset, SEC_PER_DAY) - 1;
        last_day = floor_div(limit + OFFSET_MAX_SEC, SEC_PER_DAY) + 1;

        while (day <= last_day) {
                unsigned m, d;
                int64_t y, t;
                bool changing;

                civil_from_days(day, &y, &m, &d);
                if (!(spec->months & (1u << m))) {
                        if (have)
                                break;
                        day = days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1);
                        continue;
                }
                if (!day_matches(spec, day, d)) {
                        if (have)
                                break;
                        day++;
                        continue;
                }

                r = day_next(spec, day, a, &t, &changing);
                if (r < 0)
                        return r;
                if (r > 0) {
                        if (!have || t < found)
                                found = t;
                        /* Around an offset change the next day's first pass may come before this one's
                         * second pass, so look at one more day before settling. */
                        if (have || !changing) {
                                have = true;
                                break;
                        }
                        have = true;
                } else if (have)
                        break;
                day++;
        }

        if (!have || found > limit || (int64_t) (time_t) found != found)
                return -ENOENT;
        *ret = (time_t) found;
        return 0;
}

int cron_validate(const char *expr, time_t now, CronSpec *ret, char *errbuf, size_t errlen) {
        CronSpec spec;
        time_t t;
        int r;

        r = cron_parse(expr, &spec, errbuf, errlen);
        if (r < 0)
                return r;

        r = cron_next(&spec, now, &t);
        if (r == -ENOENT)
                return plain_error(errbuf, errlen, "'%s' never matches within the next 4 years", expr);
        if (r < 0)
                return plain_error(errbuf, errlen, "cannot compute the next run of '%s': %s", expr, strerror(-r));

        if (ret)
                *ret = spec;
        return 0;
}
