/* Metrics tests: Dice, HD95, EDT, surfaces, percentiles and summaries on hand-built
 * masks with known answers, and HD95/EDT against brute force on small random masks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"

#define IDX(z, y, x) (((size_t)(z)*H + (y)) * W + (x))

static int near(double a, double b, double tol) { return fabs(a - b) <= tol; }

/* Fills mask (d, h, w) with the box [z0,z1) x [y0,y1) x [x0,x1). */
static void box(uint8_t *m, int h, int w, int z0, int z1, int y0, int y1, int x0, int x1) {
    for (int z = z0; z < z1; z++)
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++)
                m[((size_t)z * h + y) * w + x] = 1;
}

/* ---- brute force references, independent of the library ---- */

/* Surface as medpy: mask & ~erosion (6-neighbourhood, outside = background). */
static void bf_surface(const uint8_t *m, int d, int h, int w, uint8_t *s) {
    static const int off[6][3] = {{1, 0, 0},  {-1, 0, 0}, {0, 1, 0},
                                  {0, -1, 0}, {0, 0, 1},  {0, 0, -1}};
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t i = ((size_t)z * h + y) * w + x;
                int eroded = m[i] != 0;
                for (int k = 0; k < 6 && eroded; k++) {
                    int zz = z + off[k][0], yy = y + off[k][1], xx = x + off[k][2];
                    if (zz < 0 || zz >= d || yy < 0 || yy >= h || xx < 0 || xx >= w ||
                        !m[((size_t)zz * h + yy) * w + xx])
                        eroded = 0;
                }
                s[i] = m[i] && !eroded;
            }
}

/* Min over feature voxels of the squared distance, for every voxel. */
static void bf_edt(const uint8_t *f, int d, int h, int w, const double sp[3], double *out) {
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double best = INFINITY;
                for (int c = 0; c < d; c++)
                    for (int b = 0; b < h; b++)
                        for (int a = 0; a < w; a++) {
                            if (!f[((size_t)c * h + b) * w + a]) continue;
                            double dz = (z - c) * sp[0], dy = (y - b) * sp[1], dx = (x - a) * sp[2];
                            double v = dz * dz + dy * dy + dx * dx;
                            if (v < best) best = v;
                        }
                out[((size_t)z * h + y) * w + x] = best;
            }
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* All surface pairs, both directions pooled, np.percentile(.., 95) linear. */
static double bf_hd95(const uint8_t *a, const uint8_t *b, int d, int h, int w, const double sp[3]) {
    size_t n = (size_t)d * h * w;
    uint8_t *sa = malloc(n), *sb = malloc(n);
    double *da = malloc(n * sizeof(double)), *db = malloc(n * sizeof(double));
    double *pool = malloc(2 * n * sizeof(double));
    bf_surface(a, d, h, w, sa);
    bf_surface(b, d, h, w, sb);
    bf_edt(sb, d, h, w, sp, db);
    bf_edt(sa, d, h, w, sp, da);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (sa[i]) pool[k++] = sqrt(db[i]);
    for (size_t i = 0; i < n; i++)
        if (sb[i]) pool[k++] = sqrt(da[i]);
    qsort(pool, k, sizeof(double), cmp_d);
    double vi = 0.95 * (double)(k - 1);
    size_t lo = (size_t)vi;
    double r = lo + 1 < k ? pool[lo] + (pool[lo + 1] - pool[lo]) * (vi - (double)lo) : pool[lo];
    free(sa), free(sb), free(da), free(db), free(pool);
    return r;
}

/* Random blobby mask: a few random boxes, so masks touch borders and each other. */
static void random_mask(uint8_t *m, int d, int h, int w, unsigned seed) {
    memset(m, 0, (size_t)d * h * w);
    float r[24];
    kd_test_randu(r, 24, seed, 0, 1);
    for (int b = 0; b < 4; b++) {
        const float *q = r + 6 * b;
        int z0 = (int)(q[0] * d), y0 = (int)(q[1] * h), x0 = (int)(q[2] * w);
        int z1 = z0 + 1 + (int)(q[3] * d / 2), y1 = y0 + 1 + (int)(q[4] * h / 2),
            x1 = x0 + 1 + (int)(q[5] * w / 2);
        box(m, h, w, z0, z1 < d ? z1 : d, y0, y1 < h ? y1 : h, x0, x1 < w ? x1 : w);
    }
}

/* ---- tests ---- */

/* Catches: wrong overlap counting, Dice/sensitivity/specificity formulas, volumes in mm^3.
 * Cubes of side 4 shifted by one voxel in x: overlap 3*4*4 = 48, Dice 2*48/128. */
static int dice_shifted_cubes(void) {
    enum { D = 12, H = 12, W = 12 };
    uint8_t p[D * H * W] = {0}, r[D * H * W] = {0};
    box(p, H, W, 2, 6, 2, 6, 3, 7);
    box(r, H, W, 2, 6, 2, 6, 2, 6);
    const double sp[3] = {1, 2, 0.5};
    kd_metrics m;
    KD_CHECK_OK(kd_metrics_compute(p, r, D, H, W, sp, 374, &m));
    KD_CHECK(m.tp == 48 && m.fp == 16 && m.fn == 16 && m.tn == 1728 - 80,
             "counts %lld %lld %lld %lld", (long long)m.tp, (long long)m.fp, (long long)m.fn,
             (long long)m.tn);
    KD_CHECK(near(m.dice, 0.75, 1e-15), "dice %.17g", m.dice);
    KD_CHECK(near(m.sensitivity, 48.0 / 64, 1e-15), "sens %g", m.sensitivity);
    KD_CHECK(near(m.specificity, 1648.0 / 1664, 1e-15), "spec %g", m.specificity);
    KD_CHECK(m.vol_pred == 64 && m.vol_ref == 64, "volumes");
    KD_CHECK(near(m.vol_pred_mm3, 64.0, 1e-12) && near(m.vol_ref_mm3, 64.0, 1e-12), "mm3 %g",
             m.vol_pred_mm3);
    return 0;
}

/* Catches: wrong surface or distances. Cubes of side 6 (x in 2..7 and 4..9), worked by
 * hand: of 152 surface voxels per cube, 80 lie on the other's surface (0), 32 at 1 and 40
 * at 2 (the far x faces and the middle of the overlapped face); pooled 304 values: the
 * 95th percentile index 287.85 falls among the 2s. Dice 2*(4*6*6)/(2*216) = 2/3.
 * Also 3-voxel pools with interpolation: {1, 5} and {1} -> sorted 1,1,5 -> 4.6. */
static int hd95_shifted_cubes(void) {
    enum { D = 12, H = 12, W = 14 };
    static uint8_t a[D * H * W], b[D * H * W];
    box(a, H, W, 2, 8, 2, 8, 2, 8);
    box(b, H, W, 2, 8, 2, 8, 4, 10);
    const double one[3] = {1, 1, 1};
    kd_metrics m;
    KD_CHECK_OK(kd_metrics_compute(a, b, D, H, W, one, 374, &m));
    KD_CHECK(near(m.dice, 2.0 / 3, 1e-15), "dice %g", m.dice);
    KD_CHECK(near(m.hd95, 2.0, 1e-12), "hd95 %.17g", m.hd95);
    /* interpolation: a = voxels at x=5 and x=9, b = voxel x=4 (same y, z) */
    memset(a, 0, sizeof a), memset(b, 0, sizeof b);
    a[IDX(5, 5, 5)] = a[IDX(5, 5, 9)] = 1;
    b[IDX(5, 5, 4)] = 1;
    double hd;
    KD_CHECK_OK(kd_hd95(a, b, D, H, W, one, &hd));
    KD_CHECK(near(hd, 4.6, 1e-12), "interpolated hd95 %.17g (np.percentile([1,1,5],95)=4.6)", hd);
    return 0;
}

/* Catches: spacing applied to the wrong axis or not at all. Cubes of side 4 at 0..3 and
 * 10..13 along one axis: pooled distances 7 (32 voxels), 8 (24), 9 (24), 10 (32) voxels;
 * the 95th percentile (index 105.45 of 112) is 10 voxels: 30 mm along x with spacing
 * (sz,sy,sx) = (1,1,3), 10 mm along z. Single voxels (1,2,3) apart: sqrt(1+4+81) mm. */
static int hd95_anisotropic(void) {
    enum { D = 16, H = 8, W = 16 };
    static uint8_t a[D * H * W], b[D * H * W];
    const double sp[3] = {1, 1, 3};
    double hd;
    box(a, H, W, 2, 6, 2, 6, 0, 4);
    box(b, H, W, 2, 6, 2, 6, 10, 14);
    KD_CHECK_OK(kd_hd95(a, b, D, H, W, sp, &hd));
    KD_CHECK(near(hd, 30.0, 1e-12), "x-separated hd95 %.17g, expected 30", hd);
    memset(a, 0, sizeof a), memset(b, 0, sizeof b);
    box(a, H, W, 0, 4, 2, 6, 2, 6);
    box(b, H, W, 10, 14, 2, 6, 2, 6);
    KD_CHECK_OK(kd_hd95(a, b, D, H, W, sp, &hd));
    KD_CHECK(near(hd, 10.0, 1e-12), "z-separated hd95 %.17g, expected 10", hd);
    memset(a, 0, sizeof a), memset(b, 0, sizeof b);
    a[IDX(3, 3, 3)] = 1;
    b[IDX(4, 5, 6)] = 1;
    KD_CHECK_OK(kd_hd95(a, b, D, H, W, sp, &hd));
    KD_CHECK(near(hd, sqrt(86.0), 1e-12), "voxel pair %.17g, expected sqrt(86)", hd);
    return 0;
}

/* Catches: errors on curved surfaces. Concentric digital balls of radius 5 and 8: every
 * surface distance is 3 up to the voxel discretisation (within 1), and the value must
 * equal the all-pairs brute force exactly. */
static int hd95_spheres(void) {
    enum { D = 21, H = 21, W = 21 };
    static uint8_t a[D * H * W], b[D * H * W];
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int r2 = (z - 10) * (z - 10) + (y - 10) * (y - 10) + (x - 10) * (x - 10);
                a[IDX(z, y, x)] = r2 <= 25;
                b[IDX(z, y, x)] = r2 <= 64;
            }
    const double one[3] = {1, 1, 1};
    double hd;
    KD_CHECK_OK(kd_hd95(a, b, D, H, W, one, &hd));
    KD_CHECK(hd >= 2.0 && hd <= 4.0, "hd95 %g not about 3", hd);
    double ref = bf_hd95(a, b, D, H, W, one);
    KD_CHECK(near(hd, ref, 1e-12), "hd95 %.17g vs brute force %.17g", hd, ref);
    /* symmetric in its arguments */
    double hd2;
    KD_CHECK_OK(kd_hd95(b, a, D, H, W, one, &hd2));
    KD_CHECK(hd2 == hd, "hd95 not symmetric: %g vs %g", hd, hd2);
    return 0;
}

/* Catches: the scipy border rule (border_value 0) ignored: a full 5^3 mask has its 98
 * border voxels as surface and the 27 inside not; a 3^3 cube inside has 26. */
static int surface_border(void) {
    enum { D = 5, H = 5, W = 5 };
    uint8_t m[D * H * W], s[D * H * W];
    memset(m, 1, sizeof m);
    KD_CHECK(kd_mask_surface(m, D, H, W, s) == 98, "full mask surface");
    KD_CHECK(s[IDX(0, 2, 2)] && !s[IDX(2, 2, 2)] && !s[IDX(1, 1, 1)], "border vs interior");
    memset(m, 0, sizeof m);
    box(m, H, W, 1, 4, 1, 4, 1, 4);
    KD_CHECK(kd_mask_surface(m, D, H, W, s) == 26, "3^3 cube surface");
    KD_CHECK(!s[IDX(2, 2, 2)], "cube centre is interior");
    return 0;
}

/* Catches: a wrong lower envelope, spacing per axis, lines without features. */
static int edt_brute_force(void) {
    enum { D = 7, H = 9, W = 11 };
    static uint8_t f[D * H * W];
    static double got[D * H * W], ref[D * H * W];
    const double sp[3] = {1.5, 0.7, 2.0};
    for (unsigned seed = 1; seed <= 6; seed++) {
        float r[D * H * W];
        kd_test_randu(r, D * H * W, seed, 0, 1);
        float density = seed <= 2 ? 0.01f : seed <= 4 ? 0.1f : 0.5f;
        for (int i = 0; i < D * H * W; i++)
            f[i] = r[i] < density;
        KD_CHECK_OK(kd_edt_squared(f, D, H, W, sp, got));
        bf_edt(f, D, H, W, sp, ref);
        for (int i = 0; i < D * H * W; i++)
            KD_CHECK(near(got[i], ref[i], 1e-9 * (1 + ref[i])), "seed %u voxel %d: %.17g vs %.17g",
                     seed, i, got[i], ref[i]);
    }
    memset(f, 0, sizeof f);
    KD_CHECK_OK(kd_edt_squared(f, D, H, W, sp, got));
    KD_CHECK(isinf(got[0]) && isinf(got[D * H * W - 1]), "no features: infinite");
    const double bad[3] = {1, 0, 1};
    KD_CHECK(kd_edt_squared(f, D, H, W, bad, got) == KD_ERR_INVALID_ARG, "zero spacing refused");
    return 0;
}

/* Catches: any departure from medpy's definition (surfaces, pooling, percentile) on
 * irregular masks touching the border, with anisotropic spacing. */
static int hd95_brute_force(void) {
    enum { D = 9, H = 10, W = 12 };
    static uint8_t a[D * H * W], b[D * H * W];
    const double sps[2][3] = {{1, 1, 1}, {2.5, 0.8, 1.3}};
    int checked = 0;
    for (unsigned seed = 1; seed <= 10; seed++) {
        random_mask(a, D, H, W, seed * 7);
        random_mask(b, D, H, W, seed * 7 + 3);
        for (int s = 0; s < 2; s++) {
            double hd;
            KD_CHECK_OK(kd_hd95(a, b, D, H, W, sps[s], &hd));
            double ref = bf_hd95(a, b, D, H, W, sps[s]);
            KD_CHECK(near(hd, ref, 1e-9), "seed %u spacing %d: %.17g vs brute force %.17g", seed, s,
                     hd, ref);
            checked += hd > 0;
        }
    }
    KD_CHECK(checked >= 10, "too few nonzero cases (%d)", checked);
    return 0;
}

/* Catches: BraTS empty-mask rules not applied. */
static int empty_masks(void) {
    enum { D = 6, H = 6, W = 6 };
    uint8_t e[D * H * W] = {0}, m[D * H * W] = {0};
    box(m, H, W, 1, 3, 1, 3, 1, 3);
    const double one[3] = {1, 1, 1};
    kd_metrics k;
    KD_CHECK_OK(kd_metrics_compute(e, e, D, H, W, one, 374, &k));
    KD_CHECK(k.dice == 1 && k.hd95 == 0 && k.sensitivity == 1 && k.specificity == 1,
             "both empty: dice %g hd %g sens %g spec %g", k.dice, k.hd95, k.sensitivity,
             k.specificity);
    KD_CHECK_OK(kd_metrics_compute(e, m, D, H, W, one, 374, &k));
    KD_CHECK(k.dice == 0 && k.hd95 == 374 && k.sensitivity == 0 && k.specificity == 1,
             "empty prediction: dice %g hd %g sens %g", k.dice, k.hd95, k.sensitivity);
    KD_CHECK_OK(kd_metrics_compute(m, e, D, H, W, one, 123.5, &k));
    KD_CHECK(k.dice == 0 && k.hd95 == 123.5 && k.vol_pred == 8 && k.vol_ref == 0,
             "empty reference: dice %g hd %g (option 123.5)", k.dice, k.hd95);
    double hd;
    KD_CHECK(kd_hd95(e, m, D, H, W, one, &hd) == KD_ERR_INVALID_ARG, "hd95 of an empty mask");
    return 0;
}

/* Catches: a percentile or summary that differs from numpy (values from numpy 1.24). */
static int percentile_summary(void) {
    double a[] = {4, 1, 3, 2};
    KD_CHECK(near(kd_percentile_inplace(a, 4, 95), 3.8499999999999996, 1e-15), "p95 of 1..4");
    double b[10];
    for (int i = 0; i < 10; i++)
        b[9 - i] = i;
    KD_CHECK(near(kd_percentile_inplace(b, 10, 95), 8.549999999999999, 1e-15), "p95 of 0..9");
    double c[] = {0.7, 0.1};
    KD_CHECK(near(kd_percentile_inplace(c, 2, 33), 0.29800000000000004, 1e-16), "p33");
    double one = 5;
    KD_CHECK(kd_percentile_inplace(&one, 1, 95) == 5, "single value");
    KD_CHECK(isnan(kd_percentile_inplace(&one, 0, 95)), "empty: NaN");
    double x[] = {1, NAN, 2, 3, 4};
    kd_summary s;
    KD_CHECK_OK(kd_summary_compute(x, 5, &s));
    KD_CHECK(s.n_valid == 4, "n_valid %zu", s.n_valid);
    KD_CHECK(near(s.mean, 2.5, 1e-15) && near(s.std, 1.118033988749895, 1e-15), "mean %g std %g",
             s.mean, s.std);
    KD_CHECK(near(s.median, 2.5, 1e-15) && near(s.q25, 1.75, 1e-15) && near(s.q75, 3.25, 1e-15),
             "median %g q25 %g q75 %g", s.median, s.q25, s.q75);
    double n2[] = {NAN, NAN};
    KD_CHECK_OK(kd_summary_compute(n2, 2, &s));
    KD_CHECK(s.n_valid == 0 && isnan(s.mean) && isnan(s.q75), "all NaN");
    return 0;
}

/* Catches: the Dice of probability maps (training validation, the teachers' agreement)
 * disagreeing with kd_metrics_compute's, thresholding at >= instead of >, or an empty
 * pair scored 0. */
static int dice_threshold(void) {
    enum { N = 1000 };
    static float a[N], b[N];
    static uint8_t ma[N], mb[N];
    unsigned x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        a[i] = (float)((x >> 8) % 1000) / 1000.0f;
        x = x * 1103515245u + 12345u;
        b[i] = (float)((x >> 8) % 1000) / 1000.0f;
        ma[i] = a[i] > 0.5f;
        mb[i] = b[i] > 0.5f;
    }
    kd_metrics m;
    const double sp[3] = {1, 1, 1};
    KD_CHECK_OK(kd_metrics_compute(ma, mb, 10, 10, 10, sp, KD_EMPTY_HD95_DEFAULT, &m));
    double d = kd_dice_threshold(a, b, N, 0.5f);
    KD_CHECK(d == m.dice && d > 0.3 && d < 0.7, "Dice %.17g vs kd_metrics_compute %.17g", d, m.dice);
    float half[2] = {0.5f, 0.5f}, one[2] = {1, 0};
    KD_CHECK(kd_dice_threshold(half, half, 2, 0.5f) == 1.0, "both empty (0.5 is not > 0.5): 1");
    KD_CHECK(kd_dice_threshold(half, one, 2, 0.5f) == 0.0, "one empty: 0");
    KD_CHECK(kd_dice_threshold(one, one, 2, 0.5f) == 1.0, "identical: 1");
    float p[4] = {0.9f, 0.9f, 0.2f, 0.7f}, q[4] = {0.6f, 0.1f, 0.1f, 0.8f};
    KD_CHECK(fabs(kd_dice_threshold(p, q, 4, 0.5f) - 2.0 * 2 / (3 + 2)) < 1e-15, "2|A&B|/(|A|+|B|)");
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"dice_shifted_cubes", dice_shifted_cubes}, {"hd95_shifted_cubes", hd95_shifted_cubes},
        {"hd95_anisotropic", hd95_anisotropic},     {"hd95_spheres", hd95_spheres},
        {"surface_border", surface_border},         {"edt_brute_force", edt_brute_force},
        {"hd95_brute_force", hd95_brute_force},     {"empty_masks", empty_masks},
        {"percentile_summary", percentile_summary}, {"dice_threshold", dice_threshold},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
