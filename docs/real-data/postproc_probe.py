#!/usr/bin/env python3
"""Post-processing rules measured per fold on a leave-one-out run's probability maps.

An analysis aid for docs/real-data/README.md (not part of kdseg): for every fold of a
tools/bench/loo_real.sh run made with PROB=1 (OUT/fold-N/prob/CASE_prob.nii.gz, p(WT),
p(TC), p(ET) as u8), it turns the maps into BraTS 2019 label maps the way `kdseg segment`
does (threshold 0.5; ET over core over edema; the brain mask: voxels zero in every
modality; 26-connected tumour components; ET of at most N voxels made core) under each
rule below, and scores every label map with `kdseg evaluate`, so the numbers are
kdseg's metrics. Rules that kdseg segment has (mask, min, largest, etmin) follow
src/infer/postproc.c; the others (near, thr) are candidates measured here first.

  usage: postproc_probe.py LOO_OUT WORK [KDSEG] > table.csv
"""
import csv
import glob
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

S26 = np.ones((3, 3, 3), bool)


def labels_from(p, thr=0.5):
    lab = np.zeros(p.shape[:3], np.uint8)
    lab[p[..., 0] > thr] = 2
    lab[p[..., 1] > thr] = 1
    lab[p[..., 2] > thr] = 4
    return lab


def drop_components(lab, fraction=0.0, largest=False):
    comp, k = ndimage.label(lab > 0, structure=S26)
    if k == 0:
        return lab
    sizes = np.bincount(comp.ravel())[1:]
    if largest:
        keep = np.zeros(k + 1, bool)
        keep[1 + int(np.argmax(sizes))] = True
    else:
        keep = np.concatenate([[False], sizes >= fraction * sizes.sum() * (1 - 1e-12)])
    out = lab.copy()
    out[~keep[comp]] = 0
    return out


def near_largest(lab, mm, spacing):
    """Keeps the components with a voxel within mm of the largest component."""
    comp, k = ndimage.label(lab > 0, structure=S26)
    if k <= 1:
        return lab
    sizes = np.bincount(comp.ravel())[1:]
    big = 1 + int(np.argmax(sizes))
    dist = ndimage.distance_transform_edt(comp != big, sampling=spacing)
    keep = np.zeros(k + 1, bool)
    near = ndimage.minimum(dist, labels=comp, index=np.arange(1, k + 1))
    keep[1:] = np.asarray(near) <= mm
    out = lab.copy()
    out[~keep[comp]] = 0
    return out


def et_min(lab, n=32):
    et = lab == 4
    if 0 < et.sum() <= n:
        lab = lab.copy()
        lab[et] = 1
    return lab


def rules(p, brain, spacing):
    base = labels_from(p)
    masked = base * brain
    yield "none", base
    yield "mask", masked
    yield "mask+min0.1+etmin32 (recipe)", et_min(drop_components(masked, 0.1))
    yield "mask+largest+etmin32", et_min(drop_components(masked, largest=True))
    yield "mask+min0.2+etmin32", et_min(drop_components(masked, 0.2))
    yield "mask+near10mm+etmin32", et_min(near_largest(masked, 10.0, spacing))
    yield "mask+near20mm+etmin32", et_min(near_largest(masked, 20.0, spacing))
    for thr in (0.6, 0.7):
        yield f"thr{thr}+mask+min0.1+etmin32", et_min(drop_components(labels_from(p, thr) * brain, 0.1))


def main():
    loo, work = sys.argv[1], sys.argv[2]
    kdseg = sys.argv[3] if len(sys.argv) > 3 else "build/tools/kdseg"
    w = csv.writer(sys.stdout)
    w.writerow(["fold", "case", "rule", "dice_wt", "dice_tc", "dice_et", "hd95_wt", "hd95_tc", "hd95_et",
                "vol_wt", "ref_wt"])
    for fold in sorted(glob.glob(os.path.join(loo, "fold-*"))):
        f = fold.rsplit("-", 1)[1]
        probs = glob.glob(os.path.join(fold, "prob", "*_prob.nii.gz"))
        if not probs:
            continue
        case = os.path.basename(probs[0])[: -len("_prob.nii.gz")]
        test = os.path.join(fold, "test")
        pim = nib.load(probs[0])
        p = np.asarray(pim.dataobj, dtype=np.float32)  # u8 scaled by 1/255: p itself
        mods = [m for m in glob.glob(os.path.join(test, case, "*.nii.gz")) if not m.endswith("_seg.nii.gz")]
        brain = np.zeros(p.shape[:3], bool)
        for m in mods:
            brain |= np.asarray(nib.load(m).dataobj) != 0
        spacing = pim.header.get_zooms()[:3]
        for name, lab in rules(p, brain.astype(np.uint8), spacing):
            d = os.path.join(work, f"fold-{f}", name.replace(" ", "_").replace("(", "").replace(")", ""))
            os.makedirs(d, exist_ok=True)
            img = nib.Nifti1Image(lab, pim.affine)
            img.set_data_dtype(np.uint8)
            nib.save(img, os.path.join(d, case + ".nii.gz"))
            out = os.path.join(d, "eval.csv")
            subprocess.run([kdseg, "-q", "evaluate", "--pred", d, "--ref", test, "--csv", out], check=True,
                           stdout=subprocess.DEVNULL)
            with open(out) as fh:
                r = next(csv.DictReader(fh))
            w.writerow([f, case, name] + [f"{float(r[k]):.4f}" for k in ("Dice_WT", "Dice_TC", "Dice_ET")] +
                       [f"{float(r[k]):.2f}" for k in ("HD95_WT", "HD95_TC", "HD95_ET")] +
                       [r["VolPred_vox_WT"], r["VolRef_vox_WT"]])
            sys.stdout.flush()


if __name__ == "__main__":
    main()
