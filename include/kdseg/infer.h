/* kdseg: whole-volume and sliding-window inference with test-time flips and
 * ensembles. */
#ifndef KDSEG_INFER_H
#define KDSEG_INFER_H

#include <stddef.h>

#include "kdseg/data.h"
#include "kdseg/model.h"

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
} kd_infer_opts;

/* No flips, tiles decided from memory, overlap 0.5, 80% of the device memory. */
void kd_infer_opts_default(kd_infer_opts *o);

typedef struct kd_infer_stats {
    int windows;         /* 1 for whole volume */
    int tile[3];         /* the tile used (the whole grid for whole volume) */
    int passes;          /* model forward passes run */
    size_t peak_device;  /* peak device bytes during the call */
    double seconds;
} kd_infer_stats;

/* Region probabilities averaged over flips and models. image (C, D, H, W) host,
 * D, H, W multiples of every model's divisor; probs (K, D, H, W) host, K = the
 * models' output channels (all equal). */
kd_status kd_infer_volume(kd_model *const *models, int nmodels, const float *image, int C, int D,
                          int H, int W, const kd_infer_opts *o, float *probs,
                          kd_infer_stats *st);

/* Gaussian importance map for a tile (sigma = 1/8 of the tile per axis, as nnU-Net),
 * normalised to max 1, floored at a small positive value. */
void kd_gaussian_weights(const int tile[3], float *w);


/* ---- whole cases ------------------------------------------------------------------ */

/* Region probabilities of a preprocessed case on its ORIGINAL grid: inference on the
 * preprocessed grid (averaged over flips and models), then uncropped (0 outside the
 * crop box). probs: (K, D, H, W) with (D, H, W) = c->orig. */
kd_status kd_segment_case(kd_model *const *models, int nmodels, const kd_case *c,
                          const kd_infer_opts *o, float *probs_orig, kd_infer_stats *st);

#ifdef __cplusplus
}
#endif
#endif
