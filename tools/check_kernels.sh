#!/usr/bin/env bash
# Every kernel of cl/ under Oclgrind (memory, data-race and API checks; uninitialised
# values on the runtime suite): see tools/check_kernels.py. Usage: check_kernels.sh [BUILD [OUT.jsonl]]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-$BUILD/oclgrind-results.jsonl}
[ -f "$BUILD/build.ninja" ] || { echo "check_kernels: no build in $BUILD (run tools/setup.sh)"; exit 1; }
ninja -C "$BUILD" >/dev/null || exit 1
exec python3 tools/check_kernels.py "$BUILD" "$OUT"
