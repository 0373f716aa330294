#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Two photond builds against each other, in one run, alternating: for a change that must not cost performance
# (a refactor) rather than for the Redis targets (run.sh). Prints the markdown for docs/performance.md.
#
#   tests/bench/ab.sh A_PHOTOND B_PHOTOND [PHOTON_BENCH]
#
# PHOTON_BENCH defaults to the tests/bench/photon-bench of B's build directory. Build both optimised
# (meson --buildtype=release). Environment:
#   ROUNDS=5          rounds; every round runs every configuration once with each build, A first in odd rounds
#                     and B first in even ones, so a drift of the machine's load during the run hits both alike
#   SCENARIOS="fanout locks conns"
#   A_REV, B_REV      the source revisions to name in the header
#   QUICK=1           tiny counts, to check the script itself (numbers mean nothing)
#
# Figures: fanout (1 publisher, window 64, S subscribers on one channel): delivered msg/s, p99 µs and photond's CPU
# time per delivered message (its CPU share of the run over the delivery rate); locks (8 clients, acquire+release
# with immediate retry on K names for 1 s): pairs/s, request p99 µs, CPU µs per pair; conns (N idle subscribers,
# one publish): ms until every one has it. The ratio column is B over A per round: the median, lowest and highest.
set -euo pipefail

a=$(realpath "${1:?usage: ab.sh A_PHOTOND B_PHOTOND [PHOTON_BENCH]}")
b=$(realpath "${2:?usage: ab.sh A_PHOTOND B_PHOTOND [PHOTON_BENCH]}")
bench=${3:-$(dirname "$(dirname "$b")")/tests/bench/photon-bench}
[ -x "$a" ] && [ -x "$b" ] && [ -x "$bench" ] || { echo "ab.sh: missing binary (A, B or photon-bench)" >&2; exit 2; }
rounds=${ROUNDS:-5}
scenarios=${SCENARIOS:-fanout locks conns}
if [ "${QUICK:-0}" = 1 ]; then
        m10=5000 m100=1000 conns=500 rounds=${ROUNDS:-1}
else
        m10=200000 m100=30000 conns=10000
fi

tmp=$(mktemp -d /tmp/photon-ab.XXXXXX)
server_pid=
cleanup() {
        [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
        rm -rf "$tmp"
}
trap cleanup EXIT

. "$(dirname "$0")/bench-lib.sh"

n=0
# run BINARY ROWFILE ARGS...: one run against a fresh photond (READY=1 through photon-bench start).
run() {
        local bin=$1 rows=$2 home sock
        shift 2
        n=$((n + 1))
        home=$tmp/home.$n
        mkdir -p "$home"
        sock=$home/.data/daemon.sock
        server_pid=$(PHOTON_HOME="$home" "$bench" start --log "$tmp/photond.log" -- "$bin" --bus=none --socket "$sock")
        "$bench" "$@" --target photon --socket "$sock" --pid "$server_pid" >>"$rows" 2>>"$tmp/log"
        stop_server "$server_pid"
        server_pid=
}

# pair ROUND NAME ARGS...: the same run with A and B, in the round's order.
pair() {
        local round=$1 name=$2
        shift 2
        if [ $((round % 2)) = 1 ]; then
                run "$a" "$tmp/$name.a" "$@"
                run "$b" "$tmp/$name.b" "$@"
        else
                run "$b" "$tmp/$name.b" "$@"
                run "$a" "$tmp/$name.a" "$@"
        fi
}

# col FILE EXPR: one number per row (row i = round i); EXPR is awk over the table's cells ($6 is the 5th cell).
col() {
        awk -F'|' "{ gsub(/[ %]/, \"\"); print $2 }" "$1"
}

# stats A_VALUES B_VALUES: "median A | median B | B/A median (lo–hi)".
stats() {
        paste <(echo "$1") <(echo "$2") | awk '
                function med(v, k,   i, j, t) {
                        for (i = 0; i < k; i++) for (j = i + 1; j < k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
                        return k % 2 ? v[(k - 1) / 2] : (v[k / 2 - 1] + v[k / 2]) / 2
                }
                { n = NR; x[n - 1] = $1; y[n - 1] = $2; r[n - 1] = $1 > 0 ? $2 / $1 : 0 }
                END {
                        ma = med(x, n); mb = med(y, n); mr = med(r, n)
                        printf "%.4g | %.4g | %.3f (%.3f–%.3f)", ma, mb, mr, r[0], r[n - 1]
                }'
}

rows=$tmp/rows.md
for round in $(seq "$rounds"); do
        for s in $scenarios; do
                case $s in
                fanout)
                        pair "$round" fanout.10 fanout --subscribers 10 --bytes 64 --messages "$m10"
                        pair "$round" fanout.100 fanout --subscribers 100 --bytes 64 --messages "$m100"
                        ;;
                locks)
                        for k in 1 64; do
                                pair "$round" "locks.$k" locks --clients 8 --names "$k" --pairs 10000000 --duration 1
                        done
                        ;;
                conns)
                        pair "$round" conns conns --conns "$conns"
                        ;;
                esac
        done
done

for s in $scenarios; do
        case $s in
        fanout)
                for sub in 10 100; do
                        f=$tmp/fanout.$sub
                        echo "| fanout S=$sub B=64: delivered msg/s | $(stats "$(col "$f.a" '$6')" "$(col "$f.b" '$6')") |"
                        echo "| fanout S=$sub B=64: p99 µs | $(stats "$(col "$f.a" '$8')" "$(col "$f.b" '$8')") |"
                        echo "| fanout S=$sub B=64: photond CPU µs per delivered msg | $(stats "$(col "$f.a" '$12 * 10000 / $6')" "$(col "$f.b" '$12 * 10000 / $6')") |"
                done
                ;;
        locks)
                for k in 1 64; do
                        f=$tmp/locks.$k
                        echo "| locks K=$k: pairs/s | $(stats "$(col "$f.a" '$6')" "$(col "$f.b" '$6')") |"
                        echo "| locks K=$k: request p99 µs | $(stats "$(col "$f.a" '$8')" "$(col "$f.b" '$8')") |"
                        echo "| locks K=$k: photond CPU µs per pair | $(stats "$(col "$f.a" '$12 * 10000 / $6')" "$(col "$f.b" '$12 * 10000 / $6')") |"
                done
                ;;
        conns)
                echo "| conns N=$conns: ms until all have the publish | $(stats "$(col "$tmp/conns.a" '$4')" "$(col "$tmp/conns.b" '$4')") |"
                ;;
        esac
done >"$rows"

echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`tests/bench/ab.sh\`, $rounds rounds alternating A and B; $(nproc) CPUs," \
        "$(lscpu | sed -n 's/^Model name: *//p' | head -1), load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
echo "A: ${A_REV:-$a}; B: ${B_REV:-$b}."
echo
echo "| figure | A (median) | B (median) | B/A per round: median (lowest–highest) |"
echo "|---|---|---|---|"
cat "$rows"
if grep -q -E 'lost [1-9]|dup [1-9]|ooo [1-9]|violations [1-9]|errors [1-9]' "$tmp/log"; then
        echo
        echo "ab.sh: a run reported lost, duplicate or out-of-order messages, errors or exclusion violations:" >&2
        grep -E 'lost [1-9]|dup [1-9]|ooo [1-9]|violations [1-9]|errors [1-9]' "$tmp/log" >&2
        exit 1
fi
