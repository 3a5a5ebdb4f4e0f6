/* The sliding-window inference ops (cl/infer.cl): window cut with flips and padding,
 * Gaussian-weighted accumulation, normalisation and labels, against their C references
 * (src/ops/ref/ref_window.c) on odd shapes, tensors at odd offsets inside sentinel
 * slabs; shape errors. */
#include <stdint.h>

#include "layers_util.h"

#define TOL 1e-6

/* Window origins of a T tile in a volume of `dims`: inside, hanging over the low
 * borders, hanging over the high borders, and a tile larger than the volume. */
typedef struct win_case {
    int t[3], o[3];
} win_case;

/* Catches: flips on the wrong axis or not undone, padding read from outside the
 * volume (or written there: the guards), the batch item ignored, channel order
 * mixed up between planar volumes and channels-last windows, weights indexed by the
 * flipped position, the weight sum added when not asked or without its weights,
 * accumulation overwriting instead of adding. */
static int window_case(kd_device *d, int C, int K, const int dims[3], const win_case *wc,
                       unsigned seed) {
    const int *t = wc->t, *o = wc->o;
    size_t nv = (size_t)dims[0] * dims[1] * dims[2], tv = (size_t)t[0] * t[1] * t[2];
    kd_shape si = kd_shape5(C, 1, dims[0], dims[1], dims[2]),
             sx = kd_shape5(2, C, t[0], t[1], t[2]), sy = kd_shape5(2, K, t[0], t[1], t[2]),
             sa = kd_shape5(K, 1, dims[0], dims[1], dims[2]),
             sw = kd_shape5(1, 1, t[0], t[1], t[2]),
             ss = kd_shape5(1, 1, dims[0], dims[1], dims[2]);
    float *img = frand(nv * C, seed, -2, 2), *x0 = frand(2 * tv * C, seed + 1, -1, 1);
    float *y = frand(2 * tv * K, seed + 2, 0, 1), *acc = frand(nv * K, seed + 3, 0, 1);
    float *w = frand(tv, seed + 4, 0.001f, 1), *ws = frand(nv, seed + 5, 0.5f, 1);
    float *rx = malloc(2 * tv * C * 4), *racc = malloc(nv * K * 4), *rws = malloc(nv * 4);
    KD_CHECK(img && x0 && y && acc && w && ws && rx && racc && rws, "alloc");
    dt I, X, Y, A, W, S;
    KD_CHECK(!(dt_new(d, si, img, &I) || dt_new(d, sx, x0, &X) || dt_new(d, sy, y, &Y) ||
               dt_new(d, sa, acc, &A) || dt_new(d, sw, w, &W) || dt_new(d, ss, ws, &S)),
             "setup");
    memcpy(racc, acc, nv * K * 4);
    memcpy(rws, ws, nv * 4);
    int bad = 0;
    for (int flip = 0; flip < 8 && !bad; flip++) {
        /* the cut into item 1 of x; item 0 keeps what it had */
        memcpy(rx, x0, tv * C * 4);
        kd_ref_window_cut(img, C, dims, o, t, flip, rx + tv * C);
        KD_CHECK_OK(kd_window_cut(I.t, o, flip, X.t, 1));
        bad = dt_close(&X, rx, TOL, "window cut");
        /* flips 0-3 with the weights (flip 0 and 3 also the weight sum), 4-7 without */
        const float *wp = flip < 4 ? w : NULL;
        float *wsp = flip == 0 || flip == 3 ? rws : NULL;
        float scale = 0.25f + 0.125f * flip;
        kd_ref_window_accumulate(y + tv * K, K, t, dims, o, flip, wp, scale, racc, wsp);
        KD_CHECK_OK(
            kd_window_accumulate(Y.t, 1, o, flip, wp ? W.t : NULL, scale, A.t, wsp ? S.t : NULL));
        bad = bad || dt_close(&A, racc, TOL, "window accumulate") ||
              dt_close(&S, rws, TOL, "window weight sum");
    }
    kd_ref_window_normalize(racc, K, nv, rws);
    KD_CHECK_OK(kd_window_normalize(A.t, S.t));
    bad = bad || dt_close(&A, racc, TOL, "window normalize");
    if (bad)
        fprintf(stderr, "C %d K %d volume %dx%dx%d tile %dx%dx%d at (%d, %d, %d)\n", C, K, dims[0],
                dims[1], dims[2], t[0], t[1], t[2], o[0], o[1], o[2]);
    dt_free(&I), dt_free(&X), dt_free(&Y), dt_free(&A), dt_free(&W), dt_free(&S);
    free(img), free(x0), free(y), free(acc), free(w), free(ws), free(rx), free(racc), free(rws);
    return bad;
}

static int window_ops(void) {
    KD_DEVICE_OR_FAIL(d);
    const int dims[3] = {7, 9, 11};
    const win_case cases[] = {
        {{5, 4, 6}, {1, 2, 3}},    /* inside */
        {{5, 4, 6}, {-2, -1, -3}}, /* over the low borders */
        {{5, 4, 6}, {4, 7, 8}},    /* over the high borders */
        {{8, 12, 12}, {0, 0, 0}},  /* larger than the volume: padded at the far ends */
    };
    const int ck[][2] = {{4, 3}, {3, 5}, {1, 1}, {4, 3}};
    for (int i = 0; i < 4; i++)
        if (window_case(d, ck[i][0], ck[i][1], dims, &cases[i], 300u + 10u * i)) return 1;
    return 0;
}

/* Catches: wrong label precedence (ET over TC over WT), > against >=, ET's label not
 * the one asked for, non-finite probabilities not flagged, bytes written at the wrong
 * offset of a view or past the map (the guards), an odd voxel count's tail. */
static int window_labels(void) {
    KD_DEVICE_OR_FAIL(d);
    const int D = 5, H = 7, W = 9;
    size_t nv = (size_t)D * H * W, n4 = (nv + 3) / 4;
    float *p = frand(3 * nv, 77, 0, 1);
    KD_CHECK(p != NULL, "alloc");
    /* exact threshold values, and non-finite ones in each region */
    for (int r = 0; r < 3; r++)
        p[(size_t)r * nv + 10 + r] = 0.5f;
    p[20] = NAN, p[nv + 21] = INFINITY, p[2 * nv + 22] = -INFINITY;
    dt P, L;
    KD_CHECK(!(dt_new(d, kd_shape5(3, 1, D, H, W), p, &P) ||
               dt_new(d, kd_shape5(1, 1, 1, 1, (int)n4), NULL, &L)),
             "setup");
    uint8_t *ref = malloc(nv), *got = malloc(4 * n4);
    KD_CHECK(ref && got, "alloc");
    int bad = 0;
    for (int k = 0; k < 2 && !bad; k++) {
        int et = k ? 3 : 4;
        float th = k ? 0.3f : 0.5f;
        kd_ref_window_labels(p, nv, th, et, ref);
        KD_CHECK_OK(kd_window_labels(P.t, th, et, L.t));
        KD_CHECK(!dt_get(&L, (float *)got, "labels"), "download");
        for (size_t i = 0; i < nv && !bad; i++)
            if (got[i] != ref[i]) {
                fprintf(stderr, "labels: voxel %zu: %d, reference %d (threshold %g)\n", i, got[i],
                        ref[i], th);
                bad = 1;
            }
        int seen[256] = {0};
        for (size_t i = 0; i < nv; i++)
            seen[ref[i]] = 1;
        KD_CHECK(seen[0] && seen[1] && seen[2] && seen[et] && seen[255], "not every label occurs");
    }
    dt_free(&P), dt_free(&L);
    free(p), free(ref), free(got);
    return bad;
}

/* Catches: shape mistakes accepted (and kernels run out of bounds) instead of a clear
 * error naming the op. */
static int window_bad_shapes(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_tensor *img, *x, *y, *acc, *w, *ws, *lab;
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(4, 1, 6, 6, 6), &img));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(2, 4, 4, 4, 4), &x));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(2, 3, 4, 4, 4), &y));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(3, 1, 6, 6, 6), &acc));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 1, 4, 4, 4), &w));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 1, 6, 6, 5), &ws));
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 1, 1, 1, 10), &lab));
    int o[3] = {0, 0, 0};
    kd_status st = kd_window_cut(img, o, 0, y, 0); /* 4 image channels, 3 in the window */
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "window cut"), "%s", kd_last_error());
    st = kd_window_cut(x, o, 0, x, 0); /* not planar */
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "planar"), "%s", kd_last_error());
    st = kd_window_cut(img, o, 8, x, 0);
    KD_CHECK(st == KD_ERR_INVALID_ARG && strstr(kd_last_error(), "flip 8"), "%s", kd_last_error());
    st = kd_window_cut(img, o, 0, x, 2);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "item 2"), "%s", kd_last_error());
    st = kd_window_accumulate(x, 0, o, 0, w, 1.0f, acc, NULL); /* 4 channels into 3 */
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "accumulat"), "%s", kd_last_error());
    st = kd_window_accumulate(y, 0, o, 0, NULL, 1.0f, acc, acc); /* a sum without weights */
    KD_CHECK(st != KD_OK && strstr(kd_last_error(), "window accumulate"), "%s", kd_last_error());
    st = kd_window_accumulate(y, 0, o, 0, w, 1.0f, acc, ws); /* wsum on another grid */
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "differ"), "%s", kd_last_error());
    st = kd_window_normalize(acc, ws);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "normalize"), "%s", kd_last_error());
    st = kd_window_labels(acc, 0.5f, 4, lab); /* 216 voxels need 54 elements */
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "216 labels"), "%s", kd_last_error());
    st = kd_window_labels(img, 0.5f, 4, lab); /* 4 planes */
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "3 region planes"), "%s",
             kd_last_error());
    kd_tensor_free(img), kd_tensor_free(x), kd_tensor_free(y), kd_tensor_free(acc);
    kd_tensor_free(w), kd_tensor_free(ws), kd_tensor_free(lab);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"window_ops", window_ops},
        {"window_labels", window_labels},
        {"window_bad_shapes", window_bad_shapes},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
