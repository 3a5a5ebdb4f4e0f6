/* The BraTS 2023+ lesion-wise metrics (rachitsaluja/BraTS-2023-Metrics): 26-connected
 * components, GT lesions grouped and matched through 18-neighbourhood dilations, and the
 * surfel-weighted robust HD95 of DeepMind's surface-distance package that it uses. */
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kdseg/metrics.h"
#include "mask_box.h"

/* ---- surface elements of a 2x2x2 neighbourhood ----
 *
 * The surface inside one cell of the corner grid is the marching-cubes surface whose
 * vertices are the midpoints of the cell edges that join an inside and an outside
 * corner. It is built here face by face: on each face the segments that separate inside
 * from outside corners (on a face with two diagonal inside corners, the minority corners
 * of the cell, inside when at most four are inside, are cut off), linked into closed
 * polygons and each triangulated as a fan. A non-planar polygon's area depends on its
 * fan's apex: the apex is the first vertex, in the order the polygon is traced, whose
 * fan has the largest area on a unit grid. Checked against the surface-distance
 * package's table for all 256 codes at ten spacings (tests/infer/lesion_reference.py
 * prints the package's values that test_lesion.c compares with). */

#define KD_SURFEL_MAX_TRI 16

typedef struct surfel_code {
    int ntri;
    double normal[KD_SURFEL_MAX_TRI][3]; /* area vectors on the unit grid, axes (a, b, c) */
} surfel_code;

static surfel_code surfel_table[256];
static pthread_once_t surfel_table_once = PTHREAD_ONCE_INIT;

/* Corner (a, b, c) in {0,1}^3 <-> index 4a + 2b + c. */
static int corner_inside(int code, int a, int b, int c) {
    return (code & (128 >> (4 * a + 2 * b + c))) != 0;
}

/* An edge as the pair of its corner indices, lower first, packed as 8 lo + hi. */
static int edge_key(int p, int q) {
    return p < q ? 8 * p + q : 8 * q + p;
}

static void edge_midpoint(int key, double m[3]) {
    int p = key / 8, q = key % 8;
    m[0] = 0.5 * ((p >> 2 & 1) + (q >> 2 & 1));
    m[1] = 0.5 * ((p >> 1 & 1) + (q >> 1 & 1));
    m[2] = 0.5 * ((p & 1) + (q & 1));
}

static void cross3(const double u[3], const double v[3], double out[3]) {
    out[0] = u[1] * v[2] - u[2] * v[1];
    out[1] = u[2] * v[0] - u[0] * v[2];
    out[2] = u[0] * v[1] - u[1] * v[0];
}

/* The triangle (p, q, r)'s area vector on the unit grid. */
static void tri_normal(const double p[3], const double q[3], const double r[3], double n[3]) {
    double u[3] = {q[0] - p[0], q[1] - p[1], q[2] - p[2]};
    double v[3] = {r[0] - p[0], r[1] - p[1], r[2] - p[2]};
    cross3(u, v, n);
    for (int k = 0; k < 3; k++)
        n[k] *= 0.5;
}

static double norm3(const double n[3]) {
    return sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
}

/* Segments of one cell's surface, face by face, as pairs of edge keys. */
static int cell_segments(int code, int seg[][2]) {
    int nseg = 0, ninside = 0;
    for (int i = 0; i < 8; i++)
        ninside += (code >> i) & 1;
    int separate_inside = ninside < 5;
    for (int ax = 0; ax < 3; ax++)
        for (int v = 0; v < 2; v++) {
            int o0 = ax == 0 ? 1 : 0, o1 = ax == 2 ? 1 : 2;
            int cyc[4];
            static const int st[4][2] = {{0, 0}, {1, 0}, {1, 1}, {0, 1}};
            for (int i = 0; i < 4; i++) {
                int p[3];
                p[ax] = v, p[o0] = st[i][0], p[o1] = st[i][1];
                cyc[i] = 4 * p[0] + 2 * p[1] + p[2];
            }
            int in[4], cut[4], ncut = 0, e[4];
            for (int i = 0; i < 4; i++)
                in[i] = corner_inside(code, cyc[i] >> 2, cyc[i] >> 1 & 1, cyc[i] & 1);
            for (int i = 0; i < 4; i++) {
                e[i] = edge_key(cyc[i], cyc[(i + 1) % 4]);
                if (in[i] != in[(i + 1) % 4]) cut[ncut++] = i;
            }
            if (ncut == 2) {
                seg[nseg][0] = e[cut[0]], seg[nseg][1] = e[cut[1]];
                nseg++;
            } else if (ncut == 4) {
                /* cut off corners 0 and 2, or 1 and 3: the pair to separate */
                int first = (in[0] != 0) == separate_inside ? 0 : 1;
                for (int k = first; k < 4; k += 2) {
                    seg[nseg][0] = e[(k + 3) % 4], seg[nseg][1] = e[k];
                    nseg++;
                }
            }
        }
    return nseg;
}

/* Fan area from apex k of polygon P[0..n) on the unit grid. */
static double fan_area(const double (*P)[3], int n, int k) {
    double a = 0, nrm[3];
    for (int i = 1; i < n - 1; i++) {
        tri_normal(P[k], P[(k + i) % n], P[(k + i + 1) % n], nrm);
        a += norm3(nrm);
    }
    return a;
}

static void surfel_code_build(int code, surfel_code *sc) {
    int seg[12][2];
    int nseg = cell_segments(code, seg);
    /* adjacency in order of first appearance, as the polygons are traced */
    int keys[12] = {0}, nkeys = 0, adj[64][2] = {{0}}, nadj[64] = {0};
    for (int s = 0; s < nseg; s++)
        for (int end = 0; end < 2; end++) {
            int a = seg[s][end], b = seg[s][1 - end];
            if (nadj[a] == 0) keys[nkeys++] = a;
            if (nadj[a] < 2) adj[a][nadj[a]++] = b;
        }
    int seen[64] = {0};
    sc->ntri = 0;
    for (int ki = 0; ki < nkeys; ki++) {
        int start = keys[ki];
        if (seen[start]) continue;
        int loop[12], n = 0, prev = -1, cur = start;
        loop[n++] = cur;
        seen[cur] = 1;
        for (;;) {
            int next = -1;
            for (int j = 0; j < nadj[cur]; j++)
                if (adj[cur][j] != prev && !seen[adj[cur][j]]) {
                    next = adj[cur][j];
                    break;
                }
            if (next < 0) break;
            prev = cur, cur = next;
            loop[n++] = cur;
            seen[cur] = 1;
        }
        double P[12][3];
        for (int i = 0; i < n; i++)
            edge_midpoint(loop[i], P[i]);
        int apex = 0;
        double best = -1;
        for (int k = 0; k < n; k++) {
            double a = fan_area((const double (*)[3])P, n, k);
            if (a > best + 1e-12) best = a, apex = k;
        }
        for (int i = 1; i < n - 1 && sc->ntri < KD_SURFEL_MAX_TRI; i++)
            tri_normal(P[apex], P[(apex + i) % n], P[(apex + i + 1) % n], sc->normal[sc->ntri++]);
    }
}

static void surfel_table_build(void) {
    for (int code = 0; code < 256; code++)
        surfel_code_build(code, &surfel_table[code]);
}

/* Built once per process (threads evaluating at once wait for the first). */
static void surfel_table_init(void) { pthread_once(&surfel_table_once, surfel_table_build); }

void kd_surfel_areas(const double spacing[3], double area[256]) {
    surfel_table_init();
    /* the table's axes (a, b, c) are (x, y, z); spacing is (sz, sy, sx) */
    double s0 = spacing[2], s1 = spacing[1], s2 = spacing[0];
    for (int code = 0; code < 256; code++) {
        double sum = 0;
        for (int t = 0; t < surfel_table[code].ntri; t++) {
            const double *n = surfel_table[code].normal[t];
            double v[3] = {n[0] * s1 * s2, n[1] * s0 * s2, n[2] * s0 * s1};
            sum += norm3(v);
        }
        area[code] = sum;
    }
}

/* ---- robust Hausdorff distance on surface elements ---- */

/* numpy's pairwise summation (np.sum of float64), so that the cumulative fractions
 * compare with 0.95 as the package's do. */
static double pairwise_sum(const double *a, size_t n) {
    if (n < 8) {
        double r = 0.;
        for (size_t i = 0; i < n; i++)
            r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        size_t i;
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

typedef struct dist_area {
    double dist, area;
} dist_area;

static int cmp_dist_area(const void *x, const void *y) {
    const dist_area *a = x, *b = y;
    if (a->dist != b->dist) return a->dist < b->dist ? -1 : 1;
    return (a->area > b->area) - (a->area < b->area);
}

/* Area-weighted percentile of v[0..n) (sorted here), n > 0. */
static double weighted_percentile(dist_area *v, size_t n, double percent, double *scratch) {
    qsort(v, n, sizeof *v, cmp_dist_area);
    for (size_t i = 0; i < n; i++)
        scratch[i] = v[i].area;
    double total = pairwise_sum(scratch, n), cum = 0, q = percent / 100.0;
    for (size_t i = 0; i < n; i++) {
        cum += v[i].area;
        if (cum / total >= q) return v[i].dist;
    }
    return v[n - 1].dist;
}

/* Neighbourhood codes of the corner grid (cd + 1 per axis) of mask m cropped to [lo, lo +
 * cd) of the (D, H, W) grid: corner (z, y, x) joins voxels z-1..z, y-1..y, x-1..x. */
static void corner_codes(const uint8_t *m, int h, int w, const int lo[3], const int cd[3],
                         uint8_t *code) {
    int vd = cd[0] + 1, vh = cd[1] + 1, vw = cd[2] + 1;
    size_t i = 0;
    for (int z = 0; z < vd; z++)
        for (int y = 0; y < vh; y++)
            for (int x = 0; x < vw; x++, i++) {
                int c = 0;
                for (int dz = 0; dz < 2; dz++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            int zz = z + dz - 1, yy = y + dy - 1, xx = x + dx - 1;
                            if (zz < 0 || yy < 0 || xx < 0 || zz >= cd[0] || yy >= cd[1] ||
                                xx >= cd[2])
                                continue;
                            if (m[((size_t)(zz + lo[0]) * h + (yy + lo[1])) * w + xx + lo[2]])
                                c |= 128 >> (4 * dx + 2 * dy + dz); /* a: x, b: y, c: z */
                        }
                code[i] = (uint8_t)c;
            }
}

kd_status kd_hd95_surfel(const uint8_t *gt, const uint8_t *pred, int d, int h, int w,
                         const double spacing[3], double *out) {
    if (d <= 0 || h <= 0 || w <= 0)
        return kd_fail(KD_ERR_INVALID_ARG, "hd95: grid (%d, %d, %d) must be positive", d, h, w);
    for (int k = 0; k < 3; k++)
        if (!(spacing[k] > 0) || !isfinite(spacing[k]))
            return kd_fail(KD_ERR_INVALID_ARG, "hd95: spacing (%g, %g, %g) must be positive",
                           spacing[0], spacing[1], spacing[2]);
    int lo[3], hi[3];
    if (!kd_union_bbox(gt, pred, d, h, w, lo, hi)) {
        *out = INFINITY;
        return KD_OK;
    }
    int cd[3] = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
    size_t nv = (size_t)(cd[0] + 1) * (cd[1] + 1) * (cd[2] + 1);
    uint8_t *codes = malloc(nv * 4);
    double *dist2 = malloc(sizeof(double) * nv);
    dist_area *v = NULL;
    double *scratch = NULL;
    kd_status s = KD_OK;
    if (!codes || !dist2) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "hd95: a (%d, %d, %d) box", cd[0], cd[1], cd[2]);
        goto done;
    }
    uint8_t *cg = codes, *cp = codes + nv, *bg = codes + 2 * nv, *bp = codes + 3 * nv;
    corner_codes(gt, h, w, lo, cd, cg);
    corner_codes(pred, h, w, lo, cd, cp);
    size_t ng = 0, np = 0;
    for (size_t i = 0; i < nv; i++) {
        bg[i] = cg[i] != 0 && cg[i] != 255;
        bp[i] = cp[i] != 0 && cp[i] != 255;
        ng += bg[i], np += bp[i];
    }
    if (ng == 0 || np == 0) {
        *out = INFINITY; /* one mask empty: its list is empty, the other's distances inf */
        goto done;
    }
    double area[256];
    kd_surfel_areas(spacing, area);
    size_t nmax = ng > np ? ng : np;
    v = malloc(sizeof *v * nmax);
    scratch = malloc(sizeof(double) * nmax);
    if (!v || !scratch) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "hd95: %zu surface elements", nmax);
        goto done;
    }
    int vd[3] = {cd[0] + 1, cd[1] + 1, cd[2] + 1};
    double perc[2];
    for (int dir = 0; dir < 2; dir++) {
        const uint8_t *from = dir == 0 ? bg : bp, *to = dir == 0 ? bp : bg;
        const uint8_t *code = dir == 0 ? cg : cp;
        if ((s = kd_edt_squared(to, vd[0], vd[1], vd[2], spacing, dist2))) goto done;
        size_t k = 0;
        for (size_t i = 0; i < nv; i++)
            if (from[i]) {
                v[k].dist = sqrt(dist2[i]);
                v[k].area = area[code[i]];
                k++;
            }
        perc[dir] = weighted_percentile(v, k, 95.0, scratch);
    }
    *out = perc[0] > perc[1] ? perc[0] : perc[1];
done:
    free(codes);
    free(dist2);
    free(v);
    free(scratch);
    return s;
}

/* ---- connected components and dilation ---- */

int kd_components26(const uint8_t *mask, int d, int h, int w, int32_t *labels) {
    size_t n = (size_t)d * h * w, hw = (size_t)h * w;
    memset(labels, 0, n * sizeof *labels);
    size_t cap = 1024, top = 0;
    size_t *stack = malloc(cap * sizeof *stack);
    if (!stack) return -1;
    int32_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!mask[i] || labels[i]) continue;
        labels[i] = ++count;
        stack[top++] = i;
        while (top) {
            size_t j = stack[--top];
            int z = (int)(j / hw), y = (int)(j / w % h), x = (int)(j % w);
            for (int dz = -1; dz <= 1; dz++)
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int zz = z + dz, yy = y + dy, xx = x + dx;
                        if (zz < 0 || yy < 0 || xx < 0 || zz >= d || yy >= h || xx >= w) continue;
                        size_t q = (size_t)zz * hw + (size_t)yy * w + xx;
                        if (!mask[q] || labels[q]) continue;
                        labels[q] = count;
                        if (top == cap) {
                            size_t *ns = realloc(stack, 2 * cap * sizeof *stack);
                            if (!ns) {
                                free(stack);
                                return -1;
                            }
                            stack = ns, cap *= 2;
                        }
                        stack[top++] = q;
                    }
        }
    }
    free(stack);
    return count;
}

/* A box [lo, hi] (inclusive) of the grid. */
typedef struct box3 {
    int lo[3], hi[3];
} box3;

static void box_grow(box3 *b, int r, int d, int h, int w) {
    int dims[3] = {d, h, w};
    for (int k = 0; k < 3; k++) {
        b->lo[k] = b->lo[k] - r < 0 ? 0 : b->lo[k] - r;
        b->hi[k] = b->hi[k] + r >= dims[k] ? dims[k] - 1 : b->hi[k] + r;
    }
}

/* `iters` dilations of m by the 18-neighbourhood (scipy's generate_binary_structure(3, 2),
 * outside the grid is background), inside box b, which must hold the result; out and tmp
 * are full (D, H, W) grids, zero outside b on return. */
static void dilate18(const uint8_t *m, uint8_t *out, uint8_t *tmp, int h, int w, const box3 *b,
                     int iters) {
    size_t hw = (size_t)h * w;
    for (int z = b->lo[0]; z <= b->hi[0]; z++)
        for (int y = b->lo[1]; y <= b->hi[1]; y++)
            memcpy(out + z * hw + (size_t)y * w + b->lo[2], m + z * hw + (size_t)y * w + b->lo[2],
                   (size_t)(b->hi[2] - b->lo[2] + 1));
    for (int it = 0; it < iters; it++) {
        for (int z = b->lo[0]; z <= b->hi[0]; z++)
            for (int y = b->lo[1]; y <= b->hi[1]; y++)
                memcpy(tmp + z * hw + (size_t)y * w + b->lo[2],
                       out + z * hw + (size_t)y * w + b->lo[2], (size_t)(b->hi[2] - b->lo[2] + 1));
        for (int z = b->lo[0]; z <= b->hi[0]; z++)
            for (int y = b->lo[1]; y <= b->hi[1]; y++)
                for (int x = b->lo[2]; x <= b->hi[2]; x++) {
                    size_t i = z * hw + (size_t)y * w + x;
                    if (tmp[i]) continue;
                    int hit = 0;
                    for (int dz = -1; dz <= 1 && !hit; dz++)
                        for (int dy = -1; dy <= 1 && !hit; dy++)
                            for (int dx = -1; dx <= 1 && !hit; dx++) {
                                if (abs(dz) + abs(dy) + abs(dx) > 2) continue; /* corners */
                                int zz = z + dz, yy = y + dy, xx = x + dx;
                                if (zz < b->lo[0] || yy < b->lo[1] || xx < b->lo[2] ||
                                    zz > b->hi[0] || yy > b->hi[1] || xx > b->hi[2])
                                    continue;
                                hit = tmp[(size_t)zz * hw + (size_t)yy * w + xx] != 0;
                            }
                    out[i] = (uint8_t)hit;
                }
    }
}

static void box_clear(uint8_t *m, int h, int w, const box3 *b) {
    size_t hw = (size_t)h * w;
    for (int z = b->lo[0]; z <= b->hi[0]; z++)
        for (int y = b->lo[1]; y <= b->hi[1]; y++)
            memset(m + z * hw + (size_t)y * w + b->lo[2], 0, (size_t)(b->hi[2] - b->lo[2] + 1));
}

/* ---- lesion-wise metrics ---- */

void kd_lesion_options_default(kd_lesion_options *o) {
    o->dilation = 3;
    o->min_volume_mm3 = 50.0;
    o->fp_hd95 = KD_EMPTY_HD95_DEFAULT;
}

kd_status kd_lesion_options_preset(const char *challenge, kd_lesion_options *o) {
    kd_lesion_options_default(o);
    const char *c = challenge;
    if (!strncasecmp(c, "brats-", 6)) c += 6;
    if (!strcasecmp(c, "gli") || !strcasecmp(c, "ssa") || !strcasecmp(c, "ped")) return KD_OK;
    if (!strcasecmp(c, "men")) {
        o->dilation = 1;
        return KD_OK;
    }
    if (!strcasecmp(c, "met")) {
        o->dilation = 1;
        o->min_volume_mm3 = 2.0;
        return KD_OK;
    }
    return kd_fail(KD_ERR_INVALID_ARG,
                   "challenge '%s': expected gli, ssa, ped, men or met (BraTS 2023)", challenge);
}

typedef struct lesion_work {
    int32_t *pred_cc, *les_cc; /* (D, H, W) */
    uint8_t *a, *b, *c;        /* (D, H, W) scratch masks, kept zero between uses */
    int64_t *pred_size;        /* voxels of each prediction component */
    box3 *pred_box, *les_box;
    int *stamp;   /* per prediction component: the lesion that last matched it */
    int *matched; /* per prediction component: matched by some lesion */
} lesion_work;

static void lesion_work_free(lesion_work *lw) {
    free(lw->pred_cc), free(lw->les_cc), free(lw->a), free(lw->pred_size), free(lw->pred_box);
    free(lw->les_box), free(lw->stamp), free(lw->matched);
}

/* Bounding boxes and sizes of labels 1..n of cc. */
static void label_boxes(const int32_t *cc, int d, int h, int w, int n, box3 *box, int64_t *size) {
    for (int k = 0; k < n; k++) {
        box[k].lo[0] = d, box[k].lo[1] = h, box[k].lo[2] = w;
        box[k].hi[0] = box[k].hi[1] = box[k].hi[2] = -1;
        if (size) size[k] = 0;
    }
    size_t i = 0;
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++, i++) {
                int l = cc[i];
                if (!l) continue;
                box3 *b = &box[l - 1];
                int p[3] = {z, y, x};
                for (int k = 0; k < 3; k++) {
                    if (p[k] < b->lo[k]) b->lo[k] = p[k];
                    if (p[k] > b->hi[k]) b->hi[k] = p[k];
                }
                if (size) size[l - 1]++;
            }
}

static void box_union(box3 *u, const box3 *b) {
    for (int k = 0; k < 3; k++) {
        if (b->lo[k] < u->lo[k]) u->lo[k] = b->lo[k];
        if (b->hi[k] > u->hi[k]) u->hi[k] = b->hi[k];
    }
}

/* Scores lesion k (1-based) of les_cc restricted to the GT: its matched prediction
 * components are stamped and marked. */
static kd_status score_lesion(lesion_work *lw, const uint8_t *ref, int k, int d, int h, int w,
                              const double spacing[3], const kd_lesion_options *o,
                              double *dice, double *hd95, int64_t *voxels, int *nmatched) {
    size_t hw = (size_t)h * w;
    box3 lb = lw->les_box[k - 1];
    /* the lesion's GT voxels into a */
    int64_t nles = 0;
    for (int z = lb.lo[0]; z <= lb.hi[0]; z++)
        for (int y = lb.lo[1]; y <= lb.hi[1]; y++)
            for (int x = lb.lo[2]; x <= lb.hi[2]; x++) {
                size_t i = z * hw + (size_t)y * w + x;
                int in = ref[i] && lw->les_cc[i] == k;
                lw->a[i] = (uint8_t)in;
                nles += in;
            }
    box3 nb = lb;
    box_grow(&nb, o->dilation, d, h, w);
    dilate18(lw->a, lw->b, lw->c, h, w, &nb, o->dilation);
    *nmatched = 0;
    box3 ub = lb;
    int64_t npx = 0;
    for (int z = nb.lo[0]; z <= nb.hi[0]; z++)
        for (int y = nb.lo[1]; y <= nb.hi[1]; y++)
            for (int x = nb.lo[2]; x <= nb.hi[2]; x++) {
                size_t i = z * hw + (size_t)y * w + x;
                int l = lw->pred_cc[i];
                if (!lw->b[i] || !l || lw->stamp[l - 1] == k) continue;
                lw->stamp[l - 1] = k;
                lw->matched[l - 1] = 1;
                (*nmatched)++;
                npx += lw->pred_size[l - 1];
                box_union(&ub, &lw->pred_box[l - 1]);
            }
    box_clear(lw->b, h, w, &nb);
    box_clear(lw->c, h, w, &nb);
    /* the union of the matched components into b, over the union box */
    int64_t inter = 0;
    for (int z = ub.lo[0]; z <= ub.hi[0]; z++)
        for (int y = ub.lo[1]; y <= ub.hi[1]; y++)
            for (int x = ub.lo[2]; x <= ub.hi[2]; x++) {
                size_t i = z * hw + (size_t)y * w + x;
                int l = lw->pred_cc[i];
                int in = l && lw->stamp[l - 1] == k;
                lw->b[i] = (uint8_t)in;
                inter += in && lw->a[i];
            }
    *dice = kd_dice_counts(inter, npx, nles);
    *voxels = nles;
    kd_status s = KD_OK;
    if (*nmatched == 0) {
        *hd95 = o->fp_hd95;
    } else {
        /* on the union box only: kd_hd95_surfel crops to it anyway */
        int cd[3] = {ub.hi[0] - ub.lo[0] + 1, ub.hi[1] - ub.lo[1] + 1, ub.hi[2] - ub.lo[2] + 1};
        size_t nbx = (size_t)cd[0] * cd[1] * cd[2];
        uint8_t *ca = malloc(2 * nbx);
        if (!ca) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "lesion box of %zu voxels", nbx);
        } else {
            uint8_t *cb = ca + nbx;
            size_t j = 0;
            for (int z = ub.lo[0]; z <= ub.hi[0]; z++)
                for (int y = ub.lo[1]; y <= ub.hi[1]; y++)
                    for (int x = ub.lo[2]; x <= ub.hi[2]; x++, j++) {
                        size_t i = z * hw + (size_t)y * w + x;
                        ca[j] = lw->a[i];
                        cb[j] = lw->b[i];
                    }
            s = kd_hd95_surfel(ca, cb, cd[0], cd[1], cd[2], spacing, hd95);
            if (!s && !isfinite(*hd95)) *hd95 = o->fp_hd95;
            free(ca);
        }
    }
    box_clear(lw->a, h, w, &ub);
    box_clear(lw->b, h, w, &ub);
    return s;
}

kd_status kd_lesion_metrics_compute(const uint8_t *pred, const uint8_t *ref, int d, int h, int w,
                                    const double spacing[3], const kd_lesion_options *o,
                                    kd_lesion_metrics *out) {
    memset(out, 0, sizeof *out);
    if (d <= 0 || h <= 0 || w <= 0)
        return kd_fail(KD_ERR_INVALID_ARG, "lesion metrics: grid (%d, %d, %d)", d, h, w);
    for (int k = 0; k < 3; k++)
        if (!(spacing[k] > 0) || !isfinite(spacing[k]))
            return kd_fail(KD_ERR_INVALID_ARG, "lesion metrics: spacing (%g, %g, %g)", spacing[0],
                           spacing[1], spacing[2]);
    if (o->dilation < 0 || o->dilation > 64 || !(o->min_volume_mm3 >= 0) || !(o->fp_hd95 >= 0))
        return kd_fail(KD_ERR_INVALID_ARG,
                       "lesion metrics: dilation %d (0..64), volume threshold %g, FP HD95 %g",
                       o->dilation, o->min_volume_mm3, o->fp_hd95);
    size_t n = (size_t)d * h * w;
    lesion_work lw = {0};
    kd_status s = KD_OK;
    lw.pred_cc = malloc(n * sizeof(int32_t));
    lw.les_cc = malloc(n * sizeof(int32_t));
    lw.a = calloc(3, n);
    if (!lw.pred_cc || !lw.les_cc || !lw.a) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "lesion metrics: %zu voxels", n);
        goto done;
    }
    lw.b = lw.a + n, lw.c = lw.a + 2 * n;
    int npred = kd_components26(pred, d, h, w, lw.pred_cc);
    /* GT lesions: components of the dilated GT (GT voxels get their component's label) */
    box3 gb = {{d, h, w}, {-1, -1, -1}};
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                if (ref[((size_t)z * h + y) * w + x]) {
                    int p[3] = {z, y, x};
                    for (int k = 0; k < 3; k++) {
                        if (p[k] < gb.lo[k]) gb.lo[k] = p[k];
                        if (p[k] > gb.hi[k]) gb.hi[k] = p[k];
                    }
                }
    int nles = 0;
    memset(lw.les_cc, 0, n * sizeof(int32_t));
    if (gb.hi[0] >= 0) {
        box_grow(&gb, o->dilation, d, h, w);
        dilate18(ref, lw.b, lw.c, h, w, &gb, o->dilation);
        nles = kd_components26(lw.b, d, h, w, lw.les_cc);
        box_clear(lw.b, h, w, &gb);
        box_clear(lw.c, h, w, &gb);
        for (size_t i = 0; i < n; i++)
            if (!ref[i]) lw.les_cc[i] = 0;
    }
    if (npred < 0 || nles < 0) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "lesion metrics: component labelling");
        goto done;
    }
    size_t np1 = (size_t)(npred ? npred : 1), nl1 = (size_t)(nles ? nles : 1);
    lw.pred_size = calloc(np1, sizeof *lw.pred_size);
    lw.pred_box = calloc(np1, sizeof *lw.pred_box);
    lw.les_box = calloc(nl1, sizeof *lw.les_box);
    lw.stamp = calloc(np1, sizeof *lw.stamp);
    lw.matched = calloc(np1, sizeof *lw.matched);
    if (!lw.pred_size || !lw.pred_box || !lw.les_box || !lw.stamp || !lw.matched) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "lesion metrics: %d components", npred + nles);
        goto done;
    }
    label_boxes(lw.pred_cc, d, h, w, npred, lw.pred_box, lw.pred_size);
    label_boxes(lw.les_cc, d, h, w, nles, lw.les_box, NULL);
    double voxel_mm3 = spacing[0] * spacing[1] * spacing[2];
    double sum_dice = 0, sum_hd = 0;
    int counted = 0;
    for (int k = 1; k <= nles && !s; k++) {
        double dice, hd;
        int64_t vox;
        int nm;
        s = score_lesion(&lw, ref, k, d, h, w, spacing, o, &dice, &hd, &vox, &nm);
        if (s) break;
        if ((double)vox * voxel_mm3 <= o->min_volume_mm3) {
            out->ignored++;
            continue;
        }
        counted++;
        sum_dice += dice;
        sum_hd += hd;
        if (nm)
            out->tp++;
        else
            out->fn++;
    }
    if (s) goto done;
    for (int l = 0; l < npred; l++)
        out->fp += !lw.matched[l];
    int denom = counted + out->fp;
    if (denom == 0) {
        out->dice = 1.0;
        out->hd95 = 0.0;
    } else {
        out->dice = sum_dice / denom;
        out->hd95 = (sum_hd + out->fp * o->fp_hd95) / denom;
    }
done:
    lesion_work_free(&lw);
    return s;
}
