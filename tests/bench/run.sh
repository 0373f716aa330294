#!/bin/bash
# SPDX-License-Identifier: MIT
#
# photond and Redis side by side on this machine, in one run; prints the markdown for docs/performance.md.
#
#   tests/bench/run.sh [PHOTOND [PHOTON_BENCH]]
#
# PHOTOND defaults to the first of build-release/, build/, build-*/ that holds src/photond; PHOTON_BENCH to the
# tests/bench/photon-bench of the same build directory. Build photond optimised (meson --buildtype=release):
# the header says which build type was measured. Environment:
#   SCENARIOS="fanout conns locks webhook"   what to run; "busypoll" (not in the default) measures photond alone
#                                            with and without busy polling: its CPU time per request at paced
#                                            loads and at saturation
#   OTHER_PHOTOND=<path>                     busypoll: a third configuration, another photond build's default
#                                            (e.g. the previous commit's), run in the same rounds
#   BUSYPOLL_LOADS="lock:1000 … locks:64"    busypoll: the loads to run (the default is all of them: lock:N and
#                                            ping:N one client at N requests/s, lock:0 as fast as answered,
#                                            locks:K 8 clients on K names)
#   ROUNDS=3                                 runs per configuration and target; tables show the median run, and
#                                            the ratio tables the lowest and highest ratio of the rounds too
#   QUICK=1                                  tiny counts, to check the script itself (numbers mean nothing)
#   KEEP=1                                   keep the temporary directory (server logs)
#   PHOTOND_REV=<commit>                     the source revision to name in the header, when PHOTOND was
#                                            built from another tree than this one
#
# Every run gets fresh servers, so no figure carries over from an earlier run: Redis (Debian's redis-server,
# persistence off, --maxclients 20000, pub/sub output-buffer limits off) and photond (self-bound, --bus=none, its
# own PHOTON_HOME), both on Unix sockets in a private temporary directory; the webhook listens on 127.0.0.1.
# Servers are started through `photon-bench start`, which returns when they send READY=1, and stopped on exit.
set -euo pipefail

. "$(dirname "$0")/bench-lib.sh"
bench_find_builds run.sh "${1:-}" "${2:-}"
scenarios=${SCENARIOS:-fanout conns locks webhook}
# busypoll and webhook measure photond alone
if [[ " $scenarios " =~ \ (fanout|conns|locks)\  ]]; then
        command -v redis-server >/dev/null || { echo "run.sh: redis-server is not installed" >&2; exit 2; }
fi
rounds=${ROUNDS:-3}
if [ "${QUICK:-0}" = 1 ]; then
        m10=5000 m100=1000 conns=1000 lock_secs=1 calls=50 wrk_secs=2 paced_secs=1 rounds=${ROUNDS:-1}
else
        m10=200000 m100=30000 conns=10000 lock_secs=1 calls=300 wrk_secs=5 paced_secs=3
fi

tmp=$(mktemp -d /tmp/photon-bench.XXXXXX)
# photond persists its lock table on every change; a run with its state on tmpfs shows what that costs.
shm=
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
        shm=$(mktemp -d /dev/shm/photon-bench.XXXXXX)
fi
home_base=$tmp
pids=()
log=$tmp/bench.log
failures=()
provider_pid=

cleanup() {
        for p in "${pids[@]}" $provider_pid; do
                kill "$p" 2>/dev/null || true
        done
        if [ "${KEEP:-0}" = 1 ]; then
                echo "run.sh: kept $tmp" >&2
        else
                rm -rf "$tmp"
        fi
        [ -z "$shm" ] || rm -rf "$shm"
}
trap cleanup EXIT


run_n=0
# Extra environment for photond: the "busy polling off" rows set PHOTOND_BUSY_POLL_US=0 (photond(8)).
photond_env=
start_redis() {
        run_n=$((run_n + 1))
        sock=$tmp/redis.$run_n.sock
        server_pid=$("$bench" start --log "$tmp/redis.log" -- redis-server --port 0 --unixsocket "$sock" \
                --unixsocketperm 700 --dir "$tmp" --save '' --appendonly no --maxclients 20000 \
                --client-output-buffer-limit 'pubsub 0 0 0' --supervised systemd)
        pids+=("$server_pid")
}

start_photond() {
        run_n=$((run_n + 1))
        local home=$home_base/home.$run_n
        mkdir -p "$home"
        sock=$home/.data/daemon.sock
        server_pid=$(env $photond_env PHOTON_HOME="$home" "$bench" start --log "$tmp/photond.log" -- \
                "${photond_bin:-$photond}" --bus=none --socket "$sock")
        pids+=("$server_pid")
}

# run TARGET ROWFILE SCENARIO ARGS...: one run against a fresh server of TARGET.
run() {
        local target=$1 rows=$2 rc=0
        shift 2
        "start_$target"
        "$bench" "$@" --target "${target%d}" --socket "$sock" --pid "$server_pid" \
                >"$tmp/row" 2>"$tmp/err" || rc=$?
        stop_server "$server_pid"
        cat "$tmp/err" >&2
        cat "$tmp/err" >>"$log"
        cat "$tmp/row" >>"$rows"
        if [ "$rc" != 0 ]; then
                failures+=("$target $*: exit $rc")
        fi
}

# The median row of FILE by the numeric column COL (1-based, counting the table's cells).
median_row() {
        local n
        n=$(wc -l <"$1")
        [ "$n" -gt 0 ] || return 0
        sort -t'|' -k"$(($2 + 1))","$(($2 + 1))"g "$1" | sed -n "$(((n + 1) / 2))p"
}

# cell ROW COL: one cell of a table row, trimmed.
cell() {
        echo "$1" | awk -F'|' -v c="$(($2 + 1))" '{ gsub(/^ +| +$/, "", $c); print $c }'
}

ratio() {
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}

# spread PFILE RFILE COL: the lowest and highest ratio of column COL between the rows of the same round (line i of
# each file), as "lo–hi". The median run alone hides how much the rounds disagree.
spread() {
        awk -F'|' -v c="$(($3 + 1))" 'NR == FNR { a[FNR] = $c; next }
                (FNR in a) && $c > 0 { r = a[FNR] / $c; if (!n++) lo = hi = r; if (r < lo) lo = r; if (r > hi) hi = r }
                END { if (n) printf "%.2f–%.2f", lo, hi; else printf "n/a" }' "$1" "$2"
}

# round_ratios PFILE RFILE COL: the ratios of column COL between the rows of the same round, as "median (lo–hi)".
round_ratios() {
        awk -F'|' -v c="$(($3 + 1))" 'NR == FNR { a[FNR] = $c; next }
                (FNR in a) && $c > 0 { r[n++] = a[FNR] / $c }
                END {
                        if (!n) { printf "n/a"; exit }
                        for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
                        m = n % 2 ? r[(n - 1) / 2] : (r[n / 2 - 1] + r[n / 2]) / 2
                        printf "%.2f (%.2f–%.2f)", m, r[0], r[n - 1]
                }' "$1" "$2"
}

began=$(date +%s)
out=$tmp/out.md
{
        echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`tests/bench/run.sh\` ($rounds round(s) per configuration; each table"
        echo "row is the median run by its first rate column; fresh servers for every run)."
        echo
        echo "- Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(uname -sr)," \
                "load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- photond: $("$photond" --version 2>&1 | head -1), source ${PHOTOND_REV:-$(git -C "$src" describe --always --dirty 2>/dev/null || echo unknown)}," \
                "build type $(sed -n 's/.*"name": "buildtype", "value": "\([a-z]*\)".*/\1/p' \
                        "$builddir/meson-info/intro-buildoptions.json" 2>/dev/null || true)"
        ! command -v redis-server >/dev/null || echo "- Redis: $(redis-server --version | sed 's/ sha=.*malloc=/, malloc=/')"
        echo "- photond's PHOTON_HOME (its state.json) on $(df -T "$tmp" | awk 'NR == 2 { print $2 }'); Redis persistence off"
        echo
} >"$out"

for scenario in $scenarios; do
        case $scenario in
        fanout)
                {
                        echo "### fanout: 1 publisher, window 64, S subscribers on one channel"
                        echo
                        echo "| server | S | B | M | delivered msg/s | p50 µs | p99 µs | max µs | lost/dup/ooo | server RSS MiB | server CPU | bench CPU |"
                        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
                } >>"$out"
                ratios=""
                for cfg in "10 64 $m10" "10 1024 $m10" "100 64 $m100" "100 1024 $m100"; do
                        set -- $cfg
                        rp=$tmp/fanout.$1.$2.photond rr=$tmp/fanout.$1.$2.redis rn=$tmp/fanout.$1.$2.nopoll
                        : >"$rp"; : >"$rr"; : >"$rn"
                        for _ in $(seq "$rounds"); do
                                run photond "$rp" fanout --subscribers "$1" --bytes "$2" --messages "$3"
                                run redis "$rr" fanout --subscribers "$1" --bytes "$2" --messages "$3"
                                photond_env=PHOTOND_BUSY_POLL_US=0
                                run photond "$rn" fanout --subscribers "$1" --bytes "$2" --messages "$3"
                                photond_env=
                        done
                        p=$(median_row "$rp" 5) r=$(median_row "$rr" 5) n=$(median_row "$rn" 5 | sed 's/^| photond |/| photond, busy polling off |/')
                        printf '%s\n' "$p" "$r" "$n" >>"$out"
                        ratios+="| S=$1 B=$2 | $(ratio "$(cell "$p" 5)" "$(cell "$r" 5)") | $(spread "$rp" "$rr" 5) |"
                        ratios+=" $(ratio "$(cell "$p" 7)" "$(cell "$r" 7)") | $(spread "$rp" "$rr" 7) |"
                        ratios+=" $(ratio "$(cell "$n" 5)" "$(cell "$r" 5)") | $(ratio "$(cell "$n" 7)" "$(cell "$r" 7)") |"$'\n'
                done
                {
                        echo
                        echo "| fanout ratio photond/Redis | delivered msg/s (target ≥ 1.0) | rounds | p99 latency (target ≤ 1.0) | rounds | busy polling off: msg/s | busy polling off: p99 |"
                        echo "|---|---|---|---|---|---|---|"
                        printf '%s' "$ratios"
                        echo
                } >>"$out"
                ;;
        conns)
                {
                        echo "### conns: $conns idle subscribers, then one publish"
                        echo
                        echo "| server | N | all have it after ms | p50 ms | RSS before MiB | RSS subscribed MiB | KiB per idle conn | KiB per conn after the publish | connect+subscribe s |"
                        echo "|---|---|---|---|---|---|---|---|---|"
                } >>"$out"
                rp=$tmp/conns.photond rr=$tmp/conns.redis
                : >"$rp"; : >"$rr"
                for _ in $(seq "$rounds"); do
                        run photond "$rp" conns --conns "$conns"
                        run redis "$rr" conns --conns "$conns"
                done
                p=$(median_row "$rp" 3) r=$(median_row "$rr" 3)
                {
                        echo "$p"
                        echo "$r"
                        echo
                        echo "Ratio photond/Redis: time until all have the publish $(ratio "$(cell "$p" 3)" "$(cell "$r" 3)")" \
                                "(rounds $(spread "$rp" "$rr" 3); target ≤ 1.0); KiB per idle connection $(cell "$p" 7) vs" \
                                "$(cell "$r" 7) (target < 2)."
                        echo
                } >>"$out"
                ;;
        locks)
                {
                        echo "### locks: 8 clients, acquire+release pairs on K names for ${lock_secs} s, immediate retry when refused"
                        echo
                        echo "| server | mode | C | K | pairs/s | request p50 µs | request p99 µs | acquire p99 µs | refused attempts | exclusion violations | server CPU | bench CPU | server CPU µs per request |"
                        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                } >>"$out"
                ratios=""
                for k in 1 64; do
                        rp=$tmp/locks.$k.photond rr=$tmp/locks.$k.redis rw=$tmp/locks.$k.wait rn=$tmp/locks.$k.nopoll
                        rt=$tmp/locks.$k.tmpfs
                        : >"$rp"; : >"$rr"; : >"$rw"; : >"$rn"; : >"$rt"
                        set -- locks --clients 8 --names "$k" --pairs 10000000 --duration "$lock_secs"
                        for _ in $(seq "$rounds"); do
                                run photond "$rp" "$@"
                                run redis "$rr" "$@"
                                run photond "$rw" "$@" --lock-wait 5000
                                photond_env=PHOTOND_BUSY_POLL_US=0
                                run photond "$rn" "$@"
                                photond_env=
                                if [ -n "$shm" ]; then
                                        home_base=$shm
                                        run photond "$rt" "$@"
                                        home_base=$tmp
                                fi
                        done
                        p=$(median_row "$rp" 5) r=$(median_row "$rr" 5) w=$(median_row "$rw" 5)
                        n=$(median_row "$rn" 5 | sed 's/| lock + retry |/| lock + retry, busy polling off |/')
                        t=$(median_row "$rt" 5 | sed 's/| lock + retry |/| lock + retry, state on tmpfs |/')
                        printf '%s\n' "$p" "$r" "$w" "$n" >>"$out"
                        [ -z "$t" ] || echo "$t" >>"$out"
                        ratios+="| K=$k | $(ratio "$(cell "$p" 5)" "$(cell "$r" 5)") | $(spread "$rp" "$rr" 5) |"
                        ratios+=" $(ratio "$(cell "$w" 5)" "$(cell "$r" 5)") |"
                        ratios+=" $(ratio "$(cell "$n" 5)" "$(cell "$r" 5)") |"
                        ratios+=" $( [ -n "$t" ] && ratio "$(cell "$t" 5)" "$(cell "$r" 5)" || echo n/a) |"$'\n'
                done
                {
                        echo
                        echo "| locks ratio (pairs/s) | photond/Redis, same retry loop (target ≥ 1.0) | rounds | photond lockWait/Redis | busy polling off/Redis | state on tmpfs/Redis |"
                        echo "|---|---|---|---|---|---|"
                        printf '%s' "$ratios"
                        echo
                } >>"$out"
                ;;
        busypoll)
                # The same load against photond with its default busy polling and with PHOTOND_BUSY_POLL_US=0
                # (and OTHER_PHOTOND's default), alternating within each round. One client at a fixed rate (lock+unlock
                # pairs, or pings) is the everyday load; one client without pauses and the 8-client lock loops are
                # saturation. The figure that matters is photond's CPU time per request (schedstat).
                configs="default off"
                [ -z "${OTHER_PHOTOND:-}" ] || configs+=" other"
                loads=${BUSYPOLL_LOADS:-lock:1000 lock:3000 lock:10000 ping:1000 ping:3000 ping:10000 lock:0 locks:1 locks:64}
                for _ in $(seq "$rounds"); do
                        for load in $loads; do
                                kind=${load%%:*} n=${load#*:}
                                case $kind in
                                lock) set -- paced --rate "$n" --duration "$paced_secs" ;;
                                ping) set -- paced --ping --rate "$n" --duration "$paced_secs" ;;
                                locks) set -- locks --clients 8 --names "$n" --pairs 10000000 --duration "$lock_secs" ;;
                                esac
                                for cfg in $configs; do
                                        case $cfg in
                                        off) photond_env=PHOTOND_BUSY_POLL_US=0 ;;
                                        other) photond_bin=$(realpath "$OTHER_PHOTOND") ;;
                                        esac
                                        run photond "$tmp/bp.$load.$cfg" "$@"
                                        photond_env= photond_bin=
                                done
                        done
                done
                {
                        echo "### busypoll: photond's CPU time per request with busy polling (default) and without (PHOTOND_BUSY_POLL_US=0)"
                        echo
                        echo "Paced: one client at a fixed rate, lock+unlock pairs or pings, ${paced_secs} s per run; \"as fast as answered\": one"
                        echo "client that sends its next request when the last is answered; locks K=1/K=64: the locks scenario (8"
                        echo "clients, ${lock_secs} s). Rates: the median of the runs; this/off: the median (lowest–highest) of each round's"
                        echo "ratio to the run without polling in the same round; CPU and latency: the median run by CPU per request."
                        [ -z "${OTHER_PHOTOND:-}" ] || echo "\"other\": $OTHER_PHOTOND with its default busy polling."
                        echo
                        echo "| load | busy polling | requests/s (locks: pairs/s) | rate, this/off | server CPU | CPU µs per request | lowest–highest | CPU per request, this/off | request p50 µs | request p99 µs |"
                        echo "|---|---|---|---|---|---|---|---|---|---|"
                } >>"$out"
                for load in $loads; do
                        kind=${load%%:*} n=${load#*:}
                        case $kind in
                        lock) name="lock+unlock $n req/s" rate=3 cpu=4 per=5 p50=6 p99=7 ;;
                        ping) name="ping $n req/s" rate=3 cpu=4 per=5 p50=6 p99=7 ;;
                        locks) name="locks 8 clients K=$n" rate=5 cpu=11 per=13 p50=6 p99=7 ;;
                        esac
                        [ "$load" != lock:0 ] || name="lock+unlock as fast as answered"
                        for cfg in $configs; do
                                f=$tmp/bp.$load.$cfg
                                r=$(median_row "$f" "$per")
                                range=$(awk -F'|' -v c="$((per + 1))" '{ v = $c + 0; if (!n++) lo = hi = v; if (v < lo) lo = v; if (v > hi) hi = v }
                                        END { if (n) printf "%.2f–%.2f", lo, hi }' "$f")
                                vs_rate= vs_cpu=
                                if [ "$cfg" != off ]; then
                                        vs_rate=$(round_ratios "$f" "$tmp/bp.$load.off" "$rate")
                                        vs_cpu=$(round_ratios "$f" "$tmp/bp.$load.off" "$per")
                                fi
                                echo "| $name | $cfg | $(cell "$(median_row "$f" "$rate")" "$rate") | $vs_rate | $(cell "$r" "$cpu") |" \
                                        "$(cell "$r" "$per") | $range | $vs_cpu | $(cell "$r" "$p50") | $(cell "$r" "$p99") |" >>"$out"
                        done
                done
                echo >>"$out"
                ;;
        webhook)
                command -v wrk >/dev/null || { failures+=("webhook: wrk is not installed"); continue; }
                port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
                run_n=$((run_n + 1))
                home=$tmp/home.$run_n
                mkdir -p "$home"
                sock=$home/.data/daemon.sock
                server_pid=$(PHOTON_HOME=$home PHOTON_WEBHOOK_PORT=$port PHOTON_WEBHOOK_SECRET=bench-secret \
                        PHOTON_WEBHOOK_RATE_LIMIT=0 "$bench" start --log "$tmp/photond.log" -- \
                        "$photond" --bus=none --socket "$sock")
                pids+=("$server_pid")
                # The provider says "providing bench" on stderr once photond accepted it: that is its readiness.
                mkfifo "$tmp/provider.fifo"
                exec 3<>"$tmp/provider.fifo"
                "$bench" provide --socket "$sock" 2>"$tmp/provider.fifo" &
                provider_pid=$!
                read -r -t 30 line <&3 || line=
                if [ "$line" != "providing bench" ]; then
                        failures+=("webhook: the provider did not start: $line")
                        stop_server "$server_pid"
                        continue
                fi
                {
                        echo "### webhook: trivial provider (photon-bench provide), 64 connections"
                        echo
                        echo "| path | connections | requests/s | p50 ms | p99 ms | errors |"
                        echo "|---|---|---|---|---|---|"
                } >>"$out"
                wrk_out=$(PHOTON_WEBHOOK_SECRET=bench-secret wrk -t2 -c64 -d"${wrk_secs}s" --latency \
                        -s "$src/tests/bench/webhook.lua" "http://127.0.0.1:$port/webhook/bench/ping" 2>&1) ||
                        failures+=("webhook: wrk failed")
                echo "$wrk_out" >>"$log"
                echo "$wrk_out" | tail -1 >&2
                line=$(echo "$wrk_out" | grep '^webhook-bench ' || true)
                get() { echo "$line" | sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
                echo "| HTTP POST (wrk) | 64 | $(get rps) | $(get p50_ms) | $(get p99_ms) | $(($(get non2xx) + $(get socket_errors))) |" >>"$out"
                [ "$(get non2xx)" = 0 ] && [ "$(get socket_errors)" = 0 ] || failures+=("webhook: errors in wrk run")
                rc=0
                "$bench" command --socket "$sock" --pid "$server_pid" --clients 64 --pairs "$calls" \
                        >>"$out" 2>"$tmp/err" || rc=$?
                cat "$tmp/err" >&2
                cat "$tmp/err" >>"$log"
                [ "$rc" = 0 ] || failures+=("webhook: command scenario exit $rc")
                kill "$provider_pid" 2>/dev/null || true
                wait "$provider_pid" 2>/dev/null || true
                provider_pid=
                exec 3<&-
                stop_server "$server_pid"
                echo >>"$out"
                ;;
        *)
                echo "run.sh: unknown scenario '$scenario'" >&2
                exit 2
                ;;
        esac
done

{
        echo "Total time $(($(date +%s) - began)) s; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)." \
                "Checks that failed: ${#failures[@]}."
        for f in "${failures[@]}"; do
                echo "- $f"
        done
        echo
        echo "<details><summary>Every run (photon-bench's own summary lines)</summary>"
        echo
        echo '```text'
        cat "$log"
        echo '```'
        echo
        echo "</details>"
} >>"$out"
cat "$out"
[ "${#failures[@]}" = 0 ]
