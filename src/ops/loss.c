/* The region losses (cl/loss.cl): statistics with fixed-order sums, then the gradient
 * from them. What loss to use and how to combine terms is src/train's business. */
#include "layers_impl.h"

#define LOSS_WG 64     /* KD_LOSS_WG in cl/loss.cl */
#define LOSS_GROUPS 64 /* work-groups of the partial sums */
#define LOSS_NSTAT 26  /* KD_LOSS_NSTAT in cl/loss.cl */

/* p and t (and dp) of one shape with 1..KD_LOSS_MAX_C channels. */
static kd_status check_pair(const char *op, const kd_tensor *p, const kd_tensor *t,
                            const kd_tensor *dp) {
    char a[96], b[96];
    if (!p || !t) return kd_fail(KD_ERR_INVALID_ARG, "%s: prediction or target is NULL", op);
    if (!kd_shape_equal(p->shape, t->shape))
        return kd_fail(KD_ERR_SHAPE, "%s: prediction %s and target %s differ", op,
                       KD_SHP(a, p->shape), KD_SHP(b, t->shape));
    if (dp && !kd_shape_equal(p->shape, dp->shape))
        return kd_fail(KD_ERR_SHAPE, "%s: prediction %s and gradient %s differ", op,
                       KD_SHP(a, p->shape), KD_SHP(b, dp->shape));
    if (p->shape.c > KD_LOSS_MAX_C)
        return kd_fail(KD_ERR_SHAPE, "%s: at most %d channels, got %d", op, KD_LOSS_MAX_C,
                       p->shape.c);
    return KD_OK;
}

kd_status kd_loss_forward(const kd_loss_terms *l, const kd_tensor *p, const kd_tensor *t,
                          kd_tensor *partials, kd_tensor *stats) {
    const char *op = "loss";
    kd_status st = check_pair(op, p, t, NULL);
    if (!st) st = kd_check_numel(op, "partials", partials, KD_LOSS_PARTIALS);
    if (!st) st = kd_check_numel(op, "stats", stats, KD_LOSS_STATS);
    if (st) return st;
    kd_shape s = p->shape;
    int n = (int)kd_shape_numel(s), nvox = n / s.c;
    size_t g1 = (size_t)LOSS_WG * LOSS_GROUPS, l1 = LOSS_WG, one = 1;
    st = kd_rt_launch(p->dev, "kd_loss_partials", 1, &g1, &l1,
                      KD_ARGS(KD_T(p), KD_T(t), KD_INT(nvox), KD_INT(s.c), KD_FLOAT(l->bg),
                              KD_T(partials)));
    if (!st)
        st = kd_rt_launch(p->dev, "kd_loss_finalize", 1, &one, NULL,
                          KD_ARGS(KD_T(partials), KD_INT(LOSS_GROUPS), KD_INT(s.c), KD_INT(n),
                                  KD_FLOAT(l->dice), KD_FLOAT(l->bce), KD_FLOAT(l->mse),
                                  KD_T(stats)));
    return kd_op_fail(st, op, p);
}

kd_status kd_loss_backward(const kd_loss_terms *l, const kd_tensor *p, const kd_tensor *t,
                           const kd_tensor *stats, float weight, int accumulate, kd_tensor *dp) {
    const char *op = "loss backward";
    kd_status st = check_pair(op, p, t, dp);
    if (!st) st = kd_check_numel(op, "stats", stats, KD_LOSS_STATS);
    if (st) return st;
    int n = (int)kd_tensor_numel(p);
    size_t gn = (size_t)n;
    st = kd_rt_launch(p->dev, "kd_loss_grad", 1, &gn, NULL,
                      KD_ARGS(KD_T(p), KD_T(t), KD_INT(n), KD_INT(p->shape.c), KD_INT(n),
                              KD_FLOAT(l->bg), KD_FLOAT(l->dice), KD_FLOAT(l->bce),
                              KD_FLOAT(l->mse), KD_FLOAT(weight), KD_INT(accumulate != 0),
                              KD_T(stats), KD_T(dp)));
    return kd_op_fail(st, op, p);
}
