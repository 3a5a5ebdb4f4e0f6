/* C references of the loss and optimizer ops (see ref.h): the spec of cl/loss.cl and
 * cl/optim.cl. Host arrays in the stored layout; p, t, dp hold nvox voxels of C
 * channels each, (N, D, H, W, C). Every function exists in float and, with the suffix
 * _d, in double (the double versions serve finite-difference checks); sums are
 * accumulated in double in both. */
#ifndef KD_REF_TRAIN_H
#define KD_REF_TRAIN_H

#include <stddef.h>

#include "../ops.h"

#define KD_REF_TRAIN_DECLARE(T, SFX)                                                         \
    /* stats (KD_LOSS_STATS values, laid out as ops.h says) and the loss value of (p, t). */ \
    void kd_ref_loss_forward##SFX(const kd_loss_terms *l, const T *p, const T *t,           \
                                  size_t nvox, int C, T *stats);                             \
    /* dp = weight * dloss/dp (accumulate: dp += ...), from the forward's stats. */          \
    void kd_ref_loss_backward##SFX(const kd_loss_terms *l, const T *p, const T *t,          \
                                   size_t nvox, int C, const T *stats, T weight,             \
                                   int accumulate, T *dp);                                   \
    /* stats[0] = sum g^2 over n; stats[1] = 1 when it and *loss (NULL: none) are finite. */ \
    void kd_ref_grad_check##SFX(const T *g, size_t n, const T *loss, T *stats);             \
    /* One AMSGrad step over n values; nothing changes when stats[1] == 0. */               \
    void kd_ref_adam_update##SFX(const kd_adam_params *h, T *p, const T *g, T *m, T *v,      \
                                 T *vmax, size_t n, const T *stats);                         \
    /* One Nesterov SGD step over n values; nothing changes when stats[1] == 0. */          \
    void kd_ref_sgd_update##SFX(T lr, T momentum, T weight_decay, int first, T *p,          \
                                const T *g, T *buf, size_t n, const T *stats);

KD_REF_TRAIN_DECLARE(float, )
KD_REF_TRAIN_DECLARE(double, _d)

#endif
