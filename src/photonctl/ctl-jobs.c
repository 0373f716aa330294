/* SPDX-License-Identifier: MIT */

/* photonctl verbs for jobs (placeholders until that area lands). */

#include "ctl-util.h"
#include "log.h"

int verb_schedule(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_unschedule(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_jobs(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_cron(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_history(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}

int verb_run_job(CtlContext *ctx, int argc, char *argv[]) {
        return log_error_errno(SYNTHETIC_ERRNO(EOPNOTSUPP), "'%s' is not available in this build yet.", argv[0]);
}
