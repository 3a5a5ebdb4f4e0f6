/* Optimizers over the flat parameter slab. Deterministic sum of squares of the
 * gradients (fixed order: per group, per work-item, a fixed tree); updates are skipped on device when the gradient or the loss is not
 * finite (flag in stats[1]), so no host round trip is needed inside a step. */
#define KD_OPT_WG 64

__kernel __attribute__((reqd_work_group_size(KD_OPT_WG, 1, 1))) void
kd_sumsq_partials(__global const float *g, int goff, int n, __global float *part, int partoff) {
    __local float red[KD_OPT_WG];
    int lid = get_local_id(0), grp = get_group_id(0), ngr = get_num_groups(0);
    /* each group a contiguous run of whole float16 vectors (its work-items take every
     * KD_OPT_WG-th vector of it); the elements after the last whole vector of the slab go to
     * the first work-items of the last group */
    int nvec = n / 16, per = (nvec + ngr - 1) / ngr;
    int v0 = grp * per, v1 = min(nvec, v0 + per);
    float16 a = (float16)0.0f;
    for (int v = v0 + lid; v < v1; v += KD_OPT_WG) {
        float16 x = vload16(0, g + goff + (long)v * 16);
        a = mad(x, x, a);
    }
    float8 a8 = a.lo + a.hi;
    float4 a4 = a8.lo + a8.hi;
    float acc = (a4.x + a4.y) + (a4.z + a4.w);
    if (grp == ngr - 1)
        for (int i = nvec * 16 + lid; i < n; i += KD_OPT_WG) acc += g[goff + i] * g[goff + i];
    red[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = KD_OPT_WG / 2; s > 0; s >>= 1) {
        if (lid < s) red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) part[partoff + get_group_id(0)] = red[0];
}

/* stats[0] = sum of squares, stats[1] = 1 when it and the loss are finite. */
__kernel void kd_sumsq_finalize(__global const float *part, int partoff, int ngroups,
                                __global const float *loss_stats, int loss_index,
                                __global float *stats, int statsoff) {
    if (get_global_id(0) != 0) return;
    part += partoff;
    stats += statsoff;
    float s = 0.0f;
    for (int i = 0; i < ngroups; i++) s += part[i];
    stats[0] = s;
    float l = loss_index >= 0 ? loss_stats[loss_index] : 0.0f;
    stats[1] = (isfinite(s) && isfinite(l)) ? 1.0f : 0.0f;
}

/* PyTorch Adam with amsgrad=True and L2 weight decay added to the gradient. */
__kernel void kd_adam_amsgrad(__global float *p, int poff, __global const float *g, int goff,
                              __global float *m, int moff, __global float *v, int voff,
                              __global float *vmax, int vmoff, int n, float lr, float b1,
                              float b2, float eps, float wd, float bc1, float bc2_sqrt,
                              __global const float *stats, int statsoff) {
    int i = get_global_id(0);
    if (i >= n || stats[statsoff + 1] == 0.0f) return;
    p += poff;
    g += goff;
    m += moff;
    v += voff;
    vmax += vmoff;
    float gi = g[i] + wd * p[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    float vm = fmax(vmax[i], vi);
    m[i] = mi;
    v[i] = vi;
    vmax[i] = vm;
    float denom = sqrt(vm) / bc2_sqrt + eps;
    p[i] -= (lr / bc1) * mi / denom;
}

/* PyTorch SGD with Nesterov momentum (dampening 0) and L2 weight decay. */
__kernel void kd_sgd_nesterov(__global float *p, int poff, __global const float *g, int goff,
                              __global float *buf, int boff, int n, float lr, float momentum,
                              float wd, int first, __global const float *stats, int statsoff) {
    int i = get_global_id(0);
    if (i >= n || stats[statsoff + 1] == 0.0f) return;
    p += poff;
    g += goff;
    buf += boff;
    float gi = g[i] + wd * p[i];
    float b = first ? gi : momentum * buf[i] + gi;
    buf[i] = b;
    p[i] -= lr * (gi + momentum * b);
}
