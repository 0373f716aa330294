/* SPDX-License-Identifier: MIT */

/* Locks (stub until the locks issue lands). */

#include <json-c/json.h>

#include "photond-client.h"
#include "photond-lock.h"
#include "photond-manager.h"

struct LockTable {
        Manager *manager;
};

int lock_table_new(Manager *m, LockTable **ret) {
        LockTable *t = new0(LockTable, 1);
        if (!t)
                return -ENOMEM;
        t->manager = m;
        *ret = t;
        return 0;
}

LockTable* lock_table_free(LockTable *t) {
        return mfree(t);
}

void lock_table_client_gone(LockTable *t, Client *c) {
}

int lock_table_handle_lock(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int lock_table_handle_unlock(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int lock_table_handle_assign(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int lock_table_handle_transfer(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int lock_table_handle_query(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int lock_table_handle_list(Manager *m, Client *c, Request *req) {
        return manager_reply_unsupported(c, req);
}

int lock_table_add_status(LockTable *t, struct json_object *data) {
        return 0;
}

int lock_table_save_state(LockTable *t, struct json_object *state) {
        return 0;
}

int lock_table_load_state(LockTable *t, struct json_object *state) {
        return 0;
}

unsigned lock_table_count(LockTable *t) {
        return 0;
}
