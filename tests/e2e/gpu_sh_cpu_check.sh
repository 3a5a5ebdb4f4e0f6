#!/usr/bin/env bash
# tools/bench/gpu.sh end to end in its CPU mode (--cpu-check --quick): every step runs and
# succeeds, each writes its JSON, and the summary has kdseg's rows, so that a session with a
# GPU can run the script in one call. A wrong usage is refused with status 2.
set -uo pipefail
exe=${KDSEG_EXE:?}
root=${KDSEG_SOURCE_ROOT:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; tail -60 "$tmp/log" 2>/dev/null; exit 1; }
bash "$root/tools/bench/gpu.sh" --quick >/dev/null 2>&1
[ $? = 2 ] || fail "--quick without --cpu-check was not refused with status 2"
OUT=$tmp/out KDSEG_EXE=$exe KDSEG_GPU_BUDGET=800 bash "$root/tools/bench/gpu.sh" --cpu-check --quick \
    >"$tmp/log" 2>&1 || fail "gpu.sh --cpu-check --quick exited with $?"
for s in "devices" "selftest" "bench train 16^3" "bench infer whole volume" \
         "bench infer whole volume, batch 4" "bench infer windows 16^3" \
         "bench infer windows 16^3, batch 4"; do
    grep -qxF "$s: rc 0" "$tmp/out/steps.txt" || fail "step '$s' did not run and succeed"
done
for j in train16 infer infer_b4 infer_tile infer_tile_b4; do
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["rows"], "no rows"' \
        "$tmp/out/$j.json" || fail "$j.json is not a JSON file with rows"
done
sum=$tmp/out/summary.md
grep -Eq '^\| training step 16\^3, batch 1 \| [0-9.]+ ms \|' "$sum" || fail "summary: no training row"
grep -Eq '^\| inference 24x24x24, windows 16x16x16, no TTA, batch 4 \(8 windows\) \| [0-9.]+ s, peak [0-9]+ MiB \|' \
    "$sum" || fail "summary: no batched sliding-window row"
[ "$(grep -c '^| inference ' "$sum")" = 4 ] || fail "summary: not 4 inference rows"
# the quick demo's table beside a reference run's (--prepare's KDSEG_DEMO_REF)
hdr=model,case,dice_wt,dice_tc,dice_et,hd95_wt,hd95_tc,hd95_et
printf '%s\nstudent,A,0.9,0.6,0.3,1,1,1\nstudent,B,0.6,0.6,0.6,1,1,1\n' "$hdr" >"$tmp/out/demo_results.csv"
printf '%s\nstudent,A,0.5,0.5,0.5,1,1,1\nstudent,B,0.5,0.5,0.5,1,1,1\nteacher,A,0.1,0.1,0.1,1,1,1\n' \
    "$hdr" >"$tmp/out/demo_ref_results.csv"
python3 "$root/tools/bench/gpu_summary.py" "$tmp/out" >"$tmp/sum2.md" || fail "gpu_summary.py with a demo"
grep -qxF '| student | 0.6000 (2 cases) | 0.5000 (2 cases) | +0.1000 |' "$tmp/sum2.md" ||
    fail "summary: the demo's mean Dice beside the reference's"
grep -qxF '| teacher | - | 0.1000 | - |' "$tmp/sum2.md" || fail "summary: a model only in the reference"
echo "gpu.sh --cpu-check --quick: all steps ran, JSON and summary complete"
