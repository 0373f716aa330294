#!/bin/bash
# SPDX-License-Identifier: MIT
# systemd-analyze verify for every unit photond ships: any message at all is a failure, not only errors,
# so an unknown or misspelt directive is caught. Also checks that every Documentation=man:... page is built.
#
# verify-units.sh --photond PATH [--man-dir DIR] --user UNIT... --system UNIT...
#
# ExecStart= names the install location of photond, which need not exist at build time: the copies that are
# verified point at the built binary instead; nothing else is changed.
set -euo pipefail

photond= man_dir= mode=
user_units=() system_units=()
while [ $# -gt 0 ]; do
  case "$1" in
    --photond) photond=$2; shift 2 ;;
    --man-dir) man_dir=$2; shift 2 ;;
    --user) mode=user; shift ;;
    --system) mode=system; shift ;;
    *)
      case "$mode" in
        user) user_units+=("$1") ;;
        system) system_units+=("$1") ;;
        *) echo "usage: $0 --photond PATH [--man-dir DIR] --user UNIT... --system UNIT..." >&2; exit 2 ;;
      esac
      shift ;;
  esac
done
[ -x "$photond" ] || { echo "FAIL: photond binary '$photond' is not executable" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/user" "$tmp/system" "$tmp/runtime"
chmod 0700 "$tmp/runtime"
failed=0

copy_units() {   # copy_units DIR UNIT...
  local dir=$1 u; shift
  for u in "$@"; do
    sed -E "s|^(ExecStart=)[^ ]*/photond( \|$)|\\1$photond\\2|" "$u" >"$dir/$(basename "$u")"
  done
}

verify() {   # verify LABEL DIR [systemd-analyze options]
  local label=$1 dir=$2 out rc=0; shift 2
  out=$(cd "$dir" && systemd-analyze "$@" verify --man=no ./* 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    echo "FAIL: $label units (systemd-analyze exit $rc):"
    printf '%s\n' "$out" | sed 's/^/    /'
    failed=1
  else
    echo "PASS: $label units verify cleanly: $(cd "$dir" && echo *)"
  fi
}

copy_units "$tmp/user" "${user_units[@]}"
copy_units "$tmp/system" "${system_units[@]}"
grep -q "^ExecStart=$photond" "$tmp/user/photond.service" "$tmp/system/photond.service" ||
  { echo "FAIL: ExecStart= was not rewritten to the built photond"; failed=1; }

verify system "$tmp/system"
# %h in the user socket's path is $HOME: keep it short, since package builds use a long one (debhelper's
# debian/.debhelper/generated/_source/home) and a socket path is limited to 108 bytes.
mkdir -p "$tmp/home"
HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/runtime" verify user "$tmp/user" --user

if [ -n "$man_dir" ]; then
  for page in $(cat "${user_units[@]}" "${system_units[@]}" | sed -n 's/^Documentation=//p' | tr ' ' '\n' |
                sed -n 's/^man:\(.*\)(\([0-9]\))$/\1.\2/p' | sort -u); do
    if [ -f "$man_dir/$page" ]; then
      echo "PASS: Documentation= page $page is built"
    else
      echo "FAIL: Documentation= names $page, which is not built in $man_dir"
      failed=1
    fi
  done
fi

exit $failed
