/* Tensors without device storage, for dry runs that only count sizes and lifetimes (the
 * model graph's memory plan): a device, a shape and nothing to compute on. kd_tensor_free
 * frees them; kd_tensor_shape, kd_tensor_numel and kd_tensor_device work. Handing one to
 * an op or a transfer is an error of the caller (the launch fails: no buffer). */
#ifndef KD_TENSOR_DRY_H
#define KD_TENSOR_DRY_H

#include "kdseg/tensor.h"

/* Any shape with positive dimensions, also one over the 2^31 elements a real tensor may
 * hold (a plan may ask what a shape too large to run would need). */
kd_status kd_tensor_create_dry(kd_device *dev, kd_shape s, kd_tensor **out);

#endif
