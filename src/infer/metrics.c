/* Segmentation metrics as the BraTS evaluation (medpy) computes them: Dice, HD95 from
 * face-connected surfaces and an exact anisotropic Euclidean distance transform,
 * sensitivity, specificity, volumes; and summary statistics. */
#include "kdseg/metrics.h"
#include "mask_box.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int spacing_ok(const double s[3]) {
    for (int i = 0; i < 3; i++)
        if (!(s[i] > 0) || !isfinite(s[i])) return 0;
    return 1;
}

static kd_status check_grid(const char *op, int d, int h, int w, const double spacing[3]) {
    if (d <= 0 || h <= 0 || w <= 0)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: grid (%d, %d, %d) must be positive", op, d, h, w);
    if (spacing && !spacing_ok(spacing))
        return kd_fail(KD_ERR_INVALID_ARG, "%s: spacing (%g, %g, %g) must be positive and finite",
                       op, spacing[0], spacing[1], spacing[2]);
    return KD_OK;
}

/* ---- distance transform ---- */

/* One line of the Felzenszwalb-Huttenlocher lower envelope of parabolas
 * g(q) = min_p (w2 (q - p)^2 + f(p)), with w2 the squared spacing. Infinite f(p) are
 * skipped (they are not feature points of this pass). v, z: scratch of n and n+1. */
static void edt_line(const double *f, double *out, int n, double w2, int *v, double *z) {
    int k = -1;
    for (int q = 0; q < n; q++) {
        if (f[q] == INFINITY) continue;
        if (k < 0) {
            k = 0;
            v[0] = q;
            z[0] = -INFINITY;
            z[1] = INFINITY;
            continue;
        }
        double s;
        for (;;) {
            int p = v[k];
            s = ((f[q] + w2 * (double)q * q) - (f[p] + w2 * (double)p * p)) /
                (2.0 * w2 * (double)(q - p));
            if (s <= z[k])
                k--; /* z[0] = -inf stops this at k = 0 */
            else
                break;
        }
        k++;
        v[k] = q;
        z[k] = s;
        z[k + 1] = INFINITY;
    }
    if (k < 0) {
        for (int q = 0; q < n; q++)
            out[q] = INFINITY;
        return;
    }
    k = 0;
    for (int q = 0; q < n; q++) {
        while (z[k + 1] < q)
            k++;
        double dq = (double)(q - v[k]);
        out[q] = w2 * dq * dq + f[v[k]];
    }
}

/* Transforms every line of axis `axis` (0 D, 1 H, 2 W) of the (D, H, W) array in place. */
static void edt_axis(double *a, const int dims[3], int axis, double spacing, double *line,
                     double *res, int *v, double *z) {
    int n = dims[axis];
    size_t stride = axis == 2 ? 1 : axis == 1 ? (size_t)dims[2] : (size_t)dims[1] * dims[2];
    int o1 = axis == 0 ? 1 : 0, o2 = axis == 2 ? 1 : 2; /* the other two axes */
    size_t st1 = o1 == 0 ? (size_t)dims[1] * dims[2] : (size_t)dims[2];
    size_t st2 = o2 == 1 ? (size_t)dims[2] : 1;
    double w2 = spacing * spacing;
    for (int i = 0; i < dims[o1]; i++)
        for (int j = 0; j < dims[o2]; j++) {
            double *base = a + (size_t)i * st1 + (size_t)j * st2;
            for (int q = 0; q < n; q++)
                line[q] = base[(size_t)q * stride];
            edt_line(line, res, n, w2, v, z);
            for (int q = 0; q < n; q++)
                base[(size_t)q * stride] = res[q];
        }
}

kd_status kd_edt_squared(const uint8_t *feature, int d, int h, int w, const double spacing[3],
                         double *dist2) {
    kd_status s = check_grid("distance transform", d, h, w, spacing);
    if (s) return s;
    size_t n = (size_t)d * h * w;
    int maxn = d > h ? d : h;
    if (w > maxn) maxn = w;
    double *line = malloc(sizeof(double) * (size_t)maxn * 2 + sizeof(double) * (maxn + 1));
    int *v = malloc(sizeof(int) * (size_t)maxn);
    if (!line || !v) {
        free(line);
        free(v);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "distance transform: scratch for lines of %d", maxn);
    }
    for (size_t i = 0; i < n; i++)
        dist2[i] = feature[i] ? 0.0 : INFINITY;
    int dims[3] = {d, h, w};
    double *res = line + maxn, *z = res + maxn;
    edt_axis(dist2, dims, 2, spacing[2], line, res, v, z);
    edt_axis(dist2, dims, 1, spacing[1], line, res, v, z);
    edt_axis(dist2, dims, 0, spacing[0], line, res, v, z);
    free(line);
    free(v);
    return KD_OK;
}

/* ---- surfaces ---- */

size_t kd_mask_surface(const uint8_t *m, int d, int h, int w, uint8_t *surf) {
    size_t count = 0, hw = (size_t)h * w;
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t i = (size_t)z * hw + (size_t)y * w + x;
                int s = 0;
                if (m[i]) {
                    /* scipy's binary_erosion uses border_value 0: outside is background */
                    s = z == 0 || z == d - 1 || y == 0 || y == h - 1 || x == 0 || x == w - 1 ||
                        !m[i - hw] || !m[i + hw] || !m[i - w] || !m[i + w] || !m[i - 1] ||
                        !m[i + 1];
                }
                surf[i] = (uint8_t)s;
                count += (size_t)s;
            }
    return count;
}

/* ---- percentiles and summaries ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* x sorted ascending, n > 0: np.percentile(x, q), method 'linear', with numpy's _lerp. */
static double percentile_sorted(const double *x, size_t n, double q) {
    double vi = (double)(n - 1) * (q / 100.0);
    if (vi <= 0) return x[0];
    if (vi >= (double)(n - 1)) return x[n - 1];
    size_t lo = (size_t)floor(vi);
    double t = vi - (double)lo, a = x[lo], b = x[lo + 1], diff = b - a;
    return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

double kd_percentile_inplace(double *x, size_t n, double q) {
    if (n == 0) return NAN;
    qsort(x, n, sizeof(double), cmp_double);
    return percentile_sorted(x, n, q);
}

kd_status kd_summary_compute(const double *x, size_t n, kd_summary *out) {
    memset(out, 0, sizeof *out);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += !isnan(x[i]);
    out->n_valid = m;
    if (m == 0) {
        out->mean = out->std = out->median = out->q25 = out->q75 = NAN;
        return KD_OK;
    }
    double *v = malloc(sizeof(double) * m);
    if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "summary of %zu values", n);
    size_t k = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) {
            v[k++] = x[i];
            sum += x[i];
        }
    double mean = sum / (double)m, ss = 0;
    for (size_t i = 0; i < m; i++)
        ss += (v[i] - mean) * (v[i] - mean);
    qsort(v, m, sizeof(double), cmp_double);
    out->mean = mean;
    out->std = sqrt(ss / (double)m);
    out->median = percentile_sorted(v, m, 50);
    out->q25 = percentile_sorted(v, m, 25);
    out->q75 = percentile_sorted(v, m, 75);
    free(v);
    return KD_OK;
}

/* ---- HD95 ---- */

/* Bounding box [lo, hi] per axis of the voxels nonzero in a or b; 0 when both empty. */
int kd_union_bbox(const uint8_t *a, const uint8_t *b, int d, int h, int w, int lo[3], int hi[3]) {
    lo[0] = d, lo[1] = h, lo[2] = w;
    hi[0] = hi[1] = hi[2] = -1;
    size_t i = 0;
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++, i++)
                if (a[i] || b[i]) {
                    if (z < lo[0]) lo[0] = z;
                    if (z > hi[0]) hi[0] = z;
                    if (y < lo[1]) lo[1] = y;
                    if (y > hi[1]) hi[1] = y;
                    if (x < lo[2]) lo[2] = x;
                    if (x > hi[2]) hi[2] = x;
                }
    return hi[0] >= 0;
}

static void crop_copy(const uint8_t *src, int h, int w, const int lo[3], const int cd[3],
                      uint8_t *dst) {
    for (int z = 0; z < cd[0]; z++)
        for (int y = 0; y < cd[1]; y++)
            memcpy(dst + ((size_t)z * cd[1] + y) * cd[2],
                   src + ((size_t)(z + lo[0]) * h + (y + lo[1])) * w + lo[2], (size_t)cd[2]);
}

kd_status kd_hd95(const uint8_t *a, const uint8_t *b, int d, int h, int w, const double spacing[3],
                  double *out) {
    kd_status s = check_grid("hd95", d, h, w, spacing);
    if (s) return s;
    /* Work on the bounding box of both masks: every surface voxel (the query points and
     * the feature points) lies in it, and a voxel outside it but inside the grid is
     * background, exactly as the full grid's erosion sees it. */
    int lo[3], hi[3];
    if (!kd_union_bbox(a, b, d, h, w, lo, hi))
        return kd_fail(KD_ERR_INVALID_ARG, "hd95: both masks are empty");
    int cd[3] = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
    size_t n = (size_t)cd[0] * cd[1] * cd[2];
    uint8_t *buf = malloc(n * 4);
    double *dist2 = malloc(sizeof(double) * n);
    double *pool = NULL;
    if (!buf || !dist2) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "hd95: scratch for a (%d, %d, %d) box", cd[0], cd[1],
                    cd[2]);
        goto done;
    }
    uint8_t *ca = buf, *cb = buf + n, *sa = buf + 2 * n, *sb = buf + 3 * n;
    crop_copy(a, h, w, lo, cd, ca);
    crop_copy(b, h, w, lo, cd, cb);
    /* Surfaces in the box: a box face at the grid border is the grid border; one inside
     * the grid has background beyond it (the box holds every mask voxel). */
    size_t na = kd_mask_surface(ca, cd[0], cd[1], cd[2], sa);
    size_t nb = kd_mask_surface(cb, cd[0], cd[1], cd[2], sb);
    if (na == 0 || nb == 0) {
        s = kd_fail(KD_ERR_INVALID_ARG, "hd95: %s mask is empty", na == 0 ? "first" : "second");
        goto done;
    }
    pool = malloc(sizeof(double) * (na + nb));
    if (!pool) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "hd95: %zu surface distances", na + nb);
        goto done;
    }
    size_t k = 0;
    if ((s = kd_edt_squared(sb, cd[0], cd[1], cd[2], spacing, dist2))) goto done;
    for (size_t i = 0; i < n; i++)
        if (sa[i]) pool[k++] = sqrt(dist2[i]);
    if ((s = kd_edt_squared(sa, cd[0], cd[1], cd[2], spacing, dist2))) goto done;
    for (size_t i = 0; i < n; i++)
        if (sb[i]) pool[k++] = sqrt(dist2[i]);
    *out = kd_percentile_inplace(pool, k, 95.0);
done:
    free(buf);
    free(dist2);
    free(pool);
    return s;
}

/* ---- Dice: the one formula ---- */

double kd_dice_counts(int64_t both, int64_t na, int64_t nb) {
    return na + nb > 0 ? 2.0 * (double)both / (double)(na + nb) : 1.0;
}

double kd_dice_threshold(const float *a, const float *b, size_t n, float threshold) {
    int64_t both = 0, na = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        int x = a[i] > threshold, y = b[i] > threshold;
        both += x & y;
        na += x;
        nb += y;
    }
    return kd_dice_counts(both, na, nb);
}

/* ---- all metrics of a region ---- */

kd_status kd_metrics_compute(const uint8_t *pred, const uint8_t *ref, int d, int h, int w,
                             const double spacing[3], double empty_hd95, kd_metrics *out) {
    kd_status s = check_grid("metrics", d, h, w, spacing);
    if (s) return s;
    memset(out, 0, sizeof *out);
    size_t n = (size_t)d * h * w;
    int64_t tp = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < n; i++) {
        int p = pred[i] != 0, r = ref[i] != 0;
        tp += p & r;
        fp += p & (!r);
        fn += (!p) & r;
    }
    int64_t tn = (int64_t)n - tp - fp - fn;
    double voxel_mm3 = spacing[0] * spacing[1] * spacing[2];
    out->tp = tp, out->fp = fp, out->fn = fn, out->tn = tn;
    out->vol_pred = tp + fp;
    out->vol_ref = tp + fn;
    out->vol_pred_mm3 = (double)out->vol_pred * voxel_mm3;
    out->vol_ref_mm3 = (double)out->vol_ref * voxel_mm3;
    out->sensitivity = tp + fn ? (double)tp / (double)(tp + fn) : 1.0;
    out->specificity = tn + fp ? (double)tn / (double)(tn + fp) : 1.0;
    out->dice = kd_dice_counts(tp, out->vol_pred, out->vol_ref);
    if (out->vol_pred == 0 && out->vol_ref == 0)
        out->hd95 = 0.0;
    else if (out->vol_pred == 0 || out->vol_ref == 0)
        out->hd95 = empty_hd95;
    else
        s = kd_hd95(pred, ref, d, h, w, spacing, &out->hd95);
    return s;
}
