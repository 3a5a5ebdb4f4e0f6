#!/usr/bin/env bash
# The prepared GPU check (issues 8 and 21): one script, one time limit, everything into $OUT.
#
#   bash tools/bench/gpu.sh --prepare   here, after a build: copies build/tools/kdseg, the
#                                       libraries it needs that a bare image may lack (ICD
#                                       loader, CLBlast, libnifti) and the paper-width golden
#                                       file into .gpu/ (git-ignored; about 30 MB); with
#                                       KDSEG_DEMO_REF=q/results.csv (from `kdseg demo --quick
#                                       --out q` here, on PoCL) also that table, which the
#                                       summary sets beside the GPU's quick demo
#   bash tools/bench/gpu.sh             on the lent machine (device tool, carry [".gpu"]),
#                                       from the repository root; no apt, no network
#   bash tools/bench/gpu.sh --cpu-check here: the same steps on the PoCL CPU device with
#                                       small sizes and PyTorch on the CPU, to check the
#                                       script's logic, its JSON and its summary (budget
#                                       1800 s by default: PyTorch on 2 shared cores is slow)
#   bash tools/bench/gpu.sh --cpu-check --quick   the same with a tiny model and sizes, no
#                                       flips and no demo (1-3 min here, by load; the
#                                       e2e/gpu_sh_cpu_check test); KDSEG_EXE names the kdseg
#
# The exit status is 0 when every step that ran succeeded, 1 otherwise (steps.txt lists
# each step's status); a step skipped for lack of time is not a failure.
#
# On the GPU it registers NVIDIA's OpenCL driver with the ICD loader when the image has no
# vendors file for it, then runs, each step under its own timeout and all of them within
# KDSEG_GPU_BUDGET seconds (default 420: a rerun still fits in 15 minutes of device time):
# devices, the selftest against PyTorch's golden tensors, bench peak (when the build has it),
# kdseg tune, bench train at 64^3 and 128^3, bench infer at 160x192x160 (whole volume, with
# and without 4 flips; windows of 128^3; one window or flip per forward pass, the default,
# and up to 4) against
# PyTorch + cuDNN in the same run (strict fp32), and the quick demo. A step that does not
# fit in the time left is skipped and says so. Last, a summary table of kdseg against
# PyTorch from the JSON files (tools/bench/gpu_summary.py).
set -u
cd "$(dirname "$0")/../.." || exit 1
MODE=gpu
case "${1:-}" in
--prepare)
    [ -x build/tools/kdseg ] || { echo "gpu.sh --prepare: build first (bash tools/setup.sh)"; exit 1; }
    rm -rf .gpu && mkdir -p .gpu
    cp build/tools/kdseg .gpu/
    for lib in libOpenCL.so.1 libclblast.so.1 libnifti2.so.2 libznz.so.3; do
        p=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')
        [ -n "$p" ] && cp -L "$p" .gpu/ && echo "  $lib <- $p"
    done
    gold=../shared/reference/resunet-c8-n1-32.kdgold
    [ -f "$gold" ] && cp "$gold" .gpu/ && echo "  $(basename "$gold")"
    if [ -n "${KDSEG_DEMO_REF:-}" ]; then
        [ -f "$KDSEG_DEMO_REF" ] || { echo "gpu.sh --prepare: KDSEG_DEMO_REF=$KDSEG_DEMO_REF: no such file"; exit 1; }
        cp "$KDSEG_DEMO_REF" .gpu/demo_ref_results.csv && echo "  demo reference <- $KDSEG_DEMO_REF"
    fi
    du -sh .gpu
    exit 0
    ;;
--cpu-check) MODE=cpu ;;
"") ;;
*) echo "usage: gpu.sh [--prepare | --cpu-check [--quick]]"; exit 2 ;;
esac
QUICK=0
case "${2:-}" in
--quick)
    [ "$MODE" = cpu ] || { echo "gpu.sh: --quick goes with --cpu-check"; exit 2; }
    QUICK=1
    ;;
"") ;;
*) echo "usage: gpu.sh [--prepare | --cpu-check [--quick]]"; exit 2 ;;
esac
FAILED=0
MODEL=() # --arch SPEC for bench train and infer; empty: the paper's student
TTA=()   # bench infer: both 1 and 4 flips unless --quick

OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1
DEFAULT_BUDGET=420
[ "$MODE" = cpu ] && [ $QUICK = 0 ] && DEFAULT_BUDGET=1800
BUDGET=${KDSEG_GPU_BUDGET:-$DEFAULT_BUDGET}
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
step() { echo; echo "=== $* ($(date +%T), $(left) s left)"; }
TMULT=1 # step limits are sized for the GPU; the CPU check multiplies them
# run LIMIT NAME CMD...: the command under min(LIMIT x TMULT, time left - 5 s), or skipped
run() {
    local lim=$(($1 * TMULT)) name=$2 l
    shift 2
    l=$(($(left) - 5))
    [ "$l" -lt "$lim" ] && lim=$l
    step "$name"
    if [ "$lim" -lt 10 ]; then
        echo "SKIPPED: $name (no time left in the ${BUDGET} s budget)"
        echo "$name: skipped" >>"$OUT/steps.txt"
        return 0
    fi
    timeout "$lim" "$@"
    local rc=$?
    [ $rc = 124 ] && echo "TIMED OUT after $lim s: $name"
    [ $rc != 0 ] && FAILED=1
    echo "$name: rc $rc" >>"$OUT/steps.txt"
    return 0
}
: >"$OUT/steps.txt"

if [ "$MODE" = gpu ]; then
    K=.gpu/kdseg
    [ -x "$K" ] || { echo "no .gpu/kdseg: run gpu.sh --prepare here and carry .gpu"; exit 1; }
    TD=cuda
    TRAIN_PATCHES="64 128"
    VOL=160,192,160
    TILE=128
    REPS=3
    GOLD=.gpu/resunet-c8-n1-32.kdgold
    step environment
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
    python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
    lib=$(ls /usr/local/nvidia/lib64/libnvidia-opencl.so* /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so* \
              /usr/local/nvidia/lib/libnvidia-opencl.so* 2>/dev/null | head -1)
    echo "NVIDIA OpenCL driver library: ${lib:-none found}"
    ls /etc/OpenCL/vendors 2>/dev/null
    if [ -n "$lib" ] && ! grep -qs nvidia /etc/OpenCL/vendors/*.icd; then
        mkdir -p /etc/OpenCL/vendors && echo "$lib" >/etc/OpenCL/vendors/nvidia.icd
        echo "registered $lib in /etc/OpenCL/vendors/nvidia.icd"
    fi
    [ -z "$lib" ] && find / -xdev -name 'libnvidia-opencl*' 2>/dev/null | head
    export LD_LIBRARY_PATH=$PWD/.gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export XDG_CACHE_HOME=/tmp/kdseg-cache
else
    K=${KDSEG_EXE:-build/tools/kdseg}
    [ -x "$K" ] || { echo "no $K: bash tools/setup.sh first"; exit 1; }
    TD=cpu
    TRAIN_PATCHES="32"
    VOL=48,48,48
    TILE=32
    REPS=1
    TMULT=4
    GOLD=tests/golden/resunet-w8-16-24-32-b2-16x24x32.kdgold
    export KDSEG_CONV=direct # skip the conv chooser's one-time timings
    if [ $QUICK = 1 ]; then
        MODEL=(--arch "resunet:widths=8,8,16,16:enc=1,1,1,1")
        TRAIN_PATCHES="16"
        VOL=24,24,24
        TILE=16
        TTA=(--tta none) # the flips' path is the same; PyTorch's CPU side is the slow part
    fi
fi
[ -f "$GOLD" ] || GOLD=tests/golden/resunet-w8-16-24-32-b2-16x24x32.kdgold
T="--compare-pytorch --torch-device $TD"
echo "mode $MODE, kdseg $K, budget $BUDGET s, out $OUT"

step devices
timeout $((120 * TMULT)) "$K" devices --build | tee "$OUT/devices.txt"
rc=${PIPESTATUS[0]}
echo "devices: rc $rc" >>"$OUT/steps.txt"
[ "$rc" = 0 ] || FAILED=1
chosen=$(grep '^chosen:' "$OUT/devices.txt")
if [ "$MODE" = gpu ] && ! grep -qi nvidia <<<"$chosen"; then
    echo "no usable NVIDIA OpenCL GPU (${chosen:-no device}): stopping"
    exit 1
fi
run 60 selftest "$K" selftest --golden "$GOLD"
if "$K" bench --help 2>&1 | grep -q '^  peak '; then
    run 60 "bench peak" \
        bash -c 'set -o pipefail; "$0" bench peak --json "$1/peak.json" | tee "$1/peak.txt"' "$K" "$OUT"
else
    step "bench peak"
    echo "SKIPPED: this build has no 'kdseg bench peak' (branch kern adds it)"
    echo "bench peak: not in this build" >>"$OUT/steps.txt"
fi
if [ "$MODE" = gpu ]; then
    run 60 tune "$K" tune
    cp "$XDG_CACHE_HOME"/kdseg/conv-tuning.txt "$OUT/" 2>/dev/null
fi
for p in $TRAIN_PATCHES; do
    run 90 "bench train ${p}^3" "$K" bench train "${MODEL[@]}" --patch "$p" --reps $REPS $T --json "$OUT/train$p.json"
done
run 90 "bench infer whole volume" \
    "$K" bench infer "${MODEL[@]}" "${TTA[@]}" --size $VOL --reps $REPS $T --json "$OUT/infer.json"
run 60 "bench infer whole volume, batch 4" \
    "$K" bench infer "${MODEL[@]}" "${TTA[@]}" --size $VOL --reps $REPS --batch 4 --json "$OUT/infer_b4.json"
run 90 "bench infer windows ${TILE}^3" \
    "$K" bench infer "${MODEL[@]}" "${TTA[@]}" --size $VOL --tile $TILE --reps $REPS $T --json "$OUT/infer_tile.json"
run 60 "bench infer windows ${TILE}^3, batch 4" \
    "$K" bench infer "${MODEL[@]}" "${TTA[@]}" --size $VOL --tile $TILE --reps $REPS --batch 4 --json "$OUT/infer_tile_b4.json"
# the demo's folder (data, models, predictions) stays out of $OUT; its tables come back
DEMO=/tmp/kdseg-gpu-demo
if [ $QUICK = 1 ]; then
    step "demo --quick"
    echo "SKIPPED: demo (--cpu-check --quick)"
    echo "demo --quick: skipped (--quick)" >>"$OUT/steps.txt"
else
    rm -rf "$DEMO"
    run 150 "demo --quick" "$K" demo --quick --out "$DEMO"
    for f in results.csv results.md; do
        [ -f "$DEMO/$f" ] && cp "$DEMO/$f" "$OUT/demo_$f"
    done
    [ -f .gpu/demo_ref_results.csv ] && [ "$MODE" = gpu ] && cp .gpu/demo_ref_results.csv "$OUT/"
fi
step summary
python3 tools/bench/gpu_summary.py "$OUT" >"$OUT/summary.md" || FAILED=1
cat "$OUT/summary.md"
step "done"
cat "$OUT/steps.txt"
[ $FAILED = 0 ] || echo "gpu.sh: at least one step failed (steps.txt)"
exit $FAILED
