/* SPDX-License-Identifier: MIT */

/* photonctl verbs for method dispatch: call (a command with its emits and prompts on the terminal), provide (any
 * command as a provider of a photon) and ps. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl-util.h"
#include "log.h"
#include "dispatch-util.h"
#include "photond-limits.h"

/* ---- call ---- */

static void print_emit(struct json_object *emit_data) {
        const char *name = json_get_string(emit_data, "emit"), *message = json_get_string(emit_data, "message");

        if (message)
                fprintf(stderr, "%s: %s\n", name ?: "emit", message);
        else
                fprintf(stderr, "%s: %s\n", name ?: "emit",
                        json_object_to_json_string_ext(emit_data, JSON_FORMAT_FLAGS));
}

/* Reads one line from stdin without its newline; NULL at EOF. */
static char* read_answer(void) {
        char *line = NULL;
        size_t n = 0;
        ssize_t l;

        l = getline(&line, &n, stdin);
        if (l < 0) {
                free(line);
                return NULL;
        }
        while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r'))
                line[--l] = '\0';
        return line;
}

static struct json_object* option_value(struct json_object *opt) {
        struct json_object *v;

        /* Options are strings or {label, value} objects. */
        if (json_object_is_type(opt, json_type_object) && json_object_object_get_ex(opt, "value", &v))
                return json_object_get(v);
        return json_object_get(opt);
}

/* Asks the question of a prompt on the terminal; returns the answer as the photon expects it (NULL = null). */
static struct json_object* ask(struct json_object *prompt) {
        const char *type = json_get_string(prompt, "type") ?: "text";
        const char *message = json_get_string(prompt, "message") ?: "Input";
        struct json_object *def = NULL, *options = NULL;
        _cleanup_free_ char *answer = NULL;

        (void) json_object_object_get_ex(prompt, "default", &def);
        (void) json_object_object_get_ex(prompt, "options", &options);
        if (options && !json_object_is_type(options, json_type_array))
                options = NULL;

        if (options)
                for (size_t i = 0; i < json_object_array_length(options); i++) {
                        struct json_object *o = json_object_array_get_idx(options, i);
                        const char *label = json_object_is_type(o, json_type_object) ?
                                json_get_string(o, "label") : NULL;
                        fprintf(stderr, "  %zu) %s\n", i + 1,
                                label ?: json_object_get_cstring(o) ?:
                                json_object_to_json_string_ext(o, JSON_FORMAT_FLAGS));
                }
        if (streq(type, "confirm"))
                fprintf(stderr, "%s [%s] ", message, def && json_object_get_boolean(def) ? "Y/n" : "y/N");
        else if (def)
                fprintf(stderr, "%s [%s] ", message,
                        json_object_get_cstring(def) ?: json_object_to_json_string_ext(def, JSON_FORMAT_FLAGS));
        else
                fprintf(stderr, "%s ", message);
        fflush(stderr);

        answer = read_answer();
        if (!answer)
                return NULL;            /* EOF: no answer, as when the reference's caller goes away */
        if (answer[0] == '\0' && def)
                return json_object_get(def);

        if (streq(type, "confirm")) {
                bool yes = answer[0] == 'y' || answer[0] == 'Y' || streq(answer, "true") || streq(answer, "1");
                return json_object_new_boolean(yes);
        }
        if (options) {
                char *end;
                long i = strtol(answer, &end, 10);
                if (*end == '\0' && i >= 1 && (size_t) i <= json_object_array_length(options))
                        return option_value(json_object_array_get_idx(options, i - 1));
        }
        if (streq(type, "number")) {
                struct json_object *n = NULL;
                if (json_parse(answer, strlen(answer), &n, NULL) >= 0 &&
                    (json_object_is_type(n, json_type_int) || json_object_is_type(n, json_type_double)))
                        return n;
                json_object_put(n);
        }
        return json_object_new_string(answer);
}

static int answer_prompt(int fd, const char *id, struct json_object *prompt) {
        _cleanup_(json_object_putp) struct json_object *resp = json_object_new_object();

        if (!resp ||
            json_add_string(resp, "type", "prompt_response") < 0 ||
            json_add_string(resp, "id", id) < 0 ||
            json_object_object_add(resp, "promptValue", ask(prompt)) < 0)
                return log_oom();
        return ctl_send(fd, resp);
}

int verb_call(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("command"), *args = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *id;
        int r;

        if (!req)
                return log_oom();
        if (argc > 3) {
                r = ctl_parse_json_arg(argv[3], "ARGS_JSON", &args);
                if (r < 0)
                        return r;
        }
        if (json_add_string(req, "photonName", argv[1]) < 0 ||
            json_add_string(req, "method", argv[2]) < 0 ||
            (args && json_add(req, "args", TAKE_PTR(args)) < 0))
                return log_oom();
        id = json_get_string(req, "id");

        r = ctl_connect(ctx, &fd);
        if (r < 0)
                return r;
        r = ctl_send(fd, req);
        if (r < 0)
                return log_error_errno(r, "Failed to send the request: %m");

        /* No deadline of our own: the daemon applies the method's timeout. */
        for (;;) {
                _cleanup_(json_object_putp) struct json_object *msg = NULL;
                struct json_object *v;
                const char *type;

                r = ctl_recv(fd, -1, &msg);
                if (r == -EINTR)
                        continue;
                if (r == -ECONNRESET)
                        return log_error_errno(r, "photond closed the connection without answering.");
                if (r < 0)
                        return log_error_errno(r, "Failed to read from photond: %m");

                type = json_get_string(msg, "type");
                if (streq_ptr(type, "shutdown"))
                        return log_error_errno(SYNTHETIC_ERRNO(ESHUTDOWN), "photond is shutting down.");
                if (!streq_ptr(json_get_string(msg, "id"), id) && !streq_ptr(json_get_string(msg, "id"), "unknown"))
                        continue;
                if (ctx->json)
                        ctl_print_json(msg);

                if (streq_ptr(type, "emit")) {
                        if (!ctx->json && json_object_object_get_ex(msg, "emitData", &v))
                                print_emit(v);
                        continue;
                }
                if (streq_ptr(type, "prompt")) {
                        r = answer_prompt(fd, id, json_object_object_get_ex(msg, "prompt", &v) ? v : NULL);
                        if (r < 0)
                                return log_error_errno(r, "Failed to answer the prompt: %m");
                        continue;
                }

                r = ctl_check_reply(msg, "call");
                if (r < 0 || ctx->json)
                        return r;
                puts(json_object_object_get_ex(msg, "data", &v) && v ?
                     json_object_to_json_string_ext(v, JSON_FORMAT_FLAGS) : "null");
                return 0;
        }
}

/* ---- provide ---- */

#define PROVIDE_MAX_RUNNING 256
#define PROVIDE_EXIT_GRACE_MS 100

typedef struct Run {
        char *invoke_id;
        char *method;
        pid_t pid;
        int pidfd, out_fd, err_fd;
        char *out;
        size_t out_size;
        bool too_large, exited;
        int exit_code, exit_status;
        uint64_t exited_at;
        TailBuf err_tail;
} Run;

static uint64_t mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void run_free(Run *run) {
        safe_close(run->pidfd);
        safe_close(run->out_fd);
        safe_close(run->err_fd);
        free(run->invoke_id);
        free(run->method);
        free(run->out);
        free(run);
}

static int send_invoke_result(int fd, const char *id, bool success, struct json_object *data, const char *error) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o ||
            json_add_string(o, "type", "invoke_result") < 0 ||
            json_add_string(o, "id", id) < 0 ||
            json_add_bool(o, "success", success) < 0) {
                json_object_put(data);
                return -ENOMEM;
        }
        if (success ? json_object_object_add(o, "data", data) < 0 : json_add_string(o, "error", error) < 0)
                return -ENOMEM;
        return ctl_send(fd, o);
}

static int run_start(const char *photon, struct json_object *inv, char **cmd, Run **ret) {
        const char *method = json_get_string(inv, "method"), *trigger = json_get_string(inv, "trigger");
        const char *job_id = json_get_string(inv, "jobId"), *json;
        struct json_object *args = NULL;
        _cleanup_close_ int in = -EBADF;
        int out[2], err[2];
        Run *run;
        size_t len;
        pid_t pid;

        (void) json_object_object_get_ex(inv, "args", &args);
        json = args ? json_object_to_json_string_ext(args, JSON_FORMAT_FLAGS) : "{}";
        len = strlen(json);

        /* The args as a file: the command reads them when it likes and we never block writing them. */
        in = memfd_create("photon-args", MFD_CLOEXEC);
        if (in < 0)
                return -errno;
        if (write(in, json, len) != (ssize_t) len || write(in, "\n", 1) != 1 || lseek(in, 0, SEEK_SET) != 0)
                return -EIO;

        if (pipe2(out, O_CLOEXEC) < 0)
                return -errno;
        if (pipe2(err, O_CLOEXEC) < 0) {
                safe_close(out[0]);
                safe_close(out[1]);
                return -errno;
        }

        pid = fork();
        if (pid < 0) {
                int r = -errno;
                safe_close(out[0]);
                safe_close(out[1]);
                safe_close(err[0]);
                safe_close(err[1]);
                return r;
        }
        if (pid == 0) {
                sigset_t none;

                if (dup2(in, STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 || dup2(err[1], STDERR_FILENO) < 0)
                        _exit(127);
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                (void) signal(SIGPIPE, SIG_DFL);
                /* Like an exec handler's environment, on top of the user's own (this is their process). */
                if (setenv("PHOTON_NAME", photon, 1) < 0 ||
                    setenv("PHOTON_METHOD", method ?: "", 1) < 0 ||
                    setenv("PHOTON_TRIGGER", trigger ?: "command", 1) < 0 ||
                    (job_id ? setenv("PHOTON_JOB_ID", job_id, 1) : unsetenv("PHOTON_JOB_ID")) < 0)
                        _exit(127);
                execvp(cmd[0], cmd);
                fprintf(stderr, "photonctl provide: cannot run %s: %m\n", cmd[0]);
                _exit(127);
        }
        safe_close(out[1]);
        safe_close(err[1]);

        run = new0(Run, 1);
        if (!run) {
                safe_close(out[0]);
                safe_close(err[0]);
                return -ENOMEM;
        }
        run->pid = pid;
        run->out_fd = out[0];
        run->err_fd = err[0];
        run->pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        run->invoke_id = strdup(json_get_string(inv, "id"));
        run->method = strdup(method ?: "");
        if (run->pidfd < 0 || !run->invoke_id || !run->method) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                run_free(run);
                return -ENOMEM;
        }
        *ret = run;
        return 0;
}

/* Reads from one of the run's pipes; returns false at EOF. */
static bool run_read(Run *run, int fd) {
        char buf[16384];
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return true;
        if (n <= 0)
                return false;
        if (fd == run->err_fd) {
                /* The operator sees the command's stderr; the caller gets its tail on failure. */
                (void) !write(STDERR_FILENO, buf, n);
                tail_buf_append(&run->err_tail, buf, n);
                return true;
        }
        if (run->too_large)
                return true;
        if (run->out_size + n > limits.HANDLER_MAX_OUTPUT_BYTES) {
                run->too_large = true;
                (void) kill(run->pid, SIGKILL);
                return true;
        }
        char *p = realloc(run->out, run->out_size + n);
        if (!p) {
                run->too_large = true;
                return true;
        }
        memcpy(p + run->out_size, buf, n);
        run->out = p;
        run->out_size += n;
        return true;
}

static int run_finish(int fd, const char *photon, Run *run) {
        _cleanup_free_ char *tail = tail_buf_text(&run->err_tail), *msg = NULL;
        struct json_object *data = NULL;
        int r;

        if (run->too_large) {
                if (asprintf(&msg, "Output too large (over %" PRIu64 " bytes)", limits.HANDLER_MAX_OUTPUT_BYTES) < 0)
                        return -ENOMEM;
                return send_invoke_result(fd, run->invoke_id, false, NULL, msg);
        }
        if (run->exit_code != CLD_EXITED || run->exit_status != 0) {
                msg = dispatch_exit_message(photon, run->method, run->exit_code, run->exit_status, tail);
                if (!msg)
                        return -ENOMEM;
                return send_invoke_result(fd, run->invoke_id, false, NULL, msg);
        }
        r = dispatch_parse_output(run->out, run->out_size, &data);
        if (r < 0)
                return r;
        return send_invoke_result(fd, run->invoke_id, true, data, NULL);
}

int verb_provide(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("provide"), *reply = NULL;
        _cleanup_close_ int fd = -EBADF;
        Run *runs[PROVIDE_MAX_RUNNING] = {};
        const char *photon = argv[1];
        char **cmd;
        unsigned n_runs = 0;
        int r;

        if (argc < 4 || !streq(argv[2], "--"))
                return ctl_usage_error(argv[0]);
        cmd = argv + 3;

        if (!req || json_add_string(req, "photonName", photon) < 0)
                return log_oom();
        r = ctl_connect(ctx, &fd);
        if (r < 0)
                return r;
        r = ctl_send(fd, req);
        if (r < 0)
                return log_error_errno(r, "Failed to send the request: %m");
        for (;;) {
                r = ctl_recv(fd, 30000, &reply);
                if (r < 0)
                        return log_error_errno(r, "No answer to provide: %m");
                if (streq_ptr(json_get_string(reply, "id"), json_get_string(req, "id")))
                        break;
                json_object_put(reply);
                reply = NULL;
        }
        r = ctl_check_reply(reply, "provide");
        if (r < 0)
                return r;
        fprintf(stderr, "Providing '%s' with %s. Press Ctrl-C to stop.\n", photon, cmd[0]);

        for (;;) {
                struct pollfd pfd[1 + 3 * PROVIDE_MAX_RUNNING];
                Run *owner[1 + 3 * PROVIDE_MAX_RUNNING];
                int timeout = -1, n = 0;
                uint64_t now = mono_ms();

                pfd[n] = (struct pollfd) { .fd = fd, .events = POLLIN };
                owner[n++] = NULL;
                for (unsigned i = 0; i < n_runs; i++) {
                        Run *run = runs[i];
                        if (run->out_fd >= 0) {
                                pfd[n] = (struct pollfd) { .fd = run->out_fd, .events = POLLIN };
                                owner[n++] = run;
                        }
                        if (run->err_fd >= 0) {
                                pfd[n] = (struct pollfd) { .fd = run->err_fd, .events = POLLIN };
                                owner[n++] = run;
                        }
                        if (!run->exited) {
                                pfd[n] = (struct pollfd) { .fd = run->pidfd, .events = POLLIN };
                                owner[n++] = run;
                        } else {
                                /* A grandchild holding the pipes does not keep the answer back for long. */
                                uint64_t until = run->exited_at + PROVIDE_EXIT_GRACE_MS;
                                int left = until > now ? (int) (until - now) : 0;

                                timeout = timeout < 0 ? left : MIN(timeout, left);
                        }
                }

                if (poll(pfd, n, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "poll(): %m");
                }

                for (int i = 1; i < n; i++) {
                        Run *run = owner[i];

                        if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        if (pfd[i].fd == run->pidfd) {
                                siginfo_t si = {};
                                if (waitid(P_PID, run->pid, &si, WEXITED) == 0) {
                                        run->exited = true;
                                        run->exit_code = si.si_code;
                                        run->exit_status = si.si_status;
                                        run->exited_at = mono_ms();
                                }
                        } else if (!run_read(run, pfd[i].fd)) {
                                if (pfd[i].fd == run->out_fd)
                                        run->out_fd = safe_close(run->out_fd);
                                else
                                        run->err_fd = safe_close(run->err_fd);
                        }
                }

                now = mono_ms();
                for (unsigned i = 0; i < n_runs;) {
                        Run *run = runs[i];
                        if (!run->exited ||
                            ((run->out_fd >= 0 || run->err_fd >= 0) && now < run->exited_at + PROVIDE_EXIT_GRACE_MS)) {
                                i++;
                                continue;
                        }
                        r = run_finish(fd, photon, run);
                        if (r < 0)
                                return log_error_errno(r, "Failed to answer %s: %m", run->invoke_id);
                        run_free(run);
                        runs[i] = runs[--n_runs];
                }

                if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
                        continue;
                /* Everything that arrived, not just one line: ctl_recv() buffers what it read. */
                for (;;) {
                        _cleanup_(json_object_putp) struct json_object *msg = NULL;
                        const char *type;
                        Run *run = NULL;

                        r = ctl_recv(fd, 0, &msg);
                        if (r == -ETIMEDOUT)
                                break;
                        if (r == -ECONNRESET)
                                return log_error_errno(r, "photond closed the connection.");
                        if (r < 0)
                                return log_error_errno(r, "Failed to read from photond: %m");

                        type = json_get_string(msg, "type");
                        if (streq_ptr(type, "shutdown"))
                                return log_error_errno(SYNTHETIC_ERRNO(ESHUTDOWN), "photond is shutting down.");
                        if (streq_ptr(type, "error")) {
                                fprintf(stderr, "photond: %s\n", json_get_string(msg, "error") ?: "error");
                                continue;
                        }
                        if (!streq_ptr(type, "invoke"))
                                continue;

                        if (n_runs >= PROVIDE_MAX_RUNNING) {
                                r = send_invoke_result(fd, json_get_string(msg, "id"), false, NULL,
                                                       "photonctl provide: too many calls running at once");
                                if (r < 0)
                                        return log_error_errno(r, "Failed to answer: %m");
                                continue;
                        }
                        r = run_start(photon, msg, cmd, &run);
                        if (r < 0) {
                                char err[256];
                                snprintf(err, sizeof(err), "photonctl provide: cannot start %s: %s", cmd[0],
                                         strerror(-r));
                                r = send_invoke_result(fd, json_get_string(msg, "id"), false, NULL, err);
                                if (r < 0)
                                        return log_error_errno(r, "Failed to answer: %m");
                                continue;
                        }
                        runs[n_runs++] = run;
                }
        }
}

/* ---- ps ---- */

int verb_ps(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("ps"), *reply = NULL;
        struct json_object *data, *arr;
        int r;

        r = ctl_query(ctx, req, "ps", &reply);
        if (r <= 0)
                return r;
        if (!json_object_object_get_ex(reply, "data", &data))
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "ps reply has no data.");

        printf("%-6s %-8s %-6s %-24s %-8s %s\n", "CLIENT", "PID", "UID", "SESSION", "WAITING", "PROVIDES");
        if (json_object_object_get_ex(data, "clients", &arr))
                for (size_t i = 0; i < json_object_array_length(arr); i++) {
                        struct json_object *c = json_object_array_get_idx(arr, i), *v, *p;
                        int64_t id = 0, pid = 0, uid = 0, waiting = 0;
                        char provides[256] = "";

                        (void) json_get_int64(c, "id", false, &id);
                        (void) json_get_int64(c, "pid", false, &pid);
                        (void) json_get_int64(c, "uid", false, &uid);
                        (void) json_get_int64(c, "waitingCalls", false, &waiting);
                        if (json_object_object_get_ex(c, "provides", &v))
                                for (size_t k = 0; k < json_object_array_length(v); k++) {
                                        p = json_object_array_get_idx(v, k);
                                        size_t l = strlen(provides);
                                        snprintf(provides + l, sizeof(provides) - l, "%s%s", l ? "," : "",
                                                 json_object_get_string(p));
                                }
                        printf("%-6" PRIi64 " %-8" PRIi64 " %-6" PRIi64 " %-24s %-8" PRIi64 " %s\n", id, pid, uid,
                               json_get_string(c, "sessionId") ?: "-", waiting, provides[0] ? provides : "-");
                }

        if (json_object_object_get_ex(data, "providers", &arr) && json_object_array_length(arr) > 0) {
                printf("\n%-24s %-10s %s\n", "PHOTON", "PROVIDERS", "RUNNING");
                for (size_t i = 0; i < json_object_array_length(arr); i++) {
                        struct json_object *p = json_object_array_get_idx(arr, i), *v;
                        int64_t running = 0;

                        (void) json_get_int64(p, "runningCalls", false, &running);
                        printf("%-24s %-10zu %" PRIi64 "\n", json_get_string(p, "photonName") ?: "?",
                               json_object_object_get_ex(p, "providers", &v) ? json_object_array_length(v) : 0,
                               running);
                }
        }

        if (json_object_object_get_ex(data, "calls", &arr) && json_object_array_length(arr) > 0) {
                printf("\n%-12s %-32s %-9s %-9s %s\n", "CALL", "PHOTON/METHOD", "TRIGGER", "VIA", "AGE");
                for (size_t i = 0; i < json_object_array_length(arr); i++) {
                        struct json_object *call = json_object_array_get_idx(arr, i);
                        char what[160], age[32];
                        int64_t ms = 0;

                        (void) json_get_int64(call, "ageMs", false, &ms);
                        snprintf(what, sizeof(what), "%s/%s", json_get_string(call, "photonName") ?: "?",
                                 json_get_string(call, "method") ?: "?");
                        ctl_format_duration(age, sizeof(age), ms);
                        printf("%-12s %-32s %-9s %-9s %s\n", json_get_string(call, "id") ?: "?", what,
                               json_get_string(call, "trigger") ?: "?", json_get_string(call, "via") ?: "?", age);
                }
        }

        {
                int64_t jobs = 0;
                (void) json_get_int64(data, "jobs", false, &jobs);
                printf("\n%" PRIi64 " scheduled job%s\n", jobs, jobs == 1 ? "" : "s");
        }
        return 0;
}
