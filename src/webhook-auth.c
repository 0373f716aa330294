/* SPDX-License-Identifier: MIT */

/* Webhook helpers without I/O: signature schemes (OpenSSL HMAC-SHA256, constant-time comparison), CIDR matching,
 * the rate limiter, the Standard Webhooks replay cache, routing and header rules. */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uthash.h>

#include "fd-util.h"
#include "string-util.h"
#include "webhook-auth.h"

/* --- encodings --- */

void hex_encode(const uint8_t *data, size_t size, char *ret) {
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < size; i++) {
                ret[2 * i] = digits[data[i] >> 4];
                ret[2 * i + 1] = digits[data[i] & 15];
        }
        ret[2 * size] = '\0';
}

int hex_decode_exact(const char *s, size_t len, uint8_t *ret, size_t ret_size) {
        if (len != 2 * ret_size)
                return -EINVAL;
        for (size_t i = 0; i < ret_size; i++) {
                int hi = unhexchar(s[2 * i]), lo = unhexchar(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                ret[i] = (uint8_t) (hi << 4 | lo);
        }
        return 0;
}

static const char base64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_encode(const uint8_t *data, size_t size, char **ret) {
        char *s, *p;

        s = p = malloc((size + 2) / 3 * 4 + 1);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < size; i += 3) {
                uint32_t v = (uint32_t) data[i] << 16;
                if (i + 1 < size)
                        v |= (uint32_t) data[i + 1] << 8;
                if (i + 2 < size)
                        v |= data[i + 2];
                *p++ = base64_chars[v >> 18 & 63];
                *p++ = base64_chars[v >> 12 & 63];
                *p++ = i + 1 < size ? base64_chars[v >> 6 & 63] : '=';
                *p++ = i + 2 < size ? base64_chars[v & 63] : '=';
        }
        *p = '\0';
        *ret = s;
        return 0;
}

static int unbase64_char(char c) {
        const char *p;

        if (c == '\0' || !(p = strchr(base64_chars, c)))
                return -EINVAL;
        return (int) (p - base64_chars);
}

int base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_size) {
        _cleanup_free_ uint8_t *buf = NULL;
        uint32_t acc = 0;
        size_t n = 0, bits = 0;

        /* Padding is optional, but if present it must complete the last quantum. */
        if (len > 0 && s[len - 1] == '=') {
                if (len % 4 != 0)
                        return -EINVAL;
                len--;
                if (len > 0 && s[len - 1] == '=')
                        len--;
        }
        if (len % 4 == 1)
                return -EINVAL;

        buf = malloc(len / 4 * 3 + 3);
        if (!buf)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                int v = unbase64_char(s[i]);
                if (v < 0)
                        return -EINVAL;
                acc = acc << 6 | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        buf[n++] = (uint8_t) (acc >> bits);
                }
        }
        /* Leftover bits must be zero, so every byte string has exactly one encoding. */
        if ((acc & ((1u << bits) - 1)) != 0)
                return -EINVAL;

        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

/* --- HMAC --- */

typedef struct Chunk {
        const void *data;
        size_t len;
} Chunk;

static int hmac_sha256(const void *key, size_t key_len, const Chunk *chunks, size_t n_chunks,
                       uint8_t ret[WEBHOOK_HMAC_SIZE]) {
        EVP_MAC *mac = NULL;
        EVP_MAC_CTX *ctx = NULL;
        char digest[] = "SHA256";
        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                OSSL_PARAM_construct_end(),
        };
        size_t out_len = 0;
        int r = -EIO;

        if (key_len == 0)
                return -EINVAL;

        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (!mac)
                goto finish;
        ctx = EVP_MAC_CTX_new(mac);
        if (!ctx || EVP_MAC_init(ctx, key, key_len, params) != 1)
                goto finish;
        for (size_t i = 0; i < n_chunks; i++)
                if (chunks[i].len > 0 && EVP_MAC_update(ctx, chunks[i].data, chunks[i].len) != 1)
                        goto finish;
        if (EVP_MAC_final(ctx, ret, &out_len, WEBHOOK_HMAC_SIZE) != 1 || out_len != WEBHOOK_HMAC_SIZE)
                goto finish;
        r = 0;
finish:
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(mac);
        return r;
}

static bool digest_eq(const uint8_t a[WEBHOOK_HMAC_SIZE], const uint8_t b[WEBHOOK_HMAC_SIZE]) {
        return CRYPTO_memcmp(a, b, WEBHOOK_HMAC_SIZE) == 0;
}

int webhook_key_new(const char *secret, size_t len, WebhookKey **ret) {
        _cleanup_(webhook_key_freep) WebhookKey *k = NULL;
        const char *b64 = secret;
        size_t b64_len = len;

        if (len == 0)
                return -EINVAL;

        k = new0(WebhookKey, 1);
        if (!k)
                return -ENOMEM;
        k->secret = malloc(len + 1);
        if (!k->secret)
                return -ENOMEM;
        memcpy(k->secret, secret, len);
        k->secret[len] = '\0';
        k->secret_len = len;

        if (len >= 6 && memcmp(secret, "whsec_", 6) == 0) {
                b64 += 6;
                b64_len -= 6;
        }
        if (base64_decode(b64, b64_len, &k->std_key, &k->std_key_len) < 0 || k->std_key_len == 0) {
                k->std_key = mfree(k->std_key);
                k->std_key_len = 0;
        }

        *ret = TAKE_PTR(k);
        return 0;
}

WebhookKey* webhook_key_free(WebhookKey *k) {
        if (!k)
                return NULL;
        if (k->secret)
                OPENSSL_cleanse(k->secret, k->secret_len);
        if (k->std_key)
                OPENSSL_cleanse(k->std_key, k->std_key_len);
        free(k->secret);
        free(k->std_key);
        return mfree(k);
}

int webhook_verify_header(const WebhookKey *k, const char *value) {
        if (!value)
                return -EINVAL;
        return memeq_consttime(value, strlen(value), k->secret, k->secret_len) ? 0 : -EBADMSG;
}

int webhook_verify_github(const WebhookKey *k, const char *value, const void *body, size_t body_len) {
        uint8_t want[WEBHOOK_HMAC_SIZE], got[WEBHOOK_HMAC_SIZE];
        const char *hex;
        int r;

        if (!value || !(hex = startswith(value, "sha256=")))
                return -EINVAL;
        if (hex_decode_exact(hex, strlen(hex), got, sizeof(got)) < 0)
                return -EINVAL;
        r = hmac_sha256(k->secret, k->secret_len, (const Chunk[]) { { body, body_len } }, 1, want);
        if (r < 0)
                return r;
        return digest_eq(want, got) ? 0 : -EBADMSG;
}

static int parse_timestamp(const char *s, size_t len, int64_t *ret) {
        char buf[24];

        if (len == 0 || len >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return safe_atoi64(buf, ret);
}

static bool timestamp_within(int64_t ts, int64_t now_s, uint64_t tolerance_s) {
        int64_t d = ts > now_s ? ts - now_s : now_s - ts;

        /* d < 0 only on overflow, i.e. absurdly far off. */
        return d >= 0 && (uint64_t) d <= tolerance_s;
}

int webhook_verify_stripe(const WebhookKey *k, const char *value, const void *body, size_t body_len,
                          int64_t now_s, uint64_t tolerance_s) {
        uint8_t want[WEBHOOK_HMAC_SIZE];
        const char *ts_str = NULL;
        size_t ts_len = 0;
        bool any_v1 = false, match = false;
        int64_t ts;
        int r;

        if (!value)
                return -EINVAL;

        for (const char *p = value; *p;) {
                size_t n = strcspn(p, ",");
                if (n > 2 && p[0] == 't' && p[1] == '=') {
                        ts_str = p + 2;
                        ts_len = n - 2;
                }
                p += n;
                if (*p == ',')
                        p++;
        }
        if (!ts_str || parse_timestamp(ts_str, ts_len, &ts) < 0)
                return -EINVAL;

        r = hmac_sha256(k->secret, k->secret_len,
                        (const Chunk[]) { { ts_str, ts_len }, { ".", 1 }, { body, body_len } }, 3, want);
        if (r < 0)
                return r;

        /* Every v1 is compared (no early exit), so timing does not tell which one matched. */
        for (const char *p = value; *p;) {
                size_t n = strcspn(p, ",");
                uint8_t got[WEBHOOK_HMAC_SIZE];

                if (n > 3 && memcmp(p, "v1=", 3) == 0) {
                        any_v1 = true;
                        if (hex_decode_exact(p + 3, n - 3, got, sizeof(got)) >= 0 && digest_eq(want, got))
                                match = true;
                }
                p += n;
                if (*p == ',')
                        p++;
        }
        if (!any_v1)
                return -EINVAL;
        if (!match)
                return -EBADMSG;
        /* Checked after the signature, so an expired but genuine delivery is told apart from a forged one. */
        return timestamp_within(ts, now_s, tolerance_s) ? 0 : -ETIME;
}

int webhook_verify_standard(const WebhookKey *k, const char *id, const char *timestamp, const char *signature,
                            const void *body, size_t body_len, int64_t now_s, uint64_t tolerance_s,
                            int64_t *ret_timestamp) {
        uint8_t want[WEBHOOK_HMAC_SIZE];
        bool any_v1 = false, match = false;
        int64_t ts;
        int r;

        if (!id || !timestamp || !signature || id[0] == '\0' || strchr(id, '.'))
                return -EINVAL;
        if (parse_timestamp(timestamp, strlen(timestamp), &ts) < 0)
                return -EINVAL;
        if (!k->std_key)
                return -ENOKEY;

        r = hmac_sha256(k->std_key, k->std_key_len,
                        (const Chunk[]) {
                                { id, strlen(id) }, { ".", 1 },
                                { timestamp, strlen(timestamp) }, { ".", 1 },
                                { body, body_len },
                        }, 5, want);
        if (r < 0)
                return r;

        for (const char *p = signature; *p;) {
                size_t n = strcspn(p, " ");

                if (n > 3 && memcmp(p, "v1,", 3) == 0) {
                        _cleanup_free_ uint8_t *got = NULL;
                        size_t got_len;

                        any_v1 = true;
                        if (base64_decode(p + 3, n - 3, &got, &got_len) >= 0 && got_len == WEBHOOK_HMAC_SIZE &&
                            digest_eq(want, got))
                                match = true;
                }
                p += n;
                p += strspn(p, " ");
        }
        if (!any_v1)
                return -EINVAL;
        if (!match)
                return -EBADMSG;
        if (!timestamp_within(ts, now_s, tolerance_s))
                return -ETIME;
        if (ret_timestamp)
                *ret_timestamp = ts;
        return 0;
}

int webhook_sign_github(const WebhookKey *k, const void *body, size_t body_len, char **ret) {
        uint8_t mac[WEBHOOK_HMAC_SIZE];
        char hex[2 * WEBHOOK_HMAC_SIZE + 1];
        int r;

        r = hmac_sha256(k->secret, k->secret_len, (const Chunk[]) { { body, body_len } }, 1, mac);
        if (r < 0)
                return r;
        hex_encode(mac, sizeof(mac), hex);
        return asprintf(ret, "sha256=%s", hex) < 0 ? -ENOMEM : 0;
}

int webhook_sign_stripe(const WebhookKey *k, int64_t ts, const void *body, size_t body_len, char **ret) {
        uint8_t mac[WEBHOOK_HMAC_SIZE];
        char hex[2 * WEBHOOK_HMAC_SIZE + 1], ts_str[24];
        int r;

        snprintf(ts_str, sizeof(ts_str), "%" PRIi64, ts);
        r = hmac_sha256(k->secret, k->secret_len,
                        (const Chunk[]) { { ts_str, strlen(ts_str) }, { ".", 1 }, { body, body_len } }, 3, mac);
        if (r < 0)
                return r;
        hex_encode(mac, sizeof(mac), hex);
        return asprintf(ret, "t=%s,v1=%s", ts_str, hex) < 0 ? -ENOMEM : 0;
}

int webhook_sign_standard(const WebhookKey *k, const char *id, int64_t ts, const void *body, size_t body_len,
                          char **ret) {
        uint8_t mac[WEBHOOK_HMAC_SIZE];
        _cleanup_free_ char *b64 = NULL;
        char ts_str[24];
        int r;

        if (!k->std_key)
                return -ENOKEY;
        snprintf(ts_str, sizeof(ts_str), "%" PRIi64, ts);
        r = hmac_sha256(k->std_key, k->std_key_len,
                        (const Chunk[]) {
                                { id, strlen(id) }, { ".", 1 },
                                { ts_str, strlen(ts_str) }, { ".", 1 },
                                { body, body_len },
                        }, 5, mac);
        if (r < 0)
                return r;
        r = base64_encode(mac, sizeof(mac), &b64);
        if (r < 0)
                return r;
        return asprintf(ret, "v1,%s", b64) < 0 ? -ENOMEM : 0;
}

/* --- replay cache --- */

typedef struct ReplayEntry {
        uint64_t expires_ms;
        size_t idx;             /* position in the heap */
        UT_hash_handle hh;
        char id[];
} ReplayEntry;

/* The ids by name (uthash) and by expiry (a binary min-heap): ids do not expire in the order they came, since each
 * lives as long as its own signature. */
struct ReplayCache {
        ReplayEntry *entries;
        ReplayEntry **heap;
        size_t n, alloc, max_ids;
};

int replay_cache_new(size_t max_ids, ReplayCache **ret) {
        ReplayCache *c;

        if (max_ids == 0)
                return -EINVAL;
        c = new0(ReplayCache, 1);
        if (!c)
                return -ENOMEM;
        c->max_ids = max_ids;
        *ret = c;
        return 0;
}

static void heap_set(ReplayCache *c, size_t i, ReplayEntry *e) {
        c->heap[i] = e;
        e->idx = i;
}

static void heap_sift_up(ReplayCache *c, size_t i) {
        ReplayEntry *e = c->heap[i];

        while (i > 0 && c->heap[(i - 1) / 2]->expires_ms > e->expires_ms) {
                heap_set(c, i, c->heap[(i - 1) / 2]);
                i = (i - 1) / 2;
        }
        heap_set(c, i, e);
}

static void heap_sift_down(ReplayCache *c, size_t i) {
        ReplayEntry *e = c->heap[i];

        for (;;) {
                size_t k = 2 * i + 1;

                if (k >= c->n)
                        break;
                if (k + 1 < c->n && c->heap[k + 1]->expires_ms < c->heap[k]->expires_ms)
                        k++;
                if (c->heap[k]->expires_ms >= e->expires_ms)
                        break;
                heap_set(c, i, c->heap[k]);
                i = k;
        }
        heap_set(c, i, e);
}

static void replay_cache_drop_first(ReplayCache *c) {
        ReplayEntry *e = c->heap[0];

        HASH_DEL(c->entries, e);
        free(e);
        if (--c->n > 0) {
                heap_set(c, 0, c->heap[c->n]);
                heap_sift_down(c, 0);
        }
}

ReplayCache* replay_cache_free(ReplayCache *c) {
        if (!c)
                return NULL;
        while (c->n > 0)
                replay_cache_drop_first(c);
        free(c->heap);
        return mfree(c);
}

uint64_t replay_expiry_ms(int64_t timestamp_s, uint64_t now_ms, uint64_t tolerance_s) {
        /* A signature verifies until timestamp + tolerance; a timestamp ahead of photond's clock (allowed up to the
         * tolerance) therefore longer than the tolerance from now. The check compares whole seconds, so that
         * includes the whole last second. */
        uint64_t ts_ms = timestamp_s > 0 ? (uint64_t) timestamp_s * 1000 : 0;

        return MAX(ts_ms, now_ms) + (tolerance_s + 1) * 1000;
}

int replay_cache_add(ReplayCache *c, const char *id, uint64_t expires_ms, uint64_t now_ms,
                     uint64_t *ret_retry_after_ms) {
        ReplayEntry *e;
        size_t len = strlen(id);

        while (c->n > 0 && c->heap[0]->expires_ms <= now_ms)
                replay_cache_drop_first(c);

        HASH_FIND(hh, c->entries, id, len, e);
        if (e)
                return -EEXIST;

        /* Forgetting a live id would let its delivery be replayed: refuse the new one instead. */
        if (c->n >= c->max_ids) {
                if (ret_retry_after_ms)
                        *ret_retry_after_ms = c->heap[0]->expires_ms - now_ms;
                return -ENOSPC;
        }

        if (c->n == c->alloc) {
                size_t n = MIN(MAX(c->alloc * 2, (size_t) 64), c->max_ids);
                ReplayEntry **h = reallocarray(c->heap, n, sizeof(ReplayEntry*));

                if (!h)
                        return -ENOMEM;
                c->heap = h;
                c->alloc = n;
        }

        e = malloc(offsetof(ReplayEntry, id) + len + 1);
        if (!e)
                return -ENOMEM;
        *e = (ReplayEntry) { .expires_ms = expires_ms };
        memcpy(e->id, id, len + 1);
        HASH_ADD(hh, c->entries, id[0], len, e);
        heap_set(c, c->n++, e);
        heap_sift_up(c, e->idx);
        return 0;
}

size_t replay_cache_size(ReplayCache *c) {
        return c->n;
}

/* --- allowlist --- */

static void cidr_normalize_mapped(Cidr *c) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        if (c->family == AF_INET6 && c->prefix >= 96 && memcmp(c->addr, mapped, 12) == 0) {
                memmove(c->addr, c->addr + 12, 4);
                memset(c->addr + 4, 0, 12);
                c->family = AF_INET;
                c->prefix -= 96;
        }
}

static int cidr_parse_one(const char *s, Cidr *ret) {
        char buf[INET6_ADDRSTRLEN + 8];
        Cidr c = {};
        char *slash;
        unsigned max;

        if (strlen(s) >= sizeof(buf))
                return -EINVAL;
        strcpy(buf, s);
        slash = strchr(buf, '/');
        if (slash)
                *slash = '\0';

        if (inet_pton(AF_INET, buf, c.addr) == 1) {
                c.family = AF_INET;
                max = 32;
        } else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
                c.family = AF_INET6;
                max = 128;
        } else
                return -EINVAL;

        if (slash) {
                uint64_t p;
                if (safe_atou64(slash + 1, &p) < 0 || p > max)
                        return -EINVAL;
                c.prefix = (unsigned) p;
        } else
                c.prefix = max;

        /* Host bits set ("10.1.2.3/8") are cleared, as most tools accept that notation. */
        for (unsigned bit = c.prefix; bit < max; bit++)
                c.addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));

        cidr_normalize_mapped(&c);
        *ret = c;
        return 0;
}

int cidr_list_parse(const char *s, Cidr **ret, size_t *ret_n, size_t *ret_bad) {
        _cleanup_free_ Cidr *list = NULL;
        size_t n = 0, alloc = 0;
        const char *p = s ?: "";

        for (;;) {
                char item[INET6_ADDRSTRLEN + 8];
                size_t len;

                p += strspn(p, ", \t");
                if (*p == '\0')
                        break;
                len = strcspn(p, ", \t");
                if (len >= sizeof(item)) {
                        if (ret_bad)
                                *ret_bad = (size_t) (p - s);
                        return -EINVAL;
                }
                memcpy(item, p, len);
                item[len] = '\0';
                if (n == alloc) {
                        Cidr *nl = reallocarray(list, alloc = alloc ? alloc * 2 : 4, sizeof(Cidr));
                        if (!nl)
                                return -ENOMEM;
                        list = nl;
                }
                if (cidr_parse_one(item, &list[n]) < 0) {
                        if (ret_bad)
                                *ret_bad = (size_t) (p - s);
                        return -EINVAL;
                }
                n++;
                p += len;
        }

        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

static bool sockaddr_to_cidr(const struct sockaddr *sa, Cidr *ret) {
        *ret = (Cidr) {};
        if (sa->sa_family == AF_INET) {
                ret->family = AF_INET;
                ret->prefix = 32;
                memcpy(ret->addr, &((const struct sockaddr_in*) sa)->sin_addr, 4);
        } else if (sa->sa_family == AF_INET6) {
                ret->family = AF_INET6;
                ret->prefix = 128;
                memcpy(ret->addr, &((const struct sockaddr_in6*) sa)->sin6_addr, 16);
                cidr_normalize_mapped(ret);
        } else
                return false;
        return true;
}

bool cidr_list_match(const Cidr *list, size_t n, const struct sockaddr *sa) {
        Cidr a;

        if (!sa || !sockaddr_to_cidr(sa, &a))
                return false;

        for (size_t i = 0; i < n; i++) {
                unsigned full = list[i].prefix / 8, rest = list[i].prefix % 8;

                if (list[i].family != a.family)
                        continue;
                if (memcmp(list[i].addr, a.addr, full) != 0)
                        continue;
                if (rest > 0 && ((list[i].addr[full] ^ a.addr[full]) & (uint8_t) (0xff00u >> rest)) != 0)
                        continue;
                return true;
        }
        return false;
}

int sockaddr_to_string(const struct sockaddr *sa, char *ret, size_t size) {
        Cidr a;

        if (!sa || !sockaddr_to_cidr(sa, &a))
                return -EAFNOSUPPORT;
        if (!inet_ntop(a.family, a.addr, ret, size))
                return -errno;
        return 0;
}

/* --- rate limiter --- */

typedef struct RateEntry {
        uint64_t window_start_ms;
        uint64_t count;
        UT_hash_handle hh;
        char address[];
} RateEntry;

struct RateLimiter {
        RateEntry *entries;     /* insertion order = window start order: a renewed window moves to the end */
        uint64_t limit;
        uint64_t window_ms;
        size_t max_addresses;
};

int rate_limiter_new(uint64_t limit, uint64_t window_ms, size_t max_addresses, RateLimiter **ret) {
        RateLimiter *rl;

        if (window_ms == 0 || max_addresses == 0)
                return -EINVAL;
        rl = new0(RateLimiter, 1);
        if (!rl)
                return -ENOMEM;
        rl->limit = limit;
        rl->window_ms = window_ms;
        rl->max_addresses = max_addresses;
        *ret = rl;
        return 0;
}

static void rate_limiter_drop(RateLimiter *rl, RateEntry *e) {
        HASH_DEL(rl->entries, e);
        free(e);
}

RateLimiter* rate_limiter_free(RateLimiter *rl) {
        if (!rl)
                return NULL;
        while (rl->entries)
                rate_limiter_drop(rl, rl->entries);
        return mfree(rl);
}

bool rate_limiter_check(RateLimiter *rl, const char *address, uint64_t now_ms, uint64_t *ret_retry_after_ms) {
        size_t len = strlen(address);
        RateEntry *e;

        while (rl->entries && rl->entries->window_start_ms + rl->window_ms <= now_ms)
                rate_limiter_drop(rl, rl->entries);

        HASH_FIND(hh, rl->entries, address, len, e);
        if (!e) {
                if (HASH_COUNT(rl->entries) >= rl->max_addresses)
                        rate_limiter_drop(rl, rl->entries);
                e = malloc(offsetof(RateEntry, address) + len + 1);
                if (!e)
                        return true;    /* out of memory: fail open rather than refuse everyone */
                *e = (RateEntry) { .window_start_ms = now_ms };
                memcpy(e->address, address, len + 1);
                HASH_ADD(hh, rl->entries, address[0], len, e);
        }

        if (e->count >= rl->limit) {
                if (ret_retry_after_ms)
                        *ret_retry_after_ms = e->window_start_ms + rl->window_ms - now_ms;
                return false;
        }
        e->count++;
        return true;
}

size_t rate_limiter_size(RateLimiter *rl) {
        return HASH_COUNT(rl->entries);
}

/* --- requests --- */

int webhook_parse_route(const char *path, const char *photon_header, char **ret_photon, char **ret_method) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        const char *parts[3] = {};
        size_t lens[3] = {}, n = 0;

        for (const char *p = path ?: ""; *p && n < 3;) {
                size_t len;

                p += strspn(p, "/");
                if (*p == '\0')
                        break;
                len = strcspn(p, "/");
                parts[n] = p;
                lens[n++] = len;
                p += len;
        }

        if (n < 2 || lens[0] != strlen("webhook") || memcmp(parts[0], "webhook", lens[0]) != 0)
                return -ENOENT;

        if (n == 3) {
                a = strndup(parts[1], lens[1]);
                b = strndup(parts[2], lens[2]);
        } else {
                /* "/webhook/<method>": the photon comes from X-Photon-Name (a photond extension). */
                if (!photon_header)
                        return -ENOENT;
                a = strdup(photon_header);
                b = strndup(parts[1], lens[1]);
        }
        if (!a || !b)
                return -ENOMEM;
        if (!name_is_valid(a) || !name_is_valid(b))
                return -ENOENT;

        *ret_photon = TAKE_PTR(a);
        *ret_method = TAKE_PTR(b);
        return 0;
}

size_t webhook_unescape(void *cls, struct MHD_Connection *connection, char *s) {
        char *w = s;

        for (const char *r = s; *r;) {
                int hi, lo;

                if (r[0] == '%' && (hi = unhexchar(r[1])) >= 0 && (lo = unhexchar(r[2])) >= 0 && (hi | lo) != 0) {
                        *w++ = (char) (hi * 16 + lo);
                        r += 3;
                } else
                        *w++ = *r++;
        }
        *w = '\0';
        return w - s;
}

bool webhook_header_is_hidden(const char *name) {
        static const char *const hidden[] = {
                "X-Webhook-Secret",
                "Authorization",
                "Proxy-Authorization",
                "X-Hub-Signature",
                "X-Hub-Signature-256",
                "Stripe-Signature",
                "Webhook-Signature",
        };

        for (size_t i = 0; i < ELEMENTSOF(hidden); i++)
                if (strcasecmp(name, hidden[i]) == 0)
                        return true;
        return false;
}

const char* webhook_cors_origin(const char *origin) {
        static const char *const hosts[] = { "localhost", "127.0.0.1", "[::1]" };
        const char *rest;

        if (!origin)
                return "http://localhost";

        rest = startswith(origin, "http://") ?: startswith(origin, "https://");
        if (!rest)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(hosts); i++) {
                const char *p = startswith(rest, hosts[i]);
                if (!p)
                        continue;
                if (*p == '\0')
                        return origin;
                if (*p == ':' && p[1] != '\0' && strspn(p + 1, "0123456789") == strlen(p + 1))
                        return origin;
        }
        return NULL;
}

/* --- secrets --- */

int webhook_secret_read_file(const char *path, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t size;
        int r;

        r = read_full_file(path, WEBHOOK_SECRET_MAX_BYTES, &buf, &size);
        if (r < 0)
                return r;
        if (size > 0 && buf[size - 1] == '\n')
                size--;
        if (size > 0 && buf[size - 1] == '\r')
                size--;
        buf[size] = '\0';
        if (size == 0)
                return -ENODATA;
        *ret = TAKE_PTR(buf);
        *ret_len = size;
        return 0;
}

int webhook_secret_find(char **ret, size_t *ret_len, const char **ret_source, bool *ret_empty_credential) {
        const char *creds = getenv("CREDENTIALS_DIRECTORY"), *env = getenv("PHOTON_WEBHOOK_SECRET");
        bool empty = false;
        int r;

        if (creds) {
                _cleanup_free_ char *path = NULL;

                if (asprintf(&path, "%s/webhook-secret", creds) < 0)
                        return -ENOMEM;
                r = webhook_secret_read_file(path, ret, ret_len);
                if (r >= 0) {
                        if (ret_source)
                                *ret_source = "credential webhook-secret";
                        if (ret_empty_credential)
                                *ret_empty_credential = false;
                        return 0;
                }
                if (r == -ENODATA)
                        empty = true;
                else if (r != -ENOENT)
                        return r;
        }

        if (ret_empty_credential)
                *ret_empty_credential = empty;
        if (env && env[0]) {
                *ret = strdup(env);
                if (!*ret)
                        return -ENOMEM;
                *ret_len = strlen(env);
                if (ret_source)
                        *ret_source = "PHOTON_WEBHOOK_SECRET";
                return 0;
        }
        *ret = NULL;
        *ret_len = 0;
        if (ret_source)
                *ret_source = NULL;
        return 0;
}
