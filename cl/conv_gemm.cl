/* Data movement for the GEMM (CLBlast) path of the 3D convolution, channels-last.
 *
 * A chunk is batch item n and output planes [z0, z0 + nz). Its im2col matrix has one row
 * per output voxel of the chunk and KD*KH*KW*C columns ordered (kd, kh, kw, c), which is
 * the row order of the stored weight (KD, KH, KW, C, Cout), so y = col x w is one GEMM. */

/* col[row][k*C + c] = x[n, zo*S+kd-P, yo*S+kh-P, xo*S+kw-P, c] or 0 outside.
 * Range: (C, K3, nz*Ho*Wo). */
__kernel void kd_conv_im2col(__global const float *x, int xoff, __global float *col, int D,
                             int H, int W, int C, int Ho, int Wo, int KD, int KH, int KW, int S,
                             int P, int n, int z0, int nz) {
    int c = get_global_id(0), k = get_global_id(1), row = get_global_id(2);
    int K3 = KD * KH * KW;
    if (c >= C || k >= K3 || row >= nz * Ho * Wo) return;
    int xo = row % Wo, yo = (row / Wo) % Ho, zo = z0 + row / (Wo * Ho);
    int kw = k % KW, kh = (k / KW) % KH, kd = k / (KW * KH);
    int zi = zo * S + kd - P, yi = yo * S + kh - P, xi = xo * S + kw - P;
    float v = 0.0f;
    if (zi >= 0 && zi < D && yi >= 0 && yi < H && xi >= 0 && xi < W)
        v = x[xoff + (((n * D + zi) * H + yi) * W + xi) * C + c];
    col[((long)row * K3 + k) * C + c] = v;
}

/* The adjoint of kd_conv_im2col, in gather form (deterministic): for every input voxel of
 * batch item n whose plane can be reached from output planes [z0, z0+nz),
 * dx[n, zi, yi, xi, c] += sum over taps whose output voxel lies in the chunk of
 * col[row][k*C + c]. Range: (C, W*H, number of input planes zi0..zi1). */
__kernel void kd_conv_col2im(__global const float *col, __global float *dx, int dxoff, int D,
                             int H, int W, int C, int Ho, int Wo, int KD, int KH, int KW, int S,
                             int P, int n, int z0, int nz, int zi0, int nzi) {
    int c = get_global_id(0), yx = get_global_id(1), zz = get_global_id(2);
    if (c >= C || yx >= H * W || zz >= nzi) return;
    int xi = yx % W, yi = yx / W, zi = zi0 + zz;
    int K3 = KD * KH * KW;
    float s = 0.0f;
    for (int kd = 0; kd < KD; kd++) {
        int tz = zi + P - kd;
        if (tz < 0 || tz % S != 0) continue;
        int zo = tz / S;
        if (zo < z0 || zo >= z0 + nz) continue;
        for (int kh = 0; kh < KH; kh++) {
            int ty = yi + P - kh;
            if (ty < 0 || ty % S != 0 || ty / S >= Ho) continue;
            for (int kw = 0; kw < KW; kw++) {
                int tx = xi + P - kw;
                if (tx < 0 || tx % S != 0 || tx / S >= Wo) continue;
                long row = ((long)(zo - z0) * Ho + ty / S) * Wo + tx / S;
                s += col[(row * K3 + (kd * KH + kh) * KW + kw) * C + c];
            }
        }
    }
    dx[dxoff + (((n * D + zi) * H + yi) * W + xi) * C + c] += s;
}

/* y[r][c] = b[c] for r < R (initialises a GEMM output that is then accumulated into). */
__kernel void kd_conv_bias_rows(__global float *y, int yoff, __global const float *b, int boff,
                                int R, int C) {
    int c = get_global_id(0), r = get_global_id(1);
    if (c >= C || r >= R) return;
    y[yoff + (long)r * C + c] = b[boff + c];
}

/* Transposed 2x2x2 stride-2 conv, scatter of the 8 per-tap GEMM results:
 * y[n, 2z+a, 2y+b, 2x+e, co] = tmp[tap][vox][co] (+ bias), tap = (a*2+b)*2+e, vox the
 * input voxel index over (N, D, H, W). Range: (Cout, 8, N*D*H*W). */
__kernel void kd_convT_scatter(__global const float *tmp, __global float *y, int yoff,
                               __global const float *b, int boff, int has_b, int N, int D,
                               int H, int W, int Cout) {
    int co = get_global_id(0), tap = get_global_id(1), vox = get_global_id(2);
    int V = N * D * H * W;
    if (co >= Cout || tap >= 8 || vox >= V) return;
    int x = vox % W, yy = (vox / W) % H, z = (vox / (W * H)) % D, n = vox / (W * H * D);
    int e = tap & 1, bb = (tap >> 1) & 1, a = tap >> 2;
    float v = tmp[((long)tap * V + vox) * Cout + co];
    if (has_b) v += b[boff + co];
    y[yoff + ((((long)n * 2 * D + 2 * z + a) * 2 * H + 2 * yy + bb) * 2 * W + 2 * x + e) * Cout +
      co] = v;
}
