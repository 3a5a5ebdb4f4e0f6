#!/usr/bin/env bash
# CPU before/after of whole-case sliding-window segmentation (issue 21): the same checkpoint
# and case through two kdseg binaries, alternately, each run timed by /usr/bin/time -v
# (wall seconds, CPU seconds, peak resident host memory), and the two label maps compared
# voxel by voxel.
#
#   bash tools/bench/infer_ab.sh BEFORE_KDSEG AFTER_KDSEG CKPT.kds CASE_DIR [REPS] [-- SEGMENT_OPTS...]
#
# Each binary gets its own program cache, filled by `kdseg devices --build` before the timed
# runs, so kernel compilation is not timed. Run it under `flock /work/locks/bench.lock` on a
# shared machine and note `uptime`'s load beside the figures (printed before and after).
set -u
if [ $# -lt 4 ]; then
    echo "usage: infer_ab.sh BEFORE_KDSEG AFTER_KDSEG CKPT.kds CASE_DIR [REPS] [-- SEGMENT_OPTS...]" >&2
    exit 2
fi
A=$1 B=$2 CKPT=$3 CASE=$4
REPS=1
shift 4
if [ $# -gt 0 ] && [ "$1" != -- ]; then REPS=$1; shift; fi
[ "${1:-}" = -- ] && shift
for f in "$A" "$B"; do [ -x "$f" ] || { echo "infer_ab.sh: $f: not an executable" >&2; exit 2; }; done
[ -f "$CKPT" ] || { echo "infer_ab.sh: $CKPT: no such checkpoint" >&2; exit 2; }
[ -d "$CASE" ] || { echo "infer_ab.sh: $CASE: no such case folder" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "infer_ab.sh: /usr/bin/time (GNU time) is needed" >&2; exit 2; }
W=$(mktemp -d /tmp/infer-ab.XXXXXX)
trap 'rm -rf "$W"' EXIT
echo "load before: $(uptime)"
for s in A B; do
    bin=$A; [ $s = B ] && bin=$B
    XDG_CACHE_HOME=$W/cache$s "$bin" -q devices --build >/dev/null ||
        { echo "infer_ab.sh: $bin devices --build failed" >&2; exit 1; }
done
printf '%-7s %4s %9s %9s %12s\n' side rep wall_s cpu_s maxrss_MiB
for r in $(seq 1 "$REPS"); do
    for s in A B; do
        bin=$A; [ $s = B ] && bin=$B
        rm -rf "$W/out$s"
        XDG_CACHE_HOME=$W/cache$s /usr/bin/time -v -o "$W/time$s" \
            "$bin" -q segment --model "$CKPT" --case "$CASE" --out "$W/out$s" "$@" ||
            { echo "infer_ab.sh: $bin segment failed" >&2; cat "$W/time$s" >&2; exit 1; }
        awk -v side="$([ $s = A ] && echo before || echo after)" -v rep="$r" -F': ' '
            /Elapsed \(wall clock\)/ { n = split($2, t, ":"); wall = 0
                                       for (i = 1; i <= n; i++) wall = wall * 60 + t[i] }
            /User time/   { cpu += $2 }
            /System time/ { cpu += $2 }
            /Maximum resident/ { rss = $2 / 1024 }
            END { printf "%-7s %4d %9.1f %9.1f %12.0f\n", side, rep, wall, cpu, rss }' "$W/time$s"
    done
done
echo "load after:  $(uptime)"
pa=$(ls "$W"/outA/*.nii.gz | head -1) pb=$(ls "$W"/outB/*.nii.gz | head -1)
if [ -z "$pa" ] || [ -z "$pb" ]; then
    echo "infer_ab.sh: a run wrote no label map" >&2
    exit 1
fi
diffs=$(cmp -l <(zcat "$pa") <(zcat "$pb") 2>/dev/null | wc -l)
echo "label maps ($(basename "$pa")): $diffs differing bytes (0: identical)"
