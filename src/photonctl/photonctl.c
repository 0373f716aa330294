/* SPDX-License-Identifier: MIT */

/* photonctl: the command-line client of photond. Global options, the verb table and the core verbs; each area's
 * verbs live in ctl-<area>.c. */

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-util.h"
#include "log.h"

typedef struct Verb {
        const char *name;
        int min_args, max_args;         /* not counting the verb; -1 = any */
        CtlVerbFunc func;
        const char *synopsis;           /* the arguments after the verb */
        const char *summary;            /* one line for --help */
        const char *help;               /* options and notes for "VERB --help"; NULL: nothing more to say */
        bool runs_command;              /* the arguments end in a command line, whose own --help is not ours */
} Verb;

/* The one place a verb's arguments and options are described: --help, "VERB --help" and usage errors all come
 * from here. Keep it in step with what each verb parses and with man/photonctl.1.scd (test-ctl checks both). */
static const Verb verbs[] = {
        { "ping", 0, 0, verb_ping, "", "Check that photond answers", NULL },
        { "status", 0, 0, verb_status, "", "Show the daemon's status", NULL },
        { "shutdown", 0, 0, verb_shutdown, "", "Stop the daemon gracefully",
          "Allowed to the daemon's own user and root only.\n" },
        { "ps", 0, 0, verb_ps, "", "Clients, providers, running calls", NULL },
        { "publish", 2, 2, verb_publish, "CHANNEL JSON", "Publish a message",
          "JSON is any JSON value (a string needs its quotes: '\"text\"'). Prints the message's eventId.\n" },
        { "subscribe", 1, -1, verb_subscribe, "[--since EVENTID] CHANNEL...", "Print messages as they arrive",
          "  --since EVENTID   First replay the buffered messages newer than EVENTID\n\n"
          "A CHANNEL ending in ':*' matches every channel with that prefix. One line per message:\n"
          "CHANNEL EVENTID MESSAGE, then '(replay)' for a replayed one; 'CHANNEL refresh-needed' when\n"
          "messages were lost. Ctrl-C exits with status 0.\n" },
        { "channels", 0, 0, verb_channels, "", "List channels", NULL },
        { "lock", 1, -1, verb_lock, "NAME [--timeout MS] [--holder H] [--wait MS]", "Acquire a lock",
          "  --timeout MS   Hold it for MS milliseconds (default: the daemon's, 30000)\n"
          "  --holder H     Acquire as holder H (default: a holder unique to this call)\n"
          "  --wait MS      Wait up to MS milliseconds (at most 300000) for a held lock to free\n\n"
          "Prints the holder and the fencing token; release the lock with 'unlock NAME --holder H'.\n" },
        { "unlock", 1, -1, verb_unlock, "NAME [--holder H]", "Release a lock",
          "  --holder H     Release as holder H, the holder 'lock' printed (default: a holder unique\n"
          "                 to this call, which releases only a lock nobody holds)\n\n"
          "A lock held by another holder is not released; the error names its holder.\n" },
        { "locks", 0, 0, verb_locks, "", "List live locks", NULL },
        { "with-lock", 2, -1, verb_with_lock, "NAME [--timeout MS] [--wait MS] -- CMD...", "Run CMD holding NAME",
          "  --timeout MS   Lock timeout (default 30000), refreshed while CMD runs\n"
          "  --wait MS      Wait up to MS milliseconds (at most 300000) for a held lock to free\n\n"
          "Also as flock(1): with-lock [--timeout MS] [--wait MS] NAME CMD...\n"
          "The holder is unique to this invocation. CMD finds PHOTON_LOCK_NAME, PHOTON_LOCK_HOLDER and\n"
          "PHOTON_LOCK_TOKEN in its environment. The exit status is CMD's.\n", true },
        { "schedule", 4, 5, verb_schedule, "PHOTON JOBID METHOD 'CRON' [ARGS_JSON]", "Schedule a job",
          "Calls METHOD of PHOTON with ARGS_JSON (a JSON object) whenever CRON fires.\n" },
        { "unschedule", 1, 1, verb_unschedule, "JOBID", "Remove a job", NULL },
        { "jobs", 0, 0, verb_jobs, "", "List scheduled jobs", NULL },
        { "run-job", 1, 1, verb_run_job, "JOBID", "Run a job now", NULL },
        { "cron", 1, -1, verb_cron, "'EXPR' [--count N]", "Show the next fire times",
          "  --count N      How many times to show (1 to 1000, default 5)\n\n"
          "Needs no daemon. With --json each time is printed as epoch milliseconds.\n" },
        { "history", 2, -1, verb_history, "PHOTON METHOD [--limit N]", "Show a job's run history",
          "  --limit N      How many of the last runs to show (1 to 500, default 20)\n" },
        { "call", 2, 3, verb_call, "PHOTON METHOD [ARGS_JSON]", "Call a photon method",
          "Prints the method's result on standard output as one line of compact JSON (null when it\n"
          "returned nothing). What the method emits is shown on standard error; its prompts are asked\n"
          "there and answered with a line from standard input. A failure is printed on standard\n"
          "error and the exit status is 1. With --json, every message of the call (emit, prompt,\n"
          "result or error) is printed as photond sends it.\n" },
        { "provide", 2, -1, verb_provide, "PHOTON -- CMD...", "Serve a photon's methods with CMD",
          "Each call runs CMD with the arguments as JSON on standard input and PHOTON_NAME,\n"
          "PHOTON_METHOD, PHOTON_TRIGGER and PHOTON_JOB_ID in its environment. Its standard output is\n"
          "the result (JSON if it parses); a non-zero exit status is a failure.\n", true },
        { "webhook-test", 2, -1, verb_webhook_test,
          "PHOTON METHOD [JSON] [--scheme S] [--url URL] [--secret-file PATH] [--id ID]", "Send a signed webhook",
          "  --scheme S         header, github, stripe or standard: how to authenticate (default: header)\n"
          "  --url URL          Endpoint http://HOST[:PORT]\n"
          "                     (default: http://127.0.0.1:${PHOTON_WEBHOOK_PORT:-3457})\n"
          "  --secret-file PATH The secret (default: $PHOTON_WEBHOOK_SECRET, else\n"
          "                     $CREDENTIALS_DIRECTORY/webhook-secret)\n"
          "  --id ID            webhook-id for --scheme standard (default: random)\n\n"
          "Sends JSON (default {}) and prints the status line and the body of the answer (with --json\n"
          "the body only). The exit status is 1 unless the answer is 2xx.\n" },
};

static const char *arg_socket = NULL;
static bool arg_system = false;
static bool arg_json = false;

static const Verb* verb_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, name))
                        return verbs + i;
        return NULL;
}

static void help(void) {
        printf("%s [OPTIONS...] COMMAND ...\n\n"
               "Control and inspect photond.\n\n"
               "Commands:\n", program_invocation_short_name);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                int n = printf("  %s%s%s", verbs[i].name, verbs[i].synopsis[0] ? " " : "", verbs[i].synopsis);

                if (n > 40)
                        printf("\n%43s%s\n", "", verbs[i].summary);
                else
                        printf("%*s %s\n", 42 - n, "", verbs[i].summary);
        }
        printf("\nOptions:\n"
               "  -h --help          Show this help; COMMAND --help shows a command's options\n"
               "     --version       Show the version\n"
               "     --socket=PATH   Daemon socket (default: ${PHOTON_HOME:-~/.photon}/.data/daemon.sock)\n"
               "     --system        Talk to the system instance (/run/photon/daemon.sock)\n"
               "     --json          Print the daemon's JSON replies as they are\n\n"
               "See photonctl(1).\n");
}

static void help_verb(const Verb *v) {
        printf("%s %s%s%s\n\n%s.\n", program_invocation_short_name, v->name, v->synopsis[0] ? " " : "",
               v->synopsis, v->summary);
        if (v->help)
                printf("\n%s", v->help);
        printf("\nSee photonctl(1).\n");
}

/* -h/--help among a verb's options, i.e. before "--", and for a verb that runs a command written without "--"
 * (with-lock NAME CMD...) before its first argument: everything from there on is the command's. */
static bool verb_wants_help(const Verb *v, int argc, char *argv[]) {
        bool dashdash = false;

        for (int i = 1; i < argc; i++)
                dashdash = dashdash || streq(argv[i], "--");
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--"))
                        return false;
                if (streq(argv[i], "-h") || streq(argv[i], "--help"))
                        return true;
                if (v->runs_command && !dashdash && argv[i][0] != '-')
                        return false;
        }
        return false;
}

int ctl_usage_error(const char *verb) {
        const Verb *v = verb_find(verb);

        assert(v);
        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Usage: %s %s%s%s (see %s %s --help)",
                               program_invocation_short_name, v->name, v->synopsis[0] ? " " : "", v->synopsis,
                               program_invocation_short_name, v->name);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_SOCKET, ARG_SYSTEM, ARG_JSON };
        static const struct option options[] = {
                { "help",    no_argument,       NULL, 'h'         },
                { "version", no_argument,       NULL, ARG_VERSION },
                { "socket",  required_argument, NULL, ARG_SOCKET  },
                { "system",  no_argument,       NULL, ARG_SYSTEM  },
                { "json",    no_argument,       NULL, ARG_JSON    },
                {}
        };
        int c;

        /* '+': stop at the verb, whose own options are the verb's business. */
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("photonctl %s\n", PHOTOND_VERSION);
                        return 0;
                case ARG_SOCKET:
                        arg_socket = optarg;
                        break;
                case ARG_SYSTEM:
                        arg_system = true;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        if (arg_socket && arg_system)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "--socket and --system exclude each other.");
        return 1;
}

static int default_socket_path(char **ret) {
        const char *home = getenv("PHOTON_HOME"), *h = getenv("HOME");

        if (arg_system)
                return (*ret = strdup("/run/photon/daemon.sock")) ? 0 : -ENOMEM;
        if (home && home[0])
                return asprintf(ret, "%s/.data/daemon.sock", home) < 0 ? -ENOMEM : 0;
        if (!h)
                return -ENXIO;
        return asprintf(ret, "%s/.photon/.data/daemon.sock", h) < 0 ? -ENOMEM : 0;
}

int verb_ping(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("ping"), *reply = NULL;
        int r;

        if (!req)
                return log_oom();
        r = ctl_call(ctx, req, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        if (!streq_ptr(json_get_string(reply, "type"), "pong"))
                return ctl_check_reply(reply, "ping") ?: log_error_errno(SYNTHETIC_ERRNO(EIO), "Unexpected reply.");
        if (!ctx->json)
                puts("pong");
        return 0;
}

int verb_status(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("status"), *reply = NULL;
        struct json_object *data;
        int r;

        r = ctl_query(ctx, req, "status", &reply);
        if (r <= 0)
                return r;
        if (!json_object_object_get_ex(reply, "data", &data))
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "status reply has no data.");

        int width = 0;
        json_object_object_foreach(data, k, v) {
                (void) v;
                width = MAX(width, (int) strlen(k));
        }
        json_object_object_foreach(data, key, val) {
                if (streq(key, "cluster"))
                        continue;       /* a section of its own, below */
                if (streq(key, "uptime") && json_object_is_type(val, json_type_double)) {
                        char buf[64];
                        ctl_format_duration(buf, sizeof(buf), (int64_t) (json_object_get_double(val) * 1000));
                        printf("%-*s %s\n", width, key, buf);
                } else if (json_object_is_type(val, json_type_array) || json_object_is_type(val, json_type_object))
                        printf("%-*s %s\n", width, key, json_object_to_json_string_ext(val, JSON_FORMAT_FLAGS));
                else
                        printf("%-*s %s\n", width, key, json_object_get_string(val));
        }
        if (json_object_object_get_ex(data, "cluster", &data))
                ctl_print_cluster(data);
        return 0;
}

int verb_shutdown(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("shutdown"), *reply = NULL;
        int r;

        if (!req)
                return log_oom();
        r = ctl_call(ctx, req, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        r = ctl_check_reply(reply, "shutdown");
        if (r < 0)
                return r;
        if (!ctx->json)
                puts("photond is shutting down");
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_free_ char *path = NULL, *packaged = NULL;
        CtlContext ctx = {};
        const Verb *v;
        const char *home;
        int r, n, first;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        if (optind >= argc) {
                help();
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "No command given.");
        }
        first = optind;
        n = argc - first - 1;

        v = verb_find(argv[first]);
        if (!v)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Unknown command '%s'. See %s --help.", argv[first],
                                       program_invocation_short_name);
        if (verb_wants_help(v, n + 1, argv + first)) {
                help_verb(v);
                return 0;
        }
        if (n < v->min_args || (v->max_args >= 0 && n > v->max_args))
                return ctl_usage_error(v->name);

        if (arg_socket) {
                ctx.socket_path = arg_socket;
                ctx.socket_source = CTL_SOCKET_PATH;
        } else {
                r = default_socket_path(&path);
                if (r < 0)
                        return log_error_errno(r, "Cannot tell where the daemon's socket is (set HOME or --socket).");
                ctx.socket_path = path;
                ctx.socket_source = arg_system ? CTL_SOCKET_SYSTEM : CTL_SOCKET_USER;
                /* photond.socket as packaged listens under ~/.photon, whatever PHOTON_HOME says. */
                home = getenv("HOME");
                if (!arg_system && (!home || asprintf(&packaged, "%s/.photon/.data/daemon.sock", home) < 0))
                        packaged = NULL;
                ctx.custom_home = !arg_system && !streq_ptr(packaged, path);
        }
        ctx.json = arg_json;

        /* Verbs parse their own options with getopt from a fresh start. */
        optind = 0;
        return v->func(&ctx, n + 1, argv + first);
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : r;
}
