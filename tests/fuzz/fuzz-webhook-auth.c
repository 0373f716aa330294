/* SPDX-License-Identifier: MIT */

/* What an HTTP peer controls on the webhook endpoint before the handler runs: the route, and the signature
 * headers checked against a fixed secret. Input: newline-separated parts
 *   path \n photon-header \n X-Webhook-Secret \n X-Hub-Signature-256 \n Stripe-Signature \n webhook-id \n
 *   webhook-timestamp \n webhook-signature \n body...
 * (the body is the rest, newlines included). */

#include <assert.h>

#include "fuzz.h"
#include "webhook-auth.h"

#define NOW_S 1700000000
#define TOLERANCE_S 300

enum { PATH, PHOTON, SECRET, GITHUB, STRIPE, STD_ID, STD_TS, STD_SIG, _N_HEADERS };

static void verify_all(const WebhookKey *k, char *const h[], const uint8_t *body, size_t body_len) {
        int64_t ts;
        int r;

        r = webhook_verify_header(k, h[SECRET]);
        assert(r == 0 || r == -EBADMSG || r == -EINVAL);
        r = webhook_verify_github(k, h[GITHUB], body, body_len);
        assert(r == 0 || r == -EBADMSG || r == -EINVAL);
        r = webhook_verify_stripe(k, h[STRIPE], body, body_len, NOW_S, TOLERANCE_S);
        assert(r == 0 || r == -EBADMSG || r == -EINVAL || r == -ETIME);
        r = webhook_verify_standard(k, h[STD_ID], h[STD_TS], h[STD_SIG], body, body_len, NOW_S, TOLERANCE_S, &ts);
        assert(r == 0 || r == -EBADMSG || r == -EINVAL || r == -ETIME || r == -ENOKEY || r == -ENOMEM);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(webhook_key_freep) WebhookKey *key = NULL, *std_key = NULL;
        char *h[_N_HEADERS] = {};
        const uint8_t *part, *body = NULL;
        size_t len, body_len = 0;

        fuzz_setup_logging();

        for (size_t i = 0; i < _N_HEADERS; i++) {
                if (!fuzz_next_part(&data, &size, '\n', &part, &len))
                        break;
                h[i] = fuzz_strndup(part, len);
                if (!h[i])
                        goto finish;
        }
        if (data) {
                body = data;
                body_len = size;
        }

        if (h[PATH]) {
                _cleanup_free_ char *photon = NULL, *method = NULL;

                if (webhook_parse_route(h[PATH], h[PHOTON] && h[PHOTON][0] ? h[PHOTON] : NULL, &photon,
                                        &method) >= 0)
                        assert(photon && method);
        }

        /* A plain secret (header, GitHub, Stripe) and a Standard Webhooks key ("whsec_" + base64 of "secret!"). */
        if (webhook_key_new("s3cr3t", 6, &key) < 0 || webhook_key_new("whsec_c2VjcmV0IQ==", 18, &std_key) < 0)
                goto finish;
        verify_all(key, h, body, body_len);
        verify_all(std_key, h, body, body_len);

finish:
        for (size_t i = 0; i < _N_HEADERS; i++)
                free(h[i]);
        return 0;
}
