#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Cluster-mode locks against Redis used directly, side by side in one run; prints the markdown for
# docs/performance.md ("Cluster locks").
#
#   tests/bench/cluster-locks.sh [PHOTOND [PHOTON_BENCH]]
#
# 8 clients doing lock+unlock pairs (immediate retry when refused) on K = 1 and K = 64 names for SECS seconds:
#   - cluster: the clients spread over two photond nodes (4 each) sharing one redis-server; every lock request is
#     one script call in Redis (docs/cluster.md, "Locks");
#   - relay: the same path through two lock-relays (tests/bench/lock-relay.c), the cheapest node possible: a plain
#     SET NX PX or compare-and-delete for each request, pipelined; its rate bounds any node that waits for Redis;
#   - redis: the same 8 clients on that Redis directly, SET key token NX PX + a compare-and-delete EVALSHA.
# Server CPU is read from /proc/<pid> (schedstat) of every server of the configuration: both nodes and Redis for
# the cluster, Redis alone for the direct run; it is shown per lock+unlock pair. Everything is on Unix sockets in a
# private temporary directory; every run gets fresh servers. Environment: ROUNDS (3), SECS (2), KEEP=1,
# NODE_ENV="VAR=value …" for the photond nodes (e.g. PHOTOND_BUSY_POLL_US=0), OTHER_PHOTOND=<path> another build's
# photond, run as a second cluster in the same rounds (an A/B).
set -euo pipefail

. "$(dirname "$0")/cluster-lib.sh"
cluster_bench_setup cluster-locks.sh "$@"
rounds=${ROUNDS:-3}
secs=${SECS:-2}
relay=$(dirname "$bench")/lock-relay
[ -x "$relay" ] || { echo "cluster-locks.sh: no lock-relay next to $bench" >&2; exit 2; }

# start_node NAME: a photond node of the cluster on $rsock; sets node_sock, node_pid.
start_node() {
        n=$((n + 1))
        local home=$tmp/home.$n
        mkdir -p "$home"
        node_sock=$home/.data/daemon.sock
        node_pid=$(env ${NODE_ENV:-} PHOTON_HOME="$home" PHOTOND_CLUSTER_URL="unix://$rsock" PHOTOND_NODE_ID="$1" \
                "$bench" start --log "$tmp/photond.log" -- "${node_bin:-$photond}" --bus=none --socket "$node_sock")
        pids+=("$node_pid")
        # READY=1 comes before Redis is reached (photond starts without it): wait for the lock backend.
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
    if json.loads(buf)["data"].get("clusterLocks", {}).get("connected"):
        sys.exit(0)
    time.sleep(0.05)
sys.exit("node never connected to Redis")
PY
}

# start_relay: a lock-relay (the cheapest possible node) on $rsock; sets node_sock, node_pid.
start_relay() {
        n=$((n + 1))
        node_sock=$tmp/relay.$n.sock
        node_pid=$("$bench" start --log "$tmp/relay.log" -- "$relay" --socket "$node_sock" --redis "$rsock")
        pids+=("$node_pid")
}

# row CONFIG K: parses the bench's stderr line in $tmp/err into "pairs/s cpu-us-per-pair violations".
parse() {
        python3 - "$tmp/err" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
pairs, secs = re.search(r'(\d+) pairs in ([\d.]+) s', t).groups()
refused = int(re.search(r'refused attempts (\d+)', t).group(1))
per_req = float(re.search(r'= ([\d.]+) us per request', t).group(1))
viol = sum(int(x) for x in re.search(r'exclusion violations (\d+), token order violations (\d+), failed releases (\d+), errors (\d+)', t).groups())
pairs = int(pairs)
p50 = re.search(r'request p50 ([\d.]+) us', t).group(1)
print("%.0f %.2f %d %d %s" % (pairs / float(secs), per_req * (2 * pairs + refused) / max(pairs, 1), viol, refused, p50))
PY
}

declare -A results
for round in $(seq "$rounds"); do
        for k in 1 64; do
                set -- locks --clients 8 --names "$k" --pairs 100000000 --duration "$secs"

                for conf in cluster ${OTHER_PHOTOND:+other}; do
                        node_bin=$photond
                        [ "$conf" = cluster ] || node_bin=$OTHER_PHOTOND
                        start_redis
                        start_node bench-a; a_sock=$node_sock a_pid=$node_pid
                        start_node bench-b; b_sock=$node_sock b_pid=$node_pid
                        rc=0
                        "$bench" "$@" --target photon --socket "$a_sock,$b_sock" --pid "$a_pid,$b_pid,$redis_pid" \
                                >/dev/null 2>"$tmp/err" || rc=$?
                        cat "$tmp/err" >&2
                        [ "$rc" = 0 ] || { echo "cluster-locks.sh: the $conf run failed" >&2; exit 1; }
                        results[$conf,$k,$round]=$(parse)
                        stop_server "$a_pid"; stop_server "$b_pid"; stop_server "$redis_pid"
                done

                # The ceiling: the same two-hop path through lock-relay, which does the least any node can.
                start_redis
                start_relay; a_sock=$node_sock a_pid=$node_pid
                start_relay; b_sock=$node_sock b_pid=$node_pid
                rc=0
                "$bench" "$@" --target photon --socket "$a_sock,$b_sock" --pid "$a_pid,$b_pid,$redis_pid" \
                        >/dev/null 2>"$tmp/err" || rc=$?
                cat "$tmp/err" >&2
                [ "$rc" = 0 ] || { echo "cluster-locks.sh: the relay run failed" >&2; exit 1; }
                results[relay,$k,$round]=$(parse)
                stop_server "$a_pid"; stop_server "$b_pid"; stop_server "$redis_pid"

                start_redis
                rc=0
                "$bench" "$@" --target redis --socket "$rsock" --pid "$redis_pid" >/dev/null 2>"$tmp/err" || rc=$?
                cat "$tmp/err" >&2
                [ "$rc" = 0 ] || { echo "cluster-locks.sh: the Redis run failed" >&2; exit 1; }
                results[redis,$k,$round]=$(parse)
                stop_server "$redis_pid"
        done
done

echo
echo "### Cluster locks: 8 clients (4 on each of two photond nodes) vs the same 8 clients on Redis directly, ${secs} s per run, $rounds rounds"
echo
echo "| K | round | cluster pairs/s | relay pairs/s | Redis pairs/s | cluster/Redis | relay/Redis | cluster/relay | request p50 µs (cluster / relay / Redis) | CPU µs per pair (cluster: 2 nodes + Redis / relay: 2 relays + Redis / Redis) | refused (cluster / Redis) | violations |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for k in 1 64; do
        for round in $(seq "$rounds"); do
                read -r cr cc cv cf cp <<<"${results[cluster,$k,$round]}"
                read -r lr lc lv lf lp <<<"${results[relay,$k,$round]}"
                read -r rr rc rv rf rp <<<"${results[redis,$k,$round]}"
                ratios=$(python3 -c "print('%.2f | %.2f | %.2f' % ($cr / $rr, $lr / $rr, $cr / $lr))")
                echo "| $k | $round | $cr | $lr | $rr | $ratios | $cp / $lp / $rp | $cc / $lc / $rc | $cf / $rf | $((cv + lv + rv)) |"
        done
done
if [ -n "${OTHER_PHOTOND:-}" ]; then
        echo
        echo "Other build ($OTHER_PHOTOND), the same rounds:"
        echo
        echo "| K | round | other pairs/s | other/Redis | this/other | other CPU µs per pair | violations |"
        echo "|---|---|---|---|---|---|---|"
        for k in 1 64; do
                for round in $(seq "$rounds"); do
                        read -r cr _ _ _ <<<"${results[cluster,$k,$round]}"
                        read -r orr oc ov _ <<<"${results[other,$k,$round]}"
                        read -r rr _ _ _ <<<"${results[redis,$k,$round]}"
                        echo "| $k | $round | $orr | $(python3 -c "print('%.2f' % ($orr / $rr))") |" \
                             "$(python3 -c "print('%.2f' % ($cr / $orr))") | $oc | $ov |"
                done
        done
fi
