/* Convolution tests: the C reference backward against central finite differences in
 * double precision; both OpenCL implementations (direct, GEMM) against the C reference for
 * forward, input gradient, weight and bias gradients on the model's shapes and awkward ones;
 * accumulate semantics, determinism, the chooser's on-disk cache, and bad input.
 *
 * Tolerance for device-vs-reference: max |got - ref| <= 1e-4 * max |ref| (float sums of
 * at most a few thousand products; a wrong index or a missed tap gives errors of order 1). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"
#include "ops/conv_internal.h"
#include "ops/conv_tune.h"
#include "ops/ref/ref.h"

#define TOL 1e-4

typedef struct cfg {
    int n, ci, d, h, w, co, k[3], s, p, groups, bias;
    int transposed;
} cfg;

/* ---- device tensors as views at an odd element offset of a larger slab ---------------------
 * (catches kernels that ignore the element offset or assume aligned vectors) */
typedef struct dt {
    kd_tensor *slab, *t;
} dt;

static kd_status dt_make(kd_device *dev, kd_shape s, const float *host, dt *out) {
    size_t n = kd_shape_numel(s);
    out->slab = out->t = NULL;
    kd_status st = kd_tensor_create(dev, kd_shape5(1, 1, 1, 1, (int)n + 11), &out->slab);
    if (!st) st = kd_tensor_fill(out->slab, 1e30f); /* poison around the view */
    if (!st) st = kd_tensor_view(out->slab, 7, s, &out->t);
    if (!st && host) st = kd_tensor_upload_ndhwc(out->t, host);
    return st;
}

static void dt_free(dt *d) {
    kd_tensor_free(d->t);
    kd_tensor_free(d->slab);
}

static float *randv(size_t n, unsigned seed) {
    float *v = malloc(n * sizeof *v);
    if (v) kd_test_randu(v, n, seed, -1.0f, 1.0f);
    return v;
}

static kd_shape out_shape(const cfg *c) {
    if (c->transposed) return kd_shape5(c->n, c->co, 2 * c->d, 2 * c->h, 2 * c->w);
    return kd_shape5(c->n, c->co, kd_conv_out_size(c->d, c->k[0], c->s, c->p),
                     kd_conv_out_size(c->h, c->k[1], c->s, c->p),
                     kd_conv_out_size(c->w, c->k[2], c->s, c->p));
}

static size_t wcount(const cfg *c) {
    if (c->transposed) return 8 * (size_t)c->ci * c->co;
    return (size_t)c->k[0] * c->k[1] * c->k[2] * (c->ci / c->groups) * c->co;
}

static kd_conv_params params(const cfg *c) {
    kd_conv_params p = {{c->k[0], c->k[1], c->k[2]}, c->s, c->p, c->groups};
    return p;
}

/* Host reference of the three passes. dw, db are accumulated onto their initial values. */
static void ref_all(const cfg *c, const float *x, const float *w, const float *b,
                    const float *dy, float *y, float *dx, float *dw, float *db) {
    kd_shape xs = kd_shape5(c->n, c->ci, c->d, c->h, c->w);
    if (c->transposed) {
        kd_ref_convT3d_forward(xs, c->co, x, w, c->bias ? b : NULL, y);
        kd_ref_convT3d_backward_input(xs, c->co, dy, w, dx);
        kd_ref_convT3d_backward_weight(xs, c->co, x, dy, dw, c->bias ? db : NULL);
    } else {
        kd_conv_params p = params(c);
        kd_ref_conv3d_forward(&p, xs, c->co, x, w, c->bias ? b : NULL, y);
        kd_ref_conv3d_backward_input(&p, xs, c->co, dy, w, dx);
        kd_ref_conv3d_backward_weight(&p, xs, c->co, x, dy, dw, c->bias ? db : NULL);
    }
}

static kd_status dev_fwd(const cfg *c, dt *x, dt *w, dt *b, dt *y) {
    kd_conv_params p = params(c);
    if (c->transposed) return kd_convT3d_forward(x->t, w->t, c->bias ? b->t : NULL, y->t);
    return kd_conv3d_forward(&p, x->t, w->t, c->bias ? b->t : NULL, y->t);
}
static kd_status dev_data(const cfg *c, dt *dy, dt *w, dt *dx) {
    kd_conv_params p = params(c);
    if (c->transposed) return kd_convT3d_backward_input(dy->t, w->t, dx->t);
    return kd_conv3d_backward_input(&p, dy->t, w->t, dx->t);
}
static kd_status dev_weight(const cfg *c, dt *x, dt *dy, dt *dw, dt *db) {
    kd_conv_params p = params(c);
    if (c->transposed) return kd_convT3d_backward_weight(x->t, dy->t, dw->t, c->bias ? db->t : NULL);
    return kd_conv3d_backward_weight(&p, x->t, dy->t, dw->t, c->bias ? db->t : NULL);
}

static int compare(const char *what, const float *got, const float *ref, size_t n) {
    double e = kd_test_rel_err(got, ref, n, 1e-6);
    KD_CHECK(e <= TOL, "%s: relative error %.3g > %.1g (max |ref| %.3g)", what, e, TOL,
             kd_test_max_abs(ref, n));
    return 0;
}

/* Runs forward, input gradient and weight/bias gradients on the device with `impl`
 * forced and compares each with the C reference. */
/* KDSEG_TEST_SMALL=1 (set by the Oclgrind stage, tools/check_kernels.py): the same case
 * on a smaller problem, so it runs in seconds under the simulator. What the case is about
 * stays: batch, kernel size, stride, padding, transposition, bias, depthwise groups, the
 * parity of each size (odd sizes catch floor/ceil errors) and three different sizes
 * (catch swapped axes). Sizes above 3, 4, 5 (D, H, W) become that size or one more, with
 * the same parity; channels are capped at 32 for the direct kernels (two float16 blocks;
 * Cin 4, 5, 12 and Cout 3 stay as they are) and at 8 for GEMM, whose time under Oclgrind
 * goes to simulating CLBlast's GEMM (our im2col/col2im/bias kernels index channels the
 * same way at any count). The normal suite keeps the full shapes. */
static int test_small(void) {
    const char *e = getenv("KDSEG_TEST_SMALL");
    return e && *e && strcmp(e, "0");
}

static int shrink_to(int v, int base) { return v <= base ? v : base + ((v - base) & 1); }

static cfg maybe_small(const cfg *c, kd_conv_impl impl) {
    cfg s = *c;
    if (!test_small()) return s;
    int dw = c->groups > 1 && c->groups == c->ci;
    int cap = impl == KD_CONV_GEMM ? 8 : 32;
    s.d = shrink_to(c->d, 3), s.h = shrink_to(c->h, 4), s.w = shrink_to(c->w, 5);
    s.ci = c->ci < cap ? c->ci : cap;
    s.co = c->co < cap ? c->co : cap;
    if (dw) s.groups = s.co = s.ci;
    return s;
}

static int run_cfg_on(const cfg *c, kd_conv_impl impl);

static int run_cfg(const cfg *c0, kd_conv_impl impl) {
    cfg small = maybe_small(c0, impl);
    return run_cfg_on(&small, impl);
}

/* The same without KDSEG_TEST_SMALL's shrinking (shapes already small). */
static int run_cfg_as_is(const cfg *c, kd_conv_impl impl) { return run_cfg_on(c, impl); }

static int run_cfg_on(const cfg *c, kd_conv_impl impl) {
    KD_DEVICE_OR_FAIL(dev);
    kd_conv_force(impl);
    kd_shape xs = kd_shape5(c->n, c->ci, c->d, c->h, c->w), ys = out_shape(c);
    size_t nx = kd_shape_numel(xs), ny = kd_shape_numel(ys), nw = wcount(c);
    float *x = randv(nx, 1), *w = randv(nw, 2), *b = randv((size_t)c->co, 3);
    float *dy = randv(ny, 4), *dw0 = randv(nw, 5), *db0 = randv((size_t)c->co, 6);
    float *ry = malloc(ny * 4), *rdx = malloc(nx * 4), *rdw = malloc(nw * 4),
          *rdb = malloc((size_t)c->co * 4);
    float *gy = malloc(ny * 4), *gdx = malloc(nx * 4), *gdw = malloc(nw * 4),
          *gdb = malloc((size_t)c->co * 4);
    KD_CHECK(x && w && b && dy && dw0 && db0 && ry && rdx && rdw && rdb && gy && gdx && gdw && gdb,
             "host memory");
    memcpy(rdw, dw0, nw * 4);
    memcpy(rdb, db0, (size_t)c->co * 4);
    ref_all(c, x, w, b, dy, ry, rdx, rdw, rdb);

    kd_shape ws = kd_shape5(1, 1, 1, 1, (int)nw), bs = kd_shape5(1, c->co, 1, 1, 1);
    dt X, W, B, Y, DY, DX, DW, DB;
    KD_CHECK_OK(dt_make(dev, xs, x, &X));
    KD_CHECK_OK(dt_make(dev, ws, w, &W));
    KD_CHECK_OK(dt_make(dev, bs, b, &B));
    KD_CHECK_OK(dt_make(dev, ys, NULL, &Y));
    KD_CHECK_OK(dt_make(dev, ys, dy, &DY));
    KD_CHECK_OK(dt_make(dev, xs, NULL, &DX));
    KD_CHECK_OK(dt_make(dev, ws, dw0, &DW));
    KD_CHECK_OK(dt_make(dev, bs, db0, &DB));

    KD_CHECK_OK(dev_fwd(c, &X, &W, &B, &Y));
    KD_CHECK_OK(kd_tensor_download_ndhwc(Y.t, gy));
    if (compare("forward y", gy, ry, ny)) return 1;
    KD_CHECK_OK(dev_data(c, &DY, &W, &DX));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DX.t, gdx));
    if (compare("input gradient dx", gdx, rdx, nx)) return 1;
    KD_CHECK_OK(dev_weight(c, &X, &DY, &DW, &DB));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DW.t, gdw));
    if (compare("weight gradient dw (accumulated onto random dw0)", gdw, rdw, nw)) return 1;
    if (c->bias) {
        KD_CHECK_OK(kd_tensor_download_ndhwc(DB.t, gdb));
        if (compare("bias gradient db (accumulated onto random db0)", gdb, rdb, (size_t)c->co))
            return 1;
    }
    /* the poison around the output views must be untouched (catches writes past a view) */
    float guard[7];
    KD_CHECK_OK(kd_rt_read(dev, Y.slab->mem, 0, sizeof guard, guard));
    for (int i = 0; i < 7; i++) KD_CHECK(guard[i] == 1e30f, "y slab overwritten before the view");
    KD_CHECK_OK(kd_rt_read(dev, Y.slab->mem, (7 + ny) * 4, sizeof(float) * 4, guard));
    for (int i = 0; i < 4; i++) KD_CHECK(guard[i] == 1e30f, "y slab overwritten after the view");
    KD_CHECK_OK(kd_rt_read(dev, DX.slab->mem, (7 + nx) * 4, sizeof(float) * 4, guard));
    for (int i = 0; i < 4; i++) KD_CHECK(guard[i] == 1e30f, "dx slab overwritten after the view");

    dt *all[] = {&X, &W, &B, &Y, &DY, &DX, &DW, &DB};
    for (int i = 0; i < 8; i++) dt_free(all[i]);
    free(x), free(w), free(b), free(dy), free(dw0), free(db0);
    free(ry), free(rdx), free(rdw), free(rdb), free(gy), free(gdx), free(gdw), free(gdb);
    kd_conv_force(KD_CONV_AUTO);
    return 0;
}

/* Each configuration runs once with each implementation forced. The comments say which
 * model layer or awkward case each stands for. */
#define CONV_CASE(name, ...)                                                               \
    static int name##_direct(void) { return run_cfg(&(cfg){__VA_ARGS__}, KD_CONV_DIRECT); } \
    static int name##_gemm(void) { return run_cfg(&(cfg){__VA_ARGS__}, KD_CONV_GEMM); }

/*        n ci  d  h  w   co  k        s  p  g  bias T */
/* the student's input conv 4 -> 16 (Cin 4 not a vector multiple), odd sizes */
CONV_CASE(in4_16_k3, 1, 4, 7, 9, 11, 16, {3, 3, 3}, 1, 1, 1, 1, 0)
/* 3x3x3 16 -> 16, batch 2 (catches batch indexing), odd sizes */
CONV_CASE(c16_k3_n2, 2, 16, 5, 6, 7, 16, {3, 3, 3}, 1, 1, 1, 1, 0)
/* 3x3x3 32 -> 32 without bias (float16 path, 2 vector blocks) */
CONV_CASE(c32_k3, 1, 32, 5, 6, 7, 32, {3, 3, 3}, 1, 1, 1, 0, 0)
/* 3x3x3 128 -> 128 at the bottom level */
CONV_CASE(c128_k3, 1, 128, 3, 4, 5, 128, {3, 3, 3}, 1, 1, 1, 1, 0)
/* float8 path */
CONV_CASE(c8_k3, 1, 8, 5, 6, 7, 8, {3, 3, 3}, 1, 1, 1, 1, 0)
/* 2x2x2 stride-2 down convs 16 -> 32 (even) and on odd sizes (floor) */
CONV_CASE(down16_32, 1, 16, 6, 8, 10, 32, {2, 2, 2}, 2, 0, 1, 1, 0)
CONV_CASE(down_odd, 2, 16, 7, 9, 11, 32, {2, 2, 2}, 2, 0, 1, 0, 0)
/* 1x1x1 decoder convs 2C -> C and C_{i+1} -> C_i */
CONV_CASE(pw32_16, 1, 32, 7, 9, 11, 16, {1, 1, 1}, 1, 0, 1, 1, 0)
CONV_CASE(pw128_64, 2, 128, 3, 4, 5, 64, {1, 1, 1}, 1, 0, 1, 1, 0)
/* the output conv 16 -> 3 regions (Cout 3), as 1x1x1 and as 3x3x3 */
CONV_CASE(out16_3_pw, 1, 16, 7, 9, 11, 3, {1, 1, 1}, 1, 0, 1, 1, 0)
CONV_CASE(out16_3_k3, 1, 16, 5, 6, 7, 3, {3, 3, 3}, 1, 1, 1, 1, 0)
/* the few-output-channel kernels (vectors over Cin, 3 or 4 outputs; direct only): 16 -> 4
 * batch 2 with its input gradient a 4-output forward; 8 -> 3 stride 2 (float8); 24 -> 3
 * (three float8 blocks of Cin); 3 -> 8, whose input gradient is a 3-output forward of dy;
 * 1x1 16 -> 4 and 8 -> 3; 8 -> 4 (float8, 4 outputs) */
#define CONV_CASE_D(name, ...)                                                             \
    static int name##_direct(void) { return run_cfg(&(cfg){__VA_ARGS__}, KD_CONV_DIRECT); }
CONV_CASE_D(out16_4_k3_n2, 2, 16, 5, 6, 7, 4, {3, 3, 3}, 1, 1, 1, 1, 0)
CONV_CASE_D(out8_3_s2, 1, 8, 7, 9, 11, 3, {3, 3, 3}, 2, 1, 1, 1, 0)
CONV_CASE_D(out24_3_k3, 1, 24, 4, 5, 9, 3, {3, 3, 3}, 1, 1, 1, 0, 0)
CONV_CASE_D(in3_8_k3, 2, 3, 5, 7, 6, 8, {3, 3, 3}, 1, 1, 1, 1, 0)
CONV_CASE_D(pw16_4_n2, 2, 16, 3, 5, 7, 4, {1, 1, 1}, 1, 0, 1, 1, 0)
CONV_CASE_D(pw8_3, 1, 8, 3, 4, 9, 3, {1, 1, 1}, 1, 0, 1, 1, 0)
CONV_CASE_D(out8_4_k3, 1, 8, 4, 5, 6, 4, {3, 3, 3}, 1, 1, 1, 1, 0)
CONV_CASE_D(pw8_4, 2, 8, 3, 3, 5, 4, {1, 1, 1}, 1, 0, 1, 0, 0)
/* 5 outputs on the few-output forward (vectors over Cin): the cascade teacher's input conv
 * 5 -> 16, batch 2, odd sizes, whose input gradient is a 16 -> 5 forward of dy (float16);
 * 8 -> 5 stride 2 pad 1 (float8, positions past Wo in the last block of 4). The trace
 * must show kd_conv3d_fwd_small_v16_o5 and _v8_o5 (small5 below). */
CONV_CASE_D(in5_16_k3_n2, 2, 5, 5, 7, 6, 16, {3, 3, 3}, 1, 1, 1, 1, 0)
CONV_CASE_D(out8_5_s2, 1, 8, 7, 9, 11, 5, {3, 3, 3}, 2, 1, 1, 1, 0)
/* awkward: channels 5 -> 12, stride 2 pad 1, odd sizes, batch 2 */
CONV_CASE(c5_12_s2, 2, 5, 7, 9, 11, 12, {3, 3, 3}, 2, 1, 1, 1, 0)
/* awkward: 12 -> 5, pad 0 (valid conv) */
CONV_CASE(c12_5_p0, 1, 12, 5, 6, 7, 5, {3, 3, 3}, 1, 0, 1, 1, 0)
/* awkward: 3 -> 3, stride 2 pad 1, batch 2 */
CONV_CASE(c3_s2, 2, 3, 5, 6, 7, 3, {3, 3, 3}, 2, 1, 1, 0, 0)
/* mixed kernel sizes per axis (catches swapped kD/kH/kW) with pad 1 */
CONV_CASE(k312, 1, 8, 5, 6, 7, 16, {3, 1, 2}, 1, 1, 1, 1, 0)
/* 2x2x2 stride 1 with pad 1 and stride 2 with pad 1 */
CONV_CASE(k2_s1_p1, 1, 16, 4, 5, 6, 8, {2, 2, 2}, 1, 1, 1, 0, 0)
CONV_CASE(k2_s2_p1, 1, 4, 5, 6, 7, 16, {2, 2, 2}, 2, 1, 1, 1, 0)
/* depthwise (groups = C) with 16, 8 and 5 channels, stride 1 and 2 (GEMM falls back) */
CONV_CASE(dw16, 1, 16, 5, 6, 7, 16, {3, 3, 3}, 1, 1, 16, 1, 0)
CONV_CASE(dw8_s2, 2, 8, 7, 9, 11, 8, {3, 3, 3}, 2, 1, 8, 0, 0)
CONV_CASE(dw5, 1, 5, 5, 6, 7, 5, {3, 3, 3}, 1, 1, 5, 1, 0)
/* transposed 2x2x2 stride 2: 32 -> 16 (float16), 5 -> 3 (scalar), batch 2 odd sizes */
CONV_CASE(convT32_16, 1, 32, 3, 4, 5, 16, {2, 2, 2}, 2, 0, 1, 1, 1)
CONV_CASE(convT5_3, 2, 5, 3, 4, 5, 3, {2, 2, 2}, 2, 0, 1, 1, 1)
CONV_CASE(convT16_8, 2, 16, 3, 5, 4, 8, {2, 2, 2}, 2, 0, 1, 0, 1)

/* ---- finite differences on the reference ---------------------------------------------------- */

/* Double-precision forward (a copy of the reference's definition) for finite differences. */
static void fwd_f64(const cfg *c, const double *x, const double *w, const double *b, double *y) {
    kd_shape ys = out_shape(c);
    memset(y, 0, kd_shape_numel(ys) * sizeof *y);
    int cig = c->ci / c->groups, cog = c->co / c->groups;
    for (int n = 0; n < c->n; n++)
        for (int zi = 0; zi < c->d; zi++)
            for (int yi = 0; yi < c->h; yi++)
                for (int xi = 0; xi < c->w; xi++)
                    for (int a = 0; a < c->k[0]; a++)
                        for (int bb = 0; bb < c->k[1]; bb++)
                            for (int e = 0; e < c->k[2]; e++) {
                                int oz, oy, ox;
                                if (c->transposed) {
                                    oz = 2 * zi + a, oy = 2 * yi + bb, ox = 2 * xi + e;
                                } else {
                                    int tz = zi + c->p - a, ty = yi + c->p - bb, tx = xi + c->p - e;
                                    if (tz < 0 || ty < 0 || tx < 0 || tz % c->s || ty % c->s ||
                                        tx % c->s)
                                        continue;
                                    oz = tz / c->s, oy = ty / c->s, ox = tx / c->s;
                                    if (oz >= ys.d || oy >= ys.h || ox >= ys.w) continue;
                                }
                                size_t yo = ((((size_t)n * ys.d + oz) * ys.h + oy) * ys.w + ox) * c->co;
                                size_t xo = ((((size_t)n * c->d + zi) * c->h + yi) * c->w + xi) * c->ci;
                                size_t wo = (size_t)((a * c->k[1] + bb) * c->k[2] + e) * cig * c->co;
                                for (int co = 0; co < c->co; co++) {
                                    int g = co / cog;
                                    for (int ci = 0; ci < cig; ci++)
                                        y[yo + co] += x[xo + g * cig + ci] * w[wo + (size_t)ci * c->co + co];
                                }
                            }
    if (b)
        for (size_t v = 0; v < kd_shape_numel(ys) / c->co; v++)
            for (int co = 0; co < c->co; co++) y[v * c->co + co] += b[co];
}

/* L = sum(y * g); its gradients are the references' backward with dy = g. */
static double loss(const cfg *c, const double *x, const double *w, const double *b,
                   const double *g, double *ybuf) {
    fwd_f64(c, x, w, b, ybuf);
    double s = 0.0;
    for (size_t i = 0; i < kd_shape_numel(out_shape(c)); i++) s += ybuf[i] * g[i];
    return s;
}

static double *to_f64(const float *v, size_t n) {
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; d && i < n; i++) d[i] = v[i];
    return d;
}

/* Central differences with step 1e-3 on every element of x, w and b (small shapes),
 * against the float references: relative error <= 1e-4 of the largest gradient. */
static int fd_check(const cfg *c) {
    kd_shape xs = kd_shape5(c->n, c->ci, c->d, c->h, c->w);
    size_t nx = kd_shape_numel(xs), ny = kd_shape_numel(out_shape(c)), nw = wcount(c);
    size_t nb = (size_t)c->co;
    float *x = randv(nx, 11), *w = randv(nw, 12), *b = randv(nb, 13), *g = randv(ny, 14);
    float *y = malloc(ny * 4), *dx = malloc(nx * 4), *dw = calloc(nw, 4), *db = calloc(nb, 4);
    double *X = to_f64(x, nx), *Wd = to_f64(w, nw), *B = to_f64(b, nb), *G = to_f64(g, ny);
    double *yb = malloc(ny * sizeof(double));
    float *fx = malloc(nx * 4), *fw = malloc(nw * 4), *fb = malloc(nb * 4);
    KD_CHECK(x && w && b && g && y && dx && dw && db && X && Wd && B && G && yb && fx && fw && fb,
             "host memory");
    ref_all(c, x, w, b, g, y, dx, dw, db);
    const double h = 1e-3;
    struct {
        double *v;
        size_t n;
        float *out;
        const float *ref;
        const char *name;
    } parts[] = {{X, nx, fx, dx, "dx"}, {Wd, nw, fw, dw, "dw"}, {B, nb, fb, db, "db"}};
    for (int pi = 0; pi < 3; pi++) {
        for (size_t i = 0; i < parts[pi].n; i++) {
            double keep = parts[pi].v[i];
            parts[pi].v[i] = keep + h;
            double lp = loss(c, X, Wd, B, G, yb);
            parts[pi].v[i] = keep - h;
            double lm = loss(c, X, Wd, B, G, yb);
            parts[pi].v[i] = keep;
            parts[pi].out[i] = (float)((lp - lm) / (2 * h));
        }
        double e = kd_test_rel_err(parts[pi].ref, parts[pi].out, parts[pi].n, 1e-6);
        KD_CHECK(e <= TOL, "reference %s against finite differences: relative error %.3g",
                 parts[pi].name, e);
    }
    free(x), free(w), free(b), free(g), free(y), free(dx), free(dw), free(db);
    free(X), free(Wd), free(B), free(G), free(yb), free(fx), free(fw), free(fb);
    return 0;
}

/* Catches a wrong reference backward (the spec everything else is tested against):
 * stride 1 pad 1 with mixed kernel sizes, stride 2 pad 1 on odd sizes with batch 2,
 * a valid 2x2x2 stride-2 conv, depthwise, and the transposed conv. */
static int fd_conv_s1(void) { return fd_check(&(cfg){1, 3, 3, 4, 5, 2, {3, 2, 3}, 1, 1, 1, 1, 0}); }
static int fd_conv_s2(void) { return fd_check(&(cfg){2, 2, 5, 4, 3, 3, {3, 3, 3}, 2, 1, 1, 1, 0}); }
static int fd_conv_k2s2(void) { return fd_check(&(cfg){1, 3, 4, 4, 5, 2, {2, 2, 2}, 2, 0, 1, 1, 0}); }
static int fd_dwconv(void) { return fd_check(&(cfg){1, 3, 3, 4, 5, 3, {3, 3, 3}, 1, 1, 3, 1, 0}); }
static int fd_convT(void) { return fd_check(&(cfg){2, 3, 2, 3, 2, 2, {2, 2, 2}, 2, 0, 1, 1, 1}); }

/* ---- semantics -------------------------------------------------------------------------------- */

/* dw and db are accumulated: two calls on zeroed gradients give exactly twice one call
 * (catches a kernel that overwrites instead of adding). Also: forward and the input gradient
 * twice give identical bits, and so do the accumulated gradients of two identical runs
 * (catches nondeterministic reductions). Both implementations. */
static int semantics(kd_conv_impl impl) {
    KD_DEVICE_OR_FAIL(dev);
    kd_conv_force(impl);
    /* under KDSEG_TEST_SMALL a smaller grid and 8 channels (ten conv calls, the GEMM ones
     * slow under Oclgrind); what is checked does not depend on the size */
    cfg c = test_small() ? (cfg){2, 8, 3, 4, 5, 8, {3, 3, 3}, 1, 1, 1, 1, 0}
                         : (cfg){2, 16, 6, 7, 9, 32, {3, 3, 3}, 1, 1, 1, 1, 0};
    kd_conv_params p = params(&c);
    kd_shape xs = kd_shape5(c.n, c.ci, c.d, c.h, c.w), ys = out_shape(&c);
    size_t nx = kd_shape_numel(xs), ny = kd_shape_numel(ys), nw = wcount(&c);
    float *x = randv(nx, 21), *w = randv(nw, 22), *dy = randv(ny, 23);
    float *a = malloc(ny * 4), *bb = malloc(ny * 4), *dw1 = malloc(nw * 4), *dw2 = malloc(nw * 4);
    float *db1 = malloc((size_t)c.co * 4), *db2 = malloc((size_t)c.co * 4), *dxa = malloc(nx * 4), *dxb = malloc(nx * 4);
    KD_CHECK(x && w && dy && a && bb && dw1 && dw2 && db1 && db2 && dxa && dxb, "host memory");
    kd_tensor *X, *W, *Y, *DY, *DX, *DW, *DB, *DW2, *DB2;
    KD_CHECK_OK(kd_tensor_create(dev, xs, &X));
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, 1, 1, 1, (int)nw), &W));
    KD_CHECK_OK(kd_tensor_create(dev, ys, &Y));
    KD_CHECK_OK(kd_tensor_create(dev, ys, &DY));
    KD_CHECK_OK(kd_tensor_create(dev, xs, &DX));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 1, 1, 1, (int)nw), &DW));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, c.co, 1, 1, 1), &DB));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 1, 1, 1, (int)nw), &DW2));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, c.co, 1, 1, 1), &DB2));
    KD_CHECK_OK(kd_tensor_upload_ndhwc(X, x));
    KD_CHECK_OK(kd_tensor_upload_ndhwc(W, w));
    KD_CHECK_OK(kd_tensor_upload_ndhwc(DY, dy));

    KD_CHECK_OK(kd_conv3d_forward(&p, X, W, NULL, Y));
    KD_CHECK_OK(kd_tensor_download_ndhwc(Y, a));
    KD_CHECK_OK(kd_tensor_fill(Y, 123.0f));
    KD_CHECK_OK(kd_conv3d_forward(&p, X, W, NULL, Y));
    KD_CHECK_OK(kd_tensor_download_ndhwc(Y, bb));
    KD_CHECK(!memcmp(a, bb, ny * 4), "forward twice differs (or does not overwrite y)");
    KD_CHECK_OK(kd_conv3d_backward_input(&p, DY, W, DX));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DX, dxa));
    KD_CHECK_OK(kd_tensor_fill(DX, -5.0f));
    KD_CHECK_OK(kd_conv3d_backward_input(&p, DY, W, DX));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DX, dxb));
    KD_CHECK(!memcmp(dxa, dxb, nx * 4), "input gradient twice differs (or does not overwrite dx)");

    KD_CHECK_OK(kd_conv3d_backward_weight(&p, X, DY, DW, DB));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DW, dw1));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DB, db1));
    KD_CHECK_OK(kd_conv3d_backward_weight(&p, X, DY, DW, DB));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DW, dw2));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DB, db2));
    /* direct: one sum added per call, so exactly twice; GEMM: CLBlast adds chunk by chunk
     * onto the running value, so twice up to rounding (1e-5 of the largest entry) */
    double scale = kd_test_max_abs(dw1, nw);
    for (size_t i = 0; i < nw; i++) {
        double err = fabs((double)dw2[i] - 2.0 * dw1[i]);
        KD_CHECK(impl == KD_CONV_GEMM ? err <= 1e-5 * scale : err == 0.0,
                 "dw[%zu] after two calls %g, one call %g", i, dw2[i], dw1[i]);
    }
    for (int i = 0; i < c.co; i++)
        KD_CHECK(db2[i] == 2.0f * db1[i], "db[%d] after two calls %g, one call %g", i, db2[i], db1[i]);
    /* the same accumulation on a second pair of gradients gives the same bits */
    KD_CHECK_OK(kd_conv3d_backward_weight(&p, X, DY, DW2, DB2));
    KD_CHECK_OK(kd_conv3d_backward_weight(&p, X, DY, DW2, DB2));
    KD_CHECK_OK(kd_tensor_download_ndhwc(DW2, dw1));
    KD_CHECK(!memcmp(dw1, dw2, nw * 4), "weight gradient not deterministic");
    kd_tensor *all[] = {X, W, Y, DY, DX, DW, DB, DW2, DB2};
    for (int i = 0; i < 9; i++) kd_tensor_free(all[i]);
    free(x), free(w), free(dy), free(a), free(bb), free(dw1), free(dw2), free(db1), free(db2);
    free(dxa), free(dxb);
    kd_conv_force(KD_CONV_AUTO);
    return 0;
}
static int semantics_direct(void) { return semantics(KD_CONV_DIRECT); }
static int semantics_gemm(void) { return semantics(KD_CONV_GEMM); }

/* The chooser times both implementations once per (device, shape, pass), writes the choice
 * to conv-choices.txt in the cache folder, and a fresh process-state reads it back instead of
 * timing again (catches a cache that is never written, never read, or keyed wrongly); the
 * results in auto mode still match the reference. */
static int chooser_cache(void) {
    KD_DEVICE_OR_FAIL(dev);
    char path[1200];
    snprintf(path, sizeof path, "%s/conv-choices.txt", kd_cache_dir());
    remove(path);
    kd_conv_choices_reload();
    kd_conv_force(KD_CONV_AUTO);
    setenv("KDSEG_CONV", "auto", 1);
    cfg c = {1, 8, 4, 5, 6, 16, {3, 3, 3}, 1, 1, 1, 1, 0};
    int before = kd_conv_timings_done();
    if (run_cfg(&c, KD_CONV_AUTO)) return 1;
    int timed = kd_conv_timings_done() - before;
    KD_CHECK(timed == 3, "expected 3 timings (fwd, bwd_data, bwd_weight), got %d", timed);
    FILE *f = fopen(path, "r");
    KD_CHECK(f != NULL, "%s not written", path);
    char line[512];
    int lines = 0, named = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        named += strstr(line, kd_device_name(dev)) != NULL;
    }
    fclose(f);
    KD_CHECK(lines == 3 && named == 3, "%d lines, %d naming the device", lines, named);
    kd_conv_geom g = {1, 8, 4, 5, 6, 16, 4, 5, 6, {3, 3, 3}, 1, 1, 1, 0, 1};
    char key[160];
    kd_conv_key(&g, KD_PASS_FWD, key, sizeof key);
    kd_conv_choices_reload();
    KD_CHECK(kd_conv_choice_lookup(dev, key, NULL, NULL) != KD_CONV_AUTO, "key %s not found", key);
    before = kd_conv_timings_done();
    if (run_cfg(&c, KD_CONV_AUTO)) return 1;
    KD_CHECK(kd_conv_timings_done() == before, "timed again although the choices were stored");
    return 0;
}

/* KDSEG_CONV=direct|gemm forces an implementation without timing, kd_conv_force overrides
 * the environment, and KD_CONV_AUTO gives control back (catches an ignored variable or a
 * force that leaks into the chooser's table). */
static int force_env(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_conv_force(KD_CONV_AUTO);
    setenv("KDSEG_CONV", "gemm", 1);
    KD_CHECK(kd_conv_forced() == KD_CONV_GEMM, "KDSEG_CONV=gemm not honoured");
    setenv("KDSEG_CONV", "direct", 1);
    KD_CHECK(kd_conv_forced() == KD_CONV_DIRECT, "KDSEG_CONV=direct not honoured");
    kd_conv_force(KD_CONV_GEMM);
    KD_CHECK(kd_conv_forced() == KD_CONV_GEMM, "kd_conv_force does not override KDSEG_CONV");
    kd_conv_force(KD_CONV_AUTO);
    KD_CHECK(kd_conv_forced() == KD_CONV_DIRECT, "KD_CONV_AUTO does not restore the variable");
    /* forced runs neither time nor store a choice, and still compute the right thing */
    int before = kd_conv_timings_done();
    cfg c = {1, 16, 4, 5, 3, 8, {3, 3, 3}, 2, 1, 1, 1, 0};
    if (run_cfg(&c, KD_CONV_AUTO)) return 1;
    KD_CHECK(kd_conv_timings_done() == before, "timed although KDSEG_CONV forces direct");
    kd_conv_geom g = {1, 16, 4, 5, 3, 8, 2, 3, 2, {3, 3, 3}, 2, 1, 1, 0, 1};
    char key[160];
    kd_conv_key(&g, KD_PASS_FWD, key, sizeof key);
    KD_CHECK(kd_conv_choice_lookup(dev, key, NULL, NULL) == KD_CONV_AUTO,
             "a forced run stored a choice for %s", key);
    unsetenv("KDSEG_CONV");
    return 0;
}

/* Bad input gives a clear error naming the op and shapes, never a crash. */
static int bad_input(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_tensor *x, *w, *y;
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, 4, 5, 5, 5), &x));
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, 1, 1, 1, 27 * 4 * 8), &w));
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, 8, 4, 5, 5), &y));
    kd_conv_params p = {{3, 3, 3}, 1, 1, 1};
    kd_status s = kd_conv3d_forward(&p, x, w, NULL, y);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "conv3d_forward") &&
                 strstr(kd_last_error(), "D=4"),
             "wrong output size: %s", kd_last_error());
    kd_conv_params p4 = {{4, 3, 3}, 1, 1, 1};
    s = kd_conv3d_forward(&p4, x, w, NULL, y);
    KD_CHECK(s == KD_ERR_INVALID_ARG && strstr(kd_last_error(), "kernel size"), "k=4: %s",
             kd_last_error());
    kd_conv_params pg = {{3, 3, 3}, 1, 1, 2};
    s = kd_conv3d_forward(&pg, x, w, NULL, y);
    KD_CHECK(s == KD_ERR_UNSUPPORTED && strstr(kd_last_error(), "groups"), "groups 2: %s",
             kd_last_error());
    kd_tensor *y2;
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, 9, 5, 5, 5), &y2));
    s = kd_conv3d_forward(&p, x, w, NULL, y2);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "weight has"), "weight count: %s",
             kd_last_error());
    s = kd_convT3d_forward(x, w, NULL, y2);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "convT3d_forward"), "convT: %s",
             kd_last_error());
    kd_tensor_free(x), kd_tensor_free(w), kd_tensor_free(y), kd_tensor_free(y2);
    return 0;
}

/* Every register block of the direct kernels against the C reference (the other cases run
 * the tuning table's choice only): forward blocks P x M (wb, cb), weight-gradient blocks
 * CI x M (wci, wcb), at each vector width, with one chunk (the kernel adds into dw) and
 * with several (partials, reduction), two output rows per work-item (rows 2: the input
 * gradient, a forward of dy with one float16 or two float8 vectors of outputs), and the
 * weight gradient's three taps along W in one work-item (wt3 runs only with one vector per
 * block: wcb 1 on float16, and 64 outputs on float8 are 8 blocks of one vector).
 * 16 -> 64 channels: 4 float16 vectors of Cout for the forward and weight gradient, 1 for
 * the input gradient; odd sizes (H = 4 and 5: both parities of the row pairs), batch 2;
 * the same shapes under KDSEG_TEST_SMALL (no shrinking). */
static int variants(int vmax) {
    static const struct {
        int vmax, wb, cb, wci, wcb, chunks, wkb, rows, wt3;
    } sets[] = {
        {16, 4, 1, 4, 1, 64, 0, 1, 0}, {16, 4, 4, 4, 4, 7, 0, 1, 0}, {16, 8, 1, 8, 1, 64, 1, 1, 0},
        {16, 8, 2, 8, 2, 1, 4, 1, 0},  {16, 8, 2, 8, 1, 3, 0, 2, 1}, {8, 4, 1, 4, 1, 1, 0, 1, 0},
        {8, 4, 4, 4, 4, 7, 0, 1, 0},   {8, 8, 1, 8, 1, 64, 1, 1, 0}, {8, 8, 2, 8, 2, 3, 0, 1, 0},
        {8, 4, 1, 4, 1, 64, 0, 2, 1},  {1, 4, 1, 4, 1, 64, 0, 1, 0}, {1, 4, 4, 4, 4, 1, 0, 1, 0},
        {1, 8, 1, 8, 1, 64, 1, 1, 0},  {1, 8, 2, 8, 2, 3, 0, 1, 0},
    };
    const cfg cs[2] = {{2, 16, 3, 4, 9, 64, {3, 3, 3}, 1, 1, 1, 1, 0},
                       {1, 16, 2, 5, 11, 64, {3, 3, 3}, 1, 1, 1, 0, 0}};
    for (size_t k = 0; k < 2 * sizeof sets / sizeof sets[0]; k++) {
        const cfg c = cs[k % 2];
        size_t i = k / 2;
        if (sets[i].vmax != vmax) continue;
        kd_conv_tune t = kd_conv_tune_default;
        t.vmax = sets[i].vmax, t.wb = sets[i].wb, t.cb = sets[i].cb, t.wci = sets[i].wci;
        t.wcb = sets[i].wcb, t.chunks = sets[i].chunks, t.wkb = sets[i].wkb;
        t.rows = sets[i].rows, t.wt3 = sets[i].wt3;
        kd_conv_tune_force(&t);
        int rc = run_cfg_as_is(&c, KD_CONV_DIRECT);
        kd_conv_tune_force(NULL);
        char ps[256];
        kd_conv_tune_format(&t, ps, sizeof ps);
        KD_CHECK(rc == 0, "block variant %s", ps);
    }
    return 0;
}
/* The pointwise kernels at each vector width and channel-vector block (1 or 2), with 1, 3
 * and 64 blocks of 8 positions per work-item (64 is cut down to keep 16 work-items), against
 * the C reference; the trace must show the kernel. kd_conv3d_pw_* (forward and input
 * gradient of 1x1x1 stride-1 convs): position counts that are not a multiple of 8 (the last
 * block re-reads its last position and must not store it), 32 -> 16 channels with batch 2
 * and 16 -> 3 (outputs padded to 8). kd_conv3d_s2d_* (input gradient of a 2x2x2 stride-2
 * conv, forward of the transposed one): odd D and W (a last plane and column without a
 * tap hold zeros, or the bias), 32 input channels (two vectors of 16) with batch 2, and a
 * transposed conv 8 -> 16 with bias. */
static int pointwise(void) {
    static const struct {
        int vmax, cb, pw;
    } sets[] = {{16, 1, 1}, {16, 2, 3}, {8, 1, 64}, {8, 2, 1}, {1, 1, 3}, {1, 2, 64}};
    const cfg cs[4] = {{2, 32, 3, 5, 7, 16, {1, 1, 1}, 1, 0, 1, 1, 0},
                       {1, 16, 3, 3, 5, 3, {1, 1, 1}, 1, 0, 1, 1, 0},
                       {2, 32, 5, 4, 7, 8, {2, 2, 2}, 2, 0, 1, 1, 0},
                       {1, 8, 3, 2, 3, 16, {2, 2, 2}, 2, 0, 1, 1, 1}};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        for (int c = 0; c < 4; c++) {
            kd_conv_tune t = kd_conv_tune_default;
            t.vmax = sets[i].vmax, t.cb = sets[i].cb, t.pw = sets[i].pw;
            char ps[256], trace[2048];
            kd_conv_tune_format(&t, ps, sizeof ps);
            kd_conv_tune_force(&t);
            kd_conv_tune_trace_begin();
            int rc = run_cfg_as_is(&cs[c], KD_CONV_DIRECT);
            kd_conv_tune_trace_end(trace, sizeof trace);
            kd_conv_tune_force(NULL);
            KD_CHECK(rc == 0, "pointwise %d -> %d, %s", cs[c].ci, cs[c].co, ps);
            const char *kern = c < 2 ? "kd_conv3d_pw_" : "kd_conv3d_s2d_";
            KD_CHECK(strstr(trace, kern) != NULL, "pointwise %d -> %d, %s: %s did not run (%s)",
                     cs[c].ci, cs[c].co, ps, kern, trace);
        }
    return 0;
}

/* The 5-output few-output forward at both vector widths: the cases above against the C
 * reference, and the trace shows the kernel ran (not the padded dense kernel). */
static int small5(void) {
    static const struct {
        int (*run)(void);
        const char *kern;
    } cs[] = {{in5_16_k3_n2_direct, "kd_conv3d_fwd_small_v16_o5"},
              {out8_5_s2_direct, "kd_conv3d_fwd_small_v8_o5"}};
    for (int i = 0; i < 2; i++) {
        char trace[4096];
        kd_conv_tune_trace_begin();
        int rc = cs[i].run();
        kd_conv_tune_trace_end(trace, sizeof trace);
        KD_CHECK(rc == 0, "%s: wrong results", cs[i].kern);
        KD_CHECK(strstr(trace, cs[i].kern) != NULL, "%s did not run (%s)", cs[i].kern, trace);
    }
    return 0;
}

/* The pointwise few-output kernels (kd_conv3d_pwo_o3, _o4: 16 positions in the lanes, the
 * forward of 1x1 convs to 3 or 4 channels with Cin a multiple of 8) against the C
 * reference, with 1, 3 and 64 blocks of 8 positions per work-item (pw; the kernel takes
 * pw/2 blocks of 16, 64 cut down to keep 16 work-items): 16 -> 3 on 45 positions (a last
 * block of 13), 8 -> 3 batch 2 on 120 (full blocks and one of 8), 24 -> 4 without bias (three
 * blocks of 8 input channels, 42 positions), 8 -> 4 on 32 (full blocks only), 32 -> 4 batch 2
 * on 60 (four blocks of 8 input channels, a last block of 12). The trace must show the
 * kernel. (tests/tune same_results: the same bits as the padded kernels.) */
static int pointwise_few(void) {
    static const int pws[] = {1, 3, 64};
    const cfg cs[5] = {{1, 16, 3, 3, 5, 3, {1, 1, 1}, 1, 0, 1, 1, 0},
                       {2, 8, 3, 4, 5, 3, {1, 1, 1}, 1, 0, 1, 1, 0},
                       {1, 24, 2, 3, 7, 4, {1, 1, 1}, 1, 0, 1, 0, 0},
                       {1, 8, 2, 4, 4, 4, {1, 1, 1}, 1, 0, 1, 1, 0},
                       {2, 32, 2, 3, 5, 4, {1, 1, 1}, 1, 0, 1, 1, 0}};
    for (int i = 0; i < 3; i++)
        for (int c = 0; c < 5; c++) {
            kd_conv_tune t = kd_conv_tune_default;
            t.vmax = 16, t.small = 1, t.pw = pws[i];
            char trace[2048], kern[32];
            kd_conv_tune_force(&t);
            kd_conv_tune_trace_begin();
            int rc = run_cfg_as_is(&cs[c], KD_CONV_DIRECT);
            kd_conv_tune_trace_end(trace, sizeof trace);
            kd_conv_tune_force(NULL);
            KD_CHECK(rc == 0, "pointwise %d -> %d, pw %d", cs[c].ci, cs[c].co, pws[i]);
            snprintf(kern, sizeof kern, "kd_conv3d_pwo_o%d", cs[c].co);
            KD_CHECK(strstr(trace, kern) != NULL, "pointwise %d -> %d, pw %d: %s did not run (%s)",
                     cs[c].ci, cs[c].co, pws[i], kern, trace);
        }
    return 0;
}

/* one test per vector width (each well within a test's time under Oclgrind) */
static int variants_v16(void) { return variants(16); }
static int variants_v8(void) { return variants(8); }
static int variants_v1(void) { return variants(1); }

#define BOTH(name) {#name "_direct", name##_direct}, {#name "_gemm", name##_gemm}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"fd_conv_s1", fd_conv_s1}, {"fd_conv_s2", fd_conv_s2}, {"fd_conv_k2s2", fd_conv_k2s2},
        {"fd_dwconv", fd_dwconv},   {"fd_convT", fd_convT},
        BOTH(in4_16_k3),  BOTH(c16_k3_n2),  BOTH(c32_k3),    BOTH(c128_k3),   BOTH(c8_k3),
        BOTH(down16_32),  BOTH(down_odd),   BOTH(pw32_16),   BOTH(pw128_64),  BOTH(out16_3_pw),
        BOTH(out16_3_k3), BOTH(c5_12_s2),   BOTH(c12_5_p0),  BOTH(c3_s2),     BOTH(k312),
        BOTH(k2_s1_p1),   BOTH(k2_s2_p1),   BOTH(dw16),      BOTH(dw8_s2),    BOTH(dw5),
        BOTH(convT32_16), BOTH(convT5_3),   BOTH(convT16_8),
        {"out16_4_k3_n2_direct", out16_4_k3_n2_direct}, {"out8_3_s2_direct", out8_3_s2_direct},
        {"out24_3_k3_direct", out24_3_k3_direct},       {"in3_8_k3_direct", in3_8_k3_direct},
        {"pw16_4_n2_direct", pw16_4_n2_direct},         {"pw8_3_direct", pw8_3_direct},
        {"out8_4_k3_direct", out8_4_k3_direct},         {"pw8_4_direct", pw8_4_direct},
        {"in5_16_k3_n2_direct", in5_16_k3_n2_direct},   {"out8_5_s2_direct", out8_5_s2_direct},
        {"small5", small5}, {"pointwise_few", pointwise_few},
        {"variants_v16", variants_v16}, {"variants_v8", variants_v8},
        {"variants_v1", variants_v1}, {"pointwise", pointwise},
        {"semantics_direct", semantics_direct}, {"semantics_gemm", semantics_gemm},
        {"chooser_cache", chooser_cache}, {"force_env", force_env}, {"bad_input", bad_input},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
