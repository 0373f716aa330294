/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared fixtures for the unit and integration tests: temporary directories, JSON paths, a request line sent
 * through the control front end, and a client's queue read as its peer would read it. */

#include <stdbool.h>
#include <stdint.h>

#include "photond-client.h"

struct json_object;

/* Creates a fresh temporary directory (removed by tmpdir_remove). */
char* tmpdir_new(void);
void tmpdir_remove(char *path);

/* A value by dotted path ("data.events.0.message.event": object keys and array indexes); NULL if absent. */
struct json_object* jget(struct json_object *o, const char *path);
/* The string at path, or NULL if absent or not a string. */
const char* jstr(struct json_object *o, const char *path);
/* The number or boolean at path; the test fails if it is absent or of another type. */
int64_t jint(struct json_object *o, const char *path);
bool jbool(struct json_object *o, const char *path);

/* The oldest line queued to c, taken off as the peer reads it: its exact bytes without the newline (the test fails
 * if it has none), or NULL when nothing is queued; parsed (the test fails if nothing is queued or it is no JSON). */
char* test_pop_line(Client *c);
struct json_object* test_pop_json(Client *c);

/* Formats one request line and hands it to the control front end as c's, as a read would (control_handle_line(),
 * fast paths included); c is m's from then on. The test fails if the line handler does. */
void test_request(Manager *m, Client *c, const char *fmt, ...) _printf_(3, 4);
