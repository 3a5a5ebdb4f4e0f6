/* The dataset structure, shared by dataset.c and preprocess.c. */
#ifndef KD_DATASET_INTERNAL_H
#define KD_DATASET_INTERNAL_H

#include "kdseg/data.h"

typedef struct kd_ds_case {
    char *name;
    char *images[KD_MAX_MODALITIES]; /* per selected channel */
    int volume[KD_MAX_MODALITIES];   /* index in a 4-D file (MSD), else 0 */
    char *label;                     /* label or annotation file, or NULL */
    int labeled;                     /* 0, 1 own, 2 annotation */
    char *id;                        /* real path of images[0]: the case's identity */
} kd_ds_case;

struct kd_dataset {
    char *dir;
    kd_layout layout;
    int forced;
    int nch;
    int mod[KD_MAX_MODALITIES];
    kd_ds_case *cases;
    int n, cap;
    char *annotations;
    char *cache_dir;
    int cache_f32;
    char **scanned; /* real paths of the folders scanned for cases */
    int nscanned;
};

/* "0, 1, 2, 4" */
const char *kd_layout_label_set(kd_layout l);

#endif
