#!/usr/bin/env bash
# `kdseg selftest` as installed by `meson install` (into a staging DESTDIR, run from
# another folder): it finds the golden file installed with it, relative to the program,
# and passes; without that file it fails naming where it looked.
set -euo pipefail
build=${1:?build folder}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --no-rebuild --destdir "$tmp/root" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; exit 1; }
exe=$(find "$tmp/root" -path '*/bin/kdseg' -type f | head -1)
[ -x "$exe" ] || { echo "FAIL: no installed kdseg"; exit 1; }
golden=$(find "$tmp/root" -path '*/share/kdseg/*.kdgold' | head -1)
[ -f "$golden" ] || { echo "FAIL: no golden file under share/kdseg"; exit 1; }
cd "$tmp"
unset KDSEG_GOLDEN
"$exe" selftest >"$tmp/out" 2>&1 || { echo "FAIL: installed selftest"; cat "$tmp/out"; exit 1; }
cat "$tmp/out"
grep -q "^golden   $tmp/root/.*/share/kdseg/" "$tmp/out" ||
  { echo "FAIL: not the installed golden file"; exit 1; }
grep -q '^PASS$' "$tmp/out" || { echo "FAIL: no PASS"; exit 1; }
mv "$golden" "$tmp/moved.kdgold"
if KDSEG_GOLDEN= "$exe" selftest >"$tmp/out2" 2>&1; then
  # the configured prefix or the source tree may hold one: then it must say which
  grep -q '^golden ' "$tmp/out2" || { echo "FAIL: passed without naming its golden file"; exit 1; }
else
  grep -q 'kdgold' "$tmp/out2" || { echo "FAIL: error does not name the file"; cat "$tmp/out2"; exit 1; }
fi
KDSEG_GOLDEN="$tmp/moved.kdgold" "$exe" selftest | grep -q '^PASS$' ||
  { echo "FAIL: KDSEG_GOLDEN"; exit 1; }
echo "installed selftest: ok"
