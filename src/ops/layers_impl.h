/* Shared host helpers of the non-convolution ops (norm.c, act.c, resample.c,
 * gate.c, eltwise.c). Internal to src/ops/. */
#ifndef KD_LAYERS_IMPL_H
#define KD_LAYERS_IMPL_H

#include "runtime/tensor_impl.h"
#include "ops.h"

/* Launch geometry of the (C4, nch, N) kernels: one work-item per (4 channels,
 * chunk of `chunk` voxels, batch item); work-groups of about 64 work-items. */
typedef struct kd_chunks {
    int N, S, C;   /* batch, voxels per item, channels */
    int chunk, nch; /* voxels per chunk, chunks per item */
    size_t gws[3], lws[3];
} kd_chunks;

/* Voxels per chunk of the (C4, nch, N) kernels. */
#define KD_CHUNK_VOXELS 256
/* Work-group size of the fixed-tree reductions (KD_NORM_WG in cl/norm.cl). */
#define KD_REDUCE_WG 64

void kd_chunks_init(kd_chunks *k, int N, int S, int C);

/* Voxels per batch item, D*H*W. */
static inline int kd_vox(kd_shape s) { return s.d * s.h * s.w; }

/* Launch a flat kernel with one work-item per 8 elements over n elements. */
kd_status kd_launch_flat8(kd_device *dev, const char *name, size_t n, int nargs,
                          const kd_arg *args);
/* Launch a 1-D kernel with one work-item per item (count items). */
kd_status kd_launch_1d(kd_device *dev, const char *name, size_t count, int nargs,
                       const kd_arg *args);

/* A scratch device buffer of `floats` floats (from the pool; release with
 * kd_scratch_free after enqueueing its last use: the queue is in order). */
kd_status kd_scratch(kd_device *dev, size_t floats, cl_mem *out);
void kd_scratch_free(kd_device *dev, cl_mem m, size_t floats);

/* out[ooff + n*C + c] = scale * sum_v a[n, v, c] (* b[n, v, c] when b_mem is
 * non-NULL), a and b (N, S, C); deterministic (fixed-order partials, fixed tree). */
kd_status kd_channel_sums(kd_device *dev, cl_mem a, size_t aoff, cl_mem b, size_t boff, int N,
                          int S, int C, float scale, cl_mem out, size_t ooff);

/* st, after putting "op on (N, C, D, H, W)" before the message when st is a failure
 * (a launch error names the kernel and its range; this adds the op and the shape). */
kd_status kd_op_fail(kd_status st, const char *op, const kd_tensor *x);

/* KD_OK when a and b (named na and nb in messages) are both given and of one shape;
 * KD_ERR_INVALID_ARG for a NULL one, KD_ERR_SHAPE naming both shapes otherwise. */
kd_status kd_check_same(const char *op, const char *na, const kd_tensor *a, const char *nb,
                        const kd_tensor *b);
/* numel(t) == n, or a message naming the op and the tensor. */
kd_status kd_check_numel(const char *op, const char *name, const kd_tensor *t, size_t n);

/* Shape text for messages: KD_SHP(buf, shape). */
#define KD_SHP(buf, s) kd_shape_str((s), (buf), sizeof(buf))

#endif
