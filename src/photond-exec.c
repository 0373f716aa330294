/* SPDX-License-Identifier: MIT */

/* Executable handlers (photond-exec.h). A handler runs in a child of its own process group: the call's arguments
 * go to its stdin as one JSON line, its stdout is the result (dispatch_parse_output()), its stderr is logged line
 * by line and its tail ends up in the failure messages. The child is reaped through sd_event_add_child(); after
 * the exit, a grandchild holding the pipes open gets a short grace. The call's timeout answers the caller at once
 * and moves the process to the runner's terminating list (SIGTERM, SIGKILL after the kill grace), where it counts
 * against MAX_CALLS until it is reaped. */

#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "event-util.h"
#include "fd-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-exec.h"
#include "photond-limits.h"
#include "string-util.h"

/* After the handler exits, how long a grandchild may keep its stdout/stderr open before we stop waiting. */
#define EXIT_GRACE_USEC (100 * USEC_PER_MSEC)
/* Longest stderr line logged as one journal entry; the rest of the line is cut. */
#define STDERR_LINE_MAX 1024

typedef enum ExecPhase {
        EXEC_RUNNING,
        EXEC_TERM_SENT,         /* timed out, the call answered: SIGTERM sent, SIGKILL after the grace */
        EXEC_KILL_SENT,
        EXEC_EXITED,            /* reaped; waiting (briefly) for EOF on stdout/stderr */
} ExecPhase;

struct ExecChild {
        ExecRunner *runner;
        /* the caller: done is NULL once it was called; the names are borrowed from it while it waits */
        ExecDoneCallback done;
        void *userdata;
        const char *photon, *method;
        DispatchTrigger trigger;
        const char *job_id_ref;
        uint64_t timeout_ms;
        sd_event_source *timer_source;          /* the caller's, for the exit grace */

        bool terminating;       /* timed out: on the runner's terminating list until reaped */
        LIST_FIELDS(ExecChild, terminating);
        sd_event_source *kill_timer_source;     /* terminating: SIGKILL when the grace is over */
        char *name;                             /* terminating: "photon/method", for the log */
        char *job_id;                           /* terminating: the job whose run this was, if any */

        pid_t pid;              /* also the process group */
        ExecPhase phase;
        sd_event_source *child_source;
        sd_event_source *stdin_source, *stdout_source, *stderr_source;
        int stdin_fd, stdout_fd, stderr_fd;

        char *input;
        size_t input_size, input_offset;

        char *out;
        size_t out_size, out_alloc;

        TailBuf err_tail;
        char err_line[STDERR_LINE_MAX];
        size_t err_line_size;
        bool err_line_cut;
        uint64_t err_logged;

        int exit_code, exit_status;    /* from waitid(): CLD_*, status or signal */
        int out_error;                  /* reading stdout failed: the output is incomplete */
        bool exited:1;
        bool too_large:1;
};

struct ExecRunner {
        sd_event *event;
        char *home;                     /* HOME for handlers */

        /* Timed-out handlers between SIGTERM and their reaping: their calls are answered already, but the
         * processes still count against MAX_CALLS, so that callers cannot pile them up faster than they die. */
        LIST_HEAD(ExecChild, terminating);
        unsigned n_terminating;
};

void exec_child_free(ExecChild *x) {
        if (!x)
                return;
        if (x->child_source && !x->exited) {
                /* Only on dispatcher_free(): let sd-event kill and reap what is left. */
                (void) kill(-x->pid, SIGKILL);
                (void) sd_event_source_set_child_process_own(x->child_source, true);
        }
        if (x->terminating) {
                LIST_REMOVE(terminating, x->runner->terminating, x);
                x->runner->n_terminating--;
        }
        sd_event_source_disable_unref(x->kill_timer_source);
        sd_event_source_disable_unref(x->child_source);
        sd_event_source_disable_unref(x->stdin_source);
        sd_event_source_disable_unref(x->stdout_source);
        sd_event_source_disable_unref(x->stderr_source);
        safe_close(x->stdin_fd);
        safe_close(x->stdout_fd);
        safe_close(x->stderr_fd);
        free(x->input);
        free(x->out);
        free(x->name);
        free(x->job_id);
        free(x);
}

/* Tells the caller the outcome (data is taken), once. */
static void exec_complete(ExecChild *x, bool success, struct json_object *data, const char *error) {
        ExecDoneCallback done = x->done;

        if (!done) {
                json_object_put(data);
                return;
        }
        x->done = NULL;
        done(success, data, error, x->userdata);
}

static void exec_fail(ExecChild *x, const char *fmt, ...) _printf_(2, 3);
static void exec_fail(ExecChild *x, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        exec_complete(x, false, NULL, msg ?: "Method failed (out of memory)");
}

static void exec_maybe_finish(ExecChild *x);

static int fd_move_above_stdio(int fd) {
        int n;

        /* A daemon started with stdio closed would get pipe ends 0-2, which the dup2() plan would clobber. */
        if (fd > STDERR_FILENO)
                return fd;
        n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        safe_close(fd);
        return n < 0 ? -errno : n;
}

static int pipe_for_child(int ret[2], bool parent_reads) {
        int p[2], r;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        p[0] = fd_move_above_stdio(p[0]);
        p[1] = fd_move_above_stdio(p[1]);
        if (p[0] < 0 || p[1] < 0) {
                r = p[0] < 0 ? p[0] : p[1];
                safe_close(p[0]);
                safe_close(p[1]);
                return r;
        }
        /* Only our end is non-blocking: the handler sees ordinary blocking stdio. */
        if (fcntl(p[parent_reads ? 0 : 1], F_SETFL, O_NONBLOCK) < 0) {
                r = -errno;
                safe_close(p[0]);
                safe_close(p[1]);
                return r;
        }
        ret[0] = p[0];
        ret[1] = p[1];
        return 0;
}

static void exec_close_stdin(ExecChild *x) {
        x->stdin_source = sd_event_source_disable_unref(x->stdin_source);
        x->stdin_fd = safe_close(x->stdin_fd);
        x->input = mfree(x->input);
}

/* Returns 1 when more is to be written later, 0 when done (written, or the handler closed its stdin). */
static int exec_write_input(ExecChild *x) {
        while (x->input_offset < x->input_size) {
                ssize_t n = write(x->stdin_fd, x->input + x->input_offset, x->input_size - x->input_offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 1;
                        /* EPIPE: a handler need not read its arguments. */
                        break;
                }
                x->input_offset += n;
        }
        exec_close_stdin(x);
        return 0;
}

static int on_exec_stdin(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ExecChild *x = userdata;

        (void) exec_write_input(x);
        return 0;
}

static void exec_kill(ExecChild *x, int sig) {
        /* The whole group: a handler's own children go with it. */
        if (kill(-x->pid, sig) < 0 && errno != ESRCH)
                log_debug_errno(errno, "Failed to signal process group %d: %m", (int) x->pid);
}

static void exec_close_stdout(ExecChild *x) {
        x->stdout_source = sd_event_source_disable_unref(x->stdout_source);
        x->stdout_fd = safe_close(x->stdout_fd);
}

static void exec_close_stderr(ExecChild *x) {
        x->stderr_source = sd_event_source_disable_unref(x->stderr_source);
        x->stderr_fd = safe_close(x->stderr_fd);
}

/* Reads what is available. Returns 1 on EOF (or a read error), 0 otherwise. */
static int exec_read_stdout(ExecChild *x) {
        uint64_t cap = limits.HANDLER_MAX_OUTPUT_BYTES;

        for (;;) {
                ssize_t n;

                if (x->out_alloc - x->out_size < 16384) {
                        size_t na = MAX(x->out_alloc * 2, (size_t) 65536);
                        char *p;

                        /* One byte over the cap is enough to know the output is too large. */
                        na = MIN(na, (size_t) cap + 1);
                        if (na <= x->out_size) {
                                x->too_large = true;
                                return 1;
                        }
                        p = realloc(x->out, na);
                        if (!p) {
                                x->out_error = -ENOMEM;
                                return 1;
                        }
                        x->out = p;
                        x->out_alloc = na;
                }

                n = read(x->stdout_fd, x->out + x->out_size, x->out_alloc - x->out_size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        x->out_error = -errno;
                        return 1;
                }
                if (n == 0)
                        return 1;
                x->out_size += n;
                if (x->out_size > cap) {
                        x->too_large = true;
                        return 1;
                }
        }
}

static int on_exec_stdout(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ExecChild *x = userdata;

        if (exec_read_stdout(x) == 0)
                return 0;
        exec_close_stdout(x);
        if (x->too_large) {
                log_warning("Handler %s/%s (pid %d) wrote more than %" PRIu64 " bytes to stdout, killing it.",
                            x->photon, x->method, (int) x->pid, limits.HANDLER_MAX_OUTPUT_BYTES);
                exec_kill(x, SIGKILL);
        } else if (x->out_error < 0) {
                log_warning_errno(x->out_error, "Failed to read the output of handler %s/%s (pid %d), killing it: %m",
                                  x->photon, x->method, (int) x->pid);
                exec_kill(x, SIGKILL);
        }
        exec_maybe_finish(x);
        return 0;
}

static void exec_log_line(ExecChild *x, const char *line, size_t len, bool cut) {

        if (x->err_logged >= limits.HANDLER_MAX_LOG_BYTES)
                return;
        x->err_logged += len;
        log_info("%s/%s[%d]: %.*s%s", x->photon, x->method, (int) x->pid, (int) len, line,
                 cut ? "…" : "");
        if (x->err_logged >= limits.HANDLER_MAX_LOG_BYTES)
                log_info("%s/%s[%d]: further stderr output not logged (PHOTOND_HANDLER_MAX_LOG_BYTES=%" PRIu64 ").",
                         x->photon, x->method, (int) x->pid, limits.HANDLER_MAX_LOG_BYTES);
}

static void exec_feed_stderr(ExecChild *x, const char *buf, size_t size) {

        tail_buf_append(&x->err_tail, buf, size);
        for (size_t i = 0; i < size; i++) {
                if (buf[i] == '\n') {
                        if (x->err_line_size > 0 || !x->err_line_cut)
                                exec_log_line(x, x->err_line, x->err_line_size, x->err_line_cut);
                        x->err_line_size = 0;
                        x->err_line_cut = false;
                        continue;
                }
                if (x->err_line_cut)
                        continue;
                if (x->err_line_size == sizeof(x->err_line)) {
                        exec_log_line(x, x->err_line, x->err_line_size, true);
                        x->err_line_size = 0;
                        x->err_line_cut = true;
                        continue;
                }
                x->err_line[x->err_line_size++] = buf[i];
        }
}

static int exec_read_stderr(ExecChild *x) {
        char buf[16384];

        for (;;) {
                ssize_t n = read(x->stderr_fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : 1;
                }
                if (n == 0)
                        return 1;
                exec_feed_stderr(x, buf, n);
        }
}

static int on_exec_stderr(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ExecChild *x = userdata;

        if (exec_read_stderr(x) == 0)
                return 0;
        exec_close_stderr(x);
        exec_maybe_finish(x);
        return 0;
}

static void exec_finish(ExecChild *x) {
        _cleanup_free_ char *tail = NULL, *msg = NULL;
        struct json_object *data = NULL;
        int r;

        /* Whatever is still readable, then nothing is left behind in the process group. */
        if (x->stdout_fd >= 0) {
                (void) exec_read_stdout(x);
                exec_close_stdout(x);
        }
        if (x->stderr_fd >= 0) {
                (void) exec_read_stderr(x);
                exec_close_stderr(x);
        }
        if (x->err_line_size > 0)
                exec_log_line(x, x->err_line, x->err_line_size, x->err_line_cut);
        x->err_line_size = 0;
        exec_kill(x, SIGKILL);
        exec_close_stdin(x);

        tail = tail_buf_text(&x->err_tail);

        if (x->too_large) {
                exec_fail(x, "Handler %s/%s output too large (over %" PRIu64 " bytes, PHOTOND_HANDLER_MAX_OUTPUT_BYTES)",
                          x->photon, x->method, limits.HANDLER_MAX_OUTPUT_BYTES);
                return;
        }
        if (x->out_error < 0) {
                exec_fail(x, "Handler %s/%s: cannot read its output: %s", x->photon, x->method,
                          strerror(-x->out_error));
                return;
        }
        if (x->exit_code != CLD_EXITED || x->exit_status != 0) {
                msg = dispatch_exit_message(x->photon, x->method, x->exit_code, x->exit_status, tail);
                exec_complete(x, false, NULL, msg ?: "Handler failed");
                return;
        }

        r = dispatch_parse_output(x->out, x->out_size, &data);
        if (r < 0) {
                exec_fail(x, "Handler %s/%s: cannot read its output: %s", x->photon, x->method,
                          strerror(-r));
                return;
        }
        exec_complete(x, true, data, NULL);
}

static void exec_maybe_finish(ExecChild *x) {
        int r;

        if (!x->done || !x->exited)
                return;
        if (x->stdout_fd < 0 && x->stderr_fd < 0) {
                exec_finish(x);
                return;
        }
        if (x->phase == EXEC_EXITED)
                return;

        /* The handler is gone but something (a grandchild) still holds its output open: wait briefly. */
        x->phase = EXEC_EXITED;
        r = event_source_arm_relative(x->timer_source, EXIT_GRACE_USEC);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the exit grace timer, finishing now: %m");
                exec_finish(x);
        }
}

static int on_exec_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        ExecChild *x = userdata;

        x->exited = true;
        if (x->terminating) {
                /* A timed-out handler is gone at last; what it left in its group goes with it. */
                log_debug("Timed-out handler %s (pid %d) ended: code %d status %d.", x->name ?: "?", (int) x->pid,
                          si->si_code, si->si_status);
                exec_kill(x, SIGKILL);
                exec_child_free(x);
                return 0;
        }
        x->exit_code = si->si_code;
        x->exit_status = si->si_status;
        log_debug("Handler %s/%s (pid %d) ended: code %d status %d.", x->photon, x->method,
                  (int) x->pid, si->si_code, si->si_status);
        exec_maybe_finish(x);
        return 0;
}

/* Writes "photond: cannot execute <path> (errno N)" with async-signal-safe calls only. */
static void child_report_exec_failure(const char *path, int error) {
        char num[16];
        size_t n = sizeof(num);

        do {
                num[--n] = (char) ('0' + error % 10);
                error /= 10;
        } while (error > 0 && n > 0);
        (void) !write(STDERR_FILENO, "photond: cannot execute ", 24);
        (void) !write(STDERR_FILENO, path, strlen(path));
        (void) !write(STDERR_FILENO, " (errno ", 8);
        (void) !write(STDERR_FILENO, num + n, sizeof(num) - n);
        (void) !write(STDERR_FILENO, ")\n", 2);
}

/* In the vfork()ed child, which borrows photond's memory until execve(): plain system calls only, nothing that
 * writes to the heap or returns. */
_noreturn_ static void exec_child(const char *path, char **argv, char **env, const char *cwd, int in, int out,
                                  int err) {
        /* SIG_DFL is 0, so an all-zero kernel sigaction means "default, no flags, empty mask" whatever the
         * architecture's layout of that struct is. */
        static const uint64_t default_action[8] = {};
        sigset_t none;

        /* Its own process group, so a timeout or cleanup reaches everything the handler started. */
        (void) setpgid(0, 0);

        if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0)
                _exit(127);
        if (close_range(3, ~0U, 0) < 0)
                for (int fd = 3; fd < 65536; fd++)
                        (void) close(fd);

        /* Default dispositions (photond ignores SIGPIPE, and may have inherited ignored signals) and an empty mask
         * (sd-event blocks SIGTERM, SIGCHLD...). The raw system call, because glibc's sigaction() refuses its
         * internal signals 32 and 33, and an "ignored" inherited from photond's parent (make does that) would
         * otherwise survive execve() into the handler. */
        for (int sig = 1; sig < _NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) syscall(SYS_rt_sigaction, sig, default_action, NULL, (_NSIG - 1) / 8);
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);

        if (chdir(cwd) < 0)
                (void) !chdir("/");
        execve(path, argv, env);
        child_report_exec_failure(path, errno);
        _exit(127);
}

int exec_child_spawn(ExecRunner *runner, const ExecSpec *spec, ExecDoneCallback cb, void *userdata,
                     ExecChild **ret) {
        _cleanup_(dispatch_strv_freep) char **env = NULL;
        int in[2] = { -EBADF, -EBADF }, out[2] = { -EBADF, -EBADF }, err[2] = { -EBADF, -EBADF };
        const char *path = spec->path;
        char *argv[] = { (char*) path, spec->method_arg ? (char*) spec->method : NULL, NULL };
        sigset_t all, saved;
        const char *json;
        ExecChild *x;
        size_t len;
        pid_t pid;
        int r;

        r = dispatch_build_env(runner->home, spec->photon, spec->method, spec->trigger, spec->job_id, &env);
        if (r < 0)
                return r;

        /* Owned by the caller from here: exec_child_free() releases whatever was set up. */
        x = *ret = new0(ExecChild, 1);
        if (!x)
                return -ENOMEM;
        x->runner = runner;
        x->done = cb;
        x->userdata = userdata;
        x->photon = spec->photon;
        x->method = spec->method;
        x->trigger = spec->trigger;
        x->job_id_ref = spec->job_id;
        x->timeout_ms = spec->timeout_ms;
        x->timer_source = spec->timer_source;
        x->stdin_fd = x->stdout_fd = x->stderr_fd = -EBADF;

        json = json_object_to_json_string_length(spec->args, JSON_FORMAT_FLAGS, &len);
        if (!json)
                return -ENOMEM;
        x->input = malloc(len + 1);
        if (!x->input)
                return -ENOMEM;
        memcpy(x->input, json, len);
        x->input[len] = '\n';
        x->input_size = len + 1;

        if ((r = pipe_for_child(in, false)) < 0 ||
            (r = pipe_for_child(out, true)) < 0 ||
            (r = pipe_for_child(err, true)) < 0)
                goto fail;

        /* vfork(): the child borrows our memory until execve() instead of copying our page tables, which made
         * starting a handler 2-3 times faster than fork() (measured). No signal handler may run in the borrowed
         * memory meanwhile, so everything is blocked until the child has reset its dispositions. */
        sigfillset(&all);
        if (sigprocmask(SIG_SETMASK, &all, &saved) < 0) {
                r = -errno;
                goto fail;
        }
        pid = vfork();
        if (pid == 0)
                exec_child(path, argv, env, spec->cwd, in[0], out[1], err[1]);
        r = pid < 0 ? -errno : 0;
        (void) sigprocmask(SIG_SETMASK, &saved, NULL);
        if (r < 0)
                goto fail;

        /* Both sides call setpgid(), so the group exists before we might signal it. */
        (void) setpgid(pid, pid);

        x->pid = pid;
        safe_close(in[0]);
        safe_close(out[1]);
        safe_close(err[1]);
        x->stdin_fd = in[1];
        x->stdout_fd = out[0];
        x->stderr_fd = err[0];

        /* From here on the child exists: exec_child_free() kills it and its child source reaps it. */
        r = sd_event_add_child(runner->event, &x->child_source, pid, WEXITED, on_exec_exit, x);
        if (r < 0) {
                (void) kill(-pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                x->exited = true;
                return r;
        }
        (void) sd_event_source_set_description(x->child_source, "handler-exit");

        r = sd_event_add_io(runner->event, &x->stdout_source, x->stdout_fd, EPOLLIN, on_exec_stdout, x);
        if (r >= 0)
                r = sd_event_add_io(runner->event, &x->stderr_source, x->stderr_fd, EPOLLIN, on_exec_stderr,
                                    x);
        if (r >= 0 && exec_write_input(x) > 0)
                r = sd_event_add_io(runner->event, &x->stdin_source, x->stdin_fd, EPOLLOUT, on_exec_stdin,
                                    x);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(x->stdout_source, "handler-stdout");
        (void) sd_event_source_set_description(x->stderr_source, "handler-stderr");
        if (x->stdin_source)
                (void) sd_event_source_set_description(x->stdin_source, "handler-stdin");

        log_debug("Started handler %s for %s/%s (pid %d, %s).", path, x->photon, x->method, (int) pid,
                  dispatch_trigger_to_string(x->trigger));
        return 0;

fail:
        for (unsigned i = 0; i < 2; i++) {
                safe_close(in[i]);
                safe_close(out[i]);
                safe_close(err[i]);
        }
        return r;
}

static int on_terminating_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ExecChild *x = userdata;

        log_warning("Handler %s (pid %d) ignored SIGTERM, sending SIGKILL.", x->name ?: "?", (int) x->pid);
        x->phase = EXEC_KILL_SENT;
        exec_kill(x, SIGKILL);
        return 0;
}

/* The call's timeout: the caller is answered now, whatever the handler does with its SIGTERM. The process moves
 * to the runner's terminating list, where the kill grace runs and the child source reaps it; its pipes are
 * closed, so what it writes from now on is lost (and a write gets EPIPE). */
static void exec_time_out(ExecChild *x) {
        ExecRunner *runner = x->runner;
        _cleanup_free_ char *tail = NULL;
        int r;

        log_warning("Handler %s/%s (pid %d) timed out after %" PRIu64 " ms, sending SIGTERM.",
                    x->photon, x->method, (int) x->pid, x->timeout_ms);
        exec_kill(x, SIGTERM);

        /* The stderr that is already there explains the timeout best. */
        if (x->stderr_fd >= 0)
                (void) exec_read_stderr(x);
        if (x->err_line_size > 0)
                exec_log_line(x, x->err_line, x->err_line_size, x->err_line_cut);
        x->err_line_size = 0;
        tail = tail_buf_text(&x->err_tail);
        exec_close_stdout(x);
        exec_close_stderr(x);
        exec_close_stdin(x);

        if (asprintf(&x->name, "%s/%s", x->photon, x->method) < 0)
                x->name = NULL;
        /* Not fatal if it fails: the job could then start its next run during the grace. */
        x->job_id = x->job_id_ref ? strdup(x->job_id_ref) : NULL;
        x->terminating = true;
        x->timer_source = NULL;
        x->phase = EXEC_TERM_SENT;
        LIST_PREPEND(terminating, runner->terminating, x);
        runner->n_terminating++;
        r = sd_event_add_time_relative(runner->event, &x->kill_timer_source, CLOCK_MONOTONIC,
                                       limits.HANDLER_KILL_GRACE_MS * USEC_PER_MSEC, USEC_PER_MSEC,
                                       on_terminating_timer, x);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the kill grace timer, sending SIGKILL now: %m");
                x->phase = EXEC_KILL_SENT;
                exec_kill(x, SIGKILL);
        } else
                (void) sd_event_source_set_description(x->kill_timer_source, "handler-kill-grace");

        exec_fail(x, "Handler %s/%s timed out after %" PRIu64 " ms%s%s", x->photon, x->method,
                  x->timeout_ms, tail && tail[0] ? ": " : "", tail ?: "");
}

int exec_child_timer(ExecChild *x) {
        switch (x->phase) {
        case EXEC_RUNNING:
                exec_time_out(x);
                /* The caller forgets x now; its names go with it. */
                x->photon = x->method = x->job_id_ref = NULL;
                return 1;
        case EXEC_TERM_SENT:
        case EXEC_KILL_SENT:
                /* Only terminating children, which have a timer of their own. */
                break;
        case EXEC_EXITED:
                /* The exit grace is over: stop waiting for whoever holds the pipes. */
                exec_finish(x);
                break;
        }
        return 0;
}

void exec_child_kill(ExecChild *x) {
        if (x && !x->exited)
                exec_kill(x, SIGKILL);
}

pid_t exec_child_pid(ExecChild *x) {
        return x->pid;
}

int exec_runner_new(sd_event *event, ExecRunner **ret) {
        _cleanup_(exec_runner_freep) ExecRunner *r = NULL;
        const char *home = getenv("HOME");
        sigset_t ss;

        r = new0(ExecRunner, 1);
        if (!r)
                return -ENOMEM;
        r->event = event;

        if (!home || home[0] != '/') {
                struct passwd *pw = getpwuid(getuid());
                home = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : "/";
        }
        r->home = strdup(home);
        if (!r->home)
                return -ENOMEM;

        /* sd_event_add_child() requires SIGCHLD blocked (it reaps through pidfds, not a signal handler). */
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return -errno;

        *ret = TAKE_PTR(r);
        return 0;
}

ExecRunner* exec_runner_free(ExecRunner *r) {
        if (!r)
                return NULL;
        /* Killed and reaped by sd-event as their child sources go (exec_child_free()). */
        while (r->terminating)
                exec_child_free(r->terminating);
        free(r->home);
        return mfree(r);
}

unsigned exec_runner_n_terminating(ExecRunner *r) {
        return r->n_terminating;
}

bool exec_runner_job_ending(ExecRunner *r, const char *job_id) {
        /* At most MAX_CALLS entries, and looked at only when a job is due or asked to run. */
        LIST_FOREACH(terminating, x, r->terminating)
                if (streq_ptr(x->job_id, job_id))
                        return true;
        return false;
}
