# SPDX-License-Identifier: MIT
#
# What tests/bench/cluster-fanout.sh and cluster-locks.sh share: finding the builds and stopping a server
# (bench-lib.sh), the temporary directory and its cleanup, starting a redis-server. Sourced, not run:
#
#   . "$(dirname "$0")/cluster-lib.sh"
#   cluster_bench_setup NAME "$@"     # sets src, photond, bench, tmp, pids; exits 2 when something is missing

. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

cluster_bench_setup() {
        bench_name=$1
        bench_find_builds "$@"
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

# A fresh redis-server on a Unix socket; sets rsock, redis_pid.
start_redis() {
        n=$((n + 1))
        rsock=$tmp/redis.$n.sock
        redis_pid=$("$bench" start --log "$tmp/redis.log" -- redis-server --port 0 --unixsocket "$rsock" \
                --unixsocketperm 700 --dir "$tmp" --save '' --appendonly no --maxclients 20000 --supervised systemd)
        pids+=("$redis_pid")
}
