/* kdseg: MRI data on the host. NIfTI volumes, dataset layouts, preprocessing,
 * patch sampling with augmentation, the background loader, the phantom cohort
 * and a small PNG writer.
 *
 * Axes. A NIfTI volume of dims (nx, ny, nz) is stored x fastest; kdseg speaks of
 * it as (D, H, W) = (nz, ny, nx), so a NIfTI array is a C array [nz][ny][nx] and
 * no transposition ever happens. All host arrays here are float32 NCDHW (or CDHW
 * for one case), W fastest. Region channels are always (WT, TC, ET). Image
 * channels follow the dataset's modality order (default t1, t1ce, t2, flair for
 * every layout, so one model fits all layouts).
 *
 * Errors: every call returns kd_status; kd_last_error() names the file and the
 * problem. Nothing here touches OpenCL. */
#ifndef KDSEG_DATA_H
#define KDSEG_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "kdseg/rng.h" /* kd_rng: the sampler and phantoms draw from it */
#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------- NIfTI -- */

/* NIfTI datatype codes accepted by the reader and writer. */
enum {
    KD_DT_UINT8 = 2,
    KD_DT_INT16 = 4,
    KD_DT_INT32 = 8,
    KD_DT_FLOAT32 = 16,
    KD_DT_FLOAT64 = 64,
    KD_DT_INT8 = 256,
    KD_DT_UINT16 = 512,
    KD_DT_UINT32 = 768
};

/* Limits a header must respect before anything is allocated. */
#define KD_NIFTI_MAX_DIM    4096        /* per spatial axis */
#define KD_NIFTI_MAX_T      64          /* 4th dimension (channels, regions) */
#define KD_NIFTI_MAX_VOXELS (1LL << 30) /* nx*ny*nz*nt */

/* A summary of the header, for printing and checks. */
typedef struct kd_nifti_info {
    int version;                 /* 1 or 2 */
    int ndim;                    /* dim[0]: 3 or 4 */
    int datatype;                /* NIfTI code (KD_DT_*) */
    const char *datatype_name;   /* "INT16", ... (static) */
    double pixdim[4];            /* spacing x, y, z (mm) and t */
    double scl_slope, scl_inter; /* as stored (NaN or 0 slope: no scaling) */
    int qform_code, sform_code;
    double affine[4][4]; /* voxel (i,j,k) -> world mm: sform if sform_code>0, else qform,
                            else diag(pixdim) */
    char orient[4];      /* axis codes of i, j, k as nibabel writes them ("LPS", "RAS") */
    int64_t file_bytes;  /* size on disk */
    char descrip[80];    /* the header's description ("kdseg": an image of kdseg phantom) */
} kd_nifti_info;

/* One volume read from (or to be written to) a NIfTI file. */
typedef struct kd_volume {
    int nx, ny, nz, nt; /* NIfTI dims; nt = 1 for a 3-D volume. (D,H,W) = (nz,ny,nx) */
    float *data;        /* (nt, nz, ny, nx) float32, scaling applied; NULL if header-only */
    char *path;         /* the file it came from (owned), or NULL */
    kd_nifti_info info;
    void *hdr; /* private: the libnifti header, for writing on the same grid */
} kd_volume;

/* Reads a .nii or .nii.gz (NIfTI-1 or -2, 3-D or 4-D, any datatype above) into
 * float32 with scl_slope/scl_inter applied. Refuses: missing/unreadable files,
 * non-NIfTI content, two-file (.hdr/.img) pairs, absurd sizes (before allocating),
 * truncated or corrupt gzip (CRC checked), NaN/Inf voxels. */
kd_status kd_nifti_read(const char *path, kd_volume **out);
/* The same checks on the header only; data stays NULL. */
kd_status kd_nifti_read_header(const char *path, kd_volume **out);
/* Frees the volume, its data, path and header. NULL ok. */
void kd_volume_free(kd_volume *v);

/* A header-only volume on a fresh grid: dims (nx, ny, nz), spacing in mm and an
 * affine (voxel -> world; NULL: LPS like BraTS, diag(-sx,-sy,sz) centred), written
 * as both qform and sform (code 1, scanner). */
kd_status kd_volume_create_geometry(int nx, int ny, int nz, const double spacing[3],
                                    const double affine[4][4], kd_volume **out);

/* Options of kd_nifti_write; zero-initialised means: same version as the geometry
 * source, no scaling. */
typedef struct kd_nifti_write_opts {
    int version;                 /* 0: same as geom, 1 or 2 */
    double scl_slope, scl_inter; /* stored as given; 0,0 writes slope 0 (none) */
} kd_nifti_write_opts;

/* What a written file holds, in its header. */
typedef struct kd_nifti_meta {
    int intent_code;         /* NIFTI_INTENT_*; 0: none */
    const char *intent_name; /* up to 15 characters; NULL: empty */
    const char *descrip;     /* up to 79 characters; NULL: "kdseg" */
} kd_nifti_meta;

/* Writes data (nt, nz, ny, nx) of NIfTI `datatype` on the grid of `geom` (its
 * dims nx,ny,nz, spacing, qform/sform), gzip-compressed when path ends in .gz.
 * Written to a temporary file in the same folder and renamed; never half-written.
 * Data is stored as given (no conversion); opts may be NULL. */
kd_status kd_nifti_write(const char *path, const kd_volume *geom, int nt, int datatype,
                         const void *data, const kd_nifti_write_opts *opts);
/* kd_nifti_write with the header's intent and description; meta may be NULL. */
kd_status kd_nifti_write_meta(const char *path, const kd_volume *geom, int nt, int datatype,
                              const void *data, const kd_nifti_write_opts *opts,
                              const kd_nifti_meta *meta);

/* ------------------------------------------------------------- Layouts -- */

typedef enum kd_layout {
    KD_LAYOUT_AUTO = 0,
    KD_LAYOUT_BRATS2018, /* CASE/CASE_{t1,t1ce,t2,flair}.nii.gz, CASE_seg: 1 NCR/NET, 2 ED, 4 ET */
    KD_LAYOUT_BRATS2023, /* CASE/CASE-{t1n,t1c,t2w,t2f}.nii.gz, CASE-seg: 1 NETC, 2 SNFH, 3 ET */
    KD_LAYOUT_MSD,       /* imagesTr/NAME.nii.gz 4-D (FLAIR,T1w,T1gd,T2w), labelsTr/NAME:
                            1 edema, 2 non-enhancing, 3 enhancing */
    KD_LAYOUT_NNUNET     /* nnU-Net v2 raw: imagesTr/CASE_0000.nii.gz.. (one 3-D file per
                            channel), labelsTr/CASE.nii.gz, imagesTs/, labelsTs/;
                            dataset.json's channel_names say which modality each channel
                            is, its labels which values are which BraTS regions (plain or
                            region-based, regions_class_order). Also a flat folder of
                            CASE_XXXX files (dataset.json there or in its parent). */
} kd_layout;

/* "auto", "brats2018", "brats2023", "msd", "nnunet" */
const char *kd_layout_name(kd_layout l);
/* "brats2018" (also "brats2019", "brats2020", "brats2021"), "brats2023", "msd" (also
 * "decathlon"), "nnunet" (also "nnunetv2"), "auto". */
kd_status kd_layout_parse(const char *s, kd_layout *out);

/* Modalities (canonical ids). Names accepted, in any case and with spaces or
 * punctuation ignored: t1|t1n|t1w, t1ce|t1c|t1gd|t1post, t2|t2w, flair|t2f|t2flair. */
enum { KD_MOD_T1 = 0, KD_MOD_T1CE = 1, KD_MOD_T2 = 2, KD_MOD_FLAIR = 3, KD_MAX_MODALITIES = 4 };
const char *kd_modality_name(int mod); /* "t1", "t1ce", "t2", "flair" */

/* Label conventions: what the values of a label map mean. The one enum for every
 * label map in kdseg (dataset files, annotations, predictions, evaluation).
 *   2019 (BraTS 2018-2021): 1 necrosis/non-enhancing core, 2 edema, 4 enhancing
 *   2023 (BraTS 2023+):     1 NETC, 2 SNFH, 3 ET
 *   MSD (Decathlon Task01): 1 edema, 2 non-enhancing, 3 enhancing
 * KD_LABELS_AUTO is accepted only where a call says so. */
typedef enum kd_label_convention {
    KD_LABELS_2019 = 0,
    KD_LABELS_2023 = 1,
    KD_LABELS_MSD = 2,
    KD_LABELS_AUTO = 3
} kd_label_convention;

/* "2019", "2023", "msd", "auto". */
const char *kd_label_convention_name(kd_label_convention c);
/* Parses those names (case-insensitive); KD_ERR_INVALID_ARG naming the text otherwise. */
kd_status kd_label_convention_parse(const char *s, kd_label_convention *out);
/* The convention of a layout's label files (AUTO and BraTS 2018: 2019; nnU-Net: MSD's,
 * as nnU-Net's BraTS conversions write them; a dataset.json's own values are in
 * kd_dataset_label_table). */
kd_label_convention kd_layout_labels(kd_layout l);

/* A label value of convention c to regions, one voxel at a time: bit 0 WT, bit 1 TC,
 * bit 2 ET; -1 for a value outside the convention's set (every nonzero value for AUTO). */
int kd_label_regions(kd_label_convention c, int label);
/* Region probabilities (3, n) (WT, TC, ET) to labels of convention c (not AUTO),
 * threshold 0.5, nested as WT ⊇ TC ⊇ ET: ET -> enhancing, else TC -> core, else WT ->
 * edema. */
void kd_regions_to_labels(kd_label_convention c, const float *regions, size_t n, uint8_t *labels);

/* What the values of a dataset's label maps mean, value by value. */
typedef struct kd_label_table {
    int8_t regions[256]; /* region bits of each value (1 WT, 2 TC, 4 ET); -1: not a label */
    uint8_t edema;       /* the value written for WT alone (edema) */
    uint8_t core;        /* for WT and TC (necrotic / non-enhancing core) */
    uint8_t enhancing;   /* for WT, TC and ET */
} kd_label_table;

/* The table of a BraTS or MSD layout's labels (AUTO: BraTS 2018). */
void kd_label_table_of_layout(kd_layout l, kd_label_table *t);
/* The label table of the nnU-Net dataset at dir, or of the one dir is an images or
 * labels folder of: *found 1 and *t from its dataset.json ("labels",
 * "regions_class_order"; a dataset.json with "channel_names" marks nnU-Net v2), else
 * *found 0. Each label name maps to a BraTS class (edema or SNFH, non-enhancing or
 * necrotic core, enhancing tumour) or, region-based, to a region (whole tumour, tumour
 * core, enhancing tumour) with its values. KD_ERR_FORMAT naming the file and the label
 * when a name is none of those, the regions do not nest, or a class has no value. */
kd_status kd_nnunet_find_labels(const char *dir, kd_label_table *t, int *found);
/* Labels in the 2019 values (1 core, 2 edema, 4 enhancing) to the table's, in place. */
void kd_label_table_from_2019(const kd_label_table *t, uint8_t *labels, size_t n);
/* The values of the table, "0, 1, 2, 3", into buf[n]. */
void kd_label_table_describe(const kd_label_table *t, char *buf, size_t n);

/* ------------------------------------------------------------- Dataset -- */

typedef struct kd_dataset kd_dataset;

typedef struct kd_dataset_opts {
    kd_layout layout;        /* KD_LAYOUT_AUTO: detect */
    const char *annotations; /* folder of labels for unlabeled cases, or NULL. A case NAME
                                takes NAME.nii.gz (or NAME.nii): a 3-D label map in the
                                layout's labels, or a 4-D map of 3 volumes (WT, TC, ET):
                                uint8 probabilities v/255 or float32 in [0, 1]. A case's
                                own label file wins over an annotation. */
    const char *modalities;  /* "t1ce,flair": subset and order; NULL: t1,t1ce,t2,flair */
    const char *cache_dir;   /* preprocessed-case cache folder (created), or NULL */
    int cache_float32;       /* cache images as float32 (exact) instead of float16 */
    const char *channels;    /* nnU-Net without dataset.json: the modality of each file
                                channel _0000, _0001, ... ("t1,t1ce,t2,flair"; "-" for one
                                to ignore). With a dataset.json it must agree with its
                                channel_names. NULL: from dataset.json */
} kd_dataset_opts;

/* Opens a dataset folder: finds the cases (BraTS layouts: case folders, also one level
 * below, e.g. HGG/ LGG/; MSD: imagesTr/ and imagesTs/; nnU-Net: imagesTr/ and imagesTs/,
 * or one flat folder of CASE_XXXX files), sorted by name, each once (see
 * kd_dataset_case_id). Checks that each case has every selected modality (nnU-Net:
 * every channel dataset.json names, no other). Reads no voxels. opts may be NULL. */
kd_status kd_dataset_open(const char *dir, const kd_dataset_opts *opts, kd_dataset **out);
/* A one-case dataset: a BraTS case folder, one MSD image file (labels looked up in
 * ../labelsTr), or one channel file CASE_XXXX.nii.gz of an nnU-Net case (its other
 * channels beside it, labels in the matching labels folder). */
kd_status kd_dataset_open_case(const char *path, const kd_dataset_opts *opts, kd_dataset **out);
void kd_dataset_free(kd_dataset *ds); /* NULL ok */

kd_layout kd_dataset_layout(const kd_dataset *ds); /* as detected or given */
int kd_dataset_count(const kd_dataset *ds);        /* cases */
int kd_dataset_channels(const kd_dataset *ds);         /* C, selected modalities */
int kd_dataset_modality(const kd_dataset *ds, int ch); /* canonical id of channel ch */
const char *kd_dataset_case_name(const kd_dataset *ds, int i);
/* 0 unlabeled, 1 own label file, 2 label from the annotations folder. */
int kd_dataset_case_labeled(const kd_dataset *ds, int i);
int kd_dataset_labeled_count(const kd_dataset *ds); /* cases with their own label file */
/* The file of channel ch (for MSD the 4-D file; *volume is the index in it, else 0). */
const char *kd_dataset_case_image(const kd_dataset *ds, int i, int ch, int *volume);
/* The label (or annotation) file, or NULL. */
const char *kd_dataset_case_label(const kd_dataset *ds, int i);
/* What the values of the dataset's label files mean: its layout's convention, or for an
 * nnU-Net dataset what its dataset.json says (borrowed). */
const kd_label_table *kd_dataset_label_table(const kd_dataset *ds);
/* The case's identity: the real path of its first image file (links resolved). A
 * dataset holds each case once: one reached again through a link to a folder or file
 * is skipped with a note, and two different cases of one name are an error, as are
 * two files for one image (CASE_t1.nii.gz and CASE_t1.nii). */
const char *kd_dataset_case_id(const kd_dataset *ds, int i);
/* KD_ERR_INVALID_ARG naming both when a case of a (indices ia[0..na)) is also a case of
 * b (indices ib[0..nb)): the same index of one dataset, or the same real path (the same
 * files opened through two folders). what_a and what_b name the roles ("validation",
 * "training"). For splits that must not share a case. */
kd_status kd_dataset_check_disjoint(const kd_dataset *a, const int *ia, int na, const char *what_a,
                                    const kd_dataset *b, const int *ib, int nb, const char *what_b);

/* --------------------------------------------------------------- Convert -- */

typedef struct kd_convert_opts {
    kd_layout to; /* the target layout (not AUTO) */
    /* called after each case (NULL: none); done of total */
    void (*progress)(void *user, int done, int total, const char *case_name);
    void *user;
} kd_convert_opts;

/* Writes every case of ds (opened with all four modalities, t1,t1ce,t2,flair) under
 * folder as a dataset in layout o->to, with the same case names:
 *   brats2018  CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz     labels 1 core, 2 edema, 4 ET
 *   brats2023  CASE/CASE-{t1n,t1c,t2w,t2f,seg}.nii.gz       labels 1 core, 2 edema, 3 ET
 *   msd        images{Tr,Ts}/CASE.nii.gz 4-D (FLAIR, T1w, T1gd, T2w), labels{Tr,Ts}/,
 *              dataset.json                                labels 1 edema, 2 core, 3 ET
 *   nnunet     images{Tr,Ts}/CASE_000{0,1,2,3}.nii.gz (T1, T1ce, T2, FLAIR), labels{Tr,Ts}/,
 *              dataset.json region-based as nnU-Net's BraTS conversion, labels 1 edema,
 *              2 core, 3 ET
 * Images keep their voxels, datatype, scaling and geometry: copied byte for byte
 * between one-file-per-modality layouts (a .nii gzip-compressed), split from or joined
 * into the Decathlon's 4-D files otherwise (float64 as float32, mixed datatypes as
 * float32). Labels are translated through the source's label table (an nnU-Net
 * dataset.json's included) to the target's values. Cases from imagesTs/ and cases
 * without labels go to imagesTs/. folder must not exist or be an empty folder; the
 * dataset is written under a temporary name next to it and renamed when whole, so a
 * failed or killed run leaves no partial dataset. */
kd_status kd_dataset_convert(const kd_dataset *ds, const char *folder, const kd_convert_opts *o);

/* ------------------------------------------------------- Preprocessing -- */

/* One case, preprocessed as the paper's code does: cropped to the bounding box of
 * voxels nonzero in any modality, each modality z-scored over its nonzero voxels
 * (zeros stay zero), then zero-padded to a multiple of 16 per axis (pad_lo before,
 * the rest after). The "preprocessed grid" is (d, h, w) = padded crop box. */
typedef struct kd_case {
    char name[256];
    int channels;               /* C */
    int d, h, w;                /* preprocessed grid, each a multiple of 16 */
    float *image;               /* (C, d, h, w) */
    float *target;              /* (3, d, h, w) WT, TC, ET in [0, 1], NULL if unlabeled */
    int labeled;                /* as kd_dataset_case_labeled */
    int orig[3];                /* original grid (D, H, W) = (nz, ny, nx) */
    int crop_lo[3], crop_hi[3]; /* crop box in the original grid, [lo, hi) per D,H,W */
    int pad_lo[3];              /* crop box starts at pad_lo in the preprocessed grid */
    float mean[KD_MAX_MODALITIES], std[KD_MAX_MODALITIES];        /* z-score stats (raw units) */
    float raw_min[KD_MAX_MODALITIES], raw_max[KD_MAX_MODALITIES]; /* whole volume */
    int64_t nonzero[KD_MAX_MODALITIES];                           /* brain voxels per modality */
    int tumour_lo[3], tumour_hi[3]; /* bbox of WT > 0 on the preprocessed grid; empty
                                       (lo >= hi) when none or unlabeled */
    int from_cache;                 /* 1 when read from the preprocessed-case cache */
    kd_volume *geom;                /* header-only volume of the first modality's file */
} kd_case;

/* Loads case i preprocessed (from the cache when valid; writes the cache entry when
 * the dataset has a cache_dir). Checks that modalities agree in dims and affine,
 * label values are in the layout's set, voxels are finite. */
kd_status kd_case_load(const kd_dataset *ds, int i, kd_case **out);
void kd_case_free(kd_case *c); /* the case and its arrays; NULL ok */

/* Original grid (n, D, H, W) -> preprocessed grid (n, d, h, w): crop, zero pad. */
void kd_case_crop(const kd_case *c, const float *src, int n, float *dst);
/* Preprocessed grid (n, d, h, w) -> original grid (n, D, H, W): the crop box is
 * copied back, everything outside it set to `outside`. Undoes kd_case_crop exactly
 * inside the crop box. */
void kd_case_uncrop(const kd_case *c, const float *src, int n, float outside, float *dst);

/* The brain on the case's original grid (D, H, W) = c->orig: 1 where any modality is
 * nonzero (skull-stripped scans are exactly 0 outside the brain), else 0. */
void kd_case_brain_mask(const kd_case *c, uint8_t *mask);

/* Writes a uint8 label map (D, H, W) on the case's original grid and geometry. */
kd_status kd_case_write_labels(const kd_case *c, const char *path, const uint8_t *labels);
/* Writes region probabilities (3, D, H, W) on the original grid as a 4-D map whose
 * volumes are p(WT), p(TC), p(ET) in that order: float32 in [0, 1], or, when quantise
 * is nonzero, uint8 round(p*255) with scl_slope 1/255 (readers that apply the scaling
 * see [0, 1]). The header says so: intent_code NIFTI_INTENT_ESTIMATE, intent_name
 * "p WT,TC,ET", and descrip. */
kd_status kd_case_write_probs(const kd_case *c, const char *path, const float *probs, int quantise);

/* ------------------------------------------------- Sampling, augmenting -- */

/* Augmentation of training patches. Steps added after the demo's set (elastic, inverted
 * gamma, blur, contrast, low resolution) draw no random numbers when their probability is
 * 0, so the demo's streams are the same with or without them. */
typedef struct kd_augment_opts {
    float p_flip;                      /* per axis */
    float p_transpose;                 /* swap the in-plane axes H and W */
    float p_scale, scale_lo, scale_hi; /* zoom factor(s) in [lo, hi] */
    int scale_isotropic;               /* one factor for all axes (nnU-Net); 0: one per axis */
    float p_rotate, rotate_deg;        /* about each axis, uniform in +-rotate_deg */
    /* elastic deformation: displacements normal(0, elastic_sigma) voxels per axis at control
     * points every elastic_grid patch voxels, trilinear in between */
    float p_elastic, elastic_grid, elastic_sigma;
    float p_intensity, int_scale_lo, int_scale_hi, int_shift_lo, int_shift_hi; /* per channel */
    float p_noise, noise_sigma;        /* sigma uniform in [0, noise_sigma], per sample */
    float p_gamma, gamma_lo, gamma_hi; /* per channel, on the patch's brain range */
    int gamma_retain_stats;            /* gamma keeps each channel's brain mean and std */
    float p_gamma_inv;                 /* gamma of the inverted channel (1 - x), per sample */
    float p_blur, blur_lo, blur_hi;    /* Gaussian blur, sigma in [lo, hi] voxels; per sample,
                                          then each channel with probability 0.5 */
    float p_contrast, contrast_lo, contrast_hi; /* per channel: (x - mean) * f + mean, kept in
                                                   the channel's range */
    float p_lowres, lowres_lo, lowres_hi; /* low resolution: nearest down to zoom in [lo, hi],
                                             trilinear back up; per sample, then each channel
                                             with probability 0.5 */
} kd_augment_opts;

/* Defaults: flips 0.5, transpose 0.5, scale 0.5 in [0.7, 1.3], rotate 0.2 +-10 deg,
 * intensity 1.0 (x[0.9,1.1], +[-0.2,0.2]), noise 0.15 (0.1), gamma 0.15 [0.7, 1.5]. */
void kd_augment_opts_default(kd_augment_opts *o);
/* Every probability zero: patches are plain crops. */
void kd_augment_opts_none(kd_augment_opts *o);
/* Named sets and edits: "NAME[:key=value...]" with NAME one of
 *   real     what real-MRI segmenters use (nnU-Net's set, elastic off): flips 0.5 per axis,
 *            rotation 0.2 +-30 deg, isotropic scale 0.2 in [0.7, 1.4], noise 0.1 (0.1),
 *            blur 0.2 sigma [0.5, 1], brightness 0.15 x[0.75, 1.25], contrast 0.15
 *            [0.75, 1.25], low resolution 0.25 zoom [0.5, 1], gamma 0.3 [0.7, 1.5] and
 *            inverted gamma 0.1, both keeping the channel's statistics;
 *   phantom  kd_augment_opts_default (the demo's);
 *   none     no augmentation;
 * and keys the field names without "p_" for probabilities (flip, transpose, scale, rotate,
 * elastic, intensity, noise, gamma, gamma_inv, blur, contrast, lowres) and the ranges by
 * their field names (scale_lo, rotate_deg, elastic_sigma, blur_hi, ...), e.g.
 * "real:elastic=0.2:lowres=0". Unknown names, keys or values out of range are
 * KD_ERR_INVALID_ARG naming them. */
kd_status kd_augment_opts_parse(const char *spec, kd_augment_opts *o);

typedef struct kd_sampler_opts {
    int batch;             /* B */
    int patch[3];          /* P (D, H, W) */
    int margin;            /* tumour bbox margin for the centre, voxels (paper: 50) */
    float fg_fraction;     /* share of patches centred on a random tumour voxel */
    int class_balance;     /* those centres: first a region chosen uniformly among the ones
                              the case has (edema, non-enhancing core, enhancing tumour),
                              then one of its voxels (0: any tumour voxel) */
    float random_fraction; /* share of patches centred anywhere in the volume */
    kd_augment_opts aug;
    uint64_t seed;
    int rank, ranks;         /* data-parallel shard: with ranks > 1, each step's batch is
                                rank's share of a global batch of ranks * batch samples
                                (sample b is global sample rank * batch + b, with its own
                                random stream), so N ranks of batch B draw exactly the
                                patches one process of batch N * B draws; ranks 0 or 1: the
                                whole batch */
    int max_cases_in_memory; /* preprocessed cases kept (LRU); 0: all */
    int allow_unlabeled;     /* accept unlabeled cases: their patches are centred at random
                                and their targets are zero (online distillation replaces
                                them with the teachers' predictions) */
} kd_sampler_opts;

/* batch 2, patch 128^3, margin 50, fractions 0, default augmentation, seed 1. */
void kd_sampler_opts_default(kd_sampler_opts *o);

typedef struct kd_sampler kd_sampler;

/* Where a sample came from (for tests and logs). */
typedef struct kd_patch_info {
    int source;    /* index in the order cases were added */
    int centre[3]; /* patch centre on the case's preprocessed grid (before augmentation) */
    int kind;      /* 0 tumour bbox + margin, 1 foreground voxel, 2 random */
} kd_patch_info;

/* A sampler with no cases yet (kd_sampler_add); owned by the caller. */
kd_status kd_sampler_create(const kd_sampler_opts *o, kd_sampler **out);
/* Adds cases of a dataset (borrowed: must outlive the sampler). idx NULL: all labeled
 * cases (all cases with allow_unlabeled). Unlabeled cases are refused unless the options
 * allow them. */
kd_status kd_sampler_add(kd_sampler *s, const kd_dataset *ds, const int *idx, int n);
int kd_sampler_count(const kd_sampler *s); /* cases added */
/* The batch of `step`: images (B, C, P, P, P) and targets (B, 3, P, P, P), float32
 * NCDHW; info (B entries) may be NULL. Cases are visited in a fresh permutation per
 * epoch. A pure function of (seed, rank, ranks, step): safe to call from several threads. */
kd_status kd_sampler_batch(kd_sampler *s, int64_t step, float *images, float *targets,
                           kd_patch_info *info);
size_t kd_sampler_image_floats(const kd_sampler *s);  /* B*C*P^3 */
size_t kd_sampler_target_floats(const kd_sampler *s); /* B*3*P^3 */
void kd_sampler_free(kd_sampler *s);

/* ------------------------------------------------------ Background loader -- */

typedef struct kd_loader kd_loader;

/* Starts `threads` workers (>= 1) that prepare batches first_step, first_step+1, ...
 * with kd_sampler_batch into a bounded queue of `depth` batches (>= 1). The sampler
 * is borrowed. */
kd_status kd_loader_create(kd_sampler *s, int64_t first_step, int threads, int depth,
                           kd_loader **out);
/* Waits for the next batch in step order and copies it out (sizes as the sampler).
 * A worker's error is returned here as its kd_status and message, once; the loader
 * then stops. *step may be NULL. */
kd_status kd_loader_next(kd_loader *l, int64_t *step, float *images, float *targets);
/* Stops the workers and frees. NULL ok. */
void kd_loader_free(kd_loader *l);

/* ------------------------------------------------------------- Phantom -- */

typedef struct kd_phantom_opts {
    int cases;
    int size[3]; /* D, H, W */
    uint64_t seed;
    int unlabeled;    /* write no label files */
    kd_layout layout; /* BRATS2018 (default when AUTO), BRATS2023 or MSD */
    int first_index;  /* case numbering starts here (to add cases to a cohort) */
} kd_phantom_opts;

/* One phantom case in memory: images (4, D, H, W) as int16 values in the canonical
 * modality order (t1, t1ce, t2, flair) and labels (D, H, W) in BraTS 2018 values
 * (0, 1, 2, 4). Deterministic in (seed, index). */
kd_status kd_phantom_generate(const int size[3], uint64_t seed, int index, int16_t *images,
                              uint8_t *labels);
/* Writes a cohort in a real layout under dir. A new cohort is written whole under a
 * temporary name next to dir (DIR.tmp-PID-N) and renamed to dir when complete, so a
 * killed run leaves no partial cohort under the final name (and the next call removes
 * such a stale temporary folder). Into an existing dir (adding cases with first_index)
 * each case is written under a temporary name and renamed when whole. */
kd_status kd_phantom_write_cohort(const char *dir, const kd_phantom_opts *o);
/* Checks that dir holds exactly the cohort o describes: every file of the cases
 * first_index .. first_index + cases - 1, on the o->size grid, and no other case.
 * KD_ERR_FORMAT naming the folder and what is missing or different otherwise. */
kd_status kd_phantom_check_cohort(const char *dir, const kd_phantom_opts *o);

/* ----------------------------------------------------------------- PNG -- */

/* Writes an 8-bit PNG (channels 1 grey, 3 RGB, 4 RGBA), rows top to bottom, via a
 * temporary file and rename. */
kd_status kd_png_write(const char *path, int width, int height, int channels,
                       const uint8_t *pixels);

#ifdef __cplusplus
}
#endif
#endif
