/* The tensor structure. Shared by src/nn and src/ops (ops read a tensor's
 * buffer and element offset to pass them to kernels); nothing else looks inside. */
#ifndef KD_TENSOR_IMPL_H
#define KD_TENSOR_IMPL_H

#include "rt.h"
#include "kdseg/tensor.h"

struct kd_tensor {
    kd_device *dev;
    kd_shape shape;  /* logical (N, C, D, H, W); stored (N, D, H, W, C) */
    cl_mem mem;
    size_t off;      /* element offset of the first element in mem */
    size_t bytes;    /* storage bytes owned (0 for views) */
    int owns;
};

/* Kernel arguments for a tensor: buffer and element offset. */
#define KD_T(t) KD_MEM((t)->mem), KD_INT((t)->off)

#endif
