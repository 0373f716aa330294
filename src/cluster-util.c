/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster-util.h"
#include "string-util.h"

/* len bytes of s, %XX decoded, as a new string; -EINVAL for a bad escape or a decoded NUL. */
static int percent_decode(const char *s, size_t len, char **ret) {
        char *d, *o;

        d = o = malloc(len + 1);
        if (!d)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '%') {
                        int hi, lo;

                        if (i + 2 >= len)
                                goto fail;
                        hi = unhexchar(s[i + 1]);
                        lo = unhexchar(s[i + 2]);
                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                goto fail;
                        *o++ = (char) (hi << 4 | lo);
                        i += 2;
                } else
                        *o++ = s[i];
        }
        *o = 0;
        *ret = d;
        return 0;
fail:
        explicit_bzero(d, len + 1);
        free(d);
        return -EINVAL;
}

static int parse_uint(const char *s, size_t len, unsigned max, unsigned *ret) {
        unsigned v = 0;

        if (len == 0 || len > 10)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (s[i] - '0');
                if (v > max)
                        return -EINVAL;
        }
        *ret = v;
        return 0;
}

static void free_secret(char *s) {
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

void cluster_url_done(ClusterUrl *u) {
        if (!u)
                return;
        free(u->host);
        free(u->path);
        free(u->user);
        free_secret(u->password);
        *u = (ClusterUrl) {};
}

static int parse_unix(const char *s, ClusterUrl *u) {
        const char *q = strchr(s, '?');
        size_t plen = q ? (size_t) (q - s) : strlen(s);
        int r;

        if (plen < 2 || s[0] != '/' || memchr(s, '#', plen))
                return -EINVAL;
        r = percent_decode(s, plen, &u->path);
        if (r < 0)
                return r;
        if (q) {
                q++;
                if (strncmp(q, "db=", 3) != 0)
                        return -EINVAL;
                r = parse_uint(q + 3, strlen(q + 3), 1u << 20, &u->db);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_redis(const char *s, ClusterUrl *u) {
        const char *at, *hostport, *slash, *end, *colon;
        unsigned port = 6379;
        int r;

        /* The authority ends at the first '/'; the userinfo at its last '@' (a password may hold '@' escaped or
         * not: the last one is the separator). */
        slash = strchr(s, '/');
        end = slash ?: s + strlen(s);
        at = NULL;
        for (const char *p = s; p < end; p++)
                if (*p == '@')
                        at = p;
        if (at) {
                const char *sep = memchr(s, ':', (size_t) (at - s));

                if (sep) {
                        if (sep > s) {
                                r = percent_decode(s, (size_t) (sep - s), &u->user);
                                if (r < 0)
                                        return r;
                        }
                        r = percent_decode(sep + 1, (size_t) (at - sep - 1), &u->password);
                } else
                        /* redis://password@host is how many clients spell AUTH without a user; a user without a
                         * password cannot AUTH. */
                        r = percent_decode(s, (size_t) (at - s), &u->password);
                if (r < 0)
                        return r;
                hostport = at + 1;
        } else
                hostport = s;

        if (hostport >= end)
                return -EINVAL;
        if (*hostport == '[') {
                const char *close = memchr(hostport, ']', (size_t) (end - hostport));

                if (!close || close == hostport + 1)
                        return -EINVAL;
                u->host = strndup(hostport + 1, (size_t) (close - hostport - 1));
                colon = close + 1 < end ? close + 1 : NULL;
                if (colon && *colon != ':')
                        return -EINVAL;
        } else {
                colon = memchr(hostport, ':', (size_t) (end - hostport));
                if ((colon ?: end) == hostport)
                        return -EINVAL;
                u->host = strndup(hostport, (size_t) ((colon ?: end) - hostport));
        }
        if (!u->host)
                return -ENOMEM;
        for (const char *p = u->host; *p; p++)
                if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') ||
                      strchr(".-_:", *p)))
                        return -EINVAL;
        if (colon) {
                r = parse_uint(colon + 1, (size_t) (end - colon - 1), 65535, &port);
                if (r < 0 || port == 0)
                        return -EINVAL;
        }
        u->port = (uint16_t) port;

        if (slash && slash[1]) {
                r = parse_uint(slash + 1, strlen(slash + 1), 1u << 20, &u->db);
                if (r < 0)
                        return r;
        }
        return 0;
}

int cluster_url_parse(const char *s, ClusterUrl *ret) {
        ClusterUrl u = {};
        int r;

        if (!s || !ret || strlen(s) > CLUSTER_URL_MAX)
                return -EINVAL;
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p <= ' ' || *p == 0x7f)
                        return -EINVAL;

        if (strncmp(s, "unix://", 7) == 0)
                r = parse_unix(s + 7, &u);
        else if (strncmp(s, "redis://", 8) == 0)
                r = parse_redis(s + 8, &u);
        else
                r = -EINVAL;
        if (r < 0) {
                cluster_url_done(&u);
                return r;
        }
        *ret = u;
        return 0;
}

int cluster_url_redacted(const ClusterUrl *u, char **ret) {
        bool v6;
        int r;

        if (u->path)
                r = u->db ? asprintf(ret, "unix://%s?db=%u", u->path, u->db) : asprintf(ret, "unix://%s", u->path);
        else {
                v6 = strchr(u->host, ':');
                r = asprintf(ret, "redis://%s%s%s%s%s:%u/%u", u->user ?: "",
                             u->password ? (u->user ? ":***@" : "***@") : (u->user ? "@" : ""),
                             v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, u->db);
        }
        return r < 0 ? -ENOMEM : 0;
}

bool cluster_node_id_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        if (n == 0 || n > CLUSTER_NODE_ID_MAX)
                return false;
        for (const char *p = id; *p; p++)
                if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') ||
                      strchr("._@:-", *p)))
                        return false;
        return true;
}

bool cluster_prefix_valid(const char *prefix) {
        if (!prefix || strlen(prefix) > CLUSTER_PREFIX_MAX)
                return false;
        for (const char *p = prefix; *p; p++)
                if (*p <= ' ' || *p >= 0x7f)
                        return false;
        return true;
}

int cluster_envelope_build(const char *node_id, uint64_t event_id, int64_t timestamp, uint64_t token,
                           const char *message, size_t message_len, char **ret, size_t *ret_len) {
        char head[96 + CLUSTER_NODE_ID_MAX];
        int n;
        char *b;

        n = snprintf(head, sizeof(head), "2 %" PRIu64 " %" PRIi64 " %" PRIu64 " %s\n", event_id, timestamp, token,
                     node_id);
        if (n < 0 || (size_t) n >= sizeof(head))
                return -EINVAL;
        if (!message)
                message_len = 0;
        b = malloc((size_t) n + message_len + 1);
        if (!b)
                return -ENOMEM;
        memcpy(b, head, (size_t) n);
        if (message_len > 0)
                memcpy(b + n, message, message_len);
        b[n + message_len] = 0;
        *ret = b;
        *ret_len = (size_t) n + message_len;
        return 0;
}

/* A decimal number of 1..20 digits at *p, ended by sep, which is skipped. */
static int parse_u64(const char **p, const char *end, char sep, uint64_t *ret) {
        const char *q = *p;
        uint64_t v = 0;

        if (q < end && *q == '-')
                return -EINVAL;
        for (; q < end && *q >= '0' && *q <= '9'; q++) {
                if (v > (UINT64_MAX - 9) / 10)
                        return -EINVAL;
                v = v * 10 + (uint64_t) (*q - '0');
        }
        if (q == *p || q >= end || *q != sep)
                return -EINVAL;
        *p = q + 1;
        *ret = v;
        return 0;
}

int cluster_envelope_parse(const char *p, size_t len, ClusterEnvelope *ret) {
        const char *end = p + len, *nl;
        uint64_t id, ts, token;

        if (len < 2 || p[0] != '2' || p[1] != ' ')
                return -EINVAL;
        p += 2;
        if (parse_u64(&p, end, ' ', &id) < 0 || parse_u64(&p, end, ' ', &ts) < 0 ||
            parse_u64(&p, end, ' ', &token) < 0)
                return -EINVAL;
        nl = memchr(p, '\n', (size_t) (end - p));
        if (!nl || nl == p || nl - p > CLUSTER_NODE_ID_MAX || id == 0 || ts > INT64_MAX)
                return -EINVAL;
        *ret = (ClusterEnvelope) {
                .event_id = id,
                .timestamp = (int64_t) ts,
                .token = token,
                .node_id = p,
                .node_id_len = (size_t) (nl - p),
                .message = nl + 1 < end ? nl + 1 : NULL,
                .message_len = (size_t) (end - nl - 1),
        };
        return 0;
}

int cluster_batch_next(ClusterBatch *b, ClusterBatchEvent *ret) {
        const char *p = b->next;
        uint64_t token, clen, mlen = 0;
        bool none = false;

        if (b->n_read == b->n_events)
                return p == b->end ? 0 : -EINVAL;
        if (parse_u64(&p, b->end, ' ', &token) < 0 || parse_u64(&p, b->end, ' ', &clen) < 0)
                return -EINVAL;
        if (b->n_read > 0 && token <= b->last_token)
                return -EINVAL;
        if (p + 3 <= b->end && memcmp(p, "-1\n", 3) == 0) {
                none = true;
                p += 3;
        } else if (parse_u64(&p, b->end, '\n', &mlen) < 0)
                return -EINVAL;
        /* The channel, the message and its NUL. */
        if (clen >= (uint64_t) (b->end - p) || mlen >= (uint64_t) (b->end - p) - clen || p[clen + mlen] != '\0')
                return -EINVAL;
        *ret = (ClusterBatchEvent) {
                .event_id = b->first_event_id + b->n_read,
                .token = token,
                .channel = p,
                .channel_len = clen,
                .message = none ? NULL : p + clen,
                .message_len = mlen,
        };
        b->next = p + clen + mlen + 1;
        b->n_read++;
        b->last_token = token;
        return 1;
}

/* "<version> <first eventId> <timestamp> <n> <nodeId>" up to end. */
static int batch_head_parse(const char *p, const char *end, char version, ClusterBatch *ret) {
        uint64_t id, ts, n;

        if (end - p < 2 || p[0] != version || p[1] != ' ')
                return -EINVAL;
        p += 2;
        if (parse_u64(&p, end, ' ', &id) < 0 || parse_u64(&p, end, ' ', &ts) < 0 || parse_u64(&p, end, ' ', &n) < 0)
                return -EINVAL;
        if (end == p || end - p > CLUSTER_NODE_ID_MAX || memchr(p, '\n', (size_t) (end - p)) || id == 0 ||
            ts > INT64_MAX || n == 0 || n > CLUSTER_BATCH_MAX || id > UINT64_MAX - n)
                return -EINVAL;
        *ret = (ClusterBatch) {
                .first_event_id = id,
                .timestamp = (int64_t) ts,
                .n_events = n,
                .node_id = p,
                .node_id_len = (size_t) (end - p),
        };
        return 0;
}

int cluster_batch_set_events(ClusterBatch *b, const char *p, size_t len) {
        ClusterBatch walk;
        ClusterBatchEvent e;
        int r;

        b->next = p;
        b->end = p + len;
        b->n_read = b->last_token = 0;
        walk = *b;
        while ((r = cluster_batch_next(&walk, &e)) > 0)
                ;
        return r;
}

int cluster_batch_parse_head(const char *p, size_t len, ClusterBatch *ret) {
        return batch_head_parse(p, p + len, '4', ret);
}

int cluster_batch_parse(const char *p, size_t len, ClusterBatch *ret) {
        const char *end = p + len, *nl;
        ClusterBatch b;
        int r;

        nl = memchr(p, '\n', len);
        if (!nl)
                return -EINVAL;
        r = batch_head_parse(p, nl, '3', &b);
        if (r < 0)
                return r;
        r = cluster_batch_set_events(&b, nl + 1, (size_t) (end - nl - 1));
        if (r < 0)
                return r;
        *ret = b;
        return 0;
}

int cluster_replay_parse(const char *p, size_t len, ClusterReplay *ret) {
        const char *end = p + len;
        uint64_t token, refresh, last;

        if (len < 2 || p[0] != 'R' || p[1] != ' ')
                return -EINVAL;
        p += 2;
        if (parse_u64(&p, end, ' ', &token) < 0 || parse_u64(&p, end, ' ', &refresh) < 0 || refresh > 1)
                return -EINVAL;
        /* The head's newline may be the last byte. */
        if (parse_u64(&p, end, '\n', &last) < 0)
                return -EINVAL;
        *ret = (ClusterReplay) {
                .token = token,
                .refresh_needed = refresh,
                .last_event_id = last,
                .next = p,
                .end = end,
        };
        return 0;
}

int cluster_replay_next(ClusterReplay *r, ClusterReplayEvent *ret) {
        const char *p = r->next;
        uint64_t id, ts, clen, mlen = 0;
        bool none = false;

        if (p == r->end)
                return 0;
        if (parse_u64(&p, r->end, ' ', &id) < 0 || parse_u64(&p, r->end, ' ', &ts) < 0 ||
            parse_u64(&p, r->end, ' ', &clen) < 0 || id == 0 || ts > INT64_MAX)
                return -EINVAL;
        if (p + 3 <= r->end && memcmp(p, "-1\n", 3) == 0) {
                none = true;
                p += 3;
        } else if (parse_u64(&p, r->end, '\n', &mlen) < 0)
                return -EINVAL;
        if (clen > (uint64_t) (r->end - p) || mlen > (uint64_t) (r->end - p) - clen)
                return -EINVAL;
        if (ret->event_id != 0 && id <= ret->event_id)
                return -EINVAL;
        *ret = (ClusterReplayEvent) {
                .event_id = id,
                .timestamp = (int64_t) ts,
                .channel = p,
                .channel_len = clen,
                .message = none ? NULL : p + clen,
                .message_len = mlen,
        };
        r->next = p + clen + mlen;
        return 1;
}

int cluster_key(const char *prefix, const char *kind, const char *name, size_t len, char **ret, size_t *ret_len) {
        size_t plen = strlen(prefix), klen = strlen(kind);
        char *k = malloc(plen + klen + len + 1);

        if (!k)
                return -ENOMEM;
        memcpy(k, prefix, plen);
        memcpy(k + plen, kind, klen);
        if (len > 0)
                memcpy(k + plen + klen, name, len);
        k[plen + klen + len] = 0;
        *ret = k;
        *ret_len = plen + klen + len;
        return 0;
}

int cluster_glob_escape(const char *s, size_t len, char **ret, size_t *ret_len) {
        char *b, *o;

        b = o = malloc(2 * len + 1);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                if (strchr("*?[]\\", s[i]) && s[i])
                        *o++ = '\\';
                *o++ = s[i];
        }
        *o = 0;
        *ret = b;
        *ret_len = (size_t) (o - b);
        return 0;
}
