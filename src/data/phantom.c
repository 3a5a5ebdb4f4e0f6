/* The synthetic phantom cohort: a skull-stripped brain with a folded cortex, white
 * matter, sulcal CSF, a falx and lateral ventricles; one or more tumours of edema, a
 * core with an enhancing rim (sometimes none, sometimes faint, sometimes patchy) and
 * necrosis; four contrasts with partial volumes, textures, a bias field, noise and a
 * per-case scale. Tissues are soft memberships of smoothly deformed blobs; labels are
 * their 0.5 level sets. Deterministic in (seed, case index). */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data_internal.h"
#include "dataset_internal.h"

/* ------------------------------------------------------- value noise -- */

typedef struct vnoise {
    int g;
    float *v; /* g^3 values in [-1, 1] */
} vnoise;

static int vnoise_init(vnoise *n, int g, kd_rng *r) {
    if (g < 2) g = 2;
    n->g = g;
    n->v = malloc((size_t)g * g * g * sizeof(float));
    if (!n->v) return -1;
    for (int i = 0; i < g * g * g; i++)
        n->v[i] = (float)(2 * kd_rng_uniform(r) - 1);
    return 0;
}

/* Smooth noise at (u, v, w) in [0, 1]^3 (clamped), in about [-1, 1]. */
static float vnoise_at(const vnoise *n, float u, float v, float w) {
    const int g = n->g;
    float p[3] = {u, v, w}, f[3];
    int i[3];
    for (int a = 0; a < 3; a++) {
        float x = p[a] * (g - 1);
        if (x < 0) x = 0;
        if (x > g - 1) x = (float)(g - 1);
        int k = (int)x;
        if (k > g - 2) k = g - 2;
        float t = x - k;
        i[a] = k;
        f[a] = t * t * (3 - 2 * t);
    }
    const float *b = n->v + ((size_t)i[0] * g + i[1]) * g + i[2];
    const size_t sy = g, sz = (size_t)g * g;
    float c00 = b[0] + f[2] * (b[1] - b[0]);
    float c01 = b[sy] + f[2] * (b[sy + 1] - b[sy]);
    float c10 = b[sz] + f[2] * (b[sz + 1] - b[sz]);
    float c11 = b[sz + sy] + f[2] * (b[sz + sy + 1] - b[sz + sy]);
    float c0 = c00 + f[1] * (c01 - c00), c1 = c10 + f[1] * (c11 - c10);
    return c0 + f[0] * (c1 - c0);
}

/* --------------------------------------------------------------- blobs -- */

/* A deformed ellipsoid: boundary at rho = 1 + amp * noise(direction). */
typedef struct blob {
    float c[3], r[3];
    float amp;
    vnoise *shape;
    float soft; /* boundary width in voxels */
} blob;

/* Membership in [0, 1] of voxel p. */
static float blob_at(const blob *b, const float p[3]) {
    float d[3], rho2 = 0;
    for (int a = 0; a < 3; a++) {
        d[a] = (p[a] - b->c[a]) / b->r[a];
        rho2 += d[a] * d[a];
    }
    float lim = 1 + fabsf(b->amp) + 0.1f;
    float rmin = fminf(b->r[0], fminf(b->r[1], b->r[2]));
    if (rho2 > lim * lim * (1 + b->soft / rmin) * (1 + b->soft / rmin)) return 0;
    float rho = sqrtf(rho2);
    float bound = 1;
    if (b->shape && rho > 1e-6f)
        bound += b->amp * vnoise_at(b->shape, 0.5f + 0.5f * d[0] / rho, 0.5f + 0.5f * d[1] / rho,
                                    0.5f + 0.5f * d[2] / rho);
    /* Signed distance along the ray, in voxels (approximately). */
    float rmean = (b->r[0] + b->r[1] + b->r[2]) / 3;
    float sd = (bound - rho) * rmean;
    float m = 0.5f + sd / b->soft;
    return m < 0 ? 0 : (m > 1 ? 1 : m);
}

/* ------------------------------------------------------------- tissues -- */

enum { T_WM, T_GM, T_CSF, T_ED, T_NEC, T_ET, T_NET, T_COUNT };

/* Base intensities (t1, t1ce, t2, flair), WM t1 = 1. */
static const float base_int[T_COUNT][4] = {
    {1.00f, 1.00f, 0.55f, 0.60f}, /* white matter */
    {0.72f, 0.74f, 0.80f, 0.78f}, /* grey matter */
    {0.28f, 0.30f, 1.50f, 0.18f}, /* CSF: dark on FLAIR, bright on T2 */
    {0.62f, 0.66f, 1.15f, 1.05f}, /* edema: bright on T2 and FLAIR */
    {0.40f, 0.36f, 1.30f, 0.75f}, /* necrosis: dark on T1ce */
    {0.70f, 1.30f, 0.85f, 0.95f}, /* enhancing: bright on T1ce */
    /* non-enhancing core: hypointense on T1ce compared with T1 and with the edema around
     * it, as the BraTS protocol delineates NCR/NET; otherwise it equals edema in every
     * contrast and the tumour core of a case without enhancement cannot be learned */
    {0.52f, 0.48f, 1.05f, 0.88f},
};

#define KD_MAX_FOCI 3

typedef struct focus {
    blob edema, core, nec;
    int has_et, has_nec;
    float net_frac; /* share of the rim that does not enhance */
} focus;

typedef struct phantom {
    int D, H, W;
    blob brain, vent[2];
    vnoise brain_shape, fold, sulci, vent_shape[2], tex[T_COUNT], bias[4], net;
    vnoise tumour_shape[KD_MAX_FOCI][3];
    focus foci[KD_MAX_FOCI];
    int nfoci;
    float inten[T_COUNT][4];
    float wm_depth; /* rho of the GM/WM boundary */
    float fissure;  /* half width of the interhemispheric fissure */
    float noise_sd, bias_amp, scale[4];
} phantom;

static void phantom_free(phantom *p) {
    free(p->brain_shape.v);
    free(p->fold.v);
    free(p->sulci.v);
    free(p->net.v);
    for (int i = 0; i < 2; i++)
        free(p->vent_shape[i].v);
    for (int i = 0; i < T_COUNT; i++)
        free(p->tex[i].v);
    for (int i = 0; i < 4; i++)
        free(p->bias[i].v);
    for (int i = 0; i < KD_MAX_FOCI; i++)
        for (int k = 0; k < 3; k++)
            free(p->tumour_shape[i][k].v);
}

static float rr(kd_rng *r, double lo, double hi) { return (float)kd_rng_range(r, lo, hi); }

/* A point inside the brain at normalised radius below rmax. */
static void brain_point(const phantom *p, kd_rng *r, float rmax, float out[3]) {
    for (int tries = 0; tries < 100; tries++) {
        float d[3], n2 = 0;
        for (int a = 0; a < 3; a++) {
            d[a] = rr(r, -1, 1);
            n2 += d[a] * d[a];
        }
        if (n2 > 1) continue;
        for (int a = 0; a < 3; a++)
            out[a] = p->brain.c[a] + d[a] * rmax * p->brain.r[a];
        return;
    }
    for (int a = 0; a < 3; a++)
        out[a] = p->brain.c[a];
}

static int setup(phantom *p, const int size[3], uint64_t seed, int index) {
    memset(p, 0, sizeof *p);
    p->D = size[0];
    p->H = size[1];
    p->W = size[2];
    kd_rng r = kd_rng_make(seed, 0x5048414e544f4dULL, (uint64_t)index, 0);
    const float dims[3] = {(float)p->D, (float)p->H, (float)p->W};
    float mind = fminf(dims[0], fminf(dims[1], dims[2]));
    int err = 0;
    /* Brain: an ellipsoid filling ~80% of the field, with a lumpy outline. */
    err |= vnoise_init(&p->brain_shape, 7, &r);
    for (int a = 0; a < 3; a++) {
        p->brain.c[a] = dims[a] / 2 + rr(&r, -0.03, 0.03) * dims[a];
        p->brain.r[a] = dims[a] * rr(&r, 0.36, 0.41);
    }
    p->brain.amp = rr(&r, 0.05, 0.09);
    p->brain.shape = &p->brain_shape;
    p->brain.soft = 1.0f;
    /* Cortex: folds of the GM/WM boundary and sulci, finer on larger grids. */
    int gf = (int)(mind / 7) + 3;
    err |= vnoise_init(&p->fold, gf, &r);
    err |= vnoise_init(&p->sulci, gf + 2, &r);
    p->wm_depth = 1.0f - rr(&r, 4.5, 6.5) / (p->brain.r[1]);
    p->fissure = rr(&r, 0.5, 1.2);
    /* Lateral ventricles, either side of the midline (W is left-right). */
    float vs = rr(&r, 0.7, 1.4);
    for (int k = 0; k < 2; k++) {
        err |= vnoise_init(&p->vent_shape[k], 5, &r);
        blob *v = &p->vent[k];
        v->c[0] = p->brain.c[0] + p->brain.r[0] * rr(&r, 0.0, 0.12);
        v->c[1] = p->brain.c[1] + p->brain.r[1] * rr(&r, -0.08, 0.05);
        v->c[2] = p->brain.c[2] + (k ? 1 : -1) * p->brain.r[2] * rr(&r, 0.10, 0.16) * vs;
        v->r[0] = p->brain.r[0] * 0.16f * vs;
        v->r[1] = p->brain.r[1] * 0.42f * sqrtf(vs);
        v->r[2] = p->brain.r[2] * 0.09f * vs;
        v->amp = 0.3f;
        v->shape = &p->vent_shape[k];
        v->soft = 1.0f;
    }
    /* Textures per tissue, bias fields per modality. */
    for (int t = 0; t < T_COUNT; t++)
        err |= vnoise_init(&p->tex[t], (int)(mind / 4) + 2, &r);
    for (int m = 0; m < 4; m++)
        err |= vnoise_init(&p->bias[m], 4, &r);
    err |= vnoise_init(&p->net, (int)(mind / 6) + 2, &r);
    /* Contrasts: per-case jitter; some cases with faint enhancement or faint edema. */
    for (int t = 0; t < T_COUNT; t++)
        for (int m = 0; m < 4; m++)
            p->inten[t][m] = base_int[t][m] * rr(&r, 0.95, 1.05);
    float enh = rr(&r, 0.0, 1.0) < 0.35f ? rr(&r, 0.06, 0.15) : rr(&r, 0.15, 0.55);
    p->inten[T_ET][1] = p->inten[T_WM][1] * (1 + enh);
    /* Edema contrast relative to the base. Its floor keeps faint edema visible on FLAIR and
     * T2 (at least ~1.2x grey matter, as peritumoural edema is in BraTS, whose whole tumour
     * is delineated on FLAIR): below about 0.7 edema equals grey matter in all four
     * contrasts, a label no model can learn from the images (it made every model mark
     * grey matter as edema in the demo's test cases). */
    float ed = rr(&r, 0.75, 1.0);
    for (int m = 0; m < 4; m++)
        p->inten[T_ED][m] = p->inten[T_WM][m] + ed * (p->inten[T_ED][m] - p->inten[T_WM][m]);
    p->noise_sd = rr(&r, 0.02, 0.05);
    p->bias_amp = rr(&r, 0.05, 0.2);
    for (int m = 0; m < 4; m++)
        p->scale[m] = rr(&r, 300, 1500);

    /* Tumours: usually one, sometimes 2-3 foci; some small. */
    double u = kd_rng_uniform(&r);
    p->nfoci = u < 0.15 ? 2 + kd_rng_int(&r, 2) : 1;
    int small_case = kd_rng_uniform(&r) < 0.2;
    int no_et = kd_rng_uniform(&r) < 0.2;
    float unit = mind / 96.0f;
    for (int f = 0; f < p->nfoci; f++) {
        focus *fo = &p->foci[f];
        float re = (small_case || (f > 0 && kd_rng_uniform(&r) < 0.5)) ? rr(&r, 3.0, 6.0) * unit
                                                                       : rr(&r, 8.0, 16.0) * unit;
        float c[3];
        if (kd_rng_uniform(&r) < 0.35) {
            /* Next to a ventricle: edema touching CSF. */
            const blob *v = &p->vent[kd_rng_int(&r, 2)];
            float d[3], n = 0;
            for (int a = 0; a < 3; a++) {
                d[a] = (float)kd_rng_normal(&r);
                n += d[a] * d[a];
            }
            n = sqrtf(n) + 1e-6f;
            for (int a = 0; a < 3; a++)
                c[a] = v->c[a] + d[a] / n * (v->r[a] + 0.7f * re);
        } else {
            brain_point(p, &r, 0.62f, c);
        }
        for (int k = 0; k < 3; k++)
            err |= vnoise_init(&p->tumour_shape[f][k], 6, &r);
        float aniso[3];
        for (int a = 0; a < 3; a++)
            aniso[a] = rr(&r, 0.75, 1.3);
        fo->has_et = !no_et;
        fo->has_nec = fo->has_et ? kd_rng_uniform(&r) < 0.8 : 0;
        fo->net_frac = fo->has_et && kd_rng_uniform(&r) < 0.4 ? rr(&r, 0.1, 0.45) : 0;
        float rc = re * rr(&r, 0.5, 0.8), rn = rc * rr(&r, 0.4, 0.75);
        if (re < 8 * unit) rn = fminf(rn, rc - 1.2f);
        blob *bs[3] = {&fo->edema, &fo->core, &fo->nec};
        float radii[3] = {re, rc, rn},
              amps[3] = {rr(&r, 0.2, 0.4), rr(&r, 0.12, 0.25), rr(&r, 0.1, 0.25)};
        float off[3];
        for (int a = 0; a < 3; a++)
            off[a] = rr(&r, -0.15, 0.15) * (re - rc);
        for (int k = 0; k < 3; k++) {
            blob *b = bs[k];
            for (int a = 0; a < 3; a++) {
                b->c[a] = c[a] + (k ? off[a] : 0);
                b->r[a] = fmaxf(radii[k] * aniso[a], 0.8f);
            }
            b->amp = amps[k];
            b->shape = &p->tumour_shape[f][k];
            b->soft = 1.0f;
        }
    }
    return err ? -1 : 0;
}

/* Renders the case. images (4, D, H, W) int16 (t1, t1ce, t2, flair), labels (D, H, W). */
static void render(const phantom *p, uint64_t seed, int index, int16_t *images, uint8_t *labels) {
    const int D = p->D, H = p->H, W = p->W;
    const size_t n = (size_t)D * H * W;
    const float inv[3] = {1.0f / D, 1.0f / H, 1.0f / W};
    kd_rng nr = kd_rng_make(seed, 0x4e4f495345ULL, (uint64_t)index, 1);
    size_t i = 0;
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++, i++) {
                const float pt[3] = {(float)z, (float)y, (float)x};
                const float u[3] = {pt[0] * inv[0], pt[1] * inv[1], pt[2] * inv[2]};
                float b = blob_at(&p->brain, pt);
                if (b < 0.5f) {
                    for (int m = 0; m < 4; m++)
                        images[m * n + i] = 0;
                    labels[i] = 0;
                    continue;
                }
                /* Depth inside the brain (normalised radius) and the cortex. */
                float d2 = 0;
                for (int a = 0; a < 3; a++) {
                    float t = (pt[a] - p->brain.c[a]) / p->brain.r[a];
                    d2 += t * t;
                }
                float rho = sqrtf(d2);
                float fold = vnoise_at(&p->fold, u[0], u[1], u[2]);
                float wm_edge = p->wm_depth - 0.07f * (1 + fold);
                float wm = 0.5f + (wm_edge - rho) * p->brain.r[1] / 1.2f;
                wm = wm < 0 ? 0 : (wm > 1 ? 1 : wm);
                float csf = 0;
                if (wm < 0.5f) { /* sulci in the cortical ribbon */
                    float s = vnoise_at(&p->sulci, u[0], u[1], u[2]);
                    csf = (s - 0.45f) * 4;
                    csf = csf < 0 ? 0 : (csf > 1 ? 1 : csf) * (1 - 2 * wm);
                }
                /* Interhemispheric fissure above the ventricles. */
                float fx = fabsf(pt[2] - p->brain.c[2]);
                if (fx < p->fissure + 1 && pt[0] > p->brain.c[0] + 0.25f * p->brain.r[0]) {
                    float f = p->fissure + 1 - fx;
                    csf = fmaxf(csf, f > 1 ? 1 : f);
                }
                float vent = fmaxf(blob_at(&p->vent[0], pt), blob_at(&p->vent[1], pt));
                csf = fmaxf(csf, vent);
                float ed = 0, core = 0, nec = 0, netm = 0;
                int et = 0;
                for (int f = 0; f < p->nfoci; f++) {
                    const focus *fo = &p->foci[f];
                    float e = blob_at(&fo->edema, pt);
                    if (e <= 0) continue;
                    float c = blob_at(&fo->core, pt);
                    ed = fmaxf(ed, e);
                    if (c > core) {
                        core = c;
                        et = fo->has_et;
                        nec = fo->has_nec ? blob_at(&fo->nec, pt) : 0;
                        netm = 0;
                        if (fo->net_frac > 0) {
                            float q = vnoise_at(&p->net, u[0], u[1], u[2]);
                            netm = q < -1 + 2 * fo->net_frac ? 1 : 0;
                        }
                    }
                }
                /* Tumour does not grow into the ventricles; it displaces CSF elsewhere. */
                float tis = 1 - vent;
                ed *= tis;
                core *= tis;
                nec *= tis;
                ed = fmaxf(ed, core);
                csf *= 1 - ed;
                float w[T_COUNT] = {0};
                float healthy = 1 - ed;
                w[T_WM] = healthy * (1 - csf) * wm;
                w[T_GM] = healthy * (1 - csf) * (1 - wm);
                w[T_CSF] = healthy * csf;
                float rim = core - nec;
                w[T_ED] = ed - core;
                w[T_NEC] = nec;
                if (et) {
                    w[T_ET] = rim * (1 - netm);
                    w[T_NET] = rim * netm;
                } else {
                    w[T_NET] = rim;
                }
                for (int m = 0; m < 4; m++) {
                    float v = 0;
                    for (int t = 0; t < T_COUNT; t++) {
                        if (w[t] <= 0) continue;
                        float amp = t >= T_ED ? 0.12f : 0.05f;
                        float tex = vnoise_at(&p->tex[t], u[0], u[1], u[2]) * (m % 2 ? 1 : -1);
                        v += w[t] * p->inten[t][m] * (1 + amp * tex);
                    }
                    float bias = expf(p->bias_amp * vnoise_at(&p->bias[m], u[0], u[1], u[2]));
                    v = v * bias + p->noise_sd * (float)kd_rng_normal(&nr);
                    float q = v * p->scale[m];
                    if (q < 1) q = 1; /* brain voxels stay nonzero */
                    if (q > 32767) q = 32767;
                    images[m * n + i] = (int16_t)lrintf(q);
                }
                uint8_t lab = 0;
                if (ed >= 0.5f) lab = 2;
                if (core >= 0.5f) lab = et && netm < 0.5f ? 4 : 1;
                if (nec >= 0.5f) lab = 1;
                labels[i] = lab;
            }
}

kd_status kd_phantom_generate(const int size[3], uint64_t seed, int index, int16_t *images,
                              uint8_t *labels) {
    for (int a = 0; a < 3; a++)
        if (size[a] < 16 || size[a] > 1024)
            return kd_fail(KD_ERR_INVALID_ARG, "phantom: size %d out of range [16, 1024]", size[a]);
    phantom p;
    if (setup(&p, size, seed, index)) {
        phantom_free(&p);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "phantom case %d", index);
    }
    render(&p, seed, index, images, labels);
    phantom_free(&p);
    return KD_OK;
}

/* ------------------------------------------------------------- cohort -- */

static void relabel(kd_layout l, uint8_t *lab, size_t n) {
    if (l == KD_LAYOUT_BRATS2018) return;
    for (size_t i = 0; i < n; i++) {
        uint8_t v = lab[i];
        if (l == KD_LAYOUT_BRATS2023)
            lab[i] = v == 4 ? 3 : v;
        else
            lab[i] = v == 2 ? 1 : v == 1 ? 2 : v == 4 ? 3 : 0; /* MSD, nnU-Net */
    }
}

static kd_layout cohort_layout(const kd_phantom_opts *o) {
    return o->layout == KD_LAYOUT_AUTO ? KD_LAYOUT_BRATS2018 : o->layout;
}

/* The case's folder name (BraTS) or file stem (MSD). */
static void case_name(kd_layout l, int index, char *name, size_t n) {
    if (l == KD_LAYOUT_BRATS2018) snprintf(name, n, "KDPhantom_%03d", index);
    else if (l == KD_LAYOUT_BRATS2023) snprintf(name, n, "KDPH-%05d-000", index);
    else snprintf(name, n, "KDPH_%03d", index); /* MSD, nnU-Net */
}

static const char *const s18[] = {"t1", "t1ce", "t2", "flair", "seg"};
static const char *const s23[] = {"t1n", "t1c", "t2w", "t2f", "seg"};

/* File k (0-3 the modalities, 4 the labels) of a BraTS case folder cdir. */
static kd_status brats_file(kd_layout l, const char *cdir, const char *name, int k, char *out, size_t n) {
    return kd_path_printf(out, n, "%s/%s%c%s.nii.gz", cdir, name, l == KD_LAYOUT_BRATS2018 ? '_' : '-',
                          l == KD_LAYOUT_BRATS2018 ? s18[k] : s23[k]);
}

/* Removes a folder and everything under it, links not followed. */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}
static int rm_tree(const char *dir) { return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* A BraTS case is written into a temporary folder next to its final one and renamed
 * into place when whole, so a killed run leaves whole cases only. An existing case
 * folder (a cohort regenerated in place) is rewritten file by file, each file whole. */
static kd_status write_case(const char *dir, const kd_phantom_opts *o, int index,
                            const kd_volume *geom, int16_t *img, uint8_t *lab) {
    const size_t n = (size_t)o->size[0] * o->size[1] * o->size[2];
    kd_layout l = cohort_layout(o);
    char path[KD_PATH_MAX], cdir[KD_PATH_MAX], tdir[KD_PATH_MAX], name[64];
    kd_status s = KD_OK;
    relabel(l, lab, n);
    case_name(l, index, name, sizeof name);
    if (l == KD_LAYOUT_MSD) {
        /* the labels first: a run killed between the two files leaves labels without an
         * image, which no scan reads, never an image that looks unlabeled */
        if (!o->unlabeled) {
            s = kd_path_printf(path, sizeof path, "%s/labelsTr/%s.nii.gz", dir, name);
            if (!s) s = kd_nifti_write(path, geom, 1, KD_DT_UINT8, lab, NULL);
            if (s) return s;
        }
        /* 4-D, channels FLAIR, T1w, T1gd, T2w. */
        int16_t *v = malloc(4 * n * sizeof *v);
        if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "phantom case %d", index);
        const int from[4] = {KD_MOD_FLAIR, KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2};
        for (int k = 0; k < 4; k++)
            memcpy(v + k * n, img + from[k] * n, n * sizeof *v);
        s = kd_path_printf(path, sizeof path, "%s/imagesTr/%s.nii.gz", dir, name);
        if (!s) s = kd_nifti_write(path, geom, 4, KD_DT_INT16, v, NULL);
        free(v);
        return s;
    }
    if (l == KD_LAYOUT_NNUNET) {
        /* labels first, as above; channels in kdseg's order (t1, t1ce, t2, flair), as
         * nnU-Net's BraTS 2021 conversion writes them */
        if (!o->unlabeled) {
            s = kd_path_printf(path, sizeof path, "%s/labelsTr/%s.nii.gz", dir, name);
            if (!s) s = kd_nifti_write(path, geom, 1, KD_DT_UINT8, lab, NULL);
        }
        for (int k = 0; k < 4 && !s; k++) {
            s = kd_path_printf(path, sizeof path, "%s/%s/%s_%04d.nii.gz", dir,
                               o->unlabeled ? "imagesTs" : "imagesTr", name, k);
            if (!s) s = kd_nifti_write(path, geom, 1, KD_DT_INT16, img + k * n, NULL);
        }
        return s;
    }
    if ((s = kd_path_join(cdir, sizeof cdir, dir, name))) return s;
    int in_place = kd_data_is_dir(cdir);
    if (in_place) snprintf(tdir, sizeof tdir, "%s", cdir);
    else if ((s = kd_tmp_name(cdir, tdir, sizeof tdir)) || (s = kd_mkdirs(tdir)))
        return s;
    for (int k = 0; k < 5 && !s; k++) {
        if (k == 4 && o->unlabeled) break;
        s = brats_file(l, tdir, name, k, path, sizeof path);
        if (!s) s = kd_nifti_write(path, geom, 1, k < 4 ? KD_DT_INT16 : KD_DT_UINT8, k < 4 ? (const void *)(img + k * n) : lab, NULL);
    }
    if (!s && !in_place && rename(tdir, cdir) != 0)
        s = kd_fail(KD_ERR_IO, "%s: cannot rename the finished case folder into place: %s", cdir,
                    strerror(errno));
    if (s && !in_place) rm_tree(tdir);
    return s;
}

/* Removes the partial cohorts killed runs left next to dir (DIR.tmp-PID-N, folders)
 * whose writer is gone and which nobody changed for KD_TMP_STALE_SECONDS, as kd_tmp_sweep
 * does for files. */
static void sweep_partial_cohorts(const char *dir) {
    const char *slash = strrchr(dir, '/'), *base = slash ? slash + 1 : dir;
    char pdir[KD_PATH_MAX];
    if (!slash) snprintf(pdir, sizeof pdir, ".");
    else snprintf(pdir, sizeof pdir, "%.*s", slash == dir ? 1 : (int)(slash - dir), dir);
    size_t blen = strlen(base);
    DIR *dp = opendir(pdir);
    if (!dp) return;
    time_t now = time(NULL);
    for (struct dirent *e; (e = readdir(dp));) {
        pid_t pid;
        if (strncmp(e->d_name, base, blen) || strncmp(e->d_name + blen, ".tmp-", 5) ||
            !kd_tmp_name_parse(e->d_name, &pid) || pid == getpid())
            continue;
        char p[KD_PATH_MAX];
        struct stat st;
        if (kd_path_join(p, sizeof p, pdir, e->d_name) || lstat(p, &st) || !S_ISDIR(st.st_mode)) continue;
        if (difftime(now, st.st_mtime) < KD_TMP_STALE_SECONDS || kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        if (rm_tree(p) == 0)
            kd_log(KD_LOG_INFO, "removed %s, a partial phantom cohort of an interrupted run "
                   "(process %ld is gone)", p, (long)pid);
        else
            kd_log(KD_LOG_WARN, "cannot remove the partial phantom cohort %s: %s", p, strerror(errno));
    }
    closedir(dp);
}

/* Writes the cases into dir, which exists. */
static kd_status write_cases(const char *dir, const kd_phantom_opts *o) {
    kd_layout l = cohort_layout(o);
    const size_t n = (size_t)o->size[0] * o->size[1] * o->size[2];
    kd_status s = KD_OK;
    char sub[KD_PATH_MAX];
    if (l == KD_LAYOUT_MSD || l == KD_LAYOUT_NNUNET) {
        s = kd_path_join(sub, sizeof sub, dir, l == KD_LAYOUT_NNUNET && o->unlabeled ? "imagesTs" : "imagesTr");
        if (!s) s = kd_mkdirs(sub);
        if (!s && !o->unlabeled) s = kd_path_join(sub, sizeof sub, dir, "labelsTr");
        if (!s && !o->unlabeled) s = kd_mkdirs(sub);
    }
    if (s) return s;
    kd_volume *geom = NULL;
    const double sp[3] = {1, 1, 1};
    s = kd_volume_create_geometry(o->size[2], o->size[1], o->size[0], sp, NULL, &geom);
    if (s) return s;
    int16_t *img = malloc(4 * n * sizeof *img);
    uint8_t *lab = malloc(n);
    if (!img || !lab) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "phantom: %zu voxels", n);
    for (int k = 0; !s && k < o->cases; k++) {
        int index = o->first_index + k;
        s = kd_phantom_generate(o->size, o->seed, index, img, lab);
        if (!s) s = write_case(dir, o, index, geom, img, lab);
    }
    if (!s && (l == KD_LAYOUT_MSD || l == KD_LAYOUT_NNUNET))
        s = kd_layout_write_json(dir, l, "kdseg phantom");
    free(img);
    free(lab);
    kd_volume_free(geom);
    return s;
}

kd_status kd_phantom_write_cohort(const char *folder, const kd_phantom_opts *o) {
    if (!folder || !*folder || !o || o->cases < 1 || o->first_index < 0)
        return kd_fail(KD_ERR_INVALID_ARG, "phantom: need a folder and at least one case");
    char dir[KD_PATH_MAX]; /* without trailing slashes: the temporary name goes next to it */
    kd_status s = kd_path_printf(dir, sizeof dir, "%s", folder);
    if (s) return s;
    for (size_t len = strlen(dir); len > 1 && dir[len - 1] == '/';) dir[--len] = 0;
    sweep_partial_cohorts(dir);
    if (kd_data_is_dir(dir)) return write_cases(dir, o); /* adding to a cohort: case by case */
    /* a new cohort: written whole under a temporary name, then renamed into place */
    char tmp[KD_PATH_MAX], parent[KD_PATH_MAX];
    s = kd_tmp_name(dir, tmp, sizeof tmp);
    if (s) return s;
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        if ((s = kd_mkdirs(parent))) return s;
    }
    if (mkdir(tmp, 0755) != 0) return kd_fail(KD_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
    s = write_cases(tmp, o);
    if (!s && rename(tmp, dir) != 0)
        s = kd_fail(KD_ERR_IO, "%s: cannot rename the finished cohort %s into place: %s", dir, tmp,
                    strerror(errno));
    if (s) rm_tree(tmp);
    return s;
}

kd_status kd_phantom_check_cohort(const char *dir, const kd_phantom_opts *o) {
    kd_layout l = cohort_layout(o);
    char path[KD_PATH_MAX], cdir[KD_PATH_MAX], name[64];
    const char *how = "remove it or choose another output folder";
    kd_status s = KD_OK;
    for (int k = 0; k < o->cases && !s; k++) {
        int index = o->first_index + k;
        case_name(l, index, name, sizeof name);
        for (int f = 0; f < 5 && !s; f++) {
            if (f == 4 && o->unlabeled) break;
            if (l == KD_LAYOUT_MSD) {
                if (f > 0 && f < 4) continue;
                s = kd_path_printf(path, sizeof path, "%s/%s/%s.nii.gz", dir, f ? "labelsTr" : "imagesTr", name);
            } else if (l == KD_LAYOUT_NNUNET) {
                if (f == 4) s = kd_path_printf(path, sizeof path, "%s/labelsTr/%s.nii.gz", dir, name);
                else s = kd_path_printf(path, sizeof path, "%s/%s/%s_%04d.nii.gz", dir,
                                        o->unlabeled ? "imagesTs" : "imagesTr", name, f);
            } else {
                s = kd_path_join(cdir, sizeof cdir, dir, name);
                if (!s) s = brats_file(l, cdir, name, f, path, sizeof path);
            }
            if (!s && !kd_data_is_file(path))
                s = kd_fail(KD_ERR_FORMAT, "%s: not a complete phantom cohort of %d cases: %s is "
                            "missing; %s", dir, o->cases, path, how);
        }
        if (!s && k == 0) { /* the grid of the cohort (every case has the same) */
            kd_volume *v = NULL;
            s = kd_nifti_read_header(path, &v);
            if (!s && (v->nz != o->size[0] || v->ny != o->size[1] || v->nx != o->size[2]))
                s = kd_fail(KD_ERR_FORMAT, "%s: its phantom cases are %dx%dx%d, not the %dx%dx%d asked "
                            "for; %s", dir, v->nz, v->ny, v->nx, o->size[0], o->size[1], o->size[2], how);
            kd_volume_free(v);
        }
    }
    if (s) return s;
    /* no other cases: a larger cohort would train on more than asked for */
    kd_dataset *ds = NULL;
    kd_dataset_opts dop;
    memset(&dop, 0, sizeof dop);
    dop.layout = l;
    if ((s = kd_dataset_open(dir, &dop, &ds))) return s;
    int n = kd_dataset_count(ds);
    kd_dataset_free(ds);
    if (n != o->cases)
        return kd_fail(KD_ERR_FORMAT, "%s: holds %d cases, not the %d asked for; %s", dir, n, o->cases, how);
    return KD_OK;
}
