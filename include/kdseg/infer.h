/* kdseg: whole-volume and sliding-window inference with test-time flips and
 * ensembles, resident on the device: the image is uploaded once, windows are cut,
 * flipped, run (several per forward pass where memory allows), Gaussian-blended and
 * normalised in device memory, and one download returns the result. */
#ifndef KDSEG_INFER_H
#define KDSEG_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "kdseg/data.h"
#include "kdseg/model.h"
#include "kdseg/postproc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_infer_opts {
    int tta;            /* 0 or 1: none; 4: the paper's (identity, flip W, flip H, both);
                           8: all mirror combinations of D, H, W */
    int tile[3];        /* sliding-window tile (D, H, W); 0: decide from memory */
    int force_tiles;    /* 1: always sliding windows (tile or automatic) */
    float overlap;      /* between windows, in [0, 0.9]; default 0.5 */
    size_t mem_budget;  /* device bytes for activations; 0: 80% of the device limit */
    int progress;       /* draw a progress bar over windows on a terminal */
    int batch;          /* most windows x flips per forward pass: 0 or 1 one (the default);
                           N > 1: up to N, as memory allows (the models' memory plans and
                           mem_budget decide) */
} kd_infer_opts;

/* No flips, tiles decided from memory, overlap 0.5, 80% of the device memory. */
void kd_infer_opts_default(kd_infer_opts *o);

typedef struct kd_infer_stats {
    int windows;         /* 1 for whole volume */
    int tile[3];         /* the tile used (the whole grid for whole volume) */
    int passes;          /* windows x flips x models */
    int batch;           /* windows x flips per forward pass */
    int forwards;        /* model forward calls (passes / batch, rounded up) */
    size_t peak_device;  /* peak device bytes during the call */
    double seconds;
} kd_infer_stats;

/* Region probabilities averaged over flips and models. image (C, D, H, W) host; a
 * volume whose sizes are not multiples of the models' divisor is zero-padded at its far
 * borders up to the tile; probs (K, D, H, W) host, K = the models' output channels (all
 * equal). All models on one device. */
kd_status kd_infer_volume(kd_model *const *models, int nmodels, const float *image, int C, int D,
                          int H, int W, const kd_infer_opts *o, float *probs,
                          kd_infer_stats *st);

/* Each model's own probabilities from one upload and one set of windows: probs holds
 * nmodels x (K, D, H, W), block m what kd_infer_volume gives models[m] alone. */
kd_status kd_infer_volume_members(kd_model *const *models, int nmodels, const float *image, int C,
                                  int D, int H, int W, const kd_infer_opts *o, float *probs,
                                  kd_infer_stats *st);

/* The label map (D, H, W) of kd_infer_volume's probabilities (models with the 3 region
 * outputs WT, TC, ET), thresholded on the device by steps 1-2 of kd_postproc_labels
 * (p > threshold; WT -> 2, then TC -> 1, then ET -> et_label); only the labels are
 * downloaded. A non-finite probability is KD_ERR_NUMERIC. */
kd_status kd_infer_volume_labels(kd_model *const *models, int nmodels, const float *image, int C,
                                 int D, int H, int W, const kd_infer_opts *o, float threshold,
                                 int et_label, uint8_t *labels, kd_infer_stats *st);

/* Gaussian importance map for a tile (sigma = 1/8 of the tile per axis, as nnU-Net),
 * normalised to max 1, floored at a small positive value. */
void kd_gaussian_weights(const int tile[3], float *w);


/* ---- whole cases ------------------------------------------------------------------ */

/* Region probabilities of a preprocessed case on its ORIGINAL grid: inference on the
 * preprocessed grid (averaged over flips and models), then uncropped (0 outside the
 * crop box). probs: (K, D, H, W) with (D, H, W) = c->orig. */
kd_status kd_segment_case(kd_model *const *models, int nmodels, const kd_case *c,
                          const kd_infer_opts *o, float *probs_orig, kd_infer_stats *st);

/* kd_infer_volume_members on a case: nmodels x (K, D, H, W) on the original grid. */
kd_status kd_segment_case_members(kd_model *const *models, int nmodels, const kd_case *c,
                                  const kd_infer_opts *o, float *probs_orig, kd_infer_stats *st);

/* The post-processed label map of a case on its original grid, equal to
 * kd_postproc_labels on kd_segment_case's probabilities: thresholds and labels on the
 * device (kd_infer_volume_labels), the component and small-ET steps on the host.
 * labels: (D, H, W) = c->orig, 0 outside the crop box. */
kd_status kd_segment_case_labels(kd_model *const *models, int nmodels, const kd_case *c,
                                 const kd_infer_opts *o, const kd_postproc_options *po,
                                 uint8_t *labels_orig, kd_infer_stats *st);

#ifdef __cplusplus
}
#endif
#endif
