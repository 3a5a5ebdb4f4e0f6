/* Dataset folders in the BraTS 2018-21, BraTS 2023+, MSD Task01 and nnU-Net layouts:
 * finding the cases, their modality files and labels; label <-> region conversion. (The
 * nnU-Net specifics, dataset.json included, are in nnunet.c.) */
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data_internal.h"
#include "dataset_internal.h"

/* ------------------------------------------------------------ names ---- */

const char *kd_layout_name(kd_layout l) {
    switch (l) {
    case KD_LAYOUT_AUTO:
        return "auto";
    case KD_LAYOUT_BRATS2018:
        return "brats2018";
    case KD_LAYOUT_BRATS2023:
        return "brats2023";
    case KD_LAYOUT_MSD:
        return "msd";
    case KD_LAYOUT_NNUNET:
        return "nnunet";
    }
    return "?";
}

kd_status kd_layout_parse(const char *s, kd_layout *out) {
    static const struct {
        const char *name;
        kd_layout l;
    } t[] = {{"auto", KD_LAYOUT_AUTO},
             {"brats2018", KD_LAYOUT_BRATS2018},
             {"brats2019", KD_LAYOUT_BRATS2018},
             {"brats2020", KD_LAYOUT_BRATS2018},
             {"brats2021", KD_LAYOUT_BRATS2018},
             {"brats2023", KD_LAYOUT_BRATS2023},
             {"msd", KD_LAYOUT_MSD},
             {"decathlon", KD_LAYOUT_MSD},
             {"nnunet", KD_LAYOUT_NNUNET},
             {"nnunetv2", KD_LAYOUT_NNUNET}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (s && !strcasecmp(s, t[i].name)) {
            *out = t[i].l;
            return KD_OK;
        }
    return kd_fail(KD_ERR_INVALID_ARG,
                   "unknown layout '%s' (brats2018|brats2019|brats2023|msd|nnunet|auto)", s ? s : "");
}

const char *kd_modality_name(int mod) {
    static const char *n[] = {"t1", "t1ce", "t2", "flair"};
    return mod >= 0 && mod < KD_MAX_MODALITIES ? n[mod] : "?";
}

int kd_modality_parse(const char *s) {
    /* compared without case, spaces or punctuation: "T1-Gd", "t1 ce", "T2-FLAIR" */
    char k[32];
    size_t n = 0;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s)) continue;
        if (n + 1 == sizeof k) return -1;
        k[n++] = (char)tolower((unsigned char)*s);
    }
    k[n] = 0;
    static const struct {
        const char *name;
        int mod;
    } t[] = {{"t1", KD_MOD_T1},        {"t1n", KD_MOD_T1},         {"t1w", KD_MOD_T1},
             {"t1native", KD_MOD_T1},  {"t1pre", KD_MOD_T1},       {"t1ce", KD_MOD_T1CE},
             {"t1c", KD_MOD_T1CE},     {"t1gd", KD_MOD_T1CE},      {"t1wce", KD_MOD_T1CE},
             {"t1post", KD_MOD_T1CE},  {"t1contrast", KD_MOD_T1CE}, {"t1gad", KD_MOD_T1CE},
             {"t2", KD_MOD_T2},        {"t2w", KD_MOD_T2},         {"flair", KD_MOD_FLAIR},
             {"t2f", KD_MOD_FLAIR},    {"t2flair", KD_MOD_FLAIR},  {"t2wflair", KD_MOD_FLAIR}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(k, t[i].name)) return t[i].mod;
    return -1;
}

/* File suffix of a modality in a BraTS layout ("_t1ce", "-t1c"), and of the labels. */
static const char *brats_suffix(kd_layout l, int mod) {
    static const char *s18[] = {"_t1", "_t1ce", "_t2", "_flair", "_seg"};
    static const char *s23[] = {"-t1n", "-t1c", "-t2w", "-t2f", "-seg"};
    return l == KD_LAYOUT_BRATS2018 ? s18[mod] : s23[mod];
}
#define KD_MOD_SEG 4

/* MSD Task01 channel order: FLAIR, T1w, T1gd, T2w. */
static int msd_volume(int mod) {
    static const int v[] = {1, 2, 3, 0};
    return v[mod];
}

const char *kd_label_convention_name(kd_label_convention c) {
    switch (c) {
    case KD_LABELS_2019:
        return "2019";
    case KD_LABELS_2023:
        return "2023";
    case KD_LABELS_MSD:
        return "msd";
    case KD_LABELS_AUTO:
        return "auto";
    }
    return "?";
}

kd_status kd_label_convention_parse(const char *s, kd_label_convention *out) {
    static const kd_label_convention all[] = {KD_LABELS_2019, KD_LABELS_2023, KD_LABELS_MSD,
                                              KD_LABELS_AUTO};
    for (int i = 0; i < 4; i++)
        if (s && !strcasecmp(s, kd_label_convention_name(all[i]))) {
            *out = all[i];
            return KD_OK;
        }
    return kd_fail(KD_ERR_INVALID_ARG, "label convention '%s': expected 2019, 2023, msd or auto",
                   s ? s : "");
}

kd_label_convention kd_layout_labels(kd_layout l) {
    /* nnU-Net without a dataset.json: nnU-Net's own BraTS conversions (MSD's values) */
    if (l == KD_LAYOUT_MSD || l == KD_LAYOUT_NNUNET) return KD_LABELS_MSD;
    return l == KD_LAYOUT_BRATS2023 ? KD_LABELS_2023 : KD_LABELS_2019;
}

int kd_label_regions(kd_label_convention c, int label) {
    if (label == 0) return 0;
    switch (c) {
    case KD_LABELS_MSD:
        if (label == 1) return 1;     /* edema: WT */
        if (label == 2) return 1 | 2; /* non-enhancing: WT, TC */
        if (label == 3) return 1 | 2 | 4;
        return -1;
    case KD_LABELS_2023:
        if (label == 1) return 1 | 2; /* NETC */
        if (label == 2) return 1;     /* SNFH */
        if (label == 3) return 1 | 2 | 4;
        return -1;
    case KD_LABELS_2019:
        if (label == 1) return 1 | 2; /* NCR/NET */
        if (label == 2) return 1;     /* edema */
        if (label == 4) return 1 | 2 | 4;
        return -1;
    case KD_LABELS_AUTO:
        break;
    }
    return -1;
}

void kd_regions_to_labels(kd_label_convention c, const float *regions, size_t n, uint8_t *labels) {
    uint8_t ed = 2, core = 1, et = 4;
    if (c == KD_LABELS_2023) et = 3;
    if (c == KD_LABELS_MSD) {
        ed = 1;
        core = 2;
        et = 3;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t v = 0;
        if (regions[2 * n + i] > 0.5f)
            v = et;
        else if (regions[n + i] > 0.5f)
            v = core;
        else if (regions[i] > 0.5f)
            v = ed;
        labels[i] = v;
    }
}

void kd_label_table_of_layout(kd_layout l, kd_label_table *t) {
    for (int v = 0; v < 256; v++)
        t->regions[v] = (int8_t)kd_label_regions(kd_layout_labels(l), v);
    const float r[3][3] = {{1, 0, 0}, {1, 1, 0}, {1, 1, 1}};
    uint8_t out[3];
    for (int k = 0; k < 3; k++) {
        float reg[3] = {r[k][0], r[k][1], r[k][2]};
        kd_regions_to_labels(kd_layout_labels(l), reg, 1, &out[k]);
    }
    t->edema = out[0];
    t->core = out[1];
    t->enhancing = out[2];
}

void kd_label_table_from_2019(const kd_label_table *t, uint8_t *labels, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t v = labels[i];
        labels[i] = v == 2 ? t->edema : v == 1 ? t->core : v == 4 ? t->enhancing : 0;
    }
}

void kd_label_table_describe(const kd_label_table *t, char *buf, size_t n) {
    size_t len = 0;
    if (n) buf[0] = 0;
    for (int v = 0; v < 256 && len + 8 < n; v++)
        if (t->regions[v] >= 0) {
            snprintf(buf + len, n - len, "%s%d", len ? ", " : "", v);
            len = strlen(buf);
        }
}

/* ------------------------------------------------------------ files ---- */

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

/* base + ".nii.gz" or base + ".nii", whichever exists, in *out (NULL: neither). Both is
 * an error naming the two: which one is meant cannot be guessed. */
kd_status kd_ds_find_nifti(const char *base, char **out) {
    char gz[KD_PATH_MAX], raw[KD_PATH_MAX];
    *out = NULL;
    kd_status s = kd_path_printf(gz, sizeof gz, "%s.nii.gz", base);
    if (!s) s = kd_path_printf(raw, sizeof raw, "%s.nii", base);
    if (s) return s;
    int a = kd_data_is_file(gz), b = kd_data_is_file(raw);
    if (a && b)
        return kd_fail(KD_ERR_FORMAT, "two files for one image: %s and %s; remove or rename one", gz, raw);
    if ((a || b) && !(*out = strdup(a ? gz : raw))) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", base);
    return KD_OK;
}

int kd_ds_has_nifti(const char *base) {
    char gz[KD_PATH_MAX], raw[KD_PATH_MAX];
    if (kd_path_printf(gz, sizeof gz, "%s.nii.gz", base) || kd_path_printf(raw, sizeof raw, "%s.nii", base))
        return 0;
    return kd_data_is_file(gz) || kd_data_is_file(raw);
}

/* Which BraTS layout a case folder dir/name follows, in *l (AUTO for none). Files of
 * both layouts are an error naming one of each. */
static kd_status case_folder_layout(const char *dir, const char *name, kd_layout *l) {
    char base[KD_PATH_MAX], first[KD_PATH_MAX] = "";
    const kd_layout ls[] = {KD_LAYOUT_BRATS2018, KD_LAYOUT_BRATS2023};
    *l = KD_LAYOUT_AUTO;
    for (int k = 0; k < 2; k++)
        for (int m = 0; m < KD_MAX_MODALITIES; m++) {
            kd_status s = kd_path_printf(base, sizeof base, "%s/%s%s", dir, name, brats_suffix(ls[k], m));
            if (s) return s;
            if (!kd_ds_has_nifti(base)) continue;
            if (*l != KD_LAYOUT_AUTO && *l != ls[k])
                return kd_fail(KD_ERR_FORMAT, "case folder %s has files of two layouts: %s.nii[.gz] "
                               "(%s) and %s.nii[.gz] (%s); remove the ones not meant", dir, first,
                               kd_layout_name(*l), base, kd_layout_name(ls[k]));
            if (*l == KD_LAYOUT_AUTO) snprintf(first, sizeof first, "%s", base);
            *l = ls[k];
            break;
        }
    return KD_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the entries of dir (no hidden ones). */
kd_status kd_ds_list_dir(const char *dir, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return kd_fail(KD_ERR_IO, "%s: cannot open folder", dir);
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            char **t = realloc(*names, cap * sizeof *t);
            if (!t) break;
            *names = t;
        }
        if (!((*names)[*n] = strdup(e->d_name))) break;
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(*names, *n, sizeof **names, cmp_str);
    return KD_OK;
}

void kd_ds_free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---------------------------------------------------------- dataset ---- */

void kd_ds_case_clear(kd_ds_case *c) {
    free(c->name);
    free(c->id);
    for (int k = 0; k < KD_MAX_MODALITIES; k++)
        free(c->images[k]);
    free(c->label);
}

void kd_dataset_free(kd_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++)
        kd_ds_case_clear(&ds->cases[i]);
    free(ds->cases);
    for (int i = 0; i < ds->nscanned; i++)
        free(ds->scanned[i]);
    free(ds->scanned);
    free(ds->dir);
    free(ds->annotations);
    free(ds->cache_dir);
    free(ds->channels);
    free(ds);
}

/* Adds a case unless it is one already found through another path (a link to a folder
 * or file: a note, counted once). Two different cases of one name are an error: their
 * outputs (NAME.nii.gz) would overwrite each other. Takes c's contents either way. */
kd_status kd_ds_add_case(kd_dataset *ds, kd_ds_case *c) {
    char real[PATH_MAX];
    c->id = strdup(c->images[0] && realpath(c->images[0], real) ? real : c->images[0] ? c->images[0] : c->name);
    if (!c->id) {
        kd_ds_case_clear(c);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset case list");
    }
    for (int i = 0; i < ds->n; i++) {
        const kd_ds_case *o = &ds->cases[i];
        if (!strcmp(o->id, c->id)) {
            kd_log(KD_LOG_WARN, "%s: case %s (%s) is case %s (%s) again, reached through a link; "
                   "counted once", ds->dir, c->name, c->images[0], o->name, o->images[0]);
            kd_ds_case_clear(c);
            return KD_OK;
        }
        if (!strcmp(o->name, c->name)) {
            kd_status s = kd_fail(KD_ERR_FORMAT, "%s: two cases named %s: %s and %s; their outputs "
                                  "would overwrite each other", ds->dir, c->name, o->images[0], c->images[0]);
            kd_ds_case_clear(c);
            return s;
        }
    }
    if (ds->n == ds->cap) {
        int cap = ds->cap ? ds->cap * 2 : 32;
        kd_ds_case *t = realloc(ds->cases, cap * sizeof *t);
        if (!t) {
            kd_ds_case_clear(c);
            return kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset case list");
        }
        ds->cases = t;
        ds->cap = cap;
    }
    ds->cases[ds->n++] = *c;
    return KD_OK;
}

/* The label of a case without its own label file, from the annotations folder. */
kd_status kd_ds_find_annotation(const kd_dataset *ds, kd_ds_case *c) {
    if (c->label || !ds->annotations) return KD_OK;
    char base[KD_PATH_MAX];
    kd_status s = kd_path_join(base, sizeof base, ds->annotations, c->name);
    if (!s) s = kd_ds_find_nifti(base, &c->label);
    if (c->label) c->labeled = 2;
    return s;
}

kd_status kd_ds_finish_case(kd_dataset *ds, kd_ds_case *c, kd_status s, const char *labels_dir) {
    if (!s && !c->name) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset case list");
    if (!s && labels_dir) {
        char base[KD_PATH_MAX];
        s = kd_path_join(base, sizeof base, labels_dir, c->name);
        if (!s) s = kd_ds_find_nifti(base, &c->label);
        c->labeled = c->label != NULL;
    }
    if (!s) s = kd_ds_find_annotation(ds, c);
    if (s) {
        kd_ds_case_clear(c);
        return s;
    }
    return kd_ds_add_case(ds, c);
}

/* A BraTS case folder dir/name in layout l. */
static kd_status brats_case(kd_dataset *ds, const char *dir, const char *name, kd_layout l) {
    kd_ds_case c;
    memset(&c, 0, sizeof c);
    c.name = strdup(name);
    char base[KD_PATH_MAX];
    kd_status s = KD_OK;
    for (int ch = 0; ch < ds->nch && !s; ch++) {
        s = kd_path_printf(base, sizeof base, "%s/%s%s", dir, name, brats_suffix(l, ds->mod[ch]));
        if (!s) s = kd_ds_find_nifti(base, &c.images[ch]);
        if (!s && !c.images[ch])
            s = kd_fail(KD_ERR_IO, "case %s: missing %s image %s.nii.gz (layout %s)", name,
                        kd_modality_name(ds->mod[ch]), base, kd_layout_name(l));
    }
    if (!s) s = kd_path_printf(base, sizeof base, "%s/%s%s", dir, name, brats_suffix(l, KD_MOD_SEG));
    if (!s) s = kd_ds_find_nifti(base, &c.label);
    c.labeled = c.label != NULL;
    return kd_ds_finish_case(ds, &c, s, NULL);
}

int kd_ds_strip_nifti_ext(char *name) {
    size_t n = strlen(name);
    if (n > 7 && !strcmp(name + n - 7, ".nii.gz"))
        name[n - 7] = 0;
    else if (n > 4 && !strcmp(name + n - 4, ".nii"))
        name[n - 4] = 0;
    else
        return 0;
    return 1;
}

/* One MSD image file; labels in labels_dir (or NULL). */
static kd_status msd_case(kd_dataset *ds, const char *image, const char *name,
                          const char *labels_dir, int test) {
    kd_ds_case c;
    memset(&c, 0, sizeof c);
    c.name = strdup(name);
    c.test = test;
    for (int ch = 0; ch < ds->nch; ch++) {
        c.images[ch] = strdup(image);
        c.volume[ch] = msd_volume(ds->mod[ch]);
    }
    kd_status s = KD_OK;
    for (int ch = 0; ch < ds->nch; ch++)
        if (!c.images[ch]) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset case list");
    return kd_ds_finish_case(ds, &c, s, labels_dir);
}

/* 1 the first time a folder is scanned for cases, 0 when its real path was scanned
 * already (a link back to the dataset folder or to a sibling: a note), -1 out of memory. */
int kd_ds_first_scan(kd_dataset *ds, const char *dir) {
    char real[PATH_MAX];
    const char *id = realpath(dir, real) ? real : dir;
    for (int i = 0; i < ds->nscanned; i++)
        if (!strcmp(ds->scanned[i], id)) {
            kd_log(KD_LOG_WARN, "%s: %s is %s again, reached through a link; not scanned twice",
                   ds->dir, dir, ds->scanned[i]);
            return 0;
        }
    char **t = realloc(ds->scanned, (size_t)(ds->nscanned + 1) * sizeof *t);
    if (!t) return -1;
    ds->scanned = t;
    if (!(t[ds->nscanned] = strdup(id))) return -1;
    ds->nscanned++;
    return 1;
}

static kd_status msd_scan(kd_dataset *ds, const char *sub, const char *labels_sub) {
    char idir[KD_PATH_MAX], ldir[KD_PATH_MAX];
    kd_status s = kd_path_join(idir, sizeof idir, ds->dir, sub);
    if (!s) s = kd_path_join(ldir, sizeof ldir, ds->dir, labels_sub);
    if (s) return s;
    if (!kd_data_is_dir(idir)) return KD_OK;
    int first = kd_ds_first_scan(ds, idir);
    if (first <= 0) return first < 0 ? kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset") : KD_OK;
    char **names;
    int n;
    s = kd_ds_list_dir(idir, &names, &n);
    for (int i = 0; !s && i < n; i++) {
        char name[1024], path[KD_PATH_MAX];
        snprintf(name, sizeof name, "%s", names[i]); /* a file name: at most 255 bytes */
        if (!kd_ds_strip_nifti_ext(name)) continue;
        if (!(s = kd_path_join(path, sizeof path, idir, names[i])))
            s = msd_case(ds, path, name, kd_data_is_dir(ldir) ? ldir : NULL, !strcmp(sub, "imagesTs"));
    }
    kd_ds_free_names(names, n);
    return s;
}

/* Case folders in dir, and one level below (BraTS 2019: HGG/, LGG/). A folder reached
 * twice through links is scanned once. */
static kd_status brats_scan(kd_dataset *ds, const char *dir, int depth) {
    char **names;
    int n, first = kd_ds_first_scan(ds, dir);
    if (first <= 0) return first < 0 ? kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset") : KD_OK;
    kd_status s = kd_ds_list_dir(dir, &names, &n);
    for (int i = 0; !s && i < n; i++) {
        char sub[KD_PATH_MAX];
        if ((s = kd_path_join(sub, sizeof sub, dir, names[i]))) break;
        if (!kd_data_is_dir(sub)) continue;
        kd_layout l;
        if ((s = case_folder_layout(sub, names[i], &l))) break;
        if (l == KD_LAYOUT_AUTO) {
            if (depth == 0) s = brats_scan(ds, sub, 1);
            continue;
        }
        if (ds->layout == KD_LAYOUT_AUTO) ds->layout = l;
        if (l != ds->layout) {
            if (ds->forced) continue;
            s = kd_fail(KD_ERR_FORMAT, "%s: case %s is in layout %s but earlier cases are %s",
                        ds->dir, names[i], kd_layout_name(l), kd_layout_name(ds->layout));
            break;
        }
        s = brats_case(ds, sub, names[i], l);
    }
    kd_ds_free_names(names, n);
    return s;
}

static kd_status parse_modalities(kd_dataset *ds, const char *spec) {
    if (!spec || !*spec) {
        ds->nch = KD_MAX_MODALITIES;
        for (int m = 0; m < KD_MAX_MODALITIES; m++)
            ds->mod[m] = m;
        return KD_OK;
    }
    char buf[256];
    if (strlen(spec) >= sizeof buf) return kd_fail(KD_ERR_INVALID_ARG, "--modalities: '%s' is too long", spec);
    snprintf(buf, sizeof buf, "%s", spec);
    ds->nch = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int m = kd_modality_parse(t);
        if (m < 0)
            return kd_fail(KD_ERR_INVALID_ARG,
                           "--modalities: unknown modality '%s' (t1|t1n, t1ce|t1c, t2|t2w, "
                           "flair|t2f)",
                           t);
        for (int k = 0; k < ds->nch; k++)
            if (ds->mod[k] == m)
                return kd_fail(KD_ERR_INVALID_ARG, "--modalities: '%s' given twice", t);
        if (ds->nch == KD_MAX_MODALITIES)
            return kd_fail(KD_ERR_INVALID_ARG, "--modalities: at most 4");
        ds->mod[ds->nch++] = m;
    }
    if (!ds->nch) return kd_fail(KD_ERR_INVALID_ARG, "--modalities: empty list");
    return KD_OK;
}

static kd_status ds_new(const char *dir, const kd_dataset_opts *o, kd_dataset **out) {
    *out = NULL;
    kd_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset");
    ds->dir = strdup(dir);
    if (o) {
        ds->layout = o->layout;
        ds->forced = o->layout != KD_LAYOUT_AUTO;
        ds->annotations = xstrdup(o->annotations);
        ds->cache_dir = xstrdup(o->cache_dir);
        ds->cache_f32 = o->cache_float32;
        ds->channels = xstrdup(o->channels);
    }
    kd_status s = parse_modalities(ds, o ? o->modalities : NULL);
    if (!s && ds->annotations && !kd_data_is_dir(ds->annotations))
        s = kd_fail(KD_ERR_IO, "--annotations %s: not a folder", ds->annotations);
    if (!s && ds->cache_dir) s = kd_mkdirs(ds->cache_dir);
    if (s) {
        kd_dataset_free(ds);
        return s;
    }
    *out = ds;
    return KD_OK;
}

/* The label table of a BraTS or MSD dataset (an nnU-Net scan sets its own). */
static void layout_labels(kd_dataset *ds) {
    if (ds->layout == KD_LAYOUT_NNUNET) return;
    kd_label_table_of_layout(ds->layout, &ds->labels);
    snprintf(ds->label_source, sizeof ds->label_source, "layout %s", kd_layout_name(ds->layout));
}

kd_status kd_dataset_open(const char *dir, const kd_dataset_opts *o, kd_dataset **out) {
    *out = NULL;
    if (!dir || !kd_data_is_dir(dir))
        return kd_fail(KD_ERR_IO, "%s: dataset folder not found", dir ? dir : "(null)");
    kd_dataset *ds;
    kd_status s = ds_new(dir, o, &ds);
    if (s) return s;
    char p[KD_PATH_MAX], q[KD_PATH_MAX];
    if ((s = kd_path_join(p, sizeof p, dir, "imagesTr")) || (s = kd_path_join(q, sizeof q, dir, "imagesTs"))) {
        kd_dataset_free(ds);
        return s;
    }
    int msd = kd_data_is_dir(p) || kd_data_is_dir(q), nn = 0;
    if (ds->layout == KD_LAYOUT_AUTO && (s = kd_nnunet_detect(dir, &nn))) {
        kd_dataset_free(ds);
        return s;
    }
    if (ds->layout == KD_LAYOUT_NNUNET || nn) {
        ds->layout = KD_LAYOUT_NNUNET;
        s = kd_nnunet_scan(ds, dir, nn == 2 || (!nn && !msd), NULL);
    } else if (ds->layout == KD_LAYOUT_MSD || (ds->layout == KD_LAYOUT_AUTO && msd)) {
        ds->layout = KD_LAYOUT_MSD;
        s = msd_scan(ds, "imagesTr", "labelsTr");
        if (!s) s = msd_scan(ds, "imagesTs", "labelsTs");
    } else {
        s = brats_scan(ds, dir, 0);
    }
    if (!s && ds->n == 0)
        s = kd_fail(KD_ERR_FORMAT,
                    "%s: no cases found (layout %s; expected CASE/CASE_t1.nii.gz (BraTS "
                    "2018-21), CASE/CASE-t1n.nii.gz (BraTS 2023), imagesTr/CASE.nii.gz (MSD) or "
                    "imagesTr/CASE_0000.nii.gz (nnU-Net))",
                    dir, kd_layout_name(ds->layout));
    if (s) {
        kd_dataset_free(ds);
        return s;
    }
    layout_labels(ds);
    *out = ds;
    return KD_OK;
}

kd_status kd_dataset_open_case(const char *path, const kd_dataset_opts *o, kd_dataset **out) {
    *out = NULL;
    if (!path || (!kd_data_is_dir(path) && !kd_data_is_file(path)))
        return kd_fail(KD_ERR_IO, "%s: case not found", path ? path : "(null)");
    char buf[KD_PATH_MAX];
    kd_status s = kd_path_printf(buf, sizeof buf, "%s", path);
    if (s) return s;
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = 0;
    char *slash = strrchr(buf, '/');
    const char *base = slash ? slash + 1 : buf;
    char parent[KD_PATH_MAX];
    if (slash)
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - buf), buf);
    else
        snprintf(parent, sizeof parent, ".");
    kd_dataset *ds;
    if ((s = ds_new(parent, o, &ds))) return s;
    kd_layout l = KD_LAYOUT_AUTO;
    if (kd_data_is_dir(buf) && (s = case_folder_layout(buf, base, &l))) {
        /* two layouts in one folder: the message says which files */
    } else if (kd_data_is_dir(buf)) {
        if (ds->forced && l != ds->layout) l = KD_LAYOUT_AUTO;
        if (l == KD_LAYOUT_AUTO)
            s = kd_fail(KD_ERR_FORMAT,
                        "%s: not a case folder (expected %s_t1.nii.gz or %s-t1n.nii.gz inside; "
                        "a folder of cases is --dataset, an nnU-Net case is one of its files, "
                        "CASE_0000.nii.gz)",
                        buf, base, base);
        else {
            ds->layout = l;
            s = brats_case(ds, buf, base, l);
        }
    } else {
        char name[1024];
        snprintf(name, sizeof name, "%s", base);
        char nn_case[1024];
        int chan;
        if (!kd_ds_strip_nifti_ext(name))
            s = kd_fail(KD_ERR_FORMAT, "%s: expected a .nii or .nii.gz file", buf);
        else if (ds->layout == KD_LAYOUT_NNUNET ||
                 (ds->layout == KD_LAYOUT_AUTO &&
                  kd_nnunet_parse_name(base, nn_case, sizeof nn_case, &chan) == 1 &&
                  kd_ds_one_volume(buf))) {
            if (kd_nnunet_parse_name(base, nn_case, sizeof nn_case, &chan) != 1)
                s = kd_fail(KD_ERR_FORMAT, "%s: not an nnU-Net image name (CASE_0000.nii.gz)", buf);
            else {
                ds->layout = KD_LAYOUT_NNUNET;
                s = kd_nnunet_scan(ds, parent, 1, nn_case);
            }
        } else {
            ds->layout = KD_LAYOUT_MSD;
            char ldir[KD_PATH_MAX];
            s = kd_path_join(ldir, sizeof ldir, parent, "../labelsTr");
            if (!s) s = msd_case(ds, buf, name, kd_data_is_dir(ldir) ? ldir : NULL, 0);
        }
    }
    if (s) {
        kd_dataset_free(ds);
        return s;
    }
    layout_labels(ds);
    *out = ds;
    return KD_OK;
}

kd_layout kd_dataset_layout(const kd_dataset *ds) { return ds->layout; }
int kd_dataset_count(const kd_dataset *ds) { return ds->n; }
int kd_dataset_channels(const kd_dataset *ds) { return ds->nch; }
int kd_dataset_modality(const kd_dataset *ds, int ch) {
    return ch >= 0 && ch < ds->nch ? ds->mod[ch] : -1;
}
const char *kd_dataset_case_name(const kd_dataset *ds, int i) {
    return i >= 0 && i < ds->n ? ds->cases[i].name : NULL;
}
int kd_dataset_case_labeled(const kd_dataset *ds, int i) {
    return i >= 0 && i < ds->n ? ds->cases[i].labeled : 0;
}
int kd_dataset_labeled_count(const kd_dataset *ds) {
    int k = 0;
    for (int i = 0; i < ds->n; i++)
        k += ds->cases[i].labeled != 0;
    return k;
}
const char *kd_dataset_case_image(const kd_dataset *ds, int i, int ch, int *volume) {
    if (i < 0 || i >= ds->n || ch < 0 || ch >= ds->nch) return NULL;
    if (volume) *volume = ds->cases[i].volume[ch];
    return ds->cases[i].images[ch];
}
const char *kd_dataset_case_label(const kd_dataset *ds, int i) {
    return i >= 0 && i < ds->n ? ds->cases[i].label : NULL;
}
const kd_label_table *kd_dataset_label_table(const kd_dataset *ds) { return &ds->labels; }

const char *kd_dataset_case_id(const kd_dataset *ds, int i) {
    return i >= 0 && i < ds->n ? ds->cases[i].id : NULL;
}

kd_status kd_dataset_check_disjoint(const kd_dataset *a, const int *ia, int na, const char *what_a,
                                    const kd_dataset *b, const int *ib, int nb, const char *what_b) {
    for (int x = 0; x < na; x++)
        for (int y = 0; y < nb; y++) {
            const kd_ds_case *ca = &a->cases[ia[x]], *cb = &b->cases[ib[y]];
            if ((a == b && ia[x] == ib[y]) || !strcmp(ca->id, cb->id))
                return kd_fail(KD_ERR_INVALID_ARG, "%s case %s (%s) is also a %s case (%s %s): a "
                               "case must not be in both", what_a, ca->name, ca->images[0], what_b,
                               cb->name, cb->images[0]);
        }
    return KD_OK;
}
