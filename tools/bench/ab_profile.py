#!/usr/bin/env python3
"""A/B of a training step's kernel profile, interleaved in one run.

  tools/bench/ab_profile.py [--rounds N] [--reps N] [--patch N] [--top N] [--group K,K] VARIANT...

VARIANT is LABEL=BIN or LABEL=BIN:VAR=VALUE,... (environment for that variant). Each round
runs every variant once: `KDSEG_PROFILE=1 BIN bench train --patch P --reps R` (under flock
/work/locks/bench.lock when that folder exists, at nice 10). From the printed kernel
profile: per step (the profile's kd_adam_amsgrad calls count the steps) the conv kernels'
time (names starting kd_conv: the conv passes and their helpers), the rest ("non-conv":
GroupNorm, activations, resampling, loss, optimizer, copies) and its share. Prints per
round and the median per variant, with `uptime`'s 1-minute load before and after each run,
then the largest non-conv kernels (median ms per step).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

LOCK = os.environ.get("BENCH_LOCK", "/work/locks/bench.lock")


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def run(bin_, env, patch, reps):
    cmd = ["nice", "-n", "10", bin_, "bench", "train", "--patch", str(patch), "--reps", str(reps)]
    if os.path.isdir(os.path.dirname(LOCK)):
        cmd = ["flock", LOCK] + cmd
    e = dict(os.environ)
    e.update(env)
    e["KDSEG_PROFILE"] = "1"
    l0 = load()
    r = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    l1 = load()
    if r.returncode:
        sys.exit(f"ab_profile: {' '.join(cmd)} failed: {r.stdout.strip()[-600:]}")
    step = None
    kern = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*%d\^3\s+\d+\s+([\d.]+)\s+([\d.]+)" % patch, line)
        if m:
            step = (float(m.group(1)), float(m.group(2)))
        m = re.match(r"\s+(kd_\w+)\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+$", line)
        if m:
            kern[m.group(1)] = (int(m.group(2)), float(m.group(3)))
    steps = kern.get("kd_adam_amsgrad", (0, 0))[0]
    if not step or not steps:
        sys.exit("ab_profile: no step time or no kernel profile in the output:\n" + r.stdout[-800:])
    per = {k: v[1] / steps for k, v in kern.items()}
    conv = sum(v for k, v in per.items() if k.startswith("kd_conv"))
    non = sum(v for k, v in per.items() if not k.startswith("kd_conv"))
    return {"ms": step[0], "cpu": step[1], "conv": conv, "non": non, "per": per,
            "calls": {k: v[0] / steps for k, v in kern.items()}, "load": (l0, l1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--group", default="",
                    help="comma-separated kernel names: also the median of their summed ms/step")
    ap.add_argument("variants", nargs="+")
    a = ap.parse_args()
    vs = []
    for v in a.variants:
        label, rest = v.split("=", 1)
        bin_, _, envs = rest.partition(":")
        env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
        vs.append((label, bin_, env))
    res = {v[0]: [] for v in vs}
    print("| round | variant | load before/after | ms/step | cpu-s/step | conv ms/step | non-conv ms/step | non-conv share |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in range(a.rounds):
        for label, bin_, env in vs:
            x = run(bin_, env, a.patch, a.reps)
            res[label].append(x)
            print(f"| {r + 1} | {label} | {x['load'][0]} / {x['load'][1]} | {x['ms']:.1f} | {x['cpu']:.2f} | "
                  f"{x['conv']:.1f} | {x['non']:.1f} | {100 * x['non'] / (x['conv'] + x['non']):.1f}% |",
                  flush=True)
    print("\nmedian over rounds:\n")
    print("| variant | ms/step | conv ms/step | non-conv ms/step | non-conv share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, _, _ in vs:
        xs = res[label]
        med = lambda k: statistics.median(x[k] for x in xs)
        sh = statistics.median(100 * x["non"] / (x["conv"] + x["non"]) for x in xs)
        print(f"| {label} | {med('ms'):.1f} | {med('conv'):.1f} | {med('non'):.1f} | {sh:.1f}% |")
    names = set()
    for label, _, _ in vs:
        for x in res[label]:
            names |= {k for k in x["per"] if not k.startswith("kd_conv")}
    medk = {label: {k: statistics.median(x["per"].get(k, 0.0) for x in res[label]) for k in names}
            for label, _, _ in vs}
    callk = {label: {k: statistics.median(x["calls"].get(k, 0.0) for x in res[label]) for k in names}
             for label, _, _ in vs}
    first = vs[0][0]
    top = sorted(names, key=lambda k: -max(medk[l][k] for l in medk))[: a.top]
    print("\nlargest non-conv kernels (median ms per step; calls per step):\n")
    print("| kernel | " + " | ".join(l for l, _, _ in vs) + " |")
    print("| --- |" + " ---: |" * len(vs))
    for k in top:
        print(f"| `{k}` | " + " | ".join(f"{medk[l][k]:.1f} ({callk[l][k]:.0f})" for l, _, _ in vs) + " |")
    del first
    if a.group:
        ks = a.group.split(",")
        print(f"\nsum of {', '.join(ks)} (median ms per step over rounds):\n")
        for label, _, _ in vs:
            m = statistics.median(sum(x["per"].get(k, 0.0) for k in ks) for x in res[label])
            print(f"- {label}: {m:.1f}")


if __name__ == "__main__":
    main()
