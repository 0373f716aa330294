/* SPDX-License-Identifier: MIT */

/* Webhook endpoint (stub until the webhook issue lands: the listener is accepted and closed). */

#include <stdlib.h>

#include "photond-manager.h"
#include "photond-webhook.h"

struct Webhook {
        Manager *manager;
        int fd;
};

int webhook_new(Manager *m, int fd, Webhook **ret) {
        Webhook *w = new0(Webhook, 1);
        if (!w)
                return -ENOMEM;
        w->manager = m;
        w->fd = fd;
        *ret = w;
        return 0;
}

Webhook* webhook_free(Webhook *w) {
        if (!w)
                return NULL;
        safe_close(w->fd);
        return mfree(w);
}

int webhook_bind_from_env(int *ret_fd) {
        return -ENOENT;
}

int webhook_reload_secrets(Webhook *w) {
        return 0;
}

int webhook_add_status(Webhook *w, struct json_object *data) {
        return 0;
}
