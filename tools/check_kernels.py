#!/usr/bin/env python3
"""Kernel checks under Oclgrind (tools/check_kernels.sh is the entry point).

Runs the meson tests of a build folder that drive OpenCL kernels under
`oclgrind --data-races --check-api` (Oclgrind's own platform is the
only one the program sees, and KDSEG_DEVICE=oclgrind makes sure it is chosen), with
KDSEG_POOL_EXACT=1 so buffers have no rounding slack and KDSEG_TEST_SMALL=1 for
tests that shrink their shapes; the runtime suite also with `--uninitialized` (see
UNINIT_SUITES below for why not the others). A test fails on any Oclgrind diagnostic (invalid
read/write, data race, uninitialised value, API error, divergence) or when the test
itself fails. Then:
  - canaries: the deliberately broken kernels of tests/reliability/bad_kernels.cl
    must each be reported (an out-of-bounds write, a race, an uninitialised read);
  - coverage: every kernel of cl/*.cl must have run in some test (KDSEG_PROFILE's
    per-kernel table), unless tests/reliability/oclgrind_uncovered.txt names it with
    a reason (those count as skipped).
Writes one JSON line per check ({"name", "result"}) to OUT for tools/test.sh.

Usage: check_kernels.py BUILD OUT.jsonl
Environment: KDSEG_OCLGRIND_SUITES (default "runtime conv layers": the op tests;
KDSEG_OCLGRIND_EXTRA: single tests beyond them, default the loss, optimizer and peak ones;
"all" for every suite), KDSEG_OCLGRIND_UNINIT_SUITES (default "runtime"),
KDSEG_OCLGRIND_UNINIT=1 (the uninitialised-value check everywhere), KDSEG_OCLGRIND_TIMEOUT (s per test, default 900: catches a hang; conv/variants_v1 alone takes 713 s at load 20 on 2 cores),
KDSEG_OCLGRIND_JOBS (default 2), KDSEG_OCLGRIND_ONLY (a regular expression on test
names). Tests listed in tests/reliability/oclgrind_exclude.txt are not run.
"""
import concurrent.futures as cf
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "tests", "reliability")
# Oclgrind's diagnostics (its messages start at column 0; details follow indented).
DIAG = re.compile(r"^(Invalid (read|write)|Invalid memory|Read-write data race|"
                  r"Write-write data race|.*data race|Uninitialized value|"
                  r"Work-group divergence|Barrier divergence|Unaligned address|"
                  r"Oclgrind - OpenCL runtime error|Oclgrind - .*error|"
                  r".*out-of-bounds|Fatal error)", re.I)
# Oclgrind 21.10's --uninitialized plugin runs on a documented subset only, the suites
# of KDSEG_OCLGRIND_UNINIT_SUITES (default "runtime") and the uninit canary, built with
# -cl-opt-disable. Two defects of the plugin (not of kdseg) rule out the rest:
#  - optimised IR contains LLVM `freeze` (DivRemPairs on x / a and x % a, e.g. in
#    resample.cl): "OCLGRIND FATAL ERROR (Uninitialized.cpp:1805) Unsupported
#    instruction: freeze". -cl-opt-disable (OCLGRIND_BUILD_OPTIONS) avoids it.
#  - a host write (clEnqueueWriteBuffer) at a non-zero offset re-creates the shadow of
#    the whole buffer (hostMemoryStore -> allocAndStoreShadowMemory at the offset
#    address): afterwards every element of that buffer reads as uninitialised, the
#    ones just written and the ones written before by kernels or at offset 0 alike.
#    A 30-line program shows it (fill a buffer by a kernel, write 8 floats at byte 16,
#    copy them: all 8 "Uninitialized value written"; at offset 0: clean). kdseg
#    writes tensors into slabs at offsets (parameters, views; the op tests put every
#    tensor at an odd offset on purpose), so the layers, conv and nn tests report
#    nothing but these false positives ("Uninitialized value written", "Controlflow
#    depends on uninitialized value" downstream). Kernel changes cannot avoid it.
# KDSEG_OCLGRIND_UNINIT=1 turns the check on for every test (to look at the reports).
OCLGRIND_RT = "/usr/lib/oclgrind/liboclgrind-rt.so"
UNINIT = os.environ.get("KDSEG_OCLGRIND_UNINIT", "0") not in ("", "0")
UNINIT_SUITES = os.environ.get("KDSEG_OCLGRIND_UNINIT_SUITES", "runtime").split()
UNINIT_ENV = {"OCLGRIND_UNINITIALIZED": "1", "OCLGRIND_BUILD_OPTIONS": "-cl-opt-disable"}
PROFILE_ROW = re.compile(r"^\s+(kd_\w+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s*$")


def read_list(path):
    """Lines 'name  # reason' of a list file: {name: reason}."""
    out = {}
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition("#")
            out[name.strip()] = reason.strip()
    return out


def cl_kernels():
    """Kernel names of cl/*.cl after preprocessing (with cl/common.h, as the programs are
    built), so that every variant a macro instantiates (kd_conv3d_fwd_v16_p8m1, ...) must
    run in some test; without a C preprocessor, the raw sources (a name pasted by a macro
    then stands for all its variants)."""
    kernels = {}
    common = os.path.join(ROOT, "cl", "common.h")
    cpp = shutil.which("cpp")
    for f in sorted(glob.glob(os.path.join(ROOT, "cl", "*.cl"))):
        text = open(f).read()
        if cpp:
            p = subprocess.run([cpp, "-P", "-undef", "-w"], input=open(common).read() + "\n" + text,
                               capture_output=True, text=True)
            if p.returncode == 0:
                text = p.stdout
        for k in re.findall(r"__kernel\s+(?:__attribute__\s*\(\(.*?\)\)\s*)?void\s+(\w+)",
                            text):
            kernels[k] = os.path.basename(f)
    return kernels


def run_one(name, cmd, env, logdir, timeout):
    log = os.path.join(logdir, name.replace("/", "__") + ".log")
    full = cmd  # Oclgrind's runtime is preloaded (see main), as its launcher does
    t0 = time.time()
    try:
        p = subprocess.run(full, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        out, rc = p.stdout.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace"), "timeout"
    with open(log, "w") as f:
        f.write(out)
    diags = [l for l in out.splitlines() if DIAG.match(l)]
    ran = {m.group(1) for m in map(PROFILE_ROW.match, out.splitlines()) if m}
    return name, rc, diags, ran, time.time() - t0, log


def main():
    build, out_path = sys.argv[1], sys.argv[2]
    results = []

    def record(name, ok, skip=False):
        results.append({"name": name, "result": "SKIP" if skip else ("OK" if ok else "FAIL")})

    if not shutil.which("oclgrind") or not os.path.exists(OCLGRIND_RT):
        record("oclgrind/installed", False)
        print("check_kernels: oclgrind is not installed (apt-get install oclgrind)")
        return finish(out_path, results)
    timeout = float(os.environ.get("KDSEG_OCLGRIND_TIMEOUT", "900"))
    jobs = int(os.environ.get("KDSEG_OCLGRIND_JOBS", "2"))
    only = re.compile(os.environ.get("KDSEG_OCLGRIND_ONLY", ".*"))
    want_suites = os.environ.get("KDSEG_OCLGRIND_SUITES", "runtime conv layers").split()
    # single tests beyond those suites: the loss and optimizer kernels on tiny tensors
    # (a whole model's forward is too slow under Oclgrind)
    extra = os.environ.get("KDSEG_OCLGRIND_EXTRA",
                           "nn/optim_sgd nn/loss_and_adam tune/device_peak").split()
    exclude = read_list(os.path.join(REL, "oclgrind_exclude.txt"))
    uncovered_ok = read_list(os.path.join(REL, "oclgrind_uncovered.txt"))
    logdir = os.path.join(build, "oclgrind")
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(os.path.join(logdir, "cache"))

    tests = json.loads(subprocess.check_output(["meson", "introspect", "--tests", build]))
    base = dict(os.environ)
    # what `oclgrind --data-races --check-api --max-errors 20` sets
    base.update({"LD_PRELOAD": OCLGRIND_RT,
                 "OCLGRIND_DATA_RACES": "1", "OCLGRIND_CHECK_API": "1",
                 "OCLGRIND_MAX_ERRORS": "20", "OCLGRIND_UNINITIALIZED": "0"})
    if UNINIT:
        base.update(UNINIT_ENV)
    # KDSEG_CACHE=0: Oclgrind 21.10 corrupts its heap at teardown ("free(): too many
    # chunks detected in tcache") in a process that loaded programs from binaries.
    base.update({"KDSEG_CACHE": "0"})
    base.update({"KDSEG_DEVICE": "oclgrind", "KDSEG_POOL_EXACT": "1", "KDSEG_PROFILE": "1",
                 "KDSEG_TEST_SMALL": "1", "XDG_CACHE_HOME": os.path.join(logdir, "cache")})
    jobs_list = []
    for t in tests:
        suites = [s.split(":")[-1] for s in t["suite"]]
        name = "oclgrind/" + t["name"]
        if "fuzz" in suites or not only.search(t["name"]):
            continue
        if "all" not in want_suites and not set(suites) & set(want_suites) and t["name"] not in extra:
            continue
        if t["name"] in exclude:
            print(f"  skip {t['name']}: {exclude[t['name']]}")
            continue
        env = dict(base)
        env.update(t.get("env") or {})
        env.update({k: base[k] for k in ("KDSEG_CACHE", "KDSEG_DEVICE", "KDSEG_POOL_EXACT", "KDSEG_PROFILE",
                                          "KDSEG_TEST_SMALL", "XDG_CACHE_HOME")})
        if set(suites) & set(UNINIT_SUITES):
            env.update(UNINIT_ENV)  # these tests run once, with the uninitialised-value check too
        jobs_list.append((name, t["cmd"], env))
    canary = os.path.join(build, "tests", "reliability", "test_canary")
    canaries = {"oob_write": "Invalid write", "race": "data race", "uninit": "Uninitialized value"}
    for case in canaries:
        env = dict(base)
        env["KDSEG_SOURCE_ROOT"] = ROOT
        if case == "uninit":
            env.update(UNINIT_ENV)
        jobs_list.append(("oclgrind/canary/" + case, [canary, case], env))

    ran_kernels = set()
    t0 = time.time()
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        futs = [ex.submit(run_one, n, c, e, logdir, timeout) for n, c, e in jobs_list]
        for fu in cf.as_completed(futs):
            name, rc, diags, ran, secs, log = fu.result()
            if name.startswith("oclgrind/canary/"):
                want = canaries[name.rsplit("/", 1)[1]]
                ok = rc == 0 and any(want.lower() in d.lower() for d in diags)
                print(f"  {'ok  ' if ok else 'FAIL'} {name} ({secs:.1f} s): "
                      f"{'reported' if ok else 'NOT reported'}: {want} (exit {rc})")
                if not ok:
                    print(f"       log: {log}")
                record(name, ok)
                continue
            ran_kernels |= ran
            if rc == 77:
                print(f"  skip {name} ({secs:.1f} s)")
                record(name, True, skip=True)
                continue
            ok = rc == 0 and not diags
            why = "" if ok else (f"{len(diags)} diagnostics, first: {diags[0]}" if diags
                                 else f"exit {rc}")
            print(f"  {'ok  ' if ok else 'FAIL'} {name} ({secs:.1f} s, {len(ran)} kernels)"
                  + (f": {why}\n       log: {log}" if not ok else ""))
            record(name, ok)
    print(f"check_kernels: {len(jobs_list)} runs in {time.time() - t0:.0f} s")

    kernels = cl_kernels()
    for k, f in sorted(kernels.items()):
        # a name ending in "_" is pasted by a macro (kd_conv3d_fwd_##V): any variant counts
        if k in ran_kernels or (k.endswith("_") and any(r.startswith(k) for r in ran_kernels)):
            record(f"oclgrind/coverage/{k}", True)
        elif k in uncovered_ok:
            print(f"  skip coverage of {k} ({f}): {uncovered_ok[k]}")
            record(f"oclgrind/coverage/{k}", True, skip=True)
        else:
            print(f"  FAIL coverage: kernel {k} of {f} ran in no test under Oclgrind")
            record(f"oclgrind/coverage/{k}", False)
    return finish(out_path, results)


def finish(out_path, results):
    with open(out_path, "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    p = sum(r["result"] == "OK" for r in results)
    fl = sum(r["result"] == "FAIL" for r in results)
    s = sum(r["result"] == "SKIP" for r in results)
    print(f"check_kernels: {p} passed, {fl} failed, {s} skipped")
    return 1 if fl else 0


if __name__ == "__main__":
    sys.exit(main())
