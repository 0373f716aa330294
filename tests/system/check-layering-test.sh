#!/bin/sh
# SPDX-License-Identifier: MIT
# Tests tools/check-layering itself (a checker that never fails is worthless): on a scratch copy of src/ and the
# allowlist it must pass as copied, and fail, naming the file and the header, on a forbidden include, on a stale
# allowlist entry, on an unclassified file and when photonctl's target takes in the daemon core.
# usage: check-layering-test.sh PYTHON CHECKER SRC_DIR ALLOWLIST
set -eu
python=$1 checker=$2 src=$3 allowlist=$4

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0

fresh() {
        rm -rf "$tmp/src" "$tmp/allowlist"
        cp -R "$src" "$tmp/src"
        cp "$allowlist" "$tmp/allowlist"
}

# expect STATUS PATTERN DESCRIPTION: runs the checker on the scratch copy; its status must be STATUS and, when
# PATTERN is not empty, a line of its output must match PATTERN (grep -E).
expect() {
        n=$((n + 1))
        status=0
        "$python" "$checker" --src "$tmp/src" --allowlist "$tmp/allowlist" >"$tmp/out" 2>&1 || status=$?
        if [ "$status" -ne "$1" ]; then
                echo "not ok $n - $3: exit status $status, expected $1"; sed 's/^/# /' "$tmp/out"; failed=1
        elif [ -n "$2" ] && ! grep -Eq "$2" "$tmp/out"; then
                echo "not ok $n - $3: no line matches /$2/"; sed 's/^/# /' "$tmp/out"; failed=1
        else
                echo "ok $n - $3"
        fi
}

echo "1..6"

fresh
expect 0 'known violations remain' "the tree as it is passes"

fresh
sed -i '0,/^#include "json-util.h"/s//#include "json-util.h"\n#include "photond-manager.h"/' "$tmp/src/shared/json-util.c"
expect 1 '^src/shared/json-util.c:[0-9]+: includes "photond-manager.h": shared may not include manager$' \
        "shared/json-util.c including photond-manager.h fails"

# The allowlist's first entry, whichever it is today (entries go as the layering work goes on).
fresh
entry=$(grep -m1 '^src/' "$tmp/allowlist")
file=${entry%% *}
header=$(printf '%s\n' "$entry" | sed -E 's/^[^ ]+ "([^"]+)".*/\1/')
sed -i "/^#include \"$header\"/d" "$tmp/$file"
expect 1 "stale entry $file \"$header\"" \
        "an allowlist entry whose include is gone fails (the ratchet)"

# The first known violation, whichever it is (the list shrinks as the work goes on).
fresh
entry=$(grep -m 1 '^src/' "$tmp/allowlist" | sed 's/ *#.*//')
file=${entry%% *} header=${entry#* }
grep -v -F -x -e "$(grep -m 1 '^src/' "$tmp/allowlist")" "$tmp/allowlist" > "$tmp/allowlist.new"
mv "$tmp/allowlist.new" "$tmp/allowlist"
expect 1 "^$file:[0-9]+: includes $header: " "a known violation no longer allowlisted fails ($file)"

fresh
printf '#include "photond-lock.h"\n' > "$tmp/src/photond-unclassified.c"
expect 1 '^src/photond-unclassified.c: not in the layer table' "a file the layer table does not classify fails"

fresh
sed -i '/^photonctl = executable(/,/)/s/dep_photond_common/dep_photond_core/' "$tmp/src/meson.build"
expect 1 'photonctl uses dep_photond_core' "photonctl linking the daemon core fails"

exit $failed
