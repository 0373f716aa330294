#!/bin/bash
# SPDX-License-Identifier: MIT
# Applies sysusers.d/photond.conf and tmpfiles.d/photond.conf to an empty root, the way the package's
# postinst does on a real system, and checks the directories, their owners and modes, and that a second
# run repairs a changed mode and owner.
#
# tmpfiles-test.sh SYSUSERS_CONF TMPFILES_CONF
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 SYSUSERS_CONF TMPFILES_CONF" >&2; exit 2; }
# With --root=, relative configuration paths would be looked up inside the root.
sysusers_conf=$(realpath "$1") tmpfiles_conf=$(realpath "$2")
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to chown"; exit 77; }
for t in systemd-sysusers systemd-tmpfiles; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc"
failed=0

# The user and group come from the sysusers file itself, in the throw-away root's /etc/passwd, which
# systemd-tmpfiles --root= resolves names against (the build host need not have a "photon" user).
systemd-sysusers --root="$root" "$sysusers_conf"
uid=$(awk -F: '$1 == "photon" { print $3 }' "$root/etc/passwd" 2>/dev/null || true)
gid=$(awk -F: '$1 == "photon" { print $3 }' "$root/etc/group" 2>/dev/null || true)
if [ -n "$uid" ] && [ -n "$gid" ] && [ "$uid" -gt 0 ] && [ "$uid" -lt 1000 ]; then
  echo "PASS: sysusers created system user photon ($uid:$gid)"
else
  echo "FAIL: no system user/group photon in $root/etc/passwd, group (uid '$uid', gid '$gid')"
  exit 1
fi
entry=$(grep '^photon:' "$root/etc/passwd")
case "$entry" in
  *:/var/lib/photon:/usr/sbin/nologin) echo "PASS: photon's home and shell: $entry" ;;
  *) echo "FAIL: photon's passwd entry: $entry"; failed=1 ;;
esac

expect() {   # expect PATH MODE UID GID
  local got
  got=$(stat -c '%F %a %u %g' "$root$1" 2>/dev/null || echo missing)
  if [ "$got" = "directory $2 $3 $4" ]; then
    echo "PASS: $1 is directory $2 $3:$4"
  else
    echo "FAIL: $1 is '$got', expected 'directory $2 $3 $4'"
    failed=1
  fi
}

check_all() {
  expect /etc/photon 755 0 0
  expect /etc/photon/handlers 755 0 0
  expect /var/lib/photon 750 "$uid" "$gid"
  expect /run/photon 755 "$uid" "$gid"
}

systemd-tmpfiles --create --root="$root" "$tmpfiles_conf"
check_all

# A second run repairs what an admin (or an older version) changed.
chmod 0777 "$root/run/photon"
chown 0:0 "$root/var/lib/photon"
systemd-tmpfiles --create --root="$root" "$tmpfiles_conf"
echo "-- after changing modes and owners and applying again:"
check_all

exit $failed
