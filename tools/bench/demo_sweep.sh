#!/usr/bin/env bash
# Runs `kdseg demo` for several experiment settings x seeds in parallel and summarises the
# mean Dice (WT, TC, ET) of each model per run: the tool used to choose the demo's default
# sizes (README, "What the demo does and what it measured"). Settings are "name:demo options" lines on stdin or in $1.
#   usage: KDSEG=path/to/kdseg SEEDS="1 2" JOBS=12 tools/bench/demo_sweep.sh settings.txt OUTDIR
set -u
K=${KDSEG:-kdseg}
SEEDS=${SEEDS:-"1 2"}
JOBS=${JOBS:-4}
LIMIT=${LIMIT:-600}
settings=${1:-/dev/stdin}
out=${2:-demo-sweep}
mkdir -p "$out"
$K devices --build > "$out/devices.txt" 2>&1 || { cat "$out/devices.txt"; exit 1; }
run_one() { # name seed options...
    local name=$1 seed=$2; shift 2
    local d="$out/$name-s$seed" t0=$SECONDS
    timeout "$LIMIT" $K demo --out "$d" --seed "$seed" "$@" > "$d.log" 2>&1
    echo "$name seed $seed rc $? $((SECONDS - t0)) s: $(grep '^mean Dice' "$d.log")" >> "$out/summary.txt"
}
while IFS=: read -r name opts; do
    [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
    for seed in $SEEDS; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
        run_one "$name" "$seed" $opts &
    done
done < "$settings"
wait
sort "$out/summary.txt"
for f in "$out"/*/results.csv; do echo "== $f"; cat "$f"; done > "$out/results_all.txt" 2>/dev/null
