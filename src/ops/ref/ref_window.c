/* C references of the sliding-window inference ops (ref_window.h). */
#include "ref_window.h"

#include <math.h>

/* Volume voxel of window voxel (z, y, x) read with flip, or -1 outside the volume. */
static long src_voxel(const int dims[3], const int o[3], const int t[3], int flip, int z, int y,
                      int x) {
    int sz = o[0] + (flip & 4 ? t[0] - 1 - z : z), sy = o[1] + (flip & 2 ? t[1] - 1 - y : y),
        sx = o[2] + (flip & 1 ? t[2] - 1 - x : x);
    if (sz < 0 || sz >= dims[0] || sy < 0 || sy >= dims[1] || sx < 0 || sx >= dims[2]) return -1;
    return ((long)sz * dims[1] + sy) * dims[2] + sx;
}

void kd_ref_window_cut(const float *img, int C, const int dims[3], const int origin[3],
                       const int t[3], int flip, float *x) {
    size_t nv = (size_t)dims[0] * dims[1] * dims[2];
    for (int z = 0; z < t[0]; z++)
        for (int y = 0; y < t[1]; y++)
            for (int xx = 0; xx < t[2]; xx++) {
                long s = src_voxel(dims, origin, t, flip, z, y, xx);
                float *d = x + (((size_t)z * t[1] + y) * t[2] + xx) * C;
                for (int c = 0; c < C; c++)
                    d[c] = s < 0 ? 0.0f : img[(size_t)c * nv + (size_t)s];
            }
}

void kd_ref_window_accumulate(const float *y, int K, const int t[3], const int dims[3],
                              const int origin[3], int flip, const float *w, float scale,
                              float *acc, float *wsum) {
    size_t nv = (size_t)dims[0] * dims[1] * dims[2];
    for (int z = 0; z < t[0]; z++)
        for (int yy = 0; yy < t[1]; yy++)
            for (int x = 0; x < t[2]; x++) {
                /* the volume voxel is the unflipped position; the network's output is read
                 * at the flipped one */
                long v = src_voxel(dims, origin, t, 0, z, yy, x);
                if (v < 0) continue;
                int fz = flip & 4 ? t[0] - 1 - z : z, fy = flip & 2 ? t[1] - 1 - yy : yy,
                    fx = flip & 1 ? t[2] - 1 - x : x;
                size_t i = ((size_t)z * t[1] + yy) * t[2] + x;
                const float *p = y + (((size_t)fz * t[1] + fy) * t[2] + fx) * K;
                float wv = w ? w[i] : 1.0f, sw = scale * wv;
                for (int k = 0; k < K; k++)
                    acc[(size_t)k * nv + (size_t)v] += sw * p[k];
                if (wsum) wsum[v] += wv;
            }
}

void kd_ref_window_normalize(float *acc, int K, size_t nv, const float *wsum) {
    for (int k = 0; k < K; k++)
        for (size_t v = 0; v < nv; v++)
            acc[(size_t)k * nv + v] /= wsum[v];
}

void kd_ref_window_labels(const float *p, size_t nv, float threshold, int et_label,
                          uint8_t *labels) {
    for (size_t i = 0; i < nv; i++) {
        float wt = p[i], tc = p[nv + i], et = p[2 * nv + i];
        uint8_t l = 0;
        if (!isfinite(wt) || !isfinite(tc) || !isfinite(et))
            l = 255;
        else if (et > threshold)
            l = (uint8_t)et_label;
        else if (tc > threshold)
            l = 1;
        else if (wt > threshold)
            l = 2;
        labels[i] = l;
    }
}
