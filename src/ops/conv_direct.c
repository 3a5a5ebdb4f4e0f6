/* The direct OpenCL convolution (cl/conv3d.cl): launch geometry, weight transposes,
 * weight-gradient partials and their deterministic reduction. */
#include <stdio.h>
#include <stdlib.h>

#include "conv_internal.h"

#define WB 4 /* output positions along W per work-item (KD_WB in conv3d.cl) */

/* Widest vector (16, 8 or 1) that divides the channel count. */
static int vec_width(int c) { return c % 16 == 0 ? 16 : c % 8 == 0 ? 8 : 1; }

/* Local size along H of the forward/input-gradient kernels: small groups of rows keep
 * PoCL from vectorising across work-items and balance the two-core load. */
static size_t rows_per_group(int rows) {
    static int ly = -1;
    if (ly < 0) {
        const char *e = getenv("KDSEG_CONV_LY");
        ly = (e && atoi(e) > 0) ? atoi(e) : 4;
    }
    return rows >= ly ? (size_t)ly : 1;
}

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* A temporary device buffer of n floats (from the pool; released after enqueueing, which
 * is safe on the in-order queue). */
typedef struct tmpbuf {
    cl_mem mem;
    size_t bytes;
} tmpbuf;

static kd_status tmp_alloc(kd_device *dev, size_t n, tmpbuf *t) {
    t->bytes = n * sizeof(float);
    return kd_rt_alloc(dev, t->bytes, &t->mem);
}
static void tmp_free(kd_device *dev, tmpbuf *t) {
    if (t->mem) kd_rt_release(dev, t->mem, t->bytes);
    t->mem = NULL;
}

/* wt (K3, B, A) from w (K3, A, B). */
static kd_status transpose_w(kd_device *dev, const kd_tensor *w, int K3, int A, int B,
                             tmpbuf *wt) {
    kd_status s = tmp_alloc(dev, (size_t)K3 * A * B, wt);
    if (s) return s;
    size_t g = (size_t)K3 * A * B;
    return kd_rt_launch(dev, "kd_conv_wtranspose", 1, &g, NULL,
                        KD_ARGS(KD_T(w), KD_MEM(wt->mem), KD_INT(K3), KD_INT(A), KD_INT(B)));
}

/* The conv kernels' argument tail: sizes of input and output, taps, stride, pad. */
#define GEOM_ARGS(N, D, H, W, CI, DO, HO, WO, CO, KD, KH, KW, S, P)                       \
    KD_INT(N), KD_INT(D), KD_INT(H), KD_INT(W), KD_INT(CI), KD_INT(DO), KD_INT(HO),       \
        KD_INT(WO), KD_INT(CO), KD_INT(KD), KD_INT(KH), KD_INT(KW), KD_INT(S), KD_INT(P)

/* y = conv(x, w) + b on the dense kernel: x (n, ci, d, h, w), w (k, ci, co). */
static kd_status dense_forward(kd_device *dev, int n, int ci, int d, int h, int w, int co,
                               int od, int oh, int ow, const int *k, int s, int p,
                               cl_mem xm, size_t xoff, cl_mem wm, size_t woff,
                               const kd_tensor *b, const kd_tensor *y) {
    int v = vec_width(co);
    char name[48];
    snprintf(name, sizeof name, "kd_conv3d_fwd_v%d", v);
    size_t gws[3] = {cdiv((size_t)ow, WB) * (size_t)(co / v), (size_t)oh, (size_t)n * od};
    size_t lws[3] = {1, rows_per_group(oh), 1};
    cl_mem bm = b ? b->mem : y->mem;
    return kd_rt_launch(dev, name, 3, gws, lws,
                        KD_ARGS(KD_MEM(xm), KD_INT(xoff), KD_MEM(wm), KD_INT(woff), KD_MEM(bm),
                                KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_T(y),
                                GEOM_ARGS(n, d, h, w, ci, od, oh, ow, co, k[0], k[1], k[2], s, p)));
}

/* dx = sum over taps dy . wt [+ b] on the dense kernel: dx (n, ci, d, h, w),
 * dy (n, co, od, oh, ow), wt (k, co, ci). */
static kd_status dense_backward_data(kd_device *dev, int n, int ci, int d, int h, int w, int co,
                                     int od, int oh, int ow, const int *k, int s, int p,
                                     const kd_tensor *dy, cl_mem wtm, size_t wtoff,
                                     const kd_tensor *b, const kd_tensor *dx) {
    int v = vec_width(ci);
    char name[48];
    snprintf(name, sizeof name, "kd_conv3d_bwd_data_v%d", v);
    size_t per_parity = cdiv(cdiv((size_t)w, (size_t)s), WB);
    size_t gws[3] = {(size_t)(ci / v) * (size_t)s * per_parity, (size_t)h, (size_t)n * d};
    size_t lws[3] = {1, rows_per_group(h), 1};
    cl_mem bm = b ? b->mem : dx->mem;
    return kd_rt_launch(dev, name, 3, gws, lws,
                        KD_ARGS(KD_T(dy), KD_MEM(wtm), KD_INT(wtoff), KD_MEM(bm),
                                KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_T(dx),
                                GEOM_ARGS(n, d, h, w, ci, od, oh, ow, co, k[0], k[1], k[2], s, p)));
}

/* Chunks of output planes for weight-gradient partials: enough chunks to occupy the
 * device, few enough that the partial buffer stays small. */
static void plan_chunks(int planes_total, size_t per_chunk_floats, int *planes, int *nchunks) {
    size_t cap = ((size_t)16 << 20) / (per_chunk_floats ? per_chunk_floats : 1);
    int want = planes_total < 64 ? planes_total : 64;
    if ((size_t)want > cap) want = cap ? (int)cap : 1;
    if (want < 1) want = 1;
    *planes = (planes_total + want - 1) / want;
    *nchunks = (planes_total + *planes - 1) / *planes;
}

static kd_status reduce_into(kd_device *dev, cl_mem part, int nchunks, size_t m,
                             const kd_tensor *out, int transpose, int A, int B) {
    return kd_rt_launch(dev, "kd_conv_reduce", 1, &m, NULL,
                        KD_ARGS(KD_MEM(part), KD_INT(nchunks), KD_INT(m), KD_T(out),
                                KD_INT(transpose), KD_INT(A), KD_INT(B)));
}

/* dw (+)= x (*) dy on the dense kernel: x (n, ci, d, h, w), dy (n, co, od, oh, ow);
 * the partials are (k, ci, co) and reduced into dw, transposed to (k, co, ci) when
 * transpose is set. */
static kd_status dense_backward_weight(kd_device *dev, int n, int ci, int d, int h, int w,
                                       int co, int od, int oh, int ow, const int *k, int s,
                                       int p, const kd_tensor *x, const kd_tensor *dy,
                                       const kd_tensor *dw, int transpose) {
    int v = vec_width(co), K3 = k[0] * k[1] * k[2];
    size_t m = (size_t)K3 * ci * co;
    int planes, nchunks;
    plan_chunks(n * od, m, &planes, &nchunks);
    tmpbuf part = {0};
    kd_status st = tmp_alloc(dev, m * (size_t)nchunks, &part);
    if (st) return st;
    char name[48];
    snprintf(name, sizeof name, "kd_conv3d_wgrad_part_v%d", v);
    size_t gws[2] = {(size_t)K3 * cdiv((size_t)ci, 4) * (size_t)(co / v), (size_t)nchunks};
    st = kd_rt_launch(dev, name, 2, gws, NULL,
                      KD_ARGS(KD_T(x), KD_T(dy), KD_MEM(part.mem),
                              GEOM_ARGS(n, d, h, w, ci, od, oh, ow, co, k[0], k[1], k[2], s, p),
                              KD_INT(planes), KD_INT(nchunks)));
    if (!st) st = reduce_into(dev, part.mem, nchunks, m, dw, transpose, ci, co);
    tmp_free(dev, &part);
    return st;
}

/* ---- depthwise --------------------------------------------------------------------------- */

#define DW_ARGS(g)                                                                          \
    KD_INT((g)->n), KD_INT((g)->d), KD_INT((g)->h), KD_INT((g)->w), KD_INT((g)->ci),        \
        KD_INT((g)->od), KD_INT((g)->oh), KD_INT((g)->ow), KD_INT((g)->k[0]),               \
        KD_INT((g)->k[1]), KD_INT((g)->k[2]), KD_INT((g)->s), KD_INT((g)->p)

static kd_status dw_forward(const kd_conv_geom *g, const kd_tensor *x, const kd_tensor *w,
                            const kd_tensor *b, kd_tensor *y) {
    int v = vec_width(g->ci);
    char name[48];
    snprintf(name, sizeof name, "kd_dwconv3d_fwd_v%d", v);
    size_t gws[3] = {(size_t)(g->ci / v) * g->ow, (size_t)g->oh, (size_t)g->n * g->od};
    cl_mem bm = b ? b->mem : y->mem;
    return kd_rt_launch(x->dev, name, 3, gws, NULL,
                        KD_ARGS(KD_T(x), KD_T(w), KD_MEM(bm),
                                KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_T(y), DW_ARGS(g)));
}

static kd_status dw_backward_input(const kd_conv_geom *g, const kd_tensor *dy,
                                   const kd_tensor *w, kd_tensor *dx) {
    int v = vec_width(g->ci);
    char name[48];
    snprintf(name, sizeof name, "kd_dwconv3d_bwd_data_v%d", v);
    size_t gws[3] = {(size_t)(g->ci / v) * g->w, (size_t)g->h, (size_t)g->n * g->d};
    return kd_rt_launch(dy->dev, name, 3, gws, NULL,
                        KD_ARGS(KD_T(dy), KD_T(w), KD_T(dx), DW_ARGS(g)));
}

static kd_status dw_backward_weight(const kd_conv_geom *g, const kd_tensor *x,
                                    const kd_tensor *dy, kd_tensor *dw) {
    kd_device *dev = x->dev;
    int v = vec_width(g->ci), K3 = g->k[0] * g->k[1] * g->k[2];
    size_t m = (size_t)K3 * g->ci;
    int planes, nchunks;
    plan_chunks(g->n * g->od, m, &planes, &nchunks);
    tmpbuf part = {0};
    kd_status st = tmp_alloc(dev, m * (size_t)nchunks, &part);
    if (st) return st;
    char name[48];
    snprintf(name, sizeof name, "kd_dwconv3d_wgrad_part_v%d", v);
    size_t gws[2] = {(size_t)K3 * (size_t)(g->ci / v), (size_t)nchunks};
    st = kd_rt_launch(dev, name, 2, gws, NULL,
                      KD_ARGS(KD_T(x), KD_T(dy), KD_MEM(part.mem), DW_ARGS(g), KD_INT(planes),
                              KD_INT(nchunks)));
    if (!st) st = reduce_into(dev, part.mem, nchunks, m, dw, 0, 1, 1);
    tmp_free(dev, &part);
    return st;
}

/* ---- entry points -------------------------------------------------------------------------- */

static const int k2[3] = {2, 2, 2};

kd_status kd_conv_direct_forward(const kd_conv_geom *g, const kd_tensor *x, const kd_tensor *w,
                                 const kd_tensor *b, kd_tensor *y) {
    kd_device *dev = x->dev;
    if (g->transposed) /* the transposed conv is the input gradient of a k2 s2 conv */
        return dense_backward_data(dev, g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h,
                                   g->w, k2, 2, 0, x, w->mem, w->off, b, y);
    if (g->groups > 1) return dw_forward(g, x, w, b, y);
    return dense_forward(dev, g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow, g->k,
                         g->s, g->p, x->mem, x->off, w->mem, w->off, b, y);
}

kd_status kd_conv_direct_backward_input(const kd_conv_geom *g, const kd_tensor *dy,
                                        const kd_tensor *w, kd_tensor *dx) {
    kd_device *dev = dy->dev;
    tmpbuf wt = {0};
    kd_status st;
    if (g->transposed) { /* dx = k2 s2 conv of dy with w's channel axes swapped */
        st = transpose_w(dev, w, 8, g->ci, g->co, &wt);
        if (!st)
            st = dense_forward(dev, g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h, g->w,
                               k2, 2, 0, dy->mem, dy->off, wt.mem, 0, NULL, dx);
    } else if (g->groups > 1) {
        return dw_backward_input(g, dy, w, dx);
    } else {
        int K3 = g->k[0] * g->k[1] * g->k[2];
        st = transpose_w(dev, w, K3, g->ci, g->co, &wt);
        if (!st)
            st = dense_backward_data(dev, g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh,
                                     g->ow, g->k, g->s, g->p, dy, wt.mem, 0, NULL, dx);
    }
    tmp_free(dev, &wt);
    return st;
}

kd_status kd_conv_direct_backward_weight(const kd_conv_geom *g, const kd_tensor *x,
                                         const kd_tensor *dy, kd_tensor *dw) {
    kd_device *dev = x->dev;
    if (g->transposed) /* partials (k, co, ci) of the k2 s2 conv of dy by x, transposed */
        return dense_backward_weight(dev, g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h,
                                     g->w, k2, 2, 0, dy, x, dw, 1);
    if (g->groups > 1) return dw_backward_weight(g, x, dy, dw);
    return dense_backward_weight(dev, g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow,
                                 g->k, g->s, g->p, x, dy, dw, 0);
}

kd_status kd_conv_bias_grad(const kd_tensor *dy, kd_tensor *db) {
    kd_device *dev = dy->dev;
    kd_shape s = dy->shape;
    int C = s.c;
    size_t R = kd_shape_numel(s) / (size_t)C;
    int nchunks = R < 64 ? (int)R : 64;
    int rows = (int)cdiv(R, (size_t)nchunks);
    nchunks = (int)cdiv(R, (size_t)rows);
    tmpbuf part = {0};
    kd_status st = tmp_alloc(dev, (size_t)nchunks * C, &part);
    if (st) return st;
    size_t gws[2] = {(size_t)C, (size_t)nchunks};
    st = kd_rt_launch(dev, "kd_conv_colsum_part", 2, gws, NULL,
                      KD_ARGS(KD_T(dy), KD_INT(R), KD_INT(C), KD_INT(rows), KD_INT(nchunks),
                              KD_MEM(part.mem)));
    if (!st) st = reduce_into(dev, part.mem, nchunks, (size_t)C, db, 0, 1, 1);
    tmp_free(dev, &part);
    return st;
}
