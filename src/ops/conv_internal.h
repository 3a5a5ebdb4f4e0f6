/* Internals of the convolution ops shared by src/ops/conv*.c and the benchmark:
 * the problem geometry, the two implementations, and the chooser. */
#ifndef KD_CONV_INTERNAL_H
#define KD_CONV_INTERNAL_H

#include "../runtime/tensor_impl.h"
#include "kdseg/tune.h"
#include "ops.h"

/* A convolution problem. For a transposed conv (transposed = 1) the fields describe the
 * transposed op: x (n, ci, d, h, w) -> y (n, co, od=2d, oh=2h, ow=2w), k = 2, s = 2. */
typedef struct kd_conv_geom {
    int n, ci, d, h, w;    /* input (N, Cin, D, H, W) */
    int co, od, oh, ow;    /* output (N, Cout, Do, Ho, Wo) */
    int k[3], s, p, groups;
    int transposed;
    int has_bias;
} kd_conv_geom;

/* (kd_conv_pass, kd_conv_impl, kd_conv_force and the chooser's lookup: kdseg/tune.h) */

/* Floating-point operations of one pass (2 per multiply-add). */
double kd_conv_flops(const kd_conv_geom *g);

/* Chooser key "conv|fwd|n1 ci16 64x64x64 co16 k3x3x3 s1 p1 g1 b1". */
void kd_conv_key(const kd_conv_geom *g, kd_conv_pass pass, char *out, size_t n);

/* ---- implementations: same semantics as ops.h (y, dx overwritten; dw, db +=) --------- */
kd_status kd_conv_direct_forward(const kd_conv_geom *g, const kd_tensor *x, const kd_tensor *w,
                                 const kd_tensor *b, kd_tensor *y);
kd_status kd_conv_direct_backward_input(const kd_conv_geom *g, const kd_tensor *dy,
                                        const kd_tensor *w, kd_tensor *dx);
kd_status kd_conv_direct_backward_weight(const kd_conv_geom *g, const kd_tensor *x,
                                         const kd_tensor *dy, kd_tensor *dw);
/* Device bytes the direct implementation allocates inside one pass (scratch: padded or
 * transposed weights, padded dy, weight-gradient partials), for the memory plan. */
struct kd_conv_tune;
/* (t: the tuning parameters of the pass; the memory plan, which has no device, uses the
 * built-in default's) */
size_t kd_conv_direct_scratch_bytes(const kd_conv_geom *g, kd_conv_pass pass,
                                    const struct kd_conv_tune *t);
/* The GEMM path supports groups = 1 only (depthwise is not a GEMM). */
int kd_conv_gemm_supports(const kd_conv_geom *g);
kd_status kd_conv_gemm_forward(const kd_conv_geom *g, const kd_tensor *x, const kd_tensor *w,
                               const kd_tensor *b, kd_tensor *y);
kd_status kd_conv_gemm_backward_input(const kd_conv_geom *g, const kd_tensor *dy,
                                      const kd_tensor *w, kd_tensor *dx);
kd_status kd_conv_gemm_backward_weight(const kd_conv_geom *g, const kd_tensor *x,
                                       const kd_tensor *dy, kd_tensor *dw);
/* db += sum of dy over N and voxels (shared by both implementations). */
kd_status kd_conv_bias_grad(const kd_tensor *dy, kd_tensor *db);

/* ---- chooser ------------------------------------------------------------------------- */

/* Runs the op once with the given implementation (for timing and for the real call). */
typedef kd_status (*kd_conv_run_fn)(void *ctx, kd_conv_impl impl);

/* The implementation to use for (device, key): forced (kd_conv_force, then KDSEG_CONV),
 * else the stored choice, else both timed once (after a warm-up run each) with `run` and
 * the faster stored in kd_cache_dir()/conv-choices.txt. gemm_ok = 0 means direct only. */
kd_status kd_conv_select(kd_device *dev, const char *key, int gemm_ok, kd_conv_run_fn run,
                         void *ctx, kd_conv_impl *out);
/* Forget the in-memory table so the next lookup rereads the file (tests). */
void kd_conv_choices_reload(void);

#endif
