#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Issue 17's fan-out benchmark: cluster mode against a single photond and against Redis used directly, by the same
# load generator in one run, the configurations interleaved round by round; prints the markdown for
# docs/performance.md ("Cluster fan-out").
#
#   tests/bench/cluster-fanout.sh [PHOTOND [PHOTON_BENCH]]
#
# One publisher pipelining M messages of B bytes (window 64) to S subscribers of one channel (photon-bench fanout):
#   - single:  one photond, the S subscribers and the publisher on it;
#   - cluster: two photond nodes sharing one redis-server, S/2 subscribers on each, the publisher on node a
#              (subscriber i on node i % 2: every publish goes through Redis' publish script and comes back to
#              both nodes on their subscriber connection);
#   - redis:   the same S clients SUBSCRIBE on a redis-server directly, the publisher PUBLISHes.
# Then the same three with window 1 (the next publish once the previous is answered) and LAT_MESSAGES messages:
# publish→delivery latency without the queue a window of 64 builds up. Every subscriber checks that it got every sequence number exactly once and in order. Server CPU is the run time
# of every server of the configuration from /proc/<pid>/task/*/schedstat (both nodes + Redis for the cluster), per
# delivered message. Everything is on Unix sockets in a private temporary directory; every run gets fresh
# servers. Environment: ROUNDS (3), MESSAGES (20000), LAT_MESSAGES (2000), BYTES (100), SUBSCRIBERS (100), KEEP=1,
# NODE_ENV="VAR=value …" for every photond (e.g. PHOTOND_BUSY_POLL_US=0), OTHER_PHOTOND=<path> another build's
# photond run single and as a cluster (its two nodes with a fresh Redis) in the same rounds (an A/B, e.g. a build
# from before cluster mode, or before a change of the cluster's code).
set -euo pipefail

. "$(dirname "$0")/cluster-lib.sh"
cluster_bench_setup cluster-fanout.sh "$@"
rounds=${ROUNDS:-3}
messages=${MESSAGES:-20000}
lat_messages=${LAT_MESSAGES:-2000}
bytes=${BYTES:-100}
subs=${SUBSCRIBERS:-100}

# start_photond [CLUSTER_NODE_ID]: a photond, a cluster node on $rsock if a node id is given; sets node_sock,
# node_pid.
start_photond() {
        n=$((n + 1))
        local home=$tmp/home.$n
        local -a cluster=()
        mkdir -p "$home"
        node_sock=$home/.data/daemon.sock
        [ $# = 0 ] || cluster=(PHOTOND_CLUSTER_URL="unix://$rsock" PHOTOND_NODE_ID="$1")
        node_pid=$(env ${NODE_ENV:-} PHOTON_HOME="$home" "${cluster[@]}" \
                "$bench" start --log "$tmp/photond.log" -- "${node_bin:-$photond}" --bus=none --socket "$node_sock")
        pids+=("$node_pid")
        [ $# = 0 ] && return 0
        # READY=1 comes before Redis is reached (photond starts without it): wait until the node takes publishes
        # and its subscriptions are confirmed (status' cluster.ready).
        python3 - "$node_sock" <<'PY'
import json, socket, sys, time
deadline = time.time() + 10
while time.time() < deadline:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b'{"type":"status","id":"s"}\n')
    buf = b''
    while not buf.endswith(b'\n'):
        buf += s.recv(65536)
    s.close()
    if json.loads(buf)["data"].get("cluster", {}).get("ready"):
        sys.exit(0)
    time.sleep(0.05)
sys.exit("node never became ready")
PY
}

# parse: the bench's stderr in $tmp/err as "msg/s cpu-us-per-msg p50 p99 cross-p50 cross-p99 lost dup ooo other
# cpu-by-pid writes-by-pid" (by pid: the servers' CPU µs and write system calls per delivered message, comma-separated).
parse() {
        python3 - "$tmp/err" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rate = float(re.search(r'delivered in [\d.]+ s = (\d+) msg/s', t).group(1))
p50, p99 = re.search(r'; latency p50 ([\d.]+) us p99 ([\d.]+) us', t).groups()
lost, dup, ooo, evo, refresh, errors, garbled, closed = (int(x) for x in re.search(
    r'lost (\d+) dup (\d+) ooo (\d+) eventId-order (\d+) refresh_needed (\d+) errors (\d+) garbled (\d+) closed (\d+)',
    t).groups())
cpu, parts = re.search(r'server CPU ([\d.]+) us per delivered message \(by --pid: ([\d. ]*)\)', t).groups()
cpu = float(cpu)
writes = re.search(r'write syscalls per delivered message \(by --pid: ([\d. ]*)\)', t).group(1)
xp50, xp99, xn = re.search(r'other-server latency p50 ([\d.]+) us p99 ([\d.]+) us \((\d+)\)', t).groups()
cross = "%.0f %.0f" % (float(xp50), float(xp99)) if int(xn) > 0 else "- -"
print("%.0f %.3f %.0f %.0f %s %d %d %d %d %s %s" % (rate, cpu, float(p50), float(p99), cross, lost, dup, ooo,
                                                    evo + refresh + errors + garbled + closed, parts.replace(' ', ','),
                                                    writes.replace(' ', ',')))
PY
}

run() {         # CONFIG BENCH-ARGS…   (window 64, or 1 for the configurations named *-w1)
        local conf=$1 rc=0 w=64 m=$messages
        shift
        [[ $conf != *-w1 ]] || { w=1; m=$lat_messages; }
        "$bench" fanout --subscribers "$subs" --publishers 1 --messages "$m" --bytes "$bytes" --window "$w" \
                "$@" >/dev/null 2>"$tmp/err" || rc=$?
        sed "s/^/[$conf] /" "$tmp/err" >&2
        [ "$rc" = 0 ] || { echo "cluster-fanout.sh: the $conf run failed (a check failed or it timed out)" >&2; exit 1; }
        results[$conf,$round]=$(parse)
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%FT%TZ)
declare -A results
confs="single ${OTHER_PHOTOND:+other} cluster ${OTHER_PHOTOND:+other-cluster} redis"
for round in $(seq "$rounds"); do
        for w in "" -w1; do
                for conf in $confs; do
                        node_bin=$photond
                        case $conf in
                        single|other)
                                [ "$conf" = single ] || node_bin=$OTHER_PHOTOND
                                start_photond
                                run "$conf$w" --target photon --socket "$node_sock" --pid "$node_pid"
                                stop_server "$node_pid"
                                ;;
                        cluster|other-cluster)
                                [ "$conf" = cluster ] || node_bin=$OTHER_PHOTOND
                                start_redis
                                start_photond bench-a; a_sock=$node_sock a_pid=$node_pid
                                start_photond bench-b; b_sock=$node_sock b_pid=$node_pid
                                run "$conf$w" --target photon --socket "$a_sock,$b_sock" \
                                        --pid "$a_pid,$b_pid,$redis_pid"
                                # what Redis counted for the publish script (its own CPU µs per call)
                                redis-cli -s "$rsock" INFO commandstats | tr -d '\r' \
                                        | grep -E '^cmdstat_(evalsha|publish):' | sed "s/^/[$conf$w] redis /" >&2 || true
                                stop_server "$a_pid"; stop_server "$b_pid"; stop_server "$redis_pid"
                                ;;
                        redis)
                                start_redis
                                run "$conf$w" --target redis --socket "$rsock" --pid "$redis_pid"
                                stop_server "$redis_pid"
                                ;;
                        esac
                done
        done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

label() {
        case $1 in
        single) echo "single photond" ;;
        other) echo "single photond, other build" ;;
        cluster) echo "2 nodes + Redis" ;;
        other-cluster) echo "2 nodes + Redis, other build" ;;
        redis) echo "Redis directly" ;;
        esac
}

echo
echo "### Cluster fan-out: 1 publisher, $subs subscribers (cluster: $((subs - subs / 2)) on node a, the publisher's, and $((subs / 2)) on node b), messages of $bytes bytes, $rounds rounds"
echo
echo "$started, $(nproc) CPUs, load average $load0 at the start and $load1 at the end; photond $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?')${OTHER_PHOTOND:+ (other build: $OTHER_PHOTOND)}, Redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2)${NODE_ENV:+, photond environment $NODE_ENV}."
echo
echo "Window 64, $messages messages per run:"
echo
echo "| round | configuration | delivered msg/s | server CPU µs per delivered message | of which, by server | server write calls per delivered message | p50 µs | p99 µs | other node's subscribers: p50 / p99 µs | lost / dup / out of order | other faults |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
        for conf in $confs; do
                read -r rate cpu p50 p99 xp50 xp99 lost dup ooo other parts writes <<<"${results[$conf,$round]}"
                if [[ $conf = *cluster ]]; then
                        IFS=, read -r pa pb pr <<<"$parts"
                        parts="a $pa, b $pb, Redis $pr"
                        IFS=, read -r pa pb pr <<<"$writes"
                        writes="a $pa, b $pb, Redis $pr"
                else
                        parts=""
                fi
                echo "| $round | $(label $conf) | $rate | $cpu | $parts | $writes | $p50 | $p99 | $xp50 / $xp99 | $lost / $dup / $ooo | $other |"
        done
done
echo
echo "| round | cluster CPU / Redis CPU per message (target ≤ 1) | single / Redis | cluster msg/s / Redis msg/s |${OTHER_PHOTOND:+ single msg/s this/other build | single CPU per message this/other | other build: cluster CPU / Redis CPU |}"
echo "|---|---|---|---|${OTHER_PHOTOND:+---|---|---|}"
for round in $(seq "$rounds"); do
        read -r sr sc _ <<<"${results[single,$round]}"
        read -r cr cc _ <<<"${results[cluster,$round]}"
        read -r rr rc _ <<<"${results[redis,$round]}"
        extra=""
        if [ -n "${OTHER_PHOTOND:-}" ]; then
                read -r orr oc _ <<<"${results[other,$round]}"
                read -r _ occ _ <<<"${results[other-cluster,$round]}"
                extra=$(python3 -c "print(' %.2f | %.2f | %.2f |' % ($sr / $orr, $sc / $oc, $occ / $rc))")
        fi
        python3 -c "print('| $round | %.2f | %.2f | %.2f |$extra' % ($cc / $rc, $sc / $rc, $cr / $rr))"
done
echo
echo "Window 1 (the next publish once the previous is answered), $lat_messages messages per run: publish→delivery latency"
echo
echo "| round | configuration | p50 µs | p99 µs | other node's subscribers: p50 / p99 µs | server CPU µs per delivered message | lost / dup / out of order | other faults |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
        for conf in $confs; do
                read -r rate cpu p50 p99 xp50 xp99 lost dup ooo other parts <<<"${results[$conf-w1,$round]}"
                echo "| $round | $(label $conf) | $p50 | $p99 | $xp50 / $xp99 | $cpu | $lost / $dup / $ooo | $other |"
        done
done
