#!/usr/bin/env python3
"""A/B of `kdseg bench ops` conv passes, interleaved in one run (a loaded machine moves
every figure; alternating the variants spreads that over all of them alike).

  tools/bench/ab_ops.py [--rounds N] [--reps N] [--patch N] [--only TEXT] VARIANT...

VARIANT is LABEL=BIN or LABEL=BIN:VAR=VALUE,VAR=VALUE (environment for that variant, e.g.
new=build/tools/kdseg:KDSEG_CONV_PW=0). Each round runs every variant once (`bench ops
--impl direct --cpu --json`, under flock /work/locks/bench.lock when that folder exists,
at nice 10); per pass and variant the best GFLOP per CPU-second over the rounds is kept
(the round least disturbed by other processes). Prints a Markdown table and `uptime`'s load
before and after each run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

LOCK = os.environ.get("BENCH_LOCK", "/work/locks/bench.lock")


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def run(bin_, env, args, out):
    cmd = ["nice", "-n", "10", bin_, "bench", "ops", "--impl", "direct", "--cpu", "--json", out] + args
    if os.path.isdir(os.path.dirname(LOCK)):
        cmd = ["flock", LOCK] + cmd
    e = dict(os.environ)
    e.update(env)
    r = subprocess.run(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        sys.exit(f"ab_ops: {' '.join(cmd)} failed: {r.stderr.strip()[-400:]}")
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--patch", default="64")
    ap.add_argument("--only", default=None)
    ap.add_argument("variants", nargs="+")
    a = ap.parse_args()
    vs = []
    for v in a.variants:
        label, _, rest = v.partition("=")
        bin_, _, envs = rest.partition(":")
        env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
        if not label or not bin_:
            sys.exit(f"ab_ops: variant '{v}' is not LABEL=BIN[:VAR=VALUE,...]")
        vs.append((label, bin_, env))
    args = ["--patch", a.patch, "--reps", str(a.reps), "--peak", "0"]
    if a.only:
        args += ["--only", a.only]
    best = {}  # (layer, size, pass) -> {label: gflop per cpu-s}
    order = []
    loads = []
    with tempfile.TemporaryDirectory() as td:
        for r in range(a.rounds):
            for label, bin_, env in vs:
                l0 = load()
                d = run(bin_, env, args, os.path.join(td, "o.json"))
                loads.append(f"{label}#{r + 1} {l0} -> {load()}")
                for row in d["rows"]:
                    key = (row["layer"], row["size"], row["pass"])
                    if key not in best:
                        best[key] = {}
                        order.append(key)
                    cpu = row["direct_cpu_ms"]
                    g = row["gflop"] / (cpu * 1e-3) if cpu > 0 else 0.0
                    if g > best[key].get(label, 0.0):
                        best[key][label] = g
    labels = [v[0] for v in vs]
    print("load (1 min) before -> after each run: " + "; ".join(loads))
    print()
    print("| layer | size | pass | " + " | ".join(f"{l} GF/cpu-s" for l in labels) +
          (f" | {labels[-1]}/{labels[0]} |" if len(labels) > 1 else " |"))
    print("| --- | --- | --- | " + " | ".join("---:" for _ in labels) + (" | ---: |" if len(labels) > 1 else " |"))
    for key in order:
        g = best[key]
        cells = " | ".join(f"{g.get(l, 0.0):.1f}" for l in labels)
        ratio = ""
        if len(labels) > 1 and g.get(labels[0], 0) > 0:
            ratio = f" | {g.get(labels[-1], 0.0) / g[labels[0]]:.2f}x"
        print(f"| {key[0]} | {key[1]}³ | {key[2]} | {cells}{ratio} |")


if __name__ == "__main__":
    main()
