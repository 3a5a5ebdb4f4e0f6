#!/usr/bin/env bash
# Set everything up, build, and run the whole test suite. Ends with the line
# "tests: N passed, N failed[, N skipped]" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || { echo "tests: 0 passed, 1 failed"; exit 1; }
BUILD=${BUILD:-build}
meson test -C "$BUILD" --print-errorlogs --num-processes "${KDSEG_TEST_JOBS:-2}" \
  --timeout-multiplier "${KDSEG_TIMEOUT_MULT:-1}" "$@"
rc=$?
log="$BUILD/meson-logs/testlog.json"
python3 - "$log" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(f"tests: {p} passed, {f} failed" + (f", {s} skipped" if s else ""))
PY
exit $rc
