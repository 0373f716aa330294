/* SPDX-License-Identifier: MIT */

/* photond: the Photon daemon. Command line and main(); everything else lives in the Manager. */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "photond-manager.h"

static const char *arg_socket = NULL;
static bool arg_system = false;
static BusMode arg_bus = BUS_MODE_AUTO;

static void help(void) {
        printf("%s [OPTIONS...]\n\n"
               "The Photon daemon: pub/sub channels, locks, scheduled jobs, webhooks and method dispatch\n"
               "for Photon clients, over a Unix socket speaking newline-delimited JSON.\n\n"
               "  -h --help              Show this help\n"
               "     --version           Show the version\n"
               "     --socket=PATH       Control socket (default: ${PHOTON_HOME:-~/.photon}/.data/daemon.sock,\n"
               "                         or /run/photon/daemon.sock with --system)\n"
               "     --system            Run the system instance (state in $STATE_DIRECTORY or /var/lib/photon,\n"
               "                         handlers in /etc/photon/handlers, system bus)\n"
               "     --bus=user|system|none\n"
               "                         Which D-Bus bus to publish org.photond.Daemon1 on\n"
               "     --log-level=LEVEL   err, warning, notice, info (default) or debug\n\n"
               "See photond(8) for the environment variables and limits.\n",
               program_invocation_short_name);
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_SOCKET,
                ARG_SYSTEM,
                ARG_BUS,
                ARG_LOG_LEVEL,
        };
        static const struct option options[] = {
                { "help",      no_argument,       NULL, 'h'           },
                { "version",   no_argument,       NULL, ARG_VERSION   },
                { "socket",    required_argument, NULL, ARG_SOCKET    },
                { "system",    no_argument,       NULL, ARG_SYSTEM    },
                { "bus",       required_argument, NULL, ARG_BUS       },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("photond %s\n", PHOTOND_VERSION);
                        return 0;
                case ARG_SOCKET:
                        arg_socket = optarg;
                        break;
                case ARG_SYSTEM:
                        arg_system = true;
                        break;
                case ARG_BUS:
                        arg_bus = bus_mode_from_string(optarg);
                        if (arg_bus < 0 || arg_bus == BUS_MODE_AUTO)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                                       "Invalid --bus= value '%s': expected user, system or none.",
                                                       optarg);
                        break;
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0)
                                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                                       "Invalid --log-level= value '%s'.", optarg);
                        log_set_max_level(r);
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }

        if (optind < argc)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "%s takes no positional arguments.",
                                       program_invocation_short_name);
        return 1;
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        ManagerConfig config;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        config = (ManagerConfig) {
                .system = arg_system,
                .socket_path = arg_socket,
                .bus_mode = arg_bus,
        };

        r = manager_new(&config, &m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the daemon: %m");

        r = manager_startup(m);
        if (r < 0)
                return r;

        return manager_run(m);
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        /* A second daemon on a live socket is not an error of this one's making: a distinct code for scripts. */
        if (r == -EADDRINUSE)
                return 2;
        return r < 0 ? EXIT_FAILURE : r;
}
