/* C references of normalisation, activations, resampling, gating, elementwise (see ref.h).
 *
 * Host arrays in the stored layout (N, D, H, W, C); shapes given as kd_shape
 * (logical N, C, D, H, W) or as explicit counts. Same output/accumulate rules as
 * ops.h: outputs and dx overwritten, dgamma/dbeta accumulated (+=).
 * Every function exists in float and, with the suffix _d, in double (the double
 * versions serve finite-difference checks). */
#ifndef KD_REF_LAYERS_H
#define KD_REF_LAYERS_H

#include <stddef.h>

#include "../ops.h"

#define KD_REF_LAYERS_DECLARE(T, SFX)                                                        \
    /* GroupNorm: mean, rstd (N, G); gamma, beta (C). */                                    \
    void kd_ref_groupnorm_forward##SFX(const T *x, kd_shape s, const T *gamma, const T *beta, \
                                       int groups, T eps, T *y, T *mean, T *rstd);           \
    void kd_ref_groupnorm_backward##SFX(const T *dy, const T *x, kd_shape s, const T *gamma, \
                                        const T *mean, const T *rstd, int groups, T *dx,     \
                                        T *dgamma, T *dbeta);                                \
    /* GroupNorm then LeakyReLU, chained (the spec of the fused op). */                     \
    void kd_ref_groupnorm_leaky_forward##SFX(const T *x, kd_shape s, const T *gamma,        \
                                             const T *beta, int groups, T eps, T slope, T *y, \
                                             T *mean, T *rstd);                              \
    void kd_ref_groupnorm_leaky_backward##SFX(const T *dy, const T *x, kd_shape s,          \
                                              const T *gamma, const T *beta, const T *mean,  \
                                              const T *rstd, int groups, T slope, T *dx,     \
                                              T *dgamma, T *dbeta);                          \
    /* GroupNorm, LeakyReLU, then + r (x's shape; y must not be r): the residual tail.    \
     * Its backward: kd_ref_groupnorm_leaky_backward for x, dy for r. */                    \
    void kd_ref_groupnorm_leaky_add_forward##SFX(const T *x, kd_shape s, const T *gamma,    \
                                                 const T *beta, int groups, T eps, T slope,  \
                                                 const T *r, T *y, T *mean, T *rstd);        \
    /* BatchNorm3d; training: batch stats into mean/rstd (C), running stats updated with   \
     * the unbiased variance; else running stats used (mean/rstd may be NULL). */           \
    void kd_ref_batchnorm_forward##SFX(const T *x, kd_shape s, const T *gamma, const T *beta, \
                                       T *running_mean, T *running_var, int training,        \
                                       T momentum, T eps, T *y, T *mean, T *rstd);           \
    void kd_ref_batchnorm_backward##SFX(const T *dy, const T *x, kd_shape s, const T *gamma, \
                                        const T *mean, const T *rstd, T *dx, T *dgamma,      \
                                        T *dbeta);                                           \
    /* Activations over n elements; softmax over C channels of nvox voxels. */              \
    void kd_ref_leaky_forward##SFX(const T *x, size_t n, T slope, T *y);                    \
    void kd_ref_leaky_backward##SFX(const T *dy, const T *x, size_t n, T slope, T *dx);     \
    void kd_ref_sigmoid_forward##SFX(const T *x, size_t n, T *y);                           \
    void kd_ref_sigmoid_backward##SFX(const T *dy, const T *y, size_t n, T *dx);            \
    void kd_ref_softmax_forward##SFX(const T *x, size_t nvox, int C, T *y);                 \
    void kd_ref_softmax_backward##SFX(const T *dy, const T *y, size_t nvox, int C, T *dx);  \
    /* Resampling: s is the SMALL side's shape (x of upsampling, y of pooling). */          \
    void kd_ref_upsample_trilinear_forward##SFX(const T *x, kd_shape s, T *y);              \
    void kd_ref_upsample_trilinear_backward##SFX(const T *dy, kd_shape s, T *dx);           \
    void kd_ref_upsample_nearest_forward##SFX(const T *x, kd_shape s, T *y);                \
    void kd_ref_upsample_nearest_backward##SFX(const T *dy, kd_shape s, T *dx);             \
    void kd_ref_maxpool_forward##SFX(const T *x, kd_shape s, T *y);                         \
    void kd_ref_maxpool_backward##SFX(const T *dy, const T *x, kd_shape s, T *dx);          \
    void kd_ref_avgpool_forward##SFX(const T *x, kd_shape s, T *y);                         \
    void kd_ref_avgpool_backward##SFX(const T *dy, kd_shape s, T *dx);                      \
    /* Global average pool: s is x's shape; y, dy (N, C). */                                \
    void kd_ref_global_avgpool_forward##SFX(const T *x, kd_shape s, T *y);                  \
    void kd_ref_global_avgpool_backward##SFX(const T *dy, kd_shape s, T *dx);               \
    /* Gating: sc (N, C); a (N, D, H, W). ds, da overwritten. */                            \
    void kd_ref_channel_scale_forward##SFX(const T *x, kd_shape s, const T *sc, T *y);      \
    void kd_ref_channel_scale_backward##SFX(const T *dy, const T *x, kd_shape s,            \
                                            const T *sc, T *dx, T *ds);                      \
    void kd_ref_spatial_gate_forward##SFX(const T *x, kd_shape s, const T *a, T *y);        \
    void kd_ref_spatial_gate_backward##SFX(const T *dy, const T *x, kd_shape s, const T *a, \
                                           T *dx, T *da);                                    \
    /* Channels of nvox voxels: concat (Ca then Cb), slice [c0, c0+Cy) of Cx channels. */  \
    void kd_ref_concat_forward##SFX(const T *a, int Ca, const T *b, int Cb, size_t nvox,    \
                                    T *y);                                                   \
    void kd_ref_concat_backward##SFX(const T *dy, int Ca, int Cb, size_t nvox, T *da,       \
                                     T *db);                                                 \
    void kd_ref_slice_channels_forward##SFX(const T *x, int Cx, int c0, int Cy, size_t nvox, \
                                            T *y);                                           \
    void kd_ref_slice_channels_backward##SFX(const T *dy, int Cx, int c0, int Cy,           \
                                             size_t nvox, T *dx);                            \
    /* Flat elementwise over n elements (axpby with beta 0 overwrites y). */                \
    void kd_ref_add##SFX(const T *a, const T *b, size_t n, T *y);                           \
    void kd_ref_mul##SFX(const T *a, const T *b, size_t n, T *y);                           \
    void kd_ref_mul_backward##SFX(const T *dy, const T *a, const T *b, size_t n, T *da,     \
                                  T *db);                                                    \
    void kd_ref_axpby##SFX(T alpha, const T *x, T beta, size_t n, T *y);                    \
    void kd_ref_scale##SFX(T alpha, size_t n, T *y);

KD_REF_LAYERS_DECLARE(float, )
KD_REF_LAYERS_DECLARE(double, _d)

#endif
