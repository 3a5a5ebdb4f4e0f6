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

/* Trilinear x2 (align_corners=False), V channels per work-item (float16, float8, float4 or
 * float: the host picks the widest that divides C), one work-item per input row (n, z, y)
 * looping over w, so the index arithmetic of a voxel is shared by V channels.
 * Along an axis, input i gives outputs 2i and 2i+1:
 *   out(2i)   = (1 - l) * in(max(i-1, 0)) + l * in(i),   l = 0.75 (0 at i = 0)
 *   out(2i+1) = 0.75 * in(i) + 0.25 * in(min(i+1, n-1))
 * which is PyTorch's (kd_rs_src) for every i, in the same order: W first, then H, then D,
 * each as (1 - l) * lo + l * hi. Every neighbour has a name (no private array indexed at
 * run time, which PoCL would keep in memory). Range: (C/V, N*D*H). */
#define KD_TRI(lo, hi, l) ((1.0f - (l)) * (lo) + (l) * (hi))
/* the 3x3 rows (zz, yy) in {m, 0, p}^2 around (z, y), each interpolated along W */
#define KD_TRI_ROW(VT, VLD, zz, yy)                                                           \
    {                                                                                        \
        __global const float *r = p + (((long)n * D + z##zz) * H + y##yy) * W * C;          \
        VT vm = VLD(r + (long)wm * C), v0 = VLD(r + (long)w * C), vp = VLD(r + (long)wp * C); \
        e0_##zz##yy = KD_TRI(vm, v0, lw);                                                     \
        e1_##zz##yy = KD_TRI(v0, vp, 0.25f);                                                  \
    }
/* output (2z + a, 2y + b, 2w + cc): H then D interpolation of the W-interpolated rows */
#define KD_TRI_OUT(VT, VST, a, b, cc, zlo, zhi, lz_, ylo, yhi, ly_)                           \
    {                                                                                        \
        VT ra = KD_TRI(e##cc##_##zlo##ylo, e##cc##_##zlo##yhi, ly_);                          \
        VT rb = KD_TRI(e##cc##_##zhi##ylo, e##cc##_##zhi##yhi, ly_);                          \
        VST(KD_TRI(ra, rb, lz_),                                                              \
            q + ((((long)n * 2 * D + 2 * z + (a)) * 2 * H + 2 * y + (b)) * 2 * W + 2 * w + (cc)) * C); \
    }
#define KD_UP_TRI_FWD(SFX, VT, V, VLD, VST)                                                  \
    __kernel void kd_up_trilinear_fwd_##SFX(__global const float *x, int xoff,                \
                                            __global float *yv, int yoff, int N, int D, int H,  \
                                            int W, int C) {                                   \
        int c = (int)get_global_id(0) * (V), r_ = get_global_id(1);                          \
        if (c >= C || r_ >= N * D * H) return;                                               \
        int y = r_ % H, z = (r_ / H) % D, n = r_ / (H * D);                                  \
        int zm = max(z - 1, 0), z0 = z, zp = min(z + 1, D - 1);                               \
        int ym = max(y - 1, 0), y0 = y, yp = min(y + 1, H - 1);                               \
        float lz = z > 0 ? 0.75f : 0.0f, ly = y > 0 ? 0.75f : 0.0f;                           \
        __global const float *p = x + xoff + c;                                              \
        __global float *q = yv + yoff + c;                                                   \
        for (int w = 0; w < W; w++) {                                                        \
            int wm = max(w - 1, 0), wp = min(w + 1, W - 1);                                   \
            float lw = w > 0 ? 0.75f : 0.0f;                                                 \
            VT e0_mm, e1_mm, e0_m0, e1_m0, e0_mp, e1_mp, e0_0m, e1_0m, e0_00, e1_00, e0_0p,   \
                e1_0p, e0_pm, e1_pm, e0_p0, e1_p0, e0_pp, e1_pp;                             \
            KD_TRI_ROW(VT, VLD, m, m) KD_TRI_ROW(VT, VLD, m, 0) KD_TRI_ROW(VT, VLD, m, p)     \
            KD_TRI_ROW(VT, VLD, 0, m) KD_TRI_ROW(VT, VLD, 0, 0) KD_TRI_ROW(VT, VLD, 0, p)     \
            KD_TRI_ROW(VT, VLD, p, m) KD_TRI_ROW(VT, VLD, p, 0) KD_TRI_ROW(VT, VLD, p, p)     \
            KD_TRI_OUT(VT, VST, 0, 0, 0, m, 0, lz, m, 0, ly) KD_TRI_OUT(VT, VST, 0, 0, 1, m, 0, lz, m, 0, ly) \
            KD_TRI_OUT(VT, VST, 0, 1, 0, m, 0, lz, 0, p, 0.25f) KD_TRI_OUT(VT, VST, 0, 1, 1, m, 0, lz, 0, p, 0.25f) \
            KD_TRI_OUT(VT, VST, 1, 0, 0, 0, p, 0.25f, m, 0, ly) KD_TRI_OUT(VT, VST, 1, 0, 1, 0, p, 0.25f, m, 0, ly) \
            KD_TRI_OUT(VT, VST, 1, 1, 0, 0, p, 0.25f, 0, p, 0.25f)                            \
            KD_TRI_OUT(VT, VST, 1, 1, 1, 0, p, 0.25f, 0, p, 0.25f)                            \
        }                                                                                    \
    }

/* dx (N, D, H, W, C) from dy (N, 2D, 2H, 2W, C): input i gets output o only for o in
 * [2i-1, 2i+2] along each axis, with the forward's weight kd_rs_w(o, i) (computed once per
 * row for D and H, per voxel for W); the sum runs over (jz, jy, jx) in order. Range as the
 * forward. */
#define KD_UP_TRI_BWD(SFX, VT, V, VLD, VST)                                                  \
    __kernel void kd_up_trilinear_bwd_##SFX(__global const float *dy, int dyoff,              \
                                            __global float *dx, int dxoff, int N, int D,      \
                                            int H, int W, int C) {                            \
        int c = (int)get_global_id(0) * (V), r_ = get_global_id(1);                          \
        if (c >= C || r_ >= N * D * H) return;                                               \
        int y = r_ % H, z = (r_ / H) % D, n = r_ / (H * D);                                  \
        float wz[4], wy[4];                                                                  \
        int oz0 = 2 * z - 1, oy0 = 2 * y - 1;                                                \
        for (int j = 0; j < 4; j++) {                                                        \
            wz[j] = oz0 + j >= 0 && oz0 + j < 2 * D ? kd_rs_w(oz0 + j, z, D) : 0.0f;         \
            wy[j] = oy0 + j >= 0 && oy0 + j < 2 * H ? kd_rs_w(oy0 + j, y, H) : 0.0f;         \
        }                                                                                    \
        for (int w = 0; w < W; w++) {                                                        \
            int ox0 = 2 * w - 1;                                                             \
            float wx[4];                                                                     \
            for (int j = 0; j < 4; j++)                                                      \
                wx[j] = ox0 + j >= 0 && ox0 + j < 2 * W ? kd_rs_w(ox0 + j, w, W) : 0.0f;     \
            VT acc = (VT)0.0f;                                                               \
            for (int jz = 0; jz < 4; jz++) {                                                 \
                if (wz[jz] == 0.0f) continue;                                                \
                for (int jy = 0; jy < 4; jy++) {                                             \
                    if (wy[jy] == 0.0f) continue;                                            \
                    __global const float *row = dy + dyoff + c +                             \
                        kd_rs_at(n, oz0 + jz, oy0 + jy, 0, 2 * D, 2 * H, 2 * W, C);          \
                    for (int jx = 0; jx < 4; jx++) {                                         \
                        if (wx[jx] == 0.0f) continue;                                        \
                        VT g = VLD(row + (long)(ox0 + jx) * C);                              \
                        acc = mad((VT)(wz[jz] * wy[jy] * wx[jx]), g, acc);                   \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
            VST(acc, dx + dxoff + c + kd_rs_at(n, z, y, w, D, H, W, C));                     \
        }                                                                                    \
    }

#define KD_RS_LD16(p) vload16(0, (p))
#define KD_RS_ST16(v, p) vstore16((v), 0, (p))
#define KD_RS_LD8(p) vload8(0, (p))
#define KD_RS_ST8(v, p) vstore8((v), 0, (p))
#define KD_RS_LD4(p) vload4(0, (p))
#define KD_RS_ST4(v, p) vstore4((v), 0, (p))
#define KD_RS_LD1(p) (*(p))
#define KD_RS_ST1(v, p) (*(p) = (v))
KD_UP_TRI_FWD(v16, float16, 16, KD_RS_LD16, KD_RS_ST16)
KD_UP_TRI_FWD(v8, float8, 8, KD_RS_LD8, KD_RS_ST8)
KD_UP_TRI_FWD(v4, float4, 4, KD_RS_LD4, KD_RS_ST4)
KD_UP_TRI_FWD(v1, float, 1, KD_RS_LD1, KD_RS_ST1)
KD_UP_TRI_BWD(v16, float16, 16, KD_RS_LD16, KD_RS_ST16)
KD_UP_TRI_BWD(v8, float8, 8, KD_RS_LD8, KD_RS_ST8)
KD_UP_TRI_BWD(v4, float4, 4, KD_RS_LD4, KD_RS_ST4)
KD_UP_TRI_BWD(v1, float, 1, KD_RS_LD1, KD_RS_ST1)

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
