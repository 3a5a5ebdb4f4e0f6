#!/usr/bin/env bash
# The man page and the bash completion, as `meson install` installs them: generated from
# the help texts of the kdseg just built, every command in the man page with its help
# and examples, rendered by groff without a warning; the completion completes commands,
# each command's options and the values of --layout, --labels and --tta.
set -euo pipefail
build=${1:?build folder}
exe=${KDSEG_EXE:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --no-rebuild --destdir "$tmp/root" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; exit 1; }
man=$(find "$tmp/root" -path '*/man1/kdseg.1' -type f | head -1)
comp=$(find "$tmp/root" -path '*/bash-completion/completions/kdseg' -type f | head -1)
[ -f "$man" ] || { echo "FAIL: no man page installed"; exit 1; }
[ -f "$comp" ] || { echo "FAIL: no bash completion installed"; exit 1; }
fail=0
cmds=$("$exe" --help | awk '/^commands:/{f=1; next} f && /^  [a-z]/{print $1; next} f{exit}')
[ -n "$cmds" ] || { echo "FAIL: no commands in kdseg --help"; exit 1; }
if command -v groff >/dev/null; then
  groff -man -Tutf8 -ww "$man" 2>"$tmp/groff.err" | sed "s/.\x08//g" >"$tmp/man.txt"
  [ -s "$tmp/groff.err" ] && { echo "FAIL: groff warns:"; cat "$tmp/groff.err"; fail=1; }
  for c in $cmds; do
    grep -q "^   kdseg $c\$" "$tmp/man.txt" || { echo "FAIL: man page has no section for $c"; fail=1; }
    # the help's first example line of each command, as the man page renders it
    ex=$("$exe" "$c" --help | awk '/^examples:/{f=1; next} f && /^  kdseg /{print; exit}' | sed 's/^ *//')
    if [ -n "$ex" ] && ! grep -qF -- "$ex" "$tmp/man.txt"; then
      echo "FAIL: man page lacks $c's example: $ex"; fail=1
    fi
  done
else
  echo "(no groff: man page rendering not checked)"
fi
complete_words() { # the completions of a command line whose last word is being typed
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _kdseg; echo "${COMPREPLY[*]}"' _ "$comp" "$@"
}
expect() { # WANT WORD... : the completions must include WANT
  local want=$1; shift
  local got; got=" $(complete_words "$@") "
  case $got in *" $want "*) ;; *) echo "FAIL: completing '$*' gave '$got', not $want"; fail=1 ;; esac
}
for c in $cmds; do expect "$c" kdseg "${c:0:3}"; done
for c in $cmds; do
  first=$("$exe" "$c" --help | grep -o -- '--[a-z][a-z0-9-]*' | grep -v -- '--help' | head -1)
  [ -n "$first" ] && expect "$first" kdseg "$c" "${first:0:4}"
done
expect nnunet kdseg train --layout ""
expect brats2023 kdseg convert --to ""
expect 2023 kdseg segment --labels ""
expect none kdseg annotate --tta ""
expect segment kdseg -q seg
expect --checkpoint kdseg segment --che
expect --overwrite kdseg train --ov
expect --arch kdseg distill --ar
# old spellings still work but are not offered
for w in "train --da" "segment --mo" "distill --mo"; do
  # shellcheck disable=SC2086
  got=" $(complete_words kdseg $w) "
  case $got in *" --data "*|*" --model "*) echo "FAIL: completing 'kdseg $w' offers an old spelling: $got"; fail=1 ;; esac
done
[ $fail = 0 ] && echo "docs installed: ok"
exit $fail
