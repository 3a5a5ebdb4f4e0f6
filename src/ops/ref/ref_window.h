/* C references of the sliding-window inference ops (ops.h, cl/infer.cl): the host path
 * kd_infer_volume took before it ran on the device. Planar volumes (C, D, H, W); one
 * window item (T0, T1, T2, C) channels-last, as the network reads and writes it. */
#ifndef KD_REF_WINDOW_H
#define KD_REF_WINDOW_H

#include <stddef.h>
#include <stdint.h>

/* x (T0, T1, T2, C) = the window of img (C, D, H, W) at origin, flipped; 0 outside. */
void kd_ref_window_cut(const float *img, int C, const int dims[3], const int origin[3],
                       const int t[3], int flip, float *x);
/* acc (K, D, H, W) += (scale * w[t]) * y[flip(t), k] (y (T0, T1, T2, K)) over the window's
 * voxels inside the volume; w NULL: weight 1; wsum non-NULL: wsum += w there. */
void kd_ref_window_accumulate(const float *y, int K, const int t[3], const int dims[3],
                              const int origin[3], int flip, const float *w, float scale,
                              float *acc, float *wsum);
/* acc (K, nv) /= wsum (nv). */
void kd_ref_window_normalize(float *acc, int K, size_t nv, const float *wsum);
/* labels (nv) from p (3, nv): see kd_window_labels. */
void kd_ref_window_labels(const float *p, size_t nv, float threshold, int et_label,
                          uint8_t *labels);

#endif
