#!/usr/bin/env bash
# The global options (-q/--quiet, -v/--verbose, --device SEL) work before the command, after
# it, or among its options, with the same effect; a later -q silences the notes printed while
# the command parses its options (old spellings); --help anywhere after the command shows the
# command's help; a missing or unknown value is an error that names the option.
set -uo pipefail
exe=${KDSEG_EXE:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
arch=resunet:widths=8,16:enc=1,1:dec=1
run() { # NAME ARGS...: stdout to NAME.out, stderr to NAME.err, exit status to NAME.rc
  local name=$1; shift
  "$exe" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  echo $? >"$tmp/$name.rc"
}
rc() { cat "$tmp/$1.rc"; }

# -q before, among and after the command's options: the same output, nothing on stderr
run q0 -q models --arch $arch
run q1 models -q --arch $arch
run q2 models --arch $arch -q
run q3 models --arch $arch --quiet
[ "$(rc q0)" = 0 ] && [ -s "$tmp/q0.out" ] || bad "kdseg -q models --arch: exit $(rc q0)"
for n in q1 q2 q3; do
  [ "$(rc $n)" = 0 ] || bad "$n: exit $(rc $n)"
  cmp -s "$tmp/q0.out" "$tmp/$n.out" || bad "$n: output differs from -q before the command"
  [ -s "$tmp/$n.err" ] && { bad "$n: stderr not empty:"; cat "$tmp/$n.err"; }
done

# an old spelling prints its note, unless -q comes anywhere (even after it)
run note models --spec $arch
grep -q 'note: --spec is now --arch' "$tmp/note.err" || bad "no note for --spec: $(cat "$tmp/note.err")"
cmp -s "$tmp/note.out" "$tmp/q0.out" || bad "--spec gives another table than --arch"
run noteq models --spec $arch -q
[ "$(rc noteq)" = 0 ] || bad "models --spec -q: exit $(rc noteq)"
[ -s "$tmp/noteq.err" ] && bad "-q after the command did not silence the note: $(cat "$tmp/noteq.err")"

# -v/--verbose before or after: info lines; without: none
run v0 -v models --arch $arch
run v1 models --arch $arch -v
run v2 models --verbose --arch $arch
run v3 models --arch $arch
for n in v0 v1 v2; do
  [ "$(rc $n)" = 0 ] || bad "$n: exit $(rc $n)"
  grep -q '^kdseg info: device: ' "$tmp/$n.err" || bad "$n: no info line"
done
grep -q 'kdseg info' "$tmp/v3.err" && bad "info lines without -v"

# --device SEL before or after, also as --device=SEL
dev=$("$exe" devices | awk '/device [0-9]+:[0-9]+/{for (i = 1; i < NF; i++) if ($i == "device") {print $(i + 1); exit}}')
[ -n "$dev" ] || bad "kdseg devices lists no device"
for form in "--device $dev devices" "devices --device $dev" "devices --device=$dev"; do
  # shellcheck disable=SC2086
  run d $form
  [ "$(rc d)" = 0 ] || bad "kdseg $form: exit $(rc d)"
  grep -q "^chosen: $dev .*(by selector)" "$tmp/d.out" || bad "kdseg $form: device not chosen by the selector"
done
run dn devices --device no-such-device
[ "$(rc dn)" != 0 ] || bad "devices --device no-such-device: exit 0"
grep -q "no-such-device" "$tmp/dn.err" || bad "the error does not name the selector: $(cat "$tmp/dn.err")"
run dm models --arch $arch --device
[ "$(rc dm)" = 2 ] || bad "--device without a value: exit $(rc dm), not 2"
grep -q -- '--device needs a value' "$tmp/dm.err" || bad "no error for --device without a value"

# --help anywhere after the command: the command's help, exit 0
run h models --arch $arch --help
[ "$(rc h)" = 0 ] && grep -q '^usage: kdseg models' "$tmp/h.out" || bad "models ... --help: not models' help"
# unknown options: before the command kdseg's error, after it the command's
run u0 --frobnicate models
[ "$(rc u0)" = 2 ] && grep -q "unknown option '--frobnicate'" "$tmp/u0.err" || bad "unknown global option"
run u1 models --frobnicate
[ "$(rc u1)" = 2 ] && grep -q -- "--frobnicate" "$tmp/u1.err" || bad "unknown option of models"
[ $fail = 0 ] && echo "global options: ok"
exit $fail
