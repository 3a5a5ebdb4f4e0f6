/* Upsampling x2 (trilinear, nearest), pooling 2x2x2 (max, average), global
 * average pooling (cl/resample.cl, cl/norm.cl for the channel sums). */
#include "layers_impl.h"

/* big = 2 * small along D, H, W, same N and C. */
static kd_status check_x2(const char *op, const char *nb, const kd_tensor *big, const char *ns,
                          const kd_tensor *small) {
    char a[96], b[96];
    if (!big || !small)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, !big ? nb : ns);
    kd_shape B = big->shape, s = small->shape;
    if (B.n != s.n || B.c != s.c || B.d != 2 * s.d || B.h != 2 * s.h || B.w != 2 * s.w)
        return kd_fail(KD_ERR_SHAPE, "%s: %s %s must be twice %s %s along D, H, W", op, nb,
                       KD_SHP(a, B), ns, KD_SHP(b, s));
    return KD_OK;
}

/* Launch a resample kernel over the voxels of shape `over`, as a (C4, W, N*D*H)
 * range; the kernels take the small side's shape as (N, D, H, W, C). */
static kd_status launch_rs(const char *op, const char *name, kd_shape over, int nargs,
                           const kd_arg *args, kd_device *dev) {
    size_t c4 = (size_t)(over.c + 3) / 4;
    size_t g[3] = {c4, (size_t)over.w, (size_t)over.n * over.d * over.h};
    size_t l[3] = {c4, c4 >= 64 ? 1 : 64 / c4, 1};
    if (l[1] > g[1]) l[1] = g[1];
    kd_status st = kd_rt_launch(dev, name, 3, g, l, nargs, args);
    char b[96];
    return st ? kd_fail_context(st, "%s over %s", op, KD_SHP(b, over)) : KD_OK;
}

#define KD_SMALL(s) KD_INT((s).n), KD_INT((s).d), KD_INT((s).h), KD_INT((s).w), KD_INT((s).c)

/* The trilinear kernels run over input rows (n, z, y) with V channels per work-item, V the
 * widest of 16, 8, 4, 1 dividing C: a (C/V, N*D*H) range of the small side. */
static kd_status launch_tri(const char *op, const char *base, kd_shape small, int nargs,
                            const kd_arg *args, kd_device *dev) {
    int v = small.c % 16 == 0 ? 16 : small.c % 8 == 0 ? 8 : small.c % 4 == 0 ? 4 : 1;
    char name[48];
    snprintf(name, sizeof name, "%s_v%d", base, v);
    size_t g[2] = {(size_t)(small.c / v), (size_t)small.n * small.d * small.h};
    kd_status st = kd_rt_launch(dev, name, 2, g, NULL, nargs, args);
    char b[96];
    return st ? kd_fail_context(st, "%s over %s", op, KD_SHP(b, small)) : KD_OK;
}

kd_status kd_upsample_trilinear_forward(const kd_tensor *x, kd_tensor *y) {
    kd_status st = check_x2("upsample_trilinear", "y", y, "x", x);
    if (st) return st;
    return launch_tri("upsample_trilinear", "kd_up_trilinear_fwd", x->shape,
                      KD_ARGS(KD_T(x), KD_T(y), KD_SMALL(x->shape)), x->dev);
}

kd_status kd_upsample_trilinear_backward(const kd_tensor *dy, kd_tensor *dx) {
    kd_status st = check_x2("upsample_trilinear backward", "dy", dy, "dx", dx);
    if (st) return st;
    return launch_tri("upsample_trilinear backward", "kd_up_trilinear_bwd", dx->shape,
                      KD_ARGS(KD_T(dy), KD_T(dx), KD_SMALL(dx->shape)), dx->dev);
}

kd_status kd_upsample_nearest_forward(const kd_tensor *x, kd_tensor *y) {
    kd_status st = check_x2("upsample_nearest", "y", y, "x", x);
    if (st) return st;
    return launch_rs("upsample_nearest", "kd_up_nearest_fwd", y->shape,
                     KD_ARGS(KD_T(x), KD_T(y), KD_SMALL(x->shape)), x->dev);
}

kd_status kd_upsample_nearest_backward(const kd_tensor *dy, kd_tensor *dx) {
    kd_status st = check_x2("upsample_nearest backward", "dy", dy, "dx", dx);
    if (st) return st;
    return launch_rs("upsample_nearest backward", "kd_up_nearest_bwd", dx->shape,
                     KD_ARGS(KD_T(dy), KD_T(dx), KD_SMALL(dx->shape)), dx->dev);
}

kd_status kd_maxpool_forward(const kd_tensor *x, kd_tensor *y) {
    kd_status st = check_x2("maxpool", "x", x, "y", y);
    if (st) return st;
    return launch_rs("maxpool", "kd_maxpool_fwd", y->shape,
                     KD_ARGS(KD_T(x), KD_T(y), KD_SMALL(y->shape)), x->dev);
}

kd_status kd_maxpool_backward(const kd_tensor *dy, const kd_tensor *x, kd_tensor *dx) {
    kd_status st = check_x2("maxpool backward", "x", x, "dy", dy);
    if (!st) st = kd_check_same("maxpool backward", "x", x, "dx", dx);
    if (st) return st;
    return launch_rs("maxpool backward", "kd_maxpool_bwd", dy->shape,
                     KD_ARGS(KD_T(dy), KD_T(x), KD_T(dx), KD_SMALL(dy->shape)), x->dev);
}

kd_status kd_avgpool_forward(const kd_tensor *x, kd_tensor *y) {
    kd_status st = check_x2("avgpool", "x", x, "y", y);
    if (st) return st;
    return launch_rs("avgpool", "kd_avgpool_fwd", y->shape,
                     KD_ARGS(KD_T(x), KD_T(y), KD_SMALL(y->shape)), x->dev);
}

kd_status kd_avgpool_backward(const kd_tensor *dy, kd_tensor *dx) {
    kd_status st = check_x2("avgpool backward", "dx", dx, "dy", dy);
    if (st) return st;
    return launch_rs("avgpool backward", "kd_avgpool_bwd", dy->shape,
                     KD_ARGS(KD_T(dy), KD_T(dx), KD_SMALL(dy->shape)), dx->dev);
}

/* pooled (N, C, 1, 1, 1) against x (N, C, D, H, W). */
static kd_status check_pooled(const char *op, const char *nx, const kd_tensor *x,
                              const char *np, const kd_tensor *p) {
    char a[96], b[96];
    if (!x || !p) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, !x ? nx : np);
    kd_shape s = x->shape, q = p->shape;
    if (q.n != s.n || q.c != s.c || q.d != 1 || q.h != 1 || q.w != 1)
        return kd_fail(KD_ERR_SHAPE, "%s: %s %s needs %s of shape (N=%d, C=%d, 1, 1, 1), got %s",
                       op, nx, KD_SHP(a, s), np, s.n, s.c, KD_SHP(b, q));
    return KD_OK;
}

kd_status kd_global_avgpool_forward(const kd_tensor *x, kd_tensor *y) {
    kd_status st = check_pooled("global_avgpool", "x", x, "y", y);
    if (st) return st;
    kd_shape s = x->shape;
    st = kd_channel_sums(x->dev, x->mem, x->off, NULL, 0, s.n, kd_vox(s), s.c,
                         1.0f / (float)kd_vox(s), y->mem, y->off);
    return kd_op_fail(st, "global_avgpool", x);
}

kd_status kd_global_avgpool_backward(const kd_tensor *dy, kd_tensor *dx) {
    kd_status st = check_pooled("global_avgpool backward", "dx", dx, "dy", dy);
    if (st) return st;
    kd_shape s = dx->shape;
    int S = kd_vox(s);
    /* dx = dy / S broadcast: scale dy into scratch, then broadcast it */
    size_t nc = (size_t)s.n * s.c;
    cl_mem t;
    st = kd_scratch(dx->dev, nc, &t);
    if (st) return st;
    st = kd_launch_flat8(dx->dev, "kd_axpby",
                         nc, KD_ARGS(KD_MEM(t), KD_INT(0), KD_T(dy), KD_INT(nc),
                                     KD_FLOAT(1.0f / (float)S), KD_FLOAT(0.0f)));
    kd_chunks k;
    kd_chunks_init(&k, s.n, S, s.c);
    if (!st)
        st = kd_rt_launch(dx->dev, "kd_chscale", 3, k.gws, k.lws,
                          KD_ARGS(KD_T(dx), KD_INT(0), KD_MEM(t), KD_INT(0), KD_T(dx), KD_INT(S),
                                  KD_INT(s.c), KD_INT(k.chunk), KD_INT(k.nch)));
    kd_scratch_free(dx->dev, t, nc);
    return kd_op_fail(st, "global_avgpool backward", dx);
}
