#!/bin/bash
# SPDX-License-Identifier: MIT
# The Debian package the way users run it: builds the .deb, boots a throw-away Debian 12 with a real systemd
# (../shared/tools/sysbox: systemd-nspawn on a debootstrapped root), installs the package and checks the user
# and system instances through systemd. Prints one PASS/FAIL line per check; exits non-zero if any failed.
#
# Run as root from anywhere:  tests/system/run-sysbox.sh [--deb FILE.deb] [--nocheck] [--keep]
#   --deb FILE   test this .deb instead of building one
#   --nocheck    build with DEB_BUILD_OPTIONS=nocheck (skip the test suite during the package build)
#   --keep       leave the box running afterwards (stop it with: SYSBOX_MACHINE=... sysbox stop)
# Environment: SYSBOX (path of the sysbox tool), SYSBOX_MACHINE (default photond-systest).
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
SYSBOX=${SYSBOX:-$repo/../shared/tools/sysbox}
export SYSBOX_MACHINE=${SYSBOX_MACHINE:-photond-systest}
deb= nocheck=0 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb=$(realpath "$2"); shift 2 ;;
    --nocheck) nocheck=1; shift ;;
    --keep) keep=1; shift ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "run-sysbox.sh: must run as root (sysbox needs it)" >&2; exit 2; }
[ -x "$SYSBOX" ] || { echo "run-sysbox.sh: sysbox not found at $SYSBOX (set SYSBOX=)" >&2; exit 2; }

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check NAME CMD...: PASS if CMD succeeds; its output is shown only on failure.
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then
    pass "$name"
  else
    fail "$name"
    printf '%s\n' "$out" | tail -n 20 | sed 's/^/    | /'
  fi
}
finish() {
  echo "== $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

box() { "$SYSBOX" "$@"; }
as_root() { box exec "$@"; }
as_user() { box user-exec "$@"; }      # user "tester", uid 1000, lingering user manager

work=$(mktemp -d /var/tmp/photond-systest.XXXXXX)
cleanup() {
  [ "$keep" = 1 ] || box stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------- build
if [ -z "$deb" ]; then
  echo "== building the package (log: $work/build.log)"
  # From a copy of the working tree (tracked and new files, not ignored ones), so the build neither writes
  # into the shared tree nor picks up build directories.
  mkdir -p "$work/src/photond"
  git -C "$repo" ls-files -z -co --exclude-standard |
    tar -C "$repo" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$work/src/photond" -xf -
  opts=${DEB_BUILD_OPTIONS:-}
  [ "$nocheck" = 1 ] && opts="$opts nocheck"
  if (cd "$work/src/photond" && DEB_BUILD_OPTIONS="$opts" dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
    deb=$(ls "$work"/src/photond_*.deb 2>/dev/null | head -n 1)
    pass "dpkg-buildpackage -us -uc -b built $(basename "$deb")"
  else
    fail "dpkg-buildpackage -us -uc -b"
    tail -n 40 "$work/build.log" | sed 's/^/    | /'
    finish
  fi
  if command -v lintian >/dev/null; then
    check "lintian reports no errors or warnings" \
      lintian --fail-on error,warning "$work"/src/photond_*.changes
  fi
fi
[ -f "$deb" ] || { fail "no .deb to test ($deb)"; finish; }

# ---------------------------------------------------------------- boot and install
echo "== booting the box ($SYSBOX_MACHINE)"
box stop >/dev/null 2>&1 || true
if ! box boot >"$work/boot.log" 2>&1; then
  fail "sysbox boot"; sed 's/^/    | /' "$work/boot.log"; finish
fi
pass "sysbox boot: Debian 12 with systemd and the user manager of tester running"

if box install-deb "$deb" >"$work/install.log" 2>&1; then
  pass "dpkg -i $(basename "$deb") (dependencies resolved)"
else
  fail "dpkg -i $(basename "$deb")"; tail -n 30 "$work/install.log" | sed 's/^/    | /'; finish
fi
# curl for the webhook checks and man-db for "man photond": not in the minimal root.
box apt-install curl man-db >"$work/apt.log" 2>&1 || echo "    (could not install curl and man-db in the box)"

check "man photond, man photonctl, man photond.socket work" as_user sh -c '
  man -P cat photond 2>/dev/null | grep -q "SOCKET ACTIVATION" &&
  man -P cat photonctl 2>/dev/null | grep -q "with-lock" &&
  man -P cat photond.socket 2>/dev/null | grep -q "SANDBOXING"'
check "sysusers created system user photon" as_root sh -c 'getent passwd photon | grep -q ":/var/lib/photon:"'
check "tmpfiles created /etc/photon/handlers and /run/photon (owner photon)" \
  as_root sh -c 'test -d /etc/photon/handlers && test "$(stat -c %U:%a /run/photon)" = photon:755'

# keep_clients SCOPE ACTION: 100 subscribers (photonctl subscribe) and a publisher (socat, one connection) while ACTION (restart: systemctl restart; upgrade: dpkg -i of a newer version of the package, whose
# postinst restarts the system instance) replaces photond. Every subscriber must stay connected and receive every
# event once, in order; every publish must succeed; a lock and a job come through unchanged; the store must be
# empty afterwards. Prints the gap: the longest time between two events a subscriber received.
keep_clients_script='
  set -u
  scope=$1 action=$2 n=100 events=300
  if [ "$scope" = user ]; then ctl=photonctl sctl="systemctl --user" sock=$HOME/.photon/.data/daemon.sock
  else ctl="photonctl --system" sctl=systemctl sock=/run/photon/daemon.sock; fi
  dir=$(mktemp -d) fail=0
  $ctl ping >/dev/null || exit 1
  before=$($sctl show -P MainPID photond.service)
  # A lock and a job, which must come through unchanged.
  $ctl lock "keep-$action" --timeout 600000 --holder systest >/dev/null || exit 1
  $ctl schedule p "keep-$action" m "0 3 * * *" >/dev/null || exit 1
  locks_before=$($ctl locks | awk "\$1 == \"keep-$action\" { print \$1, \$2, \$3, \$4, \$NF }")
  jobs_before=$($ctl jobs | awk "\$1 == \"p:ipc:keep-$action\" { print \$1, \$2, \$3, \$4, \$5, \$6, \$7, \$8 }")
  [ -n "$locks_before" ] && [ -n "$jobs_before" ] || { echo "no lock or job to compare"; exit 1; }
  # One more subscriber that stamps each event as it arrives, for the gap.
  mkfifo "$dir/fifo"
  stdbuf -oL $ctl subscribe feed >"$dir/fifo" 2>/dev/null &
  echo $! >"$dir/timedpid"
  while IFS= read -r l; do echo "$(date +%s%3N) $l"; done <"$dir/fifo" >"$dir/timed" &
  i=0
  while [ $i -lt $n ]; do
    i=$((i + 1))
    $ctl subscribe feed >"$dir/sub$i" 2>"$dir/err$i" &
    echo $! >"$dir/pid$i"
  done
  t=0
  until $ctl channels 2>/dev/null | awk -v n=$((n + 1)) "\$1 == \"feed\" && \$2 >= n { ok = 1 } END { exit !ok }"; do
    t=$((t + 1)); [ $t -lt 400 ] || { echo "the subscribers did not all subscribe"; exit 1; }; sleep 0.05
  done
  # One connection, kept through the restart too, publishing every 10 ms.
  (
    (
      s=0
      while [ $s -lt $events ]; do
        s=$((s + 1))
        echo "{\"type\":\"publish\",\"id\":\"p$s\",\"channel\":\"feed\",\"message\":{\"seq\":$s}}"
        echo $s >"$dir/progress"
        sleep 0.01
      done
      sleep 3
    ) | socat -t 10 - UNIX-CONNECT:"$sock" >"$dir/pubout" 2>"$dir/puberr"
    touch "$dir/published"
  ) &
  t=0
  until [ "$(cat "$dir/progress" 2>/dev/null || echo 0)" -ge $((events / 3)) ]; do
    t=$((t + 1)); [ $t -lt 600 ] || { echo "the publisher does not get on"; exit 1; }; sleep 0.05
  done
  case $action in
    restart) $sctl restart photond.service ;;
    upgrade)
      # A newer version of the package: the same files under a higher version (dpkg-deb, in the box), so dpkg runs
      # the upgrade path of the maintainer scripts (postinst configure <old version>: a restart) as apt would.
      newer=/var/tmp/photond-newer.deb
      if [ ! -e $newer ]; then
        x=$(mktemp -d)
        dpkg-deb -R /var/tmp/sysbox-debs/*.deb "$x/p" &&
          sed -i "s/^Version: \(.*\)/Version: \1+systest1/" "$x/p/DEBIAN/control" &&
          dpkg-deb -b "$x/p" $newer >/dev/null || { echo "could not make the newer package"; exit 1; }
      fi
      dpkg -i $newer >/dev/null && dpkg-query -W -f "\${Version}\n" photond | grep -q "+systest1" ||
        { echo "the newer package was not installed"; fail=1; } ;;
  esac
  t=0
  until [ -e "$dir/published" ]; do
    t=$((t + 1)); [ $t -lt 1200 ] || { echo "the publisher did not finish within 120 s"; fail=1; break; }; sleep 0.1
  done
  sleep 1
  after=$($sctl show -P MainPID photond.service)
  [ "$before" != "$after" ] || { echo "photond was not replaced (main pid $before)"; fail=1; }
  i=0 alive=0
  while [ $i -lt $n ]; do
    i=$((i + 1))
    if kill -0 "$(cat "$dir/pid$i")" 2>/dev/null; then alive=$((alive + 1)); else echo "subscriber $i left: $(cat "$dir/err$i")"; fi
    kill "$(cat "$dir/pid$i")" 2>/dev/null
  done
  kill "$(cat "$dir/timedpid")" 2>/dev/null
  wait
  expected=$(seq 1 $events | tr "\n" " ")
  i=0 good=0
  while [ $i -lt $n ]; do
    i=$((i + 1))
    got=$(sed -n "s/^feed [0-9]* {\"seq\":\([0-9]*\)}\$/\1/p" "$dir/sub$i" | tr "\n" " ")
    if [ "$got" = "$expected" ]; then good=$((good + 1)); else
      [ $good -gt 0 ] || echo "subscriber $i: $(wc -l <"$dir/sub$i") lines, $(grep -vc "^feed [0-9]* {" "$dir/sub$i") other; first: $(head -n 3 "$dir/sub$i" | tr "\n" "|")"
    fi
  done
  results=$(grep -c "\"type\":\"result\",\"id\":\"p[0-9]*\",\"success\":true" "$dir/pubout")
  [ "$results" = $events ] && [ ! -s "$dir/puberr" ] ||
    { echo "publisher: $results of $events results; $(head -n 3 "$dir/puberr")"; fail=1; }
  # The longest time between two events as the stamping subscriber got them (the publisher sends one every
  # 10 ms): the gap of the restart. (Not the eventIds: they jump at a restart, over the block reserved before.)
  gap=$(awk "{ if (last) { d = \$1 - last; if (d > max) max = d } last = \$1 } END { print max + 0 }" "$dir/timed")
  locks_after=$($ctl locks | awk "\$1 == \"keep-$action\" { print \$1, \$2, \$3, \$4, \$NF }")
  jobs_after=$($ctl jobs | awk "\$1 == \"p:ipc:keep-$action\" { print \$1, \$2, \$3, \$4, \$5, \$6, \$7, \$8 }")
  [ "$locks_after" = "$locks_before" ] || { echo "the lock changed: $locks_before -> $locks_after"; fail=1; }
  [ "$jobs_after" = "$jobs_before" ] || { echo "the job changed: $jobs_before -> $jobs_after"; fail=1; }
  $ctl unlock "keep-$action" --holder systest >/dev/null
  $ctl unschedule "p:ipc:keep-$action" >/dev/null
  stored=$($sctl show -P NFileDescriptorStore photond.service)
  echo "$alive of $n subscribers stayed connected, $good got all $events events once and in order;" \
       "longest gap between two events: $gap ms; lock and job unchanged: $([ $fail = 0 ] && echo yes || echo no);" \
       "fds left in the store: $stored"
  [ $alive -eq $n ] && [ $good -eq $n ] && [ "$stored" = 0 ] && [ $fail = 0 ]
'
# keep_check NAME SCOPE ACTION: keep_clients_script as a check, its summary line shown either way.
keep_check() {
  local name=$1 scope=$2 action=$3 out rc=0 run=as_root
  [ "$scope" = user ] && run=as_user
  out=$($run sh -c "$keep_clients_script" sh "$scope" "$action" 2>&1) || rc=$?
  if [ $rc -eq 0 ]; then pass "$name"; else fail "$name"; fi
  printf '%s\n' "$out" | tail -n 12 | sed 's/^/    | /'
}

# ---------------------------------------------------------------- user instance
as_user systemctl --user daemon-reload
check "photond.socket is enabled for every user by the package" as_user systemctl --user is-enabled photond.socket
check "photond-webhook.socket is shipped but not enabled" \
  as_user sh -c '! systemctl --user is-enabled --quiet photond-webhook.socket && systemctl --user cat photond-webhook.socket >/dev/null'
check "systemctl --user start photond.socket" as_user systemctl --user start photond.socket
check "control socket ~/.photon/.data/daemon.sock is 0600 in a 0700 directory" \
  as_user sh -c 'test "$(stat -c %a ~/.photon/.data/daemon.sock)" = 600 && test "$(stat -c %a ~/.photon/.data)" = 700'
check "photond.service is not running before the first client" \
  as_user sh -c '! systemctl --user is-active --quiet photond.service'

check "photonctl ping answers pong (activates photond.service)" as_user sh -c 'test "$(photonctl ping)" = pong'
check "photond.service is active (Type=notify, READY=1)" as_user systemctl --user is-active photond.service
check "daemon.pid beside the socket names the service's main pid" \
  as_user sh -c 'test "$(cat ~/.photon/.data/daemon.pid)" = "$(systemctl --user show -P MainPID photond.service)"'
check "STATUS= is reported to systemd" \
  as_user sh -c 'systemctl --user show -P StatusText photond.service | grep -q .'

check "busctl --user introspect org.photond.Daemon1 /org/photond/Daemon1" \
  as_user sh -c 'busctl --user introspect org.photond.Daemon1 /org/photond/Daemon1 | grep -q "^org.photond.Daemon1 *interface"'

check "systemctl --user reload photond.service re-reads the secrets in the same process" as_user sh -c '
  set -e
  pid=$(systemctl --user show -P MainPID photond.service)
  systemctl --user reload photond.service
  for _ in $(seq 1 50); do
    journalctl --user -u photond.service _PID=$pid | grep -q "SIGHUP: reloading webhook secrets" && break
    sleep 0.1
  done
  journalctl --user -u photond.service _PID=$pid | grep -q "SIGHUP: reloading webhook secrets"
  test "$(systemctl --user show -P MainPID photond.service)" = "$pid"
  systemctl --user is-active --quiet photond.service'

# A client connected across "systemctl --user stop": it must receive the shutdown notice. The client first gets
# an answer to a ping, which proves it is connected before the stop.
check "systemctl --user stop photond.service sends a connected client the shutdown notice" as_user sh -c '
  set -e
  sock=$HOME/.photon/.data/daemon.sock out=$(mktemp) fifo=$(mktemp -u)
  mkfifo "$fifo"
  socat -t 5 - UNIX-CONNECT:"$sock" <"$fifo" >"$out" & client=$!
  exec 3>"$fifo"
  echo "{\"type\":\"ping\",\"id\":\"before-stop\"}" >&3
  for _ in $(seq 1 100); do grep -q pong "$out" && break; sleep 0.1; done
  grep -q "\"before-stop\"" "$out"
  systemctl --user stop photond.service
  exec 3>&-
  for _ in $(seq 1 100); do kill -0 $client 2>/dev/null || break; sleep 0.1; done
  cat "$out"
  grep "\"type\":\"shutdown\"" "$out" | grep -q "daemon-shutting-down"'
check "photond.socket keeps listening after the service stopped" as_user systemctl --user is-active photond.socket
check "the next photonctl ping starts photond again" as_user sh -c 'test "$(photonctl ping)" = pong'

keep_check "systemctl --user restart photond.service: 100 subscribers stay connected, every event once, in order" \
  user restart
check "the restart kept the connections in the file descriptor store and took them over" as_user sh -c '
  journalctl --user -u photond.service | grep -q "Kept 10[0-9] connections in systemd.s file descriptor store" &&
  journalctl --user -u photond.service | grep -q "Took over 10[0-9] connections kept by the last stop"'

check "Restart=on-failure: a killed photond is started again" as_user sh -c '
  old=$(systemctl --user show -P MainPID photond.service)
  systemctl --user kill -s KILL photond.service
  for _ in $(seq 1 100); do
    new=$(systemctl --user show -P MainPID photond.service)
    [ "$new" != 0 ] && [ "$new" != "$old" ] && systemctl --user is-active --quiet photond.service && exit 0
    sleep 0.1
  done
  systemctl --user status --no-pager photond.service; exit 1'

# systemd refuses to start a socket whose service is running ("already active"): stop photond first; the
# webhook socket then activates it, and it receives both sockets.
as_user systemctl --user stop photond.service 2>/dev/null
check "systemctl --user start photond-webhook.socket" as_user systemctl --user start photond-webhook.socket
check "curl http://127.0.0.1:3457/healthz (activates photond through the webhook socket)" \
  as_user sh -c 'curl -fsS --max-time 10 http://127.0.0.1:3457/healthz | grep -q "\"status\":\"ok\""'
check "photonctl ping after activation through the webhook socket" as_user sh -c 'test "$(photonctl ping)" = pong'
as_user systemctl --user stop photond.service photond-webhook.socket photond.socket 2>/dev/null

# ---------------------------------------------------------------- system instance
check "system photond.socket is not enabled by the package" \
  as_root sh -c '! systemctl is-enabled --quiet photond.socket'
check "systemctl start photond.socket (system)" as_root systemctl start photond.socket
check "/run/photon/daemon.sock is root:photon 0660" \
  as_root sh -c 'test "$(stat -c %U:%G:%a /run/photon/daemon.sock)" = root:photon:660'
check "photonctl --system ping as root (no /etc/photon/webhook-secret: the service starts anyway)" \
  as_root sh -c 'test ! -e /etc/photon/webhook-secret && test "$(photonctl --system ping)" = pong'
check "system photond.service runs as user photon" \
  as_root sh -c 'test "$(ps -o user= -p "$(systemctl show -P MainPID photond.service)")" = photon'
check "a user outside group photon cannot connect to the system socket" \
  as_user sh -c '! photonctl --system ping'
check "busctl --system introspect org.photond.Daemon1 as an unprivileged user" \
  as_user sh -c 'busctl --system introspect org.photond.Daemon1 /org/photond/Daemon1 | grep -q "^org.photond.Daemon1 *interface"'
check "D-Bus policy: ListLocks allowed to everyone" \
  as_user busctl --system call org.photond.Daemon1 /org/photond/Daemon1 org.photond.Daemon1 ListLocks
check "D-Bus policy: ReleaseLock rejected by the bus outside group photon" as_user sh -c '
  out=$(dbus-send --system --print-reply --dest=org.photond.Daemon1 /org/photond/Daemon1 \
        org.photond.Daemon1.ReleaseLock string:x 2>&1)
  echo "$out"; echo "$out" | grep -q "org.freedesktop.DBus.Error.AccessDenied: Rejected send message"'
as_root systemctl stop photond.service 2>/dev/null
check "system photond-webhook.socket: curl /healthz activates the system instance" as_root sh -c '
  systemctl start photond-webhook.socket &&
  curl -fsS --max-time 10 http://127.0.0.1:3457/healthz | grep -q "\"status\":\"ok\""'
check "webhook secret from /etc/photon/webhook-secret reaches photond as a credential" as_root sh -c '
  umask 077; echo systest-secret >/etc/photon/webhook-secret
  systemctl restart photond.service
  curl -fsS --max-time 10 http://127.0.0.1:3457/healthz >/dev/null
  journalctl --no-pager -u photond.service | grep "Webhook secret" | tail -n 1 | grep -q "credential webhook-secret"'
as_root usermod -aG photon tester
check "a member of group photon may use the system socket" as_user sh -c 'test "$(photonctl --system ping)" = pong'
check "D-Bus policy: ReleaseLock allowed to group photon (answered, not denied)" as_user sh -c '
  out=$(busctl --system call org.photond.Daemon1 /org/photond/Daemon1 org.photond.Daemon1 ReleaseLock s x 2>&1)
  echo "$out"; echo "$out" | grep -q "No live lock named"'
as_root systemctl stop photond.service photond-webhook.socket 2>/dev/null

keep_check "systemctl restart photond.service (system): 100 subscribers stay connected, every event once, in order" \
  system restart

# ---------------------------------------------------------------- upgrade and removal
keep_check "upgrade to a newer version (dpkg -i) with 100 subscribers: they stay connected, every event once, in order" \
  system upgrade
check "dpkg -i of the older version again (a downgrade) restarts an enabled system instance" as_root sh -c '
  systemctl enable --now photond.socket >/dev/null 2>&1
  test "$(photonctl --system ping)" = pong
  before=$(systemctl show -P MainPID photond.service)
  dpkg -i /var/tmp/sysbox-debs/*.deb >/dev/null
  test "$(photonctl --system ping)" = pong
  after=$(systemctl show -P MainPID photond.service)
  echo "main pid before $before, after $after"; [ "$before" != "$after" ] && systemctl is-enabled --quiet photond.socket'
check "apt-get remove stops the system instance" as_root sh -c '
  apt-get remove -y -q photond >/dev/null 2>&1
  ! systemctl is-active --quiet photond.service && ! systemctl is-active --quiet photond.socket'
check "apt-get purge removes the enablement links (user and system)" as_root sh -c '
  apt-get purge -y -q photond >/dev/null 2>&1
  ! ls /etc/systemd/user/sockets.target.wants/photond.socket /etc/systemd/system/sockets.target.wants/photond.socket 2>/dev/null'

if [ "$failed" -gt 0 ]; then
  echo "== journal of photond (user and system instance), last lines:"
  as_root journalctl --no-pager -n 40 _SYSTEMD_USER_UNIT=photond.service + _SYSTEMD_UNIT=photond.service \
    2>&1 | sed 's/^/    | /'
fi
finish
