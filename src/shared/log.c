/* SPDX-License-Identifier: MIT */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static int max_level = LOG_INFO;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = {
                [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit", [LOG_ERR] = "err",
                [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
        };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcasecmp(s, names[i]) == 0)
                        return (int) i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        return -EINVAL;
}

bool log_stream_is_journal(const char *journal_stream, int fd) {
        unsigned long long dev, ino;
        struct stat st;
        int n = -1;

        /* "<st_dev>:<st_ino>" of the stream systemd connected to the journal (systemd.exec(5)). */
        if (!journal_stream || journal_stream[strspn(journal_stream, "0123456789:")] != '\0' ||
            sscanf(journal_stream, "%llu:%llu%n", &dev, &ino, &n) != 2 || n < 0 || journal_stream[n] != '\0')
                return false;
        if (fstat(fd, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

int log_internal_errno(int level, int error, const char *fmt, ...) {
        int saved = errno;
        va_list ap;

        /* The "<N>" prefix tells journald the priority; on a terminal, in a pipe or in a file it is noise.
         * JOURNAL_STREAM alone does not say that stderr is the journal: it is inherited by children whose stderr
         * was redirected (photond started from a shell in a unit, a test harness), so the stream must match. */
        static int show_level = -1;
        if (show_level < 0)
                show_level = log_stream_is_journal(getenv("JOURNAL_STREAM"), STDERR_FILENO);
        if (show_level)
                fprintf(stderr, "<%d>", level);

        /* %m in fmt refers to the error we were handed, not to whatever errno happens to hold. */
        errno = ERRNO_VALUE(error);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        errno = saved;

        return -ERRNO_VALUE(error);
}
