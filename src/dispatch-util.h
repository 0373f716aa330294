/* SPDX-License-Identifier: MIT */
#pragma once

/* The daemon-free parts of method dispatch (see dispatch-util.c); photond-dispatch.h includes this. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

struct json_object;

typedef enum DispatchTrigger {
        DISPATCH_TRIGGER_COMMAND,
        DISPATCH_TRIGGER_SCHEDULE,
        DISPATCH_TRIGGER_WEBHOOK,
        _DISPATCH_TRIGGER_MAX,
        _DISPATCH_TRIGGER_INVALID = -EINVAL,
} DispatchTrigger;

const char* dispatch_trigger_to_string(DispatchTrigger t);

/* ---- exec handler plumbing, exposed for the unit tests and photonctl ---- */

/* Finds the handler for photon/method under dir: <dir>/<photon>/<method> (*ret_method_arg = false) or an
 * executable file <dir>/<photon> that takes the method as argv[1] (*ret_method_arg = true). Returns 0 and the
 * path; -EINVAL for names that are not valid path parts; -ENOENT if <dir>/<photon> does not exist; -ESRCH if
 * <dir>/<photon> is a directory without that method; -EACCES if the file is not executable; -EPERM if the file,
 * <dir>/<photon> or <dir> is writable by group or others or owned by neither root nor the effective user. */
int dispatch_resolve_handler(const char *dir, const char *photon, const char *method, char **ret_path,
                             bool *ret_method_arg);

/* The complete environment of a handler (NULL-terminated; free with dispatch_strv_free): PATH, HOME,
 * PHOTON_NAME, PHOTON_METHOD, PHOTON_TRIGGER and, when job_id is set, PHOTON_JOB_ID. */
int dispatch_build_env(const char *home, const char *photon, const char *method, DispatchTrigger trigger,
                       const char *job_id, char ***ret);
char** dispatch_strv_free(char **l);
DEFINE_TRIVIAL_CLEANUP_FUNC(char**, dispatch_strv_free);

/* A handler's stdout as the method's return: JSON if the whole output parses (NULL for an empty output or
 * "null"), else a string without its trailing newline. Invalid UTF-8 becomes U+FFFD. */
int dispatch_parse_output(const char *buf, size_t size, struct json_object **ret);

/* Copies buf, replacing invalid UTF-8 sequences with U+FFFD; NUL-terminated, length in *ret_size. */
int utf8_sanitize(const char *buf, size_t size, char **ret, size_t *ret_size);

/* The last bytes of a stream (a handler's stderr), for error messages. */
#define TAIL_BUF_BYTES 2048
typedef struct TailBuf {
        size_t size;
        char data[TAIL_BUF_BYTES];
} TailBuf;

void tail_buf_append(TailBuf *t, const char *buf, size_t size);
/* The tail as text for a message: starts at a character boundary, no trailing whitespace, valid UTF-8.
 * Returns a new string (possibly empty) or NULL on allocation failure. */
char* tail_buf_text(const TailBuf *t);

/* "Handler P/M exited with status 3: <tail>" and the like, from a waitid() si_code/si_status. */
char* dispatch_exit_message(const char *photon, const char *method, int code, int status, const char *tail);
