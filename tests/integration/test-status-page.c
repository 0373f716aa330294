/* SPDX-License-Identifier: MIT */

/* The status page (GET /) in a real browser. photond is started as systemd starts it (systemd-socket-activate with
 * the control and the webhook listeners) with an API token; then status-page-test.py drives headless Chromium
 * through the DevTools protocol: it opens the page, types a wrong token and the right one, makes photond publish,
 * lock and schedule over the control socket and reads the page's DOM until each shows. The script exits 77 when
 * Chromium is missing or cannot start here: the test is then skipped, saying why. The screenshot it takes is kept
 * in the build's meson-logs/ (PHOTOND_TEST_ARTEFACTS), where CI keeps the logs. PHOTOND_TEST_CHROMIUM names
 * another browser binary. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define TOKEN "page-t0ken"
#define SKIP 77

/* Runs argv with stdout and stderr into one string (returned), its exit status in *ret_status. */
static char* run_capture(const char *const *argv, int *ret_status) {
        size_t len = 0, alloc = 65536;
        char *out = malloc(alloc);
        int pipefd[2], status;
        pid_t pid;

        cr_assert(out);
        cr_assert(pipe2(pipefd, O_CLOEXEC) == 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(pipefd[1], STDOUT_FILENO);
                dup2(pipefd[1], STDERR_FILENO);
                execv(argv[0], (char**) argv);
                fprintf(stderr, "exec %s: %m\n", argv[0]);
                _exit(127);
        }
        close(pipefd[1]);
        for (;;) {
                ssize_t n;

                if (alloc - len < 4096)
                        cr_assert(out = realloc(out, alloc *= 2));
                n = read(pipefd[0], out + len, alloc - len - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += n;
        }
        out[len] = '\0';
        close(pipefd[0]);
        cr_assert(waitpid(pid, &status, 0) == pid);
        *ret_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return out;
}

Test(status_page, in_a_browser, .timeout = 240) {
        const char *python = getenv("PHOTOND_TEST_PYTHON") ?: "/usr/bin/python3",
                   *script = getenv("PHOTOND_STATUS_PAGE_TEST"), *artefacts = getenv("PHOTOND_TEST_ARTEFACTS"),
                   *chromium = getenv("PHOTOND_TEST_CHROMIUM");
        char url[64], *shot = NULL, *out;
        Daemon *d;
        Conn *c;
        int status;

        cr_assert(script, "PHOTOND_STATUS_PAGE_TEST is not set (tests/integration/meson.build sets it)");
        d = daemon_start(&(DaemonOptions) { .socket_activate = true, .webhook = true,
                                            .env = (const char*[]) { "PHOTOND_API_TOKEN=" TOKEN, NULL } });
        /* Socket activation: photond starts with the first connection. */
        c = conn_open(d);
        conn_close(c);
        daemon_wait_ready(d);
        cr_assert_gt(d->webhook_port, 0);

        snprintf(url, sizeof(url), "http://127.0.0.1:%d/", d->webhook_port);
        if (artefacts)
                cr_assert(asprintf(&shot, "%s/status-page.png", artefacts) >= 0);
        const char *argv[16] = { python, script, "--url", url, "--token", TOKEN, "--socket", d->socket_path };
        size_t n = 8;
        if (shot) {
                argv[n++] = "--screenshot";
                argv[n++] = shot;
        }
        if (chromium) {
                argv[n++] = "--chromium";
                argv[n++] = chromium;
        }
        argv[n] = NULL;
        out = run_capture(argv, &status);
        fputs(out, stderr);
        if (status == SKIP) {
                /* The script's last line says why (no Chromium, or it cannot start here). */
                static char why[512];
                char *p = out + strlen(out);

                while (p > out && p[-1] == '\n')
                        *--p = '\0';
                while (p > out && p[-1] != '\n')
                        p--;
                snprintf(why, sizeof(why), "%s", p);
                free(out);
                free(shot);
                daemon_free(d);
                cr_skip_test("%s", why);
        }
        if (status != 0)
                daemon_dump_log(d);
        cr_assert_eq(status, 0, "status-page-test.py failed (exit %d):\n%s", status, out);
        free(out);
        free(shot);
        daemon_free(d);
}
