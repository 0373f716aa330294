/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "macro.h"
#include "metrics.h"

const uint64_t histogram_request_bounds[] = {
        50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 250000, 1000000,
};
const unsigned histogram_request_n_bounds = ELEMENTSOF(histogram_request_bounds);

const uint64_t histogram_lateness_bounds[] = {
        1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 60000000,
};
const unsigned histogram_lateness_n_bounds = ELEMENTSOF(histogram_lateness_bounds);

void histogram_init(Histogram *h, const uint64_t *bounds_usec, unsigned n_bounds) {
        *h = (Histogram) {
                .bounds_usec = bounds_usec,
                .n_bounds = MIN(n_bounds, (unsigned) HISTOGRAM_MAX_BUCKETS),
        };
}

bool metrics_name_is_valid(const char *name) {
        if (!name || !name[0] || (name[0] >= '0' && name[0] <= '9'))
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '_' || *p == ':'))
                        return false;
        return true;
}

static int check(FILE *f) {
        return ferror(f) ? -EIO : 0;
}

int metrics_family(FILE *f, const char *name, const char *type, const char *help) {
        /* HELP text escapes only backslash and newline; photond's texts have neither. */
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
        return check(f);
}

static void write_label_value(FILE *f, const char *v) {
        for (; *v; v++)
                switch (*v) {
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                default:
                        fputc(*v, f);
                }
}

static void write_labels(FILE *f, const char *const *labels, const char *extra_name, const char *extra_value) {
        bool any = false;

        if ((!labels || !labels[0]) && !extra_name)
                return;
        fputc('{', f);
        for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
                fprintf(f, "%s%s=\"", any ? "," : "", labels[i]);
                write_label_value(f, labels[i + 1]);
                fputc('"', f);
                any = true;
        }
        if (extra_name) {
                fprintf(f, "%s%s=\"", any ? "," : "", extra_name);
                write_label_value(f, extra_value);
                fputc('"', f);
        }
        fputc('}', f);
}

int metrics_sample(FILE *f, const char *name, const char *const *labels, double value) {
        fputs(name, f);
        write_labels(f, labels, NULL, NULL);
        if (isnan(value))
                fputs(" NaN\n", f);
        else if (isinf(value))
                fputs(value > 0 ? " +Inf\n" : " -Inf\n", f);
        else
                fprintf(f, " %.17g\n", value);
        return check(f);
}

int metrics_sample_u64(FILE *f, const char *name, const char *const *labels, uint64_t value) {
        fputs(name, f);
        write_labels(f, labels, NULL, NULL);
        fprintf(f, " %" PRIu64 "\n", value);
        return check(f);
}

int metrics_histogram(FILE *f, const char *name, const char *const *labels, const Histogram *h) {
        uint64_t cumulative = 0;
        char le[32];

        for (unsigned i = 0; i <= h->n_bounds; i++) {
                cumulative += h->counts[i];
                if (i < h->n_bounds)
                        snprintf(le, sizeof(le), "%.6g", (double) h->bounds_usec[i] / USEC_PER_SEC);
                else
                        strcpy(le, "+Inf");
                fprintf(f, "%s_bucket", name);
                write_labels(f, labels, "le", le);
                fprintf(f, " %" PRIu64 "\n", cumulative);
        }
        fprintf(f, "%s_sum", name);
        write_labels(f, labels, NULL, NULL);
        fprintf(f, " %.9g\n", (double) h->sum_usec / USEC_PER_SEC);
        fprintf(f, "%s_count", name);
        write_labels(f, labels, NULL, NULL);
        fprintf(f, " %" PRIu64 "\n", h->count);
        return check(f);
}
