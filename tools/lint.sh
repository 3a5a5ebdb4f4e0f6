#!/usr/bin/env bash
# cppcheck over src/ and tools/ (warning, performance, portability), then a canary
# file with planted defects that must be reported. Suppressions: tools/cppcheck.supp
# (each with its reason) or inline "cppcheck-suppress" comments.
# Usage: lint.sh [OUT.jsonl]  (one JSON line per check, for tools/test.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/dev/null}
: >"$OUT"
record() { printf '{"name": "%s", "result": "%s"}\n' "$1" "$2" >>"$OUT"; }
if ! command -v cppcheck >/dev/null; then
  echo "lint: cppcheck is not installed (apt-get install cppcheck)"
  record lint/cppcheck FAIL
  exit 1
fi
# KD_CPPCHECK: see src/runtime/rt.h. Headers of a configured build (kdseg_config.h)
# come from build/ when present.
args=(--enable=warning,performance,portability --std=c11 --inline-suppr -q -j2
      --suppressions-list=tools/cppcheck.supp --error-exitcode=1
      -I include -I src -I src/runtime -I src/nn -I build
      -D_GNU_SOURCE -DKD_CPPCHECK -DCL_TARGET_OPENCL_VERSION=120)
rc=0
if cppcheck "${args[@]}" src tools; then
  echo "lint: cppcheck clean over src/ and tools/"
  record lint/cppcheck OK
else
  echo "lint: cppcheck reported the findings above"
  record lint/cppcheck FAIL
  rc=1
fi
canary=$(cppcheck "${args[@]}" --error-exitcode=0 tests/reliability/cppcheck_canary.c 2>&1)
if grep -q arrayIndexOutOfBounds <<<"$canary" && grep -q memleakOnRealloc <<<"$canary" &&
  ! grep -q internalAstError <<<"$canary"; then
  record lint/cppcheck_canary OK
else
  echo "lint: the cppcheck canary's planted defects were not all reported:"
  echo "$canary"
  record lint/cppcheck_canary FAIL
  rc=1
fi
exit $rc
