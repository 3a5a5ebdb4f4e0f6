/* kdseg: post-processing of region probabilities into BraTS label maps, and label maps
 * back into region masks, for each label convention. Host-only. */
#ifndef KDSEG_POSTPROC_H
#define KDSEG_POSTPROC_H

#include <stddef.h>
#include <stdint.h>

#include "kdseg/data.h"
#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The three nested BraTS regions, in the order of every region array in kdseg. */
typedef enum kd_region {
    KD_REGION_WT = 0, /* whole tumour: every tumour label */
    KD_REGION_TC = 1, /* tumour core: core + enhancing */
    KD_REGION_ET = 2, /* enhancing tumour */
    KD_REGION_COUNT = 3
} kd_region;

/* Short name of a region ("WT", "TC", "ET"). */
const char *kd_region_name(int region);

/* The label conventions (kd_label_convention, its names and parsing) are declared in
 * kdseg/data.h, beside the layouts whose files use them. */

/* Labels -> region masks (0/1 bytes). labels, wt, tc, et: (D, H, W), n voxels each.
 * Any of wt, tc, et may be NULL. A label outside the convention's set is KD_ERR_FORMAT
 * naming the value and voxel index. c must not be KD_LABELS_AUTO. */
kd_status kd_labels_to_regions(const uint8_t *labels, size_t n, kd_label_convention c, uint8_t *wt,
                               uint8_t *tc, uint8_t *et);

/* Guess a label map's convention from its values: a 4 means 2019, a 3 means 2023 (both:
 * KD_ERR_FORMAT), neither: `fallback` (1 and 2 then mean the same regions in 2019 and
 * 2023). MSD cannot be told from 2023 by values; ask for it explicitly. */
kd_status kd_labels_detect(const uint8_t *labels, size_t n, kd_label_convention fallback,
                           kd_label_convention *out);

/* Memory layout of a region probability array. */
typedef enum kd_prob_layout {
    KD_PROB_CDHW = 0, /* (3, D, H, W): one volume per region, as written to NIfTI */
    KD_PROB_DHWC = 1  /* (D, H, W, 3): channels-last, as downloaded from the device */
} kd_prob_layout;

typedef struct kd_postproc_options {
    float threshold;            /* a region is present where its probability > threshold (0.5) */
    kd_label_convention labels; /* 2019 (ET -> 4), 2023 (ET -> 3) or MSD; not AUTO */
    int et_min_voxels;          /* ET with volume <= this is relabelled core (1); < 0: never (32) */
    double min_component_fraction; /* 26-connected tumour components with fewer voxels than
                                      this fraction of all tumour voxels are removed; 0: off
                                      (0.1) */
    int largest_only;           /* keep only the largest 26-connected tumour component (0) */
    const uint8_t *brain_mask;  /* (D, H, W), borrowed: voxels where it is 0 (outside the
                                   brain) are never tumour; NULL: no mask (NULL) */
} kd_postproc_options;

/* Threshold 0.5, 2019 labels, ET of at most 32 voxels to core, components under 10%. */
void kd_postproc_options_default(kd_postproc_options *o);

/* Region probabilities -> label map, the paper's rules in this order:
 *  1. threshold each region (p > threshold), outside brain_mask nothing;
 *  2. labels: WT -> 2, then TC -> 1, then ET -> 4 (2019) or 3 (2023), later rules win;
 *  3. remove 26-connected components of the tumour (label > 0) smaller than
 *     min_component_fraction of all tumour voxels (largest_only: all but the largest);
 *  4. if at most et_min_voxels ET voxels remain, relabel them as core (1);
 *  5. MSD: the 2019 labels of steps 2-4 as MSD's (1 edema, 2 non-enhancing, 3 enhancing).
 * prob: (3, D, H, W) or (D, H, W, 3) by layout, regions WT, TC, ET; labels: (D, H, W).
 * Non-finite probabilities are KD_ERR_NUMERIC. */
kd_status kd_postproc_labels(const float *prob, kd_prob_layout layout, int d, int h, int w,
                             const kd_postproc_options *o, uint8_t *labels);

/* Step 3 alone, in place on a label map (D, H, W): zeroes 26-connected components of
 * label > 0 with fewer voxels than fraction * (all label > 0 voxels). *removed (may be
 * NULL) gets the number of voxels zeroed. */
kd_status kd_labels_remove_small_components(uint8_t *labels, int d, int h, int w, double fraction,
                                            size_t *removed);

/* Step 3 with largest_only, in place: zeroes every 26-connected component of label > 0
 * but the largest (the first in scan order among equals). *removed as above. */
kd_status kd_labels_keep_largest_component(uint8_t *labels, int d, int h, int w, size_t *removed);

/* Step 4 alone: if 0 < count(label == et_label) <= max_voxels, set those voxels to 1.
 * Returns the number relabelled in *relabelled (may be NULL). */
kd_status kd_labels_drop_small_et(uint8_t *labels, size_t n, uint8_t et_label, int max_voxels,
                                  size_t *relabelled);

#ifdef __cplusplus
}
#endif
#endif
