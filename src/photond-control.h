/* SPDX-License-Identifier: MIT */
#pragma once

/* The control front end: the control socket's NDJSON requests (photond-control*.c). */

#include <stddef.h>

#include "photond-client.h"

/* Handles one complete request line of a client (the ClientLineHandler the Manager installs). */
int control_handle_line(Client *c, const char *line, size_t len);
