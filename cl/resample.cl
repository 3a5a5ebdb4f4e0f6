/* Resampling and pooling by 2 along D, H, W. Every kernel runs over a
 * (C4, W, N*D*H) range of one side's voxels (4 consecutive channels per work-item,
 * float4, the last vector lane by lane when C % 4 != 0). Backward passes gather
 * (or write disjoint 2x2x2 blocks), so no two work-items write the same element. */

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

/* x (N, D, H, W, C) -> y (N, 2D, 2H, 2W, C), over INPUT voxels: the work-item for input
 * (z, y, w) writes the 2x2x2 outputs (2z + a, 2y + b, 2w + c), whose sources all lie in the
 * clamped 3x3x3 neighbourhood of (z, y, w). Each output is computed exactly as before
 * ((1 - l) * lo + l * hi along W, then H, then D, PyTorch's align_corners=False weights),
 * but the 27 loads and the W and H interpolations are shared by the 8 outputs (a kernel
 * over output voxels loaded 64 vectors for the same 8). */
__kernel void kd_up_trilinear_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                                  int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    int zs[3] = {max(z - 1, 0), z, min(z + 1, D - 1)};
    int ys[3] = {max(y - 1, 0), y, min(y + 1, H - 1)};
    int xs[3] = {max(w - 1, 0), w, min(w + 1, W - 1)};
    /* per axis and output parity: the sources (as indices into the 3 neighbours) and the
     * weight of the upper one, from the same kd_rs_src as the reference */
    int zi[2][2], yi[2][2], xi[2][2];
    float lz[2], ly[2], lx[2];
    for (int a = 0; a < 2; a++) {
        int i0, i1;
        kd_rs_src(2 * z + a, D, &i0, &i1, &lz[a]);
        zi[a][0] = i0 - z + 1, zi[a][1] = i1 - z + 1;
        kd_rs_src(2 * y + a, H, &i0, &i1, &ly[a]);
        yi[a][0] = i0 - y + 1, yi[a][1] = i1 - y + 1;
        kd_rs_src(2 * w + a, W, &i0, &i1, &lx[a]);
        xi[a][0] = i0 - w + 1, xi[a][1] = i1 - w + 1;
    }
    __global const float *p = x + xoff;
    /* ex[j][k][c]: the W interpolation for output parity c on source row (zs[j], ys[k]) */
    float4 ex[3][3][2];
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < 3; k++) {
            __global const float *row = p + kd_rs_at(n, zs[j], ys[k], 0, D, H, W, C);
            float4 v0 = kd_ld4(row + (long)xs[0] * C, c, C);
            float4 v1 = kd_ld4(row + (long)xs[1] * C, c, C);
            float4 v2 = kd_ld4(row + (long)xs[2] * C, c, C);
            float4 v[3] = {v0, v1, v2};
            for (int cc = 0; cc < 2; cc++)
                ex[j][k][cc] = (1.0f - lx[cc]) * v[xi[cc][0]] + lx[cc] * v[xi[cc][1]];
        }
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (int cc = 0; cc < 2; cc++) {
                float4 a0 = ex[zi[a][0]][yi[b][0]][cc], a1 = ex[zi[a][0]][yi[b][1]][cc];
                float4 b0 = ex[zi[a][1]][yi[b][0]][cc], b1 = ex[zi[a][1]][yi[b][1]][cc];
                float4 ra = (1.0f - ly[b]) * a0 + ly[b] * a1, rb = (1.0f - ly[b]) * b0 + ly[b] * b1;
                kd_st4(yv + yoff + kd_rs_at(n, 2 * z + a, 2 * y + b, 2 * w + cc, 2 * D, 2 * H,
                                               2 * W, C),
                          c, C, (1.0f - lz[a]) * ra + lz[a] * rb);
            }
}

/* dx (N, D, H, W, C) from dy (N, 2D, 2H, 2W, C), over input voxels: input i gets
 * output o only for o in [2i-1, 2i+2] along each axis. The per-axis weights are computed
 * once (12 instead of up to 192 evaluations); the sum runs in the same order. */
__kernel void kd_up_trilinear_bwd(__global const float *dy, int dyoff, __global float *dx,
                                  int dxoff, int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float wz[4], wy[4], wx[4];
    int oz0 = 2 * z - 1, oy0 = 2 * y - 1, ox0 = 2 * w - 1;
    for (int j = 0; j < 4; j++) {
        wz[j] = oz0 + j >= 0 && oz0 + j < 2 * D ? kd_rs_w(oz0 + j, z, D) : 0.0f;
        wy[j] = oy0 + j >= 0 && oy0 + j < 2 * H ? kd_rs_w(oy0 + j, y, H) : 0.0f;
        wx[j] = ox0 + j >= 0 && ox0 + j < 2 * W ? kd_rs_w(ox0 + j, w, W) : 0.0f;
    }
    float4 acc = (float4)(0.0f);
    for (int jz = 0; jz < 4; jz++) {
        if (wz[jz] == 0.0f) continue;
        for (int jy = 0; jy < 4; jy++) {
            if (wy[jy] == 0.0f) continue;
            __global const float *row =
                dy + dyoff + kd_rs_at(n, oz0 + jz, oy0 + jy, 0, 2 * D, 2 * H, 2 * W, C);
            for (int jx = 0; jx < 4; jx++) {
                if (wx[jx] == 0.0f) continue;
                float4 g = kd_ld4(row + (long)(ox0 + jx) * C, c, C);
                acc = mad((float4)(wz[jz] * wy[jy] * wx[jx]), g, acc);
            }
        }
    }
    kd_st4(dx + dxoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, acc);
}

/* Nearest x2: y[o] = x[o / 2], over output voxels. */
__kernel void kd_up_nearest_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                                int N, int D, int H, int W, int C) {
    KD_RS_IDS(2 * D, 2 * H, 2 * W, C, N);
    float4 v = kd_ld4(x + xoff + kd_rs_at(n, z / 2, y / 2, w / 2, D, H, W, C), c, C);
    kd_st4(yv + yoff + kd_rs_at(n, z, y, w, 2 * D, 2 * H, 2 * W, C), c, C, v);
}

/* dx[i] = sum of the 8 dy[o] with o / 2 = i, over input voxels. */
__kernel void kd_up_nearest_bwd(__global const float *dy, int dyoff, __global float *dx,
                                int dxoff, int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 acc = (float4)(0.0f);
    for (int j = 0; j < 8; j++)
        acc += kd_ld4(dy + dyoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                               2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                         c, C);
    kd_st4(dx + dxoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, acc);
}

/* Max pool 2x2x2 stride 2: x (N, 2D, 2H, 2W, C) -> y (N, D, H, W, C), over output
 * voxels. Window order (dz, dy, dx) row-major; the first maximum wins (strict >),
 * NaN propagates, as PyTorch. */
__kernel void kd_maxpool_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                             int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 m = (float4)(-INFINITY);
    for (int j = 0; j < 8; j++) {
        float4 v = kd_ld4(x + xoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                                 2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                             c, C);
        m = select(m, v, (v > m) | isnan(v));
    }
    kd_st4(yv + yoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, m);
}

/* dx of the 8 inputs of each window: dy at the first maximum, 0 elsewhere. */
__kernel void kd_maxpool_bwd(__global const float *dy, int dyoff, __global const float *x,
                             int xoff, __global float *dx, int dxoff, int N, int D, int H, int W,
                             int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 m = (float4)(-INFINITY);
    int4 arg = (int4)(0);
    for (int j = 0; j < 8; j++) {
        float4 v = kd_ld4(x + xoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                                 2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                             c, C);
        int4 take = (v > m) | isnan(v);
        m = select(m, v, take);
        arg = select(arg, (int4)(j), take);
    }
    float4 g = kd_ld4(dy + dyoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C);
    for (int j = 0; j < 8; j++)
        kd_st4(dx + dxoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                        2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                  c, C, select((float4)(0.0f), g, arg == (int4)(j)));
}

/* Average pool 2x2x2 stride 2, over output voxels. */
__kernel void kd_avgpool_fwd(__global const float *x, int xoff, __global float *yv, int yoff,
                             int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 s = (float4)(0.0f);
    for (int j = 0; j < 8; j++)
        s += kd_ld4(x + xoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                           2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                       c, C);
    kd_st4(yv + yoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C, s * 0.125f);
}

__kernel void kd_avgpool_bwd(__global const float *dy, int dyoff, __global float *dx, int dxoff,
                             int N, int D, int H, int W, int C) {
    KD_RS_IDS(D, H, W, C, N);
    float4 g = kd_ld4(dy + dyoff + kd_rs_at(n, z, y, w, D, H, W, C), c, C) * 0.125f;
    for (int j = 0; j < 8; j++)
        kd_st4(dx + dxoff + kd_rs_at(n, 2 * z + (j >> 2), 2 * y + ((j >> 1) & 1),
                                        2 * w + (j & 1), 2 * D, 2 * H, 2 * W, C),
                  c, C, g);
}
