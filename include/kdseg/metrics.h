/* kdseg: segmentation metrics as the BraTS evaluation computes them (Dice, HD95,
 * sensitivity, specificity, volumes), summary statistics, label-map reading and the
 * `kdseg evaluate` pairing of predictions with references. Host-only. */
#ifndef KDSEG_METRICS_H
#define KDSEG_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kdseg/postproc.h"
#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* HD95 substituted when exactly one of prediction and reference is empty (BraTS 2023). */
#define KD_EMPTY_HD95_DEFAULT 374.0

/* Metrics of one binary region. Masks are (D, H, W) bytes, nonzero = inside. */
typedef struct kd_metrics {
    double dice;        /* 2|P∩R| / (|P|+|R|); both empty: 1; one empty: 0 */
    double hd95;        /* mm; both empty: 0; one empty: the empty_hd95 option */
    double sensitivity; /* TP / (TP+FN); 1 when the reference is empty (nothing to miss) */
    double specificity; /* TN / (TN+FP); 1 when the reference covers the volume */
    int64_t tp, fp, fn, tn;
    int64_t vol_pred, vol_ref;        /* voxels */
    double vol_pred_mm3, vol_ref_mm3; /* voxels times sz*sy*sx */
} kd_metrics;

/* Dice of two regions given as values over n voxels (probabilities, or 0/1), a voxel
 * inside where its value > threshold: 2|A∩B| / (|A|+|B|), both empty 1, as
 * kd_metrics_compute. Training validation and the teachers' agreement use it. */
double kd_dice_threshold(const float *a, const float *b, size_t n, float threshold);

/* Dice from voxel counts: 2 both / (na + nb), both empty 1 (the one formula every Dice
 * here uses, lesion-wise Dice included). */
double kd_dice_counts(int64_t both, int64_t na, int64_t nb);

/* Metrics of one region. spacing: (sz, sy, sx) in mm, positive and finite. */
kd_status kd_metrics_compute(const uint8_t *pred, const uint8_t *ref, int d, int h, int w,
                             const double spacing[3], double empty_hd95, kd_metrics *out);

/* The HD95 alone, as medpy.metric.hd95 computes it: surface = mask minus its erosion by
 * the 6-neighbourhood (outside the grid counts as background, so a mask touching the
 * border has surface there); for each surface voxel of one mask the exact Euclidean
 * distance (with spacing) to the nearest surface voxel of the other, both directions
 * pooled; the 95th percentile with linear interpolation (np.percentile's default).
 * Both masks must be non-empty (KD_ERR_INVALID_ARG otherwise). */
kd_status kd_hd95(const uint8_t *a, const uint8_t *b, int d, int h, int w, const double spacing[3],
                  double *out);

/* Surface of a mask (see kd_hd95) into surf (D, H, W); returns the surface voxel count. */
size_t kd_mask_surface(const uint8_t *mask, int d, int h, int w, uint8_t *surf);

/* Exact squared Euclidean distance transform (Felzenszwalb & Huttenlocher, separable,
 * anisotropic): dist2[i] = squared distance in mm^2 from voxel i to the nearest voxel with
 * feature[i] != 0; +INFINITY everywhere when there is no feature voxel.
 * feature, dist2: (D, H, W). */
kd_status kd_edt_squared(const uint8_t *feature, int d, int h, int w, const double spacing[3],
                         double *dist2);

/* The q-th percentile (0..100) of x[0..n) with linear interpolation, as np.percentile;
 * reorders x. NaN for n == 0. */
double kd_percentile_inplace(double *x, size_t n, double q);

/* Summary of a sample, NaN entries ignored (np.nanmean, np.nanstd with ddof 0,
 * np.nanmedian, np.nanpercentile 25 and 75); all NaN when every entry is NaN. */
typedef struct kd_summary {
    double mean, std, median, q25, q75;
    size_t n_valid; /* entries that were not NaN */
} kd_summary;

/* The summary of x[0..n) into out. */
kd_status kd_summary_compute(const double *x, size_t n, kd_summary *out);

/* ---- BraTS 2023+ lesion-wise metrics ---- */

/* The robust Hausdorff distance (95th percentile) as the BraTS 2023 lesion-wise
 * evaluation computes it with DeepMind's surface-distance package: surface points are
 * the voxel corners whose 2x2x2 neighbourhood is neither all inside nor all outside,
 * each weighted by the area of its marching-cubes surface element (in mm^2, from the
 * spacing); for each mask, the area-weighted 95th percentile of the distances (mm) from
 * its surface points to the other's (the first distance whose cumulative area reaches
 * 95%); the larger of the two. +INFINITY when either mask is empty (the evaluation then
 * substitutes 374). Differs from kd_hd95 (medpy's voxel surfaces, pooled, unweighted).
 * gt, pred: (D, H, W); spacing (sz, sy, sx). */
kd_status kd_hd95_surfel(const uint8_t *gt, const uint8_t *pred, int d, int h, int w,
                         const double spacing[3], double *out);

/* Area in mm^2 of the surface element of each 2x2x2 neighbourhood code (bit
 * 128 >> (4a + 2b + c) set when the voxel at offset (x: a-1, y: b-1, z: c-1) is inside),
 * for spacing (sz, sy, sx); area[0] = area[255] = 0. */
void kd_surfel_areas(const double spacing[3], double area[256]);

/* 26-connected components of mask (D, H, W) into labels (1..count in raster order of
 * their first voxel, 0 outside); returns the count, or -1 when out of memory. */
int kd_components26(const uint8_t *mask, int d, int h, int w, int32_t *labels);

/* Parameters of a BraTS challenge's lesion-wise evaluation. */
typedef struct kd_lesion_options {
    int dilation;          /* iterations of the 18-neighbourhood dilation of GT lesions */
    double min_volume_mm3; /* GT lesions of at most this volume are left out */
    double fp_hd95;        /* HD95 of a false positive or missed lesion (374) */
} kd_lesion_options;

/* BraTS-GLI 2023 (adult glioma): dilation 3, 50 mm^3, 374. */
void kd_lesion_options_default(kd_lesion_options *o);

/* Presets of the BraTS 2023 evaluation: "gli", "ssa", "ped" (dilation 3, 50 mm^3),
 * "men" (1, 50 mm^3), "met" (1, 2 mm^3); case-insensitive, "BraTS-" prefix allowed. */
kd_status kd_lesion_options_preset(const char *challenge, kd_lesion_options *o);

/* Lesion-wise metrics of one region, as the BraTS 2023 evaluation
 * (rachitsaluja/BraTS-2023-Metrics) computes them: GT lesions are the 26-connected
 * components of the GT dilated `dilation` times with the 18-neighbourhood (so nearby
 * GT components form one lesion), restricted to GT voxels; each lesion is matched with
 * every 26-connected prediction component that touches the lesion dilated the same way,
 * and scored (Dice, kd_hd95_surfel; infinite -> fp_hd95) against their union. Lesions of
 * at most min_volume_mm3 are left out; prediction components matched with no lesion
 * (small ones included) are false positives, each Dice 0 and HD95 fp_hd95.
 * dice = sum of lesion Dice / (lesions + FP); hd95 = (sum of lesion HD95 + FP fp_hd95) /
 * (lesions + FP); no lesion and no FP: Dice 1, HD95 0. */
typedef struct kd_lesion_metrics {
    double dice, hd95;
    int tp;      /* lesions (above the threshold) matched by the prediction */
    int fn;      /* lesions (above the threshold) with no prediction component near */
    int fp;      /* prediction components near no GT lesion */
    int ignored; /* GT lesions at or below the volume threshold */
} kd_lesion_metrics;

kd_status kd_lesion_metrics_compute(const uint8_t *pred, const uint8_t *ref, int d, int h, int w,
                                    const double spacing[3], const kd_lesion_options *o,
                                    kd_lesion_metrics *out);

/* ---- label maps on disk ---- */

/* A label map read from NIfTI (1 or 2, .nii or .nii.gz). */
typedef struct kd_label_map {
    int d, h, w;       /* grid (D, H, W) = NIfTI (nz, ny, nx) */
    double spacing[3]; /* (sz, sy, sx) in mm = pixdim[3], pixdim[2], pixdim[1] */
    uint8_t *labels;   /* (D, H, W), x fastest as in the file */
} kd_label_map;

/* Reads a 3-D label map (a 4-D file with one volume is accepted) of any integer or float
 * datatype whose (scaled) values are integers in 0..255. Errors name the file: missing,
 * not NIfTI, absurd size, non-integer or out-of-range labels, bad spacing. */
kd_status kd_label_map_read(const char *path, kd_label_map **out);
void kd_label_map_free(kd_label_map *m); /* the map and its labels; NULL ok */

/* ---- evaluation of a folder of predictions ---- */

typedef struct kd_eval_options {
    const char *pred_dir;       /* CASE.nii.gz (or CASE.nii) per case */
    const char *ref;            /* BraTS dataset folder (CASE/CASE_seg.nii.gz or
                                   CASE/CASE-seg.nii.gz), a Decathlon folder (labelsTr/)
                                   or a folder of CASE.nii.gz label maps */
    kd_label_convention labels; /* of both prediction and reference; AUTO: per file */
    int allow_missing;          /* score missing predictions as empty instead of failing */
    double empty_hd95;          /* KD_EMPTY_HD95_DEFAULT */
    int lesion_wise;            /* also the BraTS 2023 lesion-wise metrics */
    kd_lesion_options lesion;   /* their parameters (kd_lesion_options_default) */
} kd_eval_options;

/* Labels AUTO, missing predictions an error, empty HD95 KD_EMPTY_HD95_DEFAULT. */
void kd_eval_options_default(kd_eval_options *o);

typedef enum kd_eval_status {
    KD_EVAL_OK = 0,
    KD_EVAL_MISSING = 1, /* no prediction file: scored as empty (allow_missing) */
    KD_EVAL_MISMATCH = 2 /* prediction on another grid: scored as empty (allow_missing) */
} kd_eval_status;

/* "ok", "missing", "mismatch". */
const char *kd_eval_status_name(kd_eval_status s);

typedef struct kd_eval_case {
    char *name;
    kd_eval_status status;
    kd_metrics region[KD_REGION_COUNT]; /* WT, TC, ET */
    kd_lesion_metrics lesion[KD_REGION_COUNT]; /* with lesion_wise */
} kd_eval_case;

typedef struct kd_eval_result {
    int lesion_wise; /* the cases hold lesion-wise metrics */
    int n_cases;
    kd_eval_case *cases; /* sorted by name */
} kd_eval_result;

/* Pairs every reference case with its prediction and scores it. A missing prediction or
 * one on another grid (D, H, W) is an error naming the case, or with allow_missing is
 * scored as an empty prediction. Conventions with labels AUTO: a reference by its layout
 * (CASE_seg: 2019, CASE-seg: 2023, labelsTr/: MSD, a plain folder: by its values), a
 * prediction by its values (4: 2019, 3: 2023). */
kd_status kd_evaluate(const kd_eval_options *o, kd_eval_result **out);
void kd_eval_result_free(kd_eval_result *r); /* the result, its cases and names; NULL ok */

/* One row per case: case, status, then per region WT, TC, ET: Dice, HD95, sensitivity,
 * specificity, volumes (voxels, mm^3) of prediction and reference; with lesion-wise
 * metrics then per region LesionDice, LesionHD95, TP, FP, FN (lesion counts). Written to a
 * temporary file and renamed. */
kd_status kd_eval_write_csv(const kd_eval_result *r, const char *path);

/* The leaderboard table: per metric and region, mean, std, median, 25th and 75th
 * percentile over the cases (with lesion-wise metrics: LesionDice and LesionHD95 too,
 * and the lesion counts summed over the cases). */
void kd_eval_print_table(const kd_eval_result *r, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
