/* SPDX-License-Identifier: MIT */

/* photond(8) documents every cap of photond-limits.h as "*PHOTOND_<NAME>* (default <N>)": checks that each
 * cap is there with its real default, and that the page documents no cap that does not exist. The caps of cluster
 * mode (photond-cluster-nodes.h) are variables of ENVIRONMENT, "*PHOTOND_CLUSTER_<NAME>*" with "Default <N>, from
 * <MIN> to <MAX>." in their entry: checked too. Prints TAP. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd-util.h"
#include "macro.h"
#include "photond-cluster-nodes.h"
#include "photond-limits.h"

static bool known_limit(const char *name, size_t len) {
        const char *n;

        for (unsigned i = 0; (n = limits_name(i, NULL, NULL)); i++)
                if (strlen(n) == len && strncmp(n, name, len) == 0)
                        return true;
        return false;
}

int main(int argc, char *argv[]) {
        _cleanup_free_ char *page = NULL;
        unsigned i, test = 0, failed = 0, n_limits = 0;
        const char *name, *p;
        uint64_t def;
        int r;

        if (argc != 2) {
                fprintf(stderr, "usage: %s photond.8.scd\n", argv[0]);
                return EXIT_FAILURE;
        }
        r = read_full_file(argv[1], 1024 * 1024, &page, NULL);
        if (r < 0) {
                fprintf(stderr, "Failed to read %s: %s\n", argv[1], strerror(-r));
                return EXIT_FAILURE;
        }

        while (limits_name(n_limits, NULL, NULL))
                n_limits++;
        unsigned n_cluster = 0;
        while (cluster_cap_info(n_cluster))
                n_cluster++;

        /* one test per cap, plus one for the reverse direction, plus one per cluster cap */
        printf("1..%u\n", n_limits + 1 + n_cluster);

        for (i = 0; (name = limits_name(i, NULL, &def)); i++) {
                char entry[160];

                snprintf(entry, sizeof(entry), "*PHOTOND_%s* (default %llu)", name, (unsigned long long) def);
                test++;
                if (strstr(page, entry))
                        printf("ok %u - %s documented with default %llu\n", test, name, (unsigned long long) def);
                else {
                        printf("not ok %u - photond(8) lacks the entry '%s'\n", test, entry);
                        failed++;
                }
        }

        test++;
        bool stray = false;
        for (p = page; (p = strstr(p, "*PHOTOND_")); ) {
                const char *start = p + strlen("*PHOTOND_");
                size_t len = strcspn(start, "*");

                p = start;
                if (start[len] != '*' || strncmp(start + len, "* (default ", 11) != 0)
                        continue;       /* not a limit entry, e.g. *PHOTOND_<NAME>* */
                if (!known_limit(start, len)) {
                        printf("# photond(8) documents PHOTOND_%.*s, which photond-limits.h does not have\n",
                               (int) len, start);
                        stray = true;
                }
        }
        if (stray) {
                printf("not ok %u - photond(8) documents caps that do not exist\n", test);
                failed++;
        } else
                printf("ok %u - every documented cap exists\n", test);

        for (i = 0; i < n_cluster; i++) {
                const ClusterCapInfo *c = cluster_cap_info(i);
                char head[128], text[160];
                const char *entry, *end;

                snprintf(head, sizeof(head), "\n*%s*\n", c->variable);
                snprintf(text, sizeof(text), "Default %llu, from %llu to %llu.", (unsigned long long) c->def,
                         (unsigned long long) c->min, (unsigned long long) c->max);
                test++;
                entry = strstr(page, head);
                end = entry ? strstr(entry + 1, "\n\n") : NULL;
                p = entry ? strstr(entry, text) : NULL;
                if (p && (!end || p < end))
                        printf("ok %u - %s documented: %s\n", test, c->variable, text);
                else {
                        printf("not ok %u - photond(8) lacks an entry '%s' saying '%s'\n", test, c->variable, text);
                        failed++;
                }
        }

        return failed > 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
