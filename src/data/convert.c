/* kd_dataset_convert: a dataset written again in another layout (BraTS 2018-21, BraTS
 * 2023, MSD Task01, nnU-Net), images unchanged, labels translated. */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data_internal.h"
#include "dataset_internal.h"

static int ends_with(const char *s, const char *t) {
    size_t a = strlen(s), b = strlen(t);
    return a >= b && !strcmp(s + a - b, t);
}

/* src to dst byte for byte, gzip-compressed on the way when src is a plain .nii (every
 * image kdseg writes is .nii.gz). */
static kd_status copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb");
    if (!in) return kd_fail(KD_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    int gz = !ends_with(src, ".gz");
    FILE *out = gz ? NULL : fopen(kd_output_target(dst), "wb");
    gzFile zout = gz ? gzopen(kd_output_target(dst), "wb6") : NULL;
    kd_status s = KD_OK;
    if (!out && !zout) s = kd_fail(KD_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    unsigned char *buf = s ? NULL : malloc(1 << 16);
    if (!s && !buf) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", dst);
    while (!s) {
        size_t n = fread(buf, 1, 1 << 16, in);
        if (n == 0) {
            if (ferror(in)) s = kd_fail(KD_ERR_IO, "%s: read failed: %s", src, strerror(errno));
            break;
        }
        if (gz ? gzwrite(zout, buf, (unsigned)n) != (int)n : fwrite(buf, 1, n, out) != n)
            s = kd_fail(KD_ERR_IO, "%s: write failed: %s", dst, strerror(errno ? errno : EIO));
    }
    free(buf);
    fclose(in);
    if (out && fclose(out) != 0 && !s) s = kd_fail(KD_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
    if (zout && gzclose(zout) != Z_OK && !s) s = kd_fail(KD_ERR_IO, "%s: write failed", dst);
    return s;
}

/* ------------------------------------------------------------ voxels ---- */

static int scaled(const kd_volume *v) { return isfinite(v->info.scl_slope) && v->info.scl_slope != 0; }

/* Volume t of v (its float values, scaling applied) back in the file's own datatype and
 * scaling, to write unchanged; float64 goes to float32 (what kd_nifti_read kept). */
static kd_status raw_volume(const kd_volume *v, int t, void **out, int *dt, kd_nifti_write_opts *wo) {
    size_t n = (size_t)v->nx * v->ny * v->nz;
    const float *x = v->data + (size_t)t * n;
    int d = v->info.datatype == KD_DT_FLOAT64 ? KD_DT_FLOAT32 : v->info.datatype;
    memset(wo, 0, sizeof *wo);
    double slope = 1, inter = 0;
    if (scaled(v) && d != KD_DT_FLOAT32) {
        slope = v->info.scl_slope;
        inter = isfinite(v->info.scl_inter) ? v->info.scl_inter : 0;
        wo->scl_slope = slope;
        wo->scl_inter = inter;
    }
    size_t bytes = d == KD_DT_UINT8 || d == KD_DT_INT8 ? 1 : d == KD_DT_INT16 || d == KD_DT_UINT16 ? 2 : 4;
    void *p = malloc(n * bytes);
    if (!p) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: %zu voxels", v->path, n);
    for (size_t i = 0; i < n; i++) {
        double r = d == KD_DT_FLOAT32 ? x[i] : nearbyint((x[i] - inter) / slope);
        switch (d) {
        case KD_DT_UINT8: ((uint8_t *)p)[i] = (uint8_t)r; break;
        case KD_DT_INT8: ((int8_t *)p)[i] = (int8_t)r; break;
        case KD_DT_INT16: ((int16_t *)p)[i] = (int16_t)r; break;
        case KD_DT_UINT16: ((uint16_t *)p)[i] = (uint16_t)r; break;
        case KD_DT_INT32: ((int32_t *)p)[i] = (int32_t)r; break;
        case KD_DT_UINT32: ((uint32_t *)p)[i] = (uint32_t)r; break;
        default: ((float *)p)[i] = (float)r; break;
        }
    }
    *out = p;
    *dt = d;
    return KD_OK;
}

static kd_status write_volume(const char *path, const kd_volume *v, int t) {
    void *raw;
    int dt;
    kd_nifti_write_opts wo;
    kd_status s = raw_volume(v, t, &raw, &dt, &wo);
    if (s) return s;
    s = kd_nifti_write(path, v, 1, dt, raw, &wo);
    free(raw);
    return s;
}

/* Four 3-D volumes (vols in MSD order: FLAIR, T1w, T1gd, T2w) as one 4-D file: in their
 * common datatype and scaling, else float32 with the scaling applied. */
static kd_status write_4d(const char *path, kd_volume *const vols[4]) {
    size_t n = (size_t)vols[0]->nx * vols[0]->ny * vols[0]->nz;
    int same = 1;
    for (int k = 1; k < 4; k++)
        same &= vols[k]->info.datatype == vols[0]->info.datatype && scaled(vols[k]) == scaled(vols[0]) &&
                (!scaled(vols[0]) || (vols[k]->info.scl_slope == vols[0]->info.scl_slope &&
                                      vols[k]->info.scl_inter == vols[0]->info.scl_inter));
    kd_status s = KD_OK;
    if (!same) {
        float *all = malloc(4 * n * sizeof *all);
        if (!all) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
        for (int k = 0; k < 4; k++) memcpy(all + k * n, vols[k]->data, n * sizeof *all);
        s = kd_nifti_write(path, vols[0], 4, KD_DT_FLOAT32, all, NULL);
        free(all);
        return s;
    }
    void *raw[4] = {NULL};
    int dt = 0;
    kd_nifti_write_opts wo;
    for (int k = 0; k < 4 && !s; k++) s = raw_volume(vols[k], 0, &raw[k], &dt, &wo);
    size_t bytes = dt == KD_DT_UINT8 || dt == KD_DT_INT8 ? 1 : dt == KD_DT_INT16 || dt == KD_DT_UINT16 ? 2 : 4;
    unsigned char *all = s ? NULL : malloc(4 * n * bytes);
    if (!s && !all) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
    for (int k = 0; k < 4 && !s; k++) memcpy(all + k * n * bytes, raw[k], n * bytes);
    if (!s) s = kd_nifti_write(path, vols[0], 4, dt, all, &wo);
    free(all);
    for (int k = 0; k < 4; k++) free(raw[k]);
    return s;
}

/* ------------------------------------------------------------ labels ---- */

/* A label file of ds's convention as a label file of table `to`. */
static kd_status convert_labels(const kd_dataset *ds, const char *src, const kd_label_table *to, const char *dst) {
    kd_volume *v = NULL;
    kd_status s = kd_nifti_read(src, &v);
    if (s) return s;
    if (v->nt != 1) {
        kd_volume_free(v);
        return kd_fail(KD_ERR_FORMAT, "%s: %d volumes: a soft annotation, not a label map; only label maps "
                       "convert", src, v->nt);
    }
    size_t n = (size_t)v->nx * v->ny * v->nz;
    uint8_t *lab = malloc(n);
    if (!lab) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", src);
    for (size_t i = 0; i < n && !s; i++) {
        float x = v->data[i];
        int r = x == rintf(x) && x >= 0 && x <= 255 ? ds->labels.regions[(int)x] : -1;
        if (r < 0) {
            char set[1024];
            kd_label_table_describe(&ds->labels, set, sizeof set);
            s = kd_fail(KD_ERR_FORMAT, "%s: label %g at voxel %zu is not one of %s (%s)", src, (double)x, i, set,
                        ds->label_source);
            break;
        }
        lab[i] = r == 0 ? 0 : r == 1 ? to->edema : r == 3 ? to->core : to->enhancing;
    }
    if (!s) s = kd_nifti_write(dst, v, 1, KD_DT_UINT8, lab, NULL);
    free(lab);
    kd_volume_free(v);
    return s;
}

/* ------------------------------------------------------------- cases ---- */

static const char *const s18[] = {"_t1", "_t1ce", "_t2", "_flair", "_seg"};
static const char *const s23[] = {"-t1n", "-t1c", "-t2w", "-t2f", "-seg"};
static const int msd_order[4] = {KD_MOD_FLAIR, KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2};

/* Where modality m (k = 4: the labels) of case `name` goes under dir in layout l. */
static kd_status target_path(const char *dir, kd_layout l, const char *name, int test, int k, char *out, size_t n) {
    if (l == KD_LAYOUT_BRATS2018 || l == KD_LAYOUT_BRATS2023)
        return kd_path_printf(out, n, "%s/%s/%s%s.nii.gz", dir, name, name,
                              (l == KD_LAYOUT_BRATS2018 ? s18 : s23)[k]);
    const char *split = test ? "Ts" : "Tr";
    if (k == 4) return kd_path_printf(out, n, "%s/labels%s/%s.nii.gz", dir, split, name);
    if (l == KD_LAYOUT_MSD) return kd_path_printf(out, n, "%s/images%s/%s.nii.gz", dir, split, name);
    return kd_path_printf(out, n, "%s/images%s/%s_%04d.nii.gz", dir, split, name, k);
}

/* Headers of a case's files: readable NIfTI, each modality one 3-D volume (or the
 * Decathlon's 4-D file), every file on one grid. */
static kd_status check_case(const kd_dataset *ds, const kd_ds_case *c) {
    kd_volume *first = NULL;
    kd_status s = KD_OK;
    for (int k = 0; k <= KD_MAX_MODALITIES && !s; k++) {
        const char *p = k < KD_MAX_MODALITIES ? c->images[k] : c->label;
        if (!p) continue;
        kd_volume *v = NULL;
        if ((s = kd_nifti_read_header(p, &v))) break;
        int want = k < KD_MAX_MODALITIES && ds->layout == KD_LAYOUT_MSD ? c->volume[k] + 1 : 1;
        if (ds->layout == KD_LAYOUT_MSD && k < KD_MAX_MODALITIES ? v->nt < want : v->nt != 1)
            s = kd_fail(KD_ERR_SHAPE, "%s: %d volume(s), expected %s", p, v->nt,
                        ds->layout == KD_LAYOUT_MSD && k < KD_MAX_MODALITIES ? "4 (FLAIR, T1w, T1gd, T2w)" : "1");
        else if (first && (v->nx != first->nx || v->ny != first->ny || v->nz != first->nz))
            s = kd_fail(KD_ERR_SHAPE, "case %s: %s is %dx%dx%d but %s is %dx%dx%d", c->name, p, v->nx, v->ny, v->nz,
                        first->path, first->nx, first->ny, first->nz);
        if (!first && !s) first = v;
        else kd_volume_free(v);
    }
    kd_volume_free(first);
    return s;
}

static kd_status convert_case(const kd_dataset *ds, const kd_ds_case *c, kd_layout to, const kd_label_table *tt,
                              const char *dir, int test) {
    char path[KD_PATH_MAX];
    kd_status s = check_case(ds, c);
    if (!s && (to == KD_LAYOUT_BRATS2018 || to == KD_LAYOUT_BRATS2023)) {
        if (!(s = kd_path_join(path, sizeof path, dir, c->name))) s = kd_mkdirs(path);
    }
    if (s) return s;
    kd_volume *vols[KD_MAX_MODALITIES] = {NULL};
    if (to == KD_LAYOUT_MSD) {
        s = target_path(dir, to, c->name, test, 0, path, sizeof path);
        if (!s && ds->layout == KD_LAYOUT_MSD) s = copy_file(c->images[0], path); /* the same 4-D file */
        else if (!s) {
            for (int k = 0; k < 4 && !s; k++) s = kd_nifti_read(c->images[msd_order[k]], &vols[k]);
            if (!s) s = write_4d(path, vols);
        }
    } else if (ds->layout == KD_LAYOUT_MSD) {
        kd_volume *v = NULL;
        s = kd_nifti_read(c->images[0], &v);
        for (int m = 0; m < KD_MAX_MODALITIES && !s; m++)
            if (!(s = target_path(dir, to, c->name, test, m, path, sizeof path))) s = write_volume(path, v, c->volume[m]);
        kd_volume_free(v);
    } else {
        for (int m = 0; m < KD_MAX_MODALITIES && !s; m++)
            if (!(s = target_path(dir, to, c->name, test, m, path, sizeof path))) s = copy_file(c->images[m], path);
    }
    for (int k = 0; k < 4; k++) kd_volume_free(vols[k]);
    if (!s && c->label && !(s = target_path(dir, to, c->name, test, 4, path, sizeof path)))
        s = convert_labels(ds, c->label, tt, path);
    return s ? kd_fail_context(s, "case %s", c->name) : KD_OK;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* An empty folder, or nothing: 1. */
static int empty_or_absent(const char *dir) {
    struct stat st;
    if (lstat(dir, &st) != 0) return 1;
    if (!S_ISDIR(st.st_mode)) return 0;
    char **names;
    int n;
    if (kd_ds_list_dir(dir, &names, &n)) return 0;
    kd_ds_free_names(names, n);
    return n == 0; /* rename() replaces an empty folder; a hidden entry makes it fail */
}

kd_status kd_dataset_convert(const kd_dataset *ds, const char *folder, const kd_convert_opts *o) {
    if (!ds || !folder || !*folder || !o)
        return kd_fail(KD_ERR_INVALID_ARG, "convert: need a dataset, a folder and options");
    kd_layout to = o->to;
    if (to == KD_LAYOUT_AUTO) return kd_fail(KD_ERR_INVALID_ARG, "convert: the target layout is required");
    for (int m = 0; m < KD_MAX_MODALITIES; m++)
        if (ds->nch != KD_MAX_MODALITIES || ds->mod[m] != m)
            return kd_fail(KD_ERR_INVALID_ARG, "convert: the dataset must be opened with all four modalities "
                           "(t1, t1ce, t2, flair) in that order");
    char dir[KD_PATH_MAX], tmp[KD_PATH_MAX];
    kd_status s = kd_path_printf(dir, sizeof dir, "%s", folder);
    if (s) return s;
    for (size_t len = strlen(dir); len > 1 && dir[len - 1] == '/';) dir[--len] = 0;
    if (!empty_or_absent(dir))
        return kd_fail(KD_ERR_INVALID_ARG, "%s exists and is not an empty folder: convert writes a whole new "
                       "dataset; choose another --out or remove it", dir);
    /* written whole under a temporary name next to dir, renamed when complete */
    if ((s = kd_tmp_name(dir, tmp, sizeof tmp)) || (s = kd_mkdirs(tmp))) return s;
    kd_label_table tt;
    kd_label_table_of_layout(to, &tt);
    for (int i = 0; i < ds->n && !s; i++) {
        const kd_ds_case *c = &ds->cases[i];
        /* MSD and nnU-Net: cases from imagesTs/ and cases without labels go to imagesTs/ */
        int is_test = c->test || !c->label;
        if (to == KD_LAYOUT_MSD || to == KD_LAYOUT_NNUNET) {
            static const char *const sub[] = {"imagesTr", "labelsTr", "imagesTs", "labelsTs"};
            char p[KD_PATH_MAX];
            int k = is_test ? 2 : 0;
            if (!(s = kd_path_join(p, sizeof p, tmp, sub[k]))) s = kd_mkdirs(p);
            if (!s && c->label && !(s = kd_path_join(p, sizeof p, tmp, sub[k + 1]))) s = kd_mkdirs(p);
        }
        if (!s) s = convert_case(ds, c, to, &tt, tmp, is_test);
        if (!s && o->progress) o->progress(o->user, i + 1, ds->n, c->name);
    }
    if (!s && (to == KD_LAYOUT_MSD || to == KD_LAYOUT_NNUNET)) {
        char name[KD_PATH_MAX + 32];
        snprintf(name, sizeof name, "converted by kdseg from %s", ds->dir);
        s = kd_layout_write_json(tmp, to, name);
    }
    if (!s && rename(tmp, dir) != 0)
        s = kd_fail(KD_ERR_IO, "%s: cannot rename the finished dataset %s into place: %s", dir, tmp, strerror(errno));
    if (s) nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return s;
}
