/* Optimizer updates over flat parameter slabs (cl/optim.cl): the gradient's sum of
 * squares with the finite check, AMSGrad Adam, Nesterov SGD. Schedules and the choice
 * of optimizer are src/train's business. */
#include <math.h>

#include "layers_impl.h"

#define OPT_WG 64      /* KD_OPT_WG in cl/optim.cl */
#define OPT_GROUPS 256 /* work-groups of the partial sums: KD_GRAD_PARTIALS */

kd_status kd_grad_check(const kd_tensor *g, const kd_tensor *loss, kd_tensor *partials,
                        kd_tensor *stats) {
    const char *op = "gradient check";
    if (!g) return kd_fail(KD_ERR_INVALID_ARG, "%s: gradient is NULL", op);
    kd_status st = kd_check_numel(op, "partials", partials, KD_GRAD_PARTIALS);
    if (!st) st = kd_check_numel(op, "stats", stats, 2);
    if (!st && loss) st = kd_check_numel(op, "loss", loss, 1);
    if (st) return st;
    int n = (int)kd_tensor_numel(g);
    size_t g1 = (size_t)OPT_WG * OPT_GROUPS, l1 = OPT_WG, one = 1;
    /* no loss: the kernel reads no loss value (index -1) from a buffer it is given */
    const kd_tensor *lt = loss ? loss : stats;
    st = kd_rt_launch(g->dev, "kd_sumsq_partials", 1, &g1, &l1,
                      KD_ARGS(KD_T(g), KD_INT(n), KD_T(partials)));
    if (!st)
        st = kd_rt_launch(g->dev, "kd_sumsq_finalize", 1, &one, NULL,
                          KD_ARGS(KD_T(partials), KD_INT(OPT_GROUPS), KD_MEM(lt->mem),
                                  KD_INT(loss ? (int)lt->off : -1), KD_T(stats)));
    return kd_op_fail(st, op, g);
}

/* p, g and the state tensors hold one count of values; stats is 2 floats. */
static kd_status check_update(const char *op, const kd_tensor *p, const kd_tensor *const *others,
                              const char *const *names, int n, const kd_tensor *stats) {
    if (!p) return kd_fail(KD_ERR_INVALID_ARG, "%s: parameters are NULL", op);
    kd_status st = kd_check_numel(op, "stats", stats, 2);
    for (int i = 0; i < n && !st; i++) st = kd_check_numel(op, names[i], others[i], kd_tensor_numel(p));
    return st;
}

kd_status kd_adam_update(const kd_adam_params *h, kd_tensor *p, const kd_tensor *g,
                         kd_tensor *m, kd_tensor *v, kd_tensor *vmax, const kd_tensor *stats) {
    const char *op = "adam";
    const kd_tensor *others[] = {g, m, v, vmax};
    static const char *const names[] = {"gradient", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    kd_status st = check_update(op, p, others, names, 4, stats);
    if (st) return st;
    if (h->step < 1) return kd_fail(KD_ERR_INVALID_ARG, "%s: step %ld (counts from 1)", op, h->step);
    int n = (int)kd_tensor_numel(p);
    size_t gn = (size_t)n;
    float bc1 = 1.0f - powf(h->beta1, (float)h->step);
    float bc2 = sqrtf(1.0f - powf(h->beta2, (float)h->step));
    st = kd_rt_launch(p->dev, "kd_adam_amsgrad", 1, &gn, NULL,
                      KD_ARGS(KD_T(p), KD_T(g), KD_T(m), KD_T(v), KD_T(vmax), KD_INT(n),
                              KD_FLOAT(h->lr), KD_FLOAT(h->beta1), KD_FLOAT(h->beta2),
                              KD_FLOAT(h->eps), KD_FLOAT(h->weight_decay), KD_FLOAT(bc1),
                              KD_FLOAT(bc2), KD_T(stats)));
    return kd_op_fail(st, op, p);
}

kd_status kd_sgd_update(float lr, float momentum, float weight_decay, int first, kd_tensor *p,
                        const kd_tensor *g, kd_tensor *buf, const kd_tensor *stats) {
    const char *op = "sgd";
    const kd_tensor *others[] = {g, buf};
    static const char *const names[] = {"gradient", "momentum_buffer"};
    kd_status st = check_update(op, p, others, names, 2, stats);
    if (st) return st;
    int n = (int)kd_tensor_numel(p);
    size_t gn = (size_t)n;
    st = kd_rt_launch(p->dev, "kd_sgd_nesterov", 1, &gn, NULL,
                      KD_ARGS(KD_T(p), KD_T(g), KD_T(buf), KD_INT(n), KD_FLOAT(lr),
                              KD_FLOAT(momentum), KD_FLOAT(weight_decay), KD_INT(first != 0),
                              KD_T(stats)));
    return kd_op_fail(st, op, p);
}
