/* SPDX-License-Identifier: MIT */

/* path_resolve_at(): PHOTON_HOME, PHOTON_DIR and --socket come from the environment and the command line, and the
 * string it makes is what a client compares byte for byte. The input is "cwd NUL path" (without a NUL: the path,
 * against a fixed cwd). Whatever it returns must be absolute and normal, and resolving it again must not change it. */

#include <assert.h>

#include "fuzz.h"
#include "macro.h"
#include "path-util.h"

static void assert_normal(const char *p) {
        size_t n = strlen(p);

        assert(p[0] == '/');
        assert(!strstr(p, "//"));
        assert(!strstr(p, "/./") && !strstr(p, "/../"));
        assert(n == 1 || p[n - 1] != '/');
        assert(!(n >= 2 && streq(p + n - 2, "/.")));
        assert(!(n >= 3 && streq(p + n - 3, "/..")));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *cwd = NULL, *path = NULL, *out = NULL, *again = NULL;
        const uint8_t *nul = memchr(data, 0, size);
        int r;

        if (nul) {
                cwd = fuzz_strndup(data, nul - data);
                path = fuzz_strndup(nul + 1, size - (nul - data) - 1);
        } else {
                cwd = strdup("/home/user/project");
                path = fuzz_strndup(data, size);
        }
        if (!cwd || !path)
                return 0;

        r = path_resolve_at(cwd, path, &out);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                /* Only a relative path against a cwd that is not absolute is refused. */
                assert(r == -EINVAL && path[0] != '/' && cwd[0] != '/');
                return 0;
        }
        assert_normal(out);

        r = path_resolve_at("/", out, &again);
        if (r == -ENOMEM)
                return 0;
        assert(r == 0);
        assert(streq(again, out));
        return 0;
}
