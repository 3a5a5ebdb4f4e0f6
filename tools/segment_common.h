/* Shared by segment and annotate: options, model loading, the loop over cases. */
#ifndef KD_SEGMENT_COMMON_H
#define KD_SEGMENT_COMMON_H

#include "kdseg/data.h"
#include "kdseg/fs.h"
#include "kdseg/infer.h"
#include "kdseg/postproc.h"

#define KD_SEG_MAX_MODELS 16

typedef struct kd_seg_args {
    const char *models[KD_SEG_MAX_MODELS];
    int nmodels;
    const char *case_dir, *dataset, *out, *layout, *modalities, *labels;
    kd_infer_opts infer;
    kd_postproc_options post;
    int probabilities;  /* 0 none, 1 uint8, 2 float32 */
    int png, soft, skip_done, labeled_too;
    int whole; /* --tile whole: one pass over the whole volume, whatever the training patch */
    int brain_mask; /* --brain-mask 1: no tumour where every modality is 0 */
    /* post-processing options given on the command line (the others: the model's recipe) */
    int set_brain_mask, set_largest, set_min_component, set_et_min;
    /* segment --member-out DIR per --model: each model's own label map beside the
     * ensemble's, from the same passes (the ensemble averages them) */
    const char *member_out[KD_SEG_MAX_MODELS];
    int nmember_out;
} kd_seg_args;

int kd_seg_args_parse(const char *cmd, int argc, char **argv, kd_seg_args *a);
void kd_seg_args_free(kd_seg_args *a);

typedef struct kd_seg_run {
    kd_device *dev;
    kd_model *models[KD_SEG_MAX_MODELS];
    int nmodels;
    kd_dataset *ds;
    /* the options cases run with: the command line's, and without --tile, sliding windows
     * of the models' training patch (read from their checkpoints), as nnU-Net infers */
    kd_infer_opts infer;
    /* post-processing: the command line's, else the first model's recipe (kdseg/recipe.h) */
    kd_postproc_options post;
    int brain_mask;
    kd_outdir *outdirs[1 + KD_SEG_MAX_MODELS]; /* --out and each --member-out, held */
} kd_seg_run;

kd_status kd_seg_open(const kd_seg_args *a, const char *cmd, kd_seg_run *r);
void kd_seg_close(kd_seg_run *r);

enum {
    KD_SEG_WRITE_LABELS = 1, /* segment: CASE.nii.gz (+ probabilities, png) */
    KD_SEG_ANNOTATE = 2      /* annotate: unlabeled cases only, resumable, agreement CSV */
};
kd_status kd_seg_all(kd_seg_run *r, const kd_seg_args *a, int mode);

#endif
