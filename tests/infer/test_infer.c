/* Device-resident inference (src/infer/infer.c) against the host path it replaced:
 * the reference here cuts each window on the host (kd_ref_window_cut), runs one forward
 * pass per window, flip and model, and blends on the host (kd_ref_window_accumulate,
 * kd_ref_window_normalize) in the old order. Ensembles, members, labels, padding of
 * volumes that are not multiples of the divisor, batching and the memory budget. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kdseg/infer.h"
#include "kdtest.h"
#include "ops/ref/ref.h"

#define SPEC "resunet:widths=4,8:enc=1,1:dec=1:groups=2" /* divisor 2 */

/* nnU-Net's evenly spaced window starts (the spec of kd_infer_volume's placement). */
static int positions(int size, int tile, float overlap, int *pos) {
    if (tile >= size) {
        pos[0] = 0;
        return 1;
    }
    double step = tile * (1.0 - overlap);
    int n = (int)ceil((size - tile) / step) + 1;
    for (int i = 0; i < n; i++)
        pos[i] = n == 1 ? 0 : (int)llround((double)i * (size - tile) / (double)(n - 1));
    return n;
}

/* The old host path. probs: (K, D, H, W), or nm blocks of it when members. */
static int reference(kd_model **models, int nm, int members, const float *img, int C,
                     const int dims[3], const int t[3], int nflip, float *probs) {
    kd_device *dev = kd_model_device(models[0]);
    int K = kd_model_out_channels(models[0]), px[3][64], np[3];
    for (int a = 0; a < 3; a++)
        np[a] = positions(dims[a], t[a], 0.5f, px[a]);
    int tiled = np[0] * np[1] * np[2] > 1, nacc = members ? nm : 1;
    size_t nv = (size_t)dims[0] * dims[1] * dims[2], tv = (size_t)t[0] * t[1] * t[2];
    float *win = malloc(tv * C * 4), *y = malloc(tv * K * 4), *w = malloc(tv * 4),
          *ws = calloc(nv, 4);
    KD_CHECK(win && y && w && ws, "alloc");
    memset(probs, 0, (size_t)nacc * K * nv * 4);
    kd_gaussian_weights(t, w);
    kd_tensor *x;
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, C, t[0], t[1], t[2]), &x));
    float scale = 1.0f / (float)(nflip * (members ? 1 : nm));
    for (int iz = 0; iz < np[0]; iz++)
        for (int iy = 0; iy < np[1]; iy++)
            for (int ix = 0; ix < np[2]; ix++) {
                int o[3] = {px[0][iz], px[1][iy], px[2][ix]};
                for (int f = 0; f < nflip; f++) {
                    kd_ref_window_cut(img, C, dims, o, t, f, win);
                    KD_CHECK_OK(kd_tensor_upload_ndhwc(x, win));
                    for (int m = 0; m < nm; m++) {
                        kd_tensor *out;
                        KD_CHECK_OK(kd_model_forward(models[m], x, 0, &out));
                        KD_CHECK_OK(kd_tensor_download_ndhwc(out, y));
                        kd_model_release(models[m]);
                        kd_ref_window_accumulate(y, K, t, dims, o, f, tiled ? w : NULL, scale,
                                                 probs + (size_t)(members ? m : 0) * K * nv,
                                                 tiled && f == 0 && m == 0 ? ws : NULL);
                    }
                }
            }
    for (int a = 0; a < nacc && tiled; a++)
        kd_ref_window_normalize(probs + (size_t)a * K * nv, K, nv, ws);
    kd_tensor_free(x);
    free(win), free(y), free(w), free(ws);
    return 0;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d;
    }
    return e;
}

/* A smooth 4-channel test image: structure the models respond to, and asymmetric so
 * that every flip changes the output. */
static float *test_image(const int dims[3]) {
    size_t nv = (size_t)dims[0] * dims[1] * dims[2];
    float *img = malloc(4 * nv * sizeof(float));
    if (!img) return NULL;
    for (int c = 0; c < 4; c++)
        for (int z = 0; z < dims[0]; z++)
            for (int y = 0; y < dims[1]; y++)
                for (int x = 0; x < dims[2]; x++)
                    img[(((size_t)c * dims[0] + z) * dims[1] + y) * dims[2] + x] =
                        sinf(0.4f * x + c) * cosf(0.3f * y + 0.1f * z) + 0.05f * (x + 2 * y - z);
    return img;
}

static int two_models(kd_model *m[2]) {
    KD_DEVICE_OR_FAIL(dev);
    KD_CHECK_OK(kd_model_create(dev, SPEC, 11, &m[0]));
    KD_CHECK_OK(kd_model_create(dev, SPEC, 12, &m[1]));
    return 0;
}

/* Catches: any difference between the device path and the host path it replaced:
 * window placement, flips, weights, the weight sum (once per window), the ensemble
 * scale, normalisation, batching (4, and 3 per pass: an uneven last group; 1 by
 * default), whole volume
 * against windows. Tolerance 1e-5 absolute on probabilities (fp32 rounding of a
 * different summation or fusion; a misplaced window changes them by 0.01 and more). */
static int infer_matches_reference(void) {
    kd_model *m[2];
    if (two_models(m)) return 1;
    const int dims[3] = {12, 16, 20}, C = 4, K = 3;
    size_t nv = (size_t)dims[0] * dims[1] * dims[2];
    float *img = test_image(dims), *ref = malloc(2 * K * nv * 4), *got = malloc(2 * K * nv * 4);
    KD_CHECK(img && ref && got, "alloc");
    struct {
        int tile, tta, nm, batch, windows;
    } cases[] = {
        {8, 0, 2, 4, 24}, {8, 4, 1, 3, 24}, {8, 4, 2, 0, 24}, {0, 8, 1, 4, 1}, {0, 4, 2, 0, 1}};
    for (int i = 0; i < 5; i++) {
        kd_infer_opts o;
        kd_infer_opts_default(&o);
        o.tta = cases[i].tta;
        o.batch = cases[i].batch;
        int t[3] = {dims[0], dims[1], dims[2]};
        if (cases[i].tile) {
            o.tile[0] = o.tile[1] = o.tile[2] = cases[i].tile;
            o.force_tiles = 1;
            t[0] = t[1] = t[2] = cases[i].tile;
        }
        int nflip = o.tta ? o.tta : 1;
        if (reference(m, cases[i].nm, 0, img, C, dims, t, nflip, ref)) return 1;
        kd_infer_stats st;
        KD_CHECK_OK(
            kd_infer_volume(m, cases[i].nm, img, C, dims[0], dims[1], dims[2], &o, got, &st));
        double e = max_diff(got, ref, K * nv);
        int want_batch = cases[i].batch > 1 ? cases[i].batch : 1; /* all fit */
        printf("tile %d tta %d models %d: batch %d, %d forwards, max |device - host| %.3g\n",
               cases[i].tile, o.tta, cases[i].nm, st.batch, st.forwards, e);
        KD_CHECK(e <= 1e-5, "case %d: device and host paths differ by %g", i, e);
        KD_CHECK(st.windows == cases[i].windows, "case %d: %d windows", i, st.windows);
        KD_CHECK(st.passes == cases[i].windows * nflip * cases[i].nm, "case %d: %d passes", i,
                 st.passes);
        KD_CHECK(st.batch == want_batch, "case %d: batch %d, expected %d", i, st.batch, want_batch);
        int groups = (cases[i].windows * nflip + st.batch - 1) / st.batch;
        KD_CHECK(st.forwards == groups * cases[i].nm, "case %d: %d forwards", i, st.forwards);
    }
    kd_model_free(m[0]), kd_model_free(m[1]);
    free(img), free(ref), free(got);
    return 0;
}

/* Catches: members accumulated into one another or scaled by the ensemble size, the
 * members' output order, the ensemble mean not the mean of the members. */
static int infer_members(void) {
    kd_model *m[2];
    if (two_models(m)) return 1;
    const int dims[3] = {12, 16, 20}, C = 4, K = 3, t[3] = {8, 8, 8};
    size_t nv = (size_t)dims[0] * dims[1] * dims[2];
    float *img = test_image(dims), *ref = malloc(2 * K * nv * 4), *got = malloc(2 * K * nv * 4),
          *one = malloc(K * nv * 4), *mean = malloc(K * nv * 4);
    KD_CHECK(img && ref && got && one && mean, "alloc");
    kd_infer_opts o;
    kd_infer_opts_default(&o);
    o.tta = 4;
    o.tile[0] = o.tile[1] = o.tile[2] = 8;
    o.force_tiles = 1;
    if (reference(m, 2, 1, img, C, dims, t, 4, ref)) return 1;
    KD_CHECK_OK(kd_infer_volume_members(m, 2, img, C, dims[0], dims[1], dims[2], &o, got, NULL));
    double e = max_diff(got, ref, 2 * K * nv);
    printf("members: max |device - host| %.3g\n", e);
    KD_CHECK(e <= 1e-5, "members differ from the host path by %g", e);
    for (int k = 0; k < 2; k++) {
        KD_CHECK_OK(kd_infer_volume(&m[k], 1, img, C, dims[0], dims[1], dims[2], &o, one, NULL));
        e = max_diff(got + (size_t)k * K * nv, one, K * nv);
        KD_CHECK(e <= 1e-6, "member %d differs from the model alone by %g", k, e);
    }
    KD_CHECK(max_diff(got, got + K * nv, K * nv) > 1e-3, "the two members are the same");
    KD_CHECK_OK(kd_infer_volume(m, 2, img, C, dims[0], dims[1], dims[2], &o, mean, NULL));
    for (size_t i = 0; i < K * nv; i++)
        one[i] = 0.5f * (got[i] + got[K * nv + i]);
    e = max_diff(mean, one, K * nv);
    KD_CHECK(e <= 1e-5, "the ensemble differs from the mean of its members by %g", e);
    kd_model_free(m[0]), kd_model_free(m[1]);
    free(img), free(ref), free(got), free(one), free(mean);
    return 0;
}

/* Catches: labels computed from anything but the probabilities kd_infer_volume returns
 * (the same device sums), the label rules or ET label, the case's crop box and padding
 * mixed up when the labels are uncropped, the host steps (components, small ET) skipped. */
static int infer_labels(void) {
    kd_model *m[2];
    if (two_models(m)) return 1;
    const int dims[3] = {16, 16, 16}, C = 4, K = 3;
    size_t nv = (size_t)dims[0] * dims[1] * dims[2];
    float *img = test_image(dims), *p = malloc(K * nv * 4);
    uint8_t *lab = malloc(nv), *ref = malloc(nv);
    KD_CHECK(img && p && lab && ref, "alloc");
    kd_infer_opts o;
    kd_infer_opts_default(&o);
    o.tta = 4;
    o.tile[0] = o.tile[1] = o.tile[2] = 8;
    o.force_tiles = 1;
    KD_CHECK_OK(kd_infer_volume(m, 2, img, C, dims[0], dims[1], dims[2], &o, p, NULL));
    /* a threshold that splits the outputs into every label */
    float lo = 1, hi = 0;
    for (size_t i = 0; i < K * nv; i++)
        lo = fminf(lo, p[i]), hi = fmaxf(hi, p[i]);
    float th = 0.5f * (lo + hi);
    KD_CHECK_OK(
        kd_infer_volume_labels(m, 2, img, C, dims[0], dims[1], dims[2], &o, th, 4, lab, NULL));
    kd_ref_window_labels(p, nv, th, 4, ref);
    int seen[256] = {0};
    for (size_t i = 0; i < nv; i++) {
        KD_CHECK(lab[i] == ref[i], "voxel %zu: label %d, from the probabilities %d", i, lab[i],
                 ref[i]);
        seen[lab[i]] = 1;
    }
    KD_CHECK(seen[0] && seen[1] && seen[2] && seen[4], "threshold %g: not every label occurs", th);

    /* a whole case: crop box and padding, against post-processing the probabilities */
    kd_case c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "handmade");
    c.channels = C, c.d = dims[0], c.h = dims[1], c.w = dims[2], c.image = img;
    const int orig[3] = {20, 18, 22}, lo3[3] = {2, 1, 3}, hi3[3] = {14, 15, 17}, pad[3] = {2, 1, 1};
    memcpy(c.orig, orig, sizeof orig), memcpy(c.crop_lo, lo3, sizeof lo3);
    memcpy(c.crop_hi, hi3, sizeof hi3), memcpy(c.pad_lo, pad, sizeof pad);
    size_t no = (size_t)orig[0] * orig[1] * orig[2];
    float *po = malloc(K * no * 4);
    uint8_t *lo_ = malloc(no), *lr = malloc(no);
    KD_CHECK(po && lo_ && lr, "alloc");
    kd_postproc_options pp;
    kd_postproc_options_default(&pp);
    pp.threshold = th;
    for (int conv = 0; conv < 2; conv++) {
        pp.labels = conv ? KD_LABELS_2023 : KD_LABELS_2019;
        pp.min_component_fraction = conv ? 0.0 : 0.1;
        KD_CHECK_OK(kd_segment_case(m, 2, &c, &o, po, NULL));
        KD_CHECK_OK(kd_postproc_labels(po, KD_PROB_CDHW, orig[0], orig[1], orig[2], &pp, lr));
        KD_CHECK_OK(kd_segment_case_labels(m, 2, &c, &o, &pp, lo_, NULL));
        size_t tumour = 0;
        for (size_t i = 0; i < no; i++) {
            KD_CHECK(lo_[i] == lr[i], "case voxel %zu: label %d, post-processed %d", i, lo_[i],
                     lr[i]);
            tumour += lr[i] > 0;
        }
        KD_CHECK(tumour > 0, "no tumour labels");
    }
    /* a model without 3 region outputs cannot give labels */
    kd_model *m2;
    KD_CHECK_OK(kd_model_create(kd_model_device(m[0]), SPEC ":out=2", 1, &m2));
    kd_status st =
        kd_infer_volume_labels(&m2, 1, img, C, dims[0], dims[1], dims[2], &o, 0.5f, 4, lab, NULL);
    KD_CHECK(st == KD_ERR_SHAPE && strstr(kd_last_error(), "3 region"), "%s", kd_last_error());
    kd_model_free(m2);
    kd_model_free(m[0]), kd_model_free(m[1]);
    free(img), free(p), free(lab), free(ref), free(po), free(lo_), free(lr);
    return 0;
}

/* Catches: padding read from outside the volume, padded voxels accumulated, a volume
 * whose sizes are not multiples of the divisor refused or cropped wrongly: the result
 * equals inference on the zero-padded volume, cropped; windows over such a volume
 * equal the host path. */
static int infer_padding(void) {
    kd_model *m[2];
    if (two_models(m)) return 1;
    const int dims[3] = {11, 13, 15}, pd[3] = {12, 14, 16}, C = 4, K = 3;
    size_t nv = (size_t)dims[0] * dims[1] * dims[2], np = (size_t)pd[0] * pd[1] * pd[2];
    float *img = test_image(dims), *imp = calloc(C * np, 4), *a = malloc(K * nv * 4),
          *b = malloc(K * np * 4), *ref = malloc(K * nv * 4);
    KD_CHECK(img && imp && a && b && ref, "alloc");
    for (int c = 0; c < C; c++)
        for (int z = 0; z < dims[0]; z++)
            for (int y = 0; y < dims[1]; y++)
                memcpy(imp + (((size_t)c * pd[0] + z) * pd[1] + y) * pd[2],
                       img + (((size_t)c * dims[0] + z) * dims[1] + y) * dims[2], dims[2] * 4);
    kd_infer_opts o;
    kd_infer_opts_default(&o);
    o.tta = 4;
    kd_infer_stats st;
    KD_CHECK_OK(kd_infer_volume(m, 1, img, C, dims[0], dims[1], dims[2], &o, a, &st));
    KD_CHECK(st.windows == 1 && st.tile[0] == 12 && st.tile[1] == 14 && st.tile[2] == 16,
             "whole volume padded to 12x14x16, got %d windows of %dx%dx%d", st.windows, st.tile[0],
             st.tile[1], st.tile[2]);
    KD_CHECK_OK(kd_infer_volume(m, 1, imp, C, pd[0], pd[1], pd[2], &o, b, NULL));
    double e = 0;
    for (int k = 0; k < K; k++)
        for (int z = 0; z < dims[0]; z++)
            for (int y = 0; y < dims[1]; y++)
                for (int x = 0; x < dims[2]; x++) {
                    double d =
                        fabs((double)a[(((size_t)k * dims[0] + z) * dims[1] + y) * dims[2] + x] -
                             b[(((size_t)k * pd[0] + z) * pd[1] + y) * pd[2] + x]);
                    if (!(d <= e)) e = d;
                }
    printf("padded whole volume: max |odd - padded and cropped| %.3g\n", e);
    KD_CHECK(e <= 1e-6, "the odd-sized volume differs from the padded one by %g", e);
    /* windows of 8 over 11x13x15, the last ones hanging over no border */
    o.tile[0] = o.tile[1] = o.tile[2] = 8;
    o.force_tiles = 1;
    const int t[3] = {8, 8, 8};
    if (reference(m, 1, 0, img, C, dims, t, 4, ref)) return 1;
    KD_CHECK_OK(kd_infer_volume(m, 1, img, C, dims[0], dims[1], dims[2], &o, a, NULL));
    e = max_diff(a, ref, K * nv);
    KD_CHECK(e <= 1e-5, "windows over an odd-sized volume differ from the host path by %g", e);
    /* a tile larger than an odd axis: padded at its far end */
    o.tile[0] = 12;
    o.tile[1] = o.tile[2] = 8;
    const int t2[3] = {12, 8, 8};
    if (reference(m, 1, 0, img, C, dims, t2, 4, ref)) return 1;
    KD_CHECK_OK(kd_infer_volume(m, 1, img, C, dims[0], dims[1], dims[2], &o, a, &st));
    KD_CHECK(st.tile[0] == 12, "tile %d along D", st.tile[0]);
    e = max_diff(a, ref, K * nv);
    KD_CHECK(e <= 1e-5, "a tile padded along D differs from the host path by %g", e);
    kd_model_free(m[0]), kd_model_free(m[1]);
    free(img), free(imp), free(a), free(b), free(ref);
    return 0;
}

/* Catches: the batch chosen without the memory plan (or against the budget), and the
 * budget's resident part (image, accumulators, weight sum) left out of the choice. */
static int infer_batch_memory(void) {
    kd_model *m[2];
    if (two_models(m)) return 1;
    const int dims[3] = {16, 16, 16}, C = 4, K = 3;
    size_t nv = (size_t)dims[0] * dims[1] * dims[2], tv = 8 * 8 * 8;
    float *img = test_image(dims), *p = malloc(K * nv * 4);
    KD_CHECK(img && p, "alloc");
    size_t plan1, plan2;
    KD_CHECK_OK(kd_model_plan(m[0], kd_shape5(1, C, 8, 8, 8), 0, &plan1));
    KD_CHECK_OK(kd_model_plan(m[0], kd_shape5(2, C, 8, 8, 8), 0, &plan2));
    size_t resident = ((C + K + 1) * nv + tv) * 4;
    kd_infer_opts o;
    kd_infer_opts_default(&o);
    o.tta = 4;
    o.batch = 4;
    o.tile[0] = o.tile[1] = o.tile[2] = 8;
    o.force_tiles = 1;
    kd_infer_stats st;
    struct {
        size_t budget;
        int batch;
    } cases[] = {{resident + plan2 + 2 * C * tv * 4, 2},
                 {resident + plan2 + 2 * C * tv * 4 - 1, 1},
                 {(size_t)1 << 30, 4}};
    for (int i = 0; i < 3; i++) {
        o.mem_budget = cases[i].budget;
        KD_CHECK_OK(kd_infer_volume(m, 1, img, C, dims[0], dims[1], dims[2], &o, p, &st));
        printf("budget %zu bytes: batch %d (plan %zu for 1, %zu for 2)\n", cases[i].budget,
               st.batch, plan1, plan2);
        KD_CHECK(st.batch == cases[i].batch, "budget %zu: batch %d, expected %d", cases[i].budget,
                 st.batch, cases[i].batch);
    }
    /* whole volume, automatic tile: a budget below the whole volume's plan gives windows */
    o.force_tiles = 0;
    memset(o.tile, 0, sizeof o.tile);
    size_t whole;
    KD_CHECK_OK(kd_model_plan(m[0], kd_shape5(1, C, 16, 16, 16), 0, &whole));
    o.mem_budget = whole + (C + K) * nv * 4 + C * nv * 4;
    o.batch = 1;
    KD_CHECK_OK(kd_infer_volume(m, 1, img, C, dims[0], dims[1], dims[2], &o, p, &st));
    KD_CHECK(st.windows == 1, "the whole volume fits: %d windows", st.windows);
    o.mem_budget -= 1;
    KD_CHECK_OK(kd_infer_volume(m, 1, img, C, dims[0], dims[1], dims[2], &o, p, &st));
    KD_CHECK(st.windows > 1, "one byte short of the whole volume: still %d window", st.windows);
    kd_model_free(m[0]), kd_model_free(m[1]);
    free(img), free(p);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"infer_matches_reference", infer_matches_reference},
        {"infer_members", infer_members},
        {"infer_labels", infer_labels},
        {"infer_padding", infer_padding},
        {"infer_batch_memory", infer_batch_memory},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
