/* Sliding-window inference on the device (cl/infer.cl): window cut with flip and padding,
 * Gaussian-weighted accumulation, normalisation, labels. Planar volumes (C, D, H, W) are
 * tensors (C, 1, D, H, W), whose channels-last storage is that planar array. */
#include "layers_impl.h"

/* t is a planar volume: (C, 1, D, H, W). */
static kd_status check_planar(const char *op, const char *name, const kd_tensor *t) {
    char b[96];
    if (!t) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL", op, name);
    if (t->shape.c != 1)
        return kd_fail(KD_ERR_SHAPE, "%s: %s %s is not a planar volume (C, 1, D, H, W)", op, name,
                       KD_SHP(b, t->shape));
    return KD_OK;
}

static kd_status check_window(const char *op, const kd_tensor *x, int b, int flip) {
    char s[96];
    if (!x) return kd_fail(KD_ERR_INVALID_ARG, "%s: the window tensor is NULL", op);
    if (b < 0 || b >= x->shape.n)
        return kd_fail(KD_ERR_SHAPE, "%s: item %d of windows %s", op, b, KD_SHP(s, x->shape));
    if (flip < 0 || flip > 7)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: flip %d not in 0..7", op, flip);
    return KD_OK;
}

/* One work-item per window voxel: the range (T2, T1, T0), the driver's work-group shape. */
static kd_status launch_window(kd_device *dev, const char *name, kd_shape win, int nargs,
                               const kd_arg *args) {
    size_t g[3] = {(size_t)win.w, (size_t)win.h, (size_t)win.d};
    return kd_rt_launch(dev, name, 3, g, NULL, nargs, args);
}

/* The same (D, H, W). */
static kd_status check_grid(const char *op, const char *na, const kd_tensor *a, const char *nb,
                            const kd_tensor *b) {
    char s1[96], s2[96];
    kd_shape A = a->shape, B = b->shape;
    if (A.d != B.d || A.h != B.h || A.w != B.w)
        return kd_fail(KD_ERR_SHAPE, "%s: %s %s and %s %s differ in D, H, W", op, na, KD_SHP(s1, A),
                       nb, KD_SHP(s2, B));
    return KD_OK;
}

kd_status kd_window_cut(const kd_tensor *img, const int origin[3], int flip, kd_tensor *x, int b) {
    const char *op = "window cut";
    char s1[96], s2[96];
    kd_status st = check_planar(op, "img", img);
    if (!st) st = check_window(op, x, b, flip);
    if (st) return st;
    kd_shape I = img->shape, X = x->shape;
    if (X.c != I.n)
        return kd_fail(KD_ERR_SHAPE, "%s: image %s has %d channels, windows %s %d", op,
                       KD_SHP(s1, I), I.n, KD_SHP(s2, X), X.c);
    return kd_op_fail(launch_window(x->dev, "kd_win_cut", X,
                                    KD_ARGS(KD_T(img), KD_INT(I.n), KD_INT(I.d), KD_INT(I.h),
                                            KD_INT(I.w), KD_T(x), KD_INT(b), KD_INT(X.d),
                                            KD_INT(X.h), KD_INT(X.w), KD_INT(origin[0]),
                                            KD_INT(origin[1]), KD_INT(origin[2]), KD_INT(flip))),
                      op, x);
}

kd_status kd_window_accumulate(const kd_tensor *y, int b, const int origin[3], int flip,
                               const kd_tensor *w, float scale, kd_tensor *acc, kd_tensor *wsum) {
    const char *op = "window accumulate";
    char s1[96], s2[96];
    kd_status st = check_window(op, y, b, flip);
    if (!st) st = check_planar(op, "acc", acc);
    if (!st && w) st = check_planar(op, "w", w);
    if (!st && w) st = check_grid(op, "y", y, "w", w);
    if (!st && wsum) st = check_planar(op, "wsum", wsum);
    if (!st && wsum) st = check_grid(op, "acc", acc, "wsum", wsum);
    if (st) return st;
    kd_shape Y = y->shape, A = acc->shape;
    if (Y.c != A.n)
        return kd_fail(KD_ERR_SHAPE, "%s: output %s has %d channels, accumulator %s %d", op,
                       KD_SHP(s1, Y), Y.c, KD_SHP(s2, A), A.n);
    if (wsum && (!w || wsum->shape.n != 1))
        return kd_fail(KD_ERR_INVALID_ARG, "%s: the weight sum needs weights and one plane", op);
    if (w && w->shape.n != 1)
        return kd_fail(KD_ERR_SHAPE, "%s: weights %s: one plane expected", op,
                       KD_SHP(s1, w->shape));
    const kd_tensor *wt = w ? w : acc, *ws = wsum ? wsum : acc; /* unused when off */
    return kd_op_fail(
        launch_window(y->dev, "kd_win_accumulate", Y,
                      KD_ARGS(KD_T(y), KD_INT(b), KD_INT(Y.d), KD_INT(Y.h), KD_INT(Y.w),
                              KD_INT(Y.c), KD_T(acc), KD_INT(A.d), KD_INT(A.h), KD_INT(A.w),
                              KD_INT(origin[0]), KD_INT(origin[1]), KD_INT(origin[2]), KD_INT(flip),
                              KD_T(wt), KD_INT(w != NULL), KD_FLOAT(scale), KD_T(ws),
                              KD_INT(wsum != NULL))),
        op, acc);
}

kd_status kd_window_normalize(kd_tensor *acc, const kd_tensor *wsum) {
    const char *op = "window normalize";
    kd_status st = check_planar(op, "acc", acc);
    if (!st) st = check_planar(op, "wsum", wsum);
    if (!st) st = check_grid(op, "acc", acc, "wsum", wsum);
    if (!st && wsum->shape.n != 1)
        st = kd_fail(KD_ERR_SHAPE, "%s: the weight sum has %d planes, not 1", op, wsum->shape.n);
    if (st) return st;
    size_t nv = (size_t)kd_vox(acc->shape), g[2] = {nv, (size_t)acc->shape.n}, l[2] = {64, 1};
    return kd_op_fail(kd_rt_launch(acc->dev, "kd_win_normalize", 2, g, l,
                                   KD_ARGS(KD_T(acc), KD_T(wsum), KD_INT(nv))),
                      op, acc);
}

kd_status kd_window_labels(const kd_tensor *p, float threshold, int et_label, kd_tensor *labels) {
    const char *op = "window labels";
    char s1[96], s2[96];
    kd_status st = check_planar(op, "p", p);
    if (st) return st;
    if (p->shape.n != 3)
        return kd_fail(KD_ERR_SHAPE, "%s: %s: 3 region planes (WT, TC, ET) expected", op,
                       KD_SHP(s1, p->shape));
    if (!labels) return kd_fail(KD_ERR_INVALID_ARG, "%s: labels is NULL", op);
    if (et_label < 0 || et_label > 254)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: ET label %d not in 0..254", op, et_label);
    size_t nv = (size_t)kd_vox(p->shape);
    if (kd_tensor_numel(labels) < (nv + 3) / 4)
        return kd_fail(KD_ERR_SHAPE, "%s: %s holds %zu bytes, %zu labels needed (%s)", op,
                       KD_SHP(s1, labels->shape), 4 * kd_tensor_numel(labels), nv,
                       KD_SHP(s2, p->shape));
    return kd_op_fail(
        kd_launch_1d(p->dev, "kd_win_labels", nv,
                     KD_ARGS(KD_T(p), KD_INT(nv), KD_FLOAT(threshold), KD_INT(et_label),
                             KD_MEM(labels->mem), KD_INT(4 * labels->off))),
        op, p);
}
