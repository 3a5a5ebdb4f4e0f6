/* The dataset structure and the scanning helpers, shared by dataset.c, nnunet.c,
 * convert.c, preprocess.c and cache.c. */
#ifndef KD_DATASET_INTERNAL_H
#define KD_DATASET_INTERNAL_H

#include "kdseg/data.h"
#include "kdseg/fs.h"

typedef struct kd_ds_case {
    char *name;
    char *images[KD_MAX_MODALITIES]; /* per selected channel */
    int volume[KD_MAX_MODALITIES];   /* index in a 4-D file (MSD), else 0 */
    char *label;                     /* label or annotation file, or NULL */
    int labeled;                     /* 0, 1 own, 2 annotation */
    char *id;                        /* real path of images[0]: the case's identity */
    int test;                        /* found in imagesTs/ (MSD, nnU-Net) */
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
    char *channels;          /* nnU-Net: the modality of each file channel, as given */
    kd_label_table labels;   /* what the label files' values mean */
    char label_source[KD_PATH_MAX]; /* where that comes from, for messages */
};

/* A modality name (any case; spaces and punctuation ignored: "T1-Gd") to its canonical
 * id, -1 for none of the four. */
int kd_modality_parse(const char *s);

/* base.nii.gz or base.nii, whichever exists, into *out (owned; NULL: neither). Both is
 * KD_ERR_FORMAT naming the two. */
kd_status kd_ds_find_nifti(const char *base, char **out);
int kd_ds_has_nifti(const char *base);
/* Sorted names of a folder's entries, hidden ones left out. */
kd_status kd_ds_list_dir(const char *dir, char ***names, int *n);
void kd_ds_free_names(char **names, int n);
/* Cuts ".nii.gz" or ".nii" off name: 1, else 0 (name unchanged). */
int kd_ds_strip_nifti_ext(char *name);
void kd_ds_case_clear(kd_ds_case *c);
/* Adds a case (see kd_dataset_case_id); takes c's contents either way. */
kd_status kd_ds_add_case(kd_dataset *ds, kd_ds_case *c);
/* The label of a case without its own, from the annotations folder. */
kd_status kd_ds_find_annotation(const kd_dataset *ds, kd_ds_case *c);
/* The end of reading one case c (s: the status so far): its label from labels_dir/NAME
 * (.nii.gz or .nii; labels_dir NULL: c->label as found), else from the annotations
 * folder, then added to ds; on any error c is cleared and the error returned. */
kd_status kd_ds_finish_case(kd_dataset *ds, kd_ds_case *c, kd_status s, const char *labels_dir);
/* 1 the first time a folder is scanned, 0 when its real path was (a note), -1 no memory. */
int kd_ds_first_scan(kd_dataset *ds, const char *dir);

/* nnU-Net (nnunet.c). The cases of an nnU-Net raw dataset folder (imagesTr/, labelsTr/,
 * imagesTs/, labelsTs/, dataset.json) or, flat, of one folder of CASE_XXXX files
 * (dataset.json there or in its parent); only_case: just that case (NULL: all). Sets
 * ds->labels from dataset.json. */
kd_status kd_nnunet_scan(kd_dataset *ds, const char *dir, int flat, const char *only_case);
/* Whether dir looks like an nnU-Net folder: 1 the dataset root (imagesTr/ or imagesTs/
 * with CASE_0000 files of one volume each, or a dataset.json with channel_names), 2 a
 * flat folder of CASE_0000 files, 0 neither; KD_ERR_FORMAT for a folder that mixes
 * nnU-Net channel files with Decathlon 4-D files. */
kd_status kd_nnunet_detect(const char *dir, int *kind);
/* "CASE_0003.nii.gz": 1 with the case name and channel, 0 a NIfTI name without the
 * channel suffix, -1 not a NIfTI name. */
int kd_nnunet_parse_name(const char *file, char *case_name, size_t n, int *channel);
/* The label table of a dataset.json's text (the JSON fuzzer's entry). */
kd_status kd_nnunet_labels_parse(const char *text, size_t len, kd_label_table *t);
/* A readable NIfTI file of one 3-D volume (nnU-Net's), not a Decathlon 4-D file. */
int kd_ds_one_volume(const char *path);

/* Writes dir/dataset.json of an MSD or nnU-Net dataset (convert.c, phantom.c) from
 * what dir holds: the cases of imagesTr/ (labeled when labelsTr/ has theirs) and of
 * imagesTs/. Written to a temporary file and renamed. */
kd_status kd_layout_write_json(const char *dir, kd_layout l, const char *name);

#endif
