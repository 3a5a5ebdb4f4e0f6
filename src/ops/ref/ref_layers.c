/* C references of the non-convolution ops (ref_layers.h). Written once over a
 * type T: this file includes itself twice, for float (no suffix) and for double
 * (suffix _d). Sums are accumulated in double in both. */
#ifndef KD_REF_T

#include "ref_layers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KD_REF_BODY "ref_layers.c"
#include "ref_twice.h"

#else /* the body, over T */

#define T KD_REF_T
#define F KD_REF_FN

/* ---- normalisation ------------------------------------------------------------ */

/* Statistics over batch items [n0, n0+nn) and channels [c0, c0+cg) of x (N, S, C):
 * two-pass mean then biased variance. */
static void F(ref_stats)(const T *x, kd_shape s, int n0, int nn, int c0, int cg, double *mean,
                         double *var) {
    size_t S = (size_t)s.d * s.h * s.w, C = (size_t)s.c;
    double sum = 0, q = 0, cnt = (double)nn * S * cg;
    for (int n = n0; n < n0 + nn; n++)
        for (size_t v = 0; v < S; v++)
            for (int c = c0; c < c0 + cg; c++) sum += x[(n * S + v) * C + c];
    double m = sum / cnt;
    for (int n = n0; n < n0 + nn; n++)
        for (size_t v = 0; v < S; v++)
            for (int c = c0; c < c0 + cg; c++) {
                double d = x[(n * S + v) * C + c] - m;
                q += d * d;
            }
    *mean = m;
    *var = q / cnt;
}

/* y = (x - mean[stat]) * rstd[stat] * gamma + beta; stat = n*sn + c/cg. */
static void F(ref_norm_apply)(const T *x, kd_shape s, const T *gamma, const T *beta,
                              const T *mean, const T *rstd, int cg, int sn, T *y) {
    size_t S = (size_t)s.d * s.h * s.w, C = (size_t)s.c;
    for (int n = 0; n < s.n; n++)
        for (size_t v = 0; v < S; v++)
            for (size_t c = 0; c < C; c++) {
                size_t i = (n * S + v) * C + c;
                int st = n * sn + (int)c / cg;
                y[i] = (T)(((double)x[i] - mean[st]) * rstd[st] * gamma[c] + beta[c]);
            }
}

/* Backward of ref_norm_apply with statistics over nn items and cg channels:
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma. */
static void F(ref_norm_backward)(const T *dy, const T *x, kd_shape s, const T *gamma,
                                 const T *mean, const T *rstd, int G, int cg, int nn, int sn,
                                 T *dx, T *dgamma, T *dbeta) {
    size_t S = (size_t)s.d * s.h * s.w, C = (size_t)s.c;
    int nstat = (s.n / nn) * G;
    for (int st = 0; st < nstat; st++) {
        int n0 = (st / G) * nn, c0 = (st % G) * cg;
        double sg = 0, sgx = 0, M = (double)nn * S * cg;
        for (int n = n0; n < n0 + nn; n++)
            for (size_t v = 0; v < S; v++)
                for (int c = c0; c < c0 + cg; c++) {
                    size_t i = (n * S + v) * C + c;
                    double xh = ((double)x[i] - mean[st]) * rstd[st], g = (double)dy[i] * gamma[c];
                    sg += g;
                    sgx += g * xh;
                }
        for (int n = n0; n < n0 + nn; n++)
            for (size_t v = 0; v < S; v++)
                for (int c = c0; c < c0 + cg; c++) {
                    size_t i = (n * S + v) * C + c;
                    double xh = ((double)x[i] - mean[st]) * rstd[st], g = (double)dy[i] * gamma[c];
                    dx[i] = (T)(rstd[st] * (g - sg / M - xh * sgx / M));
                }
    }
    (void)sn;
    if (!dgamma) return;
    for (size_t c = 0; c < C; c++) {
        double a = 0, b = 0;
        for (int n = 0; n < s.n; n++) {
            int st = n * sn + (int)c / cg;
            for (size_t v = 0; v < S; v++) {
                size_t i = (n * S + v) * C + c;
                a += (double)dy[i] * ((double)x[i] - mean[st]) * rstd[st];
                b += dy[i];
            }
        }
        dgamma[c] += (T)a;
        dbeta[c] += (T)b;
    }
}

void F(kd_ref_groupnorm_forward)(const T *x, kd_shape s, const T *gamma, const T *beta,
                                 int groups, T eps, T *y, T *mean, T *rstd) {
    int cg = s.c / groups;
    for (int n = 0; n < s.n; n++)
        for (int g = 0; g < groups; g++) {
            double m, var;
            F(ref_stats)(x, s, n, 1, g * cg, cg, &m, &var);
            mean[n * groups + g] = (T)m;
            rstd[n * groups + g] = (T)(1.0 / sqrt(var + eps));
        }
    F(ref_norm_apply)(x, s, gamma, beta, mean, rstd, cg, groups, y);
}

void F(kd_ref_groupnorm_backward)(const T *dy, const T *x, kd_shape s, const T *gamma,
                                  const T *mean, const T *rstd, int groups, T *dx, T *dgamma,
                                  T *dbeta) {
    F(ref_norm_backward)(dy, x, s, gamma, mean, rstd, groups, s.c / groups, 1, groups, dx,
                         dgamma, dbeta);
}

void F(kd_ref_groupnorm_leaky_forward)(const T *x, kd_shape s, const T *gamma, const T *beta,
                                       int groups, T eps, T slope, T *y, T *mean, T *rstd) {
    F(kd_ref_groupnorm_forward)(x, s, gamma, beta, groups, eps, y, mean, rstd);
    F(kd_ref_leaky_forward)(y, kd_shape_numel(s), slope, y);
}

void F(kd_ref_groupnorm_leaky_add_forward)(const T *x, kd_shape s, const T *gamma,
                                           const T *beta, int groups, T eps, T slope,
                                           const T *r, T *y, T *mean, T *rstd) {
    F(kd_ref_groupnorm_leaky_forward)(x, s, gamma, beta, groups, eps, slope, y, mean, rstd);
    size_t n = kd_shape_numel(s);
    for (size_t i = 0; i < n; i++) y[i] = y[i] + r[i];
}

void F(kd_ref_groupnorm_leaky_backward)(const T *dy, const T *x, kd_shape s, const T *gamma,
                                        const T *beta, const T *mean, const T *rstd, int groups,
                                        T slope, T *dx, T *dgamma, T *dbeta) {
    /* recompute the GroupNorm output z, then chain: dz = leaky'(z) dy, GroupNorm backward */
    size_t n = kd_shape_numel(s);
    T *dz = malloc(n * sizeof(T));
    if (!dz) return; /* test-only code: the caller sees dx unwritten */
    F(ref_norm_apply)(x, s, gamma, beta, mean, rstd, s.c / groups, groups, dz);
    F(kd_ref_leaky_backward)(dy, dz, n, slope, dz);
    F(kd_ref_groupnorm_backward)(dz, x, s, gamma, mean, rstd, groups, dx, dgamma, dbeta);
    free(dz);
}

void F(kd_ref_batchnorm_forward)(const T *x, kd_shape s, const T *gamma, const T *beta,
                                 T *running_mean, T *running_var, int training, T momentum,
                                 T eps, T *y, T *mean, T *rstd) {
    T m1[1], r1[1];
    (void)m1;
    (void)r1;
    for (int c = 0; c < s.c; c++) {
        double m, var;
        if (training) {
            double cnt = (double)s.n * s.d * s.h * s.w;
            F(ref_stats)(x, s, 0, s.n, c, 1, &m, &var);
            running_mean[c] = (T)((1.0 - momentum) * running_mean[c] + momentum * m);
            running_var[c] =
                (T)((1.0 - momentum) * running_var[c] + momentum * var * cnt / (cnt - 1.0));
        } else {
            m = running_mean[c];
            var = running_var[c];
        }
        if (mean) mean[c] = (T)m;
        if (rstd) rstd[c] = (T)(1.0 / sqrt(var + eps));
    }
    /* apply needs (mean, rstd) arrays: in inference they may be absent */
    size_t S = (size_t)s.d * s.h * s.w, C = (size_t)s.c;
    for (int n = 0; n < s.n; n++)
        for (size_t v = 0; v < S; v++)
            for (size_t c = 0; c < C; c++) {
                size_t i = (n * S + v) * C + c;
                double m = training ? (double)mean[c] : (double)running_mean[c];
                double r = training ? (double)rstd[c] : 1.0 / sqrt((double)running_var[c] + eps);
                y[i] = (T)(((double)x[i] - m) * r * gamma[c] + beta[c]);
            }
}

void F(kd_ref_batchnorm_backward)(const T *dy, const T *x, kd_shape s, const T *gamma,
                                  const T *mean, const T *rstd, T *dx, T *dgamma, T *dbeta) {
    F(ref_norm_backward)(dy, x, s, gamma, mean, rstd, s.c, 1, s.n, 0, dx, dgamma, dbeta);
}

/* ---- activations ------------------------------------------------------------------ */

void F(kd_ref_leaky_forward)(const T *x, size_t n, T slope, T *y) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : x[i] * slope;
}

void F(kd_ref_leaky_backward)(const T *dy, const T *x, size_t n, T slope, T *dx) {
    for (size_t i = 0; i < n; i++) dx[i] = x[i] > 0 ? dy[i] : dy[i] * slope;
}

void F(kd_ref_sigmoid_forward)(const T *x, size_t n, T *y) {
    for (size_t i = 0; i < n; i++) y[i] = (T)(1.0 / (1.0 + exp(-(double)x[i])));
}

void F(kd_ref_sigmoid_backward)(const T *dy, const T *y, size_t n, T *dx) {
    for (size_t i = 0; i < n; i++) dx[i] = (T)((double)dy[i] * y[i] * (1.0 - y[i]));
}

void F(kd_ref_softmax_forward)(const T *x, size_t nvox, int C, T *y) {
    for (size_t v = 0; v < nvox; v++) {
        const T *p = x + v * C;
        double m = p[0], s = 0;
        for (int c = 1; c < C; c++) m = p[c] > m ? p[c] : m;
        for (int c = 0; c < C; c++) s += exp(p[c] - m);
        for (int c = 0; c < C; c++) y[v * C + c] = (T)(exp(p[c] - m) / s);
    }
}

void F(kd_ref_softmax_backward)(const T *dy, const T *y, size_t nvox, int C, T *dx) {
    for (size_t v = 0; v < nvox; v++) {
        double s = 0;
        for (int c = 0; c < C; c++) s += (double)dy[v * C + c] * y[v * C + c];
        for (int c = 0; c < C; c++) dx[v * C + c] = (T)(y[v * C + c] * (dy[v * C + c] - s));
    }
}

/* ---- resampling and pooling --------------------------------------------------------- */

/* Offset of voxel (n, z, y, x) of a (N, D, H, W, C) array. */
static size_t F(ref_at)(int n, int z, int y, int x, int D, int H, int W, int C) {
    return ((((size_t)n * D + z) * H + y) * W + x) * C;
}

/* PyTorch area_pixel_compute_source_index, align_corners=False, scale 1/2. */
static void F(ref_src)(int o, int in, int *i0, int *i1, double *l1) {
    double s = (o + 0.5) * 0.5 - 0.5;
    if (s < 0) s = 0;
    *i0 = (int)s;
    *i1 = *i0 < in - 1 ? *i0 + 1 : *i0;
    *l1 = s - *i0;
}

/* Visits every (output voxel, corner) pair of the trilinear x2 map of shape s:
 * fwd: y[o] += w * x[i]; else dx[i] += w * dy[o]. */
static void F(ref_trilinear)(const T *in, kd_shape s, T *out, int fwd) {
    int D = s.d, H = s.h, W = s.w, C = s.c;
    size_t nin = kd_shape_numel(s);
    if (fwd)
        memset(out, 0, nin * 8 * sizeof(T));
    else
        memset(out, 0, nin * sizeof(T));
    for (int n = 0; n < s.n; n++)
        for (int z = 0; z < 2 * D; z++)
            for (int y = 0; y < 2 * H; y++)
                for (int x = 0; x < 2 * W; x++) {
                    int iz[2], iy[2], ix[2];
                    double lz, ly, lx;
                    F(ref_src)(z, D, &iz[0], &iz[1], &lz);
                    F(ref_src)(y, H, &iy[0], &iy[1], &ly);
                    F(ref_src)(x, W, &ix[0], &ix[1], &lx);
                    double wz[2] = {1 - lz, lz}, wy[2] = {1 - ly, ly}, wx[2] = {1 - lx, lx};
                    size_t o = F(ref_at)(n, z, y, x, 2 * D, 2 * H, 2 * W, C);
                    for (int j = 0; j < 8; j++) {
                        int a = j >> 2, b = (j >> 1) & 1, e = j & 1;
                        double w = wz[a] * wy[b] * wx[e];
                        size_t i = F(ref_at)(n, iz[a], iy[b], ix[e], D, H, W, C);
                        for (int c = 0; c < C; c++) {
                            if (fwd)
                                out[o + c] = (T)(out[o + c] + w * in[i + c]);
                            else
                                out[i + c] = (T)(out[i + c] + w * in[o + c]);
                        }
                    }
                }
}

void F(kd_ref_upsample_trilinear_forward)(const T *x, kd_shape s, T *y) {
    F(ref_trilinear)(x, s, y, 1);
}

void F(kd_ref_upsample_trilinear_backward)(const T *dy, kd_shape s, T *dx) {
    F(ref_trilinear)(dy, s, dx, 0);
}

/* Visits the 8 (big voxel, small voxel) pairs of each 2x2x2 block; s is the small
 * shape. mode 0: nearest fwd big = small; 1: nearest bwd small = sum big;
 * 2: avgpool fwd small = mean big; 3: avgpool bwd big = small / 8. */
static void F(ref_blocks)(const T *in, kd_shape s, T *out, int mode) {
    int D = s.d, H = s.h, W = s.w, C = s.c;
    for (int n = 0; n < s.n; n++)
        for (int z = 0; z < D; z++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    size_t sm = F(ref_at)(n, z, y, x, D, H, W, C);
                    for (int c = 0; c < C; c++) {
                        double acc = 0;
                        for (int j = 0; j < 8; j++) {
                            size_t b = F(ref_at)(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                                 2 * x + (j & 1), 2 * D, 2 * H, 2 * W, C) + c;
                            if (mode == 0) out[b] = in[sm + c];
                            if (mode == 1 || mode == 2) acc += in[b];
                            if (mode == 3) out[b] = (T)(in[sm + c] / 8.0);
                        }
                        if (mode == 1) out[sm + c] = (T)acc;
                        if (mode == 2) out[sm + c] = (T)(acc / 8.0);
                    }
                }
}

void F(kd_ref_upsample_nearest_forward)(const T *x, kd_shape s, T *y) {
    F(ref_blocks)(x, s, y, 0);
}

void F(kd_ref_upsample_nearest_backward)(const T *dy, kd_shape s, T *dx) {
    F(ref_blocks)(dy, s, dx, 1);
}

void F(kd_ref_avgpool_forward)(const T *x, kd_shape s, T *y) { F(ref_blocks)(x, s, y, 2); }

void F(kd_ref_avgpool_backward)(const T *dy, kd_shape s, T *dx) { F(ref_blocks)(dy, s, dx, 3); }

/* Max pool: fwd writes y; bwd writes dx (dy at the first maximum, 0 elsewhere). */
static void F(ref_maxpool)(const T *x, kd_shape s, const T *dy, T *y, T *dx) {
    int D = s.d, H = s.h, W = s.w, C = s.c;
    for (int n = 0; n < s.n; n++)
        for (int z = 0; z < D; z++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++) {
                    size_t sm = F(ref_at)(n, z, yy, xx, D, H, W, C);
                    for (int c = 0; c < C; c++) {
                        size_t b[8];
                        int arg = 0;
                        T m = -INFINITY;
                        for (int j = 0; j < 8; j++) {
                            b[j] = F(ref_at)(n, 2 * z + (j >> 2), 2 * yy + ((j >> 1) & 1),
                                             2 * xx + (j & 1), 2 * D, 2 * H, 2 * W, C) + c;
                            if (x[b[j]] > m || isnan(x[b[j]])) {
                                m = x[b[j]];
                                arg = j;
                            }
                        }
                        if (y) y[sm + c] = m;
                        if (dx)
                            for (int j = 0; j < 8; j++) dx[b[j]] = j == arg ? dy[sm + c] : 0;
                    }
                }
}

void F(kd_ref_maxpool_forward)(const T *x, kd_shape s, T *y) {
    F(ref_maxpool)(x, s, NULL, y, NULL);
}

void F(kd_ref_maxpool_backward)(const T *dy, const T *x, kd_shape s, T *dx) {
    F(ref_maxpool)(x, s, dy, NULL, dx);
}

void F(kd_ref_global_avgpool_forward)(const T *x, kd_shape s, T *y) {
    size_t S = (size_t)s.d * s.h * s.w;
    for (int n = 0; n < s.n; n++)
        for (int c = 0; c < s.c; c++) {
            double acc = 0;
            for (size_t v = 0; v < S; v++) acc += x[(n * S + v) * s.c + c];
            y[n * s.c + c] = (T)(acc / S);
        }
}

void F(kd_ref_global_avgpool_backward)(const T *dy, kd_shape s, T *dx) {
    size_t S = (size_t)s.d * s.h * s.w;
    for (int n = 0; n < s.n; n++)
        for (size_t v = 0; v < S; v++)
            for (int c = 0; c < s.c; c++) dx[(n * S + v) * s.c + c] = (T)(dy[n * s.c + c] / (double)S);
}

/* ---- gating ---------------------------------------------------------------------- */

void F(kd_ref_channel_scale_forward)(const T *x, kd_shape s, const T *sc, T *y) {
    size_t S = (size_t)s.d * s.h * s.w;
    for (int n = 0; n < s.n; n++)
        for (size_t v = 0; v < S; v++)
            for (int c = 0; c < s.c; c++) {
                size_t i = (n * S + v) * s.c + c;
                y[i] = x[i] * sc[n * s.c + c];
            }
}

void F(kd_ref_channel_scale_backward)(const T *dy, const T *x, kd_shape s, const T *sc, T *dx,
                                      T *ds) {
    size_t S = (size_t)s.d * s.h * s.w;
    for (int n = 0; n < s.n; n++)
        for (int c = 0; c < s.c; c++) {
            double acc = 0;
            for (size_t v = 0; v < S; v++) {
                size_t i = (n * S + v) * s.c + c;
                acc += (double)dy[i] * x[i];
                if (dx) dx[i] = dy[i] * sc[n * s.c + c];
            }
            if (ds) ds[n * s.c + c] = (T)acc;
        }
}

void F(kd_ref_spatial_gate_forward)(const T *x, kd_shape s, const T *a, T *y) {
    size_t nvox = kd_shape_numel(s) / s.c;
    for (size_t v = 0; v < nvox; v++)
        for (int c = 0; c < s.c; c++) y[v * s.c + c] = x[v * s.c + c] * a[v];
}

void F(kd_ref_spatial_gate_backward)(const T *dy, const T *x, kd_shape s, const T *a, T *dx,
                                     T *da) {
    size_t nvox = kd_shape_numel(s) / s.c;
    for (size_t v = 0; v < nvox; v++) {
        double acc = 0;
        for (int c = 0; c < s.c; c++) {
            acc += (double)dy[v * s.c + c] * x[v * s.c + c];
            dx[v * s.c + c] = dy[v * s.c + c] * a[v];
        }
        da[v] = (T)acc;
    }
}

/* ---- channels and elementwise ----------------------------------------------------- */

void F(kd_ref_concat_forward)(const T *a, int Ca, const T *b, int Cb, size_t nvox, T *y) {
    int C = Ca + Cb;
    for (size_t v = 0; v < nvox; v++) {
        for (int c = 0; c < Ca; c++) y[v * C + c] = a[v * Ca + c];
        for (int c = 0; c < Cb; c++) y[v * C + Ca + c] = b[v * Cb + c];
    }
}

void F(kd_ref_concat_backward)(const T *dy, int Ca, int Cb, size_t nvox, T *da, T *db) {
    int C = Ca + Cb;
    for (size_t v = 0; v < nvox; v++) {
        for (int c = 0; c < Ca; c++) da[v * Ca + c] = dy[v * C + c];
        for (int c = 0; c < Cb; c++) db[v * Cb + c] = dy[v * C + Ca + c];
    }
}

void F(kd_ref_slice_channels_forward)(const T *x, int Cx, int c0, int Cy, size_t nvox, T *y) {
    for (size_t v = 0; v < nvox; v++)
        for (int c = 0; c < Cy; c++) y[v * Cy + c] = x[v * Cx + c0 + c];
}

void F(kd_ref_slice_channels_backward)(const T *dy, int Cx, int c0, int Cy, size_t nvox,
                                       T *dx) {
    for (size_t v = 0; v < nvox; v++)
        for (int c = 0; c < Cy; c++) dx[v * Cx + c0 + c] = dy[v * Cy + c];
}

void F(kd_ref_add)(const T *a, const T *b, size_t n, T *y) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void F(kd_ref_mul)(const T *a, const T *b, size_t n, T *y) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

void F(kd_ref_mul_backward)(const T *dy, const T *a, const T *b, size_t n, T *da, T *db) {
    for (size_t i = 0; i < n; i++) {
        T g = dy[i], u = a[i], v = b[i];
        if (da) da[i] = g * v;
        if (db) db[i] = g * u;
    }
}

void F(kd_ref_axpby)(T alpha, const T *x, T beta, size_t n, T *y) {
    for (size_t i = 0; i < n; i++) y[i] = beta != 0 ? alpha * x[i] + beta * y[i] : alpha * x[i];
}

void F(kd_ref_scale)(T alpha, size_t n, T *y) {
    for (size_t i = 0; i < n; i++) y[i] *= alpha;
}

#undef T
#undef F

#endif
