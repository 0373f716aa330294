/* SPDX-License-Identifier: MIT */
#pragma once

/* The status page of the HTTP front end: GET / answers with a page built into photond, which asks for the API
 * token and then shows the daemon through the JSON API and /v1/events (docs/http.md). The page holds no data, so
 * the route needs no token; what it reads does. */

#include <stddef.h>

typedef struct HttpServer HttpServer;

/* Adds the route GET / to http. 0, or a negative errno (logged). */
int http_page_add_routes(HttpServer *http);

/* The page, made from src/status-page/index.html at build time by tools/embed-page, which defines these in the
 * generated status-page.c: the page's bytes (no NUL added), their count, and the Content-Security-Policy it is
 * sent with, which allows its one inline style and one inline script by their SHA-256. */
extern const unsigned char status_page_html[];
extern const size_t status_page_html_size;
extern const char status_page_csp[];
