/* SPDX-License-Identifier: MIT */

/* Request validation mirrors the reference daemon's isValidDaemonRequest(): the same types, the same required
 * string fields. Where the reference answers a bare "Invalid request format" with id "unknown", photond keeps that
 * text as prefix, adds the reason and echoes the id (ARCHITECTURE.md, "deliberately differs").
 *
 * At the end, the publish fast path's scan (request_scan_publish()): a validating scanner that picks out a plain
 * publish's parts in place, building nothing, for photond-control-channels.c. */

#include <assert.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "photond-protocol.h"

static const char *const request_type_table[_REQUEST_TYPE_MAX] = {
        [REQUEST_COMMAND] = "command",
        [REQUEST_PING] = "ping",
        [REQUEST_SHUTDOWN] = "shutdown",
        [REQUEST_RELOAD] = "reload",
        [REQUEST_PROMPT_RESPONSE] = "prompt_response",
        [REQUEST_SUBSCRIBE] = "subscribe",
        [REQUEST_UNSUBSCRIBE] = "unsubscribe",
        [REQUEST_PUBLISH] = "publish",
        [REQUEST_LOCK] = "lock",
        [REQUEST_UNLOCK] = "unlock",
        [REQUEST_ASSIGN_LOCK] = "assign_lock",
        [REQUEST_TRANSFER_LOCK] = "transfer_lock",
        [REQUEST_QUERY_LOCK] = "query_lock",
        [REQUEST_SCHEDULE] = "schedule",
        [REQUEST_UNSCHEDULE] = "unschedule",
        [REQUEST_LIST_JOBS] = "list_jobs",
        [REQUEST_PS] = "ps",
        [REQUEST_ENABLE_SCHEDULE] = "enable_schedule",
        [REQUEST_DISABLE_SCHEDULE] = "disable_schedule",
        [REQUEST_PAUSE_SCHEDULE] = "pause_schedule",
        [REQUEST_RESUME_SCHEDULE] = "resume_schedule",
        [REQUEST_ADD_MANUAL_SCHEDULE] = "add_manual_schedule",
        [REQUEST_ENABLE_LINE] = "enable_line",
        [REQUEST_DISABLE_LINE] = "disable_line",
        [REQUEST_PAUSE_LINE] = "pause_line",
        [REQUEST_RESUME_LINE] = "resume_line",
        [REQUEST_GET_LINE_HISTORY] = "get_line_history",
        [REQUEST_GET_EXECUTION_HISTORY] = "get_execution_history",
        [REQUEST_LIST_LOCKS] = "list_locks",
        [REQUEST_GET_EVENTS_SINCE] = "get_events_since",
        [REQUEST_CLEAR_INSTANCES] = "clear_instances",
        [REQUEST_GET_CIRCUIT_HEALTH] = "get_circuit_health",
        [REQUEST_STATUS] = "status",
        [REQUEST_PROVIDE] = "provide",
        [REQUEST_INVOKE_RESULT] = "invoke_result",
        [REQUEST_EMIT] = "emit",
        [REQUEST_PROMPT] = "prompt",
        [REQUEST_RUN_JOB] = "run_job",
};

const char* request_type_to_string(RequestType t) {
        if (t < 0 || t >= _REQUEST_TYPE_MAX)
                return NULL;
        return request_type_table[t];
}

RequestType request_type_from_string(const char *s) {
        if (!s)
                return _REQUEST_TYPE_INVALID;
        for (RequestType t = 0; t < _REQUEST_TYPE_MAX; t++)
                if (streq(request_type_table[t], s))
                        return t;
        return _REQUEST_TYPE_INVALID;
}

/* Fields that must be present as strings, per type; NULL-terminated. */
static const char* const* required_strings(RequestType t) {
        static const char *const method[] = { "method", NULL };
        static const char *const channel[] = { "channel", NULL };
        static const char *const lock_name[] = { "lockName", NULL };
        static const char *const schedule[] = { "jobId", "method", "cron", NULL };
        static const char *const job_id[] = { "jobId", NULL };
        static const char *const photon_method[] = { "photonName", "method", NULL };
        static const char *const photon[] = { "photonName", NULL };
        static const char *const none[] = { NULL };

        switch (t) {
        case REQUEST_COMMAND:
                return method;
        case REQUEST_SUBSCRIBE:
        case REQUEST_UNSUBSCRIBE:
        case REQUEST_PUBLISH:
                return channel;
        case REQUEST_LOCK:
        case REQUEST_UNLOCK:
        case REQUEST_ASSIGN_LOCK:
        case REQUEST_TRANSFER_LOCK:
        case REQUEST_QUERY_LOCK:
                return lock_name;
        case REQUEST_SCHEDULE:
                return schedule;
        case REQUEST_UNSCHEDULE:
        case REQUEST_RUN_JOB:
                return job_id;
        case REQUEST_GET_EXECUTION_HISTORY:
        case REQUEST_ENABLE_LINE:
        case REQUEST_DISABLE_LINE:
        case REQUEST_PAUSE_LINE:
        case REQUEST_RESUME_LINE:
        case REQUEST_GET_LINE_HISTORY:
                return photon_method;
        case REQUEST_PROVIDE:
                return photon;
        default:
                return none;
        }
}

/* The members photond reads as C strings: names, holders, ids, paths. A NUL byte in one is refused here, once for
 * every request type, since a C string would end at it ("a\u0000x" would be lock "a", "p\u0000/../x" photon "p").
 * Payload members (message, args, data, promptValue, …) may hold NUL bytes: they travel as JSON. */
static const char *const text_members[] = {
        "type", "method", "channel", "lockName", "lockHolder", "lockTransferTo", "sessionId", "jobId",
        "photonName", "instanceName", "cron", "workingDir", "photonPath", NULL,
};

static bool strv_contains(const char *const *l, const char *s) {
        for (; *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

Request* request_free(Request *r) {
        if (!r)
                return NULL;
        json_object_put(r->json);
        return mfree(r);
}

static int fail(char **ret_error, const char *fmt, const char *arg) {
        if (asprintf(ret_error, fmt, arg) < 0) {
                *ret_error = NULL;
                return -ENOMEM;
        }
        return -EINVAL;
}

int request_parse(const char *line, size_t len, Request **ret, char **ret_error, char **ret_id) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *v;
        const char *jerr = NULL, *id, *type;
        RequestType t;
        Request *r;

        assert(ret);
        assert(ret_error);
        assert(ret_id);

        *ret_error = NULL;
        *ret_id = NULL;

        if (memchr(line, '\0', len))
                return fail(ret_error, "Invalid JSON: %s", "NUL byte in request");
        if (json_parse(line, len, &o, &jerr) < 0)
                return fail(ret_error, "Invalid JSON: %s", jerr ?: "syntax error");

        if (!json_object_is_type(o, json_type_object))
                return fail(ret_error, "Invalid request format: %s", "request must be a JSON object");

        if (!json_object_object_get_ex(o, "id", &v))
                return fail(ret_error, "Invalid request format: %s", "id is missing");
        if (!json_object_is_type(v, json_type_string))
                return fail(ret_error, "Invalid request format: %s", "id must be a string");
        /* Echoed exactly or not at all: a shortened id could answer another request of the client. */
        if (json_string_get_cstring(v, &id) < 0)
                return fail(ret_error, "Invalid request format: %s", "id must not contain a NUL character");
        *ret_id = strdup(id);
        if (!*ret_id)
                return -ENOMEM;

        if (!json_object_object_get_ex(o, "type", &v))
                return fail(ret_error, "Invalid request format: %s", "type is missing");
        if (!json_object_is_type(v, json_type_string))
                return fail(ret_error, "Invalid request format: %s", "type must be a string");
        type = json_object_get_string(v);
        /* One pass over the members, not a lookup per text member: this runs for every request. */
        json_object_object_foreach(o, key, m)
                if (json_string_get_cstring(m, NULL) == -EINVAL && strv_contains(text_members, key))
                        return fail(ret_error, "Invalid request format: %s must not contain a NUL character", key);
        t = request_type_from_string(type);
        if (t < 0)
                return fail(ret_error, "Invalid request format: unknown type '%.64s'", type);

        for (const char *const *f = required_strings(t); *f; f++) {
                if (!json_object_object_get_ex(o, *f, &v))
                        return fail(ret_error, "Invalid request format: %s is missing", *f);
                if (!json_object_is_type(v, json_type_string))
                        return fail(ret_error, "Invalid request format: %s must be a string", *f);
        }
        if (t == REQUEST_RELOAD && !json_object_object_get_ex(o, "photonPath", NULL))
                return fail(ret_error, "Invalid request format: %s is missing", "photonPath");

        r = new(Request, 1);
        if (!r)
                return -ENOMEM;
        *r = (Request) {
                .type = t,
                .id = id,
                .json = TAKE_PTR(o),
        };
        *ret_id = mfree(*ret_id);
        *ret = r;
        return 0;
}

const char* request_string(const Request *r, const char *key) {
        return json_get_string(r->json, key);
}

/* ---- lock requests ---- */

/* A duration in ms (LockRequest): 0 and *ret (0 when absent or null), -EINVAL for anything but a non-negative
 * number. */
static int request_ms(const Request *req, const char *key, uint64_t *ret) {
        struct json_object *v;
        double d;

        *ret = 0;
        if (!json_object_object_get_ex(req->json, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (json_object_is_type(v, json_type_int)) {
                int64_t i = json_object_get_int64(v);

                if (i < 0)
                        return -EINVAL;
                *ret = (uint64_t) i;
                return 0;
        }
        if (!json_object_is_type(v, json_type_double))
                return -EINVAL;
        d = json_object_get_double(v);
        if (isnan(d) || d < 0)
                return -EINVAL;
        if (d >= 1.8e19) {
                *ret = UINT64_MAX;
                return 0;
        }
        *ret = (uint64_t) d;
        if ((double) *ret < d)
                (*ret)++;
        return 0;
}

void lock_request_from_request(const Request *req, LockRequest *ret) {
        *ret = (LockRequest) {
                .type = req->type,
                .id = req->id,
                .name = request_string(req, "lockName"),
                .holder = request_string(req, "lockHolder"),
                .session = request_string(req, "sessionId"),
                .transfer_to = request_string(req, "lockTransferTo"),
        };
        ret->timeout_invalid = request_ms(req, "lockTimeout", &ret->timeout_ms) < 0;
        ret->wait_invalid = request_ms(req, "lockWait", &ret->wait_ms) < 0;
}

/* A string without escapes, control characters or non-ASCII bytes at *p (after the opening quote): json-c would
 * give the same bytes. */
static bool plain_string(const char **p, const char *end, const char **ret, size_t *ret_len) {
        const char *s = *p;

        while (s < end && *s != '"') {
                unsigned char ch = *s;

                if (ch < 0x20 || ch >= 0x80 || ch == '\\')
                        return false;
                s++;
        }
        if (s >= end)
                return false;
        *ret = *p;
        *ret_len = s - *p;
        *p = s + 1;
        return true;
}

static bool key_is(const char *k, size_t len, const char *name) {
        return len == strlen(name) && memcmp(k, name, len) == 0;
}

/* Copies a string member's value to *copy, NUL-terminated. */
static bool plain_set(const char **field, const char *s, size_t len, char **copy) {
        if (*field)
                return false;   /* given twice: json-c keeps the last, leave that to it */
        memcpy(*copy, s, len);
        (*copy)[len] = '\0';
        *field = *copy;
        *copy += len + 1;
        return true;
}

bool lock_request_parse_line(const char *line, size_t len, LockLineBuf *buf, LockRequest *ret) {
        const char *p = line, *end = line + len, *type = NULL;
        bool has_timeout = false, has_wait = false;
        char *copy = buf->data;
        size_t type_len = 0;
        LockRequest r = {};

        /* Every copy fits, with its NUL, since the line holds at least two quotes per string. */
        if (len >= LOCK_LINE_MAX || len < 2 || *p++ != '{')
                return false;

        for (;;) {
                const char *k, *v;
                size_t k_len, v_len;

                if (p >= end || *p++ != '"' || !plain_string(&p, end, &k, &k_len))
                        return false;
                if (p >= end || *p++ != ':' || p >= end)
                        return false;

                if (*p == '"') {
                        const char **field = NULL;

                        p++;
                        if (!plain_string(&p, end, &v, &v_len))
                                return false;
                        if (key_is(k, k_len, "type")) {
                                if (type)
                                        return false;
                                type = v;
                                type_len = v_len;
                        } else if (key_is(k, k_len, "id"))
                                field = &r.id;
                        else if (key_is(k, k_len, "lockName"))
                                field = &r.name;
                        else if (key_is(k, k_len, "sessionId"))
                                field = &r.session;
                        else if (key_is(k, k_len, "lockHolder"))
                                field = &r.holder;
                        else if (key_is(k, k_len, "lockTransferTo"))
                                field = &r.transfer_to;
                        else if (key_is(k, k_len, "lockTimeout") || key_is(k, k_len, "lockWait"))
                                return false;   /* an error reply: the general path words it */
                        if (field && !plain_set(field, v, v_len, &copy))
                                return false;
                } else if (*p >= '0' && *p <= '9') {
                        uint64_t n = 0;

                        v = p;
                        while (p < end && *p >= '0' && *p <= '9')
                                n = n * 10 + (uint64_t) (*p++ - '0');
                        if (p - v > 18 || (*v == '0' && p - v > 1))
                                return false;
                        if (key_is(k, k_len, "lockTimeout")) {
                                if (has_timeout)
                                        return false;
                                has_timeout = true;
                                r.timeout_ms = n;
                        } else if (key_is(k, k_len, "lockWait")) {
                                if (has_wait)
                                        return false;
                                has_wait = true;
                                r.wait_ms = n;
                        } else if (key_is(k, k_len, "type") || key_is(k, k_len, "id") ||
                                   key_is(k, k_len, "lockName") || key_is(k, k_len, "sessionId") ||
                                   key_is(k, k_len, "lockHolder") || key_is(k, k_len, "lockTransferTo"))
                                return false;
                } else
                        return false;

                if (p >= end)
                        return false;
                if (*p == '}')
                        break;
                if (*p++ != ',')
                        return false;
        }

        if (p + 1 != end || !type || !r.id || !r.name)
                return false;
        if (key_is(type, type_len, "lock"))
                r.type = REQUEST_LOCK;
        else if (key_is(type, type_len, "unlock"))
                r.type = REQUEST_UNLOCK;
        else
                return false;

        *ret = r;
        return true;
}

struct json_object* response_result_new(const char *id, bool success, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        o = json_object_new_object();
        if (!o) {
                json_object_put(data);
                return NULL;
        }
        if (json_add_string(o, "type", "result") < 0 ||
            json_add_string(o, "id", id ?: "unknown") < 0 ||
            json_add_bool(o, "success", success) < 0)
                return json_object_put(data), NULL;
        if (data && json_add(o, "data", data) < 0)
                return NULL;
        return TAKE_PTR(o);
}

struct json_object* response_error_new(const char *id, const char *error, const char *suggestion) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        o = json_object_new_object();
        if (!o)
                return NULL;
        if (json_add_string(o, "type", "error") < 0 ||
            json_add_string(o, "id", id ?: "unknown") < 0 ||
            json_add_string(o, "error", error) < 0 ||
            json_add_string(o, "suggestion", suggestion) < 0)
                return NULL;
        return TAKE_PTR(o);
}

struct json_object* response_pong_new(const char *id) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        o = json_object_new_object();
        if (!o)
                return NULL;
        if (json_add_string(o, "type", "pong") < 0 || json_add_string(o, "id", id ?: "unknown") < 0)
                return NULL;
        return TAKE_PTR(o);
}

struct json_object* response_shutdown_new(void) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        o = json_object_new_object();
        if (!o)
                return NULL;
        if (json_add_string(o, "type", "shutdown") < 0 ||
            json_add_string(o, "id", "daemon-shutdown") < 0 ||
            json_add_string(o, "reason", "daemon-shutting-down") < 0)
                return NULL;
        return TAKE_PTR(o);
}

/* ---- the publish fast path's scan ---- */

/* A JSON scanner that validates in place, building nothing. Everything it accepts, json-c's strict parser accepts
 * too. In canonical mode it accepts only text that json-c prints back unchanged with JSON_FORMAT_FLAGS: no
 * whitespace, only the escapes json-c writes, integers as json-c writes them, no duplicate keys. A message that
 * passes is therefore forwarded byte for byte as the general path would have re-serialized it. */
typedef struct Scan {
        const char *p, *end;
        unsigned depth;
        bool canonical;
        bool nul;                       /* the last string held an escaped NUL */
} Scan;

#define SCAN_MAX_DEPTH 31               /* json-c refuses nesting deeper than 32 */
#define SCAN_MAX_KEYS 32                /* canonical objects: keys compared for duplicates */

static void scan_ws(Scan *s) {
        if (s->canonical)
                return;
        while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
                s->p++;
}

static bool scan_char(Scan *s, char c) {
        if (s->p >= s->end || *s->p != c)
                return false;
        s->p++;
        return true;
}

static bool is_hex(char c, bool lower_only) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (!lower_only && c >= 'A' && c <= 'F');
}

/* Past the bytes at p that a JSON string takes as they are (not '"', '\\' or a control character), eight at a
 * time: a published message is mostly such a run, and a byte at a time was a fifth of photond's time in the
 * fan-out benchmark with 1 KiB messages. A word with any byte to look at is left to the caller's byte loop (the
 * tests below may flag more than that byte, never miss one). */
static const char* skip_plain(const char *p, const char *end) {
        const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);

        while (end - p >= 8) {
                uint64_t v, q, b;

                memcpy(&v, p, sizeof(v));
                q = v ^ (ones * '"');
                b = v ^ (ones * '\\');
                if (((v - ones * 0x20) & ~v & highs) | ((q - ones) & ~q & highs) | ((b - ones) & ~b & highs))
                        break;
                p += 8;
        }
        return p;
}

/* A string; *ret, *ret_len: the bytes between the quotes; *ret_plain: no escapes in them. */
static bool scan_string(Scan *s, const char **ret, size_t *ret_len, bool *ret_plain) {
        const char *start;
        bool plain = true;

        if (!scan_char(s, '"'))
                return false;
        s->nul = false;
        start = s->p;
        for (;;) {
                const char *e;

                s->p = skip_plain(s->p, s->end);
                e = s->p;
                if (e >= s->end || (unsigned char) *e < 0x20)
                        return false;
                if (*e == '"')
                        break;
                if (*e != '\\') {
                        s->p++;
                        continue;
                }

                plain = false;
                if (s->end - e < 2)
                        return false;
                if (strchr("\"\\bfnrt", e[1]) && e[1] != '\0')
                        s->p += 2;
                else if (e[1] == '/' && !s->canonical)
                        s->p += 2;
                else if (e[1] == 'u' && s->end - e >= 6 && !s->canonical &&
                         is_hex(e[2], false) && is_hex(e[3], false) && is_hex(e[4], false) && is_hex(e[5], false)) {
                        s->nul = s->nul || memcmp(e + 2, "0000", 4) == 0;
                        s->p += 6;
                }
                else if (e[1] == 'u' && s->end - e >= 6 && s->canonical && e[2] == '0' && e[3] == '0' &&
                         (e[4] == '0' || e[4] == '1') && is_hex(e[5], true)) {
                        /* json-c writes \u00xx only for control characters that have no short form. */
                        unsigned v = (e[4] - '0') * 16 + (e[5] <= '9' ? e[5] - '0' : e[5] - 'a' + 10);
                        if (strchr("\b\f\n\r\t", (int) v) && v != 0)
                                return false;
                        s->nul = s->nul || v == 0;
                        s->p += 6;
                } else
                        return false;
        }
        if (ret)
                *ret = start;
        if (ret_len)
                *ret_len = s->p - start;
        if (ret_plain)
                *ret_plain = plain;
        s->p++;
        return true;
}

static bool scan_digits(Scan *s) {
        const char *start = s->p;

        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
                s->p++;
        return s->p > start;
}

static bool scan_number(Scan *s) {
        const char *start = s->p;
        bool integer = true;

        (void) scan_char(s, '-');
        if (s->p < s->end && *s->p == '0')
                s->p++;
        else if (s->p >= s->end || *s->p < '1' || *s->p > '9' || !scan_digits(s))
                return false;
        if (scan_char(s, '.')) {
                integer = false;
                if (!scan_digits(s))
                        return false;
        }
        if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
                integer = false;
                s->p++;
                if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
                        s->p++;
                if (!scan_digits(s))
                        return false;
        }
        /* json-c keeps a fraction's text but prints integers itself: -0 as 0, and clamps beyond int64. */
        if (s->canonical && integer)
                return s->p - start <= 18 && !(s->p - start == 2 && start[0] == '-' && start[1] == '0');
        return true;
}

static bool scan_literal(Scan *s, const char *word) {
        size_t n = strlen(word);

        if ((size_t) (s->end - s->p) < n || memcmp(s->p, word, n) != 0)
                return false;
        s->p += n;
        return true;
}

static bool scan_value(Scan *s);

static bool scan_array(Scan *s) {
        if (++s->depth > SCAN_MAX_DEPTH || !scan_char(s, '['))
                return false;
        scan_ws(s);
        if (!scan_char(s, ']'))
                for (;;) {
                        scan_ws(s);
                        if (!scan_value(s))
                                return false;
                        scan_ws(s);
                        if (scan_char(s, ']'))
                                break;
                        if (!scan_char(s, ','))
                                return false;
                }
        s->depth--;
        return true;
}

static bool scan_object(Scan *s) {
        struct {
                const char *p;
                size_t n;
        } keys[SCAN_MAX_KEYS];
        unsigned n_keys = 0;

        if (++s->depth > SCAN_MAX_DEPTH || !scan_char(s, '{'))
                return false;
        scan_ws(s);
        if (!scan_char(s, '}'))
                for (;;) {
                        const char *k;
                        size_t n;

                        scan_ws(s);
                        /* json-c would cut a key at its NUL: left to the general path, which refuses it. */
                        if (!scan_string(s, &k, &n, NULL) || s->nul)
                                return false;
                        if (s->canonical) {
                                /* json-c keeps the last of duplicate keys and prints one. */
                                if (n_keys == SCAN_MAX_KEYS)
                                        return false;
                                for (unsigned i = 0; i < n_keys; i++)
                                        if (keys[i].n == n && memcmp(keys[i].p, k, n) == 0)
                                                return false;
                                keys[n_keys].p = k;
                                keys[n_keys++].n = n;
                        }
                        scan_ws(s);
                        if (!scan_char(s, ':'))
                                return false;
                        scan_ws(s);
                        if (!scan_value(s))
                                return false;
                        scan_ws(s);
                        if (scan_char(s, '}'))
                                break;
                        if (!scan_char(s, ','))
                                return false;
                }
        s->depth--;
        return true;
}

static bool scan_value(Scan *s) {
        if (s->p >= s->end)
                return false;
        switch (*s->p) {
        case '"':
                return scan_string(s, NULL, NULL, NULL);
        case '{':
                return scan_object(s);
        case '[':
                return scan_array(s);
        case 't':
                return scan_literal(s, "true");
        case 'f':
                return scan_literal(s, "false");
        case 'n':
                return scan_literal(s, "null");
        default:
                return scan_number(s);
        }
}

int request_scan_publish(const char *line, size_t len, PublishScan *ret) {
        enum { TYPE = 1, ID = 2, CHANNEL = 4, MESSAGE = 8 };
        Scan s = { .p = line, .end = line + len, .depth = 1 };
        PublishScan r = {};
        unsigned seen = 0;

        scan_ws(&s);
        if (!scan_char(&s, '{'))
                return 0;
        for (;;) {
                const char *k, *v;
                size_t kn, vn;
                bool plain;
                unsigned bit = 0;

                scan_ws(&s);
                if (!scan_string(&s, &k, &kn, &plain) || !plain)
                        return 0;
                scan_ws(&s);
                if (!scan_char(&s, ':'))
                        return 0;
                scan_ws(&s);

                if (key_is(k, kn, "message")) {
                        bit = MESSAGE;
                        r.message = s.p;
                        s.canonical = true;
                        if (!scan_value(&s))
                                return 0;
                        s.canonical = false;
                        r.message_len = s.p - r.message;
                } else if (key_is(k, kn, "type") || key_is(k, kn, "id") || key_is(k, kn, "channel")) {
                        if (!scan_string(&s, &v, &vn, &plain) || !plain)
                                return 0;
                        if (k[0] == 't') {
                                if (!key_is(v, vn, "publish"))
                                        return 0;
                                bit = TYPE;
                        } else if (k[0] == 'i') {
                                r.id = v;
                                r.id_len = vn;
                                bit = ID;
                        } else {
                                r.channel = v;
                                r.channel_len = vn;
                                bit = CHANNEL;
                        }
                } else if (key_is(k, kn, "sessionId"))
                        return 0;       /* control_handle_line() notes the session of a parsed request */
                else {
                        /* Members a publish ignores: a NUL in one (a workingDir, say) is refused by the general
                         * path for every request type, so such a line is left to it. */
                        s.nul = false;
                        if (!scan_value(&s) || s.nul)
                                return 0;
                }

                if (seen & bit)
                        return 0;
                seen |= bit;
                scan_ws(&s);
                if (scan_char(&s, '}'))
                        break;
                if (!scan_char(&s, ','))
                        return 0;
        }
        scan_ws(&s);
        if (s.p != s.end || (seen & (TYPE | ID | CHANNEL)) != (TYPE | ID | CHANNEL))
                return 0;
        *ret = r;
        return 1;
}
