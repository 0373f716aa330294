/* SPDX-License-Identifier: MIT */

/* photonctl itself: what it says when it cannot connect (by how the socket was chosen), --json printing the
 * daemon's reply for every listing verb, unlock naming the holder it refused, call printing results and errors in
 * full, and its help texts agreeing with the options each verb parses and with photonctl(1). */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "photonctl/ctl-util.h"
#include "harness.h"
#include "json-util.h"

typedef struct CtlRun {
        int status;
        char *out, *err;
} CtlRun;

static void ctl_run_done(CtlRun *r) {
        free(r->out);
        free(r->err);
}

typedef struct CtlRunOptions {
        const char *const *env;         /* "NAME=value" sets, "NAME" unsets; NULL-terminated */
        bool as_nobody;                 /* when root: run as uid/gid 65534, so permissions apply */
} CtlRunOptions;

/* Runs photonctl with exactly argv (no --socket added), collecting stdout and stderr. */
static CtlRun ctl_runv(const CtlRunOptions *o, const char *const *args) {
        const char *argv[64];
        int out[2], err[2], argc = 0, status;
        CtlRun r = {};
        struct { int fd; char **buf; size_t len, alloc; } s[2];
        pid_t pid;

        argv[argc++] = photonctl_binary();
        for (size_t i = 0; args[i] && argc < 63; i++)
                argv[argc++] = args[i];
        argv[argc] = NULL;

        cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
        cr_assert_eq(pipe2(err, O_CLOEXEC), 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(out[1], STDOUT_FILENO);
                dup2(err[1], STDERR_FILENO);
                for (size_t i = 0; o && o->env && o->env[i]; i++) {
                        const char *eq = strchr(o->env[i], '=');
                        if (eq) {
                                char *name = strndup(o->env[i], eq - o->env[i]);
                                setenv(name, eq + 1, 1);
                        } else
                                unsetenv(o->env[i]);
                }
                if (o && o->as_nobody && geteuid() == 0) {
                        /* Opened while still root: the build tree may sit below a directory nobody cannot
                         * enter (dpkg-buildpackage in a mktemp -d or in /root), and only the socket's
                         * permissions are under test. */
                        int exe = open(argv[0], O_PATH | O_CLOEXEC);

                        if (exe < 0 || setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                                _exit(126);
                        fexecve(exe, (char**) argv, environ);
                        _exit(127);
                }
                execv(argv[0], (char**) argv);
                _exit(127);
        }
        close(out[1]);
        close(err[1]);

        s[0].fd = out[0], s[0].buf = &r.out;
        s[1].fd = err[0], s[1].buf = &r.err;
        for (int i = 0; i < 2; i++) {
                s[i].len = 0;
                s[i].alloc = 4096;
                *s[i].buf = malloc(s[i].alloc);
                cr_assert(*s[i].buf);
        }
        /* Both pipes at once: a large stdout must not block photonctl while we wait on stderr. */
        for (int open_fds = 2; open_fds > 0;) {
                struct pollfd p[2] = { { .fd = s[0].fd, .events = POLLIN }, { .fd = s[1].fd, .events = POLLIN } };

                cr_assert(poll(p, 2, 60000) > 0, "photonctl hangs");
                for (int i = 0; i < 2; i++) {
                        ssize_t n;

                        if (s[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        if (s[i].alloc - s[i].len < 65536) {
                                s[i].alloc *= 2;
                                *s[i].buf = realloc(*s[i].buf, s[i].alloc);
                                cr_assert(*s[i].buf);
                        }
                        n = read(s[i].fd, *s[i].buf + s[i].len, s[i].alloc - s[i].len - 1);
                        if (n <= 0) {
                                close(s[i].fd);
                                s[i].fd = -1;
                                p[i].fd = -1;
                                open_fds--;
                                continue;
                        }
                        s[i].len += n;
                }
        }
        (*s[0].buf)[s[0].len] = '\0';
        (*s[1].buf)[s[1].len] = '\0';
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return r;
}

#define ctl_run(o, ...) ctl_runv((o), (const char *const[]) { __VA_ARGS__, NULL })

static void assert_contains(const char *haystack, const char *needle) {
        cr_assert(haystack && strstr(haystack, needle), "'%s' not in: %s", needle, haystack ?: "(null)");
}

static void assert_lacks(const char *haystack, const char *needle) {
        cr_assert(!haystack || !strstr(haystack, needle), "'%s' unexpectedly in: %s", needle, haystack);
}

static char* make_dir(void) {
        char *dir = strdup("/tmp/photonctl-test-XXXXXX");

        cr_assert(dir && mkdtemp(dir));
        cr_assert_eq(chmod(dir, 0755), 0);
        return dir;
}

static void rm_rf(const char *dir) {
        char *cmd;

        cr_assert(asprintf(&cmd, "rm -rf '%s'", dir) >= 0);
        (void) !system(cmd);
        free(cmd);
}

/* A socket at path: listening, or bound and closed (a stale socket file, connect() gets ECONNREFUSED). */
static int unix_socket_at(const char *path, bool listening) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        cr_assert(fd >= 0);
        cr_assert(strlen(path) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        cr_assert_eq(bind(fd, (struct sockaddr*) &sa, sizeof(sa)), 0, "bind %s: %m", path);
        if (!listening) {
                close(fd);
                return -1;
        }
        cr_assert_eq(listen(fd, 8), 0);
        return fd;
}

/* ---- connection errors ---- */

Test(ctl, connect_error_with_socket_says_nothing_listens_on_path) {
        char *dir = make_dir(), *missing, *stale, *private;
        CtlRun r;
        int fd;

        cr_assert(asprintf(&missing, "%s/missing.sock", dir) >= 0);
        r = ctl_run(NULL, "--socket", missing, "ping");
        cr_assert_eq(r.status, 1);
        assert_contains(r.err, missing);
        assert_contains(r.err, "nothing listens on this path: there is no socket");
        assert_lacks(r.err, "systemctl");
        ctl_run_done(&r);

        cr_assert(asprintf(&stale, "%s/stale.sock", dir) >= 0);
        (void) unix_socket_at(stale, false);
        r = ctl_run(NULL, "--socket", stale, "status");
        cr_assert_eq(r.status, 1);
        assert_contains(r.err, "Connection refused");
        assert_contains(r.err, "nothing listens on this path: the socket file is stale");
        assert_lacks(r.err, "systemctl");
        ctl_run_done(&r);

        /* Permission denied: root is not subject to it, so as root the client runs as nobody. */
        cr_assert(asprintf(&private, "%s/private.sock", dir) >= 0);
        fd = unix_socket_at(private, true);
        cr_assert_eq(chmod(private, geteuid() == 0 ? 0600 : 0), 0);
        CtlRunOptions nobody = { .as_nobody = true };
        r = ctl_run(&nobody, "--socket", private, "ping");
        cr_assert_eq(r.status, 1, "%s", r.err);
        assert_contains(r.err, "Permission denied");
        assert_contains(r.err, "no permission to connect");
        assert_lacks(r.err, "systemctl");
        ctl_run_done(&r);
        close(fd);

        r = ctl_run(NULL, "--socket", missing, "--system", "ping");
        cr_assert_eq(r.status, 1);
        assert_contains(r.err, "--socket and --system exclude each other");
        ctl_run_done(&r);

        rm_rf(dir);
        free(missing);
        free(stale);
        free(private);
        free(dir);
}

Test(ctl, connect_error_by_default_suggests_the_user_socket) {
        char *dir = make_dir(), *home_env, *photon_home_env;
        CtlRun r;

        cr_assert(asprintf(&home_env, "HOME=%s", dir) >= 0);
        const char *const env_default[] = { home_env, "PHOTON_HOME", NULL };
        CtlRunOptions opts = { .env = env_default };
        r = ctl_run(&opts, "ping");
        cr_assert_eq(r.status, 1);
        assert_contains(r.err, "/.photon/.data/daemon.sock");
        assert_contains(r.err, "photond is not running: systemctl --user start photond.socket");
        ctl_run_done(&r);

        /* The packaged photond.socket does not listen under another PHOTON_HOME: starting it would not help. */
        cr_assert(asprintf(&photon_home_env, "PHOTON_HOME=%s/elsewhere", dir) >= 0);
        const char *const env_other[] = { home_env, photon_home_env, NULL };
        opts = (CtlRunOptions) { .env = env_other };
        r = ctl_run(&opts, "ping");
        cr_assert_eq(r.status, 1);
        assert_contains(r.err, "/elsewhere/.data/daemon.sock");
        assert_contains(r.err, "not running for this PHOTON_HOME");
        assert_contains(r.err, "drop-in");
        ctl_run_done(&r);

        rm_rf(dir);
        free(home_env);
        free(photon_home_env);
        free(dir);
}

Test(ctl, connect_error_with_system_suggests_the_system_socket) {
        CtlRun r;

        if (access("/run/photon/daemon.sock", F_OK) == 0)
                cr_skip_test("a system instance's socket exists here");
        r = ctl_run(NULL, "--system", "ping");
        cr_assert_eq(r.status, 1);
        assert_contains(r.err, "/run/photon/daemon.sock");
        assert_contains(r.err, "systemctl start photond.socket");
        assert_lacks(r.err, "--user");
        ctl_run_done(&r);
}

/* Every source and errno, also those no test can produce (the system socket's permissions). */
Test(ctl, connect_hint_fits_how_the_socket_was_chosen) {
        const char *h;

        h = ctl_connect_hint(CTL_SOCKET_SYSTEM, EACCES, false);
        assert_contains(h, "root and group 'photon'");
        assert_contains(h, "usermod -aG photon");
        for (int e = 0; e < 3; e++) {
                h = ctl_connect_hint(CTL_SOCKET_SYSTEM, (const int[]) { ENOENT, ECONNREFUSED, ENOTDIR }[e], false);
                assert_contains(h, "systemctl start photond.socket");
                assert_lacks(h, "--user");
        }

        assert_contains(ctl_connect_hint(CTL_SOCKET_USER, ENOENT, false), "systemctl --user start photond.socket");
        assert_contains(ctl_connect_hint(CTL_SOCKET_USER, ECONNREFUSED, false), "stale");
        assert_contains(ctl_connect_hint(CTL_SOCKET_USER, ECONNREFUSED, true), "drop-in");
        assert_contains(ctl_connect_hint(CTL_SOCKET_USER, EACCES, false), "only for the user running photond");

        for (int e = 0; e < 3; e++) {
                h = ctl_connect_hint(CTL_SOCKET_PATH, (const int[]) { ENOENT, ECONNREFUSED, EACCES }[e], false);
                assert_lacks(h, "systemctl");
                assert_contains(h, e < 2 ? "nothing listens on this path" : "no permission");
        }

        /* Nothing to add to errors that say it all. */
        cr_assert_null(ctl_connect_hint(CTL_SOCKET_USER, EAGAIN, false));
        cr_assert_null(ctl_connect_hint(CTL_SOCKET_SYSTEM, ENAMETOOLONG, false));
        cr_assert_null(ctl_connect_hint(CTL_SOCKET_PATH, EAGAIN, false));
}

/* ---- --json ---- */

static struct json_object* parse_one_reply(const char *out) {
        struct json_object *o = NULL;
        const char *nl = strchr(out, '\n');

        cr_assert(nl && nl[1] == '\0', "not one line: %s", out);
        cr_assert_eq(json_parse(out, nl - out, &o, NULL), 0, "not JSON: %s", out);
        cr_assert(json_object_is_type(o, json_type_object), "not an object: %s", out);
        return o;
}

Test(ctl, json_prints_the_daemons_reply_for_every_listing_verb) {
        Daemon *d = daemon_start(NULL);
        const char *const verbs[][4] = {
                { "status" }, { "ps" }, { "channels" }, { "locks" }, { "jobs" }, { "history", "p", "m" },
        };
        struct json_object *o;
        Conn *c = conn_open(d);
        char *out = NULL;

        /* Something to list. */
        o = conn_request(c, "1", "{\"type\":\"publish\",\"id\":\"1\",\"channel\":\"ctl:json\",\"message\":1}");
        json_object_put(o);
        cr_assert_eq(run_ctl(d, NULL, "lock", "ctl-json", "--holder", "me", NULL), 0);

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                cr_assert_eq(run_ctl(d, &out, "--json", verbs[i][0], verbs[i][1], verbs[i][2], NULL), 0, "%s",
                             verbs[i][0]);
                o = parse_one_reply(out);
                cr_assert_str_eq(jstr(o, "type"), "result", "%s: %s", verbs[i][0], out);
                cr_assert(jbool(o, "success"));
                cr_assert(strncmp(jstr(o, "id"), "ctl-", 4) == 0, "%s: %s", verbs[i][0], out);
                cr_assert(json_object_is_type(jget(o, "data"), json_type_object), "%s: %s", verbs[i][0], out);
                if (streq(verbs[i][0], "channels")) {
                        cr_assert(json_object_is_type(jget(o, "data.channelList"), json_type_array), "%s", out);
                        cr_assert_str_eq(jstr(o, "data.channelList.0.name"), "ctl:json");
                }
                if (streq(verbs[i][0], "locks"))
                        cr_assert_str_eq(jstr(o, "data.locks.0.holder"), "me");
                json_object_put(o);
                free(out);
        }

        cr_assert_eq(run_ctl(d, &out, "--json", "ping", NULL), 0);
        o = parse_one_reply(out);
        cr_assert_str_eq(jstr(o, "type"), "pong");
        json_object_put(o);
        free(out);

        conn_close(c);
        daemon_free(d);
}

/* ---- unlock ---- */

Test(ctl, unlock_refused_names_the_holder_and_the_option) {
        Daemon *d = daemon_start(NULL);
        char holder[128], expect[256];
        const char *p;
        CtlRun r;

        r = ctl_run(NULL, "--socket", d->socket_path, "lock", "deploy");
        cr_assert_eq(r.status, 0, "%s", r.err);
        p = strstr(r.out, "as '");
        cr_assert(p && sscanf(p, "as '%127[^']'", holder) == 1, "%s", r.out);
        cr_assert(strncmp(holder, "ctl-", 4) == 0, "%s", holder);
        snprintf(expect, sizeof(expect), "photonctl unlock deploy --holder %s", holder);
        assert_contains(r.out, expect);
        ctl_run_done(&r);

        /* Without --holder: refused (the lock is not this call's), with the holder and the command to use. */
        r = ctl_run(NULL, "--socket", d->socket_path, "unlock", "deploy");
        cr_assert_eq(r.status, 1);
        snprintf(expect, sizeof(expect), "Lock 'deploy' is held by '%s', not by this call (no --holder given)",
                 holder);
        assert_contains(r.err, expect);
        snprintf(expect, sizeof(expect), "unlock deploy --holder %s", holder);
        assert_contains(r.err, expect);
        ctl_run_done(&r);

        r = ctl_run(NULL, "--socket", d->socket_path, "--json", "unlock", "deploy", "--holder", "someone");
        cr_assert_eq(r.status, 1);
        assert_contains(r.out, "\"released\":false");
        snprintf(expect, sizeof(expect), "is held by '%s', not by 'someone'", holder);
        assert_contains(r.err, expect);
        ctl_run_done(&r);

        r = ctl_run(NULL, "--socket", d->socket_path, "unlock", "deploy", "--holder", holder);
        cr_assert_eq(r.status, 0, "%s", r.err);
        assert_contains(r.out, "Released lock 'deploy'.");
        ctl_run_done(&r);

        /* Nobody holds it now: without --holder that counts as released, as the protocol says. */
        r = ctl_run(NULL, "--socket", d->socket_path, "unlock", "deploy");
        cr_assert_eq(r.status, 0, "%s", r.err);
        ctl_run_done(&r);

        /* The advice is a command that works when pasted: a name with a space and a quote is quoted for the shell. */
        r = ctl_run(NULL, "--socket", d->socket_path, "lock", "it's mine");
        cr_assert_eq(r.status, 0, "%s", r.err);
        assert_contains(r.out, "photonctl unlock 'it'\\''s mine' --holder ctl-");
        ctl_run_done(&r);

        daemon_free(d);
}

/* ---- call ---- */

static void write_handler(Daemon *d, const char *photon, const char *method, const char *script) {
        char *path;
        FILE *f;

        cr_assert(asprintf(&path, "%s/handlers", d->home) >= 0);
        (void) mkdir(path, 0755);
        free(path);
        cr_assert(asprintf(&path, "%s/handlers/%s", d->home, photon) >= 0);
        (void) mkdir(path, 0755);
        free(path);
        cr_assert(asprintf(&path, "%s/handlers/%s/%s", d->home, photon, method) >= 0);
        f = fopen(path, "we");
        cr_assert(f, "%s: %m", path);
        fputs(script, f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(chmod(path, 0755), 0);
        free(path);
}

Test(ctl, call_prints_results_and_errors_in_full) {
        Daemon *d = daemon_start(NULL);
        struct json_object *o = NULL;
        char *out = NULL, deep[80];
        size_t len;
        CtlRun r;

        /* 2.5 MB, over the 1 MiB line photonctl used to stop at (HANDLER_MAX_OUTPUT_BYTES is 4 MiB). */
        write_handler(d, "big", "run", "#!/bin/sh\nprintf '\"'; head -c 2500000 /dev/zero | tr '\\0' x; printf '\"'\n");
        cr_assert_eq(run_ctl(d, &out, "call", "big", "run", NULL), 0);
        len = strlen(out);
        cr_assert_eq(len, 2500003, "%zu bytes", len);
        cr_assert_eq(json_parse(out, len - 1, &o, NULL), 0);
        cr_assert_eq(json_object_get_string_len(o), 2500000);
        json_object_put(o);
        free(out);

        /* As deep as photond takes a method's output (json-c's default depth, 32): the reply is one deeper. */
        snprintf(deep, sizeof(deep), "%.32s%.32s", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
                 "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
        {
                char script[256];
                snprintf(script, sizeof(script), "#!/bin/sh\necho '%s'\n", deep);
                write_handler(d, "big", "deep", script);
        }
        cr_assert_eq(run_ctl(d, &out, "call", "big", "deep", NULL), 0);
        cr_assert_eq(strncmp(out, deep, 64), 0, "%s", out);
        cr_assert_str_eq(out + 64, "\n");
        free(out);

        /* An error with the daemon's suggestion, on stderr, exit status 1, nothing on stdout. */
        r = ctl_run(NULL, "--socket", d->socket_path, "call", "nobody", "x");
        cr_assert_eq(r.status, 1);
        cr_assert_str_eq(r.out, "");
        assert_contains(r.err, "call failed: Cannot initialize photon 'nobody'");
        assert_contains(r.err, "(suggestion: Start a provider");
        ctl_run_done(&r);

        /* A failing handler: its message and stderr tail. */
        write_handler(d, "big", "fail", "#!/bin/sh\necho 'went wrong' >&2\nexit 3\n");
        r = ctl_run(NULL, "--socket", d->socket_path, "call", "big", "fail");
        cr_assert_eq(r.status, 1);
        cr_assert_str_eq(r.out, "");
        assert_contains(r.err, "call failed:");
        assert_contains(r.err, "went wrong");
        ctl_run_done(&r);

        daemon_free(d);
}

/* ---- help ---- */

typedef struct VerbOptions {
        const char *verb;
        const char *options;            /* what the verb parses, space-separated */
        const char *const args[8];      /* a valid invocation with every option (photond not running) */
} VerbOptions;

/* The options each verb's code parses (getopt tables in src/photonctl/). */
static const VerbOptions verb_options[] = {
        { "ping", "" },
        { "status", "" },
        { "shutdown", "" },
        { "ps", "" },
        { "publish", "" },
        { "subscribe", "--since", { "subscribe", "--since=1", "ch" } },
        { "channels", "" },
        { "lock", "--holder --timeout --wait", { "lock", "n", "--timeout=1000", "--holder=h", "--wait=10" } },
        { "unlock", "--holder", { "unlock", "n", "--holder=h" } },
        { "locks", "" },
        { "with-lock", "--timeout --wait", { "with-lock", "n", "--timeout=1000", "--wait=10", "--", "true" } },
        { "schedule", "" },
        { "unschedule", "" },
        { "jobs", "" },
        { "run-job", "" },
        { "cron", "--count", { "cron", "* * * * *", "--count=2" } },
        { "history", "--limit", { "history", "p", "m", "--limit=3" } },
        { "call", "" },
        { "provide", "" },
        { "webhook-test", "--id --scheme --secret-file --url",
          { "webhook-test", "p", "m", "--scheme=standard", "--url=http://127.0.0.1:1", "--secret-file=@SECRET@",
            "--id=msg_1" } },
};

/* The --options in text (global ones left out), sorted, space-separated. */
static char* options_in(const char *text, const char *pattern) {
        regex_t re;
        regmatch_t m[2];
        char *found[64], *joined;
        size_t n = 0, len = 1;

        cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED), 0);
        for (const char *p = text; regexec(&re, p, 2, m, 0) == 0; p += m[0].rm_eo) {
                char *o = strndup(p + m[1].rm_so, m[1].rm_eo - m[1].rm_so);
                bool dup = false;

                if (streq(o, "--json") || streq(o, "--help") || streq(o, "--socket") || streq(o, "--system") ||
                    streq(o, "--version")) {
                        free(o);
                        continue;
                }
                for (size_t i = 0; i < n; i++)
                        dup = dup || streq(found[i], o);
                if (dup || n == ELEMENTSOF(found)) {
                        free(o);
                        continue;
                }
                found[n++] = o;
                len += strlen(o) + 1;
        }
        regfree(&re);
        for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && strcmp(found[j - 1], found[j]) > 0; j--) {
                        char *t = found[j];
                        found[j] = found[j - 1];
                        found[j - 1] = t;
                }
        joined = calloc(1, len);
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        strcat(joined, " ");
                strcat(joined, found[i]);
                free(found[i]);
        }
        return joined;
}

/* The man page's entry of a command: its heading line ("*lock* _NAME_ [*--timeout* _MS_] ..."). */
static char* man_heading(const char *man, const char *verb) {
        char *needle;
        const char *p, *eol;

        cr_assert(asprintf(&needle, "\n*%s*", verb) >= 0);
        for (p = strstr(man, needle); p; p = strstr(p + 1, needle)) {
                char c = p[strlen(needle)];
                if (c == ' ' || c == '\n')
                        break;
        }
        free(needle);
        if (!p)
                return NULL;
        p++;
        eol = strchr(p, '\n');
        return strndup(p, eol ? (size_t) (eol - p) : strlen(p));
}

static char* read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf;
        long size;

        cr_assert(f, "%s: %m", path);
        cr_assert_eq(fseek(f, 0, SEEK_END), 0);
        size = ftell(f);
        rewind(f);
        buf = calloc(1, size + 1);
        cr_assert_eq(fread(buf, 1, size, f), (size_t) size);
        fclose(f);
        return buf;
}

Test(ctl, help_agrees_with_the_code_and_the_man_page) {
        const char *man_path = getenv("PHOTONCTL_MAN_SOURCE");
        char *man = man_path ? read_file(man_path) : NULL, *dir = make_dir(), *secret, *secret_arg;
        size_t listed = 0;
        CtlRun top;
        FILE *f;

        cr_assert(asprintf(&secret, "%s/secret", dir) >= 0);
        f = fopen(secret, "we");
        cr_assert(f);
        fputs("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", f);
        fclose(f);
        cr_assert(asprintf(&secret_arg, "--secret-file=%s", secret) >= 0);

        top = ctl_run(NULL, "--help");
        cr_assert_eq(top.status, 0);

        for (size_t i = 0; i < ELEMENTSOF(verb_options); i++) {
                const VerbOptions *v = verb_options + i;
                char *line_start, *got, *overview, *heading, *man_opts;
                CtlRun h;

                /* In the overview, with the options in its synopsis. */
                cr_assert(asprintf(&line_start, "\n  %s", v->verb) >= 0);
                {
                        const char *p = strstr(top.out, line_start), *eol;
                        cr_assert(p, "%s is not in photonctl --help:\n%s", v->verb, top.out);
                        eol = strchr(p + 1, '\n');
                        overview = strndup(p, eol - p);
                }
                got = options_in(overview, "(--[a-z][a-z-]*)");
                cr_assert_str_eq(got, v->options, "photonctl --help, %s", v->verb);
                free(got);
                listed++;

                /* VERB --help and VERB -h: exit 0, the options it parses, nothing else. */
                h = ctl_run(NULL, v->verb, "--help");
                cr_assert_eq(h.status, 0, "%s --help: %s", v->verb, h.err);
                cr_assert(strncmp(h.out, "photonctl ", 10) == 0 && strncmp(h.out + 10, v->verb, strlen(v->verb)) == 0,
                          "%s", h.out);
                got = options_in(h.out, "(--[a-z][a-z-]*)");
                cr_assert_str_eq(got, v->options, "photonctl %s --help:\n%s", v->verb, h.out);
                free(got);
                ctl_run_done(&h);
                h = ctl_run(NULL, v->verb, "-h");
                cr_assert_eq(h.status, 0, "%s -h: %s", v->verb, h.err);
                ctl_run_done(&h);
                /* Also after an argument, except where the arguments go on into a command's own. */
                if (!streq(v->verb, "with-lock") && !streq(v->verb, "provide")) {
                        h = ctl_run(NULL, v->verb, "x", "--help");
                        cr_assert_eq(h.status, 0, "%s x --help: %s", v->verb, h.err);
                        ctl_run_done(&h);
                }

                /* The code takes every option it documents. */
                if (v->args[0]) {
                        const char *args[12] = { "--socket", "/nonexistent/photonctl-test.sock" };
                        size_t n = 2;

                        for (size_t k = 0; v->args[k]; k++)
                                args[n++] = streq(v->args[k], "--secret-file=@SECRET@") ? secret_arg : v->args[k];
                        args[n] = NULL;
                        h = ctl_runv(NULL, args);
                        assert_lacks(h.err, "unrecognized option");
                        assert_lacks(h.err, "does not apply");
                        assert_lacks(h.err, "Usage:");
                        if (h.status != 0)
                                cr_assert(strstr(h.err, "Cannot connect"), "%s: %s", v->verb, h.err);
                        ctl_run_done(&h);
                }

                /* photonctl(1) has an entry for it, with the same options. */
                if (man) {
                        heading = man_heading(man, v->verb);
                        cr_assert(heading, "photonctl(1) has no entry for %s", v->verb);
                        man_opts = options_in(heading, "\\*(--[a-z][a-z-]*)\\*");
                        cr_assert_str_eq(man_opts, v->options, "photonctl(1), %s: %s", v->verb, heading);
                        free(man_opts);
                        free(heading);
                }
                free(overview);
                free(line_start);
        }

        /* And no command that the test does not know of, in the overview or in the man page. */
        {
                const char *p = strstr(top.out, "Commands:\n"), *end = strstr(top.out, "\nOptions:");
                size_t n = 0;

                cr_assert(p && end);
                for (p = strchr(p, '\n') + 1; p < end; p = strchr(p, '\n') + 1)
                        if (p[0] == ' ' && p[1] == ' ' && p[2] != ' ')
                                n++;
                cr_assert_eq(n, listed, "photonctl --help lists %zu commands, the test knows %zu", n, listed);
        }
        if (man) {
                const char *p = strstr(man, "# COMMANDS"), *end = strstr(man, "\n# ENVIRONMENT");
                size_t n = 0;

                cr_assert(p && end);
                for (p = strchr(p, '\n'); p && p < end; p = strchr(p + 1, '\n'))
                        if (p[1] == '*' && p[2] != '*')
                                n++;
                cr_assert_eq(n, listed, "photonctl(1) has %zu command entries, the test knows %zu", n, listed);
        }

        /* A verb without options takes none. */
        {
                CtlRun h = ctl_run(NULL, "--socket", "/nonexistent/x", "ping", "extra");
                cr_assert_eq(h.status, 1);
                assert_contains(h.err, "Usage: photonctl ping");
                ctl_run_done(&h);
        }

        ctl_run_done(&top);
        rm_rf(dir);
        free(secret);
        free(secret_arg);
        free(man);
        free(dir);
}
