/* Elementwise ops over flat ranges (one work-item per 8 consecutive elements,
 * float8 with a scalar tail), channel copies, and gating. */

__kernel void kd_fill(__global float *y, int yoff, int n, float v) {
    int i = get_global_id(0);
    if (i < n) y[yoff + i] = v;
}

/* y = a * x + b * y; b == 0 overwrites y without reading it (BLAS convention). */
__kernel void kd_axpby(__global float *y, int yoff, __global const float *x, int xoff, int n,
                       float a, float b) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n) {
        float8 v = a * vload8(0, x + xoff + i);
        if (b != 0.0f) v = mad((float8)(b), vload8(0, y + yoff + i), v);
        vstore8(v, 0, y + yoff + i);
    } else
        for (; i < n; i++) y[yoff + i] = b != 0.0f ? a * x[xoff + i] + b * y[yoff + i] : a * x[xoff + i];
}

/* y = a * y */
__kernel void kd_scale(__global float *y, int yoff, int n, float a) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n)
        vstore8(a * vload8(0, y + yoff + i), 0, y + yoff + i);
    else
        for (; i < n; i++) y[yoff + i] *= a;
}

/* y = a + b (mul == 0) or a * b (mul != 0); y may alias a or b. */
__kernel void kd_binary(__global const float *a, int aoff, __global const float *b, int boff,
                        __global float *y, int yoff, int n, int mul) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n) {
        float8 u = vload8(0, a + aoff + i), v = vload8(0, b + boff + i);
        vstore8(mul ? u * v : u + v, 0, y + yoff + i);
    } else
        for (; i < n; i++) y[yoff + i] = mul ? a[aoff + i] * b[boff + i] : a[aoff + i] + b[boff + i];
}

/* da = dy * b (when with_a), db = dy * a (when with_b); all inputs read before
 * either output is written, so outputs may alias inputs. */
__kernel void kd_mul_bwd(__global const float *dy, int dyoff, __global const float *a, int aoff,
                         __global const float *b, int boff, __global float *da, int daoff,
                         __global float *db, int dboff, int n, int with_a, int with_b) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n) {
        float8 g = vload8(0, dy + dyoff + i), u = vload8(0, a + aoff + i),
               v = vload8(0, b + boff + i);
        if (with_a) vstore8(g * v, 0, da + daoff + i);
        if (with_b) vstore8(g * u, 0, db + dboff + i);
    } else
        for (; i < n; i++) {
            float g = dy[dyoff + i], u = a[aoff + i], v = b[boff + i];
            if (with_a) da[daoff + i] = g * v;
            if (with_b) db[dboff + i] = g * u;
        }
}

/* y[n, v, c] = x[n, v, c] * s[n, c] over a (C4, nch, N) range of (4 channels,
 * chunk of voxels, batch item). x (N, S, C), s (N, C). With x = NULL-like use_x == 0,
 * y = s broadcast (global average pool backward, s pre-scaled by 1/S). */
__kernel void kd_chscale(__global const float *x, int xoff, int use_x, __global const float *s,
                         int soff, __global float *y, int yoff, int S, int C, int chunk, int nch) {
    int c = 4 * (int)get_global_id(0), k = get_global_id(1), n = get_global_id(2);
    if (c >= C || k >= nch) return;
    float4 f = kd_ld4(s + soff + (long)n * C, c, C);
    int v0 = k * chunk, cnt = min(chunk, S - v0);
    long base = ((long)n * S + v0) * C;
    for (int v = 0; v < cnt; v++) {
        float4 o = use_x ? kd_ld4(x + xoff + base + (long)v * C, c, C) * f : f;
        kd_st4(y + yoff + base + (long)v * C, c, C, o);
    }
}

/* y[v, c] = x[v, c] * a[v] over nvox voxels of C channels. */
__kernel void kd_sgate_fwd(__global const float *x, int xoff, __global const float *a, int aoff,
                           __global float *y, int yoff, int nvox, int C) {
    int v = get_global_id(0);
    if (v >= nvox) return;
    float g = a[aoff + v];
    long b = (long)v * C;
    for (int c = 0; c < C; c += 4) kd_st4(y + yoff + b, c, C, kd_ld4(x + xoff + b, c, C) * g);
}

/* dx = dy * a; da[v] = sum_c dy * x (fixed channel order). */
__kernel void kd_sgate_bwd(__global const float *dy, int dyoff, __global const float *x, int xoff,
                           __global const float *a, int aoff, __global float *dx, int dxoff,
                           __global float *da, int daoff, int nvox, int C) {
    int v = get_global_id(0);
    if (v >= nvox) return;
    float g = a[aoff + v];
    long b = (long)v * C;
    float4 s = (float4)(0.0f);
    for (int c = 0; c < C; c += 4) {
        float4 d = kd_ld4(dy + dyoff + b, c, C);
        s = mad(d, kd_ld4(x + xoff + b, c, C), s);
        kd_st4(dx + dxoff + b, c, C, d * g);
    }
    da[daoff + v] = (s.s0 + s.s1) + (s.s2 + s.s3);
}

/* dst[v, cd0 + j] = src[v, cs0 + j] for j < cc, over nvox voxels (concat, slice). */
__kernel void kd_copy_channels(__global const float *src, int soff, int Cs, int cs0,
                               __global float *dst, int doff, int Cd, int cd0, int cc, int nvox) {
    int v = get_global_id(0);
    if (v >= nvox) return;
    __global const float *p = src + soff + (long)v * Cs + cs0;
    __global float *q = dst + doff + (long)v * Cd + cd0;
    for (int c = 0; c < cc; c += 4) kd_st4(q, c, cc, kd_ld4(p, c, cc));
}
