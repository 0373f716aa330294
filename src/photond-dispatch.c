/* SPDX-License-Identifier: MIT */

/* Method dispatch. A call (a `command` request, a job firing, a webhook) runs on a provider connection of its
 * photon (round-robin over several) or, without one, on an executable handler under the handlers directory.
 *
 * A call lives in three steps: running (it holds a provider slot or a child process with its pipes), done
 * (outcome recorded, resources released, queued) and delivered (reply, state-changed, callback; freed). Delivery
 * happens from a defer source, never on the stack of whatever finished the call. That keeps two promises: a
 * DispatchCallback never runs inside dispatcher_call(), and no call is freed while code up the stack (a send that
 * made a client disconnect, a disconnect that fails other calls) still holds it. */

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uthash.h>

#include "event-util.h"
#include "json-util.h"
#include "log.h"
#include "photond-channel.h"
#include "photond-client.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "photond-schedule.h"
#include "string-util.h"

#define INVOKE_ID_PREFIX "inv_"

/* After the handler exits, how long a grandchild may keep its stdout/stderr open before we stop waiting. */
#define EXIT_GRACE_USEC (100 * USEC_PER_MSEC)
/* Longest stderr line logged as one journal entry; the rest of the line is cut. */
#define STDERR_LINE_MAX 1024

typedef struct Provider Provider;

typedef struct PhotonEntry {
        UT_hash_handle hh;
        LIST_HEAD(Provider, providers);
        Provider *rr_next;              /* the provider the next call goes to */
        unsigned n_providers;
        unsigned n_calls;               /* calls of this photon not yet delivered */
        char name[];
} PhotonEntry;

struct Provider {
        PhotonEntry *photon;
        Client *client;
        LIST_FIELDS(Provider, by_photon);
        LIST_FIELDS(Provider, by_client);       /* the list head is client->provider */
        unsigned n_calls;
        uint64_t n_served;
};

typedef enum ExecPhase {
        EXEC_RUNNING,
        EXEC_TERM_SENT,         /* timed out, the call answered: SIGTERM sent, SIGKILL after the grace */
        EXEC_KILL_SENT,
        EXEC_EXITED,            /* reaped; waiting (briefly) for EOF on stdout/stderr */
} ExecPhase;

typedef struct ExecChild ExecChild;

struct ExecChild {
        Dispatcher *dispatcher;
        DispatchCall *call;     /* NULL once timed out: then on the dispatcher's terminating list until reaped */
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

typedef enum CallState {
        CALL_RUNNING,
        CALL_DONE,
} CallState;

struct DispatchCall {
        Dispatcher *dispatcher;
        LIST_FIELDS(DispatchCall, calls);
        LIST_FIELDS(DispatchCall, done);
        UT_hash_handle hh;              /* by serial, for invoke ids */
        uint64_t serial;
        char invoke_id[32];
        CallState state;

        PhotonEntry *photon;
        char *method;
        struct json_object *args;       /* never NULL */
        DispatchTrigger trigger;
        char *job_id;
        uint64_t timeout_ms;
        uint64_t started_usec;          /* CLOCK_MONOTONIC */
        sd_event_source *timer_source;

        /* a command: the requester (NULL once it disconnected) */
        bool is_command;
        Client *caller;
        char *caller_id;
        char *instance;
        char *session_id;
        /* a job or webhook */
        DispatchCallback callback;
        void *userdata;

        /* where it runs */
        Provider *provider;
        unsigned n_prompts;             /* prompts forwarded to the caller, not answered yet */
        ExecChild *exec;

        /* outcome */
        bool success;
        struct json_object *data;
        char *error;
        struct json_object *patch, *inverse_patch;
        uint64_t duration_ms;
};

struct Dispatcher {
        Manager *manager;
        DispatcherHooks hooks;
        char *home;                     /* HOME for handlers */

        PhotonEntry *photons;
        unsigned n_providers;
        unsigned n_photons_provided;

        LIST_HEAD(DispatchCall, calls);
        DispatchCall *calls_by_serial;
        unsigned n_calls;
        uint64_t next_serial;

        LIST_HEAD(DispatchCall, done);
        sd_event_source *done_event_source;
        bool freeing;

        /* Timed-out handlers between SIGTERM and their reaping: their calls are answered already, but the
         * processes still count against MAX_CALLS, so that callers cannot pile them up faster than they die. */
        LIST_HEAD(ExecChild, terminating);
        unsigned n_terminating;
};

static const char *const dispatch_error_table[_DISPATCH_ERROR_MAX] = {
        [DISPATCH_ERROR_SHUTTING_DOWN]  = "shutting-down",
        [DISPATCH_ERROR_BUSY]           = "busy",
        [DISPATCH_ERROR_PHOTON_BUSY]    = "photon-busy",
        [DISPATCH_ERROR_NO_PROVIDER]    = "no-provider",
        [DISPATCH_ERROR_NO_METHOD]      = "no-method",
        [DISPATCH_ERROR_NOT_EXECUTABLE] = "not-executable",
        [DISPATCH_ERROR_UNSAFE_HANDLER] = "unsafe-handler",
        [DISPATCH_ERROR_INVALID_NAME]   = "invalid-name",
        [DISPATCH_ERROR_PROVIDER_GONE]  = "provider-gone",
        [DISPATCH_ERROR_SPAWN_FAILED]   = "spawn-failed",
        [DISPATCH_ERROR_INTERNAL]       = "internal",
};

const char* dispatch_error_to_string(DispatchError e) {
        if (e < 0 || e >= _DISPATCH_ERROR_MAX)
                return NULL;
        return dispatch_error_table[e];
}

static const char *const dispatch_error_suggestion_table[_DISPATCH_ERROR_MAX] = {
        [DISPATCH_ERROR_SHUTTING_DOWN]  = "Retry after the daemon restarts",
        [DISPATCH_ERROR_BUSY]           = "Retry later",
        [DISPATCH_ERROR_PHOTON_BUSY]    = "Retry later",
        [DISPATCH_ERROR_NO_PROVIDER]    = "Start a provider (photonctl provide PHOTON -- CMD) or install an executable "
                                          "handler",
        [DISPATCH_ERROR_NOT_EXECUTABLE] = "Make the handler executable (chmod +x)",
        [DISPATCH_ERROR_PROVIDER_GONE]  = "Retry: another provider or the handler takes the call",
};

const char* dispatch_error_suggestion(DispatchError e) {
        if (e < 0 || e >= _DISPATCH_ERROR_MAX)
                return NULL;
        return dispatch_error_suggestion_table[e];
}

void dispatch_failure_done(DispatchFailure *f) {
        if (f)
                f->message = mfree(f->message);
}

/* ---- photon entries and providers ---- */

static PhotonEntry* photon_find(Dispatcher *d, const char *name) {
        PhotonEntry *e = NULL;

        HASH_FIND_STR(d->photons, name, e);
        return e;
}

static int photon_get(Dispatcher *d, const char *name, PhotonEntry **ret) {
        PhotonEntry *e = photon_find(d, name);
        size_t l;

        if (!e) {
                l = strlen(name);
                e = calloc(1, sizeof(PhotonEntry) + l + 1);
                if (!e)
                        return -ENOMEM;
                memcpy(e->name, name, l + 1);
                HASH_ADD(hh, d->photons, name[0], l, e);
        }
        *ret = e;
        return 0;
}

static void photon_gc(Dispatcher *d, PhotonEntry *e) {
        if (!e || e->n_providers > 0 || e->n_calls > 0)
                return;
        HASH_DEL(d->photons, e);
        free(e);
}

static Provider* provider_free(Dispatcher *d, Provider *p) {
        PhotonEntry *e;

        if (!p)
                return NULL;
        e = p->photon;
        if (e->rr_next == p)
                e->rr_next = p->by_photon_next;
        LIST_REMOVE(by_photon, e->providers, p);
        e->n_providers--;
        if (e->n_providers == 0)
                d->n_photons_provided--;
        d->n_providers--;
        if (p->client) {
                Provider *head = p->client->provider;
                LIST_REMOVE(by_client, head, p);
                p->client->provider = head;
        }
        photon_gc(d, e);
        return mfree(p);
}

static Provider* provider_pick(PhotonEntry *e) {
        Provider *p = e->rr_next ?: e->providers;

        if (p)
                e->rr_next = p->by_photon_next;
        return p;
}

/* ---- calls ---- */

static void exec_child_free(ExecChild *x) {
        if (!x)
                return;
        if (x->child_source && !x->exited) {
                /* Only on dispatcher_free(): let sd-event kill and reap what is left. */
                (void) kill(-x->pid, SIGKILL);
                (void) sd_event_source_set_child_process_own(x->child_source, true);
        }
        if (!x->call && x->dispatcher) {
                LIST_REMOVE(terminating, x->dispatcher->terminating, x);
                x->dispatcher->n_terminating--;
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

static DispatchCall* call_free(DispatchCall *call) {
        Dispatcher *d;

        if (!call)
                return NULL;
        d = call->dispatcher;

        if (call->photon) {
                call->photon->n_calls--;
                photon_gc(d, call->photon);
        }
        if (call->provider)
                call->provider->n_calls--;
        if (call->caller)
                call->caller->n_calls--;
        exec_child_free(call->exec);
        sd_event_source_disable_unref(call->timer_source);
        json_object_put(call->args);
        json_object_put(call->data);
        json_object_put(call->patch);
        json_object_put(call->inverse_patch);
        free(call->error);
        free(call->method);
        free(call->job_id);
        free(call->caller_id);
        free(call->instance);
        free(call->session_id);
        return mfree(call);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(DispatchCall*, call_free);

static void call_unlink(DispatchCall *call) {
        Dispatcher *d = call->dispatcher;

        LIST_REMOVE(calls, d->calls, call);
        HASH_DELETE(hh, d->calls_by_serial, call);
        d->n_calls--;
}

/* Records the outcome (data is taken, error copied) and queues the call for delivery. Releases the provider
 * slot; an exec call comes here only after its child was reaped or, timed out, handed to the dispatcher's
 * terminating list. Never sends anything. */
static void call_complete(DispatchCall *call, bool success, struct json_object *data, const char *error) {
        Dispatcher *d = call->dispatcher;

        if (call->state != CALL_RUNNING) {
                json_object_put(data);
                return;
        }
        call->state = CALL_DONE;
        call->success = success;
        call->data = data;
        if (!success) {
                call->error = strdup(error ?: "Method failed");
                if (!call->error)
                        log_oom();
        }
        call->duration_ms = (now_usec(CLOCK_MONOTONIC) - call->started_usec) / USEC_PER_MSEC;

        if (call->provider) {
                call->provider->n_calls--;
                call->provider->n_served++;
                call->provider = NULL;
        }
        call->n_prompts = 0;
        call->timer_source = sd_event_source_disable_unref(call->timer_source);

        LIST_PREPEND(done, d->done, call);
        (void) sd_event_source_set_enabled(d->done_event_source, SD_EVENT_ONESHOT);
}

static void call_fail(DispatchCall *call, const char *fmt, ...) _printf_(2, 3);
static void call_fail(DispatchCall *call, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        call_complete(call, false, NULL, msg ?: "Method failed (out of memory)");
}

static struct json_object* json_ref_or_null(struct json_object *o) {
        return o ? json_object_get(o) : NULL;
}

static int json_add_nullable(struct json_object *o, const char *key, struct json_object *value) {
        /* json-c represents JSON null as NULL, which json_add() reads as an allocation failure. */
        return json_object_object_add(o, key, value) < 0 ? -ENOMEM : 0;
}

static void command_publish_state_changed(DispatchCall *call) {
        Manager *m = call->dispatcher->manager;
        _cleanup_(json_object_putp) struct json_object *ev = NULL;
        _cleanup_free_ char *channel = NULL, *uri = NULL;
        const char *instance = call->instance ?: "default";
        int r;

        if (asprintf(&channel, "%s:%s:state-changed", call->photon->name, instance) < 0 ||
            asprintf(&uri, "photon://%s/%s", call->photon->name, instance) < 0) {
                log_oom();
                return;
        }
        ev = json_object_new_object();
        if (!ev ||
            json_add_string(ev, "event", "state-changed") < 0 ||
            json_add_string(ev, "method", call->method) < 0 ||
            json_add(ev, "params", json_object_get(call->args)) < 0 ||
            json_add_string(ev, "instance", instance) < 0 ||
            json_add_nullable(ev, "data", json_ref_or_null(call->data)) < 0 ||
            (call->patch && json_add(ev, "patch", json_object_get(call->patch)) < 0) ||
            (call->inverse_patch && json_add(ev, "inversePatch", json_object_get(call->inverse_patch)) < 0) ||
            json_add_string(ev, "uri", uri) < 0) {
                log_oom();
                return;
        }
        r = channels_publish(m->channels, channel, ev, call->caller ? &call->caller->subscriber : NULL,
                             NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to publish %s: %m", channel);
}

static void command_deliver(DispatchCall *call) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        Client *c = call->caller;

        if (c && !c->disconnected) {
                if (call->success) {
                        o = json_object_new_object();
                        if (!o ||
                            json_add_string(o, "type", "result") < 0 ||
                            json_add_string(o, "id", call->caller_id) < 0 ||
                            json_add_bool(o, "success", true) < 0 ||
                            json_add_nullable(o, "data", json_ref_or_null(call->data)) < 0 ||
                            json_add_int64(o, "durationMs", (int64_t) call->duration_ms) < 0)
                                log_oom();
                        else
                                (void) client_send_json(c, o);
                } else
                        (void) client_reply_error(c, call->caller_id, call->error ?: "Method failed", NULL);
        }

        /* The call changed the photon's state whether or not its requester is still there to hear it. */
        if (call->success && !call->dispatcher->freeing)
                command_publish_state_changed(call);
}

static void call_deliver(DispatchCall *call) {
        DispatchResult result = {
                .success = call->success,
                .data = call->data,
                .error = call->success ? NULL : (call->error ?: "Method failed"),
                .duration_ms = call->duration_ms,
        };

        if (call->is_command)
                command_deliver(call);
        else if (call->callback)
                call->callback(&result, call->userdata);
}

static int on_done(sd_event_source *s, void *userdata) {
        Dispatcher *d = userdata;
        DispatchCall *call;

        while ((call = d->done)) {
                LIST_REMOVE(done, d->done, call);
                call_unlink(call);
                call_deliver(call);
                call_free(call);
        }
        return 0;
}

/* ---- provider calls ---- */

static int provider_send_invoke(DispatchCall *call, Provider *p) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        o = json_object_new_object();
        if (!o ||
            json_add_string(o, "type", "invoke") < 0 ||
            json_add_string(o, "id", call->invoke_id) < 0 ||
            json_add_string(o, "photonName", call->photon->name) < 0 ||
            json_add_string(o, "method", call->method) < 0 ||
            json_add(o, "args", json_object_get(call->args)) < 0 ||
            json_add_string(o, "trigger", dispatch_trigger_to_string(call->trigger)) < 0 ||
            json_add_string(o, "jobId", call->job_id) < 0 ||
            json_add_string(o, "instanceName", call->instance) < 0 ||
            json_add_string(o, "sessionId", call->session_id) < 0)
                return -ENOMEM;

        return client_send_json(p->client, o);
}

static int send_prompt_response(DispatchCall *call, struct json_object *value) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        if (!call->provider || call->provider->client->disconnected)
                return 0;
        o = json_object_new_object();
        if (!o ||
            json_add_string(o, "type", "prompt_response") < 0 ||
            json_add_string(o, "id", call->invoke_id) < 0 ||
            json_add_nullable(o, "promptValue", json_ref_or_null(value)) < 0)
                return -ENOMEM;
        return client_send_json(call->provider->client, o);
}

/* ---- exec handlers ---- */

static void exec_maybe_finish(DispatchCall *call);

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
        DispatchCall *call = userdata;

        (void) exec_write_input(call->exec);
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
static int exec_read_stdout(DispatchCall *call) {
        ExecChild *x = call->exec;
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
        DispatchCall *call = userdata;
        ExecChild *x = call->exec;

        if (exec_read_stdout(call) == 0)
                return 0;
        exec_close_stdout(x);
        if (x->too_large) {
                log_warning("Handler %s/%s (pid %d) wrote more than %" PRIu64 " bytes to stdout, killing it.",
                            call->photon->name, call->method, (int) x->pid, limits.HANDLER_MAX_OUTPUT_BYTES);
                exec_kill(x, SIGKILL);
        } else if (x->out_error < 0) {
                log_warning_errno(x->out_error, "Failed to read the output of handler %s/%s (pid %d), killing it: %m",
                                  call->photon->name, call->method, (int) x->pid);
                exec_kill(x, SIGKILL);
        }
        exec_maybe_finish(call);
        return 0;
}

static void exec_log_line(DispatchCall *call, const char *line, size_t len, bool cut) {
        ExecChild *x = call->exec;

        if (x->err_logged >= limits.HANDLER_MAX_LOG_BYTES)
                return;
        x->err_logged += len;
        log_info("%s/%s[%d]: %.*s%s", call->photon->name, call->method, (int) x->pid, (int) len, line,
                 cut ? "…" : "");
        if (x->err_logged >= limits.HANDLER_MAX_LOG_BYTES)
                log_info("%s/%s[%d]: further stderr output not logged (PHOTOND_HANDLER_MAX_LOG_BYTES=%" PRIu64 ").",
                         call->photon->name, call->method, (int) x->pid, limits.HANDLER_MAX_LOG_BYTES);
}

static void exec_feed_stderr(DispatchCall *call, const char *buf, size_t size) {
        ExecChild *x = call->exec;

        tail_buf_append(&x->err_tail, buf, size);
        for (size_t i = 0; i < size; i++) {
                if (buf[i] == '\n') {
                        if (x->err_line_size > 0 || !x->err_line_cut)
                                exec_log_line(call, x->err_line, x->err_line_size, x->err_line_cut);
                        x->err_line_size = 0;
                        x->err_line_cut = false;
                        continue;
                }
                if (x->err_line_cut)
                        continue;
                if (x->err_line_size == sizeof(x->err_line)) {
                        exec_log_line(call, x->err_line, x->err_line_size, true);
                        x->err_line_size = 0;
                        x->err_line_cut = true;
                        continue;
                }
                x->err_line[x->err_line_size++] = buf[i];
        }
}

static int exec_read_stderr(DispatchCall *call) {
        char buf[16384];

        for (;;) {
                ssize_t n = read(call->exec->stderr_fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : 1;
                }
                if (n == 0)
                        return 1;
                exec_feed_stderr(call, buf, n);
        }
}

static int on_exec_stderr(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DispatchCall *call = userdata;

        if (exec_read_stderr(call) == 0)
                return 0;
        exec_close_stderr(call->exec);
        exec_maybe_finish(call);
        return 0;
}

static void exec_finish(DispatchCall *call) {
        ExecChild *x = call->exec;
        _cleanup_free_ char *tail = NULL, *msg = NULL;
        struct json_object *data = NULL;
        int r;

        /* Whatever is still readable, then nothing is left behind in the process group. */
        if (x->stdout_fd >= 0) {
                (void) exec_read_stdout(call);
                exec_close_stdout(x);
        }
        if (x->stderr_fd >= 0) {
                (void) exec_read_stderr(call);
                exec_close_stderr(x);
        }
        if (x->err_line_size > 0)
                exec_log_line(call, x->err_line, x->err_line_size, x->err_line_cut);
        x->err_line_size = 0;
        exec_kill(x, SIGKILL);
        exec_close_stdin(x);

        tail = tail_buf_text(&x->err_tail);

        if (x->too_large) {
                call_fail(call, "Handler %s/%s output too large (over %" PRIu64 " bytes, PHOTOND_HANDLER_MAX_OUTPUT_BYTES)",
                          call->photon->name, call->method, limits.HANDLER_MAX_OUTPUT_BYTES);
                return;
        }
        if (x->out_error < 0) {
                call_fail(call, "Handler %s/%s: cannot read its output: %s", call->photon->name, call->method,
                          strerror(-x->out_error));
                return;
        }
        if (x->exit_code != CLD_EXITED || x->exit_status != 0) {
                msg = dispatch_exit_message(call->photon->name, call->method, x->exit_code, x->exit_status, tail);
                call_complete(call, false, NULL, msg ?: "Handler failed");
                return;
        }

        r = dispatch_parse_output(x->out, x->out_size, &data);
        if (r < 0) {
                call_fail(call, "Handler %s/%s: cannot read its output: %s", call->photon->name, call->method,
                          strerror(-r));
                return;
        }
        call_complete(call, true, data, NULL);
}

static void exec_maybe_finish(DispatchCall *call) {
        ExecChild *x = call->exec;
        int r;

        if (call->state != CALL_RUNNING || !x->exited)
                return;
        if (x->stdout_fd < 0 && x->stderr_fd < 0) {
                exec_finish(call);
                return;
        }
        if (x->phase == EXEC_EXITED)
                return;

        /* The handler is gone but something (a grandchild) still holds its output open: wait briefly. */
        x->phase = EXEC_EXITED;
        r = event_source_arm_relative(call->timer_source, EXIT_GRACE_USEC);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the exit grace timer, finishing now: %m");
                exec_finish(call);
        }
}

static int on_exec_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        ExecChild *x = userdata;
        DispatchCall *call = x->call;

        x->exited = true;
        if (!call) {
                /* A timed-out handler is gone at last; what it left in its group goes with it. */
                log_debug("Timed-out handler %s (pid %d) ended: code %d status %d.", x->name ?: "?", (int) x->pid,
                          si->si_code, si->si_status);
                exec_kill(x, SIGKILL);
                exec_child_free(x);
                return 0;
        }
        x->exit_code = si->si_code;
        x->exit_status = si->si_status;
        log_debug("Handler %s/%s (pid %d) ended: code %d status %d.", call->photon->name, call->method,
                  (int) x->pid, si->si_code, si->si_status);
        exec_maybe_finish(call);
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

static int exec_spawn(DispatchCall *call, const char *path, bool method_arg) {
        Dispatcher *d = call->dispatcher;
        _cleanup_(dispatch_strv_freep) char **env = NULL;
        int in[2] = { -EBADF, -EBADF }, out[2] = { -EBADF, -EBADF }, err[2] = { -EBADF, -EBADF };
        char *argv[] = { (char*) path, method_arg ? call->method : NULL, NULL };
        sigset_t all, saved;
        const char *json;
        ExecChild *x;
        size_t len;
        pid_t pid;
        int r;

        r = dispatch_build_env(d->home, call->photon->name, call->method, call->trigger, call->job_id, &env);
        if (r < 0)
                return r;

        /* Owned by the call from here: call_free() releases whatever was set up. */
        x = call->exec = new0(ExecChild, 1);
        if (!x)
                return -ENOMEM;
        x->dispatcher = d;
        x->call = call;
        x->stdin_fd = x->stdout_fd = x->stderr_fd = -EBADF;

        json = json_object_to_json_string_length(call->args, JSON_FORMAT_FLAGS, &len);
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
                exec_child(path, argv, env, d->manager->handlers_dir, in[0], out[1], err[1]);
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

        /* From here on the child exists: call_free() kills it and its child source reaps it. */
        r = sd_event_add_child(d->manager->event, &x->child_source, pid, WEXITED, on_exec_exit, x);
        if (r < 0) {
                (void) kill(-pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                x->exited = true;
                return r;
        }
        (void) sd_event_source_set_description(x->child_source, "handler-exit");

        r = sd_event_add_io(d->manager->event, &x->stdout_source, x->stdout_fd, EPOLLIN, on_exec_stdout, call);
        if (r >= 0)
                r = sd_event_add_io(d->manager->event, &x->stderr_source, x->stderr_fd, EPOLLIN, on_exec_stderr,
                                    call);
        if (r >= 0 && exec_write_input(x) > 0)
                r = sd_event_add_io(d->manager->event, &x->stdin_source, x->stdin_fd, EPOLLOUT, on_exec_stdin,
                                    call);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(x->stdout_source, "handler-stdout");
        (void) sd_event_source_set_description(x->stderr_source, "handler-stderr");
        if (x->stdin_source)
                (void) sd_event_source_set_description(x->stdin_source, "handler-stdin");

        log_debug("Started handler %s for %s/%s (pid %d, %s).", path, call->photon->name, call->method, (int) pid,
                  dispatch_trigger_to_string(call->trigger));
        return 0;

fail:
        for (unsigned i = 0; i < 2; i++) {
                safe_close(in[i]);
                safe_close(out[i]);
                safe_close(err[i]);
        }
        return r;
}

/* ---- timers ---- */

static int on_terminating_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ExecChild *x = userdata;

        log_warning("Handler %s (pid %d) ignored SIGTERM, sending SIGKILL.", x->name ?: "?", (int) x->pid);
        x->phase = EXEC_KILL_SENT;
        exec_kill(x, SIGKILL);
        return 0;
}

/* The call's timeout: the caller is answered now, whatever the handler does with its SIGTERM. The process moves
 * to the dispatcher's terminating list, where the kill grace runs and the child source reaps it; its pipes are
 * closed, so what it writes from now on is lost (and a write gets EPIPE). */
static void exec_time_out(DispatchCall *call) {
        Dispatcher *d = call->dispatcher;
        ExecChild *x = call->exec;
        _cleanup_free_ char *tail = NULL;
        int r;

        log_warning("Handler %s/%s (pid %d) timed out after %" PRIu64 " ms, sending SIGTERM.",
                    call->photon->name, call->method, (int) x->pid, call->timeout_ms);
        exec_kill(x, SIGTERM);

        /* The stderr that is already there explains the timeout best. */
        if (x->stderr_fd >= 0)
                (void) exec_read_stderr(call);
        if (x->err_line_size > 0)
                exec_log_line(call, x->err_line, x->err_line_size, x->err_line_cut);
        x->err_line_size = 0;
        tail = tail_buf_text(&x->err_tail);
        exec_close_stdout(x);
        exec_close_stderr(x);
        exec_close_stdin(x);

        if (asprintf(&x->name, "%s/%s", call->photon->name, call->method) < 0)
                x->name = NULL;
        /* Not fatal if it fails: the job could then start its next run during the grace. */
        x->job_id = call->job_id ? strdup(call->job_id) : NULL;
        x->call = NULL;
        call->exec = NULL;
        x->phase = EXEC_TERM_SENT;
        LIST_PREPEND(terminating, d->terminating, x);
        d->n_terminating++;
        r = sd_event_add_time_relative(d->manager->event, &x->kill_timer_source, CLOCK_MONOTONIC,
                                       limits.HANDLER_KILL_GRACE_MS * USEC_PER_MSEC, USEC_PER_MSEC,
                                       on_terminating_timer, x);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the kill grace timer, sending SIGKILL now: %m");
                x->phase = EXEC_KILL_SENT;
                exec_kill(x, SIGKILL);
        } else
                (void) sd_event_source_set_description(x->kill_timer_source, "handler-kill-grace");

        call_fail(call, "Handler %s/%s timed out after %" PRIu64 " ms%s%s", call->photon->name, call->method,
                  call->timeout_ms, tail && tail[0] ? ": " : "", tail ?: "");
}

static int on_call_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        DispatchCall *call = userdata;
        ExecChild *x = call->exec;

        if (call->state != CALL_RUNNING)
                return 0;

        if (!x) {
                call_fail(call, "Timed out after %" PRIu64 " ms waiting for the provider of '%s' to answer %s",
                          call->timeout_ms, call->photon->name, call->method);
                return 0;
        }

        switch (x->phase) {
        case EXEC_RUNNING:
                exec_time_out(call);
                break;
        case EXEC_TERM_SENT:
        case EXEC_KILL_SENT:
                /* Only terminating children, which have a timer of their own. */
                break;
        case EXEC_EXITED:
                /* The exit grace is over: stop waiting for whoever holds the pipes. */
                exec_finish(call);
                break;
        }
        return 0;
}

/* ---- starting calls ---- */

/* The one wording of each DispatchError. Returns error (negative errno) for the caller's convenience. */
static int failure_set(Dispatcher *d, const DispatchRequest *req, DispatchError e, int error, DispatchFailure *f) {
        const char *dir = d->manager->handlers_dir;
        PhotonEntry *p;
        char buf[256];
        int k = 0;

        assert(error < 0);

        f->error = e;
        f->errno_value = error;
        f->message = NULL;

        switch (e) {
        case DISPATCH_ERROR_SHUTTING_DOWN:
                f->message = strdup("Daemon is shutting down");
                break;
        case DISPATCH_ERROR_BUSY:
                k = asprintf(&f->message, "Busy: %u calls in flight and %u timed-out handlers not ended yet "
                             "(PHOTOND_MAX_CALLS)", d->n_calls, d->n_terminating);
                break;
        case DISPATCH_ERROR_PHOTON_BUSY:
                p = photon_find(d, req->photon);
                k = asprintf(&f->message, "Busy: photon '%s' has %u calls in flight (PHOTOND_MAX_CALLS_PER_PHOTON)",
                             req->photon, p ? p->n_calls : 0);
                break;
        case DISPATCH_ERROR_NO_PROVIDER:
                k = asprintf(&f->message, "Cannot initialize photon '%s': no provider is connected (a client sends "
                             "{\"type\":\"provide\",\"photonName\":\"%s\"}) and there is no executable handler "
                             "%s/%s/%s or %s/%s",
                             req->photon, req->photon, dir, req->photon, req->method, dir, req->photon);
                break;
        case DISPATCH_ERROR_NO_METHOD:
                k = asprintf(&f->message, "Tool not found: %s (no executable %s/%s/%s)", req->method, dir,
                             req->photon, req->method);
                break;
        case DISPATCH_ERROR_NOT_EXECUTABLE:
                k = asprintf(&f->message, "Cannot run the handler of %s/%s: it is not executable", req->photon,
                             req->method);
                break;
        case DISPATCH_ERROR_UNSAFE_HANDLER:
                k = asprintf(&f->message, "Refusing the handler of %s/%s: it or its directory under %s is "
                             "writable by group or others, or owned by a user other than root and photond's "
                             "(chmod go-w, chown)", req->photon, req->method, dir);
                break;
        case DISPATCH_ERROR_INVALID_NAME:
                if (!name_is_valid(req->photon))
                        f->message = strdup(request_name_error("photonName", req->photon, buf, sizeof(buf)));
                else
                        f->message = strdup(request_name_error("method", req->method, buf, sizeof(buf)));
                break;
        case DISPATCH_ERROR_PROVIDER_GONE:
                k = asprintf(&f->message, "The provider of '%s' went away", req->photon);
                break;
        case DISPATCH_ERROR_SPAWN_FAILED:
                k = asprintf(&f->message, "Cannot start the handler of %s/%s: %s", req->photon, req->method,
                             strerror(ERRNO_VALUE(error)));
                break;
        case DISPATCH_ERROR_INTERNAL:
        default:
                f->error = DISPATCH_ERROR_INTERNAL;
                k = asprintf(&f->message, "Cannot call %s/%s: %s", req->photon, req->method,
                             strerror(ERRNO_VALUE(error)));
                break;
        }
        if (k < 0)
                f->message = NULL;      /* asprintf() leaves it undefined on failure */
        return error;
}

typedef struct CallOrigin {
        Client *caller;                 /* command: the requester */
        const char *caller_id;
        const char *instance;
        const char *session_id;
} CallOrigin;

/* Starts a call. On failure returns a negative errno and says why in *f. */
static int call_start(Dispatcher *d, const DispatchRequest *req, const CallOrigin *origin, DispatchCall **ret,
                      DispatchFailure *f) {
        _cleanup_(call_freep) DispatchCall *call = NULL;
        _cleanup_free_ char *path = NULL;
        PhotonEntry *e;
        bool method_arg = false;
        int r;

        *f = (DispatchFailure) {};

        if (d->freeing || d->manager->shutting_down)
                return failure_set(d, req, DISPATCH_ERROR_SHUTTING_DOWN, -ESHUTDOWN, f);
        if (!name_is_valid(req->photon) || !name_is_valid(req->method))
                return failure_set(d, req, DISPATCH_ERROR_INVALID_NAME, -EINVAL, f);
        if (!dispatch_trigger_to_string(req->trigger))
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -EINVAL, f);

        e = photon_find(d, req->photon);
        if (d->n_calls + d->n_terminating >= limits.MAX_CALLS)
                return failure_set(d, req, DISPATCH_ERROR_BUSY, -EBUSY, f);
        if (e && e->n_calls >= limits.MAX_CALLS_PER_PHOTON)
                return failure_set(d, req, DISPATCH_ERROR_PHOTON_BUSY, -EBUSY, f);

        if (!e || e->n_providers == 0) {
                r = dispatch_resolve_handler(d->manager->handlers_dir, req->photon, req->method, &path,
                                             &method_arg);
                if (r == -ENOENT)
                        return failure_set(d, req, DISPATCH_ERROR_NO_PROVIDER, r, f);
                if (r == -ESRCH)
                        return failure_set(d, req, DISPATCH_ERROR_NO_METHOD, r, f);
                if (r == -EACCES)
                        return failure_set(d, req, DISPATCH_ERROR_NOT_EXECUTABLE, r, f);
                if (r == -EPERM)
                        return failure_set(d, req, DISPATCH_ERROR_UNSAFE_HANDLER, r, f);
                if (r < 0)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
        }

        call = new0(DispatchCall, 1);
        if (!call)
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        call->dispatcher = d;
        call->serial = ++d->next_serial;
        snprintf(call->invoke_id, sizeof(call->invoke_id), INVOKE_ID_PREFIX "%" PRIu64, call->serial);
        call->trigger = req->trigger;
        call->timeout_ms = req->timeout_ms ?: limits.HANDLER_TIMEOUT_MS;
        call->started_usec = now_usec(CLOCK_MONOTONIC);
        call->args = req->args ? json_object_get(req->args) : json_object_new_object();
        call->method = strdup(req->method);
        if (!call->args || !call->method)
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        if (req->job_id && !(call->job_id = strdup(req->job_id)))
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        if (origin) {
                call->is_command = true;
                call->caller_id = strdup(origin->caller_id);
                if (!call->caller_id)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
                if (origin->instance && !(call->instance = strdup(origin->instance)))
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
                if (origin->session_id && !(call->session_id = strdup(origin->session_id)))
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, -ENOMEM, f);
        }

        /* Counted against the photon from now on, which also keeps its entry alive. */
        r = photon_get(d, req->photon, &e);
        if (r < 0)
                return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
        call->photon = e;
        e->n_calls++;

        if (call->timeout_ms > 0) {
                r = sd_event_add_time_relative(d->manager->event, &call->timer_source, CLOCK_MONOTONIC,
                                               call->timeout_ms * USEC_PER_MSEC, USEC_PER_MSEC, on_call_timer,
                                               call);
                if (r < 0)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
        } else {
                /* No timeout: the timer still serves the exec grace periods. */
                r = sd_event_add_time_relative(d->manager->event, &call->timer_source, CLOCK_MONOTONIC,
                                               USEC_PER_SEC, USEC_PER_MSEC, on_call_timer, call);
                if (r < 0)
                        return failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f);
                (void) sd_event_source_set_enabled(call->timer_source, SD_EVENT_OFF);
        }
        (void) sd_event_source_set_description(call->timer_source, "dispatch-call-timer");

        if (e->n_providers > 0) {
                Provider *p = provider_pick(e);

                /* A failed send may disconnect the provider (and free p): the call is not linked to it yet. */
                r = provider_send_invoke(call, p);
                if (r < 0)
                        return r == -ENOMEM ? failure_set(d, req, DISPATCH_ERROR_INTERNAL, r, f) :
                                              failure_set(d, req, DISPATCH_ERROR_PROVIDER_GONE, -ECONNRESET, f);
                call->provider = p;
                p->n_calls++;
        } else {
                r = exec_spawn(call, path, method_arg);
                if (r < 0) {
                        log_warning_errno(r, "Failed to start the handler %s: %m", path);
                        return failure_set(d, req, DISPATCH_ERROR_SPAWN_FAILED, r, f);
                }
        }

        if (origin) {
                call->caller = origin->caller;
                call->caller->n_calls++;
        }
        LIST_PREPEND(calls, d->calls, call);
        HASH_ADD(hh, d->calls_by_serial, serial, sizeof(call->serial), call);
        d->n_calls++;

        *ret = TAKE_PTR(call);
        return 0;
}

/* ---- public API ---- */

int dispatcher_new(Manager *m, const DispatcherHooks *hooks, Dispatcher **ret) {
        _cleanup_(dispatcher_freep) Dispatcher *d = NULL;
        const char *home = getenv("HOME");
        sigset_t ss;
        int r;

        d = new0(Dispatcher, 1);
        if (!d)
                return -ENOMEM;
        d->manager = m;
        if (hooks)
                d->hooks = *hooks;

        if (!home || home[0] != '/') {
                struct passwd *pw = getpwuid(getuid());
                home = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : "/";
        }
        d->home = strdup(home);
        if (!d->home)
                return -ENOMEM;

        /* sd_event_add_child() requires SIGCHLD blocked (it reaps through pidfds, not a signal handler). */
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return -errno;

        r = sd_event_add_defer(m->event, &d->done_event_source, on_done, d);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(d->done_event_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(d->done_event_source, "dispatch-done");

        *ret = TAKE_PTR(d);
        return 0;
}

Dispatcher* dispatcher_free(Dispatcher *d) {
        PhotonEntry *e, *tmp;

        if (!d)
                return NULL;
        d->freeing = true;

        /* Every call still running ends now; each waiting job or webhook hears about it once. */
        LIST_FOREACH(calls, call, d->calls) {
                if (call->state != CALL_RUNNING)
                        continue;
                if (call->exec && !call->exec->exited)
                        exec_kill(call->exec, SIGKILL);
                call_fail(call, "photond is shutting down");
        }
        on_done(NULL, d);
        /* Killed and reaped by sd-event as their child sources go (exec_child_free()). */
        while (d->terminating)
                exec_child_free(d->terminating);

        HASH_ITER(hh, d->photons, e, tmp)
                while (e->providers) {
                        Provider *p = e->providers;
                        if (p->client)
                                p->client->provider = NULL;
                        p->client = NULL;
                        provider_free(d, p);
                }

        sd_event_source_disable_unref(d->done_event_source);
        free(d->home);
        return mfree(d);
}

int dispatcher_call(Dispatcher *d, const DispatchRequest *req, DispatchCallback cb, void *userdata,
                    DispatchCall **ret_call, DispatchFailure *ret_failure) {
        _cleanup_(dispatch_failure_done) DispatchFailure f = {};
        DispatchCall *call;
        int r;

        assert(d);
        assert(req);

        r = call_start(d, req, NULL, &call, &f);
        if (r < 0) {
                log_debug("Cannot dispatch %s/%s (%s): %s: %s", req->photon, req->method,
                          dispatch_trigger_to_string(req->trigger), dispatch_error_to_string(f.error),
                          f.message ?: "-");
                if (ret_failure)
                        *ret_failure = TAKE_STRUCT(f);
                return r;
        }
        call->callback = cb;
        call->userdata = userdata;
        if (ret_call)
                *ret_call = call;
        return 0;
}

void dispatch_call_abandon(DispatchCall *call) {
        if (!call)
                return;
        call->callback = NULL;
        call->userdata = NULL;
}

bool dispatcher_job_ending(Dispatcher *d, const char *job_id) {
        /* At most MAX_CALLS entries, and looked at only when a job is due or asked to run. */
        LIST_FOREACH(terminating, x, d->terminating)
                if (streq_ptr(x->job_id, job_id))
                        return true;
        return false;
}

bool dispatcher_can_serve(Dispatcher *d, const char *photon, const char *method) {
        _cleanup_free_ char *path = NULL;
        PhotonEntry *e;
        bool method_arg;

        if (!name_is_valid(photon) || !name_is_valid(method))
                return false;
        e = photon_find(d, photon);
        if (e && e->n_providers > 0)
                return true;
        return dispatch_resolve_handler(d->manager->handlers_dir, photon, method, &path, &method_arg) >= 0;
}

void dispatcher_client_gone(Dispatcher *d, Client *c) {
        bool answer_prompts = false;

        if (!c->provider && c->n_calls == 0)
                return;

        /* First, without sending anything, drop every reference to c. Sends come after, because a send can
         * disconnect another client and bring us back here. */
        LIST_FOREACH(calls, call, d->calls) {
                if (call->provider && call->provider->client == c)
                        call_fail(call, "The provider of '%s' disconnected before answering %s",
                                  call->photon->name, call->method);
                if (call->caller == c) {
                        call->caller = NULL;
                        c->n_calls--;
                        if (call->n_prompts > 0)
                                answer_prompts = true;
                }
        }
        while (c->provider) {
                Provider *p = c->provider;
                log_debug("Client %" PRIu64 " no longer provides '%s'.", c->serial, p->photon->name);
                provider_free(d, p);
        }

        /* A caller that went away answers its open prompts with null, as the reference resolves them. */
        if (answer_prompts)
                LIST_FOREACH(calls, call, d->calls)
                        if (!call->caller && call->is_command && call->state == CALL_RUNNING)
                                for (; call->n_prompts > 0; call->n_prompts--)
                                        (void) send_prompt_response(call, NULL);
}

/* ---- request handlers ---- */

static DispatchCall* call_by_invoke_id(Dispatcher *d, const char *id) {
        DispatchCall *call = NULL;
        const char *n;
        uint64_t serial;

        n = startswith(id, INVOKE_ID_PREFIX);
        if (!n || safe_atou64(n, &serial) < 0)
                return NULL;
        HASH_FIND(hh, d->calls_by_serial, &serial, sizeof(serial), call);
        return call;
}

/* The running provider call that c serves under this invoke id, or NULL after an error reply. */
static DispatchCall* provider_call_of(Dispatcher *d, Client *c, Request *req) {
        DispatchCall *call = call_by_invoke_id(d, req->id);
        char msg[160];

        if (call && call->state == CALL_RUNNING && call->provider && call->provider->client == c)
                return call;
        snprintf(msg, sizeof(msg), "Unknown invocation '%.64s': it finished, timed out or is not yours", req->id);
        (void) client_reply_error(c, req->id, msg, NULL);
        return NULL;
}

int dispatcher_handle_command(Manager *m, Client *c, Request *req) {
        Dispatcher *d = m->dispatcher;
        _cleanup_(dispatch_failure_done) DispatchFailure failure = {};
        const char *photon = request_string(req, "photonName"), *method = request_string(req, "method");
        const char *instance = NULL;
        struct json_object *args = NULL, *v;
        DispatchCall *call;
        DispatchRequest dr;
        int64_t timeout = 0;
        char msg[192];
        int r;

        if (!photon)
                return client_reply_error(c, req->id, "photonName required for commands",
                                          "Include photonName in the request payload");
        if (!name_is_valid(photon))
                return client_reply_error(c, req->id, request_name_error("photonName", photon, msg, sizeof(msg)),
                                          NULL);
        if (!name_is_valid(method))
                return client_reply_error(c, req->id, request_name_error("method", method, msg, sizeof(msg)), NULL);

        if (json_object_object_get_ex(req->json, "instanceName", &v) && v) {
                instance = json_object_get_cstring(v);
                if (!instance)
                        return client_reply_error(c, req->id,
                                                  "Invalid request format: instanceName must be a string", NULL);
                if (!name_is_valid(instance))
                        return client_reply_error(c, req->id,
                                                  request_name_error("instanceName", instance, msg, sizeof(msg)),
                                                  NULL);
        }

        r = json_get_int64(req->json, "timeoutMs", false, &timeout);
        if (r != -ENOENT && (r < 0 || timeout < 1 || (uint64_t) timeout > limits.HANDLER_MAX_TIMEOUT_MS)) {
                snprintf(msg, sizeof(msg), "Invalid timeoutMs: an integer from 1 to %" PRIu64 " (PHOTOND_HANDLER_MAX_TIMEOUT_MS)",
                         limits.HANDLER_MAX_TIMEOUT_MS);
                return client_reply_error(c, req->id, msg, NULL);
        }

        (void) json_object_object_get_ex(req->json, "args", &args);

        dr = (DispatchRequest) {
                .photon = photon,
                .method = method,
                .args = args,
                .trigger = DISPATCH_TRIGGER_COMMAND,
                .timeout_ms = (uint64_t) MAX(timeout, 0),
        };
        r = call_start(d, &dr, &(CallOrigin) {
                        .caller = c,
                        .caller_id = req->id,
                        .instance = instance,
                        .session_id = request_string(req, "sessionId"),
                }, &call, &failure);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return client_reply_error(c, req->id, failure.message ?: "Cannot call the method",
                                          dispatch_error_suggestion(failure.error));
        return 0;
}

int dispatcher_handle_provide(Manager *m, Client *c, Request *req) {
        Dispatcher *d = m->dispatcher;
        _cleanup_(json_object_putp) struct json_object *data = NULL;
        const char *photon = request_string(req, "photonName");
        PhotonEntry *e;
        Provider *p = NULL;
        char msg[192];
        int r;

        if (!name_is_valid(photon))
                return client_reply_error(c, req->id, request_name_error("photonName", photon, msg, sizeof(msg)),
                                          NULL);

        LIST_FOREACH(by_client, i, (Provider*) c->provider)
                if (streq(i->photon->name, photon))
                        p = i;

        if (!p) {
                if (d->n_providers >= limits.MAX_PROVIDERS) {
                        const char *suggestion;

                        limit_error(LIMIT_MAX_PROVIDERS, UINT64_MAX, msg, sizeof(msg), &suggestion);
                        return client_reply_error(c, req->id, msg, suggestion);
                }
                r = photon_get(d, photon, &e);
                if (r < 0)
                        return r;
                p = new0(Provider, 1);
                if (!p) {
                        photon_gc(d, e);
                        return -ENOMEM;
                }
                p->photon = e;
                p->client = c;
                LIST_PREPEND(by_photon, e->providers, p);
                if (e->n_providers++ == 0)
                        d->n_photons_provided++;
                d->n_providers++;
                {
                        Provider *head = c->provider;
                        LIST_PREPEND(by_client, head, p);
                        c->provider = head;
                }
                log_debug("Client %" PRIu64 " (pid %d) provides '%s' (%u providers).", c->serial,
                          (int) c->ucred.pid, photon, e->n_providers);
                if (d->hooks.counts_changed)
                        d->hooks.counts_changed(d->hooks.userdata);
        }

        data = json_object_new_object();
        if (!data ||
            json_add_bool(data, "provided", true) < 0 ||
            json_add_string(data, "photonName", photon) < 0 ||
            json_add_int64(data, "providers", p->photon->n_providers) < 0)
                return -ENOMEM;
        return client_reply_result(c, req->id, true, TAKE_PTR(data));
}

int dispatcher_handle_invoke_result(Manager *m, Client *c, Request *req) {
        DispatchCall *call = provider_call_of(m->dispatcher, c, req);
        struct json_object *v, *data = NULL;
        const char *error = NULL;
        bool success;

        if (!call)
                return 0;

        if (json_object_object_get_ex(req->json, "success", &v) && json_object_is_type(v, json_type_boolean))
                success = json_object_get_boolean(v);
        else
                success = !json_object_object_get_ex(req->json, "error", NULL);

        if (success) {
                if (json_object_object_get_ex(req->json, "data", &v))
                        data = json_ref_or_null(v);
                if (json_object_object_get_ex(req->json, "patch", &v) && v)
                        call->patch = json_object_get(v);
                if (json_object_object_get_ex(req->json, "inversePatch", &v) && v)
                        call->inverse_patch = json_object_get(v);
                call_complete(call, true, data, NULL);
                return 0;
        }

        if (json_object_object_get_ex(req->json, "error", &v) && v) {
                struct json_object *text = json_object_is_type(v, json_type_string) ? v :
                        json_object_object_get(v, "message");

                /* A message with a NUL byte is passed on as its JSON text, so the caller sees all of it. */
                error = json_object_get_cstring(text);
                if (!error && json_object_is_type(text, json_type_string))
                        error = json_object_to_json_string_ext(text, JSON_FORMAT_FLAGS);
        }
        call_complete(call, false, NULL, error ?: "Method failed");
        return 0;
}

int dispatcher_handle_emit(Manager *m, Client *c, Request *req) {
        DispatchCall *call = provider_call_of(m->dispatcher, c, req);
        struct json_object *e, *v;
        const char *channel;
        int r;

        if (!call)
                return 0;
        if (!json_object_object_get_ex(req->json, "emitData", &e) || !json_object_is_type(e, json_type_object))
                return client_reply_error(c, req->id, "Invalid request format: emitData must be an object", NULL);
        if (json_object_object_get_ex(e, "channel", &v) && json_string_get_cstring(v, &channel) == -EINVAL)
                return client_reply_error(c, req->id,
                                          "Invalid request format: emitData.channel must not contain a NUL character",
                                          NULL);

        if (call->caller && json_object_object_get_ex(e, "emit", &v) && v &&
            !(json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v))) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

                if (!o ||
                    json_add_string(o, "type", "emit") < 0 ||
                    json_add_string(o, "id", call->caller_id) < 0 ||
                    json_add(o, "emitData", json_object_get(e)) < 0)
                        return -ENOMEM;
                (void) client_send_json(call->caller, o);
        }

        /* The send above may have disconnected the caller; call->caller is NULL then, which is what we want. */
        channel = json_get_string(e, "channel");
        if (channel) {
                r = channels_publish(m->channels, channel, e,
                                     call->caller ? &call->caller->subscriber : NULL, NULL);
                if (r < 0)
                        log_debug_errno(r, "Failed to publish an emit of %s/%s on '%s': %m", call->photon->name,
                                        call->method, channel);
        }
        return 0;
}

int dispatcher_handle_prompt(Manager *m, Client *c, Request *req) {
        DispatchCall *call = provider_call_of(m->dispatcher, c, req);
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *p;
        int r;

        if (!call)
                return 0;
        if (!json_object_object_get_ex(req->json, "prompt", &p) || !json_object_is_type(p, json_type_object))
                return client_reply_error(c, req->id, "Invalid request format: prompt must be an object", NULL);

        /* Nobody to ask (a job, a webhook, a caller that left): the answer is null, as in the reference. */
        if (!call->caller) {
                r = send_prompt_response(call, NULL);
                return r == -ENOMEM ? r : 0;
        }

        o = json_object_new_object();
        if (!o ||
            json_add_string(o, "type", "prompt") < 0 ||
            json_add_string(o, "id", call->caller_id) < 0 ||
            json_add(o, "prompt", json_object_get(p)) < 0)
                return -ENOMEM;
        call->n_prompts++;
        (void) client_send_json(call->caller, o);
        return 0;
}

int dispatcher_handle_prompt_response(Manager *m, Client *c, Request *req) {
        Dispatcher *d = m->dispatcher;
        struct json_object *v = NULL;

        if (c->n_calls == 0)
                return 0;

        /* As in the reference, a prompt_response gets no reply of its own. */
        (void) json_object_object_get_ex(req->json, "promptValue", &v);
        LIST_FOREACH(calls, call, d->calls)
                if (call->caller == c && call->state == CALL_RUNNING && call->n_prompts > 0 &&
                    streq(call->caller_id, req->id)) {
                        int r;

                        call->n_prompts--;
                        r = send_prompt_response(call, v);
                        return r == -ENOMEM ? r : 0;
                }
        return 0;
}

static int ps_add_clients(Manager *m, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *arr = json_object_new_array();

        if (!arr)
                return -ENOMEM;
        LIST_FOREACH(clients, c, m->clients) {
                _cleanup_(json_object_putp) struct json_object *o = NULL, *provides = NULL;

                if (c->disconnected)
                        continue;
                o = json_object_new_object();
                provides = json_object_new_array();
                if (!o || !provides ||
                    json_add_int64(o, "id", (int64_t) c->serial) < 0 ||
                    json_add_int64(o, "pid", c->ucred.pid) < 0 ||
                    json_add_int64(o, "uid", c->ucred.uid == (uid_t) -1 ? -1 : (int64_t) c->ucred.uid) < 0 ||
                    json_add_string(o, "sessionId", c->session_id) < 0 ||
                    json_add_int64(o, "subscriptions", c->subscriber.n_subscriptions) < 0 ||
                    json_add_int64(o, "waitingCalls", c->n_calls) < 0)
                        return -ENOMEM;
                LIST_FOREACH(by_client, p, (Provider*) c->provider)
                        if (json_object_array_add(provides, json_object_new_string(p->photon->name)) < 0)
                                return -ENOMEM;
                if (json_add(o, "provides", TAKE_PTR(provides)) < 0 ||
                    json_object_array_add(arr, TAKE_PTR(o)) < 0)
                        return -ENOMEM;
        }
        return json_add(data, "clients", TAKE_PTR(arr));
}

static int ps_add_providers(Dispatcher *d, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *arr = json_object_new_array();
        PhotonEntry *e, *tmp;

        if (!arr)
                return -ENOMEM;
        HASH_ITER(hh, d->photons, e, tmp) {
                _cleanup_(json_object_putp) struct json_object *o = NULL, *clients = NULL;

                if (e->n_providers == 0)
                        continue;
                o = json_object_new_object();
                clients = json_object_new_array();
                if (!o || !clients)
                        return -ENOMEM;
                LIST_FOREACH(by_photon, p, e->providers) {
                        struct json_object *pc = json_object_new_object();

                        if (!pc || json_object_array_add(clients, pc) < 0) {
                                json_object_put(pc);
                                return -ENOMEM;
                        }
                        if (json_add_int64(pc, "client", (int64_t) p->client->serial) < 0 ||
                            json_add_int64(pc, "pid", p->client->ucred.pid) < 0 ||
                            json_add_int64(pc, "runningCalls", p->n_calls) < 0 ||
                            json_add_int64(pc, "served", (int64_t) p->n_served) < 0)
                                return -ENOMEM;
                }
                if (json_add_string(o, "photonName", e->name) < 0 ||
                    json_add_int64(o, "runningCalls", e->n_calls) < 0 ||
                    json_add(o, "providers", TAKE_PTR(clients)) < 0 ||
                    json_object_array_add(arr, TAKE_PTR(o)) < 0)
                        return -ENOMEM;
        }
        return json_add(data, "providers", TAKE_PTR(arr));
}

static int ps_add_calls(Dispatcher *d, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *arr = json_object_new_array();
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (!arr)
                return -ENOMEM;
        LIST_FOREACH(calls, call, d->calls) {
                _cleanup_(json_object_putp) struct json_object *o = NULL;

                if (call->state != CALL_RUNNING)
                        continue;
                o = json_object_new_object();
                if (!o ||
                    json_add_string(o, "id", call->invoke_id) < 0 ||
                    json_add_string(o, "photonName", call->photon->name) < 0 ||
                    json_add_string(o, "method", call->method) < 0 ||
                    json_add_string(o, "trigger", dispatch_trigger_to_string(call->trigger)) < 0 ||
                    json_add_string(o, "jobId", call->job_id) < 0 ||
                    json_add_string(o, "via", call->exec ? "exec" : "provider") < 0 ||
                    json_add_int64(o, "ageMs", (int64_t) ((now - call->started_usec) / USEC_PER_MSEC)) < 0 ||
                    json_add_int64(o, "timeoutMs", (int64_t) call->timeout_ms) < 0)
                        return -ENOMEM;
                if (call->exec && json_add_int64(o, "pid", call->exec->pid) < 0)
                        return -ENOMEM;
                if (call->provider && json_add_int64(o, "provider", (int64_t) call->provider->client->serial) < 0)
                        return -ENOMEM;
                if (call->caller && json_add_int64(o, "caller", (int64_t) call->caller->serial) < 0)
                        return -ENOMEM;
                if (json_object_array_add(arr, TAKE_PTR(o)) < 0)
                        return -ENOMEM;
        }
        return json_add(data, "calls", TAKE_PTR(arr));
}

int dispatcher_handle_ps(Manager *m, Client *c, Request *req) {
        _cleanup_(json_object_putp) struct json_object *data = json_object_new_object();
        int r;

        if (!data)
                return -ENOMEM;
        if ((r = ps_add_clients(m, data)) < 0 ||
            (r = ps_add_providers(m->dispatcher, data)) < 0 ||
            (r = ps_add_calls(m->dispatcher, data)) < 0 ||
            (r = json_add_int64(data, "jobs", scheduler_count(m->scheduler))) < 0)
                return r;
        return client_reply_result(c, req->id, true, TAKE_PTR(data));
}

int dispatcher_add_status(Dispatcher *d, struct json_object *data) {
        int r;

        if ((r = json_add_int64(data, "photonsLoaded", d->n_photons_provided)) < 0 ||
            (r = json_add_int64(data, "providers", d->n_providers)) < 0 ||
            (r = json_add_int64(data, "runningCalls", dispatcher_running_calls(d))) < 0)
                return r;
        return 0;
}

unsigned dispatcher_running_calls(Dispatcher *d) {
        unsigned n = 0;

        if (!d)
                return 0;
        /* Done calls are delivered within this loop iteration; only running ones count. */
        n = d->n_calls;
        LIST_FOREACH(done, call, d->done)
                n--;
        return n;
}
