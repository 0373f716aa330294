/* SPDX-License-Identifier: MIT */
#pragma once

/* The webhook endpoint's pure parts: signature schemes, the CIDR allowlist, the per-address rate limiter, the replay
 * cache, routing, CORS and header filtering. Non-logging; time is always passed in, so tests need no clock. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "macro.h"

#define WEBHOOK_HMAC_SIZE 32

/* --- encodings --- */

/* Lower-case hex of size bytes into ret (2 * size + 1 bytes). */
void hex_encode(const uint8_t *data, size_t size, char *ret);
/* Decodes exactly ret_size bytes of hex (either case); -EINVAL if s is not that. */
int hex_decode_exact(const char *s, size_t len, uint8_t *ret, size_t ret_size);
/* Standard base64 with padding into a new string. */
int base64_encode(const uint8_t *data, size_t size, char **ret);
/* Standard base64, padding optional; -EINVAL on any other character. ret is allocated (size may be 0). */
int base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_size);

/* --- signatures (HMAC-SHA256 over the raw body bytes) --- */

/* The secret used by the schemes: its bytes as given (header, GitHub, Stripe) and the Standard Webhooks key
 * (whsec_ stripped, base64-decoded; NULL when the secret is not valid base64). */
typedef struct WebhookKey {
        char *secret;
        size_t secret_len;
        uint8_t *std_key;
        size_t std_key_len;
} WebhookKey;

int webhook_key_new(const char *secret, size_t len, WebhookKey **ret);
WebhookKey* webhook_key_free(WebhookKey *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(WebhookKey*, webhook_key_free);

/* Verification results: 0 verified, -EBADMSG wrong signature, -EINVAL malformed header, -ETIME timestamp outside
 * the tolerance (either direction). */

/* X-Webhook-Secret (the reference's scheme): the header equals the secret. */
int webhook_verify_header(const WebhookKey *k, const char *value);
/* X-Hub-Signature-256: "sha256=<hex>". */
int webhook_verify_github(const WebhookKey *k, const char *value, const void *body, size_t body_len);
/* Stripe-Signature: "t=<ts>,v1=<hex>[,v1=<hex>...]" over "<ts>.<body>"; other keys (v0, ...) are ignored. */
int webhook_verify_stripe(const WebhookKey *k, const char *value, const void *body, size_t body_len,
                          int64_t now_s, uint64_t tolerance_s);
/* Standard Webhooks: webhook-signature "v1,<base64> [v1,<base64>...]" over "<id>.<ts>.<body>". -ENOKEY when the
 * secret is not a Standard Webhooks key. On success *ret_timestamp (may be NULL) is the signed timestamp. */
int webhook_verify_standard(const WebhookKey *k, const char *id, const char *timestamp, const char *signature,
                            const void *body, size_t body_len, int64_t now_s, uint64_t tolerance_s,
                            int64_t *ret_timestamp);

/* The same signatures, for photonctl and tests: the header values to send. */
int webhook_sign_github(const WebhookKey *k, const void *body, size_t body_len, char **ret);
int webhook_sign_stripe(const WebhookKey *k, int64_t ts, const void *body, size_t body_len, char **ret);
int webhook_sign_standard(const WebhookKey *k, const char *id, int64_t ts, const void *body, size_t body_len,
                          char **ret);

/* --- replay cache of Standard Webhooks ids --- */

typedef struct ReplayCache ReplayCache;

int replay_cache_new(size_t max_ids, ReplayCache **ret);
ReplayCache* replay_cache_free(ReplayCache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(ReplayCache*, replay_cache_free);
/* Until when (wall-clock ms) an id delivered with timestamp_s and accepted at now_ms must be remembered: as long as
 * its signature could verify again, max(timestamp, now) + tolerance (+ 1 s, as timestamps are whole seconds). */
uint64_t replay_expiry_ms(int64_t timestamp_s, uint64_t now_ms, uint64_t tolerance_s);
/* Remembers id until expires_ms. -EEXIST if it is still remembered. -ENOSPC if max_ids ids are remembered and
 * none has expired (none is forgotten early): *ret_retry_after_ms (may be NULL) then says when the first one
 * expires. */
int replay_cache_add(ReplayCache *c, const char *id, uint64_t expires_ms, uint64_t now_ms,
                     uint64_t *ret_retry_after_ms);
size_t replay_cache_size(ReplayCache *c);

/* --- allowlist --- */

typedef struct Cidr {
        int family;             /* AF_INET or AF_INET6; IPv4-mapped IPv6 is stored as AF_INET */
        uint8_t addr[16];
        unsigned prefix;
} Cidr;

/* Parses "10.0.0.0/8, 192.168.1.7 ::1/128" (comma or space separated; a bare address is a host). -EINVAL with
 * *ret_bad (may be NULL) set to the offset of the first bad entry. An empty list yields n = 0. */
int cidr_list_parse(const char *s, Cidr **ret, size_t *ret_n, size_t *ret_bad);
bool cidr_list_match(const Cidr *list, size_t n, const struct sockaddr *sa);

/* The printable address of a peer ("127.0.0.1", "::1"); IPv4-mapped IPv6 is printed as IPv4. */
int sockaddr_to_string(const struct sockaddr *sa, char *ret, size_t size);

/* --- rate limit: a fixed window per source address --- */

typedef struct RateLimiter RateLimiter;

int rate_limiter_new(uint64_t limit, uint64_t window_ms, size_t max_addresses, RateLimiter **ret);
RateLimiter* rate_limiter_free(RateLimiter *rl);
DEFINE_TRIVIAL_CLEANUP_FUNC(RateLimiter*, rate_limiter_free);
/* Counts one request of address: true if allowed; else false and *ret_retry_after_ms (may be NULL) says when the
 * window ends. When the table is full the address whose window started first is forgotten. */
bool rate_limiter_check(RateLimiter *rl, const char *address, uint64_t now_ms, uint64_t *ret_retry_after_ms);
size_t rate_limiter_size(RateLimiter *rl);

/* --- requests --- */

/* Splits path on '/' (empty parts dropped): "webhook/<photon>/<method>[/...]", or "webhook/<method>" with
 * photon_header. Both names must pass name_is_valid(). -ENOENT otherwise; the strings point into new allocations. */
int webhook_parse_route(const char *path, const char *photon_header, char **ret_photon, char **ret_method);

/* libmicrohttpd's unescaping of the URL path and query arguments (MHD_OPTION_UNESCAPE_CALLBACK), as its own but
 * for "%00": a decoded NUL would end the C string MHD hands on, so "/webhook/p/m%00x" would run the method "m".
 * "%00" stays as it is, which no name matches. Returns the new length. */
struct MHD_Connection;
size_t webhook_unescape(void *cls, struct MHD_Connection *connection, char *s);

/* Headers the handler must not see: the shared secret, Authorization and the signature headers. */
bool webhook_header_is_hidden(const char *name);

/* Access-Control-Allow-Origin for an Origin header (NULL = absent): the origin itself when it is a loopback
 * origin, "http://localhost" when absent, NULL (omit the header) otherwise. */
const char* webhook_cors_origin(const char *origin);

/* --- secrets (photond and photonctl find them the same way) --- */

#define WEBHOOK_SECRET_MAX_BYTES 4096

/* Reads a secret file; a trailing newline (echo > file) is not part of the secret. -ENOENT if absent, -ENODATA if
 * empty, -EFBIG over WEBHOOK_SECRET_MAX_BYTES. */
int webhook_secret_read_file(const char *path, char **ret, size_t *ret_len);

/* The instance-wide secret in the order photond uses: the credential $CREDENTIALS_DIRECTORY/webhook-secret, else
 * $PHOTON_WEBHOOK_SECRET. An absent or empty credential falls through to the environment (the shipped units give
 * an empty credential when the file is missing). *ret is NULL when there is none; *ret_source (may be NULL) names
 * where it came from; *ret_empty_credential (may be NULL) says an empty credential was skipped. A credential that
 * cannot be read is an error (-errno), not a fall-through: that would quietly use another secret. */
int webhook_secret_find(char **ret, size_t *ret_len, const char **ret_source, bool *ret_empty_credential);
