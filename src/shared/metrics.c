/* SPDX-License-Identifier: MIT */

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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

/* " value\n": a short form that reads back as the same double (as Prometheus' own clients write it). */
static void write_value(FILE *f, double value) {
        char buf[32];

        if (isnan(value))
                fputs(" NaN\n", f);
        else if (isinf(value))
                fputs(value > 0 ? " +Inf\n" : " -Inf\n", f);
        else {
                snprintf(buf, sizeof(buf), "%.15g", value);
                if (strtod(buf, NULL) != value)
                        snprintf(buf, sizeof(buf), "%.17g", value);
                fprintf(f, " %s\n", buf);
        }
}

int metrics_sample(FILE *f, const char *name, const char *const *labels, double value) {
        fputs(name, f);
        write_labels(f, labels, NULL, NULL);
        write_value(f, value);
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
        write_value(f, (double) h->sum_usec / USEC_PER_SEC);
        fprintf(f, "%s_count", name);
        write_labels(f, labels, NULL, NULL);
        fprintf(f, " %" PRIu64 "\n", h->count);
        return check(f);
}

/* ---- the process collector ---- */

int process_count_fds(void) {
        DIR *d;
        int n = 0;

        d = opendir("/proc/self/fd");
        if (!d)
                return -errno;
        for (struct dirent *de; (de = readdir(d));)
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1;   /* the directory's own fd */
}

int process_memory(uint64_t *ret_resident, uint64_t *ret_virtual) {
        unsigned long size, resident;
        long page = sysconf(_SC_PAGESIZE);
        FILE *f;
        int n;

        f = fopen("/proc/self/statm", "re");
        if (!f)
                return -errno;
        n = fscanf(f, "%lu %lu", &size, &resident);
        fclose(f);
        if (n != 2 || page <= 0)
                return -EIO;
        *ret_resident = (uint64_t) resident * (uint64_t) page;
        *ret_virtual = (uint64_t) size * (uint64_t) page;
        return 0;
}

int metrics_process(FILE *f, uint64_t start_time_usec) {
        uint64_t resident, virtual;
        struct rusage ru;
        struct rlimit rl;
        int n;

        if (getrusage(RUSAGE_SELF, &ru) == 0) {
                double cpu = (double) ru.ru_utime.tv_sec + (double) ru.ru_stime.tv_sec +
                             (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / USEC_PER_SEC;

                metrics_family(f, "process_cpu_seconds_total", "counter",
                               "Total user and system CPU time spent in seconds.");
                metrics_sample(f, "process_cpu_seconds_total", NULL, cpu);
        }
        n = process_count_fds();
        if (n >= 0) {
                metrics_family(f, "process_open_fds", "gauge", "Number of open file descriptors.");
                metrics_sample_u64(f, "process_open_fds", NULL, (uint64_t) n);
        }
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
                metrics_family(f, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
                metrics_sample_u64(f, "process_max_fds", NULL, (uint64_t) rl.rlim_cur);
        }
        if (process_memory(&resident, &virtual) >= 0) {
                metrics_family(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
                metrics_sample_u64(f, "process_virtual_memory_bytes", NULL, virtual);
                metrics_family(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
                metrics_sample_u64(f, "process_resident_memory_bytes", NULL, resident);
        }
        metrics_family(f, "process_start_time_seconds", "gauge",
                       "Start time of the process since unix epoch in seconds.");
        metrics_sample(f, "process_start_time_seconds", NULL, (double) start_time_usec / USEC_PER_SEC);
        return check(f);
}
