#!/bin/sh
# SPDX-License-Identifier: MIT
# An exec handler for a photon "sysinfo": install it as <handlers>/sysinfo (one file for every method, the method
# comes as $1), e.g.  install -m 0755 handler.sh ~/.photon/handlers/sysinfo
# and call it with  photonctl call sysinfo uptime
#
# photond runs it with the call's args as one line of JSON on stdin, a clean environment (PATH, HOME,
# PHOTON_NAME, PHOTON_METHOD, PHOTON_TRIGGER, and PHOTON_JOB_ID for jobs), in its own process group.
# stdout is the result (JSON if it parses, else a string); stderr goes to the journal; exit non-zero to fail.
set -eu

read -r args || args='{}'

case "$1" in
uptime)
        read -r up _ < /proc/uptime
        printf '{"seconds":%s,"load":"%s"}\n' "$up" "$(cut -d' ' -f1-3 /proc/loadavg)"
        ;;
echo)
        # The args as they came: already JSON.
        printf '%s\n' "$args"
        ;;
whoami)
        # Plain text is a string result.
        echo "$(id -un) via $PHOTON_TRIGGER"
        ;;
disk)
        echo "checking $HOME" >&2
        df -P "$HOME" | awk 'NR == 2 { printf "{\"mount\":\"%s\",\"usedPercent\":%d}\n", $6, $5 }'
        ;;
*)
        echo "unknown method '$1'" >&2
        exit 2
        ;;
esac
