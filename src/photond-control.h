/* SPDX-License-Identifier: MIT */
#pragma once

/* The control front end: the control socket's NDJSON requests (photond-control*.c). */

#include <stddef.h>

#include "photond-client.h"
#include "photond-lock.h"
#include "photond-protocol.h"

/* Handles one complete request line of a client (the ClientLineHandler the Manager installs). */
int control_handle_line(Client *c, const char *line, size_t len);

/* ---- locks (photond-control-locks.c) ---- */

/* The lock/unlock fast path, offered every line before it is parsed: a plain lock or unlock line
 * (lock_request_parse_line()) is served without json-c objects. Returns 1 when the line was handled (and answered),
 * 0 when it is left to the general path (nothing done), or a negative errno as a handler does (-ENOMEM). */
int control_lock_line(LockTable *t, Client *c, const char *line, size_t len);
/* lock, unlock, assign_lock, transfer_lock and query_lock after request_parse(): served by the same code as the
 * fast path's lines. */
int control_lock_request(LockTable *t, Client *c, const Request *req);
int control_lock_list(LockTable *t, Client *c, const Request *req);
