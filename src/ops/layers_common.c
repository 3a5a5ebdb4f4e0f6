/* Shared host helpers of the non-convolution ops. */
#include "layers_impl.h"

void kd_chunks_init(kd_chunks *k, int N, int S, int C) {
    k->N = N;
    k->S = S;
    k->C = C;
    k->chunk = KD_CHUNK_VOXELS;
    k->nch = (S + k->chunk - 1) / k->chunk;
    int c4 = (C + 3) / 4;
    k->gws[0] = (size_t)c4;
    k->gws[1] = (size_t)k->nch;
    k->gws[2] = (size_t)N;
    /* the whole channel range in one work-group, chunks filling it to ~64 */
    k->lws[0] = (size_t)c4;
    k->lws[1] = (size_t)(c4 >= 64 ? 1 : 64 / c4);
    if (k->lws[1] > (size_t)k->nch) k->lws[1] = (size_t)k->nch;
    k->lws[2] = 1;
}

kd_status kd_launch_flat8(kd_device *dev, const char *name, size_t n, int nargs,
                          const kd_arg *args) {
    size_t g = (n + 7) / 8, l = 64;
    if (g == 0) return KD_OK;
    return kd_rt_launch(dev, name, 1, &g, &l, nargs, args);
}

kd_status kd_launch_1d(kd_device *dev, const char *name, size_t count, int nargs,
                       const kd_arg *args) {
    size_t g = count, l = 64;
    if (g == 0) return KD_OK;
    return kd_rt_launch(dev, name, 1, &g, &l, nargs, args);
}

kd_status kd_op_fail(kd_status st, const char *op, const kd_tensor *x) {
    char b[96];
    return st ? kd_fail_context(st, "%s on %s", op, KD_SHP(b, x->shape)) : KD_OK;
}

kd_status kd_scratch(kd_device *dev, size_t floats, cl_mem *out) {
    return kd_rt_alloc(dev, (floats ? floats : 1) * sizeof(float), out);
}

void kd_scratch_free(kd_device *dev, cl_mem m, size_t floats) {
    if (m) kd_rt_release(dev, m, (floats ? floats : 1) * sizeof(float));
}

kd_status kd_channel_sums(kd_device *dev, cl_mem a, size_t aoff, cl_mem b, size_t boff, int N,
                          int S, int C, float scale, cl_mem out, size_t ooff) {
    kd_chunks k;
    kd_chunks_init(&k, N, S, C);
    size_t np = (size_t)N * k.nch * C;
    cl_mem part = NULL;
    kd_status st = kd_scratch(dev, np, &part);
    if (st) return st;
    cl_mem bb = b ? b : a;
    st = kd_rt_launch(dev, "kd_chsum_partial", 3, k.gws, k.lws,
                      KD_ARGS(KD_MEM(a), KD_INT(aoff), KD_MEM(bb), KD_INT(b ? boff : aoff),
                              KD_INT(b != NULL), KD_MEM(part), KD_INT(0), KD_INT(S), KD_INT(C),
                              KD_INT(k.chunk), KD_INT(k.nch)));
    if (!st)
        st = kd_launch_1d(dev, "kd_chsum_reduce", (size_t)N * C,
                          KD_ARGS(KD_MEM(part), KD_INT(0), KD_MEM(out), KD_INT(ooff), KD_INT(C),
                                  KD_INT(k.nch), KD_FLOAT(scale), KD_INT(N * C)));
    kd_scratch_free(dev, part, np);
    return st;
}

kd_status kd_check_same(const char *op, const char *na, const kd_tensor *a, const char *nb,
                        const kd_tensor *b) {
    char s1[96], s2[96];
    if (!a || !b) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, !a ? na : nb);
    if (!kd_shape_equal(a->shape, b->shape))
        return kd_fail(KD_ERR_SHAPE, "%s: %s %s but %s %s", op, na, KD_SHP(s1, a->shape), nb,
                       KD_SHP(s2, b->shape));
    return KD_OK;
}

kd_status kd_check_numel(const char *op, const char *name, const kd_tensor *t, size_t n) {
    if (!t) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, name);
    if (kd_tensor_numel(t) != n) {
        char b[96];
        return kd_fail(KD_ERR_SHAPE, "%s: %s %s must hold %zu values", op, name,
                       KD_SHP(b, t->shape), n);
    }
    return KD_OK;
}
