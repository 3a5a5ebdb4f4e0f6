/* `kdseg evaluate` in the library: label maps read from NIfTI, reference cases found in
 * a dataset folder, paired with predictions, scored per region, written as CSV and
 * summarised as the BraTS leaderboard does. */
#include "kdseg/metrics.h"
#include "kdseg/fs.h"
#include "kdseg/data.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <nifti/nifti2_io.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Refuse label maps above this many voxels before allocating (BraTS: 8.9 M). */
#define KD_LABEL_MAX_VOXELS ((int64_t)1 << 31)

/* ---- reading a label map ---- */

static int path_is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int path_is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Voxel i of the file's data as a double (scaling applied by the caller). */
static int voxel_value(const nifti_image *nim, size_t i, double *v) {
    const void *p = nim->data;
    switch (nim->datatype) {
    case DT_UINT8:
        *v = ((const uint8_t *)p)[i];
        return 1;
    case DT_INT8:
        *v = ((const int8_t *)p)[i];
        return 1;
    case DT_INT16:
        *v = ((const int16_t *)p)[i];
        return 1;
    case DT_UINT16:
        *v = ((const uint16_t *)p)[i];
        return 1;
    case DT_INT32:
        *v = ((const int32_t *)p)[i];
        return 1;
    case DT_UINT32:
        *v = ((const uint32_t *)p)[i];
        return 1;
    case DT_INT64:
        *v = (double)((const int64_t *)p)[i];
        return 1;
    case DT_UINT64:
        *v = (double)((const uint64_t *)p)[i];
        return 1;
    case DT_FLOAT32:
        *v = ((const float *)p)[i];
        return 1;
    case DT_FLOAT64:
        *v = ((const double *)p)[i];
        return 1;
    default:
        return 0;
    }
}

void kd_label_map_free(kd_label_map *m) {
    if (!m) return;
    free(m->labels);
    free(m);
}

static kd_status label_map_convert(const char *path, nifti_image *nim, kd_label_map *m) {
    size_t n = (size_t)m->d * m->h * m->w;
    double slope = nim->scl_slope, inter = nim->scl_inter;
    int scaled = slope != 0 && isfinite(slope);
    if (!scaled) inter = 0; /* slope 0 or NaN: no scaling at all */
    if (!isfinite(inter)) inter = 0;
    for (size_t i = 0; i < n; i++) {
        double v;
        if (!voxel_value(nim, i, &v))
            return kd_fail(KD_ERR_FORMAT, "%s: datatype %s is not a label datatype", path,
                           nifti_datatype_string(nim->datatype));
        if (scaled) v = v * slope + inter;
        if (!(v >= 0 && v <= 255) || v != floor(v))
            return kd_fail(KD_ERR_FORMAT, "%s: voxel %zu holds %g, not a label in 0..255", path, i,
                           v);
        m->labels[i] = (uint8_t)v;
    }
    return KD_OK;
}

kd_status kd_label_map_read(const char *path, kd_label_map **out) {
    *out = NULL;
    if (!path_is_file(path)) return kd_fail(KD_ERR_IO, "%s: no such file", path);
    nifti_set_debug_level(0);
    nifti_image *nim = nifti_image_read(path, 0); /* header only: check sizes first */
    if (!nim) return kd_fail(KD_ERR_FORMAT, "%s: not a readable NIfTI file", path);
    kd_status s = KD_OK;
    kd_label_map *m = NULL;
    int64_t nx = nim->nx, ny = nim->ny, nz = nim->nz;
    int64_t extra = 1;
    for (int k = 4; k <= 7 && k <= nim->dim[0]; k++)
        extra *= nim->dim[k] > 0 ? nim->dim[k] : 1;
    if (nim->dim[0] < 1 || nx < 1 || ny < 1 || nz < 1 || nx > 65535 || ny > 65535 || nz > 65535 ||
        nx * ny * nz > KD_LABEL_MAX_VOXELS) {
        s = kd_fail(KD_ERR_FORMAT, "%s: absurd label map size %lld x %lld x %lld", path,
                    (long long)nx, (long long)ny, (long long)nz);
        goto done;
    }
    if (extra != 1) {
        s = kd_fail(KD_ERR_FORMAT, "%s: a label map has one volume, this has %lld", path,
                    (long long)extra);
        goto done;
    }
    double sp[3] = {nim->pixdim[3], nim->pixdim[2], nim->pixdim[1]};
    if (nim->dim[0] < 3) sp[0] = 1.0; /* 2-D map: the missing axis has one slice */
    for (int k = 0; k < 3; k++)
        if (!(sp[k] > 0) || !isfinite(sp[k])) {
            s = kd_fail(KD_ERR_FORMAT, "%s: voxel spacing (%g, %g, %g) is not positive", path,
                        nim->pixdim[1], nim->pixdim[2], nim->pixdim[3]);
            goto done;
        }
    if (nifti_image_load(nim) != 0 || !nim->data) {
        s = kd_fail(KD_ERR_FORMAT, "%s: voxel data unreadable (truncated or corrupt?)", path);
        goto done;
    }
    m = calloc(1, sizeof *m);
    if (!m || !(m->labels = malloc((size_t)(nx * ny * nz)))) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: %lld voxels", path, (long long)(nx * ny * nz));
        goto done;
    }
    m->d = (int)nz, m->h = (int)ny, m->w = (int)nx;
    memcpy(m->spacing, sp, sizeof sp);
    s = label_map_convert(path, nim, m);
done:
    nifti_image_free(nim);
    if (s)
        kd_label_map_free(m);
    else
        *out = m;
    return s;
}

/* ---- finding the reference cases ---- */

typedef struct ref_case {
    char *name, *path;
    kd_label_convention conv; /* AUTO: by values */
} ref_case;

typedef struct ref_list {
    ref_case *v;
    int n, cap;
    int nnunet;           /* the reference is an nnU-Net dataset (or one of its folders) */
    kd_label_table table; /* its labels, from dataset.json */
} ref_list;

static void ref_list_free(ref_list *l) {
    for (int i = 0; i < l->n; i++)
        free(l->v[i].name), free(l->v[i].path);
    free(l->v);
}

static kd_status ref_list_add(ref_list *l, const char *name, const char *path,
                              kd_label_convention conv) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        ref_case *v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case list of %d", cap);
        l->v = v, l->cap = cap;
    }
    ref_case *c = &l->v[l->n];
    c->name = strdup(name);
    c->path = strdup(path);
    c->conv = conv;
    if (!c->name || !c->path) {
        free(c->name), free(c->path);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s", name);
    }
    l->n++;
    return KD_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names of a folder (without . and ..). */
static kd_status list_dir(const char *dir, char ***names, int *count) {
    *names = NULL, *count = 0;
    DIR *dp = opendir(dir);
    if (!dp) return kd_fail(KD_ERR_IO, "%s: cannot open folder", dir);
    char **v = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    kd_status s = KD_OK;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, sizeof *v * (size_t)cap);
            if (!nv) {
                s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: listing", dir);
                break;
            }
            v = nv;
        }
        if (!(v[n] = strdup(e->d_name))) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: listing", dir);
            break;
        }
        n++;
    }
    closedir(dp);
    if (s) {
        for (int i = 0; i < n; i++)
            free(v[i]);
        free(v);
        return s;
    }
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *names = v, *count = n;
    return KD_OK;
}

static void free_names(char **v, int n) {
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* "NAME.nii.gz" or "NAME.nii" -> length of NAME, else 0. */
static size_t nifti_stem(const char *f) {
    size_t n = strlen(f);
    if (n > 7 && !strcmp(f + n - 7, ".nii.gz")) return n - 7;
    if (n > 4 && !strcmp(f + n - 4, ".nii")) return n - 4;
    return 0;
}

/* Label files NAME.nii[.gz] of a folder as cases. */
static kd_status add_label_folder(ref_list *l, const char *dir, kd_label_convention conv) {
    char **names;
    int n;
    kd_status s = list_dir(dir, &names, &n);
    if (s) return s;
    char path[KD_PATH_MAX], name[1024];
    for (int i = 0; i < n && !s; i++) {
        size_t stem = nifti_stem(names[i]);
        if (!stem || stem >= sizeof name) continue;
        if ((s = kd_path_join(path, sizeof path, dir, names[i]))) break;
        if (!path_is_file(path)) continue;
        memcpy(name, names[i], stem);
        name[stem] = 0;
        if (l->n && !strcmp(l->v[l->n - 1].name, name)) continue; /* X.nii next to X.nii.gz */
        s = ref_list_add(l, name, path, conv);
    }
    free_names(names, n);
    return s;
}

/* BraTS layouts: CASE/CASE_seg.nii.gz (2019) or CASE/CASE-seg.nii.gz (2023). */
static kd_status add_brats_cases(ref_list *l, const char *dir) {
    char **names;
    int n;
    kd_status s = list_dir(dir, &names, &n);
    if (s) return s;
    static const char *suffix[] = {"_seg.nii.gz", "_seg.nii", "-seg.nii.gz", "-seg.nii"};
    char path[KD_PATH_MAX];
    for (int i = 0; i < n && !s; i++)
        for (int k = 0; k < 4 && !s; k++) {
            if ((s = kd_path_printf(path, sizeof path, "%s/%s/%s%s", dir, names[i], names[i], suffix[k])))
                break;
            if (path_is_file(path)) {
                s = ref_list_add(l, names[i], path, k < 2 ? KD_LABELS_2019 : KD_LABELS_2023);
                break;
            }
        }
    free_names(names, n);
    return s;
}

static kd_status find_reference(const char *ref, ref_list *l) {
    if (!path_is_dir(ref)) return kd_fail(KD_ERR_IO, "%s: no such folder", ref);
    char sub[KD_PATH_MAX];
    kd_status s = kd_path_join(sub, sizeof sub, ref, "labelsTr");
    if (!s) s = kd_nnunet_find_labels(ref, &l->table, &l->nnunet);
    if (s) return s;
    if (l->nnunet)
        s = add_label_folder(l, path_is_dir(sub) ? sub : ref, KD_LABELS_AUTO);
    else if (path_is_dir(sub))
        s = add_label_folder(l, sub, KD_LABELS_MSD);
    else if ((s = add_brats_cases(l, ref)) == KD_OK && l->n == 0)
        s = add_label_folder(l, ref, KD_LABELS_AUTO);
    if (!s && l->n == 0)
        s = kd_fail(KD_ERR_IO,
                    "%s: no reference cases (CASE/CASE_seg.nii.gz, CASE/CASE-seg.nii.gz, "
                    "labelsTr/ or CASE.nii.gz)",
                    ref);
    return s;
}

/* ---- scoring ---- */

void kd_eval_options_default(kd_eval_options *o) {
    memset(o, 0, sizeof *o);
    o->labels = KD_LABELS_AUTO;
    o->empty_hd95 = KD_EMPTY_HD95_DEFAULT;
    kd_lesion_options_default(&o->lesion);
}

const char *kd_eval_status_name(kd_eval_status s) {
    switch (s) {
    case KD_EVAL_OK:
        return "ok";
    case KD_EVAL_MISSING:
        return "missing";
    case KD_EVAL_MISMATCH:
        return "mismatch";
    }
    return "?";
}

void kd_eval_result_free(kd_eval_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n_cases; i++)
        free(r->cases[i].name);
    free(r->cases);
    free(r);
}

/* Regions (3 masks of n bytes, WT TC ET) of a label map in a convention (AUTO: detect;
 * with a table, an nnU-Net dataset's labels: by the table). */
static kd_status map_regions(const kd_label_map *m, kd_label_convention c, const kd_label_table *t,
                             const char *path, uint8_t *masks) {
    size_t n = (size_t)m->d * m->h * m->w;
    kd_status s = KD_OK;
    if (t && c == KD_LABELS_AUTO) {
        for (size_t i = 0; i < n; i++) {
            int r = t->regions[m->labels[i]];
            if (r < 0) {
                char set[1024];
                kd_label_table_describe(t, set, sizeof set);
                return kd_fail(KD_ERR_FORMAT, "%s: label %d is not one of the dataset's %s (dataset.json); "
                               "--labels 2019|2023|msd reads other values", path, m->labels[i], set);
            }
            masks[i] = r & 1;
            masks[n + i] = (r >> 1) & 1;
            masks[2 * n + i] = (r >> 2) & 1;
        }
        return KD_OK;
    }
    if (c == KD_LABELS_AUTO) s = kd_labels_detect(m->labels, n, KD_LABELS_2019, &c);
    if (!s) s = kd_labels_to_regions(m->labels, n, c, masks, masks + n, masks + 2 * n);
    return s ? kd_fail_context(s, "%s", path) : KD_OK;
}

static kd_status score_case(const kd_eval_options *o, const ref_case *rc, const kd_label_table *t,
                            kd_eval_case *ec) {
    kd_label_map *ref = NULL, *pred = NULL;
    uint8_t *masks = NULL;
    kd_status s = kd_label_map_read(rc->path, &ref);
    if (s) return s;
    char path[KD_PATH_MAX];
    s = kd_path_printf(path, sizeof path, "%s/%s.nii.gz", o->pred_dir, rc->name);
    if (!s && !path_is_file(path)) s = kd_path_printf(path, sizeof path, "%s/%s.nii", o->pred_dir, rc->name);
    if (s) goto done;
    ec->status = KD_EVAL_OK;
    if (!path_is_file(path)) {
        if (!o->allow_missing) {
            s = kd_fail(KD_ERR_IO, "no prediction %s/%s.nii.gz", o->pred_dir, rc->name);
            goto done;
        }
        ec->status = KD_EVAL_MISSING;
        kd_log(KD_LOG_WARN, "case %s: no prediction, scored as empty", rc->name);
    } else {
        if ((s = kd_label_map_read(path, &pred))) goto done;
        if (pred->d != ref->d || pred->h != ref->h || pred->w != ref->w) {
            if (!o->allow_missing) {
                s = kd_fail(KD_ERR_SHAPE, "%s: grid %dx%dx%d differs from the reference's %dx%dx%d",
                            path, pred->w, pred->h, pred->d, ref->w, ref->h, ref->d);
                goto done;
            }
            ec->status = KD_EVAL_MISMATCH;
            kd_log(KD_LOG_WARN, "case %s: prediction on another grid, scored as empty", rc->name);
        } else {
            for (int k = 0; k < 3; k++)
                if (fabs(pred->spacing[k] - ref->spacing[k]) > 1e-3 * ref->spacing[k])
                    kd_log(KD_LOG_WARN,
                           "case %s: prediction spacing differs; using the "
                           "reference's",
                           rc->name);
        }
    }
    size_t n = (size_t)ref->d * ref->h * ref->w;
    if (!(masks = calloc(6, n))) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "masks of %zu voxels", n);
        goto done;
    }
    uint8_t *rm = masks, *pm = masks + 3 * n; /* prediction masks stay 0 unless read */
    kd_label_convention rconv = o->labels != KD_LABELS_AUTO ? o->labels : rc->conv;
    if ((s = map_regions(ref, rconv, t, rc->path, rm))) goto done;
    if (ec->status == KD_EVAL_OK && (s = map_regions(pred, o->labels, t, path, pm))) goto done;
    for (int r = 0; r < KD_REGION_COUNT && !s; r++)
        s = kd_metrics_compute(pm + (size_t)r * n, rm + (size_t)r * n, ref->d, ref->h, ref->w,
                               ref->spacing, o->empty_hd95, &ec->region[r]);
    for (int r = 0; r < KD_REGION_COUNT && !s && o->lesion_wise; r++)
        s = kd_lesion_metrics_compute(pm + (size_t)r * n, rm + (size_t)r * n, ref->d, ref->h,
                                      ref->w, ref->spacing, &o->lesion, &ec->lesion[r]);
done:
    free(masks);
    kd_label_map_free(ref);
    kd_label_map_free(pred);
    return s ? kd_fail_context(s, "case %s", rc->name) : KD_OK;
}

kd_status kd_evaluate(const kd_eval_options *o, kd_eval_result **out) {
    *out = NULL;
    if (!o->pred_dir || !o->ref)
        return kd_fail(KD_ERR_INVALID_ARG, "evaluate: both a prediction and a reference folder");
    if (!path_is_dir(o->pred_dir)) return kd_fail(KD_ERR_IO, "%s: no such folder", o->pred_dir);
    ref_list l = {0};
    kd_status s = find_reference(o->ref, &l);
    kd_eval_result *r = NULL;
    if (s) goto done;
    if (!(r = calloc(1, sizeof *r)) || !(r->cases = calloc((size_t)l.n, sizeof *r->cases))) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "evaluate: %d cases", l.n);
        goto done;
    }
    r->lesion_wise = o->lesion_wise;
    for (int i = 0; i < l.n && !s; i++) {
        kd_log(KD_LOG_INFO, "evaluate: case %d/%d %s", i + 1, l.n, l.v[i].name);
        s = score_case(o, &l.v[i], l.nnunet ? &l.table : NULL, &r->cases[i]);
        if (!s && !(r->cases[i].name = strdup(l.v[i].name)))
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "case name");
        if (!s) r->n_cases = i + 1;
    }
done:
    ref_list_free(&l);
    if (s)
        kd_eval_result_free(r);
    else
        *out = r;
    return s;
}

/* ---- output ---- */

static void csv_num(FILE *f, double v) {
    if (isnan(v))
        fputs(",nan", f);
    else
        fprintf(f, ",%.10g", v);
}

kd_status kd_eval_write_csv(const kd_eval_result *r, const char *path) {
    kd_atomic_file a;
    kd_status ts = kd_atomic_open(&a, path, "w");
    if (ts) return ts;
    FILE *f = a.f;
    fputs("case,status", f);
    static const char *cols[] = {"Dice",        "HD95",       "Sensitivity", "Specificity",
                                 "VolPred_vox", "VolRef_vox", "VolPred_mm3", "VolRef_mm3"};
    for (int g = 0; g < KD_REGION_COUNT; g++)
        for (int c = 0; c < 8; c++)
            fprintf(f, ",%s_%s", cols[c], kd_region_name(g));
    static const char *lcols[] = {"LesionDice", "LesionHD95", "LesionTP", "LesionFP", "LesionFN"};
    for (int g = 0; g < KD_REGION_COUNT && r->lesion_wise; g++)
        for (int c = 0; c < 5; c++)
            fprintf(f, ",%s_%s", lcols[c], kd_region_name(g));
    fputc('\n', f);
    for (int i = 0; i < r->n_cases; i++) {
        const kd_eval_case *ec = &r->cases[i];
        fprintf(f, "%s,%s", ec->name, kd_eval_status_name(ec->status));
        for (int g = 0; g < KD_REGION_COUNT; g++) {
            const kd_metrics *m = &ec->region[g];
            csv_num(f, m->dice);
            csv_num(f, m->hd95);
            csv_num(f, m->sensitivity);
            csv_num(f, m->specificity);
            fprintf(f, ",%lld,%lld", (long long)m->vol_pred, (long long)m->vol_ref);
            csv_num(f, m->vol_pred_mm3);
            csv_num(f, m->vol_ref_mm3);
        }
        for (int g = 0; g < KD_REGION_COUNT && r->lesion_wise; g++) {
            const kd_lesion_metrics *lm = &ec->lesion[g];
            csv_num(f, lm->dice);
            csv_num(f, lm->hd95);
            fprintf(f, ",%d,%d,%d", lm->tp, lm->fp, lm->fn);
        }
        fputc('\n', f);
    }
    return kd_atomic_close(&a, KD_OK);
}

void kd_eval_print_table(const kd_eval_result *r, FILE *f) {
    static const char *metric[] = {"Dice", "HD95", "Sensitivity", "Specificity", "LesionDice",
                                   "LesionHD95"};
    int n = r->n_cases;
    double *x = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!x) {
        fprintf(f, "(no memory for the summary table)\n");
        return;
    }
    fprintf(f, "%-12s %-3s %10s %10s %10s %10s %10s\n", "metric", "", "mean", "std", "median",
            "25quantile", "75quantile");
    for (int m = 0; m < (r->lesion_wise ? 6 : 4); m++)
        for (int g = 0; g < KD_REGION_COUNT; g++) {
            for (int i = 0; i < n; i++) {
                const kd_metrics *km = &r->cases[i].region[g];
                const kd_lesion_metrics *lm = &r->cases[i].lesion[g];
                x[i] = m == 0   ? km->dice
                       : m == 1 ? km->hd95
                       : m == 2 ? km->sensitivity
                       : m == 3 ? km->specificity
                       : m == 4 ? lm->dice
                                : lm->hd95;
            }
            kd_summary s;
            if (kd_summary_compute(x, (size_t)n, &s)) continue;
            fprintf(f, "%-12s %-3s %10.4f %10.4f %10.4f %10.4f %10.4f\n", metric[m],
                    kd_region_name(g), s.mean, s.std, s.median, s.q25, s.q75);
        }
    for (int g = 0; g < KD_REGION_COUNT && r->lesion_wise; g++) {
        int tp = 0, fp = 0, fn = 0, ign = 0;
        for (int i = 0; i < n; i++) {
            tp += r->cases[i].lesion[g].tp, fp += r->cases[i].lesion[g].fp;
            fn += r->cases[i].lesion[g].fn, ign += r->cases[i].lesion[g].ignored;
        }
        fprintf(f, "lesions %-3s  %d matched, %d missed, %d false positive, %d under the volume "
                   "threshold\n",
                kd_region_name(g), tp, fn, fp, ign);
    }
    free(x);
}
