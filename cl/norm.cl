/* GroupNorm / BatchNorm (optionally fused with LeakyReLU) and per-channel sums.
 *
 * Data (N, S, C) with S = D*H*W voxels, channels-last. Most kernels here run over
 * a (C4, nch, N) range: one work-item per (4 consecutive channels, chunk of
 * `chunk` voxels, batch item), looping over the chunk's voxels with float4 loads
 * (channel counts that are not a multiple of 4 load the last vector lane by lane).
 *
 * Statistics are deterministic and numerically sound without atomics:
 *  1. kd_norm_stats_partial: per (n, chunk, channel) the chunk mean and the sum
 *     of squared deviations M2 (two passes over the chunk, which sits in cache);
 *  2. kd_norm_stats_final: one work-group of KD_NORM_WG per statistic merges the
 *     partials with Chan's pairwise formula in a fixed order (strided per thread,
 *     then a fixed tree in local memory).
 * A statistic s covers batch items n0..n0+nn-1 and channels c0..c0+cg-1 with
 * n0 = (s / G) * nn, c0 = (s % G) * cg: GroupNorm uses G groups, nn = 1;
 * BatchNorm uses G = C, cg = 1, nn = N. The element (n, c) uses statistic
 * n * sn + c / cg (sn = G for GroupNorm, 0 for BatchNorm). */

#define KD_NORM_WG 64

/* Per-lane gather of a per-statistic vector entry: v[off + n*sn + (c+l)/cg]. */
inline float4 kd_norm_stat4(__global const float *v, int off, int n, int sn, int c, int C,
                            int cg) {
    float4 r;
    int b = off + n * sn;
    r.s0 = v[b + c / cg];
    r.s1 = c + 1 < C ? v[b + (c + 1) / cg] : 0.0f;
    r.s2 = c + 2 < C ? v[b + (c + 2) / cg] : 0.0f;
    r.s3 = c + 3 < C ? v[b + (c + 3) / cg] : 0.0f;
    return r;
}

/* (mean, M2) of each channel over one chunk; part (N, nch, C, 2). */
__kernel void kd_norm_stats_partial(__global const float *x, int xoff, __global float *part,
                                    int poff, int S, int C, int chunk, int nch) {
    int c = 4 * (int)get_global_id(0), k = get_global_id(1), n = get_global_id(2);
    if (c >= C || k >= nch) return;
    int v0 = k * chunk, cnt = min(chunk, S - v0);
    __global const float *p = x + xoff + ((long)n * S + v0) * C;
    float4 s = (float4)(0.0f);
    for (int v = 0; v < cnt; v++) s += kd_ld4(p + (long)v * C, c, C);
    float4 m = s / (float)cnt;
    float4 q = (float4)(0.0f);
    for (int v = 0; v < cnt; v++) {
        float4 d = kd_ld4(p + (long)v * C, c, C) - m;
        q = mad(d, d, q);
    }
    __global float *o = part + poff + (((long)n * nch + k) * C + c) * 2;
    float mm[4] = {m.s0, m.s1, m.s2, m.s3}, qq[4] = {q.s0, q.s1, q.s2, q.s3};
    for (int l = 0; l < 4 && c + l < C; l++) {
        o[2 * l] = mm[l];
        o[2 * l + 1] = qq[l];
    }
}

/* Chan et al.: merge (nb, mb, qb) into (na, ma, qa). */
inline void kd_norm_merge(float *na, float *ma, float *qa, float nb, float mb, float qb) {
    if (nb == 0.0f) return;
    if (*na == 0.0f) {
        *na = nb;
        *ma = mb;
        *qa = qb;
        return;
    }
    float n = *na + nb, d = mb - *ma;
    *ma += d * (nb / n);
    *qa += qb + d * d * (*na * (nb / n));
    *na = n;
}

/* One work-group of KD_NORM_WG per statistic s. Writes mean[s] and
 * rstd[s] = 1/sqrt(var + eps) (biased variance). update != 0 (BatchNorm training):
 * running = (1 - momentum) * running + momentum * batch, with the unbiased variance. */
__kernel __attribute__((reqd_work_group_size(KD_NORM_WG, 1, 1))) void kd_norm_stats_final(
    __global const float *part, int poff, __global float *mean, int moff, __global float *rstd,
    int roff, __global float *rmean, int rmoff, __global float *rvar, int rvoff, int S, int C,
    int chunk, int nch, int G, int cg, int nn, float eps, int update, float momentum) {
    __local float ln[KD_NORM_WG], lm[KD_NORM_WG], lq[KD_NORM_WG];
    int t = get_local_id(0), s = get_group_id(0);
    int n0 = (s / G) * nn, c0 = (s % G) * cg;
    int items = nn * nch * cg;
    float na = 0.0f, ma = 0.0f, qa = 0.0f;
    for (int i = t; i < items; i += KD_NORM_WG) {
        int ch = c0 + i % cg, r = i / cg;
        int k = r % nch, n = n0 + r / nch;
        float cnt = (float)min(chunk, S - k * chunk);
        __global const float *p = part + poff + (((long)n * nch + k) * C + ch) * 2;
        kd_norm_merge(&na, &ma, &qa, cnt, p[0], p[1]);
    }
    ln[t] = na;
    lm[t] = ma;
    lq[t] = qa;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int off = KD_NORM_WG / 2; off > 0; off >>= 1) {
        if (t < off) {
            float a = ln[t], b = lm[t], q = lq[t];
            kd_norm_merge(&a, &b, &q, ln[t + off], lm[t + off], lq[t + off]);
            ln[t] = a;
            lm[t] = b;
            lq[t] = q;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (t == 0) {
        float cnt = ln[0], var = lq[0] / cnt;
        mean[moff + s] = lm[0];
        rstd[roff + s] = 1.0f / sqrt(var + eps);
        if (update) {
            float unb = cnt > 1.0f ? lq[0] / (cnt - 1.0f) : var;
            rmean[rmoff + s] = (1.0f - momentum) * rmean[rmoff + s] + momentum * lm[0];
            rvar[rvoff + s] = (1.0f - momentum) * rvar[rvoff + s] + momentum * unb;
        }
    }
}

/* BatchNorm inference: mean = running mean, rstd = 1/sqrt(running var + eps). */
__kernel void kd_norm_running_stats(__global const float *rmean, int rmoff,
                                    __global const float *rvar, int rvoff, __global float *mean,
                                    int moff, __global float *rstd, int roff, int C, float eps) {
    int c = get_global_id(0);
    if (c >= C) return;
    mean[moff + c] = rmean[rmoff + c];
    rstd[roff + c] = 1.0f / sqrt(rvar[rvoff + c] + eps);
}

/* y = (x - mean) * rstd * gamma + beta, then LeakyReLU(slope) when act != 0, then
 * + r (a residual of x's shape) when res != 0: the residual block's sum in the same
 * pass, as the separate add computes it (one rounding of z + r). y may be x or r. */
__kernel void kd_norm_apply(__global const float *x, int xoff, __global float *y, int yoff,
                            __global const float *gamma, int goff, __global const float *beta,
                            int boff, __global const float *mean, int moff,
                            __global const float *rstd, int roff, int S, int C, int chunk,
                            int nch, int cg, int sn, int act, float slope,
                            __global const float *r, int rsoff, int res) {
    int c = 4 * (int)get_global_id(0), k = get_global_id(1), n = get_global_id(2);
    if (c >= C || k >= nch) return;
    float4 mu = kd_norm_stat4(mean, moff, n, sn, c, C, cg);
    float4 a = kd_norm_stat4(rstd, roff, n, sn, c, C, cg) * kd_ld4(gamma + goff, c, C);
    float4 b = kd_ld4(beta + boff, c, C);
    int v0 = k * chunk, cnt = min(chunk, S - v0);
    long base = ((long)n * S + v0) * C;
    __global const float *px = x + xoff + base;
    __global float *py = y + yoff + base;
    __global const float *pr = r + rsoff + base;
    if (res) /* a loop of its own: a branch inside it slowed the plain loop's vectors */
        for (int v = 0; v < cnt; v++) {
            float4 z = mad(kd_ld4(px + (long)v * C, c, C) - mu, a, b);
            if (act) z = select(z * slope, z, z > 0.0f);
            kd_st4(py + (long)v * C, c, C, z + kd_ld4(pr + (long)v * C, c, C));
        }
    else
        for (int v = 0; v < cnt; v++) {
            float4 z = mad(kd_ld4(px + (long)v * C, c, C) - mu, a, b);
            if (act) z = select(z * slope, z, z > 0.0f);
            kd_st4(py + (long)v * C, c, C, z);
        }
}

/* Backward partial sums per (n, chunk, channel): A = sum d * xhat, B = sum d, where
 * d = dy, or dy * leaky'(z) with z recomputed as in kd_norm_apply when act != 0.
 * pa, pb (N, nch, C). */
__kernel void kd_norm_bwd_partial(__global const float *dy, int dyoff, __global const float *x,
                                  int xoff, __global const float *gamma, int goff,
                                  __global const float *beta, int boff,
                                  __global const float *mean, int moff,
                                  __global const float *rstd, int roff, __global float *pa,
                                  int paoff, __global float *pb, int pboff, int S, int C,
                                  int chunk, int nch, int cg, int sn, int act, float slope) {
    int c = 4 * (int)get_global_id(0), k = get_global_id(1), n = get_global_id(2);
    if (c >= C || k >= nch) return;
    float4 mu = kd_norm_stat4(mean, moff, n, sn, c, C, cg);
    float4 r = kd_norm_stat4(rstd, roff, n, sn, c, C, cg);
    float4 a = r * kd_ld4(gamma + goff, c, C);
    float4 b = kd_ld4(beta + boff, c, C);
    int v0 = k * chunk, cnt = min(chunk, S - v0);
    long base = ((long)n * S + v0) * C;
    __global const float *px = x + xoff + base;
    __global const float *pd = dy + dyoff + base;
    float4 sa = (float4)(0.0f), sb = (float4)(0.0f);
    for (int v = 0; v < cnt; v++) {
        float4 xc = kd_ld4(px + (long)v * C, c, C) - mu;
        float4 d = kd_ld4(pd + (long)v * C, c, C);
        if (act) {
            float4 z = mad(xc, a, b);
            d = select(d * slope, d, z > 0.0f);
        }
        sa = mad(d, xc * r, sa);
        sb += d;
    }
    long o = ((long)n * nch + k) * C + c;
    kd_st4(pa + paoff + o, 0, C - c, sa);
    kd_st4(pb + pboff + o, 0, C - c, sb);
}

/* Per-(n, chunk, channel) sums of a (or a * b when use_b): part (N, nch, C). */
__kernel void kd_chsum_partial(__global const float *a, int aoff, __global const float *b,
                               int boff, int use_b, __global float *part, int poff, int S, int C,
                               int chunk, int nch) {
    int c = 4 * (int)get_global_id(0), k = get_global_id(1), n = get_global_id(2);
    if (c >= C || k >= nch) return;
    int v0 = k * chunk, cnt = min(chunk, S - v0);
    long base = ((long)n * S + v0) * C;
    __global const float *pa = a + aoff + base;
    __global const float *pb = b + boff + base;
    float4 s = (float4)(0.0f);
    if (use_b)
        for (int v = 0; v < cnt; v++)
            s = mad(kd_ld4(pa + (long)v * C, c, C), kd_ld4(pb + (long)v * C, c, C), s);
    else
        for (int v = 0; v < cnt; v++) s += kd_ld4(pa + (long)v * C, c, C);
    kd_st4(part + poff + ((long)n * nch + k) * C + c, 0, C - c, s);
}

/* out[n*C + c] = scale * sum over chunks of part (N, nch, C), n < N: one work-item per
 * (n, c) (count = N*C of them), in a fixed order: KD_NORM_WG strided partial sums
 * (partial t takes chunks t, t + KD_NORM_WG, ...), then a fixed pairwise tree over them
 * (halving: l[t] += l[t + off]). The order of a work-group-wide reduction, without the
 * work-group: one per (n, c) cost more in scheduling than the sums themselves. */
__kernel void kd_chsum_reduce(__global const float *part, int poff, __global float *out,
                              int ooff, int C, int nch, float scale, int count) {
    int s = get_global_id(0);
    if (s >= count) return;
    int n = s / C, c = s % C;
    __global const float *p = part + poff + (long)n * nch * C + c;
    float l[KD_NORM_WG];
    for (int t = 0; t < KD_NORM_WG; t++) {
        float acc = 0.0f;
        for (int k = t; k < nch; k += KD_NORM_WG) acc += p[(long)k * C];
        l[t] = acc;
    }
    for (int off = KD_NORM_WG / 2; off > 0; off >>= 1)
        for (int t = 0; t < off; t++) l[t] += l[t + off];
    out[ooff + s] = scale * l[0];
}

/* After the per-(n, c) sums A, B (N, C):
 *  i < C (when with_dg): dgamma[i] += sum_n A[n, i]; dbeta[i] += sum_n B[n, i];
 *  i < nstat: coef[2i] = -sum gamma*A / M, coef[2i+1] = -sum gamma*B / M over the
 *  statistic's elements (M of them), for dx = rstd * (gamma*d + xhat*coef0 + coef1). */
__kernel void kd_norm_bwd_final(__global const float *A, int aoff, __global const float *B,
                                int boff, __global const float *gamma, int goff,
                                __global float *dgamma, int dgoff, __global float *dbeta,
                                int dboff, int with_dg, __global float *coef, int coff, int N,
                                int C, int S, int G, int cg, int nn, int nstat) {
    int i = get_global_id(0);
    A += aoff;
    B += boff;
    coef += coff;
    if (with_dg && i < C) {
        float sa = 0.0f, sb = 0.0f;
        for (int n = 0; n < N; n++) {
            sa += A[n * C + i];
            sb += B[n * C + i];
        }
        dgamma[dgoff + i] += sa;
        dbeta[dboff + i] += sb;
    }
    if (i < nstat) {
        int n0 = (i / G) * nn, c0 = (i % G) * cg;
        float sgx = 0.0f, sg = 0.0f;
        for (int n = n0; n < n0 + nn; n++)
            for (int c = c0; c < c0 + cg; c++) {
                sgx = mad(gamma[goff + c], A[n * C + c], sgx);
                sg = mad(gamma[goff + c], B[n * C + c], sg);
            }
        float M = (float)nn * (float)S * (float)cg;
        coef[2 * i] = -sgx / M;
        coef[2 * i + 1] = -sg / M;
    }
}

/* dx = rstd * (gamma * d + xhat * coef0 + coef1), d as in kd_norm_bwd_partial. */
__kernel void kd_norm_bwd_dx(__global const float *dy, int dyoff, __global const float *x,
                             int xoff, __global const float *gamma, int goff,
                             __global const float *beta, int boff, __global const float *mean,
                             int moff, __global const float *rstd, int roff,
                             __global const float *coef, int coff, __global float *dx, int dxoff,
                             int S,
                             int C, int chunk, int nch, int cg, int sn, int act, float slope) {
    int c = 4 * (int)get_global_id(0), k = get_global_id(1), n = get_global_id(2);
    if (c >= C || k >= nch) return;
    float4 mu = kd_norm_stat4(mean, moff, n, sn, c, C, cg);
    float4 r = kd_norm_stat4(rstd, roff, n, sn, c, C, cg);
    float4 g = kd_ld4(gamma + goff, c, C);
    float4 a = r * g;
    float4 b = kd_ld4(beta + boff, c, C);
    int sb = n * sn;
    coef += coff;
    float4 k0, k1;
    k0.s0 = coef[2 * (sb + c / cg)];
    k1.s0 = coef[2 * (sb + c / cg) + 1];
    k0.s1 = c + 1 < C ? coef[2 * (sb + (c + 1) / cg)] : 0.0f;
    k1.s1 = c + 1 < C ? coef[2 * (sb + (c + 1) / cg) + 1] : 0.0f;
    k0.s2 = c + 2 < C ? coef[2 * (sb + (c + 2) / cg)] : 0.0f;
    k1.s2 = c + 2 < C ? coef[2 * (sb + (c + 2) / cg) + 1] : 0.0f;
    k0.s3 = c + 3 < C ? coef[2 * (sb + (c + 3) / cg)] : 0.0f;
    k1.s3 = c + 3 < C ? coef[2 * (sb + (c + 3) / cg) + 1] : 0.0f;
    int v0 = k * chunk, cnt = min(chunk, S - v0);
    long base = ((long)n * S + v0) * C;
    __global const float *px = x + xoff + base;
    __global const float *pd = dy + dyoff + base;
    __global float *po = dx + dxoff + base;
    for (int v = 0; v < cnt; v++) {
        float4 xc = kd_ld4(px + (long)v * C, c, C) - mu;
        float4 d = kd_ld4(pd + (long)v * C, c, C);
        if (act) {
            float4 z = mad(xc, a, b);
            d = select(d * slope, d, z > 0.0f);
        }
        float4 o = r * (mad(g, d, mad(xc * r, k0, k1)));
        kd_st4(po + (long)v * C, c, C, o);
    }
}
