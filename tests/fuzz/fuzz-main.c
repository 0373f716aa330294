/* SPDX-License-Identifier: MIT */

/* A standalone driver for the fuzz targets, as systemd's: runs LLVMFuzzerTestOneInput() once on every file named
 * and every file in every directory named, so the normal build replays the corpora as tests (under ASan/UBSan in
 * that build). With -Dfuzzer=true libFuzzer's own main() is linked instead. */

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "fuzz.h"

static int run_file(const char *path) {
        _cleanup_free_ char *text = NULL;
        uint8_t *copy;
        size_t size;
        int r;

        r = read_full_file(path, 64 * 1024 * 1024, &text, &size);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(-r));
                return r;
        }
        /* An exact-size copy, so that ASan sees a read past the end (read_full_file adds a NUL). */
        copy = malloc(size ?: 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, text, size);
        printf("%s\n", path);
        fflush(stdout);
        (void) LLVMFuzzerTestOneInput(copy, size);
        free(copy);
        return 0;
}

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int run_dir(const char *path, unsigned *n) {
        DIR *d;
        struct dirent *de;
        char **names = NULL;
        size_t n_names = 0;
        int r = 0;

        d = opendir(path);
        if (!d) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        while ((de = readdir(d))) {
                char **nn;

                if (de->d_name[0] == '.')
                        continue;
                nn = realloc(names, sizeof(char*) * (n_names + 1));
                if (!nn || asprintf(&nn[n_names], "%s/%s", path, de->d_name) < 0) {
                        names = nn ?: names;
                        r = -ENOMEM;
                        break;
                }
                names = nn;
                n_names++;
        }
        closedir(d);

        /* In name order, so that a run is repeatable. */
        if (n_names > 0)
                qsort(names, n_names, sizeof(char*), cmp_names);
        for (size_t i = 0; i < n_names; i++) {
                if (r >= 0) {
                        r = run_file(names[i]);
                        if (r >= 0)
                                (*n)++;
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char *argv[]) {
        unsigned n = 0;

        if (argc < 2) {
                fprintf(stderr, "Usage: %s FILE|DIRECTORY...\n", argv[0]);
                return EXIT_FAILURE;
        }
        for (int i = 1; i < argc; i++) {
                struct stat st;
                int r;

                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
                        return EXIT_FAILURE;
                }
                if (S_ISDIR(st.st_mode))
                        r = run_dir(argv[i], &n);
                else {
                        r = run_file(argv[i]);
                        n += r >= 0;
                }
                if (r < 0)
                        return EXIT_FAILURE;
        }
        printf("%u inputs run\n", n);
        return EXIT_SUCCESS;
}
