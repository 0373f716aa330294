-- SPDX-License-Identifier: MIT
-- wrk scenario for photond's webhook endpoint: POST a small JSON body authenticated with the reference's
-- X-Webhook-Secret header, answered by a trivial provider (tests/bench/webhook-provider.py), keep-alive.
--
--   PHOTON_WEBHOOK_SECRET=bench-secret wrk -t2 -c64 -d10s --latency -s tests/bench/webhook.lua \
--       http://127.0.0.1:3457/webhook/bench/ping
--
-- The last line is machine-readable: requests/s, p50/p99 latency and the count of non-2xx answers (which must
-- be 0 for a valid run: a 429 means PHOTON_WEBHOOK_RATE_LIMIT=0 was not set on photond).

wrk.method = "POST"
wrk.body = '{"n":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Webhook-Secret"] = os.getenv("PHOTON_WEBHOOK_SECRET") or "bench-secret"

function done(summary, latency, requests)
        local seconds = summary.duration / 1e6
        io.write(string.format(
                "webhook-bench requests=%d rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d socket_errors=%d\n",
                summary.requests, summary.requests / seconds,
                latency:percentile(50) / 1000, latency:percentile(99) / 1000,
                summary.errors.status,
                summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
