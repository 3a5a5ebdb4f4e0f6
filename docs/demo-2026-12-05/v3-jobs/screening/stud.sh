#!/bin/bash
# stud.sh DIR NAME SEED train|distill [opts]: one student like the demo's (val 0, last.kds), 1 PoCL thread
# env ARCH (student spec), STEPS, K (binary)
export POCL_MAX_PTHREAD_COUNT=1
K=${K:-/tmp/s6/kdseg-final}
ARCH=${ARCH:-resunet:widths=8,16,32,64:enc=1,1,1,1:dec=1,1,1}
D=$1 N=$2 SEED=$3 KIND=$4; shift 4
O=$D/w/$N; mkdir -p $D/w
common=(--recipe phantom --arch $ARCH --steps ${STEPS:-2000} --lr 3e-3
        --val-every 100 --seed $SEED --patch 32 --batch 2 --margin 50 --fg-fraction 0.5
        --val-cases 0 --quiet --threads 1 --schedule cosine --dataset $D/data/labeled --out $O --overwrite)
t0=$(date +%s)
case $KIND in
train) /usr/bin/time -f "%U" -o $O.cpu $K train "${common[@]}" "$@" > $O.log 2>&1 ;;
distill) /usr/bin/time -f "%U" -o $O.cpu $K distill "${common[@]}" --unlabeled $D/data/unlabeled --pseudo-ratio ${PR:-0.8} --annotations $D/annotations "$@" > $O.log 2>&1 ;;
online) /usr/bin/time -f "%U" -o $O.cpu $K distill "${common[@]}" --unlabeled $D/data/unlabeled --pseudo-ratio ${PR:-0.8} --online --teacher $D/models/unet3d/last.kds --teacher $D/models/cascade/last.kds --teacher $D/models/resnext-se/last.kds --distill-loss bce "$@" > $O.log 2>&1 ;;
esac || { echo "FAIL $O"; tail -3 $O.log; exit 1; }
$K segment --checkpoint $O/last.kds --dataset $D/data/test --out $O-pred --tta none > /dev/null 2>&1
$K evaluate --pred $O-pred --dataset $D/data/test --csv $O.csv > /dev/null 2>&1
if [ -f $O/ema.kds ]; then $K segment --checkpoint $O/ema.kds --dataset $D/data/test --out $O-ema-pred --tta none > /dev/null 2>&1; $K evaluate --pred $O-ema-pred --dataset $D/data/test --csv $O-ema.csv > /dev/null 2>&1; echo "EMA $(python3 /tmp/dm5/pair.py $O-ema.csv $D/results.csv:student-baseline)"; fi
echo "$D $N cpu $(cat $O.cpu) wall $(( $(date +%s) - t0 )) $(python3 /tmp/dm5/pair.py $O.csv $D/results.csv:student-baseline)"
