/* Dataset folders in the BraTS 2018-21, BraTS 2023+ and MSD Task01 layouts: finding
 * the cases, their modality files and labels; label <-> region conversion. */
#include <dirent.h>
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
             {"decathlon", KD_LAYOUT_MSD}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (s && !strcasecmp(s, t[i].name)) {
            *out = t[i].l;
            return KD_OK;
        }
    return kd_fail(KD_ERR_INVALID_ARG,
                   "unknown layout '%s' (brats2018|brats2019|brats2023|msd|auto)", s ? s : "");
}

const char *kd_modality_name(int mod) {
    static const char *n[] = {"t1", "t1ce", "t2", "flair"};
    return mod >= 0 && mod < KD_MAX_MODALITIES ? n[mod] : "?";
}

static int modality_parse(const char *s) {
    static const char *alias[KD_MAX_MODALITIES][3] = {
        {"t1", "t1n", "t1w"}, {"t1ce", "t1c", "t1gd"}, {"t2", "t2w", NULL}, {"flair", "t2f", NULL}};
    for (int m = 0; m < KD_MAX_MODALITIES; m++)
        for (int k = 0; k < 3; k++)
            if (alias[m][k] && !strcasecmp(s, alias[m][k])) return m;
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
    return l == KD_LAYOUT_BRATS2023 ? KD_LABELS_2023 : l == KD_LAYOUT_MSD ? KD_LABELS_MSD : KD_LABELS_2019;
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

const char *kd_layout_label_set(kd_layout l) {
    return l == KD_LAYOUT_BRATS2018 || l == KD_LAYOUT_AUTO ? "0, 1, 2, 4" : "0, 1, 2, 3";
}

/* ------------------------------------------------------------ files ---- */

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

/* base + ".nii.gz" or base + ".nii", whichever exists; NULL otherwise. */
static char *find_nifti(const char *base) {
    char p[4096];
    snprintf(p, sizeof p, "%s.nii.gz", base);
    if (kd_data_is_file(p)) return strdup(p);
    snprintf(p, sizeof p, "%s.nii", base);
    if (kd_data_is_file(p)) return strdup(p);
    return NULL;
}

static int has_nifti(const char *base) {
    char *p = find_nifti(base);
    free(p);
    return p != NULL;
}

/* Which BraTS layout a case folder dir/name follows, or AUTO for none. */
static kd_layout case_folder_layout(const char *dir, const char *name) {
    char base[4096];
    const kd_layout ls[] = {KD_LAYOUT_BRATS2018, KD_LAYOUT_BRATS2023};
    for (int k = 0; k < 2; k++)
        for (int m = 0; m < KD_MAX_MODALITIES; m++) {
            snprintf(base, sizeof base, "%s/%s%s", dir, name, brats_suffix(ls[k], m));
            if (has_nifti(base)) return ls[k];
        }
    return KD_LAYOUT_AUTO;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the entries of dir (no hidden ones). */
static kd_status list_dir(const char *dir, char ***names, int *n) {
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

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---------------------------------------------------------- dataset ---- */

static void case_clear(kd_ds_case *c) {
    free(c->name);
    for (int k = 0; k < KD_MAX_MODALITIES; k++)
        free(c->images[k]);
    free(c->label);
}

void kd_dataset_free(kd_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++)
        case_clear(&ds->cases[i]);
    free(ds->cases);
    free(ds->dir);
    free(ds->annotations);
    free(ds->cache_dir);
    free(ds);
}

static kd_status add_case(kd_dataset *ds, kd_ds_case *c) {
    if (ds->n == ds->cap) {
        int cap = ds->cap ? ds->cap * 2 : 32;
        kd_ds_case *t = realloc(ds->cases, cap * sizeof *t);
        if (!t) return kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset case list");
        ds->cases = t;
        ds->cap = cap;
    }
    ds->cases[ds->n++] = *c;
    return KD_OK;
}

/* The label of a case without its own label file, from the annotations folder. */
static void find_annotation(const kd_dataset *ds, kd_ds_case *c) {
    if (c->label || !ds->annotations) return;
    char base[4096];
    snprintf(base, sizeof base, "%s/%s", ds->annotations, c->name);
    c->label = find_nifti(base);
    if (c->label) c->labeled = 2;
}

/* A BraTS case folder dir/name in layout l. */
static kd_status brats_case(kd_dataset *ds, const char *dir, const char *name, kd_layout l) {
    kd_ds_case c;
    memset(&c, 0, sizeof c);
    c.name = strdup(name);
    char base[4096];
    for (int ch = 0; ch < ds->nch; ch++) {
        snprintf(base, sizeof base, "%s/%s%s", dir, name, brats_suffix(l, ds->mod[ch]));
        c.images[ch] = find_nifti(base);
        if (!c.images[ch]) {
            case_clear(&c);
            return kd_fail(KD_ERR_IO, "case %s: missing %s image %s.nii.gz (layout %s)", name,
                           kd_modality_name(ds->mod[ch]), base, kd_layout_name(l));
        }
    }
    snprintf(base, sizeof base, "%s/%s%s", dir, name, brats_suffix(l, KD_MOD_SEG));
    c.label = find_nifti(base);
    c.labeled = c.label != NULL;
    find_annotation(ds, &c);
    kd_status s = add_case(ds, &c);
    if (s) case_clear(&c);
    return s;
}

static int strip_nifti_ext(char *name) {
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
                          const char *labels_dir) {
    kd_ds_case c;
    memset(&c, 0, sizeof c);
    c.name = strdup(name);
    for (int ch = 0; ch < ds->nch; ch++) {
        c.images[ch] = strdup(image);
        c.volume[ch] = msd_volume(ds->mod[ch]);
    }
    if (labels_dir) {
        char base[4096];
        snprintf(base, sizeof base, "%s/%s", labels_dir, name);
        c.label = find_nifti(base);
        c.labeled = c.label != NULL;
    }
    find_annotation(ds, &c);
    kd_status s = add_case(ds, &c);
    if (s) case_clear(&c);
    return s;
}

static kd_status msd_scan(kd_dataset *ds, const char *sub, const char *labels_sub) {
    char idir[4096], ldir[4096];
    snprintf(idir, sizeof idir, "%s/%s", ds->dir, sub);
    snprintf(ldir, sizeof ldir, "%s/%s", ds->dir, labels_sub);
    if (!kd_data_is_dir(idir)) return KD_OK;
    char **names;
    int n;
    kd_status s = list_dir(idir, &names, &n);
    for (int i = 0; !s && i < n; i++) {
        char name[1024], path[4096];
        snprintf(name, sizeof name, "%s", names[i]);
        if (!strip_nifti_ext(name)) continue;
        snprintf(path, sizeof path, "%s/%s", idir, names[i]);
        s = msd_case(ds, path, name, kd_data_is_dir(ldir) ? ldir : NULL);
    }
    free_names(names, n);
    return s;
}

/* Case folders in dir, and one level below (BraTS 2019: HGG/, LGG/). */
static kd_status brats_scan(kd_dataset *ds, const char *dir, int depth) {
    char **names;
    int n;
    kd_status s = list_dir(dir, &names, &n);
    for (int i = 0; !s && i < n; i++) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", dir, names[i]);
        if (!kd_data_is_dir(sub)) continue;
        kd_layout l = case_folder_layout(sub, names[i]);
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
    free_names(names, n);
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
    snprintf(buf, sizeof buf, "%s", spec);
    ds->nch = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int m = modality_parse(t);
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
    }
    kd_status s = parse_modalities(ds, o ? o->modalities : NULL);
    if (!s && ds->annotations && !kd_data_is_dir(ds->annotations))
        s = kd_fail(KD_ERR_IO, "--annotations %s: not a folder", ds->annotations);
    if (!s && ds->cache_dir) s = kd_data_mkdirs(ds->cache_dir);
    if (s) {
        kd_dataset_free(ds);
        return s;
    }
    *out = ds;
    return KD_OK;
}

kd_status kd_dataset_open(const char *dir, const kd_dataset_opts *o, kd_dataset **out) {
    *out = NULL;
    if (!dir || !kd_data_is_dir(dir))
        return kd_fail(KD_ERR_IO, "%s: dataset folder not found", dir ? dir : "(null)");
    kd_dataset *ds;
    kd_status s = ds_new(dir, o, &ds);
    if (s) return s;
    char p[4096], q[4096];
    snprintf(p, sizeof p, "%s/imagesTr", dir);
    snprintf(q, sizeof q, "%s/imagesTs", dir);
    int msd = kd_data_is_dir(p) || kd_data_is_dir(q);
    if (ds->layout == KD_LAYOUT_MSD || (ds->layout == KD_LAYOUT_AUTO && msd)) {
        ds->layout = KD_LAYOUT_MSD;
        s = msd_scan(ds, "imagesTr", "labelsTr");
        if (!s) s = msd_scan(ds, "imagesTs", "labelsTs");
    } else {
        s = brats_scan(ds, dir, 0);
    }
    if (!s && ds->n == 0)
        s = kd_fail(KD_ERR_FORMAT,
                    "%s: no cases found (layout %s; expected CASE/CASE_t1.nii.gz (BraTS "
                    "2018-21), CASE/CASE-t1n.nii.gz (BraTS 2023) or imagesTr/*.nii.gz (MSD))",
                    dir, kd_layout_name(ds->layout));
    if (s) {
        kd_dataset_free(ds);
        return s;
    }
    *out = ds;
    return KD_OK;
}

kd_status kd_dataset_open_case(const char *path, const kd_dataset_opts *o, kd_dataset **out) {
    *out = NULL;
    if (!path || (!kd_data_is_dir(path) && !kd_data_is_file(path)))
        return kd_fail(KD_ERR_IO, "%s: case not found", path ? path : "(null)");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = 0;
    char *slash = strrchr(buf, '/');
    const char *base = slash ? slash + 1 : buf;
    char parent[4096];
    if (slash)
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - buf), buf);
    else
        snprintf(parent, sizeof parent, ".");
    kd_dataset *ds;
    kd_status s = ds_new(parent, o, &ds);
    if (s) return s;
    if (kd_data_is_dir(buf)) {
        kd_layout l = case_folder_layout(buf, base);
        if (ds->forced && l != ds->layout) l = KD_LAYOUT_AUTO;
        if (l == KD_LAYOUT_AUTO)
            s = kd_fail(KD_ERR_FORMAT,
                        "%s: not a case folder (expected %s_t1.nii.gz or %s-t1n.nii.gz inside)",
                        buf, base, base);
        else {
            ds->layout = l;
            s = brats_case(ds, buf, base, l);
        }
    } else {
        char name[1024];
        snprintf(name, sizeof name, "%s", base);
        if (!strip_nifti_ext(name))
            s = kd_fail(KD_ERR_FORMAT, "%s: expected a .nii or .nii.gz file", buf);
        else {
            ds->layout = KD_LAYOUT_MSD;
            char ldir[4096];
            snprintf(ldir, sizeof ldir, "%s/../labelsTr", parent);
            s = msd_case(ds, buf, name, kd_data_is_dir(ldir) ? ldir : NULL);
        }
    }
    if (s) {
        kd_dataset_free(ds);
        return s;
    }
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
