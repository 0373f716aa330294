# SPDX-License-Identifier: MIT
#
# What tests/bench/cluster-fanout.sh and cluster-locks.sh share: finding the builds, the temporary directory and
# its cleanup, starting a redis-server and stopping a server. Sourced, not run:
#
#   . "$(dirname "$0")/cluster-lib.sh"
#   cluster_bench_setup NAME "$@"     # sets src, photond, bench, tmp, pids; exits 2 when something is missing

cluster_bench_setup() {
        bench_name=$1
        src=$(cd "$(dirname "$0")/../.." && pwd)
        photond=${2:-}
        bench=${3:-}
        if [ -z "$photond" ]; then
                for d in "$src/build-release" "$src/build" "$src"/build-*; do
                        if [ -x "$d/src/photond" ] && [ -x "$d/tests/bench/photon-bench" ]; then
                                photond=$d/src/photond
                                break
                        fi
                done
        fi
        [ -n "$photond" ] && [ -x "$photond" ] || { echo "$bench_name: no photond found; pass its path" >&2; exit 2; }
        photond=$(realpath "$photond")
        builddir=$(dirname "$(dirname "$photond")")
        [ -n "$bench" ] || bench=$builddir/tests/bench/photon-bench
        [ -x "$bench" ] || { echo "$bench_name: no photon-bench at $bench" >&2; exit 2; }
        command -v redis-server >/dev/null || { echo "$bench_name: redis-server is not installed" >&2; exit 2; }

        tmp=$(mktemp -d "/tmp/photon-${bench_name%.sh}.XXXXXX")
        pids=()
        trap cluster_bench_cleanup EXIT
        n=0
}

cluster_bench_cleanup() {
        for p in "${pids[@]}"; do
                kill "$p" 2>/dev/null || true
        done
        if [ "${KEEP:-0}" = 1 ]; then echo "$bench_name: kept $tmp" >&2; else rm -rf "$tmp"; fi
}

stop_server() {
        local pid=$1 state
        kill "$pid" 2>/dev/null || return 0
        for _ in $(seq 200); do
                state=$(sed 's/^.*) \(.\).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 0
                [ "$state" = Z ] && return 0
                sleep 0.05
        done
        kill -9 "$pid" 2>/dev/null || true
}

# A fresh redis-server on a Unix socket; sets rsock, redis_pid.
start_redis() {
        n=$((n + 1))
        rsock=$tmp/redis.$n.sock
        redis_pid=$("$bench" start --log "$tmp/redis.log" -- redis-server --port 0 --unixsocket "$rsock" \
                --unixsocketperm 700 --dir "$tmp" --save '' --appendonly no --maxclients 20000 --supervised systemd)
        pids+=("$redis_pid")
}
