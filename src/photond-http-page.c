/* SPDX-License-Identifier: MIT */

/* GET /: the status page (src/status-page/index.html, built into the binary by tools/embed-page). It is served
 * without a token: it holds no data, and asks the user for the API token, with which it reads the JSON API and
 * obtains stream tokens for /v1/events. What it is sent with keeps a browser from doing more with it than showing
 * it: a Content-Security-Policy that runs only its own inline style and script (by their hashes), talks only to
 * this origin and lets no one frame it; no MIME sniffing; no caching (a new photond may bring a new page, whose
 * hashes the old policy would not match). */

#include <microhttpd.h>

#include "log.h"
#include "macro.h"
#include "photond-http-page.h"
#include "photond-http.h"

static int on_page(HttpRequest *req, void *userdata) {
        static const HttpHeader headers[] = {
                { "Content-Security-Policy", status_page_csp },
                { "X-Content-Type-Options", "nosniff" },
                { "Cache-Control", "no-store" },
                { "Referrer-Policy", "no-referrer" },
        };

        return http_respond_static(req, MHD_HTTP_OK, "text/html; charset=utf-8", status_page_html,
                                   status_page_html_size, headers, ELEMENTSOF(headers));
}

int http_page_add_routes(HttpServer *http) {
        int r;

        assert(http);

        /* "/" only: every other path goes where it went before (the webhook route's 404). */
        r = http_server_add_route(http, &(HttpRoute) {
                                          .method = "GET",
                                          .pattern = "/",
                                          .auth = HTTP_AUTH_NONE,
                                          .complete = on_page,
                                  });
        if (r < 0)
                return log_error_errno(r, "Failed to add the route GET /: %m");
        return 0;
}
