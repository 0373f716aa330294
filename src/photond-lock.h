/* SPDX-License-Identifier: MIT */
#pragma once

/* Named expiring locks: holder rules as the reference, exact expiry timers, fencing tokens, waiting acquires. */

#include "photond-protocol.h"

typedef struct Manager Manager;
typedef struct Client Client;
typedef struct LockTable LockTable;
struct json_object;

int lock_table_new(Manager *m, LockTable **ret);
LockTable* lock_table_free(LockTable *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(LockTable*, lock_table_free);

/* A disconnecting client leaves every wait queue (its locks stay: locks are not tied to connections). */
void lock_table_client_gone(LockTable *t, Client *c);

int lock_table_handle_lock(Manager *m, Client *c, Request *req);
int lock_table_handle_unlock(Manager *m, Client *c, Request *req);
int lock_table_handle_assign(Manager *m, Client *c, Request *req);
int lock_table_handle_transfer(Manager *m, Client *c, Request *req);
int lock_table_handle_query(Manager *m, Client *c, Request *req);
int lock_table_handle_list(Manager *m, Client *c, Request *req);

int lock_table_add_status(LockTable *t, struct json_object *data);

/* photond's persisted state (state.json): live locks and the fencing-token high-water mark. */
int lock_table_save_state(LockTable *t, struct json_object *state);
int lock_table_load_state(LockTable *t, struct json_object *state);

unsigned lock_table_count(LockTable *t);
