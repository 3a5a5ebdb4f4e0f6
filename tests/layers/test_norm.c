/* GroupNorm, fused GroupNorm + LeakyReLU and BatchNorm3d: OpenCL against the C
 * reference, the reference backward against finite differences in double,
 * fused against chained, determinism, accumulation of dgamma/dbeta, and
 * numerical soundness of the statistics on data far from zero. */
#include "layers_util.h"

typedef struct gn_case {
    kd_shape s;
    int G;
} gn_case;

/* Awkward shapes: odd sizes, C not a multiple of 4, G = C (InstanceNorm),
 * groups of 3 channels (straddling float4 lanes), batch 2. */
static const gn_case gn_cases[] = {
    {{1, 16, 7, 9, 11}, 8}, {{2, 12, 5, 6, 7}, 3}, {{2, 5, 5, 6, 7}, 5},
    {{1, 24, 5, 6, 7}, 8},  {{2, 32, 3, 4, 5}, 32}, {{1, 3, 7, 9, 11}, 1},
    {{2, 16, 9, 9, 9}, 8},
};
#define NGN (int)(sizeof gn_cases / sizeof gn_cases[0])

/* Tolerances relative to the largest magnitude of the reference result: float
 * kernels against double-accumulated references. */
#define TOL_FWD 2e-5
#define TOL_BWD 1e-4

/* One GroupNorm (act = 0) or fused GroupNorm + LeakyReLU (act = 1) forward and
 * backward on the device against the reference. */
static int gn_device_vs_ref(kd_device *d, const gn_case *c, int act, unsigned seed) {
    kd_shape s = c->s;
    size_t n = kd_shape_numel(s), C = (size_t)s.c, ng = (size_t)s.n * c->G;
    float slope = 0.01f, eps = 1e-5f;
    float *x = frand(n, seed, -2.0f, 3.0f), *dy = frand(n, seed + 1, -1.0f, 1.0f);
    float *gamma = frand(C, seed + 2, 0.5f, 1.5f), *beta = frand(C, seed + 3, -0.5f, 0.5f);
    float *dg0 = frand(C, seed + 4, -1.0f, 1.0f), *db0 = frand(C, seed + 5, -1.0f, 1.0f);
    float *y = malloc(n * 4), *dx = malloc(n * 4), *mean = malloc(ng * 4), *rstd = malloc(ng * 4);
    float *dg = malloc(C * 4), *db = malloc(C * 4);
    memcpy(dg, dg0, C * 4);
    memcpy(db, db0, C * 4);
    if (act) {
        kd_ref_groupnorm_leaky_forward(x, s, gamma, beta, c->G, eps, slope, y, mean, rstd);
        kd_ref_groupnorm_leaky_backward(dy, x, s, gamma, beta, mean, rstd, c->G, slope, dx, dg,
                                        db);
    } else {
        kd_ref_groupnorm_forward(x, s, gamma, beta, c->G, eps, y, mean, rstd);
        kd_ref_groupnorm_backward(dy, x, s, gamma, mean, rstd, c->G, dx, dg, db);
    }
    kd_shape vs = kd_shape5(1, (int)C, 1, 1, 1), gs = kd_shape5(1, (int)ng, 1, 1, 1);
    dt X, DY, Y, DX, G, B, M, R, DG, DB;
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, dy, &DY) || dt_new(d, s, NULL, &Y) ||
              dt_new(d, s, NULL, &DX) || dt_new(d, vs, gamma, &G) || dt_new(d, vs, beta, &B) ||
              dt_new(d, gs, NULL, &M) || dt_new(d, gs, NULL, &R) || dt_new(d, vs, dg0, &DG) ||
              dt_new(d, vs, db0, &DB);
    KD_CHECK(!bad, "setup");
    if (act) {
        KD_CHECK_OK(kd_groupnorm_leaky_forward(X.t, G.t, B.t, c->G, eps, slope, Y.t, M.t, R.t));
        KD_CHECK_OK(kd_groupnorm_leaky_backward(DY.t, X.t, G.t, B.t, M.t, R.t, c->G, slope,
                                                DX.t, DG.t, DB.t));
    } else {
        KD_CHECK_OK(kd_groupnorm_forward(X.t, G.t, B.t, c->G, eps, Y.t, M.t, R.t));
        KD_CHECK_OK(kd_groupnorm_backward(DY.t, X.t, G.t, M.t, R.t, c->G, DX.t, DG.t, DB.t));
    }
    char what[160], sb[96];
    snprintf(what, sizeof what, "%s %s G=%d", act ? "groupnorm_leaky" : "groupnorm",
             kd_shape_str(s, sb, sizeof sb), c->G);
    bad = dt_close(&Y, y, TOL_FWD, what) || dt_close(&M, mean, TOL_FWD, what) ||
          dt_close(&R, rstd, TOL_FWD, what) || dt_close(&DX, dx, TOL_BWD, what) ||
          dt_close(&DG, dg, TOL_BWD, what) || dt_close(&DB, db, TOL_BWD, what);
    dt *all[] = {&X, &DY, &Y, &DX, &G, &B, &M, &R, &DG, &DB};
    for (int i = 0; i < 10; i++) dt_free(all[i]);
    free(x), free(dy), free(gamma), free(beta), free(dg0), free(db0), free(y), free(dx);
    free(mean), free(rstd), free(dg), free(db);
    return bad;
}

/* Catches: wrong group/channel indexing (groups of 3 straddling float4 lanes, G = C),
 * a dropped chunk or batch item in the statistics, ignored tensor offsets, wrong
 * dx formula or missing dgamma/dbeta accumulation (+=) onto non-zero gradients. */
static int gn_forward_backward(void) {
    KD_DEVICE_OR_FAIL(d);
    for (int i = 0; i < NGN; i++)
        if (gn_device_vs_ref(d, &gn_cases[i], 0, 10u + i)) return 1;
    return 0;
}

/* Catches: the fused kernel's activation or its derivative (recomputed z) wrong. */
static int gn_leaky_forward_backward(void) {
    KD_DEVICE_OR_FAIL(d);
    for (int i = 0; i < NGN; i++)
        if (gn_device_vs_ref(d, &gn_cases[i], 1, 30u + i)) return 1;
    return 0;
}

/* ---- finite differences of the reference in double --------------------------------- */

typedef struct gn_fd {
    kd_shape s;
    int G, act, bn;
    double *x, *gamma, *beta, *r, *y, *mean, *rstd, *rm, *rv;
} gn_fd;

static double gn_loss(void *p) {
    gn_fd *c = p;
    size_t n = kd_shape_numel(c->s);
    if (c->bn) {
        for (int i = 0; i < c->s.c; i++) c->rm[i] = 0, c->rv[i] = 1;
        kd_ref_batchnorm_forward_d(c->x, c->s, c->gamma, c->beta, c->rm, c->rv, 1, 0.1, 1e-5,
                                   c->y, c->mean, c->rstd);
    } else if (c->act)
        kd_ref_groupnorm_leaky_forward_d(c->x, c->s, c->gamma, c->beta, c->G, 1e-5, 0.1, c->y,
                                         c->mean, c->rstd);
    else
        kd_ref_groupnorm_forward_d(c->x, c->s, c->gamma, c->beta, c->G, 1e-5, c->y, c->mean,
                                   c->rstd);
    return dot_d(c->r, c->y, n);
}

static int norm_fd_case(kd_shape s, int G, int act, int bn, unsigned seed) {
    size_t n = kd_shape_numel(s), C = (size_t)s.c;
    float *xf = frand(n, seed, -2, 2), *rf = frand(n, seed + 1, -1, 1);
    float *gf = frand(C, seed + 2, 0.5f, 1.5f), *bf = frand(C, seed + 3, -0.5f, 0.5f);
    gn_fd c = {s, G, act, bn, to_d(xf, n), to_d(gf, C), to_d(bf, C), to_d(rf, n),
               calloc(n, 8), calloc(n, 8), calloc(n, 8), calloc(C, 8), calloc(C, 8)};
    double *dx = calloc(n, 8), *dg = calloc(C, 8), *db = calloc(C, 8);
    gn_loss(&c); /* saved statistics at the unperturbed point */
    if (bn)
        kd_ref_batchnorm_backward_d(c.r, c.x, s, c.gamma, c.mean, c.rstd, dx, dg, db);
    else if (act)
        kd_ref_groupnorm_leaky_backward_d(c.r, c.x, s, c.gamma, c.beta, c.mean, c.rstd, G, 0.1,
                                          dx, dg, db);
    else
        kd_ref_groupnorm_backward_d(c.r, c.x, s, c.gamma, c.mean, c.rstd, G, dx, dg, db);
    double ex = fd_err(gn_loss, &c, c.x, n, dx, 1e-5);
    double eg = fd_err(gn_loss, &c, c.gamma, C, dg, 1e-5);
    double eb = fd_err(gn_loss, &c, c.beta, C, db, 1e-5);
    free(xf), free(rf), free(gf), free(bf), free(c.x), free(c.gamma), free(c.beta), free(c.r);
    free(c.y), free(c.mean), free(c.rstd), free(c.rm), free(c.rv), free(dx), free(dg), free(db);
    /* central differences with h = 1e-5 in double: truncation and rounding ~1e-9 */
    KD_CHECK(ex < 1e-6 && eg < 1e-6 && eb < 1e-6, "G=%d act=%d bn=%d: dx %.3g dgamma %.3g dbeta %.3g",
             G, act, bn, ex, eg, eb);
    return 0;
}

/* Catches: a wrong reference backward formula (mean terms, xhat term, sum over the
 * wrong set for a group, the leaky derivative), which the device would then copy. */
static int norm_fd(void) {
    kd_shape s = kd_shape5(2, 6, 2, 3, 3);
    if (norm_fd_case(s, 3, 0, 0, 1)) return 1;
    if (norm_fd_case(s, 6, 0, 0, 2)) return 1;
    if (norm_fd_case(s, 2, 1, 0, 3)) return 1;
    if (norm_fd_case(s, 0, 0, 1, 4)) return 1;
    return 0;
}

/* Catches: the fused op differing from GroupNorm followed by LeakyReLU on the
 * device (forward bit-for-bit, backward within rounding). */
static int gn_fused_equals_chained(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape s = kd_shape5(2, 24, 5, 6, 7);
    int G = 8;
    size_t n = kd_shape_numel(s), C = 24, ng = 16;
    float slope = 0.01f;
    float *x = frand(n, 7, -2, 2), *dy = frand(n, 8, -1, 1), *g = frand(C, 9, 0.5f, 1.5f),
          *b = frand(C, 10, -0.5f, 0.5f);
    kd_shape vs = kd_shape5(1, 24, 1, 1, 1), gs = kd_shape5(1, 16, 1, 1, 1);
    dt X, DY, G_, B, Y1, Y2, Z, M, R, DX1, DX2, DZ, DG1, DB1, DG2, DB2;
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, dy, &DY) || dt_new(d, vs, g, &G_) ||
              dt_new(d, vs, b, &B) || dt_new(d, s, NULL, &Y1) || dt_new(d, s, NULL, &Y2) ||
              dt_new(d, s, NULL, &Z) || dt_new(d, gs, NULL, &M) || dt_new(d, gs, NULL, &R) ||
              dt_new(d, s, NULL, &DX1) || dt_new(d, s, NULL, &DX2) || dt_new(d, s, NULL, &DZ) ||
              dt_new(d, vs, NULL, &DG1) || dt_new(d, vs, NULL, &DB1) ||
              dt_new(d, vs, NULL, &DG2) || dt_new(d, vs, NULL, &DB2);
    KD_CHECK(!bad, "setup");
    (void)ng;
    dt *zero[] = {&DG1, &DB1, &DG2, &DB2};
    for (int i = 0; i < 4; i++) KD_CHECK_OK(kd_tensor_fill(zero[i]->t, 0.0f));
    KD_CHECK_OK(kd_groupnorm_leaky_forward(X.t, G_.t, B.t, G, 1e-5f, slope, Y1.t, M.t, R.t));
    KD_CHECK_OK(kd_groupnorm_leaky_backward(DY.t, X.t, G_.t, B.t, M.t, R.t, G, slope, DX1.t,
                                            DG1.t, DB1.t));
    KD_CHECK_OK(kd_groupnorm_forward(X.t, G_.t, B.t, G, 1e-5f, Z.t, M.t, R.t));
    KD_CHECK_OK(kd_leaky_forward(Z.t, slope, Y2.t));
    KD_CHECK_OK(kd_leaky_backward(DY.t, Z.t, slope, DZ.t));
    KD_CHECK_OK(kd_groupnorm_backward(DZ.t, X.t, G_.t, M.t, R.t, G, DX2.t, DG2.t, DB2.t));
    bad = dt_same_bits(&Y1, &Y2, "fused vs chained forward");
    float *h2 = malloc(n * 4), *c2 = malloc(C * 4);
    bad = bad || dt_get(&DX2, h2, "chained dx") || dt_close(&DX1, h2, 1e-5, "fused vs chained dx") ||
          dt_get(&DG2, c2, "dg") || dt_close(&DG1, c2, 1e-5, "fused vs chained dgamma") ||
          dt_get(&DB2, c2, "db") || dt_close(&DB1, c2, 1e-5, "fused vs chained dbeta");
    dt *all[] = {&X, &DY, &G_, &B, &Y1, &Y2, &Z, &M, &R, &DX1, &DX2, &DZ, &DG1, &DB1, &DG2, &DB2};
    for (int i = 0; i < 16; i++) dt_free(all[i]);
    free(x), free(dy), free(g), free(b), free(h2), free(c2);
    return bad;
}

/* Catches: float atomics or any order-dependent reduction (results would change
 * between two identical calls), and dgamma/dbeta overwritten instead of accumulated. */
static int gn_determinism_accumulate(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape s = kd_shape5(2, 16, 12, 13, 14);
    size_t n = kd_shape_numel(s), C = 16;
    float *x = frand(n, 11, -2, 2), *dy = frand(n, 12, -1, 1), *g = frand(C, 13, 0.5f, 1.5f),
          *b = frand(C, 14, -0.5f, 0.5f);
    kd_shape vs = kd_shape5(1, 16, 1, 1, 1), gs = kd_shape5(1, 16, 1, 1, 1);
    dt X, DY, G_, B, Y[2], M, R, DX[2], DG[2], DB[2];
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, dy, &DY) || dt_new(d, vs, g, &G_) ||
              dt_new(d, vs, b, &B) || dt_new(d, gs, NULL, &M) || dt_new(d, gs, NULL, &R);
    for (int k = 0; k < 2; k++)
        bad = bad || dt_new(d, s, NULL, &Y[k]) || dt_new(d, s, NULL, &DX[k]) ||
              dt_new(d, vs, NULL, &DG[k]) || dt_new(d, vs, NULL, &DB[k]);
    KD_CHECK(!bad, "setup");
    for (int k = 0; k < 2; k++) {
        KD_CHECK_OK(kd_tensor_fill(DG[k].t, 0.0f));
        KD_CHECK_OK(kd_tensor_fill(DB[k].t, 0.0f));
        KD_CHECK_OK(kd_groupnorm_leaky_forward(X.t, G_.t, B.t, 8, 1e-5f, 0.01f, Y[k].t, M.t, R.t));
        KD_CHECK_OK(kd_groupnorm_leaky_backward(DY.t, X.t, G_.t, B.t, M.t, R.t, 8, 0.01f,
                                                DX[k].t, DG[k].t, DB[k].t));
    }
    bad = dt_same_bits(&Y[0], &Y[1], "forward") || dt_same_bits(&DX[0], &DX[1], "dx") ||
          dt_same_bits(&DG[0], &DG[1], "dgamma") || dt_same_bits(&DB[0], &DB[1], "dbeta");
    /* a second backward into DG[0]/DB[0] must double them */
    float *one = malloc(C * 4), *two = malloc(C * 4);
    bad = bad || dt_get(&DG[0], one, "dgamma");
    if (!bad) {
        KD_CHECK_OK(kd_groupnorm_leaky_backward(DY.t, X.t, G_.t, B.t, M.t, R.t, 8, 0.01f,
                                                DX[1].t, DG[0].t, DB[0].t));
        for (size_t i = 0; i < C; i++) two[i] = 2.0f * one[i];
        bad = dt_close(&DG[0], two, 1e-6, "dgamma after two backward calls (+=)");
    }
    dt_free(&X), dt_free(&DY), dt_free(&G_), dt_free(&B), dt_free(&M), dt_free(&R);
    for (int k = 0; k < 2; k++) dt_free(&Y[k]), dt_free(&DX[k]), dt_free(&DG[k]), dt_free(&DB[k]);
    free(x), free(dy), free(g), free(b), free(one), free(two);
    return bad;
}

/* Catches: statistics computed as E[x^2] - E[x]^2 or long running float sums: on
 * data at 1000 +- 0.5 over 4 chunks of voxels per group those lose most digits
 * of the variance (rstd off by far more than 1e-3). */
static int gn_far_from_zero(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape s = kd_shape5(1, 16, 16, 16, 20);
    size_t n = kd_shape_numel(s), C = 16;
    float *x = frand(n, 21, 999.5f, 1000.5f), *g = frand(C, 22, 1, 1), *b = frand(C, 23, 0, 0);
    float *y = malloc(n * 4), *m = malloc(8 * 4), *r = malloc(8 * 4);
    kd_ref_groupnorm_forward(x, s, g, b, 8, 1e-5f, y, m, r);
    dt X, Y, G_, B, M, R;
    kd_shape vs = kd_shape5(1, 16, 1, 1, 1), gs = kd_shape5(1, 8, 1, 1, 1);
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, NULL, &Y) || dt_new(d, vs, g, &G_) ||
              dt_new(d, vs, b, &B) || dt_new(d, gs, NULL, &M) || dt_new(d, gs, NULL, &R);
    KD_CHECK(!bad, "setup");
    KD_CHECK_OK(kd_groupnorm_forward(X.t, G_.t, B.t, 8, 1e-5f, Y.t, M.t, R.t));
    /* y is O(1): rounding of x itself (1000 in float: 6e-5) bounds the error */
    bad = dt_close(&R, r, 1e-4, "rstd at 1000 +- 0.5") || dt_close(&Y, y, 2e-4, "y at 1000 +- 0.5");
    dt_free(&X), dt_free(&Y), dt_free(&G_), dt_free(&B), dt_free(&M), dt_free(&R);
    free(x), free(g), free(b), free(y), free(m), free(r);
    return bad;
}

/* ---- BatchNorm ----------------------------------------------------------------------- */

static int bn_case(kd_device *d, kd_shape s, int training, unsigned seed) {
    size_t n = kd_shape_numel(s), C = (size_t)s.c;
    float mom = 0.1f, eps = 1e-5f;
    float *x = frand(n, seed, -1, 3), *dy = frand(n, seed + 1, -1, 1);
    float *g = frand(C, seed + 2, 0.5f, 1.5f), *b = frand(C, seed + 3, -0.5f, 0.5f);
    float *rm = frand(C, seed + 4, -0.2f, 0.2f), *rv = frand(C, seed + 5, 0.5f, 2.0f);
    float *dg0 = frand(C, seed + 6, -1, 1), *db0 = frand(C, seed + 7, -1, 1);
    float *y = malloc(n * 4), *dx = malloc(n * 4), *m = malloc(C * 4), *r = malloc(C * 4);
    float *rm2 = malloc(C * 4), *rv2 = malloc(C * 4), *dg = malloc(C * 4), *db = malloc(C * 4);
    memcpy(rm2, rm, C * 4), memcpy(rv2, rv, C * 4), memcpy(dg, dg0, C * 4), memcpy(db, db0, C * 4);
    kd_ref_batchnorm_forward(x, s, g, b, rm2, rv2, training, mom, eps, y, m, r);
    if (training) kd_ref_batchnorm_backward(dy, x, s, g, m, r, dx, dg, db);
    kd_shape vs = kd_shape5(1, (int)C, 1, 1, 1);
    dt X, DY, Y, DX, G_, B, RM, RV, M, R, DG, DB;
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, dy, &DY) || dt_new(d, s, NULL, &Y) ||
              dt_new(d, s, NULL, &DX) || dt_new(d, vs, g, &G_) || dt_new(d, vs, b, &B) ||
              dt_new(d, vs, rm, &RM) || dt_new(d, vs, rv, &RV) || dt_new(d, vs, NULL, &M) ||
              dt_new(d, vs, NULL, &R) || dt_new(d, vs, dg0, &DG) || dt_new(d, vs, db0, &DB);
    KD_CHECK(!bad, "setup");
    char what[160], sb[96];
    snprintf(what, sizeof what, "batchnorm %s %s", training ? "training" : "inference",
             kd_shape_str(s, sb, sizeof sb));
    if (training) {
        KD_CHECK_OK(kd_batchnorm_forward(X.t, G_.t, B.t, RM.t, RV.t, 1, mom, eps, Y.t, M.t, R.t));
        KD_CHECK_OK(kd_batchnorm_backward(DY.t, X.t, G_.t, M.t, R.t, DX.t, DG.t, DB.t));
        bad = dt_close(&Y, y, TOL_FWD, what) || dt_close(&M, m, TOL_FWD, what) ||
              dt_close(&R, r, TOL_FWD, what) || dt_close(&RM, rm2, TOL_FWD, what) ||
              dt_close(&RV, rv2, TOL_FWD, what) || dt_close(&DX, dx, TOL_BWD, what) ||
              dt_close(&DG, dg, TOL_BWD, what) || dt_close(&DB, db, TOL_BWD, what);
    } else {
        KD_CHECK_OK(kd_batchnorm_forward(X.t, G_.t, B.t, RM.t, RV.t, 0, mom, eps, Y.t, NULL, NULL));
        bad = dt_close(&Y, y, TOL_FWD, what) || dt_close(&RM, rm, 1e-12, what) ||
              dt_close(&RV, rv, 1e-12, what);
    }
    dt *all[] = {&X, &DY, &Y, &DX, &G_, &B, &RM, &RV, &M, &R, &DG, &DB};
    for (int i = 0; i < 12; i++) dt_free(all[i]);
    free(x), free(dy), free(g), free(b), free(rm), free(rv), free(dg0), free(db0), free(y);
    free(dx), free(m), free(r), free(rm2), free(rv2), free(dg), free(db);
    return bad;
}

/* Catches: statistics not taken over the batch (N=2), a biased running variance,
 * the momentum applied the wrong way round, inference using batch statistics or
 * touching the running stats, BatchNorm backward summing over the wrong set. */
static int bn_train_infer(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape sh[] = {{2, 5, 5, 6, 7}, {1, 16, 7, 9, 11}, {2, 32, 3, 4, 5}};
    for (int i = 0; i < 3; i++)
        if (bn_case(d, sh[i], 1, 40u + i) || bn_case(d, sh[i], 0, 50u + i)) return 1;
    return 0;
}

/* kd_groupnorm_apply and the in-place backwards the graph relies on, for one shape:
 * apply with the forward's statistics must give the forward's y bit for bit (into a new
 * tensor and over x itself) and the C reference's y; each backward with dx == dy must give
 * the out-of-place dx, dgamma and dbeta bit for bit. act: 0 GroupNorm, 1 fused, 2 BatchNorm
 * (backward only: it has no apply). */
static int apply_inplace_case(kd_device *d, kd_shape s, int G, int act, unsigned seed) {
    size_t n = kd_shape_numel(s), C = (size_t)s.c, ng = act == 2 ? C : (size_t)s.n * G;
    float slope = 0.01f, eps = 1e-5f;
    float *x = frand(n, seed, -2.0f, 3.0f), *dy = frand(n, seed + 1, -1.0f, 1.0f);
    float *gamma = frand(C, seed + 2, 0.5f, 1.5f), *beta = frand(C, seed + 3, -0.5f, 0.5f);
    float *y = malloc(n * 4), *mean = malloc(ng * 4), *rstd = malloc(ng * 4);
    if (act == 1) kd_ref_groupnorm_leaky_forward(x, s, gamma, beta, G, eps, slope, y, mean, rstd);
    else if (act == 0) kd_ref_groupnorm_forward(x, s, gamma, beta, G, eps, y, mean, rstd);
    kd_shape vs = kd_shape5(1, (int)C, 1, 1, 1), gs = kd_shape5(1, (int)ng, 1, 1, 1);
    dt X, XI, Y, Y2, M, R, G_, B, RM, RV, DY, DYI, DX, DG1, DB1, DG2, DB2;
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, x, &XI) || dt_new(d, s, NULL, &Y) ||
              dt_new(d, s, NULL, &Y2) || dt_new(d, gs, NULL, &M) || dt_new(d, gs, NULL, &R) ||
              dt_new(d, vs, gamma, &G_) || dt_new(d, vs, beta, &B) || dt_new(d, vs, NULL, &RM) ||
              dt_new(d, vs, NULL, &RV) || dt_new(d, s, dy, &DY) || dt_new(d, s, dy, &DYI) ||
              dt_new(d, s, NULL, &DX) || dt_new(d, vs, NULL, &DG1) || dt_new(d, vs, NULL, &DB1) ||
              dt_new(d, vs, NULL, &DG2) || dt_new(d, vs, NULL, &DB2);
    KD_CHECK(!bad, "setup");
    dt *zero[] = {&DG1, &DB1, &DG2, &DB2, &RM};
    for (int i = 0; i < 5; i++) KD_CHECK_OK(kd_tensor_fill(zero[i]->t, 0.0f));
    KD_CHECK_OK(kd_tensor_fill(RV.t, 1.0f));
    char what[160], sb[96];
    snprintf(what, sizeof what, "%s %s G=%d",
             act == 2 ? "batchnorm" : act ? "groupnorm_leaky" : "groupnorm",
             kd_shape_str(s, sb, sizeof sb), G);
    if (act == 2) {
        KD_CHECK_OK(kd_batchnorm_forward(X.t, G_.t, B.t, RM.t, RV.t, 1, 0.1f, eps, Y.t, M.t, R.t));
        KD_CHECK_OK(kd_batchnorm_backward(DY.t, X.t, G_.t, M.t, R.t, DX.t, DG1.t, DB1.t));
        KD_CHECK_OK(kd_batchnorm_backward(DYI.t, X.t, G_.t, M.t, R.t, DYI.t, DG2.t, DB2.t));
    } else {
        if (act)
            KD_CHECK_OK(kd_groupnorm_leaky_forward(X.t, G_.t, B.t, G, eps, slope, Y.t, M.t, R.t));
        else
            KD_CHECK_OK(kd_groupnorm_forward(X.t, G_.t, B.t, G, eps, Y.t, M.t, R.t));
        KD_CHECK_OK(kd_groupnorm_apply(X.t, G_.t, B.t, M.t, R.t, G, act, slope, Y2.t));
        KD_CHECK_OK(kd_groupnorm_apply(XI.t, G_.t, B.t, M.t, R.t, G, act, slope, XI.t));
        bad = dt_same_bits(&Y, &Y2, what) || dt_same_bits(&Y, &XI, what) ||
              dt_close(&Y2, y, TOL_FWD, what);
        if (act) {
            KD_CHECK_OK(kd_groupnorm_leaky_backward(DY.t, X.t, G_.t, B.t, M.t, R.t, G, slope,
                                                    DX.t, DG1.t, DB1.t));
            KD_CHECK_OK(kd_groupnorm_leaky_backward(DYI.t, X.t, G_.t, B.t, M.t, R.t, G, slope,
                                                    DYI.t, DG2.t, DB2.t));
        } else {
            KD_CHECK_OK(kd_groupnorm_backward(DY.t, X.t, G_.t, M.t, R.t, G, DX.t, DG1.t, DB1.t));
            KD_CHECK_OK(kd_groupnorm_backward(DYI.t, X.t, G_.t, M.t, R.t, G, DYI.t, DG2.t,
                                              DB2.t));
        }
    }
    bad = bad || dt_same_bits(&DX, &DYI, what) || dt_same_bits(&DG1, &DG2, what) ||
          dt_same_bits(&DB1, &DB2, what);
    dt *all[] = {&X, &XI, &Y, &Y2, &M, &R, &G_, &B, &RM, &RV, &DY, &DYI, &DX, &DG1, &DB1, &DG2, &DB2};
    for (int i = 0; i < 17; i++) dt_free(all[i]);
    free(x), free(dy), free(gamma), free(beta), free(y), free(mean), free(rstd);
    return bad;
}

/* Catches: kd_groupnorm_apply (the graph's recomputation of a norm's output in backward)
 * differing from the forward in any bit (wrong statistics indexing, the activation
 * dropped or applied twice, offsets ignored), failing when y is x, or not matching the C
 * reference; and a norm backward that breaks when dx is written over dy (the graph's
 * in-place backward). Awkward shapes: groups straddling float4 lanes, G = C, batch 2.
 * Bad statistics are refused with the shape named. */
static int gn_apply_inplace(void) {
    KD_DEVICE_OR_FAIL(d);
    for (int i = 0; i < NGN; i++)
        for (int act = 0; act < 2; act++)
            if (apply_inplace_case(d, gn_cases[i].s, gn_cases[i].G, act, 60u + 7 * i + act))
                return 1;
    if (apply_inplace_case(d, kd_shape5(2, 5, 5, 6, 7), 5, 2, 90u) ||
        apply_inplace_case(d, kd_shape5(1, 16, 7, 9, 11), 16, 2, 91u))
        return 1;
    kd_tensor *x, *g, *m;
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 12, 3, 3, 3), &x));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 12, 1, 1, 1), &g));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 3, 1, 1, 1), &m));
    kd_status st = kd_groupnorm_apply(x, g, g, m, m, 4, 1, 0.01f, x);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "mean has 3 elements"), "%s",
             kd_last_error());
    st = kd_groupnorm_apply(x, g, g, m, m, 5, 0, 0.0f, x);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "5 groups"), "%s", kd_last_error());
    kd_tensor_free(x), kd_tensor_free(g), kd_tensor_free(m);
    KD_CHECK_OK(kd_device_finish(d));
    return 0;
}

/* Catches: shape mistakes reaching a kernel instead of a clear error. */
static int norm_bad_shapes(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_tensor *x, *y, *g, *b, *m, *r;
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 12, 3, 3, 3), &x));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 12, 3, 3, 3), &y));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 10, 1, 1, 1), &g));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 12, 1, 1, 1), &b));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 4, 1, 1, 1), &m));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 4, 1, 1, 1), &r));
    kd_status st = kd_groupnorm_forward(x, g, b, 4, 1e-5f, y, m, r);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "gamma has 10 elements"), "%s",
             kd_last_error());
    st = kd_groupnorm_forward(x, b, b, 5, 1e-5f, y, m, r);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "5 groups"), "%s", kd_last_error());
    st = kd_groupnorm_forward(x, b, b, 3, 1e-5f, y, m, r);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "mean"), "%s", kd_last_error());
    st = kd_batchnorm_forward(x, b, b, g, b, 1, 0.1f, 1e-5f, y, b, b);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "running_mean"), "%s", kd_last_error());
    kd_tensor_free(x), kd_tensor_free(y), kd_tensor_free(g), kd_tensor_free(b);
    kd_tensor_free(m), kd_tensor_free(r);
    /* wait for the queued fills: a PoCL kernel compiled during exit() aborts */
    KD_CHECK_OK(kd_device_finish(d));
    return 0;
}

/* One case of the fused residual tail y = leaky(GroupNorm(x)) + r: against the C reference,
 * against the unfused device sequence (kd_groupnorm_leaky_forward, then kd_add(r, z)) bit
 * for bit, and written over r itself (the in-place form) bit for bit. */
static int leaky_add_case(kd_device *d, kd_shape s, int G, unsigned seed) {
    size_t n = kd_shape_numel(s), C = (size_t)s.c, ng = (size_t)s.n * G;
    float slope = 0.01f, eps = 1e-5f;
    float *x = frand(n, seed, -2.0f, 3.0f), *r = frand(n, seed + 1, -3.0f, 3.0f);
    float *gamma = frand(C, seed + 2, 0.5f, 1.5f), *beta = frand(C, seed + 3, -0.5f, 0.5f);
    float *y = malloc(n * 4), *mean = malloc(ng * 4), *rstd = malloc(ng * 4);
    kd_ref_groupnorm_leaky_add_forward(x, s, gamma, beta, G, eps, slope, r, y, mean, rstd);
    kd_shape vs = kd_shape5(1, (int)C, 1, 1, 1), gs = kd_shape5(1, (int)ng, 1, 1, 1);
    dt X, RS, RI, Y, Z, Y2, G_, B, M, R, M2, R2;
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, r, &RS) || dt_new(d, s, r, &RI) ||
              dt_new(d, s, NULL, &Y) || dt_new(d, s, NULL, &Z) || dt_new(d, s, NULL, &Y2) ||
              dt_new(d, vs, gamma, &G_) || dt_new(d, vs, beta, &B) || dt_new(d, gs, NULL, &M) ||
              dt_new(d, gs, NULL, &R) || dt_new(d, gs, NULL, &M2) || dt_new(d, gs, NULL, &R2);
    KD_CHECK(!bad, "setup");
    char what[160], sb[96];
    snprintf(what, sizeof what, "groupnorm_leaky_add %s G=%d", kd_shape_str(s, sb, sizeof sb), G);
    KD_CHECK_OK(kd_groupnorm_leaky_add_forward(X.t, G_.t, B.t, G, eps, slope, RS.t, Y.t, M.t,
                                               R.t));
    KD_CHECK_OK(kd_groupnorm_leaky_forward(X.t, G_.t, B.t, G, eps, slope, Z.t, M2.t, R2.t));
    KD_CHECK_OK(kd_add(RS.t, Z.t, Y2.t));
    KD_CHECK_OK(kd_groupnorm_leaky_add_forward(X.t, G_.t, B.t, G, eps, slope, RI.t, RI.t, M2.t,
                                               R2.t));
    bad = dt_close(&Y, y, TOL_FWD, what) || dt_close(&M, mean, TOL_FWD, what) ||
          dt_close(&R, rstd, TOL_FWD, what) || dt_same_bits(&Y, &Y2, what) ||
          dt_same_bits(&Y, &RI, what) || dt_same_bits(&M, &M2, what) ||
          dt_same_bits(&R, &R2, what);
    dt *all[] = {&X, &RS, &RI, &Y, &Z, &Y2, &G_, &B, &M, &R, &M2, &R2};
    for (int i = 0; i < 12; i++) dt_free(all[i]);
    free(x), free(r), free(gamma), free(beta), free(y), free(mean), free(rstd);
    return bad;
}

/* Catches: the fused residual tail (the graph's kd_g_gn_leaky_add) with the sum dropped,
 * done before the activation or twice, the residual read at a wrong offset or lane
 * (groups straddling float4 lanes, C not a multiple of 4, G = C, batch 2), any bit of
 * difference from the unfused GroupNorm+LeakyReLU then add, or failing when y is r. Bad
 * residuals are refused: NULL, another shape, overlapping y at an offset. */
static int gn_leaky_add(void) {
    KD_DEVICE_OR_FAIL(d);
    for (int i = 0; i < NGN; i++)
        if (leaky_add_case(d, gn_cases[i].s, gn_cases[i].G, 120u + 5 * i)) return 1;
    kd_tensor *x, *r, *slab, *y, *y2, *g, *m;
    kd_shape s = kd_shape5(1, 12, 3, 3, 3);
    KD_CHECK_OK(kd_tensor_zeros(d, s, &x));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 12, 3, 3, 2), &r));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 1, 1, 1, 2 * 324 + 8), &slab));
    KD_CHECK_OK(kd_tensor_view(slab, 0, s, &y));
    KD_CHECK_OK(kd_tensor_view(slab, 4, s, &y2));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 12, 1, 1, 1), &g));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 4, 1, 1, 1), &m));
    kd_status st = kd_groupnorm_leaky_add_forward(x, g, g, 4, 1e-5f, 0.01f, NULL, y, m, m);
    KD_CHECK(st == KD_ERR_INVALID_ARG && strstr(kd_last_error(), "residual"), "%s",
             kd_last_error());
    st = kd_groupnorm_leaky_add_forward(x, g, g, 4, 1e-5f, 0.01f, r, x, m, m);
    KD_CHECK(st == KD_ERR_SHAPE, "%s", kd_last_error());
    st = kd_groupnorm_leaky_add_forward(x, g, g, 4, 1e-5f, 0.01f, y2, y, m, m);
    KD_CHECK(st == KD_ERR_INVALID_ARG && strstr(kd_last_error(), "overlap"), "%s",
             kd_last_error());
    kd_tensor *all[] = {x, r, y, y2, slab, g, m};
    for (int i = 0; i < 7; i++) kd_tensor_free(all[i]);
    KD_CHECK_OK(kd_device_finish(d));
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"gn_forward_backward", gn_forward_backward},
        {"gn_leaky_forward_backward", gn_leaky_forward_backward},
        {"norm_fd", norm_fd},
        {"gn_fused_equals_chained", gn_fused_equals_chained},
        {"gn_determinism_accumulate", gn_determinism_accumulate},
        {"gn_far_from_zero", gn_far_from_zero},
        {"bn_train_infer", bn_train_infer},
        {"norm_bad_shapes", norm_bad_shapes},
        {"gn_apply_inplace", gn_apply_inplace},
        {"gn_leaky_add", gn_leaky_add},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
