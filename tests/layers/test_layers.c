/* Activations, resampling/pooling, gating, channel and elementwise ops: OpenCL
 * against the C reference on awkward shapes, the reference backward against
 * finite differences in double, known answers, determinism, shape errors. */
#include "layers_util.h"

/* Tolerance relative to the largest magnitude of the reference result (float
 * kernels against references accumulating in double). */
#define TOL 2e-5

/* ---- activations --------------------------------------------------------------------- */

static int act_case(kd_device *d, kd_shape s, unsigned seed) {
    size_t n = kd_shape_numel(s), nvox = n / s.c;
    float *x = frand(n, seed, -3, 3), *dy = frand(n, seed + 1, -1, 1);
    float *y = malloc(n * 4), *dx = malloc(n * 4);
    dt X, DY, Y, DX;
    KD_CHECK(!(dt_new(d, s, x, &X) || dt_new(d, s, dy, &DY) || dt_new(d, s, NULL, &Y) ||
               dt_new(d, s, NULL, &DX)), "setup");
    char sb[96];
    kd_shape_str(s, sb, sizeof sb);
    int bad = 0;
    for (int k = 0; k < 2 && !bad; k++) {
        float slope = k ? 0.01f : 0.0f;
        kd_ref_leaky_forward(x, n, slope, y);
        kd_ref_leaky_backward(dy, x, n, slope, dx);
        KD_CHECK_OK(kd_leaky_forward(X.t, slope, Y.t));
        KD_CHECK_OK(kd_leaky_backward(DY.t, X.t, slope, DX.t));
        bad = dt_close(&Y, y, TOL, "leaky") || dt_close(&DX, dx, TOL, "leaky backward");
        /* as the graph runs an in-place LeakyReLU: forward over x, backward taking the
         * sign from the output, dx written over dy */
        dt XI, DI;
        KD_CHECK(!(dt_new(d, s, x, &XI) || dt_new(d, s, dy, &DI)), "setup");
        KD_CHECK_OK(kd_leaky_forward(XI.t, slope, XI.t));
        KD_CHECK_OK(kd_leaky_backward(DI.t, XI.t, slope, DI.t));
        bad = bad || dt_close(&XI, y, TOL, "leaky in place") ||
              dt_close(&DI, dx, TOL, "leaky backward from the output, in place");
        dt_free(&XI), dt_free(&DI);
    }
    kd_ref_sigmoid_forward(x, n, y);
    kd_ref_sigmoid_backward(dy, y, n, dx);
    KD_CHECK_OK(kd_sigmoid_forward(X.t, Y.t));
    KD_CHECK_OK(kd_sigmoid_backward(DY.t, Y.t, DX.t));
    bad = bad || dt_close(&Y, y, TOL, "sigmoid") || dt_close(&DX, dx, TOL, "sigmoid backward");
    {
        dt DI; /* dx written over dy, as the graph does */
        KD_CHECK(!dt_new(d, s, dy, &DI), "setup");
        KD_CHECK_OK(kd_sigmoid_backward(DI.t, Y.t, DI.t));
        bad = bad || dt_close(&DI, dx, TOL, "sigmoid backward in place");
        dt_free(&DI);
    }
    kd_ref_softmax_forward(x, nvox, s.c, y);
    kd_ref_softmax_backward(dy, y, nvox, s.c, dx);
    KD_CHECK_OK(kd_softmax_forward(X.t, Y.t));
    KD_CHECK_OK(kd_softmax_backward(DY.t, Y.t, DX.t));
    bad = bad || dt_close(&Y, y, TOL, "softmax") || dt_close(&DX, dx, TOL, "softmax backward");
    /* in place: y and x the same tensor */
    KD_CHECK_OK(kd_softmax_forward(X.t, X.t));
    bad = bad || dt_close(&X, y, TOL, "softmax in place");
    if (bad) fprintf(stderr, "shape %s\n", sb);
    dt_free(&X), dt_free(&DY), dt_free(&Y), dt_free(&DX);
    free(x), free(dy), free(y), free(dx);
    return bad;
}

/* Catches: the float8 body or the scalar tail wrong (element counts not multiples
 * of 8), slope ignored or applied to the positive side, softmax over the wrong
 * axis (C = 3, 5, 16 channels-last), a missing max shift, wrong backward formulas;
 * LeakyReLU (ReLU included) and sigmoid failing in place as the graph runs them
 * (forward over x, backward from the output's sign, dx over dy). */
static int act_ops(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape sh[] = {{2, 5, 5, 6, 7}, {1, 3, 7, 9, 11}, {1, 16, 3, 4, 5}};
    for (int i = 0; i < 3; i++)
        if (act_case(d, sh[i], 100u + i)) return 1;
    return 0;
}

/* ---- resampling and pooling ------------------------------------------------------------ */

static kd_shape x2(kd_shape s) { return kd_shape5(s.n, s.c, 2 * s.d, 2 * s.h, 2 * s.w); }

/* s: the small side. Upsampling small -> big, pooling big -> small. */
static int rs_case(kd_device *d, kd_shape s, unsigned seed) {
    kd_shape b = x2(s);
    size_t ns = kd_shape_numel(s), nb = kd_shape_numel(b);
    float *xs = frand(ns, seed, -2, 2), *xb = frand(nb, seed + 1, -2, 2);
    float *gs = frand(ns, seed + 2, -1, 1), *gb = frand(nb, seed + 3, -1, 1);
    float *rs = malloc(ns * 4), *rb = malloc(nb * 4);
    dt XS, XB, GS, GB, OS, OB;
    KD_CHECK(!(dt_new(d, s, xs, &XS) || dt_new(d, b, xb, &XB) || dt_new(d, s, gs, &GS) ||
               dt_new(d, b, gb, &GB) || dt_new(d, s, NULL, &OS) || dt_new(d, b, NULL, &OB)),
             "setup");
    int bad = 0;
    kd_ref_upsample_trilinear_forward(xs, s, rb);
    KD_CHECK_OK(kd_upsample_trilinear_forward(XS.t, OB.t));
    bad = bad || dt_close(&OB, rb, TOL, "trilinear");
    kd_ref_upsample_trilinear_backward(gb, s, rs);
    KD_CHECK_OK(kd_upsample_trilinear_backward(GB.t, OS.t));
    bad = bad || dt_close(&OS, rs, TOL, "trilinear backward");
    kd_ref_upsample_nearest_forward(xs, s, rb);
    KD_CHECK_OK(kd_upsample_nearest_forward(XS.t, OB.t));
    bad = bad || dt_close(&OB, rb, TOL, "nearest");
    kd_ref_upsample_nearest_backward(gb, s, rs);
    KD_CHECK_OK(kd_upsample_nearest_backward(GB.t, OS.t));
    bad = bad || dt_close(&OS, rs, TOL, "nearest backward");
    kd_ref_maxpool_forward(xb, s, rs);
    KD_CHECK_OK(kd_maxpool_forward(XB.t, OS.t));
    bad = bad || dt_close(&OS, rs, TOL, "maxpool");
    kd_ref_maxpool_backward(gs, xb, s, rb);
    KD_CHECK_OK(kd_maxpool_backward(GS.t, XB.t, OB.t));
    bad = bad || dt_close(&OB, rb, TOL, "maxpool backward");
    kd_ref_avgpool_forward(xb, s, rs);
    KD_CHECK_OK(kd_avgpool_forward(XB.t, OS.t));
    bad = bad || dt_close(&OS, rs, TOL, "avgpool");
    kd_ref_avgpool_backward(gs, s, rb);
    KD_CHECK_OK(kd_avgpool_backward(GS.t, OB.t));
    bad = bad || dt_close(&OB, rb, TOL, "avgpool backward");
    if (bad) {
        char sb[96];
        fprintf(stderr, "small side %s\n", kd_shape_str(s, sb, sizeof sb));
    }
    dt_free(&XS), dt_free(&XB), dt_free(&GS), dt_free(&GB), dt_free(&OS), dt_free(&OB);
    free(xs), free(xb), free(gs), free(gb), free(rs), free(rb);
    return bad;
}

/* Catches: swapped D/H/W strides (sizes all different), wrong edge clamping of
 * trilinear sources, a gather backward missing a contributing output, pooling
 * windows off by one voxel, max pool routing to the wrong element, channel lanes
 * lost when C % 4 != 0, batch 2 mixed up. Pool inputs 6x8x10 etc. (even sizes). */
static int resample_ops(void) {
    KD_DEVICE_OR_FAIL(d);
    /* channels 5, 3 (scalar trilinear kernels), 16, 12 (float4), 24 (float8), batch 2 */
    kd_shape sh[] = {{2, 5, 3, 4, 5},  {1, 16, 4, 3, 2}, {1, 3, 1, 2, 3},
                     {2, 12, 3, 4, 5}, {2, 24, 2, 3, 4}};
    for (int i = 0; i < 5; i++)
        if (rs_case(d, sh[i], 200u + i)) return 1;
    return 0;
}

/* Catches: align_corners=True or other source-index conventions, swapped
 * interpolation weights (lambda vs 1 - lambda), a missing clamp at the edges.
 * Expected values by hand from PyTorch's rule (src = (o + 0.5) / 2 - 0.5, clamped
 * at 0): for x = arange(1, 9).view(1, 1, 2, 2, 2), torch.nn.functional.interpolate(
 * x, scale_factor=2, mode='trilinear') gives y[d, h, w] = 1 + 4u(d) + 2u(h) + u(w)
 * with u = (0, 0.25, 0.75, 1), e.g. the first row 1, 1.25, 1.75, 2. Also a tie in
 * max pool routes the gradient to the first element of the window. */
static int trilinear_known(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape s = kd_shape5(1, 1, 2, 2, 2);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[64], want[64];
    const float u[4] = {0.0f, 0.25f, 0.75f, 1.0f};
    for (int z = 0; z < 4; z++)
        for (int h = 0; h < 4; h++)
            for (int w = 0; w < 4; w++) want[(z * 4 + h) * 4 + w] = 1 + 4 * u[z] + 2 * u[h] + u[w];
    KD_CHECK(want[0] == 1.0f && want[1] == 1.25f && want[2] == 1.75f && want[3] == 2.0f &&
                 want[21] == 2.75f && want[63] == 8.0f, "hand values");
    dt X, Y, G, DX;
    KD_CHECK(!(dt_new(d, s, x, &X) || dt_new(d, x2(s), NULL, &Y)), "setup");
    KD_CHECK_OK(kd_upsample_trilinear_forward(X.t, Y.t));
    if (dt_get(&Y, y, "trilinear")) return 1;
    for (int i = 0; i < 64; i++) KD_CHECK(y[i] == want[i], "y[%d] = %g, PyTorch gives %g", i, y[i], want[i]);
    kd_ref_upsample_trilinear_forward(x, s, y);
    for (int i = 0; i < 64; i++) KD_CHECK(y[i] == want[i], "ref y[%d] = %g, want %g", i, y[i], want[i]);
    /* each input's weights sum to 2 per axis: dx = 8 for dy = 1 */
    float ones[64], dx[8];
    for (int i = 0; i < 64; i++) ones[i] = 1.0f;
    KD_CHECK(!(dt_new(d, x2(s), ones, &G) || dt_new(d, s, NULL, &DX)), "setup");
    KD_CHECK_OK(kd_upsample_trilinear_backward(G.t, DX.t));
    if (dt_get(&DX, dx, "trilinear backward")) return 1;
    for (int i = 0; i < 8; i++) KD_CHECK(dx[i] == 8.0f, "dx[%d] = %g, want 8", i, dx[i]);
    /* max pool tie: all 8 equal -> the first gets the gradient */
    float zeros[8] = {0}, one = 1.0f;
    dt Z, D1, DZ;
    KD_CHECK(!(dt_new(d, s, zeros, &Z) || dt_new(d, kd_shape5(1, 1, 1, 1, 1), &one, &D1) ||
               dt_new(d, s, NULL, &DZ)), "setup");
    KD_CHECK_OK(kd_maxpool_backward(D1.t, Z.t, DZ.t));
    if (dt_get(&DZ, dx, "maxpool tie")) return 1;
    for (int i = 0; i < 8; i++) KD_CHECK(dx[i] == (i == 0 ? 1.0f : 0.0f), "tie dx[%d] = %g", i, dx[i]);
    dt_free(&X), dt_free(&Y), dt_free(&G), dt_free(&DX), dt_free(&Z), dt_free(&D1), dt_free(&DZ);
    return 0;
}

/* ---- gating --------------------------------------------------------------------------- */

static int gate_case(kd_device *d, kd_shape s, unsigned seed) {
    size_t n = kd_shape_numel(s), nc = (size_t)s.n * s.c, nv = n / s.c;
    kd_shape cs = kd_shape5(s.n, s.c, 1, 1, 1), vs = kd_shape5(s.n, 1, s.d, s.h, s.w);
    float *x = frand(n, seed, -2, 2), *dy = frand(n, seed + 1, -1, 1);
    float *sc = frand(nc, seed + 2, 0, 1), *a = frand(nv, seed + 3, 0, 1), *gc = frand(nc, seed + 4, -1, 1);
    float *y = malloc(n * 4), *dx = malloc(n * 4), *rc = malloc(nc * 4), *rv = malloc(nv * 4);
    dt X, DY, SC, A, GC, Y, DX, OC, OV;
    KD_CHECK(!(dt_new(d, s, x, &X) || dt_new(d, s, dy, &DY) || dt_new(d, cs, sc, &SC) ||
               dt_new(d, vs, a, &A) || dt_new(d, cs, gc, &GC) || dt_new(d, s, NULL, &Y) ||
               dt_new(d, s, NULL, &DX) || dt_new(d, cs, NULL, &OC) || dt_new(d, vs, NULL, &OV)),
             "setup");
    int bad = 0;
    kd_ref_global_avgpool_forward(x, s, rc);
    KD_CHECK_OK(kd_global_avgpool_forward(X.t, OC.t));
    bad = bad || dt_close(&OC, rc, TOL, "global_avgpool");
    kd_ref_global_avgpool_backward(gc, s, dx);
    KD_CHECK_OK(kd_global_avgpool_backward(GC.t, DX.t));
    bad = bad || dt_close(&DX, dx, TOL, "global_avgpool backward");
    kd_ref_channel_scale_forward(x, s, sc, y);
    KD_CHECK_OK(kd_channel_scale_forward(X.t, SC.t, Y.t));
    bad = bad || dt_close(&Y, y, TOL, "channel_scale");
    kd_ref_channel_scale_backward(dy, x, s, sc, dx, rc);
    KD_CHECK_OK(kd_channel_scale_backward(DY.t, X.t, SC.t, DX.t, OC.t));
    bad = bad || dt_close(&DX, dx, TOL, "channel_scale dx") || dt_close(&OC, rc, TOL, "channel_scale ds");
    kd_ref_spatial_gate_forward(x, s, a, y);
    KD_CHECK_OK(kd_spatial_gate_forward(X.t, A.t, Y.t));
    bad = bad || dt_close(&Y, y, TOL, "spatial_gate");
    kd_ref_spatial_gate_backward(dy, x, s, a, dx, rv);
    KD_CHECK_OK(kd_spatial_gate_backward(DY.t, X.t, A.t, DX.t, OV.t));
    bad = bad || dt_close(&DX, dx, TOL, "spatial_gate dx") || dt_close(&OV, rv, TOL, "spatial_gate da");
    dt *all[] = {&X, &DY, &SC, &A, &GC, &Y, &DX, &OC, &OV};
    for (int i = 0; i < 9; i++) dt_free(all[i]);
    free(x), free(dy), free(sc), free(a), free(gc), free(y), free(dx), free(rc), free(rv);
    return bad;
}

/* Catches: per-(n, c) sums over the wrong voxels or batch item (global pool, ds),
 * a chunk dropped in the two-stage reduction (sizes spanning several 256-voxel
 * chunks), gate broadcast over the wrong axis, da summed over the wrong axis. */
static int gate_ops(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape sh[] = {{2, 5, 5, 6, 7}, {1, 16, 7, 9, 11}, {2, 3, 9, 10, 11}};
    for (int i = 0; i < 3; i++)
        if (gate_case(d, sh[i], 300u + i)) return 1;
    return 0;
}

/* ---- channels and elementwise ----------------------------------------------------------- */

/* Catches: concat/slice channel offsets or strides wrong (C = 3 + 5, 16 + 16, a slice
 * from channel 2), slice backward touching channels outside its range, the float8
 * body or tail of add/mul/axpy/axpby/scale wrong, mul with y aliasing a, mul
 * backward with one side NULL, axpby with beta 0 reading (NaN) y. */
static int eltwise_ops(void) {
    KD_DEVICE_OR_FAIL(d);
    int cab[2][2] = {{3, 5}, {16, 16}};
    for (int k = 0; k < 2; k++) {
        int Ca = cab[k][0], Cb = cab[k][1];
        kd_shape sa = kd_shape5(2, Ca, 3, 4, 5), sb = kd_shape5(2, Cb, 3, 4, 5),
                 sy = kd_shape5(2, Ca + Cb, 3, 4, 5);
        size_t nv = 120, na = nv * Ca, nb = nv * Cb, ny = na + nb;
        float *a = frand(na, 1, -1, 1), *b = frand(nb, 2, -1, 1), *g = frand(ny, 3, -1, 1);
        float *y = malloc(ny * 4), *ra = malloc(na * 4), *rb = malloc(nb * 4);
        dt A, B, Y, G, DA, DB;
        KD_CHECK(!(dt_new(d, sa, a, &A) || dt_new(d, sb, b, &B) || dt_new(d, sy, NULL, &Y) ||
                   dt_new(d, sy, g, &G) || dt_new(d, sa, NULL, &DA) || dt_new(d, sb, NULL, &DB)),
                 "setup");
        kd_ref_concat_forward(a, Ca, b, Cb, nv, y);
        kd_ref_concat_backward(g, Ca, Cb, nv, ra, rb);
        KD_CHECK_OK(kd_concat_forward(A.t, B.t, Y.t));
        KD_CHECK_OK(kd_concat_backward(G.t, DA.t, DB.t));
        int bad = dt_close(&Y, y, 1e-12, "concat") || dt_close(&DA, ra, 1e-12, "concat da") ||
                  dt_close(&DB, rb, 1e-12, "concat db");
        /* slice channels [2, 2 + Cb... of y): take Ca channels from c0 = 2 */
        kd_ref_slice_channels_forward(y, Ca + Cb, 2, Ca, nv, ra);
        KD_CHECK_OK(kd_slice_channels_forward(Y.t, 2, DA.t));
        bad = bad || dt_close(&DA, ra, 1e-12, "slice");
        memcpy(y, g, ny * 4); /* G holds g: backward overwrites only [2, 2 + Ca) */
        kd_ref_slice_channels_backward(a, Ca + Cb, 2, Ca, nv, y);
        KD_CHECK_OK(kd_slice_channels_backward(A.t, 2, G.t));
        bad = bad || dt_close(&G, y, 1e-12, "slice backward");
        dt_free(&A), dt_free(&B), dt_free(&Y), dt_free(&G), dt_free(&DA), dt_free(&DB);
        free(a), free(b), free(g), free(y), free(ra), free(rb);
        if (bad) return 1;
    }
    kd_shape s = kd_shape5(1, 3, 7, 9, 11);
    size_t n = kd_shape_numel(s);
    float *a = frand(n, 4, -1, 1), *b = frand(n, 5, -1, 1), *g = frand(n, 6, -1, 1);
    float *r = malloc(n * 4), *r2 = malloc(n * 4), *nan = malloc(n * 4);
    for (size_t i = 0; i < n; i++) nan[i] = NAN;
    dt A, B, G, Y, D2;
    KD_CHECK(!(dt_new(d, s, a, &A) || dt_new(d, s, b, &B) || dt_new(d, s, g, &G) ||
               dt_new(d, s, NULL, &Y) || dt_new(d, s, NULL, &D2)), "setup");
    int bad = 0;
    kd_ref_add(a, b, n, r);
    KD_CHECK_OK(kd_add(A.t, B.t, Y.t));
    bad = bad || dt_close(&Y, r, 1e-7, "add");
    kd_ref_mul_backward(g, a, b, n, r, r2);
    KD_CHECK_OK(kd_mul_backward(G.t, A.t, B.t, Y.t, NULL));
    bad = bad || dt_close(&Y, r, 1e-7, "mul backward da");
    KD_CHECK_OK(kd_mul_backward(G.t, A.t, B.t, NULL, D2.t));
    bad = bad || dt_close(&D2, r2, 1e-7, "mul backward db");
    KD_CHECK_OK(kd_tensor_upload_ndhwc(Y.t, nan));
    KD_CHECK_OK(kd_mul_backward(G.t, A.t, B.t, Y.t, D2.t));
    bad = bad || dt_close(&Y, r, 1e-7, "mul backward both da") || dt_close(&D2, r2, 1e-7, "both db");
    KD_CHECK_OK(kd_tensor_upload_ndhwc(Y.t, nan));
    kd_ref_axpby(0.5f, a, 0.0f, n, r);
    KD_CHECK_OK(kd_axpby(0.5f, A.t, 0.0f, Y.t));
    bad = bad || dt_close(&Y, r, 1e-7, "axpby beta 0 over NaN");
    kd_ref_axpby(-2.0f, b, 1.0f, n, r);
    KD_CHECK_OK(kd_axpy(-2.0f, B.t, Y.t));
    bad = bad || dt_close(&Y, r, 1e-6, "axpy");
    kd_ref_axpby(3.0f, a, -0.5f, n, r);
    KD_CHECK_OK(kd_axpby(3.0f, A.t, -0.5f, Y.t));
    bad = bad || dt_close(&Y, r, 1e-6, "axpby");
    kd_ref_scale(1.5f, n, r);
    KD_CHECK_OK(kd_scale(1.5f, Y.t));
    bad = bad || dt_close(&Y, r, 1e-6, "scale");
    kd_ref_mul(a, b, n, r);
    KD_CHECK_OK(kd_mul(A.t, B.t, A.t)); /* y aliases a */
    bad = bad || dt_close(&A, r, 1e-7, "mul in place");
    dt_free(&A), dt_free(&B), dt_free(&G), dt_free(&Y), dt_free(&D2);
    free(a), free(b), free(g), free(r), free(r2), free(nan);
    return bad;
}

/* ---- finite differences of the references in double ----------------------------------- */

enum { F_LEAKY, F_SIG, F_SOFT, F_TRI, F_NEAR, F_MAXP, F_AVGP, F_GAP, F_CHS, F_SG, F_MUL, F_NOPS };
static const char *fd_names[] = {"leaky", "sigmoid", "softmax", "trilinear", "nearest", "maxpool",
                                 "avgpool", "global_avgpool", "channel_scale", "spatial_gate", "mul"};

typedef struct fd_ctx {
    int op;
    kd_shape s; /* the input x's shape */
    double *x, *p, *r, *y;
    size_t ny;
} fd_ctx;

static kd_shape half(kd_shape s) { return kd_shape5(s.n, s.c, s.d / 2, s.h / 2, s.w / 2); }

static double fd_loss(void *v) {
    fd_ctx *c = v;
    size_t n = kd_shape_numel(c->s);
    switch (c->op) {
    case F_LEAKY: kd_ref_leaky_forward_d(c->x, n, 0.1, c->y); break;
    case F_SIG: kd_ref_sigmoid_forward_d(c->x, n, c->y); break;
    case F_SOFT: kd_ref_softmax_forward_d(c->x, n / c->s.c, c->s.c, c->y); break;
    case F_TRI: kd_ref_upsample_trilinear_forward_d(c->x, c->s, c->y); break;
    case F_NEAR: kd_ref_upsample_nearest_forward_d(c->x, c->s, c->y); break;
    case F_MAXP: kd_ref_maxpool_forward_d(c->x, half(c->s), c->y); break;
    case F_AVGP: kd_ref_avgpool_forward_d(c->x, half(c->s), c->y); break;
    case F_GAP: kd_ref_global_avgpool_forward_d(c->x, c->s, c->y); break;
    case F_CHS: kd_ref_channel_scale_forward_d(c->x, c->s, c->p, c->y); break;
    case F_SG: kd_ref_spatial_gate_forward_d(c->x, c->s, c->p, c->y); break;
    case F_MUL: kd_ref_mul_d(c->x, c->p, n, c->y); break;
    }
    return dot_d(c->r, c->y, c->ny);
}

static int fd_op(int op, kd_shape s, unsigned seed) {
    size_t n = kd_shape_numel(s), np = 0, ny = n;
    if (op == F_TRI || op == F_NEAR) ny = 8 * n;
    if (op == F_MAXP || op == F_AVGP) ny = n / 8;
    if (op == F_GAP) ny = (size_t)s.n * s.c;
    if (op == F_CHS) np = (size_t)s.n * s.c;
    if (op == F_SG) np = n / s.c;
    if (op == F_MUL) np = n;
    float *xf = frand(n, seed, -2, 2), *pf = frand(np, seed + 1, -1, 1), *rf = frand(ny, seed + 2, -1, 1);
    /* keep inputs away from the kinks of leaky (|x| > 0.05) */
    if (op == F_LEAKY)
        for (size_t i = 0; i < n; i++) xf[i] += xf[i] > 0 ? 0.05f : -0.05f;
    fd_ctx c = {op, s, to_d(xf, n), to_d(pf, np), to_d(rf, ny), calloc(ny, 8), ny};
    double *gx = calloc(n, 8), *gp = calloc(np ? np : 1, 8);
    fd_loss(&c);
    switch (op) {
    case F_LEAKY: kd_ref_leaky_backward_d(c.r, c.x, n, 0.1, gx); break;
    case F_SIG: kd_ref_sigmoid_backward_d(c.r, c.y, n, gx); break;
    case F_SOFT: kd_ref_softmax_backward_d(c.r, c.y, n / s.c, s.c, gx); break;
    case F_TRI: kd_ref_upsample_trilinear_backward_d(c.r, s, gx); break;
    case F_NEAR: kd_ref_upsample_nearest_backward_d(c.r, s, gx); break;
    case F_MAXP: kd_ref_maxpool_backward_d(c.r, c.x, half(s), gx); break;
    case F_AVGP: kd_ref_avgpool_backward_d(c.r, half(s), gx); break;
    case F_GAP: kd_ref_global_avgpool_backward_d(c.r, s, gx); break;
    case F_CHS: kd_ref_channel_scale_backward_d(c.r, c.x, s, c.p, gx, gp); break;
    case F_SG: kd_ref_spatial_gate_backward_d(c.r, c.x, s, c.p, gx, gp); break;
    case F_MUL: kd_ref_mul_backward_d(c.r, c.x, c.p, n, gx, gp); break;
    }
    double ex = fd_err(fd_loss, &c, c.x, n, gx, 1e-5);
    double ep = np ? fd_err(fd_loss, &c, c.p, np, gp, 1e-5) : 0;
    free(xf), free(pf), free(rf), free(c.x), free(c.p), free(c.r), free(c.y), free(gx), free(gp);
    /* central differences with h = 1e-5 in double: errors ~1e-9 */
    KD_CHECK(ex < 1e-6 && ep < 1e-6, "%s: dx %.3g, second input %.3g", fd_names[op], ex, ep);
    return 0;
}

/* Catches: wrong reference backward formulas (softmax Jacobian, sigmoid from y,
 * trilinear weights in the adjoint, max pool routing, 1/S and 1/8 factors, the
 * gating gradients of s and a), which the device kernels are tested against. */
static int layers_fd(void) {
    kd_shape s = kd_shape5(2, 3, 2, 4, 2), u = kd_shape5(1, 3, 2, 3, 2);
    for (int op = 0; op < F_NOPS; op++)
        if (fd_op(op, (op == F_TRI || op == F_NEAR) ? u : s, 400u + op)) return 1;
    return 0;
}

/* Catches: order-dependent reductions (global pool, ds, da) changing bits between calls. */
static int layers_determinism(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape s = kd_shape5(2, 12, 12, 13, 14), cs = kd_shape5(2, 12, 1, 1, 1);
    size_t n = kd_shape_numel(s);
    float *x = frand(n, 7, -1, 1), *g = frand(n, 8, -1, 1), *sc = frand(24, 9, 0, 1);
    dt X, G, S, P[2], DS[2], DX;
    int bad = dt_new(d, s, x, &X) || dt_new(d, s, g, &G) || dt_new(d, cs, sc, &S) ||
              dt_new(d, s, NULL, &DX);
    for (int k = 0; k < 2; k++) bad = bad || dt_new(d, cs, NULL, &P[k]) || dt_new(d, cs, NULL, &DS[k]);
    KD_CHECK(!bad, "setup");
    for (int k = 0; k < 2; k++) {
        KD_CHECK_OK(kd_global_avgpool_forward(X.t, P[k].t));
        KD_CHECK_OK(kd_channel_scale_backward(G.t, X.t, S.t, DX.t, DS[k].t));
    }
    bad = dt_same_bits(&P[0], &P[1], "global_avgpool") || dt_same_bits(&DS[0], &DS[1], "ds");
    dt_free(&X), dt_free(&G), dt_free(&S), dt_free(&DX);
    for (int k = 0; k < 2; k++) dt_free(&P[k]), dt_free(&DS[k]);
    free(x), free(g), free(sc);
    return bad;
}

/* Catches: mismatched shapes reaching kernels (odd sizes into pooling, wrong
 * upsampling output, concat channel sum, slice range) instead of clear errors. */
static int layers_bad_shapes(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_tensor *a, *b, *c;
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 4, 5, 6, 7), &a));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 4, 2, 3, 3), &b));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 9, 5, 6, 7), &c));
    kd_status st = kd_maxpool_forward(a, b);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "maxpool"), "%s", kd_last_error());
    st = kd_upsample_trilinear_forward(b, a);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "twice"), "%s", kd_last_error());
    st = kd_concat_forward(a, a, c);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "concat"), "%s", kd_last_error());
    st = kd_slice_channels_forward(c, 6, a);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "[6, 10)"), "%s", kd_last_error());
    st = kd_add(a, c, a);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "add"), "%s", kd_last_error());
    st = kd_spatial_gate_forward(a, a, a);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "spatial_gate"), "%s", kd_last_error());
    kd_tensor_free(a), kd_tensor_free(b), kd_tensor_free(c);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"act_ops", act_ops},
        {"resample_ops", resample_ops},
        {"trilinear_known", trilinear_known},
        {"gate_ops", gate_ops},
        {"eltwise_ops", eltwise_ops},
        {"layers_fd", layers_fd},
        {"layers_determinism", layers_determinism},
        {"layers_bad_shapes", layers_bad_shapes},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
