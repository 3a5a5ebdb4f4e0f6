/* The named training recipes (include/kdseg/recipe.h). The numbers of "real" are the
 * ones the leave-one-out benchmark on real scans measured best (docs/real-data/README.md,
 * tools/bench/loo_real.sh); "phantom" keeps what the demo was developed with. */
#include "kdseg/recipe.h"

#include <string.h>

static const kd_recipe recipes[] = {
    {
        .name = "real",
        .about = "real BraTS scans: whole-brain patches with class-balanced tumour "
                 "oversampling, nnU-Net's augmentation, Adam with a cosine schedule",
        .patch = {64, 64, 64},
        .batch = 2, /* batch 1: fold 1 WT 0.43-0.85 from run to run, fold 2 0.62 */
        .steps = 600,
        .lr = 1e-3,
        .wd = 1e-6,
        .optim = "adam",
        .schedule = "cosine",
        .warmup = 30,
        .step_every = 16000,
        .loss = "paper",
        .aug = "real",
        .fg_fraction = 1.0f / 3.0f,
        .random_fraction = 2.0f / 3.0f,
        .class_balance = 1,
        .margin = 50,
        .val_cases = 1,
        .val_every = 200,
        .ema = 0,
        .brain_mask = 1,
        .largest_only = 0,
        .min_component = 0.1,
        .et_min_voxels = 32,
    },
    {
        .name = "phantom",
        .about = "the demo's synthetic cohort: patches near the tumour, the paper's "
                 "optimiser settings",
        .patch = {64, 64, 64},
        .batch = 1,
        .steps = 200,
        .lr = 1e-4,
        .wd = 1e-6,
        .optim = "adam",
        .schedule = "step",
        .warmup = 0,
        .step_every = 16000,
        .loss = "paper",
        .aug = "phantom",
        .fg_fraction = 0,
        .random_fraction = 0,
        .class_balance = 0,
        .margin = 50,
        .val_cases = 1,
        .val_every = 50,
        .ema = 0,
        .brain_mask = 0,
        .largest_only = 0,
        .min_component = 0.1,
        .et_min_voxels = 32,
    },
};

int kd_recipe_count(void) { return (int)(sizeof recipes / sizeof *recipes); }

const kd_recipe *kd_recipe_at(int i) { return i >= 0 && i < kd_recipe_count() ? &recipes[i] : NULL; }

const kd_recipe *kd_recipe_default(void) { return &recipes[0]; }

const kd_recipe *kd_recipe_find(const char *name) {
    for (int i = 0; name && i < kd_recipe_count(); i++)
        if (!strcmp(name, recipes[i].name)) return &recipes[i];
    kd_fail(KD_ERR_INVALID_ARG, "unknown recipe '%s' (real, phantom)", name ? name : "");
    return NULL;
}
