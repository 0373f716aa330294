# SPDX-License-Identifier: MIT
#
# What the benchmark scripts share (run.sh, ab.sh, and cluster-lib.sh for the cluster benches): finding the builds
# and stopping a server. Sourced, not run:
#
#   . "$(dirname "$0")/bench-lib.sh"
#   bench_find_builds NAME [PHOTOND [PHOTON_BENCH]]   # sets src, photond, builddir, bench; exits 2 if one is missing

bench_find_builds() {
        local name=$1 d
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
        [ -n "$photond" ] && [ -x "$photond" ] || { echo "$name: no photond found; pass its path" >&2; exit 2; }
        photond=$(realpath "$photond")
        builddir=$(dirname "$(dirname "$photond")")
        [ -n "$bench" ] || bench=$builddir/tests/bench/photon-bench
        [ -x "$bench" ] || { echo "$name: no photon-bench at $bench; pass its path" >&2; exit 2; }
}

# Waits until a server we started (not our child: photon-bench start forked it) is gone.
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
