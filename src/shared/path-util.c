/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "path-util.h"

/* Appends the components of s to the normalised path out (of length *len, "" standing for "/"). */
static void path_append_normalised(char *out, size_t *len, const char *s) {
        while (*s) {
                size_t n;

                s += strspn(s, "/");
                n = strcspn(s, "/");
                if (n == 0 || (n == 1 && s[0] == '.'))
                        ;
                else if (n == 2 && s[0] == '.' && s[1] == '.') {
                        while (*len > 0 && out[*len - 1] != '/')
                                (*len)--;
                        if (*len > 0)
                                (*len)--;       /* the slash before the dropped component */
                } else {
                        out[(*len)++] = '/';
                        memcpy(out + *len, s, n);
                        *len += n;
                }
                s += n;
        }
}

int path_resolve_at(const char *cwd, const char *p, char **ret) {
        _cleanup_free_ char *out = NULL;
        size_t len = 0;

        if (!p || !ret)
                return -EINVAL;
        if (p[0] != '/' && (!cwd || cwd[0] != '/'))
                return -EINVAL;

        /* The result is never longer than cwd + "/" + p. */
        out = malloc((p[0] == '/' ? 0 : strlen(cwd)) + strlen(p) + 3);
        if (!out)
                return -ENOMEM;
        if (p[0] != '/')
                path_append_normalised(out, &len, cwd);
        path_append_normalised(out, &len, p);
        if (len == 0)
                out[len++] = '/';
        out[len] = '\0';

        *ret = TAKE_PTR(out);
        return 0;
}

int path_resolve(const char *p, char **ret) {
        _cleanup_free_ char *cwd = NULL;

        if (p && p[0] == '/')
                return path_resolve_at(NULL, p, ret);
        cwd = getcwd(NULL, 0);
        if (!cwd)
                return -errno;
        return path_resolve_at(cwd, p, ret);
}
