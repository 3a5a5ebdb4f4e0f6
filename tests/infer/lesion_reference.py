#!/usr/bin/env python3
"""Reference values for tests/infer/test_lesion.c: the BraTS 2023 lesion-wise metrics
computed independently of kdseg, with numpy, scipy.ndimage (binary dilation),
connected-components-3d (26-connected labelling) and DeepMind's surface-distance package
(surfel-weighted robust Hausdorff), the libraries the BraTS 2023 evaluation
(rachitsaluja/BraTS-2023-Metrics) is built on, following its algorithm:

  per region (WT: labels 1,2,3; TC: 1,3; ET: 3 in the 2023 convention):
  - GT lesions: 26-connected components of the GT, merged where their dilations
    (18-neighbourhood structure, `dilation` iterations) form one 26-connected component;
  - each GT lesion is matched with every 26-connected prediction component that touches
    the lesion dilated the same way; its Dice and HD95 (robust Hausdorff 95 of the
    surface-distance package, inf -> 374) are against the union of those components;
  - GT lesions of volume <= threshold (mm^3) are left out; prediction components that
    touch no GT lesion's dilation are false positives, each counted as Dice 0, HD95 374;
  - lesion-wise Dice = sum(Dice) / (lesions + FPs), HD95 = (sum(HD95) + 374 FPs) /
    (lesions + FPs); 0/0 gives Dice 1, HD95 0.

Run once by hand (not by the tests); the test embeds what it prints:
    python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy scipy connected-components-3d \
        surface-distance && /tmp/v/bin/python tests/infer/lesion_reference.py
The cases are built from the same integer primitives as in test_lesion.c: arrays
(D, H, W) = (z, y, x), transposed to (x, y, z) as nibabel gives them to the BraTS code,
with spacing (sx, sy, sz)."""
import numpy as np
import scipy.ndimage as ndi
import cc3d
import surface_distance as sd

if not hasattr(np, "Inf"):  # surface-distance 0.1 predates numpy 2
    np.Inf = np.inf

# (name, (D, H, W), (sz, sy, sx), dilation, threshold_mm3, gt primitives, pred primitives)
# primitive: ('ball', z, y, x, r2, label) = voxels with dz^2+dy^2+dx^2 <= r2;
#            ('box', z0, z1, y0, y1, x0, x1, label) = half-open ranges. Painted in order.
CASES = [
    ("multi", (40, 48, 56), (1.0, 1.0, 1.0), 3, 50.0,
     [("ball", 12, 14, 14, 36, 2), ("ball", 12, 14, 14, 16, 3), ("ball", 12, 14, 14, 4, 1),
      ("ball", 30, 10, 40, 2, 2),
      ("box", 25, 31, 30, 38, 8, 16, 2), ("box", 27, 29, 32, 36, 10, 14, 3),
      ("box", 5, 10, 36, 42, 40, 48, 2),
      ("box", 30, 34, 18, 24, 30, 36, 2), ("box", 30, 34, 18, 24, 39, 44, 2),
      ("ball", 24, 38, 46, 25, 2)],
     [("ball", 13, 14, 15, 30, 2), ("ball", 13, 14, 15, 12, 3), ("ball", 13, 14, 15, 3, 1),
      ("ball", 12, 14, 24, 1, 2),
      ("ball", 30, 11, 40, 1, 2),
      ("box", 25, 32, 30, 37, 9, 16, 2), ("box", 27, 30, 32, 36, 10, 14, 3),
      ("box", 30, 34, 18, 24, 30, 44, 2),
      ("box", 21, 28, 34, 41, 43, 53, 2),
      ("ball", 35, 40, 20, 4, 2), ("ball", 35, 40, 20, 0, 1),
      ("box", 2, 5, 2, 5, 50, 53, 3)]),
    ("aniso", (20, 32, 40), (2.0, 1.0, 1.5), 1, 50.0,
     [("ball", 6, 10, 10, 9, 2), ("ball", 6, 10, 10, 2, 3),
      ("box", 12, 16, 20, 25, 24, 28, 1),
      ("box", 3, 5, 24, 28, 30, 32, 2),
      ("box", 14, 18, 4, 8, 30, 34, 3),
      ("ball", 14, 26, 14, 16, 2)],
     [("ball", 6, 11, 10, 8, 2), ("ball", 7, 10, 11, 2, 3),
      ("box", 12, 17, 21, 25, 24, 29, 1),
      ("box", 3, 5, 24, 28, 30, 32, 2),
      ("box", 16, 18, 12, 14, 2, 5, 2),
      ("ball", 15, 27, 17, 10, 2)]),
    ("diag", (22, 22, 22), (1.0, 1.0, 1.0), 3, 50.0,
     [("box", 4, 8, 4, 8, 4, 8, 2), ("box", 14, 16, 14, 19, 14, 19, 2)],
     [("box", 4, 8, 4, 8, 4, 8, 2), ("box", 10, 11, 10, 11, 10, 11, 2)]),
    ("empty_gt", (16, 16, 16), (1.0, 1.0, 1.0), 3, 50.0,
     [],
     [("box", 2, 4, 2, 4, 2, 4, 3), ("box", 10, 13, 10, 13, 10, 13, 2)]),
    ("both_empty", (16, 16, 16), (1.0, 1.0, 1.0), 3, 50.0, [], []),
    ("small_only", (16, 16, 16), (1.0, 1.0, 1.0), 3, 50.0,
     [("box", 5, 8, 5, 8, 5, 8, 3)], []),
]

REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def paint(shape, prims):
    a = np.zeros(shape, np.uint8)
    z, y, x = np.indices(shape)
    for p in prims:
        if p[0] == "ball":
            _, cz, cy, cx, r2, lab = p
            a[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r2] = lab
        else:
            _, z0, z1, y0, y1, x0, x1, lab = p
            a[z0:z1, y0:y1, x0:x1] = lab
    return a


def lesion_wise(pred, gt, spacing_xyz, dil, thresh):
    struct = ndi.generate_binary_structure(3, 2)
    vox = spacing_xyz[0] * spacing_xyz[1] * spacing_xyz[2]
    gt_cc = cc3d.connected_components(gt, connectivity=26)
    pred_cc = cc3d.connected_components(pred, connectivity=26)
    dil_cc = cc3d.connected_components(ndi.binary_dilation(gt, struct, iterations=dil),
                                       connectivity=26)
    lesions = np.where(gt_cc > 0, dil_cc, 0)
    matched, rows, n_fn = set(), [], 0
    for k in range(1, int(lesions.max()) + 1):
        les = lesions == k
        near = ndi.binary_dilation(les, struct, iterations=dil)
        ids = np.unique(pred_cc[near])
        ids = ids[ids != 0]
        matched.update(int(i) for i in ids)
        p = np.isin(pred_cc, ids)
        dice = 2.0 * np.logical_and(p, les).sum() / (p.sum() + les.sum())
        hd = sd.compute_robust_hausdorff(
            sd.compute_surface_distances(les, p, spacing_xyz), 95)
        if hd == np.inf:
            hd = 374.0
        vol = les.sum() * vox
        if vol > thresh:
            rows.append((dice, hd))
            n_fn += len(ids) == 0
    n_fp = len(set(int(i) for i in np.unique(pred_cc)) - matched - {0})
    n = len(rows) + n_fp
    if n == 0:
        return 1.0, 0.0, 0, n_fp, 0, rows
    dice = sum(r[0] for r in rows) / n
    hd = (sum(r[1] for r in rows) + 374.0 * n_fp) / n
    return dice, hd, len(rows) - n_fn, n_fp, n_fn, rows


# Robust HD95 alone: (name, (D, H, W), (sz, sy, sx), gt primitives, pred primitives).
HD_CASES = [
    ("ball_box", (24, 28, 32), (1.0, 1.0, 1.0),
     [("ball", 12, 14, 15, 30, 1)], [("box", 9, 15, 10, 19, 12, 22, 1)]),
    ("aniso_shift", (20, 24, 28), (2.0, 0.5, 1.25),
     [("ball", 9, 12, 13, 20, 1), ("box", 4, 6, 4, 8, 4, 9, 1)],
     [("ball", 10, 11, 15, 14, 1)]),
    ("border", (10, 12, 14), (1.0, 1.0, 1.0),
     [("box", 0, 6, 0, 12, 0, 5, 1)], [("box", 0, 10, 2, 12, 0, 3, 1)]),
]

# Surfel areas of some codes (bit 128 >> (4a + 2b + c): voxel offset x a-1, y b-1, z c-1)
# at spacing (sz, sy, sx) = (2.2, 0.9, 0.5), and their sum over all 256 codes.
AREA_CODES = [1, 3, 7, 15, 23, 25, 26, 28, 61, 105, 114, 116, 150, 165, 254]
AREA_SPACING = (2.2, 0.9, 0.5)


def main():
    from surface_distance import lookup_tables as lt
    sz, sy, sx = AREA_SPACING
    table = lt.create_table_neighbour_code_to_surface_area((sx, sy, sz))
    print("/* surfel areas at (sz, sy, sx) = (2.2, 0.9, 0.5): code, area; then the sum */")
    for c in AREA_CODES:
        print("    {%d, %.17g}," % (c, table[c]))
    print("    sum %.17g" % table.sum())
    print("/* robust HD95 (surface-distance package): case, value */")
    for name, shape, (sz, sy, sx), gp, pp in HD_CASES:
        g = paint(shape, gp).transpose(2, 1, 0) > 0
        p = paint(shape, pp).transpose(2, 1, 0) > 0
        hd = sd.compute_robust_hausdorff(sd.compute_surface_distances(g, p, (sx, sy, sz)), 95)
        print('    {"%s", %.17g},' % (name, hd))
    print("/* generated by tests/infer/lesion_reference.py: case, region, lesion-wise Dice,")
    print(" * HD95, TP, FP, FN */")
    for name, shape, (sz, sy, sx), dil, thresh, gp, pp in CASES:
        gt, pred = paint(shape, gp), paint(shape, pp)
        for reg, labs in REGIONS.items():
            g = np.isin(gt, labs).transpose(2, 1, 0)  # (x, y, z) as nibabel reads it
            p = np.isin(pred, labs).transpose(2, 1, 0)
            d, h, tp, fp, fn, rows = lesion_wise(p, g, (sx, sy, sz), dil, thresh)
            print('    {"%s", "%s", %.17g, %.17g, %d, %d, %d}, /* per lesion %s */'
                  % (name, reg, d, h, tp, fp, fn,
                     ", ".join("%.4f/%.4f" % r for r in rows)))


if __name__ == "__main__":
    main()
