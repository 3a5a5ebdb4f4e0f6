/* The direct OpenCL convolution (cl/conv3d.cl): launch geometry, weight transposes,
 * weight-gradient partials and their deterministic reduction. */
#include <stdio.h>
#include <stdlib.h>

#include "conv_tune.h"

#define WB 4 /* output positions along W per work-item (KD_WB in conv3d.cl) */

/* Launch parameters (local sizes, vector width, loop order, weight-gradient chunks) come
 * from the per-device tuning table (conv_tune.c); its built-in default is the behaviour
 * from before the table: one work-item per group on CPUs, the driver's choice elsewhere. */

/* Widest vector (16, 8 or 1) that divides the channel count, at most vmax. */
static int vec_width(int c, int vmax) {
    return c % 16 == 0 && vmax >= 16 ? 16 : c % 8 == 0 && vmax >= 8 ? 8 : 1;
}

/* Whether local sizes are passed: set, driver (NULL), or auto (CPU devices only). */
static int use_local(kd_device *dev, const kd_conv_tune *t) {
    return t->local == KD_TUNE_LOCAL_SET ||
           (t->local == KD_TUNE_LOCAL_AUTO && kd_device_is_cpu(dev));
}

/* Local size along an axis of n work-items: want, at most n (the launch rounds the range up
 * to a multiple; the kernels guard their bounds). want = 1 (one work-item per group, PoCL
 * then compiles the kernel without a work-item loop) is the CPU default: on PoCL 3.1 1x1x1
 * convs ran 3-4x slower with 8-32 rows per group and 3x3x3 ones 10-30% slower with 4;
 * `kdseg tune` found 2-4 work-items along dim 0 5-20% faster for most shapes. */
static size_t local_of(size_t n, int want) {
    return n >= (size_t)want ? (size_t)want : (n ? n : 1);
}

/* The launches that the tuning parameters shape go through here: kdseg tune traces them to
 * tell which candidates launch exactly what the default launches. */
static kd_status conv_launch(kd_device *dev, const char *name, int dim, const size_t *gws,
                             const size_t *lws, int nargs, const kd_arg *args) {
    kd_conv_tune_trace_add(name, dim, gws, lws);
    return kd_rt_launch(dev, name, dim, gws, lws, nargs, args);
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
static kd_status transpose_w(kd_device *dev, const kd_tensor *w, int K3, int A, int B, int flip,
                             tmpbuf *wt) {
    kd_status s = tmp_alloc(dev, (size_t)K3 * A * B, wt);
    if (s) return s;
    size_t g[3] = {cdiv((size_t)A, 16), (size_t)B, (size_t)K3};
    return kd_rt_launch(dev, "kd_conv_wtranspose", 3, g, NULL,
                        KD_ARGS(KD_T(w), KD_MEM(wt->mem), KD_INT(K3), KD_INT(A), KD_INT(B),
                                KD_INT(flip)));
}

/* The conv kernels' argument tail: sizes of input and output, taps, stride, pad. */
#define GEOM_ARGS(N, D, H, W, CI, DO, HO, WO, CO, KD, KH, KW, S, P)                       \
    KD_INT(N), KD_INT(D), KD_INT(H), KD_INT(W), KD_INT(CI), KD_INT(DO), KD_INT(HO),       \
        KD_INT(WO), KD_INT(CO), KD_INT(KD), KD_INT(KH), KD_INT(KW), KD_INT(S), KD_INT(P)

/* wp (K3A, Bp) = w (K3A, B) zero-padded; m, off name w. */
static kd_status pad_cols(kd_device *dev, cl_mem m, size_t off, int K3A, int B, int Bp,
                          tmpbuf *wp) {
    kd_status s = tmp_alloc(dev, (size_t)K3A * Bp, wp);
    if (s) return s;
    size_t g = (size_t)K3A * Bp;
    return kd_rt_launch(dev, "kd_conv_wpad", 1, &g, NULL,
                        KD_ARGS(KD_MEM(m), KD_INT(off), KD_MEM(wp->mem), KD_INT(K3A), KD_INT(B),
                                KD_INT(Bp)));
}

/* The forward kernel's register block: P output positions (t->wb: 4 or 8) times M channel
 * vectors, M the largest of t->cb (1, 2 or 4) and its halves that divides the nvec vectors
 * of the output channels. Instantiated: 4 x 1, 4 x 4, 8 x 1, 8 x 2; 4 x 2 runs as 8 x 2,
 * 8 x 4 as 8 x 2. */
static void fwd_block(const kd_conv_tune *t, int nvec, int *p, int *m) {
    int mb = t->cb;
    while (mb > 1 && nvec % mb) mb /= 2;
    *p = t->wb;
    if (mb == 2) *p = 8;
    if (*p == 8 && mb > 2) mb = 2;
    *m = mb;
}

/* Whether some output position of the forward kernel reads outside the input along W (the
 * padding, or a partial block's positions past Wo): it then needs ci zeros. */
static int fwd_needs_zeros(int w, int ow, int kw, int s, int pw, int pb) {
    return pw > 0 || ow % pb != 0 || (ow - 1) * s - pw + kw > w;
}

/* Whether the few-output-channel kernels run this pass (ci -> co): co 3 or 4 (the forward
 * also 5), ci a multiple of 8 (their vectors run over ci), vectors allowed, and t->small. */
static int small_ok(const kd_conv_tune *t, int ci, int co, int comax) {
    return t->small && co >= 3 && co <= comax && ci % 8 == 0 && t->vmax >= 8;
}
/* The forward only with more than one tap: a 1x1x1 conv's work-items hold one vector
 * step each, and the padded dense kernel was faster there (PoCL, 16 -> 3 at 64^3). 5
 * outputs: the input gradient of the cascade teacher's 5 -> 16 input conv (on the dense
 * kernel its 5 channels ran on float8 vectors, 5 of 8 lanes doing work). */
static int small_fwd_ok(const kd_conv_tune *t, int ci, int co, const int *k) {
    return small_ok(t, ci, co, 5) && k[0] * k[1] * k[2] > 1;
}
/* The weight gradient: its work-items hold every tap along W (KW 1 or 3). */
static int small_wgrad_ok(const kd_conv_tune *t, int ci, int co, int kw) {
    return small_ok(t, ci, co, 4) && (kw == 1 || kw == 3);
}
/* Positions per work-item of the few-output forward (kd_conv3d_fwd_small_*). */
static int small_fwd_p(int co) { return co == 3 ? 8 : 4; }

/* The forward on the few-output-channel kernel: weights transposed to (K3, co, ci). */
static kd_status small_forward(kd_device *dev, int n, int ci, int d, int h, int w, int co,
                               int od, int oh, int ow, const int *k, int s, const int *pad,
                               cl_mem xm, size_t xoff, cl_mem wm, size_t woff,
                               const kd_tensor *b, const kd_tensor *y, const kd_conv_tune *t) {
    int K3 = k[0] * k[1] * k[2], v = vec_width(ci, t->vmax), pb = small_fwd_p(co);
    tmpbuf wt = {0}, zr = {0};
    kd_status st = tmp_alloc(dev, (size_t)K3 * ci * co, &wt);
    if (!st) { /* (KD*KH, KW*ci, co) -> (KD*KH, co, KW*ci) */
        size_t g[3] = {cdiv((size_t)(k[2] * ci), 16), (size_t)co, (size_t)(k[0] * k[1])};
        st = kd_rt_launch(dev, "kd_conv_wtranspose", 3, g, NULL,
                          KD_ARGS(KD_MEM(wm), KD_INT(woff), KD_MEM(wt.mem), KD_INT(k[0] * k[1]),
                                  KD_INT(k[2] * ci), KD_INT(co), KD_INT(0)));
    }
    cl_mem zm = xm, bm = b ? b->mem : xm;
    if (!st && fwd_needs_zeros(w, ow, k[2], s, pad[2], pb)) {
        st = tmp_alloc(dev, (size_t)ci, &zr);
        if (!st) st = kd_rt_fill(dev, zr.mem, 0, zr.bytes, 0.0f);
        zm = zr.mem;
    }
    if (!st) {
        char name[48];
        snprintf(name, sizeof name, "kd_conv3d_fwd_small_v%d_o%d", v, co);
        size_t gws[3] = {cdiv((size_t)ow, (size_t)pb), (size_t)oh, (size_t)n * od};
        size_t lws[3] = {local_of(gws[0], t->lx), local_of(gws[1], t->ly), 1};
        st = conv_launch(dev, name, 3, gws, use_local(dev, t) ? lws : NULL,
                         KD_ARGS(KD_MEM(xm), KD_INT(xoff), KD_MEM(wt.mem), KD_MEM(bm),
                                 KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_MEM(zm), KD_T(y),
                                 KD_INT(n), KD_INT(d), KD_INT(h), KD_INT(w), KD_INT(ci), KD_INT(od),
                                 KD_INT(oh), KD_INT(ow), KD_INT(k[0]), KD_INT(k[1]), KD_INT(k[2]),
                                 KD_INT(s), KD_INT(pad[0]), KD_INT(pad[1]), KD_INT(pad[2])));
    }
    tmp_free(dev, &wt);
    tmp_free(dev, &zr);
    return st;
}

/* Whether the pointwise kernel runs this forward-like pass: 1x1x1, stride 1, no padding
 * (the forward and the input gradient of a 1x1 conv), and t->pw set. */
static int pointwise_ok(const kd_conv_tune *t, const int *k, int s, const int *pad) {
    return t->pw > 0 && k[0] == 1 && k[1] == 1 && k[2] == 1 && s == 1 && !pad[0] && !pad[1] &&
           !pad[2];
}

/* y (r, co) = x (r, ci) . w (ci, cop) + b on kd_conv3d_pw_*: cop the (padded) weights'
 * channels, co <= cop the output's; mb channel vectors per work-item (1, 2; 4 runs as 2). */
static kd_status pointwise_forward(kd_device *dev, int r, int ci, int cop, int co, int v, int mb,
                                   cl_mem xm, size_t xoff, cl_mem wm, size_t woff, cl_mem bm,
                                   size_t boff, int has_b, const kd_tensor *y,
                                   const kd_conv_tune *t) {
    if (mb > 2) mb = 2;
    char name[48];
    snprintf(name, sizeof name, "kd_conv3d_pw_v%d_m%d", v, mb);
    /* t->pw blocks of 8 positions per work-item, fewer where that would leave under 16
     * work-items (a small layer still spreads over the cores) */
    size_t nco = (size_t)(cop / (v * mb));
    int nb = t->pw;
    while (nb > 1 && cdiv((size_t)r, (size_t)8 * nb) * nco < 16) nb /= 2;
    size_t gws = cdiv((size_t)r, (size_t)8 * nb) * nco;
    size_t lws = local_of(gws, t->lx);
    return conv_launch(dev, name, 1, &gws, use_local(dev, t) ? &lws : NULL,
                       KD_ARGS(KD_MEM(xm), KD_INT(xoff), KD_MEM(wm), KD_INT(woff), KD_MEM(bm),
                               KD_INT(boff), KD_INT(has_b), KD_T(y), KD_INT(r), KD_INT(ci),
                               KD_INT(cop), KD_INT(co), KD_INT(nb)));
}

/* Whether the pointwise few-output kernel (kd_conv3d_pwo_*: 16 positions in the lanes)
 * runs this 1x1 forward-like pass: pointwise_ok, small_ok for 3 or 4 outputs, and float16
 * vectors allowed. */
static int pointwise_few_ok(const kd_conv_tune *t, const int *k, int s, const int *pad, int ci,
                            int co) {
    return pointwise_ok(t, k, s, pad) && small_ok(t, ci, co, 4) && t->vmax >= 16;
}

/* y (r, co) = x (r, ci) . w (ci, co) + b on kd_conv3d_pwo_o<co>: the unpadded weights,
 * t->pw / 2 blocks of 16 positions per work-item (as many positions as the pointwise
 * kernel's t->pw blocks of 8), fewer where that would leave under 16 work-items. */
static kd_status pointwise_few_forward(kd_device *dev, int r, int ci, int co, cl_mem xm,
                                       size_t xoff, cl_mem wm, size_t woff, const kd_tensor *b,
                                       const kd_tensor *y, const kd_conv_tune *t) {
    char name[48];
    snprintf(name, sizeof name, "kd_conv3d_pwo_o%d", co);
    int nb = t->pw > 1 ? t->pw / 2 : 1;
    while (nb > 1 && cdiv((size_t)r, (size_t)16 * nb) < 16) nb /= 2;
    size_t gws = cdiv((size_t)r, (size_t)16 * nb);
    size_t lws = local_of(gws, t->lx);
    cl_mem bm = b ? b->mem : y->mem;
    return conv_launch(dev, name, 1, &gws, use_local(dev, t) ? &lws : NULL,
                       KD_ARGS(KD_MEM(xm), KD_INT(xoff), KD_MEM(wm), KD_INT(woff),
                               KD_MEM(bm), KD_INT(b ? b->off : 0),
                               KD_INT(b != NULL), KD_T(y), KD_INT(r), KD_INT(ci), KD_INT(nb)));
}

/* y = conv(x, w) + b on the dense kernel: x (n, ci, d, h, w), w (k, ci, co), padding per
 * axis pad[3] (may be negative: cropping). Output channels that are not a multiple of 8
 * run on weights (and bias) zero-padded to a multiple of 8, so the kernel stays vectorised. */
static kd_status dense_forward(kd_device *dev, int n, int ci, int d, int h, int w, int co,
                               int od, int oh, int ow, const int *k, int s, const int *pad,
                               cl_mem xm, size_t xoff, cl_mem wm, size_t woff,
                               const kd_tensor *b, const kd_tensor *y, const kd_conv_tune *t) {
    if (small_fwd_ok(t, ci, co, k))
        return small_forward(dev, n, ci, d, h, w, co, od, oh, ow, k, s, pad, xm, xoff, wm, woff,
                             b, y, t);
    if (pointwise_few_ok(t, k, s, pad, ci, co))
        return pointwise_few_forward(dev, n * d * h * w, ci, co, xm, xoff, wm, woff, b, y, t);
    /* (not with scalar kernels, vmax 1: the v1 store writes whole vectors of one lane, and
     * padding would only add work) */
    int cop = co % 8 == 0 || t->vmax < 8 ? co : (co + 7) / 8 * 8;
    tmpbuf wp = {0}, bp = {0}, zr = {0};
    cl_mem bm = b ? b->mem : y->mem;
    size_t boff = b ? b->off : 0;
    kd_status st = KD_OK;
    if (cop != co) {
        int K3 = k[0] * k[1] * k[2];
        st = pad_cols(dev, wm, woff, K3 * ci, co, cop, &wp);
        if (!st && b) st = pad_cols(dev, b->mem, b->off, 1, co, cop, &bp);
        if (st) goto done;
        wm = wp.mem, woff = 0;
        if (b) bm = bp.mem, boff = 0;
    }
    int v = vec_width(cop, t->vmax), pb, mb;
    fwd_block(t, cop / v, &pb, &mb);
    if (pointwise_ok(t, k, s, pad)) {
        st = pointwise_forward(dev, n * d * h * w, ci, cop, co, v, mb, xm, xoff, wm, woff, bm,
                               boff, b != NULL, y, t);
        goto done;
    }
    /* two output rows per work-item (kd_conv3d_fwd2_*): stride 1, one vector per block, and
     * rows that share input rows (KH > 1) */
    int rows2 = t->rows == 2 && s == 1 && mb == 1 && v >= 8 && k[1] > 1;
    if (rows2) pb = 8;
    char name[48];
    if (rows2) snprintf(name, sizeof name, "kd_conv3d_fwd2_v%d_p8", v);
    else snprintf(name, sizeof name, "kd_conv3d_fwd_v%d_p%dm%d", v, pb, mb);
    /* weights larger than the threshold (256 KiB, about half an L2 cache, by default): loop
     * over channel blocks outermost */
    int co_outer = t->coouter >= 0 &&
                   (size_t)k[0] * k[1] * k[2] * ci * cop * sizeof(float) >
                       ((size_t)t->coouter << 10) &&
                   cop > v * mb;
    size_t nxb = cdiv((size_t)ow, (size_t)pb), nco = (size_t)(cop / (v * mb));
    /* positions in the padding or past Wo read ci zeros */
    cl_mem zm = xm;
    if (fwd_needs_zeros(w, ow, k[2], s, pad[2], pb)) {
        st = tmp_alloc(dev, (size_t)ci, &zr);
        if (!st) st = kd_rt_fill(dev, zr.mem, 0, zr.bytes, 0.0f);
        if (st) goto done;
        zm = zr.mem;
    }
    if (rows2) co_outer = 0;
    size_t gws[3] = {co_outer ? nxb : nxb * nco, rows2 ? cdiv((size_t)oh, 2) : (size_t)oh,
                     (size_t)n * od * (co_outer ? nco : 1)};
    size_t lws[3] = {local_of(gws[0], t->lx), local_of(gws[1], t->ly), 1};
    st = conv_launch(dev, name, 3, gws, use_local(dev, t) ? lws : NULL,
                      KD_ARGS(KD_MEM(xm), KD_INT(xoff), KD_MEM(wm), KD_INT(woff), KD_MEM(bm),
                              KD_INT(boff), KD_INT(b != NULL), KD_MEM(zm), KD_T(y),
                              GEOM_ARGS(n, d, h, w, ci, od, oh, ow, cop, k[0], k[1], k[2], s,
                                        pad[0]),
                              KD_INT(pad[1]), KD_INT(pad[2]), KD_INT(co), KD_INT(co_outer)));
done:
    tmp_free(dev, &wp);
    tmp_free(dev, &bp);
    tmp_free(dev, &zr);
    return st;
}

/* dx = dy (*) wt [+ b] for a 2x2x2 stride-2 conv without padding on kd_conv3d_s2d_*: each
 * input position takes one tap; t->pw blocks of 8 positions along a row per work-item
 * (fewer where that would leave under 16 work-items), t->cb channel vectors (1 or 2). */
static kd_status s2_backward_data(kd_device *dev, int n, int ci, int d, int h, int w, int co,
                                  int od, int oh, int ow, const kd_tensor *dy, cl_mem wtm,
                                  size_t wtoff, const kd_tensor *b, const kd_tensor *dx, int v,
                                  const kd_conv_tune *t) {
    int mb = t->cb > 2 ? 2 : t->cb;
    while (mb > 1 && (ci / v) % mb) mb /= 2;
    char name[48];
    snprintf(name, sizeof name, "kd_conv3d_s2d_v%d_m%d", v, mb);
    size_t nci = (size_t)(ci / (v * mb)), rows = (size_t)h * n * d, nx = cdiv((size_t)w, 2);
    int nb = t->pw;
    while (nb > 1 && nci * 2 * cdiv(nx, (size_t)8 * nb) * rows < 16) nb /= 2;
    size_t gws[3] = {nci * 2 * cdiv(nx, (size_t)8 * nb), (size_t)h, (size_t)n * d};
    size_t lws[3] = {local_of(gws[0], t->lx), local_of(gws[1], t->ly), 1};
    cl_mem bm = b ? b->mem : dx->mem;
    return conv_launch(dev, name, 3, gws, use_local(dev, t) ? lws : NULL,
                       KD_ARGS(KD_T(dy), KD_MEM(wtm), KD_INT(wtoff), KD_MEM(bm),
                               KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_T(dx), KD_INT(n),
                               KD_INT(d), KD_INT(h), KD_INT(w), KD_INT(ci), KD_INT(od),
                               KD_INT(oh), KD_INT(ow), KD_INT(co), KD_INT(nb)));
}

/* dx = sum over taps dy . wt [+ b] on the dense kernel: dx (n, ci, d, h, w),
 * dy (n, co, od, oh, ow), wt (k, co, ci). */
static kd_status dense_backward_data(kd_device *dev, int n, int ci, int d, int h, int w, int co,
                                     int od, int oh, int ow, const int *k, int s, int p,
                                     const kd_tensor *dy, cl_mem wtm, size_t wtoff,
                                     const kd_tensor *b, const kd_tensor *dx,
                                     const kd_conv_tune *t) {
    int v = vec_width(ci, t->vmax);
    if (t->pw > 0 && k[0] == 2 && k[1] == 2 && k[2] == 2 && s == 2 && p == 0)
        return s2_backward_data(dev, n, ci, d, h, w, co, od, oh, ow, dy, wtm, wtoff, b, dx, v, t);
    char name[48];
    snprintf(name, sizeof name, "kd_conv3d_bwd_data_v%d", v);
    size_t per_parity = cdiv(cdiv((size_t)w, (size_t)s), WB);
    size_t gws[3] = {(size_t)(ci / v) * (size_t)s * per_parity, (size_t)h, (size_t)n * d};
    size_t lws[3] = {local_of(gws[0], t->lx), local_of(gws[1], t->ly), 1};
    cl_mem bm = b ? b->mem : dx->mem;
    return conv_launch(dev, name, 3, gws, use_local(dev, t) ? lws : NULL,
                        KD_ARGS(KD_T(dy), KD_MEM(wtm), KD_INT(wtoff), KD_MEM(bm),
                                KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_T(dx),
                                GEOM_ARGS(n, d, h, w, ci, od, oh, ow, co, k[0], k[1], k[2], s, p)));
}

/* The weight-gradient kernel's block: CI input channels (t->wci: 4 or 8; 4 when there are
 * at most 4) times M output channel vectors, M the largest of t->wcb (1, 2 or 4) and its
 * halves that divides the nvec vectors. Instantiated: 4 x 1, 4 x 4, 8 x 1, 8 x 2; 4 x 2
 * runs as 8 x 2 (as 4 x 1 with at most 4 input channels), 8 x 4 as 8 x 2. */
static void wgrad_block(const kd_conv_tune *t, int ci, int nvec, int *c, int *m) {
    int mb = t->wcb;
    while (mb > 1 && nvec % mb) mb /= 2;
    *c = ci <= 4 ? 4 : t->wci;
    if (mb == 2) {
        if (*c == 4 && ci > 4) *c = 8;
        else if (*c == 4) mb = 1;
    }
    if (*c == 8 && mb > 2) mb = 2;
    *m = mb;
}

/* Chunks of output planes for weight-gradient partials: enough chunks to occupy the
 * device, few enough that the partial buffer stays small; with t->wkb > 0 also no more
 * than one per wkb KiB of x and dy (data_bytes in all): each chunk's planes are then read
 * from cache by all work-items of the chunk, and small problems take one chunk (no
 * partials, no reduction). */
static void plan_chunks(int planes_total, size_t per_chunk_floats, size_t data_bytes,
                        const kd_conv_tune *t, int *planes, int *nchunks) {
    size_t cap = ((size_t)16 << 20) / (per_chunk_floats ? per_chunk_floats : 1);
    int want = planes_total < t->chunks ? planes_total : t->chunks;
    if ((size_t)want > cap) want = cap ? (int)cap : 1;
    if (t->wkb > 0) {
        size_t by = cdiv(data_bytes, (size_t)t->wkb << 10);
        if ((size_t)want > by) want = (int)by;
    }
    if (want < 1) want = 1;
    *planes = (planes_total + want - 1) / want;
    *nchunks = (planes_total + *planes - 1) / *planes;
}

/* Bytes of x (n, ci, d, h, w) and dy (n, co, od, oh, ow). */
static size_t xdy_bytes(int n, int ci, int d, int h, int w, int co, int od, int oh, int ow) {
    return ((size_t)n * d * h * w * ci + (size_t)n * od * oh * ow * co) * sizeof(float);
}

static kd_status reduce_into(kd_device *dev, cl_mem part, int nchunks, size_t m,
                             const kd_tensor *out, int transpose, int A, int B) {
    return kd_rt_launch(dev, "kd_conv_reduce", 1, &m, NULL,
                        KD_ARGS(KD_MEM(part), KD_INT(nchunks), KD_INT(m), KD_T(out),
                                KD_INT(transpose), KD_INT(A), KD_INT(B)));
}

/* dw += x (*) dy for co 3 or 4 (small_wgrad_ok): partials (k, co, ci) per chunk, reduced
 * and transposed into dw (k, ci, co). */
static kd_status small_backward_weight(kd_device *dev, int n, int ci, int d, int h, int w, int co,
                                       int od, int oh, int ow, const int *k, int s, int p,
                                       const kd_tensor *x, const kd_tensor *dy,
                                       const kd_tensor *dw, const kd_conv_tune *t) {
    int K3 = k[0] * k[1] * k[2], v = vec_width(ci, t->vmax), planes, nchunks;
    size_t m = (size_t)K3 * ci * co;
    kd_conv_tune tc = *t;
    tc.wkb = 0; /* few work-items per chunk (KD*KH*ci/v): chunks are the parallelism */
    plan_chunks(n * od, m, 0, &tc, &planes, &nchunks);
    tmpbuf part = {0}, zr = {0};
    kd_status st = tmp_alloc(dev, m * (size_t)nchunks, &part);
    if (!st) st = tmp_alloc(dev, (size_t)ci, &zr);
    if (!st) st = kd_rt_fill(dev, zr.mem, 0, zr.bytes, 0.0f);
    if (!st) {
        char name[48];
        snprintf(name, sizeof name, "kd_conv3d_wgrad_small_v%d_k%do%d", v, k[2], co);
        size_t gws[2] = {(size_t)k[0] * k[1] * (size_t)(ci / v), (size_t)nchunks};
        size_t lws[2] = {local_of(gws[0], t->wlx), 1};
        st = conv_launch(dev, name, 2, gws, use_local(dev, t) ? lws : NULL,
                         KD_ARGS(KD_T(x), KD_T(dy), KD_MEM(zr.mem), KD_MEM(part.mem), KD_INT(n),
                                 KD_INT(d), KD_INT(h), KD_INT(w), KD_INT(ci), KD_INT(od),
                                 KD_INT(oh), KD_INT(ow), KD_INT(k[0]), KD_INT(k[1]), KD_INT(s),
                                 KD_INT(p), KD_INT(planes), KD_INT(nchunks)));
    }
    /* partial (k, co, ci) -> dw (k, ci, co): the reduction's transpose with A = co, B = ci */
    if (!st) st = reduce_into(dev, part.mem, nchunks, m, dw, 1, co, ci);
    tmp_free(dev, &part);
    tmp_free(dev, &zr);
    return st;
}

/* dw (+)= x (*) dy on the dense kernel: x (n, ci, d, h, w), dy (n, co, od, oh, ow);
 * the partials are (k, ci, co) and reduced into dw, transposed to (k, co, ci) when
 * transpose is set. */
static kd_status dense_backward_weight(kd_device *dev, int n, int ci, int d, int h, int w,
                                       int co, int od, int oh, int ow, const int *k, int s,
                                       int p, const kd_tensor *x, const kd_tensor *dy,
                                       const kd_tensor *dw, int transpose,
                                       const kd_conv_tune *t) {
    if (!transpose && small_wgrad_ok(t, ci, co, k[2]))
        return small_backward_weight(dev, n, ci, d, h, w, co, od, oh, ow, k, s, p, x, dy, dw, t);
    /* Cout not a multiple of 8 (3 or 4 outputs need Cin a multiple of 8 for the kernels
     * above): dy zero-padded to 8 channels keeps the partial kernel vectorised (the scalar
     * kernel ran at 3 GFLOP/s on PoCL); the padded columns are dropped in the reduction. */
    int cop = co % 8 == 0 || transpose || t->vmax < 8 ? co : (co + 7) / 8 * 8;
    int v = vec_width(cop, t->vmax), K3 = k[0] * k[1] * k[2], cb, mb;
    wgrad_block(t, ci, cop / v, &cb, &mb);
    size_t m = (size_t)K3 * ci * cop;
    int planes, nchunks;
    plan_chunks(n * od, m, xdy_bytes(n, ci, d, h, w, co, od, oh, ow), t, &planes, &nchunks);
    /* one chunk: the kernel adds straight into dw (same layout), no partials */
    int direct = nchunks == 1 && cop == co && !transpose;
    tmpbuf part = {0}, dyp = {0};
    cl_mem dym = dy->mem, pm;
    size_t dyoff = dy->off, poff = 0;
    kd_status st = KD_OK;
    if (cop != co) {
        st = pad_cols(dev, dy->mem, dy->off, n * od * oh * ow, co, cop, &dyp);
        dym = dyp.mem, dyoff = 0;
    }
    if (!st && !direct) st = tmp_alloc(dev, m * (size_t)nchunks, &part);
    if (st) goto done;
    pm = direct ? dw->mem : part.mem;
    if (direct) poff = dw->off;
    /* the three taps along W in one work-item (kd_conv3d_wgrad_t3_*): KW 3, stride 1, one
     * vector per block */
    int t3 = t->wt3 && k[2] == 3 && s == 1 && mb == 1 && v >= 8;
    char name[48];
    if (t3) snprintf(name, sizeof name, "kd_conv3d_wgrad_t3_v%d", v);
    else snprintf(name, sizeof name, "kd_conv3d_wgrad_part_v%d_c%dm%d", v, cb, mb);
    size_t gws[2] = {t3 ? (size_t)k[0] * k[1] * cdiv((size_t)ci, 4) * (size_t)(cop / v)
                        : (size_t)K3 * cdiv((size_t)ci, (size_t)cb) * (size_t)(cop / (v * mb)),
                     (size_t)nchunks};
    /* each item loops over a whole chunk: on CPUs no grouping is needed (wlx 1) */
    size_t lws[2] = {local_of(gws[0], t->wlx), 1};
    st = conv_launch(dev, name, 2, gws, use_local(dev, t) ? lws : NULL,
                     KD_ARGS(KD_T(x), KD_MEM(dym), KD_INT(dyoff), KD_MEM(pm), KD_INT(poff),
                             KD_INT(direct),
                             GEOM_ARGS(n, d, h, w, ci, od, oh, ow, cop, k[0], k[1], k[2], s, p),
                             KD_INT(planes), KD_INT(nchunks)));
    if (st || direct) goto done;
    if (cop == co) {
        st = reduce_into(dev, part.mem, nchunks, m, dw, transpose, ci, co);
    } else {
        size_t gr = (size_t)K3 * ci * co;
        st = kd_rt_launch(dev, "kd_conv_reduce_crop", 1, &gr, NULL,
                          KD_ARGS(KD_MEM(part.mem), KD_INT(nchunks), KD_INT(K3 * ci), KD_INT(cop),
                                  KD_T(dw), KD_INT(co)));
    }
done:
    tmp_free(dev, &part);
    tmp_free(dev, &dyp);
    return st;
}

/* ---- depthwise --------------------------------------------------------------------------- */

#define DW_ARGS(g)                                                                          \
    KD_INT((g)->n), KD_INT((g)->d), KD_INT((g)->h), KD_INT((g)->w), KD_INT((g)->ci),        \
        KD_INT((g)->od), KD_INT((g)->oh), KD_INT((g)->ow), KD_INT((g)->k[0]),               \
        KD_INT((g)->k[1]), KD_INT((g)->k[2]), KD_INT((g)->s), KD_INT((g)->p)

static kd_status dw_forward(const kd_conv_geom *g, const kd_tensor *x, const kd_tensor *w,
                            const kd_tensor *b, kd_tensor *y, const kd_conv_tune *t) {
    int v = vec_width(g->ci, t->vmax);
    char name[48];
    snprintf(name, sizeof name, "kd_dwconv3d_fwd_v%d", v);
    size_t gws[3] = {(size_t)(g->ci / v) * g->ow, (size_t)g->oh, (size_t)g->n * g->od};
    cl_mem bm = b ? b->mem : y->mem;
    return conv_launch(x->dev, name, 3, gws, NULL,
                        KD_ARGS(KD_T(x), KD_T(w), KD_MEM(bm),
                                KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_T(y), DW_ARGS(g)));
}

static kd_status dw_backward_input(const kd_conv_geom *g, const kd_tensor *dy,
                                   const kd_tensor *w, kd_tensor *dx, const kd_conv_tune *t) {
    int v = vec_width(g->ci, t->vmax);
    char name[48];
    snprintf(name, sizeof name, "kd_dwconv3d_bwd_data_v%d", v);
    size_t gws[3] = {(size_t)(g->ci / v) * g->w, (size_t)g->h, (size_t)g->n * g->d};
    return conv_launch(dy->dev, name, 3, gws, NULL,
                        KD_ARGS(KD_T(dy), KD_T(w), KD_T(dx), DW_ARGS(g)));
}

static kd_status dw_backward_weight(const kd_conv_geom *g, const kd_tensor *x,
                                    const kd_tensor *dy, kd_tensor *dw, const kd_conv_tune *t) {
    kd_device *dev = x->dev;
    int v = vec_width(g->ci, t->vmax), K3 = g->k[0] * g->k[1] * g->k[2];
    size_t m = (size_t)K3 * g->ci;
    int planes, nchunks;
    plan_chunks(g->n * g->od, m, xdy_bytes(g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow),
                t, &planes, &nchunks);
    tmpbuf part = {0};
    kd_status st = tmp_alloc(dev, m * (size_t)nchunks, &part);
    if (st) return st;
    char name[48];
    snprintf(name, sizeof name, "kd_dwconv3d_wgrad_part_v%d", v);
    size_t gws[2] = {(size_t)K3 * (size_t)(g->ci / v), (size_t)nchunks};
    st = conv_launch(dev, name, 2, gws, NULL,
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
    kd_conv_tune t;
    kd_conv_tune_get(dev, g, KD_PASS_FWD, &t, NULL, 0);
    if (g->transposed) /* the transposed conv is the input gradient of a k2 s2 conv */
        return dense_backward_data(dev, g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h,
                                   g->w, k2, 2, 0, x, w->mem, w->off, b, y, &t);
    if (g->groups > 1) return dw_forward(g, x, w, b, y, &t);
    int pad[3] = {g->p, g->p, g->p};
    return dense_forward(dev, g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow, g->k,
                         g->s, pad, x->mem, x->off, w->mem, w->off, b, y, &t);
}

kd_status kd_conv_direct_backward_input(const kd_conv_geom *g, const kd_tensor *dy,
                                        const kd_tensor *w, kd_tensor *dx) {
    kd_device *dev = dy->dev;
    tmpbuf wt = {0};
    kd_status st;
    static const int pad0[3] = {0, 0, 0};
    int K3 = g->k[0] * g->k[1] * g->k[2];
    kd_conv_tune t;
    kd_conv_tune_get(dev, g, KD_PASS_BWD_DATA, &t, NULL, 0);
    if (g->transposed) { /* dx = k2 s2 conv of dy with w's channel axes swapped */
        st = transpose_w(dev, w, 8, g->ci, g->co, 0, &wt);
        if (!st)
            st = dense_forward(dev, g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h, g->w,
                               k2, 2, pad0, dy->mem, dy->off, wt.mem, 0, NULL, dx, &t);
    } else if (g->groups > 1) {
        return dw_backward_input(g, dy, w, dx, &t);
    } else if (g->s == 1) { /* a forward conv of dy with flipped weights, padding K-1-P */
        int pad[3] = {g->k[0] - 1 - g->p, g->k[1] - 1 - g->p, g->k[2] - 1 - g->p};
        st = transpose_w(dev, w, K3, g->ci, g->co, 1, &wt);
        if (!st)
            st = dense_forward(dev, g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h, g->w,
                               g->k, 1, pad, dy->mem, dy->off, wt.mem, 0, NULL, dx, &t);
    } else {
        st = transpose_w(dev, w, K3, g->ci, g->co, 0, &wt);
        if (!st)
            st = dense_backward_data(dev, g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh,
                                     g->ow, g->k, g->s, g->p, dy, wt.mem, 0, NULL, dx, &t);
    }
    tmp_free(dev, &wt);
    return st;
}

kd_status kd_conv_direct_backward_weight(const kd_conv_geom *g, const kd_tensor *x,
                                         const kd_tensor *dy, kd_tensor *dw) {
    kd_device *dev = x->dev;
    kd_conv_tune t;
    kd_conv_tune_get(dev, g, KD_PASS_BWD_WEIGHT, &t, NULL, 0);
    if (g->transposed) /* partials (k, co, ci) of the k2 s2 conv of dy by x, transposed */
        return dense_backward_weight(dev, g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h,
                                     g->w, k2, 2, 0, dy, x, dw, 1, &t);
    if (g->groups > 1) return dw_backward_weight(g, x, dy, dw, &t);
    return dense_backward_weight(dev, g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow,
                                 g->k, g->s, g->p, x, dy, dw, 0, &t);
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

/* ---- scratch accounting (the memory plan) ----------------------------------------------- */

static size_t pool_bytes(size_t floats) { return (floats * sizeof(float) + 255) & ~(size_t)255; }

/* The zeros a dense_forward of ci -> cop channels (vectors as vec_width) allocates. */
static size_t fwd_zeros_bytes(int ci, int cop, int w, int ow, int kd, int kh, int kw, int s,
                              int pw, const kd_conv_tune *t) {
    int pb, mb, v = vec_width(cop, t->vmax);
    /* the pointwise kernel reads no zeros (with 1x1x1 taps the padding of every axis is
     * the W axis's pw: p, or k - 1 - p for the input gradient) */
    const int k[3] = {kd, kh, kw}, pad[3] = {pw, pw, pw};
    if (pointwise_ok(t, k, s, pad)) return 0;
    fwd_block(t, cop / v, &pb, &mb);
    if (t->rows == 2 && s == 1 && mb == 1 && v >= 8 && kh > 1) pb = 8; /* kd_conv3d_fwd2_* */
    return fwd_needs_zeros(w, ow, kw, s, pw, pb) ? pool_bytes((size_t)ci) : 0;
}

/* Device bytes the direct implementation takes from the pool inside one pass, at most at
 * once; mirrors the allocations above (padded weights and bias, transposed weights,
 * zero-padded dy, weight-gradient partials). */
size_t kd_conv_direct_scratch_bytes(const kd_conv_geom *g, kd_conv_pass pass,
                                    const kd_conv_tune *t) {
    int K3 = g->k[0] * g->k[1] * g->k[2];
    size_t b = 0;
    if (g->groups > 1) { /* depthwise: partials of the weight gradient only */
        if (pass != KD_PASS_BWD_WEIGHT) return 0;
        size_t m = (size_t)K3 * g->ci;
        int planes, nchunks;
        plan_chunks(g->n * g->od, m,
                    xdy_bytes(g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow), t,
                    &planes, &nchunks);
        return pool_bytes(m * (size_t)nchunks);
    }
    if (pass == KD_PASS_FWD) {
        if (g->transposed) return 0; /* the transposed forward runs dense_backward_data */
        const int pad[3] = {g->p, g->p, g->p};
        if (pointwise_few_ok(t, g->k, g->s, pad, g->ci, g->co)) return 0; /* no scratch */
        int cop = g->co % 8 == 0 || t->vmax < 8 ? g->co : (g->co + 7) / 8 * 8;
        if (cop != g->co) b = pool_bytes((size_t)K3 * g->ci * cop) + (g->has_bias ? pool_bytes(cop) : 0);
        return b + fwd_zeros_bytes(g->ci, cop, g->w, g->ow, g->k[0], g->k[1], g->k[2], g->s, g->p, t);
    }
    if (pass == KD_PASS_BWD_DATA) {
        b = pool_bytes((size_t)K3 * g->ci * g->co); /* transposed weights */
        if (g->transposed) { /* a k2 s2 forward of dy, no padding */
            int cop = g->ci % 8 == 0 || t->vmax < 8 ? g->ci : (g->ci + 7) / 8 * 8;
            if (cop != g->ci) b += pool_bytes((size_t)K3 * g->co * cop);
            return b + fwd_zeros_bytes(g->co, cop, g->ow, g->w, 2, 2, 2, 2, 0, t);
        }
        if (g->s == 1) { /* a forward of dy with flipped weights, padding K-1-P */
            int cop = g->ci % 8 == 0 || t->vmax < 8 ? g->ci : (g->ci + 7) / 8 * 8;
            if (cop != g->ci) b += pool_bytes((size_t)K3 * g->co * cop);
            return b + fwd_zeros_bytes(g->co, cop, g->ow, g->w, g->k[0], g->k[1], g->k[2], 1,
                                       g->k[2] - 1 - g->p, t);
        }
        return b;
    }
    size_t m;
    int planes, nchunks;
    if (g->transposed) { /* partials (k, co, ci) of the k2 s2 conv of dy by x */
        m = (size_t)8 * g->co * g->ci;
        plan_chunks(g->n * g->d, m,
                    xdy_bytes(g->n, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h, g->w), t,
                    &planes, &nchunks);
        return pool_bytes(m * (size_t)nchunks);
    }
    int cop = g->co % 8 == 0 || t->vmax < 8 ? g->co : (g->co + 7) / 8 * 8;
    m = (size_t)K3 * g->ci * cop;
    plan_chunks(g->n * g->od, m,
                xdy_bytes(g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow), t, &planes,
                &nchunks);
    if (nchunks > 1 || cop != g->co) b = pool_bytes(m * (size_t)nchunks);
    if (cop != g->co) b += pool_bytes((size_t)g->n * g->od * g->oh * g->ow * cop);
    return b;
}
