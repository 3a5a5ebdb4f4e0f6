#!/usr/bin/env python3
"""Summary of a tools/bench/gpu.sh run: kdseg against PyTorch from the JSON files in OUT
(train64/128 or the CPU check's patches, infer*.json), bench peak when present, and the
quick demo's mean Dice per model, beside a reference run's (OUT/demo_ref_results.csv, e.g.
PoCL's, which gpu.sh --prepare takes from KDSEG_DEMO_REF) when there is one. Markdown on
stdout.

usage: gpu_summary.py OUT
"""
import csv
import glob
import json
import os
import re
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print("(%s: %s)" % (os.path.basename(path), e))
        return None


def ratio(k, t):
    return "%.2f" % (t / k) if k and k > 0 and t and t > 0 else "-"


def mib(b):
    return b / 2**20


def main():
    out = sys.argv[1]
    rows = []
    device = None
    for path in sorted(glob.glob(os.path.join(out, "train*.json")),
                       key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0)):
        js = load(path)
        if not js:
            continue
        device = device or js.get("device")
        for r in js["rows"]:
            rows.append(("training step %d^3, batch %d" % (r["patch"], r["batch"]),
                         "%.1f ms" % r["ms"],
                         "%.1f ms" % r["torch_ms"] if r["torch_ms"] > 0 else "-",
                         ratio(r["ms"], r["torch_ms"])))
            rows.append(("peak memory %d^3 step" % r["patch"],
                         "%.0f MiB planned, %.0f measured" % (mib(r["planned_bytes"]),
                                                             mib(r["measured_peak_bytes"])),
                         "%.0f MiB" % r["torch_maxrss_mib"] if r["torch_maxrss_mib"] > 0 else "-",
                         ""))
    for name in ("infer", "infer_b4", "infer_tile", "infer_tile_b4"):
        js = load(os.path.join(out, name + ".json")) if os.path.exists(
            os.path.join(out, name + ".json")) else None
        if not js:
            continue
        device = device or js.get("device")
        vol = "x".join(map(str, js["volume"]))
        tile = js.get("tile", [0, 0, 0])
        how = "whole" if not tile[0] else "windows %s" % "x".join(map(str, tile))
        for r in js["rows"]:
            what = "inference %s, %s, %s, batch %d (%d windows)" % (
                vol, how, "no TTA" if r["tta"] <= 1 else "%d flips" % r["tta"], r["batch"],
                r["windows"])
            ts = r.get("torch_seconds", -1)
            rows.append((what, "%.3f s, peak %.0f MiB" % (r["seconds"], mib(r["peak_device_bytes"])),
                         "%.3f s" % ts if ts > 0 else "-", ratio(r["seconds"], ts)))
    print("device: %s\n" % device)
    print("| benchmark | kdseg (OpenCL) | PyTorch | kdseg throughput / PyTorch's |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print("| %s | %s | %s | %s |" % r)
    peak = os.path.join(out, "peak.txt")
    if os.path.exists(peak):
        print("\nbench peak:\n")
        print(open(peak).read())
    demo = os.path.join(out, "demo_results.csv")
    if os.path.exists(demo):
        dice = demo_dice(demo)
        ref_path = os.path.join(out, "demo_ref_results.csv")
        ref = demo_dice(ref_path) if os.path.exists(ref_path) else {}
        print("\nquick demo, mean Dice (WT, TC, ET averaged) per model:\n")
        if ref:
            print("| model | this device | reference (demo_ref_results.csv) | difference |")
            print("| --- | ---: | ---: | ---: |")
        for m, v in dice.items():
            mean = sum(v) / len(v)
            if ref:
                r = ref.get(m)
                rmean = sum(r) / len(r) if r else None
                print("| %s | %.4f (%d cases) | %s | %s |" % (
                    m, mean, len(v), "%.4f (%d cases)" % (rmean, len(r)) if r else "-",
                    "%+.4f" % (mean - rmean) if r else "-"))
            else:
                print("  %-20s %.4f (%d cases)" % (m, mean, len(v)))
        for m in ref:
            if m not in dice:
                print("| %s | - | %.4f | - |" % (m, sum(ref[m]) / len(ref[m])))


def demo_dice(path):
    """Per model, each case's Dice averaged over WT, TC and ET, from a demo results.csv."""
    dice = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            d = dice.setdefault(r["model"], [])
            d.append((float(r["dice_wt"]) + float(r["dice_tc"]) + float(r["dice_et"])) / 3)
    return dice

if __name__ == "__main__":
    main()
