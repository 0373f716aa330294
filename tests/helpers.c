/* SPDX-License-Identifier: MIT */

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

char* tmpdir_new(void) {
        char tmpl[] = "/tmp/photond-unit-XXXXXX";

        cr_assert(mkdtemp(tmpl));
        return strdup(tmpl);
}

void tmpdir_remove(char *path) {
        char *cmd;

        if (!path)
                return;
        cr_assert(asprintf(&cmd, "rm -rf '%s'", path) >= 0);
        (void) !system(cmd);
        free(cmd);
        free(path);
}
