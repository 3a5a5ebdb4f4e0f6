/* Channel concat/slice and flat elementwise ops (cl/eltwise.cl). */
#include "layers_impl.h"

/* dst[..., cd0:cd0+cc] = src[..., cs0:cs0+cc] over every voxel. */
static kd_status copy_channels(const kd_tensor *src, int cs0, kd_tensor *dst, int cd0, int cc) {
    size_t nvox = kd_tensor_numel(src) / (size_t)src->shape.c;
    return kd_launch_1d(src->dev, "kd_copy_channels", nvox,
                        KD_ARGS(KD_T(src), KD_INT(src->shape.c), KD_INT(cs0), KD_T(dst),
                                KD_INT(dst->shape.c), KD_INT(cd0), KD_INT(cc), KD_INT(nvox)));
}

/* a, b, y agree on N, D, H, W and y.c = a.c + b.c. */
static kd_status check_concat(const char *op, const kd_tensor *a, const kd_tensor *b,
                              const kd_tensor *y) {
    char s1[96], s2[96], s3[96];
    if (!a || !b || !y) return kd_fail(KD_ERR_INVALID_ARG, "%s: a NULL tensor", op);
    kd_shape A = a->shape, B = b->shape, Y = y->shape;
    if (A.n != B.n || A.d != B.d || A.h != B.h || A.w != B.w || Y.n != A.n || Y.d != A.d ||
        Y.h != A.h || Y.w != A.w || Y.c != A.c + B.c)
        return kd_fail(KD_ERR_SHAPE, "%s: a %s and b %s do not concatenate along C into %s", op,
                       KD_SHP(s1, A), KD_SHP(s2, B), KD_SHP(s3, Y));
    return KD_OK;
}

kd_status kd_concat_forward(const kd_tensor *a, const kd_tensor *b, kd_tensor *y) {
    kd_status st = check_concat("concat", a, b, y);
    if (st) return st;
    st = copy_channels(a, 0, y, 0, a->shape.c);
    if (!st) st = copy_channels(b, 0, y, a->shape.c, b->shape.c);
    return kd_op_fail(st, "concat", y);
}

kd_status kd_concat_backward(const kd_tensor *dy, kd_tensor *da, kd_tensor *db) {
    kd_status st = check_concat("concat backward", da, db, dy);
    if (!st) st = copy_channels(dy, 0, da, 0, da->shape.c);
    if (!st) st = copy_channels(dy, da->shape.c, db, 0, db->shape.c);
    return st;
}

/* y (the narrow one) = x[:, c0:c0+y.c], same N, D, H, W. */
static kd_status check_slice(const char *op, const kd_tensor *x, int c0, const kd_tensor *y) {
    char s1[96], s2[96];
    if (!x || !y) return kd_fail(KD_ERR_INVALID_ARG, "%s: a NULL tensor", op);
    kd_shape X = x->shape, Y = y->shape;
    if (X.n != Y.n || X.d != Y.d || X.h != Y.h || X.w != Y.w || c0 < 0 || c0 + Y.c > X.c)
        return kd_fail(KD_ERR_SHAPE, "%s: channels [%d, %d) of %s do not fit %s", op, c0,
                       c0 + Y.c, KD_SHP(s1, X), KD_SHP(s2, Y));
    return KD_OK;
}

kd_status kd_slice_channels_forward(const kd_tensor *x, int c0, kd_tensor *y) {
    kd_status st = check_slice("slice_channels", x, c0, y);
    return st ? st : kd_op_fail(copy_channels(x, c0, y, 0, y->shape.c), "slice_channels", x);
}

kd_status kd_slice_channels_backward(const kd_tensor *dy, int c0, kd_tensor *dx) {
    kd_status st = check_slice("slice_channels backward", dx, c0, dy);
    return st ? st : kd_op_fail(copy_channels(dy, 0, dx, c0, dy->shape.c), "slice_channels backward", dx);
}

static kd_status binary(const char *op, const kd_tensor *a, const kd_tensor *b, kd_tensor *y,
                        int mul) {
    kd_status st = kd_check_same(op, "a", a, "b", b);
    if (!st) st = kd_check_same(op, "a", a, "y", y);
    if (st) return st;
    size_t n = kd_tensor_numel(a);
    return kd_op_fail(kd_launch_flat8(a->dev, "kd_binary", n,
                                      KD_ARGS(KD_T(a), KD_T(b), KD_T(y), KD_INT(n), KD_INT(mul))),
                      op, a);
}

kd_status kd_add(const kd_tensor *a, const kd_tensor *b, kd_tensor *y) {
    return binary("add", a, b, y, 0);
}

kd_status kd_mul(const kd_tensor *a, const kd_tensor *b, kd_tensor *y) {
    return binary("mul", a, b, y, 1);
}

kd_status kd_mul_backward(const kd_tensor *dy, const kd_tensor *a, const kd_tensor *b,
                          kd_tensor *da, kd_tensor *db) {
    const char *op = "mul backward";
    kd_status st = kd_check_same(op, "dy", dy, "a", a);
    if (!st) st = kd_check_same(op, "dy", dy, "b", b);
    if (!st && da) st = kd_check_same(op, "dy", dy, "da", da);
    if (!st && db) st = kd_check_same(op, "dy", dy, "db", db);
    if (st || (!da && !db)) return st;
    size_t n = kd_tensor_numel(dy);
    const kd_tensor *pa = da ? da : db, *pb = db ? db : da;
    return kd_op_fail(kd_launch_flat8(dy->dev, "kd_mul_bwd", n,
                                      KD_ARGS(KD_T(dy), KD_T(a), KD_T(b), KD_T(pa), KD_T(pb),
                                              KD_INT(n), KD_INT(da != NULL), KD_INT(db != NULL))),
                      op, dy);
}

static kd_status check_numel(const char *op, const kd_tensor *x, const kd_tensor *y) {
    char s1[96], s2[96];
    if (!x || !y) return kd_fail(KD_ERR_INVALID_ARG, "%s: a NULL tensor", op);
    if (kd_tensor_numel(x) != kd_tensor_numel(y))
        return kd_fail(KD_ERR_SHAPE, "%s: x %s and y %s differ in size", op,
                       KD_SHP(s1, x->shape), KD_SHP(s2, y->shape));
    return KD_OK;
}

kd_status kd_axpby(float alpha, const kd_tensor *x, float beta, kd_tensor *y) {
    kd_status st = check_numel("axpby", x, y);
    if (st) return st;
    size_t n = kd_tensor_numel(y);
    return kd_op_fail(kd_launch_flat8(y->dev, "kd_axpby", n,
                                      KD_ARGS(KD_T(y), KD_T(x), KD_INT(n), KD_FLOAT(alpha), KD_FLOAT(beta))),
                      "axpby", y);
}

kd_status kd_axpy(float alpha, const kd_tensor *x, kd_tensor *y) {
    return kd_axpby(alpha, x, 1.0f, y);
}

kd_status kd_scale(float alpha, kd_tensor *y) {
    if (!y) return kd_fail(KD_ERR_INVALID_ARG, "scale: y is NULL");
    size_t n = kd_tensor_numel(y);
    return kd_op_fail(kd_launch_flat8(y->dev, "kd_scale", n, KD_ARGS(KD_T(y), KD_INT(n), KD_FLOAT(alpha))),
                      "scale", y);
}
