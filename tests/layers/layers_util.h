/* Helpers of the layer tests: device tensors as views at an odd element offset
 * inside a slab filled with a sentinel (catches ignored offsets, misaligned vector
 * loads and writes outside the tensor), comparison against the C reference, and
 * central finite differences in double. */
#ifndef KD_LAYERS_UTIL_H
#define KD_LAYERS_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"
#include "runtime/tensor_impl.h"
#include "ops/ops.h"
#include "ops/ref/ref.h"

#define GUARD 3            /* elements before and after each tensor in its slab */
#define SENTINEL 7777.0f

typedef struct dt {
    kd_tensor *slab, *t;
    size_t n;
} dt;

static inline int dt_new(kd_device *d, kd_shape s, const float *host, dt *o) {
    o->n = kd_shape_numel(s);
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 1, 1, 1, (int)o->n + 2 * GUARD), &o->slab));
    KD_CHECK_OK(kd_tensor_fill(o->slab, SENTINEL));
    KD_CHECK_OK(kd_tensor_view(o->slab, GUARD, s, &o->t));
    if (host) KD_CHECK_OK(kd_tensor_upload_ndhwc(o->t, host));
    return 0;
}

static inline void dt_free(dt *o) {
    kd_tensor_free(o->t);
    kd_tensor_free(o->slab);
    o->t = o->slab = NULL;
}

/* Downloads the tensor into host (n floats) and checks the guard elements. */
static inline int dt_get(dt *o, float *host, const char *what) {
    float *all = malloc((o->n + 2 * GUARD) * sizeof(float));
    KD_CHECK(all != NULL, "alloc");
    KD_CHECK_OK(kd_tensor_download_ndhwc(o->slab, all));
    for (int i = 0; i < GUARD; i++) {
        if (all[i] != SENTINEL || all[GUARD + o->n + i] != SENTINEL) {
            free(all);
            KD_CHECK(0, "%s: a kernel wrote outside the tensor (guard %d)", what, i);
        }
    }
    memcpy(host, all + GUARD, o->n * sizeof(float));
    free(all);
    return 0;
}

/* The device result against the reference: max |got - ref| / max(max |ref|, 1e-6) < tol. */
static inline int dt_close(dt *o, const float *ref, double tol, const char *what) {
    float *g = malloc(o->n * sizeof(float));
    KD_CHECK(g != NULL, "alloc");
    if (dt_get(o, g, what)) {
        free(g);
        return 1;
    }
    double e = kd_test_rel_err(g, ref, o->n, 1e-6);
    free(g);
    KD_CHECK(e < tol, "%s: relative error %.3g (tolerance %.3g)", what, e, tol);
    return 0;
}

/* Bitwise equality of two device tensors of equal size. */
static inline int dt_same_bits(dt *a, dt *b, const char *what) {
    float *x = malloc(a->n * sizeof(float)), *y = malloc(b->n * sizeof(float));
    KD_CHECK(x && y && a->n == b->n, "alloc");
    int bad = dt_get(a, x, what) || dt_get(b, y, what) || memcmp(x, y, a->n * sizeof(float));
    free(x);
    free(y);
    KD_CHECK(!bad, "%s: results differ between two identical calls", what);
    return 0;
}

static inline float *frand(size_t n, unsigned seed, float lo, float hi) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (p) kd_test_randu(p, n, seed, lo, hi);
    return p;
}

static inline double *to_d(const float *f, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof(double));
    if (d)
        for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

static inline double dot_d(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Largest |central difference of loss along p[i] - g[i]| over all i, relative to
 * max |g| (floor 1e-3). loss() reads p through its context. */
static inline double fd_err(double (*loss)(void *), void *ctx, double *p, size_t n,
                            const double *g, double h) {
    double scale = 1e-3, err = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(g[i]) > scale) scale = fabs(g[i]);
    for (size_t i = 0; i < n; i++) {
        double save = p[i];
        p[i] = save + h;
        double lp = loss(ctx);
        p[i] = save - h;
        double lm = loss(ctx);
        p[i] = save;
        double e = fabs((lp - lm) / (2 * h) - g[i]);
        if (!(e <= err)) err = e;
    }
    return err / scale;
}

#endif
