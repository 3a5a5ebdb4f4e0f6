/* Device ops: shape checks and kernel dispatch (the .c files of src/ops), one plain C
 * reference per op in src/ops/ref/ (ref.h).
 *
 * Conventions (DESIGN.md):
 *  - activations are kd_tensor, logical (N, C, D, H, W), stored (N, D, H, W, C);
 *  - conv weights are tensors of numel kD*kH*kW*(Cin/groups)*Cout stored
 *    (kD, kH, kW, Cin/groups, Cout); their kd_shape is (1, Cout, kD, kH, kW*(Cin/groups))
 *    or anything with that element count: ops check only the element count;
 *  - vectors (bias, gamma, beta, running stats) have numel C;
 *  - forward outputs and input gradients (dx) are OVERWRITTEN;
 *  - parameter gradients (dw, db, dgamma, dbeta) are ACCUMULATED (+=), llm.c style,
 *    so one zeroed gradient slab collects a whole step;
 *  - every op returns kd_status with a message naming the op and the shapes;
 *  - no op waits for the device (no clFinish, no reads).
 */
#ifndef KD_OPS_H
#define KD_OPS_H

#include "kdseg/tensor.h"
#include "kdseg/tune.h"

/* ---- convolution ---------------------------------------------------------- */

typedef struct kd_conv_params {
    int k[3];     /* kernel size per axis (D, H, W): 1, 2 or 3 */
    int stride;   /* 1 or 2 */
    int pad;      /* zero padding on every side: 0 or 1 */
    int groups;   /* 1, or Cin (= Cout) for depthwise */
} kd_conv_params;

/* Output spatial size of a conv along one axis. */
int kd_conv_out_size(int in, int k, int stride, int pad);

/* y = conv(x, w) + b. x (N, Cin, D, H, W), y (N, Cout, D', H', W'), b NULL or numel Cout. */
kd_status kd_conv3d_forward(const kd_conv_params *p, const kd_tensor *x, const kd_tensor *w,
                            const kd_tensor *b, kd_tensor *y);
/* dx = conv_transpose(dy, w). */
kd_status kd_conv3d_backward_input(const kd_conv_params *p, const kd_tensor *dy,
                                   const kd_tensor *w, kd_tensor *dx);
/* dw += x (*) dy; db += sum dy (db may be NULL). */
kd_status kd_conv3d_backward_weight(const kd_conv_params *p, const kd_tensor *x,
                                    const kd_tensor *dy, kd_tensor *dw, kd_tensor *db);

/* Transposed conv 2x2x2 stride 2 (upsampling). x (N, Cin, D, H, W) -> y (N, Cout, 2D, 2H, 2W).
 * w stored (kD, kH, kW, Cin, Cout), numel 8*Cin*Cout; b NULL or numel Cout. */
kd_status kd_convT3d_forward(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                             kd_tensor *y);
kd_status kd_convT3d_backward_input(const kd_tensor *dy, const kd_tensor *w, kd_tensor *dx);
kd_status kd_convT3d_backward_weight(const kd_tensor *x, const kd_tensor *dy, kd_tensor *dw,
                                     kd_tensor *db);

/* Device bytes that one pass of the direct implementation takes from the buffer pool and
 * gives back before it returns (padded or transposed weights, padded dy, weight-gradient
 * partials): pass 0 forward, 1 input gradient, 2 weight gradient. x and y are the
 * activation shapes; for the memory plan. dev: the tuning table entry of that device
 * decides (chunks, kernels); NULL: the built-in default. The GEMM path's im2col buffers
 * are not counted. */
size_t kd_conv3d_scratch_bytes(kd_device *dev, const kd_conv_params *p, kd_shape x, kd_shape y,
                               int has_bias, int pass);
size_t kd_convT3d_scratch_bytes(kd_device *dev, kd_shape x, kd_shape y, int has_bias, int pass);

/* (the implementation choice, kd_conv_impl and kd_conv_force: kdseg/tune.h) */

/* ---- normalisation -------------------------------------------------------- */

/* GroupNorm over G groups of C/G channels (G = C: InstanceNorm).
 * mean, rstd: saved statistics, numel N*G (written). gamma, beta numel C. */
kd_status kd_groupnorm_forward(const kd_tensor *x, const kd_tensor *gamma,
                               const kd_tensor *beta, int groups, float eps, kd_tensor *y,
                               kd_tensor *mean, kd_tensor *rstd);
kd_status kd_groupnorm_backward(const kd_tensor *dy, const kd_tensor *x,
                                const kd_tensor *gamma, const kd_tensor *mean,
                                const kd_tensor *rstd, int groups, kd_tensor *dx,
                                kd_tensor *dgamma, kd_tensor *dbeta);

/* Fused GroupNorm + LeakyReLU(slope): equal to the two ops chained. y is the
 * activation output; backward recomputes the normalised value from x and the stats. */
kd_status kd_groupnorm_leaky_forward(const kd_tensor *x, const kd_tensor *gamma,
                                     const kd_tensor *beta, int groups, float eps, float slope,
                                     kd_tensor *y, kd_tensor *mean, kd_tensor *rstd);
kd_status kd_groupnorm_leaky_backward(const kd_tensor *dy, const kd_tensor *x,
                                      const kd_tensor *gamma, const kd_tensor *beta,
                                      const kd_tensor *mean, const kd_tensor *rstd, int groups,
                                      float slope, kd_tensor *dx, kd_tensor *dgamma,
                                      kd_tensor *dbeta);

/* The residual block's tail in one pass: y = LeakyReLU(GroupNorm(x)) + r, equal bit for
 * bit to kd_groupnorm_leaky_forward then kd_add (r of x's shape; y may be r or x). Its
 * backward is kd_groupnorm_leaky_backward for x, and dy itself for r. */
kd_status kd_groupnorm_leaky_add_forward(const kd_tensor *x, const kd_tensor *gamma,
                                         const kd_tensor *beta, int groups, float eps,
                                         float slope, const kd_tensor *r, kd_tensor *y,
                                         kd_tensor *mean, kd_tensor *rstd);

/* GroupNorm (+ LeakyReLU(slope) when leaky != 0) of x with the statistics a forward on
 * the same x saved: the forward's y bit for bit, without the statistics pass. The graph
 * recomputes outputs with it in backward instead of keeping them. y may be x. */
kd_status kd_groupnorm_apply(const kd_tensor *x, const kd_tensor *gamma, const kd_tensor *beta,
                             const kd_tensor *mean, const kd_tensor *rstd, int groups, int leaky,
                             float slope, kd_tensor *y);

/* The GroupNorm, fused and BatchNorm backwards may write dx over dy (dx == dy): the
 * last pass reads each dy element once, then writes the same dx element. */

/* BatchNorm3d. training != 0: batch statistics (saved in mean/rstd, numel C) and the
 * running stats updated r = (1-momentum) r + momentum * batch (unbiased variance, as
 * PyTorch); training == 0: running stats used, mean/rstd may be NULL. */
kd_status kd_batchnorm_forward(const kd_tensor *x, const kd_tensor *gamma,
                               const kd_tensor *beta, kd_tensor *running_mean,
                               kd_tensor *running_var, int training, float momentum,
                               float eps, kd_tensor *y, kd_tensor *mean, kd_tensor *rstd);
/* Backward of the training-mode forward. */
kd_status kd_batchnorm_backward(const kd_tensor *dy, const kd_tensor *x,
                                const kd_tensor *gamma, const kd_tensor *mean,
                                const kd_tensor *rstd, kd_tensor *dx, kd_tensor *dgamma,
                                kd_tensor *dbeta);

/* ---- activations (y and x may be the same tensor for forward) -------------- */

/* slope 0 gives ReLU. Backward uses the forward input x, or the output y (y > 0 exactly
 * where x > 0 for slope >= 0). Backwards may write dx over dy (elementwise). */
kd_status kd_leaky_forward(const kd_tensor *x, float slope, kd_tensor *y);
kd_status kd_leaky_backward(const kd_tensor *dy, const kd_tensor *x, float slope,
                            kd_tensor *dx);
kd_status kd_sigmoid_forward(const kd_tensor *x, kd_tensor *y);
kd_status kd_sigmoid_backward(const kd_tensor *dy, const kd_tensor *y, kd_tensor *dx);
/* Softmax over channels at every voxel. */
kd_status kd_softmax_forward(const kd_tensor *x, kd_tensor *y);
kd_status kd_softmax_backward(const kd_tensor *dy, const kd_tensor *y, kd_tensor *dx);

/* ---- resampling and pooling ------------------------------------------------ */

/* Trilinear x2, align_corners=False (PyTorch's default). y (N, C, 2D, 2H, 2W). */
kd_status kd_upsample_trilinear_forward(const kd_tensor *x, kd_tensor *y);
kd_status kd_upsample_trilinear_backward(const kd_tensor *dy, kd_tensor *dx);
kd_status kd_upsample_nearest_forward(const kd_tensor *x, kd_tensor *y);
kd_status kd_upsample_nearest_backward(const kd_tensor *dy, kd_tensor *dx);
/* 2x2x2 stride 2 (D, H, W even). Max pool backward routes to the first maximum. */
kd_status kd_maxpool_forward(const kd_tensor *x, kd_tensor *y);
kd_status kd_maxpool_backward(const kd_tensor *dy, const kd_tensor *x, kd_tensor *dx);
kd_status kd_avgpool_forward(const kd_tensor *x, kd_tensor *y);
kd_status kd_avgpool_backward(const kd_tensor *dy, kd_tensor *dx);
/* Global average pool to (N, C, 1, 1, 1). */
kd_status kd_global_avgpool_forward(const kd_tensor *x, kd_tensor *y);
kd_status kd_global_avgpool_backward(const kd_tensor *dy, kd_tensor *dx);

/* ---- gating (squeeze-excitation) ------------------------------------------- */

/* y = x * s, s (N, C, 1, 1, 1) per channel. dx = dy * s; ds = sum over voxels dy * x
 * (ds overwritten: s is an activation, not a parameter). */
kd_status kd_channel_scale_forward(const kd_tensor *x, const kd_tensor *s, kd_tensor *y);
kd_status kd_channel_scale_backward(const kd_tensor *dy, const kd_tensor *x,
                                    const kd_tensor *s, kd_tensor *dx, kd_tensor *ds);
/* y = x * a, a (N, 1, D, H, W) per voxel. da = sum over channels dy * x. */
kd_status kd_spatial_gate_forward(const kd_tensor *x, const kd_tensor *a, kd_tensor *y);
kd_status kd_spatial_gate_backward(const kd_tensor *dy, const kd_tensor *x,
                                   const kd_tensor *a, kd_tensor *dx, kd_tensor *da);

/* ---- channels and elementwise ---------------------------------------------- */

/* y = concat(a, b) along channels (a first). Backward splits dy into da, db. */
kd_status kd_concat_forward(const kd_tensor *a, const kd_tensor *b, kd_tensor *y);
kd_status kd_concat_backward(const kd_tensor *dy, kd_tensor *da, kd_tensor *db);
/* y = x[:, c0:c0+C_y]; backward writes dy into dx's channel range (others untouched). */
kd_status kd_slice_channels_forward(const kd_tensor *x, int c0, kd_tensor *y);
kd_status kd_slice_channels_backward(const kd_tensor *dy, int c0, kd_tensor *dx);

/* y = a + b; y = a * b (elementwise, equal shapes; y may alias a or b). */
kd_status kd_add(const kd_tensor *a, const kd_tensor *b, kd_tensor *y);
kd_status kd_mul(const kd_tensor *a, const kd_tensor *b, kd_tensor *y);
/* Backward of mul: da = dy * b, db = dy * a (either may be NULL). */
kd_status kd_mul_backward(const kd_tensor *dy, const kd_tensor *a, const kd_tensor *b,
                          kd_tensor *da, kd_tensor *db);
/* y = alpha * x + y (axpy) and y = alpha * x + beta * y. */
kd_status kd_axpy(float alpha, const kd_tensor *x, kd_tensor *y);
kd_status kd_axpby(float alpha, const kd_tensor *x, float beta, kd_tensor *y);
kd_status kd_scale(float alpha, kd_tensor *y);

/* ---- losses (cl/loss.cl; spec: kd_ref_loss_* in ref/ref_train.h) ---------------- */

/* A loss over region probabilities p and targets t, equal shapes (N, C, D, H, W),
 * C <= KD_LOSS_MAX_C, M = numel elements:
 *   loss = dice * (1 - mean_c Dice_c) - bce * B / M + mse * E / M,
 *   Dice_c = (2 sum p t + 1e-6) / (sum p^2 + sum t + 2e-6) over batch and voxels,
 *   B = sum t log(p + 1e-6) + bg (1 - t) log(1 + 1e-6 - p),  E = sum (p - t)^2.
 * The paper's loss: dice 0.5, bce 0.5, bg 0.01; BCE: bce 1, bg 1; MSE: mse 1. */
typedef struct kd_loss_terms {
    float dice, bce, mse; /* weights of the three terms */
    float bg;             /* weight of BCE's background term (1 - t) log(1 - p) */
} kd_loss_terms;

#define KD_LOSS_MAX_C 8
/* Floats of the scratch tensor kd_loss_forward fills (fixed-order partial sums). */
#define KD_LOSS_PARTIALS (64 * 26)
/* Floats of the statistics tensor: [0, 8) sum p t, [8, 16) sum p^2, [16, 24) sum t,
 * [24] B, [25] E, [26] the loss value. */
#define KD_LOSS_STATS 27
#define KD_LOSS_VALUE 26

/* stats = the statistics and the loss value of (p, t) (numel KD_LOSS_STATS); partials:
 * scratch of numel KD_LOSS_PARTIALS. Deterministic: fixed-order sums. */
kd_status kd_loss_forward(const kd_loss_terms *l, const kd_tensor *p, const kd_tensor *t,
                          kd_tensor *partials, kd_tensor *stats);
/* dp = weight * dloss/dp from the statistics of kd_loss_forward on the same (p, t);
 * accumulate != 0 adds into dp instead (several losses into one gradient). */
kd_status kd_loss_backward(const kd_loss_terms *l, const kd_tensor *p, const kd_tensor *t,
                           const kd_tensor *stats, float weight, int accumulate, kd_tensor *dp);

/* ---- optimizer updates (cl/optim.cl; spec: kd_ref_* in ref/ref_train.h) ----------- */

/* Floats of the scratch tensor kd_grad_check fills. */
#define KD_GRAD_PARTIALS 256

/* stats (numel 2) = [sum of g^2, 1 when that sum and loss are finite else 0]; loss: a
 * one-element tensor (a loss value on the device) or NULL. The updates below read the
 * flag and leave everything untouched when it is 0, so a non-finite step is skipped
 * without a host round trip. partials: scratch of numel KD_GRAD_PARTIALS. */
kd_status kd_grad_check(const kd_tensor *g, const kd_tensor *loss, kd_tensor *partials,
                        kd_tensor *stats);

/* PyTorch's Adam with amsgrad=True and L2 weight decay added to the gradient; step is
 * the 1-based count of this update (bias correction). m, v, vmax: its state. */
typedef struct kd_adam_params {
    float lr, beta1, beta2, eps, weight_decay;
    long step;
} kd_adam_params;
/* p, g, m, v, vmax: equal element counts (any shapes: flat slabs). */
kd_status kd_adam_update(const kd_adam_params *h, kd_tensor *p, const kd_tensor *g,
                         kd_tensor *m, kd_tensor *v, kd_tensor *vmax, const kd_tensor *stats);
/* PyTorch's SGD with Nesterov momentum (dampening 0) and L2 weight decay; first != 0 on
 * the first update (the momentum buffer starts as the gradient). */
kd_status kd_sgd_update(float lr, float momentum, float weight_decay, int first, kd_tensor *p,
                        const kd_tensor *g, kd_tensor *buf, const kd_tensor *stats);

/* ---- sliding-window inference (cl/infer.cl) ---------------------------------- */

/* Planar volumes (C, D, H, W), the layout of images and probabilities on the host, are
 * tensors of shape (C, 1, D, H, W): their channels-last storage is the planar array.
 * origin: a window's first voxel (D, H, W); the window may lie partly outside the
 * volume (padding at the borders). flip: bits 1 W, 2 H, 4 D; flipped, the window holds
 * voxel origin + (T-1-t) at t along each flipped axis. */

/* Item b of x (N, C, T0, T1, T2) = the window of img (C, 1, D, H, W) at origin,
 * flipped; 0 outside the volume. Other items of x are untouched. */
kd_status kd_window_cut(const kd_tensor *img, const int origin[3], int flip, kd_tensor *x, int b);
/* acc (K, 1, D, H, W) += (scale * w) * item b of y (N, K, T0, T1, T2) flipped back, over
 * the window's voxels inside the volume (ACCUMULATED). w (1, 1, T0, T1, T2) or NULL
 * (weight 1); wsum (1, 1, D, H, W) or NULL: wsum += w over the same voxels (needs w). */
kd_status kd_window_accumulate(const kd_tensor *y, int b, const int origin[3], int flip,
                               const kd_tensor *w, float scale, kd_tensor *acc, kd_tensor *wsum);
/* acc (K, 1, D, H, W) /= wsum (1, 1, D, H, W), voxel by voxel. */
kd_status kd_window_normalize(kd_tensor *acc, const kd_tensor *wsum);
/* Label map from region probabilities p (3, 1, D, H, W) (WT, TC, ET): steps 1-2 of
 * kd_postproc_labels (p > threshold; WT -> 2, then TC -> 1, then ET -> et_label, later
 * rules win; 0 elsewhere) and 255 where a probability is not finite. labels: D*H*W
 * bytes, packed 4 per element into a tensor of at least ceil(D*H*W / 4) elements
 * (download it as floats into a byte buffer). */
kd_status kd_window_labels(const kd_tensor *p, float threshold, int et_label,
                               kd_tensor *labels);

#endif
