#!/usr/bin/env python3
"""The tables of docs/PERFORMANCE.md's CPU section from one tools/bench/cpu_tables.sh run.

usage: cpu_tables.py OUT_DIR   (markdown on stdout)

Reads the JSON and logs that cpu_tables.sh leaves in OUT_DIR: peak, ops (+ ops_new2 and the
base's ops_base1/2 when --base ran), ops_demo, train64/128 (+ _base), infer (+ _base),
profile64 (+ _base). Missing files leave their table out. Every table names the machine
load that the logs recorded (uptime before and after each benchmark).

Throughput columns: "GF/s" is GFLOP per wall-clock second of the run (what the machine
gave the process under its load); "GF/cpu-s" is GFLOP per CPU-second of the process (all
its threads), i.e. per core, which does not depend on how much of the machine the run got.
"x2 cores" is twice that: what two cores give if both are the process's and scale (an
estimate, not a measurement; a quiet machine measures it as GF/s).
"""
import json
import os
import re
import sys

TARGET_3X3 = 150.0  # GFLOP/s, every 3x3x3 pass of the student at C >= 16 (issue 17)
TARGET_3X3_MEDIAN = 180.0
TARGET_OTHER = 80.0  # the student's other conv passes
TARGET_8CH = 100.0  # the teachers' and the demo's 8-channel convs


def load(out, name):
    p = os.path.join(out, name + ".json")
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            return json.load(f)
    except ValueError as e:
        print("<!-- %s: unreadable (%s) -->" % (p, e))
        return None


def loads(out, name):
    """The load averages (1 minute) before and after a benchmark, from its log."""
    p = os.path.join(out, name + ".txt")
    if not os.path.exists(p):
        return ""
    vals = []
    with open(p) as f:
        for line in f:
            m = re.match(r"# (before|after): .*load average: ([0-9.]+)", line)
            if m:
                vals.append(m.group(2))
    return " → ".join(vals)


def fmt(v, d=1):
    return "-" if v is None or v < 0 else ("%.*f" % (d, v))


def ops_rows(js):
    """{(layer, size, pass): (gflop, wall_ms, cpu_ms)} of the direct implementation."""
    r = {}
    if not js:
        return r
    for row in js.get("rows", []):
        if "pass" not in row:
            continue
        r[(row["layer"], row["size"], row["pass"])] = (row["gflop"], row["direct_ms"],
                                                        row["direct_cpu_ms"])
    return r


def best(*runs):
    """Per pass, the run with the least CPU time (the better of alternated runs)."""
    out = {}
    for run in runs:
        for k, v in run.items():
            if k not in out or (v[2] > 0 and v[2] < out[k][2]):
                out[k] = v
    return out


def kind(layer, ci, co, k):
    if layer.startswith("T "):
        return "8ch" if " w8 " in layer else "teacher"
    if k == 3 and ci >= 16 and co >= 16:
        return "3x3"
    return "other"


def conv_table(out, peak):
    new = load(out, "ops")
    if not new:
        return
    new2 = load(out, "ops_new2")
    b1, b2 = load(out, "ops_base1"), load(out, "ops_base2")
    after = best(ops_rows(new), ops_rows(new2))
    before = best(ops_rows(b1), ops_rows(b2)) if (b1 or b2) else {}
    core = peak.get("cpu_gflops", 0) if peak else 0
    meta = {}
    for row in new["rows"]:
        if "pass" in row:
            meta[(row["layer"], row["size"])] = (row["cin"], row["cout"], row["k"])
    load_txt = "; ".join(x for x in (loads(out, "ops"), loads(out, "ops_base1"),
                                     loads(out, "ops_new2"), loads(out, "ops_base2")) if x)
    print("### Conv passes (64³ patch, batch 1, direct kernels)\n")
    print("Load average (1 min) before → after each run: %s. Before = the base build, after = "
          "this one; per pass the better of %s alternated runs of each.\n"
          % (load_txt or "not recorded", "two" if new2 else "one"))
    hdr = ["layer", "size", "pass", "before GF/cpu-s", "after GF/cpu-s", "% core peak",
           "x2 cores", "after GF/s (wall)", "target"]
    print("| " + " | ".join(hdr) + " |")
    print("| " + " | ".join(["---"] * 3 + ["---:"] * 5 + ["---"]) + " |")
    est3, missed = [], []
    for key in sorted(after, key=lambda k: list(after).index(k)):
        layer, size, ps = key
        gf, ms, cms = after[key]
        ci, co, k = meta.get((layer, size), (0, 0, 0))
        kd = kind(layer, ci, co, k)
        cpu_gf = gf / cms * 1e3 if cms > 0 else -1
        wall_gf = gf / ms * 1e3 if ms > 0 else -1
        two = 2 * cpu_gf
        tgt = {"3x3": TARGET_3X3, "other": TARGET_OTHER, "8ch": TARGET_8CH}.get(kd)
        if kd == "teacher" and min(ci, co) <= 8:
            tgt = TARGET_8CH
        verdict = ""
        if tgt:
            ok = two >= tgt
            verdict = "≥ %d: %s" % (tgt, "met (est.)" if ok else "**not met**")
            if not ok:
                missed.append("%s %s^3 %s (%.0f)" % (layer, size, ps, two))
        if kd == "3x3":
            est3.append(two)
        b = before.get(key)
        bgf = b[0] / b[2] * 1e3 if b and b[2] > 0 else None
        print("| %s | %d³ | %s | %s | %s | %s | %s | %s | %s |" % (
            layer.replace("->", "→"), size, ps, fmt(bgf), fmt(cpu_gf),
            fmt(100 * cpu_gf / core, 0) + "%" if core > 0 else "-", fmt(two), fmt(wall_gf),
            verdict))
    if est3:
        s = sorted(est3)
        med = s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])
        print("\nThe student's 3x3x3 passes at C ≥ 16 (x2 cores): min %.0f, median %.0f "
              "(targets ≥ %d and median ≥ %d)." % (s[0], med, TARGET_3X3, TARGET_3X3_MEDIAN))
    if missed:
        print("Passes under their target (x2 cores): " + "; ".join(missed) + ".")
    print()
    fb = [r for r in new["rows"] if "torch_fwdbwd_ms" in r]
    if fb:
        print("### Conv layers against PyTorch: forward + both gradients (same run)\n")
        print("| layer | size | kdseg ms | kdseg CPU s | PyTorch ms | speed-up (wall) |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for r in fb:
            t = r["torch_fwdbwd_ms"]
            print("| %s | %d³ | %s | %s | %s | %s |" % (
                r["layer"].replace("->", "→"), r["size"], fmt(r["fwdbwd_ms"]),
                fmt(r["fwdbwd_cpu_ms"] * 1e-3, 3), fmt(t),
                ("%.1fx" % (t / r["fwdbwd_ms"])) if t > 0 and r["fwdbwd_ms"] > 0 else "-"))
        print()


def demo_table(out):
    js = load(out, "ops_demo")
    if not js:
        return
    print("### The demo's 8-channel convs (32³ patch; load %s)\n" % (loads(out, "ops_demo") or "-"))
    print("| layer | size | pass | GF/cpu-s | x2 cores | GF/s (wall) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in js["rows"]:
        if "pass" not in r:
            continue
        c = r["gflop"] / r["direct_cpu_ms"] * 1e3
        print("| %s | %d³ | %s | %s | %s | %s |" % (
            r["layer"].replace("->", "→"), r["size"], r["pass"], fmt(c), fmt(2 * c),
            fmt(r["gflop"] / r["direct_ms"] * 1e3)))
    print()


def train_table(out):
    rows = []
    for p in (64, 128):
        js = load(out, "train%d" % p)
        if js and js["rows"]:
            base = load(out, "train%d_base" % p)
            rows.append((p, js["rows"][0], base["rows"][0] if base and base["rows"] else None,
                         loads(out, "train%d" % p), loads(out, "train%d_base" % p)))
    if not rows:
        return
    print("### Training step of the student (widths 16,32,64,128, batch 1)\n")
    print("| patch | before s (CPU s) | kdseg s | kdseg CPU s | PyTorch s | PyTorch CPU s | "
          "speed-up wall | speed-up CPU | conv GF/s (wall) | % peak | load kdseg; base |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for p, r, b, ld, lb in rows:
        t, tc = r.get("torch_ms", -1), r.get("torch_cpu_ms", -1)
        gfs = r["conv_gflop"] / r["ms"] * 1e3
        pk = r.get("peak_gflops", 0)
        print("| %d³ | %s | %.2f | %.2f | %s | %s | %s | %s | %.1f | %s | %s; %s |" % (
            p, ("%.2f (%.2f)" % (b["ms"] * 1e-3, b["cpu_ms"] * 1e-3)) if b else "-",
            r["ms"] * 1e-3, r["cpu_ms"] * 1e-3, fmt(t * 1e-3 if t > 0 else -1, 2),
            fmt(tc * 1e-3 if tc > 0 else -1, 2),
            ("%.2fx" % (t / r["ms"])) if t > 0 else "-",
            ("%.2fx" % (tc / r["cpu_ms"])) if tc > 0 else "-", gfs,
            ("%.0f%%" % (100 * gfs / pk)) if pk > 0 else "-", ld or "-", lb or "-"))
    print()


def infer_table(out):
    js = load(out, "infer")
    if not js:
        return
    base = load(out, "infer_base")
    bt = {r["tta"]: r for r in base["rows"]} if base else {}
    print("### Whole-volume inference, %s (load kdseg %s; base %s)\n" % (
        "x".join(str(v) for v in js.get("volume", [])), loads(out, "infer") or "-",
        loads(out, "infer_base") or "-"))
    print("| TTA | before s (CPU s) | kdseg s | kdseg CPU s | PyTorch s | PyTorch CPU s | "
          "speed-up wall | speed-up CPU | conv GF/s (wall) | % peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in js["rows"]:
        b = bt.get(r["tta"])
        t, tc = r.get("torch_seconds", -1), r.get("torch_cpu_seconds", -1)
        pk = r.get("peak_gflops", 0)
        print("| %d | %s | %.2f | %.2f | %s | %s | %s | %s | %.1f | %s |" % (
            r["tta"], ("%.2f (%.2f)" % (b["seconds"], b["cpu_seconds"])) if b else "-",
            r["seconds"], r["cpu_seconds"], fmt(t, 2), fmt(tc, 2),
            ("%.2fx" % (t / r["seconds"])) if t > 0 else "-",
            ("%.2fx" % (tc / r["cpu_seconds"])) if tc > 0 else "-", r["conv_gflops"],
            ("%.0f%%" % (100 * r["conv_gflops"] / pk)) if pk > 0 else "-"))
    print()


def profile(out, name):
    """{kernel: total ms} and the number of profiled steps, from a KDSEG_PROFILE=1 log."""
    p = os.path.join(out, name + ".txt")
    if not os.path.exists(p):
        return None, 0
    k, steps, on = {}, 1, False
    with open(p) as f:
        for line in f:
            m = re.search(r"--reps (\d+)", line)
            if line.startswith("#") and m:
                steps = int(m.group(1))
            if line.startswith("kernel profile"):
                on = True
                continue
            m = re.match(r"\s+(kd_\w+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", line)
            if on and m:
                k[m.group(1)] = float(m.group(3))
    return (k or None), steps


GROUPS = [
    ("conv kernels", lambda n: n.startswith("kd_conv3d_")),
    ("conv helpers (weight transpose, partial sums, bias)", lambda n: n.startswith("kd_conv_")
     or n.startswith("kd_chsum")),
    ("GroupNorm", lambda n: n.startswith("kd_norm")),
    ("activations (LeakyReLU, sigmoid)", lambda n: n.startswith("kd_leaky") or
     n.startswith("kd_sigmoid")),
    ("resampling (trilinear x2)", lambda n: n.startswith("kd_up_") or "pool" in n),
    ("loss", lambda n: n.startswith("kd_loss")),
    ("optimizer (AMSGrad, gradient norm)", lambda n: n.startswith("kd_adam") or
     n.startswith("kd_sumsq") or n.startswith("kd_sgd")),
    ("elementwise and copies (add, fill, channel copies, scale)", lambda n: True),
]


def profile_table(out):
    new, sn = profile(out, "profile64")
    if not new:
        return
    base, sb = profile(out, "profile64_base")
    print("### Kernel time of one 64³ training step (`KDSEG_PROFILE=1`; load kdseg %s, base %s)\n"
          % (loads(out, "profile64") or "-", loads(out, "profile64_base") or "-"))
    print("| kernels | before ms/step | before % | after ms/step | after % |")
    print("| --- | ---: | ---: | ---: | ---: |")

    def group(k, steps):
        g = [0.0] * len(GROUPS)
        for name, ms in (k or {}).items():
            for i, (_, f) in enumerate(GROUPS):
                if f(name):
                    g[i] += ms / steps
                    break
        return g

    gn, gb = group(new, sn), group(base, sb)
    tn, tb = sum(gn), sum(gb)
    for i, (label, _) in enumerate(GROUPS):
        print("| %s | %s | %s | %.1f | %.1f%% |" % (
            label, fmt(gb[i]) if base else "-", ("%.1f%%" % (100 * gb[i] / tb)) if base else "-",
            gn[i], 100 * gn[i] / tn))
    ncb, ncn = tb - gb[0] - gb[1], tn - gn[0] - gn[1]
    print("| **non-conv (all but the first two rows)** | %s | %s | **%.1f** | **%.1f%%** |" % (
        fmt(ncb) if base else "-", ("%.1f%%" % (100 * ncb / tb)) if base else "-", ncn,
        100 * ncn / tn))
    print("| all kernels | %s | | %.1f | |" % (fmt(tb) if base else "-", tn))
    print()
    print("Non-conv kernels, the largest after:\n")
    print("| kernel | before ms/step | after ms/step |")
    print("| --- | ---: | ---: |")
    top = sorted(((ms / sn, n) for n, ms in new.items()
                  if not (GROUPS[0][1](n) or GROUPS[1][1](n))), reverse=True)[:8]
    for ms, n in top:
        b = base.get(n) if base else None
        print("| `%s` | %s | %.1f |" % (n, fmt(b / sb) if b is not None else "-", ms))
    print()


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = sys.argv[1]
    peak = load(out, "peak")
    print("<!-- generated by tools/bench/cpu_tables.py %s -->\n" % out)
    if peak:
        print("Device: %s. `kdseg bench peak` (load %s): FMA %.1f GFLOP/s on the whole device, "
              "%.1f GFLOP per CPU-second (one core); read %.1f GB/s, copy %.1f GB/s.\n" % (
                  peak.get("device", "?"), loads(out, "peak") or "-", peak["gflops"],
                  peak.get("cpu_gflops", 0), peak.get("read_gbs", 0), peak.get("copy_gbs", 0)))
    for name in ("head", "base"):
        p = os.path.join(out, name + ".txt")
        if os.path.exists(p):
            with open(p) as f:
                print("%s: `%s`  " % ("after (this build)" if name == "head" else "before (base)",
                                      f.read().strip()))
    print()
    conv_table(out, peak)
    demo_table(out)
    train_table(out)
    infer_table(out)
    profile_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
