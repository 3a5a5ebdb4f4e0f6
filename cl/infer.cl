/* Sliding-window inference on the device (src/ops/window.c): windows cut out of the
 * resident image with their test-time flip, the network's output blended back into
 * per-voxel accumulators with the window's Gaussian weights, the normalisation by the
 * summed weights, and region probabilities thresholded into a label map.
 *
 * Volumes here are planar, (C, D, H, W): the tensor (C, 1, D, H, W) in channels-last
 * storage, as the host hands the image over and takes the probabilities back. Windows
 * are the network's input and output, (N, T0, T1, T2, C) channels-last. A window starts
 * at (oz, oy, ox), which may lie outside the volume: voxels outside read as 0 and are
 * not accumulated (padding at the borders). flip bits: 1 W, 2 H, 4 D; a flipped window
 * holds the volume's voxel o + (T-1-t) at t along each flipped axis. One work-item per
 * window voxel, x fastest. */

/* x[b, t, c] = img[c, o + flip(t)], 0 outside the volume. */
__kernel void kd_win_cut(__global const float *img, int ioff, int C, int D, int H, int W,
                         __global float *x, int xoff, int b, int T0, int T1, int T2, int oz,
                         int oy, int ox, int flip) {
    int tx = get_global_id(0), ty = get_global_id(1), tz = get_global_id(2);
    if (tx >= T2 || ty >= T1 || tz >= T0) return;
    int sz = oz + (flip & 4 ? T0 - 1 - tz : tz), sy = oy + (flip & 2 ? T1 - 1 - ty : ty),
        sx = ox + (flip & 1 ? T2 - 1 - tx : tx);
    int inside = sz >= 0 && sz < D && sy >= 0 && sy < H && sx >= 0 && sx < W;
    long nv = (long)D * H * W, src = ioff + ((long)sz * H + sy) * W + sx;
    long dst = xoff + KD_IDX5(b, tz, ty, tx, 0, T0, T1, T2, C);
    for (int c = 0; c < C; c++) x[dst + c] = inside ? img[src + c * nv] : 0.0f;
}

/* acc[k, o + t] += (scale * w[t]) * y[b, flip(t), k] for t inside the volume (w[t] = 1
 * when use_w == 0); with add_w also wsum[o + t] += w[t]. The product and the sum are
 * separate statements, as the host path computed them. */
__kernel void kd_win_accumulate(__global const float *y, int yoff, int b, int T0, int T1,
                                int T2, int K, __global float *acc, int aoff, int D, int H,
                                int W, int oz, int oy, int ox, int flip,
                                __global const float *w, int woff, int use_w, float scale,
                                __global float *wsum, int soff, int add_w) {
    int tx = get_global_id(0), ty = get_global_id(1), tz = get_global_id(2);
    if (tx >= T2 || ty >= T1 || tz >= T0) return;
    int i = (tz * T1 + ty) * T2 + tx;
    int vz = oz + tz, vy = oy + ty, vx = ox + tx;
    if (vz < 0 || vz >= D || vy < 0 || vy >= H || vx < 0 || vx >= W) return;
    int fz = flip & 4 ? T0 - 1 - tz : tz, fy = flip & 2 ? T1 - 1 - ty : ty,
        fx = flip & 1 ? T2 - 1 - tx : tx;
    float wv = use_w ? w[woff + i] : 1.0f, sw = scale * wv;
    long nv = (long)D * H * W, v = ((long)vz * H + vy) * W + vx;
    long src = yoff + KD_IDX5(b, fz, fy, fx, 0, T0, T1, T2, K);
    for (int k = 0; k < K; k++) {
        float term = sw * y[src + k];
        acc[aoff + k * nv + v] += term;
    }
    if (add_w) wsum[soff + v] += wv;
}

/* acc[k, v] /= wsum[v] over K planes of nv voxels; range (nv, K). */
__kernel void kd_win_normalize(__global float *acc, int aoff, __global const float *wsum,
                               int soff, int nv) {
    int v = get_global_id(0), k = get_global_id(1);
    if (v >= nv) return;
    acc[aoff + (long)k * nv + v] /= wsum[soff + v];
}

/* labels[v] from region probabilities p (3, nv) planar (WT, TC, ET), the rules of
 * kd_postproc_labels' first two steps: WT > th -> 2, then TC > th -> 1, then
 * ET > th -> et_label (later rules win), else 0; 255 where a probability is not finite.
 * labels are bytes from byte offset loff. */
__kernel void kd_win_labels(__global const float *p, int poff, int nv, float th,
                                   int et_label, __global uchar *labels, int loff) {
    int i = get_global_id(0);
    if (i >= nv) return;
    float wt = p[poff + i], tc = p[poff + nv + i], et = p[poff + 2 * nv + i];
    uchar l = 0;
    if (!isfinite(wt) || !isfinite(tc) || !isfinite(et))
        l = 255;
    else if (et > th)
        l = (uchar)et_label;
    else if (tc > th)
        l = 1;
    else if (wt > th)
        l = 2;
    labels[loff + i] = l;
}
