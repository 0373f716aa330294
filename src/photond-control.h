/* SPDX-License-Identifier: MIT */
#pragma once

/* The control front end: the control socket's NDJSON requests (photond-control*.c). */

#include <stddef.h>

#include "photond-client.h"
#include "photond-protocol.h"

typedef struct Channels Channels;

/* Handles one complete request line of a client (the ClientLineHandler the Manager installs). */
int control_handle_line(Client *c, const char *line, size_t len);

/* ---- channels: photond-control-channels.c ---- */

/* The pub/sub requests, handled for c as the channels' Subscriber, and answered to c. */
int control_channels_subscribe(Channels *chs, Client *c, Request *req);
int control_channels_unsubscribe(Channels *chs, Client *c, Request *req);
int control_channels_publish(Channels *chs, Client *c, Request *req);
int control_channels_get_events_since(Channels *chs, Client *c, Request *req);

/* The publish fast path, offered every request line before it is parsed: a publish that request_scan_publish()
 * takes is handled in place, building no JSON objects, and 1 returned. Anything else, or anything that would be
 * refused, gives 0 and takes the general path, which then answers exactly as it always does. -ENOMEM on
 * allocation failure. */
int control_channels_publish_line(Channels *chs, Client *c, const char *line, size_t len);
