/* SPDX-License-Identifier: MIT */
#pragma once

/* Prometheus' text exposition format (version 0.0.4) and a fixed-bucket histogram, for GET /metrics. The writer
 * knows nothing of photond: a front end walks its sources and writes families through it. */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* A histogram of durations in microseconds with fixed upper bounds (ascending, µs); exposed in seconds, as
 * Prometheus' base unit wants. Observing is a short linear walk over at most HISTOGRAM_MAX_BUCKETS bounds and three
 * additions: cheap enough for a per-request path. */
#define HISTOGRAM_MAX_BUCKETS 16

typedef struct Histogram {
        const uint64_t *bounds_usec;    /* n_bounds ascending upper bounds; +Inf is implicit */
        unsigned n_bounds;
        uint64_t counts[HISTOGRAM_MAX_BUCKETS + 1];     /* per bucket, not cumulative; the last is +Inf */
        uint64_t sum_usec;
        uint64_t count;
} Histogram;

void histogram_init(Histogram *h, const uint64_t *bounds_usec, unsigned n_bounds);

static inline void histogram_observe(Histogram *h, uint64_t usec) {
        unsigned i = 0;

        while (i < h->n_bounds && usec > h->bounds_usec[i])
                i++;
        h->counts[i]++;
        h->sum_usec += usec;
        h->count++;
}

/* The bounds photond uses for request handling (50 µs … 1 s) and for lateness (1 ms … 60 s). */
extern const uint64_t histogram_request_bounds[];
extern const unsigned histogram_request_n_bounds;
extern const uint64_t histogram_lateness_bounds[];
extern const unsigned histogram_lateness_n_bounds;

/* The exposition is written to a FILE (open_memstream() for a response body). Names must match
 * [a-zA-Z_:][a-zA-Z0-9_:]*; label values are escaped here. labels is NULL or a list of name/value pairs ending in
 * NULL: metrics_sample(f, "x_total", (const char*[]) { "type", "lock", NULL }, 3). Every function returns 0 or
 * -EIO (ferror()) so a caller can check once at the end. */
int metrics_family(FILE *f, const char *name, const char *type, const char *help);
int metrics_sample(FILE *f, const char *name, const char *const *labels, double value);
int metrics_sample_u64(FILE *f, const char *name, const char *const *labels, uint64_t value);
/* A whole histogram family's samples (name_bucket{le=…}, name_sum, name_count) under the given labels; the family
 * line is the caller's (metrics_family(f, name, "histogram", …)) so several label sets can share it. */
int metrics_histogram(FILE *f, const char *name, const char *const *labels, const Histogram *h);

/* The standard process collector's families, as Prometheus' client libraries name them: process_cpu_seconds_total,
 * process_open_fds, process_max_fds, process_virtual_memory_bytes, process_resident_memory_bytes and
 * process_start_time_seconds (start_time_usec: CLOCK_REALTIME). Read from /proc/self and getrusage(); a value that
 * cannot be read is left out. */
int metrics_process(FILE *f, uint64_t start_time_usec);
/* The process' open file descriptors, or a negative errno. */
int process_count_fds(void);
/* The process' resident and virtual memory in bytes, from /proc/self/statm. */
int process_memory(uint64_t *ret_resident, uint64_t *ret_virtual);

/* Whether name is a valid metric name (tests; the writer asserts nothing at run time). */
bool metrics_name_is_valid(const char *name);
