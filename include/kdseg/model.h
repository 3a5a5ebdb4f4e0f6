/* kdseg: models built from spec strings, their parameters, forward and backward. */
#ifndef KDSEG_MODEL_H
#define KDSEG_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kdseg/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_model kd_model;

/* Build a model from a spec string, e.g.
 *   "resunet:widths=16,32,64,128:enc=1,2,2,4:dec=1,1,1:groups=8:in=4:out=3"
 * Missing keys take the architecture's defaults; kd_model_spec() returns the full
 * canonical spec. Parameters are initialised from `seed` (Kaiming-uniform, as PyTorch's
 * defaults; norms gamma 1, beta 0). */
kd_status kd_model_create(kd_device *dev, const char *spec, uint64_t seed, kd_model **out);
/* Frees the model: parameters, gradients, state, activations (dev stays). NULL ok. */
void kd_model_free(kd_model *m);

/* Canonical spec string (borrowed). */
const char *kd_model_spec(const kd_model *m);
/* The canonical spec string of a spec, as the model built from it would report it (the
 * architecture's defaults filled in), into out[n], without building anything: checks
 * the architecture and its keys, for a command to refuse a bad spec, or compare two,
 * before it opens a device. */
kd_status kd_model_spec_canonical(const char *spec, char *out, size_t n);
const char *kd_model_arch(const kd_model *m);     /* "resunet", "unet3d"... (borrowed) */
kd_device *kd_model_device(const kd_model *m);    /* the device it lives on (borrowed) */
int kd_model_in_channels(const kd_model *m);      /* Cin: image channels */
int kd_model_out_channels(const kd_model *m);     /* Cout: regions */
/* Spatial sizes must be multiples of this (8 for a network that halves 3 times). */
int kd_model_divisor(const kd_model *m);

/* Parameters: each has a PyTorch state-dict name and shape (conv weights
 * (Cout, Cin/groups, kD, kH, kW)). Host data exchanged in PyTorch layout. */
size_t kd_model_param_count(const kd_model *m); /* total scalars */
int kd_model_param_tensors(const kd_model *m);             /* parameter tensors */
const char *kd_model_param_name(const kd_model *m, int i); /* borrowed */
/* PyTorch shape of parameter i: ndim and dims (up to 5). Returns numel. */
size_t kd_model_param_shape(const kd_model *m, int i, int *ndim, int dims[5]);
int kd_model_param_find(const kd_model *m, const char *name); /* -1 if absent */
kd_status kd_model_param_set(kd_model *m, int i, const float *torch_layout); /* upload */
kd_status kd_model_param_get(kd_model *m, int i, float *torch_layout);       /* download */
kd_status kd_model_grad_get(kd_model *m, int i, float *torch_layout);        /* its gradient */

/* Non-trained state (BatchNorm running statistics): same naming. */
int kd_model_state_tensors(const kd_model *m);
const char *kd_model_state_name(const kd_model *m, int i); /* borrowed */
size_t kd_model_state_numel(const kd_model *m, int i);

/* The slabs, for optimizers and checkpoints (borrowed; flat tensors). */
kd_tensor *kd_model_params(kd_model *m);
kd_tensor *kd_model_grads(kd_model *m);
kd_tensor *kd_model_state(kd_model *m); /* NULL when the model has no state */

/* Forward on x (N, Cin, D, H, W). training: keep what backward needs and use batch
 * statistics. *out (borrowed, valid until the next forward or kd_model_release) holds
 * the output probabilities (N, Cout, D, H, W). */
kd_status kd_model_forward(kd_model *m, const kd_tensor *x, int training, kd_tensor **out);
/* Backward from dL/d(output); ACCUMULATES parameter gradients, releases the saved
 * activations. */
kd_status kd_model_backward(kd_model *m, const kd_tensor *dout);
kd_status kd_model_zero_grad(kd_model *m); /* gradients := 0 */
/* Release every activation still held (output included). */
void kd_model_release(kd_model *m);

/* Planned peak device bytes of activations (and gradients when training) for an
 * input shape, from the memory plan: every buffer forward and backward allocate (saved
 * and recomputed activations, statistics, gradients, the direct conv's scratch), and,
 * training, the caller's dL/d(output); not the input, parameters, gradients and
 * optimizer state (kd_model_param_bytes). kd_model_plan_explain also writes to out what
 * is live at the peak, tensor by tensor. */
kd_status kd_model_plan(kd_model *m, kd_shape in, int training, size_t *peak_bytes);
kd_status kd_model_plan_explain(kd_model *m, kd_shape in, int training, size_t *peak_bytes,
                                FILE *out);
size_t kd_model_param_bytes(const kd_model *m); /* the parameter slab's bytes */
/* Floating-point operations (2 per multiply-add) of the model's convolutions for an input
 * shape: the forward, and training also the weight gradients and the input gradients that
 * backward computes (benchmarks report throughput and the share of the device's peak). */
kd_status kd_model_conv_flops(kd_model *m, kd_shape in, int training, double *flops);

/* Architectures known to kd_model_create: fills name, defaults and a description;
 * returns the count. */
int kd_model_arch_count(void);
const char *kd_model_arch_name(int i);         /* static strings */
const char *kd_model_arch_default_spec(int i);
const char *kd_model_arch_description(int i);

#ifdef __cplusplus
}
#endif
#endif
