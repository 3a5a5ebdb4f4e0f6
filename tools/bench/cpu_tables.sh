#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md's CPU section in one run, then the tables themselves:
# the device's peak, every conv pass of the student, the teachers and the demo's 8-channel
# convs (with PyTorch's forward + backward per layer), the training step at 64^3 and 128^3
# and whole-volume inference (each with PyTorch in the same run), and the kernel profile
# of a 64^3 step (the non-conv share). With --base, the same benchmarks of an older kdseg
# (a binary, or a git revision built here) run beside them, alternated, for the "before"
# columns. Every benchmark runs under flock /work/locks/bench.lock (or $BENCH_LOCK) and its
# log starts and ends with `uptime`, so a loaded machine shows in the tables.
#
#   tools/bench/cpu_tables.sh [OUT_DIR] [--base BIN|REV] [--demo]
#
# OUT_DIR defaults to docs/bench-$(date +%F). --base main builds main's kdseg into
# ${TMPDIR:-/tmp}/kdseg-base-main (about 1 minute) and times it too. --demo also times
# `kdseg demo` (5-10 minutes; with --base, the base's too). The tables go to
# OUT_DIR/tables.md (tools/bench/cpu_tables.py, which can be rerun on the logs alone).
# Needs a build (tools/setup.sh) and, for the PyTorch columns, python3-torch.
# About 25 minutes on a quiet 2-core machine, 35 with --base, without --demo.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=docs/bench-$(date +%F)
DEMO=0
BASE=
while [ $# -gt 0 ]; do
  case "$1" in
  --demo) DEMO=1 ;;
  --base)
    [ $# -ge 2 ] || { echo "cpu_tables: --base needs a binary or a git revision" >&2; exit 2; }
    BASE=$2
    shift
    ;;
  -*) echo "cpu_tables: unknown option $1" >&2; exit 2 ;;
  *) OUT=$1 ;;
  esac
  shift
done
KDSEG=${KDSEG:-build/tools/kdseg}
LOCK=${BENCH_LOCK:-/work/locks/bench.lock}
[ -x "$KDSEG" ] || { echo "cpu_tables: no $KDSEG (run tools/setup.sh)" >&2; exit 1; }
mkdir -p "$OUT" || exit 1
lock() { if [ -e "$(dirname "$LOCK")" ]; then flock "$LOCK" "$@"; else "$@"; fi; }

if [ -n "$BASE" ] && [ ! -x "$BASE" ]; then
  rev=$BASE
  git rev-parse --verify -q "$rev^{commit}" >/dev/null ||
    { echo "cpu_tables: --base $rev is neither an executable nor a git revision" >&2; exit 2; }
  dir=${TMPDIR:-/tmp}/kdseg-base-$(echo "$rev" | tr -c 'A-Za-z0-9._\n-' _)
  echo "== building $rev into $dir"
  if ! { rm -rf "$dir" && mkdir -p "$dir" && git archive "$rev" | tar -x -C "$dir" &&
    (cd "$dir" && meson setup build >/dev/null && ninja -C build tools/kdseg >/dev/null); }; then
    echo "cpu_tables: could not build $rev in $dir" >&2
    exit 1
  fi
  BASE=$dir/build/tools/kdseg
  echo "$rev $(git rev-parse "$rev")" >"$OUT/base.txt"
elif [ -n "$BASE" ]; then
  echo "$BASE" >"$OUT/base.txt"
fi
git rev-parse HEAD >"$OUT/head.txt" 2>/dev/null

# run NAME BIN ARGS...: one benchmark, its output in OUT/NAME.txt, the load before and
# after in the same file
run() {
  local name=$1 bin=$2
  shift 2
  echo "== $name: $bin $*"
  {
    echo "# $bin $*"
    echo "# before: $(uptime)"
    lock "$bin" "$@"
    echo "# exit status $?"
    echo "# after: $(uptime)"
  } >"$OUT/$name.txt" 2>&1
  tail -n 2 "$OUT/$name.txt"
}

# the peak three times, the best kept as peak.json: a loaded machine lowers a run's figure
# (each run takes about 2 s), and every share-of-peak column divides by it
for i in 1 2 3; do
  run peak$i "$KDSEG" bench peak --json "$OUT/peak$i.json"
done
PEAK=
for i in 1 2 3; do
  g=$(sed -n 's/.*"gflops": \([0-9.]*\).*/\1/p' "$OUT/peak$i.json" 2>/dev/null)
  if [ -n "$g" ] && { [ -z "$PEAK" ] || awk "BEGIN{exit !($g > $PEAK)}"; }; then
    PEAK=$g
    cp "$OUT/peak$i.json" "$OUT/peak.json" && cp "$OUT/peak$i.txt" "$OUT/peak.txt"
  fi
done
P=()
[ -n "$PEAK" ] && P=(--peak "$PEAK")
OPS=(bench ops --patch 64 --reps 5 --impl direct --cpu)
# every layer with PyTorch; then the student's layers alternated with the base (A/B: the
# better of the two runs of each side per pass)
run ops "$KDSEG" "${OPS[@]}" --compare-pytorch "${P[@]}" --json "$OUT/ops.json"
if [ -n "$BASE" ]; then
  run ops_base1 "$BASE" "${OPS[@]}" --json "$OUT/ops_base1.json"
  run ops_new2 "$KDSEG" "${OPS[@]}" "${P[@]}" --json "$OUT/ops_new2.json"
  run ops_base2 "$BASE" "${OPS[@]}" --json "$OUT/ops_base2.json"
fi
run ops_demo "$KDSEG" bench ops --patch 32 --reps 7 --impl direct --cpu --only "w8" "${P[@]}" \
  --json "$OUT/ops_demo.json"
for patch in 64 128; do
  reps=3
  [ $patch = 128 ] && reps=2
  run train$patch "$KDSEG" bench train --patch $patch --reps $reps --impl direct --compare-pytorch \
    "${P[@]}" --json "$OUT/train$patch.json"
  [ -n "$BASE" ] && run train${patch}_base "$BASE" bench train --patch $patch --reps $reps \
    --impl direct --json "$OUT/train${patch}_base.json"
done
run infer "$KDSEG" bench infer --reps 1 --impl direct --compare-pytorch "${P[@]}" --json "$OUT/infer.json"
[ -n "$BASE" ] && run infer_base "$BASE" bench infer --reps 1 --impl direct --json "$OUT/infer_base.json"
# the kernel profile of a 64^3 step (KDSEG_PROFILE=1 prints it after the table)
export KDSEG_PROFILE=1
run profile64 "$KDSEG" bench train --patch 64 --reps 2 --impl direct --peak 0
[ -n "$BASE" ] && run profile64_base "$BASE" bench train --patch 64 --reps 2 --impl direct
unset KDSEG_PROFILE
demo() { # NAME BIN
  echo "== $1"
  rm -rf "${OUT:?}/$1"
  {
    echo "# before: $(uptime)"
    local start
    start=$(date +%s)
    lock "$2" demo --out "$OUT/$1"
    echo "# exit status $?, $(($(date +%s) - start)) s"
    echo "# after: $(uptime)"
  } >"$OUT/$1.txt" 2>&1
  tail -n 2 "$OUT/$1.txt"
}
if [ "$DEMO" = 1 ]; then
  demo demo "$KDSEG"
  [ -n "$BASE" ] && demo demo_base "$BASE"
fi
python3 tools/bench/cpu_tables.py "$OUT" >"$OUT/tables.md" && echo "cpu_tables: tables in $OUT/tables.md"
echo "cpu_tables: results in $OUT"
