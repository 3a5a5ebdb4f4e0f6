/* Activations. Elementwise ones run one work-item per 8 consecutive elements
 * (float8 over the flat channels-last data, a scalar tail); softmax runs one
 * work-item per voxel over its C contiguous channels. */

/* y = leaky(x, slope) over n elements (x and y may alias). */
__kernel void kd_leaky_fwd(__global const float *x, int xoff, __global float *y, int yoff, int n,
                           float slope) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n) {
        float8 v = vload8(0, x + xoff + i);
        vstore8(select(v * slope, v, v > 0.0f), 0, y + yoff + i);
    } else
        for (; i < n; i++) y[yoff + i] = kd_leaky(x[xoff + i], slope);
}

/* dx = dy where x > 0, else dy * slope (x may be the forward output: same sign
 * for slope > 0). */
__kernel void kd_leaky_bwd(__global const float *dy, int dyoff, __global const float *x, int xoff,
                           __global float *dx, int dxoff, int n, float slope) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n) {
        float8 d = vload8(0, dy + dyoff + i), v = vload8(0, x + xoff + i);
        vstore8(select(d * slope, d, v > 0.0f), 0, dx + dxoff + i);
    } else
        for (; i < n; i++) dx[dxoff + i] = x[xoff + i] > 0.0f ? dy[dyoff + i] : dy[dyoff + i] * slope;
}

__kernel void kd_sigmoid_fwd(__global const float *x, int xoff, __global float *y, int yoff,
                             int n) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n) {
        float8 v = vload8(0, x + xoff + i);
        vstore8(1.0f / (1.0f + exp(-v)), 0, y + yoff + i);
    } else
        for (; i < n; i++) y[yoff + i] = 1.0f / (1.0f + exp(-x[xoff + i]));
}

/* dx = dy * y * (1 - y) from the forward output y. */
__kernel void kd_sigmoid_bwd(__global const float *dy, int dyoff, __global const float *y,
                             int yoff, __global float *dx, int dxoff, int n) {
    int i = 8 * (int)get_global_id(0);
    if (i + 8 <= n) {
        float8 d = vload8(0, dy + dyoff + i), v = vload8(0, y + yoff + i);
        vstore8(d * v * (1.0f - v), 0, dx + dxoff + i);
    } else
        for (; i < n; i++) {
            float v = y[yoff + i];
            dx[dxoff + i] = dy[dyoff + i] * v * (1.0f - v);
        }
}

/* Softmax over the C channels of each of nvox voxels (max subtracted first). */
__kernel void kd_softmax_fwd(__global const float *x, int xoff, __global float *y, int yoff,
                             int nvox, int C) {
    int v = get_global_id(0);
    if (v >= nvox) return;
    __global const float *p = x + xoff + (long)v * C;
    __global float *q = y + yoff + (long)v * C;
    float m = p[0];
    for (int c = 1; c < C; c++) m = fmax(m, p[c]);
    float s = 0.0f;
    for (int c = 0; c < C; c++) {
        float e = exp(p[c] - m);
        q[c] = e;
        s += e;
    }
    float inv = 1.0f / s;
    for (int c = 0; c < C; c++) q[c] *= inv;
}

/* dx = y * (dy - sum_c dy * y). */
__kernel void kd_softmax_bwd(__global const float *dy, int dyoff, __global const float *y,
                             int yoff, __global float *dx, int dxoff, int nvox, int C) {
    int v = get_global_id(0);
    if (v >= nvox) return;
    long b = (long)v * C;
    float s = 0.0f;
    for (int c = 0; c < C; c++) s = mad(dy[dyoff + b + c], y[yoff + b + c], s);
    for (int c = 0; c < C; c++) dx[dxoff + b + c] = y[yoff + b + c] * (dy[dyoff + b + c] - s);
}
