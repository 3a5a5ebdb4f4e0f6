/* Convolution ops (ops.h): argument and shape checks, then dispatch to the direct kernels
 * or the GEMM path as the chooser decides (conv_choose.c). */
#include <stdio.h>
#include <string.h>

#include "conv_internal.h"
#include "conv_tune.h"

int kd_conv_out_size(int in, int k, int stride, int pad) {
    if (stride <= 0 || k <= 0) return 0;
    int o = in + 2 * pad - k;
    return o < 0 ? 0 : o / stride + 1;
}

double kd_conv_flops(const kd_conv_geom *g) {
    if (g->transposed)
        return 2.0 * g->n * g->d * g->h * g->w * 8.0 * g->ci * g->co;
    return 2.0 * g->n * g->od * g->oh * g->ow * g->k[0] * g->k[1] * g->k[2] *
           (double)(g->ci / g->groups) * g->co;
}

static const char *pass_name(kd_conv_pass p) {
    return p == KD_PASS_FWD ? "fwd" : p == KD_PASS_BWD_DATA ? "bwd_data" : "bwd_weight";
}

/* The choice is keyed by a shape class: channels, kernel, stride, padding, groups and
 * the voxel count (N*D*H*W) rounded up to a power of two. Whole-volume inference meets a
 * new D,H,W with every case; timing both implementations again for each would cost far
 * more than it could gain, and the faster one does not change within a class. */
void kd_conv_key(const kd_conv_geom *g, kd_conv_pass pass, char *out, size_t n) {
    long long vox = (long long)g->n * g->d * g->h * g->w, cls = 1;
    int lg = 0;
    while (cls < vox) {
        cls <<= 1;
        lg++;
    }
    snprintf(out, n, "%s|%s|vox2^%d ci%d co%d k%dx%dx%d s%d p%d g%d b%d",
             g->transposed ? "convT" : "conv", pass_name(pass), lg, g->ci, g->co, g->k[0],
             g->k[1], g->k[2], g->s, g->p, g->groups, g->has_bias);
}

/* ---- checks --------------------------------------------------------------------------- */

static kd_status check_params(const char *op, const kd_conv_params *p) {
    if (!p) return kd_fail(KD_ERR_INVALID_ARG, "%s: conv params are NULL", op);
    for (int i = 0; i < 3; i++)
        if (p->k[i] < 1 || p->k[i] > 3)
            return kd_fail(KD_ERR_INVALID_ARG, "%s: kernel size %dx%dx%d: each must be 1, 2 or 3",
                           op, p->k[0], p->k[1], p->k[2]);
    if (p->stride != 1 && p->stride != 2)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: stride %d: must be 1 or 2", op, p->stride);
    if (p->pad != 0 && p->pad != 1)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: padding %d: must be 0 or 1", op, p->pad);
    if (p->groups < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: groups %d: must be 1 or the channel count", op,
                       p->groups);
    return KD_OK;
}

static kd_status check_tensor(const char *op, const char *what, const kd_tensor *t) {
    if (!t) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, what);
    return KD_OK;
}

static kd_status check_same_device(const char *op, const kd_tensor *a, const kd_tensor *b) {
    if (b && a->dev != b->dev)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: tensors live on different devices", op);
    return KD_OK;
}

/* Geometry of conv(x -> y) from the activation shapes; checks weights and bias counts. */
static kd_status conv_geom(const char *op, const kd_conv_params *p, kd_shape xs, kd_shape ys,
                           const kd_tensor *w, const kd_tensor *b, kd_conv_geom *g) {
    kd_status s = check_params(op, p);
    if (s) return s;
    char bx[96], by[96];
    kd_shape_str(xs, bx, sizeof bx);
    kd_shape_str(ys, by, sizeof by);
    memset(g, 0, sizeof *g);
    g->n = xs.n, g->ci = xs.c, g->d = xs.d, g->h = xs.h, g->w = xs.w;
    g->co = ys.c;
    for (int i = 0; i < 3; i++) g->k[i] = p->k[i];
    g->s = p->stride, g->p = p->pad, g->groups = p->groups;
    g->od = kd_conv_out_size(xs.d, p->k[0], p->stride, p->pad);
    g->oh = kd_conv_out_size(xs.h, p->k[1], p->stride, p->pad);
    g->ow = kd_conv_out_size(xs.w, p->k[2], p->stride, p->pad);
    g->has_bias = b != NULL;
    if (p->groups != 1 && (p->groups != xs.c || ys.c != xs.c))
        return kd_fail(KD_ERR_UNSUPPORTED,
                       "%s: groups %d with input %s and output %s: only groups 1 or groups = "
                       "Cin = Cout (depthwise) are supported",
                       op, p->groups, bx, by);
    if (g->od < 1 || g->oh < 1 || g->ow < 1)
        return kd_fail(KD_ERR_SHAPE, "%s: input %s is smaller than the kernel %dx%dx%d (pad %d)",
                       op, bx, p->k[0], p->k[1], p->k[2], p->pad);
    if (ys.n != xs.n || ys.d != g->od || ys.h != g->oh || ys.w != g->ow)
        return kd_fail(KD_ERR_SHAPE,
                       "%s: input %s with kernel %dx%dx%d stride %d pad %d gives (N=%d, D=%d, "
                       "H=%d, W=%d), but the output is %s",
                       op, bx, p->k[0], p->k[1], p->k[2], p->stride, p->pad, xs.n, g->od, g->oh,
                       g->ow, by);
    size_t wn = (size_t)p->k[0] * p->k[1] * p->k[2] * (size_t)(xs.c / p->groups) * ys.c;
    if (kd_tensor_numel(w) != wn)
        return kd_fail(KD_ERR_SHAPE,
                       "%s: weight has %zu elements; kernel %dx%dx%d, Cin/groups %d, Cout %d "
                       "needs %zu",
                       op, kd_tensor_numel(w), p->k[0], p->k[1], p->k[2], xs.c / p->groups, ys.c,
                       wn);
    if (b && kd_tensor_numel(b) != (size_t)ys.c)
        return kd_fail(KD_ERR_SHAPE, "%s: bias has %zu elements, Cout is %d", op,
                       kd_tensor_numel(b), ys.c);
    return KD_OK;
}

static kd_status convT_geom(const char *op, kd_shape xs, kd_shape ys, const kd_tensor *w,
                            const kd_tensor *b, kd_conv_geom *g) {
    char bx[96], by[96];
    kd_shape_str(xs, bx, sizeof bx);
    kd_shape_str(ys, by, sizeof by);
    memset(g, 0, sizeof *g);
    g->n = xs.n, g->ci = xs.c, g->d = xs.d, g->h = xs.h, g->w = xs.w;
    g->co = ys.c, g->od = ys.d, g->oh = ys.h, g->ow = ys.w;
    g->k[0] = g->k[1] = g->k[2] = 2;
    g->s = 2, g->groups = 1, g->transposed = 1, g->has_bias = b != NULL;
    if (ys.n != xs.n || ys.d != 2 * xs.d || ys.h != 2 * xs.h || ys.w != 2 * xs.w)
        return kd_fail(KD_ERR_SHAPE,
                       "%s: a 2x2x2 stride-2 transposed conv of %s needs an output of twice "
                       "the size, got %s",
                       op, bx, by);
    size_t wn = 8 * (size_t)xs.c * ys.c;
    if (kd_tensor_numel(w) != wn)
        return kd_fail(KD_ERR_SHAPE, "%s: weight has %zu elements, 2x2x2 x Cin %d x Cout %d needs %zu",
                       op, kd_tensor_numel(w), xs.c, ys.c, wn);
    if (b && kd_tensor_numel(b) != (size_t)ys.c)
        return kd_fail(KD_ERR_SHAPE, "%s: bias has %zu elements, Cout is %d", op,
                       kd_tensor_numel(b), ys.c);
    return KD_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

typedef struct run_ctx {
    const kd_conv_geom *g;
    const kd_tensor *a, *b, *bias; /* forward: x, w, b; data: dy, w; weight: x, dy */
    kd_tensor *out;
} run_ctx;

static kd_status run_fwd(void *c, kd_conv_impl impl) {
    run_ctx *r = c;
    return impl == KD_CONV_GEMM ? kd_conv_gemm_forward(r->g, r->a, r->b, r->bias, r->out)
                                : kd_conv_direct_forward(r->g, r->a, r->b, r->bias, r->out);
}

static kd_status run_data(void *c, kd_conv_impl impl) {
    run_ctx *r = c;
    return impl == KD_CONV_GEMM ? kd_conv_gemm_backward_input(r->g, r->a, r->b, r->out)
                                : kd_conv_direct_backward_input(r->g, r->a, r->b, r->out);
}

static kd_status run_weight(void *c, kd_conv_impl impl) {
    run_ctx *r = c;
    return impl == KD_CONV_GEMM ? kd_conv_gemm_backward_weight(r->g, r->a, r->b, r->out)
                                : kd_conv_direct_backward_weight(r->g, r->a, r->b, r->out);
}

static kd_status dispatch(const char *op, const kd_conv_geom *g, kd_conv_pass pass,
                          kd_conv_run_fn fn, run_ctx *ctx) {
    kd_device *dev = ctx->a->dev;
    char key[160];
    kd_conv_key(g, pass, key, sizeof key);
    kd_conv_impl impl;
    kd_status s;
    if (pass == KD_PASS_BWD_WEIGHT && kd_conv_forced() == KD_CONV_AUTO &&
        kd_conv_gemm_supports(g) &&
        kd_conv_choice_lookup(dev, key, NULL, NULL) == KD_CONV_AUTO) {
        /* timing runs accumulate: give them a scratch gradient */
        kd_tensor *scratch = NULL;
        s = kd_tensor_zeros(dev, ctx->out->shape, &scratch);
        if (s) return kd_fail_context(s, "%s", op);
        run_ctx tctx = *ctx;
        tctx.out = scratch;
        s = kd_conv_select(dev, key, 1, fn, &tctx, &impl);
        kd_tensor_free(scratch);
    } else {
        s = kd_conv_select(dev, key, kd_conv_gemm_supports(g), fn, ctx, &impl);
    }
    if (!s) s = fn(ctx, impl);
    if (s) {
        /* the layer's shapes beside the shape class: which conv of the model it was */
        char xs[96], ys[96];
        kd_shape_str((kd_shape){g->n, g->ci, g->d, g->h, g->w}, xs, sizeof xs);
        kd_shape_str((kd_shape){g->n, g->co, g->od, g->oh, g->ow}, ys, sizeof ys);
        return kd_fail_context(s, "%s, x %s, y %s [%s, %s]", op, xs, ys, key,
                               impl == KD_CONV_GEMM ? "gemm" : "direct");
    }
    return KD_OK;
}

kd_status kd_conv3d_forward(const kd_conv_params *p, const kd_tensor *x, const kd_tensor *w,
                            const kd_tensor *b, kd_tensor *y) {
    const char *op = "conv3d_forward";
    kd_status s;
    if ((s = check_tensor(op, "x", x)) || (s = check_tensor(op, "w", w)) ||
        (s = check_tensor(op, "y", y)) || (s = check_same_device(op, x, w)) ||
        (s = check_same_device(op, x, y)) || (s = check_same_device(op, x, b)))
        return s;
    kd_conv_geom g;
    if ((s = conv_geom(op, p, x->shape, y->shape, w, b, &g))) return s;
    run_ctx ctx = {&g, x, w, b, y};
    return dispatch(op, &g, KD_PASS_FWD, run_fwd, &ctx);
}

kd_status kd_conv3d_backward_input(const kd_conv_params *p, const kd_tensor *dy,
                                   const kd_tensor *w, kd_tensor *dx) {
    const char *op = "conv3d_backward_input";
    kd_status s;
    if ((s = check_tensor(op, "dy", dy)) || (s = check_tensor(op, "w", w)) ||
        (s = check_tensor(op, "dx", dx)) || (s = check_same_device(op, dy, w)) ||
        (s = check_same_device(op, dy, dx)))
        return s;
    kd_conv_geom g;
    if ((s = conv_geom(op, p, dx->shape, dy->shape, w, NULL, &g))) return s;
    run_ctx ctx = {&g, dy, w, NULL, dx};
    return dispatch(op, &g, KD_PASS_BWD_DATA, run_data, &ctx);
}

kd_status kd_conv3d_backward_weight(const kd_conv_params *p, const kd_tensor *x,
                                    const kd_tensor *dy, kd_tensor *dw, kd_tensor *db) {
    const char *op = "conv3d_backward_weight";
    kd_status s;
    if ((s = check_tensor(op, "x", x)) || (s = check_tensor(op, "dy", dy)) ||
        (s = check_tensor(op, "dw", dw)) || (s = check_same_device(op, x, dy)) ||
        (s = check_same_device(op, x, dw)) || (s = check_same_device(op, x, db)))
        return s;
    kd_conv_geom g;
    if ((s = conv_geom(op, p, x->shape, dy->shape, dw, db, &g))) return s;
    g.has_bias = 0; /* the bias gradient is a separate reduction: one key for both */
    run_ctx ctx = {&g, x, dy, NULL, dw};
    if ((s = dispatch(op, &g, KD_PASS_BWD_WEIGHT, run_weight, &ctx))) return s;
    if (db && (s = kd_conv_bias_grad(dy, db))) return kd_fail_context(s, "%s: bias gradient", op);
    return KD_OK;
}

kd_status kd_convT3d_forward(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                             kd_tensor *y) {
    const char *op = "convT3d_forward";
    kd_status s;
    if ((s = check_tensor(op, "x", x)) || (s = check_tensor(op, "w", w)) ||
        (s = check_tensor(op, "y", y)) || (s = check_same_device(op, x, w)) ||
        (s = check_same_device(op, x, y)) || (s = check_same_device(op, x, b)))
        return s;
    kd_conv_geom g;
    if ((s = convT_geom(op, x->shape, y->shape, w, b, &g))) return s;
    run_ctx ctx = {&g, x, w, b, y};
    return dispatch(op, &g, KD_PASS_FWD, run_fwd, &ctx);
}

kd_status kd_convT3d_backward_input(const kd_tensor *dy, const kd_tensor *w, kd_tensor *dx) {
    const char *op = "convT3d_backward_input";
    kd_status s;
    if ((s = check_tensor(op, "dy", dy)) || (s = check_tensor(op, "w", w)) ||
        (s = check_tensor(op, "dx", dx)) || (s = check_same_device(op, dy, w)) ||
        (s = check_same_device(op, dy, dx)))
        return s;
    kd_conv_geom g;
    if ((s = convT_geom(op, dx->shape, dy->shape, w, NULL, &g))) return s;
    run_ctx ctx = {&g, dy, w, NULL, dx};
    return dispatch(op, &g, KD_PASS_BWD_DATA, run_data, &ctx);
}

kd_status kd_convT3d_backward_weight(const kd_tensor *x, const kd_tensor *dy, kd_tensor *dw,
                                     kd_tensor *db) {
    const char *op = "convT3d_backward_weight";
    kd_status s;
    if ((s = check_tensor(op, "x", x)) || (s = check_tensor(op, "dy", dy)) ||
        (s = check_tensor(op, "dw", dw)) || (s = check_same_device(op, x, dy)) ||
        (s = check_same_device(op, x, dw)) || (s = check_same_device(op, x, db)))
        return s;
    kd_conv_geom g;
    if ((s = convT_geom(op, x->shape, dy->shape, dw, db, &g))) return s;
    g.has_bias = 0;
    run_ctx ctx = {&g, x, dy, NULL, dw};
    if ((s = dispatch(op, &g, KD_PASS_BWD_WEIGHT, run_weight, &ctx))) return s;
    if (db && (s = kd_conv_bias_grad(dy, db))) return kd_fail_context(s, "%s: bias gradient", op);
    return KD_OK;
}

/* ---- scratch accounting ------------------------------------------------------------------- */

static size_t scratch_of(kd_device *dev, kd_conv_geom *g, kd_shape xs, kd_shape ys, int pass) {
    g->n = xs.n, g->ci = xs.c, g->d = xs.d, g->h = xs.h, g->w = xs.w;
    g->co = ys.c, g->od = ys.d, g->oh = ys.h, g->ow = ys.w;
    kd_conv_pass ps = pass == 0 ? KD_PASS_FWD : pass == 1 ? KD_PASS_BWD_DATA : KD_PASS_BWD_WEIGHT;
    if (ps != KD_PASS_FWD) g->has_bias = 0; /* as the ops key the gradients */
    kd_conv_tune t = kd_conv_tune_default;
    if (dev) kd_conv_tune_lookup(dev, g, ps, &t); /* the parameters the launch will use */
    return kd_conv_direct_scratch_bytes(g, ps, &t);
}

size_t kd_conv3d_scratch_bytes(kd_device *dev, const kd_conv_params *p, kd_shape x, kd_shape y,
                               int has_bias, int pass) {
    kd_conv_geom g;
    memset(&g, 0, sizeof g);
    for (int i = 0; i < 3; i++) g.k[i] = p->k[i];
    g.s = p->stride, g.p = p->pad, g.groups = p->groups, g.has_bias = has_bias;
    return scratch_of(dev, &g, x, y, pass);
}

size_t kd_convT3d_scratch_bytes(kd_device *dev, kd_shape x, kd_shape y, int has_bias, int pass) {
    kd_conv_geom g;
    memset(&g, 0, sizeof g);
    g.k[0] = g.k[1] = g.k[2] = 2;
    g.s = 2, g.groups = 1, g.transposed = 1, g.has_bias = has_bias;
    return scratch_of(dev, &g, x, y, pass);
}
