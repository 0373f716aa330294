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

/* systemd's side of its file descriptor store, for the tests of connections kept across a restart: a datagram
 * socket for NOTIFY_SOCKET that keeps the fds of every FDSTORE=1 message with their FDNAME=, drops those named by
 * FDSTOREREMOVE=1 (counted), and keeps the other messages' text. */
#define FAKE_STORE_MAX 4096
typedef struct FakeStore {
        int fd;
        char *path;
        int fds[FAKE_STORE_MAX];
        char *names[FAKE_STORE_MAX];
        size_t n_fds;
        unsigned n_removed;             /* FDSTOREREMOVE=1 messages */
        char *text;                     /* every message, each ending in a newline */
} FakeStore;

FakeStore* fake_store_new(const char *dir);
/* Takes every message waiting, waiting up to wait_ms for the first. Returns how many it took. */
unsigned fake_store_receive(FakeStore *s, int wait_ms);
/* The fds stored under name, in the order they came (borrowed), and how many. */
size_t fake_store_get(FakeStore *s, const char *name, int *ret_fds, size_t max);
void fake_store_free(FakeStore *s);
