/* C references of the convolutions (see ref.h). Host arrays: activations stored
 * (N, D, H, W, C), weights (kD, kH, kW, Cin/groups, Cout). xs is the input's shape
 * (N, Cin, D, H, W); cout the output channel count. Forward outputs and dx are
 * overwritten; dw and db are accumulated (+=). */
#ifndef KD_REF_CONV_H
#define KD_REF_CONV_H

#include "../ops.h"

/* y (N, Do, Ho, Wo, cout) = conv(x, w) + b (b may be NULL). */
void kd_ref_conv3d_forward(const kd_conv_params *p, kd_shape xs, int cout, const float *x,
                           const float *w, const float *b, float *y);
/* dx (N, D, H, W, Cin) = conv_transpose(dy, w). */
void kd_ref_conv3d_backward_input(const kd_conv_params *p, kd_shape xs, int cout,
                                  const float *dy, const float *w, float *dx);
/* dw += x (*) dy; db += sum dy over N and voxels (db may be NULL). */
void kd_ref_conv3d_backward_weight(const kd_conv_params *p, kd_shape xs, int cout,
                                   const float *x, const float *dy, float *dw, float *db);

/* Transposed conv 2x2x2 stride 2: x (N, D, H, W, Cin) -> y (N, 2D, 2H, 2W, cout),
 * w (2, 2, 2, Cin, cout). */
void kd_ref_convT3d_forward(kd_shape xs, int cout, const float *x, const float *w,
                            const float *b, float *y);
void kd_ref_convT3d_backward_input(kd_shape xs, int cout, const float *dy, const float *w,
                                   float *dx);
void kd_ref_convT3d_backward_weight(kd_shape xs, int cout, const float *x, const float *dy,
                                    float *dw, float *db);

#endif
