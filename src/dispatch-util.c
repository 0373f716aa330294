/* SPDX-License-Identifier: MIT */

/* The parts of method dispatch that need no daemon: finding a photon's executable handler and checking that it
 * is safe to run, a handler's environment, reading its output as the method's return, its exit as an error text.
 * photonctl links this file (run-handler runs a handler exactly as photond would) and nothing of the daemon. */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dispatch-util.h"
#include "json-util.h"
#include "macro.h"
#include "string-util.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *const dispatch_trigger_table[_DISPATCH_TRIGGER_MAX] = {
        [DISPATCH_TRIGGER_COMMAND] = "command",
        [DISPATCH_TRIGGER_SCHEDULE] = "schedule",
        [DISPATCH_TRIGGER_WEBHOOK] = "webhook",
};

const char* dispatch_trigger_to_string(DispatchTrigger t) {
        if (t < 0 || t >= _DISPATCH_TRIGGER_MAX)
                return NULL;
        return dispatch_trigger_table[t];
}


/* As sshd's StrictModes: whoever can change a handler, or the directories it is found through, can run code as
 * photond (on the system instance: as user photon, with its jobs' and webhooks' arguments). Only root and
 * photond's own user may own them, and neither group nor others may write them. */
static bool handler_stat_is_safe(const struct stat *st) {
        return (st->st_uid == 0 || st->st_uid == geteuid()) && (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

int dispatch_resolve_handler(const char *dir, const char *photon, const char *method, char **ret_path,
                             bool *ret_method_arg) {
        _cleanup_free_ char *p = NULL, *pm = NULL;
        struct stat st, dst;

        if (!dir || !name_is_valid(photon) || !name_is_valid(method))
                return -EINVAL;

        if (asprintf(&p, "%s/%s", dir, photon) < 0)
                return -ENOMEM;
        if (stat(p, &st) < 0)
                return (errno == ENOENT || errno == ENOTDIR) ? -ENOENT : -errno;
        if (stat(dir, &dst) < 0)
                return -errno;
        if (!handler_stat_is_safe(&dst) || !handler_stat_is_safe(&st))
                return -EPERM;

        if (S_ISDIR(st.st_mode)) {
                if (asprintf(&pm, "%s/%s", p, method) < 0)
                        return -ENOMEM;
                if (stat(pm, &st) < 0)
                        return (errno == ENOENT || errno == ENOTDIR) ? -ESRCH : -errno;
                if (!S_ISREG(st.st_mode))
                        return -ESRCH;
                if (access(pm, X_OK) < 0)
                        return -EACCES;
                if (!handler_stat_is_safe(&st))
                        return -EPERM;
                *ret_path = TAKE_PTR(pm);
                *ret_method_arg = false;
                return 0;
        }

        if (!S_ISREG(st.st_mode))
                return -ENOENT;
        if (access(p, X_OK) < 0)
                return -EACCES;
        *ret_path = TAKE_PTR(p);
        *ret_method_arg = true;
        return 0;
}

char** dispatch_strv_free(char **l) {
        for (char **i = l; i && *i; i++)
                free(*i);
        return mfree(l);
}

int dispatch_build_env(const char *home, const char *photon, const char *method, DispatchTrigger trigger,
                       const char *job_id, char ***ret) {
        char **env;
        size_t n = 0;
        int r = 0;

        if (!dispatch_trigger_to_string(trigger))
                return -EINVAL;

        env = new0(char*, 7);
        if (!env)
                return -ENOMEM;

        if (asprintf(&env[n++], "PATH=%s", DEFAULT_PATH) < 0 ||
            asprintf(&env[n++], "HOME=%s", home ?: "/") < 0 ||
            asprintf(&env[n++], "PHOTON_NAME=%s", photon) < 0 ||
            asprintf(&env[n++], "PHOTON_METHOD=%s", method) < 0 ||
            asprintf(&env[n++], "PHOTON_TRIGGER=%s", dispatch_trigger_to_string(trigger)) < 0 ||
            (job_id && asprintf(&env[n++], "PHOTON_JOB_ID=%s", job_id) < 0)) {
                env[n - 1] = NULL;      /* asprintf() leaves it undefined on failure */
                r = -ENOMEM;
        }
        if (r < 0) {
                dispatch_strv_free(env);
                return r;
        }
        *ret = env;
        return 0;
}

/* Length of the valid UTF-8 sequence at s (at most left bytes), or 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t left) {
        size_t n;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, cp = s[0] & 0x1f;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, cp = s[0] & 0x0f;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, cp = s[0] & 0x07;
        else
                return 0;
        if (left < n)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

int utf8_sanitize(const char *buf, size_t size, char **ret, size_t *ret_size) {
        const unsigned char *s = (const unsigned char*) buf;
        size_t bad = 0, o = 0;
        char *out;

        for (size_t i = 0; i < size;) {
                size_t n = utf8_sequence_length(s + i, size - i);
                if (n == 0) {
                        bad++;
                        i++;
                } else
                        i += n;
        }

        /* Each bad byte (1 byte) becomes U+FFFD (3 bytes). */
        out = malloc(size + bad * 2 + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < size;) {
                size_t n = utf8_sequence_length(s + i, size - i);
                if (n == 0) {
                        memcpy(out + o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                } else {
                        memcpy(out + o, s + i, n);
                        o += n;
                        i += n;
                }
        }
        out[o] = '\0';
        *ret = out;
        *ret_size = o;
        return 0;
}

/* Parses text (len bytes, NUL-terminated at len) as exactly one JSON value. 0 and *ret (NULL for null),
 * -EINVAL if it is not that, -ENOMEM. */
static int parse_one_json_value(const char *text, size_t len, struct json_object **ret) {
        _cleanup_free_ char *nl = NULL;
        struct json_object *o;
        enum json_tokener_error jerr;
        json_tokener *tok;
        size_t end;

        /* A trailing newline lets json-c finish a bare number or literal at the end of the input. */
        nl = malloc(len + 2);
        if (!nl)
                return -ENOMEM;
        memcpy(nl, text, len);
        nl[len] = '\n';
        nl[len + 1] = '\0';

        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        o = json_tokener_parse_ex(tok, nl, (int) len + 1);
        jerr = json_tokener_get_error(tok);
        end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);

        if (jerr != json_tokener_success || strspn(nl + end, " \t\r\n") != len + 1 - end) {
                json_object_put(o);
                return -EINVAL;
        }
        *ret = o;
        return 0;
}

int dispatch_parse_output(const char *buf, size_t size, struct json_object **ret) {
        _cleanup_free_ char *text = NULL;
        struct json_object *o = NULL;
        size_t len;
        int r;

        r = utf8_sanitize(buf, size, &text, &len);
        if (r < 0)
                return r;

        if (strspn(text, " \t\r\n") == len) {
                *ret = NULL;
                return 0;
        }

        /* A NUL byte cannot be in JSON text; such output is a string. */
        if (strlen(text) == len) {
                r = parse_one_json_value(text, len, &o);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0) {
                        *ret = o;
                        return 0;
                }
        }

        /* Not JSON: the text, minus the newline a shell's echo adds. */
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
                len--;
        o = json_object_new_string_len(text, (int) len);
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

void tail_buf_append(TailBuf *t, const char *buf, size_t size) {
        if (size >= sizeof(t->data)) {
                memcpy(t->data, buf + size - sizeof(t->data), sizeof(t->data));
                t->size = sizeof(t->data);
                return;
        }
        if (t->size + size > sizeof(t->data)) {
                size_t drop = t->size + size - sizeof(t->data);
                memmove(t->data, t->data + drop, t->size - drop);
                t->size -= drop;
        }
        memcpy(t->data + t->size, buf, size);
        t->size += size;
}

char* tail_buf_text(const TailBuf *t) {
        size_t start = 0, end = t->size, len;
        char *text = NULL;

        /* The cut may have split a character. */
        while (start < end && start < 4 && ((unsigned char) t->data[start] & 0xc0) == 0x80)
                start++;
        while (end > start && strchr(" \t\r\n", t->data[end - 1]))
                end--;
        while (start < end && strchr(" \t\r\n", t->data[start]))
                start++;
        if (utf8_sanitize(t->data + start, end - start, &text, &len) < 0)
                return NULL;
        return text;
}

char* dispatch_exit_message(const char *photon, const char *method, int code, int status, const char *tail) {
        char what[64];
        char *msg;

        if (code == CLD_EXITED)
                snprintf(what, sizeof(what), "exited with status %d", status);
        else if (code == CLD_KILLED || code == CLD_DUMPED)
                snprintf(what, sizeof(what), "was killed by signal SIG%s%s",
                         sigabbrev_np(status) ?: "?", code == CLD_DUMPED ? " (core dumped)" : "");
        else
                snprintf(what, sizeof(what), "ended abnormally (code %d)", code);

        if (asprintf(&msg, "Handler %s/%s %s%s%s", photon, method, what,
                     tail && tail[0] ? ": " : "", tail ?: "") < 0)
                return NULL;
        return msg;
}

