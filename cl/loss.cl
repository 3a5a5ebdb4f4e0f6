/* Losses over region probabilities p and targets t, (N, C, D, H, W) stored
 * channels-last, C <= 8. Deterministic: fixed-order partial sums per work-group,
 * then one work-item finalises. Stats layout (floats):
 *   [0..8) sum p*t, [8..16) sum p*p, [16..24) sum t, [24] bce sum, [25] mse sum,
 *   [26] loss */
#define KD_LOSS_MAXC 8
#define KD_LOSS_NSTAT 26
#define KD_LOSS_WG 64

/* Each work-item sums a strided set of voxels into 26 accumulators held in registers (the
 * channel loop runs to the constant KD_LOSS_MAXC with a guard, so every accumulator index is
 * static); then all 26 x KD_LOSS_WG values go to local memory at once and 26 work-items each
 * add one statistic's KD_LOSS_WG values in a fixed order: one barrier, where one local tree
 * reduction per statistic took 26 x 7 barriers (~18 ms for 2x3x32^3 on PoCL). */
__kernel __attribute__((reqd_work_group_size(KD_LOSS_WG, 1, 1))) void
kd_loss_partials(__global const float *p, int poff, __global const float *t, int toff,
                 int nvox, int C, float wbg, __global float *part, int partoff) {
    __local float red[KD_LOSS_NSTAT * KD_LOSS_WG];
    float acc[KD_LOSS_NSTAT];
    for (int k = 0; k < KD_LOSS_NSTAT; k++) acc[k] = 0.0f;
    int gid = get_global_id(0), gsz = get_global_size(0), lid = get_local_id(0);
    for (int v = gid; v < nvox; v += gsz) {
        __global const float *pp = p + poff + (long)v * C, *tp = t + toff + (long)v * C;
#pragma unroll
        for (int c = 0; c < KD_LOSS_MAXC; c++) {
            if (c < C) {
                float pv = pp[c], tv = tp[c];
                acc[c] += pv * tv;
                acc[8 + c] += pv * pv;
                acc[16 + c] += tv;
                acc[24] += tv * log(pv + 1e-6f) + wbg * (1.0f - tv) * log(1.0f + 1e-6f - pv);
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
