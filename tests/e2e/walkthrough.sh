#!/usr/bin/env bash
# A new user's walk-through: every example line of every command's --help ("examples:"
# block; a line ending in \ continues), run as written, in the order `kdseg --help` lists
# the commands, in one folder that holds only small phantom datasets under the names the
# examples use (and a copy of the golden file). Each must exit 0; later examples may use
# what earlier ones wrote (run1/best.kds), as a user following the help would.
set -uo pipefail
exe=${KDSEG_EXE:?}
src=${KDSEG_SOURCE_ROOT:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export exe
# a cache of its own (kdseg tune writes the tuning table there), seeded with the built
# programs of the shared one
if [ -d "${XDG_CACHE_HOME:-}/kdseg" ]; then
  mkdir -p "$work/cache" && cp -r "$XDG_CACHE_HOME/kdseg" "$work/cache/" && rm -f "$work/cache/kdseg/conv-tuning.txt"
fi
export XDG_CACHE_HOME="$work/cache"
# the datasets the examples name: BraTS 2018-21 layout, 3 labeled 32^3 cases; an
# unlabeled pool; a golden/state-dict file
"$exe" -q phantom --out BraTS2021_Training --cases 3 --size 32 --seed 1 >/dev/null &&
  "$exe" -q phantom --out unlabeled --cases 2 --first 10 --no-labels --size 32 --seed 2 >/dev/null &&
  cp "$src/tests/golden/resunet-w8-16-24-32-b2-16x24x32.kdgold" resunet.kdgold ||
  { echo "FAIL: fixture"; exit 1; }
cmds=$("$exe" --help | awk '/^commands:/{f=1; next} f && /^  [a-z]/{print $1; next} f{exit}')
[ -n "$cmds" ] || { echo "FAIL: no commands in kdseg --help"; exit 1; }
total=0 failed=0 missing=0
for c in $cmds; do
  # the example lines of the command's help, continuations joined
  mapfile -t examples < <("$exe" "$c" --help | awk '
    /^examples:/ { f = 1; next }
    f && /^[^ ]/ { exit }
    f && /^ *$/ { exit }
    f { sub(/^ +/, ""); line = line $0; if (line ~ /\\$/) { sub(/\\$/, "", line); next } print line; line = "" }')
  if [ ${#examples[@]} -lt 2 ]; then
    echo "FAIL: kdseg $c --help has ${#examples[@]} example line(s); every command needs two or three"
    missing=$((missing + 1))
  fi
  for ex in "${examples[@]}"; do
    case $ex in kdseg\ *) ;; *) echo "FAIL: example of $c does not start with kdseg: $ex"; failed=$((failed + 1)); continue ;; esac
    total=$((total + 1))
    t0=$(date +%s)
    if bash -c "kdseg() { \"\$exe\" \"\$@\"; }; $ex" >"$work/out.log" 2>&1; then
      echo "ok   ($(($(date +%s) - t0)) s) $ex"
    else
      rc=$?
      failed=$((failed + 1))
      echo "FAIL (exit $rc) $ex"
      tail -n 15 "$work/out.log" | sed 's/^/     | /'
    fi
  done
done
echo "walk-through: $total examples, $failed failed, $missing commands without examples"
[ $failed = 0 ] && [ $missing = 0 ]
