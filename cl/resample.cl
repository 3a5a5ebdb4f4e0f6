/* Resampling and pooling by 2 along D, H, W. Every kernel runs over a
 * (C4, W, N*D*H) range of one side's voxels (4 consecutive channels per work-item,
 * float4, the last vector lane by lane when C % 4 != 0). Backward passes gather
 * (or write disjoint 2x2x2 blocks), so no two work-items write the same element. */

inline float4 kd_rs_ld4(__global const float *p, int c, int C) {
    if (c + 4 <= C) return vload4(0, p + c);
    float4 v = (float4)(0.0f);
    v.s0 = p[c];
    if (c + 1 < C) v.s1 = p[c + 1];
    if (c + 2 < C) v.s2 = p[c + 2];
    return v;
}

inline void kd_rs_st4(__global float *p, int c, int C, float4 v) {
    if (c + 4 <= C) {
        vstore4(v, 0, p + c);
        return;
    }
    p[c] = v.s0;
    if (c + 1 < C) p[c + 1] = v.s1;
    if (c + 2 < C) p[c + 2] = v.s2;
}

/* Element offset of voxel (n, z, y, x) in a (N, D, H, W, C) tensor. */
inline long kd_rs_at(int n, int z, int y, int x, int D, int H, int W, int C) {
    return ((((long)n * D + z) * H + y) * W + x) * C;
}

/* PyTorch's align_corners=False source index for output o of a x2 upsampling of
 * `in` samples: s = (o + 0.5) / 2 - 0.5 clamped at 0; neighbours i0 = floor(s),
 * i1 = min(i0 + 1, in - 1), weight of i1 = s - i0. */
inline void kd_rs_src(int o, int in, int *i0, int *i1, float *l1) {
    float s = ((float)o + 0.5f) * 0.5f - 0.5f;
    if (s < 0.0f) s = 0.0f;
    int a = (int)s;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : a;
    *l1 = s - (float)a;
}

/* Weight of input i in output o along one axis (0 when unrelated). */
inline float kd_rs_w(int o, int i, int in) {
    int i0, i1;
    float l1;
    kd_rs_src(o, in, &i0, &i1, &l1);
    return (i0 == i ? 1.0f - l1 : 0.0f) + (i1 == i ? l1 : 0.0f);
}

/* Decodes the work-item: c (first channel), w, and n, z, y from dim 2 = (n*D + z)*H + y. */
#define KD_RS_IDS(D, H, W, C, N)                                   \
    int c = 4 * (int)get_global_id(0), w = get_global_id(1);       \
    int r_ = get_global_id(2);                                     \
    if (c >= (C) || w >= (W) || r_ >= (N) * (D) * (H)) return;     \
    int y = r_ % (H), z = (r_ / (H)) % (D), n = r_ / ((H) * (D))

/* x (N, D, H, W, C) -> y (N, 2D, 2H, 2W, C), over output voxels. */
__kernel void kd_up_trilinear_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                                  int N, int D, int H, int W, int C) {
    KD_RS_IDS(2 * D, 2 * H, 2 * W, C, N);
    int z0, z1, y0, y1, x0, x1;
    float lz, ly, lx;
    kd_rs_src(z, D, &z0, &z1, &lz);
    kd_rs_src(y, H, &y0, &y1, &ly);
    kd_rs_src(w, W, &x0, &x1, &lx);
    __global const float *p = x + xoff;
#define KD_TL(zz, yy, xx) kd_rs_ld4(p + kd_rs_at(n, zz, yy, xx, D, H, W, C), c, C)
    float4 a0 = (1.0f - lx) * KD_TL(z0, y0, x0) + lx * KD_TL(z0, y0, x1);
    float4 a1 = (1.0f - lx) * KD_TL(z0, y1, x0) + lx * KD_TL(z0, y1, x1);
    float4 b0 = (1.0f - lx) * KD_TL(z1, y0, x0) + lx * KD_TL(z1, y0, x1);
    float4 b1 = (1.0f - lx) * KD_TL(z1, y1, x0) + lx * KD_TL(z1, y1, x1);
#undef KD_TL
    float4 a = (1.0f - ly) * a0 + ly * a1, b = (1.0f - ly) * b0 + ly * b1;
    kd_rs_st4(yv + yoff + kd_rs_at(n, z, y, w, 2 * D, 2 * H, 2 * W, C), c, C,
              (1.0f - lz) * a + lz * b);
}

/* dx (N, D, H, W, C) from dy (N, 2D, 2H, 2W, C), over input voxels: input i gets
 * output o only for o in [2i-1, 2i+2] along each axis. */
__kernel void kd_up_trilinear_bwd(__global const float *dy, int dyoff, __global float *dx,
                                  int dxoff, int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 acc = (float4)(0.0f);
    for (int oz = max(2 * z - 1, 0); oz <= min(2 * z + 2, 2 * D - 1); oz++) {
        float wz = kd_rs_w(oz, z, D);
        if (wz == 0.0f) continue;
        for (int oy = max(2 * y - 1, 0); oy <= min(2 * y + 2, 2 * H - 1); oy++) {
            float wy = kd_rs_w(oy, y, H);
            if (wy == 0.0f) continue;
            for (int ox = max(2 * w - 1, 0); ox <= min(2 * w + 2, 2 * W - 1); ox++) {
                float wx = kd_rs_w(ox, w, W);
                if (wx == 0.0f) continue;
                float4 g = kd_rs_ld4(dy + dyoff + kd_rs_at(n, oz, oy, ox, 2 * D, 2 * H, 2 * W, C),
                                     c, C);
                acc = mad((float4)(wz * wy * wx), g, acc);
            }
        }
    }
    kd_rs_st4(dx + dxoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, acc);
}

/* Nearest x2: y[o] = x[o / 2], over output voxels. */
__kernel void kd_up_nearest_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                                int N, int D, int H, int W, int C) {
    KD_RS_IDS(2 * D, 2 * H, 2 * W, C, N);
    float4 v = kd_rs_ld4(x + xoff + kd_rs_at(n, z / 2, y / 2, w / 2, D, H, W, C), c, C);
    kd_rs_st4(yv + yoff + kd_rs_at(n, z, y, w, 2 * D, 2 * H, 2 * W, C), c, C, v);
}

/* dx[i] = sum of the 8 dy[o] with o / 2 = i, over input voxels. */
__kernel void kd_up_nearest_bwd(__global const float *dy, int dyoff, __global float *dx,
                                int dxoff, int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 acc = (float4)(0.0f);
    for (int j = 0; j < 8; j++)
        acc += kd_rs_ld4(dy + dyoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                               2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                         c, C);
    kd_rs_st4(dx + dxoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, acc);
}

/* Max pool 2x2x2 stride 2: x (N, 2D, 2H, 2W, C) -> y (N, D, H, W, C), over output
 * voxels. Window order (dz, dy, dx) row-major; the first maximum wins (strict >),
 * NaN propagates, as PyTorch. */
__kernel void kd_maxpool_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                             int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 m = (float4)(-INFINITY);
    for (int j = 0; j < 8; j++) {
        float4 v = kd_rs_ld4(x + xoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                                 2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                             c, C);
        m = select(m, v, (v > m) | isnan(v));
    }
    kd_rs_st4(yv + yoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, m);
}

/* dx of the 8 inputs of each window: dy at the first maximum, 0 elsewhere. */
__kernel void kd_maxpool_bwd(__global const float *dy, int dyoff, __global const float *x,
                             int xoff, __global float *dx, int dxoff, int N, int D, int H, int W,
                             int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 m = (float4)(-INFINITY);
    int4 arg = (int4)(0);
    for (int j = 0; j < 8; j++) {
        float4 v = kd_rs_ld4(x + xoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                                 2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                             c, C);
        int4 take = (v > m) | isnan(v);
        m = select(m, v, take);
        arg = select(arg, (int4)(j), take);
    }
    float4 g = kd_rs_ld4(dy + dyoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C);
    for (int j = 0; j < 8; j++)
        kd_rs_st4(dx + dxoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                        2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                  c, C, select((float4)(0.0f), g, arg == (int4)(j)));
}

/* Average pool 2x2x2 stride 2, over output voxels. */
__kernel void kd_avgpool_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                             int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 s = (float4)(0.0f);
    for (int j = 0; j < 8; j++)
        s += kd_rs_ld4(x + xoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                           2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                       c, C);
    kd_rs_st4(yv + yoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, s * 0.125f);
}

__kernel void kd_avgpool_bwd(__global const float *dy, int dyoff, __global float *dx, int dxoff,
                             int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 g = kd_rs_ld4(dy + dyoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C) * 0.125f;
    for (int j = 0; j < 8; j++)
        kd_rs_st4(dx + dxoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                        2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                  c, C, g);
}
