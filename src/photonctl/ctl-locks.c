/* SPDX-License-Identifier: MIT */

/* photonctl verbs for locks (placeholders until that area lands). */

#include "ctl-util.h"
#include "log.h"

int verb_lock(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_unlock(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_locks(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_with_lock(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}
