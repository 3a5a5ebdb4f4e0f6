#!/usr/bin/env bash
# Logs redirected to a file: the command's header (stdout) before its progress
# (stderr), progress as info with an ETA (train's steps, segment's cases), no
# "warning" on progress, and -q hides it.
set -euo pipefail
exe=${KDSEG_EXE:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; cat "$tmp"/*.log 2>/dev/null | head -40; exit 1; }
"$exe" phantom --out "$tmp/d" --cases 3 --size 32 --seed 6 >/dev/null
common="--arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 --lr 1e-3 --val-every 50
        --ckpt-every 50 --margin 4 --threads 0"
# shellcheck disable=SC2086
"$exe" train --dataset "$tmp/d" --out "$tmp/t" --steps 60 $common >"$tmp/train.log" 2>&1 ||
  fail "train"
head -1 "$tmp/train.log" | grep -q '^training ' || fail "train: the header is not the first line"
grep -q '^kdseg info: step 50/60 loss .* ETA [0-9]' "$tmp/train.log" || fail "train: no progress with ETA"
grep -i 'warning' "$tmp/train.log" | grep -q 'step' && fail "train: progress as a warning"
first_info=$(grep -n '^kdseg info' "$tmp/train.log" | head -1 | cut -d: -f1)
header=$(grep -n '^training ' "$tmp/train.log" | cut -d: -f1)
[ "$header" -lt "$first_info" ] || fail "train: progress before the header"
"$exe" segment --checkpoint "$tmp/t/last.kds" --dataset "$tmp/d" --out "$tmp/s" >"$tmp/seg.log" 2>&1 ||
  fail "segment"
head -1 "$tmp/seg.log" | grep -q '^segmenting 3 cases' || fail "segment: header not first"
sed -n 2p "$tmp/seg.log" | grep -q '^  KDPhantom' || fail "segment: first case line not second"
sed -n 3p "$tmp/seg.log" | grep -q '^kdseg info: 1/3 cases, .* ETA [0-9]' || fail "segment: no ETA after case 1"
"$exe" -q segment --checkpoint "$tmp/t/last.kds" --dataset "$tmp/d" --out "$tmp/s2" >"$tmp/q.log" 2>&1 ||
  fail "segment -q"
grep -q 'kdseg info' "$tmp/q.log" && fail "-q shows progress"
echo "logs in order, progress as info with ETA: ok"
