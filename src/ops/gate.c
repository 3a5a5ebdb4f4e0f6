/* Squeeze-excitation gating: channel scaling x * s and spatial gating x * a
 * (cl/eltwise.cl; channel sums from cl/norm.cl). */
#include "layers_impl.h"

/* s (N, C, 1, 1, 1) for x (N, C, D, H, W). */
static kd_status check_chan(const char *op, const kd_tensor *x, const char *ns,
                            const kd_tensor *s) {
    char a[96], b[96];
    if (!s) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, ns);
    kd_shape xs = x->shape, q = s->shape;
    if (q.n != xs.n || q.c != xs.c || q.d != 1 || q.h != 1 || q.w != 1)
        return kd_fail(KD_ERR_SHAPE, "%s: x %s needs %s of shape (N=%d, C=%d, 1, 1, 1), got %s",
                       op, KD_SHP(a, xs), ns, xs.n, xs.c, KD_SHP(b, q));
    return KD_OK;
}

/* a (N, 1, D, H, W) for x (N, C, D, H, W). */
static kd_status check_spatial(const char *op, const kd_tensor *x, const char *na,
                               const kd_tensor *a) {
    char s1[96], s2[96];
    if (!a) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, na);
    kd_shape xs = x->shape, q = a->shape;
    if (q.n != xs.n || q.c != 1 || q.d != xs.d || q.h != xs.h || q.w != xs.w)
        return kd_fail(KD_ERR_SHAPE, "%s: x %s needs %s of shape (N=%d, 1, D=%d, H=%d, W=%d), got %s",
                       op, KD_SHP(s1, xs), na, xs.n, xs.d, xs.h, xs.w, KD_SHP(s2, q));
    return KD_OK;
}

static kd_status chscale(const kd_tensor *x, const kd_tensor *s, kd_tensor *y) {
    kd_chunks k;
    kd_shape xs = x->shape;
    kd_chunks_init(&k, xs.n, kd_vox(xs), xs.c);
    return kd_rt_launch(x->dev, "kd_chscale", 3, k.gws, k.lws,
                        KD_ARGS(KD_T(x), KD_INT(1), KD_T(s), KD_T(y), KD_INT(k.S), KD_INT(xs.c),
                                KD_INT(k.chunk), KD_INT(k.nch)));
}

kd_status kd_channel_scale_forward(const kd_tensor *x, const kd_tensor *s, kd_tensor *y) {
    const char *op = "channel_scale";
    kd_status st = kd_check_same(op, "x", x, "y", y);
    if (!st) st = check_chan(op, x, "s", s);
    return st ? st : chscale(x, s, y);
}

kd_status kd_channel_scale_backward(const kd_tensor *dy, const kd_tensor *x,
                                    const kd_tensor *s, kd_tensor *dx, kd_tensor *ds) {
    const char *op = "channel_scale backward";
    kd_status st = kd_check_same(op, "x", x, "dy", dy);
    if (!st && dx) st = kd_check_same(op, "x", x, "dx", dx);
    if (!st) st = check_chan(op, x, "s", s);
    if (!st && ds) st = check_chan(op, x, "ds", ds);
    if (st) return st;
    kd_shape xs = x->shape;
    /* ds first: dx may alias dy */
    if (ds)
        st = kd_channel_sums(x->dev, dy->mem, dy->off, x->mem, x->off, xs.n, kd_vox(xs), xs.c,
                             1.0f, ds->mem, ds->off);
    if (!st && dx) st = chscale(dy, s, dx);
    return kd_op_fail(st, op, x);
}

kd_status kd_spatial_gate_forward(const kd_tensor *x, const kd_tensor *a, kd_tensor *y) {
    const char *op = "spatial_gate";
    kd_status st = kd_check_same(op, "x", x, "y", y);
    if (!st) st = check_spatial(op, x, "a", a);
    if (st) return st;
    size_t nvox = kd_tensor_numel(a);
    return kd_launch_1d(x->dev, "kd_sgate_fwd", nvox,
                        KD_ARGS(KD_T(x), KD_T(a), KD_T(y), KD_INT(nvox), KD_INT(x->shape.c)));
}

kd_status kd_spatial_gate_backward(const kd_tensor *dy, const kd_tensor *x,
                                   const kd_tensor *a, kd_tensor *dx, kd_tensor *da) {
    const char *op = "spatial_gate backward";
    kd_status st = kd_check_same(op, "x", x, "dy", dy);
    if (!st) st = kd_check_same(op, "x", x, "dx", dx);
    if (!st) st = check_spatial(op, x, "a", a);
    if (!st) st = check_spatial(op, x, "da", da);
    if (st) return st;
    size_t nvox = kd_tensor_numel(a);
    return kd_launch_1d(x->dev, "kd_sgate_bwd", nvox,
                        KD_ARGS(KD_T(dy), KD_T(x), KD_T(a), KD_T(dx), KD_T(da), KD_INT(nvox),
                                KD_INT(x->shape.c)));
}
