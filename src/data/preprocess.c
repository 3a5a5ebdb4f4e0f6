/* Loading a case preprocessed as the paper's code does: crop to the nonzero bounding
 * box over all modalities, z-score each modality over its nonzero voxels, pad to a
 * multiple of 16; labels to (WT, TC, ET) region maps on the same grid. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_internal.h"
#include "data_internal.h"
#include "dataset_internal.h"

#define KD_AFFINE_TOL 1e-3 /* mm */

void kd_case_free(kd_case *c) {
    if (!c) return;
    free(c->image);
    free(c->target);
    kd_volume_free(c->geom);
    free(c);
}

static int round16(int n) { return (n + 15) / 16 * 16; }

/* Checks that v has the grid of ref (dims and affine). */
static kd_status same_grid(const char *casename, const kd_volume *ref, const kd_volume *v) {
    if (v->nx != ref->nx || v->ny != ref->ny || v->nz != ref->nz)
        return kd_fail(KD_ERR_SHAPE,
                       "case %s: dimensions of %s (%d x %d x %d) disagree with %s (%d x %d x %d)",
                       casename, v->path, v->nx, v->ny, v->nz, ref->path, ref->nx, ref->ny,
                       ref->nz);
    double d = kd_volume_affine_diff(ref, v);
    if (d > KD_AFFINE_TOL)
        return kd_fail(KD_ERR_SHAPE,
                       "case %s: affine of %s disagrees with %s (largest difference %g mm)",
                       casename, v->path, ref->path, d);
    return KD_OK;
}

/* Fills the crop box, padding and z-score statistics, and the image. chan[ch]: the
 * original (D, H, W) data of each channel. */
static kd_status preprocess_image(kd_case *c, const char *file, const float *const *chan) {
    const int D = c->orig[0], H = c->orig[1], W = c->orig[2], C = c->channels;
    const size_t plane = (size_t)H * W;
    int lo[3] = {D, H, W}, hi[3] = {0, 0, 0};
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++) {
            size_t row = z * plane + (size_t)y * W;
            for (int x = 0; x < W; x++) {
                int nz = 0;
                for (int ch = 0; ch < C && !nz; ch++)
                    nz = chan[ch][row + x] != 0;
                if (!nz) continue;
                if (z < lo[0]) lo[0] = z;
                if (z >= hi[0]) hi[0] = z + 1;
                if (y < lo[1]) lo[1] = y;
                if (y >= hi[1]) hi[1] = y + 1;
                if (x < lo[2]) lo[2] = x;
                if (x >= hi[2]) hi[2] = x + 1;
            }
        }
    if (hi[0] == 0)
        return kd_fail(KD_ERR_FORMAT, "case %s: every voxel of every modality is zero (%s)",
                       c->name, file);
    int dims[3];
    for (int a = 0; a < 3; a++) {
        c->crop_lo[a] = lo[a];
        c->crop_hi[a] = hi[a];
        dims[a] = round16(hi[a] - lo[a]);
        c->pad_lo[a] = (dims[a] - (hi[a] - lo[a])) / 2;
    }
    c->d = dims[0];
    c->h = dims[1];
    c->w = dims[2];
    size_t n = (size_t)c->d * c->h * c->w;
    c->image = calloc((size_t)C * n, sizeof(float));
    if (!c->image) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: image", c->name);
    size_t nvox = (size_t)D * plane;
    int constant = 0;
    for (int ch = 0; ch < C; ch++) {
        const float *v = chan[ch];
        double s = 0, s2 = 0;
        int64_t cnt = 0;
        float mn = v[0], mx = v[0];
        for (size_t i = 0; i < nvox; i++) {
            float x = v[i];
            if (x < mn) mn = x;
            if (x > mx) mx = x;
            if (x != 0) {
                s += x;
                s2 += (double)x * x;
                cnt++;
            }
        }
        double mean = cnt ? s / cnt : 0;
        double var = cnt ? s2 / cnt - mean * mean : 0;
        double sd = var > 0 ? sqrt(var) : 0;
        c->raw_min[ch] = mn;
        c->raw_max[ch] = mx;
        c->nonzero[ch] = cnt;
        c->mean[ch] = (float)mean;
        c->std[ch] = (float)sd;
        /* A constant modality keeps unit scale (only its offset is removed). */
        double inv = sd > 1e-8 ? 1.0 / sd : 1.0;
        constant += !(sd > 1e-8);
        float *dst = c->image + ch * n;
        for (int z = lo[0]; z < hi[0]; z++)
            for (int y = lo[1]; y < hi[1]; y++) {
                const float *srow = v + z * plane + (size_t)y * W;
                float *drow =
                    dst +
                    ((size_t)(z - lo[0] + c->pad_lo[0]) * c->h + (y - lo[1] + c->pad_lo[1])) *
                        c->w +
                    c->pad_lo[2] - lo[2];
                for (int x = lo[2]; x < hi[2]; x++)
                    drow[x] = srow[x] != 0 ? (float)((srow[x] - mean) * inv) : 0.0f;
            }
    }
    /* nothing but zeros after z-scoring: whatever a model said of it would be noise (a
     * 1x1x1 volume came out "tumour") */
    if (constant == C)
        return kd_fail(KD_ERR_FORMAT, "case %s: every modality is constant over the %lld nonzero "
                       "voxel(s) of a %dx%dx%d volume: no image contrast to segment (%s)", c->name,
                       (long long)c->nonzero[0], W, H, D, file);
    return KD_OK;
}

/* Region targets from a label or annotation volume (original grid). */
static kd_status preprocess_target(kd_case *c, const kd_dataset *ds, const kd_volume *lab) {
    const kd_label_table *t = &ds->labels;
    const int D = c->orig[0], H = c->orig[1], W = c->orig[2];
    const size_t plane = (size_t)H * W, nvox = (size_t)D * plane;
    size_t n = (size_t)c->d * c->h * c->w;
    c->target = calloc(3 * n, sizeof(float));
    if (!c->target) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: target", c->name);
    int soft = lab->nt == 3;
    if (!soft && lab->nt != 1)
        return kd_fail(KD_ERR_SHAPE,
                       "%s: a label map must be 3-D, or 4-D with 3 region volumes (WT, TC, ET); "
                       "this one has %d volumes",
                       lab->path, lab->nt);
    int u8 = lab->info.datatype == KD_DT_UINT8 &&
             !(isfinite(lab->info.scl_slope) && lab->info.scl_slope != 0);
    /* Check every voxel (also outside the crop box). */
    for (size_t i = 0; i < nvox * lab->nt; i++) {
        float v = lab->data[i];
        int bad;
        if (soft)
            bad = u8 ? 0 : !(v >= 0 && v <= 1);
        else
            bad = v != rintf(v) || !(v >= 0 && v <= 255) || t->regions[(int)v] < 0;
        if (bad) {
            size_t r = i % nvox;
            if (soft)
                return kd_fail(KD_ERR_FORMAT,
                               "%s: region probability %g at i=%zu j=%zu k=%zu is outside [0, 1]",
                               lab->path, (double)v, r % W, (r / W) % H, r / plane);
            char set[1024];
            kd_label_table_describe(t, set, sizeof set);
            return kd_fail(KD_ERR_FORMAT,
                           "%s: label %g at i=%zu j=%zu k=%zu is not one of %s (%s)",
                           lab->path, (double)v, r % W, (r / W) % H, r / plane, set,
                           ds->label_source);
        }
    }
    for (int z = c->crop_lo[0]; z < c->crop_hi[0]; z++)
        for (int y = c->crop_lo[1]; y < c->crop_hi[1]; y++)
            for (int x = c->crop_lo[2]; x < c->crop_hi[2]; x++) {
                size_t si = z * plane + (size_t)y * W + x;
                size_t di = ((size_t)(z - c->crop_lo[0] + c->pad_lo[0]) * c->h +
                             (y - c->crop_lo[1] + c->pad_lo[1])) *
                                c->w +
                            (x - c->crop_lo[2] + c->pad_lo[2]);
                if (soft) {
                    for (int r = 0; r < 3; r++) {
                        float v = lab->data[r * nvox + si];
                        c->target[r * n + di] = u8 ? v / 255.0f : v;
                    }
                } else {
                    int m = t->regions[(int)lab->data[si]];
                    for (int r = 0; r < 3; r++)
                        c->target[r * n + di] = (m >> r) & 1 ? 1.0f : 0.0f;
                }
            }
    return KD_OK;
}

void kd_case_tumour_bbox(kd_case *c) {
    for (int a = 0; a < 3; a++) {
        c->tumour_lo[a] = 0;
        c->tumour_hi[a] = 0;
    }
    if (!c->target) return;
    int lo[3] = {c->d, c->h, c->w}, hi[3] = {0, 0, 0};
    size_t i = 0;
    for (int z = 0; z < c->d; z++)
        for (int y = 0; y < c->h; y++)
            for (int x = 0; x < c->w; x++, i++) {
                if (!(c->target[i] > 0.5f)) continue;
                int p[3] = {z, y, x};
                for (int a = 0; a < 3; a++) {
                    if (p[a] < lo[a]) lo[a] = p[a];
                    if (p[a] >= hi[a]) hi[a] = p[a] + 1;
                }
            }
    if (hi[0] == 0) return;
    for (int a = 0; a < 3; a++) {
        c->tumour_lo[a] = lo[a];
        c->tumour_hi[a] = hi[a];
    }
}

static kd_status load_fresh(const kd_dataset *ds, int i, kd_case **out) {
    const kd_ds_case *dc = &ds->cases[i];
    kd_case *c = calloc(1, sizeof *c);
    if (!c) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case");
    snprintf(c->name, sizeof c->name, "%s", dc->name);
    c->channels = ds->nch;
    c->labeled = dc->labeled;
    kd_volume *vols[KD_MAX_MODALITIES] = {NULL};
    kd_volume *lab = NULL;
    const float *chan[KD_MAX_MODALITIES];
    kd_status s = KD_OK;
    for (int ch = 0; ch < ds->nch && !s; ch++) {
        /* MSD: every channel comes from the one 4-D file, read once. */
        if (ch > 0 && !strcmp(dc->images[ch], dc->images[0])) {
            vols[ch] = NULL;
            continue;
        }
        s = kd_nifti_read(dc->images[ch], &vols[ch]);
    }
    const kd_volume *ref = vols[0];
    for (int ch = 0; ch < ds->nch && !s; ch++) {
        const kd_volume *v = vols[ch] ? vols[ch] : vols[0];
        int want = ds->layout == KD_LAYOUT_MSD ? dc->volume[ch] + 1 : 1;
        if (ds->layout == KD_LAYOUT_MSD ? v->nt < want : v->nt != 1) {
            s = kd_fail(KD_ERR_SHAPE, "%s: expected %s, found %d volume(s)", v->path,
                        ds->layout == KD_LAYOUT_MSD ? "a 4-D image with 4 volumes (FLAIR, T1w, "
                                                      "T1gd, T2w)"
                                                    : "a 3-D volume",
                        v->nt);
            break;
        }
        if (v != ref) s = same_grid(c->name, ref, v);
        chan[ch] = v->data + (size_t)dc->volume[ch] * v->nx * v->ny * v->nz;
    }
    if (!s) {
        c->orig[0] = ref->nz;
        c->orig[1] = ref->ny;
        c->orig[2] = ref->nx;
        s = preprocess_image(c, ref->path, chan);
    }
    if (!s) s = kd_volume_copy_header(ref, &c->geom);
    for (int ch = 0; ch < KD_MAX_MODALITIES; ch++)
        kd_volume_free(vols[ch]);
    if (!s && dc->label) {
        s = kd_nifti_read(dc->label, &lab);
        if (!s) s = same_grid(c->name, c->geom, lab);
        if (!s) s = preprocess_target(c, ds, lab);
        kd_volume_free(lab);
    }
    if (s) {
        kd_case_free(c);
        return s;
    }
    kd_case_tumour_bbox(c);
    *out = c;
    return KD_OK;
}

kd_status kd_case_load(const kd_dataset *ds, int i, kd_case **out) {
    *out = NULL;
    if (!ds || i < 0 || i >= ds->n)
        return kd_fail(KD_ERR_INVALID_ARG, "case index %d out of range (%d cases)", i,
                       ds ? ds->n : 0);
    if (ds->cache_dir && kd_cache_load(ds, i, out) == KD_OK && *out) return KD_OK;
    kd_status s = load_fresh(ds, i, out);
    if (s) return s;
    if (ds->cache_dir && kd_cache_store(ds, i, *out) != KD_OK)
        kd_log(KD_LOG_WARN, "case %s: not cached: %s", ds->cases[i].name, kd_last_error());
    return KD_OK;
}

/* ------------------------------------------------------- grid mapping -- */

void kd_case_crop(const kd_case *c, const float *src, int n, float *dst) {
    const int H = c->orig[1], W = c->orig[2];
    const size_t on = (size_t)c->orig[0] * H * W, pn = (size_t)c->d * c->h * c->w;
    memset(dst, 0, (size_t)n * pn * sizeof(float));
    const int len = c->crop_hi[2] - c->crop_lo[2];
    for (int k = 0; k < n; k++)
        for (int z = c->crop_lo[0]; z < c->crop_hi[0]; z++)
            for (int y = c->crop_lo[1]; y < c->crop_hi[1]; y++) {
                const float *s = src + k * on + ((size_t)z * H + y) * W + c->crop_lo[2];
                float *d = dst + k * pn +
                           ((size_t)(z - c->crop_lo[0] + c->pad_lo[0]) * c->h +
                            (y - c->crop_lo[1] + c->pad_lo[1])) *
                               c->w +
                           c->pad_lo[2];
                memcpy(d, s, len * sizeof(float));
            }
}

void kd_case_uncrop(const kd_case *c, const float *src, int n, float outside, float *dst) {
    const int H = c->orig[1], W = c->orig[2];
    const size_t on = (size_t)c->orig[0] * H * W, pn = (size_t)c->d * c->h * c->w;
    for (size_t i = 0; i < (size_t)n * on; i++)
        dst[i] = outside;
    const int len = c->crop_hi[2] - c->crop_lo[2];
    for (int k = 0; k < n; k++)
        for (int z = c->crop_lo[0]; z < c->crop_hi[0]; z++)
            for (int y = c->crop_lo[1]; y < c->crop_hi[1]; y++) {
                float *d = dst + k * on + ((size_t)z * H + y) * W + c->crop_lo[2];
                const float *s = src + k * pn +
                                 ((size_t)(z - c->crop_lo[0] + c->pad_lo[0]) * c->h +
                                  (y - c->crop_lo[1] + c->pad_lo[1])) *
                                     c->w +
                                 c->pad_lo[2];
                memcpy(d, s, len * sizeof(float));
            }
}

void kd_case_brain_mask(const kd_case *c, uint8_t *mask) {
    const int H = c->orig[1], W = c->orig[2];
    const size_t pn = (size_t)c->d * c->h * c->w;
    memset(mask, 0, (size_t)c->orig[0] * H * W);
    for (int z = c->crop_lo[0]; z < c->crop_hi[0]; z++)
        for (int y = c->crop_lo[1]; y < c->crop_hi[1]; y++)
            for (int x = c->crop_lo[2]; x < c->crop_hi[2]; x++) {
                size_t p = ((size_t)(z - c->crop_lo[0] + c->pad_lo[0]) * c->h +
                            (y - c->crop_lo[1] + c->pad_lo[1])) * c->w +
                           (x - c->crop_lo[2] + c->pad_lo[2]);
                uint8_t m = 0;
                for (int ch = 0; ch < c->channels && !m; ch++) m = c->image[ch * pn + p] != 0;
                mask[((size_t)z * H + y) * W + x] = m;
            }
}

kd_status kd_case_write_labels(const kd_case *c, const char *path, const uint8_t *labels) {
    if (!c || !c->geom || !labels) return kd_fail(KD_ERR_INVALID_ARG, "%s: no case", path);
    return kd_nifti_write(path, c->geom, 1, KD_DT_UINT8, labels, NULL);
}

kd_status kd_case_write_probs(const kd_case *c, const char *path, const float *probs,
                              int quantise) {
    if (!c || !c->geom || !probs) return kd_fail(KD_ERR_INVALID_ARG, "%s: no case", path);
    /* what the file holds, in its header (NIFTI_INTENT_ESTIMATE = 1001) */
    kd_nifti_meta meta = {1001, "p WT,TC,ET", NULL};
    if (!quantise) {
        meta.descrip = "kdseg probabilities: dim 4 = p(WT),p(TC),p(ET), float32 0..1";
        return kd_nifti_write_meta(path, c->geom, 3, KD_DT_FLOAT32, probs, NULL, &meta);
    }
    meta.descrip = "kdseg probabilities: dim 4 = p(WT),p(TC),p(ET), u8 x scl_slope 1/255";
    kd_nifti_write_opts o = {0, 1.0 / 255.0, 0};
    size_t n = 3 * (size_t)c->orig[0] * c->orig[1] * c->orig[2];
    uint8_t *q = malloc(n);
    if (!q) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: quantising", path);
    for (size_t i = 0; i < n; i++) {
        float p = probs[i];
        p = p > 0 ? (p < 1 ? p : 1) : 0; /* NaN -> 0 */
        q[i] = (uint8_t)lrintf(p * 255.0f);
    }
    kd_status s = kd_nifti_write_meta(path, c->geom, 3, KD_DT_UINT8, q, &o, &meta);
    free(q);
    return s;
}
