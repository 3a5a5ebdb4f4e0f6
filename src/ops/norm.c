/* GroupNorm, fused GroupNorm + LeakyReLU, BatchNorm3d: host dispatch (cl/norm.cl).
 *
 * GroupNorm and BatchNorm share the kernels: a statistic covers nn batch items and
 * cg channels (GroupNorm: one item, C/G channels; BatchNorm: all items, one
 * channel). Forward: partial (mean, M2) per (n, chunk, channel), a fixed-order
 * Chan merge per statistic, then one normalise (+activate) pass. Backward: partial
 * sums of d*xhat and d per (n, chunk, channel), a fixed tree per (n, channel), the
 * per-statistic coefficients (and dgamma/dbeta +=), then one dx pass. */
#include "layers_impl.h"

/* What one normalisation call covers (see cl/norm.cl). */
typedef struct norm_geom {
    int N, S, C;
    int G, cg, nn, sn; /* G statistics per batch slice of nn items, cg channels each */
    int nstat;
} norm_geom;

static norm_geom geom_group(kd_shape s, int groups) {
    norm_geom g = {s.n, kd_vox(s), s.c, groups, s.c / groups, 1, groups, s.n * groups};
    return g;
}

static norm_geom geom_batch(kd_shape s) {
    norm_geom g = {s.n, kd_vox(s), s.c, s.c, 1, s.n, 0, s.c};
    return g;
}

static kd_status check_vec(const char *op, const char *what, const kd_tensor *v, size_t n,
                           kd_shape xs) {
    char b[96];
    if (!v) return kd_fail(KD_ERR_INVALID_ARG, "%s: %s is NULL (x %s)", op, what, KD_SHP(b, xs));
    if (kd_tensor_numel(v) != n)
        return kd_fail(KD_ERR_SHAPE, "%s: x %s but %s has %zu elements (expected %zu)", op,
                       KD_SHP(b, xs), what, kd_tensor_numel(v), n);
    return KD_OK;
}

static kd_status check_groups(const char *op, kd_shape xs, int groups) {
    char b[96];
    if (groups <= 0 || xs.c % groups != 0)
        return kd_fail(KD_ERR_SHAPE, "%s: x %s has C=%d channels, not divisible into %d groups",
                       op, KD_SHP(b, xs), xs.c, groups);
    return KD_OK;
}

/* Statistics into (mean, rstd) and, when update, the running stats. */
static kd_status norm_stats(kd_device *dev, const norm_geom *g, const kd_tensor *x, float eps,
                            cl_mem mean, size_t moff, cl_mem rstd, size_t roff,
                            const kd_tensor *rmean, const kd_tensor *rvar, float momentum) {
    kd_chunks k;
    kd_chunks_init(&k, g->N, g->S, g->C);
    size_t np = (size_t)g->N * k.nch * g->C * 2;
    cl_mem part;
    kd_status st = kd_scratch(dev, np, &part);
    if (st) return st;
    st = kd_rt_launch(dev, "kd_norm_stats_partial", 3, k.gws, k.lws,
                      KD_ARGS(KD_T(x), KD_MEM(part), KD_INT(0), KD_INT(g->S), KD_INT(g->C),
                              KD_INT(k.chunk), KD_INT(k.nch)));
    if (!st) {
        int update = rmean != NULL;
        cl_mem rm = update ? rmean->mem : mean, rv = update ? rvar->mem : rstd;
        size_t rmo = update ? rmean->off : moff, rvo = update ? rvar->off : roff;
        size_t gw = (size_t)g->nstat * KD_REDUCE_WG, lw = KD_REDUCE_WG;
        st = kd_rt_launch(dev, "kd_norm_stats_final", 1, &gw, &lw,
                          KD_ARGS(KD_MEM(part), KD_INT(0), KD_MEM(mean), KD_INT(moff),
                                  KD_MEM(rstd), KD_INT(roff), KD_MEM(rm), KD_INT(rmo),
                                  KD_MEM(rv), KD_INT(rvo), KD_INT(g->S), KD_INT(g->C),
                                  KD_INT(k.chunk), KD_INT(k.nch), KD_INT(g->G), KD_INT(g->cg),
                                  KD_INT(g->nn), KD_FLOAT(eps), KD_INT(update),
                                  KD_FLOAT(momentum)));
    }
    kd_scratch_free(dev, part, np);
    return st;
}

static kd_status norm_apply(kd_device *dev, const norm_geom *g, const kd_tensor *x,
                            const kd_tensor *gamma, const kd_tensor *beta, cl_mem mean,
                            size_t moff, cl_mem rstd, size_t roff, int act, float slope,
                            const kd_tensor *res, kd_tensor *y) {
    kd_chunks k;
    kd_chunks_init(&k, g->N, g->S, g->C);
    const kd_tensor *r = res ? res : x; /* a valid buffer, not read without res */
    return kd_rt_launch(dev, "kd_norm_apply", 3, k.gws, k.lws,
                        KD_ARGS(KD_T(x), KD_T(y), KD_T(gamma), KD_T(beta), KD_MEM(mean),
                                KD_INT(moff), KD_MEM(rstd), KD_INT(roff), KD_INT(g->S),
                                KD_INT(g->C), KD_INT(k.chunk), KD_INT(k.nch), KD_INT(g->cg),
                                KD_INT(g->sn), KD_INT(act), KD_FLOAT(slope), KD_T(r),
                                KD_INT(res != NULL)));
}

static kd_status norm_backward(kd_device *dev, const norm_geom *g, const kd_tensor *dy,
                               const kd_tensor *x, const kd_tensor *gamma,
                               const kd_tensor *beta, const kd_tensor *mean,
                               const kd_tensor *rstd, int act, float slope, kd_tensor *dx,
                               kd_tensor *dgamma, kd_tensor *dbeta) {
    kd_chunks k;
    kd_chunks_init(&k, g->N, g->S, g->C);
    /* pab: the partials of A (N, nch, C) then of B, reduced in one launch as 2N items */
    size_t np = (size_t)g->N * k.nch * g->C, nab = (size_t)g->N * g->C * 2,
           nco = (size_t)g->nstat * 2;
    cl_mem pab = NULL, ab = NULL, coef = NULL;
    kd_status st = kd_scratch(dev, 2 * np, &pab);
    if (!st) st = kd_scratch(dev, nab, &ab);
    if (!st) st = kd_scratch(dev, nco, &coef);
    if (!st)
        st = kd_rt_launch(
            dev, "kd_norm_bwd_partial", 3, k.gws, k.lws,
            KD_ARGS(KD_T(dy), KD_T(x), KD_T(gamma), KD_T(beta), KD_T(mean), KD_T(rstd),
                    KD_MEM(pab), KD_INT(0), KD_MEM(pab), KD_INT(np), KD_INT(g->S), KD_INT(g->C),
                    KD_INT(k.chunk), KD_INT(k.nch), KD_INT(g->cg), KD_INT(g->sn), KD_INT(act),
                    KD_FLOAT(slope)));
    if (!st)
        st = kd_launch_1d(dev, "kd_chsum_reduce", nab,
                          KD_ARGS(KD_MEM(pab), KD_INT(0), KD_MEM(ab), KD_INT(0), KD_INT(g->C),
                                  KD_INT(k.nch), KD_FLOAT(1.0f), KD_INT(nab)));
    if (!st) {
        /* ab holds A (N, C) then B (N, C) */
        int with_dg = dgamma != NULL;
        cl_mem dgm = with_dg ? dgamma->mem : coef, dbm = with_dg ? dbeta->mem : coef;
        size_t gf = (size_t)(g->C > g->nstat ? g->C : g->nstat), lf = 64;
        st = kd_rt_launch(dev, "kd_norm_bwd_final", 1, &gf, &lf,
                          KD_ARGS(KD_MEM(ab), KD_INT(0), KD_MEM(ab), KD_INT(g->N * g->C),
                                  KD_T(gamma), KD_MEM(dgm),
                                  KD_INT(with_dg ? dgamma->off : 0),
                                  KD_MEM(dbm),
                                  KD_INT(with_dg ? dbeta->off : 0), KD_INT(with_dg),
                                  KD_MEM(coef), KD_INT(0), KD_INT(g->N), KD_INT(g->C),
                                  KD_INT(g->S), KD_INT(g->G), KD_INT(g->cg), KD_INT(g->nn),
                                  KD_INT(g->nstat)));
    }
    if (!st)
        st = kd_rt_launch(dev, "kd_norm_bwd_dx", 3, k.gws, k.lws,
                          KD_ARGS(KD_T(dy), KD_T(x), KD_T(gamma), KD_T(beta), KD_T(mean),
                                  KD_T(rstd), KD_MEM(coef), KD_INT(0), KD_T(dx), KD_INT(g->S),
                                  KD_INT(g->C), KD_INT(k.chunk), KD_INT(k.nch), KD_INT(g->cg),
                                  KD_INT(g->sn), KD_INT(act), KD_FLOAT(slope)));
    kd_scratch_free(dev, pab, 2 * np);
    kd_scratch_free(dev, ab, nab);
    kd_scratch_free(dev, coef, nco);
    return st;
}

/* ---- GroupNorm ------------------------------------------------------------------- */

static kd_status gn_check_fwd(const char *op, const kd_tensor *x, const kd_tensor *gamma,
                              const kd_tensor *beta, int groups, const kd_tensor *y,
                              const kd_tensor *mean, const kd_tensor *rstd) {
    if (!x) return kd_fail(KD_ERR_INVALID_ARG, "%s: x is NULL", op);
    kd_shape s = x->shape;
    kd_status st = check_groups(op, s, groups);
    if (!st) st = kd_check_same(op, "x", x, "y", y);
    if (!st) st = check_vec(op, "gamma", gamma, (size_t)s.c, s);
    if (!st) st = check_vec(op, "beta", beta, (size_t)s.c, s);
    if (!st) st = check_vec(op, "mean", mean, (size_t)s.n * groups, s);
    if (!st) st = check_vec(op, "rstd", rstd, (size_t)s.n * groups, s);
    return st;
}

static kd_status gn_check_bwd(const char *op, const kd_tensor *dy, const kd_tensor *x,
                              const kd_tensor *gamma, const kd_tensor *beta,
                              const kd_tensor *mean, const kd_tensor *rstd, int groups,
                              kd_tensor *dx, kd_tensor *dgamma, kd_tensor *dbeta) {
    if (!x) return kd_fail(KD_ERR_INVALID_ARG, "%s: x is NULL", op);
    kd_shape s = x->shape;
    kd_status st = check_groups(op, s, groups);
    if (!st) st = kd_check_same(op, "x", x, "dy", dy);
    if (!st) st = kd_check_same(op, "x", x, "dx", dx);
    if (!st) st = check_vec(op, "gamma", gamma, (size_t)s.c, s);
    if (!st) st = check_vec(op, "beta", beta, (size_t)s.c, s);
    if (!st) st = check_vec(op, "mean", mean, (size_t)s.n * groups, s);
    if (!st) st = check_vec(op, "rstd", rstd, (size_t)s.n * groups, s);
    if (!st && (!dgamma) != (!dbeta))
        st = kd_fail(KD_ERR_INVALID_ARG, "%s: dgamma and dbeta must both be given or both NULL",
                     op);
    if (!st && dgamma) st = check_vec(op, "dgamma", dgamma, (size_t)s.c, s);
    if (!st && dbeta) st = check_vec(op, "dbeta", dbeta, (size_t)s.c, s);
    return st;
}

static kd_status gn_forward(const char *op, const kd_tensor *x, const kd_tensor *gamma,
                            const kd_tensor *beta, int groups, float eps, int act, float slope,
                            const kd_tensor *res, kd_tensor *y, kd_tensor *mean,
                            kd_tensor *rstd) {
    kd_status st = gn_check_fwd(op, x, gamma, beta, groups, y, mean, rstd);
    if (st) return st;
    norm_geom g = geom_group(x->shape, groups);
    st = norm_stats(x->dev, &g, x, eps, mean->mem, mean->off, rstd->mem, rstd->off, NULL, NULL,
                    0.0f);
    if (!st)
        st = norm_apply(x->dev, &g, x, gamma, beta, mean->mem, mean->off, rstd->mem, rstd->off,
                        act, slope, res, y);
    return kd_op_fail(st, op, x);
}

kd_status kd_groupnorm_forward(const kd_tensor *x, const kd_tensor *gamma,
                               const kd_tensor *beta, int groups, float eps, kd_tensor *y,
                               kd_tensor *mean, kd_tensor *rstd) {
    return gn_forward("groupnorm", x, gamma, beta, groups, eps, 0, 0.0f, NULL, y, mean, rstd);
}

kd_status kd_groupnorm_leaky_forward(const kd_tensor *x, const kd_tensor *gamma,
                                     const kd_tensor *beta, int groups, float eps, float slope,
                                     kd_tensor *y, kd_tensor *mean, kd_tensor *rstd) {
    return gn_forward("groupnorm_leaky", x, gamma, beta, groups, eps, 1, slope, NULL, y, mean,
                      rstd);
}

kd_status kd_groupnorm_leaky_add_forward(const kd_tensor *x, const kd_tensor *gamma,
                                         const kd_tensor *beta, int groups, float eps,
                                         float slope, const kd_tensor *r, kd_tensor *y,
                                         kd_tensor *mean, kd_tensor *rstd) {
    const char *op = "groupnorm_leaky_add";
    if (!r) return kd_fail(KD_ERR_INVALID_ARG, "%s: the residual r is NULL", op);
    kd_status st = kd_check_same(op, "r", r, "y", y);
    if (st) return st;
    /* r is read where y is written: the same buffer is fine, an overlap at an offset not */
    if (r != y && r->mem == y->mem && r->off < y->off + kd_tensor_numel(y) &&
        y->off < r->off + kd_tensor_numel(r))
        return kd_fail(KD_ERR_INVALID_ARG, "%s: r and y overlap without being the same tensor",
                       op);
    return gn_forward(op, x, gamma, beta, groups, eps, 1, slope, r, y, mean, rstd);
}

kd_status kd_groupnorm_apply(const kd_tensor *x, const kd_tensor *gamma, const kd_tensor *beta,
                             const kd_tensor *mean, const kd_tensor *rstd, int groups, int leaky,
                             float slope, kd_tensor *y) {
    const char *op = leaky ? "groupnorm_leaky apply" : "groupnorm apply";
    kd_status st = gn_check_fwd(op, x, gamma, beta, groups, y, mean, rstd);
    if (st) return st;
    norm_geom g = geom_group(x->shape, groups);
    st = norm_apply(x->dev, &g, x, gamma, beta, mean->mem, mean->off, rstd->mem, rstd->off,
                    leaky != 0, slope, NULL, y);
    return st ? kd_fail_context(st, "%s", op) : KD_OK;
}

kd_status kd_groupnorm_backward(const kd_tensor *dy, const kd_tensor *x,
                                const kd_tensor *gamma, const kd_tensor *mean,
                                const kd_tensor *rstd, int groups, kd_tensor *dx,
                                kd_tensor *dgamma, kd_tensor *dbeta) {
    /* beta is not needed without the activation: gamma stands in for it */
    kd_status st = gn_check_bwd("groupnorm backward", dy, x, gamma, gamma, mean, rstd, groups,
                                dx, dgamma, dbeta);
    if (st) return st;
    norm_geom g = geom_group(x->shape, groups);
    st = norm_backward(x->dev, &g, dy, x, gamma, gamma, mean, rstd, 0, 0.0f, dx, dgamma, dbeta);
    return kd_op_fail(st, "groupnorm backward", x);
}

kd_status kd_groupnorm_leaky_backward(const kd_tensor *dy, const kd_tensor *x,
                                      const kd_tensor *gamma, const kd_tensor *beta,
                                      const kd_tensor *mean, const kd_tensor *rstd, int groups,
                                      float slope, kd_tensor *dx, kd_tensor *dgamma,
                                      kd_tensor *dbeta) {
    kd_status st = gn_check_bwd("groupnorm_leaky backward", dy, x, gamma, beta, mean, rstd,
                                groups, dx, dgamma, dbeta);
    if (st) return st;
    norm_geom g = geom_group(x->shape, groups);
    st = norm_backward(x->dev, &g, dy, x, gamma, beta, mean, rstd, 1, slope, dx, dgamma, dbeta);
    return kd_op_fail(st, "groupnorm_leaky backward", x);
}

/* ---- BatchNorm ------------------------------------------------------------------- */

kd_status kd_batchnorm_forward(const kd_tensor *x, const kd_tensor *gamma,
                               const kd_tensor *beta, kd_tensor *running_mean,
                               kd_tensor *running_var, int training, float momentum,
                               float eps, kd_tensor *y, kd_tensor *mean, kd_tensor *rstd) {
    const char *op = "batchnorm";
    if (!x) return kd_fail(KD_ERR_INVALID_ARG, "%s: x is NULL", op);
    kd_shape s = x->shape;
    char b[96];
    kd_status st = kd_check_same(op, "x", x, "y", y);
    if (!st) st = check_vec(op, "gamma", gamma, (size_t)s.c, s);
    if (!st) st = check_vec(op, "beta", beta, (size_t)s.c, s);
    if (!st) st = check_vec(op, "running_mean", running_mean, (size_t)s.c, s);
    if (!st) st = check_vec(op, "running_var", running_var, (size_t)s.c, s);
    if (!st && (training || mean)) st = check_vec(op, "mean", mean, (size_t)s.c, s);
    if (!st && (training || rstd)) st = check_vec(op, "rstd", rstd, (size_t)s.c, s);
    if (!st && training && (size_t)s.n * kd_vox(s) < 2)
        st = kd_fail(KD_ERR_SHAPE, "%s: x %s has one value per channel: no batch variance", op,
                     KD_SHP(b, s));
    if (st) return st;
    norm_geom g = geom_batch(s);
    kd_device *dev = x->dev;
    if (training) {
        st = norm_stats(dev, &g, x, eps, mean->mem, mean->off, rstd->mem, rstd->off,
                        running_mean, running_var, momentum);
        if (!st)
            st = norm_apply(dev, &g, x, gamma, beta, mean->mem, mean->off, rstd->mem, rstd->off,
                            0, 0.0f, NULL, y);
        return kd_op_fail(st, op, x);
    }
    /* inference: (mean, rstd) from the running stats, into the given tensors or scratch */
    cl_mem sm = NULL;
    size_t ns = (size_t)s.c * 2;
    if (!mean || !rstd) {
        st = kd_scratch(dev, ns, &sm);
        if (st) return kd_op_fail(st, op, x);
    }
    cl_mem mm = mean ? mean->mem : sm, rm = rstd ? rstd->mem : sm;
    size_t mo = mean ? mean->off : 0, ro = rstd ? rstd->off : (size_t)s.c;
    size_t gw = (size_t)s.c, lw = 64;
    st = kd_rt_launch(dev, "kd_norm_running_stats", 1, &gw, &lw,
                      KD_ARGS(KD_T(running_mean), KD_T(running_var), KD_MEM(mm), KD_INT(mo),
                              KD_MEM(rm), KD_INT(ro), KD_INT(s.c), KD_FLOAT(eps)));
    if (!st) st = norm_apply(dev, &g, x, gamma, beta, mm, mo, rm, ro, 0, 0.0f, NULL, y);
    kd_scratch_free(dev, sm, ns);
    return kd_op_fail(st, op, x);
}

kd_status kd_batchnorm_backward(const kd_tensor *dy, const kd_tensor *x,
                                const kd_tensor *gamma, const kd_tensor *mean,
                                const kd_tensor *rstd, kd_tensor *dx, kd_tensor *dgamma,
                                kd_tensor *dbeta) {
    const char *op = "batchnorm backward";
    if (!x) return kd_fail(KD_ERR_INVALID_ARG, "%s: x is NULL", op);
    kd_shape s = x->shape;
    kd_status st = kd_check_same(op, "x", x, "dy", dy);
    if (!st) st = kd_check_same(op, "x", x, "dx", dx);
    if (!st) st = check_vec(op, "gamma", gamma, (size_t)s.c, s);
    if (!st) st = check_vec(op, "mean", mean, (size_t)s.c, s);
    if (!st) st = check_vec(op, "rstd", rstd, (size_t)s.c, s);
    if (!st && (!dgamma) != (!dbeta))
        st = kd_fail(KD_ERR_INVALID_ARG, "%s: dgamma and dbeta must both be given or both NULL",
                     op);
    if (!st && dgamma) st = check_vec(op, "dgamma", dgamma, (size_t)s.c, s);
    if (!st && dbeta) st = check_vec(op, "dbeta", dbeta, (size_t)s.c, s);
    if (st) return st;
    norm_geom g = geom_batch(s);
    st = norm_backward(x->dev, &g, dy, x, gamma, gamma, mean, rstd, 0, 0.0f, dx, dgamma, dbeta);
    return kd_op_fail(st, op, x);
}
