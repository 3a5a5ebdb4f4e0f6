#!/usr/bin/env bash
# Data-parallel scaling on one machine (docs/SCALING.md): the paper's student (resunet,
# 4.5 M parameters) trained for STEPS steps at a global batch of 2 on a phantom cohort,
#   A: 1 rank  x 2 device threads, batch 2
#   B: 2 ranks x 1 device thread each, batch 1 per rank (mpirun)
# with PoCL's thread count set by POCL_MAX_PTHREAD_COUNT (a GPU ignores it). Prints the
# median step time (steps 2.. of train.csv: the first steps build programs and plans) and,
# for B, the gradient exchange's share (device reads, MPI_Allreduce of 18 MB, writes).
# Usage: tools/bench/mpi_scaling.sh [OUT_DIR]   (env: STEPS=12 PATCH=32 KDSEG=build/tools/kdseg)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/kdseg-mpi-scaling}
STEPS=${STEPS:-12}
PATCH=${PATCH:-32}
K=${KDSEG:-build/tools/kdseg}
command -v mpirun >/dev/null || { echo "mpi_scaling: mpirun not found (apt-get install openmpi-bin)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
"$K" phantom --out "$OUT/ph" --cases 6 --size 64 --seed 3 >/dev/null
ARGS=(train --dataset "$OUT/ph" --arch resunet --patch "$PATCH" --steps "$STEPS" --val-every 0
      --ckpt-every 0 --threads 1 --margin 8)
median() { # train.csv -> median of the seconds column over steps >= 2
  awk -F, 'NR > 1 && $1 >= 2 { print $6 }' "$1" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
POCL_MAX_PTHREAD_COUNT=2 "$K" "${ARGS[@]}" --batch 2 --out "$OUT/a" >"$OUT/a.log" 2>&1
echo "load between: $(cut -d' ' -f1-3 /proc/loadavg)"
KDSEG_DIST_PROFILE=1 mpirun --allow-run-as-root --oversubscribe -np 2 -x POCL_MAX_PTHREAD_COUNT=1 -x KDSEG_DIST_PROFILE \
  "$K" "${ARGS[@]}" --batch 1 --out "$OUT/b" >"$OUT/b.log" 2>&1
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
a=$(median "$OUT/a/train.csv")
b=$(median "$OUT/b/train.csv")
line=$(grep 'gradient exchange over' "$OUT/b.log")
# "... per step after the first: T s = waiting for the slowest rank W s + MPI_Allreduce of N gradients R s + device ... D s"
read -r tot wait red dev < <(echo "$line" | sed -E 's/.*first: ([0-9.]+) s = waiting for the slowest rank ([0-9.]+) s.* gradients ([0-9.]+) s .* ([0-9.]+) s$/\1 \2 \3 \4/')
printf 'A 1 rank  x 2 threads, batch 2:          %.3f s/step (median of steps 2..%d)\n' "$a" "$((STEPS - 1))"
printf 'B 2 ranks x 1 thread,  batch 1 per rank: %.3f s/step\n' "$b"
printf '  B exchange per step %.3f s: waiting for the other rank %.3f s, MPI_Allreduce %.4f s, device reads/writes %.4f s\n' \
  "$tot" "$wait" "$red" "$dev"
printf 'B/A: %.2f\n' "$(echo "$b $a" | awk '{ print $1 / $2 }')"
