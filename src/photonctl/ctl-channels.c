/* SPDX-License-Identifier: MIT */

/* photonctl verbs for channels: publish, subscribe (a long-running stream), channels. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl-util.h"
#include "log.h"
#include "string-util.h"

int verb_publish(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("publish"), *reply = NULL,
                *message = NULL;
        struct json_object *data;
        int r;

        if (!req)
                return log_oom();
        r = ctl_parse_json_arg(argv[2], "The message", &message);
        if (r < 0)
                return r;
        /* JSON null parses to NULL: it is published as null, not left out. */
        if (json_add_string(req, "channel", argv[1]) < 0 ||
            json_object_object_add(req, "message", TAKE_PTR(message)) < 0)
                return log_oom();

        r = ctl_call(ctx, req, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                ctl_print_json(reply);
        r = ctl_check_reply(reply, "publish");
        if (r < 0 || ctx->json)
                return r;
        if (json_object_object_get_ex(reply, "data", &data))
                printf("Published on %s as event %s.\n", argv[1],
                       json_object_get_string(json_object_object_get(data, "eventId")));
        return 0;
}

static volatile sig_atomic_t stop_requested = 0;

static void on_stop_signal(int sig) {
        stop_requested = 1;
}

static void print_push(const CtlContext *ctx, struct json_object *o) {
        const char *type = json_get_string(o, "type"), *channel = json_get_string(o, "channel");
        struct json_object *message, *v;

        if (ctx->json) {
                ctl_print_json(o);
                return;
        }
        if (streq_ptr(type, "refresh_needed")) {
                printf("%s refresh-needed\n", channel ?: "-");
                return;
        }
        printf("%s %s", channel ?: "-",
               json_object_object_get_ex(o, "eventId", &v) ? json_object_get_string(v) : "-");
        if (json_object_object_get_ex(o, "message", &message))
                printf(" %s", json_object_to_json_string_ext(message, JSON_FORMAT_FLAGS));
        if (json_object_object_get_ex(o, "replay", &v) && json_object_get_boolean(v))
                fputs(" (replay)", stdout);
        putchar('\n');
}

int verb_subscribe(CtlContext *ctx, int argc, char *argv[]) {
        enum { ARG_SINCE = 0x100 };
        static const struct option options[] = {
                { "since", required_argument, NULL, ARG_SINCE },
                {}
        };
        _cleanup_close_ int fd = -EBADF;
        struct sigaction sa = { .sa_handler = on_stop_signal };
        const char *since = NULL;
        uint64_t since_id = 0;
        unsigned pending;
        int c, r;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case ARG_SINCE:
                        since = optarg;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        if (since && safe_atou64(since, &since_id) < 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "--since needs an eventId (a number): %s", since);
        if (optind >= argc)
                return ctl_usage_error(argv[0]);

        /* Lines go out as they arrive, also into a pipe. */
        setvbuf(stdout, NULL, _IOLBF, 0);

        /* No SA_RESTART: Ctrl-C interrupts the wait for the next message and we leave cleanly. */
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGTERM, &sa, NULL);

        r = ctl_connect(ctx, &fd);
        if (r < 0)
                return r;

        for (int i = optind; i < argc; i++) {
                _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("subscribe");

                if (!req ||
                    json_add_string(req, "channel", argv[i]) < 0 ||
                    (since && json_add_int64(req, "lastEventId", (int64_t) since_id) < 0))
                        return log_oom();
                r = ctl_send(fd, req);
                if (r < 0)
                        return log_error_errno(r, "Failed to subscribe: %m");
        }
        pending = argc - optind;

        while (!stop_requested) {
                _cleanup_(json_object_putp) struct json_object *o = NULL;
                const char *type;

                r = ctl_recv(fd, -1, &o);
                if (r == -EINTR)
                        continue;
                if (r == -ECONNRESET)
                        return log_error_errno(r, "photond closed the connection.");
                if (r < 0)
                        return log_error_errno(r, "Failed to read from photond: %m");

                type = json_get_string(o, "type");
                if (streq_ptr(type, "channel_message") || streq_ptr(type, "refresh_needed"))
                        print_push(ctx, o);
                else if (streq_ptr(type, "shutdown"))
                        return log_error_errno(SYNTHETIC_ERRNO(ECONNRESET), "photond is shutting down.");
                else if (pending > 0 && (streq_ptr(type, "result") || streq_ptr(type, "error"))) {
                        r = ctl_check_reply(o, "subscribe");
                        if (r < 0)
                                return r;
                        pending--;
                }
        }
        return 0;
}

int verb_channels(CtlContext *ctx, int argc, char *argv[]) {
        _cleanup_(json_object_putp) struct json_object *req = ctl_request_new("status"), *reply = NULL;
        struct json_object *list;
        size_t n;
        int r;

        if (req && json_add_bool(req, "channelList", true) < 0)
                return log_oom();
        /* With --json the reply as it came, as every listing verb prints it (the list is data.channelList). */
        r = ctl_query(ctx, req, "channels", &reply);
        if (r <= 0)
                return r;
        list = json_object_object_get(json_object_object_get(reply, "data"), "channelList");
        if (!json_object_is_type(list, json_type_array))
                return log_error_errno(SYNTHETIC_ERRNO(EPROTO), "This photond does not list its channels.");

        n = json_object_array_length(list);
        if (n == 0) {
                puts("No channels.");
                return 0;
        }
        printf("%-40s %11s %8s %10s %15s\n", "CHANNEL", "SUBSCRIBERS", "EVENTS", "BYTES", "LAST EVENT");
        for (size_t i = 0; i < n; i++) {
                struct json_object *e = json_object_array_get_idx(list, i);
                int64_t subs = 0, events = 0, bytes = 0, last = 0;

                (void) json_get_int64(e, "subscribers", false, &subs);
                (void) json_get_int64(e, "bufferedEvents", false, &events);
                (void) json_get_int64(e, "bufferedBytes", false, &bytes);
                (void) json_get_int64(e, "lastEventId", false, &last);
                printf("%-40s %11" PRIi64 " %8" PRIi64 " %10" PRIi64 " %15s\n", json_get_string(e, "name") ?: "?",
                       subs, events, bytes, last > 0 ? json_object_get_string(json_object_object_get(e, "lastEventId")) : "-");
        }
        return 0;
}
