/* SPDX-License-Identifier: MIT */
#pragma once

/* p made absolute against cwd and normalised lexically, as Node's path.resolve(cwd, p) does: "." and empty
 * components dropped, ".." removes the component before it (at "/" it stays "/"), no trailing slash but for "/"
 * itself. Symlinks are not looked at: the reference client compares the strings, so photond must print the very
 * string the client computes. cwd must be absolute when p is not. 0, -EINVAL or -ENOMEM. */
int path_resolve_at(const char *cwd, const char *p, char **ret);

/* The same against the current working directory; -errno from getcwd(). */
int path_resolve(const char *p, char **ret);
