/* SPDX-License-Identifier: MIT */

/* photonctl verbs for locks: lock, unlock, locks, and with-lock, which runs a command while holding a lock (as
 * flock(1) does with a file), refreshing it before it can expire. */

#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl-util.h"
#include "log.h"
#include "string-util.h"

/* Beyond the daemon's own lockWait, how long to wait for an answer. */
#define LOCK_REPLY_SLACK_MS 30000

typedef struct LockOptions {
        uint64_t timeout_ms;            /* 0: the daemon's default */
        uint64_t wait_ms;
        const char *holder;
} LockOptions;

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct json_object* reply_data(struct json_object *reply) {
        struct json_object *data = NULL;

        (void) json_object_object_get_ex(reply, "data", &data);
        return data;
}

/* Parses the options of argv (argv[0] is the verb; unless options_first, getopt permutes, so options may follow
 * NAME). The positional arguments are then argv[*ret_first .. argc). */
static int parse_lock_options(int argc, char *argv[], bool allow_holder, bool allow_timeout, bool options_first,
                              LockOptions *o, int *ret_first) {
        enum { ARG_TIMEOUT = 0x100, ARG_WAIT, ARG_HOLDER };
        const struct option options[] = {
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "wait",    required_argument, NULL, ARG_WAIT    },
                { "holder",  required_argument, NULL, ARG_HOLDER  },
                {}
        };
        int c;

        /* options_first: stop at the first argument that is not an option, as flock(1) does. */
        while ((c = getopt_long(argc, argv, options_first ? "+" : "", options, NULL)) >= 0)
                switch (c) {
                case ARG_TIMEOUT:
                        if (!allow_timeout)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "--timeout does not apply here.");
                        if (safe_atou64(optarg, &o->timeout_ms) < 0 || o->timeout_ms == 0)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                                       "--timeout must be a positive number of ms: %s", optarg);
                        break;
                case ARG_WAIT:
                        if (!allow_timeout)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "--wait does not apply here.");
                        if (safe_atou64(optarg, &o->wait_ms) < 0)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                                       "--wait must be a number of ms: %s", optarg);
                        break;
                case ARG_HOLDER:
                        if (!allow_holder)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "--holder does not apply here.");
                        if (!optarg[0])
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "--holder must not be empty.");
                        o->holder = optarg;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        *ret_first = optind;
        return 0;
}

/* One request on its own connection, waiting up to timeout_ms for the answer (a lockWait may take minutes, longer
 * than ctl_call() waits). Errors are logged. */
static int lock_call(const CtlContext *ctx, struct json_object *req, int timeout_ms, struct json_object **ret) {
        _cleanup_close_ int fd = -EBADF;
        const char *id = json_get_string(req, "id");
        int r;

        r = ctl_connect(ctx, &fd);
        if (r < 0)
                return r;
        r = ctl_send(fd, req);
        if (r < 0)
                return log_error_errno(r, "Failed to send the request: %m");
        for (;;) {
                _cleanup_(json_object_putp) struct json_object *reply = NULL;

                r = ctl_recv(fd, timeout_ms, &reply);
                if (r == -EINTR)
                        continue;
                if (r == -ETIMEDOUT)
                        return log_error_errno(r, "No answer from photond within %d ms.", timeout_ms);
                if (r == -ECONNRESET)
                        return log_error_errno(r, "photond closed the connection without answering.");
                if (r < 0)
                        return log_error_errno(r, "Failed to read the reply: %m");
                if (streq_ptr(json_get_string(reply, "id"), id)) {
                        *ret = TAKE_PTR(reply);
                        return 0;
                }
        }
}

/* assign_lock rather than lock: same rules, but it takes lockHolder, and a refusal names the current holder. */
static int acquire(const CtlContext *ctx, const char *name, const LockOptions *o, struct json_object **ret_reply) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("assign_lock");

        if (!req ||
            json_add_string(req, "lockName", name) < 0 ||
            json_add_string(req, "lockHolder", o->holder) < 0 ||
            (o->timeout_ms > 0 && json_add_int64(req, "lockTimeout", (int64_t) o->timeout_ms) < 0) ||
            (o->wait_ms > 0 && json_add_int64(req, "lockWait", (int64_t) o->wait_ms) < 0))
                return log_oom();
        return lock_call(ctx, req, (int) MIN(o->wait_ms + LOCK_REPLY_SLACK_MS, (uint64_t) INT32_MAX), ret_reply);
}

static int release(const CtlContext *ctx, const char *name, const char *holder, struct json_object **ret_reply) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("unlock");

        if (!req || json_add_string(req, "lockName", name) < 0 || json_add_string(req, "lockHolder", holder) < 0)
                return log_oom();
        return lock_call(ctx, req, LOCK_REPLY_SLACK_MS, ret_reply);
}

static int check_acquired(struct json_object *reply, const char *name) {
        struct json_object *data = reply_data(reply);
        const char *current;

        if (streq_ptr(json_get_string(reply, "type"), "result") && data &&
            !json_object_get_boolean(json_object_object_get(reply, "success"))) {
                current = json_get_string(data, "currentHolder");
                return log_error_errno(SYNTHETIC_ERRNO(EBUSY), "Lock '%s' is held by '%s'.", name,
                                       current ?: "another holder");
        }
        return ctl_check_reply(reply, "lock");
}

int verb_lock(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *reply = NULL;
        LockOptions o = {};
        struct json_object *data;
        const char *name, *holder;
        char expires[32];
        int first = 0, r;

        r = parse_lock_options(argc, argv, true, true, false, &o, &first);
        if (r < 0)
                return r;
        if (argc - first != 1)
                return ctl_usage_error(argv[0]);
        name = argv[first];

        r = acquire(ctx, name, &o, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        r = check_acquired(reply, name);
        if (r < 0 || ctx->json)
                return r;

        data = reply_data(reply);
        holder = json_get_string(data, "holder");
        if (o.timeout_ms > 0)
                ctl_format_duration(expires, sizeof(expires), (int64_t) o.timeout_ms);
        printf("Acquired lock '%s' as '%s' (fencing token %s, expires in %s).\n", name, holder,
               json_object_get_string(json_object_object_get(data, "fencingToken")),
               o.timeout_ms > 0 ? expires : "the daemon's default timeout");
        if (!o.holder) {
                _cleanup_free_ char *qn = shell_quote(name), *qh = shell_quote(holder ?: "");

                if (!qn || !qh)
                        return log_oom();
                printf("Release it with: photonctl unlock %s --holder %s\n", qn, qh);
        }
        return 0;
}

/* unlock's refusal does not name the holder (the protocol is the reference's), and without --holder the request's
 * own id is the holder, which never matches the one 'photonctl lock' got: ask who holds the lock, so the error
 * says whom to release it as. */
static int check_released(const CtlContext *ctx, struct json_object *reply, const char *name, const char *holder) {
        _cleanup_(json_object_putp) struct json_object *req = NULL, *query = NULL;
        _cleanup_free_ char *qn = NULL, *qh = NULL;
        const char *current;

        if (!streq_ptr(json_get_string(reply, "type"), "result") || !reply_data(reply) ||
            json_object_get_boolean(json_object_object_get(reply, "success")))
                return ctl_check_reply(reply, "unlock");

        req = ctl_request_new("query_lock");
        if (!req || json_add_string(req, "lockName", name) < 0)
                return log_oom();
        if (lock_call(ctx, req, LOCK_REPLY_SLACK_MS, &query) < 0 || ctl_check_reply(query, "query_lock") < 0)
                return ctl_check_reply(reply, "unlock");
        current = json_get_string(reply_data(query), "holder");
        if (!current)   /* it expired or was released meanwhile */
                return ctl_check_reply(reply, "unlock");
        qn = shell_quote(name);
        qh = shell_quote(current);
        if (!qn || !qh)
                return log_oom();

        return log_error_errno(SYNTHETIC_ERRNO(EBUSY),
                               "Lock '%s' is held by '%s', not %s%s%s; release it as its holder: "
                               "%s unlock %s --holder %s", name, current, holder ? "by '" : "by this call ",
                               holder ?: "(no --holder given)", holder ? "'" : "", program_invocation_short_name,
                               qn, qh);
}

int verb_unlock(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *reply = NULL;
        LockOptions o = {};
        int first = 0, r;

        r = parse_lock_options(argc, argv, true, false, false, &o, &first);
        if (r < 0)
                return r;
        if (argc - first != 1)
                return ctl_usage_error(argv[0]);

        r = release(ctx, argv[first], o.holder, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        r = check_released(ctx, reply, argv[first], o.holder);
        if (r < 0 || ctx->json)
                return r;
        printf("Released lock '%s'.\n", argv[first]);
        return 0;
}

int verb_locks(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("list_locks"), *reply = NULL;
        struct json_object *locks = NULL;
        int64_t now;
        size_t n;
        int r;

        r = ctl_query(ctx, req, "locks", &reply);
        if (r <= 0)
                return r;
        if (!json_object_object_get_ex(reply_data(reply), "locks", &locks) ||
            !json_object_is_type(locks, json_type_array))
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "list_locks reply has no lock list.");

        n = json_object_array_length(locks);
        if (n == 0) {
                puts("No locks held.");
                return 0;
        }
        now = wall_ms();
        printf("%-24s %-28s %-26s %-12s %s\n", "NAME", "HOLDER", "ACQUIRED", "EXPIRES IN", "TOKEN");
        for (size_t i = 0; i < n; i++) {
                struct json_object *l = json_object_array_get_idx(locks, i);
                int64_t acquired = 0, expires = 0, token = 0;
                char when[64], left[32];

                (void) json_get_int64(l, "acquiredAt", false, &acquired);
                (void) json_get_int64(l, "expiresAt", false, &expires);
                (void) json_get_int64(l, "fencingToken", false, &token);
                ctl_format_time(when, sizeof(when), acquired);
                ctl_format_duration(left, sizeof(left), MAX(expires - now, 0));
                printf("%-24s %-28s %-26s %-12s %" PRIi64 "\n", json_get_string(l, "name") ?: "?",
                       json_get_string(l, "holder") ?: "?", when, left, token);
        }
        return 0;
}

/* ---- with-lock ---- */

static pid_t child_pid = 0;

static void forward_signal(int sig) {
        if (child_pid > 0)
                (void) kill(child_pid, sig);
}

/* A holder nobody else can be: with-lock is exclusive even against itself in another shell. */
static int session_holder(char *buf, size_t len) {
        uint8_t rnd[8];
        char host[64] = "localhost";

        if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
                return log_error_errno(errno, "getrandom() failed: %m");
        (void) gethostname(host, sizeof(host) - 1);
        snprintf(buf, len, "photonctl:%s:%d:%02x%02x%02x%02x%02x%02x%02x%02x", host, (int) getpid(),
                 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        return 0;
}

static int set_lock_env(const char *name, const char *holder, struct json_object *data) {
        const char *token = json_object_get_string(json_object_object_get(data, "fencingToken"));

        if (setenv("PHOTON_LOCK_NAME", name, 1) < 0 ||
            setenv("PHOTON_LOCK_HOLDER", holder, 1) < 0 ||
            (token && setenv("PHOTON_LOCK_TOKEN", token, 1) < 0))
                return log_oom();
        return 0;
}

/* Re-acquires (a re-entrant refresh: same holder, same token) so the lock outlives a command that runs longer than
 * the timeout. Returns false once the lock is lost. */
static bool refresh(const CtlContext *ctx, const char *name, const LockOptions *o) {
        _cleanup_(json_object_putp) struct json_object *reply = NULL;
        LockOptions now = *o;

        now.wait_ms = 0;
        if (acquire(ctx, name, &now, &reply) < 0)
                return false;
        return check_acquired(reply, name) >= 0;
}

static int wait_child(pid_t pid, int pidfd, int timeout_ms, int *ret_status) {
        pid_t r;

        if (pidfd >= 0) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };

                if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR)
                        return -errno;
        } else
                (void) poll(NULL, 0, MIN(timeout_ms, 50));

        r = waitpid(pid, ret_status, WNOHANG);
        if (r < 0)
                return errno == EINTR ? 0 : -errno;
        return r == pid;
}

int verb_with_lock(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *reply = NULL;
        _cleanup_close_ int pidfd = -EBADF;
        char holder[160];
        LockOptions o = {};
        struct sigaction fwd = { .sa_handler = forward_signal }, ign = { .sa_handler = SIG_IGN }, old_int, old_quit;
        char **cmd;
        const char *name;
        int dashdash = -1, first, status = 0, r;
        uint64_t interval_ms, next_refresh;
        bool lost = false;

        for (int i = 1; i < argc; i++)
                if (streq(argv[i], "--")) {
                        dashdash = i;
                        break;
                }
        if (dashdash > 0) {
                /* with-lock NAME [OPTIONS] -- CMD... */
                r = parse_lock_options(dashdash, argv, false, true, false, &o, &first);
                if (r < 0)
                        return r;
                if (dashdash - first != 1 || dashdash + 1 >= argc)
                        return ctl_usage_error(argv[0]);
                name = argv[first];
                cmd = argv + dashdash + 1;
        } else {
                /* flock(1) style: with-lock [OPTIONS] NAME CMD... */
                r = parse_lock_options(argc, argv, false, true, true, &o, &first);
                if (r < 0)
                        return r;
                if (argc - first < 2)
                        return ctl_usage_error(argv[0]);
                name = argv[first];
                cmd = argv + first + 1;
        }

        r = session_holder(holder, sizeof(holder));
        if (r < 0)
                return r;
        o.holder = holder;
        /* Explicit, so the refresh interval below matches whatever default the daemon was given. */
        if (o.timeout_ms == 0)
                o.timeout_ms = 30000;

        r = acquire(ctx, name, &o, &reply);
        if (r < 0)
                return r;
        r = check_acquired(reply, name);
        if (r < 0)
                return r;
        r = set_lock_env(name, holder, reply_data(reply));
        if (r < 0)
                return r;

        /* Like system(3): the terminal's ^C and ^\ go to the command, which decides; photonctl outlives it to
         * release the lock. SIGTERM and SIGHUP are passed on. */
        (void) sigaction(SIGINT, &ign, &old_int);
        (void) sigaction(SIGQUIT, &ign, &old_quit);
        (void) sigaction(SIGTERM, &fwd, NULL);
        (void) sigaction(SIGHUP, &fwd, NULL);

        fflush(NULL);
        child_pid = fork();
        if (child_pid < 0) {
                r = log_error_errno(errno, "fork() failed: %m");
                goto release;
        }
        if (child_pid == 0) {
                (void) sigaction(SIGINT, &old_int, NULL);
                (void) sigaction(SIGQUIT, &old_quit, NULL);
                (void) signal(SIGTERM, SIG_DFL);
                (void) signal(SIGHUP, SIG_DFL);
                execvp(cmd[0], cmd);
                log_error_errno(errno, "Failed to run %s: %m", cmd[0]);
                _exit(errno == ENOENT ? 127 : 126);
        }

        pidfd = pidfd_open(child_pid, 0);
        /* A third of the timeout leaves two chances to refresh before the lock could run out. */
        interval_ms = MAX(o.timeout_ms / 3, 1);
        next_refresh = (uint64_t) wall_ms() + interval_ms;

        for (;;) {
                int64_t left = (int64_t) next_refresh - wall_ms();

                r = wait_child(child_pid, pidfd, (int) MAX(left, 0), &status);
                if (r < 0) {
                        r = log_error_errno(r, "Failed to wait for %s: %m", cmd[0]);
                        goto release;
                }
                if (r > 0)
                        break;
                if ((int64_t) next_refresh - wall_ms() > 0)
                        continue;
                if (!lost && !refresh(ctx, name, &o)) {
                        log_warning("Lost lock '%s'; %s keeps running without it.", name, cmd[0]);
                        lost = true;
                }
                next_refresh = (uint64_t) wall_ms() + interval_ms;
        }

        if (WIFEXITED(status))
                r = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                r = 128 + WTERMSIG(status);
        else
                r = EXIT_FAILURE;

release:
        if (!lost) {
                _cleanup_(json_object_putp) struct json_object *rel = NULL;

                if (release(ctx, name, holder, &rel) < 0 || ctl_check_reply(rel, "unlock") < 0)
                        log_warning("Could not release lock '%s'; it expires by itself.", name);
        }
        return r;
}
