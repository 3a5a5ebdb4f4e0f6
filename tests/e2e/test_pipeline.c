/* End to end: the commands on small generated cohorts, inference properties,
 * distillation pieces, and the demo. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../kdtest.h"
#include "kdseg/data.h"
#include "kdseg/infer.h"
#include "kdseg/train.h"
#include "kdseg/metrics.h"
#include "kdseg/sched.h"
#include "kdseg/domain.h"
#include "kdseg/train.h"

/* the shared helpers of tests/kdtest.c */
#define show_log() kd_test_show_log(20)
#define save_model kd_test_save_model
#define tmp kd_test_path
#define log_has kd_test_log_has
#define log_clear kd_test_log_clear

#define kdseg kd_test_kdseg /* (tests/kdtest.c) */

/* TMP/t1.kds, a small student, and TMP/t2.kds, a model of spec second: two untrained
 * "teachers" of different architectures. */
static int two_models(kd_device *dev, const char *second) {
    return save_model(dev, "resunet:widths=8,16:enc=1,1:dec=1", 1, tmp("t1.kds")) ||
           save_model(dev, second, 2, tmp("t2.kds"));
}

/* Catches: annotate averaging wrongly, weighting one teacher, or writing the wrong grid. */
static int annotate_equals_average(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (two_models(dev, "unet3d:widths=8,16")) return 1;
    KD_CHECK(kdseg("phantom --out %s --cases 2 --size 40,36,32 --unlabeled --seed 3", tmp("unl")) == 0, "phantom");
    int r = kdseg("annotate --teacher %s --teacher %s --dataset %s --out %s --soft", tmp("t1.kds"),
                  tmp("t2.kds"), tmp("unl"), tmp("ann"));
    r |= kdseg("segment --checkpoint %s --dataset %s --out %s --probabilities f32", tmp("t1.kds"), tmp("unl"), tmp("s1"));
    r |= kdseg("segment --checkpoint %s --dataset %s --out %s --probabilities f32", tmp("t2.kds"), tmp("unl"), tmp("s2"));
    if (r) show_log();
    KD_CHECK(r == 0, "commands");
    for (int c = 0; c < 2; c++) {
        char p[1024];
        kd_volume *a, *b1, *b2;
        snprintf(p, sizeof p, "%s/KDPhantom_%03d.nii.gz", tmp("ann"), c);
        KD_CHECK_OK(kd_nifti_read(p, &a));
        snprintf(p, sizeof p, "%s/KDPhantom_%03d_prob.nii.gz", tmp("s1"), c);
        KD_CHECK_OK(kd_nifti_read(p, &b1));
        snprintf(p, sizeof p, "%s/KDPhantom_%03d_prob.nii.gz", tmp("s2"), c);
        KD_CHECK_OK(kd_nifti_read(p, &b2));
        KD_CHECK(a->nt == 3 && a->nx == 32 && a->ny == 36 && a->nz == 40, "4-D soft annotation on the original grid");
        KD_CHECK(!strcmp(a->info.datatype_name, "UINT8"), "uint8-quantised: %s", a->info.datatype_name);
        /* stored as round(255 p) with scl_slope 1/255: the reader's values are p */
        KD_CHECK(fabs(a->info.scl_slope - 1.0 / 255) < 1e-9, "scl_slope %g", a->info.scl_slope);
        size_t n = (size_t)a->nx * a->ny * a->nz * 3;
        double worst = 0;
        for (size_t k = 0; k < n; k++) {
            double avg = 0.5 * ((double)b1->data[k] + (double)b2->data[k]);
            double e = fabs((double)a->data[k] - avg);
            if (e > worst) worst = e;
        }
        /* one quantisation step (1/255) is allowed */
        KD_CHECK(worst <= 1.0 / 255 + 1e-6, "case %d: annotation differs from the average by %g", c, worst);
        kd_volume_free(a);
        kd_volume_free(b1);
        kd_volume_free(b2);
    }
    return 0;
}

static double mtime_of(const char *p) {
    struct stat st;
    return stat(p, &st) ? -1 : (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
}

/* Catches: annotate redoing finished cases or skipping unfinished ones. */
static int annotate_resume(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (two_models(dev, "cascade:widths=8,16")) return 1;
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --unlabeled --seed 4", tmp("unl")) == 0, "phantom");
    KD_CHECK(kdseg("annotate --teacher %s --teacher %s --dataset %s --out %s", tmp("t1.kds"),
                   tmp("t2.kds"), tmp("unl"), tmp("ann")) == 0, "annotate");
    char p0[1024], p1[1024], p2[1024];
    snprintf(p0, sizeof p0, "%s/KDPhantom_000.nii.gz", tmp("ann"));
    snprintf(p1, sizeof p1, "%s/KDPhantom_001.nii.gz", tmp("ann"));
    snprintf(p2, sizeof p2, "%s/agreement.csv", tmp("ann"));
    double m0 = mtime_of(p0);
    KD_CHECK(m0 > 0 && mtime_of(p1) > 0, "annotations written");
    remove(p1);
    KD_CHECK(kdseg("annotate --teacher %s --teacher %s --dataset %s --out %s", tmp("t1.kds"),
                   tmp("t2.kds"), tmp("unl"), tmp("ann")) == 0, "annotate again");
    KD_CHECK(mtime_of(p0) == m0, "a finished case was redone");
    KD_CHECK(mtime_of(p1) > 0, "the missing case was annotated");
    /* every case exactly once in the agreement CSV: the redone case's row replaces the
     * old one (the rerun drops rows of cases whose output is missing) */
    FILE *f = fopen(p2, "r");
    int rows = 0, c1 = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        rows++;
        c1 += !strncmp(line, "KDPhantom_001,", 14);
    }
    if (f) fclose(f);
    KD_CHECK(rows == 1 + 3 && c1 == 1, "agreement rows %d (KDPhantom_001: %d)", rows, c1);
    /* labels are BraTS 2019 values of a label map on the original grid */
    kd_label_map *lm;
    KD_CHECK_OK(kd_label_map_read(p0, &lm));
    KD_CHECK(lm->d == 32 && lm->h == 32 && lm->w == 32, "grid");
    for (size_t k = 0; k < 32 * 32 * 32; k++)
        KD_CHECK(lm->labels[k] <= 4 && lm->labels[k] != 3, "label %d", lm->labels[k]);
    kd_label_map_free(lm);
    return 0;
}

/* Catches: online soft targets computed on another batch or weighted wrongly. */
static int online_targets(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_model *st, *t[2];
    KD_CHECK_OK(kd_model_create(dev, "resunet:widths=8,16:enc=1,1:dec=1", 1, &st));
    KD_CHECK_OK(kd_model_create(dev, "unet3d:widths=8,16", 2, &t[0]));
    KD_CHECK_OK(kd_model_create(dev, "resnext-se:widths=16,32:enc=1,1", 3, &t[1]));
    kd_optim *o;
    kd_optim_config oc;
    kd_optim_defaults(&oc);
    KD_CHECK_OK(kd_optim_create(st, &oc, &o));
    kd_sched_config c;
    memset(&c, 0, sizeof c);
    c.batch = 2;
    c.patch[0] = c.patch[1] = c.patch[2] = 16;
    c.lr = 1e-3f;
    kd_schedule_defaults(&c.sched);
    c.distill_loss = KD_LOSS_BCE;
    c.distill_weight = 1;
    kd_sched *s;
    KD_CHECK_OK(kd_sched_create(st, o, t, 2, &c, &s));
    kd_shape xs = kd_shape5(2, 4, 16, 16, 16), ts = kd_shape5(2, 3, 16, 16, 16);
    size_t nx = kd_shape_numel(xs), nt = kd_shape_numel(ts);
    float *hx = malloc(nx * 4), *a = malloc(nt * 4), *b = malloc(nt * 4), *got = malloc(nt * 4);
    kd_test_randu(hx, nx, 9, -2, 2);
    kd_tensor *x, *tt, *y;
    KD_CHECK_OK(kd_tensor_create(dev, xs, &x));
    KD_CHECK_OK(kd_tensor_upload(x, hx));
    KD_CHECK_OK(kd_tensor_create(dev, ts, &tt));
    KD_CHECK_OK(kd_sched_teacher_targets(s, x, tt));
    KD_CHECK_OK(kd_tensor_download(tt, got));
    KD_CHECK_OK(kd_model_forward(t[0], x, 0, &y));
    KD_CHECK_OK(kd_tensor_download(y, a));
    kd_model_release(t[0]);
    KD_CHECK_OK(kd_model_forward(t[1], x, 0, &y));
    KD_CHECK_OK(kd_tensor_download(y, b));
    kd_model_release(t[1]);
    for (size_t k = 0; k < nt; k++)
        KD_CHECK(fabsf(got[k] - 0.5f * (a[k] + b[k])) <= 1e-6f, "target %zu: %g vs %g", k,
                 (double)got[k], 0.5 * (a[k] + b[k]));
    free(hx);
    free(a);
    free(b);
    free(got);
    kd_tensor_free(x);
    kd_tensor_free(tt);
    kd_sched_free(s);
    kd_optim_free(o);
    for (int i = 0; i < 2; i++) kd_model_free(t[i]);
    kd_model_free(st);
    return 0;
}

/* Make every conv kernel symmetric under flips of each axis: the network is then
 * flip-equivariant (trilinear upsampling, GroupNorm and 1x1 convs commute with flips). */
static int symmetrise(kd_model *m) {
    for (int i = 0; i < kd_model_param_tensors(m); i++) {
        int nd, d[5];
        size_t n = kd_model_param_shape(m, i, &nd, d);
        if (nd != 5 || d[2] == 1) continue;
        float *w = malloc(n * 4), *s = malloc(n * 4);
        KD_CHECK_OK(kd_model_param_get(m, i, w));
        int k = d[2], kv = k * k * k;
        for (size_t oc = 0; oc < n / kv; oc++)
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++)
                    for (int c = 0; c < k; c++) {
                        double acc = 0;
                        for (int f = 0; f < 8; f++) {
                            int aa = f & 4 ? k - 1 - a : a, bb = f & 2 ? k - 1 - b : b, cc = f & 1 ? k - 1 - c : c;
                            acc += w[oc * kv + (aa * k + bb) * k + cc];
                        }
                        s[oc * kv + (a * k + b) * k + c] = (float)(acc / 8);
                    }
        KD_CHECK_OK(kd_model_param_set(m, i, s));
        free(w);
        free(s);
    }
    return 0;
}

/* Catches: flips applied and not undone (or undone on the wrong axis): for a
 * flip-equivariant model, TTA must equal no TTA. Tolerance 1e-5 (float rounding of the
 * mirrored arithmetic). */
static int tta_symmetric(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_model *m;
    KD_CHECK_OK(kd_model_create(dev, "resunet:widths=8,16,32:enc=1,1,1:dec=1,1", 5, &m));
    if (symmetrise(m)) return 1;
    int D = 16, H = 24, W = 32;
    size_t nv = (size_t)D * H * W;
    float *img = malloc(4 * nv * 4), *p0 = malloc(3 * nv * 4), *p4 = malloc(3 * nv * 4),
          *p8 = malloc(3 * nv * 4);
    kd_test_randu(img, 4 * nv, 1, -1, 1);
    kd_infer_opts o;
    kd_infer_opts_default(&o);
    KD_CHECK_OK(kd_infer_volume(&m, 1, img, 4, D, H, W, &o, p0, NULL));
    o.tta = 4;
    KD_CHECK_OK(kd_infer_volume(&m, 1, img, 4, D, H, W, &o, p4, NULL));
    o.tta = 8;
    kd_infer_stats st;
    KD_CHECK_OK(kd_infer_volume(&m, 1, img, 4, D, H, W, &o, p8, &st));
    KD_CHECK(st.passes == 8, "8 passes, got %d", st.passes);
    double e4 = 0, e8 = 0, spread = 0;
    for (size_t k = 0; k < 3 * nv; k++) {
        e4 = fmax(e4, fabs((double)p4[k] - p0[k]));
        e8 = fmax(e8, fabs((double)p8[k] - p0[k]));
        spread = fmax(spread, fabs((double)p0[k] - p0[0]));
    }
    printf("max |tta4 - none| %.3g, |tta8 - none| %.3g (output spread %.3g)\n", e4, e8, spread);
    KD_CHECK(spread > 1e-3, "the output is not constant");
    KD_CHECK(e4 <= 1e-5 && e8 <= 1e-5, "TTA of a symmetric model changed the output: %g %g", e4, e8);
    /* and a non-symmetric model does change (so the flips really happen) */
    kd_model *m2;
    KD_CHECK_OK(kd_model_create(dev, "resunet:widths=8,16,32:enc=1,1,1:dec=1,1", 5, &m2));
    o.tta = 0;
    KD_CHECK_OK(kd_infer_volume(&m2, 1, img, 4, D, H, W, &o, p0, NULL));
    o.tta = 4;
    KD_CHECK_OK(kd_infer_volume(&m2, 1, img, 4, D, H, W, &o, p4, NULL));
    e4 = 0;
    for (size_t k = 0; k < 3 * nv; k++) e4 = fmax(e4, fabs((double)p4[k] - p0[k]));
    KD_CHECK(e4 > 1e-4, "TTA had no effect on an asymmetric model");
    kd_model_free(m2);
    kd_model_free(m);
    free(img);
    free(p0);
    free(p4);
    free(p8);
    return 0;
}

/* Catches: seams, wrong window placement or blending weights. Windows see less context
 * and GroupNorm statistics per window, so outputs differ a little: stated tolerance,
 * mean |difference| <= 0.03, and where the whole-volume output is confident
 * (|p - 0.5| > 0.1) the thresholded regions agree on >= 98% of voxels. A misplaced
 * window or missing normalisation of the blend gives differences of 0.1 and more. */
static int sliding_window(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_model *m;
    KD_CHECK_OK(kd_model_create(dev, "resunet:widths=8,16:enc=1,1:dec=1", 7, &m));
    int D = 48, H = 48, W = 48;
    size_t nv = (size_t)D * H * W;
    float *img = malloc(4 * nv * 4), *a = malloc(3 * nv * 4), *b = malloc(3 * nv * 4);
    /* smooth input so the model sees structure, not noise */
    for (int c = 0; c < 4; c++)
        for (int z = 0; z < D; z++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    img[(((size_t)c * D + z) * H + y) * W + x] =
                        sinf(0.2f * x + c) * cosf(0.15f * y) + 0.5f * sinf(0.1f * z * (c + 1));
    kd_infer_opts o;
    kd_infer_opts_default(&o);
    kd_infer_stats st;
    KD_CHECK_OK(kd_infer_volume(&m, 1, img, 4, D, H, W, &o, a, &st));
    KD_CHECK(st.windows == 1, "whole volume");
    o.tile[0] = o.tile[1] = o.tile[2] = 32;
    o.force_tiles = 1;
    KD_CHECK_OK(kd_infer_volume(&m, 1, img, 4, D, H, W, &o, b, &st));
    KD_CHECK(st.windows == 8, "2x2x2 windows of 32 over 48 at overlap 0.5, got %d", st.windows);
    double mad = 0;
    size_t agree = 0, confident = 0;
    for (size_t k = 0; k < 3 * nv; k++) {
        mad += fabs((double)a[k] - b[k]);
        if (fabsf(a[k] - 0.5f) > 0.1f) {
            confident++;
            agree += (a[k] > 0.5f) == (b[k] > 0.5f);
        }
    }
    mad /= 3 * nv;
    double ag = confident ? (double)agree / confident : 0;
    printf("mean |whole - windows| %.4f, agreement %.4f over %zu confident voxels\n", mad, ag, confident);
    KD_CHECK(confident > nv / 10, "too few confident voxels: %zu", confident);
    KD_CHECK(mad <= 0.03, "mean difference %g", mad);
    KD_CHECK(ag >= 0.98, "agreement %g", ag);
    /* the Gaussian weights are positive, peak 1 in the centre */
    float wts[8 * 8 * 8];
    int t[3] = {8, 8, 8};
    kd_gaussian_weights(t, wts);
    KD_CHECK(wts[0] > 0 && wts[0] < wts[(4 * 8 + 4) * 8 + 4], "weights");
    kd_model_free(m);
    free(img);
    free(a);
    free(b);
    return 0;
}

/* Catches: outputs written on another grid or with another affine. */
static int segment_geometry(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (save_model(dev, "resunet:widths=8,16:enc=1,1:dec=1", 1, tmp("m.kds"))) return 1;
    KD_CHECK(kdseg("phantom --out %s --cases 1 --size 40,44,36 --seed 5 --layout brats2023", tmp("c")) == 0, "phantom");
    int r = kdseg("segment --checkpoint %s --dataset %s --out %s --probabilities --png", tmp("m.kds"),
                  tmp("c"), tmp("seg"));
    if (r) show_log();
    KD_CHECK(r == 0, "segment");
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/KDPH-00000-000/KDPH-00000-000-t1n.nii.gz", tmp("c"));
    snprintf(q, sizeof q, "%s/KDPH-00000-000.nii.gz", tmp("seg"));
    kd_volume *a, *b, *pr;
    KD_CHECK_OK(kd_nifti_read_header(p, &a));
    KD_CHECK_OK(kd_nifti_read(q, &b));
    KD_CHECK(a->nx == b->nx && a->ny == b->ny && a->nz == b->nz && b->nt == 1, "grid");
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            KD_CHECK(fabs(a->info.affine[i][j] - b->info.affine[i][j]) < 1e-5, "affine [%d][%d]", i, j);
    KD_CHECK(!strcmp(b->info.datatype_name, "UINT8"), "uint8 labels");
    size_t n = (size_t)b->nx * b->ny * b->nz;
    for (size_t k = 0; k < n; k++)
        KD_CHECK(b->data[k] == 0 || b->data[k] == 1 || b->data[k] == 2 || b->data[k] == 3,
                 "BraTS 2023 labels from a 2023 input, got %g", (double)b->data[k]);
    snprintf(q, sizeof q, "%s/KDPH-00000-000_prob.nii.gz", tmp("seg"));
    KD_CHECK_OK(kd_nifti_read_header(q, &pr));
    KD_CHECK(pr->nt == 3 && pr->nx == a->nx, "4-D probabilities");
    snprintf(q, sizeof q, "%s/KDPH-00000-000.png", tmp("seg"));
    struct stat st;
    KD_CHECK(stat(q, &st) == 0 && st.st_size > 1000, "png");
    kd_volume_free(a);
    kd_volume_free(b);
    kd_volume_free(pr);
    return 0;
}

/* Are two files byte for byte the same? */
static int same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) same = 0;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* Catches: segment ignoring the training patch stored in the checkpoint (inferring over
 * the whole volume, whose GroupNorm statistics differ from the patches the model learnt
 * on), --tile whole not giving one pass, or a checkpoint without a patch not falling
 * back to the whole volume. */
static int segment_training_patch(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (save_model(dev, "resunet:widths=8,16:enc=1,1:dec=1", 1, tmp("nopatch.kds"))) return 1;
    KD_CHECK(kdseg("phantom --out %s --cases 2 --size 32 --seed 9", tmp("d")) == 0, "phantom");
    KD_CHECK(kdseg("train --dataset %s --out %s --arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 "
                   "--steps 2 --val-cases 1 --val-every 0 --threads 0 --quiet", tmp("d"), tmp("m")) == 0,
             "train at patch 16");
    char model[1024];
    snprintf(model, sizeof model, "%s/m/last.kds", kd_test_tmpdir());
    const char *runs[4][2] = {{"auto", ""}, {"t16", "--tile 16,16,16"}, {"whole", "--tile whole"},
                              {"nopatch", ""}};
    for (int i = 0; i < 4; i++) {
        log_clear();
        KD_CHECK(kdseg("segment --checkpoint %s --dataset %s --out %s --probabilities f32 %s",
                       i == 3 ? tmp("nopatch.kds") : model, tmp("d"), tmp(runs[i][0]), runs[i][1]) == 0,
                 "segment %s", runs[i][0]);
        int windows = log_has("sliding windows"), whole = log_has("whole volume");
        KD_CHECK(i == 0 || i == 1 ? windows && !whole : whole && !windows,
                 "%s: windows %d whole %d", runs[i][0], windows, whole);
    }
    char a[1024], b[1024], c[1024];
    snprintf(a, sizeof a, "%s/KDPhantom_000_prob.nii.gz", tmp("auto"));
    snprintf(b, sizeof b, "%s/KDPhantom_000_prob.nii.gz", tmp("t16"));
    snprintf(c, sizeof c, "%s/KDPhantom_000_prob.nii.gz", tmp("whole"));
    KD_CHECK(same_bytes(a, b), "default = windows of the training patch");
    KD_CHECK(!same_bytes(a, c), "windows differ from one whole-volume pass");
    return 0;
}

/* The real BraTS case: a label map on the original 240x240x155 grid and affine. */
static int segment_real_case(void) {
    const char *sh = kd_test_shared_dir();
    if (!sh) {
        printf("SKIP: ../shared/data is absent\n");
        return KD_TEST_SKIP;
    }
    KD_DEVICE_OR_FAIL(dev);
    if (save_model(dev, "resunet:widths=8,16:enc=1,1:dec=1", 1, tmp("m.kds"))) return 1;
    char cased[1024];
    snprintf(cased, sizeof cased, "%s/data/brats2023-sample/BraTS-GLI-00001-000", sh);
    int r = kdseg("segment --checkpoint %s --case %s --out %s", tmp("m.kds"), cased, tmp("real"));
    if (r) show_log();
    KD_CHECK(r == 0, "segment the real case");
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/BraTS-GLI-00001-000-t1n.nii.gz", cased);
    snprintf(q, sizeof q, "%s/BraTS-GLI-00001-000.nii.gz", tmp("real"));
    kd_volume *a, *b;
    KD_CHECK_OK(kd_nifti_read_header(p, &a));
    KD_CHECK_OK(kd_nifti_read_header(q, &b));
    KD_CHECK(b->nx == 240 && b->ny == 240 && b->nz == 155, "grid %dx%dx%d", b->nx, b->ny, b->nz);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            KD_CHECK(fabs(a->info.affine[i][j] - b->info.affine[i][j]) < 1e-5, "affine");
    kd_volume_free(a);
    kd_volume_free(b);
    return 0;
}

/* The README's "Train on your own BraTS data" commands, short (4 steps, a tiny student),
 * on the shared real labeled cases: three to train on (one of them validates), one held
 * out. Scores belong to the benchmark (tools/bench/loo_real.sh); this checks that the
 * commands run on real scans (two modalities, float32, BraTS 2013 labels) and what they
 * write: best.kds and last.kds recording the recipe they were trained with, a log of every
 * step and validation, a label map on the held-out case's own grid and affine, and the
 * evaluation's row for it. */
static int train_real_cases(void) {
    const char *sh = kd_test_shared_dir();
    char data[1024];
    snprintf(data, sizeof data, "%s/data/brats2013-flair-t1ce", sh ? sh : "../shared");
    struct stat sb;
    if (!sh || stat(data, &sb) != 0) {
        printf("SKIP: %s is absent (the shared real labeled cases)\n", data);
        return KD_TEST_SKIP;
    }
    const char *names[] = {"brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1",
                           "brats_2013_pat0006_1"};
    KD_CHECK(mkdir(tmp("train"), 0755) == 0 && mkdir(tmp("test"), 0755) == 0, "folders");
    for (int i = 0; i < 4; i++) {
        char src[2048], dst[2048];
        snprintf(src, sizeof src, "%s/%s", data, names[i]);
        snprintf(dst, sizeof dst, "%s/%s", tmp(i < 3 ? "train" : "test"), names[i]);
        KD_CHECK(stat(src, &sb) == 0 && symlink(src, dst) == 0, "link %s", src);
    }
    int r = kdseg("train --dataset %s --modalities t1ce,flair --arch resunet:widths=8,16:enc=1,1:dec=1:in=2 "
                  "--out %s --steps 4 --patch 64 --batch 1 --val-every 2 --quiet", tmp("train"), tmp("model"));
    if (!r) r = kdseg("segment --checkpoint %s/best.kds --dataset %s --modalities t1ce,flair --out %s",
                      tmp("model"), tmp("test"), tmp("pred"));
    if (!r) r = kdseg("evaluate --pred %s --ref %s --csv %s", tmp("pred"), tmp("test"), tmp("eval.csv"));
    if (r) show_log();
    KD_CHECK(r == 0, "train, segment, evaluate");
    /* the model knows its domain: a model trained on real scans segments another real scan
     * without a warning; a phantom-trained one warns, and inspect --model says why */
    KD_CHECK(!log_has("far from what"), "a real-trained model warned on a real case");
    r = kdseg("train --synthetic --recipe phantom --cases 3 --size 32 --patch 16 --steps 1 --modalities "
              "t1ce,flair --arch resunet:widths=8,16:enc=1,1:dec=1:in=2 --out %s --quiet", tmp("ph"));
    log_clear();
    if (!r) r = kdseg("segment --checkpoint %s/last.kds --dataset %s --modalities t1ce,flair --out %s", tmp("ph"),
                      tmp("test"), tmp("pred-ph"));
    if (r) show_log();
    KD_CHECK(r == 0 && log_has("phantom-trained model on a real scan") && log_has("brain "),
             "segment with a phantom-trained model: no domain warning");
    log_clear();
    r = kdseg("inspect --case %s/%s --model %s/last.kds", tmp("test"), names[3], tmp("ph"));
    KD_CHECK(r == 0 && log_has("far from the training data: a phantom-trained model on a real scan") &&
                 log_has("modalities") && log_has("t1ce,flair"),
             "inspect --model: no comparison");
    KD_DEVICE_OR_FAIL(dev);
    for (int k = 0; k < 2; k++) {
        char path[2048];
        kd_ckpt_meta meta;
        snprintf(path, sizeof path, "%s/%s", tmp("model"), k ? "best.kds" : "last.kds");
        kd_model *m = NULL;
        KD_CHECK_OK(kd_checkpoint_load(path, dev, &m, NULL, NULL, &meta));
        KD_CHECK(!strcmp(meta.recipe, "real"), "%s: recipe '%s'", path, meta.recipe);
        /* the domain record: the two cases trained on (the third validates) */
        const kd_domain *d = &meta.domain;
        KD_CHECK(d->cases == 2 && d->channels == 2 && !strcmp(d->kind, "real") &&
                     !strcmp(d->layout, "brats2018") && !strcmp(d->modalities, "t1ce,flair"),
                 "%s: domain %d cases, %d channels, %s %s %s", path, d->cases, d->channels, d->kind,
                 d->layout, d->modalities);
        KD_CHECK(d->brain_ml[0] > 1000 && d->brain_ml[1] < 2000 && d->spacing[0] == 1, "%s: brain %g-%g mL",
                 path, d->brain_ml[0], d->brain_ml[1]);
        KD_CHECK(kd_model_in_channels(m) == 2, "two modalities");
        kd_model_free(m);
    }
    char line[4096];
    int steps = 0, validations = 0;
    FILE *f = fopen(tmp("model/train.csv"), "r");
    KD_CHECK(f, "train.csv");
    while (fgets(line, sizeof line, f)) {
        steps += line[0] >= '0' && line[0] <= '9';
        validations += line[0] >= '0' && line[0] <= '9' && line[strlen(line) - 2] != ',';
    }
    fclose(f);
    KD_CHECK(steps == 4 && validations == 2, "train.csv: %d steps, %d validations", steps, validations);
    char p[2048], q[2048];
    snprintf(p, sizeof p, "%s/%s/%s_flair.nii.gz", data, names[3], names[3]);
    snprintf(q, sizeof q, "%s/%s.nii.gz", tmp("pred"), names[3]);
    kd_volume *a, *b;
    KD_CHECK_OK(kd_nifti_read_header(p, &a));
    KD_CHECK_OK(kd_nifti_read(q, &b));
    KD_CHECK(b->nx == a->nx && b->ny == a->ny && b->nz == a->nz && b->nt == 1, "grid %dx%dx%d",
             b->nx, b->ny, b->nz);
    KD_CHECK(!strcmp(b->info.datatype_name, "UINT8"), "uint8 labels");
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            KD_CHECK(fabs(a->info.affine[i][j] - b->info.affine[i][j]) < 1e-5, "affine");
    for (size_t i = 0; i < (size_t)b->nx * b->ny * b->nz; i++)
        KD_CHECK(b->data[i] == 0 || b->data[i] == 1 || b->data[i] == 2 || b->data[i] == 4,
                 "BraTS 2019 label %g", (double)b->data[i]);
    kd_volume_free(a);
    kd_volume_free(b);
    f = fopen(tmp("eval.csv"), "r");
    KD_CHECK(f, "eval.csv");
    int rows = 0, ok = 0;
    while (fgets(line, sizeof line, f)) {
        rows++;
        ok += !strncmp(line, names[3], strlen(names[3])) && strstr(line, ",ok,");
    }
    fclose(f);
    KD_CHECK(rows == 2 && ok == 1, "eval.csv: %d rows, held-out case scored: %d", rows, ok);
    return 0;
}

/* Catches: `kdseg train --resume` not continuing where it stopped. */
static int train_resume_cli(void) {
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --seed 6", tmp("d")) == 0, "phantom");
    const char *common = "--arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 --lr 1e-3 "
                         "--val-every 4 --ckpt-every 2 --quiet --margin 4 --threads 0";
    KD_CHECK(kdseg("train --dataset %s --out %s --steps 8 %s", tmp("d"), tmp("a"), common) == 0, "straight");
    KD_CHECK(kdseg("train --dataset %s --out %s --steps 5 %s", tmp("d"), tmp("b"), common) == 0, "first part");
    KD_CHECK(kdseg("train --dataset %s --out %s --steps 8 --resume %s", tmp("d"), tmp("b"), common) == 0, "resumed");
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/train.csv", tmp("a"));
    snprintf(pb, sizeof pb, "%s/train.csv", tmp("b"));
    FILE *fa = fopen(pa, "r"), *fb = fopen(pb, "r");
    KD_CHECK(fa && fb, "csv");
    char la[512], lb[512];
    int rows = 0;
    while (fgets(la, sizeof la, fa) && fgets(lb, sizeof lb, fb)) {
        /* step, kind, loss must match; the time column differs */
        char *ca = strchr(strchr(strchr(la, ',') + 1, ',') + 1, ','), *cb = strchr(strchr(strchr(lb, ',') + 1, ',') + 1, ',');
        KD_CHECK(ca - la == cb - lb && !strncmp(la, lb, (size_t)(ca - la)), "row %d: %s vs %s", rows, la, lb);
        rows++;
    }
    fclose(fa);
    fclose(fb);
    KD_CHECK(rows == 9, "rows %d", rows);
    return 0;
}

/* Same train.csv steps, kinds and losses (the time column differs); rows counted. */
static int same_log(const char *dir_a, const char *dir_b, int *rows) {
    char pa[1024], pb[1024], la[512], lb[512];
    snprintf(pa, sizeof pa, "%s/train.csv", dir_a);
    snprintf(pb, sizeof pb, "%s/train.csv", dir_b);
    FILE *fa = fopen(pa, "r"), *fb = fopen(pb, "r");
    KD_CHECK(fa && fb, "csv");
    *rows = 0;
    while (fgets(la, sizeof la, fa) && fgets(lb, sizeof lb, fb)) {
        char *ca = strchr(strchr(strchr(la, ',') + 1, ',') + 1, ','), *cb = strchr(strchr(strchr(lb, ',') + 1, ',') + 1, ',');
        KD_CHECK(ca - la == cb - lb && !strncmp(la, lb, (size_t)(ca - la)), "row %d: %s vs %s", *rows, la, lb);
        (*rows)++;
    }
    fclose(fa);
    fclose(fb);
    return 0;
}

/* Catches: `kdseg train --resume` without --recipe running the rest of a run on the
 * default recipe's sampling, augmentation, schedule and weight averaging instead of those
 * of the recipe the checkpoint records (the resumed losses then differ from a straight
 * run's, the checkpoint says "real", and ema.kds stops following the run). */
static int train_resume_recipe(void) {
    KD_DEVICE_OR_FAIL(dev);
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --seed 6", tmp("d")) == 0, "phantom");
    const char *common = "--arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 --lr 1e-3 "
                         "--val-every 4 --ckpt-every 2 --quiet --threads 0";
    KD_CHECK(kdseg("train --dataset %s --out %s --recipe phantom --ema 0.5 --steps 8 %s", tmp("d"), tmp("a"),
                   common) == 0, "straight");
    KD_CHECK(kdseg("train --dataset %s --out %s --recipe phantom --ema 0.5 --steps 5 %s", tmp("d"), tmp("b"),
                   common) == 0, "first part");
    KD_CHECK(kdseg("train --out %s --steps 8 --resume %s", tmp("b"), common) == 0, "resumed");
    int rows = 0;
    if (same_log(tmp("a"), tmp("b"), &rows)) return 1;
    KD_CHECK(rows == 9, "rows %d", rows);
    char p[1024];
    kd_ckpt_meta meta;
    snprintf(p, sizeof p, "%s/last.kds", tmp("b"));
    KD_CHECK_OK(kd_checkpoint_read_meta(p, &meta));
    KD_CHECK(!strcmp(meta.recipe, "phantom") && meta.step == 8, "resumed checkpoint: recipe '%s', step %ld",
             meta.recipe, meta.step);
    kd_model *ma, *mb;
    snprintf(p, sizeof p, "%s/ema.kds", tmp("a"));
    KD_CHECK_OK(kd_checkpoint_load(p, dev, &ma, NULL, NULL, NULL));
    snprintf(p, sizeof p, "%s/ema.kds", tmp("b"));
    KD_CHECK_OK(kd_checkpoint_load(p, dev, &mb, NULL, NULL, &meta));
    KD_CHECK(meta.step == 8, "ema.kds at step %ld", meta.step);
    size_t n = kd_model_param_count(ma);
    float *wa = malloc(n * 4), *wb = malloc(n * 4);
    KD_CHECK(wa && wb, "memory");
    KD_CHECK_OK(kd_tensor_download_ndhwc(kd_model_params(ma), wa));
    KD_CHECK_OK(kd_tensor_download_ndhwc(kd_model_params(mb), wb));
    KD_CHECK(!memcmp(wa, wb, n * 4), "the resumed run's weight average equals the straight run's");
    free(wa);
    free(wb);
    kd_model_free(ma);
    kd_model_free(mb);
    /* options given again win over the recorded recipe */
    KD_CHECK(kdseg("train --out %s --steps 9 --resume --recipe real %s", tmp("b"), common) == 0, "resumed, real");
    snprintf(p, sizeof p, "%s/last.kds", tmp("b"));
    KD_CHECK_OK(kd_checkpoint_read_meta(p, &meta));
    KD_CHECK(!strcmp(meta.recipe, "real") && meta.step == 9, "recipe given on resume: '%s', step %ld",
             meta.recipe, meta.step);
    return 0;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fputs(text, f);
    return fclose(f) != 0;
}

/* Catches: --min-agreement keeping the wrong cases (a case below the threshold, or one
 * missing from agreement.csv, used anyway), a threshold no case meets or a malformed
 * agreement file accepted silently instead of a clear error naming the file. */
static int distill_min_agreement(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (two_models(dev, "cascade:widths=8,16")) return 1;
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --seed 7", tmp("lab")) == 0, "phantom");
    KD_CHECK(kdseg("phantom --out %s --cases 4 --size 32 --unlabeled --seed 8", tmp("unl")) == 0,
             "phantom");
    KD_CHECK(kdseg("annotate --teacher %s --teacher %s --dataset %s --out %s", tmp("t1.kds"),
                   tmp("t2.kds"), tmp("unl"), tmp("ann")) == 0, "annotate");
    char agree[1024];
    snprintf(agree, sizeof agree, "%s/agreement.csv", tmp("ann"));
    /* known agreements: 000 high, 001 low, 002 medium, 003 missing from the file */
    KD_CHECK(!write_text(agree, "case,dice_wt,dice_tc,dice_et,mean\n"
                                "KDPhantom_000,0.9,0.9,0.9,0.9000\n"
                                "KDPhantom_001,0.2,0.2,0.2,0.2000\n"
                                "KDPhantom_002,0.6,0.6,0.6,0.6000\n"),
             "write %s", agree);
    const char *common = "--arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 --steps 2 "
                         "--val-cases 1 --val-every 0 --threads 0";
    log_clear();
    KD_CHECK(kdseg("distill --dataset %s --unlabeled %s --annotations %s --out %s --min-agreement 0.5 %s",
                   tmp("lab"), tmp("unl"), tmp("ann"), tmp("s1"), common) == 0, "distill 0.5");
    KD_CHECK(log_has("kept 2 of 4 annotated cases (1 below, 1 not in"), "kept count");
    log_clear();
    KD_CHECK(kdseg("distill --dataset %s --unlabeled %s --annotations %s --out %s --min-agreement 0.95 %s",
                   tmp("lab"), tmp("unl"), tmp("ann"), tmp("s2"), common) == 2, "none kept: exit 2");
    KD_CHECK(log_has("no annotated case has a teacher agreement of at least 0.95"), "message");
    KD_CHECK(!write_text(agree, "case,dice_wt,dice_tc,dice_et,mean\nKDPhantom_000,0.9,0.9,0.9,high\n"),
             "write %s", agree);
    log_clear();
    KD_CHECK(kdseg("distill --dataset %s --unlabeled %s --annotations %s --out %s --min-agreement 0.5 %s",
                   tmp("lab"), tmp("unl"), tmp("ann"), tmp("s3"), common) == 1, "malformed: exit 1");
    KD_CHECK(log_has("agreement.csv:2: expected"), "malformed file named with its line");
    return 0;
}

/* Catches: segment --member-out writing a member's map that differs from that model's own
 * run, an ensemble that changes when its members are written, or a count mismatch taken
 * silently. */
static int segment_member_out(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (two_models(dev, "unet3d:widths=8,16")) return 1;
    KD_CHECK(kdseg("phantom --out %s --cases 2 --size 32 --seed 5", tmp("d")) == 0, "phantom");
    int r = kdseg("segment --checkpoint %s --checkpoint %s --member-out %s --member-out %s --dataset %s --out %s "
                  "--probabilities f32", tmp("t1.kds"), tmp("t2.kds"), tmp("m1"), tmp("m2"), tmp("d"), tmp("e"));
    r |= kdseg("segment --checkpoint %s --checkpoint %s --dataset %s --out %s --probabilities f32", tmp("t1.kds"),
               tmp("t2.kds"), tmp("d"), tmp("j"));
    r |= kdseg("segment --checkpoint %s --dataset %s --out %s", tmp("t1.kds"), tmp("d"), tmp("s1"));
    r |= kdseg("segment --checkpoint %s --dataset %s --out %s", tmp("t2.kds"), tmp("d"), tmp("s2"));
    if (r) show_log();
    KD_CHECK(r == 0, "commands");
    for (int c = 0; c < 2; c++) {
        const char *pairs[2][2] = {{"m1", "s1"}, {"m2", "s2"}};
        for (int k = 0; k < 2; k++) {
            char pa[1024], pb[1024];
            kd_volume *a, *b;
            snprintf(pa, sizeof pa, "%s/KDPhantom_%03d.nii.gz", tmp(pairs[k][0]), c);
            snprintf(pb, sizeof pb, "%s/KDPhantom_%03d.nii.gz", tmp(pairs[k][1]), c);
            KD_CHECK_OK(kd_nifti_read(pa, &a));
            KD_CHECK_OK(kd_nifti_read(pb, &b));
            size_t n = (size_t)a->nx * a->ny * a->nz, diff = 0, tumour = 0;
            KD_CHECK(n == (size_t)b->nx * b->ny * b->nz, "case %d %s: grid", c, pairs[k][0]);
            for (size_t v = 0; v < n; v++) {
                diff += a->data[v] != b->data[v];
                tumour += b->data[v] != 0;
            }
            KD_CHECK(diff == 0, "case %d: %s differs from the model's own run in %zu voxels", c,
                     pairs[k][0], diff);
            KD_CHECK(tumour > 0, "case %d: model %d labels nothing (a vacuous comparison)", c, k + 1);
            kd_volume_free(a);
            kd_volume_free(b);
        }
        char pa[1024], pb[1024];
        kd_volume *a, *b;
        snprintf(pa, sizeof pa, "%s/KDPhantom_%03d_prob.nii.gz", tmp("e"), c);
        snprintf(pb, sizeof pb, "%s/KDPhantom_%03d_prob.nii.gz", tmp("j"), c);
        KD_CHECK_OK(kd_nifti_read(pa, &a));
        KD_CHECK_OK(kd_nifti_read(pb, &b));
        size_t n = (size_t)a->nx * a->ny * a->nz * 3;
        double worst = 0;
        for (size_t v = 0; v < n; v++) worst = fmax(worst, fabs((double)a->data[v] - b->data[v]));
        KD_CHECK(worst < 1e-5, "case %d: ensemble with members differs by %g", c, worst);
        kd_volume_free(a);
        kd_volume_free(b);
    }
    KD_CHECK(kdseg("segment --checkpoint %s --checkpoint %s --member-out %s --dataset %s --out %s", tmp("t1.kds"),
                   tmp("t2.kds"), tmp("m1"), tmp("d"), tmp("e")) == 2,
             "one --member-out for two models accepted");
    return 0;
}

/* Catches: crashes or silent success on bad command lines and inputs. */
static int bad_inputs_cli(void) {
    struct {
        const char *args;
        int code;
    } cases[] = {
        {"frobnicate", 2},
        {"train --synthetic --out /tmp/x --patch 0", 2},
        {"train --synthetic --out /tmp/x --steps -5", 2},
        {"train --dataset /nonexistent --out /tmp/kdtest-bad", 1},
        {"segment --checkpoint /nonexistent.kds --dataset /nonexistent --out /tmp/kdtest-bad", 1},
        {"train --synthetic --out /tmp/kdtest-bad2 --arch vnet", 2},
        {"selftest --golden /nonexistent", 1},
        {"--device no-such-device devices --build", 1},
        {"evaluate --pred /nonexistent --ref /nonexistent", 1},
        {"demo --quick --long --out /tmp/kdtest-bad", 2},
        {"demo --size 32 --patch 48 --out /tmp/kdtest-bad", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = kdseg("%s", cases[i].args);
        KD_CHECK(r == cases[i].code || (cases[i].code == 1 && r != 0 && r < 128) ||
                     (cases[i].code == 2 && r == 2),
                 "'kdseg %s' exited %d, expected %d", cases[i].args, r, cases[i].code);
    }
    return 0;
}

/* Lines of a CSV without their first field (the case name). */
static int csv_tail_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
    int same = fa && fb, lines = 0;
    char la[4096], lb[4096];
    while (same) {
        char *x = fgets(la, sizeof la, fa), *y = fgets(lb, sizeof lb, fb);
        if (!x || !y) {
            same = !x && !y;
            break;
        }
        const char *cx = strchr(la, ','), *cy = strchr(lb, ',');
        same = cx && cy && !strcmp(cx, cy);
        lines++;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same && lines > 1;
}

/* Catches: segment on an nnU-Net folder writing names with the channel suffix, or BraTS
 * 2019 values instead of the dataset's own (nnU-Net's: 1 edema, 2 core, 3 enhancing);
 * evaluate reading an nnU-Net reference or its predictions in the wrong convention;
 * annotate's labels not read back as the dataset's. The same cases as a BraTS 2018
 * cohort give the same maps, translated, and the same scores. */
static int segment_nnunet(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (save_model(dev, "resunet:widths=8,16:enc=1,1:dec=1", 3, tmp("m.kds"))) return 1;
    int r = kdseg("phantom --out %s --cases 2 --size 32,40,36 --seed 4 --layout nnunet", tmp("nn"));
    r |= kdseg("phantom --out %s --cases 2 --size 32,40,36 --seed 4", tmp("b"));
    r |= kdseg("segment --checkpoint %s --dataset %s/imagesTr --out %s --threshold 0.45", tmp("m.kds"), tmp("nn"),
               tmp("snn"));
    r |= kdseg("segment --checkpoint %s --dataset %s --out %s --threshold 0.45", tmp("m.kds"), tmp("b"), tmp("sb"));
    r |= kdseg("evaluate --pred %s --ref %s --csv %s", tmp("snn"), tmp("nn"), tmp("enn.csv"));
    r |= kdseg("evaluate --pred %s --ref %s --csv %s", tmp("sb"), tmp("b"), tmp("eb.csv"));
    if (r) show_log();
    KD_CHECK(r == 0, "commands");
    int seen[5] = {0};
    for (int c = 0; c < 2; c++) {
        char p[1024], q[1024];
        snprintf(p, sizeof p, "%s/KDPH_%03d.nii.gz", tmp("snn"), c);
        snprintf(q, sizeof q, "%s/KDPhantom_%03d.nii.gz", tmp("sb"), c);
        kd_volume *a, *b;
        KD_CHECK_OK(kd_nifti_read(p, &a));
        KD_CHECK_OK(kd_nifti_read(q, &b));
        size_t n = (size_t)a->nx * a->ny * a->nz;
        for (size_t k = 0; k < n; k++) {
            int x = (int)a->data[k], y = (int)b->data[k];
            int want = y == 2 ? 1 : y == 1 ? 2 : y == 4 ? 3 : 0;
            KD_CHECK(x == want, "case %d voxel %zu: nnU-Net %d, BraTS 2019 %d", c, k, x, y);
            seen[y]++;
        }
        kd_volume_free(a);
        kd_volume_free(b);
    }
    KD_CHECK(seen[1] && seen[2] && seen[4], "the test model marks every class (%d %d %d)", seen[2], seen[1], seen[4]);
    KD_CHECK(csv_tail_equal(tmp("enn.csv"), tmp("eb.csv")), "evaluate: the same scores");
    /* annotate writes the dataset's values, which the dataset reads back */
    r = kdseg("annotate --teacher %s --dataset %s --out %s --all --threshold 0.45", tmp("m.kds"), tmp("nn"),
              tmp("ann"));
    if (r) show_log();
    KD_CHECK(r == 0, "annotate");
    KD_CHECK(same_bytes(tmp("ann/KDPH_000.nii.gz"), tmp("snn/KDPH_000.nii.gz")), "annotation = segmentation");
    kd_dataset_opts o;
    memset(&o, 0, sizeof o);
    o.annotations = tmp("ann");
    kd_dataset *ds;
    KD_CHECK_OK(kd_dataset_open(tmp("nn/imagesTr"), &o, &ds));
    KD_CHECK(!strcmp(kd_dataset_case_name(ds, 0), "KDPH_000"), "case name %s", kd_dataset_case_name(ds, 0));
    kd_dataset_free(ds);
    return 0;
}

/* The demo end to end (--quick, --student-loss dicebce): every stage runs and the table
 * has every row; its output folder has a space in its name (the stages are library calls,
 * no command lines split on spaces); the option reaches every student's checkpoint. */
static int demo_quick(void) {
    int r = kdseg("demo --quick --student-loss dicebce --out '%s'", tmp("demo out"));
    if (r) show_log();
    KD_CHECK(r == 0, "demo --quick");
    char p[1024], line[1024];
    snprintf(p, sizeof p, "%s/results.md", tmp("demo out"));
    FILE *f = fopen(p, "r");
    KD_CHECK(f, "results.md");
    const char *rows[] = {"unet3d", "cascade", "resnext-se", "ensemble", "student-baseline",
                          "student-distilled", "student-oracle"};
    int found[7] = {0}, lines = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        for (int i = 0; i < 7; i++)
            if (!strncmp(line + 2, rows[i], strlen(rows[i])) && line[2 + strlen(rows[i])] == ' ') found[i]++;
    }
    fclose(f);
    for (int i = 0; i < 7; i++) KD_CHECK(found[i] == 1, "row %s", rows[i]);
    KD_CHECK(lines == 9, "header + separator + 7 rows, got %d lines", lines);
    const char *files[] = {"results.csv", "dice_boxplot.png", "example.png"};
    for (int i = 0; i < 3; i++) {
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", tmp("demo out"), files[i]);
        KD_CHECK(stat(p, &st) == 0 && st.st_size > 100, "%s", files[i]);
    }
    /* --student-loss reaches every student (labeled and annotated steps), not the
     * teachers (the paper's loss, the default for all, checked in demo_user_cases) */
    KD_DEVICE_OR_FAIL(dev);
    const char *models[] = {"unet3d", "resnext-se", "student-baseline", "student-distilled", "student-oracle"};
    for (int k = 0; k < 5; k++) {
        kd_ckpt_meta meta;
        kd_model *m = NULL;
        snprintf(p, sizeof p, "%s/models/%s/last.kds", tmp("demo out"), models[k]);
        KD_CHECK_OK(kd_checkpoint_load(p, dev, &m, NULL, NULL, &meta));
        kd_model_free(m);
        KD_CHECK(!strcmp(meta.loss, k < 2 ? "paper" : "dicebce"), "%s: loss '%s'", p, meta.loss);
    }
    KD_CHECK(kdseg("demo --quick --student-loss nonesuch --out '%s'", tmp("demo bad")) == 2,
             "an unknown --student-loss refused");
    KD_CHECK(log_has("unknown loss 'nonesuch' (paper"), "the refusal names the value and the losses");
    /* as few labeled cases as leave one to train on: 2 with --val-cases 2 are refused
     * by the experiment (nothing written), not by a fixed minimum of the command */
    KD_CHECK(kdseg("demo --quick --labeled 2 --out '%s'", tmp("demo two")) == 2 &&
                 log_has("2 labeled cases (2 held out)") && access(tmp("demo two"), F_OK) != 0,
             "--labeled 2 with 2 validation cases refused, nothing written");
    return 0;
}

/* Dice of MODEL on CASE in a results.csv (WT, TC, ET); 0 when found. */
static int results_dice(const char *csv, const char *model, const char *cs, double d[3]) {
    FILE *f = fopen(csv, "r");
    char line[1024], m[128], c[128];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = sscanf(line, "%127[^,],%127[^,],%lf,%lf,%lf", m, c, &d[0], &d[1], &d[2]) == 5 &&
                !strcmp(m, model) && !strcmp(c, cs);
    if (f) fclose(f);
    return found ? 0 : -1;
}

/* --student-runs 2: each student trained twice (run 2 with seed 101, recorded in its
 * checkpoint), the "-mean" rows each case's Dice averaged over the runs, the runs named in
 * the verdict's lines; out-of-range counts refused. */
static int demo_runs(void) {
    const char *out = tmp("demo runs");
    int r = kdseg("demo --quick --student-runs 2 --unlabeled 3 --test 3 --teacher-steps 8 --student-steps 10 "
                  "--out '%s'", out);
    if (r) show_log();
    KD_CHECK(r == 0, "demo --student-runs 2");
    KD_CHECK(log_has("the students' 2 runs"), "the runs reported");
    char csv[1024];
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    const char *cases[3] = {"KDPhantom_2000", "KDPhantom_2001", "KDPhantom_2002"};
    for (int kind = 0; kind < 2; kind++) {
        const char *base = kind ? "student-distilled" : "student-baseline";
        char two[64], mean[64];
        snprintf(two, sizeof two, "%s-2", base);
        snprintf(mean, sizeof mean, "%s-mean", base);
        for (int c = 0; c < 3; c++) {
            double a[3], b[3], m[3];
            KD_CHECK(!results_dice(csv, base, cases[c], a) && !results_dice(csv, two, cases[c], b) &&
                         !results_dice(csv, mean, cases[c], m), "%s rows for %s", base, cases[c]);
            for (int g = 0; g < 3; g++)
                KD_CHECK(fabs(m[g] - (a[g] + b[g]) / 2) < 1e-3, "%s %s region %d: mean %.4f of %.4f and %.4f",
                         mean, cases[c], g, m[g], a[g], b[g]);
        }
    }
    KD_DEVICE_OR_FAIL(dev);
    const char *models[3] = {"student-baseline", "student-baseline-2", "student-distilled-2"};
    const uint64_t seeds[3] = {1, 101, 101};
    for (int k = 0; k < 3; k++) {
        char p[1024];
        kd_ckpt_meta meta;
        kd_model *m = NULL;
        snprintf(p, sizeof p, "%s/models/%s/last.kds", out, models[k]);
        KD_CHECK_OK(kd_checkpoint_load(p, dev, &m, NULL, NULL, &meta));
        kd_model_free(m);
        KD_CHECK(meta.seed == seeds[k], "%s: seed %llu, expected %llu", p, (unsigned long long)meta.seed,
                 (unsigned long long)seeds[k]);
    }
    KD_CHECK(kdseg("demo --quick --student-runs 9 --out '%s'", tmp("runs bad")) == 2 &&
                 kdseg("demo --quick --student-runs 0 --out '%s'", tmp("runs bad")) == 2,
             "--student-runs outside 1..8 refused");
    return 0;
}

/* --jobs: models trained three at once (each thread its own queue) are the models trained
 * one after another (the same conv implementations: KDSEG_CONV=direct): results.csv the same
 * byte for byte (not with KDSEG_CONV=gemm: CLBlast builds its kernels again for each
 * queue's context, 460 s of the unit stage, and missed its race once unlocked anyway); a
 * training that fails, in whichever thread, stops the run with its message and no results;
 * out-of-range counts refused. */
static int demo_jobs(void) {
    setenv("KDSEG_CONV", "direct", 1);
    const char *args = "demo --quick --student-runs 2 --unlabeled 3 --test 3 --teacher-steps 8 --student-steps 10";
    const char *one = tmp("jobs 1"), *three = tmp("jobs 3"), *bad = tmp("jobs fail");
    int r1 = kdseg("%s --jobs 1 --out '%s'", args, one), r3 = kdseg("%s --jobs 3 --out '%s'", args, three);
    if (r1 || r3) show_log();
    KD_CHECK(r1 == 0 && r3 == 0, "demo --jobs 1, --jobs 3");
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/results.csv", one);
    snprintf(b, sizeof b, "%s/results.csv", three);
    KD_CHECK(same_bytes(a, b), "%s and %s differ", a, b);
    /* the second teacher's folder is a file: its training fails (in a worker thread or this) */
    char models[1024], file[1100];
    snprintf(models, sizeof models, "%s/models", bad);
    snprintf(file, sizeof file, "%s/cascade", models);
    KD_CHECK(!mkdir(bad, 0755) && !mkdir(models, 0755), "%s", models);
    FILE *f = fopen(file, "w");
    KD_CHECK(f && fputs("not a folder\n", f) >= 0 && !fclose(f), "%s", file);
    snprintf(a, sizeof a, "%s/results.csv", bad);
    KD_CHECK(kdseg("%s --jobs 2 --out '%s'", args, bad) == 1 && log_has("cascade: is a file, not a folder") &&
                 access(a, F_OK) != 0,
             "a failed job: exit 1 with its message, no results");
    KD_CHECK(kdseg("demo --quick --jobs 5 --out '%s'", tmp("jobs bad")) == 2 &&
                 kdseg("demo --quick --jobs 0 --out '%s'", tmp("jobs bad")) == 2,
             "--jobs outside 1..4 refused");
    unsetenv("KDSEG_CONV");
    return 0;
}

/* Two models at a time on a fresh conv-choice table: every convolution's implementation is
 * timed before the models start together (one pass of each model alone), none while they
 * train. Catches: choices timed under the other model's load, which on a fresh machine chose
 * im2col + GEMM for 35 shapes of the study and trained 5-7 times slower. */
static int demo_jobs_choices(void) {
    const char *cache = tmp("jobs cache");
    KD_CHECK(!mkdir(cache, 0755), "%s", cache);
    const char *old = getenv("XDG_CACHE_HOME");
    char *saved = old ? strdup(old) : NULL;
    setenv("XDG_CACHE_HOME", cache, 1);
    setenv("KDSEG_LOG", "info", 1);
    unsetenv("KDSEG_CONV");
    log_clear();
    int r = kdseg("demo --quick --student-runs 2 --unlabeled 3 --test 3 --teacher-steps 8 --student-steps 10 "
                  "--jobs 2 --out '%s'", tmp("jobs fresh"));
    unsetenv("KDSEG_LOG");
    if (saved) setenv("XDG_CACHE_HOME", saved, 1);
    else unsetenv("XDG_CACHE_HOME");
    free(saved);
    if (r) show_log();
    KD_CHECK(r == 0, "demo --jobs 2 on a fresh cache");
    KD_CHECK(log_has("conv chooser:") && log_has("2 models at a time"), "convolutions timed, models at once");
    KD_CHECK(!log_has("timed while models trained at once"), "no convolution timed while models trained at once");
    return 0;
}

/* Numbers of one study.md row "| KIND | L | U | L+U | m ± se | ...": the first column
 * that starts with kind, labeled L, annotated U; its mean and standard error. */
static int md_row(const char *path, const char *kind, int L, int U, double *mean, double *se) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char k[128];
        int l, u, t;
        double m, e;
        if (sscanf(line, "| %127[^|]| %d | %d | %d | %lf ± %lf", k, &l, &u, &t, &m, &e) == 6 &&
            strstr(k, kind) && l == L && u == U && t == L + U)
            *mean = m, *se = e, found = 1;
    }
    fclose(f);
    return found;
}

/* A tiny data-amount study (2 seeds, 1-2 labeled, pools 0 and 2): study.csv has a row per
 * model and seed with Dice in [0, 1]; the pool-0 student is the base labeled-only student
 * (the same model); study.md's means and standard errors are those of study.csv's rows;
 * study.png is a PNG; --jobs 1 gives the same study.csv as two models at a time. Catches:
 * points misnumbered or missing, seeds overwriting each other, wrong statistics, a plot
 * not written, models trained at once mixing their folders, seeds or training cases.
 * Also reached as demo --study. */
static int study_quick(void) {
    int r = kdseg("demo --study --quick --out '%s'", tmp("study out"));
    if (r) show_log();
    KD_CHECK(r == 0, "demo --study --quick");
    KD_CHECK(log_has("2 models at a time"), "the default study trains two models at a time");
    char p[1024], line[1024];
    /* each student trained on its own cases (the training cases in its checkpoint's
     * domain record): labeled only on 1 and 2, distilled on 1 labeled (+ 2 annotated) */
    static const char *const students[3] = {"student-labeled-1", "student-labeled-2", "student-distilled-2"};
    static const int ncases[3] = {1, 2, 1}; /* (a distilled record counts the labeled cases) */
    for (int seed = 1; seed <= 2; seed++)
        for (int k = 0; k < 3; k++) {
            kd_ckpt_meta meta;
            snprintf(p, sizeof p, "%s/seed-%d/models/%s/last.kds", tmp("study out"), seed, students[k]);
            KD_CHECK_OK(kd_checkpoint_read_meta(p, &meta));
            KD_CHECK(meta.domain.cases == ncases[k], "%s: trained on %d cases, expected %d", p, meta.domain.cases,
                     ncases[k]);
        }
    snprintf(p, sizeof p, "%s/study.csv", tmp("study out"));
    FILE *f = fopen(p, "r");
    KD_CHECK(f, "study.csv");
    KD_CHECK(fgets(line, sizeof line, f) &&
                 !strcmp(line, "kind,labeled,annotated,training_cases,seed,dice_wt,dice_tc,dice_et,dice_mean\n"),
             "header: %s", line);
    /* kinds: labeled only 1, 2; labeled + annotated 1+0, 1+2; ensemble; 2 teachers */
    double base[2] = {-1, -1}, pool0[2] = {-2, -2}, sum[3] = {0}, sum2[3] = {0};
    int rows = 0, n[3] = {0};
    while (fgets(line, sizeof line, f)) {
        char kind[64];
        int L, U, T, seed;
        double d[4];
        KD_CHECK(sscanf(line, "%63[^,],%d,%d,%d,%d,%lf,%lf,%lf,%lf", kind, &L, &U, &T, &seed, &d[0], &d[1], &d[2],
                        &d[3]) == 9, "row: %s", line);
        KD_CHECK(T == L + U && (seed == 1 || seed == 2), "row: %s", line);
        for (int k = 0; k < 4; k++) KD_CHECK(d[k] >= 0 && d[k] <= 1, "Dice out of [0, 1]: %s", line);
        KD_CHECK(fabs(d[3] - (d[0] + d[1] + d[2]) / 3) < 2e-4, "mean of the regions: %s", line);
        int isl = !strcmp(kind, "labeled only"), isd = !strcmp(kind, "labeled + annotated");
        if (isl && L == 1) base[seed - 1] = d[3];
        if (isd && L == 1 && U == 0) pool0[seed - 1] = d[3];
        int g = isl && L == 2 ? 0 : isd && U == 2 ? 1 : !strcmp(kind, "ensemble") ? 2 : -1;
        if (g >= 0) sum[g] += d[3], sum2[g] += d[3] * d[3], n[g]++;
        rows++;
    }
    fclose(f);
    KD_CHECK(rows == 14, "7 models x 2 seeds, got %d rows", rows);
    for (int s = 0; s < 2; s++)
        KD_CHECK(base[s] == pool0[s], "seed %d: pool 0 is the base student (%g vs %g)", s + 1, base[s], pool0[s]);
    snprintf(p, sizeof p, "%s/study.md", tmp("study out"));
    const char *kinds[3] = {"labeled only", "labeled + annotated", "ensemble"};
    int Ls[3] = {2, 1, 1}, Us[3] = {0, 2, 0};
    for (int g = 0; g < 3; g++) {
        double m, se;
        KD_CHECK(n[g] == 2, "%s: 2 seeds, got %d", kinds[g], n[g]);
        KD_CHECK(md_row(p, kinds[g], Ls[g], Us[g], &m, &se), "study.md row %s %d+%d", kinds[g], Ls[g], Us[g]);
        double mean = sum[g] / 2, sd = sqrt(fmax(0, (sum2[g] - 2 * mean * mean) / 1));
        KD_CHECK(fabs(m - mean) < 1.5e-3 && fabs(se - sd / sqrt(2)) < 1.5e-3,
                 "%s: study.md %.3f ± %.3f, study.csv gives %.4f ± %.4f", kinds[g], m, se, mean, sd / sqrt(2));
    }
    snprintf(p, sizeof p, "%s/study.png", tmp("study out"));
    f = fopen(p, "rb");
    unsigned char magic[8] = {0};
    KD_CHECK(f && fread(magic, 1, 8, f) == 8 && !memcmp(magic, "\x89PNG\r\n\x1a\n", 8), "study.png is a PNG");
    fseek(f, 0, SEEK_END);
    KD_CHECK(ftell(f) > 2000, "study.png has content (%ld bytes)", ftell(f));
    fclose(f);
    KD_CHECK(kdseg("study --labeled-sizes 2,x --out '%s'", tmp("study bad")) == 2, "a bad size list refused");
    /* run again: every seed's scores read back, the same study.csv */
    char before[8192] = "", after[8192] = "";
    snprintf(p, sizeof p, "%s/study.csv", tmp("study out"));
    f = fopen(p, "r");
    KD_CHECK(f && fread(before, 1, sizeof before - 1, f) > 0, "study.csv");
    fclose(f);
    log_clear();
    KD_CHECK(kdseg("study --quick --out '%s'", tmp("study out")) == 0, "the study again");
    KD_CHECK(log_has("scores of this seed read back"), "a finished seed is not run again");
    f = fopen(p, "r");
    KD_CHECK(f && fread(after, 1, sizeof after - 1, f) > 0, "study.csv");
    fclose(f);
    KD_CHECK(!strcmp(before, after), "the same study.csv from the scores read back");
    /* one model at a time instead of two (the default): the same models, the same scores */
    log_clear();
    KD_CHECK(kdseg("study --quick --jobs 1 --out '%s'", tmp("study one")) == 0, "the study, --jobs 1");
    KD_CHECK(!log_has("models at a time"), "--jobs 1 trains one model at a time");
    snprintf(p, sizeof p, "%s/study.csv", tmp("study one"));
    memset(after, 0, sizeof after);
    f = fopen(p, "r");
    KD_CHECK(f && fread(after, 1, sizeof after - 1, f) > 0, "study.csv");
    fclose(f);
    KD_CHECK(!strcmp(before, after), "the same study.csv with --jobs 1 as with two models at a time");
    return 0;
}

/* Labels of a view's truth file against the MSD file they came from: MSD 1 edema, 2
 * non-enhancing, 3 enhancing must read as BraTS 2019 2, 1, 4. */
static int msd_truth_converted(const char *msd_label, const char *truth) {
    kd_volume *a, *b;
    KD_CHECK_OK(kd_nifti_read(msd_label, &a));
    KD_CHECK_OK(kd_nifti_read(truth, &b));
    size_t n = (size_t)a->nx * a->ny * a->nz, seen[4] = {0};
    KD_CHECK(n == (size_t)b->nx * b->ny * b->nz, "grid");
    static const int to2019[4] = {0, 2, 1, 4};
    for (size_t k = 0; k < n; k++) {
        int l = (int)a->data[k];
        KD_CHECK(l >= 0 && l <= 3 && (int)b->data[k] == to2019[l], "voxel %zu: MSD %d read as %g", k, l,
                 (double)b->data[k]);
        seen[l]++;
    }
    KD_CHECK(seen[1] && seen[2] && seen[3], "the case has every label");
    kd_volume_free(a);
    kd_volume_free(b);
    return 0;
}

/* The experiment on "your" cases in three layouts (labeled: BraTS 2023; unlabeled: a
 * labeled Decathlon folder and an unlabeled BraTS 2018 one; test: BraTS 2018), two of
 * the four modalities: the unlabeled cases are seen with their labels hidden (the
 * view's files are the chosen modalities only, the Decathlon FLAIR volume cut from its
 * 4-D file), their labels scored in BraTS 2019 values, every model in the table, an
 * oracle student only when every unlabeled case has labels; a test case that is also a
 * labeled case is refused. */
static int demo_user_cases(void) {
    int r = kdseg("phantom --out %s --cases 3 --size 32 --layout brats2023 --seed 5", tmp("uL"));
    r |= kdseg("phantom --out %s --cases 2 --size 32 --layout msd --first 100 --seed 5", tmp("uU1"));
    r |= kdseg("phantom --out %s --cases 1 --size 32 --unlabeled --first 200 --seed 5", tmp("uU2"));
    r |= kdseg("phantom --out %s --cases 2 --size 32 --first 300 --seed 5", tmp("uT"));
    KD_CHECK(r == 0, "phantoms");
    const char *fast = "--quick --patch 16 --teacher-steps 3 --student-steps 3 --modalities t1ce,flair";
    /* run 1 adds the unlabeled BraTS 2018 folder; run 2 reuses its output folder without it */
    for (int run = 0; run < 3; run++) {
        const char *out = tmp(run ? "user two" : "user one");
        int both = run == 1;
        r = kdseg("demo %s --labeled %s --unlabeled %s %s%s --test %s --out '%s'", fast, tmp("uL"), tmp("uU1"),
                  both ? "--unlabeled " : "", both ? tmp("uU2") : "", tmp("uT"), out);
        if (r) show_log();
        KD_CHECK(r == 0, "demo on the user's cases, run %d", run);
        char p[1024], q[1024], line[1024];
        snprintf(p, sizeof p, "%s/results.md", out);
        FILE *f = fopen(p, "r");
        KD_CHECK(f, "results.md");
        int lines = 0, oracle = 0;
        while (fgets(line, sizeof line, f)) lines++, oracle |= strstr(line, "| student-oracle ") != NULL;
        fclose(f);
        KD_CHECK(oracle == !both, "run %d: an oracle row only when every unlabeled case has labels", run);
        KD_CHECK(lines == 2 + 3 + 3 + !both, "run %d: %d lines in results.md", run, lines);
        /* the view: the chosen modalities, no label file */
        for (int c = 0; c < 2; c++) {
            struct stat st;
            snprintf(p, sizeof p, "%s/data/unlabeled/KDPH_%03d/KDPH_%03d_flair.nii.gz", out, 100 + c, 100 + c);
            KD_CHECK(stat(p, &st) == 0, "%s", p);
            snprintf(p, sizeof p, "%s/data/unlabeled/KDPH_%03d/KDPH_%03d_t1.nii.gz", out, 100 + c, 100 + c);
            KD_CHECK(stat(p, &st) != 0, "%s: not a chosen modality", p);
            snprintf(p, sizeof p, "%s/data/unlabeled/KDPH_%03d/KDPH_%03d_seg.nii.gz", out, 100 + c, 100 + c);
            KD_CHECK(stat(p, &st) != 0, "%s: labels hidden", p);
            snprintf(p, sizeof p, "%s/annotations/KDPH_%03d.nii.gz", out, 100 + c);
            KD_CHECK(stat(p, &st) == 0, "%s", p);
        }
        /* the Decathlon FLAIR (volume 0 of its 4-D file) cut out whole */
        kd_volume *a, *b;
        snprintf(p, sizeof p, "%s/imagesTr/KDPH_100.nii.gz", tmp("uU1"));
        snprintf(q, sizeof q, "%s/data/unlabeled/KDPH_100/KDPH_100_flair.nii.gz", out);
        KD_CHECK_OK(kd_nifti_read(p, &a));
        KD_CHECK_OK(kd_nifti_read(q, &b));
        size_t n = (size_t)a->nx * a->ny * a->nz;
        KD_CHECK(a->nt == 4 && b->nt == 1 && n == (size_t)b->nx * b->ny * b->nz, "4-D source, 3-D view");
        KD_CHECK(!memcmp(a->data, b->data, n * sizeof(float)), "the view's FLAIR is volume 0");
        kd_volume_free(a);
        kd_volume_free(b);
        snprintf(p, sizeof p, "%s/labelsTr/KDPH_101.nii.gz", tmp("uU1"));
        snprintf(q, sizeof q, "%s/data/unlabeled-truth/KDPH_101.nii.gz", out);
        if (msd_truth_converted(p, q)) return 1;
        struct stat st;
        snprintf(p, sizeof p, "%s/annotations/KDPhantom_200.nii.gz", out);
        KD_CHECK((stat(p, &st) == 0) == (run > 0), "run %d: the second folder's case annotated", run);
        snprintf(p, sizeof p, "%s/data/unlabeled/KDPhantom_200", out);
        KD_CHECK((stat(p, &st) == 0) == both, "run %d: the view holds the second folder's case only when "
                 "given", run);
    }
    /* on the user's cases every model trains with the real recipe (recorded in its
     * checkpoint: its post-processing applies), unless --recipe phantom says otherwise */
    r = kdseg("demo %s --recipe phantom --labeled %s --unlabeled %s --test %s --out '%s'", fast, tmp("uL"),
              tmp("uU1"), tmp("uT"), tmp("user phantom"));
    KD_CHECK(r == 0, "demo --recipe phantom on the user's cases");
    KD_DEVICE_OR_FAIL(dev);
    const char *models[] = {"unet3d", "resnext-se", "student-baseline", "student-distilled"};
    for (int k = 0; k < 8; k++) {
        char ck[2048];
        kd_ckpt_meta meta;
        kd_model *m = NULL;
        snprintf(ck, sizeof ck, "%s/models/%s/last.kds", tmp(k < 4 ? "user one" : "user phantom"), models[k % 4]);
        KD_CHECK_OK(kd_checkpoint_load(ck, dev, &m, NULL, NULL, &meta));
        kd_model_free(m);
        KD_CHECK(!strcmp(meta.recipe, k < 4 ? "real" : ""), "%s: recipe '%s'", ck, meta.recipe);
        /* every model's loss: the real recipe's and the phantom demo's default (paper) */
        KD_CHECK(!strcmp(meta.loss, "paper"), "%s: loss '%s'", ck, meta.loss);
    }
    KD_CHECK(kdseg("demo %s --recipe nonesuch --labeled %s --unlabeled %s --test %s --out '%s'", fast, tmp("uL"),
                   tmp("uU1"), tmp("uT"), tmp("user bad")) == 2, "an unknown recipe refused");
    log_clear();
    r = kdseg("demo %s --labeled %s --unlabeled %s --test %s --out '%s'", fast, tmp("uL"), tmp("uU2"), tmp("uL"),
              tmp("user leak"));
    KD_CHECK(r != 0 && r < 128 && log_has("is also a labeled case"), "a test case that is a labeled case refused "
             "(exit %d)", r);
    KD_CHECK(kdseg("demo --labeled %s --test %s --out '%s'", tmp("uL"), tmp("uT"), tmp("user bad")) == 2,
             "--labeled DIR without --unlabeled DIR refused");
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"annotate_equals_average", annotate_equals_average},
        {"annotate_resume", annotate_resume},
        {"online_targets", online_targets},
        {"tta_symmetric", tta_symmetric},
        {"sliding_window", sliding_window},
        {"segment_geometry", segment_geometry},
        {"segment_training_patch", segment_training_patch},
        {"segment_real_case", segment_real_case},
        {"train_real_cases", train_real_cases},
        {"segment_member_out", segment_member_out},
        {"segment_nnunet", segment_nnunet},
        {"train_resume_cli", train_resume_cli},
        {"train_resume_recipe", train_resume_recipe},
        {"distill_min_agreement", distill_min_agreement},
        {"bad_inputs_cli", bad_inputs_cli},
        {"demo_quick", demo_quick},
        {"demo_runs", demo_runs},
        {"demo_jobs", demo_jobs},
        {"demo_jobs_choices", demo_jobs_choices},
        {"study_quick", study_quick},
        {"demo_user_cases", demo_user_cases},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
