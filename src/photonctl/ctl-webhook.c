/* SPDX-License-Identifier: MIT */

/* photonctl verbs for webhook (placeholders until that area lands). */

#include "ctl-util.h"
#include "log.h"

int verb_webhook_test(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}
