#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md's CPU tables in one run: the device's peak, every conv
# pass of the student and the teachers (with PyTorch's forward + backward per layer), the
# demo's 8-channel convs at its 32^3 patch, the training step at 64^3 and 128^3 and
# whole-volume inference (each with PyTorch in the same run), and the kernel profile of a
# 64^3 step (the non-conv share). Every benchmark runs under flock /work/locks/bench.lock
# (or $BENCH_LOCK) and its log starts and ends with `uptime`, so a loaded machine shows.
#
#   tools/bench/perf_table.sh [OUT_DIR] [--demo]
#
# OUT_DIR defaults to docs/bench-$(date +%F); --demo also times `kdseg demo` (about 5-10
# minutes). Needs a build (tools/setup.sh) and, for the PyTorch columns, python3-torch.
# About 25 minutes on a quiet 2-core machine without --demo.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=docs/bench-$(date +%F)
DEMO=0
for a in "$@"; do
  case "$a" in
  --demo) DEMO=1 ;;
  -*) echo "perf_table: unknown option $a" >&2; exit 2 ;;
  *) OUT=$a ;;
  esac
done
KDSEG=${KDSEG:-build/tools/kdseg}
LOCK=${BENCH_LOCK:-/work/locks/bench.lock}
[ -x "$KDSEG" ] || { echo "perf_table: no $KDSEG (run tools/setup.sh)" >&2; exit 1; }
mkdir -p "$OUT"
lock() { if [ -e "$(dirname "$LOCK")" ]; then flock "$LOCK" "$@"; else "$@"; fi; }

# run NAME ARGS...: one benchmark, its output in OUT/NAME.txt (and NAME.json when the
# command takes --json), the load before and after in the same file
run() {
  local name=$1
  shift
  echo "== $name: kdseg $*"
  {
    echo "# kdseg $*"
    echo "# before: $(uptime)"
    lock "$KDSEG" "$@"
    echo "# exit status $?"
    echo "# after: $(uptime)"
  } >"$OUT/$name.txt" 2>&1
  tail -n 3 "$OUT/$name.txt"
}

run peak bench peak --json "$OUT/peak.json"
PEAK=$(sed -n 's/.*"gflops": \([0-9.]*\).*/\1/p' "$OUT/peak.json")
P=${PEAK:+--peak $PEAK}
# shellcheck disable=SC2086
run ops bench ops --patch 64 --reps 5 --impl direct --cpu --compare-pytorch $P --json "$OUT/ops.json"
# shellcheck disable=SC2086
run ops_demo bench ops --patch 32 --reps 7 --impl direct --cpu --only "w8" $P --json "$OUT/ops_demo.json"
# shellcheck disable=SC2086
run train64 bench train --patch 64 --reps 3 --impl direct --compare-pytorch $P --json "$OUT/train64.json"
# shellcheck disable=SC2086
run train128 bench train --patch 128 --reps 2 --impl direct --compare-pytorch $P --json "$OUT/train128.json"
# shellcheck disable=SC2086
run infer bench infer --reps 1 --impl direct --compare-pytorch $P --json "$OUT/infer.json"
# shellcheck disable=SC2086
KDSEG_PROFILE=1 run profile64 bench train --patch 64 --reps 2 --impl direct $P
if [ "$DEMO" = 1 ]; then
  echo "== demo"
  {
    echo "# before: $(uptime)"
    start=$(date +%s)
    lock "$KDSEG" demo --out "$OUT/demo"
    echo "# exit status $?, $(($(date +%s) - start)) s"
    echo "# after: $(uptime)"
  } >"$OUT/demo.txt" 2>&1
  tail -n 3 "$OUT/demo.txt"
fi
echo "perf_table: results in $OUT"
