/* SPDX-License-Identifier: MIT */

/* photonctl verbs for dispatch (placeholders until that area lands). */

#include "ctl-util.h"
#include "log.h"

int verb_call(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_provide(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_ps(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}
