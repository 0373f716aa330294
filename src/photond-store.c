/* SPDX-License-Identifier: MIT */

/* photond's own state (lock table, fencing and eventId high-water marks) in one small JSON file. It is written with
 * tmp + rename but without fsync: it must survive a photond crash (the kernel has the data), and a power loss
 * restarts everything that held locks anyway (DECISIONS.md, "Group commit"). */

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "fd-util.h"
#include "json-util.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-lock.h"
#include "photond-manager.h"
#include "photond-store.h"

#define STATE_FILE_MAX (64 * 1024 * 1024)

static int state_path(Manager *m, char **ret) {
        return asprintf(ret, "%s/state.json", m->state_dir) < 0 ? -ENOMEM : 0;
}

static void store_keep_aside(const char *path) {
        _cleanup_free_ char *aside = NULL;

        if (asprintf(&aside, "%s.corrupt-%lld", path, (long long) time(NULL)) < 0)
                return;
        if (rename(path, aside) < 0)
                log_warning_errno(errno, "Failed to move unreadable %s aside: %m", path);
        else
                log_warning("Kept the unreadable state file as %s.", aside);
}

int store_load_state(Manager *m) {
        _cleanup_(json_object_putp) struct json_object *state = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL;
        const char *jerr = NULL;
        int64_t version;
        size_t size;
        int r;

        r = state_path(m, &path);
        if (r < 0)
                return r;

        r = read_full_file(path, STATE_FILE_MAX, &text, &size);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                log_error_errno(r, "Failed to read %s, starting with no locks: %m", path);
                goto lost;
        }

        if (json_parse(text, size, &state, &jerr) < 0 || !json_object_is_type(state, json_type_object)) {
                log_error("State file %s is not a JSON object (%s), starting with no locks.", path,
                          jerr ?: "wrong type");
                goto lost;
        }
        if (json_get_int64(state, "version", false, &version) < 0 || version != STATE_FILE_VERSION) {
                log_error("State file %s has an unknown version, starting with no locks.", path);
                goto lost;
        }

        r = channels_load_state(m->channels, state);
        if (r < 0) {
                log_error_errno(r, "Failed to load channel state from %s: %m", path);
                goto lost;
        }
        r = lock_table_load_state(m->locks, state);
        if (r < 0) {
                log_error_errno(r, "Failed to load the lock table from %s: %m", path);
                goto lost;
        }
        return 0;

lost:
        store_keep_aside(path);
        m->state_lost = true;
        return 0;
}

int store_save_state(Manager *m) {
        _cleanup_(json_object_putp) struct json_object *state = NULL;
        _cleanup_free_ char *path = NULL;
        const char *text;
        size_t len;
        int r;

        state = json_object_new_object();
        if (!state)
                return -ENOMEM;
        r = json_add_int64(state, "version", STATE_FILE_VERSION);
        if (r < 0)
                return r;
        r = channels_save_state(m->channels, state);
        if (r < 0)
                return r;
        r = lock_table_save_state(m->locks, state);
        if (r < 0)
                return r;

        r = state_path(m, &path);
        if (r < 0)
                return r;

        text = json_object_to_json_string_length(state, JSON_FORMAT_FLAGS, &len);
        if (!text)
                return -ENOMEM;
        return write_file_atomic(path, text, len, 0600, /* sync= */ false);
}
