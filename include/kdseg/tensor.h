/* kdseg: 5-D float32 device tensors.
 * Shapes are spoken of as (N, C, D, H, W); activations are stored channels-last,
 * (N, D, H, W, C). Host arrays given to upload/download are NCDHW (PyTorch order)
 * unless the function name says _ndhwc. */
#ifndef KDSEG_TENSOR_H
#define KDSEG_TENSOR_H

#include <stddef.h>

#include "kdseg/device.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_shape {
    int n, c, d, h, w;
} kd_shape;

typedef struct kd_tensor kd_tensor;

static inline kd_shape kd_shape5(int n, int c, int d, int h, int w) {
    kd_shape s = {n, c, d, h, w};
    return s;
}
size_t kd_shape_numel(kd_shape s);          /* N*C*D*H*W */
int kd_shape_equal(kd_shape a, kd_shape b); /* 1 when equal */
/* "(N=1, C=4, D=7, H=9, W=11)" into buf; returns buf. */
char *kd_shape_str(kd_shape s, char *buf, size_t n);

/* A new tensor (uninitialised storage from the device's buffer pool). */
kd_status kd_tensor_create(kd_device *dev, kd_shape s, kd_tensor **out);
/* A new tensor filled with zeros. */
kd_status kd_tensor_zeros(kd_device *dev, kd_shape s, kd_tensor **out);
/* Frees the tensor; storage goes back to the pool unless it is a view. NULL ok. */
void kd_tensor_free(kd_tensor *t);

kd_shape kd_tensor_shape(const kd_tensor *t);
size_t kd_tensor_numel(const kd_tensor *t);
kd_device *kd_tensor_device(const kd_tensor *t); /* borrowed */

/* Host NCDHW <-> device channels-last, converting. These are sync points. */
kd_status kd_tensor_upload(kd_tensor *t, const float *ncdhw);
kd_status kd_tensor_download(const kd_tensor *t, float *ncdhw);
/* Host data already in the stored (N, D, H, W, C) order. */
kd_status kd_tensor_upload_ndhwc(kd_tensor *t, const float *ndhwc);
kd_status kd_tensor_download_ndhwc(const kd_tensor *t, float *ndhwc);

/* Non-blocking: the upload's source must stay valid until the next sync point;
 * the download completes when the event is waited for (kd_event_wait). */
kd_status kd_tensor_upload_ndhwc_async(kd_tensor *t, const float *ndhwc);
kd_status kd_tensor_download_ndhwc_async(const kd_tensor *t, float *ndhwc, kd_event **ev);

kd_status kd_tensor_fill(kd_tensor *t, float v); /* every element := v */
/* dst = src (same shape). */
kd_status kd_tensor_copy(kd_tensor *dst, const kd_tensor *src);

/* A view of batch items [i, i+count) sharing storage with t (free it with
 * kd_tensor_free; it must not outlive t). */
kd_status kd_tensor_view_batch(kd_tensor *t, int i, int count, kd_tensor **out);
/* A view of numel(s) elements starting at element `offset` of t's storage,
 * seen with shape s (used to carve parameters out of one slab). */
kd_status kd_tensor_view(kd_tensor *t, size_t offset, kd_shape s, kd_tensor **out);

/* NCDHW <-> NDHWC conversions on the host. */
void kd_ncdhw_to_ndhwc(const float *src, float *dst, kd_shape s);
void kd_ndhwc_to_ncdhw(const float *src, float *dst, kd_shape s);

#ifdef __cplusplus
}
#endif
#endif
