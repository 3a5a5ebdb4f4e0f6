/* Training patches: centre choice (tumour bbox + margin, foreground voxel, random),
 * the geometric augmentation as one affine map from patch to case coordinates
 * (flips, in-plane transpose, per-axis scaling, small rotations; trilinear for images
 * and for the targets as soft region maps, exact copies when the map is a signed
 * permutation), then intensity augmentation on brain (nonzero) voxels. Every random
 * choice comes from streams of (seed, rank, step, sample). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "dataset_internal.h"

typedef struct entry {
    kd_case *c;
    int *fg; /* indices of WT voxels on the preprocessed grid (strided if many) */
    int nfg;
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
}

void kd_augment_opts_none(kd_augment_opts *o) {
    kd_augment_opts_default(o);
    o->p_flip = o->p_transpose = o->p_scale = o->p_rotate = 0;
    o->p_intensity = o->p_noise = o->p_gamma = 0;
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

static kd_status check_opts(const kd_sampler_opts *o) {
    const kd_augment_opts *a = &o->aug;
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
    if (!prob_ok(a->p_flip) || !prob_ok(a->p_transpose) || !prob_ok(a->p_scale) ||
        !prob_ok(a->p_rotate) || !prob_ok(a->p_intensity) || !prob_ok(a->p_noise) ||
        !prob_ok(a->p_gamma))
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
    return KD_OK;
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

static kd_status load_entry(const source *src, entry **out) {
    *out = NULL;
    entry *e = calloc(1, sizeof *e);
    if (!e) return kd_fail(KD_ERR_OUT_OF_MEMORY, "sampler entry");
    kd_status s = kd_case_load(src->ds, src->idx, &e->c);
    if (s) {
        free(e);
        return s;
    }
    const kd_case *c = e->c;
    size_t n = (size_t)c->d * c->h * c->w, count = 0;
    for (size_t i = 0; c->target && i < n; i++)
        count += c->target[i] > 0.5f;
    size_t stride = count > 1000000 ? (count + 999999) / 1000000 : 1;
    if (count) {
        e->fg = malloc((count / stride + 1) * sizeof(int));
        if (!e->fg) {
            entry_free(e);
            return kd_fail(KD_ERR_OUT_OF_MEMORY, "sampler foreground list");
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (c->target[i] > 0.5f && k++ % stride == 0) e->fg[e->nfg++] = (int)i;
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
    kd_status st = load_entry(&s->src[i], &e);
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
        int i = e->fg[kd_rng_int(r, e->nfg)];
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
    int exact;      /* m is a signed permutation */
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
        double sc[3][3] = {{0}};
        for (int i = 0; i < 3; i++) {
            double f = kd_rng_range(r, a->scale_lo, a->scale_hi);
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

/* Intensity augmentation of one sample's channels, on nonzero (brain) voxels. */
static void augment_intensity(const kd_sampler *s, kd_rng *r, int C, float *img) {
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
}

kd_status kd_sampler_batch(kd_sampler *s, int64_t step, float *images, float *targets,
                           kd_patch_info *info) {
    if (!s || !s->n) return kd_fail(KD_ERR_INVALID_ARG, "sampler: no cases added");
    if (step < 0) return kd_fail(KD_ERR_INVALID_ARG, "sampler: step %lld < 0", (long long)step);
    const size_t pn = p3(s);
    /* this rank's samples of the step's global batch (kd_sampler_opts.ranks) */
    int ranks = s->o.ranks > 1 ? s->o.ranks : 1, first = ranks > 1 ? s->o.rank * s->o.batch : 0;
    for (int b = 0; b < s->o.batch; b++) {
        int64_t g = step * s->o.batch * ranks + first + b;
        int si = pick_source(s, g);
        kd_rng r = kd_rng_make(s->o.seed, 0, (uint64_t)step, (uint64_t)(first + b));
        entry *e;
        kd_status st = acquire(s, si, &e);
        if (st) return kd_fail_context(st, "sampler step %lld", (long long)step);
        kd_patch_info pi = {si, {0, 0, 0}, 0};
        choose_centre(s, e, &r, &pi);
        xform x;
        draw_xform(s, &r, &x);
        float *img = images + (size_t)b * s->channels * pn;
        float *tgt = targets + (size_t)b * 3 * pn;
        if (!e->c->target) memset(tgt, 0, 3 * pn * sizeof(float));
        extract(s, e->c, pi.centre, &x, img, tgt);
        release(s, e);
        augment_intensity(s, &r, s->channels, img);
        if (info) info[b] = pi;
    }
    return KD_OK;
}
