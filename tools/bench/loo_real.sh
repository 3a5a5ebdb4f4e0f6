#!/usr/bin/env bash
# Leave-one-out benchmark of the real-data training recipe on the labeled real cases
# (../shared/data/brats2013-flair-t1ce: four BraTS 2013 gliomas, FLAIR + T1ce). For each
# fold it trains on all cases but one with `kdseg train` (every training option is the
# command's default unless given here), segments the held-out case with `kdseg segment`,
# scores it with `kdseg evaluate`, and prints per-fold and mean Dice and HD95 per region
# with the training time (wall clock and CPU seconds: on this 2-core machine a quiet run's
# wall clock is about half its CPU time), steps/s and the machine's load (1-minute load
# average before and after training).
#
# The three training cases are all trained on; no validation case is held out of three
# (--val-cases 0) and the fold's model is the last checkpoint (last.kds): with three cases,
# a fourth of the data spent on choosing a checkpoint costs more than it gives (measured:
# docs/real-data/README.md).
#
#   usage: tools/bench/loo_real.sh OUT [kdseg train options, e.g. --steps 1500 --patch 96]
#   env:   KDSEG       the kdseg binary (default build/tools/kdseg)
#          DATA        the labeled cases (default ../shared/data/brats2013-flair-t1ce)
#          MODALITIES  (default t1ce,flair)   MODEL (default resunet:widths=8,16,32,64:in=2)
#          FOLDS       which held-out cases, 1-based in name order (default: all)
#          SEGMENT     more `kdseg segment` options (e.g. "--tta 8 --min-component 0")
#          REUSE=1     keep trained models already in OUT (segment and evaluate again)
#          CKPT        the checkpoint of each fold that segments: last (default), or ema
#                      (the weight average, written when training keeps one: --ema D)
#          NICE        run under `nice -n NICE` (default: not)
#          JOBS        folds run at once (default 1; 2 on this 2-core machine with --threads 1)
#          PROB=1      also write each held-out case's region probabilities in OUT/fold-N/prob
#                      (for measuring post-processing afterwards)
# Output: OUT/fold-N/{train,test} (links), model/, pred/, eval.csv, train.log;
#         OUT/summary.csv (one row per fold) and the table on stdout.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
K=${KDSEG:-$here/build/tools/kdseg}
DATA=${DATA:-$here/../shared/data/brats2013-flair-t1ce}
MODALITIES=${MODALITIES:-t1ce,flair}
MODEL=${MODEL:-resunet:widths=8,16,32,64:in=2}
CKPT=${CKPT:-last}
[ $# -ge 1 ] || { sed -n '2,30p' "$0"; exit 2; }
OUT=$1
shift
opts=("$@")
if [ ! -d "$DATA" ]; then
  echo "loo_real.sh: SKIP: $DATA is absent (the shared real cases)" >&2
  exit 77
fi
run() { if [ -n "${NICE:-}" ]; then nice -n "$NICE" "$@"; else "$@"; fi; }
mapfile -t cases < <(cd "$DATA" && for d in */; do echo "${d%/}"; done | sort)
n=${#cases[@]}
[ "$n" -ge 2 ] || { echo "loo_real.sh: $DATA holds $n cases; need at least 2" >&2; exit 1; }
FOLDS=${FOLDS:-$(seq 1 "$n")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
summary=$OUT/summary.csv
echo "fold,case,train_s,train_cpu_s,steps,steps_per_s,load_before,load_after,dice_wt,dice_tc,dice_et,hd95_wt,hd95_tc,hd95_et" > "$summary"
echo "kdseg train $* (model $MODEL, modalities $MODALITIES; $CKPT.kds segments)" > "$OUT/command.txt"
load() { awk '{print $1}' /proc/loadavg; }
fold() {
  local f=$1 held=${cases[$(($1 - 1))]} d=$OUT/fold-$1 c l0 l1 t0 t1
  mkdir -p "$d/train" "$d/test"
  for c in "${cases[@]}"; do
    if [ "$c" = "$held" ]; then ln -sfn "$DATA/$c" "$d/test/$c"; else ln -sfn "$DATA/$c" "$d/train/$c"; fi
  done
  l0=$(load)
  t0=$(date +%s.%N)
  if [ "${REUSE:-0}" != 1 ] || [ ! -f "$d/model/last.kds" ]; then
    rm -rf "$d/model"
    TIMEFORMAT="%R %U %S"
    { time run "$K" train --dataset "$d/train" --modalities "$MODALITIES" --arch "$MODEL" --val-cases 0 \
      --quiet --out "$d/model" "${opts[@]}" > "$d/train.log" 2>&1; } 2> "$d/train.time" ||
      { echo "loo_real.sh: fold $f: kdseg train failed, see $d/train.log" >&2; tail -3 "$d/train.log" >&2; return 1; }
  fi
  t1=$(date +%s.%N)
  l1=$(load)
  rm -rf "$d/pred"
  # shellcheck disable=SC2086
  run "$K" segment --checkpoint "$d/model/$CKPT.kds" --dataset "$d/test" --modalities "$MODALITIES" \
    --out "$d/pred" ${SEGMENT:-} > "$d/segment.log" 2>&1 ||
    { echo "loo_real.sh: fold $f: kdseg segment failed, see $d/segment.log" >&2; return 1; }
  if [ "${PROB:-0}" = 1 ]; then
    rm -rf "$d/prob"
    # shellcheck disable=SC2086
    run "$K" segment --checkpoint "$d/model/$CKPT.kds" --dataset "$d/test" --modalities "$MODALITIES" \
      --out "$d/prob" --probabilities ${SEGMENT:-} > "$d/segment-prob.log" 2>&1 ||
      { echo "loo_real.sh: fold $f: kdseg segment --probabilities failed, see $d/segment-prob.log" >&2; return 1; }
  fi
  "$K" evaluate --pred "$d/pred" --ref "$d/test" --csv "$d/eval.csv" > "$d/evaluate.log" 2>&1 ||
    { echo "loo_real.sh: fold $f: kdseg evaluate failed, see $d/evaluate.log" >&2; return 1; }
  steps=$(awk -F, 'NR > 1 && $1 ~ /^[0-9]+$/ { n++ } END { print n + 0 }' "$d/model/train.csv")
  tsec=$(awk -F, 'NR > 1 { s += $6 } END { printf "%.1f", s }' "$d/model/train.csv")
  wall=$(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }')
  cpu=$(awk '{ printf "%.1f", $2 + $3 }' "$d/train.time" 2> /dev/null || echo 0)
  awk -F, -v f="$f" -v c="$held" -v w="$wall" -v cpu="$cpu" -v st="$steps" -v ts="$tsec" -v l0="$l0" -v l1="$l1" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { printf "%s,%s,%s,%s,%s,%.3f,%s,%s,%.4f,%.4f,%.4f,%.2f,%.2f,%.2f\n", f, c, w, cpu, st,
             (ts > 0 ? st / ts : 0), l0, l1, $col["Dice_WT"], $col["Dice_TC"], $col["Dice_ET"],
             $col["HD95_WT"], $col["HD95_TC"], $col["HD95_ET"] }' "$d/eval.csv" > "$d/row.csv"
}
pids=() failed=0
for f in $FOLDS; do
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-1}" ]; do wait -n || failed=1; done
  rm -f "$OUT/fold-$f/row.csv"
  fold "$f" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
for f in $FOLDS; do [ -f "$OUT/fold-$f/row.csv" ] && cat "$OUT/fold-$f/row.csv" >> "$summary"; done
[ "$failed" = 0 ] || { echo "loo_real.sh: a fold failed (above); the table has the others" >&2; }
awk -F, 'NR == 1 { next }
  { printf "fold %s %-22s train %7.1f s (CPU %7.1f s) %5d steps %6.3f steps/s load %5s-%-5s  Dice WT %.3f TC %.3f ET %.3f  HD95 WT %6.2f TC %6.2f ET %6.2f\n",
           $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14
    for (i = 9; i <= 14; i++) s[i] += $i
    t += $3; k++ }
  END { if (k) printf "mean   %-22s train %7.1f s                                                     Dice WT %.3f TC %.3f ET %.3f  HD95 WT %6.2f TC %6.2f ET %6.2f\n",
               k " folds", t / k, s[9] / k, s[10] / k, s[11] / k, s[12] / k, s[13] / k, s[14] / k }' "$summary" | tee "$OUT/table.txt"
[ "$failed" = 0 ]
