/* SPDX-License-Identifier: MIT */
#pragma once

/* stderr logging with <N> priority prefixes that journald parses. log_*_errno() set errno = -error (so %m works)
 * and return the negative error, so "return log_error_errno(r, ...)" reads naturally. */

#include <stdbool.h>
#include <syslog.h>

#include "macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);
int log_level_from_string(const char *s);   /* LOG_* or -EINVAL */

/* Whether fd is the stream that journal_stream ($JOURNAL_STREAM, "<dev>:<ino>") names. */
bool log_stream_is_journal(const char *journal_stream, int fd);

int log_internal_errno(int level, int error, const char *fmt, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...)                                               \
        ({                                                                              \
                int _l = (level), _e = (error);                                         \
                _l <= log_get_max_level() ? log_internal_errno(_l, _e, __VA_ARGS__)     \
                                          : -ERRNO_VALUE(_e);                           \
        })

#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, error, __VA_ARGS__)
#define log_info_errno(error, ...) log_full_errno(LOG_INFO, error, __VA_ARGS__)
#define log_notice_errno(error, ...) log_full_errno(LOG_NOTICE, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, error, __VA_ARGS__)

#define log_debug(...) (void) log_debug_errno(0, __VA_ARGS__)
#define log_info(...) (void) log_info_errno(0, __VA_ARGS__)
#define log_notice(...) (void) log_notice_errno(0, __VA_ARGS__)
#define log_warning(...) (void) log_warning_errno(0, __VA_ARGS__)
#define log_error(...) (void) log_error_errno(0, __VA_ARGS__)

#define log_oom() log_error_errno(SYNTHETIC_ERRNO(ENOMEM), "Out of memory.")
