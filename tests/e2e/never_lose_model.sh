#!/usr/bin/env bash
# Never lose a trained model (issue 20, item 1). Catches: train or distill into a folder
# holding an earlier run's checkpoints overwriting them; --overwrite not keeping the old
# files as *.bak; --resume with another model or other data taken silently (or the
# checkpoint's patch, steps... replaced by the defaults when not given); a failed start
# (bad spec, missing data, missing checkpoint, --out naming a file) leaving a folder or
# changing anything.
set -uo pipefail
exe=${KDSEG_EXE:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
arch=resunet:widths=8,16:enc=1,1:dec=1
small=(--arch $arch --patch 16 --batch 1 --steps 4 --val-every 2 --ckpt-every 2 --threads 0)
"$exe" -q phantom --out d --cases 3 --size 32 --seed 1 >/dev/null &&
  "$exe" -q phantom --out d2 --cases 3 --size 32 --seed 2 >/dev/null &&
  "$exe" -q phantom --out u --cases 2 --first 10 --size 32 --seed 3 --no-labels >/dev/null ||
  { echo "FAIL: fixture"; exit 1; }
"$exe" -q train --dataset d --out r "${small[@]}" || { echo "FAIL: first run"; exit 1; }
for f in last.kds best.kds train.csv train.png; do [ -f r/$f ] || bad "first run wrote no $f"; done
snap() { (cd r && md5sum last.kds best.kds train.csv train.png) >"$tmp/$1"; }
unchanged() { # WHAT: r's files are those of the first run
  (cd r && md5sum -c --quiet "$tmp/first" >/dev/null 2>&1) || bad "$1 changed the earlier run's files"
  ls r | grep -q '\.bak$' && bad "$1 made *.bak files"
}
snap first
expect_refused() { # WHAT PATTERN ARGS...: exit 2, the message matches PATTERN, r unchanged
  local what=$1 pat=$2; shift 2
  "$exe" "$@" >"$tmp/out" 2>&1
  local rc=$?
  [ $rc = 2 ] || bad "$what: exit $rc, not 2"
  grep -Eq -- "$pat" "$tmp/out" || { bad "$what: message does not match '$pat':"; cat "$tmp/out"; }
  unchanged "$what"
}

# an earlier run's folder is refused without --resume or --overwrite, naming both ways out
expect_refused "train again" "r holds last.kds and best.kds of an earlier run \\($arch.*step 4 of 4\\).*--resume.*--overwrite" \
  train --dataset d --out r "${small[@]}"
expect_refused "distill into it" "r holds last.kds and best.kds of an earlier run" \
  distill --dataset d --unlabeled u --online --teacher r/best.kds --out r "${small[@]}"
# resuming with another model or other data: refused, naming both
expect_refused "resume, another model" "r/last.kds is a $arch.* model, not unet3d:widths=8,16.* as asked" \
  train --out r --resume --arch unet3d:widths=8,16
expect_refused "resume, other data" "r/last.kds was trained on $tmp/d, not d2 as asked" \
  train --out r --resume --dataset d2
expect_refused "resume and overwrite" "resume or overwrite the earlier run, not both" \
  train --dataset d --out r --resume --overwrite "${small[@]}"
expect_refused "resume, old spelling of the option" "is a $arch.* model, not unet3d" \
  train --out r --resume --model unet3d:widths=8,16

# --resume alone: the checkpoint's model, data, patch and planned steps (a finished run:
# nothing to train, nothing rewritten); --steps extends it
"$exe" train --out r --resume >"$tmp/res" 2>&1 || { bad "resume alone failed"; cat "$tmp/res"; }
grep -q "^r/last.kds is at step 4 of 4 already: nothing to train" "$tmp/res" ||
  { bad "resume alone of a finished run: not said"; cat "$tmp/res"; }
unchanged "resume alone of a finished run"
"$exe" train --out r --resume --steps 6 --dataset "$tmp/d" >"$tmp/res" 2>&1 || { bad "resume --steps 6"; cat "$tmp/res"; }
grep -q "patch 16x16x16, batch 1, steps 4\.\.6$" "$tmp/res" || { bad "resume --steps 6: not steps 4..6"; cat "$tmp/res"; }
[ "$(tail -1 r/train.csv | cut -d, -f1)" = 5 ] || bad "resumed run did not log its last step (5)"
snap second

# --overwrite: the earlier run's files kept as *.bak, byte for byte, a new run in place
"$exe" -q train --dataset d --out r "${small[@]}" --overwrite || bad "--overwrite failed"
(cd r && for f in last.kds best.kds train.csv train.png; do
  grep " $f\$" "$tmp/second" | sed "s/ $f\$/ $f.bak/"; done) >"$tmp/second.bak"
(cd r && md5sum -c --quiet "$tmp/second.bak") || bad "--overwrite: *.bak are not the earlier files"
[ "$(tail -1 r/train.csv | cut -d, -f1)" = 3 ] || bad "--overwrite: train.csv is not the new run's"

# failed starts leave nothing behind and change nothing
start_fails() { # WHAT FOLDER ARGS...: non-zero exit, FOLDER not created
  local what=$1 dir=$2; shift 2
  "$exe" "$@" >"$tmp/out" 2>&1 && bad "$what: exit 0"
  [ -e "$dir" ] && { bad "$what: left $dir behind"; ls -la "$dir"; }
}
start_fails "unknown architecture" new1 train --dataset d --out new1 --arch nosuch
start_fails "missing data" new2/a/b train --dataset nodata --out new2/a/b "${small[@]}"
[ -e new2 ] && bad "missing data: left new2 behind"
start_fails "patch not a multiple of the divisor" new3 train --dataset d --out new3 --arch $arch --patch 15
start_fails "resume of nothing" new4 train --out new4 --resume
start_fails "synthetic, bad spec" new5 train --synthetic --cases 3 --size 32 --out new5 --arch nosuch
start_fails "segment, missing checkpoint" new6 segment --checkpoint nosuch.kds --dataset d --out new6
start_fails "annotate, missing checkpoint" new7 annotate --teacher nosuch.kds --dataset u --out new7
start_fails "distill, nothing annotated" new8 distill --dataset d --annotations d --out new8 "${small[@]}"
# annotate with nothing to annotate says why, and leaves no folder
"$exe" annotate --teacher r/best.kds --dataset d --out new9 >"$tmp/out" 2>&1 || bad "annotate, all labeled: exit $?"
grep -q "no unlabeled case to annotate (3 cases, all labeled); --all annotates labeled cases too" "$tmp/out" ||
  { bad "annotate, all labeled: no hint"; cat "$tmp/out"; }
[ -e new9 ] && bad "annotate, all labeled: left new9 behind"
echo keep >afile
"$exe" segment --checkpoint r/best.kds --dataset d --out afile >"$tmp/out" 2>&1 && bad "--out a file: exit 0"
grep -q "afile: is a file, not a folder" "$tmp/out" || { bad "--out a file: no clear error"; cat "$tmp/out"; }
[ "$(cat afile)" = keep ] || bad "--out a file: the file changed"
[ $fail = 0 ] && echo "never lose a model: ok"
exit $fail
