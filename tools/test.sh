#!/usr/bin/env bash
# Set everything up, build, and run the whole test suite in stages:
#   unit     the meson tests of build/ (gcc, release)
#   asan     the same tests in build-asan/ (AddressSanitizer + UBSan + LeakSanitizer;
#            clang when present, which also builds the fuzz targets)
#   fuzz     the NIfTI reader fuzzer: regression inputs, then a bounded run
#            (KDSEG_FUZZ_SECONDS, default 60)
#   kernels  every cl/ kernel under Oclgrind (tools/check_kernels.sh)
#   lint     cppcheck over src/ and tools/ (tools/lint.sh)
# KDSEG_TEST_STAGES picks stages (default: all, "unit" for a quick run); extra
# arguments go to the unit stage's `meson test` (e.g. --suite runtime).
# Ends with "tests: N passed, N failed[, N skipped]", the sum over all stages,
# and exits non-zero when any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build-asan}
STAGES=${KDSEG_TEST_STAGES:-unit asan fuzz kernels lint}
JOBS=${KDSEG_TEST_JOBS:-2}
RESULTS=$(mktemp -d)
: >"$RESULTS/stages"
trap 'rm -rf "$RESULTS"' EXIT
fail_setup=0

has_stage() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
now() { date +%s; }
# stage_result LABEL JSONL-FILE SECONDS: remember a stage's results for the summary.
stage_result() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS/stages"; }
# A stage that could not even start counts as one failed test.
stage_broken() {
  printf '{"name": "%s", "result": "FAIL"}\n' "$2" >"$RESULTS/$1.jsonl"
  stage_result "$1" "$RESULTS/$1.jsonl" 0
}

run_meson_tests() { # LABEL BUILDDIR [meson test args...]
  local label=$1 dir=$2 t0
  shift 2
  t0=$(now)
  rm -f "$dir/meson-logs/testlog.json"
  meson test -C "$dir" --print-errorlogs --num-processes "$JOBS" \
    --timeout-multiplier "${KDSEG_TIMEOUT_MULT:-1}" "$@"
  if [ -f "$dir/meson-logs/testlog.json" ]; then
    cp "$dir/meson-logs/testlog.json" "$RESULTS/$label.jsonl"
    stage_result "$label" "$RESULTS/$label.jsonl" $(($(now) - t0))
  else
    stage_broken "$label" "$label: meson test did not run"
  fi
}

T0=$(now)
t0=$T0
bash tools/setup.sh || fail_setup=1
echo "stage setup: $(($(now) - t0)) s"
if [ $fail_setup = 1 ]; then
  echo "tests: 0 passed, 1 failed"
  exit 1
fi

if has_stage unit; then
  echo "=== stage unit ($BUILD)"
  run_meson_tests unit "$BUILD" "$@"
fi

if has_stage asan || has_stage fuzz; then
  t0=$(now)
  # clang builds the fuzz targets too; gcc runs the sanitizers alone.
  if command -v clang >/dev/null; then asan_cc=clang; fuzz=true; else asan_cc=${CC:-cc}; fuzz=false; fi
  ok=1
  if [ ! -f "$ASAN_BUILD/build.ninja" ]; then
    CC=$asan_cc meson setup "$ASAN_BUILD" -Db_sanitize=address,undefined -Db_lundef=false \
      -Dbuildtype=debugoptimized -Dfuzz=$fuzz >/dev/null || ok=0
  fi
  [ $ok = 1 ] && { ninja -C "$ASAN_BUILD" >/dev/null || ok=0; }
  echo "stage asan build ($asan_cc): $(($(now) - t0)) s"
  if [ $ok = 0 ]; then
    stage_broken asan "asan: build of $ASAN_BUILD failed"
  else
    if has_stage asan; then
      echo "=== stage asan ($ASAN_BUILD)"
      run_meson_tests asan "$ASAN_BUILD" --no-suite fuzz
    fi
    if has_stage fuzz; then
      echo "=== stage fuzz ($ASAN_BUILD, ${KDSEG_FUZZ_SECONDS:-60} s)"
      if [ "$fuzz" = true ] && ! meson introspect --tests "$ASAN_BUILD" | grep -q '"fuzz/'; then
        echo "fuzz: no fuzz targets (they need the data layer, include/kdseg/data.h)"
        printf '{"name": "fuzz/nifti", "result": "SKIP"}\n' >"$RESULTS/fuzz.jsonl"
        stage_result fuzz "$RESULTS/fuzz.jsonl" 0
      elif [ "$fuzz" = true ]; then
        # the run length is read at test time (tests/fuzz/run_fuzz.sh)
        KDSEG_FUZZ_SECONDS=${KDSEG_FUZZ_SECONDS:-60} run_meson_tests fuzz "$ASAN_BUILD" --suite fuzz
      else
        stage_broken fuzz "fuzz: needs clang (apt-get install clang)"
      fi
    fi
  fi
fi

if has_stage kernels; then
  echo "=== stage kernels (Oclgrind)"
  t0=$(now)
  bash tools/check_kernels.sh "$BUILD" "$RESULTS/kernels.jsonl" ||
    [ -s "$RESULTS/kernels.jsonl" ] || stage_broken kernels "kernels: check_kernels.sh failed to run"
  [ -s "$RESULTS/kernels.jsonl" ] && stage_result kernels "$RESULTS/kernels.jsonl" $(($(now) - t0))
fi

if has_stage lint; then
  echo "=== stage lint (cppcheck)"
  t0=$(now)
  bash tools/lint.sh "$RESULTS/lint.jsonl" ||
    [ -s "$RESULTS/lint.jsonl" ] || stage_broken lint "lint: lint.sh failed to run"
  [ -s "$RESULTS/lint.jsonl" ] && stage_result lint "$RESULTS/lint.jsonl" $(($(now) - t0))
fi

echo "stages: ${STAGES// /, } in $(($(now) - T0)) s"
python3 - "$RESULTS/stages" <<'PY'
import json, sys
P = F = S = 0
for row in open(sys.argv[1]) if len(sys.argv) > 1 else []:
    label, path, secs = row.rstrip("\n").split("\t")
    p = f = s = 0
    bad = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        res = r["result"]
        if res in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif res == "SKIP":
            s += 1
        else:
            f += 1
            bad.append(r.get("name", "?"))
    print(f"  {label:8s} {p:4d} passed, {f} failed" + (f", {s} skipped" if s else "") +
          f"  ({secs} s)" + ("  failed: " + ", ".join(bad[:20]) if bad else ""))
    P, F, S = P + p, F + f, S + s
print(f"tests: {P} passed, {F} failed" + (f", {S} skipped" if S else ""))
sys.exit(1 if F or P == 0 else 0)
PY
