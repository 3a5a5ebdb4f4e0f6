/* Losses over region probabilities p and targets t, (N, C, D, H, W) stored
 * channels-last, C <= 8. Deterministic: fixed-order partial sums per work-group,
 * then one work-item finalises. Stats layout (floats):
 *   [0..8) sum p*t, [8..16) sum p*p, [16..24) sum t, [24] bce sum, [25] mse sum,
 *   [26] loss */
#define KD_LOSS_MAXC 8
#define KD_LOSS_NSTAT 26
#define KD_LOSS_WG 64

/* Each work-item sums a strided set of blocks of 16 voxels (16*C consecutive floats: C
 * float16 vectors, so the logarithms run 16 lanes at a time) into vector accumulators; lane l
 * of vector k belongs to channel (16k + l) % C. The voxels after the last whole block go one
 * by one to the first work-items. Then the lanes are added into the 26 statistics in
 * registers (static indices), all 26 x KD_LOSS_WG values go to local memory at once and 26
 * work-items each add one statistic's KD_LOSS_WG values in a fixed order: one barrier. */
#define KD_LOSS_BCE(tv, pv, wbg) \
    ((tv) * log((pv) + 1e-6f) + (wbg) * (1.0f - (tv)) * log(1.0f + 1e-6f - (pv)))
__kernel __attribute__((reqd_work_group_size(KD_LOSS_WG, 1, 1))) void
kd_loss_partials(__global const float *p, int poff, __global const float *t, int toff,
                 int nvox, int C, float wbg, __global float *part, int partoff) {
    __local float red[KD_LOSS_NSTAT * KD_LOSS_WG];
    float acc[KD_LOSS_NSTAT];
    for (int k = 0; k < KD_LOSS_NSTAT; k++) acc[k] = 0.0f;
    int gid = get_global_id(0), gsz = get_global_size(0), lid = get_local_id(0);
    float16 spt[KD_LOSS_MAXC], spp[KD_LOSS_MAXC], stt[KD_LOSS_MAXC];
    float16 bce = (float16)0.0f, mse = (float16)0.0f;
#pragma unroll
    for (int k = 0; k < KD_LOSS_MAXC; k++) spt[k] = spp[k] = stt[k] = (float16)0.0f;
    int nblk = nvox / 16;
    for (int b = gid; b < nblk; b += gsz) {
        __global const float *pp = p + poff + (long)b * 16 * C, *tp = t + toff + (long)b * 16 * C;
#pragma unroll
        for (int k = 0; k < KD_LOSS_MAXC; k++) {
            if (k < C) {
                float16 pv = vload16(k, pp), tv = vload16(k, tp);
                spt[k] += pv * tv;
                spp[k] += pv * pv;
                stt[k] += tv;
                bce += KD_LOSS_BCE(tv, pv, wbg);
                mse += (pv - tv) * (pv - tv);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < KD_LOSS_MAXC; k++) {
        if (k < C) {
            float a[16], q[16], r[16];
            vstore16(spt[k], 0, a);
            vstore16(spp[k], 0, q);
            vstore16(stt[k], 0, r);
            for (int l = 0; l < 16; l++) {
                int c = (16 * k + l) % C;
#pragma unroll
                for (int cc = 0; cc < KD_LOSS_MAXC; cc++)
                    if (cc == c) acc[cc] += a[l], acc[8 + cc] += q[l], acc[16 + cc] += r[l];
            }
        }
    }
    float8 b8 = bce.lo + bce.hi, m8 = mse.lo + mse.hi;
    float4 b4 = b8.lo + b8.hi, m4 = m8.lo + m8.hi;
    acc[24] = (b4.x + b4.y) + (b4.z + b4.w);
    acc[25] = (m4.x + m4.y) + (m4.z + m4.w);
    for (int v = nblk * 16 + gid; v < nvox; v += gsz) { /* the last voxels, one each */
        __global const float *pp = p + poff + (long)v * C, *tp = t + toff + (long)v * C;
#pragma unroll
        for (int c = 0; c < KD_LOSS_MAXC; c++) {
            if (c < C) {
                float pv = pp[c], tv = tp[c];
                acc[c] += pv * tv;
                acc[8 + c] += pv * pv;
                acc[16 + c] += tv;
                acc[24] += KD_LOSS_BCE(tv, pv, wbg);
                acc[25] += (pv - tv) * (pv - tv);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < KD_LOSS_NSTAT; k++) red[k * KD_LOSS_WG + lid] = acc[k];
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < KD_LOSS_NSTAT) {
        float s = 0.0f;
        for (int j = 0; j < KD_LOSS_WG; j++) s += red[lid * KD_LOSS_WG + j];
        part[partoff + get_group_id(0) * KD_LOSS_NSTAT + lid] = s;
    }
}

/* One work-item: sum the partials in order, compute the loss value.
 * loss = a_dice * (1 - mean_c dice_c) + a_bce * (-bce / M) + a_mse * mse / M */
__kernel void kd_loss_finalize(__global const float *part, int partoff, int ngroups, int C, int M,
                               float a_dice, float a_bce, float a_mse, __global float *stats,
                               int statsoff) {
    if (get_global_id(0) != 0) return;
    part += partoff;
    stats += statsoff;
    for (int k = 0; k < KD_LOSS_NSTAT; k++) {
        float s = 0.0f, comp = 0.0f; /* Kahan */
        for (int g = 0; g < ngroups; g++) {
            float y = part[g * KD_LOSS_NSTAT + k] - comp;
            float u = s + y;
            comp = (u - s) - y;
            s = u;
        }
        stats[k] = s;
    }
    float dice = 0.0f;
    for (int c = 0; c < C; c++)
        dice += 2.0f * (stats[c] + 1e-6f) / (stats[8 + c] + stats[16 + c] + 2e-6f);
    dice /= (float)C;
    stats[26] = a_dice * (1.0f - dice) - a_bce * stats[24] / (float)M + a_mse * stats[25] / (float)M;
}

/* dp (+)= weight * dloss/dp, from the finalised stats. accumulate: 0 overwrite, 1 add. */
__kernel void kd_loss_grad(__global const float *p, int poff, __global const float *t, int toff,
                           int n, int C, int M, float wbg, float a_dice, float a_bce,
                           float a_mse, float weight, int accumulate,
                           __global const float *stats, int statsoff, __global float *dp,
                           int dpoff) {
    int i = get_global_id(0);
    if (i >= n) return;
    stats += statsoff;
    int c = i % C;
    float pv = p[poff + i], tv = t[toff + i];
    float num = stats[c] + 1e-6f, den = stats[8 + c] + stats[16 + c] + 2e-6f;
    float ddice = -(2.0f * tv / den - 2.0f * num * 2.0f * pv / (den * den)) / (float)C;
    float dbce = -(tv / (pv + 1e-6f) - wbg * (1.0f - tv) / (1.0f + 1e-6f - pv)) / (float)M;
    float dmse = 2.0f * (pv - tv) / (float)M;
    float g = weight * (a_dice * ddice + a_bce * dbce + a_mse * dmse);
    dp[dpoff + i] = accumulate ? dp[dpoff + i] + g : g;
}
