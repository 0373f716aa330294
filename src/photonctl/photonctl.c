/* SPDX-License-Identifier: MIT */

/* photonctl: the command-line client of photond. Global options, the verb table and the core verbs; each area's
 * verbs live in ctl-<area>.c. */

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
        const char *usage;
} Verb;

static const Verb verbs[] = {
        { "ping",         0,  0, verb_ping,         "ping                         Check that photond answers" },
        { "status",       0,  0, verb_status,       "status                       Show the daemon's status" },
        { "shutdown",     0,  0, verb_shutdown,     "shutdown                     Stop the daemon gracefully" },
        { "ps",           0,  0, verb_ps,           "ps                           Clients, providers, running calls" },
        { "publish",      2,  2, verb_publish,      "publish CHANNEL JSON         Publish a message" },
        { "subscribe",    1, -1, verb_subscribe,    "subscribe [--since ID] CHANNEL...  Print messages as they arrive" },
        { "channels",     0,  0, verb_channels,     "channels                     List channels" },
        { "lock",         1, -1, verb_lock,         "lock NAME [--timeout MS] [--holder H] [--wait MS]  Acquire a lock" },
        { "unlock",       1, -1, verb_unlock,       "unlock NAME [--holder H]     Release a lock" },
        { "locks",        0,  0, verb_locks,        "locks                        List live locks" },
        { "with-lock",    2, -1, verb_with_lock,    "with-lock NAME [--timeout MS] [--wait MS] -- CMD...  Run CMD holding NAME" },
        { "schedule",     4,  5, verb_schedule,     "schedule PHOTON JOBID METHOD 'CRON' [ARGS_JSON]  Schedule a job" },
        { "unschedule",   1,  1, verb_unschedule,   "unschedule JOBID             Remove a job" },
        { "jobs",         0,  0, verb_jobs,         "jobs                         List scheduled jobs" },
        { "run-job",      1,  1, verb_run_job,      "run-job JOBID                Run a job now" },
        { "cron",         1, -1, verb_cron,         "cron 'EXPR' [--count N]      Show the next fire times" },
        { "history",      2, -1, verb_history,      "history PHOTON METHOD [--limit N]  Show a job's run history" },
        { "call",         2,  3, verb_call,         "call PHOTON METHOD [ARGS_JSON]  Call a photon method" },
        { "provide",      2, -1, verb_provide,      "provide PHOTON -- CMD...     Serve a photon's methods with CMD" },
        { "webhook-test", 2, -1, verb_webhook_test, "webhook-test PHOTON METHOD [JSON] [--scheme S] [--url URL]  Send a signed webhook" },
};

static const char *arg_socket = NULL;
static bool arg_system = false;
static bool arg_json = false;

static void help(void) {
        printf("%s [OPTIONS...] COMMAND ...\n\n"
               "Control and inspect photond.\n\n"
               "Commands:\n", program_invocation_short_name);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                printf("  %s\n", verbs[i].usage);
        printf("\nOptions:\n"
               "  -h --help          Show this help\n"
               "     --version       Show the version\n"
               "     --socket=PATH   Daemon socket (default: ${PHOTON_HOME:-~/.photon}/.data/daemon.sock)\n"
               "     --system        Talk to the system instance (/run/photon/daemon.sock)\n"
               "     --json          Print the daemon's JSON replies as they are\n\n"
               "See photonctl(1).\n");
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
        else if (streq_ptr(json_get_string(reply, "type"), "pong"))
                puts("pong");
        else
                return ctl_check_reply(reply, "ping") ?: log_error_errno(SYNTHETIC_ERRNO(EIO), "Unexpected reply.");
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
                if (streq(key, "uptime") && json_object_is_type(val, json_type_double)) {
                        char buf[64];
                        ctl_format_duration(buf, sizeof(buf), (int64_t) (json_object_get_double(val) * 1000));
                        printf("%-*s %s\n", width, key, buf);
                } else if (json_object_is_type(val, json_type_array) || json_object_is_type(val, json_type_object))
                        printf("%-*s %s\n", width, key, json_object_to_json_string_ext(val, JSON_FORMAT_FLAGS));
                else
                        printf("%-*s %s\n", width, key, json_object_get_string(val));
        }
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
        _cleanup_free_ char *path = NULL;
        CtlContext ctx = {};
        const char *verb;
        int r, n;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        if (optind >= argc) {
                help();
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "No command given.");
        }
        int first = optind;

        verb = argv[first];
        n = argc - first - 1;

        if (arg_socket)
                ctx.socket_path = arg_socket;
        else {
                r = default_socket_path(&path);
                if (r < 0)
                        return log_error_errno(r, "Cannot tell where the daemon's socket is (set HOME or --socket).");
                ctx.socket_path = path;
        }
        ctx.json = arg_json;

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                if (!streq(verbs[i].name, verb))
                        continue;
                if (n < verbs[i].min_args || (verbs[i].max_args >= 0 && n > verbs[i].max_args))
                        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Usage: %s %s",
                                               program_invocation_short_name, verbs[i].usage);
                /* Verbs parse their own options with getopt from a fresh start. */
                optind = 0;
                return verbs[i].func(&ctx, n + 1, argv + first);
        }
        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Unknown command '%s'. See %s --help.", verb,
                               program_invocation_short_name);
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : r;
}
