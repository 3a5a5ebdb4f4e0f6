/* Training patches: centre choice (tumour bbox + margin, foreground voxel, optionally
 * class-balanced over edema / non-enhancing core / enhancing tumour, random), the
 * geometric augmentation as one affine map from patch to case coordinates (flips,
 * in-plane transpose, scaling, rotations) plus an optional smooth elastic displacement
 * (trilinear for images and for the targets as soft region maps, exact copies when the
 * map is a signed permutation), then intensity augmentation on brain (nonzero) voxels.
 * Every random choice comes from streams of (seed, rank, step, sample). */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "dataset_internal.h"

/* Foreground classes for class-balanced centres: the BraTS labels as regions. */
enum { FG_EDEMA = 0, FG_CORE = 1, FG_ET = 2, FG_CLASSES = 3 };

typedef struct entry {
    kd_case *c;
    int *fg; /* indices of WT voxels on the preprocessed grid (strided if many) */
    int nfg;
    int *cls[FG_CLASSES]; /* the same per class: WT-TC, TC-ET, ET (strided if many) */
    int ncls[FG_CLASSES];
    int refs;
    uint64_t used;
} entry;

typedef struct source {
    const kd_dataset *ds;
    int idx;
} source;

struct kd_sampler {
    kd_sampler_opts o;
    int channels;
    source *src;
    int n, cap;
    pthread_mutex_t lock;
    entry **cache; /* per source; NULL when not in memory */
    int loaded;
    uint64_t clock;
};

void kd_augment_opts_default(kd_augment_opts *o) {
    o->p_flip = 0.5f;
    o->p_transpose = 0.5f;
    o->p_scale = 0.5f;
    o->scale_lo = 0.7f;
    o->scale_hi = 1.3f;
    o->p_rotate = 0.2f;
    o->rotate_deg = 10.0f;
    o->p_intensity = 1.0f;
    o->int_scale_lo = 0.9f;
    o->int_scale_hi = 1.1f;
    o->int_shift_lo = -0.2f;
    o->int_shift_hi = 0.2f;
    o->p_noise = 0.15f;
    o->noise_sigma = 0.1f;
    o->p_gamma = 0.15f;
    o->gamma_lo = 0.7f;
    o->gamma_hi = 1.5f;
    o->scale_isotropic = 0;
    o->p_elastic = 0;
    o->elastic_grid = 16;
    o->elastic_sigma = 2;
    o->gamma_retain_stats = 0;
    o->p_gamma_inv = 0;
    o->p_blur = 0;
    o->blur_lo = 0.5f;
    o->blur_hi = 1.0f;
    o->p_contrast = 0;
    o->contrast_lo = 0.75f;
    o->contrast_hi = 1.25f;
    o->p_lowres = 0;
    o->lowres_lo = 0.5f;
    o->lowres_hi = 1.0f;
}

void kd_augment_opts_none(kd_augment_opts *o) {
    kd_augment_opts_default(o);
    o->p_flip = o->p_transpose = o->p_scale = o->p_rotate = 0;
    o->p_intensity = o->p_noise = o->p_gamma = 0;
}

/* nnU-Net's default augmentation (its elastic deformation is off by default too). */
static void augment_opts_real(kd_augment_opts *o) {
    kd_augment_opts_default(o);
    o->p_flip = 0.5f;
    o->p_transpose = 0;
    o->p_scale = 0.2f;
    o->scale_lo = 0.7f;
    o->scale_hi = 1.4f;
    o->scale_isotropic = 1;
    o->p_rotate = 0.2f;
    o->rotate_deg = 30.0f;
    o->p_intensity = 0.15f; /* multiplicative brightness */
    o->int_scale_lo = 0.75f;
    o->int_scale_hi = 1.25f;
    o->int_shift_lo = o->int_shift_hi = 0;
    o->p_noise = 0.1f;
    o->noise_sigma = 0.1f;
    o->p_gamma = 0.3f;
    o->gamma_lo = 0.7f;
    o->gamma_hi = 1.5f;
    o->gamma_retain_stats = 1;
    o->p_gamma_inv = 0.1f;
    o->p_blur = 0.2f;
    o->p_contrast = 0.15f;
    o->p_lowres = 0.25f;
}

typedef struct aug_key {
    const char *name;
    size_t off;
    int is_int;
} aug_key;

#define AK(n, f) {n, offsetof(kd_augment_opts, f), 0}
static const aug_key aug_keys[] = {
    AK("flip", p_flip), AK("transpose", p_transpose), AK("scale", p_scale),
    AK("scale_lo", scale_lo), AK("scale_hi", scale_hi),
    {"scale_isotropic", offsetof(kd_augment_opts, scale_isotropic), 1},
    AK("rotate", p_rotate), AK("rotate_deg", rotate_deg), AK("elastic", p_elastic),
    AK("elastic_grid", elastic_grid), AK("elastic_sigma", elastic_sigma),
    AK("intensity", p_intensity), AK("int_scale_lo", int_scale_lo),
    AK("int_scale_hi", int_scale_hi), AK("int_shift_lo", int_shift_lo),
    AK("int_shift_hi", int_shift_hi), AK("noise", p_noise), AK("noise_sigma", noise_sigma),
    AK("gamma", p_gamma), AK("gamma_lo", gamma_lo), AK("gamma_hi", gamma_hi),
    {"gamma_retain_stats", offsetof(kd_augment_opts, gamma_retain_stats), 1},
    AK("gamma_inv", p_gamma_inv), AK("blur", p_blur), AK("blur_lo", blur_lo),
    AK("blur_hi", blur_hi), AK("contrast", p_contrast), AK("contrast_lo", contrast_lo),
    AK("contrast_hi", contrast_hi), AK("lowres", p_lowres), AK("lowres_lo", lowres_lo),
    AK("lowres_hi", lowres_hi)};
#undef AK

static kd_status check_aug(const kd_augment_opts *a);

kd_status kd_augment_opts_parse(const char *spec, kd_augment_opts *o) {
    if (!spec || !*spec) return kd_fail(KD_ERR_INVALID_ARG, "augmentation: empty spec");
    char buf[1024];
    if (strlen(spec) >= sizeof buf)
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation spec too long: %.40s...", spec);
    strcpy(buf, spec);
    char *save = NULL, *name = strtok_r(buf, ":", &save);
    kd_augment_opts a;
    if (!name) return kd_fail(KD_ERR_INVALID_ARG, "augmentation '%s': no set name", spec);
    if (!strcmp(name, "real")) augment_opts_real(&a);
    else if (!strcmp(name, "phantom") || !strcmp(name, "default")) kd_augment_opts_default(&a);
    else if (!strcmp(name, "none")) kd_augment_opts_none(&a);
    else
        return kd_fail(KD_ERR_INVALID_ARG,
                       "augmentation '%s': unknown set '%s' (real, phantom, none)", spec, name);
    for (char *kv = strtok_r(NULL, ":", &save); kv; kv = strtok_r(NULL, ":", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) return kd_fail(KD_ERR_INVALID_ARG, "augmentation '%s': '%s' is not key=value", spec, kv);
        *eq = 0;
        const aug_key *k = NULL;
        for (size_t i = 0; i < sizeof aug_keys / sizeof *aug_keys; i++)
            if (!strcmp(aug_keys[i].name, kv)) k = &aug_keys[i];
        if (!k) return kd_fail(KD_ERR_INVALID_ARG, "augmentation '%s': unknown key '%s'", spec, kv);
        char *end = NULL;
        double v = strtod(eq + 1, &end);
        if (end == eq + 1 || *end || !isfinite(v))
            return kd_fail(KD_ERR_INVALID_ARG, "augmentation '%s': %s=%s is not a number", spec,
                           kv, eq + 1);
        if (k->is_int) {
            int iv = v != 0;
            memcpy((char *)&a + k->off, &iv, sizeof iv);
        } else {
            float fv = (float)v;
            memcpy((char *)&a + k->off, &fv, sizeof fv);
        }
    }
    kd_status st = check_aug(&a);
    if (st) return kd_fail_context(st, "augmentation '%s'", spec);
    *o = a;
    return KD_OK;
}

void kd_sampler_opts_default(kd_sampler_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 2;
    o->patch[0] = o->patch[1] = o->patch[2] = 128;
    o->margin = 50;
    kd_augment_opts_default(&o->aug);
    o->seed = 1;
    o->max_cases_in_memory = 0;
}

static int prob_ok(float p) { return p >= 0 && p <= 1; }

static kd_status check_aug(const kd_augment_opts *a) {
    if (!prob_ok(a->p_flip) || !prob_ok(a->p_transpose) || !prob_ok(a->p_scale) ||
        !prob_ok(a->p_rotate) || !prob_ok(a->p_intensity) || !prob_ok(a->p_noise) ||
        !prob_ok(a->p_gamma) || !prob_ok(a->p_elastic) || !prob_ok(a->p_gamma_inv) ||
        !prob_ok(a->p_blur) || !prob_ok(a->p_contrast) || !prob_ok(a->p_lowres))
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation: probabilities must be in [0, 1]");
    if (!(a->scale_lo > 0 && a->scale_lo <= a->scale_hi && a->scale_hi <= 4))
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation: scale range [%g, %g]",
                       (double)a->scale_lo, (double)a->scale_hi);
    if (!(a->rotate_deg >= 0 && a->rotate_deg <= 180))
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation: rotation %g degrees",
                       (double)a->rotate_deg);
    if (!(a->gamma_lo > 0 && a->gamma_lo <= a->gamma_hi) || !(a->int_scale_lo <= a->int_scale_hi) ||
        !(a->int_shift_lo <= a->int_shift_hi) || !(a->noise_sigma >= 0))
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation: bad intensity ranges");
    if (!(a->elastic_grid >= 2 && a->elastic_grid <= 1024) ||
        !(a->elastic_sigma >= 0 && a->elastic_sigma <= 64))
        return kd_fail(KD_ERR_INVALID_ARG,
                       "augmentation: elastic grid %g (2..1024 voxels), sigma %g (0..64 voxels)",
                       (double)a->elastic_grid, (double)a->elastic_sigma);
    if (!(a->blur_lo >= 0 && a->blur_lo <= a->blur_hi && a->blur_hi <= 8))
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation: blur sigma range [%g, %g] (0..8 voxels)",
                       (double)a->blur_lo, (double)a->blur_hi);
    if (!(a->contrast_lo > 0 && a->contrast_lo <= a->contrast_hi && a->contrast_hi <= 10))
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation: contrast range [%g, %g]",
                       (double)a->contrast_lo, (double)a->contrast_hi);
    if (!(a->lowres_lo > 0 && a->lowres_lo <= a->lowres_hi && a->lowres_hi <= 1))
        return kd_fail(KD_ERR_INVALID_ARG, "augmentation: low-resolution zoom range [%g, %g] "
                       "(within (0, 1])", (double)a->lowres_lo, (double)a->lowres_hi);
    return KD_OK;
}

static kd_status check_opts(const kd_sampler_opts *o) {
    if (o->batch < 1 || o->batch > 4096)
        return kd_fail(KD_ERR_INVALID_ARG, "sampler: batch %d out of range", o->batch);
    for (int i = 0; i < 3; i++)
        if (o->patch[i] < 1 || o->patch[i] > 1024)
            return kd_fail(KD_ERR_INVALID_ARG, "sampler: patch size %d out of range", o->patch[i]);
    if (o->margin < 0) return kd_fail(KD_ERR_INVALID_ARG, "sampler: margin %d < 0", o->margin);
    if (o->ranks < 0 || o->ranks > 1000000 || o->rank < 0 || (o->ranks > 1 && o->rank >= o->ranks))
        return kd_fail(KD_ERR_INVALID_ARG, "sampler: rank %d of %d ranks", o->rank, o->ranks);
    if (!prob_ok(o->fg_fraction) || !prob_ok(o->random_fraction) ||
        o->fg_fraction + o->random_fraction > 1.0001f)
        return kd_fail(KD_ERR_INVALID_ARG,
                       "sampler: foreground (%g) and random (%g) fractions must be in [0, 1] "
                       "and sum to at most 1",
                       (double)o->fg_fraction, (double)o->random_fraction);
    return check_aug(&o->aug);
}

kd_status kd_sampler_create(const kd_sampler_opts *o, kd_sampler **out) {
    *out = NULL;
    kd_sampler_opts d;
    if (!o) {
        kd_sampler_opts_default(&d);
        o = &d;
    }
    kd_status s = check_opts(o);
    if (s) return s;
    kd_sampler *sp = calloc(1, sizeof *sp);
    if (!sp) return kd_fail(KD_ERR_OUT_OF_MEMORY, "sampler");
    sp->o = *o;
    pthread_mutex_init(&sp->lock, NULL);
    *out = sp;
    return KD_OK;
}

static void entry_free(entry *e) {
    if (!e) return;
    kd_case_free(e->c);
    free(e->fg);
    for (int k = 0; k < FG_CLASSES; k++) free(e->cls[k]);
    free(e);
}

void kd_sampler_free(kd_sampler *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++)
        if (s->cache) entry_free(s->cache[i]);
    free(s->cache);
    free(s->src);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

kd_status kd_sampler_add(kd_sampler *s, const kd_dataset *ds, const int *idx, int n) {
    if (!s || !ds) return kd_fail(KD_ERR_INVALID_ARG, "sampler_add: no dataset");
    if (s->n && kd_dataset_channels(ds) != s->channels)
        return kd_fail(KD_ERR_SHAPE, "sampler: dataset %s has %d channels, earlier ones %d",
                       ds->dir, kd_dataset_channels(ds), s->channels);
    int count = idx ? n : kd_dataset_count(ds);
    for (int k = 0; k < count; k++) {
        int i = idx ? idx[k] : k;
        if (i < 0 || i >= ds->n)
            return kd_fail(KD_ERR_INVALID_ARG, "sampler: case index %d out of range (%d cases)", i,
                           ds->n);
        if (!ds->cases[i].labeled && !s->o.allow_unlabeled) {
            if (!idx) continue;
            return kd_fail(KD_ERR_INVALID_ARG,
                           "sampler: case %s has no labels (add an --annotations folder)",
                           ds->cases[i].name);
        }
        if (s->n == s->cap) {
            int cap = s->cap ? 2 * s->cap : 64;
            source *t = realloc(s->src, cap * sizeof *t);
            entry **e = realloc(s->cache, cap * sizeof *e);
            if (t) s->src = t;
            if (e) s->cache = e;
            if (!t || !e) return kd_fail(KD_ERR_OUT_OF_MEMORY, "sampler cases");
            for (int j = s->cap; j < cap; j++)
                s->cache[j] = NULL;
            s->cap = cap;
        }
        s->src[s->n].ds = ds;
        s->src[s->n].idx = i;
        s->n++;
        s->channels = kd_dataset_channels(ds);
    }
    if (!s->n) return kd_fail(KD_ERR_INVALID_ARG, "sampler: %s has no labeled cases", ds->dir);
    return KD_OK;
}

int kd_sampler_count(const kd_sampler *s) { return s->n; }

static size_t p3(const kd_sampler *s) {
    return (size_t)s->o.patch[0] * s->o.patch[1] * s->o.patch[2];
}
size_t kd_sampler_image_floats(const kd_sampler *s) {
    return (size_t)s->o.batch * s->channels * p3(s);
}
size_t kd_sampler_target_floats(const kd_sampler *s) { return (size_t)s->o.batch * 3 * p3(s); }

/* --------------------------------------------------------- case cache -- */

/* The class of voxel i for class-balanced centres, or -1 outside the tumour. */
static int fg_class(const kd_case *c, size_t n, size_t i) {
    if (!(c->target[i] > 0.5f)) return -1;
    if (c->target[2 * n + i] > 0.5f) return FG_ET;
    return c->target[n + i] > 0.5f ? FG_CORE : FG_EDEMA;
}

/* Voxel index lists of at most about a million entries each (strided beyond). */
static kd_status list_voxels(const kd_case *c, int cls, int **out, int *nout) {
    size_t n = (size_t)c->d * c->h * c->w, count = 0;
    *out = NULL;
    *nout = 0;
    for (size_t i = 0; i < n; i++)
        count += cls < 0 ? c->target[i] > 0.5f : fg_class(c, n, i) == cls;
    if (!count) return KD_OK;
    size_t stride = count > 1000000 ? (count + 999999) / 1000000 : 1, k = 0;
    int *v = malloc((count / stride + 1) * sizeof(int));
    if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "sampler foreground list");
    for (size_t i = 0; i < n; i++)
        if ((cls < 0 ? c->target[i] > 0.5f : fg_class(c, n, i) == cls) && k++ % stride == 0)
            v[(*nout)++] = (int)i;
    *out = v;
    return KD_OK;
}

static kd_status load_entry(const source *src, int class_balance, entry **out) {
    *out = NULL;
    entry *e = calloc(1, sizeof *e);
    if (!e) return kd_fail(KD_ERR_OUT_OF_MEMORY, "sampler entry");
    kd_status s = kd_case_load(src->ds, src->idx, &e->c);
    if (s) {
        free(e);
        return s;
    }
    if (e->c->target) {
        s = list_voxels(e->c, -1, &e->fg, &e->nfg);
        for (int k = 0; k < FG_CLASSES && !s && class_balance; k++)
            s = list_voxels(e->c, k, &e->cls[k], &e->ncls[k]);
        if (s) {
            entry_free(e);
            return s;
        }
    }
    *out = e;
    return KD_OK;
}

static kd_status acquire(kd_sampler *s, int i, entry **out) {
    pthread_mutex_lock(&s->lock);
    entry *e = s->cache[i];
    if (e) {
        e->refs++;
        e->used = ++s->clock;
        pthread_mutex_unlock(&s->lock);
        *out = e;
        return KD_OK;
    }
    pthread_mutex_unlock(&s->lock);
    kd_status st = load_entry(&s->src[i], s->o.class_balance, &e);
    if (st) return st;
    pthread_mutex_lock(&s->lock);
    if (s->cache[i]) { /* another thread was faster */
        entry_free(e);
        e = s->cache[i];
    } else {
        s->cache[i] = e;
        s->loaded++;
    }
    e->refs++;
    e->used = ++s->clock;
    while (s->o.max_cases_in_memory > 0 && s->loaded > s->o.max_cases_in_memory) {
        int victim = -1;
        for (int k = 0; k < s->n; k++) {
            entry *x = s->cache[k];
            if (x && !x->refs && (victim < 0 || x->used < s->cache[victim]->used)) victim = k;
        }
        if (victim < 0) break;
        entry_free(s->cache[victim]);
        s->cache[victim] = NULL;
        s->loaded--;
    }
    pthread_mutex_unlock(&s->lock);
    *out = e;
    return KD_OK;
}

static void release(kd_sampler *s, entry *e) {
    pthread_mutex_lock(&s->lock);
    e->refs--;
    pthread_mutex_unlock(&s->lock);
}

/* ----------------------------------------------------------- sampling -- */

/* The source of global sample g: a fresh permutation of the cases per epoch. */
static int pick_source(const kd_sampler *s, int64_t g) {
    int64_t epoch = g / s->n, pos = g % s->n;
    kd_rng r = kd_rng_make(s->o.seed, 0, (uint64_t)epoch, UINT64_MAX); /* shared by all ranks */
    /* Only the first pos+1 steps of a Fisher-Yates shuffle are needed. */
    int *perm = malloc(s->n * sizeof(int));
    if (!perm) return (int)pos;
    for (int i = 0; i < s->n; i++)
        perm[i] = i;
    for (int i = 0; i <= pos; i++) {
        int j = i + kd_rng_int(&r, s->n - i);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int v = perm[pos];
    free(perm);
    return v;
}

static void choose_centre(const kd_sampler *s, const entry *e, kd_rng *r, kd_patch_info *pi) {
    const kd_case *c = e->c;
    int dims[3] = {c->d, c->h, c->w};
    double u = kd_rng_uniform(r);
    int has_tumour = c->tumour_hi[0] > c->tumour_lo[0];
    if (u < s->o.fg_fraction && e->nfg > 0) {
        int i = e->fg[0];
        if (s->o.class_balance) {
            int present[FG_CLASSES] = {0}, np = 0;
            for (int k = 0; k < FG_CLASSES; k++)
                if (e->ncls[k] > 0) present[np++] = k;
            int k = present[kd_rng_int(r, np)]; /* np >= 1: nfg > 0 */
            i = e->cls[k][kd_rng_int(r, e->ncls[k])];
        } else {
            i = e->fg[kd_rng_int(r, e->nfg)];
        }
        pi->centre[2] = i % c->w;
        pi->centre[1] = (i / c->w) % c->h;
        pi->centre[0] = i / (c->w * c->h);
        pi->kind = 1;
    } else if (u < s->o.fg_fraction + s->o.random_fraction || !has_tumour) {
        for (int a = 0; a < 3; a++)
            pi->centre[a] = kd_rng_int(r, dims[a]);
        pi->kind = 2;
    } else {
        for (int a = 0; a < 3; a++) {
            int lo = c->tumour_lo[a] - s->o.margin, hi = c->tumour_hi[a] + s->o.margin;
            if (lo < 0) lo = 0;
            if (hi > dims[a]) hi = dims[a];
            pi->centre[a] = lo + kd_rng_int(r, hi - lo);
        }
        pi->kind = 0;
    }
}

typedef struct xform {
    double m[3][3]; /* patch offset (D,H,W) -> case offset */
    int exact;      /* m is a signed permutation and there is no displacement */
    float *disp;    /* elastic displacement (g0, g1, g2, 3) in patch voxels at control points
                       every `spacing` patch voxels, or NULL */
    int g[3];
    double spacing;
} xform;

static void mat_mul(double a[3][3], double b[3][3], double out[3][3]) {
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            t[i][j] = 0;
            for (int k = 0; k < 3; k++)
                t[i][j] += a[i][k] * b[k][j];
        }
    memcpy(out, t, sizeof t);
}

static void draw_xform(const kd_sampler *s, kd_rng *r, xform *x) {
    const kd_augment_opts *a = &s->o.aug;
    double m[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    x->exact = 1;
    if (kd_rng_uniform(r) < a->p_scale) {
        double sc[3][3] = {{0}}, f = 1;
        for (int i = 0; i < 3; i++) {
            if (i == 0 || !a->scale_isotropic) f = kd_rng_range(r, a->scale_lo, a->scale_hi);
            sc[i][i] = 1.0 / f; /* zoom by f: sample the case f times more densely */
            if (f != 1.0) x->exact = 0;
        }
        mat_mul(sc, m, m);
    }
    if (kd_rng_uniform(r) < a->p_rotate) {
        for (int ax = 0; ax < 3; ax++) {
            double t = kd_rng_range(r, -a->rotate_deg, a->rotate_deg) * M_PI / 180.0;
            double cs = cos(t), sn = sin(t);
            int p = (ax + 1) % 3, q = (ax + 2) % 3;
            double rot[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
            rot[ax][ax] = 1;
            rot[p][p] = cs;
            rot[p][q] = -sn;
            rot[q][p] = sn;
            rot[q][q] = cs;
            mat_mul(rot, m, m);
            if (t != 0) x->exact = 0;
        }
    }
    if (kd_rng_uniform(r) < a->p_transpose && s->o.patch[1] == s->o.patch[2]) {
        double t[3][3] = {{1, 0, 0}, {0, 0, 1}, {0, 1, 0}};
        mat_mul(t, m, m);
    }
    for (int ax = 0; ax < 3; ax++)
        if (kd_rng_uniform(r) < a->p_flip) {
            double f[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
            f[ax][ax] = -1;
            mat_mul(f, m, m);
        }
    memcpy(x->m, m, sizeof m);
    x->disp = NULL;
    x->g[0] = x->g[1] = x->g[2] = 1;
    x->spacing = 1;
    if (a->p_elastic > 0 && kd_rng_uniform(r) < a->p_elastic && a->elastic_sigma > 0) {
        x->spacing = a->elastic_grid;
        size_t ng = 3;
        for (int ax = 0; ax < 3; ax++) {
            x->g[ax] = (int)ceil((s->o.patch[ax] - 1) / x->spacing) + 1;
            ng *= (size_t)x->g[ax];
        }
        x->disp = malloc(ng * sizeof(float));
        if (!x->disp) return; /* no memory: this sample goes without the deformation */
        for (size_t i = 0; i < ng; i++)
            x->disp[i] = (float)(a->elastic_sigma * kd_rng_normal(r));
        x->exact = 0;
    }
}

/* The elastic displacement at patch voxel (pz, py, px), trilinear between control points. */
static void displacement(const xform *x, int pz, int py, int px, double d[3]) {
    double u[3] = {pz / x->spacing, py / x->spacing, px / x->spacing}, f[3];
    int i0[3];
    for (int a = 0; a < 3; a++) {
        i0[a] = (int)u[a];
        if (i0[a] > x->g[a] - 2) i0[a] = x->g[a] - 2 > 0 ? x->g[a] - 2 : 0;
        f[a] = u[a] - i0[a];
        if (x->g[a] == 1) f[a] = 0;
    }
    d[0] = d[1] = d[2] = 0;
    for (int k = 0; k < 8; k++) {
        int dz = k >> 2 & 1, dy = k >> 1 & 1, dx = k & 1;
        if ((dz && x->g[0] == 1) || (dy && x->g[1] == 1) || (dx && x->g[2] == 1)) continue;
        double w = (dz ? f[0] : 1 - f[0]) * (dy ? f[1] : 1 - f[1]) * (dx ? f[2] : 1 - f[2]);
        const float *v = x->disp + (((size_t)(i0[0] + dz) * x->g[1] + i0[1] + dy) * x->g[2] + i0[2] + dx) * 3;
        for (int a = 0; a < 3; a++) d[a] += w * v[a];
    }
}

/* Fills one sample: img (C, P) and tgt (3, P). */
static void extract(const kd_sampler *s, const kd_case *c, const int centre[3], const xform *x,
                    float *img, float *tgt) {
    const int P[3] = {s->o.patch[0], s->o.patch[1], s->o.patch[2]};
    const int dims[3] = {c->d, c->h, c->w};
    const size_t n = (size_t)c->d * c->h * c->w, pn = p3(s);
    const int C = c->channels;
    double base[3], half[3];
    for (int a = 0; a < 3; a++) {
        half[a] = (P[a] - 1) / 2.0;
        base[a] = centre[a] - P[a] / 2 + half[a];
    }
    size_t o = 0;
    for (int pz = 0; pz < P[0]; pz++)
        for (int py = 0; py < P[1]; py++)
            for (int px = 0; px < P[2]; px++, o++) {
                double q[3] = {pz - half[0], py - half[1], px - half[2]}, sc[3];
                if (x->disp) {
                    double dd[3];
                    displacement(x, pz, py, px, dd);
                    for (int a = 0; a < 3; a++) q[a] += dd[a];
                }
                for (int a = 0; a < 3; a++)
                    sc[a] = base[a] + x->m[a][0] * q[0] + x->m[a][1] * q[1] + x->m[a][2] * q[2];
                if (x->exact) {
                    int iz = (int)lrint(sc[0]), iy = (int)lrint(sc[1]), ix = (int)lrint(sc[2]);
                    int in = iz >= 0 && iz < dims[0] && iy >= 0 && iy < dims[1] && ix >= 0 &&
                             ix < dims[2];
                    size_t si = in ? ((size_t)iz * c->h + iy) * c->w + ix : 0;
                    for (int ch = 0; ch < C; ch++)
                        img[ch * pn + o] = in ? c->image[ch * n + si] : 0;
                    for (int r = 0; r < 3; r++)
                        tgt[r * pn + o] = in && c->target ? c->target[r * n + si] : 0;
                    continue;
                }
                int i0[3];
                double f[3];
                for (int a = 0; a < 3; a++) {
                    double fl = floor(sc[a]);
                    i0[a] = (int)fl;
                    f[a] = sc[a] - fl;
                }
                size_t idx[8];
                float w[8];
                int k = 0;
                for (int dz = 0; dz < 2; dz++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++, k++) {
                            int z = i0[0] + dz, y = i0[1] + dy, xx = i0[2] + dx;
                            double wt = (dz ? f[0] : 1 - f[0]) * (dy ? f[1] : 1 - f[1]) *
                                        (dx ? f[2] : 1 - f[2]);
                            int in = z >= 0 && z < dims[0] && y >= 0 && y < dims[1] && xx >= 0 &&
                                     xx < dims[2];
                            idx[k] = in ? ((size_t)z * c->h + y) * c->w + xx : 0;
                            w[k] = in ? (float)wt : 0.0f;
                        }
                for (int ch = 0; ch < C; ch++) {
                    const float *v = c->image + ch * n;
                    float acc = 0;
                    for (k = 0; k < 8; k++)
                        acc += w[k] * v[idx[k]];
                    img[ch * pn + o] = acc;
                }
                for (int r = 0; r < 3 && c->target; r++) {
                    const float *v = c->target + r * n;
                    float acc = 0;
                    for (k = 0; k < 8; k++)
                        acc += w[k] * v[idx[k]];
                    tgt[r * pn + o] = acc;
                }
            }
}

/* Mean and standard deviation of the nonzero voxels of v (n voxels); 0 when none. */
static int brain_stats(const float *v, size_t n, double *mean, double *sd, float *mn, float *mx) {
    double s = 0, s2 = 0;
    size_t cnt = 0;
    *mn = INFINITY;
    *mx = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (v[i] != 0) {
            s += v[i];
            s2 += (double)v[i] * v[i];
            cnt++;
            if (v[i] < *mn) *mn = v[i];
            if (v[i] > *mx) *mx = v[i];
        }
    *mean = cnt ? s / cnt : 0;
    double var = cnt ? s2 / cnt - *mean * *mean : 0;
    *sd = var > 0 ? sqrt(var) : 0;
    return cnt > 0;
}

/* Gamma on the channel's brain range, optionally of the inverted channel, optionally
 * restoring the brain mean and standard deviation (nnU-Net's retain_stats). */
static void gamma_channel(float *v, size_t n, double g, int invert, int retain) {
    double mean, sd;
    float mn, mx;
    if (!brain_stats(v, n, &mean, &sd, &mn, &mx) || !(mx > mn)) return;
    float range = mx - mn;
    for (size_t i = 0; i < n; i++)
        if (v[i] != 0) {
            double t = (v[i] - mn) / range;
            if (invert) t = 1 - t;
            t = pow(t, g);
            if (invert) t = 1 - t;
            v[i] = mn + range * (float)t;
            if (v[i] == 0) v[i] = 1e-6f; /* stays brain */
        }
    if (!retain) return;
    double m2, sd2;
    float a, b;
    brain_stats(v, n, &m2, &sd2, &a, &b);
    double k = sd2 > 1e-12 ? sd / sd2 : 1;
    for (size_t i = 0; i < n; i++)
        if (v[i] != 0) {
            v[i] = (float)((v[i] - m2) * k + mean);
            if (v[i] == 0) v[i] = 1e-6f;
        }
}

/* Separable Gaussian blur of one (P0, P1, P2) channel in place, clamped at the patch
 * borders. tmp: P0*P1*P2 floats. */
static void blur_channel(float *v, const int P[3], double sigma, float *tmp) {
    int rad = (int)ceil(3 * sigma);
    if (rad < 1) return;
    if (rad > 32) rad = 32;
    float k[65];
    double sum = 0;
    for (int i = -rad; i <= rad; i++) sum += k[i + rad] = (float)exp(-0.5 * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * rad; i++) k[i] = (float)(k[i] / sum);
    const size_t n = (size_t)P[0] * P[1] * P[2];
    const size_t stride[3] = {(size_t)P[1] * P[2], (size_t)P[2], 1};
    float *src = v, *dst = tmp;
    for (int ax = 0; ax < 3; ax++) {
        for (size_t i = 0; i < n; i++) {
            int pos = (int)(i / stride[ax] % (size_t)P[ax]);
            double acc = 0;
            for (int t = -rad; t <= rad; t++) {
                int q = pos + t;
                q = q < 0 ? 0 : q >= P[ax] ? P[ax] - 1 : q;
                acc += k[t + rad] * src[i + (ptrdiff_t)(q - pos) * (ptrdiff_t)stride[ax]];
            }
            dst[i] = (float)acc;
        }
        float *t = src;
        src = dst;
        dst = t;
    }
    if (src != v) memcpy(v, src, n * sizeof(float));
}

/* Low-resolution simulation of one channel: nearest-neighbour down to round(P * zoom)
 * per axis, trilinear back up. tmp: P0*P1*P2 floats. */
static void lowres_channel(float *v, const int P[3], double zoom, float *tmp) {
    int L[3];
    for (int a = 0; a < 3; a++) {
        L[a] = (int)lround(P[a] * zoom);
        if (L[a] < 1) L[a] = 1;
    }
    /* down: tmp (L0, L1, L2) */
    for (int z = 0; z < L[0]; z++)
        for (int y = 0; y < L[1]; y++)
            for (int x = 0; x < L[2]; x++) {
                int sz = (int)((z + 0.5) * P[0] / L[0]), sy = (int)((y + 0.5) * P[1] / L[1]),
                    sx = (int)((x + 0.5) * P[2] / L[2]);
                tmp[((size_t)z * L[1] + y) * L[2] + x] = v[((size_t)sz * P[1] + sy) * P[2] + sx];
            }
    /* up: trilinear at the centres of the fine voxels, clamped */
    size_t o = 0;
    for (int z = 0; z < P[0]; z++)
        for (int y = 0; y < P[1]; y++)
            for (int x = 0; x < P[2]; x++, o++) {
                int p[3] = {z, y, x}, i0[3], i1[3];
                double f[3];
                for (int a = 0; a < 3; a++) {
                    double u = (p[a] + 0.5) * L[a] / P[a] - 0.5;
                    if (u < 0) u = 0;
                    if (u > L[a] - 1) u = L[a] - 1;
                    i0[a] = (int)u;
                    i1[a] = i0[a] + 1 < L[a] ? i0[a] + 1 : i0[a];
                    f[a] = u - i0[a];
                }
                if (v[o] == 0) continue; /* background stays 0 */
                double acc = 0;
                for (int k = 0; k < 8; k++) {
                    int zz = k & 4 ? i1[0] : i0[0], yy = k & 2 ? i1[1] : i0[1], xx = k & 1 ? i1[2] : i0[2];
                    double w = (k & 4 ? f[0] : 1 - f[0]) * (k & 2 ? f[1] : 1 - f[1]) * (k & 1 ? f[2] : 1 - f[2]);
                    acc += w * tmp[((size_t)zz * L[1] + yy) * L[2] + xx];
                }
                v[o] = acc != 0 ? (float)acc : 1e-6f;
            }
}

/* Intensity augmentation of one sample's channels, on nonzero (brain) voxels. tmp: two
 * channels of scratch. */
static void augment_intensity(const kd_sampler *s, kd_rng *r, int C, float *img, float *tmp) {
    const kd_augment_opts *a = &s->o.aug;
    const size_t pn = p3(s);
    if (kd_rng_uniform(r) < a->p_intensity)
        for (int ch = 0; ch < C; ch++) {
            float sc = (float)kd_rng_range(r, a->int_scale_lo, a->int_scale_hi);
            float sh = (float)kd_rng_range(r, a->int_shift_lo, a->int_shift_hi);
            float *v = img + ch * pn;
            for (size_t i = 0; i < pn; i++)
                if (v[i] != 0) v[i] = v[i] * sc + sh;
        }
    if (kd_rng_uniform(r) < a->p_gamma)
        for (int ch = 0; ch < C; ch++) {
            double g = kd_rng_range(r, a->gamma_lo, a->gamma_hi);
            float *v = img + ch * pn;
            if (a->gamma_retain_stats) {
                gamma_channel(v, pn, g, 0, 1);
                continue;
            }
            float mn = INFINITY, mx = -INFINITY;
            for (size_t i = 0; i < pn; i++)
                if (v[i] != 0) {
                    if (v[i] < mn) mn = v[i];
                    if (v[i] > mx) mx = v[i];
                }
            if (!(mx > mn)) continue;
            float range = mx - mn;
            for (size_t i = 0; i < pn; i++)
                if (v[i] != 0) v[i] = mn + range * (float)pow((v[i] - mn) / range, g);
        }
    if (kd_rng_uniform(r) < a->p_noise) {
        double sigma = kd_rng_range(r, 0, a->noise_sigma);
        for (int ch = 0; ch < C; ch++) {
            float *v = img + ch * pn;
            for (size_t i = 0; i < pn; i++)
                if (v[i] != 0) v[i] += (float)(sigma * kd_rng_normal(r));
        }
    }
    /* the steps below draw nothing when off (the demo's streams stay as they were) */
    if (a->p_gamma_inv > 0 && kd_rng_uniform(r) < a->p_gamma_inv)
        for (int ch = 0; ch < C; ch++)
            gamma_channel(img + ch * pn, pn, kd_rng_range(r, a->gamma_lo, a->gamma_hi), 1,
                          a->gamma_retain_stats);
    if (a->p_blur > 0 && kd_rng_uniform(r) < a->p_blur)
        for (int ch = 0; ch < C; ch++) {
            double sigma = kd_rng_range(r, a->blur_lo, a->blur_hi);
            if (kd_rng_uniform(r) >= 0.5) continue;
            float *v = img + ch * pn;
            /* keep the brain mask: blur a copy, then write back inside the brain */
            float *blurred = tmp;
            memcpy(blurred, v, pn * sizeof(float));
            blur_channel(blurred, s->o.patch, sigma, tmp + pn);
            for (size_t i = 0; i < pn; i++)
                if (v[i] != 0) v[i] = blurred[i] != 0 ? blurred[i] : 1e-6f;
        }
    if (a->p_contrast > 0)
        for (int ch = 0; ch < C; ch++) {
            if (kd_rng_uniform(r) >= a->p_contrast) continue;
            double f = kd_rng_range(r, a->contrast_lo, a->contrast_hi), mean, sd;
            float mn, mx, *v = img + ch * pn;
            if (!brain_stats(v, pn, &mean, &sd, &mn, &mx)) continue;
            for (size_t i = 0; i < pn; i++)
                if (v[i] != 0) {
                    double t = (v[i] - mean) * f + mean;
                    t = t < mn ? mn : t > mx ? mx : t;
                    v[i] = t != 0 ? (float)t : 1e-6f;
                }
        }
    if (a->p_lowres > 0 && kd_rng_uniform(r) < a->p_lowres)
        for (int ch = 0; ch < C; ch++) {
            double zoom = kd_rng_range(r, a->lowres_lo, a->lowres_hi);
            if (kd_rng_uniform(r) >= 0.5) continue;
            lowres_channel(img + ch * pn, s->o.patch, zoom, tmp);
        }
}

kd_status kd_sampler_batch(kd_sampler *s, int64_t step, float *images, float *targets,
                           kd_patch_info *info) {
    if (!s || !s->n) return kd_fail(KD_ERR_INVALID_ARG, "sampler: no cases added");
    if (step < 0) return kd_fail(KD_ERR_INVALID_ARG, "sampler: step %lld < 0", (long long)step);
    const size_t pn = p3(s);
    /* this rank's samples of the step's global batch (kd_sampler_opts.ranks) */
    int ranks = s->o.ranks > 1 ? s->o.ranks : 1, first = ranks > 1 ? s->o.rank * s->o.batch : 0;
    float *tmp = malloc(2 * pn * sizeof(float));
    if (!tmp) return kd_fail(KD_ERR_OUT_OF_MEMORY, "sampler scratch for a %zu-voxel patch", pn);
    for (int b = 0; b < s->o.batch; b++) {
        int64_t g = step * s->o.batch * ranks + first + b;
        int si = pick_source(s, g);
        kd_rng r = kd_rng_make(s->o.seed, 0, (uint64_t)step, (uint64_t)(first + b));
        entry *e;
        kd_status st = acquire(s, si, &e);
        if (st) {
            free(tmp);
            return kd_fail_context(st, "sampler step %lld", (long long)step);
        }
        kd_patch_info pi = {si, {0, 0, 0}, 0};
        choose_centre(s, e, &r, &pi);
        xform x;
        draw_xform(s, &r, &x);
        float *img = images + (size_t)b * s->channels * pn;
        float *tgt = targets + (size_t)b * 3 * pn;
        if (!e->c->target) memset(tgt, 0, 3 * pn * sizeof(float));
        extract(s, e->c, pi.centre, &x, img, tgt);
        free(x.disp);
        release(s, e);
        augment_intensity(s, &r, s->channels, img, tmp);
        if (info) info[b] = pi;
    }
    free(tmp);
    return KD_OK;
}
