#!/usr/bin/env bash
# The README's set-up command, `bash tools/demo.sh` (which runs tools/setup.sh), as root
# without sudo (a minimal Debian) and as a user with sudo, on stubs of dpkg-query,
# apt-get, id and sudo that record what they were asked: root calls apt-get itself, a
# user goes through sudo, a user without sudo gets the line to run and exit 1.
set -euo pipefail
src=${KDSEG_SOURCE_ROOT:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stubs=$tmp/bin
mkdir -p "$stubs"
for t in bash dirname grep env cat; do ln -s "$(command -v $t)" "$stubs/$t"; done
cat >"$stubs/dpkg-query" <<'X'
#!/bin/sh
# every package missing, except pkg-config
[ "$3" = pkg-config ] && printf 'install ok installed'
exit 0
X
cat >"$stubs/id" <<'X'
#!/bin/sh
echo "$FAKE_UID"
X
cat >"$stubs/apt-get" <<'X'
#!/bin/sh
echo "apt-get $* (uid $FAKE_UID, sudo ${SUDO_SEEN:-no})" >>"$LOG"
X
cat >"$tmp/sudo" <<'X'
#!/bin/sh
echo "sudo $*" >>"$LOG"
SUDO_SEEN=yes FAKE_UID=0 exec "$@"
X
chmod +x "$stubs"/* "$tmp/sudo"
export LOG=$tmp/log
fail() { echo "FAIL: $*"; cat "$LOG" 2>/dev/null; exit 1; }

# as root, no sudo on the PATH
: >"$LOG"
FAKE_UID=0 PATH=$stubs bash "$src/tools/setup.sh" --packages-only >"$tmp/out" 2>&1 ||
  fail "root: setup exited $?: $(cat "$tmp/out")"
grep -q '^apt-get update -qq (uid 0, sudo no)$' "$LOG" || fail "root: no apt-get update"
grep -q '^apt-get install -y -qq meson ninja-build gcc .* (uid 0, sudo no)$' "$LOG" ||
  fail "root: no apt-get install of the missing packages"
grep -q pkg-config "$LOG" && fail "root: installed pkg-config, which is there"
grep -q '^sudo' "$LOG" && fail "root: used sudo"

# a user with sudo
: >"$LOG"
ln -s "$tmp/sudo" "$stubs/sudo"
FAKE_UID=1000 PATH=$stubs bash "$src/tools/setup.sh" --packages-only >"$tmp/out" 2>&1 ||
  fail "user with sudo: setup exited $?: $(cat "$tmp/out")"
grep -q '^sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq meson' "$LOG" ||
  fail "user: apt-get install not through sudo"
grep -q '^apt-get install .* (uid 0, sudo yes)$' "$LOG" || fail "user: apt-get not run by sudo"
grep -q 'with sudo' "$tmp/out" || fail "user: does not say it uses sudo"

# a user without sudo: the exact line, exit 1, nothing run
: >"$LOG"
rm "$stubs/sudo"
if FAKE_UID=1000 PATH=$stubs bash "$src/tools/setup.sh" --packages-only >"$tmp/out" 2>&1; then
  fail "user without sudo: setup succeeded"
fi
grep -q '^  apt-get install -y meson ninja-build' "$tmp/out" || fail "no line to run as root"
[ -s "$LOG" ] && fail "user without sudo: ran something"

# the README's first set-up commands carry no sudo (root on a minimal Debian has none)
first=$(sed -n '/^## Fresh machine/,/^## /p' "$src/README.md" | grep -m1 '^    ' | sed 's/^ *//')
[ "$first" = "bash tools/demo.sh" ] || fail "README's first command is '$first'"
sed -n '/^## Fresh machine/,/^## /p' "$src/README.md" | grep -q '^    sudo ' &&
  fail "README's set-up commands start with sudo"
echo "setup: root without sudo, user with sudo, user without: ok"
