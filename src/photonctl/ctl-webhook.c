/* SPDX-License-Identifier: MIT */

/* photonctl webhook-test: signs a request the way GitHub, Stripe, Standard Webhooks senders (or the reference's
 * shared header) do and sends it to the local webhook endpoint, so users can check their set-up end to end. The
 * HTTP client is deliberately tiny: one HTTP/1.1 request with "Connection: close", the answer read to EOF. */

#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ctl-util.h"
#include "fd-util.h"
#include "log.h"
#include "string-util.h"
#include "webhook-auth.h"

#define RESPONSE_MAX_BYTES (8 * 1024 * 1024)
#define RESPONSE_TIMEOUT_MS (75 * 1000)        /* past the default handler timeout of 60 s */

typedef enum Scheme {
        SCHEME_HEADER,
        SCHEME_GITHUB,
        SCHEME_STRIPE,
        SCHEME_STANDARD,
        _SCHEME_MAX,
        _SCHEME_INVALID = -EINVAL,
} Scheme;

static const char *const scheme_table[_SCHEME_MAX] = {
        [SCHEME_HEADER] = "header",
        [SCHEME_GITHUB] = "github",
        [SCHEME_STRIPE] = "stripe",
        [SCHEME_STANDARD] = "standard",
};

static Scheme scheme_from_string(const char *s) {
        for (Scheme i = 0; i < _SCHEME_MAX; i++)
                if (streq(scheme_table[i], s))
                        return i;
        return _SCHEME_INVALID;
}

/* --secret-file, else the secret photond itself would use (webhook_secret_find(): the credential
 * $CREDENTIALS_DIRECTORY/webhook-secret, else $PHOTON_WEBHOOK_SECRET); NULL if none. */
static int load_secret(const char *secret_file, char **ret, size_t *ret_len) {
        int r;

        if (!secret_file) {
                r = webhook_secret_find(ret, ret_len, NULL, NULL);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        return log_error_errno(r, "Cannot read the secret from %s/webhook-secret: %m",
                                               getenv("CREDENTIALS_DIRECTORY"));
                return 0;
        }

        r = webhook_secret_read_file(secret_file, ret, ret_len);
        if (r == -ENODATA)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "The secret in %s is empty.", secret_file);
        if (r < 0)
                return log_error_errno(r, "Cannot read the secret from %s: %m", secret_file);
        return 0;
}

/* "http://host[:port][/]" into host and port; IPv6 literals in brackets. */
static int parse_url(const char *url, char **ret_host, char **ret_port) {
        _cleanup_free_ char *host = NULL, *port = NULL;
        const char *p = startswith(url, "http://"), *end;

        if (!p) {
                if (startswith(url, "https://"))
                        return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                               "https is not supported; photond's endpoint speaks plain HTTP "
                                               "on a local address.");
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid URL '%s': expected http://HOST[:PORT].", url);
        }

        if (*p == '[') {
                end = strchr(p, ']');
                if (!end)
                        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid URL '%s'.", url);
                host = strndup(p + 1, end - p - 1);
                p = end + 1;
        } else {
                size_t n = strcspn(p, ":/");
                host = strndup(p, n);
                p += n;
        }
        if (!host)
                return log_oom();
        if (*p == ':') {
                size_t n = strcspn(p + 1, "/");
                port = strndup(p + 1, n);
                p += 1 + n;
        } else
                port = strdup("80");
        if (!port)
                return log_oom();
        if (!host[0] || !port[0] || strspn(port, "0123456789") != strlen(port) || (*p && !streq(p, "/")))
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "Invalid URL '%s': expected http://HOST[:PORT] (the path is added).", url);

        *ret_host = TAKE_PTR(host);
        *ret_port = TAKE_PTR(port);
        return 0;
}

static int connect_to(const char *host, const char *port, int *ret_fd) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
        int r, fd = -EBADF, err = ECONNREFUSED;

        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0)
                return log_error_errno(SYNTHETIC_ERRNO(EHOSTUNREACH), "Cannot resolve %s: %s", host, gai_strerror(r));
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
                fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
                if (fd < 0) {
                        err = errno;
                        continue;
                }
                if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
                        break;
                err = errno;
                fd = safe_close(fd);
        }
        freeaddrinfo(ai);
        if (fd < 0)
                return log_error_errno(err, "Cannot connect to %s port %s: %m (is the webhook endpoint enabled? "
                                       "Set PHOTON_WEBHOOK_PORT or start photond-webhook.socket)", host, port);
        *ret_fd = fd;
        return 0;
}

static int send_all(int fd, const char *data, size_t len) {
        while (len > 0) {
                ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                data += n;
                len -= n;
        }
        return 0;
}

static int recv_all(int fd, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, alloc = 0;

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;
                int k;

                k = poll(&p, 1, RESPONSE_TIMEOUT_MS);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -ETIMEDOUT;
                if (alloc - len < 4096) {
                        char *nb;
                        if (alloc >= RESPONSE_MAX_BYTES)
                                return -EFBIG;
                        alloc = alloc ? alloc * 2 : 16384;
                        nb = realloc(buf, alloc + 1);
                        if (!nb)
                                return -ENOMEM;
                        buf = nb;
                }
                n = recv(fd, buf + len, alloc - len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += n;
        }
        if (!buf)
                return -ECONNRESET;
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

static int sign_headers(Scheme scheme, const char *secret, size_t secret_len, const char *id, const char *body,
                        char **ret) {
        _cleanup_(webhook_key_freep) WebhookKey *key = NULL;
        _cleanup_free_ char *sig = NULL, *msg_id = NULL;
        int64_t ts = (int64_t) time(NULL);
        int r;

        if (!secret) {
                *ret = strdup("");
                return *ret ? 0 : log_oom();
        }
        if (scheme == SCHEME_HEADER && (memchr(secret, '\r', secret_len) || memchr(secret, '\n', secret_len)))
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "The secret cannot be sent as a header.");

        r = webhook_key_new(secret, secret_len, &key);
        if (r < 0)
                return log_oom();

        switch (scheme) {
        case SCHEME_HEADER:
                r = asprintf(ret, "X-Webhook-Secret: %s\r\n", key->secret);
                break;
        case SCHEME_GITHUB:
                r = webhook_sign_github(key, body, strlen(body), &sig);
                if (r < 0)
                        return log_error_errno(r, "Cannot sign: %m");
                r = asprintf(ret, "X-GitHub-Event: ping\r\nX-Hub-Signature-256: %s\r\n", sig);
                break;
        case SCHEME_STRIPE:
                r = webhook_sign_stripe(key, ts, body, strlen(body), &sig);
                if (r < 0)
                        return log_error_errno(r, "Cannot sign: %m");
                r = asprintf(ret, "Stripe-Signature: %s\r\n", sig);
                break;
        case SCHEME_STANDARD:
                if (!id) {
                        uint8_t rnd[12];
                        char hex[2 * sizeof(rnd) + 1];

                        if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
                                return log_error_errno(errno, "getrandom(): %m");
                        hex_encode(rnd, sizeof(rnd), hex);
                        if (asprintf(&msg_id, "msg_%s", hex) < 0)
                                return log_oom();
                        id = msg_id;
                }
                if (strpbrk(id, "\r\n"))
                        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid --id.");
                r = webhook_sign_standard(key, id, ts, body, strlen(body), &sig);
                if (r == -ENOKEY)
                        return log_error_errno(r, "The secret is not a Standard Webhooks key (whsec_<base64>).");
                if (r < 0)
                        return log_error_errno(r, "Cannot sign: %m");
                r = asprintf(ret, "webhook-id: %s\r\nwebhook-timestamp: %" PRIi64 "\r\nwebhook-signature: %s\r\n",
                             id, ts, sig);
                break;
        default:
                abort();
        }
        return r < 0 ? log_oom() : 0;
}

int verb_webhook_test(CtlContext *ctx, int argc, char *argv[]) {
        enum { ARG_SCHEME = 0x100, ARG_URL, ARG_SECRET_FILE, ARG_ID };
        static const struct option options[] = {
                { "scheme",      required_argument, NULL, ARG_SCHEME      },
                { "url",         required_argument, NULL, ARG_URL         },
                { "secret-file", required_argument, NULL, ARG_SECRET_FILE },
                { "id",          required_argument, NULL, ARG_ID          },
                {}
        };
        _cleanup_free_ char *secret = NULL, *host = NULL, *port = NULL, *default_url = NULL, *auth = NULL,
                *request = NULL, *response = NULL;
        _cleanup_(json_object_putp) struct json_object *args = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *url = NULL, *secret_file = NULL, *id = NULL, *photon, *method, *body = "{}", *p, *head_end;
        Scheme scheme = SCHEME_HEADER;
        size_t secret_len = 0, response_len;
        int c, status, r;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case ARG_SCHEME:
                        scheme = scheme_from_string(optarg);
                        if (scheme < 0)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                                       "Unknown scheme '%s': header, github, stripe or standard.",
                                                       optarg);
                        break;
                case ARG_URL:
                        url = optarg;
                        break;
                case ARG_SECRET_FILE:
                        secret_file = optarg;
                        break;
                case ARG_ID:
                        id = optarg;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }

        if (argc - optind < 2 || argc - optind > 3)
                return ctl_usage_error(argv[0]);
        photon = argv[optind];
        method = argv[optind + 1];
        if (!name_is_valid(photon) || !name_is_valid(method))
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "Invalid photon or method name: use 1-64 of [A-Za-z0-9._-], no leading dot.");
        if (argc - optind == 3) {
                r = ctl_parse_json_arg(argv[optind + 2], "JSON", &args);
                if (r < 0)
                        return r;
                body = json_object_to_json_string_ext(args, JSON_FORMAT_FLAGS);
                if (!body)
                        return log_oom();
        }

        if (!url) {
                const char *e = getenv("PHOTON_WEBHOOK_PORT");
                if (asprintf(&default_url, "http://127.0.0.1:%s", e && e[0] ? e : "3457") < 0)
                        return log_oom();
                url = default_url;
        }
        r = parse_url(url, &host, &port);
        if (r < 0)
                return r;

        r = load_secret(secret_file, &secret, &secret_len);
        if (r < 0)
                return r;
        if (!secret)
                log_notice("No secret found (--secret-file, $CREDENTIALS_DIRECTORY/webhook-secret or "
                           "$PHOTON_WEBHOOK_SECRET): sending the request unsigned.");
        r = sign_headers(scheme, secret, secret_len, id, body, &auth);
        if (r < 0)
                return r;

        if (asprintf(&request,
                     "POST /webhook/%s/%s HTTP/1.1\r\n"
                     "Host: %s%s%s:%s\r\n"
                     "User-Agent: photonctl/" PHOTOND_VERSION "\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n"
                     "%s",
                     photon, method, strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port,
                     strlen(body), auth, body) < 0)
                return log_oom();

        r = connect_to(host, port, &fd);
        if (r < 0)
                return r;
        r = send_all(fd, request, strlen(request));
        if (r < 0)
                return log_error_errno(r, "Failed to send the request: %m");
        r = recv_all(fd, &response, &response_len);
        if (r == -ETIMEDOUT)
                return log_error_errno(r, "No answer within %d s.", RESPONSE_TIMEOUT_MS / 1000);
        if (r < 0)
                return log_error_errno(r, "Failed to read the answer: %m");

        if (sscanf(response, "HTTP/1.%*1[01] %3d", &status) != 1 ||
            !(head_end = strstr(response, "\r\n\r\n")))
                return log_error_errno(SYNTHETIC_ERRNO(EBADMSG), "The endpoint did not answer HTTP.");
        p = head_end + 4;

        if (ctx->json)
                printf("%s\n", p);
        else {
                const char *eol = strstr(response, "\r\n");
                printf("%.*s\n%s\n", (int) (eol - response), response, p);
        }
        if (status < 200 || status > 299)
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "The webhook was not accepted (HTTP %d).", status);
        return 0;
}
