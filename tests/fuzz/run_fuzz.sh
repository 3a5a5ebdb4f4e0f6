#!/usr/bin/env bash
# Runs the NIfTI fuzzer (registered by tests/fuzz/meson.build; also by hand).
#   run_fuzz.sh regress FUZZER [DIR]       every input of DIR (default tests/fuzz/regress/)
#                                          once
#   run_fuzz.sh run FUZZER GEN_SEEDS WORK [DICT]  seeds from GEN_SEEDS (a program or
#                                          script writing them into its argument), then
#                                          fuzz for KDSEG_FUZZ_SECONDS (default 60) s,
#                                          half of it with KDSEG_FUZZ_HALF=1; DICT default
#                                          tests/fuzz/nifti.dict
# By hand, longer: KDSEG_FUZZ_SECONDS=3600 bash tests/fuzz/run_fuzz.sh run \
#   build-asan/tests/fuzz/fuzz_nifti build-asan/tests/fuzz/gen_seeds /tmp/kdfuzz
# Limits: inputs of at most MAX_LEN bytes; no single allocation above MALLOC_MB. A
# file of L bytes justifies at most 1032*L voxels (deflate's largest ratio) of 4-byte
# floats, plus the reader's 1 MiB chunk buffer: 8192 bytes justify 33 MiB.
# A crash leaves its input under WORK/artifacts/: copy it into tests/fuzz/regress/
# (it then runs in every CI as a regression test) and fix the reader.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MAX_LEN=${KDSEG_FUZZ_MAX_LEN:-8192}
MALLOC_MB=${KDSEG_FUZZ_MALLOC_MB:-40}
# -error_exitcode: libFuzzer exits 77 on a crash by default, which meson counts as a skip
limits=(-error_exitcode=1 -timeout_exitcode=1 -max_len="$MAX_LEN" -malloc_limit_mb="$MALLOC_MB" -rss_limit_mb=1024 -timeout=20)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
mode=$1 fuzzer=$2
case "$mode" in
regress)
  shopt -s nullglob
  files=("${3:-$here/regress}"/*)
  [ ${#files[@]} -gt 0 ] || { echo "no regression inputs"; exit 77; }
  # one run per input, so that every failing input is reported
  bad=0
  for f in "${files[@]}"; do
    if "$fuzzer" "${limits[@]}" "$f" >"${TMPDIR:-/tmp}/kdfuzz-regress.log" 2>&1; then
      echo "ok   $(basename "$f")"
    else
      bad=$((bad + 1))
      echo "FAIL $(basename "$f"):"
      grep -E "ERROR|SUMMARY|fuzz_nifti:|^ +#[0-9]+ .* in kd_" "${TMPDIR:-/tmp}/kdfuzz-regress.log" | head -12
    fi
  done
  echo "fuzz regress: ${#files[@]} inputs, $bad failed"
  [ $bad = 0 ]
  exit $?
  ;;
run)
  gen=$3 work=$4 dict=${5:-$here/nifti.dict}
  secs=${KDSEG_FUZZ_SECONDS:-60}
  [ -n "${KDSEG_FUZZ_HALF:-}" ] && secs=$((secs / 2))
  rm -rf "$work/seeds" "$work/artifacts" && mkdir -p "$work/seeds" "$work/corpus" "$work/artifacts"
  "$gen" "$work/seeds" || exit 1
  # new inputs go to WORK/corpus (kept between runs of a build folder)
  TMPDIR=$work "$fuzzer" "${limits[@]}" -max_total_time="$secs" -print_final_stats=1 \
    -dict="$dict" -artifact_prefix="$work/artifacts/" "$work/corpus" "$work/seeds" \
    2>"$work/fuzz.log"
  rc=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)" \
    "$work/fuzz.log" || true
  if [ $rc -ne 0 ]; then
    tail -60 "$work/fuzz.log"
    echo "fuzz: FAILED (exit $rc); inputs under $work/artifacts/:" && ls -l "$work/artifacts/"
    echo "copy each into tests/fuzz/regress/ as a regression test"
  fi
  exit $rc
  ;;
*)
  echo "usage: run_fuzz.sh regress|run FUZZER [GEN_SEEDS WORK]" >&2
  exit 2
  ;;
esac
