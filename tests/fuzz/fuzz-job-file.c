/* SPDX-License-Identifier: MIT */

/* scheduler_load(): a job file (<base>/.data/<photon>/schedules/<jobId>.json, which the reference daemon and
 * users write too) and the executions.jsonl history beside it, which the load sweeps and
 * get_execution_history reads. Input: the job file's bytes, a NUL, the history's bytes (no NUL: no history).
 * No Manager: a scheduler on an event loop of its own (no channels, no dispatcher: nothing runs), made and freed
 * per input. */

#include <assert.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

#include "fd-util.h"
#include "fuzz.h"
#include "json-util.h"
#include "photond-limits.h"
#include "photond-schedule.h"

static char base[] = "/tmp/photond-fuzz-jobs-XXXXXX";
static char *dir, *job_path, *history_path;

static int remove_any(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static void remove_base(void) {
        (void) nftw(base, remove_any, 16, FTW_DEPTH | FTW_PHYS);
}

/* Made once (LeakSanitizer sees them still reachable at exit). */
static sd_event* fuzz_event(void) {
        static sd_event *event;

        if (!event) {
                limits_reset();
                assert(mkdtemp(base));
                assert(atexit(remove_base) == 0);
                assert(asprintf(&dir, "%s/.data/p/schedules", base) > 0);
                assert(asprintf(&job_path, "%s/j.json", dir) > 0);
                assert(asprintf(&history_path, "%s/executions.jsonl", dir) > 0);
                assert(mkdir_parents_and_self(dir, 0700) >= 0);
                assert(sd_event_new(&event) >= 0);
        }
        return event;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        if (ftw->level > 0 && flag != FTW_D && flag != FTW_DP)
                (void) unlink(path);
        return 0;
}

static void write_file(const char *path, const uint8_t *data, size_t size) {
        _cleanup_close_ int fd = -EBADF;

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert(fd >= 0);
        assert(write(fd, data, size) == (ssize_t) size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_object_putp) struct json_object *entries = NULL, *jobs = NULL;
        sd_event *event = fuzz_event();
        Scheduler *s = NULL;
        const uint8_t *part;
        size_t len;

        fuzz_setup_logging();
        /* Files of other runs (history rotations too). */
        (void) nftw(base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);

        if (fuzz_next_part(&data, &size, '\0', &part, &len))
                write_file(job_path, part, len);
        if (data)
                write_file(history_path, data, size);

        if (scheduler_new(&(SchedulerConfig) { .event = event, .jobs_base_dir = base }, NULL, &s) < 0)
                return 0;
        (void) scheduler_load(s);
        if (scheduler_list(s, &jobs) >= 0)
                assert(json_object_array_length(jobs) == scheduler_count(s));
        (void) schedule_history_read(history_path, NULL, 0, 0, 1700000000000, &entries);
        s = scheduler_free(s);
        return 0;
}
