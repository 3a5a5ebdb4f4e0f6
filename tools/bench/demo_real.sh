#!/usr/bin/env bash
# The distillation experiment on the shared real cases, tested by leave-out: for each fold
# one of the labeled real cases (../shared/data/brats2013-flair-t1ce, FLAIR + T1ce) is the
# test case, two of the others are labeled, the rest are "unlabeled" (their labels hidden
# from training; they score the ensemble's annotations), and the BraTS 2023 sample
# (../shared/data/brats2023-sample, no labels) is an extra unlabeled case. Each fold is one
# `kdseg demo --labeled --unlabeled --unlabeled --test` run; the table of each fold is in
# OUT/fold-N/log.txt, its files in OUT/fold-N/out.
#
#   usage: tools/bench/demo_real.sh OUT [more kdseg demo options, e.g. --teacher-steps 300]
#   env:   KDSEG  the kdseg binary (default build/tools/kdseg)
#          FOLDS  which cases are tested, 1-based in name order (default: all)
#          NICE   run under `nice -n NICE` (default: not)
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
K=${KDSEG:-$here/build/tools/kdseg}
DATA=$here/../shared/data/brats2013-flair-t1ce
EXTRA=$here/../shared/data/brats2023-sample
[ $# -ge 1 ] || { sed -n '2,15p' "$0"; exit 2; }
OUT=$1
shift
if [ ! -d "$DATA" ] || [ ! -d "$EXTRA" ]; then
  echo "demo_real.sh: SKIP: $DATA or $EXTRA is absent (the shared real cases)" >&2
  exit 77
fi
run() { if [ -n "${NICE:-}" ]; then nice -n "$NICE" "$@"; else "$@"; fi; }
mapfile -t cases < <(cd "$DATA" && for d in */; do echo "${d%/}"; done | sort)
n=${#cases[@]}
[ "$n" -ge 4 ] || { echo "demo_real.sh: $DATA holds $n cases; need at least 4" >&2; exit 1; }
for f in ${FOLDS:-$(seq 1 "$n")}; do
  d=$OUT/fold-$f
  rm -rf "$d/labeled" "$d/unlabeled" "$d/test"
  mkdir -p "$d/labeled" "$d/unlabeled" "$d/test"
  k=0
  for i in $(seq 1 "$n"); do
    c=${cases[$((i - 1))]}
    if [ "$i" = "$f" ]; then ln -s "$DATA/$c" "$d/test/$c"
    elif [ $k -lt 2 ]; then ln -s "$DATA/$c" "$d/labeled/$c"; k=$((k + 1))
    else ln -s "$DATA/$c" "$d/unlabeled/$c"; fi
  done
  echo "fold $f: test ${cases[$((f - 1))]}, labeled $(ls "$d/labeled" | tr '\n' ' '), unlabeled $(ls "$d/unlabeled" | tr '\n' ' ')+ $(ls "$EXTRA")"
  run "$K" demo --labeled "$d/labeled" --unlabeled "$d/unlabeled" --unlabeled "$EXTRA" --test "$d/test" \
    --modalities t1ce,flair --out "$d/out" "$@" > "$d/log.txt" 2>&1 || { tail -n 5 "$d/log.txt"; exit 1; }
  sed -n '/^mean Dice over/,$p' "$d/log.txt"
done
