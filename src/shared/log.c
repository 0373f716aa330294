/* SPDX-License-Identifier: MIT */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

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

int log_internal_errno(int level, int error, const char *fmt, ...) {
        int saved = errno;
        va_list ap;

        /* The "<N>" prefix tells journald the priority; on a terminal or in a pipe it is noise. systemd sets
         * JOURNAL_STREAM when stderr goes to the journal. */
        static int show_level = -1;
        if (show_level < 0)
                show_level = !!getenv("JOURNAL_STREAM");
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
