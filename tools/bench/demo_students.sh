#!/usr/bin/env bash
# Trains one more student on an existing `kdseg demo --out DIR` folder (same cohort, same
# teachers' annotations, the demo's student settings), segments DIR/data/test with it and
# prints its mean Dice per region: the tool behind the README's diagnosis of the demo
# (student seeds, the oracle, fewer labeled cases, more steps) at a fraction of a demo's
# time. Output in DIR/v/NAME{,-pred,.csv,.log}.
#   usage: KDSEG=path/to/kdseg [STEPS=2000] [PATCH=32] [BATCH=2] tools/bench/demo_students.sh DIR NAME SEED \
#            train|distill [more train/distill options, e.g. --annotations DIR/oracle; --overwrite
#            to train a NAME again; --val-cases 0 --pseudo-ratio 0.8 for a run made with
#            `kdseg demo --val-cases 0`: every model keeps last.kds]
set -eu
K=${KDSEG:-kdseg}
[ $# -ge 4 ] || { sed -n '2,9p' "$0"; exit 2; }
D=$1 N=$2 SEED=$3 KIND=$4
shift 4
O=$D/v/$N
mkdir -p "$D/v"
common=(--recipe phantom --arch resunet:widths=8,16,32,64:enc=1,1,1,1:dec=1,1,1 --steps "${STEPS:-2000}" --lr 3e-3
        --val-every 100 --seed "$SEED" --patch "${PATCH:-32}" --batch "${BATCH:-2}" --margin 50 --fg-fraction 0.5
        --val-cases 2 --quiet --threads 1 --schedule cosine --dataset "$D/data/labeled" --out "$O")
case $KIND in
train) "$K" train "${common[@]}" "$@" > "$O.log" 2>&1 ;;
distill) "$K" distill "${common[@]}" --unlabeled "$D/data/unlabeled" "$@" > "$O.log" 2>&1 ;;
*) echo "demo_students.sh: KIND must be train or distill, not $KIND" >&2; exit 2 ;;
esac
ck=$O/best.kds # the demo's choice: best.kds where validation chose one (--val-cases 0: last.kds)
[ -f "$ck" ] || ck=$O/last.kds
"$K" segment --checkpoint "$ck" --dataset "$D/data/test" --out "$O-pred" --tta none > /dev/null
"$K" evaluate --pred "$O-pred" --dataset "$D/data/test" --csv "$O.csv" > /dev/null
awk -F, -v n="$N" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^Dice_/) col[$i] = i; next }
    { wt += $col["Dice_WT"]; tc += $col["Dice_TC"]; et += $col["Dice_ET"]; k++ }
    END { printf "%s: %d cases, Dice WT %.3f TC %.3f ET %.3f, mean %.3f\n", n, k, wt / k, tc / k,
                 et / k, (wt + tc + et) / (3 * k) }' "$O.csv"
