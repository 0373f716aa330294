/* SPDX-License-Identifier: MIT */

/* photonctl verbs for channels (placeholders until that area lands). */

#include "ctl-util.h"
#include "log.h"

int verb_publish(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_subscribe(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_channels(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}
