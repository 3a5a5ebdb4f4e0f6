/* The loss and optimizer ops (src/ops/loss.c, src/ops/optim.c): OpenCL against the C
 * reference on awkward shapes (tensors as views at odd offsets between sentinels), the
 * reference loss gradient against central finite differences in double, the finite
 * check skipping an update, shape errors. */
#include "layers_util.h"

static const char *kind_names[] = {"paper", "bce", "mse"};

/* The three losses of src/train as their terms. */
static kd_loss_terms terms(int kind) {
    switch (kind) {
    case 0: return (kd_loss_terms){.dice = 0.5f, .bce = 0.5f, .bg = 0.01f};
    case 1: return (kd_loss_terms){.bce = 1.0f, .bg = 1.0f};
    default: return (kd_loss_terms){.mse = 1.0f, .bg = 1.0f};
    }
}

/* Predictions in (0.02, 0.98); targets hard (0/1) on even elements, soft on odd ones. */
static void loss_inputs(size_t n, unsigned seed, float **p, float **t) {
    *p = frand(n, seed, 0.02f, 0.98f);
    *t = frand(n, seed + 1, 0.0f, 1.0f);
    for (size_t i = 0; i < n; i += 2) (*t)[i] = (*t)[i] > 0.5f;
}

/* One shape: the statistics and value of every kind, the gradient overwritten and
 * accumulated, against the reference. Tolerances: sums relative 2e-5 (float partial
 * sums of up to 5k terms), the value 1e-5 of itself, gradients 1e-4 of the largest. */
static int loss_case(kd_device *d, kd_shape s, unsigned seed) {
    size_t n = kd_shape_numel(s), nvox = n / s.c;
    float *p, *t, *r = frand(n, seed + 2, -1, 1);
    loss_inputs(n, seed, &p, &t);
    float *dp = malloc(n * 4), *stats = malloc(KD_LOSS_STATS * 4);
    float rs[KD_LOSS_STATS];
    dt P, T, DP, PART, ST;
    KD_CHECK(!(dt_new(d, s, p, &P) || dt_new(d, s, t, &T) || dt_new(d, s, r, &DP) ||
               dt_new(d, kd_shape5(1, KD_LOSS_PARTIALS, 1, 1, 1), NULL, &PART) ||
               dt_new(d, kd_shape5(1, KD_LOSS_STATS, 1, 1, 1), NULL, &ST)), "setup");
    char sb[96];
    kd_shape_str(s, sb, sizeof sb);
    int bad = 0;
    for (int kind = 0; kind < 3 && !bad; kind++) {
        kd_loss_terms l = terms(kind);
        kd_ref_loss_forward(&l, p, t, nvox, s.c, rs);
        KD_CHECK_OK(kd_loss_forward(&l, P.t, T.t, PART.t, ST.t));
        KD_CHECK(dt_get(&ST, stats, "loss stats") == 0, "stats");
        for (int k = 0; k < KD_LOSS_VALUE && !bad; k++) {
            if (k % 8 >= s.c && k < 24) continue; /* channels the shape lacks */
            double e = fabs((double)stats[k] - rs[k]) / fmax(fabs((double)rs[k]), 1e-3);
            if (e > 2e-5) {
                fprintf(stderr, "%s %s: statistic %d is %.9g, reference %.9g\n", kind_names[kind],
                        sb, k, (double)stats[k], (double)rs[k]);
                bad = 1;
            }
        }
        double v = stats[KD_LOSS_VALUE], rv = rs[KD_LOSS_VALUE];
        if (!bad && !(fabs(v - rv) <= 1e-5 * fabs(rv) + 1e-7)) {
            fprintf(stderr, "%s %s: loss %.9g, reference %.9g\n", kind_names[kind], sb, v, rv);
            bad = 1;
        }
        /* overwrite (dp held r), then accumulate onto r: both against the reference; an
         * accumulated value may also differ by the rounding of r + g in float */
        for (int acc = 0; acc < 2 && !bad; acc++) {
            if (acc) KD_CHECK_OK(kd_tensor_upload_ndhwc(DP.t, r));
            memcpy(dp, r, n * 4);
            kd_ref_loss_backward(&l, p, t, nvox, s.c, rs, 0.7f, acc, dp);
            KD_CHECK_OK(kd_loss_backward(&l, P.t, T.t, ST.t, 0.7f, acc, DP.t));
            float *gdev = malloc(n * 4);
            KD_CHECK(gdev, "alloc");
            if (dt_get(&DP, gdev, "loss gradient")) bad = 1;
            double gmax = 0, worst = 0;
            for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(dp[i] - (acc ? r[i] : 0.0f)));
            for (size_t i = 0; i < n && !bad; i++) {
                double e = fabs((double)gdev[i] - dp[i]) / (1e-4 * gmax + (acc ? 2.4e-7 * fabs(r[i]) : 0));
                if (!(e <= worst)) worst = e;
            }
            if (!bad && !(worst <= 1)) {
                fprintf(stderr, "%s %s: gradient (%s) error %.3g of its tolerance\n", kind_names[kind],
                        sb, acc ? "accumulated" : "overwritten", worst);
                bad = 1;
            }
            free(gdev);
        }
        float *part = malloc(KD_LOSS_PARTIALS * 4);
        KD_CHECK(part, "alloc");
        if (!bad && dt_get(&PART, part, "partials")) bad = 1; /* the guards only */
        free(part);
    }
    dt_free(&P), dt_free(&T), dt_free(&DP), dt_free(&PART), dt_free(&ST);
    free(p), free(t), free(r), free(dp), free(stats);
    return bad;
}

/* Catches: a wrong statistic (channel stride, a channel count not a multiple of 4 or
 * of the vector width, the batch's second item or the voxels past one pass of the
 * 4096 work-items missed), a wrong term or missing 1/M or 1/C, a gradient of the wrong
 * sign or that ignores accumulate, ignored tensor offsets, writes outside a tensor. */
static int loss_ops(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape shapes[] = {kd_shape5(2, 3, 3, 4, 5), kd_shape5(1, 1, 7, 5, 3),
                         kd_shape5(2, 8, 3, 3, 5), kd_shape5(1, 5, 17, 16, 19)};
    for (int i = 0; i < 4; i++)
        if (loss_case(d, shapes[i], 300u + 10u * (unsigned)i)) return 1;
    return 0;
}

typedef struct loss_fd_ctx {
    kd_loss_terms l;
    double *p, *t, stats[KD_LOSS_STATS];
    size_t nvox;
    int C;
} loss_fd_ctx;

static double loss_value(void *v) {
    loss_fd_ctx *c = v;
    kd_ref_loss_forward_d(&c->l, c->p, c->t, c->nvox, c->C, c->stats);
    return c->stats[KD_LOSS_VALUE];
}

/* Catches: a wrong reference gradient (the Dice quotient rule, the p^2 in the
 * denominator, the background weight, 1/M, 1/C), which the kernels are tested against. */
static int loss_fd(void) {
    kd_shape s = kd_shape5(2, 3, 2, 3, 2);
    size_t n = kd_shape_numel(s);
    for (int kind = 0; kind < 3; kind++) {
        float *pf, *tf;
        loss_inputs(n, 500u + (unsigned)kind, &pf, &tf);
        loss_fd_ctx c = {terms(kind), to_d(pf, n), to_d(tf, n), {0}, n / s.c, s.c};
        double *g = calloc(n, sizeof *g);
        KD_CHECK(c.p && c.t && g, "alloc");
        loss_value(&c);
        kd_ref_loss_backward_d(&c.l, c.p, c.t, c.nvox, c.C, c.stats, 1.0, 0, g);
        double e = fd_err(loss_value, &c, c.p, n, g, 1e-6);
        free(pf), free(tf), free(c.p), free(c.t), free(g);
        KD_CHECK(e < 1e-6, "%s: reference gradient vs finite differences %.3g", kind_names[kind], e);
    }
    return 0;
}

/* n values of each optimizer tensor as views between sentinels. */
typedef struct opt_set {
    dt p, g, s[3], part, st;
} opt_set;

static int opt_new(kd_device *d, size_t n, const float *p, const float *g, opt_set *o) {
    kd_shape s = kd_shape5(1, (int)n, 1, 1, 1);
    float *z = calloc(n, 4);
    int bad = !z || dt_new(d, s, p, &o->p) || dt_new(d, s, g, &o->g) ||
              dt_new(d, kd_shape5(1, KD_GRAD_PARTIALS, 1, 1, 1), NULL, &o->part) ||
              dt_new(d, kd_shape5(1, 2, 1, 1, 1), NULL, &o->st);
    for (int i = 0; i < 3 && !bad; i++) bad = dt_new(d, s, z, &o->s[i]);
    free(z);
    return bad;
}

static void opt_free(opt_set *o) {
    dt_free(&o->p), dt_free(&o->g), dt_free(&o->part), dt_free(&o->st);
    for (int i = 0; i < 3; i++) dt_free(&o->s[i]);
}

/* The parameters and state after the device steps against the reference's. */
static int opt_compare(opt_set *o, const float *p, float *const *s, int ns, const char *what) {
    int bad = dt_close(&o->p, p, 1e-6, what);
    for (int i = 0; i < ns && !bad; i++) bad = dt_close(&o->s[i], s[i], 1e-6, what);
    return bad;
}

/* Catches: an Adam or SGD formula error (bias correction, the max of v, Nesterov's
 * look-ahead, weight decay, the first SGD step), an ignored offset, writes outside the
 * tensors, a sum of squares that misses elements past one pass of the work-items, a
 * finite check that lets a NaN gradient or an Inf loss through, or an update applied
 * when the flag says skip. */
static int optim_ops(void) {
    KD_DEVICE_OR_FAIL(d);
    const size_t n = 20011; /* odd, and more than the 16384 work-items of the sum */
    float *p = frand(n, 61, -1, 1), *g1 = frand(n, 62, -2, 2), *g2 = frand(n, 63, -0.01f, 0.01f);
    /* g2 much smaller than g1: v shrinks in step 2, so AMSGrad's max of v matters */
    float *sref[3], st[2], rst[2];
    for (int i = 0; i < 3; i++) sref[i] = calloc(n, 4);
    KD_CHECK(p && g1 && g2 && sref[0] && sref[1] && sref[2], "alloc");
    int bad = 0;
    for (int opt = 0; opt < 2 && !bad; opt++) {
        opt_set o;
        KD_CHECK(!opt_new(d, n, p, g1, &o), "setup");
        float *pr = malloc(n * 4);
        memcpy(pr, p, n * 4);
        for (int i = 0; i < 3; i++) memset(sref[i], 0, n * 4);
        for (int step = 1; step <= 2 && !bad; step++) {
            const float *g = step == 1 ? g1 : g2;
            if (step == 2) KD_CHECK_OK(kd_tensor_upload_ndhwc(o.g.t, g2));
            KD_CHECK_OK(kd_grad_check(o.g.t, NULL, o.part.t, o.st.t));
            kd_ref_grad_check(g, n, NULL, rst);
            bad = dt_get(&o.st, st, "gradient check");
            if (!bad && !(fabs(st[0] - rst[0]) <= 1e-5 * rst[0] && st[1] == 1.0f)) {
                fprintf(stderr, "sum of squares %.9g (flag %g), reference %.9g\n", (double)st[0],
                        (double)st[1], (double)rst[0]);
                bad = 1;
            }
            if (opt == 0) {
                kd_adam_params h = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, step};
                KD_CHECK_OK(kd_adam_update(&h, o.p.t, o.g.t, o.s[0].t, o.s[1].t, o.s[2].t, o.st.t));
                kd_ref_adam_update(&h, pr, g, sref[0], sref[1], sref[2], n, rst);
            } else {
                KD_CHECK_OK(kd_sgd_update(0.1f, 0.9f, 0.1f, step == 1, o.p.t, o.g.t, o.s[0].t, o.st.t));
                kd_ref_sgd_update(0.1f, 0.9f, 0.1f, step == 1, pr, g, sref[0], n, rst);
            }
            bad = bad || opt_compare(&o, pr, sref, opt == 0 ? 3 : 1, opt == 0 ? "adam" : "sgd");
        }
        /* a NaN gradient, then a finite one with an Inf loss: flag 0, nothing changes */
        float nan_g = NAN, inf_l = INFINITY;
        dt L;
        KD_CHECK(!dt_new(d, kd_shape5(1, 1, 1, 1, 1), &inf_l, &L), "setup");
        for (int k = 0; k < 2 && !bad; k++) {
            if (k == 0) {
                kd_tensor *one;
                KD_CHECK_OK(kd_tensor_view(o.g.t, n / 2, kd_shape5(1, 1, 1, 1, 1), &one));
                KD_CHECK_OK(kd_tensor_upload_ndhwc(one, &nan_g));
                kd_tensor_free(one);
            } else {
                KD_CHECK_OK(kd_tensor_upload_ndhwc(o.g.t, g1));
            }
            KD_CHECK_OK(kd_grad_check(o.g.t, k ? L.t : NULL, o.part.t, o.st.t));
            bad = dt_get(&o.st, st, "gradient check");
            if (!bad && st[1] != 0.0f) {
                fprintf(stderr, "%s passed the finite check\n", k ? "an Inf loss" : "a NaN gradient");
                bad = 1;
            }
            kd_adam_params h = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 3};
            if (opt == 0)
                KD_CHECK_OK(kd_adam_update(&h, o.p.t, o.g.t, o.s[0].t, o.s[1].t, o.s[2].t, o.st.t));
            else
                KD_CHECK_OK(kd_sgd_update(0.1f, 0.9f, 0.1f, 0, o.p.t, o.g.t, o.s[0].t, o.st.t));
            bad = bad || opt_compare(&o, pr, sref, opt == 0 ? 3 : 1, "a skipped update");
        }
        /* a finite loss passes */
        float fine = 0.25f;
        KD_CHECK_OK(kd_tensor_upload_ndhwc(L.t, &fine));
        KD_CHECK_OK(kd_grad_check(o.g.t, L.t, o.part.t, o.st.t));
        bad = bad || dt_get(&o.st, st, "gradient check");
        KD_CHECK(bad || st[1] == 1.0f, "a finite gradient and loss failed the check");
        dt_free(&L);
        opt_free(&o);
        free(pr);
    }
    free(p), free(g1), free(g2);
    for (int i = 0; i < 3; i++) free(sref[i]);
    return bad;
}

/* Catches: mismatched or oversized tensors reaching the kernels instead of clear errors
 * naming the op. */
static int train_ops_bad_shapes(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_tensor *a, *b, *c9, *part, *st, *st2;
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 3, 4, 4, 4), &a));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 3, 4, 4, 2), &b));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 9, 2, 2, 2), &c9));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, KD_LOSS_PARTIALS, 1, 1, 1), &part));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, KD_LOSS_STATS, 1, 1, 1), &st));
    KD_CHECK_OK(kd_tensor_zeros(d, kd_shape5(1, 2, 1, 1, 1), &st2));
    kd_loss_terms l = terms(0);
    kd_status s = kd_loss_forward(&l, a, b, part, st);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "target"), "%s", kd_last_error());
    s = kd_loss_forward(&l, c9, c9, part, st);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "at most 8"), "%s", kd_last_error());
    s = kd_loss_forward(&l, a, a, part, st2);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "stats"), "%s", kd_last_error());
    s = kd_loss_backward(&l, a, a, st, 1.0f, 0, b);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "gradient"), "%s", kd_last_error());
    kd_adam_params h = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1};
    s = kd_adam_update(&h, a, b, a, a, a, st2);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "adam: gradient"), "%s", kd_last_error());
    h.step = 0;
    s = kd_adam_update(&h, a, a, a, a, a, st2);
    KD_CHECK(s == KD_ERR_INVALID_ARG && strstr(kd_last_error(), "step 0"), "%s", kd_last_error());
    s = kd_sgd_update(0.1f, 0.9f, 0.0f, 1, a, a, b, st2);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "momentum_buffer"), "%s", kd_last_error());
    s = kd_grad_check(a, a, part, st2);
    KD_CHECK(s == KD_ERR_SHAPE, "a loss of several values");
    kd_tensor_free(a), kd_tensor_free(b), kd_tensor_free(c9), kd_tensor_free(part);
    kd_tensor_free(st), kd_tensor_free(st2);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"loss_ops", loss_ops},
        {"loss_fd", loss_fd},
        {"optim_ops", optim_ops},
        {"train_ops_bad_shapes", train_ops_bad_shapes},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
