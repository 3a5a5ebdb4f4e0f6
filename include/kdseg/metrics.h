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
} kd_eval_case;

typedef struct kd_eval_result {
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
 * specificity, volumes (voxels, mm^3) of prediction and reference. Written to a
 * temporary file and renamed. */
kd_status kd_eval_write_csv(const kd_eval_result *r, const char *path);

/* The leaderboard table: per metric and region, mean, std, median, 25th and 75th
 * percentile over the cases. */
void kd_eval_print_table(const kd_eval_result *r, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
