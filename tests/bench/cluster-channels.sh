#!/bin/bash
# SPDX-License-Identifier: MIT
# Cluster mode's channels against a single node, in one run: publish→delivery latency (p50/p99) and the rate of one
# publisher (cluster-latency.c), for
#   single:      one photond, publisher and subscriber on it;
#   cluster-same: two photond nodes sharing one redis-server, publisher and subscriber on node a;
#   cluster-cross: the same, the subscriber on node b.
# Everything on Unix sockets in a private temporary directory; servers started by `photon-bench start` (READY=1).
#
#   tests/bench/cluster-channels.sh BUILD_DIR [MESSAGES]
set -euo pipefail

build=${1:?usage: cluster-channels.sh BUILD_DIR [MESSAGES]}
n=${2:-2000}
bench=$build/tests/bench/photon-bench
lat=$build/tests/bench/cluster-latency
photond=$build/src/photond
command -v redis-server >/dev/null || { echo "cluster-channels.sh: redis-server is not installed" >&2; exit 2; }

tmp=$(mktemp -d /tmp/photond-cluster-bench.XXXXXX)
pids=()
cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        sleep 0.3
        rm -rf "$tmp"
}
trap cleanup EXIT

start_photond() {       # NAME [ENV...]
        local name=$1
        shift
        mkdir -p "$tmp/$name"
        env "$@" PHOTON_HOME="$tmp/$name" "$bench" start --log "$tmp/$name.log" -- \
                "$photond" --bus=none --socket "$tmp/$name/daemon.sock"
}

pids+=("$("$bench" start --log "$tmp/redis.log" -- redis-server --port 0 --unixsocket "$tmp/redis.sock" \
        --unixsocketperm 700 --dir "$tmp" --save '' --appendonly no --supervised systemd)")
pids+=("$(start_photond single)")
pids+=("$(start_photond a PHOTOND_CLUSTER_URL="unix://$tmp/redis.sock" PHOTOND_NODE_ID=a)")
pids+=("$(start_photond b PHOTOND_CLUSTER_URL="unix://$tmp/redis.sock" PHOTOND_NODE_ID=b)")

echo "# $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $(redis-server --version | cut -d' ' -f1-3), n=$n"
echo -n "single:        "; "$lat" --pub "$tmp/single/daemon.sock" --sub "$tmp/single/daemon.sock" --messages "$n" | paste -sd' '
echo -n "cluster-same:  "; "$lat" --pub "$tmp/a/daemon.sock" --sub "$tmp/a/daemon.sock" --messages "$n" | paste -sd' '
echo -n "cluster-cross: "; "$lat" --pub "$tmp/a/daemon.sock" --sub "$tmp/b/daemon.sock" --messages "$n" | paste -sd' '
# What a publish costs Redis (its own accounting: CPU µs per script call).
echo -n "redis:         "; redis-cli -s "$tmp/redis.sock" INFO commandstats | grep '^cmdstat_evalsha:' | tr -d '\r'
