/* kdseg: named training recipes. A recipe is every default of `kdseg train` and
 * `kdseg distill` that decides what a model learns (patch, batch, steps, optimiser,
 * schedule, loss, patch sampling, augmentation) and the post-processing `kdseg segment`
 * applies to that model's output. Checkpoints record the recipe they were trained with.
 *   real     the default: measured on real BraTS scans (docs/real-data/README.md)
 *   phantom  the demo's synthetic cohort (the settings the demo was developed with) */
#ifndef KDSEG_RECIPE_H
#define KDSEG_RECIPE_H

#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_recipe {
    const char *name;
    const char *about;        /* one line */
    /* training */
    int patch[3];             /* (D, H, W) */
    int batch;
    long steps;
    double lr, wd;
    const char *optim;        /* adam | sgd */
    const char *schedule;     /* step | poly | cosine | const */
    long warmup, step_every;  /* linear warm-up steps; step schedule: halve every N */
    const char *loss;         /* paper | bce | mse */
    const char *aug;          /* kd_augment_opts_parse spec */
    float fg_fraction;        /* patches centred on a tumour voxel */
    float random_fraction;    /* patches centred anywhere in the brain's box */
    int class_balance;        /* tumour centres: region first (edema, core, enhancing) */
    int margin;               /* the other centres: tumour box + margin voxels */
    int val_cases, val_every; /* labeled cases held out for validation; every N steps */
    double ema;               /* decay of the weight average written as ema.kds (0: none) */
    /* post-processing of this recipe's models in kdseg segment and annotate */
    int brain_mask;           /* no tumour outside the brain (voxels 0 in every modality) */
    int largest_only;         /* keep the largest tumour component only */
    double min_component;     /* else drop components under this fraction of the tumour */
    int et_min_voxels;        /* ET of at most this many voxels becomes core */
} kd_recipe;

/* The recipe called name, or NULL with KD_ERR_INVALID_ARG as the last error (naming the
 * known ones). */
const kd_recipe *kd_recipe_find(const char *name);
/* The default recipe ("real"). */
const kd_recipe *kd_recipe_default(void);
/* Known recipes, for listings: i in [0, kd_recipe_count()). */
int kd_recipe_count(void);
const kd_recipe *kd_recipe_at(int i);

#ifdef __cplusplus
}
#endif
#endif
